"""The PostgreSQL store, on tables of its own that are dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]

from sessionware.stores.postgres import PostgresSessionStore
from tests.services import require

SERVER_SIDE = True
EXPIRY_MARGIN = 0.2
"""Expiry is the database clock to the microsecond: a short wait past a TTL is enough."""
DSN = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def store(*, hash_keys: bool = True) -> AsyncIterator[PostgresSessionStore]:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = f"sessionware_test_{uuid.uuid4().hex}"
    sessions = PostgresSessionStore.from_dsn(
        DSN, table=table, connect_timeout=5, hash_keys=hash_keys
    )
    try:
        yield sessions
    finally:
        await sessions.aclose()
        conn = await asyncpg.connect(DSN, timeout=5)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        finally:
            await conn.close()
