"""Aggregation strategies: how a server turns client updates into new global parameters.

Two layers, as in Flower but without its shared state:

* **Pure functions** over :data:`~fedge.federated.messages.Parameters` (lists of float64
  arrays): :func:`weighted_sum`, :func:`weighted_average`, :func:`coordinate_median`,
  :func:`trimmed_mean`, :func:`krum_scores`, :func:`krum_select` and :func:`multi_krum`.
  They validate their input (at least one update, the same number of arrays with the same
  shapes in every update, finite values), always return new arrays and never write into
  their inputs.
* **Strategies**: small objects behind the :class:`Strategy` interface that the server calls
  once per round: :meth:`Strategy.configure_round` (which clients train, with which per-round
  settings), :meth:`Strategy.aggregate` (the new global parameters) and
  :meth:`Strategy.evaluate` (optional server-side evaluation). Every random choice uses the
  ``np.random.Generator`` the caller passes in; nothing touches numpy's global RNG.

Secure aggregation only reveals the weighted *sum* of the client parameters. Strategies whose
result depends on nothing else have ``sum_based = True`` and offer
:meth:`Strategy.aggregate_sum`, which takes that sum and the total weight; their
:meth:`Strategy.aggregate` is implemented through it, so both paths give identical results.
The Byzantine-robust strategies (median, trimmed mean, Krum) need the individual updates:
``sum_based = False`` and ``aggregate_sum`` raises
:class:`~fedge.errors.UnsupportedOperationError`.

References
----------
.. [1] McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
   Data", AISTATS 2017 (FedAvg).
.. [2] Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020 (FedProx).
.. [3] Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (FedAdagrad, FedAdam,
   FedYogi).
.. [4] Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
   ICML 2018 (coordinate-wise median and trimmed mean).
.. [5] Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
   Descent", NeurIPS 2017 (Krum and multi-Krum).
"""

from __future__ import annotations

import inspect
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from fedge.errors import InvalidInputError, UnsupportedOperationError
from fedge.federated.messages import ClientUpdate, Parameters, copy_parameters

__all__ = [
    "AggregationStrategy",
    "CoordinateMedian",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "Krum",
    "RoundPlan",
    "Strategy",
    "TrimmedMean",
    "coordinate_median",
    "krum_scores",
    "krum_select",
    "make_strategy",
    "multi_krum",
    "trimmed_mean",
    "weighted_average",
    "weighted_sum",
]

EvaluateFn = Callable[[Parameters], Mapping[str, float]]

# Products such as 0.3 * 10 are 3.0000000000000004 in binary floating point; counts derived
# from a fraction are rounded to this many decimals before ceil/floor so that they match the
# decimal arithmetic users have in mind.
_COUNT_DECIMALS = 9

# Krum's distance matrix is accumulated over column blocks of about this many values
# (n updates x block columns), so memory stays bounded whatever the model size.
_KRUM_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _label(index: int, labels: Sequence[str] | None) -> str:
    if labels is None:
        return f"update {index}"
    return f"update {index} (client {labels[index]!r})"


def _as_parameters(params: Any, what: str) -> list[np.ndarray]:
    """``params`` as a list of float64 arrays (no copy when already float64)."""
    if isinstance(params, np.ndarray) or not isinstance(params, Sequence):
        raise InvalidInputError(
            f"{what} must be a list of numpy arrays (Parameters), got {type(params).__name__}; "
            "wrap a single array as [array]"
        )
    arrays = []
    for k, array in enumerate(params):
        try:
            arrays.append(np.asarray(array, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{what}, array {k} is not numeric ({type(array).__name__}): {exc}"
            ) from exc
    return arrays


def _check_finite(arrays: Sequence[np.ndarray], what: str) -> None:
    for k, array in enumerate(arrays):
        if not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise InvalidInputError(
                f"{what}, array {k} holds {bad} NaN or infinite value(s); "
                "drop or repair this update before aggregating"
            )


def _shapes(arrays: Sequence[np.ndarray]) -> list[tuple[int, ...]]:
    return [tuple(a.shape) for a in arrays]


def _check_shapes(
    arrays: Sequence[np.ndarray], expected: Sequence[tuple[int, ...]], what: str, reference: str
) -> None:
    if len(arrays) != len(expected):
        raise InvalidInputError(
            f"{what} has {len(arrays)} arrays with shapes {_shapes(arrays)}, but {reference} "
            f"has {len(expected)} with shapes {list(expected)}; every update must come from "
            "the same model"
        )
    for k, (array, shape) in enumerate(zip(arrays, expected, strict=True)):
        if tuple(array.shape) != tuple(shape):
            raise InvalidInputError(
                f"{what}, array {k} has shape {tuple(array.shape)}, but {reference} has "
                f"shape {tuple(shape)}; every update must come from the same model"
            )


def _check_updates(
    updates: Sequence[Sequence[np.ndarray]],
    *,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
    labels: Sequence[str] | None = None,
) -> list[list[np.ndarray]]:
    """Validated float64 views of ``updates``: non-empty, same shapes, finite values.

    Shapes are compared with ``expected_shapes`` (the global model) when given, else with
    the first update.
    """
    if isinstance(updates, np.ndarray) or not isinstance(updates, Sequence):
        raise InvalidInputError(
            f"updates must be a list of Parameters (one list of arrays per client), got "
            f"{type(updates).__name__}"
        )
    if len(updates) == 0:
        raise InvalidInputError("at least one update is needed to aggregate, got none")
    checked = []
    for i, update in enumerate(updates):
        what = _label(i, labels)
        arrays = _as_parameters(update, what)
        if expected_shapes is not None:
            _check_shapes(arrays, expected_shapes, what, "the global model")
        elif i > 0:
            _check_shapes(arrays, _shapes(checked[0]), what, _label(0, labels))
        _check_finite(arrays, what)
        checked.append(arrays)
    return checked


def _check_weights(weights: Any, n: int) -> np.ndarray:
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"weights must be numbers: {exc}") from exc
    if w.ndim != 1 or w.shape[0] != n:
        raise InvalidInputError(
            f"weights must be a 1-D sequence with one weight per update ({n}), got shape {w.shape}"
        )
    if not np.isfinite(w).all():
        raise InvalidInputError(f"weights must be finite, got {w.tolist()}")
    if (w < 0).any():
        bad = np.flatnonzero(w < 0).tolist()
        raise InvalidInputError(
            f"weights must be >= 0, got negative weights at update(s) {bad}: {w[bad].tolist()}"
        )
    total = float(np.sum(w))
    if not total > 0:
        raise InvalidInputError(
            f"the weights of the {n} update(s) sum to 0 (e.g. every client reported 0 "
            "training examples); at least one update needs a positive weight"
        )
    if not math.isfinite(total):
        raise InvalidInputError("the weights sum to infinity; rescale them")
    return w


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {number}")
    return number


