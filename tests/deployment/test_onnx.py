"""The ONNX exporter: graph interface, metadata, determinism, tree and quantized encodings,
errors. Zoo-wide parity lives in tests/parity/test_onnx_parity.py.

Claims: hand-built tree ensembles (``<`` and ``<=``, NaN to either side, shared and
multi-output leaves, tree offsets, single-leaf trees, mean and sum, base scores) give
device mode's scores bit for bit; dynamic int8 layers (input_bits=8) and quantized trees
(float32 and float64 sums) are bit-identical to device mode on hard rows; static int8/int16
and float16 layers are within rtol 1e-5 / atol 1e-6.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import fedge
from fedge.compression.quantization import ModelQuantizer
from fedge.deployment.formats import onnx as fx
from fedge.deployment.formats.onnx import run_onnx, save_onnx, to_onnx, verify_onnx
from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
from fedge.ir import Link, Model, Task, TreeEnsemble
from fedge.ir.nodes import QuantizedDense, QuantizedTrees
from zoo import case

onnx = pytest.importorskip("onnx")

FLT_MAX = float(np.finfo(np.float32).max)


def _with_output(proto, tensor: str):
    """A copy of ``proto`` that also outputs the intermediate ``tensor``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.graph.output.append(
        onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
    )
    return out


def _device(model: Model, X: np.ndarray) -> np.ndarray:
    """Device-mode predictions as the ONNX ``variable`` output shapes them."""
    return fedge.predict(model, X, mode="device").reshape(len(X), -1)


def _regression(*steps, link: str = "identity") -> Model:
    return Model(
        steps=tuple(steps),
        task=Task.REGRESSION,
        n_features=steps[0].n_inputs,
        link=Link(link),
        metadata={"source": {"estimator": "handmade"}},
    )


# --------------------------------------------------------------------------- interface
def test_classifier_interface_metadata_and_string_labels() -> None:
    pd = pytest.importorskip("pandas")
    from sklearn.linear_model import LogisticRegression

    c = case("logreg_strings")
    names = ["sepal length", "sepal_width", "petal-length", "petal.width"]
    X = pd.DataFrame(c.dataset.X_train, columns=names)
    est = LogisticRegression(max_iter=2000).fit(X, c.dataset.y_train)
    proto = to_onnx(est)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["input"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("N", 4)
    assert "petal-length" in graph.input[0].doc_string
    assert [o.name for o in graph.output] == ["label", "probabilities"]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    assert graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.producer_name == "fedge" and proto.producer_version == fedge.__version__
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["feature_names"]) == names
    assert props["classes"] == '["setosa", "versicolor", "virginica"]'
    assert "LogisticRegression" in props["fedge.source"] and props["fedge.link"] == "softmax"
    assert graph.name == "fedge_LogisticRegression"
    out = run_onnx(proto, c.dataset.X_test)
    np.testing.assert_array_equal(
        out["label"], est.predict(pd.DataFrame(c.dataset.X_test, columns=names))
    )
    assert out["probabilities"].shape == (len(c.dataset.X_test), 3)
    assert out["probabilities"].dtype == np.float32


@pytest.mark.parametrize(
    ("name", "outputs", "label_type"),
    [
        ("forest_binary", ["label", "probabilities"], onnx.TensorProto.INT64),
        ("linear_svc", ["label", "scores"], onnx.TensorProto.STRING),
        ("ridge_multitarget", ["variable"], None),
    ],
)
def test_outputs_by_task(name: str, outputs: list[str], label_type) -> None:
    c = case(name)
    proto = to_onnx(c.estimator, name="my_model")
    assert proto.graph.name == "my_model"
    assert [o.name for o in proto.graph.output] == outputs
    if label_type is not None:
        assert proto.graph.output[0].type.tensor_type.elem_type == label_type
    got = run_onnx(proto, c.dataset.X_test)
    model = fedge.lower(c.estimator)
    if name == "ridge_multitarget":
        assert got["variable"].shape == (len(c.dataset.X_test), 2)
    elif name == "linear_svc":
        np.testing.assert_allclose(
            got["scores"][:, 0],
            fedge.decision_function(model, c.dataset.X_test),
            rtol=1e-4,
            atol=1e-5,
        )


