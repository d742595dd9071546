"""Core ML specs over the zoo, evaluated by fedge's independent spec reader.

Claims (the reader evaluates the saved ``.mlmodel`` bytes; Core ML itself is not run, it
needs macOS): labels identical to the source model and to fedge's runtime on every row;
probabilities / predictions within the spec's tolerance (``spec_tolerance``): trees with
float64 leaves 1e-9 (they agree to the last bits), trees with float32 leaves (XGBoost) and
float32 neural networks 1e-5 (regression: relative to max(1, |y|)). Tree models are also
checked on rows placed exactly on every split threshold and one float32 step either side,
and on extreme values. Models with no exact Core ML form are refused.
"""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.deployment.formats.coreml import spec_tolerance, to_coreml, verify_coreml
from fedge.deployment.formats.coreml_reader import read_coreml
from fedge.errors import UnsupportedModelError
from zoo import Case, case, extreme_rows, split_points, threshold_rows

VERIFIED = [
    "logreg_binary",
    "logreg_multinomial",
    "logreg_strings",
    "logreg_imputed",
    "linear_regression",
    "ridge_multitarget",
    "ridge_median_imputed",
    "tree_nan",
    "tree_single_leaf",
    "tree_strings",
    "tree_regressor_nan",
    "forest_nan",
    "forest_multitarget",
    "scaled_forest_nan",
    "gb_binary",
    "gb_multiclass",
    "gb_strings",
    "hgb_multiclass_nan",
    "hgb_regressor_nan",
    "xgb_binary_nan",
    "xgb_multiclass_nan",
    "xgb_regressor_nan",
    "xgb_single_leaf",
    "lgbm_binary_nan",
    "lgbm_multiclass_nan",
    "mlp_binary",
    "mlp_multiclass_tanh",
    "mlp_strings_logistic",
    "mlp_regressor",
    "mlp_multitarget",
]

REFUSED = {
    "sgd_log_multiclass": "logistic_ovr",
    "sgd_huber_binary": "modified_huber",
    "linear_svc": "no probabilities",
    "ridge_classifier": "no probabilities",
    "hgb_poisson": "'exp' link",
    "xgb_poisson": "'exp' link",
    "lgbm_gamma": "'exp' link",
}


def _rows(c: Case) -> np.ndarray:
    X = c.dataset.X_test
    if "tree" not in c.tags or hasattr(c.estimator, "steps"):
        return X  # pipelines: thresholds live in scaled space (see the boundary test below)
    thresholds, features = split_points(c.estimator)
    extra = [X, extreme_rows(X, True)]
    if thresholds.size:
        extra.append(threshold_rows(c.dataset.X_train, thresholds, features))
    return np.concatenate(extra)


@pytest.mark.parametrize("name", VERIFIED)
def test_spec_reader_matches_source_and_runtime(name: str) -> None:
    c = case(name)
    X = _rows(c)
    report = verify_coreml(c.estimator, X)
    assert report.rows == len(X)
    assert report.ok, report.summary()
    model = fedge.lower(c.estimator)
    assert report.tolerance == spec_tolerance(model)
    # The report's own numbers, restated: labels identical, values within tolerance.
    assert report.label_mismatches_source in (None, 0)
    assert report.label_mismatches_runtime in (None, 0)
    assert report.max_abs_diff_source is not None
    assert report.max_abs_diff_source <= report.tolerance
    if c.dataset.has_nan and "tree" in c.tags:
        assert np.isnan(X).any()  # NaN rows went through the missing-value tracks


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_models_without_an_exact_core_ml_form_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedModelError, match=REFUSED[name]) as info:
        to_coreml(case(name).estimator)
    assert "C, ONNX or the lite JSON" in str(info.value)


def test_scaler_folded_into_thresholds_is_exact_at_every_boundary() -> None:
    """StandardScaler + forest: the spec compares raw doubles with folded thresholds; rows at
    each folded threshold and one double either side reach the source's leaves."""
    c = case("scaled_forest_nan")
    spec = to_coreml(c.estimator)
    nodes = [
        n
        for n in spec.treeEnsembleClassifier.treeEnsemble.nodes
        if n.nodeBehavior != 6  # LeafNode
    ]
    t = np.array([n.branchFeatureValue for n in nodes])
    f = np.array([n.branchFeatureIndex for n in nodes])
    keep = np.isfinite(t)
    t, f = t[keep][:300], f[keep][:300]
    base = np.resize(np.nan_to_num(c.dataset.X_test), (t.size, f.max() + 1))
    rows = []
    for value in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)):
        r = base.copy()
        r[np.arange(t.size), f] = value
        rows.append(r)
    X = np.concatenate(rows)
    got = read_coreml(spec.SerializeToString(deterministic=True)).evaluate(X)
    np.testing.assert_array_equal(got["label"], c.estimator.predict(X))
    np.testing.assert_allclose(got["probabilities"], c.estimator.predict_proba(X), atol=1e-12)
