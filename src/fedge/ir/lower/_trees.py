"""Shared tree plumbing for frontends: node tables in, one validated TreeEnsemble out.

Every library stores a tree as a table of nodes where leaves and splits share
one numbering. :func:`from_node_table` renumbers such a table into the IR's
split nodes plus leaf rows (child ``r < 0`` is leaf ``~r``); :func:`assemble`
concatenates trees, rounds thresholds when the library compares float32
inputs, and builds the :class:`~fedge.ir.TreeEnsemble`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedge._version import __version__
from fedge.ir.nodes import (
    Aggregation,
    Comparison,
    Link,
    Model,
    Precision,
    PredictFrom,
    Task,
    TreeEnsemble,
    round_threshold,
)

__all__ = ["Tree", "assemble", "booster_model", "from_node_table"]


@dataclass(frozen=True)
class Tree:
    """One tree in IR numbering, local to the tree (``assemble`` shifts it)."""

    feature: np.ndarray  # (n_splits,)
    threshold: np.ndarray  # (n_splits,) float64
    left: np.ndarray  # (n_splits,) local refs: >= 0 split, < 0 leaf ~r
    right: np.ndarray
    missing_left: np.ndarray  # (n_splits,) bool
    leaf_values: np.ndarray  # (n_leaves, width) float64
    root: int


def from_node_table(
    *,
    is_leaf: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    values: np.ndarray,
    root: int = 0,
) -> Tree:
    """Renumber a node table (children are row indices of the same table) into a :class:`Tree`.

    ``values`` holds one row (or scalar) per node; only leaf rows are kept.
    """
    is_leaf = np.asarray(is_leaf, dtype=bool)
    ref = np.empty(is_leaf.shape[0], dtype=np.int64)
    split = ~is_leaf
    ref[split] = np.arange(int(split.sum()))
    ref[is_leaf] = ~np.arange(int(is_leaf.sum()))
    leaves = np.asarray(values, dtype=np.float64)[is_leaf]
    return Tree(
        feature=np.asarray(feature)[split].astype(np.int64),
        threshold=np.asarray(threshold, dtype=np.float64)[split],
        left=ref[np.asarray(left)[split].astype(np.int64)],
        right=ref[np.asarray(right)[split].astype(np.int64)],
        missing_left=np.asarray(missing_left, dtype=bool)[split],
        leaf_values=leaves.reshape(leaves.shape[0], -1),
        root=int(ref[root]),
    )


def _shift(refs: np.ndarray, nodes: int, leaves: int) -> np.ndarray:
    return np.where(refs >= 0, refs + nodes, refs - leaves)


def assemble(
    trees: list[Tree],
    *,
    n_features: int,
    n_outputs: int,
    tree_offset: list[int] | np.ndarray | None = None,
    base_score: np.ndarray | None = None,
    aggregation: Aggregation = Aggregation.SUM,
    comparison: Comparison = Comparison.LE,
    input_precision: Precision = Precision.FLOAT64,
    leaf_precision: Precision = Precision.FLOAT64,
) -> TreeEnsemble:
    """Concatenate trees into one ensemble.

    With ``input_precision`` float32 the library rounds inputs to float32 before
    comparing, so thresholds are stored as the float32 that sends every float32
    input the same way (exact, and half the bytes).
    """
    nodes = leaves = 0
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("feature", "threshold", "left", "right", "missing_left", "leaf_values")
    }
    roots = []
    for tree in trees:
        parts["feature"].append(tree.feature)
        parts["threshold"].append(tree.threshold)
        parts["left"].append(_shift(tree.left, nodes, leaves))
        parts["right"].append(_shift(tree.right, nodes, leaves))
        parts["missing_left"].append(tree.missing_left)
        parts["leaf_values"].append(tree.leaf_values)
        roots.append(int(_shift(np.array([tree.root]), nodes, leaves)[0]))
        nodes += tree.feature.shape[0]
        leaves += tree.leaf_values.shape[0]
    threshold = np.concatenate(parts["threshold"])
    if input_precision is Precision.FLOAT32:
        threshold = round_threshold(threshold, comparison)
    offsets = np.zeros(len(trees)) if tree_offset is None else np.asarray(tree_offset)
    return TreeEnsemble(
        feature=np.concatenate(parts["feature"]).astype(np.int32),
        threshold=threshold,
        left=np.concatenate(parts["left"]).astype(np.int32),
        right=np.concatenate(parts["right"]).astype(np.int32),
        missing_left=np.concatenate(parts["missing_left"]).astype(bool),
        leaf_values=np.concatenate(parts["leaf_values"], axis=0).astype(leaf_precision.dtype),
        roots=np.array(roots, dtype=np.int32),
        tree_offset=offsets.astype(np.int32),
        n_features=n_features,
        n_outputs=n_outputs,
        base_score=(np.zeros(n_outputs) if base_score is None else np.asarray(base_score)).astype(
            leaf_precision.dtype
        ),
        comparison=comparison,
        aggregation=aggregation,
        input_precision=input_precision,
    )


def booster_model(
    ensemble: TreeEnsemble,
    *,
    task: Task,
    link: Link,
    source: dict[str, str],
    classes: np.ndarray | None = None,
    feature_names: list[str] | tuple[str, ...] | None = None,
) -> Model:
    """The Model around a booster's ensemble (XGBoost, LightGBM).

    Both libraries' classifiers decide labels on probabilities (``p > 0.5``, or argmax),
    and encode labels as ``0 .. n_classes - 1`` unless the estimator knows better.
    """
    common = {
        "steps": (ensemble,),
        "task": task,
        "n_features": ensemble.n_features,
        "link": link,
        "feature_names": tuple(feature_names) if feature_names else None,
        "metadata": {"source": source, "fedge_version": __version__},
    }
    if task is Task.REGRESSION:
        return Model(**common)
    n_classes = 2 if ensemble.n_outputs == 1 else ensemble.n_outputs
    return Model(
        **common,
        classes=np.arange(n_classes) if classes is None else np.asarray(classes),
        predict_from=PredictFrom.PROBABILITIES,
    )
