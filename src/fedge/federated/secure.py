"""Secure aggregation as a round option: what the clients do before anything leaves them, and
how the server turns the protected sum back into a model.

``SecureAggregation(method=...)`` picks the protection:

- ``"secagg"`` / ``"secagg+"``: pairwise masking (:mod:`fedge.federated.secure_aggregation`),
  full or over a random k-regular neighbour graph; dropouts recovered down to the threshold;
- ``"ckks"`` / ``"paillier"``: homomorphic encryption (:mod:`fedge.federated.encryption`); the
  server adds ciphertexts and a key holder (not the server) decrypts only the sum.

The server sees only the sum of the clients' protected vectors, so everything it used to check
per update moves to the clients: each client clips its update's distance from the global
model to ``clip_norm`` (part of the round's configuration, and of the fixed-point overflow
bound) before protecting it. Strategies that need individual updates (median, trimmed mean,
Krum) and per-update norm checks cannot run under secure aggregation and are refused.

What a client protects is one vector: ``[w * delta, w]`` with ``delta`` its clipped update
(parameters minus the round's global parameters) and ``w`` its aggregation weight, the number
of examples capped at ``max_weight`` and divided by it (so ``0 < w <= 1``). The sum gives the
strategy its weighted sum ``W * global + sum(w * delta)`` and total weight ``W``. Under
distributed differential privacy every client has ``w = 1`` and adds its share of noise to
``delta`` before protecting it (see :mod:`fedge.federated.distributed_dp`).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError, SecureAggregationError
from fedge.federated.messages import ClientUpdate, Parameters, flatten

__all__ = [
    "SECURE_METHODS",
    "SecureAggregation",
    "SecureResult",
    "SecureSession",
    "fixed_point_bits",
    "make_encryption",
    "masked_config",
    "protect_update",
    "secure_round",
    "unpack_sum",
]

SECURE_METHODS = ("secagg", "secagg+", "ckks", "paillier")
# Protocol stages a client can drop out at (FaultPlan kinds "drop_stage_<n>").
STAGES = {0: "advertise keys", 1: "share keys", 2: "masked input", 3: "unmasking"}


@dataclass(frozen=True)
class SecureAggregation:
    """How a federation's updates are protected in transit.

    Parameters
    ----------
    method : {"secagg", "secagg+", "ckks", "paillier"}
    clip_norm : float
        Each client clips the L2 distance of its parameters from the round's global
        parameters to this before protecting them (the server can no longer check norms).
    max_weight : float
        Client weights (number of examples) are capped at this and divided by it.
    threshold : float
        Fraction of a client's share holders (all selected clients under SecAgg, the client
        and its neighbours under SecAgg+) that must survive: ``t = floor(threshold * m) + 1``.
        Masking methods only.
    neighbours : int, optional
        SecAgg+ degree ``k``; by default ``max(4, ceil(2 log2 n))`` capped at ``n - 1``.
    scale_bits : int, optional
        Fixed-point precision; by default the most that cannot overflow for the round.
    """

    method: str = "secagg"
    clip_norm: float = 10.0
    max_weight: float = 10_000.0
    threshold: float = 0.5
    neighbours: int | None = None
    scale_bits: int | None = None

    def __post_init__(self) -> None:
        if self.method not in SECURE_METHODS:
            raise InvalidInputError(
                f"unknown secure aggregation {self.method!r}; use one of {SECURE_METHODS}"
            )
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise InvalidInputError(f"clip_norm must be a finite number > 0, got {self.clip_norm}")
        if not self.max_weight >= 1:
            raise InvalidInputError(f"max_weight must be >= 1, got {self.max_weight}")
        if not 0 < self.threshold < 1:
            raise InvalidInputError(f"threshold must be a fraction in (0, 1), got {self.threshold}")
        if self.neighbours is not None and self.neighbours < 1:
            raise InvalidInputError(f"neighbours must be >= 1, got {self.neighbours}")

    @property
    def masking(self) -> bool:
        """True for the pairwise-masking protocols (SecAgg, SecAgg+)."""
        return self.method in ("secagg", "secagg+")

    @property
    def bound(self) -> float:
        """Largest magnitude of one coordinate of a protected vector."""
        return max(self.clip_norm, 1.0)

    def degree(self, n: int) -> int | None:
        """The SecAgg+ neighbour count for ``n`` clients (None under full SecAgg)."""
        if self.method != "secagg+":
            return None
        k = self.neighbours or max(4, math.ceil(2 * math.log2(max(n, 2))))
        return max(1, min(k, n - 1))

    def threshold_for(self, n: int) -> int:
        """``t`` for a round of ``n`` clients: a strict majority-like share of the holders."""
        k = self.degree(n)
        holders = n if k is None else k + 1
        return max(2, min(holders, math.floor(self.threshold * holders) + 1))


def protect_update(
    update: ClientUpdate,
    global_parameters: Sequence[np.ndarray],
    secure: SecureAggregation,
    *,
    uniform_weight: bool = False,
) -> np.ndarray:
    """The vector a client protects: ``[w * clip(delta), w]`` (runs on the client).

    ``uniform_weight`` gives every client ``w = 1`` (distributed differential privacy, whose
    sensitivity argument needs equal weights).
    """
    delta = flatten(update.parameters) - flatten(global_parameters)
    norm = float(np.linalg.norm(delta))
    if norm > secure.clip_norm:
        delta = delta * (secure.clip_norm / norm)
    capped = min(update.num_examples, secure.max_weight)
    weight = 1.0 if uniform_weight else capped / secure.max_weight
    return np.concatenate([weight * delta, [weight]])


@dataclass(frozen=True)
class SecureResult:
    """What the server learns from a protected round: a sum, who is in it, what it cost."""

    vector_sum: np.ndarray  # sum of the survivors' protected vectors ([sum w*delta, sum w])
    survivors: tuple[str, ...]
    seconds: float
    timings: Mapping[str, float]


def secure_round(
    vectors: Mapping[str, np.ndarray],
    secure: SecureAggregation,
    *,
    selected: int,
    round_id: int,
    drops: Mapping[str, int] | None = None,
    encoded: bool = False,
    scale_bits: int | None = None,
    noise_bound: int = 0,
    encryption: Any = None,
) -> SecureResult:
    """Run the protection protocol over the clients' vectors and return only their sum.

    ``vectors`` stay on the client side of the protocol objects; the server half sees the
    protocol messages and the sum. ``drops`` maps a client to the stage (0-3) from which it
    sends nothing. ``encoded`` vectors are already fixed point (``uint64``, e.g. with integer
    noise added) at ``scale_bits``. ``encryption`` is the homomorphic aggregator (public
    keys, and in-process the key holder beside it), made once per federation by
    :func:`make_encryption`.
    """
    start = time.perf_counter()
    drops = dict(drops or {})
    if secure.masking:
        result = _masked_sum(
            vectors, secure, selected=selected, round_id=round_id, drops=drops,
            encoded=encoded, scale_bits=scale_bits, noise_bound=noise_bound,
        )
    else:
        if encryption is None:
            encryption = make_encryption(secure)
        result = _encrypted_sum(vectors, encryption, drops=drops)
    vector_sum, survivors, timings = result
    return SecureResult(vector_sum, survivors, time.perf_counter() - start, timings)


def fixed_point_bits(secure: SecureAggregation, n_clients: int, noise_bound: float = 0.0) -> int:
    """The most fixed-point bits (at most 40) for which ``n_clients`` vectors, each coordinate
    within ``secure.bound`` plus ``noise_bound`` (parameter units), cannot overflow the ring:
    ``n (B + noise + 1) 2^f <= 2^63 - 1``, with one bit of margin for rounding."""
    if secure.scale_bits is not None:
        return secure.scale_bits
    room = (2.0**63 - 1) / n_clients / (secure.bound + noise_bound + 1.0)
    if room < 2.0:
        raise SecureAggregationError(
            f"{n_clients} clients with bound {secure.bound:g} overflow the 64-bit ring"
        )
    return max(0, min(40, math.floor(math.log2(room)) - 1))


def masked_config(
    secure: SecureAggregation,
    n_clients: int,
    vector_length: int,
    *,
    round_id: int,
    scale_bits: int,
    noise_bound: int = 0,
) -> Any:
    """The public parameters of one SecAgg/SecAgg+ round (a fresh round seed each time), or a
    SecureAggregationError when ``n_clients`` encodings plus noise could overflow the ring."""
    from fedge.federated.secure_aggregation import SecAggConfig

    config = SecAggConfig(
        threshold=secure.threshold_for(max(n_clients, 2)),
        vector_length=vector_length,
        neighbours=secure.degree(n_clients),
        scale_bits=scale_bits,
        bound=secure.bound,
        round_id=round_id,
        round_seed=secrets.token_bytes(32),
    )
    if not config.overflow_ok(n_clients, noise_bound=noise_bound):
        raise SecureAggregationError(
            f"{n_clients} clients at {scale_bits} fixed-point bits could overflow the ring; "
            "lower scale_bits or clip_norm"
        )
    return config


def _masked_sum(
    vectors: Mapping[str, np.ndarray],
    secure: SecureAggregation,
    *,
    selected: int,
    round_id: int,
    drops: Mapping[str, int],
    encoded: bool,
    scale_bits: int | None,
    noise_bound: int,
) -> tuple[np.ndarray, tuple[str, ...], dict[str, float]]:
    from fedge.federated.secure_aggregation import secure_sum

    n = len(vectors)
    bits = scale_bits if scale_bits is not None else fixed_point_bits(secure, n)
    config = masked_config(
        secure, n, len(next(iter(vectors.values()))), round_id=round_id, scale_bits=bits,
        noise_bound=noise_bound,
    )
    result = secure_sum(vectors, config, drop=drops, encoded=encoded)
    return result.sum, tuple(result.survivors), dict(result.timings)


def make_encryption(secure: SecureAggregation) -> Any:
    """A homomorphic aggregator with fresh keys for a whole federation (keys are slow to make:
    seconds for Paillier). Its key holder is a party apart from the server: in-process it
    sits beside it, and only decrypts sums."""
    from fedge.federated.encryption import CKKSAggregator, PaillierAggregator

    maker = CKKSAggregator if secure.method == "ckks" else PaillierAggregator
    return maker.generate_keys()


def _encrypted_sum(
    vectors: Mapping[str, np.ndarray],
    aggregator: Any,
    *,
    drops: Mapping[str, int],
) -> tuple[np.ndarray, tuple[str, ...], dict[str, float]]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    # Encryption happens on each client; a client that drops before sending is simply absent.
    senders = [cid for cid in vectors if drops.get(cid, 99) > 2]
    payloads = [
        aggregator.encode(ClientUpdate(cid, 0, [vectors[cid]], 1), 1.0) for cid in senders
    ]
    timings["encrypt"] = time.perf_counter() - start
    if not payloads:
        raise SecureAggregationError("no client sent an encrypted update this round")
    start = time.perf_counter()
    parameters, _ = aggregator.aggregate(payloads)
    timings["add and decrypt"] = time.perf_counter() - start
    return np.asarray(parameters[0], dtype=np.float64), tuple(senders), timings


def unpack_sum(
    vector_sum: np.ndarray, global_parameters: Sequence[np.ndarray]
) -> tuple[Parameters, float]:
    """``(W * global + sum(w * delta), W)`` as parameter arrays, from a protected sum."""
    total_weight = float(vector_sum[-1])
    flat = flatten(global_parameters) * total_weight + vector_sum[:-1]
    out, start = [], 0
    for p in global_parameters:
        size = int(np.size(p))
        out.append(flat[start : start + size].reshape(np.shape(p)))
        start += size
    return out, total_weight


class SecureSession:
    """One protected round: built by the server, used by every selected client and the server.

    The client half (:meth:`client_vector`) clips, weights, adds the client's share of
    distributed-DP noise and encodes; the server half (:meth:`run`) runs the protocol and
    returns only the sum.

    Parameters
    ----------
    secure : SecureAggregation
    global_parameters : Parameters
        The round's global model (clients protect their distance from it).
    round_id : int
    selected : int
        Clients selected this round.
    noise_sigma : float
        Per-client noise std in parameter units (0 without distributed DP); integer
        (discrete Gaussian) under masking, Gaussian under homomorphic encryption.
    uniform_weight : bool
        Every client weighs 1 (distributed DP).
    """

    def __init__(
        self,
        secure: SecureAggregation,
        global_parameters: Parameters,
        *,
        round_id: int,
        selected: int,
        noise_sigma: float = 0.0,
        uniform_weight: bool = False,
        encryption: Any = None,
        scale_bits: int | None = None,
    ) -> None:
        self.secure = secure
        self.encryption = encryption
        self.global_parameters = global_parameters
        self.round_id = round_id
        self.selected = selected
        self.noise_sigma = noise_sigma
        self.uniform_weight = uniform_weight
        self.min_survivors = 1  # the server raises it to the threshold the noise is sized for
        if scale_bits is None:  # only masking adds integer noise to the encoding
            noise = self.noise_bound_float if secure.masking else 0.0
            scale_bits = fixed_point_bits(secure, max(selected, 1), noise)
        self.scale_bits = scale_bits

    @property
    def noise_bound_float(self) -> float:
        """The largest noise a client adds to a coordinate, in parameter units: integer noise
        beyond 12 sigma has probability < 1e-32 per coordinate (it is clipped there), and the
        overflow argument budgets for it."""
        return 12.0 * self.noise_sigma

    @property
    def integer_sigma(self) -> float:
        """The per-client discrete Gaussian std in fixed-point units."""
        return self.noise_sigma * 2.0**self.scale_bits

    def client_vector(self, update: ClientUpdate, rng: np.random.Generator) -> np.ndarray:
        """What the client hands to the protocol (runs on the client)."""
        vector = protect_update(
            update, self.global_parameters, self.secure, uniform_weight=self.uniform_weight
        )
        if not self.secure.masking:
            if self.noise_sigma > 0:
                vector[:-1] += rng.normal(0.0, self.noise_sigma, vector.size - 1)
            return vector
        from fedge.federated.distributed_dp import discrete_gaussian
        from fedge.federated.secure_aggregation import encode_fixed_point

        encoded = encode_fixed_point(vector, self.scale_bits, self.secure.bound)
        if self.noise_sigma > 0:
            noise = discrete_gaussian(self.integer_sigma, vector.size - 1, rng)
            noise = np.clip(noise, -self.noise_bound_int, self.noise_bound_int)
            encoded[:-1] += noise.astype(np.int64).view(np.uint64)  # wraps mod 2^64
        return encoded

    @property
    def noise_bound_int(self) -> int:
        return math.ceil(self.noise_bound_float * 2.0**self.scale_bits)

    def run(self, vectors: Mapping[str, np.ndarray], drops: Mapping[str, int]) -> SecureResult:
        """The server half: the protocol over ``vectors``; only the sum comes back."""
        return secure_round(
            vectors, self.secure, selected=self.selected, round_id=self.round_id, drops=drops,
            encoded=self.secure.masking, scale_bits=self.scale_bits,
            noise_bound=self.noise_bound_int if self.noise_sigma > 0 else 0,
            encryption=self.encryption,
        )
