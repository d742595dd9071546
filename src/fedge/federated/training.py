"""Local trainers: the models a federation can train, as vectorised numpy code.

Clients never call scikit-learn's ``fit`` during federated training. A model is described by a
:class:`ModelSpec` (its kind, shape, label set and regularisation), its trainable state travels
as :data:`~fedge.federated.messages.Parameters` (a list of float64 arrays), and :func:`train`
runs mini-batch SGD or Adam over local data, optionally with the FedProx proximal term and
DP-SGD. :func:`estimator_from_parameters` turns parameters back into a fitted scikit-learn
estimator at any round, so the global model can be used, lowered (``fedge.lower``) and deployed.

Parameters layout (``spec.parameter_shapes``)
---------------------------------------------
- Linear family (LOGISTIC, LINEAR, SGD_CLASSIFIER, SGD_REGRESSOR): ``[coef, intercept]`` with
  ``coef`` of shape ``(K, n_features)`` and ``intercept`` of shape ``(K,)``. ``K = 1`` for
  regressors and binary classifiers (one score for ``classes[1]``, like scikit-learn's
  ``coef_``), ``K = n_classes`` for three classes or more.
- MLP (MLP_CLASSIFIER, MLP_REGRESSOR): ``[W1, b1, W2, b2, ...]`` with scikit-learn's shapes
  (``W_i`` is ``(fan_in, fan_out)``); the output layer has one unit for regressors and binary
  classifiers, ``n_classes`` units otherwise.

Objective
---------
Every model minimises ``mean data loss + l2 / 2 * ||weights||^2`` (biases are not penalised).
Data losses: log-loss (sigmoid for one output, softmax for LOGISTIC and MLP_CLASSIFIER with
``K >= 3``; one-vs-rest sigmoids for SGD_CLASSIFIER with ``loss="log_loss"``, as scikit-learn's
``SGDClassifier``), the one-vs-rest hinge ``sum_k max(0, 1 - y_k s_k)`` with ``y_k = +-1``
(SGD_CLASSIFIER ``loss="hinge"``), and half the squared error ``(s - y)^2 / 2`` for every
regressor (scikit-learn's convention for ``SGDRegressor`` and ``MLPRegressor``).

scikit-learn scales some penalties with the number of training rows; the federated ``l2`` is per
row, so :func:`spec_from_estimator` maps them as follows (``N`` = total rows of the federation,
passed as ``n_samples``): ``LogisticRegression``: ``1 / (C * N)``; ``Ridge`` and MLPs:
``alpha / N``; ``SGDClassifier``/``SGDRegressor``: ``alpha`` (already per row);
``LinearRegression``: 0. Without ``n_samples`` the row-scaled penalties fall back to
:data:`DEFAULT_L2`; pass ``l2=`` to set it directly.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.special import expit

from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
from fedge.federated.messages import Parameters
from fedge.federated.privacy import clip_rows

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_L2",
    "LocalData",
    "ModelKind",
    "ModelSpec",
    "TrainResult",
    "TrainingConfig",
    "check_parameters",
    "default_learning_rate",
    "dp_schedule",
    "estimator_from_parameters",
    "gradients",
    "init_parameters",
    "loss",
    "metrics",
    "parameters_from_estimator",
    "per_example_gradients",
    "predictions",
    "prepare_data",
    "probabilities",
    "raw_scores",
    "spec_from_estimator",
    "train",
    "train_prepared",
]

DEFAULT_L2 = 1e-4
"""Per-row L2 used for row-scaled scikit-learn penalties when ``n_samples`` is not known."""

ACTIVATIONS = ("identity", "logistic", "relu", "tanh")
"""Hidden-layer activations the MLP trainers support (scikit-learn's names)."""

_SGD_CLASSIFIER_LOSSES = ("hinge", "log_loss")
_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


class ModelKind(enum.Enum):
    """The model families with a federated trainer."""

    LOGISTIC = "logistic"
    LINEAR = "linear"
    SGD_CLASSIFIER = "sgd_classifier"
    SGD_REGRESSOR = "sgd_regressor"
    MLP_CLASSIFIER = "mlp_classifier"
    MLP_REGRESSOR = "mlp_regressor"

    @property
    def is_classifier(self) -> bool:
        """Whether the kind predicts class labels."""
        return self in (ModelKind.LOGISTIC, ModelKind.SGD_CLASSIFIER, ModelKind.MLP_CLASSIFIER)

    @property
    def is_mlp(self) -> bool:
        """Whether the kind is a multi-layer perceptron."""
        return self in (ModelKind.MLP_CLASSIFIER, ModelKind.MLP_REGRESSOR)


_DEFAULT_ESTIMATOR = {
    ModelKind.LOGISTIC: "LogisticRegression",
    ModelKind.LINEAR: "LinearRegression",
    ModelKind.SGD_CLASSIFIER: "SGDClassifier",
    ModelKind.SGD_REGRESSOR: "SGDRegressor",
    ModelKind.MLP_CLASSIFIER: "MLPClassifier",
    ModelKind.MLP_REGRESSOR: "MLPRegressor",
}
_ESTIMATOR_KIND = {
    "LogisticRegression": ModelKind.LOGISTIC,
    "LinearRegression": ModelKind.LINEAR,
    "Ridge": ModelKind.LINEAR,
    "SGDClassifier": ModelKind.SGD_CLASSIFIER,
    "SGDRegressor": ModelKind.SGD_REGRESSOR,
    "MLPClassifier": ModelKind.MLP_CLASSIFIER,
    "MLPRegressor": ModelKind.MLP_REGRESSOR,
}
_ESTIMATOR_MODULE = {
    "LogisticRegression": "sklearn.linear_model",
    "LinearRegression": "sklearn.linear_model",
    "Ridge": "sklearn.linear_model",
    "SGDClassifier": "sklearn.linear_model",
    "SGDRegressor": "sklearn.linear_model",
    "MLPClassifier": "sklearn.neural_network",
    "MLPRegressor": "sklearn.neural_network",
}
_FEDERATABLE = (
    "LogisticRegression, LinearRegression, Ridge, SGDClassifier (loss='log_loss' or 'hinge'), "
    "SGDRegressor (loss='squared_error'), MLPClassifier and MLPRegressor; "
    "tree ensembles: see fedge.federated.trees (coming)"
)


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything a trainer needs to know about a model, except its parameters.

    Parameters
    ----------
    kind : ModelKind
        The model family.
    n_features : int
        Number of input columns.
    classes : numpy.ndarray or None
        The full label set of a classifier (stored sorted and unique, as scikit-learn's
        ``classes_``); ``None`` for regressors. Declared up front so that a client holding only
        some labels trains the same model shape.
    hidden_layer_sizes : tuple of int
        Hidden layer widths of an MLP (empty for linear models).
    activation : str
        Hidden activation of an MLP: one of :data:`ACTIVATIONS`.
    l2 : float
        Per-row L2 penalty: the objective is ``mean loss + l2 / 2 * ||weights||^2``.
    fit_intercept : bool
        Whether linear models train an intercept (if not, it stays at its initial value, 0).
    loss : str or None
        ``"log_loss"`` or ``"hinge"`` for SGD_CLASSIFIER; ``None`` for other kinds.
    estimator_name : str or None
        The scikit-learn class :func:`estimator_from_parameters` builds (default per kind).
    estimator_params : Mapping
        Constructor parameters of that class (the template's ``get_params(deep=False)``).

    Notes
    -----
    Specs compare by identity (they hold arrays); compare ``parameter_shapes`` and ``classes``
    to check two specs describe the same model.
    """

    kind: ModelKind
    n_features: int
    classes: np.ndarray | None = None
    hidden_layer_sizes: tuple[int, ...] = ()
    activation: str = "relu"
    l2: float = 0.0
    fit_intercept: bool = True
    loss: str | None = None
    estimator_name: str | None = None
    estimator_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = ModelKind(self.kind)
        object.__setattr__(self, "kind", kind)
        if isinstance(self.n_features, bool) or int(self.n_features) != self.n_features:
            raise InvalidInputError(f"n_features must be an integer, got {self.n_features!r}")
        if self.n_features < 1:
            raise InvalidInputError(f"n_features must be at least 1, got {self.n_features}")
        object.__setattr__(self, "n_features", int(self.n_features))
        if kind.is_classifier:
            object.__setattr__(self, "classes", _normalise_classes(self.classes))
        elif self.classes is not None:
            raise InvalidInputError(f"a {kind.value} model is a regressor: pass classes=None")
        hidden = tuple(int(h) for h in self.hidden_layer_sizes) if kind.is_mlp else ()
        if any(h < 1 for h in hidden):
            raise InvalidInputError(f"hidden_layer_sizes must be positive, got {hidden}")
        object.__setattr__(self, "hidden_layer_sizes", hidden)
        if self.activation not in ACTIVATIONS:
            raise UnsupportedModelError(
                f"MLP activation {self.activation!r} is not supported; use one of {ACTIVATIONS}"
            )
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise InvalidInputError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        object.__setattr__(self, "l2", float(self.l2))
        loss = self.loss
        if kind is ModelKind.SGD_CLASSIFIER:
            loss = "hinge" if loss is None else loss
            if loss not in _SGD_CLASSIFIER_LOSSES:
                raise UnsupportedModelError(
                    f"SGDClassifier(loss={loss!r}) has no federated trainer; "
                    f"use one of {_SGD_CLASSIFIER_LOSSES}"
                )
        elif loss is not None:
            raise InvalidInputError(f"loss= applies to sgd_classifier only, not {kind.value}")
        object.__setattr__(self, "loss", loss)
        name = self.estimator_name or _DEFAULT_ESTIMATOR[kind]
        if _ESTIMATOR_KIND.get(name) is not kind:
            raise InvalidInputError(f"estimator_name {name!r} does not build a {kind.value} model")
        object.__setattr__(self, "estimator_name", name)
        object.__setattr__(self, "estimator_params", dict(self.estimator_params))

    @property
    def n_outputs(self) -> int:
        """Number of output scores: 1 for regressors and binary classifiers, else n_classes."""
        if self.classes is None or self.classes.shape[0] == 2:
            return 1
        return int(self.classes.shape[0])

    @property
    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every array of this model's :data:`Parameters`, in order."""
        if not self.kind.is_mlp:
            return [(self.n_outputs, self.n_features), (self.n_outputs,)]
        units = [self.n_features, *self.hidden_layer_sizes, self.n_outputs]
        shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in itertools.pairwise(units):
            shapes += [(fan_in, fan_out), (fan_out,)]
        return shapes

    @property
    def n_parameters(self) -> int:
        """Total number of scalar parameters (the width of :func:`per_example_gradients`)."""
        return sum(math.prod(s) for s in self.parameter_shapes)


def _normalise_classes(classes: Any) -> np.ndarray:
    if classes is None:
        raise InvalidInputError(
            "a classifier needs its full label set: pass classes=[...] (all labels of the "
            "federation, so that clients holding only some of them train the same model shape)"
        )
    arr = np.asarray(classes)
    if arr.ndim != 1:
        raise InvalidInputError(f"classes must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == object:
        values = arr.tolist()
        if not all(isinstance(v, str) for v in values):
            raise InvalidInputError("classes must be all strings or all numbers")
        arr = np.asarray(values, dtype=str)
    try:
        unique = np.unique(arr)
    except TypeError as exc:
        raise InvalidInputError(f"classes cannot be sorted: {exc}") from None
    if unique.dtype.kind == "f" and not np.isfinite(unique).all():
        raise InvalidInputError("classes contain NaN or Inf")
    if unique.shape[0] < 2:
        raise InvalidInputError(f"a classifier needs at least 2 classes, got {unique.tolist()!r}")
    unique.setflags(write=False)
    return unique


def spec_from_estimator(
    estimator: Any,
    *,
    n_features: int,
    classes: Any = None,
    n_samples: int | None = None,
    l2: float | None = None,
) -> ModelSpec:
    """Describe a scikit-learn estimator (fitted or not) as a :class:`ModelSpec`.

    Parameters
    ----------
    estimator : scikit-learn estimator
        ``LogisticRegression``, ``LinearRegression``, ``Ridge``, ``SGDClassifier``,
        ``SGDRegressor``, ``MLPClassifier`` or ``MLPRegressor``; it serves as the template of
        the estimators :func:`estimator_from_parameters` builds.
    n_features : int
        Number of input columns (must equal ``n_features_in_`` of a fitted estimator).
    classes : array-like, optional
        The full label set of a classifier; defaults to a fitted estimator's ``classes_``.
    n_samples : int, optional
        Total number of training rows in the federation, used to turn row-scaled scikit-learn
        penalties (``C``, Ridge's and MLP's ``alpha``) into the per-row ``l2`` (see the module
        docstring); without it those fall back to :data:`DEFAULT_L2`.
    l2 : float, optional
        Set the per-row L2 penalty directly (overrides the mapping).

    Returns
    -------
    ModelSpec

    Raises
    ------
    UnsupportedModelError
        For estimators or options with no federated trainer (trees, SVMs, pipelines, L1
        penalties, class weights...).
    InvalidInputError
        For a classifier with neither ``classes=`` nor ``classes_``, or a feature-count mismatch.
    """
    name = _sklearn_class_name(estimator)
    kind = _ESTIMATOR_KIND.get(name) if name is not None else None
    if kind is None:
        raise UnsupportedModelError(
            f"{type(estimator).__name__} has no federated trainer; fedge federates {_FEDERATABLE}"
        )
    params = dict(estimator.get_params(deep=False))
    fitted_n = getattr(estimator, "n_features_in_", None)
    if fitted_n is not None and int(fitted_n) != n_features:
        raise InvalidInputError(
            f"the estimator was fitted on {int(fitted_n)} features, but n_features={n_features}"
        )
    if n_samples is not None and n_samples < 1:
        raise InvalidInputError(f"n_samples must be at least 1, got {n_samples}")
    if params.get("class_weight") is not None:
        raise UnsupportedModelError(
            f"{name}(class_weight=...) has no federated trainer; use class_weight=None"
        )
    if kind.is_classifier and classes is None:
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise InvalidInputError(
                f"{name} is not fitted, so its labels are unknown: pass classes=[...] with the "
                "full label set of the federation"
            )
    mapped = _l2_from_params(name, params, n_samples)
    spec_l2 = mapped if l2 is None else float(l2)
    loss = None
    if kind is ModelKind.SGD_CLASSIFIER:
        loss = params.get("loss", "hinge")
    elif kind is ModelKind.SGD_REGRESSOR and params.get("loss", "squared_error") != "squared_error":
        raise UnsupportedModelError(
            f"SGDRegressor(loss={params['loss']!r}) has no federated trainer; use "
            "loss='squared_error'"
        )
    hidden: tuple[int, ...] = ()
    activation = "relu"
    if kind.is_mlp:
        sizes = params.get("hidden_layer_sizes", (100,))
        hidden = (int(sizes),) if np.isscalar(sizes) else tuple(int(h) for h in sizes)
        activation = params.get("activation", "relu")
    return ModelSpec(
        kind=kind,
        n_features=n_features,
        classes=classes if kind.is_classifier else None,
        hidden_layer_sizes=hidden,
        activation=activation,
        l2=spec_l2,
        fit_intercept=bool(params.get("fit_intercept", True)),
        loss=loss,
        estimator_name=name,
        estimator_params=params,
    )


def _sklearn_class_name(estimator: Any) -> str | None:
    """The scikit-learn class among the estimator's bases that has a trainer, if any."""
    for cls in type(estimator).__mro__:
        if cls.__module__.startswith("sklearn.") and cls.__name__ in _ESTIMATOR_KIND:
            return cls.__name__
    return None


def _l2_from_params(name: str, params: Mapping[str, Any], n_samples: int | None) -> float:
    if name == "LinearRegression":
        return 0.0
    if name == "LogisticRegression":
        penalty = params.get("penalty", "deprecated")
        l1_ratio = params.get("l1_ratio")
        if penalty == "l1" or (penalty != "l2" and l1_ratio not in (None, 0, 0.0)):
            raise UnsupportedModelError(
                "LogisticRegression with an L1 or elastic-net penalty has no federated trainer; "
                "use the L2 penalty (l1_ratio=0)"
            )
        C = float(params.get("C", 1.0))
        if penalty is None or math.isinf(C):
            return 0.0
        return DEFAULT_L2 if n_samples is None else 1.0 / (C * n_samples)
    if name in ("SGDClassifier", "SGDRegressor"):
        penalty = params.get("penalty", "l2")
        if penalty is None:
            return 0.0
        if penalty == "l1" or (penalty == "elasticnet" and params.get("l1_ratio", 0.15) != 0):
            raise UnsupportedModelError(
                f"{name}(penalty={penalty!r}) has no federated trainer; use penalty='l2' or None"
            )
        return float(params.get("alpha", 1e-4))
    alpha = float(params.get("alpha", 1.0 if name == "Ridge" else 1e-4))  # Ridge, MLPs
    if alpha == 0:
        return 0.0
    return DEFAULT_L2 if n_samples is None else alpha / n_samples


# --------------------------------------------------------------------------- parameters
def check_parameters(spec: ModelSpec, parameters: Sequence[Any]) -> Parameters:
    """Validate ``parameters`` against ``spec``; return them as fresh float64 arrays.

    Raises
    ------
    InvalidInputError
        If the number of arrays or any shape differs from ``spec.parameter_shapes`` (the
        message names expected and received shapes), or a value is NaN/Inf or non-numeric.
    """
    expected = spec.parameter_shapes
    if isinstance(parameters, np.ndarray) or not isinstance(parameters, Sequence):
        raise InvalidInputError(
            f"parameters must be a list of {len(expected)} arrays, got {type(parameters).__name__}"
        )
    try:
        arrays = [np.array(p, dtype=np.float64, copy=True) for p in parameters]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"parameters are not numeric arrays: {exc}") from None
    got = [a.shape for a in arrays]
    if got != expected:
        raise InvalidInputError(
            f"parameters do not fit this {spec.kind.value} model: expected shapes {expected}, "
            f"got {got}"
        )
    for i, a in enumerate(arrays):
        if not np.isfinite(a).all():
            raise InvalidInputError(f"parameters[{i}] (shape {a.shape}) contains NaN or Inf")
    return arrays


def init_parameters(spec: ModelSpec, rng: np.random.Generator) -> Parameters:
    """Initial parameters: zeros for linear models, Glorot-uniform for MLPs (as scikit-learn).

    MLP weights and biases are drawn from ``U(-b, b)`` with ``b = sqrt(f / (fan_in + fan_out))``,
    ``f = 2`` for the logistic activation and 6 otherwise; ``rng`` is the only randomness.
    """
    shapes = spec.parameter_shapes
    if not spec.kind.is_mlp:
        return [np.zeros(s) for s in shapes]
    factor = 2.0 if spec.activation == "logistic" else 6.0
    params: Parameters = []
    for w_shape, b_shape in zip(shapes[::2], shapes[1::2], strict=True):
        bound = math.sqrt(factor / (w_shape[0] + w_shape[1]))
        params.append(rng.uniform(-bound, bound, w_shape))
        params.append(rng.uniform(-bound, bound, b_shape))
    return params


def parameters_from_estimator(estimator: Any, spec: ModelSpec) -> Parameters:
    """The parameters of a fitted estimator, as independent float64 copies in spec layout.

    Raises
    ------
    InvalidInputError
        If the estimator is not fitted, its classes differ from ``spec.classes`` or its
        shapes do not match the spec.
    """
    name = type(estimator).__name__
    if spec.kind.is_mlp:
        if not hasattr(estimator, "coefs_"):
            raise InvalidInputError(
                f"{name} is not fitted (no coefs_); fit it or use init_parameters"
            )
        params: list[Any] = []
        for w, b in zip(estimator.coefs_, estimator.intercepts_, strict=True):
            params += [w, b]
    else:
        if not hasattr(estimator, "coef_"):
            raise InvalidInputError(
                f"{name} is not fitted (no coef_); fit it or use init_parameters"
            )
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
        intercept = np.broadcast_to(
            np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64)), (coef.shape[0],)
        )
        params = [coef, intercept]
    if spec.classes is not None:
        fitted = getattr(estimator, "classes_", None)
        if fitted is None or not np.array_equal(np.asarray(fitted), spec.classes):
            raise InvalidInputError(
                f"{name} was fitted on classes {None if fitted is None else list(fitted)}, but "
                f"the spec declares {spec.classes.tolist()}; start from init_parameters instead"
            )
    return check_parameters(spec, params)


