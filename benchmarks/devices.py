"""Device targets: parity and footprint of four models and their int8 copies on every target.

Trains, on breast cancer (569 rows, 30 features; 30% held out, stratified, random_state=0):
LogisticRegression and MLP(16) (each after a StandardScaler), RandomForest(10 trees,
depth 6) and XGBoost(50 rounds, depth 4); and int8 copies of each (fedge.compression's
ModelQuantizer("int8"); trees merged losslessly first, as the demo does). Then, on every device
target of fedge.deployment.devices:

- runnable targets (host, Cortex-M4F and M3 under QEMU, Arduino Uno under simavr, ESP32-C3
  class RV32 under QEMU, Raspberry Pi class aarch64 under qemu-user): ``verify_on_device`` over
  the held-out rows, every score and probability compared with the numpy runtime's ``device``
  mode (bit for bit; on AVR float models: identical labels, scores within
  ``AVR_SCORE_TOLERANCE``), labels also compared with the source model;
- size-only targets (Cortex-M0+, Cortex-M7): ``measure_footprint``.

Each cell reports the model's own flash and RAM (firmware minus a stub-model firmware, so the C
library and startup are not counted, but what the model pulls in, such as soft-float routines,
is), its worst-case stack, whether it fits the target's budget, and instructions (RV32,
minstret under -icount) or cycles (AVR, simavr) per prediction where the emulator counts them.
A target whose tools are missing is marked "tool missing", not a failure.

Verdicts (the issue's goals):
- LogisticRegression on 30 features under 1 KiB of flash and of RAM (static + stack) on
  Cortex-M, separately for the FPU cores (M4F, M7) and the soft-float cores (M3, M0+, whose
  libgcc float emulation counts as the model's);
- float32 outputs bit-identical to device mode on every 32/64-bit target;
- int8 models bit-identical on every runnable target, AVR included;
- AVR labels identical (to device mode and the source model) for the float models.

Results: benchmarks/results/devices.json. A full run takes about a minute on 2 cores:

    .venv/bin/python benchmarks/devices.py [--quick] [--models logreg,forest,xgb,mlp]
        [--targets host,cortex-m4f,...] [--rows N] [--jobs 2] [--timeout 120] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import fedge
from fedge.deployment.device_verify import (
    AVR_SCORE_TOLERANCE,
    Footprint,
    measure_footprint,
    verify_on_device,
)
from fedge.deployment.devices import DEVICES, DeviceTarget, simavr_runner
from fedge.errors import FootprintError, ToolchainError

RESULTS = Path(__file__).parent / "results" / "devices.json"
KIB = 1024
FPU_CORTEX_M = ("cortex-m4f", "cortex-m7")
SOFT_CORTEX_M = ("cortex-m3", "cortex-m0plus")


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(10, max_depth=6, random_state=0, n_jobs=1)


def _xgboost() -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=50, max_depth=4, random_state=0, n_jobs=1)


def _mlp() -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=1000, random_state=0))


MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    "logreg": ("LogisticRegression (30 features, scaled)", _logreg),
    "forest": ("RandomForest(10, depth 6)", _forest),
    "xgb": ("XGBoost(50, depth 4)", _xgboost),
    "mlp": ("MLP(16) (scaled)", _mlp),
}


@dataclass
class Cell:
    """One model on one target."""

    model: str
    quantized: bool
    target: str
    status: str  # "bit-exact", "within tolerance", "FAILED", "size only", "tool missing", ...
    exact_rule: bool | None = None  # True: compared bit for bit; False: AVR tolerance rule
    rows: int = 0
    bit_identical: bool | None = None  # every score/probability has device mode's bits
    score_mismatches: int | None = None  # rows with any output bit different
    out_of_tolerance: int | None = None
    label_mismatches_device: int | None = None
    label_mismatches_source: int | None = None
    max_abs_diff: float | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    stack_bytes: int | None = None
    own_bytes: int | None = None
    fits: bool | None = None
    flash_budget: int | None = None
    ram_budget: int | None = None
    per_prediction: float | None = None
    counter: str = ""
    seconds: float = 0.0
    note: str = ""

    @property
    def name(self) -> str:
        return self.model + (" int8" if self.quantized else "")


def _quantize(model: fedge.Model) -> fedge.Model:
    """The demo's int8 copy: trees merged losslessly first, then 8-bit grids and int8 leaves."""
    from fedge.compression import ModelPruner, ModelQuantizer
    from fedge.ir.nodes import TreeEnsemble

    if any(isinstance(s, TreeEnsemble) for s in model.steps):
        model = ModelPruner(0.0, "lossless").prune_model(model)
    return ModelQuantizer("int8").quantize_model(model)


def _fill_footprint(cell: Cell, fp: Footprint) -> None:
    cell.flash_bytes, cell.ram_bytes, cell.stack_bytes = (
        fp.flash_bytes,
        fp.ram_bytes,
        fp.stack_bytes,
    )
    cell.own_bytes, cell.fits = fp.own_bytes, fp.fits
    cell.flash_budget, cell.ram_budget = fp.flash_budget, fp.ram_budget


