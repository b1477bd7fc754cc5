"""The session semantics, written once, over any ``RecordStore``.

Everything that keeps sessions correct under concurrency lives here, so a store is only I/O:

* **Ids at rest.** A session with key ``k`` is filed under ``sha256(k).hexdigest()`` (or ``k``
  itself when the store says ``hash_keys = False``, actix's layout), so a leaked dump holds no
  usable cookie. A first-version record filed under its key in clear is moved on first load.
* **Records** are the v1 envelope (``sessionware.state``) or a *tombstone*
  ``{"v":0,"state":{},"successor":<id or null>}`` left by a purge (no successor) or a renewal;
  a rotation's tombstone also says when it rotated and holds the successor's key sealed for
  holders of the old key (``"rotated"``, ``"key"``).
* **Writes merge.** A write applies the request's ``Changes`` to the record it loaded and puts it
  with ``expect=<loaded version>``; when another request wrote first, it re-reads, applies the
  changes on top of that record and tries again (jittered backoff, bounded).
* **A renewal's tombstone is followed by nothing but a purge.** A load that finds it opens an
  empty session (``RENEWED``); a write that finds it is not carried into the successor: it stores
  nothing and reports ``RENEWED`` (the engine answers 409). A login must not take in what a
  request holding the pre-login key writes after it.
* **A rotation's tombstone is followed within its grace.** Automatic rotation
  (``renew(rotating=key)``) changes no privilege, so for ``rotation_grace`` after it a load with
  the old key opens the successor (and learns its key, to send it on) and a write that finds it
  merges into the successor; after the grace it is a renewal's tombstone like any other.
* **Revocation.** A write that finds no record, a purge tombstone or an unreadable record ends
  the session: the changes are dropped, never saved under a new key.
* **Renewal** writes the new record (the current record merged with the request's changes), files
  it in the user index, THEN swaps the old record for a tombstone naming it, with compare-and-set:
  a write that reached the old record first is carried over, a fault at any step before the swap
  leaves the old session intact, a purge or sign-out-everywhere that got there first ends the new
  one. When the swap's answer is lost (a fault, or a client's retry finding its own earlier
  attempt landed), the old record is read again: a tombstone naming the new record means done.
* **Purge** tombstones the record; purging a renewed key purges its successor, so a logout racing
  a login still logs out. Ending a user's sessions purges each indexed session the same way, so
  it also catches a renewal racing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

from sessionware.errors import SessionUpdateError
from sessionware.events import (
    ConflictEnded,
    EventHook,
    MergeRetry,
    ObservedStore,
    emit,
)
from sessionware.state import (
    MAX_APPLIED,
    TOMBSTONE_HEAD,
    DeserializationError,
    StoredState,
    check_value,
    decode_state,
    encode_state,
    encode_tombstone,
    read_rotation,
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

__all__ = [
    "ENDED",
    "KEEP",
    "MISSING",
    "RENEWED",
    "Changes",
    "Followed",
    "Loaded",
    "Repository",
    "Update",
]

_SURE_READS = 3
"""How often a renewal reads the old record to tell whether its swap landed."""
_ATTEMPTS = 64
"""Bound on lost compare-and-set races (and key collisions) before giving up with a 503."""
_HEX64 = frozenset("0123456789abcdef")


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""``Changes.user`` when the request did not bind or unbind a user."""


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ENDED: Any = _Marker("ENDED")
"""What ``load`` and the writes return for a session that was purged or signed out (its
tombstone is still there)."""
RENEWED: Any = _Marker("RENEWED")
"""What ``load`` and the writes return for a key a login renewed to another: nothing follows it."""
MISSING: Any = _Marker("MISSING")
"""An absent value (``Update``): no value, or no default."""


class Update(NamedTuple):
    """A read-modify-write of one key, which a merge applies to the value stored now:
    ``fn(value)`` when the key is there, else ``default`` (``MISSING``: it stays absent)."""

    fn: Callable[[Any], Any]
    default: Any = MISSING

    def apply(self, value: Any) -> Any:
        return self.default if value is MISSING else self.fn(value)


