"""Generated C for QuantizedDense (int8/int16 weights, static and dynamic int8 inputs) and
float16 tensors: bit-identical to the runtime's device mode, on random and hard rows.

Claims: host gcc -O2 -ffp-contract=off output equals ``mode="device"`` bit for bit
(``assert_array_equal``) for scores, probabilities and labels; float16 tables take 2 bytes a
value and widen exactly (all 65,536 bit patterns); int8/int16 tables take 1/2 bytes.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fedge
from fedge.deployment import CompiledModel, emit_c
from fedge.deployment.formats.c.emit import _half_code
from fedge.deployment.toolchain import compile_c
from fedge.ir import Affine, Dense, Impute, Linear, Link, Model, Task, TreeEnsemble
from fedge.ir.nodes import QuantizedDense, accepts_missing
from tools import require_tool, run_sanitized

FLT_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).smallest_subnormal)


def _qd(
    rng: np.random.Generator,
    n_in: int,
    n_out: int,
    *,
    dtype: type = np.int8,
    per_channel: bool = True,
    bits: int = 0,
    activation: str = "identity",
) -> QuantizedDense:
    info = np.iinfo(dtype)
    k = n_out if per_channel else 1
    zero_point = rng.integers(-9, 10, k).astype(np.int32)
    zero_point[0] = info.min if dtype is np.int8 else 300  # an extreme and a wide one
    return QuantizedDense(
        weights=rng.integers(info.min, info.max, size=(n_in, n_out), endpoint=True).astype(dtype),
        scale=rng.uniform(0.5, 2.0, k).astype(np.float32) / np.float32(info.max),
        zero_point=zero_point,
        bias=rng.normal(size=n_out).astype(np.float32),
        activation=activation,
        input_bits=bits,
    )


def _model(steps: tuple, task: str = "regression", link: str = "identity") -> Model:
    n_out = steps[-1].n_outputs
    classes = None
    if task == "classification":
        classes = np.arange(2 if n_out == 1 else n_out)
    return Model(
        steps=steps,
        task=Task(task),
        n_features=steps[0].n_inputs,
        link=Link(link),
        classes=classes,
        metadata={"source": {"estimator": "test"}},
    )


def hard_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random rows at several magnitudes, then rows that hit the edge cases of the dynamic
    quantization: zeros, one huge value, x / s landing on .5 ties, denormals, +-FLT_MAX."""
    rows = [rng.normal(size=(400, n)) * 10.0 ** rng.integers(-6, 7, size=(400, 1))]
    rows += [np.zeros((1, n)), np.full((1, n), -0.0)]
    for huge in (1e30, FLT_MAX, -FLT_MAX):
        r = rng.normal(size=(n, n))
        r[np.arange(n), np.arange(n)] = huge
        rows.append(r)
    # max |x| = 127 * 2**e gives s = 2**e exactly, so x / s = k + 0.5 is a tie.
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 125.5, 126.5, -126.5, 3.0])
    for e in (-20, -3, 0, 5):
        r = rng.choice(halves, size=(8, n)) * 2.0**e
        r[:, 0] = 127 * 2.0**e * rng.choice([-1, 1], size=8)
        rows.append(r)
    # Denormals: max |x| so small that s underflows to 0 (then s = 1) or is subnormal and
    # rounds so far that x / s passes 127 and is clipped (255: a tie at 127.5; 12760 and
    # 15301: s = 100 and 120 TINY, x / s = 127.6 and 127.51, s * scale still nonzero).
    tops = (1, 63, 64, 190, 255, 383, 12760, 15301, 2**23)
    for top in np.array(tops) * TINY:
        r = rng.integers(-3, 4, size=(4, n)) * TINY
        r[:, 0] = top
        rows.append(r)
    rows.append(
        np.array([[FLT_MAX] * n, [-FLT_MAX] * n, [FLT_MAX, -FLT_MAX] * (n // 2) + [0] * (n % 2)])
    )
    X = np.concatenate(rows)
    return X.astype(np.float32).astype(np.float64)


def assert_c_equals_device(model: Model, X: np.ndarray, **kwargs) -> CompiledModel:
    compiled = CompiledModel(model, **kwargs)
    np.testing.assert_array_equal(
        compiled.decision_function(X), fedge.decision_function(model, X, mode="device")
    )
    np.testing.assert_array_equal(compiled.predict(X), fedge.predict(model, X, mode="device"))
    if model.task is Task.CLASSIFICATION:
        np.testing.assert_array_equal(
            compiled.predict_proba(X), fedge.predict_proba(model, X, mode="device")
        )
    return compiled


def _trees16(rng: np.random.Generator, aggregation: str) -> TreeEnsemble:
    """Three depth-2 trees over 4 features, two outputs, float16 leaves and base score."""
    feature = np.array([0, 1, 2, 3, 0, 2, 1, 3, 0], dtype=np.int32)
    left = np.array([1, ~0, ~2, 4, ~4, ~6, 7, ~8, ~10], dtype=np.int32)
    right = np.array([2, ~1, ~3, 5, ~5, ~7, 8, ~9, ~11], dtype=np.int32)
    return TreeEnsemble(
        feature=feature,
        threshold=rng.normal(size=9).astype(np.float32),
        left=left,
        right=right,
        missing_left=rng.random(9) < 0.5,
        leaf_values=rng.normal(size=(12, 2)).astype(np.float16),
        roots=np.array([0, 3, 6], dtype=np.int32),
        tree_offset=np.zeros(3, dtype=np.int32),
        n_features=4,
        n_outputs=2,
        base_score=np.array([0.25, -1.5], dtype=np.float16),
        aggregation=aggregation,
    )


# --------------------------------------------------------------------------- QuantizedDense
def _quantized_cases() -> dict[str, Model]:
    rng = np.random.default_rng(20261128)
    n = 6
    return {
        # static (input_bits 0): int8 and int16, per-tensor and per-channel
        "static_int8_tensor_regression": _model(
            (_qd(rng, n, 1, per_channel=False, activation="identity"),)
        ),
        "static_int16_channel_relu_tanh_softmax": _model(
            (
                _qd(rng, n, 7, dtype=np.int16, activation="relu"),
                _qd(rng, 7, 5, dtype=np.int16, per_channel=False, activation="tanh"),
                _qd(rng, 5, 3, dtype=np.int8),
            ),
            "classification",
            "softmax",
        ),
        # dynamic (input_bits 8)
        "dynamic_tensor_regression_2_outputs": _model((_qd(rng, n, 2, per_channel=False, bits=8),)),
        "dynamic_chain_logistic_link": _model(
            (
                _qd(rng, n, 9, bits=8, activation="relu"),
                _qd(rng, 9, 4, bits=8, per_channel=False, activation="logistic"),
                _qd(rng, 4, 1, bits=8),
            ),
            "classification",
            "logistic",
        ),
        # no bias and scales near 1: denormal rows give denormal outputs, so the clipping
        # of x / s (only ever reached with a subnormal s) shows
        "dynamic_unbiased_denormal_outputs": _model(
            (
                dataclasses.replace(
                    _qd(rng, n, 4, bits=8),
                    scale=np.array([0.125, 0.5, 1.0, 4.0], dtype=np.float32),
                    bias=np.zeros(4, dtype=np.float32),
                ),
            )
        ),
        # before a tree ensemble (the batch path runs the layers in a prefix function)
        "dynamic_then_trees": _model(
            (_qd(rng, n, 4, bits=8, activation="tanh"), _trees16(rng, "sum"))
        ),
        # after an Affine step, mixed with static int16 and a float Dense
        "affine_dynamic_static_softmax": _model(
            (
                Affine(
                    offset=rng.normal(size=n),
                    scale=rng.uniform(1.0, 3.0, n),  # scale >= 1: FLT_MAX rows stay finite
                ),
                _qd(rng, n, 8, bits=8, activation="tanh"),
                _qd(rng, 8, 5, dtype=np.int16, activation="logistic"),
                Dense(rng.normal(size=(5, 4)), rng.normal(size=4), "identity"),
                _qd(rng, 4, 3, bits=8, per_channel=False),
            ),
            "classification",
            "softmax",
        ),
    }


QUANTIZED = _quantized_cases()


@pytest.mark.parametrize("name", sorted(QUANTIZED))
def test_quantized_dense_c_equals_device_mode(name: str) -> None:
    require_tool("gcc", "gcc")
    model = QUANTIZED[name]
    X = hard_rows(model.n_features, np.random.default_rng(7))
    assert_c_equals_device(model, X)


def test_quantized_tables_keep_their_width() -> None:
    code = emit_c(QUANTIZED["affine_dynamic_static_softmax"], "q").source
    assert "FEDGE_CONST signed char q_s1_w[48]" in code
    assert "FEDGE_CONST short q_s2_w[40]" in code
    assert "#define FEDGE_RD_I8(table, i) ((table)[i])" in code
    assert "#define FEDGE_RD_I16(table, i) ((table)[i])" in code
    assert "q_s4_scale" not in code  # per-tensor parameters are literals
    # Models without integer weights emit neither macro.
    plain = emit_c(_model((Linear(np.ones((2, 1)), np.zeros(1)),)), "p").source
    assert "FEDGE_RD_I8" not in plain and "FEDGE_RD_I16" not in plain and "half" not in plain


def test_wide_dynamic_layer_sums_in_long_long() -> None:
    """127 * 255 * 70,000 passes 2**31: the sums need 64 bits, and get them."""
    require_tool("gcc", "gcc")
    n = 70_000
    step = QuantizedDense(
        weights=np.full((n, 2), 127, dtype=np.int8),
        scale=np.array([1e-6], dtype=np.float32),
        zero_point=np.array([-128], dtype=np.int32),
        bias=np.zeros(2, dtype=np.float32),
        input_bits=8,
    )
    model = _model((step,))
    code = emit_c(model, "wide").source
    assert "long long sum[2];" in code
    X = np.ones((3, n)) * np.array([[1.0], [-3.0], [0.0]])
    out = assert_c_equals_device(model, X).decision_function(X)
    assert out[0, 0] == np.float32(127 * 255 * n) * np.float32(np.float32(1 / 127) * 1e-6)
    small = emit_c(QUANTIZED["dynamic_tensor_regression_2_outputs"], "s").source
    assert "long sum[2];" in small and "long long" not in small


def test_inf_into_a_dynamic_layer_gives_nan() -> None:
    """A dynamic layer whose input holds +-Inf (an earlier step overflowed) has s = Inf, so
    every x / s is 0 or NaN; both C and the runtime quantize NaN to 0 and return NaN
    (0 * Inf) for that row."""
    require_tool("gcc", "gcc")
    rng = np.random.default_rng(3)
    overflow = Affine(offset=np.zeros(3), scale=np.full(3, 0.5))
    model = _model((overflow, _qd(rng, 3, 2, bits=8)))
    X = np.array([[FLT_MAX, 1.0, 2.0], [-FLT_MAX, FLT_MAX, 0.0], [1.0, 2.0, 3.0]])
    out = CompiledModel(model).decision_function(X)
    assert np.isnan(out[:2]).all()
    np.testing.assert_array_equal(out, fedge.decision_function(model, X, mode="device"))


# --------------------------------------------------------------------------- float16
def _f16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.normal(size=shape) * 3).astype(np.float16)


def _float16_cases() -> dict[str, tuple[Model, str]]:
    rng = np.random.default_rng(16)
    return {
        "linear_regression": (_model((Linear(_f16(rng, 5, 2), _f16(rng, 2)),)), "table"),
        "impute_affine_dense_softmax": (
            _model(
                (
                    Impute(_f16(rng, 5)),
                    Affine(_f16(rng, 5), np.abs(_f16(rng, 5)) + np.float16(0.5)),
                    Dense(_f16(rng, 5, 20), _f16(rng, 20), "relu"),  # the loop over outputs
                    Dense(_f16(rng, 20, 3), _f16(rng, 3), "tanh"),
                ),
                "classification",
                "softmax",
            ),
            "table",
        ),
        "trees_sum_table": (
            _model((_trees16(rng, "sum"),), "classification", "softmax"),
            "table",
        ),
        "trees_mean_inline": (_model((_trees16(rng, "mean"),)), "inline"),
        "affine_then_trees_table": (
            _model((Affine(_f16(rng, 4), _f16(rng, 4), "multiply_add"), _trees16(rng, "mean"))),
            "table",
        ),
    }


FLOAT16 = _float16_cases()


@pytest.mark.parametrize("name", sorted(FLOAT16))
def test_float16_c_equals_device_mode(name: str) -> None:
    require_tool("gcc", "gcc")
    model, layout = FLOAT16[name]
    rng = np.random.default_rng(8)
    X = hard_rows(model.n_features, rng)
    if accepts_missing(model):
        X[rng.random(X.shape) < 0.1] = np.nan
    code = emit_c(model, "h", layout=layout).source
    assert "#include <stdint.h>" in code and "static float h_half(unsigned int bits)" in code
    # Every float16 tensor is a table of 16-bit patterns; only tree thresholds stay float32.
    assert (
        re.search(r"FEDGE_CONST float h_s\d+_(w|b|leaves|base|fill|offset|scale)\[", code) is None
    )
    assert "FEDGE_CONST unsigned short h_s0_" in code
    assert_c_equals_device(model, X, layout=layout)


def test_half_to_float_is_exact_for_every_pattern(tmp_path: Path) -> None:
    """All 65,536 float16 patterns (zeros, subnormals, normals, infinities, NaN payloads)
    widen to the float32 bits numpy gives."""
    require_tool("gcc", "gcc")
    (tmp_path / "h.c").write_text(
        "#include <stdio.h>\n#include <stdint.h>\n"
        + _half_code("t")
        + "int main(void)\n{\n    unsigned int i;\n"
        "    for (i = 0; i < 65536u; ++i) {\n"
        "        float f = t_half(i);\n        fwrite(&f, sizeof f, 1, stdout);\n    }\n"
        "    return 0;\n}\n"
    )
    exe = compile_c([tmp_path / "h.c"], tmp_path / "h")
    out = subprocess.run([str(exe)], capture_output=True, timeout=30, check=True).stdout
    got = np.frombuffer(out, dtype=np.uint32)
    expected = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, expected.view(np.uint32))


# --------------------------------------------------------------------------- sanitizers
HOSTILE = np.array(
    [np.nan, np.inf, -np.inf, FLT_MAX, -FLT_MAX, TINY, -TINY, 1e-38, 0.0, -0.0, 0.5, 127.5],
    dtype=np.float32,
)


def test_sanitizers_on_a_dynamic_model(tmp_path: Path) -> None:
    """ASan/UBSan build of a dynamic (and float16) model fed NaN, +-Inf, huge, denormal and
    tie values: no error, no crash (as test_c_codegen's sanitizer test)."""
    require_tool("gcc", "gcc")
    rng = np.random.default_rng(5)
    model = _model(
        (
            Impute(_f16(rng, 4)),
            Affine(_f16(rng, 4), np.full(4, 0.25, dtype=np.float16), "multiply_add"),
            _qd(rng, 4, 6, bits=8, activation="relu"),
            _qd(rng, 6, 3, dtype=np.int16, per_channel=False, activation="logistic"),
            _qd(rng, 3, 3, bits=8),
        ),
        "classification",
        "softmax",
    )
    done = run_sanitized(
        tmp_path, emit_c(model, "m"), HOSTILE, "address,undefined,float-cast-overflow"
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"runtime error" not in done.stderr and len(done.stdout) > 0
