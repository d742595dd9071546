"""Interactive figures and the dashboard: the data in the traces, bad input, the HTML output."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    roc_auc_score,
)

from fedge.errors import InvalidInputError
from fedge.visualization.interactive import (
    InteractiveDashboard,
    confusion_matrix_figure,
    feature_importance_figure,
    learning_curves_figure,
    model_comparison_figure,
    pca_scatter_3d_figure,
    precision_recall_figure,
    roc_curves_figure,
)

go = pytest.importorskip("plotly.graph_objects")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def iris_lr(iris):
    X, y = iris
    return LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    lr = LogisticRegression(max_iter=1000).fit(X, y)
    rf = RandomForestClassifier(n_estimators=10, max_depth=3, random_state=0).fit(X, y)
    return X, y, lr, rf


def _auc_in(name: str, key: str = "AUC") -> float:
    return float(re.search(rf"{key} = ([0-9.]+)\)", name).group(1))


# --------------------------------------------------------------------------- model comparison
def test_model_comparison_bar_heights_are_the_metrics():
    metrics = {"lr": {"accuracy": 0.91, "f1": 0.88}, "rf": {"accuracy": 0.95, "f1": 0.93}}
    fig = model_comparison_figure(metrics, title="cmp")
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert [t.name for t in fig.data] == ["accuracy", "f1"]
    for trace in fig.data:
        assert list(trace.x) == ["lr", "rf"]
        assert list(trace.y) == [metrics["lr"][trace.name], metrics["rf"][trace.name]]
        assert "%{y" in trace.hovertemplate
    assert fig.layout.barmode == "group"
    assert fig.layout.title.text == "cmp"


def test_model_comparison_missing_metric_is_a_gap():
    fig = model_comparison_figure({"a": {"acc": 0.5, "auc": 0.7}, "b": {"acc": 0.6}})
    auc = next(t for t in fig.data if t.name == "auc")
    assert list(auc.y) == [0.7, None]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({}, "metrics is empty"),
        ({"a": {}}, "names no metric"),
        ({"a": {"acc": float("nan")}}, "non-finite"),
        ({"a": 0.5}, "must map metric names"),
    ],
)
def test_model_comparison_bad_input(metrics, message):
    with pytest.raises(InvalidInputError, match=message):
        model_comparison_figure(metrics)


# --------------------------------------------------------------------------- learning curves
def test_learning_curves_one_line_per_series():
    curves = {"train loss": [1.0, 0.5, 0.25], "val loss": [1.2, 0.7, 0.6]}
    fig = learning_curves_figure(curves, ylabel="loss")
    assert [t.type for t in fig.data] == ["scatter", "scatter"]
    for trace, (name, values) in zip(fig.data, curves.items(), strict=True):
        assert trace.name == name
        assert list(trace.y) == values
        assert list(trace.x) == [1, 2, 3]
    assert fig.layout.hovermode == "x unified"
    assert fig.layout.xaxis.title.text == "epoch"
    assert fig.layout.yaxis.title.text == "loss"


def test_learning_curves_shared_x():
    fig = learning_curves_figure({"acc": [0.1, 0.2]}, x=[10, 20], xlabel="round")
    assert list(fig.data[0].x) == [10.0, 20.0]
    assert fig.layout.xaxis.title.text == "round"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"curves": {}}, "curves is empty"),
        ({"curves": {"a": []}}, "curve 'a' is empty"),
        ({"curves": {"a": [1.0, float("nan")]}}, "non-finite"),
        ({"curves": {"a": [1.0, 2.0, 3.0]}, "x": [1, 2]}, r"different lengths \(x: 2, values: 3\)"),
    ],
)
def test_learning_curves_bad_input(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        learning_curves_figure(**kwargs)


# --------------------------------------------------------------------------- confusion matrix
def test_confusion_matrix_equals_sklearn(iris, iris_lr):
    X, y = iris
    pred = iris_lr.predict(X)
    fig = confusion_matrix_figure(y, pred)
    assert [t.type for t in fig.data] == ["heatmap"]
    expected = confusion_matrix(y, pred)
    np.testing.assert_array_equal(np.array(fig.data[0].z), expected)
    np.testing.assert_array_equal(np.array(fig.data[0].text), expected)
    assert list(fig.data[0].x) == ["0", "1", "2"]
    assert "count" in fig.data[0].hovertemplate


def test_confusion_matrix_string_labels_and_normalize():
    t = ["cat", "dog", "dog", "bird", "cat", "dog"]
    p = ["cat", "cat", "dog", "bird", "cat", "bird"]
    labels = ["dog", "cat", "bird"]
    fig = confusion_matrix_figure(t, p, labels=labels, normalize=True)
    counts = confusion_matrix(t, p, labels=labels)
    np.testing.assert_array_equal(np.array(fig.data[0].text), counts)
    np.testing.assert_allclose(np.array(fig.data[0].z), counts / counts.sum(1, keepdims=True))
    assert list(fig.data[0].y) == labels


@pytest.mark.parametrize(
    ("t", "p", "kw", "message"),
    [
        ([], [], {}, "empty"),
        ([0, 1, 1], [0, 1], {}, r"different lengths \(y_true: 3, y_pred: 2\)"),
        ([0.0, np.nan], [0.0, 1.0], {}, "NaN/Inf label"),
        ([0, 1, 2], [0, 1, 1], {"labels": [0, 1]}, "does not list 2"),
    ],
)
def test_confusion_matrix_bad_input(t, p, kw, message):
    with pytest.raises(InvalidInputError, match=message):
        confusion_matrix_figure(t, p, **kw)


# --------------------------------------------------------------------------- ROC and PR
def test_roc_binary_auc_in_name_equals_sklearn(binary):
    X, y, lr, rf = binary
    scores = {"lr": (y, lr.decision_function(X)), "rf": (y, rf.predict_proba(X))}
    fig = roc_curves_figure(scores)
    assert [t.type for t in fig.data] == ["scatter"] * 3
    assert fig.data[-1].name == "chance"
    assert list(fig.data[-1].x) == [0.0, 1.0]
    for trace, est_score in zip(
        fig.data[:2], (lr.decision_function(X), rf.predict_proba(X)[:, 1]), strict=True
    ):
        expected = roc_auc_score(y, est_score)
        assert _auc_in(trace.name) == pytest.approx(expected, abs=5e-4)
        assert trace.meta == pytest.approx(expected, rel=1e-12)
        assert trace.x[0] == 0.0 and trace.x[-1] == 1.0


def test_roc_multiclass_is_micro_average(iris, iris_lr):
    X, y = iris
    proba = iris_lr.predict_proba(X)
    fig = roc_curves_figure({"lr": (y, proba)})
    assert "micro-average one-vs-rest" in fig.data[0].name
    onehot = np.eye(3)[y]
    assert fig.data[0].meta == pytest.approx(roc_auc_score(onehot, proba, average="micro"))


def test_roc_string_labels_with_pos_label():
    y = np.array(["no", "yes", "yes", "no", "yes"])
    s = np.array([0.1, 0.8, 0.6, 0.3, 0.4])
    fig = roc_curves_figure({"m": (y, s)}, pos_label="yes")
    assert fig.data[0].meta == pytest.approx(roc_auc_score(y == "yes", s))
    with pytest.raises(InvalidInputError, match="pos_label"):
        roc_curves_figure({"m": (y, s)})


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({}, "scores is empty"),
        ({"m": ([0, 1, 1], [0.2, 0.4])}, r"different lengths \(y_true: 3, y_score: 2\)"),
        ({"m": ([0, 1], [0.2, np.nan])}, "non-finite"),
        ({"m": ([1, 1], [0.2, 0.3])}, "single class"),
        ({"m": ([0, 1, 2], np.ones((3, 2)))}, "2 columns but y_true holds 3 classes"),
        ({"m": [0, 1, 1]}, r"must be a \(y_true, y_score\) pair"),
    ],
)
def test_curves_bad_input(scores, message):
    with pytest.raises(InvalidInputError, match=message):
        roc_curves_figure(scores)
    with pytest.raises(InvalidInputError, match=message):
        precision_recall_figure(scores)


def test_precision_recall_ap_equals_sklearn(binary, iris, iris_lr):
    X, y, lr, _ = binary
    s = lr.predict_proba(X)
    fig = precision_recall_figure({"lr": (y, s)})
    expected = average_precision_score(y, s[:, 1])
    assert _auc_in(fig.data[0].name, "AP") == pytest.approx(expected, abs=5e-4)
    assert fig.data[0].meta == pytest.approx(expected)
    assert len(fig.data) == 1
    assert fig.layout.xaxis.title.text == "recall"
    Xi, yi = iris
    multi = precision_recall_figure({"lr": (yi, iris_lr.predict_proba(Xi))})
    assert "micro-average" in multi.data[0].name
    assert multi.data[0].meta == pytest.approx(
        average_precision_score(np.eye(3)[yi], iris_lr.predict_proba(Xi), average="micro")
    )


# --------------------------------------------------------------------------- PCA
def test_pca_coordinates_equal_sklearn(iris):
    X, y = iris
    names = load_iris().feature_names
    fig = pca_scatter_3d_figure(X, y, feature_names=names, random_state=0)
    assert [t.type for t in fig.data] == ["scatter3d"] * 3
    assert [t.name for t in fig.data] == ["0", "1", "2"]
    pca = PCA(n_components=3, random_state=0)
    coords = pca.fit_transform(X)
    for trace, label in zip(fig.data, (0, 1, 2), strict=True):
        rows = np.flatnonzero(y == label)
        assert list(trace.customdata) == rows.tolist()
        got = np.column_stack([trace.x, trace.y, trace.z])
        np.testing.assert_allclose(got, coords[rows], rtol=1e-10, atol=1e-12)
    ratio = 100 * pca.explained_variance_ratio_[0]
    assert fig.layout.scene.xaxis.title.text == f"PC1 ({ratio:.1f}%)"
    assert "PC1 ~ petal length (cm)" in fig.layout.title.text


def test_pca_without_labels_is_one_trace(iris):
    fig = pca_scatter_3d_figure(iris[0])
    assert len(fig.data) == 1 and len(fig.data[0].x) == 150


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.ones((10, 2)), None, "at least 3 features, X has 2"),
        (np.ones((2, 4)), None, "at least 3 samples"),
        (np.array([[1.0, 2.0, np.nan]] * 4), None, "non-finite"),
        (np.arange(12.0).reshape(4, 3), [0, 1], r"different lengths \(X: 4, y: 2\)"),
        (np.zeros((0, 3)), None, "empty"),
    ],
)
def test_pca_bad_input(X, y, message):
    with pytest.raises(InvalidInputError, match=message):
        pca_scatter_3d_figure(X, y)


# --------------------------------------------------------------------------- importance
def test_feature_importance_sorted_top(binary):
    rf = binary[3]
    fig = feature_importance_figure(rf, top=4)
    assert [t.type for t in fig.data] == ["bar"]
    trace = fig.data[0]
    assert trace.orientation == "h"
    order = np.argsort(-rf.feature_importances_)[:4]
    assert list(trace.y)[::-1] == [f"x{i}" for i in order]
    np.testing.assert_allclose(list(trace.x)[::-1], rf.feature_importances_[order])


def test_feature_importance_from_coefficients(iris, iris_lr):
    names = ["sl", "sw", "pl", "pw"]
    fig = feature_importance_figure(iris_lr, feature_names=names)
    mean_abs = np.abs(iris_lr.coef_).mean(axis=0)
    order = np.argsort(-mean_abs)
    assert list(fig.data[0].y)[::-1] == [names[i] for i in order]
    np.testing.assert_allclose(list(fig.data[0].x)[::-1], mean_abs[order])
    assert "mean |coefficient|" in fig.layout.xaxis.title.text


def test_feature_importance_array_keeps_sign():
    fig = feature_importance_figure([0.5, -2.0, 1.0], feature_names=["a", "b", "c"])
    assert list(fig.data[0].y) == ["a", "c", "b"]
    assert list(fig.data[0].x) == [0.5, 1.0, -2.0]


@pytest.mark.parametrize(
    ("imp", "kw", "message"),
    [
        ([], {}, "importances is empty"),
        ([1.0, np.inf], {}, "non-finite"),
        ([1.0, 2.0], {"feature_names": ["a"]}, "1 feature names given for 2 features"),
        ([1.0], {"top": 0}, "top must be a positive integer"),
        (RandomForestClassifier(), {}, "neither feature_importances_ nor coef_"),
    ],
)
def test_feature_importance_bad_input(imp, kw, message):
    with pytest.raises(InvalidInputError, match=message):
        feature_importance_figure(imp, **kw)


# --------------------------------------------------------------------------- dashboard
@pytest.fixture(scope="module")
def dashboard(iris, iris_lr):
    X, y = iris
    dash = InteractiveDashboard(title="Iris models")
    out = (
        dash.add_model_comparison({"lr": {"accuracy": 0.97}})
        .add_learning_curves({"loss": [1.0, 0.5]})
        .add_confusion_matrix(y, iris_lr.predict(X))
        .add_roc_curves({"lr": (y, iris_lr.predict_proba(X))})
        .add_precision_recall({"lr": (y, iris_lr.predict_proba(X))})
        .add_pca_3d(X, y)
        .add_feature_importance(iris_lr)
        .add_figure(go.Figure(go.Bar(x=[1], y=[2])), section="Extra")
        .add_figure(go.Figure(go.Bar(x=[1], y=[3])), section="Extra")
    )
    assert out is dash
    return dash


def test_dashboard_groups_figures_into_sections(dashboard):
    assert len(dashboard.figures) == 9
    sections = dashboard.sections
    assert list(sections) == [
        "Model comparison",
        "Learning curves",
        "Confusion matrices",
        "ROC curves",
        "Precision-recall",
        "Data (PCA)",
        "Feature importance",
        "Extra",
    ]
    assert len(sections["Extra"]) == 2


def test_save_dashboard_is_self_contained_and_deterministic(dashboard, tmp_path):
    from plotly.offline import get_plotlyjs

    first = dashboard.save_dashboard(tmp_path / "sub" / "dash.html")
    second = dashboard.save_dashboard(tmp_path / "again.html")
    assert first == tmp_path / "sub" / "dash.html"
    page = first.read_text(encoding="utf-8")
    assert first.read_bytes() == second.read_bytes()
    assert page.count(get_plotlyjs()) == 1
    assert re.search(r"<script[^>]+src=[\"']https?://", page) is None
    assert page.count('class="fedge-figure"') == 9
    assert page.count("Plotly.newPlot(") == 9
    assert "<title>Iris models</title>" in page
    for anchor in ("model-comparison", "roc-curves", "extra"):
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page


def test_fragment_is_embeddable(dashboard):
    from plotly.offline import get_plotlyjs

    frag = dashboard.to_fragment()
    assert "<html" not in frag and "<body" not in frag
    assert get_plotlyjs() not in frag
    assert frag.count('class="fedge-figure"') == 9
    for div_id in ("model-comparison-fig0", "extra-fig0", "extra-fig1"):
        assert f'id="{div_id}"' in frag
    assert frag == dashboard.to_fragment()
    with_js = dashboard.to_fragment(include_plotlyjs=True)
    assert with_js.startswith("<script") and with_js.count(get_plotlyjs()) == 1
    assert with_js.endswith(frag)


def test_empty_dashboard_refuses_to_save(tmp_path):
    dash = InteractiveDashboard()
    with pytest.raises(InvalidInputError, match="dashboard is empty"):
        dash.save_dashboard(tmp_path / "x.html")
    with pytest.raises(InvalidInputError, match="dashboard is empty"):
        dash.to_fragment()
    with pytest.raises(InvalidInputError, match="dashboard is empty"):
        dash.export(tmp_path)
    assert not (tmp_path / "x.html").exists()


def test_dashboard_rejects_non_figures_and_clashing_sections():
    dash = InteractiveDashboard()
    with pytest.raises(InvalidInputError, match=r"takes a plotly\.graph_objects\.Figure"):
        dash.add_figure({"data": []})
    dash.add_figure(go.Figure(), section="ROC curves")
    with pytest.raises(InvalidInputError, match="share its page anchor"):
        dash.add_figure(go.Figure(), section="roc curves")


def test_dashboard_add_methods_check_their_input():
    dash = InteractiveDashboard()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match="different lengths"):
            dash.add_confusion_matrix([0, 1], [0])
    assert dash.figures == []


@pytest.mark.slow
def test_the_dashboard_renders_in_chromium_and_resizes(dashboard, tmp_path):
    """Every view drawn in Debian's Chromium without errors (the 3-D scatter included), and a
    narrow window re-lays the figures out at its width (responsive)."""
    import shutil

    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    from fedge.visualization.browser import open_page

    widths = {}

    def narrow(page):
        widths["wide"] = page.eval_on_selector(".js-plotly-plot", "e => e.offsetWidth")
        page.set_viewport_size({"width": 600, "height": 900})
        page.wait_for_timeout(500)  # Plotly's resize handler is debounced
        widths["narrow"] = page.eval_on_selector(".js-plotly-plot", "e => e.offsetWidth")
        widths["svg"] = page.eval_on_selector(
            ".js-plotly-plot .main-svg", "e => e.getBoundingClientRect().width")

    path = dashboard.save_dashboard(tmp_path / "dash.html")
    check = open_page(path, inspect=narrow)
    assert check.ok, check
    assert check.figures == len(dashboard.figures)
    assert widths["narrow"] < widths["wide"] and widths["svg"] <= widths["narrow"] + 1, widths
