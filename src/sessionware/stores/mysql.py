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
    get_many      SELECT `key`, data, version FROM t WHERE `key` IN (?, ...) AND expires > now
    replace_many  UPDATE t SET data = CASE `key` WHEN ? THEN ? ... END, version = CASE ...,
                  expires = ... WHERE `key` IN (?, ...) AND (`key`, version) IN ((?, ?), ...)
                  AND expires > now; SELECT `key`, version ... (the new versions tell which landed)
    index_remove_many  DELETE FROM t_users WHERE `user` = ? AND id IN (?, ...)
    clear_expired DELETE FROM t WHERE expires <= ? ORDER BY expires, `key` LIMIT n, with ? the
                  time the clear began, batch after batch (then t_users alike)
    sweep_lock    SELECT GET_LOCK('sessionware-sweep:t', 0), held while the sweep runs

``put(ABSENT)`` reads the affected rows (1 inserted, 2 replaced an expired row, 0 refused), so
connections must not set ``CLIENT.FOUND_ROWS``; the store checks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from sessionware.stores._connections import PerLoop, address, boundary, positive, summary
from sessionware.stores._maintenance import DEFAULT_BATCH, ProgressHook, delete_in_batches
from sessionware.stores._urls import check_scheme
from sessionware.stores.base import ABSENT, Absent, Record, Replace, UserSessionsMixin, Version

__all__ = ["MySQLSessionStore"]

logger = logging.getLogger("sessionware.stores.mysql")

