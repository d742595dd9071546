"""The lite format: bit-identical round trips, determinism, and no corrupted byte goes unnoticed."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import lzma
import operator
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedge
from fedge.errors import FedgeError, IntegrityError, InvalidModelError, ModelFormatError
from fedge.ir import (
    Activation,
    Affine,
    Dense,
    Impute,
    Linear,
    Link,
    Model,
    QuantizedDense,
    Task,
    TreeEnsemble,
    lite,
    models_equal,
)
from strategies import models
from zoo import case

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I32 = np.int32

# encoding -> (encode, decode, bytes outside the integrity checks: magic + version / JSON prefix)
ENCODINGS = {
    "binary": (lite.to_binary_bytes, lite.from_binary_bytes, 8),
    "json": (lite.to_json_bytes, lite.from_json_bytes, len(lite._JSON_PREFIX)),
}


def forest(**overrides: Any) -> Model:
    """Two trees (a depth-2 tree and a single leaf) with an infinite threshold and int labels."""
    fields = dict(
        feature=np.array([0, 1], I32),
        threshold=np.array([0.5, np.inf]),
        left=np.array([1, ~1], I32),
        right=np.array([~0, ~2], I32),
        missing_left=np.array([True, False]),
        leaf_values=np.array([[1.0], [-2.5], [3.0], [0.1]]),
        roots=np.array([0, ~3], I32),
        tree_offset=np.array([0, 0], I32),
        n_features=2,
        n_outputs=1,
        base_score=np.array([0.5]),
    )
    fields.update(overrides)
    return Model(
        steps=(TreeEnsemble(**fields),),
        task=Task.CLASSIFICATION,
        n_features=2,
        link=Link.LOGISTIC,
        classes=np.array([3, 7]),
        feature_names=("a", "b"),
        metadata={"source": {"library": "test"}},
    )


def json_doc(model: Model) -> dict[str, Any]:
    return json.loads(lite.to_json_bytes(model))["model"]


def doc_version(doc: Any, flags: int = 0) -> int:
    """The version fedge's writer declares for a document: the newest feature it uses
    (tolerant of the broken documents the hostile tests build)."""
    used = ["xz"] if flags & lite.FLAG_XZ else []
    steps = doc.get("steps") if isinstance(doc, dict) else None
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict):
            arrays = [v for v in step.values() if type(v) is dict]
            used += [step.get("type"), *(v.get("dtype") for v in arrays)]
            used += ["sparse" for v in arrays if "sparse" in v]  # a sparse binary array
    return max([1] + [lite._INTRODUCED.get(u, 1) for u in used if isinstance(u, str)])


def reseal_json(doc: Any, version: int | None = None) -> bytes:
    """A file with a *correct* digest: validation must catch what the hash cannot."""
    digest = hashlib.sha256(lite._canonical_compact(doc)).hexdigest()
    return lite._json_text(doc, digest, doc_version(doc) if version is None else version)


def split_binary(blob: bytes) -> tuple[dict[str, Any], bytes]:
    header_len = lite._PREFIX.unpack_from(blob)[3]
    start = lite._HEAD_SIZE
    return json.loads(blob[start : start + header_len]), blob[start + header_len :]


def reseal_binary(
    header: Any, body: bytes, *, flags: int = 0, raw: bytes | None = None, version: int = 0
) -> bytes:
    raw = lite._canonical_compact(header) if raw is None else raw
    version = version or doc_version(header, flags)
    prefix = lite._PREFIX.pack(lite.MAGIC, version, flags, len(raw), len(body))
    return prefix + hashlib.sha256(prefix + raw + body).digest() + raw + body


# =========================================================================== round trips
@FAST
@given(models())
def test_random_models_round_trip_bit_identically_in_both_encodings(model) -> None:
    for encode, decode, _ in ENCODINGS.values():
        data = encode(model)
        again = decode(data)
        assert models_equal(again, model)
        assert encode(again) == data  # deterministic, and stable through a round trip


@settings(FAST, max_examples=20)  # each save fsyncs: keep the disk work small
@given(models())
def test_files_round_trip_and_saving_twice_gives_identical_bytes(tmp_path_factory, model) -> None:
    directory = tmp_path_factory.mktemp("lite")
    for suffix, encode in ((".json", lite.to_json_bytes), (".fedge", lite.to_binary_bytes)):
        path = directory / f"model{suffix}"
        written = lite.save_lite(model, path)
        first = path.read_bytes()
        assert written == len(first) and first == encode(model)
        assert models_equal(lite.load_lite(path), model)
        lite.save_lite(model, path)  # overwrite in place
        assert path.read_bytes() == first
    assert sorted(p.name for p in directory.iterdir()) == ["model.fedge", "model.json"]


def test_json_is_readable_and_in_the_documented_layout() -> None:
    text = lite.to_json_bytes(forest()).decode()
    assert text.startswith('{\n  "format": "fedge-lite",\n  "version": 1,\n  "sha256": "')
    assert '\n  "model": {\n    "classes": {\n' in text and text.endswith("\n  }\n}\n")
    assert '"data": [0.5, "inf"]' in text  # one line per array, infinities as strings
    assert '"comparison": "<="' in text


def test_the_example_in_the_spec_is_a_valid_file() -> None:
    spec = (Path(__file__).parents[2] / "docs" / "lite-format.md").read_text(encoding="utf-8")
    example = spec.split("```json\n", 1)[1].split("```", 1)[0]
    model = lite.from_json_bytes(example.encode())  # digest and canonical form check out
    assert len(lite.to_binary_bytes(model)) == 1120  # the size the spec quotes


def test_every_dataclass_field_is_in_the_schema() -> None:
    """A field added to an IR step must be added to the format (and its version bumped)."""
    for kind in lite._STEPS.values():
        fields = {f.name for f in dataclasses.fields(kind.cls) if f.init}
        assert kind.keys - {"type"} == fields, kind.cls.__name__


def test_class_label_dtypes_are_kept_and_integer_widths_become_int64() -> None:
    base = forest()
    for labels, dtype in [
        (np.array([3, 7], np.int32), np.int64),
        (np.array([3, 7], np.uint8), np.int64),
        (np.array([0.5, 2.0], np.float32), np.float64),
        (np.array([False, True]), np.bool_),
        (np.array(["no", "yés"]), np.dtype("<U3")),
    ]:
        model = dataclasses.replace(base, classes=labels)
        for encode, decode, _ in ENCODINGS.values():
            loaded = decode(encode(model))
            assert loaded.classes.dtype == dtype
            assert loaded.classes.tolist() == labels.tolist()
    # Labels beyond int64 are refused when the model is built, before any writer sees them.
    with pytest.raises(InvalidModelError, match="above 2\\*\\*63"):
        dataclasses.replace(base, classes=np.array([0, 2**63], np.uint64))


def test_is_lite_recognises_both_encodings_of_any_version() -> None:
    for encode, _, _ in ENCODINGS.values():
        assert lite.is_lite(encode(forest())[:64])
    assert lite.is_lite(lite._JSON_START + b"7,\n")
    assert not lite.is_lite(b'{"format": "fedge-lite"}')
    assert not lite.is_lite(b"PK\x03\x04")


# =========================================================================== corruption
@pytest.mark.parametrize("encoding", list(ENCODINGS))
@FAST
@given(model=models(), data=st.data())
def test_any_changed_byte_raises(encoding, model, data) -> None:
    encode, decode, unprotected = ENCODINGS[encoding]
    blob = encode(model)
    offset = data.draw(st.integers(0, len(blob) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != blob[offset]))
    bad = blob[:offset] + bytes([value]) + blob[offset + 1 :]
    # Past the format's name and version, every byte is covered by the integrity checks.
    with pytest.raises(IntegrityError if offset >= unprotected else FedgeError):
        decode(bad)


@FAST
@given(models(), st.data())
def test_truncation_or_extension_raises(model, data) -> None:
    for encode, decode, unprotected in ENCODINGS.values():
        blob = encode(model)
        cut = data.draw(st.integers(0, len(blob) - 1))
        with pytest.raises(IntegrityError if cut >= unprotected else FedgeError):
            decode(blob[:cut])
        with pytest.raises(IntegrityError):
            decode(blob + data.draw(st.binary(min_size=1, max_size=8)))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_byte_of_a_small_file(encoding) -> None:
    """Exhaustive on one model: flip a bit of each byte in turn, every one is caught."""
    encode, decode, unprotected = ENCODINGS[encoding]
    blob = encode(forest())
    for offset in range(len(blob)):
        bad = bytearray(blob)
        bad[offset] ^= 0x01
        with pytest.raises(IntegrityError if offset >= unprotected else FedgeError):
            decode(bytes(bad))


def test_a_whitespace_edit_of_the_json_is_detected() -> None:
    blob = lite.to_json_bytes(forest())
    edited = blob.replace(b'"task": ', b'"task":  ')
    assert edited != blob and json.loads(edited) == json.loads(blob)
    with pytest.raises(IntegrityError, match="canonical"):
        lite.from_json_bytes(edited)


def test_reordered_keys_are_detected_even_with_a_valid_digest() -> None:
    top = json.loads(lite.to_json_bytes(forest()))
    model_doc = dict(reversed(list(top["model"].items())))
    text = json.dumps({**top, "model": model_doc}, indent=2, ensure_ascii=False) + "\n"
    assert text.encode().startswith(lite._JSON_PREFIXES[1])
    with pytest.raises(IntegrityError, match="canonical"):
        lite.from_json_bytes(text.encode())


# =========================================================================== hostile documents
def _tree(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["steps"][0]


def _set_data(field: str, index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: _tree(d)[field]["data"].__setitem__(index, value)


def _make_cycle(doc: dict[str, Any]) -> None:
    # Tree 0 becomes a single leaf; nodes 0 and 1 point at each other: one parent each,
    # every leaf used, but unreachable from any root.
    tree = _tree(doc)
    tree["roots"]["data"] = [~0, ~3]
    tree["left"]["data"] = [1, 0]
    tree["right"]["data"] = [~1, ~2]


def _float32_thresholds_for_float64_inputs(doc: dict[str, Any]) -> None:
    _tree(doc)["threshold"]["dtype"] = "float32"
    _tree(doc)["input_precision"] = "float64"


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda d: _tree(d).update(type="svm"), ModelFormatError, "type must be one of"),
        (lambda d: _tree(d).update(type=["linear"]), ModelFormatError, "type must be one of"),
        (lambda d: _tree(d).pop("roots"), ModelFormatError, "missing keys: roots"),
        (lambda d: d.update(extra=1), ModelFormatError, "unknown keys: extra"),
        (lambda d: _tree(d)["feature"].update(extra=1), ModelFormatError, "unknown keys"),
        (lambda d: d.update(steps=[]), ModelFormatError, "non-empty"),
        (lambda d: d.update(steps={"0": 1}), ModelFormatError, "non-empty list"),
        (lambda d: _tree(d)["feature"].update(dtype="int64"), ModelFormatError, "dtype must"),
        (lambda d: _tree(d)["feature"].update(dtype=["int32"]), ModelFormatError, "dtype must"),
        (lambda d: _tree(d)["feature"].update(shape=[2**40]), ModelFormatError, "shape"),
        (lambda d: _tree(d)["leaf_values"].update(shape=[2**20, 2**20]), ModelFormatError, "limit"),
        (lambda d: _tree(d)["feature"].update(shape=[-1]), ModelFormatError, "shape"),
        (lambda d: _tree(d)["feature"].update(shape=[True, True]), ModelFormatError, "shape"),
        (lambda d: _tree(d)["feature"].update(shape=[1, 1, 2]), ModelFormatError, "1 or 2"),
        (lambda d: _tree(d)["feature"].update(shape=[3]), ModelFormatError, "list of 3"),
        (_set_data("feature", 0, 2**40), ModelFormatError, r"data\[0\] = 1099511627776 .*int32"),
        (_set_data("feature", 0, 2**31), ModelFormatError, "int32"),
        (_set_data("feature", 1, True), ModelFormatError, r"data\[1\] = True .*int32"),
        (_set_data("feature", 0, 0.0), ModelFormatError, "int32"),
        (_set_data("missing_left", 0, 1), ModelFormatError, "bool"),
        (_set_data("threshold", 0, "nan"), ModelFormatError, "float64"),
        (_set_data("threshold", 0, 1), ModelFormatError, "float64"),  # writers print 1.0
        (_set_data("leaf_values", 0, "inf"), ModelFormatError, "float64"),  # thresholds only
        (_set_data("leaf_values", 0, None), ModelFormatError, "float64"),
        (
            lambda d: _tree(d)["threshold"].update(dtype="float32", data=[0.1, "inf"]),
            ModelFormatError,
            r"0\.1 is not a float32",
        ),
        (
            lambda d: _tree(d)["threshold"].update(dtype="float32", data=[1e300, "inf"]),
            ModelFormatError,
            "float32",
        ),
        (lambda d: d.update(n_features="2"), ModelFormatError, "integer"),
        (lambda d: d.update(n_features=True), ModelFormatError, "integer"),
        (lambda d: _tree(d).update(n_outputs=10**30), ModelFormatError, "integer"),
        (lambda d: d.update(task="clustering"), ModelFormatError, "task"),
        (lambda d: _tree(d).update(comparison=["<="]), ModelFormatError, "comparison"),
        (lambda d: d["classes"].update(values=[0, "1"]), ModelFormatError, "int64"),
        (lambda d: d["classes"].update(values=[0, 2**63]), ModelFormatError, "int64"),
        (lambda d: d["classes"].update(dtype=["int64"]), ModelFormatError, "classes.dtype"),
        (
            lambda d: d["classes"].update(dtype="str", values=["a\x00", "b"]),
            ModelFormatError,
            "NUL",
        ),
        (lambda d: d.update(classes=[3, 7]), ModelFormatError, "classes must be an object"),
        (lambda d: d.update(metadata=[]), ModelFormatError, "metadata"),
        (lambda d: d.update(feature_names=[1, 2]), ModelFormatError, "feature_names"),
        # intact, well-typed files describing broken models: the IR's own validation refuses them
        (_set_data("left", 0, 0), InvalidModelError, "parents"),
        (_make_cycle, InvalidModelError, "unreachable"),
        (_set_data("feature", 0, 99), InvalidModelError, "feature 99"),
        (_float32_thresholds_for_float64_inputs, InvalidModelError, "float32 thresholds"),
        (lambda d: d.update(n_features=3), InvalidModelError, "takes 2 inputs"),
        (lambda d: d.update(task="regression"), InvalidModelError, "regression"),
    ],
)
def test_hostile_documents_with_a_valid_digest(mutate, error, message) -> None:
    doc = json_doc(forest())
    mutate(doc)
    with pytest.raises(error, match=message):
        lite.from_json_bytes(reseal_json(doc))


def test_a_tree_offset_near_int32_max_is_refused() -> None:
    doc = json_doc(forest())
    _tree(doc)["tree_offset"]["data"] = [0, 2**31 - 1]
    with pytest.raises(InvalidModelError):
        lite.from_json_bytes(reseal_json(doc))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
    | st.sampled_from(["inf", "-inf", "float32", "int32", "bool", "str", "linear", "sum"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


def _locations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON document, the root first."""
    yield path
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        children = []
    for key, child in children:
        yield from _locations(child, (*path, key))


