"""The compact tree tables of the C table layout: encoding rules, and the code they feed."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.tree import DecisionTreeRegressor

import fedge
from fedge.deployment import CompiledModel
from fedge.deployment.formats.c.tree_tables import compact_trees, unsigned_type
from fedge.ir import Model, Task, TreeEnsemble
from tools import require_tool


def _stump_pair(leaves: list[float], n_features: int = 2) -> TreeEnsemble:
    """Two one-split trees over feature n_features - 1 (the widest index)."""
    f = n_features - 1
    return TreeEnsemble(
        feature=np.array([f, f], dtype=np.int32),
        threshold=np.array([0.0, 1.0]),
        left=np.array([~0, ~2], dtype=np.int32),
        right=np.array([~1, ~3], dtype=np.int32),
        missing_left=np.array([True, False]),
        leaf_values=np.array(leaves, dtype=np.float64).reshape(-1, 1),
        roots=np.array([0, 1], dtype=np.int32),
        tree_offset=np.array([0, 0], dtype=np.int32),
        n_features=n_features,
        n_outputs=1,
        base_score=np.array([0.0]),
    )


def test_equal_leaves_are_shared_but_signed_zeros_are_not() -> None:
    tables = compact_trees(_stump_pair([1.5, -0.0, 1.5, 0.0]))
    bits = sorted(tables.leaves.view(np.uint32).ravel().tolist())
    assert bits == sorted({np.float32(v).view(np.uint32).item() for v in (1.5, -0.0, 0.0)})


def test_references_are_local_to_each_tree_and_leaves_start_at_the_limit() -> None:
    est = DecisionTreeRegressor(max_depth=6, random_state=0).fit(
        *_regression_data(rows=400, features=5)
    )
    ensemble = fedge.lower(est).steps[-1]
    tables = compact_trees(ensemble)
    inner = tables.child[tables.child < tables.limit]
    assert tables.limit == ensemble.n_nodes  # one tree: every split is local
    assert inner.max() < ensemble.n_nodes and inner.min() >= 1  # no split points at the root
    assert tables.child.max() - tables.limit < len(tables.leaves)


@pytest.mark.parametrize(
    ("n_features", "feature_type", "separate_missing"),
    [
        (128, "unsigned char", False),
        (129, "unsigned short", False),
        (40_000, "unsigned short", True),
    ],
)
def test_missing_rule_packs_into_the_feature_when_a_bit_is_free(
    n_features: int, feature_type: str, separate_missing: bool
) -> None:
    tables = compact_trees(_stump_pair([1.0, 2.0, 3.0, 4.0], n_features))
    assert unsigned_type(int(tables.feature.max()))[0] == feature_type
    assert (tables.missing_bit == 0) == separate_missing
    model = Model(
        steps=(_stump_pair([1.0, 2.0, 3.0, 4.0], n_features),),
        task=Task.REGRESSION,
        n_features=n_features,
    )
    require_tool("gcc", "gcc")
    X = np.zeros((4, n_features))
    X[:, -1] = [np.nan, -1.0, 0.5, 2.0]  # NaN: left at tree 0, right at tree 1
    expected = np.array([1.0 + 4.0, 1.0 + 3.0, 2.0 + 3.0, 2.0 + 4.0])
    np.testing.assert_array_equal(fedge.predict(model, X, mode="device"), expected)
    np.testing.assert_array_equal(CompiledModel(model).predict(X), expected)


def _regression_data(rows: int, features: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, features))
    return X, X @ rng.normal(size=features) + rng.normal(size=rows)
