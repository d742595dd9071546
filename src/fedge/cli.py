"""The ``fedge`` command: thin over the library; parses, calls, prints.

Flags mean one thing everywhere: ``--label COL`` is a data file's target column,
``--target`` a device, ``--trust`` the permission to unpickle. Every
:class:`~fedge.errors.FedgeError` is printed as one line and exits with status 1.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fedge._version import __version__
from fedge.errors import FedgeError, InvalidInputError
from fedge.io import load, save
from fedge.ir import lower
from fedge.ir.inspect import describe

app = typer.Typer(
    name="fedge",
    help="Classic ML models from private, distributed data to small devices.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Not a terminal (CI logs, pipes): rich would assume 80 columns and crush the tables.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

ModelArg = Annotated[
    Path, typer.Argument(help="Model file: .json/.fedge (lite), .skops, or a pickle with --trust.")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust", help="Allow unpickling (runs code from the file).")
]


class ExportFormat(StrEnum):
    LITE = "lite"
    C = "c"
    ONNX = "onnx"
    TFLITE = "tflite"
    COREML = "coreml"


class Precision(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"


class Layout(StrEnum):
    """Tree layout of generated C: node tables walked by a loop, or straight-line code."""

    TABLE = "table"
    INLINE = "inline"


def _version(value: bool) -> None:
    if value:
        console.print(f"fedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """fedge: federated learning, compression and verified edge deployment."""


@app.command()
def inspect(model_path: ModelArg, trust: TrustOpt = False) -> None:
    """Describe a model or a package: type, task, features, structure and sizes."""
    from fedge.deployment.model_packager import is_package

    if is_package(model_path):
        from fedge.cli_package import describe_package

        describe_package(model_path)
        return
    model = load(model_path, trust=trust)
    info = describe(model)
    table = Table(title=f"{model_path.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("size on disk", f"{model_path.stat().st_size:,} bytes")
    for key, value in info["summary"].items():
        table.add_row(key, str(value))
    console.print(table)
    steps = Table(title="steps", title_justify="left")
    for col in ("#", "step", "details"):
        steps.add_column(col)
    for i, step in enumerate(info["steps"]):
        details = ", ".join(f"{k} {v}" for k, v in step.items() if k != "type")
        steps.add_row(str(i), step["type"], details)
    console.print(steps)


@app.command()
def export(
    model_path: ModelArg,
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output",
            help="OUT.json or OUT.fedge (lite); a directory (c); OUT.onnx, OUT.tflite or "
            "OUT.mlmodel.",
        ),
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="Target format.")] = (
        ExportFormat.LITE
    ),
    prefix: Annotated[str, typer.Option(help="C symbol prefix (format c).")] = "model",
    layout: Annotated[Layout, typer.Option(help="Tree layout of generated C.")] = Layout.TABLE,
    verify: Annotated[
        Path | None,
        typer.Option(help="CSV (header row, feature columns) to run the compiled C on."),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Target column of the --verify CSV, dropped.")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Device (format c): report the footprint there and run --verify rows on it "
            "(see `fedge targets`).",
        ),
    ] = None,
    precision: Annotated[
        Precision, typer.Option("--precision", help="TFLite number format (int8: full integer, "
                                "activation ranges from the --verify rows).")
    ] = Precision.FLOAT32,
    trust: TrustOpt = False,
) -> None:
    """Export a model to a deployable format and, with --verify, run the artifact on its real
    runtime (C: gcc or a device emulator; ONNX: onnxruntime; TFLite: the LiteRT interpreter;
    Core ML: fedge's reader of the spec, since Core ML itself needs macOS)."""
    model = load(model_path, trust=trust)
    if fmt in (ExportFormat.ONNX, ExportFormat.TFLITE, ExportFormat.COREML):
        if target is not None:
            raise typer.BadParameter("--target needs --format c", param_hint="--target")
        _export_runtime_format(model_path, model, fmt, output, verify, label, precision, trust)
        return
    if fmt is ExportFormat.LITE:
        if target is not None:
            raise typer.BadParameter("--target needs --format c", param_hint="--target")
        written = save(model, output)
        console.print(f"wrote {output} ({written:,} bytes, lite format)")
        return
    from fedge.deployment.edge_converter import write_c
    from fedge.deployment.formats.c import emit_c

    device = None
    if target is not None:
        from fedge.deployment.devices import get_target

        device = get_target(target)  # an unknown name fails before anything is written
    code = emit_c(model, prefix, layout=layout.value)
    files = write_c(code, output / f"{prefix}.c")
    console.print(f"wrote {', '.join(str(f) for f in files)} ({layout.value} layout)")
    if device is not None:
        _on_device(model_path, model, device, verify, label, prefix, layout.value, trust)
    elif verify is not None:
        _verify_c(model_path, model, verify, label, prefix, layout.value, trust)


def _export_runtime_format(
    model_path: Path,
    model: Any,
    fmt: ExportFormat,
    output: Path,
    verify: Path | None,
    label: str | None,
    precision: Precision,
    trust: bool,
) -> None:
    """ONNX, TFLite or Core ML: write the file, then (with --verify) run it and compare."""
    from fedge.data import read_features
    from fedge.deployment.edge_converter import EdgeFormat, EdgeModelConverter

    X = read_features(verify, model, label=label) if verify is not None else None
    if fmt is ExportFormat.TFLITE and precision is Precision.INT8 and X is None:
        raise typer.BadParameter(
            "int8 needs representative rows: pass --verify DATA.csv", param_hint="--precision"
        )
    converter = EdgeModelConverter(
        target_format=EdgeFormat(fmt.value), precision=precision.value, representative_data=X
    )
    files = converter.save_edge_model(converter.convert(model), output)
    console.print(f"wrote {files[0]} ({files[0].stat().st_size:,} bytes, {fmt.value})")
    if X is None:
        return
    source = _source_estimator(model_path, trust)
    subject = source if source is not None else model
    if fmt is ExportFormat.ONNX:
        from fedge.deployment.formats.onnx import verify_onnx

        report = verify_onnx(subject, X)
        ok = report.ok
        line = (
            f"onnxruntime on {report.rows:,} rows: labels differing from device mode "
            f"{report.label_mismatches_device}, from the source "
            f"{report.label_mismatches_source}; max |diff| {report.max_abs_diff:.3g} "
            f"(rtol {report.rtol:g}, atol {report.atol:g})"
        )
    elif fmt is ExportFormat.TFLITE:
        from fedge.deployment.formats.tflite import verify_tflite

        report = verify_tflite(subject, X, precision=precision.value)
        ok, line = report.passed, str(report)
    else:
        from fedge.deployment.formats.coreml import verify_coreml

        report = verify_coreml(subject, X)
        ok, line = report.ok, report.summary()
    console.print(line)
    if not ok:
        err_console.print("[bold red]verification failed[/]")
        raise typer.Exit(1)


def _source_estimator(model_path: Path, trust: bool) -> Any:
    """The estimator in a skops/pickle file (the label oracle), or None (lite, XGBoost, ...)."""
    from fedge.io import load_estimator
    from fedge.ir.lite import is_lite

    if is_lite(model_path.read_bytes()[:64]):
        return None
    try:
        return load_estimator(model_path, trust=trust)
    except FedgeError:
        return None  # XGBoost/LightGBM files: device mode is the oracle


def _bytes(n: int | None, budget: int | None = None) -> str:
    if n is None:
        return "?"
    return f"{n:,} B" + ("" if budget is None else f" of {budget:,}")


def _on_device(
    model_path: Path,
    model: Any,
    device: Any,
    data: Path | None,
    label: str | None,
    prefix: str,
    layout: str,
    trust: bool,
) -> None:
    """Footprint on ``device`` and, with ``data``, parity of every row run there."""
    from fedge.deployment.device_verify import measure_footprint, verify_on_device

    fp = measure_footprint(model, device, prefix=prefix, layout=layout)
    report = None
    if data is not None and device.runnable and fp.fits:
        from fedge.data import read_features

        X = read_features(data, model, label=label)
        source = _source_estimator(model_path, trust)
        report = verify_on_device(
            source if source is not None else model, X, device, prefix=prefix, layout=layout
        )
        fp = report.footprint
    table = Table(title=f"{device.name}: {device.description}", title_justify="left")
    table.add_column("check", style="bold")
    table.add_column("result")
    table.add_row("model flash (text+rodata+data)", _bytes(fp.flash_bytes, fp.flash_budget))
    table.add_row("  of which the model's own code and tables", _bytes(fp.own_bytes))
    table.add_row("model RAM (data+bss)", _bytes(fp.ram_bytes, fp.ram_budget))
    table.add_row("model stack (worst case)", _bytes(fp.stack_bytes))
    table.add_row(
        "test firmware (flash / RAM)",
        f"{_bytes(fp.firmware_flash_bytes)} / {_bytes(fp.firmware_ram_bytes)}",
    )
    table.add_row("fits", "[green]yes[/]" if fp.fits else "[red]no[/]")
    if report is not None:
        table.add_row(
            f"parity on {report.rows:,} rows ({report.runs} runs)",
            ("[green]" if report.passed else "[red]") + report.parity + "[/]",
        )
        src = report.label_mismatches_source
        table.add_row(
            "labels differing from the source model",
            "n/a (no source estimator in the file)" if src is None else str(src),
        )
        per = report.per_prediction
        table.add_row("per prediction", f"{per:,.0f} {report.counter}" if per else report.counter)
    elif data is not None:
        table.add_row(
            "parity",
            f"not run: {device.name} is size-only (no emulator)"
            if not device.runnable
            else "not run: the model does not fit",
        )
    console.print(table)
    if not fp.fits:
        err_console.print(f"[bold red]error:[/] {fp.message}")
        raise typer.Exit(1)
    if report is not None and not report.passed:
        err_console.print(
            f"[bold red]error:[/] the model disagrees on {device.name}; see the table above"
        )
        raise typer.Exit(1)


@app.command()
def targets() -> None:
    """List device targets with their budgets and whether their tools are installed."""
    from fedge.deployment.devices import DEVICES

    table = Table(title="device targets (fedge export MODEL --format c --target NAME)")
    for col in ("target", "device", "flash", "RAM", "runs on", "tools"):
        table.add_column(col)
    for t in DEVICES.values():
        missing = t.missing()
        tools = (
            "[green]installed[/]"
            if not missing
            else "[red]missing:[/] apt-get install "
            + " ".join(dict.fromkeys(r.package for r in missing))
        )
        table.add_row(
            t.name,
            t.description,
            "-" if t.flash_budget is None else f"{t.flash_budget // 1024:,} KiB",
            "-" if t.ram_budget is None else f"{t.ram_budget // 1024:,} KiB",
            t.runs_on,
            tools,
        )
    console.print(table)


def _verify_c(
    model_path: Path,
    model: Any,
    data: Path,
    label: str | None,
    prefix: str,
    layout: str,
    trust: bool,
) -> None:
    from fedge.data import read_features
    from fedge.deployment.verify import verify_c

    X = read_features(data, model, label=label)
    source = _source_estimator(model_path, trust)
    report = verify_c(source if source is not None else model, X, prefix=prefix, layout=layout)
    table = Table(
        title=f"C verified on {report.rows:,} rows (gcc -O2 -ffp-contract=off)",
        title_justify="left",
        show_header=False,
    )
    table.add_column("check", style="bold")
    table.add_column("result")
    ok = "[green]0[/]"
    table.add_row(
        "scores differing from device mode (any bit)",
        ok if report.score_mismatches == 0 else f"[red]{report.score_mismatches}[/]",
    )
    table.add_row(
        "labels differing from device mode",
        ok if report.label_mismatches_device == 0 else f"[red]{report.label_mismatches_device}[/]",
    )
    src = report.label_mismatches_source
    table.add_row(
        "labels differing from the source model",
        "n/a (no source estimator in the file)"
        if src is None
        else (ok if src == 0 else f"[red]{src}[/]"),
    )
    table.add_row("max |C - device|", f"{report.max_abs_diff:.3g}")
    table.add_row("object size (text / data)", f"{report.text_bytes:,} / {report.data_bytes:,} B")
    console.print(table)
    if not report.identical:
        err_console.print("[bold red]error:[/] the compiled model disagrees; see the table above")
        raise typer.Exit(1)


class Quantize(StrEnum):
    INT8 = "int8"
    INT16 = "int16"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"


def _halves(X: Any, y: Any, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """A seeded half of the rows to learn from and the other half to score on."""
    import numpy as np

    from fedge.errors import InvalidInputError

    if len(y) < 4:
        raise InvalidInputError(f"--distill needs at least 4 data rows, got {len(y)}")
    order = np.random.default_rng(seed).permutation(len(y))
    learn, score = order[: len(y) // 2], order[len(y) // 2 :]
    return X[learn], y[learn], X[score], y[score]


def _distill_stage(model: Any, spec: str, X: Any, y: Any) -> Any:
    from fedge.compression import KnowledgeDistiller, student_from_spec

    student = student_from_spec(spec, model.task)
    distiller = KnowledgeDistiller(model, temperature=3.0, transfer_rows=4 * len(y))
    return distiller.distill(student, X, y)


def _search_stage(model: Any, X: Any, y: Any, budget: float) -> tuple[str, Any, int]:
    from fedge.compression import auto_compress

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("searching compressions", total=None)
        result = auto_compress(
            model,
            X,
            y,
            max_accuracy_drop=budget,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    front = Table(title=f"Pareto front ({result.metric} on the scoring half of the data)")
    for col in ("passes", "bytes", result.metric):
        front.add_column(col, justify="left" if col == "passes" else "right")
    for c in result.front:
        mark = " [bold green]<- chosen[/]" if c is result.best else ""
        front.add_row(" + ".join(c.passes) + mark, f"{c.bytes:,}", f"{c.score:.4f}")
    console.print(front)
    return f"AutoCompress (<= {budget:g})", result.model, result.best.bytes


class PruneMethod(StrEnum):
    LOSSLESS = "lossless"
    TREES = "trees"
    DEPTH = "depth"
    NEURONS = "neurons"
    MAGNITUDE = "magnitude"


@app.command()
def compress(
    model_path: ModelArg,
    data: Annotated[Path, typer.Option("--data", help="Validation CSV (header row).")],
    label: Annotated[str, typer.Option("--label", help="Target column of the CSV.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="OUT.fedge or OUT.json.")],
    quantize: Annotated[
        Quantize | None, typer.Option("--quantize", help="Quantization strategy.")
    ] = None,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="One scale per weight matrix.")
    ] = False,
    affine: Annotated[bool, typer.Option("--affine", help="Affine zero points.")] = False,
    prune: Annotated[
        float | None, typer.Option("--prune", help="Pruning sparsity in [0, 1).")
    ] = None,
    prune_method: Annotated[
        PruneMethod, typer.Option("--prune-method", help="What pruning removes.")
    ] = PruneMethod.TREES,
    max_depth: Annotated[
        int | None, typer.Option("--max-depth", help="Depth limit (--prune-method depth).")
    ] = None,
    distill: Annotated[
        str | None,
        typer.Option(
            "--distill",
            help="Train a student on the model's soft targets: tree:DEPTH, forest:TREES:DEPTH, "
            "linear or mlp:WIDTH. Half of the data rows (plus MUNGE rows) teach it; every "
            "stage is then scored on the other half.",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            "--max-accuracy-drop",
            help="Search (AutoCompress) for the smallest model losing at most this "
            "(0.01 = one point) on the data; replaces --prune/--quantize.",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the table as JSON.")
    ] = None,
    trust: TrustOpt = False,
) -> None:
    """Compress a model, printing each stage's real size and accuracy on the data.

    Pruning runs before quantization; tree selection is chosen on the --data rows."""
    from fedge.compression import ModelPruner, ModelQuantizer, evaluate, lite_bytes
    from fedge.data import read_features, read_labels
    from fedge.ir import lower

    model = load(model_path, trust=trust)
    X_all = read_features(data, model, label=label)
    y_all = read_labels(data, model, label)
    X, y, X_score, y_score = X_all, y_all, X_all, y_all  # rows passes learn from / score on
    stages: list[tuple[str, Any, int]] = [
        ("Original", model, model_path.stat().st_size),
        ("Lossless (.fedge)", model, lite_bytes(model)),
    ]
    current: Any = model
    if distill is not None:
        X, y, X_score, y_score = _halves(X_all, y_all)
        current = _distill_stage(model, distill, X, y)
        stages.append((f"Distilled ({distill})", current, lite_bytes(lower(current))))
    if max_accuracy_drop is not None:
        stages.append(_search_stage(current, X, y, max_accuracy_drop))
    if prune is not None and max_accuracy_drop is None:
        pruner = ModelPruner(prune, prune_method.value, max_depth=max_depth)
        pruned = pruner.prune_model(current, X, y)
        stages.append((f"Pruned ({prune_method.value} {prune:g})", pruned, lite_bytes(pruned)))
    if quantize is not None and max_accuracy_drop is None:
        quantizer = ModelQuantizer(quantize.value, per_channel=not per_tensor, symmetric=not affine)
        small = quantizer.quantize_model(stages[-1][1])
        stages.append((f"Quantized ({quantize.value})", small, lite_bytes(small)))
    final = lower(stages[-1][1])
    rows = []
    for name, m, size in stages:
        metrics = evaluate(m, X_score, y_score)
        rows.append({"stage": name, "bytes": size, **metrics})
    rows.append({"stage": "Final", "bytes": rows[-1]["bytes"], **evaluate(final, X_score, y_score)})
    key = "accuracy" if "accuracy" in rows[0] else "r2"
    scored = f"{len(y_score):,} held-out rows" if distill else f"{len(y_score):,} rows"
    table = Table(title=f"Compression of {model_path.name} on {scored} of {data.name}")
    for col in ("stage", "bytes", "x smaller", key, "change"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in rows:
        table.add_row(
            row["stage"],
            f"{row['bytes']:,}",
            f"{rows[0]['bytes'] / row['bytes']:.1f}",
            f"{row[key]:.4f}",
            f"{row[key] - rows[0][key]:+.4f}",
        )
    console.print(table)
    written = save(final, output)
    console.print(f"wrote {output} ({written:,} bytes)")
    if report is not None:
        report.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


class FedModel(StrEnum):
    LOGREG = "logreg"
    LINEAR = "linear"
    MLP = "mlp"
    HIST_GBDT = "hist-gbdt"  # federated histogram boosting (--engine flower)
    BAGGING = "bagging"  # each node's forest, joined by the server (--engine flower)


class FedStrategy(StrEnum):
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDADAGRAD = "fedadagrad"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    KRUM = "krum"


class DPLevel(StrEnum):
    RECORD = "record"
    CLIENT = "client"
    DISTRIBUTED = "distributed"


class SecureMethod(StrEnum):
    SECAGG = "secagg"
    SECAGG_PLUS = "secagg+"
    CKKS = "ckks"
    PAILLIER = "paillier"


class Engine(StrEnum):
    SIMULATION = "simulation"
    FLOWER = "flower"


@app.command()
def federate(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="CSV with a header row (simulation).")
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Target column of the CSV (simulation).")
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="simulation: split --data among simulated clients in this process; flower: "
            "run on a Flower SuperLink whose SuperNodes hold the data (docs/federated.md).",
        ),
    ] = Engine.SIMULATION,
    superlink: Annotated[
        str, typer.Option("--superlink", help="Flower: the SuperLink's HOST:PORT.")
    ] = "127.0.0.1:8000",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Flower: connect without TLS (localhost trials).")
    ] = False,
    root_certificates: Annotated[
        Path | None,
        typer.Option("--root-certificates", help="Flower: CA certificate of the SuperLink."),
    ] = None,
    min_nodes: Annotated[
        int, typer.Option("--min-nodes", help="Flower: SuperNodes to wait for (60 s).")
    ] = 1,
    fit_timeout: Annotated[
        float, typer.Option("--fit-timeout", help="Flower: seconds a round waits for replies.")
    ] = 120.0,
    clients: Annotated[int, typer.Option("--clients", help="Simulated data holders.")] = 10,
    partition: Annotated[
        str, typer.Option("--partition", help="iid, dirichlet:ALPHA or quantity:ALPHA.")
    ] = "iid",
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 20,
    strategy: Annotated[
        FedStrategy, typer.Option("--strategy", help="Aggregation strategy.")
    ] = FedStrategy.FEDAVG,
    model: Annotated[FedModel, typer.Option("--model", help="What to train.")] = FedModel.LOGREG,
    hidden: Annotated[int, typer.Option("--hidden", help="MLP hidden units.")] = 16,
    max_depth: Annotated[
        int, typer.Option("--max-depth", help="hist-gbdt: tree depth (--rounds trees).")
    ] = 3,
    bins: Annotated[int, typer.Option("--bins", help="hist-gbdt: value bins per feature.")] = 255,
    trees: Annotated[
        int,
        typer.Option("--trees", help="hist-gbdt: boosting rounds (0: --rounds); bagging: trees "
                     "per node (0: 20)."),
    ] = 0,
    fraction: Annotated[
        float, typer.Option("--fraction", help="Fraction of clients per round.")
    ] = 1.0,
    epochs: Annotated[int, typer.Option("--epochs", help="Local epochs per round.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Local batch size.")] = 32,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="Local learning rate (default per model).")
    ] = None,
    dp_epsilon: Annotated[
        float | None, typer.Option("--dp-epsilon", help="Privacy budget epsilon (enables DP).")
    ] = None,
    dp_delta: Annotated[float, typer.Option("--dp-delta", help="Privacy delta.")] = 1e-5,
    dp_level: Annotated[
        DPLevel,
        typer.Option(
            "--dp-level",
            help="record: DP-SGD per row; client: DP-FedAvg per client (server adds noise); "
            "distributed: per client, each client adds a noise share (needs "
            "--secure-aggregation).",
        ),
    ] = DPLevel.RECORD,
    secure_aggregation: Annotated[
        SecureMethod | None,
        typer.Option(
            "--secure-aggregation",
            help="The server learns only the sum of the clipped updates: pairwise masking "
            "(secagg, secagg+) or homomorphic encryption (ckks, paillier).",
        ),
    ] = None,
    secure_clip: Annotated[
        float, typer.Option("--secure-clip", help="Client-side clipping norm of an update.")
    ] = 10.0,
    dropout_rate: Annotated[
        float,
        typer.Option(
            "--dropout-rate",
            help="Simulated clients that drop out at a random protocol stage, per round.",
        ),
    ] = 0.0,
    dp_clip: Annotated[float, typer.Option("--dp-clip", help="Clipping norm.")] = 1.0,
    validation: Annotated[
        float, typer.Option("--validation", help="Fraction held out at the server to score.")
    ] = 0.2,
    feature_range: Annotated[
        Path | None,
        typer.Option(
            "--feature-range",
            help="CSV of public bounds (columns feature,min,max): scale from them, at no "
            "privacy cost. Without it features are standardized from the clients' exact "
            "moments, which --dp-epsilon refuses.",
        ),
    ] = None,
    no_scale: Annotated[
        bool, typer.Option("--no-scale", help="Train on the features as they are.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of everything random.")] = 0,
) -> None:
    """Simulate a federation over the CSV's rows and save the trained model and its history.

    Features are scaled (from public bounds, or standardized from the clients' summed
    moments; no row leaves its client); the saved model is the whole pipeline. With --engine
    flower the SuperNodes hold the data and the ServerApp writes the model where the SuperLink
    runs (docs/federated.md)."""
    if engine is Engine.FLOWER:
        from fedge.federated.flower import run_on_superlink

        code = run_on_superlink(superlink, {
            "rounds": rounds, "model": model.value, "hidden": hidden, "strategy": strategy.value,
            "fraction-fit": fraction, "epochs": epochs, "batch-size": batch_size,
            "learning-rate": learning_rate or 0.0, "seed": seed,
            "dp-epsilon": dp_epsilon or 0.0, "dp-delta": dp_delta, "dp-level": dp_level.value,
            "dp-clip": dp_clip, "secure-aggregation": secure_aggregation or "",
            "secure-clip": secure_clip, "min-nodes": min_nodes, "fit-timeout": fit_timeout,
            "output-dir": str(output.resolve()), "max-depth": max_depth, "bins": bins,
            "n-estimators": trees,
            "feature-range": "" if feature_range is None else _bounds_text(feature_range),
        }, insecure=insecure, root_certificates=root_certificates)
        raise typer.Exit(code)
    if data is None or label is None:
        raise typer.BadParameter("the simulation needs --data and --label")
    if model in (FedModel.HIST_GBDT, FedModel.BAGGING):
        raise typer.BadParameter(f"--model {model.value} runs with --engine flower (in-process: "
                                 "fedge.federated.FederatedHistGradientBoosting, "
                                 "federated_bagging)")
    from fedge.data import read_bounds, read_table
    from fedge.federated import (
        DifferentialPrivacy,
        FaultPlan,
        SecureAggregation,
        TrainingConfig,
        simulate,
    )

    X, y, names = read_table(data, label=label)
    bounds = None if feature_range is None else read_bounds(feature_range, names)
    estimator = _federated_estimator(model, hidden, seed, classify=y.dtype.kind != "f")
    privacy = None
    if dp_epsilon is not None:
        privacy = DifferentialPrivacy(
            level=dp_level.value, target_epsilon=dp_epsilon, delta=dp_delta, clip_norm=dp_clip
        )
    training = TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    result = simulate(
        estimator, X, y, n_clients=clients, partition=partition, rounds=rounds,
        strategy=strategy.value, fraction_fit=fraction, training=training, privacy=privacy,
        validation=validation, standardize=not no_scale and bounds is None,
        feature_range=None if no_scale else bounds, random_state=seed,
        secure_aggregation=None if secure_aggregation is None else SecureAggregation(
            secure_aggregation.value, clip_norm=secure_clip
        ),
        faults=FaultPlan(dropout=dropout_rate, seed=seed) if dropout_rate else None,
    )
    _print_rounds(result.history)
    output.mkdir(parents=True, exist_ok=True)
    lowered = lower(result.model)
    written = save(lowered, output / "model.json")
    result.history.save(output / "history.json")
    _save_estimator(result.model, output)
    if result.history.stop_reason:
        console.print(f"stopped: {result.history.stop_reason}")
    spent = "" if result.epsilon is None else f", epsilon {result.epsilon:.4f} (delta {dp_delta:g})"
    console.print(f"wrote {output}/model.json ({written:,} bytes), history.json{spent}")


