"""Evaluate an IR model with numpy: the oracle every backend is compared with.

Two modes (DESIGN.md, the precision contract):

- ``reference``: float64 arithmetic that follows the source library's operations,
  so labels are identical and scores agree to rounding (rtol 1e-9, atol 1e-12).
  Tree outputs are added up in the ensemble's stored precision, so a float32
  ensemble (XGBoost) sums exactly as its library does.
- ``device``: what a device computes. float32 inputs and parameters, float32
  arithmetic in a fixed accumulation order (dot products in four interleaved
  partial sums combined in a fixed tree, trees one at a time), and fedge's own
  exp (:mod:`fedge.ir.devicemath`). Generated C compiled
  with ``-ffp-contract=off`` reproduces it bit for bit.

Evaluation is vectorised over rows; the only Python loops run over inputs,
tree levels, trees or outputs, never over rows or nodes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError, UnsupportedModelError, UnsupportedOperationError
from fedge.ir import devicemath
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
    QuantizedDense,
    QuantizedTrees,
    Step,
    Task,
    TreeEnsemble,
    accepts_missing,
)

__all__ = ["Mode", "check_input", "decision_function", "predict", "predict_proba", "reads_float32"]

# Rows evaluated at once by the tree walker: bounds the (rows x trees) index matrix.
_TREE_CHUNK_ROWS = 8192


class Mode(StrEnum):
    REFERENCE = "reference"
    DEVICE = "device"


# --------------------------------------------------------------------------- public API
def decision_function(model: Model, X: Any, *, mode: Mode | str = Mode.REFERENCE) -> np.ndarray:
    """Raw scores of the last step (before the link).

    Parameters
    ----------
    model : Model
        An IR model (from :func:`fedge.lower` or :func:`fedge.load`).
    X : array-like of shape (n_rows, n_features)
        Numeric input. NaN is accepted only when the model has a rule for it.
    mode : {"reference", "device"}
        Arithmetic to use (see the module docstring).

    Returns
    -------
    ndarray of shape (n_rows,) for one output, else (n_rows, n_outputs); float64 in
    ``reference`` mode, float32 in ``device`` mode.
    """
    mode = _mode(mode)
    scores = _scores(model, check_input(model, X, mode), mode)
    return scores[:, 0] if scores.shape[1] == 1 else scores


def predict_proba(model: Model, X: Any, *, mode: Mode | str = Mode.REFERENCE) -> np.ndarray:
    """Class probabilities, columns in the order of ``model.classes``.

    Raises
    ------
    UnsupportedOperationError
        For regression models and classifiers without probabilities (``link="none"``).
    """
    mode = _mode(mode)
    _require_probabilities(model)
    return _probabilities(model, _scores(model, check_input(model, X, mode), mode), mode)


def predict(model: Model, X: Any, *, mode: Mode | str = Mode.REFERENCE) -> np.ndarray:
    """Labels (classification) or predicted values (regression).

    Labels are decided as the source library decides them (``model.predict_from``).
    Regression returns shape (n_rows,) for one output, else (n_rows, n_outputs).
    """
    mode = _mode(mode)
    scores = _scores(model, check_input(model, X, mode), mode)
    if model.task is Task.REGRESSION:
        if model.link is Link.EXP:
            with np.errstate(**_IEEE):
                scores = devicemath.exp(scores) if mode is Mode.DEVICE else np.exp(scores)
        return scores[:, 0] if scores.shape[1] == 1 else scores
    assert model.classes is not None
    rule = model.predict_from
    if rule is PredictFrom.PROBABILITIES:
        proba = _probabilities(model, scores, mode)
        index = (
            (proba[:, 1] > 0.5).astype(np.intp)
            if scores.shape[1] == 1
            else np.argmax(proba, axis=1)
        )
    elif scores.shape[1] == 1:
        positive = scores[:, 0] >= 0 if rule is PredictFrom.SCORES_INCLUSIVE else scores[:, 0] > 0
        index = positive.astype(np.intp)
    else:
        index = np.argmax(scores, axis=1)
    return model.classes[index]


# --------------------------------------------------------------------------- input checks
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def reads_float32(model: Model, mode: Mode | str = Mode.REFERENCE) -> bool:
    """Whether the model rounds its input to float32 (device mode, or float32-compared trees)."""
    return _mode(mode) is Mode.DEVICE or any(
        isinstance(s, QuantizedTrees)
        or (isinstance(s, TreeEnsemble) and s.input_precision is Precision.FLOAT32)
        for s in model.steps
    )


def check_input(model: Model, X: Any, mode: Mode | str = Mode.REFERENCE) -> np.ndarray:
    """Validate ``X`` against the model and return it as a float64 2-D array."""
    if not isinstance(model, Model):
        raise UnsupportedModelError(
            f"expected a fedge IR Model, got {type(model).__name__}; "
            "lower a fitted estimator first with fedge.lower(estimator)"
        )
    names = getattr(X, "columns", None)
    if names is not None and model.feature_names is not None:
        given = [str(c) for c in names]
        if given != list(model.feature_names):
            raise InvalidInputError(
                "X's columns do not match the model's feature names: "
                f"expected {list(model.feature_names)[:5]}..., got {given[:5]}..."
            )
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"X must be numeric: {exc}") from None
    if arr.ndim != 2:
        raise InvalidInputError(
            f"X must be 2-D (n_rows, n_features), got shape {arr.shape}; "
            "pass a single row as X.reshape(1, -1)"
        )
    if arr.shape[1] != model.n_features:
        raise InvalidInputError(
            f"X has {arr.shape[1]} features, but the model expects {model.n_features}"
        )
    if np.isinf(arr).any():
        rows = np.flatnonzero(np.isinf(arr).any(axis=1))
        raise InvalidInputError(
            f"X has infinite values in {rows.size} row(s) (first: row {rows[0]}); "
            "replace them before predicting"
        )
    if reads_float32(model, mode):
        with np.errstate(invalid="ignore"):
            huge = np.abs(arr) > _FLOAT32_MAX
        if huge.any():
            rows = np.flatnonzero(huge.any(axis=1))
            raise InvalidInputError(
                f"X has values beyond the float32 range (|x| > 3.4e38) in {rows.size} row(s) "
                f"(first: row {rows[0]}); this model reads its input as float32"
            )
    if not accepts_missing(model) and np.isnan(arr).any():
        rows = np.flatnonzero(np.isnan(arr).any(axis=1))
        raise InvalidInputError(
            f"X has NaN in {rows.size} row(s) (first: row {rows[0]}), and this model has no "
            "rule for missing values; impute them (e.g. a SimpleImputer in the pipeline)"
        )
    return arr


def _mode(mode: Mode | str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise InvalidInputError(f"mode must be 'reference' or 'device', got {mode!r}") from None


def _require_probabilities(model: Model) -> None:
    if model.task is Task.REGRESSION:
        raise UnsupportedOperationError(
            "predict_proba is for classifiers; this model is a regressor"
        )
    if model.link is Link.NONE:
        source = model.metadata.get("source", {}).get("estimator", "this model")
        raise UnsupportedOperationError(
            f"{source} has no probabilities (its scores are margins); "
            "use decision_function, or train a probabilistic model"
        )


# --------------------------------------------------------------------------- scores
# Overflow to inf, inf - inf = NaN and underflow to 0 are IEEE results a device
# computes too; numpy's warnings about them would only be noise here.
_IEEE = {"over": "ignore", "under": "ignore", "invalid": "ignore", "divide": "ignore"}


def _scores(model: Model, X: np.ndarray, mode: Mode) -> np.ndarray:
    dtype = np.float64 if mode is Mode.REFERENCE else np.float32
    h = X.astype(dtype, copy=mode is Mode.REFERENCE)
    with np.errstate(**_IEEE):
        for step in model.steps:
            h = _STEP_EVAL[type(step)](step, h, mode)
    return h


def _impute(step: Impute, X: np.ndarray, mode: Mode) -> np.ndarray:
    fill = step.fill.astype(X.dtype)
    return np.where(np.isnan(X), fill, X)


def _affine(step: Affine, X: np.ndarray, mode: Mode) -> np.ndarray:
    offset, scale = step.offset.astype(X.dtype), step.scale.astype(X.dtype)
    if step.order is AffineOrder.SUBTRACT_DIVIDE:
        return (X - offset) / scale
    return X * scale + offset


#: Partial sums per output of a device-mode dot product (see :func:`_matmul`).
DOT_LANES = 4


def _matmul(X: np.ndarray, W: np.ndarray, b: np.ndarray, mode: Mode) -> np.ndarray:
    if mode is Mode.REFERENCE:
        return X @ W.astype(np.float64) + b.astype(np.float64)
    # Device: DOT_LANES partial sums per output, lane l adding x[i] * w[i] for i = l, l + 4,
    # ... in order from 0.0, then ((l0 + l1) + (l2 + l3)) + b: a fixed order (no BLAS
    # reordering) whose four chains the generated C runs side by side (SIMD where it can).
    W32 = W.astype(np.float32)
    lanes = np.zeros((DOT_LANES, X.shape[0], W.shape[1]), dtype=np.float32)
    for i in range(W32.shape[0]):
        lanes[i % DOT_LANES] += X[:, i : i + 1] * W32[i]
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + b.astype(np.float32)


def _linear(step: Linear, X: np.ndarray, mode: Mode) -> np.ndarray:
    return _matmul(X, step.weights, step.bias, mode)


def _dense(step: Dense, X: np.ndarray, mode: Mode) -> np.ndarray:
    return _activate(step.activation, _matmul(X, step.weights, step.bias, mode), mode)


def _quantized_dense(step: QuantizedDense, X: np.ndarray, mode: Mode) -> np.ndarray:
    if step.input_bits == 0:
        z = _matmul(X, step.dequantized(), step.bias, mode)
    else:
        z = _dynamic_matmul(step, X)
    return _activate(step.activation, z, mode)


def _dynamic_matmul(step: QuantizedDense, X: np.ndarray) -> np.ndarray:
    """Per-row int8 inputs times int8 weights, summed exactly in integers, then rescaled
    (float64 in reference mode, float32 in device mode, by the inputs' dtype)."""
    dtype = X.dtype.type
    s = np.max(np.abs(X), axis=1) / dtype(127)
    s[s == 0] = 1  # an all-zero row (or a scale that underflows): every q is 0 anyway
    r = np.rint(X / s[:, None])
    # NaN (an infinite input makes s infinite: inf / inf) quantizes to 0, as in C; the row's
    # output is then NaN through 0 * inf, never an undefined float-to-int cast.
    q = np.where(np.isnan(r), 0, np.clip(r, -127, 127)).astype(np.int64)
    acc = q @ (step.weights.astype(np.int64) - step.zero_point)
    scale = s[:, None] * step.scale.astype(dtype)
    return acc.astype(dtype) * scale + step.bias.astype(dtype)


def _activate(activation: Activation, z: np.ndarray, mode: Mode) -> np.ndarray:
    if activation is Activation.IDENTITY:
        return z
    if activation is Activation.RELU:
        return np.where(z > 0, z, z.dtype.type(0))
    if mode is Mode.DEVICE:
        fn = devicemath.tanh if activation is Activation.TANH else devicemath.logistic
        return fn(z)
    if activation is Activation.TANH:
        return np.tanh(z)
    return _sigmoid64(z)


def _sigmoid64(z: np.ndarray) -> np.ndarray:
    """Accurate float64 logistic for any sign (as scipy's expit)."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _trees(step: TreeEnsemble, X: np.ndarray, mode: Mode) -> np.ndarray:
    # Reference mode adds leaves up in their stored precision: float64 for scikit-learn,
    # float32 for XGBoost, which sums its float32 leaves in float32 (float16 leaves too).
    stored = np.promote_types(step.leaf_values.dtype, np.float32)
    leaf_dtype = stored.type if mode is Mode.REFERENCE else np.float32
    if mode is Mode.DEVICE:
        threshold, Xc = step.device_thresholds(), X
    elif step.input_precision is Precision.FLOAT32:
        threshold = step.threshold.astype(np.float64)
        Xc = X.astype(np.float32).astype(np.float64)
    else:
        threshold, Xc = step.threshold, X
    leaves = step.leaf_values.astype(leaf_dtype)
    acc = np.zeros((X.shape[0], step.n_outputs), dtype=leaf_dtype)
    if step.aggregation is Aggregation.SUM:
        acc += step.base_score.astype(leaf_dtype)
    _add_leaves(step, Xc, threshold, leaves, acc)
    if step.aggregation is Aggregation.MEAN:
        acc /= leaf_dtype(step.n_trees)
        acc += step.base_score.astype(leaf_dtype)
    return acc.astype(X.dtype, copy=False)


def _add_leaves(
    step: TreeEnsemble | QuantizedTrees,
    X: np.ndarray,
    threshold: np.ndarray,
    leaves: np.ndarray,
    acc: np.ndarray,
    less: Any = None,
) -> None:
    """Add every tree's leaf to ``acc`` in tree order, a chunk of rows at a time."""
    width = step.leaf_width
    for start in range(0, X.shape[0], _TREE_CHUNK_ROWS):
        rows = slice(start, start + _TREE_CHUNK_ROWS)
        leaf = _walk(step, X[rows], threshold, less)
        part = acc[rows]
        for t in range(step.n_trees):
            off = int(step.tree_offset[t])
            part[:, off : off + width] += leaves[leaf[:, t]]


def _walk(
    step: TreeEnsemble | QuantizedTrees, X: np.ndarray, threshold: np.ndarray, less: Any = None
) -> np.ndarray:
    """Leaf index reached by every (row, tree), one tree level per iteration.

    Works on flat arrays of the (row, tree) pairs still inside a tree, which
    shrink as pairs reach their leaves. ``less`` defaults to the step's comparison.
    """
    n_rows, n_trees = X.shape[0], step.n_trees
    node = np.tile(step.roots, n_rows)  # position p = row * n_trees + tree
    active = np.flatnonzero(node >= 0)
    cur = node[active]
    base = (active // n_trees) * X.shape[1]  # offset of the pair's row in X.ravel()
    flat_x = X.ravel()
    children = np.stack([step.left, step.right], axis=1).ravel()  # one gather per level
    if less is None:
        less = np.less_equal if step.comparison is Comparison.LE else np.less
    while active.size:
        x = flat_x[base + step.feature[cur]]
        go_left = less(x, threshold[cur])
        nan = np.isnan(x)
        if nan.any():
            go_left[nan] = step.missing_left[cur[nan]]
        cur = children[2 * cur + ~go_left]
        done = cur < 0
        node[active[done]] = cur[done]
        keep = ~done
        active, cur, base = active[keep], cur[keep], base[keep]
    return (~node).reshape(n_rows, n_trees)


def _quantized_trees(step: QuantizedTrees, X: np.ndarray, mode: Mode) -> np.ndarray:
    """Bins once per row, integer comparisons, integer sums, one float32 rescale (the same
    arithmetic in both modes: it defines the model)."""
    x32 = X.astype(np.float32)
    side = "left" if step.comparison is Comparison.LE else "right"
    bins = np.empty(X.shape, dtype=np.float64)  # float so NaN can mark missing values
    for f in range(step.n_features):
        edges = step.bin_edges[step.bin_start[f] : step.bin_start[f + 1]]
        bins[:, f] = np.searchsorted(edges, x32[:, f], side=side)
    bins[np.isnan(x32)] = np.nan
    acc = np.zeros((X.shape[0], step.n_outputs), dtype=np.int64)
    leaves = step.leaf_values.astype(np.int64)
    _add_leaves(step, bins, step.threshold.astype(np.float64), leaves, acc, np.less_equal)
    scale = np.broadcast_to(step.leaf_scale, (step.n_outputs,))
    out = acc.astype(np.float32) * scale
    if step.aggregation is Aggregation.MEAN:
        out /= np.float32(step.n_trees)
    out += step.base_score
    return out.astype(X.dtype, copy=False)


_STEP_EVAL: dict[type, Any] = {
    Impute: _impute,
    Affine: _affine,
    Linear: _linear,
    Dense: _dense,
    QuantizedDense: _quantized_dense,
    TreeEnsemble: _trees,
    QuantizedTrees: _quantized_trees,
}


def step_output(step: Step, X: np.ndarray, mode: Mode | str = Mode.REFERENCE) -> np.ndarray:
    """Evaluate one step on an already-validated 2-D array (for passes and backends)."""
    mode = _mode(mode)
    dtype = np.float64 if mode is Mode.REFERENCE else np.float32
    return _STEP_EVAL[type(step)](step, np.asarray(X, dtype=dtype), mode)


# --------------------------------------------------------------------------- links
def _probabilities(model: Model, scores: np.ndarray, mode: Mode) -> np.ndarray:
    with np.errstate(**_IEEE):
        return _link(model.link, scores, mode)


def _link(link: Link, scores: np.ndarray, mode: Mode) -> np.ndarray:
    device = mode is Mode.DEVICE
    one = scores.dtype.type(1)
    if link is Link.IDENTITY:
        return scores
    if link is Link.LOGISTIC:
        p = devicemath.logistic(scores[:, 0]) if device else _sigmoid64(scores[:, 0])
        return np.stack([one - p, p], axis=1)
    if link is Link.SOFTMAX:
        if device:
            return devicemath.softmax(scores)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if link is Link.LOGISTIC_OVR:
        p = devicemath.logistic(scores) if device else _sigmoid64(scores)
        return _normalise_rows(p, device)
    if link is Link.MODIFIED_HUBER:
        half = scores.dtype.type(2)
        p = (np.clip(scores, -one, one) + one) / half
        if p.shape[1] == 1:
            return np.stack([one - p[:, 0], p[:, 0]], axis=1)
        return _normalise_rows(p, device)
    raise UnsupportedOperationError(f"link {link.value!r} has no probabilities")


def _normalise_rows(p: np.ndarray, device: bool) -> np.ndarray:
    """Divide each row by its sum; an all-zero row becomes uniform (scikit-learn's rule)."""
    if device:
        total = p[:, 0].copy()
        for j in range(1, p.shape[1]):
            total = total + p[:, j]
    else:
        total = p.sum(axis=1)
    zero = total == 0
    if zero.any():
        p = p.copy()
        p[zero] = 1
        total = np.where(zero, p.dtype.type(p.shape[1]), total)
    return p / total[:, None]
