"""Lowering: fitted estimators to IR models, one frontend module per library.

Frontends register the classes they handle with :func:`register`, keyed by the
estimator's top-level package and class name, so looking an estimator up never
imports a library the user does not use. A subclass of a supported class is
lowered as its supported base.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fedge.errors import UnsupportedModelError
from fedge.ir.nodes import Model

__all__ = ["lower", "register", "supported_estimators"]

Lowering = Callable[[Any], Model]

# Top-level package of the estimator's class -> the fedge modules that lower it.
_FRONTENDS: dict[str, tuple[str, ...]] = {
    "sklearn": ("fedge.ir.lower.sklearn", "fedge.ir.lower.sklearn_boosting"),
    "xgboost": ("fedge.ir.lower.xgboost",),
    "lightgbm": ("fedge.ir.lower.lightgbm",),
}
_REGISTRY: dict[tuple[str, str], Lowering] = {}


def register(package: str, *class_names: str) -> Callable[[Lowering], Lowering]:
    """Class decorator-style registration: ``@register("sklearn", "Ridge", "Lasso")``."""

    def decorate(fn: Lowering) -> Lowering:
        for name in class_names:
            _REGISTRY[(package, name)] = fn
        return fn

    return decorate


def _load_frontend(package: str) -> None:
    for module in _FRONTENDS.get(package, ()):
        importlib.import_module(module)


def _find(estimator: Any) -> Lowering | None:
    for cls in type(estimator).__mro__:
        package = cls.__module__.split(".")[0]
        _load_frontend(package)
        fn = _REGISTRY.get((package, cls.__name__))
        if fn is not None:
            return fn
    return None


def supported_estimators() -> list[str]:
    """Names of every estimator class some frontend lowers, e.g. ``"sklearn.Ridge"``."""
    for package in _FRONTENDS:
        _load_frontend(package)
    return sorted(f"{pkg}.{name}" for pkg, name in _REGISTRY)


def lower(estimator: Any) -> Model:
    """Lower a fitted estimator (or a supported Pipeline) to a validated IR model.

    Parameters
    ----------
    estimator : object
        A fitted scikit-learn estimator or Pipeline (see :func:`supported_estimators`).
        An IR :class:`~fedge.ir.Model` is returned unchanged.

    Raises
    ------
    UnsupportedModelError
        If no frontend handles the class or one of its options.
    NotFittedError
        If the estimator was not fitted.
    """
    if isinstance(estimator, Model):
        return estimator
    fn = _find(estimator)
    if fn is None:
        name = type(estimator).__name__
        supported = ", ".join(s.split(".", 1)[1] for s in supported_estimators())
        raise UnsupportedModelError(
            f"fedge cannot lower {type(estimator).__module__}.{name}. Supported: {supported}"
        )
    return fn(estimator)
