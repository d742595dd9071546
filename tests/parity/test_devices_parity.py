"""Generated C on every emulated device target over a small zoo, against the numpy runtime.

Claims: on every 32/64-bit target (host, Cortex-M4F and M3 under QEMU, RV32 under QEMU,
aarch64 under qemu-user) every score and probability equals fedge's ``device`` mode bit for
bit; on AVR (32-bit double, avr-libc) labels are identical and scores are within
``AVR_SCORE_TOLERANCE`` relative; labels equal the source model's on every target. The zoo:
logistic regression, a 10-tree depth-6 forest, XGBoost (20 rounds, depth 3) and an MLP(16),
binary and 3-class, the trees trained and tested with NaN; and int8-quantized forest and MLP
(integer C), bit-exact on every target including AVR.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedge.deployment.device_verify import AVR_SCORE_TOLERANCE, verify_on_device
from fedge.deployment.devices import DEVICES
from tools import require_tool

pytestmark = pytest.mark.slow

RUNNABLE = [name for name, t in DEVICES.items() if t.runnable]
MODELS = [f"{kind}{k}" for k in (2, 3) for kind in ("logreg", "forest_nan", "xgb_nan", "mlp")]
MODELS += ["forest_nan_int8", "mlp_int8"]
ROWS = 24


def _data(n_classes: int, nan: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        260, 10, n_informative=6, n_classes=n_classes, random_state=n_classes
    )
    X = X.astype(np.float32)
    if nan:
        X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    return X[:200], y[:200], X[200 : 200 + ROWS]


@pytest.fixture(scope="module")
def zoo() -> dict[str, tuple[object, np.ndarray]]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from xgboost import XGBClassifier

    out: dict[str, tuple[object, np.ndarray]] = {}
    for k in (2, 3):
        X, y, T = _data(k, nan=False)
        Xn, yn, Tn = _data(k, nan=True)
        out[f"logreg{k}"] = (LogisticRegression(max_iter=500).fit(X, y), T)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: a small MLP is the point
            out[f"mlp{k}"] = (MLPClassifier((16,), max_iter=200, random_state=0).fit(X, y), T)
        forest = RandomForestClassifier(10, max_depth=6, random_state=0).fit(Xn, yn)
        out[f"forest_nan{k}"] = (forest, Tn)
        xgb = XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0)
        out[f"xgb_nan{k}"] = (xgb.fit(Xn, yn), Tn)
    from fedge.compression import ModelQuantizer

    for name in ("forest_nan3", "mlp3"):  # integer C: bit-exact on every target, AVR included
        estimator, rows = out[name]
        out[name[:-1] + "_int8"] = (ModelQuantizer("int8").quantize_model(estimator), rows)
    return out


def _require(target: str) -> None:
    for r in DEVICES[target].requirements:
        if not r.is_file:
            require_tool(r.what, r.package)


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("name", MODELS)
def test_device_outputs_equal_the_numpy_runtime(zoo, target: str, name: str) -> None:
    _require(target)
    model, rows = zoo[name]
    report = verify_on_device(model, rows, target, timeout=60)
    assert report.rows == ROWS and report.runs >= 1
    assert report.label_mismatches_device == 0, report.parity
    if not name.endswith("int8"):
        assert report.label_mismatches_source == 0, report.parity
    if DEVICES[target].double_is_32bit and not name.endswith("int8"):
        assert not report.exact and report.tolerance == AVR_SCORE_TOLERANCE
        assert report.out_of_tolerance == 0, report.parity
    else:
        assert report.exact and report.score_mismatches == 0, report.parity
    assert report.passed
    assert report.footprint.fits
    assert report.footprint.flash_bytes > 0 and report.footprint.stack_bytes


@pytest.mark.parametrize("target", ["esp32c3", "arduino-uno"])
def test_a_regressor_runs_on_a_device(target: str) -> None:
    _require(target)
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge

    X, y = make_regression(80, 6, random_state=0)
    model = Ridge().fit(X.astype(np.float32), y)
    report = verify_on_device(model, X[:10].astype(np.float32), target, timeout=60)
    assert report.passed, report.parity
    assert report.label_mismatches_source is None


def test_instruction_counts_where_the_emulator_counts() -> None:
    _require("esp32c3")
    _require("arduino-uno")
    from sklearn.linear_model import LogisticRegression

    X, y, T = _data(2, nan=False)
    model = LogisticRegression(max_iter=500).fit(X, y)
    rv = verify_on_device(model, T[:4], "esp32c3")
    avr = verify_on_device(model, T[:4], "arduino-uno")
    m4 = verify_on_device(model, T[:4], "cortex-m4f")
    assert rv.per_prediction is not None and 200 < rv.per_prediction < 50_000
    assert "minstret" in rv.counter
    assert avr.per_prediction is not None and 500 < avr.per_prediction < 100_000
    assert "cycles" in avr.counter
    assert m4.per_prediction is None and "DWT" in m4.counter
