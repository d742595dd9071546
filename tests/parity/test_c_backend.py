"""Generated C over the zoo: bit-identical to device mode, labels equal to the source model.

Claims: host gcc -O2 -ffp-contract=off output equals fedge's device mode bit for bit on
every row (test rows, rows on every split threshold, extreme values). Labels equal the
source model's on float32-rounded rows, except where the reference margin is below 1e-4
(float32 arithmetic), and models that compare float64 inputs see float32 rows.
"""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.deployment import CompiledModel, verify_c
from tools import require_tool
from zoo import Case, extreme_rows, split_points, threshold_rows, zoo

pytestmark = pytest.mark.slow
CASES = [pytest.param(c, id=c.name) for c in zoo()]


def _rows(c: Case) -> np.ndarray:
    X = c.dataset.X_test
    if "tree" not in c.tags or hasattr(c.estimator, "steps"):
        return X
    thresholds, features = split_points(c.estimator)
    rows = np.concatenate(
        [X, threshold_rows(c.dataset.X_train, thresholds, features), extreme_rows(X, True)]
    )
    return rows.astype(np.float32).astype(np.float64)  # the device reads float32


def _margin(model, X) -> np.ndarray:
    if model.link.value == "none":
        s = fedge.decision_function(model, X).reshape(len(X), -1)
        return np.abs(s[:, 0]) if s.shape[1] == 1 else np.diff(np.sort(s, axis=1)[:, -2:]).ravel()
    p = np.sort(fedge.predict_proba(model, X), axis=1)
    return p[:, -1] - p[:, -2]


@pytest.mark.parametrize("c", CASES)
def test_c_equals_device_mode_and_the_source(c: Case) -> None:
    require_tool("gcc", "gcc")
    X = _rows(c)
    report = verify_c(fedge.lower(c.estimator), X)
    assert report.rows == len(X)
    assert report.score_mismatches == 0, report
    assert report.label_mismatches_device == 0, report
    if c.dataset.task != "regression":
        model = fedge.lower(c.estimator)
        c_labels = CompiledModel(model).predict(X)
        differ = c_labels != c.estimator.predict(X)
        assert np.all(~differ | (_margin(model, X) < 1e-4))


@pytest.mark.parametrize(
    "name",
    [
        "logreg_multinomial",
        "forest_multitarget",
        "mlp_strings_logistic",
        "xgb_binary_nan",
        "lgbm_regressor_nan",
        "sgd_huber_binary",
        "tree_single_leaf",
        "hgb_poisson",
    ],
)
def test_compiled_model_matches_device_mode_bit_for_bit(name: str) -> None:
    require_tool("gcc", "gcc")
    from zoo import case

    c = case(name)
    model = fedge.lower(c.estimator)
    compiled = CompiledModel(model, prefix="m_" + name)
    X = c.dataset.X_test
    for ours, theirs in (
        (compiled.decision_function(X), fedge.decision_function(model, X, mode="device")),
        (compiled.predict(X), fedge.predict(model, X, mode="device")),
    ):
        assert ours.dtype == theirs.dtype
        assert ours.tobytes() == theirs.tobytes()
    if model.task.value == "classification" and model.link.value != "none":
        np.testing.assert_array_equal(
            compiled.predict_proba(X), fedge.predict_proba(model, X, mode="device")
        )
    # Batches walk blocks of 8 rows together: partial, single-row and empty batches too.
    for rows in (X[:9], X[:1], X[:0]):
        assert (
            compiled.decision_function(rows).tobytes()
            == fedge.decision_function(model, rows, mode="device").tobytes()
        )


# The inline layout compiles slower (seconds per large forest): a spread of tree models.
INLINE_CASES = [
    "tree_deep",
    "tree_single_leaf",
    "tree_nan",
    "forest_stumps",
    "forest_strings",
    "gb_multiclass",
    "hgb_binary_nan",
    "xgb_binary_nan",
    "lgbm_no_missing_rule",
    "lgbm_single_leaf",
]


@pytest.mark.parametrize("name", INLINE_CASES)
def test_inline_layout_equals_device_mode(name: str) -> None:
    require_tool("gcc", "gcc")
    from zoo import case

    c = case(name)
    report = verify_c(fedge.lower(c.estimator), _rows(c), layout="inline")
    assert report.identical and report.max_abs_diff == 0.0, report
