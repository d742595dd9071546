"""The generated C, compiled to a shared library and called from Python in batches.

Builds are cached by the SHA-256 of the generated code and the compiler flags, in
``$FEDGE_CACHE_DIR`` (default ``~/.cache/fedge/c``), so a model is compiled once.
Inputs go through the runtime's validation; each call crosses into C once per batch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from fedge.deployment.formats.c.emit import CSource, emit_c
from fedge.deployment.toolchain import HOST_FLAGS, compile_c
from fedge.errors import UnsupportedOperationError
from fedge.ir.nodes import Model, Task
from fedge.ir.runtime import Mode, check_input

__all__ = ["CompiledModel", "cache_dir"]

_FLOAT_P = ctypes.POINTER(ctypes.c_float)


def cache_dir() -> Path:
    root = os.environ.get("FEDGE_CACHE_DIR") or Path.home() / ".cache" / "fedge"
    return Path(root) / "c"


class CompiledModel:
    """An IR model compiled to native code (the C backend) for fast batch predictions.

    Outputs equal :func:`fedge.predict` & co. in ``device`` mode bit for bit.

    Parameters
    ----------
    model : Model
        The IR model.
    prefix : str
        C symbol prefix.
    layout : {"table", "inline"}
        Tree layout of the generated C (see :func:`fedge.deployment.emit_c`).
    """

    def __init__(self, model: Model, *, prefix: str = "model", layout: str = "table") -> None:
        self.model = model
        self.code: CSource = emit_c(model, prefix, layout=layout)
        self.library_path = self._build()
        self._lib = ctypes.CDLL(str(self.library_path))
        p = self.code.prefix
        self._scores = self._bind(f"{p}_decision_function_batch", _FLOAT_P)
        self._predict = self._bind(
            f"{p}_predict_batch",
            ctypes.POINTER(ctypes.c_int) if model.task is Task.CLASSIFICATION else _FLOAT_P,
        )
        self._proba = (
            self._bind(f"{p}_predict_proba_batch", _FLOAT_P) if self.code.has_proba else None
        )
        # One row, one call, no allocation: the single-row entry point and its buffers.
        self._one = getattr(self._lib, f"{p}_predict")
        self._row = np.zeros(model.n_features, dtype=np.float32)
        self._row_ptr = self._row.ctypes.data_as(_FLOAT_P)
        if model.task is Task.CLASSIFICATION:
            self._one.argtypes = [_FLOAT_P]
            self._one.restype = ctypes.c_int
        else:
            self._one.argtypes = [_FLOAT_P, _FLOAT_P]
            self._one.restype = None
            self._value = np.zeros(self.code.n_outputs, dtype=np.float32)
            self._value_ptr = self._value.ctypes.data_as(_FLOAT_P)

    def _build(self) -> Path:
        key = hashlib.sha256(
            "\0".join([self.code.header, self.code.source, *HOST_FLAGS]).encode()
        ).hexdigest()[:32]
        folder = cache_dir() / key
        lib = folder / f"lib{self.code.prefix}.so"
        if lib.exists():
            return lib
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.code.prefix}.h").write_text(self.code.header)
        src = folder / f"{self.code.prefix}.c"
        src.write_text(self.code.source)
        tmp = folder / f".lib{self.code.prefix}.{os.getpid()}.so"
        compile_c([src], tmp, extra=("-shared", "-fPIC"))
        os.replace(tmp, lib)  # atomic: concurrent builds of the same model are harmless
        return lib

    def _bind(self, name: str, out_type: Any) -> Any:
        fn = getattr(self._lib, name)
        fn.argtypes = [_FLOAT_P, ctypes.c_long, out_type]
        fn.restype = None
        return fn

    def _rows(self, X: Any) -> np.ndarray:
        arr = check_input(self.model, X, Mode.DEVICE)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _call(self, fn: Any, X: np.ndarray, width: int, dtype: Any, ctype: Any) -> np.ndarray:
        out = np.empty((X.shape[0], width), dtype=dtype)
        fn(X.ctypes.data_as(_FLOAT_P), X.shape[0], out.ctypes.data_as(ctypes.POINTER(ctype)))
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores, shape (n,) for one output else (n, n_outputs), float32."""
        rows = self._rows(X)
        out = self._call(self._scores, rows, self.code.n_outputs, np.float32, ctypes.c_float)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, float32."""
        if self._proba is None:
            raise UnsupportedOperationError("this model has no probabilities")
        rows = self._rows(X)
        return self._call(self._proba, rows, self.code.n_classes, np.float32, ctypes.c_float)

    def predict_row(self, row: np.ndarray) -> Any:
        """The label or value of one row the caller has already validated (finite or NaN
        floats, ``n_features`` of them): the latency path, one C call and no allocation.
        Not thread-safe (one shared input buffer)."""
        self._row[:] = row
        if self.model.task is Task.CLASSIFICATION:
            return self.model.classes[self._one(self._row_ptr)]
        self._one(self._row_ptr, self._value_ptr)
        return self._value[0] if self._value.size == 1 else self._value.copy()

    def predict(self, X: Any) -> np.ndarray:
        """Labels (classification) or values (regression)."""
        rows = self._rows(X)
        if self.model.task is Task.CLASSIFICATION:
            index = self._call(self._predict, rows, 1, np.intc, ctypes.c_int)[:, 0]
            assert self.model.classes is not None
            return self.model.classes[index]
        out = self._call(self._predict, rows, self.code.n_outputs, np.float32, ctypes.c_float)
        return out[:, 0] if out.shape[1] == 1 else out
