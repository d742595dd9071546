"""The export parity matrix: every zoo model x every format x every precision, each cell run
on the format's own runtime and either verified or refused with the exporter's error.

Precisions are the model the exporter is given: ``float32`` (the fitted estimator, lowered),
``int8`` (``ModelQuantizer("int8")``: int8 weights, integer tree leaves) and ``float16``
(``ModelQuantizer("float16")``). Formats, and what "verified" means in each (the verifier's
own report; rows are the test split, plus, for tree models outside pipelines, rows on split
thresholds and one float32 step either side and extreme values, plus an all-NaN row for
models trained with NaN; every row rounded to float32, what the devices read):

- lite: ``fedge.save`` (.fedge) then ``fedge.load``; scores and labels of the loaded model
  bit-identical to the in-memory IR (device and reference modes); float32: labels identical
  to the source's ``predict``, probabilities (regressors: values, relative to max(1, |y|))
  within 1e-5 of the source.
- C: ``fedge.deployment.verify_c`` (host gcc): scores bit-identical to fedge's device mode,
  labels identical to device mode and (float32) to the source's ``predict``.
- ONNX: ``verify_onnx`` (onnxruntime): labels identical to device mode and (float32) the
  source; outputs within rtol 1e-5 / atol 1e-6 of device mode (or no farther from the float64
  model than device mode's own float32 error).
- TFLite (LiteRT interpreter, reference kernels; ``verify_tflite``): float32 file of the
  float32 model, float16 file of the float16 model, full-integer int8 file of the int8 model
  (fedge's weight scales, activation ranges from the training rows). float: labels identical
  to device mode, probabilities within 1e-6, scores within 1e-5 relative. int8: every int8
  operator within one quantization step of exact arithmetic on its own int8 inputs; the
  output's error in quantization steps and the label agreement are reported, not required.
- Core ML (``verify_coreml``): the saved spec evaluated by fedge's own spec reader (Core ML
  itself needs macOS and is not run); labels identical to fedge's runtime and to the source,
  probabilities / values within the spec tolerance (1e-9 trees with float64 leaves, else 1e-5).

Quantized cells are compared with fedge's runtime on the same quantized model: what
quantization changed against the float source is the compression pass's business, not the
exporter's.

Alongside: the float32 ONNX file's size next to skl2onnx's for the same model (the anchor;
skl2onnx converts scikit-learn models only, XGBoost/LightGBM need onnxmltools, not
installed), and skl2onnx's label mismatches against the source on the same rows (its NaN
direction bug on trees trained with NaN; docs/onnx.md). Targets of issue 9, MET/MISSED:
every float model verified in ONNX; linear models and MLPs verified in TFLite float32 and
int8; the ONNX file of every random forest no larger than skl2onnx's.

Writes benchmarks/results/export_matrix.json (summary, targets and tables indented; one line per
model with every cell's report).

    .venv/bin/python benchmarks/export_matrix.py [--quick] [--models a,b] [--jobs 2]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # 2 cores, 2 worker processes: no OpenMP oversubscription

import argparse  # noqa: E402 (after the thread settings above)
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.base import is_classifier  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the model zoo

import fedge  # noqa: E402
from fedge.compression import ModelQuantizer  # noqa: E402
from fedge.errors import FedgeError  # noqa: E402
from fedge.ir import runtime  # noqa: E402
from fedge.ir.nodes import Model, Task, accepts_missing  # noqa: E402
from zoo import Case, extreme_rows, split_points, threshold_rows, zoo  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "export_matrix.json"
PRECISIONS = ("float32", "int8", "float16")
FORMATS = ("lite", "c", "onnx", "tflite", "coreml")
CELLS = [(f, p) for f in FORMATS for p in PRECISIONS]
FORMAT_NAMES = {"lite": "lite", "c": "C", "onnx": "ONNX", "tflite": "TFLite", "coreml": "Core ML"}
SHORT = {"float32": "f32", "int8": "int8", "float16": "f16"}
#: what each format's cell is held to (printed under the matrix and stored in the JSON)
TOLERANCES = {
    "lite": "loaded model bit-identical to the in-memory IR (device and reference modes); "
    "float32: labels = source, probabilities/values within 1e-5 of the source",
    "c": "host gcc: scores bit-identical to fedge device mode; labels = device mode "
    "(float32: and = the source's predict)",
    "onnx": "onnxruntime: labels = device mode (float32: and = source); outputs within "
    "rtol 1e-5 / atol 1e-6 of device mode (or <= 2x device mode's own float32 error)",
    "tflite": "LiteRT reference kernels: float32/float16 labels = device mode, probabilities "
    "within 1e-6, scores 1e-5 relative; int8: every int8 op within 1 quantization step of "
    "exact arithmetic on its int8 inputs (output steps and label agreement reported)",
    "coreml": "fedge's Core ML spec reader (not Core ML, which needs macOS, nor its spec "
    "validator): labels = runtime and source, values within the spec tolerance (1e-9 trees with "
    "float64 leaves, else 1e-5)",
}
QUICK = (
    "logreg_binary",
    "logreg_imputed",
    "linear_regression",
    "forest_binary",
    "forest_nan",
    "hgb_binary_nan",
    "xgb_binary_nan",
    "lgbm_multiclass_nan",
    "mlp_binary",
    "mlp_regressor",
)
MAX_THRESHOLD_ROWS = 1500
SOURCE_TOL = 1e-5


# --------------------------------------------------------------------------- the zoo
def family(c: Case) -> str:
    if c.name.startswith("mlp"):
        return "mlp"
    if "tree" not in c.tags:
        return "linear"
    if "xgboost" in c.tags:
        return "xgboost"
    if "lightgbm" in c.tags:
        return "lightgbm"
    if "boosting" in c.tags:
        return "sklearn boosting"
    if c.name.startswith("tree"):
        return "tree"
    return "forest"


def is_random_forest(c: Case) -> bool:
    est = c.make()
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    return type(final).__name__ in ("RandomForestClassifier", "RandomForestRegressor")


def rows_for(c: Case, model: Model) -> tuple[np.ndarray, np.ndarray, str]:
    """The verification rows (float32-rounded), each row's kind (``test``, ``threshold``,
    ``extreme``, ``nan``: any row with a NaN) and how they were made."""
    X = c.dataset.X_test
    parts, kinds = [X], ["test"] * len(X)
    what = [f"{len(X)} test rows"]
    if "tree" in c.tags and not hasattr(c.estimator, "steps"):
        thresholds, features = split_points(c.estimator)
        if thresholds.size:
            t = threshold_rows(c.dataset.X_train, thresholds, features)
            if len(t) > MAX_THRESHOLD_ROWS:
                pick = np.random.default_rng(0).choice(len(t), MAX_THRESHOLD_ROWS, replace=False)
                t = t[np.sort(pick)]
            parts.append(t)
            kinds += ["threshold"] * len(t)
            what.append(f"{len(t)} threshold rows")
        e = extreme_rows(X, True)
        parts.append(e)
        kinds += ["extreme"] * len(e)
        what.append(f"{len(e)} extreme rows")
    if c.dataset.has_nan:
        parts.append(np.full((1, X.shape[1]), np.nan))
        kinds.append("nan")
        what.append("1 all-NaN row")
    rows = np.concatenate(parts).astype(np.float32).astype(np.float64)
    kind = np.array(kinds)
    nan = np.isnan(rows).any(axis=1)
    kind[nan] = "nan"
    if not accepts_missing(model) and nan.any():
        what.append(f"{int(nan.sum())} rows with NaN dropped (no missing-value rule)")
        rows, kind = rows[~nan], kind[~nan]
    return rows, kind, ", ".join(what)


# --------------------------------------------------------------------------- one cell
def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def refused(exc: BaseException) -> dict[str, Any]:
    return {"status": "refused", "detail": first_line(exc)}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return a.shape == b.shape and bool(
            np.array_equal(a.view(np.uint8), b.view(np.uint8))
            if a.dtype == b.dtype
            else np.array_equal(a, b, equal_nan=True)
        )
    return bool(np.array_equal(a, b))


def cell_lite(model: Model, X: np.ndarray, source: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedge-matrix-") as tmp:
        path = Path(tmp) / "model.fedge"
        try:
            nbytes = fedge.save(model, path)
        except FedgeError as exc:
            return refused(exc)
        json_bytes = fedge.save(model, Path(tmp) / "model.json")
        loaded = fedge.load(path)
    problems = []
    for mode in ("device", "reference"):
        if not _same(
            runtime.decision_function(loaded, X, mode=mode),
            runtime.decision_function(model, X, mode=mode),
        ):
            problems.append(f"{mode} scores differ")
        if not _same(runtime.predict(loaded, X, mode=mode), runtime.predict(model, X, mode=mode)):
            problems.append(f"{mode} labels differ")
    out: dict[str, Any] = {"bytes": nbytes, "json_bytes": json_bytes}
    if source is not None:
        got = runtime.predict(loaded, X)
        if model.task is Task.CLASSIFICATION:
            mism = int(np.sum(got != np.asarray(source.predict(X))))
            out["label_mismatches_source"] = mism
            if mism:
                problems.append(f"{mism} labels differ from the source")
            if hasattr(source, "predict_proba") and model.link.value != "none":
                d = float(
                    np.max(np.abs(runtime.predict_proba(loaded, X) - source.predict_proba(X)))
                )
                out["max_abs_diff_source"] = d
                if d > SOURCE_TOL:
                    problems.append(f"probabilities {d:.2g} from the source")
        else:
            want = np.asarray(source.predict(X), dtype=np.float64).reshape(got.shape)
            d = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
            out["max_rel_diff_source"] = d
            if d > SOURCE_TOL:
                problems.append(f"values {d:.2g} (relative) from the source")
    out["status"] = "FAILED" if problems else "verified"
    out["detail"] = "; ".join(problems) if problems else "bit-identical after save/load"
    return out


def cell_c(model: Model, X: np.ndarray, source: Any) -> dict[str, Any]:
    from fedge.deployment import verify_c
    from fedge.deployment.formats.c import emit_c

    try:
        emit_c(model, "model")
    except FedgeError as exc:
        return refused(exc)
    r = verify_c(model if source is None else source, X)
    ok = r.identical
    return {
        "status": "verified" if ok else "FAILED",
        "detail": (
            f"{r.score_mismatches} score rows differ in any bit, label mismatches: "
            f"device {r.label_mismatches_device}, source {r.label_mismatches_source}"
        ),
        "bytes": r.text_bytes + r.data_bytes,
        "text_bytes": r.text_bytes,
        "data_bytes": r.data_bytes,
        "report": r.as_dict(),
    }


def cell_onnx(model: Model, X: np.ndarray, source: Any) -> dict[str, Any]:
    from fedge.deployment.formats.onnx import to_onnx, verify_onnx

    try:
        proto = to_onnx(model)
    except FedgeError as exc:
        return refused(exc)
    nbytes = len(proto.SerializeToString(deterministic=True))
    r = verify_onnx(proto, X, source=model if source is None else source)
    return {
        "status": "verified" if r.ok else "FAILED",
        "detail": (
            f"{r.output}: max |diff| {r.max_abs_diff:.2g} (rel {r.max_rel_diff:.2g}), label "
            f"mismatches device {r.label_mismatches_device}, source {r.label_mismatches_source}"
        ),
        "bytes": nbytes,
        "report": r.as_dict(),
    }


def cell_tflite(
    model: Model, X: np.ndarray, precision: str, representative: np.ndarray
) -> dict[str, Any]:
    from fedge.deployment.formats.tflite import to_tflite, verify_tflite

    kwargs: dict[str, Any] = {"precision": precision}
    if precision == "int8":
        kwargs["representative_data"] = representative
    try:
        to_tflite(model, **kwargs)
    except FedgeError as exc:
        return refused(exc)
    r = verify_tflite(model, X, **kwargs)
    if precision == "int8":
        detail = (
            f"worst int8 op {max(r.op_error_steps.values(), default=0.0):.2f} steps; output "
            + ", ".join(f"{k} {v:.2f} steps" for k, v in r.max_error_steps.items())
        )
    else:
        detail = ", ".join(
            f"{k} max |err| {r.max_abs_error[k]:.2g} (tol {r.tolerance[k]:.2g})" for k in r.outputs
        )
    if r.label_agreement is not None:
        detail += f"; labels {r.label_agreement:.1%} identical"
    return {
        "status": "verified" if r.passed else "FAILED",
        "detail": detail,
        "bytes": r.size_bytes,
        "report": {
            "max_abs_error": r.max_abs_error,
            "tolerance": r.tolerance,
            "max_error_steps": r.max_error_steps,
            "op_error_steps": r.op_error_steps,
            "label_agreement": r.label_agreement,
            "labels_identical": r.labels_identical,
            "runtime": r.runtime,
            "passed": r.passed,
        },
    }


def cell_coreml(model: Model, X: np.ndarray, source: Any) -> dict[str, Any]:
    from fedge.deployment.formats.coreml import to_coreml, verify_coreml

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            to_coreml(model)
            r = verify_coreml(model if source is None else source, X)
    except FedgeError as exc:
        return refused(exc)
    return {
        "status": "verified" if r.ok else "FAILED",
        "detail": (
            f"{r.spec_kind}: label mismatches runtime {r.label_mismatches_runtime}, source "
            f"{r.label_mismatches_source}; max |diff| {r.max_abs_diff_runtime:.2g} "
            f"(tolerance {r.tolerance:g})"
        ),
        "bytes": r.file_bytes,
        "report": {
            k: v for k, v in r.as_dict().items() if k not in ("verified_by", "not_verified")
        },
    }


def run_cell(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn()
    except Exception as exc:  # a crash is a finding, not a refusal
        out = {
            "status": "ERROR",
            "detail": first_line(exc),
            "traceback": traceback.format_exc(limit=4),
        }
    out["seconds"] = round(time.perf_counter() - t, 3)
    return out


# --------------------------------------------------------------------------- skl2onnx anchor
def _wrong_rows(c: Case, outputs: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Rows where an ONNX model's labels (classifiers) or values (regressors: more than 1e-5
    relative to max(1, |y|)) differ from the source estimator's."""
    est = c.estimator
    if c.dataset.task == "regression":
        want = np.asarray(est.predict(X), dtype=np.float64).reshape(len(X), -1)
        got = outputs.get("variable", next(iter(outputs.values())))
        got = np.asarray(got, dtype=np.float64).reshape(want.shape)
        with np.errstate(invalid="ignore"):
            rel = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        return ~(rel <= SOURCE_TOL).all(axis=1)
    return np.asarray(outputs["label"]) != np.asarray(est.predict(X))


