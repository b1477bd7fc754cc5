"""In-process benchmark: the same Starlette app behind each session library, driven by raw ASGI.

    .venv/bin/python benchmarks/bench_asgi.py [--rounds 11] [--requests 1000] [--only a,b]
    .venv/bin/python benchmarks/bench_asgi.py --quick      # tiny sizes: does the harness run?

No network and no HTTP client: each request is ``await app(scope, receive, send)`` with a
prebuilt scope. A cell is one (configuration, kind of request). A round runs ``--requests``
requests of every cell, as ``--requests / --batch`` passes: each pass runs one batch of every
cell in a fresh shuffled order, so every cell is spread over the whole round, and a cell's
value in the round is the median of its batch means. Every ratio is taken within one round
(so load from elsewhere on the machine hits both sides alike); the median over rounds is
reported, with its min-max. The baselines that make the ratios honest run in the same rounds:
the bare app receiving the same cookie, a null pass-through middleware, null middlewares doing
only one redis-py GET, or GET + SET, per request, and Starlette's SessionMiddleware.
Exit status: 0 even when a target is missed (it is a measurement); 1 when a CHECK (Redis
commands per request) fails; 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _apps
from _apps import KINDS, Flavor

import sessionware
from sessionware import TtlExtensionPolicy

DEFAULT = [
    "bare",
    "null-mw",
    "null-redis-get",
    "null-redis-getset",
    "starlette",
    "floor-cookie",
    "floor-checked",
    "floor-redis",
    "floor-redis-checked",
    "starsessions-cookie",
    "starsessions-redis",
    "sw-cookie-private",
    "sw-cookie-signed",
    "sw-memory",
    "sw-redis",
    "sw-sqlite",
    "sw-postgres",
    "sw-mysql",
    "sw-memcached",
    "sw-cookie-events",
    "sw-redis-events",
]
# Left out with a printed reason when they cannot run here; any other failure is an error.
OPTIONAL = frozenset(_apps.EXTRA_STORES) | _apps.EVENT_FLAVORS
# The kinds each configuration is measured on (the null Redis middlewares: the one they floor).
ONLY_KINDS = {"null-redis-get": ("read",), "null-redis-getset": ("write",)}
SERVER_STORES = ["sw-redis", "sw-memory", "sw-sqlite", "sw-postgres", "sw-mysql", "sw-memcached"]
STORE_LABELS = {
    "sw-cookie-signed": "cookie SIGNED",
    "sw-memory": "memory",
    "sw-redis": "Redis",
    "sw-sqlite": "SQLite",
    "sw-postgres": "PostgreSQL",
    "sw-mysql": "MariaDB/MySQL",
    "sw-memcached": "Memcached",
}
# Commands that never change data; anything else a store sends counts as a write.
READ_ONLY = frozenset({"GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN"})

Cell = tuple[str, str]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="measured rounds (median taken)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per cell per round")
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds x 40 requests: checks the harness only"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated configurations (default: the standard set)"
    )
    parser.add_argument(
        "--with-eager",
        action="store_true",
        help="also run the server-side sessionware stores with lazy=False",
    )
    parser.add_argument("--no-redis", action="store_true", help="leave out every Redis part")
    parser.add_argument(
        "--no-extra-stores", action="store_true", help="leave out PostgreSQL, MariaDB, Memcached"
    )
    parser.add_argument(
        "--batch", type=int, default=50, help="requests per batch (a round's passes run one each)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the round shuffles")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.batch = 3, 40, 10
    if args.rounds < 1 or args.requests < 1 or args.batch < 1:
        parser.error("--rounds, --requests and --batch must be at least 1")
    args.batch = min(args.batch, args.requests)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


# -- timing --------------------------------------------------------------------------------------


async def timed_requests(app: Any, scope: dict[str, Any], n: int) -> tuple[float, float]:
    """Mean µs per request over ``n`` requests of ``scope`` (a fresh shallow copy each): wall
    clock, and this process's CPU time (all its threads, e.g. SQLite's)."""
    receive, discard, copy = _apps.receive, _apps.discard, scope.copy
    cpu, start = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        await app(copy(), receive, discard)
    wall, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
    return wall / n / 1000, cpu / n / 1000


async def timed_calls(call: Any, n: int) -> tuple[float, float]:
    cpu, start = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        await call()
    wall, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
    return wall / n / 1000, cpu / n / 1000


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


# -- checks outside the timed loops ----------------------------------------------------------


async def sanity(flavor: Flavor, scopes: dict[str, dict[str, Any]]) -> None:
    """What each kind of request answers; raise if a flavour does not behave."""
    problems = []
    write = await _apps.call(flavor.app, scopes["write"])
    read = await _apps.call(flavor.app, scopes["read"])
    ignore = await _apps.call(flavor.app, scopes["ignore"])
    for kind, reply in (("write", write), ("read", read), ("ignore", ignore)):
        if reply.status != 200:
            problems.append(f"{kind} answered {reply.status}")
    if flavor.family not in ("bare", "null") and read.body.strip() not in (b"1", b"2"):
        problems.append(f"read answered {read.body!r}, not the seeded counter")
    if flavor.family == "sessionware":
        if read.header(b"set-cookie"):
            problems.append("an unchanged session re-sent its cookie")
        if ignore.header(b"set-cookie"):
            problems.append("an ignored session sent a cookie")
        if flavor.carrier not in b",".join(ignore.header(b"vary")).lower():
            problems.append(
                f"a response to a request with the session lacks Vary: {flavor.carrier!r}"
            )
    if problems:
        raise RuntimeError(f"{flavor.name}: " + "; ".join(problems))


class ServerLog:
    """MONITOR on a connection of its own: what Redis itself runs on keys under ``prefix``,
    commands inside scripts included (as ``lua:NAME``). Bounded: stops at a marker command.

    MONITOR streams every command of every client of the server, one line each. redis-py reads
    a line with asyncio's ``readline``, whose 64 KiB limit fails the whole run ("Separator is
    not found, and chunk exceed the limit") whenever anyone else on a shared server writes a
    larger value; so the stream is read here in chunks, and lines of any length are skipped
    unless they hold ``prefix``.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def run(self, action: Any) -> Counter[str]:
        from redis.asyncio import Redis

        seen: Counter[str] = Counter()
        url = urlsplit(_apps.REDIS_URL)
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 6379)
        marker = f"{self.prefix}monitor-end:{uuid.uuid4().hex}"
        try:
            writer.write(b"MONITOR\r\n")
            lines = monitor_lines(reader)
            first = await asyncio.wait_for(anext(lines), timeout=10)
            if first != b"+OK":
                raise RuntimeError(f"MONITOR answered {first[:200]!r}")
            await action()
            marker_client = Redis.from_url(_apps.REDIS_URL, **_apps.redis_options())
            try:
                await marker_client.get(marker)
            finally:
                await marker_client.aclose()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                line = await asyncio.wait_for(anext(lines), timeout=10)
                if marker.encode() in line:
                    break
                if self.prefix.encode() in line:
                    name, lua = monitored_command(line)
                    seen[f"lua:{name}" if lua else name] += 1
        finally:
            writer.close()
        return seen


