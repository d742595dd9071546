"""Verify a model on a device target and measure its footprint there.

:func:`verify_on_device` builds the model's generated C into a test firmware for a
:class:`~fedge.deployment.devices.DeviceTarget` with a batch of rows compiled in, runs it in the
target's emulator (always under a timeout), and compares every output with the numpy runtime's
``device`` mode: bit for bit on every 32/64-bit target, and for quantized (integer C) models
on every target; on AVR, whose ``double`` is 32-bit and whose libm differs, float models must
give identical labels and scores within :data:`AVR_SCORE_TOLERANCE`.

:func:`measure_footprint` reports the model's own flash (text + rodata + data) and RAM
(data + bss), measured as the difference between the test firmware and the same firmware with
a stub model (so the C library, startup code and harness are not counted; what the model pulls
in from libm is), the worst-case stack of the model's functions from ``-fstack-usage``, and
whether that fits the target's budget.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.deployment import device_harness as harness
from fedge.deployment.devices import (
    TARGETS_DIR,
    DeviceTarget,
    compile_object,
    get_target,
    link_firmware,
    run_firmware,
    symbol_sizes,
    target_sizes,
)
from fedge.deployment.formats.c.emit import CSource, emit_c
from fedge.errors import FootprintError, ToolchainError
from fedge.ir import runtime
from fedge.ir.lower import lower
from fedge.ir.nodes import Model, QuantizedDense, QuantizedTrees, Task

__all__ = [
    "AVR_SCORE_TOLERANCE",
    "DeviceReport",
    "Footprint",
    "integer_model",
    "measure_footprint",
    "verify_on_device",
]

AVR_SCORE_TOLERANCE = 2.0**-16
"""Largest |AVR - device| allowed for a score or probability, relative to max(1, |device|).

