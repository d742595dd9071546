"""Secure aggregation computation: fedge's SecAgg and SecAgg+ against Flower's SecAgg+ workflow.

One run measures, on the same vectors and the same security parameters, the computation of a
secure aggregation round of ``n`` in {10, 50, 100} clients with 100,000 float parameters each,
at 0% and 10% dropout:

- **fedge**: :func:`fedge.federated.secure_aggregation.secure_sum` (clients and server in one
  process; its per-stage timings: advertise keys, share keys, masked input, unmasking).
- **Flower** (``flwr``, the ``bench`` extra): the real ``SecAggPlusWorkflow`` stage methods
  (``setup_stage``, ``share_keys_stage``, ``collect_masked_vectors_stage``, ``unmask_stage``)
  driving real ``ClientApp(client_fn, mods=[secaggplus_mod])`` instances through an in-memory
  stand-in for the network (``MemoryGrid``): every message is serialised to Flower's protobuf
  and parsed back, as a transport would, and handed to the destination node's ``ClientApp``
  directly, without Flower's polling loops. The (de)serialisation time is measured and
  subtracted, so each stage is the cryptographic and bookkeeping computation of Flower's own
  client mod and server workflow (plus ``FedAvg.configure_fit``/``aggregate_fit``, which the
  workflow calls). Each Flower configuration runs in its own process, capped at
  ``--flower-timeout`` seconds; a capped run is reported as such (stages not reached, a lower
  bound on its time).

Security parameters (the same for both): full SecAgg is Flower's ``num_shares = n`` (every
client holds a share of every other; fedge ``neighbours=None``) with threshold ``n // 2 + 1``;
SecAgg+ is 11 shares (fedge: ``k = 10`` neighbours, ``num_shares = k + 1``), threshold 6, as in
the issue's reference, and at 10 clients 5 shares (``k = 4``), threshold 3 (11 shares of 10
clients would be full SecAgg). Both build the same ring graph (``k / 2`` on each side).
Dropout: ``round(0.1 n)`` clients, the same ones for both, drop after sharing their keys and
before sending their masked input (the case that needs the pairwise masks of the dropped
clients rebuilt; Flower's workflow does not recover clients that vanish earlier).

Correctness: each recovered sum is compared with the plain float sum of the survivors' vectors
(uniform in [-1, 1], seed fixed): fedge (scale 2^24, bound 8) must be within its fixed-point
bound ``n_survivors * 2^-25``; Flower (clipping range 8, quantization range 2^22, modulus
2^32, max_weight 1 with weight 1, so its stochastic quantization is not coarsened) returns the
weighted mean, multiplied back by the survivors' count, within its quantization bound
``n_survivors * 16 / 2^22``. The plain numpy sum of the survivors is timed too and fedge's
overhead over it printed. Targets: fedge <= 0.2x Flower's time at the same parameters, both
sums within their bounds. Then CKKS (TenSEAL, :class:`fedge.federated.encryption.
CKKSAggregator`): 10 clients x 100,000 floats, encrypt / add / decrypt times, max error
<= 1e-6.

Medians over ``--repeats`` rounds (fedge; Flower repeats only configurations whose first round
took under 20 s). Runs single-threaded (OMP_NUM_THREADS=1) in about 13 minutes on two cores,
most of it Flower's full SecAgg; ``--quick`` (10 and 50 clients, one round each, 40 s cap) is a
~1-2 minute smoke run. Results: benchmarks/results/secure_aggregation.json (``--quick`` writes
nothing unless ``--output`` is given).

    .venv/bin/python benchmarks/secure_aggregation.py [--quick] [--repeats 3]
        [--flower-timeout 300] [--output PATH]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 (after the thread settings above)
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import queue as queue_module  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fedge.federated.secure_aggregation import SecAggConfig, secure_sum  # noqa: E402
from provenance import ROOT, provenance  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "secure_aggregation.json"
LENGTH = 100_000
CLIENTS = (10, 50, 100)
QUICK_CLIENTS = (10, 50)
DROPOUTS = (0.0, 0.1)
PROTOCOLS = ("secagg+", "secagg")
SEED = 0
VALUE_RANGE = 1.0  # vectors are uniform in [-VALUE_RANGE, VALUE_RANGE]
# fedge's fixed point
SCALE_BITS = 24
BOUND = 8.0
# Flower's quantization (its defaults, except max_weight: every client sends weight 1)
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32
MAX_WEIGHT = 1.0
FLOWER_REPEAT_LIMIT = 20.0  # repeat a Flower configuration only if one round took less
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")
FLOWER_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
TARGETS = {"time_ratio": 0.2, "ckks_error": 1e-6}
CKKS_CLIENTS = 10


@dataclass(frozen=True)
class Setting:
    """One configuration: protocol, clients, dropout and the shared security parameters."""

    protocol: str  # "secagg" (full) or "secagg+"
    n: int
    dropout: float
    num_shares: int  # Flower's num_shares; fedge's share holders (k + 1, or n)
    threshold: int

    @property
    def neighbours(self) -> int | None:
        return None if self.protocol == "secagg" else self.num_shares - 1

    @property
    def label(self) -> str:
        return f"{self.protocol} n={self.n} drop={100 * self.dropout:.0f}%"


def settings_for(clients: tuple[int, ...]) -> list[Setting]:
    out = []
    for protocol in PROTOCOLS:
        for n in clients:
            for dropout in DROPOUTS:
                if protocol == "secagg":
                    shares, threshold = n, n // 2 + 1
                else:
                    shares = 11 if n > 11 else 5
                    threshold = shares // 2 + 1
                out.append(Setting(protocol, n, dropout, shares, threshold))
    return out


def make_vectors(n: int, length: int, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-VALUE_RANGE, VALUE_RANGE, (n, length))


def dropped_indices(n: int, dropout: float, seed: int = SEED) -> list[int]:
    count = round(dropout * n)
    order = np.random.default_rng(seed + 1).permutation(n)
    return sorted(int(i) for i in order[:count])


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# --------------------------------------------------------------------------- fedge
def run_fedge(setting: Setting, vectors: np.ndarray, dropped: list[int],
              repeats: int) -> dict[str, Any]:
    ids = [f"client-{i:03d}" for i in range(setting.n)]
    named = dict(zip(ids, vectors, strict=True))
    drop = {ids[i]: 2 for i in dropped}  # 2: shared its keys, sends no masked input
    survivors = [i for i in range(setting.n) if i not in set(dropped)]
    plain = np.sum(vectors[survivors], axis=0)
    bound = len(survivors) * 2.0 ** -(SCALE_BITS + 1)
    runs = []
    for r in range(repeats):
        config = SecAggConfig(
            threshold=setting.threshold, vector_length=vectors.shape[1],
            neighbours=setting.neighbours, scale_bits=SCALE_BITS, bound=BOUND,
            round_id=r + 1, round_seed=secrets.token_bytes(32),
        )
        result = secure_sum(named, config, drop=drop)
        if sorted(result.survivors) != sorted(ids[i] for i in survivors):
            raise RuntimeError(f"fedge {setting.label}: unexpected survivors")
        error = float(np.abs(result.sum - plain).max())
        runs.append({"seconds": {s: result.timings[s] for s in STAGES},
                     "total": result.timings["total"], "max_error": error})
    return {
        "seconds": {s: median([r["seconds"][s] for r in runs]) for s in STAGES},
        "total": median([r["total"] for r in runs]),
        "max_error": max(r["max_error"] for r in runs),
        "error_bound": bound,
        "within_bound": all(r["max_error"] <= bound for r in runs),
        "repeats": len(runs),
        "runs": runs,
    }


def time_plain_sum(vectors: np.ndarray, dropped: list[int], repeats: int = 5) -> float:
    """The plain aggregation the protocol replaces: summing the survivors' float vectors."""
    survivors = [v for i, v in enumerate(vectors) if i not in set(dropped)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        total = np.zeros_like(survivors[0])
        for v in survivors:
            total += v
        times.append(time.perf_counter() - start)
    return median(times)


# --------------------------------------------------------------------------- Flower
def flower_worker(spec: dict[str, Any], events: Any) -> None:
    """Child process: run Flower's SecAgg+ workflow ``spec["repeats"]`` times, reporting each
    stage as it completes (so a capped run still reports the stages it finished)."""
    try:
        _flower_rounds(spec, events)
    except Exception as exc:  # reported to the parent, which records it
        events.put(("error", f"{type(exc).__name__}: {exc}"))
    events.put(("finished",))


def _flower_rounds(spec: dict[str, Any], events: Any) -> None:
    import logging
    import random
    from uuid import uuid4

    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays, serde
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
    from flwr.serverapp.grid import Grid
    from flwr.supercore.task_identity import TaskIdentity

    logging.getLogger("flwr").setLevel(logging.ERROR)
    # What a ServerApp process has set before its workflow creates messages.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1

    n, length = spec["n"], spec["length"]
    vectors = make_vectors(n, length, spec["seed"])
    dropped_ids = {i + 1 for i in spec["dropped"]}  # node ids are 1..n
    survivors = [i for i in range(n) if i + 1 not in dropped_ids]
    plain = np.sum(vectors[survivors], axis=0)
    bound = len(survivors) * 2 * CLIPPING_RANGE / QUANTIZATION_RANGE + 1e-9

    class VectorClient(NumPyClient):  # "training" returns the client's prepared vector
        def __init__(self, vector: np.ndarray) -> None:
            self.vector = vector

        def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict]:
            return [self.vector], 1, {}

    class Proxy(ClientProxy):  # registration only: the workflow talks to nodes via the grid
        def __init__(self, node_id: int) -> None:
            super().__init__(str(node_id))
            self.node_id = node_id

        def get_properties(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def get_parameters(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def fit(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def evaluate(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def reconnect(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    class Node:  # a SuperNode's ClientApp with its persistent Context
        def __init__(self, node_id: int, vector: np.ndarray) -> None:
            self.app = ClientApp(client_fn=lambda _ctx: VectorClient(vector).to_client(),
                                 mods=[secaggplus_mod])
            self.context = Context(run_id=1, node_id=node_id, node_config={},
                                   state=RecordDict(), run_config={})

    class MemoryGrid(Grid):
        """In-memory transport: protobuf round trip (timed apart), direct delivery, and no
        reply from dropped nodes from the masked-vector stage on."""

        def __init__(self, nodes: dict[int, Node], dropped: set[int]) -> None:
            self.nodes, self.dropped = nodes, dropped
            self.stage = 0
            self.transport_seconds = 0.0

        def _wire(self, message: Any) -> Any:
            start = time.perf_counter()
            message.metadata.__dict__["_message_id"] = uuid4().hex  # as the SuperLink does
            data = serde.message_to_proto(message).SerializeToString()
            copy = serde.message_from_proto(ProtoMessage.FromString(data))
            self.transport_seconds += time.perf_counter() - start
            return copy

        def set_run(self, run: Any) -> None:
            pass

        @property
        def run(self) -> Any:
            raise NotImplementedError

        def create_message(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def get_node_ids(self) -> list[int]:
            return list(self.nodes)

        def push_messages(self, messages: Any) -> Any:
            raise NotImplementedError

        def pull_messages(self, message_ids: Any) -> Any:
            raise NotImplementedError

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list:
            replies = []
            for message in messages:
                delivered = self._wire(message)
                node_id = delivered.metadata.dst_node_id
                if self.stage >= 2 and node_id in self.dropped:
                    continue  # gone after sharing its keys: no masked input, no unmasking
                node = self.nodes[node_id]
                replies.append(self._wire(node.app(delivered, node.context)))
            return replies

    for rep in range(spec["repeats"]):
        random.seed(spec["seed"] + rep)  # the workflow shuffles the ring with `random`
        nodes = {i + 1: Node(i + 1, vectors[i]) for i in range(n)}
        grid = MemoryGrid(nodes, dropped_ids)
        manager = SimpleClientManager()
        for node_id in nodes:
            manager.register(Proxy(node_id))
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                          min_available_clients=n)
        server_context = Context(run_id=1, node_id=SUPERLINK_NODE_ID, node_config={},
                                 state=RecordDict(), run_config={})
        context = LegacyContext(server_context, config=ServerConfig(num_rounds=1),
                                strategy=strategy, client_manager=manager)
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters([np.zeros(length)]), keep_input=True)
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: 1})
        workflow = SecAggPlusWorkflow(
            spec["num_shares"], spec["threshold"], max_weight=MAX_WEIGHT,
            clipping_range=CLIPPING_RANGE, quantization_range=QUANTIZATION_RANGE,
            modulus_range=MODULUS_RANGE,
        )
        state = WorkflowState()
        steps = (workflow.setup_stage, workflow.share_keys_stage,
                 workflow.collect_masked_vectors_stage, workflow.unmask_stage)
        total = 0.0
        for index, (name, step) in enumerate(zip(FLOWER_STAGES, steps, strict=True)):
            grid.stage = index
            before = grid.transport_seconds
            start = time.perf_counter()
            ok = step(grid, context, state)
            wall = time.perf_counter() - start
            transport = grid.transport_seconds - before
            total += wall - transport
            events.put(("stage", rep, name, wall - transport, transport))
            if not ok:
                raise RuntimeError(f"Flower's workflow halted in its {name} stage")
        params = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        mean = parameters_to_ndarrays(params)[0]  # FedAvg of weight-1 clients: the mean
        error = float(np.abs(mean * len(survivors) - plain).max())
        events.put(("done", rep, {"max_error": error, "error_bound": bound,
                                  "survivors": len(state.active_node_ids)}))
        if total > FLOWER_REPEAT_LIMIT:
            break


def run_flower(setting: Setting, dropped: list[int], repeats: int, cap: float,
               length: int) -> dict[str, Any]:
    spec = {"n": setting.n, "length": length, "seed": SEED, "dropped": dropped,
            "num_shares": setting.num_shares, "threshold": setting.threshold,
            "repeats": repeats}
    context = mp.get_context("spawn")
    events = context.Queue()
    process = context.Process(target=flower_worker, args=(spec, events), daemon=True)
    process.start()
    stages: dict[int, dict[str, float]] = {}
    transport: dict[int, float] = {}
    done: dict[int, dict[str, Any]] = {}
    error = None
    timed_out = False
    deadline = time.monotonic() + cap
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        try:
            event = events.get(timeout=min(remaining, 1.0))
        except queue_module.Empty:
            if not process.is_alive():
                error = error or f"Flower worker exited with code {process.exitcode}"
                break
            continue
        if event[0] == "stage":
            _, rep, name, seconds, moved = event
            stages.setdefault(rep, {})[name] = seconds
            transport[rep] = transport.get(rep, 0.0) + moved
        elif event[0] == "done":
            done[event[1]] = event[2]
        elif event[0] == "error":
            error = event[1]
        elif event[0] == "finished":
            break
    if timed_out or process.is_alive():
        process.terminate()  # our own child, by its handle
        process.join(10)
        if process.is_alive():
            process.kill()
    process.join()
    complete = sorted(done)
    out: dict[str, Any] = {"cap_seconds": cap, "timed_out": timed_out and not complete,
                           "error": error, "repeats": len(complete)}
    if complete:
        out["seconds"] = {s: median([stages[r][s] for r in complete]) for s in FLOWER_STAGES}
        out["total"] = median([sum(stages[r].values()) for r in complete])
        out["transport_seconds_excluded"] = median([transport[r] for r in complete])
        out["max_error"] = max(done[r]["max_error"] for r in complete)
        out["error_bound"] = done[complete[0]]["error_bound"]
        out["within_bound"] = all(done[r]["max_error"] <= done[r]["error_bound"]
                                  for r in complete)
        out["runs"] = [{"seconds": stages[r], **done[r]} for r in complete]
    else:  # capped (or failed) in its first round: what it finished, and a lower bound
        partial = stages.get(0, {})
        out["seconds"] = {s: partial.get(s) for s in FLOWER_STAGES}
        out["total_at_least"] = cap if timed_out else None
    return out


# --------------------------------------------------------------------------- CKKS
def run_ckks(vectors: np.ndarray) -> dict[str, Any]:
    from fedge.federated.encryption import CKKSAggregator
    from fedge.federated.messages import ClientUpdate

    start = time.perf_counter()
    aggregator = CKKSAggregator.generate_keys()
    keygen = time.perf_counter() - start
    updates = [ClientUpdate(client_id=f"client-{i}", round=1, parameters=[v], num_examples=1)
               for i, v in enumerate(vectors)]
    encrypt_each = []
    payloads = []
    for update in updates:
        start = time.perf_counter()
        payloads.append(aggregator.encode(update, 1.0))
        encrypt_each.append(time.perf_counter() - start)
    start = time.perf_counter()
    encrypted_sum = aggregator.add_encrypted(payloads)
    add = time.perf_counter() - start
    start = time.perf_counter()
    decrypted = aggregator.key_holder.decrypt_detailed(encrypted_sum)
    decrypt = time.perf_counter() - start
    plain = np.sum(vectors, axis=0)
    error = float(np.abs(decrypted.parameters[0] - plain).max())
    return {
        "n_clients": len(vectors), "length": int(vectors.shape[1]),
        "seconds": {"keygen": keygen, "encrypt_total": sum(encrypt_each),
                    "encrypt_per_client": median(encrypt_each), "add": add,
                    "decrypt": decrypt},
        "total": sum(encrypt_each) + add + decrypt,
        "max_error": error, "documented_error_bound": decrypted.error_bound,
        "total_weight": decrypted.total_weight, "count": decrypted.count,
        "payload_bytes": len(payloads[0].to_bytes()),
        "met": error <= TARGETS["ckks_error"],
    }


# --------------------------------------------------------------------------- report
def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def flower_total(flower: dict[str, Any]) -> str:
    if flower.get("total") is not None:
        return fmt(flower["total"])
    if flower.get("timed_out"):
        return f"> {flower['cap_seconds']:.0f} (capped)"
    return "failed"


def ratio_of(row: dict[str, Any]) -> tuple[float | None, str]:
    """fedge / Flower; a capped Flower run gives an upper bound on the ratio."""
    fedge, flower = row["fedge"]["total"], row["flower"]
    if flower.get("total") is not None:
        value = fedge / flower["total"]
        return value, f"{value:.3f}"
    if flower.get("timed_out"):
        value = fedge / flower["cap_seconds"]
        return value, f"< {value:.3f}"
    return None, "-"


def report(rows: list[dict[str, Any]], ckks: dict[str, Any], console: Console) -> dict:
    stage_table = Table(title="Time per stage, seconds: fedge / Flower (computation only)")
    stage_table.add_column("configuration")
    stage_table.add_column("shares / t", justify="right")
    for fedge_stage, flower_stage in zip(STAGES, FLOWER_STAGES, strict=True):
        stage_table.add_column(f"{fedge_stage}\n({flower_stage})", justify="right")
    stage_table.add_column("total", justify="right")
    stage_table.add_column("fedge / Flower", justify="right")
    totals = Table(title="Correctness and overhead")
    for name in ("configuration", "fedge max error (bound)", "Flower max error (bound)",
                 "numpy sum", "fedge overhead", "fedge <= 0.2x"):
        totals.add_column(name, justify="left" if name == "configuration" else "right")
    ratios_met = []
    sums_ok = []
    for row in rows:
        s, fedge, flower = row["setting"], row["fedge"], row["flower"]
        label = f"{s['protocol']} n={s['n']} {100 * s['dropout']:.0f}%"
        cells = [f"{fmt(fedge['seconds'][a])} / {fmt(flower['seconds'][b])}"
                 for a, b in zip(STAGES, FLOWER_STAGES, strict=True)]
        value, text = ratio_of(row)
        met = value is not None and value <= TARGETS["time_ratio"]
        row["ratio"] = value
        row["ratio_is_upper_bound"] = flower.get("total") is None and value is not None
        row["time_target_met"] = met
        ratios_met.append(met)
        stage_table.add_row(label, f"{s['num_shares']} / {s['threshold']}", *cells,
                            f"{fmt(fedge['total'])} / {flower_total(flower)}", text)
        flower_ok = flower.get("within_bound")
        sums_ok.append(fedge["within_bound"] and flower_ok is not False)
        flower_err = (f"{flower['max_error']:.1e} ({flower['error_bound']:.1e})"
                      if flower.get("max_error") is not None else "-")
        plain = row["plain_sum_seconds"]
        totals.add_row(
            label,
            f"{fedge['max_error']:.1e} ({fedge['error_bound']:.1e})"
            + ("" if fedge["within_bound"] else " OVER"),
            flower_err + ("" if flower_ok is not False else " OVER"),
            f"{1000 * plain:.1f} ms",
            f"{fedge['total'] / plain:.0f}x (+{fedge['total'] - plain:.2f} s)",
            "MET" if met else "MISSED",
        )
    console.print(stage_table)
    console.print(totals)
    he = Table(title=f"CKKS (TenSEAL): {ckks['n_clients']} clients x {ckks['length']:,} floats")
    for name in ("keygen", "encrypt (all / per client)", "add", "decrypt", "max error (bound)",
                 "payload", "error <= 1e-6"):
        he.add_column(name, justify="right")
    sec = ckks["seconds"]
    he.add_row(
        f"{sec['keygen']:.2f} s", f"{sec['encrypt_total']:.2f} / {sec['encrypt_per_client']:.3f} s",
        f"{1000 * sec['add']:.0f} ms", f"{1000 * sec['decrypt']:.0f} ms",
        f"{ckks['max_error']:.1e} ({ckks['documented_error_bound']:.1e})",
        f"{ckks['payload_bytes'] / 1e6:.1f} MB", "MET" if ckks["met"] else "MISSED",
    )
    console.print(he)
    verdicts = {
        "time_ratio_all_met": all(ratios_met),
        "time_ratio_met": sum(ratios_met), "configurations": len(rows),
        "sums_within_bounds": all(sums_ok),
        "ckks_error_met": ckks["met"],
    }
    console.print(
        f"targets: fedge <= {TARGETS['time_ratio']}x Flower in {sum(ratios_met)}/{len(rows)} "
        f"configurations; recovered sums within their bounds: "
        f"{'MET' if all(sums_ok) else 'MISSED'}; CKKS error <= 1e-6: "
        f"{'MET' if ckks['met'] else 'MISSED'}"
    )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1-2 minute smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per configuration")
    parser.add_argument("--flower-timeout", type=float, default=None,
                        help="cap on one Flower configuration, seconds (default 300; quick 40)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON path (default {RESULTS.relative_to(ROOT)}; none with --quick)")
    args = parser.parse_args()
    if importlib.util.find_spec("flwr") is None:
        parser.error("flwr is not installed: pip install -e '.[bench]' (or 'flwr>=1.42')")
    clients = QUICK_CLIENTS if args.quick else CLIENTS
    repeats = 1 if args.quick else args.repeats
    cap = args.flower_timeout or (40.0 if args.quick else 300.0)
    console = Console()
    if not console.is_terminal:  # piped or logged: room for the tables
        console = Console(width=170)
    started = time.perf_counter()
    settings = settings_for(clients)
    rows: list[dict[str, Any]] = []
    data = {n: make_vectors(n, LENGTH) for n in clients}
    for index, setting in enumerate(settings, 1):
        vectors = data[setting.n]
        dropped = dropped_indices(setting.n, setting.dropout)
        console.print(f"[{index}/{len(settings)}] {setting.label} "
                      f"(shares {setting.num_shares}, threshold {setting.threshold})")
        fedge = run_fedge(setting, vectors, dropped, repeats)
        flower = run_flower(setting, dropped, repeats, cap, LENGTH)
        plain = time_plain_sum(vectors, dropped)
        moved = flower.get("transport_seconds_excluded")
        console.print(f"    fedge {fmt(fedge['total'])} s, Flower {flower_total(flower)} s"
                      + (f" (+{moved:.2f} s protobuf round trips, excluded)" if moved else "")
                      + (f" [red]{flower['error']}[/red]" if flower.get("error") else ""))
        rows.append({
            "setting": {"protocol": setting.protocol, "n": setting.n,
                        "dropout": setting.dropout, "dropped": len(dropped),
                        "num_shares": setting.num_shares, "threshold": setting.threshold,
                        "fedge_neighbours": setting.neighbours},
            "fedge": fedge, "flower": flower, "plain_sum_seconds": plain,
        })
    console.print(f"CKKS: {CKKS_CLIENTS} clients x {LENGTH:,}")
    ckks = run_ckks(make_vectors(CKKS_CLIENTS, LENGTH))
    verdicts = report(rows, ckks, console)
    total = time.perf_counter() - started
    console.print(f"total {total:.0f} s")
    output = args.output if args.output is not None else (None if args.quick else RESULTS)
    if output is None:
        console.print("--quick: no JSON written (pass --output PATH to keep one)")
        return
    result = {
        "settings": {
            "quick": args.quick, "length": LENGTH, "clients": list(clients),
            "dropouts": list(DROPOUTS), "dropout_stage": "after sharing keys, before the "
            "masked input (fedge drop stage 2; Flower: no reply from collect_masked_vectors on)",
            "repeats": repeats, "flower_repeat_limit_seconds": FLOWER_REPEAT_LIMIT,
            "flower_timeout_seconds": cap, "seed": SEED,
            "values": f"uniform in [-{VALUE_RANGE}, {VALUE_RANGE}]",
            "fedge": {"scale_bits": SCALE_BITS, "bound": BOUND},
            "flower": {"clipping_range": CLIPPING_RANGE,
                       "quantization_range": QUANTIZATION_RANGE,
                       "modulus_range": MODULUS_RANGE, "max_weight": MAX_WEIGHT,
                       "client_weight": 1},
            "targets": TARGETS,
            "stages": dict(zip(STAGES, FLOWER_STAGES, strict=True)),
        },
        "provenance": provenance(
            [ROOT / "src" / "fedge" / "federated" / n
             for n in ("secure_aggregation.py", "shamir.py", "encryption.py")],
            ("flwr", "cryptography", "pycryptodome", "tenseal", "numpy"),
        ),
        "rows": rows,
        "ckks": ckks,
        "verdicts": verdicts,
        "total_seconds": total,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"wrote {output}")


if __name__ == "__main__":
    main()
