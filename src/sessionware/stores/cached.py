"""CachedSessionStore: a fast store (memory, Redis, memcached) in front of a durable one.

The guarantee: once a write through this store has returned, no read through the same cache
that starts afterwards returns the version it replaced, or an older one; a write whose cache
cannot be corrected raises ``StoreError`` instead (so a logout is never acknowledged while the
cache still serves the session, which it then may for at most ``cache_ttl``).

The cache holds, under the record's id, either a *copy* (the durable record's version and
data, for ``cache_ttl`` at most) or a *lease* (a random token, for ``_LEASE_TTL`` at most) that
a caller places before its durable call, to fill the copy from. The protocol, ``C`` the cache
and ``D`` the durable store, each call a read, a compare-and-set or a delete of one id::

    get          X = C.get; a copy: return it                      (the hot path: one call)
                 nothing: L = C.put(lease, expect=ABSENT); r = D.get;
                          if L and r: C.put(copy of r, expect=L)   (the fill; lost: nothing)
                 a lease (another reader is filling): D.get
                 unreadable: C.delete; D.get
    put(ABSENT)  L = C.put(lease, expect=ABSENT); v = D.put(expect=ABSENT);
                 L: C.put(copy of v, expect=L), lost: C.delete;  no L: C.delete
    put(e)       v = D.put(expect=e); X = C.get; nothing or a copy of v: done;
                 a copy of e: C.put(copy of v, expect=X's cache version), lost: C.delete;
                 anything else: C.delete
    touch        D.touch (same data, same version: a copy stays right); gone: C.delete
    delete       D.delete; C.delete
    refused      (D.put answered None, or failed) C.delete, best effort: the retry reads D

After a durable write, a cache call that fails is followed by ``C.delete``; if that fails too,
the write raises ``StoreError`` (the durable write landed: docs/stores.md says what the client
sees). A cache failure while reading is logged (without ids) and read around.

Why no copy older than an acknowledged write W survives it: a copy enters the cache only by a
compare-and-set from an entry of known content. A fill replaces its caller's own lease, placed
before its durable call; a correction replaces a copy of exactly the version its durable write
replaced (durable versions form a chain: one write only moves a record on from a version). W's
correction changes or removes whatever entry it finds, a lease included, so a fill whose durable
read came before W finds its lease gone and does nothing, and a lease placed after it reads W
or later. Cache versions never come back (counters, cas tokens, or hashes of entries that carry
their durable version; the one remote gap: memcached restarts its cas counter, so a lease from
before a restart could match a new entry's token). Like the repository, this relies on a
durable version naming one state.

With a per-process cache (memory) all this holds within each process; another process's copies
live up to ``cache_ttl``. The user index, when the durable store has one, is the durable's.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from sessionware.stores._connections import check_each
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

_LEASE_TTL = timedelta(seconds=5)
"""How long a reader's lease lasts: a fill later than that does nothing, and a reader that died
keeps others from filling that id for at most this long (they read the durable store)."""

_FAILED: Any = object()
_LEASE = b"l"


def _pack(version: Version, data: bytes) -> bytes | None:
    """A copy: ``i<int>`` or ``s<str>``, a newline, then the durable record's data."""
    if isinstance(version, int) and not isinstance(version, bool):
        return b"i%d\n" % version + data
    if isinstance(version, str) and "\n" not in version:
        return b"s" + version.encode("utf-8", "surrogatepass") + b"\n" + data
    return None  # a version the cache cannot hold: this record is not cached


def _unpack(entry: bytes) -> Record | None:
    """The durable record a copy holds; ``None`` for a lease or anything unreadable."""
    head, newline, data = entry.partition(b"\n")
    if not newline or head[:1] not in (b"i", b"s"):
        return None
    text = head[1:].decode("utf-8", "surrogatepass")
    if head[:1] == b"s":
        return Record(data, text)
    try:
        return Record(data, int(text))
    except ValueError:
        return None


