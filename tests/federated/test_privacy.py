"""fedge.federated.privacy: mechanisms, clipping, DP-SGD, DP-FedAvg and accounting."""

from __future__ import annotations

import itertools
import json
import math
import sys

import dp_accounting
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import log_ndtr, ndtr

from fedge.errors import InvalidInputError, PrivacyBudgetExhausted, UnsupportedOperationError
from fedge.federated.privacy import (
    AdaptiveClipping,
    GaussianMechanism,
    LaplaceMechanism,
    PrivacyAccountant,
    PrivacyBudget,
    clip_parameters,
    clip_rows,
    dp_fedavg_aggregate,
    gaussian_sigma,
    l2_norm,
    laplace_scale,
    noise_multiplier_for,
    noisy_gradient_sum,
    poisson_sample,
)

dp_event = dp_accounting.dp_event

DELTA = 1e-5


def direct_epsilon(method: str, q: float, z: float, steps: int, delta: float = DELTA) -> float:
    """Epsilon straight from dp-accounting, as its documentation composes it."""
    if method == "rdp":
        acc = dp_accounting.rdp.RdpAccountant()
    else:
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    event = dp_event.GaussianDpEvent(z)
    if q < 1:
        event = dp_event.PoissonSampledDpEvent(q, event)
    acc.compose(event, steps)
    return acc.get_epsilon(delta)


# ---------------------------------------------------------------------------- mechanisms


def exact_delta(sigma: float, eps: float, sens: float) -> float:
    a = sens / (2 * sigma) - eps * sigma / sens
    b = -sens / (2 * sigma) - eps * sigma / sens
    return float(ndtr(a) - math.exp(eps + log_ndtr(b)))


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.9, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-9])
@pytest.mark.parametrize("sens", [0.3, 1.0, 7.0])
def test_gaussian_sigma_is_the_smallest_meeting_the_exact_condition(eps, delta, sens):
    sigma = gaussian_sigma(epsilon=eps, delta=delta, sensitivity=sens)
    assert exact_delta(sigma, eps, sens) <= delta
    assert exact_delta(sigma * (1 - 1e-9), eps, sens) > delta * (1 - 1e-6)
    # dp-accounting's own analytic Gaussian calibration (sensitivity 1) agrees.
    reference = dp_accounting.get_sigma_gaussian(eps, delta)
    assert sigma == pytest.approx(sens * reference, rel=1e-8)
    if eps < 1:
        classic = sens * math.sqrt(2 * math.log(1.25 / delta)) / eps
        assert sigma < classic


def test_laplace_scale_and_mechanism():
    assert laplace_scale(epsilon=0.5, sensitivity=2.0) == 4.0
    mech = LaplaceMechanism(epsilon=0.5, sensitivity=2.0)
    assert mech.scale == 4.0
    value = np.zeros(200_000)
    out = mech.randomize(value, rng=np.random.default_rng(0))
    assert out is not value and np.all(value == 0)
    # Laplace(0, b) has standard deviation b * sqrt(2).
    assert out.std() == pytest.approx(4.0 * math.sqrt(2), rel=0.02)


def test_gaussian_mechanism_empirical_std_matches_sigma():
    mech = GaussianMechanism(epsilon=1.0, delta=1e-5, sensitivity=1.0)
    value = np.full((400, 500), 3.0)
    out = mech.randomize(value, rng=np.random.default_rng(42))
    assert out.shape == value.shape and np.all(value == 3.0)
    assert out.mean() == pytest.approx(3.0, abs=0.05)
    assert out.std() == pytest.approx(mech.sigma, rel=0.01)
    scalar = mech.randomize(1.5, rng=np.random.default_rng(1))
    assert isinstance(scalar, np.ndarray) and scalar.shape == ()
    # Same seed, same noise.
    again = mech.randomize(value, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0, "delta": 1e-5, "sensitivity": 1.0},
        {"epsilon": -1.0, "delta": 1e-5, "sensitivity": 1.0},
        {"epsilon": math.inf, "delta": 1e-5, "sensitivity": 1.0},
        {"epsilon": math.nan, "delta": 1e-5, "sensitivity": 1.0},
        {"epsilon": 1.0, "delta": 0.0, "sensitivity": 1.0},
        {"epsilon": 1.0, "delta": 1.0, "sensitivity": 1.0},
        {"epsilon": 1.0, "delta": -0.1, "sensitivity": 1.0},
        {"epsilon": 1.0, "delta": 1e-5, "sensitivity": 0.0},
        {"epsilon": 1.0, "delta": 1e-5, "sensitivity": -2.0},
        {"epsilon": 1.0, "delta": 1e-5, "sensitivity": math.inf},
        {"epsilon": "1", "delta": 1e-5, "sensitivity": 1.0},
    ],
)
def test_invalid_mechanism_parameters(kwargs):
    with pytest.raises(InvalidInputError):
        gaussian_sigma(**kwargs)
    with pytest.raises(InvalidInputError):
        GaussianMechanism(**kwargs)
    if kwargs["delta"] == 1e-5:  # the Laplace mechanism has no delta
        lap = {"epsilon": kwargs["epsilon"], "sensitivity": kwargs["sensitivity"]}
        with pytest.raises(InvalidInputError):
            laplace_scale(**lap)
        with pytest.raises(InvalidInputError):
            LaplaceMechanism(**lap)


