"""Federated histogram gradient boosting: lossless with respect to the centralized algorithm.

Every data holder keeps its rows. The server grows the trees from sums only, level by level,
exactly as the centralized histogram algorithm (XGBoost ``hist``, LightGBM, scikit-learn's
HistGradientBoosting) would on the pooled rows, given the same bin edges.

What travels, and when
----------------------
1. **Set-up.** Each client states its number of features (checked: one value for all).
   Bin edges are agreed once (``binning=``):

   * ``BinEdges`` / a list of arrays: edges fixed in advance (nothing about the data is shared);
   * ``"grid"``: with public per-feature bounds (``feature_range=``), each client sends its
     counts over a fine grid of ``grid_size`` equal cells per feature; the server sums them (through
     secure aggregation when enabled, so it sees only the pooled counts) and puts the edges at
     the pooled quantiles. The edges are then the same as the centralized run's, by construction;
   * ``"sketch"``: each client sends per feature ``sketch_size`` of its own order statistics
     (actual data values) and its count of non-missing values; the server merges them into
     weighted quantiles. This reveals each client's marginal distributions at that resolution,
     so it is refused under secure aggregation.

   Then each client sends its row count and per-class counts (classification) or, for
   regression, the binary exponent of its largest ``|y|`` (one integer, in the clear, unless
   ``target_bound=`` is public) and then the fixed-point sum of its targets. The server derives
   the base score (log-odds / log-priors / mean) from the sums.
2. **Each boosting round** (one tree per output: one for binary log-loss and squared error, one
   per class for softmax). Clients compute each row's gradient and hessian from their local
   predictions and quantize them to fixed point with a scale the server announces (fixed for
   the log-losses, where ``|g| <= 1``; for squared error derived from public quantities: the
   target exponent, the base score and the leaf values so far). At every depth the clients send,
   for every node being split, a histogram of integer sums ``(sum g, sum h, count)`` per feature
   bin plus one missing-value bin. Only left children are requested below the root: the server
   gets each right child as ``parent - left``, exactly, because the sums are integers. The
   server sums the clients' histograms (plainly, or through SecAgg / SecAgg+ so that it sees
   only the sums), chooses each node's split (XGBoost's gain with L2 ``reg_lambda``,
   ``min_child_weight``, ``min_samples_leaf``, ``gamma``, ``max_depth``, and a learned default
   direction for missing values: NaN-left and NaN-right are both tried with the missing bin's
   sums; a node without missing values sends them to its larger child, as scikit-learn does)
   and broadcasts the splits; clients move their rows down. At the end the server broadcasts the
   leaf values ``-learning_rate * G / (H + reg_lambda)`` and clients update their predictions.

Why it is lossless
------------------
Gradients are summed as integers (fixed point, like XGBoost's deterministic GPU histograms),
so a sum does not depend on how the rows are split among clients or in which order they are
added, and the secure-aggregation ring ``Z_{2**64}`` reproduces it exactly (the fixed-point scale
is chosen so that no sum can exceed ``2**62``). Splits, gains and leaf values are computed
from these integers by the same code, so the federated run and the centralized run (the same
code with one client holding every row) give bit-identical trees. The quantization itself
rounds each gradient to ``2**-f`` with ``f`` about ``60 - log2(n_rows)``: far below anything
that changes accuracy.

Dropouts and malformed histograms
---------------------------------
A client that does not answer a request (or drops out of a secure-aggregation round before
sending its masked input) is simply absent from that sum. Its partial contribution would make
the tree a mixture of two populations, so the server restarts the current round from the root
with the clients that remain; the tree is then exactly the centralized tree over those clients'
rows (the dropped client still receives the finished tree and keeps its predictions in step,
and takes part again from the next round). A client that drops out only during unmasking has
its vector in the sum, and nothing changes. Without secure aggregation every histogram is
checked (integer dtype and shape, non-negative counts and hessians, the same totals in every
feature, gradient sums within ``count * bound``); a client that fails is rejected for the rest
of the run and the round restarts without it. Under secure aggregation the server can only check
the sums (the same invariants, plus non-negative derived right children); a failing sum aborts
the run with :class:`~fedge.errors.SecureAggregationError`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge._version import __version__
from fedge.errors import InvalidInputError, NotFittedError, SecureAggregationError
from fedge.ir import runtime
from fedge.ir.lower._trees import assemble, booster_model, from_node_table
from fedge.ir.nodes import Aggregation, Comparison, Link, Model, Precision, Task

__all__ = [
    "BinEdges",
    "BoostingHistory",
    "Dropout",
    "FederatedHistGradientBoosting",
    "HistogramClient",
    "RoundLog",
    "federated_histogram_boosting",
    "grid_bin_edges",
    "quantile_bin_edges",
]

_SUM_BITS = 62  # no histogram sum (of any sign) may exceed 2**62 in magnitude
_SPLIT = 26  # exact int64 bincount: values are split into (value >> 26, value & (2**26 - 1))
_LOSSES = ("auto", "log_loss", "squared_error")
_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# bin edges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BinEdges:
    """Per-feature split candidates (float32, strictly increasing; possibly empty).

    A value ``x`` (rounded to float32) of feature ``f`` falls in bin ``#{edges < x}``; the
    split at edge ``j`` sends the row left when ``x <= edges[f][j]`` (bins ``0..j``). NaN has
    its own bin. The histogram of feature ``f`` has ``len(edges[f]) + 2`` slots: the value
    bins, then the missing bin.
    """

    edges: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        items = list(self.edges)
        if not items:
            raise InvalidInputError("bin edges need at least one feature")
        checked = []
        for f, e in enumerate(items):
            arr = np.asarray(e, dtype=np.float64)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise InvalidInputError(f"bin edges of feature {f} must be 1-D and finite")
            e32 = arr.astype(np.float32)
            if np.any(np.diff(e32) <= 0):
                raise InvalidInputError(
                    f"bin edges of feature {f} must strictly increase (as float32)"
                )
            e32.flags.writeable = False
            checked.append(e32)
        object.__setattr__(self, "edges", tuple(checked))
        sizes = np.array([e.shape[0] + 2 for e in checked], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        offsets.flags.writeable = False
        object.__setattr__(self, "_offsets", offsets)

    @property
    def n_features(self) -> int:
        return len(self.edges)

    @property
    def offsets(self) -> np.ndarray:
        """Start of each feature's slots in a histogram (``n_features + 1`` entries)."""
        return self._offsets  # type: ignore[attr-defined, no-any-return]

    @property
    def n_slots(self) -> int:
        return int(self.offsets[-1])

    def slots(self, X: np.ndarray) -> np.ndarray:
        """The histogram slot of every value: ``(n_rows, n_features)`` int64."""
        X32 = np.asarray(X).astype(np.float32)
        out = np.empty(X32.shape, dtype=np.int64)
        for f, e in enumerate(self.edges):
            col = X32[:, f]
            b = np.searchsorted(e, col, side="left").astype(np.int64)
            b[np.isnan(col)] = e.shape[0] + 1
            out[:, f] = b + self.offsets[f]
        return out

    def equals(self, other: BinEdges) -> bool:
        return len(self.edges) == len(other.edges) and all(
            a.shape == b.shape and a.tobytes() == b.tobytes()
            for a, b in zip(self.edges, other.edges, strict=True)
        )


