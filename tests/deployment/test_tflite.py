"""TFLite export (fedge.deployment.formats.tflite): built without TensorFlow, run in LiteRT."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fedge
from fedge.compression import ModelQuantizer
from fedge.deployment.formats import tflite
from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
from fedge.ir import runtime


def _data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "binary":
        return load_breast_cancer(return_X_y=True)
    if kind == "multiclass":
        return make_classification(
            n_samples=400, n_features=8, n_informative=5, n_classes=3, random_state=0
        )
    return load_diabetes(return_X_y=True)


_MODELS = {
    "logreg_binary": (lambda: make_pipeline(StandardScaler(), LogisticRegression()), "binary"),
    "logreg_multiclass": (lambda: LogisticRegression(max_iter=2000), "multiclass"),
    "linear_regression": (LinearRegression, "regression"),
    "mlp_classifier": (
        lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        ),
        "multiclass",
    ),
    "mlp_regressor": (
        lambda: make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", max_iter=300, random_state=0),
        ),
        "regression",
    ),
}
_FITTED: dict[str, tuple[object, np.ndarray]] = {}


def _fitted(name: str) -> tuple[object, np.ndarray]:
    if name not in _FITTED:
        make, kind = _MODELS[name]
        X, y = _data(kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = make().fit(X, y)
        _FITTED[name] = (est, np.asarray(X, dtype=np.float64))
    return _FITTED[name]


@pytest.mark.parametrize("name", sorted(_MODELS))
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_float_parity(name: str, precision: str) -> None:
    est, X = _fitted(name)
    report = tflite.verify_tflite(est, X, precision=precision)
    assert report.passed, str(report)
    assert report.labels_identical in (None, True)
    for out in report.outputs:
        assert report.max_abs_error[out] <= report.tolerance[out]
    if "probabilities" in report.outputs:
        assert report.max_abs_error["probabilities"] <= 1e-6


@pytest.mark.parametrize("name", sorted(_MODELS))
def test_int8_within_one_step(name: str) -> None:
    est, X = _fitted(name)
    report = tflite.verify_tflite(est, X, precision="int8", representative_data=X[::2])
    assert report.passed, str(report)
    assert report.op_error_steps
    assert max(report.op_error_steps.values()) <= tflite.INT8_OP_TOLERANCE_STEPS
    if report.label_agreement is not None:
        assert report.label_agreement >= 0.95, str(report)


def test_int8_io_is_int8_and_uses_fedge_scales() -> None:
    est, X = _fitted("logreg_multiclass")
    q = ModelQuantizer("int8").quantize_model(est)
    data = tflite.to_tflite(q, precision="int8", representative_data=X)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert out["quantization"] == (pytest.approx(1 / 256), -128)  # softmax's fixed range
    weights = [d for d in interp.get_tensor_details() if d["name"] == "l0_weights"]
    step = q.steps[0]
    np.testing.assert_array_equal(interp.get_tensor(weights[0]["index"]), step.weights.T)
    np.testing.assert_allclose(
        weights[0]["quantization_parameters"]["scales"], step.scale, rtol=0, atol=0
    )
    meta = _metadata(data)
    assert meta["input"]["dtype"] == "int8"
    assert meta["precision"] == "int8"


def test_int8_keeps_scalers_on_the_host() -> None:
    est, X = _fitted("logreg_binary")
    data = tflite.to_tflite(est, precision="int8", representative_data=X)
    meta = _metadata(data)
    (affine,) = meta["input"]["host_preprocessing"]
    assert affine["op"] == "affine" and len(affine["offset"]) == X.shape[1]
    assert meta["input"]["scale"] > 0


def test_quantized_models_export_exactly_in_float32() -> None:
    est, X = _fitted("mlp_classifier")
    for strategy in ("int8", "int16", "dynamic", "float16"):
        q = ModelQuantizer(strategy).quantize_model(est)
        report = tflite.verify_tflite(q, X, precision="float32")
        assert report.passed, (strategy, str(report))


def test_builtin_kernels_also_agree() -> None:
    est, X = _fitted("mlp_classifier")
    report = tflite.verify_tflite(est, X, op_resolver="builtin")
    assert report.passed, str(report)


# --------------------------------------------------------------------------- trees
def _nan_data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=1
    )
    X[np.random.default_rng(0).random(X.shape) < 0.15] = np.nan
    return X, y


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=8, max_depth=3, random_state=0),
    ],
    ids=["forest", "gbdt"],
)
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_trees_with_nan_rows_are_exact(make, precision: str) -> None:
    X, y = _nan_data()
    est = make().fit(X, y)
    rows = np.vstack([X, np.full((1, X.shape[1]), np.nan)])
    report = tflite.verify_tflite(est, rows, precision=precision)
    assert report.passed, str(report)
    assert report.labels_identical
    for out in report.outputs:
        if out != "probabilities" or "scores" not in report.outputs:
            assert report.max_abs_error[out] == 0.0, str(report)  # bit-identical sums
    if precision == "float32" and isinstance(est, RandomForestClassifier):
        # scikit-learn's forests compare float32 inputs, as TFLite does: the source agrees.
        # (HistGradientBoosting compares float64; a float32 device follows fedge's device
        # mode, checked above, which may branch differently within float32 rounding.)
        ref = est.predict_proba(rows)
        got = tflite.run_tflite(tflite.to_tflite(est), rows.astype(np.float32))[-1]
        np.testing.assert_allclose(got, ref, atol=1e-6)
        np.testing.assert_array_equal(est.classes_[got.argmax(axis=1)], est.predict(rows))


def test_tree_size_limit_refuses_with_size_and_alternatives() -> None:
    X, y = _nan_data()
    est = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    step = fedge.lower(est).steps[0]
    size = tflite.tree_elements(step)
    with pytest.raises(UnsupportedModelError) as info:
        tflite.to_tflite(est, max_tree_elements=size - 1)
    text = str(info.value)
    assert f"{size:,}" in text and "C" in text and "ONNX" in text
    assert tflite.to_tflite(est, max_tree_elements=size)


def test_int8_refuses_trees_and_needs_representative_data() -> None:
    X, y = _nan_data()
    est = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
    with pytest.raises(UnsupportedModelError, match="float32"):
        tflite.to_tflite(est, precision="int8", representative_data=np.zeros((2, 6)))
    lin, _ = _fitted("linear_regression")
    with pytest.raises(InvalidInputError, match="representative_data"):
        tflite.to_tflite(lin, precision="int8")
    with pytest.raises(InvalidInputError, match="precision"):
        tflite.to_tflite(lin, precision="int4")


# --------------------------------------------------------------------------- file
def _metadata(data: bytes) -> dict:
    from ai_edge_litert import schema_py_generated as s

    model = s.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        if meta.Name() == b"fedge":
            buf = model.Buffers(meta.Buffer())
            return json.loads(buf.DataAsNumpy().tobytes())
    raise AssertionError("no fedge metadata")


def test_bytes_are_deterministic_and_saved(tmp_path) -> None:
    est, X = _fitted("mlp_classifier")
    first = tflite.to_tflite(est)
    assert tflite.to_tflite(fedge.lower(est)) == first
    assert first[4:8] == b"TFL3"
    int8 = tflite.to_tflite(est, precision="int8", representative_data=X)
    assert tflite.to_tflite(est, precision="int8", representative_data=X) == int8
    n = tflite.save_tflite(est, tmp_path / "m.tflite", precision="float16")
    assert n == (tmp_path / "m.tflite").stat().st_size
    meta = _metadata(first)
    assert meta["classes"] == [0, 1, 2]
    assert [o["name"] for o in meta["outputs"]] == ["scores", "probabilities"]
    # the float graph runs on any batch size
    for rows in (1, 7):
        (_, proba) = tflite.run_tflite(first, X[:rows].astype(np.float32))
        np.testing.assert_allclose(
            proba, runtime.predict_proba(fedge.lower(est), X[:rows], mode="device"), atol=1e-6
        )


def test_missing_dependency_names_the_extra(monkeypatch) -> None:
    est, _ = _fitted("linear_regression")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'fedge\[tflite\]'"):
        tflite.to_tflite(est)
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'fedge\[tflite\]'"):
        tflite.run_tflite(b"", np.zeros((1, 10), np.float32))
