"""Model views: the numbers in the traces are the model's (grid predictions, weights, trees)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedge.compression import ModelPruner, ModelQuantizer, lite_bytes
from fedge.errors import InvalidInputError
from fedge.ir import Dense, QuantizedDense, QuantizedTrees, lower
from fedge.visualization.model_viz import (
    compression_comparison_figure,
    decision_boundary_figure,
    leaf_depths,
    mlp_layers_figure,
    parameter_analysis_figure,
    tree_structure_figure,
    weight_distribution_figure,
)

pytest.importorskip("plotly")


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def mlp(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=(8, 5), max_iter=60, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def forest(iris):
    X, y = iris
    return RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def two_feature_forest(iris):
    X, y = iris
    X2 = X[:, 2:]
    return X2, y, RandomForestClassifier(n_estimators=5, random_state=0).fit(X2, y)


def _sklearn_leaf_depths(tree) -> list[int]:
    t = tree.tree_
    out, stack = [], [(0, 0)]
    while stack:
        node, d = stack.pop()
        if t.children_left[node] == -1:
            out.append(d)
        else:
            stack += [(t.children_left[node], d + 1), (t.children_right[node], d + 1)]
    return out


# --------------------------------------------------------------------------- decision boundary
def test_decision_boundary_grid_is_the_model_prediction(two_feature_forest):
    X2, y, rf = two_feature_forest
    fig = decision_boundary_figure(
        rf, X2, y, feature_names=["petal length", "petal width"], resolution=40
    )
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "scatter", "scatter"]
    heat = fig.data[0]
    gx, gy = np.meshgrid(np.array(heat.x), np.array(heat.y))
    expected = rf.predict(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    z = np.array(heat.z)
    assert z.shape == (40, 40)
    np.testing.assert_array_equal(rf.classes_[z.astype(int)], expected)
    # the grid covers the data with 5% padding
    span = X2[:, 0].max() - X2[:, 0].min()
    assert heat.x[0] == pytest.approx(X2[:, 0].min() - 0.05 * span)
    assert heat.x[-1] == pytest.approx(X2[:, 0].max() + 0.05 * span)
    # the samples, one trace per class
    for trace, label in zip(fig.data[1:], (0, 1, 2), strict=True):
        assert trace.name == str(label)
        np.testing.assert_array_equal(np.array(trace.x), X2[y == label, 0])
    assert fig.layout.xaxis.title.text == "petal length"


def test_decision_boundary_accepts_an_ir_model(two_feature_forest):
    X2, y, rf = two_feature_forest
    a = decision_boundary_figure(rf, X2, y, resolution=10)
    b = decision_boundary_figure(lower(rf), X2, y, resolution=10)
    assert a.data[0].z == b.data[0].z


def test_decision_boundary_regression_shows_predictions():
    X, y = make_regression(n_samples=60, n_features=2, random_state=0)
    gb = GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=0).fit(X, y)
    fig = decision_boundary_figure(gb, X, y, resolution=12)
    heat = fig.data[0]
    gx, gy = np.meshgrid(np.array(heat.x), np.array(heat.y))
    expected = gb.predict(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    np.testing.assert_allclose(np.array(heat.z), expected, rtol=1e-9, atol=1e-9)
    assert len(fig.data) == 2


def test_decision_boundary_bad_input(iris, forest, two_feature_forest):
    X, y = iris
    X2, _, rf2 = two_feature_forest
    with pytest.raises(InvalidInputError, match="exactly 2 features, X has 4 features"):
        decision_boundary_figure(forest, X, y)
    with pytest.raises(InvalidInputError, match="the model takes 4 features"):
        decision_boundary_figure(forest, X2, y)
    with pytest.raises(InvalidInputError, match=r"different lengths \(X: 150, y: 10\)"):
        decision_boundary_figure(rf2, X2, y[:10])
    bad = X2.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        decision_boundary_figure(rf2, bad, y)
    with pytest.raises(InvalidInputError, match="resolution must be between 2 and 1000"):
        decision_boundary_figure(rf2, X2, y, resolution=1)
    with pytest.raises(InvalidInputError, match="empty"):
        decision_boundary_figure(rf2, np.zeros((0, 2)), [])


# --------------------------------------------------------------------------- weights
def test_weight_histogram_totals_are_the_parameter_count(mlp):
    fig = weight_distribution_figure(mlp)
    assert [t.type for t in fig.data] == ["histogram"]
    n_params = sum(w.size for w in mlp.coefs_) + sum(b.size for b in mlp.intercepts_)
    assert len(fig.data[0].x) == n_params
    expected = np.concatenate(
        [np.concatenate([w.ravel(), b]) for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)]
    )
    np.testing.assert_allclose(np.sort(fig.data[0].x), np.sort(expected))


def test_weight_histogram_overlays_dequantized_weights(mlp):
    q = ModelQuantizer("int8").quantize_model(mlp)
    fig = weight_distribution_figure(mlp, compressed=q, bins=30)
    assert [t.meta for t in fig.data] == ["original", "compressed"]
    layers = [s for s in q.steps if isinstance(s, QuantizedDense)]
    assert len(layers) == 3
    deq = np.concatenate(
        [np.concatenate([s.dequantized().ravel(), s.bias]).astype(np.float64) for s in layers]
    )
    np.testing.assert_array_equal(np.array(fig.data[1].x), deq)
    assert len(fig.data[1].x) == len(fig.data[0].x)
    # both share the bins, so bars line up
    assert fig.data[0].xbins.size == fig.data[1].xbins.size
    assert fig.layout.barmode == "overlay"
    # int8 per channel: each output column has at most 255 levels
    assert "distinct" in fig.data[1].name


def test_weight_histogram_of_trees(forest):
    q = ModelQuantizer("int8").quantize_model(forest)
    fig = weight_distribution_figure(forest, compressed=q)
    kinds = [(t.meta, t.name.split(":")[1].split("(")[0].strip()) for t in fig.data]
    assert kinds == [
        ("original", "thresholds"),
        ("compressed", "thresholds"),
        ("original", "leaf values"),
        ("compressed", "leaf values"),
    ]
    splits = sum(int((e.tree_.children_left != -1).sum()) for e in forest.estimators_)
    assert len(fig.data[0].x) == len(fig.data[1].x) == splits
    qt = next(s for s in q.steps if isinstance(s, QuantizedTrees))
    np.testing.assert_array_equal(np.array(fig.data[1].x), qt.edge_of().astype(np.float64))


def test_weight_histogram_bad_input(mlp, forest):
    with pytest.raises(InvalidInputError, match="bins must be a positive integer"):
        weight_distribution_figure(mlp, bins=0)
    with pytest.raises(InvalidInputError, match="pass a compressed version of the same model"):
        weight_distribution_figure(mlp, compressed=forest)


# --------------------------------------------------------------------------- parameters
def test_parameter_analysis_counts_and_bytes(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = make_pipeline(
            StandardScaler(), MLPClassifier((6,), max_iter=20, random_state=0)
        ).fit(X, y)
    ir = lower(pipe)
    fig = parameter_analysis_figure(pipe)
    assert [t.type for t in fig.data] == ["bar", "bar"]
    params, sizes = list(fig.data[0].y), list(fig.data[1].y)
    assert len(params) == len(ir.steps) == len(fig.data[0].x)
    mlp = pipe[-1]
    dense = [(i, s) for i, s in enumerate(ir.steps) if isinstance(s, Dense)]
    for (i, step), w, b in zip(dense, mlp.coefs_, mlp.intercepts_, strict=True):
        assert params[i] == w.size + b.size
        assert sizes[i] == step.weights.nbytes + step.bias.nbytes
    assert "relu" in fig.data[0].x[dense[0][0]]


def test_mlp_layers_heatmaps_and_stats(mlp):
    fig = mlp_layers_figure(mlp)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap", "heatmap", "table"]
    for heat, w in zip(fig.data[:3], mlp.coefs_, strict=True):
        np.testing.assert_allclose(np.array(heat.z), w.T)
    cells = fig.data[3].cells.values
    header = list(fig.data[3].header.values)
    col = {name: list(values) for name, values in zip(header, cells, strict=True)}
    assert col["shape"] == ["4x8", "8x5", "5x3"]
    assert col["activation"] == ["relu", "relu", "identity"]
    for k, w in enumerate(mlp.coefs_):
        assert col["mean"][k] == pytest.approx(w.mean(), abs=1e-6)
        assert col["max"][k] == pytest.approx(w.max(), abs=1e-6)
        assert col["% zeros"][k] == pytest.approx(0.0)


def test_mlp_layers_of_a_pruned_model_count_zeros(mlp):
    pruned = ModelPruner(0.5).prune_model(mlp)
    fig = mlp_layers_figure(pruned)
    header = list(fig.data[-1].header.values)
    zeros = list(fig.data[-1].cells.values[header.index("% zeros")])
    layers = [s for s in pruned.steps if isinstance(s, Dense)]
    for z, s in zip(zeros, layers, strict=True):
        assert z == pytest.approx(100 * np.mean(s.weights == 0), abs=1e-6)
    assert sum(zeros) > 0


def test_mlp_layers_needs_dense_layers(forest):
    with pytest.raises(InvalidInputError, match=r"no dense layers .*TreeEnsemble"):
        mlp_layers_figure(forest)


# --------------------------------------------------------------------------- trees
def test_tree_structure_matches_sklearn(forest):
    fig = tree_structure_figure(forest, feature_names=load_iris().feature_names)
    types = [t.type for t in fig.data]
    assert types[:2] == ["bar", "bar"] and set(types[2:]) == {"histogram"}
    by_depth, per_tree = fig.data[0], fig.data[1]
    assert list(per_tree.y) == [int(e.get_n_leaves()) for e in forest.estimators_]
    depths = [d for e in forest.estimators_ for d in _sklearn_leaf_depths(e)]
    assert list(by_depth.y) == np.bincount(depths).tolist()
    assert len(by_depth.y) - 1 == max(e.get_depth() for e in forest.estimators_)
    # one threshold histogram per feature used, holding that feature's split thresholds
    feats = np.concatenate([e.tree_.feature[e.tree_.feature >= 0] for e in forest.estimators_])
    thr = np.concatenate([e.tree_.threshold[e.tree_.feature >= 0] for e in forest.estimators_])
    assert [t.meta for t in fig.data[2:]] == np.unique(feats).tolist()
    for trace in fig.data[2:]:
        assert trace.name == load_iris().feature_names[trace.meta]
        np.testing.assert_allclose(np.sort(trace.x), np.sort(thr[feats == trace.meta]), rtol=1e-6)


def test_leaf_depths_of_quantized_trees_equal_the_original(forest):
    q = ModelQuantizer("int8").quantize_model(forest)
    qt = next(s for s in q.steps if isinstance(s, QuantizedTrees))
    assert leaf_depths(qt) == leaf_depths(lower(forest).steps[-1])
    fig = tree_structure_figure(q)
    assert sum(fig.data[1].y) == sum(e.get_n_leaves() for e in forest.estimators_)


def test_tree_structure_needs_trees(mlp, forest):
    with pytest.raises(InvalidInputError, match="no tree ensemble"):
        tree_structure_figure(mlp)
    with pytest.raises(InvalidInputError, match="2 feature names given for 4 features"):
        tree_structure_figure(forest, feature_names=["a", "b"])


# --------------------------------------------------------------------------- compression
def test_compression_comparison_of_pruning(mlp):
    pruned = ModelPruner(0.5).prune_model(mlp)
    fig = compression_comparison_figure(mlp, pruned, names=("float", "pruned"))
    stats = {t.meta: list(t.y) for t in fig.data}
    assert [t.type for t in fig.data] == ["bar"] * 4
    assert all(list(t.x) == ["float", "pruned"] for t in fig.data)
    n = sum(w.size for w in mlp.coefs_) + sum(b.size for b in mlp.intercepts_)
    assert stats["parameters"] == [n, n]
    nz_after = sum(
        int(np.count_nonzero(s.weights)) + int(np.count_nonzero(s.bias))
        for s in pruned.steps
        if isinstance(s, Dense)
    )
    assert stats["non-zeros"] == [n, nz_after]
    assert nz_after < n
    assert stats["bytes (.fedge file)"] == [lite_bytes(lower(mlp)), lite_bytes(pruned)]


def test_compression_comparison_of_quantization(forest):
    q = ModelQuantizer("int8").quantize_model(forest)
    fig = compression_comparison_figure(forest, q)
    stats = {t.meta: list(t.y) for t in fig.data}
    assert stats["bytes (.fedge file)"] == [lite_bytes(lower(forest)), lite_bytes(q)]
    assert stats["parameters"][0] == stats["parameters"][1]
    qt = next(s for s in q.steps if isinstance(s, QuantizedTrees))
    values = np.concatenate(
        [qt.edge_of(), (qt.leaf_values.astype(np.float32) * qt.leaf_scale).ravel()]
    ).astype(np.float64)
    assert stats["unique values"][1] == np.unique(values).size
    assert stats["non-zeros"][1] == np.count_nonzero(values)
    with pytest.raises(InvalidInputError, match="two distinct labels"):
        compression_comparison_figure(forest, q, names=("a", "a"))


def test_linear_model_views(iris):
    X, y = iris
    lr = LogisticRegression(max_iter=1000).fit(X, y)
    fig = weight_distribution_figure(lr)
    assert len(fig.data[0].x) == lr.coef_.size + lr.intercept_.size
    layers = mlp_layers_figure(lr)
    np.testing.assert_allclose(np.array(layers.data[0].z), lr.coef_, rtol=1e-12)
