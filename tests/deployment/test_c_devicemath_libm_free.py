"""The C device math calls no libm function, and keeps numpy device mode's bits.

Claims: the C exp (floor as a corrected int conversion, ldexp as a multiplication by a power
of two built from its exponent bits) equals :func:`fedge.ir.devicemath.exp` bit for bit over
a wide sample of the float32 space, every float32 whose exp is subnormal or overflows, every
floor boundary of the range reduction, NaN (payload kept), +-inf, +-0 and the thresholds;
logistic and tanh follow. Generated C for every model that uses the math leaves no libm
symbol (floorf, ldexpf, errno, ...) undefined, on the host and on the MCU targets, and a
30-feature logistic regression takes under 1 KiB of flash and RAM on the FPU Cortex-M
targets (it took 1,044 B of flash and 100 B of RAM with newlib's floorf/ldexpf).
"""

from __future__ import annotations

import ctypes
import subprocess
import warnings

import numpy as np
import pytest

from fedge.deployment.devices import DEVICES, compile_object
from fedge.deployment.formats.c.emit import emit_c
from fedge.ir import devicemath, lower
from tools import require_tool

pytestmark = pytest.mark.slow

LIB = r"""
void run_math(const float *x, long n, float *out) {
    long i;
    for (i = 0; i < n; ++i) {
        out[3 * i] = fedge_exp(x[i]);
        out[3 * i + 1] = fedge_logistic(x[i]);
        out[3 * i + 2] = fedge_tanh(x[i]);
    }
}
"""

# Names a libm-free model must not leave undefined (the C library's math and its errno).
LIBM = {"floorf", "ldexpf", "scalbnf", "expf", "exp", "floor", "ldexp", "fabsf", "errno"}


