"""Self-contained HTML pages of Plotly figures: plotly.js inlined once, no CDN, no network.

Shared by :meth:`InteractiveDashboard.save_dashboard` and ``fedge report``: both write one file
that opens offline, resizes with the window (Plotly's responsive config) and numbers its
figure containers deterministically, so the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedge.visualization._common import require_plotly

__all__ = [
    "FIGURE_CLASS",
    "PLOT_CONFIG",
    "Section",
    "figure_html",
    "render_page",
    "slug",
    "write_page",
]

#: Every figure container carries this class (and ``data-title``): the browser test counts them.
FIGURE_CLASS = "fedge-figure"
PLOT_CONFIG = {"responsive": True, "displaylogo": False}

_CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: #fafbfc; }
nav { position: fixed; top: 0; left: 0; bottom: 0; width: 210px; padding: 20px 14px;
      border-right: 1px solid var(--line); background: #fff; overflow-y: auto; }
nav a { display: block; padding: 4px 6px; color: var(--ink); text-decoration: none;
        border-radius: 4px; }
nav a:hover { background: #eef2f7; }
nav .brand { font-weight: 700; margin-bottom: 12px; color: var(--accent); }
main { margin-left: 210px; padding: 20px 32px 60px; max-width: 1280px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0 0 16px; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin: 18px 0; }
section h2 { margin: 0 0 8px; font-size: 19px; }
.fedge-figure { width: 100%; height: 440px; margin: 8px 0 4px; }
.note { color: var(--muted); font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.ok { color: #1a7f37; } td.bad { color: #b42318; font-weight: 600; } td.muted { color: #8792a2; }
@media (max-width: 900px) {
  nav { position: static; width: auto; border-right: 0; border-bottom: 1px solid var(--line); }
  main { margin-left: 0; padding: 12px; }
  .grid { grid-template-columns: 1fr; }
}
"""


@dataclass
class Section:
    """One navigable part of a page: a title, optional prose/tables (HTML) and figures."""

    title: str
    body: str = ""
    figures: Sequence[Any] = field(default_factory=list)  # Plotly figures
    anchor: str | None = None

    @property
    def id(self) -> str:
        return self.anchor or slug(self.title)


def slug(text: str) -> str:
    """A lower-case, dash-separated HTML id from ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def figure_html(fig: Any, div_id: str) -> str:
    """One figure as a ``<div>`` (no plotly.js), inside a sized, counted container."""
    title = ""
    layout_title = getattr(fig.layout, "title", None)
    if layout_title is not None and layout_title.text:
        title = layout_title.text
    inner = fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )
    return (
        f'<div class="{FIGURE_CLASS}" data-title="{html.escape(title, quote=True)}">'
        f"{inner}</div>"
    )


def render_page(
    title: str,
    sections: Sequence[Section],
    *,
    subtitle: str = "",
    include_plotlyjs: bool = True,
) -> str:
    """A whole HTML page: navigation, one block per section, plotly.js inlined once.

    With ``include_plotlyjs=False`` the page expects plotly.js to be loaded by its host.
    """
    require_plotly()
    from plotly.offline import get_plotlyjs

    nav = "".join(
        f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections
    )
    blocks = []
    for i, s in enumerate(sections):
        figs = "".join(
            figure_html(fig, f"{s.id}-fig{j}") for j, fig in enumerate(s.figures)
        )
        if len(s.figures) > 1:
            figs = f'<div class="grid">{figs}</div>'
        blocks.append(
            f'<section id="{s.id}" data-index="{i}"><h2>{html.escape(s.title)}</h2>'
            f"{s.body}{figs}</section>"
        )
    script = f"<script>{get_plotlyjs()}</script>" if include_plotlyjs else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>{script}</head><body>"
        f'<nav><div class="brand">fedge</div>{nav}</nav><main><header>'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        + "".join(blocks)
        + "</main></body></html>\n"
    )


def write_page(path: str | os.PathLike[str], page: str) -> Path:
    """Write ``page`` to ``path`` (UTF-8, parents created) through a temporary file renamed
    into place, so a crash never leaves half a page where a good one was."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
