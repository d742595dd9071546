"""Core ML export: the spec built from the IR, read back by fedge's independent reader.

Nothing here runs Core ML (macOS only): every claim is about the saved ``.mlmodel`` as
evaluated by :mod:`fedge.deployment.formats.coreml_reader`, which parses the protobuf bytes
itself and imports nothing from the writer.
"""

from __future__ import annotations

import builtins
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

import fedge
from fedge.compression import ModelQuantizer
from fedge.deployment.formats import coreml_reader
from fedge.deployment.formats.coreml import (
    NOT_VERIFIED,
    VERIFIED_BY,
    save_coreml,
    to_coreml,
    verify_coreml,
)
from fedge.deployment.formats.coreml_reader import read_coreml
from fedge.errors import ModelFormatError, UnsupportedModelError, UnsupportedOperationError
from zoo import case

LE, LT, LEAF = 0, 1, 6  # TreeNodeBehavior values


def _bytes(spec) -> bytes:
    return spec.SerializeToString(deterministic=True)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:400], y[:400], X[400:]


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def mlp(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)
        ).fit(X, y)


# --------------------------------------------------------------------------- linear models
def test_binary_logistic_regression_is_a_softmax_over_zero_and_the_score(cancer) -> None:
    X, y, X_test = cancer
    est = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    spec = to_coreml(est, name="cancer")
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    layers = spec.neuralNetworkClassifier.layers
    assert [ly.WhichOneof("layer") for ly in layers] == [
        "scale",
        "innerProduct",
        "innerProduct",
        "softmax",
    ]
    assert list(spec.neuralNetworkClassifier.int64ClassLabels.vector) == [0, 1]
    assert spec.description.metadata.shortDescription == "cancer"
    got = read_coreml(_bytes(spec)).evaluate(X_test)
    np.testing.assert_array_equal(got["label"], est.predict(X_test))
    np.testing.assert_allclose(got["probabilities"], est.predict_proba(X_test), atol=1e-5)


def test_multinomial_logistic_regression(iris) -> None:
    X, y = iris
    est = LogisticRegression(max_iter=1000).fit(X, y)  # coremltools' converter refuses this
    got = read_coreml(_bytes(to_coreml(est))).evaluate(X)
    np.testing.assert_array_equal(got["label"], est.predict(X))
    np.testing.assert_allclose(got["probabilities"], est.predict_proba(X), atol=1e-5)


def test_linear_regression_outputs_a_prediction_array() -> None:
    X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    est = LinearRegression().fit(X, y)
    spec = to_coreml(est)
    assert spec.WhichOneof("Type") == "neuralNetworkRegressor"
    assert [o.name for o in spec.description.output] == ["prediction"]
    pred = read_coreml(_bytes(spec)).predict(X)
    np.testing.assert_allclose(pred, est.predict(X), rtol=1e-5, atol=1e-4)


def test_mlp_layers_and_parity(iris, mlp) -> None:
    X, _ = iris
    spec = to_coreml(mlp)
    kinds = [ly.WhichOneof("layer") for ly in spec.neuralNetworkClassifier.layers]
    assert kinds == ["scale", "innerProduct", "activation", "innerProduct", "softmax"]
    got = read_coreml(_bytes(spec)).evaluate(X)
    np.testing.assert_array_equal(got["label"], mlp.predict(X))
    np.testing.assert_allclose(got["probabilities"], mlp.predict_proba(X), atol=1e-5)


def test_imputer_pipeline_replaces_nan_before_the_network(cancer) -> None:
    X, y, X_test = cancer
    Xn = X.copy()
    Xn[::7, 3] = np.nan
    est = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(Xn, y)
    spec = to_coreml(est)
    assert spec.WhichOneof("Type") == "pipelineClassifier"
    models = spec.pipelineClassifier.pipeline.models
    assert [m.WhichOneof("Type") for m in models] == ["imputer", "neuralNetworkClassifier"]
    rows = X_test.copy()
    rows[::3, [3, 5]] = np.nan
    got = read_coreml(_bytes(spec)).evaluate(rows)
    np.testing.assert_array_equal(got["label"], est.predict(rows))
    np.testing.assert_allclose(got["probabilities"], est.predict_proba(rows), atol=1e-5)


