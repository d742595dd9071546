"""Integer C for :class:`~fedge.ir.nodes.QuantizedTrees` (both tree layouts).

The code is the numpy runtime's ``_quantized_trees``, operation for operation:

1. **Bins, once per row.** Feature ``f``'s value ``v`` becomes ``#{edges < v}`` (``<=``
   splits; ``#{edges <= v}`` for ``<`` splits), found by a binary search over the feature's
   float32 edges (one shared ``edges`` table, ``edge_start`` locates each feature), exactly
   numpy's ``searchsorted`` with ``side="left"`` / ``"right"``. A NaN gets the bin ``NAN_BIN``
   (one more than the largest real bin), which is above every threshold index, so a NaN
   goes right at a split unless the split's missing rule says left:
   ``go_left = (bin <= threshold) | ((bin == NAN_BIN) & missing_left)``.
2. **Integer walk.** The table layout packs each split as a feature byte (its top bit the
   missing rule, as the float tables), an 8/16-bit threshold *index* and two child
   references; leaves are one deduplicated int8/int16 table (read with ``FEDGE_RD_I8`` /
   ``FEDGE_RD_I16``). The inline layout writes each tree as ``if (b[f] <= 17) goto ...``
   with the leaf integers inlined (adds of 0 left out).
3. **Integer sums**, trees in order, in the narrowest C type that provably cannot
   overflow: ``int`` (16 bits on AVR) when ``sum over trees of max |leaf|`` is at most
   32,767, else ``long``, else ``long long``; the bound is written next to the
   declaration.
4. **One rescale**: ``(float)sum * leaf_scale`` (``/ n_trees`` for forests) ``+ base``, in
   float32 in that order, as the runtime (whose int64 sums convert to float32 the same way:
   round to nearest).

Reference and device mode coincide for these steps (the arithmetic defines the model), so
host C compiled with ``-ffp-contract=off`` equals both bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedge.deployment.formats.c.tree_tables import compact_trees, unsigned_type
from fedge.ir.nodes import Aggregation, Comparison, QuantizedTrees

if TYPE_CHECKING:
    from fedge.deployment.formats.c.emit import _Emitter

__all__ = ["emit_quantized_trees", "sum_type"]


def sum_type(bound: int) -> str:
    """The narrowest standard C integer type guaranteed to hold ``[-bound, bound]``."""
    if bound <= 2**15 - 1:
        return "int"
    if bound <= 2**31 - 1:
        return "long"
    return "long long"


def _sum_bound(step: QuantizedTrees) -> int:
    """Largest ``|sum|`` any output can reach: per tree, its largest ``|leaf|`` entry."""
    leaves = np.abs(step.leaf_values.astype(np.int64))
    per_tree = np.zeros(step.n_trees, dtype=np.int64)
    refs = [(t, int(r)) for t, r in enumerate(step.roots)]
    # Leaves reachable from each tree (iterative walk; trees are small next to the leaves).
    while refs:
        t, r = refs.pop()
        if r < 0:
            per_tree[t] = max(per_tree[t], int(leaves[~r].max(initial=0)))
        else:
            refs += [(t, int(step.left[r])), (t, int(step.right[r]))]
    return int(per_tree.sum())


def _index_type(high: int) -> str:
    """``unsigned int`` (16 bits at least: fast on AVR) when it holds ``high``."""
    return "unsigned int" if high <= 0xFFFF else "unsigned long"


def emit_quantized_trees(em: _Emitter, i: int, step: QuantizedTrees, src: str, dst: str) -> None:
    """Append ``step``'s tables (and inline helpers) to ``em`` and its statements, which read
    floats from ``src`` and write the rescaled float sums to ``dst``."""
    from fedge.deployment.formats.c.emit import _f32, _table

    n = em.name
    nf, no = step.n_features, step.n_outputs
    sizes = np.diff(step.bin_start)
    nan_bin = int(sizes.max(initial=0)) + 1
    bin_t = unsigned_type(nan_bin)[0]
    bound = _sum_bound(step)
    acc_t = sum_type(bound)
    int8 = step.leaf_values.dtype == np.int8
    leaf_t, leaf_rd = ("signed char", "FEDGE_RD_I8") if int8 else ("short", "FEDGE_RD_I16")
    em.int_reads.add(leaf_rd)

    # ---- bins, once per row
    edges, starts = n(i, "edges"), n(i, "edge_start")
    start_t, start_rd, _ = unsigned_type(int(step.bin_start[-1]))
    idx_t = _index_type(int(step.bin_start[-1]))
    em.tables.append(_table(edges, "float", step.bin_edges))
    em.tables.append(_table(starts, start_t, step.bin_start))
    below = "<" if step.comparison is Comparison.LE else "<="
    binning = (
        f"        for (f = 0; f < {nf}ul; ++f) {{  /* bin = #{{edges {below} x}}; NaN: NAN_BIN */\n"
        f"            {idx_t} lo = {start_rd}({starts}, f), hi = {start_rd}({starts}, f + 1);\n"
        f"            {idx_t} first = lo;\n"
        f"            float v = {src}[f];\n"
        f"            if (v != v) {{\n"
        f"                bin[f] = {nan_bin};\n"
        f"                continue;\n"
        f"            }}\n"
        f"            while (lo < hi) {{\n"
        f"                {idx_t} mid = lo + ((hi - lo) >> 1);\n"
        f"                if (FEDGE_RD_F32({edges}, mid) {below} v) lo = mid + 1;\n"
        f"                else hi = mid;\n"
        f"            }}\n"
        f"            bin[f] = ({bin_t})(lo - first);\n"
        f"        }}\n"
    )

    # ---- the trees
    if em.layout == "inline":
        walk = _inline(em, i, step, bin_t, acc_t, nan_bin)
    else:
        walk = _table_walk(em, i, step, acc_t, leaf_t, leaf_rd, nan_bin)

    # ---- one rescale, in the runtime's float32 order
    scale = step.leaf_scale
    if no == 1:
        scale_of, base_of = _f32(scale[0]), _f32(step.base_score[0])
    else:
        base = n(i, "base")
        em.tables.append(_table(base, "float", step.base_score))
        base_of = f"FEDGE_RD_F32({base}, j)"
        if scale.shape[0] == 1:
            scale_of = _f32(scale[0])
        else:
            sc = n(i, "scale")
            em.tables.append(_table(sc, "float", scale))
            scale_of = f"FEDGE_RD_F32({sc}, j)"
    mean = (
        f"            {dst}[j] /= {_f32(step.n_trees)};\n"
        if step.aggregation is Aggregation.MEAN
        else ""
    )
    em.body.append(
        f"    {{  /* quantized trees: integer bins, comparisons and sums, one rescale */\n"
        f"        {bin_t} bin[{nf}];  /* NAN_BIN = {nan_bin} */\n"
        f"        {acc_t} sum[{no}];  /* |sum| <= {bound} */\n"
        f"        {_index_type(nf)} f;\n"
        f"{binning}"
        f"        for (j = 0; j < {no}; ++j) sum[j] = 0;\n"
        f"{walk}"
        f"        for (j = 0; j < {no}; ++j) {{\n"
        f"            {dst}[j] = (float)sum[j] * {scale_of};\n"
        f"{mean}"
        f"            {dst}[j] += {base_of};\n"
        f"        }}\n"
        f"    }}\n"
    )


def _table_walk(
    em: _Emitter,
    i: int,
    step: QuantizedTrees,
    acc_t: str,
    leaf_t: str,
    leaf_rd: str,
    nan_bin: int,
) -> str:
    """Compact tables (see :mod:`tree_tables`) walked by one loop per tree."""
    from fedge.deployment.formats.c.emit import _table

    n = em.name
    tables = compact_trees(step)
    lim = tables.limit
    top_ref = max(int(tables.child.max(initial=0)), int(tables.roots.max()))
    ref_t, ref_rd, _ = unsigned_type(top_ref)
    feat_t, feat_rd, _ = unsigned_type(int(tables.feature.max(initial=0)))
    base_t, base_rd, _ = unsigned_type(int(tables.node_base.max(initial=0)))
    thr_t, thr_rd, _ = unsigned_type(int(tables.threshold.max(initial=0)))
    w = step.leaf_width
    n_nodes = tables.feature.shape[0]
    idx_t = _index_type(max(2 * n_nodes + 1, lim + len(tables.leaves), len(tables.leaves) * w))
    fm_t = "unsigned long" if feat_t == "unsigned long" else "unsigned int"
    em.tables += [
        _table(n(i, "node_base"), base_t, tables.node_base),
        _table(n(i, "roots"), ref_t, tables.roots),
        _table(n(i, "feature"), feat_t, tables.feature),
        _table(n(i, "threshold"), thr_t, tables.threshold),
        _table(n(i, "child"), ref_t, tables.child),
        _table(n(i, "leaves"), leaf_t, tables.leaves),
    ]
    if tables.missing_bit:
        feature = f"fm & {tables.missing_bit - 1}u"
        missing = f"(int)(fm >> {tables.missing_bit.bit_length() - 1})"
    else:
        feature = "fm"
        em.tables.append(_table(n(i, "missing_left"), "unsigned char", tables.missing_left))
        missing = f"(int)FEDGE_RD_U8({n(i, 'missing_left')}, g)"
    # A NaN bin is above every threshold: only left-going missing rules need a term.
    nan_term = f" | ((b == {nan_bin}u) & {missing})" if np.any(step.missing_left) else ""
    # Where each tree's leaf goes: output 0 for one output or full-width leaves.
    if w == step.n_outputs:
        out, out_decl = "0", ""
    else:
        off_t, off_rd, _ = unsigned_type(step.n_outputs)
        em.tables.append(_table(n(i, "offset"), off_t, step.tree_offset))
        out, out_decl = "out", f"            {idx_t} out = {off_rd}({n(i, 'offset')}, t);\n"
    add = (
        f"            sum[{out}] += {leaf_rd}({n(i, 'leaves')}, ref);\n"
        if w == 1
        else f"            for (k = 0; k < {w}; ++k) {{\n"
        f"                sum[{out} + k] += {leaf_rd}({n(i, 'leaves')}, ref * {w}u + k);\n"
        f"            }}\n"
    )
    return (
        f"        for (t = 0; t < {step.n_trees}; ++t) {{\n"
        f"            {idx_t} base = {base_rd}({n(i, 'node_base')}, t);\n"
        f"            {idx_t} ref = {ref_rd}({n(i, 'roots')}, t);\n"
        f"{out_decl}"
        f"            while (ref < {lim}u) {{\n"
        f"                {idx_t} g = base + ref;\n"
        f"                {fm_t} fm = {feat_rd}({n(i, 'feature')}, g);\n"
        f"                unsigned int b = bin[{feature}];\n"
        f"                int go_left = (b <= (unsigned int){thr_rd}({n(i, 'threshold')}, g))"
        f"{nan_term};\n"
        f"                ref = {ref_rd}({n(i, 'child')}, 2u * g + !go_left);\n"
        f"            }}\n"
        f"            ref -= {lim}u;\n"
        f"{add}"
        f"        }}\n"
    )


def _inline(
    em: _Emitter, i: int, step: QuantizedTrees, bin_t: str, acc_t: str, nan_bin: int
) -> str:
    """One flat static function per tree (labelled ``if``/``goto``, no nesting), called in
    tree order; thresholds and leaf integers are literals."""
    calls = []
    for t in range(step.n_trees):
        fn = em.name(i, f"tree{t}")
        off = int(step.tree_offset[t])
        lines = [f"static void {fn}(const {bin_t} *b, {acc_t} *sum)\n{{\n    (void)b; (void)sum;\n"]
        root = int(step.roots[t])
        stack, order, used_leaves = [root], [], []
        while stack:  # depth-first, iterative
            ref = stack.pop()
            if ref < 0:
                if ref not in used_leaves:
                    used_leaves.append(ref)
                continue
            order.append(ref)
            stack += [int(step.right[ref]), int(step.left[ref])]

        def target(ref: int) -> str:
            return f"n{ref}" if ref >= 0 else f"l{~ref}"

        for k, node in enumerate(order):
            label = "" if k == 0 and node == root else f"n{node}: "
            f, th = int(step.feature[node]), int(step.threshold[node])
            test = f"b[{f}] <= {th}"
            if step.missing_left[node]:
                test += f" || b[{f}] == {nan_bin}"
            lines.append(
                f"    {label}if ({test}) goto {target(int(step.left[node]))};\n"
                f"    goto {target(int(step.right[node]))};\n"
            )
        for ref in used_leaves:
            label = "" if ref == root else f"l{~ref}: "
            adds = "".join(
                f"sum[{off + k}] += {int(v)}; "
                for k, v in enumerate(step.leaf_values[~ref])
                if v != 0
            )
            lines.append(f"    {label}{adds}return;\n")
        lines.append("}\n")
        em.helpers.append("".join(lines))
        calls.append(f"        {fn}(bin, sum);\n")
    return "".join(calls)
