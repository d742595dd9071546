"""Quantization: the integer arithmetic against an independent reference, the measured cost,
and clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fedge
from fedge.compression import (
    ModelQuantizer,
    QuantizationStrategy,
    evaluate,
    lite_bytes,
    pickle_bytes,
    quantize_weights,
)
from fedge.errors import InvalidInputError, InvalidModelError, UnsupportedModelError
from fedge.ir import Dense, Model, QuantizedDense, QuantizedTrees, Task, validate
from fedge.ir.nodes import Activation


@pytest.fixture(scope="module")
def digits_mlp() -> tuple[MLPClassifier, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((64, 32), max_iter=200, random_state=0).fit(Xtr, ytr)
    return mlp, Xte, yte


def _reference_dynamic(step: QuantizedDense, x: np.ndarray) -> np.ndarray:
    """One row of dynamic int8 arithmetic written out with Python integers and float32
    scalars: independent of the runtime's vectorised numpy."""
    f32 = np.float32
    s = f32(max(abs(f32(v)) for v in x)) / f32(127)
    if s == 0:
        s = f32(1)
    q = [int(min(127, max(-127, np.rint(f32(v) / s)))) for v in x]
    out = []
    for j in range(step.n_outputs):
        c = j if step.scale.shape[0] > 1 else 0
        zp = int(step.zero_point[c])
        total = sum(q[k] * (int(step.weights[k, j]) - zp) for k in range(len(x)))
        out.append(f32(total) * (s * step.scale[c]) + step.bias[j])
    return np.array(out, dtype=np.float32)


def _reference_static(step: QuantizedDense, x: np.ndarray) -> np.ndarray:
    f32 = np.float32
    out = []
    for j in range(step.n_outputs):
        c = j if step.scale.shape[0] > 1 else 0
        lanes = [f32(0.0)] * 4  # device mode's dot product: lane k % 4, then a fixed tree
        for k in range(len(x)):
            w = f32(int(step.weights[k, j]) - int(step.zero_point[c])) * step.scale[c]
            lanes[k % 4] = f32(lanes[k % 4] + f32(x[k]) * w)
        acc = f32(f32(lanes[0] + lanes[1]) + f32(lanes[2] + lanes[3]))
        out.append(f32(acc + step.bias[j]))
    return np.array(out, dtype=np.float32)


def _one_layer(step: QuantizedDense) -> Model:
    return Model(steps=(step,), task=Task.REGRESSION, n_features=step.n_inputs)


@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.sampled_from([8, 16]),
    per_channel=st.booleans(),
    symmetric=st.booleans(),
    dynamic=st.booleans(),
)
def test_runtime_equals_an_independent_integer_reference(
    seed: int, bits: int, per_channel: bool, symmetric: bool, dynamic: bool
) -> None:
    rng = np.random.default_rng(seed)
    n_in, n_out = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    weights = rng.normal(size=(n_in, n_out)) * rng.choice([1e-3, 1.0, 50.0])
    q, scale, zero = quantize_weights(
        weights, 8 if dynamic else bits, per_channel=per_channel, symmetric=symmetric
    )
    step = QuantizedDense(
        q, scale, zero, rng.normal(size=n_out).astype(np.float32), input_bits=8 if dynamic else 0
    )
    X = rng.normal(size=(6, n_in)).astype(np.float32) * rng.choice([1e-3, 1.0, 1e3])
    X[0] = 0.0  # the all-zero row takes the s = 1 rule
    got = fedge.decision_function(_one_layer(step), X, mode="device").reshape(len(X), -1)
    reference = _reference_dynamic if dynamic else _reference_static
    expected = np.stack([reference(step, x) for x in X])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_quantized_weights_stay_within_half_a_step(per_channel: bool, symmetric: bool) -> None:
    w = np.random.default_rng(0).normal(size=(20, 5)) * np.array([1e-4, 1.0, 3.0, 0.0, 100.0])
    q, scale, zero = quantize_weights(w, 8, per_channel=per_channel, symmetric=symmetric)
    back = (q.astype(np.int32) - zero).astype(np.float64) * scale.astype(np.float64)
    step = np.broadcast_to(scale.astype(np.float64), (w.shape[1],))
    assert np.all(np.abs(back - w) <= step / 2 * (1 + 1e-6))
    if symmetric:
        assert np.all(zero == 0) and q.min() >= -127
    assert np.all(back[w == 0] == 0)  # zero weights stay exactly zero


