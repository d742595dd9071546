"""What a benchmark measured: the commit, a hash of the sources on disk, versions, machine.

Shared by the benchmark scripts (each imports it from its own folder) so that every results
file records its origin the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(sources: Iterable[Path], packages: Sequence[str] = ()) -> dict[str, Any]:
    """The commit, a SHA-256 of ``sources`` as they are on disk (they may differ from the
    commit), whether anything under src/ changed since it, package versions and the machine."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + path.read_bytes())
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "commit": _git("rev-parse", "HEAD"),
        "sources_sha256": digest.hexdigest(),
        "sources_modified_since_commit": bool(_git("status", "--porcelain", "--", "src")),
        "versions": versions,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays (anything else as text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: Path, data: Any) -> Path:
    """Write a benchmark's results as indented JSON (numpy values through
    :func:`json_default`), creating the directory; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=json_default) + "\n")
    return path
