"""LightGBM frontend: boosters from LightGBM's own text model.

LightGBM compares float64 inputs with ``x <= threshold`` (thresholds and leaves
are doubles, printed with round-trip precision) and adds trees up in float64.
Its missing-value rule is per node (``decision_type``): with missing type
``NaN`` a NaN takes the default direction; with type ``None`` a NaN is compared
as 0.0, which is the fixed direction ``0 <= threshold``. Type ``Zero`` (zeros
treated as missing) cannot be expressed without a zero rule and is refused, as
are categorical splits and linear trees.

LightGBM's predictor also drops inputs with ``|x| <= kZeroThreshold`` (1e-35f) from
its sparse row, so they compare as exactly 0.0. That changes only splits whose
threshold lies inside that zone, and each has an equivalent plain threshold
(:func:`_fold_zero_zone`), so the IR needs no extra rule.

:func:`lower_model_text` needs only the text: a LightGBM model file can be
lowered without importing lightgbm. The child encoding is already the IR's
(``r < 0`` is leaf ``~r``).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np

from fedge.errors import ModelFormatError, NotFittedError, UnsupportedModelError
from fedge.ir.lower import register
from fedge.ir.lower._trees import Tree, assemble, booster_model
from fedge.ir.nodes import Comparison, Link, Model, Precision, Task

__all__ = ["lower_model_text"]

_CATEGORICAL = 1
_DEFAULT_LEFT = 2
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2

# LightGBM's kZeroThreshold (a float 1e-35f, compared in double).
_ZERO = float(np.float32(1e-35))
_BELOW_ZERO_ZONE = float(np.nextafter(-_ZERO, -np.inf))

_REGRESSION = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}
_LOG_LINK = {"poisson", "gamma", "tweedie"}


def _header(text: str) -> dict[str, str]:
    head = text.split("\nTree=", 1)[0]
    return dict(line.split("=", 1) for line in head.splitlines() if "=" in line)


def _blocks(text: str) -> list[dict[str, str]]:
    body = text.split("end of trees", 1)[0]
    blocks = []
    for chunk in re.split(r"^Tree=\d+\s*$", body, flags=re.MULTILINE)[1:]:
        blocks.append(dict(line.split("=", 1) for line in chunk.splitlines() if "=" in line))
    return blocks


def _numbers(block: dict[str, str], key: str, dtype: Any) -> np.ndarray:
    raw = block.get(key, "").split()
    try:
        return np.array([float(v) for v in raw], dtype=np.float64).astype(dtype)
    except ValueError:
        raise ModelFormatError(f"LightGBM tree field {key!r} is not numeric") from None


def _fold_zero_zone(threshold: np.ndarray) -> np.ndarray:
    """Thresholds equivalent to LightGBM's once inputs in [-Z, Z] are read as 0.0.

    For t in [-Z, 0): the zone goes right (0 <= t is false), so left means x < -Z.
    For t in [0, Z]: the zone goes left, so left means x <= Z. Others are unchanged.
    """
    t = threshold.copy()
    t[(t >= -_ZERO) & (t < 0)] = _BELOW_ZERO_ZONE
    t[(t >= 0) & (t <= _ZERO)] = _ZERO
    return t


def _tree(block: dict[str, str], index: int) -> Tree:
    if block.get("is_linear", "0") != "0":
        raise UnsupportedModelError(f"LightGBM tree {index} is a linear tree; not supported")
    leaves = _numbers(block, "leaf_value", np.float64)
    n_leaves = int(block.get("num_leaves", "0"))
    if leaves.shape[0] != n_leaves or n_leaves < 1:
        raise ModelFormatError(f"LightGBM tree {index} has {leaves.shape[0]} leaf values")
    if n_leaves == 1:
        empty = np.zeros(0, dtype=np.int64)
        return Tree(empty, np.zeros(0), empty, empty, np.zeros(0, bool), leaves[:, None], ~0)
    decision = _numbers(block, "decision_type", np.int64)
    threshold = _fold_zero_zone(_numbers(block, "threshold", np.float64))
    if np.any(decision & _CATEGORICAL):
        raise UnsupportedModelError(
            f"LightGBM tree {index} has categorical splits; they are not supported yet: "
            "encode categorical features as numbers"
        )
    missing_type = (decision >> 2) & 3
    if np.any(missing_type == _MISSING_ZERO):
        raise UnsupportedModelError(
            "LightGBM treats zeros as missing in this model (zero_as_missing=True); "
            "not supported: refit with zero_as_missing=False"
        )
    # Missing type None: NaN is compared as 0.0, a fixed direction per node.
    missing_left = np.where(
        missing_type == _MISSING_NAN, (decision & _DEFAULT_LEFT) != 0, threshold >= 0.0
    )
    return Tree(
        feature=_numbers(block, "split_feature", np.int64),
        threshold=threshold,
        left=_numbers(block, "left_child", np.int64),
        right=_numbers(block, "right_child", np.int64),
        missing_left=missing_left,
        leaf_values=leaves[:, None],
        root=0,
    )


def _refuse_pandas_categorical(text: str) -> None:
    # Trained on pandas categorical columns, the trees split on category codes: a caller
    # passing the category values themselves would get silently wrong answers.
    for line in text.splitlines():
        if line.startswith("pandas_categorical:") and line.split(":", 1)[1].strip() not in (
            "null",
            "[]",
            "",
        ):
            raise UnsupportedModelError(
                "this LightGBM model was trained on pandas categorical columns (it splits on "
                "category codes); not supported: encode the categories as numbers yourself"
            )


def _objective(spec: str) -> tuple[Task, Link]:
    name, *params = spec.split()
    options = dict(p.split(":", 1) for p in params if ":" in p)
    if name == "binary":
        if float(options.get("sigmoid", "1")) != 1.0:
            raise UnsupportedModelError("LightGBM binary objective with sigmoid != 1")
        return Task.CLASSIFICATION, Link.LOGISTIC
    if name in ("multiclass", "softmax"):
        return Task.CLASSIFICATION, Link.SOFTMAX
    if name in _REGRESSION:
        return Task.REGRESSION, Link.IDENTITY
    if name in _LOG_LINK:
        return Task.REGRESSION, Link.EXP
    raise UnsupportedModelError(
        f"LightGBM objective {name!r} is not supported; supported: binary, multiclass, "
        f"{', '.join(sorted(_REGRESSION | _LOG_LINK))}"
    )


def lower_model_text(
    text: str,
    *,
    classes: np.ndarray | None = None,
    estimator: str = "Booster",
    lightgbm_version: str | None = None,
) -> Model:
    """Lower a LightGBM model from its text form (``Booster.model_to_string()``)."""
    if not text.startswith("tree\n"):
        raise ModelFormatError("not a LightGBM text model (no 'tree' header)")
    header = _header(text)
    try:
        n_outputs = int(header["num_tree_per_iteration"])
        n_features = int(header["max_feature_idx"]) + 1
        task, link = _objective(header["objective"])
    except (KeyError, ValueError):
        raise ModelFormatError("LightGBM model header is incomplete") from None
    _refuse_pandas_categorical(text)
    blocks = _blocks(text)
    if not blocks:
        raise NotFittedError("the LightGBM model has no trees; train it first")
    trees = [_tree(b, i) for i, b in enumerate(blocks)]
    ensemble = assemble(
        trees,
        n_features=n_features,
        n_outputs=n_outputs,
        tree_offset=np.arange(len(trees)) % n_outputs,
        comparison=Comparison.LE,
        input_precision=Precision.FLOAT64,
    )
    names = header.get("feature_names", "").split()
    if names == [f"Column_{i}" for i in range(n_features)] or len(names) != n_features:
        names = []
    source = {
        "library": "lightgbm",
        "version": lightgbm_version or "unknown",
        "estimator": estimator,
        "objective": header["objective"],
    }
    return booster_model(
        ensemble, task=task, link=link, source=source, classes=classes, feature_names=names
    )


def _version() -> str | None:
    return getattr(sys.modules.get("lightgbm"), "__version__", None)


@register("lightgbm", "Booster")
def _booster(booster: Any) -> Model:
    return lower_model_text(booster.model_to_string(), lightgbm_version=_version())


@register("lightgbm", "LGBMClassifier", "LGBMRegressor")
def _sklearn_api(est: Any) -> Model:
    booster = getattr(est, "_Booster", None)
    if booster is None:
        raise NotFittedError(f"{type(est).__name__} is not fitted; call fit() first")
    classes = getattr(est, "classes_", None)
    return lower_model_text(
        booster.model_to_string(),
        classes=None if classes is None else np.asarray(classes),
        estimator=type(est).__name__,
        lightgbm_version=_version(),
    )
