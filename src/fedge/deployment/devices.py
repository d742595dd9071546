"""Device targets: where generated C runs, as small declarative records.

Each :class:`DeviceTarget` says how to build a test firmware (compiler, flags, startup code,
linker script, a port header giving output, exit status and an optional counter), how to run
it (an emulator command, always under a timeout), and what the device offers (flash and RAM
budget, whether ``double`` is 32-bit). The records know nothing of models: building and
verifying a model on a target is :mod:`fedge.deployment.device_verify`.

=================  =========================  ==========================================
target             compiler                   runs on
=================  =========================  ==========================================
host               gcc                        the host itself
cortex-m4f         arm-none-eabi-gcc          qemu-system-arm -M mps2-an386 (semihosting)
cortex-m3          arm-none-eabi-gcc          qemu-system-arm -M lm3s6965evb (semihosting)
cortex-m0plus      arm-none-eabi-gcc          size only
cortex-m7          arm-none-eabi-gcc          size only
arduino-uno        avr-gcc (ATmega328P)       simavr, through fedge's libsimavr runner
esp32c3            riscv64-unknown-elf-gcc    qemu-system-riscv32 -M virt (semihosting)
raspberry-pi       aarch64-linux-gnu-gcc      qemu-aarch64 (static Linux binary)
=================  =========================  ==========================================

Startup code, linker script, port headers and the simavr runner's source are package data in
``fedge/deployment/targets/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fedge.deployment.compiled import cache_dir
from fedge.deployment.toolchain import ObjectSize, find_tool, object_size, run
from fedge.errors import ToolchainError

__all__ = [
    "DEVICES",
    "TARGETS_DIR",
    "DeviceTarget",
    "FirmwareRun",
    "Requirement",
    "compile_object",
    "get_target",
    "link_firmware",
    "run_firmware",
    "simavr_runner",
    "symbol_sizes",
    "target_sizes",
]

TARGETS_DIR = Path(__file__).resolve().parent / "targets"
"""Startup code, linker scripts, port headers and the simavr runner (package data)."""

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Requirement:
    """A command (looked up on PATH) or a file a target needs, and the Debian package with it."""

    what: str
    package: str

    @property
    def is_file(self) -> bool:
        return self.what.startswith("/")

    def present(self) -> bool:
        """Whether the command is on PATH or the file exists."""
        return Path(self.what).exists() if self.is_file else shutil.which(self.what) is not None


@dataclass(frozen=True)
class DeviceTarget:
    """How to build, run and size a test firmware for one class of device.

    Parameters
    ----------
    name : str
        Registry key (``fedge targets`` lists them).
    description : str
        The device class and the emulated board.
    compiler : str
        C compiler command.
    cflags : tuple of str
        Compile flags (model, harness and startup alike). Always ``-ffp-contract=off``: the
        precision contract forbids fused multiply-adds.
    ldflags : tuple of str
        Link flags; ``{targets}`` is replaced by :data:`TARGETS_DIR`.
    startup : tuple of str
        C files from ``targets/`` compiled into every firmware.
    port : str
        Header from ``targets/`` that gives the harness its output, exit and counter.
    prelude : str or None
        Header from ``targets/`` passed with ``-include`` before every file (AVR: PROGMEM
        tables).
    size_tool : str
        binutils ``size`` for the target.
    emulator : tuple of str
        Command that runs a firmware; ``{elf}`` is the image, ``{simavr_runner}`` fedge's
        compiled libsimavr runner. Empty: size-only target.
    flash_budget, ram_budget : int or None
        Bytes the device offers (None: not a constraint, e.g. a Linux board's storage).
    double_is_32bit : bool
        ``double`` is a 32-bit float (AVR): its libm differs, so float outputs are compared
        within a tolerance instead of bit for bit.
    output, exit_status : str
        How the firmware's output and exit status reach the host (for people and docs).
    counter : str or None
        What the instruction count reports, or None when the emulator cannot count.
    counter_note : str
        Why there is no count (when ``counter`` is None) or how it is obtained.
    requirements : tuple of Requirement
        Commands and files to build and run, with their Debian packages.
    max_rows_per_run : int
        Rows compiled into one firmware at most (more rows: several runs).
    footprint_by : str
        ``difference``: the model's flash and RAM are the linked firmware minus the same
        firmware with a stub model (bare metal: includes the libm and soft-float routines the
        model pulls in). ``symbols``: the sizes of the model's own symbols in the image (hosted
        targets, whose static C library makes link differences meaningless).
    """

    name: str
    description: str
    compiler: str
    cflags: tuple[str, ...]
    size_tool: str
    port: str
    requirements: tuple[Requirement, ...]
    ldflags: tuple[str, ...] = ()
    startup: tuple[str, ...] = ()
    prelude: str | None = None
    emulator: tuple[str, ...] = ()
    flash_budget: int | None = None
    ram_budget: int | None = None
    double_is_32bit: bool = False
    output: str = "stdout"
    exit_status: str = "process exit status"
    counter: str | None = None
    counter_note: str = ""
    max_rows_per_run: int = 256
    footprint_by: str = "difference"

    @property
    def runnable(self) -> bool:
        """Whether firmware for this target can be run here (an emulator or natively)."""
        return bool(self.emulator)

    @property
    def runs_on(self) -> str:
        """The emulator's name, ``native`` or ``size only``."""
        if not self.emulator:
            return "size only"
        first = self.emulator[0]
        if first == "{elf}":
            return "native"
        return "simavr (fedge runner)" if first == "{simavr_runner}" else Path(first).name

    def missing(self, *, run: bool = True) -> list[Requirement]:
        """Requirements not installed (``run=False``: only what building and sizing need)."""
        needed = self.requirements if run else self._build_requirements()
        return [r for r in needed if not r.present()]

    def _build_requirements(self) -> tuple[Requirement, ...]:
        runners = {"qemu-system-arm", "qemu-system-riscv32", "qemu-aarch64"}
        simavr = "/usr/include/simavr/sim_avr.h"
        return tuple(r for r in self.requirements if r.what not in runners and r.what != simavr)

    def check(self, *, run: bool = True) -> None:
        """Raise a ToolchainError naming every missing Debian package.

        Raises
        ------
        ToolchainError
            If a command or file of the target is missing.
        """
        missing = self.missing(run=run)
        if missing:
            packages = " ".join(dict.fromkeys(r.package for r in missing))
            what = ", ".join(r.what for r in missing)
            raise ToolchainError(
                f"target {self.name} needs {what}; install with: apt-get install {packages}"
            )

    def package_of(self, command: str) -> str:
        """The Debian package that provides ``command`` (for error messages)."""
        for r in self.requirements:
            if r.what == command:
                return r.package
        return command


