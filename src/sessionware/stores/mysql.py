"""MySQLSessionStore: records in a MariaDB or MySQL table, through asyncmy.

Tables, made on first use under ``GET_LOCK`` (two processes never race the DDL): ``t`` (`key`
VARCHAR(255) PRIMARY KEY, data LONGBLOB, version BIGINT, expires DATETIME(6), INDEX (expires))
and ``t_users`` (`user`, id, expires; PRIMARY KEY (`user`, id), INDEX (expires)). ``now`` is the
database's ``UTC_TIMESTAMP(6)``, so app servers agree on expiry; a version is a random 63-bit
number, fresh on every write. Statements per operation::

    get           SELECT data, version FROM t WHERE `key` = ? AND expires > now
    put(ABSENT)   INSERT ... ON DUPLICATE KEY UPDATE (each column only if the row has expired)
    put(v)        UPDATE t SET ... WHERE `key` = ? AND version = v AND expires > now
    touch         UPDATE t SET expires = ... WHERE `key` = ? AND expires > now
    delete        DELETE FROM t WHERE `key` = ?
    index_add     INSERT INTO t_users ... ON DUPLICATE KEY UPDATE expires = ...;
                  DELETE FROM t_users WHERE `user` = ? AND expires <= now
    index_remove  DELETE FROM t_users WHERE `user` = ? AND id = ?
    index_members SELECT id FROM t_users WHERE `user` = ? AND expires > now
    clear_expired DELETE FROM t WHERE expires <= ? ORDER BY expires, `key` LIMIT n, with ? the
                  time the clear began, batch after batch (then t_users alike)

``put(ABSENT)`` reads the affected rows (1 inserted, 2 replaced an expired row, 0 refused), so
connections must not set ``CLIENT.FOUND_ROWS``; the store checks.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from sessionware.stores._maintenance import DEFAULT_BATCH, ProgressHook, delete_in_batches
from sessionware.stores._urls import check_scheme
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
    # Maintenance: one batch of rows expired at a given time, through the expires index in its
    # order (the primary key after it: a deterministic order, safe for statement binlogs).
    "now": "SELECT {now}",
    "clear": "DELETE FROM {t} WHERE expires <= %s ORDER BY expires, `key` LIMIT %s",
    "clear_users": "DELETE FROM {t}_users WHERE expires <= %s ORDER BY expires, `user`, id LIMIT %s",
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
        example = "mysql://user:password@host:3306/database"
        check_scheme("MySQLSessionStore.from_dsn", dsn, ("mysql", "mariadb"), example, noun="DSN")
        if not url.path.strip("/"):
            raise ValueError(f"the DSN must look like {example}: it names no database")
        store = cls(None, table=table, hash_keys=hash_keys)
        login = {"user": unquote(url.username or "root"), "password": unquote(url.password or "")}
        store._pool_options = {"host": url.hostname or "127.0.0.1", "port": url.port or 3306}
        store._pool_options |= {**login, "db": unquote(url.path.strip("/")), "minsize": 1}
        store._pool_options |= {"autocommit": True, "charset": "utf8mb4"}
        store._pool_options |= {"connect_timeout": connect_timeout, **pool_options}
        store._owns_pool = True
        return store

    async def _run(self, operation: str, *steps: tuple[str, tuple[Any, ...]]) -> tuple[int, Any]:
        """Run the statements in order on one connection; the last one's row count and rows."""
        try:
            if not self._ready:
                async with self._lock:
                    if self._pool is None:
                        self._pool = await _asyncmy().create_pool(**self._pool_options)
                    if not self._ready:
                        await self._create_tables()
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                for name, args in steps:
                    count = await cursor.execute(self._sql[name], args)
                rows = await cursor.fetchall()
                if not conn.get_autocommit():
                    await conn.commit()
        except (_asyncmy().Error, OSError, asyncio.TimeoutError) as exc:
            raise StoreError(f"MySQL session store failed to {operation}: {exc!r}") from exc
        return count, rows

    async def _create_tables(self) -> None:
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            if getattr(conn, "_client_flag", 0) & _FOUND_ROWS:
                raise ValueError("MySQLSessionStore needs connections without CLIENT.FOUND_ROWS")
            lock = f"sessionware:{self.table}"[:64]
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
        _, rows = await self._run("get", ("get", (id,)))
        return Record(bytes(rows[0][0]), int(rows[0][1])) if rows else None

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        version, micros = secrets.randbits(63), _micros(ttl)
        step: tuple[str, tuple[Any, ...]]
        if expect is ABSENT:
            step = ("create_row", (id, data, version, micros, data, version, micros))
        else:
            step = ("replace", (data, version, micros, id, expect))
        written, _ = await self._run("put", step)
        return version if written else None

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return bool((await self._run("touch", ("touch", (_micros(ttl), id))))[0])

    async def delete(self, id: str) -> None:
        await self._run("delete", ("delete", (id,)))

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        add = ("index_add", (user, id, _micros(ttl), _micros(ttl)))
        await self._run("add to the user index", add, ("index_prune", (user,)))

    async def index_remove(self, user: str, id: str) -> None:
        await self._run("remove from the user index", ("index_remove", (user, id)))

    async def index_members(self, user: str) -> list[str]:
        _, rows = await self._run("read the user index", ("index_members", (user,)))
        return [str(row[0]) for row in rows]

    async def clear_expired(
        self, *, batch_size: int = DEFAULT_BATCH, on_batch: ProgressHook | None = None
    ) -> int:
        """Delete expired records and index entries; return how many rows went.

        In statements of at most ``batch_size`` rows through the expires index, each on a pooled
        connection taken for that statement alone, so a request waiting for a row lock or a
        connection gets in between batches. ``on_batch(deleted_so_far)`` is called after each."""
        _, rows = await self._run("clear expired rows", ("now", ()))
        now = rows[0][0]

        async def delete(name: str, limit: int) -> int:
            return int((await self._run("clear expired rows", (name, (now, limit))))[0])

        return await delete_in_batches(delete, ("clear", "clear_users"), batch_size, on_batch)

    async def aclose(self) -> None:
        """Close the pool if this store opened it (``from_dsn``; a pool you passed stays open)."""
        if self._owns_pool and self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
            self._ready = False
