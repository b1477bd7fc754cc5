"""How sessionware's cost grows with the work: state size, stored sessions, sessions per user,
concurrent writers.

    .venv/bin/python benchmarks/bench_scale.py                       # all four parts (long)
    .venv/bin/python benchmarks/bench_scale.py --parts state,user    # some of them
    .venv/bin/python benchmarks/bench_scale.py --quick               # tiny sizes: harness only

Parts (``--parts``):

* ``state``: one session's state, 100 B to 2.5 KB in the cookie store (Starlette's
  SessionMiddleware beside it) and 100 B to 1 MB in Redis and PostgreSQL, flat (string values)
  and nested (a list of small dicts), on read, write and untouched requests;
* ``stored``: a read and a write while 10k to 1M other sessions sit in the store (Redis,
  PostgreSQL, SQLite, MariaDB), filled with copies of a record the library itself wrote;
* ``user``: listing and ending all of 10 to 1,000 sessions of one user, round trips counted;
* ``codec``: ``codec=TaggedJSON()`` against plain JSON on the cookie and memory stores, with a
  state of JSON values and one of datetimes, UUIDs, Decimals, sets and tuples, on read and write;
* ``concurrency``: uvicorn + wrk, 1/16/64 connections writing distinct sessions or one shared
  session in Redis: req/s ÷ the bare app's, p50/p99, increments lost, compare-and-set retries.

The in-process parts time raw ASGI calls in interleaved rounds, as bench_asgi.py does: every
ratio is taken within one round, and the median [min-max] over rounds is reported. Only
sessionware's public API is used, so ``PYTHONPATH=<older tree>/src`` measures an older version.
Every table, Redis key and SQLite file this run makes is removed at the end; a store that
cannot run here is skipped with the reason printed. Exit status: 0 even when a target is missed
(it is a measurement); 1 when the concurrency part's bookkeeping does not add up; 2 on a set-up
error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import http.client
import itertools
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _apps  # noqa: E402
import bench_e2e  # noqa: E402
from bench_asgi import Row, cell_table, ratio, ratio_table, spread  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

import sessionware  # noqa: E402
from sessionware import Key, Session  # noqa: E402
from sessionware import SessionMiddleware as SessionwareMiddleware  # noqa: E402

PARTS = ("state", "stored", "user", "concurrency", "codec")
STORES = ("redis", "postgres", "sqlite", "mysql")
LABELS = {
    "cookie": "cookie (PRIVATE)",
    "starlette": "Starlette SM",
    "bare": "bare app",
    "redis": "Redis",
    "postgres": "PostgreSQL",
    "sqlite": "SQLite",
    "mysql": "MariaDB/MySQL",
}
FLAVOR_OF = {
    "cookie": "sw-cookie-private",
    "starlette": "starlette",
    "bare": "bare",
    "redis": "sw-redis",
    "postgres": "sw-postgres",
    "sqlite": "sw-sqlite",
    "mysql": "sw-mysql",
}
SHAPES = ("flat", "nested")
KINDS = ("read", "write", "ignore")
KIND_LABELS = {"read": "read", "write": "write", "ignore": "untouched"}
Cell = tuple[str, str]
Measure = Callable[[int], Awaitable[tuple[float, float]]]


def sizes(text: str) -> list[int]:
    """``"100,1k,2.5k,1m"`` -> ``[100, 1000, 2500, 1000000]`` (decimal units, sorted)."""
    units = {"k": 1_000, "m": 1_000_000}
    found = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            scale = units.get(part[-1], 1)
            found.append(int(float(part.rstrip("km")) * scale))
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError(f"not a list of positive sizes: {text!r}")
    return sorted(set(found))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="of " + ",".join(PARTS))
    parser.add_argument("--stores", default=",".join(STORES), help="server-side stores to use")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument("--seed", type=int, default=None, help="seed of the round shuffles")
    timing = parser.add_argument_group("in-process timing (state, stored)")
    timing.add_argument("--rounds", type=int, default=5, help="rounds (median taken)")
    timing.add_argument("--passes", type=int, default=3, help="batches of each cell per round")
    timing.add_argument("--batch-ms", type=float, default=20.0, help="work per batch (ms)")
    state = parser.add_argument_group("state")
    state.add_argument("--cookie-sizes", type=sizes, default=sizes("100,500,1k,2.5k"))
    state.add_argument("--state-sizes", type=sizes, default=sizes("100,1k,10k,100k,1m"))
    state.add_argument("--state-stores", default="redis,postgres", help="server-side stores")
    stored = parser.add_argument_group("stored")
    stored.add_argument("--sessions", type=sizes, default=sizes("10k,100k,1m"))
    stored.add_argument("--probes", type=int, default=32, help="sessions the requests take")
    stored.add_argument(
        "--redis-db", type=int, default=10, help="first Redis database of the fills (one a size)"
    )
    user = parser.add_argument_group("user")
    user.add_argument("--per-user", type=sizes, default=sizes("10,100,1000"))
    user.add_argument("--user-rounds", type=int, default=5)
    load = parser.add_argument_group("concurrency")
    load.add_argument("--connections", default="1,16,64")
    load.add_argument("--seconds", type=float, default=2.0, help="load per cell and round")
    load.add_argument("--load-rounds", type=int, default=3)
    load.add_argument("--warmup", type=float, default=1.0, help="unmeasured load per cell")
    load.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    load.add_argument(
        "--baseline",
        default="",
        metavar="SRC",
        help="also serve sessionware from this src directory (e.g. main's) in the same run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.passes, args.batch_ms = 2, 1, 2.0
        args.cookie_sizes, args.state_sizes = [100, 1000], [100, 10_000]
        args.sessions, args.probes = [1000], 4
        args.per_user, args.user_rounds = [10], 1
        args.connections, args.seconds, args.load_rounds, args.warmup = "4", 1.0, 1, 0.0
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.state_stores = [s.strip() for s in args.state_stores.split(",") if s.strip()]
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    unknown = [p for p in args.parts if p not in PARTS]
    unknown += [s for s in {*args.stores, *args.state_stores} if s not in STORES]
    if unknown:
        parser.error(f"unknown part or store: {', '.join(unknown)}")
    if min(args.rounds, args.passes, args.probes, args.user_rounds, args.load_rounds) < 1:
        parser.error("rounds, passes, probes, user rounds and load rounds must be at least 1")
    if not args.connections or min(args.connections) < 1 or max(args.connections) > 1024:
        parser.error("--connections must be in [1, 1024]")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 600:
        parser.error("--seconds must be in (0, 600] and --warmup in [0, 600]")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def size_label(size: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def row_line(label: str, target: str, measured: str, verdict: str) -> str:
    return f"| {label} | {target} | {measured} | {verdict} |"


# -- the run: stores, servers and what to clean ---------------------------------------------------


@dataclass
class Built:
    """A store this run made, with what filling and cleaning it needs."""

    kind: str
    store: Any
    table: str = ""
    url: str = ""
    prefix: str = ""
    path: str = ""


@dataclass
class Run:
    """This run's set-up: its Redis prefix, tables and files; ``close_stores()``, then
    ``cleanup()``, remove them all."""

    args: argparse.Namespace
    prefix: str = field(default_factory=lambda: f"bench:{uuid.uuid4().hex}:")
    services: _apps.Services = field(default_factory=_apps.Services)
    tmpdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="sessionware-scale-"))
    redis_urls: set[str] = field(default_factory=set)
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    def unavailable(self, kind: str) -> str | None:
        """Why store ``kind`` cannot run here (None: it can)."""
        if kind not in self.args.stores and kind in STORES:
            return "not in --stores"
        reason = _apps.unavailable(FLAVOR_OF[kind], self.services)
        if reason is None and kind == "mysql" and not shutil.which("mariadb"):
            reason = "no mariadb client to fill and drop tables with"
        return reason

    def store(self, kind: str, *, db: int = 0, counter: list[int] | None = None) -> Built:
        """A fresh, empty store of ``kind`` (its own prefix, table or file). With ``counter``,
        its round trips to the server are counted there (Redis and PostgreSQL)."""
        if kind == "redis":
            from redis.asyncio import Redis

            from sessionware.stores import RedisSessionStore

            url = f"redis://127.0.0.1:6379/{db}"
            options = _apps.redis_options()
            if counter is not None:
                options["connection_class"] = counting_connection(counter)
            client = Redis.from_url(url, **options)
            self.closers.append(client.aclose)
            prefix = f"{self.prefix}{uuid.uuid4().hex[:8]}:"
            built = Built(kind, RedisSessionStore(client, key_prefix=prefix), url=url)
            built.prefix = prefix
            self.redis_urls.add(url)
        elif kind == "sqlite":
            from sessionware.stores import SQLiteSessionStore

            path = os.path.join(self.tmpdir, f"{uuid.uuid4().hex}.sqlite3")
            store = SQLiteSessionStore(path)
            built = Built(kind, store, table=getattr(store, "table", "sessions"), path=path)
        else:
            class_name, server = _apps.EXTRA_STORES[FLAVOR_OF[kind]]
            cls = _apps.store_class(class_name)
            url = _apps.POSTGRES_DSN if kind == "postgres" else _apps.MYSQL_DSN
            table = self.services.table(server)
            driver = {"init": counting_pool_init(counter)} if counter is not None else None
            store = _apps.construct(cls, url, table=table, driver_options=driver)
            built = Built(kind, store, table=table, url=url)
        close = getattr(built.store, "aclose", None)
        if close is not None:
            self.closers.append(close)
        return built

    async def close_stores(self) -> None:
        """Close every store and client (in the event loop that made them)."""
        while self.closers:
            close = self.closers.pop()
            try:
                await close()
            except Exception as exc:  # report and go on cleaning
                print(f"cleanup: {close!r}: {type(exc).__name__}: {exc}")

    async def cleanup(self) -> None:
        """Delete this run's Redis keys, drop its tables, remove its files."""
        for url in sorted(self.redis_urls):
            try:
                await _apps.delete_prefixed(self.prefix, url)
            except Exception as exc:
                print(f"cleanup: Redis keys {self.prefix}* in {url}: {type(exc).__name__}")
        for problem in await self.services.aclose():
            print(f"cleanup: {problem}")
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def counting_connection(counter: list[int]) -> type[Any]:
    """A redis-py asyncio connection class adding one to ``counter[0]`` per round trip (one
    packed send: a command, or a whole pipeline)."""
    from redis.asyncio.connection import Connection

    class Counting(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter[0] += 1
            await super().send_packed_command(command, check_health)

    return Counting


def counting_pool_init(counter: list[int]) -> Callable[[Any], Awaitable[None]]:
    """An asyncpg pool ``init`` hook: every statement a pooled connection sends (the pool's
    reset on release included) adds one to ``counter[0]``, through asyncpg's query logger."""

    def logged(record: Any) -> None:
        counter[0] += 1

    async def init(conn: Any) -> None:
        conn.add_query_logger(logged)

    return init


async def settle() -> None:
    """Let callbacks scheduled with ``call_soon`` (asyncpg's query loggers) run."""
    for _ in range(3):
        await asyncio.sleep(0)


def session_app(store: Any, routes: Sequence[Route] = (), **options: Any) -> Any:
    """The benchmark app behind sessionware's middleware over ``store`` (lazy, PRIVATE)."""
    middleware = Middleware(
        SessionwareMiddleware, store=store, key=Key.generate(), lazy=True, **options
    )
    return _apps.make_app(_apps.GETTERS["sessionware"], [middleware], routes)


def scope(path: str, cookie: bytes | None) -> dict[str, Any]:
    """``_apps.make_scope`` over https, as deployed (so Secure cookies draw no warning)."""
    return {**_apps.make_scope(path, cookie), "scheme": "https"}


async def new_session(app: Any, path: str = "/write", cookie_name: str = "id") -> bytes:
    """One request without a cookie to ``path``; the ``name=value`` of the cookie it set."""
    reply = await _apps.call(app, scope(path, None))
    cookie = reply.cookie(cookie_name)
    if reply.status != 200 or cookie is None:
        raise RuntimeError(f"{path} answered {reply.status} and set no {cookie_name} cookie")
    return cookie


# -- timing (the in-process parts) -----------------------------------------------------------------


async def timed_cycle(app: Any, scopes: Any, n: int) -> tuple[float, float]:
    """Mean µs per request over ``n`` requests, each taking the next scope of the endless
    iterator ``scopes`` (a fresh shallow copy): wall clock and this process's CPU time."""
    receive, discard = _apps.receive, _apps.discard
    cpu, start = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        await app(next(scopes).copy(), receive, discard)
    wall, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
    return wall / n / 1000, cpu / n / 1000


def cell(app: Any, scopes: Sequence[dict[str, Any]]) -> Measure:
    turn = itertools.cycle(scopes)
    return lambda n: timed_cycle(app, turn, n)


async def run_rounds(
    cells: dict[Cell, Measure], args: argparse.Namespace, rng: random.Random
) -> tuple[list[dict[Cell, float]], list[dict[Cell, float]]]:
    """Every cell in ``args.rounds`` rounds of ``args.passes`` passes; a pass runs one batch of
    each cell in a fresh shuffled order, a batch being about ``args.batch_ms`` of work (at least
    one request). A cell's value in a round: the median of its batch means (µs per request),
    on the wall clock and in this process's CPU time."""
    batch: dict[Cell, int] = {}
    for name, measure in cells.items():  # warm-up, and the batch that makes ~batch_ms
        await measure(1)
        wall, _ = await measure(2)
        batch[name] = max(1, min(2000, round(args.batch_ms * 1000 / max(wall, 1.0))))
        await measure(batch[name])
    gc.collect()
    gc.freeze()
    rounds: list[dict[Cell, float]] = []
    cpu_rounds: list[dict[Cell, float]] = []
    try:
        for _ in range(args.rounds):
            batches: dict[Cell, list[tuple[float, float]]] = {name: [] for name in cells}
            for _ in range(args.passes):
                order = list(cells)
                rng.shuffle(order)
                gc.collect()
                for name in order:
                    batches[name].append(await cells[name](batch[name]))
            rounds.append({c: statistics.median(w for w, _ in b) for c, b in batches.items()})
            cpu_rounds.append({c: statistics.median(u for _, u in b) for c, b in batches.items()})
    finally:
        gc.unfreeze()
    return rounds, cpu_rounds


def per_kb(label: str, big: Cell, small: Cell, kilobytes: float) -> Row:
    """µs per KB between two cells: (big - small) ÷ the KB between their states."""
    return Row(label, None, (big, small), lambda r: (r[big] - r[small]) / kilobytes)


def cells_table(
    title: str, names: Sequence[str], kinds: Sequence[str], rounds: list[dict[Cell, float]]
) -> None:
    """Each cell's median over rounds, µs per request, with its [min-max]."""
    print("")
    headers = [f"{KIND_LABELS[kind]} µs" for kind in kinds]
    cell_table(title, names, kinds, rounds, headers, column=26)


def per_kb_lines(
    plan: dict[str, list[int]],
    rounds: list[dict[Cell, float]],
    cpu_rounds: list[dict[Cell, float]],
) -> None:
    """µs per KB at each size: (the cell - the smallest state's) ÷ the KB between them, the
    median of per-round values, wall clock and (in brackets) CPU time."""
    print("")
    print("µs per KB of state at each size: (cell - the smallest state's) ÷ the KB between them,")
    print("  median over rounds, wall clock (and process CPU time)")
    for kind, store_sizes in plan.items():
        small = store_sizes[0]
        for shape in SHAPES:
            for request_kind in ("read", "write"):
                first = (f"{kind}/{shape}/{size_label(small)}", request_kind)
                parts = []
                for size in store_sizes[1:]:
                    last = (f"{kind}/{shape}/{size_label(size)}", request_kind)
                    kilobytes = (size - small) / 1000
                    wall, cpu = (
                        statistics.median((r[last] - r[first]) / kilobytes for r in values)
                        for values in (rounds, cpu_rounds)
                    )
                    parts.append(f"{size_label(size)} {wall:.1f} ({cpu:.1f})")
                label = f"{LABELS[kind]} {shape} {request_kind}"
                print(f"  {label:<32}" + " | ".join(parts))


# -- part 1: state size --------------------------------------------------------------------------

_FILLER = "x" * 80
_NOTE = "a small note"


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def make_state(shape: str, size: int) -> dict[str, Any]:
    """A state whose compact JSON is ``size`` bytes (or its smallest form, if larger): a counter
    plus string values (``flat``), or plus a list of small dicts (``nested``)."""
    state: dict[str, Any] = {"counter": 7}
    length = len(compact(state))
    if shape == "flat":
        for i in itertools.count():
            item = len(f',"f{i:05d}":"{_FILLER}"')
            if length + item > size:
                break
            state[f"f{i:05d}"] = _FILLER
            length += item
    else:
        items: list[dict[str, Any]] = []
        state["items"] = items
        length += len(',"items":[]')
        for i in itertools.count():
            entry = {"id": i, "sku": f"sku-{i:06d}", "qty": 1 + i % 5, "note": _NOTE}
            extra = len(compact(entry)) + (1 if items else 0)
            if length + extra > size:
                break
            items.append(entry)
            length += extra
    pad = size - length - len(',"pad":""')
    if pad > 0:
        state["pad"] = "x" * pad
    return state


def seed_routes(getter: _apps.Getter) -> list[Route]:
    """``/seed/{shape}/{size}``: put ``make_state(shape, size)`` into the session."""

    async def seed(request: Request) -> Response:
        session = await getter(request)
        state = make_state(request.path_params["shape"], request.path_params["size"])
        for key, value in state.items():
            session[key] = value
        return PlainTextResponse("ok")

    return [Route("/seed/{shape}/{size:int}", seed)]


async def part_state(args: argparse.Namespace, run: Run, rng: random.Random) -> None:
    print("\n## state size: one session's state, flat (strings) and nested (a list of dicts)")
    plan = {"cookie": args.cookie_sizes, "starlette": args.cookie_sizes}
    for kind in args.state_stores:
        reason = run.unavailable(kind)
        if reason is None:
            plan[kind] = args.state_sizes
        else:
            print(f"({LABELS[kind]} not measured: {reason})")
    cells: dict[Cell, Measure] = {}
    names: list[str] = []
    bare = _apps.build("bare")
    for kind, store_sizes in plan.items():
        services = run.services if kind in ("postgres", "mysql") else None
        flavor = _apps.build(
            FLAVOR_OF[kind], prefix=run.prefix, services=services, routes=seed_routes
        )
        run.closers.append(flavor.aclose)
        if kind == "redis":
            run.redis_urls.add(_apps.REDIS_URL)
        assert flavor.cookie_name is not None
        for shape in SHAPES:
            for size in store_sizes:
                path = f"/seed/{shape}/{size}"
                cookie = await new_session(flavor.app, path, flavor.cookie_name)
                name = f"{kind}/{shape}/{size_label(size)}"
                scopes = {k: scope(f"/{k}", cookie) for k in KINDS}
                for request_kind in KINDS:
                    reply = await _apps.call(flavor.app, scopes[request_kind])
                    if reply.status != 200 or (request_kind == "read" and reply.body != b"7"):
                        raise RuntimeError(f"{name} {request_kind}: {reply.status} {reply.body!r}")
                    cells[(name, request_kind)] = cell(flavor.app, [scopes[request_kind]])
                names.append(name)
                if kind == "cookie" and shape == "flat":  # the bare app with the same cookie
                    bare_name = f"bare/flat/{size_label(size)}"
                    cells[(bare_name, "ignore")] = cell(bare.app, [scopes["ignore"]])
                    names.append(bare_name)
    rounds, cpu_rounds = await run_rounds(cells, args, rng)
    print(
        f"{args.rounds} rounds x {args.passes} passes, a batch ~{args.batch_ms:g} ms of requests"
        " (at least one); read = load and read one key, write = counter + 1, untouched = the"
        " handler never touches the session (lazy=True: no load); server-side stores lazy=True"
    )
    cells_table("state (µs per request)", names, KINDS, rounds)
    per_kb_lines(plan, rounds, cpu_rounds)
    rows: list[Row] = []
    for kind, store_sizes in plan.items():
        label = LABELS[kind]
        small, large = store_sizes[0], store_sizes[-1]
        for size in store_sizes:
            flat, nested = f"{kind}/flat/{size_label(size)}", f"{kind}/nested/{size_label(size)}"
            for request_kind in ("read", "write"):
                rows.append(
                    ratio(
                        f"{label} {request_kind}, nested ÷ flat, {size_label(size)}",
                        None,
                        (nested, request_kind),
                        (flat, request_kind),
                    )
                )
        for shape in SHAPES:
            first, last = (
                f"{kind}/{shape}/{size_label(small)}",
                f"{kind}/{shape}/{size_label(large)}",
            )
            if large > small:
                for request_kind in ("read", "write"):
                    rows.append(
                        per_kb(
                            f"{label} {request_kind} µs per KB, {shape}"
                            f" ({size_label(small)} to {size_label(large)})",
                            (last, request_kind),
                            (first, request_kind),
                            (large - small) / 1000,
                        )
                    )
                rows.append(
                    ratio(
                        f"{label} untouched, {shape}, {size_label(large)} ÷ {size_label(small)}",
                        None,
                        (last, "ignore"),
                        (first, "ignore"),
                    )
                )
    for size in plan["cookie"]:
        for kind in ("cookie", "starlette"):
            rows.append(
                ratio(
                    f"{LABELS[kind]} untouched ÷ the bare app (sessionware's cookie of that"
                    f" state), flat {size_label(size)}",
                    1.15 if kind == "cookie" else None,
                    (f"{kind}/flat/{size_label(size)}", "ignore"),
                    (f"bare/flat/{size_label(size)}", "ignore"),
                )
            )
    ratio_table("state size (ratios within each round)", rows, rounds, cpu_rounds, {})


# -- part 5: the codec ----------------------------------------------------------------------------


def codec_state(typed: bool) -> dict[str, Any]:
    """A small cart-like state (~1.5 KB as JSON): JSON values, or the same made of the values
    ``TaggedJSON`` stores (datetimes, UUIDs, Decimals, sets, tuples)."""
    import datetime as dt
    import decimal

    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    state: dict[str, Any] = {"counter": 7}
    for i in range(8):
        line = {
            "id": uuid.UUID(int=i),
            "at": when + dt.timedelta(minutes=i),
            "price": decimal.Decimal(f"{i}.90"),
            "tags": {"a", "b"},
            "size": (i, i + 1),
        }
        state[f"line{i}"] = (
            line
            if typed
            else {k: v if isinstance(v, int) else str(v) for k, v in line.items()}
            | {"tags": ["a", "b"], "size": [i, i + 1]}
        )
    return state


def codec_routes(getter: _apps.Getter) -> list[Route]:
    """``/seed/{typed}``: put ``codec_state(typed == 1)`` into the session."""

    async def seed(request: Request) -> Response:
        session = await getter(request)
        for key, value in codec_state(request.path_params["typed"] == 1).items():
            session[key] = value
        return PlainTextResponse("ok")

    return [Route("/seed/{typed:int}", seed)]


async def part_codec(args: argparse.Namespace, run: Run, rng: random.Random) -> None:
    print("\n## codec: TaggedJSON against plain JSON (cookie and memory stores)")
    codec_of = getattr(sessionware, "TaggedJSON", None)
    if codec_of is None:
        print("(not measured: this sessionware has no TaggedJSON)")
        return
    from sessionware.stores import CookieSessionStore, MemorySessionStore

    stores: dict[str, Callable[[], Any]] = {
        "cookie": CookieSessionStore,
        "memory": MemorySessionStore,
    }
    routes = codec_routes(_apps.GETTERS["sessionware"])
    cells: dict[Cell, Measure] = {}
    names: list[str] = []
    for store_name, make in stores.items():
        for config, typed in (("json", False), ("codec", False), ("codec", True)):
            options = {"codec": codec_of()} if config == "codec" else {}
            app = session_app(make(), routes, **options)
            cookie = await new_session(app, f"/seed/{int(typed)}")
            name = f"{store_name}/{config}/{'typed' if typed else 'json'} values"
            for request_kind in ("read", "write"):
                request_scope = scope(f"/{request_kind}", cookie)
                reply = await _apps.call(app, request_scope)
                if reply.status != 200:
                    raise RuntimeError(f"{name} {request_kind}: {reply.status} {reply.body!r}")
                cells[(name, request_kind)] = cell(app, [request_scope])
            names.append(name)
    rounds, cpu_rounds = await run_rounds(cells, args, rng)
    cells_table("codec (µs per request)", names, ("read", "write"), rounds)
    rows: list[Row] = []
    for store_name in stores:
        plain = f"{store_name}/json/json values"
        for other in ("codec/json values", "codec/typed values"):
            for request_kind in ("read", "write"):
                rows.append(
                    ratio(
                        f"{store_name} {request_kind}, {other} ÷ no codec",
                        None,
                        (f"{store_name}/{other}", request_kind),
                        (plain, request_kind),
                    )
                )
    ratio_table("codec (ratios within each round)", rows, rounds, cpu_rounds, {})


# -- part 2: stored sessions ---------------------------------------------------------------------


def fill_id(tag: str, i: int) -> str:
    """The id of filler ``i``: the shape of a hashed key (SHA-256 hex), in random order."""
    return hashlib.sha256(f"{tag}:{i}".encode()).hexdigest()


async def fill(built: Built, count: int, tag: str) -> int:
    """Add ``count`` copies of one of the store's records under fresh ids, in bulk, and have
    an SQL database analyze the table (whatever ``count``); how many records it then holds."""
    if built.kind == "redis":
        return await _fill_redis(built, count, tag)
    if built.kind == "postgres":
        return await _fill_postgres(built, count, tag)
    if built.kind == "mysql":
        return await asyncio.to_thread(_fill_mysql, built, count, tag)
    return await asyncio.to_thread(_fill_sqlite, built, count, tag)


# SET prefix..id value PX ttl for each id: 5,000 a call, so Redis is never held for long.
_COPY = """
for i = 3, #ARGV do redis.call('SET', KEYS[1] .. ARGV[i], ARGV[1], 'PX', ARGV[2]) end
"""


async def _fill_redis(built: Built, count: int, tag: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(built.url, **_apps.redis_options())
    try:
        template = None
        async for key in client.scan_iter(match=f"{built.prefix}*", count=1000):
            if await client.type(key) in (b"string", "string"):
                template = key
                break
        if template is None:
            raise RuntimeError("Redis: no record to copy under this run's prefix")
        value, ttl_ms = await client.get(template), max(60_000, await client.pttl(template))
        for start in range(0, count, 5000):
            ids = [fill_id(tag, i) for i in range(start, min(count, start + 5000))]
            await client.eval(_COPY, 1, built.prefix, value, ttl_ms, *ids)
        held = 0
        async for _ in client.scan_iter(match=f"{built.prefix}*", count=10_000):
            held += 1
        return held
    finally:
        await client.aclose()


def _quote(name: str, mark: str = '"') -> str:
    return mark + name.replace(mark, mark * 2) + mark


async def _fill_postgres(built: Built, count: int, tag: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(_apps.POSTGRES_DSN, timeout=10)
    try:
        table = _quote(built.table)
        keys = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
            built.table,
        )
        columns = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            built.table,
        )
        if len(keys) != 1:
            raise RuntimeError(f"PostgreSQL: {built.table} has no one-column primary key")
        key = keys[0]["attname"]
        others = [row["attname"] for row in columns if row["attname"] != key]
        statement = (
            f"INSERT INTO {table} ({_quote(key)}, {', '.join(_quote(c) for c in others)})"
            " SELECT encode(sha256(convert_to($1::text || ':' || g, 'UTF8')), 'hex'),"
            f" {', '.join('t.' + _quote(c) for c in others)}"
            f" FROM (SELECT * FROM {table} LIMIT 1) t, generate_series($2::int, $3::int) g"
        )
        for start in range(0, count, 100_000):
            await conn.execute(statement, tag, start, min(count, start + 100_000) - 1)
        await conn.execute(f"ANALYZE {table}")
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


def _mariadb(sql: str) -> str:
    client = shutil.which("mariadb") or shutil.which("mysql")
    assert client is not None  # Run.unavailable() said so otherwise
    argv = [client, "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B", "test", "-e", sql]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800).stdout


