"""The store contract: what every session store implements, and the types it speaks.

Errors::

    LoadError     loading failed; ``deserialization`` tells bad data (new empty session)
                  from anything else (opaque 503)
    SaveError     saving a new session failed; ``serialization`` as above
    UpdateError   updating a session failed; ``serialization`` as above

A store never sees cookies or requests: it maps a ``SessionKey`` to a state, with a TTL.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Protocol, runtime_checkable

from sessionware.state import DeserializationError, StoredState, decode_state, encode_state

__all__ = [
    "TOMBSTONE_TTL",
    "Changes",
    "LoadError",
    "NotSupportedError",
    "SaveError",
    "SessionInfo",
    "SessionKey",
    "SessionStore",
    "UpdateError",
    "UserIndexedStore",
    "generate_session_key",
    "is_generated_key",
    "merge",
    "oldest_first",
    "read_record",
    "ttl_seconds",
    "user_of",
    "write_record",
]

MAX_KEY_BYTES = 4064
"""actix's limit on a session key: the cookie's value must fit in 4096 bytes with its name."""

TOMBSTONE_TTL = timedelta(minutes=5)
"""How long a purged or renewed key is remembered, so a slower request cannot bring it back."""

_ALPHABET = string.ascii_letters + string.digits
_GENERATED = re.compile(r"[A-Za-z0-9]{64}")


class SessionKey(str):
    """The key a store files a session under: at most 4064 bytes, never empty (SPEC §4.2)."""

    __slots__ = ()

    def __new__(cls, value: str) -> SessionKey:
        if not isinstance(value, str):
            raise TypeError("a session key is a str")
        if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise ValueError("The provided string is not a valid session key")
        return super().__new__(cls, value)


def generate_session_key() -> SessionKey:
    """A fresh key: 64 characters drawn uniformly from [A-Za-z0-9] by the OS CSPRNG (~381 bits)."""
    chars: list[str] = []
    while len(chars) < 64:
        # 248 = 4 * 62: bytes at or above it are dropped so every character is equally likely.
        chars.extend(_ALPHABET[b % 62] for b in secrets.token_bytes(80) if b < 248)
    return SessionKey("".join(chars[:64]))


def is_generated_key(value: str) -> bool:
    """Whether ``value`` has exactly the shape ``generate_session_key`` produces."""
    return _GENERATED.fullmatch(value) is not None


def ttl_seconds(ttl: timedelta) -> int:
    """A TTL in whole seconds for a server that takes seconds, never below 1 (0 would mean 'now')."""
    return max(1, int(ttl.total_seconds()))


@dataclass(frozen=True)
class Changes:
    """What one request did to a session's state, so a store can merge it into the current record.

    ``cleared``: the request emptied the state first; ``set``: keys written (with their new values);
    ``removed``: keys deleted. Applying it to what another request stored meanwhile keeps both
    requests' changes to different keys.
    """

    cleared: bool = False
    set: Mapping[str, Any] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()

    @classmethod
    def replace(cls, state: Mapping[str, Any]) -> Changes:
        """Changes that make the record exactly ``state``."""
        return cls(cleared=True, set=dict(state))

    def apply(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """The state after these changes, on top of ``current``."""
        merged: dict[str, Any] = {} if self.cleared else dict(current)
        for key in self.removed:
            merged.pop(key, None)
        merged.update(self.set)
        return merged


def merge(state: Mapping[str, Any], changes: Changes | None, current: StoredState) -> StoredState:
    """What ``update`` writes: ``changes`` (or all of ``state``) applied to the ``current`` record.

    The record keeps its creation time; the rest of the metadata (user, last write) comes from
    the request's ``state`` when it is a ``StoredState``.
    """
    merged = (changes or Changes.replace(state)).apply(current)
    base = state if isinstance(state, StoredState) else current
    return base.with_state(merged, created=current.created or base.created)


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as ``sessions_for`` lists it. Times are Unix seconds.

    ``last_seen`` is the last time the session was written (reads do not write).
    """

    key: SessionKey
    created: float | None
    last_seen: float | None
    expires: float | None
    user_agent: str | None


def oldest_first(infos: list[SessionInfo]) -> list[SessionInfo]:
    """``infos`` ordered by creation, then last write (how ``sessions_for`` lists them)."""
    return sorted(infos, key=lambda i: (i.created or 0.0, i.last_seen or 0.0, i.key))


