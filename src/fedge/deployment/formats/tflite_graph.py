"""A small writer of TFLite FlatBuffers over the schema bindings that ship with LiteRT.

:class:`Graph` collects tensors, constant buffers and operators of one subgraph and
packs them into a ``.tflite`` file with the FlatBuffers object API of
``ai_edge_litert.schema_py_generated`` (no TensorFlow). Everything it writes is a pure
function of the calls made, so equal graphs give equal bytes.

Activation tensors have a dynamic batch dimension: shape ``[1, k]`` with the signature
``[-1, k]``, resized by the interpreter to the rows it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Graph", "Quant", "schema"]

# Buffers (constant tensors) start on this boundary inside the file, as the TFLite
# converter aligns them: kernels may read them in place with wide loads.
_ALIGN = 16
# Builtin operators above this code are stored in the extended ``builtin_code`` field.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def schema() -> Any:
    """The ``schema_py_generated`` module of ai_edge_litert (imported lazily)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


_TYPES = {
    np.dtype(np.float32): "FLOAT32",
    np.dtype(np.float16): "FLOAT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int64): "INT64",
    np.dtype(np.bool_): "BOOL",
}


@dataclass(frozen=True)
class Quant:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``; several scales
    quantize along ``axis`` (per channel)."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @staticmethod
    def of(scale: Any, zero_point: Any, axis: int = 0) -> Quant:
        s = tuple(float(v) for v in np.atleast_1d(np.asarray(scale, dtype=np.float32)))
        z = tuple(int(v) for v in np.atleast_1d(np.asarray(zero_point, dtype=np.int64)))
        if len(z) == 1 and len(s) > 1:
            z = z * len(s)
        return Quant(s, z, axis)


