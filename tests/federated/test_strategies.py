"""Aggregation strategies: known answers on tiny arrays, invariants, robustness, state."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedge.federated.strategies as fedge_strategies
from fedge.errors import InvalidInputError, UnsupportedOperationError
from fedge.federated.messages import ClientUpdate, Parameters
from fedge.federated.strategies import (
    AggregationStrategy,
    CoordinateMedian,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    Krum,
    RoundPlan,
    Strategy,
    TrimmedMean,
    coordinate_median,
    krum_scores,
    krum_select,
    make_strategy,
    multi_krum,
    trimmed_mean,
    weighted_average,
    weighted_sum,
)

SUM_BASED = [FedAvg, FedProx, FedAdam, FedYogi, FedAdagrad]
ROBUST = [CoordinateMedian, TrimmedMean, Krum]
ALL = SUM_BASED + ROBUST


def vec(*values: float) -> Parameters:
    """One-array Parameters holding ``values``."""
    return [np.array(values, dtype=np.float64)]


def client_updates(params: list[Parameters], counts: list[int] | None = None) -> list[ClientUpdate]:
    counts = counts if counts is not None else [1] * len(params)
    return [
        ClientUpdate(client_id=f"c{i}", round=1, parameters=p, num_examples=n)
        for i, (p, n) in enumerate(zip(params, counts, strict=True))
    ]


def random_model(rng: np.random.Generator, offset: float = 0.0) -> Parameters:
    """A small two-array model: a (3, 2) matrix and a (2,) vector."""
    return [rng.normal(size=(3, 2)) + offset, rng.normal(size=2) + offset]


def assert_params_equal(a: Parameters, b: Parameters) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def assert_params_close(a: Parameters, b: Parameters, **tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, **tol)


def read_only(params: Parameters) -> Parameters:
    out = [np.array(p, copy=True) for p in params]
    for p in out:
        p.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------
# Pure functions: known answers
# --------------------------------------------------------------------------------------------


def test_weighted_average_known_answer() -> None:
    assert_params_equal(weighted_average([vec(1.0), vec(3.0)], [1, 3]), vec(2.5))
    assert_params_equal(weighted_average([vec(1.0), vec(3.0)], [1, 1]), vec(2.0))
    # a zero weight drops the update; several arrays are averaged array by array
    a = [np.array([[1.0, 2.0]]), np.array(5.0)]
    b = [np.array([[3.0, 6.0]]), np.array(-5.0)]
    c = [np.array([[100.0, 100.0]]), np.array(100.0)]
    result = weighted_average([a, b, c], [1.0, 1.0, 0.0])
    assert_params_equal(result, [np.array([[2.0, 4.0]]), np.array(0.0)])
    assert all(r.dtype == np.float64 for r in result)


def test_weighted_sum_known_answer() -> None:
    assert_params_equal(weighted_sum([vec(1.0, 2.0), vec(3.0, 4.0)], [2, 0.5]), vec(3.5, 6.0))


def test_float32_inputs_give_float64_results() -> None:
    ups = [[np.array([1.0, 2.0], dtype=np.float32)], [np.array([3.0, 4.0], dtype=np.float32)]]
    for result in (weighted_average(ups, [1, 1]), coordinate_median(ups), trimmed_mean(ups, 0)):
        assert result[0].dtype == np.float64
        np.testing.assert_array_equal(result[0], [2.0, 3.0])


def test_coordinate_median_known_answer() -> None:
    ups = [vec(1.0, 10.0, 0.0), vec(2.0, 20.0, 0.0), vec(100.0, -5.0, 7.0)]
    assert_params_equal(coordinate_median(ups), vec(2.0, 10.0, 0.0))
    # even count: the mean of the two middle values
    assert_params_equal(coordinate_median([vec(1.0), vec(2.0), vec(3.0), vec(10.0)]), vec(2.5))
    # 0-d arrays keep their shape
    result = coordinate_median([[np.array(1.0)], [np.array(4.0)], [np.array(2.0)]])
    assert result[0].shape == ()
    assert float(result[0]) == 2.0


def test_trimmed_mean_known_answer() -> None:
    ups = [vec(1.0, -50.0), vec(2.0, 0.0), vec(3.0, 1.0), vec(4.0, 2.0), vec(100.0, 3.0)]
    assert_params_equal(trimmed_mean(ups, 0.2), vec(3.0, 1.0))  # drops 1 at each end
    assert_params_close(trimmed_mean(ups, 0.0), vec(22.0, -8.8))  # the plain mean
    assert_params_equal(trimmed_mean(ups, 0.1), trimmed_mean(ups, 0.0))  # floor(0.5) = 0


def test_trimmed_mean_rounds_the_trim_count_decimally() -> None:
    # 0.3 * 10 == 3.0000000000000004 and 0.29 * 100 == 28.999999999999996 in binary floats
    ten = [vec(float(i)) for i in range(10)]
    assert_params_equal(trimmed_mean(ten, 0.3), vec(4.5))  # keeps 3..6
    hundred = [vec(float(i)) for i in range(100)]
    assert_params_equal(trimmed_mean(hundred, 0.29), vec(49.5))


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, math.nan])
def test_trimmed_mean_refuses_bad_beta(beta: float) -> None:
    with pytest.raises(InvalidInputError, match="beta"):
        trimmed_mean([vec(1.0), vec(2.0)], beta)


def test_trimmed_mean_refuses_when_nothing_remains() -> None:
    # beta * n rounds up to 1 for n = 2: both values would be trimmed
    with pytest.raises(InvalidInputError, match="nothing to average"):
        trimmed_mean([vec(1.0), vec(2.0)], 0.4999999999999)


def test_krum_scores_known_answer() -> None:
    ups = [vec(0.0), vec(1.0), vec(2.0), vec(3.0), vec(10.0)]
    # f = 1: each score sums the n - f - 2 = 2 smallest squared distances to the others
    np.testing.assert_allclose(krum_scores(ups, 1), [5.0, 2.0, 2.0, 5.0, 113.0])
    assert krum_select(ups, 1) == [1]  # tie with index 2 broken by index
    assert krum_select(ups, 1, m=3) == [1, 2, 0]
    assert_params_equal(multi_krum(ups, 1), vec(1.0))
    assert_params_equal(multi_krum(ups, 1, m=2), vec(1.5))


def test_krum_picks_the_honest_cluster() -> None:
    rng = np.random.default_rng(0)
    honest = [random_model(rng) for _ in range(5)]
    outlier = [np.full((3, 2), 1e3), np.full(2, -1e3)]
    ups = [*honest[:2], outlier, *honest[2:]]
    scores = krum_scores(ups, 1)
    assert int(np.argmax(scores)) == 2
    assert 2 not in krum_select(ups, 1, m=5)
    chosen = krum_select(ups, 1)
    assert_params_equal(multi_krum(ups, 1), ups[chosen[0]])
    pair = krum_select(ups, 1, m=2)
    assert_params_close(multi_krum(ups, 1, m=2), weighted_average([ups[i] for i in pair], [1, 1]))


def test_krum_needs_enough_updates() -> None:
    ups = [vec(float(i)) for i in range(4)]
    with pytest.raises(InvalidInputError, match="at least 5"):
        krum_scores(ups, 1)
    with pytest.raises(InvalidInputError, match="at least 7"):
        krum_select([*ups, vec(9.0), vec(8.0)], 2)
    krum_scores(ups, 0)  # f = 0 needs n > 2
    with pytest.raises(InvalidInputError, match="n_byzantine"):
        krum_scores(ups, -1)


def test_krum_select_refuses_bad_m() -> None:
    ups = [vec(float(i)) for i in range(5)]
    assert len(krum_select(ups, 1, m=4)) == 4
    with pytest.raises(InvalidInputError, match="at most"):
        krum_select(ups, 1, m=5)
    with pytest.raises(InvalidInputError, match="m must be"):
        multi_krum(ups, 1, m=0)


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("block_elements", [1 << 22, 20])
def test_krum_scores_match_brute_force(
    offset: float, block_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a small block makes the distance matrix sum over several blocks of coordinates
    monkeypatch.setattr(fedge_strategies, "_KRUM_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(1)
    ups = [random_model(rng, offset) for _ in range(9)]
    ups[3] = [a * 5 for a in ups[3]]
    flat = np.stack([np.concatenate([a.ravel() for a in u]) for u in ups])
    dist = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
    f = 2
    expected = [np.sort(np.delete(row, i))[: len(ups) - f - 2].sum() for i, row in enumerate(dist)]
    np.testing.assert_allclose(krum_scores(ups, f), expected, rtol=1e-9)


def test_krum_on_a_large_vector() -> None:
    rng = np.random.default_rng(2)
    n, P = 40, 50_000
    honest_mean = rng.normal(size=P)
    ups = [[honest_mean + 0.01 * rng.normal(size=P)] for _ in range(n)]
    ups[7] = [honest_mean + 0.5]  # a subtle attacker: far in total, small per coordinate
    scores = krum_scores(ups, 5)
    assert int(np.argmax(scores)) == 7
    assert 7 not in krum_select(ups, 5, m=n - 5)


# --------------------------------------------------------------------------------------------
# Pure functions: validation
# --------------------------------------------------------------------------------------------

FUNCTIONS = {
    "weighted_average": lambda ups: weighted_average(ups, [1.0] * len(ups)),
    "weighted_sum": lambda ups: weighted_sum(ups, [1.0] * len(ups)),
    "coordinate_median": coordinate_median,
    "trimmed_mean": lambda ups: trimmed_mean(ups, 0.1),
    "multi_krum": lambda ups: multi_krum(ups, 0, m=2),
    "krum_scores": lambda ups: krum_scores(ups, 0),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functions_refuse_mismatched_shapes(name: str) -> None:
    fn = FUNCTIONS[name]
    with pytest.raises(InvalidInputError, match=r"update 2, array 0 has shape \(3,\).*\(2,\)"):
        fn([vec(1.0, 2.0), vec(3.0, 4.0), vec(1.0, 2.0, 3.0)])
    with pytest.raises(InvalidInputError, match="update 1 has 2 arrays"):
        fn([vec(1.0), [np.ones(1), np.ones(1)], vec(2.0)])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functions_refuse_empty_and_non_finite_input(name: str) -> None:
    fn = FUNCTIONS[name]
    with pytest.raises(InvalidInputError, match="at least one update"):
        fn([])
    with pytest.raises(InvalidInputError, match=r"update 1, array 0 holds 1 NaN"):
        fn([vec(1.0, 2.0), vec(np.nan, 1.0), vec(1.0, 2.0)])
    with pytest.raises(InvalidInputError, match="infinite"):
        fn([vec(1.0), vec(2.0), vec(np.inf)])
    with pytest.raises(InvalidInputError, match="list of numpy arrays"):
        fn([np.ones(2), np.ones(2), np.ones(2)])  # bare arrays, not Parameters


def test_weighted_average_refuses_zero_total_weight() -> None:
    with pytest.raises(InvalidInputError, match="sum to 0"):
        weighted_average([vec(1.0), vec(3.0)], [0, 0])
    with pytest.raises(InvalidInputError, match="sum to 0"):
        weighted_sum([vec(1.0)], [0.0])


@pytest.mark.parametrize(
    ("weights", "message"),
    [([1, -1], ">= 0"), ([1, np.nan], "finite"), ([1, np.inf], "finite"), ([1], "one weight")],
)
def test_weighted_average_refuses_bad_weights(weights: list[float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        weighted_average([vec(1.0), vec(3.0)], weights)


def test_functions_do_not_mutate_inputs() -> None:
    rng = np.random.default_rng(3)
    ups = [read_only(random_model(rng)) for _ in range(7)]
    before = copy.deepcopy(ups)
    weights = np.array([1.0, 2, 3, 4, 5, 6, 7])
    weights.setflags(write=False)
    for fn in FUNCTIONS.values():
        fn(ups)
    weighted_average(ups, weights)
    krum_select(ups, 2, m=3)
    for u, b in zip(ups, before, strict=True):
        assert_params_equal(u, b)


def test_results_never_alias_inputs() -> None:
    ups = [vec(1.0, 2.0)]
    for result in (
        weighted_average(ups, [1]),
        coordinate_median(ups),
        trimmed_mean(ups, 0.0),
        multi_krum(ups * 3, 0),
    ):
        assert not np.shares_memory(result[0], ups[0][0])


# --------------------------------------------------------------------------------------------
# Pure functions: properties
# --------------------------------------------------------------------------------------------

values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@st.composite
def updates_and_weights(draw: st.DrawFn) -> tuple[list[Parameters], list[float], list[int]]:
    n = draw(st.integers(min_value=1, max_value=7))
    size = draw(st.integers(min_value=1, max_value=4))
    ups = [[np.array(draw(st.lists(values, min_size=size, max_size=size)))] for _ in range(n)]
    weights = draw(
        st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=n, max_size=n).filter(
            lambda w: sum(w) > 0.1
        )
    )
    perm = draw(st.permutations(range(n)))
    return ups, weights, perm


@given(updates_and_weights())
def test_weighted_average_is_order_invariant_and_convex(case: tuple) -> None:
    ups, weights, perm = case
    result = weighted_average(ups, weights)
    permuted = weighted_average([ups[i] for i in perm], [weights[i] for i in perm])
    assert_params_close(result, permuted, rtol=1e-9, atol=1e-9)
    stacked = np.stack([u[0] for u in ups])
    assert (result[0] >= stacked.min(axis=0) - 1e-9).all()
    assert (result[0] <= stacked.max(axis=0) + 1e-9).all()


@given(updates_and_weights(), st.floats(min_value=0.0, max_value=0.49))
def test_robust_functions_are_order_invariant_and_bounded(case: tuple, beta: float) -> None:
    ups, _, perm = case
    permuted = [ups[i] for i in perm]
    stacked = np.stack([u[0] for u in ups])
    for fn in (coordinate_median, lambda u: trimmed_mean(u, beta)):
        result = fn(ups)
        assert_params_equal(result, fn(permuted))  # sorting-based: exactly equal
        assert (result[0] >= stacked.min(axis=0) - 1e-9).all()
        assert (result[0] <= stacked.max(axis=0) + 1e-9).all()


@given(updates_and_weights())
def test_trimmed_mean_at_its_limit_is_the_median(case: tuple) -> None:
    ups, _, _ = case
    n = len(ups)
    if n % 2 == 0:
        ups = ups[:-1] if n > 1 else ups
        n = len(ups)
    beta = (n - 1) / (2 * n)  # trims all but the middle value
    assert_params_equal(trimmed_mean(ups, beta), coordinate_median(ups))


def test_krum_selection_follows_a_permutation() -> None:
    rng = np.random.default_rng(4)
    ups = [random_model(rng) for _ in range(8)]
    perm = rng.permutation(8)
    chosen = krum_select(ups, 2, m=3)
    chosen_permuted = krum_select([ups[i] for i in perm], 2, m=3)
    assert [int(perm[i]) for i in chosen_permuted] == chosen


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def test_names_flags_and_enum_agree() -> None:
    assert {cls.name for cls in ALL} == {m.value for m in AggregationStrategy}
    for cls in SUM_BASED:
        assert cls.sum_based is True
    for cls in ROBUST:
        assert cls.sum_based is False
    assert AggregationStrategy.FED_AVG == "fedavg"
    assert AggregationStrategy("trimmed-mean") is AggregationStrategy.TRIMMED_MEAN


def test_constructor_parameters_are_stored_unchanged() -> None:
    s = FedAdam(server_learning_rate=0.5, beta_1=0.8, beta_2=0.9, tau=1e-2, weighted=False)
    assert (s.server_learning_rate, s.beta_1, s.beta_2, s.tau, s.weighted) == (
        0.5,
        0.8,
        0.9,
        1e-2,
        False,
    )
    assert FedYogi().server_learning_rate == 0.01
    assert FedProx(proximal_mu=0.3).proximal_mu == 0.3
    k = Krum(n_byzantine=2, m=3, fraction_fit=0.5, min_fit_clients=7)
    assert (k.n_byzantine, k.m, k.fraction_fit, k.min_fit_clients) == (2, 3, 0.5, 7)
    expected = "TrimmedMean(beta=0.2, fraction_fit=1.0, min_fit_clients=1)"
    assert repr(TrimmedMean(beta=0.2)) == expected
    with pytest.raises(TypeError):
        FedAvg(True)  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: FedAdam(tau=0.0), "tau"),
        (lambda: FedYogi(beta_2=1.0), "beta_2"),
        (lambda: FedAdagrad(server_learning_rate=0.0), "server_learning_rate"),
        (lambda: FedProx(proximal_mu=-1.0), "proximal_mu"),
        (lambda: FedAvg(fraction_fit=0.0), "fraction_fit"),
        (lambda: FedAvg(fraction_fit=1.5), "fraction_fit"),
        (lambda: FedAvg(min_fit_clients=0), "min_fit_clients"),
        (lambda: TrimmedMean(beta=0.5), "beta"),
        (lambda: Krum(m=0), "m must"),
        (lambda: Krum(n_byzantine=-1), "n_byzantine"),
        (lambda: CoordinateMedian(evaluate_fn=3), "evaluate_fn"),
    ],
)
def test_constructors_refuse_bad_parameters(factory, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        factory()


def make_all() -> list[Strategy]:
    return [cls() for cls in ALL]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_identical_updates_leave_the_global_model_unchanged(cls: type[Strategy]) -> None:
    rng = np.random.default_rng(5)
    global_params = random_model(rng)
    updates = client_updates([global_params] * 6, counts=[3, 7, 1, 1, 2, 9])
    strategy = cls()
    for server_round in (1, 2, 3):
        result = strategy.aggregate(server_round, global_params, updates, rng)
        assert_params_close(result, global_params, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_aggregate_does_not_mutate_inputs(cls: type[Strategy]) -> None:
    rng = np.random.default_rng(6)
    global_params = read_only(random_model(rng))
    updates = client_updates([read_only(random_model(rng)) for _ in range(6)], [1, 2, 3, 4, 5, 6])
    before = copy.deepcopy((global_params, updates))
    strategy = cls()
    result = strategy.aggregate(1, global_params, updates, rng)
    strategy.aggregate(2, result, updates, rng)
    assert_params_equal(global_params, before[0])
    for u, b in zip(updates, before[1], strict=True):
        assert_params_equal(u.parameters, b.parameters)
    for r, g in zip(result, global_params, strict=True):
        assert not np.shares_memory(r, g)


@pytest.mark.parametrize("cls", SUM_BASED, ids=lambda c: c.name)
@pytest.mark.parametrize("weighted", [True, False])
def test_aggregate_equals_the_aggregate_sum_path(cls: type[Strategy], weighted: bool) -> None:
    rng = np.random.default_rng(7)
    direct, via_sum = cls(weighted=weighted), cls(weighted=weighted)
    x_direct = x_sum = random_model(rng)
    for server_round in (1, 2, 3):
        updates = client_updates([random_model(rng) for _ in range(4)], [5, 1, 0, 12])
        x_direct = direct.aggregate(server_round, x_direct, updates, rng)
        weights = via_sum.client_weights(updates)
        total = weighted_sum([u.parameters for u in updates], weights)
        x_sum = via_sum.aggregate_sum(server_round, x_sum, total, float(weights.sum()))
        assert_params_equal(x_direct, x_sum)


def test_fedavg_weights_by_num_examples_unless_told_not_to() -> None:
    updates = client_updates([vec(1.0), vec(3.0)], counts=[1, 3])
    assert_params_equal(FedAvg().aggregate(1, vec(0.0), updates, np.random.default_rng()), vec(2.5))
    plain = FedAvg(weighted=False).aggregate(1, vec(0.0), updates, np.random.default_rng())
    assert_params_equal(plain, vec(2.0))


def test_fedavg_refuses_zero_total_weight() -> None:
    updates = client_updates([vec(1.0), vec(3.0)], counts=[0, 0])
    with pytest.raises(InvalidInputError, match="sum to 0"):
        FedAvg().aggregate(1, vec(0.0), updates, np.random.default_rng())
    with pytest.raises(InvalidInputError, match="total_weight"):
        FedAvg().aggregate_sum(1, vec(0.0), vec(4.0), 0.0)
    # unweighted averaging does not look at num_examples
    assert_params_equal(
        FedAvg(weighted=False).aggregate(1, vec(0.0), updates, np.random.default_rng()), vec(2.0)
    )


def test_sum_based_strategies_refuse_negative_num_examples() -> None:
    updates = client_updates([vec(1.0), vec(3.0)], counts=[4, -1])
    with pytest.raises(InvalidInputError, match=">= 0"):
        FedAdam().aggregate(1, vec(0.0), updates, np.random.default_rng())


@pytest.mark.parametrize("strategy", make_all(), ids=lambda s: s.name)
def test_aggregate_refuses_updates_that_do_not_match_the_global_model(strategy: Strategy) -> None:
    rng = np.random.default_rng(8)
    global_params = random_model(rng)
    params = [random_model(rng) for _ in range(6)]
    params[4] = [params[4][0], np.ones(3)]
    with pytest.raises(InvalidInputError, match=r"update 4 \(client 'c4'\), array 1 has shape"):
        strategy.aggregate(1, global_params, client_updates(params), rng)
    with pytest.raises(InvalidInputError, match="at least one update"):
        strategy.aggregate(1, global_params, [], rng)
    with pytest.raises(InvalidInputError, match="Generator"):
        strategy.aggregate(1, global_params, client_updates([global_params] * 6), 42)


@pytest.mark.parametrize("cls", ROBUST, ids=lambda c: c.name)
def test_robust_strategies_refuse_aggregate_sum(cls: type[Strategy]) -> None:
    with pytest.raises(UnsupportedOperationError, match="secure aggregation"):
        cls().aggregate_sum(1, vec(0.0), vec(1.0), 1.0)


@pytest.mark.parametrize("cls", ROBUST, ids=lambda c: c.name)
def test_robust_strategies_ignore_num_examples(cls: type[Strategy]) -> None:
    rng = np.random.default_rng(9)
    params = [random_model(rng) for _ in range(7)]
    a = cls().aggregate(1, params[0], client_updates(params, [1] * 7), rng)
    b = cls().aggregate(1, params[0], client_updates(params, [10**6, 0, 1, 1, 1, 1, 1]), rng)
    assert_params_equal(a, b)


def test_robust_strategies_match_the_functions() -> None:
    rng = np.random.default_rng(10)
    params = [random_model(rng) for _ in range(9)]
    updates = client_updates(params)
    g = params[0]
    assert_params_equal(CoordinateMedian().aggregate(1, g, updates, rng), coordinate_median(params))
    assert_params_equal(
        TrimmedMean(beta=0.25).aggregate(1, g, updates, rng), trimmed_mean(params, 0.25)
    )
    assert_params_equal(
        Krum(n_byzantine=2, m=3).aggregate(1, g, updates, rng), multi_krum(params, 2, m=3)
    )
    with pytest.raises(InvalidInputError, match="at least 9"):
        Krum(n_byzantine=3).aggregate(1, g, updates[:8], rng)


# --------------------------------------------------------------------------------------------
# Server optimizers
# --------------------------------------------------------------------------------------------


def test_fedadam_one_step_by_hand() -> None:
    x = [1.0, -2.0]
    clients = [([2.0, 0.0], 1), ([4.0, -4.0], 3)]
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    expected = []
    for j in range(2):
        avg = sum(p[j] * n for p, n in clients) / 4  # 3.5, -3.0
        delta = avg - x[j]
        m = (1 - b1) * delta
        v = b2 * tau**2 + (1 - b2) * delta**2
        expected.append(x[j] + eta * m / (math.sqrt(v) + tau))
    strategy = FedAdam(server_learning_rate=eta, beta_1=b1, beta_2=b2, tau=tau)
    updates = client_updates([vec(*p) for p, _ in clients], [n for _, n in clients])
    result = strategy.aggregate(1, vec(*x), updates, np.random.default_rng())
    assert_params_close(result, vec(*expected), rtol=1e-14)
    state = strategy.state_dict()
    np.testing.assert_allclose(state["m"][0], [0.25, -0.1], rtol=1e-14)


def test_fedyogi_and_fedadagrad_two_steps_by_hand() -> None:
    eta, b1, b2, tau = 0.05, 0.5, 0.9, 0.1
    x0 = 0.0
    targets = [1.0, 0.02]  # round 1 moves far (v < delta^2), round 2 barely (v > delta^2)

    def run(second_moment, strategy: Strategy) -> None:
        x, m, v = x0, 0.0, tau**2
        got = vec(x0)
        for server_round, target in enumerate(targets, start=1):
            delta = target - x
            m = b1 * m + (1 - b1) * delta
            v = second_moment(v, delta**2)
            x = x + eta * m / (math.sqrt(v) + tau)
            update = client_updates([vec(target)])
            got = strategy.aggregate(server_round, got, update, np.random.default_rng())
            assert_params_close(got, vec(x), rtol=1e-14)

    def yogi(v: float, d2: float) -> float:
        return v - (1 - b2) * d2 * math.copysign(1.0, v - d2)

    run(yogi, FedYogi(server_learning_rate=eta, beta_1=b1, beta_2=b2, tau=tau))
    run(lambda v, d2: v + d2, FedAdagrad(server_learning_rate=eta, beta_1=b1, tau=tau))


def test_fedadagrad_without_momentum_uses_the_current_pseudo_gradient() -> None:
    strategy = FedAdagrad(server_learning_rate=1.0, tau=1e-3)
    result = strategy.aggregate(1, vec(0.0), client_updates([vec(2.0)]), np.random.default_rng())
    # m = delta = 2, v = tau^2 + 4: x = 2 / (sqrt(4 + 1e-6) + 1e-3)
    assert_params_close(result, vec(2.0 / (math.sqrt(4 + 1e-6) + 1e-3)), rtol=1e-14)


@pytest.mark.parametrize("cls", [FedAdam, FedYogi, FedAdagrad], ids=lambda c: c.name)
def test_state_dict_round_trip_resumes_exactly(cls: type[Strategy]) -> None:
    rng = np.random.default_rng(11)
    rounds = [client_updates([random_model(rng) for _ in range(3)], [2, 5, 1]) for _ in range(4)]
    start = random_model(rng)

    uninterrupted = cls()
    assert uninterrupted.state_dict() == {}
    x = start
    for r, updates in enumerate(rounds, start=1):
        x = uninterrupted.aggregate(r, x, updates, rng)

    first = cls()
    y = start
    for r, updates in enumerate(rounds[:2], start=1):
        y = first.aggregate(r, y, updates, rng)
    checkpoint = first.state_dict()
    assert set(checkpoint) == {"m", "v"}
    # the checkpoint is a copy: changing it does not change the strategy
    saved = copy.deepcopy(checkpoint)
    checkpoint["m"][0][...] = 123.0
    resumed = cls()
    resumed.load_state_dict(saved)
    for r, updates in enumerate(rounds[2:], start=3):
        y = resumed.aggregate(r, y, updates, rng)
    assert_params_equal(x, y)

    resumed.load_state_dict({})
    assert resumed.state_dict() == {}


def test_load_state_dict_refuses_foreign_state() -> None:
    with pytest.raises(InvalidInputError, match="keys"):
        FedAdam().load_state_dict({"m": [np.zeros(2)]})
    with pytest.raises(InvalidInputError, match="shape"):
        FedAdam().load_state_dict({"m": [np.zeros(2)], "v": [np.zeros(3)]})
    with pytest.raises(InvalidInputError, match="negative"):
        FedYogi().load_state_dict({"m": [np.zeros(2)], "v": [-np.ones(2)]})
    with pytest.raises(InvalidInputError, match="no state"):
        FedAvg().load_state_dict({"m": [np.zeros(2)]})
    for strategy in (FedAvg(), FedProx(), CoordinateMedian(), TrimmedMean(), Krum()):
        assert strategy.state_dict() == {}
        strategy.load_state_dict({})


def test_server_optimizer_refuses_a_model_that_changed_shape() -> None:
    strategy = FedAdam()
    rng = np.random.default_rng()
    strategy.aggregate(1, vec(0.0, 0.0), client_updates([vec(1.0, 1.0)]), rng)
    with pytest.raises(InvalidInputError, match="optimizer state"):
        strategy.aggregate(2, vec(0.0), client_updates([vec(1.0)]), rng)


# --------------------------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------------------------


def test_robust_strategies_resist_scaled_sign_flipped_updates() -> None:
    rng = np.random.default_rng(12)
    n, n_bad, P = 20, 4, 50
    center = rng.normal(size=P)
    honest = [[center + 0.1 * rng.normal(size=P)] for _ in range(n - n_bad)]
    attackers = [[-100.0 * honest[i][0]] for i in range(n_bad)]
    params = honest[:8] + attackers + honest[8:]  # attackers in the middle of the list
    honest_mean = np.mean([h[0] for h in honest], axis=0)
    scale = np.linalg.norm(honest_mean)

    def error(result: Parameters) -> float:
        return float(np.linalg.norm(result[0] - honest_mean) / scale)

    updates = client_updates(params)
    g = [np.zeros(P)]
    robust = [
        CoordinateMedian(),
        TrimmedMean(beta=0.2),
        Krum(n_byzantine=n_bad),
        Krum(n_byzantine=n_bad, m=n - 2 * n_bad),
    ]
    for strategy in robust:
        assert error(strategy.aggregate(1, g, updates, rng)) < 0.1, strategy
    assert set(krum_select(params, n_bad, m=n - n_bad)) == set(range(n)) - set(range(8, 12))
    assert error(weighted_average(params, [1.0] * n)) > 10
    assert error(FedAvg().aggregate(1, g, updates, rng)) > 10


# --------------------------------------------------------------------------------------------
# Client selection, config, evaluation
# --------------------------------------------------------------------------------------------

IDS = [f"client-{i:02d}" for i in range(10)]


def test_configure_round_is_deterministic_for_a_seed() -> None:
    strategy = FedAvg(fraction_fit=0.5)
    a = strategy.configure_round(1, IDS, np.random.default_rng(42))
    b = strategy.configure_round(1, IDS, np.random.default_rng(42))
    assert a == b
    assert isinstance(a, RoundPlan)
    assert len(a.client_ids) == 5
    assert list(a.client_ids) == sorted(a.client_ids, key=IDS.index)  # in input order
    assert len(set(a.client_ids)) == 5
    draws = {
        strategy.configure_round(1, IDS, np.random.default_rng(seed)).client_ids
        for seed in range(20)
    }
    assert len(draws) > 1


@pytest.mark.parametrize(
    ("fraction", "minimum", "available", "expected"),
    [
        (1.0, 1, 10, 10),
        (0.3, 1, 10, 3),  # 0.3 * 10 is 3.0000000000000004 in binary: still 3
        (0.25, 1, 10, 3),  # ceil(2.5)
        (0.1, 5, 10, 5),  # the minimum wins
        (0.01, 1, 10, 1),
        (0.5, 4, 4, 4),  # capped at what is available
        (0.9, 2, 1000, 900),
    ],
)
def test_configure_round_selects_the_right_number(
    fraction: float, minimum: int, available: int, expected: int
) -> None:
    ids = [f"c{i}" for i in range(available)]
    plan = FedAvg(fraction_fit=fraction, min_fit_clients=minimum).configure_round(
        1, ids, np.random.default_rng(0)
    )
    assert len(plan.client_ids) == expected


def test_configure_round_refuses_too_few_clients_and_bad_input() -> None:
    strategy = Krum(n_byzantine=1, min_fit_clients=5)
    with pytest.raises(InvalidInputError, match=r"min_fit_clients=5.*only 4"):
        strategy.configure_round(3, IDS[:4], np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="duplicates"):
        FedAvg().configure_round(1, ["a", "b", "a"], np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="Generator"):
        FedAvg().configure_round(1, IDS, np.random.RandomState(0))


def test_configure_round_draws_nothing_when_all_clients_train() -> None:
    rng = np.random.default_rng(0)
    state = copy.deepcopy(rng.bit_generator.state)
    plan = FedAvg().configure_round(1, IDS, rng)
    assert plan.client_ids == tuple(IDS)
    assert rng.bit_generator.state == state


def test_round_config() -> None:
    rng = np.random.default_rng(0)
    assert FedProx(proximal_mu=0.5).configure_round(1, IDS, rng).config == {"proximal_mu": 0.5}
    for strategy in make_all():
        if not isinstance(strategy, FedProx):
            assert strategy.configure_round(1, IDS, rng).config == {}
    # the config is a fresh dict each round
    strategy = FedProx()
    strategy.configure_round(1, IDS, rng).config["proximal_mu"] = 9.0  # type: ignore[index]
    assert strategy.configure_round(2, IDS, rng).config == {"proximal_mu": 0.01}


def test_evaluate_calls_evaluate_fn_with_a_copy() -> None:
    seen = []

    def evaluate_fn(parameters: Parameters) -> dict[str, float]:
        seen.append(parameters)
        parameters[0][...] = -1.0  # must not reach the caller's arrays
        return {"loss": np.float64(0.25), "accuracy": 1}

    params = vec(1.0, 2.0)
    assert FedAvg().evaluate(1, params) is None
    metrics = TrimmedMean(evaluate_fn=evaluate_fn).evaluate(1, params)
    assert metrics == {"loss": 0.25, "accuracy": 1.0}
    assert all(type(v) is float for v in metrics.values())
    assert len(seen) == 1
    assert_params_equal(params, vec(1.0, 2.0))


# --------------------------------------------------------------------------------------------
# make_strategy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(AggregationStrategy), ids=lambda k: k.value)
def test_make_strategy_by_enum_and_name(kind: AggregationStrategy) -> None:
    for spec in (kind, kind.value, kind.value.upper(), kind.name):
        strategy = make_strategy(spec)
        assert isinstance(strategy, Strategy)
        assert strategy.name == kind.value


def test_make_strategy_options_and_errors() -> None:
    strategy = make_strategy("trimmed-mean", beta=0.3, min_fit_clients=4)
    assert isinstance(strategy, TrimmedMean)
    assert (strategy.beta, strategy.min_fit_clients) == (0.3, 4)
    ready = Krum(n_byzantine=2)
    assert make_strategy(ready) is ready
    with pytest.raises(InvalidInputError, match=r"'fedavg'.*'krum'"):
        make_strategy("fedsgd")
    with pytest.raises(InvalidInputError, match="does not take"):
        make_strategy("fedavg", beta=0.1)
    with pytest.raises(InvalidInputError, match="constructor"):
        make_strategy(ready, m=2)
