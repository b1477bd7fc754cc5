"""The SQLite store, on a file in a fresh temporary directory."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sessionware.stores.sqlite import SQLiteSessionStore

SERVER_SIDE = True


@asynccontextmanager
async def store() -> AsyncIterator[SQLiteSessionStore]:
    with tempfile.TemporaryDirectory(prefix="sessionware-") as directory:
        sessions = SQLiteSessionStore(Path(directory) / "sessions.db")
        try:
            yield sessions
        finally:
            await sessions.aclose()
