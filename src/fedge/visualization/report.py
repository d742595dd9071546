"""``fedge report``: one HTML page that tells the story of a run.

A run directory holds what fedge wrote while it worked: the demo's run record
(:data:`fedge.demo.RUN_FILE`, ``demo.json``) and federated histories (``history.json`` from
``fedge federate``, ``federated_history.json`` from the demo). The report reads whichever of
them exist and writes one self-contained page (plotly.js inlined once, works offline): the
models and what each step cost, federated training and the privacy spent, the compression
candidates and their Pareto front, the export parity matrix, the footprint on every device
target and the latency distributions, with navigation between them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedge.demo import RUN_FILE
from fedge.errors import InvalidInputError, ModelFormatError
from fedge.visualization import performance_viz as perf
from fedge.visualization._html import Section, render_page, write_page

__all__ = [
    "HISTORY_FILES",
    "RunRecord",
    "build_report",
    "load_run",
    "report_sections",
    "write_report",
]

#: Federated histories the report looks for in a run directory, in this order.
HISTORY_FILES = ("federated_history.json", "history.json")


@dataclass
class RunRecord:
    """What a run directory holds (every part optional, at least one present)."""

    directory: Path
    demo: dict[str, Any] | None = None
    histories: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> history

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list((self.demo or {}).get("rows", []))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(
            f"{path}: not a readable JSON file ({exc}); re-run the step that wrote it"
        ) from exc


def load_run(run_dir: str | Path) -> RunRecord:
    """Read the run record and federated histories in ``run_dir``.

    Raises
    ------
    InvalidInputError
        If ``run_dir`` is not a directory or holds none of the files a report is made of.
    ModelFormatError
        If one of those files is not valid JSON of the expected shape.
    """
    directory = Path(run_dir)
    if not directory.is_dir():
        raise InvalidInputError(f"{directory}: not a directory; pass the run's output directory")
    run = RunRecord(directory)
    if (directory / RUN_FILE).is_file():
        demo = _read_json(directory / RUN_FILE)
        if not isinstance(demo, dict) or not isinstance(demo.get("rows", []), list):
            raise ModelFormatError(f"{directory / RUN_FILE}: not a fedge run record")
        run.demo = demo
    for name in HISTORY_FILES:
        if (directory / name).is_file():
            history = _read_json(directory / name)
            if not isinstance(history, dict) or not isinstance(history.get("rounds"), list):
                raise ModelFormatError(f"{directory / name}: not a federated history")
            run.histories[name] = history
    if run.demo is None and not run.histories:
        raise InvalidInputError(
            f"{directory}: nothing to report (looked for {RUN_FILE} and "
            f"{', '.join(HISTORY_FILES)}); pass the directory given to `fedge demo --out` "
            "or `fedge federate -o`"
        )
    if run.demo is None and not any(h["rounds"] for h in run.histories.values()):
        raise InvalidInputError(
            f"{directory}: {', '.join(run.histories)} has no rounds: nothing to report "
            "(did the federated run stop before its first round?)"
        )
    return run


# ------------------------------------------------------------------------------ tables
def _cell(value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _yes(value: bool | None, missing: str = "not run") -> str:
    if value is None:
        return _cell(missing, "muted")
    return _cell("yes", "ok") if value else _cell("NO", "bad")


def _bytes(n: Any) -> str:
    return "-" if n is None else f"{int(n):,}"


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------- sections
def _models_section(run: RunRecord) -> Section:
    rows = run.rows
    table = _table(
        ["model", "accuracy", "reloaded = source", "device mode", "pickle B", ".fedge B",
         "C = device", "C object B", "compressed", "compressed B", "compressed accuracy"],
        [
            [
                _cell(r["name"]),
                _cell(_pct(r["accuracy"])),
                _yes(r["labels_identical"]),
                _cell(_pct(r["device_label_agreement"])),
                _cell(_bytes(r["pickle_bytes"])),
                _cell(_bytes(r["fedge_bytes"])),
                _yes(r["c_identical"], "no gcc"),
                _cell(_bytes(r["c_object_bytes"])),
                _cell(r["compression"]),
                _cell(_bytes(r["compressed_bytes"])),
                _cell(_pct(r["compressed_accuracy"])),
            ]
            for r in rows
        ],
    )
    dataset = (run.demo or {}).get("dataset", "")
    body = (
        f'<p class="note">Held-out accuracy of each model as trained, and of its compressed copy '
        f"run in device mode (float32, as on a microcontroller). Data: {html.escape(dataset)}."
        f"</p>{table}"
    )
    comparison = perf.metric_comparison_figure(
        {
            r["name"]: {"accuracy": r["accuracy"], "compressed accuracy": r["compressed_accuracy"]}
            for r in rows
        },
        title="Accuracy before and after compression",
    )
    return Section("Models", body, [comparison], anchor="models")


def _federated_section(run: RunRecord) -> Section:
    notes = [r for r in run.rows if r.get("privacy")]
    parts = []
    if notes:
        items = "".join(
            f"<li><b>{html.escape(r['name'])}</b>: {html.escape(r['privacy'])}</li>"
            for r in notes
        )
        parts.append(f"<ul>{items}</ul>")
    figures = []
    for name, history in run.histories.items():
        rounds = history["rounds"]
        if not rounds:
            parts.append(f'<p class="note">{html.escape(name)}: no rounds recorded.</p>')
            continue
        last = rounds[-1]
        eps = last.get("epsilon")
        spent = "no differential privacy" if eps is None else f"epsilon spent {eps:.3f}"
        metric_names = sorted({k for r in rounds for k in r.get("metrics", {})})
        preferred = ("accuracy", "r2", "loss", "train_loss")
        shown = tuple(m for m in preferred if m in metric_names)[:2] or tuple(metric_names[:1])
        parts.append(
            f'<p class="note">{html.escape(name)}: {len(rounds)} rounds, {spent}; '
            f"{len(history.get('rejections', []))} updates rejected"
            + (f"; stopped: {html.escape(history['stop_reason'])}" if history.get("stop_reason")
               else "")
            + ".</p>"
        )
        if shown:
            figures.append(perf.federated_rounds_figure(history, metrics=shown))
    return Section("Federated training", "".join(parts), figures, anchor="federated")


def _compression_section(demo: Mapping[str, Any]) -> Section:
    comp = demo["compression"]
    candidates = comp["candidates"]
    front = [c for c in candidates if c.get("front")]
    baseline, best = comp["baseline"], comp["best"]
    body = (
        '<p class="note">Every compression chain the search tried on '
        f"{html.escape(comp['model'])}, scored ({html.escape(comp['metric'])}) on half of "
        f"{comp['rows']} held-out rows the model never trained on; budget: at most "
        f"{100 * comp['max_drop']:.1f} points lost. "
        f"Chosen: <b>{html.escape(best['passes'])}</b>, {best['bytes']:,} bytes "
        f"({baseline['bytes'] / best['bytes']:.1f}x smaller than {baseline['bytes']:,}).</p>"
        + _table(
            ["passes (Pareto front)", "bytes", "ratio", comp["metric"]],
            [
                [
                    _cell(c["passes"]),
                    _cell(_bytes(c["bytes"])),
                    _cell(f"{baseline['bytes'] / c['bytes']:.1f}x"),
                    _cell(_pct(c["score"])),
                ]
                for c in sorted(front, key=lambda c: c["bytes"])
            ],
        )
    )
    fig = perf.pareto_front_figure(
        candidates, baseline=baseline, metric=comp["metric"],
    )
    return Section("Compression", body, [fig], anchor="compression")


def _parity_matrix(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    matrix: dict[str, dict[str, str]] = {}
    for r in rows:
        cells = {
            ".fedge (reloaded)": "verified" if r["labels_identical"] else "MISMATCH",
            "C (gcc)": {True: "verified", False: "MISMATCH", None: "refused: no gcc"}[
                r["c_identical"]
            ],
        }
        cells.update(r.get("exports") or {})
        matrix[r["name"]] = cells
    return matrix


def _exports_section(run: RunRecord) -> Section:
    matrix = _parity_matrix(run.rows)
    formats = list(dict.fromkeys(f for cells in matrix.values() for f in cells))
    body = (
        '<p class="note">Each artifact run on its own runtime (gcc, onnxruntime, the LiteRT '
        "interpreter, Core ML's spec checked by its reader) against the source model, each "
        "within its stated tolerance; <i>refused</i> says why a format cannot hold a model."
        "</p>"
        + _table(
            ["model", *formats],
            [
                [_cell(name)]
                + [
                    _cell(
                        cells.get(f, "-").split(":")[0],
                        "ok" if cells.get(f) == "verified"
                        else "bad" if cells.get(f, "").upper() in ("MISMATCH", "FAILED")
                        else "muted",
                    )
                    for f in formats
                ]
                for name, cells in matrix.items()
            ],
        )
    )
    return Section("Export parity", body, [perf.parity_matrix_figure(matrix)], anchor="exports")


def _devices_section(row: Mapping[str, Any]) -> Section:
    devices = row["devices"]
    body = (
        f'<p class="note">The int8 copy of {html.escape(row["name"])} built for every device '
        "target: flash and RAM are the model's own (firmware minus a stub-model firmware); on "
        "runnable targets the firmware ran held-out rows in its emulator and every output was "
        "compared with the numpy runtime.</p>"
        + _table(
            ["target", "runs on", "status", "rows", "bit-exact", "flash B", "RAM B", "fits"],
            [
                [
                    _cell(d["target"]),
                    _cell(d["runs_on"]),
                    _cell(d["status"], "ok" if d["status"] == "ok" else
                          "bad" if d["status"] in ("FAILED", "does not fit") else "muted"),
                    _cell(d["rows"]),
                    _yes(d["bit_exact"]),
                    _cell(_bytes(d["flash_bytes"])),
                    _cell(_bytes(d["ram_bytes"])),
                    _yes(d["fits"], "-"),
                ]
                for d in devices
            ],
        )
    )
    return Section("Devices", body, [perf.footprint_figure(devices)], anchor="devices")


def _latency_section(demo: Mapping[str, Any], package: Mapping[str, Any] | None) -> Section:
    latency = demo["latency"]
    samples = {name: b["samples_us"] for name, b in latency["backends"].items()}
    body = (
        f'<p class="note">Single-row latency of the {html.escape(latency["model"])} on each '
        "backend (one timed call per held-out row, input checks included). Measured on the "
        "machine that ran the demo; compare backends within one run, not across machines.</p>"
        + _table(
            ["backend", "p50 µs", "p99 µs", "rows"],
            [
                [_cell(name), _cell(f"{b['p50_us']:.1f}"), _cell(f"{b['p99_us']:.1f}"),
                 _cell(len(b["samples_us"]))]
                for name, b in latency["backends"].items()
            ],
        )
    )
    if package:
        body += (
            f'<p class="note">Package <code>{html.escape(Path(package["path"]).name)}</code>: '
            f"{package['bytes']:,} bytes, members {html.escape(', '.join(package['members']))}; "
            "predictions after loading identical: "
            f"{'yes' if package['predictions_identical'] else 'NO'}.</p>"
        )
    return Section(
        "Latency", body, [perf.latency_distribution_figure(samples)], anchor="latency"
    )


def report_sections(run: RunRecord) -> list[Section]:
    """The report's sections, in reading order, for what ``run`` holds."""
    sections = []
    demo = run.demo or {}
    if run.rows:
        sections.append(_models_section(run))
    if run.histories or any(r.get("privacy") for r in run.rows):
        sections.append(_federated_section(run))
    if demo.get("compression"):
        sections.append(_compression_section(demo))
    if run.rows:
        sections.append(_exports_section(run))
    deployed = next((r for r in run.rows if r.get("devices")), None)
    if deployed is not None:
        sections.append(_devices_section(deployed))
    if demo.get("latency"):
        package = next((r["package"] for r in run.rows if r.get("package")), None)
        sections.append(_latency_section(demo, package))
    return sections


def build_report(run_dir: str | Path, *, title: str | None = None) -> str:
    """The report of ``run_dir`` as one self-contained HTML page (see :func:`load_run`)."""
    run = load_run(run_dir)
    sections = report_sections(run)
    demo = run.demo or {}
    subtitle = demo.get("dataset", "") or str(run.directory)
    return render_page(title or "fedge run report", sections, subtitle=subtitle)


def write_report(run_dir: str | Path, output: str | Path, *, title: str | None = None) -> Path:
    """Write :func:`build_report` of ``run_dir`` to ``output`` (atomically); return its path."""
    return write_page(output, build_report(run_dir, title=title))
