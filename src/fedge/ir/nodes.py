"""The fedge IR: a model is a chain of small, immutable steps over numpy arrays.

Every frontend lowers into these dataclasses, every compression pass maps them
to new ones, and every backend reads only them. Construction validates: a step
checks its own arrays (dtypes, shapes, finiteness, tree structure) and a
:class:`Model` checks that the steps fit together. Arrays are copied and made
read-only, so a constructed model can never become invalid.

Precision is part of the IR: the storage dtype of every tensor is its
precision (:class:`Precision`). Tree ensembles also record the precision the
source library rounds inputs to before comparing (scikit-learn and XGBoost:
float32), which is what makes float32 thresholds exact.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

import numpy as np

from fedge.errors import InvalidModelError

__all__ = [
    "Activation",
    "Affine",
    "AffineOrder",
    "Aggregation",
    "Comparison",
    "Dense",
    "Impute",
    "Linear",
    "Link",
    "Model",
    "Precision",
    "PredictFrom",
    "QuantizedDense",
    "QuantizedTrees",
    "Step",
    "Task",
    "TreeEnsemble",
    "accepts_missing",
    "models_equal",
    "nbytes",
    "round_threshold",
    "step_arrays",
    "validate",
]


class Precision(StrEnum):
    """Storage precision of a tensor (its numpy dtype).

    Float tensors are float64, float32 or float16 (float16 holds weights and leaf values
    that compression rounded; it is widened exactly to float32 before any arithmetic).
    int16 and int8 are the integer weights of :class:`QuantizedDense`, with a scale and
    a zero point. Every backend dispatches on the dtype.
    """

    FLOAT64 = "float64"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT16 = "int16"
    INT8 = "int8"

    @property
    def is_integer(self) -> bool:
        return self in (Precision.INT16, Precision.INT8)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.value)


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class Link(StrEnum):
    """How probabilities are derived from the raw scores of the last step.

    - ``identity``: the scores are the probabilities (forests) or the prediction (regression).
    - ``logistic``: one score per row; ``p = sigmoid(s)``, probabilities ``[1 - p, p]``.
    - ``softmax``: one score per class.
    - ``logistic_ovr``: one score per class; sigmoid each, then normalise the row
      (scikit-learn's one-vs-rest probabilities; an all-zero row becomes uniform).
    - ``modified_huber``: ``(clip(s, -1, 1) + 1) / 2`` per class, normalised as above
      (SGDClassifier with ``loss="modified_huber"``).
    - ``none``: the model has scores but no probabilities (LinearSVC, Perceptron...).
    - ``exp``: regression on a log scale: the prediction is ``exp(score)`` (Poisson, Gamma
      and Tweedie objectives).
    """

    IDENTITY = "identity"
    LOGISTIC = "logistic"
    SOFTMAX = "softmax"
    LOGISTIC_OVR = "logistic_ovr"
    MODIFIED_HUBER = "modified_huber"
    NONE = "none"
    EXP = "exp"


class PredictFrom(StrEnum):
    """What a classifier's label is decided on, as the source library does it.

    ``scores``: ``score > 0`` for one output, else ``argmax(scores)``.
    ``scores_inclusive``: ``score >= 0`` for one output (GradientBoostingClassifier), else argmax.
    ``probabilities``: ``p > 0.5`` for binary, else ``argmax(probabilities)``.
    The two differ only at the last bit, but labels are claimed identical.
    """

    SCORES = "scores"
    SCORES_INCLUSIVE = "scores_inclusive"
    PROBABILITIES = "probabilities"


class Activation(StrEnum):
    IDENTITY = "identity"
    RELU = "relu"
    TANH = "tanh"
    LOGISTIC = "logistic"


class AffineOrder(StrEnum):
    """The exact order of an affine step's two operations (rounding depends on it).

    ``subtract_divide``: ``(x - offset) / scale`` (StandardScaler, RobustScaler, MaxAbsScaler).
    ``multiply_add``: ``x * scale + offset`` (MinMaxScaler).
    """

    SUBTRACT_DIVIDE = "subtract_divide"
    MULTIPLY_ADD = "multiply_add"


class Comparison(StrEnum):
    """A split sends a row left when ``x <= threshold`` (LE) or ``x < threshold`` (LT)."""

    LE = "<="
    LT = "<"


class Aggregation(StrEnum):
    """How tree outputs combine: ``sum`` (boosting, plus base score) or ``mean`` (forests)."""

    SUM = "sum"
    MEAN = "mean"


_FLOAT_DTYPES = frozenset(p.dtype for p in Precision if not p.is_integer)
_INT_WEIGHT_DTYPES = frozenset(p.dtype for p in Precision if p.is_integer)
_INDEX_DTYPE = np.dtype(np.int32)
_MAX_INDEX = np.iinfo(np.int32).max


# --------------------------------------------------------------------------- helpers
def _fail(owner: str, message: str) -> InvalidModelError:
    return InvalidModelError(f"{owner}: {message}")


def _float_array(owner: str, name: str, value: Any, ndim: int) -> np.ndarray:
    """A read-only copy of a float64/float32 array with finite values."""
    arr = np.asarray(value)
    if arr.dtype not in _FLOAT_DTYPES:
        raise _fail(
            owner,
            f"{name} has dtype {arr.dtype}; supported precisions are "
            f"{', '.join(p.value for p in Precision if not p.is_integer)}",
        )
    if arr.ndim != ndim:
        raise _fail(owner, f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise _fail(owner, f"{name} has {bad} non-finite value(s) (NaN or Inf)")
    return _readonly(arr)


def _index_array(owner: str, name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != _INDEX_DTYPE:
        raise _fail(owner, f"{name} must have dtype int32, got {arr.dtype}")
    if arr.ndim != 1:
        raise _fail(owner, f"{name} must be 1-D, got shape {arr.shape}")
    return _readonly(arr)


def _readonly(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, copy=True, order="C")
    out.flags.writeable = False
    return out


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _fail(owner, f"{name} must be an integer, got {type(value).__name__}")
    if not 0 < int(value) <= _MAX_INDEX:
        raise _fail(owner, f"{name} must be between 1 and {_MAX_INDEX}, got {value}")
    return int(value)


def _enum(owner: str, name: str, enum: type[Enum], value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)  # type: ignore[attr-defined]
        raise _fail(owner, f"{name} must be one of {allowed}, got {value!r}") from None


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True, eq=False)
class Impute:
    """Replace NaN in feature ``j`` with ``fill[j]`` (SimpleImputer)."""

    fill: np.ndarray

    def __post_init__(self) -> None:
        _set(self, "fill", _float_array("Impute", "fill", self.fill, 1))
        if self.fill.size == 0:
            raise _fail("Impute", "fill is empty")

    @property
    def n_inputs(self) -> int:
        return int(self.fill.shape[0])

    @property
    def n_outputs(self) -> int:
        return self.n_inputs


@dataclass(frozen=True, eq=False)
class Affine:
    """Per-feature affine map in the exact operation order of the source (see AffineOrder)."""

    offset: np.ndarray
    scale: np.ndarray
    order: AffineOrder = AffineOrder.SUBTRACT_DIVIDE

    def __post_init__(self) -> None:
        _set(self, "offset", _float_array("Affine", "offset", self.offset, 1))
        _set(self, "scale", _float_array("Affine", "scale", self.scale, 1))
        _set(self, "order", _enum("Affine", "order", AffineOrder, self.order))
        if self.offset.shape != self.scale.shape or self.offset.size == 0:
            raise _fail(
                "Affine", f"offset {self.offset.shape} and scale {self.scale.shape} must match"
            )
        if self.offset.dtype != self.scale.dtype:
            raise _fail("Affine", "offset and scale must share one precision")
        if self.order is AffineOrder.SUBTRACT_DIVIDE and np.any(self.scale == 0):
            raise _fail("Affine", "scale has zeros, and subtract_divide divides by it")

    @property
    def n_inputs(self) -> int:
        return int(self.offset.shape[0])

    @property
    def n_outputs(self) -> int:
        return self.n_inputs


def _check_weights(owner: str, weights: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
    w = _float_array(owner, "weights", weights, 2)
    b = _float_array(owner, "bias", bias, 1)
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise _fail(owner, f"weights must be non-empty, got shape {w.shape}")
    if b.shape[0] != w.shape[1]:
        raise _fail(owner, f"bias has {b.shape[0]} values for {w.shape[1]} outputs")
    if w.dtype != b.dtype:
        raise _fail(owner, "weights and bias must share one precision")
    return w, b


@dataclass(frozen=True, eq=False)
class Linear:
    """``x @ weights + bias``; weights have shape ``(n_inputs, n_outputs)``."""

    weights: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        w, b = _check_weights("Linear", self.weights, self.bias)
        _set(self, "weights", w)
        _set(self, "bias", b)

    @property
    def n_inputs(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True, eq=False)
class Dense:
    """One MLP layer: ``activation(x @ weights + bias)``."""

    weights: np.ndarray
    bias: np.ndarray
    activation: Activation = Activation.IDENTITY

    def __post_init__(self) -> None:
        w, b = _check_weights("Dense", self.weights, self.bias)
        _set(self, "weights", w)
        _set(self, "bias", b)
        _set(self, "activation", _enum("Dense", "activation", Activation, self.activation))

    @property
    def n_inputs(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True, eq=False)
class QuantizedDense:
    """A linear layer with integer weights: ``activation(x @ W + bias)`` where
    ``W[k, j] = (weights[k, j] - zero_point[j]) * scale[j]``.

    ``weights`` are int8 or int16 of shape ``(n_inputs, n_outputs)``; ``scale`` (float32,
    positive) and ``zero_point`` (int32, within the weights' range) have one value per
    output column (per-channel) or a single value (per-tensor); ``bias`` is float32.

    ``input_bits`` 0: inputs stay float; a device computes each weight as
    ``float32(weights - zero_point) * scale`` and accumulates in float32 as for
    :class:`Dense`. ``input_bits`` 8 (dynamic quantization; int8 weights only): each row is
    quantized on the fly, ``s = max|x| / 127``, ``q = rint(x / s)`` (ties to even), the
    products ``q * (weights - zero_point)`` are summed exactly in integers, and
    ``y = float32(sum) * (s * scale) + bias``. A row whose ``s`` is 0 (all zeros, or an
    underflow) uses ``s = 1``; ``q`` is clipped to [-127, 127], and a NaN quotient (an
    infinite input, after an earlier step overflowed) counts as 0, so that row's outputs are
    NaN (``0 * inf``).
    """

    weights: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bias: np.ndarray
    activation: Activation = Activation.IDENTITY
    input_bits: int = 0

    def __post_init__(self) -> None:
        owner = "QuantizedDense"
        w = np.asarray(self.weights)
        if w.dtype not in _INT_WEIGHT_DTYPES:
            raise _fail(owner, f"weights must be int8 or int16, got {w.dtype}")
        if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
            raise _fail(owner, f"weights must be a non-empty 2-D array, got shape {w.shape}")
        n_out = w.shape[1]
        scale = np.asarray(self.scale)
        if scale.dtype != np.float32 or scale.ndim != 1 or scale.shape[0] not in (1, n_out):
            raise _fail(
                owner,
                f"scale must be float32 of length 1 or {n_out}, got {scale.dtype} {scale.shape}",
            )
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise _fail(owner, "scale must be finite and positive")
        zp = np.asarray(self.zero_point)
        if zp.dtype != _INDEX_DTYPE or zp.shape != scale.shape:
            raise _fail(owner, f"zero_point must be int32 of shape {scale.shape}")
        info = np.iinfo(w.dtype)
        if np.any((zp < info.min) | (zp > info.max)):
            raise _fail(owner, f"zero_point must lie in the {w.dtype} range")
        b = np.asarray(self.bias)
        if b.dtype != np.float32 or b.shape != (n_out,):
            raise _fail(owner, f"bias must be float32 of length {n_out}, got {b.dtype} {b.shape}")
        if not np.all(np.isfinite(b)):
            raise _fail(owner, "bias has non-finite values")
        bits = self.input_bits
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits not in (0, 8):
            raise _fail(owner, f"input_bits must be 0 (float inputs) or 8 (dynamic), got {bits!r}")
        if bits == 8 and w.dtype != np.int8:
            raise _fail(owner, "dynamic quantization (input_bits=8) needs int8 weights")
        for name, arr in (("weights", w), ("scale", scale), ("zero_point", zp), ("bias", b)):
            _set(self, name, _readonly(arr))
        _set(self, "input_bits", int(bits))
        _set(self, "activation", _enum(owner, "activation", Activation, self.activation))

    @property
    def n_inputs(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights.shape[1])

    @property
    def per_channel(self) -> bool:
        return self.scale.shape[0] > 1 or self.n_outputs == 1

    def dequantized(self) -> np.ndarray:
        """The float32 weights a device multiplies by: ``float32(q - zp) * scale``."""
        centred = self.weights.astype(np.int32) - self.zero_point
        return centred.astype(np.float32) * self.scale


class _Forest:
    """Sizes shared by :class:`TreeEnsemble` and :class:`QuantizedTrees` (same layout)."""

    n_features: int
    feature: np.ndarray
    roots: np.ndarray
    leaf_values: np.ndarray
    depths: np.ndarray

    @property
    def n_inputs(self) -> int:
        return self.n_features

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def n_nodes(self) -> int:
        """Number of internal (split) nodes."""
        return int(self.feature.shape[0])

    @property
    def n_leaves(self) -> int:
        return int(self.leaf_values.shape[0])

    @property
    def leaf_width(self) -> int:
        return int(self.leaf_values.shape[1])

    @property
    def max_depth(self) -> int:
        return int(self.depths.max()) if self.depths.size else 0


@dataclass(frozen=True, eq=False)
class TreeEnsemble(_Forest):
    """All trees of an ensemble as flat structure-of-arrays.

    Internal node ``i`` sends a row to ``left[i]`` when ``x[feature[i]] <= threshold[i]``
    (or ``<``, see ``comparison``), to ``right[i]`` otherwise, and to ``left[i]`` or
    ``right[i]`` by ``missing_left[i]`` when the value is NaN. A child reference
    ``r >= 0`` is an internal node; ``r < 0`` is the leaf ``~r`` (row of
    ``leaf_values``). ``roots`` use the same encoding, so a single-leaf tree has a
    negative root. Leaf rows may be shared by several trees or nodes.

    Tree ``t`` adds its leaf vector to outputs ``tree_offset[t] : tree_offset[t] +
    leaf_width``. ``sum``: ``base_score + sum of trees`` in tree order; ``mean``:
    ``sum of trees / n_trees + base_score``.

    Inputs are first rounded to ``input_precision`` (scikit-learn and XGBoost
    compare float32 inputs). float32 thresholds are allowed only then, and are
    exact: for ``<=``, the largest float32 not above the source threshold.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    leaf_values: np.ndarray
    roots: np.ndarray
    tree_offset: np.ndarray
    n_features: int
    n_outputs: int
    base_score: np.ndarray
    comparison: Comparison = Comparison.LE
    aggregation: Aggregation = Aggregation.SUM
    input_precision: Precision = Precision.FLOAT32
    # Filled in by validation: the depth (number of splits on the longest path) of each tree.
    depths: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        owner = "TreeEnsemble"
        _set(self, "comparison", _enum(owner, "comparison", Comparison, self.comparison))
        _set(self, "aggregation", _enum(owner, "aggregation", Aggregation, self.aggregation))
        _set(
            self,
            "input_precision",
            _enum(owner, "input_precision", Precision, self.input_precision),
        )
        if self.input_precision not in (Precision.FLOAT64, Precision.FLOAT32):
            raise _fail(owner, "input_precision must be float64 or float32")
        _set(self, "n_features", _positive_int(owner, "n_features", self.n_features))
        _set(self, "n_outputs", _positive_int(owner, "n_outputs", self.n_outputs))
        for name in ("feature", "left", "right", "roots", "tree_offset"):
            _set(self, name, _index_array(owner, name, getattr(self, name)))
        thr = np.asarray(self.threshold)
        if thr.dtype not in (np.float64, np.float32) or thr.ndim != 1:
            raise _fail(
                owner, f"threshold must be 1-D float64/float32, got {thr.dtype} {thr.shape}"
            )
        if np.any(np.isnan(thr)):
            raise _fail(owner, "threshold has NaN values")
        _set(self, "threshold", _readonly(thr))
        miss = np.asarray(self.missing_left)
        if miss.dtype != np.bool_ or miss.ndim != 1:
            raise _fail(owner, f"missing_left must be a 1-D bool array, got {miss.dtype}")
        _set(self, "missing_left", _readonly(miss))
        _set(self, "leaf_values", _float_array(owner, "leaf_values", self.leaf_values, 2))
        _set(self, "base_score", _float_array(owner, "base_score", self.base_score, 1))
        self._check_shapes()
        _set(self, "depths", _readonly(self._check_structure()))

    def device_thresholds(self) -> np.ndarray:
        """float32 thresholds a device compares float32 inputs with (exact, see round_threshold)."""
        if self.threshold.dtype == np.float32:
            return self.threshold
        return round_threshold(self.threshold, self.comparison)

    # ---- validation
    def _check_shapes(self) -> None:
        owner = "TreeEnsemble"
        n = self.n_nodes
        for name in ("threshold", "left", "right", "missing_left"):
            if getattr(self, name).shape[0] != n:
                raise _fail(
                    owner, f"{name} has {getattr(self, name).shape[0]} entries for {n} nodes"
                )
        if self.n_trees == 0:
            raise _fail(owner, "an ensemble needs at least one tree")
        if self.tree_offset.shape[0] != self.n_trees:
            raise _fail(
                owner,
                f"tree_offset has {self.tree_offset.shape[0]} entries for {self.n_trees} trees",
            )
        if self.n_leaves == 0 or self.leaf_width == 0:
            raise _fail(owner, f"leaf_values must be non-empty, got shape {self.leaf_values.shape}")
        if self.base_score.shape[0] != self.n_outputs:
            raise _fail(
                owner,
                f"base_score has {self.base_score.shape[0]} values for {self.n_outputs} outputs",
            )
        if self.leaf_values.dtype != self.base_score.dtype:
            raise _fail(owner, "leaf_values and base_score must share one precision")
        # int64: tree_offset + leaf_width would wrap around in int32.
        end = self.tree_offset.astype(np.int64) + self.leaf_width
        bad = (self.tree_offset < 0) | (end > self.n_outputs)
        if np.any(bad):
            t = int(np.flatnonzero(bad)[0])
            first = int(self.tree_offset[t])
            raise _fail(
                owner,
                f"tree {t} writes outputs {first}..{first + self.leaf_width - 1}"
                f" but the ensemble has {self.n_outputs} outputs",
            )
        bad_f = (self.feature < 0) | (self.feature >= self.n_features)
        if np.any(bad_f):
            i = int(np.flatnonzero(bad_f)[0])
            raise _fail(owner, f"node {i} splits on feature {self.feature[i]} of {self.n_features}")
        if self.threshold.dtype == np.float32 and self.input_precision is not Precision.FLOAT32:
            raise _fail(
                owner, "float32 thresholds are exact only when inputs are rounded to float32"
            )

    def _check_structure(self) -> np.ndarray:
        """Check that nodes form a forest hanging from ``roots``; return each tree's depth."""
        owner = "TreeEnsemble"
        n, n_leaves = self.n_nodes, self.n_leaves
        refs = np.concatenate([self.roots, self.left, self.right])
        if np.any(refs >= n):
            bad = int(refs[refs >= n][0])
            raise _fail(owner, f"a child reference points to node {bad}, but there are {n} nodes")
        leaf_refs = ~refs[refs < 0]
        if np.any(leaf_refs >= n_leaves):
            worst = int(leaf_refs.max())
            raise _fail(owner, f"a child reference points to leaf {worst} of {n_leaves}")
        if np.unique(leaf_refs).size != n_leaves:
            raise _fail(owner, "some rows of leaf_values are never reached (compact the leaves)")
        # Every node has exactly one parent (or is a root) ...
        parents = np.bincount(refs[refs >= 0], minlength=n)
        if np.any(parents != 1):
            i = int(np.flatnonzero(parents != 1)[0])
            raise _fail(owner, f"node {i} has {parents[i]} parents; each node needs exactly one")
        # ... and every node is reachable from a root, level by level. With one parent
        # each, a cycle could never be reached, so this also rules out cycles.
        depths = np.zeros(self.n_trees, dtype=np.int64)
        tree_of = np.flatnonzero(self.roots >= 0)
        frontier = self.roots[tree_of]
        seen = 0
        level = 0
        while frontier.size:
            seen += frontier.size
            level += 1
            depths[tree_of] = level
            kids = np.concatenate([self.left[frontier], self.right[frontier]])
            owners = np.concatenate([tree_of, tree_of])
            keep = kids >= 0
            frontier, tree_of = kids[keep], owners[keep]
            if seen > n:  # defensive: cannot happen once parents are unique
                break
        if seen != n:
            raise _fail(owner, f"{n - seen} node(s) are unreachable from the roots (a cycle?)")
        return depths


_BIN_INDEX_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32))


