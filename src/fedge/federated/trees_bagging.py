"""Federated bagging: every client trains trees on its own rows; the server concatenates them.

What travels: each client sends its fitted trees (lowered to the IR: split features,
thresholds, leaf values) and, for ``weights="rows"``, its row count. Trees reveal a lot about
the rows they were grown on (a leaf can hold a single row); bagging protects the raw rows,
not what a model fitted on them says. Use :mod:`fedge.federated.trees_histogram` when the
server should see only sums.

What the combination means
--------------------------
The combined model's raw score is the weighted mean of the clients' raw scores,
``s(x) = sum_c w_c s_c(x)`` with ``sum_c w_c = 1``:

* **forests** (scikit-learn RandomForest / ExtraTrees / a decision tree; leaves hold class
  fractions or values, identity link): the weighted mean of the clients' probabilities
  (or predictions). The result is again a forest (``mean`` aggregation): each client's leaves
  are scaled by ``n_trees * w_c / n_trees_c`` (exactly 1 with equal weights and tree counts).
  A client that holds only some of the declared classes contributes probability 0 to the
  others; a client holding a single label contributes a constant one-hot tree.
* **boosted models** (XGBoost, LightGBM, scikit-learn gradient boosting; ``sum`` aggregation,
  base score, sigmoid/softmax link): the weighted mean of the clients' *margins* (log-odds),
  then the link; for regression simply the weighted mean of the predictions. For
  classification this is the normalised weighted geometric mean of the clients' odds, not the
  mean of their probabilities (which no single tree ensemble with a link can express). Every
  boosted client must have been trained on every declared class (a margin for a class it never
  saw does not exist).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedge._version import __version__
from fedge.errors import InvalidInputError, UnsupportedModelError
from fedge.ir.lower import lower
from fedge.ir.nodes import Aggregation, Link, Model, Task, TreeEnsemble
from fedge.ir.treeops import LocalTree, join_trees, split_trees

__all__ = ["client_seeds", "combine_tree_models", "federated_bagging", "fit_client_trees"]

_FOREST_CLASSIFIERS = frozenset(
    {
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
    }
)


def _ensemble_of(model: Model, index: int) -> TreeEnsemble:
    if len(model.steps) != 1 or not isinstance(model.steps[0], TreeEnsemble):
        kinds = [type(s).__name__ for s in model.steps]
        raise UnsupportedModelError(
            f"client {index}'s model is {kinds}; federated bagging combines models that are "
            "one float TreeEnsemble (forests and boosted trees, not pipelines or quantized "
            "trees)"
        )
    return model.steps[0]


def _weights(weights: Any, n: int, rows: Sequence[int] | None) -> np.ndarray:
    if isinstance(weights, str):
        if weights == "equal":
            w = np.ones(n)
        elif weights == "rows":
            if rows is None:
                raise InvalidInputError(
                    "weights='rows' needs the clients' row counts: pass weights as numbers"
                )
            w = np.asarray(rows, dtype=np.float64)
        else:
            raise InvalidInputError(f"weights must be 'rows', 'equal' or numbers, got {weights!r}")
    else:
        try:
            w = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                "weights must be 'rows', 'equal' or one number per client"
            ) from None
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise InvalidInputError(
            f"weights must be {n} finite non-negative numbers with a positive sum, got {weights!r}"
        )
    return w / w.sum()


def _class_columns(model: Model, classes: np.ndarray, index: int) -> np.ndarray:
    """Column of the federation's classes that each of the client's classes maps to."""
    assert model.classes is not None
    where = {c: i for i, c in enumerate(classes.tolist())}
    try:
        return np.array([where[c] for c in model.classes.tolist()], dtype=np.int64)
    except KeyError:
        raise InvalidInputError(
            f"client {index}'s model knows classes {model.classes.tolist()}, not all among the "
            f"declared classes {classes.tolist()}"
        ) from None


def _constant_tree(value: np.ndarray) -> LocalTree:
    """A single-leaf tree (a client whose rows all carry one label)."""
    return LocalTree(
        feature=np.zeros(0, dtype=np.int32),
        threshold=np.zeros(0, dtype=np.float64),
        left=np.zeros(0, dtype=np.int64),
        right=np.zeros(0, dtype=np.int64),
        missing_left=np.zeros(0, dtype=bool),
        leaf_values=np.asarray(value, dtype=np.float64).reshape(1, -1),
        root=~0,
        offset=0,
    )


def combine_tree_models(
    models: Sequence[Any],
    *,
    weights: Any = "equal",
    classes: Any = None,
    rows: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Model:
    """Concatenate the clients' tree models into one IR model (the server's side of bagging).

    Parameters
    ----------
    models : sequence of fedge Model or fitted estimators (lowered first)
        One per client; each one float ``TreeEnsemble``. All forests, or all boosted models
        of one kind (same link, comparison and input precision). A ``(n_classes,)`` array in
        place of a model stands for a client that predicts that constant (a one-hot row for
        a client holding a single label).
    weights : "equal", "rows" or array-like
        Client weights (normalised to sum 1); ``"rows"`` needs ``rows``.
    classes : array-like, optional
        The federation's labels; default: the first model's. A forest client may know a
        subset of them.
    rows : sequence of int, optional
        Each client's row count (for ``weights="rows"``).

    Returns
    -------
    Model
        Raw scores ``sum_c w_c s_c(x)`` (see the module docstring for what that means).
    """
    if isinstance(models, Model) or not isinstance(models, Sequence) or not models:
        raise InvalidInputError("models must be a non-empty sequence of client models")
    w = _weights(weights, len(models), rows)
    lowered: list[Model | np.ndarray] = [
        np.asarray(m, dtype=np.float64) if isinstance(m, np.ndarray) else lower(m) for m in models
    ]
    real = [m for m in lowered if isinstance(m, Model)]
    if not real:
        raise InvalidInputError("at least one client must send a tree model")
    first = real[0]
    ensembles = {i: _ensemble_of(m, i) for i, m in enumerate(lowered) if isinstance(m, Model)}
    ref = ensembles[min(ensembles)]
    task = first.task
    for i, m in enumerate(lowered):
        if not isinstance(m, Model):
            continue
        e = ensembles[i]
        if m.task is not task or m.n_features != first.n_features:
            raise InvalidInputError(
                f"client {i}'s model ({m.task.value}, {m.n_features} features) does not match "
                f"client 0's ({task.value}, {first.n_features} features)"
            )
        if (e.comparison, e.input_precision, m.link) != (
            ref.comparison,
            ref.input_precision,
            first.link,
        ):
            raise InvalidInputError(
                f"client {i}'s trees differ in kind from the others (comparison, input "
                "precision or link): train every client with the same estimator"
            )
    forest = first.link is Link.IDENTITY and all(
        e.aggregation is Aggregation.MEAN or (e.n_trees == 1 and not np.any(e.base_score))
        for e in ensembles.values()
    )
    if task is Task.CLASSIFICATION:
        if classes is None:
            classes = first.classes
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.shape[0] < 2:
            raise InvalidInputError("classes must list at least two labels")
        width = classes.shape[0] if forest else first.n_outputs
    else:
        if classes is not None:
            raise InvalidInputError("a regression federation has no classes")
        width = first.n_outputs
    n_total = sum(ensembles[i].n_trees if i in ensembles else 1 for i in range(len(lowered)))

    trees: list[LocalTree] = []
    base = np.zeros(width, dtype=np.float64)
    leaf_dtypes = set()
    for i, m in enumerate(lowered):
        if not isinstance(m, Model):
            if not forest or m.shape != (width,):
                raise InvalidInputError(
                    f"client {i} sent a constant of shape {m.shape}: constants stand in for "
                    f"forest clients only, one value per output ({width})"
                )
            factor = n_total * w[i]
            trees.append(_constant_tree(m * factor))
            continue
        e = ensembles[i]
        leaf_dtypes.add(e.leaf_values.dtype)
        if forest:
            factor = n_total * w[i] / e.n_trees
        else:
            factor = w[i] / (e.n_trees if e.aggregation is Aggregation.MEAN else 1)
            base += w[i] * e.base_score.astype(np.float64)
        columns = np.arange(width)
        if task is Task.CLASSIFICATION:
            cols = _class_columns(m, classes, i)
            if forest:
                columns = cols
            elif cols.shape[0] != classes.shape[0] or np.any(cols != np.arange(cols.shape[0])):
                raise InvalidInputError(
                    f"client {i}'s boosted model covers classes {m.classes.tolist()} but the "
                    f"federation declares {classes.tolist()}: a boosted model has no margin for "
                    "a class it never saw; train every client on every class (in that order) "
                    "or bag forests instead"
                )
        for t in split_trees(e):
            leaves = t.leaf_values.astype(np.float64) * factor if factor != 1 else t.leaf_values
            if forest and task is Task.CLASSIFICATION:
                full = np.zeros((leaves.shape[0], width), dtype=np.float64)
                full[:, columns[t.offset : t.offset + leaves.shape[1]]] = leaves
                leaves, offset = full, 0
            else:
                offset = t.offset
            trees.append(dataclasses.replace(t, leaf_values=leaves, offset=offset))
    keep32 = leaf_dtypes == {np.dtype(np.float32)} and all(
        t.leaf_values.dtype == np.float32 for t in trees
    )
    leaf_dtype = np.float32 if keep32 else np.float64
    thr64 = any(e.threshold.dtype == np.float64 for e in ensembles.values())
    template = TreeEnsemble(
        feature=np.zeros(0, dtype=np.int32),
        threshold=np.zeros(0, dtype=np.float64 if thr64 else np.float32),
        left=np.zeros(0, dtype=np.int32),
        right=np.zeros(0, dtype=np.int32),
        missing_left=np.zeros(0, dtype=bool),
        leaf_values=np.zeros((1, trees[0].leaf_values.shape[1]), dtype=leaf_dtype),
        roots=np.array([-1], dtype=np.int32),
        tree_offset=np.zeros(1, dtype=np.int32),
        n_features=first.n_features,
        n_outputs=width,
        base_score=np.zeros(width, dtype=leaf_dtype),
        comparison=ref.comparison,
        aggregation=Aggregation.MEAN if forest else Aggregation.SUM,
        input_precision=ref.input_precision,
    )
    if len({t.leaf_values.shape[1] for t in trees}) != 1:
        raise InvalidInputError("the clients' trees have leaves of different widths")
    ensemble = join_trees(template, trees, base_score=base.astype(leaf_dtype))
    metadata = {
        "source": {
            "library": "fedge",
            "version": __version__,
            "estimator": "FederatedBagging",
            "clients": _source_names(real),
        },
        "fedge_version": __version__,
        "federated": {
            "combination": "mean of probabilities" if forest else "mean of margins",
            "weights": [float(v) for v in w],
            "trees_per_client": [
                ensembles[i].n_trees if i in ensembles else 1 for i in range(len(lowered))
            ],
        },
    }
    names = tuple(feature_names) if feature_names else first.feature_names
    if task is Task.REGRESSION:
        return Model(
            steps=(ensemble,),
            task=task,
            n_features=first.n_features,
            link=first.link,
            feature_names=names,
            metadata=metadata,
        )
    return Model(
        steps=(ensemble,),
        task=task,
        n_features=first.n_features,
        link=first.link,
        classes=classes,
        predict_from=first.predict_from,
        feature_names=names,
        metadata=metadata,
    )


def _source_names(models: list[Model]) -> str:
    names = sorted({str(m.metadata.get("source", {}).get("estimator", "?")) for m in models})
    return ", ".join(names)


def _default_estimator(classification: bool, random_state: Any) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if classification else RandomForestRegressor
    return cls(n_estimators=20, min_samples_leaf=2, random_state=random_state)


def client_seeds(random_state: int | None, n_clients: int) -> list[int]:
    """Each client's estimator seed, spawned from ``random_state`` (in client order)."""
    return [int(v) % 2**31 for v in
            np.random.SeedSequence(random_state).generate_state(n_clients).tolist()]