@pytest.mark.parametrize("strategy", list(QuantizationStrategy))
def test_every_strategy_keeps_an_mlp_accurate_and_valid(digits_mlp, strategy: str) -> None:
    mlp, Xte, yte = digits_mlp
    quantizer = ModelQuantizer(strategy)
    small = quantizer.quantize_model(mlp)
    validate(small)
    before = evaluate(mlp, Xte, yte)["accuracy"]
    after = evaluate(small, Xte, yte)["accuracy"]
    assert after >= before - 0.01  # measured: no change on this split
    size = quantizer.get_model_size(small)
    assert size["compressed_bytes"] == lite_bytes(small)
    assert size["original_bytes"] == pickle_bytes(mlp)
    if strategy != "int16":  # int16 weights are larger than float16 but still under float32
        assert size["compressed_bytes"] < 0.6 * size["lossless_bytes"]
    assert small.metadata["compression"][-1]["strategy"] == strategy


def test_int8_shrinks_a_logistic_pipeline_and_keeps_its_labels() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    small = ModelQuantizer("int8").quantize_model(pipe)
    assert [type(s).__name__ for s in small.steps][-1] == "QuantizedDense"
    agree = np.mean(fedge.predict(small, X, mode="device") == pipe.predict(X))
    assert agree >= 0.99


def test_float16_forest_keeps_thresholds_exact() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(10, max_depth=6, random_state=0).fit(X, y)
    source = fedge.lower(forest)
    small = ModelQuantizer("float16").quantize_model(forest)
    tree = small.steps[-1]
    assert tree.leaf_values.dtype == np.float16
    np.testing.assert_array_equal(tree.threshold, source.steps[-1].threshold)
    assert np.mean(fedge.predict(small, X) == forest.predict(X)) >= 0.99
    assert lite_bytes(small) < lite_bytes(source)


def test_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="unknown quantization strategy 'int4'"):
        ModelQuantizer("int4")
    X, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(3, max_depth=3, random_state=0).fit(X, y)
    with pytest.raises(UnsupportedModelError, match="dynamic quantization is for linear"):
        ModelQuantizer("dynamic").quantize_model(forest)
    trees = ModelQuantizer("int8").quantize_model(forest)
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        ModelQuantizer("int16").quantize_model(trees)
    q = trees.steps[-1]
    fields = {
        k: getattr(q, k)
        for k in (
            "feature",
            "threshold",
            "left",
            "right",
            "missing_left",
            "leaf_values",
            "leaf_scale",
            "roots",
            "tree_offset",
            "n_features",
            "n_outputs",
            "base_score",
            "bin_edges",
            "bin_start",
        )
    }
    with pytest.raises(InvalidModelError, match="strictly increase"):
        QuantizedTrees(**{**fields, "bin_edges": q.bin_edges[::-1].copy()})
    with pytest.raises(InvalidModelError, match="names bin edge"):
        QuantizedTrees(**{**fields, "threshold": np.full_like(q.threshold, 255)})
    with pytest.raises(InvalidModelError, match="leaf_scale"):
        QuantizedTrees(**{**fields, "leaf_scale": np.zeros_like(q.leaf_scale)})
    huge = Model(
        steps=(Dense(np.full((2, 1), 1e6), np.zeros(1), Activation.IDENTITY),),
        task=Task.REGRESSION,
        n_features=2,
    )
    with pytest.raises(InvalidModelError, match="beyond float16"):
        ModelQuantizer("float16").quantize_model(huge)
    quantized = ModelQuantizer("int8").quantize_model(huge)
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        ModelQuantizer("int8").quantize_model(quantized)
    with pytest.raises(InvalidInputError, match="quantize a model first"):
        ModelQuantizer().get_model_size()
    with pytest.raises(InvalidModelError, match="input_bits"):
        QuantizedDense(
            np.zeros((1, 1), np.int8),
            np.ones(1, np.float32),
            np.zeros(1, np.int32),
            np.zeros(1, np.float32),
            input_bits=4,
        )
    with pytest.raises(InvalidModelError, match="needs int8"):
        QuantizedDense(
            np.zeros((1, 1), np.int16),
            np.ones(1, np.float32),
            np.zeros(1, np.int32),
            np.zeros(1, np.float32),
            input_bits=8,
        )
    with pytest.raises(InvalidModelError, match="zero_point must lie"):
        QuantizedDense(
            np.zeros((1, 1), np.int8),
            np.ones(1, np.float32),
            np.array([300], np.int32),
            np.zeros(1, np.float32),
        )


