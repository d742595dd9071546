"""AutoCompress: the smallest model within an accuracy budget, and the size/accuracy front.

The search tries chains of passes (pruning, then quantization) over a small grid suited to
the model (trees: tree selection or boosting-round truncation, depth limits, threshold and
leaf precision; linear models and MLPs: neuron pruning and weight precision), measures every
candidate as a real lite file, and chooses on validation data only. The validation rows are
split in two halves with ``seed``: passes that learn from data (tree selection, depth
weights, bias corrections) see the first, and candidates are scored on the second, so a
choice is not graded on the rows that shaped it.

With ``distill=True`` (the default) the candidates also include students distilled from the
model (tree ensembles: single trees of a few depths and a small forest; MLPs: narrower
MLPs and a logistic/ridge head), each then stored at a few precisions. A student learns
from the first half only, on the model's temperature-softened targets, plus MUNGE transfer
rows drawn around that half and labelled by the model (see
:mod:`fedge.compression.distillation`); it is scored on the second half like every other
candidate. Linear models have no smaller student and get none.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from fedge.compression.accounting import evaluate, lite_bytes
from fedge.compression.distillation import KnowledgeDistiller, student_from_spec
from fedge.compression.pruning import ModelPruner
from fedge.compression.quantization import ModelQuantizer
from fedge.errors import FedgeError, InvalidInputError, UnsupportedModelError
from fedge.ir import Dense, Model, QuantizedDense, QuantizedTrees, Task, TreeEnsemble, lower
from fedge.ir.runtime import check_input

__all__ = ["Candidate", "SearchResult", "auto_compress"]

Chain = tuple[tuple[str, ...], list[Callable]]

#: Distillation settings of the search: the distiller's defaults (T = 3 softens the
#: teacher, alpha = 0.7 mixes in the true labels) and transfer rows four times the learning
#: rows, between 1,000 and 4,000 (more rows teach better and cost more fitting time).
DISTILL_TEMPERATURE = 3.0
DISTILL_ALPHA = 0.7
TRANSFER_ROWS = (4, 1000, 4000)


@dataclass(frozen=True)
class Candidate:
    """One chain of passes and what it measured on the scoring half of the validation rows."""

    passes: tuple[str, ...]
    bytes: int
    score: float  # accuracy (classification) or R2 (regression)
    model: Model = field(repr=False, compare=False)


@dataclass(frozen=True)
class SearchResult:
    """The chosen model, the baseline, every candidate and the Pareto front."""

    best: Candidate
    baseline: Candidate
    metric: str
    max_drop: float
    candidates: list[Candidate]
    front: list[Candidate]  # smallest first; each more accurate than every smaller one

    @property
    def model(self) -> Model:
        return self.best.model


def _tree_chains(step: TreeEnsemble) -> list[Chain]:
    sparsities = (0.0, 0.5, 0.75, 0.9)
    depths = (None, 8, 6, 4) if step.max_depth > 4 else (None,)
    precisions = (None, "float16", "int16", "int8")
    chains = []
    for sparsity, depth, precision in itertools.product(sparsities, depths, precisions):
        if depth is not None and depth >= step.max_depth:
            continue
        steps: list[tuple[str, Callable]] = [("lossless", _prune(0.0, "lossless"))]
        if sparsity:
            steps.append((f"trees {sparsity:g}", _prune(sparsity, "trees")))
        if depth is not None:
            steps.append((f"depth {depth}", _prune(0.0, "depth", max_depth=depth)))
        if precision is not None:
            steps.append((precision, _quantize(precision)))
        chains.append((tuple(n for n, _ in steps), [f for _, f in steps]))
    return chains


def _weight_chains(model: Model) -> list[Chain]:
    hidden = sum(isinstance(s, Dense) for s in model.steps[:-1]) > 0
    sparsities = (0.0, 0.25, 0.5) if hidden else (0.0,)
    chains = []
    for sparsity, precision in itertools.product(
        sparsities, (None, "float16", "int16", "int8", "dynamic")
    ):
        steps: list[tuple[str, Callable]] = []
        if sparsity:
            steps.append((f"neurons {sparsity:g}", _prune(sparsity, "neurons")))
        if precision is not None:
            steps.append((precision, _quantize(precision)))
        chains.append((tuple(n for n, _ in steps) or ("lossless",), [f for _, f in steps]))
    return chains


def _student_chains(model: Model, n_rows: int, seed: int) -> list[Chain]:
    """Distilled students, each stored as is and at lower precisions. One distiller teaches
    them all, so the transfer rows and the teacher's targets are computed once."""
    if any(isinstance(s, TreeEnsemble | QuantizedTrees) for s in model.steps):
        specs = ["tree:4", "tree:6", "tree:8", "tree:10", "forest:10:6"]
        first: tuple[str, ...] = ("lossless",)  # merge the student's identical subtrees
    else:
        layers = [s for s in model.steps if isinstance(s, Dense | QuantizedDense)]
        if len(layers) < 2:  # a linear model: no smaller student to train
            return []
        width = layers[0].n_outputs
        specs = [f"mlp:{w}" for w in (8, 16, 32) if w < width] + ["linear"]
        first = ()
    per_row, low, high = TRANSFER_ROWS
    distiller = KnowledgeDistiller(
        model,
        temperature=DISTILL_TEMPERATURE,
        alpha=DISTILL_ALPHA,
        transfer_rows=int(np.clip(per_row * n_rows, low, high)),
        seed=seed,
    )
    chains = []
    for spec, precision in itertools.product(specs, (None, "float16", "int8")):
        steps: list[tuple[str, Callable]] = [(f"distill {spec}", _distill(distiller, spec))]
        steps += [(name, _prune(0.0, "lossless")) for name in first]
        if precision is not None:
            steps.append((precision, _quantize(precision)))
        chains.append((tuple(n for n, _ in steps), [f for _, f in steps]))
    return chains


