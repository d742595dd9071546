"""What every figure module shares: the optional imports, input checks and the palette.

Figure functions take plain data (mappings, sequences, fedge records), check it here and
raise :class:`fedge.errors.InvalidInputError` saying what was wrong, so a user never sees a
traceback from deep inside Plotly or numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError

__all__ = [
    "PALETTE",
    "check_finite",
    "check_same_length",
    "colour",
    "finite_or_none",
    "non_empty",
    "require_matplotlib",
    "require_plotly",
]

Sized = Sequence[Any] | Mapping[Any, Any] | np.ndarray

#: Colour-blind safe (Okabe-Ito), in the order series are drawn; used by Plotly and matplotlib
#: figures alike so a model keeps its colour from the dashboard to the paper.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def colour(i: int) -> str:
    """The ``i``-th series colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def require_plotly() -> Any:
    """``plotly.graph_objects``, or a clear error naming the extra to install."""
    try:
        import plotly.graph_objects as go_module
    except ImportError as exc:  # pragma: no cover - the viz extra is part of `all`
        raise InvalidInputError(
            "interactive figures need Plotly: pip install 'fedge[viz]'"
        ) from exc
    return go_module


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a clear error."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - the viz extra is part of `all`
        raise InvalidInputError(
            "static figures need matplotlib: pip install 'fedge[viz]'"
        ) from exc
    return plt


def non_empty(what: str, values: Sized) -> None:
    """Raise unless ``values`` has at least one element."""
    if len(values) == 0:
        raise InvalidInputError(f"{what} is empty: nothing to plot")


def table_keys(what: str, table: Any, row: str, column: str) -> tuple[list[str], list[str]]:
    """Row names and column names (first-seen order, as text) of ``table[row][column]``, a
    mapping of mappings; raise unless it is one with at least one row and one column."""
    if not isinstance(table, Mapping):
        raise InvalidInputError(f"{what} must be a mapping {{{row}: {{{column}: value}}}}")
    non_empty(what, table)
    columns: list[str] = []
    for name, cells in table.items():
        if not isinstance(cells, Mapping):
            raise InvalidInputError(
                f"{what}[{name!r}] must map {column} names to values, got {type(cells).__name__}"
            )
        columns += [str(c) for c in cells if str(c) not in columns]
    if not columns:
        raise InvalidInputError(f"{what} names no {column}: nothing to plot")
    return [str(n) for n in table], columns


def check_same_length(what: str, **series: Sequence[Any]) -> int:
    """Raise unless every named series has the same, non-zero length; return it."""
    lengths = {name: len(values) for name, values in series.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise InvalidInputError(f"{what}: series of different lengths ({detail})")
    n = next(iter(lengths.values()), 0)
    if n == 0:
        raise InvalidInputError(f"{what} is empty: nothing to plot")
    return n


def check_finite(what: str, values: Any, *, allow_nan: bool = False) -> np.ndarray:
    """``values`` as a float array; raise on Inf (and on NaN unless ``allow_nan``)."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be numbers: {exc}") from exc
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        raise InvalidInputError(
            f"{what} holds {int(bad.sum())} non-finite value(s) (NaN or Inf): "
            "plot only measured values"
        )
    return arr


def finite_or_none(value: Any) -> float | None:
    """A float, or None for missing/NaN (how optional measurements arrive from JSON)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
