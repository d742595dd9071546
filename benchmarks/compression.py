"""The seed's compression table, measured: bytes and accuracy per stage, for five model kinds
on three datasets and several seeds, with the "just train a smaller model" control.

For every (dataset, model, seed): a 60/20/20 train/validation/test split; the source
model's pickle; its lossless lite file; fedge's int8 pass alone; AutoCompress with a
one-point budget, chosen on the validation split only; the test accuracy of each; and a
control trained directly at the compressed model's shape (trees kept, depth, hidden
widths) then stored the same way. Prints medians over datasets and seeds and the targets
of the compression issue, and writes benchmarks/results/compression.json.

    .venv/bin/python benchmarks/compression.py [--seeds 3] [--models rf,xgb,lgbm,logreg,mlp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

import fedge
from fedge.compression import ModelPruner, ModelQuantizer, evaluate, lite_bytes, pickle_bytes
from fedge.compression.search import auto_compress
from fedge.ir import QuantizedTrees, TreeEnsemble

RESULTS = Path(__file__).parent / "results" / "compression.json"
TARGETS = {  # pickle / bytes, and accuracy points lost on the test split
    "rf": {"lossless_x": 20, "budget_x": 100},
    "xgb": {"lossless_x": 7, "budget_x": 30},
    "lgbm": {"lossless_x": 7, "budget_x": 30},
    "logreg": {"int8_drop": 0.3},
    "mlp": {"int8_drop": 0.3, "gradual_drop": 0.6},
}


def datasets(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    X, y = make_classification(5000, 20, n_informative=10, n_classes=3, random_state=seed)
    return {
        "breast_cancer": load_breast_cancer(return_X_y=True),
        "digits": load_digits(return_X_y=True),
        "synthetic_3class": (X, y),
    }


def make_model(kind: str, seed: int) -> Any:
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    return {
        "rf": lambda: RandomForestClassifier(100, random_state=seed, n_jobs=1),
        "xgb": lambda: XGBClassifier(n_estimators=100, max_depth=6, random_state=seed, n_jobs=1),
        "lgbm": lambda: LGBMClassifier(n_estimators=100, random_state=seed, verbose=-1),
        "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "mlp": lambda: make_pipeline(
            StandardScaler(), MLPClassifier((64, 32), max_iter=300, random_state=seed)
        ),
    }[kind]()


def control(kind: str, source: Any, compressed: fedge.Model, seed: int) -> Any | None:
    """The source estimator retrained at the compressed model's shape (None: no smaller
    shape to train, e.g. logistic regression)."""
    trees = [s for s in compressed.steps if isinstance(s, TreeEnsemble | QuantizedTrees)]
    est = clone(source)
    if kind == "rf":
        step = trees[0]
        return est.set_params(n_estimators=step.n_trees, max_depth=step.max_depth or None)
    if kind in ("xgb", "lgbm"):
        step = trees[0]
        per_round = max(1, len({int(o) for o in step.tree_offset}))
        params = {"n_estimators": max(1, step.n_trees // per_round)}
        if kind == "xgb":
            params["max_depth"] = max(1, step.max_depth)
        return est.set_params(**params)
    if kind == "mlp":
        widths = [s.n_outputs for s in compressed.steps if hasattr(s, "weights")][:-1]
        if not widths or widths == [64, 32]:
            return None
        return est.set_params(mlpclassifier__hidden_layer_sizes=tuple(widths))
    return None


def same_precision(model: fedge.Model, reference: fedge.Model) -> fedge.Model:
    """Quantize ``model`` as ``reference`` was (so the control is stored like the result)."""
    passes = [p for p in reference.metadata.get("compression", []) if p["pass"] == "quantization"]
    if not passes:
        return model
    return ModelQuantizer(passes[-1]["strategy"]).quantize_model(model)


def run_one(kind: str, name: str, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    X_tr, X_rest, y_tr, y_rest = train_test_split(
        X, y, test_size=0.4, random_state=seed, stratify=y
    )
    X_val, X_te, y_val, y_te = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        source = make_model(kind, seed).fit(X_tr, y_tr)
    ir = fedge.lower(source)
    acc = evaluate(ir, X_te, y_te)["accuracy"]
    row: dict[str, Any] = {
        "model": kind,
        "dataset": name,
        "seed": seed,
        "pickle_bytes": pickle_bytes(source),
        "lossless_bytes": lite_bytes(ir),
        "test_accuracy": acc,
    }
    int8 = ModelQuantizer("int8").quantize_model(ir)
    row["int8_bytes"] = lite_bytes(int8)
    row["int8_drop_points"] = 100 * (acc - evaluate(int8, X_te, y_te)["accuracy"])
    if kind == "mlp":  # 80% sparsity in 10 rounds, fine-tuned on the training rows
        gradual = ModelPruner(0.8, "gradual").prune_model(source, X_tr, y_tr)
        row["gradual80_bytes"] = lite_bytes(gradual)
        row["gradual80_drop_points"] = 100 * (acc - evaluate(gradual, X_te, y_te)["accuracy"])
    result = auto_compress(ir, X_val, y_val, max_accuracy_drop=0.01, seed=seed)
    row["chosen"] = " + ".join(result.best.passes)
    row["compressed_bytes"] = result.best.bytes
    row["compressed_drop_points"] = 100 * (acc - evaluate(result.model, X_te, y_te)["accuracy"])
    small = control(kind, source, result.model, seed)
    if small is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            small.fit(X_tr, y_tr)
        stored = same_precision(fedge.lower(small), result.model)
        row["control_bytes"] = lite_bytes(stored)
        row["control_drop_points"] = 100 * (acc - evaluate(stored, X_te, y_te)["accuracy"])
    return row


def summarise(rows: list[dict[str, Any]], console: Console) -> dict[str, Any]:
    table = Table(title="fedge compression (medians over datasets and seeds; test split)")
    for col in (
        "model",
        "pickle KB",
        "lossless x",
        "int8 x",
        "int8 drop pt",
        "AutoCompress x",
        "drop pt",
        "control x",
        "control drop pt",
        "targets",
    ):
        table.add_column(col, justify="left" if col in ("model", "targets") else "right")
    summary = {}
    for kind in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == kind]

        def med(key: str, rows: list[dict[str, Any]] = mine) -> float:
            values = [r[key] for r in rows if key in r]
            return statistics.median(values) if values else float("nan")

        ratios = {
            "lossless_x": statistics.median(r["pickle_bytes"] / r["lossless_bytes"] for r in mine),
            "int8_x": statistics.median(r["pickle_bytes"] / r["int8_bytes"] for r in mine),
            "budget_x": statistics.median(r["pickle_bytes"] / r["compressed_bytes"] for r in mine),
        }
        controls = [r for r in mine if "control_bytes" in r]
        control_x = (
            statistics.median(r["pickle_bytes"] / r["control_bytes"] for r in controls)
            if controls
            else float("nan")
        )
        verdicts = []
        for key, goal in TARGETS[kind].items():
            if key in ("int8_drop", "gradual_drop"):
                what = "int8" if key == "int8_drop" else "gradual80"
                ok = med(f"{what}_drop_points") <= goal
                verdicts.append(f"{what} <= {goal} pt {'PASS' if ok else 'MISS'}")
            else:
                ok = ratios[key] >= goal
                verdicts.append(f"{key.split('_')[0]} >= {goal}x {'PASS' if ok else 'MISS'}")
        summary[kind] = {
            **ratios,
            "int8_drop_points": med("int8_drop_points"),
            "gradual80_drop_points": med("gradual80_drop_points"),
            "compressed_drop_points": med("compressed_drop_points"),
            "control_x": control_x,
            "control_drop_points": med("control_drop_points", controls),
            "verdicts": verdicts,
        }
        table.add_row(
            kind,
            f"{med('pickle_bytes') / 1024:.0f}",
            f"{ratios['lossless_x']:.1f}",
            f"{ratios['int8_x']:.1f}",
            f"{med('int8_drop_points'):+.2f}",
            f"{ratios['budget_x']:.1f}",
            f"{med('compressed_drop_points'):+.2f}",
            f"{control_x:.1f}",
            f"{med('control_drop_points', controls):+.2f}",
            "; ".join(verdicts),
        )
    console.print(table)
    console.print(
        "x = pickle bytes / fedge lite bytes; drop pt = accuracy points lost on the test split "
        "(negative: gained). AutoCompress chooses on validation rows only, budget 1 point. "
        "control = the same library trained directly at the compressed shape, stored alike."
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="rf,xgb,lgbm,logreg,mlp")
    args = parser.parse_args()
    kinds = args.models.split(",")
    console = Console()
    rows = []
    jobs = [(k, s) for s in range(args.seeds) for k in kinds]
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("compressing", total=len(jobs) * 3)
        for kind, seed in jobs:
            for name, (X, y) in datasets(seed).items():
                bar.update(task, description=f"{kind} on {name}, seed {seed}")
                rows.append(run_one(kind, name, X, y, seed))
                bar.advance(task)
    summary = summarise(rows, console)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
