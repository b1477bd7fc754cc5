"""CachedSessionStore: a fast store (memory, Redis, memcached) in front of a durable one.

The cache holds, under the same id, the durable record's version and data for ``cache_ttl``
(never longer than the record's own TTL). Per operation::

    get     cache.get; on a miss durable.get, then cache.put(expect=ABSENT) to fill the cache
    put     durable.put(expect); then cache.delete and cache.put(expect=ABSENT) with the new
            version, or, when the durable store refused (a stale cached copy), cache.delete
    touch   durable.touch (the cached copy stays right: same data, same version); a False drops it
    delete  durable.delete, then cache.delete

The durable store decides every write, so a write from a stale cached copy is refused there, and
dropping the copy makes the repository's retry read the durable record: a stale copy never
revives an ended session. A cache failure is logged (without ids) and read around; a durable
failure is a ``StoreError``. The user index, when the durable store has one, is the durable's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sessionware.stores.base import (
    ABSENT,
    Absent,
    Record,
    RecordStore,
    StoreError,
    UserIndex,
    UserSessionsMixin,
    Version,
)

__all__ = ["CachedSessionStore"]

logger = logging.getLogger("sessionware.stores.cached")
_FAILED: Any = object()


def _pack(version: Version, data: bytes) -> bytes | None:
    """The cache entry: ``i<int>`` or ``s<str>``, a newline, then the durable record's data."""
    if isinstance(version, int) and not isinstance(version, bool):
        return b"i%d\n" % version + data
    if isinstance(version, str) and "\n" not in version:
        return b"s" + version.encode("utf-8", "surrogatepass") + b"\n" + data
    return None  # a version the cache cannot hold: this record is not cached


def _unpack(entry: bytes) -> Record | None:
    head, newline, data = entry.partition(b"\n")
    if not newline or head[:1] not in (b"i", b"s"):
        return None
    text = head[1:].decode("utf-8", "surrogatepass")
    return Record(data, int(text) if head[:1] == b"i" else text)


class CachedSessionStore:
    """Reads from ``cache`` first, writes through ``durable`` (see the module docstring).

    ``cache_ttl`` bounds how long a cached copy is served: with a per-process cache (memory) it
    is how long another process may still see a session that was ended elsewhere.
    """

    def __new__(cls, *, cache: RecordStore, durable: RecordStore, **_: Any) -> CachedSessionStore:
        if cls is CachedSessionStore and isinstance(durable, UserIndex):
            cls = _IndexedCachedStore
        return super().__new__(cls)

    def __init__(
        self,
        *,
        cache: RecordStore,
        durable: RecordStore,
        cache_ttl: timedelta = timedelta(seconds=30),
    ) -> None:
        for name, store in (("cache", cache), ("durable", durable)):
            if not isinstance(store, RecordStore):
                raise TypeError(f"{name} must be a record store (get, put, touch, delete)")
        if cache_ttl <= timedelta(0):
            raise ValueError("cache_ttl must be positive")
        self.cache = cache
        self.durable = durable
        self.cache_ttl = cache_ttl
        self.hash_keys = bool(getattr(durable, "hash_keys", True))

    async def _quietly(self, operation: str, call: Any) -> Any:
        """The cache's answer, or ``_FAILED`` (logged, without ids) when the cache failed."""
        try:
            return await call
        except StoreError as exc:
            logger.warning(
                "session cache failed to %s; the durable store decides: %s", operation, exc
            )
            return _FAILED

    async def get(self, id: str) -> Record | None:
        entry = await self._quietly("read", self.cache.get(id))
        cached = _unpack(entry.data) if isinstance(entry, Record) else None
        if cached is not None:
            return cached
        record = await self.durable.get(id)
        if record is not None and entry is not _FAILED:
            await self._fill(id, record, self.cache_ttl, drop=entry is not None)
        return record

    async def _fill(self, id: str, record: Record, ttl: timedelta, *, drop: bool) -> None:
        if drop:
            await self._quietly("drop an entry", self.cache.delete(id))
        packed = _pack(record.version, record.data)
        if packed is not None:
            ttl = min(ttl, self.cache_ttl)
            if await self._quietly("write", self.cache.put(id, packed, ttl, expect=ABSENT)) in (
                None,
                _FAILED,
            ):
                # Another write got there first (or the cache failed): keep no copy at all.
                await self._quietly("drop an entry", self.cache.delete(id))

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        try:
            version = await self.durable.put(id, data, ttl, expect=expect)
        except StoreError:
            await self._quietly("drop an entry", self.cache.delete(id))
            raise
        if version is None:
            await self._quietly("drop an entry", self.cache.delete(id))
            return None
        await self._fill(id, Record(data, version), ttl, drop=True)
        return version

    async def touch(self, id: str, ttl: timedelta) -> bool:
        touched = await self.durable.touch(id, ttl)
        if not touched:
            await self._quietly("drop an entry", self.cache.delete(id))
        return touched

    async def delete(self, id: str) -> None:
        await self.durable.delete(id)
        await self._quietly("drop an entry", self.cache.delete(id))


class _IndexedCachedStore(CachedSessionStore, UserSessionsMixin):
    """A ``CachedSessionStore`` whose durable store keeps a user index: the index is that one."""

    durable: Any

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self.durable.index_add(user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self.durable.index_remove(user, id)

    async def index_members(self, user: str) -> list[str]:
        return list(await self.durable.index_members(user))