def skl2onnx_anchor(c: Case, X: np.ndarray, kind: np.ndarray) -> dict[str, Any]:
    """skl2onnx's file for the same float32 estimator: its size, and where its outputs and
    fedge's differ from the source's on the same rows (by kind of row), with the same rule."""
    from fedge.deployment.formats.onnx import run_onnx, to_onnx

    est = c.estimator
    ours = to_onnx(est)
    out: dict[str, Any] = {"fedge_bytes": len(ours.SerializeToString(deterministic=True))}
    bare = type(ours)()
    bare.CopyFrom(ours)
    del bare.metadata_props[:]
    bare.doc_string = bare.graph.doc_string = bare.graph.input[0].doc_string = ""
    out["fedge_graph_bytes"] = len(bare.SerializeToString(deterministic=True))
    kinds = sorted(set(kind.tolist()))
    wrong = _wrong_rows(c, run_onnx(ours, X), X)
    out["fedge_mismatches"] = {k: int(wrong[kind == k].sum()) for k in kinds}
    out["rows"] = {k: int((kind == k).sum()) for k in kinds}
    try:
        from skl2onnx import to_onnx as skl_to_onnx
    except ImportError as exc:
        return out | {"status": "unavailable", "detail": first_line(exc)}
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    sample = c.dataset.X_train[:1].astype(np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                options = {id(final): {"zipmap": False}} if is_classifier(final) else None
                proto = skl_to_onnx(est, sample, options=options)
            except NameError:
                # No zipmap option (LinearSVC): skl2onnx then fails without options too (it
                # adds its default zipmap); any option of the model's own avoids that.
                proto = skl_to_onnx(est, sample, options={id(final): {"nocl": False}})
    except Exception as exc:
        return out | {"status": "not converted", "detail": first_line(exc)}
    data = proto.SerializeToString()
    out |= {"status": "converted", "bytes": len(data)}
    try:
        theirs = run_onnx(data, X)
    except Exception as exc:
        return out | {"run_error": first_line(exc)}
    wrong = _wrong_rows(c, theirs, X)
    out["mismatches"] = {k: int(wrong[kind == k].sum()) for k in kinds}
    if c.dataset.task == "regression":
        want = np.asarray(est.predict(X), dtype=np.float64).reshape(len(X), -1)
        got = np.asarray(theirs.get("variable", next(iter(theirs.values()))), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            out["max_rel_diff"] = float(
                np.nanmax(np.abs(got.reshape(want.shape) - want) / np.maximum(1.0, np.abs(want)))
            )
    return out


# --------------------------------------------------------------------------- one model
def run_model(name: str) -> dict[str, Any]:
    c = next(z for z in zoo() if z.name == name)
    t0 = time.perf_counter()
    est = c.estimator
    fit_s = time.perf_counter() - t0
    base = fedge.lower(est)
    X, kind, rows_note = rows_for(c, base)
    models: dict[str, Model | None] = {"float32": base}
    quantizer_errors: dict[str, str] = {}
    for p in ("int8", "float16"):
        try:
            models[p] = ModelQuantizer(p).quantize_model(est)
        except FedgeError as exc:
            models[p] = None
            quantizer_errors[p] = first_line(exc)
    cells: dict[str, dict[str, Any]] = {}
    for fmt, prec in CELLS:
        model = models[prec]
        key = f"{fmt}/{prec}"
        if model is None:
            cells[key] = {"status": "refused", "detail": f"quantizer: {quantizer_errors[prec]}"}
            continue
        source = est if prec == "float32" else None
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "lite": lambda m=model, s=source: cell_lite(m, X, s),
            "c": lambda m=model, s=source: cell_c(m, X, s),
            "onnx": lambda m=model, s=source: cell_onnx(m, X, s),
            "tflite": lambda m=model, p=prec: cell_tflite(m, X, p, c.dataset.X_train),
            "coreml": lambda m=model, s=source: cell_coreml(m, X, s),
        }
        cells[key] = run_cell(calls[fmt])
    anchor = run_cell(lambda: skl2onnx_anchor(c, X, kind))
    return {
        "model": name,
        "family": family(c),
        "estimator": type(est).__name__
        if not hasattr(est, "steps")
        else " > ".join(type(s).__name__ for _, s in est.steps),
        "dataset": c.data,
        "random_forest": is_random_forest(c),
        "rows": len(X),
        "rows_made_of": rows_note,
        "fit_seconds": round(fit_s, 3),
        "cells": cells,
        "skl2onnx": anchor,
    }


# --------------------------------------------------------------------------- printing
MARK = {
    "verified": "[green]✓[/]",
    "refused": "[dim]·[/]",
    "FAILED": "[bold red]✗[/]",
    "ERROR": "[bold red]E[/]",
}


def matrix_table(results: list[dict[str, Any]], console: Console) -> None:
    table = Table(
        title="Export parity matrix (✓ verified, · refused, ✗ failed, E crashed)",
        show_lines=False,
    )
    table.add_column("model")
    table.add_column("type")
    table.add_column("rows", justify="right")
    for fmt, prec in CELLS:
        table.add_column(f"{FORMAT_NAMES[fmt]}\n{SHORT[prec]}", justify="center")
    for r in results:
        table.add_row(
            r["model"],
            r["family"],
            str(r["rows"]),
            *(MARK[r["cells"][f"{f}/{p}"]["status"]] for f, p in CELLS),
        )
    console.print(table)


def summary_counts(results: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for fmt, prec in CELLS:
        key = f"{fmt}/{prec}"
        n = Counter(r["cells"][key]["status"] for r in results)
        out[key] = {s: n.get(s, 0) for s in ("verified", "refused", "FAILED", "ERROR")}
    return out


def summary_table(counts: dict[str, dict[str, int]], console: Console) -> None:
    table = Table(title="Cells per format and precision")
    table.add_column("format")
    for p in PRECISIONS:
        table.add_column(f"{p}\nverified / refused / failed", justify="center")
    table.add_column("held to")
    for fmt in FORMATS:
        cells = []
        for p in PRECISIONS:
            n = counts[f"{fmt}/{p}"]
            bad = n["FAILED"] + n["ERROR"]
            text = f"{n['verified']} / {n['refused']} / {bad}"
            cells.append(f"[bold red]{text}[/]" if bad else text)
        table.add_row(FORMAT_NAMES[fmt], *cells, TOLERANCES[fmt])
    console.print(table)


def refusal_table(results: list[dict[str, Any]], console: Console) -> list[dict[str, Any]]:
    """Refusals and failures grouped by format and error (numbers in the message aside)."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        for key, cell in r["cells"].items():
            if cell["status"] == "verified":
                continue
            fmt, prec = key.split("/")
            shape = re.sub(r"\d[\d,.]*", "N", cell["detail"])
            g = groups.setdefault(
                (fmt, cell["status"], shape),
                {"detail": cell["detail"], "models": [], "precisions": set()},
            )
            if r["model"] not in g["models"]:
                g["models"].append(r["model"])
            g["precisions"].add(prec)
    table = Table(title="Refusals (the exporter's error, first line) and failures")
    table.add_column("format")
    table.add_column("precisions")
    table.add_column("models", justify="right")
    table.add_column("error (first model's)", overflow="fold")
    table.add_column("models", overflow="fold")
    out = []
    for (fmt, status, _), g in sorted(groups.items(), key=lambda kv: kv[0][:2]):
        precs = [p for p in PRECISIONS if p in g["precisions"]]
        names = g["models"]
        shown = ", ".join(names[:6]) + (f" (+{len(names) - 6})" if len(names) > 6 else "")
        detail = g["detail"] if status == "refused" else f"[bold red]{status}[/] {g['detail']}"
        table.add_row(FORMAT_NAMES[fmt], ", ".join(precs), str(len(names)), detail, shown)
        out.append(
            {
                "format": fmt,
                "status": status,
                "precisions": precs,
                "detail": g["detail"],
                "models": names,
            }
        )
    console.print(table)
    return out


def _mismatch_text(m: dict[str, int] | None, rows: dict[str, int]) -> str:
    if m is None:
        return "-"
    total = sum(m.values())
    if not total:
        return "0"
    parts = ", ".join(f"{v} of {rows[k]} {k}" for k, v in m.items() if v)
    return f"[bold yellow]{total}[/] ({parts})"


def size_table(results: list[dict[str, Any]], console: Console) -> list[dict[str, Any]]:
    table = Table(
        title="ONNX, float32: fedge's file against skl2onnx's for the same model, and rows whose "
        "label (regressors: value, > 1e-5 relative) differs from the source's"
    )
    table.add_column("model")
    table.add_column("fedge B", justify="right")
    table.add_column("(graph only)", justify="right")
    table.add_column("skl2onnx B", justify="right")
    table.add_column("fedge / skl2onnx", justify="right")
    table.add_column("fedge mismatches", justify="right")
    table.add_column("skl2onnx mismatches (by kind of row)", overflow="fold")
    out = []
    for r in results:
        a = r["skl2onnx"]
        if a.get("status") == "ERROR":
            table.add_row(r["model"], "-", "-", "-", "-", "-", f"[bold red]{a['detail']}[/]")
            out.append({"model": r["model"], "error": a["detail"]})
            continue
        ours, graph, theirs = a["fedge_bytes"], a["fedge_graph_bytes"], a.get("bytes")
        if theirs:
            ratio = ours / theirs
            ratio_text = f"{ratio:.2f}" if ratio <= 1 else f"[yellow]{ratio:.2f}[/]"
            their_text = _mismatch_text(a.get("mismatches"), a["rows"])
            if "run_error" in a:
                their_text = a["run_error"]
        else:
            ratio, ratio_text = None, "-"
            detail = a.get("detail", "")
            their_text = (
                "[dim]not converted (XGBoost/LightGBM need onnxmltools)[/]"
                if "shape calculator" in detail
                else f"[dim]{detail}[/]"
            )
        table.add_row(
            r["model"],
            f"{ours:,}",
            f"{graph:,}",
            f"{theirs:,}" if theirs else "-",
            ratio_text,
            _mismatch_text(a["fedge_mismatches"], a["rows"]),
            their_text,
        )
        out.append(
            {
                "model": r["model"],
                "fedge_bytes": ours,
                "fedge_graph_bytes": graph,
                "skl2onnx_bytes": theirs,
                "ratio": ratio,
                "rows": a["rows"],
                "fedge_mismatches": a["fedge_mismatches"],
                "skl2onnx_mismatches": a.get("mismatches"),
                "skl2onnx": a.get("detail", a.get("run_error")),
            }
        )
    console.print(table)
    return out


def int8_table(results: list[dict[str, Any]], console: Console) -> None:
    table = Table(
        title="TFLite int8 (full-integer, fedge's int8 weights): error in quantization steps"
    )
    table.add_column("model")
    table.add_column("worst int8 op (steps)", justify="right")
    table.add_column("output vs runtime (steps)", justify="right")
    table.add_column("labels = runtime", justify="right")
    table.add_column("int8 B", justify="right")
    table.add_column("float32 B", justify="right")
    for r in results:
        cell = r["cells"]["tflite/int8"]
        if cell["status"] == "refused":
            continue
        rep = cell.get("report", {})
        ops = rep.get("op_error_steps", {})
        agree = rep.get("label_agreement")
        f32 = r["cells"]["tflite/float32"].get("bytes")
        table.add_row(
            r["model"],
            f"{max(ops.values(), default=0.0):.2f}",
            ", ".join(f"{v:.2f}" for v in rep.get("max_error_steps", {}).values()),
            "-" if agree is None else f"{agree:.1%}",
            f"{cell.get('bytes', 0):,}",
            f"{f32:,}" if f32 else "-",
        )
    console.print(table)


def targets(results: list[dict[str, Any]], console: Console) -> dict[str, Any]:
    def verified(r: dict[str, Any], key: str) -> bool:
        return r["cells"][key]["status"] == "verified"

    onnx_missed = [r["model"] for r in results if not verified(r, "onnx/float32")]
    nn = [r for r in results if r["family"] in ("linear", "mlp")]
    tfl_missed = [
        f"{r['model']} ({p})"
        for r in nn
        for p in ("float32", "int8")
        if not verified(r, f"tflite/{p}")
    ]
    forests = [r for r in results if r["random_forest"]]
    rf_rows, rf_missed = [], []
    for r in forests:
        a = r["skl2onnx"]
        ours, theirs = a.get("fedge_bytes"), a.get("bytes")
        if ours and theirs:
            rf_rows.append(f"{r['model']} {ours:,} vs {theirs:,}")
        if not (ours and theirs and ours <= theirs):
            note = f" (graph alone {a['fedge_graph_bytes']:,})" if ours and theirs else ""
            rf_missed.append(f"{r['model']}{note}")
    out = {
        "every float model verified in ONNX": {
            "met": not onnx_missed and bool(results),
            "measured": f"{len(results) - len(onnx_missed)} of {len(results)} float32 models",
            "missed": onnx_missed,
        },
        "linear and MLP verified in TFLite float32 and int8": {
            "met": not tfl_missed and bool(nn),
            "measured": f"{2 * len(nn) - len(tfl_missed)} of {2 * len(nn)} cells "
            f"({len(nn)} linear/MLP models x float32, int8)",
            "missed": tfl_missed,
        },
        "ONNX file of a random forest no larger than skl2onnx's": {
            "met": not rf_missed and bool(forests),
            "measured": (
                f"{len(forests) - len(rf_missed)} of {len(forests)} random forests: "
                + "; ".join(rf_rows)
                if forests
                else "no random forest in this run"
            ),
            "missed": rf_missed,
        },
    }
    for name, t in out.items():
        verdict = "[green]MET[/]" if t["met"] else "[bold red]MISSED[/]"
        missed = f" (missed: {', '.join(t['missed'])})" if t["missed"] else ""
        console.print(f"target: {name}: {verdict} - {t['measured']}{missed}")
    return out


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            module = sys.modules.get(pkg.replace("-", "_"))
            return getattr(module, "__version__", None)

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        **{
            p: v(p)
            for p in (
                "fedge",
                "scikit-learn",
                "onnx",
                "onnxruntime",
                "skl2onnx",
                "protobuf",
                "ai-edge-litert",
                "coremltools",
                "xgboost",
                "lightgbm",
            )
        },
    }


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK)} models (~1 minute)")
    parser.add_argument("--models", default=None, help="comma-separated zoo names")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"JSON path (default {RESULTS}; --quick/--models: not written)",
    )
    args = parser.parse_args()
    names = [c.name for c in zoo()]
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"not in the zoo: {', '.join(unknown)}")
        names = [n for n in names if n in wanted]
    elif args.quick:
        names = [n for n in names if n in QUICK]
    console = Console(width=None if sys.stdout.isatty() else 200)
    with contextlib.redirect_stderr(io.StringIO()):
        import coremltools  # noqa: F401 (its import prints macOS-only notices; once, quietly)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    context = multiprocessing.get_context("fork")
    with (
        Progress(console=console, transient=True) as bar,
        ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=context) as pool,
    ):
        task = bar.add_task("exporting", total=len(names))
        futures = {pool.submit(run_model, n): n for n in names}
        for fut in as_completed(futures):
            name = futures[fut]
            results[name] = fut.result()
            bar.update(task, description=f"done {name}")
            bar.advance(task)
    wall = time.perf_counter() - t0
    ordered = [results[n] for n in names]
    matrix_table(ordered, console)
    counts = summary_counts(ordered)
    summary_table(counts, console)
    problems = refusal_table(ordered, console)
    sizes = size_table(ordered, console)
    int8_table(ordered, console)
    verdicts = targets(ordered, console)
    console.print(
        f"{len(ordered)} models, {len(ordered) * len(CELLS)} cells in {wall:.0f} s "
        f"({args.jobs} processes)"
    )
    out = {
        "command": " ".join(["benchmarks/export_matrix.py", *sys.argv[1:]]),
        "environment": environment(),
        "wall_seconds": round(wall, 1),
        "tolerances": TOLERANCES,
        "summary": counts,
        "targets": verdicts,
        "refusals_and_failures": problems,
        "onnx_sizes_vs_skl2onnx": sizes,
        "models": ordered,
    }
    output = args.output or (None if (args.quick or args.models) else RESULTS)
    if output is None:
        console.print("partial run: JSON not written (pass --output to keep it)")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    # One line per model keeps the file diffable and small; the rest indented.
    head = json.dumps({k: v for k, v in out.items() if k != "models"}, indent=1, default=str)
    models = ",\n  ".join(json.dumps(m, default=str) for m in ordered)
    output.write_text(f'{head[:-2]},\n "models": [\n  {models}\n ]\n}}\n')
    console.print(f"wrote {output}")


if __name__ == "__main__":
    main()
