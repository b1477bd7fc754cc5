"""Resident memory across many in-process requests: is it flat once warmed up, for every store?

    .venv/bin/python benchmarks/bench_memory.py [--requests 1000000] [--stores all]
    .venv/bin/python benchmarks/bench_memory.py --quick     # 1,000 requests a store: harness only

Each store runs in a process of its own (so a leak is attributed to its store, and one store's
caches never hide another's), driving one sessionware app through raw ASGI calls in a repeating
pattern of writes, reads, untouched requests and one new session in ten (so server-side stores
keep gaining records, and the memory store fills up to ``--max-entries`` and then evicts). RSS is
read from /proc/self/statm (``resource`` peak RSS elsewhere) every ``--sample-every`` requests
after ``--warmup`` requests (by default until the memory store would be full); the target is
every sample within ±5 % of the first one, for each store.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
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
ALL_STORES = [
    "sw-cookie-private",
    "sw-memory",
    "sw-redis",
    "sw-sqlite",
    "sw-postgres",
    "sw-mysql",
    "sw-memcached",
]
RESULT = "RESULT "


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
    parser.add_argument("--requests", type=int, default=1_000_000, help="measured, per store")
    parser.add_argument(
        "--stores", default="all", help=f"comma-separated, of: {', '.join(ALL_STORES)}; or all"
    )
    parser.add_argument("--sample-every", type=int, default=0, help="default: min(100k, N/10)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="default: enough to fill the memory store, at least --sample-every",
    )
    parser.add_argument("--max-entries", type=int, default=5_000, help="memory store bound")
    parser.add_argument(
        "--quick", action="store_true", help="1000 requests, samples every 250, 20 entries"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.sample_every, args.max_entries = 1000, 250, 20
    if args.requests < 1 or args.max_entries < 1:
        parser.error("--requests and --max-entries must be at least 1")
    if args.sample_every <= 0:
        args.sample_every = max(1, min(100_000, args.requests // 10))
    if args.warmup <= 0:
        # Until the memory store is full: one new session per pass of the pattern.
        args.warmup = max(args.sample_every, (args.max_entries + 1) * len(PATTERN))
    return args


# -- one store, in its own process ---------------------------------------------------------------


async def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench:{uuid.uuid4().hex}:"
    tmpdir = tempfile.TemporaryDirectory(prefix="sessionware-bench-")
    services = _apps.Services()
    flavor = None
    try:
        flavor = _apps.build(
            name,
            prefix=prefix,
            tmpdir=tmpdir.name,
            memory_max_entries=args.max_entries,
            services=services,
        )
        scopes = _apps.scopes_for(await _apps.seed(flavor), flavor.carrier)
        scopes["new"] = _apps.make_scope("/write", None)
        schedule = [scopes[kind] for kind in PATTERN]
        app, receive, discard, period = flavor.app, _apps.receive, _apps.discard, len(schedule)

        async def drive(start: int, count: int) -> None:
            for i in range(start, start + count):
                await app(schedule[i % period].copy(), receive, discard)

        began = time.monotonic()
        await drive(0, args.warmup)
        gc.collect()
        warmup_s = time.monotonic() - began
        print(f"{name}: warm-up {args.warmup} requests in {warmup_s:.1f} s", flush=True)
        print(f"{'requests':>12} {'RSS MiB':>10} {'vs first':>9} {'elapsed s':>10}", flush=True)
        started = time.monotonic()
        first = rss_bytes()
        samples = [first]
        print(f"{0:>12} {first / 2**20:>10.2f} {0.0:>+8.2f}% {0.0:>10.1f}", flush=True)
        done = 0
        while done < args.requests:
            step = min(args.sample_every, args.requests - done)
            await drive(args.warmup + done, step)
            done += step
            rss = rss_bytes()
            samples.append(rss)
            print(
                f"{done:>12} {rss / 2**20:>10.2f} {(rss / first - 1) * 100:>+8.2f}%"
                f" {time.monotonic() - started:>10.1f}",
                flush=True,
            )
        elapsed = time.monotonic() - started
        return {
            "store": name,
            "requests": args.requests,
            "first": first,
            "last": samples[-1],
            "worst": max(abs(s / first - 1) for s in samples),
            "us_per_request": elapsed / args.requests * 1e6,
            "seconds": elapsed + warmup_s,
        }
    finally:
        if flavor is not None:
            await flavor.aclose()
        if name in _apps.NEEDS_REDIS:
            await _apps.delete_prefixed(prefix)
        for problem in await services.aclose():
            print(f"cleanup: {problem}")
        tmpdir.cleanup()


def child(args: argparse.Namespace) -> int:
    result = asyncio.run(measure(args.child, args))
    print(RESULT + json.dumps(result), flush=True)
    return 0


# -- every store ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    names = ALL_STORES if args.stores == "all" else [n.strip() for n in args.stores.split(",")]
    bad = [n for n in names if n not in ALL_STORES]
    if bad or not names:
        print(f"--stores takes {', '.join(ALL_STORES)} or all, not {', '.join(bad) or 'nothing'}")
        return 2
    print(
        f"bench_memory: one process per store; pattern {'/'.join(PATTERN)} (new = no cookie);"
        f" memory store max_entries={args.max_entries}; per store: {args.warmup} warm-up requests,"
        f" then {args.requests} measured, RSS sampled every {args.sample_every}"
    )
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    services = _apps.Services()  # only to ask what is available; it starts nothing
    for name in names:
        reason = _apps.unavailable(name, services)
        if reason is not None:
            skipped[name] = reason
            print(f"\n{name}: skipped: {reason}")
            continue
        print("", flush=True)
        argv = [
            sys.executable, __file__, "--child", name, "--requests", str(args.requests),
            "--sample-every", str(args.sample_every), "--warmup", str(args.warmup),
            "--max-entries", str(args.max_entries),
        ]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT):
                results[name] = json.loads(line[len(RESULT) :])
            else:
                print("  " + line, end="", flush=True)
        if process.wait() != 0 or name not in results:
            skipped[name] = f"the measuring process failed (exit status {process.returncode})"

    print("")
    print(
        "| store | requests | RSS first MiB | RSS last MiB | worst sample vs first"
        " | µs/request | target | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        if name in results:
            r = results[name]
            verdict = "PASS" if r["worst"] <= TOLERANCE else "MISS"
            print(
                f"| {name} | {r['requests']} | {r['first'] / 2**20:.2f} | {r['last'] / 2**20:.2f}"
                f" | ±{r['worst'] * 100:.2f}% | {r['us_per_request']:.1f}"
                f" | ≤ ±{TOLERANCE * 100:.0f}% | {verdict} |"
            )
        else:
            print(f"| {name} | — | — | — | not measured ({skipped[name]}) | — | — | — |")
    # A store that cannot run here is reported; one whose measuring process broke is an error.
    return (
        1 if any(n in skipped and n not in results and "failed" in skipped[n] for n in names) else 0
    )


if __name__ == "__main__":
    sys.exit(main())