def _distill(distiller: KnowledgeDistiller, spec: str) -> Callable:
    def run(model: Model, X: np.ndarray, y: np.ndarray) -> Model:
        teacher = distiller.teacher  # ``model``: a student's chain starts from the teacher
        try:
            # One BLAS thread: students are small, and threads only contend (measured: a
            # logistic student on 12k weighted rows took 7 s threaded, 0.1 s on one thread).
            with warnings.catch_warnings(), threadpool_limits(limits=1):
                warnings.simplefilter("ignore", ConvergenceWarning)  # an MLP student's
                fresh = student_from_spec(spec, teacher.task, distiller.seed)
                student = lower(distiller.distill(fresh, X, y))
        except ValueError as exc:  # e.g. NaN inputs for a student that takes none
            raise UnsupportedModelError(f"student {spec} cannot learn these rows: {exc}") from None
        if teacher.classes is not None and not np.array_equal(student.classes, teacher.classes):
            raise UnsupportedModelError(f"student {spec} did not see every class")
        meta = dict(student.metadata)
        meta["compression"] = [
            *teacher.metadata.get("compression", []),
            {
                "pass": "distillation",
                "student": spec,
                "temperature": DISTILL_TEMPERATURE,
                "alpha": distiller.report_.alpha,
                "rows": distiller.report_.rows,
                "transfer_rows": distiller.report_.transfer_rows,
                "teacher": dict(teacher.metadata.get("source", {})).get("estimator", "model"),
            },
        ]
        return dataclasses.replace(student, feature_names=teacher.feature_names, metadata=meta)

    return run


def _prune(sparsity: float, method: str, **kw: Any) -> Callable:
    def run(model: Model, X: np.ndarray, y: np.ndarray) -> Model:
        return ModelPruner(sparsity, method, **kw).prune_model(model, X, y)

    return run


