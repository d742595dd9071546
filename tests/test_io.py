"""fedge.save and fedge.load: lite round trips, skops with a reviewed allowlist, trusted pickles."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
import skops.io as sio

import fedge
from fedge.errors import ModelFormatError, UntrustedFileError
from fedge.ir import models_equal
from zoo import case


@pytest.mark.parametrize("suffix", [".json", ".fedge"])
@pytest.mark.parametrize("name", ["forest_nan", "mlp_strings_logistic", "logreg_imputed"])
def test_saved_models_reload_bit_identical_and_predict_the_same(tmp_path, name, suffix) -> None:
    c = case(name)
    model = fedge.lower(c.estimator)
    path = tmp_path / f"m{suffix}"
    written = fedge.save(c.estimator, path)
    assert written == path.stat().st_size
    again = fedge.load(path)
    assert models_equal(again, model)
    np.testing.assert_array_equal(
        fedge.predict(again, c.dataset.X_test), c.estimator.predict(c.dataset.X_test)
    )


def test_same_model_gives_identical_bytes(tmp_path) -> None:
    est = case("forest_binary").estimator
    for suffix in (".json", ".fedge"):
        a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        fedge.save(est, a)
        fedge.save(fedge.lower(est), b)
        assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("name", ["tree_nan", "forest_regressor", "mlp_binary", "logreg_binary"])
def test_skops_files_load_with_the_reviewed_allowlist(tmp_path, name) -> None:
    est = case(name).estimator
    path = tmp_path / "m.skops"
    sio.dump(est, path)
    model = fedge.load(path)
    X = case(name).dataset.X_test
    np.testing.assert_array_equal(fedge.predict(model, X), est.predict(X))


class Sneaky:
    """A type no reviewer has seen: skops must not construct it without trust."""

    def __init__(self) -> None:
        self.payload = 1


def test_skops_file_with_unreviewed_types_needs_trust(tmp_path) -> None:
    path = tmp_path / "m.skops"
    sio.dump({"model": Sneaky()}, path)
    with pytest.raises(UntrustedFileError, match=r"test_io\.Sneaky.*trust=True"):
        fedge.load(path)


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickles_are_refused_unless_trusted(tmp_path, dump) -> None:
    est = case("logreg_binary").estimator
    path = tmp_path / ("m.pkl" if dump == "pickle" else "m.joblib")
    if dump == "pickle":
        path.write_bytes(pickle.dumps(est))
    else:
        joblib.dump(est, path)
    with pytest.raises(UntrustedFileError, match="runs code stored in the file"):
        fedge.load(path)
    model = fedge.load(path, trust=True)
    X = case("logreg_binary").dataset.X_test
    np.testing.assert_array_equal(fedge.predict(model, X), est.predict(X))


def test_pickle_without_a_pickle_suffix_is_still_refused(tmp_path) -> None:
    path = tmp_path / "innocent.bin"
    path.write_bytes(pickle.dumps(case("lasso").estimator, protocol=4))
    with pytest.raises(UntrustedFileError):
        fedge.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"hello world", "not a model file"), (b"", "not a model file"), (b"PK\x03\x04junk", "skops")],
)
def test_unknown_or_damaged_files(tmp_path, content, message) -> None:
    path = tmp_path / "x.dat"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        fedge.load(path)


def test_missing_file_and_bad_suffix(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="no such file"):
        fedge.load(tmp_path / "nope.fedge")
    with pytest.raises(ModelFormatError, match=r"\.json"):
        fedge.save(case("lasso").estimator, tmp_path / "m.txt")
