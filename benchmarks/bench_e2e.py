"""End to end: uvicorn serving the benchmark app on loopback, under load from wrk (or Python).

    .venv/bin/python benchmarks/bench_e2e.py [--seconds 1] [--rounds 7] [--kinds read,write,ignore]
    .venv/bin/python benchmarks/bench_e2e.py --quick     # 1 s per cell, 1 round: harness only

For each configuration (bare, sessionware's cookie store, Starlette's SessionMiddleware) one
uvicorn process (one worker, no access log) serves the app on 127.0.0.1 at a free port; the
session cookie comes from one seeding request, and the bare app receives a sessionware cookie
of the usual size. Each round loads every (configuration, kind) once for ``--seconds`` in a
freshly shuffled order (the configurations of one kind back to back), after ``--warmup``
seconds per cell, by ``wrk`` when installed (``--loadgen auto``), else by a bounded
asyncio+httpx load generator (it shares the CPU with uvicorn on a small machine, so its req/s
are lower; compare ratios, not absolutes). Ratios to the bare app are taken within each round;
the median over rounds is reported. Targets: the cookie store's req/s >= 0.85x the bare app's
on read and write, >= 0.95x when untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _apps  # noqa: E402

# The cookie store's req/s over the bare app's, per kind of request.
TARGETS = {"read": 0.85, "write": 0.85, "ignore": 0.95}
JUDGED = "sw-cookie-private"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="load per cell and round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (median taken)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load per cell")
    parser.add_argument("--kinds", default="read,write,ignore", help="of write,read,ignore")
    parser.add_argument("--configs", default="bare,sw-cookie-private,starlette")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--quick", action="store_true", help="1 s per cell, 1 round, no warm-up: harness only"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the round shuffles")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup = 1.0, 1, 0.0
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
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

    def __init__(
        self,
        flavor: str,
        prefix: str,
        logdir: str,
        factory: str = "_apps:e2e_app",
        env: Mapping[str, str] | None = None,
        name: str = "",
    ) -> None:
        """``env``: more environment for the server (``PYTHONPATH``: which sessionware)."""
        self.port = free_port()
        self.log_path = os.path.join(logdir, f"uvicorn-{name or flavor}.log")
        env = dict(
            os.environ,
            SESSIONWARE_BENCH_FLAVOR=flavor,
            SESSIONWARE_BENCH_PREFIX=prefix,
            **(env or {}),
        )
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", factory,
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

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far (all its threads), or None off Linux."""
        pid = self.process.pid
        try:
            total = 0
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[0])  # ns on the CPU
            return total / 1e9
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

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
    wrk: str,
    port: int,
    path: str,
    cookie: str | None,
    seconds: float,
    args: argparse.Namespace,
    script: str | None = None,
) -> tuple[float, float, float, int, int]:
    """(req/s, p50 ms, p99 ms, errors, requests) of one wrk run; ``script``: a Lua file that
    builds the requests (then ``cookie`` is not sent)."""
    argv = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "5s"]
    if script:
        argv += ["-s", script]
    elif cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?(\d+)"):
        for match in re.finditer(pattern, text):
            errors += int(match.group(1))
    return rps, p50, p99, errors, count


async def _python_load(
    port: int, path: str, cookie: str | Sequence[str] | None, seconds: float, connections: int
) -> tuple[float, float, float, int, int]:
    """What ``run_wrk`` measures, from Python; a list of cookies is sent in turn, one a request."""
    import httpx

    cookies = [cookie] if isinstance(cookie, str) else list(cookie or ())
    turn = itertools.cycle([{"Cookie": c} for c in cookies] or [{}])
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
                    response = await client.get(path, headers=next(turn))
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
        return 0.0, 0.0, 0.0, errors, 0
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3
    return len(latencies) / elapsed, p50, p99, errors, len(latencies)


