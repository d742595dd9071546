"""The numpy runtime: input validation with clear errors, and semantics on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
from fedge.ir import Aggregation, Comparison, Linear, Link, Model, Task, TreeEnsemble
from zoo import case

I32 = np.int32


@pytest.fixture(scope="module")
def logreg():
    return fedge.lower(case("logreg_binary").estimator)


@pytest.fixture(scope="module")
def forest_nan():
    return fedge.lower(case("forest_nan").estimator)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((2, 5)), "X has 5 features, but the model expects 30"),
        (np.zeros(30), "must be 2-D"),
        ([["a"] * 30], "must be numeric"),
        (np.full((3, 30), np.inf), "infinite values in 3 row"),
        (np.where(np.eye(4, 30) == 1, np.nan, 0.0), "NaN in 4 row.*no rule for missing"),
    ],
)
def test_bad_input_raises_a_clear_error(logreg, X, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fedge.predict(logreg, X)


def test_trees_accept_nan_and_linear_models_without_imputer_do_not(logreg, forest_nan) -> None:
    X = np.full((2, 30), np.nan)
    assert fedge.predict(forest_nan, X).shape == (2,)
    with pytest.raises(InvalidInputError):
        fedge.predict_proba(logreg, X)


def test_unknown_mode_and_non_model_are_refused(logreg) -> None:
    with pytest.raises(InvalidInputError, match="mode must be"):
        fedge.predict(logreg, np.zeros((1, 30)), mode="fast")
    with pytest.raises(UnsupportedModelError, match=r"fedge\.lower"):
        fedge.predict(case("logreg_binary").estimator, np.zeros((1, 30)))


def test_proba_on_models_without_probabilities() -> None:
    svc = fedge.lower(case("linear_svc").estimator)
    with pytest.raises(UnsupportedOperationError, match="no probabilities"):
        fedge.predict_proba(svc, np.zeros((1, 30)))
    reg = fedge.lower(case("lasso").estimator)
    with pytest.raises(UnsupportedOperationError, match="regressor"):
        fedge.predict_proba(reg, np.zeros((1, 10)))


def test_empty_batch_gives_empty_results(logreg) -> None:
    assert fedge.predict(logreg, np.zeros((0, 30))).shape == (0,)
    assert fedge.predict_proba(logreg, np.zeros((0, 30))).shape == (0, 2)


def test_dataframe_columns_must_match_feature_names() -> None:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    df = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    model = fedge.lower(LinearRegression().fit(df, [0.0, 1.0, 2.0]))
    assert model.feature_names == ("a", "b")
    assert fedge.predict(model, df).shape == (3,)
    with pytest.raises(InvalidInputError, match="feature names"):
        fedge.predict(model, df[["b", "a"]])


def _one_split(comparison: Comparison) -> Model:
    trees = TreeEnsemble(
        feature=np.array([0], I32),
        threshold=np.array([1.0]),
        left=np.array([~0], I32),
        right=np.array([~1], I32),
        missing_left=np.array([False]),
        leaf_values=np.array([[10.0], [20.0]]),
        roots=np.array([0, 0], I32)[:1],
        tree_offset=np.zeros(1, I32),
        n_features=1,
        n_outputs=1,
        base_score=np.array([0.5]),
        comparison=comparison,
        input_precision="float64",
    )
    return Model(steps=(trees,), task=Task.REGRESSION, n_features=1)


def test_comparison_and_missing_direction_semantics() -> None:
    X = np.array([[0.5], [1.0], [1.5], [np.nan]])
    le = fedge.predict(_one_split(Comparison.LE), X)
    lt = fedge.predict(_one_split(Comparison.LT), X)
    np.testing.assert_array_equal(le, [10.5, 10.5, 20.5, 20.5])  # NaN goes right here
    np.testing.assert_array_equal(lt, [10.5, 20.5, 20.5, 20.5])


def test_mean_aggregation_and_tree_offsets() -> None:
    # Two single-leaf trees writing different outputs, averaged: (leaf / 2) + base.
    trees = TreeEnsemble(
        feature=np.zeros(0, I32),
        threshold=np.zeros(0),
        left=np.zeros(0, I32),
        right=np.zeros(0, I32),
        missing_left=np.zeros(0, bool),
        leaf_values=np.array([[4.0], [8.0]]),
        roots=np.array([~0, ~1], I32),
        tree_offset=np.array([0, 1], I32),
        n_features=3,
        n_outputs=2,
        base_score=np.array([1.0, -1.0]),
        aggregation=Aggregation.MEAN,
    )
    model = Model(steps=(trees,), task=Task.REGRESSION, n_features=3)
    np.testing.assert_array_equal(fedge.predict(model, np.zeros((2, 3))), [[3.0, 3.0]] * 2)


def test_device_mode_accumulates_in_its_fixed_lane_order() -> None:
    # Four partial sums, input k into lane k % 4, combined as ((l0 + l1) + (l2 + l3)) + b:
    # 1e8 and -1e8 share lane 0 and cancel, the three 1s survive in lanes 1-3 (in input order
    # every 1 would be lost against 1e8 in float32; BLAS could pick yet another order).
    step = Linear(weights=np.array([[1e8], [1.0], [1.0], [1.0], [-1e8]]), bias=np.zeros(1))
    model = Model(steps=(step,), task=Task.REGRESSION, n_features=5, link=Link.IDENTITY)
    X = np.ones((4, 5))
    assert fedge.predict(model, X, mode="device").tolist() == [3.0] * 4
    assert fedge.predict(model, X).tolist() == [3.0] * 4
    in_order = Linear(weights=np.array([[1.0], [1e8], [-1e8], [0.0], [1.0]]), bias=np.zeros(1))
    model = Model(steps=(in_order,), task=Task.REGRESSION, n_features=5, link=Link.IDENTITY)
    # lane 0: 1 + 1 = 2; lanes 1 and 2: 1e8 and -1e8; (2 + 1e8) + (-1e8 + 0) = 0 in float32
    assert fedge.predict(model, X, mode="device").tolist() == [0.0] * 4
