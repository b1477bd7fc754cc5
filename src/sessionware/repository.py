"""The session semantics, written once, over any ``RecordStore``.

Everything that keeps sessions correct under concurrency lives here, so a store is only I/O:

* **Ids at rest.** A session with key ``k`` is filed under ``sha256(k).hexdigest()`` (or ``k``
  itself when the store says ``hash_keys = False``, actix's layout), so a leaked dump holds no
  usable cookie. A first-version record filed under its key in clear is moved on first load.
* **Records** are the v1 envelope (``sessionware.state``) or a *tombstone*
  ``{"v":0,"state":{},"successor":<id or null>}`` left by a purge (no successor) or a renewal.
* **Writes merge.** A write applies the request's ``Changes`` to the record it loaded and puts it
  with ``expect=<loaded version>``; when another request wrote first, it re-reads, applies the
  changes on top of that record and tries again (jittered backoff, bounded).
* **Tombstones are followed by writes, never by loads.** A write that finds a renewal's tombstone
  lands in the successor (at most ``max_hops`` hops), and its response sets no cookie: the
  request that renewed sends the new key, nobody else learns it (fixation protection).
* **Revocation.** A write that finds no record, a purge tombstone, an unreadable record or too
  many hops ends the session: the changes are dropped, never saved under a new key.
* **Renewal** writes the new record (the current record merged with the request's changes), files
  it in the user index, THEN swaps the old record for a tombstone naming it, with compare-and-set:
  a write that reached the old record first is carried over, a fault at any step leaves the old
  session intact, a purge or sign-out-everywhere that got there first ends the new one.
* **Purge** tombstones the record; purging a renewed key purges its successor, so a logout racing
  a login still logs out. ``delete_all_for`` purges each indexed session the same way, so it
  also catches a renewal racing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

from sessionware.events import (
    ConflictEnded,
    EventHook,
    MergeRetry,
    ObservedStore,
    SessionExpired,
    emit,
)
from sessionware.state import (
    TOMBSTONE_HEAD,
    DeserializationError,
    StoredState,
    decode_state,
    encode_state,
    encode_tombstone,
    read_tombstone,
    stored_state,
)
from sessionware.stores.base import (
    ABSENT,
    TOMBSTONE_TTL,
    NotSupportedError,
    Record,
    RecordStore,
    SessionInfo,
    SessionKey,
    StoreError,
    UserIndex,
    Version,
    generate_session_key,
    is_generated_key,
)

__all__ = ["ENDED", "KEEP", "Changes", "Loaded", "Repository", "Saved"]

_ATTEMPTS = 64
"""Bound on lost compare-and-set races (and key collisions) before giving up with a 503."""
_HEX64 = frozenset("0123456789abcdef")


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""``Changes.user`` when the request did not bind or unbind a user."""


class _Ended:
    def __repr__(self) -> str:
        return "ENDED"


ENDED: Any = _Ended()
"""What ``load`` returns for a key whose session was ended (purged, signed out elsewhere, or
renewed away) recently enough that its tombstone is still there."""


