"""InferenceOptimizer: backends agree, the cache is exact, micro-batching keeps the pairing."""

import asyncio

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

import fedge
from fedge.deployment.inference_optimizer import InferenceOptimizer, compare_backends
from fedge.errors import InvalidInputError
from tools import require_tool


@pytest.fixture(scope="module")
def forest():
    X, y = make_classification(600, 6, random_state=0)
    X[::7, 2] = np.nan
    model = RandomForestClassifier(20, max_depth=6, random_state=0).fit(X[:400], y[:400])
    return model, X[400:]


@pytest.mark.parametrize("backend", ["compiled", "numpy", "source"])
def test_every_backend_agrees_with_the_numpy_runtime(forest, backend):
    if backend == "compiled":
        require_tool("gcc", "gcc")
    model, X = forest
    expected = fedge.predict(fedge.lower(model), X, mode="device")
    with InferenceOptimizer(model, backend=backend, chunk_size=37, threads=3) as opt:
        assert np.array_equal(opt.predict(X), expected)
        assert [opt.predict_one(row) for row in X[:20]] == list(expected[:20])


def test_the_cache_returns_exactly_what_was_computed_and_never_collides():
    X, y = make_regression(50, 4, random_state=0)
    model = LinearRegression().fit(X, y)
    with InferenceOptimizer(model, backend="numpy", cache_size=1000) as opt:
        row = X[0].copy()
        first = opt.predict_one(row)
        assert opt.predict_one(row) == first and opt.cache.hits == 1
        # a neighbour one ulp apart, another row and signed zeros are different keys
        variants = [np.nextafter(row, np.inf), X[1].copy()]
        zero = row.copy()
        zero[1] = 0.0
        negative_zero = zero.copy()
        negative_zero[1] = -0.0
        variants += [zero, negative_zero]
        for variant in variants:
            direct = fedge.predict(opt.model, variant.reshape(1, -1), mode="device")[0]
            assert opt.predict_one(variant) == direct
        assert opt.cache.hits == 1  # none of them hit the first row's entry
        assert opt.cache.hit_rate == pytest.approx(1 / 6)


def test_the_cache_is_bounded_lru():
    X, y = make_regression(20, 3, random_state=1)
    with InferenceOptimizer(LinearRegression().fit(X, y), backend="numpy", cache_size=5) as opt:
        for row in X:
            opt.predict_one(row)
        assert len(opt.cache.data) == 5
        opt.predict_one(X[0])  # evicted long ago: a miss
        assert opt.cache.hits == 0


def test_micro_batching_keeps_each_answer_with_its_request(forest):
    model, X = forest
    expected = fedge.predict(fedge.lower(model), X, mode="device")

    async def many():
        opt = InferenceOptimizer(model, backend="numpy", max_batch=16, max_wait_ms=2.0)
        rows = list(X[:150])
        order = np.random.default_rng(0).permutation(len(rows))
        answers = await asyncio.gather(*(opt.apredict(rows[i]) for i in order))
        return order, answers

    order, answers = asyncio.run(many())
    assert [expected[i] for i in order] == list(answers)


def test_bad_rows_are_refused(forest):
    model, _ = forest
    with InferenceOptimizer(model, backend="numpy") as opt:
        with pytest.raises(InvalidInputError, match="6 features"):
            opt.predict(np.zeros((2, 5)))
        with pytest.raises(InvalidInputError, match="Inf"):
            opt.predict_one(np.array([np.inf, 0, 0, 0, 0, 0.0]))
        with pytest.raises(InvalidInputError, match="unknown backend"):
            InferenceOptimizer(model, backend="gpu")


def test_benchmark_reports_every_figure(forest):
    model, X = forest
    reports = compare_backends(model, X, backends=("numpy", "source"))
    assert [r.backend for r in reports] == ["numpy", "source"]
    for report in reports:
        assert 0 < report.p50_us <= report.p95_us <= report.p99_us
        assert report.batch_rows_per_s > 0 and report.model_bytes > 0
        assert report.cache_hit_rate == pytest.approx(0.5)
        # the percentiles are those of the raw samples the report carries
        assert len(report.latencies_us) == min(500, len(X))
        assert report.p50_us == pytest.approx(float(np.percentile(report.latencies_us, 50)))
        assert "latencies_us" not in report.as_dict()
        assert report.as_dict(samples=True)["latencies_us"] == list(report.latencies_us)


def test_a_bad_row_fails_only_its_own_request(forest):
    model, X = forest

    async def mixed():
        opt = InferenceOptimizer(model, backend="numpy", max_batch=8, max_wait_ms=5.0)
        bad = X[1].copy()
        bad[0] = np.inf
        return await asyncio.gather(
            opt.apredict(X[0]), opt.apredict(bad), opt.apredict(X[2]), return_exceptions=True
        )

    first, second, third = asyncio.run(mixed())
    expected = fedge.predict(fedge.lower(model), X[[0, 2]], mode="device")
    assert isinstance(second, InvalidInputError)
    assert [first, third] == list(expected)
