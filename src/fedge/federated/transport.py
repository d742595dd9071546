"""How instructions reach clients and updates come back: the seam between server and network.

The server only talks to a :class:`Transport`. :class:`InProcessTransport` calls client
objects directly (simulation, tests); the Flower engine is another transport, so server
logic never changes between a laptop and a federation across machines.

Every call ends in a :class:`FitOutcome`: an update, or the reason there is none (the
client raised, timed out, or dropped out). A failing client never stops a round.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedge.errors import InvalidInputError, SecureAggregationError
from fedge.federated.client import FederatedClient, client_rng
from fedge.federated.messages import ClientUpdate, FitInstructions
from fedge.federated.secure import SecureResult, SecureSession
from fedge.federated.training import ModelSpec

__all__ = ["FaultPlan", "FitOutcome", "InProcessTransport", "SecureOutcome", "Transport"]


@dataclass(frozen=True)
class SecureOutcome:
    """A protected round as the server sees it: the sum (or why there is none), the clients
    that failed before the protocol, and each survivor's public training report (noise
    multiplier, sampling rate and steps, for record-level accounting; no data-dependent
    values)."""

    result: SecureResult | None
    failures: list[tuple[str, str]]
    reports: dict[str, dict[str, float]]
    abort_reason: str | None = None


PUBLIC_REPORT = ("noise_multiplier", "sampling_rate", "steps")


@dataclass(frozen=True)
class FitOutcome:
    """One client's answer to one round: ``update`` or a ``failure`` reason."""

    client_id: str
    update: ClientUpdate | None
    failure: str | None = None


class Transport(Protocol):
    """Delivers a round's instructions to the selected clients and collects the outcomes."""

    def client_ids(self) -> list[str]:
        """The clients that can be selected."""
        ...

    def fit(
        self, client_ids: Sequence[str], instructions: FitInstructions, spec: ModelSpec
    ) -> list[FitOutcome]:
        """Run one round of local training on ``client_ids``; one outcome per client."""
        ...

    def fit_secure(
        self,
        client_ids: Sequence[str],
        instructions: FitInstructions,
        spec: ModelSpec,
        session: SecureSession,
    ) -> SecureOutcome:
        """A round under secure aggregation: clients train and protect their updates, the
        protocol runs, and only the sum reaches the server."""
        ...