def _edited(doc: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    doc = copy.deepcopy(doc)
    parent = functools.reduce(operator.getitem, path[:-1], doc)
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(new)
    return doc


def _documents(model: Model, encoding: str) -> tuple[Any, Callable[[Any], bytes]]:
    """The model's document in one encoding and how to seal an edited one."""
    if encoding == "json":
        return json_doc(model), reseal_json
    header, body = split_binary(lite.to_binary_bytes(model))
    return header, lambda doc: reseal_binary(doc, body)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@FAST
@given(model=models(), data=st.data())
def test_random_edits_behind_a_valid_digest_raise_only_fedge_errors(encoding, model, data) -> None:
    """Structure-aware fuzzing: replace or delete any value, or move one elsewhere."""
    encode, decode, _ = ENCODINGS[encoding]
    doc, seal = _documents(model, encoding)
    # Uniform choices: sampled_from would favour the first paths (the root and its keys).
    rnd = data.draw(st.randoms(use_true_random=True))
    paths = list(_locations(doc))[1:]
    path = rnd.choice(paths)
    donor = functools.reduce(operator.getitem, rnd.choice(paths), doc)
    new = data.draw(JSON_VALUES | st.just(donor))
    blob = seal(_edited(doc, path, new, delete=data.draw(st.booleans())))
    try:
        loaded = decode(blob)
    except FedgeError:
        return
    assert encode(loaded) == blob  # whatever loads is exactly what fedge writes for it


def test_deeply_nested_json_is_refused_quickly() -> None:
    head = lite._JSON_PREFIX + b'  "sha256": "0",\n  "model": '
    for nested in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        with pytest.raises(IntegrityError):
            lite.from_json_bytes(head + nested + b"\n}\n")

    def nested(levels: int) -> Model:  # the metadata object itself is the first level
        lists = json.loads("[" * levels + "]" * levels)
        return dataclasses.replace(forest(), metadata={"a": lists})

    for encode, decode, _ in ENCODINGS.values():
        assert models_equal(decode(encode(nested(99))), nested(99))
        with pytest.raises(ModelFormatError, match="deeper than 100 levels"):
            encode(nested(100))
    header, body = split_binary(lite.to_binary_bytes(forest()))
    canonical = lite._canonical_compact(header)
    for levels in (100, 900, 990, 5000):  # around what the JSON parser accepts
        lists = b"[" * levels + b"]" * levels
        raw = canonical.replace(b'{"source":{"library":"test"}}', b'{"a":' + lists + b"}")
        with pytest.raises(ModelFormatError):
            lite.from_binary_bytes(reseal_binary(header, body, raw=raw))


def test_invalid_utf8_huge_numbers_and_nan_constants_in_json() -> None:
    blob = lite.to_json_bytes(forest())
    with pytest.raises(IntegrityError):
        lite.from_json_bytes(blob.replace(b'"test"', b'"t\xffst"'))
    with pytest.raises(IntegrityError):
        lite.from_json_bytes(blob.replace(b'"n_features": 2', b'"n_features": ' + b"9" * 5000))
    with pytest.raises(IntegrityError):
        lite.from_json_bytes(blob.replace(b"0.5,", b"NaN,", 1))


@pytest.mark.parametrize("data", [b"", b"{}", b'{"hello": 1}', b"\x89PNG\r\n", b"FEDG"])
def test_files_that_are_not_lite_files(tmp_path, data) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match="not a fedge lite file"):
        lite.load_lite(path)
    with pytest.raises(ModelFormatError, match="not a fedge lite file"):
        lite.from_binary_bytes(data)


