"""Quantization as an IR pass: integer or float16 weights, with their measured cost.

``ModelQuantizer(strategy).quantize_model(model)`` takes a fitted estimator or an IR
model and returns an IR model whose tensors say what they store:

- ``INT8`` / ``INT16``: linear layers and MLP layers become :class:`QuantizedDense` with
  integer weights, per output channel (default) or per tensor, symmetric (zero point 0,
  default) or affine (a zero point per channel, using the full integer range).
- ``DYNAMIC``: int8 weights, and each input row quantized to int8 at run time, so the
  products are summed exactly in integers (``input_bits=8``).
- ``FLOAT16``: weights, biases and tree leaf values stored as float16; tree thresholds
  are left exact (rounding them moves rows between leaves).

Tree ensembles under ``INT8`` / ``INT16`` become :class:`QuantizedTrees`: each feature's
thresholds live on a grid of at most 256 (65,536) float32 edges, so a split stores a
one-byte (two-byte) edge index and a device bins each input once and compares integers.
When a feature has no more distinct thresholds than that, the grid is exactly its
thresholds and no row changes branch (histogram GBDTs such as XGBoost ``hist`` and
LightGBM use at most 256 bins); otherwise the grid keeps evenly spaced quantiles of the
thresholds, weighted by use, and each threshold moves to its nearest edge. Leaves become
int8 (int16) with one scale per output, summed in integers.

Pipeline steps before the weights (scalers, imputers) are kept as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from fedge.compression.accounting import evaluate, model_size
from fedge.errors import InvalidInputError, InvalidModelError, UnsupportedModelError
from fedge.ir import Dense, Linear, Model, QuantizedDense, QuantizedTrees, TreeEnsemble, lower
from fedge.ir.nodes import Activation, Comparison, Step, validate

__all__ = [
    "ModelQuantizer",
    "QuantizationReport",
    "QuantizationStrategy",
    "quantize_trees",
    "quantize_weights",
]


class QuantizationStrategy(StrEnum):
    """What :class:`ModelQuantizer` stores."""

    INT8 = "int8"
    INT16 = "int16"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"


_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class QuantizationReport:
    """What one quantization pass did.

    ``steps`` names each step and what it became; ``max_weight_error`` is the largest
    absolute difference between a source weight and the weight the device multiplies by.
    """

    strategy: QuantizationStrategy
    per_channel: bool
    symmetric: bool
    steps: list[str] = field(default_factory=list)
    max_weight_error: float = 0.0
    thresholds_moved: int = 0  # tree thresholds that had to move to a coarser grid


def quantize_weights(
    weights: np.ndarray, bits: int, *, per_channel: bool = True, symmetric: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer weights, float32 scale and int32 zero point of a ``(n_in, n_out)`` matrix.

    Symmetric: ``scale = max|w| / (2**(bits-1) - 1)``, zero point 0, values in
    ``[-qmax, qmax]``. Affine: ``scale = (max - min) / (2**bits - 1)`` over a range that
    includes 0, zero point chosen so that 0.0 is exactly representable. The statistic is
    taken per output column (``per_channel``) or over the whole matrix. A column of zeros
    gets scale 1.
    """
    if bits not in (8, 16):
        raise InvalidInputError(f"bits must be 8 or 16, got {bits}")
    w = np.asarray(weights, dtype=np.float64)
    axis = 0 if per_channel else None
    dtype = np.int8 if bits == 8 else np.int16
    info = np.iinfo(dtype)
    if symmetric:
        qmax = info.max  # symmetric range [-qmax, qmax]: -128 is never used
        span = np.max(np.abs(w), axis=axis, keepdims=True).reshape(-1)
        scale = (span / qmax).astype(np.float32)
        scale[scale == 0] = 1
        zero = np.zeros(scale.shape, dtype=np.int32)
        low, high = -qmax, qmax
    else:
        lo = np.minimum(np.min(w, axis=axis, keepdims=True).reshape(-1), 0.0)
        hi = np.maximum(np.max(w, axis=axis, keepdims=True).reshape(-1), 0.0)
        scale = ((hi - lo) / (info.max - info.min)).astype(np.float32)
        scale[scale == 0] = 1
        zero = np.clip(np.rint(info.min - lo / scale.astype(np.float64)), info.min, info.max)
        zero = zero.astype(np.int32)
        low, high = info.min, info.max
    q = np.rint(w / scale.astype(np.float64)) + zero
    return np.clip(q, low, high).astype(dtype), scale, zero


