"""The path an update takes into the aggregate: encode, sum, decode.

Sum-based strategies (FedAvg, FedProx, FedAdam, ...) only need the weighted sum of the
clients' parameters and the total weight. The server obtains that sum through a
:class:`SumAggregator`, so a layer that hides individual updates (pairwise masking,
homomorphic encryption) replaces :class:`PlainSum` without touching strategies or server:
``encode`` runs where the update is made, ``aggregate`` where updates meet, and only the
sum comes out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from fedge.errors import InvalidInputError
from fedge.federated.messages import ClientUpdate, Parameters

__all__ = ["PlainSum", "SumAggregator"]


class SumAggregator(Protocol):
    """Turns weighted client updates into their sum and total weight, and nothing more."""

    def encode(self, update: ClientUpdate, weight: float) -> Any:
        """What leaves the client for ``update`` with aggregation weight ``weight``."""
        ...

    def aggregate(self, payloads: Sequence[Any]) -> tuple[Parameters, float]:
        """The weighted parameter sum and the total weight of ``payloads``."""
        ...


class PlainSum:
    """Plaintext summation: the server sees every weighted update (no secrecy)."""

    def encode(self, update: ClientUpdate, weight: float) -> tuple[Parameters, float]:
        return [weight * np.asarray(p, dtype=np.float64) for p in update.parameters], weight

    def aggregate(self, payloads: Sequence[tuple[Parameters, float]]) -> tuple[Parameters, float]:
        if not payloads:
            raise InvalidInputError("nothing to aggregate: no payloads")
        sums = [np.array(p, dtype=np.float64, copy=True) for p in payloads[0][0]]
        for arrays, _ in payloads[1:]:
            for total, p in zip(sums, arrays, strict=True):
                total += p
        return sums, float(sum(w for _, w in payloads))