def test_a_missing_file_or_a_directory_is_a_format_error(tmp_path) -> None:
    for path in (tmp_path / "missing.fedge", tmp_path):
        with pytest.raises(ModelFormatError, match="cannot read"):
            lite.load_lite(path)


def test_future_versions_are_named_and_a_damaged_version_is_corruption() -> None:
    future = lite.FORMAT_VERSION + 1  # version 3 (sparse arrays) exists now
    text = lite.to_json_bytes(forest())
    with pytest.raises(ModelFormatError, match=f"version {future} is not supported"):
        lite.from_json_bytes(text.replace(b'"version": 1,', b'"version": %d,' % future, 1))
    with pytest.raises(IntegrityError, match="version line"):
        lite.from_json_bytes(text.replace(b'"version": 1,', b'"version": x,', 1))
    blob = bytearray(lite.to_binary_bytes(forest()))
    struct.pack_into("<H", blob, 6, future)
    with pytest.raises(ModelFormatError, match=f"version {future} is not supported"):
        lite.from_binary_bytes(bytes(blob))


# The spec example's .fedge file as fedge wrote it before version 2 existed.
V1_EXAMPLE_SHA256 = "6e54e4204f0106ce14448df158d167441b1288d68567ac4b81c5fd91278be08b"


def _spec_example() -> bytes:
    spec = (Path(__file__).parents[2] / "docs" / "lite-format.md").read_text(encoding="utf-8")
    return spec.split("```json\n", 1)[1].split("```", 1)[0].encode()


