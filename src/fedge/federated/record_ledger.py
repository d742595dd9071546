"""Record-level privacy accounting: one accountant per client, because each client's rows
go only through that client's own training.

Under DP-SGD each client clips and noises its own gradients, and a row of client ``c`` is
touched only in the rounds where ``c`` trains, with ``c``'s sampling rate and step count.
So each client has its own privacy loss; the federation reports the largest. Clients that
calibrate their noise to the same budget (as in :func:`fedge.federated.simulate`) all end
at about the same epsilon, whatever their size.

The ledger trusts what clients report about their training (noise multiplier, sampling
rate, steps): the honest-but-curious server of the DP-SGD setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedge.federated.privacy import PrivacyAccountant

__all__ = ["RecordLevelLedger"]


class RecordLevelLedger:
    """Per-client :class:`~fedge.federated.privacy.PrivacyAccountant` objects.

    Parameters
    ----------
    method : {"rdp", "pld"}
    delta : float
    """

    def __init__(self, *, method: str, delta: float) -> None:
        self.method = method
        self.delta = delta
        self.accountants: dict[str, PrivacyAccountant] = {}
        self.last_event: dict[str, tuple[float, float, int]] = {}

    def record(
        self, client_id: str, noise_multiplier: float, *, sampling_rate: float, steps: int
    ) -> None:
        """Add one round of ``client_id``'s DP-SGD training."""
        accountant = self.accountants.get(client_id)
        if accountant is None:
            accountant = PrivacyAccountant(self.method, delta=self.delta)
            self.accountants[client_id] = accountant
        accountant.record(noise_multiplier, sampling_rate=sampling_rate, steps=steps)
        self.last_event[client_id] = (noise_multiplier, sampling_rate, steps)

    def epsilon(self) -> float:
        """The largest epsilon any client's rows have spent (0.0 before any training)."""
        return max((a.epsilon() for a in self.accountants.values()), default=0.0)

    def epsilon_after_round(self, client_ids: Iterable[str]) -> float:
        """The largest epsilon after one more round of ``client_ids``, each repeating its
        last round's training (clients not seen yet are not counted)."""
        worst = self.epsilon()
        for cid in client_ids:
            if cid in self.last_event:
                z, q, steps = self.last_event[cid]
                after = self.accountants[cid].epsilon_after(z, sampling_rate=q, steps=steps)
                worst = max(worst, after)
        return worst

    def state_dict(self) -> dict[str, Any]:
        return {
            "accountants": {c: a.state_dict() for c, a in self.accountants.items()},
            "last_event": {c: list(e) for c, e in self.last_event.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountants = {}
        for cid, sub in state["accountants"].items():
            accountant = PrivacyAccountant(self.method, delta=self.delta)
            accountant.load_state_dict(sub)
            self.accountants[cid] = accountant
        self.last_event = {
            c: (float(e[0]), float(e[1]), int(e[2])) for c, e in state["last_event"].items()
        }
