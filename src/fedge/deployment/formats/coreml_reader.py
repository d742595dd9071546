"""An independent reader of Core ML model files (``.mlmodel``), evaluated in numpy.

Core ML runs only on macOS. To check a Core ML file on any machine, this module parses its
bytes itself (the protobuf wire format, with the field numbers of Apple's published
``Model.proto``, ``TreeEnsemble.proto``, ``NeuralNetwork.proto``, ``Imputer.proto``,
``FeatureTypes.proto`` and ``DataStructures.proto``) and evaluates the model it describes.
It imports neither coremltools nor fedge's Core ML writer, so a mistake in how the writer
(or coremltools' builders) fills the spec shows up as a difference, not as a shared bug.

What it evaluates (anything else raises :class:`~fedge.errors.ModelFormatError` naming the
part it does not read):

- ``treeEnsembleClassifier`` / ``treeEnsembleRegressor``: every node behaviour (``<=``,
  ``<``, ``>=``, ``>``, ``==``, ``!=``), ``missingValueTracksTrueChild`` for NaN, sparse
  leaf ``evaluationInfo``, ``basePredictionValue``, and the post-evaluation transforms
  ``NoTransform``, ``Classification_SoftMax``, ``Regression_Logistic`` and
  ``Classification_SoftMaxWithZeroClassReference``. Arithmetic in double (the spec's
  types); trees are summed in tree-id order. A classifier with one prediction dimension
  and two classes reports ``[1 - p, p]``.
- ``neuralNetworkClassifier`` / ``neuralNetworkRegressor`` / ``neuralNetwork`` over rank-1
  (channel) inputs: ``innerProduct`` (float32, float16, 8-bit look-up-table or linear
  quantized weights), ``activation`` (linear, ReLU, tanh, sigmoid), ``softmax``,
  ``scale``, ``bias``, ``add``, ``multiply`` and ``unary`` (exp), in float32 (Core ML's CPU
  precision; its GPU and Neural Engine may compute in float16).
- ``imputer`` (double arrays) and ``pipeline`` / ``pipelineClassifier`` /
  ``pipelineRegressor`` chaining the above.
- Classifier labels: the class with the largest probability, ties to the first class.

Inputs are rounded to the declared multiArray data type (FLOAT32 or DOUBLE) first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError, ModelFormatError

__all__ = ["CoreMLSpec", "Message", "read_coreml"]


# --------------------------------------------------------------------------- wire format
class Message:
    """One protobuf message: its fields by number, decoded lazily by the accessor used."""

    __slots__ = ("fields",)

    def __init__(self, data: bytes) -> None:
        self.fields: dict[int, list[tuple[int, Any]]] = {}
        _parse(memoryview(data), self.fields)

    def has(self, number: int) -> bool:
        return number in self.fields

    def _last(self, number: int) -> tuple[int, Any] | None:
        values = self.fields.get(number)
        return values[-1] if values else None

    def msg(self, number: int) -> Message | None:
        last = self._last(number)
        if last is None:
            return None
        _expect(last[0], 2, number)
        return Message(bytes(last[1]))

    def msgs(self, number: int) -> list[Message]:
        out = []
        for wt, value in self.fields.get(number, []):
            _expect(wt, 2, number)
            out.append(Message(bytes(value)))
        return out

    def uint(self, number: int, default: int = 0) -> int:
        last = self._last(number)
        if last is None:
            return default
        _expect(last[0], 0, number)
        return int(last[1])

    def flag(self, number: int) -> bool:
        return self.uint(number) != 0

    def double(self, number: int, default: float = 0.0) -> float:
        last = self._last(number)
        if last is None:
            return default
        _expect(last[0], 1, number)
        return float(np.frombuffer(last[1], dtype="<f8")[0])

    def float32(self, number: int, default: float = 0.0) -> np.float32:
        last = self._last(number)
        if last is None:
            return np.float32(default)
        _expect(last[0], 5, number)
        return np.frombuffer(last[1], dtype="<f4")[0]

    def string(self, number: int, default: str = "") -> str:
        last = self._last(number)
        if last is None:
            return default
        _expect(last[0], 2, number)
        return bytes(last[1]).decode("utf-8")

    def raw(self, number: int) -> bytes:
        last = self._last(number)
        if last is None:
            return b""
        _expect(last[0], 2, number)
        return bytes(last[1])

    def strings(self, number: int) -> list[str]:
        return [bytes(v).decode("utf-8") for wt, v in self.fields.get(number, []) if wt == 2]

    def doubles(self, number: int) -> np.ndarray:
        return self._fixed(number, "<f8", 1)

    def floats(self, number: int) -> np.ndarray:
        return self._fixed(number, "<f4", 5)

    def _fixed(self, number: int, dtype: str, scalar_wt: int) -> np.ndarray:
        parts = []
        for wt, value in self.fields.get(number, []):
            if wt == 2:  # packed
                parts.append(np.frombuffer(bytes(value), dtype=dtype))
            else:
                _expect(wt, scalar_wt, number)
                parts.append(np.frombuffer(bytes(value), dtype=dtype))
        if not parts:
            return np.zeros(0, dtype=dtype)
        return np.concatenate(parts)

    def varints(self, number: int, signed: bool = False) -> list[int]:
        out: list[int] = []
        for wt, value in self.fields.get(number, []):
            if wt == 2:  # packed
                buf, pos = memoryview(bytes(value)), 0
                while pos < len(buf):
                    v, pos = _varint(buf, pos)
                    out.append(v)
            else:
                _expect(wt, 0, number)
                out.append(int(value))
        if signed:
            out = [v - (1 << 64) if v >= 1 << 63 else v for v in out]
        return out

    def oneof(self, numbers: dict[int, str]) -> tuple[str | None, Message | None]:
        present = [n for n in numbers if n in self.fields]
        if not present:
            return None, None
        n = present[-1]
        return numbers[n], self.msg(n)


def _expect(wt: int, want: int, number: int) -> None:
    if wt != want:
        raise ModelFormatError(
            f"Core ML file: field {number} has wire type {wt}, expected {want} (corrupt file?)"
        )


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelFormatError("Core ML file: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelFormatError("Core ML file: varint longer than 64 bits")


def _parse(buf: memoryview, fields: dict[int, list[tuple[int, Any]]]) -> None:
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wt = key >> 3, key & 7
        if wt == 0:
            value, pos = _varint(buf, pos)
        elif wt == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wt == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wt == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ModelFormatError(f"Core ML file: unsupported wire type {wt} (field {number})")
        if pos > end or number == 0:
            raise ModelFormatError("Core ML file: truncated or corrupt protobuf message")
        fields.setdefault(number, []).append((wt, value))


# --------------------------------------------------------------------------- schema numbers
# Model.proto: Model
_MODEL_TYPES = {
    200: "pipelineClassifier",
    201: "pipelineRegressor",
    202: "pipeline",
    300: "glmRegressor",
    301: "supportVectorRegressor",
    302: "treeEnsembleRegressor",
    303: "neuralNetworkRegressor",
    304: "bayesianProbitRegressor",
    400: "glmClassifier",
    401: "supportVectorClassifier",
    402: "treeEnsembleClassifier",
    403: "neuralNetworkClassifier",
    404: "kNearestNeighborsClassifier",
    500: "neuralNetwork",
    501: "itemSimilarityRecommender",
    502: "mlProgram",
    555: "customModel",
    556: "linkedModel",
    560: "classConfidenceThresholding",
    600: "oneHotEncoder",
    601: "imputer",
    602: "featureVectorizer",
    603: "dictVectorizer",
    604: "scaler",
    606: "categoricalMapping",
    607: "normalizer",
    609: "arrayFeatureExtractor",
    610: "nonMaximumSuppression",
}
_SPEC_VERSION, _DESCRIPTION = 1, 2
# ModelDescription / FeatureDescription / FeatureType / ArrayFeatureType
_D_INPUT, _D_OUTPUT, _D_PREDICTED, _D_PROBA = 1, 10, 11, 12
_F_NAME, _F_TYPE = 1, 3
_T_MULTIARRAY = 5
_A_SHAPE, _A_DTYPE = 1, 2
_ARRAY_DTYPES = {65568: np.float32, 65600: np.float64, 65552: np.float16, 131104: np.int32}
# TreeEnsemble.proto
_TE_PARAMS, _TE_TRANSFORM, _STRING_LABELS, _INT64_LABELS = 1, 2, 100, 101
_TP_NODES, _TP_DIMS, _TP_BASE = 1, 2, 3
_N_TREE, _N_NODE, _N_BEHAVIOR, _N_FEATURE, _N_VALUE = 1, 2, 3, 10, 11
_N_TRUE, _N_FALSE, _N_MISSING_TRUE, _N_EVAL = 12, 13, 14, 20
_LEAF = 6
_BRANCH_OPS: dict[int, Callable[[np.ndarray, float], np.ndarray]] = {
    0: np.less_equal,
    1: np.less,
    2: np.greater_equal,
    3: np.greater,
    4: np.equal,
    5: np.not_equal,
}
_TRANSFORMS = {
    0: "NoTransform",
    1: "Classification_SoftMax",
    2: "Regression_Logistic",
    3: "Classification_SoftMaxWithZeroClassReference",
}
# NeuralNetwork.proto
_NN_LAYERS, _NN_SHAPE_MAPPING, _NN_PROBA_LAYER = 1, 5, 200
_L_NAME, _L_INPUT, _L_OUTPUT = 1, 2, 3
_LAYER_TYPES = {
    130: "activation",
    140: "innerProduct",
    175: "softmax",
    220: "unary",
    230: "add",
    231: "multiply",
    245: "scale",
    250: "bias",
}
# Imputer.proto
_IMP_DOUBLE_VALUE, _IMP_DOUBLE_ARRAY, _IMP_REPLACE_DOUBLE = 1, 4, 11


# --------------------------------------------------------------------------- the spec
@dataclass
class CoreMLSpec:
    """A parsed Core ML model that can be evaluated on rows of features."""

    message: Message
    specification_version: int
    kind: str
    input_name: str
    input_dtype: type
    n_features: int
    classes: np.ndarray | None
    label_name: str | None
    proba_name: str | None
    output_names: list[str] = field(default_factory=list)

    def evaluate(self, X: Any) -> dict[str, np.ndarray]:
        """``{"label", "probabilities", "classes"}`` for classifiers (probability columns in
        class order), ``{"prediction"}`` for regressors ((n,) for one value, else (n, k))."""
        rows = _rows(X, self.n_features)
        env: dict[str, Any] = {self.input_name: _cast(rows, self.input_dtype)}
        _run_model(self.message, env)
        if self.classes is not None:
            assert self.label_name is not None and self.proba_name is not None
            return {
                "label": env[self.label_name],
                "probabilities": env[self.proba_name],
                "classes": self.classes,
            }
        out = np.asarray(env[self.output_names[0]], dtype=np.float64)
        out = out.reshape(out.shape[0], -1)
        return {"prediction": out[:, 0] if out.shape[1] == 1 else out}

    def predict(self, X: Any) -> np.ndarray:
        got = self.evaluate(X)
        return got["label"] if "label" in got else got["prediction"]

    def predict_proba(self, X: Any) -> np.ndarray:
        got = self.evaluate(X)
        if "probabilities" not in got:
            raise ModelFormatError("this Core ML model is a regressor: it has no probabilities")
        return got["probabilities"]


def read_coreml(source: bytes | str | Path) -> CoreMLSpec:
    """Parse a Core ML model from a ``.mlmodel`` path or its bytes."""
    data = source if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    root = Message(bytes(data))
    version = root.uint(_SPEC_VERSION)
    desc = root.msg(_DESCRIPTION)
    if desc is None or not desc.has(_D_INPUT):
        raise ModelFormatError("Core ML file: the model has no description of its inputs")
    inputs = desc.msgs(_D_INPUT)
    if len(inputs) != 1:
        raise ModelFormatError(f"Core ML file: the reader takes one input, found {len(inputs)}")
    name, dtype, shape = _feature(inputs[0])
    if len(shape) != 1:
        raise ModelFormatError(f"Core ML file: input {name!r} must be a 1-D multiArray")
    kind, body = root.oneof(_MODEL_TYPES)
    if kind is None or body is None:
        raise ModelFormatError("Core ML file: no model type is set")
    label_name = desc.string(_D_PREDICTED) or None
    proba_name = desc.string(_D_PROBA) or None
    classes = _classes_of(kind, body)
    if classes is not None and (label_name is None or proba_name is None):
        raise ModelFormatError("Core ML file: a classifier must name its label and probabilities")
    return CoreMLSpec(
        message=root,
        specification_version=version,
        kind=_kind_name(kind, body),
        input_name=name,
        input_dtype=dtype,
        n_features=shape[0],
        classes=classes,
        label_name=label_name,
        proba_name=proba_name,
        output_names=[_feature_name(o) for o in desc.msgs(_D_OUTPUT)],
    )


def _kind_name(kind: str, body: Message) -> str:
    if not kind.startswith("pipeline"):
        return kind
    pipe = body if kind == "pipeline" else body.msg(1)
    inner = [] if pipe is None else [_MODEL_TYPES.get(_type_number(m), "?") for m in pipe.msgs(1)]
    return f"{kind}[{', '.join(inner)}]"


def _type_number(model: Message) -> int:
    present = [n for n in _MODEL_TYPES if model.has(n)]
    return present[-1] if present else -1


def _feature_name(feature: Message) -> str:
    return feature.string(_F_NAME)


def _feature(feature: Message) -> tuple[str, type, list[int]]:
    name = feature.string(_F_NAME)
    ftype = feature.msg(_F_TYPE)
    arr = None if ftype is None else ftype.msg(_T_MULTIARRAY)
    if arr is None:
        raise ModelFormatError(f"Core ML file: feature {name!r} is not a multiArray")
    code = arr.uint(_A_DTYPE)
    if code not in _ARRAY_DTYPES:
        raise ModelFormatError(f"Core ML file: feature {name!r} has array data type {code}")
    return name, _ARRAY_DTYPES[code], arr.varints(_A_SHAPE, signed=True)


def _classes_of(kind: str, body: Message) -> np.ndarray | None:
    if kind in ("treeEnsembleClassifier", "neuralNetworkClassifier"):
        return _labels(body)
    if kind == "pipelineClassifier":
        pipe = body.msg(1)
        models = [] if pipe is None else pipe.msgs(1)
        if not models:
            raise ModelFormatError("Core ML file: an empty pipeline")
        last = models[-1]
        k, inner = last.oneof(_MODEL_TYPES)
        if inner is None or k is None:
            raise ModelFormatError("Core ML file: a pipeline model without a type")
        return _classes_of(k, inner)
    return None


def _labels(body: Message) -> np.ndarray:
    strings = body.msg(_STRING_LABELS)
    if strings is not None:
        return np.array(strings.strings(1), dtype=str)
    ints = body.msg(_INT64_LABELS)
    if ints is not None:
        return np.array(ints.varints(1, signed=True), dtype=np.int64)
    raise ModelFormatError("Core ML file: a classifier without class labels")


def _rows(X: Any, n_features: int) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"X must be numeric: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise InvalidInputError(
            f"X must have shape (n_rows, {n_features}) for this Core ML model, got {arr.shape}"
        )
    return arr


def _cast(values: np.ndarray, dtype: type) -> np.ndarray:
    """Round to the declared array type; kept as float64 holding those values."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float64).astype(dtype).astype(np.float64)


