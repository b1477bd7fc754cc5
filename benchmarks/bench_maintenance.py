"""How long ``clear_expired()`` stalls concurrent session requests, per SQL store.

    .venv/bin/python benchmarks/bench_maintenance.py [--rows 100000] [--only sqlite,postgres,mysql]
    .venv/bin/python benchmarks/bench_maintenance.py --quick     # tiny sizes: does it run?

Per store: a fresh table holding ``--rows`` expired records, a tenth as many expired user-index
entries and ``--live`` live records, filled with multi-row inserts (COPY on PostgreSQL). A
reader (``get`` of a live record) and a writer (``put`` of a new record) run back to back,
concurrently, through the store's public API, first for ``--idle`` seconds alone, then while
the app awaits ``store.clear_expired()`` in the same process and event loop. The table gives
each one's worst, 99th-percentile and median latency in both phases: the worst during the
clear, set against the worst of the idle phase of the same run, is the stall maintenance
causes (on a busy machine the idle worst is noise of the same size: compare p99 too). Then a clear with
nothing expired over the live rows alone (PostgreSQL: did it scan the table?).

Only the public store API is used (``clear_expired()`` with no arguments), so the script
measures any version of the stores, before and after a change. Servers: PostgreSQL at
127.0.0.1:5432 and MariaDB at 127.0.0.1:3306 (database ``test``); a store whose server is not
there is left out with a printed reason.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _apps

import sessionware
from sessionware.stores import ABSENT

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
TTL = timedelta(hours=1)
DATA = '{"v":1,"state":{"user":"ferris","cart":[1,2,3]},"created":1700000000}'


@dataclass
class Latencies:
    """One kind of request's latencies (seconds) in one phase."""

    values: list[float] = field(default_factory=list)

    def cell(self) -> str:
        if not self.values:
            return "-"
        ordered = sorted(self.values)
        worst, median = ordered[-1], statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return f"{worst * 1000:.1f} / {p99 * 1000:.1f} / {median * 1000:.2f}"


async def probe(store: Any, live: list[str], stop: asyncio.Event) -> tuple[Latencies, Latencies]:
    """Reads of live records and writes of new ones, back to back, until ``stop`` is set."""
    reads, writes = Latencies(), Latencies()

    async def reader() -> None:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            found = await store.get(live[n % len(live)])
            reads.values.append(time.perf_counter() - started)
            assert found is not None, "a live record went missing"
            n += 1

    async def writer() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await store.put(f"new-{uuid.uuid4().hex}", DATA.encode(), TTL, expect=ABSENT)
            writes.values.append(time.perf_counter() - started)

    await asyncio.gather(reader(), writer())
    return reads, writes


# -- the stores, each with a raw filler ---------------------------------------------------------


def _past(n: int, rows: int) -> float:
    """An expiry in the past, spread over an hour so the expires index has an order to use."""
    return 3600 + 3600 * (rows - n) / rows


