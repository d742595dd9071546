"""Reference- and device-mode parity of the numpy runtime with scikit-learn, over the zoo.

Claims (DESIGN.md, precision contract):
- reference mode: labels identical; probabilities, decision values and regression
  outputs within rtol 1e-9, atol 1e-12 of scikit-learn.
- device mode (float32 inputs and arithmetic): scores within 1e-5 (relative to the largest)
  and probabilities within atol 1e-5 of reference mode on the same float32-rounded inputs;
  labels identical except on rows whose reference margin is below 1e-4. (A device receives
  float32 inputs, so models that compare float64 inputs, such as HistGradientBoosting, can take
  other branches on the unrounded rows: that is the input's rounding, not the arithmetic's.)
"""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.errors import InvalidInputError
from fedge.ir.runtime import reads_float32
from zoo import Case, extreme_rows, split_points, threshold_rows, zoo

RTOL, ATOL = 1e-9, 1e-12
# Libraries that compute in float32 (XGBoost): margins are bit-exact (see below), and
# probabilities differ from theirs only by their float32 link: rtol 1e-6.
RTOL32, ATOL32 = 1e-6, 1e-7
CASES = [pytest.param(c, id=c.name) for c in zoo()]


def _tolerance(c: Case) -> dict[str, float]:
    return {"rtol": RTOL32, "atol": ATOL32} if "float32" in c.tags else {"rtol": RTOL, "atol": ATOL}


def _rows(c: Case) -> np.ndarray:
    """Test rows; for trees also rows exactly on (and one float32 step around) every split
    threshold, and rows with extreme values (trees are the models defined on any input)."""
    X = c.dataset.X_test
    if "tree" not in c.tags or hasattr(c.estimator, "steps"):
        return X
    thresholds, features = split_points(c.estimator)
    extremes = extreme_rows(X, float32_range=reads_float32(fedge.lower(c.estimator)))
    return np.concatenate([X, threshold_rows(c.dataset.X_train, thresholds, features), extremes])


@pytest.mark.parametrize("c", CASES)
def test_reference_mode_matches_sklearn(c: Case) -> None:
    est, X = c.estimator, _rows(c)
    model = fedge.lower(est)
    tol = _tolerance(c)
    if c.dataset.task == "regression":
        np.testing.assert_allclose(fedge.predict(model, X), est.predict(X), **tol)
        return
    np.testing.assert_array_equal(fedge.predict(model, X), est.predict(X))
    if hasattr(est, "predict_proba") and model.link.value != "none":
        np.testing.assert_allclose(fedge.predict_proba(model, X), est.predict_proba(X), **tol)
    if hasattr(est, "decision_function"):
        np.testing.assert_allclose(
            fedge.decision_function(model, X), est.decision_function(X), rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("c", [p for p in CASES if "xgboost" in p.values[0].tags])
def test_xgboost_margins_are_bit_exact(c: Case) -> None:
    """Reference mode adds XGBoost's float32 leaves in float32, in its order: same bits."""
    import xgboost as xgb

    X = _rows(c)
    margin = c.estimator.get_booster().predict(xgb.DMatrix(X), output_margin=True)
    ours = fedge.decision_function(fedge.lower(c.estimator), X)
    np.testing.assert_array_equal(ours.astype(np.float32), margin)


@pytest.mark.parametrize("c", CASES)
def test_device_mode_is_float32_close_to_reference(c: Case) -> None:
    model = fedge.lower(c.estimator)
    X = c.dataset.X_test.astype(np.float32).astype(np.float64)
    ref = fedge.decision_function(model, X)
    dev = fedge.decision_function(model, X, mode="device")
    assert dev.dtype == np.float32
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(dev, ref, rtol=0, atol=1e-5 * scale)
    if c.dataset.task == "regression":
        return
    if model.link.value != "none":
        p_ref = fedge.predict_proba(model, X)
        p_dev = fedge.predict_proba(model, X, mode="device")
        np.testing.assert_allclose(p_dev, p_ref, rtol=0, atol=1e-5)
        margin = np.sort(p_ref, axis=1)[:, -1] - np.sort(p_ref, axis=1)[:, -2]
    else:
        r = ref.reshape(len(X), -1)
        margin = np.abs(r[:, 0]) if r.shape[1] == 1 else np.diff(np.sort(r, axis=1)[:, -2:]).ravel()
    same = fedge.predict(model, X, mode="device") == fedge.predict(model, X)
    assert np.all(same | (margin < 1e-4))


@pytest.mark.parametrize(
    "c",
    [p for p in CASES if "nan" in p.values[0].tags],
)
def test_nan_rows_follow_the_source_rule(c: Case) -> None:
    X = c.dataset.X_test
    assert np.isnan(X).any(axis=1).sum() > 10
    model = fedge.lower(c.estimator)
    np.testing.assert_array_equal(fedge.predict(model, X), c.estimator.predict(X))


@pytest.mark.parametrize("c", [p for p in CASES if "lightgbm" in p.values[0].tags])
def test_lightgbm_raw_scores_are_bit_exact(c: Case) -> None:
    """LightGBM adds float64 leaves in tree order; reference mode does the same."""
    X = _rows(c)
    raw = c.estimator.predict(X, raw_score=True)
    np.testing.assert_array_equal(fedge.decision_function(fedge.lower(c.estimator), X), raw)


@pytest.mark.parametrize("c", [p for p in CASES if "tree" in p.values[0].tags])
def test_values_beyond_float32_are_refused_where_the_source_refuses_them(c: Case) -> None:
    model = fedge.lower(c.estimator)
    X = c.dataset.X_test[:3].copy()
    X[1, 0] = 1e300
    if reads_float32(model):  # scikit-learn trees and XGBoost refuse such input too
        with pytest.raises(InvalidInputError, match="beyond the float32 range"):
            fedge.predict(model, X)
    else:  # HistGradientBoosting and LightGBM compare float64 inputs
        np.testing.assert_array_equal(fedge.predict(model, X), c.estimator.predict(X))
    with pytest.raises(InvalidInputError, match="beyond the float32 range"):
        fedge.predict(model, X, mode="device")
