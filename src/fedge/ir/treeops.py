"""Take a tree ensemble apart into trees and put trees back together, keeping every dtype.

Works for :class:`~fedge.ir.TreeEnsemble` and :class:`~fedge.ir.QuantizedTrees` alike (the
latter's thresholds are bin indices and its leaves integers; they are carried as stored).

Compression passes (and federated bagging) edit trees one at a time: they need each tree
with local numbering, its own copy of its leaves, and a way back to one validated
:class:`~fedge.ir.TreeEnsemble` that keeps the thresholds and leaves at their stored
precision (no re-rounding).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fedge.ir.nodes import QuantizedTrees, TreeEnsemble

Ensemble = TreeEnsemble | QuantizedTrees

__all__ = ["LocalTree", "join_trees", "leaves_reached", "split_trees"]


@dataclass(frozen=True)
class LocalTree:
    """One tree with local numbering: split ``i`` sends rows to ``left[i]``/``right[i]``
    (``>= 0`` a split, ``< 0`` the leaf ``~r`` of ``leaf_values``); ``root`` likewise."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    leaf_values: np.ndarray
    root: int
    offset: int  # first output the tree writes

    @property
    def n_splits(self) -> int:
        return int(self.feature.shape[0])


def split_trees(step: Ensemble) -> list[LocalTree]:
    """Every tree of ``step`` in order, renumbered locally (leaves copied per tree)."""
    trees = []
    for t in range(step.n_trees):
        root = int(step.roots[t])
        order: list[int] = []  # split nodes, breadth-first
        leaves: list[int] = []
        frontier = [root]
        while frontier:
            nxt = []
            for ref in frontier:
                if ref < 0:
                    leaves.append(~ref)
                else:
                    order.append(ref)
                    nxt += [int(step.left[ref]), int(step.right[ref])]
            frontier = nxt
        split_id = {g: i for i, g in enumerate(order)}
        leaf_id = {g: i for i, g in enumerate(dict.fromkeys(leaves))}

        def local(ref: int, split_id: dict = split_id, leaf_id: dict = leaf_id) -> int:
            return split_id[ref] if ref >= 0 else ~leaf_id[~ref]

        idx = np.array(order, dtype=np.int64)
        trees.append(
            LocalTree(
                feature=step.feature[idx].astype(np.int32),
                threshold=step.threshold[idx],
                left=np.array([local(int(r)) for r in step.left[idx]], dtype=np.int64),
                right=np.array([local(int(r)) for r in step.right[idx]], dtype=np.int64),
                missing_left=step.missing_left[idx],
                leaf_values=step.leaf_values[np.array(list(leaf_id), dtype=np.int64)].reshape(
                    -1, step.leaf_width
                ),
                root=local(root),
                offset=int(step.tree_offset[t]),
            )
        )
    return trees


def join_trees(template: Ensemble, trees: list[LocalTree], **changes: object) -> Ensemble:
    """One ensemble of ``trees`` with ``template``'s settings (comparison, aggregation,
    base score, precisions), optionally changed by keyword; validated on construction."""
    if not trees:
        raise ValueError("an ensemble needs at least one tree")
    splits = leaves = 0
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f", "th", "l", "r", "m", "v")}
    roots = []
    for tree in trees:

        def shift(refs: np.ndarray, splits: int = splits, leaves: int = leaves) -> np.ndarray:
            return np.where(refs >= 0, refs + splits, refs - leaves)

        parts["f"].append(tree.feature)
        parts["th"].append(tree.threshold)
        parts["l"].append(shift(tree.left))
        parts["r"].append(shift(tree.right))
        parts["m"].append(tree.missing_left)
        parts["v"].append(tree.leaf_values)
        roots.append(int(shift(np.array([tree.root]))[0]))
        splits += tree.n_splits
        leaves += tree.leaf_values.shape[0]
    fields = {
        "feature": np.concatenate(parts["f"]).astype(np.int32),
        "threshold": np.concatenate(parts["th"]).astype(template.threshold.dtype),
        "left": np.concatenate(parts["l"]).astype(np.int32),
        "right": np.concatenate(parts["r"]).astype(np.int32),
        "missing_left": np.concatenate(parts["m"]).astype(bool),
        "leaf_values": np.concatenate(parts["v"], axis=0).astype(template.leaf_values.dtype),
        "roots": np.array(roots, dtype=np.int32),
        "tree_offset": np.array([t.offset for t in trees], dtype=np.int32),
    }
    fields.update(changes)  # type: ignore[arg-type]
    return dataclasses.replace(template, **fields)


def leaves_reached(tree: LocalTree, X: np.ndarray, comparison_le: bool) -> np.ndarray:
    """Local leaf index each row of ``X`` reaches (float64 comparisons on ``X`` as given)."""
    node = np.full(X.shape[0], tree.root, dtype=np.int64)
    active = node >= 0
    while np.any(active):
        rows = np.flatnonzero(active)
        nd = node[rows]
        v = X[rows, tree.feature[nd]]
        th = tree.threshold[nd].astype(np.float64)
        go_left = np.where(np.isnan(v), tree.missing_left[nd], v <= th if comparison_le else v < th)
        node[rows] = np.where(go_left, tree.left[nd], tree.right[nd])
        active = node >= 0
    return ~node
