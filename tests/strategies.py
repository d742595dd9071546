"""Hypothesis strategies for random *valid* IR models (reused by every property test).

``models()`` draws a whole model; the building blocks draw its parts for a
given width, so a test can also ask for, say, only tree ensembles::

    from strategies import models, tree_ensembles

    @given(models())
    def test_something(model): ...

Sizes stay small (at most 5 features, 4 trees of depth 3, 2 hidden layers) so
that a property test with 100 examples runs in seconds. Values are finite and
within +-1e6 (float16: its whole finite range, +-65504, subnormals included);
float64 arrays use every bit of float64 (so serialisers must round-trip 17
significant digits), float32 and float16 arrays hold values of their own
precision. Every float tensor the IR allows in float16 is drawn in float16 too
(tree thresholds are float64/float32 only), and MLP layers may be
:class:`QuantizedDense` (int8/int16, per-tensor or per-channel, float or
dynamically quantized int8 inputs).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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
    QuantizedDense,
    Step,
    Task,
    TreeEnsemble,
)

__all__ = [
    "FLOAT_DTYPES",
    "THRESHOLD_DTYPES",
    "class_labels",
    "dense_chains",
    "float_arrays",
    "linear_steps",
    "metadata",
    "models",
    "prefix_steps",
    "quantized_dense_steps",
    "tree_ensembles",
]

FLOAT_DTYPES = st.sampled_from([np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16)])
# Tree thresholds (and the input precision they imply) are never float16.
THRESHOLD_DTYPES = st.sampled_from([np.dtype(np.float64), np.dtype(np.float32)])
_BOUND = 1e6
_INFINITIES = st.sampled_from([np.inf, -np.inf])


def _finite(dtype: np.dtype) -> st.SearchStrategy[float]:
    dtype = np.dtype(dtype)
    bound = min(_BOUND, float(np.finfo(dtype).max))  # float16 stops at 65504
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)


def float_arrays(
    shape: int | tuple[int, ...], dtype: np.dtype | str, *, infinite: bool = False
) -> st.SearchStrategy[np.ndarray]:
    """Finite float arrays of ``dtype`` (with +-inf too when ``infinite``: tree thresholds)."""
    dtype = np.dtype(dtype)
    elements = _finite(dtype) | _INFINITIES if infinite else _finite(dtype)
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def prefix_steps(draw: st.DrawFn, n_features: int) -> list[Step]:
    """Zero, one or both of an Impute and an Affine step (the preprocessing a Pipeline adds)."""
    steps: list[Step] = []
    dtype = draw(FLOAT_DTYPES)
    if draw(st.booleans()):
        steps.append(Impute(fill=draw(float_arrays(n_features, dtype))))
    if draw(st.booleans()):
        order = draw(st.sampled_from(list(AffineOrder)))
        scale = draw(float_arrays(n_features, dtype))
        if order is AffineOrder.SUBTRACT_DIVIDE:
            scale[scale == 0] = 1  # the IR refuses a division by zero
        offset = draw(float_arrays(n_features, dtype))
        steps.append(Affine(offset=offset, scale=scale, order=order))
    return steps


@st.composite
def linear_steps(draw: st.DrawFn, n_features: int, n_outputs: int) -> Linear:
    """``x @ W + b`` (linear and logistic regression, linear SVMs)."""
    dtype = draw(FLOAT_DTYPES)
    weights = draw(float_arrays((n_features, n_outputs), dtype))
    return Linear(weights=weights, bias=draw(float_arrays(n_outputs, dtype)))


_POSITIVE_FLOAT32 = st.floats(
    0, float(np.finfo(np.float32).max), exclude_min=True, allow_infinity=False, width=32
)


@st.composite
def quantized_dense_steps(
    draw: st.DrawFn, n_inputs: int, n_outputs: int, activation: Activation | None = None
) -> QuantizedDense:
    """An integer layer: int8 or int16 weights over their whole range, one scale and zero
    point per tensor or per output column (any positive float32 scale, any zero point in
    the weights' range), a float32 bias, float inputs or (int8 only) dynamic int8 inputs.
    ``activation`` defaults to a random one."""
    # (weights, input_bits): the dynamic int8 path first, hypothesis's favourite.
    dtype, input_bits = draw(st.sampled_from([(np.int8, 8), (np.int16, 0), (np.int8, 0)]))
    info = np.iinfo(dtype)
    n_scales = draw(st.sampled_from(sorted({1, n_outputs}, reverse=True)))
    return QuantizedDense(
        weights=draw(hnp.arrays(dtype, (n_inputs, n_outputs))),
        scale=draw(hnp.arrays(np.float32, n_scales, elements=_POSITIVE_FLOAT32)),
        zero_point=draw(
            hnp.arrays(np.int32, n_scales, elements=st.integers(int(info.min), int(info.max)))
        ),
        bias=draw(float_arrays(n_outputs, np.float32)),
        activation=draw(st.sampled_from(list(Activation))) if activation is None else activation,
        input_bits=input_bits,
    )


@st.composite
def dense_chains(draw: st.DrawFn, n_features: int, n_outputs: int) -> list[Dense | QuantizedDense]:
    """An MLP: 1 to 3 layers; the float layers share one precision, and each layer may be
    a QuantizedDense instead (one in three); the last layer has no activation."""
    dtype = draw(FLOAT_DTYPES)
    widths = [n_features, *draw(st.lists(st.integers(1, 5), max_size=2)), n_outputs]
    layers: list[Dense | QuantizedDense] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        last = i == len(widths) - 2
        activation = Activation.IDENTITY if last else draw(st.sampled_from(list(Activation)))
        if draw(st.integers(0, 2)) == 0:
            layers.append(draw(quantized_dense_steps(a, b, activation)))
            continue
        layers.append(
            Dense(
                weights=draw(float_arrays((a, b), dtype)),
                bias=draw(float_arrays(b, dtype)),
                activation=activation,
            )
        )
    return layers


@st.composite
def tree_ensembles(draw: st.DrawFn, n_features: int, n_outputs: int) -> TreeEnsemble:
    """Random forests grown by random splits.

    Trees have random shapes (single-leaf trees included), leaf rows may be shared
    between trees, each tree writes a leaf vector of width 1..n_outputs at its own
    offset, thresholds are float64 (with +-inf) or float32 (inputs then rounded
    to float32, as the IR requires), and leaves float64, float32 or float16.
    """
    n_trees = draw(st.integers(1, 4))
    width = draw(st.integers(1, n_outputs))
    leaf_dtype = draw(FLOAT_DTYPES)
    share_leaves = draw(st.booleans())
    feature: list[int] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[np.ndarray] = []

    def leaf() -> int:
        if share_leaves and leaves and draw(st.booleans()):
            return ~draw(st.integers(0, len(leaves) - 1))
        leaves.append(draw(float_arrays(width, leaf_dtype)))
        return ~(len(leaves) - 1)

    def grow(depth: int) -> int:
        if depth == 0 or draw(st.integers(0, 2)) == 0:
            return leaf()
        i = len(feature)
        feature.append(draw(st.integers(0, n_features - 1)))
        left.append(0)
        right.append(0)
        left[i] = grow(depth - 1)
        right[i] = grow(depth - 1)
        return i

    roots = [grow(draw(st.integers(0, 3))) for _ in range(n_trees)]
    n_nodes = len(feature)
    threshold_dtype = draw(THRESHOLD_DTYPES)
    if threshold_dtype == np.float32:
        input_precision = Precision.FLOAT32
    else:
        input_precision = draw(st.sampled_from([Precision.FLOAT64, Precision.FLOAT32]))
    return TreeEnsemble(
        feature=np.array(feature, np.int32),
        threshold=draw(float_arrays(n_nodes, threshold_dtype, infinite=True)),
        left=np.array(left, np.int32),
        right=np.array(right, np.int32),
        missing_left=draw(hnp.arrays(np.bool_, n_nodes)),
        leaf_values=np.array(leaves, leaf_dtype).reshape(-1, width),
        roots=np.array(roots, np.int32),
        tree_offset=draw(hnp.arrays(np.int32, n_trees, elements=st.integers(0, n_outputs - width))),
        n_features=n_features,
        n_outputs=n_outputs,
        base_score=draw(float_arrays(n_outputs, leaf_dtype)),
        comparison=draw(st.sampled_from(list(Comparison))),
        aggregation=draw(st.sampled_from(list(Aggregation))),
        input_precision=input_precision,
    )


# numpy strips trailing NULs from str arrays, and surrogates are not text: neither is a label.
_LABEL_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6
)


def class_labels(k: int) -> st.SearchStrategy[np.ndarray]:
    """``k`` distinct labels as int64, str (narrowest ``<U``), float64 or (k == 2) bool."""
    kinds = [
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=k, max_size=k, unique=True).map(
            lambda v: np.array(v, np.int64)
        ),
        st.lists(_LABEL_TEXT, min_size=k, max_size=k, unique=True).map(
            lambda v: np.array(v, dtype=str)
        ),
        st.lists(_finite(np.dtype(np.float64)), min_size=k, max_size=k, unique=True).map(
            lambda v: np.array(v, np.float64)
        ),
    ]
    if k == 2:
        kinds.append(st.permutations([False, True]).map(lambda v: np.array(v, np.bool_)))
    return st.one_of(kinds)


def metadata() -> st.SearchStrategy[dict[str, Any]]:
    """Small JSON objects, nested a little (provenance: library, version, estimator...)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=5)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=4,
    )
    return st.dictionaries(st.text(max_size=5), values, max_size=3)


