"""Feature scaling a federation agrees on without pooling rows.

Two ways, and they differ in what they reveal:

- :func:`scaler_from_moments`: each client reports its row count, per-feature sums and sums
  of squares; the server adds them (a sum, so secure aggregation can hide the individual
  reports) and derives one StandardScaler. The moments are exact: they are **not** covered by
  any differential-privacy budget, so a private run must not use them.
- :func:`scaler_from_bounds`: public per-feature bounds (a data dictionary, a sensor's range,
  a dataset's documentation) map each feature's range onto [-1, 1]. No client data is used,
  so it costs no privacy.

Either scaler becomes the first step of the final pipeline, so the exported model takes raw
features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.preprocessing import StandardScaler

from fedge.errors import InvalidInputError

__all__ = ["client_moments", "scaler_from_bounds", "scaler_from_moments"]


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


def scaler_from_bounds(lower: Sequence[float], upper: Sequence[float]) -> StandardScaler:
    """A fitted StandardScaler mapping each public range ``[lower_j, upper_j]`` onto [-1, 1]."""
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if lo.shape != hi.shape or lo.ndim != 1 or lo.size == 0:
        raise InvalidInputError(
            f"feature bounds need two 1-D arrays of equal length, got {lo.shape} and {hi.shape}"
        )
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InvalidInputError("feature bounds must be finite")
    bad = np.flatnonzero(hi <= lo)
    if bad.size:
        raise InvalidInputError(
            f"feature {int(bad[0])}: upper bound {hi[bad[0]]:g} is not above lower {lo[bad[0]]:g}"
        )
    scaler = StandardScaler()
    scaler.mean_ = (lo + hi) / 2.0
    scaler.scale_ = (hi - lo) / 2.0
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = lo.size
    scaler.n_samples_seen_ = 0
    return scaler