2**-16 is 128 float32 ulps at 1.0: room for avr-libc's float arithmetic (no subnormals, its
own rounding in a few routines) accumulated over a model, far below any label-changing error.
"""

SHRINK_HINT = (
    "shrink it: quantize (fedge compress --quantize int8), prune or use fewer, shallower trees "
    "(fedge compress --prune 0.5 --prune-method trees / --prune-method depth), or pick a larger "
    "target"
)


@dataclass(frozen=True)
class Footprint:
    """The model's own cost on a target, and whether it fits the target's budget.

    ``flash_bytes`` and ``ram_bytes`` are the model's own (firmware minus the same firmware
    with a stub model); ``firmware_*`` are the whole test image (harness, C library, startup).
    ``stack_bytes`` is the deepest chain of the model's functions (``-fstack-usage``).
    ``own_bytes`` counts only the model's own functions and tables in the image (what its
    object file contributes after unused functions are dropped), without the libm and
    soft-float routines it calls. When a model is too large to build at all, ``flash_bytes`` is
    the size of its tables (a lower bound) and ``method`` says so.
    """

    target: str
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int | None
    flash_budget: int | None
    ram_budget: int | None
    firmware_flash_bytes: int | None
    firmware_ram_bytes: int | None
    method: str
    own_bytes: int | None = None  # the model's own functions and tables in the image, no libc
    lower_bound: bool = False  # True: the model did not build; flash_bytes counts its tables

    @property
    def fits_flash(self) -> bool:
        return self.flash_budget is None or self.flash_bytes <= self.flash_budget

    @property
    def fits_ram(self) -> bool:
        need = self.ram_bytes + (self.stack_bytes or 0)
        return self.ram_budget is None or need <= self.ram_budget

    @property
    def fits(self) -> bool:
        """Model flash within the flash budget, model RAM plus its stack within the RAM budget."""
        return self.fits_flash and self.fits_ram

    @property
    def message(self) -> str:
        """One sentence with the numbers; for a model that does not fit, what to do."""
        stack = "?" if self.stack_bytes is None else f"{self.stack_bytes:,}"
        flash = (
            ("at least " if self.lower_bound else "")
            + f"{self.flash_bytes:,} B of flash"
            + ("" if self.flash_budget is None else f" (budget {self.flash_budget:,} B)")
        )
        ram = f"{self.ram_bytes:,} B of RAM + {stack} B of stack" + (
            "" if self.ram_budget is None else f" (budget {self.ram_budget:,} B)"
        )
        if self.fits:
            return f"the model fits {self.target}: {flash}, {ram}"
        over = [w for w, ok in (("flash", self.fits_flash), ("RAM", self.fits_ram)) if not ok]
        return (
            f"the model does not fit {self.target} ({' and '.join(over)}): it needs {flash} and "
            f"{ram}; {SHRINK_HINT}"
        )

    def check(self) -> Footprint:
        """Raise a FootprintError with :attr:`message` unless the model fits."""
        if not self.fits:
            raise FootprintError(self.message)
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"fits": self.fits}


@dataclass(frozen=True)
class DeviceReport:
    """What running the model on a device target showed, row by row."""

    target: str
    rows: int
    runs: int  # firmware runs (row batches)
    exact: bool  # True: every output compared bit for bit; False: within `tolerance`
    tolerance: float | None  # relative score tolerance when not exact (AVR)
    score_mismatches: int  # rows whose scores or probabilities differ in any bit
    out_of_tolerance: int  # rows beyond the tolerance (the failing count when not exact)
    label_mismatches_device: int  # predictions differing from the numpy runtime, device mode
    label_mismatches_source: int | None  # vs the source estimator (None: no source given)
    max_abs_diff: float  # largest |device - numpy device mode| over scores and probabilities
    footprint: Footprint
    per_prediction: float | None  # mean instructions or cycles per predict call
    counter: str  # what per_prediction counts, or why there is none
    seconds: float  # wall time of the emulator runs

    @property
    def passed(self) -> bool:
        """Labels identical and every score bit-identical (or within tolerance, on AVR)."""
        scores_ok = self.score_mismatches == 0 if self.exact else self.out_of_tolerance == 0
        return (
            scores_ok
            and self.label_mismatches_device == 0
            and self.label_mismatches_source in (None, 0)
        )

    @property
    def parity(self) -> str:
        """A short description of the parity outcome, naming its rule."""
        if self.exact:
            rule = "bit-exact vs device mode"
            bad = self.score_mismatches
        else:
            rule = f"labels exact, scores within {self.tolerance:.2g} (relative)"
            bad = self.out_of_tolerance
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{verdict}: {rule}; {bad} rows off, {self.label_mismatches_device} labels off, "
            f"max |diff| {self.max_abs_diff:.3g}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["footprint"] = self.footprint.as_dict()
        return out | {"passed": self.passed}


class _Build:
    """One model's objects for one target, and firmware images linked from them."""

    def __init__(self, target: DeviceTarget, code: CSource, folder: Path, timeout: float):
        self.t, self.code, self.d, self.timeout = target, code, folder, timeout
        p = code.prefix
        shutil.copyfile(TARGETS_DIR / target.port, folder / "fedge_port.h")
        (folder / f"{p}.h").write_text(code.header)
        (folder / f"{p}.c").write_text(code.source)
        (folder / "stub.c").write_text(harness.stub_source(code))
        self.startup = [
            compile_object(target, TARGETS_DIR / s, folder / f"startup{i}.o", timeout=timeout)
            for i, s in enumerate(target.startup)
        ]
        self.stub = self._compile(folder / "stub.c", folder / "stub.o")
        self.model: Path | None = None
        self.model_error: ToolchainError | None = None
        try:
            self.model = self._compile(
                folder / f"{p}.c", folder / f"{p}.o", extra=("-fstack-usage",)
            )
        except ToolchainError as exc:  # e.g. AVR refuses tables over 32 KiB
            self.model_error = exc

    def _compile(self, src: Path, obj: Path, extra: tuple[str, ...] = ()) -> Path:
        return compile_object(
            self.t, src, obj, include=(self.d,), extra=extra, timeout=self.timeout
        )

    def firmware(self, rows: np.ndarray, name: str, *, stub: bool = False) -> Path:
        src = self.d / f"{name}.c"
        src.write_text(harness.firmware_source(self.code, rows))
        main = self._compile(src, self.d / f"{name}.o")
        if stub:
            model = self.stub
        elif self.model is not None:
            model = self.model
        else:
            raise self.model_error or ToolchainError("the model did not compile")
        return link_firmware(
            self.t, [*self.startup, main, model], self.d / f"{name}.elf", timeout=self.timeout
        )

    def footprint(self, row: np.ndarray) -> Footprint:
        t, code = self.t, self.code
        if self.model is None:
            return self._table_footprint()
        base = target_sizes(t, self.firmware(row, "fp_stub", stub=True))
        elf = self.firmware(row, "fp_model")
        full = target_sizes(t, elf)
        mine = symbol_sizes(t, self.model)
        image = symbol_sizes(t, elf)
        own = {k: v for k, v in image.items() if k in mine}
        own_flash = sum(size for kind, size in own.values() if kind.lower() not in "bd")
        own_ram = sum(size for kind, size in own.values() if kind.lower() in "bd")
        su = self.d / f"{code.prefix}.su"
        p = code.prefix
        entries = [f"{p}_decision_function", f"{p}_predict"]
        entries += [f"{p}_predict_proba"] if code.has_proba else []
        stack = harness.stack_usage(su.read_text(), code.source, entries) if su.exists() else None
        if t.footprint_by == "symbols":
            flash, ram = own_flash + own_ram, own_ram
            method = "the model's own symbols in the linked image"
        else:
            flash = max(full.flash - base.flash, 0)
            ram = max((full.data + full.bss) - (base.data + base.bss), 0)
            method = "linked firmware minus the same firmware with a stub model"
        return Footprint(
            target=t.name,
            flash_bytes=flash,
            ram_bytes=ram,
            stack_bytes=stack,
            flash_budget=t.flash_budget,
            ram_budget=t.ram_budget,
            firmware_flash_bytes=full.flash,
            firmware_ram_bytes=full.data + full.bss,
            method=method,
            own_bytes=own_flash + own_ram,
        )

    def _table_footprint(self) -> Footprint:
        t = self.t
        avr = t.double_is_32bit
        tables = harness.table_bytes(
            self.code.source, int_bytes=2 if avr else 4, long_bytes=4 if avr else 8
        )
        fp = Footprint(
            target=t.name,
            flash_bytes=tables,
            ram_bytes=0,
            stack_bytes=None,
            flash_budget=t.flash_budget,
            ram_budget=t.ram_budget,
            firmware_flash_bytes=None,
            firmware_ram_bytes=None,
            method="the model's tables only (it does not compile for this target)",
            lower_bound=True,
        )
        if fp.fits:  # the compile failed for another reason: that is the error to report
            raise self.model_error or ToolchainError("the model did not compile")
        return fp


