"""fedge on Flower without a network: message (de)serialization, and the real ClientApp and
FlowerTransport connected by an in-process Grid that serializes every message and every
node's context as Flower does between processes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import serde
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.serverapp import Grid

from fedge.federated.flower import (
    FlowerProtocolError,
    FlowerTransport,
    client_app,
    client_from_node_config,
    content_to_instructions,
    content_to_update,
    instructions_to_content,
    server_from_run_config,
    spec_from_json,
    spec_to_json,
    update_to_content,
)
from fedge.federated.messages import ClientUpdate, FitInstructions
from fedge.federated.transport import InProcessTransport


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """What a ServerApp process knows about itself (set by Flower in a deployment)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _wire(content: RecordDict) -> RecordDict:
    data = serde.recorddict_to_proto(content).SerializeToString()
    proto = ProtoRecordDict()
    proto.ParseFromString(data)
    return serde.recorddict_from_proto(proto)


class LocalGrid(Grid):
    """A Grid whose nodes run fedge's ClientApp in this process, one fresh call per message,
    with the node's context serialized in between (as a SuperNode keeps it)."""

    def __init__(self, node_configs: dict[int, dict], run_config: dict, *, dead=()) -> None:
        self.contexts = {
            n: serde.context_to_proto(Context(1, n, cfg, RecordDict(), run_config))
            .SerializeToString()
            for n, cfg in node_configs.items()
        }
        self.dead = set(dead)
        self.replies: dict[str, Message] = {}
        self.ids = itertools.count()
        self.sent: list[str] = []

    def set_run(self, run) -> None:  # pragma: no cover - unused
        pass

    @property
    def run(self):  # pragma: no cover - unused
        return None

    def create_message(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            mid = f"m{next(self.ids)}"
            message.metadata.__dict__["_message_id"] = mid
            ids.append(mid)
            node = message.metadata.dst_node_id
            self.sent.append(message.metadata.message_type)
            if node in self.dead:
                continue
            proto = ProtoContext()
            proto.ParseFromString(self.contexts[node])
            context = serde.context_from_proto(proto)
            message.content = _wire(message.content)
            try:
                reply = client_app(message, context)
            except Exception as exc:  # Flower replies with an error message
                from flwr.app import Error

                reply = Message(Error(0, f"{type(exc).__name__}: {exc}"), reply_to=message)
            else:
                reply.content = _wire(reply.content)
            self.contexts[node] = serde.context_to_proto(context).SerializeToString()
            self.replies[mid] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in message_ids if m in self.replies]

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover - unused
        raise NotImplementedError


def _csvs(tmp_path: Path, n: int = 3, rows: int = 60, seed: int = 0) -> dict[int, dict]:
    rng = np.random.default_rng(seed)
    configs = {}
    for i in range(n):
        X = rng.normal(size=(rows, 4))
        y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.normal(0, 0.5, rows) > 0).astype(int)
        path = tmp_path / f"site_{i}.csv"
        lines = ["a,b,c,d,label"] + [
            ",".join(f"{v:.6f}" for v in x) + f",{t}" for x, t in zip(X, y, strict=True)
        ]
        path.write_text("\n".join(lines) + "\n")
        configs[1000 + i] = {"data-file": str(path), "target": "label", "client-id": f"site_{i}"}
    return configs


RUN = {"rounds": 3, "seed": 7, "epochs": 1, "batch-size": 16, "fit-timeout": 5.0}


def _reference(configs: dict[int, dict], run: dict, transport_nodes):
    clients = [client_from_node_config(cfg, run) for cfg in configs.values()]
    server = server_from_run_config(run, transport_nodes)
    server.fit(InProcessTransport(clients), int(run["rounds"]))
    return server


