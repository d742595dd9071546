"""Core ML export: a Core ML model specification (``.mlmodel``) built from the fedge IR.

The specification is assembled with coremltools' builders (the tree-ensemble builder and
``NeuralNetworkBuilder``) from the IR alone, so it works with any scikit-learn version
(coremltools' own scikit-learn converter refuses scikit-learn > 1.5.1 and multinomial
logistic regression). Mapping (see docs/coreml.md):

- ``TreeEnsemble`` (last and only scoring step) -> ``treeEnsembleClassifier`` /
  ``treeEnsembleRegressor``: ``<=`` -> ``BranchOnValueLessThanEqual``, ``<`` ->
  ``BranchOnValueLessThan``, true child = the IR's left child, ``missingValueTracksTrueChild``
  = ``missing_left``, ``basePredictionValue`` = base score, leaf values at the tree's output
  offset (divided by the number of trees for a ``mean`` ensemble: Core ML only sums).
  Link -> post-evaluation transform: identity -> ``NoTransform``, logistic ->
  ``Regression_Logistic`` (one dimension, two classes), softmax -> ``Classification_SoftMax``;
  any other link is refused. Inputs are declared FLOAT32 when the source compares float32
  inputs (scikit-learn, XGBoost), DOUBLE otherwise, so every branch equals the source's.
- ``Affine``, ``Linear``, ``Dense``, ``QuantizedDense`` -> a neural network (classifier or
  regressor): ``scale`` layers, ``innerProduct`` layers (float32, float16, or 8-bit
  look-up-table quantized weights), ``activation`` layers, then the link (softmax layer;
  the logistic link as ``softmax([0, s])`` = ``[1 - sigmoid(s), sigmoid(s)]``; exp as a unary
  layer).
- ``Impute`` first -> a pipeline: a Core ML ``imputer`` model (NaN -> fill), then the above.

Core ML itself runs only on macOS. Here a spec is checked by saving it, reading the bytes
back with :mod:`fedge.deployment.formats.coreml_reader` (an independent numpy evaluator of
the protobuf wire format that imports nothing from this module or from coremltools) and
comparing it with the source model and the IR runtime: :func:`verify_coreml`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import UnsupportedModelError, UnsupportedOperationError
from fedge.ir import runtime
from fedge.ir.lower import lower
from fedge.ir.nodes import (
    Activation,
    Affine,
    AffineOrder,
    Aggregation,
    Comparison,
    Dense,
    Impute,
    Linear,
    Link,
    Model,
    Precision,
    QuantizedDense,
    QuantizedTrees,
    Task,
    TreeEnsemble,
)

__all__ = [
    "INPUT_NAME",
    "NOT_VERIFIED",
    "VERIFIED_BY",
    "CoreMLReport",
    "save_coreml",
    "to_coreml",
    "verify_coreml",
]

INPUT_NAME = "input"
LABEL_NAME = "classLabel"
PROBA_NAME = "classProbability"
PREDICTION_NAME = "prediction"

VERIFIED_BY = "evaluated by fedge's independent reader of the Core ML spec (numpy)"
NOT_VERIFIED = (
    "not executed by Core ML itself, which needs macOS; not checked by Core ML's spec "
    "validator or compiler; onnxmltools' Core ML -> ONNX path not run (onnxmltools is not "
    "installed)"
)

_INSTALL = "pip install 'fedge[coreml]'"


# --------------------------------------------------------------------------- coremltools
@contextlib.contextmanager
def _quiet_coremltools() -> Iterator[None]:
    """coremltools logs warnings at import on Linux ("Failed to load _MLModelProxy", its
    scikit-learn/XGBoost version notes): plain logging records, not Python warnings.
    Raise its logger's level while importing, then restore it."""
    logger = logging.getLogger("coremltools")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _ct() -> Any:
    try:
        with _quiet_coremltools():
            import coremltools
            import coremltools.models.neural_network
            import coremltools.models.tree_ensemble
    except ImportError as exc:
        raise UnsupportedOperationError(
            f"Core ML export needs coremltools ({exc}); install it with {_INSTALL}"
        ) from None
    return coremltools


