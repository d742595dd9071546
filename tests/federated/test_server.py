"""The server and clients through the seed API: rounds, validation of updates, checkpoints."""

import logging

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

import fedge
from fedge.errors import (
    InvalidInputError,
    PrivacyBudgetExhausted,
    UnsupportedModelError,
    UnsupportedOperationError,
)
from fedge.federated import (
    AggregationStrategy,
    ClientUpdate,
    DifferentialPrivacy,
    FederatedClient,
    FederatedServer,
)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _hospitals(X, y, n=3):
    return [
        FederatedClient(f"hospital_{i + 1}", X[i::n], y[i::n]) for i in range(n)
    ]


def test_seed_api_as_written(cancer):
    X, y = cancer
    server = FederatedServer(
        initial_model=LogisticRegression(),
        aggregation_strategy=AggregationStrategy.FED_AVG,
        classes=[0, 1],
    )
    clients = _hospitals(X, y)
    for _ in range(5):
        for client in clients:
            client.receive_global_model(server.get_global_model())
            update = client.train_local(epochs=5)
            assert server.receive_update(update)
        model = server.aggregate_updates()
    assert isinstance(model, LogisticRegression)
    assert model.score(X, y) > 0.95
    # the global model is a fitted estimator that lowers like any other
    ir = fedge.lower(model)
    assert np.array_equal(fedge.predict(ir, X), model.predict(X))
    assert len(server.history.rounds) == 5
    assert server.history.rounds[-1].accepted == 3


def test_unfitted_model_without_feature_count_is_initialised_identically_everywhere(cancer):
    X, y = cancer
    server = FederatedServer(MLPClassifier(hidden_layer_sizes=(4,)), classes=[0, 1])
    a, b = _hospitals(X, y, 2)
    for client in (a, b):
        client.receive_global_model(server.get_global_model())
    assert all(
        np.array_equal(p, q) for p, q in zip(a._parameters, b._parameters, strict=True)
    )
    for client in (a, b):
        assert server.receive_update(client.train_local())
    model = server.aggregate_updates()
    assert model.coefs_[0].shape == (30, 4)


def test_clients_holding_some_labels_train_the_full_model():
    X, y = load_iris(return_X_y=True)
    server = FederatedServer(LogisticRegression(), classes=[0, 1, 2], n_features=4)
    only_two = FederatedClient("a", X[y < 2], y[y < 2])
    only_two.receive_global_model(server.get_global_model())
    update = only_two.train_local()
    assert update.parameters[0].shape == (3, 4)
    assert server.receive_update(update)


def test_classifier_without_label_set_and_unsupported_models_are_refused():
    with pytest.raises(InvalidInputError, match="classes"):
        FederatedServer(LogisticRegression(), n_features=3)
    with pytest.raises(UnsupportedModelError, match="RandomForest"):
        FederatedServer(RandomForestClassifier(), classes=[0, 1], n_features=3)


@pytest.fixture
def round_one(cancer):
    X, y = cancer
    server = FederatedServer(
        LogisticRegression(), classes=[0, 1], n_features=30, clients=["a", "b", "c"],
        max_update_norm=50.0,
    )
    server.configure_round(["a", "b"])
    client = FederatedClient("a", X[:100], y[:100])
    client.receive_global_model(server.get_global_model())
    return server, client.train_local()


def _with(update, **changes):
    fields = dict(
        client_id=update.client_id, round=update.round, parameters=update.parameters,
        num_examples=update.num_examples, metrics=update.metrics,
    )
    fields.update(changes)
    return ClientUpdate(**fields)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda u: _with(u, parameters=[u.parameters[0][:, :5], u.parameters[1]]), "shape"),
        (lambda u: _with(u, parameters=u.parameters[:1]), "shape"),
        (lambda u: _with(u, parameters=[u.parameters[0].astype(int), u.parameters[1]]), "dtype"),
        (lambda u: _with(u, parameters=[u.parameters[0] * np.nan, u.parameters[1]]), "NaN"),
        (lambda u: _with(u, parameters=[u.parameters[0] + np.inf, u.parameters[1]]), "NaN"),
        (lambda u: _with(u, parameters=[u.parameters[0] * 1e6, u.parameters[1]]), "norm"),
        (lambda u: _with(u, client_id="mallory"), "unknown"),
        (lambda u: _with(u, client_id="c"), "not selected"),
        (lambda u: _with(u, round=0), "round"),
        (lambda u: _with(u, num_examples=0), "num_examples"),
        (lambda u: "not an update", "ClientUpdate"),
    ],
)
def test_malformed_updates_are_rejected_with_a_reason(round_one, change, reason, caplog):
    server, good = round_one
    with caplog.at_level(logging.WARNING, logger="fedge.federated"):
        assert not server.receive_update(change(good))
    assert reason in server.history.rejections[-1].reason
    assert reason in caplog.text
    # nothing was averaged in: the good update alone makes the round
    assert server.receive_update(good)
    server.aggregate_updates()
    assert server.history.rounds[-1].accepted == 1
    assert server.history.rounds[-1].rejected == 1


