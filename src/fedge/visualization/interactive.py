"""Interactive Plotly views of models and their evaluation, and a dashboard that collects them.

Each ``*_figure`` function takes plain data (mappings, arrays, fitted estimators) and returns a
:class:`plotly.graph_objects.Figure`; bad input raises :class:`fedge.errors.InvalidInputError`.
:class:`InteractiveDashboard` groups figures into named sections and writes them as one
self-contained HTML page (plotly.js inlined once, no CDN), as embeddable ``<div>`` fragments,
or as PNG/SVG/PDF images (through :mod:`fedge.visualization.export`).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.visualization._common import (
    check_finite,
    check_same_length,
    colour,
    non_empty,
    require_plotly,
    table_keys,
)
from fedge.visualization._html import Section, figure_html, render_page, slug, write_page

__all__ = [
    "InteractiveDashboard",
    "confusion_matrix_figure",
    "feature_importance_figure",
    "learning_curves_figure",
    "model_comparison_figure",
    "pca_scatter_3d_figure",
    "precision_recall_figure",
    "roc_curves_figure",
]


# --------------------------------------------------------------------------- helpers
def _labels(what: str, values: Any) -> np.ndarray:
    """A 1-D label array; numbers must be finite (strings and bools pass as they are)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{what} must be 1-D (one label per sample), got shape {arr.shape}")
    if arr.dtype.kind == "O":
        arr = np.asarray(arr.tolist())
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InvalidInputError(
            f"{what} holds {bad} NaN/Inf label(s): drop or impute those samples first"
        )
    return arr


def _matrix(what: str, X: Any) -> np.ndarray:
    arr = check_finite(what, X)
    if arr.ndim != 2:
        raise InvalidInputError(f"{what} must be 2-D (samples x features), got shape {arr.shape}")
    non_empty(what, arr)
    return arr


def _names(feature_names: Sequence[str] | None, n: int) -> list[str]:
    if feature_names is None:
        return [f"x{i}" for i in range(n)]
    names = [str(f) for f in feature_names]
    if len(names) != n:
        raise InvalidInputError(f"{len(names)} feature names given for {n} features")
    return names


def _layout(fig: Any, title: str, **kwargs: Any) -> Any:
    fig.update_layout(
        title={"text": title},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        **kwargs,
    )
    return fig


# --------------------------------------------------------------------------- figures
def model_comparison_figure(
    metrics: Mapping[str, Mapping[str, float]], title: str = "Model comparison"
) -> Any:
    """Grouped bars: one trace per metric, one group per model.

    Parameters
    ----------
    metrics : Mapping[str, Mapping[str, float]]
        ``metrics[model][metric] = value``. A metric missing for a model leaves a gap.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Bar` per metric (in order of first appearance),
        x = model names.

    Raises
    ------
    InvalidInputError
        If there are no models or no metrics, or a value is not a finite number.
    """
    go = require_plotly()
    models, names = table_keys("metrics", metrics, "model", "metric")
    rows = [{str(k): v for k, v in row.items()} for row in metrics.values()]
    fig = go.Figure()
    for i, name in enumerate(names):
        values: list[float | None] = []
        for model, row in zip(models, rows, strict=True):
            if name in row:
                values.append(float(check_finite(f"metrics[{model!r}][{name!r}]", row[name])))
            else:
                values.append(None)
        fig.add_trace(
            go.Bar(
                name=str(name),
                x=models,
                y=values,
                marker_color=colour(i),
                hovertemplate=f"%{{x}}<br>{html.escape(str(name))}: %{{y:.4g}}<extra></extra>",
            )
        )
    return _layout(fig, title, barmode="group", xaxis_title="model", yaxis_title="value")


