"""Interactive (Plotly) figures of how fedge's models train, shrink, run and deploy.

Each ``*_figure`` function takes plain data or fedge records and returns a
:class:`plotly.graph_objects.Figure` with a title; bad input raises
:class:`fedge.errors.InvalidInputError` saying what was wrong. The input normalisation
(``_rounds_data``, ``_candidates``, ``_latency``, ...) is shared with the static matplotlib
figures of :mod:`fedge.visualization.static`, so both draw the same numbers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.visualization._common import (
    check_finite,
    check_same_length,
    colour,
    finite_or_none,
    non_empty,
    require_plotly,
    table_keys,
)

if TYPE_CHECKING:
    from fedge.federated.history import History

__all__ = [
    "federated_rounds_figure",
    "footprint_figure",
    "latency_distribution_figure",
    "load_history",
    "metric_comparison_figure",
    "pareto_front",
    "pareto_front_figure",
    "parity_matrix_figure",
    "training_history_figure",
]

HistoryLike = Any  # History | Mapping[str, Any] | str | os.PathLike[str]

#: Participation bars: accepted (bluish green), rejected (vermilion), failed (orange).
PARTICIPATION = (("accepted", colour(2)), ("rejected", colour(3)), ("failed", colour(1)))
EPSILON_COLOUR = colour(7)

#: Export parity status classes, their heatmap code and colour (missing cells stay blank).
STATUS_CODES = {"failed": 0, "refused": 1, "verified": 2}
STATUS_COLOURS = {"failed": colour(3), "refused": "#BBBBBB", "verified": colour(2)}

#: Log scale is chosen automatically when the largest value exceeds the smallest this many times.
LOG_SPREAD = 100.0


# ----------------------------------------------------------------------------- normalisation


def load_history(history: HistoryLike) -> History:
    """A federated :class:`~fedge.federated.History` from a History, its mapping or a JSON path.

    Parameters
    ----------
    history : History, Mapping or path-like
        A history, the mapping of :meth:`History.as_dict`, or the path of a JSON file written
        by :meth:`History.save`.

    Returns
    -------
    History
        The history, with at least one round.

    Raises
    ------
    InvalidInputError
        When the input is of another type, the file is missing or not a history, or the
        history has no rounds.
    """
    from fedge.federated.history import History

    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise InvalidInputError(
                f"no federated history at {path}: pass the JSON written by History.save"
            ) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(
                f"cannot read a federated history from {path}: {exc}"
            ) from exc
        history = data
    if isinstance(history, Mapping):
        try:
            history = History.from_dict(history)
        except (TypeError, KeyError, ValueError) as exc:
            raise InvalidInputError(
                f"not a federated history mapping ({exc}): pass History.as_dict() or its JSON"
            ) from exc
    if not isinstance(history, History):
        raise InvalidInputError(
            f"expected a federated History, its as_dict() mapping or a JSON path, "
            f"got {type(history).__name__}"
        )
    if not history.rounds:
        raise InvalidInputError(
            "the federated history has no rounds: nothing to plot (run at least one round)"
        )
    return history


@dataclass(frozen=True)
class _RoundsData:
    """A history's rounds as arrays: what both federated-rounds figures draw."""

    rounds: np.ndarray
    metrics: dict[str, np.ndarray]  # NaN where a round did not record the metric
    epsilon: np.ndarray | None  # None when no round used differential privacy
    accepted: np.ndarray
    rejected: np.ndarray
    failed: np.ndarray


def _metric_names(metrics: str | Sequence[str]) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        if not isinstance(name, str):
            raise InvalidInputError(f"metric names must be strings, got {name!r}")
    return names


