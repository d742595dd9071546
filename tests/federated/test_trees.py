"""Federated tree ensembles: bagging, and histogram boosting that equals the centralized run."""

import dataclasses

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.model_selection import train_test_split

import fedge
from fedge.errors import InvalidInputError, SecureAggregationError
from fedge.federated.trees import (
    Dropout,
    FederatedHistGradientBoosting,
    HistogramClient,
    combine_tree_models,
    federated_bagging,
    grid_bin_edges,
    partition_rows,
    quantile_bin_edges,
    simulate_bagging,
    simulate_histogram_boosting,
)
from fedge.ir import models_equal
from fedge.ir.treeops import join_trees, split_trees

ARRAYS = (
    "feature",
    "threshold",
    "left",
    "right",
    "missing_left",
    "leaf_values",
    "roots",
    "tree_offset",
    "base_score",
)
IRIS = np.array(["setosa", "versicolor", "virginica"])


def _with_nan(X, rate=0.1, seed=0):
    X = np.array(X, dtype=np.float64)
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X


def _bounds(X):
    return np.nanmin(X, axis=0), np.nanmax(X, axis=0)


def _same_trees(a, b):
    ea, eb = a.steps[0], b.steps[0]
    return all(
        np.array_equal(getattr(ea, k), getattr(eb, k))
        and getattr(ea, k).dtype == getattr(eb, k).dtype
        for k in ARRAYS
    )


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(_with_nan(X, 0.05), y, random_state=0, stratify=y)


# ------------------------------------------------------------------------------- bagging
def test_bagging_forest_is_the_weighted_mean_of_the_clients():
    X, y = load_iris(return_X_y=True)
    clients = partition_rows(X, IRIS[y], n_clients=3, scheme="dirichlet:0.3", random_state=0)
    held = [set(c[1]) for c in clients]
    assert any(len(h) < 3 for h in held)  # some clients miss labels, one may hold a single one
    model = federated_bagging(
        clients, classes=IRIS, estimator=RandomForestClassifier(n_estimators=5), random_state=0
    )
    step = model.steps[0]
    assert step.aggregation.value == "mean" and step.n_outputs == 3
    assert list(model.classes) == list(IRIS)
    # the same clients fitted by hand, each with its spawned seed
    seeds = np.random.SeedSequence(0).generate_state(3).tolist()
    rows = np.array([len(c[1]) for c in clients], dtype=float)
    expected = np.zeros((X.shape[0], 3))
    for (Xc, yc), seed, w in zip(clients, seeds, rows / rows.sum(), strict=True):
        codes = np.searchsorted(IRIS, yc)
        proba = np.zeros((X.shape[0], 3))
        if np.unique(codes).size == 1:
            proba[:, codes[0]] = 1.0
        else:
            est = RandomForestClassifier(n_estimators=5, random_state=seed % 2**31).fit(Xc, codes)
            proba[:, est.classes_] = est.predict_proba(X)
        expected += w * proba
    np.testing.assert_allclose(fedge.predict_proba(model, X), expected, rtol=0, atol=1e-12)
    assert set(fedge.predict(model, X)) <= set(IRIS)


def test_bagging_keeps_each_clients_trees_and_predictions():
    X, y = load_breast_cancer(return_X_y=True)
    clients = partition_rows(X, y, n_clients=3, random_state=1)
    fitted = [
        RandomForestClassifier(n_estimators=4, random_state=i).fit(*c)
        for i, c in enumerate(clients)
    ]
    model = combine_tree_models(fitted, weights="equal")
    trees = split_trees(model.steps[0])
    assert model.metadata["federated"]["trees_per_client"] == [4, 4, 4]
    for i, est in enumerate(fitted):  # equal weights and tree counts: leaves unscaled
        own = join_trees(model.steps[0], trees[4 * i : 4 * i + 4])
        alone = dataclasses.replace(model, steps=(own,))
        np.testing.assert_array_equal(fedge.predict_proba(alone, X), est.predict_proba(X))
    mean = np.mean([e.predict_proba(X) for e in fitted], axis=0)
    np.testing.assert_allclose(fedge.predict_proba(model, X), mean, atol=1e-12)


