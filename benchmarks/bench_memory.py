"""Resident memory across many in-process requests: is it flat once warmed up?

    .venv/bin/python benchmarks/bench_memory.py [--requests 1000000] [--stores a,b]

Drives sessionware apps (default: the cookie store, PRIVATE, and the memory store with lazy
loading) through raw ASGI calls, round-robin, in a repeating pattern of writes, reads, ignored
sessions and one new session in ten (so the memory store fills up to ``--max-entries`` and then
evicts). RSS is read from /proc/self/statm (``resource`` peak RSS elsewhere) every
``--sample-every`` requests after ``--warmup`` requests (by default until the memory store is
full); the target is every sample within ±5 % of the first one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _apps

PATTERN = ("write", "read", "ignore", "read", "write", "ignore", "read", "ignore", "write", "new")
TOLERANCE = 0.05


def rss_bytes() -> int:
    """Current resident set size; peak RSS where /proc is missing (macOS: bytes, Linux: KiB)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="measured requests")
    parser.add_argument("--stores", default="sw-cookie-private,sw-memory")
    parser.add_argument("--sample-every", type=int, default=0, help="default: min(100k, N/10)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="default: enough to fill the memory store, at least --sample-every",
    )
    parser.add_argument("--max-entries", type=int, default=5_000, help="memory store bound")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.sample_every <= 0:
        args.sample_every = max(1, min(100_000, args.requests // 10))
    return args


async def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.stores.split(",") if n.strip()]
    bad = [n for n in names if _apps.FLAVORS.get(n, ("",))[0] != "sessionware"]
    if bad or not names:
        print(f"--stores takes sessionware configurations, not {', '.join(bad) or 'nothing'}")
        return 2
    if any(n in _apps.NEEDS_REDIS for n in names) and not _apps.redis_reachable():
        print("Redis is not reachable at 127.0.0.1:6379")
        return 2
    prefix = f"bench:{uuid.uuid4().hex}:"
    tmpdir = tempfile.TemporaryDirectory(prefix="sessionware-bench-")
    flavors = []
    try:
        plans: list[tuple[Any, list[dict[str, Any]]]] = []
        for name in names:
            flavor = _apps.build(
                name, prefix=prefix, tmpdir=tmpdir.name, memory_max_entries=args.max_entries
            )
            flavors.append(flavor)
            scopes = _apps.scopes_for(await _apps.seed(flavor))
            scopes["new"] = _apps.make_scope("/write", None)
            plans.append((flavor.app, [scopes[kind] for kind in PATTERN]))
        # One flat schedule: (app, scope) round-robin over the stores, then the pattern.
        schedule = [(app, seq[i]) for i in range(len(PATTERN)) for app, seq in plans]
        receive, discard = _apps.receive, _apps.discard
        period = len(schedule)
        if args.warmup <= 0:
            # Until the memory store is full: one new session per app and period.
            args.warmup = max(args.sample_every, (args.max_entries + 1) * period)

        async def drive(start: int, count: int) -> None:
            for i in range(start, start + count):
                app, scope = schedule[i % period]
                await app(scope.copy(), receive, discard)

        began = time.monotonic()
        await drive(0, args.warmup)
        gc.collect()
        print(
            f"bench_memory: stores {', '.join(names)}; pattern {'/'.join(PATTERN)} (new = no"
            f" cookie); memory store max_entries={args.max_entries}"
        )
        print(
            f"warm-up {args.warmup} requests in {time.monotonic() - began:.1f} s;"
            f" then {args.requests} measured, RSS sampled every {args.sample_every}"
        )
        print(f"{'requests':>12} {'RSS MiB':>10} {'vs first':>9} {'elapsed s':>10}")
        measured_start = time.monotonic()
        samples = []
        done = 0
        first = rss_bytes()
        samples.append(first)
        print(f"{0:>12} {first / 2**20:>10.2f} {0.0:>+8.2f}% {0.0:>10.1f}")
        while done < args.requests:
            step = min(args.sample_every, args.requests - done)
            await drive(args.warmup + done, step)
            done += step
            rss = rss_bytes()
            samples.append(rss)
            print(
                f"{done:>12} {rss / 2**20:>10.2f} {(rss / first - 1) * 100:>+8.2f}%"
                f" {time.monotonic() - measured_start:>10.1f}"
            )
        elapsed = time.monotonic() - measured_start
        worst = max(abs(s / first - 1) for s in samples)
        print(
            f"{args.requests} requests in {elapsed:.1f} s ({elapsed / args.requests * 1e6:.1f} µs"
            f" per request, {args.requests / elapsed:.0f} req/s), warm-up included:"
            f" {time.monotonic() - began:.1f} s"
        )
        verdict = "PASS" if worst <= TOLERANCE else "MISS"
        print(
            f"TARGET RSS flat across {args.requests} requests (every sample vs the first)"
            f"  <= ±{TOLERANCE * 100:.0f}%  measured ±{worst * 100:.2f}%  {verdict}"
        )
        return 0
    finally:
        for flavor in flavors:
            await flavor.aclose()
        if any(n in _apps.NEEDS_REDIS for n in names):
            await _apps.delete_prefixed(prefix)
        tmpdir.cleanup()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