def _rounds_data(history: HistoryLike, metrics: str | Sequence[str]) -> _RoundsData:
    hist = load_history(history)
    names = _metric_names(metrics)
    available = sorted({k for r in hist.rounds for k in r.metrics})
    for name in names:
        if name not in available:
            listed = ", ".join(available) if available else "none"
            raise InvalidInputError(
                f"metric {name!r} is in no round of the federated history; "
                f"available metrics: {listed}"
            )
    values = {
        name: check_finite(f"metric {name!r}", hist.metric(name), allow_nan=True)
        for name in names
    }
    eps = [finite_or_none(r.epsilon) for r in hist.rounds]
    epsilon = (
        None
        if all(e is None for e in eps)
        else np.array([math.nan if e is None else e for e in eps], dtype=float)
    )
    return _RoundsData(
        rounds=np.array([r.round for r in hist.rounds], dtype=int),
        metrics=values,
        epsilon=epsilon,
        accepted=np.array([r.accepted for r in hist.rounds], dtype=int),
        rejected=np.array([r.rejected for r in hist.rounds], dtype=int),
        failed=np.array([r.failed for r in hist.rounds], dtype=int),
    )


def _training_series(
    train: Sequence[float], validation: Sequence[float] | None, x: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    series: dict[str, Sequence[float]] = {"train": train}
    if validation is not None:
        series["validation"] = validation
    if x is not None:
        series["x"] = x
    n = check_same_length("training history", **series)
    xs = np.arange(1, n + 1) if x is None else check_finite("training history x", x)
    tr = check_finite("training values", train, allow_nan=True)
    va = None if validation is None else check_finite(
        "validation values", validation, allow_nan=True
    )
    return xs, tr, va


@dataclass(frozen=True)
class _Latency:
    """One backend's latency samples and their percentiles."""

    name: str
    samples: np.ndarray
    p50: float
    p95: float
    p99: float


def _latency(samples: Mapping[str, Sequence[float]]) -> list[_Latency]:
    if not isinstance(samples, Mapping):
        raise InvalidInputError(
            "latency samples must be a mapping of backend name to its measured latencies"
        )
    non_empty("latency samples", samples)
    out = []
    for name, values in samples.items():
        arr = check_finite(f"latencies of {name!r}", values)
        if arr.ndim != 1:
            raise InvalidInputError(f"latencies of {name!r} must be a flat sequence of numbers")
        non_empty(f"latencies of {name!r}", arr)
        if (arr < 0).any():
            raise InvalidInputError(
                f"latencies of {name!r} hold negative values: a latency is a duration >= 0"
            )
        p50, p95, p99 = (float(v) for v in np.percentile(arr, [50, 95, 99]))
        out.append(_Latency(str(name), arr, p50, p95, p99))
    return out


def _use_log(what: str, values: np.ndarray, log: bool | None) -> bool:
    """Whether an axis over ``values`` is logarithmic: ``log``, or automatic by spread."""
    positive = values[values > 0]
    if log is None:
        return (
            positive.size == values.size
            and positive.size > 0
            and positive.max() > LOG_SPREAD * positive.min()
        )
    if log and positive.size < values.size:
        raise InvalidInputError(
            f"{what} hold values <= 0, which a log axis cannot show: pass log=False"
        )
    return bool(log)


def _metric_table(
    results: Mapping[str, Mapping[str, float]],
) -> tuple[list[str], list[str], np.ndarray]:
    """Names, metrics (in first-seen order) and a names x metrics array (NaN where missing)."""
    names, metrics = table_keys("metric results", results, "name", "metric")
    table = np.full((len(names), len(metrics)), math.nan)
    for i, row in enumerate(results.values()):
        for metric, value in row.items():
            try:
                v = finite_or_none(value)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"results[{names[i]!r}][{metric!r}] must be a number, got {value!r}"
                ) from exc
            if v is not None and math.isinf(v):
                raise InvalidInputError(
                    f"results[{names[i]!r}][{metric!r}] is infinite: plot measured values"
                )
            table[i, metrics.index(str(metric))] = math.nan if v is None else v
    return names, metrics, table


