"""What Flower costs over in-process federation, measured on a localhost deployment.

Starts a SuperLink and 3 SuperNodes as separate processes on 127.0.0.1 (the e2e tests'
``tests/e2e/flower_cluster.py``: free ports, private FLWR_HOME, no downloads), gives each node
a third of breast cancer (stratified split, seed 0), and runs through ``fedge federate --engine
flower``:

- histogram boosting, 3 trees of depth 2 (``--model hist-gbdt``): d + 1 = 3 exchanges a tree;
- bagging, 20 trees per node (``--model bagging``): one exchange;
- with ``--secure``, secure histogram boosting, 1 tree of depth 1 (every sum through SecAgg+,
  four exchanges per sum, plus the set-up sums): ~3 minutes.

For each, the same federation in-process (the same node CSVs, the same seeds) is timed, and
the table prints: the Flower run's wall time (``flwr run`` until it returns), the seconds the
ServerApp reports per tree, the in-process time, exchanges, and the overhead per exchange
((Flower tree seconds - in-process) / exchanges). The models are checked equal, so the
overhead is the price of the same result.

    .venv/bin/python benchmarks/flower_overhead.py [--secure] [--output PATH]

Also run by ``benchmarks/federated_trees.py --flower``. Results: benchmarks/results/
flower_overhead.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from provenance import ROOT, provenance, write_json

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from flower_cluster import BIN, Cluster

RESULTS = ROOT / "benchmarks" / "results" / "flower_overhead.json"
SEED = 0
TREE_LINE = re.compile(r"fedge: tree (\d+): \d+ clients .*, ([\d.]+) s")


def write_sites(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import StratifiedKFold

    X, y = load_breast_cancer(return_X_y=True)
    paths = []
    folds = StratifiedKFold(3, shuffle=True, random_state=SEED).split(X, y)
    for i, (_, rows) in enumerate(folds):
        path = root / f"hospital_{i}.csv"
        lines = [",".join(f"f{j}" for j in range(X.shape[1])) + ",label"]
        lines += [",".join(f"{v:.17g}" for v in X[r]) + f",{y[r]}" for r in rows]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths, X, y


def flower_run(cluster: Cluster, out: Path, *args: str, timeout: float) -> dict[str, Any]:
    command = [str(BIN / "fedge"), "federate", "--engine", "flower", "--superlink",
               cluster.address, "--insecure", "--min-nodes", "3", "--seed", str(SEED),
               "-o", str(out), *args]
    start = time.perf_counter()
    proc = subprocess.run(command, env=cluster.env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"flower run failed:\n{proc.stdout}\n{proc.stderr}")
    trees = [float(m.group(2)) for m in TREE_LINE.finditer(proc.stdout)]
    return {"wall_s": wall, "tree_s": trees, "log": proc.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secure", action="store_true", help="also secure boosting (~3 min)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    measure(secure=args.secure, output=args.output)


def measure(*, secure: bool = False, output: Path | None = RESULTS) -> dict[str, Any]:
    """Run the deployment, print the table, write ``output``; return the results."""
    from fedge import load
    from fedge.federated.flower import read_node_table
    from fedge.federated.flower_bagging import bagging_estimator
    from fedge.federated.flower_trees import histogram_client_from_node_config
    from fedge.federated.trees_bagging import federated_bagging
    from fedge.federated.trees_histogram import FederatedHistGradientBoosting
    from fedge.ir import runtime

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedge-flower-bench-") as tmp:
        root = Path(tmp)
        paths, X, _ = write_sites(root)
        configs = [{"data-file": str(p), "target": "label"} for p in paths]
        started = time.perf_counter()
        with Cluster(root) as cluster:
            cluster.start_superlink()
            for i, p in enumerate(paths):
                cluster.start_supernode(f"node{i}", f'data-file="{p}" target="label"')
            up = time.perf_counter() - started

            def same(run: str, reference: Any) -> bool:
                """The Flower run's model predicts the in-process model's probabilities."""
                got = load(root / run / "model.json")
                return bool(np.array_equal(runtime.predict_proba(got, X),
                                           runtime.predict_proba(reference, X)))

            def inprocess_boost(**params: Any) -> tuple[Any, float]:
                clients = [histogram_client_from_node_config(c) for c in configs]
                t0 = time.perf_counter()
                model = FederatedHistGradientBoosting(classes=[0, 1], **params).fit(clients)
                return model, time.perf_counter() - t0

            # histogram boosting, plain
            flower = flower_run(cluster, root / "boost", "--model", "hist-gbdt", "--rounds", "3",
                                "--max-depth", "2", "--lr", "0.3", "--bins", "32",
                                timeout=600)
            ref, ref_s = inprocess_boost(n_estimators=3, max_depth=2, learning_rate=0.3,
                                         max_bins=32)
            results["hist-gbdt"] = {
                "trees": 3, "depth": 2, "exchanges": 3 * 3, "flower": flower,
                "inprocess_s": ref_s,
                "equal": same("boost", ref.model_),
            }

            # bagging
            flower = flower_run(cluster, root / "bag", "--model", "bagging", "--trees", "20",
                                "--max-depth", "0", timeout=300)
            tables = sorted((read_node_table(c) for c in configs), key=lambda t: t[2])
            t0 = time.perf_counter()
            bag = federated_bagging([(a, b) for a, b, _ in tables],
                                    estimator=bagging_estimator(True, 20, 0), classes=[0, 1],
                                    weights="rows", random_state=SEED)
            bag_s = time.perf_counter() - t0
            results["bagging"] = {
                "exchanges": 1, "flower": flower, "inprocess_s": bag_s,
                "equal": same("bag", bag),
            }

            if secure:
                bounds = root / "bounds.csv"
                from sklearn.datasets import load_breast_cancer

                from fedge.data import documented_bounds

                lo, hi = documented_bounds(load_breast_cancer().DESCR, X.shape[1])
                rows = zip(lo.tolist(), hi.tolist(), strict=True)
                bounds.write_text("feature,min,max\n" + "".join(
                    f"f{j},{a!r},{b!r}\n" for j, (a, b) in enumerate(rows)))
                flower = flower_run(
                    cluster, root / "secure", "--model", "hist-gbdt", "--rounds", "1",
                    "--max-depth", "1", "--lr", "0.3", "--bins", "32", "--secure-aggregation",
                    "secagg+", "--feature-range", str(bounds), timeout=900)
                ref, ref_s = inprocess_boost(
                    n_estimators=1, max_depth=1, learning_rate=0.3, max_bins=32,
                    feature_range=(lo, hi), secure_aggregation="secagg+")
                results["secure hist-gbdt"] = {
                    "trees": 1, "depth": 1, "exchanges": 4 * 2, "flower": flower,
                    "inprocess_s": ref_s,
                    "equal": same("secure", ref.model_),
                }
    print(f"localhost SuperLink + 3 SuperNodes up in {up:.0f} s")
    print(f"{'run':<18}{'flower wall s':>14}{'tree s (sum)':>14}{'in-process s':>14}"
          f"{'exchanges':>11}{'s / exchange':>14}  same model")
    for name, r in results.items():
        tree_sum = sum(r["flower"]["tree_s"]) if r["flower"]["tree_s"] else r["flower"]["wall_s"]
        per = (tree_sum - r["inprocess_s"]) / r["exchanges"]
        r["overhead_per_exchange_s"] = per
        r["flower_over_inprocess"] = tree_sum / max(r["inprocess_s"], 1e-9)
        print(f"{name:<18}{r['flower']['wall_s']:>14.1f}{tree_sum:>14.1f}{r['inprocess_s']:>14.2f}"
              f"{r['exchanges']:>11}{per:>14.1f}  {'yes' if r['equal'] else 'NO'}")
    print("tree s: the ServerApp's own timing of the boosting rounds (exchanges inside them); "
          "bagging: the whole flwr run. The set-up exchanges (hello, bin edges, label counts) "
          "and process start-up are in the wall time only.")
    for r in results.values():
        r["flower"].pop("log")
    if output is not None:
        write_json(output, {
            "results": results, "cluster_start_s": up,
            "provenance": provenance(sorted((ROOT / "src" / "fedge" / "federated")
                                            .glob("flower*.py")), ("flwr",)),
        })
        print(f"results: {output}")
    return results


if __name__ == "__main__":
    main()
