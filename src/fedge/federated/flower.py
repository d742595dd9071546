"""Flower as the multi-machine engine: Flower carries the messages, fedge decides.

A federation across machines is the same :class:`~fedge.federated.server.FederatedServer`
(strategies, privacy accounting, update validation) and the same
:class:`~fedge.federated.client.FederatedClient` as in-process; only the transport changes.
:class:`FlowerTransport` implements fedge's :class:`~fedge.federated.transport.Transport`
on a Flower ServerApp's ``Grid`` (flwr >= 1.42, Message API): it sends one Message per
selected SuperNode and pulls the replies until a timeout; a node that answers with an error,
or not at all, becomes a failed :class:`~fedge.federated.transport.FitOutcome`, exactly like
a client that raised or timed out in-process. :data:`client_app` answers those messages with
a ``FederatedClient`` over the SuperNode's own CSV (node config ``data-file``, ``target``,
``client-id``); :data:`server_app` runs ``FederatedServer.fit`` configured by the run config.

What travels (a Flower ``RecordDict``):

- ``fedge.parameters`` (ArrayRecord): the parameter arrays, in the model's order;
- ``fedge.instructions`` (ConfigRecord): the round and the strategy's per-round settings, and
  the :class:`~fedge.federated.training.ModelSpec` as JSON on a node's first message (the
  node keeps it in its run state);
- ``fedge.update`` (ConfigRecord) and ``fedge.metrics`` (MetricRecord): the client id,
  round, row count and training report of a :class:`~fedge.federated.messages.ClientUpdate`.

Everything received is checked before it is used (:class:`FlowerProtocolError` names what
is wrong); the server's ``receive_update`` then validates the update as it validates any.

Secure aggregation (``secagg`` / ``secagg+``) runs fedge's own protocol over Flower
messages: the training message carries the round's public protocol parameters and each
client answers with its advertised keys; then three more exchanges (shares, masked input,
unmasking) drive :class:`~fedge.federated.secure_aggregation.SecAggServer` here and one
:class:`~fedge.federated.secure_aggregation.SecAggClient` per SuperNode. Flower starts a new
ClientApp process per message, so a client's protocol state (its private keys and shares)
lives between stages in the SuperNode's local run state (``Context.state``), which never
leaves the node.
"""

from __future__ import annotations

import copyreg
import io
import json
import logging
import math
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import FedgeError, InvalidInputError, SecureAggregationError
from fedge.federated.messages import ClientUpdate, FitInstructions, Parameters
from fedge.federated.secure import SecureResult, SecureSession, masked_config
from fedge.federated.training import ModelKind, ModelSpec
from fedge.federated.transport import PUBLIC_REPORT, FitOutcome, SecureOutcome

try:
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fedge.federated.flower needs Flower: pip install 'fedge[flower]'"
    ) from exc

__all__ = [
    "APP_DIR",
    "FlowerProtocolError",
    "FlowerTransport",
    "NodeInfo",
    "client_app",
    "client_from_node_config",
    "content_to_instructions",
    "content_to_update",
    "federation",
    "instructions_to_content",
    "read_node_table",
    "run_on_superlink",
    "server_app",
    "server_from_run_config",
    "spec_from_json",
    "spec_to_json",
    "update_to_content",
    "write_outputs",
]

log = logging.getLogger("fedge.federated")

HELLO = "query.fedge_hello"
FIT = "train"
SECAGG_SHARES = "train.fedge_secagg_shares"
SECAGG_MASKED = "train.fedge_secagg_masked"
SECAGG_UNMASK = "train.fedge_secagg_unmask"

PARAMETERS = "fedge.parameters"
INSTRUCTIONS = "fedge.instructions"
UPDATE = "fedge.update"
METRICS = "fedge.metrics"
SECURE = "fedge.secure"
HELLO_REPLY = "fedge.node"
STATE = "fedge.state"


class FlowerProtocolError(FedgeError):
    """A Flower message that is not what fedge's protocol expects (missing or malformed)."""


# ------------------------------------------------------------------------------ (de)serialization
def parameters_to_record(parameters: Sequence[np.ndarray]) -> ArrayRecord:
    """Parameter arrays as an ArrayRecord (keys ``"0"``, ``"1"``, ... keep the order)."""
    return ArrayRecord([np.asarray(p) for p in parameters])


def record_to_parameters(record: Any, *, dtype_kind: str = "f") -> Parameters:
    """The arrays of an ArrayRecord in order, checked: keys ``0..n-1``, numeric dtype."""
    if not isinstance(record, ArrayRecord):
        raise FlowerProtocolError(f"parameters must be an ArrayRecord, got {type(record).__name__}")
    keys = list(record.keys())
    if keys != [str(i) for i in range(len(keys))]:
        raise FlowerProtocolError(f"parameter keys must be 0..n-1 in order, got {keys[:5]}")
    try:
        arrays = record.to_numpy_ndarrays()
    except Exception as exc:  # a corrupt payload
        raise FlowerProtocolError(f"parameters do not decode: {exc}") from None
    for i, a in enumerate(arrays):
        if a.dtype.kind != dtype_kind:
            raise FlowerProtocolError(
                f"parameter {i} has dtype {a.dtype}, expected kind {dtype_kind!r}"
            )
    return [np.array(a, copy=True) for a in arrays]


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError


