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
