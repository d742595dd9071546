"""Homomorphic aggregation: clients encrypt, the server adds ciphertexts, the key holder decrypts.

Two backends implement the :class:`~fedge.federated.aggregation.SumAggregator` seam:

* :class:`CKKSAggregator` (TenSEAL, CKKS): approximate arithmetic on large float vectors.
* :class:`PaillierAggregator` (``phe``, Paillier): exact integer arithmetic on small vectors
  of fixed-point numbers (or integers).

Three roles, three sets of material::

    KeyHolder            secret key, checksum key     decrypts only the sum
      .client_keys()  -> PublicKeys(public context + checksum key)   for clients: encode
      .server_keys()  -> PublicKeys(public context only)             for the server: add

    client:   payload = CKKSAggregator(client_keys).encode(update, weight)     # EncryptedVector
    server:   total = CKKSAggregator(server_keys).add_encrypted(payloads)      # EncryptedSum
    holder:   parameters, total_weight = key_holder.decrypt(total)

``CKKSAggregator.generate_keys()`` (or ``PaillierAggregator.generate_keys()``) builds all three in
one process: its ``aggregate(payloads)`` is ``key_holder.decrypt(add_encrypted(payloads))``.
Payloads, sums and keys are bytes on the wire (``to_bytes`` / ``from_bytes``).

What a client encrypts
----------------------
The plaintext vector is ``[1, weight, bound, *(weight * flatten(parameters))]`` (Paillier has
no ``bound`` slot) followed by checksum tags. The ``1`` counts clients, ``bound`` is the
client's largest ``|value|`` (CKKS uses the sum of the bounds to state the error of the sum)
and the shapes of the parameter arrays travel in the payload header so the sum is unflattened
correctly.

Integrity: wrong keys and tampering
-----------------------------------
* Every payload carries the **key id** (the first 16 bytes of the SHA-256 of the public
  context) of the keys it was made with; the server and the key holder refuse payloads with
  another id, so a ciphertext from another key holder fails *before* anything is decrypted.
* Structure is checked on every parse: the container, the header (scheme, shapes, round,
  count), the number and length of the ciphertexts, and for CKKS each ciphertext's SEAL
  parameters (same ``parms_id``, 2 polynomials, NTT form, unchanged level and *exactly* the
  agreed scale, so the scale field cannot be edited to rescale a sum); for Paillier each
  ciphertext lies in ``[1, n^2)`` and is a unit mod ``n``.
* Bytes are **canonical**: a payload is accepted only if it is the unique encoding of what
  it decodes to (the header is re-packed, each TenSEAL ciphertext re-serialised, and both
  compared with the bytes received; TenSEAL's own copy of the scale, which decryption ignores,
  is pinned; Paillier integers have a fixed length). A flipped byte therefore either fails to
  parse, or is caught by that comparison, or changes a decoded ciphertext, which the checksum
  below catches (all 7,707 single-bit flips tried on a CKKS payload were refused).
* An **encrypted linear checksum** survives addition: each client appends tags
  ``t = sum_j r_j v_j`` where ``r`` is derived (HMAC-SHA256 then SHAKE-256) from a
  *checksum key* that clients and the key holder share and the server never sees, bound to the
  key id, the shapes and the round. Addition keeps ``sum t = sum_j r_j (sum v)_j``, which the
  key holder checks after decryption: exactly modulo ``n`` for Paillier (a forgery passes with
  probability about ``1/p``, ``p`` ~ 2^1024), within the CKKS error for CKKS (``r`` is
  normalised to unit L1 norm per block of 4096 slots, so honest sums pass with a 4x margin,
  while flipped ciphertext bytes or a foreign key decrypt to values of order ``q/scale``
  ~ 2^69 that miss the check by many orders of magnitude). A ciphertext under another key
  with a forged key id therefore still fails, at the key holder; so does a replay from another
  round. The count slot must decrypt to the number of payloads the server reports.

What this does not protect against: the server can still apply the linear operations it is
meant to apply to honest ciphertexts (count one client twice and say so, drop a client) or
perturb the sum below the CKKS error. HE hides updates from the server; it does not make the
server honest, nor authenticate individual clients (anyone with the client keys can encrypt).

Errors raised here: :class:`EncryptionError` (a payload, sum or key that is malformed, under
another key, or fails its checksum), :class:`~fedge.errors.InvalidInputError` (values a scheme
cannot encode), :class:`~fedge.errors.UnsupportedOperationError` (missing ``fedge[he]`` extra,
or an operation the material at hand does not allow, e.g. decrypting without the secret key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedge.errors import EncryptionError, InvalidInputError, UnsupportedOperationError
from fedge.federated.messages import ClientUpdate, Parameters, flatten

__all__ = [
    "CKKSAggregator",
    "DecryptedSum",
    "EncryptedSum",
    "EncryptedVector",
    "EncryptionError",
    "KeyHolder",
    "PaillierAggregator",
    "PublicKeys",
]


_HE_EXTRA = "pip install 'fedge[he]'"
_MAGIC = b"FEHE"
_FORMAT_VERSION = 1
_KIND_VECTOR = b"V"
_KIND_KEYS = b"K"
_MAX_HEADER = 1 << 20
_SCHEMES = ("ckks", "paillier")

# CKKS parameters. Addition needs no multiplicative depth, so the coefficient modulus is two
# 60-bit data primes plus the special prime: 180 bits, inside the 218 bits that 128-bit
# security allows at degree 8192. Degree 4096 allows only 109 bits, i.e. one data prime and a
# scale of about 2^40, whose ~1e-8 error per client is too large for 1000-client sums.
_CKKS_COEFF_BITS = (60, 60, 60)
_CKKS_DEGREES = (8192, 16384, 32768)
# Measured (TenSEAL 0.3.18, degree 8192, scale 2^50): the largest per-element error of one
# client over 100k values is 1.1e-11 for |v| <= 1e3 and grows as ~6e-16 |v| beyond (7e-10 at
# 1e6, 6e-7 at 1e9). The documented bounds below carry a 9x and a 3x margin.
_CKKS_NOISE = 1e-10  # per client, per element, at scale 2^50 and degree 8192
_CKKS_RELATIVE = 2e-15  # times the magnitude of the encoded values
_CKKS_HEADROOM_BITS = 20  # room left for summing ~10^6 clients at the per-client maximum
_CKKS_CHECK_MARGIN = 4.0

_PAILLIER_MIN_BITS = 2048


# ----------------------------------------------------------------------------- dependencies


def _tenseal() -> Any:
    try:
        import tenseal
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedOperationError(
            f"CKKS aggregation needs TenSEAL, which is not installed: {_HE_EXTRA}"
        ) from exc
    return tenseal


def _phe() -> Any:
    try:
        import phe
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedOperationError(
            f"Paillier aggregation needs phe, which is not installed: {_HE_EXTRA}"
        ) from exc
    return phe


# ------------------------------------------------------------------------------ containers


def _pack(kind: bytes, header: dict[str, Any], blobs: Sequence[bytes]) -> bytes:
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    parts = [_MAGIC, kind, bytes([_FORMAT_VERSION]), struct.pack(">I", len(head)), head]
    parts.append(struct.pack(">I", len(blobs)))
    for blob in blobs:
        parts.append(struct.pack(">I", len(blob)))
        parts.append(blob)
    return b"".join(parts)


def _unpack(data: bytes, kind: bytes, what: str) -> tuple[dict[str, Any], list[bytes]]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncryptionError(f"{what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 10 or data[:4] != _MAGIC or data[4:5] != kind:
        raise EncryptionError(f"not a fedge {what}: bad magic bytes (garbage or another format)")
    if data[5] != _FORMAT_VERSION:
        raise EncryptionError(f"{what} has format version {data[5]}; this fedge reads version 1")
    pos = 6

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise EncryptionError(f"{what} is truncated or corrupted (length fields out of range)")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    (head_len,) = struct.unpack(">I", take(4))
    if head_len > _MAX_HEADER:
        raise EncryptionError(f"{what} is corrupted: header of {head_len} bytes")
    try:
        header = json.loads(take(head_len).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise EncryptionError(f"{what} is corrupted: unreadable header") from exc
    if not isinstance(header, dict):
        raise EncryptionError(f"{what} is corrupted: header is not an object")
    (n_blobs,) = struct.unpack(">I", take(4))
    if n_blobs > len(data):
        raise EncryptionError(f"{what} is corrupted: {n_blobs} ciphertexts announced")
    blobs = []
    for _ in range(n_blobs):
        (size,) = struct.unpack(">I", take(4))
        blobs.append(take(size))
    if pos != len(data):
        raise EncryptionError(f"{what} is corrupted: {len(data) - pos} trailing bytes")
    return header, blobs


def _field(header: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise EncryptionError(f"{what} is corrupted: header field {name!r} missing or invalid")
    return value


def _key_id(public_context: bytes) -> str:
    return hashlib.sha256(public_context).digest()[:16].hex()


@dataclass(frozen=True)
class PublicKeys:
    """What a client (``checksum_key`` set) or the server (``checksum_key=None``) holds.

    ``context`` is the public TenSEAL context (no secret key) or the Paillier modulus ``n``;
    ``params`` the scheme's agreed parameters. Never contains the secret key.
    """

    scheme: str
    key_id: str
    params: dict[str, Any]
    context: bytes
    checksum_key: bytes | None = None

    def to_bytes(self) -> bytes:
        header = {"scheme": self.scheme, "key_id": self.key_id, "params": self.params}
        blobs = [self.context] + ([self.checksum_key] if self.checksum_key is not None else [])
        return _pack(_KIND_KEYS, header, blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeys:
        header, blobs = _unpack(data, _KIND_KEYS, "public keys")
        scheme = _field(header, "scheme", str, "public keys")
        key_id = _field(header, "key_id", str, "public keys")
        params = _field(header, "params", dict, "public keys")
        if scheme not in _SCHEMES or len(blobs) not in (1, 2):
            raise EncryptionError("public keys are corrupted: unknown scheme or layout")
        if _key_id(blobs[0]) != key_id:
            raise EncryptionError("public keys are corrupted: the context does not match its id")
        checksum_key = blobs[1] if len(blobs) == 2 else None
        keys = cls(scheme, key_id, params, blobs[0], checksum_key)
        if keys.to_bytes() != bytes(data) or (checksum_key is not None and len(checksum_key) != 32):
            raise EncryptionError("public keys are corrupted: not in canonical form")
        return keys


@dataclass(frozen=True)
class EncryptedVector:
    """Ciphertexts of one client's weighted update (``count == 1``) or of a sum of them.

    ``shapes`` are the parameter arrays' shapes, ``round`` the federated round (bound into the
    checksum so ciphertexts cannot be replayed into another round), ``ciphertexts`` the
    serialised ciphertexts (TenSEAL ``serialize()`` or big-endian Paillier integers).
    """

    scheme: str
    key_id: str
    round: int
    count: int
    shapes: tuple[tuple[int, ...], ...]
    ciphertexts: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        header = {
            "scheme": self.scheme,
            "key_id": self.key_id,
            "round": self.round,
            "count": self.count,
            "shapes": [list(s) for s in self.shapes],
        }
        return _pack(_KIND_VECTOR, header, self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedVector:
        what = "encrypted payload"
        header, blobs = _unpack(data, _KIND_VECTOR, what)
        scheme = _field(header, "scheme", str, what)
        key_id = _field(header, "key_id", str, what)
        round_ = _field(header, "round", int, what)
        count = _field(header, "count", int, what)
        shapes = _field(header, "shapes", list, what)
        if scheme not in _SCHEMES or count < 1 or not blobs:
            raise EncryptionError(f"{what} is corrupted: bad scheme, count or ciphertexts")
        if not all(
            isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes
        ):
            raise EncryptionError(f"{what} is corrupted: bad parameter shapes")
        out = cls(scheme, key_id, round_, count, tuple(tuple(s) for s in shapes), tuple(blobs))
        if out.to_bytes() != bytes(data):
            raise EncryptionError(f"{what} is corrupted: header not in canonical form (altered)")
        return out

    @property
    def n_values(self) -> int:
        """Number of parameter values (the flattened length)."""
        return sum(math.prod(s) for s in self.shapes)


class EncryptedSum(EncryptedVector):
    """The server's ciphertext sum of several :class:`EncryptedVector` (what the holder gets)."""


