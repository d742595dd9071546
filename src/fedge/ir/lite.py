"""The lite format: one versioned schema of an IR model, in two encodings.

- ``.json``: readable UTF-8 JSON, written by one canonical writer. ``sha256`` is
  the SHA-256 of the compact canonical form of ``model``; on load the file must
  also equal its own canonical re-serialisation, so any changed byte, even
  white space, is detected.
- ``.fedge``: a 54-byte prefix (magic, version, flags, lengths, SHA-256), a
  compact JSON header describing the model with arrays replaced by references,
  then the arrays' raw little-endian bytes at their stored precision. The
  digest covers every byte but itself. Its length is "the model's size".

Both round-trip bit-identically; the same model always gives the same bytes.
Loading is hostile-file safe: every field is type-checked and every size is
checked before anything is allocated; failures raise :class:`ModelFormatError`,
:class:`IntegrityError` (altered bytes) or :class:`InvalidModelError` (a
well-formed file describing a broken model). See ``docs/lite-format.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import IntegrityError, ModelFormatError
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
    Step,
    Task,
    TreeEnsemble,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "from_binary_bytes",
    "from_json_bytes",
    "is_lite",
    "load_lite",
    "save_lite",
    "to_binary_bytes",
    "to_json_bytes",
]

FORMAT_NAME = "fedge-lite"
FORMAT_VERSION = 1
MAGIC = b"FEDGE\x00"
_PREFIX = struct.Struct("<6sHHIQ")  # magic, version, flags, header length, data length
_DIGEST_SIZE = 32
_HEAD_SIZE = _PREFIX.size + _DIGEST_SIZE
_JSON_START = b'{\n  "format": "fedge-lite",\n  "version": '
_JSON_PREFIX = _JSON_START + b"%d,\n" % FORMAT_VERSION
_MAX_ELEMENTS = 2**31  # sanity cap on one array, checked before allocating

_F = ("float64", "float32")
_I = ("int32",)
_B = ("bool",)
_DTYPES = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("?"),
}


class _Kind:
    """What one step type stores: arrays (allowed dtypes), enums and integers."""

    def __init__(
        self,
        cls: type,
        arrays: dict[str, tuple[str, ...]],
        enums: dict[str, type[Enum]] | None = None,
        ints: tuple[str, ...] = (),
    ) -> None:
        self.cls, self.arrays, self.enums, self.ints = cls, arrays, enums or {}, ints

    @property
    def keys(self) -> set[str]:
        return {"type", *self.arrays, *self.enums, *self.ints}


_STEPS: dict[str, _Kind] = {
    "impute": _Kind(Impute, {"fill": _F}),
    "affine": _Kind(Affine, {"offset": _F, "scale": _F}, {"order": AffineOrder}),
    "linear": _Kind(Linear, {"weights": _F, "bias": _F}),
    "dense": _Kind(Dense, {"weights": _F, "bias": _F}, {"activation": Activation}),
    "tree_ensemble": _Kind(
        TreeEnsemble,
        {
            "feature": _I,
            "threshold": _F,
            "left": _I,
            "right": _I,
            "missing_left": _B,
            "leaf_values": _F,
            "roots": _I,
            "tree_offset": _I,
            "base_score": _F,
        },
        {"comparison": Comparison, "aggregation": Aggregation, "input_precision": Precision},
        ("n_features", "n_outputs"),
    ),
}
_STEP_NAMES = {kind.cls: name for name, kind in _STEPS.items()}
_MODEL_KEYS = {
    "task",
    "n_features",
    "link",
    "predict_from",
    "classes",
    "feature_names",
    "metadata",
    "steps",
}
_CLASS_DTYPES = {"int64": int, "float64": float, "bool": bool, "str": str}


# =========================================================================== public API
def save_lite(model: Model, path: str | os.PathLike[str]) -> int:
    """Write ``model`` to ``path`` (``.json`` or ``.fedge``) atomically; return bytes written."""
    p = Path(path)
    encoders = {".json": to_json_bytes, ".fedge": to_binary_bytes}
    if p.suffix not in encoders:
        raise ModelFormatError(
            f"cannot tell the lite encoding from {p.name!r}: use a .json (readable) or "
            ".fedge (compact binary) suffix"
        )
    data = encoders[p.suffix](model)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def load_lite(path: str | os.PathLike[str]) -> Model:
    """Read a lite file in either encoding (told apart by its first bytes)."""
    data = Path(path).read_bytes()
    if data.startswith(MAGIC):
        return from_binary_bytes(data)
    return from_json_bytes(data)


def is_lite(prefix: bytes) -> bool:
    """Whether a file starting with ``prefix`` claims to be a lite file (either encoding)."""
    return prefix.startswith(MAGIC) or prefix.startswith(_JSON_START[:20])


# =========================================================================== documents
def _model_doc(model: Model, put: Callable[[np.ndarray], dict[str, Any]]) -> dict[str, Any]:
    """The schema's model object; ``put`` encodes each array (inline data or a reference)."""
    steps = []
    for step in model.steps:
        name = _STEP_NAMES[type(step)]
        kind = _STEPS[name]
        doc: dict[str, Any] = {"type": name}
        doc.update({k: put(getattr(step, k)) for k in kind.arrays})
        doc.update({k: getattr(step, k).value for k in kind.enums})
        doc.update({k: int(getattr(step, k)) for k in kind.ints})
        steps.append(doc)
    return {
        "task": model.task.value,
        "n_features": model.n_features,
        "link": model.link.value,
        "predict_from": model.predict_from.value,
        "classes": _classes_doc(model.classes),
        "feature_names": None if model.feature_names is None else list(model.feature_names),
        "metadata": dict(model.metadata),
        "steps": steps,
    }


