"""TFLite export from the IR, without TensorFlow, verified in the LiteRT interpreter.

The FlatBuffer is written directly with the schema bindings that ship with
``ai-edge-litert`` (:mod:`fedge.deployment.formats.tflite_graph`); only builtin
operators are used, so the file runs in LiteRT and in TFLite Micro's kernels.

Precisions (``to_tflite(model, precision=...)``):

- ``float32``: float32 input, float32 arithmetic. Scalers are ``SUB``/``DIV`` (or
  ``MUL``/``ADD``) ops in the source's order, imputation is ``SELECT_V2`` on
  ``NOT_EQUAL(x, x)`` (NaN test), layers are ``FULLY_CONNECTED`` with fused ``RELU`` or
  ``TANH``/``LOGISTIC`` ops, links are ``LOGISTIC``/``SOFTMAX``/``EXP`` (and the
  one-vs-rest and modified-Huber normalisations with their all-zero-row rule). Tensors the
  IR stores in float16 or as integers (fedge's ``float16``/``int8``/``int16`` compression)
  are stored so and widened by ``DEQUANTIZE``, which computes exactly what fedge's runtime
  multiplies by.
- ``float16``: the same graph over fedge's float16 rounding of the weights, biases and
  tree leaves (what ``ModelQuantizer("float16")`` stores), kept as float16 constants.
- ``int8``: full-integer, as TFLite Micro expects: int8 input and output tensors, int8
  weights (symmetric, per output channel; the IR's own scales when fedge quantized the
  model), int32 biases with scale ``input_scale * weight_scale``, int8 activations whose
  ranges come from the representative data. Leading imputers and scalers cannot be
  expressed on one per-tensor int8 scale without losing the small features, so they stay
  on the host: the int8 input is the preprocessed row, and the file's ``fedge`` metadata
  holds the preprocessing and the input quantization. Trees are not exported in int8.

Tree ensembles use the matrix formulation: ``GATHER`` the split features, compare with
every threshold (``LESS_EQUAL``/``LESS``; a NaN goes where the node's missing-value rule
sends it, through ``NOT_EQUAL(x, x)``), ``CAST`` to 0/1, and per tree a
``FULLY_CONNECTED`` against a matrix counting, for every leaf, the conditions of its path
that hold; ``EQUAL`` to the path's count marks the leaf reached, and one last
``FULLY_CONNECTED`` adds the leaf values (with the base score as an always-on first leaf,
so the reference kernels add in fedge's device order: bit-exact). The path matrices cost
``sum over trees of splits x leaves`` elements; above ``max_tree_elements`` the export is
refused (:class:`~fedge.errors.UnsupportedModelError`) in favour of the C or ONNX backends.

Outputs are named ``scores`` (raw scores), ``probabilities`` (classifiers with a link)
and ``prediction`` (regressors); the host derives labels from them with the model's rule
(stored in the ``fedge`` metadata with the classes).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedge._version import __version__
from fedge.errors import (
    InvalidInputError,
    UnsupportedModelError,
    UnsupportedOperationError,
)
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
    PredictFrom,
    QuantizedDense,
    QuantizedTrees,
    Task,
    TreeEnsemble,
)
from fedge.ir.treeops import split_trees

__all__ = [
    "DEFAULT_MAX_TREE_ELEMENTS",
    "FLOAT_PROBABILITY_ATOL",
    "FLOAT_SCORE_RTOL",
    "INT8_OP_TOLERANCE_STEPS",
    "PRECISIONS",
    "TFLiteReport",
    "run_tflite",
    "save_tflite",
    "to_tflite",
    "tree_elements",
    "verify_tflite",
]

PRECISIONS = ("float32", "float16", "int8")
# Path-matrix elements (sum over trees of splits x leaf slots) above which trees are refused.
DEFAULT_MAX_TREE_ELEMENTS = 1_000_000
# Stated float32 tolerances against fedge's runtime in device mode (see verify_tflite).
FLOAT_PROBABILITY_ATOL = 1e-6
FLOAT_SCORE_RTOL = 1e-5
# Each int8 operator's output within this many of its quantization steps of exact
# arithmetic on the operator's own int8 inputs.
INT8_OP_TOLERANCE_STEPS = 1.0
_INSTALL = "pip install 'fedge[tflite]'"


# --------------------------------------------------------------------------- dependency
def _require_litert() -> None:
    """Import what the exporter needs, or say which extra to install."""
    try:
        import flatbuffers  # noqa: F401
        from ai_edge_litert import schema_py_generated  # noqa: F401
    except ImportError as exc:
        raise UnsupportedOperationError(
            f"TFLite export needs the LiteRT schema bindings and flatbuffers ({exc}); "
            f"install them with: {_INSTALL}"
        ) from None


def _interpreter_class() -> tuple[Any, Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise UnsupportedOperationError(
            f"verifying a TFLite model needs the LiteRT interpreter ({exc}); "
            f"install it with: {_INSTALL}"
        ) from None
    return Interpreter, OpResolverType


# --------------------------------------------------------------------------- the artifact
@dataclass(frozen=True)
class _Built:
    content: bytes
    reference: Model  # the IR whose arithmetic the file implements
    precision: str
    host_steps: tuple[Impute | Affine, ...]  # int8: applied before quantizing the input
    input_quant: tuple[float, int] | None
    outputs: tuple[tuple[str, str, tuple[float, int] | None], ...]
    notes: tuple[str, ...]
    int8_ops: tuple[_Int8Op, ...] = ()


@dataclass(frozen=True)
class _Int8Op:
    """One int8 operator of the chain, with what float arithmetic it stands for."""

    name: str
    kind: str  # "fully_connected", "tanh", "logistic", "softmax"
    inp: int
    out: int
    in_q: tuple[float, int]
    out_q: tuple[float, int]
    weights: np.ndarray | None = None  # (n_in, n_out), dequantized int8 weights
    bias: np.ndarray | None = None  # dequantized int32 bias
    relu: bool = False


def to_tflite(
    model_or_estimator: Any,
    *,
    precision: str = "float32",
    representative_data: Any = None,
    max_tree_elements: int = DEFAULT_MAX_TREE_ELEMENTS,
) -> bytes:
    """The ``.tflite`` bytes of a fitted estimator or IR model.

    Parameters
    ----------
    model_or_estimator : estimator or Model
        Linear models, MLPs (any precision) and tree ensembles (float32, float16).
    precision : {"float32", "float16", "int8"}
        See the module docstring.
    representative_data : array-like of shape (n_rows, n_features), optional
        Required for ``int8``: rows like the ones the model will see, which fix the
        quantization ranges of the input and of every activation.
    max_tree_elements : int
        Largest tree ensemble accepted, in path-matrix elements.

    Raises
    ------
    UnsupportedModelError
        A step, link or precision TFLite cannot express here (trees above the size limit,
        int8 trees, the exp link in int8).
    UnsupportedOperationError
        ai-edge-litert or flatbuffers is not installed.
    """
    return _build(model_or_estimator, precision, representative_data, max_tree_elements).content


def save_tflite(
    model_or_estimator: Any,
    path: str | os.PathLike[str],
    *,
    precision: str = "float32",
    representative_data: Any = None,
    max_tree_elements: int = DEFAULT_MAX_TREE_ELEMENTS,
) -> int:
    """Write the ``.tflite`` file to ``path``; return its size in bytes."""
    data = to_tflite(
        model_or_estimator,
        precision=precision,
        representative_data=representative_data,
        max_tree_elements=max_tree_elements,
    )
    Path(path).write_bytes(data)
    return len(data)


# --------------------------------------------------------------------------- model prep
def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    return precision


def _float16(values: np.ndarray, what: str) -> np.ndarray:
    worst = float(np.max(np.abs(values))) if values.size else 0.0
    if worst > float(np.finfo(np.float16).max):
        raise UnsupportedModelError(
            f"{what} reach {worst:.6g}, beyond float16's largest value 65504; "
            "export in float32 or int8 instead"
        )
    return values.astype(np.float16)


def _as_float16(model: Model) -> Model:
    """Weights, biases and tree leaves in float16 (as ``ModelQuantizer("float16")``); steps
    already quantized to integers, scalers and imputers are kept."""
    steps = []
    for i, step in enumerate(model.steps):
        name = f"step {i} ({type(step).__name__})"
        if isinstance(step, Linear | Dense):
            step = dataclasses.replace(
                step,
                weights=_float16(step.weights, f"{name} weights"),
                bias=_float16(step.bias, f"{name} bias"),
            )
        elif isinstance(step, TreeEnsemble):
            step = dataclasses.replace(
                step,
                leaf_values=_float16(step.leaf_values, f"{name} leaf values"),
                base_score=_float16(step.base_score, f"{name} base score"),
            )
        steps.append(step)
    return dataclasses.replace(model, steps=tuple(steps))


def _build(
    model_or_estimator: Any, precision: str, representative: Any, max_tree_elements: int
) -> _Built:
    _require_litert()
    precision = _check_precision(precision)
    model = lower(model_or_estimator)
    if precision == "int8":
        return _Int8Writer(model, representative).build()
    if precision == "float16":
        model = _as_float16(model)
    return _FloatWriter(model, precision, max_tree_elements).build()


def _metadata(
    model: Model,
    precision: str,
    outputs: list[tuple[str, str, tuple[float, int] | None]],
    input_quant: tuple[float, int] | None,
    host_steps: tuple[Impute | Affine, ...],
) -> dict[str, Any]:
    host: list[dict[str, Any]] = []
    for step in host_steps:
        if isinstance(step, Impute):
            host.append({"op": "impute", "fill": step.fill.astype(np.float32).tolist()})
        else:
            host.append(
                {
                    "op": "affine",
                    "order": step.order.value,
                    "offset": step.offset.astype(np.float32).tolist(),
                    "scale": step.scale.astype(np.float32).tolist(),
                }
            )
    return {
        "format": "fedge-tflite",
        "format_version": 1,
        "fedge_version": __version__,
        "precision": precision,
        "task": model.task.value,
        "link": model.link.value,
        "predict_from": model.predict_from.value,
        "classes": None if model.classes is None else model.classes.tolist(),
        "n_features": model.n_features,
        "feature_names": None if model.feature_names is None else list(model.feature_names),
        "input": {
            "dtype": "int8" if input_quant else "float32",
            "scale": input_quant[0] if input_quant else None,
            "zero_point": input_quant[1] if input_quant else None,
            "host_preprocessing": host,
        },
        "outputs": [
            {
                "name": name,
                "kind": kind,
                "scale": q[0] if q else None,
                "zero_point": q[1] if q else None,
            }
            for name, kind, q in outputs
        ],
        "source": model.metadata.get("source"),
    }


def _description(model: Model, precision: str) -> str:
    source = model.metadata.get("source", {}) if isinstance(model.metadata, dict) else {}
    est = source.get("estimator", "model") if isinstance(source, dict) else "model"
    return f"fedge {__version__}: {est} ({model.task.value}, {precision})"


# --------------------------------------------------------------------------- float graphs
class _FloatWriter:
    """float32 arithmetic; float16 and integer IR tensors are widened by DEQUANTIZE."""

    def __init__(self, model: Model, precision: str, max_tree_elements: int) -> None:
        from fedge.deployment.formats.tflite_graph import Graph

        self.model = model
        self.precision = precision
        self.limit = max_tree_elements
        self.g = Graph()
        self.notes: list[str] = []
        self._ones: int | None = None

    def build(self) -> _Built:
        m, g = self.model, self.g
        for step in m.steps:
            self._check_trees(step)
        x = g.activation("features", np.float32, m.n_features)
        h = x
        nan_possible = True
        for i, step in enumerate(m.steps):
            h = self._step(i, step, h, nan_possible)
            if isinstance(step, Impute):
                nan_possible = False
        outputs = self._link(h)
        meta_out = [(name, kind, None) for name, kind, _ in outputs]
        content = g.finish(
            [x],
            [t for _, _, t in outputs],
            description=_description(m, self.precision),
            metadata=_metadata(m, self.precision, meta_out, None, ()),
        )
        return _Built(content, m, self.precision, (), None, tuple(meta_out), tuple(self.notes))

    # ---- constants
    def _weights(self, name: str, arr: np.ndarray) -> int:
        """A float32 tensor of ``arr``'s values: float32/float64 stored as float32, float16
        stored as float16 and widened by DEQUANTIZE (exact)."""
        g = self.g
        if arr.dtype == np.float16:
            half = g.const(f"{name}_float16", arr)
            out = g.intermediate(name, np.float32, arr.shape)
            g.op("DEQUANTIZE", [half], [out])
            return out
        return g.const(name, np.asarray(arr, dtype=np.float32))

    def _binary(self, op: str, a: int, b: int, name: str, dtype: Any = np.float32) -> int:
        g = self.g
        width = g.width_of(a) if len(g.tensors[a].shape) > 1 else None
        if width is None or (len(g.tensors[b].shape) == 2 and g.width_of(b) > width):
            width = g.width_of(b)
        out = g.activation(name, dtype, width)
        options = {
            "ADD": "AddOptions",
            "SUB": "SubOptions",
            "MUL": "MulOptions",
            "DIV": "DivOptions",
            "LESS_EQUAL": "LessEqualOptions",
            "LESS": "LessOptions",
            "GREATER": "GreaterOptions",
            "GREATER_EQUAL": "GreaterEqualOptions",
            "EQUAL": "EqualOptions",
            "NOT_EQUAL": "NotEqualOptions",
            "LOGICAL_AND": "LogicalAndOptions",
            "LOGICAL_OR": "LogicalOrOptions",
            "MAXIMUM": "MaximumMinimumOptions",
            "MINIMUM": "MaximumMinimumOptions",
        }[op]
        g.op(op, [a, b], [out], g.options(options))
        return out

    def _unary(self, op: str, a: int, name: str, dtype: Any = np.float32) -> int:
        g = self.g
        out = g.activation(name, dtype, g.width_of(a))
        g.op(op, [a], [out])
        return out

    # ---- steps
    def _step(self, i: int, step: Any, h: int, nan_possible: bool) -> int:
        g = self.g
        if isinstance(step, Impute):
            nan = self._binary("NOT_EQUAL", h, h, f"s{i}_isnan", np.bool_)
            fill = self._weights(f"s{i}_fill", step.fill)
            out = g.activation(f"s{i}_imputed", np.float32, step.n_outputs)
            g.op("SELECT_V2", [nan, fill, h], [out], g.options("SelectV2Options"))
            return out
        if isinstance(step, Affine):
            offset = self._weights(f"s{i}_offset", step.offset)
            scale = self._weights(f"s{i}_scale", step.scale)
            if step.order is AffineOrder.SUBTRACT_DIVIDE:
                h = self._binary("SUB", h, offset, f"s{i}_centred")
                return self._binary("DIV", h, scale, f"s{i}_scaled")
            h = self._binary("MUL", h, scale, f"s{i}_scaled")
            return self._binary("ADD", h, offset, f"s{i}_shifted")
        if isinstance(step, Linear | Dense | QuantizedDense):
            return self._dense(i, step, h)
        if isinstance(step, QuantizedTrees):
            self.notes.append(
                f"step {i}: QuantizedTrees exported through its float twin (the same branches; "
                "leaves scaled to float32 and summed in float32 rather than in integers)"
            )
            return self._trees(i, step.as_float(), h, nan_possible)
        if isinstance(step, TreeEnsemble):
            return self._trees(i, step, h, nan_possible)
        raise UnsupportedModelError(  # pragma: no cover (every IR step is handled)
            f"step {i} ({type(step).__name__}) has no TFLite form"
        )

    def _dense(self, i: int, step: Linear | Dense | QuantizedDense, h: int) -> int:
        """``FULLY_CONNECTED`` over ``[1, h]`` with the bias as the first weight column: the
        reference kernels then add ``bias, x0*w0, x1*w1, ...`` in fedge's device order."""
        g = self.g
        act = step.activation if isinstance(step, Dense | QuantizedDense) else Activation.IDENTITY
        if isinstance(step, QuantizedDense) and step.input_bits == 8:
            return self._hybrid(i, step, h, act)
        if isinstance(step, QuantizedDense):
            w = self._int_weights(i, step)
            b = g.const(f"s{i}_bias", step.bias.astype(np.float32).reshape(-1, 1))
            full = g.intermediate(
                f"s{i}_bias_weights", np.float32, (step.n_outputs, step.n_inputs + 1)
            )
            g.op("CONCATENATION", [b, w], [full], g.options("ConcatenationOptions", axis=1))
        else:
            dtype = np.float16 if step.weights.dtype == np.float16 else np.float32
            both = np.concatenate([step.bias.reshape(1, -1), step.weights], axis=0).astype(dtype)
            full = self._weights(f"s{i}_bias_weights", np.ascontiguousarray(both.T))
        ones = self._ones_for(h, f"s{i}")
        x1 = g.activation(f"s{i}_with_one", np.float32, step.n_inputs + 1)
        g.op("CONCATENATION", [ones, h], [x1], g.options("ConcatenationOptions", axis=1))
        fused = "RELU" if act is Activation.RELU else "NONE"
        z = g.activation(f"s{i}_linear", np.float32, step.n_outputs)
        g.op(
            "FULLY_CONNECTED",
            [x1, full, -1],
            [z],
            g.options(
                "FullyConnectedOptions",
                fusedActivationFunction=getattr(g._s.ActivationFunctionType, fused),
            ),
        )
        if act is Activation.TANH:
            return self._unary("TANH", z, f"s{i}_tanh")
        if act is Activation.LOGISTIC:
            return self._unary("LOGISTIC", z, f"s{i}_logistic")
        return z

    def _hybrid(self, i: int, step: QuantizedDense, h: int, act: Activation) -> int:
        """Dynamic quantization (``input_bits=8``) is TFLite's hybrid FULLY_CONNECTED:
        float input, int8 weights; each row quantized symmetrically on the fly, integer
        products, rescaled and added to the bias."""
        from fedge.deployment.formats.tflite_graph import Quant

        g = self.g
        q = np.ascontiguousarray(step.weights.T)
        w = g.const(f"s{i}_weights_int8", q, Quant.of(step.scale, step.zero_point, axis=0))
        b = g.const(f"s{i}_bias", step.bias.astype(np.float32))
        fused = "RELU" if act is Activation.RELU else "NONE"
        z = g.activation(f"s{i}_linear", np.float32, step.n_outputs)
        g.op(
            "FULLY_CONNECTED",
            [h, w, b],
            [z],
            g.options(
                "FullyConnectedOptions",
                fusedActivationFunction=getattr(g._s.ActivationFunctionType, fused),
                asymmetricQuantizeInputs=False,
            ),
        )
        self.notes.append(
            f"step {i}: dynamic quantization as TFLite's hybrid FULLY_CONNECTED (it rounds "
            "x * (1/s) where fedge rounds x / s, so a row can differ by one integer step)"
        )
        if act is Activation.TANH:
            return self._unary("TANH", z, f"s{i}_tanh")
        if act is Activation.LOGISTIC:
            return self._unary("LOGISTIC", z, f"s{i}_logistic")
        return z

    def _ones_for(self, h: int, name: str) -> int:
        """A (batch, 1) column of ones beside ``h``: ``EQUAL(c, c)`` of its first column (a
        NaN there makes the row's outputs NaN through the products anyway)."""
        g = self.g
        col = g.activation(name + "_first", np.float32, 1)
        g.op(
            "SLICE",
            [
                h,
                g.const("slice_first_begin", np.array([0, 0], dtype=np.int32)),
                g.const("slice_first_size", np.array([-1, 1], dtype=np.int32)),
            ],
            [col],
            g.options("SliceOptions"),
        )
        true = self._binary("EQUAL", col, col, name + "_true", bool)
        ones = g.activation(name + "_one", np.float32, 1)
        g.op("CAST", [true], [ones], self._cast_options(np.bool_, np.float32))
        return ones

    def _int_weights(self, i: int, step: QuantizedDense) -> int:
        """Integer weights widened by DEQUANTIZE: ``float32(q - zero_point) * scale``, the
        weights fedge's runtime multiplies by."""
        from fedge.deployment.formats.tflite_graph import Quant

        g = self.g
        q = np.ascontiguousarray(step.weights.T)  # (n_out, n_in)
        out = g.intermediate(f"s{i}_weights", np.float32, q.shape)
        if q.dtype == np.int8 or step.scale.shape[0] == 1:
            quant = Quant.of(step.scale, step.zero_point, axis=0)
            stored = g.const(f"s{i}_weights_{q.dtype}", q, quant)
            g.op("DEQUANTIZE", [stored], [out])
            return out
        # DEQUANTIZE has no per-channel int16; the same operations spelled out:
        # float32(q) - zero_point (exact), times the row's scale.
        stored = g.const(f"s{i}_weights_{q.dtype}", q)
        wide = g.intermediate(f"s{i}_weights_wide", np.float32, q.shape)
        T = g._s.TensorType
        g.op(
            "CAST",
            [stored],
            [wide],
            g.options("CastOptions", inDataType=T.INT16, outDataType=T.FLOAT32),
        )
        centred = g.intermediate(f"s{i}_weights_centred", np.float32, q.shape)
        zp = g.const(f"s{i}_zero_point", step.zero_point.astype(np.float32).reshape(-1, 1))
        g.op("SUB", [wide, zp], [centred], g.options("SubOptions"))
        scale = g.const(f"s{i}_scale", step.scale.astype(np.float32).reshape(-1, 1))
        g.op("MUL", [centred, scale], [out], g.options("MulOptions"))
        return out

    # ---- trees
    def _check_trees(self, step: Any) -> None:
        if not isinstance(step, TreeEnsemble | QuantizedTrees):
            return
        elements = tree_elements(step)
        if elements > self.limit:
            raise UnsupportedModelError(
                f"this tree ensemble ({step.n_trees} trees, {step.n_nodes} splits, "
                f"{step.n_leaves} leaves) needs {elements:,} path-matrix elements in TFLite, "
                f"above the limit of {self.limit:,} (max_tree_elements); export it as C "
                "(fedge.deployment.formats.c, exact and compact) or ONNX (tree-ensemble "
                "operators), or shrink the ensemble (fewer or shallower trees)"
            )

    def _trees(self, i: int, step: TreeEnsemble, h: int, nan_possible: bool) -> int:
        g = self.g
        threshold = step.device_thresholds()
        exact = dataclasses.replace(step, threshold=threshold, input_precision=Precision.FLOAT32)
        trees = split_trees(exact)
        feature = np.concatenate([t.feature for t in trees]).astype(np.int32)
        thr = np.concatenate([t.threshold for t in trees]).astype(np.float32)
        miss = np.concatenate([t.missing_left for t in trees]).astype(bool)
        if feature.size == 0:  # only single-leaf trees: one dummy split feeds the batch size
            feature = np.zeros(1, dtype=np.int32)
            thr = np.zeros(1, dtype=np.float32)
            miss = np.zeros(1, dtype=bool)
        p = f"s{i}_"
        xs = g.activation(p + "split_values", np.float32, feature.size)
        g.op(
            "GATHER",
            [h, g.const(p + "split_features", feature)],
            [xs],
            g.options("GatherOptions", axis=1, batchDims=0),
        )
        t = g.const(p + "thresholds", thr)
        le = step.comparison is Comparison.LE
        if nan_possible and miss.all():
            # NaN > t is false, so NOT(x > t) sends NaN left with the comparison.
            right = self._binary("GREATER" if le else "GREATER_EQUAL", xs, t, p + "right", bool)
            go_left = self._unary("LOGICAL_NOT", right, p + "left", np.bool_)
        else:
            go_left = self._binary("LESS_EQUAL" if le else "LESS", xs, t, p + "left", bool)
            if nan_possible and miss.any():
                nan = self._binary("NOT_EQUAL", xs, xs, p + "isnan", bool)
                nan_left = self._binary(
                    "LOGICAL_AND", nan, g.const(p + "missing_left", miss), p + "nan_left", bool
                )
                go_left = self._binary("LOGICAL_OR", go_left, nan_left, p + "go_left", bool)
        cond = g.activation(p + "conditions", np.float32, feature.size)
        g.op("CAST", [go_left], [cond], self._cast_options(np.bool_, np.float32))
        self._ones = None
        slots: list[int] = []  # one-hot float tensors, in summation order
        leaf_rows: list[np.ndarray] = []  # per slot tensor: (n_slots, n_outputs) leaf matrix
        width = step.n_outputs
        leaf_dtype = np.float16 if step.leaf_values.dtype == np.float16 else np.float32
        if step.aggregation is Aggregation.SUM and np.any(step.base_score != 0):
            slots.append(self._always(cond, p + "base_slot"))
            leaf_rows.append(step.base_score.astype(leaf_dtype).reshape(1, width))
        start = 0
        for k, tree in enumerate(trees):
            n = tree.n_splits
            paths, counts, leaves = _paths(tree)
            values = np.zeros((len(leaves), width), dtype=leaf_dtype)
            values[:, tree.offset : tree.offset + tree.leaf_values.shape[1]] = tree.leaf_values[
                leaves
            ].astype(leaf_dtype)
            leaf_rows.append(values)
            if n == 0:
                slots.append(self._always(cond, f"{p}t{k}_leaf"))
                continue
            part = g.activation(f"{p}t{k}_conditions", np.float32, n)
            g.op(
                "SLICE",
                [
                    cond,
                    g.const(p + "slice_begin", np.array([0, start], dtype=np.int32)),
                    g.const(p + "slice_size", np.array([-1, n], dtype=np.int32)),
                ],
                [part],
                g.options("SliceOptions"),
            )
            held = g.activation(f"{p}t{k}_held", np.float32, len(leaves))
            matrix = self._path_matrix(f"{p}t{k}_paths", paths)
            g.op(
                "FULLY_CONNECTED",
                [part, matrix, -1],
                [held],
                g.options("FullyConnectedOptions"),
            )
            hit = self._binary(
                "EQUAL", held, g.const(f"{p}t{k}_path_lengths", counts), f"{p}t{k}_hit", bool
            )
            onehot = g.activation(f"{p}t{k}_leaf", np.float32, len(leaves))
            g.op("CAST", [hit], [onehot], self._cast_options(np.bool_, np.float32))
            slots.append(onehot)
            start += n
        n_slots = sum(r.shape[0] for r in leaf_rows)
        if len(slots) > 1:
            allslots = g.activation(p + "leaves", np.float32, n_slots)
            g.op(
                "CONCATENATION",
                slots,
                [allslots],
                g.options("ConcatenationOptions", axis=1),
            )
        else:
            allslots = slots[0]
        values = self._weights(p + "leaf_values", np.ascontiguousarray(np.concatenate(leaf_rows).T))
        out = g.activation(p + "sum", np.float32, width)
        g.op(
            "FULLY_CONNECTED",
            [allslots, values, -1],
            [out],
            g.options("FullyConnectedOptions"),
        )
        if step.aggregation is Aggregation.MEAN:
            n_trees = g.const(p + "n_trees", np.array([step.n_trees], dtype=np.float32))
            out = self._binary("DIV", out, n_trees, p + "mean")
            base = self._weights(p + "base_score", step.base_score)
            out = self._binary("ADD", out, base, p + "scores")
        return out

    def _path_matrix(self, name: str, paths: np.ndarray) -> int:
        """The +1/-1/0 path matrix, stored as int8 and widened by DEQUANTIZE (exact)."""
        from fedge.deployment.formats.tflite_graph import Quant

        g = self.g
        stored = g.const(name + "_int8", paths.astype(np.int8), Quant.of(1.0, 0))
        out = g.intermediate(name, np.float32, paths.shape)
        g.op("DEQUANTIZE", [stored], [out])
        return out

    def _always(self, cond: int, name: str) -> int:
        """A (batch, 1) tensor of ones (from the 0/1 conditions, never NaN), made once."""
        if self._ones is None:
            self._ones = self._ones_for(cond, name)
        return self._ones

    def _cast_options(self, src: Any, dst: Any) -> Any:
        g = self.g
        T = g._s.TensorType
        names = {np.dtype(np.bool_): T.BOOL, np.dtype(np.float32): T.FLOAT32}
        return g.options(
            "CastOptions", inDataType=names[np.dtype(src)], outDataType=names[np.dtype(dst)]
        )

    # ---- links
    def _link(self, s: int) -> list[tuple[str, str, int]]:
        m, g = self.model, self.g
        if m.task is Task.REGRESSION:
            if m.link is Link.EXP:
                pred = self._unary("EXP", s, "prediction")
                return [("scores", "scores", s), ("prediction", "prediction", pred)]
            return [("prediction", "prediction", s)]
        link = m.link
        one = g.const("one", np.array([1.0], dtype=np.float32))
        if link in (Link.NONE, Link.IDENTITY):
            if link is Link.IDENTITY:
                return [("probabilities", "probabilities", s)]
            return [("scores", "scores", s)]
        if link is Link.SOFTMAX:
            p = g.activation("probabilities", np.float32, g.width_of(s))
            g.op("SOFTMAX", [s], [p], g.options("SoftmaxOptions", beta=1.0))
            return [("scores", "scores", s), ("probabilities", "probabilities", p)]
        if link is Link.LOGISTIC:
            p = self._sigmoid(s, "p_positive")
            return [("scores", "scores", s), ("probabilities", "probabilities", self._pair(p))]
        if link is Link.LOGISTIC_OVR:
            p = self._sigmoid(s, "p_ovr")
            return [("scores", "scores", s), ("probabilities", "probabilities", self._rows(p))]
        if link is Link.MODIFIED_HUBER:
            lo = self._binary(
                "MAXIMUM", s, g.const("minus_one", np.array([-1.0], np.float32)), "huber_low"
            )
            c = self._binary("MINIMUM", lo, one, "huber_clipped")
            c = self._binary("ADD", c, one, "huber_shifted")
            p = self._binary("DIV", c, g.const("two", np.array([2.0], np.float32)), "p_huber")
            probs = self._pair(p) if g.width_of(s) == 1 else self._rows(p)
            return [("scores", "scores", s), ("probabilities", "probabilities", probs)]
        raise UnsupportedModelError(  # pragma: no cover (Model validation rules out the rest)
            f"link {link.value!r} has no TFLite form"
        )

    def _sigmoid(self, s: int, name: str) -> int:
        """``1 / (1 + EXP(-s))``, fedge's operations (TFLite's float LOGISTIC kernel is off
        by up to 1e-4 relative for small outputs, which the one-vs-rest division magnifies)."""
        g = self.g
        one = g.const("one", np.array([1.0], dtype=np.float32))
        neg = self._binary(
            "MUL", s, g.const("minus_one", np.array([-1.0], np.float32)), name + "_neg"
        )
        e = self._unary("EXP", neg, name + "_exp")
        d = self._binary("ADD", one, e, name + "_denominator")
        return self._binary("DIV", one, d, name)

    def _pair(self, p: int) -> int:
        """``[1 - p, p]`` from the positive class's probability."""
        g = self.g
        one = g.const("one", np.array([1.0], dtype=np.float32))
        q = self._binary("SUB", one, p, "p_negative")
        out = g.activation("probabilities", np.float32, 2)
        g.op("CONCATENATION", [q, p], [out], g.options("ConcatenationOptions", axis=1))
        return out

    def _rows(self, p: int) -> int:
        """Each row divided by its sum; a row summing to 0 becomes uniform (sklearn's rule)."""
        g = self.g
        k = g.width_of(p)
        total = g.activation("row_sum", np.float32, 1)
        g.op(
            "SUM",
            [p, g.const("axis_1", np.array([1], dtype=np.int32))],
            [total],
            g.options("ReducerOptions", keepDims=True),
        )
        zero = self._binary(
            "EQUAL", total, g.const("zero", np.array([0.0], np.float32)), "row_is_zero", bool
        )
        p1 = g.activation("p_or_one", np.float32, k)
        g.op(
            "SELECT_V2",
            [zero, g.const("one", np.array([1.0], np.float32)), p],
            [p1],
            g.options("SelectV2Options"),
        )
        t1 = g.activation("row_total", np.float32, 1)
        g.op(
            "SELECT_V2",
            [zero, g.const("n_classes", np.array([float(k)], np.float32)), total],
            [t1],
            g.options("SelectV2Options"),
        )
        out = g.activation("probabilities", np.float32, k)
        g.op("DIV", [p1, t1], [out], g.options("DivOptions"))
        return out


