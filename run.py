#!/usr/bin/env python3
"""The project's two entry points, from a bare python3 (3.10+).

    python3 run.py demo [ARGS...]   # the demo app (SQLite store, no servers needed)
    python3 run.py test [PYTEST ARGS...]  # lint, types and the whole test suite

Each makes (or refreshes) `.venv` beside this file and installs what it needs there first.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def ensure_venv(extras: str) -> None:
    """Create `.venv` and install the project with `extras`, unless already done for this pyproject."""
    if sys.version_info < (3, 10):
        sys.exit(f"sessionware needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed-{extras}"
    if stamp.exists() and stamp.read_text() == digest and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"installing sessionware[{extras}] into .venv ...", flush=True)
    run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extras}]"])
    stamp.write_text(digest)


def run(cmd: list[str]) -> None:
    """Run one step; stop with its exit code if it fails."""
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code != 0:
        sys.exit(code)


def test(args: list[str]) -> None:
    """Lint, format check, strict types, then pytest (exit 5, no tests collected, is a failure)."""
    ensure_venv("dev")
    folders = ("src", "tests", "benchmarks", "examples", "fuzz")
    paths = [p for p in folders if (ROOT / p).is_dir()]
    run([str(BIN / "ruff"), "check", *paths, "run.py"])
    run([str(BIN / "ruff"), "format", "--check", *paths, "run.py"])
    run([str(BIN / "mypy"), "--strict", "src"])
    run([str(PYTHON), "-m", "pytest", *args])


def demo(args: list[str]) -> None:
    """Serve the demo app with uvicorn on 127.0.0.1."""
    ensure_venv("demo")
    os.execv(str(BIN / "sessionware"), [str(BIN / "sessionware"), "demo", *args])


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in {"test", "demo"}:
        sys.exit(__doc__)
    {"test": test, "demo": demo}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