def _bounds_text(path: Path) -> str:
    """A bounds CSV (feature,min,max) as the run config's ``feature-range``, in the file's
    row order (which must be the nodes' column order)."""
    import csv

    from fedge.data import read_bounds

    try:
        with path.open(newline="", encoding="utf-8") as f:
            names = [str(r.get("feature", "")).strip() for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    lo, hi = read_bounds(path, names)
    return ",".join(f"{a!r}:{b!r}" for a, b in zip(lo.tolist(), hi.tolist(), strict=True))


def _federated_estimator(kind: FedModel, hidden: int, seed: int, *, classify: bool) -> Any:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if kind is FedModel.MLP:
        mlp = MLPClassifier if classify else MLPRegressor
        return mlp(hidden_layer_sizes=(hidden,), random_state=seed)
    if kind is FedModel.LINEAR or not classify:
        return LinearRegression()
    return LogisticRegression()


def _print_rounds(history: Any) -> None:
    table = Table(title="federated rounds", title_justify="left")
    keys = [k for k in ("accuracy", "log_loss", "r2", "mse", "train_loss")
            if any(k in r.metrics for r in history.rounds)]
    secure = any("secure_seconds" in r.metrics or "secure_aborted" in r.metrics
                 for r in history.rounds)
    extra = ("secure s",) if secure else ()
    for col in ("round", "clients", "rejected", "failed", *keys, "epsilon", *extra):
        table.add_column(col, justify="right")
    for r in history.rounds:
        cells = [
            str(r.round), f"{r.accepted}/{r.selected}", str(r.rejected), str(r.failed),
            *(f"{r.metrics.get(k, float('nan')):.4f}" for k in keys),
            "-" if r.epsilon is None else f"{r.epsilon:.4f}",
        ]
        if secure:
            cells.append(
                "aborted" if "secure_aborted" in r.metrics
                else f"{r.metrics.get('secure_seconds', float('nan')):.3f}"
            )
        table.add_row(*cells)
    console.print(table)


def _save_estimator(estimator: Any, output: Path) -> None:
    try:
        import skops.io
    except ImportError:
        console.print("skops is not installed: the estimator was saved as lite JSON only")
        return
    skops.io.dump(estimator, output / "model.skops")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo's artifacts.")] = Path(
        "demo-out"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the split and the estimators.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    devices: Annotated[
        bool,
        typer.Option(
            "--devices/--no-devices",
            help="Deploy the int8 random forest to every device target (emulators).",
        ),
    ] = True,
) -> None:
    """Train, lower, save, reload and verify models on breast-cancer data, then deploy the
    compressed forest to every device target."""
    from fedge.demo import FEDERATED, run_demo

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("training", total=None)
        rows = run_demo(
            out,
            seed=seed,
            progress=lambda name: bar.update(task, description=name),
            devices=devices,
        )
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in rows]))
        return
    table = Table(title="fedge demo: breast cancer, 30% held out", title_justify="left")
    headers = (
        "model",
        "accuracy",
        "labels =",
        "device =",
        "pickle B",
        ".fedge B",
        "pickle/.fedge",
        "C =",
        "C object B",
    )
    for h in headers:
        table.add_column(h, justify="left" if h == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.name,
            f"{r.accuracy:.3f}",
            "[green]yes[/]" if r.labels_identical else "[red]NO[/]",
            f"{r.device_label_agreement:.3f}",
            f"{r.pickle_bytes:,}",
            f"{r.fedge_bytes:,}",
            f"{r.pickle_bytes / r.fedge_bytes:.1f}x",
            {True: "[green]yes[/]", False: "[red]NO[/]", None: "no gcc"}[r.c_identical],
            "-" if r.c_object_bytes is None else f"{r.c_object_bytes:,}",
        )
    console.print(table)
    console.print(
        "labels =: the reloaded .fedge file (reference mode, float64) predicts the source "
        "model's labels; device =: label agreement in float32 device arithmetic; C =: the "
        "generated C, compiled with gcc and run, equals device mode bit for bit and the "
        "source's labels."
    )
    small = Table(
        title="int8 (weights; trees: merged losslessly, 8-bit threshold grids, int8 leaves)",
        title_justify="left",
    )
    for h in ("model", ".fedge B", "int8 B", "pickle/int8", "accuracy", "change"):
        small.add_column(h, justify="left" if h == "model" else "right", no_wrap=True)
    for r in rows:
        small.add_row(
            r.name,
            f"{r.fedge_bytes:,}",
            f"{r.compressed_bytes:,}",
            f"{r.pickle_bytes / r.compressed_bytes:.1f}x",
            f"{r.compressed_accuracy:.3f}",
            f"{r.compressed_accuracy - r.accuracy:+.3f}",
        )
    console.print(small)
    _print_exports(rows)
    for r in rows:
        if r.devices:
            _print_devices(r.name, r.devices)
    for r in rows:
        if r.package:
            pkg = r.package
            console.print(
                f"{r.name}, {r.compression}: packaged in {pkg['path']} ({pkg['bytes']:,} bytes, "
                f"version id {pkg['version_id'][:16]}..., verified on load, predictions "
                f"{'identical' if pkg['predictions_identical'] else 'DIFFERENT'}); "
                f"{pkg['backend']} backend: single row p50 {pkg['p50_us']:.1f} us, p99 "
                f"{pkg['p99_us']:.1f} us, {pkg['rows_per_s']:,.0f} rows/s, cache hit "
                f"{pkg['cache_hit_us']:.2f} us"
            )
    for r in rows:
        if r.privacy:
            history = f"; history in {out}/federated_history.json" if r.name == FEDERATED else ""
            console.print(f"{r.name}: {r.privacy}{history}")
    console.print(f"artifacts in {out}/")
    if (out / "report.html").is_file():
        console.print(f"report: {out / 'report.html'}")


