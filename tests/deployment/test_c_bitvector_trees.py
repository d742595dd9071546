"""Bitvector (QuickScorer) evaluation of small trees in the C table layout.

Claims: the tables' lowest set bit is the leaf the node walk reaches for every (row, tree)
(plain, NaN, on-threshold and extreme rows, ``<=`` and ``<`` splits); the generated C gives
device mode's bits one row at a time and in batches both by bitvectors (hosts with GNU C
vectors) and by the node walk (``-DFEDGE_NO_VECTORS``: what microcontrollers compile), also
under ASan/UBSan; ensembles that do not qualify keep the walk and emit no bitvector code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fedge
from fedge.deployment import emit_c
from fedge.deployment.formats.c.bitvector_trees import MAX_LEAVES, bitvector_trees
from fedge.deployment.formats.c.tree_tables import compact_trees
from fedge.deployment.toolchain import HOST_FLAGS, compile_c
from fedge.ir import Comparison, Link, Model, Task, TreeEnsemble, runtime
from tools import require_tool
from zoo import case, extreme_rows, split_points, threshold_rows

QUALIFYING = [
    "tree_binary",  # two-wide leaves, one tree
    "forest_nan",  # mean of trees, NaN rules
    "gb_multiclass",  # 3.6 splits per level: close to the crossover
    "hgb_multiclass_nan",
    "xgb_binary_nan",  # `<` splits
    "lgbm_binary_nan",  # leaf-wise, deep and uneven
    "lgbm_multiclass_strings",
]


def _rows(name: str) -> np.ndarray:
    """Test rows, rows on every threshold and a float32 step either side, extreme values, and
    test rows with a tenth of their values NaN; float32 like the device reads them."""
    c = case(name)
    X = c.dataset.X_test
    thresholds, features = split_points(c.estimator)
    holes = X.copy()
    holes[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    rows = np.concatenate(
        [X, threshold_rows(c.dataset.X_train, thresholds, features), extreme_rows(X, True), holes]
    )
    return rows.astype(np.float32)


def _exit_leaves(step: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """QuickScorer in numpy over the tables: the leaf-table row of each (row, tree)."""
    tables = compact_trees(step)
    bv = bitvector_trees(step, tables.leaf_row)
    assert bv is not None
    bits = np.full((X.shape[0], step.n_trees), 0xFFFFFFFF, dtype=np.uint64)
    for f in range(step.n_features):
        v = X[:, f]
        first, end = int(bv.begin[f]), int(bv.begin[f + 1]) - 1
        assert bv.threshold[end] == np.inf  # the sentinel no value exceeds
        ascending = bv.threshold[first : end + 1]
        assert np.all(ascending[1:] >= ascending[:-1])
        for i in range(first, end):
            right = (v > bv.threshold[i]) | (np.isnan(v) & bool(bv.nan_right[i]))
            bits[right, bv.tree[i]] &= bv.mask[i]
    assert np.all(bits != 0)
    lowest = np.log2(bits & (~bits + np.uint64(1))).astype(np.int64)
    return bv.leaf[np.arange(step.n_trees), lowest]


@pytest.mark.parametrize("name", QUALIFYING)
def test_lowest_set_bit_is_the_node_walks_leaf(name: str) -> None:
    step = fedge.lower(case(name).estimator).steps[-1]
    X = _rows(name)
    walked = runtime._walk(step, X, step.device_thresholds())
    want = compact_trees(step).leaf_row[walked]
    np.testing.assert_array_equal(_exit_leaves(step, X), want)


def _harness(p: str, nf: int, no: int) -> str:
    """Scores of every row from stdin, one row at a time, then in one batch call."""
    return (
        f'#include <stdio.h>\n#include <stdlib.h>\n#include "{p}.h"\n'
        "int main(void)\n{\n"
        f"    long n = 0, cap = 1024, i;\n"
        f"    float *x = malloc(sizeof(float) * cap * {nf}), *s;\n"
        f"    while (fread(x + n * {nf}, sizeof(float), {nf}, stdin) == {nf}) {{\n"
        f"        if (++n == cap) x = realloc(x, sizeof(float) * (cap *= 2) * {nf});\n"
        f"    }}\n"
        f"    s = malloc(sizeof(float) * (n + 1) * {no});\n"
        f"    for (i = 0; i < n; ++i) {p}_decision_function(x + i * {nf}, s + i * {no});\n"
        f"    fwrite(s, sizeof(float), n * {no}, stdout);\n"
        f"    {p}_decision_function_batch(x, n, s);\n"
        f"    fwrite(s, sizeof(float), n * {no}, stdout);\n"
        "    free(x);\n    free(s);\n    return 0;\n}\n"
    )


def _run_c(
    tmp_path: Path,
    model: Model,
    X: np.ndarray,
    flags: tuple[str, ...],
    compiler: str = "gcc",
    runner: tuple[str, ...] = (),
) -> np.ndarray:
    """(2, rows, outputs): the one-row and the batch scores of the compiled model (built by
    ``compiler``, run through ``runner``, e.g. an emulator)."""
    code = emit_c(model, "m")
    (tmp_path / "m.h").write_text(code.header)
    (tmp_path / "m.c").write_text(code.source)
    (tmp_path / "main.c").write_text(_harness("m", model.n_features, model.n_outputs))
    sources = [tmp_path / "m.c", tmp_path / "main.c"]
    exe = compile_c(sources, tmp_path / "h", compiler=compiler, flags=flags)
    out = subprocess.run(
        [*runner, str(exe)], input=X.tobytes(), capture_output=True, check=True, timeout=120
    )
    assert out.stderr == b"", out.stderr.decode()
    return np.frombuffer(out.stdout, dtype=np.float32).reshape(2, X.shape[0], -1)


@pytest.mark.parametrize("name", QUALIFYING)
@pytest.mark.parametrize("vectors", [True, False], ids=["bitvectors", "node-walk"])
def test_c_equals_device_mode_by_bitvectors_and_by_the_walk(
    tmp_path: Path, name: str, vectors: bool
) -> None:
    require_tool("gcc", "gcc")
    model = fedge.lower(case(name).estimator)
    X = _rows(name)
    code = emit_c(model, "m")
    assert "m_s0_bits_rows" in code.source and "M_VECTORS" in code.source
    flags = HOST_FLAGS if vectors else (*HOST_FLAGS, "-DFEDGE_NO_VECTORS")
    got = _run_c(tmp_path, model, X, flags)
    want = runtime.decision_function(model, X, mode="device").reshape(X.shape[0], -1)
    for scores in got:  # one row at a time, then the batch
        np.testing.assert_array_equal(scores.view(np.uint32), want.view(np.uint32))


def test_neon_bitvectors_on_aarch64_equal_device_mode(tmp_path: Path) -> None:
    """The same C on a Raspberry Pi class aarch64 (NEON vectors), static, under qemu-aarch64."""
    require_tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    qemu = require_tool("qemu-aarch64", "qemu-user")
    name = "lgbm_multiclass_strings"
    model = fedge.lower(case(name).estimator)
    X = _rows(name)
    flags = ("-std=c99", "-O2", "-ffp-contract=off", "-static")
    got = _run_c(tmp_path, model, X, flags, "aarch64-linux-gnu-gcc", (qemu,))
    want = runtime.decision_function(model, X, mode="device").reshape(X.shape[0], -1)
    for scores in got:
        np.testing.assert_array_equal(scores.view(np.uint32), want.view(np.uint32))


def test_trees_after_a_scaler_take_bitvectors_on_the_scaled_rows(tmp_path: Path) -> None:
    require_tool("gcc", "gcc")
    c = case("gb_binary")
    est = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=12, max_depth=3))
    est.fit(c.dataset.X_train, c.dataset.y_train)
    model = fedge.lower(est)
    assert len(model.steps) == 2 and "m_s1_bits_rows" in emit_c(model, "m").source
    X = c.dataset.X_test.astype(np.float32)
    want = runtime.decision_function(model, X, mode="device").reshape(X.shape[0], -1)
    for scores in _run_c(tmp_path, model, X, HOST_FLAGS):
        np.testing.assert_array_equal(scores.view(np.uint32), want.view(np.uint32))


def test_batch_bitvectors_under_address_and_undefined_sanitizers(tmp_path: Path) -> None:
    """NaN, infinities, huge and denormal values in every position through both paths: no
    sanitizer report; finite rows give device mode's bits (the runtime refuses infinities),
    and every row the same bits one at a time as in the batch."""
    model = fedge.lower(case("lgbm_binary_nan").estimator)
    nf = model.n_features
    hostile = np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -1e-45, 0.0, -0.0])
    rows = np.zeros((len(hostile) * nf + 3, nf))
    for k, value in enumerate(hostile):
        rows[k * nf : (k + 1) * nf][np.arange(nf), np.arange(nf)] = value
    rows[-3:] = hostile[:3, None]  # rows made of one value
    X = rows.astype(np.float32)
    require_tool("gcc", "gcc")
    flags = (*HOST_FLAGS, "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
    single, batch = _run_c(tmp_path, model, X, flags).view(np.uint32)
    np.testing.assert_array_equal(single, batch)
    finite = ~np.isinf(X).any(axis=1)
    want = runtime.decision_function(model, X[finite], mode="device").reshape(finite.sum(), -1)
    np.testing.assert_array_equal(single[finite], want.view(np.uint32))


@pytest.mark.parametrize(
    "name",
    [
        "tree_deep",  # far more than 32 leaves
        "xgb_regressor_nan",  # balanced depth-6 trees: 5.8 splits per level, the walk is faster
        "forest_stumps",  # single-leaf trees only: nothing to scan
    ],
)
def test_ensembles_that_do_not_qualify_keep_the_walk(name: str) -> None:
    model = fedge.lower(case(name).estimator)
    step = model.steps[-1]
    assert bitvector_trees(step, compact_trees(step).leaf_row) is None
    assert "bits_row" not in emit_c(model, "m").source


def test_inline_layout_has_no_bitvectors() -> None:
    small = fedge.lower(case("gb_binary").estimator)
    assert "bits_row" not in emit_c(small, "m", layout="inline").source


def test_less_than_splits_at_minus_infinity_keep_the_walk() -> None:
    """``v < -inf`` holds for no float32, and no float32 t gives ``v > t`` for exactly that."""
    step = TreeEnsemble(
        feature=np.array([0], dtype=np.int32),
        threshold=np.array([-np.inf], dtype=np.float32),
        left=np.array([~0], dtype=np.int32),
        right=np.array([~1], dtype=np.int32),
        missing_left=np.array([True]),
        leaf_values=np.array([[1.0], [2.0]], dtype=np.float32),
        roots=np.array([0], dtype=np.int32),
        tree_offset=np.array([0], dtype=np.int32),
        n_features=1,
        n_outputs=1,
        base_score=np.array([0.0], dtype=np.float32),
        comparison=Comparison.LT,
    )
    assert bitvector_trees(step, compact_trees(step).leaf_row) is None


def _chain(n_leaves: int) -> Model:
    """A tree splitting feature 0 at 0, 1, 2, ...: leaf i for values in (i - 1, i], the
    last leaf (mask bit n_leaves - 1) for the values above every threshold; then a
    single-leaf tree (no split: its mask stays all ones, bit 0 names its leaf)."""
    n = n_leaves - 1
    step = TreeEnsemble(
        feature=np.zeros(n, dtype=np.int32),
        threshold=np.arange(n, dtype=np.float64),
        left=~np.arange(n, dtype=np.int32),
        right=np.append(np.arange(1, n), ~n).astype(np.int32),
        missing_left=np.arange(n) % 2 == 0,
        leaf_values=np.arange(n_leaves + 1, dtype=np.float64).reshape(-1, 1) * 0.5,
        roots=np.array([0, ~n_leaves], dtype=np.int32),
        tree_offset=np.array([0, 0], dtype=np.int32),
        n_features=1,
        n_outputs=1,
        base_score=np.array([0.25]),
    )
    return Model(steps=(step,), task=Task.REGRESSION, n_features=1, link=Link.IDENTITY)


def test_trees_of_exactly_max_leaves_qualify_and_every_leaf_is_reached(tmp_path: Path) -> None:
    require_tool("gcc", "gcc")
    model = _chain(MAX_LEAVES)
    step = model.steps[0]
    assert bitvector_trees(step, compact_trees(step).leaf_row) is not None
    assert bitvector_trees(_chain(MAX_LEAVES + 1).steps[0], np.arange(MAX_LEAVES + 1)) is None
    X = np.arange(-1.0, MAX_LEAVES + 1, 0.5, dtype=np.float32).reshape(-1, 1)
    X = np.concatenate([X, [[np.nan]]]).astype(np.float32)
    want = runtime.decision_function(model, X, mode="device").reshape(X.shape[0], -1)
    assert len(np.unique(want)) == MAX_LEAVES  # the top bit's leaf included
    for scores in _run_c(tmp_path, model, X, HOST_FLAGS):
        np.testing.assert_array_equal(scores.view(np.uint32), want.view(np.uint32))