def test_bagging_boosted_models_average_their_margins():
    xgboost = pytest.importorskip("xgboost")
    X, y = load_breast_cancer(return_X_y=True)
    clients = partition_rows(X, y, n_clients=3, random_state=0)
    params = dict(n_estimators=8, max_depth=3, n_jobs=1)
    model = federated_bagging(
        clients, classes=[0, 1], estimator=xgboost.XGBClassifier(**params), weights=[1, 2, 1]
    )
    fitted = [xgboost.XGBClassifier(**params).fit(*c) for c in clients]
    margins = np.array([e.predict(X, output_margin=True) for e in fitted])
    expected = margins.T @ np.array([0.25, 0.5, 0.25])
    got = fedge.decision_function(model, X).ravel()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # XGBoost sums in float32
    assert model.metadata["federated"]["combination"] == "mean of margins"


def test_bagging_regression_and_simulate_helper():
    X, y = load_diabetes(return_X_y=True)
    model = simulate_bagging(
        X, y, n_clients=4, task="regression", estimator=ExtraTreesRegressor(n_estimators=3)
    )
    assert model.task.value == "regression" and model.steps[0].n_trees == 12
    assert np.corrcoef(fedge.predict(model, X), y)[0, 1] > 0.8


def test_bagging_errors_are_clear():
    X, y = load_breast_cancer(return_X_y=True)
    clients = partition_rows(X, y, n_clients=2, random_state=0)
    with pytest.raises(InvalidInputError, match="classes="):
        federated_bagging(clients)
    with pytest.raises(InvalidInputError, match="same columns"):
        federated_bagging([clients[0], (clients[1][0][:, :5], clients[1][1])], classes=[0, 1])
    with pytest.raises(InvalidInputError, match="outside the declared classes"):
        federated_bagging(clients, classes=[0, 2])
    with pytest.raises(InvalidInputError, match="weights"):
        federated_bagging(clients, classes=[0, 1], weights=[1, -1])
    xgboost = pytest.importorskip("xgboost")
    one_label = [(X[y == 0], y[y == 0]), (X, y)]
    with pytest.raises(InvalidInputError, match="single label"):
        federated_bagging(one_label, classes=[0, 1], estimator=xgboost.XGBClassifier())


