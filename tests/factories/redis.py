"""The Redis store, against the server at 127.0.0.1:6379 under a prefix unique to each test.

Also the helpers the Redis tests share: a throwaway ``redis-server`` of their own on a free
loopback port, and deleting a test's keys.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from sessionware.stores.redis import RedisSessionStore
from tests.services import ServerProcess, free_port, require

SERVER_SIDE = True
URL = "redis://127.0.0.1:6379/0"


@asynccontextmanager
async def store(*, hash_keys: bool = True) -> AsyncIterator[RedisSessionStore]:
    require("Redis", "127.0.0.1", 6379)
    prefix = unique_prefix()
    session_store = RedisSessionStore.from_url(URL, key_prefix=prefix, hash_keys=hash_keys)
    try:
        yield session_store
    finally:
        await session_store.aclose()
        await delete_prefixed(URL, prefix)


def unique_prefix() -> str:
    """A key prefix no other test or run shares; it holds no glob characters."""
    return f"sessionware-test:{uuid.uuid4().hex}:"


async def delete_prefixed(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on one server (SCAN, never KEYS; one DEL per key so a
    cluster node never sees keys of different slots in one command)."""
    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def require_binary(name: str) -> str:
    """The path of ``name``; skip (or, under CI=true, fail) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(message)
    return path


class Server(ServerProcess):
    """A ``redis-server`` of a test's own; ``stop()`` kills it."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_server(
    directory: str, *options: str, port: int | None = None, config_file: str | None = None
) -> Server:
    """Start ``redis-server`` (with ``config_file`` if given) on ``port`` (default: a free one),
    its files in ``directory``; return once it listens (at most 5 s)."""
    binary = require_binary("redis-server")
    port = free_port() if port is None else port
    argv = [binary] if config_file is None else [binary, config_file]
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--daemonize", "no", "--dir", directory, *options]
    with open(os.path.join(directory, f"redis-{port}.log"), "wb") as log:
        server = Server(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), port)
    server.wait_listening(f"redis-server (log in {directory})")
    return server
