"""Bitvector evaluation of small trees for the C table layout on hosts (QuickScorer).

Lucchese et al., "QuickScorer" (SIGIR 2015): number each tree's leaves left to right and
give every split node a mask with zeros on the leaves of its left subtree. A row starts
with all bits set in every tree and, for each feature, ANDs in the masks of the nodes it
goes *right* at; those nodes are found by one scan of the feature's thresholds in
ascending order, stopping at the first one the value does not exceed. The lowest set bit
of a tree's mask is then the leaf the node walk reaches: the exit leaf is never cleared
(only its own ancestors could clear it, and it lies left of them only where the row goes
left), and every leaf left of it lies in the left subtree of a node the row goes right at.

The only data-dependent branch is the end of each feature's scan (one per feature, not one
per level), so leaf-wise trees of uneven depth (LightGBM's) cost few mispredictions, and
eight rows share one scan as two vectors of four floats. The
leaves are then added tree by tree in ensemble order, so the sums have the node walk's
(and device mode's) bits. A NaN takes each node's missing-value rule: the masks of the
nodes that send it right, from a separate per-node flag.

Used on hosts with GNU C vectors (``<P>_VECTORS``) for ensembles whose trees all have at
most 32 leaves and are deep for their size: the walk costs about one step per level of a
path, the scan about half of a tree's splits, so full balanced trees (a depth-5 forest: 6
splits per level) walk faster and leaf-wise trees (LightGBM: 2 to 3) scan faster. The
crossover, :data:`SPLITS_PER_LEVEL`, is measured (docs/c-api.md). Microcontrollers keep the
node walk, whose tables are smaller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedge.deployment.formats.c.tree_tables import unsigned_type
from fedge.ir.nodes import Comparison, TreeEnsemble

__all__ = [
    "MAX_LEAVES",
    "MAX_TREES",
    "ROWS",
    "SPLITS_PER_LEVEL",
    "BitvectorNames",
    "BitvectorTrees",
    "bitvector_tables",
    "bitvector_trees",
    "row_function",
    "rows_function",
]

MAX_LEAVES = 32  # one uint32 mask per tree
MAX_TREES = 2048  # the batch keeps 8 rows x 4 bytes of masks per tree on the stack (64 KiB)
ROWS = 8  # rows a batch scan serves at once: two vectors of four floats
# Splits per level of depth (over the ensemble) above which the node walk is faster, one row
# and batch taken together (benchmarks/tree_bitvectors.py): LightGBM's 2.8 and depth-3
# boosters' 2.3 scan faster, balanced depth-5 trees (4.9, 6.1) walk faster.
SPLITS_PER_LEVEL = 4.0


@dataclass(frozen=True)
class BitvectorTrees:
    """Per-feature condition lists and per-tree leaf tables (see the module docstring)."""

    begin: np.ndarray  # (n_features + 1,) each feature's first condition; lists end in +inf
    threshold: np.ndarray  # float32, ascending per feature: a value above it goes right
    tree: np.ndarray  # tree of each condition (the sentinels name tree 0)
    mask: np.ndarray  # uint32: zeros on the leaves of the node's left subtree
    nan_right: np.ndarray  # uint8: the node sends NaN right
    leaf: np.ndarray  # (n_trees, MAX_LEAVES) row of the shared leaf table, left to right


def _leaf_order(step: TreeEnsemble, tree: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Leaves of ``tree`` left to right, and (node, first, end) of each split node's left
    subtree leaves; stops early (returning what it has) past MAX_LEAVES leaves."""
    leaves: list[int] = []
    spans: list[tuple[int, int, int]] = []
    # Iterative in-order walk: (0, ref, _) enters a subtree; (1, node, first) marks the end
    # of node's left subtree (its leaves are first..now) before the right one is entered.
    stack: list[tuple[int, int, int]] = [(0, int(step.roots[tree]), 0)]
    while stack and len(leaves) <= MAX_LEAVES:
        kind, ref, first = stack.pop()
        if kind == 1:  # the left subtree of node `ref` is done
            spans.append((ref, first, len(leaves)))
            stack.append((0, int(step.right[ref]), 0))
        elif ref < 0:
            leaves.append(~ref)
        else:
            stack.append((1, ref, len(leaves)))
            stack.append((0, int(step.left[ref]), 0))
    return leaves, spans


def _go_right_thresholds(step: TreeEnsemble) -> np.ndarray | None:
    """float32 thresholds t such that a float32 value goes right exactly when ``v > t``
    (``<`` splits: the next float32 down); None when that has no float32 answer."""
    thr = step.device_thresholds().astype(np.float32)
    if step.comparison is Comparison.LE:
        return thr
    if np.any(thr == -np.inf):  # nothing is below -inf, but v > nextafter(-inf) is -inf
        return None
    return np.nextafter(thr, np.float32(-np.inf)).astype(np.float32)


