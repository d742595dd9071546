"""Hypothesis strategies for random *valid* IR models (reused by every property test)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import strategies as st

from fedge.ir import (
    Activation,
    Affine,
    AffineOrder,
    Aggregation,
    Comparison,
    Dense,
    Impute,
    Linear,
    Link,
    Model,
    Precision,
    PredictFrom,
    Task,
    TreeEnsemble,
)

FLOATS = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


def arrays(draw, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    n = int(np.prod(shape))
    return np.array(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype=dtype).reshape(shape)


@st.composite
def prefix_steps(draw, n_features: int) -> list:
    steps = []
    dtype = draw(st.sampled_from(["float64", "float32"]))
    if draw(st.booleans()):
        steps.append(Impute(fill=arrays(draw, (n_features,), dtype)))
    if draw(st.booleans()):
        scale = arrays(draw, (n_features,), dtype)
        scale[scale == 0] = 1
        steps.append(
            Affine(
                offset=arrays(draw, (n_features,), dtype),
                scale=scale,
                order=draw(st.sampled_from(list(AffineOrder))),
            )
        )
    return steps


@st.composite
def dense_chain(draw, n_features: int, n_outputs: int) -> list:
    dtype = draw(st.sampled_from(["float64", "float32"]))
    widths = [n_features, *draw(st.lists(st.integers(1, 5), max_size=2)), n_outputs]
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        act = (
            Activation.IDENTITY if i == len(widths) - 2 else draw(st.sampled_from(list(Activation)))
        )
        layers.append(
            Dense(
                weights=arrays(draw, (a, b), dtype), bias=arrays(draw, (b,), dtype), activation=act
            )
        )
    if len(layers) == 1 and draw(st.booleans()):
        return [Linear(weights=layers[0].weights, bias=layers[0].bias)]
    return layers


@st.composite
def tree_ensembles(draw, n_features: int, n_outputs: int) -> TreeEnsemble:
    """Random forests grown by random splits; trees write a leaf vector at an offset."""
    n_trees = draw(st.integers(1, 4))
    width = draw(st.integers(1, n_outputs))
    feature, left, right, missing, leaves, roots = [], [], [], [], [], []

    def grow(depth: int) -> int:
        if depth == 0 or draw(st.integers(0, 2)) == 0:
            leaves.append(draw(st.lists(FLOATS, min_size=width, max_size=width)))
            return ~(len(leaves) - 1)
        i = len(feature)
        feature.append(draw(st.integers(0, n_features - 1)))
        missing.append(draw(st.booleans()))
        left.append(0)
        right.append(0)
        left[i] = grow(depth - 1)
        right[i] = grow(depth - 1)
        return i

    for _ in range(n_trees):
        roots.append(grow(draw(st.integers(0, 3))))
    n = len(feature)
    f32 = draw(st.booleans())
    special = st.sampled_from([np.inf, -np.inf]) if not f32 else st.nothing()
    threshold = draw(st.lists(FLOATS | special, min_size=n, max_size=n))
    dtype = draw(st.sampled_from(["float64", "float32"]))
    return TreeEnsemble(
        feature=np.array(feature, np.int32),
        left=np.array(left, np.int32),
        right=np.array(right, np.int32),
        missing_left=np.array(missing, bool),
        threshold=np.array(threshold, np.float32 if f32 else np.float64),
        leaf_values=np.array(leaves, dtype).reshape(-1, width),
        roots=np.array(roots, np.int32),
        tree_offset=np.array(
            draw(st.lists(st.integers(0, n_outputs - width), min_size=n_trees, max_size=n_trees)),
            np.int32,
        ),
        n_features=n_features,
        n_outputs=n_outputs,
        base_score=arrays(draw, (n_outputs,), dtype),
        comparison=draw(st.sampled_from(list(Comparison))),
        aggregation=draw(st.sampled_from(list(Aggregation))),
        input_precision=Precision.FLOAT32 if f32 else draw(st.sampled_from(list(Precision))),
    )


CLASS_LABELS = st.sampled_from(
    [
        lambda k: np.arange(k, dtype=np.int64) * 3 - 2,
        lambda k: np.array([f"class é{i}" for i in range(k)]),
        lambda k: np.linspace(-1.5, 2.5, k),
        lambda k: np.array([False, True]) if k == 2 else np.arange(k),
    ]
)


@st.composite
def models(draw) -> Model:
    n_features = draw(st.integers(1, 5))
    task = draw(st.sampled_from(list(Task)))
    if task is Task.REGRESSION:
        n_outputs, classes = draw(st.integers(1, 3)), None
        link = draw(st.sampled_from([Link.IDENTITY, Link.EXP]))
        predict_from = PredictFrom.SCORES
    else:
        k = draw(st.integers(2, 4))
        n_outputs = draw(st.sampled_from([1, k] if k == 2 else [k]))
        links = (
            [Link.LOGISTIC, Link.MODIFIED_HUBER, Link.NONE]
            if n_outputs == 1
            else [Link.IDENTITY, Link.SOFTMAX, Link.LOGISTIC_OVR, Link.MODIFIED_HUBER, Link.NONE]
        )
        link = draw(st.sampled_from(links))
        classes = draw(CLASS_LABELS)(k)
        predict_from = (
            PredictFrom.SCORES if link is Link.NONE else draw(st.sampled_from(list(PredictFrom)))
        )
    body = draw(
        st.one_of(
            dense_chain(n_features, n_outputs),
            tree_ensembles(n_features, n_outputs).map(lambda t: [t]),
        )
    )
    names = draw(st.none() | st.just(tuple(f"f{i}" for i in range(n_features))))
    return Model(
        steps=(*draw(prefix_steps(n_features)), *body),
        task=task,
        n_features=n_features,
        link=link,
        classes=classes,
        predict_from=predict_from,
        feature_names=names,
        metadata=draw(
            st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=2)
        ),
    )