@dataclass(frozen=True)
class _Point:
    """One compression candidate: what it is, its size and its score."""

    label: str
    passes: tuple[str, ...]
    bytes: float
    score: float


def _point(item: Any, where: str) -> _Point:
    if isinstance(item, _Point):
        return item
    if isinstance(item, Mapping):
        get = item.get
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        size, score = item
        get = {"bytes": size, "score": score}.get
    elif hasattr(item, "bytes") and hasattr(item, "score"):
        def get(key: str, default: Any = None) -> Any:
            return getattr(item, key, default)
    else:
        raise InvalidInputError(
            f"{where} must be a Candidate, a mapping with 'bytes' and 'score', or a "
            f"(bytes, score) pair; got {type(item).__name__}"
        )
    size, score = get("bytes"), get("score")
    if size is None or score is None:
        raise InvalidInputError(f"{where} needs both 'bytes' and 'score'")
    try:
        size, score = float(size), float(score)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where}: 'bytes' and 'score' must be numbers") from exc
    if not (math.isfinite(size) and math.isfinite(score)):
        raise InvalidInputError(f"{where} has a non-finite size or score: plot measured values")
    if size < 0:
        raise InvalidInputError(f"{where} has a negative size ({size:g} bytes)")
    passes = tuple(str(p) for p in (get("passes") or ()))
    label = get("label")
    label = str(label) if label is not None else (" + ".join(passes) or "no passes")
    return _Point(label, passes, size, score)


def _points(items: Any, what: str) -> list[_Point]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidInputError(f"{what} must be a sequence of candidates")
    return [_point(item, f"{what}[{i}]") for i, item in enumerate(items)]


def pareto_front(points: Sequence[Any]) -> list[int]:
    """Indices of the size/score Pareto front, smallest first.

    The rule is AutoCompress's: sort by size (ties: best score first), then keep a point
    when it scores strictly more than every smaller point kept before it.

    Parameters
    ----------
    points : sequence
        Candidates (:class:`~fedge.compression.search.Candidate`), mappings with ``bytes``
        and ``score``, or ``(bytes, score)`` pairs.

    Returns
    -------
    list of int
        Indices into ``points`` of the front, in increasing size.

    Examples
    --------
    >>> pareto_front([(100, 0.9), (50, 0.8), (200, 0.85), (10, 0.5)])
    [3, 1, 0]
    """
    pts = _points(points, "points")
    order = sorted(range(len(pts)), key=lambda i: (pts[i].bytes, -pts[i].score, i))
    front: list[int] = []
    for i in order:
        if not front or pts[i].score > pts[front[-1]].score:
            front.append(i)
    return front


@dataclass(frozen=True)
class _Candidates:
    points: list[_Point]
    front: list[_Point]
    baseline: _Point | None
    metric: str


def _candidates(
    candidates: Any, baseline: Any = None, front: Any = None, metric: str | None = None
) -> _Candidates:
    """Every candidate, the front (given or computed) and the baseline, normalised."""
    if all(hasattr(candidates, a) for a in ("candidates", "front", "baseline")):
        result = candidates  # a SearchResult
        candidates = list(result.candidates)
        baseline = result.baseline if baseline is None else baseline
        front = list(result.front) if front is None else front
        metric = metric or getattr(result, "metric", None)
    points = _points(candidates, "candidates")
    non_empty("compression candidates", points)
    if front is None:
        front_points = [points[i] for i in pareto_front(points)]
    else:
        items = list(front)
        if items and all(isinstance(i, (int, np.integer)) for i in items):
            bad = [i for i in items if not 0 <= i < len(points)]
            if bad:
                raise InvalidInputError(
                    f"front indices {bad} are outside the {len(points)} candidates"
                )
            front_points = [points[int(i)] for i in items]
        else:
            front_points = _points(items, "front")
        front_points = sorted(front_points, key=lambda p: p.bytes)
    base = None if baseline is None else _point(baseline, "baseline")
    return _Candidates(points, front_points, base, metric or "score")


