"""Reproducible, tamper-evident model packages: one ZIP with everything needed to run a model.

>>> info = ModelPackager("heart-risk", "1.2.0").package(estimator, "heart.zip",   # doctest: +SKIP
...                                                    X_train, y_train)
>>> pkg = load_package("heart.zip")                  # every byte checked first # doctest: +SKIP
>>> pkg.predict(X_new)                              # inputs checked against the schema

A package holds ``model.json`` (the IR in the lite format), the source model in a safe native
format (``source.skops``, ``source.xgb.json`` or ``source.lgb.txt``; ``source.pkl`` only when
asked), exported artifacts (``c/``, ``onnx/``...), ``metadata.json`` (task, features and an
input schema with observed ranges, metrics, a fingerprint of the training data, versions,
creation time), ``requirements.txt``, ``README.md``, and ``manifest.json`` with the SHA-256 of
every other member. The package's **version id** is the SHA-256 of the manifest; an optional
Ed25519 signature (``signature.ed25519``) signs the manifest.

The archive is a canonical ZIP (:mod:`fedge.deployment.canonical_zip`): loading re-writes it
from its members and requires the same bytes, so *every* byte of the file is covered, not only
the members. Identical inputs give byte-identical packages (set ``SOURCE_DATE_EPOCH`` or pass
``created`` to pin the creation time recorded in the metadata).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from fedge._version import __version__
from fedge.deployment.canonical_zip import read_canonical_zip, write_canonical_zip
from fedge.errors import (
    IntegrityError,
    InvalidInputError,
    ModelFormatError,
    UnsupportedOperationError,
    UntrustedFileError,
)
from fedge.ir.lite import from_json_bytes, to_json_bytes
from fedge.ir.lower import lower
from fedge.ir.nodes import Model, Task

__all__ = [
    "LoadedPackage",
    "ModelPackager",
    "PackageInfo",
    "is_package",
    "load_package",
    "verify_package",
]

MANIFEST = "manifest.json"
SIGNATURE = "signature.ed25519"
FORMAT = "fedge-package/1"
_SIGNED_BY = b"fedge-package-manifest-v1\n"  # domain separation for the signature


@dataclass(frozen=True)
class PackageInfo:
    """What :meth:`ModelPackager.package` wrote."""

    path: Path
    version_id: str  # SHA-256 of manifest.json
    bytes: int
    members: tuple[str, ...]
    signed: bool


@dataclass
class LoadedPackage:
    """A verified package: the IR model, the source model (if safely loadable), metadata."""

    model: Model
    metadata: dict[str, Any]
    manifest: dict[str, Any]
    version_id: str
    signature_verified: bool
    members: dict[str, bytes] = field(repr=False)
    source: Any = field(default=None, repr=False)

    def check_input(self, X: Any) -> np.ndarray:
        """``X`` as float64 rows after checking it against the package's input schema."""
        schema = self.metadata["input_schema"]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(schema):
            raise InvalidInputError(
                f"the package's model takes {len(schema)} features per row, got shape {X.shape}"
            )
        nan = np.isnan(X)
        allowed = np.array([f["nan_allowed"] for f in schema])
        bad = np.flatnonzero(nan.any(axis=0) & ~allowed)
        if bad.size:
            raise InvalidInputError(
                f"feature {schema[int(bad[0])]['name']!r} has NaN, which the model was not "
                "trained with; impute it first"
            )
        if np.isinf(X).any():
            raise InvalidInputError("X holds Inf; the schema allows finite numbers only")
        return X

    def predict(self, X: Any) -> np.ndarray:
        """Labels (or values) of the packaged IR model for schema-checked ``X``."""
        from fedge.ir.runtime import predict

        return predict(self.model, self.check_input(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the packaged IR model for schema-checked ``X``."""
        from fedge.ir.runtime import predict_proba

        return predict_proba(self.model, self.check_input(X))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def _creation_time(created: int | float | None) -> int:
    if created is not None:
        return int(created)
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        try:
            return int(env)
        except ValueError:
            raise InvalidInputError(f"SOURCE_DATE_EPOCH must be an integer, got {env!r}") from None
    return int(time.time())


def _versions(source: Any) -> dict[str, str]:
    names = ["numpy", "scikit-learn"]
    module = type(source).__module__.split(".")[0] if source is not None else ""
    if module in ("xgboost", "lightgbm"):
        names.append(module)
    if module == "sklearn" or module == "":
        names.append("skops")
    out = {"fedge": __version__, "python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def _source_member(source: Any, pickle_source: bool) -> tuple[str, bytes] | None:
    """The source model in its safest native format, or None when there is no source."""
    if source is None or isinstance(source, Model):
        return None
    if pickle_source:
        import pickle

        return "source.pkl", pickle.dumps(source, protocol=4)
    module = type(source).__module__.split(".")[0]
    if module == "xgboost":
        booster = source.get_booster() if hasattr(source, "get_booster") else source
        return "source.xgb.json", bytes(booster.save_raw(raw_format="json"))
    if module == "lightgbm":
        booster = source.booster_ if hasattr(source, "booster_") else source
        return "source.lgb.txt", booster.model_to_string().encode()
    try:
        import skops.io as sio
    except ImportError:
        raise UnsupportedOperationError(
            "packaging a scikit-learn model needs skops (pip install 'fedge[skops]'), or "
            "pickle_source=True to store a pickle (loading it will then need trust)"
        ) from None
    try:
        return "source.skops", _deterministic_skops(sio.dumps(source))
    except Exception as exc:  # skops refuses some objects
        raise UnsupportedOperationError(
            f"skops cannot store this model ({exc}); pass pickle_source=True to store a "
            "pickle (loading it will then need trust=True)"
        ) from None


def _deterministic_skops(blob: bytes) -> bytes:
    """The same skops archive with reproducible bytes.

    skops names array files and tags objects with Python object ids and stamps the current
    time, so two dumps of one model differ; renumbering both in order of first mention in
    ``schema.json`` and writing every entry with a fixed timestamp gives one byte layout per
    model (deflated: the same bytes for the same zlib, which is what the package's own
    determinism promise covers; the package verifies by hashes, not by re-deflating).
    """
    import re
    import zipfile

    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        contents = {info.filename: archive.read(info) for info in archive.infolist()}
    for name, data in contents.items():
        if name.endswith(".npy"):
            contents[name] = _zero_padding(data)
    schema = contents.pop("schema.json").decode()
    renames: dict[str, str] = {}
    for name in re.findall(r'"([^"/]+\.npy)"', schema):
        if name in contents and name not in renames:
            renames[name] = f"{len(renames)}.npy"
    for name in sorted(contents):  # files the schema does not mention keep a stable order
        renames.setdefault(name, f"{len(renames)}{Path(name).suffix}")
    schema = re.sub(r'"([^"/]+\.npy)"', lambda m: f'"{renames.get(m.group(1), m.group(1))}"',
                    schema)
    # "__id__" values are object ids too (they tie shared references together): renumber
    # them in order of first appearance, which keeps equal ids equal.
    ids: dict[str, str] = {}
    schema = re.sub(
        r'"__id__": (\d+)', lambda m: f'"__id__": {ids.setdefault(m.group(1), str(len(ids)))}',
        schema,
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        arrays = sorted((renames[name], data) for name, data in contents.items())
        for name, data in [("schema.json", schema.encode()), *arrays]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
    return out.getvalue()


def _zero_padding(npy: bytes) -> bytes:
    """An ``.npy`` whose structured records have their padding bytes zeroed.

    scikit-learn's tree nodes are records with padding that holds whatever memory held
    before, so the same tree saves to different bytes; copying field by field into a zeroed
    array fixes that without touching a value.
    """
    try:
        arr = np.load(io.BytesIO(npy), allow_pickle=False)
    except ValueError:  # object arrays: leave them to skops
        return npy
    if arr.dtype.names is None:
        return npy
    clean = np.zeros(arr.shape, dtype=arr.dtype)
    for field_name in arr.dtype.names:
        clean[field_name] = arr[field_name]
    out = io.BytesIO()
    np.save(out, clean, allow_pickle=False)
    return out.getvalue()


def _schema(model: Model, X: np.ndarray | None) -> list[dict[str, Any]]:
    names = list(model.feature_names or [f"x{i}" for i in range(model.n_features)])
    schema = []
    for j, name in enumerate(names):
        entry: dict[str, Any] = {"name": name, "type": "float", "nan_allowed": True}
        if X is not None:
            column = X[:, j]
            finite = column[np.isfinite(column)]
            entry["nan_allowed"] = bool(np.isnan(column).any())
            if finite.size:
                entry["observed_min"] = float(finite.min())
                entry["observed_max"] = float(finite.max())
        schema.append(entry)
    return schema


def _fingerprint(X: np.ndarray | None, y: Any) -> str | None:
    if X is None:
        return None
    digest = hashlib.sha256()
    digest.update(repr(X.shape).encode())
    digest.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    if y is not None:
        labels = np.asarray(y)
        digest.update(repr((labels.shape, labels.dtype.str)).encode())
        digest.update(
            labels.astype(str).tobytes() if labels.dtype.kind in "OUS" else labels.tobytes()
        )
    return digest.hexdigest()


def _readme(name: str, version: str, model: Model, members: list[str]) -> bytes:
    lines = [
        f"# {name} {version}",
        "",
        f"A {model.task.value} model packaged by fedge {__version__}.",
        "",
        "## Use",
        "",
        "```python",
        "from fedge.deployment import load_package",
        f'pkg = load_package("{name}.zip")        # checks every byte before loading',
        "pkg.predict(X)                          # inputs checked against the schema",
        "```",
        "",
        "```sh",
        f"fedge verify {name}.zip                 # exit 0 only when every check passes",
        f"fedge inspect {name}.zip",
        "```",
        "",
        "## Members",
        "",
        *[f"- `{m}`" for m in members],
        "",
        "`manifest.json` lists the SHA-256 of every other member; the package's version id is",
        "the SHA-256 of `manifest.json`.",
    ]
    if any(m.startswith("c/") for m in members):
        lines += ["", "The C sources in `c/` are standalone C99: `cc -O2 -c c/*.c`."]
    return ("\n".join(lines) + "\n").encode()


class ModelPackager:
    """Builds packages (see the module docstring).

    Parameters
    ----------
    name : str
        Package name (letters, digits, ``-``, ``_``, ``.``).
    version : str
        The model's own version, recorded in the metadata.
    description : str, optional
    """

    def __init__(self, name: str, version: str = "1.0.0", *, description: str = "") -> None:
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise InvalidInputError(f"package name {name!r}: use letters, digits, '-', '_', '.'")
        self.name = name
        self.version = version
        self.description = description

    def build(
        self,
        model: Any,
        X: Any = None,
        y: Any = None,
        *,
        metrics: Mapping[str, float] | None = None,
        artifacts: Mapping[str, bytes] | None = None,
        formats: tuple[str, ...] = (),
        created: int | float | None = None,
        pickle_source: bool = False,
        signing_key: Any = None,
    ) -> tuple[bytes, str, tuple[str, ...]]:
        """The package's bytes, its version id and member names (see :meth:`package`)."""
        ir = lower(model)
        source = None if isinstance(model, Model) else model
        X_arr = None if X is None else np.asarray(X, dtype=np.float64)
        if X_arr is not None and (X_arr.ndim != 2 or X_arr.shape[1] != ir.n_features):
            raise InvalidInputError(
                f"X must be rows of {ir.n_features} features, got shape {X_arr.shape}"
            )
        members: dict[str, bytes] = {"model.json": to_json_bytes(ir)}
        source_member = _source_member(source, pickle_source)
        if source_member is not None:
            members[source_member[0]] = source_member[1]
        for fmt in formats:
            members.update(_export(ir, fmt))
        for member_name, data in sorted((artifacts or {}).items()):
            if member_name in members or member_name in (MANIFEST, SIGNATURE):
                raise InvalidInputError(f"artifact name {member_name!r} is taken")
            members[member_name] = bytes(data)
        meta = {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "task": ir.task.value,
            "classes": None if ir.classes is None else [
                c.item() if hasattr(c, "item") else c for c in ir.classes
            ],
            "n_features": ir.n_features,
            "input_schema": _schema(ir, X_arr),
            "metrics": {k: float(v) for k, v in sorted((metrics or {}).items())},
            "training_data_sha256": _fingerprint(X_arr, y),
            "training_rows": None if X_arr is None else int(X_arr.shape[0]),
            "source_format": None if source_member is None else source_member[0],
            "versions": _versions(source),
            "created": _creation_time(created),
        }
        if metrics is None and X_arr is not None and y is not None:
            meta["metrics"] = _training_metrics(ir, X_arr, y)
        members["metadata.json"] = _json(meta)
        requirements = "".join(f"{k}=={v}\n" for k, v in sorted(meta["versions"].items())
                               if k != "python")
        members["requirements.txt"] = requirements.encode()
        order = sorted(members)
        members["README.md"] = _readme(self.name, self.version, ir, [*order, MANIFEST])
        order = sorted(members)
        manifest = _json({
            "format": FORMAT,
            "files": {n: {"sha256": _sha256(members[n]), "bytes": len(members[n])} for n in order},
        })
        entries = [(n, members[n]) for n in order] + [(MANIFEST, manifest)]
        if signing_key is not None:
            entries.append((SIGNATURE, _sign(signing_key, manifest)))
        return write_canonical_zip(entries), _sha256(manifest), tuple(n for n, _ in entries)

    def package(self, model: Any, path: str | os.PathLike[str], X: Any = None, y: Any = None,
                **options: Any) -> PackageInfo:
        """Write a package to ``path``.

        Parameters
        ----------
        model : fitted estimator or Model
        path : path-like
        X, y : array-like, optional
            Training (or reference) data: the input schema's observed ranges and NaN
            permissions, the data fingerprint and, without ``metrics``, training metrics.
        metrics : mapping, optional
        artifacts : mapping of member name to bytes, optional
            Extra files (e.g. ``{"onnx/model.onnx": ...}``).
        formats : tuple of str
            Exports to add: ``"c"`` (and ``"onnx"``/``"tflite"`` when those exporters are
            installed).
        created : int, optional
            Creation time (Unix seconds); else ``SOURCE_DATE_EPOCH``, else now.
        pickle_source : bool
            Store the source model as a pickle instead of a safe format (only when asked:
            loading it then needs ``trust=True``).
        signing_key : Ed25519 private key (cryptography) or its 32 raw bytes, optional
        """
        data, version_id, names = self.build(model, X, y, **options)
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return PackageInfo(target, version_id, len(data), names, SIGNATURE in names)


def _training_metrics(model: Model, X: np.ndarray, y: Any) -> dict[str, float]:
    from fedge.ir.runtime import predict

    predicted = predict(model, X)
    if model.task is Task.CLASSIFICATION:
        return {"training_accuracy": float(np.mean(predicted == np.asarray(y)))}
    residual = np.asarray(y, dtype=np.float64) - predicted.reshape(np.shape(y))
    return {"training_mae": float(np.mean(np.abs(residual)))}


def _export(model: Model, fmt: str) -> dict[str, bytes]:
    if fmt == "c":
        from fedge.deployment.formats.c import emit_c

        code = emit_c(model, "model")
        return {"c/model.h": code.header.encode(), "c/model.c": code.source.encode()}
    if fmt == "onnx":
        from fedge.deployment.formats import onnx as onnx_format

        return {"onnx/model.onnx": onnx_format.to_onnx(model).SerializeToString()}
    if fmt == "tflite":
        from fedge.deployment.formats import tflite as tflite_format

        return {"tflite/model.tflite": tflite_format.to_tflite(model)}
    raise InvalidInputError(f"unknown export format {fmt!r}; use c, onnx or tflite")


def _private_key(key: Any) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, bytes | bytearray) and len(key) == 32:
        return Ed25519PrivateKey.from_private_bytes(bytes(key))
    raise InvalidInputError("signing_key must be an Ed25519 private key or its 32 raw bytes")


def _public_key(key: Any) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes | bytearray) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    raise InvalidInputError("public_key must be an Ed25519 public key or its 32 raw bytes")


