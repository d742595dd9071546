"""Federated histogram boosting on Flower: the same server, remote clients.

The server side is :class:`~fedge.federated.trees_histogram.FederatedHistGradientBoosting`
itself (bin-edge agreement, the checks of every histogram, split finding, dropouts and
restarts are its own code); only its clients live on SuperNodes. A
:class:`RemoteHistogramClient` stands for one SuperNode's
:class:`~fedge.federated.trees_histogram.HistogramClient`: every method call is one message
type (``query.fedge_hist_<method>``), its numpy arguments travel in an ``ArrayRecord`` and its
small settings in a ``ConfigRecord``; on the node the ClientApp rebuilds the HistogramClient
over its CSV and the state it keeps between messages (targets, predictions, quantized
gradients, row positions, bin edges) in the node's ``Context.state``, which never leaves the
node.

Round trips: calls that return nothing (``start``, ``gradients``, ``reset_positions``,
``apply_splits``, ``apply_leaves``) are queued and ride, in order, on the node's next request;
and :class:`FlowerHistGradientBoosting` sends each request to every participant at once (one
exchange), so a boosting round of depth ``d`` costs ``d + 1`` exchanges (one per level, the last
one for the leaves' totals), plus two for the set-up (bin edges, label counts).

A node that does not answer (or answers with an error) within the timeout is lost for the rest
of the run: the server restarts the round from the root without it, exactly as it does for an
in-process dropout.

Secure aggregation (``secure_aggregation="secagg"`` / ``"secagg+"``): every sum (grid counts,
label counts, target sum, each level's histograms) is one SecAgg round of fedge's protocol. The
request carries the sum's public parameters (threshold, neighbours, bound, round id and seed);
the node computes its answer, keeps it in its local state and replies only with its advertised
keys and the answer's shape; then the three remaining stages (shares, masked input, unmasking)
run as in a secure training round (:meth:`FlowerTransport.secure_stages`). The server sees the
sum and nothing else: four exchanges per sum instead of one. A node that drops out of a stage
is out of that sum and lost for the run, and the round restarts without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError, SecureAggregationError
from fedge.federated.flower import (
    SECURE,
    FlowerProtocolError,
    FlowerTransport,
    NodeInfo,
    _decode_keys,
    _dump_private,
    _encode_keys,
    _record,
    _reply_content,
    _state_set,
    client_app,
    federation,
    read_node_table,
)
from fedge.federated.trees_histogram import (
    BinEdges,
    FederatedHistGradientBoosting,
    HistogramClient,
)

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fedge.federated.flower_trees needs Flower: pip install 'fedge[flower]'") \
        from exc

__all__ = [
    "FlowerHistGradientBoosting",
    "RemoteHistogramClient",
    "hist_gbdt_from_run_config",
    "histogram_client_from_node_config",
    "parse_feature_range",
    "remote_clients",
]

log = logging.getLogger("fedge.federated")

PREFIX = "fedge_hist_"
ONE_WAY = ("start", "gradients", "reset_positions", "apply_splits", "apply_leaves")
REQUESTS = ("sketch", "grid_counts", "label_counts", "target_exponent", "target_sum",
            "histograms")
HIST_STATE = "fedge.hist"
SUM_SHAPE = "fedge.hist.shape"  # a secure sum's reply: the shape of the (kept) answer
_SPLITS = ("is_split", "feature", "edge", "missing_left", "left", "right")

Call = tuple[str, dict[str, Any], dict[str, np.ndarray]]


# ------------------------------------------------------------------------------ (de)serialization
def _arrays(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    try:
        return {k: np.asarray(v.numpy()) for k, v in record.items()}
    except Exception as exc:  # a corrupt payload
        raise FlowerProtocolError(f"arrays do not decode: {exc}") from None


def _array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _encode_calls(calls: Sequence[Call]) -> RecordDict:
    content = RecordDict({})
    for i, (method, config, arrays) in enumerate(calls):
        content[f"{HIST_STATE}.{i}.{method}"] = ConfigRecord(dict(config))
        content[f"{HIST_STATE}.{i}.{method}.arrays"] = _array_record(arrays)
    return content


def _decode_calls(content: RecordDict) -> list[Call]:
    calls: dict[int, Call] = {}
    for key in content:
        parts = key.split(".")
        if len(parts) != 4 or ".".join(parts[:2]) != HIST_STATE:
            continue
        try:
            i = int(parts[2])
        except ValueError:
            raise FlowerProtocolError(f"malformed call record {key!r}") from None
        method = parts[3]
        if method not in ONE_WAY + REQUESTS:
            raise FlowerProtocolError(f"unknown histogram client method {method!r}")
        config = _record(content, key, ConfigRecord)
        arrays = _arrays(_record(content, f"{key}.arrays", ArrayRecord))
        calls[i] = (method, dict(config), arrays)
    if sorted(calls) != list(range(len(calls))):
        raise FlowerProtocolError("histogram calls must be numbered 0..n-1")
    return [calls[i] for i in range(len(calls))]


def _call_key(call: Call) -> str:
    method, config, arrays = call
    digest = hashlib.sha256(method.encode())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        digest.update(f"{k}{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _edges_arrays(edges: BinEdges, prefix: str = "edge") -> dict[str, np.ndarray]:
    return {f"{prefix}.{f}": e for f, e in enumerate(edges.edges)}


def _indexed(arrays: Mapping[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    n = sum(1 for k in arrays if k.startswith(prefix + "."))
    try:
        return [arrays[f"{prefix}.{f}"] for f in range(n)]
    except KeyError:
        raise FlowerProtocolError(f"{prefix} arrays must be numbered 0..n-1") from None


def _encode_sum_config(config: Any) -> ConfigRecord:
    """A secure sum's public parameters (its length comes back from the nodes)."""
    return ConfigRecord({
        "threshold": int(config.threshold),
        "neighbours": -1 if config.neighbours is None else int(config.neighbours),
        "bound": float(config.bound),
        "round_id": int(config.round_id),
        "round_seed": bytes(config.round_seed),
    })


