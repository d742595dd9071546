"""Differential privacy for federated training: mechanisms, clipping, DP-SGD, DP-FedAvg, accounting.

The module has five layers, each usable on its own:

* **Mechanisms.** :func:`laplace_scale` and :func:`gaussian_sigma` calibrate noise to an
  ``(epsilon, delta)`` target and a sensitivity; :class:`LaplaceMechanism` and
  :class:`GaussianMechanism` add that noise. The Gaussian calibration is the *analytic* Gaussian
  mechanism of Balle & Wang (2018): exact, and valid for every ``epsilon > 0`` (the classic
  ``sqrt(2 ln(1.25/delta)) / epsilon`` bound is only valid for ``epsilon < 1`` and is loose).
* **Clipping.** :func:`l2_norm`, :func:`clip_parameters` (one model update, a list of arrays),
  :func:`clip_rows` (per-example gradients, one row each) and :func:`poisson_sample`.
* **DP-SGD** (Abadi et al., 2016) on a client: :func:`noisy_gradient_sum` clips every
  per-example gradient and adds Gaussian noise to their sum.
* **Client-level DP-FedAvg** (McMahan et al., 2018) on the server: :func:`dp_fedavg_aggregate`
  clips every client's update, sums, adds noise and divides by a *fixed* expected number of
  clients; :class:`AdaptiveClipping` (Andrew et al., 2021) tracks a quantile of the update norms.
* **Accounting.** :class:`PrivacyAccountant` composes the rounds with Google's dp-accounting
  library (RDP or PLD) and keeps the epsilon after each round; :class:`PrivacyBudget` refuses a
  round that would exceed a target epsilon (:class:`~fedge.errors.PrivacyBudgetExhausted`);
  :func:`noise_multiplier_for` finds the smallest noise that meets a target.

Every random function takes an ``rng: numpy.random.Generator``; nothing uses numpy's global
random state. No function writes into its inputs. The accounting needs the optional
``dp-accounting`` dependency (``pip install 'fedge[federated]'``), imported only when used.

Conventions shared by the noise helpers and the accountant: a *noise multiplier* ``z`` is the
ratio of the Gaussian noise's standard deviation to the L2 sensitivity (the clip norm ``C``), so
the noise added to a sum of clipped contributions has standard deviation ``z * C``. The
neighbouring relation is add-or-remove-one (one example for DP-SGD, one client for DP-FedAvg).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from fedge.errors import InvalidInputError, PrivacyBudgetExhausted, UnsupportedOperationError
from fedge.federated.messages import Parameters

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "AccountingMethod",
    "AdaptiveClipping",
    "GaussianMechanism",
    "LaplaceMechanism",
    "PrivacyAccountant",
    "PrivacyBudget",
    "clip_parameters",
    "clip_rows",
    "dp_fedavg_aggregate",
    "gaussian_sigma",
    "l2_norm",
    "laplace_scale",
    "noise_multiplier_for",
    "noisy_gradient_sum",
    "poisson_sample",
]

AccountingMethod = Literal["rdp", "pld"]

_INSTALL_HINT = "pip install 'fedge[federated]'"


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInputError(f"{name} must be a real number, got {value!r}.")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidInputError(f"{name} must be finite, got {value!r}.")
    return out


def _positive(name: str, value: Any) -> float:
    out = _real(name, value)
    if out <= 0:
        raise InvalidInputError(f"{name} must be > 0, got {value!r}.")
    return out


def _non_negative(name: str, value: Any) -> float:
    out = _real(name, value)
    if out < 0:
        raise InvalidInputError(f"{name} must be >= 0, got {value!r}.")
    return out


def _delta(value: Any) -> float:
    out = _real("delta", value)
    if not 0 < out < 1:
        raise InvalidInputError(
            f"delta must be in the open interval (0, 1), got {value!r}; "
            "a common choice is smaller than 1 / (number of records)."
        )
    return out


def _rate(name: str, value: Any, *, allow_zero: bool) -> float:
    out = _real(name, value)
    low_ok = out >= 0 if allow_zero else out > 0
    if not (low_ok and out <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise InvalidInputError(f"{name} must be in {interval}, got {value!r}.")
    return out


def _count(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value!r}.")
    return int(value)


def _epsilon_value(value: Any) -> float:
    """An epsilon read from a checkpoint: >= 0, possibly infinite (a noiseless round)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInputError(f"an epsilon must be a real number, got {value!r}.")
    out = float(value)
    if math.isnan(out) or out < 0:
        raise InvalidInputError(f"an epsilon must be >= 0, got {value!r}.")
    return out


def _method(value: Any) -> AccountingMethod:
    if value not in ("rdp", "pld"):
        raise InvalidInputError(
            f"method must be 'rdp' (Renyi DP) or 'pld' (privacy loss distributions), got {value!r}."
        )
    return value


def _finite_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric, got {type(value).__name__}.") from exc
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name} contains NaN or Inf; remove or repair it first.")
    return arr


# --------------------------------------------------------------------------------------------
# mechanisms
# --------------------------------------------------------------------------------------------


