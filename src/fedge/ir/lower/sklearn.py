"""scikit-learn frontend: linear models, trees and forests, MLPs, and Pipelines of scalers.

Reads fitted attributes only (``coef_``, ``tree_``, ``coefs_``...), so this module
never imports scikit-learn itself. Each lowering mirrors how scikit-learn
computes ``predict``/``predict_proba`` in 1.6-1.9, which is what makes
reference-mode parity exact (see tests/parity).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from fedge._version import __version__
from fedge.errors import NotFittedError, UnsupportedModelError
from fedge.ir.lower import register
from fedge.ir.lower._trees import Tree, assemble, from_node_table
from fedge.ir.nodes import (
    Activation,
    Affine,
    AffineOrder,
    Aggregation,
    Comparison,
    Dense,
    Impute,
    Linear,
    Link,
    Model,
    Precision,
    PredictFrom,
    Step,
    Task,
    TreeEnsemble,
)

_LEAF = -1  # scikit-learn's children_left/right value for "no child"


# --------------------------------------------------------------------------- shared helpers
def _require_fitted(est: Any, *attrs: str) -> None:
    missing = [a for a in attrs if not hasattr(est, a)]
    if missing:
        raise NotFittedError(
            f"{type(est).__name__} is not fitted (no {', '.join(missing)}); call fit() first"
        )


def _f64(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _classes(est: Any) -> np.ndarray:
    classes = np.asarray(est.classes_)
    if classes.dtype == object:
        values = classes.tolist()
        kinds = {type(v) for v in values}
        if kinds <= {str}:
            return np.asarray(values, dtype=str)
        raise UnsupportedModelError(
            f"{type(est).__name__} has class labels of types {sorted(k.__name__ for k in kinds)}; "
            "fedge supports labels that are all strings, integers, floats or booleans"
        )
    if classes.ndim != 1:
        raise UnsupportedModelError(
            f"{type(est).__name__} was fitted on multi-output targets; fedge lowers "
            "single-output classifiers only"
        )
    return classes


def _metadata(est: Any, estimator_name: str | None = None) -> dict[str, Any]:
    sklearn = sys.modules.get("sklearn")
    return {
        "source": {
            "library": "scikit-learn",
            "version": getattr(sklearn, "__version__", "unknown"),
            "estimator": estimator_name or type(est).__name__,
        },
        "fedge_version": __version__,
    }


def _feature_names(est: Any) -> tuple[str, ...] | None:
    names = getattr(est, "feature_names_in_", None)
    return None if names is None else tuple(str(n) for n in names)


def _model(est: Any, steps: list[Step], **fields: Any) -> Model:
    return Model(
        steps=tuple(steps),
        n_features=int(est.n_features_in_),
        feature_names=_feature_names(est),
        metadata=_metadata(est),
        **fields,
    )


# --------------------------------------------------------------------------- linear models
def _linear_step(est: Any) -> Linear:
    """``X @ coef_.T + intercept_`` as one Linear step (coef_ of shape (n,) or (k, n))."""
    coef = _f64(est.coef_)
    coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
    bias = np.broadcast_to(np.atleast_1d(_f64(est.intercept_)), (coef.shape[0],))
    return Linear(weights=coef.T, bias=bias)


def _linear_classifier(est: Any, binary: Link, multiclass: Link) -> Model:
    """One Linear step; ``binary`` is the link of a one-score model, ``multiclass`` of k scores."""
    _require_fitted(est, "coef_", "intercept_", "classes_")
    step = _linear_step(est)
    link = binary if step.n_outputs == 1 else multiclass
    return _model(est, [step], task=Task.CLASSIFICATION, link=link, classes=_classes(est))


@register("sklearn", "LogisticRegression", "LogisticRegressionCV")
def _logistic_regression(est: Any) -> Model:
    # Binary: [1 - expit(d), expit(d)]. Multiclass: softmax, except the one-vs-rest
    # options of scikit-learn < 1.8 (multi_class="ovr", or liblinear under "auto").
    multi_class = getattr(est, "multi_class", "deprecated")
    ovr = multi_class == "ovr" or (
        multi_class in ("auto", "warn") and getattr(est, "solver", "") == "liblinear"
    )
    return _linear_classifier(est, Link.LOGISTIC, Link.LOGISTIC_OVR if ovr else Link.SOFTMAX)


@register("sklearn", "SGDClassifier")
def _sgd_classifier(est: Any) -> Model:
    if est.loss == "log_loss":  # one-vs-rest: sigmoid per class, rows normalised
        return _linear_classifier(est, Link.LOGISTIC, Link.LOGISTIC_OVR)
    if est.loss == "modified_huber":
        return _linear_classifier(est, Link.MODIFIED_HUBER, Link.MODIFIED_HUBER)
    return _linear_classifier(est, Link.NONE, Link.NONE)


@register(
    "sklearn",
    "LinearSVC",
    "Perceptron",
    "RidgeClassifier",
    "RidgeClassifierCV",
    "PassiveAggressiveClassifier",
)
def _margin_classifier(est: Any) -> Model:
    return _linear_classifier(est, Link.NONE, Link.NONE)


@register(
    "sklearn",
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "SGDRegressor",
    "LinearSVR",
)
def _linear_regressor(est: Any) -> Model:
    _require_fitted(est, "coef_", "intercept_")
    return _model(est, [_linear_step(est)], task=Task.REGRESSION)


# --------------------------------------------------------------------------- trees
def sklearn_tree(tree: Any, values: np.ndarray) -> Tree:
    """A fitted ``tree_`` as a :class:`Tree`, with ``values`` (one row per node) at its leaves."""
    left = np.asarray(tree.children_left)
    missing = getattr(tree, "missing_go_to_left", None)  # scikit-learn >= 1.3
    return from_node_table(
        is_leaf=left == _LEAF,
        left=left,
        right=np.asarray(tree.children_right),
        feature=np.asarray(tree.feature),
        threshold=np.asarray(tree.threshold),
        missing_left=np.zeros(left.shape[0], bool) if missing is None else missing,
        values=values,
    )


def _ensemble(trees: list[Any], n_features: int, classifier: bool, n_classes: int) -> TreeEnsemble:
    parts = []
    for tree in trees:
        value = np.asarray(tree.value, dtype=np.float64)
        # Classifiers: scikit-learn >= 1.4 stores class fractions, returned as is by predict_proba.
        parts.append(sklearn_tree(tree, value[:, 0, :n_classes] if classifier else value[:, :, 0]))
    # scikit-learn compares float32(x) <= t: thresholds are stored as exact float32.
    return assemble(
        parts,
        n_features=n_features,
        n_outputs=parts[0].leaf_values.shape[1],
        aggregation=Aggregation.MEAN if len(trees) > 1 else Aggregation.SUM,
        comparison=Comparison.LE,
        input_precision=Precision.FLOAT32,
    )


def _tree_model(est: Any, trees: list[Any], classifier: bool) -> Model:
    n_features = int(est.n_features_in_)
    if classifier:
        classes = _classes(est)
        ensemble = _ensemble(trees, n_features, True, classes.shape[0])
        return _model(
            est, [ensemble], task=Task.CLASSIFICATION, link=Link.IDENTITY, classes=classes
        )
    return _model(est, [_ensemble(trees, n_features, False, 0)], task=Task.REGRESSION)


@register("sklearn", "DecisionTreeClassifier", "ExtraTreeClassifier")
def _tree_classifier(est: Any) -> Model:
    _require_fitted(est, "tree_", "classes_")
    return _tree_model(est, [est.tree_], classifier=True)


@register("sklearn", "DecisionTreeRegressor", "ExtraTreeRegressor")
def _tree_regressor(est: Any) -> Model:
    _require_fitted(est, "tree_")
    return _tree_model(est, [est.tree_], classifier=False)


@register("sklearn", "RandomForestClassifier", "ExtraTreesClassifier")
def _forest_classifier(est: Any) -> Model:
    _require_fitted(est, "estimators_", "classes_")
    return _tree_model(est, [e.tree_ for e in est.estimators_], classifier=True)


@register("sklearn", "RandomForestRegressor", "ExtraTreesRegressor")
def _forest_regressor(est: Any) -> Model:
    _require_fitted(est, "estimators_")
    return _tree_model(est, [e.tree_ for e in est.estimators_], classifier=False)


# --------------------------------------------------------------------------- MLPs
_ACTIVATIONS = {
    "identity": Activation.IDENTITY,
    "relu": Activation.RELU,
    "tanh": Activation.TANH,
    "logistic": Activation.LOGISTIC,
}


def _mlp_layers(est: Any) -> list[Step]:
    _require_fitted(est, "coefs_", "intercepts_", "out_activation_")
    hidden = _ACTIVATIONS.get(est.activation)
    if hidden is None:
        raise UnsupportedModelError(f"MLP activation {est.activation!r} is not supported")
    layers: list[Step] = []
    last = len(est.coefs_) - 1
    for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
        act = Activation.IDENTITY if i == last else hidden
        layers.append(Dense(weights=_f64(w), bias=_f64(b), activation=act))
    return layers


@register("sklearn", "MLPClassifier")
def _mlp_classifier(est: Any) -> Model:
    layers = _mlp_layers(est)
    classes = _classes(est)
    out = est.out_activation_
    if out == "softmax":
        link = Link.SOFTMAX
    elif out == "logistic" and classes.shape[0] == 2 and layers[-1].n_outputs == 1:
        link = Link.LOGISTIC
    else:
        raise UnsupportedModelError(
            "MLPClassifier fitted on multilabel targets is not supported; "
            "fedge lowers binary and multiclass MLPs"
        )
    # MLPClassifier decides labels on its probabilities (p > 0.5, or argmax).
    return _model(
        est,
        layers,
        task=Task.CLASSIFICATION,
        link=link,
        classes=classes,
        predict_from=PredictFrom.PROBABILITIES,
    )


@register("sklearn", "MLPRegressor")
def _mlp_regressor(est: Any) -> Model:
    return _model(est, _mlp_layers(est), task=Task.REGRESSION)


# --------------------------------------------------------------------------- pipelines
def _no_clip(est: Any) -> None:
    if getattr(est, "clip", False):
        raise UnsupportedModelError(
            f"{type(est).__name__}(clip=True) is not supported; refit with clip=False"
        )


def _ones_if_none(value: Any, n: int) -> np.ndarray:
    return np.ones(n) if value is None else _f64(value)


def _standard_scaler(est: Any) -> Step:
    _require_fitted(est, "n_features_in_")
    n = int(est.n_features_in_)
    offset = _f64(est.mean_) if est.with_mean else np.zeros(n)
    scale = _ones_if_none(est.scale_ if est.with_std else None, n)
    return Affine(offset=offset, scale=scale, order=AffineOrder.SUBTRACT_DIVIDE)


def _robust_scaler(est: Any) -> Step:
    _require_fitted(est, "n_features_in_")
    n = int(est.n_features_in_)
    offset = _f64(est.center_) if est.with_centering else np.zeros(n)
    scale = _ones_if_none(est.scale_ if est.with_scaling else None, n)
    return Affine(offset=offset, scale=scale, order=AffineOrder.SUBTRACT_DIVIDE)


def _maxabs_scaler(est: Any) -> Step:
    _require_fitted(est, "scale_")
    _no_clip(est)
    scale = _f64(est.scale_)
    return Affine(offset=np.zeros(scale.shape[0]), scale=scale, order=AffineOrder.SUBTRACT_DIVIDE)


def _minmax_scaler(est: Any) -> Step:
    _require_fitted(est, "scale_", "min_")
    _no_clip(est)
    return Affine(offset=_f64(est.min_), scale=_f64(est.scale_), order=AffineOrder.MULTIPLY_ADD)


def _simple_imputer(est: Any) -> Step:
    _require_fitted(est, "statistics_")
    missing = est.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise UnsupportedModelError(
            f"SimpleImputer(missing_values={missing!r}) is not supported; fedge imputes NaN only"
        )
    if est.add_indicator:
        raise UnsupportedModelError("SimpleImputer(add_indicator=True) is not supported")
    try:
        fill = _f64(est.statistics_)
    except (TypeError, ValueError):
        raise UnsupportedModelError("SimpleImputer with non-numeric fill values") from None
    empty = np.flatnonzero(np.isnan(fill))
    if empty.size:
        raise UnsupportedModelError(
            f"SimpleImputer drops feature(s) {empty.tolist()} that were all-NaN in training; "
            "refit it with keep_empty_features=True"
        )
    return Impute(fill=fill)


_TRANSFORMERS = {
    "StandardScaler": _standard_scaler,
    "MinMaxScaler": _minmax_scaler,
    "MaxAbsScaler": _maxabs_scaler,
    "RobustScaler": _robust_scaler,
    "SimpleImputer": _simple_imputer,
}


def _transformer(name: str, est: Any) -> Step:
    for cls in type(est).__mro__:
        if cls.__module__.startswith("sklearn.") and cls.__name__ in _TRANSFORMERS:
            return _TRANSFORMERS[cls.__name__](est)
    raise UnsupportedModelError(
        f"Pipeline step {name!r} ({type(est).__name__}) is not supported; supported "
        f"transformers: {', '.join(sorted(_TRANSFORMERS))}"
    )


@register("sklearn", "Pipeline")
def _pipeline(est: Any) -> Model:
    from fedge.ir.lower import lower

    steps = [(n, s) for n, s in est.steps if s is not None and s != "passthrough"]
    if not steps:
        raise UnsupportedModelError("the Pipeline has no estimator")
    *transformers, (_, final) = steps
    prefix = [_transformer(name, t) for name, t in transformers]
    inner = lower(final)
    names = [type(t).__name__ for _, t in transformers] + [type(final).__name__]
    first = steps[0][1]
    _require_fitted(first, "n_features_in_")
    metadata = dict(inner.metadata)
    metadata["source"] = dict(metadata["source"], estimator=f"Pipeline({', '.join(names)})")
    return Model(
        steps=(*prefix, *inner.steps),
        task=inner.task,
        n_features=int(first.n_features_in_),
        link=inner.link,
        classes=inner.classes,
        predict_from=inner.predict_from,
        feature_names=_feature_names(first),
        metadata=metadata,
    )
