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
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sessionware.stores.base import (
    ABSENT,
    Absent,
    Record,
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
    "purge": "DELETE FROM {t} WHERE expires <= ?",
    "purge_users": "DELETE FROM {t}_users WHERE expires <= ?",
}


class SQLiteSessionStore(UserSessionsMixin):
    """Records in ``table`` of the SQLite file at ``path``, the user index in ``{table}_users``.

    One worker thread owns the store's connection, so calls never block the event loop. The file
    is in WAL mode and every connection waits up to ``busy_timeout`` seconds for a lock, so
    several processes (uvicorn workers) can share one file. A record's TTL (garbage
    collection: the middleware's clock decides when a session expires) runs on the wall clock.
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
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(
                f"table name {table!r} must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )
        self.path = os.fspath(path)
        self.table = table
        self.hash_keys = hash_keys
        # The table name is a checked identifier: the only text ever formatted into SQL.
        self._sql = {name: sql.format(t=table) for name, sql in _SQL.items()}
        self._busy_timeout = busy_timeout
        self._clock = deprecated_clock("SQLiteSessionStore", clock)
        self.legacy_clock = clock
        """The clock given the first version's way, if one was; the middleware's otherwise."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sessionware-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, op: str, *steps: tuple[str, tuple[Any, ...]]) -> tuple[list[Any], int]:
        """Run the named statements on the worker thread, several in one ``BEGIN IMMEDIATE``
        transaction; the last one's rows and the rows changed in all. Driver errors: StoreError."""
        if self._closed:
            raise StoreError(f"SQLite store failed to {op}: the store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._call, steps
            )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store failed to {op}: {exc}") from exc

    def _call(self, steps: tuple[tuple[str, tuple[Any, ...]], ...]) -> tuple[list[Any], int]:
        if self._conn is None:
            self._conn = self._connect()
        conn, rows, changed = self._conn, [], 0
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

    async def clear_expired(self) -> int:
        """Delete expired records and index entries; return how many rows went."""
        now = self._clock()
        _, changed = await self._run(
            "clear expired rows", ("purge", (now,)), ("purge_users", (now,))
        )
        return changed

    async def aclose(self) -> None:
        """Close the connection and stop the worker thread; later calls fail."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)
