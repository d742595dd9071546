"""Generated C next to its anchors: fedge vs emlearn, m2cgen and tl2cgen, in one run.

Trains RandomForest(100 trees, depth 10), XGBoost(100 rounds, depth 6), LightGBM(100 rounds)
and LogisticRegression on make_classification(20000 rows, 20 features, 10 informative,
3 classes, random_state=0), 25% held out for testing. For each model, fedge and every anchor
that supports it generate C, and the script reports:

- label agreement with the source model's ``predict`` on the test rows (rounded to float32, as
  the C code sees them) and on a seeded copy with ~10% of the values set to NaN;
- host latency, gcc -O2: median ns per row over several timed loops over the test rows, the
  single-row predict called once per row (fedge also: ``m_predict_batch`` over all rows);
- object size (text + data) at -Os, host gcc and Cortex-M4 (arm-none-eabi-gcc), model only;
- generation (C text) and -O2 host compile seconds, each tool capped at ``--timeout`` s.

Then the ratios fedge / best anchor (latency: fedge's faster of single-row and batch; flash:
Cortex-M4 sizes) and fedge's generation + compile seconds, against the targets (latency and
flash ratio <= 0.5, generation + compile < 30 s). The latency ratio is paired: fedge and the
fastest anchor are timed again alternately, 5 rounds, and the median of the per-round ratios
counts (the separate timings above run minutes apart on a shared machine; the JSON keeps both).
Results: benchmarks/results/c_codegen.json.
Takes several minutes (the anchors' large files compile slowly):

    .venv/bin/python benchmarks/c_codegen.py [--models rf,xgb,lgbm,logreg]
        [--anchors emlearn,m2cgen,tl2cgen] [--repeats 7] [--timeout 120] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import fedge
from c_anchors import (
    ANCHORS,
    ARM_CC,
    ARM_SIZE,
    CORTEX_M4_FLAGS,
    GENERATORS,
    HOST_CC,
    SUPPORTS,
    CModel,
    CompileError,
    CompileTimeoutError,
    GenerationError,
    GenerationTimeoutError,
    Generator,
    HarnessError,
    HarnessRun,
    UnsupportedError,
    compile_objects,
    generate_bounded,
    object_size,
    run_harness,
    time_c_predict,
)
from fedge.deployment.formats.c import emit_c

RESULTS = Path(__file__).parent / "results" / "c_codegen.json"
FEDGE_CFLAGS = ("-std=c99", "-ffp-contract=off")
NAN_FRACTION = 0.1
TARGETS = {"latency_ratio": 0.5, "flash_ratio": 0.5, "gen_compile_s": 30.0}


def _xgboost() -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=100, max_depth=6, random_state=0)


def _lightgbm() -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=100, verbose=-1, random_state=0)


MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    "rf": (
        "RandomForest(100, depth 10)",
        lambda: RandomForestClassifier(100, max_depth=10, random_state=0, n_jobs=1),
    ),
    "xgb": ("XGBoost(100, depth 6)", _xgboost),
    "lgbm": ("LightGBM(100)", _lightgbm),
    "logreg": ("LogisticRegression", lambda: LogisticRegression(max_iter=1000)),
}


def generate_fedge(estimator: Any, directory: Path) -> CModel:
    """fedge's C (prefix ``m``): m.h, m.c; ``m_predict`` and ``m_predict_batch``."""
    src = emit_c(fedge.lower(estimator), prefix="m")
    (directory / "m.h").write_text(src.header)
    (directory / "m.c").write_text(src.source)
    adapter = (
        '#include "m.h"\n'
        "static int bench_predict(const float *x) { return m_predict(x); }\n"
        "static void bench_predict_batch(const float *x, long n, int *labels)\n"
        "{\n    m_predict_batch(x, n, labels);\n}\n"
    )
    return CModel("fedge", directory, ("m.c",), adapter, FEDGE_CFLAGS, has_batch=True)


# --------------------------------------------------------------------------------------
# Data and results


@dataclass(frozen=True)
class EvalRows:
    X: np.ndarray  # float32 test rows
    X_nan: np.ndarray  # the same with ~10% NaN
    labels: np.ndarray  # the source model's class index per row of X
    labels_nan: np.ndarray | None  # same on X_nan; None if the model cannot take NaN


