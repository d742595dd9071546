"""Generated integer C for QuantizedTrees: bit-identical to the numpy runtime.

Claims: host gcc -O2 -ffp-contract=off output (per-row functions through ``verify_c``, batch
functions through ``CompiledModel``) equals the runtime's integer evaluation bit for bit
(``mode="device"``, which for quantized trees is also ``mode="reference"`` rounded to
float32) for scores, probabilities and labels, over RandomForest, GradientBoosting,
HistGradientBoosting, XGBoost and LightGBM models (binary, multiclass, regression,
multi-output) quantized to int8 and int16 on lossless and quantile grids, on test rows, rows on
every bin edge and one float32 step either side, extreme values and NaN. Both layouts; two
models link into one program; on AVR the tables land in flash.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fedge
from fedge.compression.quantization import ModelQuantizer
from fedge.deployment import CompiledModel, emit_c, verify_c
from fedge.deployment.formats.c.emit import MAX_INLINE_SPLITS
from fedge.deployment.formats.c.quantized_trees import sum_type
from fedge.deployment.toolchain import compile_c
from fedge.errors import InvalidInputError
from fedge.ir import Model, Task
from fedge.ir.nodes import QuantizedTrees, accepts_missing
from tools import require_tool
from zoo import case, extreme_rows

F32_MAX = float(np.finfo(np.float32).max)


def _quantized(name: str, bits: int) -> tuple[Model, int]:
    """The zoo model ``name`` quantized to ``bits``, and how many thresholds moved."""
    quantizer = ModelQuantizer("int8" if bits == 8 else "int16")
    model = quantizer.quantize_model(fedge.lower(case(name).estimator))
    assert quantizer.report_ is not None
    return model, quantizer.report_.thresholds_moved


def edge_rows(model: Model, X: np.ndarray, limit: int = 600) -> np.ndarray:
    """Rows placing one feature on a bin edge and one float32 step either side (the ties
    of the binning), from real rows; at most ``limit`` of each kind."""
    step = next(s for s in model.steps if isinstance(s, QuantizedTrees))
    if len(model.steps) > 1:  # edges live in the trees' input space, not in X's
        return np.zeros((0, X.shape[1]))
    feature = np.repeat(np.arange(step.n_features), np.diff(step.bin_start))
    pick = np.random.default_rng(0).permutation(feature.size)[:limit]
    edges, feature = step.bin_edges[pick], feature[pick]
    base = np.resize(np.nan_to_num(X), (feature.size, X.shape[1]))
    rows = []
    with np.errstate(over="ignore"):  # FLT_MAX edges step to infinity: dropped below
        for value in (
            edges,
            np.nextafter(edges, np.float32(np.inf)),
            np.nextafter(edges, np.float32(-np.inf)),
        ):
            r = base.copy()
            r[np.arange(feature.size), feature] = value
            rows.append(r)
    out = np.concatenate(rows)
    return out[~np.isinf(out).any(axis=1)]


def nan_rows(X: np.ndarray) -> np.ndarray:
    """Each feature NaN alone in a real row, and a row of NaN only."""
    n = X.shape[1]
    rows = np.resize(np.nan_to_num(X), (n, n))
    rows[np.arange(n), np.arange(n)] = np.nan
    return np.concatenate([rows, np.full((1, n), np.nan)])


def hard_rows(model: Model, name: str) -> np.ndarray:
    X = case(name).dataset.X_test
    rows = [X, edge_rows(model, X), extreme_rows(X, float32_range=True)]
    if accepts_missing(model):
        rows.append(nan_rows(X))
    return np.concatenate(rows).astype(np.float32).astype(np.float64)


# name: one zoo model per family and task; NaN in training where the name says so.
ZOO = [
    "forest_nan",  # RandomForest, binary, NaN, mean of 2-wide leaves
    "forest_multitarget",  # RandomForest regression, 2 outputs
    "extra_trees_nan",  # ExtraTrees regression, NaN (int8: quantile bins)
    "scaled_forest_nan",  # StandardScaler then a forest: an Affine step before the trees
    "forest_regressor",  # more thresholds than an int8 grid holds: quantile bins
    "gb_multiclass",  # GradientBoosting, 4 classes
    "gb_regressor_huber",
    "hgb_binary_nan",  # HistGradientBoosting
    "hgb_multiclass_nan",
    "hgb_regressor_nan",
    "xgb_binary_nan",
    "xgb_multiclass_nan",
    "xgb_regressor_nan",
    "lgbm_binary_nan",
    "lgbm_multiclass_nan",
    "lgbm_regressor_nan",
    "lgbm_no_missing_rule",
    "tree_single_leaf",
    "xgb_single_leaf",
]


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("name", ZOO)
def test_c_equals_the_integer_runtime(name: str, bits: int) -> None:
    require_tool("gcc", "gcc")
    model, _ = _quantized(name, bits)
    X = hard_rows(model, name)
    report = verify_c(model, X)
    assert report.rows == len(X)
    assert report.score_mismatches == 0, report
    assert report.label_mismatches_device == 0, report
    assert report.identical


def test_the_zoo_covers_lossless_and_quantile_grids() -> None:
    moved = {(name, bits): _quantized(name, bits)[1] for name in ZOO for bits in (8, 16)}
    assert moved[("hgb_binary_nan", 8)] == 0  # histogram thresholds: the grid holds them all
    assert moved[("forest_regressor", 8)] > 0  # quantile grid: thresholds snapped
    assert moved[("extra_trees_nan", 8)] > 0
    assert sum(v == 0 for v in moved.values()) > len(moved) // 2


@pytest.mark.parametrize(
    ("name", "bits"),
    [("xgb_multiclass_nan", 8), ("lgbm_regressor_nan", 16), ("forest_nan", 8), ("tree_deep", 8)],
)
def test_inline_layout_equals_the_integer_runtime(name: str, bits: int) -> None:
    require_tool("gcc", "gcc")
    model, _ = _quantized(name, bits)
    report = verify_c(model, hard_rows(model, name), layout="inline")
    assert report.identical, report


@pytest.mark.parametrize("name", ["hgb_multiclass_nan", "forest_multitarget"])
def test_batch_functions_and_reference_mode_agree(name: str) -> None:
    """The batch entry points give the same bits, and for integer trees the runtime's two
    modes coincide (device = reference rounded to float32)."""
    require_tool("gcc", "gcc")
    model, _ = _quantized(name, 8)
    X = hard_rows(model, name)
    compiled = CompiledModel(model)
    scores = compiled.decision_function(X)
    np.testing.assert_array_equal(scores, fedge.decision_function(model, X, mode="device"))
    reference = fedge.decision_function(model, X, mode="reference")
    if len(model.steps) == 1:
        np.testing.assert_array_equal(scores, reference.astype(np.float32))
    np.testing.assert_array_equal(compiled.predict(X), fedge.predict(model, X, mode="device"))
    if model.task is Task.CLASSIFICATION:
        np.testing.assert_array_equal(
            compiled.predict_proba(X), fedge.predict_proba(model, X, mode="device")
        )


# --------------------------------------------------------------------------- hand-made trees
def _stumps(comparison: str, edges: np.ndarray, leaves: np.ndarray) -> Model:
    """Feature 0: a 256-edge grid (bins 0..256 and NaN need 16-bit bins); feature 1: no
    edges; feature 2: one edge. Tree 0 splits feature 0 at every fourth edge (missing left),
    tree 1 at edge 255 (missing right), tree 2 feature 2 (missing left)."""
    cuts = np.arange(0, 256, 4)
    n = cuts.size  # tree 0: a chain of splits, each sending x above the cut right
    feature = np.concatenate([np.zeros(n + 1, np.int32), [2]]).astype(np.int32)
    threshold = np.concatenate([cuts, [255, 0]]).astype(np.uint8)
    left = np.concatenate([~np.arange(n), [~n], [~(n + 2)]]).astype(np.int32)
    right = np.concatenate([np.arange(1, n), [~(n + 4)], [~(n + 1)], [~(n + 3)]]).astype(np.int32)
    missing = np.concatenate([np.ones(n, bool), [False], [True]])
    return Model(
        steps=(
            QuantizedTrees(
                feature=feature,
                threshold=threshold,
                left=left,
                right=right,
                missing_left=missing,
                leaf_values=leaves[: n + 5].reshape(-1, 1),
                leaf_scale=np.array([0.125], np.float32),
                roots=np.array([0, n, n + 1], np.int32),
                tree_offset=np.zeros(3, np.int32),
                n_features=3,
                n_outputs=1,
                base_score=np.array([0.5], np.float32),
                bin_edges=np.concatenate([edges, [7.0]]).astype(np.float32),
                bin_start=np.array([0, 256, 256, 257], np.int32),
                comparison=comparison,
            ),
        ),
        task=Task.REGRESSION,
        n_features=3,
        metadata={"source": {"estimator": "stumps"}},
    )


@pytest.mark.parametrize("layout", ["table", "inline"])
@pytest.mark.parametrize("comparison", ["<=", "<"])
def test_ties_nan_and_a_full_8_bit_grid(comparison: str, layout: str) -> None:
    require_tool("gcc", "gcc")
    rng = np.random.default_rng(7)
    edges = np.sort(rng.normal(size=256).astype(np.float32))
    edges[100] = -0.0 if edges[100] < 0 else 0.0  # a signed zero among the edges
    edges = np.unique(edges)
    edges = np.concatenate([edges, edges[-1] + np.arange(1, 257 - edges.size)])[:256]
    leaves = rng.integers(-32767, 32768, size=80).astype(np.int16)
    leaves[:3] = [32767, -32767, 0]
    model = _stumps(comparison, edges, leaves)
    code = emit_c(model, "ties", layout=layout)
    assert "unsigned short bin[3];  /* NAN_BIN = 257 */" in code.source
    assert "long sum[1]" in code.source  # three int16 trees overflow a 16-bit int
    values = np.concatenate(
        [
            edges,
            np.nextafter(edges, np.float32(np.inf)),
            np.nextafter(edges, np.float32(-np.inf)),
            [np.nan, -0.0, 0.0, -F32_MAX, F32_MAX, 7.0, np.nextafter(np.float32(7), 0)],
        ]
    )
    X = np.zeros((values.size * 3, 3))
    X[:, 0] = np.tile(values, 3)
    X[:, 2] = np.repeat([7.0, np.nan, 8.0], values.size)
    X[::5, 1] = np.nan
    report = verify_c(model, X.astype(np.float32), layout=layout)
    assert report.identical, report


def test_accumulator_type_is_the_narrowest_that_cannot_overflow() -> None:
    assert sum_type(127 * 100) == "int"  # 100 int8 trees: a 16-bit int suffices (AVR)
    assert sum_type(2**15 - 1) == "int"
    assert sum_type(2**15) == "long"
    assert sum_type(2**31 - 1) == "long"
    assert sum_type(2**31) == "long long"


def test_tables_are_integer_and_compact() -> None:
    model, _ = _quantized("xgb_multiclass_nan", 8)
    src = emit_c(model, "q").source
    assert "FEDGE_CONST unsigned char q_s0_threshold[" in src  # bin indices, not floats
    assert "FEDGE_CONST signed char q_s0_leaves[" in src
    assert "FEDGE_RD_I8(q_s0_leaves, ref)" in src
    assert re.search(r"\bint sum\[4\];", src)  # |sum| <= 80 trees * 127
    assert src.count("(float)sum[j]") == 1  # one rescale
    # float comparisons only in the binning (one binary search per feature)
    assert src.count("FEDGE_RD_F32(q_s0_edges, mid)") == 1
    model16, _ = _quantized("xgb_multiclass_nan", 16)
    assert "FEDGE_CONST short q_s0_leaves[" in emit_c(model16, "q").source


def test_inline_layout_refuses_huge_quantized_ensembles() -> None:
    model, _ = _quantized("tree_deep", 16)
    step = model.steps[0]
    big = Model(
        steps=(_repeat_trees(step, MAX_INLINE_SPLITS // step.n_nodes + 1),),
        task=model.task,
        n_features=model.n_features,
        classes=model.classes,
        link=model.link,
    )
    with pytest.raises(InvalidInputError, match="inline layout"):
        emit_c(big, layout="inline")
    emit_c(big)  # the table layout takes it


def _repeat_trees(step: QuantizedTrees, times: int) -> QuantizedTrees:
    """``times`` copies of a one-tree ensemble."""
    n, m = step.n_nodes, step.n_leaves

    def shift(refs: np.ndarray, k: int) -> np.ndarray:
        return np.where(refs >= 0, refs + k * n, ~(~refs + k * m)).astype(np.int32)

    return dataclasses.replace(
        step,
        feature=np.tile(step.feature, times),
        threshold=np.tile(step.threshold, times),
        left=np.concatenate([shift(step.left, k) for k in range(times)]),
        right=np.concatenate([shift(step.right, k) for k in range(times)]),
        missing_left=np.tile(step.missing_left, times),
        leaf_values=np.tile(step.leaf_values, (times, 1)),
        roots=np.concatenate([shift(step.roots, k) for k in range(times)]),
        tree_offset=np.tile(step.tree_offset, times),
    )


# --------------------------------------------------------------------------- linking, AVR
@pytest.mark.slow
def test_two_quantized_models_link_from_two_translation_units(tmp_path: Path) -> None:
    require_tool("gcc", "gcc")
    a_model, _ = _quantized("xgb_binary_nan", 8)
    b_model, _ = _quantized("lgbm_multiclass_nan", 16)
    a = emit_c(a_model, "qa")
    b = emit_c(b_model, "qb", layout="inline")
    for code in (a, b):
        (tmp_path / f"{code.prefix}.h").write_text(code.header)
        (tmp_path / f"{code.prefix}.c").write_text(code.source)
    # other.c uses both models too: the tables and helpers are static to their own unit.
    (tmp_path / "other.c").write_text(
        '#include "qa.h"\n#include "qb.h"\n'
        "int other(const float *xa, const float *xb);\n"
        "int other(const float *xa, const float *xb)\n"
        "{\n    return qa_predict(xa) * 10 + qb_predict(xb);\n}\n"
    )
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "qa.h"\n#include "qb.h"\n#include "qa.h"\n'
        "int other(const float *xa, const float *xb);\n"
        "int main(void)\n{\n"
        "    float xa[QA_N_FEATURES], xb[QB_N_FEATURES];\n"
        "    while (fread(xa, sizeof(float), QA_N_FEATURES, stdin) == QA_N_FEATURES &&\n"
        "           fread(xb, sizeof(float), QB_N_FEATURES, stdin) == QB_N_FEATURES)\n"
        '        printf("%d %d\\n", qa_predict(xa) * 10 + qb_predict(xb), other(xa, xb));\n'
        "    return 0;\n}\n"
    )
    exe = compile_c(
        [tmp_path / f for f in ("qa.c", "qb.c", "other.c", "main.c")], tmp_path / "both"
    )
    Xa = hard_rows(a_model, "xgb_binary_nan")[:200].astype(np.float32)
    Xb = hard_rows(b_model, "lgbm_multiclass_nan")[:200].astype(np.float32)
    stdin = np.concatenate([Xa, Xb], axis=1).tobytes()
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, timeout=30, check=True)
    got = np.array([[int(v) for v in line.split()] for line in out.stdout.decode().splitlines()])
    ia = np.searchsorted(a_model.classes, fedge.predict(a_model, Xa, mode="device"))
    ib = np.searchsorted(b_model.classes, fedge.predict(b_model, Xb, mode="device"))
    np.testing.assert_array_equal(got[:, 0], ia * 10 + ib)
    np.testing.assert_array_equal(got[:, 1], got[:, 0])


AVR_PRELUDE = """#include <avr/pgmspace.h>
#define FEDGE_CONST static const PROGMEM
#ifndef HUGE_VALF  /* avr-libc's math.h lacks it */
#define HUGE_VALF __builtin_huge_valf()
#endif
#define FEDGE_RD_F32(t, i) pgm_read_float(&(t)[i])
#define FEDGE_RD_U8(t, i) pgm_read_byte(&(t)[i])
#define FEDGE_RD_U16(t, i) pgm_read_word(&(t)[i])
#define FEDGE_RD_U32(t, i) pgm_read_dword(&(t)[i])
#define FEDGE_RD_I8(t, i) ((signed char)pgm_read_byte(&(t)[i]))
#define FEDGE_RD_I16(t, i) ((short)pgm_read_word(&(t)[i]))
"""


def _sections(objdump: str, obj: Path) -> dict[str, int]:
    out = subprocess.run([objdump, "-h", str(obj)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0].isdigit():
            sizes[parts[1]] = int(parts[2], 16)
    return sizes


def _table_bytes(source: str) -> int:
    width = {"float": 4, "unsigned long": 4, "unsigned short": 2, "short": 2}
    return sum(
        width.get(ctype, 1) * int(count)
        for ctype, count in re.findall(
            r"FEDGE_CONST (float|unsigned long|unsigned short|short|unsigned char|signed char) "
            r"\w+\[(\d+)\]",
            source,
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["table", "inline"])
def test_avr_build_puts_every_table_in_flash(tmp_path: Path, layout: str) -> None:
    """avr-gcc -mmcu=atmega328p with FEDGE_CONST = static const PROGMEM: clean under
    -Wall -Wextra -Werror, every table in .progmem.data, nothing in .data or .rodata (RAM)."""
    avr_gcc = require_tool("avr-gcc", "gcc-avr avr-libc")
    objdump = require_tool("avr-objdump", "binutils-avr")
    model, _ = _quantized("xgb_multiclass_nan", 8)
    code = emit_c(model, "qavr", layout=layout)
    (tmp_path / "qavr.h").write_text(code.header)
    (tmp_path / "qavr.c").write_text(code.source)
    (tmp_path / "prelude.h").write_text(AVR_PRELUDE)
    obj = tmp_path / "qavr.o"
    done = subprocess.run(
        [
            avr_gcc,
            "-mmcu=atmega328p",
            "-Os",
            "-std=gnu99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-include",
            str(tmp_path / "prelude.h"),
            "-c",
            str(tmp_path / "qavr.c"),
            "-o",
            str(obj),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sections = _sections(objdump, obj)
    assert sections.get(".progmem.data", 0) == _table_bytes(code.source), sections
    assert sections.get(".data", 0) == 0 and sections.get(".rodata", 0) == 0, sections
    assert sections[".text"] + sections[".progmem.data"] < 32 * 1024  # fits the Uno's flash