def _decode_sum_config(record: ConfigRecord, length: int) -> Any:
    from fedge.federated.secure_aggregation import SecAggConfig

    try:
        neighbours = int(record["neighbours"])
        return SecAggConfig(
            threshold=int(record["threshold"]), vector_length=int(length),
            neighbours=None if neighbours < 0 else neighbours, scale_bits=0,
            bound=float(record["bound"]), round_id=int(record["round_id"]),
            round_seed=bytes(record["round_seed"]),
        )
    except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
        raise FlowerProtocolError(f"malformed secure sum settings: {exc}") from None


# --------------------------------------------------------------------------------- the server side
class RemoteHistogramClient(HistogramClient):
    """A SuperNode's :class:`HistogramClient`, as the boosting server sees it.

    Calls without an answer are queued; a request is answered from what
    :class:`FlowerHistGradientBoosting` fetched for every participant at once, or else
    sent to this node alone. The rows stay on the node (``X`` and ``y`` are not here)."""

    def __init__(self, transport: FlowerTransport, info: NodeInfo) -> None:
        # no super().__init__: the rows are on the node
        self.client_id = info.client_id
        self.info = info
        self.transport = transport
        self.pending: list[Call] = []
        self.ready: dict[str, Any] = {}  # answers fetched ahead, by call key
        self.lost: str | None = None  # why the node is out of the run
        self._recorded: list[Call] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.info.num_examples)

    @property
    def n_features(self) -> int:
        return int(self.info.n_features)

    # -- the wire -----------------------------------------------------------------------
    def record(self, ask: Any) -> list[Call]:
        """The requests ``ask(self)`` makes, recorded instead of sent (the caller sends them
        to every participant in one exchange)."""
        self._recorded = []
        try:
            ask(self)
        finally:
            recorded, self._recorded = self._recorded, None
        return recorded

    def _one_way(self, method: str, config: dict[str, Any] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> None:
        if self._recorded is None:
            self.pending.append((method, config or {}, arrays or {}))

    def _request(self, method: str, config: dict[str, Any] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> Any:
        call: Call = (method, config or {}, arrays or {})
        if self._recorded is not None:
            self._recorded.append(call)
            return None
        key = _call_key(call)
        if key not in self.ready:
            _fetch([self], [[call]])
        return self.ready.pop(key, None)

    # -- set-up -------------------------------------------------------------------------
    def sketch(self, size: int) -> Any:
        return self._request("sketch", {"size": int(size)})

    def grid_counts(self, grid: Sequence[np.ndarray]) -> Any:
        return self._request("grid_counts", {}, {f"grid.{f}": g for f, g in enumerate(grid)})

    def label_counts(self, classes: np.ndarray | None) -> Any:
        config = {"classes": "null" if classes is None else json.dumps(classes.tolist())}
        return self._request("label_counts", config)

    def target_exponent(self) -> Any:
        return self._request("target_exponent")

    def target_sum(self, scale_bits: int) -> Any:
        return self._request("target_sum", {"scale_bits": int(scale_bits)})

    def start(self, edges: BinEdges, base_score: np.ndarray) -> None:
        self._one_way("start", {}, {**_edges_arrays(edges),
                                    "base_score": np.asarray(base_score, dtype=np.float64)})

    # -- each round ---------------------------------------------------------------------
    def gradients(self, loss: str, scale_bits: int, bound_bits: int) -> None:
        self._one_way("gradients", {"loss": str(loss), "scale_bits": int(scale_bits),
                                    "bound_bits": int(bound_bits)})

    def reset_positions(self) -> None:
        self._one_way("reset_positions")

    def histograms(self, nodes: np.ndarray, node_output: np.ndarray, *,
                   totals_only: bool = False) -> Any:
        return self._request("histograms", {"totals_only": bool(totals_only)}, {
            "nodes": np.asarray(nodes, dtype=np.int64),
            "node_output": np.asarray(node_output, dtype=np.int64),
        })

    def apply_splits(self, splits: Mapping[str, np.ndarray]) -> None:
        self._one_way("apply_splits", {}, {k: np.asarray(splits[k]) for k in _SPLITS})

    def apply_leaves(self, leaf_value: np.ndarray) -> None:
        self._one_way("apply_leaves", {}, {"leaf_value": np.asarray(leaf_value, np.float64)})


def _fetch(clients: Sequence[RemoteHistogramClient], requests: Sequence[list[Call]]) -> None:
    """One exchange: each client's queued calls and its requests, to every node at once; the
    answers are kept in ``client.ready``. A node that fails is lost for the run."""
    live = [(c, r) for c, r in zip(clients, requests, strict=True) if c.lost is None and r]
    if not live:
        return
    transport = live[0][0].transport
    messages = {}
    for client, calls in live:
        messages[client.info.node_id] = (_encode_calls([*client.pending, *calls]),
                                         f"query.{PREFIX}{calls[0][0]}")
    replies = transport._exchange(messages, transport.timeout)
    for client, calls in live:
        client.pending = []  # sent: applied by the node, or the node is lost
        reply = replies.get(client.info.node_id)
        try:
            if reply is None:
                raise FlowerProtocolError(f"timed out after {transport.timeout:g} s")
            if reply.has_error():
                raise FlowerProtocolError(f"raised on its node: {reply.error.reason}")
            for i, call in enumerate(calls):
                client.ready[_call_key(call)] = _decode_answer(call[0], reply.content, i)
        except FlowerProtocolError as exc:
            _lose(client, str(exc))


def _lose(client: RemoteHistogramClient, why: str) -> None:
    client.lost = why
    client.ready.clear()
    log.warning("fedge: SuperNode of %r is out of the boosting run: %s", client.client_id, why)


def _decode_answer(method: str, content: RecordDict, i: int) -> Any:
    key = f"{HIST_STATE}.answer.{i}"
    if method == "target_exponent":
        value = _record(content, key, ConfigRecord).get("value")
        if isinstance(value, bool) or not isinstance(value, int):
            raise FlowerProtocolError(f"target_exponent must be an integer, got {value!r}")
        return value
    arrays = _arrays(_record(content, f"{key}.arrays", ArrayRecord))
    if method == "sketch":
        if "counts" not in arrays:
            raise FlowerProtocolError("a sketch needs its counts")
        return _indexed(arrays, "points"), arrays["counts"]
    if "value" not in arrays:
        raise FlowerProtocolError(f"{method}: no answer")
    return arrays["value"]


class FlowerHistGradientBoosting(FederatedHistGradientBoosting):
    """:class:`FederatedHistGradientBoosting` over :class:`RemoteHistogramClient` objects:
    the same server code; each request goes to all its participants in one exchange."""

    def fit(self, clients: Sequence[Any]) -> FlowerHistGradientBoosting:
        if self.dropouts:
            raise InvalidInputError("simulated dropouts are for in-process runs")
        if not all(isinstance(c, RemoteHistogramClient) for c in clients):
            raise InvalidInputError("FlowerHistGradientBoosting boosts RemoteHistogramClient")
        super().fit(clients)
        return self

    def _prefetch(self, ids: Sequence[str], ask: Any) -> list[str]:
        clients = [self._clients[c] for c in ids]
        requests = []
        for client in clients:
            recorded = client.record(ask)
            if recorded and recorded[0][0] == "label_counts" and \
                    recorded[0][1]["classes"] == "null" and self.target_bound is None:
                recorded.append(("target_exponent", {}, {}))  # asked next: fetch it now
            requests.append(recorded)
        _fetch(clients, requests)
        return [c.client_id for c in clients if c.lost is None]

    def _collect(self, what: str, participants: list[str], ask: Any, *, check: Any = None,
                 drops: Mapping[str, int] | None = None) -> tuple[np.ndarray, dict]:
        if self._secure_cfg is not None:
            return self._secure_collect(what, participants, ask)
        answered = self._prefetch(participants, ask)
        return super()._collect(what, answered, ask, check=check, drops=drops)

    def _secure_collect(self, what: str, participants: list[str],
                        ask: Any) -> tuple[np.ndarray, dict]:
        """One secure sum of the participants' answers to ``ask`` (see the module docstring)."""
        clients = [self._clients[c] for c in participants if self._clients[c].lost is None]
        if len(clients) < 2:
            raise SecureAggregationError(
                f"{what}: secure aggregation needs at least two clients per sum, "
                f"{len(clients)} left"
            )
        calls = [client.record(ask)[0] for client in clients]
        settings = self._sum_config(len(clients), 1)
        transport = clients[0].transport
        messages = {}
        for client, call in zip(clients, calls, strict=True):
            content = _encode_calls([*client.pending, call])
            content[SECURE] = _encode_sum_config(settings)
            messages[client.info.node_id] = (content, f"query.{PREFIX}{call[0]}")
        start = time.perf_counter()
        replies = transport._exchange(messages, transport.timeout)
        keys, shapes = {}, {}
        for client in clients:
            client.pending = []
            try:
                body = _reply_content(replies.get(client.info.node_id), transport.timeout)
                keys[client.client_id] = _decode_keys(body)
                shape = _record(body, SUM_SHAPE, ConfigRecord).get("shape")
                if not isinstance(shape, list) or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
                ):
                    raise FlowerProtocolError(f"malformed answer shape {shape!r}")
                shapes[client.client_id] = tuple(shape)
            except FlowerProtocolError as exc:
                keys.pop(client.client_id, None)
                _lose(client, str(exc))
        if not shapes:
            raise SecureAggregationError(f"{what}: no client answered")
        shape = Counter(shapes.values()).most_common(1)[0][0]
        for cid, other in shapes.items():
            if other != shape:
                keys.pop(cid)
                _lose(self._clients[cid], f"answered {what} of shape {other}, not {shape}")
        config = dataclasses.replace(settings, vector_length=int(np.prod(shape)))
        encoded, survivors = transport.secure_stages(keys, config, {})
        self.secure_seconds_ += time.perf_counter() - start
        for cid in keys:
            if cid not in survivors:
                _lose(self._clients[cid], f"dropped out of the secure sum of {what}")
        self._uploaded += int(np.prod(shape)) * len(survivors)
        total = np.asarray(encoded).view(np.int64).reshape(shape).copy()
        return total, {c: np.zeros(0, dtype=np.int64) for c in survivors}

    def _agree_edges(self, ids: list[str], F: int) -> BinEdges:
        binning = self.binning
        if (binning is None and self.feature_range is None) or binning == "sketch":
            ids = self._prefetch(ids, lambda c: c.sketch(self.sketch_size))
        return super()._agree_edges(ids, F)

    def _alive(self, ids: list[str]) -> list[str]:
        return [c for c in super()._alive(ids) if self._clients[c].lost is None]


def remote_clients(transport: FlowerTransport,
                   nodes: Mapping[str, NodeInfo] | None = None) -> list[RemoteHistogramClient]:
    """One :class:`RemoteHistogramClient` per SuperNode that introduced itself."""
    nodes = transport.nodes if nodes is None else nodes
    return [RemoteHistogramClient(transport, nodes[c]) for c in sorted(nodes)]


def parse_feature_range(text: str, n_features: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Public bounds from a run config string: ``""`` (none), ``"LOW,HIGH"`` (every feature)
    or ``"L1:H1,L2:H2,..."`` (one pair per feature, in the nodes' column order)."""
    text = text.strip()
    if not text:
        return None
    cells = [c.strip() for c in text.split(",")]
    try:
        if all(":" not in c for c in cells) and len(cells) == 2:
            lo, hi = np.full(n_features, float(cells[0])), np.full(n_features, float(cells[1]))
        else:
            pairs = [tuple(float(v) for v in c.split(":")) for c in cells]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("each feature needs LOW:HIGH")
            lo, hi = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    except ValueError as exc:
        raise InvalidInputError(
            f"feature-range {text!r}: {exc}; use \"LOW,HIGH\" or \"L1:H1,L2:H2,...\""
        ) from None
    if lo.shape != (n_features,):
        raise InvalidInputError(
            f"feature-range gives {lo.shape[0]} bounds, the nodes have {n_features} features"
        )
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise InvalidInputError("feature-range needs finite bounds with HIGH > LOW")
    return lo, hi


def hist_gbdt_from_run_config(
    run_config: Mapping[str, Any], nodes: Mapping[str, NodeInfo]
) -> FlowerHistGradientBoosting:
    """The booster a run config describes (``model = "hist-gbdt"``): ``n-estimators`` (0: the
    ``rounds``), ``max-depth``, ``learning-rate`` (0: 0.1), ``bins``, ``feature-range`` and
    ``grid-size`` (bin edges from a public grid), ``secure-aggregation`` (every sum through
    SecAgg / SecAgg+; needs ``feature-range``); classification over ``classes`` (or the union
    of the nodes' labels) unless a node holds float targets."""
    from fedge.federated.flower import RUN_CONFIG_DEFAULTS

    cfg = {**RUN_CONFIG_DEFAULTS, **dict(run_config)}
    n_features, classes = federation(cfg, nodes)
    bounds = parse_feature_range(str(cfg["feature-range"]), n_features)
    secure = str(cfg["secure-aggregation"]).strip() or None
    if secure is not None and bounds is None:
        raise InvalidInputError(
            "secure aggregation of histograms needs public bin edges: set feature-range "
            "(the grid counts are then summed securely; a sketch would reveal each node's "
            "quantiles)"
        )
    n_estimators = int(cfg["n-estimators"]) or int(cfg["rounds"])
    rate = float(cfg["learning-rate"])
    return FlowerHistGradientBoosting(
        classes=classes,
        n_estimators=n_estimators,
        max_depth=int(cfg["max-depth"]),
        learning_rate=rate if rate > 0 else 0.1,
        max_bins=int(cfg["bins"]),
        feature_range=bounds,
        grid_size=int(cfg["grid-size"]),
        secure_aggregation=secure,
    )


def write_booster_outputs(booster: FederatedHistGradientBoosting, directory: str | Path) -> Path:
    """``model.json`` (the lite IR of the boosted trees) and ``history.json``."""
    from fedge import save

    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    save(booster.model_, out / "model.json")
    (out / "history.json").write_text(json.dumps(asdict(booster.history_), indent=1))
    return out


def run_hist_gbdt(transport: FlowerTransport, cfg: Mapping[str, Any],
                  nodes: Mapping[str, NodeInfo]) -> FlowerHistGradientBoosting:
    """The ServerApp's boosting run (``model = "hist-gbdt"``)."""
    booster = hist_gbdt_from_run_config(cfg, nodes)
    booster.fit(remote_clients(transport, nodes))
    for record in booster.history_.rounds:
        log.warning("fedge: tree %d: %d clients (%s), %d restarts, %.1f s", record.round + 1,
                    len(record.participants), ", ".join(record.participants), record.restarts,
                    record.seconds)
    if str(cfg.get("output-dir", "")).strip():
        out = write_booster_outputs(booster, str(cfg["output-dir"]))
        log.warning("fedge: wrote %s", out)
    return booster


# ----------------------------------------------------------------------------------- the node side
def histogram_client_from_node_config(node_config: Mapping[str, Any]) -> HistogramClient:
    """The SuperNode's :class:`HistogramClient` over its CSV (``data-file``, ``target``,
    ``client-id``: the same node config as the ClientApp's other models)."""
    X, y, cid = read_node_table(node_config)
    return HistogramClient(X, y, client_id=cid)


# What a HistogramClient keeps between calls, saved to / restored from Context.state.
_KEPT = {"target": "_target", "raw": "raw", "g": "_g", "h": "_h", "pos": "_pos"}


def _restore(context: Context) -> HistogramClient:
    client = histogram_client_from_node_config(context.node_config)
    record = context.state.get(HIST_STATE)
    if record is None:
        return client
    saved = _arrays(record)
    if "target" in saved:
        client._target = np.array(saved["target"], copy=True)
    edges = _indexed(saved, "edge")
    if edges:
        client.start(BinEdges(tuple(edges)), np.zeros(1))  # bins the rows again
    for key, attr in _KEPT.items():
        if key in saved:
            setattr(client, attr, np.array(saved[key], copy=True))
    return client


def _save(context: Context, client: HistogramClient) -> None:
    arrays = {key: getattr(client, attr) for key, attr in _KEPT.items()
              if getattr(client, attr, None) is not None}
    edges = getattr(client, "_edges", None)
    if edges is not None:
        arrays.update(_edges_arrays(edges))
    context.state[HIST_STATE] = _array_record(arrays)


def _run_call(client: HistogramClient, call: Call) -> Any:
    method, config, arrays = call
    try:
        if method == "start":
            return client.start(BinEdges(tuple(_indexed(arrays, "edge"))), arrays["base_score"])
        if method == "gradients":
            return client.gradients(str(config["loss"]), int(config["scale_bits"]),
                                    int(config["bound_bits"]))
        if method == "reset_positions":
            return client.reset_positions()
        if method == "apply_splits":
            return client.apply_splits({k: arrays[k] for k in _SPLITS})
        if method == "apply_leaves":
            return client.apply_leaves(arrays["leaf_value"])
        if method == "sketch":
            return client.sketch(int(config["size"]))
        if method == "grid_counts":
            return client.grid_counts(_indexed(arrays, "grid"))
        if method == "label_counts":
            classes = json.loads(str(config["classes"]))
            return client.label_counts(None if classes is None else np.asarray(classes))
        if method == "target_exponent":
            return client.target_exponent()
        if method == "target_sum":
            return client.target_sum(int(config["scale_bits"]))
        if method == "histograms":
            return client.histograms(arrays["nodes"], arrays["node_output"],
                                     totals_only=bool(config["totals_only"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed {method} call: {exc}") from None
    raise FlowerProtocolError(f"unknown histogram client method {method!r}")


def _encode_answer(method: str, value: Any, i: int, content: RecordDict) -> None:
    key = f"{HIST_STATE}.answer.{i}"
    if method == "target_exponent":
        content[key] = ConfigRecord({"value": int(value)})
    elif method == "sketch":
        points, counts = value
        content[f"{key}.arrays"] = _array_record(
            {**{f"points.{f}": p for f, p in enumerate(points)}, "counts": counts})
    else:
        content[f"{key}.arrays"] = _array_record({"value": value})


def _node_call(message: Message, context: Context) -> Message:
    kind = message.metadata.message_type.partition(".")[2]
    calls = _decode_calls(message.content)
    requests = [c for c in calls if c[0] in REQUESTS]
    if not requests or f"{PREFIX}{requests[0][0]}" != kind:
        raise FlowerProtocolError(f"a {kind} message must carry that request")
    secure = SECURE in message.content
    if secure and len(requests) != 1:
        raise FlowerProtocolError("a secure sum carries exactly one request")
    client = _restore(context)
    reply = RecordDict({})
    answered = 0
    for call in calls:
        value = _run_call(client, call)
        if call[0] not in REQUESTS:
            continue
        if secure:  # the answer stays here; only keys and its shape go back
            _secure_answer(client, value, message.content[SECURE], context, reply)
        else:
            _encode_answer(call[0], value, answered, reply)
        answered += 1
    _save(context, client)
    return Message(reply, reply_to=message)


def _secure_answer(client: HistogramClient, value: Any, settings: Any, context: Context,
                   reply: RecordDict) -> None:
    """Open a secure sum of ``value`` on this node: keep it with the protocol's state and
    put the advertised keys and the value's shape in ``reply``."""
    from fedge.federated.secure_aggregation import SecAggClient

    answer = np.ascontiguousarray(value)
    if answer.dtype != np.int64:
        raise FlowerProtocolError(f"a secure sum needs an int64 answer, got {answer.dtype}")
    if not isinstance(settings, ConfigRecord):
        raise FlowerProtocolError("malformed secure sum settings")
    config = _decode_sum_config(settings, answer.size)
    protocol = SecAggClient(client.client_id, config)
    keys = protocol.advertise_keys()
    vector = answer.ravel().view(np.uint64)
    _state_set(context, "secagg", _dump_private({"client": protocol, "vector": vector}))
    reply[SECURE] = _encode_keys(keys)
    reply[SUM_SHAPE] = ConfigRecord({"shape": [int(d) for d in answer.shape]})


for _method in REQUESTS:
    client_app.query(PREFIX + _method)(_node_call)
