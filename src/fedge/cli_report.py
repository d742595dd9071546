"""The ``fedge report`` command (registered by cli.py): one HTML page of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "report"]


def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run's output directory (fedge demo --out, fedge federate -o).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="HTML file to write (default RUN_DIR/report.html)."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="The page title.")] = None,
) -> None:
    """Write one self-contained HTML page that tells the story of a run (works offline)."""
    import time

    from fedge.cli import console
    from fedge.visualization.report import write_report

    start = time.perf_counter()
    path = write_report(run_dir, output or run_dir / "report.html", title=title)
    console.print(
        f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, "
        f"{time.perf_counter() - start:.1f} s)"
    )


def register(app: typer.Typer) -> None:
    """Add ``report`` to the CLI."""
    app.command()(report)
