"""Shamir secret sharing: recovery, secrecy of t-1 shares, rejection of bad shares."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fedge.errors import FedgeError, InvalidInputError
from fedge.federated.shamir import (
    PRIME,
    SecureAggregationError,
    Share,
    combine_elements,
    combine_shares,
    evaluate_polynomials,
    random_field_elements,
    split_elements,
    split_secret,
)


def test_error_hierarchy() -> None:
    assert issubclass(SecureAggregationError, FedgeError)
    assert issubclass(SecureAggregationError, RuntimeError)


@given(
    secret=st.binary(min_size=1, max_size=70),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_any_t_shares_recover(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n), label="threshold")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    shares = split_secret(secret, t, n, randomness=np.random.default_rng(seed))
    subset = data.draw(st.permutations(shares), label="order")[: data.draw(st.integers(t, n))]
    assert combine_shares(subset, t) == secret


def test_every_subset_of_size_t_recovers() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 3, 6)  # secure randomness
    for subset in itertools.combinations(shares, 3):
        assert combine_shares(subset, 3) == secret


def test_custom_x_coordinates() -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    xs = [7, 1000, PRIME - 1, 42]
    shares = split_secret(secret, 2, 4, x=xs)
    assert [s.x for s in shares] == xs
    assert combine_shares(shares[2:], 2) == secret
    assert combine_shares(shares, 2) == secret


def test_elements_roundtrip_many_secrets() -> None:
    rng = np.random.default_rng(0)
    secret = rng.integers(0, PRIME, size=1000)
    xs, ys = split_elements(secret, 5, 9, randomness=rng)
    assert ys.shape == (9, 1000)
    np.testing.assert_array_equal(combine_elements(xs[4:], ys[4:], 5), secret)
    np.testing.assert_array_equal(combine_elements(xs, ys, 5), secret)


def test_threshold_one_and_n() -> None:
    secret = b"k"
    shares = split_secret(secret, 1, 3)
    assert all(combine_shares([s], 1) == secret for s in shares)
    shares = split_secret(secret, 3, 3)
    assert combine_shares(shares[::-1], 3) == secret


# --------------------------------------------------------------------------------------------
# t - 1 shares reveal nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prime", "t"), [(7, 3), (11, 2), (5, 4)])
def test_t_minus_1_shares_are_exactly_uniform(prime: int, t: int) -> None:
    """Over all coefficient choices, t-1 shares take every value exactly once, for any secret.

    This is the exact statement of perfect secrecy on a small field: the distribution of the
    t-1 shares is uniform and the same whatever the secret.
    """
    xs = np.arange(1, t, dtype=np.int64)  # t-1 share holders
    for secret in range(prime):
        counts: Counter[tuple[int, ...]] = Counter()
        for coeffs in itertools.product(range(prime), repeat=t - 1):
            c = np.array([[secret], *[[a] for a in coeffs]], dtype=np.int64)
            counts[tuple(evaluate_polynomials(c, xs, prime=prime)[:, 0])] += 1
        assert len(counts) == prime ** (t - 1)
        assert set(counts.values()) == {1}


def test_t_minus_1_shares_indistinguishable_for_two_secrets() -> None:
    """Chi-square: the (t-1) shares of two different secrets have the same distribution."""
    prime, t, n, trials = 13, 3, 5, 6000
    rng = np.random.default_rng(12345)
    tables = []
    for secret in (0, 9):
        _, ys = split_elements(
            np.full(trials, secret), t, n, randomness=rng, prime=prime
        )  # each column is one independent sharing of `secret`
        cells = ys[1] * prime + ys[3]  # shares of holders x=2 and x=4 (t-1 = 2 of them)
        tables.append(np.bincount(cells, minlength=prime * prime))
        # and each joint distribution is uniform on its own
        assert stats.chisquare(tables[-1]).pvalue > 1e-4
    _, pvalue, _, _ = stats.chi2_contingency(np.array(tables))
    assert pvalue > 1e-4


def test_real_field_shares_look_uniform_whatever_the_secret() -> None:
    """On GF(2^31 - 1) with the secure generator: the top bits of a share are uniform."""
    for secret in (b"\x00" * 3, b"\xff" * 3):
        top = np.array([split_secret(secret, 2, 2)[0].values[0] >> 27 for _ in range(2000)])
        counts = np.bincount(top, minlength=16)
        assert stats.chisquare(counts).pvalue > 1e-6


def test_random_field_elements_secure_and_seeded() -> None:
    a = random_field_elements(1000)
    b = random_field_elements(1000)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < PRIME
    assert not np.array_equal(a, b)
    small = random_field_elements((200, 50), prime=5)
    assert set(np.unique(small)) == {0, 1, 2, 3, 4}
    s1 = random_field_elements(10, randomness=np.random.default_rng(1))
    s2 = random_field_elements(10, randomness=np.random.default_rng(1))
    np.testing.assert_array_equal(s1, s2)


def test_default_shares_are_fresh_each_time() -> None:
    secret = b"same secret"
    assert split_secret(secret, 2, 3)[0] != split_secret(secret, 2, 3)[0]


# --------------------------------------------------------------------------------------------
# rejection of bad shares
# --------------------------------------------------------------------------------------------


def _corrupt(share: Share, delta: int = 1, index: int = 0) -> Share:
    values = share.values.copy()
    values[index] = (values[index] + delta) % PRIME
    return Share(x=share.x, values=values, length=share.length)


def test_corrupted_share_is_rejected_when_more_than_t() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 4, 7)
    for i in range(7):
        for idx in (0, 5, 10):
            bad = list(shares)
            bad[i] = _corrupt(shares[i], delta=1 + i, index=idx)
            with pytest.raises(SecureAggregationError, match="corrupted"):
                combine_shares(bad, 4)
            with pytest.raises(SecureAggregationError, match="corrupted"):
                combine_shares(bad[:5] if i < 5 else [*bad[:4], bad[i]], 4)


def test_relabelled_share_is_rejected() -> None:
    shares = split_secret(os.urandom(16), 3, 5)
    moved = Share(x=9, values=shares[4].values, length=shares[4].length)
    with pytest.raises(SecureAggregationError, match="inconsistent"):
        combine_shares([*shares[:4], moved], 3)


def test_corruption_with_exactly_t_shares_is_usually_caught_by_range() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 3, 3)
    caught = 0
    for delta in np.random.default_rng(3).integers(1, PRIME, size=20):
        try:
            out = combine_shares([_corrupt(shares[0], int(delta)), *shares[1:]], 3)
        except SecureAggregationError:
            caught += 1
        else:
            assert out != secret
    assert caught >= 17  # a random error stays in [0, 2**24) with probability 2**-7


def test_too_few_shares() -> None:
    shares = split_secret(b"secret", 3, 5)
    with pytest.raises(SecureAggregationError, match="too few shares: 2 given, the threshold is 3"):
        combine_shares(shares[:2], 3)
    with pytest.raises(SecureAggregationError, match="too few"):
        combine_shares([], 1)
    xs, ys = split_elements(np.array([1, 2]), 3, 5)
    with pytest.raises(SecureAggregationError, match="too few"):
        combine_elements(xs[:2], ys[:2], 3)


def test_duplicate_and_out_of_range_x() -> None:
    shares = split_secret(b"secret", 2, 3)
    with pytest.raises(SecureAggregationError, match="duplicate"):
        combine_shares([shares[0], shares[0], shares[1]], 2)
    with pytest.raises(SecureAggregationError, match="duplicate"):
        split_secret(b"secret", 2, 3, x=[1, 2, 2])
    for bad_x in ([0, 1, 2], [1, 2, PRIME]):
        with pytest.raises(SecureAggregationError, match="x-coordinates must lie"):
            split_secret(b"secret", 2, 3, x=bad_x)
    _, ys = split_elements(np.array([5]), 2, 2)
    with pytest.raises(SecureAggregationError, match="x-coordinates must lie"):
        combine_elements(np.array([0, 1]), ys, 2)
    with pytest.raises(SecureAggregationError):
        Share(x=0, values=np.zeros(1, dtype=np.int64), length=1)
    with pytest.raises(SecureAggregationError):
        Share(x=PRIME, values=np.zeros(1, dtype=np.int64), length=1)


def test_values_out_of_field_rejected() -> None:
    xs, ys = split_elements(np.array([5, 6]), 2, 3)
    bad = ys.copy()
    bad[0, 0] = PRIME
    with pytest.raises(SecureAggregationError, match="corrupted"):
        combine_elements(xs, bad, 2)
    with pytest.raises(SecureAggregationError):
        Share(x=1, values=np.array([PRIME]), length=2)
    with pytest.raises(SecureAggregationError):
        Share(x=1, values=np.array([-1]), length=2)


def test_shares_of_different_secrets_rejected() -> None:
    a = split_secret(b"abc", 2, 3)
    b = split_secret(b"abcdef", 2, 3)
    with pytest.raises(SecureAggregationError, match="different secrets"):
        combine_shares([a[0], b[1]], 2)


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="threshold"):
        split_secret(b"x", 4, 3)
    with pytest.raises(InvalidInputError, match="threshold"):
        split_secret(b"x", 0, 3)
    with pytest.raises(InvalidInputError, match="n_shares"):
        split_secret(b"x", 1, 0)
    with pytest.raises(InvalidInputError, match="secret"):
        split_secret(b"", 1, 2)
    with pytest.raises(InvalidInputError, match="secret"):
        split_elements(np.array([PRIME]), 1, 2)
    with pytest.raises(InvalidInputError, match="prime"):
        split_elements(np.array([1]), 1, 2, prime=15)
    with pytest.raises(InvalidInputError, match="prime"):
        split_elements(np.array([1]), 1, 2, prime=2**61 - 1)
    with pytest.raises(InvalidInputError, match="x-coordinates"):
        split_secret(b"x", 1, 2, x=[1, 2, 3])


# --------------------------------------------------------------------------------------------
# serialisation
# --------------------------------------------------------------------------------------------


def test_share_bytes_roundtrip_and_validation() -> None:
    shares = split_secret(os.urandom(32), 2, 3)
    for s in shares:
        data = s.to_bytes()
        assert len(data) == 16 + 4 * 11
        back = Share.from_bytes(data)
        assert back == s and hash(back) == hash(s)
        assert not back.values.flags.writeable
    data = shares[0].to_bytes()
    with pytest.raises(SecureAggregationError, match="magic"):
        Share.from_bytes(b"xxxx" + data[4:])
    with pytest.raises(SecureAggregationError, match="malformed"):
        Share.from_bytes(data[:-1])
    with pytest.raises(SecureAggregationError, match="malformed"):
        Share.from_bytes(data + b"\0\0\0\0")
    with pytest.raises(SecureAggregationError, match="truncated"):
        Share.from_bytes(data[:10])
    with pytest.raises(SecureAggregationError, match="must lie"):
        Share.from_bytes(data[:16] + b"\xff" * 44)
    with pytest.raises(SecureAggregationError, match="bytes"):
        Share.from_bytes("text")  # type: ignore[arg-type]


def test_share_is_immutable_and_copies_input() -> None:
    values = np.array([1, 2], dtype=np.int64)
    share = Share(x=3, values=values, length=6)
    values[0] = 99
    assert share.values[0] == 1
    with pytest.raises(ValueError, match="read-only"):
        share.values[0] = 5


# --------------------------------------------------------------------------------------------
# speed
# --------------------------------------------------------------------------------------------


def test_split_and_combine_32_byte_key_t50_n100_fast() -> None:
    key = os.urandom(32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        shares = split_secret(key, 50, 100)
        assert combine_shares(shares[25:], 50) == key  # 75 shares: interpolate + verify 25
        best = min(best, time.perf_counter() - start)
    assert best < 0.05  # Flower's pure-Python GF(2^128) takes ~2.1 s for the split alone
