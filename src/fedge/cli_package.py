"""The ``fedge package``, ``fedge verify`` and ``fedge bench`` commands (registered by cli.py).

Thin like the rest of the CLI: parse, call :mod:`fedge.deployment`, print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

__all__ = ["bench", "describe_package", "package", "register", "verify"]

KeyOpt = Annotated[
    Path | None,
    typer.Option("--public-key", help="Ed25519 public key (PEM or 32 raw bytes) to check."),
]


def _console() -> Any:
    from fedge.cli import console

    return console


def _read_public_key(path: Path | None) -> Any:
    if path is None:
        return None
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = path.read_bytes()
    return data if len(data) == 32 else load_pem_public_key(data)


def _read_private_key(path: Path | None) -> Any:
    if path is None:
        return None
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = path.read_bytes()
    return data if len(data) == 32 else load_pem_private_key(data, password=None)


def package(
    model_path: Annotated[Path, typer.Argument(help="Model file (skops, XGBoost, LightGBM, "
                                               "lite; a pickle with --trust).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PKG.zip to write.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Training CSV: schema ranges, fingerprint.")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="Target column of --data.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Package name.")] = None,
    version: Annotated[str, typer.Option("--version", help="Model version.")] = "1.0.0",
    formats: Annotated[
        str, typer.Option("--formats", help="Exports to include, comma-separated (c, onnx).")
    ] = "c",
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Ed25519 private key (PEM) to sign with.")
    ] = None,
    trust: Annotated[bool, typer.Option("--trust", help="Allow unpickling the model.")] = False,
) -> None:
    """Write a reproducible, tamper-evident package (set SOURCE_DATE_EPOCH to pin its time)."""
    from fedge.cli import _source_estimator
    from fedge.data import read_features, read_labels
    from fedge.deployment.model_packager import ModelPackager
    from fedge.io import load

    model = _source_estimator(model_path, trust) or load(model_path, trust=trust)
    X = y = None
    if data is not None:
        ir = load(model_path, trust=trust)
        X = read_features(data, ir, label=label)
        y = read_labels(data, ir, label) if label else None
    selected = tuple(f.strip() for f in formats.split(",") if f.strip())
    info = ModelPackager(name or model_path.stem, version).package(
        model, output, X, y, formats=selected, signing_key=_read_private_key(sign_key)
    )
    console = _console()
    console.print(f"wrote {info.path} ({info.bytes:,} bytes), version id {info.version_id}")
    console.print("members: " + ", ".join(info.members) + (" (signed)" if info.signed else ""))


def verify(
    package_path: Annotated[Path, typer.Argument(help="PKG.zip to check.")],
    public_key: KeyOpt = None,
) -> None:
    """Check every byte, every hash and the signature; exit 0 only when all pass."""
    from fedge.deployment.model_packager import verify_package

    _, manifest, version_id, signed = verify_package(
        package_path.read_bytes(), public_key=_read_public_key(public_key)
    )
    console = _console()
    console.print(f"[green]OK[/] {package_path}: canonical archive, {len(manifest['files'])} "
                  f"members match the manifest, version id {version_id}"
                  + (", signature verified" if signed else ", signature not checked"))


def describe_package(path: Path, public_key: Any = None) -> None:
    """Print a package's identity, metadata and members (``fedge inspect`` on a package)."""
    from fedge.deployment.model_packager import load_package
    from fedge.ir.inspect import describe

    pkg = load_package(path, public_key=public_key)
    console = _console()
    table = Table(title=f"{path.name} (package)", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    meta = pkg.metadata
    for key in ("name", "version", "task", "n_features", "training_rows", "source_format",
                "created"):
        table.add_row(key, str(meta.get(key)))
    table.add_row("version id", pkg.version_id)
    table.add_row("metrics", json.dumps(meta.get("metrics", {})))
    table.add_row("model", str(describe(pkg.model)["summary"]))
    console.print(table)
    members = Table(title="members", title_justify="left")
    members.add_column("name")
    members.add_column("bytes", justify="right")
    members.add_column("sha256")
    for member, entry in pkg.manifest["files"].items():
        members.add_row(member, f"{entry['bytes']:,}", entry["sha256"][:16] + "...")
    console.print(members)


def bench(
    model_path: Annotated[Path, typer.Argument(help="Model file.")],
    data: Annotated[Path, typer.Option("--data", help="CSV of rows to predict.")],
    label: Annotated[str | None, typer.Option("--label", help="Column to drop.")] = None,
    backends: Annotated[
        str, typer.Option("--backends", help="Comma-separated: compiled, numpy, source, "
                          "onnxruntime.")
    ] = "compiled,numpy,source",
    output: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    trust: Annotated[bool, typer.Option("--trust", help="Allow unpickling the model.")] = False,
) -> None:
    """Single-row latency percentiles, batch throughput, cache and memory per backend."""
    from fedge.cli import _source_estimator
    from fedge.data import read_features
    from fedge.deployment.inference_optimizer import compare_backends
    from fedge.io import load

    ir = load(model_path, trust=trust)
    model = _source_estimator(model_path, trust) or ir
    X = read_features(data, ir, label=label)
    names = [b.strip() for b in backends.split(",") if b.strip()]
    reports = compare_backends(model, X, backends=names)
    table = Table(title=f"{model_path.name} on {len(X):,} rows of {data.name}",
                  title_justify="left")
    for col in ("backend", "p50 us", "p95 us", "p99 us", "rows/s", "cache hit us",
                "peak RSS MB", "model B"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in reports:
        table.add_row(
            r.backend, f"{r.p50_us:.1f}", f"{r.p95_us:.1f}", f"{r.p99_us:.1f}",
            f"{r.batch_rows_per_s:,.0f}",
            "-" if r.cache_hit_us is None else f"{r.cache_hit_us:.2f}",
            f"{r.peak_rss_mb:.0f}", f"{r.model_bytes:,}",
        )
    console = _console()
    console.print(table)
    skipped = sorted(set(names) - {r.backend for r in reports})
    if skipped:
        console.print(f"not available here: {', '.join(skipped)}")
    if output is not None:
        output.write_text(json.dumps([r.as_dict() for r in reports], indent=2) + "\n")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``fedge`` app."""
    app.command()(package)
    app.command()(verify)
    app.command()(bench)