def learning_curves_figure(
    curves: Mapping[str, Sequence[float]],
    x: Sequence[float] | None = None,
    xlabel: str = "epoch",
    ylabel: str = "value",
    title: str = "Learning curves",
) -> Any:
    """One line per series (loss, accuracy, per client...), with a unified hover.

    Parameters
    ----------
    curves : Mapping[str, Sequence[float]]
        Series name -> values.
    x : Sequence[float], optional
        Shared x values (every series must have as many values); default 1, 2, ... per series.
    xlabel, ylabel, title : str
        Axis titles and figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Scatter` (lines+markers) per series.

    Raises
    ------
    InvalidInputError
        If there are no series, a series is empty, lengths differ from ``x``, or values are
        NaN/Inf.
    """
    go = require_plotly()
    non_empty("curves", curves)
    xs = None
    if x is not None:
        xs = check_finite("x", x)
        if xs.ndim != 1:
            raise InvalidInputError(f"x must be 1-D, got shape {xs.shape}")
        non_empty("x", xs)
    fig = go.Figure()
    for i, (name, values) in enumerate(curves.items()):
        ys = check_finite(f"curve {name!r}", values)
        if ys.ndim != 1:
            raise InvalidInputError(f"curve {name!r} must be 1-D, got shape {ys.shape}")
        non_empty(f"curve {name!r}", ys)
        if xs is not None:
            check_same_length(f"curve {name!r} against x", x=xs, values=ys)
            x_values = xs
        else:
            x_values = np.arange(1, ys.shape[0] + 1)
        fig.add_trace(
            go.Scatter(
                name=str(name),
                x=x_values.tolist(),
                y=ys.tolist(),
                mode="lines+markers",
                line={"color": colour(i)},
                hovertemplate="%{y:.4g}",
            )
        )
    return _layout(fig, title, hovermode="x unified", xaxis_title=xlabel, yaxis_title=ylabel)


def confusion_matrix_figure(
    y_true: Any,
    y_pred: Any,
    labels: Sequence[Any] | None = None,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Any:
    """Heatmap of true (rows) against predicted (columns) labels, counts written in the cells.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Labels (numbers, strings or booleans).
    labels : Sequence, optional
        Label order (default: the sorted union of both).
    normalize : bool
        Colour and hover by the fraction of each true class (rows sum to 1); the cells still
        show the counts.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Heatmap`; ``z`` equals
        ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=labels)`` (row-normalised
        with ``normalize``).

    Raises
    ------
    InvalidInputError
        If the inputs are empty, differ in length, hold NaN, or ``labels`` misses a label.
    """
    from sklearn.metrics import confusion_matrix

    go = require_plotly()
    t = _labels("y_true", y_true)
    p = _labels("y_pred", y_pred)
    check_same_length("confusion matrix (y_true vs y_pred)", y_true=t, y_pred=p)
    try:
        order = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    except TypeError as exc:
        raise InvalidInputError(
            f"y_true and y_pred mix label types that cannot be ordered ({exc}): pass labels"
        ) from exc
    non_empty("labels", order)
    missing = sorted(
        {str(v) for v in np.concatenate([t, p]).tolist()} - {str(v) for v in order.tolist()}
    )
    if labels is not None and missing:
        raise InvalidInputError(
            f"labels does not list {', '.join(missing[:5])}: add every label that occurs"
        )
    counts = confusion_matrix(t, p, labels=order)
    z: np.ndarray = counts.astype(float)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        z = np.divide(counts, rows, out=np.zeros_like(z), where=rows > 0)
    names = [str(v) for v in order.tolist()]
    hover = "true %{y}<br>predicted %{x}<br>count %{text}"
    if normalize:
        hover += "<br>fraction of true class %{z:.3f}"
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=names,
            y=names,
            text=counts.tolist(),
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate=hover + "<extra></extra>",
            colorbar={"title": {"text": "fraction" if normalize else "count"}},
        )
    )
    return _layout(
        fig,
        title,
        xaxis={"title": {"text": "predicted"}, "type": "category"},
        yaxis={"title": {"text": "true"}, "type": "category", "autorange": "reversed"},
    )