@pytest.fixture(scope="module")
def c_math(tmp_path_factory):
    gcc = require_tool("gcc", "gcc")
    d = tmp_path_factory.mktemp("devmath")
    (d / "m.c").write_text(devicemath.C_SOURCE + LIB)
    so = d / "libm_free.so"
    flags = ["-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    subprocess.run([gcc, *flags, "-shared", "-fPIC", str(d / "m.c"), "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
    lib.run_math.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((x.size, 3), dtype=np.float32)
        lib.run_math(x.ctypes.data, x.size, out.ctypes.data)
        return out

    return run


def _bits(lo: int, hi: int, step: int = 1) -> np.ndarray:
    return np.arange(lo, hi, step, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _range(a: float, b: float) -> np.ndarray:
    """Every float32 from a to b (same sign), inclusive."""
    lo, hi = sorted(int(np.float32(v).view(np.uint32)) for v in (a, b))
    return _bits(lo, hi + 1)


PARTS = ["sample", "subnormal", "overflow", "unit", "floor_boundaries", "edges"]


def _inputs() -> dict[str, np.ndarray]:
    f = np.float32
    tiny, big = np.finfo(f).smallest_subnormal, np.finfo(f).max
    over = f(devicemath.EXP_CONSTANTS["overflow"])
    under = f(devicemath.EXP_CONSTANTS["underflow"])
    log2e = devicemath.EXP_CONSTANTS["log2e"]
    # Where x * log2e + 0.5 crosses each integer n (floor's boundaries), 64 floats each side.
    centres = np.array([(n - 0.5) / log2e for n in range(-152, 131)], dtype=f).view(np.uint32)
    around = (centres[:, None].astype(np.int64) + np.arange(-64, 65)).ravel()
    edges = np.array(
        [0.0, -0.0, tiny, -tiny, big, -big, np.inf, -np.inf, 1.0, -1.0, 0.5, -0.5], dtype=f
    )
    thresholds = np.array(
        [np.nextafter(v, f(d)) for v in (over, under) for d in (np.inf, -np.inf)] + [over, under],
        dtype=f,
    )
    nans = np.array(
        [0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7F800001, 0xFFBFFFFF, 0x7FFFFFFF], dtype=np.uint32
    ).view(f)
    return {
        # every 509th bit pattern: all signs, exponents and mantissa residues
        "sample": _bits(0, 2**32, 509),
        # every float whose exp is subnormal or flushes to 0, and the underflow edge
        "subnormal": _range(-86.0, -105.0),
        # every float around the overflow threshold
        "overflow": _range(88.0, 89.0),
        # every float in [1, 2] and in [-1, -0.875]: dense over the polynomial's range
        "unit": np.concatenate([_range(1.0, 2.0), _range(-0.875, -1.0)]),
        "floor_boundaries": around.astype(np.uint32).view(f),
        "edges": np.concatenate([edges, thresholds, nans]),
    }


@pytest.mark.parametrize("part", PARTS)
def test_c_exp_logistic_tanh_bit_identical_to_numpy(c_math, part: str) -> None:
    x = _inputs()[part]
    c = c_math(x)
    with np.errstate(invalid="ignore"):  # NaN inputs
        ours = np.stack([devicemath.exp(x), devicemath.logistic(x), devicemath.tanh(x)], axis=1)
    nan = np.isnan(c) & np.isnan(ours)
    differ = (c.view(np.uint32) != ours.view(np.uint32)) & ~nan
    assert not differ.any(), f"{differ.sum()} outputs differ, e.g. x={x[differ.any(axis=1)][:5]}"
    # exp returns a NaN input itself (payload and sign), as numpy's np.where(nan, x, y)
    isnan = np.isnan(x)
    assert (c[isnan, 0].view(np.uint32) == x[isnan].view(np.uint32)).all()
    if part == "subnormal":
        sub = (c[:, 0] > 0) & (c[:, 0] < np.finfo(np.float32).tiny)
        assert sub.sum() > 1_000_000  # the single-rounding path is really exercised
        assert (c[:, 0] == 0).any()
    if part == "overflow":
        assert np.isinf(c[:, 0]).any() and np.isfinite(c[:, 0]).any()


def _models():
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(120, 6, n_informative=4, n_classes=3, random_state=0)
    Xr, yr = make_regression(120, 6, random_state=0)
    yield "logistic", LogisticRegression(max_iter=500).fit(X, y == 0)
    yield "softmax", LogisticRegression(max_iter=500).fit(X, y)
    mlp = MLPClassifier((5,), activation="tanh", max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a few iterations are enough here
        mlp.fit(X, y)
    yield "mlp-tanh", mlp
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=3, random_state=0)
    yield "poisson-exp", poisson.fit(Xr, np.abs(yr) / 100)


TARGETS = ["host", "cortex-m4f", "cortex-m3", "cortex-m0plus", "arduino-uno", "esp32c3"]


@pytest.mark.parametrize("target", TARGETS)
def test_generated_c_leaves_no_libm_symbol_undefined(tmp_path, target: str) -> None:
    t = DEVICES[target]
    require_tool(t.compiler, t.package_of(t.compiler))
    nm = require_tool(t.size_tool[: -len("size")] + "nm", t.package_of(t.size_tool))
    for name, est in _models():
        code = emit_c(lower(est), "m")
        assert "_exp(" in code.source, name
        (tmp_path / "m.h").write_text(code.header)
        (tmp_path / "m.c").write_text(code.source)
        obj = compile_object(t, tmp_path / "m.c", tmp_path / f"{name}.o", include=(tmp_path,))
        out = subprocess.run([nm, "-u", str(obj)], capture_output=True, check=True, text=True)
        undefined = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
        assert not undefined & LIBM, (name, undefined)
        # only the compiler's soft-float runtime (__aeabi_*, __addsf3, ...) and memcpy (tree
        # batch walks) may remain
        rest = {s for s in undefined if not s.startswith("__") or "errno" in s} - {"memcpy"}
        assert not rest, (name, undefined)


@pytest.mark.parametrize("target", ["cortex-m4f", "cortex-m7"])
def test_logistic_regression_on_30_features_fits_1kib_on_fpu_cortex_m(target: str) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from fedge.deployment.device_verify import measure_footprint

    t = DEVICES[target]
    require_tool(t.compiler, t.package_of(t.compiler))
    X, y = load_breast_cancer(return_X_y=True)
    fp = measure_footprint(LogisticRegression(max_iter=5000).fit(X, y), target)
    assert fp.flash_bytes < 1024, fp.message
    assert fp.ram_bytes + (fp.stack_bytes or 0) < 1024, fp.message
    assert fp.ram_bytes == 0, fp.message  # no errno, no tables in RAM