def test_invalid_mechanism_parameter_messages_name_the_parameter():
    with pytest.raises(InvalidInputError, match="delta must be in the open interval"):
        GaussianMechanism(epsilon=1.0, delta=2.0, sensitivity=1.0)
    with pytest.raises(InvalidInputError, match="epsilon must be > 0"):
        LaplaceMechanism(epsilon=0, sensitivity=1.0)


# ---------------------------------------------------------------------------- clipping


@given(
    grads=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=64),
    ),
    clip_norm=st.floats(min_value=1e-8, max_value=1e8),
)
def test_clip_rows_norms_never_exceed_the_bound(grads, clip_norm):
    before = grads.copy()
    out = clip_rows(grads, clip_norm=clip_norm)
    np.testing.assert_array_equal(grads, before)  # input untouched
    assert out.shape == grads.shape
    assert np.all(np.isfinite(out))
    assert np.all(np.linalg.norm(out, axis=1) <= clip_norm * (1 + 1e-12))
    # Rows within the bound pass unchanged; clipped rows keep their direction.
    for row, new in zip(grads, out, strict=True):
        m = np.max(np.abs(row))
        with np.errstate(over="ignore"):
            norm = m * np.linalg.norm(row / m) if m > 0 else 0.0
        if norm <= clip_norm:
            np.testing.assert_array_equal(new, row)
        else:
            assert np.linalg.norm(new) == pytest.approx(clip_norm, rel=1e-9)
            kept = new != 0
            np.testing.assert_array_equal(np.sign(new[kept]), np.sign(row[kept]))


def test_clip_rows_examples():
    grads = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = clip_rows(grads, clip_norm=1.0)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    assert clip_rows(np.zeros((0, 3)), clip_norm=1.0).shape == (0, 3)
    with pytest.raises(InvalidInputError, match="2-D"):
        clip_rows(np.ones(3), clip_norm=1.0)
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        clip_rows(np.array([[np.nan, 1.0]]), clip_norm=1.0)


def test_clip_parameters_scales_the_global_norm():
    params = [np.array([[3.0, 0.0]]), np.array([4.0])]
    assert l2_norm(params) == pytest.approx(5.0)
    clipped, norm = clip_parameters(params, clip_norm=2.5)
    assert norm == pytest.approx(5.0)
    assert l2_norm(clipped) == pytest.approx(2.5)
    np.testing.assert_allclose(clipped[0], [[1.5, 0.0]])
    np.testing.assert_allclose(clipped[1], [2.0])
    np.testing.assert_array_equal(params[0], [[3.0, 0.0]])  # input untouched
    within, norm = clip_parameters(params, clip_norm=10.0)
    assert norm == pytest.approx(5.0)
    assert within[0] is not params[0]
    np.testing.assert_array_equal(within[1], params[1])