def _fill_mysql(built: Built, count: int, tag: str) -> int:
    name = built.table.rsplit(".", 1)[-1]
    columns = [
        line.split("\t")
        for line in _mariadb(
            "SELECT column_name, column_key FROM information_schema.columns WHERE"
            f" table_schema = DATABASE() AND table_name = '{name}' ORDER BY ordinal_position"
        ).splitlines()
    ]
    keys = [column for column, flag in columns if flag == "PRI"]
    if len(keys) != 1:
        raise RuntimeError(f"MariaDB: {name} has no one-column primary key")
    others = [_quote(column, "`") for column, _ in columns if column != keys[0]]
    table = _quote(name, "`")
    for start in range(0, count, 100_000):
        end = min(count, start + 100_000) - 1
        _mariadb(
            f"INSERT INTO {table} ({_quote(keys[0], '`')}, {', '.join(others)})"
            f" SELECT SHA2(CONCAT('{tag}:', seq), 256), {', '.join('t.' + c for c in others)}"
            f" FROM (SELECT * FROM {table} LIMIT 1) t JOIN seq_{start}_to_{end}"
        )
    _mariadb(f"ANALYZE TABLE {table}")
    return int(_mariadb(f"SELECT count(*) FROM {table}").strip())


def _fill_sqlite(built: Built, count: int, tag: str) -> int:
    conn = sqlite3.connect(built.path, timeout=30)
    try:
        table = _quote(built.table)
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        keys = [row[1] for row in info if row[5]]
        if len(keys) != 1:
            raise RuntimeError(f"SQLite: {built.table} has no one-column primary key")
        others = [row[1] for row in info if row[1] != keys[0]]
        names = ", ".join(_quote(c) for c in [keys[0], *others])
        template = conn.execute(
            f"SELECT {', '.join(_quote(c) for c in others)} FROM {table} LIMIT 1"
        ).fetchone()
        marks = ", ".join("?" * (len(others) + 1))
        with conn:
            conn.executemany(
                f"INSERT INTO {table} ({names}) VALUES ({marks})",
                ((fill_id(tag, i), *template) for i in range(count)),
            )
        conn.execute("ANALYZE")
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def part_stored(args: argparse.Namespace, run: Run, rng: random.Random) -> None:
    print("\n## stored sessions: a read and a write while N other sessions sit in the store")
    levels = [0, *args.sessions]
    cells: dict[Cell, Measure] = {}
    kinds = []
    for kind in STORES:
        reason = run.unavailable(kind)
        if reason is not None:
            print(f"({LABELS[kind]} not measured: {reason})")
            continue
        kinds.append(kind)
        for number, level in enumerate(levels):
            built = run.store(kind, db=args.redis_db + number)
            app = session_app(built.store)
            cookies = [await new_session(app) for _ in range(args.probes)]
            began = time.monotonic()
            held = await fill(built, level, uuid.uuid4().hex[:8])
            if level:
                print(
                    f"filled {LABELS[kind]} with {level:,} copies of a stored session in"
                    f" {time.monotonic() - began:.1f} s ({held:,} records now)"
                )
            name = f"{kind}/{level}"
            for request_kind in ("read", "write"):
                scopes = [scope(f"/{request_kind}", c) for c in cookies]
                reply = await _apps.call(app, scopes[0])
                if reply.status != 200:
                    raise RuntimeError(f"{name} {request_kind} answered {reply.status}")
                cells[(name, request_kind)] = cell(app, scopes)
    if not cells:
        return
    rounds, cpu_rounds = await run_rounds(cells, args, rng)
    print(
        f"{args.rounds} rounds x {args.passes} passes; each request takes the next of"
        f" {args.probes} sessions (a counter each), among N copies of such a record filed under"
        " random SHA-256 ids (every SQL table ANALYZEd, the probes' alone too; Redis: each N"
        f" in a database of its own, from {args.redis_db})"
    )
    names = [f"{kind}/{level}" for kind in kinds for level in levels]
    cells_table("store/sessions (µs per request)", names, ("read", "write"), rounds)
    rows = []
    for kind in kinds:
        for level in args.sessions:
            for request_kind in ("read", "write"):
                rows.append(
                    ratio(
                        f"{LABELS[kind]} {request_kind} with {level:,} sessions stored"
                        f" ÷ with the {args.probes} probed alone",
                        None,
                        (f"{kind}/{level}", request_kind),
                        (f"{kind}/0", request_kind),
                    )
                )
    ratio_table("stored sessions (ratios within each round)", rows, rounds, cpu_rounds, {})


