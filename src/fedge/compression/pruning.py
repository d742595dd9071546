"""Pruning as IR passes: fewer trees, shallower trees, merged leaves, fewer neurons.

``ModelPruner(sparsity, method).prune_model(model, X, y)`` takes a fitted estimator or an
IR model and returns a smaller IR model; ``report_`` says what went.

Methods
-------
``lossless``
    Merge every split whose two subtrees are identical (bit for bit) into that subtree, and
    share equal leaf rows. Predictions never change.
``trees``
    Keep ``1 - sparsity`` of the trees. Averaged ensembles (random forests) keep the trees
    chosen by greedy forward selection on validation data ``(X, y)``; boosted ensembles keep
    their first rounds (later rounds correct earlier ones, so any other subset is a
    different model).
``depth``
    Cut every tree at ``max_depth``; a cut node becomes a leaf holding the mean of the
    leaves below it, weighted by how many rows of ``X`` reach each (uniform without rows).
``neurons``
    Remove ``sparsity`` of each hidden MLP layer's neurons, smallest
    ``||incoming|| * ||outgoing||`` first; with ``X``, the next layer's bias absorbs the
    removed neurons' mean output.
``magnitude``
    Zero the ``sparsity`` fraction of smallest-magnitude weights of each linear/MLP layer
    (the lite file's xz data section stores the zeros in a few bytes).
``gradual``
    Magnitude pruning of a scikit-learn MLP (or a pipeline ending in one) in ``steps``
    rounds along the Zhu & Gupta schedule up to ``sparsity``, fine-tuning on ``(X, y)`` for
    ``epochs`` passes of ``partial_fit`` after each round with the pruned weights held at
    zero. Needs the fitted estimator (the IR holds no optimizer) and training rows.

:func:`polynomial_sparsity` is the gradual schedule of Zhu & Gupta (2017).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedge.errors import InvalidInputError, UnsupportedModelError
from fedge.ir import Dense, Linear, Model, QuantizedTrees, Task, TreeEnsemble, lower
from fedge.ir.nodes import Aggregation, Comparison, Link, Precision, Step, validate
from fedge.ir.runtime import check_input, step_output
from fedge.ir.treeops import Ensemble, LocalTree, join_trees, leaves_reached, split_trees

__all__ = ["ModelPruner", "PruningMethod", "PruningReport", "polynomial_sparsity"]


class PruningMethod(StrEnum):
    LOSSLESS = "lossless"
    TREES = "trees"
    DEPTH = "depth"
    NEURONS = "neurons"
    MAGNITUDE = "magnitude"
    GRADUAL = "gradual"


@dataclass
class PruningReport:
    """What one pruning pass removed."""

    method: PruningMethod
    sparsity: float
    steps: list[str] = field(default_factory=list)


def polynomial_sparsity(
    step: int, *, initial: float, final: float, begin: int, n_steps: int, interval: int = 1
) -> float:
    """Sparsity at training step ``step`` (Zhu & Gupta 2017, eq. 1):
    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for
    ``t0 <= t <= t0 + n * dt``; ``s_i`` before, ``s_f`` after."""
    for name, value in (("initial", initial), ("final", final)):
        if not 0.0 <= value < 1.0:
            raise InvalidInputError(f"{name} sparsity must be in [0, 1), got {value}")
    if n_steps <= 0 or interval <= 0:
        raise InvalidInputError("n_steps and interval must be positive")
    progress = min(max((step - begin) / (n_steps * interval), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class ModelPruner:
    """Prune a model (the seed's API); see the module docstring for the methods.

    Parameters
    ----------
    sparsity : float
        Fraction removed, in [0, 1) (trees, neurons or weights).
    method : PruningMethod or str
    max_depth : int, optional
        Depth limit of the ``depth`` method.
    """

    def __init__(
        self,
        sparsity: float = 0.5,
        method: PruningMethod | str = PruningMethod.MAGNITUDE,
        *,
        max_depth: int | None = None,
        steps: int = 10,
        epochs: int = 20,
    ) -> None:
        if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
            raise InvalidInputError(f"sparsity must be in [0, 1), got {sparsity!r}")
        try:
            self.method = PruningMethod(method)
        except ValueError:
            options = ", ".join(m.value for m in PruningMethod)
            raise InvalidInputError(f"unknown pruning method {method!r}; use {options}") from None
        if self.method is PruningMethod.DEPTH and (max_depth is None or max_depth < 1):
            raise InvalidInputError("the depth method needs max_depth >= 1")
        self.sparsity = float(sparsity)
        self.max_depth = max_depth
        if steps < 1 or epochs < 0:
            raise InvalidInputError(f"need steps >= 1 and epochs >= 0, got {steps} and {epochs}")
        self.steps, self.epochs = int(steps), int(epochs)
        self.report_: PruningReport | None = None

    def prune_model(self, model: Any, X: Any = None, y: Any = None) -> Model:
        """Return the pruned IR model. ``X`` (and ``y`` for tree selection) are validation
        or calibration rows; which methods need them is in the module docstring.

        Raises
        ------
        UnsupportedModelError
            If the model has no step this method prunes.
        InvalidInputError
            If the method needs data that is missing or malformed.
        """
        if self.method is PruningMethod.GRADUAL:
            model = self._gradual(model, X, y)
        ir = lower(model)
        Xc = None if X is None else check_input(ir, X)
        report = PruningReport(self.method, self.sparsity)
        handler = {
            PruningMethod.LOSSLESS: self._lossless,
            PruningMethod.TREES: self._trees,
            PruningMethod.DEPTH: self._depth,
            PruningMethod.NEURONS: self._neurons,
            PruningMethod.MAGNITUDE: self._magnitude,
            PruningMethod.GRADUAL: self._report_sparsity,
        }[self.method]
        steps = handler(ir, Xc, None if y is None else np.asarray(y), report)
        if not report.steps:
            kinds = ", ".join(type(s).__name__ for s in ir.steps)
            raise UnsupportedModelError(
                f"the {self.method.value} method prunes nothing in a model of {kinds}"
            )
        self.report_ = report
        meta = dict(ir.metadata)
        meta["compression"] = [
            *meta.get("compression", []),
            {"pass": "pruning", "method": self.method.value, "sparsity": self.sparsity},
        ]
        return validate(dataclasses.replace(ir, steps=tuple(steps), metadata=meta))

    # ----------------------------------------------------------------- trees
    def _lossless(self, ir: Model, X: Any, y: Any, report: PruningReport) -> list[Step]:
        out = []
        for i, step in enumerate(ir.steps):
            if isinstance(step, TreeEnsemble | QuantizedTrees):
                trees = [_merge_identical(t) for t in split_trees(step)]
                new = _share_leaves(join_trees(step, trees))
                report.steps.append(
                    f"step {i}: {step.n_nodes} -> {new.n_nodes} splits, "
                    f"{step.n_leaves} -> {new.n_leaves} leaf rows"
                )
                step = new
            out.append(step)
        return out

    def _trees(self, ir: Model, X: Any, y: Any, report: PruningReport) -> list[Step]:
        out = []
        for i, step in enumerate(ir.steps):
            if isinstance(step, TreeEnsemble | QuantizedTrees):
                trees = split_trees(step)
                if step.aggregation is Aggregation.MEAN:
                    keep = max(1, round(len(trees) * (1 - self.sparsity)))
                    chosen = _forward_selection(ir, i, step, trees, keep, X, y)
                    new = join_trees(step, [trees[t] for t in chosen])
                    how = "greedy forward selection on validation data"
                else:
                    rounds = _rounds(step)
                    keep = max(1, round(len(rounds) * (1 - self.sparsity)))
                    new = join_trees(step, [trees[t] for r in rounds[:keep] for t in r])
                    how = f"first {keep} of {len(rounds)} boosting rounds"
                report.steps.append(f"step {i}: {step.n_trees} -> {new.n_trees} trees ({how})")
                step = new
            out.append(step)
        return out

    def _depth(self, ir: Model, X: Any, y: Any, report: PruningReport) -> list[Step]:
        out, h = [], X
        for i, step in enumerate(ir.steps):
            if isinstance(step, TreeEnsemble | QuantizedTrees):
                rows = None if h is None else _as_compared(step, h)
                le = step.comparison is Comparison.LE
                trees = [
                    _cut(t, r, self.max_depth or 1, rows, le)
                    for t, r in zip(split_trees(step), _routing(step), strict=True)
                ]
                new = join_trees(step, trees)
                report.steps.append(
                    f"step {i}: depth {step.max_depth} -> {new.max_depth}, "
                    f"{step.n_nodes} -> {new.n_nodes} splits"
                )
                step = new
            if h is not None:
                h = step_output(step, h)
            out.append(step)
        return out

    # ----------------------------------------------------------------- weights
    def _neurons(self, ir: Model, X: Any, y: Any, report: PruningReport) -> list[Step]:
        steps = list(ir.steps)
        h = X  # the input of steps[i] in the pruned model
        for i in range(len(steps)):
            step, nxt = steps[i], steps[i + 1] if i + 1 < len(steps) else None
            if isinstance(step, Dense) and isinstance(nxt, Linear | Dense):
                score = np.linalg.norm(step.weights, axis=0) * np.linalg.norm(nxt.weights, axis=1)
                n = step.n_outputs
                drop = min(int(np.floor(n * self.sparsity)), n - 1)  # keep one neuron
                gone = np.sort(np.argsort(score, kind="stable")[:drop])
                keep = np.setdiff1d(np.arange(n), gone)
                bias = nxt.bias.astype(np.float64)
                if h is not None and gone.size:
                    mean_out = step_output(step, h).mean(axis=0)
                    bias = bias + mean_out[gone] @ nxt.weights[gone].astype(np.float64)
                steps[i] = dataclasses.replace(
                    step, weights=step.weights[:, keep], bias=step.bias[keep]
                )
                steps[i + 1] = dataclasses.replace(
                    nxt, weights=nxt.weights[keep], bias=bias.astype(nxt.bias.dtype)
                )
                report.steps.append(f"step {i}: {n} -> {keep.size} neurons")
            if h is not None:
                h = step_output(steps[i], h)
        return steps

    def _gradual(self, estimator: Any, X: Any, y: Any) -> Any:
        """A pruned, fine-tuned copy of a fitted scikit-learn MLP (or pipeline ending in one)."""
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        from sklearn.pipeline import Pipeline

        piped = isinstance(estimator, Pipeline)
        mlp = estimator[-1] if piped else estimator
        if not isinstance(mlp, MLPClassifier | MLPRegressor) or not hasattr(mlp, "coefs_"):
            raise UnsupportedModelError(
                "gradual pruning fine-tunes a fitted scikit-learn MLPClassifier/MLPRegressor "
                f"(or a pipeline ending in one), got {type(estimator).__name__}"
            )
        if X is None or y is None:
            raise InvalidInputError(
                "gradual pruning fine-tunes: prune_model(mlp, X_train, y_train)"
            )
        est = copy.deepcopy(estimator)  # the caller's estimator stays as it was
        mlp = est[-1] if piped else est
        Xt = est[:-1].transform(X) if piped else np.asarray(X)
        yt = np.asarray(y)
        keep = [np.ones(w.shape, dtype=bool) for w in mlp.coefs_]
        for step in range(1, self.steps + 1):
            target = polynomial_sparsity(
                step, initial=0.0, final=self.sparsity, begin=0, n_steps=self.steps
            )
            for w, mask in zip(mlp.coefs_, keep, strict=True):
                k = int(np.floor(w.size * target))
                mask[...] = True
                mask.flat[np.argsort(np.abs(w), axis=None, kind="stable")[:k]] = False
                w[~mask] = 0.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for _ in range(self.epochs):
                    mlp.partial_fit(Xt, yt)
                    for w, mask in zip(mlp.coefs_, keep, strict=True):
                        w[~mask] = 0.0
        return est

    def _report_sparsity(self, ir: Model, X: Any, y: Any, report: PruningReport) -> list[Step]:
        for i, step in enumerate(ir.steps):
            if isinstance(step, Linear | Dense):
                zero = int(np.count_nonzero(step.weights == 0))
                report.steps.append(
                    f"step {i}: {zero} of {step.weights.size} weights zero after "
                    f"{self.steps} rounds of pruning and fine-tuning"
                )
        return list(ir.steps)

    def _magnitude(self, ir: Model, X: Any, y: Any, report: PruningReport) -> list[Step]:
        out = []
        for i, step in enumerate(ir.steps):
            if isinstance(step, Linear | Dense):
                w = step.weights
                k = int(np.floor(w.size * self.sparsity))
                if k:
                    cut = np.argsort(np.abs(w), axis=None, kind="stable")[:k]
                    w = w.copy()
                    w.flat[cut] = 0
                report.steps.append(f"step {i}: {k} of {w.size} weights zeroed")
                step = dataclasses.replace(step, weights=w)
            out.append(step)
        return out


# --------------------------------------------------------------------------- helpers
def _subtree_key(tree: LocalTree, ref: int, memo: dict[int, bytes]) -> bytes:
    """A digest equal for two subtrees exactly when they are bit-identical."""
    if ref in memo:
        return memo[ref]
    if ref < 0:
        key = b"L" + tree.leaf_values[~ref].tobytes()
    else:
        head = b"S%d|%s|%d|" % (
            int(tree.feature[ref]),
            tree.threshold[ref : ref + 1].tobytes().hex().encode(),
            int(tree.missing_left[ref]),
        )
        left = _subtree_key(tree, int(tree.left[ref]), memo)
        right = _subtree_key(tree, int(tree.right[ref]), memo)
        key = hashlib.sha256(head + left + b"|" + right).digest()
    memo[ref] = key
    return key


def _merge_identical(tree: LocalTree) -> LocalTree:
    """Replace every split whose subtrees are identical by one of them (bottom-up)."""
    memo: dict[int, bytes] = {}
    replace: dict[int, int] = {}
    # Splits are numbered breadth-first, so children come after parents: go backwards.
    for node in range(tree.n_splits - 1, -1, -1):
        left, right = int(tree.left[node]), int(tree.right[node])
        left, right = replace.get(left, left), replace.get(right, right)
        if _subtree_key(tree, left, memo) == _subtree_key(tree, right, memo):
            replace[node] = left
    if not replace:
        return tree
    return _rebuild(tree, lambda ref: replace.get(ref, ref))


def _rebuild(tree: LocalTree, follow: Any) -> LocalTree:
    """Copy the part of ``tree`` reachable from its root, rerouting refs through ``follow``."""
    feature, threshold, missing, lefts, rights = [], [], [], [], []
    leaf_rows: list[int] = []

    def visit(ref: int) -> int:
        ref = follow(ref)
        while ref >= 0 and follow(ref) != ref:
            ref = follow(ref)
        if ref < 0:
            leaf_rows.append(~ref)
            return ~(len(leaf_rows) - 1)
        me = len(feature)
        feature.append(tree.feature[ref])
        threshold.append(tree.threshold[ref])
        missing.append(tree.missing_left[ref])
        lefts.append(0)
        rights.append(0)
        stack.append((me, ref))
        return me

    stack: list[tuple[int, int]] = []
    root = visit(tree.root)
    while stack:
        me, ref = stack.pop()
        lefts[me] = visit(int(tree.left[ref]))
        rights[me] = visit(int(tree.right[ref]))
    return dataclasses.replace(
        tree,
        feature=np.array(feature, dtype=np.int32),
        threshold=np.array(threshold, dtype=tree.threshold.dtype),
        left=np.array(lefts, dtype=np.int64),
        right=np.array(rights, dtype=np.int64),
        missing_left=np.array(missing, dtype=bool),
        leaf_values=tree.leaf_values[np.array(leaf_rows, dtype=np.int64)],
        root=root,
    )


def _share_leaves(step: Ensemble) -> Ensemble:
    """One leaf row per distinct leaf vector (by bits), shared by every node using it."""
    bits = np.ascontiguousarray(step.leaf_values).view(np.uint8).reshape(step.n_leaves, -1)
    _, first, inverse = np.unique(bits, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first)  # keep rows in order of first use
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    new_id = rank[inverse]

    def remap(refs: np.ndarray) -> np.ndarray:
        return np.where(refs < 0, ~new_id[~np.minimum(refs, -1)], refs).astype(np.int32)

    return dataclasses.replace(
        step,
        left=remap(step.left),
        right=remap(step.right),
        roots=remap(step.roots),
        leaf_values=step.leaf_values[first[order]],
    )


def _rounds(step: Ensemble) -> list[list[int]]:
    """Trees grouped by boosting round: a round writes each output once, in order."""
    rounds: list[list[int]] = [[]]
    for t in range(step.n_trees):
        if rounds[-1] and int(step.tree_offset[t]) <= int(step.tree_offset[rounds[-1][-1]]):
            rounds.append([])
        rounds[-1].append(t)
    return rounds


def _routing(step: Ensemble) -> list[LocalTree]:
    """The trees with float thresholds, to route rows (a quantized ensemble's edges)."""
    return split_trees(step.as_float() if isinstance(step, QuantizedTrees) else step)


def _as_compared(step: Ensemble, X: np.ndarray) -> np.ndarray:
    """Rows as the ensemble compares them (float32-rounded for float32 libraries)."""
    if isinstance(step, QuantizedTrees) or step.input_precision is Precision.FLOAT32:
        return X.astype(np.float32).astype(np.float64)
    return X


def _cut(
    tree: LocalTree, routing: LocalTree, max_depth: int, X: np.ndarray | None, le: bool
) -> LocalTree:
    """Cut ``tree`` below ``max_depth`` splits; a cut node's leaf is the (row-weighted) mean
    of the leaves under it (rounded for integer leaves). ``routing`` is the same tree with
    float thresholds."""
    counts = np.ones(tree.leaf_values.shape[0])
    if X is not None:
        reached = np.bincount(leaves_reached(routing, X, le), minlength=counts.size)
        if reached.sum() > 0:
            counts = reached.astype(np.float64)
    new_leaves: list[np.ndarray] = list(tree.leaf_values.astype(np.float64))
    cut: dict[int, int] = {}

    def under(ref: int) -> list[int]:
        out, stack = [], [ref]
        while stack:
            r = stack.pop()
            if r < 0:
                out.append(~r)
            else:
                stack += [int(tree.left[r]), int(tree.right[r])]
        return out

    frontier, depth = [tree.root], 0
    while frontier:
        nxt = []
        for ref in frontier:
            if ref < 0:
                continue
            if depth == max_depth:
                leaves = under(ref)
                w = counts[leaves]
                w = w if w.sum() > 0 else np.ones(len(leaves))
                new_leaves.append(np.average(tree.leaf_values[leaves].astype(np.float64), 0, w))
                cut[ref] = ~(len(new_leaves) - 1)
            else:
                nxt += [int(tree.left[ref]), int(tree.right[ref])]
        frontier, depth = nxt, depth + 1
    if not cut:
        return tree
    merged = np.array(new_leaves)
    if tree.leaf_values.dtype.kind == "i":
        merged = np.rint(merged)
    widened = dataclasses.replace(tree, leaf_values=merged.astype(tree.leaf_values.dtype))
    return _rebuild(widened, lambda ref: cut.get(ref, ref))


def _forward_selection(
    ir: Model,
    index: int,
    step: Ensemble,
    trees: list[LocalTree],
    keep: int,
    X: np.ndarray | None,
    y: np.ndarray | None,
) -> list[int]:
    """Greedy forward selection of ``keep`` trees of an averaged ensemble on (X, y)."""
    if X is None or y is None:
        raise InvalidInputError(
            "selecting trees of a forest needs validation data: prune_model(model, X, y)"
        )
    if y.shape[0] != X.shape[0]:
        raise InvalidInputError(f"y has {y.shape[0]} labels for {X.shape[0]} rows")
    h = X
    for step_before in ir.steps[:index]:
        h = step_output(step_before, h)
    rows = _as_compared(step, h)
    le = step.comparison is Comparison.LE
    width = step.leaf_width
    # Each tree's contribution to every output, (n_trees, n_rows, n_outputs).
    contrib = np.zeros((len(trees), X.shape[0], step.n_outputs))
    for t, tree in enumerate(_routing(step)):
        leaf = leaves_reached(tree, rows, le)
        contrib[t, :, tree.offset : tree.offset + width] = tree.leaf_values[leaf]
    classification = ir.task is Task.CLASSIFICATION
    if classification and (index != len(ir.steps) - 1 or ir.link is not Link.IDENTITY):
        raise UnsupportedModelError(
            "tree selection scores averaged classifiers whose trees vote probabilities "
            "(random forests); this model's trees feed a link or another step"
        )
    if classification:
        if not np.all(np.isin(y, ir.classes)):
            raise InvalidInputError("y holds labels that are not classes of the model")
        target = np.searchsorted(ir.classes, y)
    chosen: list[int] = []
    total = np.zeros((X.shape[0], step.n_outputs))
    remaining = list(range(len(trees)))
    for _ in range(keep):
        best, best_score = remaining[0], -np.inf
        for t in remaining:
            scores = (total + contrib[t]) / (len(chosen) + 1)
            if classification:
                acc = np.mean(np.argmax(scores, axis=1) == target)
                margin = np.mean(scores[np.arange(len(target)), target])
                score = acc + 1e-6 * margin  # ties: the more confident ensemble
            else:
                score = -np.mean((scores - y.reshape(len(y), -1)) ** 2)
            if score > best_score:
                best, best_score = t, score
        chosen.append(best)
        remaining.remove(best)
        total += contrib[best]
    return sorted(chosen)
