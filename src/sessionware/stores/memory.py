"""MemorySessionStore: records in a dict of this process, for tests and development.

Each record is ``(expires, data, version)``; the user index is a dict from user to
``{id: expires}``. Nothing here is shared between processes.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import timedelta

from sessionware.stores.base import (
    ABSENT,
    Absent,
    Record,
    Replace,
    UserSessionsMixin,
    Version,
    deprecated_clock,
)

__all__ = ["MemorySessionStore"]


class MemorySessionStore(UserSessionsMixin):
    """Records that expire after their TTL; the least recently written go past ``max_entries``.
    The TTL only collects garbage: when a session expires is the middleware's clock's call.

    Records are bytes, so a stored session never changes through a reference a handler holds.
    """

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] | None = None,
        hash_keys: bool = True,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.hash_keys = hash_keys
        self._clock = deprecated_clock("MemorySessionStore", clock)
        self.legacy_clock = clock
        """The clock given the first version's way, if one was; the middleware's otherwise."""
        self._max_entries = max_entries
        self._records: OrderedDict[str, tuple[float, bytes, int]] = OrderedDict()
        self._index: dict[str, dict[str, float]] = {}
        self._versions = itertools.count(1)
        self._adds = 0

    def __len__(self) -> int:
        """How many unexpired records the store holds (tombstones included)."""
        now = self._clock()
        return sum(1 for expires, _, _ in self._records.values() if expires > now)

    async def check(self) -> None:
        """Nothing to reach: the records live in this process."""

    def _live(self, id: str) -> tuple[float, bytes, int] | None:
        entry = self._records.get(id)
        if entry is not None and entry[0] <= self._clock():
            del self._records[id]
            return None
        return entry

    async def get(self, id: str) -> Record | None:
        entry = self._live(id)
        return None if entry is None else Record(entry[1], entry[2])

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        entry = self._live(id)
        if (entry is None) != (expect is ABSENT) or (entry is not None and entry[2] != expect):
            return None
        version = next(self._versions)
        self._records[id] = (self._clock() + ttl.total_seconds(), bytes(data), version)
        self._records.move_to_end(id)
        while len(self._records) > self._max_entries:
            self._records.popitem(last=False)
        return version

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        return [await self.get(id) for id in ids]

    async def replace_many(self, writes: Sequence[Replace]) -> list[Version | None]:
        return [await self.put(w.id, w.data, w.ttl, expect=w.expect) for w in writes]

    async def touch(self, id: str, ttl: timedelta) -> bool:
        entry = self._live(id)
        if entry is None:
            return False
        self._records[id] = (self._clock() + ttl.total_seconds(), entry[1], entry[2])
        return True

    async def delete(self, id: str) -> None:
        self._records.pop(id, None)

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        now = self._clock()
        self._adds += 1
        # Drop this user's expired members, and every 1024 adds everybody's.
        for name in list(self._index) if self._adds % 1024 == 0 else [user]:
            members = self._index.get(name, {})
            for member in [m for m, expires in members.items() if expires <= now]:
                del members[member]
            if not members:
                self._index.pop(name, None)
        self._index.setdefault(user, {})[id] = now + ttl.total_seconds()

    async def index_remove(self, user: str, id: str) -> None:
        members = self._index.get(user)
        if members is not None:
            members.pop(id, None)
            if not members:
                del self._index[user]

    async def index_members(self, user: str) -> list[str]:
        now = self._clock()
        return [m for m, expires in self._index.get(user, {}).items() if expires > now]

    async def index_remove_many(self, user: str, ids: Sequence[str]) -> None:
        for id in ids:
            await self.index_remove(user, id)
