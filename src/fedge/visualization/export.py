"""Static images of Plotly figures (PNG, SVG, PDF) through kaleido and the system Chromium.

kaleido 1.x renders in a headless Chromium: fedge uses the browser the system provides
(Debian's ``chromium``, found on ``PATH``, at ``/usr/bin/chromium`` or through
``BROWSER_PATH``) and never downloads one. Starting a browser costs 4-6 s, so
:func:`export_figures` keeps one alive for a whole batch (``kaleido.start_sync_server``);
:func:`export_figure` reuses a running one, or starts and stops its own.

MathJax is disabled (it would be fetched from a CDN); plotly.js comes from the installed
plotly package, so exporting needs no network.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedge.errors import InvalidInputError, ToolchainError
from fedge.visualization._common import require_plotly

__all__ = ["FORMATS", "browser_path", "browser_session", "export_figure", "export_figures"]

#: File suffixes :func:`export_figure` writes.
FORMATS = ("png", "svg", "pdf")

_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TYPICAL_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def browser_path() -> str:
    """The Chromium executable kaleido will drive.

    ``BROWSER_PATH`` wins when set; then ``chromium`` (and Chrome) on ``PATH``; then
    ``/usr/bin/chromium``.

    Raises
    ------
    ToolchainError
        If no Chromium is found (install the Debian package ``chromium``).
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise ToolchainError(
            f"BROWSER_PATH={env!r} is not an executable file; point it at Chromium "
            "or unset it (on Debian: apt-get install chromium)"
        )
    for name in _BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    for candidate in _TYPICAL_PATHS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ToolchainError(
        "exporting PNG/SVG/PDF needs a Chromium browser and none was found on PATH: "
        "install the Debian package 'chromium' (apt-get install chromium), or set "
        "BROWSER_PATH to a Chromium/Chrome executable"
    )


def _kaleido() -> Any:
    try:
        import kaleido
    except ImportError as exc:  # pragma: no cover - part of the viz extra
        raise ToolchainError(
            "exporting PNG/SVG/PDF needs kaleido >= 1.0: pip install 'fedge[viz]'"
        ) from exc
    return kaleido


def _server_running(kaleido: Any) -> bool:
    server = getattr(kaleido, "_global_server", None)
    return bool(server is not None and server.is_running())


@contextmanager
def browser_session() -> Iterator[None]:
    """Keep one headless Chromium alive for every export inside the ``with`` block.

    A session already running (started by the caller) is reused and left running.

    Raises
    ------
    ToolchainError
        If kaleido or Chromium is missing.
    """
    kaleido = _kaleido()
    if _server_running(kaleido):
        yield
        return
    path = browser_path()
    kaleido.start_sync_server(mathjax=False, path=path, silence_warnings=True)
    try:
        yield
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInputError(
            f"cannot export {path.name!r}: unsupported suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join('.' + f for f in FORMATS)}"
        )
    return fmt


def _check_size(width: int, height: int, scale: float) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive integer of pixels, got {value!r}")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise InvalidInputError(f"scale must be a positive number, got {scale!r}")


def _check_figure(fig: Any) -> None:
    go = require_plotly()
    if not isinstance(fig, go.Figure):
        raise InvalidInputError(f"expected a plotly.graph_objects.Figure, got {type(fig).__name__}")


def _write(fig: Any, path: Path, fmt: str, width: int, height: int, scale: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # plotly always passes its default request headers; a running server ignores them.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        try:
            fig.write_image(str(path), format=fmt, width=width, height=height, scale=scale)
        except RuntimeError as exc:
            if "chrome" in str(exc).lower() or "browser" in str(exc).lower():
                raise ToolchainError(
                    f"kaleido could not render {path.name} in Chromium: {exc} "
                    "(on Debian: apt-get install chromium)"
                ) from exc
            raise
    return path


def export_figure(
    fig: Any,
    path: str | os.PathLike[str],
    *,
    width: int = 900,
    height: int = 500,
    scale: float = 1.0,
) -> Path:
    """Write ``fig`` as a PNG, SVG or PDF image, chosen by the suffix of ``path``.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        The figure to render.
    path : str or os.PathLike
        Destination ending in ``.png``, ``.svg`` or ``.pdf``; parent folders are created.
    width, height : int
        Size in CSS pixels (a PNG has ``width * scale`` x ``height * scale`` pixels).
    scale : float
        Resolution multiplier.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    InvalidInputError
        On an unsupported suffix, a non-positive size or something that is not a figure.
    ToolchainError
        If no Chromium is available.
    """
    out = Path(path)
    fmt = _format_of(out)
    _check_size(width, height, scale)
    _check_figure(fig)
    with browser_session():
        return _write(fig, out, fmt, width, height, scale)


def export_figures(
    figs: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] = FORMATS,
    *,
    width: int = 900,
    height: int = 500,
    scale: float = 1.0,
) -> list[Path]:
    """Write every figure in every format with one browser for the whole batch.

    Parameters
    ----------
    figs : Mapping[str, plotly.graph_objects.Figure]
        File stem -> figure (stems must be plain file names).
    out_dir : str or os.PathLike
        Destination folder (created when missing).
    formats : Sequence[str]
        Any of ``"png"``, ``"svg"``, ``"pdf"``.
    width, height, scale
        As for :func:`export_figure`.

    Returns
    -------
    list of pathlib.Path
        The written files, figure by figure in the mapping's order, formats in the order given.

    Raises
    ------
    InvalidInputError
        On no figures, no or unknown formats, a stem with a path separator, bad sizes.
    ToolchainError
        If no Chromium is available.
    """
    if len(figs) == 0:
        raise InvalidInputError("no figures to export: pass at least one name -> figure")
    fmts = [str(f).lower().lstrip(".") for f in formats]
    if not fmts:
        raise InvalidInputError(f"no formats given; use any of {', '.join(FORMATS)}")
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown:
        raise InvalidInputError(
            f"unsupported export format(s) {', '.join(unknown)}; use any of {', '.join(FORMATS)}"
        )
    _check_size(width, height, scale)
    for stem, fig in figs.items():
        if not stem or Path(stem).name != stem or stem in (".", ".."):
            raise InvalidInputError(
                f"figure name {stem!r} must be a plain file name (no folders, not empty)"
            )
        _check_figure(fig)
    folder = Path(out_dir)
    written = []
    with browser_session():
        for stem, fig in figs.items():
            for fmt in fmts:
                written.append(_write(fig, folder / f"{stem}.{fmt}", fmt, width, height, scale))
    return written