def fit_client_trees(
    X: Any,
    y: Any,
    estimator: Any,
    *,
    classes: np.ndarray | None,
    seed: int,
    index: int = 0,
    seeded: bool = True,
) -> Any:
    """One client's side of bagging: a clone of ``estimator`` fitted on its rows.

    Classification fits on label indices into ``classes`` (the federation's label set), so a
    client holding only some labels still yields the full output shape; a client holding one
    label returns that label's one-hot row instead (a forest's constant prediction). The
    result is what :func:`combine_tree_models` takes."""
    from sklearn.base import clone

    est = clone(estimator)
    if seeded and "random_state" in est.get_params():
        est.set_params(random_state=seed)
    if classes is not None:
        target = _encode(np.asarray(y), classes, index)
        present = np.unique(target)
        if present.size == 1:
            if type(estimator).__name__ not in _FOREST_CLASSIFIERS:
                raise InvalidInputError(
                    f"client {index} holds a single label "
                    f"({classes.tolist()[present[0]]!r}); a boosted "
                    "model cannot be trained on it: bag forests, or use federated "
                    "histogram boosting"
                )
            onehot = np.zeros(classes.shape[0])
            onehot[present[0]] = 1.0
            return onehot
    else:
        target = np.asarray(y).astype(np.float64)
    try:
        est.fit(X, target)
    except ValueError as exc:
        raise InvalidInputError(f"client {index}: {type(est).__name__} failed to fit: {exc}") \
            from exc
    return est


