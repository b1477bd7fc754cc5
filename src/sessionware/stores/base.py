"""The record-store contract: versioned bytes under an id, with a TTL. Nothing about sessions.

A record store keeps opaque ``bytes`` under a string id, each with a version token and a TTL.
Everything that makes sessions correct (merging, tombstones, renewal, revocation, hashing keys,
the per-user index's meaning) lives in ``sessionware.repository``, written once over this::

    get(id)                           -> Record | None        (None: absent or expired)
    put(id, data, ttl, expect=ABSENT) -> Version | None       create only if absent
    put(id, data, ttl, expect=v)      -> Version | None       replace only if still at version v
    touch(id, ttl)                    -> bool                 extend a record's TTL, if present
    delete(id)                        -> None                 remove, if present

``put`` returns the new record's version, or ``None`` when the expectation did not hold (the
id was taken, or the record changed or vanished since it was read). An optional per-user index
(``index_add``, ``index_remove``, ``index_members``) lets the repository list and end a user's
sessions; without it those raise ``NotSupportedError``.

Optional batches (``BatchRecords``: ``get_many``, ``replace_many``; ``BatchIndex``:
``index_remove_many``) let an admin call over a user's N sessions cost a few round trips rather
than a few per session; and ``pinned()``, an async context manager, makes the calls inside it
(in that task) share one connection. Without them the repository calls the four one by one.

A store translates its driver's failures into ``StoreError`` and raises ``NotSupportedError``
for what it cannot do at all (both in ``sessionware.errors``, re-exported here).
"""

from __future__ import annotations

import re
import secrets
import string
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable

from sessionware.errors import (
    LoadError,
    NotSupportedError,
    SaveError,
    StoreError,
    UpdateError,
)

__all__ = [
    "ABSENT",
    "TOMBSTONE_TTL",
    "Absent",
    "BatchIndex",
    "BatchRecords",
    "LoadError",
    "NotSupportedError",
    "Record",
    "RecordStore",
    "Replace",
    "SaveError",
    "SessionInfo",
    "SessionKey",
    "StoreError",
    "UpdateError",
    "UserIndex",
    "UserSessionsMixin",
    "Version",
    "deprecated_clock",
    "generate_session_key",
    "is_generated_key",
    "ttl_seconds",
]

MAX_KEY_BYTES = 4064
"""actix's limit on a session key: the cookie's value must fit in 4096 bytes with its name."""

TOMBSTONE_TTL = timedelta(minutes=5)
"""How long a renewed or purged key is remembered, so a slower request follows or stops."""

_ALPHABET = string.ascii_letters + string.digits
_GENERATED = re.compile(r"[A-Za-z0-9]{64}")

Version = Hashable
"""A record's version token: opaque to the repository, compared only by the store."""


class Absent:
    """The type of ``ABSENT``: ``put(expect=ABSENT)`` creates a record only if the id is free."""

    _instance: Absent | None = None

    def __new__(cls) -> Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent()


@dataclass(frozen=True)
class Record:
    """What ``get`` returns: the stored bytes and the version to pass back to ``put``."""

    data: bytes
    version: Version


@runtime_checkable
class RecordStore(Protocol):
    """Versioned bytes records with a TTL on every write (see the module docstring).

    ``hash_keys``: whether the repository files sessions under the SHA-256 of their key (the
    default, so a leaked dump yields no usable cookie) or under the key itself (actix's layout).
    A store translates its driver's failures into ``StoreError``.
    """

    hash_keys: bool

    async def get(self, id: str) -> Record | None: ...

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None: ...

    async def touch(self, id: str, ttl: timedelta) -> bool: ...

    async def delete(self, id: str) -> None: ...


@runtime_checkable
class UserIndex(Protocol):
    """The optional per-user index: which record ids belong to a user, each until its TTL.
    (The ``user`` argument is an index key: a user id, or for ``Session.index(name, value)``
    the name, U+001F and the value; printable text of up to 255 characters but for that.)

    ``index_add`` files ``id`` under ``user`` until ``ttl`` from now (a second add moves that
    time) and drops members already past theirs, so an index never outgrows the user's recent
    sessions. ``index_members`` may list ids whose records have ended: the repository checks.
    """

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None: ...

    async def index_remove(self, user: str, id: str) -> None: ...

    async def index_members(self, user: str) -> list[str]: ...