def test_duplicate_updates_are_rejected(round_one):
    server, good = round_one
    assert server.receive_update(good)
    assert not server.receive_update(good)
    assert "duplicate" in server.history.rejections[-1].reason


def test_a_round_without_updates_keeps_the_model(round_one):
    server, _ = round_one
    before = server.global_parameters
    server.aggregate_updates()
    assert all(np.array_equal(p, q) for p, q in zip(before, server.global_parameters, strict=True))
    assert server.history.rounds[-1].accepted == 0


def test_client_level_dp_needs_a_sum_based_strategy():
    privacy = DifferentialPrivacy(level="client", noise_multiplier=1.0)
    with pytest.raises(UnsupportedOperationError, match="median"):
        FederatedServer(
            LogisticRegression(), "median", classes=[0, 1], n_features=3, privacy=privacy
        )


def test_budget_refuses_the_round_that_would_exceed_it(cancer):
    X, y = cancer
    privacy = DifferentialPrivacy(
        level="client", noise_multiplier=4.0, target_epsilon=3.0, delta=1e-5
    )
    server = FederatedServer(
        LogisticRegression(), classes=[0, 1], n_features=30, privacy=privacy
    )
    clients = _hospitals(X, y)
    ids = [c.client_id for c in clients]
    spent = []
    with pytest.raises(PrivacyBudgetExhausted, match="budget"):
        for _ in range(100):
            server.configure_round(ids)
            for client in clients:
                client.receive_global_model(server.get_global_model())
                server.receive_update(client.train_local())
            server.aggregate_updates()
            spent.append(server.epsilon)
    assert len(spent) >= 2
    assert 0 < spent[-1] <= 3.0
    assert spent == sorted(spent)
    assert [r.epsilon for r in server.history.rounds] == spent


class _RecordingSum:
    """A stand-in for a masking layer: sees only payloads, hands back the sum."""

    def __init__(self):
        from fedge.federated import PlainSum

        self.inner = PlainSum()
        self.seen = []

    def encode(self, update, weight):
        payload = self.inner.encode(update, weight)
        self.seen.append(update.client_id)
        return payload

    def aggregate(self, payloads):
        return self.inner.aggregate(payloads)


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_sum_based_strategies_aggregate_through_the_aggregator_seam(cancer, strategy):
    from fedge.federated import make_strategy

    X, y = cancer
    recorder = _RecordingSum()
    server = FederatedServer(
        LogisticRegression(), strategy, classes=[0, 1], n_features=30, aggregator=recorder
    )
    start = server.global_parameters
    updates = []
    for client in _hospitals(X, y):
        client.receive_global_model(server.get_global_model())
        updates.append(client.train_local())
        server.receive_update(updates[-1])
    server.aggregate_updates()
    assert recorder.seen == ["hospital_1", "hospital_2", "hospital_3"]
    direct = make_strategy(strategy).aggregate(1, start, updates, np.random.default_rng(0))
    assert all(
        np.array_equal(p, q) for p, q in zip(direct, server.global_parameters, strict=True)
    )


def test_a_malformed_first_update_cannot_crash_an_uninitialised_server():
    server = FederatedServer(LogisticRegression(), classes=[0, 1])
    for params in ([], [np.zeros(3)], [np.zeros((0, 3))]):
        bad = ClientUpdate("a", 1, params, 10)
        assert not server.receive_update(bad)
        assert "shape" in server.history.rejections[-1].reason
    assert server.spec is None