def estimator_from_parameters(
    spec: ModelSpec, parameters: Sequence[np.ndarray], template: Any = None
) -> Any:
    """A fitted scikit-learn estimator holding ``parameters``.

    Parameters
    ----------
    spec : ModelSpec
    parameters : Parameters
        Checked with :func:`check_parameters`; the estimator gets its own copies.
    template : scikit-learn estimator, optional
        Cloned for its hyper-parameters; defaults to ``spec.estimator_name`` built with
        ``spec.estimator_params``.

    Returns
    -------
    estimator
        ``predict``, ``predict_proba`` (where the class has one), ``score`` and ``fedge.lower``
        work and agree with :func:`predictions` and :func:`probabilities`.
    """
    from sklearn.base import clone

    params = check_parameters(spec, parameters)
    if template is None:
        import importlib

        module = importlib.import_module(_ESTIMATOR_MODULE[spec.estimator_name])
        est = getattr(module, spec.estimator_name)(**spec.estimator_params)
    else:
        name = _sklearn_class_name(template)
        if name is None or _ESTIMATOR_KIND[name] is not spec.kind:
            raise InvalidInputError(
                f"template {type(template).__name__} does not build a {spec.kind.value} model"
            )
        est = clone(template)
    if spec.kind.is_mlp:
        est.set_params(hidden_layer_sizes=spec.hidden_layer_sizes, activation=spec.activation)
        est.coefs_ = params[::2]
        est.intercepts_ = params[1::2]
        est.n_layers_ = len(spec.hidden_layer_sizes) + 2
        est.n_outputs_ = spec.n_outputs
        est.n_iter_ = 0
        est.t_ = 0
        if spec.kind is ModelKind.MLP_CLASSIFIER:
            from sklearn.preprocessing import LabelBinarizer

            est.out_activation_ = "logistic" if spec.n_outputs == 1 else "softmax"
            est._label_binarizer = LabelBinarizer().fit(spec.classes)
        else:
            est.out_activation_ = "identity"
    else:
        coef, intercept = params
        if spec.kind is ModelKind.SGD_CLASSIFIER:
            est.set_params(loss=spec.loss)
        if spec.kind.is_classifier:
            est.coef_, est.intercept_ = coef, intercept
        elif spec.kind is ModelKind.SGD_REGRESSOR:
            est.coef_, est.intercept_ = coef[0], intercept
        else:  # LinearRegression / Ridge: 1-D coef_, scalar intercept_
            est.coef_, est.intercept_ = coef[0], float(intercept[0])
        if spec.kind is ModelKind.LOGISTIC:
            est.n_iter_ = np.zeros(1, dtype=np.int32)
        elif spec.kind in (ModelKind.SGD_CLASSIFIER, ModelKind.SGD_REGRESSOR):
            est.n_iter_ = 0
            est.t_ = 1.0
    if spec.classes is not None:
        est.classes_ = spec.classes.copy()
    est.n_features_in_ = spec.n_features
    return est


