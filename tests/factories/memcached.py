"""The memcached store, on a ``memcached`` of the tests' own (started once, on a free loopback
port, and killed by its PID when the interpreter exits), under a prefix unique to each test.

Also the helper the memcached tests share to start a server of their own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores.memcached import MemcachedSessionStore
from tests.services import ServerProcess, free_port, require_executable

SERVER_SIDE = True

_shared: list[Server] = []


@asynccontextmanager
async def store() -> AsyncIterator[MemcachedSessionStore]:
    prefix = f"sessionware-test:{uuid.uuid4().hex}:"
    sessions = MemcachedSessionStore.from_url(shared_url(), key_prefix=prefix)
    try:
        yield sessions
    finally:
        await sessions.aclose()


def shared_url() -> str:
    """The URL of the tests' shared memcached, started on first use."""
    if not _shared:
        _shared.append(start_server())
        atexit.register(_shared[0].stop)
    return _shared[0].url


class Server(ServerProcess):
    """A ``memcached`` of a test's own; ``stop()`` kills it by its PID."""

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"


def start_server(port: int | None = None) -> Server:
    """Start ``memcached`` on 127.0.0.1:``port`` (default: a free one), TCP only; return once
    it listens (at most 5 s)."""
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    require_executable("memcached", binary)
    port = free_port() if port is None else port
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]  # memcached refuses to run as root without -u
    server = Server(subprocess.Popen(argv, stderr=subprocess.DEVNULL), port)
    server.wait_listening("memcached")
    return server
