"""End to end on Flower: a SuperLink and 3 SuperNodes as separate processes on 127.0.0.1.

3 rounds of logistic regression through ``fedge federate --engine flower`` end with the model
of the in-process run (same clients, same seeds); then one SuperNode is killed mid-run and
the run still completes with the other two; on the same SuperLink and SuperNodes, 2 trees of
depth 2 of federated histogram boosting (``--model hist-gbdt``) equal the in-process run, bagging
(``--model bagging``, one exchange) equals in-process bagging, and one SecAgg+ round of logistic
regression equals the in-process secure round. Every process runs under a timeout and is killed
at teardown. About 3 min 45 s (a Flower exchange costs ~10 s: SuperNodes poll every 3 s and
start a ClientApp process per message). Secure histogram boosting on the real SuperLink (16
exchanges for one tree of depth 1) is marked ``long`` and runs with ``make e2e-long``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedge.federated.flower import (
    NodeInfo,
    client_from_node_config,
    server_from_run_config,
)
from fedge.federated.transport import InProcessTransport

from .flower_cluster import BIN, Cluster

pytestmark = pytest.mark.slow

RUN = {"rounds": 3, "seed": 3, "epochs": 2, "batch-size": 16}


def _write_sites(root: Path) -> list[dict]:
    rng = np.random.default_rng(11)
    configs = []
    for i in range(3):
        rows = 50 + 20 * i
        X = rng.normal(size=(rows, 4)) + 0.3 * i
        y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.normal(0, 0.5, rows) > 0.3 * i).astype(int)
        path = root / f"hospital_{i}.csv"
        lines = ["a,b,c,d,label"] + [
            ",".join(f"{v:.17g}" for v in x) + f",{t}" for x, t in zip(X, y, strict=True)
        ]
        path.write_text("\n".join(lines) + "\n")
        configs.append({"data-file": str(path), "target": "label"})
    return configs


def _federate(cluster: Cluster, output: Path, rounds: int, *extra: str) -> subprocess.Popen:
    command = [
        str(BIN / "fedge"), "federate", "--engine", "flower", "--superlink", cluster.address,
        "--insecure", "--min-nodes", "3", "--rounds", str(rounds), "--seed", str(RUN["seed"]),
        "--epochs", str(RUN["epochs"]), "--batch-size", str(RUN["batch-size"]),
        "-o", str(output), *extra,
    ]
    return subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _lines(proc: subprocess.Popen, deadline: float):
    for line in proc.stdout:
        sys.stdout.write(line)
        yield line
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the Flower run did not finish in time")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    proc.stdout.close()


def _federate_to_end(
    cluster: Cluster, output: Path, rounds: int, *extra: str, budget: float
) -> str:
    """``fedge federate --engine flower`` until it exits (within ``budget`` seconds, else
    killed): its output, after asserting it succeeded."""
    start = time.monotonic()
    proc = _federate(cluster, output, rounds, *extra)
    try:
        text = "".join(_lines(proc, start + budget))
        assert proc.wait(30) == 0, text
    finally:
        _stop(proc)
    return text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower")
    configs = _write_sites(root)
    with Cluster(root) as c:
        c.start_superlink()
        for i, cfg in enumerate(configs):
            c.start_supernode(
                f"node{i}", f'data-file="{cfg["data-file"]}" target="{cfg["target"]}"'
            )
        c.configs = configs
        yield c


def test_flower_run_equals_in_process_run(cluster, tmp_path):
    text = _federate_to_end(cluster, tmp_path / "out", RUN["rounds"], budget=150)
    assert "round 3: 3/3 clients" in text
    got = np.load(tmp_path / "out" / "parameters.npz")
    got = [got[f"arr_{i}"] for i in range(len(got.files))]

    clients = [client_from_node_config(cfg, RUN) for cfg in cluster.configs]
    nodes = {
        c.client_id: NodeInfo(i, c.client_id, c.X.shape[1], c.num_examples, [0, 1])
        for i, c in enumerate(clients)
    }
    server = server_from_run_config(RUN, nodes)
    server.fit(InProcessTransport(clients), RUN["rounds"])
    for a, b in zip(got, server.global_parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert (tmp_path / "out" / "model.json").exists()


def test_flower_hist_boosting_equals_in_process_run(cluster, tmp_path):
    """2 trees of depth 2 boosted over the 3 SuperNodes (runs before the kill test: same
    cluster): per tree one exchange per depth level, plus the leaves' totals."""
    from fedge import load, save
    from fedge.federated.flower_trees import histogram_client_from_node_config
    from fedge.federated.trees_histogram import FederatedHistGradientBoosting

    text = _federate_to_end(cluster, tmp_path / "out", 2, "--model", "hist-gbdt",
                            "--max-depth", "2", "--lr", "0.3", "--bins", "16", budget=150)
    assert "tree 2: 3 clients" in text, text
    reference = FederatedHistGradientBoosting(
        classes=[0, 1], n_estimators=2, max_depth=2, learning_rate=0.3, max_bins=16
    ).fit([histogram_client_from_node_config(cfg) for cfg in cluster.configs])
    save(reference.model_, tmp_path / "reference.json")
    got, want = load(tmp_path / "out" / "model.json"), load(tmp_path / "reference.json")
    ea, eb = got.steps[0], want.steps[0]
    for key in ("feature", "threshold", "left", "right", "missing_left", "leaf_values",
                "roots", "tree_offset", "base_score"):
        np.testing.assert_array_equal(getattr(ea, key), getattr(eb, key), err_msg=key)
    X = np.vstack([histogram_client_from_node_config(cfg).X for cfg in cluster.configs])
    from fedge.ir import runtime

    np.testing.assert_array_equal(runtime.predict_proba(got, X),
                                  runtime.predict_proba(reference.model_, X))


