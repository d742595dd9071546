"""Secure aggregation: the server learns the sum of the clients' vectors and nothing else.

This is the protocol of Bonawitz et al., *Practical Secure Aggregation for Privacy-Preserving
Machine Learning* (CCS 2017) for a semi-honest server, with the consistency checks an honest
client makes before it reveals anything, and the SecAgg+ option of Bell et al., *Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead* (CCS 2020): each client is paired
with ``k`` neighbours in a random regular graph derived from a public round seed instead of with
every other client, so the cost per client is ``O(k)`` instead of ``O(n)``.

How it works
------------
Each client ``u`` masks its fixed-point vector ``x_u`` (in the ring ``Z_{2**64}``) as::

    y_u = x_u + PRG(b_u) + sum_{v in N(u), u < v} PRG(s_uv) - sum_{v in N(u), v < u} PRG(s_uv)

where ``b_u`` is a fresh random *self-mask seed* and ``s_uv = s_vu`` is agreed by X25519 between
``u``'s and ``v``'s *masking keys*. Summed over all clients the pairwise masks cancel. Both
``b_u`` and the masking private key ``s_u^SK`` are Shamir-shared (:mod:`fedge.federated.shamir`)
among ``u``'s share holders (``u`` and its neighbours), ``threshold`` of them needed to recover.
After the masked inputs arrive, the server asks each surviving client for its shares of ``b_v``
for every surviving ``v`` and of ``s_d^SK`` for every ``d`` that dropped out after sharing its
keys; from ``threshold`` shares it rebuilds them, removes the self masks of the survivors and the
pairwise masks the survivors share with dropped clients, and is left with
``sum_{u survivors} x_u``. An honest client never reveals both secrets of one client, so the
server can never strip all masks from an individual ``y_u``.

The four stages (:class:`Stage`), as an explicit stage machine on both sides:

0. **Advertise keys.** Each client sends two fresh X25519 public keys: the *encryption key*
   ``c_u^PK`` and the *masking key* ``s_u^PK`` (:class:`AdvertiseKeys`). The server broadcasts
   the roster of all advertisements it received.
1. **Share keys.** Each client derives its neighbours from the roster, Shamir-shares ``b_u``
   and ``s_u^SK`` and sends one :class:`EncryptedShare` per neighbour: AES-256-GCM under a key
   derived with HKDF-SHA256 from X25519 of the two clients' encryption keys, with associated
   data binding protocol version, round id, stage, sender and recipient. The server only
   forwards the ciphertexts.
2. **Masked input collection.** Each client decrypts the shares addressed to it, encodes its
   vector in fixed point (clipping it to the round's bound, or refusing), adds its masks and
   sends a :class:`MaskedInput`.
3. **Unmasking.** The server sends one :class:`UnmaskRequest` (survivors and dropped clients);
   each surviving client answers with an :class:`UnmaskResponse`; the server rebuilds the masks
   and decodes the sum.

Clients that drop out at any stage are recovered as long as enough survive: in full SecAgg at
least ``threshold`` clients at every stage; under SecAgg+ at least ``threshold`` of every
client's share holders (itself and its neighbours). Below that the round aborts with
:class:`SecureAggregationError` before any share is revealed, except when clients vanish during
unmasking itself; even then nothing about an individual input is revealed (a revealed self-mask
still leaves the pairwise masks with the other ``>= threshold - 1`` surviving holders, whose
masking keys are never revealed).

Threat model and what an honest client checks
---------------------------------------------
The server is assumed semi-honest (it follows the protocol but tries to learn inputs), as are
clients, with fewer than ``threshold`` of any client's share holders colluding with the server.
Every message carries the round id, its stage and its sender; a client processes each stage
exactly once and *aborts the round for good* on any violation (it never answers a second,
different request). It refuses:

* a roster that lacks it, alters its keys, is smaller than ``threshold``, has keys of the wrong
  size, repeated keys, entries from another round or stage, or is too large for the fixed-point
  overflow bound;
* shares that are not addressed to it, come from a client that is not its neighbour, fail
  AES-GCM authentication (tampering, replay from another pair, round or stage), or do not carry
  its own x-coordinate;
* an unmasking request whose survivor and dropped sets intersect (that would hand over both the
  self-mask share and the secret-key share of one client), that does not list it as a survivor,
  that disagrees with the set of clients that shared keys with it, or that names fewer than
  ``threshold`` survivors among its share holders.

Against a *malicious* server that shows different clients different survivor sets, Bonawitz et
al. add a consistency round with signatures; that round and a PKI are not implemented here.

Fixed point and the overflow bound
----------------------------------
A float ``v`` with ``|v| <= bound`` (``B``) is encoded as ``q = rint(v * 2**scale_bits)``, an
integer with ``|q| <= Q = ceil(B * 2**f)``, stored as its two's complement in ``uint64``
(:func:`encode_fixed_point`). numpy's ``uint64`` addition wraps modulo ``2**64``, so masks add
and cancel exactly. The ring sum of ``n`` encodings is congruent to the integer sum ``S`` with
``|S| <= n * Q``; if ``n * Q <= 2**63 - 1`` (:meth:`SecAggConfig.overflow_ok`) then ``S`` is
exactly the *signed* (``int64``) reading of the ring sum, which :func:`decode_fixed_point`
divides by ``2**f``. So the decoded sum is exact up to the rounding of each coordinate, at most
``n * 2**-(f + 1)`` in total. Integer noise added to the encoding (distributed DP) must be counted
in the bound: ``overflow_ok(n, noise_bound=...)``. Clients enforce the bound themselves
(clipping by default): the server sees only the sum and cannot check an individual update.

Randomness
----------
Keys come from ``cryptography``'s X25519 (the OS CSPRNG), seeds from :mod:`secrets`, Shamir
coefficients from :func:`os.urandom`. Masks are AES-256-CTR keystreams (one per seed, read as
little-endian ``uint64``) keyed by HKDF-SHA256 outputs with domain separation and the round id.
A seeded :class:`numpy.random.Generator` passed as ``randomness=`` makes keys, seeds and shares
reproducible: **that is insecure** and meant for tests only.

API
---
:class:`SecAggConfig` holds the public round parameters. :class:`SecAggClient` and
:class:`SecAggServer` exchange the plain dataclass messages above (no networking: a transport
carries them). :func:`secure_sum` runs a whole round in-process, with clients dropping out at
chosen stages. :func:`neighbour_graph` is the SecAgg+ graph.

>>> import numpy as np
>>> config = SecAggConfig(threshold=2, vector_length=3, bound=10.0)
>>> vectors = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.5, -2.0, 1.0]),
...            "c": np.array([-1.0, 0.25, 0.0])}
>>> result = secure_sum(vectors, config, drop={"c": 2})  # c drops before sending its input
>>> result.sum, result.survivors
(array([1.5, 0. , 4. ]), ('a', 'b'))

Rules for the code that drives a round
--------------------------------------
* Use a new ``round_id`` for every round (and a fresh ``round_seed`` under SecAgg+) and new
  :class:`SecAggClient` objects: keys, seeds and shares are single-use.
* ``threshold``: at least 2, at most the number of share holders (``n`` in full SecAgg,
  ``k + 1`` under SecAgg+). The round survives as long as at least ``threshold`` clients (and,
  under SecAgg+, ``threshold`` of every client's holders) remain at each stage; choose it above
  half the holders so that a minority colluding with the server cannot rebuild both secrets.
* ``bound`` and ``scale_bits``: every client clips each coordinate to ``[-bound, bound]``, so
  the values that travel must be what is summed, e.g. ``weight * parameters`` with weights
  normalised to at most 1 (or the weight appended as one more coordinate). Check
  ``config.overflow_ok(n, noise_bound=...)`` for the number of clients selected; the server
  refuses to start otherwise.
* What the server sees: public keys, opaque ciphertexts, uniformly masked vectors, the
  survivors' self-mask seeds, the dropped clients' masking keys and the sum. It cannot validate,
  clip, weight-check or norm-check an individual update: robust aggregators (median, trimmed
  mean, Krum) and per-update checks are incompatible with secure aggregation.
* A client whose message the server refuses is simply treated as dropped; a client that
  aborts (a protocol violation) sends nothing more. Both are covered by the dropout recovery.
* The sum covers exactly ``result()[1]`` (the clients that sent a masked input): divide by
  their total weight, not by the number selected.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedge.errors import InvalidInputError
from fedge.federated.shamir import SecureAggregationError, Share, combine_shares, split_secret

__all__ = [
    "AdvertiseKeys",
    "EncryptedShare",
    "MaskedInput",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "SecureAggregationError",
    "SecureSumResult",
    "Stage",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_fixed_point",
    "encode_fixed_point",
    "neighbour_graph",
    "prg_mask",
    "secure_sum",
]

_VERSION = b"fedge-secagg/v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_MAX_ENCODED = 2**62  # largest per-client encoded magnitude: at least two clients always fit
_INT64_MAX = 2**63 - 1


class Stage(IntEnum):
    """The four stages of a secure aggregation round, in order."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    UNMASKING = 3


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}.")
    v = int(value)
    if v < low or (high is not None and v > high):
        upper = "" if high is None else f", <= {high}"
        raise InvalidInputError(f"{name} must be >= {low}{upper}, got {v}.")
    return v