def _sign(key: Any, manifest: bytes) -> bytes:
    return _private_key(key).sign(_SIGNED_BY + manifest)


def verify_package(
    data: bytes, *, public_key: Any = None
) -> tuple[dict[str, bytes], dict[str, Any], str, bool]:
    """Check every byte of a package: (members, manifest, version id, signature verified).

    Raises :class:`~fedge.errors.IntegrityError` on any difference: non-canonical bytes, a
    member missing from or added to the manifest, a hash mismatch, a bad signature, or a
    public key given for an unsigned package. Nothing is deserialised here.
    """
    entries = read_canonical_zip(data)
    names = [n for n, _ in entries]
    members = dict(entries)
    signed = SIGNATURE in members
    expected_tail = [MANIFEST, SIGNATURE] if signed else [MANIFEST]
    if names[-len(expected_tail):] != expected_tail or sorted(names[: -len(expected_tail)]) != (
        names[: -len(expected_tail)]
    ):
        raise IntegrityError("package members are not in the canonical order")
    manifest_bytes = members[MANIFEST]
    try:
        manifest = json.loads(manifest_bytes)
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("manifest.json is not a fedge manifest") from None
    if manifest.get("format") != FORMAT:
        raise IntegrityError(f"unknown package format {manifest.get('format')!r}")
    listed = set(files)
    present = set(members) - {MANIFEST, SIGNATURE}
    if listed != present:
        extra, missing = sorted(present - listed), sorted(listed - present)
        raise IntegrityError(
            f"package members differ from the manifest (unlisted: {extra}, missing: {missing})"
        )
    for name in sorted(present):
        if not isinstance(files[name], dict) or files[name].get("sha256") != _sha256(
            members[name]
        ):
            raise IntegrityError(f"member {name!r} does not match its SHA-256 in the manifest")
    if _json(manifest) != manifest_bytes:
        raise IntegrityError("manifest.json is not in canonical form")
    verified = False
    if public_key is not None:
        if not signed:
            raise IntegrityError("a public key was given but the package is not signed")
        from cryptography.exceptions import InvalidSignature

        try:
            _public_key(public_key).verify(members[SIGNATURE], _SIGNED_BY + manifest_bytes)
        except InvalidSignature:
            raise IntegrityError("the package's signature does not verify with this key") from None
        verified = True
    return members, manifest, _sha256(manifest_bytes), verified


