"""AutoCompress: within budget on the scoring rows, a real Pareto front, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fedge
from fedge.compression import lite_bytes
from fedge.compression.search import auto_compress
from fedge.errors import InvalidInputError


@pytest.fixture(scope="module")
def data():
    X, y = load_breast_cancer(return_X_y=True)
    return X[:300], y[:300], X[300:], y[300:]


def test_forest_search_stays_within_budget_and_shrinks(data) -> None:
    Xtr, ytr, Xva, yva = data
    forest = RandomForestClassifier(30, random_state=0).fit(Xtr, ytr)
    ticks = []
    result = auto_compress(
        forest,
        Xva,
        yva,
        max_accuracy_drop=0.01,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert ticks[-1][0] == ticks[-1][1] == len(ticks)
    assert result.best.score >= result.baseline.score - 0.01
    assert result.best.bytes == lite_bytes(result.model)
    assert result.best.bytes < lite_bytes(fedge.lower(forest)) / 2
    sizes = [c.bytes for c in result.front]
    scores = [c.score for c in result.front]
    assert sizes == sorted(sizes) and scores == sorted(scores)
    assert result.best in result.candidates
    # The front holds every candidate that nothing smaller beats.
    for c in result.candidates:
        assert any(f.bytes <= c.bytes and f.score >= c.score for f in result.front)


def test_mlp_search_tries_neurons_and_precisions(data) -> None:
    Xtr, ytr, Xva, yva = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=200, random_state=0))
        mlp.fit(Xtr, ytr)
    result = auto_compress(mlp, Xva, yva, max_accuracy_drop=0.02)
    chains = {c.passes for c in result.candidates}
    assert ("int8",) in chains and ("neurons 0.5", "dynamic") in chains
    assert result.best.bytes < lite_bytes(fedge.lower(mlp)) / 2


def test_a_budget_nothing_meets_is_refused(data) -> None:
    Xtr, ytr, Xva, yva = data
    model = LogisticRegression(max_iter=3000).fit(Xtr, ytr)
    with pytest.raises(InvalidInputError, match="budget >= 0"):
        auto_compress(model, Xva, yva, max_accuracy_drop=-0.01)
    with pytest.raises(InvalidInputError, match="labels"):
        auto_compress(model, Xva, yva[:10])
    with pytest.raises(InvalidInputError, match="30"):
        auto_compress(model, Xva[:, :3], yva)
    assert np.isfinite(auto_compress(model, Xva, yva).best.score)
