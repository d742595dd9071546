"""AutoCompress with distilled students: real files, chosen only when smallest in budget."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from fedge.compression import lite_bytes
from fedge.compression.search import auto_compress
from fedge.ir import validate


def test_a_distilled_student_is_chosen_when_it_is_the_smallest_within_budget() -> None:
    """A big forest on a task one split solves: a distilled depth-4 tree loses nothing and
    is smaller than anything pruning and quantization make of the forest."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 8))
    y = (X[:, 0] + 0.1 * X[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(40, random_state=0, n_jobs=1).fit(X[:500], y[:500])
    result = auto_compress(forest, X[500:], y[500:], max_accuracy_drop=0.01, seed=0)
    plain = auto_compress(forest, X[500:], y[500:], max_accuracy_drop=0.01, distill=False)

    # chosen: the smallest candidate within budget, a student, smaller than without students
    assert result.best.passes[0].startswith("distill ")
    assert result.best.score >= result.baseline.score - 0.01
    assert result.best.bytes < plain.best.bytes
    assert result.best.bytes == min(
        c.bytes for c in result.candidates if c.score >= result.baseline.score - 0.01
    )
    assert result.best in result.front
    step = result.model.metadata["compression"][0]
    assert step["pass"] == "distillation" and step["rows"] == 200
    assert step["teacher"] == "RandomForestClassifier"
    assert step["transfer_rows"] == 1000  # 4 per learning row, at least 1,000
    np.testing.assert_array_equal(result.model.classes, [0, 1])

    # every candidate is a valid model measured by its real file
    students = [c for c in result.candidates if c.passes[0].startswith("distill ")]
    assert {c.passes[0] for c in students} == {
        "distill tree:4",
        "distill tree:6",
        "distill tree:8",
        "distill tree:10",
        "distill forest:10:6",
    }
    assert {c.passes[-1] for c in students} == {"lossless", "float16", "int8"}
    for c in result.candidates:
        assert validate(c.model) is c.model
        assert c.bytes == lite_bytes(c.model)

    # distill=False: no students, every other candidate the same
    assert not any(c.passes[0].startswith("distill") for c in plain.candidates)
    others = [c for c in result.candidates if not c.passes[0].startswith("distill")]
    assert [(c.passes, c.bytes, c.score) for c in others] == [
        (c.passes, c.bytes, c.score) for c in plain.candidates
    ]
    assert plain.baseline == result.baseline


def test_linear_models_get_no_student_and_regressors_get_tree_students() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    linear = LogisticRegression().fit(X[:100], y[:100])
    with_students = auto_compress(linear, X[100:], y[100:])
    assert [c.passes for c in with_students.candidates] == [
        c.passes for c in auto_compress(linear, X[100:], y[100:], distill=False).candidates
    ]
    Xr, yr = make_regression(300, 5, noise=5.0, random_state=0)
    forest = RandomForestRegressor(20, max_depth=8, random_state=0, n_jobs=1).fit(
        Xr[:150], yr[:150]
    )
    result = auto_compress(forest, Xr[150:], yr[150:], max_accuracy_drop=0.05)
    students = [c for c in result.candidates if c.passes[0] == "distill tree:6"]
    assert len(students) == 3 and all(np.isfinite(c.score) for c in students)
    assert students[0].model.metadata["source"]["estimator"] == "DecisionTreeRegressor"
    assert students[0].model.metadata["compression"][0]["teacher"] == "RandomForestRegressor"