def test_version_1_files_load_and_float_models_are_still_written_as_version_1() -> None:
    """A file declares the lowest version that holds it: version 1 files written before
    version 2 existed load, and the writer still produces them byte for byte."""
    old_json = _spec_example()
    assert old_json.startswith(lite._JSON_PREFIXES[1])
    model = lite.from_json_bytes(old_json)
    assert lite.to_json_bytes(model) == old_json
    old_binary = lite.to_binary_bytes(model)
    assert hashlib.sha256(old_binary).hexdigest() == V1_EXAMPLE_SHA256
    assert models_equal(lite.from_binary_bytes(old_binary), model)


def _version_of(blob: bytes) -> int:
    if blob.startswith(lite.MAGIC):
        return struct.unpack_from("<H", blob, 6)[0]
    return int(blob[len(lite._JSON_START) : len(lite._JSON_START) + 1])


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_version_2_feature_makes_a_version_2_file(encoding) -> None:
    encode, decode, _ = ENCODINGS[encoding]
    leaves16 = dict(leaf_values=np.ones((4, 1), np.float16), base_score=np.zeros(1, np.float16))
    layer = _quantized_layer("int8", False, 0, "identity")
    quantized = Model(steps=(layer.steps[1],), task=Task.REGRESSION, n_features=4)
    for model, version in ((forest(), 1), (forest(**leaves16), 2), (quantized, 2), (layer, 2)):
        assert _version_of(encode(model)) == version
        assert models_equal(decode(encode(model)), model)