_ARM_LINK = (
    "-nostartfiles",
    "--specs=nano.specs",
    "--specs=nosys.specs",
    "-T",
    "{targets}/cortexm.ld",
    "-Wl,--gc-sections",
)
_ARM_REQ = (
    Requirement("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
    Requirement("arm-none-eabi-size", "binutils-arm-none-eabi"),
    Requirement("/usr/lib/arm-none-eabi/newlib/libm.a", "libnewlib-arm-none-eabi"),
)
_MCU_FLAGS = ("-std=c99", "-Os", "-ffp-contract=off", "-ffunction-sections", "-fdata-sections")


def _qemu_arm(board: str, cpu: str) -> tuple[str, ...]:
    return (
        "qemu-system-arm",
        "-M",
        board,
        "-cpu",
        cpu,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        "{elf}",
    )


_NO_CYCLES_ARM = (
    "QEMU does not model the DWT cycle counter, and SysTick under -icount ticks only every "
    "~40 instructions: no instruction count on Cortex-M"
)

DEVICES: dict[str, DeviceTarget] = {
    t.name: t
    for t in (
        DeviceTarget(
            name="host",
            description="this machine (gcc, native run)",
            compiler="gcc",
            cflags=("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra"),
            size_tool="size",
            port="port_hosted.h",
            emulator=("{elf}",),
            footprint_by="symbols",
            counter_note="no instruction counter on the host; see benchmarks/ for ns per row",
            requirements=(Requirement("gcc", "gcc"), Requirement("size", "binutils")),
        ),
        DeviceTarget(
            name="cortex-m4f",
            description="Cortex-M4 with FPU (STM32F401-class); QEMU mps2-an386",
            compiler="arm-none-eabi-gcc",
            cflags=(
                "-mcpu=cortex-m4",
                "-mthumb",
                "-mfloat-abi=hard",
                "-mfpu=fpv4-sp-d16",
                *_MCU_FLAGS,
            ),
            ldflags=_ARM_LINK,
            startup=("cortexm_startup.c",),
            size_tool="arm-none-eabi-size",
            port="port_semihost.h",
            emulator=_qemu_arm("mps2-an386", "cortex-m4"),
            flash_budget=256 * KIB,
            ram_budget=64 * KIB,
            output="semihosting (SYS_WRITE0)",
            exit_status="semihosting SYS_EXIT_EXTENDED",
            counter_note=_NO_CYCLES_ARM,
            requirements=(*_ARM_REQ, Requirement("qemu-system-arm", "qemu-system-arm")),
        ),
        DeviceTarget(
            name="cortex-m3",
            description="Cortex-M3, soft float (LM3S6965: 256 KiB flash, 64 KiB RAM); QEMU "
            "lm3s6965evb",
            compiler="arm-none-eabi-gcc",
            cflags=("-mcpu=cortex-m3", "-mthumb", *_MCU_FLAGS),
            ldflags=_ARM_LINK,
            startup=("cortexm_startup.c",),
            size_tool="arm-none-eabi-size",
            port="port_semihost.h",
            emulator=_qemu_arm("lm3s6965evb", "cortex-m3"),
            flash_budget=256 * KIB,
            ram_budget=64 * KIB,
            output="semihosting (SYS_WRITE0)",
            exit_status="semihosting SYS_EXIT_EXTENDED",
            counter_note=_NO_CYCLES_ARM,
            requirements=(*_ARM_REQ, Requirement("qemu-system-arm", "qemu-system-arm")),
        ),
        DeviceTarget(
            name="cortex-m0plus",
            description="Cortex-M0+, soft float (SAMD21-class); size only",
            compiler="arm-none-eabi-gcc",
            cflags=("-mcpu=cortex-m0plus", "-mthumb", *_MCU_FLAGS),
            ldflags=_ARM_LINK,
            startup=("cortexm_startup.c",),
            size_tool="arm-none-eabi-size",
            port="port_semihost.h",
            flash_budget=256 * KIB,
            ram_budget=32 * KIB,
            counter_note="size-only target (no emulator)",
            requirements=_ARM_REQ,
        ),
        DeviceTarget(
            name="cortex-m7",
            description="Cortex-M7 with single-precision FPU (STM32F746-class); size only",
            compiler="arm-none-eabi-gcc",
            cflags=(
                "-mcpu=cortex-m7",
                "-mthumb",
                "-mfloat-abi=hard",
                "-mfpu=fpv5-sp-d16",
                *_MCU_FLAGS,
            ),
            ldflags=_ARM_LINK,
            startup=("cortexm_startup.c",),
            size_tool="arm-none-eabi-size",
            port="port_semihost.h",
            flash_budget=1 * MIB,
            ram_budget=320 * KIB,
            counter_note="size-only target (no emulator)",
            requirements=_ARM_REQ,
        ),
        DeviceTarget(
            name="arduino-uno",
            description="Arduino Uno (ATmega328P, 16 MHz, no FPU, 32-bit double); simavr",
            compiler="avr-gcc",
            cflags=(
                "-mmcu=atmega328p",
                "-std=gnu99",
                "-Os",
                "-ffp-contract=off",
                "-ffunction-sections",
                "-fdata-sections",
            ),
            # Generous regions: fedge compares the image with the budget itself.
            ldflags=(
                "-Wl,--gc-sections",
                "-Wl,--defsym=__TEXT_REGION_LENGTH__=16M",
                "-Wl,--defsym=__DATA_REGION_LENGTH__=0xfe00",
            ),
            prelude="avr_prelude.h",
            size_tool="avr-size",
            port="port_avr.h",
            emulator=("{simavr_runner}", "{elf}", "atmega328p", "16000000", "2000000000"),
            flash_budget=32 * KIB,
            ram_budget=2 * KIB,
            double_is_32bit=True,
            output="GPIOR0 console (fedge's libsimavr runner)",
            exit_status="GPIOR1, carried out by fedge's libsimavr runner",
            counter="cycles (simavr)",
            counter_note="simavr cycle count between GPIOR2 marks around each predict call",
            requirements=(
                Requirement("avr-gcc", "gcc-avr"),
                Requirement("avr-size", "binutils-avr"),
                Requirement("/usr/lib/avr/include/avr/io.h", "avr-libc"),
                Requirement("gcc", "gcc"),
                Requirement("/usr/include/simavr/sim_avr.h", "libsimavr-dev"),
            ),
            max_rows_per_run=64,
        ),
        DeviceTarget(
            name="esp32c3",
            description="ESP32-C3-class RV32 (rv32imc, picolibc rv32im); QEMU virt",
            compiler="riscv64-unknown-elf-gcc",
            cflags=(
                "--specs=picolibc.specs",
                "-march=rv32imc",
                "-mabi=ilp32",
                *_MCU_FLAGS,
            ),
            ldflags=(
                "--oslib=semihost",
                "-Wl,--gc-sections",
                "-Wl,--defsym=__flash=0x80000000",
                "-Wl,--defsym=__flash_size=0x1000000",
                "-Wl,--defsym=__ram=0x81000000",
                "-Wl,--defsym=__ram_size=0x1000000",
            ),
            size_tool="riscv64-unknown-elf-size",
            port="port_semihost.h",
            emulator=(
                "qemu-system-riscv32",
                "-M",
                "virt",
                "-cpu",
                "rv32,a=false,f=false,d=false",
                "-icount",
                "shift=0",
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                "none",
                "-bios",
                "none",
                "-semihosting-config",
                "enable=on,target=native",
                "-kernel",
                "{elf}",
            ),
            flash_budget=4 * MIB,
            ram_budget=400 * KIB,
            output="semihosting (SYS_WRITE0)",
            exit_status="semihosting SYS_EXIT_EXTENDED",
            counter="instructions (minstret under -icount shift=0)",
            counter_note="minstret read around each predict call; exact under -icount",
            requirements=(
                Requirement("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf"),
                Requirement("riscv64-unknown-elf-size", "binutils-riscv64-unknown-elf"),
                Requirement(
                    "/usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs",
                    "picolibc-riscv64-unknown-elf",
                ),
                Requirement("qemu-system-riscv32", "qemu-system-misc"),
            ),
        ),
        DeviceTarget(
            name="raspberry-pi",
            description="Raspberry Pi class aarch64 Linux (Pi Zero 2 W: 512 MiB); qemu-aarch64",
            compiler="aarch64-linux-gnu-gcc",
            cflags=(
                "-std=c99",
                "-O2",
                "-ffp-contract=off",
                "-ffunction-sections",
                "-fdata-sections",
            ),
            ldflags=("-static", "-Wl,--gc-sections"),
            size_tool="aarch64-linux-gnu-size",
            port="port_hosted.h",
            emulator=("qemu-aarch64", "{elf}"),
            footprint_by="symbols",
            ram_budget=512 * MIB,
            counter_note="qemu-user cannot count instructions (-icount is system-mode only)",
            requirements=(
                Requirement("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
                Requirement("aarch64-linux-gnu-size", "binutils-aarch64-linux-gnu"),
                Requirement("qemu-aarch64", "qemu-user"),
            ),
        ),
    )
}


def get_target(name: str | DeviceTarget) -> DeviceTarget:
    """The registered target called ``name`` (a DeviceTarget is returned unchanged).

    Raises
    ------
    ToolchainError
        If no target has that name; the message lists the names.
    """
    if isinstance(name, DeviceTarget):
        return name
    try:
        return DEVICES[name]
    except KeyError:
        raise ToolchainError(
            f"unknown device target {name!r}; known targets: {', '.join(DEVICES)}"
        ) from None


def _flags(target: DeviceTarget, flags: tuple[str, ...]) -> list[str]:
    return [f.replace("{targets}", str(TARGETS_DIR)) for f in flags]


def _prelude(target: DeviceTarget) -> list[str]:
    return ["-include", str(TARGETS_DIR / target.prelude)] if target.prelude else []


def compile_object(
    target: DeviceTarget,
    source: Path,
    output: Path,
    *,
    include: tuple[Path, ...] = (),
    extra: tuple[str, ...] = (),
    timeout: float = 120,
) -> Path:
    """Compile one C file for ``target`` into an object file.

    Raises
    ------
    ToolchainError
        If the compiler is missing (naming its package), fails or times out.
    """
    cc = find_tool(target.compiler, target.package_of(target.compiler))
    argv = [
        cc,
        *target.cflags,
        *_prelude(target),
        *(f"-I{d}" for d in include),
        *extra,
        "-c",
        str(source),
        "-o",
        str(output),
    ]
    run(argv, timeout=timeout)
    return output


def link_firmware(
    target: DeviceTarget, objects: list[Path], output: Path, *, timeout: float = 120
) -> Path:
    """Link objects (startup included by the caller) into a firmware image with libm."""
    cc = find_tool(target.compiler, target.package_of(target.compiler))
    argv = [cc, *target.cflags, *_flags(target, target.ldflags), *map(str, objects)]
    run([*argv, "-o", str(output), "-lm"], timeout=timeout)
    return output


def target_sizes(target: DeviceTarget, path: Path) -> ObjectSize:
    """Berkeley ``size`` of an object or image with the target's binutils."""
    find_tool(target.size_tool, target.package_of(target.size_tool))
    return object_size(path, tool=target.size_tool)


def symbol_sizes(target: DeviceTarget, path: Path) -> dict[str, tuple[str, int]]:
    """Defined symbols of an object or image: name -> (nm type letter, size in bytes)."""
    tool = target.size_tool[: -len("size")] + "nm"
    nm = find_tool(tool, target.package_of(target.size_tool))
    out = run([nm, "-S", "--defined-only", str(path)]).stdout.decode().splitlines()
    sizes: dict[str, tuple[str, int]] = {}
    for line in out:
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = (parts[2], int(parts[1], 16))
    return sizes


def simavr_runner(timeout: float = 120) -> Path:
    """fedge's libsimavr runner, compiled once into the cache (keyed by its source)."""
    source = TARGETS_DIR / "simavr_runner.c"
    key = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    exe = cache_dir().parent / "devices" / f"fedge-simavr-{key}"
    if exe.exists():
        return exe
    if not Path("/usr/include/simavr/sim_avr.h").exists():
        raise ToolchainError(
            "the simavr runner needs libsimavr's headers; install with: "
            "apt-get install libsimavr-dev"
        )
    cc = find_tool("gcc", "gcc")
    exe.parent.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_name(f".{exe.name}.{os.getpid()}")
    run(
        [cc, "-O2", "-I/usr/include/simavr", str(source), "-o", str(tmp), "-lsimavr"],
        timeout=timeout,
    )
    os.replace(tmp, exe)  # atomic: concurrent builds are harmless
    return exe


@dataclass(frozen=True)
class FirmwareRun:
    """One firmware run: its exit status, output (stdout + stderr) and wall time."""

    target: str
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        """Everything the firmware and its emulator wrote (semihosting output is on stderr)."""
        return self.stdout + "\n" + self.stderr

    def check(self) -> FirmwareRun:
        """Raise a ToolchainError unless the firmware exited with status 0."""
        if self.status != 0:
            raise ToolchainError(
                f"the firmware on {self.target} failed: {_describe_status(self.status)}; "
                f"output: {self.text.strip()[-600:]!r}"
            )
        return self


def _describe_status(status: int) -> str:
    known = {
        0x56: "it crashed (fedge's fault or trap handler)",
        124: "it did not finish (simavr cycle limit)",
        125: "it crashed (simavr)",
        126: "it stopped without an exit status",
    }
    if status < 0 or 128 < status < 160:
        return f"it was killed by signal {-status if status < 0 else status - 128} (crash)"
    return f"exit status {status}" + (f", {known[status]}" if status in known else "")


def run_firmware(target: DeviceTarget | str, elf: Path, *, timeout: float = 60) -> FirmwareRun:
    """Run a firmware image on its emulator (or natively), bounded by ``timeout`` seconds.

    A firmware that hangs is killed at the timeout and reported as a ToolchainError; one that
    crashes comes back with a non-zero status (see :meth:`FirmwareRun.check`).

    Raises
    ------
    ToolchainError
        If the target has no emulator, a tool is missing, or the run exceeds ``timeout``.
    """
    t = get_target(target)
    if not t.runnable:
        raise ToolchainError(
            f"{t.name} is a size-only target (no emulator); use measure_footprint for it"
        )
    t.check()
    runner = str(simavr_runner()) if any("{simavr_runner}" in a for a in t.emulator) else ""
    argv = [a.replace("{elf}", str(elf)).replace("{simavr_runner}", runner) for a in t.emulator]
    exe = shutil.which(argv[0]) or argv[0]
    start = time.monotonic()
    try:
        done = subprocess.run(
            ["timeout", "-k", "2", f"{timeout:g}", exe, *argv[1:]],
            capture_output=True,
            timeout=timeout + 10,
        )
    except subprocess.TimeoutExpired:
        done = None
    except OSError as exc:
        raise ToolchainError(f"could not run {argv[0]}: {exc}") from None
    elapsed = time.monotonic() - start
    if done is None or (done.returncode in (124, 137) and elapsed >= timeout):
        raise ToolchainError(
            f"the firmware on {t.name} did not finish within {timeout:g} s "
            "(it hangs, or the batch is too large); the emulator was stopped"
        )
    return FirmwareRun(
        target=t.name,
        status=done.returncode,
        stdout=done.stdout.decode(errors="replace"),
        stderr=done.stderr.decode(errors="replace"),
        seconds=elapsed,
    )
