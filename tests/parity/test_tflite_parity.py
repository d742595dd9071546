"""TFLite parity over the model zoo: every file runs in the LiteRT interpreter (reference
kernels, the stand-in for TFLite Micro) and is compared with fedge's runtime in device mode.

- float32/float16, linear models and MLPs: labels identical, probabilities within 1e-6,
  scores within 1e-5 relative (they are usually bit-identical).
- int8, linear models and MLPs: every int8 operator within one quantization step of exact
  arithmetic on its int8 inputs; labels mostly identical to the float model's.
- trees (NaN rows included): labels identical and raw sums bit-identical, or, above the
  size limit, a refusal naming the alternatives.
"""

from __future__ import annotations

import numpy as np
import pytest

import fedge
from fedge.deployment.formats import tflite
from fedge.errors import UnsupportedModelError
from zoo import zoo

_LINEAR = [c.name for c in zoo() if "tree" not in c.tags]
# Fitting every boosted zoo model would dominate the test time: scikit-learn's trees,
# one XGBoost and one LightGBM model with NaN rows cover each frontend's missing-value rule.
_TREES = [c.name for c in zoo() if "tree" in c.tags and not ({"xgboost", "lightgbm"} & c.tags)] + [
    "xgb_binary_nan",
    "lgbm_multiclass_nan",
]


def _case(name: str):
    return next(c for c in zoo() if c.name == name)


@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("name", _LINEAR)
def test_linear_and_mlp_float(name: str, precision: str) -> None:
    c = _case(name)
    report = tflite.verify_tflite(c.estimator, c.dataset.X_test, precision=precision)
    assert report.passed, str(report)
    if "probabilities" in report.outputs:
        # The stated bound is worst case (1e-6 plus half of 1e-5 times the output layer's
        # term magnitude, up to 2e-3 for the SGD models' large weights); the interpreter's
        # order and fedge's lanes actually differ by a few float32 ulps of the probability.
        assert report.max_abs_error["probabilities"] <= 1e-5


@pytest.mark.parametrize("name", _LINEAR)
def test_linear_and_mlp_int8(name: str) -> None:
    c = _case(name)
    report = tflite.verify_tflite(
        c.estimator,
        c.dataset.X_test,
        precision="int8",
        representative_data=c.dataset.X_train,
    )
    assert report.passed, str(report)
    assert max(report.op_error_steps.values()) <= tflite.INT8_OP_TOLERANCE_STEPS
    if report.label_agreement is not None:
        assert report.label_agreement >= 0.9, str(report)


@pytest.mark.parametrize("name", _TREES)
def test_trees_float32(name: str) -> None:
    c = _case(name)
    step = next(s for s in fedge.lower(c.estimator).steps if isinstance(s, fedge.ir.TreeEnsemble))
    if tflite.tree_elements(step) > tflite.DEFAULT_MAX_TREE_ELEMENTS:
        with pytest.raises(UnsupportedModelError, match="ONNX"):
            tflite.to_tflite(c.estimator)
        return
    X = c.dataset.X_test
    if c.dataset.has_nan:
        X = np.vstack([X, np.full((1, X.shape[1]), np.nan)])
    report = tflite.verify_tflite(c.estimator, X, precision="float32")
    assert report.passed, str(report)
    raw = report.outputs[0]  # scores, or the summed leaves of a forest / regressor
    assert report.max_abs_error[raw] == 0.0, str(report)