def _client_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value.encode("utf-8")) > 255:
        raise InvalidInputError(f"a client id must be a non-empty str of <= 255 bytes: {value!r}.")
    return value


def _fail(message: str) -> SecureAggregationError:
    return SecureAggregationError(message)


# --------------------------------------------------------------------------------------------
# fixed point
# --------------------------------------------------------------------------------------------


def _check_scale(scale_bits: Any, bound: Any) -> tuple[int, float]:
    f = _int("scale_bits", scale_bits, 0, 62)
    if isinstance(bound, bool) or not isinstance(bound, int | float | np.integer | np.floating):
        raise InvalidInputError(f"bound must be a real number, got {bound!r}.")
    b = float(bound)
    if not math.isfinite(b) or b <= 0:
        raise InvalidInputError(f"bound must be finite and > 0, got {bound!r}.")
    if math.ceil(b * 2.0**f) > _MAX_ENCODED:
        raise InvalidInputError(
            f"bound * 2**scale_bits = {b * 2.0**f:.3g} exceeds 2**62: lower the bound or "
            "scale_bits."
        )
    return f, b


def encode_fixed_point(
    x: np.ndarray | Sequence[float], scale_bits: int, bound: float, *, clip: bool = True
) -> np.ndarray:
    """Encode floats as fixed-point integers in the ring ``Z_{2**64}`` (``uint64``).

    ``q = rint(clip(x, -bound, bound) * 2**scale_bits)``, stored as two's complement.

    Parameters
    ----------
    x : array_like of float
        The values; NaN and infinities are refused.
    scale_bits : int
        ``f`` in the scale ``2**f`` (0 to 62); the rounding error per value is ``<= 2**-(f+1)``.
    bound : float
        The clip range ``B``: ``|x| <= B`` is enforced. ``B * 2**f`` must not exceed ``2**62``.
    clip : bool, default True
        Clip values outside ``[-B, B]``; with ``False`` such values raise instead.

    Returns
    -------
    numpy.ndarray
        ``uint64`` array of the same shape, every entry's signed reading within
        ``ceil(B * 2**f)`` of zero.

    Raises
    ------
    fedge.errors.InvalidInputError
        Non-finite values, or values beyond the bound when ``clip=False``.
    """
    f, b = _check_scale(scale_bits, bound)
    try:
        values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"cannot encode a non-numeric vector: {exc}") from exc
    if not np.all(np.isfinite(values)):
        raise InvalidInputError("cannot encode NaN or infinite values in fixed point.")
    if clip:
        values = np.clip(values, -b, b)
    elif values.size and float(np.max(np.abs(values))) > b:
        raise InvalidInputError(
            f"a value of magnitude {float(np.max(np.abs(values))):.6g} exceeds the bound {b:g}; "
            "clip the update (clip=True) or raise the round's bound."
        )
    return np.rint(values * 2.0**f).astype(np.int64).view(np.uint64)


def decode_fixed_point(encoded: np.ndarray, scale_bits: int) -> np.ndarray:
    """Decode a fixed-point ring element (or a sum of them) into float64.

    Reads each ``uint64`` as a signed ``int64`` and divides by ``2**scale_bits``. Exact for a
    sum of ``n`` encodings when ``n * ceil(bound * 2**f) <= 2**63 - 1`` (see the module
    docstring); otherwise the sum has wrapped and the result is meaningless.

    Parameters
    ----------
    encoded : numpy.ndarray
        ``uint64`` (or ``int64``) array.
    scale_bits : int
        The ``f`` it was encoded with.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape.
    """
    f = _int("scale_bits", scale_bits, 0, 62)
    arr = np.asarray(encoded)
    if arr.dtype not in (np.uint64, np.int64):
        raise InvalidInputError(f"expected a uint64 or int64 array, got {arr.dtype}.")
    return arr.view(np.int64).astype(np.float64) / 2.0**f


