import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedge.errors import InvalidInputError
from fedge.federated.partitioning import parse_partition, partition


def _check_cover(parts, n_rows):
    everything = np.concatenate(parts)
    assert len(everything) == n_rows
    assert np.array_equal(np.sort(everything), np.arange(n_rows))
    assert all(np.all(np.diff(p) > 0) for p in parts)


@given(
    n_rows=st.integers(40, 400),
    n_clients=st.integers(1, 10),
    scheme=st.sampled_from(["iid", "dirichlet:0.3", "dirichlet:10", "quantity:0.5"]),
    seed=st.integers(0, 2**16),
)
def test_partitions_are_disjoint_and_cover_every_row(n_rows, n_clients, scheme, seed):
    y = np.arange(n_rows) % 3
    parts = partition(y, n_clients, scheme, np.random.default_rng(seed))
    assert len(parts) == n_clients
    _check_cover(parts, n_rows)
    if scheme != "iid":
        assert min(len(p) for p in parts) >= 2


def test_same_seed_same_partition():
    y = np.arange(1000) % 4
    a = partition(y, 10, "dirichlet:0.5", np.random.default_rng(7))
    b = partition(y, 10, "dirichlet:0.5", np.random.default_rng(7))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_small_alpha_skews_labels_and_large_alpha_does_not():
    y = np.repeat(np.arange(5), 2000)

    def mean_classes_held(alpha):
        parts = partition(y, 20, f"dirichlet:{alpha}", np.random.default_rng(0))
        # classes holding at least 5% of a client's rows
        held = [np.sum(np.bincount(y[p], minlength=5) > 0.05 * len(p)) for p in parts]
        return np.mean(held)

    assert mean_classes_held(0.1) < 2.5
    assert mean_classes_held(100.0) == 5


def test_quantity_skew_varies_sizes_keeps_labels_iid():
    y = np.arange(20000) % 2
    parts = partition(y, 10, "quantity:0.3", np.random.default_rng(1))
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() > 3 * sizes.min()
    big = parts[int(np.argmax(sizes))]
    assert abs(y[big].mean() - 0.5) < 0.05


def test_group_partition_one_client_per_group():
    groups = np.array(["b", "a", "b", "c", "a"])
    parts = partition(np.zeros(5), 0, "group", np.random.default_rng(0), groups=groups)
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dirichlet", "ALPHA"),
        ("dirichlet:-1", "> 0"),
        ("quantity:nan", "> 0"),
        ("zipf:2", "unknown partition"),
        ("iid:3", "no parameter"),
    ],
)
def test_bad_specs_are_explained(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_partition(spec)


def test_too_many_clients_for_the_rows():
    with pytest.raises(InvalidInputError, match="fewer clients"):
        partition(np.zeros(10), 20, "iid", np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="groups"):
        partition(np.zeros(10), 2, "group", np.random.default_rng(0))