def integer_model(model: Model) -> bool:
    """Whether every step of ``model`` is quantized (integer C): bit-exact even on AVR."""
    return all(isinstance(s, (QuantizedTrees, QuantizedDense)) for s in model.steps)


def _prepare(model: Any) -> tuple[Model, Any]:
    source = None if isinstance(model, Model) else model
    return lower(model), source


def measure_footprint(
    model: Any,
    target: DeviceTarget | str,
    *,
    prefix: str = "model",
    layout: str = "table",
    timeout: float = 120,
) -> Footprint:
    """The model's flash, RAM and stack on ``target`` and whether it fits (no emulator needed).

    Parameters
    ----------
    model : Model or fitted estimator
    target : DeviceTarget or str
        A target or its name in :data:`~fedge.deployment.devices.DEVICES`.

    Returns
    -------
    Footprint
        ``fits`` is False (and ``message`` says why and what to do) for a model over budget;
        use :meth:`Footprint.check` to raise instead.

    Raises
    ------
    ToolchainError
        If the target's compiler or binutils are missing (naming the Debian package) or a build
        fails for a reason other than size.
    """
    t = get_target(target)
    t.check(run=False)
    ir, _ = _prepare(model)
    code = emit_c(ir, prefix, layout=layout)
    row = np.zeros((1, ir.n_features), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="fedge-dev-") as tmp:
        return _Build(t, code, Path(tmp), timeout).footprint(row)


def _rows_per_run(t: DeviceTarget, fp: Footprint, n_features: int, cap: int | None) -> int:
    per_run = min(cap or t.max_rows_per_run, t.max_rows_per_run)
    if t.flash_budget is not None and fp.firmware_flash_bytes is not None:
        room = t.flash_budget - fp.firmware_flash_bytes
        if room < 0:
            raise ToolchainError(
                f"the model fits {t.name} ({fp.flash_bytes:,} B) but the test firmware "
                f"(harness, C library and model: {fp.firmware_flash_bytes:,} B) exceeds its "
                f"{t.flash_budget:,} B of flash, so it cannot be run there"
            )
        per_run = min(per_run, 1 + room // (4 * n_features))
    return max(per_run, 1)


def verify_on_device(
    model: Any,
    X: Any,
    target: DeviceTarget | str,
    *,
    prefix: str = "model",
    layout: str = "table",
    timeout: float = 120,
    max_rows_per_run: int | None = None,
) -> DeviceReport:
    """Run ``model``'s generated C on ``target`` over the rows of ``X`` and compare every output.

    The rows are compiled into the firmware in batches that respect the target's flash (several
    runs when needed). Each run must exit with status 0 and end with a trailer whose row count
    and checksum match what was received.

    Parameters
    ----------
    model : Model or fitted estimator
        An estimator is lowered first and also serves as the source for label parity.
    X : array-like of shape (n_rows, n_features)
    target : DeviceTarget or str
        A runnable target (not a size-only one).
    timeout : float
        Seconds allowed for each compile and each emulator run.
    max_rows_per_run : int, optional
        Fewer rows per firmware than the target's default.

    Returns
    -------
    DeviceReport
        ``passed`` is the verdict; see ``parity`` for a one-line summary.

    Raises
    ------
    ToolchainError
        If a tool is missing (naming the Debian package), the model does not fit the target
        (with the numbers and a hint), the target is size-only, or a firmware crashes, hangs
        past ``timeout``, stops early or garbles its output.
    """
    t = get_target(target)
    if not t.runnable:
        raise ToolchainError(
            f"{t.name} is a size-only target (no emulator): use measure_footprint for it, or "
            f"one of the runnable targets"
        )
    t.check()
    ir, source = _prepare(model)
    rows = runtime.check_input(ir, X, runtime.Mode.DEVICE).astype(np.float32)
    if rows.shape[0] == 0:
        raise ToolchainError("verify_on_device needs at least one row")
    code = emit_c(ir, prefix, layout=layout)
    outputs: list[harness.FirmwareOutput] = []
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="fedge-dev-") as tmp:
        build = _Build(t, code, Path(tmp), timeout)
        fp = build.footprint(rows[:1]).check()
        per_run = _rows_per_run(t, fp, ir.n_features, max_rows_per_run)
        cycles = 0
        for i, start in enumerate(range(0, rows.shape[0], per_run)):
            batch = rows[start : start + per_run]
            elf = build.firmware(batch, f"batch{i}")
            done = run_firmware(t, elf, timeout=timeout).check()
            seconds += done.seconds
            outputs.append(harness.parse_output(done.text, code, batch.shape[0], where=t.name))
            cycles += _simavr_marked(done.stderr)
    per_prediction, counter = _counter(t, outputs, cycles, rows.shape[0])
    return _compare(t, ir, source, X, rows, outputs, fp, per_prediction, counter, seconds)