def test_bool_and_float_classes_keep_their_type() -> None:
    from sklearn.linear_model import LogisticRegression

    c = case("logreg_binary")
    X, y = c.dataset.X_train[:, :5], c.dataset.y_train
    for labels, elem in ((y == 1, onnx.TensorProto.BOOL), (y * 2.0 + 1.0, onnx.TensorProto.DOUBLE)):
        est = LogisticRegression(max_iter=5000).fit(X, labels)
        proto = to_onnx(est)
        assert proto.graph.output[0].type.tensor_type.elem_type == elem
        report = verify_onnx(est, c.dataset.X_test[:, :5])
        assert report.ok, report


def test_deterministic_bytes_and_save(tmp_path) -> None:
    est = case("gb_multiclass").estimator
    a = to_onnx(est).SerializeToString(deterministic=True)
    b = to_onnx(fedge.lower(est)).SerializeToString(deterministic=True)
    assert a == b
    n1 = save_onnx(est, tmp_path / "a.onnx")
    n2 = save_onnx(to_onnx(est), tmp_path / "b.onnx")
    assert n1 == n2 == len(a)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes() == a
    loaded = onnx.load(str(tmp_path / "a.onnx"))
    onnx.checker.check_model(loaded, full_check=True)
    np.testing.assert_array_equal(
        run_onnx(tmp_path / "a.onnx", case("gb_multiclass").dataset.X_test)["label"],
        est.predict(case("gb_multiclass").dataset.X_test.astype(np.float32)),
    )


def test_opsets() -> None:
    est = case("tree_nan").estimator
    proto = to_onnx(est)
    versions = {o.domain: o.version for o in proto.opset_import}
    assert versions == {"": 21, "ai.onnx.ml": 5} and proto.ir_version == 10
    assert {o.domain for o in to_onnx(case("lasso").estimator).opset_import} == {""}
    assert {o.domain: o.version for o in to_onnx(est, opset=22).opset_import}[""] == 22
    for bad in (13, 20, 10_000, "21", True):
        with pytest.raises(InvalidInputError, match="opset"):
            to_onnx(est, opset=bad)


# --------------------------------------------------------------------------- errors
def test_missing_onnx_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'fedge\[onnx\]'"):
        to_onnx(case("lasso").estimator)


def test_missing_onnxruntime_names_the_extra(monkeypatch) -> None:
    proto = to_onnx(case("lasso").estimator)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'fedge\[onnx\]'"):
        run_onnx(proto, np.zeros((1, 10)))


def test_unsupported_inputs() -> None:
    with pytest.raises(UnsupportedModelError, match="cannot lower"):
        to_onnx(object())
    with pytest.raises(InvalidInputError, match="name"):
        to_onnx(case("lasso").estimator, name="")
    proto = to_onnx(case("lasso").estimator)
    with pytest.raises(InvalidInputError, match="source"):
        verify_onnx(proto, np.zeros((2, 10)))
    # A model without a missing-value rule refuses NaN rows instead of exporting garbage.
    with pytest.raises(InvalidInputError, match="NaN"):
        verify_onnx(case("lasso").estimator, np.full((2, 10), np.nan))
    report = verify_onnx(proto, case("lasso").dataset.X_test, source=case("lasso").estimator)
    assert report.ok and report.as_dict()["ok"]


# --------------------------------------------------------------------------- trees
def _handmade_trees(comparison: str, aggregation: str) -> TreeEnsemble:
    """Four trees, two of three outputs per leaf, offsets 0 and 1, a single-leaf tree, leaf
    rows shared across trees with different offsets, NaN going both ways."""
    rng = np.random.default_rng(7)
    # tree 0: nodes 0,1,2; tree 1: node 3; tree 2: single leaf; tree 3: nodes 4,5
    feature = np.array([0, 1, 2, 3, 0, 1], dtype=np.int32)
    left = np.array([1, ~0, ~2, ~0, 5, ~4], dtype=np.int32)
    right = np.array([2, ~1, ~3, ~4, ~5, ~6], dtype=np.int32)
    return TreeEnsemble(
        feature=feature,
        threshold=rng.normal(size=6).astype(np.float32),
        left=left,
        right=right,
        missing_left=np.array([True, False, True, False, False, True]),
        # Dyadic leaves: every sum is exact in any order, so outputs equal only if every
        # row reaches the same leaves.
        leaf_values=(rng.integers(-64, 64, size=(7, 2)) / 8).astype(np.float32),
        roots=np.array([0, 3, ~3, 4], dtype=np.int32),
        tree_offset=np.array([0, 1, 1, 0], dtype=np.int32),
        n_features=4,
        n_outputs=3,
        base_score=np.array([0.5, -1.0, 0.25], dtype=np.float32),
        comparison=comparison,
        aggregation=aggregation,
    )


