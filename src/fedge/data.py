"""Reading feature tables from CSV files for the CLI (verification, compression, federation)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedge.errors import InvalidInputError
from fedge.ir.nodes import Model

__all__ = ["documented_bounds", "read_bounds", "read_features", "read_labels", "read_table"]


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header (stripped) and the data rows of a CSV that has both."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    if len(rows) < 2:
        raise InvalidInputError(f"{path} needs a header row and at least one data row")
    return [h.strip() for h in rows[0]], rows[1:]


def read_features(path: Path, model: Model, *, label: str | None = None) -> np.ndarray:
    """Feature matrix from a CSV with a header row; empty cells and ``nan`` are NaN.

    ``label`` names the target column to drop. When the model knows its feature names
    and the header has them all, columns are taken in the model's order.
    """
    header, body = _rows(path)
    columns = list(range(len(header)))
    if label is not None:
        if label not in header:
            raise InvalidInputError(f"--label {label!r} is not a column of {path}: {header}")
        columns.remove(header.index(label))
    if model.feature_names is not None and set(model.feature_names) <= set(header):
        columns = [header.index(n) for n in model.feature_names]
    try:
        X = np.array(
            [[float(r[c]) if r[c].strip() else np.nan for c in columns] for r in body],
            dtype=np.float64,
        )
    except (ValueError, IndexError) as exc:
        raise InvalidInputError(f"{path} has a non-numeric or missing cell: {exc}") from None
    if X.shape[1] != model.n_features:
        raise InvalidInputError(
            f"{path} has {X.shape[1]} feature columns, but the model expects {model.n_features}"
            + ("" if label else "; name the target column with --label")
        )
    return X


def read_labels(path: Path, model: Model, label: str) -> np.ndarray:
    """The ``label`` column of a CSV, typed like the model's classes (or float for regression)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    header = [h.strip() for h in rows[0]] if rows else []
    if label not in header:
        raise InvalidInputError(f"--label {label!r} is not a column of {path}: {header}")
    column = header.index(label)
    try:
        cells = [r[column].strip() for r in rows[1:]]
    except IndexError:
        raise InvalidInputError(f"{path} has a row without the {label!r} column") from None
    classes = model.classes
    try:
        if classes is None:
            return np.array([float(c) for c in cells])
        if classes.dtype.kind in "iu":
            return np.array([int(float(c)) for c in cells], dtype=classes.dtype)
        if classes.dtype.kind == "f":
            return np.array([float(c) for c in cells], dtype=classes.dtype)
        if classes.dtype.kind == "b":
            return np.array([c.lower() in ("1", "true") for c in cells])
    except ValueError as exc:
        raise InvalidInputError(f"{path}: column {label!r} has a bad label: {exc}") from None
    return np.array(cells, dtype=str)


def read_table(path: Path, *, label: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, targets and feature names from a CSV with a header row.

    Targets stay numbers when every cell parses as one (integers when all are whole), and
    are strings otherwise. Empty feature cells and ``nan`` become NaN.
    """
    header, body = _rows(path)
    if label not in header:
        raise InvalidInputError(f"--label {label!r} is not a column of {path}: {header}")
    target = header.index(label)
    columns = [c for c in range(len(header)) if c != target]
    try:
        X = np.array(
            [[float(r[c]) if r[c].strip() else np.nan for c in columns] for r in body],
            dtype=np.float64,
        )
        cells = [r[target].strip() for r in body]
    except (ValueError, IndexError) as exc:
        raise InvalidInputError(f"{path} has a non-numeric or missing cell: {exc}") from None
    try:
        y = np.array([float(c) for c in cells])
        if np.all(y == np.round(y)):
            y = y.astype(np.int64)
    except ValueError:
        y = np.array(cells, dtype=str)
    return X, y, [header[c] for c in columns]


def documented_bounds(description: str, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (min, max) from the "Summary Statistics" table of a scikit-learn dataset's
    documentation (``load_breast_cancer().DESCR``, ``load_wine().DESCR``, ...).

    Published bounds are public knowledge, so a differentially private federation can scale
    features with them at no privacy cost.
    """
    import re

    rows = re.findall(r"^\s*[^\n:=]+:\s+(-?[\d.]+)\s+(-?[\d.]+)", description, flags=re.M)
    if len(rows) < n_features:
        raise InvalidInputError(
            f"the description lists {len(rows)} feature ranges, {n_features} are needed"
        )
    bounds = np.array(rows[:n_features], dtype=np.float64)
    return bounds[:, 0], bounds[:, 1]


def read_bounds(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Public per-feature bounds from a CSV with columns ``feature,min,max``, in ``names``'
    order (every feature must be listed)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    try:
        table = {r["feature"].strip(): (float(r["min"]), float(r["max"])) for r in rows}
    except (KeyError, ValueError, AttributeError) as exc:
        raise InvalidInputError(
            f"{path} must have columns feature,min,max with numbers: {exc}"
        ) from None
    missing = [n for n in names if n not in table]
    if missing:
        raise InvalidInputError(f"{path} has no bounds for {missing[:5]}")
    return np.array([table[n][0] for n in names]), np.array([table[n][1] for n in names])