def _as_bin_edges(value: Any) -> BinEdges:
    return value if isinstance(value, BinEdges) else BinEdges(tuple(value))


def _grid(feature_range: Any, n_features: int, grid_size: int) -> list[np.ndarray]:
    """Interior boundaries of ``grid_size`` equal cells per feature (float32, increasing)."""
    try:
        lo, hi = (np.asarray(v, dtype=np.float64) for v in feature_range)
    except (TypeError, ValueError):
        raise InvalidInputError(
            "feature_range must be (lower, upper): two arrays with one bound per feature"
        ) from None
    lo, hi = np.broadcast_to(lo, (n_features,)), np.broadcast_to(hi, (n_features,))
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise InvalidInputError("feature_range needs finite bounds with upper > lower")
    steps = np.arange(1, grid_size, dtype=np.float64) / grid_size
    return [
        np.unique((lo[f] + (hi[f] - lo[f]) * steps).astype(np.float32)) for f in range(n_features)
    ]


def _edges_from_counts(bounds: np.ndarray, counts: np.ndarray, max_bins: int) -> np.ndarray:
    """Edges at the pooled quantiles of grid cell counts (integer arithmetic: exact)."""
    cum = np.cumsum(counts)
    total = int(cum[-1]) if cum.size else 0
    if total == 0:
        return np.zeros(0, dtype=np.float32)
    levels = np.arange(1, max_bins, dtype=np.int64) * total
    # first cell j with cum[j] * max_bins >= level (cum * max_bins < 2**63 for any real data)
    cells = np.unique(np.searchsorted(cum * max_bins, levels, side="left"))
    cells = cells[(cells < bounds.shape[0]) & (cum[np.minimum(cells, cum.size - 1)] < total)]
    return bounds[cells].astype(np.float32)


def _merge_sketches(
    points: list[np.ndarray], weights: list[np.ndarray], max_bins: int
) -> np.ndarray:
    values = np.concatenate(points) if points else np.zeros(0)
    if values.size == 0:
        return np.zeros(0, dtype=np.float32)
    w = np.concatenate(weights)
    order = np.argsort(values, kind="stable")
    values, w = values[order], w[order]
    distinct = np.unique(values)
    if distinct.size <= max_bins:
        return distinct[:-1].astype(np.float32)
    cum = np.cumsum(w)
    levels = np.arange(1, max_bins) / max_bins * cum[-1]
    picked = np.unique(values[np.minimum(np.searchsorted(cum, levels), values.size - 1)])
    return picked[picked < distinct[-1]].astype(np.float32)


def quantile_bin_edges(X: Any, *, max_bins: int = 255, sketch_size: int = 1024) -> BinEdges:
    """The ``"sketch"`` edges of one data holder with all the rows (the centralized reference)."""
    client = HistogramClient(X, np.zeros(np.asarray(X).shape[0]), client_id="pooled")
    pts, counts = client.sketch(sketch_size)
    return BinEdges(
        tuple(
            _merge_sketches([p], [np.full(p.shape[0], c / max(p.shape[0], 1))], max_bins)
            for p, c in zip(pts, counts, strict=True)
        )
    )


def grid_bin_edges(
    X: Any, feature_range: Any, *, max_bins: int = 255, grid_size: int = 1024
) -> BinEdges:
    """The ``"grid"`` edges of one data holder with all the rows (equal to the federated ones)."""
    client = HistogramClient(X, np.zeros(np.asarray(X).shape[0]), client_id="pooled")
    grid = _grid(feature_range, client.n_features, grid_size)
    counts = client.grid_counts(grid)
    return _grid_edges(grid, counts, max_bins)


def _grid_edges(grid: list[np.ndarray], counts: np.ndarray, max_bins: int) -> BinEdges:
    out, start = [], 0
    for bounds in grid:
        n = bounds.shape[0] + 1
        out.append(_edges_from_counts(bounds, counts[start : start + n], max_bins))
        start += n
    return BinEdges(tuple(out))


# --------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------