# --------------------------------------------------------------------------- trees
def test_sklearn_tree_uses_le_branches_missing_tracks_and_float32_input(cancer) -> None:
    X, y, X_test = cancer
    Xn = X.copy()
    Xn[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    est = DecisionTreeClassifier(max_depth=5, random_state=0).fit(Xn, y)
    model = fedge.lower(est)
    spec = to_coreml(est)
    body = spec.treeEnsembleClassifier
    branches = [n for n in body.treeEnsemble.nodes if n.nodeBehavior != LEAF]
    assert {n.nodeBehavior for n in branches} == {LE}
    step = model.steps[0]
    assert sorted(n.missingValueTracksTrueChild for n in branches) == sorted(
        step.missing_left.tolist()
    )
    assert any(n.missingValueTracksTrueChild for n in branches)
    assert body.postEvaluationTransform == 0  # NoTransform: the leaves are probabilities
    assert spec.description.input[0].type.multiArrayType.dataType == 65568  # FLOAT32
    rows = X_test.copy()
    rows[np.random.default_rng(1).random(rows.shape) < 0.2] = np.nan
    got = read_coreml(_bytes(spec)).evaluate(rows)
    np.testing.assert_array_equal(got["label"], est.predict(rows))
    np.testing.assert_array_equal(got["probabilities"], est.predict_proba(rows))


def test_forest_mean_is_pre_divided_leaves(cancer) -> None:
    X, y, X_test = cancer
    est = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y)
    spec = to_coreml(est)
    leaves = [n for n in spec.treeEnsembleClassifier.treeEnsemble.nodes if n.nodeBehavior == LEAF]
    total = [sum(e.evaluationValue for e in n.evaluationInfo) for n in leaves]
    np.testing.assert_allclose(total, 1 / 5)  # each leaf: class fractions / n_trees
    got = read_coreml(_bytes(spec)).evaluate(X_test)
    np.testing.assert_allclose(got["probabilities"], est.predict_proba(X_test), atol=1e-12)


def test_gradient_boosting_transforms(cancer, iris) -> None:
    X, y, X_test = cancer
    binary = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y)
    spec = to_coreml(binary)
    params = spec.treeEnsembleClassifier
    assert params.postEvaluationTransform == 2  # Regression_Logistic
    assert params.treeEnsemble.numPredictionDimensions == 1
    init = fedge.lower(binary).steps[0].base_score
    assert list(params.treeEnsemble.basePredictionValue) == init.tolist()
    got = read_coreml(_bytes(spec)).evaluate(X_test)
    np.testing.assert_array_equal(got["label"], binary.predict(X_test))
    np.testing.assert_allclose(got["probabilities"], binary.predict_proba(X_test), atol=1e-12)
    Xi, yi = iris
    multi = GradientBoostingClassifier(n_estimators=3, random_state=0).fit(Xi, yi)
    spec = to_coreml(multi)
    assert spec.treeEnsembleClassifier.postEvaluationTransform == 1  # Classification_SoftMax
    got = read_coreml(_bytes(spec)).evaluate(Xi)
    np.testing.assert_allclose(got["probabilities"], multi.predict_proba(Xi), atol=1e-12)


def test_xgboost_uses_lt_branches_and_its_missing_directions(cancer) -> None:
    X, y, X_test = cancer
    Xn = X.copy()
    Xn[np.random.default_rng(2).random(X.shape) < 0.1] = np.nan
    est = XGBClassifier(n_estimators=10, max_depth=3, random_state=0).fit(Xn, y)
    spec = to_coreml(est)
    branches = [n for n in spec.treeEnsembleClassifier.treeEnsemble.nodes if n.nodeBehavior != LEAF]
    assert {n.nodeBehavior for n in branches} == {LT}
    rows = X_test.copy()
    rows[np.random.default_rng(3).random(rows.shape) < 0.3] = np.nan
    got = read_coreml(_bytes(spec)).evaluate(rows)
    np.testing.assert_array_equal(got["label"], est.predict(rows))
    np.testing.assert_allclose(got["probabilities"], est.predict_proba(rows), atol=1e-5)