def _rows(at: Callable[[float], Any], rows: int, live: int) -> tuple[list[Any], list[Any]]:
    """The records ``(key, data, version, expires)`` and index entries ``(user, key, expires)``
    to fill, with ``at(seconds)`` the time that many seconds from now (negative: the past)."""
    records = [(f"old-{n}", DATA, n, at(-_past(n, rows))) for n in range(rows)]
    records += [(f"live-{n}", DATA, n, at(3600)) for n in range(live)]
    entries = [(f"user-{n % 100}", f"old-{n}", at(-_past(n, rows))) for n in range(rows // 10)]
    return records, entries


@asynccontextmanager
async def sqlite_store(rows: int, live: int) -> AsyncIterator[tuple[Any, list[str]]]:
    from sessionware.stores import SQLiteSessionStore

    with tempfile.TemporaryDirectory(prefix="sessionware-bench-") as directory:
        path = Path(directory) / "sessions.db"
        store = SQLiteSessionStore(path)
        await store.get("x")  # creates the tables
        now = time.time()
        records, entries = _rows(lambda seconds: now + seconds, rows, live)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO sessions (key, data, version, expires) VALUES (?, ?, ?, ?)", records
        )
        conn.executemany(
            "INSERT INTO sessions_users (user_id, key, expires) VALUES (?, ?, ?)", entries
        )
        conn.execute("COMMIT")
        conn.close()
        try:
            yield store, [f"live-{n}" for n in range(live)]
        finally:
            await store.aclose()


@asynccontextmanager
async def postgres_store(rows: int, live: int) -> AsyncIterator[tuple[Any, list[str]]]:
    import asyncpg  # type: ignore[import-untyped]

    from sessionware.stores import PostgresSessionStore

    table = f"sessionware_bench_{uuid.uuid4().hex[:16]}"
    store = PostgresSessionStore.from_dsn(PG_DSN, table=table)
    await store.get("x")
    conn = await asyncpg.connect(PG_DSN)
    try:
        now = await conn.fetchval("SELECT clock_timestamp()")
        records, entries = _rows(lambda seconds: now + timedelta(seconds=seconds), rows, live)
        await conn.copy_records_to_table(
            table, records=records, columns=["key", "data", "version", "expires"]
        )
        await conn.copy_records_to_table(
            f"{table}_users", records=entries, columns=["user_id", "key", "expires"]
        )
        await conn.execute(f"ANALYZE {table}")
        await conn.execute(f"ANALYZE {table}_users")
        yield store, [f"live-{n}" for n in range(live)]
    finally:
        await store.aclose()
        await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        await conn.close()


@asynccontextmanager
async def mysql_store(rows: int, live: int) -> AsyncIterator[tuple[Any, list[str]]]:
    import asyncmy

    from sessionware.stores import MySQLSessionStore

    table = f"sessionware_bench_{uuid.uuid4().hex[:16]}"
    store = MySQLSessionStore.from_dsn(MYSQL_DSN, table=table)
    await store.get("x")
    conn = await asyncmy.connect(host="127.0.0.1", user="root", db="test", autocommit=True)
    try:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        records, entries = _rows(lambda seconds: now + timedelta(seconds=seconds), rows, live)
        async with conn.cursor() as cursor:
            for start in range(0, len(records), 5000):
                await cursor.executemany(
                    f"INSERT INTO {table} (`key`, data, version, expires) VALUES (%s, %s, %s, %s)",
                    records[start : start + 5000],
                )
            for start in range(0, len(entries), 5000):
                await cursor.executemany(
                    f"INSERT INTO {table}_users (`user`, id, expires) VALUES (%s, %s, %s)",
                    entries[start : start + 5000],
                )
            await cursor.execute(f"ANALYZE TABLE {table}, {table}_users")
            await cursor.fetchall()
        yield store, [f"live-{n}" for n in range(live)]
    finally:
        await store.aclose()
        async with conn.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        conn.close()


STORES: dict[str, tuple[str, int | None, Callable[[int, int], Any]]] = {
    "sqlite": ("SQLite", None, sqlite_store),
    "postgres": ("PostgreSQL", 5432, postgres_store),
    "mysql": ("MariaDB", 3306, mysql_store),
}


# -- a run --------------------------------------------------------------------------------------


async def phase(store: Any, live: list[str], work: Awaitable[Any]) -> tuple[Any, float, Any]:
    """Run ``work`` with the probe beside it; its result, its seconds, the probe's latencies."""
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(store, live, stop))
    await asyncio.sleep(0.05)  # the probe is running before the work starts
    started = time.perf_counter()
    try:
        result = await work
    finally:
        took = time.perf_counter() - started
        stop.set()
    return result, took, await probing


async def measure(name: str, args: argparse.Namespace) -> list[str]:
    label, port, opener = STORES[name]
    if port is not None and not _apps.reachable(port):
        return [f"({label} not measured: nothing listens on 127.0.0.1:{port})"]
    async with opener(args.rows, args.live) as (store, live):
        _, _, (idle_reads, idle_writes) = await phase(store, live, asyncio.sleep(args.idle))
        deleted, took, (reads, writes) = await phase(store, live, store.clear_expired())
        started = time.perf_counter()
        await store.clear_expired()
        empty = time.perf_counter() - started
    return [
        f"| {label} | {deleted:,} | {took:.2f} | {idle_reads.cell()} | {reads.cell()}"
        f" | {idle_writes.cell()} | {writes.cell()} | {len(reads.values) + len(writes.values)}"
        f" | {empty * 1000:.1f} |"
    ]


async def run(args: argparse.Namespace) -> None:
    print(
        f"{args.rows:,} expired records, {args.rows // 10:,} expired index entries,"
        f" {args.live:,} live records; Python {sys.version.split()[0]};"
        f" sessionware from {Path(sessionware.__file__).parent}"
    )
    print()
    print(
        "| store | rows deleted | clear s | read worst / p99 / median ms, idle | during clear"
        " | write worst / p99 / median ms, idle | during clear | requests during clear"
        " | clear with nothing expired, ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.only:
        for line in await measure(name, args):
            print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="expired records")
    parser.add_argument("--live", type=int, default=1_000, help="live records")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds of the idle phase")
    parser.add_argument("--only", default="sqlite,postgres,mysql", help="stores to measure")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script only")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.live, args.idle = 2_000, 50, 0.1
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(STORES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}; choose from {sorted(STORES)}")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
