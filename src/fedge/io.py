"""Saving and loading models: the lite format, skops files, and pickles only when trusted.

``fedge.load`` always returns an IR :class:`~fedge.ir.Model`: files holding a
scikit-learn estimator are loaded with the safe loader that fits them and then
lowered. Nothing executes code from a file unless the caller passes ``trust=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedge.errors import ModelFormatError, UntrustedFileError
from fedge.ir.lite import is_lite, load_lite, save_lite
from fedge.ir.lower import lower
from fedge.ir.nodes import Model

__all__ = ["SKOPS_TRUSTED_TYPES", "load", "load_estimator", "save"]

# Types skops does not trust by default but that supported estimators need. Each
# was reviewed: rebuilt from plain arrays and numbers, no user code runs.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_ZIP_MAGIC = b"PK\x03\x04"
_LIGHTGBM_MAGIC = b"tree\nversion="
_PICKLE_PROTOCOL_MARK = 0x80


def save(model: Any, path: str | os.PathLike[str]) -> int:
    """Save a model in the lite format: ``.json`` (readable) or ``.fedge`` (compact binary).

    Parameters
    ----------
    model : Model or fitted estimator
        An estimator is lowered first (see :func:`fedge.lower`).
    path : path-like
        Destination; the suffix picks the encoding.

    Returns
    -------
    int
        Bytes written.
    """
    return save_lite(lower(model), path)


def load(path: str | os.PathLike[str], *, trust: bool = False) -> Model:
    """Load a model file as an IR model.

    Reads fedge lite files (``.json``/``.fedge``), skops files (``.skops``), XGBoost
    models (``.json``, ``.ubj``), LightGBM text models and, only with ``trust=True``,
    pickle/joblib files.

    Raises
    ------
    ModelFormatError, IntegrityError
        The file is not a model file, or was altered or truncated.
    UntrustedFileError
        Loading would run code from the file and ``trust`` is False.
    """
    p = Path(path)
    head = _head(p)
    if is_lite(head):
        return load_lite(p)
    if head.lstrip().startswith(b'{"learner"') or p.suffix == ".ubj":
        return _load_xgboost(p)
    if head.startswith(_LIGHTGBM_MAGIC):
        return _load_lightgbm(p)
    return lower(load_estimator(p, trust=trust))


def load_estimator(path: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """Load the estimator inside a skops or (trusted) pickle file, without lowering it."""
    p = Path(path)
    head = _head(p)
    if head.startswith(_ZIP_MAGIC) or p.suffix == ".skops":
        return _load_skops(p, trust)
    if p.suffix in _PICKLE_SUFFIXES or head[:1] == bytes([_PICKLE_PROTOCOL_MARK]):
        return _load_pickle(p, trust)
    raise ModelFormatError(
        f"{p} is not a model file fedge can read; expected a fedge lite file (.json, .fedge), "
        "a skops file (.skops) or, with trust, a pickle (.pkl, .joblib)"
    )


def _load_xgboost(p: Path) -> Model:
    """XGBoost's own formats: JSON is read directly; UBJ through xgboost's loader."""
    from fedge.ir.lower.xgboost import lower_model_json

    if p.suffix != ".ubj":
        try:
            return lower_model_json(p.read_bytes())
        except (UnicodeDecodeError, ValueError) as exc:
            raise ModelFormatError(f"{p} is not a valid XGBoost JSON model: {exc}") from None
    try:
        import xgboost
    except ImportError:
        raise ModelFormatError(
            f"{p} is an XGBoost UBJ model; to read it: pip install 'fedge[xgboost]'"
        ) from None
    try:
        booster = xgboost.Booster(model_file=str(p))
    except xgboost.core.XGBoostError as exc:
        raise ModelFormatError(f"{p} is not a valid XGBoost model: {exc}") from None
    return lower(booster)


def _load_lightgbm(p: Path) -> Model:
    """LightGBM's text model, read directly (no lightgbm import needed)."""
    from fedge.ir.lower.lightgbm import lower_model_text

    try:
        return lower_model_text(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{p} is not a LightGBM text model: {exc}") from None


def _head(p: Path) -> bytes:
    try:
        with p.open("rb") as f:
            return f.read(64)
    except FileNotFoundError:
        raise ModelFormatError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise ModelFormatError(f"{p} is a directory, not a model file") from None


def _load_skops(p: Path, trust: bool) -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise ModelFormatError(
            f"{p} is a skops file; install the extra to read it: pip install 'fedge[skops]'"
        ) from None
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as exc:  # skops raises many types on a damaged archive
        raise ModelFormatError(f"{p} is not a readable skops file: {exc}") from None
    unknown = sorted(set(untrusted) - set(SKOPS_TRUSTED_TYPES))
    if unknown and not trust:
        raise UntrustedFileError(
            f"{p} contains types fedge has not reviewed: {', '.join(unknown)}. "
            "Load it with trust=True (CLI: --trust) only if you trust its source"
        )
    try:
        return sio.load(p, trusted=list(untrusted))
    except Exception as exc:
        raise ModelFormatError(f"{p} could not be loaded by skops: {exc}") from None


def _load_pickle(p: Path, trust: bool) -> Any:
    if not trust:
        raise UntrustedFileError(
            f"{p} is a pickle: loading it runs code stored in the file. Pass trust=True "
            "(CLI: --trust) only if you trust its source, or save the model with skops "
            "or fedge.save instead"
        )
    import joblib  # a scikit-learn dependency; reads plain pickles too

    try:
        return joblib.load(p)  # trusted: the caller passed trust=True
    except Exception as exc:
        raise ModelFormatError(f"{p} could not be unpickled: {exc}") from None
