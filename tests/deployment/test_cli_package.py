"""`fedge package`, `fedge verify`, `fedge inspect PKG.zip` and `fedge bench`."""

import json

import numpy as np
import pytest
import skops.io as sio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from tools import run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    X, y = make_classification(300, 5, random_state=0)
    sio.dump(RandomForestClassifier(10, max_depth=4, random_state=0).fit(X, y), root / "m.skops")
    header = "a,b,c,d,e,y"
    np.savetxt(root / "d.csv", np.column_stack([X, y]), delimiter=",", header=header,
               comments="")
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    (root / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    (root / "k.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))
    return root


def test_package_verify_inspect(files, capsys, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = files / "p.zip"
    args = ["package", str(files / "m.skops"), "-o", str(out), "--data", str(files / "d.csv"),
            "--label", "y", "--sign-key", str(files / "k.pem")]
    code, stdout, stderr = run_cli(capsys, *args)
    assert code == 0, stderr
    assert "version id" in stdout and "(signed)" in stdout
    first = out.read_bytes()
    assert run_cli(capsys, *args)[0] == 0
    assert out.read_bytes() == first  # reproducible
    code, stdout, _ = run_cli(capsys, "verify", str(out), "--public-key", str(files / "k.pub"))
    assert code == 0 and "signature verified" in stdout
    code, stdout, _ = run_cli(capsys, "inspect", str(out))
    assert code == 0 and "(package)" in stdout and "source.skops" in stdout
    tampered = files / "t.zip"
    data = bytearray(first)
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    code, _, stderr = run_cli(capsys, "verify", str(tampered))
    assert code == 1 and "error" in stderr


def test_bench_prints_every_backend_and_writes_json(files, capsys):
    report = files / "bench.json"
    code, stdout, stderr = run_cli(
        capsys, "bench", str(files / "m.skops"), "--data", str(files / "d.csv"), "--label", "y",
        "--backends", "compiled,numpy", "--json", str(report),
    )
    assert code == 0, stderr
    assert "compiled" in stdout and "numpy" in stdout
    rows = json.loads(report.read_text())
    assert {r["backend"] for r in rows} == {"compiled", "numpy"}


@pytest.mark.parametrize(("fmt", "suffix", "runtime"), [
    ("onnx", ".onnx", "onnxruntime"), ("tflite", ".tflite", "Interpreter"),
    ("coreml", ".mlmodel", "not executed by Core ML"),
])
def test_export_to_runtime_formats_and_verify(files, capsys, fmt, suffix, runtime):
    out = files / f"m{suffix}"
    code, stdout, stderr = run_cli(
        capsys, "export", str(files / "m.skops"), "-f", fmt, "-o", str(out),
        "--verify", str(files / "d.csv"), "--label", "y",
    )
    assert code == 0, stderr
    assert out.stat().st_size > 100
    assert runtime in stdout.replace("\n", " ")