@dataclass(frozen=True)
class DecryptedSum:
    """What the key holder learns: the weighted sum, the total weight, and how exact they are.

    ``error_bound`` bounds the absolute error of every value (CKKS: from the documented noise
    model and the clients' encrypted magnitude bounds; Paillier: the fixed-point rounding,
    ``count * 2**-(fractional_bits + 1)``, 0 for integers).
    """

    parameters: Parameters
    total_weight: float
    count: int
    error_bound: float


def _as_payload(payload: Any) -> EncryptedVector:
    if isinstance(payload, EncryptedVector):
        return payload
    if isinstance(payload, bytes | bytearray | memoryview):
        return EncryptedVector.from_bytes(bytes(payload))
    raise EncryptionError(f"expected an EncryptedVector or its bytes, got {type(payload).__name__}")


def _mac_seed(checksum_key: bytes, scheme: str, key_id: str, shapes: Any, round_: int) -> bytes:
    message = json.dumps(
        {"scheme": scheme, "key_id": key_id, "shapes": [list(s) for s in shapes], "round": round_},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return hmac.new(checksum_key, b"fedge-he-checksum-v1\x00" + message, hashlib.sha256).digest()


def _unflatten(values: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> Parameters:
    out, pos = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(np.array(values[pos : pos + size], dtype=np.float64).reshape(shape))
        pos += size
    return out


def _check_weight(weight: float) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"weight must be a number, got {weight!r}") from exc
    if not math.isfinite(w) or w < 0:
        raise InvalidInputError(f"weight must be finite and >= 0, got {weight!r}")
    return w


# ----------------------------------------------------------------------------------- backends


class _CKKS:
    """CKKS arithmetic on one public (or private) TenSEAL context."""

    def __init__(self, keys: PublicKeys, secret_context: Any = None) -> None:
        ts = _tenseal()
        self.keys = keys
        self.degree = int(keys.params["poly_modulus_degree"])
        self.scale_bits = int(keys.params["scale_bits"])
        self.coeff_bits = tuple(int(b) for b in keys.params["coeff_mod_bit_sizes"])
        self.slots = self.degree // 2
        self.scale = 2.0**self.scale_bits
        self.scale_tail = b"\x19" + struct.pack("<d", self.scale)
        data_bits = sum(self.coeff_bits[:-1])
        self.max_abs = 2.0 ** (data_bits - 1 - self.scale_bits - _CKKS_HEADROOM_BITS)
        self.noise = _CKKS_NOISE * 2.0 ** (50 - self.scale_bits) * (self.degree / 8192)
        if secret_context is not None:
            self.context = secret_context
        else:
            try:
                self.context = ts.context_from(keys.context)
            except Exception as exc:
                raise EncryptionError(f"unreadable CKKS public context: {exc}") from exc
            if self.context.is_private():
                raise EncryptionError(
                    "these 'public' keys contain the CKKS secret key; refusing to use them "
                    "(share KeyHolder.client_keys()/server_keys() only)"
                )
        self.context.global_scale = self.scale
        self.context.auto_rescale = False

    # per-client error bound, summed over clients: n * noise + relative * sum of bounds
    def error_bound(self, count: int, sum_of_bounds: float) -> float:
        return count * self.noise + _CKKS_RELATIVE * sum_of_bounds

    def layout(self, n_data: int) -> int:
        return -(-n_data // self.slots)  # number of checksum blocks (and tags)

    def mac_vector(self, seed: bytes, n_data: int) -> np.ndarray:
        raw = np.frombuffer(hashlib.shake_256(seed).digest(8 * n_data), dtype=">u8")
        r = raw.astype(np.float64) / 2.0**63 - 1.0
        for start in range(0, n_data, self.slots):
            block = r[start : start + self.slots]
            block /= np.abs(block).sum()
        return r

    def tags(self, r: np.ndarray, data: np.ndarray) -> np.ndarray:
        return np.array(
            [
                float(np.dot(r[i : i + self.slots], data[i : i + self.slots]))
                for i in range(0, data.size, self.slots)
            ]
        )

    def encrypt(self, plain: np.ndarray) -> tuple[bytes, ...]:
        ts = _tenseal()
        return tuple(
            ts.ckks_vector(self.context, plain[i : i + self.slots]).serialize()
            for i in range(0, plain.size, self.slots)
        )

    def load(self, blob: bytes, expected_size: int, context: Any) -> Any:
        ts = _tenseal()
        try:
            vector = ts.ckks_vector_from(context, blob)
            parts = vector.ciphertext()
        except Exception as exc:
            raise EncryptionError(
                f"a CKKS ciphertext does not deserialise under this context ({exc}): "
                "corrupted bytes or other encryption parameters"
            ) from exc
        # TenSEAL's wrapper ends with its own copy of the scale (protobuf field 3, a double);
        # decryption ignores it and it re-serialises as read, so pin it explicitly.
        if not blob.endswith(self.scale_tail) or vector.serialize() != blob:
            raise EncryptionError(
                "a CKKS ciphertext's bytes are not the canonical encoding of what they decode "
                "to: they were altered"
            )
        if vector.size() != expected_size or len(parts) != 1:
            raise EncryptionError("a CKKS ciphertext has the wrong number of slots (corrupted)")
        c = parts[0]
        if (
            c.size() != 2
            or not c.is_ntt_form()
            or c.coeff_modulus_size() != len(self.coeff_bits) - 1
            or c.poly_modulus_degree() != self.degree
            or c.scale != self.scale
        ):
            raise EncryptionError(
                "a CKKS ciphertext has altered metadata (size, NTT form, level or scale)"
            )
        return vector

    def chunk_sizes(self, total: int) -> list[int]:
        return [min(self.slots, total - i) for i in range(0, total, self.slots)]

    def add(self, payloads: Sequence[EncryptedVector], total: int) -> tuple[bytes, ...]:
        sizes = self.chunk_sizes(total)
        acc = None
        for payload in payloads:
            vectors = [
                self.load(b, s, self.context)
                for b, s in zip(payload.ciphertexts, sizes, strict=True)
            ]
            # a = a + b: TenSEAL's in-place += is ~75x slower
            acc = vectors if acc is None else [a + b for a, b in zip(acc, vectors, strict=True)]
        assert acc is not None
        return tuple(v.serialize() for v in acc)

    def decrypt(self, blobs: Sequence[bytes], total: int) -> np.ndarray:
        sizes = self.chunk_sizes(total)
        return np.concatenate(
            [
                np.asarray(self.load(b, s, self.context).decrypt(), dtype=np.float64)
                for b, s in zip(blobs, sizes, strict=True)
            ]
        )


class _Paillier:
    """Packed Paillier: ``slots`` fixed-point values per ciphertext, sums exact modulo n."""

    def __init__(self, keys: PublicKeys, private_key: Any = None) -> None:
        phe = _phe()
        self.keys = keys
        self.n = int.from_bytes(keys.context, "big")
        if self.n.bit_length() < _PAILLIER_MIN_BITS - 8 or self.n % 2 == 0:
            raise EncryptionError("unusable Paillier public key (modulus too small or even)")
        self.public_key = phe.PaillierPublicKey(self.n)
        self.private_key = private_key
        self.n2 = self.n * self.n
        self.cipher_len = (self.n2.bit_length() + 7) // 8
        p = keys.params
        self.fractional_bits = int(p["fractional_bits"])
        self.value_bits = int(p["value_bits"])
        self.slot_bits = int(p["slot_bits"])
        self.slots = int(p["slots"])
        self.max_clients = int(p["max_clients"])
        self.max_length = int(p["max_length"])
        self.offset = 1 << (self.value_bits - 1)

    def mac_vector(self, seed: bytes, n_data: int) -> list[int]:
        width = (self.n.bit_length() + 128 + 7) // 8
        raw = hashlib.shake_256(seed).digest(width * n_data)
        return [
            int.from_bytes(raw[i * width : (i + 1) * width], "big") % self.n for i in range(n_data)
        ]

    def encrypt_ints(self, values: Sequence[int], tag: int) -> tuple[bytes, ...]:
        plains = []
        for start in range(0, len(values), self.slots):
            m = 0
            for j, a in enumerate(values[start : start + self.slots]):
                m |= (a + self.offset) << (self.slot_bits * j)
            plains.append(m)
        plains.append(tag % self.n)
        return tuple(
            self.public_key.raw_encrypt(m).to_bytes(self.cipher_len, "big") for m in plains
        )

    def load(self, blob: bytes) -> int:
        if len(blob) != self.cipher_len:
            raise EncryptionError("a Paillier ciphertext has the wrong length (corrupted)")
        c = int.from_bytes(blob, "big")
        if not 0 < c < self.n2 or math.gcd(c, self.n) != 1:
            raise EncryptionError("a Paillier ciphertext is out of range (corrupted or other key)")
        return c

    def n_ciphertexts(self, n_data: int) -> int:
        return -(-n_data // self.slots) + 1

    def add(self, payloads: Sequence[EncryptedVector]) -> tuple[bytes, ...]:
        acc: list[int] | None = None
        for payload in payloads:
            cs = [self.load(b) for b in payload.ciphertexts]
            acc = cs if acc is None else [a * c % self.n2 for a, c in zip(acc, cs, strict=True)]
        assert acc is not None
        return tuple(c.to_bytes(self.cipher_len, "big") for c in acc)

    def decrypt(self, blobs: Sequence[bytes], n_data: int, count: int) -> tuple[list[int], int]:
        plains = [self.private_key.raw_decrypt(self.load(b)) for b in blobs]
        mask = (1 << self.slot_bits) - 1
        shift = count * self.offset
        values: list[int] = []
        for i, m in enumerate(plains[:-1]):
            k = min(self.slots, n_data - i * self.slots)
            if m >> (self.slot_bits * k):
                raise EncryptionError(
                    "the decrypted Paillier sum is not a valid packing: a ciphertext was "
                    "altered or encrypted under a different key"
                )
            values.extend(((m >> (self.slot_bits * j)) & mask) - shift for j in range(k))
        return values, plains[-1]


# ------------------------------------------------------------------------------- key holder


class KeyHolder:
    """Owns the secret key (and the checksum key); decrypts only sums.

    Build with :meth:`ckks` or :meth:`paillier`; hand :meth:`client_keys` to clients and
    :meth:`server_keys` to the server. Neither contains the secret key.
    """

    def __init__(self, scheme: str, backend: _CKKS | _Paillier, checksum_key: bytes) -> None:
        self.scheme = scheme
        self._backend = backend
        self._checksum_key = checksum_key

    @classmethod
    def ckks(cls, *, poly_modulus_degree: int = 8192, scale_bits: int = 50) -> KeyHolder:
        """CKKS keys: degree 8192 (4096 slots per ciphertext), moduli 60/60/60 bits, scale 2^50.

        Any vector length fits (vectors are split into ciphertexts of ``degree / 2`` slots);
        larger degrees (16384, 32768) mean fewer, larger ciphertexts, not more precision.
        ``scale_bits`` (30..58) trades precision for headroom: the per-client error is about
        ``1e-10 * 2**(50 - scale_bits)`` and ``|weight * value|`` must stay below
        ``2**(99 - scale_bits)``.
        """
        ts = _tenseal()
        if poly_modulus_degree not in _CKKS_DEGREES:
            raise InvalidInputError(
                f"poly_modulus_degree must be one of {_CKKS_DEGREES}, got {poly_modulus_degree!r}"
            )
        if not (isinstance(scale_bits, int) and 30 <= scale_bits <= 58):
            raise InvalidInputError(f"scale_bits must be an integer in 30..58, got {scale_bits!r}")
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=list(_CKKS_COEFF_BITS),
        )
        context.global_scale = 2.0**scale_bits
        public = context.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        params = {
            "poly_modulus_degree": poly_modulus_degree,
            "coeff_mod_bit_sizes": list(_CKKS_COEFF_BITS),
            "scale_bits": scale_bits,
        }
        keys = PublicKeys("ckks", _key_id(public), params, public, None)
        return cls("ckks", _CKKS(keys, secret_context=context), secrets.token_bytes(32))

    @classmethod
    def paillier(
        cls,
        *,
        key_bits: int = 2048,
        fractional_bits: int = 32,
        value_bits: int = 64,
        max_clients: int = 65536,
        max_length: int = 2000,
    ) -> KeyHolder:
        """Paillier keys with fixed-point packing.

        Each value ``v`` (already multiplied by the weight) is encoded as the integer
        ``round(v * 2**fractional_bits)``, which must satisfy ``|.| < 2**(value_bits - 1)``
        (default: ``|v| < 2**31``). ``fractional_bits=0`` encodes exact integers (non-integers
        are refused). Values are packed ``(value_bits + log2(max_clients))``-bit slots wide,
        25 per ciphertext at the defaults, so sums of up to ``max_clients`` never carry.
        ``max_length`` caps the flattened parameter count (see :class:`PaillierAggregator`).
        """
        phe = _phe()
        if not (isinstance(key_bits, int) and key_bits >= _PAILLIER_MIN_BITS):
            raise InvalidInputError(f"key_bits must be an integer >= 2048, got {key_bits!r}")
        if not (isinstance(fractional_bits, int) and 0 <= fractional_bits < value_bits <= 512):
            raise InvalidInputError(
                "need integers 0 <= fractional_bits < value_bits <= 512, got "
                f"fractional_bits={fractional_bits!r}, value_bits={value_bits!r}"
            )
        if not (isinstance(max_clients, int) and max_clients >= 1):
            raise InvalidInputError(f"max_clients must be a positive integer, got {max_clients!r}")
        if not (isinstance(max_length, int) and max_length >= 1):
            raise InvalidInputError(f"max_length must be a positive integer, got {max_length!r}")
        public_key, private_key = phe.generate_paillier_keypair(n_length=key_bits)
        n = public_key.n
        slot_bits = value_bits + max_clients.bit_length()
        slots = (n.bit_length() - 1) // slot_bits
        if slots < 1:
            raise InvalidInputError("value_bits and max_clients do not fit in the key size")
        context = n.to_bytes((n.bit_length() + 7) // 8, "big")
        params = {
            "key_bits": key_bits,
            "fractional_bits": fractional_bits,
            "value_bits": value_bits,
            "slot_bits": slot_bits,
            "slots": slots,
            "max_clients": max_clients,
            "max_length": max_length,
        }
        keys = PublicKeys("paillier", _key_id(context), params, context, None)
        backend = _Paillier(keys, private_key=private_key)
        return cls("paillier", backend, secrets.token_bytes(32))

    @property
    def key_id(self) -> str:
        return self._backend.keys.key_id

    def client_keys(self) -> PublicKeys:
        """Public context plus the checksum key: what a client needs to encrypt."""
        k = self._backend.keys
        return PublicKeys(k.scheme, k.key_id, dict(k.params), k.context, self._checksum_key)

    def server_keys(self) -> PublicKeys:
        """Public context only: what the server needs to add ciphertexts."""
        k = self._backend.keys
        return PublicKeys(k.scheme, k.key_id, dict(k.params), k.context, None)

    def decrypt(self, encrypted_sum: EncryptedVector | bytes) -> tuple[Parameters, float]:
        """The weighted parameter sum and total weight (after every integrity check)."""
        result = self.decrypt_detailed(encrypted_sum)
        return result.parameters, result.total_weight

    def decrypt_detailed(self, encrypted_sum: EncryptedVector | bytes) -> DecryptedSum:
        """Like :meth:`decrypt`, with the client count and the error bound of the values."""
        total = _as_payload(encrypted_sum)
        _check_same_key(total, self.scheme, self.key_id)
        seed = _mac_seed(self._checksum_key, total.scheme, total.key_id, total.shapes, total.round)
        if isinstance(self._backend, _CKKS):
            return _ckks_decrypt(self._backend, total, seed)
        return _paillier_decrypt(self._backend, total, seed)


_TAMPERED = (
    "the decrypted sum fails its encrypted checksum: a ciphertext was altered, encrypted under "
    "a different key, or replayed from another round"
)


def _ckks_decrypt(b: _CKKS, total: EncryptedVector, seed: bytes) -> DecryptedSum:
    n_data = 3 + total.n_values
    n_tags = b.layout(n_data)
    if len(total.ciphertexts) != b.layout(n_data + n_tags):
        raise EncryptionError("the encrypted sum has the wrong number of ciphertexts")
    plain = b.decrypt(total.ciphertexts, n_data + n_tags)
    if not np.all(np.isfinite(plain)):
        raise EncryptionError(_TAMPERED)
    data, tags = plain[:n_data], plain[n_data:]
    sum_of_bounds = abs(float(data[2]))
    bound = b.error_bound(total.count, sum_of_bounds)
    tolerance = _CKKS_CHECK_MARGIN * 2 * bound
    mismatch = np.abs(b.tags(b.mac_vector(seed, n_data), data) - tags)
    if not np.all(mismatch <= tolerance) or abs(data[0] - total.count) > tolerance:
        raise EncryptionError(_TAMPERED)
    if np.abs(data).max() > sum_of_bounds + tolerance:
        raise EncryptionError(_TAMPERED)
    return DecryptedSum(_unflatten(data[3:], total.shapes), float(data[1]), total.count, bound)


def _paillier_decrypt(b: _Paillier, total: EncryptedVector, seed: bytes) -> DecryptedSum:
    n_data = 2 + total.n_values
    if len(total.ciphertexts) != b.n_ciphertexts(n_data) or total.count > b.max_clients:
        raise EncryptionError("the encrypted sum has the wrong number of ciphertexts or clients")
    values, tag = b.decrypt(total.ciphertexts, n_data, total.count)
    r = b.mac_vector(seed, n_data)
    if sum(ri * vi for ri, vi in zip(r, values, strict=True)) % b.n != tag:
        raise EncryptionError(_TAMPERED)
    one = 1 << b.fractional_bits
    if values[0] != total.count * one:
        raise EncryptionError(_TAMPERED)
    scale = 2.0**-b.fractional_bits
    floats = np.array([float(v) for v in values[1:]]) * scale
    bound = total.count * 2.0 ** -(b.fractional_bits + 1) if b.fractional_bits else 0.0
    return DecryptedSum(_unflatten(floats[1:], total.shapes), float(floats[0]), total.count, bound)


def _check_same_key(payload: EncryptedVector, scheme: str, key_id: str) -> None:
    if payload.scheme != scheme:
        raise EncryptionError(f"a {payload.scheme} payload cannot be used with {scheme} keys")
    if payload.key_id != key_id:
        raise EncryptionError(
            f"a payload was encrypted under key {payload.key_id}, but these keys are {key_id}: "
            "it comes from another key holder's context"
        )


# ------------------------------------------------------------------------------- aggregators


class _HEAggregator:
    scheme: ClassVar[str]

    def __init__(self, keys: PublicKeys | bytes, *, key_holder: KeyHolder | None = None) -> None:
        if isinstance(keys, bytes | bytearray | memoryview):
            keys = PublicKeys.from_bytes(bytes(keys))
        if not isinstance(keys, PublicKeys):
            raise InvalidInputError(f"keys must be PublicKeys or bytes, got {type(keys).__name__}")
        if keys.scheme != self.scheme:
            raise InvalidInputError(
                f"{type(self).__name__} needs {self.scheme} keys, got {keys.scheme}"
            )
        if key_holder is not None and key_holder.key_id != keys.key_id:
            raise InvalidInputError("key_holder does not hold the secret key of these keys")
        self.keys = keys
        self.key_holder = key_holder
        self._backend = self._make_backend(keys)

    def _make_backend(self, keys: PublicKeys) -> Any:
        raise NotImplementedError

    def _client(self, update: ClientUpdate, weight: float) -> tuple[np.ndarray, bytes, Any]:
        if self.keys.checksum_key is None:
            raise UnsupportedOperationError(
                "these are server keys (no checksum key): clients encrypt with "
                "KeyHolder.client_keys()"
            )
        w = _check_weight(weight)
        shapes = tuple(tuple(int(d) for d in np.shape(p)) for p in update.parameters)
        flat = flatten(update.parameters)
        if not np.all(np.isfinite(flat)):
            raise InvalidInputError("parameters contain NaN or Inf; nothing was encrypted")
        seed = _mac_seed(
            self.keys.checksum_key, self.scheme, self.keys.key_id, shapes, update.round
        )
        return w * flat, seed, (w, shapes, int(update.round))

    def _wrap(self, meta: Any, ciphertexts: tuple[bytes, ...]) -> EncryptedVector:
        _, shapes, round_ = meta
        return EncryptedVector(self.scheme, self.keys.key_id, round_, 1, shapes, ciphertexts)

    def _add(self, payloads: Sequence[EncryptedVector]) -> tuple[bytes, ...]:
        raise NotImplementedError

    def add_encrypted(self, payloads: Sequence[EncryptedVector | bytes]) -> EncryptedSum:
        """The ciphertext sum of ``payloads`` (server side: public context only)."""
        if not payloads:
            raise InvalidInputError("nothing to aggregate: no payloads")
        parsed = [_as_payload(p) for p in payloads]
        first = parsed[0]
        for p in parsed:
            _check_same_key(p, self.scheme, self.keys.key_id)
            if p.shapes != first.shapes or p.round != first.round:
                raise EncryptionError(
                    "payloads disagree on parameter shapes or round: they cannot be summed "
                    f"(shapes {p.shapes} vs {first.shapes}, round {p.round} vs {first.round})"
                )
            if len(p.ciphertexts) != len(first.ciphertexts):
                raise EncryptionError("payloads have different numbers of ciphertexts (corrupted)")
        count = sum(p.count for p in parsed)
        blobs = self._add(parsed)
        return EncryptedSum(self.scheme, self.keys.key_id, first.round, count, first.shapes, blobs)

    def aggregate(self, payloads: Sequence[EncryptedVector | bytes]) -> tuple[Parameters, float]:
        """In-process seam: :meth:`add_encrypted`, then the key holder's ``decrypt``."""
        if self.key_holder is None:
            raise UnsupportedOperationError(
                "only the key holder decrypts: send add_encrypted(payloads) to it and call "
                "KeyHolder.decrypt (or build this aggregator with generate_keys())"
            )
        return self.key_holder.decrypt(self.add_encrypted(payloads))


class CKKSAggregator(_HEAggregator):
    """CKKS (TenSEAL) aggregation of large float vectors: approximate, fast, batched.

    Parameters (``KeyHolder.ckks``): degree 8192, coefficient moduli 60/60/60 bits (two data
    primes + the special prime, 180 <= 218 bits for 128-bit security), scale 2^50. Vectors of
    any length are split into ciphertexts of 4096 slots; the last one is partly filled.

    **Error** (absolute, every value of the weighted sum of ``n`` clients, each sending values
    ``|weight * parameter| <= B_c``)::

        |error| <= n * 1e-10 + 2e-15 * sum_c B_c       (scale 2^50, degree 8192)

    e.g. <= 1e-6 for 1000 clients with ``|weight * parameter| <= 1e5`` (3e-7); measured max
    per client 1.1e-11 for ``|v| <= 1e3``. :meth:`KeyHolder.decrypt_detailed` reports the bound
    of each sum. Values must satisfy ``|weight * parameter| <= 2**49`` (headroom for 2^20
    clients); larger ones are refused.

    **Cost** (measured, one core, 100,000 floats = 25 ciphertexts): encrypt ~125 ms per
    client, a ciphertext sum ~5 ms per client, decrypt ~40 ms; ~6.6 MB per payload (262 kB
    per ciphertext, incompressible).
    """

    scheme = "ckks"

    @classmethod
    def generate_keys(
        cls, *, poly_modulus_degree: int = 8192, scale_bits: int = 50
    ) -> CKKSAggregator:
        """A key holder and an aggregator on its client keys (in-process federations, tests)."""
        holder = KeyHolder.ckks(poly_modulus_degree=poly_modulus_degree, scale_bits=scale_bits)
        return cls(holder.client_keys(), key_holder=holder)

    def _make_backend(self, keys: PublicKeys) -> _CKKS:
        return _CKKS(keys)

    @property
    def public_context(self) -> Any:
        """The TenSEAL context this aggregator encrypts and adds with (never private)."""
        return self._backend.context

    def error_bound(self, n_clients: int, max_abs: float) -> float:
        """Documented absolute error of a sum of ``n_clients`` with ``|w * p| <= max_abs``."""
        return self._backend.error_bound(n_clients, n_clients * float(max_abs))

    def encode(self, update: ClientUpdate, weight: float) -> EncryptedVector:
        """Encrypt ``[1, weight, bound, *(weight * parameters)]`` and its checksum tags."""
        b: _CKKS = self._backend
        values, seed, meta = self._client(update, weight)
        w = meta[0]
        bound = max(float(np.abs(values).max(initial=0.0)), w, 1.0)
        if bound > b.max_abs:
            raise InvalidInputError(
                f"|weight * parameter| reaches {bound:.3g}, above the CKKS limit {b.max_abs:.3g} "
                f"at scale 2^{b.scale_bits}: scale the update down or lower scale_bits"
            )
        data = np.concatenate([[1.0, w, bound], values])
        tags = b.tags(b.mac_vector(seed, data.size), data)
        return self._wrap(meta, b.encrypt(np.concatenate([data, tags])))

    def _add(self, payloads: Sequence[EncryptedVector]) -> tuple[bytes, ...]:
        b: _CKKS = self._backend
        n_data = 3 + payloads[0].n_values
        total = n_data + b.layout(n_data)
        if len(payloads[0].ciphertexts) != b.layout(total):
            raise EncryptionError("a CKKS payload has the wrong number of ciphertexts (corrupted)")
        return b.add(payloads, total)


class PaillierAggregator(_HEAggregator):
    """Paillier (``phe``) aggregation of small vectors: exact sums of fixed-point numbers.

    Values ``weight * parameter`` are encoded as ``round(v * 2**fractional_bits)`` (default
    32 fractional bits, ``|v| < 2**31``); the integer sum is exact, so the decoded sum is within
    ``2**-(fractional_bits + 1)`` per client of the float sum (exact for integers with
    ``fractional_bits=0``). Default key: 2048-bit modulus.

    **Slow**: one Paillier encryption costs ~16 ms with gmpy2 and ~116 ms with pure-Python big
    integers (measured here without gmpy2); packing 25 values per ciphertext brings that to
    ~0.6 / ~5 ms per value, so 2,000 values take ~10 s per client without gmpy2. Vectors longer
    than ``max_length`` (default 2,000) are refused: use :class:`CKKSAggregator` for large
    float vectors.
    """

    scheme = "paillier"

    @classmethod
    def generate_keys(
        cls,
        *,
        key_bits: int = 2048,
        fractional_bits: int = 32,
        max_clients: int = 65536,
        max_length: int = 2000,
    ) -> PaillierAggregator:
        """A key holder and an aggregator on its client keys (in-process federations, tests)."""
        holder = KeyHolder.paillier(
            key_bits=key_bits,
            fractional_bits=fractional_bits,
            max_clients=max_clients,
            max_length=max_length,
        )
        return cls(holder.client_keys(), key_holder=holder)

    def _make_backend(self, keys: PublicKeys) -> _Paillier:
        return _Paillier(keys)

    @property
    def public_key(self) -> Any:
        """The ``phe.PaillierPublicKey`` this aggregator encrypts with."""
        return self._backend.public_key

    def encode(self, update: ClientUpdate, weight: float) -> EncryptedVector:
        """Encrypt ``[1, weight, *(weight * parameters)]`` (fixed point, packed) and a tag."""
        b: _Paillier = self._backend
        n_values = sum(int(np.size(p)) for p in update.parameters)
        if n_values > b.max_length:
            raise InvalidInputError(
                f"Paillier refuses {n_values} values (max_length={b.max_length}): at ~5 ms per "
                "value it is for small vectors; use CKKSAggregator for large float vectors"
            )
        values, seed, meta = self._client(update, weight)
        data = np.concatenate([[1.0, meta[0]], values])
        scaled = data * 2.0**b.fractional_bits
        rounded = np.rint(scaled)
        if b.fractional_bits == 0 and not np.array_equal(rounded, scaled):
            raise InvalidInputError(
                "fractional_bits=0 encodes integers, but weight * parameters has fractions"
            )
        limit = 2.0 ** (b.value_bits - 1)
        if np.abs(rounded).max() >= limit:
            raise InvalidInputError(
                f"|weight * parameter| must stay below 2^{b.value_bits - 1 - b.fractional_bits} "
                f"with {b.fractional_bits} fractional bits; scale the update down"
            )
        ints = [int(v) for v in rounded]
        r = b.mac_vector(seed, len(ints))
        tag = sum(ri * vi for ri, vi in zip(r, ints, strict=True)) % b.n
        return self._wrap(meta, b.encrypt_ints(ints, tag))

    def _add(self, payloads: Sequence[EncryptedVector]) -> tuple[bytes, ...]:
        b: _Paillier = self._backend
        if len(payloads[0].ciphertexts) != b.n_ciphertexts(2 + payloads[0].n_values):
            raise EncryptionError("a Paillier payload has the wrong number of ciphertexts")
        if sum(p.count for p in payloads) > b.max_clients:
            raise EncryptionError(
                f"more than max_clients={b.max_clients} updates: the packed sum could overflow"
            )
        return b.add(payloads)