@pytest.mark.parametrize("comparison", ["<=", "<"])
@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_handmade_trees_bit_for_bit(comparison: str, aggregation: str) -> None:
    step = _handmade_trees(comparison, aggregation)
    model = _regression(step)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.2] = np.nan
    # Rows exactly on each threshold (where <= and < differ).
    on = np.zeros((6, 4), dtype=np.float32)
    on[np.arange(6), step.feature] = step.threshold
    X = np.concatenate([X, on]).astype(np.float64)
    proto = to_onnx(model)
    tree_op = next(n for n in proto.graph.node if n.op_type == "TreeEnsemble")
    modes = onnx.numpy_helper.to_array(
        next(a for a in tree_op.attribute if a.name == "nodes_modes").t
    )
    assert set(modes.tolist()) == {0 if comparison == "<=" else 1}  # BRANCH_LEQ / BRANCH_LT
    np.testing.assert_array_equal(run_onnx(proto, X)["variable"], _device(model, X))


def test_forest_leaves_are_shared_and_nodes_flagged_for_nan() -> None:
    est = case("forest_nan").estimator
    step = fedge.lower(est).steps[0]
    proto = to_onnx(est)
    tree_op = next(n for n in proto.graph.node if n.op_type == "TreeEnsemble")
    attrs = {a.name: a for a in tree_op.attribute}
    # One tree per class column; pure leaves (1.0 / 0.0) stored once per target.
    assert len(attrs["tree_roots"].ints) == 2 * step.n_trees
    assert len(attrs["leaf_targetids"].ints) < step.n_leaves
    missing = np.array(attrs["nodes_missing_value_tracks_true"].ints, dtype=bool)
    np.testing.assert_array_equal(missing, np.tile(step.missing_left, 2))
    assert 0 < missing.sum() < missing.size
    splits = onnx.numpy_helper.to_array(attrs["nodes_splits"].t)
    assert splits.dtype == np.float32  # float32 attributes: half the bytes of float64


# --------------------------------------------------------------------------- quantized
def _qdense(rng, n_in, n_out, *, dtype=np.int8, per_channel=True, bits=0, activation="identity"):
    info = np.iinfo(dtype)
    k = n_out if per_channel else 1
    zero_point = rng.integers(-9, 10, k).astype(np.int32)
    zero_point[0] = info.min if dtype is np.int8 else 300
    return QuantizedDense(
        weights=rng.integers(info.min, info.max, size=(n_in, n_out), endpoint=True).astype(dtype),
        scale=rng.uniform(0.5, 2.0, k).astype(np.float32) / np.float32(info.max),
        zero_point=zero_point,
        bias=rng.normal(size=n_out).astype(np.float32),
        activation=activation,
        input_bits=bits,
    )


def _hard_rows(n: int, rng) -> np.ndarray:
    """Random rows at many magnitudes, zeros, huge values, .5 ties, denormals."""
    rows = [rng.normal(size=(300, n)) * 10.0 ** rng.integers(-6, 7, size=(300, 1))]
    rows += [np.zeros((1, n)), np.full((1, n), -0.0)]
    for huge in (1e30, FLT_MAX, -FLT_MAX):
        r = rng.normal(size=(n, n))
        r[np.arange(n), np.arange(n)] = huge
        rows.append(r)
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 125.5, 126.5, -126.5, 3.0])
    for e in (-20, -3, 0, 5):
        r = rng.choice(halves, size=(8, n)) * 2.0**e
        r[:, 0] = 127 * 2.0**e * rng.choice([-1, 1], size=8)
        rows.append(r)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    for top in np.array([1, 63, 255, 12760, 2**23]) * tiny:
        r = rng.integers(-3, 4, size=(4, n)) * tiny
        r[:, 0] = top
        rows.append(r)
    return np.concatenate(rows).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_dynamic_int8_bit_for_bit(per_channel: bool, activation: str) -> None:
    rng = np.random.default_rng(3)
    step = _qdense(rng, 6, 3, per_channel=per_channel, bits=8, activation=activation)
    model = _regression(step)
    X = _hard_rows(6, rng)
    proto = to_onnx(model)
    assert "MatMulInteger" in {n.op_type for n in proto.graph.node}
    got = run_onnx(proto, X)["variable"]
    np.testing.assert_array_equal(got, _device(model, X))


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("per_channel", [True, False])
def test_static_integer_weights(dtype, per_channel: bool) -> None:
    rng = np.random.default_rng(4)
    hidden = _qdense(rng, 6, 5, dtype=dtype, per_channel=per_channel, activation="tanh")
    last = _qdense(rng, 5, 2, dtype=dtype, per_channel=per_channel)
    model = _regression(hidden, last)
    proto = to_onnx(model)
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert any(a.dtype == dtype and a.size == 30 for a in stored.values())  # integer in the file
    X = rng.normal(size=(400, 6))
    report = verify_onnx(model, X)
    assert report.within_tolerance and report.max_abs_diff <= 1e-5, report


