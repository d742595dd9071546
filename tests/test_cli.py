"""The fedge command: inspect, export, demo; errors are one line and a non-zero exit."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys

import pytest
import skops.io as sio

import fedge
from fedge.ir import models_equal
from tools import run_cli as run
from zoo import case


def test_inspect_a_forest(tmp_path, capsys) -> None:
    path = tmp_path / "forest.fedge"
    fedge.save(case("forest_multiclass").estimator, path)
    code, out, _ = run(capsys, "inspect", str(path))
    assert code == 0
    for text in (
        "RandomForestClassifier",
        "classification",
        "size on disk",
        "trees 25",
        "max depth 8",
        "size as .fedge",
    ):
        assert text in out, text


def test_inspect_an_mlp_from_skops(tmp_path, capsys) -> None:
    path = tmp_path / "mlp.skops"
    sio.dump(case("mlp_multiclass_tanh").estimator, path)
    code, out, _ = run(capsys, "inspect", str(path))
    assert code == 0
    assert "dense" in out and "activation tanh" in out and "affine" in out


def test_export_lite_round_trips(tmp_path, capsys) -> None:
    est = case("tree_nan").estimator
    src, dst = tmp_path / "m.skops", tmp_path / "out.json"
    sio.dump(est, src)
    code, out, _ = run(capsys, "export", str(src), "--format", "lite", "-o", str(dst))
    assert code == 0 and "wrote" in out
    assert models_equal(fedge.load(dst), fedge.lower(est))


def test_pickle_needs_trust(tmp_path, capsys) -> None:
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps(case("lasso").estimator))
    code, _, err = run(capsys, "export", str(src), "-o", str(tmp_path / "o.fedge"))
    assert code == 1
    assert "error:" in err and "--trust" in err and "Traceback" not in err
    code, _, _ = run(capsys, "export", str(src), "-o", str(tmp_path / "o.fedge"), "--trust")
    assert code == 0 and (tmp_path / "o.fedge").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "missing.fedge"], "no such file"),
        (["export", "MODEL", "-o", "out.txt"], ".json"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, argv, message) -> None:
    fedge.save(case("lasso").estimator, tmp_path / "MODEL.fedge")
    argv = [a.replace("MODEL", str(tmp_path / "MODEL.fedge")) for a in argv]
    argv = [str(tmp_path / a) if a.endswith((".txt", "missing.fedge")) else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message, possibly wrapped


def test_unknown_format_is_a_usage_error(tmp_path, capsys) -> None:
    fedge.save(case("lasso").estimator, tmp_path / "m.fedge")
    code, _, _ = run(capsys, "export", str(tmp_path / "m.fedge"), "--format", "exe", "-o", "x")
    assert code == 2


def test_demo_verifies_every_model(tmp_path, capsys) -> None:
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path), "--json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 7
    federated = [r for r in rows if r["privacy"]]
    assert [r["name"] for r in federated] == [
        "federated logreg (10 hospitals)", "federated boosting (10 hospitals)"
    ]
    assert "epsilon 1.000" in federated[0]["privacy"]
    assert all("SecAgg+" in r["privacy"] for r in federated)
    # the boosted trees federated over the hospitals go through compression and every export
    boosted = federated[1]
    assert boosted["accuracy"] > 0.9 and boosted["compressed_bytes"] < boosted["fedge_bytes"]
    assert (tmp_path / "report.html").is_file() and (tmp_path / "demo.json").is_file()
    history = json.loads((tmp_path / "federated_history.json").read_text())
    assert history["rounds"][-1]["epsilon"] <= 1.0
    for row in rows:
        assert row["labels_identical"], row
        # float64 libraries to rounding; XGBoost's float32 sigmoid to 1e-6
        assert row["max_proba_diff"] <= (1e-6 if "XGBoost" in row["name"] else 1e-9)
        assert row["accuracy"] > (0.85 if row["privacy"] else 0.9)
        assert row["fedge_bytes"] < row["pickle_bytes"]
        assert row["c_identical"] is True, row  # gcc is installed by make test
        if row["fedge_bytes"] > 5000:  # tiny models are mostly header and metadata
            assert row["compressed_bytes"] < row["fedge_bytes"], row
        assert row["compressed_accuracy"] >= row["accuracy"] - 0.02
        # every demo model is verified on onnxruntime, the LiteRT interpreter and the Core ML
        # spec reader (a refusal would be a clear error, but none of these models needs one)
        assert row["exports"] == {f: "verified" for f in ("onnx", "tflite", "coreml")}, row
    assert sorted(p.suffix for p in tmp_path.iterdir()).count(".fedge") == 14
    packaged = [r["package"] for r in rows if r["package"]]
    assert len(packaged) == 1 and packaged[0]["predictions_identical"]
    assert packaged[0]["backend"] == "compiled" and packaged[0]["p50_us"] > 0
    assert (tmp_path / "demo-forest-int8.zip").stat().st_size == packaged[0]["bytes"]
    _check_demo_devices(rows)


def _check_demo_devices(rows: list[dict]) -> None:
    """The int8 forest on every device target: make test installs every toolchain and
    emulator, so every runnable target ran it bit-exact and every target reports a fit."""
    from fedge.demo import DEPLOYED, DEVICE_ROWS
    from fedge.deployment.devices import DEVICES

    deployed = [r for r in rows if r["devices"]]
    assert [r["name"] for r in deployed] == [DEPLOYED]
    devices = deployed[0]["devices"]
    assert [d["target"] for d in devices] == list(DEVICES)
    for d in devices:
        assert d["fits"] is True and d["flash_bytes"] > 0 and d["stack_bytes"] > 0, d
        if DEVICES[d["target"]].runnable:
            assert d["status"] == "ok" and d["bit_exact"] is True, d
            assert d["rows"] == DEVICE_ROWS and "bit-exact" in d["parity"], d
        else:
            assert d["status"] == "size only" and d["rows"] == 0, d
    uno = next(d for d in devices if d["target"] == "arduino-uno")
    assert uno["flash_bytes"] <= uno["flash_budget"] and uno["per_prediction"] > 0


def test_demo_marks_a_target_whose_tools_are_missing(monkeypatch) -> None:
    import shutil

    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.tree import DecisionTreeClassifier

    from fedge import demo
    from fedge.deployment import devices

    which = shutil.which
    gone = {"qemu-system-arm", "avr-gcc"}
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd in gone else which(cmd))
    subset = {k: devices.DEVICES[k] for k in ("cortex-m4f", "arduino-uno")}
    monkeypatch.setattr(devices, "DEVICES", subset)
    X, y = load_breast_cancer(return_X_y=True)
    model = fedge.lower(DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y))
    m4, uno = demo._deploy(model, X[:2].astype(np.float32))
    # the compiler is there: the footprint is measured, the run is not
    assert m4.status == "tool missing" and "qemu-system-arm" in m4.parity
    assert m4.flash_bytes is not None and m4.bit_exact is None
    # no compiler: nothing to measure, and still no exception
    assert uno.status == "tool missing" and "gcc-avr" in uno.parity and uno.flash_bytes is None


def test_console_entry_point_runs(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedge", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("fedge ")
    bad = subprocess.run(
        [sys.executable, "-m", "fedge", "inspect", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_inspect_shows_boosting_objective_and_base_score(tmp_path, capsys) -> None:
    path = tmp_path / "xgb.fedge"
    fedge.save(case("xgb_multiclass").estimator, path)
    code, out, _ = run(capsys, "inspect", str(path))
    assert code == 0
    flat = re.sub(r"[│\s]+", " ", out)  # table cells may wrap across lines
    assert "multi:softprob" in flat and "base score [" in flat and "comparison <" in flat


def test_export_c_and_verify_on_a_csv(tmp_path, capsys) -> None:
    import numpy as np

    c = case("forest_nan")
    src = tmp_path / "forest.skops"
    sio.dump(c.estimator, src)
    data = tmp_path / "data.csv"
    X = c.dataset.X_test
    lines = [",".join([f"f{i}" for i in range(30)] + ["y"])]
    lines += [",".join(["" if np.isnan(v) else repr(float(v)) for v in r] + ["1"]) for r in X]
    data.write_text("\n".join(lines) + "\n")
    argv = [
        "export",
        str(src),
        "--format",
        "c",
        "-o",
        str(tmp_path / "out"),
        "--prefix",
        "rf",
        "--verify",
        str(data),
        "--label",
        "y",
    ]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    flat = re.sub(r"[│\s]+", " ", out)
    assert "C verified on 171 rows" in flat
    assert "labels differing from the source model 0" in flat
    assert (tmp_path / "out" / "rf.c").exists() and (tmp_path / "out" / "rf.h").exists()
    code, _, err = run(capsys, *argv[:-2])  # without --label the target column is a feature
    assert code == 1 and "--label" in err