def test_a_file_must_declare_exactly_the_version_its_model_needs() -> None:
    """Too low: a version 1 reader could not read it. Too high: fedge never writes that, and
    the JSON version line is outside the digest, so this is how an edit of it is caught."""
    new = json_doc(
        forest(leaf_values=np.ones((4, 1), np.float16), base_score=np.zeros(1, np.float16))
    )
    with pytest.raises(
        ModelFormatError,
        match=r"leaf_values \(float16\) needs lite format version 2, but .* version 1",
    ):
        lite.from_json_bytes(reseal_json(new, version=1))
    with pytest.raises(
        IntegrityError, match="declares version 2, but fedge writes this model as version 1"
    ):
        lite.from_json_bytes(reseal_json(json_doc(forest()), version=2))
    quantized = json_doc(_quantized_layer("int16", True, 0, "tanh"))
    quantized["steps"][0]["weights"]["dtype"] = "float32"  # leave the quantized step only
    quantized["steps"][0]["bias"]["dtype"] = "float32"
    with pytest.raises(
        ModelFormatError, match=r"steps\[1\] \(quantized_dense\) needs .* version 2"
    ):
        lite.from_json_bytes(reseal_json(quantized, version=1))
    header, body = split_binary(lite.to_binary_bytes(forest()))
    with pytest.raises(IntegrityError, match="declares version 2"):
        lite.from_binary_bytes(reseal_binary(header, body, version=2))
    header, body = split_binary(lite.to_binary_bytes(_quantized_layer("int8", True, 8, "relu")))
    with pytest.raises(ModelFormatError, match="needs lite format version 2"):
        lite.from_binary_bytes(reseal_binary(header, body, version=1))
    big = fedge.lower(case("forest_binary").estimator)  # compressed: flag 1 is version 2 too
    blob = lite.to_binary_bytes(big)
    assert lite._PREFIX.unpack_from(blob)[2] == lite.FLAG_XZ and _version_of(blob) == 2
    header, body = split_binary(blob)
    with pytest.raises(ModelFormatError, match=r"xz-compressed data section needs .* version 2"):
        lite.from_binary_bytes(reseal_binary(header, body, flags=lite.FLAG_XZ, version=1))


# =========================================================================== binary layout
def _last(header: dict[str, Any]) -> dict[str, Any]:
    return _tree(header)["base_score"]  # the last array in document order


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: _tree(h)["feature"].update(offset=10**6), r"offset is 1000000, expected 0"),
        (lambda h: _tree(h)["feature"].update(offset=-8), r"offset must be an integer"),
        (lambda h: _tree(h)["feature"].update(offset=0.0), r"offset must be an integer"),
        (lambda h: _tree(h)["feature"].update(nbytes=4), r"nbytes is 4, but .* need 8"),
        (lambda h: _tree(h)["threshold"].update(offset=0), r"offset is 0, expected 8"),
        (lambda h: _last(h).update(shape=[2], nbytes=16), "outside the data section"),
        (lambda h: _last(h).update(shape=[2**40], nbytes=2**43), "shape"),
        (lambda h: _tree(h)["feature"].pop("nbytes"), "missing keys: nbytes"),
        (lambda h: _tree(h)["feature"].update(data=[0, 1]), "unknown keys: data"),
    ],
)
def test_binary_references_must_tile_the_data_section(mutate, message) -> None:
    header, body = split_binary(lite.to_binary_bytes(forest()))
    mutate(header)
    with pytest.raises(ModelFormatError, match=message):
        lite.from_binary_bytes(reseal_binary(header, body))


def test_binary_data_flags_and_header_form_are_checked() -> None:
    header, body = split_binary(lite.to_binary_bytes(forest()))
    assert lite.from_binary_bytes(reseal_binary(header, body))  # the helper itself is faithful
    with pytest.raises(ModelFormatError, match="4 unused bytes"):
        lite.from_binary_bytes(reseal_binary(header, body + b"\x00" * 4))
    flags = _tree(header)["missing_left"]
    bad_bool = bytearray(body)
    bad_bool[flags["offset"]] = 2
    with pytest.raises(ModelFormatError, match="bool bytes"):
        lite.from_binary_bytes(reseal_binary(header, bytes(bad_bool)))
    with pytest.raises(ModelFormatError, match="unknown flags 0x0002"):
        lite.from_binary_bytes(reseal_binary(header, body, flags=2))
    with pytest.raises(ModelFormatError, match="not valid xz"):  # flag set, data not xz
        lite.from_binary_bytes(reseal_binary(header, b"\x10" + bytes(15) + body, flags=1))
    pretty = json.dumps(header, indent=1, sort_keys=True).encode()
    with pytest.raises(IntegrityError, match="canonical"):
        lite.from_binary_bytes(reseal_binary(header, body, raw=pretty))
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        lite.from_binary_bytes(reseal_binary(header, body, raw=b"\xff{"))


def test_binary_is_compact() -> None:
    """A forest's binary file is far smaller than its pickle (the compression baseline)."""
    est = case("forest_binary").estimator
    size = len(lite.to_binary_bytes(fedge.lower(est)))
    assert size * 5 < len(pickle.dumps(est))


# =========================================================================== saving
def test_save_refuses_unknown_suffixes(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match=r"\.json .* \.fedge"):
        lite.save_lite(forest(), tmp_path / "m.bin")
    assert lite.save_lite(forest(), tmp_path / "M.JSON") > 0
    assert models_equal(lite.load_lite(tmp_path / "M.JSON"), forest())


def test_save_is_atomic_and_respects_the_umask(tmp_path) -> None:
    path = tmp_path / "m.fedge"
    assert lite.save_lite(forest(), path) == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["m.fedge"]  # no temporary file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    # A model the format cannot store leaves the old file untouched and no debris.
    broken = forest()
    object.__setattr__(broken.steps[0], "leaf_values", np.ones((4, 1), np.int8))
    with pytest.raises(ModelFormatError, match=r"cannot store .*leaf_values as int8"):
        lite.save_lite(broken, path)
    assert models_equal(lite.load_lite(path), forest())
    assert [p.name for p in tmp_path.iterdir()] == ["m.fedge"]