def test_imputer_before_trees_rounds_fill_values_like_the_source(cancer) -> None:
    X, y, X_test = cancer
    Xn = X.copy()
    Xn[::5, :4] = np.nan
    est = make_pipeline(SimpleImputer(), DecisionTreeClassifier(random_state=0)).fit(Xn, y)
    spec = to_coreml(est)
    imputer = spec.pipelineClassifier.pipeline.models[0].imputer
    fill = np.array(imputer.imputedDoubleArray.vector)
    np.testing.assert_array_equal(fill, fill.astype(np.float32).astype(np.float64))
    rows = X_test.copy()
    rows[::2, :4] = np.nan
    got = read_coreml(_bytes(spec)).evaluate(rows)
    np.testing.assert_array_equal(got["label"], est.predict(rows))
    np.testing.assert_array_equal(got["probabilities"], est.predict_proba(rows))


# --------------------------------------------------------------------------- precision
def test_per_tensor_int8_weights_are_an_exact_look_up_table(iris, mlp) -> None:
    X, _ = iris
    q = ModelQuantizer("int8", per_channel=False).quantize_model(mlp)
    spec = to_coreml(q)
    assert spec.specificationVersion >= 3
    dense = [s for s in q.steps if isinstance(s, fedge.ir.QuantizedDense)]
    layers = [ly for ly in spec.neuralNetworkClassifier.layers if ly.name.endswith(("1", "2"))]
    for step, layer in zip(dense, layers, strict=True):
        w = layer.innerProduct.weights
        assert w.quantization.numberOfBits == 8
        lut = np.array(w.quantization.lookupTableQuantization.floatValue, dtype=np.float32)
        idx = np.frombuffer(w.rawValue, dtype=np.uint8).reshape(step.n_outputs, step.n_inputs)
        np.testing.assert_array_equal(lut[idx], step.dequantized().T)  # bit for bit
    report = verify_coreml(q, X)
    assert report.ok, report.summary()


def test_float16_weights_are_stored_as_float16(iris, mlp) -> None:
    X, _ = iris
    half = ModelQuantizer("float16").quantize_model(mlp)
    spec = to_coreml(half)
    assert spec.specificationVersion >= 2
    ip = [ly.innerProduct for ly in spec.neuralNetworkClassifier.layers if ly.name == "step1"]
    assert ip and ip[0].weights.float16Value and not ip[0].weights.floatValue
    assert verify_coreml(half, X).ok


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "int8", "per_channel": True}, "per_channel=False"),
        ({"strategy": "int16", "per_channel": False}, "int16 weights"),
        ({"strategy": "dynamic", "per_channel": False}, "dynamic int8"),
    ],
)
def test_inexact_quantized_weights_are_refused(kwargs, match) -> None:
    # 30 x 16 per-channel int8 weights take more than 256 distinct values: no single table
    q = ModelQuantizer(**kwargs).quantize_model(case("mlp_binary").estimator)
    with pytest.raises(UnsupportedModelError, match=match):
        to_coreml(q)


def test_integer_trees_are_refused(cancer) -> None:
    X, y, _ = cancer
    est = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    q = ModelQuantizer("int8").quantize_model(est)
    with pytest.raises(UnsupportedModelError, match="QuantizedTrees"):
        to_coreml(q)


def test_bool_class_labels_are_refused(iris) -> None:
    X, y = iris
    est = DecisionTreeClassifier(max_depth=2).fit(X, y == 1)  # bool labels
    with pytest.raises(UnsupportedModelError, match="Int64 or String"):
        to_coreml(est)


