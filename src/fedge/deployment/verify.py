"""Verify generated C by running it: compile a harness, feed it a batch, compare every output.

One process per batch. The C outputs are compared bit for bit with the numpy
runtime's ``device`` mode (the contract), and the labels with the source model
when one is given.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.deployment.formats.c.emit import CSource, emit_c
from fedge.deployment.toolchain import compile_c, object_size, run
from fedge.ir import runtime
from fedge.ir.lower import lower
from fedge.ir.nodes import Model, Task

__all__ = ["VerificationReport", "harness_source", "verify_c"]


@dataclass(frozen=True)
class VerificationReport:
    """What running the compiled model on ``rows`` rows showed."""

    rows: int
    score_mismatches: int  # rows whose raw scores differ in any bit from device mode
    label_mismatches_device: int  # vs the numpy runtime in device mode
    label_mismatches_source: int | None  # vs the source estimator (None: no source given)
    max_abs_diff: float  # largest |C - device| over every output
    text_bytes: int
    data_bytes: int

    @property
    def identical(self) -> bool:
        return (
            self.score_mismatches == 0
            and self.label_mismatches_device == 0
            and (self.label_mismatches_source in (None, 0))
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"identical": self.identical}


def harness_source(code: CSource) -> str:
    """A main() that reads float32 rows from stdin and writes scores, probabilities, labels."""
    p, nf, no, nc = code.prefix, code.n_features, code.n_outputs, code.n_classes
    classification = code.task is Task.CLASSIFICATION
    proba = (
        f"        {p}_predict_proba(x, proba);\n"
        f"        fwrite(proba, sizeof(float), {nc}, stdout);\n"
        if code.has_proba
        else ""
    )
    label = (
        f"        label = {p}_predict(x);\n        fwrite(&label, sizeof label, 1, stdout);\n"
        if classification
        else f"        {p}_predict(x, y);\n        fwrite(y, sizeof(float), {no}, stdout);\n"
    )
    return (
        f'#include <stdio.h>\n#include "{p}.h"\n'
        "int main(void)\n{\n"
        f"    float x[{nf}], scores[{no}], proba[{max(nc, 1)}], y[{no}];\n    int label = 0;\n"
        "    (void)proba; (void)y; (void)label;\n"
        f"    while (fread(x, sizeof(float), {nf}, stdin) == {nf}) {{\n"
        f"        {p}_decision_function(x, scores);\n"
        f"        fwrite(scores, sizeof(float), {no}, stdout);\n{proba}{label}"
        "    }\n    return 0;\n}\n"
    )


def _split_output(raw: bytes, code: CSource, n: int) -> dict[str, np.ndarray]:
    per_row = (
        code.n_outputs
        + (code.n_classes if code.has_proba else 0)
        + (1 if code.task is Task.CLASSIFICATION else code.n_outputs)
    )
    data = np.frombuffer(raw, dtype=np.float32).reshape(n, per_row)
    out = {"scores": data[:, : code.n_outputs]}
    at = code.n_outputs
    if code.has_proba:
        out["proba"] = data[:, at : at + code.n_classes]
        at += code.n_classes
    tail = data[:, at:]
    out["predict"] = tail.view(np.int32)[:, 0] if code.task is Task.CLASSIFICATION else tail
    return out


def verify_c(
    model: Any, X: Any, *, prefix: str = "model", layout: str = "table", timeout: float = 120
) -> VerificationReport:
    """Compile ``model`` as C on the host, run it on ``X`` and compare every output.

    Parameters
    ----------
    model : Model or fitted estimator
        An estimator is lowered first and also serves as the source for label parity.
    X : array-like of shape (n_rows, n_features)
    """
    source = None if isinstance(model, Model) else model
    ir = lower(model)
    rows = runtime.check_input(ir, X, runtime.Mode.DEVICE)
    code = emit_c(ir, prefix, layout=layout)
    with tempfile.TemporaryDirectory(prefix="fedge-c-") as tmp:
        d = Path(tmp)
        (d / f"{prefix}.h").write_text(code.header)
        (d / f"{prefix}.c").write_text(code.source)
        (d / "main.c").write_text(harness_source(code))
        obj = compile_c([d / f"{prefix}.c"], d / f"{prefix}.o", extra=("-c",), timeout=timeout)
        size = object_size(obj)
        exe = compile_c([d / f"{prefix}.c", d / "main.c"], d / "harness", timeout=timeout)
        stdin = np.ascontiguousarray(rows, dtype=np.float32).tobytes()
        raw = run([str(exe)], input_bytes=stdin, timeout=timeout).stdout
    got = _split_output(raw, code, rows.shape[0])
    want = runtime.decision_function(ir, rows, mode="device").reshape(rows.shape[0], -1)
    differ = got["scores"].view(np.uint32) != want.view(np.uint32)
    with np.errstate(invalid="ignore"):
        max_diff = float(np.nanmax(np.abs(got["scores"] - want), initial=0.0))
    device_pred = runtime.predict(ir, rows, mode="device")
    if ir.task is Task.CLASSIFICATION:
        assert ir.classes is not None
        c_labels = ir.classes[got["predict"]]
        label_dev = int(np.sum(c_labels != device_pred))
        label_src = None if source is None else int(np.sum(c_labels != source.predict(X)))
    else:
        values = got["predict"].reshape(device_pred.shape)
        label_dev = int(np.sum(values.view(np.uint32) != device_pred.view(np.uint32)))
        label_src = None
    return VerificationReport(
        rows=int(rows.shape[0]),
        score_mismatches=int(differ.any(axis=1).sum()),
        label_mismatches_device=label_dev,
        label_mismatches_source=label_src,
        max_abs_diff=max_diff,
        text_bytes=size.text,
        data_bytes=size.data,
    )
