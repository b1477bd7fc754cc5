"""PostgresSessionStore: sessions in a PostgreSQL table, through asyncpg.

Table (created if missing, by the first call)::

    CREATE TABLE IF NOT EXISTS sessionware_sessions (
        key       TEXT PRIMARY KEY,
        data      TEXT,                 -- the v1 envelope; NULL marks a tombstone
        successor TEXT,                 -- a tombstone's renewed key (NULL: purged)
        expires   TIMESTAMPTZ NOT NULL,
        user_id   TEXT                  -- the bound user (StoredState.user); NULL in tombstones
    );
    CREATE INDEX IF NOT EXISTS sessionware_sessions_expires ON sessionware_sessions (expires);
    CREATE INDEX IF NOT EXISTS sessionware_sessions_user ON sessionware_sessions (user_id)
        WHERE user_id IS NOT NULL;

A table made before ``user_id`` existed gets it (``ADD COLUMN IF NOT EXISTS``). Every statement
that writes ``data`` writes ``user_id`` with it.

Expiry is the database's clock (``clock_timestamp()``), so every app server agrees on it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, ClassVar

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

__all__ = ["PostgresSessionStore"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_TABLE = re.compile(rf"(?:{_NAME}\.)?({_NAME})")
_MAX_HOPS = 16
"""How many renewals ``update`` (and a purge) follows from a tombstone to its live successor."""

_SQL = {
    "create": "CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, data TEXT,"
    " successor TEXT, expires TIMESTAMPTZ NOT NULL, user_id TEXT)",
    "has_user": "SELECT true FROM pg_attribute WHERE attrelid = '{t}'::regclass"
    " AND attname = 'user_id' AND NOT attisdropped",
    "add_user": "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS user_id TEXT",
    "index": "CREATE INDEX IF NOT EXISTS {i}_expires ON {t} (expires)",
    "user_index": "CREATE INDEX IF NOT EXISTS {i}_user ON {t} (user_id) WHERE user_id IS NOT NULL",
    "load": "SELECT data FROM {t} WHERE key = $1 AND expires > clock_timestamp()",
    "insert": "INSERT INTO {t} (key, data, expires, user_id)"
    " VALUES ($1, $2, clock_timestamp() + $3::interval, $4)"
    " ON CONFLICT (key) DO NOTHING RETURNING true",
    "lock": "SELECT data, successor FROM {t}"
    " WHERE key = $1 AND expires > clock_timestamp() FOR UPDATE",
    "write": "UPDATE {t} SET data = $2, expires = clock_timestamp() + $3::interval, user_id = $4"
    " WHERE key = $1",
    "touch": "UPDATE {t} SET expires = clock_timestamp() + $2::interval"
    " WHERE key = $1 AND data IS NOT NULL AND expires > clock_timestamp()",
    # Never over a live tombstone, even one committed after the caller's "lock" found no row.
    "tombstone": "INSERT INTO {t} AS s (key, data, successor, expires)"
    " VALUES ($1, NULL, $2, clock_timestamp() + $3::interval)"
    " ON CONFLICT (key) DO UPDATE SET data = NULL,"
    " successor = excluded.successor, expires = excluded.expires, user_id = NULL"
    " WHERE s.data IS NOT NULL OR s.expires <= clock_timestamp() RETURNING true",
    "of_user": "SELECT key, data, expires FROM {t}"
    " WHERE user_id = $1 AND data IS NOT NULL AND expires > clock_timestamp()",
    "end_user": "UPDATE {t} SET data = NULL, successor = NULL, user_id = NULL,"
    " expires = clock_timestamp() + $3::interval WHERE user_id = $1 AND data IS NOT NULL"
    " AND expires > clock_timestamp() AND key IS DISTINCT FROM $2",
    "purge": "DELETE FROM {t} WHERE expires <= clock_timestamp()",
}

Connection = Any
"""An ``asyncpg.Connection`` (asyncpg ships no type information)."""


def _asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "PostgresSessionStore needs asyncpg: pip install 'sessionware[postgres]'"
        ) from exc
    return asyncpg


def _driver_errors() -> tuple[type[BaseException], ...]:
    asyncpg = _asyncpg()
    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


class PostgresSessionStore:
    """Sessions in ``table`` (``name`` or ``schema.name``) of a PostgreSQL database.

    ``PostgresSessionStore(pool)`` uses an asyncpg pool you own; ``from_dsn`` builds a store that
    opens its own pool on first use (so it can be made outside an event loop) and closes it in
    ``aclose``. ``update`` and ``delete`` lock the row (``SELECT ... FOR UPDATE``) so concurrent
    requests merge, and a tombstone is never replaced.
    """

    holds_state_in_key: ClassVar[bool] = False

    def __init__(self, pool: Any, *, table: str = "sessionware_sessions") -> None:
        match = _TABLE.fullmatch(table)
        if match is None:
            raise ValueError(
                f"table name {table!r} must be an SQL identifier, optionally schema-qualified"
                " ([A-Za-z_][A-Za-z0-9_]*, at most 63 characters each)"
            )
        self.table = table
        index = match.group(1)[:54]
        # The table name is a checked identifier: the only text ever formatted into SQL.
        self._sql = {name: sql.format(t=table, i=index) for name, sql in _SQL.items()}
        self._pool = pool
        self._pool_options: dict[str, Any] = {}
        self._owns_pool = False
        self._ready = False
        self._closed = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        table: str = "sessionware_sessions",
        connect_timeout: float = 10.0,
        **pool_options: Any,
    ) -> PostgresSessionStore:
        """A store with its own pool (``asyncpg.create_pool(dsn, ...)``), opened on first use."""
        _asyncpg()
        store = cls(None, table=table)
        store._pool_options = {"dsn": dsn, "timeout": connect_timeout, "min_size": 1}
        store._pool_options.update(pool_options)
        store._owns_pool = True
        return store

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._closed:
            raise _asyncpg().InterfaceError("the session store is closed")
        if not self._ready:
            async with self._lock:
                if self._pool is None:
                    self._pool = await _asyncpg().create_pool(**self._pool_options)
                if not self._ready:
                    await self._create_table()
                    self._ready = True
        async with self._pool.acquire() as conn:
            yield conn

    async def _create_table(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialise the DDL: concurrent CREATE ... IF NOT EXISTS can still collide.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            await conn.execute(self._sql["create"])
            if not await conn.fetchval(self._sql["has_user"]):  # ALTER locks even if a no-op
                await conn.execute(self._sql["add_user"])
            await conn.execute(self._sql["index"])
            await conn.execute(self._sql["user_index"])

    async def _insert(
        self, conn: Connection, text: str, ttl: timedelta, user: str | None
    ) -> SessionKey:
        while True:
            key = generate_session_key()
            if await conn.fetchval(self._sql["insert"], key, text, ttl, user):
                return key

    async def _merge(
        self,
        conn: Connection,
        key: str,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None,
    ) -> SessionKey | None:
        for _ in range(_MAX_HOPS):
            row = await conn.fetchrow(self._sql["lock"], key)
            if row is None:
                return await self._insert(conn, encode_state(state), ttl, user_of(state))
            data, successor = row["data"], row["successor"]
            if data is None:
                if successor is None:
                    return None
                key = successor
                continue
            current = decode_state(data)
            merged = merge(state, changes, current)
            text = encode_state(merged)
            await conn.execute(self._sql["write"], key, text, ttl, merged.user)
            return SessionKey(key)
        return None

    async def _bury(self, conn: Connection, key: str, successor: str | None) -> None:
        for _ in range(_MAX_HOPS):
            row = await conn.fetchrow(self._sql["lock"], key)
            if row is None or row["data"] is not None:
                if await conn.fetchval(self._sql["tombstone"], key, successor, TOMBSTONE_TTL):
                    return
                continue  # another request left a tombstone since the lock found none: read it
            # Ended already, and the tombstone stays: a renewal loses to the first one, a purge
            # goes after the renewed key's successor.
            if successor is not None or row["successor"] is None:
                return
            key = row["successor"]

    # -- the SessionStore protocol -----------------------------------------------------------

    async def load(self, key: SessionKey) -> StoredState | None:
        try:
            async with self._connection() as conn:
                data = await conn.fetchval(self._sql["load"], key)
        except _driver_errors() as exc:
            raise LoadError(f"PostgreSQL session store failed to load: {exc!r}") from exc
        if data is None:
            return None
        return read_record(data)

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        text = write_record(state)
        try:
            async with self._connection() as conn:
                return await self._insert(conn, text, ttl, user_of(state))
        except _driver_errors() as exc:
            raise SaveError(f"PostgreSQL session store failed to save: {exc!r}") from exc

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        try:
            async with self._connection() as conn, conn.transaction():
                return await self._merge(conn, key, state, ttl, changes)
        except DeserializationError as exc:
            raise UpdateError(f"stored session state is unreadable: {exc}") from exc
        except _driver_errors() as exc:
            raise UpdateError(f"PostgreSQL session store failed to update: {exc!r}") from exc
        except (TypeError, ValueError) as exc:
            raise UpdateError(
                f"session state cannot be encoded: {exc}", serialization=True
            ) from exc

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self._sql["touch"], key, ttl)
        except _driver_errors() as exc:
            raise UpdateError(f"PostgreSQL session store failed to extend a TTL: {exc!r}") from exc

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        try:
            async with self._connection() as conn, conn.transaction():
                await self._bury(conn, key, successor)
        except _driver_errors() as exc:
            raise UpdateError(f"PostgreSQL session store failed to delete: {exc!r}") from exc

    # -- the user index ----------------------------------------------------------------------

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(self._sql["of_user"], user_id)
        except _driver_errors() as exc:
            raise LoadError(f"PostgreSQL session store failed to list sessions: {exc!r}") from exc
        infos = []
        for row in rows:
            try:
                state = decode_state(row["data"])
            except DeserializationError:
                state = StoredState()
            info = (state.created, state.seen, row["expires"].timestamp(), state.agent)
            infos.append(SessionInfo(SessionKey(row["key"]), *info))
        return oldest_first(infos)

    async def delete_all_for(self, user_id: str, except_key: SessionKey | None = None) -> int:
        try:
            async with self._connection() as conn:
                status = await conn.execute(
                    self._sql["end_user"], user_id, except_key, TOMBSTONE_TTL
                )
        except _driver_errors() as exc:
            raise UpdateError(f"PostgreSQL session store failed to end sessions: {exc!r}") from exc
        return int(status.split()[-1])

    # -- maintenance -------------------------------------------------------------------------

    async def clear_expired(self) -> int:
        """Delete expired sessions and tombstones; return how many rows went."""
        async with self._connection() as conn:
            status = await conn.execute(self._sql["purge"])
        return int(status.split()[-1])

    async def aclose(self) -> None:
        """Close the pool if this store opened it (``from_dsn``; a pool you passed stays open).

        Later calls fail."""
        self._closed = True
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
