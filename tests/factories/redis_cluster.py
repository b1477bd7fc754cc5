"""The Redis store on a real Redis Cluster of three masters, started once per test session.

The nodes run as subprocesses on free loopback ports in a temporary directory and are killed
when the interpreter exits (``atexit``): this module is imported by tests/conftest.py, so no
pytest hook is needed.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores.redis import RedisSessionStore
from tests.factories.redis import (
    Server,
    delete_prefixed,
    require_binary,
    start_server,
    unique_prefix,
)
from tests.services import free_port

SERVER_SIDE = True

_nodes: list[Server] = []
_failure: list[str] = []


@asynccontextmanager
async def store(*, hash_keys: bool = True) -> AsyncIterator[RedisSessionStore]:
    ports = _cluster()
    prefix = unique_prefix()
    url = f"redis://127.0.0.1:{ports[0]}"
    session_store = RedisSessionStore.from_url(
        url, key_prefix=prefix, cluster=True, hash_keys=hash_keys
    )
    try:
        yield session_store
    finally:
        await session_store.aclose()
        for port in ports:
            await delete_prefixed(f"redis://127.0.0.1:{port}", prefix)


def node_urls() -> list[str]:
    """The URLs of the cluster's masters (starting it on first use), to inspect each node."""
    return [f"redis://127.0.0.1:{port}" for port in _cluster()]


def _cluster() -> list[int]:
    """The ports of the running cluster's masters, starting it on first use."""
    cli = require_binary("redis-cli")
    require_binary("redis-server")
    if _failure:
        raise RuntimeError(_failure[0])
    if not _nodes:
        try:
            _start(cli)
        except Exception as exc:
            _failure.append(f"the test Redis Cluster did not start: {exc}")
            _stop()
            raise
    return [node.port for node in _nodes]


def _start(cli: str) -> None:
    directory = tempfile.mkdtemp(prefix="sessionware-cluster-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    atexit.register(_stop)  # runs first: atexit is last in, first out
    for _ in range(3):
        port, bus = free_port(), free_port()
        options = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        _nodes.append(start_server(directory, *options, "--cluster-port", str(bus), port=port))
    addresses = [f"127.0.0.1:{node.port}" for node in _nodes]
    subprocess.run(
        [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    deadline = time.monotonic() + 15
    while not all(_state_ok(cli, node.port) for node in _nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("cluster_state did not become ok within 15 s")
        time.sleep(0.1)


def _state_ok(cli: str, port: int) -> bool:
    info = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5
    )
    return "cluster_state:ok" in info.stdout


def _stop() -> None:
    while _nodes:
        _nodes.pop().stop()