# --------------------------------------------------------------------------- evaluation
def _run_model(model: Message, env: dict[str, Any]) -> None:
    kind, body = model.oneof(_MODEL_TYPES)
    if kind is None or body is None:
        raise ModelFormatError("Core ML file: a model without a type")
    desc = model.msg(_DESCRIPTION)
    if desc is None:
        raise ModelFormatError(f"Core ML file: the {kind} model has no description")
    inputs = desc.msgs(_D_INPUT)
    for feature in inputs:  # Core ML hands each model its inputs as declared
        name, dtype, _ = _feature(feature)
        if name not in env:
            raise ModelFormatError(f"Core ML file: input {name!r} of a {kind} is never produced")
        env[name] = _cast(env[name], dtype)
    runner = _RUNNERS.get(kind)
    if runner is None:
        raise ModelFormatError(
            f"Core ML file: fedge's reader does not evaluate {kind} models "
            f"(it reads {', '.join(sorted(_RUNNERS))})"
        )
    runner(body, desc, env)


def _run_imputer(body: Message, desc: Message, env: dict[str, Any]) -> None:
    (name,) = [_feature_name(f) for f in desc.msgs(_D_INPUT)]
    out = _feature_name(desc.msgs(_D_OUTPUT)[0])
    x = np.array(env[name], dtype=np.float64)
    if body.has(_IMP_DOUBLE_ARRAY):
        fill = body.msg(_IMP_DOUBLE_ARRAY).doubles(1)  # type: ignore[union-attr]
        if fill.shape[0] != x.shape[1]:
            raise ModelFormatError(
                f"Core ML file: imputer has {fill.shape[0]} values for {x.shape[1]} features"
            )
    elif body.has(_IMP_DOUBLE_VALUE):
        fill = np.full(x.shape[1], body.double(_IMP_DOUBLE_VALUE))
    else:
        raise ModelFormatError("Core ML file: the reader takes imputers of double values only")
    # The value to replace: replaceDoubleValue when set (NaN matches NaN), else NaN.
    replace = body.double(_IMP_REPLACE_DOUBLE, float("nan"))
    missing = np.isnan(x) if np.isnan(replace) else x == replace
    env[out] = np.where(missing, fill[None, :], x)