def laplace_scale(*, epsilon: float, sensitivity: float) -> float:
    """Scale ``b`` of the Laplace mechanism that is ``epsilon``-DP.

    Parameters
    ----------
    epsilon : float
        Target epsilon, > 0.
    sensitivity : float
        L1 sensitivity of the released value, > 0.

    Returns
    -------
    float
        ``sensitivity / epsilon``: the noise density is ``exp(-|x| / b) / (2 b)``.
    """
    eps = _positive("epsilon", epsilon)
    return _positive("sensitivity", sensitivity) / eps


def _analytic_gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    """The exact delta of the Gaussian mechanism (Balle & Wang 2018, Theorem 8)."""
    from scipy.special import log_ndtr, ndtr

    ratio = sensitivity / (2.0 * sigma)
    shift = epsilon * sigma / sensitivity
    return float(ndtr(ratio - shift) - math.exp(epsilon + float(log_ndtr(-ratio - shift))))


def gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest noise standard deviation making the Gaussian mechanism ``(epsilon, delta)``-DP.

    Uses the analytic Gaussian mechanism of Balle & Wang (2018): ``sigma`` is the smallest value
    (to a relative precision of ``1e-12``, rounded up) such that

    ``Phi(D / (2 sigma) - epsilon sigma / D) - exp(epsilon) Phi(-D / (2 sigma) - epsilon sigma / D)
    <= delta``

    with ``D`` the L2 sensitivity and ``Phi`` the standard normal CDF. Unlike the classic bound
    ``D sqrt(2 ln(1.25 / delta)) / epsilon`` this is exact and holds for every ``epsilon > 0``.

    Parameters
    ----------
    epsilon : float
        Target epsilon, > 0.
    delta : float
        Target delta, in (0, 1).
    sensitivity : float
        L2 sensitivity of the released value, > 0.

    Returns
    -------
    float
        The noise standard deviation; the returned value always satisfies the condition.
    """
    eps = _positive("epsilon", epsilon)
    dlt = _delta(delta)
    sens = _positive("sensitivity", sensitivity)

    def ok(sigma: float) -> bool:
        return _analytic_gaussian_delta(sigma, eps, sens) <= dlt

    hi = sens
    for _ in range(2100):
        if ok(hi):
            break
        hi *= 2.0
    else:  # pragma: no cover - delta(sigma) -> 0 as sigma grows, so this never runs
        raise InvalidInputError(f"no finite sigma reaches delta={delta}.")
    lo = hi
    for _ in range(2100):
        if not ok(lo):
            break
        lo /= 2.0
    else:  # pragma: no cover - delta(sigma) -> 1 > delta as sigma -> 0
        raise InvalidInputError(f"no positive sigma violates delta={delta}.")
    # Invariant: ok(hi) and not ok(lo).
    for _ in range(200):
        if hi - lo <= 1e-12 * hi:
            break
        mid = 0.5 * (lo + hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True, kw_only=True)
class LaplaceMechanism:
    """The Laplace mechanism: ``epsilon``-DP for a value of L1 ``sensitivity``.

    Parameters
    ----------
    epsilon : float
        Target epsilon, > 0.
    sensitivity : float
        L1 sensitivity, > 0.
    """

    epsilon: float
    sensitivity: float

    def __post_init__(self) -> None:
        _positive("epsilon", self.epsilon)
        _positive("sensitivity", self.sensitivity)

    @property
    def scale(self) -> float:
        """The Laplace scale ``b = sensitivity / epsilon``."""
        return laplace_scale(epsilon=self.epsilon, sensitivity=self.sensitivity)

    def randomize(self, value: np.ndarray | float, *, rng: np.random.Generator) -> np.ndarray:
        """``value`` plus independent Laplace(0, scale) noise on each entry, as a new array."""
        arr = _finite_array("value", value)
        return np.asarray(arr + rng.laplace(0.0, self.scale, size=arr.shape))


@dataclass(frozen=True, kw_only=True)
class GaussianMechanism:
    """The analytic Gaussian mechanism: ``(epsilon, delta)``-DP for L2 ``sensitivity``.

    Parameters
    ----------
    epsilon : float
        Target epsilon, > 0 (any value: the calibration is exact, see :func:`gaussian_sigma`).
    delta : float
        Target delta, in (0, 1).
    sensitivity : float
        L2 sensitivity, > 0.
    """

    epsilon: float
    delta: float
    sensitivity: float

    def __post_init__(self) -> None:
        _positive("epsilon", self.epsilon)
        _delta(self.delta)
        _positive("sensitivity", self.sensitivity)

    @cached_property
    def sigma(self) -> float:
        """Standard deviation of the noise (:func:`gaussian_sigma`)."""
        return gaussian_sigma(epsilon=self.epsilon, delta=self.delta, sensitivity=self.sensitivity)

    def randomize(self, value: np.ndarray | float, *, rng: np.random.Generator) -> np.ndarray:
        """``value`` plus independent N(0, sigma^2) noise on each entry, as a new array."""
        arr = _finite_array("value", value)
        return np.asarray(arr + rng.normal(0.0, self.sigma, size=arr.shape))


# --------------------------------------------------------------------------------------------
# clipping and sampling
# --------------------------------------------------------------------------------------------


def _scaled_norm(flat: np.ndarray) -> tuple[float, float]:
    """``(m, n)`` with ``m = max|x|`` and ``n = ||x / m||`` (``||x|| = m n`` without overflow)."""
    if flat.size == 0:
        return 0.0, 0.0
    m = float(np.max(np.abs(flat)))
    if m == 0.0:
        return 0.0, 0.0
    scaled = flat / m
    return m, float(np.sqrt(np.dot(scaled, scaled)))


def _flat_parameters(name: str, parameters: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(parameters, np.ndarray) or not isinstance(parameters, Sequence):
        raise InvalidInputError(
            f"{name} must be a list of numpy arrays (fedge Parameters), "
            f"got {type(parameters).__name__}."
        )
    return [_finite_array(f"{name}[{i}]", p) for i, p in enumerate(parameters)]


def l2_norm(parameters: Sequence[np.ndarray]) -> float:
    """Global L2 norm of all entries of a list of arrays (computed without overflow).

    Parameters
    ----------
    parameters : list of numpy.ndarray
        A fedge ``Parameters`` list (e.g. a model update); entries must be finite.

    Returns
    -------
    float
        ``sqrt(sum of squares)`` over every array; ``0.0`` for an empty list.
    """
    arrays = _flat_parameters("parameters", parameters)
    if not arrays:
        return 0.0
    m, n = _scaled_norm(np.concatenate([a.ravel() for a in arrays]))
    with np.errstate(over="ignore"):
        return float(np.float64(m) * np.float64(n))


def clip_parameters(
    parameters: Sequence[np.ndarray], *, clip_norm: float
) -> tuple[Parameters, float]:
    """Scale a list of arrays so that its global L2 norm is at most ``clip_norm``.

    Parameters
    ----------
    parameters : list of numpy.ndarray
        A fedge ``Parameters`` list, typically a model update; never modified.
    clip_norm : float
        The bound ``C`` > 0.

    Returns
    -------
    clipped : list of numpy.ndarray
        New float64 arrays: ``parameters * min(1, C / ||parameters||)``. A zero update is
        returned as zeros (no division by zero).
    norm : float
        The norm of ``parameters`` before clipping.
    """
    c = _positive("clip_norm", clip_norm)
    arrays = _flat_parameters("parameters", parameters)
    if not arrays:
        return [], 0.0
    m, n = _scaled_norm(np.concatenate([a.ravel() for a in arrays]))
    with np.errstate(over="ignore"):
        norm = float(np.float64(m) * np.float64(n))
    if norm <= c:
        return [a.copy() for a in arrays], norm
    # (a / m) * (C / n): n >= 1 here, and nothing overflows even for huge entries.
    factor = c / n
    return [(a / m) * factor for a in arrays], norm


def clip_rows(grads: np.ndarray, *, clip_norm: float) -> np.ndarray:
    """Per-example clipping: scale every row of ``grads`` to an L2 norm of at most ``clip_norm``.

    Parameters
    ----------
    grads : numpy.ndarray of shape (B, P)
        One flattened gradient per example; never modified.
    clip_norm : float
        The bound ``C`` > 0.

    Returns
    -------
    numpy.ndarray of shape (B, P)
        A new float64 array whose row ``i`` is ``grads[i] * min(1, C / ||grads[i]||)``; every row
        norm is ``<= C`` up to one rounding (``<= C * (1 + 1e-12)``). Zero rows stay zero.
    """
    c = _positive("clip_norm", clip_norm)
    X = _finite_array("grads", grads)
    if X.ndim != 2:
        raise InvalidInputError(
            f"grads must be a 2-D array (one row per example), got shape {X.shape}."
        )
    if X.size == 0:
        return X.copy()
    m = np.max(np.abs(X), axis=1)
    safe_m = np.where(m > 0, m, 1.0)
    S = X / safe_m[:, None]
    ns = np.sqrt(np.einsum("ij,ij->i", S, S))
    with np.errstate(over="ignore"):
        norms = m * ns
    clip = norms > c
    factor = c / np.where(clip, ns, 1.0)  # ns >= 1 wherever clip holds
    return np.where(clip[:, None], S * factor[:, None], X)


def poisson_sample(n: int, *, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson sampling: each of ``n`` rows is kept independently with probability ``rate``.

    Parameters
    ----------
    n : int
        Number of rows, >= 0.
    rate : float
        Sampling probability ``q`` in [0, 1].
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices of the sampled rows (possibly empty: the batch size is random).
    """
    count = _count("n", n, minimum=0)
    q = _rate("rate", rate, allow_zero=True)
    return np.flatnonzero(rng.random(count) < q).astype(np.int64)