# --------------------------------------------------------------------------- public API
def to_coreml(model_or_estimator: Any, *, name: str = "model") -> Any:
    """Build the Core ML specification of a model.

    Parameters
    ----------
    model_or_estimator : Model or fitted estimator
        An IR model, or an estimator :func:`fedge.lower` supports.
    name : str
        Stored in the spec's metadata (``shortDescription``).

    Returns
    -------
    coremltools.proto.Model_pb2.Model
        One input, ``"input"``: a multiArray of ``n_features`` values. Classifiers output
        ``"classLabel"`` (Int64 or String) and ``"classProbability"`` (a dictionary from
        label to probability); regressors output ``"prediction"``.

    Raises
    ------
    UnsupportedModelError
        For IR steps, links, precisions or class labels with no exact Core ML form (the
        message names the reason and the formats that do take the model).
    UnsupportedOperationError
        If coremltools is not installed.
    """
    model = lower(model_or_estimator)
    ct = _ct()
    _check_classes(model)
    steps = list(model.steps)
    impute = steps.pop(0) if isinstance(steps[0], Impute) else None
    if not steps:
        raise UnsupportedModelError("an imputer alone is not a model; nothing to export to Core ML")
    trees = [s for s in steps if isinstance(s, TreeEnsemble | QuantizedTrees)]
    if trees:
        core, core_dtype = _tree_spec(ct, model, steps, impute is not None)
    else:
        core, core_dtype = _nn_spec(ct, model, steps)
    spec = core if impute is None else _pipeline(ct, model, impute, core, core_dtype)
    _describe(spec, model, name)
    return spec


def save_coreml(model: Any, path: str | Path, *, name: str = "model") -> int:
    """Write ``model`` (a spec from :func:`to_coreml`, an IR model or an estimator) as an
    ``.mlmodel`` file; return the number of bytes written.

    The bytes are deterministic: the same model always gives the same file (protobuf's
    deterministic serialization; no timestamps or random names in the spec).
    """
    data = _spec_bytes(model, name)
    Path(path).write_bytes(data)
    return len(data)


def _spec_bytes(model: Any, name: str) -> bytes:
    spec = model if _is_spec(model) else to_coreml(model, name=name)
    return spec.SerializeToString(deterministic=True)


def _is_spec(obj: Any) -> bool:
    return type(obj).__name__ == "Model" and hasattr(obj, "SerializeToString")


# --------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class CoreMLReport:
    """What evaluating the saved ``.mlmodel`` with fedge's spec reader showed on ``rows``."""

    rows: int
    spec_kind: str  # e.g. "treeEnsembleClassifier", "pipelineClassifier[imputer, ...]"
    file_bytes: int
    tolerance: float  # the bound the probability / prediction differences are held to
    label_mismatches_runtime: int | None  # vs fedge's numpy runtime (reference mode)
    label_mismatches_source: int | None  # vs the source estimator (None: no source given)
    max_abs_diff_runtime: float  # probabilities (classifiers) or predictions (regressors)
    max_abs_diff_source: float | None
    verified_by: str = VERIFIED_BY
    not_verified: str = NOT_VERIFIED

    @property
    def ok(self) -> bool:
        return (
            self.label_mismatches_runtime in (None, 0)
            and self.label_mismatches_source in (None, 0)
            and self.max_abs_diff_runtime <= self.tolerance
            and (self.max_abs_diff_source is None or self.max_abs_diff_source <= self.tolerance)
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}

    def summary(self) -> str:
        what = f"{self.rows} rows, {self.spec_kind}, {self.file_bytes} bytes"
        parts = [
            f"runtime: {self.label_mismatches_runtime} label mismatches, "
            f"max |diff| {self.max_abs_diff_runtime:.3g}"
        ]
        if self.max_abs_diff_source is not None:
            parts.append(
                f"source: {self.label_mismatches_source} label mismatches, "
                f"max |diff| {self.max_abs_diff_source:.3g}"
            )
        return (
            f"Core ML spec {'verified' if self.ok else 'MISMATCH'} ({what}; tolerance "
            f"{self.tolerance:g}): {'; '.join(parts)}. {self.verified_by}; {self.not_verified}."
        )


