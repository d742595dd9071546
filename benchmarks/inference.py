"""Inference latency and throughput: fedge's optimizer next to scikit-learn and onnxruntime.

Trains RandomForest(100, depth 10), XGBoost(100, depth 6) and LogisticRegression on the C
issue's data (make_classification 20,000 x 20, 10 informative, 3 classes, random_state=0;
25% held out) and measures, in one run, on one thread:

- single-row latency p50/p99 (microseconds; each row one call, input check included) for
  scikit-learn ``predict``, onnxruntime (on skl2onnx's conversion, the anchor; where skl2onnx
  cannot convert, XGBoost, on fedge's ONNX export; fedge's ONNX file is also timed), and
  fedge's backends through :class:`~fedge.deployment.InferenceOptimizer` (compiled C, numpy
  runtime);
- batch throughput on 10,000 rows (rows/s, median of repeats) for the same, plus XGBoost's
  ``inplace_predict``;
- micro-batching: 64 concurrent asyncio requests answered by ``apredict`` in shared batches
  against the same requests answered one backend call each (throughput ratio);
- the cost of a cache hit (microseconds).

Prints the ratios against the issue's targets (single-row p50 <= 0.3x onnxruntime and <= 0.01x
scikit-learn; batch >= 1.5x onnxruntime for tree ensembles and no worse than the library's own
batch predict; micro-batching >= 5x; cache hit <= 2 us). Results:
benchmarks/results/inference.json.

    .venv/bin/python benchmarks/inference.py [--quick]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from fedge.deployment.inference_optimizer import InferenceOptimizer  # noqa: E402
from fedge.errors import FedgeError  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "inference.json"
TARGETS = {
    "p50_vs_onnxruntime": 0.3,
    "p50_vs_sklearn": 0.01,
    "batch_vs_onnxruntime_trees": 1.5,
    "microbatch_speedup": 5.0,
    "cache_hit_us": 2.0,
}


def models() -> dict[str, Any]:
    from xgboost import XGBClassifier

    return {
        "rf": RandomForestClassifier(100, max_depth=10, random_state=0, n_jobs=1),
        "xgb": XGBClassifier(n_estimators=100, max_depth=6, random_state=0, n_jobs=1),
        "logreg": LogisticRegression(max_iter=2000),
    }


def single_row_us(predict: Any, rows: np.ndarray) -> tuple[float, float]:
    times = np.empty(len(rows))
    for i, row in enumerate(rows):
        start = time.perf_counter()
        predict(row)
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


def batch_rows_per_s(predict: Any, X: np.ndarray, repeats: int) -> float:
    predict(X[:100])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(X)
        times.append(time.perf_counter() - start)
    return len(X) / statistics.median(times)


def onnx_session(model: Any, via: str) -> Any:
    """An onnxruntime predict function for ``model`` converted by skl2onnx (the anchor users
    reach for) or by fedge's exporter; None when that converter cannot do it."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        if via == "skl2onnx":
            from skl2onnx import to_onnx as skl_to_onnx

            proto = skl_to_onnx(model, np.zeros((1, model.n_features_in_), np.float32),
                                options={id(model): {"zipmap": False}})
        else:
            from fedge.deployment.formats.onnx import to_onnx

            proto = to_onnx(model)
    except (ImportError, FedgeError, RuntimeError, TypeError, ValueError):
        return None
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    label = session.get_outputs()[0].name
    return lambda X: session.run([label], {name: np.asarray(X, np.float32).reshape(-1,
                                                                                   X.shape[-1])})


def micro_batching(estimator: Any, backend: str, rows: np.ndarray, repeats: int) -> float:
    """Throughput of 64 concurrent ``apredict`` requests micro-batched (max_batch 64) over
    the same requests answered one backend call each (max_batch 1), in one event loop."""

    async def serve(max_batch: int) -> float:
        with InferenceOptimizer(estimator, backend=backend, max_batch=max_batch,
                                max_wait_ms=0.5, cache_size=0) as opt:
            opt.warm_up()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                await asyncio.gather(*(opt.apredict(r) for r in rows))
                times.append(time.perf_counter() - start)
            return statistics.median(times)

    async def both() -> float:
        return await serve(1) / await serve(len(rows))

    return asyncio.run(both())


