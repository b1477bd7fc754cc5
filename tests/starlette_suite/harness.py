"""Fetch Starlette's own session tests and point them at sessionware's drop-in.

The sdist of ``starlette==STARLETTE_VERSION`` is downloaded once with ``pip download`` (checked
against a pinned SHA-256) into ``tests/starlette_suite/_generated/`` (git-ignored), and three files
are taken from its ``tests/`` tree: ``middleware/test_session.py``, ``conftest.py`` (the
``test_client_factory`` fixture) and ``types.py``. The only edits are import lines, listed in
``REWRITES``; each must match exactly once, so a changed upstream file fails loudly. Delete
``_generated/`` to fetch again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

STARLETTE_VERSION = "1.10.0"
SDIST_SHA256 = "b8399098d4c1e3522734f7235dc79b1fc967f96cf139c81e0fa30479e0685f9b"
SDIST = f"starlette-{STARLETTE_VERSION}.tar.gz"

GENERATED = Path(__file__).parent / "_generated"
PACKAGE = "tests.starlette_suite._generated"

# upstream path -> (local module name, [(old line, new lines)])
REWRITES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "tests/types.py": ("starlette_types", []),
    "tests/conftest.py": (
        "starlette_conftest",
        [
            (
                "from tests.types import TestClientFactory\n",
                f"from {PACKAGE}.starlette_types import TestClientFactory\n",
            )
        ],
    ),
    "tests/middleware/test_session.py": (
        "starlette_test_session",
        [
            (
                "from starlette.middleware.sessions import Session, SessionMiddleware\n",
                "from sessionware import Session\n"
                "from sessionware.integrations.starlette import SessionMiddleware\n",
            ),
            (
                "from tests.types import TestClientFactory\n",
                f"from {PACKAGE}.starlette_types import TestClientFactory\n",
            ),
        ],
    ),
}


class HarnessError(Exception):
    """The suite could be fetched but not prepared: a bug here or a changed upstream file."""


class Unavailable(Exception):
    """The sdist could not be downloaded (offline, no pip, index unreachable)."""


def _stamp() -> str:
    """Changes whenever what would be generated changes."""
    return hashlib.sha256(repr((SDIST_SHA256, REWRITES)).encode()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(directory: Path) -> Path:
    sdist = directory / SDIST
    if sdist.exists() and _sha256(sdist) == SDIST_SHA256:
        return sdist
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "20",
            "--dest",
            tmp,
            f"starlette=={STARLETTE_VERSION}",
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(
                f"pip download of starlette {STARLETTE_VERSION} failed: {exc}"
            ) from exc
        fetched = Path(tmp) / SDIST
        if done.returncode != 0 or not fetched.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(f"pip download of starlette {STARLETTE_VERSION} failed: {last}")
        digest = _sha256(fetched)
        if digest != SDIST_SHA256:
            raise HarnessError(f"{SDIST} has SHA-256 {digest}, expected {SDIST_SHA256}")
        os.replace(fetched, sdist)
    return sdist


def _generate(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        sources = {}
        for upstream in REWRITES:
            member = archive.extractfile(f"starlette-{STARLETTE_VERSION}/{upstream}")
            if member is None:
                raise HarnessError(f"{upstream} is missing from {SDIST}")
            sources[upstream] = member.read().decode("utf-8")
    for upstream, (module, rewrites) in REWRITES.items():
        text = sources[upstream]
        for old, new in rewrites:
            if text.count(old) != 1:
                raise HarnessError(f"{upstream}: expected the line {old.strip()!r} exactly once")
            text = text.replace(old, new)
        header = f"# Generated from starlette {STARLETTE_VERSION} {upstream}; see ../harness.py\n"
        (GENERATED / f"{module}.py").write_text(header + text, encoding="utf-8")
    (GENERATED / "__init__.py").write_text("", encoding="utf-8")
    (GENERATED / "STAMP").write_text(_stamp(), encoding="utf-8")


def prepare() -> None:
    """Make sure the generated package is present and current; download at most once."""
    GENERATED.mkdir(exist_ok=True)
    stamp = GENERATED / "STAMP"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == _stamp():
        return
    stamp.unlink(missing_ok=True)
    _generate(_download(GENERATED))


def load_suite() -> tuple[ModuleType, ModuleType]:
    """Starlette's session test module and its conftest, importing the drop-in.

    Raises ``Unavailable`` when the sdist cannot be had, ``HarnessError`` when it is wrong.
    """
    if importlib.util.find_spec("httpx2") is None:
        raise HarnessError("Starlette's tests need httpx2 (a dev dependency): pip install httpx2")
    prepare()
    pytest.register_assert_rewrite(PACKAGE)  # Starlette's asserts explain themselves
    conftest = importlib.import_module(f"{PACKAGE}.starlette_conftest")
    tests = importlib.import_module(f"{PACKAGE}.starlette_test_session")
    return tests, conftest


def unavailable(reason: str) -> None:
    """Skip the module with ``reason``, or fail collection under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must be able to download it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