_FOOTPRINT_KEYS = ("flash_bytes", "ram_bytes", "flash_budget", "ram_budget")


@dataclass(frozen=True)
class _Footprint:
    """A model's footprint on one target (None: not measured)."""

    target: str
    flash: float | None
    ram: float | None
    flash_budget: float | None
    ram_budget: float | None
    fits: bool | None
    status: str


def _footprints(rows: Sequence[Any]) -> list[_Footprint]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise InvalidInputError("footprint rows must be a sequence of DeviceRow or mappings")
    non_empty("footprint rows", rows)
    out: list[_Footprint] = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            get = row.get
        elif hasattr(row, "target"):
            def get(key: str, default: Any = None, row: Any = row) -> Any:
                return getattr(row, key, default)
        else:
            raise InvalidInputError(
                f"footprint rows[{i}] must be a DeviceRow or a mapping, got {type(row).__name__}"
            )
        target = get("target")
        if not target:
            raise InvalidInputError(f"footprint rows[{i}] has no 'target'")
        sizes = {}
        for key in _FOOTPRINT_KEYS:
            try:
                value = finite_or_none(get(key))
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"footprint of {target!r}: {key} must be a number of bytes or None"
                ) from exc
            if value is not None and (math.isinf(value) or value < 0):
                raise InvalidInputError(
                    f"footprint of {target!r}: {key} = {value} is not a size in bytes"
                )
            sizes[key] = value
        fits = get("fits")
        out.append(
            _Footprint(
                str(target), sizes["flash_bytes"], sizes["ram_bytes"], sizes["flash_budget"],
                sizes["ram_budget"], None if fits is None else bool(fits),
                str(get("status") or ("ok" if sizes["flash_bytes"] is not None else "no size")),
            )
        )
    targets = [r.target for r in out]
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise InvalidInputError(f"footprint rows repeat targets {dupes}: give one row a target")
    return out


def _budget_text(size: float | None, budget: float | None) -> str:
    if size is None:
        return "not measured"
    if budget is None or budget <= 0:
        return f"{size:,.0f} B (no budget)"
    return f"{size:,.0f} B = {100 * size / budget:.1f}% of {budget:,.0f} B"


def _status_class(status: str) -> str:
    """``verified``, ``failed`` (mismatch, failure, error) or ``refused`` (anything else)."""
    text = status.strip().lower()
    if text.startswith("verified"):
        return "verified"
    if any(word in text for word in ("mismatch", "fail", "error")):
        return "failed"
    return "refused"


def _short_status(status: str) -> str:
    return status.split(":", 1)[0].strip()


def _parity_table(
    matrix: Mapping[str, Mapping[str, str]],
) -> tuple[list[str], list[str], list[list[int | None]], list[list[str]]]:
    """Models, formats, status codes (None: missing) and full status texts ('' when missing)."""
    models, formats = table_keys("parity matrix", matrix, "model", "format")
    codes: list[list[int | None]] = []
    texts: list[list[str]] = []
    for model, row in matrix.items():
        row_codes: list[int | None] = []
        row_texts: list[str] = []
        lookup = {str(k): v for k, v in row.items()}
        for fmt in formats:
            status = lookup.get(fmt)
            if status is None or status == "":
                row_codes.append(None)
                row_texts.append("")
                continue
            if not isinstance(status, str):
                raise InvalidInputError(
                    f"parity matrix[{model!r}][{fmt!r}] must be a status string, got {status!r}"
                )
            row_codes.append(STATUS_CODES[_status_class(status)])
            row_texts.append(status)
        codes.append(row_codes)
        texts.append(row_texts)
    return models, formats, codes, texts


# ----------------------------------------------------------------------------- figures


def _title(fig: Any, title: str) -> Any:
    fig.update_layout(title={"text": title, "x": 0.02, "xanchor": "left"}, template="plotly_white")
    return fig