class CachedSessionStore:
    """Reads from ``cache`` first, writes through ``durable`` (see the module docstring).

    ``cache_ttl`` bounds how long a copy is served: with a per-process cache (memory) it is how
    long another process may still see a session that was ended elsewhere; with a shared cache
    it bounds the staleness a failed correction (a ``StoreError``) can leave.
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

    async def check(self) -> None:
        """Check the cache, then the durable store (each one that has ``check``): the first
        failure is raised, a ``StoreError`` naming which one, its server and the cause."""
        await check_each("the cached store", ("cache", self.cache), ("durable store", self.durable))

    async def _quietly(self, operation: str, call: Any) -> Any:
        """The cache's answer, or ``_FAILED`` (logged, without ids) when the cache failed."""
        try:
            return await call
        except StoreError as exc:
            logger.warning(
                "session cache failed to %s; the durable store decides: %s", operation, exc
            )
            return _FAILED

    async def _lease(self, id: str) -> Version | None:
        """Place a lease on a free id: the cache version to fill from, or ``None``."""
        lease = _LEASE + secrets.token_hex(16).encode()
        ttl = min(_LEASE_TTL, self.cache_ttl)
        placed = await self._quietly("lease", self.cache.put(id, lease, ttl, expect=ABSENT))
        return None if placed is _FAILED else placed

    async def get(self, id: str) -> Record | None:
        entry = await self._quietly("read", self.cache.get(id))
        if entry is None:
            lease = await self._lease(id)
            record = await self.durable.get(id)
            packed = None if record is None else _pack(record.version, record.data)
            if lease is not None and packed is not None:
                fill = self.cache.put(id, packed, self.cache_ttl, expect=lease)
                await self._quietly("fill", fill)
            return record
        if isinstance(entry, Record):
            cached = _unpack(entry.data)
            if cached is not None:
                return cached
            if not entry.data.startswith(_LEASE):
                await self._quietly("drop an unreadable entry", self.cache.delete(id))
        return await self.durable.get(id)

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        lease = await self._lease(id) if expect is ABSENT else None
        try:
            version = await self.durable.put(id, data, ttl, expect=expect)
        except StoreError:
            await self._quietly("drop an entry", self.cache.delete(id))  # it may have landed
            raise
        if version is None:  # refused: a stale copy, so the retry must read the durable record
            await self._quietly("drop an entry", self.cache.delete(id))
            return None
        await self._correct(id, expect, lease, Record(data, version), min(ttl, self.cache_ttl))
        return version

    async def _correct(
        self, id: str, old: Version | Absent, lease: Version | None, new: Record, ttl: timedelta
    ) -> None:
        """After a durable write from ``old`` to ``new``: leave no copy older than ``new`` in the
        cache, or raise ``StoreError`` (the protocol in the module docstring)."""
        try:
            if await self._advanced(id, old, lease, new, ttl):
                return
        except StoreError as exc:
            logger.warning("session cache failed to follow a durable write; dropping: %s", exc)
        await self._drop(id)

    async def _advanced(
        self, id: str, old: Version | Absent, lease: Version | None, new: Record, ttl: timedelta
    ) -> bool:
        """Whether the cache holds a copy of ``new`` or nothing; otherwise the entry must go."""
        packed = _pack(new.version, new.data)
        if packed is None:
            return False
        if lease is not None:  # placed before the durable write: fill from it
            return await self.cache.put(id, packed, ttl, expect=lease) is not None
        if old is ABSENT:
            return False
        entry = await self.cache.get(id)
        if entry is None:
            return True
        cached = _unpack(entry.data)
        if cached is None or cached.version not in (old, new.version):
            return False
        if cached.version == new.version:
            return True
        return await self.cache.put(id, packed, ttl, expect=entry.version) is not None

    async def _drop(self, id: str) -> None:
        """Delete the entry after a durable write; if the cache fails, so does the write."""
        try:
            await self.cache.delete(id)
        except StoreError as exc:
            raise StoreError(
                "the session cache could not be corrected after a durable write (the write"
                " landed; the cache may serve the previous version until its entry expires)"
            ) from exc

    async def touch(self, id: str, ttl: timedelta) -> bool:
        touched = await self.durable.touch(id, ttl)  # same data and version: a copy stays right
        if not touched:
            await self._quietly("drop an entry", self.cache.delete(id))
        return touched

    async def delete(self, id: str) -> None:
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