@dataclass(frozen=True, eq=False)
class QuantizedTrees(_Forest):
    """A tree ensemble over binned inputs with integer leaves (what a device without an FPU
    evaluates).

    Feature ``f`` has a sorted grid ``bin_edges[bin_start[f]:bin_start[f + 1]]`` (float32,
    strictly increasing). A row's value ``x`` (rounded to float32) becomes its bin
    ``b = #{edges < x}`` for ``<=`` comparisons (``#{edges <= x}`` for ``<``), once per row;
    split ``i`` then sends the row left when ``b <= threshold[i]``, which holds exactly when
    ``x <= edge`` (``x < edge``) for the split's edge ``bin_edges[bin_start[f] +
    threshold[i]]``. NaN follows ``missing_left`` as in :class:`TreeEnsemble`, whose
    layout (``feature``, ``left``, ``right``, ``roots``, ``tree_offset``) this shares.

    ``leaf_values`` are int8/int16 with ``leaf_scale`` (one float32, or one per output when
    every leaf holds all outputs); the trees' leaves are summed in integers and rescaled
    once: ``sum``: ``float32(total) * leaf_scale + base_score``; ``mean``:
    ``float32(total) * leaf_scale / n_trees + base_score`` (float32 arithmetic in that
    order, in both runtime modes: the model is defined by it).
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    leaf_values: np.ndarray
    leaf_scale: np.ndarray
    roots: np.ndarray
    tree_offset: np.ndarray
    n_features: int
    n_outputs: int
    base_score: np.ndarray
    bin_edges: np.ndarray
    bin_start: np.ndarray
    comparison: Comparison = Comparison.LE
    aggregation: Aggregation = Aggregation.SUM
    depths: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        owner = "QuantizedTrees"
        q = np.asarray(self.leaf_values)
        if q.dtype not in _INT_WEIGHT_DTYPES or q.ndim != 2:
            raise _fail(owner, f"leaf_values must be 2-D int8 or int16, got {q.dtype} {q.shape}")
        thr = np.asarray(self.threshold)
        if thr.dtype not in _BIN_INDEX_DTYPES or thr.ndim != 1:
            raise _fail(
                owner,
                f"threshold (bin indices) must be 1-D uint8, uint16 or int32, "
                f"got {thr.dtype} {thr.shape}",
            )
        edges = np.asarray(self.bin_edges)
        if edges.dtype != np.float32 or edges.ndim != 1 or not np.all(np.isfinite(edges)):
            raise _fail(owner, "bin_edges must be a 1-D array of finite float32 values")
        start = _index_array(owner, "bin_start", self.bin_start)
        n_features = _positive_int(owner, "n_features", self.n_features)
        if (
            start.shape[0] != n_features + 1
            or start[0] != 0
            or start[-1] != edges.shape[0]
            or np.any(np.diff(start) < 0)
        ):
            raise _fail(
                owner,
                f"bin_start must rise from 0 to {edges.shape[0]} in {n_features + 1} entries",
            )
        for f in range(n_features):
            if np.any(np.diff(edges[start[f] : start[f + 1]]) <= 0):
                raise _fail(owner, f"the bin edges of feature {f} must strictly increase")
        scale = np.asarray(self.leaf_scale)
        n_outputs = _positive_int(owner, "n_outputs", self.n_outputs)
        allowed = {(1,), (n_outputs,)} if q.shape[1] == n_outputs else {(1,)}
        if scale.dtype != np.float32 or scale.shape not in allowed:
            raise _fail(
                owner,
                "leaf_scale must be float32 of length 1, or one per output when every leaf "
                f"holds all {n_outputs} outputs",
            )
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise _fail(owner, "leaf_scale must be finite and positive")
        base = np.asarray(self.base_score)
        if base.dtype != np.float32:
            raise _fail(owner, f"base_score must be float32, got {base.dtype}")
        for name, arr in (
            ("leaf_values", q),
            ("threshold", thr),
            ("bin_edges", edges),
            ("bin_start", start),
            ("leaf_scale", scale),
        ):
            _set(self, name, _readonly(arr))
        # Everything else (layout, references, offsets, features, structure) is a
        # TreeEnsemble's: check it on the float twin, whose thresholds are the edges.
        if thr.size:
            feat = np.asarray(self.feature)
            if feat.shape != thr.shape or feat.dtype != _INDEX_DTYPE:
                raise _fail(owner, "feature must be int32 with one entry per threshold")
            if np.any((feat < 0) | (feat >= n_features)):
                raise _fail(owner, f"a split uses a feature outside 0..{n_features - 1}")
            sizes = np.diff(start)[feat]
            if np.any(thr.astype(np.int64) >= sizes):
                i = int(np.flatnonzero(thr.astype(np.int64) >= sizes)[0])
                raise _fail(owner, f"split {i} names bin edge {thr[i]} of {sizes[i]}")
        try:
            twin = self.as_float()
        except InvalidModelError as exc:
            raise _fail(owner, str(exc).removeprefix("TreeEnsemble: ")) from None
        for name in (
            "feature",
            "left",
            "right",
            "missing_left",
            "roots",
            "tree_offset",
            "base_score",
            "comparison",
            "aggregation",
            "depths",
        ):
            _set(self, name, getattr(twin, name))
        _set(self, "n_features", n_features)
        _set(self, "n_outputs", n_outputs)

    def edge_of(self) -> np.ndarray:
        """The float32 edge each split compares with."""
        if not self.threshold.size:
            return np.zeros(0, dtype=np.float32)
        idx = np.asarray(self.bin_start)[np.asarray(self.feature)] + self.threshold
        return self.bin_edges[idx.astype(np.int64)]

    def as_float(self) -> TreeEnsemble:
        """The same trees as a float :class:`TreeEnsemble` (edges as thresholds, leaves
        times their scale): the same branches; sums rounded differently."""
        leaves = self.leaf_values.astype(np.float32) * self.leaf_scale
        return TreeEnsemble(
            feature=self.feature,
            threshold=self.edge_of(),
            left=self.left,
            right=self.right,
            missing_left=self.missing_left,
            leaf_values=leaves,
            roots=self.roots,
            tree_offset=self.tree_offset,
            n_features=self.n_features,
            n_outputs=self.n_outputs,
            base_score=self.base_score,
            comparison=self.comparison,
            aggregation=self.aggregation,
            input_precision=Precision.FLOAT32,
        )


Step = Impute | Affine | Linear | Dense | QuantizedDense | TreeEnsemble | QuantizedTrees
_STEP_TYPES = (Impute, Affine, Linear, Dense, QuantizedDense, TreeEnsemble, QuantizedTrees)


# --------------------------------------------------------------------------- model
@dataclass(frozen=True, eq=False)
class Model:
    """A fitted model: a chain of steps, then a link, with what a caller needs to know.

    ``classes`` are the labels in output order (classification only); ``metadata``
    is JSON-compatible provenance (source library, version, estimator).
    """

    steps: tuple[Step, ...]
    task: Task
    n_features: int
    link: Link = Link.IDENTITY
    classes: np.ndarray | None = None
    predict_from: PredictFrom = PredictFrom.SCORES
    feature_names: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "Model"
        steps = tuple(self.steps)
        if not steps:
            raise _fail(owner, "a model needs at least one step")
        for i, step in enumerate(steps):
            if not isinstance(step, _STEP_TYPES):
                raise _fail(owner, f"step {i} is a {type(step).__name__}, not an IR step")
        _set(self, "steps", steps)
        _set(self, "task", _enum(owner, "task", Task, self.task))
        _set(self, "link", _enum(owner, "link", Link, self.link))
        _set(self, "predict_from", _enum(owner, "predict_from", PredictFrom, self.predict_from))
        _set(self, "n_features", _positive_int(owner, "n_features", self.n_features))
        width = self.n_features
        for i, step in enumerate(steps):
            if step.n_inputs != width:
                raise _fail(
                    owner,
                    f"step {i} ({type(step).__name__}) takes {step.n_inputs} inputs "
                    f"but receives {width}",
                )
            width = step.n_outputs
        self._check_task()
        self._check_feature_names()
        try:
            text = json.dumps(dict(self.metadata), sort_keys=True, allow_nan=False)
        except RecursionError:
            raise _fail(owner, "metadata nests too deeply") from None
        except (TypeError, ValueError) as exc:
            raise _fail(owner, f"metadata must be JSON-compatible: {exc}") from None
        _set(self, "metadata", json.loads(text))

    @property
    def n_outputs(self) -> int:
        """Width of the raw scores (the last step's outputs)."""
        return self.steps[-1].n_outputs

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else int(self.classes.shape[0])

    def _check_task(self) -> None:
        owner = "Model"
        k = self.n_outputs
        if self.task is Task.REGRESSION:
            if self.classes is not None:
                raise _fail(owner, "a regression model has no classes")
            if self.link not in (Link.IDENTITY, Link.EXP) or (
                self.predict_from is not PredictFrom.SCORES
            ):
                raise _fail(
                    owner, "a regression model uses the identity or exp link and predicts scores"
                )
            return
        if self.classes is None:
            raise _fail(owner, "a classification model needs classes")
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or classes.shape[0] < 2:
            raise _fail(
                owner, f"classes must be 1-D with at least 2 labels, got shape {classes.shape}"
            )
        if classes.dtype.kind not in "biuUf":
            raise _fail(
                owner, f"classes must be bool, integers, floats or strings, got {classes.dtype}"
            )
        if np.unique(classes).shape[0] != classes.shape[0]:
            raise _fail(owner, "classes must be distinct")
        if classes.dtype.kind == "f" and not np.all(np.isfinite(classes)):
            raise _fail(owner, "classes must be finite")
        _set(self, "classes", _readonly(_normalise_classes(classes)))
        n = classes.shape[0]
        if not (k == n or (k == 1 and n == 2)):
            raise _fail(owner, f"{n} classes need {n} outputs (or 1 for binary), got {k}")
        one = k == 1
        rules = {
            Link.IDENTITY: not one,
            Link.LOGISTIC: one,
            Link.SOFTMAX: not one,
            Link.LOGISTIC_OVR: not one,
            Link.MODIFIED_HUBER: True,
            Link.NONE: True,
            Link.EXP: False,
        }
        if not rules[self.link]:
            raise _fail(
                owner, f"link {self.link.value!r} does not fit {k} output(s) for {n} classes"
            )
        if self.link is Link.NONE and self.predict_from is PredictFrom.PROBABILITIES:
            raise _fail(owner, "a model without probabilities cannot predict from them")

    def _check_feature_names(self) -> None:
        names = self.feature_names
        if names is None:
            return
        names = tuple(names)
        if len(names) != self.n_features:
            raise _fail("Model", f"{len(names)} feature names for {self.n_features} features")
        if not all(isinstance(x, str) for x in names) or len(set(names)) != len(names):
            raise _fail("Model", "feature names must be distinct strings")
        _set(self, "feature_names", names)


def validate(model: Model) -> Model:
    """Re-run every structural check on ``model`` and its steps; return it unchanged.

    Construction already validates, so this matters for code that assembles
    models some other way (``object.__new__``, unpickling) or wants a checkpoint
    after a transformation. Raises :class:`~fedge.errors.InvalidModelError`.
    """
    if not isinstance(model, Model):
        raise InvalidModelError(f"expected a fedge IR Model, got {type(model).__name__}")
    steps = tuple(dataclasses.replace(step) for step in model.steps)
    dataclasses.replace(model, steps=steps)
    return model


def _normalise_classes(classes: np.ndarray) -> np.ndarray:
    """One dtype per kind (int64, float64, bool, narrowest str), so equal labels give equal
    models whatever width the source library used, and files round-trip bit for bit."""
    kind = classes.dtype.kind
    if kind in "iu":
        if classes.size and int(classes.max()) > np.iinfo(np.int64).max:
            raise _fail("Model", "integer classes above 2**63 - 1 are not supported")
        return classes.astype(np.int64)
    if kind == "f":
        return classes.astype(np.float64)
    if kind == "U":
        return np.array(classes.tolist(), dtype=str)
    return classes


def accepts_missing(model: Model) -> bool:
    """Whether the model has a rule for NaN inputs (an imputer or trees come first)."""
    for step in model.steps:
        if isinstance(step, Affine):
            continue  # NaN passes through unchanged
        return isinstance(step, Impute | TreeEnsemble | QuantizedTrees)
    return False


def step_arrays(step: Step) -> dict[str, np.ndarray]:
    """The arrays of a step by field name (for sizes, hashing and serialisation)."""
    return {k: v for k, v in vars(step).items() if isinstance(v, np.ndarray) and k != "depths"}


def nbytes(model: Model) -> int:
    """Bytes held by the model's arrays at their stored precision."""
    total = sum(a.nbytes for s in model.steps for a in step_arrays(s).values())
    if model.classes is not None and model.classes.dtype.kind != "U":
        total += model.classes.nbytes
    return int(total)


def models_equal(a: Model, b: Model) -> bool:
    """Bit-for-bit equality of two models: same steps, arrays (values and dtypes) and fields."""
    if type(a) is not type(b) or len(a.steps) != len(b.steps):
        return False
    scalars = ("task", "link", "predict_from", "n_features", "feature_names", "metadata")
    if any(getattr(a, k) != getattr(b, k) for k in scalars):
        return False
    if (a.classes is None) != (b.classes is None):
        return False
    if a.classes is not None and not _same_array(a.classes, b.classes):
        return False
    for sa, sb in zip(a.steps, b.steps, strict=True):
        if type(sa) is not type(sb):
            return False
        for name, value in vars(sa).items():
            other = getattr(sb, name)
            if isinstance(value, np.ndarray):
                if not _same_array(value, other):
                    return False
            elif value != other:
                return False
    return True


def _same_array(x: np.ndarray, y: Any) -> bool:
    return (
        isinstance(y, np.ndarray)
        and x.dtype == y.dtype
        and x.shape == y.shape
        and x.tobytes() == y.tobytes()
    )


def round_threshold(threshold: np.ndarray, comparison: Comparison) -> np.ndarray:
    """float32 thresholds that send every float32 input the same way as float64 ``threshold``.

    For ``x <= t``: the largest float32 not above ``t``. For ``x < t``: the smallest
    float32 not below ``t``. (Values outside the float32 range become +-inf, still exact.)
    """
    t64 = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):
        t32 = t64.astype(np.float32)
    back = t32.astype(np.float64)
    if comparison is Comparison.LE:
        fix = back > t64
        t32[fix] = np.nextafter(t32[fix], np.float32(-math.inf))
    else:
        fix = back < t64
        t32[fix] = np.nextafter(t32[fix], np.float32(math.inf))
    return t32