def spec_tolerance(model: Model) -> float:
    """The bound :func:`verify_coreml` holds probabilities / predictions to.

    Neural networks compute in float32 in Core ML (and in the reader): 1e-5 on
    probabilities, 1e-5 relative on regression outputs (times ``max(1, |y|)``). Trees are
    evaluated in double: 1e-9 with float64 leaves, 1e-5 when the source sums float32 leaves
    (XGBoost) or the leaves are float16.
    """
    trees = [s for s in model.steps if isinstance(s, TreeEnsemble)]
    if trees and trees[0].leaf_values.dtype == np.float64:
        return 1e-9
    return 1e-5


def verify_coreml(
    model_or_estimator: Any, X: Any, *, name: str = "model", tolerance: float | None = None
) -> CoreMLReport:
    """Save the Core ML spec, read it back with fedge's spec reader and compare.

    The reader (:mod:`fedge.deployment.formats.coreml_reader`) parses the saved bytes
    itself and evaluates them in numpy; it imports nothing from the writer. Its outputs
    are compared with fedge's numpy runtime (reference mode) and, when an estimator is
    given, with the estimator's ``predict`` / ``predict_proba``. Regression differences are
    relative to ``max(1, |y|)``.

    What this does *not* show: how Core ML itself runs the file (macOS only), nor that
    Core ML's validator accepts it. The report says so (``verified_by``, ``not_verified``).
    """
    from fedge.deployment.formats import coreml_reader

    source = None if isinstance(model_or_estimator, Model) else model_or_estimator
    model = lower(model_or_estimator)
    X = runtime.check_input(model, X)
    data = _spec_bytes(model, name)
    spec = coreml_reader.read_coreml(data)
    got = spec.evaluate(X)
    tol = spec_tolerance(model) if tolerance is None else float(tolerance)
    if model.task is Task.CLASSIFICATION:
        labels, proba = got["label"], got["probabilities"]
        want_labels = runtime.predict(model, X)
        want_proba = runtime.predict_proba(model, X)
        lab_rt = int(np.sum(labels != want_labels))
        diff_rt = _max_diff(proba, want_proba)
        lab_src = diff_src = None
        if source is not None:
            lab_src = int(np.sum(labels != np.asarray(source.predict(X))))
            if hasattr(source, "predict_proba"):
                diff_src = _max_diff(proba, np.asarray(source.predict_proba(X)))
    else:
        pred = got["prediction"]
        want = runtime.predict(model, X).reshape(pred.shape)
        lab_rt, lab_src = None, None
        diff_rt = _max_diff(pred, want, relative=True)
        diff_src = None
        if source is not None:
            theirs = np.asarray(source.predict(X), dtype=np.float64).reshape(pred.shape)
            diff_src = _max_diff(pred, theirs, relative=True)
    return CoreMLReport(
        rows=int(X.shape[0]),
        spec_kind=spec.kind,
        file_bytes=len(data),
        tolerance=tol,
        label_mismatches_runtime=lab_rt,
        label_mismatches_source=lab_src,
        max_abs_diff_runtime=diff_rt,
        max_abs_diff_source=diff_src,
    )


def _max_diff(a: np.ndarray, b: np.ndarray, *, relative: bool = False) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    if relative:
        d = d / np.maximum(1.0, np.abs(b))
    return float(np.max(d))


# --------------------------------------------------------------------------- checks
def _refuse(message: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"Core ML export: {message}")


_ALTERNATIVES = "export it as C, ONNX or the lite JSON instead"


def _check_classes(model: Model) -> None:
    if model.classes is None:
        return
    if model.classes.dtype.kind not in "iU":
        raise _refuse(
            f"class labels of dtype {model.classes.dtype} are not supported (Core ML "
            "classifiers take Int64 or String labels); re-encode the labels as integers "
            f"or strings, or {_ALTERNATIVES}"
        )


def _labels(model: Model) -> list[Any]:
    assert model.classes is not None
    if model.classes.dtype.kind == "U":
        return [str(c) for c in model.classes]
    return [int(c) for c in model.classes]


