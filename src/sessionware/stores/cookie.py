"""CookieSessionStore: the whole state travels in the cookie, sealed by the middleware (SPEC §5)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from sessionware.state import StoredState
from sessionware.stores.base import (
    MAX_KEY_BYTES,
    Changes,
    LoadError,
    NotSupportedError,
    SaveError,
    SessionInfo,
    SessionKey,
    read_record,
    write_record,
)

__all__ = ["CookieSessionStore"]

_NO_INDEX = (
    "not supported by this store: CookieSessionStore keeps no list of a user's sessions and"
    " cannot end them; use a server-side store (Redis, SQLite, PostgreSQL, memory)"
)

CLOCK_SKEW = 60.0
"""Seconds a cookie's creation time may lie in the future (another server's clock running ahead)."""


class CookieSessionStore:
    """Keeps the state in the cookie: the session key *is* the serialised state.

    Unlike actix's, the envelope carries ``expires`` (idle timeout) and ``created`` (for the
    absolute timeout); both are authenticated with the rest of the cookie, so a replayed old cookie
    opens to an empty session. Purging cannot revoke a copy of the cookie kept elsewhere: use a
    server-side store where that matters. ``legacy_format`` writes actix 0.11's map of JSON texts,
    which carries no expiry.
    """

    holds_state_in_key: ClassVar[bool] = True

    def __init__(
        self, *, legacy_format: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self._legacy = legacy_format
        self._clock = clock

    async def load(self, key: SessionKey) -> StoredState | None:
        return self.load_sync(key)

    def load_sync(self, key: SessionKey) -> StoredState | None:
        """``load`` without awaiting: the state is right there in the key."""
        state = read_record(key)
        now = self._clock()
        if state.expires is not None and state.expires <= now:
            return None
        if state.created is not None and state.created > now + CLOCK_SKEW:
            raise LoadError("session cookie was created in the future", deserialization=True)
        return state

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        expires = None if self._legacy else self._clock() + ttl.total_seconds()
        text = write_record(state, expires=expires, legacy=self._legacy)
        size = len(text.encode("utf-8"))
        if size > MAX_KEY_BYTES:
            raise SaveError(
                f"session state is {size} bytes of JSON; a cookie session holds at most"
                f" {MAX_KEY_BYTES} (4096 with the cookie's name and attributes). Keep less in"
                " the session or use a server-side store",
                serialization=True,
            )
        return SessionKey(text)

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        return await self.save(state, ttl)

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None:
        """Nothing to do: the middleware re-saves a cookie session to extend it."""

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        """Nothing to do: the removal cookie is all there is (a copy of the cookie still opens)."""

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """Not supported: the sessions live in the browsers, not here."""
        raise NotSupportedError(_NO_INDEX)

    async def delete_all_for(self, user_id: str, except_key: SessionKey | None = None) -> int:
        """Not supported: a cookie session cannot be revoked (use a server-side store)."""
        raise NotSupportedError(_NO_INDEX)