def _exact_bincount(keys: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """``bincount`` of int64 values, exact (numpy's weighted bincount sums in float64)."""
    lo = (values & ((1 << _SPLIT) - 1)).astype(np.float64)
    hi = (values >> _SPLIT).astype(np.float64)
    s_lo = np.rint(np.bincount(keys, weights=lo, minlength=size)).astype(np.int64)
    s_hi = np.rint(np.bincount(keys, weights=hi, minlength=size)).astype(np.int64)
    return (s_hi << _SPLIT) + s_lo


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class HistogramClient:
    """One data holder in federated histogram boosting: its rows never leave it.

    It answers the server's requests with integer sums (numpy arrays), keeps its rows'
    positions in the trees being grown and its own predictions. Subclass it to simulate a
    misbehaving client (override :meth:`histograms`).

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
        Numeric features; NaN marks a missing value (infinities are refused).
    y : array-like of shape (n_rows,)
        Labels (classification, each one of the declared classes) or float targets.
    client_id : str
    """

    def __init__(self, X: Any, y: Any, *, client_id: str) -> None:
        self.client_id = str(client_id)
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"client {self.client_id!r}: X must be numeric") from None
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InvalidInputError(
                f"client {self.client_id!r}: X must be a non-empty 2-D array, got shape {X.shape}"
            )
        if np.any(np.isinf(X)):
            raise InvalidInputError(
                f"client {self.client_id!r}: X has infinite values; use NaN for missing values"
            )
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise InvalidInputError(
                f"client {self.client_id!r}: y has shape {y.shape} for {X.shape[0]} rows"
            )
        self.X = X
        self.y = y
        self._target: np.ndarray | None = None
        self._slots: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    # -- set-up ---------------------------------------------------------------------------
    def sketch(self, size: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Per feature: up to ``size + 1`` order statistics of the non-missing values, and
        the number of non-missing values (this reveals the client's marginals at that
        resolution)."""
        pts, counts = [], []
        for col in self.X.astype(np.float32).T:
            v = np.sort(col[~np.isnan(col)])
            counts.append(v.shape[0])
            if v.shape[0] > size + 1:
                v = v[np.rint(np.linspace(0, v.shape[0] - 1, size + 1)).astype(np.int64)]
            pts.append(v.astype(np.float64))
        return pts, np.asarray(counts, dtype=np.int64)

    def grid_counts(self, grid: Sequence[np.ndarray]) -> np.ndarray:
        """Counts of the non-missing values in each cell of a public grid, all features
        concatenated (``len(grid[f]) + 1`` cells per feature): int64."""
        parts = []
        for col, bounds in zip(self.X.astype(np.float32).T, grid, strict=True):
            col = col[~np.isnan(col)]
            cells = np.searchsorted(bounds, col, side="left")
            parts.append(np.bincount(cells, minlength=bounds.shape[0] + 1).astype(np.int64))
        return np.concatenate(parts)

    def label_counts(self, classes: np.ndarray | None) -> np.ndarray:
        """``[n_rows]`` (regression) or ``[n_rows, count of each class]`` (int64); encodes y."""
        if classes is None:
            try:
                target = self.y.astype(np.float64)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"client {self.client_id!r}: regression targets must be numeric"
                ) from None
            if not np.all(np.isfinite(target)):
                raise InvalidInputError(f"client {self.client_id!r}: y has NaN or inf")
            self._target = target
            return np.array([self.n_rows], dtype=np.int64)
        index = {c: i for i, c in enumerate(classes.tolist())}
        try:
            codes = np.array([index[v] for v in self.y.tolist()], dtype=np.int64)
        except KeyError:
            unknown = sorted({v for v in self.y.tolist() if v not in index}, key=repr)[:5]
            raise InvalidInputError(
                f"client {self.client_id!r} holds labels {unknown} outside the declared "
                f"classes {classes.tolist()}"
            ) from None
        self._target = codes
        counts = np.bincount(codes, minlength=classes.shape[0]).astype(np.int64)
        return np.concatenate([[self.n_rows], counts])

    def target_exponent(self) -> int:
        """The binary exponent ``e`` with ``max |y| < 2**e`` (regression; sent in the clear)."""
        assert self._target is not None
        return int(math.frexp(float(np.max(np.abs(self._target))))[1])

    def target_sum(self, scale_bits: int) -> np.ndarray:
        """Fixed-point sum of the targets: ``[sum rint(y * 2**scale_bits)]`` (int64)."""
        assert self._target is not None
        q = np.rint(np.ldexp(self._target, scale_bits)).astype(np.int64)
        return np.array([int(q.sum())], dtype=np.int64)

    def start(self, edges: BinEdges, base_score: np.ndarray) -> None:
        """Bin the rows once, and start the predictions at the base score."""
        if self._target is None:
            raise NotFittedError("label_counts must run before start")
        self._slots = edges.slots(self.X)
        self._offsets = edges.offsets
        self._n_slots = edges.n_slots
        self._edges = edges
        self.raw = np.tile(np.asarray(base_score, dtype=np.float64), (self.n_rows, 1))

    # -- each round -----------------------------------------------------------------------
    def gradients(self, loss: str, scale_bits: int, bound_bits: int) -> None:
        """Compute and quantize this round's gradients and hessians (kept locally):
        ``rint(g * 2**scale_bits)`` within ``2**bound_bits``, ``rint(h * 2**scale_bits)``
        (``0 <= h <= 1``)."""
        assert self._target is not None
        raw = self.raw
        if loss == "squared_error":
            g = raw - self._target[:, None]
            h = np.ones_like(g)
        elif raw.shape[1] == 1:
            p = _sigmoid(raw)
            g = p - self._target[:, None]
            h = p * (1.0 - p)
        else:
            p = _softmax(raw)
            onehot = np.zeros_like(p)
            onehot[np.arange(p.shape[0]), self._target] = 1.0
            g = p - onehot
            h = p * (1.0 - p)
        limit = float(2**bound_bits)
        self._g = np.clip(np.rint(np.ldexp(g, scale_bits)), -limit, limit).astype(np.int64)
        self._h = np.clip(np.rint(np.ldexp(h, scale_bits)), 0, 2.0**scale_bits).astype(np.int64)
        self.reset_positions()

    def reset_positions(self) -> None:
        """Every row back at the roots (tree ``k``'s root is node ``k``)."""
        self._pos = np.zeros(self.raw.shape, dtype=np.int64)
        self._pos[:] = np.arange(self.raw.shape[1])

    def histograms(
        self, nodes: np.ndarray, node_output: np.ndarray, *, totals_only: bool = False
    ) -> np.ndarray:
        """Integer histograms ``(len(nodes), n_slots, 3)`` of ``(sum g, sum h, count)`` over
        the rows in each requested node (``node_output[n]``: the output tree ``n`` grows).
        ``totals_only``: one slot per node, ``(len(nodes), 1, 3)`` (for leaves)."""
        assert self._slots is not None
        slots = np.zeros((self.n_rows, 1), dtype=np.int64) if totals_only else self._slots
        S = 1 if totals_only else self._n_slots
        R = nodes.shape[0]
        where = np.full(node_output.shape[0], -1, dtype=np.int64)
        where[nodes] = np.arange(R)
        out = np.zeros((R, S, 3), dtype=np.int64)
        flat = out.reshape(R * S, 3)
        F = slots.shape[1]
        for k in np.unique(node_output[nodes]):
            r = where[self._pos[:, k]]
            sel = r >= 0
            if not np.any(sel):
                continue
            keys = (r[sel, None] * S + slots[sel]).ravel()
            g = np.repeat(self._g[sel, k], F)
            h = np.repeat(self._h[sel, k], F)
            flat[:, 0] += _exact_bincount(keys, g, R * S)
            flat[:, 1] += _exact_bincount(keys, h, R * S)
            flat[:, 2] += np.bincount(keys, minlength=R * S)
        return out

    def apply_splits(self, splits: Mapping[str, np.ndarray]) -> None:
        """Move the rows of split nodes to their children (arrays indexed by node id)."""
        is_split, feature, edge = splits["is_split"], splits["feature"], splits["edge"]
        miss_left, left, right = splits["missing_left"], splits["left"], splits["right"]
        for k in range(self._pos.shape[1]):
            pos = self._pos[:, k]
            rows = np.flatnonzero(is_split[pos])
            if rows.size == 0:
                continue
            n = pos[rows]
            f = feature[n]
            b = self._slots[rows, f] - self._offsets[f]
            n_edges = np.diff(self._offsets)[f] - 2
            missing = b == n_edges + 1
            go_left = np.where(missing, miss_left[n], b <= edge[n])
            self._pos[rows, k] = np.where(go_left, left[n], right[n])

    def apply_leaves(self, leaf_value: np.ndarray) -> None:
        """Add the finished trees' leaf values to the local predictions."""
        for k in range(self.raw.shape[1]):
            self.raw[:, k] += leaf_value[self._pos[:, k]]


# --------------------------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dropout:
    """A simulated dropout: ``client`` vanishes in boosting ``round`` at tree depth ``level``
    (0: the root's histograms), at secure-aggregation ``stage`` (0-3; ignored without secure
    aggregation, where the client simply does not answer). It happens once."""

    client: str
    round: int
    level: int = 0
    stage: int = 2


@dataclass
class RoundLog:
    """What one boosting round did."""

    round: int
    participants: tuple[str, ...]
    restarts: int = 0
    dropped: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    uploaded_values: int = 0  # int64 values the clients sent (before masking)
    seconds: float = 0.0


@dataclass
class BoostingHistory:
    rounds: list[RoundLog] = field(default_factory=list)
    rejections: dict[str, str] = field(default_factory=dict)  # client -> reason
    setup_values: int = 0


class _Restart(Exception):  # noqa: N818 (control flow, never escapes fit)
    def __init__(self, missing: set[str]) -> None:
        self.missing = missing


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


class FederatedHistGradientBoosting:
    """Histogram gradient boosting over clients whose rows never leave them.

    Parameters
    ----------
    loss : {"auto", "log_loss", "squared_error"}
        ``auto``: log-loss when ``classes`` are declared (sigmoid for two classes, softmax
        above), squared error otherwise.
    classes : array-like, optional
        The full label set, declared up front (a client may hold only some labels).
    n_estimators : int
        Boosting rounds (one tree per class per round under softmax).
    learning_rate, max_depth, reg_lambda, min_child_weight, min_samples_leaf, gamma :
        The usual tree-booster parameters (XGBoost's meanings; ``gamma`` is the minimum gain).
    max_bins : int
        At most ``max_bins`` value bins per feature (``max_bins - 1`` edges), plus the
        missing bin.
    binning : {"sketch", "grid"} or BinEdges or sequence of arrays
        How the edges are agreed (see the module docstring). Default: ``"grid"`` when
        ``feature_range`` is given, else ``"sketch"``.
    feature_range : (lower, upper), optional
        Public per-feature bounds for ``"grid"``.
    grid_size, sketch_size : int
        Resolution of the grid / sketch.
    target_bound : float, optional
        Public bound on ``|y|`` (regression): spares the one exponent a client sends.
    secure_aggregation : {None, "secagg", "secagg+"} or SecureAggregation
        Sum every histogram (and the set-up counts) with fedge's SecAgg/SecAgg+ protocol.
    dropouts : sequence of Dropout, optional
        Simulated dropouts (tests and demos).
    feature_names : sequence of str, optional

    Attributes
    ----------
    model_ : fedge IR Model
    bin_edges_ : BinEdges
    history_ : BoostingHistory
    """

    def __init__(
        self,
        *,
        loss: str = "auto",
        classes: Any = None,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 4,
        reg_lambda: float = 1.0,
        min_child_weight: float = 1e-3,
        min_samples_leaf: int = 1,
        gamma: float = 0.0,
        max_bins: int = 255,
        binning: Any = None,
        feature_range: Any = None,
        grid_size: int = 1024,
        sketch_size: int = 1024,
        target_bound: float | None = None,
        secure_aggregation: Any = None,
        dropouts: Sequence[Dropout] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        self.loss = loss
        self.classes = classes
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.reg_lambda = reg_lambda
        self.min_child_weight = min_child_weight
        self.min_samples_leaf = min_samples_leaf
        self.gamma = gamma
        self.max_bins = max_bins
        self.binning = binning
        self.feature_range = feature_range
        self.grid_size = grid_size
        self.sketch_size = sketch_size
        self.target_bound = target_bound
        self.secure_aggregation = secure_aggregation
        self.dropouts = dropouts
        self.feature_names = feature_names

    # -- checks ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        def positive_int(name: str, low: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {v!r}")

        positive_int("n_estimators")
        positive_int("max_depth", 0)
        positive_int("min_samples_leaf")
        positive_int("max_bins", 2)
        positive_int("grid_size", 2)
        positive_int("sketch_size", 2)
        if self.max_bins > 65_535:
            raise InvalidInputError(f"max_bins must be at most 65535, got {self.max_bins}")
        for name, low in (
            ("learning_rate", 0.0),
            ("reg_lambda", 0.0),
            ("min_child_weight", 0.0),
            ("gamma", 0.0),
        ):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.number) or not math.isfinite(v) or v < low:
                raise InvalidInputError(f"{name} must be a finite number >= {low}, got {v!r}")
        if not self.learning_rate > 0:
            raise InvalidInputError("learning_rate must be > 0")
        if self.loss not in _LOSSES:
            raise InvalidInputError(f"loss must be one of {_LOSSES}, got {self.loss!r}")

    def _task(self) -> tuple[str, np.ndarray | None]:
        classes = None
        if self.classes is not None:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or classes.shape[0] < 2:
                raise InvalidInputError("classes must list at least two labels")
            if np.unique(classes).shape[0] != classes.shape[0]:
                raise InvalidInputError("classes must be distinct")
        loss = self.loss
        if loss == "auto":
            loss = "log_loss" if classes is not None else "squared_error"
        if loss == "log_loss" and classes is None:
            raise InvalidInputError(
                "log_loss needs the full label set declared up front: pass classes=[...] "
                "(every client then predicts every class, even those it does not hold)"
            )
        if loss == "squared_error" and classes is not None:
            raise InvalidInputError("squared_error is a regression loss: drop classes=")
        return loss, classes

    def _secure(self) -> Any:
        if self.secure_aggregation is None:
            return None
        from fedge.federated.secure import SecureAggregation

        sec = self.secure_aggregation
        if isinstance(sec, str):
            sec = SecureAggregation(sec)
        if not isinstance(sec, SecureAggregation) or not sec.masking:
            raise InvalidInputError(
                "histograms are summed with the masking protocols only: "
                "secure_aggregation='secagg' or 'secagg+' (or a SecureAggregation of those)"
            )
        return sec

    # -- sums -----------------------------------------------------------------------------
    def _collect(
        self,
        what: str,
        participants: list[str],
        ask: Any,
        *,
        check: Any = None,
        drops: Mapping[str, int] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Ask every participant for an int64 array and sum the answers.

        Returns the sum and the answers that are in it (plain) or the survivors mapped to
        nothing useful (secure: the server never sees an answer). Without secure
        aggregation each answer is checked (``check``) and a client that fails is rejected
        for good; a dropped client (``drops``) does not answer."""
        drops = dict(drops or {})
        secure = self._secure_cfg is not None
        vectors: dict[str, np.ndarray] = {}
        for cid in participants:
            if cid in drops and not secure:
                continue
            answer = ask(self._clients[cid])
            if not secure:
                reason = _malformed(answer, check)
                if reason is not None:
                    self._reject(cid, f"{what}: {reason}")
                    continue
            vectors[cid] = np.asarray(answer)
        if not vectors:
            raise InvalidInputError(f"no client answered the {what} request")
        shape = next(iter(vectors.values())).shape
        self._uploaded += int(np.prod(shape)) * len(vectors)
        if not secure:
            total = np.zeros(shape, dtype=np.int64)
            for v in vectors.values():
                total += v
            return total, vectors
        total, survivors = self._secure_sum(vectors, shape, drops)
        return total, {c: np.zeros(0, dtype=np.int64) for c in survivors}

    def _sum_config(self, n: int, length: int) -> Any:
        """The public parameters of the next secure sum over ``n`` clients (a new round id
        and seed each time): integers, so no fixed-point scale, bounded so the sum of ``n``
        stays below ``2**_SUM_BITS``."""
        from fedge.federated.secure_aggregation import SecAggConfig

        sec = self._secure_cfg
        self._round_id += 1
        return SecAggConfig(
            threshold=sec.threshold_for(n),
            vector_length=length,
            neighbours=sec.degree(n),
            scale_bits=0,
            bound=float(2**_SUM_BITS // n),
            round_id=self._round_id,
            round_seed=secrets.token_bytes(32),
        )

    def _secure_sum(
        self, vectors: dict[str, np.ndarray], shape: tuple[int, ...], drops: Mapping[str, int]
    ) -> tuple[np.ndarray, list[str]]:
        from fedge.federated.secure_aggregation import secure_sum

        n = len(vectors)
        if n < 2:
            raise SecureAggregationError("secure aggregation needs at least two clients per sum")
        for cid, v in vectors.items():
            if v.dtype != np.int64 or v.shape != shape:
                raise SecureAggregationError(f"client {cid!r} built a malformed vector")
        config = self._sum_config(n, int(np.prod(shape)))
        # Integers in the ring Z_{2**64}: the sum is exact while |sum| < 2**63, and every
        # honest histogram sum stays within 2**62 by the choice of the fixed-point scale.
        encoded = {
            cid: np.ascontiguousarray(v).ravel().view(np.uint64) for cid, v in vectors.items()
        }
        result = secure_sum(
            encoded, config, drop={c: s for c, s in drops.items() if c in encoded}, encoded=True
        )
        self.secure_seconds_ += float(result.timings.get("total", 0.0))
        total = np.asarray(result.encoded_sum).view(np.int64).reshape(shape).copy()
        return total, sorted(result.survivors)

    def _reject(self, cid: str, reason: str) -> None:
        self.history_.rejections[cid] = reason
        self._banned.add(cid)
        self._log_rejected.append(cid)

    # -- fitting --------------------------------------------------------------------------
    def fit(self, clients: Sequence[Any]) -> FederatedHistGradientBoosting:
        """Train over ``clients``: a sequence of ``(X, y)`` pairs or :class:`HistogramClient`."""
        self._check_params()
        loss, classes = self._task()
        self._secure_cfg = self._secure()
        objs = _as_clients(clients)
        self._clients = {c.client_id: c for c in objs}
        self.history_ = BoostingHistory()
        self.secure_seconds_ = 0.0
        self._banned: set[str] = set()
        self._round_id = 0
        self._uploaded = 0
        self._log_rejected: list[str] = []
        ids = [c.client_id for c in objs]
        n_features = {c.client_id: c.n_features for c in objs}
        if len(set(n_features.values())) != 1:
            raise InvalidInputError(
                f"clients disagree on the number of features: {n_features}; every client "
                "needs the same columns in the same order"
            )
        F = objs[0].n_features
        if self.feature_names is not None and len(self.feature_names) != F:
            raise InvalidInputError(f"{len(self.feature_names)} feature names for {F} features")
        if self._secure_cfg is not None and len(ids) < 2:
            raise InvalidInputError("secure aggregation needs at least two clients")

        edges = self._agree_edges(ids, F)
        if edges.n_features != F:
            raise InvalidInputError(f"bin edges are given for {edges.n_features} features, not {F}")
        self.bin_edges_ = edges
        base, n_total, target_bits = self._setup(ids, loss, classes)
        self.base_score_ = base
        for cid in self._alive(ids):
            self._clients[cid].start(edges, base)
        self.history_.setup_values = self._uploaded

        K = base.shape[0]
        trees: list[list[dict[str, Any]]] = []
        leaf_bound = 0.0
        dropouts = list(self.dropouts or ())
        for m in range(self.n_estimators):
            start = time.perf_counter()
            self._uploaded = 0
            self._log_rejected = []
            if loss == "squared_error":
                # |g| <= max|y| + |base| + sum of max|leaf| so far: public quantities only
                bound = 2.0**target_bits + float(np.max(np.abs(base))) + leaf_bound
                g_exp = max(math.frexp(bound)[1], 0)
            else:
                g_exp = 0  # |p - y| <= 1, and 0 <= h <= 1 always
            bits = _SUM_BITS - math.ceil(math.log2(n_total + 1)) - g_exp
            participants = self._alive(ids)
            log = RoundLog(round=m, participants=tuple(participants))
            due = [d for d in dropouts if d.round == m]
            dropouts = [d for d in dropouts if d.round != m]
            while True:
                if not participants:
                    raise InvalidInputError(f"round {m}: no client is left to train with")
                for cid in participants:
                    self._clients[cid].gradients(loss, bits, bits + g_exp)
                try:
                    nodes, leaf_value = self._grow(participants, K, bits, g_exp, due)
                    break
                except _Restart as restart:
                    log.restarts += 1
                    gone = sorted(restart.missing - self._banned)
                    log.dropped += tuple(gone)
                    participants = [c for c in participants if c not in restart.missing]
                    due = []
            for cid in self._alive(ids):
                client = self._clients[cid]
                if cid not in participants:  # it missed the tree: it replays the splits
                    client.reset_positions()
                    for level in nodes["levels"]:
                        client.apply_splits(level)
                client.apply_leaves(leaf_value)
            leaf_bound += float(np.max(np.abs(leaf_value)))
            trees.append(_tree_records(nodes, leaf_value, K, edges))
            log.participants = tuple(participants)
            log.rejected = tuple(self._log_rejected)
            log.uploaded_values = self._uploaded
            log.seconds = time.perf_counter() - start
            self.history_.rounds.append(log)
        self.model_ = self._build_model(trees, base, K, classes, F, loss, len(ids))
        return self

    def _alive(self, ids: list[str]) -> list[str]:
        return [c for c in ids if c not in self._banned]

    def _agree_edges(self, ids: list[str], F: int) -> BinEdges:
        binning = self.binning
        if binning is None:
            binning = "grid" if self.feature_range is not None else "sketch"
        if not isinstance(binning, str):
            return _as_bin_edges(binning)
        if binning == "sketch":
            if self._secure_cfg is not None:
                raise InvalidInputError(
                    "binning='sketch' sends each client's quantiles in the clear; under "
                    "secure aggregation use binning='grid' with public feature_range= "
                    "(the grid counts are summed securely) or fixed bin edges"
                )
            pts: list[list[np.ndarray]] = [[] for _ in range(F)]
            wts: list[list[np.ndarray]] = [[] for _ in range(F)]
            for cid in ids:
                p, counts = self._clients[cid].sketch(self.sketch_size)
                for f in range(F):
                    pts[f].append(p[f])
                    wts[f].append(np.full(p[f].shape[0], counts[f] / max(p[f].shape[0], 1)))
                    self._uploaded += p[f].shape[0] + 1
            return BinEdges(tuple(_merge_sketches(pts[f], wts[f], self.max_bins) for f in range(F)))
        if binning == "grid":
            if self.feature_range is None:
                raise InvalidInputError("binning='grid' needs public feature_range=(lower, upper)")
            grid = _grid(self.feature_range, F, self.grid_size)
            size = sum(b.shape[0] + 1 for b in grid)

            def check(v: np.ndarray) -> str | None:
                if v.shape != (size,) or np.any(v < 0):
                    return "grid counts must be non-negative, one per cell"
                return None

            counts, _ = self._collect(
                "grid counts", ids, lambda c: c.grid_counts(grid), check=check
            )
            return _grid_edges(grid, counts, self.max_bins)
        raise InvalidInputError(f"binning must be 'sketch', 'grid' or bin edges, got {binning!r}")

    def _setup(
        self, ids: list[str], loss: str, classes: np.ndarray | None
    ) -> tuple[np.ndarray, int, int]:
        width = 1 if classes is None else 1 + classes.shape[0]

        def check(v: np.ndarray) -> str | None:
            if (
                v.shape != (width,)
                or v[0] <= 0
                or np.any(v < 0)
                or (width > 1 and int(v[1:].sum()) != int(v[0]))
            ):
                return "label counts must be [n_rows > 0, per-class counts summing to it]"
            return None

        stats, _ = self._collect(
            "label counts", self._alive(ids), lambda c: c.label_counts(classes), check=check
        )
        n_total = int(stats[0])
        if classes is not None:
            counts = stats[1:].astype(np.float64)
            prior = np.clip(counts / n_total, _EPS, 1 - _EPS)
            if classes.shape[0] == 2:
                base = np.array([math.log(prior[1] / prior[0])])
            else:
                base = np.log(prior)
            return base, n_total, 0
        alive = self._alive(ids)
        if self.target_bound is not None:
            if not (math.isfinite(self.target_bound) and self.target_bound > 0):
                raise InvalidInputError("target_bound must be a finite number > 0")
            target_bits = math.frexp(float(self.target_bound))[1]
        else:
            target_bits = max(self._clients[c].target_exponent() for c in alive)
        bits = _SUM_BITS - math.ceil(math.log2(n_total + 1)) - max(target_bits, 0)
        limit = float(n_total) * 2.0 ** (target_bits + bits)

        def check_sum(v: np.ndarray) -> str | None:
            if v.shape == (1,) and abs(float(v[0])) <= limit:
                return None
            return "the target sum exceeds n_rows * bound"

        total, _ = self._collect("target sum", alive, lambda c: c.target_sum(bits), check=check_sum)
        return np.array([math.ldexp(float(total[0]), -bits) / n_total]), n_total, target_bits

    def _grow(
        self, participants: list[str], K: int, bits: int, g_exp: int, due: list[Dropout]
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Grow this round's K trees level by level; raises _Restart on a dropout/rejection."""
        edges = self.bin_edges_
        scale = 2.0**-bits
        lam = float(self.reg_lambda)
        limits = (2.0 ** (bits + g_exp), 2.0**bits)
        one_slot = np.array([0, 1], dtype=np.int64)
        output = list(range(K))  # node id -> the output its tree writes; roots are 0..K-1
        depth = [0] * K
        hist: dict[int, np.ndarray] = {}
        mine: dict[str, dict[int, np.ndarray]] = {}  # plain mode: each client's histograms
        info: dict[int, tuple[int, int, bool, int, int]] = {}
        totals: dict[int, np.ndarray] = {}
        levels: list[dict[str, np.ndarray]] = []
        request = np.arange(K)
        derived: list[tuple[int, int, int]] = []  # (right, parent, left)
        for level in range(self.max_depth + 1):
            last = level == self.max_depth
            offsets = one_slot if last else edges.offsets
            shape = (request.shape[0], int(offsets[-1]), 3)
            node_output = np.asarray(output, dtype=np.int64)
            summed, answers = self._collect(
                f"histograms (depth {level})",
                participants,
                lambda c, r=request, o=node_output, t=last: c.histograms(r, o, totals_only=t),
                check=lambda v, s=shape, o=offsets: _check_histograms(v, s, o, limits),
                drops={d.client: d.stage for d in due if d.level == level},
            )
            if self._secure_cfg is None:  # per client: a left child may not exceed its parent
                kept = {}
                for cid, v in answers.items():
                    own = {int(n): v[i] for i, n in enumerate(request)}
                    for right, parent, left in derived:
                        rest = _parent(mine[cid][parent], last, edges.offsets) - own[left]
                        if _check_histograms(rest[None], (1, *rest.shape), offsets, None):
                            self._reject(
                                cid, f"histograms (depth {level}): a child exceeds its parent"
                            )
                            break
                        own[right] = rest
                    else:
                        kept[cid] = own
                mine = kept
            missing = set(participants) - set(answers) | (set(participants) & self._banned)
            if missing:
                raise _Restart(missing)
            for i, n in enumerate(request.tolist()):
                hist[n] = summed[i]
            for right, parent, left in derived:
                hist[right] = _parent(hist[parent], last, edges.offsets) - hist[left]
            frontier = request.tolist() + [r for r, _, _ in derived]
            for n in frontier:
                reason = _check_histograms(hist[n][None], (1, *hist[n].shape), offsets, None)
                if reason is not None:
                    raise SecureAggregationError(
                        f"the summed histograms are inconsistent ({reason}): a client sent "
                        "malformed histograms, and secure aggregation hides which"
                    )
                totals[n] = hist[n][: offsets[1]].sum(axis=0)
            if last:
                break
            new_left, derived = [], []
            for n in sorted(frontier):
                best = _best_split(
                    hist[n],
                    totals[n],
                    edges,
                    scale=scale,
                    lam=lam,
                    min_child_weight=float(self.min_child_weight),
                    min_samples_leaf=int(self.min_samples_leaf),
                    gamma=float(self.gamma),
                )
                if best is None:
                    continue
                left, right = len(output), len(output) + 1
                output += [output[n], output[n]]
                depth += [depth[n] + 1, depth[n] + 1]
                info[n] = (*best, left, right)
                new_left.append(left)
                derived.append((right, n, left))
            if not new_left:
                break
            arrays = _split_arrays(info, depth, level, len(output))
            levels.append(arrays)
            for cid in participants:
                self._clients[cid].apply_splits(arrays)
            request = np.asarray(new_left, dtype=np.int64)
        leaf_value = np.zeros(len(output), dtype=np.float64)
        lr = float(self.learning_rate)
        for n, tot in totals.items():
            if n in info:
                continue
            G, H = float(tot[0]) * scale, float(tot[1]) * scale
            leaf_value[n] = 0.0 if H + lam == 0 else -lr * G / (H + lam)
        return {"output": output, "info": info, "levels": levels}, leaf_value

    def _build_model(
        self,
        trees: list[list[dict[str, Any]]],
        base: np.ndarray,
        K: int,
        classes: np.ndarray | None,
        F: int,
        loss: str,
        n_clients: int,
    ) -> Model:
        flat, offsets = [], []
        for per_round in trees:
            for k, rec in enumerate(per_round):
                flat.append(from_node_table(**rec))
                offsets.append(k)
        ensemble = assemble(
            flat,
            n_features=F,
            n_outputs=K,
            tree_offset=offsets,
            base_score=base,
            aggregation=Aggregation.SUM,
            comparison=Comparison.LE,
            input_precision=Precision.FLOAT32,
            leaf_precision=Precision.FLOAT64,
        )
        if classes is None:
            task, link = Task.REGRESSION, Link.IDENTITY
        else:
            task = Task.CLASSIFICATION
            link = Link.LOGISTIC if K == 1 else Link.SOFTMAX
        source = {
            "library": "fedge",
            "version": __version__,
            "estimator": "FederatedHistGradientBoosting",
            "objective": loss,
        }
        return booster_model(
            ensemble,
            task=task,
            link=link,
            source=source,
            classes=classes,
            feature_names=list(self.feature_names) if self.feature_names else None,
        )

    # -- prediction -----------------------------------------------------------------------
    def _fitted(self) -> Model:
        model = getattr(self, "model_", None)
        if model is None:
            raise NotFittedError("FederatedHistGradientBoosting is not fitted; call fit() first")
        return model

    def predict(self, X: Any) -> np.ndarray:
        return runtime.predict(self._fitted(), X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return runtime.predict_proba(self._fitted(), X)

    def decision_function(self, X: Any) -> np.ndarray:
        return runtime.decision_function(self._fitted(), X)


def _as_clients(clients: Sequence[Any]) -> list[HistogramClient]:
    if isinstance(clients, HistogramClient) or not isinstance(clients, Sequence) or not clients:
        raise InvalidInputError(
            "clients must be a non-empty sequence of (X, y) pairs or HistogramClient objects"
        )
    out = []
    for i, c in enumerate(clients):
        if isinstance(c, HistogramClient):
            out.append(c)
        elif isinstance(c, tuple | list) and len(c) == 2:
            out.append(HistogramClient(c[0], c[1], client_id=f"client_{i}"))
        else:
            raise InvalidInputError(
                f"client {i} is a {type(c).__name__}; pass (X, y) pairs or HistogramClient"
            )
    ids = [c.client_id for c in out]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("client ids must be distinct")
    return out


def _malformed(answer: Any, check: Any) -> str | None:
    if not isinstance(answer, np.ndarray) or answer.dtype != np.int64:
        return "expected an int64 array"
    return None if check is None else check(answer)


def _parent(h: np.ndarray, last: bool, full: np.ndarray) -> np.ndarray:
    """A parent's histogram in its children's layout: unchanged, or (``last``: the children
    are leaves, requested as totals) its node totals ``(1, 3)``."""
    return h[: full[1]].sum(axis=0, keepdims=True) if last else h


def _check_histograms(
    v: np.ndarray,
    shape: tuple[int, ...],
    offsets: np.ndarray,
    limits: tuple[float, float] | None,
) -> str | None:
    """Invariants of honest histograms (one client's, or a sum): shape, non-negative hessians
    and counts, the same node totals in every feature, ``|G| <= count * g_bound`` and
    ``H <= count * h_bound``."""
    if v.shape != shape:
        return f"shape {v.shape}, expected {shape}"
    if np.any(v[..., 1:] < 0):
        return "negative hessian or count"
    per_feature = np.add.reduceat(v, offsets[:-1], axis=1)  # (R, F, 3)
    if np.any(per_feature != per_feature[:, :1]):
        return "features disagree on the node totals"
    if limits is not None:
        count = v[..., 2].astype(np.float64) * (1 + 1e-9)
        if np.any(np.abs(v[..., 0].astype(np.float64)) > count * limits[0]) or np.any(
            v[..., 1].astype(np.float64) > count * limits[1]
        ):
            return "gradient or hessian sums beyond count * bound"
    return None


def _split_arrays(
    info: Mapping[int, tuple[int, int, bool, int, int]], depth: list[int], level: int, n: int
) -> dict[str, np.ndarray]:
    """The splits chosen at ``level`` as arrays indexed by node id (what clients receive)."""
    arrays = {
        "is_split": np.zeros(n, dtype=bool),
        "feature": np.zeros(n, dtype=np.int64),
        "edge": np.zeros(n, dtype=np.int64),
        "missing_left": np.zeros(n, dtype=bool),
        "left": np.zeros(n, dtype=np.int64),
        "right": np.zeros(n, dtype=np.int64),
    }
    for node, (f, j, miss_left, left, right) in info.items():
        if depth[node] == level:
            arrays["is_split"][node] = True
            arrays["feature"][node] = f
            arrays["edge"][node] = j
            arrays["missing_left"][node] = miss_left
            arrays["left"][node] = left
            arrays["right"][node] = right
    return arrays


def _best_split(
    h: np.ndarray,
    total: np.ndarray,
    edges: BinEdges,
    *,
    scale: float,
    lam: float,
    min_child_weight: float,
    min_samples_leaf: int,
    gamma: float,
) -> tuple[int, int, bool] | None:
    """The best (feature, edge index, missing_left) for a node histogram, or None."""
    off = edges.offsets
    n_edges = np.diff(off) - 2
    if int(n_edges.sum()) == 0:
        return None
    feat = np.repeat(np.arange(edges.n_features), n_edges)
    j = np.arange(feat.shape[0]) - np.repeat(np.cumsum(n_edges) - n_edges, n_edges)
    cum = np.concatenate([np.zeros((1, 3), dtype=np.int64), np.cumsum(h, axis=0)])
    left = cum[off[feat] + j + 1] - cum[off[feat]]  # value bins 0..j
    miss = h[off[feat + 1] - 1]
    T = total[None, :]
    has_missing = miss[:, 2] > 0
    # option A: missing right; option B: missing left (only when the node has missing values)
    L = np.concatenate([left, left + miss])
    R = T - L
    g_all, h_all = float(total[0]) * scale, float(total[1]) * scale
    g_l, h_l = L[:, 0].astype(np.float64) * scale, L[:, 1].astype(np.float64) * scale
    g_r, h_r = R[:, 0].astype(np.float64) * scale, R[:, 1].astype(np.float64) * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        parent = g_all * g_all / (h_all + lam)
        gain = 0.5 * (g_l * g_l / (h_l + lam) + g_r * g_r / (h_r + lam) - parent) - gamma
    valid = (
        (h_l >= min_child_weight)
        & (h_r >= min_child_weight)
        & (L[:, 2] >= min_samples_leaf)
        & (R[:, 2] >= min_samples_leaf)
        & np.isfinite(gain)
        & (gain > 0)
    )
    valid[feat.shape[0] :] &= has_missing
    if not np.any(valid):
        return None
    best = int(np.argmax(np.where(valid, gain, -np.inf)))
    c = best % feat.shape[0]
    if best >= feat.shape[0]:
        return int(feat[c]), int(j[c]), True
    if has_missing[c]:
        return int(feat[c]), int(j[c]), False
    # no missing values here: NaN follows the child with more rows (ties: left)
    return int(feat[c]), int(j[c]), bool(L[c, 2] >= R[c, 2])


def _tree_records(
    nodes: dict[str, Any], leaf_value: np.ndarray, K: int, edges: BinEdges
) -> list[dict[str, Any]]:
    """One node table per output tree (for :func:`from_node_table`); thresholds are edges."""
    output, info = nodes["output"], nodes["info"]
    records = []
    for k in range(K):
        members = [n for n in range(len(output)) if output[n] == k]
        row = {n: i for i, n in enumerate(members)}
        m = len(members)
        rec: dict[str, Any] = {
            "is_leaf": np.array([n not in info for n in members], dtype=bool),
            "left": np.zeros(m, dtype=np.int64),
            "right": np.zeros(m, dtype=np.int64),
            "feature": np.zeros(m, dtype=np.int64),
            "threshold": np.zeros(m, dtype=np.float64),
            "missing_left": np.zeros(m, dtype=bool),
            "values": leaf_value[np.asarray(members, dtype=np.int64)],
            "root": 0,
        }
        for n in members:
            if n in info:
                f, j, miss_left, left, right = info[n]
                i = row[n]
                rec["left"][i], rec["right"][i] = row[left], row[right]
                rec["feature"][i] = f
                rec["missing_left"][i] = miss_left
                rec["threshold"][i] = float(edges.edges[f][j])
        records.append(rec)
    return records


def federated_histogram_boosting(clients: Sequence[Any], **params: Any) -> Model:
    """Train :class:`FederatedHistGradientBoosting` over ``clients`` and return its IR model."""
    return FederatedHistGradientBoosting(**params).fit(clients).model_