def federated_rounds_figure(
    history: HistoryLike,
    metrics: str | Sequence[str] = ("accuracy",),
    title: str = "Federated training, round by round",
) -> Any:
    """The metrics, privacy spent and client participation of a federated run, per round.

    Parameters
    ----------
    history : History, Mapping or path-like
        The run's :class:`~fedge.federated.History`, its ``as_dict()`` mapping, or the path
        of the JSON written by :meth:`History.save`.
    metrics : str or sequence of str, default ("accuracy",)
        Metrics of ``RoundRecord.metrics`` to draw as lines (rounds without them are gaps).
    title : str
        The figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Row 1: one line per metric, and epsilon spent (dashed, right axis) when the run used
        differential privacy; row 2: accepted / rejected / failed clients as stacked bars.
        Hover is unified per round.

    Raises
    ------
    InvalidInputError
        When the history has no rounds or a metric is in no round (the message lists the
        metrics the history has).
    """
    go = require_plotly()
    from plotly.subplots import make_subplots

    data = _rounds_data(history, metrics)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06,
        specs=[[{"secondary_y": True}], [{"secondary_y": False}]],
    )
    for i, (name, values) in enumerate(data.metrics.items()):
        fig.add_trace(
            go.Scatter(
                x=data.rounds, y=values, name=name, mode="lines+markers",
                line={"color": colour(i)}, hovertemplate="%{y:.4g}",
            ),
            row=1, col=1, secondary_y=False,
        )
    if data.epsilon is not None:
        fig.add_trace(
            go.Scatter(
                x=data.rounds, y=data.epsilon, name="epsilon spent", mode="lines",
                line={"color": EPSILON_COLOUR, "dash": "dash"}, hovertemplate="%{y:.3f}",
            ),
            row=1, col=1, secondary_y=True,
        )
        fig.update_yaxes(title_text="epsilon (ε) spent", row=1, col=1, secondary_y=True,
                         range=[0, 1.05 * float(np.nanmax(data.epsilon))], tickmode="auto",
                         showgrid=False)
    for name, col in PARTICIPATION:
        fig.add_trace(
            go.Bar(
                x=data.rounds, y=getattr(data, name), name=name, marker={"color": col},
                legendgroup="clients", hovertemplate="%{y}",
            ),
            row=2, col=1,
        )
    fig.update_yaxes(title_text=", ".join(data.metrics) or "metric", row=1, col=1,
                     secondary_y=False)
    fig.update_yaxes(title_text="clients", row=2, col=1)
    fig.update_xaxes(title_text="round", row=2, col=1, dtick=1 if len(data.rounds) <= 20 else None)
    fig.update_layout(barmode="stack", hovermode="x unified",
                      legend={"x": 1.08, "xanchor": "left", "y": 1.0, "yanchor": "top"})
    return _title(fig, title)


def training_history_figure(
    train: Sequence[float],
    validation: Sequence[float] | None = None,
    metric: str = "loss",
    x: Sequence[float] | None = None,
    title: str | None = None,
) -> Any:
    """Training (and validation) curves of one metric.

    Parameters
    ----------
    train : sequence of float
        The metric on the training data, one value per epoch (NaN: not recorded).
    validation : sequence of float, optional
        The metric on validation data, as long as ``train``.
    metric : str, default "loss"
        The metric's name (y axis and title).
    x : sequence of float, optional
        The x of each value (default: epochs 1, 2, ...), as long as ``train``.
    title : str, optional
        The figure title (default: "<metric> per epoch").

    Returns
    -------
    plotly.graph_objects.Figure
        One line "train", and one "validation" when given.

    Raises
    ------
    InvalidInputError
        When the series are empty, of different lengths, or hold Inf.
    """
    go = require_plotly()
    xs, tr, va = _training_series(train, validation, x)
    fig = go.Figure()
    for i, (name, values) in enumerate((("train", tr), ("validation", va))):
        if values is not None:
            fig.add_trace(go.Scatter(
                x=xs, y=values, name=name, mode="lines+markers", line={"color": colour(i)},
                hovertemplate=f"{name} {metric}: %{{y:.4g}}<extra></extra>",
            ))
    fig.update_layout(xaxis_title="epoch" if x is None else "step", yaxis_title=metric,
                      hovermode="x unified")
    return _title(fig, title or f"{metric} per epoch")