def _binary_or_micro(
    what: str, y_true: Any, y_score: Any
) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray | None]:
    """(y_true, scores, micro?, classes): 1-D scores pass; 2-D become one-vs-rest."""
    from sklearn.preprocessing import label_binarize

    t = _labels(f"{what}: y_true", y_true)
    s = check_finite(f"{what}: y_score", y_score)
    if s.ndim not in (1, 2):
        raise InvalidInputError(f"{what}: y_score must be 1-D or 2-D, got shape {s.shape}")
    check_same_length(f"{what} (y_true vs y_score)", y_true=t, y_score=s)
    classes = np.unique(t)
    if classes.shape[0] < 2:
        raise InvalidInputError(
            f"{what}: y_true holds a single class ({classes[0]!r}); a curve needs both "
            "positive and negative samples"
        )
    if s.ndim == 1:
        return t, s, False, None
    if s.shape[1] == 2 and classes.shape[0] == 2:
        return t, s[:, 1], False, classes
    if s.shape[1] != classes.shape[0]:
        raise InvalidInputError(
            f"{what}: y_score has {s.shape[1]} columns but y_true holds {classes.shape[0]} "
            "classes; pass one score column per class (in sorted class order)"
        )
    return label_binarize(t, classes=classes), s, True, classes


def _curve_inputs(scores: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    non_empty("scores", scores)
    out = []
    for name, pair in scores.items():
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInputError(
                f"scores[{name!r}] must be a (y_true, y_score) pair, got {type(pair).__name__}"
            )
        out.append((str(name), pair[0], pair[1]))
    return out


def _pos_label(classes: np.ndarray | None, pos_label: Any) -> Any:
    if pos_label is not None or classes is None:
        return pos_label
    return classes[-1]  # the column predict_proba puts second


def _curves_figure(
    scores: Mapping[str, tuple[Any, Any]],
    pos_label: Any,
    curve: Any,
    value_name: str,
    what: str,
    hint: str,
    hovertemplate: str,
    line: dict[str, Any],
    default_pos: Any = None,
) -> Any:
    """One line per model from ``curve(y_true, y_score, pos, micro)`` -> (x, y, value);
    ``micro`` asks for the micro-average one-vs-rest of 2-D multiclass scores."""
    go = require_plotly()
    fig = go.Figure()
    for i, (name, y_true, y_score) in enumerate(_curve_inputs(scores)):
        t, s, micro, classes = _binary_or_micro(name, y_true, y_score)
        pos = None
        if not micro:
            pos = _pos_label(classes, pos_label)
            if pos is None:
                pos = default_pos
        try:
            x, y, value = curve(t, s, pos, micro)
        except ValueError as exc:
            raise InvalidInputError(f"{name}: cannot compute {what} ({exc}); {hint}") from exc
        kind = "micro-average one-vs-rest, " if micro else ""
        fig.add_trace(
            go.Scatter(
                name=f"{name} ({kind}{value_name} = {value:.3f})",
                x=x.tolist(),
                y=y.tolist(),
                mode="lines",
                line={"color": colour(i), **line},
                meta=value,
                hovertemplate=hovertemplate,
            )
        )
    return fig


def roc_curves_figure(
    scores: Mapping[str, tuple[Any, Any]],
    pos_label: Any = None,
    title: str = "ROC curves",
) -> Any:
    """ROC curve per model with its AUC in the legend, plus the chance diagonal.

    Parameters
    ----------
    scores : Mapping[str, tuple[array-like, array-like]]
        Model name -> ``(y_true, y_score)``. 1-D ``y_score``: scores of the positive class.
        2-D ``y_score`` (one column per class, sorted class order, as ``predict_proba``):
        binary uses the second column; more classes give the one-vs-rest micro-average
        (said in the trace name).
    pos_label : optional
        The positive class for 1-D scores (default: scikit-learn's rule, 1 for {0, 1}).
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Scatter` per model (``name`` ends with
        ``AUC = 0.xxx``; the exact value is in ``meta``), then the chance line.

    Raises
    ------
    InvalidInputError
        On empty or mismatched inputs, NaN scores, a single class, or labels that need
        ``pos_label``.
    """
    from sklearn.metrics import auc as area
    from sklearn.metrics import roc_auc_score, roc_curve

    def roc(t: np.ndarray, s: np.ndarray, pos: Any, micro: bool) -> tuple[Any, Any, float]:
        if micro:
            fpr, tpr, _ = roc_curve(t.ravel(), s.ravel())
            return fpr, tpr, float(roc_auc_score(t, s, average="micro"))
        fpr, tpr, _ = roc_curve(t, s, pos_label=pos)
        return fpr, tpr, float(area(fpr, tpr))

    go = require_plotly()
    fig = _curves_figure(
        scores, pos_label, roc, "AUC", "the ROC curve", "for string labels pass pos_label",
        "FPR %{x:.3f}<br>TPR %{y:.3f}", {},
    )
    fig.add_trace(
        go.Scatter(
            name="chance",
            x=[0.0, 1.0],
            y=[0.0, 1.0],
            mode="lines",
            line={"color": "#8792a2", "dash": "dash"},
            hoverinfo="skip",
        )
    )
    return _layout(
        fig,
        title,
        xaxis={"title": {"text": "false positive rate"}, "range": [0, 1]},
        yaxis={"title": {"text": "true positive rate"}, "range": [0, 1.02]},
        hovermode="closest",
    )


def precision_recall_figure(
    scores: Mapping[str, tuple[Any, Any]],
    pos_label: Any = None,
    title: str = "Precision-recall curves",
) -> Any:
    """Precision-recall curve per model with its average precision (AP) in the legend.

    Parameters
    ----------
    scores : Mapping[str, tuple[array-like, array-like]]
        As for :func:`roc_curves_figure` (2-D multiclass scores: micro-average one-vs-rest).
    pos_label : optional
        The positive class for 1-D scores.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Scatter` per model (``name`` ends with
        ``AP = 0.xxx``, exact value in ``meta``), recall on x, precision on y.

    Raises
    ------
    InvalidInputError
        As for :func:`roc_curves_figure`.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    def pr(t: np.ndarray, s: np.ndarray, pos: Any, micro: bool) -> tuple[Any, Any, float]:
        if micro:
            precision, recall, _ = precision_recall_curve(t.ravel(), s.ravel())
            return recall, precision, float(average_precision_score(t, s, average="micro"))
        precision, recall, _ = precision_recall_curve(t, s, pos_label=pos)
        return recall, precision, float(average_precision_score(t, s, pos_label=pos))

    fig = _curves_figure(
        scores, pos_label, pr, "AP", "the precision-recall curve",
        "for labels other than {0, 1} pass pos_label", "recall %{x:.3f}<br>precision %{y:.3f}",
        {"shape": "hv"}, default_pos=1,
    )
    return _layout(
        fig,
        title,
        xaxis={"title": {"text": "recall"}, "range": [0, 1]},
        yaxis={"title": {"text": "precision"}, "range": [0, 1.02]},
        hovermode="closest",
    )


def pca_scatter_3d_figure(
    X: Any,
    y: Any = None,
    feature_names: Sequence[str] | None = None,
    random_state: int = 0,
    title: str = "PCA (first three components)",
) -> Any:
    """3-D scatter of the first three principal components, one trace per class.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        At least 3 samples and 3 features, all finite.
    y : array-like of shape (n_samples,), optional
        Labels colouring the points (one trace per class, sorted).
    feature_names : Sequence[str], optional
        Used to name the feature loading most on each component in the axis titles.
    random_state : int
        Seed of :class:`sklearn.decomposition.PCA` (used by randomized solvers).
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        :class:`~plotly.graph_objects.Scatter3d` traces holding ``PCA(3).fit_transform(X)``;
        axis titles give each component's explained variance (``PC1 (42.0%)``), the subtitle
        the feature loading most on each.

    Raises
    ------
    InvalidInputError
        On fewer than 3 features or samples, NaN/Inf, or ``y`` of another length.
    """
    from sklearn.decomposition import PCA

    go = require_plotly()
    data = _matrix("X", X)
    n, d = data.shape
    if d < 3:
        raise InvalidInputError(
            f"a 3-D PCA view needs at least 3 features, X has {d}; "
            "use a 2-D scatter (or the decision boundary view) instead"
        )
    if n < 3:
        raise InvalidInputError(f"a 3-D PCA view needs at least 3 samples, X has {n}")
    names = _names(feature_names, d)
    labels = None
    if y is not None:
        labels = _labels("y", y)
        check_same_length("PCA scatter (X vs y)", X=data, y=labels)
    pca = PCA(n_components=3, random_state=random_state)
    coords = pca.fit_transform(data)
    axes, loads = [], []
    for k in range(3):
        top = names[int(np.argmax(np.abs(pca.components_[k])))]
        ratio = 100.0 * float(pca.explained_variance_ratio_[k])
        axes.append(f"PC{k + 1} ({ratio:.1f}%)")
        loads.append(f"PC{k + 1} ~ {html.escape(top)}")
    fig = go.Figure()
    groups = (
        [("samples", np.arange(n))]
        if labels is None
        else [(str(c), np.flatnonzero(labels == c)) for c in np.unique(labels)]
    )
    for i, (name, idx) in enumerate(groups):
        fig.add_trace(
            go.Scatter3d(
                name=name,
                x=coords[idx, 0].tolist(),
                y=coords[idx, 1].tolist(),
                z=coords[idx, 2].tolist(),
                mode="markers",
                marker={"size": 3, "color": colour(i)},
                customdata=idx.tolist(),
                hovertemplate=(
                    f"{html.escape(name)} (row %{{customdata}})<br>PC1 %{{x:.3f}}<br>"
                    "PC2 %{y:.3f}<br>PC3 %{z:.3f}<extra></extra>"
                ),
            )
        )
    total = 100.0 * float(pca.explained_variance_ratio_.sum())
    subtitle = f"{total:.1f}% of the variance; mostly: {', '.join(loads)}"
    return _layout(
        fig,
        f"{title}<br><sup>{subtitle}</sup>",
        scene={
            "xaxis": {"title": {"text": axes[0]}},
            "yaxis": {"title": {"text": axes[1]}},
            "zaxis": {"title": {"text": axes[2]}},
        },
    )


def _importances_of(importances: Any) -> tuple[np.ndarray, str, list[str] | None]:
    """(values, axis title, names from the estimator) of an array or a fitted estimator."""
    names = getattr(importances, "feature_names_in_", None)
    names = None if names is None else [str(n) for n in names]
    if hasattr(importances, "feature_importances_"):
        values = check_finite("feature_importances_", importances.feature_importances_)
        return values.ravel(), "importance", names
    if hasattr(importances, "coef_"):
        coef = check_finite("coef_", importances.coef_)
        if coef.ndim == 2 and coef.shape[0] > 1:
            return np.mean(np.abs(coef), axis=0), "mean |coefficient| over classes", names
        return coef.ravel(), "coefficient", names
    if hasattr(importances, "fit") or hasattr(importances, "predict"):
        raise InvalidInputError(
            f"{type(importances).__name__} has neither feature_importances_ nor coef_ "
            "(is it fitted?); pass the importances as an array instead"
        )
    values = check_finite("importances", importances)
    if values.ndim != 1:
        raise InvalidInputError(f"importances must be 1-D, got shape {values.shape}")
    return values, "importance", None


def feature_importance_figure(
    importances: Any,
    feature_names: Sequence[str] | None = None,
    top: int = 20,
    title: str = "Feature importance",
) -> Any:
    """Horizontal bars of the ``top`` features by absolute importance, largest on top.

    Parameters
    ----------
    importances : array-like or fitted estimator
        One value per feature, or an estimator with ``feature_importances_`` (trees) or
        ``coef_`` (linear models; several classes: mean absolute coefficient).
    feature_names : Sequence[str], optional
        Default: the estimator's ``feature_names_in_``, else ``x0, x1, ...``.
    top : int
        How many features to show (at least 1).
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One horizontal :class:`~plotly.graph_objects.Bar`; ``y`` from last to first is the
        features sorted by decreasing ``|importance|`` (ties: feature order).

    Raises
    ------
    InvalidInputError
        On empty or non-finite importances, wrong number of names, or ``top < 1``.
    """
    go = require_plotly()
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise InvalidInputError(f"top must be a positive integer, got {top!r}")
    values, axis_title, model_names = _importances_of(importances)
    non_empty("importances", values)
    names = _names(feature_names if feature_names is not None else model_names, values.shape[0])
    order = np.argsort(-np.abs(values), kind="stable")[: int(top)]
    shown = order[::-1]  # plotly draws the first category at the bottom
    fig = go.Figure(
        go.Bar(
            x=values[shown].tolist(),
            y=[names[i] for i in shown],
            orientation="h",
            marker_color=[colour(0) if values[i] >= 0 else colour(3) for i in shown],
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    return _layout(
        fig,
        title,
        xaxis_title=axis_title,
        yaxis={"type": "category"},
    )


# --------------------------------------------------------------------------- dashboard
class InteractiveDashboard:
    """Figures grouped into named sections, written as one offline page, fragments or images.

    Parameters
    ----------
    title : str
        Page title.
    subtitle : str
        Line under the title.

    Examples
    --------
    >>> dash = InteractiveDashboard("iris")                          # doctest: +SKIP
    >>> dash.add_confusion_matrix(y, model.predict(X)).save_dashboard("iris.html")  # doctest: +SKIP
    """

    def __init__(self, title: str = "fedge dashboard", subtitle: str = "") -> None:
        self.title = str(title)
        self.subtitle = str(subtitle)
        self._sections: dict[str, list[Any]] = {}

    # ----------------------------------------------------------------- adding
    def add_figure(self, fig: Any, section: str | None = None) -> InteractiveDashboard:
        """Add any Plotly figure to ``section`` (default ``"Figures"``); returns ``self``."""
        go = require_plotly()
        if not isinstance(fig, go.Figure):
            raise InvalidInputError(
                f"add_figure takes a plotly.graph_objects.Figure, got {type(fig).__name__}"
            )
        name = "Figures" if section is None else str(section)
        if not name.strip():
            raise InvalidInputError("section names must not be blank")
        clash = [s for s in self._sections if s != name and slug(s) == slug(name)]
        if clash:
            raise InvalidInputError(
                f"section {name!r} would share its page anchor with {clash[0]!r}; rename one"
            )
        self._sections.setdefault(name, []).append(fig)
        return self

    def add_model_comparison(
        self, metrics: Mapping[str, Mapping[str, float]], *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`model_comparison_figure` (section ``"Model comparison"``)."""
        return self.add_figure(
            model_comparison_figure(metrics, **kw), section or "Model comparison"
        )

    def add_learning_curves(
        self, curves: Mapping[str, Sequence[float]], *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`learning_curves_figure` (section ``"Learning curves"``)."""
        return self.add_figure(learning_curves_figure(curves, **kw), section or "Learning curves")

    def add_confusion_matrix(
        self, y_true: Any, y_pred: Any, *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`confusion_matrix_figure` (section ``"Confusion matrices"``)."""
        return self.add_figure(
            confusion_matrix_figure(y_true, y_pred, **kw), section or "Confusion matrices"
        )

    def add_roc_curves(
        self, scores: Mapping[str, tuple[Any, Any]], *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`roc_curves_figure` (section ``"ROC curves"``)."""
        return self.add_figure(roc_curves_figure(scores, **kw), section or "ROC curves")

    def add_precision_recall(
        self, scores: Mapping[str, tuple[Any, Any]], *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`precision_recall_figure` (section ``"Precision-recall"``)."""
        return self.add_figure(precision_recall_figure(scores, **kw), section or "Precision-recall")

    def add_pca_3d(
        self, X: Any, y: Any = None, *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`pca_scatter_3d_figure` (section ``"Data (PCA)"``)."""
        return self.add_figure(pca_scatter_3d_figure(X, y, **kw), section or "Data (PCA)")

    def add_feature_importance(
        self, importances: Any, *, section: str | None = None, **kw: Any
    ) -> InteractiveDashboard:
        """Add :func:`feature_importance_figure` (section ``"Feature importance"``)."""
        return self.add_figure(
            feature_importance_figure(importances, **kw), section or "Feature importance"
        )

    # ----------------------------------------------------------------- reading
    @property
    def figures(self) -> list[Any]:
        """Every figure, section by section in the order sections were first used."""
        return [fig for figs in self._sections.values() for fig in figs]

    @property
    def sections(self) -> dict[str, list[Any]]:
        """Section name -> its figures (a copy)."""
        return {name: list(figs) for name, figs in self._sections.items()}

    def _require_figures(self, action: str) -> list[Section]:
        if not self._sections:
            raise InvalidInputError(
                f"the dashboard is empty: add a figure (add_figure, add_confusion_matrix, ...) "
                f"before {action}"
            )
        return [Section(name, figures=figs) for name, figs in self._sections.items()]

    def _ids(self) -> list[tuple[str, Any]]:
        """(div id, figure) in page order; the same ids :func:`render_page` gives."""
        out = []
        for s in self._require_figures("rendering it"):
            out.extend((f"{s.id}-fig{j}", fig) for j, fig in enumerate(s.figures))
        return out

    # ----------------------------------------------------------------- output
    def to_html(self) -> str:
        """The whole dashboard as one self-contained HTML page (plotly.js inlined once)."""
        sections = self._require_figures("rendering it")
        return render_page(self.title, sections, subtitle=self.subtitle)

    def save_dashboard(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` to ``path`` (UTF-8, parents created, replaced atomically);
        return the path.

        Raises
        ------
        InvalidInputError
            If the dashboard has no figures.
        """
        return write_page(path, self.to_html())

    def to_fragment(self, include_plotlyjs: bool = False) -> str:
        """The dashboard's figures as ``<div>`` elements to embed in another page.

        Parameters
        ----------
        include_plotlyjs : bool
            Prepend one inline ``<script>`` with plotly.js (for hosts that do not load it).

        Returns
        -------
        str
            A ``<div class="fedge-dashboard">`` holding one ``.fedge-figure`` per figure
            (no ``<html>``/``<body>``).
        """
        items = self._ids()
        script = ""
        if include_plotlyjs:
            from plotly.offline import get_plotlyjs

            script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
        body = "".join(figure_html(fig, div_id) for div_id, fig in items)
        return f'{script}<div class="fedge-dashboard" id="{slug(self.title)}">{body}</div>'

    def export(
        self,
        out_dir: str | os.PathLike[str],
        formats: Sequence[str] = ("png", "svg", "pdf"),
        *,
        width: int = 900,
        height: int = 500,
        scale: float = 1.0,
    ) -> list[Path]:
        """Write every figure as images, named by div id (``<section>-fig<j>.<format>``), with
        one browser session for all (see :func:`fedge.visualization.export.export_figures`).

        Returns
        -------
        list of pathlib.Path
            The written files.
        """
        from fedge.visualization.export import export_figures

        figs = dict(self._ids())
        return export_figures(figs, out_dir, formats, width=width, height=height, scale=scale)
