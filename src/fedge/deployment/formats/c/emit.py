"""Emit standalone C99 from an IR model: a header and a source file.

The generated code computes exactly what :mod:`fedge.ir.runtime` computes in
``device`` mode: float32 inputs and arithmetic, dot products in four interleaved lanes,
trees added in order, fedge's own exp (:mod:`fedge.ir.devicemath`). On hosts with GNU C
vectors, small trees are evaluated by bitvectors (:mod:`.bitvector_trees`): the same
leaves, added in the same order.
Compiled with ``-ffp-contract=off`` (no fused multiply-add) it reproduces
device mode bit for bit.

Rules the output keeps: C99, no malloc, no recursion, no mutable globals, every
symbol prefixed (several models link into one firmware), tables ``static const``
through the ``FEDGE_CONST`` / ``FEDGE_RD_*`` macros (so AVR can move them to flash
with PROGMEM), ``extern "C"`` guards, clean under ``-Wall -Wextra -Werror -pedantic``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedge.deployment.formats.c import bitvector_trees as bitvec
from fedge.deployment.formats.c.tree_tables import compact_trees, unsigned_type
from fedge.errors import InvalidInputError, UnsupportedModelError
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
    PredictFrom,
    QuantizedDense,
    QuantizedTrees,
    Step,
    Task,
    TreeEnsemble,
)

__all__ = ["LAYOUTS", "CSource", "emit_c"]

_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")
_C_KEYWORDS = {
    "auto",
    "break",
    "case",
    "char",
    "const",
    "continue",
    "default",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "typedef",
    "union",
    "unsigned",
    "void",
    "volatile",
    "while",
}


@dataclass(frozen=True)
class CSource:
    """Generated C: ``header`` (``<prefix>.h``) and ``source`` (``<prefix>.c``)."""

    prefix: str
    header: str
    source: str
    n_features: int
    n_outputs: int
    n_classes: int
    has_proba: bool
    task: Task


def _check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix) or prefix in _C_KEYWORDS:
        raise InvalidInputError(
            f"invalid C prefix {prefix!r}: use letters, digits and underscores, starting with a "
            "letter or underscore, at most 31 characters, not a C keyword"
        )
    return prefix


def _f32(value: float) -> str:
    """A float32 literal that reads back to exactly the same float32."""
    v = np.float32(value)
    if np.isinf(v):
        return "HUGE_VALF" if v > 0 else "(-HUGE_VALF)"
    text = np.format_float_scientific(v, unique=True, trim="0", exp_digits=2)
    text = text.replace("+", "")
    return f"{text}f"


def _table(name: str, ctype: str, values: np.ndarray, per_line: int = 8) -> str:
    flat = np.asarray(values).ravel()
    if flat.size == 0:  # C has no empty arrays
        flat = np.zeros(1, dtype=flat.dtype)
    items = [_f32(v) if ctype == "float" else str(int(v)) for v in flat]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    return f"FEDGE_CONST {ctype} {name}[{flat.size}] = {{\n    {body}\n}};\n"


@dataclass(frozen=True)
class _TreeInfo:
    """What the interleaved batch walk needs to know of a table-layout ensemble."""

    index: int
    step: TreeEnsemble
    limit: int  # child references at or above it are leaves
    ref_rd: str  # read macro of child references
    base_rd: str  # read macro of node_base
    off_rd: str  # read macro of tree_offset
    feat_rd: str  # read macro of features
    feat_mask: int  # bits of the feature byte that hold the feature index
    missing: str  # C expression (of g, the node) for the missing-value rule, 0 or 1
    cmp: str
    src: str  # buffer the ensemble reads its input from
    names: str  # prefix of the ensemble's table names
    leaf_rd: str = "FEDGE_RD_F32"  # read macro of leaves and base score (float16: 16 bits)
    bitvectors: str = ""  # the 8-row bitvector function used under <P>_VECTORS, if any

    def step_name(self, what: str) -> str:
        return f"{self.names}{what}"


class _Emitter:
    """Builds tables and statements step by step; buffers alternate between two arrays."""

    def __init__(self, model: Model, prefix: str, layout: str = "table") -> None:
        self.model, self.p, self.layout = model, prefix, layout
        self.helpers: list[str] = []  # static functions (inline trees)
        self.last_tree: _TreeInfo | None = None  # the table-layout ensemble, if last
        self.tables: list[str] = []
        self.body: list[str] = []
        self.math: set[str] = set()  # device-math functions the code calls
        self.int_reads: set[str] = set()  # FEDGE_RD_I8 / FEDGE_RD_I16, when used
        self.half = False  # whether float16 tables (and the half-to-float helper) are used
        self.vectors = False  # whether a dot product has a GNU C vector variant
        self.bitvectors = False  # whether an ensemble is evaluated by bitvectors on hosts

    def name(self, step: int, what: str) -> str:
        return f"{self.p}_s{step}_{what}"

    def ftable(self, name: str, values: np.ndarray) -> str:
        """Append a float table and return its read macro: float16 tensors stay 2 bytes a
        value (their bit patterns, widened exactly by ``<prefix>_half`` on reading)."""
        text, rd = self.ftable_text(name, values)
        self.tables.append(text)
        return rd

    def ftable_text(self, name: str, values: np.ndarray) -> tuple[str, str]:
        """The text of a float table (see :meth:`ftable`) and its read macro."""
        arr = np.asarray(values)
        if arr.dtype == np.float16:
            self.half = True
            return _table(name, "unsigned short", arr.view(np.uint16)), f"{self.p.upper()}_RD_F16"
        return _table(name, "float", arr.astype(np.float32)), "FEDGE_RD_F32"

    def finish(self, act: Activation) -> str:
        """C expression applying ``act`` to the float ``acc`` (registers the math it calls)."""
        if act in (Activation.TANH, Activation.LOGISTIC):
            self.math.add(act.value)
        return {
            Activation.IDENTITY: "acc",
            Activation.RELU: "(acc > 0.0f ? acc : 0.0f)",
            Activation.TANH: f"{self.p}_tanh(acc)",
            Activation.LOGISTIC: f"{self.p}_logistic(acc)",
        }[act]

    # ---------------------------------------------------------------- steps
    def impute(self, i: int, step: Impute, src: str, dst: str) -> None:
        fill = self.name(i, "fill")
        rd = self.ftable(fill, step.fill)
        self.body.append(
            f"    for (j = 0; j < {step.n_inputs}; ++j) {{\n"
            f"        {dst}[j] = ({src}[j] != {src}[j]) ? {rd}({fill}, j) : {src}[j];\n"
            f"    }}\n"
        )

    def affine(self, i: int, step: Affine, src: str, dst: str) -> None:
        off, sc = self.name(i, "offset"), self.name(i, "scale")
        rd = self.ftable(off, step.offset)
        self.ftable(sc, step.scale)  # same dtype
        if step.order is AffineOrder.SUBTRACT_DIVIDE:
            expr = f"({src}[j] - {rd}({off}, j)) / {rd}({sc}, j)"
        else:
            expr = f"{src}[j] * {rd}({sc}, j) + {rd}({off}, j)"
        self.body.append(
            f"    for (j = 0; j < {step.n_inputs}; ++j) {{\n        {dst}[j] = {expr};\n    }}\n"
        )

    def dense(self, i: int, step: Linear | Dense, src: str, dst: str) -> None:
        """Device mode's dot products (runtime ``_matmul``): per output, four partial sums,
        lane ``l`` adding ``x[k] * w[j][k]`` for ``k = l, l + 4, ...`` in order, then
        ``((l0 + l1) + (l2 + l3)) + b``. Weights are stored output-major so that each output's
        are contiguous: hosts with SSE or NEON run the four lanes as one vector (GNU C vector
        extension, same IEEE operations per lane, so the same bits; narrow layers advance
        every output's vector in one pass over the inputs); others run four scalar chains
        side by side."""
        w, b = self.name(i, "w"), self.name(i, "b")
        n_in, n_out = step.n_inputs, step.n_outputs
        wr = self.ftable(w, np.ascontiguousarray(step.weights.T))
        br = self.ftable(b, step.bias)
        act = step.activation if isinstance(step, Dense) else Activation.IDENTITY
        finish = self.finish(act)

        def weight(k: str) -> str:
            return f"{wr}({w}, o + {k})"

        scalar = (
            f"    for (j = 0; j < {n_out}; ++j) {{\n"
            f"        const long o = j * {n_in}L;\n        float acc;\n"
            + _scalar_dot(n_in, lambda k: f"{src}[{k}]", weight)
            + f"        acc += {br}({b}, j);\n"
            f"        {dst}[j] = {finish};\n"
            f"    }}\n"
        )
        if wr != "FEDGE_RD_F32":  # float16 tables are widened value by value
            self.body.append(scalar)
            return
        self.vectors = True
        vector = (
            self._vector_narrow(src, dst, w, b, n_in, n_out, finish)
            if n_out <= NARROW_OUTPUTS
            else self._vector_wide(src, dst, w, b, n_in, n_out, finish)
        )
        self.body.append(f"#if {self.p.upper()}_VECTORS\n{vector}#else\n{scalar}#endif\n")

    def _vector_wide(
        self, src: str, dst: str, w: str, b: str, n_in: int, n_out: int, finish: str
    ) -> str:
        """One output at a time, its four lanes in one vector."""
        full = n_in - n_in % 4
        tail = "".join(
            f"            s[{q}] += {src}[{full + q}] * {w}[o + {full + q}];\n"
            for q in range(n_in % 4)
        )
        return (
            f"    for (j = 0; j < {n_out}; ++j) {{\n"
            f"        const long o = j * {n_in}L;\n        float acc;\n"
            f"        {self.p}_v4 s = {{0.0f, 0.0f, 0.0f, 0.0f}}"
            + (
                ", xv, wv;\n"
                f"        for (k = 0; k < {full}; k += 4) {{\n"
                f"            memcpy(&xv, {src} + k, sizeof xv);\n"
                f"            memcpy(&wv, {w} + o + k, sizeof wv);\n"
                f"            s += xv * wv;\n        }}\n"
                if full
                else ";\n"
            )
            + f"{tail}"
            f"        acc = ((s[0] + s[1]) + (s[2] + s[3])) + {b}[j];\n"
            f"        {dst}[j] = {finish};\n"
            f"    }}\n"
        )

    def _vector_narrow(
        self, src: str, dst: str, w: str, b: str, n_in: int, n_out: int, finish: str
    ) -> str:
        """Every output's vector advanced in one pass over the inputs (independent chains)."""
        full = n_in - n_in % 4
        outs = range(n_out)
        tail = "".join(
            f"        s{j}[{q}] += {src}[{full + q}] * {w}[{j * n_in + full + q}];\n"
            for j in outs
            for q in range(n_in % 4)
        )
        ends = "".join(
            f"        {{\n            float acc = ((s{j}[0] + s{j}[1]) + (s{j}[2] + s{j}[3])) "
            f"+ {b}[{j}];\n            {dst}[{j}] = {finish};\n        }}\n"
            for j in outs
        )
        return (
            f"    {{\n        {self.p}_v4 "
            + ", ".join(f"s{j} = {{0.0f, 0.0f, 0.0f, 0.0f}}" for j in outs)
            + (
                ", xv, wv;\n"
                f"        for (k = 0; k < {full}; k += 4) {{\n"
                f"            memcpy(&xv, {src} + k, sizeof xv);\n"
                + "".join(
                    f"            memcpy(&wv, {w} + {j * n_in} + k, sizeof wv);\n"
                    f"            s{j} += xv * wv;\n"
                    for j in outs
                )
                + "        }\n"
                if full
                else ";\n"
            )
            + f"{tail}{ends}    }}\n"
        )

    def quantized_dense(self, i: int, step: QuantizedDense, src: str, dst: str) -> None:
        """Integer weights (int8 ``signed char`` / int16 ``short`` tables). ``input_bits`` 0:
        each weight becomes ``(float)(q - zp) * scale`` on the fly and is accumulated as in
        :meth:`dense`. 8: the row is quantized to int8 (``s = max|x| / 127``, ties to even,
        clipped to +-127), products summed exactly in integers, then
        ``(float)sum * (s * scale) + bias``; as runtime ``_dynamic_matmul`` in device mode."""
        n_in, n_out = step.n_inputs, step.n_outputs
        int8 = step.weights.dtype == np.int8
        ctype, rd = ("signed char", "FEDGE_RD_I8") if int8 else ("short", "FEDGE_RD_I16")
        self.int_reads.add(rd)
        w, b = self.name(i, "w"), self.name(i, "b")
        self.tables.append(_table(w, ctype, step.weights))
        self.tables.append(_table(b, "float", step.bias))
        # Per-tensor parameters are literals; per-channel ones are tables. Zero points are
        # stored in the weights' type (the IR keeps them within its range).
        if step.scale.shape[0] == 1:
            scale = _f32(step.scale[0])
            zp = int(step.zero_point[0])
            zp_of = f" - {zp}" if zp > 0 else (f" + {-zp}" if zp < 0 else "")
        else:
            sc, zpt = self.name(i, "scale"), self.name(i, "zp")
            self.tables.append(_table(sc, "float", step.scale))
            scale = f"FEDGE_RD_F32({sc}, j)"
            zp_of = ""
            if np.any(step.zero_point != 0):
                self.tables.append(_table(zpt, ctype, step.zero_point))
                zp_of = f" - {rd}({zpt}, j)"
        # int8 - zp fits a 16-bit int; int16 - zp needs long (on AVR, int is 16 bits).
        wide = "int" if int8 else "long"
        centred = f"({wide}){rd}({w}, k * {n_out} + j){zp_of}"
        finish = self.finish(step.activation)
        apply = (
            ""
            if step.activation is Activation.IDENTITY
            else f"    for (j = 0; j < {n_out}; ++j) {{\n"
            f"        float acc = {dst}[j];\n        {dst}[j] = {finish};\n    }}\n"
        )
        if step.input_bits == 0:  # dequantized weights in Dense's lanes and order

            def weight(k: str) -> str:
                return f"((float)(({wide}){rd}({w}, ({k}) * {n_out} + j){zp_of}) * {scale})"

            self.body.append(
                f"    for (j = 0; j < {n_out}; ++j) {{\n        float acc;\n"
                + _scalar_dot(n_in, lambda k: f"{src}[{k}]", weight)
                + f"        {dst}[j] = acc + FEDGE_RD_F32({b}, j);\n    }}\n{apply}"
            )
            return
        # The exact integer sums need 127 * sum_k |w[k][j] - zp[j]| in the accumulator: `long`
        # (32 bits at least) when that fits, else `long long` (64 bits, C99).
        centred_abs = np.abs(step.weights.astype(np.int64) - step.zero_point.astype(np.int64))
        bound = 127 * int(centred_abs.sum(axis=0).max())
        acc_t = "long" if bound <= 2**31 - 1 else "long long"
        self.body.append(
            f"    {{  /* dynamic int8 inputs: one scale per row */\n"
            f"        float m = 0.0f, s;\n"
            f"        {acc_t} sum[{n_out}];  /* |sum| <= {bound} */\n"
            f"        for (k = 0; k < {n_in}; ++k) {{\n"
            f"            float v = {src}[k] < 0.0f ? -{src}[k] : {src}[k];\n"
            f"            if (v > m || v != v) m = v;  /* NaN wins, as numpy's max */\n"
            f"        }}\n"
            f"        s = m / 127.0f;\n"
            f"        if (s == 0.0f) s = 1.0f;\n"
            f"        for (j = 0; j < {n_out}; ++j) sum[j] = 0;\n"
            f"        for (k = 0; k < {n_in}; ++k) {{\n"
            f"            float r = {src}[k] / s;\n"
            f"            int q = 0;  /* NaN (the row holds NaN or +-Inf): the outputs are NaN */\n"
            f"            if (r >= 127.0f) {{\n"
            f"                q = 127;\n"
            f"            }} else if (r <= -127.0f) {{\n"
            f"                q = -127;\n"
            f"            }} else if (r == r) {{  /* round half to even, as rint */\n"
            f"                float f;\n"
            f"                q = (int)r;\n"
            f"                f = r - (float)q;  /* exact */\n"
            f"                if (f > 0.5f || (f == 0.5f && q % 2 != 0)) ++q;\n"
            f"                else if (f < -0.5f || (f == -0.5f && q % 2 != 0)) --q;\n"
            f"            }}\n"
            f"            if (q == 0) continue;\n"
            f"            for (j = 0; j < {n_out}; ++j) sum[j] += q * ({centred});\n"
            f"        }}\n"
            f"        for (j = 0; j < {n_out}; ++j) {{\n"
            f"            {dst}[j] = (float)sum[j] * (s * {scale}) + FEDGE_RD_F32({b}, j);\n"
            f"        }}\n"
            f"    }}\n{apply}"
        )

    def trees(self, i: int, step: TreeEnsemble, src: str, dst: str) -> None:
        if self.layout == "inline":
            self.inline_trees(i, step, src, dst)
            return
        n = self.name
        tables = compact_trees(step)
        top_ref = max(int(tables.child.max(initial=0)), int(tables.roots.max()))
        ref_type, ref_rd, _ = unsigned_type(top_ref)
        feat_type, feat_rd, _ = unsigned_type(int(tables.feature.max(initial=0)))
        base_type, base_rd, _ = unsigned_type(int(tables.node_base.max(initial=0)))
        off_type, off_rd, _ = unsigned_type(step.n_outputs)
        # float16 leaves: compact_trees deduplicated them as float32, which holds them exactly.
        half = step.leaf_values.dtype == np.float16
        leaf_text, leaf_rd = self.ftable_text(
            n(i, "leaves"), tables.leaves.astype(np.float16) if half else tables.leaves
        )
        base_text, _ = self.ftable_text(n(i, "base"), step.base_score)
        walk_tables = [
            _table(n(i, "node_base"), base_type, tables.node_base),
            _table(n(i, "roots"), ref_type, tables.roots),
            _table(n(i, "feature"), feat_type, tables.feature),
            _table(n(i, "threshold"), "float", tables.threshold),
            _table(n(i, "child"), ref_type, tables.child),
        ]
        if tables.missing_bit:
            mask = tables.missing_bit - 1
            missing = f"(int)(fm >> {tables.missing_bit.bit_length() - 1})"
        else:
            mask = (1 << 32) - 1
            walk_tables.append(_table(n(i, "missing_left"), "unsigned char", tables.missing_left))
            missing = f"(int)FEDGE_RD_U8({n(i, 'missing_left')}, g)"
        # Hosts with GNU C vectors evaluate small trees by bitvectors; others walk the nodes.
        bv = bitvec.bitvector_trees(step, tables.leaf_row)
        V = f"{self.p.upper()}_VECTORS"
        if bv is not None:
            bv_tables, bv_names = bitvec.bitvector_tables(
                bv, n(i, ""), _table, vec=self.p, off_rd=off_rd, value_rd=leaf_rd
            )
            walk_tables = [f"#if !{V}\n", *walk_tables, "#else\n", *bv_tables, "#endif\n"]
        offsets = _table(n(i, "offset"), off_type, step.tree_offset)
        self.tables += [*walk_tables, leaf_text, offsets, base_text]
        cmp = "<=" if step.comparison is Comparison.LE else "<"
        info = _TreeInfo(
            i,
            step,
            tables.limit,
            ref_rd,
            base_rd,
            off_rd,
            feat_rd,
            mask,
            missing,
            cmp,
            src,
            n(i, ""),
            leaf_rd,
            n(i, "bits_rows") if bv is not None and i == len(self.model.steps) - 1 else "",
        )
        self.last_tree = info
        width, lim = step.leaf_width, f"{tables.limit}u"
        start, finish = _accumulate(step, dst, n(i, "base"), leaf_rd)
        tl = range(TREE_LANES)
        leaves = n(i, "leaves")
        adds = "".join(
            f"        out = {off_rd}({n(i, 'offset')}, t + {q});\n"
            f"        for (k = 0; k < {width}; ++k) {dst}[out + k] += "
            f"{leaf_rd}({leaves}, (c{q} - {lim}) * {width} + k);\n"
            for q in tl
        )
        walk = (
            f"    nan = 0;  /* rows without NaN take the walk without missing-value rules */\n"
            f"    for (k = 0; k < {step.n_features}; ++k) nan |= {src}[k] != {src}[k];\n"
            f"    for (t = 0; t + {TREE_LANES} <= {step.n_trees}; t += {TREE_LANES}) {{\n"
            f"        /* {TREE_LANES} trees side by side, added in order */\n"
            f"        unsigned long "
            + ", ".join(f"b{q} = {base_rd}({n(i, 'node_base')}, t + {q})" for q in tl)
            + ";\n        unsigned long "
            + ", ".join(f"c{q} = {ref_rd}({n(i, 'roots')}, t + {q})" for q in tl)
            + ";\n        long out;\n"
            + "        if (nan) {\n"
            + _lane_walk(
                info, [(src, f"b{q}") for q in tl], "        ", first=False, nan_free=False
            )
            + "        } else {\n"
            + _lane_walk(info, [(src, f"b{q}") for q in tl], "        ", first=False, nan_free=True)
            + "        }\n"
            + adds
            + f"    }}\n"
            f"    for (; t < {step.n_trees}; ++t) {{\n"
            f"        unsigned long base = {base_rd}({n(i, 'node_base')}, t);\n"
            f"        unsigned long ref = {ref_rd}({n(i, 'roots')}, t);\n"
            f"        long out = {off_rd}({n(i, 'offset')}, t);\n"
            f"        while (ref < {lim}) {{\n"
            f"            unsigned long g = base + ref;\n"
            f"{_split(info, 'v', f'{src}[fm & {mask}ul]', '            ')}"
            f"            ref = {ref_rd}({n(i, 'child')}, 2 * g + !go_left);\n"
            f"        }}\n"
            f"        ref -= {lim};\n"
            f"        for (k = 0; k < {width}; ++k) {{\n"
            f"            {dst}[out + k] += {leaf_rd}({leaves}, ref * {width} + k);\n"
            f"        }}\n"
            f"    }}\n"
        )
        if bv is None:
            self.body.append(start + walk + finish)
            return
        self.bitvectors = True
        helpers = bitvec.row_function(bv_names, step, n(i, "bits_row"))
        if info.bitvectors:
            helpers += bitvec.rows_function(bv_names, step, info.bitvectors)
        self.helpers.append(f"#if {V}\n{helpers}#endif\n")
        call = f"    {n(i, 'bits_row')}({src}, {dst});\n"
        self.body.append(f"{start}#if {V}\n{call}#else\n{walk}#endif\n{finish}")

    def inline_trees(self, i: int, step: TreeEnsemble, src: str, dst: str) -> None:
        """One flat static function per tree: labelled splits and gotos, no nesting, so any
        depth compiles; trees are called in order, so sums are the table layout's."""
        threshold = step.device_thresholds()
        cmp = "<=" if step.comparison is Comparison.LE else "<"
        leaves = step.leaf_values.astype(np.float32)
        base = self.name(i, "base")
        base_rd = self.ftable(base, step.base_score)
        calls = []
        for t in range(step.n_trees):
            fn = self.name(i, f"tree{t}")
            off = int(step.tree_offset[t])
            lines = [f"static void {fn}(const float *x, float *acc)\n{{\n    (void)x;\n"]
            stack, order, used_leaves = [int(step.roots[t])], [], []
            while stack:  # depth-first, iterative
                ref = stack.pop()
                if ref < 0:
                    if ref not in used_leaves:
                        used_leaves.append(ref)
                    continue
                order.append(ref)
                stack += [int(step.right[ref]), int(step.left[ref])]
            root = int(step.roots[t])

            def target(ref: int) -> str:
                return f"n{ref}" if ref >= 0 else f"l{~ref}"

            for k, node in enumerate(order):
                label = "" if k == 0 and node == root else f"n{node}: "
                f, th = int(step.feature[node]), _f32(threshold[node])
                miss = "1" if step.missing_left[node] else "0"
                lines.append(
                    f"    {label}if (x[{f}] != x[{f}] ? {miss} : x[{f}] {cmp} {th}) "
                    f"goto {target(int(step.left[node]))};\n"
                    f"    goto {target(int(step.right[node]))};\n"
                )
            for ref in used_leaves:
                label = "" if ref == root else f"l{~ref}: "
                adds = " ".join(f"acc[{off + k}] += {_f32(v)};" for k, v in enumerate(leaves[~ref]))
                lines.append(f"    {label}{adds} return;\n")
            lines.append("}\n")
            self.helpers.append("".join(lines))
            calls.append(f"    {fn}({src}, {dst});\n")
        start, finish = _accumulate(step, dst, base, base_rd)
        self.body.append(start + "".join(calls) + finish)

    def quantized_trees(self, i: int, step: QuantizedTrees, src: str, dst: str) -> None:
        """Integer bins, comparisons and sums, one rescale (see :mod:`.quantized_trees`)."""
        from fedge.deployment.formats.c.quantized_trees import emit_quantized_trees

        emit_quantized_trees(self, i, step, src, dst)

    def step(self, i: int, step: Step, src: str, dst: str) -> None:
        handlers = {
            Impute: self.impute,
            Affine: self.affine,
            Linear: self.dense,
            Dense: self.dense,
            QuantizedDense: self.quantized_dense,
            TreeEnsemble: self.trees,
            QuantizedTrees: self.quantized_trees,
        }
        handler = handlers.get(type(step))
        if handler is None:  # a new IR step without a C handler must fail loudly
            raise UnsupportedModelError(f"the C backend cannot emit {type(step).__name__} steps")
        handler(i, step, src, dst)  # type: ignore[operator]


def _scalar_dot(n_in: int, x: Callable[[str], str], w: Callable[[str], str]) -> str:
    """Device mode's dot product as four scalar chains side by side (see
    :meth:`_Emitter.dense`): ``acc = (l0 + l1) + (l2 + l3)``. ``x(k)`` and ``w(k)`` are C
    expressions of input ``k`` and its weight for the output being computed."""
    full = n_in - n_in % 4
    lanes = range(4)
    tail = "".join(
        f"            s{q} += {x(str(full + q))} * {w(str(full + q))};\n" for q in range(n_in % 4)
    )
    return (
        "        {\n            float "
        + ", ".join(f"s{q} = 0.0f" for q in lanes)
        + ";\n"
        + (
            f"            for (k = 0; k < {full}; k += 4) {{\n"
            + "".join(
                f"                s{q} += {x(f'k + {q}')} * {w(f'k + {q}')};\n" for q in lanes
            )
            + "            }\n"
            if full
            else ""
        )
        + f"{tail}"
        "            acc = (s0 + s1) + (s2 + s3);\n        }\n"
    )


def _split(info: _TreeInfo, var: str, load: str, indent: str, nan_free: bool = False) -> str:
    """Statements deciding ``go_left`` at node ``g`` for the input value ``load``, without a
    branch: a NaN fails every comparison, so the missing-value rule is or-ed in (left out
    when the caller knows the row has no NaN)."""
    th = f"FEDGE_RD_F32({info.step_name('threshold')}, g)"
    missing = "" if nan_free else f" | (({var} != {var}) & {info.missing})"
    return (
        f"{indent}unsigned long fm = {info.feat_rd}({info.step_name('feature')}, g);\n"
        f"{indent}float {var} = {load};\n"
        f"{indent}int go_left = ({var} {info.cmp} {th}){missing};\n"
    )


def _lane_walk(
    info: _TreeInfo, lanes: list[tuple[str, str]], ind: str, *, first: bool, nan_free: bool
) -> str:
    """Walk lane q's reference ``c<q>`` (input row ``x``, tree base ``b``, one pair per lane)
    down to a leaf, all lanes one level per pass with no branch but the loop's. A lane at a
    leaf keeps it, reading node 0 in the meantime (always a valid index). ``first``: every
    lane starts at a split (a do-while saves one test). ``nan_free``: the rows hold no NaN."""
    lim = f"{info.limit}u"
    steps = "".join(
        f"{ind}    {{\n"
        f"{ind}        unsigned long g = c{q} < {lim} ? {b} + c{q} : 0, next;\n"
        f"{_split(info, 'v', f'{x}[fm & {info.feat_mask}ul]', ind + '        ', nan_free)}"
        f"{ind}        next = {info.ref_rd}({info.step_name('child')}, 2 * g + !go_left);\n"
        f"{ind}        c{q} = c{q} < {lim} ? next : c{q};\n"
        f"{ind}    }}\n"
        for q, (x, b) in enumerate(lanes)
    )
    test = " | ".join(f"(c{q} < {lim})" for q in range(len(lanes)))
    if first:
        return f"{ind}do {{\n{steps}{ind}}} while ({test});\n"
    return f"{ind}while ({test}) {{\n{steps}{ind}}}\n"


def _accumulate(
    step: TreeEnsemble, dst: str, base: str, rd: str = "FEDGE_RD_F32"
) -> tuple[str, str]:
    """Code before and after the trees add their leaves to ``dst``, in device mode's order:
    sum: ``0 + base``, then the trees; mean: ``0``, the trees, ``/ n_trees``, ``+ base``."""
    mean = step.aggregation is Aggregation.MEAN
    add_base = f"        {dst}[j] += {rd}({base}, j);\n"
    start = (
        f"    for (j = 0; j < {step.n_outputs}; ++j) {{\n"
        f"        {dst}[j] = 0.0f;\n{'' if mean else add_base}    }}\n"
    )
    finish = (
        f"    for (j = 0; j < {step.n_outputs}; ++j) {{\n"
        f"        {dst}[j] /= {_f32(step.n_trees)};\n{add_base}    }}\n"
        if mean
        else ""
    )
    return start, finish


def _steps_function(signature: str, width: int, body: list[str], src: str, n: int, out: str) -> str:
    """A function running step bodies on one row (scratch buffers a/b), then copying the
    ``n`` values left in ``src`` to ``out``."""
    return (
        f"{signature}\n{{\n"
        f"    float a[{width}], b[{width}];\n    long j, k, t;\n    int nan;\n"
        f"    (void)a; (void)b; (void)j; (void)k; (void)t; (void)nan;\n"
        + "".join(body)
        + f"    for (j = 0; j < {n}; ++j) {out}[j] = {src}[j];\n}}\n"
    )


def _width(model: Model) -> int:
    return max([model.n_features] + [s.n_outputs for s in model.steps])


def _link_code(model: Model, p: str, n_out: int, n_classes: int) -> tuple[str, set[str]]:
    """Body of <prefix>_predict_proba from scores s[] into proba[], and the math it calls."""
    link = model.link
    if link is Link.IDENTITY:
        return f"    for (j = 0; j < {n_out}; ++j) proba[j] = s[j];\n", set()
    if link is Link.LOGISTIC:
        return (
            f"    proba[1] = {p}_logistic(s[0]);\n    proba[0] = 1.0f - proba[1];\n",
            {"logistic"},
        )
    if link is Link.SOFTMAX:
        return (
            f"    float m = s[0], total;\n"
            f"    for (j = 1; j < {n_out}; ++j) if (s[j] > m) m = s[j];\n"
            f"    for (j = 0; j < {n_out}; ++j) proba[j] = {p}_exp(s[j] - m);\n"
            f"    total = proba[0];\n"
            f"    for (j = 1; j < {n_out}; ++j) total = total + proba[j];\n"
            f"    for (j = 0; j < {n_out}; ++j) proba[j] = proba[j] / total;\n",
            {"exp"},
        )
    clip = "(s[j] < -1.0f ? -1.0f : (s[j] > 1.0f ? 1.0f : s[j]))"
    if link is Link.MODIFIED_HUBER and n_out == 1:
        return (
            f"    proba[1] = ({clip.replace('[j]', '[0]')} + 1.0f) / 2.0f;\n"
            f"    proba[0] = 1.0f - proba[1];\n",
            set(),
        )
    if link in (Link.LOGISTIC_OVR, Link.MODIFIED_HUBER):
        each = f"{p}_logistic(s[j])" if link is Link.LOGISTIC_OVR else f"({clip} + 1.0f) / 2.0f"
        return (
            f"    float total;\n"
            f"    for (j = 0; j < {n_out}; ++j) proba[j] = {each};\n"
            f"    total = proba[0];\n"
            f"    for (j = 1; j < {n_out}; ++j) total = total + proba[j];\n"
            f"    if (total == 0.0f) {{\n"
            f"        for (j = 0; j < {n_out}; ++j) proba[j] = 1.0f;\n"
            f"        total = {_f32(n_classes)};\n"
            f"    }}\n"
            f"    for (j = 0; j < {n_out}; ++j) proba[j] = proba[j] / total;\n",
            {"logistic"} if link is Link.LOGISTIC_OVR else set(),
        )
    raise UnsupportedModelError(f"the C backend has no code for link {link.value!r}")


LAYOUTS = ("table", "inline")
# Above this many splits gcc -O2 takes minutes on inlined trees (measured: a 100-tree,
# depth-10 forest, ~140k splits, did not compile in 120 s); the table layout stays fast.
MAX_INLINE_SPLITS = 20_000


def emit_c(model: Model, prefix: str = "model", *, layout: str = "table") -> CSource:
    """Generate the C header and source of ``model`` with every symbol prefixed by ``prefix``.

    ``layout`` picks how tree ensembles are written: ``table`` (compact node tables walked
    by a loop: small code, fast to compile) or ``inline`` (each tree as straight-line code
    with its constants inlined: more code, no table reads). Both compute the same bits.

    Raises
    ------
    InvalidInputError
        If ``prefix`` is not a valid C identifier.
    UnsupportedModelError
        If a step or link has no C code.
    """
    p = _check_prefix(prefix)
    if layout not in LAYOUTS:
        raise InvalidInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    splits = sum(s.n_nodes for s in model.steps if isinstance(s, TreeEnsemble | QuantizedTrees))
    if layout == "inline" and splits > MAX_INLINE_SPLITS:
        raise InvalidInputError(
            f"the inline layout is for small ensembles (at most {MAX_INLINE_SPLITS:,} splits; "
            f"this model has {splits:,}): compilers take minutes on more. Use layout='table'"
        )
    P = p.upper()
    em = _Emitter(model, p, layout)
    width = _width(model)
    steps = model.steps
    bufs = ("a", "b")
    src = "x"
    for i, step in enumerate(steps):
        dst = bufs[i % 2]
        em.step(i, step, src, dst)
        src = dst
    n_out, n_classes = model.n_outputs, model.n_classes
    classification = model.task is Task.CLASSIFICATION
    has_proba = classification and model.link is not Link.NONE
    link_body, link_math = _link_code(model, p, n_out, n_classes) if has_proba else ("", set())
    math = em.math | link_math | ({"exp"} if model.link is Link.EXP else set())
    scores_fn = _steps_function(
        f"void {p}_decision_function(const float *x, float *scores)",
        width,
        em.body,
        src,
        n_out,
        "scores",
    )
    functions = [scores_fn]
    if has_proba:
        functions.append(
            f"static void {p}_proba_from_scores(const float *s, float *proba)\n{{\n"
            f"    long j;\n{link_body}    (void)j;\n}}\n"
            f"void {p}_predict_proba(const float *x, float *proba)\n{{\n"
            f"    float s[{n_out}];\n"
            f"    {p}_decision_function(x, s);\n    {p}_proba_from_scores(s, proba);\n}}\n"
        )
    if classification:
        functions.append(_predict_label(model, p, n_out, n_classes))
    else:
        value = f"{p}_exp(s[j])" if model.link is Link.EXP else "s[j]"
        functions.append(
            f"static void {p}_values_from_scores(const float *s, float *y)\n{{\n"
            f"    long j;\n    for (j = 0; j < {n_out}; ++j) y[j] = {value};\n}}\n"
            f"void {p}_predict(const float *x, float *y)\n{{\n"
            f"    float s[{n_out}];\n"
            f"    {p}_decision_function(x, s);\n    {p}_values_from_scores(s, y);\n}}\n"
        )
    functions.append(_batch_functions(model, p, has_proba, classification, em, width))
    math_code = _device_math(p, math) + (_half_code(p) if em.half else "")
    source = (
        f"/* Generated by fedge from {_source_name(model)}. Do not edit. */\n"
        # half; exp's bit scaling; bitvector masks
        + ("#include <stdint.h>\n" if em.half or math or em.bitvectors else "")
        + f'#include <math.h>\n#include "{p}.h"\n\n'
        + (_vector_prelude(p, em.bitvectors) if em.vectors or em.bitvectors else "")
        + "#ifndef FEDGE_CONST\n#define FEDGE_CONST static const\n#endif\n"
        + "".join(
            f"#ifndef {m}\n#define {m}(table, i) ((table)[i])\n#endif\n"
            for m in (
                "FEDGE_RD_F32",
                "FEDGE_RD_U8",
                "FEDGE_RD_U16",
                "FEDGE_RD_U32",
                *sorted(em.int_reads),
            )
        )
        + (f"#define {P}_RD_F16(table, i) {p}_half(FEDGE_RD_U16(table, i))\n" if em.half else "")
        + "\n"
        + "".join(em.tables)
        + "\n"
        + math_code
        + "".join(em.helpers)
        + "\n".join(functions)
    )
    header = _header(model, p, P, n_out, n_classes, has_proba, classification)
    return CSource(p, header, source, model.n_features, n_out, n_classes, has_proba, model.task)


def _vector_prelude(p: str, masks: bool = False) -> str:
    """``<P>_VECTORS``: dot products as GNU C vectors on hosts with SSE or NEON (4 floats, one
    IEEE operation per lane: the scalar code's bits), and small trees by bitvectors (``masks``:
    the ``<p>_u4`` type of four leaf masks). Off where tables are read through a user's
    ``FEDGE_RD_F32`` (AVR's flash), and with ``-DFEDGE_NO_VECTORS``."""
    P = p.upper()
    u4 = f"typedef uint32_t {p}_u4 __attribute__((vector_size(16)));\n" if masks else ""
    return (
        f"#if !defined(FEDGE_NO_VECTORS) && !defined(FEDGE_RD_F32) && defined(__GNUC__) && \\\n"
        f"    (defined(__SSE__) || defined(__ARM_NEON) || defined(__ARM_NEON__))\n"
        f"#define {P}_VECTORS 1\n#include <string.h>\n"
        f"typedef float {p}_v4 __attribute__((vector_size(16)));\n{u4}"
        f"#else\n#define {P}_VECTORS 0\n#endif\n"
    )


def _predict_label(model: Model, p: str, n_out: int, n_classes: int) -> str:
    rule = model.predict_from
    if rule is PredictFrom.PROBABILITIES:
        width = n_classes if n_out > 1 else 2
        decide = "    return v[1] > 0.5f ? 1 : 0;\n" if n_out == 1 else _argmax(n_classes)
        body = f"    float v[{width}];\n    {p}_proba_from_scores(s, v);\n{decide}"
    else:
        op = ">=" if rule is PredictFrom.SCORES_INCLUSIVE else ">"
        decide = f"    return v[0] {op} 0.0f ? 1 : 0;\n" if n_out == 1 else _argmax(n_out)
        body = f"    const float *v = s;\n{decide}"
    return (
        f"static int {p}_label_from_scores(const float *s)\n{{\n{body}}}\n"
        f"int {p}_predict(const float *x)\n{{\n    float s[{n_out}];\n"
        f"    {p}_decision_function(x, s);\n    return {p}_label_from_scores(s);\n}}\n"
    )


def _argmax(n: int) -> str:
    # The first maximum wins, as numpy's argmax.
    return (
        f"    int best = 0;\n    long j;\n"
        f"    for (j = 1; j < {n}; ++j) if (v[j] > v[best]) best = (int)j;\n"
        f"    return best;\n"
    )


TREE_LANES = 8  # trees one row walks side by side
NARROW_OUTPUTS = 8  # dense layers this narrow advance every output's vector in one pass
BLOCK = 32  # rows a batch walks through each tree together (a multiple of the lanes)


def _batch_functions(
    model: Model, p: str, has_proba: bool, classification: bool, em: _Emitter, width: int
) -> str:
    """Batch entry points. Tree models walk blocks of rows through each tree one level at a
    time (independent work for the CPU); each row still adds its trees in order, so every
    output has the same bits as the one-row functions."""
    nf, no, nc = model.n_features, model.n_outputs, model.n_classes
    out = [_scores_batch(model, p, em, width)]
    per_row = []
    if has_proba:
        per_row.append(
            (
                "predict_proba_batch",
                "float *proba",
                f"{p}_proba_from_scores(s + r * {no}, proba + (i0 + r) * {nc})",
            )
        )
    if classification:
        per_row.append(
            (
                "predict_batch",
                "int *labels",
                f"labels[i0 + r] = {p}_label_from_scores(s + r * {no})",
            )
        )
    else:
        per_row.append(
            (
                "predict_batch",
                "float *y",
                f"{p}_values_from_scores(s + r * {no}, y + (i0 + r) * {no})",
            )
        )
    for name, arg, call in per_row:
        out.append(
            f"void {p}_{name}(const float *x, long n, {arg})\n{{\n"
            f"    float s[{BLOCK * no}];\n    long i0, r;\n"
            f"    for (i0 = 0; i0 < n; i0 += {BLOCK}) {{\n"
            f"        long m = n - i0 < {BLOCK} ? n - i0 : {BLOCK};\n"
            f"        {p}_decision_function_batch(x + i0 * {nf}, m, s);\n"
            f"        for (r = 0; r < m; ++r) {call};\n"
            f"    }}\n}}\n"
        )
    return "\n".join(out)


LANES = 8  # rows of a block walked through one tree side by side


def _scores_batch(model: Model, p: str, em: _Emitter, width: int) -> str:
    """``decision_function_batch``. A table-layout ensemble as the last step walks blocks
    of rows through one tree at a time (the tree stays in cache), a few rows side by side
    with no branch but the loop's, so the CPU overlaps their memory reads. Rows past the end
    of the input (up to the next multiple of the lane count) repeat the block's first row
    and their sums are dropped; fewer rows than lanes take the one-row functions."""
    nf, no = model.n_features, model.n_outputs
    info = em.last_tree
    head = f"void {p}_decision_function_batch(const float *x, long n, float *scores)\n{{\n"
    if info is None or info.index != len(model.steps) - 1:
        return (
            head + f"    long i;\n    for (i = 0; i < n; ++i) {p}_decision_function(x + i * {nf}, "
            f"scores + i * {no});\n}}\n"
        )
    step, i = info.step, info.index

    def t(what: str) -> str:
        return em.name(i, what)

    prefix_fn = ""
    if i > 0:  # the steps before the trees, one row at a time, into in[r]
        prefix_fn = _steps_function(
            f"static void {p}_prefix(const float *x, float *out)",
            width,
            em.body[:i],
            info.src,
            nf,
            "out",
        )
        load = (
            f"if (r < m) {p}_prefix(x + (i0 + r) * {nf}, in[r]);\n"
            f"            row[r] = in[r < m ? r : 0];"
        )
        locals_ = f"    float in[{BLOCK}][{nf}];\n"
    else:
        load = f"row[r] = x + (i0 + (r < m ? r : 0)) * {nf};"
        locals_ = ""
    w = step.leaf_width
    lim = f"{info.limit}u"
    mean = step.aggregation is Aggregation.MEAN
    base = f"{info.leaf_rd}({t('base')}, j)"
    init = "" if mean else f"\n                o[j] += {base};"
    finish = (
        f"        for (r = 0; r < m; ++r) {{\n"
        f"            float *o = acc + r * {no};\n"
        f"            for (j = 0; j < {no}; ++j) {{\n"
        f"                o[j] /= {_f32(step.n_trees)};\n                o[j] += {base};\n"
        f"            }}\n        }}\n"
        if mean
        else ""
    )
    lanes = range(LANES)
    bits_open = bits_close = ""
    if info.bitvectors:  # hosts: ROWS rows at a time by bitvectors (BLOCK is a multiple)
        bits_open = (
            f"#if {p.upper()}_VECTORS\n"
            f"        for (r = 0; r < m; r += {bitvec.ROWS}) "
            f"{info.bitvectors}(row + r, acc + r * {no});\n#else\n"
        )
        bits_close = "#endif\n"
    walk = (
        f"                const float {', '.join(f'*x{q} = row[r + {q}]' for q in lanes)};\n"
        f"                unsigned long {', '.join(f'c{q} = 0' for q in lanes)};\n"
        + "                if (nan) {\n"
        + _lane_walk(
            info, [(f"x{q}", "base") for q in lanes], "                ", first=True, nan_free=False
        )
        + "                } else {\n"
        + _lane_walk(
            info, [(f"x{q}", "base") for q in lanes], "                ", first=True, nan_free=True
        )
        + "                }\n"
        + "".join(
            f"                for (k = 0; k < {w}; ++k) acc[(r + {q}) * {no} + off + k] += "
            f"{info.leaf_rd}({t('leaves')}, (c{q} - {lim}) * {w} + k);\n"
            for q in lanes
        )
    )
    return (
        prefix_fn
        + head
        + (
            f"{locals_}    const float *row[{BLOCK}];\n    float acc[{BLOCK * no}];\n"
            f"    long i0, r, j, k, t;\n    int nan;\n    (void)t; (void)nan;\n"
            f"    for (i0 = 0; i0 < n; i0 += {BLOCK}) {{\n"
            f"        long m = n - i0 < {BLOCK} ? n - i0 : {BLOCK};\n"
            f"        if (m < {LANES}) {{  /* a few rows: the one-row walk is cheaper */\n"
            f"            for (r = i0; r < n; ++r)\n"
            f"                {p}_decision_function(x + r * {nf}, scores + r * {no});\n"
            f"            break;\n        }}\n"
            f"        nan = 0;  /* blocks without NaN skip the missing-value rules */\n"
            f"        for (r = 0; r < {BLOCK}; ++r) {{\n"
            f"            float *o = acc + r * {no};\n"
            f"            {load}\n"
            f"            for (k = 0; k < {nf}; ++k) nan |= row[r][k] != row[r][k];\n"
            f"            for (j = 0; j < {no}; ++j) {{\n"
            f"                o[j] = 0.0f;{init}\n"
            f"            }}\n        }}\n"
            f"{bits_open}"
            f"        for (t = 0; t < {step.n_trees}; ++t) {{\n"
            f"            unsigned long base = {info.base_rd}({t('node_base')}, t);\n"
            f"            unsigned long root = {info.ref_rd}({t('roots')}, t);\n"
            f"            long off = {info.off_rd}({t('offset')}, t);\n"
            f"            if (root >= {lim}) {{  /* a single-leaf tree */\n"
            f"                for (r = 0; r < {BLOCK}; ++r) {{\n"
            f"                    for (k = 0; k < {w}; ++k) acc[r * {no} + off + k] += "
            f"{info.leaf_rd}({t('leaves')}, (root - {lim}) * {w} + k);\n"
            f"                }}\n                continue;\n            }}\n"
            f"            for (r = 0; r < m; r += {LANES}) {{  /* roots are node 0 */\n"
            f"{walk}"
            f"            }}\n        }}\n{bits_close}{finish}"
            f"        for (r = 0; r < m * {no}; ++r) scores[i0 * {no} + r] = acc[r];\n"
            f"    }}\n}}\n"
        )
    )


def _device_math(p: str, needed: set[str]) -> str:
    """The shared C text of the functions used (exp first: the others call it), prefixed so
    that two models link into one program. It calls no libm function (see
    :mod:`fedge.ir.devicemath`): only ``<math.h>``'s ``HUGE_VALF`` and the builtin ``fabsf``,
    and ``<stdint.h>``'s ``uint32_t``."""
    if not needed:
        return ""
    names = ["exp", *(n for n in ("logistic", "tanh") if n in needed)]
    code = "\n".join(devicemath.C_FUNCTIONS[n] for n in names)
    for fn in devicemath.C_FUNCTIONS:
        code = code.replace(f"fedge_{fn}(", f"{p}_{fn}(")
    return code + "\n"


def _half_code(p: str) -> str:
    """Widen a float16 bit pattern to float32, exactly (every float16 is a float32): zero,
    subnormal, normal, infinity and NaN (payload kept, as numpy's astype)."""
    return (
        f"static float {p}_half(unsigned int bits)\n{{\n"
        "    union { uint32_t u; float f; } v;\n"
        "    uint32_t sign = (uint32_t)(bits & 0x8000u) << 16;\n"
        "    uint32_t e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;\n"
        "    if (e == 0u) {  /* zero or subnormal: m * 2^-24, exact in float32 */\n"
        "        v.f = (float)m * 5.9604644775390625e-08f;\n"
        "        v.u |= sign;\n"
        "    } else if (e == 31u) {  /* infinity or NaN */\n"
        "        v.u = sign | 0x7f800000u | (m << 13);\n"
        "    } else {  /* normal: rebias the exponent from 15 to 127 */\n"
        "        v.u = sign | ((e + 112u) << 23) | (m << 13);\n"
        "    }\n"
        "    return v.f;\n}\n\n"
    )


def _source_name(model: Model) -> str:
    src = model.metadata.get("source", {})
    return f"{src.get('estimator', 'a model')} ({src.get('library', '?')})".replace("*/", "")


def _header(
    model: Model, p: str, P: str, n_out: int, n_classes: int, has_proba: bool, classification: bool
) -> str:
    guard = f"{P}_H_INCLUDED"
    lines = [
        f"/* Generated by fedge from {_source_name(model)}. Do not edit.",
        " * Inputs are float32 features; outputs follow fedge's device mode bit for bit",
        " * when compiled with -ffp-contract=off. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define {P}_N_FEATURES {model.n_features}",
        f"#define {P}_N_OUTPUTS {n_out}",
        f"#define {P}_N_CLASSES {n_classes}",
        "",
        "/* Raw scores (before the link), N_OUTPUTS floats. */",
        f"void {p}_decision_function(const float *x, float *scores);",
        f"void {p}_decision_function_batch(const float *x, long n, float *scores);",
    ]
    if has_proba:
        lines += [
            "/* Class probabilities, N_CLASSES floats. */",
            f"void {p}_predict_proba(const float *x, float *proba);",
            f"void {p}_predict_proba_batch(const float *x, long n, float *proba);",
        ]
    if classification:
        lines += [
            "/* Index of the predicted class (0 .. N_CLASSES - 1). */",
            f"int {p}_predict(const float *x);",
            f"void {p}_predict_batch(const float *x, long n, int *labels);",
        ]
    else:
        lines += [
            "/* Predicted values, N_OUTPUTS floats. */",
            f"void {p}_predict(const float *x, float *y);",
            f"void {p}_predict_batch(const float *x, long n, float *y);",
        ]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)
