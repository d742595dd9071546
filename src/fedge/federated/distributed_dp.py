"""Distributed differential privacy: every client adds a share of integer noise before masking.

Under secure aggregation the server sees only the sum, so no single party can add the noise
after the fact. Instead each client adds discrete Gaussian noise N_Z(0, sigma_c^2) to its
fixed-point (integer) update before masking; the sum of the ``m`` updates that survive then
carries the sum of ``m`` independent discrete Gaussians. Each share is sized for the
``threshold`` clients the protocol guarantees (``sigma_c^2 = sigma^2 / threshold``), so
however many clients drop out (down to the threshold, below which the round aborts) the sum
carries at least the calibrated variance.

Accounting (Kairouz, Liu and Steinke 2021, "The Distributed Discrete Gaussian Mechanism",
Theorem 1 and Proposition 14): the sum of ``m`` independent N_Z(0, s^2) with L2 sensitivity
``D2`` and L1 sensitivity ``D1`` satisfies (1/2) eps^2-concentrated DP with

    eps = min( sqrt(D2^2 / (m s^2) + tau / 2),  D2 / (sqrt(m) s) + tau D1 )
    tau = 10 * sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k / (k + 1)),

i.e. rho = eps^2 / 2 per round, composed in the RDP accountant as a zCDP event (a rho-zCDP
mechanism is (alpha, rho alpha)-RDP). ``tau`` is negligible once ``s >= 1``; the bound is
evaluated with ``m = threshold`` (fewer summands would mean less noise, so that is the worst
case the protocol allows).

Sensitivities in the integer domain: a client clips its real update to L2 norm ``C`` and
scales by ``2^f``; rounding each coordinate moves it by less than 1, so the integer vector
has L2 norm at most ``C 2^f + sqrt(d)`` (``D2``) and, being an integer vector, L1 norm at most
``min(D2^2, sqrt(d) D2)`` (``D1``).

The sampler is the rejection sampler of Canonne, Kamath and Steinke (2020) from a discrete
Laplace proposal, vectorised; its acceptance test uses floating point, which is standard
practice but not the exact-arithmetic version of the paper.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fedge.errors import InvalidInputError

__all__ = [
    "discrete_gaussian",
    "distributed_rho",
    "integer_sensitivities",
    "noise_for_rho",
    "rho_per_round",
    "secure_generator",
]


def secure_generator() -> np.random.Generator:
    """A generator seeded from the operating system's entropy (for noise in real runs)."""
    return np.random.default_rng(int.from_bytes(os.urandom(32), "little"))


def _discrete_laplace(scale: int, size: int, rng: np.random.Generator) -> np.ndarray:
    # The difference of two geometric variables with success probability 1 - exp(-1/scale)
    # is discrete Laplace with parameter scale.
    p = -math.expm1(-1.0 / scale)
    return rng.geometric(p, size) - rng.geometric(p, size)


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent samples of the discrete Gaussian N_Z(0, sigma^2), as int64.

    Canonne, Kamath and Steinke (2020), Algorithm 3: propose from the discrete Laplace with
    scale ``t = floor(sigma) + 1`` and accept with probability
    ``exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2))``; the expected acceptance rate is above 1/2,
    so a few vectorised passes fill any size.
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise InvalidInputError(f"sigma must be a finite number > 0, got {sigma}")
    if size < 0:
        raise InvalidInputError(f"size must be >= 0, got {size}")
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        want = max(64, int(1.3 * (size - filled)) + 16)
        y = _discrete_laplace(t, want, rng)
        accept = rng.random(want) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        kept = y[accept][: size - filled]
        out[filled : filled + kept.size] = kept
        filled += kept.size
    return out


def integer_sensitivities(clip_norm: float, scale_bits: int, dimension: int) -> tuple[float, float]:
    """(L2, L1) sensitivity of a clipped update after fixed-point scaling and rounding."""
    d2 = clip_norm * 2.0**scale_bits + math.sqrt(dimension)
    return d2, min(d2 * d2, math.sqrt(dimension) * d2)


def distributed_rho(
    sigma_client: float, n_summands: int, l2_sensitivity: float, l1_sensitivity: float
) -> float:
    """zCDP rho of the sum of ``n_summands`` N_Z(0, sigma_client^2) (Kairouz et al. 2021)."""
    if n_summands < 1:
        raise InvalidInputError(f"n_summands must be >= 1, got {n_summands}")
    s2 = sigma_client**2
    k = np.arange(1, n_summands, dtype=np.float64)
    tau = 10.0 * float(np.sum(np.exp(-2.0 * math.pi**2 * s2 * k / (k + 1.0))))
    eps = min(
        math.sqrt(l2_sensitivity**2 / (n_summands * s2) + tau / 2.0),
        l2_sensitivity / (math.sqrt(n_summands) * sigma_client) + tau * l1_sensitivity,
    )
    return eps * eps / 2.0


def noise_for_rho(
    rho: float, n_summands: int, l2_sensitivity: float, l1_sensitivity: float
) -> float:
    """The smallest per-client sigma whose sum over ``n_summands`` clients is ``rho``-zCDP."""
    if not rho > 0:
        raise InvalidInputError(f"rho must be > 0, got {rho}")
    # Without tau, rho = D2^2 / (2 m s^2); start there and bisect upwards for the tau term.
    low = l2_sensitivity / math.sqrt(2.0 * rho * n_summands)
    high = low
    while distributed_rho(high, n_summands, l2_sensitivity, l1_sensitivity) > rho:
        high *= 2.0
    if high == low:
        return low
    low = high / 2.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if distributed_rho(mid, n_summands, l2_sensitivity, l1_sensitivity) > rho:
            low = mid
        else:
            high = mid
    return high


def rho_per_round(target_epsilon: float, delta: float, rounds: int) -> float:
    """The per-round zCDP ``rho`` whose ``rounds``-fold composition spends ``target_epsilon``
    at ``delta`` (dp-accounting's RDP conversion; the largest such rho, to 1e-9 relative)."""
    from fedge.federated.privacy import PrivacyAccountant

    if not (target_epsilon > 0 and rounds >= 1):
        raise InvalidInputError("target_epsilon must be > 0 and rounds >= 1")
    accountant = PrivacyAccountant("rdp", delta=delta)

    def spent(rho: float) -> float:
        return accountant.epsilon_after_zcdp(rho, steps=rounds)

    low, high = 1e-12, 1.0
    while spent(high) < target_epsilon:
        low, high = high, high * 4.0
    for _ in range(80):
        mid = math.sqrt(low * high)
        if spent(mid) > target_epsilon:
            high = mid
        else:
            low = mid
        if high / low < 1 + 1e-9:
            break
    return low
