"""Every name a package exports exists, and the exception hierarchy holds."""

from __future__ import annotations

import importlib

import pytest

import fedge
from fedge import errors

PACKAGES = [
    "fedge",
    "fedge.errors",
    "fedge.ir",
    "fedge.ir.lower",
    "fedge.ir.runtime",
    "fedge.ir.nodes",
    "fedge.ir.lite",
    "fedge.ir.devicemath",
    "fedge.io",
    "fedge.demo",
    "fedge.visualization",
    "fedge.visualization.interactive",
    "fedge.visualization.model_viz",
    "fedge.visualization.performance_viz",
    "fedge.visualization.static",
    "fedge.visualization.export",
    "fedge.visualization.report",
    "fedge.visualization.browser",
    "fedge.data",
    "fedge.deployment",
    "fedge.deployment.formats.c",
    "fedge.deployment.toolchain",
    "fedge.deployment.verify",
    "fedge.deployment.compiled",
    "fedge.deployment.edge_converter",
    "fedge.ir.lower.xgboost",
    "fedge.ir.lower.lightgbm",
    "fedge.ir.treeops",
    "fedge.compression",
    "fedge.compression.accounting",
    "fedge.compression.quantization",
    "fedge.compression.pruning",
    "fedge.compression.search",
    "fedge.compression.distillation",
    "fedge.deployment.formats.c.tree_tables",
    "fedge.deployment.model_packager",
    "fedge.deployment.inference_optimizer",
    "fedge.deployment.canonical_zip",
    "fedge.federated",
    "fedge.federated.aggregation",
    "fedge.federated.checkpoint",
    "fedge.federated.client",
    "fedge.federated.history",
    "fedge.federated.messages",
    "fedge.federated.partitioning",
    "fedge.federated.preprocessing",
    "fedge.federated.privacy",
    "fedge.federated.privacy_config",
    "fedge.federated.server",
    "fedge.federated.simulation",
    "fedge.federated.strategies",
    "fedge.federated.training",
    "fedge.federated.transport",
    "fedge.federated.shamir",
    "fedge.federated.secure_aggregation",
    "fedge.federated.encryption",
    "fedge.federated.distributed_dp",
    "fedge.federated.record_ledger",
    "fedge.federated.trees",
    "fedge.federated.trees_bagging",
    "fedge.federated.trees_histogram",
    "fedge.deployment.formats.onnx",
    "fedge.deployment.formats.tflite",
    "fedge.deployment.formats.coreml",
    "fedge.deployment.formats.coreml_reader",
    "fedge.deployment.devices",
    "fedge.deployment.device_verify",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_exists(name) -> None:
    module = importlib.import_module(name)
    assert module.__all__, f"{name} has an empty __all__"
    assert all(isinstance(n, str) for n in module.__all__)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    assert len(set(module.__all__)) == len(module.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(fedge.__version__, str) and fedge.__version__.count(".") == 2


def test_every_error_is_a_fedge_error_and_a_builtin_where_documented() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.FedgeError)
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.UnsupportedModelError, TypeError)
    assert issubclass(errors.IntegrityError, errors.ModelFormatError)
    assert issubclass(errors.UntrustedFileError, PermissionError)


def test_importing_fedge_does_not_import_optional_libraries() -> None:
    import subprocess
    import sys

    optional = ("sklearn", "skops", "xgboost", "lightgbm")
    code = f"import sys, fedge; print(' '.join(m for m in {optional!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
