"""The MariaDB/MySQL store, on tables of its own that are dropped afterwards.

Also a ``mariadbd`` of a test's own (for the tests that stop the server), on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncmy

from sessionware.stores.mysql import MySQLSessionStore
from tests.services import free_port, require, require_executable

SERVER_SIDE = True
DSN = "mysql://root@127.0.0.1:3306/test"


@asynccontextmanager
async def store() -> AsyncIterator[MySQLSessionStore]:
    require("MariaDB", "127.0.0.1", 3306)
    table = f"sessionware_test_{uuid.uuid4().hex[:24]}"
    sessions = MySQLSessionStore.from_dsn(DSN, table=table, connect_timeout=5)
    try:
        yield sessions
    finally:
        await sessions.aclose()
        await drop_tables(3306, table)


async def drop_tables(port: int, table: str) -> None:
    """Drop a store's two tables on the server at 127.0.0.1:``port``."""
    conn = await asyncmy.connect(host="127.0.0.1", port=port, user="root", db="test")
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
    finally:
        conn.close()


@dataclass
class Server:
    """A ``mariadbd`` of a test's own on an empty data directory; ``stop()`` kills it by PID."""

    directory: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        """Start the server (again, on the same data and port); return once it listens."""
        binary = "/usr/sbin/mariadbd"
        require_executable("mariadbd", binary)
        argv = [binary, "--no-defaults", f"--datadir={self.directory}", f"--port={self.port}"]
        argv += ["--bind-address=127.0.0.1", f"--socket={self.directory}/mysqld.sock"]
        argv += ["--user=root", "--skip-grant-tables", "--skip-log-bin"]
        argv += ["--innodb-buffer-pool-size=16M", f"--pid-file={self.directory}/mysqld.pid"]
        with open(os.path.join(self.directory, "server.log"), "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mariadbd on port {self.port} did not start; see {self.directory}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


async def start_server(directory: str) -> Server:
    """A fresh ``mariadbd`` on a free loopback port, with its database ``test``."""
    server = Server(directory, free_port())
    server.start()
    conn = await asyncmy.connect(host="127.0.0.1", port=server.port, user="root")
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("CREATE DATABASE IF NOT EXISTS test")
    finally:
        conn.close()
    return server