def run_cell(
    key: str, quantized: bool, model: Any, X: np.ndarray, t: DeviceTarget, timeout: float
) -> Cell:
    """verify_on_device (runnable targets) or measure_footprint (size-only ones)."""
    cell = Cell(model=key, quantized=quantized, target=t.name, status="")
    missing = t.missing(run=t.runnable)
    if missing:
        cell.status = "tool missing"
        cell.note = ", ".join(f"{r.what} ({r.package})" for r in missing)
        return cell
    start = time.perf_counter()
    try:
        if not t.runnable:
            _fill_footprint(cell, measure_footprint(model, t, timeout=timeout))
            cell.status = "size only" if cell.fits else "does not fit"
            return cell
        try:
            report = verify_on_device(model, X, t, timeout=timeout)
        except FootprintError as exc:
            _fill_footprint(cell, measure_footprint(model, t, timeout=timeout))
            cell.status, cell.note = "does not fit", str(exc)
            return cell
    except ToolchainError as exc:
        cell.status, cell.note = "FAILED", str(exc)
        return cell
    finally:
        cell.seconds = round(time.perf_counter() - start, 2)
    _fill_footprint(cell, report.footprint)
    cell.rows, cell.exact_rule = report.rows, report.exact
    cell.score_mismatches, cell.out_of_tolerance = report.score_mismatches, report.out_of_tolerance
    cell.label_mismatches_device = report.label_mismatches_device
    cell.label_mismatches_source = report.label_mismatches_source
    cell.max_abs_diff = report.max_abs_diff
    cell.bit_identical = report.score_mismatches == 0 and report.label_mismatches_device == 0
    cell.per_prediction, cell.counter = report.per_prediction, report.counter
    if not report.passed:
        cell.status = "FAILED"
        cell.note = report.parity
    else:
        cell.status = "bit-exact" if cell.bit_identical else "within tolerance"
    return cell


# --------------------------------------------------------------------------------------
# Verdicts


def _verdict(goal: str, cells: list[Cell], ok: Callable[[Cell], bool], detail: str) -> dict:
    ran = [c for c in cells if c.status not in ("tool missing",)]
    bad = [f"{c.name} on {c.target}" for c in ran if not ok(c)]
    met = bool(ran) and not bad
    return {
        "goal": goal,
        "met": met,
        "checked": len(ran),
        "missed_by": bad,
        "detail": detail,
        "untested": [f"{c.name} on {c.target}" for c in cells if c.status == "tool missing"],
    }


def _kib_ok(c: Cell) -> bool:
    return (
        c.flash_bytes is not None
        and c.flash_bytes < KIB
        and (c.ram_bytes or 0) + (c.stack_bytes or 0) < KIB
    )


def verdicts(cells: list[Cell]) -> list[dict]:
    out = []
    logreg = [c for c in cells if c.model == "logreg" and not c.quantized]
    for group, label in ((FPU_CORTEX_M, "FPU"), (SOFT_CORTEX_M, "soft-float")):
        sel = [c for c in logreg if c.target in group]
        if not sel:
            continue
        sizes = ", ".join(
            f"{c.target} {c.flash_bytes} B flash / {c.ram_bytes} B RAM + {c.stack_bytes} B "
            f"stack (own code {c.own_bytes} B)"
            for c in sel
        )
        out.append(
            _verdict(
                f"LogisticRegression on 30 features < 1 KiB flash and RAM on {label} Cortex-M",
                sel,
                _kib_ok,
                sizes,
            )
        )
    wide = [
        c
        for c in cells
        if not c.quantized
        and c.target in DEVICES
        and DEVICES[c.target].runnable
        and not DEVICES[c.target].double_is_32bit
    ]
    out.append(
        _verdict(
            "float32 outputs bit-identical to device mode on every 32/64-bit target",
            wide,
            lambda c: bool(c.bit_identical) and c.label_mismatches_source in (0, None),
            f"{len(wide)} model/target pairs, every score and probability compared",
        )
    )
    quant = [c for c in cells if c.quantized and DEVICES[c.target].runnable]
    out.append(
        _verdict(
            "int8 models bit-identical on every target, AVR included",
            quant,
            lambda c: bool(c.bit_identical),
            f"{len(quant)} model/target pairs",
        )
    )
    avr = [c for c in cells if not c.quantized and DEVICES[c.target].double_is_32bit]
    exact_avr = sum(bool(c.bit_identical) for c in avr)
    out.append(
        _verdict(
            "AVR: labels identical for float models (scores within float32 rounding)",
            avr,
            lambda c: (
                c.status in ("bit-exact", "within tolerance")
                and c.label_mismatches_device == 0
                and c.label_mismatches_source == 0
            ),
            f"tolerance {AVR_SCORE_TOLERANCE:.3g} relative; {exact_avr} of {len(avr)} float "
            "models were even bit-identical",
        )
    )
    return out


# --------------------------------------------------------------------------------------
# Output


