"""Acceptance fixtures: every store crossed with every content-security mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionware import ContentSecurity
from sessionware.stores import CookieSessionStore, SessionStore
from tests.client import RecordingStore


@pytest.fixture(params=list(ContentSecurity), ids=lambda c: c.name.lower())
def security(request: pytest.FixtureRequest) -> ContentSecurity:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def store(any_store: SessionStore) -> AsyncIterator[RecordingStore]:
    yield RecordingStore(any_store)


@pytest.fixture
def invalidation(store: RecordingStore) -> bool:
    """Whether the store can invalidate a session (server-side); the cookie store cannot."""
    return not isinstance(store, CookieSessionStore)