def _datatypes(ct: Any) -> Any:
    return ct.models.datatypes


def _set_array_type(feature: Any, ct: Any, dtype: str) -> None:
    arr = feature.type.multiArrayType
    arr.dataType = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Value(dtype)


# --------------------------------------------------------------------------- trees
_BRANCH = {
    Comparison.LE: "BranchOnValueLessThanEqual",
    Comparison.LT: "BranchOnValueLessThan",
}


def _tree_transform(model: Model) -> str:
    link, k = model.link, model.n_outputs
    if model.task is Task.REGRESSION:
        if link is Link.IDENTITY:
            return "NoTransform"
        raise _refuse(
            f"a tree ensemble with the {link.value!r} link has no Core ML post-evaluation "
            "transform (Core ML has NoTransform, Classification_SoftMax and "
            f"Regression_Logistic only); {_ALTERNATIVES}"
        )
    if link is Link.IDENTITY and k == model.n_classes:
        return "NoTransform"
    if link is Link.LOGISTIC and k == 1:
        return "Regression_Logistic"
    if link is Link.SOFTMAX and k == model.n_classes:
        return "Classification_SoftMax"
    raise _refuse(
        f"a tree ensemble classifier with the {link.value!r} link and {k} output(s) has no "
        "exact Core ML post-evaluation transform (NoTransform, Classification_SoftMax, "
        f"Regression_Logistic); {_ALTERNATIVES}"
    )


def _tree_spec(ct: Any, model: Model, steps: list[Any], imputed: bool) -> tuple[Any, str]:
    scalers = []
    while steps and isinstance(steps[0], Affine):
        scalers.append(steps.pop(0))
    if len(steps) != 1 or not isinstance(steps[0], TreeEnsemble):
        kinds = " > ".join(type(s).__name__ for s in model.steps)
        if any(isinstance(s, QuantizedTrees) for s in steps):
            raise _refuse(
                "integer (QuantizedTrees) ensembles sum integer leaves and rescale once; Core "
                "ML trees add double leaves, so the result would differ. Export the float "
                f"model, or {_ALTERNATIVES}"
            )
        raise _refuse(
            f"the step chain {kinds} has no exact Core ML form: a tree ensemble must be the "
            f"only scoring step, after at most an imputer and scalers; {_ALTERNATIVES}"
        )
    step: TreeEnsemble = steps[0]
    transform = _tree_transform(model)
    dt = _datatypes(ct)
    features = [(INPUT_NAME, dt.Array(step.n_features))]
    from coremltools.models.tree_ensemble import TreeEnsembleClassifier, TreeEnsembleRegressor

    if model.task is Task.CLASSIFICATION:
        labels = _labels(model)
        label_type = dt.String() if isinstance(labels[0], str) else dt.Int64()
        outputs = [(LABEL_NAME, label_type), (PROBA_NAME, dt.Dictionary(label_type))]
        builder = TreeEnsembleClassifier(features, labels, outputs)
    else:
        builder = TreeEnsembleRegressor(features, PREDICTION_NAME)
        if step.n_outputs > 1:
            out = builder.spec.description.output[0]
            out.type.Clear()
            out.type.multiArrayType.shape.append(step.n_outputs)
            _set_array_type(out, ct, "DOUBLE")
    builder.set_default_prediction_value([float(v) for v in step.base_score])
    builder.set_post_evaluation_transform(transform)
    if scalers:
        # Fold the scalers into the thresholds: exact for every double input (see _fold).
        threshold, modes = _fold(scalers, step)
        dtype = "DOUBLE"
    else:
        threshold = step.threshold.astype(np.float64)
        modes = np.full(step.n_nodes, _BRANCH[step.comparison], dtype=object)
        # Inputs are compared as the source compares them: float32 when it rounds to float32.
        dtype = "FLOAT32" if step.input_precision is Precision.FLOAT32 else "DOUBLE"
    _add_trees(builder, step, threshold, modes)
    if not imputed:
        _set_array_type(builder.spec.description.input[0], ct, dtype)
    return builder.spec, dtype


# ---- scalers folded into thresholds
_F64 = np.float64


