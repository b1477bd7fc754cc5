"""SQLiteSessionStore: sessions in one SQLite file, shared safely by several worker processes.

Table (created if missing)::

    CREATE TABLE IF NOT EXISTS sessions (
        key       TEXT PRIMARY KEY,
        data      TEXT,            -- the v1 envelope; NULL marks a tombstone
        successor TEXT,            -- a tombstone's renewed key (NULL: purged)
        expires   REAL NOT NULL,   -- Unix seconds
        user_id   TEXT             -- the bound user (StoredState.user); NULL in tombstones
    );
    CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
    CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id) WHERE user_id IS NOT NULL;

A table made before ``user_id`` existed gets the column (``ALTER TABLE ... ADD COLUMN``) on
connecting. Every statement that writes ``data`` writes ``user_id`` with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from sessionware.state import DeserializationError, StoredState, decode_state, encode_state
from sessionware.stores.base import (
    TOMBSTONE_TTL,
    Changes,
    LoadError,
    SaveError,
    SessionInfo,
    SessionKey,
    UpdateError,
    generate_session_key,
    merge,
    oldest_first,
    read_record,
    user_of,
    write_record,
)

__all__ = ["SQLiteSessionStore"]

_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_HOPS = 16
"""How many renewals ``update`` (and a purge) follows from a tombstone to its live successor."""

_SQL = {
    "create": "CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, data TEXT,"
    " successor TEXT, expires REAL NOT NULL, user_id TEXT)",
    "columns": "PRAGMA table_info({t})",
    "add_user": "ALTER TABLE {t} ADD COLUMN user_id TEXT",
    "index": "CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)",
    "user_index": "CREATE INDEX IF NOT EXISTS {t}_user ON {t} (user_id) WHERE user_id IS NOT NULL",
    "load": "SELECT data FROM {t} WHERE key = ? AND expires > ?",
    "insert": "INSERT INTO {t} (key, data, successor, expires, user_id)"
    " VALUES (?, ?, NULL, ?, ?) ON CONFLICT (key) DO NOTHING",
    "lock": "SELECT data, successor FROM {t} WHERE key = ? AND expires > ?",
    "write": "UPDATE {t} SET data = ?, expires = ?, user_id = ? WHERE key = ?",
    "touch": "UPDATE {t} SET expires = ? WHERE key = ? AND data IS NOT NULL AND expires > ?",
    "tombstone": "INSERT INTO {t} (key, data, successor, expires) VALUES (?, NULL, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET data = NULL, successor = excluded.successor,"
    " expires = excluded.expires, user_id = NULL",
    "of_user": "SELECT key, data, expires FROM {t}"
    " WHERE user_id = ? AND data IS NOT NULL AND expires > ?",
    "end_user": "UPDATE {t} SET data = NULL, successor = NULL, user_id = NULL, expires = ?"
    " WHERE user_id = ? AND data IS NOT NULL AND expires > ? AND key IS NOT ?",
    "purge": "DELETE FROM {t} WHERE expires <= ?",
}


class SQLiteSessionStore:
    """Sessions in the SQLite file at ``path``, in ``table``.

    One worker thread owns the store's connection, so calls never block the event loop. The file
    is in WAL mode; ``update`` and ``delete`` run in ``BEGIN IMMEDIATE`` transactions and every
    connection waits up to ``busy_timeout`` seconds for a lock, so several processes (uvicorn
    workers) can share one file without losing each other's changes. Expiry is wall-clock time
    from ``clock``.
    """

    holds_state_in_key: ClassVar[bool] = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "sessions",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(
                f"table name {table!r} must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )
        self.path = os.fspath(path)
        self.table = table
        # The table name is a checked identifier: the only text ever formatted into SQL.
        self._sql = {name: sql.format(t=table) for name, sql in _SQL.items()}
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sessionware-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # -- the worker thread -------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise sqlite3.ProgrammingError("the session store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
            conn.execute("BEGIN IMMEDIATE")  # one process at a time adds the column
            conn.execute(self._sql["create"])
            if "user_id" not in {row[1] for row in conn.execute(self._sql["columns"])}:
                conn.execute(self._sql["add_user"])
            conn.execute(self._sql["index"])
            conn.execute(self._sql["user_index"])
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _insert(
        self, conn: sqlite3.Connection, text: str, expires: float, user: str | None
    ) -> SessionKey:
        while True:
            key = generate_session_key()
            cursor = conn.execute(self._sql["insert"], (key, text, expires, user))
            if cursor.rowcount == 1:
                return key

    async def _run_locked(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in a ``BEGIN IMMEDIATE`` transaction: no other writer until it ends."""

        def locked(conn: sqlite3.Connection) -> _T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return await self._run(locked)

    def _merge(
        self,
        conn: sqlite3.Connection,
        key: str,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None,
    ) -> SessionKey | None:
        now = self._clock()
        expires = now + ttl.total_seconds()
        for _ in range(_MAX_HOPS):
            row = conn.execute(self._sql["lock"], (key, now)).fetchone()
            if row is None:
                return self._insert(conn, encode_state(state), expires, user_of(state))
            data, successor = row
            if data is None:
                if successor is None:
                    return None
                key = successor
                continue
            current = decode_state(data)
            merged = merge(state, changes, current)
            text = encode_state(merged)
            conn.execute(self._sql["write"], (text, expires, merged.user, key))
            return SessionKey(key)
        return None

    def _bury(self, conn: sqlite3.Connection, key: str, successor: str | None) -> None:
        now = self._clock()
        for _ in range(_MAX_HOPS):
            row = conn.execute(self._sql["lock"], (key, now)).fetchone()
            if row is None or row[0] is not None:
                expires = now + TOMBSTONE_TTL.total_seconds()
                conn.execute(self._sql["tombstone"], (key, successor, expires))
                return
            # Ended already, and the tombstone stays: a renewal loses to the first one, a purge
            # goes after the renewed key's successor.
            if successor is not None or row[1] is None:
                return
            key = row[1]

    # -- the SessionStore protocol -----------------------------------------------------------

    async def load(self, key: SessionKey) -> StoredState | None:
        now = self._clock()
        sql = self._sql["load"]
        try:
            row = await self._run(lambda conn: conn.execute(sql, (key, now)).fetchone())
        except sqlite3.Error as exc:
            raise LoadError(f"SQLite session store failed to load: {exc}") from exc
        if row is None or row[0] is None:
            return None
        return read_record(row[0])

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        text = write_record(state)
        expires, user = self._clock() + ttl.total_seconds(), user_of(state)
        try:
            return await self._run(lambda conn: self._insert(conn, text, expires, user))
        except sqlite3.Error as exc:
            raise SaveError(f"SQLite session store failed to save: {exc}") from exc

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        try:
            return await self._run_locked(lambda conn: self._merge(conn, key, state, ttl, changes))
        except DeserializationError as exc:
            raise UpdateError(f"stored session state is unreadable: {exc}") from exc
        except sqlite3.Error as exc:
            raise UpdateError(f"SQLite session store failed to update: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise UpdateError(
                f"session state cannot be encoded: {exc}", serialization=True
            ) from exc

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None:
        now = self._clock()
        sql = self._sql["touch"]
        try:
            await self._run(lambda conn: conn.execute(sql, (now + ttl.total_seconds(), key, now)))
        except sqlite3.Error as exc:
            raise UpdateError(f"SQLite session store failed to extend a TTL: {exc}") from exc

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        try:
            await self._run_locked(lambda conn: self._bury(conn, key, successor))
        except sqlite3.Error as exc:
            raise UpdateError(f"SQLite session store failed to delete: {exc}") from exc

    # -- the user index ----------------------------------------------------------------------

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        now, sql = self._clock(), self._sql["of_user"]
        try:
            rows = await self._run(lambda conn: conn.execute(sql, (user_id, now)).fetchall())
        except sqlite3.Error as exc:
            raise LoadError(f"SQLite session store failed to list sessions: {exc}") from exc
        return _infos(rows)

    async def delete_all_for(self, user_id: str, except_key: SessionKey | None = None) -> int:
        now, sql = self._clock(), self._sql["end_user"]
        args = (now + TOMBSTONE_TTL.total_seconds(), user_id, now, except_key)
        try:
            return await self._run(lambda conn: conn.execute(sql, args).rowcount)
        except sqlite3.Error as exc:
            raise UpdateError(f"SQLite session store failed to end sessions: {exc}") from exc

    # -- maintenance -------------------------------------------------------------------------

    async def clear_expired(self) -> int:
        """Delete expired sessions and tombstones; return how many rows went."""
        now = self._clock()
        sql = self._sql["purge"]
        return await self._run(lambda conn: conn.execute(sql, (now,)).rowcount)

    async def aclose(self) -> None:
        """Close the connection and stop the worker thread; later calls fail."""
        if self._closed:
            return
        self._closed = True

        def close(_: object) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close, None)
        finally:
            self._executor.shutdown(wait=False)


def _infos(rows: list[tuple[str, str, float]]) -> list[SessionInfo]:
    """``SessionInfo`` for live rows (key, data, expires), oldest first."""
    infos = []
    for key, data, expires in rows:
        try:
            state = decode_state(data)
        except DeserializationError:
            state = StoredState()
        infos.append(SessionInfo(SessionKey(key), state.created, state.seen, expires, state.agent))
    return oldest_first(infos)