# -- part 3: sessions per user --------------------------------------------------------------------


def admin_calls(store: Any) -> tuple[str, Any, Any]:
    """(what is used, list a user's sessions, end them all): ``sessionware.SessionAdmin(store)``
    where this version has it, else the store's own ``sessions_for`` / ``delete_all_for``."""
    admin_class = getattr(sessionware, "SessionAdmin", None)
    if admin_class is not None:
        admin = admin_class(store)
        return "SessionAdmin(store)", admin.sessions_for, admin.end_all_for
    return "store.sessions_for / delete_all_for", store.sessions_for, store.delete_all_for


def login_routes(getter: _apps.Getter) -> list[Route]:
    """``/login/{user}``: bind a new session to ``user``."""

    async def login(request: Request) -> Response:
        session = await getter(request)
        session.bind_user(request.path_params["user"])  # type: ignore[attr-defined]
        session["counter"] = 1
        return PlainTextResponse("ok")

    return [Route("/login/{user}", login)]


async def bind_sessions(app: Any, user: str, count: int) -> None:
    """``count`` new sessions bound to ``user``, 16 requests at a time."""
    gate = asyncio.Semaphore(16)

    async def one() -> None:
        async with gate:
            await new_session(app, f"/login/{user}")

    await asyncio.gather(*(one() for _ in range(count)))


