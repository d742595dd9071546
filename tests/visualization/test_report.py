"""``fedge report``: the page built from a real demo run, checked on its data and in Chromium."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from fedge.cli import main
from fedge.demo import DEPLOYED, FEDERATED, RUN_FILE, run_demo
from fedge.errors import InvalidInputError, ModelFormatError
from fedge.visualization.report import build_report, load_run, report_sections, write_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One full demo run (every device target included), shared by this module's tests."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, seed=0)
    return out


def _figures(sections):
    return [fig for s in sections for fig in s.figures]


def test_the_demo_writes_its_record_and_report(run_dir):
    assert (run_dir / "report.html").is_file()
    record = json.loads((run_dir / RUN_FILE).read_text())
    assert {"rows", "compression", "latency", "federated_history"} <= set(record)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page == build_report(run_dir)  # same inputs, same bytes


def test_every_section_shows_the_runs_own_numbers(run_dir):
    run = load_run(run_dir)
    sections = report_sections(run)
    assert [s.id for s in sections] == [
        "models",
        "federated",
        "compression",
        "exports",
        "devices",
        "latency",
    ]
    figs = {s.id: s.figures[0] for s in sections}
    rows = run.rows

    bars = {t.name: list(t.y) for t in figs["models"].data}
    assert bars["accuracy"] == [r["accuracy"] for r in rows]
    assert bars["compressed accuracy"] == [r["compressed_accuracy"] for r in rows]

    history = run.histories["federated_history.json"]
    accuracy = [t for t in figs["federated"].data if t.name == "accuracy"]
    assert len(accuracy) == 1
    assert list(accuracy[0].y) == [r["metrics"]["accuracy"] for r in history["rounds"]]
    epsilon = [t for t in figs["federated"].data if "epsilon" in (t.name or "")]
    assert list(epsilon[0].y) == pytest.approx([r["epsilon"] for r in history["rounds"]])
    assert history["rounds"][-1]["epsilon"] <= 1.0

    comp = run.demo["compression"]
    points = sum(len(t.x) for t in figs["compression"].data if t.name == "candidates")
    assert points == len(comp["candidates"])
    assert comp["model"] == DEPLOYED and comp["best"]["bytes"] <= comp["baseline"]["bytes"]

    matrix = figs["exports"].data[0]
    assert len(matrix.y) == len(rows)  # one row per model, every cell verified
    assert np.unique(np.asarray(matrix.z, dtype=float)).size == 1

    devices = next(r["devices"] for r in rows if r["devices"])
    flash = next(t for t in figs["devices"].data if t.name == "flash")
    assert list(flash.y) == [d["flash_bytes"] for d in devices]

    latency = run.demo["latency"]["backends"]
    violins = {t.name.split(" ")[0]: list(t.y) for t in figs["latency"].data}
    assert set(violins) == set(latency)
    for backend, data in latency.items():
        assert violins[backend] == pytest.approx(data["samples_us"])


def test_the_page_is_self_contained_and_counts_its_figures(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs

    assert page.count("plotly.js v") == 1  # inlined once
    ours = page.replace(get_plotlyjs(), "")  # the library itself names URLs it never loads
    assert "<script src=" not in ours and "http://" not in ours and "https://" not in ours
    n = len(_figures(report_sections(load_run(run_dir))))
    assert page.count('class="fedge-figure"') == n
    assert (run_dir / "report.html").stat().st_size < 10_000_000
    for anchor in ("models", "federated", "compression", "exports", "devices", "latency"):
        assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_report_renders_in_chromium(run_dir, tmp_path):
    from fedge.visualization.browser import open_page

    hovered = {}

    def hover_a_round(page):
        point = page.locator("#federated-fig0 .scatterlayer .point").nth(3)
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(300)
        hovered["text"] = page.locator("#federated-fig0 .hoverlayer").text_content()

    shot = tmp_path / "report.png"
    check = open_page(run_dir / "report.html", screenshot=shot, inspect=hover_a_round)
    n = len(_figures(report_sections(load_run(run_dir))))
    assert check.console_errors == [] and check.page_errors == []
    assert check.figures == n and check.rendered == n, check
    # the tooltip of round 4 reads that round's recorded accuracy and epsilon
    round4 = json.loads((run_dir / "federated_history.json").read_text())["rounds"][3]
    text = hovered["text"]
    assert f"{round4['metrics']['accuracy']:.4f}".rstrip("0") in text, text
    assert f"{round4['epsilon']:.3f}" in text, text
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1280 and height > 2000  # the whole page, every section


def test_a_federated_run_directory_alone_is_reported(run_dir, tmp_path):
    shutil.copy(run_dir / "federated_history.json", tmp_path / "history.json")
    sections = report_sections(load_run(tmp_path))
    assert [s.id for s in sections] == ["federated"]
    path = write_report(tmp_path, tmp_path / "r.html")
    assert path.stat().st_size > 0


def test_bad_run_directories_get_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="not a directory"):
        load_run(tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="nothing to report"):
        load_run(tmp_path)
    (tmp_path / RUN_FILE).write_text("{not json")
    with pytest.raises(ModelFormatError, match="not a readable JSON"):
        load_run(tmp_path)
    (tmp_path / RUN_FILE).unlink()
    (tmp_path / "history.json").write_text(json.dumps({"rounds": "none"}))
    with pytest.raises(ModelFormatError, match="not a federated history"):
        load_run(tmp_path)
    (tmp_path / "history.json").write_text(json.dumps({"rounds": []}))
    with pytest.raises(InvalidInputError, match="no rounds"):
        build_report(tmp_path)


def test_cli_report(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["report", str(run_dir), "-o", str(tmp_path / "out.html")])
    assert done.value.code == 0
    assert "report: " in capsys.readouterr().out
    assert (tmp_path / "out.html").read_bytes() == (run_dir / "report.html").read_bytes()
    with pytest.raises(SystemExit) as done:
        main(["report", str(tmp_path / "nothing-here")])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "not a directory" in err and "Traceback" not in err


def test_the_federated_rows_are_reported_with_their_privacy(run_dir):
    rows = load_run(run_dir).rows
    notes = {r["name"]: r["privacy"] for r in rows if r["privacy"]}
    assert FEDERATED in notes and "epsilon 1.000" in notes[FEDERATED]
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for name in notes:
        assert name in page
