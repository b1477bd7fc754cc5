"""CookieSessionStore: the client-side backend. The whole state travels in the sealed cookie.

It is not a record store: there is nothing to read or write, so the engine's client-side path
asks it only to read a cookie's plaintext (``read``, which ``open`` wraps: a subclass overrides
``read``) and to write one (``dump``), both without I/O. Purging cannot revoke a copy of the
cookie kept elsewhere: use a server-side store for that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sessionware.state import (
    DeserializationError,
    StateFields,
    StoredState,
    decode_fields,
    encode_state,
)
from sessionware.stores.base import NotSupportedError, SessionInfo, deprecated_clock

__all__ = ["CookieSessionStore"]

_NO_INDEX = (
    "not supported by this store: CookieSessionStore keeps no list of a user's sessions and"
    " cannot end them; use a server-side store (Redis, SQLite, PostgreSQL, memory)"
)

CLOCK_SKEW = 60.0
"""Seconds a cookie's creation time may lie in the future (another server's clock running ahead)."""


class CookieSessionStore:
    """Keeps the state in the cookie, sealed by the middleware (SPEC §5).

    Unlike actix's, the envelope carries ``expires`` (idle timeout) and ``created`` (for the
    absolute timeout), authenticated with the rest of the cookie, so a replayed old cookie opens
    to an empty session. ``legacy_format`` writes actix 0.11's map of JSON texts, which carries
    no expiry.
    """

    def __init__(
        self, *, legacy_format: bool = False, clock: Callable[[], float] | None = None
    ) -> None:
        self.legacy_format = legacy_format
        self._clock = deprecated_clock("CookieSessionStore", clock)
        self.legacy_clock = clock
        """The clock given the first version's way, if one was; the middleware's otherwise."""

    async def check(self) -> None:
        """Nothing to reach: the state travels in the cookie."""

    def open(self, text: str, *, now: float | None = None) -> StoredState | None:
        """The state a cookie's plaintext holds; ``None`` once it expired (at ``now``).

        Raises ``DeserializationError`` for anything that is not a state this store wrote.
        """
        fields = self.read(text)
        if fields is None:
            return None
        state, created, expires, user = fields
        now = self._clock() if now is None else now
        if expires is not None and expires <= now:
            return None
        if created is not None and created > now + CLOCK_SKEW:
            raise DeserializationError("session cookie was created in the future")
        if isinstance(state, StoredState):
            return state
        return StoredState(state, created=created, expires=expires, user=user)

    def read(self, text: str) -> StateFields | None:
        """The state a cookie's plaintext holds, with its ``created``, ``expires`` and
        ``user``, without building a ``StoredState`` (the engine's path, which judges the
        times with its clock). Raises ``DeserializationError`` for what this store did not
        write; a subclass may answer ``None``: no session."""
        return decode_fields(text)

    def dump(
        self,
        state: Mapping[str, Any],
        ttl: timedelta,
        *,
        state_json: str | None = None,
        created: float | None = None,
        user: str | None = None,
        now: float | None = None,
        lifetime: float | None = None,
    ) -> str:
        """The plaintext to seal for ``state`` (the engine refuses a cookie over 4096 bytes),
        expiring ``ttl`` after ``now``.

        ``created``, ``user`` and ``lifetime`` (``Session.set_expiry``'s, in seconds) default
        to a ``StoredState``'s; with ``state_json`` (the state already encoded) and without
        ``legacy_format``, ``state`` itself is not read. The legacy format carries no times."""
        legacy = self.legacy_format
        expires = None if legacy else (self._clock() if now is None else now) + ttl.total_seconds()
        if lifetime is not None and not legacy:
            return encode_state(
                state,
                created=created,
                expires=expires,
                user=user,
                state_json=state_json,
                lifetime=lifetime,
            )
        return encode_state(
            state, created=created, expires=expires, user=user, legacy=legacy, state_json=state_json
        )

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """Not supported: the sessions live in the browsers, not here."""
        raise NotSupportedError(_NO_INDEX)

    async def delete_all_for(self, user_id: str, except_key: str | None = None) -> int:
        """Not supported: a cookie session cannot be revoked (use a server-side store)."""
        raise NotSupportedError(_NO_INDEX)

    async def end_session(self, session_id: str) -> bool:
        """Not supported: a cookie session cannot be revoked (use a server-side store)."""
        raise NotSupportedError(_NO_INDEX)