def measure(name: str, estimator: Any, X_test: np.ndarray, quick: bool) -> dict[str, Any]:
    singles = X_test[: 200 if quick else 1000]
    batch = np.resize(X_test, (10_000, X_test.shape[1]))  # the test rows, repeated to 10,000
    repeats = 3 if quick else 7
    out: dict[str, Any] = {"model": name}
    sk_rows = singles[: 50 if quick else 200]
    out["sklearn"] = {
        "p50_us": None, "p99_us": None,
        "rows_per_s": batch_rows_per_s(estimator.predict, batch, repeats),
    }
    out["sklearn"]["p50_us"], out["sklearn"]["p99_us"] = single_row_us(
        lambda r: estimator.predict(r.reshape(1, -1)), sk_rows
    )
    if name == "xgb":
        booster = estimator.get_booster()
        out["xgboost_inplace_predict"] = {
            "rows_per_s": batch_rows_per_s(lambda X: booster.inplace_predict(X), batch, repeats)
        }
    for via, key in (("skl2onnx", "onnxruntime"), ("fedge", "onnxruntime_fedge_onnx")):
        session = onnx_session(estimator, via)
        if session is not None:
            p50, p99 = single_row_us(lambda r, s=session: s(r.reshape(1, -1)), singles)
            out[key] = {"p50_us": p50, "p99_us": p99,
                        "rows_per_s": batch_rows_per_s(session, batch, repeats)}
    if "onnxruntime" not in out and "onnxruntime_fedge_onnx" in out:
        out["onnxruntime"] = out.pop("onnxruntime_fedge_onnx")  # skl2onnx cannot: fedge's file
        out["onnxruntime"]["converter"] = "fedge"
    for backend in ("compiled", "numpy"):
        with InferenceOptimizer(estimator, backend=backend, chunk_size=10_000) as opt:
            opt.warm_up()
            p50, p99 = single_row_us(lambda r, o=opt: o._one_row(o._check_row(r)), singles)
            report = opt.benchmark(singles, single_rows=10, batch_repeats=1)
            out[f"fedge_{backend}"] = {
                "p50_us": p50, "p99_us": p99,
                "rows_per_s": batch_rows_per_s(opt.predict, batch, repeats),
                "cache_hit_us": report.cache_hit_us,
                "microbatch_speedup": micro_batching(estimator, backend, X_test[:64], repeats),
            }
    return out


def verdicts(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in results:
        fedge_c = r["fedge_compiled"]
        checks: dict[str, Any] = {}
        checks["p50_vs_sklearn"] = fedge_c["p50_us"] / r["sklearn"]["p50_us"]
        if "onnxruntime" in r:
            checks["p50_vs_onnxruntime"] = fedge_c["p50_us"] / r["onnxruntime"]["p50_us"]
            checks["batch_vs_onnxruntime"] = (
                fedge_c["rows_per_s"] / r["onnxruntime"]["rows_per_s"]
            )
        library = r.get("xgboost_inplace_predict", r["sklearn"])["rows_per_s"]
        checks["batch_vs_library"] = fedge_c["rows_per_s"] / library
        checks["microbatch_speedup"] = fedge_c["microbatch_speedup"]
        checks["cache_hit_us"] = fedge_c["cache_hit_us"]
        met = {
            "p50_vs_sklearn": checks["p50_vs_sklearn"] <= TARGETS["p50_vs_sklearn"],
            "batch_vs_library": checks["batch_vs_library"] >= 1.0,
            "microbatch_speedup": checks["microbatch_speedup"] >= TARGETS["microbatch_speedup"],
            "cache_hit_us": checks["cache_hit_us"] <= TARGETS["cache_hit_us"],
        }
        if "p50_vs_onnxruntime" in checks:
            met["p50_vs_onnxruntime"] = checks["p50_vs_onnxruntime"] <= TARGETS[
                "p50_vs_onnxruntime"
            ]
            if r["model"] != "logreg":
                met["batch_vs_onnxruntime"] = checks["batch_vs_onnxruntime"] >= TARGETS[
                    "batch_vs_onnxruntime_trees"
                ]
        out[r["model"]] = {"ratios": checks, "met": met}
    return out


def print_tables(console: Console, results: list[dict[str, Any]], verdict: dict[str, Any]) -> None:
    table = Table(title="Inference, one thread (single row: us per call; batch: rows/s on "
                  "10,000 rows)", title_justify="left")
    for col in ("model", "runtime", "p50 us", "p99 us", "rows/s", "cache hit us",
                "micro-batch x"):
        table.add_column(col, justify="left" if col in ("model", "runtime") else "right")
    for r in results:
        for runtime in ("sklearn", "xgboost_inplace_predict", "onnxruntime",
                        "onnxruntime_fedge_onnx", "fedge_compiled", "fedge_numpy"):
            if runtime not in r:
                continue
            m = r[runtime]

            def cell(key: str, fmt: str, m: dict[str, Any] = m) -> str:
                value = m.get(key)
                return "-" if value is None else format(value, fmt)

            table.add_row(r["model"], runtime, cell("p50_us", ".1f"), cell("p99_us", ".1f"),
                          cell("rows_per_s", ",.0f"), cell("cache_hit_us", ".2f"),
                          cell("microbatch_speedup", ".1f"))
    console.print(table)
    targets = Table(title="Targets", title_justify="left")
    for col in ("model", "check", "value", "verdict"):
        targets.add_column(col)
    for model, v in verdict.items():
        for key, ok in v["met"].items():
            value = v["ratios"].get(key)
            targets.add_row(model, key, "-" if value is None else f"{value:.3g}",
                            "[green]MET[/]" if ok else "[red]MISSED[/]")
    console.print(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    parser.add_argument("--models", default="rf,xgb,logreg")
    args = parser.parse_args()
    console = Console(width=120)
    X, y = make_classification(20000, 20, n_informative=10, n_classes=3, random_state=0)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0)
    results = []
    for name, estimator in models().items():
        if name not in args.models.split(","):
            continue
        estimator.fit(X_train, y_train)
        console.print(f"measuring {name} ...")
        results.append(measure(name, estimator, X_test, args.quick))
    verdict = verdicts(results)
    print_tables(console, results, verdict)
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({
            "results": results, "verdicts": verdict, "targets": TARGETS,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }, indent=1) + "\n")
        console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