def _links(task: Task, n_outputs: int) -> list[Link]:
    """The links the IR accepts for this task and number of outputs."""
    if task is Task.REGRESSION:
        return [Link.IDENTITY, Link.EXP]
    if n_outputs == 1:
        return [Link.LOGISTIC, Link.MODIFIED_HUBER, Link.NONE]
    return [Link.IDENTITY, Link.SOFTMAX, Link.LOGISTIC_OVR, Link.MODIFIED_HUBER, Link.NONE]


@st.composite
def models(draw: st.DrawFn, task: Task | None = None) -> Model:
    """A random valid model: optional Impute/Affine, then a linear, MLP or tree body.

    Parameters
    ----------
    task : Task, optional
        Only models of this task (default: both).
    """
    n_features = draw(st.integers(1, 5))
    task = task or draw(st.sampled_from(list(Task)))
    classes = None
    predict_from = PredictFrom.SCORES
    if task is Task.REGRESSION:
        n_outputs = draw(st.integers(1, 3))
        link = draw(st.sampled_from(_links(task, n_outputs)))
    else:
        k = draw(st.integers(2, 4))
        n_outputs = draw(st.sampled_from([1, 2] if k == 2 else [k]))
        link = draw(st.sampled_from(_links(task, n_outputs)))
        classes = draw(class_labels(k))
        rules = list(PredictFrom)
        if link is Link.NONE:  # no probabilities to predict from
            rules.remove(PredictFrom.PROBABILITIES)
        predict_from = draw(st.sampled_from(rules))
    body = draw(
        st.one_of(
            linear_steps(n_features, n_outputs).map(lambda step: [step]),
            dense_chains(n_features, n_outputs),
            tree_ensembles(n_features, n_outputs).map(lambda step: [step]),
        )
    )
    names = st.lists(st.text(max_size=6), min_size=n_features, max_size=n_features, unique=True)
    return Model(
        steps=(*draw(prefix_steps(n_features)), *body),
        task=task,
        n_features=n_features,
        link=link,
        classes=classes,
        predict_from=predict_from,
        feature_names=draw(st.none() | names.map(tuple)),
        metadata=draw(metadata()),
    )