def _paths(tree: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tree's path matrix ``(n_slots, n_splits)`` (+1: the leaf lies left of the split,
    -1: right, 0: not on its path), each slot's number of left turns, and the local leaf
    row of each slot. A slot is one leaf reference; a row reaches slot ``s`` exactly when
    ``conditions @ paths[s] == lefts[s]`` (the conditions being 1 for "goes left")."""
    n = tree.n_splits
    rows: list[np.ndarray] = []
    lefts: list[int] = []
    leaves: list[int] = []
    if n == 0:
        return np.zeros((1, 0), dtype=np.int8), np.zeros(1, np.float32), np.array([~tree.root])
    stack: list[tuple[int, list[tuple[int, int]]]] = [(int(tree.root), [])]
    while stack:
        ref, path = stack.pop()
        if ref < 0:
            row = np.zeros(n, dtype=np.int8)
            for node, sign in path:
                row[node] = sign
            rows.append(row)
            lefts.append(sum(1 for _, sign in path if sign > 0))
            leaves.append(~ref)
            continue
        # Right first so that slots come out left to right.
        stack.append((int(tree.right[ref]), [*path, (ref, -1)]))
        stack.append((int(tree.left[ref]), [*path, (ref, 1)]))
    return np.stack(rows), np.array(lefts, dtype=np.float32), np.array(leaves, dtype=np.int64)


def tree_elements(step: TreeEnsemble | QuantizedTrees) -> int:
    """Path-matrix elements the TFLite form of ``step`` needs: the sum over trees of
    splits x leaf slots (a tree with ``n`` splits has ``n + 1`` leaf slots)."""
    splits = np.zeros(step.n_trees, dtype=np.int64)
    tree_of = np.flatnonzero(step.roots >= 0)
    frontier = step.roots[tree_of]
    while frontier.size:  # one tree level per iteration, all trees at once
        splits += np.bincount(tree_of, minlength=step.n_trees)
        kids = np.concatenate([step.left[frontier], step.right[frontier]])
        owners = np.concatenate([tree_of, tree_of])
        keep = kids >= 0
        frontier, tree_of = kids[keep], owners[keep]
    return int(np.sum(splits * (splits + 1)))


# --------------------------------------------------------------------------- int8 graphs
def _range_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 quantization of ``[lo, hi]`` widened to hold 0 (TFLite's rule)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    zero = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero


class _Int8Writer:
    """Full-integer graph: int8 input, weights and activations, int32 biases."""

    def __init__(self, model: Model, representative: Any) -> None:
        from fedge.deployment.formats.tflite_graph import Graph

        self.source = model
        self.g = Graph()
        self.notes: list[str] = []
        self.rep = representative

    def _split(self) -> tuple[tuple[Impute | Affine, ...], list[QuantizedDense]]:
        m = self.source
        k = 0
        while k < len(m.steps) and isinstance(m.steps[k], Impute | Affine):
            k += 1
        host = tuple(m.steps[:k])
        layers: list[QuantizedDense] = []
        for i, step in enumerate(m.steps[k:], start=k):
            if isinstance(step, TreeEnsemble | QuantizedTrees):
                raise UnsupportedModelError(
                    "int8 TFLite export covers linear models and MLPs; export tree ensembles "
                    "with precision='float32' or 'float16' (exact branches), or as C with "
                    "integer trees (QuantizedTrees)"
                )
            if not isinstance(step, Linear | Dense | QuantizedDense):
                raise UnsupportedModelError(
                    f"int8 TFLite export needs imputers and scalers first, then layers; step {i} "
                    f"is a {type(step).__name__} after a layer"
                )
            layers.append(self._quantize(i, step))
        if m.link is Link.EXP:
            raise UnsupportedModelError(
                "int8 TFLite export has no exp link (Poisson/Gamma/Tweedie regression); "
                "export it with precision='float32' or 'float16'"
            )
        return host, layers

    def _quantize(self, i: int, step: Linear | Dense | QuantizedDense) -> QuantizedDense:
        """int8 symmetric weights (zero point 0, as TFLite's int8 kernels require)."""
        from fedge.compression.quantization import quantize_weights

        if isinstance(step, QuantizedDense):
            ok = (
                step.weights.dtype == np.int8
                and not np.any(step.zero_point)
                and step.input_bits == 0
                and not np.any(step.weights == -128)
            )
            if ok:
                return step
            self.notes.append(
                f"step {i}: {step.weights.dtype} weights with zero points or dynamic inputs "
                "requantized to symmetric int8 from their dequantized values"
            )
            weights = step.dequantized().astype(np.float64)
            bias, act = step.bias, step.activation
        else:
            weights, bias = step.weights.astype(np.float64), step.bias
            act = step.activation if isinstance(step, Dense) else Activation.IDENTITY
        q, scale, zero = quantize_weights(weights, 8, per_channel=True, symmetric=True)
        return QuantizedDense(
            weights=q,
            scale=scale,
            zero_point=zero,
            bias=np.asarray(bias, dtype=np.float32),
            activation=act,
        )

    def _representative(self, host: tuple[Impute | Affine, ...]) -> np.ndarray:
        if self.rep is None:
            raise InvalidInputError(
                "int8 export needs representative_data: rows like the model's inputs "
                "(e.g. a few hundred training rows), to fix the int8 ranges"
            )
        X = runtime.check_input(self.source, self.rep, "device")
        if X.shape[0] == 0:
            raise InvalidInputError("representative_data has no rows")
        h = X.astype(np.float32)
        for step in host:
            h = runtime.step_output(step, h, "device")
        if np.isnan(h).any():
            raise InvalidInputError(
                "representative_data has NaN that no imputer replaces; int8 inputs cannot hold NaN"
            )
        return h

    def build(self) -> _Built:
        from fedge.deployment.formats.tflite_graph import Quant

        m, g = self.source, self.g
        host, layers = self._split()
        binary_logistic = m.link is Link.LOGISTIC and layers[-1].n_outputs == 1
        if binary_logistic:
            # Two columns [-z, z]: LOGISTIC gives [1 - p, p] in one int8 op.
            last = layers[-1]
            layers[-1] = dataclasses.replace(
                last,
                weights=np.concatenate([-last.weights, last.weights], axis=1),
                scale=np.repeat(last.scale, 2),
                zero_point=np.repeat(last.zero_point, 2),
                bias=np.concatenate([-last.bias, last.bias]),
            )
        h_rep = self._representative(host).astype(np.float64)
        in_q = _range_quant(h_rep.min(), h_rep.max())
        x = g.activation("features", np.int8, h_rep.shape[1], Quant.of(*in_q))
        h, h_q = x, in_q
        ops: list[_Int8Op] = []
        for i, layer in enumerate(layers):
            W = layer.dequantized().astype(np.float64)
            z_rep = h_rep @ W + layer.bias.astype(np.float64)
            act = layer.activation
            if act is Activation.RELU:
                z_rep = np.maximum(z_rep, 0)
            z_q = _range_quant(z_rep.min(), z_rep.max())
            w_scale = np.broadcast_to(layer.scale.astype(np.float64), (layer.n_outputs,))
            per_channel = layer.scale.shape[0] > 1
            wq = g.const(
                f"l{i}_weights",
                np.ascontiguousarray(layer.weights.T),
                Quant.of(layer.scale, layer.zero_point, axis=0),
            )
            b_scale = np.float64(h_q[0]) * w_scale
            bias = np.rint(layer.bias.astype(np.float64) / b_scale)
            bias = np.clip(bias, -(2**31) + 1, 2**31 - 1).astype(np.int32)
            bq = g.const(
                f"l{i}_bias",
                bias,
                Quant.of(b_scale if per_channel else b_scale[:1], 0, axis=0),
            )
            z = g.activation(f"l{i}_linear", np.int8, layer.n_outputs, Quant.of(*z_q))
            fused = "RELU" if act is Activation.RELU else "NONE"
            g.op(
                "FULLY_CONNECTED",
                [h, wq, bq],
                [z],
                g.options(
                    "FullyConnectedOptions",
                    fusedActivationFunction=getattr(g._s.ActivationFunctionType, fused),
                ),
            )
            ops.append(
                _Int8Op(
                    f"layer {i} fully_connected",
                    "fully_connected",
                    h,
                    z,
                    h_q,
                    z_q,
                    weights=W,
                    bias=bias.astype(np.float64) * b_scale,
                    relu=act is Activation.RELU,
                )
            )
            h, h_q = z, z_q
            if act in (Activation.TANH, Activation.LOGISTIC):
                kind = act.value
                h_q = (1.0 / 128.0, 0) if act is Activation.TANH else (1.0 / 256.0, -128)
                h = g.activation(f"l{i}_{kind}", np.int8, layer.n_outputs, Quant.of(*h_q))
                g.op(kind.upper(), [z], [h])
                ops.append(_Int8Op(f"layer {i} {kind}", kind, z, h, z_q, h_q))
                z_rep = np.tanh(z_rep) if act is Activation.TANH else 1 / (1 + np.exp(-z_rep))
            h_rep = z_rep
        outputs: list[tuple[str, str, tuple[float, int] | None]]
        prob_q = (1.0 / 256.0, -128)
        if m.task is Task.REGRESSION:
            out, outputs = h, [("prediction", "prediction", h_q)]
        elif binary_logistic or m.link is Link.SOFTMAX:
            out = g.activation("probabilities", np.int8, g.width_of(h), Quant.of(*prob_q))
            if binary_logistic:
                g.op("LOGISTIC", [h], [out])
            else:
                g.op("SOFTMAX", [h], [out], g.options("SoftmaxOptions", beta=1.0))
            kind = "logistic" if binary_logistic else "softmax"
            ops.append(_Int8Op(f"link {kind}", kind, h, out, h_q, prob_q))
            outputs = [("probabilities", "probabilities", prob_q)]
        elif m.link is Link.IDENTITY:
            out, outputs = h, [("probabilities", "probabilities", h_q)]
        else:
            out, outputs = h, [("scores", "scores", h_q)]
            if m.link is not Link.NONE:
                self.notes.append(
                    f"link {m.link.value!r}: the int8 graph outputs the scores (labels follow "
                    "from them); its probabilities need a division int8 kernels do not offer"
                )
        g.tensors[out].name = outputs[0][0]
        reference = dataclasses.replace(
            m,
            steps=(*host, *self._reference_layers(layers, binary_logistic)),
        )
        content = g.finish(
            [x],
            [out],
            description=_description(m, "int8"),
            metadata=_metadata(m, "int8", outputs, in_q, host),
        )
        return _Built(
            content, reference, "int8", host, in_q, tuple(outputs), tuple(self.notes), tuple(ops)
        )

    @staticmethod
    def _reference_layers(
        layers: list[QuantizedDense], binary_logistic: bool
    ) -> list[QuantizedDense]:
        if not binary_logistic:
            return layers
        last = layers[-1]
        half = last.n_outputs // 2
        return [
            *layers[:-1],
            dataclasses.replace(
                last,
                weights=last.weights[:, half:],
                scale=last.scale[half:] if last.scale.shape[0] > 1 else last.scale,
                zero_point=last.zero_point[half:] if last.scale.shape[0] > 1 else last.zero_point,
                bias=last.bias[half:],
            ),
        ]


# --------------------------------------------------------------------------- verification
@dataclass
class TFLiteReport:
    """What :func:`verify_tflite` compared, and how it came out.

    ``max_abs_error`` and ``tolerance`` are per output name; for int8 they are in the
    output's real units and ``max_error_steps`` counts quantization steps of the output.
    ``label_agreement`` is the fraction of rows whose label (or, for regression, nothing)
    equals the numpy runtime's in device mode.
    """

    precision: str
    n_rows: int
    runtime: str
    size_bytes: int
    outputs: tuple[str, ...]
    max_abs_error: dict[str, float]
    tolerance: dict[str, float]
    max_error_steps: dict[str, float] = field(default_factory=dict)
    op_error_steps: dict[str, float] = field(default_factory=dict)
    label_agreement: float | None = None
    labels_identical: bool | None = None
    passed: bool = False
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [
            f"TFLite {self.precision} ({self.size_bytes:,} bytes) on {self.runtime}, "
            f"{self.n_rows} rows: {'PASSED' if self.passed else 'FAILED'}"
        ]
        for name in self.outputs:
            line = (
                f"  {name}: max |error| {self.max_abs_error[name]:.3g} "
                f"(tolerance {self.tolerance[name]:.3g})"
            )
            if name in self.max_error_steps:
                line += f", {self.max_error_steps[name]:.2f} quantization steps"
            parts.append(line)
        for op, steps in self.op_error_steps.items():
            parts.append(f"  int8 {op}: {steps:.2f} quantization steps from exact arithmetic")
        if self.label_agreement is not None:
            parts.append(f"  labels: {self.label_agreement:.2%} identical")
        parts += [f"  note: {n}" for n in self.notes]
        return "\n".join(parts)


def run_tflite(
    content: bytes,
    X: np.ndarray,
    *,
    op_resolver: str = "reference",
    tensors: list[int] | None = None,
) -> Any:
    """Run a ``.tflite`` model on the rows of ``X`` (already in the input's dtype) in the
    LiteRT interpreter; return its outputs in order, or, with ``tensors``, a dict of those
    tensors' values (intermediate ones included). ``op_resolver``: ``"reference"`` (the
    reference kernels, closest to TFLite Micro) or ``"builtin"`` (optimized kernels)."""
    Interpreter, OpResolverType = _interpreter_class()
    kinds = {"reference": OpResolverType.BUILTIN_REF, "builtin": OpResolverType.BUILTIN}
    if op_resolver not in kinds:
        raise InvalidInputError(
            f"op_resolver must be 'reference' or 'builtin', got {op_resolver!r}"
        )
    with warnings.catch_warnings():
        # Nothing is expected here; this only keeps LiteRT's own deprecation notices (if
        # a version adds one) from failing a caller that runs with warnings as errors.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ai_edge_litert")
        # Reading intermediate tensors needs them preserved; LiteRT warns that this is a
        # debugging aid when the builtin kernels are used (not with the reference ones).
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        interp = Interpreter(
            model_content=content,
            experimental_op_resolver_type=kinds[op_resolver],
            experimental_preserve_all_tensors=tensors is not None,
            num_threads=1,
        )
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(X.shape), strict=True)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(X, dtype=inp["dtype"]))
    interp.invoke()
    if tensors is not None:
        return {t: np.array(interp.get_tensor(t)) for t in tensors}
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]


