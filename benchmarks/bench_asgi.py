"""In-process benchmark: the same Starlette app behind each session library, driven by raw ASGI.

    .venv/bin/python benchmarks/bench_asgi.py [--rounds 5] [--requests 2000] [--only a,b]

No network and no HTTP client: each request is ``await app(scope, receive, send)`` with a
prebuilt scope. Every cell of the table is the median over ``--rounds`` rounds of the mean
µs per request over ``--requests`` requests, after one warm-up batch of the same size; rounds
interleave every configuration so drift on a busy machine hits them all alike. The same run
measures the Redis floor (redis-py asyncio GET and SET) and prints each target with PASS/MISS.
Exit status: 0 even when a target is missed (it is a measurement); 1 when a CHECK (Redis
commands per request) fails; 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _apps
from _apps import KINDS, Flavor

import sessionware
from sessionware import TtlExtensionPolicy

DEFAULT = [
    "bare",
    "null-mw",
    "starlette",
    "starsessions-cookie",
    "starsessions-redis",
    "sw-cookie-private",
    "sw-cookie-signed",
    "sw-memory",
    "sw-redis",
    "sw-sqlite",
]
# Commands that never change data; anything else a store sends counts as a write.
READ_ONLY = frozenset({"GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN"})
SESSIONWARE_STORES = ["sw-cookie-private", "sw-cookie-signed", "sw-memory", "sw-redis", "sw-sqlite"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (median taken)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell per round")
    parser.add_argument(
        "--only", default="", help="comma-separated configurations (default: the standard set)"
    )
    parser.add_argument(
        "--with-eager",
        action="store_true",
        help="also run the server-side sessionware stores with lazy=False",
    )
    parser.add_argument("--no-redis", action="store_true", help="leave out every Redis part")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    return args


# -- timing --------------------------------------------------------------------------------------


async def timed_requests(app: Any, scope: dict[str, Any], n: int) -> float:
    """Mean µs per request over ``n`` requests of ``scope`` (a fresh shallow copy each)."""
    receive, discard, copy = _apps.receive, _apps.discard, scope.copy
    start = time.perf_counter_ns()
    for _ in range(n):
        await app(copy(), receive, discard)
    return (time.perf_counter_ns() - start) / n / 1000


async def timed_calls(call: Any, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await call()
    return (time.perf_counter_ns() - start) / n / 1000


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


# -- checks outside the timed loops ----------------------------------------------------------


async def sanity(flavor: Flavor, scopes: dict[str, dict[str, Any]]) -> list[str]:
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
        if ignore.header(b"set-cookie") or ignore.header(b"vary"):
            problems.append("an ignored session touched the response headers")
    if problems:
        raise RuntimeError(f"{flavor.name}: " + "; ".join(problems))
    return problems


class ServerLog:
    """MONITOR on a connection of its own: what Redis itself runs on keys under ``prefix``,
    commands inside scripts included (as ``lua:NAME``). Bounded: stops at a marker command."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def run(self, action: Any) -> Counter[str]:
        from redis.asyncio import Redis

        seen: Counter[str] = Counter()
        client = Redis.from_url(_apps.REDIS_URL, **_apps.redis_options())
        marker = f"{self.prefix}monitor-end:{uuid.uuid4().hex}"
        try:
            async with client.monitor() as monitor:
                await action()
                marker_client = Redis.from_url(_apps.REDIS_URL, **_apps.redis_options())
                try:
                    await marker_client.get(marker)
                finally:
                    await marker_client.aclose()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    info = await asyncio.wait_for(monitor.next_command(), timeout=10)
                    command = info["command"]
                    if marker in command:
                        break
                    if self.prefix in command:
                        name = command.split(" ", 1)[0].upper()
                        seen[f"lua:{name}" if info.get("client_type") == "lua" else name] += 1
        finally:
            await client.aclose()
        return seen


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
            scopes = _apps.scopes_for(await _apps.seed(flavor))
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
    for kind in ("read", "ignore"):
        results.append(
            (
                f"Redis, ON_EVERY_REQUEST, {kind}: EXPIRE the only write, once",
                effective_writes(ran(every[kind])) == {"EXPIRE"}
                and sum(c for cmd, c in ran(every[kind]).items() if cmd.endswith("EXPIRE")) == n,
                show(every[kind]),
            )
        )
    results.append(
        (
            "[perf] Redis, ON_EVERY_REQUEST, ignore: one round trip, no load",
            None if sum(every["ignore"][0].values()) == n else False,
            show(every["ignore"]),
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
    if not use_redis:
        names = [n for n in names if n not in _apps.NEEDS_REDIS]

    prefix = f"bench:{uuid.uuid4().hex}:"
    tmpdir = tempfile.TemporaryDirectory(prefix="sessionware-bench-")
    flavors: dict[str, Flavor] = {}
    redis_client: Any = None
    try:
        scopes: dict[str, dict[str, dict[str, Any]]] = {}
        # The bare app gets a session cookie of the usual size too (it never looks at it).
        donor = _apps.build("sw-cookie-private")
        bare_cookie = await _apps.seed(donor)
        for name in names:
            flavor = _apps.build(name, prefix=prefix, tmpdir=tmpdir.name)
            flavors[name] = flavor
            cookie = bare_cookie if name == "bare" else await _apps.seed(flavor)
            scopes[name] = _apps.scopes_for(cookie)
            await sanity(flavor, scopes[name])

        cells: list[tuple[str, str, Any]] = []
        for name in names:
            for kind in KINDS:
                app, scope = flavors[name].app, scopes[name][kind]
                cells.append((name, kind, lambda n, a=app, s=scope: timed_requests(a, s, n)))
        if use_redis:
            from redis.asyncio import Redis

            redis_client = Redis.from_url(_apps.REDIS_URL, **_apps.redis_options())
            floor_key = prefix + "floor:get"
            set_key = prefix + "floor:set"
            # A record the size of the benchmark's sessions: the v1 envelope with a counter.
            body = '{"v":1,"state":{"counter":2},"created":1767225600}'
            await redis_client.set(floor_key, body, ex=3600)
            await redis_client.set(set_key, body, ex=3600)
            cells.append(
                ("floor", "GET", lambda n: timed_calls(lambda: redis_client.get(floor_key), n))
            )
            # The store's compare-and-set script, for information (its write is one EVAL).
            from sessionware.stores import redis as sw_redis

            cas = getattr(sw_redis, "_CAS", None)
            if cas is not None:
                cells.append(
                    (
                        "floor",
                        "EVAL",
                        lambda n: timed_calls(
                            lambda: redis_client.eval(cas, 1, set_key, body, body, 3600), n
                        ),
                    )
                )
            cells.append(
                (
                    "floor",
                    "SET",
                    lambda n: timed_calls(lambda: redis_client.set(set_key, body, ex=3600), n),
                )
            )

        # Warm-up: one batch per cell (imports, caches, connection pools, SQLite pages).
        for _, _, measure in cells:
            await measure(args.requests)
        gc.collect()
        gc.freeze()

        samples: dict[tuple[str, str], list[float]] = {(n, k): [] for n, k, _ in cells}
        started = time.monotonic()
        for round_no in range(args.rounds):
            shift = round_no % len(cells)
            for name, kind, measure in cells[shift:] + cells[:shift]:
                gc.collect()
                samples[(name, kind)].append(await measure(args.requests))
        elapsed = time.monotonic() - started
        med = {cell: statistics.median(values) for cell, values in samples.items()}

        checks = await redis_checks(prefix) if use_redis and "sw-redis" in names else []
        report(args, names, samples, med, checks, elapsed, use_redis)
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
        tmpdir.cleanup()


def report(
    args: argparse.Namespace,
    names: list[str],
    samples: dict[tuple[str, str], list[float]],
    med: dict[tuple[str, str], float],
    checks: list[tuple[str, bool | None, str]],
    elapsed: float,
    use_redis: bool,
) -> None:
    out = print
    out(
        f"bench_asgi: Python {platform.python_version()} ({platform.machine()}),"
        f" starlette {version('starlette')}, starsessions {version('starsessions')},"
        f" itsdangerous {version('itsdangerous')}, redis-py {version('redis')},"
        f" cryptography {version('cryptography')}"
    )
    out(f"sessionware imported from {Path(sessionware.__file__).parent}")
    out(
        f"in-process raw ASGI; {args.rounds} rounds x {args.requests} requests per cell"
        f" (+1 warm-up batch), interleaved; measured part took {elapsed:.1f} s"
    )
    out("cell = median over rounds of mean µs per request [min-max over rounds]")
    out("kinds: write = counter+1 with cookie present; read = read the counter; ignore = handler")
    out("  never touches the session while its cookie is present (every request, the bare")
    out("  app's included, carries a session cookie)")
    out("sessionware server-side stores use lazy=True: /read and /write call")
    out("  `await session.load()` first; /ignore never loads, so it costs no store I/O.")
    out("starsessions handlers call `await load_session(request)` on /read and /write only.")
    out("")
    width = max(len(n) for n in names) + 2
    out(f"{'configuration':<{width}}" + "".join(f"{k:>24}" for k in KINDS))
    for name in names:
        row = f"{name:<{width}}"
        for kind in KINDS:
            vals = samples[(name, kind)]
            row += f"{med[(name, kind)]:>9.1f} [{min(vals):6.1f}-{max(vals):6.1f}]"
        out(row)
    out("")
    out("overhead over bare (µs per request, median minus bare's median)")
    for name in names:
        if name == "bare":
            continue
        row = f"{name:<{width}}"
        for kind in KINDS:
            row += f"{med[(name, kind)] - med[('bare', kind)]:>24.1f}"
        out(row)

    floor_get = med.get(("floor", "GET"))
    floor_set = med.get(("floor", "SET"))
    if floor_get is not None and floor_set is not None:
        out("")
        out("Redis floor: redis-py asyncio client, same pool options as RedisSessionStore.from_url")
        out(f"  GET {floor_get:7.1f} µs/call   SET ... EX {floor_set:7.1f} µs/call", end="")
        floor_eval = med.get(("floor", "EVAL"))
        if floor_eval is not None:
            out(f"   (info: EVAL of the store's CAS script {floor_eval:7.1f} µs/call)", end="")
        out("")

    out("")
    out("TARGETS (ratio measured in this run; PASS when within the target)")

    def target(
        label: str, measured: float, limit: float, judged: bool = True, extra: str = ""
    ) -> None:
        verdict = ("PASS" if measured <= limit else "MISS") if judged else "info"
        out(f"TARGET {label:<70} <= {limit:4.2f}x  measured {measured:5.2f}x  {verdict}{extra}")

    bare = {k: med[("bare", k)] for k in KINDS}
    if "starlette" in names and "sw-cookie-private" in names:
        for kind in ("write", "read"):
            sw, st = med[("sw-cookie-private", kind)], med[("starlette", kind)]
            sw_over, st_over = sw - bare[kind], st - bare[kind]
            ratio_over = sw_over / st_over if st_over > 0 else float("inf")
            target(
                f"cookie PRIVATE {kind}: overhead vs Starlette's overhead [judged]",
                ratio_over,
                0.5,
                extra=f"  ({sw_over:.1f} vs {st_over:.1f} µs over bare)",
            )
            target(
                f"cookie PRIVATE {kind}: total per-request vs Starlette [not judged]",
                sw / st,
                0.5,
                judged=False,
                extra=f"  ({sw:.1f} vs {st:.1f} µs; bare alone is {bare[kind] / st:.2f}x)",
            )
    for name in SESSIONWARE_STORES:
        if name in names:
            target(
                f"{name} ignore (cookie present) vs bare",
                med[(name, "ignore")] / bare["ignore"],
                1.15,
            )
    for name in ("null-mw", "starlette", "starsessions-cookie", "starsessions-redis"):
        if name in names:
            target(
                f"{name} ignore vs bare ["
                + ("floor" if name == "null-mw" else "other library")
                + ", not judged]",
                med[(name, "ignore")] / bare["ignore"],
                1.15,
                judged=False,
            )
    if "sw-redis" in names and floor_get is not None and floor_set is not None:
        target(
            "sw-redis read vs (bare read + 1 GET)",
            med[("sw-redis", "read")] / (bare["read"] + floor_get),
            1.1,
        )
        target(
            "sw-redis write vs (bare write + GET + SET)",
            med[("sw-redis", "write")] / (bare["write"] + floor_get + floor_set),
            1.1,
        )
        if "starsessions-redis" in names:
            target(
                "starsessions-redis read vs (bare read + 1 GET) [not judged]",
                med[("starsessions-redis", "read")] / (bare["read"] + floor_get),
                1.1,
                judged=False,
            )
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
    if not use_redis:
        out("")
        out("(Redis left out: --no-redis)")
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
