"""End to end: uvicorn serving the benchmark app on loopback, under load from wrk (or Python).

    .venv/bin/python benchmarks/bench_e2e.py [--seconds 2] [--rounds 3] [--kinds read,write,ignore]

For each configuration (bare, sessionware's cookie store, Starlette's SessionMiddleware) one
uvicorn process (one worker, no access log) serves the app on 127.0.0.1 at a free port; the
session cookie comes from one seeding request. Each (configuration, kind) is loaded for
``--seconds`` in each of ``--rounds`` interleaved rounds (median reported), after ``--warmup``
seconds, by ``wrk`` when installed (``--loadgen auto``), else by a
bounded asyncio+httpx load generator (it shares the CPU with uvicorn on a small machine, so
its req/s are lower; compare ratios, not absolutes). Prints req/s and p99 latency, then the
target: cookie store req/s >= 0.85x the bare app's, per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _apps  # noqa: E402

COOKIE_NAMES = {"bare": None, "starlette": "session", "starsessions-cookie": "session"}
TARGET = 0.85


@dataclass
class Result:
    config: str
    kind: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    rounds: list[float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="load per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median taken)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load per cell")
    parser.add_argument("--kinds", default="read,write,ignore", help="of write,read,ignore")
    parser.add_argument("--configs", default="bare,sw-cookie-private,starlette")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 600:
        parser.error("--seconds must be in (0, 600] and --warmup in [0, 600]")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be in [1, 100]")
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be in [1, 1024]")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One uvicorn process serving one flavour; ``stop()`` ends it (only it)."""

    def __init__(self, flavor: str, prefix: str, logdir: str) -> None:
        self.port = free_port()
        self.log_path = os.path.join(logdir, f"uvicorn-{flavor}.log")
        env = dict(os.environ, SESSIONWARE_BENCH_FLAVOR=flavor, SESSIONWARE_BENCH_PREFIX=prefix)
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", "_apps:e2e_app",
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log", "--log-level", "warning", "--workers", "1",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"uvicorn for {flavor} did not start:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def get(port: int, path: str, cookie: str | None) -> tuple[int, list[tuple[str, str]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheaders()
    finally:
        conn.close()


def seed_cookie(port: int, name: str | None) -> str | None:
    status, headers = get(port, "/write", None)
    if status != 200:
        raise RuntimeError(f"seeding request answered {status}")
    if name is None:
        return None
    for header, value in headers:
        if header.lower() == "set-cookie" and value.startswith(name + "="):
            return value.split(";", 1)[0]
    raise RuntimeError(f"the seeding request set no {name} cookie")


# -- load generators -----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    wrk: str, port: int, path: str, cookie: str | None, seconds: float, args: argparse.Namespace
) -> tuple[float, float, float, int]:
    argv = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "5s"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?(\d+)"):
        for match in re.finditer(pattern, text):
            errors += int(match.group(1))
    return rps, p50, p99, errors


async def _python_load(
    port: int, path: str, cookie: str | None, seconds: float, connections: int
) -> tuple[float, float, float, int]:
    import httpx

    headers = {"Cookie": cookie} if cookie else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = 0
    cap = int(seconds * 200_000)  # a bound on the loop whatever the clock does
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=5.0
    ) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) < cap:
                start = time.perf_counter()
                try:
                    response = await client.get(path, headers=headers)
                    if response.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    if not latencies:
        return 0.0, 0.0, 0.0, errors
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3
    return len(latencies) / elapsed, p50, p99, errors


def run_python(
    port: int, path: str, cookie: str | None, seconds: float, args: argparse.Namespace
) -> tuple[float, float, float, int]:
    return asyncio.run(_python_load(port, path, cookie, seconds, args.connections))


# -- the run -------------------------------------------------------------------------------------


