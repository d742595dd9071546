"""Preprocessing a federation agrees on without pooling rows: feature standardization.

Each client reports only its row count, per-feature sums and sums of squares; the server
adds them (a sum, so secure aggregation can hide the individual reports) and derives one
:class:`~sklearn.preprocessing.StandardScaler` every client applies. The scaler becomes the
first step of the final pipeline, so the exported model takes raw features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.preprocessing import StandardScaler

from fedge.errors import InvalidInputError

__all__ = ["client_moments", "scaler_from_moments"]


def client_moments(X: np.ndarray) -> np.ndarray:
    """What one client reports: ``[n, sum(x_j)..., sum(x_j^2)...]`` as one float64 vector."""
    X = np.asarray(X, dtype=np.float64)
    return np.concatenate([[len(X)], X.sum(axis=0), np.square(X).sum(axis=0)])


def scaler_from_moments(reports: Sequence[np.ndarray]) -> StandardScaler:
    """A fitted StandardScaler from the sum of the clients' :func:`client_moments`."""
    if not reports:
        raise InvalidInputError("no client moments to build a scaler from")
    total = np.sum(np.stack(reports), axis=0)
    n_features = (len(total) - 1) // 2
    n = total[0]
    if n < 1:
        raise InvalidInputError("the clients reported no rows")
    mean = total[1 : 1 + n_features] / n
    var = np.maximum(total[1 + n_features :] / n - mean**2, 0.0)
    scaler = StandardScaler()
    scaler.mean_ = mean
    scaler.var_ = var
    # as scikit-learn does: constant features keep scale 1 instead of dividing by zero
    scale = np.sqrt(var)
    scaler.scale_ = np.where(scale < 10 * np.finfo(np.float64).eps * np.abs(mean) + 1e-300, 1.0,
                             scale)
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = int(n)
    return scaler