async def monitor_lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The CRLF-terminated lines of a MONITOR stream, however long, read in chunks."""
    buffer = bytearray()
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            raise ConnectionError("the MONITOR connection closed")
        buffer += chunk
        *complete, rest = bytes(buffer).split(b"\r\n")
        buffer = bytearray(rest)
        for line in complete:
            yield line


def monitored_command(line: bytes) -> tuple[str, bool]:
    """The command's name in a MONITOR line (``+1.5 [0 127.0.0.1:1234] "GET" "k"``), and
    whether a script ran it (``[0 lua]``)."""
    client, _, command = line.partition(b"] ")
    name = command.split(b'"', 2)[1].decode("ascii", "replace").upper()
    return name, client.endswith(b" lua")


def effective_writes(ran: Counter[str]) -> set[str]:
    """The writes Redis ran: each command, or each command its scripts ran, that is not a read."""
    names = {cmd.removeprefix("lua:") for cmd in ran if cmd not in ("EVAL", "EVALSHA")}
    return {name for name in names if name not in READ_ONLY}


async def redis_checks(prefix: str, n: int = 10) -> list[tuple[str, bool | None, str]]:
    """The Redis commands per request kind: sent (a counting client wraps the store's) and run
    (MONITOR, filtered by this run's key prefix, so other users of the server do not count)."""
    # (label, verdict, commands): True/False are asserted (exit status 1 on False); None and
    # False under a "[perf]" label are reported only.
    results: list[tuple[str, bool | None, str]] = []
    own = prefix + "count:"
    log = ServerLog(own)

    async def per_request(
        name: str, policy: TtlExtensionPolicy
    ) -> dict[str, tuple[Counter[str], Counter[str]]]:
        counts: Counter[str] = Counter()
        flavor = _apps.build(name, prefix=own, policy=policy, counts=counts)
        try:
            scopes = _apps.scopes_for(await _apps.seed(flavor), flavor.carrier)
            seen = {}
            for kind in KINDS:

                async def requests(kind: str = kind) -> None:
                    for _ in range(n):
                        reply = await _apps.call(flavor.app, scopes[kind])
                        assert reply.status == 200, (name, kind, reply.status)

                counts.clear()
                ran = await log.run(requests)
                seen[kind] = (Counter(dict(counts)), ran)
            return seen
        finally:
            await flavor.aclose()

    def show(pair: tuple[Counter[str], Counter[str]]) -> str:
        def one(counter: Counter[str]) -> str:
            if not counter:
                return "none"
            return " ".join(f"{cmd}={count / n:g}" for cmd, count in sorted(counter.items()))

        return f"sent {one(pair[0])} | ran {one(pair[1])}"

    changes = await per_request("sw-redis", TtlExtensionPolicy.ON_STATE_CHANGES)
    every = await per_request("sw-redis", TtlExtensionPolicy.ON_EVERY_REQUEST)

    def ran(result: tuple[Counter[str], Counter[str]]) -> Counter[str]:
        return result[1]

    results.append(
        (
            "Redis, ON_STATE_CHANGES, read: no store write",
            not effective_writes(ran(changes["read"])),
            show(changes["read"]),
        )
    )
    results.append(
        (
            "Redis, ON_STATE_CHANGES, read: one round trip (GET)",
            changes["read"][0] == Counter({"GET": n}),
            show(changes["read"]),
        )
    )
    results.append(
        (
            "Redis, ON_STATE_CHANGES, ignore (lazy): no command at all",
            not changes["ignore"][0] and not ran(changes["ignore"]),
            show(changes["ignore"]),
        )
    )
    # The envelope says when a session expires (one clock), so an extension rewrites the
    # record with its new expiry: one compare-and-set, never a blind SET or a bare EXPIRE.
    for kind in ("read", "ignore"):
        results.append(
            (
                f"Redis, ON_EVERY_REQUEST, {kind}: one CAS rewrite the only write, once",
                effective_writes(ran(every[kind])) == {"SET"}
                and ran(every[kind])["lua:SET"] == n
                and every[kind][0] == Counter({"GET": n, "EVAL": n}),
                show(every[kind]),
            )
        )
    results.append(("Redis, write (info: load + CAS update)", True, show(changes["write"])))
    eager = await per_request("sw-redis-eager", TtlExtensionPolicy.ON_STATE_CHANGES)
    results.append(("Redis lazy=False, ignore (info: eager load)", True, show(eager["ignore"])))
    starsessions = await per_request("starsessions-redis", TtlExtensionPolicy.ON_STATE_CHANGES)
    results.append(
        (
            "starsessions Redis, read (info: writes back every loaded session)",
            True,
            show(starsessions["read"]),
        )
    )
    return results


# -- the ratios ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a ratio table: computed within each round, reported as the median."""

    label: str
    limit: float | None  # None: shown for context, not judged
    cells: tuple[Cell, ...]
    value: Callable[[dict[Cell, float]], float]


def ratio(label: str, limit: float | None, mine: Cell, theirs: Cell) -> Row:
    return Row(label, limit, (mine, theirs), lambda r: r[mine] / r[theirs])


def overhead_ratio(label: str, limit: float | None, name: str, other: str, kind: str) -> Row:
    """(name - bare) / (other - bare), for one kind of request."""
    mine, theirs, bare = (name, kind), (other, kind), ("bare", kind)

    def value(r: dict[Cell, float]) -> float:
        their_overhead = r[theirs] - r[bare]
        return (r[mine] - r[bare]) / their_overhead if their_overhead > 0 else float("inf")

    return Row(label, limit, (mine, theirs, bare), value)


def main_rows() -> list[Row]:
    """The table of the lean-request-path targets (and on_event's cost, where it exists)."""
    rows = [
        overhead_ratio(
            "cookie PRIVATE write overhead ÷ Starlette SessionMiddleware's overhead"
            " (both over the bare app)",
            0.50,
            "sw-cookie-private",
            "starlette",
            "write",
        ),
        overhead_ratio(
            "cookie PRIVATE read overhead ÷ Starlette SessionMiddleware's overhead",
            0.50,
            "sw-cookie-private",
            "starlette",
            "read",
        ),
        ratio(
            "untouched request (cookie present, handler never touches the session)"
            " ÷ the bare app receiving the same cookie",
            1.15,
            ("sw-cookie-private", "ignore"),
            ("bare", "ignore"),
        ),
        ratio(
            "Redis read ÷ a null middleware doing only one redis-py GET per request",
            1.15,
            ("sw-redis", "read"),
            ("null-redis-get", "read"),
        ),
        ratio(
            "Redis write ÷ a null middleware doing only GET + SET",
            1.15,
            ("sw-redis", "write"),
            ("null-redis-getset", "write"),
        ),
        ratio(
            "Redis with lazy=True, untouched ÷ bare with cookie",
            1.15,
            ("sw-redis", "ignore"),
            ("bare", "ignore"),
        ),
    ]
    if _apps.accepts_on_event():
        for kind in KINDS:
            rows.append(
                ratio(
                    f"cookie PRIVATE {kind}: on_event set (a no-op callable) ÷ on_event unset",
                    None,
                    ("sw-cookie-events", kind),
                    ("sw-cookie-private", kind),
                )
            )
        for kind in ("read", "write"):
            rows.append(
                ratio(
                    f"Redis {kind}: on_event set (a no-op callable) ÷ on_event unset",
                    None,
                    ("sw-redis-events", kind),
                    ("sw-redis", kind),
                )
            )
    return rows


def more_rows() -> list[Row]:
    """The untouched target for every other store, and the other libraries for context."""
    rows = []
    for name in ("sw-cookie-signed", "sw-memory", "sw-sqlite", "sw-postgres", "sw-mysql"):
        rows.append(
            ratio(
                f"{STORE_LABELS[name]} store, untouched ÷ bare with cookie",
                1.15,
                (name, "ignore"),
                ("bare", "ignore"),
            )
        )
    rows.append(
        ratio(
            "Memcached store, untouched ÷ bare with cookie",
            1.15,
            ("sw-memcached", "ignore"),
            ("bare", "ignore"),
        )
    )
    for kind in ("write", "read"):
        rows.append(
            overhead_ratio(
                f"cookie SIGNED {kind} overhead ÷ Starlette SessionMiddleware's overhead",
                None,
                "sw-cookie-signed",
                "starlette",
                kind,
            )
        )
    for name, what in (
        ("floor-cookie", "floor prototype (the issue's: no input checks)"),
        ("floor-checked", "floor prototype with sessionware's checked pieces"),
    ):
        for kind in ("write", "read"):
            rows.append(
                overhead_ratio(
                    f"{what}, {kind} overhead ÷ Starlette SessionMiddleware's overhead",
                    None,
                    name,
                    "starlette",
                    kind,
                )
            )
    for name, what in (
        ("null-mw", "null pass-through middleware (the floor)"),
        ("floor-cookie", "floor prototype (the issue's: no input checks)"),
        ("floor-checked", "floor prototype with sessionware's checked pieces"),
        ("starlette", "Starlette SessionMiddleware"),
        ("starsessions-cookie", "starsessions cookie"),
        ("starsessions-redis", "starsessions Redis"),
    ):
        rows.append(
            ratio(
                f"{what}, untouched ÷ bare with cookie", None, (name, "ignore"), ("bare", "ignore")
            )
        )
    for name, what in (
        ("floor-redis", "Redis floor prototype (GET, SET, no checks)"),
        ("floor-redis-checked", "Redis floor prototype with sessionware's pieces and CAS put"),
    ):
        rows.append(
            ratio(f"{what}, read ÷ one GET", None, (name, "read"), ("null-redis-get", "read"))
        )
        rows.append(
            ratio(
                f"{what}, write ÷ GET + SET",
                None,
                (name, "write"),
                ("null-redis-getset", "write"),
            )
        )
        rows.append(
            ratio(
                f"{what}, untouched ÷ bare with cookie", None, (name, "ignore"), ("bare", "ignore")
            )
        )
    rows.append(
        ratio(
            "starsessions Redis read ÷ a null middleware doing only one GET",
            None,
            ("starsessions-redis", "read"),
            ("null-redis-get", "read"),
        )
    )
    return rows


def per_round(row: Row, rounds: list[dict[Cell, float]]) -> list[float]:
    return [row.value(r) for r in rounds]


# -- the run -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(DEFAULT)
    if args.with_eager:
        names += [
            n for n in ("sw-memory-eager", "sw-redis-eager", "sw-sqlite-eager") if n not in names
        ]
    unknown = [n for n in names if n not in _apps.FLAVORS]
    if unknown:
        print(f"unknown configuration(s): {', '.join(unknown)}; known: {', '.join(_apps.FLAVORS)}")
        return 2
    if "bare" not in names:
        names.insert(0, "bare")
    use_redis = not args.no_redis
    if use_redis and not _apps.redis_reachable():
        print("Redis is not reachable at 127.0.0.1:6379; start it or pass --no-redis")
        return 2
    skipped: dict[str, str] = {}
    for name in names:
        if not use_redis and name in _apps.NEEDS_REDIS:
            skipped[name] = "--no-redis"
        elif args.no_extra_stores and name in _apps.EXTRA_STORES:
            skipped[name] = "--no-extra-stores"

    prefix = f"bench:{uuid.uuid4().hex}:"
    tmpdir = tempfile.TemporaryDirectory(prefix="sessionware-bench-")
    services = _apps.Services()
    for name in names:
        reason = None if name in skipped else _apps.unavailable(name, services)
        if reason is not None:
            if name not in OPTIONAL:
                print(f"setup failed: {name}: {reason}")
                return 2
            skipped[name] = reason
    active = [n for n in names if n not in skipped]
    flavors: dict[str, Flavor] = {}
    redis_client: Any = None
    try:
        scopes: dict[str, dict[str, dict[str, Any]]] = {}
        # The bare app and the null middlewares get a session cookie of the usual size too
        # (they never look at it), so every request carries the same headers.
        donor = _apps.build("sw-cookie-private")
        bare_cookie = await _apps.seed(donor)
        record = _apps.DEFAULT_RECORD
        # The null Redis middlewares come last: they GET and SET a copy of a real record.
        for name in sorted(active, key=lambda n: n.startswith("null-redis")):
            if name.startswith("null-redis") and record is _apps.DEFAULT_RECORD:
                record = await _apps.first_record(prefix + "sessionware:") or record
            try:
                flavor = _apps.build(
                    name, prefix=prefix, tmpdir=tmpdir.name, services=services, record=record
                )
                flavors[name] = flavor
                cookie = await _apps.seed(flavor)
                scopes[name] = _apps.scopes_for(
                    cookie if cookie is not None else bare_cookie, flavor.carrier
                )
                await sanity(flavor, scopes[name])
            except Exception as exc:
                if name not in OPTIONAL:
                    raise
                text = str(exc).strip().splitlines()
                skipped[name] = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
                broken = flavors.pop(name, None)
                if broken is not None:
                    try:
                        await broken.aclose()
                    except Exception as close_exc:  # a half-built store: report and go on
                        skipped[name] += f" (closing: {type(close_exc).__name__})"
        active = [n for n in active if n in flavors]

        cells: list[tuple[Cell, Callable[[int], Any]]] = []
        for name in active:
            for kind in ONLY_KINDS.get(name, KINDS):
                app, scope = flavors[name].app, scopes[name][kind]
                cells.append(((name, kind), lambda n, a=app, s=scope: timed_requests(a, s, n)))
        if use_redis:
            from redis.asyncio import Redis

            redis_client = Redis.from_url(_apps.REDIS_URL, **_apps.redis_options())
            floor_key, set_key = prefix + "floor:get", prefix + "floor:set"
            await redis_client.set(floor_key, record, ex=3600)
            await redis_client.set(set_key, record, ex=3600)
            client = redis_client
            cells.append(
                (("floor", "GET"), lambda n: timed_calls(lambda: client.get(floor_key), n))
            )
            cells.append(
                (
                    ("floor", "SET"),
                    lambda n: timed_calls(lambda: client.set(set_key, record, ex=3600), n),
                )
            )
            # The store's compare-and-set put (its EVAL) of the same record, which always
            # holds: what a write's CAS costs beside a blind SET.
            from sessionware.stores import RedisSessionStore

            cas_store = RedisSessionStore(client, key_prefix=prefix + "floor:")
            await client.set(prefix + "floor:cas", record, ex=3600)
            loaded = await cas_store.get("cas")
            assert loaded is not None
            cas_version, hour = loaded.version, timedelta(hours=1)
            cells.append(
                (
                    ("floor", "CAS"),
                    lambda n: timed_calls(
                        lambda: cas_store.put("cas", record, hour, expect=cas_version), n
                    ),
                )
            )

        # Warm-up: one round's worth of requests per cell (imports, caches, pools, SQL pages).
        for _, measure in cells:
            await measure(args.requests)
        gc.collect()
        gc.freeze()
        rng = random.Random(args.seed)
        passes = -(-args.requests // args.batch)
        rounds: list[dict[Cell, float]] = []  # wall clock
        cpu_rounds: list[dict[Cell, float]] = []  # this process's CPU time
        started = time.monotonic()
        for _ in range(args.rounds):
            # A round is ``passes`` passes; each runs one batch of every cell, in a fresh
            # order, so each cell's batches are spread over the whole round. A cell's value
            # for the round is the median of its batch means: a preemption by another process
            # spoils a batch, not the cell.
            batches: dict[Cell, list[tuple[float, float]]] = {cell: [] for cell, _ in cells}
            for _ in range(passes):
                order = list(cells)
                rng.shuffle(order)
                gc.collect()
                for cell, measure in order:
                    batches[cell].append(await measure(args.batch))
            rounds.append({c: statistics.median(w for w, _ in b) for c, b in batches.items()})
            cpu_rounds.append({c: statistics.median(u for _, u in b) for c, b in batches.items()})
        elapsed = time.monotonic() - started
        gc.unfreeze()

        checks = await redis_checks(prefix) if use_redis and "sw-redis" in active else []
        report(args, names, active, skipped, rounds, cpu_rounds, checks, elapsed)
        # Targets are measurements (a miss is reported, not fatal); the checks are assertions.
        failed = [
            label for label, ok, _ in checks if ok is False and not label.startswith("[perf]")
        ]
        return 1 if failed else 0
    finally:
        for flavor in flavors.values():
            await flavor.aclose()
        if redis_client is not None:
            await redis_client.aclose()
        if use_redis:
            await _apps.delete_prefixed(prefix)
        for problem in await services.aclose():
            print(f"cleanup: {problem}")
        tmpdir.cleanup()


# -- the report ----------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 2, median_digits: int = 3) -> str:
    """``median [min-max]``. A ratio's median gets a third digit, so that a verdict beside a
    value that rounds onto its target is no puzzle."""
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{median_digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def cell_table(
    title: str,
    names: Sequence[str],
    kinds: Sequence[str],
    rounds: list[dict[Cell, float]],
    headers: Sequence[str] = (),
    column: int = 24,
) -> None:
    """One line per configuration: each kind's median over rounds (µs per request), [min-max];
    ``-`` for a cell not measured. ``headers`` name the columns (default: the kinds)."""
    width = max(len(n) for n in [*names, title]) + 2
    print(f"{title:<{width}}" + "".join(f"{h:>{column}}" for h in headers or kinds))
    for name in names:
        line = f"{name:<{width}}"
        for kind in kinds:
            values = [r[(name, kind)] for r in rounds if (name, kind) in r]
            line += f"{spread(values, 1, 1):>{column}}" if values else f"{'-':>{column}}"
        print(line)


def ratio_table(
    title: str,
    rows: list[Row],
    rounds: list[dict[Cell, float]],
    cpu_rounds: list[dict[Cell, float]],
    skipped: dict[str, str],
) -> None:
    print("")
    print(
        f"| {title} | target | measured: median [min-max] over rounds | verdict"
        " | the same in process CPU time (info) |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        missing = sorted({name for name, _ in row.cells if (name, _) not in rounds[0]})
        target = f"≤ {row.limit:.2f}" if row.limit is not None else "—"
        if missing:
            why = "; ".join(f"{n}: {skipped.get(n, 'not in --only')}" for n in missing)
            print(f"| {row.label} | {target} | not measured ({why}) | — | — |")
            continue
        values = per_round(row, rounds)
        if row.limit is None:
            verdict = "info"
        else:
            verdict = "PASS" if statistics.median(values) <= row.limit else "MISS"
        cpu = spread(per_round(row, cpu_rounds))
        print(f"| {row.label} | {target} | {spread(values)} | {verdict} | {cpu} |")


def report(
    args: argparse.Namespace,
    names: list[str],
    active: list[str],
    skipped: dict[str, str],
    rounds: list[dict[Cell, float]],
    cpu_rounds: list[dict[Cell, float]],
    checks: list[tuple[str, bool | None, str]],
    elapsed: float,
) -> None:
    out = print
    out(
        f"bench_asgi: Python {platform.python_version()} ({platform.machine()}),"
        f" starlette {version('starlette')}, starsessions {version('starsessions')},"
        f" itsdangerous {version('itsdangerous')}, redis-py {version('redis')},"
        f" cryptography {version('cryptography')}"
    )
    out(
        f"sessionware {version('sessionware')} imported from {Path(sessionware.__file__).parent};"
        f" SessionMiddleware takes on_event: {'yes' if _apps.accepts_on_event() else 'no'}"
    )
    out(
        f"in-process raw ASGI; {args.rounds} rounds x {args.requests} requests per cell"
        f" (+ as many to warm up), measured part took {elapsed:.1f} s; a round is"
        f" {-(-args.requests // args.batch)} passes, each running one batch of {args.batch}"
        f" requests of every cell in a fresh shuffled order (seed {args.seed})"
    )
    out("a cell's value in a round: the median of its batch means (µs per request)")
    out("ratios are taken within each round; the median over rounds is reported, [min-max]")
    out("kinds: write = counter+1 with cookie present; read = read the counter; ignore = handler")
    out("  never touches the session while its cookie is present (every request, the bare")
    out("  app's and the null middlewares' included, carries a session cookie)")
    out("sessionware server-side stores use lazy=True: /read and /write call")
    out("  `await session.load()` first; /ignore never loads, so it costs no store I/O.")
    for name in names:
        if name in skipped:
            out(f"skipped {name}: {skipped[name]}")

    measured = [n for n in active if any((n, k) in rounds[0] for k in KINDS)]
    width = max(len(n) for n in [*measured, "configuration"]) + 2
    out("")
    out("cell = median over rounds of the cell's value, µs per request [min-max over rounds]")
    cell_table("configuration", measured, KINDS, rounds)
    out("")
    out("overhead over bare (µs per request, median over rounds of the cell minus bare's)")
    for name in measured:
        if name == "bare":
            continue
        row = f"{name:<{width}}"
        for kind in KINDS:
            if (name, kind) in rounds[0]:
                over = statistics.median(r[(name, kind)] - r[("bare", kind)] for r in rounds)
                row += f"{over:>24.1f}"
            else:
                row += f"{'-':>24}"
        out(row)
    if ("floor", "GET") in rounds[0]:
        get = statistics.median(r[("floor", "GET")] for r in rounds)
        put = statistics.median(r[("floor", "SET")] for r in rounds)
        cas = statistics.median(r[("floor", "CAS")] for r in rounds)
        cas_over = statistics.median(r[("floor", "CAS")] - r[("floor", "SET")] for r in rounds)
        out("")
        out(
            "Redis floor (info): redis-py asyncio client, RedisSessionStore.from_url's pool options,"
        )
        out(f"  a session-sized record: GET {get:.1f} µs/call, SET ... EX {put:.1f} µs/call,")
        out(
            f"  the store's compare-and-set put (EVAL) {cas:.1f} µs/call: {cas_over:+.1f} µs"
            " over the SET (median of per-round differences)"
        )

    out("")
    out("Ratios below: wall clock (judged), and this process's CPU time (info: it leaves out")
    out("  the time other processes took the CPU away, and the Redis server's and the network's")
    out("  time, so for Redis it is the client side alone)")
    ratio_table("ratio (median of per-round ratios)", main_rows(), rounds, cpu_rounds, skipped)
    ratio_table(
        "more rows: other stores, other libraries", more_rows(), rounds, cpu_rounds, skipped
    )

    stores = [n for n in SERVER_STORES if (n, "read") in rounds[0]]
    if stores:
        out("")
        out(
            "| store (lazy=True), same run | read µs | write µs | untouched µs"
            " | read ÷ Redis read | write ÷ Redis write |"
        )
        out("|---|---|---|---|---|---|")
        for name in stores:
            line = f"| {STORE_LABELS[name]} |"
            for kind in ("read", "write", "ignore"):
                line += f" {statistics.median(r[(name, kind)] for r in rounds):.1f} |"
            for kind in ("read", "write"):
                if ("sw-redis", kind) in rounds[0]:
                    line += (
                        f" {spread([r[(name, kind)] / r[('sw-redis', kind)] for r in rounds])} |"
                    )
                else:
                    line += " — |"
            out(line)
    for name in _apps.EXTRA_STORES:
        if name in skipped:
            out(f"({STORE_LABELS[name]} store not measured: {skipped[name]})")

    if checks:
        out("")
        out("CHECKS (Redis commands per request over 10 requests: 'sent' by the store's client,")
        out("  counted by a wrapper; 'ran' by the server on this run's keys, from MONITOR, with")
        out("  the commands scripts run as lua:NAME)")
        for label, ok, seen in checks:
            if label.startswith("[perf]"):
                verdict = "MISS" if ok is False else "PASS"
            else:
                verdict = "PASS" if ok else "FAIL"
            out(f"CHECK  {label:<66} {seen:<58} {verdict}")
    out("")
    out(
        "The memory target (RSS flat across 1M requests) is benchmarks/bench_memory.py;"
        " end-to-end req/s is benchmarks/bench_e2e.py."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except RuntimeError as exc:
        print(f"setup failed: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
