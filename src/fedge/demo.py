"""The main job end to end on data that ships with scikit-learn (breast cancer).

Trains a few models (a logistic regression federated over 10 simulated hospitals with
differential privacy and a boosted tree model federated over the same hospitals, both
through secure aggregation), lowers them to the IR, saves and reloads lite files, and
measures what each step costs: parity with the source model, bytes, the compiled C and a
quantized copy. Then it deploys one compressed model (the int8 random forest) to every
device target: on each runnable target the firmware runs a few held-out rows in its
emulator and every output is compared with the numpy runtime bit for bit; every target
reports the model's flash, RAM, stack and whether it fits. A target whose tools are missing
is marked so, not a failure. The compression search's candidates (the random forest) and
the int8 forest's single-row latencies per backend complete the record: everything goes to
``out/demo.json`` and the story of the run to ``out/report.html`` (``fedge report``).
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.io import load, save
from fedge.ir.lower import lower
from fedge.ir.runtime import predict, predict_proba

__all__ = ["DEPLOYED", "DEVICE_ROWS", "RUN_FILE", "DemoRow", "DeviceRow", "run_demo"]

#: The run record ``fedge report`` reads, written in the output directory.
RUN_FILE = "demo.json"


@dataclass(frozen=True)
class DemoRow:
    """One model's journey: accuracy, parity of the reloaded artifact, and sizes."""

    name: str
    accuracy: float
    labels_identical: bool  # reference mode, reloaded .fedge vs the source model
    max_proba_diff: float  # reference mode
    device_label_agreement: float  # device mode (float32) vs the source model
    pickle_bytes: int
    json_bytes: int
    fedge_bytes: int
    c_identical: bool | None  # compiled C vs device mode (bits) and the source (labels)
    c_object_bytes: int | None  # text + data of the compiled model (gcc -O2, host)
    compression: str  # quantization strategy applied to the model
    compressed_bytes: int  # its binary lite file
    compressed_accuracy: float  # device mode, test rows
    privacy: str | None = None  # how a federated model was trained, and the epsilon spent
    devices: tuple[DeviceRow, ...] | None = None  # the compressed model on every target
    # format -> "verified" (run on its runtime, within its tolerance) or "refused: <why>"
    exports: dict[str, str] | None = None
    package: dict[str, Any] | None = None  # the compressed model packaged and benchmarked

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceRow:
    """The compressed model on one device target: parity (runnable targets) and footprint."""

    target: str
    runs_on: str  # the emulator, "native" or "size only"
    status: str  # "ok", "FAILED", "size only", "does not fit" or "tool missing"
    parity: str  # the one-line verdict with its rule, or why there is none
    bit_exact: bool | None  # every output equals device mode bit for bit (None: not run)
    rows: int  # held-out rows run on the target
    flash_bytes: int | None  # the model's own (firmware minus a stub-model firmware)
    ram_bytes: int | None
    stack_bytes: int | None
    fits: bool | None
    flash_budget: int | None
    ram_budget: int | None
    per_prediction: float | None  # instructions or cycles, where the emulator counts them
    counter: str
    seconds: float  # building, sizing and running


DEPLOYED = "random forest (100)"  # its int8 copy fits every target, Arduino Uno included
EXPORT_FORMATS = ("onnx", "tflite", "coreml")


def _exports(est: Any, X: np.ndarray) -> dict[str, str]:
    """Each runtime format exported and run on its runtime against the source model."""
    from fedge.errors import FedgeError

    out: dict[str, str] = {}
    for fmt in EXPORT_FORMATS:
        try:
            if fmt == "onnx":
                from fedge.deployment.formats.onnx import verify_onnx

                ok = verify_onnx(est, X).ok
            elif fmt == "tflite":
                from fedge.deployment.formats.tflite import verify_tflite

                ok = verify_tflite(est, X).passed
            else:
                from fedge.deployment.formats.coreml import verify_coreml

                ok = verify_coreml(est, X).ok
        except FedgeError as exc:
            out[fmt] = f"refused: {str(exc).splitlines()[0]}"
            continue
        out[fmt] = "verified" if ok else "MISMATCH"
    return out