def _simavr_marked(stderr: str) -> int:
    for line in stderr.splitlines():
        if line.startswith("fedge-simavr: cycles"):
            return int(line.split()[4])
    return 0


def _counter(
    t: DeviceTarget, outputs: list[harness.FirmwareOutput], cycles: int, n: int
) -> tuple[float | None, str]:
    if t.counter is None:
        return None, t.counter_note
    simavr = any("{simavr_runner}" in a for a in t.emulator)
    total = cycles if simavr else sum(o.counter_total for o in outputs)
    if total == 0:
        return None, f"{t.counter}: the counter did not advance"
    return total / n, f"{t.counter} per predict call, mean over {n} rows"


def _compare(
    t: DeviceTarget,
    ir: Model,
    source: Any,
    X: Any,
    rows: np.ndarray,
    outputs: list[harness.FirmwareOutput],
    fp: Footprint,
    per_prediction: float | None,
    counter: str,
    seconds: float,
) -> DeviceReport:
    n = rows.shape[0]
    got = [np.concatenate([o.scores for o in outputs])]
    want = [runtime.decision_function(ir, rows, mode="device").reshape(n, -1).astype(np.float32)]
    if outputs[0].proba is not None:
        got.append(np.concatenate([o.proba for o in outputs]))  # type: ignore[misc]
        want.append(runtime.predict_proba(ir, rows, mode="device").astype(np.float32))
    g, w = np.concatenate(got, axis=1), np.concatenate(want, axis=1)
    both_nan = np.isnan(g) & np.isnan(w)
    differ = (g.view(np.uint32) != w.view(np.uint32)) & ~both_nan
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan, 0.0, np.abs(g.astype(np.float64) - w))
        max_diff = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
        exact = not t.double_is_32bit or integer_model(ir)
        tolerance = None if exact else AVR_SCORE_TOLERANCE
        if exact:
            off = differ
        else:
            bound = AVR_SCORE_TOLERANCE * np.maximum(1.0, np.abs(w.astype(np.float64)))
            off = differ & ~(diff <= bound)
    predicted = np.concatenate([o.predict for o in outputs])
    device_pred = runtime.predict(ir, rows, mode="device")
    if ir.task is Task.CLASSIFICATION:
        assert ir.classes is not None
        labels = ir.classes[predicted]
        label_dev = int(np.sum(labels != device_pred))
        label_src = None if source is None else int(np.sum(labels != source.predict(X)))
    else:
        values = predicted.reshape(device_pred.shape).astype(np.float32)
        want_v = device_pred.astype(np.float32)
        if exact:
            label_dev = int(np.sum(values.view(np.uint32) != want_v.view(np.uint32)))
        else:
            bound = AVR_SCORE_TOLERANCE * np.maximum(1.0, np.abs(want_v))
            label_dev = int(np.sum(~(np.abs(values - want_v) <= bound)))
        label_src = None
    return DeviceReport(
        target=t.name,
        rows=n,
        runs=len(outputs),
        exact=exact,
        tolerance=tolerance,
        score_mismatches=int(differ.any(axis=1).sum()),
        out_of_tolerance=int(off.any(axis=1).sum()),
        label_mismatches_device=label_dev,
        label_mismatches_source=label_src,
        max_abs_diff=max_diff,
        footprint=fp,
        per_prediction=per_prediction,
        counter=counter,
        seconds=round(seconds, 3),
    )
