"""Instructions per request of one configuration's path, counted by valgrind (callgrind).

    .venv/bin/python benchmarks/count_instructions.py sw-cookie-private read [--requests 500]

Wall-clock ratios on a shared 2-CPU machine move by ±0.1 between runs; an instruction count
does not (the same binary and inputs give the same count, whatever else the machine runs), so
it tells whether a change to the request path made it cheaper before bench_asgi.py measures
the ratios. It runs the app twice under callgrind, after the same warm-up, with 0 and with N
requests, and prints the difference divided by N. Needs valgrind (Debian's ``valgrind``); it
is slow (about half a minute per configuration). Counts are a guide, not a target: cache
misses and the clock's view of them are what bench_asgi.py judges.
"""

from __future__ import annotations

import argparse
import asyncio
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
            scope = _apps.scopes_for(await _apps.seed(flavor))[kind]
            app, receive, discard = flavor.app, _apps.receive, _apps.discard
            for _ in range(200):
                await app(dict(scope), receive, discard)
            for _ in range(requests):
                await app(dict(scope), receive, discard)
        finally:
            await flavor.aclose()


def collected(config: str, kind: str, requests: int) -> int:
    """Instructions callgrind counted for a whole run of ``drive``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--drive",
        config,
        kind,
        str(requests),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise SystemExit(f"callgrind printed no total:\n{out[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--drive"]:
        config, kind, requests = sys.argv[2], sys.argv[3], int(sys.argv[4])
        asyncio.run(drive(config, kind, requests))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=sorted(_apps.FLAVORS))
    parser.add_argument("kind", choices=["write", "read", "ignore"])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    empty = collected(args.config, args.kind, 0)
    full = collected(args.config, args.kind, args.requests)
    print(f"{args.config} {args.kind}: {(full - empty) // args.requests} instructions per request")


if __name__ == "__main__":
    main()