def user_of(state: Mapping[str, Any]) -> str | None:
    """The user a state to be written is bound to (only a ``StoredState`` can be)."""
    return state.user if isinstance(state, StoredState) else None


class NotSupportedError(Exception):
    """The store cannot do this (the cookie store keeps no per-user index, for one)."""


class LoadError(Exception):
    """Loading a session failed. ``deserialization`` is true when the stored data is unreadable."""

    def __init__(self, message: str, *, deserialization: bool = False) -> None:
        super().__init__(message)
        self.deserialization = deserialization


class SaveError(Exception):
    """Saving a new session failed. ``serialization`` is true when the state could not be encoded."""

    def __init__(self, message: str, *, serialization: bool = False) -> None:
        super().__init__(message)
        self.serialization = serialization


class UpdateError(Exception):
    """Updating a session failed. ``serialization`` is true when the state could not be encoded."""

    def __init__(self, message: str, *, serialization: bool = False) -> None:
        super().__init__(message)
        self.serialization = serialization


def read_record(raw: str | bytes) -> StoredState:
    """``decode_state`` as a store's ``load`` reports it: unreadable data is a ``LoadError``."""
    try:
        return decode_state(raw)
    except DeserializationError as exc:
        raise LoadError(f"stored session is unreadable: {exc}", deserialization=True) from None


def write_record(
    state: Mapping[str, Any], error: type[SaveError | UpdateError] = SaveError, **options: Any
) -> str:
    """``encode_state`` as a store's ``save``/``update`` reports it: ``error(serialization=True)``."""
    try:
        return encode_state(state, **options)
    except (TypeError, ValueError) as exc:
        raise error(f"session state cannot be encoded: {exc}", serialization=True) from None


@runtime_checkable
class SessionStore(Protocol):
    """An async session store (SPEC §4.1), with tombstones and change merging added.

    * ``load(key)``: the state, or ``None`` when the key is unknown, expired, purged or renewed.
      Raises ``LoadError`` (``deserialization=True`` for unreadable data).
    * ``save(state, ttl)``: store under a fresh key from ``generate_session_key`` (never an
      existing one) and return it.
    * ``update(key, state, ttl, changes)``: write the session back and return the key it now lives
      under. With ``changes``, merge them into the current record atomically instead of
      overwriting it. If ``key`` was renewed meanwhile, apply the changes to its successor and
      return that key; if it was purged, write nothing and return ``None``; if it merely
      expired, ``save`` the whole ``state`` under a new key.
    * ``update_ttl(key, ttl)``: extend the record's life; a missing key is not an error.
    * ``delete(key, successor=None)``: remove the record and leave a tombstone for
      ``TOMBSTONE_TTL`` naming ``successor`` (the key it was renewed to) or nothing (purged).
      An existing tombstone is never replaced: a second renewal leaves the first in place (the
      middleware then moves its request onto the winner), and a purge of a renewed key
      purges its successor too, so a logout racing a login still logs out.

    TTLs are ``timedelta``; stores that count in seconds use ``ttl_seconds``. The state a store
    returns is a ``StoredState`` so the envelope's ``created`` time survives round trips; a store
    keeps ``created`` across updates. Stores set ``holds_state_in_key = True`` when the key is the
    state itself (the cookie store): the middleware then accepts any key shape and re-saves to
    extend a TTL.
    """

    holds_state_in_key: ClassVar[bool]

    async def load(self, key: SessionKey) -> StoredState | None: ...

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey: ...

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None: ...

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None: ...

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None: ...


@runtime_checkable
class UserIndexedStore(SessionStore, Protocol):
    """A store that also knows which sessions belong to which user (``Session.bind_user``).

    * ``sessions_for(user_id)``: the user's live sessions, oldest first.
    * ``delete_all_for(user_id, except_key=None)``: end them all (leaving tombstones, as
      ``delete``), or all but ``except_key`` (sign out other devices); return how many ended.

    The index follows the records: a save or update files the session under the user its
    ``StoredState.user`` names (moving it if that changed), ``delete`` and expiry remove it.
    """

    async def sessions_for(self, user_id: str) -> list[SessionInfo]: ...

    async def delete_all_for(self, user_id: str, except_key: SessionKey | None = None) -> int: ...
