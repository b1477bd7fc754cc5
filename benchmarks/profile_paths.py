"""Profile one sessionware path of the benchmark app, in process (cProfile, or pyinstrument).

    .venv/bin/python benchmarks/profile_paths.py sw-cookie-private read [--requests 20000]
    .venv/bin/python benchmarks/profile_paths.py sw-redis write --pyinstrument

Prints the top functions by own time (cProfile) or pyinstrument's call tree. pyinstrument is
optional (``pip install pyinstrument``); cProfile's overhead inflates small functions, so use it
to find candidates and bench_asgi.py to measure a change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _apps


async def profile(args: argparse.Namespace) -> None:
    prefix = f"bench:{uuid.uuid4().hex}:"
    tmpdir = tempfile.TemporaryDirectory(prefix="sessionware-profile-")
    flavor = _apps.build(args.config, prefix=prefix, tmpdir=tmpdir.name)
    try:
        scope = _apps.scopes_for(await _apps.seed(flavor))[args.kind]
        app, receive, discard = flavor.app, _apps.receive, _apps.discard
        for _ in range(min(args.requests, 2000)):  # warm-up
            await app(dict(scope), receive, discard)
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001, async_mode="disabled")
            profiler.start()
            for _ in range(args.requests):
                await app(dict(scope), receive, discard)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        else:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.requests):
                await app(dict(scope), receive, discard)
            prof.disable()
            stream = io.StringIO()
            stats = pstats.Stats(prof, stream=stream).strip_dirs().sort_stats(args.sort)
            stats.print_stats(args.top)
            print(stream.getvalue())
    finally:
        await flavor.aclose()
        if args.config in _apps.NEEDS_REDIS:
            await _apps.delete_prefixed(prefix)
        tmpdir.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=[n for n in _apps.FLAVORS if n in _apps.STANDALONE])
    parser.add_argument("kind", choices=list(_apps.KINDS))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()
    asyncio.run(profile(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