def noisy_gradient_sum(
    per_example_grads: np.ndarray,
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The DP-SGD release: sum of per-example clipped gradients plus Gaussian noise.

    Computes ``sum_i clip(g_i, C) + N(0, (z C)^2 I)``. Following Abadi et al. (2016) with Poisson
    sampling (each example joins the batch with probability ``q``, see :func:`poisson_sample`),
    the caller divides this sum by the *expected* batch size ``q * N``, not by the drawn batch
    size, and records ``(noise_multiplier=z, sampling_rate=q, steps=1)`` per step with
    :meth:`PrivacyAccountant.record`.

    Parameters
    ----------
    per_example_grads : numpy.ndarray of shape (B, P)
        One flattened gradient per sampled example; ``B`` may be 0 (an empty Poisson batch still
        releases noise). Never modified.
    clip_norm : float
        Per-example L2 bound ``C`` > 0.
    noise_multiplier : float
        ``z`` >= 0; the noise standard deviation is ``z * C``.
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    numpy.ndarray of shape (P,)
        The noisy sum, float64.
    """
    z = _non_negative("noise_multiplier", noise_multiplier)
    clipped = clip_rows(per_example_grads, clip_norm=clip_norm)
    total = clipped.sum(axis=0)
    if z > 0:
        total = total + rng.normal(0.0, z * float(clip_norm), size=total.shape)
    return total


# --------------------------------------------------------------------------------------------
# client-level DP-FedAvg
# --------------------------------------------------------------------------------------------


def dp_fedavg_aggregate(
    global_parameters: Sequence[np.ndarray],
    client_parameters: Sequence[Sequence[np.ndarray]],
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: int,
    rng: np.random.Generator,
) -> tuple[Parameters, dict[str, Any]]:
    """Client-level DP-FedAvg (McMahan et al., 2018): clip, sum, add noise, fixed denominator.

    Each client's update ``delta_k = client_k - global`` is clipped to L2 norm ``C``; the clipped
    updates are summed, ``N(0, (z C)^2)`` noise is added to every coordinate of the sum, and the
    result is divided by ``expected_clients`` (``m``) and added to the global model. Because the
    denominator is fixed, adding or removing one client changes the average by at most ``C / m``
    whoever drops out, so each round is a Gaussian mechanism with noise multiplier ``z``:
    record it with ``PrivacyAccountant.record(z, sampling_rate=m / population)`` (Poisson
    client sampling) or ``sampling_rate=1.0`` when every client takes part. Clients are weighted
    uniformly; weighting by example counts would break this sensitivity bound.

    Parameters
    ----------
    global_parameters : list of numpy.ndarray
        The current global model; never modified.
    client_parameters : sequence of lists of numpy.ndarray
        Each participating client's *full* parameters after local training (same shapes as
        ``global_parameters``); may be empty (the round then releases noise only).
    clip_norm : float
        The bound ``C`` > 0 on each client's update norm.
    noise_multiplier : float
        ``z`` >= 0. With :class:`AdaptiveClipping` pass its
        :meth:`AdaptiveClipping.effective_noise_multiplier` here and account the nominal ``z``.
    expected_clients : int
        ``m`` >= 1, the expected number of participants (the fixed denominator).
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    new_parameters : list of numpy.ndarray
        ``global + (sum_k clip(delta_k) + noise) / m``, new float64 arrays.
    diagnostics : dict
        ``num_clients``, ``update_norms`` (list of pre-clipping norms, e.g. for
        :meth:`AdaptiveClipping.update`), ``mean_update_norm``, ``max_update_norm``,
        ``fraction_clipped`` (share of norms > C), ``clip_norm``, ``noise_multiplier`` and
        ``noise_std`` (standard deviation of the noise on the averaged update, ``z C / m``).
    """
    c = _positive("clip_norm", clip_norm)
    z = _non_negative("noise_multiplier", noise_multiplier)
    m = _count("expected_clients", expected_clients, minimum=1)
    base = _flat_parameters("global_parameters", global_parameters)
    shapes = [a.shape for a in base]
    if isinstance(client_parameters, np.ndarray) or not isinstance(client_parameters, Sequence):
        raise InvalidInputError(
            "client_parameters must be a sequence of Parameters lists, "
            f"got {type(client_parameters).__name__}."
        )

    total = [np.zeros(s) for s in shapes]
    norms: list[float] = []
    for k, params in enumerate(client_parameters):
        arrays = _flat_parameters(f"client_parameters[{k}]", params)
        got = [a.shape for a in arrays]
        if got != shapes:
            raise InvalidInputError(
                f"client {k} sent arrays of shapes {got}, but the global model has {shapes}; "
                "every client must train the same model."
            )
        delta = [a - g for a, g in zip(arrays, base, strict=True)]
        clipped, norm = clip_parameters(delta, clip_norm=c)
        norms.append(norm)
        total = [t + d for t, d in zip(total, clipped, strict=True)]

    if z > 0:
        total = [t + rng.normal(0.0, z * c, size=t.shape) for t in total]
    new = [g + t / m for g, t in zip(base, total, strict=True)]

    norms_arr = np.asarray(norms, dtype=np.float64)
    diagnostics: dict[str, Any] = {
        "num_clients": len(norms),
        "update_norms": [float(v) for v in norms],
        "mean_update_norm": float(norms_arr.mean()) if norms else 0.0,
        "max_update_norm": float(norms_arr.max()) if norms else 0.0,
        "fraction_clipped": float(np.mean(norms_arr > c)) if norms else 0.0,
        "clip_norm": c,
        "noise_multiplier": z,
        "noise_std": z * c / m,
    }
    return new, diagnostics


@dataclass(kw_only=True)
class AdaptiveClipping:
    """Quantile-based adaptive clip norm for DP-FedAvg (Andrew et al., 2021).

    After each round the clip norm moves geometrically toward the ``target_quantile`` of the
    clients' update norms::

        b = (#{k : norm_k <= C} + N(0, sigma_b^2)) / n
        C <- C * exp(-learning_rate * (b - target_quantile))

    where ``sigma_b = count_noise_multiplier`` privatises the count (sensitivity 1). Releasing
    that count costs privacy too; Andrew et al. fold it into the update noise: to stay at a
    nominal noise multiplier ``z`` for accounting, the updates are noised with
    :meth:`effective_noise_multiplier` ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``. The paper
    suggests ``sigma_b = expected_clients / 20``.

    Parameters
    ----------
    clip_norm : float
        The current clip norm (the initial value at construction), > 0; updated in place by
        :meth:`update`.
    target_quantile : float
        ``gamma`` in (0, 1): the share of updates that should end up unclipped.
    learning_rate : float
        ``eta`` >= 0, step of the geometric update.
    count_noise_multiplier : float
        ``sigma_b`` >= 0, noise on the unclipped count. ``0`` makes the quantile estimate
        non-private (fine for tests; :meth:`effective_noise_multiplier` then refuses).
    """

    clip_norm: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_multiplier: float = 0.0

    _STATE_FIELDS: ClassVar[tuple[str, ...]] = (
        "clip_norm",
        "target_quantile",
        "learning_rate",
        "count_noise_multiplier",
    )

    def __post_init__(self) -> None:
        self._validate(
            clip_norm=self.clip_norm,
            target_quantile=self.target_quantile,
            learning_rate=self.learning_rate,
            count_noise_multiplier=self.count_noise_multiplier,
        )

    @staticmethod
    def _validate(
        *,
        clip_norm: Any,
        target_quantile: Any,
        learning_rate: Any,
        count_noise_multiplier: Any,
    ) -> None:
        _positive("clip_norm", clip_norm)
        gamma = _real("target_quantile", target_quantile)
        if not 0 < gamma < 1:
            raise InvalidInputError(f"target_quantile must be in (0, 1), got {target_quantile!r}.")
        _non_negative("learning_rate", learning_rate)
        _non_negative("count_noise_multiplier", count_noise_multiplier)

    def update(
        self,
        norms: Sequence[float],
        *,
        rng: np.random.Generator,
        expected_clients: int | None = None,
    ) -> float:
        """Move the clip norm after a round and return the new value.

        Parameters
        ----------
        norms : sequence of float
            The round's pre-clipping update norms (``diagnostics["update_norms"]`` of
            :func:`dp_fedavg_aggregate`), measured against the current ``clip_norm``.
        rng : numpy.random.Generator
            Source of the count noise.
        expected_clients : int, optional
            Fixed denominator ``n`` for the unclipped fraction (as in the paper, so one client's
            bit moves ``b`` by at most ``1 / n``); defaults to ``len(norms)``.

        Returns
        -------
        float
            The new clip norm (also stored in ``self.clip_norm``). Unchanged when there are no
            norms and no ``expected_clients``.
        """
        values = _finite_array("norms", list(norms)).ravel()
        if np.any(values < 0):
            raise InvalidInputError("norms must be >= 0.")
        n = (
            len(values)
            if expected_clients is None
            else _count("expected_clients", expected_clients, minimum=1)
        )
        if n == 0:
            return float(self.clip_norm)
        count = float(np.sum(values <= self.clip_norm))
        sigma_b = float(self.count_noise_multiplier)
        if sigma_b > 0:
            count += float(rng.normal(0.0, sigma_b))
        b = count / n
        self.clip_norm = float(
            self.clip_norm * math.exp(-float(self.learning_rate) * (b - self.target_quantile))
        )
        return self.clip_norm

    def effective_noise_multiplier(self, noise_multiplier: float) -> float:
        """Noise multiplier for the updates so that the round, count included, costs ``z``.

        Parameters
        ----------
        noise_multiplier : float
            The nominal ``z`` > 0 used for accounting.

        Returns
        -------
        float
            ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` (Andrew et al., 2021, Theorem 1), >= z.

        Raises
        ------
        InvalidInputError
            When ``sigma_b <= z / 2``: the count noise alone would spend the whole budget.
        """
        z = _positive("noise_multiplier", noise_multiplier)
        sigma_b = float(self.count_noise_multiplier)
        if sigma_b <= z / 2:
            raise InvalidInputError(
                f"count_noise_multiplier={sigma_b} is too small for noise_multiplier={z}: "
                f"it must exceed z / 2 = {z / 2}. Raise it (Andrew et al. suggest "
                "expected_clients / 20) or lower the noise multiplier."
            )
        return float((z**-2 - (2.0 * sigma_b) ** -2) ** -0.5)

    def state_dict(self) -> dict[str, float]:
        """The full state as a JSON-serialisable dict (see :meth:`load_state_dict`)."""
        return {name: float(getattr(self, name)) for name in self._STATE_FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        missing = [name for name in self._STATE_FIELDS if name not in state]
        if missing:
            raise InvalidInputError(f"adaptive clipping state is missing {missing}.")
        values = {name: state[name] for name in self._STATE_FIELDS}
        self._validate(**values)
        for name, value in values.items():
            setattr(self, name, float(value))


# --------------------------------------------------------------------------------------------
# accounting (dp-accounting)
# --------------------------------------------------------------------------------------------


def _drop_unconverged_order_notes(record: logging.LogRecord) -> bool:
    # dp-accounting's RDP accountant logs a warning for every Renyi order whose series does
    # not converge and then simply leaves that order out of the minimum: the epsilon stays
    # valid, but hundreds of these lines per calibration bury progress bars and results.
    return "failed to converge" not in record.getMessage()


def _import_dp_accounting() -> ModuleType:
    try:
        import dp_accounting
    except ImportError as exc:
        raise UnsupportedOperationError(
            "privacy accounting needs Google's dp-accounting library, which is not installed: "
            f"{_INSTALL_HINT}"
        ) from exc
    absl_logger = logging.getLogger("absl")
    if _drop_unconverged_order_notes not in absl_logger.filters:
        absl_logger.addFilter(_drop_unconverged_order_notes)
    return dp_accounting


# An accounting event: (kind, parameter, sampling_rate, steps): kind "gaussian" or "laplace"
# with the noise multiplier as parameter, or "zcdp" with rho (a rho-zCDP mechanism, e.g. the
# distributed discrete Gaussian of secure aggregation).
_Event = tuple[str, float, float, int]
_KINDS = ("gaussian", "laplace", "zcdp")


def _make_accountant(method: AccountingMethod, value_discretization_interval: float) -> Any:
    dpa = _import_dp_accounting()
    if method == "rdp":
        return dpa.rdp.RdpAccountant()
    return dpa.pld.PLDAccountant(value_discretization_interval=value_discretization_interval)


def _dp_event(kind: str, noise_multiplier: float, sampling_rate: float) -> Any:
    dpa = _import_dp_accounting()
    if kind == "zcdp":
        return dpa.ZCDpEvent(noise_multiplier)  # the parameter is rho
    inner = (
        dpa.GaussianDpEvent(noise_multiplier)
        if kind == "gaussian"
        else dpa.LaplaceDpEvent(noise_multiplier)
    )
    return inner if sampling_rate >= 1.0 else dpa.PoissonSampledDpEvent(sampling_rate, inner)


def _epsilon_of(
    events: Sequence[_Event],
    *,
    method: AccountingMethod,
    delta: float,
    value_discretization_interval: float,
) -> float:
    """Epsilon at ``delta`` of the composition of ``events``.

    Identical events are merged into one self-composition and put in a canonical order
    (composition is commutative), so the result does not depend on how the steps were split
    into calls, and a server's ``check_round`` followed by ``record`` computes it once (cache).
    """
    if not events:
        return 0.0
    merged: dict[tuple[str, float, float], int] = {}
    for kind, z, q, steps in events:
        merged[(kind, z, q)] = merged.get((kind, z, q), 0) + steps
    key = tuple(sorted((kind, z, q, steps) for (kind, z, q), steps in merged.items()))
    return _epsilon_cached(key, method, delta, value_discretization_interval)


@lru_cache(maxsize=256)
def _epsilon_cached(
    events: tuple[_Event, ...],
    method: AccountingMethod,
    delta: float,
    value_discretization_interval: float,
) -> float:
    accountant = _make_accountant(method, value_discretization_interval)
    for kind, z, q, steps in events:
        accountant.compose(_dp_event(kind, z, q), steps)
    return float(accountant.get_epsilon(delta))


class PrivacyAccountant:
    """Tracks the privacy spent by a training run, with Google's dp-accounting library.

    Each :meth:`record` adds a Poisson-sampled Gaussian mechanism composed ``steps`` times (one
    DP-FedAvg round: ``steps=1`` and the client sampling rate; one client's DP-SGD epoch: the
    per-example sampling rate and the number of steps). The accountant keeps the recorded events
    as plain tuples ``(kind, noise_multiplier, sampling_rate, steps)`` and recomputes epsilon from
    them, so :meth:`state_dict` / :meth:`load_state_dict` checkpoint it exactly; identical events
    are merged into one self-composition before accounting (composition is commutative), which
    keeps PLD fast over many rounds.

    Parameters
    ----------
    method : {"rdp", "pld"}
        ``"rdp"``: Renyi DP (fast, slightly loose). ``"pld"``: privacy loss distributions
        (tighter, ~10x slower).
    delta : float
        The delta at which epsilon is reported, in (0, 1).
    value_discretization_interval : float
        PLD only: the discretisation of the privacy loss (smaller is tighter and slower).
    """

    def __init__(
        self,
        method: AccountingMethod = "rdp",
        *,
        delta: float,
        value_discretization_interval: float = 1e-3,
    ) -> None:
        self._method: AccountingMethod = _method(method)
        self._delta = _delta(delta)
        self._vdi = _positive("value_discretization_interval", value_discretization_interval)
        self._events: list[_Event] = []
        self._history: list[float] = []

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(method={self._method!r}, delta={self._delta!r}, "
            f"rounds={len(self._events)}, epsilon={self.epsilon():.6g})"
        )

    @property
    def method(self) -> AccountingMethod:
        """``"rdp"`` or ``"pld"``."""
        return self._method

    @property
    def delta(self) -> float:
        """The delta at which epsilon is reported."""
        return self._delta

    @property
    def events(self) -> list[_Event]:
        """The recorded events, ``(kind, noise_multiplier, sampling_rate, steps)``, in order."""
        return list(self._events)

    @property
    def history(self) -> list[float]:
        """Epsilon after each recorded call (per-round epsilon), in order."""
        return list(self._history)

    @staticmethod
    def _event(kind: str, noise_multiplier: Any, sampling_rate: Any, steps: Any) -> _Event:
        return (
            kind,
            _non_negative("noise_multiplier", noise_multiplier),
            _rate("sampling_rate", sampling_rate, allow_zero=False),
            _count("steps", steps, minimum=1),
        )

    def _compute(self, events: Sequence[_Event]) -> float:
        return _epsilon_of(
            events,
            method=self._method,
            delta=self._delta,
            value_discretization_interval=self._vdi,
        )

    def _append(self, event: _Event) -> float:
        eps = self._compute([*self._events, event])
        self._events.append(event)
        self._history.append(eps)
        return eps

    def record(
        self, noise_multiplier: float, *, sampling_rate: float = 1.0, steps: int = 1
    ) -> float:
        """Record ``steps`` applications of a (Poisson-sampled) Gaussian mechanism.

        Parameters
        ----------
        noise_multiplier : float
            ``z`` >= 0, noise standard deviation over L2 sensitivity (0 means no privacy:
            epsilon becomes infinite).
        sampling_rate : float
            Poisson sampling probability ``q`` in (0, 1]; ``1.0`` means no sampling.
        steps : int
            Number of compositions, >= 1.

        Returns
        -------
        float
            Epsilon spent so far, this call included (also appended to :attr:`history`).
        """
        return self._append(self._event("gaussian", noise_multiplier, sampling_rate, steps))

    def record_laplace(self, noise_multiplier: float, *, steps: int = 1) -> float:
        """Record ``steps`` applications of a Laplace mechanism (scale over L1 sensitivity, > 0)."""
        _positive("noise_multiplier", noise_multiplier)
        return self._append(self._event("laplace", noise_multiplier, 1.0, steps))

    def epsilon(self) -> float:
        """Epsilon spent so far at :attr:`delta`; ``0.0`` when nothing was recorded."""
        return self._history[-1] if self._history else 0.0

    def record_zcdp(self, rho: float, *, steps: int = 1) -> float:
        """Record ``steps`` applications of a ``rho``-zCDP mechanism (RDP accountant only:
        a rho-zCDP mechanism is (alpha, rho * alpha)-RDP at every order alpha)."""
        _positive("rho", rho)
        if self.method != "rdp":
            raise UnsupportedOperationError(
                "zCDP events are accounted with the RDP accountant; use method='rdp'"
            )
        return self._append(self._event("zcdp", rho, 1.0, steps))

    def epsilon_after_zcdp(self, rho: float, *, steps: int = 1) -> float:
        """Epsilon after ``steps`` more ``rho``-zCDP events, without recording them."""
        _positive("rho", rho)
        return self._compute([*self._events, self._event("zcdp", rho, 1.0, steps)])

    def epsilon_after(
        self, noise_multiplier: float, *, sampling_rate: float = 1.0, steps: int = 1
    ) -> float:
        """Epsilon after a :meth:`record` with these arguments, without recording anything."""
        event = self._event("gaussian", noise_multiplier, sampling_rate, steps)
        return self._compute([*self._events, event])

    def state_dict(self) -> dict[str, Any]:
        """The accountant's full state; JSON-serialisable (tuples become lists in JSON)."""
        return {
            "method": self._method,
            "delta": self._delta,
            "value_discretization_interval": self._vdi,
            "events": [tuple(e) for e in self._events],
            "history": list(self._history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict` (replaces everything recorded)."""
        try:
            method = _method(state["method"])
            delta = _delta(state["delta"])
            vdi = _positive("value_discretization_interval", state["value_discretization_interval"])
            raw_events = list(state["events"])
            history = [_epsilon_value(h) for h in state["history"]]
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"not a PrivacyAccountant state (from state_dict()): {exc!r}."
            ) from exc
        events: list[_Event] = []
        for raw in raw_events:
            if len(raw) != 4 or raw[0] not in _KINDS:
                raise InvalidInputError(
                    f"bad accounting event {raw!r}: expected (kind, noise_multiplier, "
                    f"sampling_rate, steps) with kind in {_KINDS}."
                )
            events.append(self._event(str(raw[0]), raw[1], raw[2], raw[3]))
        if len(history) != len(events):
            raise InvalidInputError(
                f"accountant state has {len(events)} events but {len(history)} history entries."
            )
        self._method, self._delta, self._vdi = method, delta, vdi
        self._events, self._history = events, [float(h) for h in history]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PrivacyAccountant:
        """A new accountant restored from :meth:`state_dict`."""
        try:
            accountant = cls(state["method"], delta=state["delta"])
        except KeyError as exc:
            raise InvalidInputError(f"not a PrivacyAccountant state: missing {exc}.") from exc
        accountant.load_state_dict(state)
        return accountant


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    """A privacy budget: the run may spend at most ``target_epsilon`` at ``delta``.

    Parameters
    ----------
    target_epsilon : float
        The largest epsilon the run may reach, > 0.
    delta : float
        The delta the budget is stated at; must equal the accountant's.
    """

    target_epsilon: float
    delta: float

    def __post_init__(self) -> None:
        _positive("target_epsilon", self.target_epsilon)
        _delta(self.delta)

    def _check_accountant(self, accountant: PrivacyAccountant) -> None:
        if not isinstance(accountant, PrivacyAccountant):
            raise InvalidInputError(
                f"accountant must be a PrivacyAccountant, got {type(accountant).__name__}."
            )
        if accountant.delta != self.delta:
            raise InvalidInputError(
                f"the budget is stated at delta={self.delta} but the accountant reports at "
                f"delta={accountant.delta}; use the same delta for both."
            )

    def spent(self, accountant: PrivacyAccountant) -> float:
        """Epsilon spent so far (``accountant.epsilon()``)."""
        self._check_accountant(accountant)
        return accountant.epsilon()

    def remaining(self, accountant: PrivacyAccountant) -> float:
        """``target_epsilon`` minus the epsilon spent, never below 0."""
        return max(0.0, float(self.target_epsilon) - self.spent(accountant))

    def check_round(
        self,
        accountant: PrivacyAccountant,
        *,
        noise_multiplier: float,
        sampling_rate: float = 1.0,
        steps: int = 1,
    ) -> float:
        """Refuse a round that would take the run past the budget.

        Call this before running a round, and :meth:`PrivacyAccountant.record` with the same
        arguments after it ran.

        Returns
        -------
        float
            The epsilon the run would reach with this round (``<= target_epsilon``).

        Raises
        ------
        PrivacyBudgetExhausted
            When that epsilon exceeds ``target_epsilon``.
        """
        self._check_accountant(accountant)
        after = accountant.epsilon_after(noise_multiplier, sampling_rate=sampling_rate, steps=steps)
        if after > self.target_epsilon:
            raise PrivacyBudgetExhausted(
                f"privacy budget exhausted: the target is epsilon={self.target_epsilon:g} at "
                f"delta={self.delta:g}, {accountant.epsilon():.4g} is spent after "
                f"{len(accountant.history)} recorded round(s), and this round "
                f"(noise_multiplier={noise_multiplier:g}, sampling_rate={sampling_rate:g}, "
                f"steps={steps}) would bring it to {after:.4g}. Stop training here, or run "
                "with a larger noise multiplier, a smaller sampling rate, fewer steps or a "
                "larger budget."
            )
        return after


@lru_cache(maxsize=1024)  # pure, and ~1 s per call: clients of equal size share one answer
def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    *,
    sampling_rate: float = 1.0,
    steps: int = 1,
    method: AccountingMethod = "rdp",
    value_discretization_interval: float = 1e-3,
) -> float:
    """Smallest noise multiplier whose run meets ``(target_epsilon, delta)``.

    Uses dp-accounting's ``calibrate_dp_mechanism`` on ``steps`` compositions of a Gaussian
    mechanism Poisson-sampled at ``sampling_rate``. The result is within ``1e-6`` of the optimum
    and on the safe side: the accountant reports ``epsilon <= target_epsilon`` for it.

    Parameters
    ----------
    target_epsilon : float
        Target epsilon, > 0.
    delta : float
        Target delta, in (0, 1).
    sampling_rate : float
        Poisson sampling probability in (0, 1]; 1.0 means no sampling.
    steps : int
        Number of compositions (rounds or SGD steps), >= 1.
    method : {"rdp", "pld"}
        Accounting method (the same as the :class:`PrivacyAccountant` that will track the run).
    value_discretization_interval : float
        PLD only, as in :class:`PrivacyAccountant`.

    Returns
    -------
    float
        The noise multiplier ``z``.
    """
    eps = _positive("target_epsilon", target_epsilon)
    dlt = _delta(delta)
    q = _rate("sampling_rate", sampling_rate, allow_zero=False)
    n = _count("steps", steps, minimum=1)
    how = _method(method)
    vdi = _positive("value_discretization_interval", value_discretization_interval)
    dpa = _import_dp_accounting()

    def epsilon_at(z: float) -> float:
        return _epsilon_of(
            [("gaussian", z, q, n)], method=how, delta=dlt, value_discretization_interval=vdi
        )

    # Bracket [lo, hi] with epsilon(lo) > target >= epsilon(hi); epsilon decreases with z.
    hi = 1.0
    for _ in range(60):
        if epsilon_at(hi) <= eps:
            break
        hi *= 2.0
    else:
        raise InvalidInputError(
            f"no noise multiplier up to {hi:g} reaches epsilon={eps} at delta={dlt}; "
            "raise the target epsilon or the delta."
        )
    lo = hi / 2.0
    for _ in range(60):
        if epsilon_at(lo) > eps:
            break
        lo /= 2.0
    else:  # pragma: no cover - tiny noise always has a huge epsilon
        return lo
    return float(
        dpa.calibrate_dp_mechanism(
            lambda: _make_accountant(how, vdi),
            lambda z: dpa.SelfComposedDpEvent(_dp_event("gaussian", z, q), n),
            eps,
            dlt,
            bracket_interval=dpa.ExplicitBracketInterval(lo, hi),
        )
    )