# ---------------------------------------------------------------------------- serialization
def test_instructions_round_trip_through_the_wire():
    from sklearn.linear_model import LogisticRegression

    from fedge.federated.training import spec_from_estimator

    spec = spec_from_estimator(LogisticRegression(C=0.5), n_features=3, classes=["a", "b", "c"])
    params = [np.arange(9.0).reshape(3, 3), np.array([0.1, -0.2, 0.3])]
    sent = FitInstructions(4, params, {"epochs": 2, "proximal_mu": 0.1, "optimizer": "sgd"})
    got, got_spec = content_to_instructions(_wire(instructions_to_content(sent, spec)))
    assert got.round == 4 and dict(got.config) == dict(sent.config)
    for a, b in zip(got.parameters, params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got_spec.parameter_shapes == spec.parameter_shapes
    assert got_spec.classes.tolist() == ["a", "b", "c"] and got_spec.l2 == spec.l2
    assert spec_from_json(spec_to_json(spec)).kind is spec.kind
    assert content_to_instructions(instructions_to_content(sent))[1] is None


def test_update_round_trip_and_validation():
    update = ClientUpdate("site_1", 2, [np.ones((1, 3)), np.zeros(1)], 17, {"loss_after": 0.5})
    got = content_to_update(_wire(update_to_content(update)))
    assert (got.client_id, got.round, got.num_examples) == ("site_1", 2, 17)
    assert dict(got.metrics) == {"loss_after": 0.5}
    np.testing.assert_array_equal(got.parameters[0], update.parameters[0])

    bad = update_to_content(update)
    bad["fedge.update"]["num_examples"] = "many"
    with pytest.raises(FlowerProtocolError, match="num_examples"):
        content_to_update(bad)
    bad = update_to_content(update)
    bad["fedge.parameters"] = ArrayRecord([np.ones(3, dtype=np.int64)])
    with pytest.raises(FlowerProtocolError, match="dtype"):
        content_to_update(bad)
    with pytest.raises(FlowerProtocolError, match=r"fedge\.update"):
        content_to_update(RecordDict({"x": ConfigRecord({})}))
    with pytest.raises(FlowerProtocolError, match="round"):
        content_to_instructions(RecordDict({"fedge.instructions": ConfigRecord({"round": 0})}))


# ---------------------------------------------------------------------- ClientApp + transport
def test_flower_rounds_equal_the_in_process_run(tmp_path):
    configs = _csvs(tmp_path)
    grid = LocalGrid(configs, RUN)
    transport = FlowerTransport(grid, timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    assert sorted(nodes) == ["site_0", "site_1", "site_2"]
    server = server_from_run_config(RUN, nodes)
    history = server.fit(transport, 3)
    assert [r.accepted for r in history.rounds] == [3, 3, 3]
    # the spec travels only on each node's first fit message
    assert grid.sent.count("train") == 9
    reference = _reference(configs, RUN, nodes)
    for a, b in zip(server.global_parameters, reference.global_parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_a_dead_or_failing_node_is_a_failed_outcome(tmp_path):
    configs = _csvs(tmp_path)
    grid = LocalGrid(configs, RUN)
    transport = FlowerTransport(grid, timeout=0.2, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    server = server_from_run_config(RUN, nodes)
    grid.dead.add(1001)
    configs[1002]["data-file"] = str(tmp_path / "missing.csv")
    grid.contexts[1002] = serde.context_to_proto(
        Context(1, 1002, configs[1002], RecordDict(), RUN)
    ).SerializeToString()
    history = server.fit(transport, 1)
    record = history.rounds[0]
    assert (record.accepted, record.failed) == (1, 2)


def test_secure_aggregation_over_messages_equals_plain_sum(tmp_path):
    configs = _csvs(tmp_path)
    run = {**RUN, "secure-aggregation": "secagg", "secure-clip": 100.0}
    grid = LocalGrid(configs, run)
    transport = FlowerTransport(grid, timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    server = server_from_run_config(run, nodes)
    history = server.fit(transport, 2)
    assert [r.accepted for r in history.rounds] == [3, 3]
    assert "fedge_secagg_unmask" in grid.sent[-1]
    reference = _reference(configs, {**run, "rounds": 2}, nodes)
    for a, b in zip(server.global_parameters, reference.global_parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_secure_round_survives_a_node_lost_before_masking(tmp_path):
    configs = _csvs(tmp_path, n=4)
    run = {**RUN, "secure-aggregation": "secagg", "secure-clip": 100.0}
    grid = LocalGrid(configs, run)
    transport = FlowerTransport(grid, timeout=0.2, poll_interval=0.0)
    nodes = transport.discover(min_nodes=4)
    server = server_from_run_config(run, nodes)
    real_push = grid.push_messages

    def push(messages):
        messages = list(messages)
        if any(m.metadata.message_type.endswith("masked") for m in messages):
            grid.dead.add(1003)
        return real_push(messages)

    grid.push_messages = push
    history = server.fit(transport, 1)
    assert history.rounds[0].participants == ("site_0", "site_1", "site_2")


def test_client_needs_its_node_config():
    with pytest.raises(Exception, match="data-file"):
        client_from_node_config({}, {})


# ------------------------------------------------------------------ histogram boosting
def _tree_arrays(model):
    ensemble = model.steps[0]
    keys = ("feature", "threshold", "left", "right", "missing_left", "leaf_values", "roots",
            "tree_offset", "base_score")
    return {k: np.asarray(getattr(ensemble, k)) for k in keys}


def _hist_reference(configs: dict[int, dict], **params):
    from fedge.federated.flower_trees import histogram_client_from_node_config
    from fedge.federated.trees_histogram import FederatedHistGradientBoosting

    clients = [histogram_client_from_node_config(cfg) for cfg in configs.values()]
    return FederatedHistGradientBoosting(**params).fit(clients)


def test_hist_boosting_over_messages_equals_the_in_process_run(tmp_path):
    from fedge.federated.flower_trees import hist_gbdt_from_run_config, remote_clients

    configs = _csvs(tmp_path)
    run = {**RUN, "model": "hist-gbdt", "n-estimators": 2, "max-depth": 2,
           "learning-rate": 0.3, "bins": 16}
    grid = LocalGrid(configs, run)
    transport = FlowerTransport(grid, timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    booster = hist_gbdt_from_run_config(run, nodes)
    booster.fit(remote_clients(transport, nodes))
    # per node: sketch, label counts, then one request per depth level and tree
    kinds = [k for k in grid.sent if k.startswith("query.fedge_hist")]
    assert len(kinds) == 3 * (2 + 2 * 3)
    assert all(r.participants == ("site_0", "site_1", "site_2") for r in booster.history_.rounds)
    reference = _hist_reference(configs, classes=[0, 1], n_estimators=2, max_depth=2,
                                learning_rate=0.3, max_bins=16)
    got, want = _tree_arrays(booster.model_), _tree_arrays(reference.model_)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert booster.bin_edges_.equals(reference.bin_edges_)


def test_hist_boosting_regression_and_a_lost_node(tmp_path):
    from fedge.federated.flower_trees import FlowerHistGradientBoosting, remote_clients

    configs = _csvs(tmp_path, n=3)
    for cfg in configs.values():  # a float target: squared error (the exponent rides along)
        path = Path(cfg["data-file"])
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0]] + [ln[:-1] + "0.5" + ln[-1] for ln in lines[1:]]))
    grid = LocalGrid(configs, RUN)
    transport = FlowerTransport(grid, timeout=0.2, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    params = {"n_estimators": 2, "max_depth": 2, "max_bins": 8}
    real_push = grid.push_messages

    def push(messages):
        messages = list(messages)
        if sum("histograms" in m.metadata.message_type for m in messages) and \
                grid.sent.count("query.fedge_hist_histograms") >= 12:
            grid.dead.add(1002)  # lost in the middle of the second tree
        return real_push(messages)

    grid.push_messages = push
    booster = FlowerHistGradientBoosting(**params).fit(remote_clients(transport, nodes))
    rounds = booster.history_.rounds
    assert rounds[0].participants == ("site_0", "site_1", "site_2")
    assert rounds[1].participants == ("site_0", "site_1") and rounds[1].restarts == 1
    assert "target_exponent" not in " ".join(grid.sent)  # fetched with the label counts


def test_node_state_restores_only_secagg_types():
    import os
    import pickle

    from fedge.federated.flower import _load_private

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(FlowerProtocolError, match="refusing to restore node state"):
        _load_private(pickle.dumps(Evil()))


def test_secure_hist_boosting_over_messages_equals_the_in_process_secure_run(tmp_path):
    """Every histogram summed by SecAgg+ over Flower messages: the same trees as the
    in-process run with secure aggregation (and as the plain one: the sums are exact), and the
    server never receives a histogram, only keys, shapes, shares, masked vectors and sums."""
    from fedge.federated.flower_trees import FlowerHistGradientBoosting, remote_clients

    configs = _csvs(tmp_path, n=4)
    grid = LocalGrid(configs, RUN)
    transport = FlowerTransport(grid, timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=4)
    params = {"classes": [0, 1], "n_estimators": 2, "max_depth": 2, "max_bins": 16,
              "feature_range": (-4.0, 4.0), "grid_size": 64}
    booster = FlowerHistGradientBoosting(secure_aggregation="secagg+", **params)
    booster.fit(remote_clients(transport, nodes))
    # one secure sum each: grid counts, label counts, then one per depth level and tree,
    # and every sum takes four exchanges (request + keys, shares, masked input, unmasking)
    sums = 2 + 2 * 3
    assert grid.sent.count("train.fedge_secagg_unmask") == 4 * sums
    assert sum(k.startswith("query.fedge_hist") for k in grid.sent) == 4 * sums
    assert booster.secure_seconds_ > 0
    secure_ref = _hist_reference(configs, secure_aggregation="secagg+", **params)
    plain_ref = _hist_reference(configs, **params)
    got = _tree_arrays(booster.model_)
    for ref in (secure_ref, plain_ref):
        want = _tree_arrays(ref.model_)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_secure_hist_boosting_loses_a_node_mid_sum_and_restarts(tmp_path):
    from fedge.federated.flower_trees import FlowerHistGradientBoosting, remote_clients

    configs = _csvs(tmp_path, n=4)
    grid = LocalGrid(configs, RUN)
    transport = FlowerTransport(grid, timeout=0.2, poll_interval=0.0)
    nodes = transport.discover(min_nodes=4)
    real_push = grid.push_messages

    def push(messages):
        messages = list(messages)
        # the first tree's root histograms: node 1003 vanishes before sending its masked input
        if any(m.metadata.message_type == "train.fedge_secagg_masked" for m in messages) and \
                grid.sent.count("query.fedge_hist_histograms") == 4:
            grid.dead.add(1003)
        return real_push(messages)

    grid.push_messages = push
    params = {"classes": [0, 1], "n_estimators": 2, "max_depth": 2, "max_bins": 16,
              "feature_range": (-4.0, 4.0), "grid_size": 64}
    booster = FlowerHistGradientBoosting(secure_aggregation="secagg+", **params)
    booster.fit(remote_clients(transport, nodes))
    first = booster.history_.rounds[0]
    assert first.participants == ("site_0", "site_1", "site_2") and first.restarts == 1
    assert booster.history_.rounds[1].participants == ("site_0", "site_1", "site_2")
    # the same trees as an in-process run in which site_3 drops at the same point of the first
    # tree and (an in-process dropout happens once; a lost node stays lost) again at the start
    # of the second
    from fedge.federated.trees_histogram import Dropout

    drops = [Dropout("site_3", round=0, level=0, stage=2), Dropout("site_3", round=1, stage=0)]
    ref = _hist_reference(configs, secure_aggregation="secagg+", dropouts=drops, **params)
    got, want = _tree_arrays(booster.model_), _tree_arrays(ref.model_)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_bagging_over_messages_equals_the_in_process_bagging(tmp_path):
    """Each node fits its forest with the seed the in-process run gives it: the joined model
    is the in-process one, and each node's own forest predicts exactly as its trees do inside
    the ensemble (its share of the mean)."""
    from fedge.federated.flower import read_node_table
    from fedge.federated.flower_bagging import bagging_estimator, run_bagging
    from fedge.federated.trees_bagging import federated_bagging
    from fedge.ir.runtime import predict_proba

    configs = _csvs(tmp_path, n=3)
    run = {**RUN, "model": "bagging", "n-estimators": 5, "max-depth": 4}
    grid = LocalGrid(configs, run)
    transport = FlowerTransport(grid, timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    cfg = {**__import__("fedge.federated.flower", fromlist=["x"]).RUN_CONFIG_DEFAULTS, **run}
    bagged = run_bagging(transport, cfg, nodes)
    assert grid.sent.count("train.fedge_bagging") == 3 and bagged.rejected == {}
    tables = [read_node_table(c) for c in configs.values()]
    reference = federated_bagging(
        [(X, y) for X, y, _ in tables], estimator=bagging_estimator(True, 5, 4),
        classes=[0, 1], weights="rows", random_state=run["seed"],
    )
    X_all = np.vstack([X for X, _, _ in tables])
    np.testing.assert_array_equal(predict_proba(bagged.model, X_all),
                                  predict_proba(reference, X_all))
    assert bagged.rows == [60, 60, 60] and bagged.clients == ["site_0", "site_1", "site_2"]
    assert len(bagged.model.steps[0].roots) == 15


def test_bagging_leaves_out_a_node_that_sends_garbage(tmp_path, monkeypatch):
    from fedge.federated import flower_bagging
    from fedge.federated.flower import RUN_CONFIG_DEFAULTS

    configs = _csvs(tmp_path, n=3)
    run = {**RUN_CONFIG_DEFAULTS, **RUN, "model": "bagging", "n-estimators": 3}
    grid = LocalGrid(configs, run)
    transport = FlowerTransport(grid, timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=3)
    import fedge.ir.lite as lite  # the node's writer: its output is what travels

    honest = lite.to_binary_bytes
    calls = itertools.count()

    def tampered(model):
        data = bytearray(honest(model))
        if next(calls) == 1:  # the second node's trees arrive corrupted
            data[len(data) // 2] ^= 0xFF
        return bytes(data)

    monkeypatch.setattr(lite, "to_binary_bytes", tampered)
    bagged = flower_bagging.run_bagging(transport, run, nodes)
    assert bagged.clients == ["site_0", "site_2"]
    assert "SHA-256 does not match" in bagged.rejected["site_1"]


def test_secure_hist_gbdt_run_config_needs_public_bounds(tmp_path):
    from fedge.errors import InvalidInputError
    from fedge.federated.flower_trees import hist_gbdt_from_run_config, parse_feature_range

    configs = _csvs(tmp_path, n=2)
    transport = FlowerTransport(LocalGrid(configs, RUN), timeout=5.0, poll_interval=0.0)
    nodes = transport.discover(min_nodes=2)
    run = {**RUN, "model": "hist-gbdt", "secure-aggregation": "secagg+"}
    with pytest.raises(InvalidInputError, match="needs public bin edges"):
        hist_gbdt_from_run_config(run, nodes)
    booster = hist_gbdt_from_run_config({**run, "feature-range": "-4,4"}, nodes)
    assert booster.secure_aggregation == "secagg+"
    np.testing.assert_array_equal(booster.feature_range[0], [-4.0] * 4)
    lo, hi = parse_feature_range("0:1, -1:1, 2:3, 0:10", 4)
    assert lo.tolist() == [0, -1, 2, 0] and hi.tolist() == [1, 1, 3, 10]
    for bad, why in (("1,0", "HIGH > LOW"), ("0:1,0:1", "2 bounds"), ("a,b", "LOW,HIGH")):
        with pytest.raises(InvalidInputError, match=why):
            parse_feature_range(bad, 4)
