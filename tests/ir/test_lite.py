"""The lite format: bit-identical round trips, determinism, and no corrupted byte goes unnoticed."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedge
from fedge.errors import FedgeError, IntegrityError, InvalidModelError, ModelFormatError
from fedge.ir import lite, models_equal
from strategies import models
from zoo import case

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(models())
def test_random_models_round_trip_bit_identically_in_both_encodings(model) -> None:
    for encode, decode in (
        (lite.to_json_bytes, lite.from_json_bytes),
        (lite.to_binary_bytes, lite.from_binary_bytes),
    ):
        data = encode(model)
        again = decode(data)
        assert models_equal(again, model)
        assert encode(again) == data  # deterministic, and stable through a round trip


# (encode, decode, bytes before the digest-covered payload: magic + version / JSON prefix)
ENCODINGS = {
    "binary": (lite.to_binary_bytes, lite.from_binary_bytes, 8),
    "json": (lite.to_json_bytes, lite.from_json_bytes, len(lite._JSON_PREFIX)),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@FAST
@given(model=models(), data=st.data())
def test_any_changed_byte_raises(encoding, model, data) -> None:
    encode, decode, protected = ENCODINGS[encoding]
    blob = encode(model)
    offset = data.draw(st.integers(0, len(blob) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != blob[offset]))
    bad = blob[:offset] + bytes([value]) + blob[offset + 1 :]
    # Past the format's name and version, every byte is covered by the integrity checks.
    with pytest.raises(IntegrityError if offset >= protected else FedgeError):
        decode(bad)


@FAST
@given(models(), st.data())
def test_truncation_at_any_length_raises(model, data) -> None:
    for encode, decode in (
        (lite.to_json_bytes, lite.from_json_bytes),
        (lite.to_binary_bytes, lite.from_binary_bytes),
    ):
        blob = encode(model)
        cut = data.draw(st.integers(0, len(blob) - 1))
        with pytest.raises(FedgeError):
            decode(blob[:cut])


def test_every_byte_of_a_small_binary_file(tmp_path) -> None:
    """Exhaustive on one real model: flip each byte, every one is caught."""
    blob = lite.to_binary_bytes(fedge.lower(case("tree_single_leaf").estimator))
    for offset in range(len(blob)):
        bad = bytearray(blob)
        bad[offset] ^= 0x01
        with pytest.raises(IntegrityError if offset >= 8 else FedgeError):
            lite.from_binary_bytes(bytes(bad))


def test_whitespace_edit_of_the_json_is_detected() -> None:
    blob = lite.to_json_bytes(fedge.lower(case("lasso").estimator))
    edited = blob.replace(b'"task": ', b'"task":  ')
    assert edited != blob and json.loads(edited) == json.loads(blob)
    with pytest.raises(IntegrityError, match="canonical"):
        lite.from_json_bytes(edited)


def test_json_is_readable() -> None:
    text = lite.to_json_bytes(fedge.lower(case("tree_binary").estimator)).decode()
    assert text.startswith('{\n  "format": "fedge-lite",\n  "version": 1,\n  "sha256": "')
    assert '"type": "tree_ensemble"' in text and '"comparison": "<="' in text


def _reseal(doc: dict) -> bytes:
    """A hostile file with a *correct* digest: validation must catch what the hash cannot."""
    digest = hashlib.sha256(lite._canonical_compact(doc)).hexdigest()
    return lite._json_text(doc, digest)


def _doc(name: str = "tree_binary") -> dict:
    return json.loads(lite.to_json_bytes(fedge.lower(case(name).estimator)))["model"]


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda d: d["steps"][0].update(type="svm"), ModelFormatError, "type must be one of"),
        (lambda d: d["steps"][0].pop("roots"), ModelFormatError, "missing keys"),
        (lambda d: d.update(extra=1), ModelFormatError, "unknown keys"),
        (lambda d: d["steps"][0]["feature"].update(dtype="int64"), ModelFormatError, "dtype must"),
        (lambda d: d["steps"][0]["feature"].update(shape=[2**40]), ModelFormatError, "shape"),
        (lambda d: d["steps"][0]["feature"].update(shape=[-1]), ModelFormatError, "shape"),
        (lambda d: d["steps"][0]["feature"].update(shape=[3]), ModelFormatError, "list of 3"),
        (
            lambda d: d["steps"][0]["feature"]["data"].__setitem__(0, 2**40),
            ModelFormatError,
            "int32",
        ),
        (
            lambda d: d["steps"][0]["feature"]["data"].__setitem__(0, True),
            ModelFormatError,
            "int32",
        ),
        (
            lambda d: d["steps"][0]["leaf_values"]["data"].__setitem__(0, "nan"),
            ModelFormatError,
            "float",
        ),
        (lambda d: d.update(n_features="30"), ModelFormatError, "integer"),
        (lambda d: d.update(task="clustering"), ModelFormatError, "task"),
        (lambda d: d["classes"].update(values=[0, "1"]), ModelFormatError, "int64"),
        # structurally broken trees behind a valid digest: the IR's own validation refuses them
        (lambda d: d["steps"][0]["left"]["data"].__setitem__(0, 0), InvalidModelError, "parents"),
        (
            lambda d: d["steps"][0]["feature"]["data"].__setitem__(0, 99),
            InvalidModelError,
            "feature 99",
        ),
    ],
)
def test_hostile_documents_with_a_valid_digest(mutate, error, message) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(error, match=message):
        lite.from_json_bytes(_reseal(doc))


def test_a_cyclic_tree_with_a_valid_digest_is_refused() -> None:
    doc = _doc()
    left = doc["steps"][0]["left"]["data"]
    right = doc["steps"][0]["right"]["data"]
    # Point the deepest internal node's children back at the root.
    i = max(range(len(left)), key=lambda k: (left[k] < 0) + (right[k] < 0))
    left[i] = 0
    with pytest.raises(InvalidModelError):
        lite.from_json_bytes(_reseal(doc))


def test_deeply_nested_json_and_non_files() -> None:
    deep = lite._JSON_PREFIX + b'  "sha256": "0",\n  "model": ' + b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(IntegrityError):
        lite.from_json_bytes(deep + b"\n}\n")
    with pytest.raises(ModelFormatError, match="not a fedge lite file"):
        lite.from_json_bytes(b'{"hello": 1}')
    with pytest.raises(ModelFormatError, match="bad magic"):
        lite.from_binary_bytes(b"PK\x03\x04" + b"\x00" * 100)


def test_future_versions_are_named() -> None:
    model = fedge.lower(case("lasso").estimator)
    text = lite.to_json_bytes(model).replace(b'"version": 1,', b'"version": 2,', 1)
    with pytest.raises(ModelFormatError, match="version 2 is not supported"):
        lite.from_json_bytes(text)
    blob = bytearray(lite.to_binary_bytes(model))
    struct.pack_into("<H", blob, 6, 2)
    with pytest.raises(ModelFormatError, match="version 2 is not supported"):
        lite.from_binary_bytes(bytes(blob))


def _rebuild_binary(header: dict, body: bytes) -> bytes:
    raw = lite._canonical_compact(header)
    prefix = lite._PREFIX.pack(lite.MAGIC, 1, 0, len(raw), len(body))
    return prefix + hashlib.sha256(prefix + raw + body).digest() + raw + body


def test_binary_references_outside_the_data_are_refused() -> None:
    blob = lite.to_binary_bytes(fedge.lower(case("tree_binary").estimator))
    _, _, _, header_len, _ = lite._PREFIX.unpack_from(blob)
    start = lite._HEAD_SIZE
    header = json.loads(blob[start : start + header_len])
    body = blob[start + header_len :]
    header["steps"][0]["feature"]["offset"] = len(body) + 8
    with pytest.raises(ModelFormatError, match="outside the data section"):
        lite.from_binary_bytes(_rebuild_binary(header, body))
    header = json.loads(blob[start : start + header_len])
    with pytest.raises(ModelFormatError, match="unused bytes"):
        lite.from_binary_bytes(_rebuild_binary(header, body + b"\x00" * 4))


def test_binary_is_compact() -> None:
    """A forest's binary file is far smaller than its pickle (the compression baseline)."""
    import pickle

    est = case("forest_binary").estimator
    size = len(lite.to_binary_bytes(fedge.lower(est)))
    assert size * 5 < len(pickle.dumps(est))


def test_save_refuses_unknown_suffix_and_writes_atomically(tmp_path) -> None:
    model = fedge.lower(case("lasso").estimator)
    with pytest.raises(ModelFormatError, match="suffix"):
        lite.save_lite(model, tmp_path / "m.bin")
    assert lite.save_lite(model, tmp_path / "m.fedge") == (tmp_path / "m.fedge").stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["m.fedge"]  # no temp files left behind
    assert models_equal(lite.load_lite(tmp_path / "m.fedge"), model)
    assert np.isfinite(fedge.predict(lite.load_lite(tmp_path / "m.fedge"), np.ones((1, 10)))).all()
