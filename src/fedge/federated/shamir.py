"""Shamir secret sharing over the prime field GF(2^31 - 1), vectorised with numpy.

A secret is a vector of field elements (or a byte string, packed three bytes per element).
:func:`split_secret` draws one random polynomial of degree ``threshold - 1`` per element, with the
element as its constant term, and hands share holder ``i`` the values of all polynomials at the
holder's x-coordinate. Any ``threshold`` shares determine the polynomials and so the secret
(:func:`combine_shares`, Lagrange interpolation at 0); any ``threshold - 1`` shares are uniformly
distributed whatever the secret is, so they reveal nothing about it.

>>> shares = split_secret(b"a 32-byte key...................", threshold=3, n_shares=5)
>>> combine_shares(shares[1:4], threshold=3)
b'a 32-byte key...................'

Field choice and the no-overflow argument
-----------------------------------------
The field is GF(p) with the Mersenne prime ``p = 2**31 - 1`` (:data:`PRIME`). Every residue is
stored in an ``int64`` and lies in ``[0, p)``, i.e. below ``2**31``. The only operations are:

* a product of two residues followed by ``% p``: ``(p - 1)**2 < 2**62 < 2**63 - 1``, exact;
* one Horner step ``(acc * x + c) % p`` with ``acc, x, c < 2**31``:
  ``acc * x + c < 2**62 + 2**31 < 2**63 - 1``, exact;
* a difference of residues ``(a - b) % p`` with ``|a - b| < 2**31``: exact, and numpy's ``%``
  with a positive modulus returns a value in ``[0, p)``;
* a sum of ``r`` reduced products, each below ``2**31``: exact for ``r < 2**32``. The number
  of shares is capped at :data:`MAX_SHARES` (``2**16``), far below that.

So the arithmetic is exact in numpy ``int64`` with no 128-bit tricks, and each operation is one
vectorised numpy call over all secrets at once. A 32-byte key is 11 field elements; splitting it
into 100 shares with threshold 50 and combining is well under a millisecond of field arithmetic.

Randomness
----------
Polynomial coefficients come from the operating system's CSPRNG (:func:`os.urandom`), by
rejection sampling so every residue is exactly equally likely. Passing ``randomness=`` a seeded
:class:`numpy.random.Generator` makes the shares reproducible: **that is insecure** (numpy's
generators are not cryptographic) and meant for tests only.

What the checks catch
---------------------
:func:`combine_shares` rejects too few shares, duplicate or out-of-range x-coordinates, and shares
of different secrets (length mismatch). Given more than ``threshold`` shares it interpolates from
the first ``threshold`` and checks that every other share lies on the same polynomials, so a
corrupted share is detected as long as ``threshold + 1`` shares are available. With exactly
``threshold`` shares, any values interpolate to *some* secret: corruption is then only caught if
it pushes a byte-packed element out of ``[0, 2**24)`` (a random error does so with probability
``1 - 2**-7`` per element, a small one may not), so give it more shares when you can.

Errors about the shares themselves raise :class:`SecureAggregationError`; bad arguments (a
threshold above the number of shares, ...) raise :class:`~fedge.errors.InvalidInputError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError, SecureAggregationError

__all__ = [
    "MAX_SHARES",
    "PRIME",
    "SecureAggregationError",
    "Share",
    "combine_elements",
    "combine_shares",
    "evaluate_polynomials",
    "random_field_elements",
    "split_elements",
    "split_secret",
]

PRIME: int = 2**31 - 1
"""The field modulus: the Mersenne prime ``2**31 - 1`` (see the module docstring)."""

MAX_SHARES: int = 2**16
"""The largest number of shares one split (or combine) handles."""

_CHUNK_BYTES = 3  # bytes per field element: 2**24 < PRIME
_SHARE_MAGIC = b"fSS\x01"
_SHARE_HEADER = struct.Struct(">4sIII")  # magic, x, secret length in bytes, element count


# --------------------------------------------------------------------------------------------
# field helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _check_prime(prime: Any) -> int:
    if isinstance(prime, bool) or not isinstance(prime, int | np.integer):
        raise InvalidInputError(f"prime must be an integer, got {prime!r}.")
    p = int(prime)
    if p != PRIME and not (3 <= p <= PRIME and _is_prime(p)):
        raise InvalidInputError(
            f"prime must be a prime in [3, 2**31 - 1] (the no-overflow bound), got {p}."
        )
    return p


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}.")
    v = int(value)
    if not low <= v <= high:
        raise InvalidInputError(f"{name} must be in [{low}, {high}], got {v}.")
    return v


def _prod_mod(matrix: np.ndarray, p: int) -> np.ndarray:
    """Row products of ``matrix`` (residues) modulo ``p``: one vectorised product per column."""
    out = np.ones(matrix.shape[0], dtype=np.int64)
    for j in range(matrix.shape[1]):
        out = out * matrix[:, j] % p  # < 2**62: exact
    return out


def _inv_mod(a: np.ndarray, p: int) -> np.ndarray:
    """Elementwise inverse of nonzero residues: ``a ** (p - 2) mod p`` by square and multiply."""
    result = np.ones_like(a)
    base = a.copy()
    e = p - 2
    while e:
        if e & 1:
            result = result * base % p
        base = base * base % p
        e >>= 1
    return result


@lru_cache(maxsize=256)
def _lagrange(xs: tuple[int, ...], zs: tuple[int, ...], p: int) -> np.ndarray:
    """Matrix ``L`` with ``L[j, i] = prod_{m != i} (z_j - x_m) / (x_i - x_m)`` modulo ``p``.

    ``L @ f(xs) = f(zs)`` for every polynomial ``f`` of degree ``< len(xs)``. The ``xs`` are
    distinct and no ``z`` equals an ``x`` (checked by the callers), so every factor is nonzero.
    """
    X = np.asarray(xs, dtype=np.int64)
    Z = np.asarray(zs, dtype=np.int64)
    D = (X[:, None] - X[None, :]) % p
    np.fill_diagonal(D, 1)
    w = _inv_mod(_prod_mod(D, p), p)  # barycentric weights 1 / prod_{m != i} (x_i - x_m)
    E = (Z[:, None] - X[None, :]) % p  # (len(zs), len(xs)), all nonzero
    full = _prod_mod(E, p)
    L = full[:, None] * _inv_mod(E, p) % p
    L = L * w[None, :] % p
    L.setflags(write=False)
    return L


def _apply(L: np.ndarray, ys: np.ndarray, p: int) -> np.ndarray:
    """``L @ ys`` modulo ``p`` without overflow: reduce each product before summing."""
    acc = np.zeros((L.shape[0], ys.shape[1]), dtype=np.int64)
    for i in range(L.shape[1]):
        acc += L[:, i, None] * ys[None, i, :] % p  # each term < 2**31; <= 2**16 terms
    return acc % p


def random_field_elements(
    shape: int | tuple[int, ...],
    *,
    randomness: np.random.Generator | None = None,
    prime: int = PRIME,
) -> np.ndarray:
    """Uniform residues in ``[0, prime)`` as ``int64``.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the output.
    randomness : numpy.random.Generator, optional
        ``None`` (default) draws from :func:`os.urandom` with rejection sampling (exactly
        uniform, cryptographically secure). A seeded generator gives reproducible output and
        is **insecure**: use it in tests only.
    prime : int, default PRIME
        The field modulus.

    Returns
    -------
    numpy.ndarray
        ``int64`` array of the given shape.
    """
    p = _check_prime(prime)
    if randomness is not None:
        return randomness.integers(0, p, size=shape, dtype=np.int64)
    out = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    mask = np.uint64((1 << p.bit_length()) - 1)
    todo = np.arange(out.size)
    while todo.size:  # each draw is accepted with probability p / 2**bits >= 1/2
        draw = np.frombuffer(os.urandom(8 * todo.size), dtype=np.uint64) & mask
        ok = draw < np.uint64(p)
        out[todo[ok]] = draw[ok].astype(np.int64)
        todo = todo[~ok]
    return out.reshape(shape)


def _check_xs(x: Any, n: int | None, p: int) -> np.ndarray:
    xs = np.asarray(x)
    if xs.ndim != 1 or (xs.size and not np.issubdtype(xs.dtype, np.integer)):
        raise SecureAggregationError(f"x-coordinates must be a 1-D array of integers, got {x!r}.")
    if n is not None and xs.size != n:
        raise InvalidInputError(f"expected {n} x-coordinates, got {xs.size}.")
    if xs.size and (int(xs.min()) < 1 or int(xs.max()) >= p):
        raise SecureAggregationError(
            f"x-coordinates must lie in [1, {p - 1}] (0 would reveal the secret), got "
            f"{xs.tolist()}."
        )
    if np.unique(xs).size != xs.size:
        raise SecureAggregationError(f"duplicate x-coordinates among {xs.tolist()}.")
    return xs.astype(np.int64)


# --------------------------------------------------------------------------------------------
# field-element API
# --------------------------------------------------------------------------------------------


def evaluate_polynomials(
    coefficients: np.ndarray, x: np.ndarray, *, prime: int = PRIME
) -> np.ndarray:
    """Evaluate polynomials at points, modulo ``prime`` (Horner's rule, vectorised).

    Parameters
    ----------
    coefficients : numpy.ndarray
        ``(degree + 1, m)`` residues; row ``j`` holds the coefficients of ``X**j`` of the ``m``
        polynomials (row 0 is the constant term, i.e. the secret).
    x : numpy.ndarray
        ``(n,)`` residues, the evaluation points.
    prime : int, default PRIME

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` ``int64``: the value of polynomial ``k`` at ``x[i]`` in ``[i, k]``.
    """
    p = _check_prime(prime)
    c = np.asarray(coefficients, dtype=np.int64)
    xs = np.asarray(x, dtype=np.int64)[:, None]
    acc = np.zeros((xs.shape[0], c.shape[1]), dtype=np.int64)
    for row in c[::-1]:
        acc = (acc * xs + row[None, :]) % p  # < 2**62 + 2**31: exact
    return acc


def split_elements(
    secret: np.ndarray,
    threshold: int,
    n_shares: int,
    *,
    x: Sequence[int] | np.ndarray | None = None,
    randomness: np.random.Generator | None = None,
    prime: int = PRIME,
) -> tuple[np.ndarray, np.ndarray]:
    """Split field elements into ``n_shares`` shares, any ``threshold`` of which recover them.

    Parameters
    ----------
    secret : numpy.ndarray
        1-D integers in ``[0, prime)``; each element gets its own random polynomial.
    threshold : int
        Number of shares needed to recover, ``1 <= threshold <= n_shares``.
    n_shares : int
        Number of shares, at most :data:`MAX_SHARES`.
    x : sequence of int, optional
        Distinct x-coordinates in ``[1, prime)``, one per share; default ``1..n_shares``.
    randomness : numpy.random.Generator, optional
        Source of the polynomial coefficients; ``None`` = :func:`os.urandom`. A seeded
        generator is **insecure** (tests only).
    prime : int, default PRIME

    Returns
    -------
    xs : numpy.ndarray
        ``(n_shares,)`` ``int64`` x-coordinates.
    ys : numpy.ndarray
        ``(n_shares, len(secret))`` ``int64``: share ``i`` is ``(xs[i], ys[i])``.
    """
    p = _check_prime(prime)
    n = _check_int("n_shares", n_shares, 1, MAX_SHARES)
    t = _check_int("threshold", threshold, 1, n)
    s = np.asarray(secret)
    if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
        raise InvalidInputError("secret must be a 1-D array of integers (field elements).")
    if s.size and (int(s.min()) < 0 or int(s.max()) >= p):
        raise InvalidInputError(f"secret elements must lie in [0, {p}).")
    xs = _check_xs(np.arange(1, n + 1) if x is None else x, n, p)
    coefficients = np.empty((t, s.size), dtype=np.int64)
    coefficients[0] = s
    coefficients[1:] = random_field_elements((t - 1, s.size), randomness=randomness, prime=p)
    return xs, evaluate_polynomials(coefficients, xs, prime=p)


def combine_elements(
    x: Sequence[int] | np.ndarray, y: np.ndarray, threshold: int, *, prime: int = PRIME
) -> np.ndarray:
    """Recover the field elements from ``len(x) >= threshold`` shares.

    Interpolates at 0 from the first ``threshold`` shares; if more are given, checks that all of
    them lie on the same polynomials of degree ``< threshold``.

    Parameters
    ----------
    x : sequence of int
        The shares' distinct x-coordinates.
    y : numpy.ndarray
        ``(len(x), m)`` residues, the shares' values.
    threshold : int
        The threshold the secret was split with.
    prime : int, default PRIME

    Returns
    -------
    numpy.ndarray
        ``(m,)`` ``int64``: the secret.

    Raises
    ------
    SecureAggregationError
        Too few shares, duplicate or out-of-range x-coordinates, values outside the field, or
        shares that do not lie on one polynomial of degree ``< threshold``.
    """
    p = _check_prime(prime)
    t = _check_int("threshold", threshold, 1, MAX_SHARES)
    xs = _check_xs(x, None, p)
    ys = np.asarray(y)
    integral = not ys.size or np.issubdtype(ys.dtype, np.integer)
    if ys.ndim != 2 or ys.shape[0] != xs.size or not integral:
        raise SecureAggregationError(
            f"share values must be an integer array of shape ({xs.size}, m), got shape "
            f"{ys.shape} and dtype {ys.dtype}."
        )
    if xs.size < t:
        raise SecureAggregationError(
            f"too few shares: {xs.size} given, the threshold is {t}; at least {t} share "
            "holders must respond."
        )
    if xs.size > MAX_SHARES:
        raise SecureAggregationError(f"at most {MAX_SHARES} shares can be combined.")
    if ys.size and (int(ys.min()) < 0 or int(ys.max()) >= p):
        raise SecureAggregationError(f"share values must lie in [0, {p}): corrupted share.")
    ys = ys.astype(np.int64, copy=False)
    base = tuple(int(v) for v in xs[:t])
    secret = _apply(_lagrange(base, (0,), p), ys[:t], p)[0]
    if xs.size > t:
        extra = tuple(int(v) for v in xs[t:])
        predicted = _apply(_lagrange(base, extra, p), ys[:t], p)
        bad = np.flatnonzero((predicted != ys[t:]).any(axis=1))
        if bad.size:
            raise SecureAggregationError(
                f"inconsistent shares: the shares at x={[extra[i] for i in bad]} do not lie on "
                f"the polynomial of degree < {t} through the others; at least one share is "
                "corrupted."
            )
    return secret


# --------------------------------------------------------------------------------------------
# byte-string API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Share:
    """One share of a byte-string secret.

    Attributes
    ----------
    x : int
        The share's x-coordinate in ``[1, PRIME)`` (the holder's identity in the sharing).
    values : numpy.ndarray
        Read-only ``int64`` residues, one per 3-byte chunk of the secret.
    length : int
        Length of the secret in bytes (so the padding of the last chunk can be removed).
    """

    x: int
    values: np.ndarray
    length: int

    def __post_init__(self) -> None:
        if isinstance(self.x, bool) or not isinstance(self.x, int | np.integer):
            raise SecureAggregationError(f"a share's x must be an integer, got {self.x!r}.")
        if not 1 <= int(self.x) < PRIME:
            raise SecureAggregationError(f"a share's x must lie in [1, {PRIME}), got {self.x}.")
        if isinstance(self.length, bool) or not isinstance(self.length, int | np.integer):
            raise SecureAggregationError(
                f"a share's length must be an integer, got {self.length!r}."
            )
        if int(self.length) < 1:
            raise SecureAggregationError(f"a share's length must be >= 1, got {self.length}.")
        values = np.asarray(self.values)
        count = -(-int(self.length) // _CHUNK_BYTES)
        if values.shape != (count,) or values.dtype.kind not in "iu":
            raise SecureAggregationError(
                f"a share of a {self.length}-byte secret holds {count} integers, got an array "
                f"of shape {values.shape} and dtype {values.dtype}."
            )
        if int(values.min()) < 0 or int(values.max()) >= PRIME:
            raise SecureAggregationError(f"share values must lie in [0, {PRIME}).")
        values = np.array(values, dtype=np.int64)
        values.setflags(write=False)
        object.__setattr__(self, "x", int(self.x))
        object.__setattr__(self, "length", int(self.length))
        object.__setattr__(self, "values", values)

    @classmethod
    def _trusted(cls, x: int, values: np.ndarray, length: int) -> Share:
        """Build a share from already validated parts (read-only int64 values), no checks."""
        share = object.__new__(cls)
        object.__setattr__(share, "x", x)
        object.__setattr__(share, "values", values)
        object.__setattr__(share, "length", length)
        return share

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Share):
            return NotImplemented
        return (
            self.x == other.x
            and self.length == other.length
            and bool(np.array_equal(self.values, other.values))
        )

    def __hash__(self) -> int:
        return hash((self.x, self.length, self.values.tobytes()))

    def to_bytes(self) -> bytes:
        """Serialise: a 16-byte header (magic, x, length, count) and big-endian uint32 values."""
        header = _SHARE_HEADER.pack(_SHARE_MAGIC, self.x, self.length, self.values.size)
        return header + self.values.astype(">u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse :meth:`to_bytes` output, validating every field.

        Raises
        ------
        SecureAggregationError
            Wrong magic or version, truncated or trailing bytes, or out-of-range values.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SecureAggregationError(f"a serialised share must be bytes, got {type(data)}.")
        data = bytes(data)
        if len(data) < _SHARE_HEADER.size:
            raise SecureAggregationError("truncated share: shorter than its header.")
        magic, x, length, count = _SHARE_HEADER.unpack_from(data)
        if magic != _SHARE_MAGIC:
            raise SecureAggregationError("not a fedge Shamir share (bad magic or version).")
        if len(data) != _SHARE_HEADER.size + 4 * count:
            raise SecureAggregationError(
                f"malformed share: header announces {count} values, body holds "
                f"{(len(data) - _SHARE_HEADER.size) / 4:g}."
            )
        if not 1 <= x < PRIME or length < 1 or count != -(-length // _CHUNK_BYTES):
            raise SecureAggregationError(
                f"malformed share: x={x}, length={length}, count={count} are inconsistent."
            )
        values = np.frombuffer(data, dtype=">u4", offset=_SHARE_HEADER.size).astype(np.int64)
        if int(values.max()) >= PRIME:
            raise SecureAggregationError(f"share values must lie in [0, {PRIME}).")
        values.setflags(write=False)
        return cls._trusted(x, values, length)


def _pack(secret: bytes) -> np.ndarray:
    padded = secret + bytes(-len(secret) % _CHUNK_BYTES)
    b = np.frombuffer(padded, dtype=np.uint8).reshape(-1, _CHUNK_BYTES).astype(np.int64)
    return (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]


def _unpack(elements: np.ndarray, length: int) -> bytes:
    if int(elements.max(initial=0)) >= 1 << (8 * _CHUNK_BYTES):
        raise SecureAggregationError(
            "the recovered secret is out of range: at least one share is corrupted."
        )
    b = np.stack([(elements >> 16) & 0xFF, (elements >> 8) & 0xFF, elements & 0xFF], axis=1)
    raw = b.astype(np.uint8).tobytes()
    if any(raw[length:]):
        raise SecureAggregationError(
            "the recovered secret has nonzero padding: at least one share is corrupted."
        )
    return raw[:length]


def split_secret(
    secret: bytes,
    threshold: int,
    n_shares: int,
    *,
    x: Sequence[int] | np.ndarray | None = None,
    randomness: np.random.Generator | None = None,
) -> list[Share]:
    """Split a byte string into ``n_shares`` shares, any ``threshold`` of which recover it.

    Parameters
    ----------
    secret : bytes
        The secret, at least one byte (packed three bytes per field element).
    threshold : int
        Shares needed to recover, ``1 <= threshold <= n_shares``. ``threshold - 1`` shares
        reveal nothing about the secret.
    n_shares : int
        Number of shares, at most :data:`MAX_SHARES`.
    x : sequence of int, optional
        Distinct x-coordinates in ``[1, PRIME)``, one per share; default ``1..n_shares``.
    randomness : numpy.random.Generator, optional
        ``None`` (default): coefficients from :func:`os.urandom`. A seeded generator is
        **insecure** and meant for reproducible tests only.

    Returns
    -------
    list of Share
        In the order of ``x``.
    """
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise InvalidInputError("secret must be a non-empty bytes object.")
    xs, ys = split_elements(_pack(bytes(secret)), threshold, n_shares, x=x, randomness=randomness)
    ys.setflags(write=False)  # each share holds a read-only row view of this private array
    return [Share._trusted(int(xi), yi, len(secret)) for xi, yi in zip(xs, ys, strict=True)]


def combine_shares(shares: Sequence[Share], threshold: int) -> bytes:
    """Recover a byte-string secret from at least ``threshold`` of its shares.

    Parameters
    ----------
    shares : sequence of Share
        Shares of one secret, in any order, with distinct x-coordinates. Giving more than
        ``threshold`` enables the consistency check that detects corrupted shares.
    threshold : int
        The threshold the secret was split with.

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    SecureAggregationError
        Too few shares, duplicates, shares of different secrets, or inconsistent (corrupted)
        shares.
    """
    shares = list(shares)
    if not all(isinstance(s, Share) for s in shares):
        raise SecureAggregationError("combine_shares takes Share objects.")
    t = _check_int("threshold", threshold, 1, MAX_SHARES)
    if len(shares) < t:
        raise SecureAggregationError(
            f"too few shares: {len(shares)} given, the threshold is {t}; at least {t} share "
            "holders must respond."
        )
    lengths = {s.length for s in shares}
    if len(lengths) != 1:
        raise SecureAggregationError(
            f"the shares belong to different secrets (lengths {sorted(lengths)})."
        )
    xs = np.array([s.x for s in shares], dtype=np.int64)
    ys = np.stack([s.values for s in shares])
    return _unpack(combine_elements(xs, ys, t), lengths.pop())