def _check_real(
    value: Any,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) and above and below):
        left = "(" if low_open else "["
        right = ")" if high_open or math.isinf(high) else "]"
        raise InvalidInputError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return number


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(
            "rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got "
            f"{type(rng).__name__}; fedge never uses numpy's global random state"
        )
    return rng


# --------------------------------------------------------------------------------------------
# Pure aggregation functions
# --------------------------------------------------------------------------------------------


def weighted_sum(updates: Sequence[Parameters], weights: Sequence[float]) -> Parameters:
    """The weighted sum ``sum_i weights[i] * updates[i]``, array by array.

    This is what secure aggregation reveals; :meth:`Strategy.aggregate_sum` takes it.

    Parameters
    ----------
    updates : sequence of Parameters
        One list of arrays per client, all with the same shapes and finite values.
    weights : sequence of float
        One finite weight >= 0 per update; they must not all be 0.

    Returns
    -------
    Parameters
        New float64 arrays. Updates are added in the order given.

    Raises
    ------
    InvalidInputError
        No updates, mismatched shapes, non-finite values, or invalid weights (negative,
        non-finite, wrong count, zero total).
    """
    checked = _check_updates(updates)
    return _weighted_sum(checked, _check_weights(weights, len(checked)))


def _weighted_sum(checked: Sequence[Sequence[np.ndarray]], w: np.ndarray) -> Parameters:
    result = []
    for k, first in enumerate(checked[0]):
        acc = np.zeros(first.shape, dtype=np.float64)
        scratch = np.empty_like(acc)
        for weight, arrays in zip(w, checked, strict=True):
            np.multiply(arrays[k], weight, out=scratch)
            acc += scratch
        result.append(acc)
    return result


def weighted_average(updates: Sequence[Parameters], weights: Sequence[float]) -> Parameters:
    """The weighted mean ``sum_i w_i * updates[i] / sum_i w_i`` (FedAvg's aggregate).

    Equal weights give the plain average. Computed as :func:`weighted_sum` divided by the
    total weight, exactly as :meth:`FedAvg.aggregate_sum` does.

    Parameters
    ----------
    updates : sequence of Parameters
        One list of arrays per client, all with the same shapes and finite values.
    weights : sequence of float
        One finite weight >= 0 per update (e.g. the clients' example counts).

    Returns
    -------
    Parameters
        New float64 arrays.

    Raises
    ------
    InvalidInputError
        As :func:`weighted_sum`; in particular when the weights sum to 0.

    Examples
    --------
    >>> import numpy as np
    >>> weighted_average([[np.array([1.0])], [np.array([3.0])]], [1, 3])
    [array([2.5])]
    """
    checked = _check_updates(updates)
    w = _check_weights(weights, len(checked))
    total = float(np.sum(w))
    return [s / total for s in _weighted_sum(checked, w)]


def coordinate_median(updates: Sequence[Parameters]) -> Parameters:
    """The coordinate-wise median of the updates (Yin et al. 2018).

    Each coordinate is the median of that coordinate over all updates (the mean of the two
    middle values when the number of updates is even). Robust to fewer than half of the
    updates being arbitrary.

    Parameters
    ----------
    updates : sequence of Parameters
        One list of arrays per client, all with the same shapes and finite values.

    Returns
    -------
    Parameters
        New float64 arrays.
    """
    checked = _check_updates(updates)
    result = []
    for k, first in enumerate(checked[0]):
        stacked = np.stack([arrays[k] for arrays in checked])
        result.append(np.asarray(np.median(stacked, axis=0), dtype=np.float64).reshape(first.shape))
    return result