def _labels_from(model: Model, kind: str, values: np.ndarray) -> np.ndarray:
    """Label indices from scores (the model's rule) or probabilities (argmax)."""
    if kind == "probabilities":
        if model.predict_from is PredictFrom.PROBABILITIES and values.shape[1] == 2:
            return (values[:, 1] > 0.5).astype(np.intp)
        return np.argmax(values, axis=1)
    if values.shape[1] == 1:
        if model.predict_from is PredictFrom.SCORES_INCLUSIVE:
            return (values[:, 0] >= 0).astype(np.intp)
        return (values[:, 0] > 0).astype(np.intp)
    return np.argmax(values, axis=1)


def verify_tflite(
    model_or_estimator: Any,
    X: Any,
    *,
    precision: str = "float32",
    representative_data: Any = None,
    op_resolver: str = "reference",
    max_tree_elements: int = DEFAULT_MAX_TREE_ELEMENTS,
) -> TFLiteReport:
    """Export, run the file in the LiteRT interpreter on ``X`` and compare with fedge's
    numpy runtime in device mode (float32) on the model the file implements.

    Tolerances:

    - float32/float16: labels identical; scores and predictions within ``1e-6`` absolute
      plus ``1e-5`` relative to ``|score|`` plus, for a dot-product output layer, its terms'
      magnitude ``sum_k |h_k w_kj| + |b_j|`` (the interpreter adds the terms in its own
      order, fedge in four lanes: float32 sums in two orders differ by up to about
      ``n * 2**-24`` of that); probabilities within ``1e-6`` plus half that score bound. Tree
      scores are computed in fedge's order with the reference kernels and are usually
      bit-identical.
    - int8: each output within one quantization step of the runtime on the same int8 input
      (the runtime evaluates the int8 weights the file holds, in float); labels compared
      with the runtime on the raw rows, agreement reported (not required).

    ``representative_data`` defaults to ``X`` for int8.
    """
    precision = _check_precision(precision)
    if precision == "int8" and representative_data is None:
        representative_data = X
    built = _build(model_or_estimator, precision, representative_data, max_tree_elements)
    source = lower(model_or_estimator)
    model = built.reference
    X = runtime.check_input(model, X, "device")
    if precision == "int8":
        return _verify_int8(built, source, X, op_resolver)
    results = run_tflite(built.content, X.astype(np.float32), op_resolver=op_resolver)
    errors: dict[str, float] = {}
    tol: dict[str, float] = {}
    ok = True
    labels: np.ndarray | None = None
    magnitude = _dot_magnitude(model, X)
    for (name, kind, _), got in zip(built.outputs, results, strict=True):
        got = got.astype(np.float64).reshape(X.shape[0], -1)
        want = _runtime_output(model, kind, X)
        err = np.abs(got - want)
        if kind == "probabilities":
            # a score error e moves a sigmoid/softmax probability by at most e / 2
            score_err = FLOAT_SCORE_RTOL * magnitude.max(axis=1, keepdims=True)
            bound = FLOAT_PROBABILITY_ATOL + 0.5 * np.broadcast_to(score_err, want.shape)
        else:
            bound = FLOAT_PROBABILITY_ATOL + FLOAT_SCORE_RTOL * (np.abs(want) + magnitude)
        errors[name] = float(np.nanmax(err)) if err.size else 0.0
        tol[name] = float(np.max(bound)) if bound.size else 0.0
        same_nan = np.array_equal(np.isnan(got), np.isnan(want))
        ok &= bool(same_nan and np.all((err <= bound) | np.isnan(want)))
        if model.task is Task.CLASSIFICATION and kind == _label_source(model, built.outputs):
            labels = _labels_from(model, kind, got)
    agreement = identical = None
    if model.task is Task.CLASSIFICATION and labels is not None:
        assert model.classes is not None
        want_labels = runtime.predict(model, X, mode="device")
        same = model.classes[labels] == want_labels
        agreement = float(np.mean(same)) if same.size else 1.0
        identical = bool(np.all(same))
        ok &= identical
    return TFLiteReport(
        precision=precision,
        n_rows=int(X.shape[0]),
        runtime=_runtime_name(op_resolver),
        size_bytes=len(built.content),
        outputs=tuple(n for n, _, _ in built.outputs),
        max_abs_error=errors,
        tolerance=tol,
        label_agreement=agreement,
        labels_identical=identical,
        passed=bool(ok),
        notes=built.notes,
    )


