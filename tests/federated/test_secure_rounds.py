"""Federated rounds under secure aggregation: the server sees only sums, and they are right."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fedge.errors import InvalidInputError, UnsupportedOperationError
from fedge.federated import (
    DifferentialPrivacy,
    FaultPlan,
    FederatedServer,
    TrainingConfig,
    simulate,
)
from fedge.federated.privacy import PrivacyAccountant
from fedge.federated.secure import SecureAggregation

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _params(result):
    return np.concatenate([p.ravel() for p in result.server.global_parameters])


@pytest.mark.parametrize(("method", "tolerance"), [
    ("secagg", 1e-9), ("secagg+", 1e-9), ("ckks", 1e-6),
])
def test_protected_rounds_match_plain_fedavg(cancer, method, tolerance):
    X, y = cancer
    common = dict(n_clients=8, rounds=3, strategy="fedadam", random_state=2, **QUIET)
    plain = simulate(LogisticRegression(), X, y, **common)
    secure = simulate(
        LogisticRegression(), X, y, secure_aggregation=SecureAggregation(method, clip_norm=50),
        **common,
    )
    assert np.abs(_params(plain) - _params(secure)).max() < tolerance
    assert all(r.metrics["secure_seconds"] > 0 for r in secure.history.rounds)
    # norms of single updates are unknown to the server under secure aggregation
    assert np.isnan(secure.history.rounds[0].mean_update_norm)


def test_paillier_round_on_a_small_model():
    X, y = load_iris(return_X_y=True)
    common = dict(n_clients=3, rounds=1, random_state=0, **QUIET)
    plain = simulate(LogisticRegression(), X, y, **common)
    secure = simulate(LogisticRegression(), X, y, secure_aggregation="paillier", **common)
    # fixed point at 2^-32 per client, divided by the total weight (3 x 50 / 10,000)
    assert np.abs(_params(plain) - _params(secure)).max() < 3 * 2.0**-33 / 0.015


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_a_client_dropping_at_any_stage_is_recovered(cancer, stage):
    X, y = cancer
    faults = FaultPlan(explicit={(1, "client_0002"): f"drop_stage_{stage}"})
    result = simulate(
        LogisticRegression(), X, y, n_clients=6, rounds=1, secure_aggregation="secagg",
        faults=faults, **QUIET,
    )
    record = result.history.rounds[0]
    # a client leaving during unmasking already sent its masked input: it is in the sum
    assert ("client_0002" in record.participants) == (stage == 3)
    assert record.accepted == (6 if stage == 3 else 5)
    assert "secure_aborted" not in record.metrics


def test_below_the_threshold_the_round_aborts_and_the_model_stays(cancer):
    X, y = cancer
    explicit = {(1, f"client_000{i}"): "drop_stage_2" for i in range(4)}
    result = simulate(
        LogisticRegression(), X, y, n_clients=6, rounds=2, secure_aggregation="secagg",
        faults=FaultPlan(explicit=explicit), **QUIET,
    )
    first, second = result.history.rounds
    assert first.metrics.get("secure_aborted") == 1.0 and first.accepted == 0
    assert second.accepted == 6  # the next round runs normally


def test_clients_clip_their_own_updates(cancer):
    X, y = cancer
    attack = FaultPlan(attackers=0.25, attack="scale", scale=1000.0, seed=3)
    secure = SecureAggregation("secagg", clip_norm=0.5)
    result = simulate(
        LogisticRegression(), X, y, n_clients=8, rounds=1, secure_aggregation=secure,
        faults=attack, **QUIET,
    )
    # the weighted mean of updates clipped to 0.5 cannot move the model further than 0.5
    assert np.linalg.norm(_params(result)) <= 0.5 + 1e-9


def test_distributed_dp_spends_the_planned_budget(cancer):
    X, y = cancer
    privacy = DifferentialPrivacy(level="distributed", target_epsilon=4.0, clip_norm=1.0)
    result = simulate(
        LogisticRegression(), X, y, n_clients=10, rounds=4, secure_aggregation="secagg",
        privacy=privacy, training=TrainingConfig(learning_rate=0.5), **QUIET,
    )
    rho = result.server.round_rho
    accountant = PrivacyAccountant("rdp", delta=1e-5)
    accountant.record_zcdp(rho, steps=4)
    assert result.epsilon == pytest.approx(accountant.epsilon(), rel=1e-12)
    assert result.epsilon <= 4.0
    plain = simulate(
        LogisticRegression(), X, y, n_clients=10, rounds=4, secure_aggregation="secagg",
        training=TrainingConfig(learning_rate=0.5), **QUIET,
    )
    assert not np.allclose(_params(result), _params(plain))  # the clients' noise is there
    # a fifth round would exceed the budget: refused
    server = result.server
    from fedge.errors import PrivacyBudgetExhausted

    with pytest.raises(PrivacyBudgetExhausted):
        server.configure_round([c.client_id for c in result.clients])


def test_what_secure_aggregation_cannot_do_is_refused():
    kwargs = dict(classes=[0, 1], n_features=3)
    with pytest.raises(UnsupportedOperationError, match="needs each update"):
        FederatedServer(LogisticRegression(), "krum", secure_aggregation="secagg", **kwargs)
    with pytest.raises(UnsupportedOperationError, match="clip their own"):
        FederatedServer(
            LogisticRegression(), secure_aggregation="secagg", max_update_norm=1.0, **kwargs
        )
    with pytest.raises(InvalidInputError, match="needs secure aggregation"):
        FederatedServer(
            LogisticRegression(),
            privacy=DifferentialPrivacy(level="distributed", noise_multiplier=1.0),
            **kwargs,
        )
    server = FederatedServer(LogisticRegression(), secure_aggregation="secagg+", **kwargs)
    with pytest.raises(UnsupportedOperationError, match="never receives a single update"):
        server.receive_update(None)
    with pytest.raises(InvalidInputError, match="unknown secure aggregation"):
        SecureAggregation("rot13")
