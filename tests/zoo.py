"""The model zoo: fitted estimators over the data shapes that break exporters.

Every parity test (runtime now; C, ONNX, TFLite... later) draws from here, so a
new frontend or dataset added once is checked by every backend. Data ships with
scikit-learn or is generated; seeds are fixed.

``zoo()`` returns :class:`Case` objects; fitting is cached per process.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_iris,
    make_classification,
    make_regression,
)
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.svm import LinearSVC, LinearSVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeClassifier
from xgboost import XGBClassifier, XGBRegressor, XGBRFClassifier


@dataclass(frozen=True)
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    task: str  # "binary", "multiclass", "regression"
    has_nan: bool = False


@dataclass(frozen=True)
class Case:
    """One zoo entry: an estimator factory and the dataset it is fitted on."""

    name: str
    make: Callable[[], Any]
    data: str
    tags: frozenset[str] = frozenset()

    @property
    def dataset(self) -> Dataset:
        return datasets()[self.data]

    @property
    def estimator(self) -> Any:
        return _fitted(self.name)


def _split(X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    idx = np.random.default_rng(seed).permutation(X.shape[0])
    cut = int(0.7 * X.shape[0])
    return X[idx[:cut]], y[idx[:cut]], X[idx[cut:]]


def _with_nan(X: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    X = X.copy()
    mask = np.random.default_rng(seed).random(X.shape) < fraction
    X[mask] = np.nan
    return X


@functools.cache
def datasets() -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}

    def add(name: str, X: Any, y: Any, task: str, has_nan: bool = False) -> None:
        X_tr, y_tr, X_te = _split(np.asarray(X, dtype=np.float64), np.asarray(y))
        out[name] = Dataset(name, X_tr, y_tr, X_te, task, has_nan)

    Xb, yb = load_breast_cancer(return_X_y=True)
    add("binary", Xb, yb, "binary")
    add("binary_nan", _with_nan(Xb, 0.1, 1), yb, "binary", has_nan=True)
    Xm, ym = make_classification(
        n_samples=900, n_features=12, n_informative=8, n_classes=4, random_state=0
    )
    add("multiclass", Xm, ym, "multiclass")
    add("multiclass_nan", _with_nan(Xm, 0.15, 2), ym, "multiclass", has_nan=True)
    Xi, yi = load_iris(return_X_y=True)
    add("strings", Xi, np.array(["setosa", "versicolor", "virginica"])[yi], "multiclass")
    add("binary_strings", Xb, np.array(["benign", "malignant"])[yb], "binary")
    Xr, yr = load_diabetes(return_X_y=True)
    add("regression", Xr, yr, "regression")
    add("regression_nan", _with_nan(Xr, 0.1, 3), yr, "regression", has_nan=True)
    Xt, yt = make_regression(n_samples=400, n_features=8, n_targets=2, noise=5.0, random_state=0)
    add("multitarget", Xt, yt, "regression")
    Xd, yd = make_classification(
        n_samples=3000, n_features=10, n_informative=6, flip_y=0.2, random_state=1
    )
    add("noisy", Xd, yd, "binary")
    return out


def _cases() -> list[Case]:
    rf = {"n_estimators": 25, "random_state": 0}
    mlp = {"hidden_layer_sizes": (16, 8), "max_iter": 200, "random_state": 0}
    c: list[Case] = [
        # ---- linear classifiers
        Case(
            "logreg_binary", lambda: make_pipeline(StandardScaler(), LogisticRegression()), "binary"
        ),
        Case("logreg_multinomial", lambda: LogisticRegression(max_iter=2000), "multiclass"),
        Case("logreg_strings", lambda: LogisticRegression(max_iter=2000), "strings"),
        Case(
            "sgd_log_multiclass",
            lambda: SGDClassifier(loss="log_loss", random_state=0),
            "multiclass",
        ),
        Case(
            "sgd_huber_binary",
            lambda: make_pipeline(
                MinMaxScaler(), SGDClassifier(loss="modified_huber", random_state=0)
            ),
            "binary",
        ),
        Case(
            "sgd_huber_multiclass",
            lambda: SGDClassifier(loss="modified_huber", random_state=0),
            "multiclass",
        ),
        Case(
            "sgd_hinge",
            lambda: make_pipeline(RobustScaler(), SGDClassifier(random_state=0)),
            "multiclass",
        ),
        Case(
            "linear_svc",
            lambda: make_pipeline(StandardScaler(), LinearSVC(random_state=0)),
            "binary_strings",
        ),
        Case(
            "perceptron",
            lambda: make_pipeline(MaxAbsScaler(), Perceptron(random_state=0)),
            "multiclass",
        ),
        Case("ridge_classifier", lambda: RidgeClassifier(), "multiclass"),
        Case(
            "logreg_imputed",
            lambda: make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()),
            "binary_nan",
            frozenset({"nan"}),
        ),
        # ---- linear regressors
        Case("linear_regression", LinearRegression, "regression"),
        Case("ridge_multitarget", Ridge, "multitarget"),
        Case("lasso", lambda: Lasso(alpha=0.1), "regression"),
        Case("elastic_net", lambda: ElasticNet(alpha=0.01), "regression"),
        Case(
            "sgd_regressor",
            lambda: make_pipeline(StandardScaler(), SGDRegressor(random_state=0)),
            "regression",
        ),
        Case(
            "linear_svr",
            lambda: make_pipeline(StandardScaler(), LinearSVR(random_state=0)),
            "regression",
        ),
        Case(
            "ridge_median_imputed",
            lambda: make_pipeline(SimpleImputer(strategy="median"), Ridge()),
            "regression_nan",
            frozenset({"nan"}),
        ),
        # ---- trees
        Case(
            "tree_binary",
            lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
            "binary",
            frozenset({"tree"}),
        ),
        Case(
            "tree_deep",
            lambda: DecisionTreeClassifier(random_state=0),
            "noisy",
            frozenset({"tree", "deep"}),
        ),
        Case(
            "tree_single_leaf",
            lambda: DecisionTreeClassifier(min_samples_split=10_000),
            "binary",
            frozenset({"tree"}),
        ),
        Case(
            "tree_nan",
            lambda: DecisionTreeClassifier(random_state=0),
            "multiclass_nan",
            frozenset({"tree", "nan"}),
        ),
        Case(
            "tree_strings",
            lambda: ExtraTreeClassifier(random_state=0),
            "strings",
            frozenset({"tree"}),
        ),
        Case(
            "tree_regressor",
            lambda: DecisionTreeRegressor(max_depth=8, random_state=0),
            "regression",
            frozenset({"tree"}),
        ),
        Case(
            "tree_regressor_nan",
            lambda: DecisionTreeRegressor(random_state=0),
            "regression_nan",
            frozenset({"tree", "nan"}),
        ),
        Case("forest_binary", lambda: RandomForestClassifier(**rf), "binary", frozenset({"tree"})),
        Case(
            "forest_multiclass",
            lambda: RandomForestClassifier(**rf, max_depth=8),
            "multiclass",
            frozenset({"tree"}),
        ),
        Case(
            "forest_nan",
            lambda: RandomForestClassifier(**rf),
            "binary_nan",
            frozenset({"tree", "nan"}),
        ),
        Case(
            "forest_strings",
            lambda: RandomForestClassifier(**rf),
            "binary_strings",
            frozenset({"tree"}),
        ),
        Case(
            "forest_regressor",
            lambda: RandomForestRegressor(**rf, max_depth=10),
            "regression",
            frozenset({"tree"}),
        ),
        Case(
            "forest_multitarget",
            lambda: RandomForestRegressor(**rf, max_depth=6),
            "multitarget",
            frozenset({"tree"}),
        ),
        Case(
            "forest_stumps",
            lambda: RandomForestRegressor(n_estimators=5, min_samples_split=10_000, random_state=0),
            "regression",
            frozenset({"tree"}),
        ),
        Case("extra_trees", lambda: ExtraTreesClassifier(**rf), "multiclass", frozenset({"tree"})),
        Case(
            "extra_trees_nan",
            lambda: ExtraTreesRegressor(**rf),
            "regression_nan",
            frozenset({"tree", "nan"}),
        ),
        Case(
            "scaled_forest_nan",
            lambda: make_pipeline(StandardScaler(), RandomForestClassifier(**rf)),
            "multiclass_nan",
            frozenset({"tree", "nan"}),
        ),
        # ---- boosting
        Case(
            "gb_binary",
            lambda: GradientBoostingClassifier(n_estimators=40, random_state=0),
            "binary",
            frozenset({"tree", "boosting"}),
        ),
        Case(
            "gb_multiclass",
            lambda: GradientBoostingClassifier(n_estimators=20, max_depth=4, random_state=0),
            "multiclass",
            frozenset({"tree", "boosting"}),
        ),
        Case(
            "gb_strings",
            lambda: GradientBoostingClassifier(n_estimators=10, init="zero", random_state=0),
            "binary_strings",
            frozenset({"tree", "boosting"}),
        ),
        Case(
            "gb_regressor_huber",
            lambda: GradientBoostingRegressor(loss="huber", random_state=0),
            "regression",
            frozenset({"tree", "boosting"}),
        ),
        Case(
            "hgb_binary_nan",
            lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
            "binary_nan",
            frozenset({"tree", "boosting", "nan"}),
        ),
        Case(
            "hgb_multiclass_nan",
            lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
            "multiclass_nan",
            frozenset({"tree", "boosting", "nan"}),
        ),
        Case(
            "hgb_strings",
            lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
            "strings",
            frozenset({"tree", "boosting"}),
        ),
        Case(
            "hgb_regressor_nan",
            lambda: HistGradientBoostingRegressor(max_iter=50, random_state=0),
            "regression_nan",
            frozenset({"tree", "boosting", "nan"}),
        ),
        Case(
            "hgb_poisson",
            lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=30, random_state=0),
            "regression",
            frozenset({"tree", "boosting"}),
        ),
        # ---- XGBoost (computes in float32: tag "float32")
        Case(
            "xgb_binary_nan",
            lambda: XGBClassifier(n_estimators=40, max_depth=4, random_state=0),
            "binary_nan",
            frozenset({"tree", "boosting", "nan", "float32", "xgboost"}),
        ),
        Case(
            "xgb_multiclass",
            lambda: XGBClassifier(n_estimators=20, random_state=0),
            "multiclass",
            frozenset({"tree", "boosting", "float32", "xgboost"}),
        ),
        Case(
            "xgb_multiclass_nan",
            lambda: XGBClassifier(n_estimators=20, max_depth=3, random_state=0),
            "multiclass_nan",
            frozenset({"tree", "boosting", "nan", "float32", "xgboost"}),
        ),
        Case(
            "xgb_regressor_nan",
            lambda: XGBRegressor(n_estimators=40, random_state=0),
            "regression_nan",
            frozenset({"tree", "boosting", "nan", "float32", "xgboost"}),
        ),
        Case(
            "xgb_poisson",
            lambda: XGBRegressor(objective="count:poisson", n_estimators=30, random_state=0),
            "regression",
            frozenset({"tree", "boosting", "float32", "xgboost"}),
        ),
        Case(
            "xgb_dart",
            lambda: XGBClassifier(booster="dart", n_estimators=15, rate_drop=0.2, random_state=0),
            "binary",
            frozenset({"tree", "boosting", "float32", "xgboost"}),
        ),
        Case(
            "xgb_random_forest",
            lambda: XGBRFClassifier(n_estimators=8, random_state=0),
            "binary",
            frozenset({"tree", "float32", "xgboost"}),
        ),
        Case(
            "xgb_single_leaf",
            lambda: XGBRegressor(n_estimators=3, min_child_weight=1e9),
            "regression",
            frozenset({"tree", "boosting", "float32", "xgboost"}),
        ),
        # ---- LightGBM
        Case(
            "lgbm_binary_nan",
            lambda: LGBMClassifier(n_estimators=40, verbose=-1, random_state=0),
            "binary_nan",
            frozenset({"tree", "boosting", "nan", "lightgbm"}),
        ),
        Case(
            "lgbm_multiclass_strings",
            lambda: LGBMClassifier(n_estimators=15, verbose=-1, random_state=0),
            "strings",
            frozenset({"tree", "boosting", "lightgbm"}),
        ),
        Case(
            "lgbm_multiclass_nan",
            lambda: LGBMClassifier(n_estimators=15, num_leaves=8, verbose=-1, random_state=0),
            "multiclass_nan",
            frozenset({"tree", "boosting", "nan", "lightgbm"}),
        ),
        Case(
            "lgbm_no_missing_rule",
            lambda: LGBMClassifier(n_estimators=10, use_missing=False, verbose=-1, random_state=0),
            "binary_nan",
            frozenset({"tree", "boosting", "nan", "lightgbm"}),
        ),
        Case(
            "lgbm_regressor_nan",
            lambda: LGBMRegressor(n_estimators=40, verbose=-1, random_state=0),
            "regression_nan",
            frozenset({"tree", "boosting", "nan", "lightgbm"}),
        ),
        Case(
            "lgbm_gamma",
            lambda: LGBMRegressor(objective="gamma", n_estimators=20, verbose=-1, random_state=0),
            "regression",
            frozenset({"tree", "boosting", "lightgbm"}),
        ),
        Case(
            "lgbm_single_leaf",
            lambda: LGBMRegressor(n_estimators=3, min_child_samples=10_000, verbose=-1),
            "regression",
            frozenset({"tree", "boosting", "lightgbm"}),
        ),
        # ---- MLPs
        Case("mlp_binary", lambda: make_pipeline(StandardScaler(), MLPClassifier(**mlp)), "binary"),
        Case(
            "mlp_multiclass_tanh",
            lambda: make_pipeline(StandardScaler(), MLPClassifier(activation="tanh", **mlp)),
            "multiclass",
        ),
        Case(
            "mlp_strings_logistic",
            lambda: MLPClassifier(
                activation="logistic", hidden_layer_sizes=(8,), max_iter=500, random_state=0
            ),
            "strings",
        ),
        Case(
            "mlp_regressor",
            lambda: make_pipeline(StandardScaler(), MLPRegressor(**mlp)),
            "regression",
        ),
        Case("mlp_multitarget", lambda: MLPRegressor(**mlp), "multitarget"),
    ]
    return c


@functools.cache
def zoo() -> tuple[Case, ...]:
    return tuple(_cases())


def case(name: str) -> Case:
    return next(c for c in zoo() if c.name == name)


@functools.cache
def _fitted(name: str) -> Any:
    c = case(name)
    est = c.make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(c.dataset.X_train, c.dataset.y_train)
    return est


def split_points(est: Any) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, features) of every split, as the source library stores them."""
    inner = getattr(est, "steps", None)
    if inner is not None:  # a Pipeline: thresholds live in scaled space, not in X's
        return np.zeros(0), np.zeros(0, dtype=int)
    trees = [e.tree_ for e in np.ravel(getattr(est, "estimators_", []))]
    if hasattr(est, "tree_"):
        trees = [est.tree_]
    if trees:
        split = [t.children_left != -1 for t in trees]
        return (
            np.concatenate([t.threshold[m] for t, m in zip(trees, split, strict=True)]),
            np.concatenate([t.feature[m] for t, m in zip(trees, split, strict=True)]),
        )
    import fedge

    steps = [s for s in fedge.lower(est).steps if isinstance(s, fedge.ir.TreeEnsemble)]
    if not steps:
        return np.zeros(0), np.zeros(0, dtype=int)
    return steps[0].threshold.astype(np.float64), steps[0].feature