def bitvector_trees(step: TreeEnsemble, leaf_row: np.ndarray) -> BitvectorTrees | None:
    """Bitvector tables of ``step``, or None when it does not qualify (a tree with more
    than :data:`MAX_LEAVES` leaves, more than :data:`MAX_TREES` trees, more than
    :data:`SPLITS_PER_LEVEL` splits per level of depth, no float32 form of its thresholds).
    ``leaf_row[l]`` is the row of IR leaf ``l`` in the shared leaf table."""
    levels = int(step.depths.sum())
    if step.n_trees > MAX_TREES or int(step.depths.max(initial=0)) >= MAX_LEAVES:
        return None
    if levels == 0 or step.n_nodes > SPLITS_PER_LEVEL * levels:
        return None
    thr = _go_right_thresholds(step)
    if thr is None:
        return None
    full = (1 << MAX_LEAVES) - 1
    leaf = np.zeros((step.n_trees, MAX_LEAVES), dtype=np.int64)
    nodes, trees, masks = [], [], []
    for t in range(step.n_trees):
        leaves, spans = _leaf_order(step, t)
        if len(leaves) > MAX_LEAVES:
            return None
        leaf[t, : len(leaves)] = leaf_row[leaves]
        for node, first, end in spans:
            nodes.append(node)
            trees.append(t)
            masks.append(full ^ ((1 << end) - (1 << first)))
    node = np.asarray(nodes, dtype=np.int64)
    tree = np.asarray(trees, dtype=np.int64)
    mask = np.asarray(masks, dtype=np.uint64)
    feature = step.feature[node].astype(np.int64)
    # Feature, then threshold; ties by tree and node so the tables are deterministic.
    order = np.lexsort((node, tree, thr[node], feature))
    counts = np.bincount(feature, minlength=step.n_features)
    begin = np.concatenate([[0], np.cumsum(counts + 1)])  # + 1: each list's sentinel
    n = int(begin[-1])
    # Place of each sorted condition: after one sentinel per earlier feature's list.
    at = np.arange(len(order)) + feature[order]
    threshold = np.full(n, np.inf, dtype=np.float32)
    tree_of = np.zeros(n, dtype=np.int64)
    mask_of = np.full(n, full, dtype=np.uint64)
    nan_right = np.zeros(n, dtype=np.uint8)
    threshold[at] = thr[node[order]]
    tree_of[at] = tree[order]
    mask_of[at] = mask[order]
    nan_right[at] = ~step.missing_left[node[order]]
    return BitvectorTrees(
        begin=begin.astype(np.int64),
        threshold=threshold,
        tree=tree_of,
        mask=mask_of,
        nan_right=nan_right,
        leaf=leaf,
    )


@dataclass(frozen=True)
class BitvectorNames:
    """What the generated functions read: table names and their read macros."""

    names: str  # prefix of the ensemble's table names (``<p>_s<i>_``)
    vec: str  # prefix of the vector types (``<p>``: ``<p>_v4`` floats, ``<p>_u4`` masks)
    begin_rd: str
    tree_rd: str
    leaf_rd: str  # read macro of bv_leaf
    off_rd: str  # read macro of the tree offsets
    value_rd: str  # read macro of the shared leaf values


def bitvector_tables(
    bv: BitvectorTrees,
    names: str,
    table: Callable[[str, str, np.ndarray], str],
    *,
    vec: str,
    off_rd: str,
    value_rd: str,
) -> tuple[list[str], BitvectorNames]:
    """C tables of ``bv`` (``names`` + ``bv_begin`` ...; ``table(name, ctype, values)``, the
    emitter's writer) and what the functions need to read them: the shared tree offsets and
    leaf values through ``off_rd`` / ``value_rd``, vectors typed ``<vec>_v4`` / ``<vec>_u4``."""
    begin_type, begin_rd, _ = unsigned_type(int(bv.begin[-1]))
    tree_type, tree_rd, _ = unsigned_type(int(bv.tree.max(initial=0)))
    leaf_type, leaf_rd, _ = unsigned_type(int(bv.leaf.max(initial=0)))
    tables = [
        table(f"{names}bv_begin", begin_type, bv.begin),
        table(f"{names}bv_threshold", "float", bv.threshold),
        table(f"{names}bv_tree", tree_type, bv.tree),
        table(f"{names}bv_mask", "uint32_t", bv.mask),
        table(f"{names}bv_nan_right", "unsigned char", bv.nan_right),
        table(f"{names}bv_leaf", leaf_type, bv.leaf),
    ]
    return tables, BitvectorNames(names, vec, begin_rd, tree_rd, leaf_rd, off_rd, value_rd)


def _add_leaves(n: BitvectorNames, step: TreeEnsemble, bits: str, acc: str, ind: str) -> str:
    """Add every tree's exit leaf (the lowest set bit of ``bits``, a C expression of ``t``)
    to ``acc``, tree by tree in ensemble order."""
    w = step.leaf_width
    return (
        f"{ind}for (t = 0; t < {step.n_trees}; ++t) {{\n"
        f"{ind}    long leaf = {n.leaf_rd}({n.names}bv_leaf, t * {MAX_LEAVES} + "
        f"__builtin_ctz({bits}));\n"
        f"{ind}    long out = {n.off_rd}({n.names}offset, t);\n"
        f"{ind}    for (k = 0; k < {w}; ++k) {acc}[out + k] += "
        f"{n.value_rd}({n.names}leaves, leaf * {w} + k);\n"
        f"{ind}}}\n"
    )