# ---- trees
@dataclass
class _Tree:
    root: int
    behavior: np.ndarray
    feature: np.ndarray
    value: np.ndarray
    true: np.ndarray
    false: np.ndarray
    missing_true: np.ndarray
    leaf: np.ndarray  # (n_nodes, dims) contributions (zero rows for branches)


def _read_trees(params: Message) -> tuple[list[_Tree], int, np.ndarray]:
    dims = params.uint(_TP_DIMS)
    base = params.doubles(_TP_BASE)
    if dims == 0:
        raise ModelFormatError("Core ML file: numPredictionDimensions is 0")
    if base.size == 0:
        base = np.zeros(dims)
    if base.shape[0] != dims:
        raise ModelFormatError(
            f"Core ML file: {base.shape[0]} base prediction values for {dims} dimensions"
        )
    by_tree: dict[int, list[Message]] = {}
    for node in params.msgs(_TP_NODES):
        by_tree.setdefault(node.uint(_N_TREE), []).append(node)
    trees = [_read_tree(t, nodes, dims) for t, nodes in sorted(by_tree.items())]
    return trees, dims, base


def _read_tree(tree_id: int, nodes: list[Message], dims: int) -> _Tree:
    ids = [n.uint(_N_NODE) for n in nodes]
    index = {nid: i for i, nid in enumerate(ids)}
    if len(index) != len(ids):
        raise ModelFormatError(f"Core ML file: tree {tree_id} repeats a node id")
    n = len(nodes)
    behavior = np.array([nd.uint(_N_BEHAVIOR) for nd in nodes], dtype=np.int64)
    feature = np.zeros(n, dtype=np.int64)
    value = np.zeros(n, dtype=np.float64)
    true = np.full(n, -1, dtype=np.int64)
    false = np.full(n, -1, dtype=np.int64)
    missing_true = np.zeros(n, dtype=bool)
    leaf = np.zeros((n, dims), dtype=np.float64)
    children: list[int] = []
    for i, nd in enumerate(nodes):
        if behavior[i] == _LEAF:
            for info in nd.msgs(_N_EVAL):
                j = info.uint(1)
                if j >= dims:
                    raise ModelFormatError(
                        f"Core ML file: tree {tree_id} leaf writes dimension {j} of {dims}"
                    )
                leaf[i, j] += info.double(2)
            continue
        if int(behavior[i]) not in _BRANCH_OPS:
            raise ModelFormatError(f"Core ML file: unknown node behaviour {behavior[i]}")
        feature[i] = nd.uint(_N_FEATURE)
        value[i] = nd.double(_N_VALUE)
        missing_true[i] = nd.flag(_N_MISSING_TRUE)
        for arr, num in ((true, _N_TRUE), (false, _N_FALSE)):
            child = nd.uint(num)
            if child not in index:
                raise ModelFormatError(
                    f"Core ML file: tree {tree_id} node {ids[i]} points to missing node {child}"
                )
            arr[i] = index[child]
            children.append(index[child])
    roots = set(range(n)) - set(children)
    if len(roots) != 1 or len(children) != len(set(children)):
        raise ModelFormatError(
            f"Core ML file: tree {tree_id} is not a tree ({len(roots)} roots, "
            f"{len(children) - len(set(children))} nodes with several parents)"
        )
    return _Tree(roots.pop(), behavior, feature, value, true, false, missing_true, leaf)


