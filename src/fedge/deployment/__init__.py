"""Deployment: generated artifacts (C; ONNX, TFLite, Core ML next), toolchains, verification."""

from fedge.deployment.compiled import CompiledModel
from fedge.deployment.edge_converter import EdgeFormat, EdgeModelConverter
from fedge.deployment.formats.c import CSource, emit_c
from fedge.deployment.model_packager import (
    LoadedPackage,
    ModelPackager,
    PackageInfo,
    load_package,
    verify_package,
)
from fedge.deployment.verify import VerificationReport, verify_c

__all__ = [
    "CSource",
    "CompiledModel",
    "EdgeFormat",
    "EdgeModelConverter",
    "LoadedPackage",
    "ModelPackager",
    "PackageInfo",
    "VerificationReport",
    "emit_c",
    "load_package",
    "verify_c",
    "verify_package",
]