def _package_and_bench(
    model: Any, X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, out: Path, seed: int
) -> tuple[dict[str, Any], Any]:
    """Package the compressed model (reproducible, verified on load) and time it; the
    summary and the backend's full benchmark report."""
    from fedge.deployment.inference_optimizer import InferenceOptimizer
    from fedge.deployment.model_packager import ModelPackager, load_package

    info = ModelPackager("demo-forest-int8", "1.0.0").package(
        model, out / "demo-forest-int8.zip", X_tr, y_tr, formats=("c", "onnx"),
        created=1_700_000_000 + seed,
    )
    package = load_package(info.path)  # every byte checked
    same = bool(np.array_equal(package.predict(X_te), predict(model, X_te)))
    with InferenceOptimizer(package.model) as optimizer:
        report = optimizer.benchmark(X_te, single_rows=len(X_te), batch_repeats=3)
    return {
        "path": str(info.path), "bytes": info.bytes, "version_id": info.version_id,
        "members": list(info.members), "predictions_identical": same,
        "backend": report.backend, "p50_us": report.p50_us, "p99_us": report.p99_us,
        "rows_per_s": report.batch_rows_per_s, "cache_hit_us": report.cache_hit_us,
    }, report


DEVICE_ROWS = 16  # held-out rows each runnable target runs


def _estimators(seed: int) -> dict[str, Callable[[], Any]]:
    """Unfitted estimators by display name (the federated model is added by run_demo)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    return {
        "logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        "decision tree": lambda: DecisionTreeClassifier(max_depth=6, random_state=seed),
        "random forest (100)": lambda: RandomForestClassifier(100, random_state=seed),
        "XGBoost (100)": lambda: _xgboost(seed),
        "MLP (32, 16)": lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier((32, 16), max_iter=500, random_state=seed),
        ),
    }


def _xgboost(seed: int) -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=100, max_depth=4, random_state=seed, n_jobs=1)


def _quantize(model: Any) -> tuple[str, Any]:
    """int8 weights (linear models, MLPs); trees: identical subtrees merged and leaves shared
    (lossless), then 8-bit threshold grids and int8 leaves."""
    from fedge.compression import ModelPruner, ModelQuantizer
    from fedge.ir.nodes import TreeEnsemble

    if any(isinstance(s, TreeEnsemble) for s in model.steps):
        model = ModelPruner(0.0, "lossless").prune_model(model)
    return "int8", ModelQuantizer("int8").quantize_model(model)


def _verify_c(est: Any, X: np.ndarray) -> tuple[bool | None, int | None]:
    """Compile the model as C and run it on X; (None, None) when no compiler is installed."""
    from fedge.deployment.verify import verify_c
    from fedge.errors import ToolchainError

    try:
        report = verify_c(est, X)
    except ToolchainError:
        return None, None
    return report.identical, report.text_bytes + report.data_bytes


def _deploy(
    model: Any, X: np.ndarray, progress: Callable[[str], None] | None = None
) -> tuple[DeviceRow, ...]:
    """``model`` on every device target: verify_on_device where it runs, else its footprint."""
    import time

    from fedge.deployment.device_verify import measure_footprint, verify_on_device
    from fedge.deployment.devices import DEVICES
    from fedge.errors import FootprintError, ToolchainError

    out = []
    for t in DEVICES.values():
        if progress is not None:
            progress(f"int8 {DEPLOYED} on {t.name}")
        start = time.perf_counter()
        fp, report, status, parity = None, None, "", ""
        build_missing = t.missing(run=False)
        run_missing = t.missing(run=True) if t.runnable else []
        try:
            if build_missing:
                status = "tool missing"
                parity = "missing: " + ", ".join(f"{r.what} ({r.package})" for r in build_missing)
            elif t.runnable and not run_missing:
                try:
                    report = verify_on_device(model, X, t)
                    fp = report.footprint
                    status = "ok" if report.passed else "FAILED"
                    parity = report.parity
                except FootprintError as exc:
                    fp, status, parity = measure_footprint(model, t), "does not fit", str(exc)
            else:
                fp = measure_footprint(model, t)
                if run_missing:
                    status = "tool missing"
                    parity = "cannot run: missing " + ", ".join(
                        f"{r.what} ({r.package})" for r in run_missing
                    )
                elif fp.fits:
                    status, parity = "size only", "size-only target (no emulator)"
                else:
                    status, parity = "does not fit", fp.message
        except ToolchainError as exc:
            status, parity = "FAILED", str(exc)
        out.append(
            DeviceRow(
                target=t.name,
                runs_on=t.runs_on,
                status=status,
                parity=parity,
                bit_exact=None
                if report is None
                else report.score_mismatches == 0 and report.label_mismatches_device == 0,
                rows=0 if report is None else report.rows,
                flash_bytes=None if fp is None else fp.flash_bytes,
                ram_bytes=None if fp is None else fp.ram_bytes,
                stack_bytes=None if fp is None else fp.stack_bytes,
                fits=None if fp is None else fp.fits,
                flash_budget=t.flash_budget,
                ram_budget=t.ram_budget,
                per_prediction=None if report is None else report.per_prediction,
                counter=t.counter_note if report is None else report.counter,
                seconds=round(time.perf_counter() - start, 2),
            )
        )
    return tuple(out)


FEDERATED = "federated logreg (10 hospitals)"


def _federated(
    X: np.ndarray, y: np.ndarray, seed: int, out: Path, held_out: tuple[np.ndarray, np.ndarray]
) -> tuple[Any, str]:
    """Logistic regression trained over 10 simulated hospitals with record-level DP-SGD
    (epsilon 1, delta 1e-5) and SecAgg+ secure aggregation; the history goes to
    ``out/federated_history.json``, with the global model's accuracy on the held-out rows
    after every round (measured by the simulation for the record, never used in training).

    Features are scaled with the ranges published in the dataset's documentation: public
    knowledge, so scaling costs no privacy (exact moments from the hospitals would)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from fedge.data import documented_bounds
    from fedge.federated import DifferentialPrivacy, TrainingConfig, simulate

    bounds = documented_bounds(load_breast_cancer().DESCR, X.shape[1])
    privacy = DifferentialPrivacy(level="record", target_epsilon=1.0, delta=1e-5)
    result = simulate(
        LogisticRegression(), X, y, n_clients=10, partition="iid", rounds=20,
        training=TrainingConfig(epochs=1, batch_size=64, learning_rate=1.0),
        privacy=privacy, feature_range=bounds, random_state=seed, progress=False,
        secure_aggregation="secagg+", validation=held_out,
    )
    result.history.save(out / "federated_history.json")
    secure = sum(r.metrics.get("secure_seconds", 0.0) for r in result.history.rounds)
    total = sum(r.seconds for r in result.history.rounds)
    note = (
        f"record-level DP-SGD, epsilon {result.epsilon:.3f} (delta 1e-5) over "
        f"{len(result.history.rounds)} rounds, each hospital's noise calibrated to its size; "
        f"SecAgg+ secure aggregation (the server saw only sums) took {secure:.2f} s of "
        f"{total:.2f} s of rounds ({100 * secure / total:.0f}%)"
    )
    return result.model, note