class Changes(NamedTuple):
    """What one request did to a session, to apply on top of whatever is stored now.

    ``cleared``: the state was emptied first; ``set``: keys written (new values); ``removed``:
    keys deleted; ``user``: the user it was bound to (``KEEP`` if untouched); ``updates``: the
    ``Update``s of keys the request did not set, applied last, in order.
    """

    cleared: bool = False
    set: Mapping[str, Any] = MappingProxyType({})
    removed: frozenset[str] = frozenset()
    user: str | None = KEEP
    updates: Mapping[str, tuple[Update, ...]] = MappingProxyType({})

    @classmethod
    def replace(cls, state: Mapping[str, Any], user: str | None = KEEP) -> Changes:
        """Changes that make the state exactly ``state``."""
        return cls(True, dict(state), frozenset(), user)

    def apply(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """The state after these changes, on top of ``current``. Raises
        ``SessionUpdateError`` when an update cannot apply to the value stored now."""
        merged: dict[str, Any] = {} if self.cleared else dict(current)
        for key in self.removed:
            merged.pop(key, None)
        merged.update(self.set)
        for key, updates in self.updates.items():
            value = merged.get(key, MISSING)
            try:
                for update in updates:
                    value = update.apply(value)
                if value is not MISSING:
                    check_value(value)
            except Exception as exc:
                raise SessionUpdateError(
                    f"update of session key {key!r} failed on the stored value:"
                    f" {type(exc).__name__}"
                ) from exc
            if value is not MISSING:
                merged[key] = value
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
class Followed(Loaded):
    """A session loaded with a key that a rotation replaced within its grace: the successor's
    record, and its ``key`` (for the response to send on)."""

    key: str = ""


class Repository:
    """Loads, creates, writes, renews and ends sessions in ``store`` (see the module docstring).

    ``clock`` gives the metadata times (created, last write, expiry); ``tombstone_ttl`` is how
    long a renewed or purged record is remembered; ``on_event`` receives ``sessionware.events``
    (lost races, contention, store failures, idle expiry); ``rotation_grace`` is how long a
    rotated key still leads to its successor (``SessionMiddleware(rotate_every=...)`` sets it).
    """

    def __init__(
        self,
        store: RecordStore,
        *,
        clock: Callable[[], float] = time.time,
        tombstone_ttl: timedelta = TOMBSTONE_TTL,
        max_hops: int = 16,
        on_event: EventHook | None = None,
        rotation_grace: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.clock = clock
        self.rotation_grace = rotation_grace.total_seconds()
        """How long after a rotation its old key still leads to the successor (0: never)."""
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
        """The live session under ``key``; ``None`` (absent, expired), ``ENDED`` (purged or
        signed out) or ``RENEWED`` (a login moved it to another key).

        Raises ``DeserializationError`` for an unreadable record, ``StoreError`` on failure.
        ``ttl`` is used only to move a first-version record to its hashed id.
        """
        id = self.id_of(key)
        record = await self.store.get(id)
        if record is None and self.hash_keys and is_generated_key(key):
            legacy = await self.store.get(key)  # filed in clear by the first version
            if legacy is not None and not legacy.data.startswith(TOMBSTONE_HEAD):
                return await self._adopt(key, id, legacy, ttl)
        if record is None:
            return None
        if record.data.startswith(TOMBSTONE_HEAD):
            return await self._follow(key, record.data)
        return _loaded(id, record)

    async def _follow(self, key: str, data: bytes) -> Loaded | None:
        """What a key whose record is the tombstone ``data`` opens: ``ENDED``, ``RENEWED``, or
        within a rotation's grace the successor (``Followed``, rotations followed in turn)."""
        for _ in range(self.max_hops):
            successor = read_tombstone(data)[1]
            if successor is None:
                return ENDED  # type: ignore[no-any-return]
            rotation = self._in_grace(data)
            if rotation is None:
                return RENEWED  # type: ignore[no-any-return]
            found = self._successor_key(key, successor, rotation[1])
            if found is None:
                return RENEWED  # type: ignore[no-any-return]
            record = await self.store.get(successor)
            if record is None:
                return None
            if not record.data.startswith(TOMBSTONE_HEAD):
                loaded = _loaded(successor, record)
                return Followed(loaded.state, successor, loaded.version, loaded.text, found)
            key, data = found, record.data
        return RENEWED  # type: ignore[no-any-return]

    def _in_grace(self, tombstone: bytes) -> tuple[float, str | None] | None:
        """``read_rotation(tombstone)`` while its grace window lasts, else ``None``."""
        if not self.rotation_grace:
            return None
        rotation = read_rotation(tombstone)
        if rotation is None or self.clock() >= rotation[0] + self.rotation_grace:
            return None
        return rotation

    def _seal_successor(self, old: str, new: str) -> str | None:
        """The successor's key for the old key's tombstone, readable only with the old key (a
        one-time pad from it: a leaked dump, which holds ids, opens nothing). With keys in
        clear the successor's id is its key: nothing to seal."""
        if not self.hash_keys:
            return None
        pad = hmac.digest(old.encode(), b"sessionware rotation", "sha512")
        return bytes(a ^ b for a, b in zip(new.encode(), pad, strict=True)).hex()

    def _successor_key(self, old: str, successor: str, sealed: str | None) -> str | None:
        """The key of ``successor`` from the old key's tombstone (``_seal_successor``);
        ``None`` unless it is a generated key filed under exactly that id."""
        if not self.hash_keys:
            return successor if is_generated_key(successor) else None
        try:
            raw = bytes.fromhex(sealed or "")
        except ValueError:
            return None
        if len(raw) != 64:
            return None
        pad = hmac.digest(old.encode(), b"sessionware rotation", "sha512")
        key = bytes(a ^ b for a, b in zip(raw, pad, strict=True)).decode("latin-1")
        return key if is_generated_key(key) and self.id_of(key) == successor else None

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
            applied=meta.applied,
            issued=meta.issued,
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
    ) -> Loaded | None:
        """Write ``changes`` into the session ``loaded`` came from: the record as now stored,
        or ``None`` (it was purged, signed out, or expired) or ``RENEWED`` (a login moved it
        to another key: nothing is stored).

        The merge loop: put the changes on top of ``loaded``'s state at its version; on a lost
        race read again and retry. ``state_json``: the request's whole state as JSON
        (``loaded.state`` with ``changes`` applied), written as it is while the record is still
        the one loaded."""
        id, version, current = loaded.id, loaded.version, loaded.state
        update = _update_id() if changes.updates else None
        for attempt in range(_ATTEMPTS):
            merged = changes.apply(current)
            user = current.user if changes.user is KEEP else changes.user
            stored = _record(merged, current, meta, user, update)
            data = self._encode(merged, stored, ttl, state_json=state_json)
            new = await self.store.put(id, data, ttl, expect=version)
            record = None
            if new is None:  # a lost race, or a client's retry of this very put, which landed
                record, fresh, successor = await self._read(id)
                if record is not None and (
                    record.data == data
                    if update is None
                    else fresh is not None and update in (fresh.applied or ())
                ):
                    await self._file(user, current.user, id, ttl)
                    return _loaded(id, record)
            if new is not None:
                await self._file(user, current.user, id, ttl)
                return Loaded(stored, id, new, data.decode())
            hops = 0
            while fresh is None and successor is not None and hops < self.max_hops:
                if record is None or self._in_grace(record.data) is None:
                    break
                # A rotation moved the session within its grace: the changes go there.
                id, hops = successor, hops + 1
                record, fresh, successor = await self._read(id)
            if fresh is None:
                return RENEWED if successor is not None else None
            assert record is not None
            current, version, state_json = fresh, record.version, None
            self._retried("save")
            await _backoff(attempt)
        self._gave_up("save")
        raise StoreError(f"the session kept changing: gave up after {_ATTEMPTS} attempts")

    async def refresh(self, loaded: Loaded, ttl: timedelta) -> Loaded | None:
        """Extend a session's life by rewriting its record with a new ``expires`` (the envelope
        says when the session expires; the store's TTL only collects garbage): the record as
        now stored, ``None`` if it has ended, ``RENEWED`` if a login moved it.

        A lost race needs no retry: the write that won extended the session too.
        """
        state = loaded.state
        data = self._encode(state, state, ttl, seen=state.seen)
        version = await self.store.put(loaded.id, data, ttl, expect=loaded.version)
        if version is None:
            record, fresh, successor = await self._read(loaded.id)
            if fresh is not None and record is not None:
                return Loaded(fresh, loaded.id, record.version, record.data.decode())
            return RENEWED if successor is not None else None
        await self._file(state.user, state.user, loaded.id, ttl)
        now = self.clock()
        stored = stored_state(
            state,
            state.created or now,
            state.user,
            state.agent,
            state.device,
            now + ttl.total_seconds(),
            state.seen,
            state.applied,
            state.issued,
        )
        return Loaded(stored, loaded.id, version, data.decode())

    async def renew(
        self,
        loaded: Loaded,
        changes: Changes,
        meta: StoredState,
        ttl: timedelta,
        *,
        rotating: str | None = None,
    ) -> tuple[SessionKey, Loaded] | None:
        """Move the session to a fresh key, carrying concurrent writes (module docstring).
        ``rotating``: the session's key, for an automatic rotation (its tombstone says so,
        and seals the new key for holders of this one).

        Returns the new key and record; ``RENEWED`` when another renewal or rotation won
        (nothing of this one is stored); ``None`` when the session ended meanwhile.
        """
        user = loaded.state.user if changes.user is KEEP else changes.user
        issued = self.clock()
        record_meta = _record({}, loaded.state, meta, user, issued=issued)
        key, new = await self.create(changes.apply(loaded.state), record_meta, ttl)
        tombstone = encode_tombstone(
            new.id,
            *(() if rotating is None else (issued, self._seal_successor(rotating, key))),
        ).encode()
        try:  # until the old record may name the new one, a failure leaves it intact
            old_id, old_version, current = loaded.id, loaded.version, loaded.state
            for attempt in range(_ATTEMPTS):
                if await self._swap(old_id, old_version, new.id, tombstone):
                    await self._unfile(current.user, old_id)
                    return key, new
                # The swap may have landed all the same (a client's retry of it reads as a
                # refusal): what the old record says now decides, and a read that fails
                # leaves that unknown.
                record, fresh, successor = await self._read_surely(old_id)
                if fresh is None and successor == new.id:  # a retry of a swap that landed
                    await self._unfile(current.user, old_id)
                    return key, new
                if fresh is None:  # ended, or renewed by another request first
                    await self._end(new)
                    return RENEWED if successor is not None else None
                assert record is not None
                # A write reached the old record first: carry it over into the new one.
                current, old_version = fresh, record.version
                user = current.user if changes.user is KEEP else changes.user
                merged = changes.apply(current)
                carried = _record(merged, current, meta, user, issued=issued)
                data = self._encode(merged, carried, ttl)
                version = await self.store.put(new.id, data, ttl, expect=new.version)
                if version is None:  # ended (sign-out-everywhere), or a retry of a put that landed
                    landed = await self.store.get(new.id)
                    version = None if landed is None or landed.data != data else landed.version
                if version is None:
                    await self._purge(old_id)
                    return None
                new = Loaded(carried, new.id, version, data.decode())
                self._retried("renew")
                await _backoff(attempt)
        except _Unsure:
            raise  # the old record may name the new one already: the new one must stay
        except BaseException:
            await _quietly(self.store.delete(new.id))
            raise
        self._gave_up("renew")
        raise StoreError(f"the session kept changing: gave up after {_ATTEMPTS} attempts")

    async def _swap(self, old_id: str, old_version: Version, new_id: str, tombstone: bytes) -> bool:
        """Turn the old record into ``tombstone``, which names ``new_id``; whether it did. When
        the store's answer is lost, the old record is read again to tell (the renewal's loop
        then sees why it did not); ``_Unsure`` when even that fails: it may have."""
        try:
            put = self.store.put(old_id, tombstone, self.tombstone_ttl, expect=old_version)
            return await put is not None
        except Exception:
            record, _, successor = await self._read_surely(old_id)
            return record is not None and successor == new_id

    async def _read_surely(self, id: str) -> tuple[Record | None, StoredState | None, str | None]:
        """``_read``, tried again after a failure (a renewal must tell whether its swap
        landed); ``_Unsure`` when it cannot."""
        for attempt in range(_SURE_READS):
            try:
                return await self._read(id)
            except Exception as exc:
                if attempt == _SURE_READS - 1:
                    raise _Unsure(
                        "the session store failed while renewing the session, and could not"
                        " tell whether the renewal happened"
                    ) from exc
                await _backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

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
                if successor is None:
                    return False
                if hops >= self.max_hops:  # never acknowledged while a successor may live
                    self._gave_up("purge", "hops")
                    raise StoreError(f"more than {self.max_hops} renewals to follow")
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

    async def end(self, id: str) -> bool:
        """End the session filed under ``id`` (and any session a login renewed it to);
        whether a live one ended."""
        return await self._purge(id)

    # -- the user index ----------------------------------------------------------------------

    def require_index(self) -> UserIndex:
        """The store's user index; ``NotSupportedError`` when it keeps none."""
        if self.index is None:
            raise NotSupportedError(
                f"{self.store_name} keeps no per-user index: listing or ending a"
                " user's sessions needs a store that has one (Redis, SQL, memory)"
            )
        return self.index

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first (stale index members are dropped)."""
        index = self.require_index()
        infos = []
        for id in await index.index_members(user_id):
            _, state, _ = await self._read(id)
            if state is None or state.user != user_id:
                await index.index_remove(user_id, id)
                continue
            infos.append(SessionInfo(id, state.created, state.seen, state.expires, state.agent))
        return sorted(infos, key=lambda i: (i.created or 0.0, i.last_seen or 0.0, i.id))

    async def end_all_for(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user but the one filed under ``keep``; how many were
        live."""
        index = self.require_index()
        ended = 0
        for id in await index.index_members(user_id):
            if id != keep:
                ended += await self._purge(id, owner=user_id)
                await self._unfile(user_id, id)
        return ended

    def is_id(self, text: str) -> bool:
        """Whether ``text`` has the shape of an id this repository files sessions under."""
        if self.hash_keys:
            return len(text) == 64 and set(text) <= _HEX64
        return is_generated_key(text)


def _loaded(id: str, record: Record) -> Loaded:
    try:
        text = record.data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeserializationError("stored session is not UTF-8") from None
    return Loaded(decode_state(text), id, record.version, text)


def _record(
    state: Mapping[str, Any],
    current: StoredState,
    meta: StoredState,
    user: str | None,
    update: str | None = None,
    issued: float | None = None,
) -> StoredState:
    """``state`` with the metadata a write stores: created from the record, the rest from this
    request; the device binding from the record too, unless this request started a new one;
    the record's update ids, with ``update``'s first when this write applies updates; when
    its key was issued from the record, unless a new key is (``issued``)."""
    device = current.device if meta.device is None else meta.device
    applied = current.applied
    if update is not None:
        applied = (update, *(applied or ()))[:MAX_APPLIED]
    return stored_state(
        state,
        current.created or meta.created,
        user,
        meta.agent,
        device,
        None,
        None,
        applied,
        current.issued if issued is None else issued,
    )


def _update_id() -> str:
    """An id for one write's updates (``StoredState.applied``)."""
    return secrets.token_hex(6)


def _state(state: Mapping[str, Any], meta: StoredState) -> StoredState:
    return stored_state(
        state,
        meta.created,
        meta.user,
        meta.agent,
        meta.device,
        None,
        None,
        meta.applied,
        meta.issued,
    )


async def _backoff(attempt: int) -> None:
    """A random pause that grows with contention, so competing writers spread out."""
    import asyncio  # here, so importing the engine pulls in no event loop machinery

    await asyncio.sleep(random.random() * min(0.05, 0.0005 * 2**attempt))


class _Unsure(StoreError):
    """A renewal could not tell whether its swap landed: its new record must be kept."""


async def _quietly(call: Any) -> None:
    """Await a best-effort call (cleanup, index removal); its failure changes nothing."""
    with contextlib.suppress(Exception):
        await call