# ----------------------------------------------------------------------- histogram boosting
CASES = {
    "binary": (lambda: load_breast_cancer(return_X_y=True), {"classes": [0, 1]}),
    "regression": (lambda: load_diabetes(return_X_y=True), {}),
    "multiclass": (lambda: load_iris(return_X_y=True), {"classes": [0, 1, 2]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_federated_boosting_equals_the_centralized_run(case):
    load, extra = CASES[case]
    X, y = load()
    X = _with_nan(X)
    params = dict(n_estimators=8, max_depth=3, feature_range=_bounds(X), **extra)
    scheme = "iid" if case == "regression" else "dirichlet:0.5"
    clients = partition_rows(X, y, n_clients=4, scheme=scheme, random_state=0)
    fed = FederatedHistGradientBoosting(**params).fit(clients)
    central = FederatedHistGradientBoosting(**params).fit([(X, y)])
    assert fed.bin_edges_.equals(central.bin_edges_)  # grid edges: pooled counts either way
    assert _same_trees(fed.model_, central.model_)  # identical splits, thresholds, leaves
    np.testing.assert_array_equal(
        fedge.decision_function(fed.model_, X), fedge.decision_function(central.model_, X)
    )
    step = fed.model_.steps[0]
    assert step.n_trees == 8 * (3 if case == "multiclass" else 1)
    assert step.max_depth <= 3 and step.aggregation.value == "sum"
    assert step.missing_left.any() and not step.missing_left.all()  # learned NaN directions
    # each client's own running predictions are exactly the exported model's scores
    c0 = fed._clients["client_0"]
    np.testing.assert_array_equal(
        c0.raw, fedge.decision_function(fed.model_, clients[0][0]).reshape(c0.raw.shape)
    )


def test_sketch_edges_and_histogram_sums_agree_with_the_pooled_data():
    X, y = load_iris(return_X_y=True)
    X = _with_nan(X)
    clients = partition_rows(X, y, n_clients=3, random_state=0)
    fed = FederatedHistGradientBoosting(classes=[0, 1, 2], n_estimators=2).fit(clients)
    # few distinct values: the merged sketch is exact, so it equals the pooled one
    assert fed.bin_edges_.equals(quantile_bin_edges(X))
    edges = grid_bin_edges(X, _bounds(X))
    parts = [HistogramClient(Xc, yc, client_id=str(i)) for i, (Xc, yc) in enumerate(clients)]
    pooled = HistogramClient(X, y, client_id="pooled")
    for c in [*parts, pooled]:
        c.label_counts(np.arange(3))
        c.start(edges, np.zeros(3))
        c.gradients("log_loss", 40, 40)
    request, outputs = np.arange(3), np.arange(3)
    summed = sum(c.histograms(request, outputs) for c in parts)
    np.testing.assert_array_equal(summed, pooled.histograms(request, outputs))
    assert summed.dtype == np.int64 and summed[..., 2].sum() == 3 * 4 * X.shape[0]


def test_accuracy_close_to_sklearn_hist_gradient_boosting(cancer):
    X_train, X_test, y_train, y_test = cancer
    fed = simulate_histogram_boosting(
        X_train,
        y_train,
        n_clients=5,
        partition="dirichlet:0.5",
        classes=[0, 1],
        n_estimators=60,
        max_depth=3,
        feature_range=_bounds(X_train),
    )
    hgb = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X_train, y_train)
    ours = np.mean(fedge.predict(fed.model_, X_test) == y_test)
    assert ours >= hgb.score(X_test, y_test) - 0.03
    assert ours > 0.92


@pytest.mark.parametrize("method", ["secagg", "secagg+"])
def test_secure_aggregation_gives_the_plain_model_exactly(method):
    X, y = load_iris(return_X_y=True)
    X = _with_nan(X)
    clients = partition_rows(X, y, n_clients=4, random_state=0)
    params = dict(classes=[0, 1, 2], n_estimators=3, max_depth=2, feature_range=_bounds(X))
    plain = FederatedHistGradientBoosting(**params).fit(clients)
    secure = FederatedHistGradientBoosting(secure_aggregation=method, **params).fit(clients)
    assert models_equal(plain.model_, secure.model_)  # integers in Z_2^64: no rounding at all
    assert secure.secure_seconds_ > 0
    with pytest.raises(InvalidInputError, match="sketch"):
        FederatedHistGradientBoosting(
            classes=[0, 1, 2], binning="sketch", secure_aggregation=method
        ).fit(clients)


@pytest.mark.parametrize("secure", [None, "secagg"])
def test_a_dropout_restarts_the_round_without_that_client(secure):
    X, y = load_diabetes(return_X_y=True)
    clients = partition_rows(X, y, n_clients=4, random_state=0)
    params = dict(n_estimators=3, max_depth=2, feature_range=_bounds(X), secure_aggregation=secure)
    full = FederatedHistGradientBoosting(**params).fit(clients)
    run = FederatedHistGradientBoosting(
        dropouts=[Dropout("client_2", round=1, level=1, stage=2)], **params
    ).fit(clients)
    logs = run.history_.rounds
    assert logs[1].dropped == ("client_2",) and logs[1].restarts == 1
    assert "client_2" not in logs[1].participants and "client_2" in logs[2].participants
    trees_full, trees_run = split_trees(full.model_.steps[0]), split_trees(run.model_.steps[0])
    np.testing.assert_array_equal(trees_full[0].leaf_values, trees_run[0].leaf_values)
    assert not np.array_equal(trees_full[1].leaf_values, trees_run[1].leaf_values)
    if secure:  # a client vanishing only during unmasking is still in the sum: nothing changes
        late = FederatedHistGradientBoosting(
            dropouts=[Dropout("client_2", round=1, level=1, stage=3)], **params
        ).fit(clients)
        assert models_equal(late.model_, full.model_) and late.history_.rounds[1].restarts == 0


class _Liar(HistogramClient):
    """Claims more rows in a child than its parent held (or negative counts)."""

    def __init__(self, *args, lie="negative", **kwargs):
        super().__init__(*args, **kwargs)
        self.lie = lie

    def histograms(self, nodes, node_output, *, totals_only=False):
        h = super().histograms(nodes, node_output, totals_only=totals_only)
        if self.lie == "negative":
            h[..., 2] = -h[..., 2]
        elif nodes.min() > 0:  # below the root: every child claims n_rows extra rows, in one
            first = [0] if totals_only else self._offsets[:-1]  # bin per feature (consistent
            h[:, first, 2] += self.n_rows  # alone, but more rows than its parent held)
        return h


@pytest.mark.parametrize("lie", ["negative", "inflate"])
def test_malformed_histograms_are_rejected(lie):
    X, y = load_breast_cancer(return_X_y=True)
    clients = partition_rows(X, y, n_clients=3, random_state=0)
    params = dict(classes=[0, 1], n_estimators=3, max_depth=3, feature_range=_bounds(X))
    honest = [HistogramClient(*c, client_id=f"c{i}") for i, c in enumerate(clients[:2])]
    liar = _Liar(*clients[2], client_id="liar", lie=lie)
    run = FederatedHistGradientBoosting(**params).fit([*honest, liar])
    reason = run.history_.rejections["liar"]
    assert ("negative" if lie == "negative" else "exceeds its parent") in reason
    assert all("liar" not in log.participants for log in run.history_.rounds)
    # the set-up sums (bin-edge counts, label counts) still hold the liar's rows; every tree
    # is grown from the honest clients alone
    assert run.model_.steps[0].n_trees == 3
    assert np.mean(fedge.predict(run.model_, X) == y) > 0.9
    liar = _Liar(*clients[2], client_id="liar", lie="negative")
    with pytest.raises(SecureAggregationError, match="inconsistent"):
        FederatedHistGradientBoosting(secure_aggregation="secagg", **params).fit([*honest, liar])


def test_federated_model_saves_and_compiles_to_c(tmp_path, cancer):
    from tools import require_tool

    X_train, X_test, y_train, _ = cancer
    fed = simulate_histogram_boosting(
        X_train,
        np.array(["malignant", "benign"])[y_train],
        n_clients=3,
        classes=["malignant", "benign"],
        n_estimators=5,
        max_depth=3,
    )
    model = fed.model_
    path = tmp_path / "boosted.fedge"
    fedge.save(model, path)
    loaded = fedge.load(path)
    np.testing.assert_array_equal(
        fedge.predict_proba(loaded, X_test), fedge.predict_proba(model, X_test)
    )
    assert set(fedge.predict(loaded, X_test)) <= {"malignant", "benign"}
    require_tool("gcc", "gcc")
    from fedge.deployment.verify import verify_c

    report = verify_c(model, X_test[:50])
    assert report.identical, report.as_dict()


def test_boosting_errors_are_clear():
    X, y = load_breast_cancer(return_X_y=True)
    clients = partition_rows(X, y, n_clients=2, random_state=0)
    with pytest.raises(InvalidInputError, match="classes="):
        FederatedHistGradientBoosting(loss="log_loss").fit(clients)
    with pytest.raises(InvalidInputError, match="number of features"):
        FederatedHistGradientBoosting(classes=[0, 1]).fit(
            [clients[0], (clients[1][0][:, :4], clients[1][1])]
        )
    with pytest.raises(InvalidInputError, match="outside the declared classes"):
        FederatedHistGradientBoosting(classes=[0, 5]).fit(clients)
    with pytest.raises(InvalidInputError, match="feature_range"):
        FederatedHistGradientBoosting(classes=[0, 1], binning="grid").fit(clients)
    with pytest.raises(InvalidInputError, match="max_depth"):
        FederatedHistGradientBoosting(classes=[0, 1], max_depth=-1).fit(clients)
    with pytest.raises(InvalidInputError, match="secagg"):
        FederatedHistGradientBoosting(classes=[0, 1], secure_aggregation="ckks").fit(clients)
