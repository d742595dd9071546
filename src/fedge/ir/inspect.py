"""Human-readable facts about an IR model (used by ``fedge inspect``)."""

from __future__ import annotations

from typing import Any

from fedge.ir.lite import to_binary_bytes
from fedge.ir.nodes import (
    Affine,
    Dense,
    Impute,
    Linear,
    Model,
    QuantizedDense,
    QuantizedTrees,
    Step,
    TreeEnsemble,
    nbytes,
)

__all__ = ["describe"]


def describe(model: Model) -> dict[str, Any]:
    """A summary of the model and one entry per step, as plain JSON-compatible values."""
    source = model.metadata.get("source", {})
    summary: dict[str, Any] = {
        "source": f"{source.get('estimator', '?')} ({source.get('library', '?')} "
        f"{source.get('version', '?')})",
        "objective": source.get("objective", "-"),
        "task": model.task.value,
        "features": model.n_features,
        "outputs": model.n_outputs,
        "link": model.link.value,
        "decision": model.predict_from.value,
    }
    if model.classes is not None:
        labels = [str(c) for c in model.classes.tolist()]
        shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
        summary["classes"] = f"{len(labels)}: {shown}"
    if model.feature_names is not None:
        summary["feature names"] = ", ".join(model.feature_names[:5]) + (
            " ..." if model.n_features > 5 else ""
        )
    summary["parameters"] = f"{sum(_parameters(s) for s in model.steps):,}"
    summary["size in IR"] = f"{nbytes(model):,} bytes"
    summary["size as .fedge"] = f"{len(to_binary_bytes(model)):,} bytes"
    return {"summary": summary, "steps": [_step(s) for s in model.steps]}


def _short(values: Any, limit: int = 4) -> str:
    shown = ", ".join(f"{v:.6g}" for v in list(values)[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _parameters(step: Step) -> int:
    if isinstance(step, Linear | Dense | QuantizedDense):
        return int(step.weights.size + step.bias.size)
    if isinstance(step, TreeEnsemble | QuantizedTrees):
        return int(step.n_nodes * 2 + step.leaf_values.size)
    return int(step.n_inputs)


def _step(step: Step) -> dict[str, Any]:
    if isinstance(step, TreeEnsemble):
        return {
            "type": "trees",
            "trees": step.n_trees,
            "splits": step.n_nodes,
            "leaves": step.n_leaves,
            "max depth": step.max_depth,
            "aggregation": step.aggregation.value,
            "comparison": step.comparison.value,
            "thresholds": step.threshold.dtype.name,
            "base score": _short(step.base_score),
        }
    if isinstance(step, QuantizedTrees):
        return {
            "type": "quantized trees",
            "trees": step.n_trees,
            "splits": step.n_nodes,
            "leaves": f"{step.n_leaves} ({step.leaf_values.dtype.name})",
            "max depth": step.max_depth,
            "aggregation": step.aggregation.value,
            "threshold grid": f"{step.bin_edges.size} edges, {step.threshold.dtype.name} indices",
        }
    if isinstance(step, QuantizedDense):
        return {
            "type": "quantized dense",
            "shape": f"{step.n_inputs}x{step.n_outputs}",
            "params": _parameters(step),
            "precision": step.weights.dtype.name
            + (" per channel" if step.per_channel else " per tensor")
            + (", dynamic int8 inputs" if step.input_bits else ""),
            "activation": step.activation.value,
        }
    if isinstance(step, Dense | Linear):
        out = {
            "type": "dense" if isinstance(step, Dense) else "linear",
            "shape": f"{step.n_inputs}x{step.n_outputs}",
            "params": _parameters(step),
            "precision": step.weights.dtype.name,
        }
        if isinstance(step, Dense):
            out["activation"] = step.activation.value
        return out
    if isinstance(step, Affine):
        return {"type": "affine", "features": step.n_inputs, "order": step.order.value}
    if isinstance(step, Impute):
        return {"type": "impute", "features": step.n_inputs}
    raise TypeError(type(step).__name__)  # unreachable: Model validates step types
