"""The static (matplotlib) figures draw the given numbers and save deterministically."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from fedge.errors import InvalidInputError
from fedge.federated.history import History, RoundRecord
from fedge.visualization import static as st


def _round(i, accepted, rejected, epsilon, metrics):
    return RoundRecord(
        round=i, selected=accepted + rejected, accepted=accepted, rejected=rejected, failed=0,
        mean_update_norm=0.1, max_update_norm=0.2, epsilon=epsilon, seconds=0.5,
        metrics=metrics,
    )


@pytest.fixture
def history() -> History:
    return History(rounds=[
        _round(1, 5, 0, 0.5, {"accuracy": 0.70, "loss": 0.9}),
        _round(2, 4, 1, 0.7, {"accuracy": 0.80, "loss": 0.6}),
        _round(3, 5, 0, 0.9, {"accuracy": 0.84, "loss": 0.5}),
    ])


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _heights(container) -> list[float]:
    return [patch.get_height() for patch in container]


# ----------------------------------------------------------------------------- figures


def test_federated_rounds_axes_and_data(history, tmp_path):
    fig = st.federated_rounds(history, metrics=("accuracy", "loss"), title="run")
    assert isinstance(fig, Figure)
    ax, bars, eps = fig.axes  # metrics, participation, epsilon twin
    assert len(fig.axes) == 3
    assert [line.get_label() for line in ax.lines] == ["accuracy", "loss"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), history.metric("accuracy"))
    np.testing.assert_allclose(ax.lines[1].get_ydata(), history.metric("loss"))
    np.testing.assert_allclose(eps.lines[0].get_ydata(), [0.5, 0.7, 0.9])
    assert eps.lines[0].get_linestyle() == "--"
    accepted, rejected, failed = bars.containers
    assert _heights(accepted) == [5, 4, 5]
    assert _heights(rejected) == [0, 1, 0]
    assert [p.get_y() for p in rejected] == [5, 4, 5]  # stacked on the accepted
    assert _heights(failed) == [0, 0, 0]
    assert ax.get_title(loc="left") == "run"
    # the same figure from the saved JSON
    history.save(tmp_path / "h.json")
    again = st.federated_rounds(tmp_path / "h.json")
    np.testing.assert_allclose(again.axes[0].lines[0].get_ydata(), [0.70, 0.80, 0.84])


def test_federated_rounds_without_privacy_has_two_axes():
    plain = History(rounds=[_round(1, 2, 0, None, {"accuracy": 0.6})])
    assert len(st.federated_rounds(plain).axes) == 2


def test_federated_rounds_bad_input(history):
    with pytest.raises(InvalidInputError, match="has no rounds"):
        st.federated_rounds(History())
    with pytest.raises(InvalidInputError, match="available metrics: accuracy, loss"):
        st.federated_rounds(history, metrics="f1")


def test_publication_style(history):
    fig = st.federated_rounds(history)
    ax = fig.axes[0]
    assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
    assert fig.axes[2].spines["right"].get_visible()  # the epsilon axis keeps its spine
    assert ax.yaxis.label.get_fontsize() == st.STYLE["axes.labelsize"]
    assert ax.get_yticklabels()[0].get_fontsize() == st.STYLE["ytick.labelsize"]
    assert tuple(fig.get_size_inches()) == (st.SINGLE_COLUMN, 3.2)
    assert fig.get_layout_engine() is not None
    wide = st.metric_comparison({"a": {"x": 1.0}}, figsize="double")
    assert fig.get_size_inches()[0] == 3.5 and wide.get_size_inches()[0] == 7.1
    assert tuple(st.metric_comparison({"a": {"x": 1.0}}, figsize=(5, 2)).get_size_inches()) \
        == (5, 2)
    with pytest.raises(InvalidInputError, match="figsize must be"):
        st.metric_comparison({"a": {"x": 1.0}}, figsize="poster")


def test_no_pyplot_state_leaks(history):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    st.federated_rounds(history)
    st.latency_distribution({"a": [1.0, 2.0]})
    assert plt.get_fignums() == before


def test_training_history_lines():
    fig = st.training_history([1.0, 0.5, 0.3], [1.2, 0.7, 0.6], metric="loss")
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 0.5, 0.3])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.2, 0.7, 0.6])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    with pytest.raises(InvalidInputError, match="different lengths"):
        st.training_history([1.0, 2.0], [1.0])


LATENCY = {"numpy": [12.0, 15.0, 11.0, 40.0, 13.0], "c": [0.9, 1.1, 1.0, 1.2]}


@pytest.mark.parametrize("kind", ["violin", "box"])
def test_latency_distribution(kind):
    fig = st.latency_distribution(LATENCY, kind=kind)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(lines["p50"].get_ydata(),
                               [np.percentile(v, 50) for v in LATENCY.values()])
    np.testing.assert_allclose(lines["p99"].get_ydata(),
                               [np.percentile(v, 99) for v in LATENCY.values()])
    np.testing.assert_array_equal(lines["p50"].get_xdata(), [1, 2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["numpy", "c"]
    assert ax.get_yscale() == "linear"
    if kind == "violin":
        bodies = ax.collections
        assert len(bodies) == 2
        for body, values in zip(bodies, LATENCY.values(), strict=True):
            ys = body.get_paths()[0].vertices[:, 1]
            assert ys.min() == pytest.approx(min(values)) and ys.max() == pytest.approx(max(values))


def test_latency_log_scale_and_constant_samples():
    fig = st.latency_distribution({"python": [400.0, 900.0, 500.0], "c": [1.0, 2.0, 1.5],
                                   "const": [3.0, 3.0]})
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.collections) == 2  # no density for a constant backend, only its markers
    # on a log axis the density is estimated in log space and still spans the samples
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(400.0) and ys.max() == pytest.approx(900.0)
    assert st.latency_distribution({"a": [1.0, 500.0]}, log=False).axes[0].get_yscale() \
        == "linear"


def test_latency_bad_input():
    with pytest.raises(InvalidInputError, match=r"latencies of 'c' holds 1 non-finite"):
        st.latency_distribution({"c": [1.0, math.nan]})
    with pytest.raises(InvalidInputError, match="kind must be"):
        st.latency_distribution(LATENCY, kind="ridge")


RESULTS = {"forest": {"accuracy": 0.95, "f1": 0.94}, "logistic": {"accuracy": 0.91}}


def test_metric_comparison_bars_and_dots():
    (ax,) = st.metric_comparison(RESULTS).axes
    acc, f1 = ax.containers
    assert _heights(acc) == [0.95, 0.91]
    np.testing.assert_allclose(_heights(f1), [0.94, math.nan])
    assert acc[0].get_x() < f1[0].get_x()  # grouped side by side
    assert [t.get_text() for t in ax.get_xticklabels()] == ["forest", "logistic"]
    (dots,) = st.metric_comparison(RESULTS, kind="dot").axes
    np.testing.assert_allclose(dots.lines[0].get_ydata(), [0.95, 0.91])
    with pytest.raises(InvalidInputError, match="metric results is empty"):
        st.metric_comparison({})


def test_pareto_front():
    points = [{"label": "a", "bytes": 100, "score": 0.9}, {"label": "b", "bytes": 50,
              "score": 0.8}, {"label": "c", "bytes": 200, "score": 0.85}]
    fig = st.pareto_front(points, baseline={"bytes": 1000, "score": 0.92}, metric="accuracy")
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.collections[0].get_offsets(),
                               [[100, 0.9], [50, 0.8], [200, 0.85]])
    front, base = ax.lines
    assert front.get_label() == "Pareto front" and front.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(front.get_xdata(), [50, 100])
    np.testing.assert_allclose(front.get_ydata(), [0.8, 0.9])
    np.testing.assert_allclose(base.get_xdata(), [1000])
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "accuracy"
    with pytest.raises(InvalidInputError, match="compression candidates is empty"):
        st.pareto_front([])


FOOTPRINT = [
    {"target": "arduino-uno", "flash_bytes": 20000, "ram_bytes": 500, "flash_budget": 32768,
     "ram_budget": 2048, "status": "ok"},
    {"target": "rv32", "flash_bytes": None, "ram_bytes": None, "flash_budget": 65536,
     "ram_budget": 16384, "status": "tool missing"},
]


def test_footprint():
    (ax,) = st.footprint(FOOTPRINT).axes
    flash, ram = ax.containers
    np.testing.assert_allclose(_heights(flash), [20000, math.nan])
    np.testing.assert_allclose(_heights(ram), [500, math.nan])
    budgets = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(budgets["flash budget"].get_ydata(), [32768, 65536])
    np.testing.assert_allclose(budgets["RAM budget"].get_ydata(), [2048, 16384])
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["n/a: tool missing"]
    with pytest.raises(InvalidInputError, match="repeat targets"):
        st.footprint([FOOTPRINT[0], FOOTPRINT[0]])


def test_parity_matrix():
    fig = st.parity_matrix({"forest": {"onnx": "verified", "tflite": "refused: trees"},
                            "logistic": {"onnx": "MISMATCH"}})
    (ax,) = fig.axes
    z = ax.images[0].get_array()
    assert z.tolist() == [[2, 1], [0, None]]  # masked where missing
    assert [t.get_text() for t in ax.texts] == ["verified", "refused", "MISMATCH"]


# ----------------------------------------------------------------------------- saving


def test_png_has_figsize_times_dpi_pixels(history, tmp_path):
    fig = st.federated_rounds(history, figsize=(3.5, 2.0))
    assert _png_size(st.save_figure(fig, tmp_path / "a.png", dpi=100)) == (350, 200)
    assert _png_size(st.save_figure(fig, tmp_path / "b.png")) == (1050, 600)


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                               (".pdf", b"%PDF-")])
def test_saves_are_byte_identical(history, tmp_path, suffix, magic):
    def save(name):
        fig = st.federated_rounds(history, metrics=("accuracy", "loss"), title="run")
        return st.save_figure(fig, tmp_path / "sub" / f"{name}{suffix}", dpi=72).read_bytes()

    first, second = save("one"), save("two")
    assert first.startswith(magic) and len(first) > 1000
    assert first == second
    if suffix == ".svg":
        assert b"<svg" in first and b"<dc:date>" not in first


def test_save_figure_bad_input(history, tmp_path):
    fig = st.federated_rounds(history)
    wanted = r"'a\.jpg' \(suffix \.jpg\): use a \.png, \.svg or \.pdf path"
    with pytest.raises(InvalidInputError, match=wanted):
        st.save_figure(fig, tmp_path / "a.jpg")
    with pytest.raises(InvalidInputError, match=r"\(suffix missing\)"):
        st.save_figure(fig, tmp_path / "a")
    with pytest.raises(InvalidInputError, match="needs a matplotlib Figure"):
        st.save_figure("figure", tmp_path / "a.png")
    with pytest.raises(InvalidInputError, match="dpi must be a positive number"):
        st.save_figure(fig, tmp_path / "a.png", dpi=0)