class Changes(NamedTuple):
    """What one request did to a session, to apply on top of whatever is stored now.

    ``cleared``: the state was emptied first; ``set``: keys written (new values); ``removed``:
    keys deleted; ``user``: the user it was bound to (``KEEP`` if untouched).
    """

    cleared: bool = False
    set: Mapping[str, Any] = MappingProxyType({})
    removed: frozenset[str] = frozenset()
    user: str | None = KEEP

    @classmethod
    def replace(cls, state: Mapping[str, Any], user: str | None = KEEP) -> Changes:
        """Changes that make the state exactly ``state``."""
        return cls(True, dict(state), frozenset(), user)

    def apply(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """The state after these changes, on top of ``current``."""
        merged: dict[str, Any] = {} if self.cleared else dict(current)
        for key in self.removed:
            merged.pop(key, None)
        merged.update(self.set)
        return merged


@dataclass
class Loaded:
    """A session as loaded: its state and metadata, the record's id and version."""

    state: StoredState
    id: str
    version: Version
    text: str = ""
    """The stored envelope the state was decoded from (to tell whether it changed)."""


@dataclass
class Saved:
    """Where a write landed. ``moved``: in a renewal's successor, whose key this request must not
    learn (its response sends no cookie); ``loaded``: the record as now stored, for a later write."""

    moved: bool
    loaded: Loaded


class Repository:
    """Loads, creates, writes, renews and ends sessions in ``store`` (see the module docstring).

    ``clock`` gives the metadata times (created, last write, expiry); ``tombstone_ttl`` is how
    long a renewed or purged record is remembered; ``on_event`` receives ``sessionware.events``
    (lost races, contention, store failures, idle expiry).
    """

    def __init__(
        self,
        store: RecordStore,
        *,
        clock: Callable[[], float] = time.time,
        tombstone_ttl: timedelta = TOMBSTONE_TTL,
        max_hops: int = 16,
        on_event: EventHook | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tombstone_ttl = tombstone_ttl
        self.max_hops = max_hops
        self.hash_keys = bool(getattr(store, "hash_keys", True))
        self.index: UserIndex | None = store if isinstance(store, UserIndex) else None
        self.store_name = store.name if isinstance(store, ObservedStore) else type(store).__name__
        self.on_event: EventHook | None = None
        if on_event is not None:
            self.observe(on_event)

    def observe(self, on_event: EventHook) -> None:
        """Send events to ``on_event``, and the store's failures too (its calls get wrapped)."""
        self.on_event = on_event
        self.store = ObservedStore(self.store, on_event=on_event)
        self.index = self.store if isinstance(self.store, UserIndex) else None

    def _emit(self, event: Any) -> None:
        if self.on_event is not None:
            emit(self.on_event, event)

    def _retried(self, operation: str) -> None:
        if self.on_event is not None:
            self._emit(MergeRetry(operation))

    def _gave_up(self, operation: str, reason: str = "attempts") -> None:
        if self.on_event is not None:
            self._emit(ConflictEnded(operation, reason))  # type: ignore[arg-type]

    def id_of(self, key: str) -> str:
        """The id a session with ``key`` is filed under."""
        if not self.hash_keys:
            return key
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    # -- reading -----------------------------------------------------------------------------

    async def load(self, key: SessionKey, ttl: timedelta) -> Loaded | None:
        """The live session under ``key``; ``None`` (absent, expired) or ``ENDED`` (a tombstone).

        Raises ``DeserializationError`` for an unreadable record, ``StoreError`` on failure.
        ``ttl`` is used only to move a first-version record to its hashed id.
        """
        id = self.id_of(key)
        record = await self.store.get(id)
        if record is None and self.hash_keys and is_generated_key(key):
            legacy = await self.store.get(key)  # filed in clear by the first version
            if legacy is not None and not legacy.data.startswith(TOMBSTONE_HEAD):
                return await self._adopt(key, id, legacy, ttl)
        if record is None and self.on_event is not None:
            self._emit(SessionExpired("idle"))  # the store dropped it at its TTL
        if record is None:
            return None
        if record.data.startswith(TOMBSTONE_HEAD):
            return ENDED  # type: ignore[no-any-return]
        return _loaded(id, record)

    async def _adopt(self, key: str, id: str, legacy: Record, ttl: timedelta) -> Loaded | None:
        """Move a record filed under its key in clear to its hashed id; a tombstone stays."""
        loaded = _loaded(id, legacy)  # unreadable: raises before anything moves
        version = await self.store.put(id, legacy.data, ttl, expect=ABSENT)
        if version is None:
            return None
        if await self._bury(key, legacy.version, id) is None:  # changed meanwhile: start over
            await self.store.delete(id)
            return None
        loaded.version = version
        if loaded.state.user is not None and self.index is not None:
            await self.index.index_add(loaded.state.user, id, ttl)
        return loaded

    async def _read(self, id: str) -> tuple[Record | None, StoredState | None, str | None]:
        """``(record, state, successor)``: a live state, or a tombstone's successor, or nothing
        (unreadable records count as ended)."""
        record = await self.store.get(id)
        if record is None:
            return None, None, None
        if record.data.startswith(TOMBSTONE_HEAD):
            return record, None, read_tombstone(record.data)[1]
        try:
            return record, _loaded(id, record).state, None
        except DeserializationError:
            return record, None, None

    # -- writing -----------------------------------------------------------------------------

    def _encode(
        self,
        state: Mapping[str, Any],
        meta: StoredState,
        ttl: timedelta,
        seen: float | None = None,
        state_json: str | None = None,
    ) -> bytes:
        """The record for ``state`` (``state_json``: it already encoded) with ``meta``."""
        now = self.clock()
        text = encode_state(
            state if type(state) is dict else dict(state),  # a StoredState's fields aren't meta's
            created=meta.created or now,
            seen=now if seen is None else seen,
            expires=now + ttl.total_seconds(),
            user=meta.user,
            agent=meta.agent if meta.user is not None else None,
            device=meta.device,
            state_json=state_json,
        )
        return text.encode("utf-8")

    async def create(
        self, state: Mapping[str, Any], meta: StoredState, ttl: timedelta
    ) -> tuple[SessionKey, Loaded]:
        """Store a new session under a fresh key; return the key and the stored record."""
        data = self._encode(state, meta, ttl)
        for _ in range(_ATTEMPTS):
            key = generate_session_key()
            id = self.id_of(key)
            version = await self.store.put(id, data, ttl, expect=ABSENT)
            if version is not None:
                await self._file(meta.user, None, id, ttl)
                return key, Loaded(_state(state, meta), id, version, data.decode())
        raise StoreError(f"no free session id after {_ATTEMPTS} attempts")

    async def save(
        self,
        loaded: Loaded,
        changes: Changes,
        meta: StoredState,
        ttl: timedelta,
        state_json: str | None = None,
    ) -> Saved | None:
        """Write ``changes`` into the session ``loaded`` came from; ``None``: it has ended.

        The merge loop: put the changes on top of ``loaded``'s state at its version; on a lost
        race read again (following renewals) and retry. A ``loaded`` with no version is read
        first, and the write counts as moved (it lands in a renewal's successor).
        ``state_json``: the request's whole state as JSON (``loaded.state`` with ``changes``
        applied), written as it is while the record is still the one loaded."""
        id, version, current = loaded.id, loaded.version, loaded.state
        first_id, hops = id if version is not None else "", 0
        for attempt in range(_ATTEMPTS):
            if version is not None:
                merged = changes.apply(current)
                user = current.user if changes.user is KEEP else changes.user
                stored = _record(merged, current, meta, user)
                data = self._encode(merged, stored, ttl, state_json=state_json)
                new = await self.store.put(id, data, ttl, expect=version)
                if new is not None:
                    await self._file(user, current.user, id, ttl)
                    return Saved(id != first_id, Loaded(stored, id, new, data.decode()))
                state_json = None  # another write landed first: merged onto it from now on
                self._retried("save")
                await _backoff(attempt)
            record, fresh, successor = await self._read(id)
            while fresh is None:  # ended, or renewed: follow it to its successor
                if successor is None or hops >= self.max_hops:
                    if successor is not None:
                        self._gave_up("save", "hops")
                    return None
                hops += 1
                id = successor
                record, fresh, successor = await self._read(id)
            assert record is not None
            current, version = fresh, record.version
        self._gave_up("save")
        raise StoreError(f"the session kept changing: gave up after {_ATTEMPTS} attempts")

    async def touch(self, loaded: Loaded, ttl: timedelta) -> bool:
        """Extend a session's life without rewriting it; ``False`` if it has ended."""
        if not await self.store.touch(loaded.id, ttl):
            return False
        await self._file(loaded.state.user, loaded.state.user, loaded.id, ttl)
        return True

    async def refresh(self, loaded: Loaded, ttl: timedelta) -> Loaded | None:
        """Extend a session's life by rewriting its record with a new ``expires``, so the record
        itself says when it was last extended (``touch_after``); ``None`` if it has ended.

        A lost race needs no retry: the write that won extended the session too.
        """
        state = loaded.state
        data = self._encode(state, state, ttl, seen=state.seen)
        version = await self.store.put(loaded.id, data, ttl, expect=loaded.version)
        if version is None:
            record, fresh, successor = await self._read(loaded.id)
            if fresh is not None and record is not None:
                return Loaded(fresh, loaded.id, record.version, record.data.decode())
            # Renewed by another request: that one sends the new key; this one leaves it be.
            return loaded if successor is not None else None
        await self._file(state.user, state.user, loaded.id, ttl)
        now = self.clock()
        stored = StoredState(
            state,
            created=state.created or now,
            expires=now + ttl.total_seconds(),
            seen=state.seen,
            user=state.user,
            agent=state.agent,
            device=state.device,
        )
        return Loaded(stored, loaded.id, version, data.decode())

    async def renew(
        self, loaded: Loaded, changes: Changes, meta: StoredState, ttl: timedelta
    ) -> tuple[SessionKey, Loaded] | Saved | None:
        """Move the session to a fresh key, carrying concurrent writes (module docstring).

        Returns the new key and record; a ``Saved`` when another renewal won (the changes went
        to its session); ``None`` when the session ended meanwhile.
        """
        user = loaded.state.user if changes.user is KEEP else changes.user
        record_meta = _record({}, loaded.state, meta, user)
        key, new = await self.create(changes.apply(loaded.state), record_meta, ttl)
        try:  # until the old record is buried, a failure leaves it intact: drop the new one
            old_id, old_version, current = loaded.id, loaded.version, loaded.state
            for attempt in range(_ATTEMPTS):
                if await self._bury(old_id, old_version, new.id) is not None:
                    await self._unfile(current.user, old_id)
                    return key, new
                record, fresh, successor = await self._read(old_id)
                if fresh is None:  # ended, or renewed by another request first
                    await self._end(new)
                    if successor is None:
                        return None
                    return await self.save(
                        Loaded(StoredState(), successor, None), changes, meta, ttl
                    )
                assert record is not None
                # A write reached the old record first: carry it over into the new one.
                current, old_version = fresh, record.version
                user = current.user if changes.user is KEEP else changes.user
                merged = changes.apply(current)
                carried = _record(merged, current, meta, user)
                data = self._encode(merged, carried, ttl)
                version = await self.store.put(new.id, data, ttl, expect=new.version)
                if version is None:  # the new session was ended (sign-out-everywhere)
                    await self._purge(old_id)
                    return None
                new = Loaded(carried, new.id, version, data.decode())
                self._retried("renew")
                await _backoff(attempt)
        except BaseException:
            await _quietly(self.store.delete(new.id))
            raise
        self._gave_up("renew")
        raise StoreError(f"the session kept changing: gave up after {_ATTEMPTS} attempts")

    async def replace(
        self, loaded: Loaded, state: Mapping[str, Any], meta: StoredState, ttl: timedelta
    ) -> Loaded | None:
        """Write ``state`` with ``meta`` over the record ``loaded`` came from, only if nothing
        wrote it since: one compare-and-set, no merge, no retry. ``None``: it changed or ended.

        For a write whose decision rests on the record as read (a DBSC proof checked against
        the binding it holds), which must not land on a record that moved on meanwhile.
        """
        data = self._encode(state, meta, ttl)
        version = await self.store.put(loaded.id, data, ttl, expect=loaded.version)
        if version is None:
            return None
        await self._file(meta.user, loaded.state.user, loaded.id, ttl)
        return Loaded(_state(state, meta), loaded.id, version, data.decode())

    async def purge(self, loaded: Loaded) -> None:
        """End the session (and, if it was renewed meanwhile, the session it was renewed to)."""
        await self._purge(loaded.id, loaded.version, loaded.state.user)

    async def _purge(
        self,
        id: str,
        version: Version | None = None,
        user: str | None = None,
        *,
        owner: str | None = None,
    ) -> bool:
        """Tombstone ``id``, following renewals; whether a live session ended. With ``owner``,
        only a session bound to that user is ended."""
        hops = 0
        for _ in range(_ATTEMPTS):
            if version is not None and await self._bury(id, version, None) is not None:
                await self._unfile(user, id)
                return True
            record, fresh, successor = await self._read(id)
            if record is None:
                return False
            if fresh is None and record.data.startswith(TOMBSTONE_HEAD):
                if successor is None or hops >= self.max_hops:
                    return False
                id, version, hops = successor, None, hops + 1
                continue
            if owner is not None and (fresh is None or fresh.user != owner):
                return False
            if version is not None:
                self._retried("purge")
            version, user = record.version, fresh.user if fresh is not None else None
        self._gave_up("purge")
        raise StoreError(f"the session kept changing: gave up after {_ATTEMPTS} attempts")

    async def _end(self, loaded: Loaded) -> None:
        """Tombstone a record this request created and nobody else knows yet."""
        await self._purge(loaded.id, loaded.version, loaded.state.user)

    async def _bury(self, id: str, version: Version, successor: str | None) -> Version | None:
        data = encode_tombstone(successor).encode()
        return await self.store.put(id, data, self.tombstone_ttl, expect=version)

    async def _file(self, user: str | None, old: str | None, id: str, ttl: timedelta) -> None:
        """Keep the user index in step with a record: filed under ``user``, not under ``old``."""
        if self.index is None:
            return
        if user is not None:
            await self.index.index_add(user, id, ttl)
        if old != user:
            await self._unfile(old, id)

    async def _unfile(self, user: str | None, id: str) -> None:
        """Take ``id`` out of ``user``'s index; failing leaves a stale member, which listings drop."""
        if self.index is not None and user is not None:
            await _quietly(self.index.index_remove(user, id))

    # -- the user index ----------------------------------------------------------------------

    def _require_index(self) -> UserIndex:
        if self.index is None:
            raise NotSupportedError(
                f"{self.store_name} keeps no per-user index: listing or ending a"
                " user's sessions needs a store that has one (Redis, SQL, memory)"
            )
        return self.index

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first (stale index members are dropped)."""
        index = self._require_index()
        infos = []
        for id in await index.index_members(user_id):
            _, state, _ = await self._read(id)
            if state is None or state.user != user_id:
                await index.index_remove(user_id, id)
                continue
            infos.append(SessionInfo(id, state.created, state.seen, state.expires, state.agent))
        return sorted(infos, key=lambda i: (i.created or 0.0, i.last_seen or 0.0, i.id))

    async def delete_all_for(self, user_id: str, except_key: str | None = None) -> int:
        """End every session of the user but ``except_key``'s; how many were live."""
        index = self._require_index()
        spared = None if except_key is None else self.id_of(except_key)
        ended = 0
        for id in await index.index_members(user_id):
            if id != spared:
                ended += await self._purge(id, owner=user_id)
                await self._unfile(user_id, id)
        return ended

    async def end_session(self, session_id: str) -> bool:
        """End the session filed under ``session_id`` (``SessionInfo.id``); whether it lived."""
        shape_ok = (
            len(session_id) == 64 and set(session_id) <= _HEX64
            if self.hash_keys
            else is_generated_key(session_id)
        )
        return shape_ok and await self._purge(session_id)


def _loaded(id: str, record: Record) -> Loaded:
    try:
        text = record.data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeserializationError("stored session is not UTF-8") from None
    return Loaded(decode_state(text), id, record.version, text)


def _record(
    state: Mapping[str, Any], current: StoredState, meta: StoredState, user: str | None
) -> StoredState:
    """``state`` with the metadata a write stores: created from the record, the rest from this
    request; the device binding from the record too, unless this request started a new one."""
    device = current.device if meta.device is None else meta.device
    return stored_state(state, current.created or meta.created, user, meta.agent, device)


def _state(state: Mapping[str, Any], meta: StoredState) -> StoredState:
    return stored_state(state, meta.created, meta.user, meta.agent, meta.device)


async def _backoff(attempt: int) -> None:
    """A random pause that grows with contention, so competing writers spread out."""
    import asyncio  # here, so importing the engine pulls in no event loop machinery

    await asyncio.sleep(random.random() * min(0.05, 0.0005 * 2**attempt))


async def _quietly(call: Any) -> None:
    """Await a best-effort call (cleanup, index removal); its failure changes nothing."""
    with contextlib.suppress(Exception):
        await call
