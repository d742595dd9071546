"""Whole in-process federations: determinism, faults, attacks, privacy, checkpoints, scale."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_classification, make_regression
from sklearn.linear_model import LogisticRegression, SGDRegressor
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from fedge.errors import InvalidInputError, PrivacyBudgetExhausted
from fedge.federated import (
    DifferentialPrivacy,
    FaultPlan,
    TrainingConfig,
    simulate,
)

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _same(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_federated_logistic_regression_matches_centralized(cancer):
    X, y = cancer
    result = simulate(
        LogisticRegression(), X, y, n_clients=10, partition="dirichlet:0.5", rounds=20,
        validation=0.25, training=TrainingConfig(epochs=2, learning_rate=0.5), **QUIET,
    )
    central = LogisticRegression().fit(X, y)
    X_val, y_val = result.server.validation_data
    assert result.history.metric("accuracy")[-1] >= central.score(X_val, y_val) - 0.03
    assert isinstance(result.model, LogisticRegression)
    assert sum(result.client_sizes) == len(y) - len(y_val)


def test_same_seed_same_model(cancer):
    X, y = cancer
    kwargs = dict(n_clients=5, rounds=3, fraction_fit=0.6, strategy="fedadam", **QUIET)
    a = simulate(MLPClassifier(hidden_layer_sizes=(8,)), X, y, random_state=3, **kwargs)
    b = simulate(MLPClassifier(hidden_layer_sizes=(8,)), X, y, random_state=3, **kwargs)
    assert _same(a.server.global_parameters, b.server.global_parameters)
    c = simulate(MLPClassifier(hidden_layer_sizes=(8,)), X, y, random_state=4, **kwargs)
    assert not _same(a.server.global_parameters, c.server.global_parameters)


def test_resume_after_a_crash_gives_the_uninterrupted_model(cancer, tmp_path):
    X, y = cancer
    privacy = DifferentialPrivacy(level="client", noise_multiplier=0.8, adaptive_clipping=True)
    kwargs = dict(
        n_clients=8, fraction_fit=0.5, strategy="fedyogi", privacy=privacy,
        random_state=11, **QUIET,
    )
    full = simulate(LogisticRegression(), X, y, rounds=6, **kwargs)
    # "crash" after round 3: the first run stops there, the second resumes from disk
    simulate(LogisticRegression(), X, y, rounds=3, checkpoint_dir=tmp_path, **kwargs)
    resumed = simulate(
        LogisticRegression(), X, y, rounds=6, checkpoint_dir=tmp_path, resume=True, **kwargs
    )
    assert [r.round for r in resumed.history.rounds] == [1, 2, 3, 4, 5, 6]
    assert _same(full.server.global_parameters, resumed.server.global_parameters)
    assert resumed.epsilon == pytest.approx(full.epsilon, rel=0, abs=0)
    assert [r.participants for r in resumed.history.rounds] == [
        r.participants for r in full.history.rounds
    ]


def test_failing_hanging_and_dropping_clients_are_tolerated(cancer):
    X, y = cancer
    faults = FaultPlan(fail=0.15, hang=0.1, drop_before=0.1, drop_after=0.1, seed=5)
    result = simulate(
        LogisticRegression(), X, y, n_clients=10, rounds=4, faults=faults, timeout=0.5,
        validation=0.2, **QUIET,
    )
    failed = sum(r.failed for r in result.history.rounds)
    accepted = sum(r.accepted for r in result.history.rounds)
    assert failed > 0 and accepted > 0
    assert failed + accepted == 40
    assert result.history.metric("accuracy")[-1] > 0.9


def test_hangs_without_a_timeout_are_refused(cancer):
    X, y = cancer
    with pytest.raises(InvalidInputError, match="timeout"):
        simulate(LogisticRegression(), X, y, n_clients=3, faults=FaultPlan(hang=0.5), **QUIET)


def test_robust_strategies_resist_sign_flipping_attackers():
    X, y = make_classification(3000, 20, n_informative=10, random_state=0)
    X_val, y_val = X[:600], y[:600]
    common = dict(
        n_clients=20, rounds=10, validation=(X_val, y_val), random_state=1,
        training=TrainingConfig(epochs=3, learning_rate=0.2), **QUIET,
    )
    clean = simulate(LogisticRegression(), X[600:], y[600:], **common)
    attack = FaultPlan(attackers=0.2, attack="sign-flip", scale=4.0)
    # each robust rule configured for the 4 attackers among 20 clients
    options = {"fedavg": {}, "median": {}, "trimmed-mean": {"beta": 0.25}, "krum": {
        "n_byzantine": 4, "m": 10}}
    scores = {
        name: simulate(
            LogisticRegression(), X[600:], y[600:], strategy=name, strategy_options=opts,
            faults=attack, **common,
        ).history.metric("accuracy")[-1]
        for name, opts in options.items()
    }
    baseline = clean.history.metric("accuracy")[-1]
    assert scores["fedavg"] < baseline - 0.05
    for name in ("median", "trimmed-mean", "krum"):
        assert scores[name] >= baseline - 0.02, (name, scores, baseline)


def test_record_level_dp_each_client_spends_what_dp_accounting_says(cancer):
    import dp_accounting
    from dp_accounting import rdp

    from fedge.federated.training import dp_schedule

    X, y = cancer
    privacy = DifferentialPrivacy(level="record", target_epsilon=2.0, delta=1e-5, clip_norm=1.0)
    training = TrainingConfig(batch_size=16)
    result = simulate(
        LogisticRegression(), X, y, n_clients=4, rounds=3, privacy=privacy,
        partition="quantity:1", training=training, validation=0.2, **QUIET,
    )
    ledger = result.server.accountant
    spent = {}
    for client in result.clients:
        cid = client.client_id
        z, rate, steps = ledger.last_event[cid]
        assert (rate, steps) == dp_schedule(client.num_examples, training)
        direct = rdp.RdpAccountant()
        event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(z))
        direct.compose(event, 3 * steps)
        spent[cid] = ledger.accountants[cid].epsilon()
        assert spent[cid] == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
        # every client calibrated its own noise to the budget, whatever its size
        assert 1.9 < spent[cid] <= 2.0
    assert result.epsilon == max(spent.values())
    assert len(set(result.client_sizes)) > 1
    assert result.history.metric("accuracy")[-1] > 0.8
    # a fourth round would exceed every client's budget: refused
    server = result.server
    with pytest.raises(PrivacyBudgetExhausted):
        server.configure_round([c.client_id for c in result.clients])


def test_client_level_dp_calibrated_to_the_budget(cancer):
    X, y = cancer
    privacy = DifferentialPrivacy(level="client", target_epsilon=5.0, clip_norm=2.0)
    result = simulate(
        LogisticRegression(), X, y, n_clients=50, rounds=5, fraction_fit=0.2,
        privacy=privacy, **QUIET,
    )
    assert len(result.history.rounds) == 5
    assert 4.0 < result.epsilon <= 5.0


def test_regression_federation(cancer):
    X, y = make_regression(2000, 8, noise=5.0, random_state=0)
    y = y / y.std()
    result = simulate(
        SGDRegressor(), X, y, n_clients=5, rounds=10, validation=0.2, partition="quantity:1",
        **QUIET,
    )
    assert result.history.metric("r2")[-1] > 0.9


def test_ten_thousand_clients(cancer):
    X, y = make_classification(30000, 10, random_state=0)
    result = simulate(
        LogisticRegression(), X, y, n_clients=10000, rounds=2, fraction_fit=0.01,
        training=TrainingConfig(batch_size=3), **QUIET,
    )
    assert [r.accepted for r in result.history.rounds] == [100, 100]
    assert len(set(result.history.rounds[0].participants)) == 100


def test_early_stopping_ends_the_run(cancer):
    from fedge.federated import EarlyStopping

    X, y = cancer
    result = simulate(
        LogisticRegression(), X, y, n_clients=4, rounds=200, validation=0.2,
        early_stopping=EarlyStopping(metric="accuracy", patience=3, min_delta=0.01), **QUIET,
    )
    assert len(result.history.rounds) < 200
    assert "early stopping" in result.history.stop_reason


def test_private_runs_refuse_exact_moments_and_scale_from_public_bounds(cancer):
    from fedge.data import documented_bounds

    X, y = load_breast_cancer(return_X_y=True)
    privacy = DifferentialPrivacy(level="client", noise_multiplier=1.0)
    with pytest.raises(InvalidInputError, match="no privacy budget covers"):
        simulate(LogisticRegression(), X, y, n_clients=4, privacy=privacy, standardize=True,
                 **QUIET)
    lo, hi = documented_bounds(load_breast_cancer().DESCR, 30)
    result = simulate(
        LogisticRegression(), X, y, n_clients=4, rounds=2, feature_range=(lo, hi), **QUIET
    )
    scaler = result.model[0]
    # the scaler comes from the published ranges alone, not from any client's rows
    assert np.allclose(scaler.mean_, (lo + hi) / 2) and np.allclose(scaler.scale_, (hi - lo) / 2)
