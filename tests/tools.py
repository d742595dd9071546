"""Finding the external tools a test needs: missing ones fail, unless FEDGE_ALLOW_SKIP=1."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(command: str, debian_package: str) -> str:
    """Path of ``command``; a missing tool fails the test (CI) or skips it (FEDGE_ALLOW_SKIP=1)."""
    path = shutil.which(command)
    if path is not None:
        return path
    message = f"{command} not found: apt-get install {debian_package} (or run make test as root)"
    if os.environ.get("FEDGE_ALLOW_SKIP") == "1":
        pytest.skip(message)
    pytest.fail(message)


def run_sanitized(tmp_path, code, hostile, sanitizers: str = "address,undefined"):
    """Build generated C (``code``, a CSource) with the verification harness under the given
    sanitizers, feed it every value of ``hostile`` in every position (other features 0),
    then rows made only of each value, and return the finished process (the caller asserts
    on its return code and stderr)."""
    import subprocess

    import numpy as np

    from fedge.deployment.toolchain import HOST_FLAGS, compile_c
    from fedge.deployment.verify import harness_source

    require_tool("gcc", "gcc")
    (tmp_path / f"{code.prefix}.h").write_text(code.header)
    (tmp_path / f"{code.prefix}.c").write_text(code.source)
    (tmp_path / "main.c").write_text(harness_source(code))
    exe = compile_c(
        [tmp_path / f"{code.prefix}.c", tmp_path / "main.c"],
        tmp_path / "san",
        flags=(
            *HOST_FLAGS[:-3],
            "-g",
            f"-fsanitize={sanitizers}",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ),
    )
    values = np.asarray(hostile, dtype=np.float32)
    n = code.n_features
    single = np.zeros((n * values.size, n), dtype=np.float32)
    single[np.arange(single.shape[0]), np.repeat(np.arange(n), values.size)] = np.tile(values, n)
    rows = np.concatenate([single, np.repeat(values[:, None], n, axis=1)])
    return subprocess.run(
        [str(exe)], input=rows.astype(np.float32).tobytes(), capture_output=True, timeout=120
    )


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the ``fedge`` command in-process: (exit status, stdout, stderr)."""
    from fedge.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