@dataclass
class ToolResult:
    """One tool on one model. ``problems`` maps a column to 'error: why' / 'timeout' / 'n/a'."""

    tool: str
    status: str = "ok"  # ok | unsupported | timeout | error
    reason: str = ""
    gen_s: float | None = None
    compile_s: float | None = None
    agree: float | None = None  # fraction of test rows with the source model's label
    differ: int | None = None
    agree_nan: float | None = None
    differ_nan: int | None = None
    single_ns: float | None = None
    batch_ns: float | None = None
    batch_differs_from_single: int | None = None
    host_os_bytes: int | None = None
    m4_os_bytes: int | None = None
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def gen_compile_s(self) -> float | None:
        if self.gen_s is None or self.compile_s is None:
            return None
        return self.gen_s + self.compile_s

    @property
    def best_ns(self) -> float | None:
        times = [t for t in (self.single_ns, self.batch_ns) if t is not None]
        return min(times) if times else None

    @property
    def disagrees(self) -> bool:
        return bool(self.differ) or bool(self.differ_nan)


def make_data(test_size: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(20000, 20, n_informative=10, n_classes=3, random_state=0)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=test_size, random_state=0)
    return X_train, y_train, X_test.astype(np.float32)


def with_nan(X: np.ndarray, fraction: float = NAN_FRACTION, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = X.copy()
    out[rng.random(X.shape) < fraction] = np.nan
    return out


def source_labels(estimator: Any, X: np.ndarray) -> np.ndarray | None:
    """Class indices the source model predicts for ``X`` (None if it rejects NaN)."""
    try:
        predicted = estimator.predict(X.astype(np.float64))
    except ValueError:
        return None
    return np.searchsorted(estimator.classes_, predicted)


def eval_rows(estimator: Any, X: np.ndarray) -> EvalRows:
    X_nan = with_nan(X)
    return EvalRows(X, X_nan, source_labels(estimator, X), source_labels(estimator, X_nan))


# --------------------------------------------------------------------------------------
# Measuring one tool


def _generate(
    res: ToolResult, generator: Generator, estimator: Any, directory: Path, timeout: float
) -> tuple[CModel, float] | None:
    try:
        model, wall = generate_bounded(generator, estimator, directory, timeout)
    except UnsupportedError:
        res.status = "unsupported"
        return None
    except GenerationTimeoutError as exc:
        res.status, res.reason = "timeout", str(exc)
        return None
    except GenerationError as exc:
        res.status, res.reason = "error", f"generation: {exc}"
        return None
    res.gen_s = model.gen_seconds
    return model, wall


def _compile_o2(res: ToolResult, model: CModel, workdir: Path, budget: float) -> list[Path] | None:
    try:
        objects, seconds = compile_objects(model, (HOST_CC, "-O2"), workdir / "o2", timeout=budget)
    except CompileTimeoutError:
        res.status, res.reason = "timeout", "generation + -O2 compile past the cap"
        res.problems["compile_s"] = "timeout"
        return None
    except CompileError as exc:
        res.status, res.reason = "error", f"-O2 compile: {exc}"
        return None
    res.compile_s = seconds
    return objects


def _agreement(labels: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    differ = int(np.count_nonzero(labels != reference))
    return 1.0 - differ / len(reference), differ


def _time_and_check(
    res: ToolResult, model: CModel, objects: list[Path], rows: EvalRows, workdir: Path, passes: int
) -> None:
    def run_on(X: np.ndarray, subdir: str, n_passes: int) -> HarnessRun:
        return time_c_predict(
            objects,
            model.adapter,
            X.shape[1],
            X,
            workdir / subdir,
            cflags=model.cflags,
            include=model.directory,
            batch=model.has_batch,
            passes=n_passes,
        )

    try:
        run = run_on(rows.X, "plain", passes)
    except HarnessError as exc:
        res.problems["single_ns"] = res.problems["agree"] = f"error: {exc}"
        return
    res.single_ns, res.batch_ns = run.single_ns, run.batch_ns
    res.agree, res.differ = _agreement(run.labels, rows.labels)
    if run.batch_labels is not None:
        res.batch_differs_from_single = int(np.count_nonzero(run.batch_labels != run.labels))
    if rows.labels_nan is None:
        res.problems["agree_nan"] = "n/a: the source model does not take NaN"
        return
    try:
        run = run_on(rows.X_nan, "nan", 1)
    except HarnessError as exc:
        res.problems["agree_nan"] = f"error: {exc}"
        return
    res.agree_nan, res.differ_nan = _agreement(run.labels, rows.labels_nan)


def _size(
    res: ToolResult,
    key: str,
    model: CModel,
    compiler: tuple[str, ...],
    size_tool: str,
    outdir: Path,
    timeout: float,
) -> None:
    try:
        objects, _ = compile_objects(model, compiler, outdir, timeout=timeout)
        setattr(res, key, object_size(size_tool, objects))
    except CompileTimeoutError:
        res.problems[key] = "timeout"
    except CompileError as exc:
        res.problems[key] = f"error: {exc}"


def _sizes(res: ToolResult, model: CModel, workdir: Path, timeout: float) -> None:
    _size(res, "host_os_bytes", model, (HOST_CC, "-Os"), "size", workdir / "os", timeout)
    if shutil.which(ARM_CC) is None or shutil.which(ARM_SIZE) is None:
        res.problems["m4_os_bytes"] = f"n/a: {ARM_CC} not installed"
        return
    m4 = (ARM_CC, "-Os", *CORTEX_M4_FLAGS)
    _size(res, "m4_os_bytes", model, m4, ARM_SIZE, workdir / "m4", timeout)


def measure_tool(
    tool: str,
    estimator: Any,
    rows: EvalRows,
    workdir: Path,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> ToolResult:
    """Generate, compile (capped at args.timeout in total), time, check and size one tool."""
    res = ToolResult(tool)
    if tool != "fedge" and not SUPPORTS[tool](estimator):
        res.status = "unsupported"
        return res
    generator = generate_fedge if tool == "fedge" else GENERATORS[tool]
    log(f"{tool}: generating C")
    generated = _generate(res, generator, estimator, workdir / "src", args.timeout)
    if generated is None:
        return res
    model, wall = generated
    log(f"{tool}: generated in {model.gen_seconds:.1f} s; compiling -O2")
    objects = _compile_o2(res, model, workdir, args.timeout - wall)
    if objects is None:
        return res
    log(f"{tool}: compiled in {res.compile_s:.1f} s; timing {len(rows.X)} rows x {args.repeats}")
    _time_and_check(res, model, objects, rows, workdir, args.repeats)
    log(f"{tool}: sizing (-Os host and Cortex-M4)")
    _sizes(res, model, workdir, args.timeout)
    return res


# --------------------------------------------------------------------------------------
# Ratios


def _best(
    results: list[ToolResult], key: Callable[[ToolResult], float | None]
) -> ToolResult | None:
    scored = [(value, r) for r in results if r.status == "ok" and (value := key(r)) is not None]
    return min(scored, key=lambda pair: pair[0])[1] if scored else None


def _verdict(value: float | None, target: float, *, strict: bool = False) -> str:
    if value is None:
        return "n/a"
    ok = value < target if strict else value <= target
    return "PASS" if ok else "MISS"


PAIRED_ROUNDS = 5  # alternating fedge / fastest-anchor runs for the latency ratio


def paired_latency(
    results: list[ToolResult], X: np.ndarray, workdir: Path, passes: int
) -> dict[str, Any] | None:
    """fedge and the fastest anchor timed again, alternately, ``PAIRED_ROUNDS`` times (each
    run ``passes`` passes, median): the median of the per-round ratios. Both sides then see
    the same load on this shared machine, which the separate timings above do not."""
    fedge_res, anchors = results[0], results[1:]
    fastest = _best(anchors, lambda r: r.single_ns)
    if fedge_res.status != "ok" or fastest is None:
        return None
    fedge_exe = workdir / "fedge" / "plain" / "bench"
    anchor_exe = workdir / fastest.tool / "plain" / "bench"
    if not (fedge_exe.exists() and anchor_exe.exists()):
        return None
    rounds = []
    for _ in range(PAIRED_ROUNDS):
        ours = run_harness(fedge_exe, X, passes)
        theirs = run_harness(anchor_exe, X, passes)
        best = min(t for t in (ours.single_ns, ours.batch_ns) if t is not None)
        rounds.append((best, theirs.single_ns))
    ratio = float(np.median([a / b for a, b in rounds]))
    return {"anchor": fastest.tool, "rounds_ns": rounds, "latency_ratio": ratio,
            "latency_verdict": _verdict(ratio, TARGETS["latency_ratio"])}


def ratios(results: list[ToolResult]) -> dict[str, Any]:
    fedge_res, anchors = results[0], results[1:]
    fastest = _best(anchors, lambda r: r.single_ns)
    smallest = _best(anchors, lambda r: r.m4_os_bytes)
    fedge_ns = fedge_res.best_ns if fedge_res.status == "ok" else None
    fedge_m4 = fedge_res.m4_os_bytes if fedge_res.status == "ok" else None
    latency = fedge_ns / fastest.single_ns if fedge_ns and fastest and fastest.single_ns else None
    flash = (
        fedge_m4 / smallest.m4_os_bytes if fedge_m4 and smallest and smallest.m4_os_bytes else None
    )
    gen_compile = fedge_res.gen_compile_s
    fedge_batch_faster = fedge_res.batch_ns is not None and fedge_res.batch_ns == fedge_ns
    return {
        "fedge_ns": fedge_ns,
        "fedge_ns_from": "batch" if fedge_batch_faster else "single-row",
        "fastest_anchor": fastest.tool if fastest else None,
        "fastest_anchor_ns": fastest.single_ns if fastest else None,
        "fastest_anchor_disagrees": fastest.disagrees if fastest else None,
        "latency_ratio": latency,
        "latency_verdict": _verdict(latency, TARGETS["latency_ratio"]),
        "fedge_m4_bytes": fedge_m4,
        "smallest_anchor": smallest.tool if smallest else None,
        "smallest_anchor_m4_bytes": smallest.m4_os_bytes if smallest else None,
        "smallest_anchor_disagrees": smallest.disagrees if smallest else None,
        "flash_ratio": flash,
        "flash_verdict": _verdict(flash, TARGETS["flash_ratio"]),
        "fedge_gen_compile_s": gen_compile,
        "gen_compile_verdict": _verdict(gen_compile, TARGETS["gen_compile_s"], strict=True),
    }


# --------------------------------------------------------------------------------------
# Printing


class Footnotes:
    """Numbered footnotes for cells that hold an error, a timeout or n/a with a reason."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def mark(self, label: str, text: str) -> str:
        if text not in self.notes:
            self.notes.append(text)
        return f"{label} [{self.notes.index(text) + 1}]"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _agree_cell(fraction: float | None, differ: int | None) -> str:
    if fraction is None:
        return "-"
    return f"{fraction:.2%}" + (f" ({differ})" if differ else "")


def _cells(res: ToolResult, notes: Footnotes) -> list[str]:
    columns = ["agree", "agree_nan", "single_ns", "batch_ns", "host_os_bytes", "m4_os_bytes"]
    columns += ["gen_s", "compile_s", "gen_compile_s"]
    if res.status == "unsupported":
        return ["unsupported"] + ["-"] * (len(columns) - 1)
    if res.status != "ok":
        label = notes.mark(res.status, f"{res.tool}: {res.reason}")
        values = {c: label for c in columns}
        if res.gen_s is not None:
            values["gen_s"] = f"{res.gen_s:.1f}"
        return [values[c] for c in columns]
    values = {
        "agree": _agree_cell(res.agree, res.differ),
        "agree_nan": _agree_cell(res.agree_nan, res.differ_nan),
        "single_ns": _num(res.single_ns, ",.0f"),
        "batch_ns": _num(res.batch_ns, ",.0f"),
        "host_os_bytes": _num(res.host_os_bytes, ","),
        "m4_os_bytes": _num(res.m4_os_bytes, ","),
        "gen_s": _num(res.gen_s, ".1f"),
        "compile_s": _num(res.compile_s, ".1f"),
        "gen_compile_s": _num(res.gen_compile_s, ".1f"),
    }
    for column, problem in res.problems.items():
        label, _, why = problem.partition(": ")
        if not why:
            values[column] = label
        else:  # n/a reasons hold for every tool; errors are the tool's own
            values[column] = notes.mark(label, why if label == "n/a" else f"{res.tool}: {why}")
    return [values[c] for c in columns]


def model_table(name: str, n_rows: int, results: list[ToolResult], notes: Footnotes) -> Table:
    table = Table(title=f"{name}: {n_rows} test rows", title_justify="left")
    for header in ("tool", "agree", "agree NaN", "ns/row -O2", "batch ns/row", "host -Os B"):
        table.add_column(header, justify="left" if header == "tool" else "right")
    for header in ("M4 -Os B", "gen s", "compile s", "gen+compile s"):
        table.add_column(header, justify="right")
    for res in results:
        table.add_row(res.tool, *_cells(res, notes))
    return table


def _anchor_cell(tool: str | None, value: float | None, fmt: str, disagrees: bool | None) -> str:
    if tool is None or value is None:
        return "none"
    return f"{tool} {format(value, fmt)}" + ("*" if disagrees else "")


def ratio_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(title="fedge vs the best anchor", title_justify="left")
    headers = ["model", "fedge ns/row", "fastest anchor ns", "paired latency ratio (<=0.5)"]
    headers += ["fedge M4 B", "smallest anchor M4 B", "flash ratio (<=0.5)", "fedge gen+compile s"]
    for header in headers:
        if header == "model":
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, justify="right")
    for name, r in rows:
        table.add_row(
            name,
            "-" if r["fedge_ns"] is None else f"{r['fedge_ns']:,.0f} ({r['fedge_ns_from']})",
            _anchor_cell(
                r["fastest_anchor"], r["fastest_anchor_ns"], ",.0f", r["fastest_anchor_disagrees"]
            ),
            f"{_num(r['latency_ratio'], '.2f')} {r['latency_verdict']}",
            _num(r["fedge_m4_bytes"], ","),
            _anchor_cell(
                r["smallest_anchor"],
                r["smallest_anchor_m4_bytes"],
                ",",
                r["smallest_anchor_disagrees"],
            ),
            f"{_num(r['flash_ratio'], '.2f')} {r['flash_verdict']}",
            f"{_num(r['fedge_gen_compile_s'], '.1f')} {r['gen_compile_verdict']} (<30)",
        )
    return table


# --------------------------------------------------------------------------------------
# Run


def _tool_version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    return (out.splitlines() or ["?"])[0]


def _module_version(name: str) -> str:
    try:
        return str(importlib.import_module(name).__version__)
    except (ImportError, AttributeError):
        return "not installed"


def metadata(args: argparse.Namespace, n_rows: int) -> dict[str, Any]:
    modules = ["sklearn", "xgboost", "lightgbm", "emlearn", "m2cgen", "tl2cgen", "treelite"]
    return {
        "fedge": fedge.__version__,
        "packages": {m: _module_version(m) for m in modules},
        "gcc": _tool_version([HOST_CC, "--version"]),
        "arm_gcc": _tool_version([ARM_CC, "--version"]),
        "machine": platform.platform(),
        "test_rows": n_rows,
        "nan_fraction": NAN_FRACTION,
        "repeats": args.repeats,
        "timeout_s": args.timeout,
        "flags": {
            "latency": f"{HOST_CC} -O2 (fedge: {' '.join(FEDGE_CFLAGS)})",
            "host_size": f"{HOST_CC} -Os -c; size text+data",
            "m4_size": f"{ARM_CC} -Os {' '.join(CORTEX_M4_FLAGS)} -c; {ARM_SIZE} text+data",
        },
        "tools": {
            "fedge": "emit_c(lower(est), prefix='m') (default layout); m_predict, m_predict_batch",
            "emlearn": "convert(method='inline', dtype='float'), default leaf_bits (hard vote); "
            "save(include_proba=False); em_predict(const float *, int32_t)",
            "m2cgen": "export_to_c(function_name='m2_score'); argmax of double output",
            "tl2cgen": "generate_c_code(treelite model, params={}); predict(Entry *, 1, out), "
            "argmax of margins; missing = -1 for NaN",
        },
        "timing_notes": "gen_s: the generator call in a child process (start and imports "
        "excluded; the cap counts them); compile_s: -O2 host compile of the model sources",
        "targets": TARGETS,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="subset of " + ",".join(MODELS))
    parser.add_argument(
        "--anchors", default=",".join(ANCHORS), help="subset of " + ",".join(ANCHORS)
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed passes (median)")
    parser.add_argument("--timeout", type=float, default=120, help="cap on generation + compile, s")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.anchors = [a for a in args.anchors.split(",") if a]
    unknown = set(args.models) - set(MODELS) | set(args.anchors) - set(ANCHORS)
    if unknown:
        parser.error(f"unknown model or anchor: {', '.join(sorted(unknown))}")
    return args


def train(key: str, X: np.ndarray, y: np.ndarray) -> Any:
    estimator = MODELS[key][1]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
    return estimator


def progress(console: Console, message: str) -> None:
    console.print(f"{time.strftime('%H:%M:%S')} {message}", markup=False, highlight=False)


def measure_model(
    key: str,
    estimator: Any,
    rows: EvalRows,
    tools: list[str],
    workdir: Path,
    args: argparse.Namespace,
    console: Console,
) -> list[ToolResult]:
    def log(message: str) -> None:
        progress(console, f"[{key}] {message}")

    results = []
    for tool in tools:
        start = time.perf_counter()
        res = measure_tool(tool, estimator, rows, workdir / tool, args, log)
        results.append(res)
        log(f"{tool}: {res.status} ({time.perf_counter() - start:.0f} s)")
    return results


def run(args: argparse.Namespace, workdir: Path, console: Console) -> None:
    X_train, y_train, X_test = make_data()
    report: dict[str, Any] = {"meta": metadata(args, len(X_test)), "models": []}
    summary: list[tuple[str, dict[str, Any]]] = []
    tools = ["fedge", *args.anchors]
    for key in args.models:
        name = MODELS[key][0]
        progress(console, f"[{key}] training {name}")
        estimator = train(key, X_train, y_train)
        rows = eval_rows(estimator, X_test)
        results = measure_model(key, estimator, rows, tools, workdir / key, args, console)
        notes = Footnotes()
        console.print(model_table(name, len(X_test), results, notes))
        for i, note in enumerate(notes.notes, 1):
            console.print(f"  [{i}] {note}", markup=False, highlight=False)
        if results[0].batch_differs_from_single:
            n_differ = results[0].batch_differs_from_single
            console.print(f"  fedge: batch labels differ from single-row labels on {n_differ} rows")
        r = ratios(results)
        paired = paired_latency(results, rows.X, workdir / key, args.repeats)
        if paired is not None:
            # the verdict is the paired one: same load on both sides (see paired_latency)
            r["separate_latency_ratio"] = r["latency_ratio"]
            r["latency_ratio"], r["latency_verdict"] = (
                paired["latency_ratio"], paired["latency_verdict"]
            )
            r["paired"] = paired
        summary.append((name, r))
        report["models"].append(
            {
                "model": key,
                "name": name,
                "tools": [{**asdict(t), "gen_compile_s": t.gen_compile_s} for t in results],
                "ratios": r,
            }
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    console.print(ratio_table(summary))
    console.print(
        "fedge ns/row is the faster of m_predict (single-row) and m_predict_batch; anchors are "
        "timed single-row (their generated C has no batch entry point).\n"
        "* = this anchor's labels differ from the source model on some plain or NaN rows "
        "(it still counts).\n"
        "agree: (k) = number of rows whose label differs from the source model's predict.",
        highlight=False,
    )
    console.print(f"results: {RESULTS}")


def main() -> None:
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 170)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, args.workdir.resolve(), console)
        return
    with tempfile.TemporaryDirectory(prefix="fedge-c-bench-") as tmp:
        run(args, Path(tmp), console)


if __name__ == "__main__":
    main()