def spec_to_json(spec: ModelSpec) -> str:
    """A :class:`ModelSpec` as JSON (estimator parameters that are not JSON are dropped: only
    the server, which holds the estimator, builds estimators)."""
    params = {}
    for k, v in spec.estimator_params.items():
        try:
            json.dumps(v, default=_json_value)
        except (TypeError, ValueError):
            continue
        params[k] = v
    return json.dumps({
        "kind": spec.kind.value,
        "n_features": spec.n_features,
        "classes": None if spec.classes is None else spec.classes.tolist(),
        "hidden_layer_sizes": list(spec.hidden_layer_sizes),
        "activation": spec.activation,
        "l2": spec.l2,
        "fit_intercept": spec.fit_intercept,
        "loss": spec.loss,
        "estimator_name": spec.estimator_name,
        "estimator_params": params,
    }, default=_json_value)


def spec_from_json(text: str) -> ModelSpec:
    """The :class:`ModelSpec` of :func:`spec_to_json` (validated by ``ModelSpec`` itself)."""
    try:
        data = json.loads(text)
        return ModelSpec(
            kind=ModelKind(data["kind"]),
            n_features=data["n_features"],
            classes=None if data["classes"] is None else np.asarray(data["classes"]),
            hidden_layer_sizes=tuple(data["hidden_layer_sizes"]),
            activation=data["activation"],
            l2=float(data["l2"]),
            fit_intercept=bool(data["fit_intercept"]),
            loss=data["loss"],
            estimator_name=data["estimator_name"],
            estimator_params=data["estimator_params"],
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError, FedgeError) as exc:
        raise FlowerProtocolError(f"model spec does not decode: {exc}") from None


_CONFIG_TYPES = (bool, int, float, str)


def instructions_to_content(
    instructions: FitInstructions, spec: ModelSpec | None = None
) -> RecordDict:
    """A round's instructions as a RecordDict; ``spec`` (JSON) rides along when given."""
    config: dict[str, Any] = {"round": int(instructions.round)}
    for key, value in instructions.config.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, _CONFIG_TYPES):
            raise InvalidInputError(f"round setting {key!r}={value!r} is not a scalar")
        config[f"config.{key}"] = value
    if spec is not None:
        config["spec"] = spec_to_json(spec)
    return RecordDict({
        PARAMETERS: parameters_to_record(instructions.parameters),
        INSTRUCTIONS: ConfigRecord(config),
    })


def content_to_instructions(content: RecordDict) -> tuple[FitInstructions, ModelSpec | None]:
    """The instructions (and the spec, if sent) of :func:`instructions_to_content`, checked."""
    config = _record(content, INSTRUCTIONS, ConfigRecord)
    server_round = config.get("round")
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise FlowerProtocolError(f"round must be a positive integer, got {server_round!r}")
    parameters = record_to_parameters(_record(content, PARAMETERS, ArrayRecord))
    settings = {k[len("config."):]: v for k, v in config.items() if k.startswith("config.")}
    spec = spec_from_json(config["spec"]) if "spec" in config else None
    return FitInstructions(server_round, parameters, settings), spec


def update_to_content(update: ClientUpdate) -> RecordDict:
    """A client's update as a RecordDict."""
    return RecordDict({
        PARAMETERS: parameters_to_record(update.parameters),
        UPDATE: ConfigRecord({
            "client_id": update.client_id,
            "round": int(update.round),
            "num_examples": int(update.num_examples),
        }),
        METRICS: MetricRecord({k: float(v) for k, v in update.metrics.items()}),
    })