def row_function(n: BitvectorNames, step: TreeEnsemble, fn: str) -> str:
    """``static void fn(const float *x, float *acc)``: add the trees' leaves for one row to
    ``acc`` (which holds the starting sums)."""
    b, nt = n.names, step.n_trees
    return (
        f"static void {fn}(const float *x, float *acc)\n{{\n"
        f"    uint32_t bits[{nt}];\n    long f, i, t, k;\n"
        f"    for (t = 0; t < {nt}; ++t) bits[t] = 0xffffffffu;\n"
        f"    for (f = 0; f < {step.n_features}; ++f) {{\n"
        f"        float v = x[f];\n"
        f"        i = (long){n.begin_rd}({b}bv_begin, f);\n"
        f"        if (v != v) {{  /* NaN: the nodes that send it right */\n"
        f"            long end = (long){n.begin_rd}({b}bv_begin, f + 1) - 1;\n"
        f"            for (; i < end; ++i)\n"
        f"                if (FEDGE_RD_U8({b}bv_nan_right, i))\n"
        f"                    bits[{n.tree_rd}({b}bv_tree, i)] &= FEDGE_RD_U32({b}bv_mask, i);\n"
        f"        }} else {{  /* the list ends in +inf, which no value exceeds */\n"
        f"            for (; v > FEDGE_RD_F32({b}bv_threshold, i); ++i)\n"
        f"                bits[{n.tree_rd}({b}bv_tree, i)] &= FEDGE_RD_U32({b}bv_mask, i);\n"
        f"        }}\n    }}\n" + _add_leaves(n, step, "bits[t]", "acc", "    ") + "}\n"
    )


def rows_function(n: BitvectorNames, step: TreeEnsemble, fn: str) -> str:
    """``static void fn(const float *const *row, float *acc)``: the same for :data:`ROWS`
    rows at once (``acc``: one row of ``n_outputs`` sums after another), the rows' values
    of a feature as two vectors compared with each threshold in one scan that runs to the
    largest value."""
    b, nt, v = n.names, step.n_trees, n.vec
    lanes = range(ROWS // 4)
    load = "".join(
        f"        {v}_v4 v{q} = {{" + ", ".join(f"row[{4 * q + e}][f]" for e in range(4)) + "};\n"
        for q in lanes
    )
    ands = "".join(
        f"            g = ({v}_u4)(v{q} > tv);\n            s[{q}] &= ~g | mk;\n" for q in lanes
    )
    return (
        f"static void {fn}(const float *const *row, float *acc)\n{{\n"
        f"    {v}_u4 bits[{nt}][{ROWS // 4}];\n    long f, i, t, k, r;\n"
        f"    for (t = 0; t < {nt}; ++t) {{\n"
        + "".join(f"        bits[t][{q}] = ~({v}_u4){{0u, 0u, 0u, 0u}};\n" for q in lanes)
        + f"    }}\n    for (f = 0; f < {step.n_features}; ++f) {{\n{load}"
        f"        float top = -HUGE_VALF;\n        int nan = 0;\n"
        f"        for (r = 0; r < {ROWS}; ++r) {{  /* the scan runs to the largest value */\n"
        f"            float e = row[r][f];\n"
        f"            top = e > top ? e : top;\n            nan |= e != e;\n        }}\n"
        f"        for (i = (long){n.begin_rd}({b}bv_begin, f); "
        f"top > FEDGE_RD_F32({b}bv_threshold, i); ++i) {{\n"
        f"            float th = FEDGE_RD_F32({b}bv_threshold, i);\n"
        f"            {v}_v4 tv = {{th, th, th, th}};\n"
        f"            uint32_t mk = FEDGE_RD_U32({b}bv_mask, i);\n"
        f"            {v}_u4 *s = bits[{n.tree_rd}({b}bv_tree, i)], g;\n"
        f"{ands}"
        f"        }}\n"
        f"        if (nan) {{  /* NaN lanes took no mask above: their missing-value rules */\n"
        f"            long end = (long){n.begin_rd}({b}bv_begin, f + 1) - 1;\n"
        f"            for (r = 0; r < {ROWS}; ++r) {{\n"
        f"                if (row[r][f] == row[r][f]) continue;\n"
        f"                for (i = (long){n.begin_rd}({b}bv_begin, f); i < end; ++i)\n"
        f"                    if (FEDGE_RD_U8({b}bv_nan_right, i))\n"
        f"                        bits[{n.tree_rd}({b}bv_tree, i)][r / 4][r % 4] &= "
        f"FEDGE_RD_U32({b}bv_mask, i);\n"
        f"            }}\n        }}\n    }}\n"
        f"    for (r = 0; r < {ROWS}; ++r) {{\n"
        + _add_leaves(n, step, "bits[t][r / 4][r % 4]", f"(acc + r * {step.n_outputs})", "        ")
        + "    }\n}\n"
    )
