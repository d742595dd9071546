"""fedge's own float32 math, written so that C can repeat it operation for operation.

numpy's ``exp`` and glibc's ``expf`` disagree on about 39% of float32 inputs, so a
device-parity claim needs one exp that both sides compute identically. Every
function here uses only IEEE float32 operations that are correctly rounded in
numpy and in C (+, -, *, /, floor, ldexp, comparisons) in a fixed order; the C
backend emits the same sequence (compiled with ``-ffp-contract=off`` so that no
multiply-add is fused). exp is within 1 ulp of the correctly rounded value on [-87, 88].

The C twin calls no libm function: ``floor`` (of a float in [-150, 129]) is a truncating
int conversion corrected by one comparison, and ``ldexp`` is a multiplication by a power of
two built from its exponent bits (two multiplications where 2**k is not a normal float32,
the first exact, so the result is rounded once, as ldexp rounds it). Both are exact
operations, so the C results keep numpy's bits, and a firmware links no ``floorf``,
``ldexpf`` or ``errno`` (about 570 B of flash and 100 B of RAM on Cortex-M).

All functions take and return float32 arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = [
    "C_FUNCTIONS",
    "C_INCLUDES",
    "C_SOURCE",
    "EXP_CONSTANTS",
    "exp",
    "logistic",
    "softmax",
    "tanh",
]

_F = np.float32

# Cody-Waite range reduction: x = k*ln2 + r with ln2 split into a high part with
# few significant bits (k*LN2_HI is exact for |k| < 2**9) and a low correction.
EXP_CONSTANTS: dict[str, float] = {
    "log2e": 1.44269502162933349609375,  # float32(log2(e))
    "ln2_hi": 0.693145751953125,
    "ln2_lo": 1.428606765330187045e-06,
    "overflow": 88.72283935546875,  # above: +inf
    "underflow": -103.972084045410156,  # below: 0
    # Taylor coefficients 1/n! for n = 7..0, in Horner order.
    "c7": 1.0 / 5040.0,
    "c6": 1.0 / 720.0,
    "c5": 1.0 / 120.0,
    "c4": 1.0 / 24.0,
    "c3": 1.0 / 6.0,
    "c2": 0.5,
    "c1": 1.0,
    "c0": 1.0,
}
_C = {k: _F(v) for k, v in EXP_CONSTANTS.items()}
_HORNER = ("c6", "c5", "c4", "c3", "c2", "c1", "c0")


def _ieee(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Overflow to inf and underflow to 0 are the intended IEEE results, as in C: no warnings."""

    @functools.wraps(fn)
    def wrapper(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return fn(x)

    return wrapper


@_ieee
def exp(x: np.ndarray) -> np.ndarray:
    """float32 ``e**x`` by range reduction and a degree-7 polynomial."""
    x = np.asarray(x, dtype=_F)
    big = x > _C["overflow"]
    small = x < _C["underflow"]
    nan = np.isnan(x)
    xc = np.where(big | small | nan, _F(0), x)
    k = np.floor(xc * _C["log2e"] + _F(0.5))
    r = (xc - k * _C["ln2_hi"]) - k * _C["ln2_lo"]
    p = _C["c7"]
    for name in _HORNER:
        p = p * r + _C[name]
    y = np.ldexp(p, k.astype(np.int32)).astype(_F)
    y = np.where(big, _F(np.inf), y)
    y = np.where(small, _F(0), y)
    return np.where(nan, x, y).astype(_F)


@_ieee
def logistic(x: np.ndarray) -> np.ndarray:
    """float32 ``1 / (1 + exp(-x))``."""
    x = np.asarray(x, dtype=_F)
    return (_F(1) / (_F(1) + exp(-x))).astype(_F)


@_ieee
def tanh(x: np.ndarray) -> np.ndarray:
    """float32 ``tanh(x) = sign(x) * (1 - e) / (1 + e)`` with ``e = exp(-2|x|)``."""
    x = np.asarray(x, dtype=_F)
    e = exp(_F(-2) * np.abs(x))
    t = (_F(1) - e) / (_F(1) + e)
    return np.where(x < 0, -t, t).astype(_F)


@_ieee
def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise float32 softmax: max, shifted exp, sequential sum, divide (C's loop order)."""
    z = np.asarray(z, dtype=_F)
    m = z[:, 0].copy()
    for j in range(1, z.shape[1]):
        m = np.where(z[:, j] > m, z[:, j], m)
    e = exp(z - m[:, None])
    s = e[:, 0].copy()
    for j in range(1, z.shape[1]):
        s = s + e[:, j]
    return (e / s[:, None]).astype(_F)


def _c_float(value: float) -> str:
    return f"{float(np.float32(value))!r}f"


# The same operations in C99, in the same order. The C backend emits these texts
# (with its prefix, only the ones a model uses) and tests compare them with the numpy
# functions bit for bit.
_EXP_C = (
    f"""\
static float fedge_exp(float x) {{
    union {{ uint32_t u; float f; }} s;  /* a power of two, from its exponent bits */
    float t, k, r, p;
    int n;
    if (x != x) return x;
    if (x > {_c_float(EXP_CONSTANTS["overflow"])}) return HUGE_VALF;
    if (x < {_c_float(EXP_CONSTANTS["underflow"])}) return 0.0f;
    t = x * {_c_float(EXP_CONSTANTS["log2e"])} + 0.5f;
    n = (int)t;  /* t is in [-150, 129]: truncation is exact */
    if ((float)n > t) n = n - 1;  /* floor(t) */
    k = (float)n;
    r = (x - k * {_c_float(EXP_CONSTANTS["ln2_hi"])}) - k * {_c_float(EXP_CONSTANTS["ln2_lo"])};
    p = {_c_float(EXP_CONSTANTS["c7"])};
"""
    + "".join(f"    p = p * r + {_c_float(EXP_CONSTANTS[name])};\n" for name in _HORNER)
    + f"""\
    /* p * 2**n rounded once, as ldexpf: p is in [0.7, 1.5), n in [-150, 128] */
    if (n > 127) return p * {_c_float(2.0**127)} * 2.0f;
    if (n < -126) {{  /* exact scaling to a normal float, then one rounding to subnormal */
        s.u = (uint32_t)(n + 32 + 127) << 23;
        return p * s.f * {_c_float(2.0**-32)};
    }}
    s.u = (uint32_t)(n + 127) << 23;
    return p * s.f;
}}
"""
)
C_FUNCTIONS: dict[str, str] = {
    "exp": _EXP_C,
    "logistic": """\
static float fedge_logistic(float x) {
    return 1.0f / (1.0f + fedge_exp(-x));
}
""",
    "tanh": """\
static float fedge_tanh(float x) {
    float e = fedge_exp(-2.0f * fabsf(x));
    float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}
""",
}
C_INCLUDES = ("math.h", "stdint.h")  # HUGE_VALF and fabsf; uint32_t
C_SOURCE = "".join(f"#include <{h}>\n" for h in C_INCLUDES) + "\n" + "\n".join(
    C_FUNCTIONS.values()
)
