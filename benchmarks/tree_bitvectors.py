"""Bitvector scans against the node walk in fedge's generated C, per tree shape.

The C table layout evaluates an ensemble by bitvectors (QuickScorer) on hosts when its trees
have at most 32 leaves and at most ``SPLITS_PER_LEVEL`` splits per level of depth; this
script measures where that rule should sit. For each model (trained on the c_codegen data:
make_classification(20000, 20 features, 10 informative, 3 classes)), fedge's C is generated
with bitvectors forced on, then compiled twice, gcc -O2: as is (bitvectors) and with
``-DFEDGE_NO_VECTORS`` (the node walk microcontrollers run). Both are timed alternately
(``--rounds`` rounds, each the median of several passes over the test rows) on the single-row
``m_predict`` and on ``m_predict_batch``; the medians of the per-round ratios are printed
next to the ensemble's splits per level and the path the rule picks, which should be the one
with the lower geometric mean of the two ratios (single-row latency and batch throughput
count alike). Both builds must give the same labels.
Results: benchmarks/results/tree_bitvectors.json.

    .venv/bin/python benchmarks/tree_bitvectors.py [--rounds 3] [--models lgbm31,xgb5,...]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from xgboost import XGBClassifier

import fedge
from c_anchors import time_c_predict
from c_codegen import FEDGE_CFLAGS, make_data
from fedge.deployment.formats.c import bitvector_trees as bitvec
from fedge.deployment.formats.c import emit_c
from fedge.deployment.formats.c.tree_tables import compact_trees
from provenance import ROOT, provenance, write_json

RESULTS = Path(__file__).parent / "results" / "tree_bitvectors.json"
MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    "lgbm31": (
        "LightGBM(100, 31 leaves)",
        lambda: LGBMClassifier(n_estimators=100, verbose=-1, random_state=0),
    ),
    "lgbm15": (
        "LightGBM(100, 15 leaves)",
        lambda: LGBMClassifier(n_estimators=100, num_leaves=15, verbose=-1, random_state=0),
    ),
    "hgb": (
        "HistGradientBoosting(100)",
        lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),
    ),
    "xgb3": (
        "XGBoost(100, depth 3)",
        lambda: XGBClassifier(n_estimators=100, max_depth=3, n_jobs=1, random_state=0),
    ),
    "gb3": (
        "GradientBoosting(50, depth 3)",
        lambda: GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0),
    ),
    "xgb5": (
        "XGBoost(100, depth 5)",
        lambda: XGBClassifier(n_estimators=100, max_depth=5, n_jobs=1, random_state=0),
    ),
    "rf5": (
        "RandomForest(100, depth 5)",
        lambda: RandomForestClassifier(100, max_depth=5, random_state=0, n_jobs=1),
    ),
}
ADAPTER = (
    '#include "m.h"\n'
    "static int bench_predict(const float *x) { return m_predict(x); }\n"
    "static void bench_predict_batch(const float *x, long n, int *labels)\n"
    "{\n    m_predict_batch(x, n, labels);\n}\n"
)
BUILDS = {"bitvectors": (), "walk": ("-DFEDGE_NO_VECTORS",)}


def splits_per_level(model: fedge.ir.Model) -> float:
    step = model.steps[-1]
    return step.n_nodes / max(1, int(step.depths.sum()))


def measure(key: str, X_train, y_train, X_test, rounds: int, workdir: Path) -> dict[str, Any]:
    name, make = MODELS[key]
    model = fedge.lower(make().fit(X_train, y_train))
    step = model.steps[-1]
    auto = bitvec.bitvector_trees(step, compact_trees(step).leaf_row) is not None
    rule, bitvec.SPLITS_PER_LEVEL = bitvec.SPLITS_PER_LEVEL, math.inf  # force the bitvectors
    try:
        code = emit_c(model, prefix="m")
    finally:
        bitvec.SPLITS_PER_LEVEL = rule
    if "m_s0_bits_rows" not in code.source:
        raise SystemExit(f"{name}: a tree has more than {bitvec.MAX_LEAVES} leaves")
    d = workdir / key
    d.mkdir()
    (d / "m.h").write_text(code.header)
    (d / "m.c").write_text(code.source)
    times: dict[str, list[tuple[float, float]]] = {b: [] for b in BUILDS}
    labels = {}
    for _ in range(rounds):
        for build, flags in BUILDS.items():
            run = time_c_predict(
                [d / "m.c"], ADAPTER, X_test.shape[1], X_test, d / build,
                cflags=(*FEDGE_CFLAGS, *flags), include=d, batch=True, passes=5,
            )
            times[build].append((run.single_ns, run.batch_ns))
            labels[build] = run.labels
    if not np.array_equal(labels["bitvectors"], labels["walk"]):
        raise SystemExit(f"{name}: the bitvector and walk builds disagree")
    bits, walk = np.array(times["bitvectors"]), np.array(times["walk"])
    ratio = np.median(bits / walk, axis=0)
    leaves = step.n_nodes + step.n_trees  # splits + 1 per tree
    return {
        "model": name,
        "trees": step.n_trees,
        "leaves_per_tree": leaves / step.n_trees,
        "max_depth": int(step.depths.max()),
        "splits_per_level": splits_per_level(model),
        "rule_picks_bitvectors": auto,
        "bitvectors_ns": np.median(bits, axis=0).tolist(),  # single, batch
        "walk_ns": np.median(walk, axis=0).tolist(),
        "ratio_single": float(ratio[0]),
        "ratio_batch": float(ratio[1]),
        "ratio_geomean": float(np.sqrt(ratio[0] * ratio[1])),
        "rounds": {"bitvectors": times["bitvectors"], "walk": times["walk"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    console = Console(width=170)
    X_train, y_train, X_test = make_data()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            console.print(f"measuring {MODELS[key][0]} ...")
            results.append(measure(key, X_train, y_train, X_test, args.rounds, Path(tmp)))
    table = Table(
        title=f"bitvectors / node walk, gcc -O2 (rule: bitvectors at <= "
        f"{bitvec.SPLITS_PER_LEVEL:g} splits per level)"
    )
    for col in ("model", "leaves/tree", "max depth", "splits/level", "rule picks",
                "single ns bits / walk", "batch ns bits / walk", "single ratio", "batch ratio",
                "geo-mean"):
        table.add_column(col, justify="left" if col in ("model", "rule picks") else "right")
    for r in results:
        (bs, bb), (ws, wb) = r["bitvectors_ns"], r["walk_ns"]
        faster = r["ratio_geomean"] < 1
        right = "ok" if faster == r["rule_picks_bitvectors"] else "MISS"
        table.add_row(
            r["model"], f"{r['leaves_per_tree']:.1f}", str(r["max_depth"]),
            f"{r['splits_per_level']:.2f}",
            f"{'bitvectors' if r['rule_picks_bitvectors'] else 'walk'} ({right})",
            f"{bs:,.0f} / {ws:,.0f}", f"{bb:,.0f} / {wb:,.0f}",
            f"{r['ratio_single']:.2f}", f"{r['ratio_batch']:.2f}", f"{r['ratio_geomean']:.2f}",
        )
    console.print(table)
    console.print("ratio < 1: bitvectors faster (median of per-round ratios). 'ok': the rule "
                  "picks the path with the lower geometric mean of the single and batch ratios.")
    write_json(RESULTS, {
        "results": results,
        "splits_per_level_rule": bitvec.SPLITS_PER_LEVEL,
        "provenance": provenance(
            sorted((ROOT / "src" / "fedge" / "deployment" / "formats" / "c").glob("*.py")),
            packages=("scikit-learn", "xgboost", "lightgbm"),
        ),
    })
    console.print(f"results: {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
