"""fedge's float32 exp/logistic/tanh: accurate, and identical bit for bit to their C twin."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from fedge.ir import devicemath
from tools import require_tool


def _float32_grid() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = np.array(
        [
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            88.72,
            88.7228393,
            88.73,
            -87.3,
            -103.9,
            -103.98,
            -110.0,
            1e30,
            -1e30,
            np.inf,
            -np.inf,
        ],
        dtype=np.float32,
    )
    dense = np.linspace(-110, 90, 200_001, dtype=np.float32)
    # Random bit patterns cover every exponent; keep the finite ones.
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([edges, dense, bits[np.isfinite(bits)]])


def _ulp_error(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    a = approx.astype(np.float32).view(np.int32).astype(np.int64)
    e = exact.astype(np.float32).view(np.int32).astype(np.int64)
    return np.abs(a - e)


def test_exp_is_within_one_ulp_of_correctly_rounded() -> None:
    x = np.linspace(-87, 88, 400_001, dtype=np.float32)
    exact = np.exp(x.astype(np.float64))  # float64 exp rounded once to float32
    assert _ulp_error(devicemath.exp(x), exact).max() <= 1


def test_exp_edges() -> None:
    x = np.array([np.inf, -np.inf, 100, -200, 0, np.nan], dtype=np.float32)
    y = devicemath.exp(x)
    assert y.dtype == np.float32
    assert y[0] == np.inf and y[1] == 0 and y[2] == np.inf and y[3] == 0 and y[4] == 1
    assert np.isnan(y[5])


def test_logistic_tanh_softmax_accuracy() -> None:
    x = np.linspace(-30, 30, 10_001, dtype=np.float32)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(
        devicemath.logistic(x), 1 / (1 + np.exp(-x64)), rtol=3e-7, atol=1e-30
    )
    np.testing.assert_allclose(devicemath.tanh(x), np.tanh(x64), rtol=3e-7, atol=1e-7)
    z = np.random.default_rng(1).normal(0, 10, (500, 7)).astype(np.float32)
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(devicemath.softmax(z), e / e.sum(axis=1, keepdims=True), atol=1e-6)


HARNESS = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
%s
int main(void) {
    float x;
    while (fread(&x, sizeof x, 1, stdin) == 1) {
        float y[3];
        y[0] = fedge_exp(x); y[1] = fedge_logistic(x); y[2] = fedge_tanh(x);
        fwrite(y, sizeof y, 1, stdout);
    }
    return 0;
}
"""


@pytest.mark.slow
def test_c_twin_is_bit_identical(tmp_path) -> None:
    gcc = require_tool("gcc", "gcc")
    src = tmp_path / "devmath.c"
    src.write_text(HARNESS % devicemath.C_SOURCE)
    exe = tmp_path / "devmath"
    subprocess.run(
        [
            gcc,
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            str(src),
            "-o",
            str(exe),
            "-lm",
        ],
        check=True,
        timeout=60,
    )
    x = _float32_grid()
    run = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, check=True, timeout=60)
    c = np.frombuffer(run.stdout, dtype=np.float32).reshape(-1, 3)
    ours = np.stack([devicemath.exp(x), devicemath.logistic(x), devicemath.tanh(x)], axis=1)
    assert c.shape == ours.shape
    differ = c.view(np.uint32) != ours.view(np.uint32)
    assert not differ.any(), f"{differ.sum()} outputs differ, e.g. x={x[differ.any(axis=1)][:5]}"
