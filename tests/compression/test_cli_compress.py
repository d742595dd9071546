"""`fedge compress`: real bytes and accuracy per stage, a loadable result, clear errors."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

import fedge
from fedge.ir import QuantizedDense
from tools import run_cli


@dataclass
class Files:
    """A saved estimator, its validation CSV and the rows in it."""

    estimator: object
    model: Path
    csv: Path
    label: str
    X: np.ndarray
    y: np.ndarray

    def compress(self, capsys, out: Path, *options: str) -> tuple[int, str, str]:
        args = ("compress", str(self.model), "--data", str(self.csv), "--label", self.label)
        return run_cli(capsys, *args, "-o", str(out), *options)


def _files(tmp_path: Path, estimator, X, y, label: str, n_train: int) -> Files:
    estimator.fit(X[:n_train], y[:n_train])
    model = tmp_path / "model.skops"
    sio.dump(estimator, model)
    csv = tmp_path / "val.csv"
    header = ",".join([f"f{i}" for i in range(X.shape[1])] + [label])
    Xv, yv = X[n_train:], y[n_train:]
    rows = [",".join([*(repr(float(v)) for v in x), str(t)]) for x, t in zip(Xv, yv, strict=True)]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    return Files(estimator, model, csv, label, Xv, yv)


def _digits(tmp_path: Path) -> Files:
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((32,), max_iter=100, random_state=0)
        return _files(tmp_path, mlp, X, y, "digit", 1200)


def _stages(report: Path) -> list[str]:
    return [r["stage"] for r in json.loads(report.read_text())]


def test_compress_quantizes_and_reports_real_sizes(tmp_path, capsys) -> None:
    f = _digits(tmp_path)
    out, report = tmp_path / "small.fedge", tmp_path / "report.json"
    code, text, err = f.compress(capsys, out, "--quantize", "int8", "--report", str(report))
    assert code == 0, err
    for word in ("Original", "Lossless", "Quantized (int8)", "Final"):
        assert word in text
    rows = json.loads(report.read_text())
    assert rows[0]["bytes"] == f.model.stat().st_size
    assert rows[-1]["bytes"] == out.stat().st_size
    assert rows[-1]["bytes"] < rows[1]["bytes"] / 2  # int8 weights next to float64
    assert abs(rows[0]["accuracy"] - np.mean(f.estimator.predict(f.X) == f.y)) < 0.01
    small = fedge.load(out)
    assert all(isinstance(s, QuantizedDense) for s in small.steps)
    code, text, _ = run_cli(capsys, "inspect", str(out))
    assert code == 0 and "quantized dense" in text and "int8 per channel" in text
    assert abs(rows[-1]["accuracy"] - rows[0]["accuracy"]) <= 0.01


def test_compress_with_an_unknown_label_column_is_one_line(tmp_path, capsys) -> None:
    f = _digits(tmp_path)
    f.label = "nope"
    code, _, err = f.compress(capsys, tmp_path / "x.fedge")
    assert code == 1
    assert "'nope' is not a column" in err


def test_compress_prunes_then_quantizes_a_forest(tmp_path, capsys) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    f = _files(tmp_path, RandomForestClassifier(50, random_state=0), X, y, "y", 400)
    small, report = tmp_path / "small.fedge", tmp_path / "report.json"
    code, _, err = f.compress(
        capsys, small, "--prune", "0.8", "--quantize", "float16", "--report", str(report)
    )
    assert code == 0, err
    assert _stages(report) == [
        "Original",
        "Lossless (.fedge)",
        "Pruned (trees 0.8)",
        "Quantized (float16)",
        "Final",
    ]
    rows = json.loads(report.read_text())
    assert rows[2]["bytes"] < rows[1]["bytes"] / 2
    # (float16 leaves need not beat xz on float64 leaves that are mostly 0 and 1.)
    assert rows[3]["bytes"] == rows[4]["bytes"] == small.stat().st_size
    assert fedge.load(small).steps[-1].n_trees == 10
    code, _, _ = f.compress(capsys, tmp_path / "q.fedge", "--quantize", "int8")
    assert code == 0
    code, text, _ = run_cli(capsys, "inspect", str(tmp_path / "q.fedge"))
    assert code == 0 and "quantized trees" in text and "uint8 indices" in text


def test_compress_searches_within_a_budget(tmp_path, capsys) -> None:
    f = _digits(tmp_path)
    report = tmp_path / "report.json"
    code, text, err = f.compress(
        capsys, tmp_path / "best.fedge", "--max-accuracy-drop", "0.02", "--report", str(report)
    )
    assert code == 0, err
    assert "Pareto front" in text and "chosen" in text
    rows = json.loads(report.read_text())
    assert rows[2]["stage"] == "AutoCompress (<= 0.02)"
    assert rows[2]["bytes"] < rows[1]["bytes"]


def test_compress_distills_a_student_and_scores_on_held_out_rows(tmp_path, capsys) -> None:
    f = _digits(tmp_path)
    student, report = tmp_path / "student.fedge", tmp_path / "report.json"
    code, text, err = f.compress(
        capsys, student, "--distill", "tree:8", "--quantize", "int8", "--report", str(report)
    )
    assert code == 0, err
    assert "held-out rows" in text
    assert _stages(report) == [
        "Original",
        "Lossless (.fedge)",
        "Distilled (tree:8)",
        "Quantized (int8)",
        "Final",
    ]
    assert fedge.load(student).metadata["source"]["estimator"] == "DecisionTreeClassifier"
    code, _, err = f.compress(capsys, tmp_path / "x.fedge", "--distill", "tree:deep")
    assert code == 1 and "unknown student 'tree:deep'" in err
