"""MemorySessionStore: a bounded, TTL-aware store in this process, for tests and development.

The user index is a dict from user to the set of their keys, kept in step with every write.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from sessionware.state import DeserializationError, StoredState, decode_state
from sessionware.stores.base import (
    TOMBSTONE_TTL,
    Changes,
    SessionInfo,
    SessionKey,
    UpdateError,
    generate_session_key,
    merge,
    oldest_first,
    read_record,
    write_record,
)

__all__ = ["MemorySessionStore"]

_Tombstone = tuple[SessionKey | None]
"""A purged (``(None,)``) or renewed (``(successor,)``) key."""


class MemorySessionStore:
    """Sessions in a dict, each expiring after its TTL; the oldest are evicted past ``max_entries``.

    State is kept as encoded JSON so a stored session can never be changed through a reference a
    handler still holds, exactly as with a real server.
    """

    holds_state_in_key: ClassVar[bool] = False

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, str | _Tombstone]] = OrderedDict()
        self._owner: dict[str, str] = {}
        self._users: dict[str, set[str]] = {}

    def __len__(self) -> int:
        """How many live sessions the store holds (tombstones and expired records excluded)."""
        now = self._clock()
        return sum(1 for exp, rec in self._records.values() if exp > now and isinstance(rec, str))

    def _get(self, key: str) -> str | _Tombstone | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        expires, record = entry
        if expires <= self._clock():
            del self._records[key]
            self._file(key, None)
            return None
        return record

    def _put(
        self, key: str, record: str | _Tombstone, ttl: timedelta, user: str | None = None
    ) -> None:
        self._records[key] = (self._clock() + ttl.total_seconds(), record)
        self._records.move_to_end(key)
        self._file(key, user)
        while len(self._records) > self._max_entries:
            self._file(self._records.popitem(last=False)[0], None)

    def _file(self, key: str, user: str | None) -> None:
        """File ``key`` under ``user`` in the index (``None``: under nobody)."""
        old = self._owner.pop(key, None)
        if old is not None:
            keys = self._users[old]
            keys.discard(key)
            if not keys:
                del self._users[old]
        if user is not None:
            self._owner[key] = user
            self._users.setdefault(user, set()).add(key)

    async def load(self, key: SessionKey) -> StoredState | None:
        record = self._get(key)
        if not isinstance(record, str):
            return None
        return read_record(record)

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        text = write_record(state)
        key = generate_session_key()
        while key in self._records:  # pragma: no cover - 381 bits make this a formality
            key = generate_session_key()
        self._put(key, text, ttl, state.user if isinstance(state, StoredState) else None)
        return key

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        record = self._get(key)
        if isinstance(record, tuple):
            successor = record[0]
            if successor is None:
                return None
            return await self.update(successor, state, ttl, changes)
        try:
            current = None if record is None else decode_state(record)
        except DeserializationError:
            current = None  # unreadable: not a session to merge into
        if current is None:
            return await self.save(state, ttl)
        merged = merge(state, changes, current)
        self._put(key, write_record(merged, UpdateError), ttl, merged.user)
        return key

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None:
        record = self._get(key)
        if isinstance(record, str):
            self._put(key, record, ttl, self._owner.get(key))

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        record = self._get(key)
        if isinstance(record, tuple):  # ended already: a renewal stays, a purge goes after it
            if successor is None and record[0] is not None:
                await self.delete(record[0])
            return
        self._put(key, (successor,), TOMBSTONE_TTL)

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        infos = []
        for key in list(self._users.get(user_id, ())):
            record = self._get(key)
            if isinstance(record, str):
                state = decode_state(record)
                expires = self._records[key][0]
                infos.append(
                    SessionInfo(SessionKey(key), state.created, state.seen, expires, state.agent)
                )
        return oldest_first(infos)

    async def delete_all_for(self, user_id: str, except_key: SessionKey | None = None) -> int:
        ended = [info.key for info in await self.sessions_for(user_id) if info.key != except_key]
        for key in ended:
            await self.delete(key)
        return len(ended)
