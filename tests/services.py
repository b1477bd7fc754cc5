"""Reaching the real servers tests need: skip with a reason on a laptop, fail under CI."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest


def require(name: str, host: str, port: int) -> None:
    """Skip (or, under CI=true, fail) unless something listens on host:port."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have it running", pytrace=False)
        pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_executable(name: str, path: str) -> None:
    """Skip (or, under CI=true, fail) unless ``path`` is an executable file."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return
    message = f"{name} is not installed at {path}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it installed", pytrace=False)
    pytest.skip(message)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (its package is installed), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def require_module(name: str, module: str) -> None:
    """Skip (or, under CI=true, fail) unless ``module`` can be imported (its package installed)."""
    if installed(module):
        return
    message = f"{name} is not installed (no module {module!r}; pip install -e '.[dev]')"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it installed", pytrace=False)
    pytest.skip(message)


@dataclass
class ServerProcess:
    """A server a test started for itself on 127.0.0.1:``port``; ``stop()`` kills it by PID."""

    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)

    def wait_listening(self, what: str, seconds: float = 5.0) -> None:
        """Return once the port accepts connections; stop it and raise if it never does."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{what} on port {self.port} did not start")