def _size(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


STYLE = {
    "bit-exact": "green",
    "within tolerance": "green",
    "size only": "cyan",
    "tool missing": "yellow",
    "does not fit": "yellow",
    "FAILED": "red",
}


def print_table(console: Console, cells: list[Cell], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for h in ("model", "target", "parity", "flash B", "RAM B", "stack B", "fits", "per predict"):
        table.add_column(h, justify="left" if h in ("model", "target", "parity") else "right")
    last = None
    for c in cells:
        if last is not None and c.name != last:
            table.add_section()
        last = c.name
        parity = c.status
        if c.status == "within tolerance":
            parity = f"labels =, |diff| {c.max_abs_diff:.1g}"
        per = "-"
        if c.per_prediction is not None:
            unit = "cycles" if c.counter.startswith("cycles") else "instr"
            per = f"{c.per_prediction:,.0f} {unit}"
        table.add_row(
            c.name,
            c.target,
            f"[{STYLE.get(c.status, 'white')}]{parity}[/]",
            _size(c.flash_bytes),
            _size(c.ram_bytes),
            _size(c.stack_bytes),
            {True: "yes", False: "[red]NO[/]", None: "-"}[c.fits],
            per,
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 rows per model and target")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma list of " + ", ".join(MODELS)
    )
    parser.add_argument("--targets", default=",".join(DEVICES), help="comma list of targets")
    parser.add_argument("--rows", type=int, default=None, help="held-out rows to run (all: 171)")
    parser.add_argument("--jobs", type=int, default=2, help="model/target pairs run at once")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per build and run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    for name in targets:
        if name not in DEVICES:
            parser.error(f"unknown target {name!r}: choose from {', '.join(DEVICES)}")

    from sklearn.datasets import load_breast_cancer
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    n_rows = args.rows if args.rows is not None else (16 if args.quick else X_te.shape[0])
    X_run = X_te[:n_rows]
    started = time.perf_counter()
    trained: list[tuple[str, bool, Any, float]] = []
    for key in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = MODELS[key][1]().fit(X_tr, y_tr)
        acc = float(np.mean(est.predict(X_te) == y_te))
        small = _quantize(fedge.lower(est))
        acc_q = float(np.mean(fedge.predict(small, X_te, mode="device") == y_te))
        trained += [(key, False, est, acc), (key, True, small, acc_q)]
    train_s = time.perf_counter() - started

    if "arduino-uno" in targets and not DEVICES["arduino-uno"].missing():
        simavr_runner(args.timeout)  # compiled once, before the threads share it
    jobs = [(k, q, m, DEVICES[t]) for k, q, m, _ in trained for t in targets]
    console.print(
        f"[bold]{len(jobs)} model/target pairs, {n_rows} held-out rows each, "
        f"{args.jobs} at a time[/]"
    )
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_cell, k, q, m, X_run, t, args.timeout) for k, q, m, t in jobs]
        cells = []
        for (_, _, _, t), fut in zip(jobs, futures, strict=True):
            cell = fut.result()
            cells.append(cell)
            console.print(
                f"  {cell.name:12s} {t.name:14s} {cell.status:17s} {cell.seconds:6.1f} s",
                highlight=False,
            )
    total_s = time.perf_counter() - started

    accuracy = {f"{k}{' int8' if q else ''}": a for k, q, _, a in trained}
    print_table(
        console,
        cells,
        f"fedge on device targets: breast cancer, {n_rows} held-out rows per model and target",
    )
    console.print(
        "flash/RAM: the model's own (firmware minus a stub-model firmware; soft-float and libm "
        "routines it pulls in are counted); RAM is static data, stack is the worst-case chain "
        "(-fstack-usage); per predict: RV32 instructions (minstret under -icount), AVR cycles "
        "(simavr); held-out accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items())
    )
    results = verdicts(cells)
    for v in results:
        mark = "[green]MET[/]" if v["met"] else "[red]MISSED[/]"
        console.print(f"{mark}  {v['goal']}: {v['detail']}")
        if v["missed_by"]:
            console.print(f"        missed by: {', '.join(v['missed_by'])}")
        if v["untested"]:
            console.print(f"        [yellow]untested (tool missing)[/]: {', '.join(v['untested'])}")
    console.print(f"total {total_s:.0f} s (training {train_s:.1f} s)")

    payload = {
        "benchmark": "devices",
        "dataset": "breast_cancer (sklearn), 30% held out, stratified, random_state=0",
        "rows_per_cell": n_rows,
        "quick": args.quick,
        "fedge_version": fedge.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "models": {k: MODELS[k][0] for k in models},
        "accuracy": accuracy,
        "targets": {
            t: {
                "description": DEVICES[t].description,
                "runnable": DEVICES[t].runnable,
                "flash_budget": DEVICES[t].flash_budget,
                "ram_budget": DEVICES[t].ram_budget,
                "counter": DEVICES[t].counter or DEVICES[t].counter_note,
            }
            for t in targets
        },
        "cells": [asdict(c) | {"name": c.name} for c in cells],
        "verdicts": results,
        "seconds": round(total_s, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"results in {args.out}")
    failed = [c for c in cells if c.status == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
