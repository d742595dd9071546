"""Static export through kaleido and the system Chromium: sizes and formats of the files.

The tests that render share one browser session (starting Chromium takes seconds).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from fedge.errors import InvalidInputError, ToolchainError
from fedge.visualization import export
from fedge.visualization.export import browser_path, export_figure, export_figures
from fedge.visualization.interactive import InteractiveDashboard, model_comparison_figure

go = pytest.importorskip("plotly.graph_objects")
pytest.importorskip("kaleido")

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _svg_size(path: Path) -> tuple[float, float]:
    text = path.read_text(encoding="utf-8")
    head = re.search(r"<svg[^>]*>", text).group(0)
    width = float(re.search(r'\swidth="([0-9.]+)"', head).group(1))
    height = float(re.search(r'\sheight="([0-9.]+)"', head).group(1))
    return width, height


def _figure(n: int = 0):
    return go.Figure(go.Bar(x=["a", "b", "c"], y=[1 + n, 2, 3]), layout={"title": f"f{n}"})


# --------------------------------------------------------------------------- no browser needed
def test_unsupported_suffix_is_refused(tmp_path):
    for name in ("fig.jpg", "fig", "fig.eps"):
        with pytest.raises(InvalidInputError, match=r"unsupported suffix .*use one of \.png"):
            export_figure(_figure(), tmp_path / name)
    with pytest.raises(InvalidInputError, match="unsupported export format"):
        export_figures({"a": _figure()}, tmp_path, formats=("png", "gif"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a positive integer"),
        ({"height": 2.5}, "height must be a positive integer"),
        ({"scale": -1}, "scale must be a positive number"),
    ],
)
def test_bad_sizes_are_refused(tmp_path, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        export_figure(_figure(), tmp_path / "a.png", **kwargs)


def test_bad_batches_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="no figures to export"):
        export_figures({}, tmp_path)
    with pytest.raises(InvalidInputError, match="must be a plain file name"):
        export_figures({"sub/a": _figure()}, tmp_path)
    with pytest.raises(InvalidInputError, match=r"expected a plotly\.graph_objects\.Figure"):
        export_figures({"a": {"data": []}}, tmp_path)
    with pytest.raises(InvalidInputError, match="no formats given"):
        export_figures({"a": _figure()}, tmp_path, formats=())


def test_missing_chromium_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(export, "_TYPICAL_PATHS", ())
    monkeypatch.setattr(export, "_server_running", lambda kaleido: False)
    with pytest.raises(ToolchainError, match="install the Debian package 'chromium'"):
        browser_path()
    with pytest.raises(ToolchainError, match="apt-get install chromium"):
        export_figure(_figure(), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_browser_path_honours_browser_path(tmp_path, monkeypatch):
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert browser_path() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    with pytest.raises(ToolchainError, match="not an executable file"):
        browser_path()


@needs_chromium
def test_browser_path_finds_system_chromium(monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    assert os.path.realpath(browser_path()) in {
        os.path.realpath(p) for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
    }


# --------------------------------------------------------------------------- real rendering
@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Everything the slow tests check, rendered in one Chromium session."""
    out = tmp_path_factory.mktemp("export")
    dash = InteractiveDashboard("export test")
    dash.add_model_comparison({"lr": {"acc": 0.9}, "rf": {"acc": 0.95}})
    dash.add_figure(_figure(1), section="Extra")
    with export.browser_session():
        batch = export_figures(
            {"one": _figure(1), "two": _figure(2)}, out / "batch", width=400, height=300, scale=2
        )
        single = export_figure(
            model_comparison_figure({"a": {"m": 1.0}}), out / "single.svg", width=640, height=480
        )
        dashboard = dash.export(out / "dash", formats=("png",), width=500, height=250)
    return {"batch": batch, "single": single, "dashboard": dashboard, "out": out}


@pytest.mark.slow
@needs_chromium
def test_export_figures_writes_every_format(rendered):
    batch = rendered["batch"]
    out = rendered["out"] / "batch"
    assert batch == [out / f"{s}.{f}" for s in ("one", "two") for f in ("png", "svg", "pdf")]
    for path in batch:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert _png_size(path) == (800, 600)  # width * scale x height * scale
        elif path.suffix == ".svg":
            assert _svg_size(path) == (800, 600)
            assert "<svg" in path.read_text(encoding="utf-8")
        else:
            data = path.read_bytes()
            assert data.startswith(b"%PDF") and len(data) > 500


@pytest.mark.slow
@needs_chromium
def test_export_figure_svg_size(rendered):
    path = rendered["single"]
    assert path.name == "single.svg"
    assert _svg_size(path) == (640, 480)


@pytest.mark.slow
@needs_chromium
def test_dashboard_export_names_files_by_div_id(rendered):
    out = rendered["out"] / "dash"
    assert rendered["dashboard"] == [out / "model-comparison-fig0.png", out / "extra-fig0.png"]
    for path in rendered["dashboard"]:
        assert _png_size(path) == (500, 250)