def _ordered(x: np.ndarray) -> np.ndarray:
    """Map doubles to int64 keys in the same order (for bisection over all doubles)."""
    bits = x.astype(_F64).view(np.int64)
    return np.where(bits < 0, np.int64(-(2**63)) - bits - 1, bits)


def _unordered(k: np.ndarray) -> np.ndarray:
    bits = np.where(k < 0, np.int64(-(2**63)) - k - 1, k)
    return bits.view(_F64)


def _fold(scalers: list[Affine], step: TreeEnsemble) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds on the raw input equivalent to the scalers followed by the split.

    The source computes ``g(x)``: each scaler in float64 in its operation order, then
    (float32 input precision) a rounding to float32, and compares ``g(x)`` with ``t``.
    Every operation is monotone in ``x`` (non-decreasing for a positive scale), so the
    rows sent left are exactly ``x <= x*`` for the largest double ``x*`` that goes left
    (or ``x >= x*``, the smallest, when the scales' signs make ``g`` decreasing). ``x*``
    is found per node by bisection over the ordered doubles: exact for every double input.
    """
    f = step.feature.astype(np.int64)
    t = step.threshold.astype(_F64)
    less = np.less_equal if step.comparison is Comparison.LE else np.less
    sign = np.ones(step.n_features)
    for sc in scalers:
        scale = sc.scale.astype(_F64)
        if np.any(scale == 0):
            raise _refuse("a scaler with a zero scale before the trees; " + _ALTERNATIVES)
        sign = sign * np.sign(scale)
    increasing = sign[f] > 0

    def left(x: np.ndarray) -> np.ndarray:
        z = x.astype(_F64)
        with np.errstate(over="ignore", invalid="ignore"):
            for sc in scalers:
                o, s = sc.offset.astype(_F64)[f], sc.scale.astype(_F64)[f]
                z = (z - o) / s if sc.order is AffineOrder.SUBTRACT_DIVIDE else z * s + o
            if step.input_precision is Precision.FLOAT32:
                z = z.astype(np.float32).astype(_F64)
        return less(z, t)

    big = np.finfo(_F64).max
    lo = _ordered(np.full(f.shape, -big))
    hi = _ordered(np.full(f.shape, big))
    # Bisect for the boundary key b: increasing -> largest left x; decreasing -> smallest.
    pos_lo, pos_hi = lo.copy(), hi.copy()
    ok_lo = left(_unordered(lo))
    ok_hi = left(_unordered(hi))
    for _ in range(66):
        active = pos_lo + 1 < pos_hi
        if not active.any():
            break
        # The midpoint without int64 overflow (the key range spans nearly 2**64).
        mid = pos_lo // 2 + pos_hi // 2 + (pos_lo % 2 + pos_hi % 2) // 2
        m_left = left(_unordered(mid))
        # increasing: left(x) is true then false; keep pos_lo on a true side.
        go_up = np.where(increasing, m_left, ~m_left)
        pos_lo = np.where(active & go_up, mid, pos_lo)
        pos_hi = np.where(active & ~go_up, mid, pos_hi)
    inf = np.inf
    threshold = np.where(
        increasing,
        np.where(ok_lo, np.where(ok_hi, inf, _unordered(pos_lo)), -inf),
        np.where(ok_hi, np.where(ok_lo, -inf, _unordered(pos_hi)), inf),
    )
    modes = np.where(
        increasing, "BranchOnValueLessThanEqual", "BranchOnValueGreaterThanEqual"
    ).astype(object)
    return threshold, modes


def _add_trees(builder: Any, step: TreeEnsemble, thresholds: np.ndarray, modes: np.ndarray) -> None:
    feature = step.feature.tolist()
    threshold = thresholds.tolist()
    mode = modes.tolist()
    left, right = step.left.tolist(), step.right.tolist()
    missing = step.missing_left.tolist()
    leaves = step.leaf_values.astype(np.float64)
    if step.aggregation is Aggregation.MEAN:
        leaves = leaves / step.n_trees  # Core ML adds leaves: pre-divide each by n_trees
    leaf_rows = leaves.tolist()
    width = step.leaf_width
    for t, root in enumerate(step.roots.tolist()):
        off = int(step.tree_offset[t])
        ids = iter(range(1 << 62))
        stack = [(root, next(ids))]
        while stack:  # depth-first, no recursion; node ids in visiting order
            ref, nid = stack.pop()
            if ref < 0:
                row = leaf_rows[~ref]
                builder.add_leaf_node(t, nid, {off + j: row[j] for j in range(width)})
                continue
            true_id, false_id = next(ids), next(ids)
            builder.add_branch_node(
                t,
                nid,
                feature[ref],
                threshold[ref],
                mode[ref],
                true_id,
                false_id,
                missing_value_tracks_true_child=bool(missing[ref]),
            )
            stack.append((right[ref], false_id))
            stack.append((left[ref], true_id))


# --------------------------------------------------------------------------- neural network
_ACTIVATION = {
    Activation.RELU: "RELU",
    Activation.TANH: "TANH",
    Activation.LOGISTIC: "SIGMOID",
}


def _nn_spec(ct: Any, model: Model, steps: list[Any]) -> tuple[Any, str]:
    from coremltools.models.neural_network import NeuralNetworkBuilder

    for i, s in enumerate(steps):
        if isinstance(s, Impute):
            raise _refuse(f"an imputer is supported only as the first step (found at step {i})")
        if not isinstance(s, Affine | Linear | Dense | QuantizedDense):
            raise _refuse(f"step {type(s).__name__} has no Core ML neural-network form")
    _nn_link_supported(model)
    dt = _datatypes(ct)
    n_in = model.n_features
    classification = model.task is Task.CLASSIFICATION
    k = model.n_classes if classification else model.n_outputs
    out_name = PROBA_NAME if classification else PREDICTION_NAME
    builder = NeuralNetworkBuilder(
        [(INPUT_NAME, dt.Array(n_in))],
        [(out_name, dt.Array(k))],
        mode="classifier" if classification else "regressor",
    )
    version = 1
    blob = INPUT_NAME
    for i, step in enumerate(steps):
        blob, v = _add_step(builder, step, blob, f"step{i}")
        version = max(version, v)
    _add_link(builder, model, blob, out_name)
    if classification:
        builder.set_class_labels(
            _labels(model), predicted_feature_name=LABEL_NAME, prediction_blob=out_name
        )
    spec = builder.spec
    # float16 weights need spec 2 (iOS 11.2), quantized weights spec 3 (iOS 12).
    spec.specificationVersion = max(int(spec.specificationVersion), version)
    return spec, "DOUBLE"


def _nn_link_supported(model: Model) -> None:
    link, k = model.link, model.n_outputs
    if model.task is Task.REGRESSION:
        ok = link in (Link.IDENTITY, Link.EXP)
    else:
        ok = (
            link is Link.SOFTMAX
            or (link is Link.LOGISTIC and k == 1)
            or (link is Link.IDENTITY and k == model.n_classes)
        )
    if ok:
        return
    if link is Link.NONE:
        why = (
            "the model has no probabilities (its scores are margins), and Core ML "
            "classifiers report class probabilities"
        )
    else:
        why = (
            "its probability rule has no exact Core ML neural-network form (Core ML's "
            "inverse/hard-sigmoid layers are not specified precisely enough to claim parity)"
        )
    raise _refuse(f"link {link.value!r}: {why}; {_ALTERNATIVES}")


def _add_step(builder: Any, step: Any, blob: str, name: str) -> tuple[str, int]:
    out = f"{name}_out"
    if isinstance(step, Affine):
        off = step.offset.astype(np.float64)
        sc = step.scale.astype(np.float64)
        if step.order is AffineOrder.SUBTRACT_DIVIDE:  # (x - o) / s = x * (1/s) + (-o/s)
            scale, bias = 1.0 / sc, -off / sc
        else:  # x * s + o
            scale, bias = sc, off
        n = step.n_inputs
        builder.add_scale(
            name,
            scale.astype(np.float32),
            bias.astype(np.float32),
            True,
            blob,
            out,
            shape_scale=[n],
            shape_bias=[n],
        )
        return out, 1
    if isinstance(step, QuantizedDense):
        ver = _add_quantized(builder, step, blob, f"{name}_linear" if _act(step) else out, name)
    else:
        w = np.ascontiguousarray(step.weights.T)  # Core ML stores [C_out, C_in]
        b = step.bias
        target = f"{name}_linear" if _act(step) else out
        builder.add_inner_product(
            name, _f32(w), _f32(b), step.n_inputs, step.n_outputs, True, blob, target
        )
        ver = 1
        if w.dtype == np.float16:
            _to_float16(builder.spec, name, w, b)
            ver = 2
    act = _act(step)
    if act:
        builder.add_activation(f"{name}_act", act, f"{name}_linear", out)
    return out, ver


def _act(step: Any) -> str | None:
    activation = getattr(step, "activation", Activation.IDENTITY)
    return _ACTIVATION.get(activation)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _layer(spec: Any, name: str) -> Any:
    nn = _nn(spec)
    return next(layer for layer in nn.layers if layer.name == name)


def _nn(spec: Any) -> Any:
    kind = spec.WhichOneof("Type")
    return getattr(spec, kind)


def _to_float16(spec: Any, name: str, w: np.ndarray, b: np.ndarray) -> None:
    """Store a float16 layer's weights and bias as float16Value (exact, no widening)."""
    params = _layer(spec, name).innerProduct
    params.weights.ClearField("floatValue")
    params.weights.float16Value = np.ascontiguousarray(w, dtype="<f2").tobytes()
    if b.dtype == np.float16:
        params.bias.ClearField("floatValue")
        params.bias.float16Value = np.ascontiguousarray(b, dtype="<f2").tobytes()


def _add_quantized(builder: Any, step: QuantizedDense, blob: str, target: str, name: str) -> int:
    if step.input_bits != 0:
        raise _refuse(
            "dynamic int8 quantization (input_bits=8) quantizes each input row with fedge's "
            "rounding rule; Core ML's int8DynamicQuantize does not specify its rule, so "
            f"parity cannot be claimed. Use static int8 weights, or {_ALTERNATIVES}"
        )
    if step.weights.dtype != np.int8:
        raise _refuse(
            f"{step.weights.dtype} weights: Core ML neural networks quantize weights to at "
            f"most 8 bits; quantize to int8 or float16, or {_ALTERNATIVES}"
        )
    deq = step.dequantized()  # float32 (q - zp) * scale: what a device multiplies by
    table = np.unique(deq)
    if table.size > 256:
        raise _refuse(
            f"per-channel int8 weights take {table.size} distinct values; Core ML's exact "
            "8-bit form is one look-up table of 256 float32 values per weight matrix (its "
            "linear quantization rounds scale * q + bias differently from fedge's "
            "(q - zero_point) * scale). Quantize with ModelQuantizer(per_channel=False), "
            f"or {_ALTERNATIVES}"
        )
    lut = np.zeros(256, dtype=np.float32)
    lut[: table.size] = table
    index = np.searchsorted(table, deq.T).astype(np.uint8)  # [C_out, C_in], row-major
    builder.add_inner_product(
        name,
        index.tobytes(),
        step.bias.astype(np.float32),
        step.n_inputs,
        step.n_outputs,
        True,
        blob,
        target,
        is_quantized_weight=True,
        quantization_type="lut",
        nbits=8,
        quant_lut=lut,
    )
    return 3


def _add_link(builder: Any, model: Model, blob: str, out: str) -> None:
    link = model.link
    if model.task is Task.REGRESSION:
        if link is Link.EXP:
            builder.add_unary("link_exp", blob, out, "exp")
        else:
            builder.add_activation("link_identity", "LINEAR", blob, out, params=[1.0, 0.0])
        return
    if link is Link.LOGISTIC:
        # [0, s] by an exact 1 -> 2 inner product, then softmax: [1 - sigmoid(s), sigmoid(s)].
        builder.add_inner_product(
            "link_pair",
            np.array([[0.0], [1.0]], dtype=np.float32),
            np.zeros(2, dtype=np.float32),
            1,
            2,
            True,
            blob,
            "link_pair_out",
        )
        builder.add_softmax("link_softmax", "link_pair_out", out)
    elif link is Link.SOFTMAX:
        builder.add_softmax("link_softmax", blob, out)
    else:  # identity: the scores are the probabilities
        builder.add_activation("link_identity", "LINEAR", blob, out, params=[1.0, 0.0])


# --------------------------------------------------------------------------- pipeline
def _pipeline(ct: Any, model: Model, impute: Impute, core: Any, core_dtype: str) -> Any:
    """Core ML imputer (NaN -> fill) followed by ``core``, as a pipeline classifier/regressor."""
    from coremltools.models import pipeline as ct_pipeline

    dt = _datatypes(ct)
    n = model.n_features
    fill = impute.fill.astype(np.float64)
    if core_dtype == "FLOAT32":
        # The trees compare float32 inputs: rounding the fill values here gives exactly what
        # the source compares (a float32 input stays float32 after imputation).
        fill = fill.astype(np.float32).astype(np.float64)
    imp = ct.proto.Model_pb2.Model()
    imp.specificationVersion = 1
    src = imp.description.input.add()
    src.name = INPUT_NAME
    src.type.multiArrayType.shape.append(n)
    _set_array_type(src, ct, core_dtype)
    dst = imp.description.output.add()
    dst.name = "imputed"
    dst.type.multiArrayType.shape.append(n)
    _set_array_type(dst, ct, "DOUBLE")
    imp.imputer.imputedDoubleArray.vector.extend(fill.tolist())
    imp.imputer.replaceDoubleValue = float("nan")
    core.description.input[0].name = "imputed"
    _set_array_type(core.description.input[0], ct, "DOUBLE")
    _rename_nn_input(core, INPUT_NAME, "imputed")
    inputs = [(INPUT_NAME, dt.Array(n))]
    outputs = [(o.name, o.type) for o in core.description.output]
    if model.task is Task.CLASSIFICATION:
        pipe = ct_pipeline.PipelineClassifier(inputs, _labels(model))
    else:
        pipe = ct_pipeline.PipelineRegressor(inputs, [(PREDICTION_NAME, dt.Double())])
    spec = pipe.spec
    spec.description.ClearField("output")
    for name, ftype in outputs:
        o = spec.description.output.add()
        o.name = name
        o.type.CopyFrom(ftype)
    spec.description.predictedFeatureName = core.description.predictedFeatureName
    spec.description.predictedProbabilitiesName = core.description.predictedProbabilitiesName
    _set_array_type(spec.description.input[0], ct, core_dtype)
    pipe.add_model(imp)
    pipe.add_model(core)
    body = spec.pipelineClassifier if model.task is Task.CLASSIFICATION else spec.pipelineRegressor
    body.pipeline.names.extend(["imputer", "model"])
    spec.specificationVersion = max(int(core.specificationVersion), 1)
    return spec


def _rename_nn_input(spec: Any, old: str, new: str) -> None:
    kind = spec.WhichOneof("Type")
    if not kind.startswith("neuralNetwork"):
        return
    for layer in getattr(spec, kind).layers:
        for i, name in enumerate(layer.input):
            if name == old:
                layer.input[i] = new


# --------------------------------------------------------------------------- description
def _describe(spec: Any, model: Model, name: str) -> None:
    meta = spec.description.metadata
    meta.shortDescription = name
    meta.author = "fedge"
    user = meta.userDefined
    user["fedge.task"] = model.task.value
    user["fedge.link"] = model.link.value
    user["fedge.n_features"] = str(model.n_features)
    if model.feature_names is not None:
        user["fedge.feature_names"] = json.dumps(list(model.feature_names))
    source = model.metadata.get("source")
    if isinstance(source, dict) and "estimator" in source:
        user["fedge.source"] = str(source["estimator"])
    user["fedge.verification"] = f"{VERIFIED_BY}; {NOT_VERIFIED}"
    spec.description.input[0].shortDescription = f"{model.n_features} features" + (
        "" if model.feature_names is None else ": " + ", ".join(model.feature_names)
    )
