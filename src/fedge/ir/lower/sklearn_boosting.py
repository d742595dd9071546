"""scikit-learn gradient boosting: GradientBoosting* and HistGradientBoosting*.

GradientBoosting: trees of float32-compared splits (like DecisionTree), leaf
values scaled by the learning rate exactly as ``predict_stages`` scales them
(one float64 product), the init estimator's constant raw prediction as base
score, labels on ``score >= 0``.

HistGradientBoosting: float64 inputs, ``<=`` splits with a learned NaN
direction per node, the baseline as base score, labels on ``score > 0``.
Categorical splits are refused with the feature named.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedge.errors import UnsupportedModelError
from fedge.ir.lower import register
from fedge.ir.lower._trees import assemble, from_node_table
from fedge.ir.lower.sklearn import _classes, _model, _require_fitted, sklearn_tree
from fedge.ir.nodes import Comparison, Link, Model, Precision, PredictFrom, Task

_IDENTITY_LOSSES = {"squared_error", "absolute_error", "huber", "quantile"}
_LOG_LINK_LOSSES = {"poisson", "gamma"}


def _classifier_link(est: Any, n_outputs: int) -> Link:
    loss = getattr(est, "loss", "log_loss")
    if loss != "log_loss":
        raise UnsupportedModelError(
            f"{type(est).__name__}(loss={loss!r}) is not supported; fedge lowers loss='log_loss'"
        )
    return Link.LOGISTIC if n_outputs == 1 else Link.SOFTMAX


def _regressor_link(est: Any) -> Link:
    loss = est.loss
    if loss in _IDENTITY_LOSSES:
        return Link.IDENTITY
    if loss in _LOG_LINK_LOSSES:
        return Link.EXP
    raise UnsupportedModelError(f"{type(est).__name__}(loss={loss!r}) is not supported")


def _boosting_model(est: Any, ensemble: Any, predict_from: PredictFrom) -> Model:
    if hasattr(est, "classes_"):
        return _model(
            est,
            [ensemble],
            task=Task.CLASSIFICATION,
            link=_classifier_link(est, ensemble.n_outputs),
            classes=_classes(est),
            predict_from=predict_from,
        )
    return _model(est, [ensemble], task=Task.REGRESSION, link=_regressor_link(est))


# --------------------------------------------------------------------------- GradientBoosting
@register("sklearn", "GradientBoostingClassifier", "GradientBoostingRegressor")
def _gradient_boosting(est: Any) -> Model:
    _require_fitted(est, "estimators_", "init_")
    init = est.init_
    if not (isinstance(init, str) and init == "zero") and type(init).__name__ not in (
        "DummyClassifier",
        "DummyRegressor",
    ):
        raise UnsupportedModelError(
            f"{type(est).__name__} with init={type(init).__name__}: only the default (constant) "
            "init or init='zero' can be lowered, since other inits depend on the input"
        )
    n_features = int(est.n_features_in_)
    # The init's raw prediction is a constant: evaluate it once with the library's own code.
    base = np.asarray(est._raw_predict_init(np.zeros((1, n_features), np.float32)))[0]
    stages = np.asarray(est.estimators_)  # (n_stages, K) of DecisionTreeRegressor
    n_outputs = stages.shape[1]
    trees, offsets = [], []
    for stage in stages:
        for k, reg in enumerate(stage):
            value = np.asarray(reg.tree_.value, dtype=np.float64)[:, 0, 0]
            trees.append(sklearn_tree(reg.tree_, est.learning_rate * value))
            offsets.append(k)
    ensemble = assemble(
        trees,
        n_features=n_features,
        n_outputs=n_outputs,
        tree_offset=offsets,
        base_score=base,
        comparison=Comparison.LE,
        input_precision=Precision.FLOAT32,
    )
    # GradientBoostingClassifier labels a binary row by score >= 0.
    return _boosting_model(est, ensemble, PredictFrom.SCORES_INCLUSIVE)


# --------------------------------------------------------------------------- HistGradientBoosting
def _refuse_categorical(est: Any) -> None:
    # With categorical features HistGradientBoosting also reorders columns internally
    # (categorical first), so node feature indices would not be the user's.
    flags = getattr(est, "is_categorical_", None)
    categorical = np.flatnonzero(np.zeros(0, bool) if flags is None else np.asarray(flags, bool))
    if categorical.size or getattr(est, "_preprocessor", None) is not None:
        raise UnsupportedModelError(
            f"{type(est).__name__} has categorical feature(s) {categorical.tolist()}; categorical "
            "splits are not supported yet: one-hot or ordinal-encode them instead"
        )


def _hist_tree(predictor: Any) -> Any:
    nodes = predictor.nodes
    return from_node_table(
        is_leaf=nodes["is_leaf"].astype(bool),
        left=nodes["left"],
        right=nodes["right"],
        feature=nodes["feature_idx"],
        threshold=nodes["num_threshold"],
        missing_left=nodes["missing_go_to_left"].astype(bool),
        values=nodes["value"],
    )


@register("sklearn", "HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
def _hist_gradient_boosting(est: Any) -> Model:
    _require_fitted(est, "_predictors", "_baseline_prediction")
    _refuse_categorical(est)
    n_features = int(est.n_features_in_)
    n_outputs = int(est.n_trees_per_iteration_)
    trees, offsets = [], []
    for iteration in est._predictors:
        for k, predictor in enumerate(iteration):
            trees.append(_hist_tree(predictor))
            offsets.append(k)
    ensemble = assemble(
        trees,
        n_features=n_features,
        n_outputs=n_outputs,
        tree_offset=offsets,
        base_score=np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1),
        comparison=Comparison.LE,
        input_precision=Precision.FLOAT64,  # HistGradientBoosting predicts on float64 inputs
    )
    return _boosting_model(est, ensemble, PredictFrom.SCORES)
