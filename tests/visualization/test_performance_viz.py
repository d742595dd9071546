"""The interactive performance figures draw exactly the numbers they are given."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedge.errors import InvalidInputError
from fedge.federated.history import History, RoundRecord
from fedge.visualization import performance_viz as pv


def _round(i: int, *, accepted: int, rejected: int, failed: int, epsilon, metrics) -> RoundRecord:
    return RoundRecord(
        round=i, selected=accepted + rejected + failed, accepted=accepted, rejected=rejected,
        failed=failed, mean_update_norm=0.1, max_update_norm=0.2, epsilon=epsilon,
        seconds=0.5, metrics=metrics,
    )


@pytest.fixture
def history() -> History:
    """Four rounds with DP, a rejected and a failed client, and a round without 'loss'."""
    return History(rounds=[
        _round(1, accepted=5, rejected=0, failed=0, epsilon=0.4,
               metrics={"accuracy": 0.70, "loss": 0.9}),
        _round(2, accepted=4, rejected=1, failed=0, epsilon=0.6,
               metrics={"accuracy": 0.78, "loss": 0.7}),
        _round(3, accepted=3, rejected=1, failed=1, epsilon=0.8, metrics={"accuracy": 0.81}),
        _round(4, accepted=5, rejected=0, failed=0, epsilon=1.0,
               metrics={"accuracy": 0.85, "loss": 0.5, "train_loss": 0.45}),
    ])


def _by_name(fig):
    return {t.name: t for t in fig.data}


# ----------------------------------------------------------------------------- federated rounds


def test_federated_rounds_draws_metrics_epsilon_and_participation(history):
    fig = pv.federated_rounds_figure(history, metrics=("accuracy", "loss"), title="run 7")
    assert fig.layout.title.text == "run 7"
    assert [(t.type, t.name) for t in fig.data] == [
        ("scatter", "accuracy"), ("scatter", "loss"), ("scatter", "epsilon spent"),
        ("bar", "accepted"), ("bar", "rejected"), ("bar", "failed"),
    ]
    t = _by_name(fig)
    np.testing.assert_array_equal(t["accuracy"].x, [1, 2, 3, 4])
    np.testing.assert_allclose(t["accuracy"].y, history.metric("accuracy"))
    # the round without a loss is a gap, not a zero
    np.testing.assert_allclose(t["loss"].y, [0.9, 0.7, math.nan, 0.5])
    np.testing.assert_allclose(t["epsilon spent"].y, [r.epsilon for r in history.rounds])
    assert t["epsilon spent"].line.dash == "dash"
    assert t["epsilon spent"].yaxis == "y2"  # the secondary axis of row 1
    assert t["accuracy"].yaxis == "y"
    np.testing.assert_array_equal(t["accepted"].y, [5, 4, 3, 5])
    np.testing.assert_array_equal(t["rejected"].y, [0, 1, 1, 0])
    np.testing.assert_array_equal(t["failed"].y, [0, 0, 1, 0])
    assert {t[n].xaxis for n in ("accepted", "rejected", "failed")} == {"x2"}  # row 2
    assert fig.layout.xaxis.matches == "x2"  # row 1 shares row 2's round axis
    assert fig.layout.hovermode == "x unified"
    assert fig.layout.barmode == "stack"
    assert fig.layout.yaxis2.title.text.startswith("epsilon")


def test_federated_rounds_accepts_the_mapping_and_the_json_file(history, tmp_path):
    path = tmp_path / "history.json"
    history.save(path)
    expected = pv.federated_rounds_figure(history).data[0].y
    for source in (history.as_dict(), path, str(path)):
        np.testing.assert_allclose(pv.federated_rounds_figure(source).data[0].y, expected)


def test_federated_rounds_without_privacy_has_no_epsilon_trace():
    plain = History(rounds=[
        _round(i, accepted=2, rejected=0, failed=0, epsilon=None, metrics={"accuracy": 0.5})
        for i in (1, 2)
    ])
    fig = pv.federated_rounds_figure(plain, metrics="accuracy")
    assert [t.name for t in fig.data] == ["accuracy", "accepted", "rejected", "failed"]


def test_federated_rounds_of_a_real_simulation():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from fedge.federated import simulate

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    result = simulate(LogisticRegression(), X, y, n_clients=3, rounds=3, validation=0.25,
                      random_state=0, progress=False)
    fig = pv.federated_rounds_figure(result.history, metrics=("accuracy", "train_loss"))
    t = _by_name(fig)
    np.testing.assert_allclose(t["accuracy"].y, result.history.metric("accuracy"))
    np.testing.assert_allclose(t["train_loss"].y, result.history.metric("train_loss"))
    np.testing.assert_array_equal(t["accepted"].y, [3, 3, 3])
    assert "epsilon spent" not in t


def test_empty_history_is_refused():
    with pytest.raises(InvalidInputError, match="has no rounds"):
        pv.federated_rounds_figure(History())
    with pytest.raises(InvalidInputError, match="has no rounds"):
        pv.federated_rounds_figure({"rounds": []})


def test_unknown_metric_names_the_available_ones(history):
    with pytest.raises(InvalidInputError) as err:
        pv.federated_rounds_figure(history, metrics=("accuracy", "f1"))
    message = str(err.value)
    assert "'f1'" in message
    assert "available metrics: accuracy, loss, train_loss" in message


def test_history_input_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="no federated history at"):
        pv.load_history(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot read a federated history"):
        pv.load_history(bad)
    with pytest.raises(InvalidInputError, match="got int"):
        pv.load_history(3)
    with pytest.raises(InvalidInputError, match="not a federated history mapping"):
        pv.load_history({"rounds": [{"round": 1}]})


# ----------------------------------------------------------------------------- training curves


def test_training_history_lines():
    fig = pv.training_history_figure([1.0, 0.6, 0.4], [1.1, 0.8, 0.7], metric="log loss")
    assert [(t.type, t.name) for t in fig.data] == [("scatter", "train"),
                                                     ("scatter", "validation")]
    np.testing.assert_array_equal(fig.data[0].x, [1, 2, 3])
    np.testing.assert_allclose(fig.data[0].y, [1.0, 0.6, 0.4])
    np.testing.assert_allclose(fig.data[1].y, [1.1, 0.8, 0.7])
    assert fig.layout.yaxis.title.text == "log loss"
    assert fig.layout.title.text == "log loss per epoch"
    only = pv.training_history_figure([3, 2], x=[10, 20])
    assert len(only.data) == 1
    np.testing.assert_allclose(only.data[0].x, [10, 20])


def test_training_history_mismatched_lengths():
    with pytest.raises(InvalidInputError, match=r"different lengths \(train: 3, validation: 2\)"):
        pv.training_history_figure([1, 2, 3], [1, 2])
    with pytest.raises(InvalidInputError, match="empty"):
        pv.training_history_figure([])


# ----------------------------------------------------------------------------- latency


LATENCY = {"numpy": [12.0, 15.0, 11.0, 40.0, 13.0], "c": [0.9, 1.1, 1.0, 1.2]}


def test_latency_violins_hold_the_samples_and_percentiles():
    fig = pv.latency_distribution_figure(LATENCY)
    assert [t.type for t in fig.data] == ["violin", "violin"]
    for trace, (name, values) in zip(fig.data, LATENCY.items(), strict=True):
        np.testing.assert_allclose(trace.y, values)
        p50, p99 = np.percentile(values, [50, 99])
        assert trace.name == f"{name} (p50 {p50:.3g} µs, p99 {p99:.3g} µs)"
        assert trace.x0 == name
        assert trace.points == "all" and trace.box.visible
    assert fig.layout.yaxis.type == "linear"  # 40 / 0.9 < 100


def test_latency_log_axis_when_spread_exceeds_100x_unless_told():
    wide = {"python": [500.0, 800.0], "c": [1.0, 2.0]}
    assert pv.latency_distribution_figure(wide).layout.yaxis.type == "log"
    assert pv.latency_distribution_figure(wide, log=False).layout.yaxis.type == "linear"
    assert pv.latency_distribution_figure(LATENCY, log=True).layout.yaxis.type == "log"
    with pytest.raises(InvalidInputError, match="log axis cannot show"):
        pv.latency_distribution_figure({"a": [0.0, 1.0]}, log=True)


def test_latency_boxes():
    fig = pv.latency_distribution_figure(LATENCY, kind="box", unit="ms")
    assert [t.type for t in fig.data] == ["box", "box"]
    np.testing.assert_allclose(fig.data[1].y, LATENCY["c"])
    assert fig.data[0].boxpoints == "all"
    assert "ms" in fig.data[0].name and fig.layout.yaxis.title.text == "latency (ms)"


def test_latency_bad_input():
    with pytest.raises(InvalidInputError, match=r"latencies of 'c' holds 1 non-finite"):
        pv.latency_distribution_figure({"numpy": [1.0], "c": [1.0, math.nan]})
    with pytest.raises(InvalidInputError, match="negative"):
        pv.latency_distribution_figure({"c": [1.0, -2.0]})
    with pytest.raises(InvalidInputError, match="latency samples is empty"):
        pv.latency_distribution_figure({})
    with pytest.raises(InvalidInputError, match="latencies of 'c' is empty"):
        pv.latency_distribution_figure({"c": []})
    with pytest.raises(InvalidInputError, match="kind must be 'violin' or 'box'"):
        pv.latency_distribution_figure(LATENCY, kind="strip")


# ----------------------------------------------------------------------------- metric comparison


RESULTS = {
    "forest": {"accuracy": 0.95, "f1": 0.94},
    "int8 forest": {"accuracy": 0.94, "f1": 0.93},
    "logistic": {"accuracy": 0.91},
}


def test_metric_comparison_grouped_bars():
    fig = pv.metric_comparison_figure(RESULTS, title="zoo")
    assert [(t.type, t.name) for t in fig.data] == [("bar", "accuracy"), ("bar", "f1")]
    assert list(fig.data[0].x) == ["forest", "int8 forest", "logistic"]
    np.testing.assert_allclose(fig.data[0].y, [0.95, 0.94, 0.91])
    np.testing.assert_allclose(fig.data[1].y, [0.94, 0.93, math.nan])  # a gap, not a zero
    assert fig.layout.barmode == "group"
    assert "accuracy: %{y" in fig.data[0].hovertemplate
    assert fig.layout.title.text == "zoo"
    dots = pv.metric_comparison_figure(RESULTS, kind="dot")
    assert [t.mode for t in dots.data] == ["markers", "markers"]
    np.testing.assert_allclose(dots.data[0].y, [0.95, 0.94, 0.91])


def test_metric_comparison_bad_input():
    with pytest.raises(InvalidInputError, match="metric results is empty"):
        pv.metric_comparison_figure({})
    with pytest.raises(InvalidInputError, match=r"results\['a'\]\['acc'\] must be a number"):
        pv.metric_comparison_figure({"a": {"acc": "high"}})
    with pytest.raises(InvalidInputError, match=r"results\[.a.\] must map metric names"):
        pv.metric_comparison_figure({"a": [0.9]})
    with pytest.raises(InvalidInputError, match="infinite"):
        pv.metric_comparison_figure({"a": {"acc": math.inf}})


# ----------------------------------------------------------------------------- Pareto front


def test_pareto_front_on_a_hand_made_example():
    points = [(100, 0.9), (50, 0.8), (200, 0.85), (50, 0.7), (300, 0.95), (10, 0.5), (20, 0.5)]
    # by size: 10 (0.5) kept; 20 (0.5) not better; 50 (0.8) kept, 50 (0.7) not;
    # 100 (0.9) kept; 200 (0.85) not; 300 (0.95) kept
    assert pv.pareto_front(points) == [5, 1, 0, 4]
    assert pv.pareto_front([{"bytes": 5, "score": 0.1}]) == [0]
    assert pv.pareto_front([]) == []


def test_pareto_front_agrees_with_auto_compress():
    from fedge.compression.search import Candidate, _front

    rng = np.random.default_rng(3)
    cands = [
        Candidate((f"p{i}",), int(b), float(s), None)
        for i, (b, s) in enumerate(zip(rng.integers(100, 120, 40), rng.random(40).round(2),
                                       strict=True))
    ]
    assert [cands[i] for i in pv.pareto_front(cands)] == _front(cands)


def _search_result():
    from fedge.compression.search import Candidate, SearchResult, _front

    base = Candidate(("source",), 8000, 0.96, None)
    cands = [
        base,
        Candidate(("prune 0.5",), 4000, 0.95, None),
        Candidate(("prune 0.5", "int8"), 1200, 0.95, None),
        Candidate(("int8",), 2000, 0.96, None),
        Candidate(("prune 0.9", "int8"), 400, 0.90, None),
    ]
    return SearchResult(cands[2], base, "accuracy", 0.01, cands, _front(cands))


def test_pareto_figure_from_a_search_result():
    result = _search_result()
    fig = pv.pareto_front_figure(result)
    assert [(t.name, t.mode) for t in fig.data] == [
        ("candidates", "markers"), ("Pareto front", "lines+markers"), ("baseline", "markers"),
    ]
    pts, front, base = fig.data
    np.testing.assert_allclose(pts.x, [c.bytes for c in result.candidates])
    np.testing.assert_allclose(pts.y, [c.score for c in result.candidates])
    assert [row[0] for row in pts.customdata] == [
        "source", "prune 0.5", "prune 0.5 + int8", "int8", "prune 0.9 + int8",
    ]
    np.testing.assert_allclose(front.x, [400, 1200, 2000])
    np.testing.assert_allclose(front.y, [0.90, 0.95, 0.96])
    assert front.line.shape == "hv"
    np.testing.assert_allclose(base.x, [8000])
    assert base.marker.symbol == "star"
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.yaxis.title.text == "accuracy"
    assert "bytes" in pts.hovertemplate


def test_pareto_figure_from_mappings_computes_or_takes_the_front():
    rows = [
        {"label": "a", "bytes": 100, "score": 0.9},
        {"label": "b", "bytes": 50, "score": 0.8},
        {"label": "c", "bytes": 200, "score": 0.85},
    ]
    fig = pv.pareto_front_figure(rows, log_x=False, metric="r2")
    assert len(fig.data) == 2  # no baseline
    np.testing.assert_allclose(fig.data[1].x, [50, 100])
    assert [r[0] for r in fig.data[1].customdata] == ["b", "a"]
    assert fig.layout.xaxis.type == "linear"
    given = pv.pareto_front_figure(rows, front=[2, 1])
    np.testing.assert_allclose(given.data[1].x, [50, 200])  # drawn smallest first


def test_pareto_figure_bad_input():
    with pytest.raises(InvalidInputError, match="compression candidates is empty"):
        pv.pareto_front_figure([])
    with pytest.raises(InvalidInputError, match=r"candidates\[0\] needs both 'bytes' and 'score'"):
        pv.pareto_front_figure([{"bytes": 10}])
    with pytest.raises(InvalidInputError, match="log axis cannot show"):
        pv.pareto_front_figure([(0, 0.5), (10, 0.6)])
    with pytest.raises(InvalidInputError, match="outside the 1 candidates"):
        pv.pareto_front_figure([(10, 0.6)], front=[3])
    with pytest.raises(InvalidInputError, match="non-finite"):
        pv.pareto_front_figure([(10, math.nan)])


# ----------------------------------------------------------------------------- footprint


FOOTPRINT = [
    {"target": "arduino-uno", "flash_bytes": 20000, "ram_bytes": 500, "flash_budget": 32768,
     "ram_budget": 2048, "fits": True, "status": "ok"},
    {"target": "cortex-m4", "flash_bytes": 31000, "ram_bytes": 1200, "flash_budget": 1048576,
     "ram_budget": 262144, "fits": True, "status": "ok"},
    {"target": "rv32", "flash_bytes": None, "ram_bytes": None, "flash_budget": 65536,
     "ram_budget": None, "fits": None, "status": "tool missing"},
]


def test_footprint_bars_budgets_and_gaps():
    fig = pv.footprint_figure(FOOTPRINT)
    assert [(t.type, t.name) for t in fig.data] == [
        ("bar", "flash"), ("scatter", "flash budget"), ("bar", "RAM"), ("scatter", "RAM budget"),
    ]
    t = _by_name(fig)
    targets = ["arduino-uno", "cortex-m4", "rv32"]
    for trace in fig.data:
        assert list(trace.x) == targets
    assert list(t["flash"].y) == [20000, 31000, None]
    assert list(t["RAM"].y) == [500, 1200, None]
    assert list(t["flash budget"].y) == [32768, 1048576, 65536]
    assert list(t["RAM budget"].y) == [2048, 262144, None]
    assert t["flash"].offsetgroup == t["flash budget"].offsetgroup == "flash"
    assert fig.layout.yaxis.type == "log"
    assert "20,000 B = 61.0% of 32,768 B" in t["flash"].customdata[0][0]
    assert "500 B = 24.4% of 2,048 B" in t["RAM"].customdata[0][0]
    assert "not measured" in t["flash"].customdata[2][0]
    (note,) = fig.layout.annotations
    assert note.x == "rv32" and "tool missing" in note.text


def test_footprint_accepts_device_rows():
    from fedge.demo import DeviceRow

    row = DeviceRow(
        target="arduino-uno", runs_on="simavr", status="ok", parity="bit exact",
        bit_exact=True, rows=10, flash_bytes=20000, ram_bytes=500, stack_bytes=100, fits=True,
        flash_budget=32768, ram_budget=2048, per_prediction=None, counter="cycles", seconds=1.0,
    )
    fig = pv.footprint_figure([row])
    assert list(fig.data[0].y) == [20000] and list(fig.data[3].y) == [2048]


def test_footprint_bad_input():
    with pytest.raises(InvalidInputError, match="footprint rows is empty"):
        pv.footprint_figure([])
    with pytest.raises(InvalidInputError, match=r"rows\[0\] has no 'target'"):
        pv.footprint_figure([{"flash_bytes": 3}])
    with pytest.raises(InvalidInputError, match="repeat targets"):
        pv.footprint_figure([FOOTPRINT[0], FOOTPRINT[0]])
    with pytest.raises(InvalidInputError, match="flash_bytes = -1"):
        pv.footprint_figure([{**FOOTPRINT[0], "flash_bytes": -1}])


# ----------------------------------------------------------------------------- parity matrix


PARITY = {
    "random forest": {"onnx": "verified", "tflite": "refused: trees are not supported",
                      "coreml": "MISMATCH", "c": "verified"},
    "logistic": {"onnx": "FAILED: onnxruntime error", "c": "verified"},
}


def test_parity_matrix_codes_text_and_hover():
    fig = pv.parity_matrix_figure(PARITY)
    (heat,) = fig.data
    assert heat.type == "heatmap"
    assert list(heat.x) == ["onnx", "tflite", "coreml", "c"]
    assert list(heat.y) == ["random forest", "logistic"]
    assert [list(r) for r in heat.z] == [[2, 1, 0, 2], [0, None, None, 2]]
    assert [list(r) for r in heat.text] == [
        ["verified", "refused", "MISMATCH", "verified"], ["FAILED", "", "", "verified"],
    ]
    assert heat.customdata[0][1] == "refused: trees are not supported"
    assert "%{customdata}" in heat.hovertemplate
    assert heat.showscale is False
    # the colour each code lands on: code -> normalised position in the discrete scale
    scale = [(pos, col) for pos, col in heat.colorscale]

    def colour_of(code):
        pos = (code - heat.zmin) / (heat.zmax - heat.zmin)
        return next(col for p, col in reversed(scale) if p <= pos)

    assert colour_of(2) == pv.STATUS_COLOURS["verified"]
    assert colour_of(1) == pv.STATUS_COLOURS["refused"]
    assert colour_of(0) == pv.STATUS_COLOURS["failed"]


def test_parity_matrix_bad_input():
    with pytest.raises(InvalidInputError, match="parity matrix is empty"):
        pv.parity_matrix_figure({})
    with pytest.raises(InvalidInputError, match="must be a status string"):
        pv.parity_matrix_figure({"m": {"onnx": True}})
    with pytest.raises(InvalidInputError, match="names no format"):
        pv.parity_matrix_figure({"m": {}})


def test_figures_serialise_deterministically(history):
    figs = [
        lambda: pv.federated_rounds_figure(history),
        lambda: pv.latency_distribution_figure(LATENCY),
        lambda: pv.pareto_front_figure(_search_result()),
        lambda: pv.footprint_figure(FOOTPRINT),
        lambda: pv.parity_matrix_figure(PARITY),
        lambda: pv.metric_comparison_figure(RESULTS),
    ]
    for make in figs:
        assert make().to_json() == make().to_json()
