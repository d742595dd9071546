"""What a compression pass costs and saves: real artifact sizes and task metrics.

Sizes are never estimates. The original size is the length of the source estimator's
pickle (what users ship today); a model's size is the length of its binary lite file
(``.fedge``), which is encoded, decoded again and checked bit for bit before it counts.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from sklearn import metrics

from fedge.errors import IntegrityError, InvalidInputError
from fedge.ir import Model, Task, lower, predict, predict_proba
from fedge.ir.lite import from_binary_bytes, to_binary_bytes
from fedge.ir.nodes import models_equal

__all__ = ["evaluate", "lite_bytes", "model_size", "pickle_bytes"]


def pickle_bytes(estimator: Any) -> int:
    """Length of ``pickle.dumps(estimator)`` (protocol 5): the baseline users compare with."""
    return len(pickle.dumps(estimator, protocol=5))


def lite_bytes(model: Model) -> int:
    """Length of ``model``'s binary lite file, after checking that it decodes to the same model.

    Raises
    ------
    IntegrityError
        If the decoded file differs from ``model`` (a format bug: nothing is reported then).
    """
    data = to_binary_bytes(model)
    if not models_equal(from_binary_bytes(data), model):
        raise IntegrityError("the lite file of this model does not decode to the same model")
    return len(data)


def model_size(original: Any, compressed: Model | Any | None = None) -> dict[str, float]:
    """Sizes in bytes, as the seed reports them.

    Parameters
    ----------
    original : estimator or Model
        The source model. A fitted estimator is measured by its pickle; an IR model by its
        lite file (then ``original_bytes`` is that, and the ratio compares lite files).
    compressed : Model or estimator, optional
        The compressed model (default: ``original`` lowered without loss).

    Returns
    -------
    dict
        ``original_bytes``, ``lossless_bytes`` (the original written as a lite file),
        ``compressed_bytes`` and ``compression_ratio`` (original / compressed).
    """
    source = lower(original)
    original_bytes = lite_bytes(source) if isinstance(original, Model) else pickle_bytes(original)
    lossless = lite_bytes(source)
    compressed_bytes = lossless if compressed is None else lite_bytes(lower(compressed))
    return {
        "original_bytes": original_bytes,
        "lossless_bytes": lossless,
        "compressed_bytes": compressed_bytes,
        "compression_ratio": original_bytes / compressed_bytes,
    }


def evaluate(model: Model | Any, X: Any, y: Any, *, mode: str = "device") -> dict[str, float]:
    """Task metrics of ``model`` on ``(X, y)``, computed by the numpy runtime.

    Classification: ``accuracy``, ``f1`` (macro) and ``roc_auc`` (one-vs-rest macro for
    more than two classes; left out when ``y`` holds a single class or the model has no
    probabilities). Regression: ``r2`` and ``mae``.

    ``mode`` is the runtime mode: ``device`` (default; what an exported model computes)
    or ``reference``.
    """
    ir = lower(model)
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != np.asarray(X).shape[0]:
        raise InvalidInputError(
            f"y has {y.shape[0] if y.ndim else 0} labels for {np.asarray(X).shape[0]} rows"
        )
    pred = predict(ir, X, mode=mode)
    if ir.task is Task.REGRESSION:
        return {
            "r2": float(metrics.r2_score(y, pred)),
            "mae": float(metrics.mean_absolute_error(y, pred)),
        }
    out = {
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "f1": float(metrics.f1_score(y, pred, average="macro")),
    }
    present = np.unique(y)
    if present.size > 1 and ir.classes is not None:
        try:
            proba = predict_proba(ir, X, mode=mode)
        except AttributeError:  # UnsupportedOperationError: no probabilities (e.g. hinge)
            return out
        if ir.classes.size == 2:
            out["roc_auc"] = float(metrics.roc_auc_score(y == ir.classes[1], proba[:, 1]))
        elif np.array_equal(np.sort(present), np.sort(ir.classes)):
            # float32 and integer leaves leave rows a few ulps off 1; scikit-learn insists.
            total = proba.sum(axis=1, keepdims=True)
            proba = np.divide(
                proba, total, out=np.full_like(proba, 1 / proba.shape[1]), where=total > 0
            )
            out["roc_auc"] = float(
                metrics.roc_auc_score(y, proba, multi_class="ovr", labels=ir.classes)
            )
    return out
