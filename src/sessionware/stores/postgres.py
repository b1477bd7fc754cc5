"""PostgresSessionStore: versioned records in a PostgreSQL table, through asyncpg.

Tables, made by the first call under an advisory transaction lock (so two processes never race
on the DDL); when both are there and migrated, no DDL runs, so the app's role needs none::

    CREATE TABLE IF NOT EXISTS sessionware_sessions (key TEXT PRIMARY KEY, data TEXT NOT NULL,
        version BIGINT NOT NULL DEFAULT 1, expires TIMESTAMPTZ NOT NULL);
    CREATE INDEX IF NOT EXISTS sessionware_sessions_expires ON sessionware_sessions (expires);
    CREATE TABLE IF NOT EXISTS sessionware_sessions_users (user_id TEXT NOT NULL,
        key TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL, PRIMARY KEY (user_id, key));
    CREATE INDEX IF NOT EXISTS sessionware_sessions_users_expires
        ON sessionware_sessions_users (expires);

A first-version table (no ``version`` column) is migrated in the same transaction:
``ALTER TABLE ... ADD COLUMN version BIGINT NOT NULL DEFAULT 1``, then
``DELETE FROM ... WHERE data IS NULL`` (its tombstones). Its ``successor`` and ``user_id``
columns stay, unused; its rows keep their clear keys as ids.

One statement per operation; ``now`` is the database's ``clock_timestamp()``, so every app
server agrees on expiry::

    get           SELECT data, version FROM t WHERE key = $1 AND expires > now
    put(ABSENT)   INSERT INTO t AS s VALUES ($1, $2, 1, now + $3) ON CONFLICT (key) DO UPDATE
                  SET data, version = s.version + 1, expires WHERE s.expires <= now
                  RETURNING s.version
    put(v)        UPDATE t SET data = $2, version = version + 1, expires = now + $3
                  WHERE key = $1 AND version = $4 AND expires > now RETURNING version
    touch         UPDATE t SET expires = now + $2 WHERE key = $1 AND expires > now
    delete        DELETE FROM t WHERE key = $1
    index_add     WITH stale AS (DELETE FROM t_users WHERE user_id = $1 AND key <> $2
                  AND expires <= now, rows another transaction holds skipped)
                  INSERT INTO t_users ... ON CONFLICT DO UPDATE SET expires
    index_remove  DELETE FROM t_users WHERE user_id = $1 AND key = $2
    index_members SELECT key FROM t_users WHERE user_id = $1 AND expires > now
    get_many      SELECT key, data, version FROM t WHERE key = ANY($1) AND expires > now
    replace_many  UPDATE t SET ... FROM unnest($1 keys, $2 data, $3 versions, $4 ttls) AS w
                  WHERE key = w.key AND version = w.expect AND expires > now RETURNING key, version
    index_remove_many  DELETE FROM t_users WHERE user_id = $1 AND key = ANY($2)
    clear_expired DELETE FROM t WHERE ctid = ANY(ARRAY(SELECT ctid FROM t WHERE expires <= $1
                  ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)) AND expires <= $1, with $1
                  the time the clear began, batch after batch (then t_users alike)
    sweep_lock    SELECT pg_try_advisory_lock(class, hashtext(t)), held while the sweep runs
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from sessionware.stores._connections import PerLoop, address, boundary, positive
from sessionware.stores._maintenance import DEFAULT_BATCH, ProgressHook, delete_in_batches
from sessionware.stores._urls import check_scheme
from sessionware.stores.base import (
    ABSENT,
    Absent,
    Record,
    Replace,
    StoreError,
    UserSessionsMixin,
    Version,
)

__all__ = ["PostgresSessionStore"]

# A table's own name leaves room for "_users" within PostgreSQL's 63-character identifiers.
_TABLE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]{0,62}\.)?([A-Za-z_][A-Za-z0-9_]{0,56})")

_SWEEP_CLASS = 0x5357
"""The first key of the sweeper's two-key advisory lock (the second is the table's hash)."""

_SQL = {  # {now} is clock_timestamp(): the time now, even inside a transaction
    "create": "CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, data TEXT NOT NULL,"
    " version BIGINT NOT NULL DEFAULT 1, expires TIMESTAMPTZ NOT NULL)",
    "has_version": "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('{t}')"
    " AND attname = 'version' AND NOT attisdropped)",
    "ready": "SELECT to_regclass('{t}_users') IS NOT NULL AND EXISTS (SELECT FROM pg_attribute"
    " WHERE attrelid = to_regclass('{t}') AND attname = 'version' AND NOT attisdropped)",
    "add_version": "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 1",
    "drop_tombstones": "DELETE FROM {t} WHERE data IS NULL",
    "expiry": "CREATE INDEX IF NOT EXISTS {i}_expires ON {t} (expires)",
    "users": "CREATE TABLE IF NOT EXISTS {t}_users (user_id TEXT NOT NULL, key TEXT NOT NULL,"
    " expires TIMESTAMPTZ NOT NULL, PRIMARY KEY (user_id, key))",
    "users_expiry": "CREATE INDEX IF NOT EXISTS {u}_users_expires ON {t}_users (expires)",
    "get": "SELECT data, version FROM {t} WHERE key = $1 AND expires > {now}",
    "create_record": "INSERT INTO {t} AS s (key, data, version, expires)"  # v1 has more columns
    " VALUES ($1, $2, 1, {now} + $3::interval) ON CONFLICT (key) DO UPDATE SET"
    " data = excluded.data, version = s.version + 1, expires = excluded.expires"
    " WHERE s.expires <= {now} RETURNING s.version",
    "replace": "UPDATE {t} SET data = $2, version = version + 1, expires = {now} + $3::interval"
    " WHERE key = $1 AND version = $4 AND expires > {now} RETURNING version",
    "touch": "UPDATE {t} SET expires = {now} + $2::interval WHERE key = $1 AND expires > {now}",
    "delete": "DELETE FROM {t} WHERE key = $1",
    # The prune skips rows another transaction holds, so two adds never wait on each other.
    "index_add": "WITH stale AS (DELETE FROM {t}_users WHERE (user_id, key) IN (SELECT user_id,"
    " key FROM {t}_users WHERE user_id = $1 AND key <> $2 AND expires <= {now}"
    " FOR UPDATE SKIP LOCKED)) INSERT INTO {t}_users (user_id, key, expires)"
    " VALUES ($1, $2, {now} + $3::interval)"
    " ON CONFLICT (user_id, key) DO UPDATE SET expires = excluded.expires",
    "index_remove": "DELETE FROM {t}_users WHERE user_id = $1 AND key = $2",
    "index_members": "SELECT key FROM {t}_users WHERE user_id = $1 AND expires > {now}",
    "get_many": "SELECT key, data, version FROM {t} WHERE key = ANY($1::text[])"
    " AND expires > {now}",
    "replace_many": "UPDATE {t} AS s SET data = w.data, version = s.version + 1,"
    " expires = {now} + w.ttl FROM unnest($1::text[], $2::text[], $3::bigint[],"
    " $4::interval[]) AS w(key, data, expect, ttl) WHERE s.key = w.key"
    " AND s.version = w.expect AND s.expires > {now} RETURNING s.key, s.version",
    "index_remove_many": "DELETE FROM {t}_users WHERE user_id = $1 AND key = ANY($2::text[])",
    # Maintenance: one batch of rows expired at $1 (a parameter: clock_timestamp() is volatile,
    # so the planner could not use the expires index), found through that index in its order;
    # rows a request holds are skipped, so the batch never waits for one.
    "now": "SELECT {now}",
    "purge": "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE expires <= $1"
    " ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)) AND expires <= $1",
    "purge_users": "DELETE FROM {t}_users WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t}_users"
    " WHERE expires <= $1 ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)) AND expires <= $1",
    # The sweeper's lock: a session advisory lock keyed (class, table), apart from the DDL's.
    "sweep_lock": f"SELECT pg_try_advisory_lock({_SWEEP_CLASS}, hashtext($1))",
    "sweep_unlock": f"SELECT pg_advisory_unlock({_SWEEP_CLASS}, hashtext($1))",
}


def _asyncpg() -> Any:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "PostgresSessionStore needs asyncpg: pip install 'sessionware[postgres]'"
        ) from exc
    return asyncpg


class PostgresSessionStore(UserSessionsMixin):
    """Records in ``table`` (``name`` or ``schema.name``), the user index in ``{table}_users``.

    ``PostgresSessionStore(pool)`` uses an asyncpg pool you own (it works only in the event loop
    that made it: from another loop every call is a ``StoreError`` saying so). ``from_dsn``
    builds a store that opens a pool per event loop on first use (so it can be made outside a
    loop, and serves successive test clients and threads alike); each closes with its loop, or
    in ``aclose``. Each operation gives up after ``command_timeout`` seconds (5 by default),
    waiting for a connection or a row another transaction holds included: a ``StoreError``.
    """

    def __init__(
        self,
        pool: Any,
        *,
        table: str = "sessionware_sessions",
        hash_keys: bool = True,
        command_timeout: float = 5.0,
    ) -> None:
        match = _TABLE.fullmatch(table)
        if match is None:
            raise ValueError(
                f"table name {table!r} must be an SQL identifier, optionally schema-qualified"
                " ([A-Za-z_][A-Za-z0-9_]*, at most 57 characters, 63 for the schema)"
            )
        self.table = table
        self.hash_keys = hash_keys
        self.command_timeout = positive("command_timeout", command_timeout)
        name = match.group(1)
        # The table name is a checked identifier: the only text ever formatted into SQL.
        names = {"t": table, "i": name[:54], "u": name[:48], "now": "clock_timestamp()"}
        self._sql = {key: sql.format(**names) for key, sql in _SQL.items()}
        self._pools: PerLoop[Any] = PerLoop.fixed(pool)
        self._where = "the pool passed in"
        self._ready = False
        self._closed = False
        self._pinned: ContextVar[Any] = ContextVar(f"pinned:{id(self)}", default=None)

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        table: str = "sessionware_sessions",
        connect_timeout: float = 10.0,
        hash_keys: bool = True,
        command_timeout: float = 5.0,
        **pool_options: Any,
    ) -> PostgresSessionStore:
        """A store with its own pools (``asyncpg.create_pool(dsn, ...)``, one per event loop),
        each opened on first use.

        ``dsn`` is ``postgresql://`` (or ``postgres://``); another scheme raises ``ValueError``."""
        check_scheme(
            "PostgresSessionStore.from_dsn",
            dsn,
            ("postgresql", "postgres"),
            "postgresql://user:password@host:5432/database",
            noun="DSN",
        )
        asyncpg = _asyncpg()
        store = cls(None, table=table, hash_keys=hash_keys, command_timeout=command_timeout)
        options: dict[str, Any] = {"dsn": dsn, "timeout": connect_timeout, "min_size": 1}
        options.update(pool_options)

        async def open() -> Any:
            return await asyncpg.create_pool(**options)

        store._pools = PerLoop(open, _close)
        store._where = address(dsn)
        return store

    @asynccontextmanager
    async def _connection(self, op: str, *, tables: bool = True) -> AsyncIterator[Any]:
        """A pooled connection (tables made on first use), or the one ``pinned()`` holds;
        every failure becomes StoreError."""
        if self._closed:
            raise StoreError(f"PostgreSQL store failed to {op}: the store is closed")
        timeout = self.command_timeout
        with boundary(f"PostgreSQL store failed to {op}", self._where, timeout=timeout):
            pinned = self._pinned.get()
            if pinned is not None:
                yield pinned
                return
            pool = await self._pool(tables)
            async with pool.acquire(timeout=timeout) as conn:
                yield conn

    async def _pool(self, tables: bool = True) -> Any:
        """This loop's pool, the tables made on first use."""
        pool = await self._pools.get()
        if tables and not self._ready:
            async with self._pools.lock():
                if not self._ready:
                    await self._create_tables(pool)
                    self._ready = True
        return pool

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[None]:
        """The calls inside (in this task) share one pooled connection: an admin call over
        many sessions pays for one acquire and one reset, not one per statement."""
        if self._pinned.get() is not None or self._closed:
            yield
            return
        timeout = self.command_timeout
        with boundary("PostgreSQL store failed to take a connection", self._where, timeout=timeout):
            pool = await self._pool()
            conn = await pool.acquire(timeout=timeout)
        token = self._pinned.set(conn)
        try:
            yield
        finally:
            self._pinned.reset(token)
            with boundary("PostgreSQL store failed to release a connection", self._where):
                await pool.release(conn, timeout=timeout)

    async def check(self) -> None:
        """One ``SELECT 1``: a ``StoreError`` naming the server and the cause when it fails."""
        async with self._connection("check the connection", tables=False) as conn:
            await conn.fetchval("SELECT 1", timeout=self.command_timeout)

    async def _create_tables(self, pool: Any) -> None:
        timeout = self.command_timeout
        async with pool.acquire(timeout=timeout) as conn:
            if await conn.fetchval(self._sql["ready"], timeout=timeout):  # no DDL: none allowed
                return
            async with conn.transaction():
                # Serialise the DDL: concurrent CREATE ... IF NOT EXISTS can still collide.
                lock = "SELECT pg_advisory_xact_lock(hashtext($1))"
                await conn.execute(lock, self.table, timeout=timeout)
                await conn.execute(self._sql["create"], timeout=timeout)
                if not await conn.fetchval(self._sql["has_version"], timeout=timeout):  # v1
                    await conn.execute(self._sql["add_version"], timeout=timeout)
                    await conn.execute(self._sql["drop_tombstones"], timeout=timeout)
                for name in ("expiry", "users", "users_expiry"):
                    await conn.execute(self._sql[name], timeout=timeout)

    async def _query(self, op: str, method: str, name: str, *args: Any) -> Any:
        """``conn.<method>(<statement name>, *args)`` on a pooled connection."""
        async with self._connection(op) as conn:
            return await getattr(conn, method)(self._sql[name], *args, timeout=self.command_timeout)

    async def _execute(self, op: str, name: str, *args: Any) -> int:
        """Run a statement; how many rows it touched."""
        status: str = await self._query(op, "execute", name, *args)
        return int(status.split()[-1])

    async def get(self, id: str) -> Record | None:
        row = await self._query("get", "fetchrow", "get", id)
        return None if row is None else Record(row["data"].encode(), row["version"])

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        # A TEXT column: non-UTF-8 bytes (never the repository's) are kept unreadable, as U+FFFD.
        text = data.decode("utf-8", "replace")
        if expect is ABSENT:
            args: tuple[Any, ...] = ("create_record", id, text, ttl)
        else:
            args = ("replace", id, text, ttl, expect)
        version = await self._query("put", "fetchval", *args)
        return None if version is None else int(version)

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        rows = await self._query("get", "fetch", "get_many", list(ids))
        found = {row["key"]: Record(row["data"].encode(), row["version"]) for row in rows}
        return [found.get(id) for id in ids]

    async def replace_many(self, writes: Sequence[Replace]) -> list[Version | None]:
        columns = (
            [w.id for w in writes],
            [w.data.decode("utf-8", "replace") for w in writes],
            [w.expect for w in writes],
            [w.ttl for w in writes],
        )
        rows = await self._query("put", "fetch", "replace_many", *columns)
        written = {row["key"]: int(row["version"]) for row in rows}
        return [written.get(w.id) for w in writes]

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return await self._execute("touch", "touch", id, ttl) > 0

    async def delete(self, id: str) -> None:
        await self._execute("delete", "delete", id)

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self._execute("add to the user index", "index_add", user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self._execute("remove from the user index", "index_remove", user, id)

    async def index_members(self, user: str) -> list[str]:
        rows = await self._query("list the user index", "fetch", "index_members", user)
        return [row["key"] for row in rows]

    async def index_remove_many(self, user: str, ids: Sequence[str]) -> None:
        await self._execute("remove from the user index", "index_remove_many", user, list(ids))

    async def clear_expired(
        self, *, batch_size: int = DEFAULT_BATCH, on_batch: ProgressHook | None = None
    ) -> int:
        """Delete expired records and index entries; return how many rows went.

        In statements of at most ``batch_size`` rows through the expires index, each on a pooled
        connection taken for that statement alone, so requests waiting for a connection get
        one between batches. ``on_batch(deleted_so_far)`` is called after each one."""
        now = await self._query("clear expired rows", "fetchval", "now")

        async def delete(name: str, limit: int) -> int:
            return await self._execute("clear expired rows", name, now, limit)

        return await delete_in_batches(delete, ("purge", "purge_users"), batch_size, on_batch)

    @asynccontextmanager
    async def sweep_lock(self) -> AsyncIterator[bool]:
        """Whether this process may sweep the table now: ``pg_try_advisory_lock`` on the table,
        held on a pooled connection until the block ends, so one sweeper at a time works on a
        database; ``False`` at once while another holds it (the server drops it with the
        connection, should this process die)."""
        async with self._connection("take the sweep lock") as conn:
            timeout = self.command_timeout
            held = bool(await conn.fetchval(self._sql["sweep_lock"], self.table, timeout=timeout))
            try:
                yield held
            finally:
                if held:
                    await conn.fetchval(self._sql["sweep_unlock"], self.table, timeout=timeout)

    async def aclose(self) -> None:
        """Close the pools this store opened (``from_dsn``; a pool you passed stays open).

        Later calls fail."""
        self._closed = True
        await self._pools.aclose()


async def _close(pool: Any) -> None:
    """Close a pool: gracefully, or at once if a connection is still busy after a while."""
    try:
        await asyncio.wait_for(pool.close(), 2.0)
    except Exception:  # busy connections, a server gone: close them at once
        pool.terminate()
