"""Lowering: the registry, unsupported estimators and options, unfitted estimators."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

import fedge
from fedge.errors import NotFittedError, UnsupportedModelError
from zoo import case

X = np.random.default_rng(0).normal(size=(60, 3))
y = (X[:, 0] > 0).astype(int)


def test_unsupported_estimator_names_itself_and_the_supported_ones() -> None:
    with pytest.raises(UnsupportedModelError, match=r"KNeighborsClassifier.*Supported:.*Ridge"):
        fedge.lower(KNeighborsClassifier().fit(X, y))
    with pytest.raises(UnsupportedModelError, match="object"):
        fedge.lower(object())


def test_unfitted_estimator() -> None:
    with pytest.raises(NotFittedError, match="LogisticRegression is not fitted"):
        fedge.lower(LogisticRegression())


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (make_pipeline(PCA(2), LogisticRegression()), r"step 'pca' \(PCA\) is not supported"),
        (make_pipeline(MinMaxScaler(clip=True), Ridge()), "clip=True"),
        (make_pipeline(SimpleImputer(add_indicator=True), Ridge()), "add_indicator"),
        (make_pipeline(SimpleImputer(missing_values=0.0), Ridge()), "imputes NaN only"),
    ],
)
def test_unsupported_pipeline_parts(estimator, message) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        fedge.lower(estimator.fit(X, y))


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_imputer_dropping_empty_features_is_refused() -> None:
    Xe = X.copy()
    Xe[:, 1] = np.nan
    with pytest.raises(UnsupportedModelError, match=r"feature\(s\) \[1\].*keep_empty_features"):
        fedge.lower(make_pipeline(SimpleImputer(), Ridge()).fit(Xe, y))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_multilabel_and_multioutput_classifiers_are_refused() -> None:
    Y = np.stack([y, 1 - y], axis=1)
    with pytest.raises(UnsupportedModelError, match="multilabel"):
        fedge.lower(MLPClassifier(hidden_layer_sizes=(2,), max_iter=5).fit(X, Y))
    with pytest.raises(UnsupportedModelError, match="multi-output"):
        fedge.lower(DecisionTreeClassifier().fit(X, Y))


def test_subclass_of_a_supported_estimator_is_lowered() -> None:
    class MyScaler(StandardScaler):
        pass

    class MyRidge(Ridge):
        pass

    model = fedge.lower(make_pipeline(MyScaler(), MyRidge()).fit(X, y))
    est = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    np.testing.assert_allclose(fedge.predict(model, X), est.predict(X), rtol=1e-12)


def test_lowering_is_deterministic_and_records_provenance() -> None:
    est = case("forest_binary").estimator
    a, b = fedge.lower(est), fedge.lower(est)
    assert fedge.ir.models_equal(a, b)
    assert a.metadata["source"]["estimator"] == "RandomForestClassifier"
    assert a.metadata["source"]["library"] == "scikit-learn"


def test_sklearn_tree_thresholds_are_stored_as_exact_float32() -> None:
    trees = fedge.lower(case("tree_binary").estimator).steps[0]
    assert trees.threshold.dtype == np.float32
    assert trees.comparison is fedge.ir.Comparison.LE


def test_supported_list_covers_the_issue_matrix() -> None:
    names = {s.split(".", 1)[1] for s in fedge.supported_estimators()}
    expected = {
        "LogisticRegression",
        "LinearRegression",
        "Ridge",
        "Lasso",
        "ElasticNet",
        "SGDClassifier",
        "SGDRegressor",
        "LinearSVC",
        "LinearSVR",
        "Perceptron",
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "MLPClassifier",
        "MLPRegressor",
        "Pipeline",
    }
    assert expected <= names


def test_boosting_options_without_a_lowering_are_named() -> None:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
    )

    with pytest.raises(UnsupportedModelError, match="loss='exponential'"):
        fedge.lower(GradientBoostingClassifier(loss="exponential", n_estimators=2).fit(X, y))
    with pytest.raises(UnsupportedModelError, match="init=LinearRegression"):
        from sklearn.linear_model import LinearRegression

        fedge.lower(GradientBoostingRegressor(init=LinearRegression(), n_estimators=2).fit(X, y))
    Xc = X.copy()
    Xc[:, 2] = np.arange(60) % 3
    hgb = HistGradientBoostingClassifier(categorical_features=[2], max_iter=5).fit(Xc, Xc[:, 2] > 0)
    with pytest.raises(UnsupportedModelError, match=r"categorical feature\(s\) \[2\]"):
        fedge.lower(hgb)
