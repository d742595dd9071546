"""Open a fedge HTML page in a real headless Chromium and report what rendered.

Used by the report's browser test and by ``benchmarks/report.py``: Playwright drives the
system's Chromium (Debian package ``chromium``; no browser is downloaded), the page is loaded
from its file, and the check waits until every figure container holds a drawn Plotly plot,
collecting console and page errors on the way.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedge.errors import ToolchainError
from fedge.visualization._html import FIGURE_CLASS
from fedge.visualization.export import browser_path

__all__ = ["BrowserCheck", "open_page"]

CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")


@dataclass
class BrowserCheck:
    """What the browser saw."""

    load_seconds: float  # navigation start until every figure was drawn
    figures: int  # figure containers in the page
    rendered: int  # containers holding a drawn plot (an svg.main-svg)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return (
            self.figures > 0
            and self.rendered == self.figures
            and not self.console_errors
            and not self.page_errors
        )


def open_page(
    path: str | Path,
    *,
    timeout_s: float = 30.0,
    screenshot: str | Path | None = None,
    viewport: tuple[int, int] = (1280, 900),
    inspect: Any = None,
) -> BrowserCheck:
    """Load ``path`` in headless Chromium and wait until every figure is drawn.

    Parameters
    ----------
    path : path-like
        An HTML file written by fedge (figures in ``.fedge-figure`` containers).
    timeout_s : float
        Bound on the whole check.
    screenshot : path-like, optional
        Save a full-page PNG here.
    viewport : (width, height)
    inspect : callable, optional
        Called with the Playwright page after rendering (tests hover and read tooltips).
    """
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ToolchainError(
            "the browser check needs Playwright: pip install playwright "
            "(it drives the system Chromium; no browser download needed)"
        ) from exc
    page_file = Path(path).resolve()
    if not page_file.is_file():
        raise ToolchainError(f"{page_file}: no such file")
    console_errors: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path(), args=list(CHROMIUM_ARGS), timeout=timeout_s * 1000
        )
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            start = time.perf_counter()
            page.goto(page_file.as_uri(), timeout=timeout_s * 1000)
            selector = f".{FIGURE_CLASS}"
            # on timeout, rendered < figures below says what did not draw
            with contextlib.suppress(PlaywrightError):
                page.wait_for_function(
                    f"""() => {{
                        const boxes = document.querySelectorAll('{selector}');
                        return boxes.length > 0 && Array.from(boxes).every(
                            b => b.querySelector('svg.main-svg') !== null);
                    }}""",
                    timeout=timeout_s * 1000,
                )
            load = time.perf_counter() - start
            figures = page.eval_on_selector_all(selector, "b => b.length")
            rendered = page.eval_on_selector_all(
                selector, "b => b.filter(x => x.querySelector('svg.main-svg')).length"
            )
            if inspect is not None:
                inspect(page)
            shot = None
            if screenshot is not None:
                shot = Path(screenshot)
                page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return BrowserCheck(load, figures, rendered, console_errors, page_errors, shot)