def latency_distribution_figure(
    samples: Mapping[str, Sequence[float]],
    unit: str = "µs",
    kind: str = "violin",
    log: bool | None = None,
    title: str = "Single-row latency per backend",
) -> Any:
    """The latency distribution of each backend as a violin or box, with every sample.

    Parameters
    ----------
    samples : Mapping[str, sequence of float]
        Backend name to its measured latencies (finite, >= 0).
    unit : str, default "µs"
        The unit of the samples (axis title and hover).
    kind : {"violin", "box"}
        Violins (with an inner box) or boxes.
    log : bool, optional
        Logarithmic y axis; by default chosen when the largest sample exceeds the smallest
        100 times.
    title : str
        The figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One trace per backend, named with its p50 and p99; hover shows the box statistics and
        each point.

    Raises
    ------
    InvalidInputError
        When there are no backends or samples, a sample is NaN/Inf/negative, or ``kind`` is
        unknown.
    """
    go = require_plotly()
    if kind not in ("violin", "box"):
        raise InvalidInputError(f"kind must be 'violin' or 'box', got {kind!r}")
    stats = _latency(samples)
    use_log = _use_log("latencies", np.concatenate([s.samples for s in stats]), log)
    fig = go.Figure()
    for i, s in enumerate(stats):
        name = f"{s.name} (p50 {s.p50:.3g} {unit}, p99 {s.p99:.3g} {unit})"
        hover = f"{s.name}: %{{y:.4g}} {unit}<extra></extra>"
        common = {"y": s.samples, "x0": s.name, "name": name, "hovertemplate": hover,
                  "marker": {"color": colour(i), "size": 3}, "line": {"color": colour(i)}}
        if kind == "violin":
            fig.add_trace(go.Violin(
                **common, box={"visible": True}, meanline={"visible": True}, points="all",
                jitter=0.3, pointpos=0, hoveron="violins+points", spanmode="hard",
            ))
        else:
            fig.add_trace(go.Box(**common, boxpoints="all", jitter=0.3, pointpos=0,
                                 hoveron="boxes+points"))
    fig.update_layout(yaxis_title=f"latency ({unit})", xaxis_title="backend",
                      yaxis_type="log" if use_log else "linear")
    return _title(fig, title)


def metric_comparison_figure(
    results: Mapping[str, Mapping[str, float]],
    title: str = "Metrics by model",
    kind: str = "bar",
) -> Any:
    """Several metrics of several models side by side.

    Parameters
    ----------
    results : Mapping[str, Mapping[str, float]]
        Name (model, configuration) to ``{metric: value}``; a missing or None value is a gap.
    title : str
        The figure title.
    kind : {"bar", "dot"}
        Grouped bars, or a dot plot (one marker per name and metric).

    Returns
    -------
    plotly.graph_objects.Figure
        One trace per metric with the names on x; hover shows each value.

    Raises
    ------
    InvalidInputError
        When ``results`` is empty, names no metric, or holds a value that is not a number.
    """
    go = require_plotly()
    if kind not in ("bar", "dot"):
        raise InvalidInputError(f"kind must be 'bar' or 'dot', got {kind!r}")
    names, metrics, table = _metric_table(results)
    fig = go.Figure()
    for j, metric in enumerate(metrics):
        hover = f"%{{x}}<br>{metric}: %{{y:.4g}}<extra></extra>"
        if kind == "bar":
            fig.add_trace(go.Bar(
                x=names, y=table[:, j], name=metric, marker={"color": colour(j)},
                hovertemplate=hover, texttemplate="%{y:.3g}", textposition="outside",
            ))
        else:
            fig.add_trace(go.Scatter(
                x=names, y=table[:, j], name=metric, mode="markers",
                marker={"color": colour(j), "size": 10}, hovertemplate=hover,
            ))
    fig.update_layout(barmode="group", yaxis_title="value", hovermode="closest")
    return _title(fig, title)