# --------------------------------------------------------------------------- files
def test_saved_bytes_are_deterministic_and_readable(tmp_path, mlp) -> None:
    a, b = tmp_path / "a.mlmodel", tmp_path / "b.mlmodel"
    n = save_coreml(mlp, a)
    assert n == a.stat().st_size > 0
    save_coreml(to_coreml(fedge.lower(mlp)), b)
    assert a.read_bytes() == b.read_bytes()
    spec = read_coreml(a)
    assert spec.kind == "neuralNetworkClassifier"
    assert spec.n_features == 4


def test_report_says_what_was_and_was_not_verified(iris, mlp) -> None:
    X, _ = iris
    report = verify_coreml(mlp, X)
    text = report.summary()
    assert "evaluated by fedge's independent reader of the Core ML spec" in text
    assert "not executed by Core ML itself, which needs macOS" in text
    assert "onnxmltools" in text
    assert report.verified_by == VERIFIED_BY and report.not_verified == NOT_VERIFIED
    assert report.as_dict()["ok"] is True


def test_spec_metadata_records_the_verification_scope(mlp) -> None:
    user = to_coreml(mlp).description.metadata.userDefined
    assert "needs macOS" in user["fedge.verification"]
    assert user["fedge.task"] == "classification"


# --------------------------------------------------------------------------- reader
def test_reader_imports_nothing_from_the_writer() -> None:
    code = (
        "import sys; import fedge.deployment.formats.coreml_reader as r; "
        "bad = [m for m in sys.modules if m.startswith('coremltools') "
        "or m == 'fedge.deployment.formats.coreml']; print(bad); assert not bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reader_rejects_corrupt_and_unknown_files(mlp) -> None:
    data = _bytes(to_coreml(mlp))
    with pytest.raises(ModelFormatError):
        read_coreml(data[: len(data) // 2])
    spec = to_coreml(mlp)
    spec.neuralNetworkClassifier.layers[1].ClearField("innerProduct")
    spec.neuralNetworkClassifier.layers[1].l2normalize.epsilon = 1e-6
    with pytest.raises(ModelFormatError, match="does not evaluate"):
        read_coreml(_bytes(spec)).evaluate(np.zeros((1, 4)))


def test_reader_evaluates_every_branch_mode() -> None:
    """The reader's comparisons, on a hand-written one-split tree per node behaviour."""
    ops = {0: np.less_equal, 1: np.less, 2: np.greater_equal, 3: np.greater, 4: np.equal}
    x = np.array([[0.5], [1.0], [1.5], [np.nan]])
    for code, op in ops.items():
        spec = to_coreml(
            fedge.lower(DecisionTreeClassifier(max_depth=1).fit(np.array([[0.0], [2.0]]), [0, 1]))
        )
        nodes = spec.treeEnsembleClassifier.treeEnsemble.nodes
        split = next(n for n in nodes if n.nodeBehavior != LEAF)
        split.nodeBehavior = code
        split.branchFeatureValue = 1.0
        split.missingValueTracksTrueChild = True
        got = read_coreml(_bytes(spec)).evaluate(x)
        true_leaf = next(n for n in nodes if n.nodeId == split.trueChildNodeId)
        want_true = [e.evaluationValue for e in true_leaf.evaluationInfo]
        went_true = np.all(got["probabilities"] == want_true, axis=1)
        expect = np.append(op(x[:3, 0], 1.0), True)  # NaN follows the true child
        np.testing.assert_array_equal(went_true, expect)


# --------------------------------------------------------------------------- dependency
def test_missing_coremltools_names_the_extra(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_coremltools(name, *args, **kwargs):
        if name == "coremltools" or name.startswith("coremltools."):
            raise ImportError("No module named 'coremltools'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_coremltools)
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'fedge\[coreml\]'"):
        to_coreml(case("logreg_multinomial").estimator)


def test_importing_coremltools_emits_no_python_warnings() -> None:
    code = (
        "import warnings; warnings.simplefilter('error'); "
        "from fedge.deployment.formats.coreml import _ct; _ct()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stderr  # its log lines are silenced at import


def test_reader_module_is_importable_without_coremltools() -> None:
    assert "coremltools" not in coreml_reader.__dict__