def _walk(tree: _Tree, X: np.ndarray) -> np.ndarray:
    """The leaf (node index) each row reaches; one tree level per iteration."""
    node = np.full(X.shape[0], tree.root, dtype=np.int64)
    rows = np.arange(X.shape[0])
    for _ in range(tree.behavior.shape[0] + 1):
        active = tree.behavior[node] != _LEAF
        if not active.any():
            return node
        r, cur = rows[active], node[active]
        f = tree.feature[cur]
        if np.any(f >= X.shape[1]):
            raise ModelFormatError("Core ML file: a branch reads a feature beyond the input")
        x = X[r, f]
        go = np.zeros(cur.shape[0], dtype=bool)
        for op in np.unique(tree.behavior[cur]):
            m = tree.behavior[cur] == op
            go[m] = _BRANCH_OPS[int(op)](x[m], tree.value[cur[m]])
        nan = np.isnan(x)
        go[nan] = tree.missing_true[cur[nan]]
        node[active] = np.where(go, tree.true[cur], tree.false[cur])
    raise ModelFormatError("Core ML file: a tree has a cycle")


def _ensemble_scores(params: Message, X: np.ndarray) -> np.ndarray:
    trees, dims, base = _read_trees(params)
    acc = np.broadcast_to(base, (X.shape[0], dims)).copy()
    for tree in trees:
        acc += tree.leaf[_walk(tree, X)]
    return acc


