"""MigratingStore: move sessions from one record store to another while the app serves them.

Reads try ``new``, then ``old``; writes land in ``new`` only. A record still in ``old`` moves on
its first write (or, with ``copy_on_read``, on its first read). ``old``'s compare-and-set decides
every move, through a *marker* left in place of the record::

    get(id)             new.get; on a miss old.get: a live record comes back with a version
                        tagged as old's (and moves now, with copy_on_read); nothing there, or a
                        marker: new.get again (a move may have landed meanwhile); a move still
                        in flight is waited for up to ``move_timeout``, then aborted
    put(id, expect=v)   v from new: new.put(expect=v), nothing else
    put(id, expect=o)   o from old, the move: 1. claim: old.put(MOVING, expect=o), so no other
                        writer, through old or new, still holds a version of that record;
                        2. land: new.put(data, expect=ABSENT); 3. confirm: old.put(DONE,
                        expect=<MOVING's>).
                        A move whose confirm finds its marker changed was aborted by a reader:
                        it takes its landed record back (a purge tombstone) and reports failure
                        A tombstone (a purge, a renewal) is not moved: it replaces the record
                        in old with the same compare-and-set, and ends there
    put(ABSENT)         taken if old holds anything under id; else new.put(expect=ABSENT)
    touch / delete      the store that holds the record / both

An abort is the same compare-and-set the other way: old.put(ABORTED, expect=<MOVING's>), then a
purge tombstone created in ``new`` (``expect=ABSENT``), so a stalled move can neither land nor
stay landed, however late it goes on. Exactly one of confirm and abort wins. So: a record leaves
``old`` only by one compare-and-set; a write that read ``old`` before it fails its own claim and
is merged again onto what ``new`` holds; a purge of a record still in ``old`` tombstones it
there; nothing in ``old`` comes back once ``new``'s record has ended. A crash or
store failure in the middle of a move ends that one session (its user signs in again); it never
revives or forks it.

Markers are purge tombstones to anything reading ``old`` directly (a process still on the
previous configuration): it sees a moved session as ended and never writes to it.

``hash_keys`` is ``new``'s. Moving from ``hash_keys=False`` to ``True`` works because the
repository already reads a session filed under its key in clear and moves it to its hashed id
(``Repository.load``); ``old`` filing keys in clear is where that read finds it. The user index,
when both stores keep one, adds to ``new``, removes from both and lists both.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sessionware.state import TOMBSTONE_HEAD, encode_tombstone
from sessionware.stores._connections import check_each
from sessionware.stores.base import (
    ABSENT,
    TOMBSTONE_TTL,
    Absent,
    Record,
    RecordStore,
    StoreError,
    UserIndex,
    UserSessionsMixin,
    Version,
)

__all__ = ["MigratingStore"]

_MARKER_HEAD = b'{"v":0,"state":{},"successor":null,"move":'
_MOVING, _DONE, _ABORTED = "moving", "done", "aborted"
_DONE_TTL = timedelta(seconds=1)
_CLOCK_SKEW = 60.0
"""How far apart two machines' clocks may be when one reads the time of another's claim."""
_ROUNDS = 8
"""Bound on races lost to moves of the same id within one call."""


@dataclass(frozen=True)
class _Old:
    """The version of a record read from ``old``: writing it moves the record to ``new``."""

    version: Version
    origin: MigratingStore = field(compare=False, repr=False)


def _marker(state: str) -> bytes:
    return _MARKER_HEAD + json.dumps([state, round(time.time(), 3)]).encode() + b"}"


def _read_marker(data: bytes) -> tuple[str, float] | None:
    """``(state, time)`` of a move marker; ``None`` if ``data`` is not one."""
    if not data.startswith(_MARKER_HEAD):
        return None
    try:
        state, at = json.loads(data[len(_MARKER_HEAD) : -1])
        return str(state), float(at)
    except (ValueError, TypeError):
        return _ABORTED, 0.0  # a marker all the same, of nothing still moving


class MigratingStore:
    """Serves sessions from ``new`` and, until they move, ``old``: reads try ``new`` then
    ``old``, writes go to ``new``, and a session still in ``old`` moves on its next write by a
    compare-and-set in ``old``, so no concurrent write is lost and no ended session comes back
    (the module ``sessionware.stores.migrating`` says how).

    ``copy_on_read``: ``None`` (the default) moves a session on its next write; a TTL moves it
    as soon as it is read, filed in ``new`` for that long (give the sessions' TTL: the expiry
    inside the record still decides when a session ends). ``move_timeout``: how long a reader
    waits for a move in flight (claimed in ``old``, not yet in ``new``) before aborting it.
    """

    def __new__(cls, *, old: RecordStore, new: RecordStore, **_: Any) -> MigratingStore:
        if cls is MigratingStore and isinstance(old, UserIndex) and isinstance(new, UserIndex):
            cls = _IndexedMigratingStore
        return super().__new__(cls)

    def __init__(
        self,
        *,
        old: RecordStore,
        new: RecordStore,
        copy_on_read: timedelta | None = None,
        move_timeout: timedelta = timedelta(seconds=1),
    ) -> None:
        for name, store in (("old", old), ("new", new)):
            if not isinstance(store, RecordStore):
                raise TypeError(f"{name} must be a record store (get, put, touch, delete)")
        if old is new:
            raise ValueError("old and new are the same store: there is nothing to move")
        if getattr(old, "hash_keys", True) and not getattr(new, "hash_keys", True):
            raise ValueError(
                "old files sessions under hashed ids and new (hash_keys=False) under their keys"
                " in clear: no session could be found; keep hash_keys=True on new"
            )
        if copy_on_read is not None and copy_on_read < timedelta(seconds=1):
            raise ValueError("copy_on_read must be None or a TTL of at least one second")
        if move_timeout <= timedelta(0):
            raise ValueError("move_timeout must be positive")
        self.old = old
        self.new = new
        self.copy_on_read = copy_on_read
        self.move_timeout = move_timeout.total_seconds()
        self.hash_keys = bool(getattr(new, "hash_keys", True))

    async def aclose(self) -> None:
        """Close both stores (those that have ``aclose``)."""
        for store in (self.new, self.old):
            aclose = getattr(store, "aclose", None)
            if callable(aclose):
                await aclose()

    # -- reading -----------------------------------------------------------------------------

    async def check(self) -> None:
        """Check ``old``, then ``new`` (each one that has ``check``): the first failure is
        raised, a ``StoreError`` naming which one, its server and the cause."""
        await check_each("the migrating store", ("old store", self.old), ("new store", self.new))

    async def get(self, id: str) -> Record | None:
        record = await self.new.get(id)
        if record is not None:
            return record
        for _ in range(_ROUNDS):
            found = await self.old.get(id)
            marker = None if found is None else _read_marker(found.data)
            if found is not None and marker is None:
                if self.copy_on_read is None or found.data.startswith(TOMBSTONE_HEAD):
                    return Record(found.data, _Old(found.version, self))
                moved = await self._move(id, found.data, self.copy_on_read, found.version)
                if moved is not None:
                    return Record(found.data, moved)
            record = await self.new.get(id)  # a move may have landed since the first read
            if record is not None or found is None:
                return record
            if marker is not None:
                if marker[0] != _MOVING:
                    return None  # moved, then ended in new (or aborted)
                return await self._await_move(id, found.version, marker[1])
        return await self.new.get(id)

    async def _await_move(self, id: str, version: Version, claimed: float) -> Record | None:
        """A move of ``id`` (its marker at ``version``) has not landed: wait for it up to
        ``move_timeout`` (unless it is older than that), then abort it."""
        loop = asyncio.get_running_loop()
        if abs(time.time() - claimed) < self.move_timeout + _CLOCK_SKEW:
            deadline, pause = loop.time() + self.move_timeout, 0.002
            while loop.time() < deadline:
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                pause = min(pause * 2, 0.05)
                record = await self.new.get(id)
                if record is not None:
                    return record
        if await self.old.put(id, _marker(_ABORTED), TOMBSTONE_TTL, expect=version) is None:
            return await self.new.get(id)  # confirmed (or aborted by another) meanwhile
        tombstone = encode_tombstone(None).encode()
        created = await self.new.put(id, tombstone, TOMBSTONE_TTL, expect=ABSENT)
        # Not created: the move landed just now; its confirm fails and it takes it back.
        return None if created is None else Record(tombstone, created)

    # -- writing -----------------------------------------------------------------------------

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        if isinstance(expect, _Old) and expect.origin is self:
            if data.startswith(TOMBSTONE_HEAD):  # ending a session still in old: end it there
                version = await self.old.put(id, data, ttl, expect=expect.version)
                return None if version is None else _Old(version, self)
            return await self._move(id, data, ttl, expect.version)
        if expect is ABSENT and await self.old.get(id) is not None:
            return None  # taken in old (a live record, or one on its way to new)
        return await self.new.put(id, data, ttl, expect=expect)

    async def _move(self, id: str, data: bytes, ttl: timedelta, version: Version) -> Version | None:
        """Claim ``id`` in ``old`` at ``version``, land ``data`` in ``new``, confirm in ``old``;
        ``None`` if any step lost (the caller reads again and finds what ``new`` holds)."""
        claim = await self.old.put(id, _marker(_MOVING), TOMBSTONE_TTL, expect=version)
        if claim is None:
            return None
        landed = await self.new.put(id, data, ttl, expect=ABSENT)
        if landed is None:
            return None  # aborted: new holds its tombstone
        try:
            confirmed = await self.old.put(id, _marker(_DONE), _DONE_TTL, expect=claim)
        except StoreError:
            return landed  # landed; the marker stays MOVING, and readers look in new first
        if confirmed is None:  # aborted after all: take the landed record back
            await self._take_back(id, landed)
            return None
        return landed

    async def _take_back(self, id: str, version: Version) -> None:
        """End the record an aborted move landed in ``new`` (whoever wrote to it since)."""
        tombstone = encode_tombstone(None).encode()
        for _ in range(_ROUNDS):
            if await self.new.put(id, tombstone, TOMBSTONE_TTL, expect=version) is not None:
                return
            record = await self.new.get(id)
            if record is None or record.data.startswith(TOMBSTONE_HEAD):
                return
            version = record.version
        raise StoreError("an aborted move kept changing: gave up ending it")

    async def touch(self, id: str, ttl: timedelta) -> bool:
        if await self.new.touch(id, ttl):
            return True
        record = await self.get(id)  # in old, or moved meanwhile
        if record is None:
            return False
        if isinstance(record.version, _Old) and record.version.origin is self:
            return await self.old.touch(id, ttl)
        return await self.new.touch(id, ttl)

    async def delete(self, id: str) -> None:
        await self.new.delete(id)
        await self.old.delete(id)


class _IndexedMigratingStore(MigratingStore, UserSessionsMixin):
    """A ``MigratingStore`` over two stores with a user index: new members go to ``new``'s,
    both are listed and removed from, so a user's sessions still in ``old`` are found too."""

    old: Any
    new: Any

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self.new.index_add(user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self.new.index_remove(user, id)
        await self.old.index_remove(user, id)

    async def index_members(self, user: str) -> list[str]:
        members = list(await self.new.index_members(user))
        return members + [m for m in await self.old.index_members(user) if m not in members]