def _label_source(model: Model, outputs: tuple[tuple[str, str, Any], ...]) -> str:
    """The output labels are decided on: probabilities when the model says so (or when
    there are no scores), else the scores."""
    kinds = [kind for _, kind, _ in outputs]
    if model.predict_from is PredictFrom.PROBABILITIES or "scores" not in kinds:
        return "probabilities"
    return "scores"


def _dot_magnitude(model: Model, X: np.ndarray) -> np.ndarray:
    """Per row and score, ``sum_k |h_k w_kj| + |b_j|`` of a last dot-product layer (``h``: its
    input in device mode), else 0. Two float32 dot products that add the same terms in
    different orders (the interpreter's kernel, fedge's lanes) differ by up to about
    ``n * 2**-24`` times this, which can dwarf a score near 0."""
    from fedge.ir.nodes import Dense, Linear, QuantizedDense

    last = model.steps[-1]
    if isinstance(last, QuantizedDense) and last.input_bits == 0:
        weights = last.dequantized()
    elif isinstance(last, Linear | Dense):
        weights = last.weights
    else:
        return np.zeros((X.shape[0], 1))
    h = X.astype(np.float32)
    for step in model.steps[:-1]:
        h = runtime.step_output(step, h, "device")
    terms = np.abs(h.astype(np.float64)) @ np.abs(np.asarray(weights, dtype=np.float64))
    return terms + np.abs(np.asarray(last.bias, dtype=np.float64))