def run_python(
    port: int, path: str, cookie: str | None, seconds: float, args: argparse.Namespace
) -> tuple[float, float, float, int, int]:
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
    special = [c for c in configs if c not in _apps.STANDALONE]
    if special:
        print(f"not served end to end (they need set-up in process): {', '.join(special)}")
        return 2
    if "bare" not in configs:
        configs.insert(0, "bare")
    for config in configs:
        reason = _apps.unavailable(config)
        if reason is not None:
            print(f"{config}: {reason}")
            return 2
    wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and wrk is None:
        print("wrk is not installed (Debian: apt-get install wrk); use --loadgen python")
        return 2
    tool = "wrk" if wrk else "python"

    def load(server: Server, path: str, cookie: str | None, seconds: float) -> tuple[float, ...]:
        """(req/s, p50 ms, p99 ms, errors, requests, requests per server CPU-second)."""
        before = server.cpu_seconds()
        if wrk:
            result = run_wrk(wrk, server.port, path, cookie, seconds, args)
        else:
            result = run_python(server.port, path, cookie, seconds, args)
        after = server.cpu_seconds()
        used = after - before if after is not None and before is not None else 0.0
        return (*result, result[4] / used if used > 0 else 0.0)

    prefix = f"bench:{uuid.uuid4().hex}:"
    cells = [(config, kind) for kind in kinds for config in configs]
    rounds: list[dict[tuple[str, str], tuple[float, ...]]] = []
    began = time.monotonic()
    servers: dict[str, Server] = {}
    cookies: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="sessionware-e2e-") as logdir:
        try:
            for config in configs:
                servers[config] = Server(config, prefix, logdir)
                name = _apps.build_cookie_name(config)
                cookies[config] = seed_cookie(servers[config].port, name)
            cookies["bare"] = bare_cookie()
            if args.warmup > 0:  # imports, caches, the first connections
                for config, kind in cells:
                    load(servers[config], f"/{kind}", cookies[config], args.warmup)
            # Each round runs every cell once in a fresh order: the kinds shuffled, and within
            # a kind its configurations shuffled and back to back, so that load from elsewhere
            # on the machine hits a ratio's two sides alike. Ratios are taken within a round.
            rng = random.Random(args.seed)
            for _ in range(args.rounds):
                order = []
                for kind in rng.sample(kinds, len(kinds)):
                    order += [(config, kind) for config in rng.sample(configs, len(configs))]
                rounds.append(
                    {
                        (config, kind): load(
                            servers[config], f"/{kind}", cookies[config], args.seconds
                        )
                        for config, kind in order
                    }
                )
        finally:
            for server in servers.values():
                server.stop()
            if any(c in _apps.NEEDS_REDIS for c in configs):
                asyncio.run(_apps.delete_prefixed(prefix))

    print(
        f"bench_e2e: uvicorn (1 worker, asyncio + h11 unless uvloop/httptools are installed) on"
        f" 127.0.0.1; load by {tool}"
        + (f" (-t{args.threads} -c{args.connections})" if wrk else f" ({args.connections} conns)")
        + f"; {args.rounds} rounds x {args.seconds:g} s per cell, each round in shuffled order"
        f" (seed {args.seed}), after {args.warmup:g} s warm-up per cell; {os.cpu_count()} CPUs;"
        f" took {time.monotonic() - began:.0f} s"
    )
    print("every request carries a session cookie (the bare app's is ignored)")
    print("")
    print(
        f"{'configuration':<22}{'kind':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'req/CPU-s':>11}   req/s per round"
    )
    errors = 0
    for cell in cells:
        runs = [r[cell] for r in rounds]
        errors += sum(int(r[3]) for r in runs)
        print(
            f"{cell[0]:<22}{cell[1]:<8}{statistics.median(r[0] for r in runs):>10.0f}"
            f"{statistics.median(r[1] for r in runs):>9.2f}"
            f"{statistics.median(r[2] for r in runs):>9.2f}{sum(int(r[3]) for r in runs):>8}"
            f"{statistics.median(r[5] for r in runs):>11.0f}"
            f"   {' '.join(f'{r[0]:.0f}' for r in runs)}"
        )
    print("req/CPU-s = requests served per second of CPU the server process used in the window:")
    print("  what one dedicated core would serve, whatever else the machine was doing")
    cpu_measured = all(r[cell][5] > 0 for r in rounds for cell in cells)
    for title, field in (
        ("req/s ÷ the bare app's (median of per-round ratios)", 0),
        ("req per server CPU-second ÷ the bare app's (median of per-round ratios)", 5),
    ):
        if field == 5 and not cpu_measured:
            print("\n(server CPU time unavailable here: /proc/<pid> unreadable)")
            continue
        unit = "req/s" if field == 0 else "req/CPU-s"
        print("")
        print(f"| {title} | target | measured | verdict |")
        print("|---|---|---|---|")
        for config, kind in cells:
            if config == "bare":
                continue
            ratios = [
                r[(config, kind)][field] / r[("bare", kind)][field]
                if r[("bare", kind)][field]
                else 0.0
                for r in rounds
            ]
            ratio = statistics.median(ratios)
            what = {"ignore": "untouched"}.get(kind, kind)
            measured = f"{ratio:.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"
            if config == JUDGED:
                verdict = "PASS" if ratio >= TARGETS[kind] else "MISS"
                label = f"cookie store (PRIVATE) {what}, {unit} ÷ bare's"
                print(f"| {label} | ≥ {TARGETS[kind]:.2f} | {measured} | {verdict} |")
            else:
                print(f"| {config} {what}, {unit} ÷ bare's | — | {measured} | info |")
    if errors:
        print("WARNING: some requests failed (see the errors column)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
