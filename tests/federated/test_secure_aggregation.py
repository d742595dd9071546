"""Secure aggregation (SecAgg / SecAgg+): masks cancel, dropouts recover, honest clients refuse."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedge.errors import FedgeError, InvalidInputError
from fedge.federated.secure_aggregation import (
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SecureAggregationError,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
    decode_fixed_point,
    encode_fixed_point,
    neighbour_graph,
    prg_mask,
    secure_sum,
)
from fedge.federated.shamir import PRIME, Share

SEED = b"public round seed, 32 bytes long"


def make_config(t: int = 3, L: int = 6, k: int | None = None, **kw: object) -> SecAggConfig:
    params: dict = {
        "threshold": t,
        "vector_length": L,
        "neighbours": k,
        "round_id": 7,
        "round_seed": SEED,
        "bound": 10.0,
        "scale_bits": 16,
    }
    params.update(kw)
    return SecAggConfig(**params)


def make_vectors(n: int, L: int, seed: int = 0, bound: float = 10.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i}": rng.uniform(-bound, bound, L) for i in range(n)}


def ring_sum(config: SecAggConfig, vectors: Mapping[str, np.ndarray], ids) -> np.ndarray:
    total = np.zeros(config.vector_length, dtype=np.uint64)
    for c in ids:
        total += encode_fixed_point(vectors[c], config.scale_bits, config.bound)
    return total


class Round:
    """Drive one round by hand, so tests can play a misbehaving server or network."""

    def __init__(self, config: SecAggConfig, n: int, seed: int = 0) -> None:
        self.config = config
        self.ids = [f"c{i}" for i in range(n)]
        children = np.random.default_rng(seed).spawn(n)
        self.clients = {
            c: SecAggClient(c, config, randomness=r)
            for c, r in zip(self.ids, children, strict=True)
        }
        self.server = SecAggServer(config, self.ids)
        self.vectors = make_vectors(n, config.vector_length, seed)
        self.roster: dict[str, AdvertiseKeys] = {}
        self.masked: dict[str, MaskedInput] = {}

    def keys(self, skip=()) -> dict[str, AdvertiseKeys]:
        for c in self.ids:
            if c not in skip:
                self.server.receive_keys(self.clients[c].advertise_keys())
        self.roster = self.server.broadcast_keys()
        return self.roster

    def shares(self, skip=()) -> None:
        for c in self.roster:
            if c not in skip:
                self.server.receive_shares(self.clients[c].share_keys(self.roster))

    def mask(self, skip=()) -> None:
        for c in self.roster:
            if c not in skip and self.clients[c].stage == Stage.MASKED_INPUT:
                msg = self.clients[c].masked_input(self.vectors[c], self.server.shares_for(c))
                self.masked[c] = msg
                self.server.receive_masked(msg)

    def to_unmask(self) -> UnmaskRequest:
        self.keys()
        self.shares()
        self.mask()
        return self.server.unmask_request()


# --------------------------------------------------------------------------------------------
# fixed point and configuration
# --------------------------------------------------------------------------------------------


def test_error_type() -> None:
    assert issubclass(SecureAggregationError, FedgeError)
    assert issubclass(SecureAggregationError, RuntimeError)


def test_fixed_point_roundtrip_clip_and_refuse() -> None:
    x = np.array([0.0, 1.5, -2.25, 3.0000001, -10.0, 10.0])
    enc = encode_fixed_point(x, 16, 10.0)
    assert enc.dtype == np.uint64
    np.testing.assert_allclose(decode_fixed_point(enc, 16), x, atol=2**-17)
    clipped = decode_fixed_point(encode_fixed_point([12.0, -1e9], 16, 10.0), 16)
    np.testing.assert_array_equal(clipped, [10.0, -10.0])
    with pytest.raises(InvalidInputError, match="exceeds the bound"):
        encode_fixed_point([10.5], 16, 10.0, clip=False)
    for bad in ([np.nan], [np.inf], [-np.inf]):
        with pytest.raises(InvalidInputError, match="NaN or infinite"):
            encode_fixed_point(bad, 16, 10.0)
    with pytest.raises(InvalidInputError, match="2\\*\\*62"):
        encode_fixed_point([1.0], 62, 2.0)
    with pytest.raises(InvalidInputError, match="uint64"):
        decode_fixed_point(np.zeros(2), 16)


def test_overflow_bound_is_tight() -> None:
    config = make_config(t=2, L=1, bound=1.0, scale_bits=60)  # Q = 2**60: 7 clients fit
    assert config.encoded_bound == 2**60
    assert config.max_clients() == 7
    assert config.overflow_ok(7) and not config.overflow_ok(8)
    assert not config.overflow_ok(7, noise_bound=2**58)
    enc = encode_fixed_point([1.0], 60, 1.0)
    total = np.zeros(1, dtype=np.uint64)
    for _ in range(7):
        total += enc
    assert decode_fixed_point(total, 60)[0] == 7.0  # exact at the bound
    total += enc  # an 8th client wraps around
    assert decode_fixed_point(total, 60)[0] == -8.0
    with pytest.raises(InvalidInputError, match="overflow"):
        SecAggServer(config, [f"c{i}" for i in range(8)])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"threshold": 1}, "threshold"),
        ({"threshold": 5, "neighbours": 3}, "threshold 5 exceeds"),
        ({"neighbours": 4, "round_seed": b"short"}, "round_seed"),
        ({"bound": float("nan")}, "bound"),
        ({"bound": -1.0}, "bound"),
        ({"bound": 2.0**40, "scale_bits": 30}, "2\\*\\*62"),
        ({"scale_bits": 63}, "scale_bits"),
        ({"vector_length": 0}, "vector_length"),
        ({"round_id": -1}, "round_id"),
        ({"round_seed": "text"}, "round_seed"),
    ],
)
def test_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make_config(**kw)


def test_prg_is_deterministic_little_endian_and_keyed() -> None:
    a = prg_mask(b"k" * 32, 1000)
    assert a.dtype == np.dtype("<u8") and a.shape == (1000,)
    np.testing.assert_array_equal(a, prg_mask(b"k" * 32, 1000))
    np.testing.assert_array_equal(a[:10], prg_mask(b"k" * 32, 10))
    assert not np.array_equal(a, prg_mask(b"j" * 32, 1000))
    bits = np.unpackbits(a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01
    with pytest.raises(InvalidInputError):
        prg_mask(b"short", 10)


# --------------------------------------------------------------------------------------------
# the SecAgg+ graph
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(10, 4), (11, 4), (10, 3), (11, 3), (30, 10), (7, 1)])
def test_graph_is_regular_symmetric_and_deterministic(n: int, k: int) -> None:
    ids = [f"client-{i}" for i in range(n)]
    graph = neighbour_graph(ids, k, SEED, 3)
    expected = k + 1 if (k % 2 and n % 2) else k
    for c, nbrs in graph.items():
        assert c not in nbrs
        assert len(nbrs) == expected
        assert all(c in graph[v] for v in nbrs)
    assert neighbour_graph(reversed(ids), k, SEED, 3) == graph
    assert neighbour_graph(ids, k, b"another seed of the same length!", 3) != graph
    assert neighbour_graph(ids, k, SEED, 4) != graph


def test_graph_complete_for_full_secagg_or_large_k() -> None:
    ids = ["a", "b", "c", "d"]
    for k in (None, 3, 10):
        graph = neighbour_graph(ids, k, SEED)
        assert all(graph[c] == set(ids) - {c} for c in ids)


def test_graph_neighbourhoods_look_random() -> None:
    ids = [f"c{i:03d}" for i in range(100)]
    graph = neighbour_graph(ids, 10, SEED)
    # a random ring order: consecutive ids are neighbours with probability 10/99 only
    adjacent = sum(1 for i in range(99) if ids[i + 1] in graph[ids[i]])
    assert adjacent < 30


# --------------------------------------------------------------------------------------------
# correctness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t", "k"), [(2, 2, None), (5, 3, None), (8, 3, 4), (9, 3, 3)])
def test_masks_cancel_exactly(n: int, t: int, k: int | None) -> None:
    config = make_config(t=t, L=50, k=k)
    vectors = make_vectors(n, 50, seed=n)
    result = secure_sum(vectors, config, randomness=np.random.default_rng(1))
    assert result.survivors == tuple(sorted(vectors))
    np.testing.assert_array_equal(result.encoded_sum, ring_sum(config, vectors, vectors))
    plain = sum(vectors.values())
    np.testing.assert_allclose(result.sum, plain, rtol=0, atol=n * 2.0**-17)
    assert set(result.timings) == {
        "advertise_keys",
        "share_keys",
        "masked_input",
        "unmasking",
        "total",
    }


def test_secure_randomness_by_default() -> None:
    config = make_config(t=2, L=5)
    vectors = make_vectors(3, 5)
    a = secure_sum(vectors, config)
    np.testing.assert_array_equal(a.encoded_sum, ring_sum(config, vectors, vectors))
    r1, r2 = Round(config, 3), Round(config, 3)
    r1.clients = {c: SecAggClient(c, config) for c in r1.ids}
    r2.clients = {c: SecAggClient(c, config) for c in r2.ids}
    r1.to_unmask()
    r2.to_unmask()
    assert not np.array_equal(r1.masked["c0"].masked, r2.masked["c0"].masked)


def test_masked_input_hides_the_vector() -> None:
    config = make_config(t=3, L=4096)
    rnd = Round(config, 4)
    rnd.vectors = {c: np.zeros(4096) for c in rnd.ids}
    rnd.to_unmask()
    for msg in rnd.masked.values():
        bits = np.unpackbits(msg.masked.view(np.uint8))
        assert abs(bits.mean() - 0.5) < 0.01  # zeros in, uniform-looking words out


def test_clipping_is_enforced_by_the_client() -> None:
    config = make_config(t=2, L=2, bound=1.0)
    vectors = {"a": np.array([5.0, -0.5]), "b": np.array([0.25, -7.0])}
    result = secure_sum(vectors, config)
    np.testing.assert_allclose(result.sum, [1.25, -1.5], atol=1e-4)
    with pytest.raises(InvalidInputError, match="bound"):
        secure_sum(vectors, config, clip=False)
    client = SecAggClient("a", config)
    client.advertise_keys()
    with pytest.raises(InvalidInputError, match="shape"):
        secure_sum({"a": np.zeros(3), "b": np.zeros(2)}, config)


def test_distributed_dp_noise_composes_before_masking() -> None:
    config = make_config(t=2, L=20, k=None)
    vectors = make_vectors(4, 20, seed=3)
    rng = np.random.default_rng(5)
    noisy = {}
    expected = np.zeros(20, dtype=np.int64)
    for c, v in vectors.items():
        enc = encode_fixed_point(v, config.scale_bits, config.bound).view(np.int64)
        noise = rng.integers(-1000, 1000, size=20)
        noisy[c] = (enc + noise).view(np.uint64)
        expected += enc + noise
    result = secure_sum(noisy, config, encoded=True)
    np.testing.assert_array_equal(result.encoded_sum.view(np.int64), expected)
    with pytest.raises(InvalidInputError, match="uint64"):
        secure_sum(vectors, config, encoded=True)


# --------------------------------------------------------------------------------------------
# dropouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 4])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_dropouts_at_each_stage_are_recovered(stage: int, k: int | None) -> None:
    n = 9
    config = make_config(t=3, L=30, k=k)
    vectors = make_vectors(n, 30, seed=stage)
    drop = {"c2": stage, "c5": stage}
    result = secure_sum(vectors, config, drop=drop, randomness=np.random.default_rng(stage))
    in_sum = [c for c in vectors if c not in drop or stage == 3]
    assert result.survivors == tuple(sorted(in_sum))
    np.testing.assert_array_equal(result.encoded_sum, ring_sum(config, vectors, in_sum))


def test_dropouts_at_every_stage_in_one_round() -> None:
    config = make_config(t=4, L=10)
    vectors = make_vectors(10, 10)
    drop = {"c0": 0, "c1": 1, "c2": 2, "c3": 3, "c4": 3}
    result = secure_sum(vectors, config, drop=drop)
    in_sum = ["c3", "c4", "c5", "c6", "c7", "c8", "c9"]
    assert result.survivors == tuple(in_sum)
    np.testing.assert_array_equal(result.encoded_sum, ring_sum(config, vectors, in_sum))


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_below_threshold_aborts_before_anything_is_revealed(stage: int) -> None:
    config = make_config(t=4, L=5)
    rnd = Round(config, 5)
    dropping = {"c1", "c3"}
    if stage == 0:
        for c in rnd.ids:
            if c not in dropping:
                rnd.server.receive_keys(rnd.clients[c].advertise_keys())
        with pytest.raises(SecureAggregationError, match="only 3 clients advertised"):
            rnd.server.broadcast_keys()
    else:
        rnd.keys()
        if stage == 1:
            rnd.shares(skip=dropping)
            with pytest.raises(SecureAggregationError, match="only 3 clients shared"):
                rnd.server.shares_for("c0")
        else:
            rnd.shares()
            rnd.mask(skip=dropping)
            with pytest.raises(SecureAggregationError, match="only 3 clients sent masked"):
                rnd.server.unmask_request()
    assert rnd.server.aborted
    assert all(c.stage is not None for c in rnd.clients.values())  # nobody revealed a share
    with pytest.raises(SecureAggregationError, match="aborted"):
        rnd.server.result()
    with pytest.raises(SecureAggregationError):
        secure_sum(rnd.vectors, config, drop=dict.fromkeys(dropping, stage))


def test_too_few_answers_to_unmasking_abort_without_rebuilding() -> None:
    config = make_config(t=4, L=5)
    rnd = Round(config, 5)
    request = rnd.to_unmask()
    for c in ("c0", "c1", "c2"):
        rnd.server.receive_unmask(rnd.clients[c].unmask(request))
    with pytest.raises(SecureAggregationError, match="no secret was rebuilt"):
        rnd.server.result()
    with pytest.raises(SecureAggregationError):
        rnd.server.result()


def test_secagg_plus_local_threshold() -> None:
    """Under SecAgg+ a client whose neighbourhood loses too many holders aborts the round."""
    n, k, t = 12, 4, 4
    config = make_config(t=t, L=3, k=k)
    graph = neighbour_graph([f"c{i}" for i in range(n)], k, SEED, config.round_id)
    victim = "c0"
    drop = dict.fromkeys(sorted(graph[victim])[:2], 2)  # 5 holders - 2 = 3 < t
    with pytest.raises(SecureAggregationError, match="share holders survive"):
        secure_sum(make_vectors(n, 3), config, drop=drop)
    # the same number of dropouts spread over the graph is fine
    a, b = next(
        (a, b)
        for a in sorted(graph)
        for b in sorted(graph)
        if a < b and b not in graph[a] and not graph[a] & graph[b]
    )
    spread = {a: 2, b: 2}
    result = secure_sum(make_vectors(n, 3), config, drop=spread)
    assert len(result.survivors) == n - len(spread)


# --------------------------------------------------------------------------------------------
# an honest client refuses a dishonest server
# --------------------------------------------------------------------------------------------


def test_client_refuses_request_for_both_shares_of_one_client() -> None:
    rnd = Round(make_config(t=3, L=4), 5)
    request = rnd.to_unmask()
    evil = dataclasses.replace(request, dropped=("c3",))  # c3 is also among the survivors
    with pytest.raises(SecureAggregationError, match="both the self-mask share and the secret-key"):
        rnd.clients["c0"].unmask(evil)
    assert rnd.clients["c0"].aborted
    with pytest.raises(SecureAggregationError, match="aborted"):
        rnd.clients["c0"].unmask(request)  # no second chance with a different request


def test_client_refuses_inconsistent_or_small_survivor_sets() -> None:
    rnd = Round(make_config(t=3, L=4), 5)
    request = rnd.to_unmask()
    s = request.survivors
    cases = {
        "fewer than the threshold": dataclasses.replace(
            request, survivors=("c0", "c1"), dropped=("c2", "c3", "c4")
        ),
        "does not list": dataclasses.replace(request, survivors=s[1:], dropped=("c0",)),
        "disagree": dataclasses.replace(request, survivors=s[:-1]),
        "unknown": dataclasses.replace(request, dropped=("mallory",)),
        "repeats": dataclasses.replace(request, survivors=(*s, s[0])),
    }
    for i, (match, bad) in enumerate(cases.items()):
        fresh = Round(make_config(t=3, L=4), 5, seed=i)
        fresh.to_unmask()
        victim = fresh.clients["c0"]
        with pytest.raises(SecureAggregationError, match=match):
            victim.unmask(bad)
        assert victim.aborted


def test_client_refuses_a_roster_that_alters_it() -> None:
    rnd = Round(make_config(t=2, L=4), 3)
    roster = rnd.keys()
    other = rnd.clients["c1"]
    forged = dict(roster)
    forged["c0"] = dataclasses.replace(roster["c0"], masking_key=roster["c2"].encryption_key)
    with pytest.raises(SecureAggregationError, match="repeats a public key"):
        rnd.clients["c0"].share_keys(forged)
    forged = dict(roster)
    forged["c1"] = dataclasses.replace(roster["c1"], masking_key=bytes(range(32)))
    with pytest.raises(SecureAggregationError, match="alters"):
        other.share_keys(forged)
    small = {c: roster[c] for c in ("c2",)}
    with pytest.raises(SecureAggregationError, match="fewer than the threshold"):
        rnd.clients["c2"].share_keys(small)


# --------------------------------------------------------------------------------------------
# malformed, replayed and wrong-round messages
# --------------------------------------------------------------------------------------------


def test_stages_run_once_and_in_order() -> None:
    rnd = Round(make_config(t=2, L=4), 3)
    c0 = rnd.clients["c0"]
    with pytest.raises(SecureAggregationError, match="expects stage ADVERTISE_KEYS"):
        c0.share_keys({})
    assert c0.aborted is None  # refusing an out-of-order call leaves the client intact
    roster = rnd.keys()
    with pytest.raises(SecureAggregationError, match="exactly once"):
        c0.advertise_keys()
    rnd.shares()
    with pytest.raises(SecureAggregationError, match="exactly once"):
        c0.share_keys(roster)
    rnd.mask()
    request = rnd.server.unmask_request()
    response = c0.unmask(request)
    assert c0.stage is None
    with pytest.raises(SecureAggregationError, match="finished"):
        c0.unmask(request)
    # server side replays and late messages
    rnd.server.receive_unmask(response)
    with pytest.raises(SecureAggregationError, match="replay"):
        rnd.server.receive_unmask(response)
    with pytest.raises(SecureAggregationError, match="closed"):
        rnd.server.receive_masked(rnd.masked["c1"])
    with pytest.raises(SecureAggregationError, match="closed"):
        rnd.server.receive_keys(roster["c1"])


def test_server_rejects_replays_and_strangers() -> None:
    config = make_config(t=2, L=4)
    rnd = Round(config, 3)
    msg = rnd.clients["c0"].advertise_keys()
    rnd.server.receive_keys(msg)
    with pytest.raises(SecureAggregationError, match="replay"):
        rnd.server.receive_keys(msg)
    stranger = SecAggClient("mallory", config).advertise_keys()
    with pytest.raises(SecureAggregationError, match="not selected"):
        rnd.server.receive_keys(stranger)
    copycat = dataclasses.replace(msg, sender="c1")
    with pytest.raises(SecureAggregationError, match="another client uses"):
        rnd.server.receive_keys(copycat)
    for c in ("c1", "c2"):
        rnd.server.receive_keys(rnd.clients[c].advertise_keys())
    roster = rnd.server.broadcast_keys()
    rnd.roster = roster
    shares = rnd.clients["c0"].share_keys(roster)
    rnd.server.receive_shares(shares)
    with pytest.raises(SecureAggregationError, match="replay"):
        rnd.server.receive_shares(shares)
    rnd.shares(skip={"c0"})
    rnd.mask()
    with pytest.raises(SecureAggregationError, match="replay"):
        rnd.server.receive_masked(rnd.masked["c0"])


def test_wrong_round_messages_are_refused() -> None:
    config = make_config(t=2, L=4)
    old = Round(dataclasses.replace(config, round_id=6), 3)
    old_request = old.to_unmask()
    rnd = Round(config, 3)
    with pytest.raises(SecureAggregationError, match="wrong round"):
        rnd.server.receive_keys(old.roster["c0"])
    roster = rnd.keys()
    # a roster entry from another round makes the client abort
    stale = {**roster, "c1": dataclasses.replace(roster["c1"], round_id=6)}
    with pytest.raises(SecureAggregationError, match="wrong round"):
        rnd.clients["c0"].share_keys(stale)
    rnd = Round(config, 3)
    rnd.to_unmask()
    with pytest.raises(SecureAggregationError, match="wrong round"):
        rnd.server.receive_masked(old.masked["c0"])
    with pytest.raises(SecureAggregationError, match="wrong round"):
        rnd.clients["c0"].unmask(old_request)


def test_replayed_share_from_another_round_fails_authentication() -> None:
    config = make_config(t=2, L=4)
    old = Round(dataclasses.replace(config, round_id=6), 3)
    old.keys()
    old_share = old.clients["c1"].share_keys(old.roster)["c0"]
    rnd = Round(config, 3)
    rnd.keys()
    rnd.shares()
    received = rnd.server.shares_for("c0")
    received["c1"] = dataclasses.replace(old_share, round_id=config.round_id)
    with pytest.raises(SecureAggregationError, match="fails authentication"):
        rnd.clients["c0"].masked_input(rnd.vectors["c0"], received)
    assert rnd.clients["c0"].aborted


@pytest.mark.parametrize("where", ["ciphertext", "nonce", "tag", "swap", "relabel"])
def test_tampered_ciphertexts_are_rejected(where: str) -> None:
    rnd = Round(make_config(t=2, L=4), 4)
    rnd.keys()
    rnd.shares()
    received = rnd.server.shares_for("c0")
    share = received["c1"]
    data = bytearray(share.ciphertext)
    if where == "ciphertext":
        data[20] ^= 1
        received["c1"] = dataclasses.replace(share, ciphertext=bytes(data))
    elif where == "nonce":
        data[0] ^= 0x80
        received["c1"] = dataclasses.replace(share, ciphertext=bytes(data))
    elif where == "tag":
        data[-1] ^= 1
        received["c1"] = dataclasses.replace(share, ciphertext=bytes(data))
    elif where == "swap":  # c2's ciphertext presented as c1's
        received["c1"] = dataclasses.replace(received["c2"], sender="c1")
    else:  # c1's share for c3 redirected to c0
        for_c3 = rnd.server.shares_for("c3")["c1"]
        received["c1"] = dataclasses.replace(for_c3, recipient="c0")
    with pytest.raises(SecureAggregationError, match="fails authentication"):
        rnd.clients["c0"].masked_input(rnd.vectors["c0"], received)


def test_malformed_messages_are_refused() -> None:
    config = make_config(t=2, L=4)
    rnd = Round(config, 3)
    msg = rnd.clients["c0"].advertise_keys()
    server = rnd.server
    for bad, match in [
        (dataclasses.replace(msg, masking_key=b"x" * 31), "malformed masking_key"),
        (dataclasses.replace(msg, encryption_key="k" * 32), "malformed encryption_key"),
        (dataclasses.replace(msg, stage=Stage.SHARE_KEYS), "wrong stage"),
        (dataclasses.replace(msg, sender=""), "malformed message"),
        (dataclasses.replace(msg, masking_key=msg.encryption_key), "same key twice"),
        ("not a message", "malformed message"),
    ]:
        with pytest.raises(SecureAggregationError, match=match):
            server.receive_keys(bad)  # type: ignore[arg-type]
    server.receive_keys(msg)
    for c in ("c1", "c2"):
        server.receive_keys(rnd.clients[c].advertise_keys())
    rnd.roster = server.broadcast_keys()
    shares = rnd.clients["c0"].share_keys(rnd.roster)
    with pytest.raises(SecureAggregationError, match="each of its neighbours"):
        server.receive_shares({"c1": shares["c1"]})
    with pytest.raises(SecureAggregationError, match="malformed share"):
        server.receive_shares({"c2": shares["c1"], "c1": shares["c1"]})
    with pytest.raises(SecureAggregationError, match="non-empty mapping"):
        server.receive_shares([])  # type: ignore[arg-type]
    server.receive_shares(shares)
    rnd.shares(skip={"c0"})
    rnd.mask(skip={"c0"})
    for masked, match in [
        (np.zeros(4), "malformed masked input"),
        (np.zeros(5, dtype=np.uint64), "malformed masked input"),
        ([1, 2, 3, 4], "malformed masked input"),
    ]:
        bad_msg = MaskedInput(round_id=7, sender="c0", masked=masked)  # type: ignore[arg-type]
        with pytest.raises(SecureAggregationError, match=match):
            server.receive_masked(bad_msg)
    stranger = MaskedInput(round_id=7, sender="zed", masked=np.zeros(4, dtype=np.uint64))
    with pytest.raises(SecureAggregationError, match="did not share"):
        server.receive_masked(stranger)
    rnd.mask()
    request = server.unmask_request()
    good = rnd.clients["c1"].unmask(request)
    extra = dict(good.self_mask_shares)
    extra["c0"] = extra["c1"]
    bad_responses = [
        (dataclasses.replace(good, self_mask_shares=dict(list(extra.items())[:1])), "wrong"),
        (dataclasses.replace(good, key_shares={"c2": b"junk"}), "wrong"),
        (
            dataclasses.replace(good, self_mask_shares={k: b"junk" for k in extra}),
            "not a fedge Shamir share|truncated",
        ),
        (dataclasses.replace(good, sender="c9"), "not a survivor"),
    ]
    for bad, match in bad_responses:
        with pytest.raises(SecureAggregationError, match=match):
            server.receive_unmask(bad)
    # a share that is not the responder's own (another holder's x-coordinate)
    other = Share.from_bytes(good.self_mask_shares["c0"])
    moved = Share(x=other.x % 3 + 1, values=other.values, length=other.length).to_bytes()
    with pytest.raises(SecureAggregationError, match="not its own"):
        server.receive_unmask(
            dataclasses.replace(good, self_mask_shares={**good.self_mask_shares, "c0": moved})
        )
    server.receive_unmask(good)


def test_client_refuses_misrouted_or_foreign_shares() -> None:
    rnd = Round(make_config(t=2, L=4, k=2), 6)
    rnd.keys()
    rnd.shares()
    me = rnd.clients["c0"]
    received = rnd.server.shares_for("c0")
    stranger = next(c for c in rnd.ids if c != "c0" and c not in me.neighbours)
    foreign = rnd.server.shares_for(stranger)
    sender, share = next(iter(foreign.items()))
    with pytest.raises(SecureAggregationError, match="routed wrongly"):
        me.masked_input(rnd.vectors["c0"], {**received, sender: share})


def test_corrupted_share_in_unmasking_is_detected() -> None:
    config = make_config(t=3, L=4)
    rnd = Round(config, 5)
    request = rnd.to_unmask()
    for c in rnd.ids:
        response = rnd.clients[c].unmask(request)
        if c == "c4":
            share = Share.from_bytes(response.self_mask_shares["c0"])
            values = share.values.copy()
            values[0] = (values[0] + 1) % PRIME
            bad = Share(x=share.x, values=values, length=share.length).to_bytes()
            response = dataclasses.replace(
                response, self_mask_shares={**response.self_mask_shares, "c0": bad}
            )
        rnd.server.receive_unmask(response)
    with pytest.raises(SecureAggregationError, match="corrupted"):
        rnd.server.result()


def test_secure_sum_argument_validation() -> None:
    config = make_config(t=2, L=2)
    vectors = make_vectors(3, 2)
    with pytest.raises(InvalidInputError, match="drop"):
        secure_sum(vectors, config, drop={"c0": 4})
    with pytest.raises(InvalidInputError, match="no vector"):
        secure_sum(vectors, config, drop={"zed": 1})
    with pytest.raises(InvalidInputError, match="non-empty"):
        secure_sum({}, config)
    with pytest.raises(InvalidInputError, match="threshold"):
        SecAggServer(make_config(t=4, L=2), ["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="repeats"):
        SecAggServer(config, ["a", "a", "b"])
    with pytest.raises(InvalidInputError, match="client id"):
        SecAggClient("", config)
    with pytest.raises(InvalidInputError, match="SecAggConfig"):
        SecAggClient("a", {"threshold": 2})  # type: ignore[arg-type]


def test_messages_are_plain_dataclasses() -> None:
    for cls in (AdvertiseKeys, EncryptedShare, MaskedInput, UnmaskRequest, UnmaskResponse):
        assert dataclasses.is_dataclass(cls)
        assert dataclasses.fields(cls)[0].name == "round_id"
        assert any(f.name == "stage" for f in dataclasses.fields(cls))


# --------------------------------------------------------------------------------------------
# property test: random n, t, k and dropouts against an oracle of the recovery rules
# --------------------------------------------------------------------------------------------


def _expected_outcome(ids, t, k, drop) -> tuple[str, ...] | None:
    """The survivors if the round must succeed, None if it must abort."""
    u1 = [c for c in ids if drop.get(c, 4) > 0]
    if len(u1) < t:
        return None
    graph = neighbour_graph(u1, k, SEED, 7)
    holders = {c: graph[c] | {c} for c in u1}
    u2 = {c for c in u1 if drop.get(c, 4) > 1}
    if len(u2) < t or any(len(holders[u] & u2) < t for u in u2):
        return None
    u3 = {c for c in u2 if drop.get(c, 4) > 2}
    if len(u3) < t or any(len(holders[u] & u3) < t for u in u2):
        return None
    u4 = {c for c in u3 if drop.get(c, 4) > 3}
    if any(len(holders[u] & u4) < t for u in u2):
        return None
    return tuple(sorted(u3))


@settings(max_examples=80)
@given(data=st.data())
def test_random_rounds_match_the_recovery_rules(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 8), label="n")
    k = data.draw(st.one_of(st.none(), st.integers(1, max(1, n - 1))), label="k")
    t = data.draw(st.integers(2, n if k is None else min(n, k + 1)), label="t")
    L = data.draw(st.integers(1, 5), label="L")
    ids = [f"c{i}" for i in range(n)]
    drop = data.draw(
        st.dictionaries(st.sampled_from(ids), st.integers(0, 3), max_size=n), label="drop"
    )
    config = make_config(t=t, L=L, k=k)
    vectors = make_vectors(n, L, seed=n * 100 + L)
    expected = _expected_outcome(ids, t, k, drop)
    event("abort" if expected is None else "success")
    if expected is None:
        with pytest.raises(SecureAggregationError, match="aborted"):
            secure_sum(vectors, config, drop=drop, randomness=np.random.default_rng(n))
        return
    result = secure_sum(vectors, config, drop=drop, randomness=np.random.default_rng(n))
    assert result.survivors == expected
    np.testing.assert_array_equal(result.encoded_sum, ring_sum(config, vectors, expected))
    np.testing.assert_allclose(
        result.sum, sum(vectors[c] for c in expected), rtol=0, atol=n * 2.0**-17
    )