def trimmed_mean(updates: Sequence[Parameters], beta: float) -> Parameters:
    """The coordinate-wise beta-trimmed mean of the updates (Yin et al. 2018).

    For each coordinate, the ``floor(beta * n)`` largest and the ``floor(beta * n)``
    smallest values over the ``n`` updates are dropped and the rest averaged. ``beta = 0``
    is the plain mean. (``beta * n`` is rounded to 9 decimals first, so ``0.3 * 10`` trims 3.)

    Parameters
    ----------
    updates : sequence of Parameters
        One list of arrays per client, all with the same shapes and finite values.
    beta : float
        Fraction trimmed at each end, ``0 <= beta < 0.5``.

    Returns
    -------
    Parameters
        New float64 arrays.

    Raises
    ------
    InvalidInputError
        ``beta`` out of range, or no value would remain after trimming, or invalid updates.
    """
    beta = _check_real(beta, "beta", low=0.0, high=0.5, high_open=True)
    checked = _check_updates(updates)
    n = len(checked)
    trim = math.floor(round(beta * n, _COUNT_DECIMALS))
    if n - 2 * trim < 1:
        raise InvalidInputError(
            f"trimming {trim} value(s) at each end of {n} update(s) (beta={beta}) leaves "
            "nothing to average; lower beta or aggregate more updates"
        )
    result = []
    for k, first in enumerate(checked[0]):
        stacked = np.stack([arrays[k] for arrays in checked])
        # Sorting even when nothing is trimmed makes the result independent of update order.
        stacked = np.sort(stacked, axis=0)[trim : n - trim]
        result.append(np.asarray(stacked.mean(axis=0), dtype=np.float64).reshape(first.shape))
    return result