def test_clip_parameters_zero_vector_and_huge_entries():
    zeros = [np.zeros((2, 3)), np.zeros(4)]
    clipped, norm = clip_parameters(zeros, clip_norm=1.0)
    assert norm == 0.0
    assert all(np.all(c == 0) and np.all(np.isfinite(c)) for c in clipped)
    assert [c.shape for c in clipped] == [(2, 3), (4,)]
    assert clip_parameters([], clip_norm=1.0) == ([], 0.0)
    huge = [np.full(4, 1e308)]
    clipped, norm = clip_parameters(huge, clip_norm=1.0)
    assert norm == math.inf
    np.testing.assert_allclose(clipped[0], np.full(4, 0.5))


def test_poisson_sample():
    rng = np.random.default_rng(3)
    idx = poisson_sample(100_000, rate=0.01, rng=rng)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert 850 < len(idx) < 1150
    assert len(poisson_sample(10, rate=0.0, rng=rng)) == 0
    np.testing.assert_array_equal(poisson_sample(5, rate=1.0, rng=rng), np.arange(5))
    with pytest.raises(InvalidInputError):
        poisson_sample(10, rate=1.5, rng=rng)


def test_noisy_gradient_sum():
    grads = np.array([[3.0, 4.0], [0.0, 0.5]])
    exact = noisy_gradient_sum(
        grads, clip_norm=1.0, noise_multiplier=0.0, rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(exact, [0.6, 1.3])
    noisy = np.stack(
        [
            noisy_gradient_sum(grads, clip_norm=2.0, noise_multiplier=1.5, rng=rng)
            for rng in (np.random.default_rng(s) for s in range(4000))
        ]
    )
    np.testing.assert_allclose(noisy.mean(axis=0), [1.2, 2.1], atol=0.15)
    np.testing.assert_allclose(noisy.std(axis=0), [3.0, 3.0], rtol=0.05)
    # An empty Poisson batch still releases noise.
    empty = noisy_gradient_sum(
        np.zeros((0, 3)), clip_norm=1.0, noise_multiplier=1.0, rng=np.random.default_rng(1)
    )
    assert empty.shape == (3,) and np.all(empty != 0)


# ---------------------------------------------------------------------------- DP-FedAvg


def _model(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.normal(size=(3, 2)), rng.normal(size=2)]


def test_dp_fedavg_without_noise_is_the_mean_of_clipped_deltas():
    rng = np.random.default_rng(5)
    global_params = _model(rng)
    clients = [
        [g + rng.normal(scale=s, size=g.shape) for g in global_params] for s in (0.01, 1.0, 5.0)
    ]
    global_copy = [g.copy() for g in global_params]
    client_copies = [[a.copy() for a in c] for c in clients]

    new, diag = dp_fedavg_aggregate(
        global_params, clients, clip_norm=1.0, noise_multiplier=0.0, expected_clients=3, rng=rng
    )
    expected = [g.copy() for g in global_params]
    for client in clients:
        clipped, _ = clip_parameters(
            [a - g for a, g in zip(client, global_params, strict=True)], clip_norm=1.0
        )
        expected = [e + c / 3 for e, c in zip(expected, clipped, strict=True)]
    for got, want in zip(new, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)

    # Inputs untouched.
    for a, b in zip(global_params, global_copy, strict=True):
        np.testing.assert_array_equal(a, b)
    for client, copy in zip(clients, client_copies, strict=True):
        for a, b in zip(client, copy, strict=True):
            np.testing.assert_array_equal(a, b)

    assert diag["num_clients"] == 3
    assert len(diag["update_norms"]) == 3
    assert diag["update_norms"][0] < 1.0 < diag["update_norms"][1] < diag["update_norms"][2]
    assert diag["fraction_clipped"] == pytest.approx(2 / 3)
    assert diag["max_update_norm"] == pytest.approx(max(diag["update_norms"]))
    assert diag["mean_update_norm"] == pytest.approx(np.mean(diag["update_norms"]))
    json.dumps(diag)


def test_dp_fedavg_uses_the_fixed_expected_clients_denominator():
    g = [np.zeros(2)]
    clients = [[np.array([0.6, 0.8])], [np.array([0.0, 0.5])]]
    new, diag = dp_fedavg_aggregate(
        g,
        clients,
        clip_norm=1.0,
        noise_multiplier=0.0,
        expected_clients=10,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(new[0], [0.06, 0.13])
    assert diag["fraction_clipped"] == 0.0
    # Nobody showed up: only noise, still divided by the expected count.
    new, diag = dp_fedavg_aggregate(
        g, [], clip_norm=2.0, noise_multiplier=1.0, expected_clients=4, rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(new[0], np.random.default_rng(0).normal(0.0, 2.0, size=2) / 4)
    assert diag["num_clients"] == 0 and diag["noise_std"] == pytest.approx(0.5)


def test_dp_fedavg_noise_std_is_z_c_over_m():
    g = [np.zeros(20_000)]
    clients = [[np.zeros(20_000)]] * 5
    new, diag = dp_fedavg_aggregate(
        g,
        clients,
        clip_norm=0.5,
        noise_multiplier=1.2,
        expected_clients=5,
        rng=np.random.default_rng(9),
    )
    assert new[0].std() == pytest.approx(1.2 * 0.5 / 5, rel=0.03)
    assert diag["noise_std"] == pytest.approx(0.12)


def test_dp_fedavg_rejects_mismatched_or_bad_clients():
    g = [np.zeros(2), np.zeros(3)]
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="client 0 sent arrays of shapes"):
        dp_fedavg_aggregate(
            g, [[np.zeros(2)]], clip_norm=1.0, noise_multiplier=0.0, expected_clients=1, rng=rng
        )
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        dp_fedavg_aggregate(
            g,
            [[np.zeros(2), np.array([0, np.nan, 0])]],
            clip_norm=1.0,
            noise_multiplier=0.0,
            expected_clients=1,
            rng=rng,
        )
    with pytest.raises(InvalidInputError, match="expected_clients"):
        dp_fedavg_aggregate(g, [], clip_norm=1.0, noise_multiplier=0.0, expected_clients=0, rng=rng)


def test_adaptive_clipping_grows_toward_the_target_quantile():
    clipper = AdaptiveClipping(clip_norm=0.1, target_quantile=0.5, learning_rate=0.2)
    rng = np.random.default_rng(0)
    trace = [clipper.update([1.0] * 10, rng=rng) for _ in range(100)]
    assert trace[0] > 0.1
    assert all(b > a for a, b in itertools.pairwise(trace[:20]))
    # Oscillates around the (single-valued) median 1.0 within one geometric step.
    assert all(math.exp(-0.2) * 0.99 < c < math.exp(0.2) * 1.01 for c in trace[-20:])


def test_adaptive_clipping_tracks_a_quantile_of_spread_norms():
    norms = np.linspace(0.01, 10.0, 1000)
    for start in (0.05, 50.0):
        clipper = AdaptiveClipping(clip_norm=start, target_quantile=0.3, learning_rate=0.05)
        rng = np.random.default_rng(1)
        for _ in range(600):
            clipper.update(norms, rng=rng)
        assert clipper.clip_norm == pytest.approx(np.quantile(norms, 0.3), rel=0.05)


def test_adaptive_clipping_noise_state_and_effective_multiplier():
    clipper = AdaptiveClipping(clip_norm=1.0, count_noise_multiplier=5.0)
    a = clipper.update([0.5, 2.0], rng=np.random.default_rng(3), expected_clients=100)
    other = AdaptiveClipping(clip_norm=1.0, count_noise_multiplier=5.0)
    assert other.update([0.5, 2.0], rng=np.random.default_rng(3), expected_clients=100) == a

    state = clipper.state_dict()
    assert json.loads(json.dumps(state)) == state
    restored = AdaptiveClipping(clip_norm=7.0)
    restored.load_state_dict(state)
    assert restored == clipper
    with pytest.raises(InvalidInputError, match="missing"):
        restored.load_state_dict({"clip_norm": 1.0})

    z = 1.0
    z_delta = clipper.effective_noise_multiplier(z)
    assert z_delta == pytest.approx((z**-2 - (2 * 5.0) ** -2) ** -0.5)
    assert z_delta > z
    with pytest.raises(InvalidInputError, match="too small"):
        AdaptiveClipping(clip_norm=1.0, count_noise_multiplier=0.4).effective_noise_multiplier(1.0)
    with pytest.raises(InvalidInputError, match="too small"):
        AdaptiveClipping(clip_norm=1.0).effective_noise_multiplier(1.0)
    with pytest.raises(InvalidInputError):
        AdaptiveClipping(clip_norm=1.0, target_quantile=1.0)
    with pytest.raises(InvalidInputError):
        AdaptiveClipping(clip_norm=0.0)


# ---------------------------------------------------------------------------- accounting


def test_rdp_reference_values_from_field_notes():
    mnist = PrivacyAccountant("rdp", delta=1e-5)
    mnist.record(1.1, sampling_rate=256 / 60000, steps=14062)
    assert mnist.epsilon() == pytest.approx(2.597, abs=2e-3)
    assert mnist.epsilon() == direct_epsilon("rdp", 256 / 60000, 1.1, 14062)

    # 100 rounds, recorded in blocks of 10 (each RDP evaluation at q=0.1 takes ~0.1 s).
    rounds = PrivacyAccountant(delta=1e-5)
    for _ in range(10):
        rounds.record(1.0, sampling_rate=0.1, steps=10)
    assert rounds.epsilon() == pytest.approx(7.904, abs=2e-3)
    assert rounds.epsilon() == pytest.approx(direct_epsilon("rdp", 0.1, 1.0, 100), rel=1e-12)
    history = rounds.history
    assert len(history) == 10
    assert all(b > a for a, b in itertools.pairwise(history))
    assert history[-1] == rounds.epsilon()
    assert history[0] == pytest.approx(direct_epsilon("rdp", 0.1, 1.0, 10), rel=1e-12)


def test_pld_reference_value_and_direct_computation():
    acc = PrivacyAccountant("pld", delta=1e-5)
    acc.record(1.0, sampling_rate=0.1, steps=60)
    acc.record(1.0, sampling_rate=0.1, steps=40)
    assert acc.epsilon() == pytest.approx(7.047, abs=5e-3)
    assert acc.epsilon() == pytest.approx(direct_epsilon("pld", 0.1, 1.0, 100), rel=1e-9)
    assert acc.epsilon() < PrivacyAccountant("rdp", delta=1e-5).epsilon_after(
        1.0, sampling_rate=0.1, steps=100
    )
    assert acc.history[0] < acc.history[1]


@pytest.mark.parametrize("method", ["rdp", "pld"])
def test_epsilon_matches_dp_accounting_without_sampling(method):
    acc = PrivacyAccountant(method, delta=1e-6)
    acc.record(3.0, steps=5)
    assert acc.epsilon() == pytest.approx(direct_epsilon(method, 1.0, 3.0, 5, delta=1e-6), rel=1e-9)


def test_empty_accountant_and_epsilon_after_does_not_record():
    acc = PrivacyAccountant(delta=1e-5)
    assert acc.epsilon() == 0.0 and acc.history == [] and acc.events == []
    acc.record(1.1, sampling_rate=0.01, steps=100)
    before = (acc.epsilon(), acc.history, acc.events, acc.state_dict())
    after = acc.epsilon_after(1.1, sampling_rate=0.01, steps=100)
    assert after > acc.epsilon()
    assert (acc.epsilon(), acc.history, acc.events, acc.state_dict()) == before
    assert acc.record(1.1, sampling_rate=0.01, steps=100) == pytest.approx(after, rel=1e-12)
    assert acc.epsilon() == pytest.approx(direct_epsilon("rdp", 0.01, 1.1, 200), rel=1e-12)


def test_noiseless_round_spends_infinite_epsilon_and_laplace_is_accounted():
    acc = PrivacyAccountant(delta=1e-5)
    assert acc.epsilon_after(0.0, sampling_rate=0.5) == math.inf
    lap = PrivacyAccountant(delta=1e-5)
    lap.record_laplace(2.0, steps=3)  # pure 0.5-DP three times: 1.5 (RDP is a bit looser)
    assert lap.epsilon() == pytest.approx(1.5, abs=0.01)
    with pytest.raises(InvalidInputError):
        acc.record(-1.0)
    with pytest.raises(InvalidInputError):
        acc.record(1.0, sampling_rate=0.0)
    with pytest.raises(InvalidInputError):
        acc.record(1.0, steps=0)
    with pytest.raises(InvalidInputError, match="method"):
        PrivacyAccountant("moments", delta=1e-5)
    with pytest.raises(InvalidInputError, match="delta"):
        PrivacyAccountant(delta=0.0)


def test_state_dict_round_trip_is_exact_and_json_safe():
    acc = PrivacyAccountant(delta=1e-5)
    acc.record(1.0, sampling_rate=0.1, steps=3)
    acc.record(1.3, sampling_rate=0.05)
    acc.record_laplace(4.0)
    state = acc.state_dict()
    for restored_state in (state, json.loads(json.dumps(state))):
        restored = PrivacyAccountant.from_state_dict(restored_state)
        assert restored.events == acc.events
        assert restored.history == acc.history
        assert restored.epsilon() == acc.epsilon()
        assert restored.epsilon_after(1.0, sampling_rate=0.1) == acc.epsilon_after(
            1.0, sampling_rate=0.1
        )
    other = PrivacyAccountant(delta=1e-5)
    other.load_state_dict(state)
    other.record(1.0, sampling_rate=0.1)
    assert len(acc.history) == 3  # the source is independent of the restored copy
    bad = dict(state, events=[("moments", 1.0, 0.1, 1)] * 3)
    with pytest.raises(InvalidInputError, match="bad accounting event"):
        other.load_state_dict(bad)
    with pytest.raises(InvalidInputError, match="history"):
        other.load_state_dict(dict(state, history=state["history"][:1]))


def test_budget_refuses_a_round_that_would_exceed_the_target():
    budget = PrivacyBudget(target_epsilon=3.0, delta=1e-5)
    acc = PrivacyAccountant(delta=1e-5)
    rounds = 0
    with pytest.raises(PrivacyBudgetExhausted) as info:
        while True:
            would_be = budget.check_round(acc, noise_multiplier=1.0, sampling_rate=0.1)
            assert would_be <= 3.0
            assert acc.record(1.0, sampling_rate=0.1) == pytest.approx(would_be)
            rounds += 1
    assert rounds == 5  # RDP: 2.13, 2.41, 2.61, 2.76, 2.90, then 3.03 is refused
    assert acc.epsilon() <= 3.0 < acc.epsilon_after(1.0, sampling_rate=0.1)
    assert len(acc.history) == rounds  # the refused round was not recorded
    message = str(info.value)
    assert "epsilon=3" in message and f"{acc.epsilon():.4g}" in message
    assert f"{acc.epsilon_after(1.0, sampling_rate=0.1):.4g}" in message
    assert "larger noise multiplier" in message
    assert budget.spent(acc) == acc.epsilon()
    assert budget.remaining(acc) == pytest.approx(3.0 - acc.epsilon())
    with pytest.raises(InvalidInputError, match="same delta"):
        budget.check_round(PrivacyAccountant(delta=1e-6), noise_multiplier=1.0)
    with pytest.raises(InvalidInputError):
        PrivacyBudget(target_epsilon=0.0, delta=1e-5)


def test_noise_multiplier_for_is_the_smallest_meeting_the_target():
    z = noise_multiplier_for(target_epsilon=2.0, delta=1e-5, sampling_rate=0.01, steps=1000)
    eps = direct_epsilon("rdp", 0.01, z, 1000)
    assert eps <= 2.0
    assert eps == pytest.approx(2.0, abs=1e-3)
    assert direct_epsilon("rdp", 0.01, z - 1e-3, 1000) > 2.0
    # The budget accepts exactly that many steps at that noise.
    budget = PrivacyBudget(target_epsilon=2.0, delta=1e-5)
    assert (
        budget.check_round(
            PrivacyAccountant(delta=1e-5), noise_multiplier=z, sampling_rate=0.01, steps=1000
        )
        <= 2.0
    )
    # No sampling: a single Gaussian release at epsilon 1.
    z1 = noise_multiplier_for(1.0, 1e-5)
    assert direct_epsilon("rdp", 1.0, z1, 1) <= 1.0
    with pytest.raises(InvalidInputError):
        noise_multiplier_for(target_epsilon=1.0, delta=1e-5, method="pdl")


def test_missing_dp_accounting_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # makes `import dp_accounting` fail
    acc = PrivacyAccountant(delta=0.000123)
    with pytest.raises(UnsupportedOperationError, match=r"pip install 'fedge\[federated\]'"):
        acc.record(1.0)
    assert acc.history == []  # nothing half-recorded
    with pytest.raises(UnsupportedOperationError, match="dp-accounting"):
        noise_multiplier_for(target_epsilon=1.0, delta=0.000123)
