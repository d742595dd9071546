"""Firmware harness for on-device verification: C sources in, parsed outputs back.

The harness compiles a batch of test rows into the image (as the float32 bit patterns, in
flash through ``FEDGE_CONST``, so PROGMEM on AVR), runs every row through the model's
``predict``, ``decision_function`` and (when present) ``predict_proba``, and writes one line per
row with every output as the hex of its 32 bits, so parsing is exact. A trailer carries the row
count and an FNV-1a checksum over every output word: a firmware that crashes, stops early or
garbles its output cannot pass. A stub with the same API but no model is the baseline that the
footprint report subtracts.

Output grammar (one line each, words are 8 lowercase hex digits)::

    FEDGE-BEGIN
    R <scores...> <probabilities...> <label or values...>     (once per row)
    I <counter total>                                         (instructions or 0)
    E <rows> <checksum>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fedge.deployment.formats.c.emit import CSource
from fedge.errors import ToolchainError
from fedge.ir.nodes import Task

__all__ = [
    "FirmwareOutput",
    "checksum",
    "firmware_source",
    "parse_output",
    "stack_usage",
    "stub_source",
    "table_bytes",
    "words_per_row",
]

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619


def words_per_row(code: CSource) -> int:
    """How many 32-bit output words the harness writes for one row."""
    classification = code.task is Task.CLASSIFICATION
    return (
        code.n_outputs
        + (code.n_classes if code.has_proba else 0)
        + (1 if classification else code.n_outputs)
    )


def checksum(words: np.ndarray) -> int:
    """FNV-1a over 32-bit words (``h = (h ^ w) * 16777619 mod 2**32``), as the harness computes."""
    h = _FNV_OFFSET
    for w in np.asarray(words, dtype=np.uint32).ravel().tolist():
        h = ((h ^ w) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _row_table(bits: np.ndarray) -> str:
    flat = [f"0x{v:08x}u" for v in bits.ravel().tolist()]
    lines = [", ".join(flat[i : i + 8]) for i in range(0, len(flat), 8)]
    body = ",\n    ".join(lines)
    return f"FEDGE_CONST uint32_t fedge_rows[{len(flat)}] = {{\n    {body}\n}};\n"


def firmware_source(code: CSource, rows: np.ndarray) -> str:
    """The harness's ``main``: every row of ``rows`` (float32, compiled in) through the model.

    Parameters
    ----------
    code : CSource
        The generated model (only its prefix and shape are used).
    rows : ndarray of shape (n_rows, n_features)
        Test rows; stored as their float32 bit patterns, so NaN and signed zeros survive.
    """
    p, nf, no = code.prefix, code.n_features, code.n_outputs
    nc = max(code.n_classes, 1)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != nf or rows.shape[0] == 0:
        raise ValueError(f"rows must have shape (n >= 1, {nf}), got {rows.shape}")
    n = rows.shape[0]
    classification = code.task is Task.CLASSIFICATION
    if classification:
        timed = f"        label = {p}_predict(x);\n"
        tail = "        fedge_word((uint32_t)(long)label);\n"
    else:
        timed = f"        {p}_predict(x, y);\n"
        tail = f"        fedge_floats(y, {no});\n"
    proba = (
        f"        {p}_predict_proba(x, proba);\n        fedge_floats(proba, {nc});\n"
        if code.has_proba
        else ""
    )
    return (
        "/* fedge device harness (generated): every compiled-in row through the model. */\n"
        "#include <stdint.h>\n#include <string.h>\n"
        f'#include "fedge_port.h"\n#include "{p}.h"\n\n'
        "#ifndef FEDGE_CONST\n#define FEDGE_CONST static const\n#endif\n"
        "#ifndef FEDGE_RD_U32\n#define FEDGE_RD_U32(t, i) ((t)[i])\n#endif\n\n"
        + _row_table(rows.view(np.uint32))
        + "\nstatic uint32_t fedge_sum = 2166136261u;\n\n"
        "static void fedge_hex(uint32_t w, char end)\n{\n"
        "    char buf[10];\n    int i;\n"
        "    for (i = 7; i >= 0; --i) {\n"
        "        buf[i] = (char)((w & 15u) < 10u ? '0' + (w & 15u) : 'a' + (w & 15u) - 10u);\n"
        "        w >>= 4;\n    }\n"
        "    buf[8] = end;\n    buf[9] = '\\0';\n    fedge_port_write(buf);\n}\n\n"
        "static void fedge_word(uint32_t w)\n{\n"
        "    fedge_sum = (fedge_sum ^ w) * 16777619u;\n    fedge_hex(w, ' ');\n}\n\n"
        "static void fedge_floats(const float *v, int n)\n{\n"
        "    uint32_t w;\n    int i;\n"
        "    for (i = 0; i < n; ++i) {\n"
        "        memcpy(&w, &v[i], sizeof w);\n        fedge_word(w);\n    }\n}\n\n"
        "int main(void)\n{\n"
        f"    float x[{nf}], scores[{no}], proba[{nc}], y[{no}];\n"
        "    uint32_t total = 0, t0, w;\n    long r, j;\n    int label = 0;\n"
        "    (void)proba;\n    (void)y;\n    (void)label;\n"
        "    fedge_port_init();\n"
        '    fedge_port_write("FEDGE-BEGIN\\n");\n'
        f"    for (r = 0; r < {n}L; ++r) {{\n"
        f"        for (j = 0; j < {nf}L; ++j) {{\n"
        f"            w = FEDGE_RD_U32(fedge_rows, r * {nf}L + j);\n"
        "            memcpy(&x[j], &w, sizeof w);\n        }\n"
        "        t0 = fedge_port_counter();\n"
        f"{timed}"
        "        total += fedge_port_counter() - t0;\n"
        f"        {p}_decision_function(x, scores);\n"
        '        fedge_port_write("R ");\n'
        f"        fedge_floats(scores, {no});\n{proba}{tail}"
        '        fedge_port_write("\\n");\n    }\n'
        "    fedge_port_write(\"I \");\n    fedge_hex(total, '\\n');\n"
        '    fedge_port_write("E ");\n'
        f"    fedge_hex({n}u, ' ');\n    fedge_hex(fedge_sum, '\\n');\n"
        "    fedge_port_exit(0);\n    return 0;\n}\n"
    )


def stub_source(code: CSource) -> str:
    """A model with the same API that computes nothing: the footprint baseline."""
    p, no, nc = code.prefix, code.n_outputs, max(code.n_classes, 1)
    parts = [
        f'/* fedge footprint baseline: the API of {p}.h without a model. */\n#include "{p}.h"\n',
        f"void {p}_decision_function(const float *x, float *scores)\n{{\n"
        f"    long j;\n    (void)x;\n    for (j = 0; j < {no}; ++j) scores[j] = 0.0f;\n}}\n",
    ]
    if code.has_proba:
        parts.append(
            f"void {p}_predict_proba(const float *x, float *proba)\n{{\n"
            f"    long j;\n    (void)x;\n    for (j = 0; j < {nc}; ++j) proba[j] = 0.0f;\n}}\n"
        )
    if code.task is Task.CLASSIFICATION:
        parts.append(f"int {p}_predict(const float *x)\n{{\n    (void)x;\n    return 0;\n}}\n")
    else:
        parts.append(
            f"void {p}_predict(const float *x, float *y)\n{{\n"
            f"    long j;\n    (void)x;\n    for (j = 0; j < {no}; ++j) y[j] = 0.0f;\n}}\n"
        )
    return "".join(parts)


@dataclass(frozen=True)
class FirmwareOutput:
    """What one firmware run reported, parsed and checked."""

    scores: np.ndarray  # (n, n_outputs) float32
    proba: np.ndarray | None  # (n, n_classes) float32
    predict: np.ndarray  # (n,) int32 class indices, or (n, n_outputs) float32 values
    counter_total: int  # the harness's counter summed over predict calls (0: no counter)


def parse_output(text: str, code: CSource, n_rows: int, *, where: str) -> FirmwareOutput:
    """Parse and check a harness run: the row count, every word, and the checksum.

    Raises
    ------
    ToolchainError
        If the output is truncated, malformed, or its checksum does not match (``where``
        names the target in the message).
    """
    lines = text.splitlines()
    try:
        start = lines.index("FEDGE-BEGIN")
    except ValueError:
        raise ToolchainError(
            f"the firmware on {where} printed no output (crashed before main?): {_tail(text)}"
        ) from None
    body = lines[start + 1 :]
    per_row = words_per_row(code)
    rows = [ln.split()[1:] for ln in body if ln.startswith("R ")]
    trailer = [ln.split()[1:] for ln in body if ln.startswith("E ")]
    counter = [ln.split()[1:] for ln in body if ln.startswith("I ")]
    if not trailer or len(rows) != n_rows:
        raise ToolchainError(
            f"the firmware on {where} stopped early: {len(rows)} of {n_rows} rows reported"
            f"{'' if trailer else ', no trailer'}: {_tail(text)}"
        )
    try:
        words = np.array(
            [[int(w, 16) for w in r] for r in rows if len(r) == per_row], dtype=np.uint32
        ).reshape(-1, per_row)
        n_reported, reported_sum = (int(w, 16) for w in trailer[-1])
        total = int(counter[-1][0], 16) if counter else 0
    except ValueError:
        raise ToolchainError(
            f"the firmware on {where} wrote malformed output: {_tail(text)}"
        ) from None
    if words.shape[0] != n_rows or n_reported != n_rows:
        raise ToolchainError(
            f"the firmware on {where} wrote {words.shape[0]} complete rows of {n_rows} "
            f"(trailer says {n_reported})"
        )
    if checksum(words) != reported_sum:
        raise ToolchainError(
            f"the output checksum from {where} does not match (0x{checksum(words):08x} computed, "
            f"0x{reported_sum:08x} reported): the output was corrupted"
        )
    no, nc = code.n_outputs, code.n_classes
    floats = words.view(np.float32)
    scores = floats[:, :no].copy()
    at = no
    proba = None
    if code.has_proba:
        proba = floats[:, at : at + nc].copy()
        at += nc
    if code.task is Task.CLASSIFICATION:
        predict = words[:, at].astype(np.int64).astype(np.int32)
    else:
        predict = floats[:, at:].copy()
    return FirmwareOutput(scores, proba, predict, total)


def _tail(text: str, limit: int = 400) -> str:
    text = text.strip()
    return repr(text[-limit:]) if text else "(nothing)"


_FUNC_DEF = re.compile(
    r"^(?:static\s+)?(?:inline\s+)?[A-Za-z_][\w \*]*?\b(\w+)\s*\([^;{]*\)\s*\{?$"
)
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def _call_graph(c_source: str) -> dict[str, set[str]]:
    """Which function of a generated C file calls which (functions start at column 0)."""
    bodies: dict[str, list[str]] = {}
    current: str | None = None
    for line in c_source.splitlines():
        if current is None:
            m = _FUNC_DEF.match(line)
            if m and not line.startswith((" ", "#", "}")):
                current = m.group(1)
                bodies[current] = [line[m.end(1) :]]
                if line.rstrip().endswith("}") and line.count("{") == line.count("}"):
                    current = None
            continue
        bodies[current].append(line)
        if line.startswith("}"):
            current = None
    return {
        name: {c for c in _CALL.findall("\n".join(body)) if c in bodies and c != name}
        for name, body in bodies.items()
    }


def stack_usage(su_text: str, c_source: str, entries: list[str]) -> int | None:
    """Worst-case stack of ``entries`` from gcc's ``-fstack-usage`` output and the call graph.

    Each function's frame comes from the ``.su`` file (functions the compiler inlined have no
    entry and count 0: their frame is part of their caller's); the call graph comes from the
    generated source. The worst case is the deepest chain from any entry point. Calls into the
    compiler's runtime (soft-float helpers) are leaves and not counted. None when no frame is
    known.
    """
    frames: dict[str, int] = {}
    for line in su_text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].strip().isdigit():
            name = parts[0].rsplit(":", 1)[-1].strip()
            frames[name] = max(frames.get(name, 0), int(parts[1]))
    if not frames:
        return None
    graph = _call_graph(c_source)
    memo: dict[str, int] = {}

    def deepest(name: str, seen: frozenset[str]) -> int:
        if name in memo:
            return memo[name]
        below = [deepest(c, seen | {name}) for c in graph.get(name, ()) if c not in seen]
        memo[name] = frames.get(name, 0) + max(below, default=0)
        return memo[name]

    return max((deepest(e, frozenset()) for e in entries if e in graph or e in frames), default=0)


_TABLE = re.compile(r"^FEDGE_CONST\s+([\w ]+?)\s+\w+\[(\d+)\]", re.MULTILINE)


def table_bytes(c_source: str, *, int_bytes: int = 4, long_bytes: int = 4) -> int:
    """Bytes of every ``FEDGE_CONST`` table in generated C (a lower bound on its flash).

    Used when a model is too large to compile for a target at all (AVR refuses arrays over
    32 KiB), so the footprint message still has a number.
    """
    total = 0
    for ctype, count in _TABLE.findall(c_source):
        words = ctype.split()
        sized = re.search(r"(\d+)_t$", ctype)
        if sized:
            size = int(sized.group(1)) // 8
        elif "char" in words:
            size = 1
        elif "short" in words:
            size = 2
        elif "long" in words:
            size = long_bytes
        elif "double" in words:
            size = 8
        elif "float" in words:
            size = 4
        else:
            size = int_bytes
        total += size * int(count)
    return total