FEDERATED_TREES = "federated boosting (10 hospitals)"


@dataclass(frozen=True)
class _TrainedIR:
    """A model trained straight into the IR (federated boosting has no scikit-learn object):
    its source predictions are the IR's reference mode."""

    model: Any

    def predict(self, X: np.ndarray) -> np.ndarray:
        return predict(self.model, X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return predict_proba(self.model, X)


def _federated_boosting(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[_TrainedIR, str]:
    """Histogram gradient boosting over the same 10 hospitals (iid split), bin edges agreed
    over the documented feature ranges, every histogram summed through SecAgg+."""
    import time

    from sklearn.datasets import load_breast_cancer

    from fedge.data import documented_bounds
    from fedge.federated import FederatedHistGradientBoosting
    from fedge.federated.partitioning import iid_partition

    bounds = documented_bounds(load_breast_cancer().DESCR, X.shape[1])
    parts = iid_partition(len(y), 10, np.random.default_rng(seed))
    start = time.perf_counter()
    booster = FederatedHistGradientBoosting(
        classes=np.unique(y).tolist(), n_estimators=50, max_depth=3, feature_range=bounds,
        secure_aggregation="secagg+",
    ).fit([(X[i], y[i]) for i in parts])
    seconds = time.perf_counter() - start
    uploaded = sum(r.uploaded_values for r in booster.history_.rounds)
    note = (
        f"histogram gradient boosting, 50 trees of depth 3, bin edges from the documented "
        f"feature ranges; every histogram summed with SecAgg+ (the server saw only sums): "
        f"{uploaded:,} int64 values uploaded, {seconds:.1f} s"
    )
    return _TrainedIR(booster.model_), note


def _compression_search(est: Any, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """AutoCompress over ``est``: every candidate's bytes and score, and the Pareto front.

    The search's rows are ``X`` (held-out rows: the model never trained on them)."""
    from fedge.compression import auto_compress

    # The scoring half is ~85 rows, where one row is 1.2 points: a 2.5-point budget lets the
    # search trade up to two rows for size (stated in the report).
    result = auto_compress(est, X, y, max_accuracy_drop=0.025, seed=seed)

    def record(c: Any) -> dict[str, Any]:
        return {"passes": " + ".join(c.passes), "bytes": c.bytes, "score": c.score}

    front = {id(c) for c in result.front}
    return {
        "model": DEPLOYED,
        "metric": result.metric,
        "max_drop": result.max_drop,
        "rows": len(y),
        "baseline": record(result.baseline),
        "best": record(result.best),
        "candidates": [record(c) | {"front": id(c) in front} for c in result.candidates],
    }


def _latencies(model: Any, X: np.ndarray, compiled: Any) -> dict[str, Any]:
    """Single-row latencies of ``model`` per backend (microseconds): ``compiled``, the
    package benchmark's report, then the numpy runtime and onnxruntime."""
    from fedge.deployment.inference_optimizer import compare_backends

    reports = [compiled, *compare_backends(model, X, backends=("numpy", "onnxruntime"))]
    return {
        r.backend: {"p50_us": r.p50_us, "p99_us": r.p99_us, "samples_us": list(r.latencies_us)}
        for r in reports
    }


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    devices: bool = True,
    report: bool = True,
) -> list[DemoRow]:
    """Run the demo, writing every artifact under ``out_dir``; return one row per model.

    Parameters
    ----------
    out_dir : path-like
        Directory for the lite files (created if missing).
    seed : int
        Seed of the split and of every estimator.
    progress : callable, optional
        Called with the name of each model (and each device target) as its work starts.
    devices : bool
        Deploy the int8 copy of :data:`DEPLOYED` to every device target (its row's
        ``devices``): parity on :data:`DEVICE_ROWS` held-out rows where the target runs, and
        the footprint everywhere.
    report : bool
        Write ``out_dir/report.html`` (:func:`fedge.visualization.report.write_report`) from
        the run record ``out_dir/demo.json``, which is always written.
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    rows = []
    record: dict[str, Any] = {"dataset": "breast cancer (569 x 30), 30% held out", "seed": seed}
    for name in [*_estimators(seed), FEDERATED, FEDERATED_TREES]:
        if progress is not None:
            progress(name)
        privacy = None
        if name == FEDERATED:
            est, privacy = _federated(X_tr, y_tr, seed, out, (X_te, y_te))
        elif name == FEDERATED_TREES:
            est, privacy = _federated_boosting(X_tr, y_tr, seed)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est = _estimators(seed)[name]().fit(X_tr, y_tr)
        artifact = est.model if isinstance(est, _TrainedIR) else est
        stem = out / name.split(" (")[0].replace(" ", "_")
        json_bytes = save(artifact, stem.with_suffix(".json"))
        fedge_bytes = save(lower(artifact), stem.with_suffix(".fedge"))
        model = load(stem.with_suffix(".fedge"))
        source = est.predict(X_te)
        c_identical, c_bytes = _verify_c(artifact, X_te)
        strategy, small = _quantize(model)
        small_bytes = save(small, stem.with_name(stem.name + f"_{strategy}").with_suffix(".fedge"))
        deployed = packaged = None
        if devices and name == DEPLOYED:
            deployed = _deploy(small, X_te[:DEVICE_ROWS], progress)
        if name == DEPLOYED:
            packaged, bench = _package_and_bench(small, X_tr, y_tr, X_te, out, seed)
            if progress is not None:
                progress(f"compression search and latencies of {DEPLOYED}")
            record["compression"] = _compression_search(est, X_te, y_te, seed)
            record["latency"] = {
                "model": f"int8 {DEPLOYED}", "backends": _latencies(small, X_te, bench)
            }
        exported = _exports(artifact, X_te)
        rows.append(
            DemoRow(
                name=name,
                accuracy=float(np.mean(source == y_te)),
                labels_identical=bool(np.array_equal(predict(model, X_te), source)),
                max_proba_diff=float(
                    np.abs(predict_proba(model, X_te) - est.predict_proba(X_te)).max()
                ),
                device_label_agreement=float(
                    np.mean(predict(model, X_te, mode="device") == source)
                ),
                pickle_bytes=len(pickle.dumps(artifact, protocol=pickle.HIGHEST_PROTOCOL)),
                json_bytes=json_bytes,
                fedge_bytes=fedge_bytes,
                c_identical=c_identical,
                c_object_bytes=c_bytes,
                compression=strategy,
                compressed_bytes=small_bytes,
                compressed_accuracy=float(np.mean(predict(small, X_te, mode="device") == y_te)),
                privacy=privacy,
                devices=deployed,
                exports=exported,
                package=packaged,
            )
        )
    record["rows"] = [r.as_dict() for r in rows]
    record["federated_history"] = "federated_history.json"
    (out / RUN_FILE).write_text(json.dumps(record, indent=1, allow_nan=True) + "\n")
    if report:
        from fedge.visualization.report import write_report

        write_report(out, out / "report.html")
    return rows
