"""Fast predictions with measured latency: backends, an exact-row cache, batching, micro-batching.

>>> opt = InferenceOptimizer(estimator)          # picks the compiled C backend   # doctest: +SKIP
>>> opt.predict(X)                               # chunked, threads for big batches
>>> await opt.apredict(row)                      # concurrent requests micro-batched
>>> opt.benchmark(X)                             # p50/p95/p99, rows/s, hit rate, memory

Backends: ``"compiled"`` (the generated C as a shared library; equals the numpy runtime's
``device`` mode bit for bit), ``"numpy"`` (fedge's runtime, ``device`` mode), ``"source"`` (the
estimator's own ``predict``), ``"onnxruntime"`` (the ONNX export, when installed).

The cache is keyed on the exact bytes of a row (float64, after validation), so a hit returns
exactly what was computed for that row and different rows never collide.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError, ToolchainError, UnsupportedOperationError
from fedge.ir.lower import lower
from fedge.ir.nodes import Model

__all__ = ["BACKENDS", "BackendReport", "InferenceOptimizer", "compare_backends"]

BACKENDS = ("compiled", "numpy", "source", "onnxruntime")


@dataclass(frozen=True)
class BackendReport:
    """What :meth:`InferenceOptimizer.benchmark` measured for one backend."""

    backend: str
    p50_us: float  # single-row latency percentiles, microseconds
    p95_us: float
    p99_us: float
    batch_rows_per_s: float
    cache_hit_us: float | None  # one cached single-row prediction
    cache_hit_rate: float  # over the benchmark's repeated rows
    peak_rss_mb: float
    model_bytes: int
    # every timed single-row call, microseconds, in call order (latency distributions)
    latencies_us: tuple[float, ...] = field(default=(), repr=False)

    def as_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """The report as plain data; the raw latencies only with ``samples=True``."""
        out = asdict(self)
        if samples:
            out["latencies_us"] = list(self.latencies_us)
        else:
            del out["latencies_us"]
        return out


class _LRUCache:
    """Exact-row LRU cache with hit and miss counters."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[bytes, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> Any:
        value = self.data.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self.data.move_to_end(key)
        return value

    def put(self, key: bytes, value: Any) -> None:
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class InferenceOptimizer:
    """A model behind a fast backend, with caching, batching and micro-batching.

    Parameters
    ----------
    model : fitted estimator or Model
    backend : {"auto", "compiled", "numpy", "source", "onnxruntime"}
        ``"auto"`` takes the compiled C when a C compiler is available, else numpy.
    cache_size : int
        Rows kept in the LRU cache (0 disables it).
    chunk_size : int
        Rows per backend call in :meth:`predict`.
    threads : int
        Worker threads for batches larger than ``chunk_size`` (1 = no threads).
    max_batch : int
        Micro-batching: largest batch of concurrent :meth:`apredict` requests.
    max_wait_ms : float
        Micro-batching: how long the first request of a batch waits for company.
    """

    def __init__(
        self,
        model: Any,
        *,
        backend: str = "auto",
        cache_size: int = 4096,
        chunk_size: int = 4096,
        threads: int = 1,
        max_batch: int = 64,
        max_wait_ms: float = 1.0,
    ) -> None:
        self.source = None if isinstance(model, Model) else model
        self.model = lower(model)
        if cache_size < 0 or chunk_size < 1 or threads < 1 or max_batch < 1 or max_wait_ms < 0:
            raise InvalidInputError(
                "cache_size >= 0, chunk_size >= 1, threads >= 1, max_batch >= 1 and "
                "max_wait_ms >= 0 are required"
            )
        self.backend = self._pick(backend)
        self._predict_row: Callable[[np.ndarray], Any] | None = None
        self._predict_rows = self._make_backend(self.backend)
        self._lock = threading.Lock()  # the one-row fast path shares a buffer
        self.cache = _LRUCache(cache_size) if cache_size else None
        self.chunk_size = chunk_size
        self.threads = threads
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._queue: list[tuple[np.ndarray, asyncio.Future]] = []
        self._flush_task: asyncio.Task | None = None
        self.n_features = self.model.n_features

    # -- backends -------------------------------------------------------------------------
    def _pick(self, backend: str) -> str:
        if backend not in ("auto", *BACKENDS):
            raise InvalidInputError(f"unknown backend {backend!r}; use auto or one of {BACKENDS}")
        if backend != "auto":
            return backend
        import shutil

        return "compiled" if shutil.which("gcc") else "numpy"

    def _make_backend(self, backend: str) -> Callable[[np.ndarray], np.ndarray]:
        if backend == "compiled":
            from fedge.deployment.compiled import CompiledModel

            try:
                compiled = CompiledModel(self.model)
            except ToolchainError as exc:
                raise ToolchainError(f"the compiled backend needs a C compiler: {exc}") from None
            self._compiled = compiled
            self._predict_row = compiled.predict_row
            return compiled.predict
        if backend == "numpy":
            from fedge.ir.runtime import predict

            return lambda X: predict(self.model, X, mode="device")
        if backend == "source":
            if self.source is None or not hasattr(self.source, "predict"):
                raise UnsupportedOperationError("the source backend needs the fitted estimator")
            return self.source.predict
        return self._onnx_backend()

    def _onnx_backend(self) -> Callable[[np.ndarray], np.ndarray]:
        try:
            import onnxruntime as ort

            from fedge.deployment.formats.onnx import to_onnx
        except ImportError:
            raise UnsupportedOperationError(
                "the onnxruntime backend needs the ONNX exporter and onnxruntime: "
                "pip install 'fedge[onnx]'"
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            to_onnx(self.model).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name
        output_name = session.get_outputs()[0].name

        def run(X: np.ndarray) -> np.ndarray:
            out = np.asarray(session.run([output_name], {input_name: X.astype(np.float32)})[0])
            return out.reshape(len(X)) if out.ndim == 2 and out.shape[1] == 1 else out

        return run

    # -- input ----------------------------------------------------------------------------
    def _rows(self, X: Any) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise InvalidInputError(
                f"expected rows of {self.n_features} features, got shape {arr.shape}"
            )
        if np.isinf(arr).any():
            raise InvalidInputError("X holds Inf; pass finite numbers (NaN marks missing values)")
        return arr

    # -- prediction -----------------------------------------------------------------------
    def _one_row(self, x: np.ndarray) -> Any:
        if self._predict_row is None:
            return self._predict_rows(x.reshape(1, -1))[0]
        with self._lock:
            return self._predict_row(x)

    def _check_row(self, row: Any) -> np.ndarray:
        # The latency path: the checks of _rows for one row, without its generality.
        x = row if isinstance(row, np.ndarray) and row.dtype == np.float64 else np.asarray(
            row, dtype=np.float64
        )
        if x.shape != (self.n_features,):
            x = self._rows(x)
            if x.shape[0] != 1:
                raise InvalidInputError("one row at a time here")
            x = x[0]
        elif np.isinf(x).any():
            raise InvalidInputError("X holds Inf; pass finite numbers (NaN marks missing values)")
        return x

    def predict_one(self, row: Any) -> Any:
        """The prediction for one row, from the cache when this exact row was seen before."""
        cache = self.cache
        if (
            cache is not None
            and type(row) is np.ndarray
            and row.dtype == np.float64
            and row.shape == (self.n_features,)
        ):
            # Only validated rows ever enter the cache, so a hit needs no checks: the row's
            # bytes are the key.
            hit = cache.get(row.tobytes())
            if hit is not None:
                return hit[0]
            cache.misses -= 1  # counted again below
        x = self._check_row(row)
        if cache is None:
            return self._one_row(x)
        key = x.tobytes()
        hit = cache.get(key)
        if hit is not None:
            return hit[0]
        value = self._one_row(x)
        cache.put(key, (value,))
        return value

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for every row: chunks of ``chunk_size``, spread over the threads."""
        rows = self._rows(X)
        if len(rows) <= self.chunk_size:
            return self._predict_rows(rows)
        chunks = [rows[i : i + self.chunk_size] for i in range(0, len(rows), self.chunk_size)]
        if self._pool is None:
            parts = [self._predict_rows(c) for c in chunks]
        else:
            parts = list(self._pool.map(self._predict_rows, chunks))
        return np.concatenate(parts)

    def warm_up(self, rows: int = 16) -> None:
        """Run the backend once (loads libraries, fills caches of the runtime)."""
        self._predict_rows(np.zeros((rows, self.n_features)))

    # -- asyncio micro-batching ------------------------------------------------------------
    async def apredict(self, row: Any) -> Any:
        """The prediction for one row; concurrent calls are answered from shared batches.

        Rows are checked together when their batch runs (a bad row fails only its own
        request), which keeps the cost per request small.
        """
        x = row if type(row) is np.ndarray and row.dtype == np.float64 else np.asarray(
            row, dtype=np.float64
        )
        if x.shape != (self.n_features,):
            raise InvalidInputError(
                f"apredict takes one row of {self.n_features} features, got shape {x.shape}"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.append((x, future))
        if len(self._queue) >= self.max_batch:
            self._flush()
        elif self._flush_task is None:
            self._flush_task = loop.create_task(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.max_wait_ms / 1000.0)
        self._flush_task = None
        self._flush()

    def _flush(self) -> None:
        if self._flush_task is not None and len(self._queue) >= self.max_batch:
            self._flush_task.cancel()
            self._flush_task = None
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        rows = np.stack([row for row, _ in batch]) if batch else None
        if rows is not None:
            bad = np.isinf(rows).any(axis=1)
            if bad.any():
                for (_, future), refused in zip(batch, bad, strict=True):
                    if refused and not future.done():
                        future.set_exception(InvalidInputError(
                            "X holds Inf; pass finite numbers (NaN marks missing values)"
                        ))
                batch = [b for b, refused in zip(batch, bad, strict=True) if not refused]
                rows = rows[~bad]
        if not batch:
            return
        try:
            values = self._predict_rows(rows)
        except Exception as exc:  # every waiter learns what went wrong
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():
                future.set_result(value)
        if self._queue and self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_later())

    # -- measurement ----------------------------------------------------------------------
    def benchmark(
        self, X: Any, *, single_rows: int = 500, batch_repeats: int = 5
    ) -> BackendReport:
        """Single-row latency percentiles, batch throughput, cache cost and memory.

        Single rows are timed one call each (input check and backend, cache bypassed); the batch
        is all of ``X`` through :meth:`predict` (median of ``batch_repeats``); the cache is
        exercised by replaying the single rows once more.
        """
        rows = self._rows(X)
        self.warm_up()
        sample = rows[np.arange(min(single_rows, len(rows)))]
        times = np.empty(len(sample))
        for i, row in enumerate(sample):
            start = time.perf_counter()
            self._one_row(self._check_row(row))
            times[i] = time.perf_counter() - start
        batch_times = []
        for _ in range(batch_repeats):
            start = time.perf_counter()
            self.predict(rows)
            batch_times.append(time.perf_counter() - start)
        hit_us = None
        if self.cache is not None:
            for row in sample:
                self.predict_one(row)  # fill
            start = time.perf_counter()
            for row in sample:
                self.predict_one(row)  # every one a hit
            hit_us = (time.perf_counter() - start) / len(sample) * 1e6
        from fedge.compression.accounting import lite_bytes

        return BackendReport(
            backend=self.backend,
            p50_us=float(np.percentile(times, 50) * 1e6),
            p95_us=float(np.percentile(times, 95) * 1e6),
            p99_us=float(np.percentile(times, 99) * 1e6),
            batch_rows_per_s=float(len(rows) / np.median(batch_times)),
            cache_hit_us=hit_us,
            cache_hit_rate=self.cache.hit_rate if self.cache is not None else 0.0,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            model_bytes=self._model_bytes(lite_bytes),
            latencies_us=tuple(float(t) for t in times * 1e6),
        )

    def _model_bytes(self, lite_bytes: Callable[[Model], int]) -> int:
        compiled = getattr(self, "_compiled", None)
        if compiled is not None:
            return os.path.getsize(compiled.library_path)
        return lite_bytes(self.model)

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> InferenceOptimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compare_backends(
    model: Any, X: Any, backends: Sequence[str] = ("compiled", "numpy", "source"), **options: Any
) -> list[BackendReport]:
    """:meth:`InferenceOptimizer.benchmark` for each available backend."""
    reports = []
    for name in backends:
        try:
            optimizer = InferenceOptimizer(model, backend=name, **options)
        except (UnsupportedOperationError, ToolchainError):
            continue
        with optimizer:
            reports.append(optimizer.benchmark(X))
    return reports
