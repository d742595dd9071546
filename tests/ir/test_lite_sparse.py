"""Sparse arrays in the binary lite format (version 3): exact, smaller, checked, and no
change at all to the files of models with nothing worth storing sparse."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import lzma
import math
import struct
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fedge
from fedge.compression import ModelPruner, ModelQuantizer
from fedge.errors import IntegrityError, ModelFormatError
from fedge.ir import (
    Activation,
    Affine,
    Dense,
    Linear,
    Link,
    Model,
    PredictFrom,
    QuantizedDense,
    Task,
    TreeEnsemble,
    lite,
    models_equal,
)
from zoo import case

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I32 = np.int32


# =========================================================================== fixtures
def ramp(shape: tuple[int, ...], dtype: Any, sparsity: float = 0.0) -> np.ndarray:
    """Deterministic, incompressible values, none zero and each exact in ``dtype`` (the
    splitmix64 hash of the index: no RNG whose stream could change between numpy
    releases), with a scattered ``sparsity`` of them zeroed."""
    x = np.arange(math.prod(shape), dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)  # wraps modulo 2**64
    x ^= x >> np.uint64(31)
    kind = np.dtype(dtype)
    bits = 7 if kind.kind == "i" else 11 if kind == np.float16 else 24
    values = (x >> np.uint64(64 - bits)).astype(np.float64) - 2 ** (bits - 1)
    values[values == 0] = 1
    if kind.kind == "f":
        values /= 2 ** (bits // 2)
    values[(x % np.uint64(1000)).astype(np.int64) < round(sparsity * 1000)] = 0
    return values.astype(dtype).reshape(shape)


def linear_model(dtype: Any = np.float64, sparsity: float = 0.0, n_in: int = 12) -> Model:
    return Model(
        steps=(Linear(weights=ramp((n_in, 3), dtype, sparsity), bias=ramp((3,), dtype)),),
        task=Task.REGRESSION,
        n_features=n_in,
    )


def mlp_model(dtype: Any = np.float32, sparsity: float = 0.0, width: int = 16) -> Model:
    steps = (
        Affine(offset=ramp((20,), dtype), scale=np.full(20, 0.5, dtype)),
        Dense(ramp((20, width), dtype, sparsity), ramp((width,), dtype), Activation.RELU),
        Dense(ramp((width, 4), dtype, sparsity), ramp((4,), dtype), Activation.IDENTITY),
    )
    return Model(
        steps=steps,
        task=Task.CLASSIFICATION,
        n_features=20,
        link=Link.SOFTMAX,
        classes=np.arange(4),
    )


def int8_model(sparsity: float = 0.0) -> Model:
    layer = QuantizedDense(
        weights=ramp((20, 8), np.int8, sparsity),
        scale=np.full(8, 0.03125, np.float32),
        zero_point=np.zeros(8, np.int32),
        bias=ramp((8,), np.float32),
        activation=Activation.RELU,
        input_bits=8,
    )
    last = Dense(ramp((8, 1), np.float32), ramp((1,), np.float32), Activation.IDENTITY)
    return Model(steps=(layer, last), task=Task.REGRESSION, n_features=20)


def chain_forest(n_trees: int = 40) -> Model:
    """Trees that are chains of 3 splits (4 leaves each); leaves one-hot like a pure-leaf
    classifier forest (3 of 4 values zero), every missing_left false but the first."""
    feature, left, right, roots, rows = [], [], [], [], []
    for t in range(n_trees):
        base = 3 * t
        roots.append(base)
        for d in range(3):
            feature.append((t + d) % 5)
            left.append(~(4 * t + d))
            right.append(base + d + 1 if d < 2 else ~(4 * t + 3))
        rows += [np.eye(4)[(t + k) % 4] for k in range(4)]
    n_nodes = len(feature)
    missing = np.zeros(n_nodes, bool)
    missing[0] = True
    return Model(
        steps=(
            TreeEnsemble(
                feature=np.array(feature, I32),
                threshold=(np.arange(n_nodes) % 7 + 0.5),
                left=np.array(left, I32),
                right=np.array(right, I32),
                missing_left=missing,
                leaf_values=np.array(rows),
                roots=np.array(roots, I32),
                tree_offset=np.zeros(n_trees, I32),
                n_features=5,
                n_outputs=4,
                base_score=np.zeros(4),
            ),
        ),
        task=Task.CLASSIFICATION,
        n_features=5,
        classes=np.arange(4),
        predict_from=PredictFrom.PROBABILITIES,
    )


def version_of(blob: bytes) -> int:
    return struct.unpack_from("<H", blob, 6)[0]


def split_binary(blob: bytes) -> tuple[dict[str, Any], bytes]:
    header_len = lite._PREFIX.unpack_from(blob)[3]
    start = lite._HEAD_SIZE
    return json.loads(blob[start : start + header_len]), blob[start + header_len :]


def reseal(header: Any, body: bytes, *, flags: int = 0, version: int = 3) -> bytes:
    """A file with a *correct* digest: the parser must catch what the hash cannot."""
    raw = lite._canonical_compact(header)
    prefix = lite._PREFIX.pack(lite.MAGIC, version, flags, len(raw), len(body))
    return prefix + hashlib.sha256(prefix + raw + body).digest() + raw + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def forge(model: Model, force: dict[tuple[int, str], str] | None = None) -> tuple[Any, bytes]:
    """A binary (header, raw data) as the writer builds its sparse candidate, but with the
    encodings in ``force`` ((step, field) -> dense/bitmap/indices) imposed."""
    force = force or {}
    where = iter(
        (i, key)
        for i, step in enumerate(model.steps)
        for key in lite._STEPS[lite._STEP_NAMES[type(step)]].arrays
    )
    chunks: list[bytes] = []

    def put(arr: np.ndarray) -> dict[str, Any]:
        ref, raw = lite._array_bytes(arr, sparse=True)
        encoding = force.get(next(where), ref.get("sparse", "dense"))
        ref = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
        if encoding == "dense":
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        else:
            mask = lite._nonzero(arr)
            raw = lite._sparse_bytes(arr, mask, encoding)
            ref.update(sparse=encoding, nonzero=int(mask.sum()))
        ref.update(offset=sum(map(len, chunks)), nbytes=len(raw))
        chunks.append(raw)
        return ref

    return lite._model_doc(model, put), b"".join(chunks)


def arrays_of(header: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for step in header["steps"] for v in step.values() if type(v) is dict]


# Written by fedge before sparse arrays existed (version 2): their SHA-256 (.fedge, .json).
DENSE_SHA256 = {
    "linear_f64": (
        "bb9dc6ace2724c6e66fa1d8c0615a42a1367f082896c0f293b0e97155dc40157",
        "c0fa76961cc6c576586f22508aff08b40f52eb3a2463048748b1821256351ddb",
    ),
    "linear_f16": (
        "4c853a63796cc08421ecb3908fc2134e6480f59c6c666b7624974e860a00770b",
        "b1a440aee6d4ff11975a41fd1fd187654786d90918e2ac6370c90458df3bd68c",
    ),
    "mlp_f32": (
        "751cb13f49ad82cf357bf6491c2cf8f3d8b1475eb84271a7ebb5d30b9c8f1afb",
        "fe2e8aa325417a4d34f3444da5a2521e3aedba0ca83bfecbf11e959dae505b98",
    ),
    "mlp_f64_xz": (
        "a5f82f58776253e2ae0f8953f93b18cddbf15ccd46a94ac1d55c7371819f9cc6",
        "5032a0089cc80e5975e2f878d71eb1e104928d59e9cf5deb3b01190e8b2df309",
    ),
    "int8": (
        "5e769d319285953ff2ca489ffdad4a9f1b0a026ef3f3344420c62b305438e41d",
        "beb7fa68845a5b45401a92d62a7364faad03d119dd6bf384ee4a88355c9b562c",
    ),
    # one-hot leaves and a mostly-false missing_left: zeros, but xz does better dense
    "chain_forest": (
        "af4d07733e95f84a1416b99d9832432d4aa5d3f65252f6c94a7d76819932b95e",
        "5d0493e3c2da1be66208e53d74c6b4e7ac6a91fcbccc095bf51ac03436021e78",
    ),
}
DENSE_MODELS = {
    "linear_f64": linear_model,
    "linear_f16": lambda: linear_model(np.float16),
    "mlp_f32": mlp_model,
    "mlp_f64_xz": lambda: mlp_model(np.float64, width=64),
    "int8": int8_model,
    "chain_forest": chain_forest,
}

# Pruned (80% zero) linear models as fedge wrote them before version 3: (model, file, the
# SHA-256 of the model's JSON file, which sparse storage never changes).
OLD_FILES = {
    "v1 float32 raw": (
        lambda: linear_model(np.float32, 0.8, n_in=4),
        "RkVER0UAAQAAAB4BAAA8AAAAAAAAABF0zhBPfdE0iZVRz2WKQc1w2U4u0MnAVWDcJ/piXD35eyJjbGFzc2VzIj"
        "pudWxsLCJmZWF0dXJlX25hbWVzIjpudWxsLCJsaW5rIjoiaWRlbnRpdHkiLCJtZXRhZGF0YSI6e30sIm5fZmVh"
        "dHVyZXMiOjQsInByZWRpY3RfZnJvbSI6InNjb3JlcyIsInN0ZXBzIjpbeyJiaWFzIjp7ImR0eXBlIjoiZmxvYX"
        "QzMiIsIm5ieXRlcyI6MTIsIm9mZnNldCI6NDgsInNoYXBlIjpbM119LCJ0eXBlIjoibGluZWFyIiwid2VpZ2h0"
        "cyI6eyJkdHlwZSI6ImZsb2F0MzIiLCJuYnl0ZXMiOjQ4LCJvZmZzZXQiOjAsInNoYXBlIjpbNCwzXX19XSwidG"
        "FzayI6InJlZ3Jlc3Npb24ifQAAAAAAAAAAAAAAAAAAAADoYIzDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAcCo8"
        "xFBBxERoUYhDqMG6Qw==",
    ),
    "v2 float16 raw": (
        lambda: linear_model(np.float16, 0.8),
        "RkVER0UAAgAAAB8BAABOAAAAAAAAAIbDZHASeBaV+kLwLTZiJfPar6/JaPSwI1DJCtBnBQsMeyJjbGFzc2VzIj"
        "pudWxsLCJmZWF0dXJlX25hbWVzIjpudWxsLCJsaW5rIjoiaWRlbnRpdHkiLCJtZXRhZGF0YSI6e30sIm5fZmVh"
        "dHVyZXMiOjEyLCJwcmVkaWN0X2Zyb20iOiJzY29yZXMiLCJzdGVwcyI6W3siYmlhcyI6eyJkdHlwZSI6ImZsb2"
        "F0MTYiLCJuYnl0ZXMiOjYsIm9mZnNldCI6NzIsInNoYXBlIjpbM119LCJ0eXBlIjoibGluZWFyIiwid2VpZ2h0"
        "cyI6eyJkdHlwZSI6ImZsb2F0MTYiLCJuYnl0ZXMiOjcyLCJvZmZzZXQiOjAsInNoYXBlIjpbMTIsM119fV0sIn"
        "Rhc2siOiJyZWdyZXNzaW9uIn0AAAAAAAAAAGjEAAAAAAAAAAAAAAAA5MkAAAAAWMVAPwAAAAAAAAAAAAAAAAAA"
        "jE4AAAAAAAAAAAAAAAAcSQAAAAAAAAAAAAAiTkBE0EU=",
    ),
    "v2 float32 xz": (
        lambda: linear_model(np.float32, 0.8),
        "RkVER0UAAgABACIBAAB8AAAAAAAAABg75zdRpYex3ItegKFI+inwcxEKePINlcR1LgWEb2L9eyJjbGFzc2VzIj"
        "pudWxsLCJmZWF0dXJlX25hbWVzIjpudWxsLCJsaW5rIjoiaWRlbnRpdHkiLCJtZXRhZGF0YSI6e30sIm5fZmVh"
        "dHVyZXMiOjEyLCJwcmVkaWN0X2Zyb20iOiJzY29yZXMiLCJzdGVwcyI6W3siYmlhcyI6eyJkdHlwZSI6ImZsb2"
        "F0MzIiLCJuYnl0ZXMiOjEyLCJvZmZzZXQiOjE0NCwic2hhcGUiOlszXX0sInR5cGUiOiJsaW5lYXIiLCJ3ZWln"
        "aHRzIjp7ImR0eXBlIjoiZmxvYXQzMiIsIm5ieXRlcyI6MTQ0LCJvZmZzZXQiOjAsInNoYXBlIjpbMTIsM119fV"
        "0sInRhc2siOiJyZWdyZXNzaW9uIn2cAAAAAAAAAP03elhaAAAA/xLZQQIAIQEWAAAAdC/lo+AAmwA5XQAAbVtQ"
        "kEr6dZLPnlsozrlCMuo6aPhiO+aAeYi6RVsqRrFSt6rpjWfNScQS+sZzJERtY7XCrCuNAAAAAAAAAAFNnAEAAA"
        "AbYNncqAAK/AIAAAAAAFla",
    ),
}


# =========================================================================== compatibility
@pytest.mark.parametrize("name", list(DENSE_MODELS))
def test_models_with_nothing_worth_storing_sparse_keep_their_bytes(name) -> None:
    model = DENSE_MODELS[name]()
    blob, text = lite.to_binary_bytes(model), lite.to_json_bytes(model)
    assert (sha(blob), sha(text)) == DENSE_SHA256[name]
    assert version_of(blob) <= 2 and "sparse" not in blob.decode("latin-1")
    assert models_equal(lite.from_binary_bytes(blob), model)


@pytest.mark.parametrize("name", list(OLD_FILES))
def test_files_written_before_version_3_still_load(name) -> None:
    make, encoded = OLD_FILES[name]
    model, old = make(), base64.b64decode(encoded)
    assert version_of(old) in (1, 2)
    assert models_equal(lite.from_binary_bytes(old), model)
    new = lite.to_binary_bytes(model)  # the same model, with its zeros stored sparse now
    assert version_of(new) == 3 and len(new) < len(old)
    assert models_equal(lite.from_binary_bytes(new), model)
    assert lite._binary_file(model, sparse=False)[0] == old  # the dense candidate is the old file


def test_the_json_encoding_never_stores_sparse() -> None:
    """JSON stays dense (and its version and bytes unchanged); a sparse key is refused."""
    model = linear_model(np.float32, 0.9, n_in=40)
    assert version_of(lite.to_binary_bytes(model)) == 3
    text = lite.to_json_bytes(model)
    assert text.startswith(lite._JSON_PREFIXES[1])
    doc = json.loads(text)["model"]
    doc["steps"][0]["weights"].update(sparse="bitmap", nonzero=12)
    digest = hashlib.sha256(lite._canonical_compact(doc)).hexdigest()
    for version in (1, 3):
        with pytest.raises(ModelFormatError, match=r"weights has unknown keys: nonzero, sparse"):
            lite.from_json_bytes(lite._json_text(doc, digest, version))


# =========================================================================== exactness
STORED_DTYPES = [np.dtype(name) for name in lite._DTYPES]


@st.composite
def sparse_arrays(draw: st.DrawFn) -> np.ndarray:
    """Any bit patterns (NaN payloads, -0.0, subnormals, infinities) of any stored dtype,
    with a drawn fraction of elements zeroed."""
    dtype = draw(st.sampled_from(STORED_DTYPES))
    shape = draw(st.sampled_from([(0,), (1,), (7,), (8,), (9,), (3, 5), (16, 16), (17, 16)]))
    n = math.prod(shape)
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    arr = np.frombuffer(raw, dtype=np.uint8 if dtype.kind == "b" else dtype).copy()
    if dtype.kind == "b":
        arr = (arr & 1).astype(bool)
    keep = draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 9)))
    arr[keep < draw(st.integers(0, 10))] = 0  # 0 to 100% of the elements zeroed
    return arr.reshape(shape)


def decode_alone(ref: dict[str, Any], body: bytes) -> tuple[np.ndarray, int]:
    spec = lite._Array((ref["dtype"],), infinite=True)
    ref = {**ref, "offset": 0, "nbytes": len(body)}
    arr, cursor, _, _ = lite._binary_array(ref, "x", spec, memoryview(body), 0, 2**40)
    return arr, cursor


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@FAST
@given(sparse_arrays())
def test_every_encoding_of_every_stored_dtype_round_trips_bit_for_bit(arr) -> None:
    mask = lite._nonzero(arr)
    n, nonzero = arr.size, int(mask.sum())
    for encoding in lite._SPARSE_ENCODINGS:
        data = lite._sparse_bytes(arr, mask, encoding)
        assert len(data) == lite._stored_size(encoding, n, nonzero, arr.dtype)
        flat = lite._sparse_array(memoryview(data), encoding, n, nonzero, arr.dtype, "x")
        assert same_bits(flat.reshape(arr.shape), arr)
    ref, data = lite._array_bytes(arr, sparse=True)  # the writer's own choice
    assert ref.get("sparse", "dense") == lite._encoding_for(n, nonzero, arr.dtype)
    back, cursor = decode_alone(ref, data)
    assert same_bits(back, arr) and cursor == len(data)


def test_negative_zero_and_nan_payloads_are_values_not_zeros() -> None:
    bits = {
        np.float64: [0x8000000000000000, 0x7FF0000000000123, 0xFFF8000000000001, 1],
        np.float32: [0x80000000, 0x7F800123, 0xFFC00001, 1],
        np.float16: [0x8000, 0x7C01, 0xFE01, 1],
    }
    for dtype, patterns in bits.items():
        unsigned = np.dtype(f"u{np.dtype(dtype).itemsize}")
        raw = np.zeros(200, unsigned)
        raw[[3, 50, 51, 199]] = patterns
        arr = raw.view(dtype)
        ref, data = lite._array_bytes(arr, sparse=True)
        assert ref["nonzero"] == 4 and ref["sparse"] == "indices"
        back, _ = decode_alone(ref, data)
        assert same_bits(back, arr)
        assert back.view(unsigned)[3] == patterns[0]  # -0.0 stays negative
    # Through a whole model file: -0.0 weights keep their sign bit.
    weights = ramp((12, 3), np.float32, 0.8)
    weights[weights == 0] = -0.0
    weights[0, 0] = 0.0
    model = dataclasses.replace(
        linear_model(np.float32), steps=(Linear(weights, ramp((3,), np.float32)),)
    )
    blob = lite.to_binary_bytes(model)
    assert models_equal(lite.from_binary_bytes(blob), model)  # bit for bit
    assert lite.from_binary_bytes(blob).steps[0].weights.view(np.uint32)[0, 1] == 0x80000000


@st.composite
def sparse_layer_models(draw: st.DrawFn) -> Model:
    """A float (64/32/16) Linear then an int8/int16 QuantizedDense, both with many zeros."""
    n_in, mid = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.8, 0.95, 0.99, 1.0]))
    qdtype = draw(st.sampled_from([np.int8, np.int16]))
    layer = QuantizedDense(
        weights=ramp((mid, 2), qdtype, draw(st.sampled_from([0.0, 0.9]))),
        scale=np.full(2, 0.25, np.float32),
        zero_point=np.zeros(2, np.int32),
        bias=np.zeros(2, np.float32),
    )
    first = Linear(ramp((n_in, mid), dtype, sparsity), ramp((mid,), dtype, sparsity))
    return Model(steps=(first, layer), task=Task.REGRESSION, n_features=n_in)


@FAST
@given(sparse_layer_models())
def test_sparse_models_round_trip_deterministically_and_never_grow(model) -> None:
    blob = lite.to_binary_bytes(model)
    again = lite.from_binary_bytes(blob)
    assert models_equal(again, model)
    assert lite.to_binary_bytes(again) == blob == lite.to_binary_bytes(model)
    assert len(blob) <= len(lite._binary_file(model, sparse=False)[0])


def test_indices_of_arrays_above_65536_elements_take_four_bytes() -> None:
    weights = np.zeros((300, 300), np.float32)
    weights[[0, 7, 299], [5, 0, 299]] = [1.5, -2.0, 3.25]
    model = Model(
        steps=(Linear(weights, np.ones(300, np.float32)),), task=Task.REGRESSION, n_features=300
    )
    blob = lite.to_binary_bytes(model)
    header, _ = split_binary(blob)
    ref = header["steps"][0]["weights"]
    assert (ref["sparse"], ref["nonzero"], ref["nbytes"]) == ("indices", 3, 3 * 4 + 3 * 4)
    assert models_equal(lite.from_binary_bytes(blob), model)
    assert len(blob) < 600  # 360,000 bytes dense


# =========================================================================== real models
@functools.cache
def pruning_cases() -> dict[str, tuple[Any, float, np.ndarray]]:
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X, y)
    mlp = case("mlp_binary")  # StandardScaler + MLPClassifier(16, 8) on breast cancer
    return {
        "mlp_80": (mlp.estimator, 0.8, mlp.dataset.X_test),
        "logreg_90": (logreg, 0.9, X[::5]),
    }


def same_predictions(a: Model, b: Model, X: np.ndarray) -> None:
    for mode in ("reference", "device"):
        assert same_bits(fedge.predict(a, X, mode=mode), fedge.predict(b, X, mode=mode))
        if a.task is Task.REGRESSION:
            continue
        assert same_bits(fedge.predict_proba(a, X, mode=mode), fedge.predict_proba(b, X, mode=mode))


@pytest.mark.parametrize("int8", [False, True], ids=["float64", "int8"])
@pytest.mark.parametrize("name", ["mlp_80", "logreg_90"])
def test_magnitude_pruned_models_shrink_and_predict_the_same_after_reload(name, int8) -> None:
    estimator, sparsity, X = pruning_cases()[name]
    full = fedge.lower(estimator)
    pruned = ModelPruner(sparsity, "magnitude").prune_model(estimator)
    if int8:
        full, pruned = (ModelQuantizer("int8").quantize_model(m) for m in (full, pruned))
    blob = lite.to_binary_bytes(pruned)
    assert len(blob) < len(lite.to_binary_bytes(full))
    assert len(blob) <= len(lite._binary_file(pruned, sparse=False)[0])
    if not int8:  # float weights: sparse wins even against xz over the dense zeros
        assert version_of(blob) == 3
        weights = split_binary(blob)[0]["steps"][-1]["weights"]
        assert weights["sparse"] == "bitmap"
        assert weights["nbytes"] < 0.3 * math.prod(weights["shape"]) * 8
    back = lite.from_binary_bytes(blob)
    assert models_equal(back, pruned)
    same_predictions(back, pruned, X)


def test_tree_arrays_are_stored_sparse_where_that_helps() -> None:
    """A forest: features (many zeros), missing_left (bool: a bitmap alone, no values) and
    tree offsets (all zero) are sparse, the file is smaller, predictions identical."""
    c = case("extra_trees_nan")
    model = fedge.lower(c.estimator)
    blob = lite.to_binary_bytes(model)
    assert version_of(blob) == 3 and len(blob) < len(lite._binary_file(model, sparse=False)[0])
    step = split_binary(blob)[0]["steps"][-1]
    n_nodes = step["missing_left"]["shape"][0]
    assert step["missing_left"]["sparse"] == "bitmap"
    assert step["missing_left"]["nbytes"] == -(-n_nodes // 8)
    assert (step["tree_offset"]["sparse"], step["tree_offset"]["nbytes"]) == ("indices", 0)
    back = lite.from_binary_bytes(blob)
    assert models_equal(back, model) and lite.to_binary_bytes(back) == blob
    same_predictions(back, model, c.dataset.X_test)


# =========================================================================== hostile files
def two_layer_model() -> Model:
    """Weights of 1,000 elements with 7 non-zeros (stored as indices, u16) and of 75
    (a bitmap with 5 padding bits), float32."""
    first = Dense(ramp((40, 25), np.float32, 0.99), ramp((25,), np.float32), Activation.RELU)
    return Model(
        steps=(first, Linear(ramp((25, 3), np.float32, 0.8), ramp((3,), np.float32))),
        task=Task.REGRESSION,
        n_features=40,
    )


Edit = Any  # (header, body: bytearray, first weights ref, second weights ref) -> None


def sealed(edit: Edit, model: Model | None = None) -> bytes:
    """The sparse file of ``model`` (default :func:`two_layer_model`, its first weights
    stored as indices, the second as a bitmap) after ``edit``, with a valid digest."""
    header, data = forge(two_layer_model() if model is None else model)
    body = bytearray(data)
    edit(header, body, header["steps"][0]["weights"], header["steps"][1]["weights"])
    return reseal(header, bytes(body))


def _swap_first_indices(h: Any, body: bytearray, first: Any, second: Any) -> None:
    at = first["offset"]
    body[at : at + 4] = body[at + 2 : at + 4] + body[at : at + 2]


def _repeat_first_index(h: Any, body: bytearray, first: Any, second: Any) -> None:
    at = first["offset"]
    body[at + 2 : at + 4] = body[at : at + 2]


def _last_index_out_of_range(h: Any, body: bytearray, first: Any, second: Any) -> None:
    struct.pack_into("<H", body, first["offset"] + 2 * (first["nonzero"] - 1), 1000)


def _zero_first_value(h: Any, body: bytearray, first: Any, second: Any) -> None:
    at = first["offset"] + 2 * first["nonzero"]
    body[at : at + 4] = bytes(4)


def _bit(value: bool, bit: int) -> Edit:
    def edit(h: Any, body: bytearray, first: Any, second: Any) -> None:
        at = second["offset"] + bit // 8
        body[at] = body[at] | (1 << bit % 8) if value else body[at] & ~(1 << bit % 8)

    return edit


def _cut_body(h: Any, body: bytearray, first: Any, second: Any) -> None:
    del body[second["offset"] + 3 :]


def _set(**fields: Any) -> Edit:
    return lambda h, body, first, second: second.update(fields)


_SECOND = ramp((75,), np.float32, 0.8)
HOSTILE = {
    "unsorted indices": (_swap_first_indices, "indices must be strictly increasing"),
    "a repeated index": (_repeat_first_index, "indices must be strictly increasing"),
    "an index out of range": (_last_index_out_of_range, "strictly increasing and below 1000"),
    "a zero among the values": (_zero_first_value, "stores a zero as its non-zero value 0"),
    "a padding bit": (_bit(True, 77), r"padding bits set \(after element 75\)"),
    "a bitmap bit cleared": (
        _bit(False, int(np.flatnonzero(_SECOND)[0])),
        r"bitmap marks 10 non-zero elements, but its nonzero is 11",
    ),
    "a bitmap bit set": (
        _bit(True, int(np.flatnonzero(_SECOND == 0)[0])),
        r"bitmap marks 12 non-zero elements, but its nonzero is 11",
    ),
    "nonzero off by one": (
        _set(nonzero=12),
        r"nbytes is 54, but its shape and bitmap encoding of 12 non-zero elements need 58",
    ),
    "nonzero above the size": (_set(nonzero=76), r"nonzero must be an integer in \[0, 76\)"),
    "nonzero a bool": (_set(nonzero=True), "nonzero must be an integer"),
    "nonzero negative": (_set(nonzero=-1), "nonzero must be an integer"),
    "an unknown encoding": (_set(sparse="rle"), "sparse must be one of bitmap, indices"),
    "an encoding that is no string": (_set(sparse=1), "sparse must be one of bitmap, indices"),
    "no nonzero": (lambda h, b, f, s: s.pop("nonzero"), "missing keys: nonzero"),
    "another key": (_set(values=3), "unknown keys: values"),
    "a truncated section": (_cut_body, "outside the data section"),
}
assert int(np.count_nonzero(_SECOND)) == 11


def test_the_forged_files_are_faithful() -> None:
    model = two_layer_model()
    blob = sealed(lambda *_: None)
    assert blob == lite.to_binary_bytes(model)  # raw section: sparse wins without xz too
    assert models_equal(lite.from_binary_bytes(blob), model)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_malformed_sparse_arrays_behind_a_valid_digest_are_refused(name) -> None:
    edit, message = HOSTILE[name]
    with pytest.raises(ModelFormatError, match=message):
        lite.from_binary_bytes(sealed(edit))


def test_an_encoding_other_than_the_writers_is_refused() -> None:
    """Each array has one encoding, so the same model has one file: a reader refuses the
    others (IntegrityError, a ModelFormatError), sparse or dense, but accepts a file with
    every array dense (the writer's dense candidate, e.g. files from before version 3)."""
    model = two_layer_model()
    for force, message in (
        ({(1, "weights"): "indices"}, r"steps\[1\].weights is stored as indices, but fedge"),
        ({(0, "weights"): "bitmap"}, r"steps\[0\].weights is stored as bitmap, but fedge"),
        ({(0, "weights"): "dense"}, r"steps\[0\].weights is stored dense, but fedge .* indices"),
    ):
        header, body = forge(model, force)
        with pytest.raises(IntegrityError, match=message):
            lite.from_binary_bytes(reseal(header, body))
    all_dense = {(i, "weights"): "dense" for i in (0, 1)}
    header, body = forge(model, all_dense)
    assert models_equal(lite.from_binary_bytes(reseal(header, body, version=1)), model)


def test_a_tiny_file_cannot_declare_gigabytes_of_zeros() -> None:
    """Zeros cost nothing as indices; the reader refuses arrays taking more than 256 times
    the stored data section (or 16 MiB) in memory before allocating them."""
    empty = two_layer_model()
    first = dataclasses.replace(empty.steps[0], weights=np.zeros((40, 25), np.float32))
    empty = dataclasses.replace(empty, steps=(first, empty.steps[1]))
    blob = sealed(lambda h, body, f, s: None, empty)
    assert models_equal(lite.from_binary_bytes(blob), empty)
    grow = lambda h, body, f, s: f.update(shape=[46340, 46340])  # noqa: E731
    with pytest.raises(ModelFormatError, match="would take 8589582400 bytes in memory"):
        lite.from_binary_bytes(sealed(grow, empty))


def test_a_sparse_file_must_declare_version_3() -> None:
    header, body = forge(two_layer_model())
    for version in (1, 2):
        with pytest.raises(
            ModelFormatError,
            match=r"steps\[0\].weights \(stored sparse\) needs lite format version 3, but .* "
            f"version {version}",
        ):
            lite.from_binary_bytes(reseal(header, body, version=version))
    # A compressed section holds sparse arrays just as well.
    packed = lite._RAW_LENGTH.pack(len(body)) + lzma.compress(
        body, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=lite._XZ_FILTERS
    )
    blob = reseal(header, packed, flags=lite.FLAG_XZ)
    assert models_equal(lite.from_binary_bytes(blob), two_layer_model())


def test_a_model_beyond_the_memory_bound_is_written_dense(monkeypatch) -> None:
    """3 non-zeros in 90,000: as indices the arrays would take ~300 times the data section.
    Below the 16 MiB floor that is allowed; without the floor the writer stores the model
    dense (as fedge did before version 3) and a reader refuses the sparse file."""
    weights = np.zeros((300, 300), np.float32)
    weights[[0, 7, 299], [5, 0, 299]] = [1.5, -2.0, 3.25]
    model = Model(
        steps=(Linear(weights, ramp((300,), np.float32)),), task=Task.REGRESSION, n_features=300
    )
    sparse, usable = lite._binary_file(model, sparse=True)
    assert usable and lite.to_binary_bytes(model) == sparse
    monkeypatch.setattr(lite, "_MIN_DECODED", 0)
    assert not lite._binary_file(model, sparse=True)[1]
    dense = lite.to_binary_bytes(model)
    assert version_of(dense) <= 2 and dense == lite._binary_file(model, sparse=False)[0]
    assert models_equal(lite.from_binary_bytes(dense), model)
    with pytest.raises(ModelFormatError, match="weights would take 360000 bytes in memory"):
        lite.from_binary_bytes(sparse)
