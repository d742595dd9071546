"""ONNX export of fedge IR models, built with the ``onnx`` package's helpers.

Every model takes the same road: the IR's steps are emitted one after the other as
standard ONNX operators on one float32 tensor, then the link and the outputs.
Nothing here knows which library trained the model, and no per-frontend converter
(skl2onnx, onnxmltools) is used.

========================  ====================================================================
IR                        ONNX
========================  ====================================================================
``Impute``                ``Where(IsNaN(x), fill, x)``
``Affine``                ``Div(Sub(x, offset), scale)`` or ``Add(Mul(x, scale), offset)``
``Linear`` / ``Dense``    ``MatMul`` + ``Add`` (+ ``Relu`` / ``Tanh`` / logistic);
                          float16 weights stay float16 initializers, widened by ``Cast``
``QuantizedDense``        ``input_bits=0``: the int8/int16 weight initializer, ``Cast``,
                          ``Sub(zero_point)``, ``Mul(scale)`` (the IR's dequantization,
                          folded exactly at load), ``MatMul``, ``Add``.
                          ``input_bits=8``: the IR's per-row dynamic quantization spelled out
                          (``ReduceMax(Abs)``/127, ``Round`` half to even, ``Clip``, ``Cast``
                          int8), ``MatMulInteger`` with the weights' zero points, then the
                          IR's float32 rescale
``TreeEnsemble``          ``TreeEnsemble`` (ai.onnx.ml 5): float32 thresholds rounded as the
                          device rounds them, ``BRANCH_LEQ``/``BRANCH_LT`` per the comparison,
                          each node's missing-value direction, leaves of several outputs as one
                          tree per output column, ``SUM`` then ``Div(n_trees)`` for ``mean``,
                          then ``Add(base_score)``
``QuantizedTrees``        the same operator with the bin edges as thresholds and the integer
                          leaves as weights (integer sums are exact), then the IR's float32
                          ``* leaf_scale``, ``/ n_trees``, ``+ base_score``
links                     explicit nodes: logistic as ``1 / (1 + Exp(-s))``, ``Softmax``,
                          ``Clip``, ``Exp``, row normalisation (never a tree post_transform)
========================  ====================================================================

Graph interface: one input ``input`` (float32, ``[N, n_features]``; feature names in the
input's doc string and in ``metadata_props["feature_names"]``). Classifiers output
``label`` (``[N]``, typed like the classes: int64, string, bool or double) and
``probabilities`` (float32 ``[N, n_classes]``), or ``scores`` instead of probabilities
for models without them (``link="none"``). Regressors output ``variable`` (float32
``[N, n_outputs]``).

The ONNX graph computes in float32 like the runtime's ``device`` mode, with
onnxruntime's own summation order and ``exp``: probabilities and values agree within
``rtol=1e-5, atol=1e-6`` (:data:`RTOL`, :data:`ATOL`); tree branches are exact, and
quantized trees and dynamic int8 layers are bit-identical. See ``docs/onnx.md`` (also for
the onnxruntime optimizations the graph is shaped to avoid).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge._version import __version__
from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
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
    PredictFrom,
    QuantizedDense,
    QuantizedTrees,
    Task,
    TreeEnsemble,
)

__all__ = [
    "ATOL",
    "DEFAULT_OPSET",
    "ML_OPSET",
    "RTOL",
    "OnnxVerificationReport",
    "run_onnx",
    "save_onnx",
    "to_onnx",
    "verify_onnx",
]

#: The ai.onnx opset used unless asked otherwise (TreeEnsemble and int16
#: DequantizeLinear need 21; IR version 10).
DEFAULT_OPSET = 21
#: The ai.onnx.ml opset of the TreeEnsemble operator.
ML_OPSET = 5
#: Tolerance of onnxruntime's float32 outputs against the numpy runtime's device mode.
RTOL = 1e-5
ATOL = 1e-6

_INSTALL = "pip install 'fedge[onnx]'"
_EXACT_FLOAT32_INT = 2**24  # integers up to this magnitude are exact in float32
_RESERVED = ("input", "label", "probabilities", "scores", "variable")


# --------------------------------------------------------------------------- imports
def _onnx() -> Any:
    try:
        import onnx
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as exc:
        raise UnsupportedOperationError(
            f"ONNX export needs the onnx package, which is not installed ({exc}); "
            f"install it with: {_INSTALL}"
        ) from None
    return onnx


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise UnsupportedOperationError(
            f"running ONNX models needs onnxruntime, which is not installed ({exc}); "
            f"install it with: {_INSTALL}"
        ) from None
    return onnxruntime


# --------------------------------------------------------------------------- graph builder
class _Graph:
    """Nodes and initializers with unique, deterministic names."""

    def __init__(self, onnx: Any) -> None:
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.tensor = onnx.TensorProto
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._used: Counter[str] = Counter(_RESERVED)
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self.uses_ml = False

    def name(self, hint: str) -> str:
        n = self._used[hint]
        self._used[hint] += 1
        return hint if n == 0 else f"{hint}_{n}"

    def const(self, hint: str, array: Any) -> str:
        """An initializer (small numeric constants are shared)."""
        arr = np.asarray(array)
        small = arr.size <= 16 and arr.dtype.kind in "biuf"
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if small and key in self._consts:
            return self._consts[key]
        name = self.name(hint)
        if small:
            self._consts[key] = name
        if arr.dtype.kind == "U":
            arr = arr.astype(object)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def scalar(self, hint: str, value: float) -> str:
        return self.const(hint, np.array(value, dtype=np.float32))

    def floats(self, hint: str, array: np.ndarray) -> str:
        """A float32 tensor; float16 parameters stay float16 in the file and widen by Cast."""
        if array.dtype == np.float16:
            return self.op("Cast", [self.const(hint + "_f16", array)], hint, to=self.tensor.FLOAT)
        return self.const(hint, np.asarray(array, dtype=np.float32))

    def op(
        self, op_type: str, inputs: list[str], hint: str | None = None, domain: str = "", **attrs
    ) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(
            self.helper.make_node(op_type, inputs, [out], name=out, domain=domain or None, **attrs)
        )
        return out

    def output(self, name: str, value: str) -> None:
        self.nodes.append(self.helper.make_node("Identity", [value], [name], name=name))


# --------------------------------------------------------------------------- steps
def _impute(g: _Graph, step: Impute, x: str) -> str:
    return g.op("Where", [g.op("IsNaN", [x]), g.floats("fill", step.fill), x], "imputed")


def _affine(g: _Graph, step: Affine, x: str) -> str:
    offset, scale = g.floats("offset", step.offset), g.floats("scale", step.scale)
    if step.order is AffineOrder.SUBTRACT_DIVIDE:
        return g.op("Div", [g.op("Sub", [x, offset], "centred"), scale], "scaled")
    return g.op("Add", [g.op("Mul", [x, scale], "scaled"), offset], "shifted")


def _logistic(g: _Graph, z: str, hint: str) -> str:
    """``1 / (1 + Exp(-z))``, the device's formula. onnxruntime's Sigmoid kernel clamps its
    input near +-18 and is off by up to 4.6x in relative terms below -9 (1.6e-7 absolute),
    which one-vs-rest normalisation of small probabilities would magnify."""
    e = g.op("Exp", [g.op("Neg", [z], hint + "_neg")], hint + "_exp")
    return g.op("Reciprocal", [g.op("Add", [g.scalar("one", 1.0), e], hint + "_1p")], hint)


def _activate(g: _Graph, activation: Activation, z: str) -> str:
    if activation is Activation.IDENTITY:
        return z
    if activation is Activation.LOGISTIC:
        return _logistic(g, z, "hidden")
    return g.op("Relu" if activation is Activation.RELU else "Tanh", [z], "hidden")


def _linear(g: _Graph, step: Linear | Dense, x: str) -> str:
    w, b = g.floats("weights", step.weights), g.floats("bias", step.bias)
    z = g.op("Add", [g.op("MatMul", [x, w], "matmul"), b], "linear")
    return _activate(g, getattr(step, "activation", Activation.IDENTITY), z)


def _quantized_dense(g: _Graph, step: QuantizedDense, x: str) -> str:
    weights = g.const("qweights", step.weights)
    if step.input_bits == 0:
        # W = float32(q - zp) * scale, as the IR defines it. Not DequantizeLinear: for
        # DequantizeLinear + MatMul onnxruntime's default optimizations substitute
        # MatMulNBits, which quantizes the activations to int8 too (measured: 7e-3 off in
        # a logistic regression's probabilities). Cast/Sub/Mul of constants fold exactly.
        w = g.op("Cast", [weights], "qweights_float", to=g.tensor.FLOAT)
        if np.any(step.zero_point != 0):
            zero = g.const("wzero", step.zero_point.astype(np.float32))
            w = g.op("Sub", [w, zero], "qweights_centred")
        w = g.op("Mul", [w, g.const("wscale", step.scale)], "dequantized")
        z = g.op("Add", [g.op("MatMul", [x, w], "matmul"), g.floats("bias", step.bias)], "linear")
        return _activate(g, step.activation, z)
    # Dynamic int8 inputs, as the IR defines them (fedge.ir.runtime._dynamic_matmul):
    # s = max|x| / 127 per row (1 where 0), q = clip(rint(x / s), -127, 127) with NaN -> 0,
    # acc = q @ (W - zp) in integers (MatMulInteger), y = float32(acc) * (s * scale) + bias.
    # DynamicQuantizeLinear does not fit: it quantizes the whole tensor to uint8 with a
    # zero point, where the IR quantizes each row symmetrically to int8.
    axes = g.const("axis1", np.array([1], dtype=np.int64))
    top = g.op("ReduceMax", [g.op("Abs", [x], "absx"), axes], "rowmax", keepdims=1)
    s = g.op("Div", [top, g.scalar("q127", 127.0)], "xscale")
    zero_f, one_f = g.scalar("zero", 0.0), g.scalar("one", 1.0)
    s = g.op("Where", [g.op("Equal", [s, zero_f], "xscale_zero"), one_f, s], "xscale")
    r = g.op("Round", [g.op("Div", [x, s], "xq")], "xq")
    clipped = g.op("Clip", [r, g.scalar("qmin", -127.0), g.scalar("qmax", 127.0)], "xq")
    q = g.op("Where", [g.op("IsNaN", [r], "xq_nan"), zero_f, clipped], "xq")
    q8 = g.op("Cast", [q], "xq_int8", to=g.tensor.INT8)
    per_axis = step.scale.shape[0] > 1
    zp = step.zero_point.astype(np.int8)
    acc = g.op("MatMulInteger", [q8, weights, "", g.const("wzero", zp if per_axis else zp[0])])
    # int32 -> double is exact and double -> float rounds once, as int32 -> float does; the
    # detour also keeps onnxruntime from fusing MatMulInteger + Cast + Mul into
    # MatMulIntegerToFloat, which rounds differently (measured up to 0.24 off in probabilities).
    acc_d = g.op("Cast", [acc], "acc_double", to=g.tensor.DOUBLE)
    acc_f = g.op("Cast", [acc_d], "acc_float", to=g.tensor.FLOAT)
    rescale = g.op("Mul", [s, g.const("wscale", step.scale)], "rescale")
    z = g.op("Add", [g.op("Mul", [acc_f, rescale], "matmul"), g.floats("bias", step.bias)])
    return _activate(g, step.activation, z)


def _tree_of_nodes(step: TreeEnsemble | QuantizedTrees) -> np.ndarray:
    """The tree each internal node belongs to (level by level from the roots)."""
    tree = np.full(step.n_nodes, -1, dtype=np.int64)
    owner = np.flatnonzero(step.roots >= 0)
    frontier = step.roots[owner].astype(np.int64)
    while frontier.size:
        tree[frontier] = owner
        kids = np.concatenate([step.left[frontier], step.right[frontier]]).astype(np.int64)
        owner = np.concatenate([owner, owner])
        keep = kids >= 0
        frontier, owner = kids[keep], owner[keep]
    return tree


def _tree_attributes(
    step: TreeEnsemble | QuantizedTrees, thresholds: np.ndarray, leaves: np.ndarray
) -> dict[str, Any]:
    """The TreeEnsemble (ai.onnx.ml 5) attributes of ``step`` as numpy arrays.

    A leaf holds one target in ONNX, so a tree whose leaves hold ``w`` outputs becomes ``w``
    trees (copy ``j`` writes output ``tree_offset + j``). Leaves with the same target and
    the same weight are stored once (a forest's pure leaves collapse to a few entries). A
    single-leaf tree gets a placeholder split whose two branches reach its leaf.
    """
    n_nodes, width = step.n_nodes, step.leaf_width
    offsets = step.tree_offset.astype(np.int64)
    tree = _tree_of_nodes(step)
    single = np.flatnonzero(step.roots < 0)
    parts_left, parts_right, parts_root = [], [], []
    for j in range(width):
        parts_left.append((step.left, offsets[tree] + j, j))
        parts_right.append((step.right, offsets[tree] + j, j))
        parts_root.append((step.roots[single], offsets[single] + j, j))
    # Every leaf reference as (target, weight): dedupe on the weight's bits.
    targets, weights = [], []
    for refs, target, j in parts_left + parts_right + parts_root:
        mask = refs < 0
        targets.append(target[mask])
        weights.append(leaves[~refs[mask].astype(np.int64), j])
    all_targets = np.concatenate(targets).astype(np.int64)
    all_weights = np.concatenate(weights)
    bits = all_weights.view(np.uint32 if all_weights.dtype == np.float32 else np.uint64)
    key = np.stack([all_targets, bits.astype(np.int64)], axis=1)
    unique, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    leaf_target = unique[:, 0]
    leaf_weight = unique[:, 1].astype(bits.dtype).view(all_weights.dtype)
    # Node arrays: copy j's internal nodes, then every copy's placeholder nodes.
    cursor = 0

    def leaf_index(refs: np.ndarray) -> np.ndarray:
        nonlocal cursor
        n = int(np.count_nonzero(refs < 0))
        out = inverse[cursor : cursor + n]
        cursor += n
        return out

    true_ids, false_ids, true_leaf, false_leaf = [], [], [], []
    for j, (refs, _, _) in enumerate(parts_left):
        ids = refs.astype(np.int64) + j * n_nodes
        ids[refs < 0] = leaf_index(refs)
        true_ids.append(ids)
        true_leaf.append(refs < 0)
    for j, (refs, _, _) in enumerate(parts_right):
        ids = refs.astype(np.int64) + j * n_nodes
        ids[refs < 0] = leaf_index(refs)
        false_ids.append(ids)
        false_leaf.append(refs < 0)
    single_leaf = [leaf_index(refs) for refs, _, _ in parts_root]
    n_single = single.size
    mode = 0 if step.comparison is Comparison.LE else 1
    roots = []
    for j in range(width):
        r = step.roots.astype(np.int64) + j * n_nodes
        r[single] = width * n_nodes + j * n_single + np.arange(n_single)
        roots.append(r)
    placeholder = np.concatenate(single_leaf) if n_single else np.zeros(0, dtype=np.int64)
    return {
        "nodes_featureids": np.concatenate(
            [np.tile(step.feature.astype(np.int64), width), np.zeros(placeholder.size, np.int64)]
        ),
        "nodes_splits": np.concatenate(
            [np.tile(thresholds, width), np.zeros(placeholder.size, thresholds.dtype)]
        ),
        "nodes_modes": np.full(width * n_nodes + placeholder.size, mode, dtype=np.uint8),
        "nodes_truenodeids": np.concatenate([*true_ids, placeholder]),
        "nodes_falsenodeids": np.concatenate([*false_ids, placeholder]),
        "nodes_trueleafs": np.concatenate([*true_leaf, np.ones(placeholder.size, bool)]),
        "nodes_falseleafs": np.concatenate([*false_leaf, np.ones(placeholder.size, bool)]),
        "nodes_missing_value_tracks_true": np.concatenate(
            [np.tile(step.missing_left, width), np.zeros(placeholder.size, bool)]
        ),
        "leaf_targetids": leaf_target,
        "leaf_weights": leaf_weight,
        "tree_roots": np.concatenate(roots),
    }


def _tree_node(g: _Graph, step: TreeEnsemble | QuantizedTrees, x: str, dtype: type) -> str:
    if isinstance(step, QuantizedTrees):
        thresholds, leaves = step.edge_of(), step.leaf_values
    else:
        thresholds, leaves = step.device_thresholds(), step.leaf_values
    a = _tree_attributes(step, thresholds.astype(dtype), leaves.astype(dtype))
    nh = g.numpy_helper
    attrs: dict[str, Any] = {
        "nodes_featureids": a["nodes_featureids"].tolist(),
        "nodes_splits": nh.from_array(a["nodes_splits"]),
        "nodes_modes": nh.from_array(a["nodes_modes"]),
        "nodes_truenodeids": a["nodes_truenodeids"].tolist(),
        "nodes_falsenodeids": a["nodes_falsenodeids"].tolist(),
        "nodes_trueleafs": a["nodes_trueleafs"].astype(np.int64).tolist(),
        "nodes_falseleafs": a["nodes_falseleafs"].astype(np.int64).tolist(),
        "leaf_targetids": a["leaf_targetids"].tolist(),
        "leaf_weights": nh.from_array(a["leaf_weights"]),
        "tree_roots": a["tree_roots"].tolist(),
        "aggregate_function": 1,  # SUM; the mean divides afterwards, as the device does
        "post_transform": 0,  # NONE; the link is explicit
        "n_targets": int(step.n_outputs),
    }
    if a["nodes_missing_value_tracks_true"].any():
        attrs["nodes_missing_value_tracks_true"] = (
            a["nodes_missing_value_tracks_true"].astype(np.int64).tolist()
        )
    g.uses_ml = True
    return g.op("TreeEnsemble", [x], "trees", domain="ai.onnx.ml", **attrs)


def _trees(g: _Graph, step: TreeEnsemble, x: str) -> str:
    # Thresholds rounded as the device rounds them send every float32 input the same way.
    out = _tree_node(g, step, x, np.float32)
    if step.aggregation is Aggregation.MEAN:
        out = g.op("Div", [out, g.scalar("n_trees", float(step.n_trees))], "mean")
    if np.any(step.base_score != 0):
        out = g.op("Add", [out, g.floats("base_score", step.base_score)], "boosted")
    return out


def _quantized_trees(g: _Graph, step: QuantizedTrees, x: str) -> str:
    # Integer leaves summed in float32 are exact while no partial sum can pass 2**24; a
    # larger ensemble sums in float64 (exact to 2**53) and rounds once, as the IR's
    # float32(total) does.
    per_tree = np.abs(step.leaf_values.astype(np.int64)).max(axis=0).sum() * step.n_trees
    if per_tree < _EXACT_FLOAT32_INT:
        total = _tree_node(g, step, x, np.float32)
    else:
        x64 = g.op("Cast", [x], "input_double", to=g.tensor.DOUBLE)
        total = g.op("Cast", [_tree_node(g, step, x64, np.float64)], "total", to=g.tensor.FLOAT)
    scale = np.broadcast_to(step.leaf_scale, (step.n_outputs,))
    out = g.op("Mul", [total, g.const("leaf_scale", np.ascontiguousarray(scale))], "rescaled")
    if step.aggregation is Aggregation.MEAN:
        out = g.op("Div", [out, g.scalar("n_trees", float(step.n_trees))], "mean")
    return g.op("Add", [out, g.const("base_score", step.base_score)], "boosted")


_STEPS: dict[type, Any] = {
    Impute: _impute,
    Affine: _affine,
    Linear: _linear,
    Dense: _linear,
    QuantizedDense: _quantized_dense,
    TreeEnsemble: _trees,
    QuantizedTrees: _quantized_trees,
}


# --------------------------------------------------------------------------- link and outputs
def _normalise_rows(g: _Graph, p: str, n: int) -> str:
    """Divide each row by its sum; an all-zero row becomes uniform (the IR's rule)."""
    axes = g.const("axis1", np.array([1], dtype=np.int64))
    total = g.op("ReduceSum", [p, axes], "total", keepdims=1)
    zero = g.op("Equal", [total, g.scalar("zero", 0.0)], "total_zero")
    p = g.op("Where", [zero, g.scalar("one", 1.0), p], "unnormalised")
    total = g.op("Where", [zero, g.scalar("n_classes", float(n)), total], "total")
    return g.op("Div", [p, total], "normalised")


def _binary(g: _Graph, p: str) -> str:
    """``[1 - p, p]`` from a one-column ``p``."""
    return g.op("Concat", [g.op("Sub", [g.scalar("one", 1.0), p], "negative"), p], axis=1)


def _probabilities(g: _Graph, model: Model, s: str) -> tuple[str, str | None]:
    """(probabilities, the positive class's column for one-output binary models)."""
    link, k = model.link, model.n_outputs
    if link is Link.IDENTITY:
        return s, None
    if link is Link.SOFTMAX:
        return g.op("Softmax", [s], "softmax", axis=1), None
    if link is Link.LOGISTIC:
        p = _logistic(g, s, "positive")
        return _binary(g, p), p
    if link is Link.LOGISTIC_OVR:
        return _normalise_rows(g, _logistic(g, s, "ovr"), k), None
    if link is Link.MODIFIED_HUBER:
        clipped = g.op("Clip", [s, g.scalar("minus_one", -1.0), g.scalar("one", 1.0)], "clipped")
        p = g.op("Div", [g.op("Add", [clipped, g.scalar("one", 1.0)]), g.scalar("two", 2.0)])
        if k == 1:
            return _binary(g, p), p
        return _normalise_rows(g, p, k), None
    raise UnsupportedModelError(  # pragma: no cover (every classification link is above)
        f"link {link.value!r} has no ONNX form; export to C or the lite format instead"
    )


def _label_index(g: _Graph, model: Model, s: str, proba: str | None, p: str | None) -> str:
    rule = model.predict_from
    if model.n_outputs == 1:
        if rule is PredictFrom.PROBABILITIES:
            assert p is not None
            positive = g.op("Greater", [p, g.scalar("half", 0.5)], "positive_class")
        elif rule is PredictFrom.SCORES_INCLUSIVE:
            positive = g.op("GreaterOrEqual", [s, g.scalar("zero", 0.0)], "positive_class")
        else:
            positive = g.op("Greater", [s, g.scalar("zero", 0.0)], "positive_class")
        axes = g.const("axis1", np.array([1], dtype=np.int64))
        flat = g.op("Squeeze", [positive, axes], "positive_class")
        return g.op("Cast", [flat], "class_index", to=g.tensor.INT64)
    source = proba if rule is PredictFrom.PROBABILITIES else s
    assert source is not None
    return g.op("ArgMax", [source], "class_index", axis=1, keepdims=0)


def _label_type(g: _Graph, classes: np.ndarray) -> tuple[np.ndarray, int]:
    kind = classes.dtype.kind
    if kind == "U":
        return classes.astype(object), g.tensor.STRING
    if kind == "b":
        return classes, g.tensor.BOOL
    if kind == "f":
        return classes.astype(np.float64), g.tensor.DOUBLE
    return classes.astype(np.int64), g.tensor.INT64


def _head(g: _Graph, model: Model, s: str) -> list[Any]:
    """Emit the link and the named outputs; return their value infos."""
    h, k = g.helper, model.n_outputs
    if model.task is Task.REGRESSION:
        y = g.op("Exp", [s], "exp") if model.link is Link.EXP else s
        g.output("variable", y)
        return [h.make_tensor_value_info("variable", g.tensor.FLOAT, ["N", k])]
    assert model.classes is not None
    proba, p = (None, None) if model.link is Link.NONE else _probabilities(g, model, s)
    index = _label_index(g, model, s, proba, p)
    classes, elem = _label_type(g, model.classes)
    g.output("label", g.op("Gather", [g.const("classes", classes), index], "labels", axis=0))
    outputs = [h.make_tensor_value_info("label", elem, ["N"])]
    if proba is None:
        g.output("scores", s)
        outputs.append(h.make_tensor_value_info("scores", g.tensor.FLOAT, ["N", k]))
    else:
        g.output("probabilities", proba)
        outputs.append(
            h.make_tensor_value_info("probabilities", g.tensor.FLOAT, ["N", model.n_classes])
        )
    return outputs


# --------------------------------------------------------------------------- public API
def _graph_name(model: Model, name: str | None) -> str:
    if name is not None:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"name must be a non-empty string, got {name!r}")
        return name
    source = str(model.metadata.get("source", {}).get("estimator", "model"))
    return "fedge_" + re.sub(r"[^A-Za-z0-9_]+", "_", source).strip("_")


def _check_opset(onnx: Any, opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int | np.integer):
        raise InvalidInputError(f"opset must be an integer, got {type(opset).__name__}")
    if not DEFAULT_OPSET <= int(opset) <= newest:
        raise InvalidInputError(
            f"opset {opset} is not supported: fedge emits ai.onnx opsets {DEFAULT_OPSET} to "
            f"{newest} (the TreeEnsemble operator of ai.onnx.ml 5 and int16 DequantizeLinear "
            f"need {DEFAULT_OPSET}; this onnx package knows up to {newest})"
        )
    return int(opset)


def _metadata(model: Model) -> dict[str, str]:
    props = {
        "fedge.version": __version__,
        "fedge.task": model.task.value,
        "fedge.link": model.link.value,
        "fedge.predict_from": model.predict_from.value,
        "fedge.source": json.dumps(model.metadata, sort_keys=True),
        "fedge.tolerance": json.dumps({"rtol": RTOL, "atol": ATOL, "against": "device mode"}),
    }
    if model.feature_names is not None:
        props["feature_names"] = json.dumps(list(model.feature_names))
    if model.classes is not None:
        props["classes"] = json.dumps(model.classes.tolist())
    return dict(sorted(props.items()))


def to_onnx(model_or_estimator: Any, *, opset: int | None = None, name: str | None = None) -> Any:
    """Build the ONNX model of an IR model or a fitted estimator.

    Parameters
    ----------
    model_or_estimator : Model or fitted estimator
        Anything :func:`fedge.lower` accepts (compressed IR models included).
    opset : int, optional
        The ai.onnx opset (default and minimum :data:`DEFAULT_OPSET`); tree ensembles use
        ai.onnx.ml opset :data:`ML_OPSET`.
    name : str, optional
        The graph's name (default ``fedge_<source estimator>``).

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model(full_check=True)``. The same model always
        gives the same bytes.

    Raises
    ------
    UnsupportedOperationError
        If the onnx package is not installed.
    UnsupportedModelError
        If the model cannot be lowered, or a step has no exact ONNX form.
    """
    onnx = _onnx()
    model = lower(model_or_estimator)
    version = _check_opset(onnx, opset)
    g = _Graph(onnx)
    h = onnx.helper
    x = "input"
    for step in model.steps:
        handler = _STEPS.get(type(step))
        if handler is None:  # pragma: no cover (every IR step has a handler)
            raise UnsupportedModelError(
                f"{type(step).__name__} has no ONNX form; export to C or the lite format instead"
            )
        x = handler(g, step, x)
    outputs = _head(g, model, x)
    names = model.feature_names
    described = (
        f"float32 rows of {model.n_features} features: " + ", ".join(names)
        if names is not None
        else f"float32 rows of {model.n_features} features (in training order)"
    )
    inputs = [h.make_tensor_value_info("input", g.tensor.FLOAT, ["N", model.n_features], described)]
    source = model.metadata.get("source", {})
    graph = h.make_graph(
        g.nodes,
        _graph_name(model, name),
        inputs,
        outputs,
        initializer=g.initializers,
        doc_string=f"{source.get('estimator', 'model')} exported by fedge {__version__}",
    )
    opsets = [h.make_opsetid("", version)]
    if g.uses_ml:
        opsets.append(h.make_opsetid("ai.onnx.ml", ML_OPSET))
    proto = h.make_model(
        graph,
        opset_imports=opsets,
        producer_name="fedge",
        producer_version=__version__,
        ir_version=int(h.find_min_ir_version_for(opsets)),
        doc_string=(
            f"{model.task.value} model ({source.get('library', 'unknown library')} "
            f"{source.get('estimator', '')}), link {model.link.value}"
        ),
    )
    h.set_model_props(proto, _metadata(model))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _as_proto(model: Any, opset: int | None = None) -> Any:
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        return model
    return to_onnx(model, opset=opset)


def save_onnx(model: Any, path: str | Path, *, opset: int | None = None) -> int:
    """Write ``model`` (a ModelProto, an IR model or a fitted estimator) to ``path``.

    Returns the number of bytes written. The bytes are deterministic.
    """
    data = _as_proto(model, opset).SerializeToString(deterministic=True)
    Path(path).write_bytes(data)
    return len(data)


def run_onnx(model: Any, X: Any) -> dict[str, np.ndarray]:
    """Run an ONNX model (ModelProto, bytes or a path) in onnxruntime on float32 ``X``
    (fed to the model's first input), with onnxruntime's default optimizations.

    Returns the outputs by name.
    """
    ort = _onnxruntime()
    if isinstance(model, bytes):
        data = model
    elif isinstance(model, str | Path):
        data = Path(model).read_bytes()
    else:
        data = _as_proto(model).SerializeToString(deterministic=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    rows = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    names = [o.name for o in session.get_outputs()]
    feed = {session.get_inputs()[0].name: rows}
    return dict(zip(names, session.run(names, feed), strict=True))


@dataclass(frozen=True)
class OnnxVerificationReport:
    """What running the ONNX model in onnxruntime on ``rows`` rows showed.

    ``output`` names the compared float output (``probabilities``, ``scores`` or
    ``variable``). ``max_abs_diff``/``max_rel_diff`` are against the numpy runtime's
    ``device`` mode on the same float32 rows; ``bitwise_equal`` says whether every value
    was identical. ``onnx_error`` and ``device_error`` are the largest distances of the ONNX
    outputs and of device mode from the float64 ``reference`` mode: ``device_error`` is the
    float32 noise floor of the model itself (large for ill-conditioned scores).

    ``within_tolerance``: every value within ``rtol``/``atol`` of device mode, or (a model
    whose float32 scores are ill-conditioned) ``onnx_error <= 2 * device_error``: no worse
    than fedge's own float32 evaluation. Labels are compared exactly, with device mode and
    with the source model's ``predict`` on the float32-rounded rows the ONNX model reads.
    """

    rows: int
    runtime: str
    output: str
    max_abs_diff: float
    max_rel_diff: float
    onnx_error: float
    device_error: float
    rtol: float
    atol: float
    within_tolerance: bool
    bitwise_equal: bool
    label_mismatches_device: int | None
    label_mismatches_source: int | None
    source_max_abs_diff: float | None
    nbytes: int

    @property
    def ok(self) -> bool:
        return (
            self.within_tolerance
            and self.label_mismatches_device in (None, 0)
            and self.label_mismatches_source in (None, 0)
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _compared(ir: Model, rows: np.ndarray, mode: str) -> tuple[str, np.ndarray]:
    if ir.task is Task.REGRESSION:
        return "variable", runtime.predict(ir, rows, mode=mode)
    if ir.link is Link.NONE:
        return "scores", runtime.decision_function(ir, rows, mode=mode)
    return "probabilities", runtime.predict_proba(ir, rows, mode=mode)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(diff[np.isfinite(diff)].max(initial=0.0))


def verify_onnx(
    model_or_estimator: Any,
    X: Any,
    *,
    source: Any = None,
    opset: int | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> OnnxVerificationReport:
    """Export, run in onnxruntime on ``X`` (as float32) and compare with fedge and the source.

    Parameters
    ----------
    model_or_estimator : Model, fitted estimator or onnx.ModelProto
        An estimator is lowered and is also the default ``source``. A ModelProto is run as
        it is; pass ``source`` (the IR model or estimator it came from) to compare.
    X : array-like of shape (n_rows, n_features)
    source : fitted estimator or Model, optional
        Whose ``predict`` the labels are compared with (an estimator) and whose IR the
        outputs are compared with.
    rtol, atol : float
        Tolerance against device mode (see :class:`OnnxVerificationReport`).
    """
    onnx = _onnx()
    if isinstance(model_or_estimator, onnx.ModelProto):
        if source is None:
            raise InvalidInputError("pass source= (the model the ONNX file was exported from)")
        proto, ir = model_or_estimator, lower(source)
    else:
        proto, ir = to_onnx(model_or_estimator, opset=opset), lower(model_or_estimator)
        if source is None and not isinstance(model_or_estimator, Model):
            source = model_or_estimator
    rows = runtime.check_input(ir, X, runtime.Mode.DEVICE).astype(np.float32).astype(np.float64)
    got = run_onnx(proto, rows)
    output, device = _compared(ir, rows, "device")
    _, reference = _compared(ir, rows, "reference")
    values = got[output].reshape(rows.shape[0], -1)
    device = np.asarray(device, dtype=np.float32).reshape(values.shape)
    reference = np.asarray(reference, dtype=np.float64).reshape(values.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(values.astype(np.float64) - device)
        rel = np.where(diff == 0, 0.0, diff / np.abs(device.astype(np.float64)))
    finite = np.isfinite(diff)
    onnx_error, device_error = _max_abs(values, reference), _max_abs(device, reference)
    close = bool(np.allclose(values, device, rtol=rtol, atol=atol, equal_nan=True))
    label_dev = label_src = None
    source_diff = None
    predictor = None if source is None or isinstance(source, Model) else source
    if ir.task is Task.CLASSIFICATION:
        labels = got["label"]
        label_dev = int(np.sum(labels != runtime.predict(ir, rows, mode="device")))
        if predictor is not None:
            label_src = int(np.sum(labels != np.asarray(predictor.predict(rows))))
    elif predictor is not None:
        theirs = np.asarray(predictor.predict(rows), dtype=np.float64).reshape(values.shape)
        source_diff = _max_abs(values, theirs)
    ort = _onnxruntime()
    return OnnxVerificationReport(
        rows=int(rows.shape[0]),
        runtime=f"onnxruntime {ort.__version__}",
        output=output,
        max_abs_diff=float(diff[finite].max(initial=0.0)),
        max_rel_diff=float(rel[finite].max(initial=0.0)),
        onnx_error=onnx_error,
        device_error=device_error,
        rtol=rtol,
        atol=atol,
        within_tolerance=close or onnx_error <= 2 * device_error,
        bitwise_equal=bool(
            values.dtype == device.dtype
            and np.array_equal(values, device, equal_nan=True)
            and np.array_equal(np.signbit(values), np.signbit(device))
        ),
        label_mismatches_device=label_dev,
        label_mismatches_source=label_src,
        source_max_abs_diff=source_diff,
        nbytes=len(proto.SerializeToString(deterministic=True)),
    )