class Graph:
    """One subgraph being written; tensor ids are returned by :meth:`const` and
    :meth:`activation` and passed to :meth:`op`."""

    def __init__(self) -> None:
        self._s = schema()
        self.tensors: list[Any] = []
        self.buffers: list[bytes | None] = [None]  # buffer 0 is the empty sentinel
        self.operators: list[Any] = []
        self.opcodes: dict[int, int] = {}
        self.opcode_list: list[int] = []
        self._names: set[str] = set()
        self._const_cache: dict[tuple[bytes, str, tuple[int, ...], Quant | None], int] = {}

    # ------------------------------------------------------------------ tensors
    def _name(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def _quant(self, q: Quant | None) -> Any:
        if q is None:
            return None
        qp = self._s.QuantizationParametersT()
        qp.scale = list(q.scale)
        qp.zeroPoint = list(q.zero_point)
        qp.quantizedDimension = q.axis
        return qp

    def const(self, name: str, array: Any, quant: Quant | None = None) -> int:
        """A constant tensor holding ``array`` (its dtype is the tensor's type). Equal
        constants (bytes, dtype, shape, quantization) share one tensor."""
        arr = np.ascontiguousarray(array)
        if arr.dtype not in _TYPES:
            raise TypeError(f"no TFLite tensor type for {arr.dtype}")
        key = (arr.tobytes(), arr.dtype.str, arr.shape, quant)
        if key in self._const_cache:
            return self._const_cache[key]
        self.buffers.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        t = self._s.TensorT()
        t.shape = [int(d) for d in arr.shape]
        t.type = getattr(self._s.TensorType, _TYPES[arr.dtype])
        t.buffer = len(self.buffers) - 1
        t.name = self._name(name)
        t.quantization = self._quant(quant)
        self.tensors.append(t)
        self._const_cache[key] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def activation(
        self, name: str, dtype: Any, width: int | None, quant: Quant | None = None
    ) -> int:
        """A tensor computed at run time: ``(batch, width)``, or ``(batch,)`` when ``width``
        is None, with a dynamic batch dimension."""
        t = self._s.TensorT()
        dims = [1] if width is None else [1, int(width)]
        t.shape = dims
        t.shapeSignature = [-1, *dims[1:]]
        t.type = getattr(self._s.TensorType, _TYPES[np.dtype(dtype)])
        t.buffer = 0
        t.name = self._name(name)
        t.quantization = self._quant(quant)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def intermediate(self, name: str, dtype: Any, shape: tuple[int, ...]) -> int:
        """A tensor of fixed ``shape`` computed at run time (e.g. dequantized weights)."""
        t = self._s.TensorT()
        t.shape = [int(d) for d in shape]
        t.type = getattr(self._s.TensorType, _TYPES[np.dtype(dtype)])
        t.buffer = 0
        t.name = self._name(name)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def dtype_of(self, tensor: int) -> np.dtype:
        code = self.tensors[tensor].type
        for dt, name in _TYPES.items():
            if getattr(self._s.TensorType, name) == code:
                return dt
        raise KeyError(code)  # pragma: no cover

    def quant_of(self, tensor: int) -> Quant | None:
        qp = self.tensors[tensor].quantization
        if qp is None:
            return None
        return Quant(tuple(qp.scale), tuple(qp.zeroPoint), qp.quantizedDimension)

    def width_of(self, tensor: int) -> int:
        return int(self.tensors[tensor].shape[-1])

    # ------------------------------------------------------------------ operators
    def op(self, name: str, inputs: list[int], outputs: list[int], options: Any = None) -> None:
        """Append builtin operator ``name`` (e.g. ``"FULLY_CONNECTED"``); ``options`` is the
        matching ``...OptionsT`` object, if the operator has one. ``-1`` marks an
        omitted optional input."""
        code = getattr(self._s.BuiltinOperator, name)
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcode_list)
            self.opcode_list.append(code)
        o = self._s.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        if options is not None:
            kind = type(options).__name__.removesuffix("T")
            o.builtinOptionsType = getattr(self._s.BuiltinOptions, kind)
            o.builtinOptions = options
        self.operators.append(o)

    def options(self, kind: str, **fields: Any) -> Any:
        """An options object, e.g. ``options("FullyConnectedOptions", keepNumDims=False)``."""
        obj = getattr(self._s, f"{kind}T")()
        for key, value in fields.items():
            if not hasattr(obj, key):
                raise AttributeError(f"{kind} has no field {key}")
            setattr(obj, key, value)
        return obj

    # ------------------------------------------------------------------ file
    def finish(
        self,
        inputs: list[int],
        outputs: list[int],
        *,
        description: str,
        metadata: dict[str, Any] | None = None,
    ) -> bytes:
        """The ``.tflite`` bytes (file identifier ``TFL3``, schema version 3)."""
        import flatbuffers

        s = self._s
        sub = s.SubGraphT()
        sub.tensors = self.tensors
        sub.inputs = list(inputs)
        sub.outputs = list(outputs)
        sub.operators = self.operators
        sub.name = "main"
        model = s.ModelT()
        model.version = 3
        model.description = description
        codes = []
        for code in self.opcode_list:
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = 1
            codes.append(oc)
        model.operatorCodes = codes
        model.subgraphs = [sub]
        buffers = list(self.buffers)
        if metadata is not None:
            text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False)
            buffers.append(text.encode())
            meta = s.MetadataT()
            meta.name = "fedge"
            meta.buffer = len(buffers) - 1
            model.metadata = [meta]
        sig = s.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs = [self._tensor_map(i) for i in inputs]
        sig.outputs = [self._tensor_map(i) for i in outputs]
        model.signatureDefs = [sig]
        model.buffers = [_AlignedBufferT(data) for data in buffers]
        builder = flatbuffers.Builder(1024 + sum(len(b or b"") + _ALIGN for b in buffers))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _tensor_map(self, tensor: int) -> Any:
        m = self._s.TensorMapT()
        m.name = self.tensors[tensor].name
        m.tensorIndex = tensor
        return m


class _AlignedBufferT:
    """A ``BufferT`` whose bytes start on a 16-byte boundary of the file."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:  # noqa: N802 (the FlatBuffers object-API name)
        s = schema()
        vec = None
        if self.data:
            n = len(self.data)
            builder.StartVector(1, n, _ALIGN)
            builder.head = builder.head - n
            builder.Bytes[builder.head : builder.head + n] = self.data
            builder.vectorNumElems = n
            vec = builder.EndVector()
        s.BufferStart(builder)
        if vec is not None:
            s.BufferAddData(builder, vec)
        return s.BufferEnd(builder)
