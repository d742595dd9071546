"""The lite format: one versioned schema of an IR model, in two encodings.

- ``.json``: readable UTF-8 JSON, written by one canonical writer. ``sha256`` is
  the SHA-256 of the compact canonical form of ``model``; on load the file must
  also equal its own canonical re-serialisation, so any changed byte, even
  white space, is detected.
- ``.fedge``: a 54-byte prefix (magic, version, flags, lengths, SHA-256), a
  compact JSON header describing the model with arrays replaced by references,
  then the arrays' raw little-endian bytes at their stored precision; an array
  with many zeros may be stored sparse (a bitmap or a list of indices of its
  non-zero elements, then their values), when that makes the file shorter. The
  digest covers every byte but itself. Its length is "the model's size".

Both round-trip bit-identically; the same model always gives the same bytes. A
file declares the lowest format version that holds it (version 2 added float16,
int16/int8 and uint16/uint8 arrays, the quantized steps and the compressed data
section; version 3 sparse arrays), so float models are still version 1 files, and
a model with nothing worth storing sparse is written exactly as before version 3.

Loading is hostile-file safe: every field is type-checked and every size is
checked before anything is allocated; failures raise :class:`ModelFormatError`,
:class:`IntegrityError` (altered bytes) or :class:`InvalidModelError` (a
well-formed file describing a broken model). See ``docs/lite-format.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import math
import os
import reprlib
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
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
    QuantizedDense,
    QuantizedTrees,
    Step,
    Task,
    TreeEnsemble,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "READABLE_VERSIONS",
    "from_binary_bytes",
    "from_json_bytes",
    "is_lite",
    "load_lite",
    "save_lite",
    "to_binary_bytes",
    "to_json_bytes",
]

FORMAT_NAME = "fedge-lite"
FORMAT_VERSION = 3  # the newest version this fedge reads and writes
READABLE_VERSIONS = (1, 2, 3)
# What each version after 1 added (dtypes, step types, binary flags). A file declares the
# lowest version that holds everything it uses: a float64/float32 model is still a version 1
# file (older fedge reads it), and a reader refuses any other declaration, so even the JSON
# version line, which the digest does not cover, cannot be changed unnoticed.
_INTRODUCED: dict[str, int] = {
    **dict.fromkeys(("float16", "int16", "int8", "uint16", "uint8"), 2),
    **dict.fromkeys(("quantized_dense", "quantized_trees"), 2),
    "xz": 2,  # FLAG_XZ
    "sparse": 3,  # a binary array reference with a "sparse" encoding
}
MAGIC = b"FEDGE\x00"
_PREFIX = struct.Struct("<6sHHIQ")  # magic, version, flags, header length, data length
FLAG_XZ = 0x0001  # the data section is an xz stream (version 2), preceded by its raw length
_RAW_LENGTH = struct.Struct("<Q")
_MAX_RAW = 2**32  # largest raw data section a compressed file may declare
# Largest raw / stored ratio of a compressed data section (writer and reader agree), so a
# small hostile file cannot make the reader inflate gigabytes of zeros. Real models compress
# 2-20x; a section that would compress further is simply stored raw.
_MAX_RATIO = 256
# The arrays of a binary file may take at most max(_MAX_RATIO x the data section as stored,
# _MIN_DECODED) bytes in memory. Sparse arrays (and xz) store zeros in next to nothing, so
# without this a tiny hostile file could declare gigabytes of zeros; the floor lets any
# model up to 16 MiB keep its emptiest arrays tiny. Writers store a model beyond it dense.
_MIN_DECODED = 2**24
# Fixed xz settings: the same arrays always compress to the same bytes. No integrity check
# inside the stream: the file's SHA-256 covers it.
_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
_VERSION = struct.Struct("<H")
_DIGEST_SIZE = 32
_HEAD_SIZE = _PREFIX.size + _DIGEST_SIZE
_JSON_MAGIC = b'{\n  "format": "fedge-lite",\n'
_JSON_START = _JSON_MAGIC + b'  "version": '
_JSON_PREFIX = _JSON_START + b"%d,\n" % FORMAT_VERSION
_JSON_PREFIXES = {v: _JSON_START + b"%d,\n" % v for v in READABLE_VERSIONS}
_MAX_ELEMENTS = 2**31  # sanity cap on one array, checked before allocating
_MAX_COUNT = 2**31  # n_features, n_outputs and array dimensions (the IR indexes with int32)
_MAX_OFFSET = 2**64  # byte offsets and sizes in the binary data section
_MAX_HEADER = 2**32  # the header length is a u32
_MAX_NESTING = 100  # levels of lists and objects in metadata
# Sparse arrays (version 3, binary only): an array whose zeros are many is stored as its
# non-zero values plus their positions, either as a bitmap (1 bit per element, packed LSB
# first) or as a list of flat indices (u8/u16/u32, by the element count). A "zero" is the
# all-zero bit pattern, so -0.0 and NaN payloads are values like any other.
_DENSE = "dense"
_SPARSE_ENCODINGS = ("bitmap", "indices")  # tie-break order after dense
_DENSE_KEYS = frozenset({"dtype", "shape", "offset", "nbytes"})
_SPARSE_KEYS = _DENSE_KEYS | {"sparse", "nonzero"}

# Arrays are stored little-endian whatever the machine; the IR holds native dtypes.
_DTYPES = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint16": np.dtype("<u2"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}
_INFINITIES = {"inf": math.inf, "-inf": -math.inf}
_CONTAINERS = frozenset({dict, list})


@dataclass(frozen=True)
class _Array:
    """An array field: the dtypes the format may store it in, and whether +-inf is a value."""

    dtypes: tuple[str, ...]
    infinite: bool = False


_FLOATS = _Array(("float64", "float32", "float16"))
_THRESHOLDS = _Array(("float64", "float32"), infinite=True)
_INDICES = _Array(("int32",))
_FLAGS = _Array(("bool",))
_FLOAT32 = _Array(("float32",))  # scales, biases and edges of quantized steps
_INT_VALUES = _Array(("int8", "int16"))  # quantized weights and leaves
_BIN_INDICES = _Array(("uint8", "uint16", "int32"))  # split edges of QuantizedTrees


@dataclass(frozen=True)
class _Kind:
    """What one step type stores: arrays, enums and integers (its dataclass's fields)."""

    cls: type
    arrays: dict[str, _Array]
    enums: dict[str, type[Enum]]
    ints: tuple[str, ...] = ()

    @property
    def keys(self) -> set[str]:
        return {"type", *self.arrays, *self.enums, *self.ints}


_STEPS: dict[str, _Kind] = {
    "impute": _Kind(Impute, {"fill": _FLOATS}, {}),
    "affine": _Kind(Affine, {"offset": _FLOATS, "scale": _FLOATS}, {"order": AffineOrder}),
    "linear": _Kind(Linear, {"weights": _FLOATS, "bias": _FLOATS}, {}),
    "dense": _Kind(Dense, {"weights": _FLOATS, "bias": _FLOATS}, {"activation": Activation}),
    "tree_ensemble": _Kind(
        TreeEnsemble,
        {
            "feature": _INDICES,
            "threshold": _THRESHOLDS,
            "left": _INDICES,
            "right": _INDICES,
            "missing_left": _FLAGS,
            "leaf_values": _FLOATS,
            "roots": _INDICES,
            "tree_offset": _INDICES,
            "base_score": _FLOATS,
        },
        {"comparison": Comparison, "aggregation": Aggregation, "input_precision": Precision},
        ("n_features", "n_outputs"),
    ),
    "quantized_dense": _Kind(
        QuantizedDense,
        {"weights": _INT_VALUES, "scale": _FLOAT32, "zero_point": _INDICES, "bias": _FLOAT32},
        {"activation": Activation},
        ("input_bits",),
    ),
    "quantized_trees": _Kind(
        QuantizedTrees,
        {
            "feature": _INDICES,
            "threshold": _BIN_INDICES,
            "left": _INDICES,
            "right": _INDICES,
            "missing_left": _FLAGS,
            "leaf_values": _INT_VALUES,
            "leaf_scale": _FLOAT32,
            "roots": _INDICES,
            "tree_offset": _INDICES,
            "base_score": _FLOAT32,
            "bin_edges": _FLOAT32,
            "bin_start": _INDICES,
        },
        {"comparison": Comparison, "aggregation": Aggregation},
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
_CLASS_DTYPES: dict[str, type] = {"int64": int, "float64": float, "bool": bool, "str": str}

# Encodes one array of a step into its JSON object; decodes one back (document, where, field).
_Put = Callable[[np.ndarray], dict[str, Any]]
_Take = Callable[[Any, str, _Array], np.ndarray]


# =========================================================================== public API
def save_lite(model: Model, path: str | os.PathLike[str]) -> int:
    """Write ``model`` to a lite file, atomically.

    Parameters
    ----------
    model : Model
        The IR model to save.
    path : path-like
        Destination. The suffix picks the encoding: ``.json`` (readable) or
        ``.fedge`` (compact binary).

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    ModelFormatError
        The suffix is neither ``.json`` nor ``.fedge``, or the model holds
        something this version of the format cannot store.

    Notes
    -----
    The bytes go to a temporary file in the same directory, are flushed to
    disk, and replace ``path`` in one rename: a crash leaves the old file or
    the new one, never a mix.
    """
    p = Path(path)
    encoders = {".json": to_json_bytes, ".fedge": to_binary_bytes}
    encode = encoders.get(p.suffix.lower())
    if encode is None:
        raise ModelFormatError(
            f"cannot tell the lite encoding from {p.name!r}: use a .json (readable) or "
            ".fedge (compact binary) suffix"
        )
    data = encode(model)
    _write_atomically(p, data)
    return len(data)


def load_lite(path: str | os.PathLike[str]) -> Model:
    """Read a lite file in either encoding, told apart by its first bytes (not its suffix).

    Parameters
    ----------
    path : path-like
        A ``.json`` or ``.fedge`` file written by :func:`save_lite`.

    Returns
    -------
    Model
        The model, bit-identical to the one saved.

    Raises
    ------
    ModelFormatError
        The file is missing or not a lite file, has another format version, or breaks
        the schema.
    IntegrityError
        The file's bytes were altered, truncated or extended.
    InvalidModelError
        The file is intact but describes a broken model (e.g. a cyclic tree).
    """
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ModelFormatError(f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(MAGIC):
        return from_binary_bytes(data)
    return from_json_bytes(data)


def is_lite(data_prefix: bytes) -> bool:
    """Whether a file starting with ``data_prefix`` claims to be a lite file.

    Parameters
    ----------
    data_prefix : bytes
        The file's first bytes (at least 28 to recognise the JSON encoding).

    Returns
    -------
    bool
        True for the binary magic or the canonical JSON opening, in any version.
    """
    return data_prefix.startswith(MAGIC) or data_prefix.startswith(_JSON_MAGIC)


def to_json_bytes(model: Model) -> bytes:
    """The readable, canonical JSON encoding of ``model``.

    Parameters
    ----------
    model : Model
        The model to encode.

    Returns
    -------
    bytes
        UTF-8 JSON; the same model always gives the same bytes.

    Raises
    ------
    ModelFormatError
        The model holds something this version cannot store (a dtype outside a
        field's whitelist, text that is not valid Unicode, metadata nested too deeply).
    """
    doc = _model_doc(model, _json_array)
    digest = hashlib.sha256(_canonical_compact(doc)).hexdigest()
    return _json_text(doc, digest, _needed_version(doc)[0])


def from_json_bytes(data: bytes) -> Model:
    """Parse, verify and validate the JSON encoding.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    Model

    Raises
    ------
    ModelFormatError
        Not a lite JSON file, a version this fedge cannot read, a schema violation, or a
        feature newer than the version the file declares.
    IntegrityError
        The digest does not match, or the bytes are not the canonical writer's output
        (including a version line higher than the model needs).
    InvalidModelError
        An intact file describing a broken model.
    """
    data = bytes(data)
    version = _check_json_version(data)
    model_doc = _verified_json_document(data, version)
    model = _model_from_doc(model_doc, _json_take)
    _check_version(version, model_doc)
    return model


def to_binary_bytes(model: Model) -> bytes:
    """The compact binary encoding of ``model`` (its length is the model's size).

    Parameters
    ----------
    model : Model
        The model to encode.

    Returns
    -------
    bytes
        Prefix, header and data; the same model always gives the same bytes.

    Raises
    ------
    ModelFormatError
        The model holds something this version cannot store.
    """
    # Two candidates: arrays stored sparse where that is smaller (version 3), and all arrays
    # dense (the file fedge wrote before sparse arrays existed). The shorter file wins, the
    # dense one on a tie, so a model with nothing worth storing sparse keeps its old bytes.
    dense, _ = _binary_file(model, sparse=False)
    sparse, usable = _binary_file(model, sparse=True)
    return sparse if usable and len(sparse) < len(dense) else dense


def from_binary_bytes(data: bytes) -> Model:
    """Verify (lengths and digest) and validate the binary encoding.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    Model

    Raises
    ------
    ModelFormatError
        Wrong magic, a version this fedge cannot read, unknown flags, a schema violation,
        or a feature newer than the version the file declares.
    IntegrityError
        Truncated or extended, digest mismatch, a header not in canonical form, or a
        version higher than the model needs.
    InvalidModelError
        An intact file describing a broken model.
    """
    view = memoryview(bytes(data))
    version, flags, header_len = _verified_binary_prefix(view)
    if flags & ~FLAG_XZ:
        raise ModelFormatError(f"the .fedge file sets unknown flags 0x{flags:04x}; upgrade fedge")
    header = _parsed_header(bytes(view[_HEAD_SIZE : _HEAD_SIZE + header_len]))
    body = view[_HEAD_SIZE + header_len :]
    if flags & FLAG_XZ:
        body = memoryview(_unpacked_data(body))
    cursor = 0
    budget = _decoding_limit(len(view) - _HEAD_SIZE - header_len)  # bytes of arrays
    decoded: list[tuple[np.ndarray, str, str]] = []

    def take(ref: Any, where: str, spec: _Array) -> np.ndarray:
        nonlocal cursor, budget
        arr, cursor, budget, encoding = _binary_array(ref, where, spec, body, cursor, budget)
        decoded.append((arr, where, encoding))
        return arr

    def all_used() -> None:
        if cursor != len(body):
            raise ModelFormatError(f"the data section has {len(body) - cursor} unused bytes")
        _check_encodings(decoded)

    model = _model_from_doc(header, take, all_used)
    _check_version(version, header, flags)
    return model


def _binary_file(model: Model, *, sparse: bool) -> tuple[bytes, bool]:
    """One candidate binary file, and whether it may be written. With ``sparse``, each array
    is stored in the encoding :func:`_encoding_for` picks, and the candidate is unusable
    (and not built) when no array is sparse (it would be the dense one), or unusable when
    its arrays exceed :func:`_decoding_limit` (a dense candidate never does)."""
    chunks: list[bytes] = []
    offset = used = decoded = 0

    def put(arr: np.ndarray) -> dict[str, Any]:
        nonlocal offset, used, decoded
        ref, raw = _array_bytes(arr, sparse)
        used += "sparse" in ref
        decoded += arr.size * arr.dtype.itemsize
        ref.update(offset=offset, nbytes=len(raw))
        chunks.append(raw)
        offset += len(raw)
        return ref

    doc = _model_doc(model, put)
    if sparse and not used:
        return b"", False
    header = _canonical_compact(doc)
    if len(header) >= _MAX_HEADER:
        raise ModelFormatError(f"the model's header ({len(header)} bytes) exceeds 4 GiB")
    body, flags = _packed_data(b"".join(chunks))
    version = _needed_version(doc, flags)[0]
    prefix = _PREFIX.pack(MAGIC, version, flags, len(header), len(body))
    digest = _binary_digest(prefix, header, body)
    return prefix + digest + header + body, decoded <= _decoding_limit(len(body))


# =========================================================================== documents
def _model_doc(model: Model, put: _Put) -> dict[str, Any]:
    """The schema's model object; ``put`` encodes each array (inline data or a reference)."""
    steps = []
    for i, step in enumerate(model.steps):
        name = _STEP_NAMES[type(step)]
        kind = _STEPS[name]
        doc: dict[str, Any] = {"type": name}
        for key, spec in kind.arrays.items():
            doc[key] = put(_storable(getattr(step, key), f"model.steps[{i}].{key}", spec))
        doc.update({k: getattr(step, k).value for k in kind.enums})
        doc.update({k: int(getattr(step, k)) for k in kind.ints})
        steps.append(doc)
    _check_nesting(model.metadata)
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


def _storable(arr: np.ndarray, where: str, spec: _Array) -> np.ndarray:
    # A precision added to the IR later must not be written as a file no reader accepts.
    if arr.dtype.name not in spec.dtypes:
        raise ModelFormatError(
            f"the lite format cannot store {where} as {arr.dtype.name} "
            f"(allowed: {', '.join(spec.dtypes)})"
        )
    return arr


def _needed_version(doc: dict[str, Any], flags: int = 0) -> tuple[int, str]:
    """The lowest format version that holds a (valid) model document, and the first thing
    that needs it."""
    uses = [("the xz-compressed data section", "xz")] if flags & FLAG_XZ else []
    for i, step in enumerate(doc["steps"]):
        name = step["type"]
        uses.append((f"model.steps[{i}] ({name})", name))
        for key in _STEPS[name].arrays:
            dtype = step[key]["dtype"]
            uses.append((f"model.steps[{i}].{key} ({dtype})", dtype))
            if "sparse" in step[key]:
                uses.append((f"model.steps[{i}].{key} (stored sparse)", "sparse"))
    needed, what = 1, "the model"
    for where, feature in uses:
        if _INTRODUCED.get(feature, 1) > needed:
            needed, what = _INTRODUCED[feature], where
    return needed, what


def _check_version(declared: int, doc: dict[str, Any], flags: int = 0) -> None:
    """A file must declare exactly the version its writer picks: the lowest that holds it."""
    needed, what = _needed_version(doc, flags)
    if needed > declared:
        raise ModelFormatError(
            f"{what} needs lite format version {needed}, but the file declares version {declared}"
        )
    if needed < declared:
        raise IntegrityError(
            f"the lite file declares version {declared}, but fedge writes this model as version "
            f"{needed} (the lowest that holds it): the version was altered"
        )


def _classes_doc(classes: np.ndarray | None) -> dict[str, Any] | None:
    if classes is None:
        return None
    kind = classes.dtype.kind
    if kind in "iu":  # every integer width is stored (and loads) as int64
        if classes.size and int(classes.max()) > 2**63 - 1:
            raise ModelFormatError("integer class labels above 2**63 - 1 cannot be saved")
        return {"dtype": "int64", "values": [int(v) for v in classes.tolist()]}
    if kind == "f":
        return {"dtype": "float64", "values": classes.astype(np.float64).tolist()}
    return {"dtype": {"b": "bool", "U": "str"}[kind], "values": classes.tolist()}


def _model_from_doc(doc: Any, take: _Take, all_used: Callable[[], None] = lambda: None) -> Model:
    """Build a Model from a parsed document; ``take`` decodes one array field.

    Every array is decoded and ``all_used`` checks the data section is exhausted
    before any IR object is built, so structural errors come last.
    """
    _keys(doc, _MODEL_KEYS, "model")
    steps_doc = doc["steps"]
    if not isinstance(steps_doc, list) or not steps_doc:
        raise ModelFormatError("model.steps must be a non-empty list")
    step_fields = [_step_fields(s, i, take) for i, s in enumerate(steps_doc)]
    all_used()
    names = doc["feature_names"]
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise ModelFormatError("model.feature_names must be null or a list of strings")
    if not isinstance(doc["metadata"], dict):
        raise ModelFormatError("model.metadata must be an object")
    _check_nesting(doc["metadata"])
    fields = {
        "task": _enum(doc["task"], Task, "model.task"),
        "n_features": _int(doc["n_features"], "model.n_features"),
        "link": _enum(doc["link"], Link, "model.link"),
        "classes": _classes_from_doc(doc["classes"]),
        "predict_from": _enum(doc["predict_from"], PredictFrom, "model.predict_from"),
        "feature_names": None if names is None else tuple(names),
        "metadata": doc["metadata"],
    }
    return Model(steps=tuple(cls(**kwargs) for cls, kwargs in step_fields), **fields)


def _step_fields(doc: Any, index: int, take: _Take) -> tuple[type[Step], dict[str, Any]]:
    where = f"model.steps[{index}]"
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{where} must be an object")
    name = doc.get("type")
    if not isinstance(name, str) or name not in _STEPS:
        kinds = ", ".join(sorted(_STEPS))
        raise ModelFormatError(f"{where}.type must be one of {kinds}, got {_show(name)}")
    kind = _STEPS[name]
    _keys(doc, kind.keys, where)
    fields: dict[str, Any] = {k: take(doc[k], f"{where}.{k}", s) for k, s in kind.arrays.items()}
    fields.update({k: _enum(doc[k], e, f"{where}.{k}") for k, e in kind.enums.items()})
    fields.update({k: _int(doc[k], f"{where}.{k}") for k in kind.ints})
    return kind.cls, fields


def _classes_from_doc(doc: Any) -> np.ndarray | None:
    if doc is None:
        return None
    _keys(doc, {"dtype", "values"}, "model.classes")
    dtype, values = doc["dtype"], doc["values"]
    if not isinstance(dtype, str) or dtype not in _CLASS_DTYPES:
        allowed = ", ".join(_CLASS_DTYPES)
        raise ModelFormatError(f"model.classes.dtype must be one of {allowed}, got {_show(dtype)}")
    if not isinstance(values, list):
        raise ModelFormatError("model.classes.values must be a list")
    expected = _CLASS_DTYPES[dtype]
    for i, v in enumerate(values):
        if type(v) is not expected or not _in_class_range(v):
            raise ModelFormatError(f"model.classes.values[{i}] = {_show(v)} is not a {dtype} label")
    classes = np.array(values, dtype=str if expected is str else dtype)
    if expected is str and classes.tolist() != values:
        raise ModelFormatError("model.classes.values end in NUL characters, which numpy drops")
    return classes


def _in_class_range(value: Any) -> bool:
    if type(value) is int:
        return -(2**63) <= value < 2**63
    if type(value) is float:
        return math.isfinite(value)
    return True


def _keys(doc: Any, expected: set[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{where} must be an object, got {_show(doc)}")
    missing, extra = expected - doc.keys(), doc.keys() - expected
    if missing:
        raise ModelFormatError(f"{where} has missing keys: {', '.join(sorted(missing))}")
    if extra:
        raise ModelFormatError(f"{where} has unknown keys: {', '.join(sorted(extra))}")


def _enum(value: Any, enum: type[Enum], where: str) -> Any:
    allowed = [m.value for m in enum]  # type: ignore[attr-defined]
    if not isinstance(value, str) or value not in allowed:
        raise ModelFormatError(f"{where} must be one of {', '.join(allowed)}, got {_show(value)}")
    return enum(value)


def _int(value: Any, where: str, limit: int = _MAX_COUNT) -> int:
    # type() rather than isinstance(): JSON true/false must not pass for 1/0.
    if type(value) is not int or not 0 <= value < limit:
        raise ModelFormatError(f"{where} must be an integer in [0, {limit}), got {_show(value)}")
    return value


def _check_nesting(metadata: Any) -> None:
    """Bound metadata depth, so no recursive code (json, repr) meets a hostile one."""
    stack = [(metadata, 1)]
    while stack:  # iterative: the point is to avoid recursion limits
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        if not isinstance(value, dict | list):
            continue
        if depth > _MAX_NESTING:
            raise ModelFormatError(
                f"model.metadata nests deeper than {_MAX_NESTING} levels of lists and objects"
            )
        stack.extend((child, depth + 1) for child in children)


def _show(value: Any) -> str:
    """A short repr for messages: hostile files can hold huge or deeply nested values."""
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxstring, short.maxother = 3, 40, 40
    return short.repr(value)


def _shape(doc: dict[str, Any], where: str, spec: _Array) -> tuple[np.dtype, tuple[int, ...]]:
    dtype, shape = doc["dtype"], doc["shape"]
    if not isinstance(dtype, str) or dtype not in spec.dtypes:
        allowed = ", ".join(spec.dtypes)
        raise ModelFormatError(f"{where}.dtype must be one of {allowed}, got {_show(dtype)}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2:
        raise ModelFormatError(f"{where}.shape must be a list of 1 or 2 sizes")
    dims = tuple(_int(d, f"{where}.shape") for d in shape)
    if math.prod(dims) > _MAX_ELEMENTS:
        raise ModelFormatError(
            f"{where}.shape declares {math.prod(dims)} elements, above the limit of {_MAX_ELEMENTS}"
        )
    return _DTYPES[dtype], dims


# =========================================================================== JSON encoding
def _json_array(arr: np.ndarray) -> dict[str, Any]:
    # tolist() widens float32 to float64 exactly; json writes repr(), which reads back exactly.
    data = arr.ravel().tolist()
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        data = [v if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in data]
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}


def _json_take(doc: Any, where: str, spec: _Array) -> np.ndarray:
    _keys(doc, {"dtype", "shape", "data"}, where)
    dtype, shape = _shape(doc, where, spec)
    data = doc["data"]
    if not isinstance(data, list) or len(data) != math.prod(shape):
        raise ModelFormatError(f"{where}.data must be a list of {math.prod(shape)} values")
    if dtype.kind == "f":
        return _json_floats(data, dtype, where, spec.infinite).reshape(shape)
    expected = int if dtype.kind in "iu" else bool
    if not set(map(type, data)) <= {expected}:
        _fail_at(data, where, dtype, lambda v: type(v) is expected)
    if expected is int and data:
        low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        if not (min(data) >= low and max(data) <= high):
            _fail_at(data, where, dtype, lambda v: low <= v <= high)
    return np.array(data, dtype=dtype.newbyteorder("=")).reshape(shape)


def _json_floats(data: list[Any], dtype: np.dtype, where: str, infinite: bool) -> np.ndarray:
    # Writers always print floats with a point or exponent, so a JSON integer is not a float.
    if infinite and any(type(v) is str for v in data):
        data = [_INFINITIES.get(v, v) if type(v) is str else v for v in data]
    if not set(map(type, data)) <= {float}:
        _fail_at(data, where, dtype, lambda v: type(v) is float)
    wide = np.array(data, dtype=np.float64)
    if not infinite and not np.all(np.isfinite(wide)):  # 1e999 parses as inf
        _fail_at(data, where, dtype, math.isfinite)
    if dtype.itemsize == wide.itemsize:
        return wide
    with np.errstate(over="ignore"):  # an out-of-range value is reported just below
        narrow = wide.astype(dtype.newbyteorder("="))
    inexact = np.flatnonzero(narrow != wide)
    if inexact.size:
        _fail_index(data, int(inexact[0]), where, dtype)
    return narrow


def _fail_at(data: list[Any], where: str, dtype: np.dtype, ok: Callable[[Any], bool]) -> None:
    """Raise naming the first value of ``data`` that is not ``ok``."""
    _fail_index(data, next(i for i, v in enumerate(data) if not ok(v)), where, dtype)


def _fail_index(data: list[Any], i: int, where: str, dtype: np.dtype) -> None:
    raise ModelFormatError(f"{where}.data[{i}] = {_show(data[i])} is not a {dtype.name} value")


def _canonical_compact(value: Any) -> bytes:
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelFormatError(
            "the model holds text that is not valid Unicode (a lone surrogate)"
        ) from None


def _pretty(value: Any, indent: int) -> str:
    """Objects one key per line (sorted), lists of scalars on one line."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {_pretty(value[k], indent + 1)}"
            for k in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    # set(map(type, ...)) runs at C speed over the long data lists.
    if isinstance(value, list) and not _CONTAINERS.isdisjoint(map(type, value)):
        items = [pad + _pretty(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _json_text(model_doc: dict[str, Any], digest: str, version: int = FORMAT_VERSION) -> bytes:
    """The canonical JSON file for a model document and its digest."""
    body = _pretty(model_doc, 1)
    text = f'  "sha256": "{digest}",\n  "model": {body}\n}}\n'
    try:
        return _JSON_PREFIXES[version] + text.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelFormatError(
            "the model holds text that is not valid Unicode (a lone surrogate)"
        ) from None


def _check_json_version(data: bytes) -> int:
    """The file's version; refuse non-lite files and versions this fedge cannot read (a
    damaged version line is corruption)."""
    for version, prefix in _JSON_PREFIXES.items():
        if data.startswith(prefix):
            return version
    if not data.startswith(_JSON_START):
        raise ModelFormatError("not a fedge lite file (it does not start with the lite header)")
    token = data[len(_JSON_START) : len(_JSON_START) + 12].split(b",\n", 1)[0]
    if not (token.isdigit() and len(token) <= 9 and int(token) not in READABLE_VERSIONS):
        raise IntegrityError("the lite file is corrupted: its version line is damaged")
    raise ModelFormatError(_unsupported(int(token)))


def _unsupported(version: int) -> str:
    readable = " and ".join(str(v) for v in READABLE_VERSIONS)
    return (
        f"lite format version {version} is not supported (this fedge reads versions "
        f"{readable}); upgrade fedge"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _verified_json_document(data: bytes, version: int) -> Any:
    """The ``model`` value of a JSON file whose digest and canonical form both check out."""
    try:
        top = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise IntegrityError(f"the lite file is corrupted: {exc}") from None
    if not isinstance(top, dict) or set(top) != {"format", "version", "sha256", "model"}:
        raise IntegrityError("the lite file is corrupted: wrong top-level keys")
    model_doc, digest = top["model"], top["sha256"]
    try:
        actual = hashlib.sha256(_canonical_compact(model_doc)).hexdigest()
        canonical = _json_text(model_doc, actual, version) if isinstance(model_doc, dict) else b""
    except (ValueError, RecursionError) as exc:  # ModelFormatError is a ValueError too
        raise IntegrityError(f"the lite file is corrupted: {exc}") from None
    if not isinstance(digest, str) or digest != actual:
        raise IntegrityError("the lite file's SHA-256 does not match its content: it was altered")
    if canonical != data:
        raise IntegrityError(
            "the lite file is not in canonical form: it was edited after fedge wrote it"
        )
    return model_doc


# =========================================================================== binary encoding
def _packed_data(raw: bytes) -> tuple[bytes, int]:
    """The data section as stored, and its flags: xz-compressed (after its raw length) when
    that is smaller, as it is for all but tiny models."""
    packed = _RAW_LENGTH.pack(len(raw)) + lzma.compress(
        raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=_XZ_FILTERS
    )
    fits = len(packed) < len(raw) <= _MAX_RATIO * len(packed)
    return (packed, FLAG_XZ) if fits else (raw, 0)


def _decoding_limit(stored: int) -> int:
    """Most bytes the arrays of a file whose data section stores ``stored`` bytes may take."""
    return max(_MAX_RATIO * stored, _MIN_DECODED)


def _unpacked_data(stored: memoryview) -> bytes:
    """Decompress a data section, never producing more than the length it declares."""
    if len(stored) < _RAW_LENGTH.size:
        raise ModelFormatError("the compressed data section is shorter than its length field")
    (raw_len,) = _RAW_LENGTH.unpack_from(stored)
    if raw_len > _MAX_RAW:
        raise ModelFormatError(f"the compressed data section declares {raw_len} bytes (> 4 GiB)")
    if raw_len > _MAX_RATIO * len(stored):
        raise ModelFormatError(
            f"the compressed data section declares {raw_len} bytes from {len(stored)}: more "
            f"than {_MAX_RATIO} times its size, which fedge never writes"
        )
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        raw = decoder.decompress(bytes(stored[_RAW_LENGTH.size :]), max_length=raw_len + 1)
    except lzma.LZMAError as exc:
        raise ModelFormatError(f"the compressed data section is not valid xz: {exc}") from None
    if len(raw) != raw_len or not decoder.eof or decoder.unused_data:
        raise ModelFormatError(
            f"the compressed data section holds {len(raw)} bytes (or trailing data), "
            f"not the {raw_len} it declares"
        )
    return raw


def _binary_digest(prefix: bytes | memoryview, *rest: bytes | memoryview) -> bytes:
    h = hashlib.sha256(prefix)
    for part in rest:
        h.update(part)
    return h.digest()


def _verified_binary_prefix(view: memoryview) -> tuple[int, int, int]:
    """Check magic, version, lengths and digest; return (version, flags, header length)."""
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ModelFormatError("not a fedge lite file (bad magic bytes)")
    if len(view) < len(MAGIC) + _VERSION.size:
        raise IntegrityError(f"the .fedge file is truncated ({len(view)} bytes)")
    (version,) = _VERSION.unpack_from(view, len(MAGIC))
    if version not in READABLE_VERSIONS:
        raise ModelFormatError(_unsupported(version))
    if len(view) < _HEAD_SIZE:
        raise IntegrityError(f"the .fedge file is truncated ({len(view)} bytes)")
    _, _, flags, header_len, data_len = _PREFIX.unpack_from(view)
    declared = _HEAD_SIZE + header_len + data_len
    if declared != len(view):
        raise IntegrityError(
            f"the .fedge file has {len(view)} bytes but its prefix declares {declared}: "
            "it was truncated, extended or altered"
        )
    digest = _binary_digest(view[: _PREFIX.size], view[_HEAD_SIZE:])
    if digest != bytes(view[_PREFIX.size : _HEAD_SIZE]):
        raise IntegrityError("the .fedge file's SHA-256 does not match: it was altered")
    return version, flags, header_len


def _parsed_header(raw: bytes) -> Any:
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        canonical = _canonical_compact(doc)
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"the .fedge header is not valid JSON: {exc}") from None
    if canonical != raw:
        raise IntegrityError(
            "the .fedge header is not in canonical form: it was not written by fedge"
        )
    return doc


def _binary_array(
    ref: Any, where: str, spec: _Array, body: memoryview, cursor: int, budget: int
) -> tuple[np.ndarray, int, int, str]:
    """Decode the array ``ref`` points to; arrays tile the data section in document order.

    Returns the array, the next offset, the remaining decoding budget (bytes) and the
    array's encoding (dense, bitmap or indices).
    """
    sparse = isinstance(ref, dict) and "sparse" in ref
    _keys(ref, set(_SPARSE_KEYS if sparse else _DENSE_KEYS), where)
    dtype, shape = _shape(ref, where, spec)
    offset = _int(ref["offset"], f"{where}.offset", _MAX_OFFSET)
    nbytes = _int(ref["nbytes"], f"{where}.nbytes", _MAX_OFFSET)
    n = math.prod(shape)
    encoding, nonzero = _DENSE, 0
    if sparse:
        encoding, nonzero = _sparse_ref(ref, where, n, dtype)
    size = _stored_size(encoding, n, nonzero, dtype)
    if offset != cursor:
        raise ModelFormatError(
            f"{where}.offset is {offset}, expected {cursor}: arrays follow each other in order"
        )
    if nbytes != size:
        what = f"{encoding} encoding of {nonzero} non-zero elements" if sparse else "dtype"
        raise ModelFormatError(f"{where}.nbytes is {nbytes}, but its shape and {what} need {size}")
    if offset + size > len(body):
        raise ModelFormatError(
            f"{where} ends at byte {offset + size}, outside the data section ({len(body)} bytes)"
        )
    if n * dtype.itemsize > budget:
        raise ModelFormatError(
            f"{where} would take {n * dtype.itemsize} bytes in memory, beyond the "
            f"{_MAX_RATIO} times the stored data section (or 16 MiB) that a file's arrays "
            "may take, which fedge never writes"
        )
    raw = body[offset : offset + size]
    if sparse:
        arr = _sparse_array(raw, encoding, n, nonzero, dtype, where)
    elif dtype.kind == "b":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if np.any(octets > 1):
            raise ModelFormatError(f"{where} has bool bytes other than 0 and 1")
        arr = octets.astype(np.bool_)
    else:
        arr = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    return arr.reshape(shape), offset + size, budget - n * dtype.itemsize, encoding


# =========================================================================== sparse arrays
def _array_bytes(arr: np.ndarray, sparse: bool) -> tuple[dict[str, Any], bytes]:
    """An array's reference (without offset and nbytes) and its data-section bytes: dense,
    or with ``sparse`` in the encoding :func:`_encoding_for` picks."""
    ref: dict[str, Any] = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
    if sparse:
        mask = _nonzero(arr)
        nonzero = int(np.count_nonzero(mask))
        encoding = _encoding_for(arr.size, nonzero, arr.dtype)
        if encoding != _DENSE:
            ref.update(sparse=encoding, nonzero=nonzero)
            return ref, _sparse_bytes(arr, mask, encoding)
    return ref, arr.astype(_DTYPES[arr.dtype.name], copy=False).tobytes()


def _nonzero(arr: np.ndarray) -> np.ndarray:
    """Flat C-order mask of the elements whose bit pattern is not all zeros (so -0.0 and
    every NaN count as non-zero: they must survive)."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    return flat.view(np.dtype(f"u{arr.dtype.itemsize}")) != 0


def _index_dtype(n: int) -> np.dtype:
    """Width of one flat index in the ``indices`` encoding of an array of ``n`` elements."""
    return np.dtype("u1" if n <= 2**8 else "<u2" if n <= 2**16 else "<u4")


def _stored_size(encoding: str, n: int, nonzero: int, dtype: np.dtype) -> int:
    """Data-section bytes of an array in an encoding (bool values are implied: all 1)."""
    values = 0 if dtype.kind == "b" else nonzero * dtype.itemsize
    if encoding == "bitmap":
        return -(-n // 8) + values
    if encoding == "indices":
        return nonzero * _index_dtype(n).itemsize + values
    return n * dtype.itemsize


def _encoding_for(n: int, nonzero: int, dtype: np.dtype) -> str:
    """The encoding the writer picks: the fewest data bytes plus the header text the sparse
    keys add (so tiny arrays stay dense); ties go to dense, then bitmap, then indices."""

    def cost(encoding: str) -> int:
        extra = 0 if encoding == _DENSE else len(f',"nonzero":{nonzero},"sparse":"{encoding}"')
        return _stored_size(encoding, n, nonzero, dtype) + extra

    return min((_DENSE, *_SPARSE_ENCODINGS), key=cost)


def _sparse_bytes(arr: np.ndarray, mask: np.ndarray, encoding: str) -> bytes:
    """Positions (bitmap or indices), then the non-zero values in order (none for bool)."""
    if encoding == "bitmap":
        positions = np.packbits(mask, bitorder="little").tobytes()
    else:
        positions = np.flatnonzero(mask).astype(_index_dtype(mask.size)).tobytes()
    if arr.dtype.kind == "b":
        return positions
    values = np.ascontiguousarray(arr).reshape(-1)[mask]
    return positions + values.astype(_DTYPES[arr.dtype.name], copy=False).tobytes()


def _sparse_ref(ref: dict[str, Any], where: str, n: int, dtype: np.dtype) -> tuple[str, int]:
    """The encoding and non-zero count of a sparse reference, which must be the writer's
    choice for them."""
    encoding = ref["sparse"]
    if not isinstance(encoding, str) or encoding not in _SPARSE_ENCODINGS:
        raise ModelFormatError(
            f"{where}.sparse must be one of {', '.join(_SPARSE_ENCODINGS)}, got {_show(encoding)}"
        )
    nonzero = _int(ref["nonzero"], f"{where}.nonzero", n + 1)
    best = _encoding_for(n, nonzero, dtype)
    if encoding != best:
        raise IntegrityError(
            f"{where} is stored as {encoding}, but fedge stores {nonzero} non-zero of {n} "
            f"{dtype.name} elements {best}: the file was not written by fedge"
        )
    return encoding, nonzero


def _sparse_array(
    raw: memoryview, encoding: str, n: int, nonzero: int, dtype: np.dtype, where: str
) -> np.ndarray:
    """Decode a sparse array's bytes (their length already checked) into a flat array."""
    if encoding == "bitmap":
        head = -(-n // 8)
        bits = np.unpackbits(np.frombuffer(raw[:head], dtype=np.uint8), bitorder="little")
        if bits[n:].any():
            raise ModelFormatError(f"{where} has bitmap padding bits set (after element {n})")
        positions = np.flatnonzero(bits[:n])
        if positions.size != nonzero:
            raise ModelFormatError(
                f"{where}'s bitmap marks {positions.size} non-zero elements, but its "
                f"nonzero is {nonzero}"
            )
    else:
        head = nonzero * _index_dtype(n).itemsize
        positions = np.frombuffer(raw[:head], dtype=_index_dtype(n)).astype(np.int64)
        if positions.size and (positions[-1] >= n or np.any(np.diff(positions) <= 0)):
            raise ModelFormatError(
                f"{where}'s indices must be strictly increasing and below {n} (no duplicates)"
            )
    if dtype.kind == "b":
        arr = np.zeros(n, dtype=np.bool_)
        arr[positions] = True
        return arr
    values = np.frombuffer(raw[head:], dtype=dtype).astype(dtype.newbyteorder("="))
    zero = np.flatnonzero(~_nonzero(values))
    if zero.size:
        raise ModelFormatError(
            f"{where} stores a zero as its non-zero value {int(zero[0])}, which fedge never writes"
        )
    arr = np.zeros(n, dtype=values.dtype)
    arr[positions] = values
    return arr


def _check_encodings(decoded: list[tuple[np.ndarray, str, str]]) -> None:
    """A file with sparse arrays stores every array in the encoding the writer picks; one
    without is the all-dense candidate, which needs no check."""
    if all(encoding == _DENSE for _, _, encoding in decoded):
        return
    for arr, where, encoding in decoded:
        if encoding != _DENSE:
            continue  # checked against its header before decoding
        best = _encoding_for(arr.size, int(_nonzero(arr).sum()), arr.dtype)
        if best != _DENSE:
            raise IntegrityError(
                f"{where} is stored dense, but fedge stores it {best} next to other sparse "
                "arrays: the file was not written by fedge"
            )


# =========================================================================== files
def _write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same directory and one rename.

    The data is flushed to disk before the rename, and the rename before returning,
    so a crash leaves the old file or the new one, never a truncated mix.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # Mode 0o666 lets the umask decide, as for open(); mkstemp would force 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable on POSIX; directories cannot be opened on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