def threshold_rows(X: np.ndarray, thresholds: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Rows placing one feature exactly on a split threshold, and one float32 step either side."""
    base = np.nan_to_num(X[: len(features)], nan=0.0)
    if base.shape[0] < len(features):
        base = np.resize(base, (len(features), X.shape[1]))
    rows = []
    t64 = thresholds.astype(np.float64)
    for value in (
        t64,
        t64.astype(np.float32).astype(np.float64),
        np.nextafter(t64.astype(np.float32), np.float32(np.inf)).astype(np.float64),
        np.nextafter(t64.astype(np.float32), np.float32(-np.inf)).astype(np.float64),
    ):
        r = base.copy()
        r[np.arange(len(features)), features] = value
        rows.append(r)
    out = np.concatenate(rows)
    return out[np.all(np.isfinite(out), axis=1)]


# Values that break float handling: huge, float32 limits, subnormal, LightGBM's zero zone.
EXTREMES = np.array(
    [
        1e30,
        -1e30,
        3.4e38,
        -3.4e38,
        1e300,
        -1e300,
        1e-40,
        -1e-40,
        1e-45,
        0.0,
        -0.0,
        1e-36,
        -1e-36,
        float(np.float32(1e-35)),
        -float(np.float32(1e-35)),
    ]
)


def extreme_rows(X: np.ndarray, float32_range: bool = False) -> np.ndarray:
    """One row per (feature, extreme value), the other features from a real row.

    ``float32_range``: leave out values beyond float32 (XGBoost refuses them as input).
    """
    values = EXTREMES[np.abs(EXTREMES) < 3.5e38] if float32_range else EXTREMES
    base = np.nan_to_num(X[0])
    n = X.shape[1]
    rows = np.tile(base, (n * values.size, 1))
    rows[np.arange(rows.shape[0]), np.repeat(np.arange(n), values.size)] = np.tile(values, n)
    return rows
