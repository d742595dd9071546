"""One facade over the deployment formats (the seed API).

>>> converter = EdgeModelConverter(target_format=EdgeFormat.C_CODE)   # doctest: +SKIP
>>> code = converter.convert(fitted_estimator, input_shape=(30,))       # doctest: +SKIP
>>> converter.save_edge_model(code, "model.c")  # writes model.c and model.h  # doctest: +SKIP
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedge.deployment.formats.c.emit import CSource, emit_c
from fedge.errors import InvalidInputError
from fedge.ir.lite import save_lite
from fedge.ir.lower import lower
from fedge.ir.nodes import Model

__all__ = ["EdgeFormat", "EdgeModelConverter"]


class EdgeFormat(StrEnum):
    """Deployment formats, each verified on its real runtime (Core ML: by fedge's spec
    reader, since Core ML itself runs only on macOS)."""

    SKLEARN_LITE = "lite"
    C_CODE = "c"
    ONNX = "onnx"
    TFLITE = "tflite"
    COREML = "coreml"


# Where each artifact kind is written, and the suffix it wants.
SUFFIXES = {
    EdgeFormat.ONNX: ".onnx",
    EdgeFormat.TFLITE: ".tflite",
    EdgeFormat.COREML: ".mlmodel",
}


class EdgeModelConverter:
    """Convert a fitted estimator or IR model to an edge artifact, and save it.

    Parameters
    ----------
    target_format : EdgeFormat
        ``SKLEARN_LITE`` (the lite JSON/binary format), ``C_CODE`` (standalone C99),
        ``ONNX``, ``TFLITE`` or ``COREML``.
    prefix : str
        Symbol prefix of generated C.
    precision : {"float32", "float16", "int8"}
        TFLite only: the weights' (and, for int8, the whole graph's) number format.
    representative_data : array-like, optional
        TFLite int8 only: rows whose ranges set the activation quantization.
    """

    def __init__(
        self,
        *,
        target_format: EdgeFormat | str = EdgeFormat.C_CODE,
        prefix: str = "model",
        precision: str = "float32",
        representative_data: Any = None,
    ) -> None:
        self.target_format = EdgeFormat(target_format)
        self.prefix = prefix
        self.precision = precision
        self.representative_data = representative_data

    def convert(self, model: Any, input_shape: tuple[int | None, ...] | None = None) -> Any:
        """Lower ``model`` and build the artifact: an IR Model (lite), a :class:`CSource` (C),
        an ``onnx.ModelProto``, TFLite FlatBuffer bytes, or a Core ML spec.

        ``input_shape``, when given, is checked against the model: ``(n_features,)`` or
        ``(batch, n_features)``.
        """
        ir = lower(model)
        if input_shape is not None:
            width = tuple(input_shape)[-1] if len(tuple(input_shape)) else None
            if width != ir.n_features:
                raise InvalidInputError(
                    f"input_shape {tuple(input_shape)} does not fit the model's "
                    f"{ir.n_features} features"
                )
        fmt = self.target_format
        if fmt is EdgeFormat.C_CODE:
            return emit_c(ir, self.prefix)
        if fmt is EdgeFormat.ONNX:
            from fedge.deployment.formats.onnx import to_onnx

            return to_onnx(ir)
        if fmt is EdgeFormat.TFLITE:
            from fedge.deployment.formats.tflite import to_tflite

            return to_tflite(
                ir, precision=self.precision, representative_data=self.representative_data
            )
        if fmt is EdgeFormat.COREML:
            from fedge.deployment.formats.coreml import to_coreml

            return to_coreml(ir, name=self.prefix)
        return ir

    def save_edge_model(self, artifact: Any, path: str | os.PathLike[str]) -> list[Path]:
        """Write an artifact from :meth:`convert`; returns the files written.

        C: ``path`` is the source file; the header is written beside it with the same
        stem (``model.c`` and ``model.h``). Lite: ``.json`` or ``.fedge``.
        """
        p = Path(path)
        if isinstance(artifact, CSource):
            return write_c(artifact, p)
        if isinstance(artifact, Model):
            save_lite(artifact, p)
            return [p]
        if isinstance(artifact, bytes | bytearray):  # a TFLite FlatBuffer
            p.write_bytes(bytes(artifact))
            return [p]
        if hasattr(artifact, "SerializeToString"):  # an ONNX model or a Core ML spec
            p.write_bytes(artifact.SerializeToString(deterministic=True))
            return [p]
        raise InvalidInputError(
            f"cannot save a {type(artifact).__name__}; pass what convert() returned"
        )


def write_c(code: CSource, source_path: Path) -> list[Path]:
    """Write ``<stem>.c`` and ``<stem>.h`` (the source includes the header by that name)."""
    if source_path.suffix != ".c":
        raise InvalidInputError(f"a C source file needs a .c suffix, got {source_path.name!r}")
    header_path = source_path.with_suffix(".h")
    source = code.source.replace(f'#include "{code.prefix}.h"', f'#include "{header_path.name}"', 1)
    source_path.parent.mkdir(parents=True, exist_ok=True)
    header_path.write_text(code.header)
    source_path.write_text(source)
    return [source_path, header_path]
