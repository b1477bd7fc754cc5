"""The benchmark scripts still run: each one, with tiny sizes, as a subprocess.

Not a performance test: the numbers of a run this short mean nothing. It checks that every
script exits 0 and prints its target lines, so the harness cannot rot unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
TARGET = re.compile(r"^TARGET .+ measured\s+[±\d.]+[x%]\s+(PASS|MISS|info)\b", re.M)


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def targets(output: str) -> list[str]:
    return [match.group(0) for match in TARGET.finditer(output)]


@pytest.mark.redis
def test_bench_asgi() -> None:
    require("Redis", "127.0.0.1", 6379)
    output = run("bench_asgi.py", "--rounds", "1", "--requests", "30")
    lines = targets(output)
    for label in (
        "cookie PRIVATE write: overhead vs Starlette",
        "cookie PRIVATE read: overhead vs Starlette",
        "sw-cookie-private ignore",
        "sw-memory ignore",
        "sw-redis ignore",
        "sw-sqlite ignore",
        "sw-redis read vs (bare read + 1 GET)",
        "sw-redis write vs (bare write + GET + SET)",
    ):
        assert any(label in line for line in lines), f"no target line for {label!r}:\n{output}"
    assert re.search(r"GET\s+[\d.]+ µs/call\s+SET \.\.\. EX\s+[\d.]+ µs/call", output), output
    checks = [line for line in output.splitlines() if line.startswith("CHECK ")]
    asserted = [line for line in checks if "[perf]" not in line]
    assert len(asserted) >= 5 and all(line.endswith("PASS") for line in asserted), output


def test_bench_memory() -> None:
    output = run(
        "bench_memory.py", "--requests", "2000", "--sample-every", "500", "--max-entries", "20"
    )
    assert any("RSS flat across 2000 requests" in line for line in targets(output)), output


def test_bench_e2e() -> None:
    output = run(
        "bench_e2e.py", "--seconds", "1", "--rounds", "1", "--warmup", "0", "--kinds", "read"
    )
    lines = targets(output)
    assert any("sw-cookie-private read req/s vs bare" in line for line in lines), output
    assert re.search(r"^bare\s+read\s+\d+", output, re.M), output


def test_profile_paths() -> None:
    output = run("profile_paths.py", "sw-cookie-private", "read", "--requests", "50")
    assert "function calls" in output