def _runtime_output(model: Model, kind: str, X: np.ndarray) -> np.ndarray:
    if kind == "probabilities":
        return runtime.predict_proba(model, X, mode="device").astype(np.float64)
    if kind == "prediction":
        return runtime.predict(model, X, mode="device").astype(np.float64).reshape(X.shape[0], -1)
    scores = runtime.decision_function(model, X, mode="device").astype(np.float64)
    return scores.reshape(X.shape[0], -1)


def _runtime_name(op_resolver: str) -> str:
    try:
        from importlib.metadata import version

        v = version("ai-edge-litert")
    except Exception:  # pragma: no cover (metadata missing in odd installs)
        v = "?"
    kernels = "reference kernels" if op_resolver == "reference" else "builtin kernels"
    return f"ai-edge-litert {v} Interpreter ({kernels})"


def _float_op(op: _Int8Op, x: np.ndarray) -> np.ndarray:
    """What ``op`` computes in exact (float64) arithmetic on its dequantized int8 input."""
    if op.kind == "fully_connected":
        assert op.weights is not None and op.bias is not None
        z = x @ op.weights + op.bias
        return np.maximum(z, 0) if op.relu else z
    if op.kind == "tanh":
        return np.tanh(x)
    if op.kind == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _verify_int8(built: _Built, source: Model, X: np.ndarray, op_resolver: str) -> TFLiteReport:
    model = built.reference
    h = X.astype(np.float32)
    for step in built.host_steps:
        h = runtime.step_output(step, h, "device")
    assert built.input_quant is not None
    s_in, z_in = built.input_quant
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint(h.astype(np.float64) / s_in) + z_in, -128, 127).astype(np.int8)
    tensors = {op.inp for op in built.int8_ops} | {op.out for op in built.int8_ops}
    values = run_tflite(built.content, q, op_resolver=op_resolver, tensors=sorted(tensors))
    # Per operator: its int8 output against exact arithmetic on its own int8 inputs.
    op_steps: dict[str, float] = {}
    for op in built.int8_ops:
        x = (values[op.inp].astype(np.float64) - op.in_q[1]) * op.in_q[0]
        y = (values[op.out].astype(np.float64) - op.out_q[1]) * op.out_q[0]
        want = _float_op(op, x.reshape(X.shape[0], -1))
        # A saturated output is right when the exact value lies beyond the int8 range.
        lo = (-128 - op.out_q[1]) * op.out_q[0]
        hi = (127 - op.out_q[1]) * op.out_q[0]
        err = np.abs(y.reshape(want.shape) - np.clip(want, lo, hi))
        op_steps[op.name] = float(err.max() / op.out_q[0]) if err.size else 0.0
    ((name, kind, out_q),) = built.outputs
    assert out_q is not None
    last = built.int8_ops[-1].out
    got = ((values[last].astype(np.float64) - out_q[1]) * out_q[0]).reshape(X.shape[0], -1)
    want = _runtime_output(
        source if kind != "probabilities" or _has_proba(source) else model, kind, X
    )
    err = np.abs(got - want)
    agreement = identical = None
    if model.task is Task.CLASSIFICATION:
        assert model.classes is not None
        labels = model.classes[_labels_from(model, kind, got)]
        same = labels == runtime.predict(source, X, mode="device")
        agreement = float(np.mean(same)) if same.size else 1.0
        identical = bool(np.all(same))
    return TFLiteReport(
        precision="int8",
        n_rows=int(X.shape[0]),
        runtime=_runtime_name(op_resolver),
        size_bytes=len(built.content),
        outputs=(name,),
        max_abs_error={name: float(np.max(err)) if err.size else 0.0},
        tolerance={name: float(out_q[0])},
        max_error_steps={name: float(np.max(err) / out_q[0]) if err.size else 0.0},
        op_error_steps=op_steps,
        label_agreement=agreement,
        labels_identical=identical,
        passed=all(v <= INT8_OP_TOLERANCE_STEPS for v in op_steps.values()),
        notes=built.notes,
    )


def _has_proba(model: Model) -> bool:
    return model.task is Task.CLASSIFICATION and model.link is not Link.NONE