def _grid(values: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    """At most ``size`` edges among sorted distinct ``values``: all of them when they fit,
    else evenly spaced quantiles of the values weighted by ``counts`` (always both ends)."""
    if values.size <= size:
        return values
    cum = np.cumsum(counts) / counts.sum()
    targets = np.linspace(0.0, 1.0, size)
    picks = np.unique(np.clip(np.searchsorted(cum, targets), 0, values.size - 1))
    picks = np.unique(np.concatenate([[0], picks, [values.size - 1]]))
    return values[picks[:size]]


def _finite_thresholds(step: TreeEnsemble) -> tuple[np.ndarray, int]:
    """float32 device thresholds with infinities replaced by the float32 limits, and how
    many of those replacements change a branch for some accepted input. Inputs are finite
    float32 values, so ``x <= +inf`` is ``x <= FLT_MAX`` and ``x < -inf`` is
    ``x < -FLT_MAX`` exactly; the other two cases differ at one value."""
    thr = step.device_thresholds().astype(np.float32)
    big = np.finfo(np.float32).max
    inexact = np.isneginf(thr) if step.comparison is Comparison.LE else np.isposinf(thr)
    out = np.where(np.isposinf(thr), big, np.where(np.isneginf(thr), -big, thr))
    return out.astype(np.float32), int(np.count_nonzero(inexact))


def quantize_trees(step: TreeEnsemble, bits: int) -> tuple[QuantizedTrees, int]:
    """The :class:`QuantizedTrees` of ``step`` with ``bits``-bit edge indices and leaves,
    and how many thresholds moved (0: every row takes the branch it took before)."""
    if bits not in (8, 16):
        raise InvalidInputError(f"bits must be 8 or 16, got {bits}")
    thr, moved = _finite_thresholds(step)
    size = 1 << bits
    starts, edges, index = [0], [], np.zeros(step.n_nodes, dtype=np.int64)
    for f in range(step.n_features):
        mine = np.flatnonzero(step.feature == f)
        if mine.size == 0:
            starts.append(starts[-1])
            continue
        values, counts = np.unique(thr[mine], return_counts=True)
        grid = _grid(values, counts, size).astype(np.float32)
        # Nearest edge by value (the exact one when the grid holds every threshold).
        pos = np.clip(np.searchsorted(grid, thr[mine]), 1, max(grid.size - 1, 1))
        if grid.size == 1:
            nearest = np.zeros(mine.size, dtype=np.int64)
        else:
            below, above = grid[pos - 1], grid[pos]
            nearest = np.where(np.abs(thr[mine] - below) <= np.abs(above - thr[mine]), pos - 1, pos)
        moved += int(np.count_nonzero(grid[nearest] != thr[mine]))
        index[mine] = nearest
        edges.append(grid)
        starts.append(starts[-1] + grid.size)
    qmax = (1 << (bits - 1)) - 1
    leaves = step.leaf_values.astype(np.float64)
    per_output = step.leaf_width == step.n_outputs
    span = np.max(np.abs(leaves), axis=0) if per_output else np.array([np.abs(leaves).max()])
    scale = (span / qmax).astype(np.float32)
    scale[scale == 0] = 1
    q = np.clip(np.rint(leaves / scale.astype(np.float64)), -qmax, qmax)
    new = QuantizedTrees(
        feature=step.feature,
        threshold=index.astype(np.uint8 if bits == 8 else np.uint16),
        left=step.left,
        right=step.right,
        missing_left=step.missing_left,
        leaf_values=q.astype(np.int8 if bits == 8 else np.int16),
        leaf_scale=scale,
        roots=step.roots,
        tree_offset=step.tree_offset,
        n_features=step.n_features,
        n_outputs=step.n_outputs,
        base_score=step.base_score.astype(np.float32),
        bin_edges=np.concatenate(edges) if edges else np.zeros(0, np.float32),
        bin_start=np.array(starts, dtype=np.int32),
        comparison=step.comparison,
        aggregation=step.aggregation,
    )
    return new, moved


class ModelQuantizer:
    """Quantize a model's weights (the seed's API).

    Parameters
    ----------
    strategy : QuantizationStrategy or str
        ``int8``, ``int16``, ``float16`` or ``dynamic``.
    per_channel : bool
        One scale per output column (default) rather than one per weight matrix.
    symmetric : bool
        Zero points 0 (default) or affine zero points.

    Examples
    --------
    >>> q = ModelQuantizer(QuantizationStrategy.INT8)             # doctest: +SKIP
    >>> small = q.quantize_model(fitted_mlp)                       # doctest: +SKIP
    >>> q.get_model_size(small)["compression_ratio"]               # doctest: +SKIP
    """

    def __init__(
        self,
        strategy: QuantizationStrategy | str = QuantizationStrategy.INT8,
        *,
        per_channel: bool = True,
        symmetric: bool = True,
    ) -> None:
        try:
            self.strategy = QuantizationStrategy(strategy)
        except ValueError:
            options = ", ".join(s.value for s in QuantizationStrategy)
            raise InvalidInputError(
                f"unknown quantization strategy {strategy!r}; use one of {options}"
            ) from None
        self.per_channel = bool(per_channel)
        self.symmetric = bool(symmetric)
        self.report_: QuantizationReport | None = None
        self._source: Any = None

    def quantize_model(self, model: Any) -> Model:
        """Return the quantized IR model of ``model`` (an estimator or an IR model).

        The report of the pass is left in ``self.report_``.

        Raises
        ------
        UnsupportedModelError
            If the strategy has no rule for one of the model's steps (integer trees).
        InvalidModelError
            If a float16 weight would overflow (``|w| > 65504``).
        """
        self._source = model
        ir = lower(model)
        report = QuantizationReport(self.strategy, self.per_channel, self.symmetric)
        steps = tuple(self._step(i, s, report) for i, s in enumerate(ir.steps))
        self.report_ = report
        return validate(dataclasses.replace(ir, steps=steps, metadata=self._metadata(ir)))

    def get_model_size(self, model: Any = None) -> dict[str, float]:
        """Sizes in bytes: the source's pickle, its lossless lite file, and ``model``'s lite
        file (default: the source, losslessly), with ``compression_ratio``."""
        if self._source is None:
            if model is None:
                raise InvalidInputError("quantize a model first, or pass the model to measure")
            return model_size(model)
        return model_size(self._source, model)

    def evaluate(self, model: Any, X: Any, y: Any) -> dict[str, float]:
        """Task metrics of ``model`` on ``(X, y)`` (see :func:`fedge.compression.evaluate`)."""
        return evaluate(model, X, y)

    # ----------------------------------------------------------------- steps
    def _metadata(self, ir: Model) -> dict[str, Any]:
        meta = dict(ir.metadata)
        passes = list(meta.get("compression", []))
        passes.append(
            {
                "pass": "quantization",
                "strategy": self.strategy.value,
                "per_channel": self.per_channel,
                "symmetric": self.symmetric,
            }
        )
        meta["compression"] = passes
        return meta

    def _step(self, i: int, step: Step, report: QuantizationReport) -> Step:
        name = f"step {i} ({type(step).__name__})"
        if isinstance(step, Linear | Dense):
            new = self._weights(step)
            err = float(np.max(np.abs(_device_weights(new) - step.weights.astype(np.float64))))
            report.max_weight_error = max(report.max_weight_error, err)
            report.steps.append(f"{name} -> {type(new).__name__} {_describe(new)}")
            return new
        if isinstance(step, TreeEnsemble):
            if self.strategy is QuantizationStrategy.DYNAMIC:
                raise UnsupportedModelError(
                    "dynamic quantization is for linear layers; quantize tree ensembles with "
                    "'int8', 'int16' or 'float16'"
                )
            if self.strategy is not QuantizationStrategy.FLOAT16:
                bits = 16 if self.strategy is QuantizationStrategy.INT16 else 8
                new, snapped = quantize_trees(step, bits)
                report.thresholds_moved += snapped
                report.steps.append(
                    f"{name} -> QuantizedTrees ({bits}-bit edges and leaves, "
                    f"{snapped} of {step.n_nodes} thresholds moved to the grid)"
                )
                return new
            leaves = _to_float16(step.leaf_values, name, "leaf values")
            base = _to_float16(step.base_score, name, "base score")
            report.steps.append(f"{name} -> float16 leaves")
            return dataclasses.replace(step, leaf_values=leaves, base_score=base)
        if isinstance(step, QuantizedDense | QuantizedTrees):
            raise UnsupportedModelError(f"{name} is already quantized")
        report.steps.append(f"{name} kept")
        return step

    def _weights(self, step: Linear | Dense) -> Step:
        activation = step.activation if isinstance(step, Dense) else Activation.IDENTITY
        if self.strategy is QuantizationStrategy.FLOAT16:
            return dataclasses.replace(
                step,
                weights=_to_float16(step.weights, type(step).__name__, "weights"),
                bias=_to_float16(step.bias, type(step).__name__, "bias"),
            )
        bits = 16 if self.strategy is QuantizationStrategy.INT16 else 8
        q, scale, zero = quantize_weights(
            step.weights, bits, per_channel=self.per_channel, symmetric=self.symmetric
        )
        return QuantizedDense(
            weights=q,
            scale=scale,
            zero_point=zero,
            bias=step.bias.astype(np.float32),
            activation=activation,
            input_bits=8 if self.strategy is QuantizationStrategy.DYNAMIC else 0,
        )


def _to_float16(values: np.ndarray, owner: str, what: str) -> np.ndarray:
    worst = float(np.max(np.abs(values))) if values.size else 0.0
    if worst > _FLOAT16_MAX:
        raise InvalidModelError(
            f"{owner}: {what} reach {worst:.6g}, beyond float16's largest value "
            f"{_FLOAT16_MAX:g}; use int8/int16 quantization (it scales) instead"
        )
    return values.astype(np.float16)


def _device_weights(step: Step) -> np.ndarray:
    if isinstance(step, QuantizedDense):
        return step.dequantized().astype(np.float64)
    return step.weights.astype(np.float64)  # type: ignore[union-attr]


def _describe(step: Step) -> str:
    if isinstance(step, QuantizedDense):
        kind = "per-channel" if step.scale.shape[0] > 1 else "per-tensor"
        dyn = ", dynamic int8 inputs" if step.input_bits else ""
        return f"{step.weights.dtype} {kind}{dyn}"
    return str(step.weights.dtype)  # type: ignore[union-attr]