def _pairwise_sq_distances(checked: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Squared Euclidean distances between the flattened updates, an ``(n, n)`` matrix.

    Uses the Gram trick ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` (one matrix product per block
    of coordinates, never an ``(n, n, P)`` tensor) on updates centred at their
    coordinate-wise median, which keeps the cancellation error small even when the updates
    are far from the origin or an outlier is far from the rest.
    """
    n = len(checked)
    gram = np.zeros((n, n), dtype=np.float64)
    block = max(1, _KRUM_BLOCK_ELEMENTS // n)  # columns per block: bounded memory for any P
    for k in range(len(checked[0])):
        rows = [np.ravel(arrays[k]) for arrays in checked]
        for start in range(0, rows[0].size, block):
            X = np.stack([row[start : start + block] for row in rows])  # a new array
            X -= np.median(X, axis=0)
            gram += X @ X.T
    sq_norms = np.diag(gram).copy()
    dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram
    dist = (dist + dist.T) / 2.0  # exactly symmetric
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def _check_krum_counts(n: int, n_byzantine: Any) -> int:
    f = _check_int(n_byzantine, "n_byzantine", 0)
    if n <= 2 * f + 2:
        raise InvalidInputError(
            f"Krum with n_byzantine={f} needs more than 2*f + 2 = {2 * f + 2} updates, i.e. at "
            f"least {2 * f + 3}, got {n}; aggregate more clients or lower n_byzantine"
        )
    return f


def krum_scores(updates: Sequence[Parameters], n_byzantine: int) -> np.ndarray:
    """Krum score of every update (Blanchard et al. 2017).

    The score of update ``i`` is the sum of the squared Euclidean distances (over all arrays
    flattened together) from ``i`` to its ``n - f - 2`` closest other updates, where ``f`` is
    ``n_byzantine``. Honest updates in a tight cluster score low; outliers score high.

    Parameters
    ----------
    updates : sequence of Parameters
        ``n`` updates with the same shapes and finite values, ``n > 2 * n_byzantine + 2``.
    n_byzantine : int
        The number ``f`` of Byzantine (arbitrary) updates tolerated.

    Returns
    -------
    numpy.ndarray
        ``n`` float64 scores.

    Raises
    ------
    InvalidInputError
        Too few updates for ``n_byzantine``, or invalid updates.

    Notes
    -----
    Distances come from Gram matrices accumulated over blocks of coordinates (``O(n^2 P)``
    time in matrix products, ``O(n^2)`` memory plus a block of a few million values), fine
    for a thousand clients with 1e5 parameters each.
    """
    checked = _check_updates(updates)
    n = len(checked)
    f = _check_krum_counts(n, n_byzantine)
    return _krum_scores(checked, f)


def _krum_scores(checked: Sequence[Sequence[np.ndarray]], f: int) -> np.ndarray:
    n = len(checked)
    dist = _pairwise_sq_distances(checked)
    np.fill_diagonal(dist, np.inf)  # a point is not its own neighbour
    closest = np.sort(dist, axis=1)[:, : n - f - 2]
    return closest.sum(axis=1)


def krum_select(updates: Sequence[Parameters], n_byzantine: int, m: int = 1) -> list[int]:
    """Indices of the ``m`` updates with the lowest Krum scores.

    Parameters
    ----------
    updates : sequence of Parameters
        ``n`` updates, ``n > 2 * n_byzantine + 2``.
    n_byzantine : int
        The number ``f`` of Byzantine updates tolerated.
    m : int, default 1
        How many updates to select, ``1 <= m <= n - n_byzantine``.

    Returns
    -------
    list of int
        Indices into ``updates``, lowest score first; equal scores are ordered by index, so
        the selection is deterministic.
    """
    checked = _check_updates(updates)
    return _krum_select(checked, n_byzantine, m)


def _krum_select(checked: Sequence[Sequence[np.ndarray]], n_byzantine: Any, m: Any) -> list[int]:
    n = len(checked)
    f = _check_krum_counts(n, n_byzantine)
    m = _check_int(m, "m", 1)
    if m > n - f:
        raise InvalidInputError(
            f"multi-Krum can select at most n - n_byzantine = {n - f} of {n} updates, got m={m}"
        )
    order = np.argsort(_krum_scores(checked, f), kind="stable")
    return [int(i) for i in order[:m]]


def multi_krum(updates: Sequence[Parameters], n_byzantine: int, m: int = 1) -> Parameters:
    """The plain average of the ``m`` updates :func:`krum_select` picks (``m = 1``: Krum).

    Parameters
    ----------
    updates : sequence of Parameters
        ``n`` updates, ``n > 2 * n_byzantine + 2``.
    n_byzantine : int
        The number ``f`` of Byzantine updates tolerated.
    m : int, default 1
        How many updates to average, ``1 <= m <= n - n_byzantine``.

    Returns
    -------
    Parameters
        New float64 arrays (a copy of the chosen update when ``m = 1``).
    """
    checked = _check_updates(updates)
    chosen = sorted(_krum_select(checked, n_byzantine, m))
    total = _weighted_sum([checked[i] for i in chosen], np.ones(len(chosen)))
    return [s / len(chosen) for s in total]


# --------------------------------------------------------------------------------------------
# The Strategy interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundPlan:
    """What :meth:`Strategy.configure_round` decides for one round.

    Attributes
    ----------
    client_ids : tuple of str
        The clients selected to train, in the order they appear in the available clients.
    config : Mapping[str, Any]
        Per-round settings sent to every selected client (e.g. ``{"proximal_mu": 0.01}`` for
        FedProx); put it in :class:`~fedge.federated.messages.FitInstructions`.
    """

    client_ids: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """How a federation picks clients and combines their updates, one round at a time.

    Subclasses store their keyword-only constructor parameters unchanged. Per-call inputs are
    never modified; every result is made of new arrays. The only state a strategy keeps
    between rounds (server optimizers' moment vectors) is exposed by :meth:`state_dict` and
    restored by :meth:`load_state_dict`.

    Parameters
    ----------
    fraction_fit : float, default 1.0
        Fraction of the available clients selected per round, in ``(0, 1]``.
    min_fit_clients : int, default 1
        Minimum number of clients selected per round; fewer available is an error.
    evaluate_fn : callable, optional
        ``evaluate_fn(parameters) -> dict[str, float]``, called by :meth:`evaluate` for
        server-side evaluation of the global parameters (it receives a copy).

    Attributes
    ----------
    name : str
        The strategy's :class:`AggregationStrategy` value (e.g. ``"fedavg"``).
    sum_based : bool
        True when :meth:`aggregate` depends only on the weighted sum of the client parameters
        and the total weight, so it can run on what secure aggregation reveals through
        :meth:`aggregate_sum`.
    """

    name: ClassVar[str]
    sum_based: ClassVar[bool]

    def __init__(
        self,
        *,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        _check_real(fraction_fit, "fraction_fit", low=0.0, high=1.0, low_open=True)
        _check_int(min_fit_clients, "min_fit_clients", 1)
        if evaluate_fn is not None and not callable(evaluate_fn):
            raise InvalidInputError(
                f"evaluate_fn must be callable or None, got {type(evaluate_fn).__name__}"
            )
        self.fraction_fit = fraction_fit
        self.min_fit_clients = min_fit_clients
        self.evaluate_fn = evaluate_fn

    def __repr__(self) -> str:
        params = []
        for cls in type(self).__mro__:
            if "__init__" not in vars(cls):
                continue
            for name, param in inspect.signature(cls.__init__).parameters.items():
                if param.kind is not param.KEYWORD_ONLY or name in dict(params):
                    continue
                value = getattr(self, name, param.default)
                if name == "evaluate_fn" and value is None:
                    continue
                params.append((name, value))
        inner = ", ".join(f"{name}={value!r}" for name, value in params)
        return f"{type(self).__name__}({inner})"

    # -- selection ---------------------------------------------------------------------------

    def configure_round(
        self, server_round: int, client_ids: Sequence[str], rng: np.random.Generator
    ) -> RoundPlan:
        """Select the clients that train in ``server_round`` and their per-round config.

        ``max(min_fit_clients, ceil(fraction_fit * n))`` of the ``n`` available clients
        (at most ``n``) are drawn uniformly without replacement with ``rng`` (``fraction_fit
        * n`` is rounded to 9 decimals first, so ``0.3 * 10`` selects 3). No random number
        is drawn when every client is selected.

        Parameters
        ----------
        server_round : int
            The round number (1-based by convention).
        client_ids : sequence of str
            The available clients, without duplicates.
        rng : numpy.random.Generator
            The source of all randomness.

        Returns
        -------
        RoundPlan
            The selected ids in the order of ``client_ids``, and the config for the clients.

        Raises
        ------
        InvalidInputError
            Fewer than ``min_fit_clients`` clients available, duplicate ids, or ``rng`` is
            not a ``numpy.random.Generator``.
        """
        rng = _check_rng(rng)
        ids = list(client_ids)
        n = len(ids)
        if len(set(ids)) != n:
            dupes = sorted({c for c in ids if ids.count(c) > 1})
            raise InvalidInputError(f"client ids must be unique, got duplicates {dupes}")
        if n < self.min_fit_clients:
            raise InvalidInputError(
                f"{type(self).__name__} needs at least min_fit_clients={self.min_fit_clients} "
                f"clients in round {server_round}, but only {n} are available; wait for more "
                "clients or lower min_fit_clients"
            )
        wanted = math.ceil(round(float(self.fraction_fit) * n, _COUNT_DECIMALS))
        k = min(n, max(int(self.min_fit_clients), wanted))
        if k == n:
            chosen = list(range(n))
        else:
            chosen = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
        return RoundPlan(
            client_ids=tuple(ids[i] for i in chosen), config=self._round_config(server_round)
        )

    def _round_config(self, server_round: int) -> dict[str, Any]:
        """Per-round settings for the clients (a fresh dict per call)."""
        return {}

    # -- aggregation -------------------------------------------------------------------------

    @abstractmethod
    def aggregate(
        self,
        server_round: int,
        global_parameters: Parameters,
        updates: Sequence[ClientUpdate],
        rng: np.random.Generator,
    ) -> Parameters:
        """The new global parameters after ``server_round``.

        Parameters
        ----------
        server_round : int
            The round number.
        global_parameters : Parameters
            The global parameters the clients started from this round.
        updates : sequence of ClientUpdate
            The clients' results (full parameters, not deltas), at least one; their
            parameters must have the shapes of ``global_parameters``.
        rng : numpy.random.Generator
            The source of any randomness.

        Returns
        -------
        Parameters
            New float64 arrays; no input is modified.
        """

    def aggregate_sum(
        self,
        server_round: int,
        global_parameters: Parameters,
        weighted_sum: Parameters,
        total_weight: float,
    ) -> Parameters:
        """The new global parameters from the weighted sum of the client parameters only.

        Only strategies with ``sum_based = True`` support this (see :func:`weighted_sum`);
        the others raise :class:`~fedge.errors.UnsupportedOperationError`.
        """
        raise UnsupportedOperationError(
            f"{type(self).__name__} ({self.name!r}) needs the individual client updates, not "
            "only their weighted sum, so it cannot run under secure aggregation; use a "
            "sum-based strategy (fedavg, fedprox, fedadam, fedyogi, fedadagrad) or turn secure "
            "aggregation off"
        )

    # -- evaluation and state ----------------------------------------------------------------

    def evaluate(self, server_round: int, parameters: Parameters) -> dict[str, float] | None:
        """Server-side evaluation of ``parameters`` with ``evaluate_fn``, if one was given.

        Returns
        -------
        dict of str to float, or None
            The metrics ``evaluate_fn`` returned (values converted to float), or None when
            the strategy has no ``evaluate_fn``.
        """
        if self.evaluate_fn is None:
            return None
        metrics = self.evaluate_fn(copy_parameters(parameters))
        if metrics is None:
            return None
        return {str(key): float(value) for key, value in dict(metrics).items()}

    def state_dict(self) -> dict[str, Any]:
        """The state kept between rounds, for checkpoints ({} for stateless strategies)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise InvalidInputError(
                f"{type(self).__name__} keeps no state between rounds, but the checkpoint "
                f"holds {sorted(state)}; was it written by another strategy?"
            )

    # -- helpers for subclasses --------------------------------------------------------------

    def _client_parameters(
        self, global_parameters: Parameters, updates: Sequence[ClientUpdate]
    ) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """Validated float64 views of the global and the client parameters."""
        global_arrays = _as_parameters(global_parameters, "global_parameters")
        _check_finite(global_arrays, "global_parameters")
        if isinstance(updates, ClientUpdate) or not isinstance(updates, Sequence):
            raise InvalidInputError(
                f"updates must be a list of ClientUpdate, got {type(updates).__name__}"
            )
        for i, update in enumerate(updates):
            if not isinstance(update, ClientUpdate):
                raise InvalidInputError(
                    f"update {i} must be a ClientUpdate, got {type(update).__name__}"
                )
        checked = _check_updates(
            [u.parameters for u in updates],
            expected_shapes=_shapes(global_arrays),
            labels=[u.client_id for u in updates],
        )
        return global_arrays, checked


class _SumBasedStrategy(Strategy):
    """A strategy whose aggregate depends only on the weighted sum and the total weight."""

    sum_based: ClassVar[bool] = True

    def __init__(
        self,
        *,
        weighted: bool = True,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        super().__init__(
            fraction_fit=fraction_fit, min_fit_clients=min_fit_clients, evaluate_fn=evaluate_fn
        )
        self.weighted = weighted

    def client_weights(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        """Each update's weight: its ``num_examples`` when ``weighted``, else 1.

        Use these weights to form the sum that :meth:`aggregate_sum` takes (e.g. under
        secure aggregation each client masks ``weight * parameters`` and ``weight``).
        """
        if not self.weighted:
            return np.ones(len(updates))
        counts = []
        for i, u in enumerate(updates):
            if isinstance(u.num_examples, bool) or not isinstance(
                u.num_examples, (int, np.integer)
            ):
                raise InvalidInputError(
                    f"update {i} (client {u.client_id!r}) reports num_examples="
                    f"{u.num_examples!r}; it must be an integer >= 0"
                )
            counts.append(int(u.num_examples))
        return np.asarray(counts, dtype=np.float64)

    def aggregate(
        self,
        server_round: int,
        global_parameters: Parameters,
        updates: Sequence[ClientUpdate],
        rng: np.random.Generator,
    ) -> Parameters:
        """The new global parameters, via :meth:`aggregate_sum` of the weighted sum.

        Each update weighs its ``num_examples`` when ``weighted`` is True, else 1.
        """
        _check_rng(rng)
        global_arrays, checked = self._client_parameters(global_parameters, updates)
        weights = self.client_weights(updates)
        try:
            weights = _check_weights(weights, len(checked))
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{type(self).__name__} cannot weight the updates by num_examples: {exc}"
            ) from exc
        total_sum = _weighted_sum(checked, weights)
        return self.aggregate_sum(server_round, global_arrays, total_sum, float(np.sum(weights)))

    def aggregate_sum(
        self,
        server_round: int,
        global_parameters: Parameters,
        weighted_sum: Parameters,
        total_weight: float,
    ) -> Parameters:
        """The new global parameters from ``sum_i w_i * params_i`` and ``sum_i w_i``.

        Parameters
        ----------
        server_round : int
            The round number.
        global_parameters : Parameters
            The global parameters the clients started from.
        weighted_sum : Parameters
            ``sum_i w_i * params_i`` with the weights of :meth:`client_weights`.
        total_weight : float
            ``sum_i w_i``, > 0.

        Returns
        -------
        Parameters
            New float64 arrays; no input is modified.
        """
        global_arrays = _as_parameters(global_parameters, "global_parameters")
        _check_finite(global_arrays, "global_parameters")
        sums = _as_parameters(weighted_sum, "weighted_sum")
        _check_shapes(sums, _shapes(global_arrays), "weighted_sum", "the global model")
        _check_finite(sums, "weighted_sum")
        total = _check_real(total_weight, "total_weight", low=0.0, low_open=True)
        mean = [s / total for s in sums]
        return self._step(server_round, global_arrays, mean)

    @abstractmethod
    def _step(
        self, server_round: int, global_arrays: list[np.ndarray], mean: list[np.ndarray]
    ) -> Parameters:
        """New global parameters from the (weighted) mean of the client parameters."""


class FedAvg(_SumBasedStrategy):
    """Federated averaging (McMahan et al. 2017): the weighted mean of the client parameters.

    Parameters
    ----------
    weighted : bool, default True
        Weight each client by its ``num_examples``; False gives the plain mean.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "fedavg"

    def _step(
        self, server_round: int, global_arrays: list[np.ndarray], mean: list[np.ndarray]
    ) -> Parameters:
        return mean


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg's aggregation plus a proximal term in local training.

    The aggregation is FedAvg's. :meth:`configure_round` puts ``{"proximal_mu": mu}`` in the
    round config; the local trainer adds ``mu / 2 * ||w - w_global||^2`` to its loss.

    Parameters
    ----------
    proximal_mu : float, default 0.01
        The proximal coefficient ``mu >= 0`` (0 is FedAvg).
    weighted : bool, default True
        Weight each client by its ``num_examples``.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "fedprox"

    def __init__(
        self,
        *,
        proximal_mu: float = 0.01,
        weighted: bool = True,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        super().__init__(
            weighted=weighted,
            fraction_fit=fraction_fit,
            min_fit_clients=min_fit_clients,
            evaluate_fn=evaluate_fn,
        )
        _check_real(proximal_mu, "proximal_mu", low=0.0)
        self.proximal_mu = proximal_mu

    def _round_config(self, server_round: int) -> dict[str, Any]:
        return {"proximal_mu": float(self.proximal_mu)}


class _AdaptiveServerOptimizer(_SumBasedStrategy):
    """FedOpt (Reddi et al. 2021): an adaptive optimizer step on the server.

    With the pseudo-gradient ``delta = mean(client params) - x`` (the weighted mean when
    ``weighted``), each round computes::

        m = beta_1 * m + (1 - beta_1) * delta
        v = <variant update of v>                 (see the subclasses)
        x = x + server_learning_rate * m / (sqrt(v) + tau)

    As in the paper, ``m`` starts at 0 and ``v`` at ``tau ** 2`` (elementwise); there is no
    bias correction. ``m`` and ``v`` are the state in :meth:`state_dict`; they are created
    with the shapes of the global parameters on the first aggregation.
    """

    # Per-variant defaults (the paper's recommended server step sizes).
    default_learning_rate: ClassVar[float] = 0.1
    default_beta_1: ClassVar[float] = 0.9

    def __init__(
        self,
        *,
        server_learning_rate: float | None = None,
        beta_1: float | None = None,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        weighted: bool = True,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        super().__init__(
            weighted=weighted,
            fraction_fit=fraction_fit,
            min_fit_clients=min_fit_clients,
            evaluate_fn=evaluate_fn,
        )
        if server_learning_rate is None:
            server_learning_rate = self.default_learning_rate
        if beta_1 is None:
            beta_1 = self.default_beta_1
        _check_real(server_learning_rate, "server_learning_rate", low=0.0, low_open=True)
        _check_real(beta_1, "beta_1", low=0.0, high=1.0, high_open=True)
        _check_real(beta_2, "beta_2", low=0.0, high=1.0, high_open=True)
        # tau > 0 keeps the denominator sqrt(v) + tau away from zero.
        _check_real(tau, "tau", low=0.0, low_open=True)
        self.server_learning_rate = server_learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None

    @abstractmethod
    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        """The new ``v`` from the old one and ``delta ** 2`` (a new array)."""

    def _step(
        self, server_round: int, global_arrays: list[np.ndarray], mean: list[np.ndarray]
    ) -> Parameters:
        shapes = _shapes(global_arrays)
        if self._m is None or self._v is None:
            tau_sq = float(self.tau) ** 2
            m_old = [np.zeros(shape) for shape in shapes]
            v_old = [np.full(shape, tau_sq) for shape in shapes]
        else:
            m_old, v_old = self._m, self._v
            _check_shapes(m_old, shapes, "the optimizer state", "the global model")
        eta, beta_1, tau = float(self.server_learning_rate), float(self.beta_1), float(self.tau)
        new_x, new_m, new_v = [], [], []
        for x, avg, m, v in zip(global_arrays, mean, m_old, v_old, strict=True):
            delta = avg - x
            m_next = beta_1 * m + (1.0 - beta_1) * delta
            v_next = self._second_moment(v, delta * delta)
            new_x.append(x + eta * m_next / (np.sqrt(v_next) + tau))
            new_m.append(m_next)
            new_v.append(v_next)
        self._m, self._v = new_m, new_v
        return new_x

    def state_dict(self) -> dict[str, Any]:
        """``{"m": [...], "v": [...]}`` (copies), or {} before the first aggregation."""
        if self._m is None or self._v is None:
            return {}
        return {"m": copy_parameters(self._m), "v": copy_parameters(self._v)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the moments from :meth:`state_dict` ({} resets to the initial state)."""
        if not state:
            self._m = self._v = None
            return
        if set(state) != {"m", "v"}:
            raise InvalidInputError(
                f"{type(self).__name__} state must have the keys ['m', 'v'], got "
                f"{sorted(state)}; was the checkpoint written by another strategy?"
            )
        m = copy_parameters(_as_parameters(state["m"], "state['m']"))
        v = copy_parameters(_as_parameters(state["v"], "state['v']"))
        _check_shapes(v, _shapes(m), "state['v']", "state['m']")
        _check_finite(m, "state['m']")
        _check_finite(v, "state['v']")
        if any((a < 0).any() for a in v):
            raise InvalidInputError("state['v'] holds negative second moments; it is corrupt")
        self._m, self._v = m, v


class FedAdagrad(_AdaptiveServerOptimizer):
    """FedAdagrad (Reddi et al. 2021): ``v = v + delta ** 2``.

    Parameters
    ----------
    server_learning_rate : float, default 0.1
        The server step size ``eta``.
    beta_1 : float, default 0.0
        Momentum of ``m``; 0 (the default) makes ``m`` the current pseudo-gradient, i.e.
        plain Adagrad. The paper's algorithm allows momentum too.
    beta_2 : float
        Unused (Adagrad accumulates every ``delta ** 2``).
    tau : float, default 1e-3
        Adaptivity ``tau > 0``; ``v`` starts at ``tau ** 2``.
    weighted : bool, default True
        Weight each client by its ``num_examples``.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "fedadagrad"
    default_beta_1: ClassVar[float] = 0.0

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v + delta_sq


class FedAdam(_AdaptiveServerOptimizer):
    """FedAdam (Reddi et al. 2021): ``v = beta_2 * v + (1 - beta_2) * delta ** 2``.

    Parameters
    ----------
    server_learning_rate : float, default 0.1
        The server step size ``eta``.
    beta_1 : float, default 0.9
        Momentum of the first moment ``m``.
    beta_2 : float, default 0.99
        Decay of the second moment ``v``.
    tau : float, default 1e-3
        Adaptivity ``tau > 0``; ``v`` starts at ``tau ** 2``.
    weighted : bool, default True
        Weight each client by its ``num_examples``.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "fedadam"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        beta_2 = float(self.beta_2)
        return beta_2 * v + (1.0 - beta_2) * delta_sq


class FedYogi(_AdaptiveServerOptimizer):
    """FedYogi (Reddi et al. 2021): ``v = v - (1 - beta_2) * delta ** 2 * sign(v - delta ** 2)``.

    Parameters
    ----------
    server_learning_rate : float, default 0.01
        The server step size ``eta``.
    beta_1 : float, default 0.9
        Momentum of the first moment ``m``.
    beta_2 : float, default 0.99
        Rate of the second moment ``v``.
    tau : float, default 1e-3
        Adaptivity ``tau > 0``; ``v`` starts at ``tau ** 2``.
    weighted : bool, default True
        Weight each client by its ``num_examples``.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "fedyogi"
    default_learning_rate: ClassVar[float] = 0.01

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v - (1.0 - float(self.beta_2)) * delta_sq * np.sign(v - delta_sq)


class _RobustStrategy(Strategy):
    """A Byzantine-robust strategy: needs every individual update, ignores num_examples.

    Each client counts once: weighting by the self-reported ``num_examples`` would let a
    single Byzantine client claim an arbitrary share of the result.
    """

    sum_based: ClassVar[bool] = False

    def aggregate(
        self,
        server_round: int,
        global_parameters: Parameters,
        updates: Sequence[ClientUpdate],
        rng: np.random.Generator,
    ) -> Parameters:
        """The robust combination of the clients' parameters (``num_examples`` ignored)."""
        _check_rng(rng)
        _, checked = self._client_parameters(global_parameters, updates)
        return self._combine(checked)

    @abstractmethod
    def _combine(self, checked: list[list[np.ndarray]]) -> Parameters:
        """The aggregate of validated client parameters."""


class CoordinateMedian(_RobustStrategy):
    """The coordinate-wise median of the client parameters (:func:`coordinate_median`).

    Parameters
    ----------
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "median"

    def _combine(self, checked: list[list[np.ndarray]]) -> Parameters:
        return coordinate_median(checked)


class TrimmedMean(_RobustStrategy):
    """The coordinate-wise trimmed mean of the client parameters (:func:`trimmed_mean`).

    Parameters
    ----------
    beta : float, default 0.1
        Fraction trimmed at each end, ``0 <= beta < 0.5``.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "trimmed-mean"

    def __init__(
        self,
        *,
        beta: float = 0.1,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        super().__init__(
            fraction_fit=fraction_fit, min_fit_clients=min_fit_clients, evaluate_fn=evaluate_fn
        )
        _check_real(beta, "beta", low=0.0, high=0.5, high_open=True)
        self.beta = beta

    def _combine(self, checked: list[list[np.ndarray]]) -> Parameters:
        return trimmed_mean(checked, self.beta)


class Krum(_RobustStrategy):
    """Krum / multi-Krum (Blanchard et al. 2017): average the ``m`` lowest-scored updates.

    Each round needs more than ``2 * n_byzantine + 2`` updates (:func:`krum_scores`); set
    ``min_fit_clients`` accordingly.

    Parameters
    ----------
    n_byzantine : int, default 1
        The number ``f`` of Byzantine clients tolerated.
    m : int, default 1
        How many updates to average; 1 is Krum, more is multi-Krum.
    fraction_fit, min_fit_clients, evaluate_fn
        See :class:`Strategy`.
    """

    name: ClassVar[str] = "krum"

    def __init__(
        self,
        *,
        n_byzantine: int = 1,
        m: int = 1,
        fraction_fit: float = 1.0,
        min_fit_clients: int = 1,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        super().__init__(
            fraction_fit=fraction_fit, min_fit_clients=min_fit_clients, evaluate_fn=evaluate_fn
        )
        _check_int(n_byzantine, "n_byzantine", 0)
        _check_int(m, "m", 1)
        self.n_byzantine = n_byzantine
        self.m = m

    def _combine(self, checked: list[list[np.ndarray]]) -> Parameters:
        return multi_krum(checked, self.n_byzantine, self.m)


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


class AggregationStrategy(StrEnum):
    """The strategies by name (the seed API), for configuration files and the CLI."""

    FED_AVG = "fedavg"
    FED_PROX = "fedprox"
    FED_ADAM = "fedadam"
    FED_YOGI = "fedyogi"
    FED_ADAGRAD = "fedadagrad"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    KRUM = "krum"


_STRATEGY_CLASSES: dict[AggregationStrategy, type[Strategy]] = {
    AggregationStrategy.FED_AVG: FedAvg,
    AggregationStrategy.FED_PROX: FedProx,
    AggregationStrategy.FED_ADAM: FedAdam,
    AggregationStrategy.FED_YOGI: FedYogi,
    AggregationStrategy.FED_ADAGRAD: FedAdagrad,
    AggregationStrategy.MEDIAN: CoordinateMedian,
    AggregationStrategy.TRIMMED_MEAN: TrimmedMean,
    AggregationStrategy.KRUM: Krum,
}


def make_strategy(kind: AggregationStrategy | str | Strategy, **kwargs: Any) -> Strategy:
    """A strategy from its name (or enum member), configured with ``kwargs``.

    Parameters
    ----------
    kind : AggregationStrategy, str or Strategy
        A name such as ``"fedavg"`` or ``"trimmed-mean"`` (case-insensitive; the enum member
        names such as ``"FED_AVG"`` work too), an :class:`AggregationStrategy`, or a ready
        :class:`Strategy`, which is returned unchanged.
    **kwargs
        The strategy's keyword arguments (e.g. ``beta=0.2`` for ``"trimmed-mean"``).

    Returns
    -------
    Strategy

    Raises
    ------
    InvalidInputError
        Unknown name (the message lists the valid ones), options that the strategy does not
        take, or options given together with a ready Strategy.

    Examples
    --------
    >>> make_strategy("krum", n_byzantine=2, m=3)
    Krum(n_byzantine=2, m=3, fraction_fit=1.0, min_fit_clients=1)
    """
    if isinstance(kind, Strategy):
        if kwargs:
            raise InvalidInputError(
                f"options {sorted(kwargs)} cannot be applied to a ready {type(kind).__name__}; "
                "pass them to its constructor instead"
            )
        return kind
    member: AggregationStrategy | None = None
    if isinstance(kind, AggregationStrategy):
        member = kind
    elif isinstance(kind, str):
        text = kind.strip()
        by_value = {m.value: m for m in AggregationStrategy}
        member = by_value.get(text.lower()) or AggregationStrategy.__members__.get(text.upper())
    if member is None:
        valid = ", ".join(repr(m.value) for m in AggregationStrategy)
        raise InvalidInputError(f"unknown aggregation strategy {kind!r}; valid names: {valid}")
    cls = _STRATEGY_CLASSES[member]
    accepted = {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InvalidInputError(
            f"{cls.__name__} ({member.value!r}) does not take {unknown}; "
            f"its options are {sorted(accepted)}"
        )
    return cls(**kwargs)
