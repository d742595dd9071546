"""ONNX files over the zoo, run in onnxruntime: against fedge's device mode and the source.

Claims (onnxruntime, float32 rows): every zoo model exports, passes
``onnx.checker.check_model(full_check=True)`` and runs; labels are identical to the source
model's and to device mode on test rows, rows on every split threshold (one float32 step
either side) and extreme values; probabilities/values within rtol 1e-5 / atol 1e-6 of device
mode, or no farther from the float64 model than device mode's own float32 error (the
ill-conditioned linear scores, see docs/onnx.md); single trees are identical bit for bit.
skl2onnx, as a second opinion, mispredicts the NaN forest; fedge's file is smaller than
skl2onnx's for random forests.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fedge
from fedge.deployment.formats.onnx import run_onnx, to_onnx, verify_onnx
from zoo import Case, case, extreme_rows, split_points, threshold_rows, zoo

CASES = [pytest.param(c, id=c.name) for c in zoo()]


def _rows(c: Case) -> np.ndarray:
    X = c.dataset.X_test
    if "tree" in c.tags and not hasattr(c.estimator, "steps"):
        thresholds, features = split_points(c.estimator)
        X = np.concatenate(
            [X, threshold_rows(c.dataset.X_train, thresholds, features), extreme_rows(X, True)]
        )
    return X.astype(np.float32).astype(np.float64)  # what the ONNX model reads


@pytest.mark.parametrize("c", CASES)
def test_onnx_matches_device_mode_and_the_source(c: Case) -> None:
    X = _rows(c)
    report = verify_onnx(c.estimator, X)
    assert report.rows == len(X)
    assert report.within_tolerance, report
    assert report.label_mismatches_device in (None, 0), report
    assert report.label_mismatches_source in (None, 0), report
    if c.dataset.task == "regression":
        assert report.output == "variable"
        assert report.source_max_abs_diff is not None
        scale = np.abs(c.estimator.predict(X)).max()
        assert report.source_max_abs_diff <= 1e-5 * scale + 1e-6, report
    model = fedge.lower(c.estimator)
    if getattr(model.steps[-1], "n_trees", 0) == 1 and model.link.value == "identity":
        # One tree: exact branches reach the same float32 leaf (sums of several trees may
        # round differently: onnxruntime adds the base score last).
        assert report.bitwise_equal, report


def test_nan_forest_exact_where_skl2onnx_mispredicts() -> None:
    """The second opinion: skl2onnx writes every missing-value flag as 0."""
    from skl2onnx import to_onnx as skl2onnx_to_onnx

    c = case("forest_nan")
    X = c.dataset.X_test.astype(np.float32)
    nan_rows = np.isnan(X).any(axis=1)
    assert nan_rows.sum() > 50
    ours = run_onnx(to_onnx(c.estimator), X)
    np.testing.assert_array_equal(ours["label"], c.estimator.predict(X))
    np.testing.assert_array_equal(
        ours["probabilities"], fedge.predict_proba(fedge.lower(c.estimator), X, mode="device")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_proto = skl2onnx_to_onnx(c.estimator, X[:1], options={"zipmap": False})
    theirs = run_onnx(theirs_proto.SerializeToString(), X)
    wrong = theirs["label"] != c.estimator.predict(X)
    assert wrong[~nan_rows].sum() == 0
    assert wrong[nan_rows].sum() > 0  # rows with NaN: skl2onnx sends them the wrong way


@pytest.mark.parametrize("name", ["forest_binary", "forest_multiclass"])
def test_random_forest_file_no_larger_than_skl2onnx(name: str) -> None:
    from skl2onnx import to_onnx as skl2onnx_to_onnx

    c = case(name)
    ours = len(to_onnx(c.estimator).SerializeToString(deterministic=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = len(
            skl2onnx_to_onnx(
                c.estimator, c.dataset.X_train[:1].astype(np.float32), options={"zipmap": False}
            ).SerializeToString()
        )
    # Measured: forest_binary 14.7 KB vs 28.7 KB, forest_multiclass 160 KB vs 230 KB.
    assert ours <= theirs, (ours, theirs)
