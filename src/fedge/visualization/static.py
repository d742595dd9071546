"""Static, publication-quality matplotlib figures of the same data as the interactive ones.

Each function returns a :class:`matplotlib.figure.Figure` built directly (no pyplot state, so
nothing leaks between calls), sized for a paper column (``figsize="single"``, 3.5 in wide, or
``"double"``, 7.1 in), with consistent font sizes, no top/right spines, constrained layout and
the colour-blind palette of :data:`fedge.visualization._common.PALETTE`. Input is normalised
by :mod:`fedge.visualization.performance_viz`, so a static figure and its interactive twin
draw the same numbers. :func:`save_figure` writes PNG, SVG or PDF deterministically: the same
figure gives the same bytes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.visualization import performance_viz as pv
from fedge.visualization._common import PALETTE, colour, require_matplotlib

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DOUBLE_COLUMN",
    "SINGLE_COLUMN",
    "federated_rounds",
    "footprint",
    "latency_distribution",
    "metric_comparison",
    "pareto_front",
    "parity_matrix",
    "save_figure",
    "training_history",
]

#: Paper widths in inches: one column and the full text width of a two-column layout.
SINGLE_COLUMN = 3.5
DOUBLE_COLUMN = 7.1

FigSize = tuple[float, float] | str | None

#: The style every figure is drawn in (font sizes in points).
STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "patch.linewidth": 0.5,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
}

#: What saving needs for identical bytes and editable text in vector files.
SAVE_STYLE: dict[str, Any] = {"svg.hashsalt": "fedge", "svg.fonttype": "path", "pdf.fonttype": 42}
SAVE_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    require_matplotlib()
    import matplotlib
    from cycler import cycler

    with matplotlib.rc_context({**STYLE, "axes.prop_cycle": cycler(color=list(PALETTE))}):
        yield


def _figsize(figsize: FigSize, height: float) -> tuple[float, float]:
    if figsize is None or figsize == "single":
        return (SINGLE_COLUMN, height)
    if figsize == "double":
        return (DOUBLE_COLUMN, height)
    if isinstance(figsize, str):
        raise InvalidInputError(
            f"figsize must be 'single', 'double' or (width, height) in inches, got {figsize!r}"
        )
    try:
        width, tall = (float(v) for v in figsize)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"figsize must be 'single', 'double' or (width, height) in inches, got {figsize!r}"
        ) from exc
    if not (width > 0 and tall > 0 and math.isfinite(width) and math.isfinite(tall)):
        raise InvalidInputError(f"figsize must be positive inches, got {figsize!r}")
    return (width, tall)


def _figure(figsize: FigSize, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=_figsize(figsize, height), layout="constrained")


def _finish(ax: Axes, title: str | None) -> None:
    if title:
        ax.set_title(title, loc="left")


def federated_rounds(
    history: Any,
    metrics: str | Sequence[str] = ("accuracy",),
    *,
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """The metrics, privacy spent and client participation of a federated run, per round.

    Parameters
    ----------
    history : History, Mapping or path-like
        The run's :class:`~fedge.federated.History`, its ``as_dict()`` mapping, or the path
        of its JSON.
    metrics : str or sequence of str, default ("accuracy",)
        Metrics to draw as lines (NaN rounds are gaps).
    title : str, optional
        Title over the top panel.
    figsize : "single", "double" or (width, height), optional
        Inches; default one column, 3.5 x 3.2.

    Returns
    -------
    matplotlib.figure.Figure
        Top axes: one line per metric (``axes[0].lines``); when the run used differential
        privacy, a twin axes (``axes[2]``) with epsilon spent as a dashed line; bottom axes
        (``axes[1]``): accepted / rejected / failed clients as stacked bars.

    Raises
    ------
    InvalidInputError
        When the history has no rounds or a metric is in no round.
    """
    data = pv._rounds_data(history, metrics)
    with _style():
        from matplotlib.ticker import MaxNLocator

        fig = _figure(figsize, 3.2)
        ax, axp = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        for i, (name, values) in enumerate(data.metrics.items()):
            ax.plot(data.rounds, values, marker="o", color=colour(i), label=name)
        ax.set_ylabel(", ".join(data.metrics) or "metric")
        handles, labels = ax.get_legend_handles_labels()
        if data.epsilon is not None:
            axe = ax.twinx()
            axe.spines["right"].set_visible(True)
            axe.plot(data.rounds, data.epsilon, linestyle="--", color=pv.EPSILON_COLOUR,
                     label="ε spent")
            axe.set_ylabel("ε spent")
            axe.set_ylim(bottom=0)
            more = axe.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        if handles:
            ax.legend(handles, labels, loc="best")
        bottom = np.zeros(len(data.rounds))
        for name, col in pv.PARTICIPATION:
            counts = getattr(data, name)
            axp.bar(data.rounds, counts, bottom=bottom, color=col, label=name, width=0.7)
            bottom = bottom + counts
        axp.set_ylabel("clients")
        axp.set_xlabel("round")
        axp.xaxis.set_major_locator(MaxNLocator(integer=True))
        axp.yaxis.set_major_locator(MaxNLocator(integer=True))
        axp.set_ylim(0, max(1.0, float(bottom.max())) * 1.45)
        axp.legend(loc="upper center", ncols=3, fontsize=6)
        _finish(ax, title)
    return fig


def training_history(
    train: Sequence[float],
    validation: Sequence[float] | None = None,
    metric: str = "loss",
    x: Sequence[float] | None = None,
    *,
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """Training (and validation) curves of one metric.

    Parameters
    ----------
    train, validation : sequence of float
        The metric per epoch on training and (optionally) validation data, equally long.
    metric : str, default "loss"
        The y label.
    x : sequence of float, optional
        The x of each value (default: epochs 1, 2, ...).
    title : str, optional
        The title.
    figsize : "single", "double" or (width, height), optional
        Inches; default 3.5 x 2.4.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with lines "train" and, when given, "validation".

    Raises
    ------
    InvalidInputError
        When the series are empty, of different lengths, or hold Inf.
    """
    xs, tr, va = pv._training_series(train, validation, x)
    with _style():
        fig = _figure(figsize, 2.4)
        ax = fig.subplots()
        for i, (name, values) in enumerate((("train", tr), ("validation", va))):
            if values is not None:
                ax.plot(xs, values, marker="o", color=colour(i), label=name)
        ax.set_xlabel("epoch" if x is None else "step")
        ax.set_ylabel(metric)
        ax.legend()
        _finish(ax, title)
    return fig


def _violin_stats(datasets: list[np.ndarray], log: bool) -> list[dict[str, Any]]:
    """Kernel density outlines of each dataset, estimated in log space on a log axis."""
    from matplotlib import cbook, mlab

    def kde(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
        return mlab.GaussianKDE(x, "scott").evaluate(coords)

    if not log:
        return cbook.violin_stats(datasets, kde)
    stats = cbook.violin_stats([np.log10(d) for d in datasets], kde)
    for s in stats:
        for key in ("coords", "mean", "median", "min", "max"):
            s[key] = 10.0 ** np.asarray(s[key])
    return stats


def latency_distribution(
    samples: Mapping[str, Sequence[float]],
    unit: str = "µs",
    kind: str = "violin",
    log: bool | None = None,
    *,
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """The latency distribution of each backend, with its p50 and p99 marked.

    Parameters
    ----------
    samples : Mapping[str, sequence of float]
        Backend name to its measured latencies (finite, >= 0).
    unit : str, default "µs"
        The samples' unit.
    kind : {"violin", "box"}
        Violins or boxes (whiskers at 1.5 IQR, outliers drawn).
    log : bool, optional
        Logarithmic y axis; by default when the largest sample exceeds the smallest 100 times.
    title : str, optional
        The title.
    figsize : "single", "double" or (width, height), optional
        Inches; default 3.5 x 2.4.

    Returns
    -------
    matplotlib.figure.Figure
        One axes, one violin/box per backend at x = 1, 2, ...; lines labelled "p50" and "p99"
        hold each backend's percentiles.

    Raises
    ------
    InvalidInputError
        When there are no backends or samples, a sample is NaN/Inf/negative, or ``kind`` is
        unknown.
    """
    if kind not in ("violin", "box"):
        raise InvalidInputError(f"kind must be 'violin' or 'box', got {kind!r}")
    stats = pv._latency(samples)
    use_log = pv._use_log("latencies", np.concatenate([s.samples for s in stats]), log)
    positions = np.arange(1, len(stats) + 1)
    with _style():
        fig = _figure(figsize, 2.4)
        ax = fig.subplots()
        if use_log:
            ax.set_yscale("log")
        if kind == "violin":
            spread = [i for i, s in enumerate(stats) if np.ptp(s.samples) > 0]
            if spread:  # a KDE needs some spread; constant samples show as their markers
                parts = ax.violin(
                    _violin_stats([stats[i].samples for i in spread], use_log),
                    positions=positions[spread], showextrema=False, widths=0.8,
                )
                for body, i in zip(parts["bodies"], spread, strict=True):
                    body.set_facecolor(colour(i))
                    body.set_edgecolor(colour(i))
                    body.set_alpha(0.45)
        else:
            parts = ax.boxplot(
                [s.samples for s in stats], positions=positions, widths=0.5, patch_artist=True,
                flierprops={"markersize": 2, "alpha": 0.5}, medianprops={"color": "black"},
            )
            for box, i in zip(parts["boxes"], range(len(stats)), strict=True):
                box.set_facecolor(colour(i))
                box.set_alpha(0.6)
        ax.plot(positions, [s.p50 for s in stats], linestyle="none", marker="o",
                color="black", markersize=3, label="p50")
        ax.plot(positions, [s.p99 for s in stats], linestyle="none", marker="_",
                color="black", markersize=8, markeredgewidth=1.2, label="p99")
        ax.set_xticks(positions, [s.name for s in stats])
        ax.set_xlim(0.4, len(stats) + 0.6)
        ax.set_ylabel(f"latency ({unit})")
        ax.legend(loc="best")
        _finish(ax, title)
    return fig


def metric_comparison(
    results: Mapping[str, Mapping[str, float]],
    *,
    kind: str = "bar",
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """Several metrics of several models side by side.

    Parameters
    ----------
    results : Mapping[str, Mapping[str, float]]
        Name to ``{metric: value}``; missing or None values are gaps.
    kind : {"bar", "dot"}
        Grouped bars (one container per metric in ``ax.containers``) or a dot plot (one
        line of markers per metric in ``ax.lines``).
    title : str, optional
        The title.
    figsize : "single", "double" or (width, height), optional
        Inches; default 3.5 x 2.4.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; names on x in the order of ``results``.

    Raises
    ------
    InvalidInputError
        When ``results`` is empty, names no metric, or holds a value that is not a number.
    """
    if kind not in ("bar", "dot"):
        raise InvalidInputError(f"kind must be 'bar' or 'dot', got {kind!r}")
    names, metrics, table = pv._metric_table(results)
    x = np.arange(len(names), dtype=float)
    with _style():
        fig = _figure(figsize, 2.4)
        ax = fig.subplots()
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            if kind == "bar":
                offset = (j - (len(metrics) - 1) / 2) * width
                ax.bar(x + offset, table[:, j], width=width, color=colour(j), label=metric)
            else:
                ax.plot(x, table[:, j], linestyle="none", marker="o", markersize=5,
                        color=colour(j), label=metric)
        ax.set_xticks(x, names)
        if max(len(n) for n in names) * len(names) > 40:
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        ax.set_ylabel("value" if len(metrics) > 1 else metrics[0])
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        ax.legend(ncols=min(len(metrics), 4))
        _finish(ax, title)
    return fig


def pareto_front(
    candidates: Any,
    baseline: Any = None,
    front: Sequence[Any] | None = None,
    metric: str | None = None,
    *,
    log_x: bool = True,
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """Every compression candidate's size against its score, with the Pareto front.

    Parameters
    ----------
    candidates : SearchResult or sequence
        An AutoCompress result, or candidates / mappings with ``bytes`` and ``score``.
    baseline : Candidate or mapping, optional
        The uncompressed model (default: the SearchResult's), drawn as a star.
    front : sequence, optional
        Candidates or indices into ``candidates`` (default: the SearchResult's, else
        :func:`fedge.visualization.performance_viz.pareto_front`).
    metric : str, optional
        The y label (default: the SearchResult's metric, else "score").
    log_x : bool, default True
        Logarithmic size axis.
    title : str, optional
        The title.
    figsize : "single", "double" or (width, height), optional
        Inches; default 3.5 x 2.6.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: candidates as a scatter (``ax.collections[0]``), the front as a step line
        (``ax.lines[0]``, label "Pareto front") and the baseline (``ax.lines[1]``).

    Raises
    ------
    InvalidInputError
        When there are no candidates or a size/score is missing, not finite or (log axis)
        not positive.
    """
    data = pv._candidates(candidates, baseline, front, metric)
    if log_x:
        everything = data.points + data.front + ([data.baseline] if data.baseline else [])
        pv._use_log("candidate sizes", np.array([p.bytes for p in everything]), True)
    with _style():
        fig = _figure(figsize, 2.6)
        ax = fig.subplots()
        ax.scatter([p.bytes for p in data.points], [p.score for p in data.points], s=10,
                   color=colour(0), alpha=0.6, linewidths=0, label="candidates")
        ax.step([p.bytes for p in data.front], [p.score for p in data.front], where="post",
                marker="o", markersize=3, color=colour(3), label="Pareto front")
        if data.baseline is not None:
            ax.plot([data.baseline.bytes], [data.baseline.score], linestyle="none",
                    marker="*", markersize=9, color=colour(7), label="baseline")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("size (bytes)")
        ax.set_ylabel(data.metric)
        ax.grid(True, which="major")
        ax.set_axisbelow(True)
        ax.legend(loc="lower right")
        _finish(ax, title)
    return fig


def footprint(
    rows: Sequence[Any],
    *,
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """Flash and RAM of a model on each device target, against the target's budget.

    Parameters
    ----------
    rows : sequence of DeviceRow or Mapping
        One row per target (``target``, ``flash_bytes``, ``ram_bytes``, ``flash_budget``,
        ``ram_budget``, ``status``); None sizes are drawn as annotated gaps.
    title : str, optional
        The title.
    figsize : "single", "double" or (width, height), optional
        Inches; default 3.5 x 2.6.

    Returns
    -------
    matplotlib.figure.Figure
        One axes (log y): bar containers "flash" and "RAM" (``ax.containers[0]``, ``[1]``;
        NaN height where not measured), budget markers as lines "flash budget" and
        "RAM budget", and a text "n/a" per missing size.

    Raises
    ------
    InvalidInputError
        When there are no rows, a row has no target or a size that is not a byte count, or
        two rows name the same target.
    """
    data = pv._footprints(rows)
    x = np.arange(len(data), dtype=float)
    width = 0.38

    def values(attr: str) -> np.ndarray:
        return np.array([math.nan if getattr(r, attr) is None else getattr(r, attr)
                         for r in data], dtype=float)

    with _style():
        fig = _figure(figsize, 2.6)
        ax = fig.subplots()
        ax.set_yscale("log")
        for j, (kind, label) in enumerate((("flash", "flash"), ("ram", "RAM"))):
            offset = (j - 0.5) * width
            ax.bar(x + offset, values(kind), width=width, color=colour(j), label=label)
            ax.plot(x + offset, values(f"{kind}_budget"), linestyle="none", marker="_",
                    markersize=11, markeredgewidth=1.6, color=colour(j),
                    label=f"{label} budget")
        for i, r in enumerate(data):
            missing = [name for name, v in (("flash", r.flash), ("RAM", r.ram)) if v is None]
            if missing:
                ax.text(i, 0.03, f"n/a: {r.status}", transform=ax.get_xaxis_transform(),
                        rotation=90, ha="center", va="bottom", fontsize=6, color="0.35")
        ax.set_xticks(x, [r.target for r in data])
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.set_ylabel("bytes")
        ax.legend(ncols=2, fontsize=6)
        _finish(ax, title)
    return fig


def parity_matrix(
    matrix: Mapping[str, Mapping[str, str]],
    *,
    title: str | None = None,
    figsize: FigSize = None,
) -> Figure:
    """Which model verified in which format, as a coloured models x formats grid.

    Parameters
    ----------
    matrix : Mapping[str, Mapping[str, str]]
        Model name to ``{format: status}``.
    title : str, optional
        The title.
    figsize : "single", "double" or (width, height), optional
        Inches; default 3.5 wide, 0.3 in per model.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with an image whose data are the status codes (2 verified, green; 1 refused,
        grey; 0 mismatch/failed, red; masked where missing) and each cell's short status.

    Raises
    ------
    InvalidInputError
        When the matrix is empty, names no format, or holds a status that is not a string.
    """
    models, formats, codes, texts = pv._parity_table(matrix)
    z = np.ma.masked_invalid(np.array(
        [[math.nan if c is None else c for c in row] for row in codes], dtype=float
    ))
    with _style():
        from matplotlib.colors import BoundaryNorm, ListedColormap

        fig = _figure(figsize, 0.9 + 0.3 * len(models))
        ax = fig.subplots()
        cmap = ListedColormap(
            [pv.STATUS_COLOURS[k] for k in ("failed", "refused", "verified")]
        ).with_extremes(bad="white")
        ax.imshow(z, cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3), aspect="auto")
        for i, row in enumerate(texts):
            for j, text in enumerate(row):
                if text:
                    ax.text(j, i, pv._short_status(text), ha="center", va="center", fontsize=6,
                            color="white" if codes[i][j] != 1 else "black")
        ax.set_xticks(range(len(formats)), formats)
        ax.set_yticks(range(len(models)), models)
        ax.xaxis.tick_top()
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        _finish(ax, title)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: float = 300) -> Path:
    """Write ``fig`` as PNG, SVG or PDF (chosen by the suffix), deterministically.

    Dates and software versions are left out of the file and SVG ids are salted with a
    constant, so saving the same figure twice gives identical bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or Path
        Where to write; the suffix (``.png``, ``.svg`` or ``.pdf``) picks the format.
        Missing parent folders are created.
    dpi : float, default 300
        Resolution of the PNG (and of rasterized parts of vector files): a PNG is
        ``figsize * dpi`` pixels.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InvalidInputError
        When ``fig`` is not a matplotlib figure, the suffix is not a supported format, or
        ``dpi`` is not positive.
    """
    require_matplotlib()
    import matplotlib
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise InvalidInputError(
            f"save_figure needs a matplotlib Figure, got {type(fig).__name__} "
            "(Plotly figures are written with fedge.visualization's HTML/image export)"
        )
    out = Path(path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in SAVE_METADATA:
        raise InvalidInputError(
            f"cannot save a figure as {out.name!r} (suffix {out.suffix or 'missing'}): "
            "use a .png, .svg or .pdf path"
        )
    if not (isinstance(dpi, (int, float)) and math.isfinite(dpi) and dpi > 0):
        raise InvalidInputError(f"dpi must be a positive number, got {dpi!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(SAVE_STYLE):
        fig.savefig(out, format=fmt, dpi=dpi, metadata=SAVE_METADATA[fmt])
    return out
