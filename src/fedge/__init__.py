"""fedge: classic ML models from private, distributed data to small devices.

The spine is the IR (:mod:`fedge.ir`): fitted estimators are lowered once into
small immutable dataclasses, and everything else reads them.

>>> import fedge
>>> model = fedge.lower(fitted_estimator)            # doctest: +SKIP
>>> fedge.predict(model, X)                          # doctest: +SKIP
>>> fedge.save(model, "model.fedge"); fedge.load("model.fedge")  # doctest: +SKIP
"""

from fedge import errors
from fedge._version import __version__
from fedge.io import load, save
from fedge.ir import (
    Mode,
    Model,
    decision_function,
    lower,
    predict,
    predict_proba,
    supported_estimators,
)

__all__ = [
    "Mode",
    "Model",
    "__version__",
    "decision_function",
    "errors",
    "load",
    "lower",
    "predict",
    "predict_proba",
    "save",
    "supported_estimators",
]