class Replace(NamedTuple):
    """One write of ``replace_many``: ``data`` under ``id`` for ``ttl``, only if the record is
    still at version ``expect``."""

    id: str
    data: bytes
    ttl: timedelta
    expect: Version


@runtime_checkable
class BatchRecords(Protocol):
    """Optional: many records read, or replaced with compare-and-set, in one round trip.

    ``get_many(ids)`` is ``[get(id) for id in ids]``; ``replace_many(writes)`` is
    ``[put(w.id, w.data, w.ttl, expect=w.expect) for w in writes]`` for distinct ids, each write
    landing or not on its own (never all or nothing).
    """

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]: ...

    async def replace_many(self, writes: Sequence[Replace]) -> list[Version | None]: ...


@runtime_checkable
class BatchIndex(Protocol):
    """Optional: ``index_remove`` of many ids of one user in one round trip."""

    async def index_remove_many(self, user: str, ids: Sequence[str]) -> None: ...


class SessionKey(str):
    """A session's key as the cookie carries it: at most 4064 bytes, never empty (SPEC §4.2)."""

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


def deprecated_clock(store: str, clock: Callable[[], float] | None) -> Callable[[], float]:
    """A store's own clock, given the first version's way: it warns (``SessionMiddleware(clock=)``
    decides every question of time now; a store's TTL only collects garbage), and is what the
    store's TTL then runs on, and what the middleware uses when it is given none."""
    if clock is None:
        return time.time
    warnings.warn(
        f"{store}(clock=...) is deprecated: give the clock to SessionMiddleware(clock=...),"
        " which decides every question of time (a store's TTL only collects garbage)",
        DeprecationWarning,
        stacklevel=3,
    )
    return clock


def ttl_seconds(ttl: timedelta) -> int:
    """A TTL in whole seconds for a server that takes seconds, never below 1 (0 would mean 'now')."""
    return max(1, int(ttl.total_seconds()))


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as ``sessions_for`` lists it. Times are Unix seconds.

    ``id`` is the session's id at rest (the SHA-256 of its key): safe to show, and what
    ``end_session`` takes. ``last_seen`` is the last time the session was written.
    """

    id: str
    created: float | None
    last_seen: float | None
    expires: float | None
    user_agent: str | None


class UserSessionsMixin:
    """The first version's ``store.sessions_for`` / ``delete_all_for`` / ``end_session``, kept
    for one release: each warns (``DeprecationWarning``) and calls ``sessionware.SessionAdmin``
    over this store, which is the way in now (its events, clock and tombstones are the
    middleware's). Stores hold no session rules: the admin is found through ``ADMIN``, which
    ``sessionware.admin`` sets when it is imported (as ``import sessionware`` does)."""

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """Deprecated: ``SessionAdmin.sessions_for``."""
        _deprecated("sessions_for(user_id)", "sessions_for(user_id)")
        result: list[SessionInfo] = await ADMIN[0](self).sessions_for(user_id)
        return result

    async def delete_all_for(self, user_id: str, except_key: str | None = None) -> int:
        """Deprecated: ``SessionAdmin.end_all_for(user_id, keep=...)``. ``except_key`` may be a
        key or an id (``session.id``): either way that session is kept."""
        _deprecated("delete_all_for(user_id, except_key=...)", "end_all_for(user_id, keep=...)")
        admin = ADMIN[0](self)
        keep = None if except_key is None else admin.id_for(except_key)
        ended: int = await admin.end_all_for(user_id, keep=keep)
        return ended

    async def end_session(self, session_id: str) -> bool:
        """Deprecated: ``SessionAdmin.end_session``."""
        _deprecated("end_session(session_id)", "end_session(session_id)")
        ended: bool = await ADMIN[0](self).end_session(session_id)
        return ended


ADMIN: list[Callable[[Any], Any]] = []
"""``[SessionAdmin]`` once ``sessionware.admin`` is imported: how the deprecated store methods
reach it without this module importing the session rules."""


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"store.{old} is deprecated: use sessionware.SessionAdmin's {new}, or"
        " sessionware.get_admin(request) in a handler (it reports through the middleware's"
        " on_event and uses its clock)",
        DeprecationWarning,
        stacklevel=3,
    )
