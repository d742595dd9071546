"""Pack a tree ensemble into the compact tables of the C ``table`` layout.

Per split node: one feature byte (its top bit is the node's missing-value rule when the
features fit in the other bits), one float32 threshold and two child references. Nodes are
renumbered tree by tree in breadth-first order, so a child reference is a small index
*within its tree* (``node_base[t]`` locates the tree). Leaves are deduplicated by their
exact float32 bits (integer leaves of :class:`QuantizedTrees` by value) into one shared table
(random-forest leaves repeat a lot), and a child
reference at or above ``limit`` names a leaf: ``leaf = ref - limit``. So a 100-tree forest
of depth 10 needs 16-bit references and no per-leaf index table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedge.ir.nodes import QuantizedTrees, TreeEnsemble

__all__ = ["CompactTrees", "compact_trees", "unsigned_type"]


def unsigned_type(high: int) -> tuple[str, str, int]:
    """Smallest unsigned C type holding ``[0, high]``: (C type, read macro, bytes)."""
    for ctype, macro, size in (
        ("unsigned char", "FEDGE_RD_U8", 1),
        ("unsigned short", "FEDGE_RD_U16", 2),
    ):
        if high < 1 << (8 * size):
            return ctype, macro, size
    return "unsigned long", "FEDGE_RD_U32", 4


@dataclass(frozen=True)
class CompactTrees:
    """Compact tables of one ensemble (see the module docstring)."""

    node_base: np.ndarray  # (n_trees,) global index of each tree's first split node
    roots: np.ndarray  # (n_trees,) encoded reference of each root (0, or a leaf)
    feature: np.ndarray  # (n_splits,) feature index, | missing bit when packed
    missing_bit: int  # bit of `feature` holding missing_left (0: separate `missing_left`)
    missing_left: np.ndarray  # (n_splits,) uint8, used only when missing_bit == 0
    threshold: np.ndarray  # (n_splits,) float32 device thresholds (bin indices: quantized)
    child: np.ndarray  # (2 * n_splits,) encoded left, right references, interleaved
    limit: int  # references >= limit are leaves
    leaves: np.ndarray  # (n_unique_leaves, width) float32 (int8/int16: quantized)
    leaf_row: np.ndarray  # (n_leaves,) row of `leaves` holding each of the step's leaves


def _tree_and_level(step: TreeEnsemble | QuantizedTrees) -> tuple[np.ndarray, np.ndarray]:
    """Tree and depth of every split node, walking all trees level by level."""
    tree = np.zeros(step.n_nodes, dtype=np.int64)
    level = np.zeros(step.n_nodes, dtype=np.int64)
    owners = np.flatnonzero(step.roots >= 0)
    frontier = step.roots[owners].astype(np.int64)
    depth = 0
    while frontier.size:
        tree[frontier], level[frontier] = owners, depth
        kids = np.concatenate([step.left[frontier], step.right[frontier]])
        owners = np.concatenate([owners, owners])
        keep = kids >= 0
        frontier, owners = kids[keep].astype(np.int64), owners[keep]
        depth += 1
    return tree, level


def compact_trees(step: TreeEnsemble | QuantizedTrees) -> CompactTrees:
    """Renumber, deduplicate and encode ``step``'s trees for the C table layout.

    A :class:`QuantizedTrees` keeps its integer leaves (deduplicated by value) and its
    thresholds as bin indices."""
    tree, level = _tree_and_level(step)
    order = np.lexsort((np.arange(step.n_nodes), level, tree))  # tree, then breadth-first
    new_index = np.empty(step.n_nodes, dtype=np.int64)
    new_index[order] = np.arange(step.n_nodes)
    counts = np.bincount(tree, minlength=step.n_trees)
    node_base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    limit = max(1, int(counts.max(initial=0)))  # 0 would make "ref < limit" always false

    if isinstance(step, QuantizedTrees):
        unique, leaf_id = np.unique(step.leaf_values, axis=0, return_inverse=True)
        threshold = step.threshold
    else:
        leaves32 = np.ascontiguousarray(step.leaf_values.astype(np.float32))
        bits = leaves32.view(np.uint32)  # dedupe by bits: -0.0 and 0.0 stay apart
        unique_bits, leaf_id = np.unique(bits, axis=0, return_inverse=True)
        unique = unique_bits.view(np.float32)
        threshold = step.device_thresholds()
    leaf_id = leaf_id.reshape(-1)

    def encode(refs: np.ndarray, owner: np.ndarray) -> np.ndarray:
        refs = refs.astype(np.int64)
        out = np.empty(refs.shape, dtype=np.int64)
        inner = refs >= 0
        out[inner] = new_index[refs[inner]] - node_base[owner[inner]]
        out[~inner] = limit + leaf_id[~refs[~inner]]
        return out

    left = encode(step.left[order], tree[order])
    right = encode(step.right[order], tree[order])
    child = np.stack([left, right], axis=1).reshape(-1)
    roots = encode(step.roots, np.arange(step.n_trees))

    feature = step.feature[order].astype(np.int64)
    missing = step.missing_left[order].astype(np.uint8)
    # Pack the missing rule into the feature's top bit when it is free.
    missing_bit = 0
    for width in (8, 16):
        if step.n_features <= 1 << (width - 1):
            missing_bit = 1 << (width - 1)
            feature = feature | (missing.astype(np.int64) * missing_bit)
            break
    return CompactTrees(
        node_base=node_base,
        roots=roots,
        feature=feature,
        missing_bit=missing_bit,
        missing_left=missing,
        threshold=np.ascontiguousarray(threshold[order]),
        child=child,
        limit=limit,
        leaves=unique.reshape(-1, step.leaf_width),
        leaf_row=leaf_id,
    )
