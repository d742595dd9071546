"""The messages a federation exchanges: plain dataclasses holding lists of numpy arrays.

A model's trainable state travels as ``Parameters``: a list of float64 arrays in a fixed,
model-defined order (e.g. ``[coef, intercept]`` for a linear model, ``[W1, b1, W2, b2, ...]``
for an MLP). Server, clients, strategies and privacy code only ever see these lists; turning
them back into a fitted estimator is the job of :mod:`fedge.federated.training`. Messages are
immutable; code that changes parameters builds new arrays and never writes into a message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ClientUpdate", "FitInstructions", "Parameters", "copy_parameters", "flatten"]

Parameters = list[np.ndarray]


@dataclass(frozen=True)
class FitInstructions:
    """What the server sends a selected client for one round.

    ``config`` carries per-round training settings chosen by the strategy (e.g.
    ``proximal_mu`` for FedProx) on top of the client's own defaults.
    """

    round: int
    parameters: Parameters
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientUpdate:
    """What a client sends back after local training.

    ``parameters`` are the client's full model parameters after training (not a delta);
    ``num_examples`` is the number of local rows it trained on, the usual FedAvg weight.
    """

    client_id: str
    round: int
    parameters: Parameters
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


def copy_parameters(parameters: Sequence[np.ndarray]) -> Parameters:
    """Independent float64 copies of ``parameters`` (so nobody shares a buffer)."""
    return [np.array(p, dtype=np.float64, copy=True) for p in parameters]


def flatten(parameters: Sequence[np.ndarray]) -> np.ndarray:
    """All arrays of ``parameters`` as one float64 vector, in order."""
    if not parameters:
        return np.zeros(0)
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parameters])