def _classes_doc(classes: np.ndarray | None) -> dict[str, Any] | None:
    if classes is None:
        return None
    kind = classes.dtype.kind
    if kind in "iu":
        if classes.size and (int(classes.max()) > 2**63 - 1):
            raise ModelFormatError("integer class labels above 2**63 - 1 cannot be saved")
        return {"dtype": "int64", "values": [int(v) for v in classes.tolist()]}
    name = {"f": "float64", "b": "bool", "U": "str"}[kind]
    return {"dtype": name, "values": classes.tolist()}


def _model_from_doc(doc: Any, take: Callable[[Any, str, tuple[str, ...]], np.ndarray]) -> Model:
    """Build a Model from a parsed document; ``take`` decodes one array field."""
    _keys(doc, _MODEL_KEYS, "model")
    steps_doc = doc["steps"]
    if not isinstance(steps_doc, list) or not steps_doc:
        raise ModelFormatError("model.steps must be a non-empty list")
    steps = [_step_from_doc(s, i, take) for i, s in enumerate(steps_doc)]
    names = doc["feature_names"]
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise ModelFormatError("model.feature_names must be null or a list of strings")
    if not isinstance(doc["metadata"], dict):
        raise ModelFormatError("model.metadata must be an object")
    return Model(
        steps=tuple(steps),
        task=_enum(doc["task"], Task, "model.task"),
        n_features=_int(doc["n_features"], "model.n_features"),
        link=_enum(doc["link"], Link, "model.link"),
        classes=_classes_from_doc(doc["classes"]),
        predict_from=_enum(doc["predict_from"], PredictFrom, "model.predict_from"),
        feature_names=None if names is None else tuple(names),
        metadata=doc["metadata"],
    )


def _step_from_doc(doc: Any, index: int, take: Callable[..., np.ndarray]) -> Step:
    where = f"model.steps[{index}]"
    if not isinstance(doc, dict) or doc.get("type") not in _STEPS:
        kinds = ", ".join(sorted(_STEPS))
        raise ModelFormatError(f"{where}.type must be one of {kinds}")
    kind = _STEPS[doc["type"]]
    _keys(doc, kind.keys, where)
    fields: dict[str, Any] = {k: take(doc[k], f"{where}.{k}", v) for k, v in kind.arrays.items()}
    fields.update({k: _enum(doc[k], e, f"{where}.{k}") for k, e in kind.enums.items()})
    fields.update({k: _int(doc[k], f"{where}.{k}") for k in kind.ints})
    return kind.cls(**fields)


