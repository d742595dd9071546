"""What a federated run did, round by round: the record users plot and save as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EarlyStopping", "History", "Rejection", "RoundRecord"]


@dataclass(frozen=True)
class Rejection:
    """An update the server refused, and why (it was never averaged in)."""

    client_id: str
    round: int
    reason: str


@dataclass(frozen=True)
class RoundRecord:
    """One finished round.

    ``epsilon`` is the privacy spent after this round (None without differential privacy);
    ``metrics`` holds the server-side validation metrics of the new global model and the
    clients' mean training loss; norms are L2 norms of the accepted updates' deltas from the
    global model the round started with.
    """

    round: int
    selected: int
    accepted: int
    rejected: int
    failed: int
    mean_update_norm: float
    max_update_norm: float
    epsilon: float | None
    seconds: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    participants: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = dict(self.metrics)
        out["participants"] = list(self.participants)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundRecord:
        values = dict(data)
        values["participants"] = tuple(values.get("participants", ()))
        values["metrics"] = dict(values.get("metrics", {}))
        return cls(**values)


@dataclass
class History:
    """The rounds of a run, plus every rejected update with its reason."""

    rounds: list[RoundRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    stop_reason: str | None = None  # why the run ended before its last round, if it did

    def metric(self, name: str) -> list[float]:
        """One metric per round (NaN where a round did not record it)."""
        return [r.metrics.get(name, math.nan) for r in self.rounds]

    @property
    def epsilon(self) -> float | None:
        """Privacy spent at the end of the run (None without differential privacy)."""
        return self.rounds[-1].epsilon if self.rounds else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": [r.as_dict() for r in self.rounds],
            "rejections": [asdict(r) for r in self.rejections],
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        return cls(
            rounds=[RoundRecord.from_dict(r) for r in data.get("rounds", [])],
            rejections=[Rejection(**r) for r in data.get("rejections", [])],
            stop_reason=data.get("stop_reason"),
        )

    def save(self, path: str | Path) -> None:
        """Write the history as JSON."""
        Path(path).write_text(json.dumps(self.as_dict(), indent=1, allow_nan=True) + "\n")


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` rounds.

    ``mode`` is ``"max"`` for scores (accuracy, R2) and ``"min"`` for losses.
    """

    metric: str = "accuracy"
    patience: int = 5
    min_delta: float = 1e-4
    mode: str = "max"

    def should_stop(self, history: History) -> bool:
        values = [v for v in history.metric(self.metric) if not math.isnan(v)]
        if len(values) <= self.patience:
            return False
        sign = 1.0 if self.mode == "max" else -1.0
        best_before = max(sign * v for v in values[: -self.patience])
        recent = max(sign * v for v in values[-self.patience :])
        return recent < best_before + self.min_delta
