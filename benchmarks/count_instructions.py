"""Instructions per request of one configuration's path, counted by valgrind (callgrind).

    .venv/bin/python benchmarks/count_instructions.py sw-cookie-private read [--requests 500]

Wall-clock ratios on a shared 2-CPU machine move by ±0.1 between runs; an instruction count
does not (the same binary and inputs give the same count, whatever else the machine runs), so
it tells whether a change to the request path made it cheaper before bench_asgi.py measures
the ratios. It runs the app twice under callgrind, after the same warm-up, with 0 and with N
requests, and prints the difference divided by N. Needs valgrind (Debian's ``valgrind``); it
is slow (about half a minute per configuration). Counts are a guide, not a target: cache
misses and the clock's view of them are what bench_asgi.py judges.

With ``--cache`` it runs cachegrind's cache and branch simulation instead and also prints, per
request, the first-level instruction and data cache misses and the mispredicted branches
(conditional and indirect): what two paths of similar instruction counts can still differ by on
the clock (a mispredict costs some 15-20 cycles, an L1 miss about 10).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _apps


async def drive(config: str, kind: str, requests: int) -> None:
    """Warm the configuration's app up, then run ``requests`` requests of ``kind``."""
    with tempfile.TemporaryDirectory(prefix="sessionware-count-") as tmpdir:
        flavor = _apps.build(config, prefix="bench:count:", tmpdir=tmpdir)
        try:
            scope = _apps.scopes_for(await _apps.seed(flavor), flavor.carrier)[kind]
            app, receive, discard = flavor.app, _apps.receive, _apps.discard
            for _ in range(200):
                await app(dict(scope), receive, discard)
            for _ in range(requests):
                await app(dict(scope), receive, discard)
        finally:
            await flavor.aclose()


CACHE_EVENTS = {
    "instructions": r"I\s+refs:\s+([\d,]+)",
    "I1 misses": r"I1\s+misses:\s+([\d,]+)",
    "D1 misses": r"D1\s+misses:\s+([\d,]+)",
    "mispredicted branches": r"Mispredicts:\s+([\d,]+)",
    "of them indirect": r"Mispredicts:.*\+\s+([\d,]+) ind",
}


def collected(config: str, kind: str, requests: int, cache: bool = False) -> dict[str, int]:
    """What valgrind counted for a whole run of ``drive``: instructions (callgrind), or with
    ``cache`` every ``CACHE_EVENTS`` total (cachegrind's cache and branch simulation)."""
    tool = "cachegrind" if cache else "callgrind"
    simulate = ["--cache-sim=yes", "--branch-sim=yes"] if cache else []
    command = [
        "valgrind",
        f"--tool={tool}",
        *simulate,
        f"--{tool}-out-file=/dev/null",
        sys.executable,
        __file__,
        "--drive",
        config,
        kind,
        str(requests),
    ]
    # One hash seed for every run: string hashes (so dict and set layouts) otherwise differ per
    # process, and move a path's count by several thousand instructions between runs.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stderr
    patterns = CACHE_EVENTS if cache else {"instructions": r"Collected : (\d+)"}
    totals = {}
    for event, pattern in patterns.items():
        found = re.search(pattern, out)
        if found is None:
            raise SystemExit(f"valgrind printed no {event} total:\n{out[-2000:]}")
        totals[event] = int(found.group(1).replace(",", ""))
    return totals


def main() -> None:
    if sys.argv[1:2] == ["--drive"]:
        config, kind, requests = sys.argv[2], sys.argv[3], int(sys.argv[4])
        asyncio.run(drive(config, kind, requests))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=sorted(_apps.FLAVORS))
    parser.add_argument("kind", choices=["write", "read", "ignore"])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument(
        "--cache", action="store_true", help="also cache misses and mispredicted branches"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    empty = collected(args.config, args.kind, 0, args.cache)
    full = collected(args.config, args.kind, args.requests, args.cache)
    per = [f"{(full[e] - empty[e]) // args.requests} {e}" for e in full]
    print(f"{args.config} {args.kind}, per request: {', '.join(per)}")


if __name__ == "__main__":
    main()