def _classes_from_doc(doc: Any) -> np.ndarray | None:
    if doc is None:
        return None
    _keys(doc, {"dtype", "values"}, "model.classes")
    py = _CLASS_DTYPES.get(doc["dtype"])
    values = doc["values"]
    if py is None or not isinstance(values, list):
        raise ModelFormatError("model.classes needs a dtype (int64, float64, bool, str) and values")
    if not all(type(v) is py or (py is float and type(v) is int) for v in values):
        raise ModelFormatError(f"model.classes values must all be {doc['dtype']}")
    if py is int and any(not -(2**63) <= v < 2**63 for v in values):
        raise ModelFormatError("model.classes values exceed int64")
    if py is float and not all(math.isfinite(v) for v in values):
        raise ModelFormatError("model.classes values must be finite")
    return np.array(values, dtype=str if py is str else doc["dtype"])


def _keys(doc: Any, expected: set[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{where} must be an object")
    missing, extra = expected - doc.keys(), doc.keys() - expected
    if missing or extra:
        raise ModelFormatError(
            f"{where} has missing keys {sorted(missing)} / unknown keys {sorted(extra)}"
        )


def _enum(value: Any, enum: type[Enum], where: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)  # type: ignore[attr-defined]
        raise ModelFormatError(f"{where} must be one of {allowed}, got {value!r}") from None


def _int(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value < 2**31:
        raise ModelFormatError(f"{where} must be an integer in [0, 2**31), got {value!r}")
    return value


def _shape(
    doc: dict[str, Any], where: str, allowed: tuple[str, ...]
) -> tuple[np.dtype, tuple[int, ...]]:
    dtype, shape = doc["dtype"], doc["shape"]
    if dtype not in allowed:
        raise ModelFormatError(f"{where}.dtype must be one of {', '.join(allowed)}, got {dtype!r}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2:
        raise ModelFormatError(f"{where}.shape must be a list of 1 or 2 sizes")
    dims = tuple(_int(d, f"{where}.shape") for d in shape)
    if math.prod(dims) > _MAX_ELEMENTS:
        raise ModelFormatError(f"{where} declares {math.prod(dims)} elements, above the limit")
    return _DTYPES[dtype], dims


# =========================================================================== JSON encoding
def _json_array(arr: np.ndarray) -> dict[str, Any]:
    data = arr.ravel().tolist()
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        data = [v if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in data]
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}


def _json_take(doc: Any, where: str, allowed: tuple[str, ...]) -> np.ndarray:
    _keys(doc, {"dtype", "shape", "data"}, where)
    dtype, shape = _shape(doc, where, allowed)
    data = doc["data"]
    if not isinstance(data, list) or len(data) != math.prod(shape):
        raise ModelFormatError(f"{where}.data must be a list of {math.prod(shape)} values")
    if dtype.kind == "f":
        ok = all(type(v) in (int, float) or v in ("inf", "-inf") for v in data)
        data = [float(v) for v in data] if ok else None
    elif dtype.kind == "i":
        ok = all(type(v) is int and -(2**31) <= v < 2**31 for v in data)
    else:
        ok = all(type(v) is bool for v in data)
    if not ok:
        raise ModelFormatError(f"{where}.data has values that are not {dtype.name}")
    return (
        np.array(data, dtype=np.float64 if dtype.kind == "f" else dtype)
        .astype(dtype)
        .reshape(shape)
    )


def _canonical_compact(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _pretty(value: Any, indent: int) -> str:
    """Objects one key per line (sorted), lists of scalars on one line."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {_pretty(value[k], indent + 1)}"
            for k in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [pad + _pretty(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _json_text(model_doc: dict[str, Any], digest: str) -> bytes:
    body = _pretty(model_doc, 1)
    return _JSON_PREFIX + f'  "sha256": "{digest}",\n  "model": {body}\n}}\n'.encode()


def to_json_bytes(model: Model) -> bytes:
    """The readable, canonical JSON encoding of ``model``."""
    doc = _model_doc(model, _json_array)
    return _json_text(doc, hashlib.sha256(_canonical_compact(doc)).hexdigest())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def from_json_bytes(data: bytes) -> Model:
    """Parse, verify (digest and canonical form) and validate a JSON lite file."""
    if not data.startswith(_JSON_PREFIX):
        if data.startswith(_JSON_START):
            version = data[len(_JSON_START) :].split(b",", 1)[0][:20]
            raise ModelFormatError(
                f"lite format version {version.decode('ascii', 'replace')} is not supported "
                f"(this fedge reads version {FORMAT_VERSION}); upgrade fedge"
            )
        raise ModelFormatError("not a fedge lite file (it does not start with the lite header)")
    try:
        top = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"the lite file is corrupted: {exc}") from None
    if not isinstance(top, dict) or set(top) != {"format", "version", "sha256", "model"}:
        raise IntegrityError("the lite file is corrupted: wrong top-level keys")
    model_doc, digest = top["model"], top["sha256"]
    try:
        actual = hashlib.sha256(_canonical_compact(model_doc)).hexdigest()
        canonical = _json_text(model_doc, actual) if isinstance(model_doc, dict) else b""
    except (TypeError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"the lite file is corrupted: {exc}") from None
    if not isinstance(digest, str) or digest != actual:
        raise IntegrityError("the lite file's SHA-256 does not match its content: it was altered")
    if canonical != data:
        raise IntegrityError(
            "the lite file is not in canonical form: it was edited after fedge wrote it"
        )
    return _model_from_doc(model_doc, _json_take)


# =========================================================================== binary encoding
def to_binary_bytes(model: Model) -> bytes:
    """The compact binary encoding of ``model`` (its length is the model's size)."""
    chunks: list[bytes] = []
    offset = 0

    def put(arr: np.ndarray) -> dict[str, Any]:
        nonlocal offset
        raw = arr.astype(_DTYPES[arr.dtype.name], copy=False).tobytes()
        ref = {
            "dtype": arr.dtype.name,
            "shape": list(arr.shape),
            "offset": offset,
            "nbytes": len(raw),
        }
        chunks.append(raw)
        offset += len(raw)
        return ref

    header = _canonical_compact(_model_doc(model, put))
    body = b"".join(chunks)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header), len(body))
    digest = hashlib.sha256(prefix + header + body).digest()
    return prefix + digest + header + body


def from_binary_bytes(data: bytes) -> Model:
    """Verify (lengths and digest) and validate a binary lite file."""
    if len(data) < len(MAGIC) or not data.startswith(MAGIC):
        raise ModelFormatError("not a fedge lite file (bad magic bytes)")
    if len(data) < _HEAD_SIZE:
        raise IntegrityError(f"the .fedge file is truncated ({len(data)} bytes)")
    _, version, flags, header_len, data_len = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"lite format version {version} is not supported (this fedge reads version "
            f"{FORMAT_VERSION}); upgrade fedge"
        )
    digest = data[_PREFIX.size : _HEAD_SIZE]
    if hashlib.sha256(data[: _PREFIX.size] + data[_HEAD_SIZE:]).digest() != digest:
        raise IntegrityError(
            "the .fedge file's SHA-256 does not match: it was altered or truncated"
        )
    if flags != 0 or _HEAD_SIZE + header_len + data_len != len(data):
        raise ModelFormatError("the .fedge prefix is inconsistent (flags or lengths)")
    header = data[_HEAD_SIZE : _HEAD_SIZE + header_len]
    body = memoryview(data)[_HEAD_SIZE + header_len :]
    try:
        doc = json.loads(header.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFormatError(f"the .fedge header is not valid JSON: {exc}") from None
    cursor = 0

    def take(ref: Any, where: str, allowed: tuple[str, ...]) -> np.ndarray:
        nonlocal cursor
        _keys(ref, {"dtype", "shape", "offset", "nbytes"}, where)
        dtype, shape = _shape(ref, where, allowed)
        size = math.prod(shape) * dtype.itemsize
        if ref["offset"] != cursor or ref["nbytes"] != size or cursor + size > len(body):
            raise ModelFormatError(f"{where} points outside the data section or out of order")
        arr = np.frombuffer(body[cursor : cursor + size], dtype=dtype).reshape(shape)
        cursor += size
        if dtype.kind == "b" and np.any(np.frombuffer(arr.tobytes(), np.uint8) > 1):
            raise ModelFormatError(f"{where} has bool bytes other than 0 and 1")
        return arr.astype(dtype.newbyteorder("="))

    model = _model_from_doc(doc, take)
    if cursor != len(body):
        raise ModelFormatError(f"the data section has {len(body) - cursor} unused bytes")
    return model
