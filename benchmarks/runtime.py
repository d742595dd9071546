"""How fast is the numpy runtime (the oracle) next to the source library's own predict_proba?

Times fedge's reference and device modes and scikit-learn in the same run, on
make_classification(20000 rows, 20 features, 3 classes, random_state=0), and
prints the ratios (medians of several runs; the machine is shared and noisy).
Speed is the compiled C backend's job; this keeps the oracle usable in tests.

    .venv/bin/python benchmarks/runtime.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

import fedge

RESULTS = Path(__file__).parent / "results" / "runtime.json"


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    X, y = make_classification(20000, 20, n_informative=10, n_classes=3, random_state=0)
    estimators = {
        "RandomForest(100, depth 10)": RandomForestClassifier(
            100, max_depth=10, random_state=0, n_jobs=1
        ),
        "LogisticRegression": LogisticRegression(max_iter=1000),
        "MLP(32, 16)": MLPClassifier((32, 16), max_iter=50, random_state=0),
    }
    rows = []
    print(
        f"{'model':30} {'sklearn ms':>11} {'reference ms':>13} {'device ms':>10} "
        f"{'ref/sklearn':>12} {'dev/sklearn':>12}"
    )
    for name, est in estimators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        model = fedge.lower(est)
        t_sk = median_seconds(lambda e=est: e.predict_proba(X), args.repeats)
        t_ref = median_seconds(lambda m=model: fedge.predict_proba(m, X), args.repeats)
        t_dev = median_seconds(
            lambda m=model: fedge.predict_proba(m, X, mode="device"), args.repeats
        )
        row = {
            "model": name,
            "rows": X.shape[0],
            "sklearn_s": t_sk,
            "reference_s": t_ref,
            "device_s": t_dev,
            "reference_over_sklearn": t_ref / t_sk,
            "device_over_sklearn": t_dev / t_sk,
        }
        rows.append(row)
        print(
            f"{name:30} {t_sk * 1e3:11.1f} {t_ref * 1e3:13.1f} {t_dev * 1e3:10.1f} "
            f"{row['reference_over_sklearn']:12.2f} {row['device_over_sklearn']:12.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