def content_to_update(content: RecordDict) -> ClientUpdate:
    """The :class:`ClientUpdate` of :func:`update_to_content`, with its types checked (the
    server's ``receive_update`` then checks shapes, values, round and sender)."""
    header = _record(content, UPDATE, ConfigRecord)
    cid, rnd, n = header.get("client_id"), header.get("round"), header.get("num_examples")
    if not isinstance(cid, str) or not cid:
        raise FlowerProtocolError(f"client_id must be a non-empty string, got {cid!r}")
    for name, value in (("round", rnd), ("num_examples", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FlowerProtocolError(f"{name} must be an integer, got {value!r}")
    metrics = _record(content, METRICS, MetricRecord) if METRICS in content else {}
    clean = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise FlowerProtocolError(f"metric {k!r} must be a number, got {v!r}")
        clean[k] = float(v)
    parameters = record_to_parameters(_record(content, PARAMETERS, ArrayRecord))
    return ClientUpdate(cid, rnd, parameters, n, clean)


def _record(content: Any, key: str, kind: type) -> Any:
    if not isinstance(content, RecordDict) or key not in content:
        raise FlowerProtocolError(f"message has no {key!r} record")
    record = content[key]
    if not isinstance(record, kind):
        raise FlowerProtocolError(f"{key!r} must be a {kind.__name__}, got {type(record).__name__}")
    return record


# ------------------------------------------------------------------------------------ the server
@dataclass
class NodeInfo:
    """What a SuperNode said about itself when first contacted."""

    node_id: int
    client_id: str
    n_features: int
    num_examples: int
    labels: list[Any] = field(default_factory=list)


class FlowerTransport:
    """fedge's :class:`~fedge.federated.transport.Transport` over a Flower ServerApp ``Grid``.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The ServerApp's grid (a deployment's SuperLink, or any other Grid).
    timeout : float
        Seconds a round (or one stage of secure aggregation) waits for replies; nodes that
        have not answered by then count as timed out (dropped out, under secure aggregation).
    poll_interval : float
        Seconds between two pulls of the replies.
    """

    def __init__(self, grid: Grid, *, timeout: float = 120.0, poll_interval: float = 0.25) -> None:
        self.grid = grid
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)
        self.nodes: dict[str, NodeInfo] = {}
        self._spec_sent: set[int] = set()
        self._unknown: set[int] = set()  # nodes that did not answer the hello

    # -- discovery ------------------------------------------------------------------------
    def discover(self, *, min_nodes: int = 1, wait: float = 0.0) -> dict[str, NodeInfo]:
        """Ask every new SuperNode who it is; with ``wait``, keep looking until ``min_nodes``
        have answered (or ``wait`` seconds pass)."""
        deadline = time.monotonic() + wait
        while True:
            known = {info.node_id for info in self.nodes.values()}
            new = [n for n in self.grid.get_node_ids() if n not in known]
            if new:
                replies = self._exchange(
                    {n: (RecordDict({}), HELLO) for n in new}, min(self.timeout, 60.0)
                )
                for node_id, reply in replies.items():
                    try:
                        info = _node_info(node_id, reply)
                    except FlowerProtocolError as exc:
                        log.warning("SuperNode %s: %s", node_id, exc)
                        continue
                    if info.client_id in self.nodes:
                        log.warning("SuperNode %s claims the taken id %r; ignored", node_id,
                                    info.client_id)
                        continue
                    self.nodes[info.client_id] = info
            if len(self.nodes) >= min_nodes or time.monotonic() >= deadline:
                return dict(self.nodes)
            time.sleep(max(self.poll_interval, 1.0))

    def client_ids(self) -> list[str]:
        """The clients of every SuperNode that has introduced itself."""
        if not self.nodes:
            self.discover()
        return sorted(self.nodes)

    # -- plain rounds ---------------------------------------------------------------------
    def fit(
        self, client_ids: Sequence[str], instructions: FitInstructions, spec: ModelSpec
    ) -> list[FitOutcome]:
        requests = {}
        for cid in client_ids:
            node = self.nodes[cid].node_id
            send_spec = spec if node not in self._spec_sent else None
            requests[node] = (instructions_to_content(instructions, send_spec), FIT)
        replies = self._exchange(requests, self.timeout, group=str(instructions.round))
        outcomes = []
        for cid in client_ids:
            node = self.nodes[cid].node_id
            reply = replies.get(node)
            update, failure = None, None
            if reply is None:
                failure = f"timed out after {self.timeout:g} s"
            elif reply.has_error():
                failure = f"raised on its node: {reply.error.reason}"
            else:
                try:
                    update = content_to_update(reply.content)
                    self._spec_sent.add(node)
                except FlowerProtocolError as exc:
                    failure = f"malformed reply: {exc}"
                if update is not None and update.client_id != cid:
                    update, failure = None, f"answered as {update.client_id!r}"
            if update is None:
                self._spec_sent.discard(node)  # resend the spec next time, to be safe
            outcomes.append(FitOutcome(cid, update, failure))
        return outcomes

    # -- secure rounds --------------------------------------------------------------------
    def fit_secure(
        self,
        client_ids: Sequence[str],
        instructions: FitInstructions,
        spec: ModelSpec,
        session: SecureSession,
    ) -> SecureOutcome:
        """Training and the four SecAgg stages as message exchanges (masking methods only:
        CKKS and Paillier need a key holder apart from the server, which this engine does not
        deploy)."""
        if not session.secure.masking:
            return SecureOutcome(None, [(c, "not run") for c in client_ids], {},
                                 f"{session.secure.method} is not available on Flower; use "
                                 "secagg or secagg+")
        start = time.perf_counter()
        timings: dict[str, float] = {}
        config = _secagg_config(session, len(client_ids), spec.n_parameters + 1)
        protocol = _secure_protocol_config(session, config)
        requests = {}
        for cid in client_ids:
            node = self.nodes[cid].node_id
            content = instructions_to_content(instructions, spec if node not in self._spec_sent
                                              else None)
            content[SECURE] = protocol
            requests[node] = (content, FIT)
        replies = self._exchange(requests, self.timeout, group=str(instructions.round))
        from fedge.federated.secure_aggregation import decode_fixed_point

        failures: list[tuple[str, str]] = []
        reports: dict[str, dict[str, float]] = {}
        keys = {}
        for cid in client_ids:
            node = self.nodes[cid].node_id
            try:
                body = _reply_content(replies.get(node), self.timeout)
                keys[cid] = _decode_keys(body)
                metrics = _record(body, METRICS, MetricRecord)
                reports[cid] = {k: float(metrics[k]) for k in PUBLIC_REPORT if k in metrics}
                self._spec_sent.add(node)
            except FlowerProtocolError as exc:
                self._spec_sent.discard(node)
                failures.append((cid, str(exc)))
        timings["train and advertise keys"] = time.perf_counter() - start
        if not keys:
            return SecureOutcome(None, failures, reports, "no client finished training")
        try:
            encoded, survivors = self.secure_stages(keys, config, timings,
                                                    group=str(instructions.round))
        except SecureAggregationError as exc:
            return SecureOutcome(None, failures, reports, str(exc))
        total = decode_fixed_point(encoded, config.scale_bits)
        result = SecureResult(np.asarray(total, dtype=np.float64), tuple(survivors),
                              time.perf_counter() - start, timings)
        return SecureOutcome(result, failures, reports)

    def secure_stages(
        self,
        keys: Mapping[str, Any],
        config: Any,
        timings: dict[str, float],
        *,
        group: str = "",
    ) -> tuple[np.ndarray, list[str]]:
        """The SecAgg stages after the clients advertised ``keys`` (client id ->
        ``AdvertiseKeys``, sent with their first reply): share keys, masked input, unmasking,
        one exchange each. Returns the sum (``uint64`` ring elements) and the clients in it;
        raises :class:`SecureAggregationError` when too few survive (nothing is revealed).
        Shared by training rounds and by histogram sums (``fedge.federated.flower_trees``)."""
        from fedge.federated.secure_aggregation import SecAggServer

        server = SecAggServer(config, list(keys))
        for cid, message in keys.items():
            if message.sender != cid:
                raise SecureAggregationError(f"{cid!r} advertised keys as {message.sender!r}")
            server.receive_keys(message)
        roster = server.broadcast_keys()
        mark = time.perf_counter()
        roster_record = _encode_roster(roster)
        replies = self._exchange(
            {self.nodes[c].node_id: (RecordDict({SECURE: roster_record}), SECAGG_SHARES)
             for c in roster}, self.timeout, group=group)
        holders = []
        for cid in roster:
            shares = _try(lambda c=cid: _decode_shares(
                _reply_content(replies.get(self.nodes[c].node_id), self.timeout)))
            if shares is not None:
                server.receive_shares(shares)
                holders.append(cid)
        timings["share keys"] = time.perf_counter() - mark
        mark = time.perf_counter()
        requests = {
            self.nodes[c].node_id: (RecordDict({SECURE: _encode_shares(server.shares_for(c))}),
                                    SECAGG_MASKED)
            for c in holders
        }
        replies = self._exchange(requests, self.timeout, group=group)
        for cid in holders:
            masked = _try(lambda c=cid: _decode_masked(
                _reply_content(replies.get(self.nodes[c].node_id), self.timeout)))
            if masked is not None:
                server.receive_masked(masked)
        timings["masked input"] = time.perf_counter() - mark
        mark = time.perf_counter()
        request = server.unmask_request()
        replies = self._exchange(
            {self.nodes[c].node_id: (RecordDict({SECURE: _encode_unmask_request(request)}),
                                     SECAGG_UNMASK) for c in request.survivors},
            self.timeout, group=group)
        for cid in request.survivors:
            response = _try(lambda c=cid: _decode_unmask(
                _reply_content(replies.get(self.nodes[c].node_id), self.timeout)))
            if response is not None:
                server.receive_unmask(response)
        total, survivors = server.result_encoded()
        timings["unmasking"] = time.perf_counter() - mark
        return total, list(survivors)

    # -- the wire -------------------------------------------------------------------------
    def _exchange(
        self,
        requests: Mapping[int, tuple[RecordDict, str]],
        timeout: float,
        *,
        group: str = "",
    ) -> dict[int, Message]:
        """Send each node its message and collect the replies that arrive within ``timeout``
        seconds (keyed by node id; a node that does not answer is absent)."""
        if not requests:
            return {}
        messages = [
            Message(content, node, kind, group_id=group, ttl=max(timeout + 60.0, 120.0))
            for node, (content, kind) in requests.items()
        ]
        sent = dict(zip(self.grid.push_messages(messages), requests, strict=True))
        replies: dict[int, Message] = {}
        deadline = time.monotonic() + timeout
        while True:
            waiting = [m for m, node in sent.items() if node not in replies]
            if not waiting:
                break
            for reply in self.grid.pull_messages(waiting):
                node = sent.get(reply.metadata.reply_to_message_id)
                if node is not None and reply.metadata.src_node_id == node:
                    replies[node] = reply
            if len(replies) == len(sent) or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
        return replies


def _try(step: Any) -> Any:
    """The value of ``step()``, or None when the reply was missing or malformed (a dropout)."""
    try:
        return step()
    except FlowerProtocolError as exc:
        log.info("secure aggregation: %s", exc)
        return None


def _reply_content(reply: Message | None, timeout: float) -> RecordDict:
    if reply is None:
        raise FlowerProtocolError(f"timed out after {timeout:g} s")
    if reply.has_error():
        raise FlowerProtocolError(f"raised on its node: {reply.error.reason}")
    return reply.content


def _node_info(node_id: int, reply: Message) -> NodeInfo:
    record = _record(_reply_content(reply, 0), HELLO_REPLY, ConfigRecord)
    try:
        labels = json.loads(record.get("labels", "[]"))
        info = NodeInfo(node_id, str(record["client_id"]), int(record["n_features"]),
                        int(record["num_examples"]), list(labels))
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed introduction: {exc}") from None
    if not info.client_id or info.n_features < 1 or info.num_examples < 1:
        raise FlowerProtocolError(f"malformed introduction: {info}")
    return info


# ------------------------------------------------------------------------------- SecAgg messages
def _secagg_config(session: SecureSession, n: int, length: int) -> Any:
    """The round's public protocol parameters, as ``fedge.federated.secure`` sets them."""
    return masked_config(
        session.secure, n, length, round_id=session.round_id, scale_bits=session.scale_bits,
        noise_bound=session.noise_bound_int if session.noise_sigma > 0 else 0,
    )


def _secure_protocol_config(session: SecureSession, config: Any) -> ConfigRecord:
    secure = session.secure
    return ConfigRecord({
        "method": secure.method,
        "clip_norm": float(secure.clip_norm),
        "max_weight": float(secure.max_weight),
        "threshold": float(secure.threshold),
        "selected": int(session.selected),
        "noise_sigma": float(session.noise_sigma),
        "uniform_weight": bool(session.uniform_weight),
        "scale_bits": int(session.scale_bits),
        "secagg.threshold": int(config.threshold),
        "secagg.vector_length": int(config.vector_length),
        "secagg.neighbours": -1 if config.neighbours is None else int(config.neighbours),
        "secagg.bound": float(config.bound),
        "secagg.round_id": int(config.round_id),
        "secagg.round_seed": config.round_seed,
    })


def _decode_protocol_config(record: ConfigRecord) -> tuple[Any, Any, ConfigRecord]:
    from fedge.federated.secure import SecureAggregation
    from fedge.federated.secure_aggregation import SecAggConfig

    try:
        secure = SecureAggregation(
            method=str(record["method"]), clip_norm=float(record["clip_norm"]),
            max_weight=float(record["max_weight"]), threshold=float(record["threshold"]),
            scale_bits=int(record["scale_bits"]),
        )
        neighbours = int(record["secagg.neighbours"])
        config = SecAggConfig(
            threshold=int(record["secagg.threshold"]),
            vector_length=int(record["secagg.vector_length"]),
            neighbours=None if neighbours < 0 else neighbours,
            scale_bits=int(record["scale_bits"]),
            bound=float(record["secagg.bound"]),
            round_id=int(record["secagg.round_id"]),
            round_seed=bytes(record["secagg.round_seed"]),
        )
        return secure, config, record
    except (KeyError, TypeError, ValueError, FedgeError) as exc:
        raise FlowerProtocolError(f"malformed secure aggregation settings: {exc}") from None


def _encode_keys(message: Any) -> ConfigRecord:
    return ConfigRecord({"round_id": message.round_id, "sender": message.sender,
                         "encryption_key": message.encryption_key,
                         "masking_key": message.masking_key})


def _decode_keys(content: RecordDict) -> Any:
    from fedge.federated.secure_aggregation import AdvertiseKeys

    r = _record(content, SECURE, ConfigRecord)
    try:
        return AdvertiseKeys(int(r["round_id"]), str(r["sender"]), bytes(r["encryption_key"]),
                             bytes(r["masking_key"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed keys: {exc}") from None


def _encode_roster(roster: Mapping[str, Any]) -> ConfigRecord:
    ids = list(roster)
    return ConfigRecord({
        "ids": ids,
        "round_id": [int(roster[c].round_id) for c in ids],
        "encryption_key": [roster[c].encryption_key for c in ids],
        "masking_key": [roster[c].masking_key for c in ids],
    })


def _decode_roster(record: ConfigRecord) -> dict[str, Any]:
    from fedge.federated.secure_aggregation import AdvertiseKeys

    try:
        return {
            str(c): AdvertiseKeys(int(r), str(c), bytes(e), bytes(m))
            for c, r, e, m in zip(record["ids"], record["round_id"], record["encryption_key"],
                                  record["masking_key"], strict=True)
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed key roster: {exc}") from None


def _encode_shares(shares: Mapping[str, Any]) -> ConfigRecord:
    items = list(shares.values())
    return ConfigRecord({
        "round_id": [int(s.round_id) for s in items],
        "sender": [s.sender for s in items],
        "recipient": [s.recipient for s in items],
        "ciphertext": [s.ciphertext for s in items],
    })


def _decode_share_record(record: ConfigRecord, key: str) -> dict[str, Any]:
    from fedge.federated.secure_aggregation import EncryptedShare

    try:
        shares = [
            EncryptedShare(int(r), str(s), str(t), bytes(c))
            for r, s, t, c in zip(record["round_id"], record["sender"], record["recipient"],
                                  record["ciphertext"], strict=True)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed shares: {exc}") from None
    return {getattr(s, key): s for s in shares}


def _decode_shares(content: RecordDict) -> dict[str, Any]:
    """A client's outgoing shares, keyed by recipient (as ``SecAggServer.receive_shares``
    takes them)."""
    return _decode_share_record(_record(content, SECURE, ConfigRecord), "recipient")


def _decode_masked(content: RecordDict) -> Any:
    from fedge.federated.secure_aggregation import MaskedInput

    r = _record(content, SECURE, ConfigRecord)
    arrays = record_to_parameters(_record(content, PARAMETERS, ArrayRecord), dtype_kind="u")
    if len(arrays) != 1:
        raise FlowerProtocolError("a masked input is one array")
    try:
        return MaskedInput(int(r["round_id"]), str(r["sender"]), arrays[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed masked input: {exc}") from None


def _encode_unmask_request(request: Any) -> ConfigRecord:
    return ConfigRecord({"round_id": int(request.round_id), "survivors": list(request.survivors),
                         "dropped": list(request.dropped)})


def _decode_unmask(content: RecordDict) -> Any:
    from fedge.federated.secure_aggregation import UnmaskResponse

    r = _record(content, SECURE, ConfigRecord)
    try:
        return UnmaskResponse(
            int(r["round_id"]), str(r["sender"]),
            dict(zip(r["self_owner"], (bytes(b) for b in r["self_share"]), strict=True)),
            dict(zip(r["key_owner"], (bytes(b) for b in r["key_share"]), strict=True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed unmasking response: {exc}") from None


# ------------------------------------------------------------------------------------ the client
def read_node_table(node_config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """A SuperNode's rows: features and targets of its CSV (node config ``data-file``,
    ``target``) and its client id (``client-id``, default the file's stem)."""
    from fedge.data import read_table

    missing = [k for k in ("data-file", "target") if not node_config.get(k)]
    if missing:
        raise InvalidInputError(
            f"the SuperNode needs node config {missing} (e.g. --node-config "
            "'data-file=\"/data/site.csv\" target=\"y\"')"
        )
    path = Path(str(node_config["data-file"])).expanduser()
    X, y, _ = read_table(path, label=str(node_config["target"]))
    return X, y, str(node_config.get("client-id") or path.stem)


def client_from_node_config(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> Any:
    """The :class:`FederatedClient` of a SuperNode: its CSV (``data-file``), target column
    (``target``) and id (``client-id``, default the file's stem), trained with the run's
    settings (``epochs``, ``batch-size``, ``learning-rate``, ``seed``)."""
    from fedge.federated.client import FederatedClient
    from fedge.federated.training import TrainingConfig

    X, y, cid = read_node_table(node_config)
    rate = float(run_config.get("learning-rate", 0.0))
    training = TrainingConfig(
        epochs=int(run_config.get("epochs", 1)),
        batch_size=int(run_config.get("batch-size", 32)),
        learning_rate=rate if rate > 0 else None,
    )
    seed = int(run_config.get("seed", 0))
    return FederatedClient(cid, X, y, training=training, random_state=seed)


def _state_get(context: Context, key: str) -> Any:
    record = context.state.get(STATE)
    return None if record is None else record.get(key)


def _state_set(context: Context, key: str, value: Any) -> None:
    record = context.state.get(STATE)
    if record is None:
        record = ConfigRecord({})
        context.state[STATE] = record
    record[key] = value


def _dump_private(obj: Any) -> bytes:
    """Pickle a SecAggClient (its X25519 keys as raw bytes) for the node's own run state."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    sample = X25519PrivateKey.generate()
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[type(sample)] = lambda key: (
        _x25519_from_raw,
        (key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),),
    )
    pickler.dump(obj)
    return buffer.getvalue()


def _x25519_from_raw(raw: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(raw)


# Exactly the types a SecAgg client's state is made of; anything else in the bytes is refused.
_NODE_STATE_TYPES = frozenset({
    ("fedge.federated.flower", "_x25519_from_raw"),
    ("fedge.federated.secure_aggregation", "AdvertiseKeys"),
    ("fedge.federated.secure_aggregation", "SecAggClient"),
    ("fedge.federated.secure_aggregation", "SecAggConfig"),
    ("fedge.federated.secure_aggregation", "Stage"),
    ("fedge.federated.shamir", "Share"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
})


class _NodeStateUnpickler(pickle.Unpickler):
    """Restores only the types of a SecAgg client's state, so even a node state that someone
    tampered with cannot name any other class or function (no code runs from it)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NODE_STATE_TYPES:
            raise FlowerProtocolError(
                f"refusing to restore node state: it names {module}.{name}, which a SecAgg "
                "client's state never holds"
            )
        return super().find_class(module, name)


def _load_private(data: bytes) -> Any:
    # This node's own bytes (written and read inside the SuperNode), restored with a
    # restricted unpickler all the same.
    return _NodeStateUnpickler(io.BytesIO(data)).load()


client_app = ClientApp()


@client_app.query("fedge_hello")
def _hello(message: Message, context: Context) -> Message:
    X, y, cid = read_node_table(context.node_config)  # rows may have NaN (trees take them)
    labels = np.unique(y).tolist() if y.dtype.kind != "f" else []
    return Message(RecordDict({HELLO_REPLY: ConfigRecord({
        "client_id": cid,
        "n_features": int(X.shape[1]),
        "num_examples": int(X.shape[0]),
        "labels": json.dumps(labels),
    })}), reply_to=message)


def _train(message: Message, context: Context) -> tuple[Any, ClientUpdate, FitInstructions]:
    instructions, spec = content_to_instructions(message.content)
    if spec is not None:
        _state_set(context, "spec", spec_to_json(spec))
    else:
        text = _state_get(context, "spec")
        if text is None:
            raise FlowerProtocolError("no model spec received yet in this run")
        spec = spec_from_json(text)
    client = client_from_node_config(context.node_config, context.run_config)
    return client, client.fit(instructions, spec), instructions


@client_app.train()
def _fit(message: Message, context: Context) -> Message:
    client, update, instructions = _train(message, context)
    if SECURE not in message.content:
        return Message(update_to_content(update), reply_to=message)
    from fedge.federated.client import client_rng
    from fedge.federated.secure_aggregation import SecAggClient

    secure, config, record = _decode_protocol_config(message.content[SECURE])
    session = SecureSession(
        secure, instructions.parameters, round_id=instructions.round,
        selected=int(record["selected"]), uniform_weight=bool(record["uniform_weight"]),
        noise_sigma=float(record["noise_sigma"]), scale_bits=int(record["scale_bits"]),
    )
    rng = client_rng(client.random_state, instructions.round, client.client_id + "/protect")
    vector = session.client_vector(update, rng)
    protocol = SecAggClient(client.client_id, config)
    keys = protocol.advertise_keys()
    _state_set(context, "secagg", _dump_private({"client": protocol, "vector": vector}))
    report = {k: float(update.metrics[k]) for k in PUBLIC_REPORT if k in update.metrics}
    return Message(RecordDict({SECURE: _encode_keys(keys), METRICS: MetricRecord(report)}),
                   reply_to=message)


def _secagg_state(context: Context) -> dict[str, Any]:
    data = _state_get(context, "secagg")
    if data is None:
        raise FlowerProtocolError("no secure aggregation round in progress on this node")
    return _load_private(data)


@client_app.train("fedge_secagg_shares")
def _secagg_shares(message: Message, context: Context) -> Message:
    state = _secagg_state(context)
    roster = _decode_roster(_record(message.content, SECURE, ConfigRecord))
    shares = state["client"].share_keys(roster)
    _state_set(context, "secagg", _dump_private(state))
    return Message(RecordDict({SECURE: _encode_shares(shares)}), reply_to=message)


@client_app.train("fedge_secagg_masked")
def _secagg_masked(message: Message, context: Context) -> Message:
    state = _secagg_state(context)
    received = _decode_share_record(_record(message.content, SECURE, ConfigRecord), "sender")
    masked = state["client"].masked_input_encoded(state["vector"], received)
    state["vector"] = None  # the input is sent (masked); nothing of it stays
    _state_set(context, "secagg", _dump_private(state))
    return Message(RecordDict({
        SECURE: ConfigRecord({"round_id": int(masked.round_id), "sender": masked.sender}),
        PARAMETERS: parameters_to_record([masked.masked]),
    }), reply_to=message)


@client_app.train("fedge_secagg_unmask")
def _secagg_unmask(message: Message, context: Context) -> Message:
    from fedge.federated.secure_aggregation import UnmaskRequest

    state = _secagg_state(context)
    r = _record(message.content, SECURE, ConfigRecord)
    try:
        request = UnmaskRequest(int(r["round_id"]), tuple(r["survivors"]), tuple(r["dropped"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed unmasking request: {exc}") from None
    response = state["client"].unmask(request)
    context.state[STATE].pop("secagg", None)  # the round is over: forget its secrets
    return Message(RecordDict({SECURE: ConfigRecord({
        "round_id": int(response.round_id), "sender": response.sender,
        "self_owner": list(response.self_mask_shares),
        "self_share": list(response.self_mask_shares.values()),
        "key_owner": list(response.key_shares),
        "key_share": list(response.key_shares.values()),
    })}), reply_to=message)


# ------------------------------------------------------------------------------ the server app
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "rounds": 3,
    "model": "logreg",
    "hidden": 16,
    "strategy": "fedavg",
    "fraction-fit": 1.0,
    "epochs": 1,
    "batch-size": 32,
    "learning-rate": 0.0,
    "seed": 0,
    "classes": "",
    "dp-epsilon": 0.0,
    "dp-delta": 1e-5,
    "dp-level": "record",
    "dp-clip": 1.0,
    "secure-aggregation": "",
    "secure-clip": 10.0,
    "min-nodes": 1,
    "node-wait": 60.0,
    "fit-timeout": 120.0,
    "output-dir": "",
    "n-estimators": 0,
    "max-depth": 3,
    "bins": 255,
    "feature-range": "",
    "grid-size": 1024,
    "bagging-weights": "rows",
}


def _estimator(kind: str, hidden: int, seed: int, *, classify: bool) -> Any:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if kind == "mlp":
        mlp = MLPClassifier if classify else MLPRegressor
        return mlp(hidden_layer_sizes=(hidden,), random_state=seed)
    if kind in ("linear", "linreg") or not classify:
        return LinearRegression()
    if kind not in ("logreg", "logistic"):
        raise InvalidInputError(f"unknown model {kind!r}; use logreg, linear or mlp")
    return LogisticRegression()


def _parse_classes(text: str) -> list[Any] | None:
    if not text.strip():
        return None
    out: list[Any] = []
    for cell in text.split(","):
        cell = cell.strip()
        try:
            out.append(int(cell))
        except ValueError:
            out.append(cell)
    return out


def federation(
    cfg: Mapping[str, Any], nodes: Mapping[str, NodeInfo], *, infer_classes: bool = True
) -> tuple[int, list[Any] | None]:
    """What the introduced nodes share: their feature count, and the label set (the run
    config's ``classes``; else, with ``infer_classes``, the union of the nodes' labels when
    every node holds labels; None: regression). Raises when no node answered or the nodes
    disagree on the number of features."""
    if not nodes:
        raise InvalidInputError("no SuperNode answered: nothing to federate")
    widths = {info.n_features for info in nodes.values()}
    if len(widths) != 1:
        raise InvalidInputError(f"the clients disagree on the number of features: {widths}")
    classes = _parse_classes(str(cfg["classes"]))
    if classes is None and infer_classes and all(info.labels for info in nodes.values()):
        classes = sorted({label for info in nodes.values() for label in info.labels})
    return widths.pop(), classes


def server_from_run_config(
    run_config: Mapping[str, Any], nodes: Mapping[str, NodeInfo]
) -> Any:
    """The :class:`FederatedServer` a run config describes, for the clients in ``nodes``
    (their feature count, and their labels when the run config declares no ``classes``)."""
    from fedge.federated.privacy_config import DifferentialPrivacy, calibrate_privacy
    from fedge.federated.secure import SecureAggregation
    from fedge.federated.server import FederatedServer

    cfg = {**RUN_CONFIG_DEFAULTS, **dict(run_config)}
    n_features, classes = federation(cfg, nodes, infer_classes=cfg["model"] != "linear")
    classify = classes is not None
    seed = int(cfg["seed"])
    rounds = int(cfg["rounds"])
    privacy = None
    if float(cfg["dp-epsilon"]) > 0:
        privacy = DifferentialPrivacy(
            level=str(cfg["dp-level"]), target_epsilon=float(cfg["dp-epsilon"]),
            delta=float(cfg["dp-delta"]), clip_norm=float(cfg["dp-clip"]),
        )
        if privacy.level in ("record", "distributed"):
            privacy = replace(privacy, rounds=rounds)
        else:
            fraction = float(cfg["fraction-fit"])
            per_round = max(1, math.ceil(fraction * len(nodes)))
            privacy = calibrate_privacy(
                privacy, sampling_rate=min(1.0, per_round / len(nodes)), steps=rounds
            )
    secure = str(cfg["secure-aggregation"]).strip()
    return FederatedServer(
        _estimator(str(cfg["model"]), int(cfg["hidden"]), seed, classify=classify),
        str(cfg["strategy"]),
        classes=classes if classify else None,
        n_features=n_features,
        strategy_options={"fraction_fit": float(cfg["fraction-fit"])},
        privacy=privacy,
        clients=sorted(nodes),
        expected_clients=len(nodes),
        secure_aggregation=SecureAggregation(secure, clip_norm=float(cfg["secure-clip"]))
        if secure else None,
        random_state=seed,
    )


def write_outputs(server: Any, directory: str | Path) -> Path:
    """The run's results: ``parameters.npz`` (the global parameters), ``history.json`` and
    ``model.json`` (the lite IR of the global model)."""
    from fedge import lower, save

    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "parameters.npz", *server.global_parameters)
    server.history.save(out / "history.json")
    save(lower(server.get_global_model()), out / "model.json")
    return out


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    cfg = {**RUN_CONFIG_DEFAULTS, **dict(context.run_config)}
    transport = FlowerTransport(grid, timeout=float(cfg["fit-timeout"]))
    nodes = transport.discover(min_nodes=int(cfg["min-nodes"]), wait=float(cfg["node-wait"]))
    log.warning("fedge: %d SuperNodes: %s", len(nodes), ", ".join(sorted(nodes)))
    if str(cfg["model"]) == "hist-gbdt":
        from fedge.federated.flower_trees import run_hist_gbdt

        run_hist_gbdt(transport, cfg, nodes)
        return
    if str(cfg["model"]) == "bagging":
        from fedge.federated.flower_bagging import run_bagging, write_bagging_outputs

        bagged = run_bagging(transport, cfg, nodes)
        if str(cfg["output-dir"]).strip():
            log.warning("fedge: wrote %s", write_bagging_outputs(bagged, str(cfg["output-dir"])))
        return
    server = server_from_run_config(cfg, nodes)

    def report(record: Any) -> None:
        log.warning("fedge: round %d: %d/%d clients, %d failed, metrics %s", record.round,
                    record.accepted, record.selected, record.failed, dict(record.metrics))

    history = server.fit(transport, int(cfg["rounds"]), on_round=report)
    if history.stop_reason:
        log.warning("fedge: stopped: %s", history.stop_reason)
    if str(cfg["output-dir"]).strip():
        out = write_outputs(server, str(cfg["output-dir"]))
        log.warning("fedge: wrote %s", out)


# ------------------------------------------------------------------------------ launching a run
APP_DIR = Path(__file__).with_name("flower_app")
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def run_on_superlink(
    superlink: str,
    run_config: Mapping[str, Any],
    *,
    insecure: bool = False,
    root_certificates: str | Path | None = None,
    flwr_home: str | Path | None = None,
    timeout: float | None = None,
) -> int:
    """Submit fedge's Flower App to the SuperLink at ``superlink`` (``host:port`` of its
    control API) with ``run_config`` and stream its logs until the run ends; the exit code of
    ``flwr run``. The connection goes into ``$FLWR_HOME/config.toml`` (a new directory
    unless ``flwr_home`` is given); telemetry and update checks are off."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    unknown = set(run_config) - set(RUN_CONFIG_DEFAULTS)
    if unknown:
        raise InvalidInputError(f"unknown run config keys {sorted(unknown)}")
    home = Path(flwr_home) if flwr_home else Path(tempfile.mkdtemp(prefix="fedge-flwr-"))
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "fedge"', "", "[superlink.fedge]",
             f"address = {_toml_value(superlink)}"]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        lines.append(f"root-certificates = {_toml_value(Path(root_certificates).resolve())}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    overrides = home / "run_config.toml"
    overrides.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in run_config.items()))
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr")
    if flwr is None:
        raise InvalidInputError("the flwr command is not installed: pip install 'fedge[flower]'")
    env = {**os.environ, **QUIET_ENV, "FLWR_HOME": str(home),
           "PATH": f"{Path(flwr).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [flwr, "run", str(APP_DIR), "fedge", "--stream", "--run-config", str(overrides)]
    return subprocess.run(command, env=env, timeout=timeout, check=False).returncode


# the ClientApp's histogram boosting and bagging messages (registered by those modules)
from fedge.federated import flower_bagging as _flower_bagging  # noqa: E402, F401
from fedge.federated import flower_trees as _flower_trees  # noqa: E402, F401