ATTACKS = ("sign-flip", "scale", "noise")


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected into an in-process federation, so tolerance is tested, not claimed.

    Each selected client, each round, independently (seeded by ``seed``, the round and the
    client): raises with probability ``fail``, hangs past the timeout with probability
    ``hang``, drops out before training (``drop_before``) or after training with its update
    lost (``drop_after``), or drops out at a random stage (0-3) of the secure-aggregation
    protocol (``dropout``; without secure aggregation stages 0-2 lose the update and stage 3
    keeps it). ``explicit`` fixes faults per (round, client), including ``drop_stage_N``.
    ``attackers`` clients (chosen once, a fraction of all clients)
    send a malicious update every round: ``sign-flip`` sends ``g - scale * (w - g)``,
    ``scale`` sends ``g + scale * (w - g)``, ``noise`` adds Gaussian noise of std ``scale``.
    """

    fail: float = 0.0
    hang: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    dropout: float = 0.0
    attackers: float = 0.0
    attack: str = "sign-flip"
    scale: float = 10.0
    seed: int = 0
    explicit: Mapping[tuple[int, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("fail", "hang", "drop_before", "drop_after", "dropout", "attackers"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"FaultPlan.{name} must be in [0, 1], got {value}")
        if self.attack not in ATTACKS:
            raise InvalidInputError(f"unknown attack {self.attack!r}; use one of {ATTACKS}")

    def attacker_ids(self, client_ids: Sequence[str]) -> frozenset[str]:
        """The clients that attack in every round (a seeded fraction of all clients)."""
        count = round(self.attackers * len(client_ids))
        rng = np.random.default_rng([self.seed, 0xA77AC])
        chosen = rng.choice(len(client_ids), size=count, replace=False) if count else []
        return frozenset(client_ids[i] for i in chosen)

    def fault(self, server_round: int, client_id: str) -> str | None:
        """The fault injected into ``client_id`` in ``server_round``, if any."""
        if (server_round, client_id) in self.explicit:
            return self.explicit[(server_round, client_id)]
        draws = np.random.default_rng(
            [self.seed, server_round, zlib.crc32(client_id.encode())]
        ).random(2)
        edge = 0.0
        for kind in ("fail", "hang", "drop_before", "drop_after", "dropout"):
            edge += getattr(self, kind)
            if draws[0] < edge:
                # a dropout leaves at a random stage of the secure-aggregation protocol
                return f"drop_stage_{int(draws[1] * 4)}" if kind == "dropout" else kind
        return None

    def corrupt(self, update: ClientUpdate, instructions: FitInstructions) -> ClientUpdate:
        """The malicious version of an honest ``update``."""
        out = []
        rng = np.random.default_rng([self.seed, update.round, 0xBAD])
        for w, g in zip(update.parameters, instructions.parameters, strict=True):
            if self.attack == "sign-flip":
                out.append(g - self.scale * (w - g))
            elif self.attack == "scale":
                out.append(g + self.scale * (w - g))
            else:
                out.append(w + rng.normal(0.0, self.scale, size=np.shape(w)))
        return ClientUpdate(
            update.client_id, update.round, out, update.num_examples, update.metrics
        )


class InjectedFaultError(RuntimeError):
    """Raised inside a client by a :class:`FaultPlan` (never by real code)."""


class InProcessTransport:
    """Calls :class:`FederatedClient` objects in this process.

    Parameters
    ----------
    clients : sequence of FederatedClient
    timeout : float, optional
        Seconds a client may train before it counts as timed out. Without a timeout clients
        run directly in the calling thread (fastest); with one, each runs in a worker thread
        that the round stops waiting for after ``timeout`` seconds.
    faults : FaultPlan, optional
    """

    def __init__(
        self,
        clients: Sequence[FederatedClient],
        *,
        timeout: float | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        self.clients = {c.client_id: c for c in clients}
        if len(self.clients) != len(clients):
            raise InvalidInputError("client ids must be unique")
        self.timeout = timeout
        self.faults = faults
        if faults is not None and faults.hang > 0 and timeout is None:
            raise InvalidInputError(
                "FaultPlan.hang needs a timeout: without one the server would wait forever"
            )
        self._attackers = faults.attacker_ids(list(self.clients)) if faults else frozenset()
        self._release = threading.Event()  # frees the threads of "hung" clients

    def client_ids(self) -> list[str]:
        return list(self.clients)

    def _call(
        self,
        client: FederatedClient,
        instructions: FitInstructions,
        spec: ModelSpec,
        keep_update: bool = False,
    ) -> ClientUpdate | None:
        fault = self.faults.fault(instructions.round, client.client_id) if self.faults else None
        if fault == "fail":
            raise InjectedFaultError("injected failure")
        if fault == "hang":
            self._release.wait()
            raise InjectedFaultError("injected hang")
        if fault == "drop_before":
            return None
        update = client.fit(instructions, spec)
        lost = fault == "drop_after" or fault in ("drop_stage_0", "drop_stage_1", "drop_stage_2")
        if lost and not keep_update:  # under secure aggregation the protocol drops it later
            return None
        if client.client_id in self._attackers:
            update = self.faults.corrupt(update, instructions)
        return update

    def fit(
        self, client_ids: Sequence[str], instructions: FitInstructions, spec: ModelSpec
    ) -> list[FitOutcome]:
        self._release.clear()
        try:
            return [self._run(cid, instructions, spec) for cid in client_ids]
        finally:
            self._release.set()  # lets the threads of hung clients finish

    def _run(
        self,
        cid: str,
        instructions: FitInstructions,
        spec: ModelSpec,
        keep_update: bool = False,
    ) -> FitOutcome:
        client = self.clients[cid]
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["update"] = self._call(client, instructions, spec, keep_update)
            except Exception as exc:  # a client's failure must never stop the round
                box["error"] = exc

        if self.timeout is None:
            work()
        else:
            # Each client in its own daemon thread: a slow or hung one is abandoned after
            # the timeout without holding up the clients after it.
            thread = threading.Thread(target=work, daemon=True, name=f"fedge-client-{cid}")
            thread.start()
            thread.join(self.timeout)
            if thread.is_alive():
                return FitOutcome(cid, None, f"timed out after {self.timeout:g} s")
        if "error" in box:
            exc = box["error"]
            return FitOutcome(cid, None, f"raised {type(exc).__name__}: {exc}")
        update = box.get("update")
        return FitOutcome(cid, update, None if update is not None else "dropped out")

    def fit_secure(
        self,
        client_ids: Sequence[str],
        instructions: FitInstructions,
        spec: ModelSpec,
        session: SecureSession,
    ) -> SecureOutcome:
        """Clients train and protect their updates here (their side); the protocol's server
        half returns only the sum. Faults: clients that fail, hang or drop before training
        never join; ``drop_after`` leaves before sending its masked input (stage 2);
        ``drop_stage_N`` leaves at stage N."""
        vectors: dict[str, np.ndarray] = {}
        drops: dict[str, int] = {}
        failures: list[tuple[str, str]] = []
        reports: dict[str, dict[str, float]] = {}
        self._release.clear()
        try:
            for cid in client_ids:
                fault = self.faults.fault(instructions.round, cid) if self.faults else None
                stage = _secure_drop_stage(fault)
                outcome = self._run(cid, instructions, spec, keep_update=stage is not None)
                if outcome.update is None:
                    failures.append((cid, outcome.failure or "no update"))
                    continue
                client = self.clients[cid]
                rng = client_rng(client.random_state, instructions.round, cid + "/protect")
                vectors[cid] = session.client_vector(outcome.update, rng)
                reports[cid] = {
                    k: float(outcome.update.metrics[k])
                    for k in PUBLIC_REPORT if k in outcome.update.metrics
                }
                if stage is not None:
                    drops[cid] = stage
        finally:
            self._release.set()
        if not vectors:
            return SecureOutcome(None, failures, reports, "no client finished training")
        try:
            result = session.run(vectors, drops)
        except SecureAggregationError as exc:
            return SecureOutcome(None, failures, reports, str(exc))
        return SecureOutcome(result, failures, reports)


def _secure_drop_stage(fault: str | None) -> int | None:
    if fault == "drop_after":
        return 2
    if fault is not None and fault.startswith("drop_stage_"):
        return int(fault.rsplit("_", 1)[1])
    return None
