"""MySQLSessionStore: records in a MariaDB or MySQL table, through asyncmy.

Tables (created on first use, under ``GET_LOCK`` so two processes never race the DDL)::

    CREATE TABLE IF NOT EXISTS t (`key` VARCHAR(255) ascii_bin PRIMARY KEY, data LONGBLOB,
        version BIGINT, expires DATETIME(6), INDEX (expires))
    CREATE TABLE IF NOT EXISTS t_users (`user` VARCHAR(255) utf8mb4_bin, id VARCHAR(255),
        expires DATETIME(6), PRIMARY KEY (`user`, id), INDEX (expires))

Statements per operation (``now`` is the database's ``UTC_TIMESTAMP(6)``, so every app server
agrees on expiry; a version is a random 63-bit number, fresh on every write)::

    get          SELECT data, version FROM t WHERE `key` = ? AND expires > now
    put(ABSENT)  INSERT ... ON DUPLICATE KEY UPDATE (each column only if the row has expired)
    put(v)       UPDATE t SET ... WHERE `key` = ? AND version = v AND expires > now
    touch        UPDATE t SET expires = ... WHERE `key` = ? AND expires > now
    delete       DELETE FROM t WHERE `key` = ?
    index_add    INSERT INTO t_users ... ON DUPLICATE KEY UPDATE expires = ...;
                 DELETE FROM t_users WHERE `user` = ? AND expires <= now
    index_remove DELETE FROM t_users WHERE `user` = ? AND id = ?
    index_members SELECT id FROM t_users WHERE `user` = ? AND expires > now

``put(ABSENT)`` reads the affected-row count (1 inserted, 2 replaced an expired row, 0 refused),
so the connections must not set ``CLIENT.FOUND_ROWS``; the store checks it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from sessionware.stores.base import ABSENT, Absent, Record, StoreError, UserSessionsMixin, Version

__all__ = ["MySQLSessionStore"]

_TABLE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]{0,63}\.)?[A-Za-z_][A-Za-z0-9_]{0,57}")
_FOUND_ROWS = 2
"""``CLIENT.FOUND_ROWS``: with it, affected rows would count rows matched but left unchanged."""
_NOW = "UTC_TIMESTAMP(6)"
_SQL = {
    "create": "CREATE TABLE IF NOT EXISTS {t} (`key` VARCHAR(255) CHARACTER SET ascii"
    " COLLATE ascii_bin PRIMARY KEY, data LONGBLOB NOT NULL, version BIGINT NOT NULL,"
    " expires DATETIME(6) NOT NULL, INDEX {i}_expires (expires))",
    "create_users": "CREATE TABLE IF NOT EXISTS {t}_users (`user` VARCHAR(255) CHARACTER SET"
    " utf8mb4 COLLATE utf8mb4_bin NOT NULL, id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin"
    " NOT NULL, expires DATETIME(6) NOT NULL, PRIMARY KEY (`user`, id), INDEX {i}_u_exp (expires))",
    "get": "SELECT data, version FROM {t} WHERE `key` = %s AND expires > {now}",
    # Assignments run left to right: ``expires`` goes last so the others see the old one.
    "create_row": "INSERT INTO {t} (`key`, data, version, expires) VALUES (%s, %s, %s, {later})"
    " ON DUPLICATE KEY UPDATE data = IF({gone}, %s, data), version = IF({gone}, %s, version),"
    " expires = IF({gone}, {later}, expires)",
    "replace": "UPDATE {t} SET data = %s, version = %s, expires = {later}"
    " WHERE `key` = %s AND version = %s AND expires > {now}",
    "touch": "UPDATE {t} SET expires = {later} WHERE `key` = %s AND expires > {now}",
    "delete": "DELETE FROM {t} WHERE `key` = %s",
    "index_add": "INSERT INTO {t}_users (`user`, id, expires) VALUES (%s, %s, {later})"
    " ON DUPLICATE KEY UPDATE expires = {later}",
    "index_prune": "DELETE FROM {t}_users WHERE `user` = %s AND {gone}",
    "index_remove": "DELETE FROM {t}_users WHERE `user` = %s AND id = %s",
    "index_members": "SELECT id FROM {t}_users WHERE `user` = %s AND expires > {now}",
    "clear": "DELETE FROM {t} WHERE {gone}",
    "clear_users": "DELETE FROM {t}_users WHERE {gone}",
}


def _asyncmy() -> Any:
    try:
        import asyncmy
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "MySQLSessionStore needs asyncmy: pip install 'sessionware[mysql]'"
        ) from exc
    return asyncmy


def _micros(ttl: timedelta) -> int:
    return max(1, ttl // timedelta(microseconds=1))


class MySQLSessionStore(UserSessionsMixin):
    """Records in ``table`` (``name`` or ``db.name``, plus ``<table>_users`` for the user index).

    ``MySQLSessionStore(pool)`` uses an asyncmy pool you own; ``from_dsn`` opens its own pool on
    first use (so it can be built outside an event loop) and closes it in ``aclose``.
    """

    def __init__(
        self, pool: Any, *, table: str = "sessionware_sessions", hash_keys: bool = True
    ) -> None:
        if _TABLE.fullmatch(table) is None:
            raise ValueError(
                f"table name {table!r} must be an SQL identifier of at most 58 characters"
                " ([A-Za-z_][A-Za-z0-9_]*), optionally prefixed by a database name and a dot"
            )
        self.table = table
        self.hash_keys = hash_keys
        index = table.rsplit(".", 1)[-1][:48]
        words = {"t": table, "i": index, "now": _NOW, "gone": f"expires <= {_NOW}"}
        words["later"] = f"{_NOW} + INTERVAL %s MICROSECOND"
        # The table name is a checked identifier: the only text formatted into the SQL.
        self._sql = {name: sql.format(**words) for name, sql in _SQL.items()}
        self._pool = pool
        self._pool_options: dict[str, Any] = {}
        self._owns_pool = False
        self._ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        table: str = "sessionware_sessions",
        hash_keys: bool = True,
        connect_timeout: float = 10.0,
        **pool_options: Any,
    ) -> MySQLSessionStore:
        """A store with its own pool from ``mysql://user:password@host:port/database``."""
        _asyncmy()
        url = urlsplit(dsn)
        if url.scheme not in ("mysql", "mariadb") or not url.path.strip("/"):
            raise ValueError("the DSN must look like mysql://user:password@host:port/database")
        store = cls(None, table=table, hash_keys=hash_keys)
        store._pool_options = {
            "host": url.hostname or "127.0.0.1",
            "port": url.port or 3306,
            "user": unquote(url.username or "root"),
            "password": unquote(url.password or ""),
            "db": unquote(url.path.strip("/")),
            "autocommit": True,
            "charset": "utf8mb4",
            "connect_timeout": connect_timeout,
            "minsize": 1,
            **pool_options,
        }
        store._owns_pool = True
        return store

    @asynccontextmanager
    async def _cursor(self, operation: str) -> AsyncIterator[Any]:
        errors = (_asyncmy().Error, OSError, asyncio.TimeoutError)
        try:
            if not self._ready:
                async with self._lock:
                    if self._pool is None:
                        self._pool = await _asyncmy().create_pool(**self._pool_options)
                    if not self._ready:
                        await self._create_tables()
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                yield cursor
                if not conn.get_autocommit():
                    await conn.commit()
        except errors as exc:
            raise StoreError(f"MySQL session store failed to {operation}: {exc!r}") from exc

    async def _create_tables(self) -> None:
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            if getattr(conn, "_client_flag", 0) & _FOUND_ROWS:
                raise ValueError("MySQLSessionStore needs connections without CLIENT.FOUND_ROWS")
            lock = "sessionware:" + hashlib.sha256(self.table.encode()).hexdigest()[:40]
            # sql_notes off: "table already exists" notes would be logged as warnings.
            await cursor.execute("SET @sw_notes = @@sql_notes, @@sql_notes = 0")
            await cursor.execute("SELECT GET_LOCK(%s, 30)", (lock,))
            try:
                await cursor.execute(self._sql["create"])
                await cursor.execute(self._sql["create_users"])
            finally:
                await cursor.execute("SELECT RELEASE_LOCK(%s)", (lock,))
                await cursor.execute("SET @@sql_notes = @sw_notes")
            if not conn.get_autocommit():
                await conn.commit()
        self._ready = True

    async def get(self, id: str) -> Record | None:
        async with self._cursor("get") as cursor:
            await cursor.execute(self._sql["get"], (id,))
            row = await cursor.fetchone()
        return None if row is None else Record(bytes(row[0]), int(row[1]))

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        version, micros = secrets.randbits(63), _micros(ttl)
        async with self._cursor("put") as cursor:
            if expect is ABSENT:
                args: tuple[Any, ...] = (id, data, version, micros, data, version, micros)
                written = await cursor.execute(self._sql["create_row"], args)
            else:
                args = (data, version, micros, id, expect)
                written = await cursor.execute(self._sql["replace"], args)
        return version if written else None

    async def touch(self, id: str, ttl: timedelta) -> bool:
        async with self._cursor("touch") as cursor:
            return bool(await cursor.execute(self._sql["touch"], (_micros(ttl), id)))

    async def delete(self, id: str) -> None:
        async with self._cursor("delete") as cursor:
            await cursor.execute(self._sql["delete"], (id,))

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        async with self._cursor("add to the user index") as cursor:
            await cursor.execute(self._sql["index_add"], (user, id, _micros(ttl), _micros(ttl)))
            await cursor.execute(self._sql["index_prune"], (user,))

    async def index_remove(self, user: str, id: str) -> None:
        async with self._cursor("remove from the user index") as cursor:
            await cursor.execute(self._sql["index_remove"], (user, id))

    async def index_members(self, user: str) -> list[str]:
        async with self._cursor("read the user index") as cursor:
            await cursor.execute(self._sql["index_members"], (user,))
            return [str(row[0]) for row in await cursor.fetchall()]

    async def clear_expired(self) -> int:
        """Delete expired records and index entries; return how many records went."""
        async with self._cursor("clear expired records") as cursor:
            removed = int(await cursor.execute(self._sql["clear"]))
            await cursor.execute(self._sql["clear_users"])
        return removed

    async def aclose(self) -> None:
        """Close the pool if this store opened it (``from_dsn``; a pool you passed stays open)."""
        if self._owns_pool and self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
            self._ready = False
