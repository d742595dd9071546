"""Deployment: generated artifacts (C; ONNX, TFLite, Core ML next), toolchains, verification,
and device targets (Cortex-M, AVR, RV32, aarch64) with on-device verification and footprints."""

from fedge.deployment.compiled import CompiledModel
from fedge.deployment.device_verify import (
    DeviceReport,
    Footprint,
    measure_footprint,
    verify_on_device,
)
from fedge.deployment.devices import DEVICES, DeviceTarget, get_target
from fedge.deployment.edge_converter import EdgeFormat, EdgeModelConverter
from fedge.deployment.formats.c import CSource, emit_c
from fedge.deployment.inference_optimizer import (
    BackendReport,
    InferenceOptimizer,
    compare_backends,
)
from fedge.deployment.model_packager import (
    LoadedPackage,
    ModelPackager,
    PackageInfo,
    load_package,
    verify_package,
)
from fedge.deployment.verify import VerificationReport, verify_c

__all__ = [
    "DEVICES",
    "BackendReport",
    "CSource",
    "CompiledModel",
    "DeviceReport",
    "DeviceTarget",
    "EdgeFormat",
    "EdgeModelConverter",
    "Footprint",
    "InferenceOptimizer",
    "LoadedPackage",
    "ModelPackager",
    "PackageInfo",
    "VerificationReport",
    "compare_backends",
    "emit_c",
    "get_target",
    "load_package",
    "measure_footprint",
    "verify_c",
    "verify_on_device",
    "verify_package",
]
