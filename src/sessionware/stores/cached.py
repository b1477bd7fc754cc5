"""CachedSessionStore: a fast store (memory, Redis, memcached) in front of a durable one.

The cache holds, under the same id, the durable record's version and data for ``cache_ttl``
(a copy filled by a read may outlive the durable record by up to that). Per operation::

    get         cache.get; on a miss durable.get, then cache.put(expect=ABSENT) to fill it
    put(ABSENT) durable.put, then cache.put(expect=ABSENT)
    put(v)      durable.put(expect=v), then cache.get and, if the copy is of version v,
                cache.put(expect=<its cache version>); any other copy is dropped (cache.delete)
    refused     (the durable store said no: a stale copy) cache.delete
    touch       durable.touch (same data, same version: the copy stays right)
    delete      durable.delete, then cache.delete

Within a process the durable call and the cache update for one id run under one lock, so the
cache follows the durable store's order; across processes a copy only moves from the version it
replaced to the next, so a late write never puts an older version back.

The durable store decides every write, so a write from a stale cached copy is refused there, and
dropping the copy makes the repository's retry read the durable record: a stale copy never
revives an ended session. A cache failure is logged (without ids) and read around; a durable
failure is a ``StoreError``. The user index, when the durable store has one, is the durable's.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
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
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, id: str) -> asyncio.Lock:
        """One lock per id in use: this process's durable calls and cache updates of an id
        happen in the same order."""
        lock = self._locks.get(id)
        if lock is None:
            lock = self._locks[id] = asyncio.Lock()
        return lock

    async def _quietly(self, operation: str, call: Any) -> Any:
        """The cache's answer, or ``_FAILED`` (logged, without ids) when the cache failed."""
        try:
            return await call
        except StoreError as exc:
            logger.warning(
                "session cache failed to %s; the durable store decides: %s", operation, exc
            )
            return _FAILED

    async def _drop(self, id: str) -> None:
        await self._quietly("drop an entry", self.cache.delete(id))

    async def _add(self, id: str, record: Record, ttl: timedelta) -> None:
        packed = _pack(record.version, record.data)
        if packed is None:
            return
        added = await self._quietly("write", self.cache.put(id, packed, ttl, expect=ABSENT))
        if added is None or added is _FAILED:
            await self._drop(id)  # a copy was there already: keep none rather than a stale one

    async def get(self, id: str) -> Record | None:
        entry = await self._quietly("read", self.cache.get(id))
        cached = _unpack(entry.data) if isinstance(entry, Record) else None
        if cached is not None:
            return cached
        async with self._lock(id):
            record = await self.durable.get(id)
            if record is not None and entry is not _FAILED:
                if entry is not None:
                    await self._drop(id)  # unreadable
                await self._add(id, record, self.cache_ttl)
        return record

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        async with self._lock(id):
            try:
                version = await self.durable.put(id, data, ttl, expect=expect)
            except StoreError:
                await self._drop(id)  # the write may have landed
                raise
            if version is None:
                await self._drop(id)  # a stale copy: the retry must read the durable record
            elif expect is ABSENT:
                await self._add(id, Record(data, version), min(ttl, self.cache_ttl))
            else:
                await self._advance(id, expect, Record(data, version), min(ttl, self.cache_ttl))
        return version

    async def _advance(self, id: str, old: Version, new: Record, ttl: timedelta) -> None:
        """Replace the cached copy of version ``old`` with ``new``; any other copy is dropped
        (no copy stays none), so a late update never puts back an older version."""
        entry = await self._quietly("read", self.cache.get(id))
        if entry is None:
            return
        packed = _pack(new.version, new.data)
        if isinstance(entry, Record) and packed is not None:
            cached = _unpack(entry.data)
            if cached is not None and cached.version == old:
                stored = self.cache.put(id, packed, ttl, expect=entry.version)
                if await self._quietly("write", stored) not in (None, _FAILED):
                    return
        await self._drop(id)

    async def touch(self, id: str, ttl: timedelta) -> bool:
        touched = await self.durable.touch(id, ttl)  # same data and version: the copy stays
        if not touched:
            await self._drop(id)
        return touched

    async def delete(self, id: str) -> None:
        async with self._lock(id):
            await self.durable.delete(id)
            await self._drop(id)


class _IndexedCachedStore(CachedSessionStore, UserSessionsMixin):
    """A ``CachedSessionStore`` whose durable store keeps a user index: the index is that one."""

    durable: Any

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self.durable.index_add(user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self.durable.index_remove(user, id)

    async def index_members(self, user: str) -> list[str]:
        return list(await self.durable.index_members(user))