def is_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a fedge package (a canonical ZIP ending in its manifest)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False
        names = [n for n, _ in read_canonical_zip(Path(path).read_bytes())]
    except (OSError, ModelFormatError):
        return False
    return MANIFEST in names


def load_package(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    public_key: Any = None,
    trust: bool = False,
) -> LoadedPackage:
    """Load a package after checking every byte (and the signature, with ``public_key``).

    The source model is loaded only from a safe format (skops with fedge's reviewed types,
    XGBoost JSON, LightGBM text) or, for a pickle, with ``trust=True``; otherwise ``source``
    is None and the IR model is still available. ``verify=False`` skips the hash and
    signature checks (the structural checks of the archive always run).
    """
    data = Path(path).read_bytes()
    if verify:
        members, manifest, version_id, verified = verify_package(data, public_key=public_key)
    else:
        members = dict(read_canonical_zip(data))
        manifest = json.loads(members.get(MANIFEST, b"{}"))
        version_id, verified = _sha256(members.get(MANIFEST, b"")), False
    try:
        model = from_json_bytes(members["model.json"])
        meta = json.loads(members["metadata.json"])
    except KeyError as exc:
        raise ModelFormatError(f"package has no {exc.args[0]}") from None
    source = _load_source(members, trust)
    return LoadedPackage(model, meta, manifest, version_id, verified, members, source)


def _load_source(members: Mapping[str, bytes], trust: bool) -> Any:
    if "source.skops" in members:
        try:
            import skops.io as sio
        except ImportError:
            return None
        from fedge.io import SKOPS_TRUSTED_TYPES

        blob = members["source.skops"]
        unknown = sorted(set(sio.get_untrusted_types(data=blob)) - set(SKOPS_TRUSTED_TYPES))
        if unknown and not trust:
            raise UntrustedFileError(
                f"source.skops needs types fedge has not reviewed: {unknown}; pass trust=True"
            )
        return sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    if "source.xgb.json" in members:
        try:
            import xgboost
        except ImportError:
            return None
        booster = xgboost.Booster()
        booster.load_model(bytearray(members["source.xgb.json"]))
        return booster
    if "source.lgb.txt" in members:
        try:
            import lightgbm
        except ImportError:
            return None
        return lightgbm.Booster(model_str=members["source.lgb.txt"].decode())
    if "source.pkl" in members:
        if not trust:
            raise UntrustedFileError(
                "the package's source model is a pickle, which runs code when loaded; pass "
                "trust=True only for packages you made or trust"
            )
        import pickle

        return pickle.loads(members["source.pkl"])  # trusted: the caller passed trust=True
    return None
