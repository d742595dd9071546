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

from fedge.ir.nodes import Aggregation, Comparison, Precision, TreeEnsemble, round_threshold

__all__ = ["Tree", "assemble", "from_node_table"]


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
        leaf_values=np.concatenate(parts["leaf_values"], axis=0),
        roots=np.array(roots, dtype=np.int32),
        tree_offset=offsets.astype(np.int32),
        n_features=n_features,
        n_outputs=n_outputs,
        base_score=np.zeros(n_outputs) if base_score is None else np.asarray(base_score, float),
        comparison=comparison,
        aggregation=aggregation,
        input_precision=input_precision,
    )