def test_a_real_model_predicts_the_same_after_a_round_trip(tmp_path) -> None:
    model = fedge.lower(case("lasso").estimator)
    X = np.linspace(-1, 1, 40).reshape(4, 10)
    for suffix in (".json", ".fedge"):
        lite.save_lite(model, tmp_path / f"m{suffix}")
        again = lite.load_lite(tmp_path / f"m{suffix}")
        np.testing.assert_array_equal(fedge.predict(again, X), fedge.predict(model, X))


def test_lone_surrogates_cannot_be_saved() -> None:
    model = dataclasses.replace(forest(), feature_names=("a", "\ud800"))
    for encode, _, _ in ENCODINGS.values():
        with pytest.raises(ModelFormatError, match="not valid Unicode"):
            encode(model)


def test_linear_float32_weights_round_trip_exactly() -> None:
    weights = np.array([[0.1], [-3.4e38]], np.float32)
    model = Model(
        steps=(Linear(weights=weights, bias=np.array([1e-45], np.float32)),),
        task=Task.REGRESSION,
        n_features=2,
    )
    for encode, decode, _ in ENCODINGS.values():
        assert models_equal(decode(encode(model)), model)


def _quantized_models() -> list[Model]:
    """A per-channel int8 dynamic layer after a float16 one, and int16/int8 trees."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    from fedge.compression import ModelQuantizer

    rng = np.random.default_rng(0)
    first = Dense(rng.normal(size=(3, 4)).astype(np.float16), np.zeros(4, np.float16), "relu")
    second = QuantizedDense(
        rng.integers(-127, 128, size=(4, 2)).astype(np.int8),
        np.array([0.5, 0.25], np.float32),
        np.array([3, -2], np.int32),
        np.array([0.1, -0.1], np.float32),
        activation="tanh",
        input_bits=8,
    )
    layers = Model(steps=(first, second), task=Task.REGRESSION, n_features=3)
    X, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(5, max_depth=4, random_state=0).fit(X, y)
    return [layers] + [ModelQuantizer(s).quantize_model(forest) for s in ("int8", "int16")]


@pytest.mark.parametrize("encode", ["json", "binary"])
def test_quantized_steps_and_float16_round_trip_at_their_own_precision(encode) -> None:
    for model in _quantized_models():
        if encode == "json":
            back = lite.from_json_bytes(lite.to_json_bytes(model))
        else:
            back = lite.from_binary_bytes(lite.to_binary_bytes(model))
        assert models_equal(back, model)
    _, int8_trees, int16_trees = _quantized_models()
    # int8 weights take one byte each in the binary file.
    assert len(lite.to_binary_bytes(int8_trees)) < len(lite.to_binary_bytes(int16_trees))


def test_larger_data_sections_are_xz_compressed_and_bounded() -> None:
    """Big models store their data section as xz (flag 1): smaller, still bit-exact, and a
    hostile stream can neither overrun nor lie about its length."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_breast_cancer(return_X_y=True)
    model = fedge.lower(RandomForestClassifier(20, random_state=0).fit(X, y))
    blob = lite.to_binary_bytes(model)
    assert lite._PREFIX.unpack_from(blob)[2] == lite.FLAG_XZ
    assert models_equal(lite.from_binary_bytes(blob), model)
    assert blob == lite.to_binary_bytes(model)  # deterministic
    header, stored = split_binary(blob)
    raw = lzma.decompress(stored[8:])
    assert len(raw) == struct.unpack("<Q", stored[:8])[0]
    assert len(stored) < len(raw) / 2
    zeros = lite._packed_data(bytes(1 << 20))  # 1 MiB of zeros: > 256x, so stored raw
    assert zeros[1] == 0 and len(zeros[0]) == 1 << 20
    tiny = lite.to_binary_bytes(forest())  # compressing a few bytes would grow them
    assert lite._PREFIX.unpack_from(tiny)[2] == 0
    for data, message in (
        (struct.pack("<Q", len(raw) - 1) + stored[8:], "not the"),
        (struct.pack("<Q", len(raw) + 5) + stored[8:], "not the"),
        (struct.pack("<Q", 2**40) + stored[8:], "4 GiB"),
        (struct.pack("<Q", 300 * len(stored)) + stored[8:], "more than 256 times"),
        (stored[:4], "shorter than its length"),
        (stored + b"junk", "trailing"),
    ):
        with pytest.raises(ModelFormatError, match=message):
            lite.from_binary_bytes(reseal_binary(header, data, flags=1))


# =========================================================================== quantized, float16
def _quantized_layer(dtype: str, per_channel: bool, input_bits: int, activation: str) -> Model:
    """A float16 Dense (3 -> 4, relu), then a QuantizedDense (4 -> 2) with extreme values."""
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    weights = rng.integers(info.min, info.max, size=(4, 2), endpoint=True).astype(dtype)
    weights[0] = [info.min, info.max]  # the extremes survive
    n = 2 if per_channel else 1
    layer = QuantizedDense(
        weights=weights,
        scale=np.array([1.5e-45, 3.0e38][:n], np.float32)[::-1].copy(),
        zero_point=np.array([info.min, info.max][:n], np.int32),
        bias=np.array([0.1, -2.5], np.float32),
        activation=activation,
        input_bits=input_bits,
    )
    first = Dense(
        np.array([[0.1, -0.0, 65504, 2**-24]] * 3, np.float16), np.ones(4, np.float16), "relu"
    )
    return Model(steps=(first, layer), task=Task.REGRESSION, n_features=3)