# --------------------------------------------------------------------------------------------
# configuration and graph
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """The public parameters of one secure aggregation round (the same for every party).

    Parameters
    ----------
    threshold : int
        ``t``: shares needed to rebuild a client's secrets, and the fewest surviving clients
        (full SecAgg) or surviving share holders per client (SecAgg+) a round tolerates.
        At least 2. Security needs fewer than ``t`` colluding holders; ``t`` above half the
        share holders (``n // 2 + 1``, or ``k // 2 + 1`` of ``k + 1`` under SecAgg+) is the
        usual choice.
    vector_length : int
        Length of every client's vector.
    neighbours : int or None, default None
        ``None``: full SecAgg (every client shares with and masks against every other).
        ``k``: SecAgg+, each client paired with ``k`` neighbours in a random regular graph
        (``k + 1`` when ``k`` and the number of clients are both odd); needs
        ``threshold <= k + 1`` and a ``round_seed``.
    scale_bits : int, default 24
        Fixed-point scale ``2**scale_bits``.
    bound : float, default 1000.0
        Largest ``|coordinate|`` a client may contribute; clients clip (or refuse) beyond it.
    round_id : int, default 0
        Identifies the round in every message and key derivation (replay protection).
    round_seed : bytes, default b""
        Public randomness of the round (at least 16 bytes under SecAgg+; draw it with
        ``secrets.token_bytes(32)`` each round). It fixes the SecAgg+ graph.
    """

    threshold: int
    vector_length: int
    neighbours: int | None = None
    scale_bits: int = 24
    bound: float = 1000.0
    round_id: int = 0
    round_seed: bytes = b""

    def __post_init__(self) -> None:
        t = _int("threshold", self.threshold, 2)
        _int("vector_length", self.vector_length, 1)
        if self.neighbours is not None:
            k = _int("neighbours", self.neighbours, 1)
            if t > k + 1:
                raise InvalidInputError(
                    f"threshold {t} exceeds the {k + 1} share holders of a client under SecAgg+ "
                    f"with {k} neighbours: use threshold <= neighbours + 1."
                )
            if not isinstance(self.round_seed, bytes) or len(self.round_seed) < 16:
                raise InvalidInputError(
                    "SecAgg+ needs a public round_seed of at least 16 bytes "
                    "(e.g. secrets.token_bytes(32)): it fixes the neighbour graph."
                )
        if not isinstance(self.round_seed, bytes):
            raise InvalidInputError(f"round_seed must be bytes, got {type(self.round_seed)}.")
        _int("round_id", self.round_id, 0, _INT64_MAX)
        _check_scale(self.scale_bits, self.bound)
        object.__setattr__(self, "bound", float(self.bound))

    @property
    def encoded_bound(self) -> int:
        """``ceil(bound * 2**scale_bits)``: the largest magnitude of one client's encoding."""
        return math.ceil(self.bound * 2.0**self.scale_bits)

    def overflow_ok(self, n_clients: int, *, noise_bound: int = 0) -> bool:
        """Whether the sum of ``n_clients`` encodings decodes exactly (no wrap-around).

        True iff ``n_clients * (ceil(bound * 2**scale_bits) + noise_bound) <= 2**63 - 1``.

        Parameters
        ----------
        n_clients : int
            Number of clients whose vectors are summed.
        noise_bound : int, default 0
            Largest magnitude of integer noise a client adds to its encoding (e.g. a tail
            bound of its discrete Gaussian share), in units of ``2**-scale_bits``.
        """
        n = _int("n_clients", n_clients, 0)
        extra = _int("noise_bound", noise_bound, 0)
        return n * (self.encoded_bound + extra) <= _INT64_MAX

    def max_clients(self, *, noise_bound: int = 0) -> int:
        """The largest number of clients :meth:`overflow_ok` accepts."""
        return _INT64_MAX // (self.encoded_bound + _int("noise_bound", noise_bound, 0))


def _graph_key(round_seed: bytes, round_id: int, client_id: str) -> bytes:
    h = hashlib.sha256(_VERSION + b"/graph")
    h.update(struct.pack(">QI", round_id, len(round_seed)) + round_seed)
    h.update(client_id.encode("utf-8"))
    return h.digest()


