"""Property tests of the runtime over random valid models and inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fedge
from fedge.ir import Link, Task, TreeEnsemble
from strategies import models

SETTINGS = settings(max_examples=80, deadline=None)


@st.composite
def model_and_rows(draw):
    model = draw(models())
    finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
    values = finite | st.sampled_from([3.4e38, -3.4e38, 1e-45, 0.0, np.nan])
    X = draw(arrays(np.float64, (draw(st.integers(0, 6)), model.n_features), elements=values))
    if not fedge.ir.accepts_missing(model):
        X = np.nan_to_num(X, nan=0.0)
    return model, X


@SETTINGS
@given(model_and_rows(), st.sampled_from(["reference", "device"]))
def test_every_valid_model_evaluates_any_finite_input_quietly(case, mode) -> None:
    """No exception and no numpy warning (overflow is IEEE inf, as on a device)."""
    model, X = case
    scores = fedge.decision_function(model, X, mode=mode)
    assert scores.shape[0] == X.shape[0]
    labels = fedge.predict(model, X, mode=mode)
    assert labels.shape[0] == X.shape[0]
    if model.task is Task.CLASSIFICATION:
        assert np.isin(labels, model.classes).all()
        if model.link is not Link.NONE:
            proba = fedge.predict_proba(model, X, mode=mode)
            assert proba.shape == (X.shape[0], model.n_classes)


@SETTINGS
@given(model_and_rows())
def test_tree_ensembles_agree_across_modes_on_leaves(case) -> None:
    """Device mode reaches the same leaves: float32 thresholds are exact for float32 inputs."""
    model, X = case
    trees = model.steps[-1]
    if len(model.steps) != 1 or not isinstance(trees, TreeEnsemble):
        return
    from fedge.ir.nodes import round_threshold
    from fedge.ir.runtime import _walk

    X32 = X.astype(np.float32)
    t64 = trees.threshold.astype(np.float64)
    ref = _walk(trees, X32.astype(np.float64), t64)
    t32 = (
        trees.threshold
        if trees.threshold.dtype == np.float32
        else round_threshold(trees.threshold, trees.comparison)
    )
    dev = _walk(trees, X32, t32)
    np.testing.assert_array_equal(dev, ref)
