"""XGBoost frontend: gbtree and dart boosters from the model's own JSON.

XGBoost rounds inputs to float32 and sends a row left when ``x < threshold``
(``default_left`` for NaN). Leaves and thresholds are float32 and trees add up
in float32, so the ensemble is stored in float32 and fedge's reference mode
accumulates it in float32 too. The base score is stored by XGBoost in the
objective's output space (a probability for ``binary:logistic``) and turned
into a margin here, as XGBoost does.

:func:`lower_model_json` needs only the JSON document: an XGBoost ``.json`` file
can be lowered without importing xgboost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import math
import sys
from typing import Any

import numpy as np

from fedge.errors import ModelFormatError, NotFittedError, UnsupportedModelError
from fedge.ir.lower import register
from fedge.ir.lower._trees import Tree, assemble, booster_model, from_node_table
from fedge.ir.nodes import Comparison, Link, Model, Precision, Task

__all__ = ["lower_model_json"]

# objective -> (task, link, base score to margin)
_LOGIT = "logit"
_LOG = "log"
_SAME = "same"
_OBJECTIVES: dict[str, tuple[Task, Link, str]] = {
    "binary:logistic": (Task.CLASSIFICATION, Link.LOGISTIC, _LOGIT),
    "multi:softprob": (Task.CLASSIFICATION, Link.SOFTMAX, _SAME),
    "multi:softmax": (Task.CLASSIFICATION, Link.SOFTMAX, _SAME),
    "reg:squarederror": (Task.REGRESSION, Link.IDENTITY, _SAME),
    "reg:absoluteerror": (Task.REGRESSION, Link.IDENTITY, _SAME),
    "reg:pseudohubererror": (Task.REGRESSION, Link.IDENTITY, _SAME),
    "reg:squaredlogerror": (Task.REGRESSION, Link.IDENTITY, _SAME),
    "count:poisson": (Task.REGRESSION, Link.EXP, _LOG),
    "reg:gamma": (Task.REGRESSION, Link.EXP, _LOG),
    "reg:tweedie": (Task.REGRESSION, Link.EXP, _LOG),
}


def _param(section: dict[str, Any], key: str) -> str:
    try:
        return str(section[key])
    except (KeyError, TypeError):
        raise ModelFormatError(f"XGBoost model JSON has no {key!r}") from None


def _base_margin(raw: str, n_outputs: int, transform: str) -> np.ndarray:
    """XGBoost 3.x writes ``[v1,v2,...]``; 2.x a single number. Returns float32 margins."""
    text = raw.strip()
    values = [float(v) for v in text.strip("[]").split(",")] if text else []
    if len(values) == 1 and n_outputs > 1:
        values = values * n_outputs
    if len(values) != n_outputs:
        raise ModelFormatError(f"XGBoost base_score {raw!r} does not fit {n_outputs} outputs")
    p = np.asarray(values, dtype=np.float32)
    if transform == _LOGIT:
        # XGBoost's ProbToMargin for the logistic objective: -logf(1/p - 1) in float32.
        return np.array([-_logf(v) for v in (np.float32(1) / p - np.float32(1))], np.float32)
    if transform == _LOG:
        return np.array([_logf(v) for v in p], np.float32)
    return p


@functools.cache
def _libm_logf() -> Any:
    """The platform's C ``logf``, which XGBoost's base-score transform calls."""
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).logf
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def _logf(x: np.float32) -> np.float32:
    # numpy's float32 log and glibc's logf differ in the last bit on some inputs; the base
    # margin is one constant, so call the same logf XGBoost does (numpy if there is none).
    fn = _libm_logf()
    if fn is not None:
        return np.float32(fn(float(x)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.float32(x))


def _tree(doc: dict[str, Any], index: int, weight: float) -> Tree:
    if any(doc.get("split_type", [])):
        raise UnsupportedModelError(
            f"XGBoost tree {index} has categorical splits; they are not supported yet: "
            "encode categorical features as numbers"
        )
    size = int(doc["tree_param"].get("size_leaf_vector", "1") or 1)
    if size > 1:
        raise UnsupportedModelError("XGBoost multi-target trees (vector leaves) are not supported")
    left = np.asarray(doc["left_children"], dtype=np.int64)
    cond = np.asarray(doc["split_conditions"], dtype=np.float32)
    leaves = cond if weight == 1.0 else (cond * np.float32(weight)).astype(np.float32)
    return from_node_table(
        is_leaf=left == -1,
        left=left,
        right=np.asarray(doc["right_children"], dtype=np.int64),
        feature=np.asarray(doc["split_indices"], dtype=np.int64),
        threshold=cond.astype(np.float64),
        missing_left=np.asarray(doc["default_left"], dtype=bool),
        values=leaves.astype(np.float64),
    )


def lower_model_json(
    document: dict[str, Any] | bytes | bytearray | str,
    *,
    classes: np.ndarray | None = None,
    feature_names: list[str] | None = None,
    estimator: str = "Booster",
    xgboost_version: str | None = None,
) -> Model:
    """Lower an XGBoost model from its JSON document (``Booster.save_raw("json")``).

    Parameters
    ----------
    document : dict, bytes or str
        The parsed or raw JSON model.
    classes : ndarray, optional
        Class labels (default: ``0 .. n_classes - 1`` as XGBoost encodes them).
    feature_names : list of str, optional
        Overrides the names stored in the model.
    """
    doc = json.loads(document) if isinstance(document, bytes | bytearray | str) else document
    try:
        learner = doc["learner"]
        objective = learner["objective"]["name"]
        params = learner["learner_model_param"]
        booster = learner["gradient_booster"]
    except (KeyError, TypeError):
        raise ModelFormatError("not an XGBoost model JSON (no learner section)") from None
    if objective not in _OBJECTIVES:
        raise UnsupportedModelError(
            f"XGBoost objective {objective!r} is not supported; supported: "
            f"{', '.join(sorted(_OBJECTIVES))}"
        )
    task, link, transform = _OBJECTIVES[objective]
    if "c" in (learner.get("feature_types") or []):
        raise UnsupportedModelError(
            "this XGBoost model has categorical features (enable_categorical); not supported "
            "yet: encode categorical features as numbers"
        )
    name = booster.get("name")
    weights: list[float] | None = None
    if name == "dart":
        weights = [float(w) for w in booster.get("weight_drop", [])]
        booster = booster["gbtree"]
    elif name != "gbtree":
        raise UnsupportedModelError(
            f"XGBoost booster {name!r} is not supported; fedge lowers gbtree and dart"
        )
    model = booster["model"]
    if int(_param(params, "num_target")) > 1:
        raise UnsupportedModelError("XGBoost multi-target models are not supported")
    n_class = int(_param(params, "num_class"))
    n_outputs = max(n_class, 1)
    n_features = int(_param(params, "num_feature"))
    tree_docs = model["trees"]
    if not tree_docs:
        raise NotFittedError("the XGBoost model has no trees; train it first")
    weights = weights or [1.0] * len(tree_docs)
    trees = [_tree(t, i, w) for i, (t, w) in enumerate(zip(tree_docs, weights, strict=True))]
    ensemble = assemble(
        trees,
        n_features=n_features,
        n_outputs=n_outputs,
        tree_offset=np.asarray(model["tree_info"], dtype=np.int64),
        base_score=_base_margin(_param(params, "base_score"), n_outputs, transform),
        comparison=Comparison.LT,
        input_precision=Precision.FLOAT32,
        # Leaves and base score are exact float32, and XGBoost adds them up in float32.
        leaf_precision=Precision.FLOAT32,
    )
    names = feature_names or learner.get("feature_names") or None
    source = {
        "library": "xgboost",
        "version": xgboost_version or ".".join(str(v) for v in doc.get("version", [])),
        "estimator": estimator,
        "objective": objective,
    }
    return booster_model(
        ensemble, task=task, link=link, source=source, classes=classes, feature_names=names
    )


def _version() -> str | None:
    module = sys.modules.get("xgboost")
    return getattr(module, "__version__", None)


@register("xgboost", "Booster")
def _booster(booster: Any) -> Model:
    return lower_model_json(booster.save_raw("json"), xgboost_version=_version())


@register("xgboost", "XGBClassifier", "XGBRegressor", "XGBRFClassifier", "XGBRFRegressor")
def _sklearn_api(est: Any) -> Model:
    try:
        booster = est.get_booster()
    except Exception:  # xgboost raises its own NotFittedError subclass
        raise NotFittedError(f"{type(est).__name__} is not fitted; call fit() first") from None
    missing = getattr(est, "missing", math.nan)
    if missing is not None and not (isinstance(missing, float) and math.isnan(missing)):
        raise UnsupportedModelError(
            f"{type(est).__name__}(missing={missing!r}): fedge treats only NaN as missing; "
            "replace that value with NaN and refit"
        )
    classes = getattr(est, "classes_", None)
    return lower_model_json(
        booster.save_raw("json"),
        classes=None if classes is None else np.asarray(classes),
        estimator=type(est).__name__,
        xgboost_version=_version(),
    )
