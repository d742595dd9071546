"""Compilers and binary tools for generated C: found once, always run under a timeout.

Every failure is a :class:`~fedge.errors.ToolchainError` that names what to install.
Device records (Cortex-M, AVR, RISC-V, aarch64) build on this module.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fedge.errors import ToolchainError

__all__ = ["HOST_FLAGS", "ObjectSize", "compile_c", "find_tool", "object_size", "run"]

# Exactly what device mode assumes: C99, float32 arithmetic, no fused multiply-add.
HOST_FLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-pedantic")
DEFAULT_TIMEOUT_S = 120


def find_tool(command: str, debian_package: str) -> str:
    """Absolute path of ``command``, or a ToolchainError naming the Debian package."""
    path = shutil.which(command)
    if path is None:
        raise ToolchainError(
            f"{command} was not found; install it with: apt-get install {debian_package}"
        )
    return path


def run(
    argv: list[str], *, input_bytes: bytes | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; a non-zero exit or a timeout is a ToolchainError with its output."""
    try:
        done = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolchainError(
            f"{Path(argv[0]).name} did not finish within {timeout:.0f} s"
        ) from None
    except OSError as exc:
        raise ToolchainError(f"could not run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[-2000:]
        raise ToolchainError(f"{Path(argv[0]).name} failed (exit {done.returncode}): {err}")
    return done


def compile_c(
    sources: list[Path],
    output: Path,
    *,
    compiler: str = "gcc",
    flags: tuple[str, ...] = HOST_FLAGS,
    extra: tuple[str, ...] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Compile (and link, unless ``-c`` is in ``extra``) C sources into ``output``."""
    cc = find_tool(compiler, "gcc" if compiler == "gcc" else compiler)
    run([cc, *flags, *extra, *map(str, sources), "-o", str(output), "-lm"], timeout=timeout)
    return output


@dataclass(frozen=True)
class ObjectSize:
    """Section sizes of an object file, in bytes (``size`` in Berkeley format)."""

    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        """What a microcontroller stores in flash: code, constants and initialised data."""
        return self.text + self.data


def object_size(path: Path, *, tool: str = "size") -> ObjectSize:
    """Sizes of an object file's sections (binutils ``size``)."""
    out = run([find_tool(tool, "binutils"), str(path)]).stdout.decode().splitlines()
    try:
        text, data, bss = (int(v) for v in out[1].split()[:3])
    except (IndexError, ValueError):
        raise ToolchainError(f"could not read sizes from {tool}: {out!r}") from None
    return ObjectSize(text, data, bss)
