"""`fedge compress`: real bytes and accuracy per stage, a loadable result, clear errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import skops.io as sio
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

import fedge
from fedge.cli import main
from fedge.ir import QuantizedDense


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _digits_files(tmp_path):
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((32,), max_iter=100, random_state=0).fit(X[:1200], y[:1200])
    model_path = tmp_path / "mlp.skops"
    sio.dump(mlp, model_path)
    csv = tmp_path / "val.csv"
    header = ",".join([f"f{i}" for i in range(X.shape[1])] + ["digit"])
    rows = [
        ",".join([*(f"{v:g}" for v in x), str(t)]) for x, t in zip(X[1200:], y[1200:], strict=True)
    ]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    return mlp, model_path, csv, X[1200:], y[1200:]


def test_compress_quantizes_and_reports_real_sizes(tmp_path, capsys) -> None:
    mlp, model_path, csv, X, y = _digits_files(tmp_path)
    out, report = tmp_path / "small.fedge", tmp_path / "report.json"
    code, text, err = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "digit",
        "--quantize",
        "int8",
        "-o",
        str(out),
        "--report",
        str(report),
    )
    assert code == 0, err
    for word in ("Original", "Lossless", "Quantized (int8)", "Final"):
        assert word in text
    rows = json.loads(report.read_text())
    assert rows[0]["bytes"] == model_path.stat().st_size
    assert rows[-1]["bytes"] == out.stat().st_size
    assert rows[-1]["bytes"] < rows[1]["bytes"] / 2  # int8 weights next to float64
    assert abs(rows[0]["accuracy"] - np.mean(mlp.predict(X) == y)) < 0.01
    small = fedge.load(out)
    assert all(isinstance(s, QuantizedDense) for s in small.steps)
    code, text, _ = run(capsys, "inspect", str(out))
    assert code == 0 and "quantized dense" in text and "int8 per channel" in text
    assert abs(rows[-1]["accuracy"] - rows[0]["accuracy"]) <= 0.01


def test_compress_with_an_unknown_label_column_is_one_line(tmp_path, capsys) -> None:
    _, model_path, csv, _, _ = _digits_files(tmp_path)
    code, _, err = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "nope",
        "-o",
        str(tmp_path / "x.fedge"),
    )
    assert code == 1
    assert "'nope' is not a column" in err


def test_compress_prunes_then_quantizes_a_forest(tmp_path, capsys) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(50, random_state=0).fit(X[:400], y[:400])
    model_path = tmp_path / "forest.skops"
    sio.dump(forest, model_path)
    csv = tmp_path / "val.csv"
    header = ",".join([f"f{i}" for i in range(X.shape[1])] + ["y"])
    rows = [
        ",".join([*(repr(float(v)) for v in x), str(t)])
        for x, t in zip(X[400:], y[400:], strict=True)
    ]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    report = tmp_path / "report.json"
    code, _, err = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "y",
        "--prune",
        "0.8",
        "--quantize",
        "float16",
        "-o",
        str(tmp_path / "small.fedge"),
        "--report",
        str(report),
    )
    assert code == 0, err
    stages = [r["stage"] for r in json.loads(report.read_text())]
    assert stages == [
        "Original",
        "Lossless (.fedge)",
        "Pruned (trees 0.8)",
        "Quantized (float16)",
        "Final",
    ]
    rows_out = json.loads(report.read_text())
    assert rows_out[2]["bytes"] < rows_out[1]["bytes"] / 2
    # (float16 leaves need not beat xz on float64 leaves that are mostly 0 and 1.)
    assert rows_out[3]["bytes"] == rows_out[4]["bytes"] == (tmp_path / "small.fedge").stat().st_size
    assert fedge.load(tmp_path / "small.fedge").steps[-1].n_trees == 10
    code, text, _ = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "y",
        "--quantize",
        "int8",
        "-o",
        str(tmp_path / "q.fedge"),
    )
    assert code == 0
    code, text, _ = run(capsys, "inspect", str(tmp_path / "q.fedge"))
    assert code == 0 and "quantized trees" in text and "uint8 indices" in text


def test_compress_searches_within_a_budget(tmp_path, capsys) -> None:
    _, model_path, csv, _, _ = _digits_files(tmp_path)
    report = tmp_path / "report.json"
    code, text, err = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "digit",
        "--max-accuracy-drop",
        "0.02",
        "-o",
        str(tmp_path / "best.fedge"),
        "--report",
        str(report),
    )
    assert code == 0, err
    assert "Pareto front" in text and "chosen" in text
    rows = json.loads(report.read_text())
    assert rows[2]["stage"] == "AutoCompress (<= 0.02)"
    assert rows[2]["bytes"] < rows[1]["bytes"]


def test_compress_distills_a_student_and_scores_on_held_out_rows(tmp_path, capsys) -> None:
    _, model_path, csv, _, _ = _digits_files(tmp_path)
    report = tmp_path / "report.json"
    code, text, err = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "digit",
        "--distill",
        "tree:8",
        "--quantize",
        "int8",
        "-o",
        str(tmp_path / "student.fedge"),
        "--report",
        str(report),
    )
    assert code == 0, err
    assert "held-out rows" in text
    stages = [r["stage"] for r in json.loads(report.read_text())]
    assert stages == [
        "Original",
        "Lossless (.fedge)",
        "Distilled (tree:8)",
        "Quantized (int8)",
        "Final",
    ]
    student = fedge.load(tmp_path / "student.fedge")
    assert student.metadata["source"]["estimator"] == "DecisionTreeClassifier"
    code, _, err = run(
        capsys,
        "compress",
        str(model_path),
        "--data",
        str(csv),
        "--label",
        "digit",
        "--distill",
        "tree:deep",
        "-o",
        str(tmp_path / "x.fedge"),
    )
    assert code == 1 and "unknown student 'tree:deep'" in err
