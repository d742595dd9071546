"""The seed's compression table, measured: bytes and accuracy per stage, for five model kinds
on three datasets and several seeds, with the "just train a smaller model" control.

For every (dataset, model, seed): a 60/20/20 train/validation/test split; the source
model's pickle; its lossless lite file; fedge's int8 pass alone; AutoCompress with a
one-point budget, chosen on the validation split only, with and without distilled
students among its candidates (both timed); the test accuracy of each; and a control
trained directly at the compressed model's shape (trees kept, depth, hidden widths) then
stored the same way. Prints medians over datasets and seeds and the targets of the
compression issue.

Distillation (per dataset and seed, same split): a RandomForest(100) teacher; single trees
of depth 4, 6 and 8 trained directly on the training rows, and the same trees distilled
from the teacher on those rows, temperature, label weight and MUNGE transfer rows chosen
on the validation split from a fixed grid; test accuracy of both, and MET/MISSED against
the issue's target (distilled >= 1 point better, mean over seeds).

Writes benchmarks/results/compression.json.

    .venv/bin/python benchmarks/compression.py [--seeds 3] [--models rf,xgb,lgbm,logreg,mlp]
        [--no-distill-row] [--only-distill-row]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
from sklearn.tree import DecisionTreeClassifier

import fedge
from fedge.compression import ModelPruner, ModelQuantizer, evaluate, lite_bytes, pickle_bytes
from fedge.compression.distillation import KnowledgeDistiller
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
DISTILL_TARGET = 1.0  # points of test accuracy a distilled student gains over direct training
STUDENT_DEPTHS = (4, 6, 8)
#: the distillation grid chosen from on the validation split: temperature, weight of the
#: teacher's targets (alpha) and MUNGE transfer rows per training row
DISTILL_GRID = [(t, a, m) for t in (1.0, 3.0) for a in (0.5, 1.0) for m in (0, 2, 5)]


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


def split(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """60/20/20 train/validation/test, stratified, seeded."""
    X_tr, X_rest, y_tr, y_rest = train_test_split(
        X, y, test_size=0.4, random_state=seed, stratify=y
    )
    X_val, X_te, y_val, y_te = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    return X_tr, y_tr, X_val, y_val, X_te, y_te


def run_one(kind: str, name: str, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    X_tr, y_tr, X_val, y_val, X_te, y_te = split(X, y, seed)
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
    start = time.perf_counter()
    plain = auto_compress(ir, X_val, y_val, max_accuracy_drop=0.01, seed=seed, distill=False)
    row["search_seconds_plain"] = time.perf_counter() - start
    start = time.perf_counter()
    result = auto_compress(ir, X_val, y_val, max_accuracy_drop=0.01, seed=seed)
    row["search_seconds"] = time.perf_counter() - start
    row["chosen"] = " + ".join(result.best.passes)
    row["chosen_student"] = result.best.passes[0].startswith("distill ")
    row["compressed_bytes"] = result.best.bytes
    row["compressed_drop_points"] = 100 * (acc - evaluate(result.model, X_te, y_te)["accuracy"])
    row["plain_chosen"] = " + ".join(plain.best.passes)
    row["plain_bytes"] = plain.best.bytes
    row["plain_drop_points"] = 100 * (acc - evaluate(plain.model, X_te, y_te)["accuracy"])
    small = control(kind, source, result.model, seed)
    if small is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            small.fit(X_tr, y_tr)
        stored = same_precision(fedge.lower(small), result.model)
        row["control_bytes"] = lite_bytes(stored)
        row["control_drop_points"] = 100 * (acc - evaluate(stored, X_te, y_te)["accuracy"])
    return row


def distill_one(name: str, X: np.ndarray, y: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """Per student depth: the tree trained directly vs distilled from a forest teacher,
    the distillation settings chosen on the validation split, accuracy on the test split."""
    X_tr, y_tr, X_val, y_val, X_te, y_te = split(X, y, seed)
    teacher = fedge.lower(make_model("rf", seed).fit(X_tr, y_tr))
    teacher_acc = evaluate(teacher, X_te, y_te)["accuracy"]
    tried: dict[int, list[tuple[float, float, int, tuple[float, float, int]]]] = {
        d: [] for d in STUDENT_DEPTHS
    }
    for temperature, alpha, per_row in DISTILL_GRID:
        distiller = KnowledgeDistiller(  # one per setting: its transfer rows serve every depth
            teacher,
            temperature=temperature,
            alpha=alpha,
            transfer_rows=per_row * len(y_tr),
            seed=seed,
        )
        for depth in STUDENT_DEPTHS:
            student = fedge.lower(
                distiller.distill(
                    DecisionTreeClassifier(max_depth=depth, random_state=seed), X_tr, y_tr
                )
            )
            val = evaluate(student, X_val, y_val)["accuracy"]
            test = evaluate(student, X_te, y_te)["accuracy"]
            tried[depth].append((val, test, lite_bytes(student), (temperature, alpha, per_row)))
    rows = []
    for depth in STUDENT_DEPTHS:
        direct = fedge.lower(
            DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(X_tr, y_tr)
        )
        direct_acc = evaluate(direct, X_te, y_te)["accuracy"]
        val, test, size, (temperature, alpha, per_row) = max(tried[depth], key=lambda t: t[0])
        rows.append(
            {
                "dataset": name,
                "seed": seed,
                "student": f"tree:{depth}",
                "teacher_test_accuracy": teacher_acc,
                "direct_test_accuracy": direct_acc,
                "direct_bytes": lite_bytes(direct),
                "distilled_test_accuracy": test,
                "distilled_val_accuracy": val,
                "distilled_bytes": size,
                "temperature": temperature,
                "alpha": alpha,
                "transfer_rows_per_row": per_row,
                "gain_points": 100 * (test - direct_acc),
            }
        )
    return rows


def summarise_distillation(rows: list[dict[str, Any]], console: Console) -> dict[str, Any]:
    table = Table(
        title="Distilled vs directly trained student (RandomForest(100) teacher; test split; "
        "mean over seeds)"
    )
    for col in (
        "dataset",
        "student",
        "teacher acc",
        "direct acc",
        "distilled acc",
        "gain pt",
        "gain per seed",
        "chosen T/alpha/munge",
        f"target +{DISTILL_TARGET:g} pt",
    ):
        table.add_column(col, justify="left" if col in ("dataset", "student") else "right")
    summary: dict[str, Any] = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for student in dict.fromkeys(r["student"] for r in rows):
            mine = [r for r in rows if r["dataset"] == name and r["student"] == student]
            gain = statistics.mean(r["gain_points"] for r in mine)
            verdict = "MET" if gain >= DISTILL_TARGET else "MISSED"
            summary[f"{name}/{student}"] = {
                "teacher_test_accuracy": statistics.mean(r["teacher_test_accuracy"] for r in mine),
                "direct_test_accuracy": statistics.mean(r["direct_test_accuracy"] for r in mine),
                "distilled_test_accuracy": statistics.mean(
                    r["distilled_test_accuracy"] for r in mine
                ),
                "gain_points": gain,
                "gain_points_per_seed": [r["gain_points"] for r in mine],
                "verdict": verdict,
            }
            table.add_row(
                name,
                student,
                f"{summary[f'{name}/{student}']['teacher_test_accuracy']:.4f}",
                f"{summary[f'{name}/{student}']['direct_test_accuracy']:.4f}",
                f"{summary[f'{name}/{student}']['distilled_test_accuracy']:.4f}",
                f"{gain:+.2f}",
                " ".join(f"{r['gain_points']:+.1f}" for r in mine),
                " ".join(
                    f"{r['temperature']:g}/{r['alpha']:g}/{r['transfer_rows_per_row']}x"
                    for r in mine
                ),
                verdict,
            )
    met = sum(v["verdict"] == "MET" for v in summary.values())
    overall = statistics.mean(r["gain_points"] for r in rows)
    summary["overall"] = {"met": met, "of": len(summary), "mean_gain_points": overall}
    console.print(table)
    console.print(
        f"distilled >= direct + {DISTILL_TARGET:g} pt: MET in {met} of {len(summary) - 1} "
        f"(dataset, student) pairs; mean gain over all {overall:+.2f} pt. Settings from "
        f"{len(DISTILL_GRID)} (temperature, alpha, MUNGE rows per training row) on the "
        "validation split; the direct tree has no setting to choose."
    )
    return summary


def summarise_students(rows: list[dict[str, Any]], console: Console) -> dict[str, Any]:
    table = Table(
        title="AutoCompress with and without distilled students (1-point budget on validation; "
        "medians; test split)"
    )
    for col in (
        "model",
        "x without",
        "drop pt without",
        "x with",
        "drop pt with",
        "student chosen",
        "search s without",
        "search s with",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    summary = {}
    for kind in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == kind]
        entry = {
            "plain_x": statistics.median(r["pickle_bytes"] / r["plain_bytes"] for r in mine),
            "plain_drop_points": statistics.median(r["plain_drop_points"] for r in mine),
            "with_students_x": statistics.median(
                r["pickle_bytes"] / r["compressed_bytes"] for r in mine
            ),
            "with_students_drop_points": statistics.median(
                r["compressed_drop_points"] for r in mine
            ),
            "student_chosen": sum(r["chosen_student"] for r in mine),
            "runs": len(mine),
            "search_seconds_plain": statistics.median(r["search_seconds_plain"] for r in mine),
            "search_seconds": statistics.median(r["search_seconds"] for r in mine),
        }
        summary[kind] = entry
        table.add_row(
            kind,
            f"{entry['plain_x']:.1f}",
            f"{entry['plain_drop_points']:+.2f}",
            f"{entry['with_students_x']:.1f}",
            f"{entry['with_students_drop_points']:+.2f}",
            f"{entry['student_chosen']} of {entry['runs']}",
            f"{entry['search_seconds_plain']:.1f}",
            f"{entry['search_seconds']:.1f}",
        )
    console.print(table)
    console.print(
        "Students learn from half of the validation rows (plus MUNGE rows labelled by the "
        "model) and are scored on the other half like every candidate."
    )
    return summary


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
    parser.add_argument(
        "--no-distill-row", action="store_true", help="Skip the distilled-vs-direct students."
    )
    parser.add_argument(
        "--only-distill-row",
        action="store_true",
        help="Only the distilled-vs-direct students (results printed, JSON not written).",
    )
    args = parser.parse_args()
    kinds = [] if args.only_distill_row else args.models.split(",")
    console = Console(width=None if sys.stdout.isatty() else 180)
    rows: list[dict[str, Any]] = []
    distilled: list[dict[str, Any]] = []
    jobs = [(k, s) for s in range(args.seeds) for k in kinds]
    if not args.no_distill_row:
        jobs += [("distill", s) for s in range(args.seeds)]
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("compressing", total=len(jobs) * 3)
        for kind, seed in jobs:
            for name, (X, y) in datasets(seed).items():
                bar.update(task, description=f"{kind} on {name}, seed {seed}")
                if kind == "distill":
                    distilled += distill_one(name, X, y, seed)
                else:
                    rows.append(run_one(kind, name, X, y, seed))
                bar.advance(task)
    out: dict[str, Any] = {}
    if rows:
        out = {"rows": rows, "summary": summarise(rows, console)}
        out["students_in_search"] = summarise_students(rows, console)
    if distilled:
        out["distillation"] = {
            "rows": distilled,
            "summary": summarise_distillation(distilled, console),
        }
    if args.only_distill_row:
        return
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
