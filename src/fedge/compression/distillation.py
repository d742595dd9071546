"""Knowledge distillation: train a small student on what a large teacher knows.

The teacher's class probabilities, softened by a temperature ``T``
(``p_T = softmax(log p / T)``: T = 1 keeps the teacher's own distribution, T = 3-5
spreads it over the classes the teacher finds plausible), become the student's targets.
Any scikit-learn-compatible classifier that takes ``sample_weight`` can be the student
(trees, forests, boosted ensembles, logistic regression, MLPs, pipelines of them): each
row is given once per class with weight ``alpha * p_T(k | x) + (1 - alpha) * [y == k]``,
which makes the weighted log-loss (or the weighted impurity of a tree) exactly the
cross-entropy against the mixed soft/hard targets. Regression teachers pass their
predictions, mixed with the true targets by ``alpha``.

Transfer rows carry "dark knowledge" where the data is thin: MUNGE (Bucilua, Caruana and
Niculescu-Mizil, 2006) swaps each value with the nearest neighbour's with probability
``p_swap``, else draws it around the neighbour's value; the teacher labels them.

:meth:`KnowledgeDistiller.progressive` distils through a chain of shrinking students, and
:meth:`KnowledgeDistiller.self_distill` retrains the teacher's own architecture.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from fedge.compression.accounting import lite_bytes
from fedge.errors import InvalidInputError, UnsupportedModelError
from fedge.ir import Task, lower, predict, predict_proba
from fedge.ir.runtime import check_input

__all__ = ["DistillationReport", "KnowledgeDistiller", "munge", "soften", "student_from_spec"]


def soften(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(proba) / T)`` row by row (zeros stay zero at any finite T)."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise InvalidInputError(f"temperature must be positive and finite, got {temperature}")
    p = np.asarray(proba, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(p) / temperature
    logits -= np.max(logits, axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def munge(
    X: np.ndarray, n_rows: int, *, p_swap: float = 0.5, spread: float = 1.0, seed: int = 0
) -> np.ndarray:
    """``n_rows`` synthetic rows near ``X`` by MUNGE: for a random row and its nearest
    neighbour, each value is swapped with the neighbour's with probability ``p_swap``,
    otherwise drawn from a normal around the neighbour's value with standard deviation
    ``|a - b| / spread``. NaN values stay NaN."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] < 2:
        raise InvalidInputError("MUNGE needs at least two rows")
    rng = np.random.default_rng(seed)
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    scale = np.nanstd(filled, axis=0)
    scale[scale == 0] = 1
    Z = filled / scale
    norms = np.einsum("ij,ij->i", Z, Z)
    out = np.empty((n_rows, X.shape[1]))
    picks = rng.integers(0, X.shape[0], n_rows)
    for start in range(0, n_rows, 512):  # nearest neighbours in blocks (bounded memory)
        rows = picks[start : start + 512]
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product instead of a 3-D difference
        d = norms[rows, None] + norms[None, :] - 2.0 * (Z[rows] @ Z.T)
        d[np.arange(rows.size), rows] = np.inf
        nn = np.argmin(d, axis=1)
        a, b = X[rows], X[nn]
        swap = rng.random(a.shape) < p_swap
        jitter = rng.normal(b, np.abs(np.nan_to_num(a - b)) / spread)
        out[start : start + rows.size] = np.where(swap, b, np.where(np.isnan(a), a, jitter))
    return out


@dataclass(frozen=True)
class DistillationReport:
    """What one distillation did: settings, rows used and the student's size and fidelity."""

    temperature: float
    alpha: float
    rows: int  # real rows
    transfer_rows: int  # synthetic rows labelled by the teacher
    teacher_bytes: int
    student_bytes: int
    agreement: float  # share of the real rows where student and teacher predict alike


