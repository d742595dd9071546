"""Distillation: temperature softening, soft-target training, MUNGE transfer rows, chains."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import fedge
from fedge.compression.distillation import KnowledgeDistiller, munge, soften
from fedge.errors import InvalidInputError, UnsupportedModelError


def test_temperature_softening() -> None:
    p = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(soften(p, 1.0), p)
    hot = soften(p, 4.0)
    np.testing.assert_allclose(hot.sum(axis=1), 1.0)
    assert hot[0, 3] == 0.0  # impossible stays impossible
    entropy = lambda q: -(q[q > 0] * np.log(q[q > 0])).sum()  # noqa: E731
    assert entropy(hot[0]) > entropy(p[0])
    np.testing.assert_allclose(hot[1], p[1])
    # T -> large: uniform over the classes the teacher allows
    np.testing.assert_allclose(soften(p, 1e6)[0, :3], 1 / 3, rtol=1e-5)
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(InvalidInputError, match="temperature"):
            soften(p, bad)


@pytest.fixture(scope="module")
def task():
    X, y = make_classification(3000, 20, n_informative=10, n_classes=3, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, random_state=0)
    Xtr, ytr = Xtr[:600], ytr[:600]
    teacher = RandomForestClassifier(150, random_state=0, n_jobs=1).fit(Xtr, ytr)
    return Xtr, ytr, Xte, yte, teacher


def test_a_logistic_student_of_a_logistic_teacher_recovers_it(task) -> None:
    """With T = 1 and only soft targets, the weighted log-loss is the cross-entropy against
    the teacher, whose minimiser is the teacher itself."""
    Xtr, ytr, Xte, _, _ = task
    teacher = LogisticRegression(C=0.5, max_iter=3000).fit(Xtr, ytr)
    student = KnowledgeDistiller(teacher, temperature=1.0, alpha=1.0).distill(
        LogisticRegression(C=0.5, max_iter=3000), Xtr
    )
    np.testing.assert_allclose(student.predict_proba(Xte), teacher.predict_proba(Xte), atol=0.05)
    assert np.mean(student.predict(Xte) == teacher.predict(Xte)) >= 0.97


def test_munge_transfer_rows_make_a_small_tree_better_than_training_it_directly(task) -> None:
    Xtr, ytr, Xte, yte, teacher = task
    direct = DecisionTreeClassifier(max_depth=8, random_state=0).fit(Xtr, ytr)
    distiller = KnowledgeDistiller(teacher, temperature=3.0, alpha=0.7, transfer_rows=3000)
    student = distiller.distill(DecisionTreeClassifier(max_depth=8, random_state=0), Xtr, ytr)
    gain = np.mean(student.predict(Xte) == yte) - np.mean(direct.predict(Xte) == yte)
    assert gain >= 0.02  # measured: +4.1 points with this seed
    report = distiller.report_
    assert report.rows == 600 and report.transfer_rows == 3000
    assert report.student_bytes < report.teacher_bytes / 10
    assert 0.5 < report.agreement <= 1.0


def test_munge_rows_stay_near_the_data_and_keep_missing_values() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    X[0, 1] = np.nan
    rows = munge(X, 400, seed=1)
    assert rows.shape == (400, 3)
    np.testing.assert_array_equal(rows, munge(X, 400, seed=1))  # seeded
    finite = rows[np.isfinite(rows).all(axis=1)]
    assert np.all(np.abs(finite) < 10)
    assert np.isnan(rows).any()  # a NaN value can travel, never appears from nothing
    assert not np.isnan(munge(X[1:], 200, seed=1)).any()
    with pytest.raises(InvalidInputError, match="two rows"):
        munge(X[:1], 5)


def test_progressive_and_self_distillation(task) -> None:
    Xtr, ytr, Xte, yte, teacher = task
    distiller = KnowledgeDistiller(teacher, temperature=2.0)
    chain = distiller.progressive(
        [
            RandomForestClassifier(20, max_depth=8, random_state=0, n_jobs=1),
            DecisionTreeClassifier(max_depth=6, random_state=0),
        ],
        Xtr,
        ytr,
    )
    assert [type(s).__name__ for s in chain] == ["RandomForestClassifier", "DecisionTreeClassifier"]
    assert distiller.report_.student_bytes == fedge.compression.lite_bytes(fedge.lower(chain[-1]))
    assert np.mean(chain[-1].predict(Xte) == yte) > 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small = LogisticRegression(max_iter=3000).fit(Xtr, ytr)
        again = KnowledgeDistiller(small, temperature=1.0).self_distill(small, Xtr, ytr)
    assert type(again) is LogisticRegression and again is not small
    assert np.mean(again.predict(Xte) == small.predict(Xte)) > 0.95


def test_a_regression_teacher_passes_its_predictions() -> None:
    X, y = make_regression(400, 5, noise=10.0, random_state=0)
    teacher = RandomForestRegressor(50, random_state=0, n_jobs=1).fit(X, y)
    student = KnowledgeDistiller(teacher, alpha=1.0).distill(
        DecisionTreeRegressor(max_depth=12, random_state=0), X
    )
    corr = np.corrcoef(student.predict(X), teacher.predict(X))[0, 1]
    assert corr > 0.99


def test_clear_errors(task) -> None:
    Xtr, ytr, _, _, teacher = task
    with pytest.raises(UnsupportedModelError, match="no sample_weight"):
        KnowledgeDistiller(teacher).distill(KNeighborsClassifier(), Xtr, ytr)
    with pytest.raises(InvalidInputError, match="alpha"):
        KnowledgeDistiller(teacher, alpha=1.5)
    with pytest.raises(InvalidInputError, match="temperature"):
        KnowledgeDistiller(teacher, temperature=0)
    with pytest.raises(InvalidInputError, match="labels for"):
        KnowledgeDistiller(teacher).distill(DecisionTreeClassifier(), Xtr, ytr[:10])
    with pytest.raises(InvalidInputError, match="not classes"):
        KnowledgeDistiller(teacher).distill(DecisionTreeClassifier(), Xtr, ytr + 7)
    with pytest.raises(InvalidInputError, match="20"):
        KnowledgeDistiller(teacher).distill(DecisionTreeClassifier(), Xtr[:, :4], ytr)


@pytest.mark.parametrize(
    ("spec", "task", "name"),
    [
        ("tree:8", "classification", "DecisionTreeClassifier"),
        ("forest:20:6", "regression", "RandomForestRegressor"),
        ("linear", "classification", "Pipeline"),
        ("mlp:16", "regression", "Pipeline"),
    ],
)
def test_student_specs(spec, task, name) -> None:
    from fedge.compression import student_from_spec

    assert type(student_from_spec(spec, task)).__name__ == name


@pytest.mark.parametrize("spec", ["tree", "tree:0", "forest:20", "mlp:x", "svm", "linear:3"])
def test_bad_student_specs_are_refused(spec) -> None:
    from fedge.compression import student_from_spec

    with pytest.raises(InvalidInputError, match="unknown student"):
        student_from_spec(spec, "classification")