def _reference_trees(step: QuantizedTrees, x: np.ndarray) -> np.ndarray:
    """One row of binned, integer tree arithmetic written out with Python loops."""
    f32 = np.float32
    bins = []
    for f in range(step.n_features):
        edges = step.bin_edges[step.bin_start[f] : step.bin_start[f + 1]]
        v = f32(x[f])
        if step.comparison.value == "<=":
            bins.append(sum(1 for e in edges if e < v))
        else:
            bins.append(sum(1 for e in edges if e <= v))
    totals = [0] * step.n_outputs
    for t in range(step.n_trees):
        ref = int(step.roots[t])
        while ref >= 0:
            f = int(step.feature[ref])
            if np.isnan(x[f]):
                left = bool(step.missing_left[ref])
            else:
                left = bins[f] <= int(step.threshold[ref])
            ref = int(step.left[ref] if left else step.right[ref])
        for k, q in enumerate(step.leaf_values[~ref]):
            totals[int(step.tree_offset[t]) + k] += int(q)
    scale = np.broadcast_to(step.leaf_scale, (step.n_outputs,))
    out = [f32(total) * scale[j] for j, total in enumerate(totals)]
    if step.aggregation.value == "mean":
        out = [v / f32(step.n_trees) for v in out]
    return np.array([v + step.base_score[j] for j, v in enumerate(out)], dtype=np.float32)


@pytest.fixture(scope="module")
def boosted_and_forest():
    from sklearn.datasets import make_classification
    from xgboost import XGBClassifier

    X, y = make_classification(600, 8, n_informative=5, n_classes=3, random_state=0)
    X[::7, 2] = np.nan
    xgb = XGBClassifier(n_estimators=15, max_depth=4, n_jobs=1, random_state=0).fit(X, y)
    forest = RandomForestClassifier(15, max_depth=8, random_state=0).fit(X, y)
    return X, y, xgb, forest


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("which", ["xgb", "forest"])
def test_quantized_trees_equal_an_independent_integer_reference(boosted_and_forest, which, bits):
    X, _, xgb, forest = boosted_and_forest
    est = xgb if which == "xgb" else forest
    small = ModelQuantizer(f"int{bits}").quantize_model(est)
    step = small.steps[-1]
    assert isinstance(step, QuantizedTrees)
    assert step.threshold.dtype == (np.uint8 if bits == 8 else np.uint16)
    rows = X[:80]
    expected = np.stack([_reference_trees(step, x) for x in rows])
    for mode in ("reference", "device"):
        got = fedge.decision_function(small, rows, mode=mode).reshape(len(rows), -1)
        np.testing.assert_array_equal(got.astype(np.float32), expected)


def test_histogram_thresholds_fit_an_8_bit_grid_exactly(boosted_and_forest) -> None:
    X, _, xgb, forest = boosted_and_forest
    quantizer = ModelQuantizer("int8")
    small = quantizer.quantize_model(xgb)
    assert quantizer.report_.thresholds_moved == 0
    source = fedge.lower(xgb).steps[-1]
    np.testing.assert_array_equal(small.steps[-1].edge_of(), source.device_thresholds())
    assert np.mean(fedge.predict(small, X) == xgb.predict(X)) >= 0.99
    # A forest's thresholds are midpoints between data values: int16 holds them all, int8
    # moves some, at a measured cost.
    sixteen = ModelQuantizer("int16")
    assert np.array_equal(fedge.predict(sixteen.quantize_model(forest), X), forest.predict(X))
    assert sixteen.report_.thresholds_moved == 0
    eight = ModelQuantizer("int8")
    coarse = eight.quantize_model(forest)
    assert np.mean(fedge.predict(coarse, X) == forest.predict(X)) >= 0.97
