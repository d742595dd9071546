"""Packages: byte-identical builds, every byte verified, hostile archives refused."""

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import fedge
from fedge.deployment.canonical_zip import read_canonical_zip, write_canonical_zip
from fedge.deployment.model_packager import ModelPackager, load_package, verify_package
from fedge.errors import IntegrityError, InvalidInputError, UntrustedFileError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def tiny():
    """A small package (an IR logistic regression on 3 features, no source model)."""
    X, y = make_classification(200, 3, n_informative=2, n_redundant=0, random_state=0)
    model = fedge.lower(LogisticRegression().fit(X, y))
    data, version_id, _ = ModelPackager("tiny").build(model, X, y, created=0, signing_key=KEY)
    return data, version_id, X


def test_every_flipped_byte_is_caught_before_anything_is_deserialised(tiny):
    data, _, _ = tiny
    public = KEY.public_key()
    verify_package(data, public_key=public)
    for offset in range(len(data)):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x20
        with pytest.raises(IntegrityError):
            verify_package(bytes(corrupted), public_key=public)


def _rebuilt(data, change):
    members = read_canonical_zip(data)
    return write_canonical_zip(change(members))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: [*m[:-2], ("extra.txt", b"hi"), *m[-2:]], "canonical order"),
        (lambda m: sorted([*m[:-2], ("extra.txt", b"hi")]) + m[-2:], "differ from the manifest"),
        (lambda m: [x for x in m if x[0] != "README.md"], "differ from the manifest"),
        (lambda m: [("READ_ME.md", d) if n == "README.md" else (n, d) for n, d in m],
         "differ from the manifest"),
        (lambda m: [(n, d + b" ") if n == "model.json" else (n, d) for n, d in m], "SHA-256"),
    ],
)
def test_added_removed_renamed_or_edited_members_are_refused(tiny, change, message):
    data, _, _ = tiny
    with pytest.raises(IntegrityError, match=message):
        verify_package(_rebuilt(data, change))


def test_signatures_and_keys(tiny, tmp_path):
    data, version_id, _ = tiny
    path = tmp_path / "p.zip"
    path.write_bytes(data)
    package = load_package(path, public_key=KEY.public_key())
    assert package.signature_verified and package.version_id == version_id
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    with pytest.raises(IntegrityError, match="signature"):
        load_package(path, public_key=other.public_key())
    unsigned, _, _ = ModelPackager("tiny").build(package.model, created=0)
    path.write_bytes(unsigned)
    with pytest.raises(IntegrityError, match="not signed"):
        load_package(path, public_key=KEY.public_key())
    assert not load_package(path).signature_verified


def _zip(entries, *, attrs=0o100644):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = attrs << 16
            archive.writestr(info, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (_zip([("../evil", b"x")]), "unsafe member name"),
        (_zip([("/etc/passwd", b"x")]), "unsafe member name"),
        (_zip([("link", b"target")], attrs=0o120777), "not a regular file"),
        (_zip([("a", b"1")]), "canonical"),  # another tool's layout (timestamps, flags)
    ],
)
def test_hostile_archives_are_refused(archive, message):
    with pytest.raises(IntegrityError, match=message):
        read_canonical_zip(archive)


def test_duplicates_and_bombs_are_refused():
    one = write_canonical_zip([("a", b"1")])
    # the same member twice, hand-assembled: two local records and two directory entries
    local_end = one.index(b"PK\x01\x02")
    central = one[local_end:-22]
    dup_central = central + central[:16] + central[16:42] + struct.pack("<I", local_end) + (
        central[46:]
    )
    cd_offset = 2 * local_end
    doubled = one[:local_end] * 2 + dup_central + struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(dup_central), cd_offset, 0
    )
    with pytest.raises(IntegrityError):
        read_canonical_zip(doubled)
    with pytest.raises(IntegrityError, match=r"zip bomb|exceed"):
        read_canonical_zip(one, max_total=0)
    with pytest.raises(IntegrityError, match="limit"):
        read_canonical_zip(write_canonical_zip([("a", b""), ("b", b"")]), max_members=1)


def test_same_inputs_same_bytes_and_round_trip(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(5, max_depth=4, random_state=0).fit(X, y)
    packager = ModelPackager("cancer-forest", "2.0.0")
    a = packager.package(forest, tmp_path / "a.zip", X, y, formats=("c",), created=1_700_000_000)
    b = packager.package(forest, tmp_path / "b.zip", X, y, formats=("c",), created=1_700_000_000)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert a.version_id == b.version_id
    package = load_package(tmp_path / "a.zip")
    assert np.array_equal(package.predict(X), forest.predict(X))
    assert np.array_equal(package.source.predict(X), forest.predict(X))
    meta = package.metadata
    assert meta["created"] == 1_700_000_000 and meta["task"] == "classification"
    assert meta["input_schema"][0]["observed_min"] == pytest.approx(X[:, 0].min())
    assert "scikit-learn" in package.members["requirements.txt"].decode()
    assert {"c/model.c", "c/model.h", "source.skops", "README.md"} <= set(package.members)
    # standard tools read the archive
    assert zipfile.ZipFile(tmp_path / "a.zip").testzip() is None


def test_inputs_are_checked_against_the_schema(tiny, tmp_path):
    data, _, X = tiny
    path = tmp_path / "p.zip"
    path.write_bytes(data)
    package = load_package(path)
    with pytest.raises(InvalidInputError, match="3 features"):
        package.predict(np.zeros((2, 4)))
    with pytest.raises(InvalidInputError, match="NaN"):
        package.predict(np.array([[np.nan, 0.0, 0.0]]))
    assert package.predict(X[:5]).shape == (5,)


class Odd(LogisticRegression):
    """A class fedge never reviewed: skops stores it, loading it needs trust."""


def test_unreviewed_types_and_pickles_need_trust(tmp_path):
    X, y = make_classification(100, 3, n_informative=2, n_redundant=0, random_state=0)
    model = Odd().fit(X, y)
    ModelPackager("odd").package(model, tmp_path / "skops.zip", created=0)
    with pytest.raises(UntrustedFileError, match="Odd"):
        load_package(tmp_path / "skops.zip")
    assert isinstance(load_package(tmp_path / "skops.zip", trust=True).source, Odd)
    info = ModelPackager("odd").package(model, tmp_path / "odd.zip", created=0,
                                        pickle_source=True)
    assert "source.pkl" in info.members
    with pytest.raises(UntrustedFileError, match="pickle"):
        load_package(tmp_path / "odd.zip")
    assert load_package(tmp_path / "odd.zip", trust=True).source is not None
    manifest = json.loads(read_canonical_zip(info.path.read_bytes())[-1][1])
    assert set(manifest["files"]) >= {"source.pkl", "model.json", "metadata.json"}