def pareto_front_figure(
    candidates: Any,
    baseline: Any = None,
    front: Sequence[Any] | None = None,
    metric: str | None = None,
    log_x: bool = True,
    title: str = "Compression: size against score",
) -> Any:
    """Every compression candidate's size against its score, with the Pareto front.

    Parameters
    ----------
    candidates : SearchResult or sequence
        An :func:`~fedge.compression.auto_compress` result, or a sequence of
        :class:`~fedge.compression.search.Candidate` or of mappings with ``bytes``,
        ``score`` and ``label`` or ``passes``.
    baseline : Candidate or mapping, optional
        The uncompressed model, marked with a star (default: the SearchResult's).
    front : sequence, optional
        The front, as candidates or as indices into ``candidates`` (default: the
        SearchResult's, else computed by :func:`pareto_front`).
    metric : str, optional
        The score's name for the y axis (default: the SearchResult's, else "score").
    log_x : bool, default True
        Logarithmic size axis.
    title : str
        The figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces "candidates" (points; hover: passes, bytes, score), "Pareto front" (a step
        line) and "baseline" when given.

    Raises
    ------
    InvalidInputError
        When there are no candidates, a size or score is missing or not finite, or a size is
        not positive on a log axis.
    """
    go = require_plotly()
    data = _candidates(candidates, baseline, front, metric)
    everything = data.points + data.front + ([data.baseline] if data.baseline else [])
    if log_x:
        _use_log("candidate sizes", np.array([p.bytes for p in everything]), True)

    def hover(points: list[_Point]) -> dict[str, Any]:
        return {
            "customdata": [[p.label] for p in points],
            "hovertemplate": (
                "%{customdata[0]}<br>%{x:,.0f} bytes<br>"
                f"{data.metric}: %{{y:.4f}}<extra></extra>"
            ),
        }

    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[p.bytes for p in data.points], y=[p.score for p in data.points], name="candidates",
        mode="markers", marker={"color": colour(0), "size": 7, "opacity": 0.7},
        **hover(data.points),
    ))
    fig.add_trace(go.Scatter(
        x=[p.bytes for p in data.front], y=[p.score for p in data.front], name="Pareto front",
        mode="lines+markers", line={"shape": "hv", "color": colour(3)},
        marker={"color": colour(3), "size": 8}, **hover(data.front),
    ))
    if data.baseline is not None:
        fig.add_trace(go.Scatter(
            x=[data.baseline.bytes], y=[data.baseline.score], name="baseline", mode="markers",
            marker={"symbol": "star", "size": 15, "color": colour(7)},
            **hover([data.baseline]),
        ))
    fig.update_layout(xaxis_title="size (bytes)", yaxis_title=data.metric,
                      xaxis_type="log" if log_x else "linear", hovermode="closest")
    return _title(fig, title)