@dataclass
class AdminTiming:
    list_ms: list[float] = field(default_factory=list)
    end_ms: list[float] = field(default_factory=list)
    list_trips: list[int] = field(default_factory=list)
    end_trips: list[int] = field(default_factory=list)


async def part_user(args: argparse.Namespace, run: Run, rng: random.Random) -> None:
    print("\n## sessions per user: list and end all of N sessions bound to one user")
    setups: dict[str, tuple[Any, list[int] | None, Any, Any]] = {}
    used = ""
    for kind in STORES:
        reason = run.unavailable(kind)
        if reason is not None:
            print(f"({LABELS[kind]} not measured: {reason})")
            continue
        counter = [0] if kind in ("redis", "postgres") else None
        try:
            built = run.store(kind, counter=counter)
        except RuntimeError as exc:  # a factory that passes no pool options: no count
            print(f"({LABELS[kind]}: round trips not counted: {exc})")
            counter, built = None, run.store(kind)
        used, listing, ending = admin_calls(built.store)
        app = session_app(built.store, login_routes(_apps.GETTERS["sessionware"]))
        setups[kind] = (app, counter, listing, ending)
    if not setups:
        return
    timings = {(kind, n): AdminTiming() for kind in setups for n in args.per_user}
    ratios: dict[tuple[str, int], list[float]] = {key: [] for key in timings}
    for _ in range(args.user_rounds):
        order = list(timings)
        rng.shuffle(order)
        ended_ms: dict[tuple[str, int], float] = {}
        for kind, n in order:
            app, counter, listing, ending = setups[kind]
            user = f"bench-user-{uuid.uuid4().hex}"
            await bind_sessions(app, user, n)
            timing = timings[(kind, n)]
            await settle()
            trips = counter or [0]
            trips[0] = 0
            began = time.perf_counter()
            found = await listing(user)
            timing.list_ms.append((time.perf_counter() - began) * 1000)
            await settle()
            timing.list_trips.append(trips[0] if counter else -1)
            if len(found) != n:
                raise RuntimeError(f"{LABELS[kind]}: listed {len(found)} of {n} sessions")
            trips[0] = 0
            began = time.perf_counter()
            await ending(user)
            timing.end_ms.append((time.perf_counter() - began) * 1000)
            ended_ms[(kind, n)] = timing.end_ms[-1]
            await settle()
            timing.end_trips.append(trips[0] if counter else -1)
            left = await listing(user)
            if left:
                raise RuntimeError(f"{LABELS[kind]}: {len(left)} of {n} sessions outlived end-all")
        for kind, n in timings:
            ratios[(kind, n)].append(ended_ms[(kind, n)] / ended_ms[(kind, args.per_user[0])])
    print(
        f"{args.user_rounds} rounds, each in a shuffled order: bind N new sessions to a fresh user"
        f" (through the middleware), then time listing them and ending them all; API: {used}."
        " Round trips: packed sends of the Redis client (a pipeline is one); statements asyncpg"
        " sent (the pool's reset on release included); '-' where not counted"
    )
    print("")
    print(
        "| store | sessions | list ms | list µs/session | list round trips"
        " | end all ms | end all µs/session | end all round trips |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def counted(values: list[int]) -> str:
        return "-" if min(values) < 0 else f"{statistics.median(values):g}"

    for (kind, n), timing in timings.items():
        print(
            f"| {LABELS[kind]} | {n:,} | {spread(timing.list_ms, 1, 1)}"
            f" | {statistics.median(timing.list_ms) * 1000 / n:.0f} | {counted(timing.list_trips)}"
            f" | {spread(timing.end_ms, 1, 1)} | {statistics.median(timing.end_ms) * 1000 / n:.0f}"
            f" | {counted(timing.end_trips)} |"
        )
    print("")
    print("| sessions per user | target | measured: median [min-max] over rounds | verdict |")
    print("|---|---|---|---|")
    for (kind, n), timing in timings.items():
        judged = n == 1000 and kind in ("redis", "postgres")  # the admin issue's target
        verdict = "info"
        if judged:
            verdict = "PASS" if statistics.median(timing.end_ms) <= 100 else "MISS"
        label = f"{LABELS[kind]}: end all {n:,} sessions of one user, ms"
        print(row_line(label, "≤ 100" if judged else "—", spread(timing.end_ms, 1, 1), verdict))
        if n != args.per_user[0]:
            label = f"{LABELS[kind]}: end all, {n:,} sessions ÷ {args.per_user[0]:,} (same round)"
            print(row_line(label, "—", spread(ratios[(kind, n)]), "info"))


# -- part 4: concurrency (uvicorn + wrk) --------------------------------------------------------

# handler -> (path, what it does); /write and /read are _apps.make_app's routes.
HANDLERS = {
    "assign": ("/write", 'session["counter"] = session.get("counter", 0) + 1'),
    "update": ("/update", 'session.update_or("counter", 1, lambda n: n + 1)'),
}


def plus_one(n: int) -> int:
    return n + 1


class Acknowledged:
    """Counts the 2xx responses the write routes start, in ``stats["ok:<path>"]``: sessionware
    commits a write before its response starts, so each one is an acknowledged increment."""

    def __init__(self, app: Any, stats: Counter[str]) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in ("/write", "/update"):
            await self.app(scope, receive, send)
            return

        async def counting(message: Any) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                self.stats[f"ok:{path}"] += 1
            await send(message)

        await self.app(scope, receive, counting)


def concurrency_app() -> Any:
    """uvicorn factory of the concurrency part: the benchmark app with a plain dict
    ($SESSIONWARE_BENCH_FLAVOR=bare) or sessionware over Redis (sw-redis), plus ``/update``
    (``update_or``, where it exists), ``/stats`` (acknowledged writes and, where ``on_event``
    exists, events by kind) and ``/imported`` (where sessionware came from)."""
    name = os.environ.get("SESSIONWARE_BENCH_FLAVOR", "bare")
    prefix = os.environ.get("SESSIONWARE_BENCH_PREFIX", "bench:scale:")
    stats: Counter[str] = Counter()
    middleware: list[Middleware] = []
    getter = _apps.GETTERS["bare"]
    if name != "bare":
        from sessionware.stores import RedisSessionStore

        store = RedisSessionStore.from_url(_apps.REDIS_URL, key_prefix=prefix + "sessionware:")
        options: dict[str, Any] = {"store": store, "key": Key.generate(), "lazy": True}
        if _apps.accepts_on_event():

            def count_event(event: object) -> None:
                stats["event:" + str(getattr(event, "kind", type(event).__name__))] += 1

            options["on_event"] = count_event
        middleware = [Middleware(SessionwareMiddleware, **options)]
        getter = _apps.GETTERS["sessionware"]

    async def update(request: Request) -> Response:
        session = await getter(request)
        session.update_or("counter", 1, plus_one)  # type: ignore[attr-defined]
        return PlainTextResponse("ok")

    async def report(request: Request) -> Response:
        return JSONResponse(dict(stats))

    async def imported(request: Request) -> Response:
        return PlainTextResponse(str(Path(sessionware.__file__).parent))

    routes = [Route("/stats", report), Route("/imported", imported)]
    if name != "bare" and hasattr(Session, "update_or"):
        routes.append(Route("/update", update))
    return Acknowledged(_apps.make_app(getter, middleware, routes), stats)


class Http:
    """One keep-alive connection to a server under test, for set-up and bookkeeping requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, cookie: str | None = None) -> tuple[int, bytes, str | None]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
                response = self.conn.getresponse()
                return response.status, response.read(), response.getheader("set-cookie")
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def new_session(self) -> str:
        status, _, set_cookie = self.get("/write")
        if status != 200 or not set_cookie or not set_cookie.startswith("id="):
            raise RuntimeError(f"/write answered {status} and set no session cookie")
        return set_cookie.split(";", 1)[0]

    def counter(self, cookie: str) -> int:
        status, body, _ = self.get("/read", cookie)
        if status != 200:
            raise RuntimeError(f"/read answered {status}")
        return int(body)

    def stats(self) -> Counter[str]:
        """The server's counts once it is idle (no write acknowledged for 50 ms)."""
        last: Counter[str] | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body, _ = self.get("/stats")
            if status != 200:
                raise RuntimeError(f"/stats answered {status}")
            now = Counter(json.loads(body))
            if now == last:
                return now
            last = now
            time.sleep(0.05)
        raise RuntimeError("the server kept acknowledging writes for 30 s after the load")


def lua_script(directory: str, cookies: Sequence[str]) -> str:
    """A wrk script sending the cookies in turn, one a request (so with N connections and 4N
    cookies no two requests in flight share a session); its path."""
    path = os.path.join(directory, f"cookies-{uuid.uuid4().hex}.lua")
    lines = ["local cookies = {", *(f"  {json.dumps(c)}," for c in cookies), "}"]
    lines += [
        "local requests, i = {}, 0",
        "function init(args)",
        "  for n, cookie in ipairs(cookies) do",
        '    requests[n] = wrk.format(nil, nil, {["Cookie"] = cookie})',
        "  end",
        "end",
        "function request()",
        "  i = i % #requests + 1",
        "  return requests[i]",
        "end",
    ]
    with open(path, "w") as script:
        script.write("\n".join(lines) + "\n")
    return path


@dataclass
class Load:
    """One cell's run: wrk's (or Python's) figures and the server's bookkeeping."""

    rps: float
    p50: float
    p99: float
    errors: int
    requests: int
    acknowledged: int = 0
    rose: int = 0
    retries: int = 0
    conflicts: int = 0


BUILDS = {"bare": "bare app", "sw": "this tree", "before": "--baseline"}


def part_concurrency(args: argparse.Namespace, run: Run, rng: random.Random) -> bool:
    """The concurrency part; False when its bookkeeping does not add up."""
    print("\n## concurrency: uvicorn (1 worker) + a load generator, writes to Redis sessions")
    if "redis" not in args.stores or not _apps.redis_reachable():
        why = "not in --stores" if "redis" not in args.stores else "Redis is not reachable"
        print(f"(not measured: {why})")
        return True
    wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and wrk is None:
        print("(not measured: wrk is not installed; Debian: apt-get install wrk)")
        return True
    builds = ["sw", *(["before"] if args.baseline else [])]
    logdir = os.path.join(run.tmpdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    run.redis_urls.add(_apps.REDIS_URL)
    factory = "bench_scale:concurrency_app"
    servers: dict[str, bench_e2e.Server] = {}
    results: dict[tuple[int, str, str, str], list[Load]] = {}
    clients: dict[str, Http] = {}
    try:
        with ThreadPoolExecutor(3) as pool:  # the servers start side by side
            flavors = {"bare": ("bare", {}), "sw": ("sw-redis", {})}
            if args.baseline:
                flavors["before"] = ("sw-redis", {"PYTHONPATH": args.baseline})
            starting = {
                name: pool.submit(bench_e2e.Server, flavor, run.prefix, logdir, factory, env, name)
                for name, (flavor, env) in flavors.items()
            }
            for name, future in starting.items():
                try:
                    servers[name] = future.result()
                except Exception as exc:
                    failure = exc
        if len(servers) < len(starting):
            raise RuntimeError(f"a server did not start: {failure}")
        clients = {name: Http(server.port) for name, server in servers.items()}
        seen = {name: client.stats() for name, client in clients.items()}
        for build in builds:
            where = clients[build].get("/imported")[1].decode()
            print(f"the {BUILDS[build]} server imported sessionware from {where}")
        distinct: dict[str, list[str]] = {}
        shared: dict[str, str] = {}
        handlers: dict[str, list[str]] = {}
        last: dict[str, int] = {}
        scripts: dict[tuple[str, int, str], str] = {}
        for build in builds:
            sw = clients[build]
            distinct[build] = [sw.new_session() for _ in range(4 * max(args.connections))]
            shared[build] = sw.new_session()
            has_update = sw.get("/update", shared[build])[0] == 200
            handlers[build] = ["assign", *(["update"] if has_update else [])]
            last.update({c: sw.counter(c) for c in [*distinct[build], shared[build]]})
            one = lua_script(logdir, [shared[build]])
            for conns in args.connections:
                scripts[(build, conns, "distinct")] = lua_script(
                    logdir, distinct[build][: 4 * conns]
                )
                scripts[(build, conns, "shared")] = one
        for conns in args.connections:
            scripts[("bare", conns, "bare")] = scripts[("sw", conns, "distinct")]
        variants = [("bare", "bare", "assign")] + [
            (b, s, h) for b in builds for h in handlers[b] for s in ("distinct", "shared")
        ]

        def load(conns: int, build: str, sessions: str, handler: str, seconds: float) -> Load:
            server, client = servers[build], clients[build]
            if build == "bare":
                cookies = distinct["sw"][: 4 * conns]
            else:
                cookies = [shared[build]] if sessions == "shared" else distinct[build][: 4 * conns]
            path = HANDLERS[handler][0]
            before = seen[build]
            options = argparse.Namespace(threads=1, connections=conns)
            if wrk:
                script = scripts[(build, conns, sessions)]
                figures = bench_e2e.run_wrk(wrk, server.port, path, None, seconds, options, script)
            else:
                figures = bench_e2e.run_python(server.port, path, cookies, seconds, options)
            after = seen[build] = client.stats()
            result = Load(*figures[:3], int(figures[3]), int(figures[4]))
            result.acknowledged = after[f"ok:{path}"] - before[f"ok:{path}"]
            result.retries = after["event:merge_retry"] - before["event:merge_retry"]
            result.conflicts = after["event:conflict_ended"] - before["event:conflict_ended"]
            if build != "bare":
                for cookie in dict.fromkeys(cookies):
                    now = client.counter(cookie)
                    result.rose += now - last[cookie]
                    last[cookie] = now
            return result

        if args.warmup > 0:
            for conns in args.connections:
                for variant in variants:
                    load(conns, *variant, args.warmup)
        for _ in range(args.load_rounds):
            for conns in rng.sample(args.connections, len(args.connections)):
                for variant in rng.sample(variants, len(variants)):
                    key = (conns, *variant)
                    results.setdefault(key, []).append(load(conns, *variant, args.seconds))
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()
    report_concurrency(args, results, variants, tool="wrk" if wrk else "python (httpx)")
    overcounted = [
        key for key, runs in results.items() if any(r.rose > r.acknowledged for r in runs)
    ]
    for conns, build, sessions, handler in overcounted:
        print(
            f"CHECK FAILED: {BUILDS[build]}, {sessions} sessions, {handler}, {conns} connections:"
            " the counters rose by more than the writes acknowledged (the bookkeeping is broken)"
        )
    return not overcounted


def report_concurrency(
    args: argparse.Namespace,
    results: dict[tuple[int, str, str, str], list[Load]],
    variants: list[tuple[str, str, str]],
    tool: str,
) -> None:
    events = _apps.accepts_on_event()
    print(
        f"load by {tool} (-t1, the connections below), {args.load_rounds} rounds x"
        f" {args.seconds:g} s per cell in shuffled order, after {args.warmup:g} s warm-up;"
        " distinct = each request takes the next of 4 x connections sessions, shared = one"
        " session for all; acknowledged = 2xx responses the server started; lost ="
        " acknowledged - what the session's counter rose by; CAS attempts per write ="
        " (acknowledged + MergeRetry events) ÷ acknowledged"
    )
    if args.baseline:
        print(f"  build: this tree, or before = sessionware from {args.baseline} (same run)")
    for name, (path, text) in HANDLERS.items():
        print(f"  handler {name} ({path}): {text}")
    print("")
    print(
        "| connections | build | sessions | handler | req/s | req/s ÷ bare | p50 ms | p99 ms"
        " | errors | acknowledged | counter rose | lost | CAS attempts/write |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for conns in args.connections:
        bare = results[(conns, "bare", "bare", "assign")]
        for build, sessions, handler in variants:
            runs = results[(conns, build, sessions, handler)]
            versus = [r.rps / b.rps if b.rps else 0.0 for r, b in zip(runs, bare, strict=True)]
            acknowledged = sum(r.acknowledged for r in runs)
            bookkeeping = "| — | — |"
            if sessions != "bare":
                lost = acknowledged - sum(r.rose for r in runs)
                attempts = (
                    f"{(acknowledged + sum(r.retries for r in runs)) / acknowledged:.2f}"
                    if events and acknowledged
                    else "—"
                )
                bookkeeping = f"| {sum(r.rose for r in runs)} | {lost} | {attempts} |"
            print(
                f"| {conns} | {BUILDS[build]} | {sessions} | {handler}"
                f" | {statistics.median(r.rps for r in runs):.0f}"
                f" | {spread(versus)} | {statistics.median(r.p50 for r in runs):.2f}"
                f" | {statistics.median(r.p99 for r in runs):.2f}"
                f" | {sum(r.errors for r in runs)} | {acknowledged} {bookkeeping}"
            )
    if not events:
        print("(CAS attempts not observable: this SessionMiddleware has no on_event)")
    print("")
    print("| concurrency | target | measured: median [min-max] over rounds | verdict |")
    print("|---|---|---|---|")
    top = max(args.connections)
    for build in dict.fromkeys(b for b, _, _ in variants if b != "bare"):
        which = "" if build == "sw" else "before: "
        for handler in HANDLERS:
            if (top, build, "shared", handler) not in results:
                label = f"{which}handler {handler}"
                print(row_line(label, "—", "not measured (no session.update_or)", "—"))
                continue
            for conns in args.connections:
                shared, distinct = (
                    results[(conns, build, "shared", handler)],
                    results[(conns, build, "distinct", handler)],
                )
                p99 = [
                    s.p99 / d.p99 if d.p99 else 0.0 for s, d in zip(shared, distinct, strict=True)
                ]
                judged = handler == "assign" and conns == top
                label = (
                    f"{which}p99, one shared session ÷ distinct sessions, {conns} connections,"
                    f" {handler}"
                )
                verdict = "PASS" if statistics.median(p99) <= 5 else "MISS"
                target = "≤ 5.00" if judged else "—"
                print(row_line(label, target, spread(p99), verdict if judged else "info"))
            for conns in args.connections:
                for sessions in ("shared", "distinct"):
                    runs = results[(conns, build, sessions, handler)]
                    lost = sum(r.acknowledged - r.rose for r in runs)
                    label = f"{which}increments lost, {handler}, {sessions} sessions, {conns} connections"
                    if handler == "update":
                        print(row_line(label, "≤ 0", str(lost), "PASS" if lost <= 0 else "MISS"))
                    else:
                        print(row_line(label, "—", str(lost), "info"))


# -- the run ---------------------------------------------------------------------------------------


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def header(args: argparse.Namespace) -> None:
    admin = "yes" if hasattr(sessionware, "SessionAdmin") else "no (the stores' own methods)"
    print(
        f"bench_scale: Python {platform.python_version()} ({platform.machine()}),"
        f" {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())};"
        f" starlette {version('starlette')}, redis-py {version('redis')},"
        f" asyncpg {version('asyncpg')}, uvicorn {version('uvicorn')}"
    )
    print(
        f"sessionware {version('sessionware')} imported from {Path(sessionware.__file__).parent};"
        f" on_event: {'yes' if _apps.accepts_on_event() else 'no'}; SessionAdmin: {admin};"
        f" session.update_or: {'yes' if hasattr(Session, 'update_or') else 'no'};"
        f" parts: {','.join(args.parts)}; seed {args.seed}"
    )


async def in_process(args: argparse.Namespace, run: Run, rng: random.Random) -> None:
    """The parts that run in this process's event loop; their stores close in it too."""
    try:
        parts = (
            ("state", part_state),
            ("stored", part_stored),
            ("user", part_user),
            ("codec", part_codec),
        )
        for name, part in parts:
            if name in args.parts:
                began = time.monotonic()
                await part(args, run, rng)
                print(f"({name} part: {time.monotonic() - began:.0f} s)")
    finally:
        await run.close_stores()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header(args)
    rng = random.Random(args.seed)
    run = Run(args)
    began = time.monotonic()
    counted = True
    try:
        asyncio.run(in_process(args, run, rng))
        if "concurrency" in args.parts:
            start = time.monotonic()
            counted = part_concurrency(args, run, rng)
            print(f"(concurrency part: {time.monotonic() - start:.0f} s)")
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"setup failed: {type(exc).__name__}: {exc}")
        return 2
    finally:
        asyncio.run(run.cleanup())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntook {time.monotonic() - began:.0f} s; load average at the end {load}")
    # Targets are measurements (a miss is reported, not fatal); the bookkeeping is a check.
    return 0 if counted else 1


if __name__ == "__main__":
    sys.exit(main())
