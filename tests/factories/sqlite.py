"""The SQLite store, on a file in a fresh temporary directory."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sessionware.stores.sqlite import SQLiteSessionStore

SERVER_SIDE = True


@asynccontextmanager
async def store(
    clock: Callable[[], float] = time.time, *, hash_keys: bool = True
) -> AsyncIterator[SQLiteSessionStore]:
    with tempfile.TemporaryDirectory(prefix="sessionware-") as directory:
        path = Path(directory) / "sessions.db"
        with warnings.catch_warnings():  # a TTL clock the contract suite moves (deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            sessions = SQLiteSessionStore(
                path, clock=None if clock is time.time else clock, hash_keys=hash_keys
            )
        try:
            yield sessions
        finally:
            await sessions.aclose()
