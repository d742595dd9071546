"""Homomorphic aggregation: CKKS (TenSEAL) and Paillier (phe) behind the SumAggregator seam."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import numpy as np
import pytest

from fedge.errors import InvalidInputError, UnsupportedOperationError
from fedge.federated.aggregation import PlainSum
from fedge.federated.encryption import (
    CKKSAggregator,
    EncryptedVector,
    EncryptionError,
    KeyHolder,
    PaillierAggregator,
    PublicKeys,
)
from fedge.federated.messages import ClientUpdate

pytest.importorskip("tenseal")
pytest.importorskip("phe")


def _update(i: int, parameters, round_: int = 1) -> ClientUpdate:
    return ClientUpdate(f"c{i}", round_, [np.asarray(p, dtype=np.float64) for p in parameters], 10)


def _plain(updates, weights):
    plain = PlainSum()
    return plain.aggregate([plain.encode(u, w) for u, w in zip(updates, weights, strict=True)])


def _max_error(got, expected) -> float:
    return max(float(np.abs(a - b).max(initial=0.0)) for a, b in zip(got, expected, strict=True))


@pytest.fixture(scope="module")
def ckks() -> CKKSAggregator:
    return CKKSAggregator.generate_keys()


@pytest.fixture(scope="module")
def paillier() -> PaillierAggregator:
    return PaillierAggregator.generate_keys()


@pytest.fixture(scope="module")
def other_paillier() -> PaillierAggregator:
    return PaillierAggregator.generate_keys(fractional_bits=0)


def test_imports_emit_no_warnings():
    code = "import tenseal, phe, fedge.federated.encryption"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Warning" not in done.stderr, done.stderr.decode()


# --------------------------------------------------------------------------------- CKKS


def test_ckks_ten_clients_100k_floats_within_documented_error(ckks):
    holder = ckks.key_holder
    client = CKKSAggregator(holder.client_keys().to_bytes())
    server = CKKSAggregator(holder.server_keys().to_bytes())
    rng = np.random.default_rng(0)
    updates = [
        _update(i, [rng.uniform(-1, 1, (300, 333)), rng.uniform(-1, 1, 100)]) for i in range(10)
    ]
    weights = rng.uniform(1, 100, 10)
    t0 = time.perf_counter()
    payloads = [client.encode(u, w).to_bytes() for u, w in zip(updates, weights, strict=True)]
    t1 = time.perf_counter()
    total = server.add_encrypted(payloads).to_bytes()
    t2 = time.perf_counter()
    result = holder.decrypt_detailed(total)
    t3 = time.perf_counter()
    expected, expected_weight = _plain(updates, weights)
    error = _max_error(result.parameters, expected)
    print(
        f"\nCKKS 10 x 100,000: encrypt {t1 - t0:.2f} s, add {t2 - t1:.2f} s, "
        f"decrypt {t3 - t2:.2f} s; max error {error:.2e} (bound {result.error_bound:.2e}); "
        f"{len(payloads[0]) / 1e6:.1f} MB per payload"
    )
    assert [p.shape for p in result.parameters] == [(300, 333), (100,)]
    assert result.count == 10
    assert error <= result.error_bound <= ckks.error_bound(10, 100.0) <= 1e-6
    assert abs(result.total_weight - expected_weight) <= result.error_bound
    assert t3 - t0 < 15


def test_ckks_server_and_client_hold_no_secret_key(ckks):
    import tenseal as ts

    for keys in (ckks.key_holder.server_keys(), ckks.key_holder.client_keys()):
        assert not ts.context_from(PublicKeys.from_bytes(keys.to_bytes()).context).is_private()
        assert not CKKSAggregator(keys).public_context.is_private()
    assert ckks.key_holder.server_keys().checksum_key is None
    # a "public" key blob that smuggles the secret key is refused
    private = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 60, 60])
    blob = private.serialize(save_secret_key=True)
    leaked = dataclasses.replace(ckks.keys, context=blob)
    with pytest.raises(EncryptionError, match="secret key"):
        CKKSAggregator(leaked)


@pytest.mark.parametrize("n_values", [1, 4092, 4093, 4094, 8188, 8189, 8190, 12000])
def test_ckks_chunking_across_slot_boundaries(ckks, n_values):
    # 3 header slots + values + one tag per 4096-slot block: sizes straddle every boundary
    rng = np.random.default_rng(n_values)
    shapes = [(n_values - 1,), ()] if n_values > 1 else [()]
    updates = [_update(i, [rng.normal(size=s) for s in shapes]) for i in range(3)]
    weights = [1.0, 2.0, 0.5]
    got, weight = ckks.aggregate([ckks.encode(u, w) for u, w in zip(updates, weights, strict=True)])
    expected, _ = _plain(updates, weights)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert _max_error(got, expected) <= 1e-8
    assert weight == pytest.approx(3.5, abs=1e-9)


def test_ckks_weights_and_shapes(ckks):
    rng = np.random.default_rng(1)
    params = [rng.normal(size=(4, 3)), np.zeros((0,)), np.array(2.0), rng.normal(size=(2, 2, 2))]
    updates = [_update(i, [p + i for p in params]) for i in range(4)]
    weights = [0.0, 1.0, 1000.0, 12345.0]
    got, total = ckks.aggregate([ckks.encode(u, w) for u, w in zip(updates, weights, strict=True)])
    expected, expected_total = _plain(updates, weights)
    assert [g.shape for g in got] == [(4, 3), (0,), (), (2, 2, 2)]
    assert _max_error(got, expected) <= 1e-7
    assert total == pytest.approx(expected_total, abs=1e-7)
    with pytest.raises(InvalidInputError, match="weight"):
        ckks.encode(updates[0], -1.0)
    with pytest.raises(InvalidInputError, match="NaN"):
        ckks.encode(_update(0, [np.array([np.nan])]), 1.0)
    with pytest.raises(InvalidInputError, match="CKKS limit"):
        ckks.encode(_update(0, [np.array([1e16])]), 1.0)


def test_ckks_error_bound_holds_for_large_magnitudes(ckks):
    rng = np.random.default_rng(2)
    updates = [_update(i, [rng.uniform(-1e9, 1e9, 5000)]) for i in range(3)]
    result = ckks.key_holder.decrypt_detailed(
        ckks.add_encrypted([ckks.encode(u, 1.0) for u in updates])
    )
    expected, _ = _plain(updates, [1.0] * 3)
    assert _max_error(result.parameters, expected) <= result.error_bound < 1e-5


def test_ckks_wrong_key_fails_clearly(ckks):
    other = CKKSAggregator.generate_keys()
    update = _update(0, [np.ones(10)])
    foreign = other.encode(update, 1.0)
    with pytest.raises(EncryptionError, match="another key holder"):
        ckks.add_encrypted([ckks.encode(update, 1.0), foreign])
    # a foreign ciphertext with a forged key id decrypts to garbage: the checksum catches it
    forged = dataclasses.replace(foreign, key_id=ckks.keys.key_id)
    with pytest.raises(EncryptionError, match="checksum"):
        ckks.aggregate([ckks.encode(update, 1.0), forged.to_bytes()])
    with pytest.raises(EncryptionError, match="key"):
        other.key_holder.decrypt(ckks.add_encrypted([ckks.encode(update, 1.0)]))


def test_ckks_tampered_bytes_fail_clearly(ckks):
    rng = np.random.default_rng(3)
    updates = [_update(i, [rng.normal(size=1000)]) for i in range(2)]
    good = ckks.encode(updates[0], 1.0)
    data = ckks.encode(updates[1], 1.0).to_bytes()
    # random bytes, the header, and the trailing scale TenSEAL keeps outside SEAL's ciphertext
    tail = range(len(data) - 9, len(data))
    positions = sorted({*rng.integers(0, len(data), 40).tolist(), 7, 20, 200, *tail})
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(EncryptionError):
            ckks.aggregate([good, bytes(flipped)])
    # the server's sum altered on its way to the key holder
    total = bytearray(ckks.add_encrypted([good, data]).to_bytes())
    total[len(total) // 2] ^= 0x10
    with pytest.raises(EncryptionError):
        ckks.key_holder.decrypt(bytes(total))


def test_ckks_replay_into_another_round_and_garbage_fail(ckks):
    payload = ckks.encode(_update(0, [np.ones(5)], round_=3), 1.0)
    with pytest.raises(EncryptionError, match="checksum"):
        ckks.aggregate([dataclasses.replace(payload, round=4)])
    with pytest.raises(EncryptionError, match="shapes"):
        ckks.aggregate([payload, dataclasses.replace(payload, round=4)])
    for garbage in (
        b"",
        b"garbage",
        b"FEHEV\x01" + bytes(50),
        np.random.default_rng(0).bytes(1000),
    ):
        with pytest.raises(EncryptionError):
            ckks.aggregate([garbage])
    # valid container, garbage ciphertext
    junk = dataclasses.replace(payload, ciphertexts=(b"\x00" * 100,))
    with pytest.raises(EncryptionError, match="deserialise"):
        ckks.aggregate([junk.to_bytes()])


def test_roles_are_enforced(ckks):
    server = CKKSAggregator(ckks.key_holder.server_keys())
    client = CKKSAggregator(ckks.key_holder.client_keys())
    payload = client.encode(_update(0, [np.ones(3)]), 1.0)
    with pytest.raises(UnsupportedOperationError, match="client_keys"):
        server.encode(_update(0, [np.ones(3)]), 1.0)
    with pytest.raises(UnsupportedOperationError, match="key holder"):
        server.aggregate([payload])
    params, _weight = ckks.key_holder.decrypt(server.add_encrypted([payload]))
    np.testing.assert_allclose(params[0], np.ones(3), atol=1e-9)
    with pytest.raises(InvalidInputError, match="no payloads"):
        server.add_encrypted([])


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tenseal", None)
    monkeypatch.setitem(sys.modules, "phe", None)
    with pytest.raises(UnsupportedOperationError, match=r"fedge\[he\]"):
        KeyHolder.ckks()
    with pytest.raises(UnsupportedOperationError, match=r"fedge\[he\]"):
        KeyHolder.paillier()


# ------------------------------------------------------------------------------ Paillier


def test_paillier_fixed_point_sum_within_rounding(paillier):
    server = PaillierAggregator(paillier.key_holder.server_keys().to_bytes())
    rng = np.random.default_rng(4)
    # 1 + 1 + 58 = 60 slots: three packed ciphertexts of 25 (+ the checksum tag)
    updates = [_update(i, [rng.normal(size=(8, 7)), rng.normal(size=2)]) for i in range(3)]
    weights = [1.0, 2.5, 7.0]
    payloads = [paillier.encode(u, w).to_bytes() for u, w in zip(updates, weights, strict=True)]
    result = paillier.key_holder.decrypt_detailed(server.add_encrypted(payloads))
    expected, expected_total = _plain(updates, weights)
    assert result.error_bound == 3 * 2.0**-33
    assert _max_error(result.parameters, expected) <= result.error_bound
    assert result.total_weight == expected_total
    assert [p.shape for p in result.parameters] == [(8, 7), (2,)]


def test_paillier_integers_are_exact(other_paillier):
    rng = np.random.default_rng(5)
    updates = [_update(i, [rng.integers(-(2**40), 2**40, 30)]) for i in range(3)]
    weights = [1, 3, 2]
    got, total = other_paillier.aggregate(
        [other_paillier.encode(u, w) for u, w in zip(updates, weights, strict=True)]
    )
    expected = sum(w * u.parameters[0] for u, w in zip(updates, weights, strict=True))
    assert np.array_equal(got[0], expected)
    assert total == 6.0
    with pytest.raises(InvalidInputError, match="integers"):
        other_paillier.encode(_update(0, [np.array([0.5])]), 1.0)


def test_paillier_refuses_long_vectors_and_large_values(paillier):
    with pytest.raises(InvalidInputError, match="CKKSAggregator"):
        paillier.encode(_update(0, [np.zeros(2001)]), 1.0)
    with pytest.raises(InvalidInputError, match="scale the update down"):
        paillier.encode(_update(0, [np.array([2.0**32])]), 1.0)


def test_paillier_wrong_key_and_tampering_fail_clearly(paillier, other_paillier):
    update = _update(0, [np.arange(5.0)])
    mine = paillier.encode(update, 1.0)
    foreign = other_paillier.encode(update, 1.0)
    with pytest.raises(EncryptionError, match="another key holder"):
        paillier.add_encrypted([mine, foreign])
    forged = dataclasses.replace(foreign, key_id=paillier.keys.key_id)
    with pytest.raises(EncryptionError):
        paillier.aggregate([mine, forged])
    data = mine.to_bytes()
    rng = np.random.default_rng(6)
    for pos in sorted({*rng.integers(0, len(data), 15).tolist(), len(data) - 1}):
        flipped = bytearray(data)
        flipped[pos] ^= 0x04
        with pytest.raises(EncryptionError):
            paillier.aggregate([mine, bytes(flipped)])


def test_payload_round_trip_keeps_everything(paillier):
    payload = paillier.encode(_update(0, [np.ones((2, 3))], round_=9), 4.0)
    again = EncryptedVector.from_bytes(payload.to_bytes())
    assert again == payload
    assert again.round == 9 and again.count == 1 and again.shapes == ((2, 3),)
    keys = PublicKeys.from_bytes(paillier.key_holder.client_keys().to_bytes())
    assert keys == paillier.key_holder.client_keys()
    with pytest.raises(EncryptionError, match="does not match"):
        PublicKeys.from_bytes(dataclasses.replace(keys, context=b"\x01" * 256).to_bytes())