def test_compressed_models_export() -> None:
    c = case("mlp_multiclass_tanh")
    for strategy in ("int8", "int16", "dynamic", "float16"):
        model = ModelQuantizer(strategy).quantize_model(c.estimator)
        report = verify_onnx(model, c.dataset.X_test)
        assert report.ok, (strategy, report)
    half = ModelQuantizer("float16").quantize_model(c.estimator)
    dtypes = {i.data_type for i in to_onnx(half).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes  # float16 weights stay 2 bytes in the file


def _many_int16_stumps(n_trees: int) -> QuantizedTrees:
    rng = np.random.default_rng(5)
    leaves = rng.integers(-32767, 32768, size=(2 * n_trees, 1)).astype(np.int16)
    leaves[:2] = 32767  # a large sum is certain
    return QuantizedTrees(
        feature=rng.integers(0, 3, n_trees).astype(np.int32),
        threshold=rng.integers(0, 4, n_trees).astype(np.uint8),
        left=~np.arange(0, 2 * n_trees, 2, dtype=np.int32),
        right=~np.arange(1, 2 * n_trees, 2, dtype=np.int32),
        missing_left=rng.random(n_trees) < 0.5,
        leaf_values=leaves,
        leaf_scale=np.array([1e-3], dtype=np.float32),
        roots=np.arange(n_trees, dtype=np.int32),
        tree_offset=np.zeros(n_trees, dtype=np.int32),
        n_features=3,
        n_outputs=1,
        base_score=np.array([0.5], dtype=np.float32),
        bin_edges=np.sort(rng.normal(size=12)).astype(np.float32),
        bin_start=np.array([0, 4, 8, 12], dtype=np.int32),
        aggregation="mean",
    )


@pytest.mark.parametrize("n_trees", [20, 600])  # float32 sums, then float64 sums (> 2**24)
def test_quantized_trees_bit_for_bit(n_trees: int) -> None:
    step = _many_int16_stumps(n_trees)
    model = _regression(step)
    rng = np.random.default_rng(6)
    X = rng.normal(size=(400, 3))
    X[rng.random(X.shape) < 0.1] = np.nan
    edges = np.concatenate([step.bin_edges, np.nextafter(step.bin_edges, np.float32(np.inf))])
    X = np.concatenate([X, np.tile(edges[:, None], (1, 3))])
    proto = to_onnx(model)
    casts = [n for n in proto.graph.node if n.op_type == "Cast"]
    assert bool(casts) == (n_trees == 600)
    np.testing.assert_array_equal(run_onnx(proto, X)["variable"], _device(model, X))


def test_quantized_forest_scores_bit_for_bit() -> None:
    c = case("gb_multiclass")
    model = ModelQuantizer("int8").quantize_model(c.estimator)
    proto = _with_output(to_onnx(model), "boosted")
    X = c.dataset.X_test
    np.testing.assert_array_equal(
        run_onnx(proto, X)["boosted"], fedge.decision_function(model, X, mode="device")
    )


def test_tolerance_constants_are_documented() -> None:
    assert (fx.RTOL, fx.ATOL) == (1e-5, 1e-6)
    props = {p.key: p.value for p in to_onnx(case("lasso").estimator).metadata_props}
    assert '"rtol": 1e-05' in props["fedge.tolerance"]