_TABLE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]{0,63}\.)?[A-Za-z_][A-Za-z0-9_]{0,57}")
_FOUND_ROWS = 2
"""``CLIENT.FOUND_ROWS``: with it, affected rows would count rows matched but left unchanged."""
_NO_SUCH_THREAD = 1094
"""``ER_NO_SUCH_THREAD``: ``KILL QUERY`` found the connection gone already."""
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
    "check": "SELECT 1",
}
_BATCHES = {  # {n}: one "%s, " per id; {cases}: one "WHEN %s THEN %s " per write; {pairs}
    "get_many": "SELECT `key`, data, version FROM {t} WHERE `key` IN ({n}) AND expires > {now}",
    "replace_many": "UPDATE {t} SET data = CASE `key` {cases}END, version = CASE `key` {cases}END,"
    " expires = {now} + INTERVAL (CASE `key` {cases}END) MICROSECOND WHERE `key` IN ({n})"
    " AND (`key`, version) IN ({pairs}) AND expires > {now}",
    "versions": "SELECT `key`, version FROM {t} WHERE `key` IN ({n})",
    "index_remove_many": "DELETE FROM {t}_users WHERE `user` = %s AND id IN ({n})",
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


class _Misconfigured(ValueError):
    """A connection the store cannot work with: raised as it is, not as a store failure."""


class MySQLSessionStore(UserSessionsMixin):
    """Records in ``table`` (``name`` or ``db.name``, plus ``<table>_users`` for the user index).

    ``MySQLSessionStore(pool)`` uses an asyncmy pool you own (it works only in the event loop
    that made it: from another loop every call is a ``StoreError`` saying so). ``from_dsn`` opens
    a pool per event loop on first use (so it can be built outside a loop, and serves successive
    test clients and threads alike); each closes with its loop, or in ``aclose``.

    Each operation gives up after ``command_timeout`` seconds (5 by default), waiting for a
    connection or a row another transaction holds included: a ``StoreError``, and the connection
    is dropped. ``from_dsn``'s connections also set ``innodb_lock_wait_timeout`` to that (whole
    seconds, at least 1), so the server stops waiting too.
    """

    def __init__(
        self,
        pool: Any,
        *,
        table: str = "sessionware_sessions",
        hash_keys: bool = True,
        command_timeout: float = 5.0,
    ) -> None:
        if _TABLE.fullmatch(table) is None:
            raise ValueError(
                f"table name {table!r} must be an SQL identifier of at most 58 characters"
                " ([A-Za-z_][A-Za-z0-9_]*), optionally prefixed by a database name and a dot"
            )
        self.table = table
        self.hash_keys = hash_keys
        self.command_timeout = positive("command_timeout", command_timeout)
        index = table.rsplit(".", 1)[-1][:48]
        words = {"t": table, "i": index, "now": _NOW, "gone": f"expires <= {_NOW}"}
        words["later"] = f"{_NOW} + INTERVAL %s MICROSECOND"
        # The table name is a checked identifier: the only text formatted into the SQL.
        self._sql = {name: sql.format(**words) for name, sql in _SQL.items()}
        self._words = words
        self._pools: PerLoop[Any] = PerLoop.fixed(pool)
        self._pool_options: dict[str, Any] = {}
        self._where = "the pool passed in"
        self._ready = False

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        table: str = "sessionware_sessions",
        hash_keys: bool = True,
        connect_timeout: float = 10.0,
        command_timeout: float = 5.0,
        **pool_options: Any,
    ) -> MySQLSessionStore:
        """A store with its own pools (one per event loop) from
        ``mysql://user:password@host:port/database``."""
        _asyncmy()
        url = urlsplit(dsn)
        example = "mysql://user:password@host:3306/database"
        check_scheme("MySQLSessionStore.from_dsn", dsn, ("mysql", "mariadb"), example, noun="DSN")
        if not url.path.strip("/"):
            raise ValueError(f"the DSN must look like {example}: it names no database")
        store = cls(None, table=table, hash_keys=hash_keys, command_timeout=command_timeout)
        login = {"user": unquote(url.username or "root"), "password": unquote(url.password or "")}
        store._pool_options = {"host": url.hostname or "127.0.0.1", "port": url.port or 3306}
        store._pool_options |= {**login, "db": unquote(url.path.strip("/")), "minsize": 1}
        store._pool_options |= {"autocommit": True, "charset": "utf8mb4"}
        lock_wait = max(1, math.ceil(store.command_timeout))
        store._pool_options["init_command"] = f"SET SESSION innodb_lock_wait_timeout = {lock_wait}"
        store._pool_options |= {"connect_timeout": connect_timeout, **pool_options}
        store._pools = PerLoop(store._open_pool, _close)
        store._where = address(dsn)
        return store

    async def _open_pool(self) -> Any:
        return await _asyncmy().create_pool(**self._pool_options)

    async def _run(
        self, operation: str, *steps: tuple[str, tuple[Any, ...]], tables: bool = True
    ) -> tuple[int, Any]:
        """Run the statements in order on one connection (the tables made first, on first use);
        the last one's row count and rows."""
        timeout = self.command_timeout
        head = f"MySQL session store failed to {operation}"
        with boundary(head, self._where, timeout=timeout, passing=(_Misconfigured,)):
            pool = await self._pools.get()
            if tables and not self._ready:
                async with self._pools.lock():
                    if not self._ready:
                        await asyncio.wait_for(self._create_tables(pool), timeout)
            threads: list[int] = []
            try:
                return await asyncio.wait_for(self._steps(pool, steps, threads), timeout)
            except asyncio.TimeoutError:
                await self._stop(pool, threads)
                raise

    def _batch(self, name: str, size: int) -> str:
        """The name of batch statement ``name`` for ``size`` items (made once per size)."""
        key = f"{name}:{size}"
        if key not in self._sql:
            words = dict(self._words, n=", ".join(["%s"] * size), cases="WHEN %s THEN %s " * size)
            words["pairs"] = ", ".join(["(%s, %s)"] * size)
            self._sql[key] = _BATCHES[name].format(**words)
        return key

    async def _steps(
        self, pool: Any, steps: tuple[tuple[str, tuple[Any, ...]], ...], threads: list[int]
    ) -> tuple[int, Any]:
        async with pool.acquire() as conn, conn.cursor() as cursor:
            threads.append(conn.thread_id())
            for name, args in steps:
                count = await cursor.execute(self._sql[name], args)
            rows = await cursor.fetchall()
            if not conn.get_autocommit():
                await conn.commit()
        return count, rows

    async def _stop(self, pool: Any, threads: list[int]) -> None:
        """Stop a statement cut short by the timeout on the server too (asyncmy only closed its
        connection): left waiting on a row, it would land when the row is free, after its
        caller was told it failed."""
        if not threads:
            return
        try:
            await asyncio.wait_for(self._kill(pool, threads[0]), self.command_timeout)
        except Exception as exc:  # the server's own lock wait timeout ends it then
            if exc.args[:1] != (_NO_SUCH_THREAD,):  # that one ended on its own meanwhile
                logger.warning("could not stop a timed-out MySQL statement: %s", summary(exc))

    @staticmethod
    async def _kill(pool: Any, thread: int) -> None:
        async with pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute("KILL QUERY %s", (thread,))

    async def check(self) -> None:
        """One ``SELECT 1``: a ``StoreError`` naming the server and the cause when it fails."""
        await self._run("check the connection", ("check", ()), tables=False)

    async def _create_tables(self, pool: Any) -> None:
        async with pool.acquire() as conn, conn.cursor() as cursor:
            if getattr(conn, "_client_flag", 0) & _FOUND_ROWS:
                raise _Misconfigured(
                    "MySQLSessionStore needs connections without CLIENT.FOUND_ROWS"
                )
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

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        if not ids:
            return []
        _, rows = await self._run("get", (self._batch("get_many", len(ids)), tuple(ids)))
        found = {str(key): Record(bytes(data), int(version)) for key, data, version in rows}
        return [found.get(id) for id in ids]

    async def replace_many(self, writes: Sequence[Replace]) -> list[Version | None]:
        if not writes:
            return []
        versions = [secrets.randbits(63) for _ in writes]
        ids = tuple(w.id for w in writes)
        args: list[Any] = [x for w in writes for x in (w.id, w.data)]
        args += [x for w, version in zip(writes, versions, strict=True) for x in (w.id, version)]
        args += [x for w in writes for x in (w.id, _micros(w.ttl))]
        args += [*ids, *(x for w in writes for x in (w.id, w.expect))]
        size = len(writes)
        replace = (self._batch("replace_many", size), tuple(args))
        _, rows = await self._run("put", replace, (self._batch("versions", size), ids))
        now = {str(key): int(version) for key, version in rows}
        return [
            version if now.get(w.id) == version else None
            for w, version in zip(writes, versions, strict=True)
        ]

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

    async def index_remove_many(self, user: str, ids: Sequence[str]) -> None:
        if ids:
            step = (self._batch("index_remove_many", len(ids)), (user, *ids))
            await self._run("remove from the user index", step)

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

    @asynccontextmanager
    async def sweep_lock(self) -> AsyncIterator[bool]:
        """Whether this process may sweep the table now: ``GET_LOCK(name, 0)`` on the table's
        name, held on a pooled connection until the block ends, so one sweeper at a time works
        on a database; ``False`` at once while another holds it (the server drops it with the
        connection, should this process die)."""
        name = f"sessionware-sweep:{self.table}"[:64]
        timeout = self.command_timeout
        with boundary("MySQL session store failed to take the sweep lock", self._where):
            pool = await self._pools.get()
            async with pool.acquire() as conn, conn.cursor() as cursor:
                await asyncio.wait_for(cursor.execute("SELECT GET_LOCK(%s, 0)", (name,)), timeout)
                held = (await cursor.fetchall())[0][0] == 1
                try:
                    yield held
                finally:
                    if held:
                        release = cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))
                        await asyncio.wait_for(release, timeout)
                        await cursor.fetchall()

    async def aclose(self) -> None:
        """Close the pools this store opened (``from_dsn``; a pool you passed stays open); a
        later call opens new ones."""
        await self._pools.aclose()


async def _close(pool: Any) -> None:
    """Close a pool: gracefully, or at once if a connection is still busy after a while."""
    pool.close()
    try:
        await asyncio.wait_for(pool.wait_closed(), 2.0)
    except Exception:  # busy connections, a server gone: close them at once
        pool.terminate()
