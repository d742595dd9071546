"""`fedge federate`: a CSV in, a federated model, its history and epsilon out."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_regression

import fedge
from tools import run_cli


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory):
    frame = load_breast_cancer(as_frame=True).frame
    path = tmp_path_factory.mktemp("data") / "cancer.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cancer_bounds(tmp_path_factory):
    """The feature ranges published in the dataset's documentation (public knowledge)."""
    from fedge.data import documented_bounds

    data = load_breast_cancer()
    lo, hi = documented_bounds(data.DESCR, 30)
    path = tmp_path_factory.mktemp("bounds") / "bounds.csv"
    lines = ["feature,min,max"] + [
        f"{n},{a},{b}" for n, a, b in zip(data.feature_names, lo, hi, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_federate_with_privacy_saves_model_history_and_epsilon(
    cancer_csv, cancer_bounds, tmp_path, capsys
):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(
        capsys, "federate", "--data", str(cancer_csv), "--label", "target", "--clients", "5",
        "--partition", "dirichlet:1", "--rounds", "8", "--strategy", "fedprox",
        "--batch-size", "64", "--lr", "1.0", "--dp-epsilon", "3", "--dp-level", "record",
        "--feature-range", str(cancer_bounds), "-o", str(out),
    )
    assert code == 0, stderr
    assert "epsilon" in stdout and "federated rounds" in stdout
    history = json.loads((out / "history.json").read_text())
    assert len(history["rounds"]) == 8
    spent = [r["epsilon"] for r in history["rounds"]]
    assert spent == sorted(spent) and 0 < spent[-1] <= 3.0
    model = fedge.load(out / "model.json")
    frame = np.loadtxt(cancer_csv, delimiter=",", skiprows=1)
    X, y = frame[:, :-1], frame[:, -1].astype(int)
    # the saved model is the whole pipeline: raw features in, the federated scaler inside
    assert np.mean(fedge.predict(model, X) == y) > 0.85
    assert (out / "model.skops").exists()


def test_federate_under_secure_aggregation_with_dropouts(cancer_csv, tmp_path, capsys):
    code, stdout, stderr = run_cli(
        capsys, "federate", "--data", str(cancer_csv), "--label", "target", "--clients", "8",
        "--rounds", "3", "--secure-aggregation", "secagg+", "--dropout-rate", "0.2",
        "-o", str(tmp_path / "out"),
    )
    assert code == 0, stderr
    assert "secure s" in stdout
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert all(
        "secure_seconds" in r["metrics"] or "secure_aborted" in r["metrics"]
        for r in history["rounds"]
    )


def test_federate_an_mlp_regressor(tmp_path, capsys):
    X, y = make_regression(600, 5, noise=1.0, random_state=0)
    path = tmp_path / "reg.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,price",
               comments="")
    code, stdout, stderr = run_cli(
        capsys, "federate", "--data", str(path), "--label", "price", "--clients", "3",
        "--rounds", "3", "--model", "mlp", "--hidden", "8", "-o", str(tmp_path / "out"),
    )
    assert code == 0, stderr
    assert "r2" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "nope"], "not a column"),
        (["--label", "target", "--partition", "zipf:1"], "unknown partition"),
        (["--label", "target", "--clients", "1000"], "fewer clients"),
        (["--label", "target", "--dp-epsilon", "1"], "no privacy budget covers"),
        (["--label", "target", "--secure-aggregation", "secagg", "--strategy", "median"],
         "needs each update"),
    ],
)
def test_bad_arguments_are_one_line_errors(cancer_csv, tmp_path, capsys, args, message):
    code, _, stderr = run_cli(
        capsys, "federate", "--data", str(cancer_csv), *args, "-o", str(tmp_path / "x")
    )
    assert code == 1
    assert message in stderr
