"""IR construction: valid models build, and every broken invariant is refused with a clear error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedge.errors import InvalidModelError
from fedge.ir import (
    Affine,
    Comparison,
    Dense,
    Impute,
    Linear,
    Link,
    Model,
    PredictFrom,
    Task,
    TreeEnsemble,
    models_equal,
    round_threshold,
    validate,
)

I32 = np.int32


def stump(**overrides) -> TreeEnsemble:
    """Two trees: a depth-2 tree (nodes 0-1, leaves 0-2) and a single-leaf tree (leaf 3)."""
    fields = dict(
        feature=np.array([0, 1], I32),
        threshold=np.array([0.5, -1.0]),
        left=np.array([1, ~1], I32),
        right=np.array([~0, ~2], I32),
        missing_left=np.array([True, False]),
        leaf_values=np.array([[1.0], [2.0], [3.0], [4.0]]),
        roots=np.array([0, ~3], I32),
        tree_offset=np.array([0, 0], I32),
        n_features=2,
        n_outputs=1,
        base_score=np.array([0.5]),
    )
    fields.update(overrides)
    return TreeEnsemble(**fields)


def test_valid_ensemble_reports_its_shape() -> None:
    t = stump()
    assert (t.n_trees, t.n_nodes, t.n_leaves, t.max_depth) == (2, 2, 4, 2)
    assert t.depths.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"left": np.array([1, 7], I32)}, "points to node 7"),
        ({"left": np.array([1, ~9], I32)}, "points to leaf 9"),
        ({"left": np.array([0, ~1], I32)}, "parents"),  # node 0 is its own child
        ({"roots": np.array([1, ~3], I32)}, "node 0 has 0 parents"),
        ({"feature": np.array([0, 2], I32)}, "feature 2 of 2"),
        ({"threshold": np.array([0.5, np.nan])}, "NaN"),
        ({"leaf_values": np.array([[1.0], [np.inf], [3.0], [4.0]])}, "non-finite"),
        ({"leaf_values": np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])}, "never reached"),
        ({"tree_offset": np.array([0, 1], I32)}, "writes outputs 1..1"),
        ({"feature": np.array([0, 1], np.int64)}, "int32"),
        ({"missing_left": np.array([1, 0])}, "bool"),
        (
            {"threshold": np.array([0.5, -1.0], np.float32), "input_precision": "float64"},
            "float32 thresholds",
        ),
        ({"base_score": np.array([0.5, 1.0])}, "base_score has 2 values"),
        ({"roots": np.array([], I32), "tree_offset": np.array([], I32)}, "at least one tree"),
        ({"comparison": "=="}, "comparison must be one of"),
        ({"n_features": 0}, "n_features must be between"),
    ],
)
def test_broken_ensembles_are_refused(overrides, message) -> None:
    with pytest.raises(InvalidModelError, match=message):
        stump(**overrides)


def test_a_cycle_unreachable_from_the_roots_is_refused() -> None:
    # Tree 0 is the single leaf 0; nodes 0 and 1 point at each other.
    with pytest.raises(InvalidModelError, match="unreachable"):
        TreeEnsemble(
            feature=np.array([0, 0], I32),
            threshold=np.zeros(2),
            left=np.array([1, 0], I32),
            right=np.array([~1, ~2], I32),
            missing_left=np.zeros(2, bool),
            leaf_values=np.ones((3, 1)),
            roots=np.array([~0], I32),
            tree_offset=np.zeros(1, I32),
            n_features=1,
            n_outputs=1,
            base_score=np.zeros(1),
        )


def test_arrays_are_copied_and_read_only() -> None:
    w = np.ones((3, 2))
    step = Linear(weights=w, bias=np.zeros(2))
    w[0, 0] = 99
    assert step.weights[0, 0] == 1
    with pytest.raises(ValueError, match="read-only"):
        step.weights[0, 0] = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.weights = w  # type: ignore[misc]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Linear(weights=np.ones((3, 2)), bias=np.zeros(3)), "bias has 3 values"),
        (lambda: Linear(weights=np.ones((3, 2), np.int8), bias=np.zeros(2)), "dtype int8"),
        (lambda: Linear(weights=np.ones(3), bias=np.zeros(1)), "2-D"),
        (lambda: Linear(weights=np.ones((3, 1)), bias=np.zeros(1, np.float32)), "one precision"),
        (lambda: Dense(weights=np.ones((2, 2)), bias=np.zeros(2), activation="gelu"), "activation"),
        (lambda: Affine(offset=np.zeros(2), scale=np.array([1.0, 0.0])), "zeros"),
        (lambda: Affine(offset=np.zeros(2), scale=np.ones(3)), "must match"),
        (lambda: Impute(fill=np.array([np.nan])), "non-finite"),
    ],
)
def test_broken_steps_are_refused(make, message) -> None:
    with pytest.raises(InvalidModelError, match=message):
        make()


def linear_model(**overrides) -> Model:
    fields = dict(
        steps=(Linear(weights=np.ones((2, 1)), bias=np.zeros(1)),),
        task=Task.CLASSIFICATION,
        n_features=2,
        link=Link.LOGISTIC,
        classes=np.array([0, 1]),
    )
    fields.update(overrides)
    return Model(**fields)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": ()}, "at least one step"),
        ({"steps": ("linear",)}, "not an IR step"),
        ({"n_features": 3}, "takes 2 inputs but receives 3"),
        ({"classes": None}, "needs classes"),
        ({"classes": np.array([0, 1, 2])}, "3 classes need 3 outputs"),
        ({"classes": np.array([1, 1])}, "distinct"),
        ({"classes": np.array([None, 1], dtype=object)}, "bool, integers"),
        ({"link": Link.SOFTMAX}, "does not fit 1 output"),
        ({"link": Link.NONE, "predict_from": PredictFrom.PROBABILITIES}, "without probabilities"),
        ({"task": Task.REGRESSION}, "no classes"),
        ({"feature_names": ("a",)}, "1 feature names for 2"),
        ({"feature_names": ("a", "a")}, "distinct strings"),
        ({"metadata": {"x": object()}}, "JSON-compatible"),
        ({"metadata": {"x": float("nan")}}, "JSON-compatible"),
    ],
)
def test_broken_models_are_refused(overrides, message) -> None:
    with pytest.raises(InvalidModelError, match=message):
        linear_model(**overrides)


def test_model_checks_widths_across_steps() -> None:
    steps = (
        Impute(fill=np.zeros(2)),
        Dense(weights=np.ones((2, 4)), bias=np.zeros(4), activation="relu"),
        Dense(weights=np.ones((3, 1)), bias=np.zeros(1)),
    )
    with pytest.raises(InvalidModelError, match=r"step 2 \(Dense\) takes 3 inputs but receives 4"):
        linear_model(steps=steps)


def test_models_equal_is_bitwise() -> None:
    a = linear_model()
    assert models_equal(a, linear_model())
    assert not models_equal(a, linear_model(classes=np.array([0.0, 1.0])))
    b = linear_model(steps=(Linear(weights=np.array([[1.0], [1.0 + 2**-52]]), bias=np.zeros(1)),))
    assert not models_equal(a, b)


def test_round_threshold_is_exact_for_every_float32_input() -> None:
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.normal(0, 1e3, 5000), [1e39, -1e39, 0.1, 1 / 3, 2.5]])
    with np.errstate(over="ignore"):
        x32 = t.astype(np.float32)
        probes = np.stack(
            [np.nextafter(x32, np.float32(-np.inf)), x32, np.nextafter(x32, np.float32(np.inf))]
        )
        for cmp, op in ((Comparison.LE, np.less_equal), (Comparison.LT, np.less)):
            r = round_threshold(t, cmp)
            assert r.dtype == np.float32
            np.testing.assert_array_equal(op(probes, r), op(probes.astype(np.float64), t))


def test_validate_catches_a_model_mutated_behind_the_constructor() -> None:
    model = linear_model()
    assert validate(model) is model
    hacked = object.__new__(Linear)
    object.__setattr__(hacked, "weights", np.full((2, 1), np.nan))
    object.__setattr__(hacked, "bias", np.zeros(1))
    object.__setattr__(model, "steps", (hacked,))
    with pytest.raises(InvalidModelError, match="non-finite"):
        validate(model)


def test_classes_are_normalised_to_one_dtype_per_kind() -> None:
    assert linear_model(classes=np.array([3, 7], np.int32)).classes.dtype == np.int64
    assert linear_model(classes=np.array([0.5, 1.5], np.float32)).classes.dtype == np.float64
    wide = np.array(["no", "yes"], dtype="<U10")
    assert linear_model(classes=wide).classes.dtype == np.dtype("<U3")
    assert models_equal(linear_model(classes=np.array([0, 1], np.uint8)), linear_model())


def test_deeply_nested_metadata_is_an_invalid_model() -> None:
    deep: dict = {}
    for _ in range(5000):
        deep = {"x": deep}
    with pytest.raises(InvalidModelError, match="nests too deeply"):
        linear_model(metadata=deep)