def _quantize(strategy: str) -> Callable:
    def run(model: Model, X: np.ndarray, y: np.ndarray) -> Model:
        return ModelQuantizer(strategy).quantize_model(model)

    return run


def auto_compress(
    model: Any,
    X_val: Any,
    y_val: Any,
    *,
    max_accuracy_drop: float = 0.01,
    seed: int = 0,
    distill: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Search compression chains for ``model`` and return the smallest within budget.

    Parameters
    ----------
    model : estimator or Model
    X_val, y_val : array-like
        Validation rows (never the test split): the first half (after a seeded shuffle)
        feeds passes that learn from data, the second half scores candidates.
    max_accuracy_drop : float
        Largest accepted loss against the uncompressed model on the scoring half, in
        accuracy (classification) or R2 (regression): 0.01 is one point.
    seed : int
        Seed of the validation split, the students and their transfer rows.
    distill : bool
        Also try students distilled from the model on the first half (plus MUNGE
        transfer rows), stored at a few precisions (see the module docstring). Tree
        ensembles and MLPs only; ``False`` searches compression passes alone.
    progress : callable, optional
        Called with (candidates done, candidates in total).

    Raises
    ------
    InvalidInputError
        If the budget is negative (no model meets it), or the data is malformed.
    """
    if not isinstance(max_accuracy_drop, (int, float)) or max_accuracy_drop < 0:
        raise InvalidInputError(
            f"max_accuracy_drop={max_accuracy_drop!r}: no model can be more accurate than "
            "itself on the same rows; use a budget >= 0 (0.01 is one point)"
        )
    ir = lower(model)
    X = check_input(ir, X_val)
    y = np.asarray(y_val)
    if y.shape[0] != X.shape[0] or X.shape[0] < 4:
        raise InvalidInputError(
            f"need at least 4 validation rows with one label each, got {X.shape[0]} rows "
            f"and {y.shape[0]} labels"
        )
    order = np.random.default_rng(seed).permutation(X.shape[0])
    fit_rows, score_rows = order[: X.shape[0] // 2], order[X.shape[0] // 2 :]
    X_fit, y_fit, X_score, y_score = X[fit_rows], y[fit_rows], X[score_rows], y[score_rows]
    metric = "accuracy" if ir.task is Task.CLASSIFICATION else "r2"

    def measure(passes: tuple[str, ...], m: Model) -> Candidate:
        return Candidate(passes, lite_bytes(m), evaluate(m, X_score, y_score)[metric], m)

    trees = [s for s in ir.steps if isinstance(s, TreeEnsemble)]
    chains = _tree_chains(trees[0]) if trees else _weight_chains(ir)
    if distill:
        chains += _student_chains(ir, X_fit.shape[0], seed)
    baseline = measure(("source",), ir)
    candidates: list[Candidate] = []
    cache: dict[tuple[str, ...], Model] = {}
    for done, (names, funcs) in enumerate(chains):
        current, prefix = ir, ()
        try:
            for name, fn in zip(names, funcs, strict=False):
                prefix = (*prefix, name)
                if prefix not in cache:
                    cache[prefix] = fn(current, X_fit, y_fit)
                current = cache[prefix]
            candidates.append(measure(names, current))
        except FedgeError:
            pass  # a pass that does not apply to this model (e.g. dynamic on trees)
        if progress is not None:
            progress(done + 1, len(chains))
    floor = baseline.score - max_accuracy_drop
    within = [c for c in candidates if c.score >= floor - 1e-12]
    if not within:  # cannot happen with budget >= 0 (the lossless chain is exact)
        raise InvalidInputError("no compressed model stays within the accuracy budget")
    best = min(within, key=lambda c: (c.bytes, -c.score))
    return SearchResult(
        best, baseline, metric, float(max_accuracy_drop), candidates, _front(candidates)
    )


def _front(candidates: list[Candidate]) -> list[Candidate]:
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.bytes, -c.score)):
        if not front or c.score > front[-1].score:
            front.append(c)
    return front