def federated_bagging(
    clients: Sequence[tuple[Any, Any]],
    *,
    estimator: Any = None,
    classes: Any = None,
    task: str | None = None,
    weights: Any = "rows",
    random_state: int | None = None,
    feature_names: Sequence[str] | None = None,
) -> Model:
    """Train trees on every client's rows and combine them into one IR model.

    Parameters
    ----------
    clients : sequence of (X, y)
        Each client's rows (they stay with it; only the fitted trees travel).
    estimator : scikit-learn-compatible estimator, optional
        Cloned and fitted on each client: RandomForest / ExtraTrees / a decision tree
        (combined as a forest), or XGBoost / LightGBM / scikit-learn gradient boosting
        (combined as the mean of margins). Default: ``RandomForestClassifier`` (or
        ``Regressor``) with 20 trees.
    classes : array-like
        The full label set (classification). Clients fit on label indices, so a client that
        holds only some labels still yields the full output shape.
    task : {"classification", "regression"}, optional
        Inferred from ``classes`` or the estimator; required when neither tells.
    weights : "rows", "equal" or array-like
        Client weights in the mean (``rows``: by row count).
    random_state : int, optional
        Each client gets its own seed spawned from it (set as the estimator's
        ``random_state``).
    """
    from sklearn.base import is_classifier

    if isinstance(clients, tuple) or not isinstance(clients, Sequence) or not clients:
        raise InvalidInputError("clients must be a non-empty sequence of (X, y) pairs")
    for i, c in enumerate(clients):
        if not (isinstance(c, tuple | list) and len(c) == 2):
            raise InvalidInputError(f"client {i} must be an (X, y) pair")
    if task is None:
        if classes is not None:
            task = "classification"
        elif estimator is not None:
            task = "classification" if is_classifier(estimator) else "regression"
        else:
            raise InvalidInputError(
                "say what to learn: declare the labels with classes=[...] (classification) "
                "or pass task='regression'"
            )
    if task not in ("classification", "regression"):
        raise InvalidInputError(f"task must be 'classification' or 'regression', got {task!r}")
    classification = task == "classification"
    if classification and classes is None:
        raise InvalidInputError(
            "declare the full label set up front with classes=[...]: every client then "
            "predicts every class, even those it does not hold"
        )
    if not classification and classes is not None:
        raise InvalidInputError("a regression federation has no classes")
    if classification:
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.shape[0] < 2 or np.unique(classes).size != classes.size:
            raise InvalidInputError("classes must list at least two distinct labels")
    if estimator is None:
        estimator = _default_estimator(classification, None)
    elif is_classifier(estimator) != classification:
        raise InvalidInputError(f"the estimator {type(estimator).__name__} does not fit a {task}")
    seeds = client_seeds(random_state, len(clients))
    n_features = None
    models: list[Any] = []
    rows = []
    for i, (X, y) in enumerate(clients):
        X = np.asarray(X, dtype=np.float64) if not hasattr(X, "columns") else X
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[0] == 0 or y.shape != (X.shape[0],):
            raise InvalidInputError(
                f"client {i}: X must be 2-D with one label per row, got {X.shape} and {y.shape}"
            )
        if n_features is None:
            n_features = X.shape[1]
        elif X.shape[1] != n_features:
            raise InvalidInputError(
                f"client {i} has {X.shape[1]} features, client 0 has {n_features}: every "
                "client needs the same columns in the same order"
            )
        rows.append(int(X.shape[0]))
        models.append(fit_client_trees(X, y, estimator, classes=classes, seed=int(seeds[i]),
                                       index=i, seeded=random_state is not None))
    combined_classes = np.arange(classes.shape[0]) if classification else None
    model = combine_tree_models(
        models, weights=weights, classes=combined_classes, rows=rows, feature_names=feature_names
    )
    if classification:
        model = dataclasses.replace(model, classes=classes)
    return model


def _encode(y: np.ndarray, classes: np.ndarray, index: int) -> np.ndarray:
    where = {c: i for i, c in enumerate(classes.tolist())}
    try:
        return np.array([where[v] for v in y.tolist()], dtype=np.int64)
    except KeyError:
        unknown = sorted({v for v in y.tolist() if v not in where}, key=repr)[:5]
        raise InvalidInputError(
            f"client {index} holds labels {unknown} outside the declared classes {classes.tolist()}"
        ) from None
