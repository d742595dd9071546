"""C code generators that fedge is compared with, and a generic C timing harness.

Anchors (the ``bench`` extra): emlearn 0.23.2, m2cgen 0.10.0 and tl2cgen 1.0.0 (with treelite).
Each adapter writes the anchor's C files into a directory and returns a :class:`CModel`: the
sources to compile (and size) and an *adapter* snippet defining
``static int bench_predict(const float *x)``, which converts one float32 row to the anchor's
input type, calls the anchor and returns the predicted class index. Missing values are passed
the way each anchor documents: emlearn and m2cgen take NaN in their float/double arrays,
tl2cgen sets ``union Entry.missing = -1``.

- emlearn: ``emlearn.convert(est, method="inline", dtype="float")`` then
  ``.save(name="em", include_proba=False)``: one header-only C file (compiled here as its own
  translation unit) whose entry point is ``int32_t em_predict(const float *features,
  int32_t features_length)``. Its defaults are kept otherwise: hard majority voting over the
  trees (``leaf_bits=0``; soft voting with ``leaf_bits=8`` took ~110 s to generate a 100-tree
  forest), and thresholds printed with 6 decimals and compared with ``<``. emlearn's
  ``loadable`` method only takes int16 features, so it is not used. emlearn converts
  scikit-learn trees and forests, not XGBoost, LightGBM or LogisticRegression.
- m2cgen: ``m2cgen.export_to_c(est, function_name="m2_score")`` gives
  ``void m2_score(double *input, double *output)``; the label is the argmax of ``output``.
- tl2cgen: a treelite model (``treelite.sklearn.import_model``, ``treelite.frontend.from_xgboost``
  or ``from_lightgbm``), then ``tl2cgen.generate_c_code(model, dirpath, params={})``: header.h,
  the sources listed in recipe.json (main.c, and tu*.c with ``parallel_comp``); the entry point
  is ``void predict(union Entry *data, int pred_margin, float|double *result)``, called with
  ``pred_margin=1`` (the argmax of the margins is the label) and a zeroed ``result``.

Generation runs in a child process (``generate_bounded``) so that it can be stopped at a
deadline; compiles run with a timeout too (``run_command`` kills the compiler's whole process
group).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ANCHORS = ("emlearn", "m2cgen", "tl2cgen")
HOST_CC = "gcc"
ARM_CC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
CORTEX_M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")


class UnsupportedError(Exception):
    """The anchor has no converter for this kind of model."""


class GenerationTimeoutError(Exception):
    """Code generation did not finish before its deadline."""


class GenerationError(Exception):
    """Code generation raised or crashed; the message is a short reason."""


@dataclass(frozen=True)
class CModel:
    """Generated C code of one model, ready to compile."""

    tool: str
    directory: Path
    sources: tuple[str, ...]  # .c files (relative to directory) that make up the model
    adapter: str  # C snippet: includes + static int bench_predict(const float *x) [+ batch]
    cflags: tuple[str, ...] = ()  # extra flags for every compile of this model
    has_batch: bool = False  # adapter also defines bench_predict_batch (x, n, labels)
    gen_seconds: float = 0.0


Generator = Callable[[Any, Path], CModel]


# --------------------------------------------------------------------------------------
# Anchors


def _argmax_c(array: str, n: int | str) -> str:
    """C statements leaving in ``best`` the first index of the largest of ``array[0..n)``."""
    return f"    for (j = 1; j < {n}; ++j) if ({array}[j] > {array}[best]) best = j;\n"


def _n_classes(estimator: Any) -> int:
    return len(estimator.classes_)


def _root_module(estimator: Any) -> str:
    return type(estimator).__module__.split(".")[0]


def emlearn_supports(estimator: Any) -> bool:
    from emlearn import trees

    return type(estimator).__name__ in trees.SUPPORTED_ESTIMATORS and hasattr(estimator, "classes_")


def generate_emlearn(estimator: Any, directory: Path) -> CModel:
    import emlearn

    if not emlearn_supports(estimator):
        raise UnsupportedError(type(estimator).__name__)
    converted = emlearn.convert(estimator, method="inline", dtype="float")
    code = converted.save(name="em", include_proba=False)
    (directory / "em.c").write_text(code)
    adapter = (
        "#include <stdint.h>\n"
        "int32_t em_predict(const float *features, int32_t features_length);\n"
        "static int bench_predict(const float *x)\n{\n"
        "    return (int)em_predict(x, BENCH_N_FEATURES);\n}\n"
    )
    return CModel("emlearn", directory, ("em.c",), adapter)


def m2cgen_supports(estimator: Any) -> bool:
    from m2cgen.assemblers import SUPPORTED_MODELS

    name = f"{_root_module(estimator)}_{type(estimator).__name__}"
    return name in SUPPORTED_MODELS and _n_classes(estimator) > 2


def generate_m2cgen(estimator: Any, directory: Path) -> CModel:
    import m2cgen

    if not m2cgen_supports(estimator):
        raise UnsupportedError(type(estimator).__name__)
    # The exporter recurses once per tree level and per tree of a sum: deep forests need more
    # than Python's default 1000 frames.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    try:
        code = m2cgen.export_to_c(estimator, function_name="m2_score")
    except TypeError as exc:
        if _root_module(estimator) != "xgboost":
            raise
        raise GenerationError(
            f"{type(exc).__name__}: m2cgen reads num_parallel_tree and base_score from "
            "get_params(), None in xgboost 3 (whose multi-class base score is per class)"
        ) from exc
    (directory / "m2.c").write_text(code)
    n_classes = _n_classes(estimator)
    adapter = (
        "void m2_score(double *input, double *output);\n"
        "static int bench_predict(const float *x)\n{\n"
        f"    double in[BENCH_N_FEATURES], out[{n_classes}];\n"
        "    int j, best = 0;\n"
        "    for (j = 0; j < BENCH_N_FEATURES; ++j) in[j] = (double)x[j];\n"
        "    m2_score(in, out);\n" + _argmax_c("out", n_classes) + "    return best;\n}\n"
    )
    return CModel("m2cgen", directory, ("m2.c",), adapter)


def tl2cgen_supports(estimator: Any) -> bool:
    if _root_module(estimator) in ("xgboost", "lightgbm"):
        return True
    name = type(estimator).__name__
    return _root_module(estimator) == "sklearn" and name.startswith(
        ("RandomForest", "ExtraTrees", "GradientBoosting", "HistGradientBoosting")
    )


def _treelite_model(estimator: Any) -> Any:
    import treelite

    root = _root_module(estimator)
    if root == "xgboost":
        return treelite.frontend.from_xgboost(estimator.get_booster())
    if root == "lightgbm":
        return treelite.frontend.from_lightgbm(estimator.booster_)
    return treelite.sklearn.import_model(estimator)


def generate_tl2cgen(estimator: Any, directory: Path) -> CModel:
    import tl2cgen

    if not tl2cgen_supports(estimator):
        raise UnsupportedError(type(estimator).__name__)
    tl2cgen.generate_c_code(_treelite_model(estimator), directory, params={})
    recipe = json.loads((directory / "recipe.json").read_text())
    sources = tuple(f"{s['name']}.c" for s in recipe["sources"])
    header = (directory / "header.h").read_text()
    found = re.search(
        r"void predict\(union Entry\* data, int pred_margin, (\w+)\* result\)", header
    )
    if found is None:
        raise GenerationError("tl2cgen header.h has no predict(union Entry*, int, T*)")
    result_type = found.group(1)
    adapter = (
        '#include "header.h"\n'
        "static int bench_predict(const float *x)\n{\n"
        "    union Entry data[BENCH_N_FEATURES];\n"
        f"    {result_type} result[N_TARGET * MAX_N_CLASS];\n"
        "    int j, best = 0;\n"
        "    for (j = 0; j < BENCH_N_FEATURES; ++j) {\n"
        "        if (isnan(x[j])) data[j].missing = -1;\n"
        "        else data[j].fvalue = x[j];\n"
        "    }\n"
        "    for (j = 0; j < N_TARGET * MAX_N_CLASS; ++j) result[j] = 0;\n"
        "    predict(data, 1, result);\n"
        "    if (MAX_N_CLASS == 1) return result[0] > 0;\n"
        + _argmax_c("result", "MAX_N_CLASS")
        + "    return best;\n}\n"
    )
    return CModel("tl2cgen", directory, sources, adapter)


GENERATORS: dict[str, Generator] = {
    "emlearn": generate_emlearn,
    "m2cgen": generate_m2cgen,
    "tl2cgen": generate_tl2cgen,
}
SUPPORTS: dict[str, Callable[[Any], bool]] = {
    "emlearn": emlearn_supports,
    "m2cgen": m2cgen_supports,
    "tl2cgen": tl2cgen_supports,
}


# --------------------------------------------------------------------------------------
# Bounded generation


def _short(exc: BaseException, limit: int = 90) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _generation_child(generator: Generator, estimator: Any, directory: str) -> None:
    """Child process: run ``generator``, write manifest.json (the CModel or the error)."""
    out = Path(directory)
    log = os.open(out / "generate.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)  # the anchors print to stdout/stderr (treelite's version notes)
    os.dup2(log, 2)
    manifest: dict[str, Any]
    try:
        start = time.perf_counter()
        model = generator(estimator, out)
        seconds = time.perf_counter() - start
        manifest = {"model": {**asdict(model), "directory": str(out), "gen_seconds": seconds}}
    except UnsupportedError as exc:
        manifest = {"unsupported": str(exc)}
    except GenerationError as exc:  # already a short reason
        traceback.print_exc()
        manifest = {"error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        manifest = {"error": _short(exc)}
    (out / "manifest.json").write_text(json.dumps(manifest))


def generate_bounded(
    generator: Generator, estimator: Any, directory: Path, timeout: float
) -> tuple[CModel, float]:
    """Run ``generator(estimator, directory)`` in a child process stopped after ``timeout`` s.

    Returns the model and the wall-clock seconds spent (process start included; the model's
    ``gen_seconds`` is the generator call alone). Raises UnsupportedError, GenerationTimeoutError or
    GenerationError.
    """
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    ctx = multiprocessing.get_context("spawn")  # no fork after OpenMP-using libraries
    start = time.perf_counter()
    child = ctx.Process(target=_generation_child, args=(generator, estimator, str(directory)))
    child.start()
    child.join(timeout)
    wall = time.perf_counter() - start
    if child.is_alive():
        child.kill()
        child.join()
        raise GenerationTimeoutError(f"generation past {timeout:.0f} s")
    if not manifest_path.exists():
        raise GenerationError(f"generator process died (exit code {child.exitcode})")
    manifest = json.loads(manifest_path.read_text())
    if "unsupported" in manifest:
        raise UnsupportedError(manifest["unsupported"])
    if "error" in manifest:
        raise GenerationError(manifest["error"])
    fields = manifest["model"]
    model = CModel(
        **{
            **fields,
            "directory": Path(fields["directory"]),
            "sources": tuple(fields["sources"]),
            "cflags": tuple(fields["cflags"]),
        }
    )
    return model, wall


# --------------------------------------------------------------------------------------
# Compiling and sizing


@dataclass(frozen=True)
class CommandResult:
    returncode: int | None  # None: killed at the timeout
    seconds: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_command(cmd: Sequence[str], *, timeout: float, cwd: Path | None = None) -> CommandResult:
    """Run ``cmd``; past ``timeout`` s kill its whole process group (gcc's cc1 too)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=max(timeout, 0.1))
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return CommandResult(code, time.perf_counter() - start, out, err)


class CompileError(Exception):
    """A compile failed; the message is a short reason from the compiler's output."""


class CompileTimeoutError(Exception):
    """A compile did not finish in time."""


def compiler_reason(stderr: str, limit: int = 90) -> str:
    """The first error line of a compiler's output, shortened."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["failed"]
    text = re.sub(r"^\S*:\d+(:\d+)?: ", "", errors[0])  # drop the file:line: prefix
    text = re.sub(r"^(Error|error): ", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compile_objects(
    model: CModel, compiler: Sequence[str], outdir: Path, *, timeout: float
) -> tuple[list[Path], float]:
    """Compile each of the model's sources to an object in ``outdir``; return them and seconds.

    ``timeout`` bounds all the compiles together.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    objects, seconds = [], 0.0
    for source in model.sources:
        obj = outdir / (Path(source).stem + ".o")
        cmd = [*compiler, *model.cflags, "-I", str(model.directory), "-c"]
        result = run_command(
            [*cmd, str(model.directory / source), "-o", str(obj)], timeout=timeout - seconds
        )
        seconds += result.seconds
        if result.timed_out:
            raise CompileTimeoutError(f"compile past {timeout:.0f} s")
        if not result.ok:
            raise CompileError(compiler_reason(result.stderr))
        objects.append(obj)
    return objects, seconds


def object_size(size_tool: str, objects: Sequence[Path]) -> int:
    """text + data bytes of ``objects``, summed (Berkeley output of ``size``)."""
    result = run_command([size_tool, *map(str, objects)], timeout=60)
    if not result.ok:
        raise CompileError(compiler_reason(result.stderr))
    total = 0
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        total += int(fields[0]) + int(fields[1])
    return total


# --------------------------------------------------------------------------------------
# Timing harness

HARNESS = r"""#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_N_FEATURES @N_FEATURES@
@BATCH@

@ADAPTER@

static double bench_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_write(const char *path, const int *labels, long n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    if (fwrite(labels, sizeof *labels, (size_t)n, f) != (size_t)n) return 1;
    return fclose(f) != 0;
}

/* usage: bench ROWS.f32 N_ROWS PASSES LABELS.i32 [BATCH_LABELS.i32] */
int main(int argc, char **argv)
{
    long n, i;
    int p, passes;
    float *x;
    int *labels;
    double *t, start;
    FILE *f;
    if (argc < 5) return 2;
    n = atol(argv[2]);
    passes = atoi(argv[3]);
    x = malloc((size_t)n * BENCH_N_FEATURES * sizeof *x);
    labels = malloc((size_t)n * sizeof *labels);
    t = malloc((size_t)passes * sizeof *t);
    f = fopen(argv[1], "rb");
    if (!x || !labels || !t || !f) return 3;
    if (fread(x, sizeof *x, (size_t)n * BENCH_N_FEATURES, f) != (size_t)n * BENCH_N_FEATURES)
        return 4;
    fclose(f);
    for (p = 0; p < passes; ++p) {
        start = bench_now_ns();
        for (i = 0; i < n; ++i) labels[i] = bench_predict(x + i * BENCH_N_FEATURES);
        t[p] = (bench_now_ns() - start) / (double)n;
    }
    printf("single_ns %.3f\n", bench_median(t, passes));
    if (bench_write(argv[4], labels, n)) return 5;
#ifdef BENCH_HAS_BATCH
    if (argc < 6) return 2;
    for (p = 0; p < passes; ++p) {
        start = bench_now_ns();
        bench_predict_batch(x, n, labels);
        t[p] = (bench_now_ns() - start) / (double)n;
    }
    printf("batch_ns %.3f\n", bench_median(t, passes));
    if (bench_write(argv[5], labels, n)) return 5;
#endif
    return 0;
}
"""


@dataclass(frozen=True)
class HarnessRun:
    labels: np.ndarray  # int32 labels of bench_predict, one per row
    single_ns: float  # median ns per row over the passes, bench_predict in a loop
    batch_labels: np.ndarray | None = None
    batch_ns: float | None = None  # same for bench_predict_batch over all rows


class HarnessError(Exception):
    """The harness failed to build or run."""


def build_harness(
    objects: Sequence[Path],
    adapter: str,
    n_features: int,
    directory: Path,
    *,
    compiler: Sequence[str] = (HOST_CC, "-O2"),
    include: Path | None = None,
    batch: bool = False,
    timeout: float = 120,
) -> Path:
    """Compile the harness around ``adapter`` and link it with the model's ``objects``
    (or sources); returns the executable."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (
        HARNESS.replace("@N_FEATURES@", str(n_features))
        .replace("@BATCH@", "#define BENCH_HAS_BATCH 1" if batch else "")
        .replace("@ADAPTER@", adapter)
    )
    source, exe = directory / "bench_harness.c", directory / "bench"
    source.write_text(text)
    cmd = [*compiler, *([f"-I{include}"] if include else []), str(source)]
    result = run_command([*cmd, *map(str, objects), "-o", str(exe), "-lm"], timeout=timeout)
    if not result.ok:
        raise HarnessError("timeout" if result.timed_out else compiler_reason(result.stderr))
    return exe


def run_harness(exe: Path, X: np.ndarray, passes: int, *, timeout: float = 300) -> HarnessRun:
    """Run ``exe`` over the rows of ``X`` (float32) ``passes`` times; labels and median ns/row."""
    work = exe.parent
    rows, labels, batch_labels = work / "rows.f32", work / "labels.i32", work / "batch.i32"
    np.ascontiguousarray(X, dtype=np.float32).tofile(rows)
    for path in (labels, batch_labels):
        path.unlink(missing_ok=True)
    cmd = [str(exe), str(rows), str(len(X)), str(passes), str(labels), str(batch_labels)]
    result = run_command(cmd, timeout=timeout, cwd=work)
    if not result.ok:
        raise HarnessError(
            "timeout" if result.timed_out else f"harness exit code {result.returncode}"
        )
    times = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    has_batch = "batch_ns" in times
    return HarnessRun(
        labels=np.fromfile(labels, dtype=np.int32),
        single_ns=float(times["single_ns"]),
        batch_labels=np.fromfile(batch_labels, dtype=np.int32) if has_batch else None,
        batch_ns=float(times["batch_ns"]) if has_batch else None,
    )


def time_c_predict(
    c_files: Sequence[Path],
    adapter: str,
    n_features: int,
    X: np.ndarray,
    workdir: Path,
    *,
    cflags: Sequence[str] = (),
    include: Path | None = None,
    batch: bool = False,
    passes: int = 7,
    timeout: float = 300,
) -> HarnessRun:
    """Time a model's C code on the rows of ``X`` (float32, ``n_features`` columns).

    ``c_files`` (sources or objects) are linked with the harness and ``adapter`` (which defines
    ``static int bench_predict(const float *x)``, and ``bench_predict_batch`` when ``batch``),
    compiled with gcc -O2 plus ``cflags``; the harness runs ``passes`` timed loops over all
    rows (clock_gettime(CLOCK_MONOTONIC)) and returns the labels and the median ns per row.
    """
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} columns, the model {n_features} features")
    exe = build_harness(
        c_files,
        adapter,
        n_features,
        workdir,
        compiler=(HOST_CC, "-O2", *cflags),
        include=include,
        batch=batch,
        timeout=timeout,
    )
    return run_harness(exe, X, passes, timeout=timeout)
