"""The cookie store: the state travels in the cookie."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores import CookieSessionStore

SERVER_SIDE = False


@asynccontextmanager
async def store() -> AsyncIterator[CookieSessionStore]:
    yield CookieSessionStore()