QUANTIZED_CASES = [
    (dtype, per_channel, bits, activation.value)
    for dtype in ("int8", "int16")
    for per_channel in (False, True)
    for bits in ((0, 8) if dtype == "int8" else (0,))
    for activation in Activation
]


@pytest.mark.parametrize(("dtype", "per_channel", "input_bits", "activation"), QUANTIZED_CASES)
def test_quantized_dense_round_trips_bit_identically(
    dtype, per_channel, input_bits, activation
) -> None:
    model = _quantized_layer(dtype, per_channel, input_bits, activation)
    for encode, decode, _ in ENCODINGS.values():
        data = encode(model)
        again = decode(data)
        assert models_equal(again, model)
        assert encode(again) == data
    header, _ = split_binary(lite.to_binary_bytes(model))
    step = header["steps"][1]
    assert step["type"] == "quantized_dense" and step["input_bits"] == input_bits
    # Each array is stored at its own width: an int8 weight is one byte, an int16 two.
    assert step["weights"]["nbytes"] == 8 * np.dtype(dtype).itemsize
    assert [step[k]["nbytes"] for k in ("scale", "zero_point", "bias")] == [
        4 * (1 + per_channel)
    ] * 2 + [8]
    assert header["steps"][0]["weights"] == {
        "dtype": "float16",
        "nbytes": 24,
        "offset": 0,
        "shape": [3, 4],
    }


