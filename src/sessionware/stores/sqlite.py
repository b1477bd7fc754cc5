"""SQLiteSessionStore: versioned records in one SQLite file, shared safely by worker processes.

Made on first use in one ``BEGIN IMMEDIATE`` transaction, so two processes never race on it::

    CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, data TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1, expires REAL NOT NULL);      -- Unix seconds
    CREATE TABLE IF NOT EXISTS sessions_users (user_id TEXT NOT NULL, key TEXT NOT NULL,
        expires REAL NOT NULL, PRIMARY KEY (user_id, key)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);  -- and sessions_users_...

A first-version table (no ``version``) is migrated then: ``ADD COLUMN version INTEGER NOT NULL
DEFAULT 1`` and ``DELETE ... WHERE data IS NULL`` (its tombstones); its ``successor`` and
``user_id`` columns stay, unused, and its rows keep their clear keys as ids.

One statement per operation (``now`` is ``clock()``; ``index_add``'s two in one transaction)::

    get           SELECT data, version FROM sessions WHERE key = ? AND expires > now
    put(ABSENT)   INSERT ... VALUES (id, data, 1, now + ttl) ON CONFLICT (key) DO UPDATE SET
                  data, version = version + 1, expires WHERE expires <= now RETURNING version
    put(v)        UPDATE ... SET data, version = version + 1, expires = now + ttl
                  WHERE key = id AND version = v AND expires > now RETURNING version
    touch         UPDATE ... SET expires = now + ttl WHERE key = id AND expires > now
    delete        DELETE FROM sessions WHERE key = id
    index_add     INSERT INTO sessions_users ... ON CONFLICT DO UPDATE SET expires;
                  DELETE FROM sessions_users WHERE user_id = ? AND key <> ? AND expires <= now
    index_remove  DELETE FROM sessions_users WHERE user_id = ? AND key = ?
    index_members SELECT key FROM sessions_users WHERE user_id = ? AND expires > now
    get_many      SELECT key, data, version FROM sessions WHERE key IN (SELECT value FROM
                  json_each(ids)) AND expires > now
    replace_many  UPDATE sessions SET ... FROM json_each(writes) AS w WHERE key = w's id AND
                  version = w's version AND expires > now RETURNING key, version
    index_remove_many  DELETE FROM sessions_users WHERE user_id = ? AND key IN (json_each(ids))
    clear_expired DELETE FROM sessions WHERE key IN (SELECT key ... WHERE expires <= now
                  ORDER BY expires LIMIT n), batch after batch on a connection of its own
                  (then sessions_users alike), each followed by PRAGMA wal_checkpoint(PASSIVE)
    sweep_lock    an exclusive, non-blocking lock on the file <path>-<table>.sweep (flock;
                  the OS drops it with the process), held while the sweep runs
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sessionware.stores._connections import boundary, positive
from sessionware.stores._maintenance import DEFAULT_BATCH, ProgressHook, delete_in_batches
from sessionware.stores.base import (
    ABSENT,
    Absent,
    Record,
    Replace,
    StoreError,
    UserSessionsMixin,
    Version,
    deprecated_clock,
)

__all__ = ["SQLiteSessionStore"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_SQL = {
    "create": "CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, data TEXT NOT NULL,"
    " version INTEGER NOT NULL DEFAULT 1, expires REAL NOT NULL)",
    "columns": "PRAGMA table_info({t})",
    "add_version": "ALTER TABLE {t} ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
    "drop_tombstones": "DELETE FROM {t} WHERE data IS NULL",
    "expiry": "CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)",
    "users": "CREATE TABLE IF NOT EXISTS {t}_users (user_id TEXT NOT NULL, key TEXT NOT NULL,"
    " expires REAL NOT NULL, PRIMARY KEY (user_id, key)) WITHOUT ROWID",
    "users_expiry": "CREATE INDEX IF NOT EXISTS {t}_users_expires ON {t}_users (expires)",
    "get": "SELECT data, version FROM {t} WHERE key = ? AND expires > ?",
    "create_record": "INSERT INTO {t} (key, data, version, expires) VALUES (?, ?, 1, ?)"
    " ON CONFLICT (key) DO UPDATE SET data = excluded.data, version = {t}.version + 1,"
    " expires = excluded.expires WHERE {t}.expires <= ? RETURNING version",
    "replace": "UPDATE {t} SET data = ?, version = version + 1, expires = ?"
    " WHERE key = ? AND version = ? AND expires > ? RETURNING version",
    "touch": "UPDATE {t} SET expires = ? WHERE key = ? AND expires > ?",
    "delete": "DELETE FROM {t} WHERE key = ?",
    "index_add": "INSERT INTO {t}_users (user_id, key, expires) VALUES (?, ?, ?)"
    " ON CONFLICT (user_id, key) DO UPDATE SET expires = excluded.expires",
    "index_prune": "DELETE FROM {t}_users WHERE user_id = ? AND key <> ? AND expires <= ?",
    "index_remove": "DELETE FROM {t}_users WHERE user_id = ? AND key = ?",
    "index_members": "SELECT key FROM {t}_users WHERE user_id = ? AND expires > ?",
    # Batches: the ids (or [id, data, version, expires] rows) as one JSON array parameter.
    "get_many": "SELECT key, data, version FROM {t} WHERE key IN (SELECT value FROM json_each(?))"
    " AND expires > ?",
    "replace_many": "UPDATE {t} SET data = json_extract(w.value, '$[1]'),"
    " version = {t}.version + 1, expires = json_extract(w.value, '$[3]') FROM json_each(?) AS w"
    " WHERE {t}.key = json_extract(w.value, '$[0]')"
    " AND {t}.version = json_extract(w.value, '$[2]') AND {t}.expires > ?"
    " RETURNING {t}.key, {t}.version",
    "index_remove_many": "DELETE FROM {t}_users WHERE user_id = ?"
    " AND key IN (SELECT value FROM json_each(?))",
    # Maintenance: one batch of expired rows, found through the expires index, in its order.
    "purge": "DELETE FROM {t} WHERE key IN"
    " (SELECT key FROM {t} WHERE expires <= ? ORDER BY expires LIMIT ?)",
    "purge_users": "DELETE FROM {t}_users WHERE (user_id, key) IN"
    " (SELECT user_id, key FROM {t}_users WHERE expires <= ? ORDER BY expires LIMIT ?)",
    "checkpoint": "PRAGMA wal_checkpoint(PASSIVE)",
    "check": "SELECT 1",
}
# Statements that never take the store's write lock: reads (WAL: they never wait for a writer)
# and the passive checkpoint, which blocks no writer either.
_UNLOCKED = frozenset({"get", "get_many", "index_members", "checkpoint", "check"})
# A URL scheme (two letters at least, so C:/ stays a path), or sqlite: however many slashes.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://|sqlite:", re.IGNORECASE)


class _Worker:
    """One thread and the connection only it uses (opened on its first call)."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class SQLiteSessionStore(UserSessionsMixin):
    """Records in ``table`` of the SQLite file at ``path``, the user index in ``{table}_users``.

    One worker thread owns the store's connection, so calls never block the event loop and the
    store serves any event loop (successive test clients, threads). The file is in WAL mode and
    a call waits up to ``busy_timeout`` seconds (5 by default) for a lock another connection
    holds, then fails with a ``StoreError``, so several processes (uvicorn workers) can share
    one file. A record's TTL (garbage collection: the middleware's clock decides when a session
    expires) runs on the wall clock. ``clear_expired`` runs on a second thread and connection
    of its own, so requests never queue behind it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "sessions",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
        hash_keys: bool = True,
    ) -> None:
        _check_path(path)
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(
                f"table name {table!r} must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )
        self.path = os.fspath(path)
        self.table = table
        self.hash_keys = hash_keys
        # The table name is a checked identifier: the only text ever formatted into SQL.
        self._sql = {name: sql.format(t=table) for name, sql in _SQL.items()}
        self._busy_timeout = positive("busy_timeout", busy_timeout)
        self._clock = deprecated_clock("SQLiteSessionStore", clock)
        self.legacy_clock = clock
        """The clock given the first version's way, if one was; the middleware's otherwise."""
        self._requests = _Worker("sessionware-sqlite")
        # An in-memory database exists only on its one connection: maintenance shares it.
        in_memory = self.path in ("", ":memory:")
        self._maintenance = self._requests if in_memory else _Worker("sessionware-sqlite-clear")
        self._writing = threading.Lock()
        self._sweeping = threading.Lock()  # an in-memory database's sweep lock
        self._closed = False

    async def _run(
        self, op: str, *steps: tuple[str, tuple[Any, ...]], worker: _Worker | None = None
    ) -> tuple[list[Any], int]:
        """Run the named statements on a worker's thread (by default the requests' one),
        several in one ``BEGIN IMMEDIATE`` transaction; the last one's rows and the rows changed
        in all. Driver errors: StoreError."""
        if self._closed:
            raise StoreError(f"SQLite store failed to {op}: the store is closed")
        chosen = worker or self._requests
        with boundary(f"SQLite store failed to {op}", self.path or ":memory:"):
            return await asyncio.get_running_loop().run_in_executor(
                chosen.executor, self._call, chosen, steps
            )

    async def check(self) -> None:
        """Open the file (making the tables on first use) and run ``SELECT 1``: a ``StoreError``
        naming the file and the cause when that fails."""
        await self._run("check the database", ("check", ()))

    def _call(
        self, worker: _Worker, steps: tuple[tuple[str, tuple[Any, ...]], ...]
    ) -> tuple[list[Any], int]:
        if worker.conn is None:
            worker.conn = self._connect()
        if all(name in _UNLOCKED for name, _ in steps):
            return self._execute(worker.conn, steps)
        # This store's writers (requests and maintenance) take turns on this lock, woken as
        # soon as it is free, rather than in SQLite's busy handler, which sleeps ever longer
        # (up to 100 ms a try) and so can miss every gap between maintenance batches.
        with self._writing:
            return self._execute(worker.conn, steps)

    def _execute(
        self, conn: sqlite3.Connection, steps: tuple[tuple[str, tuple[Any, ...]], ...]
    ) -> tuple[list[Any], int]:
        rows: list[Any] = []
        changed = 0
        if len(steps) > 1:
            conn.execute("BEGIN IMMEDIATE")
        try:
            for name, args in steps:
                cursor = conn.execute(self._sql[name], args)
                rows = cursor.fetchall()  # steps the statement to its end: a lone write commits
                changed += max(cursor.rowcount, 0)
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return rows, changed

    def _connect(self) -> sqlite3.Connection:
        deadline = time.monotonic() + self._busy_timeout
        while True:  # switching to WAL may say "locked" at once while another process sets up
            try:
                return self._set_up()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _set_up(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
            conn.execute("BEGIN IMMEDIATE")  # one process at a time creates or migrates
            conn.execute(self._sql["create"])
            if "version" not in {row[1] for row in conn.execute(self._sql["columns"])}:
                conn.execute(self._sql["add_version"])
                conn.execute(self._sql["drop_tombstones"])
            for name in ("expiry", "users", "users_expiry"):
                conn.execute(self._sql[name])
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    async def get(self, id: str) -> Record | None:
        rows, _ = await self._run("get", ("get", (id, self._clock())))
        return Record(rows[0][0].encode(), rows[0][1]) if rows else None

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        # A TEXT column: non-UTF-8 bytes (never the repository's) are kept unreadable, as U+FFFD.
        now, text = self._clock(), data.decode("utf-8", "replace")
        expires = now + ttl.total_seconds()
        step: tuple[str, tuple[Any, ...]]
        if expect is ABSENT:
            step = ("create_record", (id, text, expires, now))
        else:
            step = ("replace", (text, expires, id, expect, now))
        rows, _ = await self._run("put", step)
        return int(rows[0][0]) if rows else None

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        rows, _ = await self._run("get", ("get_many", (json.dumps(list(ids)), self._clock())))
        found = {key: Record(data.encode(), version) for key, data, version in rows}
        return [found.get(id) for id in ids]

    async def replace_many(self, writes: Sequence[Replace]) -> list[Version | None]:
        now = self._clock()
        rows = json.dumps(
            [
                [w.id, w.data.decode("utf-8", "replace"), w.expect, now + w.ttl.total_seconds()]
                for w in writes
            ]
        )
        written, _ = await self._run("put", ("replace_many", (rows, now)))
        versions = {key: int(version) for key, version in written}
        return [versions.get(w.id) for w in writes]

    async def touch(self, id: str, ttl: timedelta) -> bool:
        now = self._clock()
        _, changed = await self._run("touch", ("touch", (now + ttl.total_seconds(), id, now)))
        return changed > 0

    async def delete(self, id: str) -> None:
        await self._run("delete", ("delete", (id,)))

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        now = self._clock()
        add = ("index_add", (user, id, now + ttl.total_seconds()))
        await self._run("add to the user index", add, ("index_prune", (user, id, now)))

    async def index_remove(self, user: str, id: str) -> None:
        await self._run("remove from the user index", ("index_remove", (user, id)))

    async def index_members(self, user: str) -> list[str]:
        rows, _ = await self._run("list the user index", ("index_members", (user, self._clock())))
        return [row[0] for row in rows]

    async def index_remove_many(self, user: str, ids: Sequence[str]) -> None:
        step = ("index_remove_many", (user, json.dumps(list(ids))))
        await self._run("remove from the user index", step)

    async def clear_expired(
        self, *, batch_size: int = DEFAULT_BATCH, on_batch: ProgressHook | None = None
    ) -> int:
        """Delete expired records and index entries; return how many rows went.

        In transactions of at most ``batch_size`` rows, on a thread and connection of their own:
        requests keep reading (WAL) and write between batches. ``on_batch(deleted_so_far)``
        is called after each one."""
        now = self._clock()

        async def delete(name: str, limit: int) -> int:
            step = (name, (now, limit))
            deleted = (await self._run("clear expired rows", step, worker=self._maintenance))[1]
            await self._run("clear expired rows", ("checkpoint", ()), worker=self._maintenance)
            return deleted

        return await delete_in_batches(delete, ("purge", "purge_users"), batch_size, on_batch)

    @asynccontextmanager
    async def sweep_lock(self) -> AsyncIterator[bool]:
        """Whether this process may sweep the table now: an exclusive lock on the file
        ``<path>-<table>.sweep`` beside the database, held until the block ends, so one sweeper
        at a time works on a database across processes; ``False`` at once while another holds
        it (the OS drops it with the process). An in-memory database has one store to lock."""
        if self._maintenance is self._requests:  # in memory: nothing outside this store
            held = self._sweeping.acquire(blocking=False)
            try:
                yield held
            finally:
                if held:
                    self._sweeping.release()
            return
        where = f"{self.path}-{self.table}.sweep"
        with boundary("SQLite store failed to take the sweep lock", where):
            fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                yield _try_lock(fd)
            finally:
                os.close(fd)  # closing drops the lock

    async def aclose(self) -> None:
        """Close the connections and stop the worker threads; later calls fail."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for worker in dict.fromkeys((self._maintenance, self._requests)):
            try:
                await loop.run_in_executor(worker.executor, worker.close)
            finally:
                worker.executor.shutdown(wait=False)


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` if no one holds it; whether it did."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _check_path(path: str | os.PathLike[str]) -> None:
    """A URL where a file path belongs fails here, saying which path to give instead."""
    text = os.fspath(path)
    if not _URL.match(text):
        return
    hint = "SQLiteSessionStore('sessions.db') or an absolute path"
    if text.lower().startswith("sqlite:"):  # sqlite:///relative.db, sqlite:////absolute.db
        rest = text[len("sqlite:") :]
        rest = rest[2:] if rest.startswith("//") else rest
        hint = f"SQLiteSessionStore({(rest[1:] if rest.startswith('/') else rest)!r})"
    raise ValueError(
        f"SQLiteSessionStore takes the path of the database file, not a URL: got {text!r};"
        f" write {hint}"
    )
