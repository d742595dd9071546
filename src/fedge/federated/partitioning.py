"""Split one dataset's rows among simulated clients, the way real federations are skewed.

Every partitioner returns a list with one array of row indices per client; the arrays are
disjoint, sorted and together cover every row. Schemes:

- ``iid``: a seeded shuffle cut into near-equal parts;
- ``dirichlet:ALPHA``: label skew (Hsu et al. 2019): for each class, the share each client
  gets is drawn from Dirichlet(ALPHA); small ALPHA gives clients that hold one or two labels;
- ``quantity:ALPHA``: quantity skew: client sizes drawn from Dirichlet(ALPHA), labels IID;
- ``group``: one client per distinct value of a group column (hospital, region, device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedge.errors import InvalidInputError

__all__ = [
    "PartitionScheme",
    "dirichlet_partition",
    "group_partition",
    "iid_partition",
    "parse_partition",
    "partition",
    "quantity_partition",
]

# A client with fewer rows than this cannot fill one mini-batch of a useful size; the
# Dirichlet partitioners redraw until every client has at least this many.
DEFAULT_MIN_ROWS = 2
_MAX_DRAWS = 100


@dataclass(frozen=True)
class PartitionScheme:
    """A parsed partition specification (``kind`` and its parameter)."""

    kind: str  # "iid" | "dirichlet" | "quantity" | "group"
    alpha: float | None = None

    def __str__(self) -> str:
        return self.kind if self.alpha is None else f"{self.kind}:{self.alpha:g}"


def parse_partition(spec: str | PartitionScheme) -> PartitionScheme:
    """Parse ``"iid"``, ``"dirichlet:0.5"``, ``"quantity:1"`` or ``"group"``."""
    if isinstance(spec, PartitionScheme):
        return spec
    kind, _, arg = str(spec).strip().lower().partition(":")
    if kind in ("iid", "group"):
        if arg:
            raise InvalidInputError(f"partition {spec!r}: {kind!r} takes no parameter")
        return PartitionScheme(kind)
    if kind in ("dirichlet", "quantity"):
        try:
            alpha = float(arg)
        except ValueError:
            raise InvalidInputError(
                f"partition {spec!r}: expected {kind}:ALPHA with a number ALPHA > 0, "
                f"e.g. {kind}:0.5"
            ) from None
        if not np.isfinite(alpha) or alpha <= 0:
            raise InvalidInputError(f"partition {spec!r}: ALPHA must be a finite number > 0")
        return PartitionScheme(kind, alpha)
    raise InvalidInputError(
        f"unknown partition {spec!r}; use iid, dirichlet:ALPHA, quantity:ALPHA or group"
    )


def _check_counts(n_rows: int, n_clients: int, min_rows: int) -> None:
    if n_clients < 1:
        raise InvalidInputError(f"n_clients must be at least 1, got {n_clients}")
    if n_rows < n_clients * min_rows:
        raise InvalidInputError(
            f"{n_rows} rows cannot give {n_clients} clients at least {min_rows} rows each; "
            "use fewer clients or more data"
        )


def iid_partition(n_rows: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded shuffle of ``range(n_rows)`` cut into ``n_clients`` near-equal parts."""
    _check_counts(n_rows, n_clients, 1)
    order = rng.permutation(n_rows)
    return [np.sort(part) for part in np.array_split(order, n_clients)]


def _cut_by_shares(
    rows: np.ndarray, shares: np.ndarray, n_clients: int
) -> list[np.ndarray]:
    """Cut ``rows`` into ``n_clients`` consecutive pieces proportional to ``shares``."""
    cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
    return np.split(rows, cuts) if n_clients > 1 else [rows]


def dirichlet_partition(
    y: Sequence | np.ndarray,
    n_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> list[np.ndarray]:
    """Label skew: each class's rows shared among clients in Dirichlet(``alpha``) proportions.

    Draws are repeated (up to 100 times) until every client holds at least ``min_rows``
    rows, as in Hsu et al. (2019); if that never happens the error says to raise alpha or
    lower the number of clients.
    """
    y = np.asarray(y)
    _check_counts(len(y), n_clients, min_rows)
    _, labels = np.unique(y, return_inverse=True)
    by_class = [rng.permutation(np.flatnonzero(labels == k)) for k in range(labels.max() + 1)]
    for _ in range(_MAX_DRAWS):
        pieces: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for rows in by_class:
            shares = rng.dirichlet(np.full(n_clients, alpha))
            for client, part in enumerate(_cut_by_shares(rows, shares, n_clients)):
                pieces[client].append(part)
        parts = [np.sort(np.concatenate(p)) for p in pieces]
        if min(len(p) for p in parts) >= min_rows:
            return parts
    raise InvalidInputError(
        f"dirichlet:{alpha:g} left some of {n_clients} clients with fewer than {min_rows} "
        f"rows in {_MAX_DRAWS} draws over {len(y)} rows; raise alpha or use fewer clients"
    )


def quantity_partition(
    n_rows: int,
    n_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> list[np.ndarray]:
    """Quantity skew: client sizes in Dirichlet(``alpha``) proportions, rows IID.

    Every client first gets ``min_rows`` rows; the rest are shared by the Dirichlet draw.
    """
    _check_counts(n_rows, n_clients, min_rows)
    order = rng.permutation(n_rows)
    spare = n_rows - n_clients * min_rows
    extra = np.floor(rng.dirichlet(np.full(n_clients, alpha)) * spare).astype(np.int64)
    extra[: spare - int(extra.sum())] += 1  # hand out the rounding remainder
    sizes = extra + min_rows
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def group_partition(groups: Sequence | np.ndarray) -> list[np.ndarray]:
    """One client per distinct value of ``groups``, in sorted order of the values."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) == 0:
        raise InvalidInputError("group partition needs a non-empty 1-D group column")
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    return [np.sort(part) for part in np.split(order, np.cumsum(counts)[:-1])]


def partition(
    y: Sequence | np.ndarray,
    n_clients: int,
    scheme: str | PartitionScheme,
    rng: np.random.Generator,
    *,
    groups: Sequence | np.ndarray | None = None,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> list[np.ndarray]:
    """Row indices per client for labels ``y`` under ``scheme`` (see the module docstring).

    Parameters
    ----------
    y : array of shape (n_rows,)
        Labels (or regression targets: only ``dirichlet`` looks at their values).
    n_clients : int
        Number of clients (ignored by ``group``, which makes one per group).
    scheme : str or PartitionScheme
        ``"iid"``, ``"dirichlet:ALPHA"``, ``"quantity:ALPHA"`` or ``"group"``.
    rng : numpy.random.Generator
        The only source of randomness.
    groups : array of shape (n_rows,), optional
        The group column, required by ``group``.
    min_rows : int
        Smallest client the skewed partitioners may produce.
    """
    scheme = parse_partition(scheme)
    n_rows = len(y)
    if scheme.kind == "iid":
        return iid_partition(n_rows, n_clients, rng)
    if scheme.kind == "dirichlet":
        return dirichlet_partition(y, n_clients, scheme.alpha, rng, min_rows=min_rows)
    if scheme.kind == "quantity":
        return quantity_partition(n_rows, n_clients, scheme.alpha, rng, min_rows=min_rows)
    if groups is None:
        raise InvalidInputError("partition 'group' needs the group column (groups=...)")
    if len(groups) != n_rows:
        raise InvalidInputError(f"groups has {len(groups)} values for {n_rows} rows")
    return group_partition(groups)
