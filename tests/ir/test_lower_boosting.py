"""XGBoost and LightGBM: their own files load without pickle, and unsupported options are named."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

import fedge
from fedge.errors import ModelFormatError, NotFittedError, UnsupportedModelError
from fedge.ir import models_equal
from zoo import case

rng = np.random.default_rng(0)
X = rng.normal(size=(200, 4))
y = (X[:, 0] + X[:, 1] > 0).astype(int)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
@pytest.mark.parametrize("name", ["xgb_binary_nan", "xgb_multiclass", "xgb_poisson"])
def test_xgboost_files_load_without_pickle(tmp_path, name, suffix) -> None:
    c = case(name)
    path = tmp_path / f"model{suffix}"
    c.estimator.save_model(path)
    model = fedge.load(path)
    X_test = c.dataset.X_test
    margin = c.estimator.get_booster().predict(xgb.DMatrix(X_test), output_margin=True)
    np.testing.assert_array_equal(fedge.decision_function(model, X_test).astype(np.float32), margin)


def test_xgboost_json_is_lowered_without_importing_xgboost(tmp_path) -> None:
    import subprocess
    import sys

    path = tmp_path / "m.json"
    case("xgb_multiclass").estimator.save_model(path)
    code = (
        "import sys, fedge; m = fedge.load(sys.argv[1]); "
        "assert 'xgboost' not in sys.modules; print(m.steps[0].n_trees)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 20 * 4


@pytest.mark.parametrize("name", ["lgbm_binary_nan", "lgbm_multiclass_nan", "lgbm_gamma"])
def test_lightgbm_text_files_load(tmp_path, name) -> None:
    c = case(name)
    path = tmp_path / "model.txt"
    c.estimator.booster_.save_model(path)
    model = fedge.load(path)
    raw = c.estimator.predict(c.dataset.X_test, raw_score=True)
    np.testing.assert_array_equal(fedge.decision_function(model, c.dataset.X_test), raw)
    # The file has no labels; the estimator knows them.
    assert models_equal(
        fedge.lower(c.estimator.booster_), fedge.lower(lgb.Booster(model_file=str(path)))
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: xgb.XGBClassifier(n_estimators=2, missing=0.0), "missing=0.0"),
        (lambda: xgb.XGBClassifier(n_estimators=2, booster="gblinear"), "booster 'gblinear'"),
        (lambda: xgb.XGBRegressor(n_estimators=2, objective="reg:logistic"), "reg:logistic"),
        (
            lambda: lgb.LGBMRegressor(n_estimators=2, objective="xentropy", verbose=-1),
            "objective 'cross_entropy'",
        ),
        (lambda: lgb.LGBMRegressor(n_estimators=2, linear_tree=True, verbose=-1), "linear tree"),
    ],
)
def test_unsupported_options_are_named(make, message) -> None:
    est = make()
    target = np.clip(X[:, 0], 0, 1) if "reg:logistic" in message or "entropy" in message else y
    est.fit(X, target)
    with pytest.raises(UnsupportedModelError, match=message):
        fedge.lower(est)


def test_categorical_splits_are_refused() -> None:
    import pandas as pd

    df = pd.DataFrame({"a": X[:, 0], "c": pd.Categorical(rng.integers(0, 4, 200))})
    target = (df["c"].cat.codes % 2).to_numpy()
    xgb_model = xgb.XGBClassifier(n_estimators=3, enable_categorical=True, max_cat_to_onehot=1)
    with pytest.raises(UnsupportedModelError, match="categorical"):
        fedge.lower(xgb_model.fit(df, target))
    lgb_model = lgb.LGBMClassifier(n_estimators=3, verbose=-1, min_child_samples=5)
    with pytest.raises(UnsupportedModelError, match="pandas categorical"):
        fedge.lower(lgb_model.fit(df, target))
    # Categorical splits proper (many categories), trained on integer codes.
    codes = rng.integers(0, 12, 400)
    Xc = np.column_stack([rng.normal(size=400), codes])
    lgb_cat = lgb.LGBMClassifier(
        n_estimators=3, verbose=-1, min_child_samples=5, cat_smooth=1, min_data_per_group=5
    )
    lgb_cat.fit(Xc, (codes % 3 == 0).astype(int), categorical_feature=[1])
    with pytest.raises(UnsupportedModelError, match="categorical splits"):
        fedge.lower(lgb_cat)


def test_zero_as_missing_is_refused() -> None:
    Xz = X.copy()
    Xz[::3, 0] = 0.0
    est = lgb.LGBMClassifier(n_estimators=3, zero_as_missing=True, verbose=-1).fit(Xz, y)
    with pytest.raises(UnsupportedModelError, match="zero_as_missing"):
        fedge.lower(est)


def test_unfitted_and_malformed() -> None:
    with pytest.raises(NotFittedError):
        fedge.lower(xgb.XGBClassifier())
    with pytest.raises(NotFittedError):
        fedge.lower(lgb.LGBMClassifier())
    from fedge.ir.lower.lightgbm import lower_model_text
    from fedge.ir.lower.xgboost import lower_model_json

    with pytest.raises(ModelFormatError, match="no learner"):
        lower_model_json(b'{"hello": 1}')
    with pytest.raises(ModelFormatError, match="LightGBM"):
        lower_model_text("not a model")


def test_feature_names_come_along() -> None:
    import pandas as pd

    df = pd.DataFrame(X, columns=["age", "bmi", "bp", "s1"])
    model = fedge.lower(lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(df, X[:, 0]))
    assert model.feature_names == ("age", "bmi", "bp", "s1")
    model = fedge.lower(xgb.XGBRegressor(n_estimators=3).fit(df, X[:, 0]))
    assert model.feature_names == ("age", "bmi", "bp", "s1")
