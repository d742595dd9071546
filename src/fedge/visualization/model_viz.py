"""Plotly views of a model's inside: decision regions, weights, layers, trees, and what
compression changed.

Every function takes a fitted estimator (lowered with :func:`fedge.ir.lower`) or a fedge IR
:class:`~fedge.ir.Model`, so an original and its compressed IR are drawn by the same code.

*Parameters* here are a model's learned values: weights and biases (dense, linear and
quantized layers, dequantized), split thresholds and leaf values (trees), and per-feature
offsets/scales/fills (preprocessing). Tree structure (feature indices, child links) counts in
bytes only.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.ir import lower
from fedge.ir.nodes import (
    Affine,
    Dense,
    Impute,
    Linear,
    Model,
    QuantizedDense,
    QuantizedTrees,
    Step,
    Task,
    TreeEnsemble,
    step_arrays,
)
from fedge.visualization._common import check_finite, check_same_length, colour, require_plotly

__all__ = [
    "compression_comparison_figure",
    "decision_boundary_figure",
    "leaf_depths",
    "mlp_layers_figure",
    "parameter_analysis_figure",
    "step_parameters",
    "tree_structure_figure",
    "weight_distribution_figure",
]


# --------------------------------------------------------------------------- helpers
def _model(model: Any) -> Model:
    return lower(model)


def _layout(fig: Any, title: str, **kwargs: Any) -> Any:
    fig.update_annotations(font_size=12)  # subplot titles
    fig.update_layout(
        title={"text": title},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
        **kwargs,
    )
    return fig


def _step_name(i: int, step: Step) -> str:
    if isinstance(step, Dense | QuantizedDense):
        kind = "dense" if isinstance(step, Dense) else f"dense {step.weights.dtype}"
        return f"{i}: {kind} {step.n_inputs}x{step.n_outputs} {step.activation.value}"
    if isinstance(step, Linear):
        return f"{i}: linear {step.n_inputs}x{step.n_outputs}"
    if isinstance(step, TreeEnsemble):
        return f"{i}: {step.n_trees} trees"
    if isinstance(step, QuantizedTrees):
        return f"{i}: {step.n_trees} trees {step.leaf_values.dtype}"
    if isinstance(step, Affine):
        return f"{i}: affine {step.n_inputs}"
    return f"{i}: impute {step.n_inputs}"


def _layer_weights(step: Dense | Linear | QuantizedDense) -> np.ndarray:
    """The float weights a device multiplies by (dequantized for integer layers)."""
    if isinstance(step, QuantizedDense):
        return step.dequantized().astype(np.float64)
    return step.weights.astype(np.float64)


def step_parameters(step: Step) -> dict[str, np.ndarray]:
    """A step's learned values by kind, as float64 arrays (dequantized where integer).

    Parameters
    ----------
    step : Step
        Any IR step.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``weights``/``bias`` (dense, linear), ``thresholds``/``leaf values`` (trees: float
        thresholds or the float32 grid edges of quantized trees, leaves times their scale),
        ``offset``/``scale`` (affine) or ``fill`` (impute); all 1-D.
    """
    if isinstance(step, Dense | Linear | QuantizedDense):
        return {
            "weights": _layer_weights(step).ravel(),
            "bias": step.bias.astype(np.float64).ravel(),
        }
    if isinstance(step, TreeEnsemble | QuantizedTrees):
        trees = step.as_float() if isinstance(step, QuantizedTrees) else step
        return {
            "thresholds": trees.threshold.astype(np.float64).ravel(),
            "leaf values": trees.leaf_values.astype(np.float64).ravel(),
        }
    if isinstance(step, Affine):
        return {
            "offset": step.offset.astype(np.float64).ravel(),
            "scale": step.scale.astype(np.float64).ravel(),
        }
    return {"fill": step.fill.astype(np.float64).ravel()}


def _parameter_count(step: Step) -> int:
    return int(sum(v.size for v in step_parameters(step).values()))


def _step_bytes(step: Step) -> int:
    return int(sum(a.nbytes for a in step_arrays(step).values()))


# --------------------------------------------------------------------------- decision boundary
def decision_boundary_figure(
    model: Any,
    X: Any,
    y: Any,
    feature_names: Sequence[str] | None = None,
    resolution: int = 200,
    title: str = "Decision boundary",
) -> Any:
    """Decision regions of a 2-feature model over a padded grid, with the samples on top.

    Parameters
    ----------
    model : estimator or Model
        A fitted model taking exactly two features (lowered with :func:`fedge.ir.lower`;
        predictions come from :func:`fedge.ir.runtime.predict`).
    X : array-like of shape (n_samples, 2)
    y : array-like of shape (n_samples,)
        Labels of the samples (classification) or targets (regression).
    feature_names : Sequence[str], optional
        Two axis titles (default: the model's feature names, else ``x0``, ``x1``).
    resolution : int
        Grid points per axis (2 to 1000); the grid spans each feature's range padded by 5%.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        First a :class:`~plotly.graph_objects.Heatmap` whose ``z[i][j]`` is the predicted
        class index (position in ``model.classes``; regression: the prediction) at
        ``(x[j], y[i])``, then one :class:`~plotly.graph_objects.Scatter` per label of ``y``.

    Raises
    ------
    InvalidInputError
        If ``X`` does not have exactly 2 columns, the model does not take 2 features, the
        inputs are empty, mismatched or not finite, or ``resolution`` is out of range.
    """
    from fedge.ir.runtime import predict

    go = require_plotly()
    ir = _model(model)
    data = check_finite("X", X)
    if data.ndim != 2 or data.shape[1] != 2:
        shape = data.shape if data.ndim != 2 else f"{data.shape[1]} features"
        raise InvalidInputError(
            f"a decision boundary is drawn over exactly 2 features, X has {shape}; "
            "select two columns (and fit the model on them) or use the PCA view"
        )
    if ir.n_features != 2:
        raise InvalidInputError(
            f"the model takes {ir.n_features} features; a decision boundary needs a model "
            "fitted on exactly 2"
        )
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise InvalidInputError(f"y must be 1-D, got shape {labels.shape}")
    check_same_length("decision boundary (X vs y)", X=data, y=labels)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise InvalidInputError("y holds NaN/Inf labels: drop those samples first")
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise InvalidInputError(f"resolution must be an integer, got {resolution!r}")
    if not 2 <= resolution <= 1000:
        raise InvalidInputError(f"resolution must be between 2 and 1000, got {resolution}")
    names = (
        list(feature_names)
        if feature_names is not None
        else (list(ir.feature_names) if ir.feature_names else ["x0", "x1"])
    )
    if len(names) != 2:
        raise InvalidInputError(f"feature_names needs 2 names, got {len(names)}")
    axes = []
    for k in range(2):
        lo, hi = float(data[:, k].min()), float(data[:, k].max())
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        axes.append(np.linspace(lo - pad, hi + pad, int(resolution)))
    gx, gy = np.meshgrid(axes[0], axes[1])
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    pred = predict(ir, grid)
    fig = go.Figure()
    if ir.task is Task.CLASSIFICATION:
        classes = ir.classes
        assert classes is not None  # a classification model always has classes
        index = {c: i for i, c in enumerate(classes.tolist())}
        z = np.array([index[v] for v in pred.tolist()], dtype=float).reshape(gx.shape)
        k = len(classes)
        scale = []
        for i in range(k):
            scale += [[i / k, colour(i)], [(i + 1) / k, colour(i)]]
        text = np.asarray([str(c) for c in classes.tolist()])[z.astype(int)]
        fig.add_trace(
            go.Heatmap(
                x=axes[0].tolist(),
                y=axes[1].tolist(),
                z=z.tolist(),
                text=text.tolist(),
                zmin=-0.5,
                zmax=k - 0.5,
                colorscale=scale,
                opacity=0.35,
                showscale=False,
                name="predicted class",
                hovertemplate="predicted %{text}<br>(%{x:.3g}, %{y:.3g})<extra></extra>",
            )
        )
    else:
        z = np.asarray(pred, dtype=float).reshape(gx.shape)
        index = {}
        fig.add_trace(
            go.Heatmap(
                x=axes[0].tolist(),
                y=axes[1].tolist(),
                z=z.tolist(),
                colorscale="Viridis",
                opacity=0.6,
                name="prediction",
                hovertemplate="prediction %{z:.4g}<br>(%{x:.3g}, %{y:.3g})<extra></extra>",
            )
        )
    if ir.task is Task.CLASSIFICATION:
        for j, label in enumerate(np.unique(labels).tolist()):
            idx = np.flatnonzero(labels == label)
            c = colour(index.get(label, len(index) + j))
            fig.add_trace(
                go.Scatter(
                    name=str(label),
                    x=data[idx, 0].tolist(),
                    y=data[idx, 1].tolist(),
                    mode="markers",
                    marker={"color": c, "size": 7, "line": {"color": "white", "width": 0.8}},
                    hovertemplate=f"{html.escape(str(label))}<br>(%{{x:.3g}}, %{{y:.3g}})"
                    "<extra></extra>",
                )
            )
    else:
        fig.add_trace(
            go.Scatter(
                name="samples",
                x=data[:, 0].tolist(),
                y=data[:, 1].tolist(),
                mode="markers",
                marker={
                    "color": labels.astype(float).tolist(),
                    "colorscale": "Viridis",
                    "line": {"color": "white", "width": 0.8},
                },
                hovertemplate="target %{marker.color:.4g}<extra></extra>",
            )
        )
    return _layout(
        fig,
        title,
        xaxis={"title": {"text": names[0]}, "range": [axes[0][0], axes[0][-1]]},
        yaxis={"title": {"text": names[1]}, "range": [axes[1][0], axes[1][-1]]},
    )


# --------------------------------------------------------------------------- weights
def _weights_by_kind(ir: Model) -> dict[str, np.ndarray]:
    """Weights and biases of dense/linear steps; thresholds and leaf values of trees."""
    kinds: dict[str, list[np.ndarray]] = {}
    for step in ir.steps:
        if isinstance(step, Affine | Impute):
            continue
        params = step_parameters(step)
        if "weights" in params:
            kinds.setdefault("weights and biases", []).extend(params.values())
        else:
            for name, values in params.items():
                kinds.setdefault(name, []).append(values)
    return {k: np.concatenate(v) for k, v in kinds.items()}


def weight_distribution_figure(
    model: Any,
    compressed: Any = None,
    bins: int = 60,
    title: str = "Weight distribution",
) -> Any:
    """Histogram of a model's weights, overlaid with a compressed model's (dequantized) ones.

    Parameters
    ----------
    model : estimator or Model
        Dense/linear layers contribute weights and biases; tree ensembles their split
        thresholds and leaf values (each kind in its own panel). Preprocessing steps are left
        out.
    compressed : estimator or Model, optional
        The same model after compression: quantized layers are dequantized
        (``(q - zero_point) * scale``), quantized trees give their grid edges and scaled leaves.
    bins : int
        Bins per panel (shared by both models so the bars line up).
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Histogram` per kind and model (``x`` holds every
        value: its length is that kind's parameter count); ``meta`` is the model name.

    Raises
    ------
    InvalidInputError
        If the model has no weights (only preprocessing), ``bins < 1``, or the compressed
        model's kinds differ.
    """
    from plotly.subplots import make_subplots

    go = require_plotly()
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise InvalidInputError(f"bins must be a positive integer, got {bins!r}")
    before = _weights_by_kind(_model(model))
    if not before:
        raise InvalidInputError("the model has no weights, thresholds or leaf values to plot")
    models = [("original", before)]
    if compressed is not None:
        after = _weights_by_kind(_model(compressed))
        if set(after) != set(before):
            raise InvalidInputError(
                f"the compressed model holds {', '.join(after) or 'nothing'} but the original "
                f"holds {', '.join(before)}: pass a compressed version of the same model"
            )
        models.append(("compressed", after))
    kinds = list(before)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds)
    for col, kind in enumerate(kinds, start=1):
        everything = np.concatenate([m[kind] for _, m in models])
        lo, hi = float(everything.min()), float(everything.max())
        size = (hi - lo) / int(bins) if hi > lo else 1.0
        for i, (name, values) in enumerate(models):
            v = values[kind]
            distinct = np.unique(v).size
            fig.add_trace(
                go.Histogram(
                    x=v.tolist(),
                    name=f"{name}: {kind} ({v.size} values, {distinct} distinct)",
                    meta=name,
                    xbins={"start": lo, "end": hi + size, "size": size},
                    marker_color=colour(i),
                    opacity=0.6 if compressed is not None else 0.9,
                    legendgroup=name,
                    hovertemplate=f"{name}<br>%{{x}}<br>count %{{y}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="value", row=1, col=col)
        fig.update_yaxes(title_text="count", row=1, col=col)
    return _layout(
        fig,
        title,
        barmode="overlay",
        bargap=0.02,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
    )


# --------------------------------------------------------------------------- parameters
def parameter_analysis_figure(model: Any, title: str = "Parameters per step") -> Any:
    """Bars of each step's parameter count and bytes (arrays at their stored precision).

    Parameters
    ----------
    model : estimator or Model
        The model to analyse.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Two :class:`~plotly.graph_objects.Bar` traces side by side, x = steps
        (``"<index>: <kind>"``): parameters (see the module docstring) and bytes (every array
        of the step, structure included).
    """
    from plotly.subplots import make_subplots

    go = require_plotly()
    ir = _model(model)
    names = [_step_name(i, s) for i, s in enumerate(ir.steps)]
    params = [_parameter_count(s) for s in ir.steps]
    sizes = [_step_bytes(s) for s in ir.steps]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            f"parameters<br>(total {sum(params):,})",
            f"bytes in the IR<br>(total {sum(sizes):,})",
        ),
    )
    for col, (unit, values) in enumerate((("parameters", params), ("bytes", sizes)), start=1):
        fig.add_trace(
            go.Bar(
                name=unit,
                x=names,
                y=values,
                marker_color=colour(col - 1),
                text=[f"{v:,}" for v in values],
                textposition="auto",
                hovertemplate=f"%{{x}}<br>%{{y:,}} {unit}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(type="category")
    return _layout(fig, title, showlegend=False)


def mlp_layers_figure(model: Any, title: str = "MLP layers") -> Any:
    """One weight heatmap per dense layer, and a table of per-layer weight statistics.

    Parameters
    ----------
    model : estimator or Model
        An MLP (or any model with dense/linear steps; quantized layers are dequantized).
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One :class:`~plotly.graph_objects.Heatmap` per layer (``z`` = weights transposed:
        row = output unit, column = input), then a :class:`~plotly.graph_objects.Table` with
        per layer: shape, activation, mean, std, min, max and % zeros of the weights.

    Raises
    ------
    InvalidInputError
        If the model has no dense or linear layer (e.g. a tree ensemble).
    """
    from plotly.subplots import make_subplots

    go = require_plotly()
    ir = _model(model)
    layers = [
        (i, s) for i, s in enumerate(ir.steps) if isinstance(s, Dense | Linear | QuantizedDense)
    ]
    if not layers:
        kinds = ", ".join(type(s).__name__ for s in ir.steps)
        raise InvalidInputError(
            f"the model has no dense layers (its steps: {kinds}); use tree_structure_figure "
            "for tree ensembles"
        )
    n = len(layers)
    titles = [_step_name(i, s) for i, s in layers]
    fig = make_subplots(
        rows=2,
        cols=n,
        specs=[[{"type": "heatmap"}] * n, [{"type": "table", "colspan": n}] + [None] * (n - 1)],
        subplot_titles=[*titles, ""],
        row_heights=[0.68, 0.32],
        vertical_spacing=0.12,
    )
    stats: dict[str, list[Any]] = {
        k: [] for k in ("layer", "shape", "activation", "mean", "std", "min", "max", "% zeros")
    }
    for col, (i, step) in enumerate(layers, start=1):
        w = _layer_weights(step)
        act = step.activation.value if isinstance(step, Dense | QuantizedDense) else "identity"
        fig.add_trace(
            go.Heatmap(
                z=w.T.tolist(),
                colorscale="RdBu",
                zmid=0.0,
                showscale=col == n,
                name=titles[col - 1],
                hovertemplate="input %{x} -> unit %{y}<br>weight %{z:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="input", row=1, col=col)
        fig.update_yaxes(title_text="unit", row=1, col=col)
        stats["layer"].append(str(i))
        stats["shape"].append(f"{step.n_inputs}x{step.n_outputs}")
        stats["activation"].append(act)
        stats["mean"].append(float(w.mean()))
        stats["std"].append(float(w.std()))
        stats["min"].append(float(w.min()))
        stats["max"].append(float(w.max()))
        stats["% zeros"].append(100.0 * float(np.count_nonzero(w == 0)) / w.size)
    cells = [
        v if k in ("layer", "shape", "activation") else [round(x, 6) for x in v]
        for k, v in stats.items()
    ]
    fig.add_trace(
        go.Table(
            header={"values": list(stats), "align": "left"},
            cells={"values": cells, "align": "left"},
        ),
        row=2,
        col=1,
    )
    return _layout(fig, title)


# --------------------------------------------------------------------------- trees
def _forest(ir: Model) -> TreeEnsemble:
    for step in ir.steps:
        if isinstance(step, TreeEnsemble):
            return step
        if isinstance(step, QuantizedTrees):
            return step.as_float()
    kinds = ", ".join(type(s).__name__ for s in ir.steps)
    raise InvalidInputError(
        f"the model has no tree ensemble (its steps: {kinds}); use mlp_layers_figure or "
        "weight_distribution_figure for other models"
    )


def leaf_depths(trees: TreeEnsemble | QuantizedTrees) -> list[list[int]]:
    """Depth (number of splits from the root) of every leaf reference, tree by tree.

    Parameters
    ----------
    trees : TreeEnsemble or QuantizedTrees

    Returns
    -------
    list of list of int
        ``out[t]`` holds one depth per leaf reached in tree ``t`` (a single-leaf tree: ``[0]``).
    """
    out = []
    for root in trees.roots.tolist():
        depths: list[int] = []
        stack = [(int(root), 0)]
        while stack:
            ref, d = stack.pop()
            if ref < 0:
                depths.append(d)
                continue
            stack.append((int(trees.right[ref]), d + 1))
            stack.append((int(trees.left[ref]), d + 1))
        out.append(depths)
    return out


def tree_structure_figure(
    model: Any,
    feature_names: Sequence[str] | None = None,
    title: str = "Tree structure",
) -> Any:
    """Three panels of a tree ensemble: leaf depths, leaves per tree, thresholds per feature.

    Parameters
    ----------
    model : estimator or Model
        A tree ensemble (forest, boosting, single tree; quantized trees use their grid edges).
    feature_names : Sequence[str], optional
        Names for the threshold panel (default: the model's, else ``x0, x1, ...``).
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces in order: a :class:`~plotly.graph_objects.Bar` of leaf count by depth (x =
        depth), a :class:`~plotly.graph_objects.Bar` of leaves per tree (x = tree index), then
        one :class:`~plotly.graph_objects.Histogram` of split thresholds per feature used.

    Raises
    ------
    InvalidInputError
        If the model has no tree ensemble.
    """
    from plotly.subplots import make_subplots

    go = require_plotly()
    ir = _model(model)
    trees = _forest(ir)
    depths = leaf_depths(trees)
    flat = np.array([d for tree in depths for d in tree], dtype=np.int64)
    by_depth = np.bincount(flat)
    per_tree = [len(t) for t in depths]
    if feature_names is not None:
        names = [str(f) for f in feature_names]
        if len(names) != ir.n_features:
            raise InvalidInputError(
                f"{len(names)} feature names given for {ir.n_features} features"
            )
    elif ir.feature_names:
        names = list(ir.feature_names)
    else:
        names = [f"x{i}" for i in range(ir.n_features)]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            f"leaves by depth<br>(max depth {trees.max_depth})",
            f"leaves per tree<br>({trees.n_trees} trees)",
            f"thresholds by feature<br>({trees.n_nodes} splits)",
        ),
    )
    fig.add_trace(
        go.Bar(
            name="leaves by depth",
            x=list(range(by_depth.size)),
            y=by_depth.tolist(),
            marker_color=colour(0),
            showlegend=False,
            hovertemplate="depth %{x}: %{y} leaves<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            name="leaves per tree",
            x=list(range(len(per_tree))),
            y=per_tree,
            marker_color=colour(1),
            showlegend=False,
            hovertemplate="tree %{x}: %{y} leaves<extra></extra>",
        ),
        row=1,
        col=2,
    )
    features = trees.feature
    thresholds = trees.threshold.astype(np.float64)
    for j, f in enumerate(np.unique(features).tolist()):
        fig.add_trace(
            go.Histogram(
                name=names[f],
                x=thresholds[features == f].tolist(),
                meta=int(f),
                marker_color=colour(j),
                opacity=0.7,
                hovertemplate=f"{html.escape(names[f])}<br>%{{x}}: %{{y}} splits<extra></extra>",
            ),
            row=1,
            col=3,
        )
    fig.update_xaxes(title_text="depth", row=1, col=1)
    fig.update_xaxes(title_text="tree", row=1, col=2)
    fig.update_xaxes(title_text="threshold", row=1, col=3)
    fig.update_yaxes(title_text="leaves", row=1, col=1)
    fig.update_yaxes(title_text="splits", row=1, col=3)
    return _layout(
        fig,
        title,
        barmode="overlay",
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
    )


# --------------------------------------------------------------------------- compression
def _model_stats(ir: Model) -> dict[str, int]:
    from fedge.compression import lite_bytes

    values = [v for s in ir.steps for v in step_parameters(s).values()]
    flat = np.concatenate(values) if values else np.zeros(0)
    return {
        "parameters": int(flat.size),
        "non-zeros": int(np.count_nonzero(flat)),
        "bytes (.fedge file)": int(lite_bytes(ir)),
        "unique values": int(np.unique(flat).size),
    }


def compression_comparison_figure(
    before: Any,
    after: Any,
    names: tuple[str, str] = ("original", "compressed"),
    title: str = "What compression changed",
) -> Any:
    """Side-by-side statistics of a model before and after compression.

    Parameters
    ----------
    before, after : estimator or Model
        The original and the compressed model.
    names : tuple[str, str]
        Labels of the two models.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Four panels (parameters, non-zero parameters, bytes of the binary ``.fedge`` file from
        :func:`fedge.compression.lite_bytes`, unique parameter values), each with one
        :class:`~plotly.graph_objects.Bar` whose ``x`` is ``names`` and ``y`` the two values;
        ``meta`` holds the statistic's name.
    """
    from plotly.subplots import make_subplots

    go = require_plotly()
    if len(names) != 2 or len({str(n) for n in names}) != 2:
        raise InvalidInputError(f"names must be two distinct labels, got {names!r}")
    labels = [str(n) for n in names]
    stats = [_model_stats(_model(before)), _model_stats(_model(after))]
    keys = list(stats[0])
    titles = []
    for k in keys:
        a, b = stats[0][k], stats[1][k]
        change = f"<br>({b / a:.2f}x)" if a else ""
        titles.append(f"{k}{change}")
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=titles)
    for col, k in enumerate(keys, start=1):
        ys = [stats[0][k], stats[1][k]]
        fig.add_trace(
            go.Bar(
                name=k,
                meta=k,
                x=labels,
                y=ys,
                text=[f"{v:,}" for v in ys],
                textposition="auto",
                marker_color=[colour(0), colour(2)],
                showlegend=False,
                hovertemplate=f"%{{x}}<br>{k}: %{{y:,}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(type="category")
    return _layout(fig, title)