def footprint_figure(rows: Sequence[Any], title: str = "Model footprint per device") -> Any:
    """Flash and RAM of a model on each device target, against the target's budget.

    Parameters
    ----------
    rows : sequence of DeviceRow or Mapping
        One row per target with ``target``, ``flash_bytes``, ``ram_bytes``, ``flash_budget``,
        ``ram_budget`` and optionally ``fits`` and ``status``; None sizes (not measured, tool
        missing) are drawn as annotated gaps.
    title : str
        The figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Bars "flash" and "RAM" (log y) grouped per target, and markers "flash budget" and
        "RAM budget" over each bar; hover gives the fraction of the budget used.

    Raises
    ------
    InvalidInputError
        When there are no rows, a row has no target or a size that is not a byte count, or two
        rows name the same target.
    """
    go = require_plotly()
    data = _footprints(rows)
    targets = [r.target for r in data]
    fig = go.Figure()
    for j, (kind, label) in enumerate((("flash", "flash"), ("ram", "RAM"))):
        sizes = [getattr(r, kind) for r in data]
        budgets = [getattr(r, f"{kind}_budget") for r in data]
        text = [
            f"{r.target}<br>{label}: {_budget_text(s, b)}<br>status: {r.status}"
            + ("" if r.fits is None else f"<br>fits: {'yes' if r.fits else 'no'}")
            for r, s, b in zip(data, sizes, budgets, strict=True)
        ]
        fig.add_trace(go.Bar(
            x=targets, y=sizes, name=label, marker={"color": colour(j)}, offsetgroup=kind,
            customdata=[[t] for t in text], hovertemplate="%{customdata[0]}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(
            x=targets, y=budgets, name=f"{label} budget", mode="markers", offsetgroup=kind,
            marker={"symbol": "line-ew-open", "size": 24, "color": colour(j),
                    "line": {"width": 3, "color": colour(j)}},
            hovertemplate=f"%{{x}}<br>{label} budget: %{{y:,.0f}} B<extra></extra>",
        ))
    for r in data:
        missing = [name for name, v in (("flash", r.flash), ("RAM", r.ram)) if v is None]
        if missing:
            fig.add_annotation(
                x=r.target, yref="paper", y=0.02, yanchor="bottom", showarrow=False,
                text=f"no {' / '.join(missing)} size:<br>{r.status}", font={"size": 10},
            )
    fig.update_layout(barmode="group", scattermode="group", yaxis_type="log",
                      yaxis_title="bytes", xaxis_title="target", hovermode="closest")
    return _title(fig, title)


def parity_matrix_figure(
    matrix: Mapping[str, Mapping[str, str]],
    title: str = "Export parity by model and format",
) -> Any:
    """Which model verified in which format: a models x formats status heatmap.

    Parameters
    ----------
    matrix : Mapping[str, Mapping[str, str]]
        Model name to ``{format: status}``, statuses as the demo writes them ("verified",
        "refused: <why>", "MISMATCH", "FAILED: <why>").
    title : str
        The figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One heatmap: z codes 2 = verified (green), 1 = refused or another non-failure (grey),
        0 = mismatch/failed/error (red), None = missing (blank); cells show the status's first
        word and hover its full text.

    Raises
    ------
    InvalidInputError
        When the matrix is empty, names no format, or holds a status that is not a string.
    """
    go = require_plotly()
    models, formats, codes, texts = _parity_table(matrix)
    scale = [
        [0.0, STATUS_COLOURS["failed"]], [1 / 3, STATUS_COLOURS["failed"]],
        [1 / 3, STATUS_COLOURS["refused"]], [2 / 3, STATUS_COLOURS["refused"]],
        [2 / 3, STATUS_COLOURS["verified"]], [1.0, STATUS_COLOURS["verified"]],
    ]
    fig = go.Figure(go.Heatmap(
        z=codes, x=formats, y=models, zmin=-0.5, zmax=2.5, colorscale=scale, showscale=False,
        text=[[_short_status(t) for t in row] for row in texts], texttemplate="%{text}",
        customdata=texts, hovertemplate="%{y} → %{x}<br>%{customdata}<extra></extra>",
        xgap=2, ygap=2, hoverongaps=False,
    ))
    fig.update_layout(xaxis_title="format", yaxis={"autorange": "reversed", "title": "model"},
                      xaxis_side="top")
    return _title(fig, title)
