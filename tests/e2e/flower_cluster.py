"""A SuperLink and SuperNodes on 127.0.0.1 as separate processes, for end-to-end tests:
free ports, a private FLWR_HOME, no downloads, every process killed on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class Cluster:
    """``with Cluster(tmp) as c: c.start_superlink(); c.start_supernode(...)``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "flwr_home"
        self.home.mkdir(parents=True, exist_ok=True)
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # Flower spawns its helpers
        self.env = {**os.environ, **QUIET_ENV, "FLWR_HOME": str(self.home), "PATH": path}
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.root / f"{name}.log", "wb") as log:  # the child keeps its own handle
            proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_superlink(self) -> None:
        self._spawn("superlink", [
            str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(self.port), "--disable-runtime-dependency-installation",
        ])
        wait_for_port(self.port, 60)

    def start_supernode(self, name: str, node_config: str) -> None:
        self._spawn(name, [
            str(BIN / "flower-supernode"), "--insecure", "--superlink", self.address,
            "--port", str(free_port()), "--node-config", node_config,
        ])

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the SuperNode and its ClientApp processes
            proc.wait(10)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.procs):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