def _print_exports(rows: list[Any]) -> None:
    table = Table(
        title="export parity (each file run on its runtime against the source model; Core ML: "
        "fedge's reader of the spec, Core ML itself needs macOS)",
        title_justify="left",
    )
    formats = ("lite", "c", "onnx", "tflite", "coreml")
    table.add_column("model")
    for f in formats:
        table.add_column(f, justify="center")
    refusals = []
    for r in rows:
        cells = ["[green]ok[/]" if r.labels_identical else "[red]NO[/]",
                 {True: "[green]ok[/]", False: "[red]NO[/]", None: "no gcc"}[r.c_identical]]
        for f in formats[2:]:
            verdict = (r.exports or {}).get(f, "-")
            if verdict.startswith("refused"):
                refusals.append(f"{r.name} / {f}: {verdict[len('refused: '):]}")
                cells.append("[yellow]refused[/]")
            else:
                cells.append("[green]ok[/]" if verdict == "verified" else f"[red]{verdict}[/]")
        table.add_row(r.name, *cells)
    console.print(table)
    for line in refusals:
        console.print(f"  refused {line}", highlight=False)


_DEVICE_STATUS = {
    "ok": "[green]{}[/]",
    "size only": "[cyan]{}[/]",
    "tool missing": "[yellow]{}[/]",
    "does not fit": "[yellow]{}[/]",
    "FAILED": "[red]{}[/]",
}