# --------------------------------------------------------------------------- data
def _check_x(spec: ModelSpec, X: Any) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"X must be a numeric 2-D array: {exc}") from None
    if arr.ndim != 2:
        raise InvalidInputError(f"X must be a 2-D array (rows, features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidInputError("X has no rows: a client needs at least one example")
    if arr.shape[1] != spec.n_features:
        raise InvalidInputError(
            f"X has {arr.shape[1]} features, but the model expects {spec.n_features}"
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError("X contains NaN or Inf; impute or drop those values first")
    return arr


def _encode_y(spec: ModelSpec, y: Any, n_rows: int) -> np.ndarray:
    """Targets as a float (rows, n_outputs) array: one-hot/0-1 for classes, values otherwise."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidInputError(f"y must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise InvalidInputError(f"X has {n_rows} rows but y has {arr.shape[0]}")
    classes = spec.classes
    if classes is None:
        try:
            values = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"y must be numeric for a regressor: {exc}") from None
        if not np.isfinite(values).all():
            raise InvalidInputError("y contains NaN or Inf")
        return values[:, None]
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError("y contains NaN or Inf")
    try:
        idx = np.searchsorted(classes, arr)
        idx = np.minimum(idx, classes.shape[0] - 1)
        unknown = classes[idx] != arr
    except (TypeError, ValueError, np.exceptions.DTypePromotionError):
        raise InvalidInputError(
            f"labels of type {arr.dtype} cannot be compared with the classes {classes.tolist()!r}"
        ) from None
    if np.any(unknown):
        bad = np.unique(arr[np.asarray(unknown, dtype=bool)])[:5].tolist()
        raise InvalidInputError(
            f"y has labels {bad!r} that are not among the declared classes {classes.tolist()!r}"
        )
    if spec.n_outputs == 1:
        return (idx == 1).astype(np.float64)[:, None]
    onehot = np.zeros((n_rows, classes.shape[0]))
    onehot[np.arange(n_rows), idx] = 1.0
    return onehot


# --------------------------------------------------------------------------- the numerics
class _Head(enum.Enum):
    SQUARED = "squared"  # (s - y)^2 / 2
    SIGMOID = "sigmoid"  # per-output binary log-loss
    SOFTMAX = "softmax"  # categorical log-loss
    HINGE = "hinge"  # per-output hinge with y = +-1


def _head(spec: ModelSpec) -> _Head:
    if not spec.kind.is_classifier:
        return _Head.SQUARED
    if spec.kind is ModelKind.SGD_CLASSIFIER:
        return _Head.HINGE if spec.loss == "hinge" else _Head.SIGMOID
    return _Head.SIGMOID if spec.n_outputs == 1 else _Head.SOFTMAX


class _Layout:
    """Where each parameter array lives in one flat float64 vector."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.head = _head(spec)
        self.shapes = spec.parameter_shapes
        sizes = [math.prod(s) for s in self.shapes]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.size = self.bounds[-1]
        is_weight = np.zeros(self.size, dtype=bool)
        for i in range(0, len(self.shapes), 2):
            is_weight[self.bounds[i] : self.bounds[i + 1]] = True
        self.l2_mask = np.where(is_weight, spec.l2, 0.0)
        self.frozen = (
            slice(self.bounds[1], self.bounds[2])
            if not spec.kind.is_mlp and not spec.fit_intercept
            else None
        )

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        b = self.bounds
        return [
            flat[..., b[i] : b[i + 1]].reshape(*flat.shape[:-1], *s)
            for i, s in enumerate(self.shapes)
        ]

    def flatten(self, params: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])

    def penalty(self, flat: np.ndarray) -> float:
        return 0.5 * float(np.dot(self.l2_mask * flat, flat))


def _activate(name: str, H: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(H, 0.0)
    if name == "tanh":
        return np.tanh(H)
    if name == "logistic":
        return expit(H)
    return H


def _activation_derivative(name: str, A: np.ndarray) -> np.ndarray | None:
    """d act / d H expressed through A = act(H); None for the identity."""
    if name == "relu":
        return (A > 0).astype(np.float64)
    if name == "tanh":
        return 1.0 - A * A
    if name == "logistic":
        return A * (1.0 - A)
    return None


def _forward(layout: _Layout, flat: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, list]:
    """Output scores (rows, n_outputs) before the link, and the layer inputs for backprop."""
    views = layout.views(flat)
    if not layout.spec.kind.is_mlp:
        W, b = views
        return X @ W.T + b, [X]
    acts = [X]
    A = X
    last = len(views) // 2 - 1
    for i in range(last + 1):
        H = A @ views[2 * i] + views[2 * i + 1]
        if i == last:
            return H, acts
        A = _activate(layout.spec.activation, H)
        acts.append(A)
    raise AssertionError("unreachable")


def _softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _head_loss(head: _Head, Z: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-row data loss."""
    if head is _Head.SQUARED:
        return 0.5 * ((Z - T) ** 2).sum(axis=1)
    if head is _Head.SIGMOID:
        return (np.logaddexp(0.0, Z) - T * Z).sum(axis=1)
    if head is _Head.SOFTMAX:
        m = Z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
        return lse - (T * Z).sum(axis=1)
    return np.maximum(0.0, 1.0 - (2.0 * T - 1.0) * Z).sum(axis=1)


def _head_grad(head: _Head, Z: np.ndarray, T: np.ndarray) -> np.ndarray:
    """d (per-row loss) / d Z, row by row."""
    if head is _Head.SQUARED:
        return Z - T
    if head is _Head.SIGMOID:
        return expit(Z) - T
    if head is _Head.SOFTMAX:
        return _softmax(Z) - T
    Y = 2.0 * T - 1.0
    return np.where(Y * Z < 1.0, -Y, 0.0)


def _data_gradient(
    layout: _Layout, flat: np.ndarray, X: np.ndarray, T: np.ndarray, *, per_example: bool
) -> np.ndarray:
    """Mean data gradient (P,), or per-row data gradients (rows, P)."""
    Z, acts = _forward(layout, flat, X)
    delta = _head_grad(layout.head, Z, T)
    n = X.shape[0]
    out = np.empty((n, layout.size) if per_example else layout.size)
    grads = layout.views(out)
    if not per_example:
        delta = delta * (1.0 / n)
    if not layout.spec.kind.is_mlp:
        if per_example:
            grads[0][...] = delta[:, :, None] * X[:, None, :]
            grads[1][...] = delta
        else:
            np.matmul(delta.T, X, out=grads[0])
            np.sum(delta, axis=0, out=grads[1])
    else:
        views = layout.views(flat)
        for i in range(len(views) // 2 - 1, -1, -1):
            A = acts[i]
            if per_example:
                np.einsum("bi,bj->bij", A, delta, out=grads[2 * i])
                grads[2 * i + 1][...] = delta
            else:
                np.matmul(A.T, delta, out=grads[2 * i])
                np.sum(delta, axis=0, out=grads[2 * i + 1])
            if i > 0:
                delta = delta @ views[2 * i].T
                deriv = _activation_derivative(layout.spec.activation, A)
                if deriv is not None:
                    delta *= deriv
    if layout.frozen is not None:
        out[..., layout.frozen] = 0.0
    return out


@functools.lru_cache(maxsize=64)
def _layout_of(spec: ModelSpec) -> _Layout:
    # Specs hash by identity (eq=False), so a federation's one spec builds its layout once
    # instead of once per client per round.
    return _Layout(spec)


def _prepare(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any, y: Any):
    layout = _layout_of(spec)
    flat = layout.flatten(check_parameters(spec, parameters))
    X_arr = _check_x(spec, X)
    T = _encode_y(spec, y, X_arr.shape[0])
    return layout, flat, X_arr, T


def _objective(layout: _Layout, flat: np.ndarray, X: np.ndarray, T: np.ndarray) -> float:
    Z, _ = _forward(layout, flat, X)
    return float(_head_loss(layout.head, Z, T).mean()) + layout.penalty(flat)


def loss(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any, y: Any) -> float:
    """The objective on ``(X, y)``: mean data loss + ``l2 / 2 * ||weights||^2``."""
    layout, flat, X_arr, T = _prepare(spec, parameters, X, y)
    return _objective(layout, flat, X_arr, T)


def gradients(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any, y: Any) -> Parameters:
    """Gradient of :func:`loss` (mean data loss plus the L2 term), in Parameters layout."""
    layout, flat, X_arr, T = _prepare(spec, parameters, X, y)
    grad = _data_gradient(layout, flat, X_arr, T, per_example=False) + layout.l2_mask * flat
    return [g.copy() for g in layout.views(grad)]


def per_example_gradients(
    spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any, y: Any
) -> np.ndarray:
    """Gradient of each row's data loss (no L2 term), shape ``(rows, spec.n_parameters)``.

    Each row is flattened in Parameters order (C order within each array), as
    :func:`fedge.federated.messages.flatten` lays parameters out; their mean equals
    :func:`gradients` minus the L2 term.
    """
    layout, flat, X_arr, T = _prepare(spec, parameters, X, y)
    return _data_gradient(layout, flat, X_arr, T, per_example=True)


# --------------------------------------------------------------------------- forward pass
def raw_scores(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any) -> np.ndarray:
    """The model's output before its link, shape ``(rows, spec.n_outputs)``."""
    layout = _Layout(spec)
    flat = layout.flatten(check_parameters(spec, parameters))
    return _forward(layout, flat, _check_x(spec, X))[0]


def probabilities(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any) -> np.ndarray:
    """Class probabilities ``(rows, n_classes)``, computed as the scikit-learn estimator does.

    Raises
    ------
    UnsupportedOperationError
        For regressors and hinge-loss classifiers (no probabilities).
    """
    head = _head(spec)
    if head in (_Head.SQUARED, _Head.HINGE):
        raise UnsupportedOperationError(
            f"a {spec.kind.value} model{' with hinge loss' if head is _Head.HINGE else ''} "
            "has no probabilities; use predictions()"
        )
    Z = raw_scores(spec, parameters, X)
    if Z.shape[1] == 1:
        p = expit(Z[:, 0])
        return np.column_stack([1.0 - p, p])
    if head is _Head.SOFTMAX:
        return _softmax(Z)
    P = expit(Z)  # one-vs-rest sigmoids, rows normalised (SGDClassifier)
    return P / P.sum(axis=1, keepdims=True)


def predictions(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any) -> np.ndarray:
    """Labels (classifiers, decided as scikit-learn does) or values (regressors, ``(rows,)``)."""
    Z = raw_scores(spec, parameters, X)
    if spec.classes is None:
        return Z[:, 0]
    if Z.shape[1] == 1:
        return spec.classes[(Z[:, 0] > 0).astype(int)]
    return spec.classes[np.argmax(Z, axis=1)]


def metrics(spec: ModelSpec, parameters: Sequence[np.ndarray], X: Any, y: Any) -> dict[str, float]:
    """``loss`` plus ``accuracy`` (classifiers) or ``mse`` and ``r2`` (regressors) on ``(X, y)``."""
    layout, flat, X_arr, T = _prepare(spec, parameters, X, y)
    Z, _ = _forward(layout, flat, X_arr)
    out = {"loss": float(_head_loss(layout.head, Z, T).mean()) + layout.penalty(flat)}
    if spec.classes is None:
        residual = ((Z - T) ** 2).mean()
        variance = ((T - T.mean()) ** 2).mean()
        out["mse"] = float(residual)
        out["r2"] = float(1.0 - residual / variance) if variance > 0 else 0.0
    elif Z.shape[1] == 1:
        out["accuracy"] = float(np.mean((Z[:, 0] > 0) == (T[:, 0] == 1)))
    else:
        out["accuracy"] = float(np.mean(np.argmax(Z, axis=1) == np.argmax(T, axis=1)))
    return out


# --------------------------------------------------------------------------- training
def default_learning_rate(spec: ModelSpec, optimizer: str = "sgd") -> float:
    """The learning rate :func:`train` uses when ``TrainingConfig.learning_rate`` is None.

    Plain SGD: 0.1 for linear models, 0.05 for MLPs. Adam: 0.01 for linear models, 0.003 for
    MLPs. These suit standardised features; unscaled data needs a smaller rate.
    """
    if optimizer == "adam":
        return 0.003 if spec.kind.is_mlp else 0.01
    return 0.05 if spec.kind.is_mlp else 0.1


@dataclass(frozen=True)
class TrainingConfig:
    """Local training settings of one client round.

    Parameters
    ----------
    epochs : int
        Passes over the local data (DP-SGD: ``round(N / batch_size)`` Poisson steps each).
    batch_size : int
        Mini-batch size (DP-SGD with Poisson sampling: the expected batch size).
    learning_rate : float or None
        Step size; ``None`` picks :func:`default_learning_rate`.
    optimizer : {"sgd", "adam"}
        Plain/momentum SGD or Adam (beta1 0.9, beta2 0.999, eps 1e-8; state reset each call).
    momentum : float
        Heavy-ball momentum for ``"sgd"``: ``v = momentum * v + g; w -= lr * v``.
    proximal_mu : float
        FedProx: adds ``mu / 2 * ||w - w_global||^2`` to the local objective.
    dp_clip_norm : float or None
        Enables DP-SGD: each example's gradient is clipped to this L2 norm.
    dp_noise_multiplier : float
        DP-SGD: Gaussian noise of std ``dp_noise_multiplier * dp_clip_norm`` on the clipped sum.
    dp_sampling : {"poisson", "shuffle"}
        DP-SGD batches: Poisson sampling with rate ``batch_size / N`` (what privacy accountants
        assume), or fixed-size batches from a shuffle.
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.0
    proximal_mu: float = 0.0
    dp_clip_norm: float | None = None
    dp_noise_multiplier: float = 0.0
    dp_sampling: str = "poisson"

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> InvalidInputError:
            return InvalidInputError(
                f"TrainingConfig.{name} must be {rule}, got {getattr(self, name)!r}"
            )

        if not _is_int(self.epochs) or self.epochs < 1:
            raise bad("epochs", "an integer >= 1")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        if self.learning_rate is not None and not (
            _is_finite(self.learning_rate) and self.learning_rate > 0
        ):
            raise bad("learning_rate", "a positive number or None")
        if self.optimizer not in ("sgd", "adam"):
            raise bad("optimizer", "'sgd' or 'adam'")
        if not (_is_finite(self.momentum) and 0 <= self.momentum < 1):
            raise bad("momentum", "in [0, 1)")
        if not (_is_finite(self.proximal_mu) and self.proximal_mu >= 0):
            raise bad("proximal_mu", "a number >= 0")
        if self.dp_clip_norm is not None and not (
            _is_finite(self.dp_clip_norm) and self.dp_clip_norm > 0
        ):
            raise bad("dp_clip_norm", "a positive number or None")
        if not (_is_finite(self.dp_noise_multiplier) and self.dp_noise_multiplier >= 0):
            raise bad("dp_noise_multiplier", "a number >= 0")
        if self.dp_noise_multiplier > 0 and self.dp_clip_norm is None:
            raise InvalidInputError(
                "dp_noise_multiplier needs dp_clip_norm: noise is calibrated to the clip norm"
            )
        if self.dp_sampling not in ("poisson", "shuffle"):
            raise bad("dp_sampling", "'poisson' or 'shuffle'")

    @property
    def dp(self) -> bool:
        """Whether this config runs DP-SGD."""
        return self.dp_clip_norm is not None

    def updated(self, overrides: Mapping[str, Any]) -> TrainingConfig:
        """A copy with fields replaced from ``overrides`` (e.g. ``FitInstructions.config``).

        Raises
        ------
        InvalidInputError
            For a key that is not a field of TrainingConfig (the message lists the fields).
        """
        names = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise InvalidInputError(
                f"unknown training settings {unknown}; TrainingConfig has {names}"
            )
        values = {n: getattr(self, n) for n in names}
        values.update(overrides)
        return TrainingConfig(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and math.isfinite(value)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    ``loss_before``/``loss_after`` are the objective (:func:`loss`, without the proximal term)
    on all local rows before and after training. ``sampling_rate`` (``min(1, batch_size / N)``),
    ``steps`` and ``noise_multiplier`` (0 without DP) are what a privacy accountant needs.
    """

    parameters: Parameters
    num_examples: int
    steps: int
    loss_before: float
    loss_after: float
    sampling_rate: float
    noise_multiplier: float


def dp_schedule(n_rows: int, config: TrainingConfig) -> tuple[float, int]:
    """What one :func:`train` call on ``n_rows`` rows costs a DP accountant.

    Returns ``(sampling_rate, steps)``: the per-step sampling rate ``min(1, batch_size / N)``
    and the number of noisy steps (Poisson sampling: ``max(1, round(1 / q))`` per epoch;
    shuffled batches: ``ceil(N / batch_size)`` per epoch).
    """
    q = min(1.0, config.batch_size / n_rows)
    if config.dp_sampling == "shuffle":
        per_epoch = -(-n_rows // config.batch_size)
    else:
        per_epoch = max(1, round(1.0 / q))
    return q, config.epochs * per_epoch


@dataclass(frozen=True, eq=False)
class LocalData:
    """A client's rows checked once and its targets encoded for one spec (see
    :func:`prepare_data`), so each round's training starts without redoing that work."""

    spec: ModelSpec
    X: np.ndarray  # float64 (rows, n_features), finite
    T: np.ndarray  # float64 (rows, n_outputs): one-hot / 0-1 classes, or target values


def prepare_data(spec: ModelSpec, X: Any, y: Any) -> LocalData:
    """Validate ``X`` against ``spec`` and encode ``y`` against its classes."""
    X_arr = _check_x(spec, X)
    return LocalData(spec, X_arr, _encode_y(spec, y, X_arr.shape[0]))


def train(
    spec: ModelSpec,
    parameters: Sequence[np.ndarray],
    X: Any,
    y: Any,
    config: TrainingConfig,
    rng: np.random.Generator,
    *,
    global_parameters: Sequence[np.ndarray] | None = None,
) -> TrainResult:
    """Train ``parameters`` on the local ``(X, y)``; inputs are never modified.

    Parameters
    ----------
    spec : ModelSpec
    parameters : Parameters
        Starting point (usually the global model of this round).
    X, y : array-like
        Local data; labels must be among ``spec.classes`` (a client may hold only some).
    config : TrainingConfig
    rng : numpy.random.Generator
        The only source of randomness (shuffles, Poisson sampling, DP noise).
    global_parameters : Parameters, optional
        Anchor of the FedProx term (defaults to ``parameters``).

    Returns
    -------
    TrainResult

    Notes
    -----
    Without DP: ``epochs`` passes over a fresh shuffle, batches of ``batch_size`` rows, the
    mean gradient plus L2 and proximal terms. With ``dp_clip_norm`` set (DP-SGD, Abadi et al.
    2016): each of ``epochs * max(1, round(N / batch_size))`` steps samples rows (Poisson with
    rate ``q = batch_size / N``, or shuffled fixed batches), clips each row's data gradient to
    ``C``, sums, adds ``N(0, (z C)^2)`` noise and divides by the expected batch size ``q N``
    (the actual size for shuffled batches); the L2 and proximal terms, which do not touch
    data, are added after the noise.
    """
    return train_prepared(
        spec, parameters, prepare_data(spec, X, y), config, rng,
        global_parameters=global_parameters,
    )


def train_prepared(
    spec: ModelSpec,
    parameters: Sequence[np.ndarray],
    data: LocalData,
    config: TrainingConfig,
    rng: np.random.Generator,
    *,
    global_parameters: Sequence[np.ndarray] | None = None,
) -> TrainResult:
    """:func:`train` on data already checked by :func:`prepare_data` for the same ``spec``."""
    if data.spec is not spec:
        raise InvalidInputError("the local data was prepared for another model spec")
    layout = _layout_of(spec)
    flat = layout.flatten(check_parameters(spec, parameters))
    X_arr, T = data.X, data.T
    anchor = (
        flat.copy()
        if global_parameters is None or global_parameters is parameters
        else layout.flatten(check_parameters(spec, global_parameters))
    )
    n = X_arr.shape[0]
    bs = int(config.batch_size)
    q = min(1.0, bs / n)
    lr = (
        default_learning_rate(spec, config.optimizer)
        if config.learning_rate is None
        else float(config.learning_rate)
    )
    mu = float(config.proximal_mu)
    l2_mask = layout.l2_mask if spec.l2 > 0 else None
    loss_before = _objective(layout, flat, X_arr, T)

    theta = flat.copy()
    state1 = np.zeros_like(theta)
    state2 = np.zeros_like(theta) if config.optimizer == "adam" else None
    step = 0

    def update(grad: np.ndarray) -> None:
        nonlocal step
        step += 1
        if l2_mask is not None:
            grad += l2_mask * theta
        if mu > 0:
            grad += mu * (theta - anchor)
        if layout.frozen is not None:
            grad[layout.frozen] = 0.0
        if state2 is not None:
            state1[...] = _ADAM_BETA1 * state1 + (1 - _ADAM_BETA1) * grad
            state2[...] = _ADAM_BETA2 * state2 + (1 - _ADAM_BETA2) * grad * grad
            scale = lr * math.sqrt(1 - _ADAM_BETA2**step) / (1 - _ADAM_BETA1**step)
            theta[...] -= scale * state1 / (np.sqrt(state2) + _ADAM_EPS)
        elif config.momentum > 0:
            state1[...] = config.momentum * state1 + grad
            theta[...] -= lr * state1
        else:
            theta[...] -= lr * grad

    if not config.dp:
        for _ in range(config.epochs):
            order = rng.permutation(n)
            Xs, Ts = X_arr[order], T[order]
            for start in range(0, n, bs):
                stop = start + bs
                update(
                    _data_gradient(layout, theta, Xs[start:stop], Ts[start:stop], per_example=False)
                )
        noise = 0.0
    else:
        clip = float(config.dp_clip_norm)
        noise = float(config.dp_noise_multiplier)
        shuffle = config.dp_sampling == "shuffle"
        steps_per_epoch = dp_schedule(n, config)[1] // config.epochs
        for _ in range(config.epochs):
            if shuffle:
                order = rng.permutation(n)
                batches = [order[i * bs : (i + 1) * bs] for i in range(steps_per_epoch)]
            for k in range(steps_per_epoch):
                if not shuffle:
                    size = int(rng.binomial(n, q))
                    idx = np.sort(rng.choice(n, size=size, replace=False))
                    denominator = q * n
                else:
                    idx = batches[k]
                    denominator = max(1, idx.shape[0])
                if idx.shape[0]:
                    G = _data_gradient(layout, theta, X_arr[idx], T[idx], per_example=True)
                    total = clip_rows(G, clip_norm=clip).sum(axis=0)
                else:
                    total = np.zeros(layout.size)
                if noise > 0:
                    total += rng.normal(0.0, noise * clip, layout.size)
                update(total / denominator)
    loss_after = _objective(layout, theta, X_arr, T)
    return TrainResult(
        parameters=[v.copy() for v in layout.views(theta)],
        num_examples=n,
        steps=step,
        loss_before=loss_before,
        loss_after=loss_after,
        sampling_rate=q,
        noise_multiplier=noise,
    )
