"""The distributed discrete Gaussian: sampler distribution, zCDP accounting, calibration."""

import math

import numpy as np
import pytest

from fedge.errors import InvalidInputError
from fedge.federated.distributed_dp import (
    discrete_gaussian,
    distributed_rho,
    integer_sensitivities,
    noise_for_rho,
)
from fedge.federated.privacy import PrivacyAccountant


@pytest.mark.parametrize("sigma", [0.7, 3.0, 40.0])
def test_sampler_matches_the_discrete_gaussian_pmf(sigma):
    from scipy.stats import chisquare

    n = 200_000
    x = discrete_gaussian(sigma, n, np.random.default_rng(0))
    assert x.dtype == np.int64 and x.shape == (n,)
    support = np.arange(-int(6 * sigma) - 2, int(6 * sigma) + 3)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    observed = np.array([(x == k).sum() for k in support])
    keep = pmf * n >= 5  # chi-square needs expected counts >= 5
    expected = pmf[keep] / pmf[keep].sum() * observed[keep].sum()
    assert chisquare(observed[keep], expected).pvalue > 1e-3
    assert abs(x.mean()) < 5 * sigma / math.sqrt(n)


def test_sampler_is_deterministic_for_a_seed_and_refuses_bad_sigma():
    a = discrete_gaussian(5.0, 1000, np.random.default_rng(1))
    b = discrete_gaussian(5.0, 1000, np.random.default_rng(1))
    assert np.array_equal(a, b)
    with pytest.raises(InvalidInputError):
        discrete_gaussian(0.0, 10, np.random.default_rng(0))


def test_rho_matches_the_continuous_gaussian_when_tau_vanishes():
    # with sigma >> 1 the discrete sum behaves like a Gaussian of variance m s^2
    d2, d1 = 1000.0, 1e6
    rho = distributed_rho(50.0, 10, d2, d1)
    assert rho == pytest.approx(d2**2 / (2 * 10 * 50.0**2), rel=1e-9)


def test_calibration_inverts_the_bound():
    d2, d1 = integer_sensitivities(1.0, 16, 10_000)
    assert d2 == pytest.approx(2**16 + 100)
    sigma = noise_for_rho(0.05, 8, d2, d1)
    assert distributed_rho(sigma, 8, d2, d1) <= 0.05
    assert distributed_rho(sigma * 0.999, 8, d2, d1) > 0.05


def test_fewer_survivors_never_mean_less_noise_than_accounted():
    # shares sized for the threshold t: any m >= t survivors carry at least the variance
    d2, d1 = 5000.0, 1e7
    sigma_c = noise_for_rho(0.1, 6, d2, d1)
    for m in (6, 8, 10):
        assert distributed_rho(sigma_c, m, d2, d1) <= 0.1 + 1e-12


def test_accountant_turns_rho_into_epsilon():
    accountant = PrivacyAccountant("rdp", delta=1e-5)
    accountant.record_zcdp(0.02, steps=10)
    rho = 0.2
    classic = rho + 2 * math.sqrt(rho * math.log(1e5))  # Bun & Steinke's conversion
    assert 0 < accountant.epsilon() <= classic
    with pytest.raises(Exception, match="RDP"):
        PrivacyAccountant("pld", delta=1e-5).record_zcdp(0.02)