def _print_devices(name: str, devices: Any) -> None:
    """The demo's table of one compressed model on every device target."""
    n_rows = max((d.rows for d in devices), default=0)
    table = Table(
        title=f"int8 {name} on every device target ({n_rows} held-out rows per runnable target)",
        title_justify="left",
    )
    for h in ("target", "runs on", "parity", "flash B", "RAM B", "stack B", "fits", "per predict"):
        table.add_column(h, justify="left" if h in ("target", "runs on", "parity") else "right")
    for d in devices:
        if d.status == "ok":
            parity = "bit-exact" if d.bit_exact else "labels ok, scores within tolerance"
        else:
            parity = d.status
        per = "-"
        if d.per_prediction is not None:
            unit = "cycles" if d.counter.startswith("cycles") else "instructions"
            per = f"{d.per_prediction:,.0f} {unit}"
        table.add_row(
            d.target,
            d.runs_on,
            _DEVICE_STATUS.get(d.status, "{}").format(parity),
            "-" if d.flash_bytes is None else f"{d.flash_bytes:,}",
            "-" if d.ram_bytes is None else f"{d.ram_bytes:,}",
            "-" if d.stack_bytes is None else f"{d.stack_bytes:,}",
            {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[d.fits],
            per,
        )
    console.print(table)
    console.print(
        "parity: every score, probability and label of the firmware, run in the target's "
        "emulator, equals the int8 model's in fedge's numpy runtime bit for bit; flash/RAM: "
        "the model's own (firmware minus a stub-model firmware); stack: worst case "
        "(-fstack-usage); fits: within the target's flash and RAM budgets."
    )
    for d in devices:
        if d.status in ("FAILED", "tool missing", "does not fit"):
            console.print(f"{d.target}: {d.parity}")


def _register_more() -> None:
    from fedge.cli_package import register

    register(app)  # package, verify, bench
    from fedge.cli_report import register as register_report

    register_report(app)  # report


_register_more()


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``fedge`` console script."""
    try:
        return app(args=argv, standalone_mode=True)
    except FedgeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as exc:  # unreadable or unwritable paths
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


__all__ = ["app", "main"]