def test_flower_bagging_equals_in_process_bagging(cluster, tmp_path):
    """One exchange: each SuperNode fits 5 trees on its rows and sends them as a lite binary;
    the joined model equals in-process federated_bagging with the same seeds."""
    from fedge import load
    from fedge.federated.flower import read_node_table
    from fedge.federated.flower_bagging import bagging_estimator
    from fedge.federated.trees_bagging import federated_bagging
    from fedge.ir import runtime

    text = _federate_to_end(cluster, tmp_path / "out", 1, "--model", "bagging", "--trees", "5",
                            "--max-depth", "4", budget=120)
    assert "bagged the trees of 3 clients" in text, text
    tables = sorted((read_node_table(cfg) for cfg in cluster.configs), key=lambda t: t[2])
    reference = federated_bagging(
        [(X, y) for X, y, _ in tables], estimator=bagging_estimator(True, 5, 4),
        classes=[0, 1], weights="rows", random_state=RUN["seed"],
    )
    X = np.vstack([X for X, _, _ in tables])
    got = load(tmp_path / "out" / "model.json")
    np.testing.assert_array_equal(runtime.predict_proba(got, X),
                                  runtime.predict_proba(reference, X))


def test_flower_secure_round_equals_in_process_run(cluster, tmp_path):
    """One round of logistic regression through SecAgg+ over the real SuperLink: training and
    the four protocol stages as four exchanges (the stages histogram sums also use); the model
    equals the in-process secure round (fixed point: 1e-6)."""
    text = _federate_to_end(cluster, tmp_path / "out", 1, "--secure-aggregation", "secagg+",
                            "--secure-clip", "100", budget=120)
    assert "round 1: 3/3 clients" in text, text
    got = np.load(tmp_path / "out" / "parameters.npz")
    got = [got[f"arr_{i}"] for i in range(len(got.files))]
    run = {**RUN, "rounds": 1, "secure-aggregation": "secagg+", "secure-clip": 100.0}
    clients = [client_from_node_config(cfg, run) for cfg in cluster.configs]
    nodes = {
        c.client_id: NodeInfo(i, c.client_id, c.X.shape[1], c.num_examples, [0, 1])
        for i, c in enumerate(clients)
    }
    server = server_from_run_config(run, nodes)
    server.fit(InProcessTransport(clients), 1)
    for a, b in zip(got, server.global_parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.long
def test_flower_secure_hist_boosting_equals_in_process_run(cluster, tmp_path, capsys):
    """One tree of depth 1 with every sum (grid counts, label counts, two levels) through
    SecAgg+ over real Flower messages: four exchanges per sum, 16 in all (~155 s here, so
    outside ``make test``: ``make e2e-long``); the same tree as in-process."""
    from fedge import load
    from fedge.federated.flower_trees import histogram_client_from_node_config
    from fedge.federated.trees_histogram import FederatedHistGradientBoosting

    bounds = tmp_path / "bounds.csv"
    bounds.write_text("feature,min,max\n" + "".join(f"{c},-5,5\n" for c in "abcd"))
    start = time.monotonic()
    text = _federate_to_end(cluster, tmp_path / "out", 1, "--model", "hist-gbdt",
                            "--max-depth", "1", "--lr", "0.3", "--bins", "8",
                            "--secure-aggregation", "secagg+", "--feature-range", str(bounds),
                            budget=240)
    assert "tree 1: 3 clients" in text, text
    reference = FederatedHistGradientBoosting(
        classes=[0, 1], n_estimators=1, max_depth=1, learning_rate=0.3, max_bins=8,
        feature_range=(-5.0, 5.0), grid_size=1024, secure_aggregation="secagg+",
    ).fit([histogram_client_from_node_config(cfg) for cfg in cluster.configs])
    got, want = load(tmp_path / "out" / "model.json").steps[0], reference.model_.steps[0]
    for key in ("feature", "threshold", "left", "right", "leaf_values", "base_score"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)
    with capsys.disabled():
        print(f"\nsecure boosting on Flower: {time.monotonic() - start:.0f} s")


def test_a_supernode_killed_mid_run(cluster, tmp_path):
    start = time.monotonic()
    proc = _federate(cluster, tmp_path / "out", 2, "--fit-timeout", "20")
    seen = []
    try:
        for line in _lines(proc, start + 120):
            seen.append(line)
            if "round 1: 3/3 clients" in line:
                cluster.kill("node2")
        assert proc.wait(30) == 0, "".join(seen)
    finally:
        _stop(proc)
    text = "".join(seen)
    assert "round 1: 3/3 clients, 0 failed" in text
    assert "round 2: 2/3 clients, 1 failed" in text
    assert (tmp_path / "out" / "parameters.npz").exists()
