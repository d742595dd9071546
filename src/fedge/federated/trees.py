"""Federated tree ensembles: bagging and lossless histogram gradient boosting, in-process.

Two ways to federate the tree models people actually use; both end in a fedge IR
:class:`~fedge.ir.Model` (one ``TreeEnsemble``) that predicts with :func:`fedge.predict`,
compresses and exports like any other.

* :func:`federated_bagging` (:mod:`fedge.federated.trees_bagging`): each client fits a forest
  or booster on its rows; the server concatenates the lowered trees into one ensemble, the
  weighted mean of the clients' models (:func:`combine_tree_models`).
* :func:`federated_histogram_boosting` / :class:`FederatedHistGradientBoosting`
  (:mod:`fedge.federated.trees_histogram`): clients agree on bin edges, then send per-node
  gradient/hessian histograms (integer sums, optionally through SecAgg/SecAgg+); the server
  sums them and chooses every split. The trees equal those of the same algorithm run on the
  pooled rows.

:func:`simulate_bagging` and :func:`simulate_histogram_boosting` partition one dataset among
simulated clients (``"iid"``, ``"dirichlet:ALPHA"``, ``"quantity:ALPHA"``) and run either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.federated.partitioning import partition
from fedge.federated.trees_bagging import combine_tree_models, federated_bagging
from fedge.federated.trees_histogram import (
    BinEdges,
    BoostingHistory,
    Dropout,
    FederatedHistGradientBoosting,
    HistogramClient,
    RoundLog,
    federated_histogram_boosting,
    grid_bin_edges,
    quantile_bin_edges,
)
from fedge.ir.nodes import Model

__all__ = [
    "BinEdges",
    "BoostingHistory",
    "Dropout",
    "FederatedHistGradientBoosting",
    "HistogramClient",
    "RoundLog",
    "combine_tree_models",
    "federated_bagging",
    "federated_histogram_boosting",
    "grid_bin_edges",
    "partition_rows",
    "quantile_bin_edges",
    "simulate_bagging",
    "simulate_histogram_boosting",
]


def partition_rows(
    X: Any,
    y: Any,
    *,
    n_clients: int,
    scheme: str = "iid",
    random_state: int | None = 0,
    groups: Any = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split ``(X, y)`` into one ``(X_c, y_c)`` per simulated client (see partitioning)."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InvalidInputError(f"X {X.shape} and y {y.shape} must have one label per row")
    parts = partition(y, n_clients, scheme, np.random.default_rng(random_state), groups=groups)
    return [(X[p], y[p]) for p in parts]


def simulate_bagging(
    X: Any,
    y: Any,
    *,
    n_clients: int = 5,
    partition: str = "iid",
    random_state: int | None = 0,
    **params: Any,
) -> Model:
    """Partition ``(X, y)`` among ``n_clients`` and run :func:`federated_bagging`."""
    clients = partition_rows(X, y, n_clients=n_clients, scheme=partition, random_state=random_state)
    return federated_bagging(clients, random_state=random_state, **params)


def simulate_histogram_boosting(
    X: Any,
    y: Any,
    *,
    n_clients: int = 5,
    partition: str = "iid",
    random_state: int | None = 0,
    **params: Any,
) -> FederatedHistGradientBoosting:
    """Partition ``(X, y)`` among ``n_clients`` and fit :class:`FederatedHistGradientBoosting`
    (returned fitted: ``.model_``, ``.bin_edges_``, ``.history_``)."""
    clients = partition_rows(X, y, n_clients=n_clients, scheme=partition, random_state=random_state)
    return FederatedHistGradientBoosting(**params).fit(clients)