def neighbour_graph(
    client_ids: Iterable[str], neighbours: int | None, round_seed: bytes, round_id: int = 0
) -> dict[str, frozenset[str]]:
    """The SecAgg+ neighbour graph: who masks against and holds shares of whom.

    A random Harary graph (Bell et al., 2020): the clients are put on a ring in a pseudo-random
    order, a SHA-256 function of ``(round_seed, round_id, client id)``, so every party derives
    the same graph and the server cannot choose it once the seed is fixed; each client is linked
    to the ``k // 2`` nearest on each side, plus, for odd ``k``, the diametrically opposite
    client (even ``n``) or one more on each side (odd ``n``: degree ``k + 1``). With
    ``neighbours=None`` or ``k >= n - 1`` every client is linked to every other (full SecAgg).

    Parameters
    ----------
    client_ids : iterable of str
        The clients of the round (the roster).
    neighbours : int or None
        ``k``, or None for the complete graph.
    round_seed : bytes
        The round's public seed.
    round_id : int, default 0

    Returns
    -------
    dict of str to frozenset of str
        Each client's neighbours (never itself); the relation is symmetric.
    """
    ids = sorted({_client_id(c) for c in client_ids})
    n = len(ids)
    if neighbours is None or neighbours >= n - 1:
        everyone = frozenset(ids)
        return {c: everyone - {c} for c in ids}
    k = _int("neighbours", neighbours, 1)
    order = sorted(ids, key=lambda c: _graph_key(round_seed, round_id, c))
    offsets = list(range(1, k // 2 + 1))
    if k % 2 and n % 2 == 0:
        offsets.append(n // 2)
    elif k % 2:
        offsets.append(k // 2 + 1)
    graph: dict[str, frozenset[str]] = {}
    for i, c in enumerate(order):
        graph[c] = frozenset(order[(i + d) % n] for d in offsets) | frozenset(
            order[(i - d) % n] for d in offsets
        )
    return graph


# --------------------------------------------------------------------------------------------
# cryptographic helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _zeros(n_bytes: int) -> bytes:
    return bytes(n_bytes)


def prg_mask(seed: bytes, length: int) -> np.ndarray:
    """Expand a 32-byte seed into ``length`` pseudo-random ``uint64`` (AES-256-CTR keystream).

    The keystream of AES-256 in counter mode (zero nonce; every seed is used for one mask
    only) read as little-endian 64-bit words, so all platforms agree. The array is read-only.
    """
    if not isinstance(seed, bytes) or len(seed) != _KEY_BYTES:
        raise InvalidInputError("a mask seed must be 32 bytes.")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(_zeros(8 * length))
    return np.frombuffer(stream, dtype="<u8")


def _hkdf(secret: bytes, label: bytes, *context: bytes) -> bytes:
    info = _VERSION + b"/" + label + b"".join(struct.pack(">I", len(c)) + c for c in context)
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(secret)


def _pair(a: str, b: str) -> tuple[bytes, bytes]:
    lo, hi = sorted((a, b))
    return lo.encode("utf-8"), hi.encode("utf-8")


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # a low-order point: the shared secret would be all zeros
        raise _fail(f"invalid X25519 public key: {exc}") from exc


def _round_context(config: SecAggConfig) -> tuple[bytes, bytes]:
    return struct.pack(">Q", config.round_id), config.round_seed


def _pairwise_seed(
    config: SecAggConfig, private: X25519PrivateKey, public: bytes, a: str, b: str
) -> bytes:
    return _hkdf(
        _exchange(private, public), b"pairwise-mask", *_round_context(config), *_pair(a, b)
    )


def _self_seed(config: SecAggConfig, b: bytes) -> bytes:
    return _hkdf(b, b"self-mask", *_round_context(config))


def _share_key(
    config: SecAggConfig, private: X25519PrivateKey, public: bytes, a: str, b: str
) -> bytes:
    return _hkdf(_exchange(private, public), b"share-key", *_round_context(config), *_pair(a, b))


def _associated_data(round_id: int, stage: Stage, sender: str, recipient: str) -> bytes:
    s, r = sender.encode("utf-8"), recipient.encode("utf-8")
    return (
        _VERSION
        + struct.pack(">QB", round_id, int(stage))
        + struct.pack(">H", len(s))
        + s
        + struct.pack(">H", len(r))
        + r
    )


def _pack_fields(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def _unpack_fields(data: bytes, count: int) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise _fail("malformed share plaintext: truncated.")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise _fail("malformed share plaintext: truncated.")
        out.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise _fail("malformed share plaintext: trailing bytes.")
    return out


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client to server (and, in the roster, server to clients): public keys.

    Attributes
    ----------
    round_id : int
    sender : str
    encryption_key : bytes
        ``c_u^PK``, raw 32-byte X25519 public key for encrypting shares.
    masking_key : bytes
        ``s_u^PK``, raw 32-byte X25519 public key for the pairwise masks.
    stage : Stage
    """

    round_id: int
    sender: str
    encryption_key: bytes
    masking_key: bytes
    stage: Stage = Stage.ADVERTISE_KEYS


@dataclass(frozen=True)
class EncryptedShare:
    """Stage 1, client to client through the server: ``sender``'s shares for ``recipient``.

    ``ciphertext`` is a 12-byte nonce followed by AES-256-GCM output (ciphertext and tag) over
    the sender, the recipient and the two Shamir shares (of ``b_sender`` and ``s_sender^SK``).
    """

    round_id: int
    sender: str
    recipient: str
    ciphertext: bytes
    stage: Stage = Stage.SHARE_KEYS


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Stage 2, client to server: the masked fixed-point vector (``uint64``)."""

    round_id: int
    sender: str
    masked: np.ndarray
    stage: Stage = Stage.MASKED_INPUT


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, server to the surviving clients.

    ``survivors`` sent their masked input (their self-mask seeds are to be rebuilt);
    ``dropped`` shared keys but sent no masked input (their masking keys are to be rebuilt).
    The two are disjoint.
    """

    round_id: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    stage: Stage = Stage.UNMASKING


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, client to server: serialised :class:`~fedge.federated.shamir.Share` objects.

    ``self_mask_shares`` maps each surviving share owner to the responder's share of its
    ``b``; ``key_shares`` maps each dropped owner to the share of its masking private key.
    """

    round_id: int
    sender: str
    self_mask_shares: Mapping[str, bytes]
    key_shares: Mapping[str, bytes]
    stage: Stage = Stage.UNMASKING


def _check_envelope(message: Any, cls: type, stage: Stage, round_id: int) -> None:
    if not isinstance(message, cls):
        raise _fail(f"malformed message: expected {cls.__name__}, got {type(message).__name__}.")
    if not isinstance(message.stage, int) or message.stage != stage:
        raise _fail(
            f"wrong stage: a {cls.__name__} must carry stage {stage.name}, got {message.stage!r}."
        )
    rid = message.round_id
    if isinstance(rid, bool) or not isinstance(rid, int | np.integer) or rid != round_id:
        raise _fail(
            f"wrong round: the message is for round {message.round_id!r}, this is round "
            f"{round_id}; replayed or stale messages are refused."
        )


def _check_sender(message: Any) -> str:
    sender = getattr(message, "sender", None)
    try:
        return _client_id(sender)
    except InvalidInputError as exc:
        raise _fail(f"malformed message: {exc}") from exc


def _check_keys_message(message: Any, config: SecAggConfig) -> None:
    _check_envelope(message, AdvertiseKeys, Stage.ADVERTISE_KEYS, config.round_id)
    _check_sender(message)
    for name in ("encryption_key", "masking_key"):
        key = getattr(message, name)
        if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
            raise _fail(f"malformed {name} from {message.sender!r}: expected 32 raw bytes.")
    if message.encryption_key == message.masking_key:
        raise _fail(f"client {message.sender!r} advertised the same key twice.")


# --------------------------------------------------------------------------------------------
# client
# --------------------------------------------------------------------------------------------


def _private_key(randomness: np.random.Generator | None) -> X25519PrivateKey:
    if randomness is None:
        return X25519PrivateKey.generate()
    return X25519PrivateKey.from_private_bytes(randomness.bytes(_KEY_BYTES))


class SecAggClient:
    """One client's side of a secure aggregation round: a stage machine, one method per stage.

    Call :meth:`advertise_keys`, :meth:`share_keys`, :meth:`masked_input` (or
    :meth:`masked_input_encoded`) and :meth:`unmask` in this order, each at most once. Any
    protocol violation raises :class:`SecureAggregationError` and aborts the client for the
    rest of the round (its secrets are dropped and every later call raises). A bad *local*
    input (a vector of the wrong length, NaN, beyond the bound with ``clip=False``) raises
    :class:`~fedge.errors.InvalidInputError` without aborting.

    Parameters
    ----------
    client_id : str
        The client's identity in the round (must match the roster).
    config : SecAggConfig
        The round's public parameters.
    randomness : numpy.random.Generator, optional
        ``None`` (default): keys, seeds and shares from the OS CSPRNG. A seeded generator makes
        them reproducible and is **insecure**: tests only.
    """

    def __init__(
        self,
        client_id: str,
        config: SecAggConfig,
        *,
        randomness: np.random.Generator | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise InvalidInputError(f"config must be a SecAggConfig, got {type(config)}.")
        if randomness is not None and not isinstance(randomness, np.random.Generator):
            raise InvalidInputError("randomness must be a numpy.random.Generator or None.")
        self.client_id = _client_id(client_id)
        self.config = config
        self._rng = randomness
        self._next = Stage.ADVERTISE_KEYS
        self._done = False
        self._aborted: str | None = None
        self._c_key: X25519PrivateKey | None = None
        self._s_key: X25519PrivateKey | None = None
        self._advertised: AdvertiseKeys | None = None
        self._roster: dict[str, AdvertiseKeys] = {}
        self._x: dict[str, int] = {}
        self._holders: frozenset[str] = frozenset()
        self._b: bytes | None = None
        self._own_b_share: Share | None = None
        self._b_shares: dict[str, Share] = {}
        self._sk_shares: dict[str, Share] = {}
        self._shared_with_me: frozenset[str] = frozenset()
        self._aead_keys: dict[str, bytes] = {}

    # -- state ---------------------------------------------------------------------------

    @property
    def stage(self) -> Stage | None:
        """The next stage this client expects, or None once it has finished or aborted."""
        return None if (self._done or self._aborted) else self._next

    @property
    def aborted(self) -> str | None:
        """Why the client aborted the round, or None."""
        return self._aborted

    @property
    def neighbours(self) -> frozenset[str]:
        """The clients this client masks against and shares with (after :meth:`share_keys`)."""
        return self._holders - {self.client_id}

    def _check_stage(self, stage: Stage) -> None:
        if self._aborted:
            raise _fail(f"client {self.client_id!r} aborted this round: {self._aborted}")
        if self._done or self._next != stage:
            state = "finished" if self._done else f"expects stage {self._next.name}"
            raise _fail(
                f"client {self.client_id!r} refuses stage {stage.name}: it {state}; each stage "
                "is processed exactly once, in order (replay or out-of-order request)."
            )

    @contextmanager
    def _stage(self, stage: Stage) -> Iterator[None]:
        self._check_stage(stage)
        if stage == Stage.UNMASKING:
            self._done = True
        else:
            self._next = Stage(stage + 1)
        try:
            yield
        except Exception as exc:  # any failure mid-stage: the client is out of the round
            self._abort(str(exc))
            raise

    def _abort(self, reason: str) -> None:
        self._aborted = reason
        self._c_key = self._s_key = None
        self._aead_keys.clear()
        self._b = None
        self._own_b_share = None
        self._b_shares.clear()
        self._sk_shares.clear()

    # -- stage 0 ---------------------------------------------------------------------------

    def advertise_keys(self) -> AdvertiseKeys:
        """Stage 0: draw the round's two X25519 key pairs and advertise the public halves."""
        with self._stage(Stage.ADVERTISE_KEYS):
            self._c_key = _private_key(self._rng)
            self._s_key = _private_key(self._rng)
            self._advertised = AdvertiseKeys(
                round_id=self.config.round_id,
                sender=self.client_id,
                encryption_key=self._c_key.public_key().public_bytes_raw(),
                masking_key=self._s_key.public_key().public_bytes_raw(),
            )
            return self._advertised

    # -- stage 1 ---------------------------------------------------------------------------

    def share_keys(self, roster: Mapping[str, AdvertiseKeys]) -> dict[str, EncryptedShare]:
        """Stage 1: check the roster, Shamir-share ``b`` and the masking key, encrypt the shares.

        Parameters
        ----------
        roster : mapping of str to AdvertiseKeys
            Every client's advertisement, as broadcast by the server (including this client's).

        Returns
        -------
        dict of str to EncryptedShare
            One ciphertext per neighbour, keyed by recipient.
        """
        config = self.config
        with self._stage(Stage.SHARE_KEYS):
            if not isinstance(roster, Mapping):
                raise _fail("malformed roster: expected a mapping of client id to AdvertiseKeys.")
            seen_keys: set[bytes] = set()
            for cid, message in roster.items():
                _check_keys_message(message, config)
                if message.sender != cid:
                    raise _fail(
                        f"malformed roster: entry {cid!r} carries sender {message.sender!r}."
                    )
                for key in (message.encryption_key, message.masking_key):
                    if key in seen_keys:
                        raise _fail("the roster repeats a public key: refused.")
                    seen_keys.add(key)
            if roster.get(self.client_id) != self._advertised:
                raise _fail(f"the roster lacks or alters client {self.client_id!r}'s own keys.")
            if len(roster) < config.threshold:
                raise _fail(
                    f"only {len(roster)} clients advertised keys, fewer than the threshold "
                    f"{config.threshold}: round aborted."
                )
            if not config.overflow_ok(len(roster)):
                raise _fail(
                    f"{len(roster)} clients would overflow the fixed-point sum (at most "
                    f"{config.max_clients()} fit the bound and scale): refused."
                )
            self._roster = dict(roster)
            ids = sorted(self._roster)
            self._x = {cid: i + 1 for i, cid in enumerate(ids)}
            graph = neighbour_graph(ids, config.neighbours, config.round_seed, config.round_id)
            self._holders = graph[self.client_id] | {self.client_id}
            if len(self._holders) < config.threshold:
                raise _fail(
                    f"client {self.client_id!r} has {len(self._holders)} share holders, fewer than "
                    f"the threshold {config.threshold}: round aborted."
                )
            assert self._c_key is not None and self._s_key is not None
            holders = sorted(self._holders)
            xs = [self._x[h] for h in holders]
            self._b = (
                secrets.token_bytes(_KEY_BYTES)
                if self._rng is None
                else self._rng.bytes(_KEY_BYTES)
            )
            t = config.threshold
            b_shares = split_secret(self._b, t, len(holders), x=xs, randomness=self._rng)
            sk_shares = split_secret(
                self._s_key.private_bytes_raw(), t, len(holders), x=xs, randomness=self._rng
            )
            out: dict[str, EncryptedShare] = {}
            for recipient, b_share, sk_share in zip(holders, b_shares, sk_shares, strict=True):
                if recipient == self.client_id:
                    self._own_b_share = b_share  # its own share of s^SK is never needed
                    continue
                out[recipient] = self._encrypt(recipient, b_share, sk_share)
            return out

    def _encrypt(self, recipient: str, b_share: Share, sk_share: Share) -> EncryptedShare:
        assert self._c_key is not None
        key = _share_key(
            self.config,
            self._c_key,
            self._roster[recipient].encryption_key,
            self.client_id,
            recipient,
        )
        self._aead_keys[recipient] = key  # symmetric: also decrypts what recipient sends back
        plaintext = _pack_fields(
            self.client_id.encode("utf-8"),
            recipient.encode("utf-8"),
            b_share.to_bytes(),
            sk_share.to_bytes(),
        )
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ad = _associated_data(self.config.round_id, Stage.SHARE_KEYS, self.client_id, recipient)
        return EncryptedShare(
            round_id=self.config.round_id,
            sender=self.client_id,
            recipient=recipient,
            ciphertext=nonce + AESGCM(key).encrypt(nonce, plaintext, ad),
        )

    # -- stage 2 ---------------------------------------------------------------------------

    def masked_input(
        self,
        vector: np.ndarray | Sequence[float],
        received: Mapping[str, EncryptedShare],
        *,
        clip: bool = True,
    ) -> MaskedInput:
        """Stage 2: encode ``vector`` in fixed point, enforce the bound, add the masks.

        Parameters
        ----------
        vector : array_like of float
            ``(vector_length,)``, finite.
        received : mapping of str to EncryptedShare
            The shares addressed to this client, keyed by sender (``server.shares_for``).
        clip : bool, default True
            Clip coordinates to ``[-bound, bound]``; with ``False`` a coordinate beyond the
            bound raises :class:`~fedge.errors.InvalidInputError` (and nothing is sent).

        Returns
        -------
        MaskedInput
        """
        self._check_stage(Stage.MASKED_INPUT)
        values = np.asarray(vector)
        if values.shape != (self.config.vector_length,):
            raise InvalidInputError(
                f"expected a vector of shape ({self.config.vector_length},), got {values.shape}."
            )
        encoded = encode_fixed_point(values, self.config.scale_bits, self.config.bound, clip=clip)
        return self._masked(encoded, received)

    def masked_input_encoded(
        self, encoded: np.ndarray, received: Mapping[str, EncryptedShare]
    ) -> MaskedInput:
        """Stage 2 for an already encoded ``uint64`` vector (e.g. fixed point plus DP noise).

        The caller is responsible for the bound: the encoding's signed magnitude must stay
        within ``encoded_bound + noise_bound`` as counted by :meth:`SecAggConfig.overflow_ok`.
        Encode with :func:`encode_fixed_point` and add integer noise as ``int64`` before
        viewing the result as ``uint64``.
        """
        self._check_stage(Stage.MASKED_INPUT)
        arr = np.asarray(encoded)
        if arr.dtype != np.uint64 or arr.shape != (self.config.vector_length,):
            raise InvalidInputError(
                f"expected a uint64 vector of shape ({self.config.vector_length},), got "
                f"{arr.dtype} {arr.shape}."
            )
        return self._masked(arr, received)

    def _masked(self, encoded: np.ndarray, received: Mapping[str, EncryptedShare]) -> MaskedInput:
        config = self.config
        with self._stage(Stage.MASKED_INPUT):
            self._receive_shares(received)
            assert self._b is not None and self._s_key is not None
            length = config.vector_length
            total = np.array(encoded, dtype=np.uint64, copy=True)
            total += prg_mask(_self_seed(config, self._b), length)
            for v in sorted(self._shared_with_me - {self.client_id}):
                seed = _pairwise_seed(
                    config, self._s_key, self._roster[v].masking_key, self.client_id, v
                )
                if self.client_id < v:
                    total += prg_mask(seed, length)
                else:
                    total -= prg_mask(seed, length)
            # The secrets are in the shares now; the client keeps only what it must reveal.
            self._b = None
            self._s_key = None
            self._c_key = None
            self._aead_keys.clear()
            total.setflags(write=False)
            return MaskedInput(round_id=config.round_id, sender=self.client_id, masked=total)

    def _receive_shares(self, received: Mapping[str, EncryptedShare]) -> None:
        config = self.config
        if not isinstance(received, Mapping):
            raise _fail("malformed shares: expected a mapping of sender to EncryptedShare.")
        assert self._c_key is not None
        me = self.client_id
        for sender, message in received.items():
            _check_envelope(message, EncryptedShare, Stage.SHARE_KEYS, config.round_id)
            if message.sender != sender or message.recipient != me:
                raise _fail(
                    f"share routed wrongly: keyed {sender!r}, from {message.sender!r} to "
                    f"{message.recipient!r}, delivered to {me!r}."
                )
            if sender == me or sender not in self._holders:
                raise _fail(f"a share from {sender!r}, who is not a neighbour of {me!r}: refused.")
            data = message.ciphertext
            if not isinstance(data, bytes) or len(data) < _NONCE_BYTES + 16:
                raise _fail(f"malformed ciphertext from {sender!r}.")
            key = self._aead_keys[sender]
            ad = _associated_data(config.round_id, Stage.SHARE_KEYS, sender, me)
            try:
                plaintext = AESGCM(key).decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], ad)
            except InvalidTag as exc:
                raise _fail(
                    f"the share from {sender!r} fails authentication (tampered, or replayed "
                    "from another round, stage or pair): refused."
                ) from exc
            s, r, b_bytes, sk_bytes = _unpack_fields(plaintext, 4)
            if s != sender.encode("utf-8") or r != me.encode("utf-8"):
                raise _fail(f"the share from {sender!r} names the wrong sender or recipient.")
            b_share, sk_share = Share.from_bytes(b_bytes), Share.from_bytes(sk_bytes)
            for share in (b_share, sk_share):
                if share.x != self._x[me] or share.length != _KEY_BYTES:
                    raise _fail(f"the share from {sender!r} is not a share for {me!r}.")
            self._b_shares[sender] = b_share
            self._sk_shares[sender] = sk_share
        self._shared_with_me = frozenset(received) | {me}
        if len(self._shared_with_me) < config.threshold:
            raise _fail(
                f"only {len(self._shared_with_me)} of client {me!r}'s share holders (itself "
                f"included) shared keys, fewer than the threshold {config.threshold}: round "
                "aborted."
            )

    # -- stage 3 ---------------------------------------------------------------------------

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 3: reveal shares of the survivors' self masks and the dropped clients' keys.

        Refuses (and aborts) a request whose sets intersect, that omits this client from the
        survivors, that disagrees with the clients that shared keys with it, or that names fewer
        than ``threshold`` survivors among its share holders.
        """
        config = self.config
        me = self.client_id
        with self._stage(Stage.UNMASKING):
            _check_envelope(request, UnmaskRequest, Stage.UNMASKING, config.round_id)
            groups = []
            for name in ("survivors", "dropped"):
                ids = request.survivors if name == "survivors" else request.dropped
                if not isinstance(ids, tuple | list) or not all(isinstance(c, str) for c in ids):
                    raise _fail(f"malformed unmask request: {name} must be a tuple of client ids.")
                if len(set(ids)) != len(ids):
                    raise _fail(f"malformed unmask request: {name} repeats a client.")
                unknown = set(ids) - set(self._roster)
                if unknown:
                    raise _fail(f"the unmask request names unknown clients {sorted(unknown)}.")
                groups.append(set(ids))
            survivors, dropped = groups
            both = survivors & dropped
            if both:
                raise _fail(
                    f"refused: the server asks for both the self-mask share and the secret-key "
                    f"share of {sorted(both)}; that would reveal their inputs."
                )
            if me not in survivors:
                raise _fail(f"refused: the request does not list {me!r}, who sent its input.")
            local_survivors = survivors & self._holders
            local_dropped = dropped & self._holders
            if local_survivors | local_dropped != self._shared_with_me:
                raise _fail(
                    "refused: the survivor and dropped sets disagree with the clients that "
                    f"shared keys with {me!r}."
                )
            if len(local_survivors) < config.threshold:
                raise _fail(
                    f"refused: only {len(local_survivors)} survivors among {me!r}'s share "
                    f"holders, fewer than the threshold {config.threshold}."
                )
            assert self._own_b_share is not None
            b_shares = {**self._b_shares, me: self._own_b_share}
            response = UnmaskResponse(
                round_id=config.round_id,
                sender=me,
                self_mask_shares={v: b_shares[v].to_bytes() for v in sorted(local_survivors)},
                key_shares={d: self._sk_shares[d].to_bytes() for d in sorted(local_dropped)},
            )
            self._b_shares.clear()
            self._sk_shares.clear()
            self._own_b_share = None
            return response


# --------------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------------


class SecAggServer:
    """The server's side of a round: collects messages stage by stage, outputs only the sum.

    Stages advance implicitly: :meth:`broadcast_keys` closes stage 0, the first
    :meth:`shares_for` (or :meth:`receive_masked`) closes stage 1, :meth:`unmask_request`
    closes stage 2 and :meth:`result` closes stage 3. A message for a stage that is already
    closed, from a client the stage does not expect, from another round, or sent twice raises
    :class:`SecureAggregationError` and is ignored (the round goes on; that client counts as
    dropped). When too few clients remain, the server aborts the round: the call raises, and
    so does every later call.

    Parameters
    ----------
    config : SecAggConfig
        The round's public parameters.
    client_ids : sequence of str
        The clients selected for the round (at least ``threshold``).
    """

    def __init__(self, config: SecAggConfig, client_ids: Sequence[str]) -> None:
        if not isinstance(config, SecAggConfig):
            raise InvalidInputError(f"config must be a SecAggConfig, got {type(config)}.")
        ids = [_client_id(c) for c in client_ids]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("client_ids repeats a client.")
        if len(ids) < config.threshold:
            raise InvalidInputError(
                f"{len(ids)} clients cannot meet the threshold {config.threshold}."
            )
        if not config.overflow_ok(len(ids)):
            raise InvalidInputError(
                f"{len(ids)} clients would overflow the fixed-point sum: at most "
                f"{config.max_clients()} fit bound={config.bound:g} and "
                f"scale_bits={config.scale_bits}."
            )
        self.config = config
        self.client_ids = tuple(ids)
        self._stage = Stage.ADVERTISE_KEYS
        self._finished = False
        self._aborted: str | None = None
        self._keys: dict[str, AdvertiseKeys] = {}
        self._x: dict[str, int] = {}
        self._holders: dict[str, frozenset[str]] = {}
        self._shares: dict[str, dict[str, EncryptedShare]] = {}
        self._u2: frozenset[str] = frozenset()
        self._sum = np.zeros(config.vector_length, dtype=np.uint64)
        self._u3: set[str] = set()
        self._request: UnmaskRequest | None = None
        self._responses: dict[str, UnmaskResponse] = {}
        self._parsed: dict[str, dict[str, dict[str, Share]]] = {}
        self._result: tuple[np.ndarray, tuple[str, ...]] | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def stage(self) -> Stage | None:
        """The stage now collecting messages, or None once finished or aborted."""
        return None if (self._finished or self._aborted) else self._stage

    @property
    def aborted(self) -> str | None:
        """Why the round was aborted, or None."""
        return self._aborted

    def holders(self, client_id: str) -> frozenset[str]:
        """``client_id`` and its neighbours: who holds its shares (after :meth:`broadcast_keys`)."""
        return self._holders[client_id]

    def _abort(self, reason: str) -> SecureAggregationError:
        self._aborted = reason
        self._sum = np.zeros(0, dtype=np.uint64)
        self._shares.clear()
        self._responses.clear()
        self._parsed.clear()
        return _fail(f"secure aggregation round {self.config.round_id} aborted: {reason}")

    def _check_open(self) -> None:
        if self._aborted:
            raise _fail(f"round {self.config.round_id} was aborted: {self._aborted}")

    def _advance_to(self, stage: Stage) -> None:
        self._check_open()
        while self._stage < stage:
            if self._stage == Stage.ADVERTISE_KEYS:
                self._close_keys()
            elif self._stage == Stage.SHARE_KEYS:
                self._close_shares()
            else:
                self._close_masked()
            self._stage = Stage(self._stage + 1)

    def _expect(self, stage: Stage) -> None:
        self._check_open()
        if self._finished or self._stage > stage:
            raise _fail(f"stage {stage.name} is closed: late or replayed message refused.")
        self._advance_to(stage)

    # -- stage 0 ---------------------------------------------------------------------------

    def receive_keys(self, message: AdvertiseKeys) -> None:
        """Stage 0: record one client's advertised public keys."""
        self._check_open()
        _check_keys_message(message, self.config)
        self._expect(Stage.ADVERTISE_KEYS)
        sender = message.sender
        if sender not in self.client_ids:
            raise _fail(f"client {sender!r} was not selected for this round.")
        if sender in self._keys:
            raise _fail(f"client {sender!r} already advertised its keys (replay refused).")
        used = {k for m in self._keys.values() for k in (m.encryption_key, m.masking_key)}
        if message.encryption_key in used or message.masking_key in used:
            raise _fail(f"client {sender!r} advertised a key another client uses: refused.")
        self._keys[sender] = message

    def _close_keys(self) -> None:
        t = self.config.threshold
        if len(self._keys) < t:
            raise self._abort(f"only {len(self._keys)} clients advertised keys, threshold {t}.")
        ids = sorted(self._keys)
        self._x = {cid: i + 1 for i, cid in enumerate(ids)}
        graph = neighbour_graph(
            ids, self.config.neighbours, self.config.round_seed, self.config.round_id
        )
        self._holders = {cid: graph[cid] | {cid} for cid in ids}

    def broadcast_keys(self) -> dict[str, AdvertiseKeys]:
        """Close stage 0 and return the roster every client receives (client id -> keys)."""
        self._advance_to(Stage.SHARE_KEYS)
        return dict(self._keys)

    # -- stage 1 ---------------------------------------------------------------------------

    def receive_shares(self, shares: Mapping[str, EncryptedShare]) -> None:
        """Stage 1: record one client's encrypted shares (recipient -> ciphertext)."""
        self._check_open()
        if not isinstance(shares, Mapping) or not shares:
            raise _fail("malformed shares: expected a non-empty mapping of recipient to share.")
        senders = set()
        for recipient, message in shares.items():
            _check_envelope(message, EncryptedShare, Stage.SHARE_KEYS, self.config.round_id)
            if message.recipient != recipient or not isinstance(message.ciphertext, bytes):
                raise _fail(f"malformed share for {recipient!r}.")
            senders.add(_check_sender(message))
        if len(senders) != 1:
            raise _fail("one call must carry the shares of one sender.")
        self._expect(Stage.SHARE_KEYS)
        sender = senders.pop()
        if sender not in self._keys:
            raise _fail(f"client {sender!r} is not on the roster.")
        if sender in self._shares:
            raise _fail(f"client {sender!r} already sent its shares (replay refused).")
        expected = self._holders[sender] - {sender}
        if set(shares) != expected:
            raise _fail(f"client {sender!r} must send one share to each of its neighbours.")
        self._shares[sender] = dict(shares)

    def _close_shares(self) -> None:
        t = self.config.threshold
        self._u2 = frozenset(self._shares)
        if len(self._u2) < t:
            raise self._abort(f"only {len(self._u2)} clients shared their keys, threshold {t}.")
        for u in sorted(self._u2):
            held = self._holders[u] & self._u2
            if len(held) < t:
                raise self._abort(
                    f"only {len(held)} of client {u!r}'s share holders shared keys, threshold {t}."
                )

    def shares_for(self, client_id: str) -> dict[str, EncryptedShare]:
        """Close stage 1 (on first call) and return the shares addressed to ``client_id``.

        Returns
        -------
        dict of str to EncryptedShare
            Keyed by sender: every neighbour of ``client_id`` that shared its keys.
        """
        self._advance_to(Stage.MASKED_INPUT)
        if self._stage != Stage.MASKED_INPUT:
            raise _fail("stage SHARE_KEYS results are no longer served (masked inputs closed).")
        if client_id not in self._u2:
            raise _fail(f"client {client_id!r} did not share its keys: it is out of the round.")
        return {
            sender: self._shares[sender][client_id]
            for sender in sorted(self._u2 & self._holders[client_id])
            if sender != client_id
        }

    # -- stage 2 ---------------------------------------------------------------------------

    def receive_masked(self, message: MaskedInput) -> None:
        """Stage 2: add one client's masked vector to the running (masked) sum."""
        self._check_open()
        _check_envelope(message, MaskedInput, Stage.MASKED_INPUT, self.config.round_id)
        self._expect(Stage.MASKED_INPUT)
        sender = _check_sender(message)
        if sender not in self._u2:
            raise _fail(f"client {sender!r} did not share its keys: its input is refused.")
        if sender in self._u3:
            raise _fail(f"client {sender!r} already sent its masked input (replay refused).")
        masked = message.masked
        if (
            not isinstance(masked, np.ndarray)
            or masked.dtype != np.uint64
            or masked.shape != (self.config.vector_length,)
        ):
            raise _fail(
                f"malformed masked input from {sender!r}: expected uint64 of shape "
                f"({self.config.vector_length},)."
            )
        self._sum += masked
        self._u3.add(sender)

    def _close_masked(self) -> None:
        t = self.config.threshold
        u3 = self._u3
        if len(u3) < t:
            raise self._abort(f"only {len(u3)} clients sent masked inputs, threshold {t}.")
        dropped = self._u2 - u3
        for u in sorted(u3):
            alive = self._holders[u] & u3
            if len(alive) < t:
                raise self._abort(
                    f"only {len(alive)} of client {u!r}'s share holders survive, threshold {t}."
                )
        for d in sorted(dropped):
            alive = self._holders[d] & u3
            if len(alive) < t:
                raise self._abort(
                    f"only {len(alive)} of dropped client {d!r}'s share holders survive, "
                    f"threshold {t}."
                )
        self._request = UnmaskRequest(
            round_id=self.config.round_id,
            survivors=tuple(sorted(u3)),
            dropped=tuple(sorted(dropped)),
        )

    def unmask_request(self) -> UnmaskRequest:
        """Close stage 2 and return the request every surviving client receives."""
        self._advance_to(Stage.UNMASKING)
        assert self._request is not None
        return self._request

    # -- stage 3 ---------------------------------------------------------------------------

    def receive_unmask(self, response: UnmaskResponse) -> None:
        """Stage 3: record one survivor's shares (validated against the request)."""
        self._check_open()
        _check_envelope(response, UnmaskResponse, Stage.UNMASKING, self.config.round_id)
        self._expect(Stage.UNMASKING)
        sender = _check_sender(response)
        if sender not in self._u3:
            raise _fail(f"client {sender!r} is not a survivor: its response is refused.")
        if sender in self._responses:
            raise _fail(f"client {sender!r} already answered (replay refused).")
        assert self._request is not None
        held = self._holders[sender]
        parsed: dict[str, dict[str, Share]] = {}
        for name, owners in (
            ("self_mask_shares", set(self._request.survivors) & held),
            ("key_shares", set(self._request.dropped) & held),
        ):
            shares = getattr(response, name)
            if not isinstance(shares, Mapping) or set(shares) != owners:
                raise _fail(f"client {sender!r} answered with the wrong {name}.")
            parsed[name] = {}
            for owner, data in shares.items():
                share = Share.from_bytes(data)
                if share.x != self._x[sender] or share.length != _KEY_BYTES:
                    raise _fail(f"client {sender!r} sent a share that is not its own.")
                parsed[name][owner] = share
        self._responses[sender] = response
        self._parsed[sender] = parsed

    def _collect(self, owner: str, name: str) -> list[Share]:
        parsed = self._parsed
        return [parsed[r][name][owner] for r in sorted(self._holders[owner] & set(parsed))]

    def result_encoded(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """Close stage 3 and return the sum in the ring (``uint64``) and the survivors.

        The sum is over exactly the survivors' encodings (including any integer noise they
        added); decode it with :func:`decode_fixed_point`.
        """
        if self._result is not None:
            return self._result
        self._advance_to(Stage.UNMASKING)
        self._finished = True
        config = self.config
        t = config.threshold
        assert self._request is not None
        survivors, dropped = self._request.survivors, self._request.dropped
        b_shares = {u: self._collect(u, "self_mask_shares") for u in survivors}
        sk_shares = {d: self._collect(d, "key_shares") for d in dropped}
        for owner, shares in (*b_shares.items(), *sk_shares.items()):
            if len(shares) < t:
                raise self._abort(
                    f"only {len(shares)} of client {owner!r}'s share holders answered the "
                    f"unmasking request, threshold {t}; no secret was rebuilt."
                )
        total = self._sum.copy()
        length = config.vector_length
        for u in survivors:
            total -= prg_mask(_self_seed(config, combine_shares(b_shares[u], t)), length)
        for d in dropped:
            sk_bytes = combine_shares(sk_shares[d], t)
            key = X25519PrivateKey.from_private_bytes(sk_bytes)
            if key.public_key().public_bytes_raw() != self._keys[d].masking_key:
                raise self._abort(f"the rebuilt masking key of {d!r} does not match its keys.")
            for v in sorted(self._holders[d] & self._u3):
                seed = _pairwise_seed(config, key, self._keys[v].masking_key, d, v)
                if v < d:
                    total -= prg_mask(seed, length)  # v added this mask
                else:
                    total += prg_mask(seed, length)  # v subtracted it
        total.setflags(write=False)
        self._result = (total, tuple(survivors))
        return self._result

    def result(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """Close stage 3 and return the decoded float64 sum and the survivors it covers."""
        total, survivors = self.result_encoded()
        return decode_fixed_point(total, self.config.scale_bits), survivors


# --------------------------------------------------------------------------------------------
# in-process driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SecureSumResult:
    """What :func:`secure_sum` returns.

    Attributes
    ----------
    sum : numpy.ndarray
        float64 sum of the survivors' (clipped, fixed-point) vectors.
    encoded_sum : numpy.ndarray
        The same sum in the ring, ``uint64``.
    survivors : tuple of str
        The clients whose vectors are in the sum (those that sent a masked input).
    timings : mapping of str to float
        Seconds spent per stage (clients and server together, as run in-process), keyed by
        the lower-case :class:`Stage` name, plus ``"total"``.
    """

    sum: np.ndarray
    encoded_sum: np.ndarray
    survivors: tuple[str, ...]
    timings: Mapping[str, float] = field(default_factory=dict)


def secure_sum(
    vectors: Mapping[str, np.ndarray],
    config: SecAggConfig,
    *,
    drop: Mapping[str, int] | None = None,
    randomness: np.random.Generator | None = None,
    encoded: bool = False,
    clip: bool = True,
) -> SecureSumResult:
    """Run one secure aggregation round in-process and return the sum of the survivors.

    Parameters
    ----------
    vectors : mapping of str to numpy.ndarray
        Each client's ``(vector_length,)`` float vector (or ``uint64`` encoding when
        ``encoded=True``), keyed by client id.
    config : SecAggConfig
        The round's parameters.
    drop : mapping of str to int, optional
        Clients that drop out, and the stage (0-3) from which they send nothing: 0 never
        advertises keys, 1 sends no shares, 2 sends no masked input, 3 does not answer the
        unmasking request (its vector is still in the sum).
    randomness : numpy.random.Generator, optional
        Seeded generator for reproducible runs (**insecure**, tests only); each client gets a
        spawned child generator.
    encoded : bool, default False
        The vectors are already fixed-point encoded (``uint64``), e.g. with DP noise added.
    clip : bool, default True
        Clients clip to the bound; with ``False`` a vector beyond it raises before the round.

    Returns
    -------
    SecureSumResult

    Raises
    ------
    SecureAggregationError
        Too few clients survive: the round aborts without revealing any input.
    """
    if not isinstance(vectors, Mapping) or not vectors:
        raise InvalidInputError("vectors must be a non-empty mapping of client id to vector.")
    ids = [_client_id(c) for c in vectors]
    drop = dict(drop or {})
    for cid, stage in drop.items():
        if cid not in vectors:
            raise InvalidInputError(f"drop names {cid!r}, who has no vector.")
        _int(f"drop[{cid!r}]", stage, 0, 3)
    length = config.vector_length
    for cid in ids:
        arr = np.asarray(vectors[cid])
        if arr.shape != (length,):
            raise InvalidInputError(f"client {cid!r}: expected shape ({length},), got {arr.shape}.")
        if encoded and arr.dtype != np.uint64:
            raise InvalidInputError(f"client {cid!r}: encoded vectors must be uint64.")
        if not encoded and not clip:
            encode_fixed_point(arr, config.scale_bits, config.bound, clip=False)  # raises early
    rngs: list[np.random.Generator | None] = (
        list(randomness.spawn(len(ids))) if randomness is not None else [None] * len(ids)
    )
    clients = {
        cid: SecAggClient(cid, config, randomness=rng) for cid, rng in zip(ids, rngs, strict=True)
    }
    server = SecAggServer(config, ids)

    def active(stage: Stage) -> list[str]:
        return [c for c in ids if drop.get(c, 4) > stage]

    timings: dict[str, float] = {}
    start = time.perf_counter()
    for c in active(Stage.ADVERTISE_KEYS):
        server.receive_keys(clients[c].advertise_keys())
    roster = server.broadcast_keys()
    timings["advertise_keys"] = time.perf_counter() - start

    mark = time.perf_counter()
    for c in active(Stage.SHARE_KEYS):
        server.receive_shares(clients[c].share_keys(roster))
    timings["share_keys"] = time.perf_counter() - mark

    mark = time.perf_counter()
    for c in active(Stage.MASKED_INPUT):
        received = server.shares_for(c)
        client = clients[c]
        if encoded:
            message = client.masked_input_encoded(vectors[c], received)
        else:
            message = client.masked_input(vectors[c], received, clip=clip)
        server.receive_masked(message)
    timings["masked_input"] = time.perf_counter() - mark

    mark = time.perf_counter()
    request = server.unmask_request()
    for c in active(Stage.UNMASKING):
        if c in request.survivors:
            server.receive_unmask(clients[c].unmask(request))
    total, survivors = server.result_encoded()
    timings["unmasking"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    return SecureSumResult(
        sum=decode_fixed_point(total, config.scale_bits),
        encoded_sum=total,
        survivors=survivors,
        timings=timings,
    )