def test_int8_weights_cost_a_byte_each_in_the_binary_file() -> None:
    """The file's length is the size compression reports: an int8 layer is about a quarter
    of its float32 original (xz barely shrinks random weights of any width)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(256, 64)).astype(np.float32)
    bias = np.zeros(64, np.float32)
    scale = np.abs(weights).max(axis=0) / 127
    q = np.clip(np.rint(weights / scale), -127, 127)
    steps = {
        "float32": Dense(weights, bias),
        "float16": Dense(weights.astype(np.float16), bias.astype(np.float16)),
        "int16": QuantizedDense(q.astype(np.int16), scale, np.zeros(64, np.int32), bias),
        "int8": QuantizedDense(q.astype(np.int8), scale, np.zeros(64, np.int32), bias),
    }
    size = {}
    for name, step in steps.items():
        blob = lite.to_binary_bytes(Model(steps=(step,), task=Task.REGRESSION, n_features=256))
        size[name] = len(blob)
        raw = split_binary(blob)[0]["steps"][0]["weights"]["nbytes"]
        assert raw == 256 * 64 * step.weights.dtype.itemsize
    assert size["int8"] < size["int16"] < size["float16"] < size["float32"]
    assert size["int8"] * 3.5 < size["float32"]


def test_float16_tensors_round_trip_in_linear_dense_trees_and_preprocessing() -> None:
    h = functools.partial(np.array, dtype=np.float16)
    specials = h([0.1, -0.0, 65504, -65504, 2**-24, -(2**-14), 1 / 3])
    linear = Linear(specials.reshape(7, 1), h([2**-24]))
    tree = forest(leaf_values=h([[1.0], [-2.5], [3.0], [0.1]]), base_score=h([6e-8])).steps[0]
    models_ = [
        Model(
            steps=(Impute(specials), Affine(specials, h([1] * 7)), linear),
            task=Task.REGRESSION,
            n_features=7,
        ),
        Model(
            steps=(Dense(specials.reshape(1, 7), specials, "tanh"),),
            task=Task.REGRESSION,
            n_features=1,
        ),
        dataclasses.replace(forest(), steps=(tree,)),
    ]
    for model in models_:
        for encode, decode, _ in ENCODINGS.values():
            assert models_equal(decode(encode(model)), model)
    # JSON writes the exact value of each float16, widened to float64 (never a rounded decimal).
    text = lite.to_json_bytes(models_[0]).decode()
    assert '"data": [0.0999755859375, -0.0, 65504.0, -65504.0, 5.960464477539063e-08, ' in text


def test_every_float16_value_round_trips_bit_identically() -> None:
    bits = np.arange(2**16, dtype=np.uint16)
    values = bits.view(np.float16)
    values = values[np.isfinite(values)]  # 63488 of them, subnormals and -0.0 included
    model = Model(
        steps=(Linear(values.reshape(1, -1), np.zeros(values.size, np.float16)),),
        task=Task.REGRESSION,
        n_features=1,
    )
    for encode, decode, _ in ENCODINGS.values():
        loaded = decode(encode(model)).steps[0].weights
        assert loaded.dtype == np.float16
        assert loaded.tobytes() == model.steps[0].weights.tobytes()


def _layer_doc() -> dict[str, Any]:
    return json_doc(_quantized_layer("int8", True, 8, "relu"))


def _q(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["steps"][1]


def _int16_dynamic(doc: dict[str, Any]) -> None:
    _q(doc)["weights"]["dtype"] = "int16"


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda d: _q(d)["weights"].update(dtype="int32"),
            ModelFormatError,
            r"steps\[1\]\.weights\.dtype must be one of int8, int16, got 'int32'",
        ),
        (
            lambda d: _q(d)["weights"].update(dtype="float32"),
            ModelFormatError,
            "weights.dtype must be one of int8, int16",
        ),
        (
            lambda d: _q(d)["weights"].update(dtype="uint8"),
            ModelFormatError,
            "weights.dtype must be one of int8, int16",
        ),
        (
            lambda d: _q(d)["weights"]["data"].__setitem__(0, 128),
            ModelFormatError,
            r"weights\.data\[0\] = 128 is not a int8 value",
        ),
        (
            lambda d: _q(d)["weights"]["data"].__setitem__(1, 1.0),
            ModelFormatError,
            r"weights\.data\[1\] = 1\.0 is not a int8",
        ),
        (
            lambda d: _q(d)["zero_point"]["data"].__setitem__(0, 200),
            InvalidModelError,
            "zero_point must lie in the int8 range",
        ),
        (
            lambda d: _q(d)["zero_point"]["data"].__setitem__(0, 2**31),
            ModelFormatError,
            "is not a int32 value",
        ),
        (
            lambda d: _q(d)["zero_point"].update(dtype="int8"),
            ModelFormatError,
            "zero_point.dtype must be one of int32",
        ),
        (
            lambda d: _q(d)["zero_point"].update(data=[0], shape=[1]),
            InvalidModelError,
            r"zero_point must be int32 of shape \(2,\)",
        ),
        (
            lambda d: _q(d)["scale"].update(data=[0.5, 0.5, 0.5], shape=[3]),
            InvalidModelError,
            "scale must be float32 of length 1 or 2",
        ),
        (
            lambda d: _q(d)["scale"].update(dtype="float64"),
            ModelFormatError,
            "scale.dtype must be one of float32",
        ),
        (
            lambda d: _q(d)["scale"].update(dtype="float16"),
            ModelFormatError,
            "scale.dtype must be one of float32",
        ),
        (
            lambda d: _q(d)["scale"]["data"].__setitem__(0, 0.0),
            InvalidModelError,
            "scale must be finite and positive",
        ),
        (
            lambda d: _q(d)["scale"]["data"].__setitem__(0, -1.0),
            InvalidModelError,
            "finite and positive",
        ),
        (lambda d: _q(d)["scale"]["data"].__setitem__(0, "inf"), ModelFormatError, "float32"),
        (
            lambda d: _q(d)["scale"]["data"].__setitem__(0, 0.1),
            ModelFormatError,
            r"0\.1 is not a float32",
        ),
        (
            lambda d: _q(d)["bias"].update(dtype="float16"),
            ModelFormatError,
            "bias.dtype must be one of float32",
        ),
        (lambda d: _q(d).update(input_bits=4), InvalidModelError, "input_bits must be 0"),
        (
            lambda d: _q(d).update(input_bits=True),
            ModelFormatError,
            "input_bits must be an integer",
        ),
        (lambda d: _q(d).update(input_bits=-8), ModelFormatError, "input_bits must be an integer"),
        (_int16_dynamic, InvalidModelError, "needs int8 weights"),
        (lambda d: _q(d).update(activation="gelu"), ModelFormatError, "activation must be one of"),
        (lambda d: _q(d).pop("zero_point"), ModelFormatError, "missing keys: zero_point"),
        (lambda d: _q(d).update(leaf_scale=1), ModelFormatError, "unknown keys: leaf_scale"),
        (
            lambda d: d["steps"][0]["weights"]["data"].__setitem__(0, 0.1),
            ModelFormatError,
            r"0\.1 is not a float16 value",
        ),
        (
            lambda d: d["steps"][0]["weights"]["data"].__setitem__(0, 65520.0),
            ModelFormatError,
            "not a float16 value",
        ),
        (
            lambda d: d["steps"][0]["weights"]["data"].__setitem__(0, 1e-9),
            ModelFormatError,
            "not a float16 value",
        ),
        (
            lambda d: d["steps"][0]["bias"].update(dtype="float32"),
            InvalidModelError,
            "share one precision",
        ),
    ],
)
def test_hostile_quantized_and_float16_fields(mutate, error, message) -> None:
    doc = _layer_doc()
    mutate(doc)
    with pytest.raises(error, match=message):
        lite.from_json_bytes(reseal_json(doc))


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda t: t["threshold"].update(dtype="float16"),
            ModelFormatError,
            "threshold.dtype must be one of float64, float32",
        ),
        (
            lambda t: t.update(input_precision="float16"),
            InvalidModelError,
            "input_precision must be float64 or float32",
        ),
        (
            lambda t: t.update(input_precision="int8"),
            InvalidModelError,
            "input_precision must be float64 or float32",
        ),
        (
            lambda t: t["leaf_values"].update(dtype="int8", data=[1, -2, 3, 0]),
            ModelFormatError,
            "leaf_values.dtype must be one of float64, float32, float16",
        ),
        (
            lambda t: t["leaf_values"].update(dtype="float16", data=[1.0, -2.5, 3.0, 0.5]),
            InvalidModelError,
            "share one precision",
        ),
    ],
)
def test_hostile_tree_precisions(mutate, error, message) -> None:
    doc = json_doc(forest())
    mutate(_tree(doc))
    with pytest.raises(error, match=message):
        lite.from_json_bytes(reseal_json(doc))


def test_hostile_quantized_binary_references() -> None:
    header, body = split_binary(lite.to_binary_bytes(_quantized_layer("int8", True, 8, "relu")))
    weights = _q(header)["weights"]
    for change, message in (
        ({"nbytes": 16}, "nbytes is 16, but its shape and dtype need 8"),
        ({"dtype": "int16"}, "nbytes is 8, but its shape and dtype need 16"),
        ({"dtype": "int64"}, "weights.dtype must be one of int8, int16"),
        ({"shape": [4, 2, 1]}, "1 or 2 sizes"),
    ):
        broken = copy.deepcopy(header)
        _q(broken)["weights"].update(change)
        with pytest.raises(ModelFormatError, match=message):
            lite.from_binary_bytes(reseal_binary(broken, body))
    assert weights["dtype"] == "int8"
