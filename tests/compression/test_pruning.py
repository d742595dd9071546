"""Pruning: lossless merging never changes a bit, cuts and selections match what the source
libraries compute for smaller models, and bad input is refused clearly."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeRegressor
from xgboost import XGBClassifier

import fedge
from fedge.compression import lite_bytes
from fedge.compression.pruning import ModelPruner, polynomial_sparsity
from fedge.errors import InvalidInputError, UnsupportedModelError
from fedge.ir import Model, Task, TreeEnsemble, validate
from fedge.ir.nodes import Aggregation, Comparison
from fedge.ir.runtime import step_output

_VALUES = [0.0, -0.0, 1.0, 2.5]  # few distinct leaves: identical subtrees are common


@st.composite
def repetitive_ensembles(draw: st.DrawFn) -> Model:
    n_features = draw(st.integers(1, 3))
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[float] = []

    def grow(depth: int) -> int:
        if depth == 0 or draw(st.integers(0, 3)) == 0:
            leaves.append(draw(st.sampled_from(_VALUES)))
            return ~(len(leaves) - 1)
        i = len(feature)
        feature.append(draw(st.integers(0, n_features - 1)))
        threshold.append(draw(st.sampled_from([-1.0, 0.0, 0.5])))
        left.append(0)
        right.append(0)
        left[i] = grow(depth - 1)
        right[i] = grow(depth - 1)
        return i

    roots = [grow(draw(st.integers(0, 4))) for _ in range(draw(st.integers(1, 4)))]
    n = len(feature)
    step = TreeEnsemble(
        feature=np.array(feature, np.int32),
        threshold=np.array(threshold, np.float64),
        left=np.array(left, np.int32),
        right=np.array(right, np.int32),
        missing_left=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool),
        leaf_values=np.array(leaves).reshape(-1, 1),
        roots=np.array(roots, np.int32),
        tree_offset=np.zeros(len(roots), np.int32),
        n_features=n_features,
        n_outputs=1,
        base_score=np.array([0.25]),
        comparison=draw(st.sampled_from(list(Comparison))),
        aggregation=draw(st.sampled_from(list(Aggregation))),
    )
    return Model(steps=(step,), task=Task.REGRESSION, n_features=n_features)


@settings(max_examples=150)
@given(model=repetitive_ensembles(), seed=st.integers(0, 2**32 - 1))
def test_lossless_pruning_never_changes_a_bit_and_never_grows(model: Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, np.nan], size=(40, model.n_features))
    pruned = ModelPruner(0.0, "lossless").prune_model(model)
    validate(pruned)
    for mode in ("reference", "device"):
        before = fedge.decision_function(model, X, mode=mode)
        after = fedge.decision_function(pruned, X, mode=mode)
        np.testing.assert_array_equal(before.view(np.uint8), after.view(np.uint8))
    # The pass never grows the model; its provenance record in the metadata costs a few bytes.
    assert lite_bytes(dataclasses.replace(pruned, metadata=model.metadata)) <= lite_bytes(model)
    assert pruned.steps[0].n_nodes <= model.steps[0].n_nodes


def test_polynomial_schedule_of_zhu_and_gupta() -> None:
    kw = {"initial": 0.0, "final": 0.8, "begin": 100, "n_steps": 10, "interval": 50}
    assert polynomial_sparsity(0, **kw) == 0.0
    assert polynomial_sparsity(100, **kw) == 0.0
    assert polynomial_sparsity(350, **kw) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert polynomial_sparsity(600, **kw) == pytest.approx(0.8)
    assert polynomial_sparsity(10_000, **kw) == pytest.approx(0.8)
    values = [polynomial_sparsity(t, **kw) for t in range(0, 700, 10)]
    assert values == sorted(values)  # never decreases
    with pytest.raises(InvalidInputError, match=r"final sparsity must be in \[0, 1\)"):
        polynomial_sparsity(0, initial=0.0, final=1.0, begin=0, n_steps=1)


def test_cutting_a_tree_equals_growing_it_shallower() -> None:
    """Cut at depth d with the training rows as weights, a regression tree's leaves are the
    means scikit-learn computes when it grows the same tree with max_depth=d."""
    X, y = load_diabetes(return_X_y=True)
    deep = DecisionTreeRegressor(random_state=0).fit(X, y)
    for depth in (1, 3, 5):
        pruned = ModelPruner(0.0, "depth", max_depth=depth).prune_model(deep, X)
        shallow = DecisionTreeRegressor(max_depth=depth, random_state=0).fit(X, y)
        np.testing.assert_allclose(fedge.predict(pruned, X), shallow.predict(X), rtol=1e-9)
        assert pruned.steps[-1].max_depth <= depth


def test_dropping_boosting_rounds_equals_xgboost_iteration_range() -> None:
    X, y = load_digits(return_X_y=True)
    xgb = XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0).fit(X, y)
    pruned = ModelPruner(0.75, "trees").prune_model(xgb)
    assert pruned.steps[-1].n_trees == 5 * 10
    margin = xgb.predict(X, output_margin=True, iteration_range=(0, 5))
    np.testing.assert_array_equal(fedge.decision_function(pruned, X).astype(np.float32), margin)


def test_forest_selection_keeps_the_best_trees_on_validation_data() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, ytr, Xva, yva = X[:400], y[:400], X[400:], y[400:]
    forest = RandomForestClassifier(40, max_depth=4, random_state=0).fit(Xtr, ytr)
    pruner = ModelPruner(0.75, "trees")
    pruned = pruner.prune_model(forest, Xva, yva)
    assert pruned.steps[-1].n_trees == 10
    full = np.mean(forest.predict(Xva) == yva)
    assert np.mean(fedge.predict(pruned, Xva) == yva) >= full - 0.005
    assert lite_bytes(pruned) < lite_bytes(fedge.lower(forest)) / 2
    assert "greedy forward selection" in pruner.report_.steps[0]


def test_neuron_pruning_shrinks_layers_and_keeps_the_mean_pre_activation() -> None:
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        deep = MLPClassifier((40, 20), max_iter=60, random_state=0).fit(X, y)
        one = MLPClassifier((40,), max_iter=60, random_state=0).fit(X, y)
    pruned = ModelPruner(0.5, "neurons").prune_model(deep, X)
    assert [s.n_outputs for s in pruned.steps] == [20, 10, 10]
    # Without fine-tuning, the bias correction is what keeps a lightly pruned net accurate
    # (measured: 0.90 with it, 0.76 without, 0.99 unpruned).
    light = ModelPruner(0.1, "neurons")
    with_rows = np.mean(fedge.predict(light.prune_model(deep, X), X) == y)
    without = np.mean(fedge.predict(light.prune_model(deep), X) == y)
    assert with_rows > 0.85 and with_rows > without + 0.05
    # The output layer's bias absorbs the removed neurons' mean output over X, so its mean
    # pre-activation over X is unchanged.
    source, pruned = fedge.lower(one), ModelPruner(0.5, "neurons").prune_model(one, X)
    h_src, h_new = step_output(source.steps[0], X), step_output(pruned.steps[0], X)
    z_src = h_src @ source.steps[1].weights + source.steps[1].bias
    z_new = h_new @ pruned.steps[1].weights + pruned.steps[1].bias
    np.testing.assert_allclose(z_new.mean(0), z_src.mean(0), rtol=1e-9, atol=1e-9)


def test_magnitude_pruning_zeroes_the_smallest_weights() -> None:
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((32,), max_iter=60, random_state=0).fit(X, y)
    pruned = ModelPruner(0.6, "magnitude").prune_model(mlp)
    for before, after in zip(fedge.lower(mlp).steps, pruned.steps, strict=True):
        zero = after.weights == 0
        assert zero.mean() >= 0.6 - 1 / after.weights.size
        assert np.abs(before.weights[zero]).max() <= np.abs(before.weights[~zero]).min()
    same_metadata = dataclasses.replace(pruned, metadata=fedge.lower(mlp).metadata)
    assert lite_bytes(same_metadata) <= lite_bytes(fedge.lower(mlp))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: ModelPruner(1.0), InvalidInputError, r"sparsity must be in \[0, 1\)"),
        (lambda: ModelPruner(-0.1), InvalidInputError, "sparsity must be"),
        (lambda: ModelPruner(0.5, "bogus"), InvalidInputError, "unknown pruning method"),
        (lambda: ModelPruner(0.5, "depth"), InvalidInputError, "needs max_depth"),
    ],
)
def test_bad_settings_are_refused(make, error, message) -> None:
    with pytest.raises(error, match=message):
        make()


def test_bad_input_to_a_pass_is_refused() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(5, max_depth=3, random_state=0).fit(X, y)
    with pytest.raises(InvalidInputError, match="needs validation data"):
        ModelPruner(0.5, "trees").prune_model(forest)
    with pytest.raises(UnsupportedModelError, match="prunes nothing"):
        ModelPruner(0.5, "magnitude").prune_model(forest)
    with pytest.raises(InvalidInputError, match="30"):
        ModelPruner(0.5, "trees").prune_model(forest, X[:, :5], y)


def test_passes_compose_pruning_a_quantized_forest() -> None:
    from fedge.compression import ModelQuantizer
    from fedge.ir import QuantizedTrees

    X, y = load_breast_cancer(return_X_y=True)
    Xtr, ytr, Xva, yva = X[:400], y[:400], X[400:], y[400:]
    forest = RandomForestClassifier(20, max_depth=6, random_state=0).fit(Xtr, ytr)
    quantized = ModelQuantizer("int8").quantize_model(forest)
    for pruner, data in (
        (ModelPruner(0.0, "lossless"), ()),
        (ModelPruner(0.5, "trees"), (Xva, yva)),
        (ModelPruner(0.0, "depth", max_depth=3), (Xtr,)),
    ):
        pruned = pruner.prune_model(quantized, *data)
        step = pruned.steps[-1]
        assert isinstance(step, QuantizedTrees) and step.leaf_values.dtype == np.int8
        assert np.mean(fedge.predict(pruned, Xva) == yva) >= 0.9
    lossless = ModelPruner(0.0, "lossless").prune_model(quantized)
    np.testing.assert_array_equal(
        fedge.decision_function(lossless, X), fedge.decision_function(quantized, X)
    )


def test_gradual_pruning_with_fine_tuning_keeps_an_mlp_accurate_at_80_percent() -> None:
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=300, random_state=0))
        mlp.fit(Xtr, ytr)
    before = [w.copy() for w in mlp[-1].coefs_]
    pruner = ModelPruner(0.8, "gradual")
    gradual = pruner.prune_model(mlp, Xtr, ytr)
    one_shot = ModelPruner(0.8, "magnitude").prune_model(mlp)
    for w_before, w_after in zip(before, mlp[-1].coefs_, strict=True):
        np.testing.assert_array_equal(w_before, w_after)  # the caller's MLP is untouched
    dense = [s for s in gradual.steps if hasattr(s, "weights")]
    assert all(np.mean(s.weights == 0) >= 0.8 - 1 / s.weights.size for s in dense)
    accuracy = np.mean(fedge.predict(gradual, Xte) == yte)
    source = np.mean(mlp.predict(Xte) == yte)
    assert accuracy >= source - 0.006  # measured: +0.2 points (one-shot: -33 points)
    assert accuracy > np.mean(fedge.predict(one_shot, Xte) == yte) + 0.2
    assert lite_bytes(gradual) < lite_bytes(fedge.lower(mlp)) / 3  # xz stores the zeros
    assert "rounds of pruning and fine-tuning" in pruner.report_.steps[0]
    with pytest.raises(UnsupportedModelError, match="fine-tunes a fitted scikit-learn MLP"):
        ModelPruner(0.5, "gradual").prune_model(fedge.lower(mlp), Xtr, ytr)
    with pytest.raises(InvalidInputError, match="prune_model\\(mlp, X_train, y_train\\)"):
        ModelPruner(0.5, "gradual").prune_model(mlp)
