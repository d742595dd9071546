"""Local trainers: gradients against finite differences, DP-SGD clipping, training, and the
round trip parameters -> fitted scikit-learn estimator -> fedge IR."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import fedge
from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
from fedge.federated.messages import flatten
from fedge.federated.privacy import clip_rows
from fedge.federated.training import (
    DEFAULT_L2,
    ModelKind,
    ModelSpec,
    TrainingConfig,
    check_parameters,
    estimator_from_parameters,
    gradients,
    init_parameters,
    loss,
    metrics,
    parameters_from_estimator,
    per_example_gradients,
    predictions,
    probabilities,
    raw_scores,
    spec_from_estimator,
    train,
)

N_FEATURES = 4


def _data(kind_classes, n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    if kind_classes is None:
        y = X @ rng.normal(size=N_FEATURES) + 0.3 * rng.normal(size=n)
    else:
        y = np.asarray(kind_classes)[np.arange(n) % len(kind_classes)]
        rng.shuffle(y)
    return X, y


# (id, estimator, classes) for every kind and head
CASES = [
    ("logistic-binary", LogisticRegression(), [0, 1]),
    ("logistic-multi", LogisticRegression(), ["a", "b", "c"]),
    ("linear", LinearRegression(), None),
    ("ridge", Ridge(alpha=2.0), None),
    ("sgd-log-binary", SGDClassifier(loss="log_loss"), [3, 7]),
    ("sgd-log-multi", SGDClassifier(loss="log_loss"), [0, 1, 2]),
    ("sgd-hinge-binary", SGDClassifier(loss="hinge"), [0, 1]),
    ("sgd-hinge-multi", SGDClassifier(loss="hinge"), [0, 1, 2, 3]),
    ("sgd-regressor", SGDRegressor(), None),
    ("mlp-binary-relu", MLPClassifier(hidden_layer_sizes=(5, 3), activation="relu"), [0, 1]),
    ("mlp-multi-tanh", MLPClassifier(hidden_layer_sizes=(6,), activation="tanh"), [0, 1, 2]),
    ("mlp-multi-relu", MLPClassifier(hidden_layer_sizes=(5, 4), activation="relu"), [1, 2, 3]),
    ("mlp-logistic", MLPClassifier(hidden_layer_sizes=(4,), activation="logistic"), [0, 1]),
    ("mlp-regressor-relu", MLPRegressor(hidden_layer_sizes=(5, 3)), None),
    ("mlp-regressor-identity", MLPRegressor(hidden_layer_sizes=(3,), activation="identity"), None),
]
IDS = [c[0] for c in CASES]


def _case(case, *, l2=0.01, seed=0, n=40):
    _, est, classes = case
    spec = spec_from_estimator(est, n_features=N_FEATURES, classes=classes, l2=l2)
    X, y = _data(classes, n=n, seed=seed)
    params = init_parameters(spec, np.random.default_rng(seed))
    if not spec.kind.is_mlp:  # zeros sit on the hinge's kink: start from random weights
        params = [np.random.default_rng(seed + 1).normal(scale=0.5, size=p.shape) for p in params]
    return spec, params, X, y


def _unflatten(spec, vector):
    out, start = [], 0
    for shape in spec.parameter_shapes:
        size = int(np.prod(shape))
        out.append(vector[start : start + size].reshape(shape))
        start += size
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_per_example_gradients_match_central_differences(case):
    spec, params, X, y = _case(case)
    data_only = dataclasses.replace(spec, l2=0.0)
    rows = np.arange(8)
    if spec.kind is ModelKind.SGD_CLASSIFIER and spec.loss == "hinge":
        Z = raw_scores(spec, params, X)
        T = np.asarray([[label == c for c in spec.classes] for label in y], dtype=float)
        T = T[:, 1:] if Z.shape[1] == 1 else T
        margin = np.abs(1.0 - (2 * T - 1) * Z).min(axis=1)
        rows = np.flatnonzero(margin > 1e-3)[:8]  # away from the kinks
        assert rows.size >= 4
    G = per_example_gradients(spec, params, X[rows], y[rows])
    assert G.shape == (rows.size, spec.n_parameters)
    theta = flatten(params)
    eps = 1e-6
    for r, i in enumerate(rows):
        fd = np.empty_like(theta)
        for j in range(theta.size):
            up, down = theta.copy(), theta.copy()
            up[j] += eps
            down[j] -= eps
            f_up = loss(data_only, _unflatten(spec, up), X[i : i + 1], y[i : i + 1])
            f_down = loss(data_only, _unflatten(spec, down), X[i : i + 1], y[i : i + 1])
            fd[j] = (f_up - f_down) / (2 * eps)
        np.testing.assert_allclose(G[r], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mean_of_per_example_gradients_is_the_gradient_without_l2(case):
    spec, params, X, y = _case(case, l2=0.05)
    G = per_example_gradients(spec, params, X, y)
    full = gradients(spec, params, X, y)
    l2_term = [0.05 * p if i % 2 == 0 else np.zeros_like(p) for i, p in enumerate(params)]
    expected = flatten(full) - flatten(l2_term)
    np.testing.assert_allclose(G.mean(axis=0), expected, rtol=1e-10, atol=1e-12)
    assert [g.shape for g in full] == spec.parameter_shapes


def test_clipped_rows_have_norm_at_most_c():
    rng = np.random.default_rng(3)
    G = rng.normal(size=(200, 17)) * rng.uniform(0, 5, size=(200, 1))
    G[0] = 0.0  # a zero gradient stays zero (no division by zero)
    before = G.copy()
    clipped = clip_rows(G, clip_norm=1.5)
    norms = np.linalg.norm(clipped, axis=1)
    assert np.all(norms <= 1.5 * (1 + 1e-12))
    small = np.linalg.norm(G, axis=1) <= 1.5
    np.testing.assert_array_equal(clipped[small], G[small])  # short rows untouched
    np.testing.assert_array_equal(G, before)
    # Clipping scales: the direction of long rows is kept.
    big = ~small
    cos = np.einsum("ij,ij->i", clipped[big], G[big]) / (
        norms[big] * np.linalg.norm(G[big], axis=1)
    )
    np.testing.assert_allclose(cos, 1.0)


def test_dp_sgd_step_is_bounded_by_the_clip_norm():
    spec, params, X, y = _case(CASES[1], l2=0.0)
    X = X * 100.0  # huge gradients: every row is clipped
    config = TrainingConfig(batch_size=len(X), learning_rate=1.0, dp_clip_norm=0.25)
    result = train(spec, params, X, y, config, np.random.default_rng(0))
    assert result.steps == 1 and result.sampling_rate == 1.0 and result.noise_multiplier == 0.0
    step = flatten(result.parameters) - flatten(params)
    assert np.linalg.norm(step) <= 0.25 * (1 + 1e-12)
    # With q = 1 the Poisson batch is every row: the step is minus the mean clipped gradient.
    G = clip_rows(per_example_gradients(spec, params, X, y), clip_norm=0.25)
    np.testing.assert_allclose(step, -G.mean(axis=0), rtol=1e-12, atol=1e-15)


def test_dp_sgd_noise_sampling_and_accounting_fields():
    spec, params, X, y = _case(CASES[0], l2=0.0, n=200)
    config = TrainingConfig(
        epochs=2, batch_size=20, dp_clip_norm=1.0, dp_noise_multiplier=1.1, learning_rate=0.05
    )
    a = train(spec, params, X, y, config, np.random.default_rng(1))
    b = train(spec, params, X, y, config, np.random.default_rng(2))
    assert a.steps == 2 * 10 and a.sampling_rate == pytest.approx(0.1)
    assert a.noise_multiplier == 1.1 and a.num_examples == 200
    assert not np.allclose(flatten(a.parameters), flatten(b.parameters))
    shuffled = train(
        spec,
        params,
        X,
        y,
        dataclasses.replace(config, dp_sampling="shuffle"),
        np.random.default_rng(1),
    )
    assert shuffled.steps == 20


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_reduces_the_loss(case):
    spec, _, X, y = _case(case, l2=1e-3, n=300)
    params = init_parameters(spec, np.random.default_rng(0))
    for optimizer in ("sgd", "adam"):
        config = TrainingConfig(epochs=5, batch_size=16, optimizer=optimizer)
        result = train(spec, params, X, y, config, np.random.default_rng(1))
        assert result.loss_after < result.loss_before
        assert result.loss_before == pytest.approx(loss(spec, params, X, y))
        assert result.loss_after == pytest.approx(loss(spec, result.parameters, X, y))
        assert result.steps == 5 * 19 and result.num_examples == 300


def test_momentum_sgd_trains():
    spec, _, X, y = _case(CASES[1], n=300)
    params = init_parameters(spec, np.random.default_rng(0))
    result = train(
        spec,
        params,
        X,
        y,
        TrainingConfig(epochs=3, momentum=0.9, learning_rate=0.01),
        np.random.default_rng(0),
    )
    assert result.loss_after < result.loss_before


def test_logistic_regression_on_breast_cancer_matches_sklearn():
    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train_idx, test_idx = order[:400], order[400:]
    scaler = StandardScaler().fit(X[train_idx])
    X_train, X_test = scaler.transform(X[train_idx]), scaler.transform(X[test_idx])
    reference = LogisticRegression().fit(X_train, y[train_idx])
    ref_acc = reference.score(X_test, y[test_idx])

    template = LogisticRegression()
    spec = spec_from_estimator(template, n_features=X.shape[1], classes=[0, 1], n_samples=400)
    assert spec.l2 == pytest.approx(1 / 400)
    config = TrainingConfig(epochs=20, batch_size=32)
    result = train(spec, init_parameters(spec, rng), X_train, y[train_idx], config, rng)
    est = estimator_from_parameters(spec, result.parameters, template)
    acc = est.score(X_test, y[test_idx])
    assert acc >= ref_acc - 0.02
    assert metrics(spec, result.parameters, X_test, y[test_idx])["accuracy"] == pytest.approx(acc)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_estimator_round_trip_agrees_with_numpy_and_fedge(case):
    spec, params, X, y = _case(case)
    template = case[1]
    est = estimator_from_parameters(spec, params, template)
    assert type(est) is type(template) and est is not template
    assert not hasattr(template, "n_features_in_")  # the template stays unfitted
    model = fedge.lower(est)
    labels = predictions(spec, params, X)
    np.testing.assert_array_equal(est.predict(X), labels)
    np.testing.assert_array_equal(fedge.predict(model, X), labels)
    if spec.classes is None:
        np.testing.assert_allclose(est.predict(X), raw_scores(spec, params, X)[:, 0], rtol=1e-12)
        m = metrics(spec, params, X, y)
        assert m["r2"] == pytest.approx(est.score(X, y))
    elif spec.kind is ModelKind.SGD_CLASSIFIER and spec.loss == "hinge":
        with pytest.raises(UnsupportedOperationError):
            probabilities(spec, params, X)
        scores = raw_scores(spec, params, X)
        decision = est.decision_function(X)
        np.testing.assert_allclose(decision.reshape(scores.shape), scores, rtol=1e-12)
    else:
        proba = probabilities(spec, params, X)
        np.testing.assert_allclose(est.predict_proba(X), proba, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(fedge.predict_proba(model, X), proba, rtol=1e-9, atol=1e-12)
        assert est.score(X, y) == pytest.approx(metrics(spec, params, X, y)["accuracy"])
        np.testing.assert_array_equal(est.classes_, spec.classes)
    # and back: the estimator's parameters are the ones we put in
    back = parameters_from_estimator(est, spec)
    for a, b in zip(back, params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_parameters_from_a_fitted_sklearn_estimator():
    X, y = _data([0, 1, 2], n=90)
    fitted = LogisticRegression().fit(X, y)
    spec = spec_from_estimator(fitted, n_features=N_FEATURES)  # classes from classes_
    np.testing.assert_array_equal(spec.classes, [0, 1, 2])
    params = parameters_from_estimator(fitted, spec)
    assert [p.shape for p in params] == spec.parameter_shapes
    assert params[0] is not fitted.coef_ and params[0].dtype == np.float64
    np.testing.assert_allclose(probabilities(spec, params, X), fitted.predict_proba(X))
    # an estimator fitted on fewer classes than declared is refused
    wider = spec_from_estimator(fitted, n_features=N_FEATURES, classes=[0, 1, 2, 3])
    with pytest.raises(InvalidInputError, match="classes"):
        parameters_from_estimator(fitted, wider)
    mlp = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2000, random_state=0)
    mlp.fit(X, X[:, 0])
    mspec = spec_from_estimator(mlp, n_features=N_FEATURES)
    np.testing.assert_allclose(
        predictions(mspec, parameters_from_estimator(mlp, mspec), X), mlp.predict(X), rtol=1e-12
    )


def test_client_with_two_of_three_classes_trains_the_full_shape():
    spec = spec_from_estimator(LogisticRegression(), n_features=N_FEATURES, classes=[0, 1, 2])
    X, y = _data([0, 2], n=50)
    result = train(
        spec,
        init_parameters(spec, np.random.default_rng(0)),
        X,
        y,
        TrainingConfig(),
        np.random.default_rng(0),
    )
    assert [p.shape for p in result.parameters] == [(3, N_FEATURES), (3,)]
    mlp = spec_from_estimator(
        MLPClassifier(hidden_layer_sizes=(4,)), n_features=N_FEATURES, classes=["x", "y", "z"]
    )
    result = train(
        mlp,
        init_parameters(mlp, np.random.default_rng(0)),
        X,
        np.where(y == 0, "x", "y"),
        TrainingConfig(),
        np.random.default_rng(0),
    )
    assert result.parameters[-1].shape == (3,)


def test_fedprox_with_a_huge_mu_stays_near_the_global_model():
    spec, _, X, y = _case(CASES[1], n=200)
    start = init_parameters(spec, np.random.default_rng(0))
    global_params = [np.full(s, 0.3) for s in spec.parameter_shapes]
    free = train(
        spec,
        start,
        X,
        y,
        TrainingConfig(epochs=3, learning_rate=0.05),
        np.random.default_rng(0),
        global_parameters=global_params,
    )
    prox = train(
        spec,
        start,
        X,
        y,
        TrainingConfig(epochs=3, learning_rate=0.05, proximal_mu=15.0),
        np.random.default_rng(0),
        global_parameters=global_params,
    )
    distance = np.linalg.norm(flatten(prox.parameters) - flatten(global_params))
    assert distance < 0.05
    assert np.linalg.norm(flatten(free.parameters) - flatten(global_params)) > 10 * distance
    # the default anchor is the starting point
    anchored = train(
        spec,
        global_params,
        X,
        y,
        TrainingConfig(learning_rate=0.05, proximal_mu=15.0),
        np.random.default_rng(0),
    )
    assert np.linalg.norm(flatten(anchored.parameters) - flatten(global_params)) < 0.05


@pytest.mark.parametrize("dp", [False, True])
def test_training_is_deterministic_for_a_seed_and_does_not_mutate_inputs(dp):
    spec, params, X, y = _case(CASES[10], n=100)
    config = TrainingConfig(
        epochs=2,
        batch_size=10,
        optimizer="adam",
        dp_clip_norm=1.0 if dp else None,
        dp_noise_multiplier=0.8 if dp else 0.0,
    )
    copies = [p.copy() for p in params], X.copy(), y.copy()
    a = train(spec, params, X, y, config, np.random.default_rng(42), global_parameters=params)
    b = train(spec, params, X, y, config, np.random.default_rng(42), global_parameters=params)
    for pa, pb in zip(a.parameters, b.parameters, strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert a.loss_after == b.loss_after
    for p, c in zip(params, copies[0], strict=True):
        np.testing.assert_array_equal(p, c)
    np.testing.assert_array_equal(X, copies[1])
    np.testing.assert_array_equal(y, copies[2])
    assert all(p is not q for p, q in zip(a.parameters, params, strict=True))


def test_init_parameters_is_seeded_glorot_for_mlps_and_zeros_for_linear():
    spec = spec_from_estimator(
        MLPClassifier(hidden_layer_sizes=(8,)), n_features=6, classes=[0, 1, 2]
    )
    a = init_parameters(spec, np.random.default_rng(5))
    b = init_parameters(spec, np.random.default_rng(5))
    assert [p.shape for p in a] == [(6, 8), (8,), (8, 3), (3,)]
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert np.abs(a[0]).max() <= np.sqrt(6 / 14) and np.abs(a[2]).max() <= np.sqrt(6 / 11)
    linear = spec_from_estimator(Ridge(), n_features=6)
    assert all(not p.any() for p in init_parameters(linear, np.random.default_rng(0)))


def test_no_intercept_keeps_the_intercept_at_zero():
    spec = spec_from_estimator(SGDRegressor(fit_intercept=False), n_features=N_FEATURES)
    X, y = _data(None, n=100)
    result = train(
        spec,
        init_parameters(spec, np.random.default_rng(0)),
        X,
        y + 5.0,
        TrainingConfig(epochs=2, proximal_mu=1.0),
        np.random.default_rng(0),
    )
    assert result.parameters[1][0] == 0.0 and result.loss_after < result.loss_before


def test_one_epoch_over_100k_rows_is_fast():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100_000, 30))
    y = (X @ rng.normal(size=30) > 0).astype(int)
    spec = spec_from_estimator(LogisticRegression(), n_features=30, classes=[0, 1])
    params = init_parameters(spec, rng)
    start = time.perf_counter()
    result = train(spec, params, X, y, TrainingConfig(), rng)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"one epoch took {elapsed:.2f} s"
    assert result.loss_after < 0.2
    start = time.perf_counter()
    G = per_example_gradients(spec, params, X[:10_000], y[:10_000])
    assert G.shape == (10_000, 31) and time.perf_counter() - start < 0.5


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "estimator",
    [RandomForestClassifier(), SVC(), make_pipeline(StandardScaler(), LogisticRegression())],
)
def test_estimators_without_a_trainer_are_refused(estimator):
    with pytest.raises(UnsupportedModelError, match=type(estimator).__name__) as info:
        spec_from_estimator(estimator, n_features=3, classes=[0, 1])
    assert "LogisticRegression" in str(info.value) and "fedge.federated.trees" in str(info.value)


@pytest.mark.parametrize(
    "estimator",
    [
        SGDClassifier(loss="modified_huber"),
        SGDClassifier(penalty="l1"),
        SGDRegressor(loss="huber"),
        LogisticRegression(l1_ratio=1.0, solver="saga"),
        LogisticRegression(class_weight="balanced"),
    ],
)
def test_options_without_a_trainer_are_refused(estimator):
    with pytest.raises(UnsupportedModelError):
        spec_from_estimator(estimator, n_features=3, classes=[0, 1])


def test_l2_mapping_from_sklearn_penalties():
    assert spec_from_estimator(LinearRegression(), n_features=2).l2 == 0.0
    assert spec_from_estimator(Ridge(alpha=3.0), n_features=2, n_samples=300).l2 == 0.01
    assert spec_from_estimator(Ridge(alpha=3.0), n_features=2).l2 == DEFAULT_L2
    assert spec_from_estimator(SGDRegressor(alpha=0.5), n_features=2).l2 == 0.5
    assert spec_from_estimator(SGDRegressor(penalty=None), n_features=2).l2 == 0.0
    assert (
        spec_from_estimator(
            LogisticRegression(C=2.0), n_features=2, classes=[0, 1], n_samples=100
        ).l2
        == 0.005
    )
    assert spec_from_estimator(LogisticRegression(C=np.inf), n_features=2, classes=[0, 1]).l2 == 0
    assert spec_from_estimator(MLPRegressor(alpha=0.1), n_features=2, n_samples=10).l2 == 0.01
    assert spec_from_estimator(Ridge(), n_features=2, l2=0.7).l2 == 0.7


def test_classifier_without_classes_is_refused():
    with pytest.raises(InvalidInputError, match="classes="):
        spec_from_estimator(LogisticRegression(), n_features=3)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        spec_from_estimator(MLPClassifier(), n_features=3, classes=[1])
    with pytest.raises(InvalidInputError, match="regressor"):
        ModelSpec(kind=ModelKind.LINEAR, n_features=3, classes=[0, 1])


def test_check_parameters_rejects_malformed_updates():
    spec = spec_from_estimator(LogisticRegression(), n_features=3, classes=[0, 1, 2])
    good = [np.zeros((3, 3)), np.zeros(3)]
    out = check_parameters(spec, good)
    assert out[0] is not good[0] and out[0].dtype == np.float64
    with pytest.raises(InvalidInputError, match=r"expected shapes \[\(3, 3\), \(3,\)\]"):
        check_parameters(spec, [np.zeros((1, 3)), np.zeros(1)])
    with pytest.raises(InvalidInputError, match="expected shapes"):
        check_parameters(spec, good[:1])
    with pytest.raises(InvalidInputError, match="NaN"):
        check_parameters(spec, [np.full((3, 3), np.nan), np.zeros(3)])
    with pytest.raises(InvalidInputError, match="list"):
        check_parameters(spec, np.zeros(12))
    with pytest.raises(InvalidInputError):
        train(
            spec,
            [np.zeros((2, 3)), np.zeros(2)],
            np.zeros((4, 3)),
            [0, 1, 2, 0],
            TrainingConfig(),
            np.random.default_rng(0),
        )


def test_bad_data_is_refused():
    spec = spec_from_estimator(LogisticRegression(), n_features=3, classes=[0, 1])
    params = init_parameters(spec, np.random.default_rng(0))
    X = np.ones((4, 3))
    y = np.array([0, 1, 0, 1])
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match=r"X has 2 features, but the model expects 3"):
        train(spec, params, X[:, :2], y, TrainingConfig(), rng)
    with pytest.raises(InvalidInputError, match="NaN"):
        loss(spec, params, np.where(X > 0, np.nan, X), y)
    with pytest.raises(InvalidInputError, match="Inf"):
        gradients(spec, params, np.full((4, 3), np.inf), y)
    with pytest.raises(InvalidInputError, match="no rows"):
        train(spec, params, np.zeros((0, 3)), [], TrainingConfig(), rng)
    with pytest.raises(InvalidInputError, match=r"labels \[5\]"):
        train(spec, params, X, [0, 1, 5, 1], TrainingConfig(), rng)
    with pytest.raises(InvalidInputError, match="rows"):
        loss(spec, params, X, y[:3])
    reg = spec_from_estimator(Ridge(), n_features=3)
    with pytest.raises(InvalidInputError, match="NaN"):
        loss(reg, init_parameters(reg, rng), X, [0.0, np.nan, 1.0, 2.0])


def test_training_config_validation_and_overrides():
    with pytest.raises(InvalidInputError, match="batch_size"):
        TrainingConfig(batch_size=0)
    with pytest.raises(InvalidInputError, match="optimizer"):
        TrainingConfig(optimizer="rmsprop")
    with pytest.raises(InvalidInputError, match="dp_clip_norm"):
        TrainingConfig(dp_noise_multiplier=1.0)
    with pytest.raises(InvalidInputError, match="dp_clip_norm"):
        TrainingConfig(dp_clip_norm=0.0)
    config = TrainingConfig().updated({"proximal_mu": 0.1, "epochs": 2})
    assert config.proximal_mu == 0.1 and config.epochs == 2
    with pytest.raises(InvalidInputError, match="unknown training settings"):
        TrainingConfig().updated({"mu": 0.1})