def _transform(code: int, scores: np.ndarray) -> np.ndarray:
    name = _TRANSFORMS.get(code)
    with np.errstate(over="ignore", under="ignore"):
        if name == "NoTransform":
            return scores
        if name == "Regression_Logistic":
            return _sigmoid(scores)
        if name == "Classification_SoftMax":
            return _softmax(scores)
        if name == "Classification_SoftMaxWithZeroClassReference":
            zeros = np.zeros((scores.shape[0], 1), dtype=scores.dtype)
            return _softmax(np.concatenate([zeros, scores], axis=1))
    raise ModelFormatError(f"Core ML file: unknown post-evaluation transform {code}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        one = z.dtype.type(1)
        return one / (one + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _run_tree_classifier(body: Message, desc: Message, env: dict[str, Any]) -> None:
    x = _single_input(desc, env)
    params = body.msg(_TE_PARAMS)
    if params is None:
        raise ModelFormatError("Core ML file: a tree ensemble without parameters")
    scores = _transform(body.uint(_TE_TRANSFORM), _ensemble_scores(params, x))
    _classify(body, desc, env, scores)


def _run_tree_regressor(body: Message, desc: Message, env: dict[str, Any]) -> None:
    x = _single_input(desc, env)
    params = body.msg(_TE_PARAMS)
    if params is None:
        raise ModelFormatError("Core ML file: a tree ensemble without parameters")
    scores = _transform(body.uint(_TE_TRANSFORM), _ensemble_scores(params, x))
    env[_feature_name(desc.msgs(_D_OUTPUT)[0])] = scores


def _single_input(desc: Message, env: dict[str, Any]) -> np.ndarray:
    inputs = desc.msgs(_D_INPUT)
    if len(inputs) != 1:
        raise ModelFormatError("Core ML file: the reader takes models with one input array")
    return np.asarray(env[_feature_name(inputs[0])])


def _classify(body: Message, desc: Message, env: dict[str, Any], scores: np.ndarray) -> None:
    classes = _labels(body)
    k = classes.shape[0]
    if scores.shape[1] == 1 and k == 2:
        p = scores[:, 0]
        proba = np.stack([1 - p, p], axis=1)
    elif scores.shape[1] == k:
        proba = scores
    else:
        raise ModelFormatError(f"Core ML file: {scores.shape[1]} class scores for {k} class labels")
    label_name = desc.string(_D_PREDICTED)
    proba_name = desc.string(_D_PROBA)
    env[label_name] = classes[np.argmax(proba, axis=1)]  # ties: the first class
    env[proba_name] = np.asarray(proba, dtype=np.float64)


# ---- neural networks
def _weights(wp: Message | None, count: int, out_channels: int, what: str) -> np.ndarray:
    """A WeightParams message as float32 values (row-major), exactly as stored."""
    if wp is None:
        raise ModelFormatError(f"Core ML file: {what} has no weights")
    if wp.has(1):
        values = wp.floats(1).astype(np.float32)
    elif wp.has(2):
        values = np.frombuffer(wp.raw(2), dtype="<f2").astype(np.float32)
    elif wp.has(30):
        values = _dequantize(wp, count, out_channels, what)
    elif wp.has(31):
        raise ModelFormatError(f"Core ML file: {what} has int8 (dynamic) weights; not read")
    else:
        values = np.zeros(0, dtype=np.float32)
    if values.shape[0] != count:
        raise ModelFormatError(f"Core ML file: {what} has {values.shape[0]} values, needs {count}")
    return values


def _dequantize(wp: Message, count: int, out_channels: int, what: str) -> np.ndarray:
    q = wp.msg(40)
    if q is None:
        raise ModelFormatError(f"Core ML file: {what} has raw weights without quantization")
    bits = q.uint(1)
    if bits != 8:
        raise ModelFormatError(f"Core ML file: {what} uses {bits}-bit weights; the reader reads 8")
    idx = np.frombuffer(wp.raw(30), dtype=np.uint8)
    if idx.shape[0] != count:
        raise ModelFormatError(f"Core ML file: {what} has {idx.shape[0]} quantized weights")
    lut = q.msg(102)
    if lut is not None:
        table = lut.floats(1).astype(np.float32)
        if table.shape[0] != 256:
            raise ModelFormatError(f"Core ML file: {what}'s look-up table has {table.shape[0]}")
        return table[idx]
    lin = q.msg(101)
    if lin is None:
        raise ModelFormatError(f"Core ML file: {what} has an unknown quantization type")
    scale, bias = lin.floats(1).astype(np.float32), lin.floats(2).astype(np.float32)
    per = count // max(out_channels, 1)
    rows = idx.astype(np.float32).reshape(out_channels, per)
    s = scale.reshape(-1, 1) if scale.shape[0] > 1 else scale
    b = bias.reshape(-1, 1) if bias.shape[0] > 1 else bias
    return (rows * s + b).ravel()


def _layer_inner_product(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    c_in, c_out = p.uint(1), p.uint(2)
    if p.flag(22):
        raise ModelFormatError(f"Core ML file: layer {name!r} uses int8DynamicQuantize; not read")
    (x,) = xs
    if x.shape[1] != c_in:
        raise ModelFormatError(f"Core ML file: layer {name!r} takes {c_in} inputs, gets {x.shape}")
    w = _weights(p.msg(20), c_in * c_out, c_out, f"layer {name!r}").reshape(c_out, c_in)
    y = x @ w.T
    if p.flag(10):
        y = y + _weights(p.msg(21), c_out, c_out, f"layer {name!r} bias")
    return y


def _layer_activation(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    (x,) = xs
    kind, params = p.oneof({5: "linear", 10: "ReLU", 30: "tanh", 40: "sigmoid"})
    if kind is None or params is None:
        raise ModelFormatError(f"Core ML file: layer {name!r} has an activation not read here")
    if kind == "linear":
        return params.float32(1) * x + params.float32(2)
    if kind == "ReLU":
        return np.maximum(x, np.float32(0))
    if kind == "tanh":
        return np.tanh(x)
    return _sigmoid(x)


def _layer_softmax(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    (x,) = xs
    return _softmax(x)


def _layer_scale(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    (x,) = xs
    c = x.shape[1]
    shape = p.varints(1)
    n = int(np.prod(shape)) if shape else 1
    if n not in (1, c):
        raise ModelFormatError(f"Core ML file: layer {name!r} scales {n} of {c} channels")
    y = x * _weights(p.msg(2), n, n, f"layer {name!r} scale")
    if p.flag(3):
        bshape = p.varints(4)
        nb = int(np.prod(bshape)) if bshape else 1
        y = y + _weights(p.msg(5), nb, nb, f"layer {name!r} bias")
    return y


def _layer_bias(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    (x,) = xs
    shape = p.varints(1)
    n = int(np.prod(shape)) if shape else 1
    return x + _weights(p.msg(2), n, n, f"layer {name!r} bias")


def _layer_add(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    if len(xs) == 1:
        return xs[0] + p.float32(1)
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _layer_multiply(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    if len(xs) == 1:
        return xs[0] * p.float32(1)
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def _layer_unary(p: Message, xs: list[np.ndarray], name: str) -> np.ndarray:
    (x,) = xs
    op = p.uint(1)
    scale, shift = p.float32(5), p.float32(4)
    if op != 4:
        raise ModelFormatError(f"Core ML file: layer {name!r}: unary operation {op} not read")
    if scale == 0:
        raise ModelFormatError(
            f"Core ML file: layer {name!r} has scale 0 (unset); its meaning is ambiguous"
        )
    with np.errstate(over="ignore"):
        return np.exp(scale * x + shift)


_LAYER_EVAL: dict[str, Callable[[Message, list[np.ndarray], str], np.ndarray]] = {
    "innerProduct": _layer_inner_product,
    "activation": _layer_activation,
    "softmax": _layer_softmax,
    "scale": _layer_scale,
    "bias": _layer_bias,
    "add": _layer_add,
    "multiply": _layer_multiply,
    "unary": _layer_unary,
}


def _run_layers(body: Message, desc: Message, env: dict[str, Any]) -> dict[str, np.ndarray]:
    if body.uint(_NN_SHAPE_MAPPING) != 0:
        raise ModelFormatError("Core ML file: the reader takes rank-5 (legacy) array mapping only")
    blobs: dict[str, np.ndarray] = {}
    for feature in desc.msgs(_D_INPUT):
        name = _feature_name(feature)
        blobs[name] = np.asarray(env[name], dtype=np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for layer in body.msgs(_NN_LAYERS):
            name = layer.string(_L_NAME)
            kind, params = layer.oneof(dict(_LAYER_TYPES))
            if kind is None or params is None:
                present = sorted(n for n in layer.fields if n >= 100)
                raise ModelFormatError(
                    f"Core ML file: layer {name!r} has a type the reader does not evaluate "
                    f"(field {present}); it reads {', '.join(sorted(_LAYER_EVAL))}"
                )
            inputs = layer.strings(_L_INPUT)
            missing = [i for i in inputs if i not in blobs]
            if missing:
                raise ModelFormatError(f"Core ML file: layer {name!r} reads unknown blob {missing}")
            y = _LAYER_EVAL[kind](params, [blobs[i] for i in inputs], name)
            (out,) = layer.strings(_L_OUTPUT)
            blobs[out] = np.asarray(y, dtype=np.float32)
    return blobs


def _run_nn_classifier(body: Message, desc: Message, env: dict[str, Any]) -> None:
    blobs = _run_layers(body, desc, env)
    proba_blob = body.string(_NN_PROBA_LAYER) or desc.string(_D_PROBA)
    if proba_blob not in blobs:
        raise ModelFormatError(f"Core ML file: no layer produces {proba_blob!r}")
    _classify(body, desc, env, blobs[proba_blob].astype(np.float64))


def _run_nn_regressor(body: Message, desc: Message, env: dict[str, Any]) -> None:
    blobs = _run_layers(body, desc, env)
    for feature in desc.msgs(_D_OUTPUT):
        name = _feature_name(feature)
        if name not in blobs:
            raise ModelFormatError(f"Core ML file: no layer produces output {name!r}")
        env[name] = blobs[name].astype(np.float64)


_RUNNERS: dict[str, Callable[[Message, Message, dict[str, Any]], None]] = {
    "pipeline": lambda b, d, e: _run_models(b, e),
    "pipelineClassifier": lambda b, d, e: _run_models(b.msg(1), e),
    "pipelineRegressor": lambda b, d, e: _run_models(b.msg(1), e),
    "imputer": _run_imputer,
    "treeEnsembleClassifier": _run_tree_classifier,
    "treeEnsembleRegressor": _run_tree_regressor,
    "neuralNetworkClassifier": _run_nn_classifier,
    "neuralNetworkRegressor": _run_nn_regressor,
    "neuralNetwork": _run_nn_regressor,
}


def _run_models(pipe: Message | None, env: dict[str, Any]) -> None:
    if pipe is None or not pipe.has(1):
        raise ModelFormatError("Core ML file: an empty pipeline")
    for model in pipe.msgs(1):
        _run_model(model, env)