class KnowledgeDistiller:
    """Teacher-student training (see the module docstring).

    Parameters
    ----------
    teacher : fitted estimator or Model
    temperature : float
        Softening of the teacher's probabilities (classification).
    alpha : float
        Weight of the teacher's targets against the true labels, in [0, 1] (1 when no
        labels are given).
    transfer_rows : int
        Synthetic MUNGE rows added to the training rows, labelled by the teacher.
    seed : int
        Seed of the transfer rows.
    """

    def __init__(
        self,
        teacher: Any,
        *,
        temperature: float = 3.0,
        alpha: float = 0.7,
        transfer_rows: int = 0,
        seed: int = 0,
    ) -> None:
        self.teacher = lower(teacher)
        if not 0.0 <= alpha <= 1.0:
            raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}")
        soften(np.ones((1, 2)) / 2, temperature)  # validates the temperature
        if transfer_rows < 0:
            raise InvalidInputError(f"transfer_rows must be >= 0, got {transfer_rows}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.transfer_rows, self.seed = int(transfer_rows), int(seed)
        self.report_: DistillationReport | None = None
        # Reused when one distiller teaches several students on the same rows.
        self._teacher_bytes: int | None = None
        self._rows: tuple[bytes, np.ndarray, np.ndarray] | None = None  # key, rows, targets

    def distill(self, student: Any, X: Any, y: Any = None) -> Any:
        """Fit an unfitted ``student`` estimator on the teacher's targets over ``X`` (plus
        transfer rows); return it, with ``report_`` set.

        Raises
        ------
        UnsupportedModelError
            If the student cannot take per-row weights (classification) or the teacher has
            no probabilities.
        """
        teacher = self.teacher
        Xr = check_input(teacher, X)
        alpha = self.alpha if y is not None else 1.0
        if y is not None and np.asarray(y).shape[0] != Xr.shape[0]:
            raise InvalidInputError(f"y has {np.asarray(y).shape[0]} labels for {Xr.shape[0]} rows")
        X_all, outputs = self._rows_and_targets(Xr)
        n_real = Xr.shape[0]
        if teacher.task is Task.REGRESSION:
            target = outputs.copy()
            if y is not None and alpha < 1:
                target[:n_real] = alpha * target[:n_real] + (1 - alpha) * np.asarray(y)
            student.fit(X_all, target)
        else:
            self._fit_soft(student, X_all, outputs, n_real, y, alpha)
        self.report_ = DistillationReport(
            temperature=self.temperature,
            alpha=alpha,
            rows=n_real,
            transfer_rows=X_all.shape[0] - n_real,
            teacher_bytes=self._bytes_of_teacher(),
            student_bytes=lite_bytes(lower(student)),
            agreement=float(np.mean(student.predict(Xr) == predict(teacher, Xr))),
        )
        return student

    def _rows_and_targets(self, Xr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The real rows plus transfer rows, and the teacher's predictions (regression) or
        probabilities on them; kept for the next student taught on the same rows."""
        key = f"{Xr.shape} {self.transfer_rows} {self.seed}".encode()
        digest = hashlib.blake2b(Xr.tobytes(), digest_size=16).digest() + key
        if self._rows is None or self._rows[0] != digest:
            X_all = Xr
            if self.transfer_rows:
                X_all = np.vstack([Xr, munge(Xr, self.transfer_rows, seed=self.seed)])
            if self.teacher.task is Task.REGRESSION:
                outputs = predict(self.teacher, X_all).astype(np.float64)
            else:
                try:
                    outputs = predict_proba(self.teacher, X_all)
                except AttributeError as exc:  # UnsupportedOperationError
                    raise UnsupportedModelError(
                        f"the teacher has no probabilities to distil: {exc}"
                    ) from None
            self._rows = (digest, X_all, outputs)
        return self._rows[1], self._rows[2]

    def _bytes_of_teacher(self) -> int:
        if self._teacher_bytes is None:
            self._teacher_bytes = lite_bytes(self.teacher)
        return self._teacher_bytes

    def _fit_soft(
        self, student: Any, X: np.ndarray, proba: np.ndarray, n_real: int, y: Any, alpha: float
    ) -> None:
        teacher = self.teacher
        classes = teacher.classes
        weights = alpha * soften(proba, self.temperature)
        if y is not None and alpha < 1:
            hard = np.searchsorted(classes, np.asarray(y))
            if np.any(classes[np.minimum(hard, classes.size - 1)] != np.asarray(y)):
                raise InvalidInputError("y holds labels that are not classes of the teacher")
            weights[np.arange(n_real), hard] += 1 - alpha
            weights[n_real:] /= alpha if alpha > 0 else 1  # transfer rows: the teacher only
        k = classes.size
        rows = np.repeat(np.arange(X.shape[0]), k)
        labels = np.tile(classes, X.shape[0])
        w = weights.reshape(-1)
        keep = w > 0
        fit_kw = {_weight_key(student): w[keep]}
        try:
            student.fit(X[rows[keep]], labels[keep], **fit_kw)
        except TypeError as exc:
            raise UnsupportedModelError(
                f"{type(student).__name__} cannot be a distillation student: its fit takes no "
                f"sample_weight ({exc})"
            ) from None

    def progressive(self, students: list[Any], X: Any, y: Any = None) -> list[Any]:
        """Distil through ``students`` in order, each the next one's teacher; return them
        fitted (the last is the smallest, usually)."""
        if not students:
            raise InvalidInputError("progressive distillation needs at least one student")
        fitted, teacher = [], self.teacher
        for student in students:
            step = KnowledgeDistiller(
                teacher,
                temperature=self.temperature,
                alpha=self.alpha,
                transfer_rows=self.transfer_rows,
                seed=self.seed,
            )
            fitted.append(step.distill(student, X, y))
            self.report_ = step.report_
            teacher = lower(fitted[-1])
        return fitted

    def self_distill(self, source_estimator: Any, X: Any, y: Any = None) -> Any:
        """Retrain the teacher's own architecture (an unfitted clone of the estimator the
        teacher came from) on the teacher's targets."""
        return self.distill(clone(source_estimator), X, y)


def _weight_key(student: Any) -> str:
    steps = getattr(student, "steps", None)
    return f"{steps[-1][0]}__sample_weight" if steps else "sample_weight"


def student_from_spec(spec: str, task: Task | str, seed: int = 0) -> Any:
    """An unfitted student from a short spec: ``tree:DEPTH``, ``forest:TREES:DEPTH``,
    ``linear`` (logistic or ridge regression) or ``mlp:WIDTH`` (one hidden layer, inputs
    standardised), a classifier or a regressor as ``task`` says.

    Raises
    ------
    InvalidInputError
        If the spec is not one of those forms.
    """
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    classify = Task(task) is Task.CLASSIFICATION
    kind, *args = spec.split(":")
    try:
        sizes = [int(a) for a in args]
    except ValueError:
        sizes = []
    expected = {"tree": 1, "forest": 2, "linear": 0, "mlp": 1}
    if (
        kind not in expected
        or len(sizes) != expected[kind]
        or len(args) != len(sizes)
        or any(n < 1 for n in sizes)
    ):
        raise InvalidInputError(
            f"unknown student {spec!r}; use tree:DEPTH, forest:TREES:DEPTH, linear or mlp:WIDTH "
            "(positive integers)"
        )
    if kind == "tree":
        cls = DecisionTreeClassifier if classify else DecisionTreeRegressor
        return cls(max_depth=sizes[0], random_state=seed)
    if kind == "forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(sizes[0], max_depth=sizes[1], random_state=seed, n_jobs=1)
    if kind == "linear":
        head = LogisticRegression(max_iter=2000) if classify else Ridge()
        return make_pipeline(StandardScaler(), head)
    cls = MLPClassifier if classify else MLPRegressor
    return make_pipeline(StandardScaler(), cls((sizes[0],), max_iter=500, random_state=seed))