def bare_cookie() -> str:
    """A session cookie of the usual size, sent to the bare app too (so h11 parses the same)."""
    flavor = _apps.build("sw-cookie-private")
    cookie = asyncio.run(_apps.seed(flavor))
    assert cookie is not None
    return cookie.decode("latin-1")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [c for c in configs if c not in _apps.FLAVORS] + [
        k for k in kinds if k not in _apps.KINDS
    ]
    if bad:
        print(f"unknown configuration or kind: {', '.join(bad)}")
        return 2
    if "bare" not in configs:
        configs.insert(0, "bare")
    if any(c in _apps.NEEDS_REDIS for c in configs) and not _apps.redis_reachable():
        print("Redis is not reachable at 127.0.0.1:6379")
        return 2
    wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and wrk is None:
        print("wrk is not installed (Debian: apt-get install wrk); use --loadgen python")
        return 2
    tool = "wrk" if wrk else "python"

    def load(port: int, path: str, cookie: str | None, seconds: float) -> tuple[float, ...]:
        if wrk:
            return run_wrk(wrk, port, path, cookie, seconds, args)
        return run_python(port, path, cookie, seconds, args)

    prefix = f"bench:{uuid.uuid4().hex}:"
    samples: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    began = time.monotonic()
    servers: dict[str, Server] = {}
    cookies: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="sessionware-e2e-") as logdir:
        try:
            for config in configs:
                servers[config] = Server(config, prefix, logdir)
                name = COOKIE_NAMES.get(config, "id" if config.startswith("sw-") else "session")
                cookies[config] = seed_cookie(servers[config].port, name)
            cookies["bare"] = bare_cookie()
            for config in configs:  # warm-up: imports, caches, the first connections
                for kind in kinds:
                    if args.warmup > 0:
                        load(servers[config].port, f"/{kind}", cookies[config], args.warmup)
            # Rounds interleave the configurations, so load from elsewhere hits them alike.
            for _ in range(args.rounds):
                for kind in kinds:
                    for config in configs:
                        measured = load(
                            servers[config].port, f"/{kind}", cookies[config], args.seconds
                        )
                        samples.setdefault((config, kind), []).append(measured)
        finally:
            for server in servers.values():
                server.stop()
            if any(c in _apps.NEEDS_REDIS for c in configs):
                asyncio.run(_apps.delete_prefixed(prefix))

    results = []
    for (config, kind), runs in samples.items():
        rps = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        errors = sum(int(r[3]) for r in runs)
        results.append(Result(config, kind, rps, p50, p99, errors, tool, [r[0] for r in runs]))
    print(
        f"bench_e2e: uvicorn (1 worker, asyncio + h11 unless uvloop/httptools are installed) on"
        f" 127.0.0.1; load by {tool}"
        + (f" (-t{args.threads} -c{args.connections})" if wrk else f" ({args.connections} conns)")
        + f"; {args.rounds} rounds x {args.seconds:g} s per cell (interleaved) after"
        f" {args.warmup:g} s warm-up; median of rounds; {os.cpu_count()} CPUs;"
        f" took {time.monotonic() - began:.0f} s"
    )
    print("every request carries a session cookie (the bare app's is ignored)")
    print(
        f"{'configuration':<22}{'kind':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        "   req/s per round"
    )
    for r in results:
        print(
            f"{r.config:<22}{r.kind:<8}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}"
            f"   {' '.join(f'{x:.0f}' for x in r.rounds)}"
        )
    bare = {r.kind: r.rps for r in results if r.config == "bare"}
    print("")
    for r in results:
        if r.config == "bare" or not bare.get(r.kind):
            continue
        ratio = r.rps / bare[r.kind]
        judged = r.config.startswith("sw-cookie")
        verdict = ("PASS" if ratio >= TARGET else "MISS") if judged else "info"
        label = f"{r.config} {r.kind} req/s vs bare" + ("" if judged else " [not judged]")
        print(f"TARGET {label:<48} >= {TARGET:.2f}x  measured {ratio:5.2f}x  {verdict}")
    if any(r.errors for r in results):
        print("WARNING: some requests failed (see the errors column)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
