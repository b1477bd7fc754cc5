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
* **One process, one commit at a time.** A process's writes of one session (``save``, and a
  renewal's swap of the old record) take turns around their merge loop, never around a handler:
  each starts from the record the previous one stored, so compare-and-set races are lost only to
  other processes. The turns are per event loop and the table keeps only ids being written.
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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
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
    SessionEvicted,
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
    BatchIndex,
    BatchRecords,
    NotSupportedError,
    Record,
    RecordStore,
    Replace,
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
    "index_key",
]

_SURE_READS = 3
"""How often a renewal reads the old record to tell whether its swap landed."""
_ATTEMPTS = 64
"""Bound on lost compare-and-set races (and key collisions) before giving up with a 503."""
_HEX64 = frozenset("0123456789abcdef")
_SEPARATOR = "\x1f"
"""Between an index's name and its value in an index key (never printable: see ``index_key``)."""
_BATCH = 1000
_LOCK_PREFIX = "cap."
"""Ids of the per-user lock records of the cap (never an id a session is filed under)."""
_LOCK_TTL = timedelta(seconds=5)
"""Records (or index members) per batch call: bounds a statement's or a pipeline's size."""


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
    ``Update``s of keys the request did not set, applied last, in order; ``lifetime``: the
    per-session lifetime ``set_expiry`` chose (seconds, 0 or ``None``; ``KEEP`` if untouched).
    """

    cleared: bool = False
    set: Mapping[str, Any] = MappingProxyType({})
    removed: frozenset[str] = frozenset()
    user: str | None = KEEP
    updates: Mapping[str, tuple[Update, ...]] = MappingProxyType({})
    lifetime: float | None = KEEP

    @classmethod
    def replace(
        cls, state: Mapping[str, Any], user: str | None = KEEP, lifetime: float | None = KEEP
    ) -> Changes:
        """Changes that make the state exactly ``state``."""
        return cls(True, dict(state), frozenset(), user, lifetime=lifetime)

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
        self.turns = _Turns()
        self.on_event: EventHook | None = None
        if on_event is not None:
            self.observe(on_event)
        self.max_per_user: int | None = None
        """``SessionMiddleware(max_sessions_per_user=N)``: binding a session to a user who
        then has more than N live sessions ends the least recently used (needs an index)."""

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
        # _digest(key) inline, a call fewer per request; test_keys_at_rest's
        # test_session_id_is_the_hash_of_the_key_in_every_mode holds the two equal.
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def public_id(self, id: str) -> str:
        """What the session filed under ``id`` shows as its id (``session.id``,
        ``SessionInfo.id``): the SHA-256 of its key in every mode, never the key itself."""
        return id if self.hash_keys else _digest(id)

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
        return _masked(old, new.encode()).hex()

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
        key = _masked(old, raw).decode("latin-1")
        return key if is_generated_key(key) and self.id_of(key) == successor else None

    async def _adopt(self, key: str, id: str, legacy: Record, ttl: timedelta) -> Loaded | None:
        """Move a record filed under its key in clear to its hashed id; a tombstone stays."""
        loaded = _loaded(id, legacy)  # unreadable: raises before anything moves
        ttl = lasting(loaded.state.lifetime, ttl)
        version = await self.store.put(id, legacy.data, ttl, expect=ABSENT)
        if version is None:
            return None
        if await self._bury(key, legacy.version, id) is None:  # changed meanwhile: start over
            await self.store.delete(id)
            return None
        loaded.version = version
        await self._file(loaded.state, None, id, ttl, cap=False)  # bound before
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
            lifetime=meta.lifetime,
            indexes=meta.indexes,
            issued=meta.issued,
        )
        return text.encode("utf-8")

    async def create(
        self, state: Mapping[str, Any], meta: StoredState, ttl: timedelta, *, cap: bool = True
    ) -> tuple[SessionKey, Loaded]:
        """Store a new session under a fresh key; return the key and the stored record.
        ``cap``: a session bound to a user holds them to ``max_per_user`` (a renewal does
        that once its old record is buried)."""
        lifetime = meta.lifetime  # lasting(), inline: every new session passes here
        if lifetime:
            ttl = timedelta(seconds=lifetime)
        data = self._encode(state, meta, ttl)
        for _ in range(_ATTEMPTS):
            key = generate_session_key()
            id = self.id_of(key)
            version = await self.store.put(id, data, ttl, expect=ABSENT)
            if version is not None:
                await self._file(meta, None, id, ttl, cap=cap)
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
        the one loaded.

        This process's writes of one session take turns (``_Turns``): a write that waited
        starts from the record the previous one stored, so it loses no race to them."""
        turn = await self.turns.take(loaded.id)
        try:
            if turn.latest is not None and turn.latest.version != loaded.version:
                loaded, state_json = turn.latest, None
            saved = await self._merge(loaded, changes, meta, ttl, state_json)
            turn.latest = saved if isinstance(saved, Loaded) else None
            return saved
        finally:
            self.turns.give_back(turn)

    async def _merge(
        self,
        loaded: Loaded,
        changes: Changes,
        meta: StoredState,
        ttl: timedelta,
        state_json: str | None,
    ) -> Loaded | None:
        """``save``'s merge loop (its turn taken)."""
        id, version, current = loaded.id, loaded.version, loaded.state
        update = _update_id() if changes.updates else None
        for attempt in range(_ATTEMPTS):
            merged = changes.apply(current)
            user = current.user if changes.user is KEEP else changes.user
            stored = _record(merged, current, meta, user, update, changes.lifetime)
            lifetime = stored.lifetime  # lasting(), inline: every write passes here
            lived = timedelta(seconds=lifetime) if lifetime else ttl
            data = self._encode(merged, stored, lived, state_json=state_json)
            new = await self.store.put(id, data, lived, expect=version)
            record = None
            if new is None:  # a lost race, or a client's retry of this very put, which landed
                record, fresh, successor = await self._read(id)
                if record is not None and (
                    record.data == data
                    if update is None
                    else fresh is not None and update in (fresh.applied or ())
                ):
                    await self._file(stored, current, id, lived)
                    return _loaded(id, record)
            if new is not None:
                await self._file(stored, current, id, lived)
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
        ttl = lasting(state.lifetime, ttl)
        data = self._encode(state, state, ttl, seen=state.seen)
        version = await self.store.put(loaded.id, data, ttl, expect=loaded.version)
        if version is None:
            record, fresh, successor = await self._read(loaded.id)
            if fresh is not None and record is not None:
                return Loaded(fresh, loaded.id, record.version, record.data.decode())
            return RENEWED if successor is not None else None
        await self._file(state, state, loaded.id, ttl)
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
            state.lifetime,
            state.indexes,
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
        (nothing of this one is stored); ``None`` when the session ended meanwhile. A renewal
        that binds the session to another user (a login) then holds that user to
        ``max_per_user``.
        """
        renewed = await self._renew(loaded, changes, meta, ttl, rotating)
        if self.max_per_user is not None and isinstance(renewed, tuple):
            user = renewed[1].state.user
            if user is not None and user != loaded.state.user:
                await self._cap(user, renewed[1].id)
        return renewed

    async def _renew(
        self,
        loaded: Loaded,
        changes: Changes,
        meta: StoredState,
        ttl: timedelta,
        rotating: str | None,
    ) -> tuple[SessionKey, Loaded] | None:
        user = loaded.state.user if changes.user is KEEP else changes.user
        issued = self.clock()
        record_meta = _record({}, loaded.state, meta, user, None, changes.lifetime, issued)
        key, new = await self.create(changes.apply(loaded.state), record_meta, ttl, cap=False)
        tombstone = encode_tombstone(
            new.id,
            *(() if rotating is None else (issued, self._seal_successor(rotating, key))),
        ).encode()
        try:  # until the old record may name the new one, a failure leaves it intact
            old_id, old_version, current = loaded.id, loaded.version, loaded.state
            turn = await self.turns.take(old_id)  # this process's writes wait for the swap
            try:
                turn.latest = None  # the old record will not stay what the last write stored
                for attempt in range(_ATTEMPTS):
                    if await self._swap(old_id, old_version, new.id, tombstone):
                        await self._unfile(_filed(current), old_id)
                        return key, new
                    # The swap may have landed all the same (a client's retry of it reads as a
                    # refusal): what the old record says now decides, and a read that fails
                    # leaves that unknown.
                    record, fresh, successor = await self._read_surely(old_id)
                    if fresh is None and successor == new.id:  # a retry of a swap that landed
                        await self._unfile(_filed(current), old_id)
                        return key, new
                    if fresh is None:  # ended, or renewed by another request first
                        await self._end(new)
                        return RENEWED if successor is not None else None
                    assert record is not None
                    # A write reached the old record first: carry it over into the new one.
                    current, old_version = fresh, record.version
                    user = current.user if changes.user is KEEP else changes.user
                    merged = changes.apply(current)
                    carried = _record(merged, current, meta, user, None, changes.lifetime, issued)
                    lived = lasting(carried.lifetime, ttl)
                    data = self._encode(merged, carried, lived)
                    version = await self.store.put(new.id, data, lived, expect=new.version)
                    # None: ended (sign-out-everywhere), or a retry of a put that landed
                    if version is None:
                        landed = await self.store.get(new.id)
                        version = None if landed is None or landed.data != data else landed.version
                    if version is None:
                        await self._purge(old_id)
                        return None
                    new = Loaded(carried, new.id, version, data.decode())
                    self._retried("renew")
                    await _backoff(attempt)
            finally:
                self.turns.give_back(turn)
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
        ttl = lasting(meta.lifetime, ttl)
        data = self._encode(state, meta, ttl)
        version = await self.store.put(loaded.id, data, ttl, expect=loaded.version)
        if version is None:
            return None
        await self._file(meta, loaded.state, loaded.id, ttl)
        return Loaded(_state(state, meta), loaded.id, version, data.decode())

    async def purge(self, loaded: Loaded) -> None:
        """End the session (and, if it was renewed meanwhile, the session it was renewed to)."""
        await self._purge(loaded.id, loaded.version, loaded.state)

    async def _purge(
        self,
        id: str,
        version: Version | None = None,
        state: StoredState | None = None,
        *,
        owner: str | None = None,
        hops: int = 0,
    ) -> bool:
        """Tombstone ``id`` (read at ``version``, holding ``state``), following renewals;
        whether a live session ended. With ``owner`` (an index key, ``index_key``), only a
        session filed under it is ended; ``hops``: renewals followed to reach it."""
        for _ in range(_ATTEMPTS):
            if version is not None and await self._bury(id, version, None) is not None:
                await self._unfile(_filed(state), id)
                return True
            record, fresh, successor = await self._read(id)
            if record is None:
                return False
            if fresh is None and record.data.startswith(TOMBSTONE_HEAD):
                if successor is None:
                    return False
                self._check_hops(hops)
                id, version, hops = successor, None, hops + 1
                continue
            if owner is not None and (fresh is None or owner not in _filed(fresh)):
                return False
            if version is not None:
                self._retried("purge")
            version, state = record.version, fresh
        self._gave_up("purge")
        raise StoreError(f"the session kept changing: gave up after {_ATTEMPTS} attempts")

    async def _end(self, loaded: Loaded) -> None:
        """Tombstone a record this request created and nobody else knows yet."""
        await self._purge(loaded.id, loaded.version, loaded.state)

    async def _bury(self, id: str, version: Version, successor: str | None) -> Version | None:
        data = encode_tombstone(successor).encode()
        return await self.store.put(id, data, self.tombstone_ttl, expect=version)

    async def _file(
        self,
        new: StoredState,
        old: StoredState | None,
        id: str,
        ttl: timedelta,
        *,
        cap: bool = True,
    ) -> None:
        """Keep the indexes in step with a record: filed under the keys of ``new`` (its user,
        its other indexes), no longer under those of ``old`` it left; a record newly bound to
        a user holds that user to ``max_per_user`` (unless ``cap`` is false)."""
        if self.index is None:
            return
        user, before = new.user, None if old is None else old.user
        if new.indexes is None and (old is None or old.indexes is None):  # a user's alone
            if user is not None:
                await self.index.index_add(user, id, ttl)
            if before is not None and before != user:
                await self._unfile([before], id)
        else:
            filed, was = _filed(new), _filed(old)
            for key in filed:
                await self.index.index_add(key, id, ttl)
            await self._unfile([key for key in was if key not in filed], id)
        if not self.hash_keys:  # a key kept in clear is filed under its public id too (end)
            alias = _by_id(_digest(id))
            if user is not None:
                await self.index.index_add(alias, id, ttl)
            elif before is not None:
                await self._unfile([alias], id)
        if cap and self.max_per_user is not None and user is not None and user != before:
            await self._cap(user, id)

    async def _cap(self, user: str, keep: str) -> None:
        """End ``user``'s least recently used sessions beyond ``max_per_user`` (``keep``, the
        one just bound, stays if it still lives), one ``SessionEvicted`` each. Under a lock
        record per user, so two logins at once, in any processes, leave at most that many."""
        limit, index = self.max_per_user, self.require_index()
        assert limit is not None
        if len(await index.index_members(user)) <= limit:  # each login's own count decides
            return
        lock = _LOCK_PREFIX + hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()
        await self._lock(lock)
        try:
            async with _pinned(self.store):
                ids = await index.index_members(user)
                live = [
                    (state, id)
                    for id, record in zip(ids, await self._get_many(ids), strict=True)
                    if (state := _live_state(id, record)) is not None and state.user == user
                ]
                # The one just bound first, then the most recently used (the latest expiry:
                # every write or refresh moves it), then the most recently written.
                live.sort(
                    key=lambda e: (e[1] == keep, e[0].expires or 0, e[0].seen or 0, e[1]),
                    reverse=True,
                )
                evicted, unfiled = await self._purge_many([id for _, id in live[limit:]], user)
                for filed, members in unfiled.items():
                    await _quietly(self._remove_many(filed, members))
        finally:
            await _quietly(self.store.delete(lock))
        for _ in range(evicted):
            self._emit(SessionEvicted())

    async def _lock(self, id: str) -> None:
        """Take the lock record ``id`` (created only if absent, so one holder at a time; it
        expires after ``_LOCK_TTL`` should its holder die); ``StoreError`` past that wait."""
        data = encode_tombstone(None).encode()  # should anything read it: an ended session
        deadline = time.monotonic() + _LOCK_TTL.total_seconds()
        attempt = 0
        while await self.store.put(id, data, _LOCK_TTL, expect=ABSENT) is None:
            if time.monotonic() > deadline:
                raise StoreError("another process held the user's session cap lock too long")
            await _backoff(min(attempt, 7))
            attempt += 1

    async def _unfile(self, keys: Sequence[str], id: str) -> None:
        """Take ``id`` out of the indexes ``keys``; failing leaves a stale member, which
        listings drop."""
        if self.index is not None:
            for key in keys:
                await _quietly(self.index.index_remove(key, id))

    async def end(self, id: str) -> bool:
        """End the session whose public id is ``id`` (and any session a login renewed it to);
        whether a live one ended. A key filed in clear is found through the user index, so
        only a session bound to a user can be ended so there."""
        if self.hash_keys:
            return await self._purge(id)
        ended = False
        for key in await self.require_index().index_members(_by_id(id)):
            if _digest(key) == id:
                ended = await self._purge(key) or ended
            await self._unfile([_by_id(id)], key)
        return ended

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
        return await self.sessions_where("user", user_id)

    async def end_all_for(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user but the one filed under ``keep``; how many were
        live."""
        return await self.end_where("user", user_id, keep)

    async def sessions_where(self, name: str, value: str) -> list[SessionInfo]:
        """The live sessions filed under ``(name, value)`` (``Session.index``; ``"user"``:
        ``bind_user``), oldest first; stale index members are dropped.

        A few round trips whatever their number on a store with the batches (``BatchRecords``,
        ``BatchIndex``), on one connection where it can pin one."""
        index, key = self.require_index(), index_key(name, value)
        async with _pinned(self.store):
            ids = await index.index_members(key)
            infos, stale = [], []
            for id, record in zip(ids, await self._get_many(ids), strict=True):
                state = _live_state(id, record)
                if state is None or key not in _filed(state):
                    stale.append(id)
                    continue
                infos.append(
                    SessionInfo(
                        self.public_id(id), state.created, state.seen, state.expires, state.agent
                    )
                )
            await self._remove_many(key, stale)
        return sorted(infos, key=lambda i: (i.created or 0.0, i.last_seen or 0.0, i.id))

    async def end_where(self, name: str, value: str, keep: str | None = None) -> int:
        """End every session filed under ``(name, value)`` but the one filed under ``keep``;
        how many were live. Each ends as ``end`` ends one, all read and buried in batches."""
        index, key = self.require_index(), index_key(name, value)
        async with _pinned(self.store):
            ids = [id for id in await index.index_members(key) if self.public_id(id) != keep]
            ended, unfiled = await self._purge_many(ids, key)
            unfiled.setdefault(key, []).extend(ids)
            for filed, members in unfiled.items():
                await _quietly(self._remove_many(filed, list(dict.fromkeys(members))))
        return ended

    async def _purge_many(self, ids: list[str], owner: str) -> tuple[int, dict[str, list[str]]]:
        """``_purge(id, owner=owner)`` for each of ``ids``, a batch per renewal hop: read them
        all, tombstone the live ones with one compare-and-set each, follow the tombstones'
        successors in the next batch; a lost race goes through ``_purge``. How many ended,
        and the ids buried in batches by index key, for the caller to take out of them."""
        ended, pending, unfiled = 0, list(dict.fromkeys(ids)), dict[str, list[str]]()
        tombstone = encode_tombstone(None).encode()
        for hops in range(self.max_hops + 1):
            if not pending:
                break
            burials, filed, successors = [], {}, []
            for id, record in zip(pending, await self._get_many(pending), strict=True):
                if record is None:
                    continue
                if record.data.startswith(TOMBSTONE_HEAD):
                    successor = read_tombstone(record.data)[1]
                    if successor is not None:
                        self._check_hops(hops)
                        successors.append(successor)
                    continue
                state = _live_state(id, record)
                if state is None or owner not in (keys := _filed(state)):
                    continue
                burials.append(Replace(id, tombstone, self.tombstone_ttl, record.version))
                filed[id] = keys
            for burial, version in zip(burials, await self._replace_many(burials), strict=True):
                if version is not None:
                    ended += 1
                    for key in filed[burial.id]:
                        unfiled.setdefault(key, []).append(burial.id)
                else:  # written meanwhile: the one-by-one way reads it again
                    self._retried("purge")
                    ended += await self._purge(burial.id, owner=owner, hops=hops)
            pending = list(dict.fromkeys(successors))
        return ended, unfiled

    def _check_hops(self, hops: int) -> None:
        """A purge never acknowledges while a successor past the hop limit may live."""
        if hops >= self.max_hops:
            self._gave_up("purge", "hops")
            raise StoreError(f"more than {self.max_hops} renewals to follow")

    async def _get_many(self, ids: list[str]) -> list[Record | None]:
        """The records under ``ids``: in batches when the store has them, else one by one."""
        batches = _batches(self.store)
        if batches is None:
            return [await self.store.get(id) for id in ids]
        records: list[Record | None] = []
        for start in range(0, len(ids), _BATCH):
            records += await batches.get_many(ids[start : start + _BATCH])
        return records

    async def _replace_many(self, writes: list[Replace]) -> list[Version | None]:
        """Each write's new version (``None``: refused), in batches when the store has them."""
        batches = _batches(self.store)
        if batches is None:
            return [await self.store.put(*write[:3], expect=write.expect) for write in writes]
        versions: list[Version | None] = []
        for start in range(0, len(writes), _BATCH):
            versions += await batches.replace_many(writes[start : start + _BATCH])
        return versions

    async def _remove_many(self, user: str, ids: list[str]) -> None:
        """Take ``ids`` out of ``user``'s index, in batches when the store has them."""
        index = self.require_index()
        batches = _index_batches(index)
        if batches is None:
            for id in ids:
                await index.index_remove(user, id)
            return
        for start in range(0, len(ids), _BATCH):
            await batches.index_remove_many(user, ids[start : start + _BATCH])

    def is_id(self, text: str) -> bool:
        """Whether ``text`` has the shape of a public id (``public_id``): never a key's."""
        return len(text) == 64 and set(text) <= _HEX64


def _digest(key: str) -> str:
    """The SHA-256 of a session key, in hex: its public id, and its id at rest by default."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _by_id(public_id: str) -> str:
    """The index entry that files a key kept in clear under its public id: a name no user id
    can have (``state.user_id_problem`` refuses control characters, and records holding one)."""
    return f"\x1fid:{public_id}"


def index_key(name: str, value: str) -> str:
    """The key a store's index files sessions under for ``(name, value)``: the user id itself
    for ``"user"`` (as the first version filed them), else ``name``, U+001F, ``value``. User
    ids and index values are printable, so no two indexes' keys meet."""
    return value if name == "user" else f"{name}{_SEPARATOR}{value}"


def _filed(state: StoredState | None) -> list[str]:
    """The index keys a record is filed under: its user's, then its other indexes'."""
    if state is None:
        return []
    keys = [] if state.user is None else [state.user]
    if state.indexes is not None:
        keys += [f"{n}{_SEPARATOR}{v}" for n, v in state.indexes.items() if v is not None]
    return keys


def _batches(store: object) -> BatchRecords | None:
    """``store`` if it reads and replaces records in batches (``BatchRecords``), else None."""
    return store if _has(store, "get_many", "replace_many") else None  # type: ignore[return-value]


def _index_batches(index: object) -> BatchIndex | None:
    """``index`` if it removes ids in batches (``BatchIndex``), else None."""
    return index if _has(index, "index_remove_many") else None  # type: ignore[return-value]


def _has(store: object, *operations: str) -> bool:
    """Whether ``store`` has the optional operations. Looked up with ``getattr``, not
    ``isinstance``: a wrapper (``ObservedStore``) forwards them through ``__getattr__``, which
    ``isinstance`` no longer consults (Python 3.12)."""
    return all(callable(getattr(store, name, None)) for name in operations)


def _live_state(id: str, record: Record | None) -> StoredState | None:
    """The state a record holds; ``None`` for no record, a tombstone or an unreadable one."""
    if record is None or record.data.startswith(TOMBSTONE_HEAD):
        return None
    try:
        return _loaded(id, record).state
    except DeserializationError:
        return None


@contextlib.asynccontextmanager
async def _pinned(store: RecordStore) -> AsyncIterator[None]:
    """The store's ``pinned()`` (the calls inside share one connection), where it has one."""
    pinned = getattr(store, "pinned", None)
    if pinned is None:
        yield
        return
    async with pinned():
        yield


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
    lifetime: float | None = KEEP,
    issued: float | None = None,
) -> StoredState:
    """``state`` with the metadata a write stores: created from the record, the rest from this
    request; the device binding and lifetime from the record too, unless this request chose new
    ones; the record's update ids, with ``update``'s first when this write applies updates; when
    its key was issued from the record, unless a new key is (``issued``)."""
    device = current.device if meta.device is None else meta.device
    applied = current.applied
    if update is not None:
        applied = (update, *(applied or ()))[:MAX_APPLIED]
    if lifetime is KEEP:
        lifetime = current.lifetime
    indexes = current.indexes if not meta.indexes else _indexes(current.indexes, meta.indexes)
    created = current.created or meta.created
    return stored_state(
        state,
        created,
        user,
        meta.agent,
        device,
        None,
        None,
        applied,
        lifetime,
        indexes,
        current.issued if issued is None else issued,
    )


def _indexes(
    current: Mapping[str, str | None] | None, changed: Mapping[str, str | None] | None
) -> dict[str, str | None] | None:
    """The record's indexes with a request's changes (``None``: taken out) applied."""
    merged = {**(current or {}), **(changed or {})}
    return {name: value for name, value in merged.items() if value is not None} or None


def _masked(old: str, data: bytes) -> bytes:
    """``data`` (a 64-character key) XOR a pad only the old key gives (HMAC-SHA512 of it), so
    the same call seals and opens; each old key seals one successor only."""
    pad = hmac.digest(old.encode(), b"sessionware rotation", "sha512")
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def _update_id() -> str:
    """An id for one write's updates (``StoredState.applied``)."""
    return secrets.token_hex(6)


def _state(state: Mapping[str, Any], meta: StoredState) -> StoredState:
    indexes = _indexes(None, meta.indexes)
    return stored_state(
        state,
        meta.created,
        meta.user,
        meta.agent,
        meta.device,
        None,
        None,
        meta.applied,
        meta.lifetime,
        indexes,
        meta.issued,
    )


def lasting(lifetime: float | None, ttl: timedelta) -> timedelta:
    """How long a record lives: its own lifetime when ``set_expiry`` gave it one (> 0), else
    ``ttl`` (the middleware's; a browser session, lifetime 0, keeps it too)."""
    return timedelta(seconds=lifetime) if lifetime else ttl


async def _backoff(attempt: int) -> None:
    """A random pause that grows with contention, so competing writers spread out."""
    import asyncio  # here, so importing the engine pulls in no event loop machinery

    await asyncio.sleep(random.random() * min(0.05, 0.0005 * 2**attempt))


class _Turn:
    """This process's writes of one session in one event loop: the lock they take turns
    with, how many hold or await it, and the record the last of them stored."""

    __slots__ = ("key", "latest", "lock", "users")

    def __init__(self, key: tuple[object, str], lock: Any) -> None:
        self.key, self.lock, self.users = key, lock, 0
        self.latest: Loaded | None = None


class _Turns:
    """The turns ``save`` and ``renew`` take to commit, per event loop and session id (a lock
    binds to one loop). An id is kept only while a write holds or awaits its turn."""

    def __init__(self) -> None:
        self.table: dict[tuple[object, str], _Turn] = {}

    async def take(self, id: str) -> _Turn:
        """Wait for this loop's turn to write ``id``; ``give_back`` it when done."""
        import asyncio  # here, so importing the engine pulls in no event loop machinery

        key = (asyncio.get_running_loop(), id)
        turn = self.table.get(key)
        if turn is None:
            turn = self.table[key] = _Turn(key, asyncio.Lock())
        turn.users += 1
        try:
            await turn.lock.acquire()
        except BaseException:  # cancelled while waiting
            self._leave(turn)
            raise
        return turn

    def give_back(self, turn: _Turn) -> None:
        turn.lock.release()
        self._leave(turn)

    def _leave(self, turn: _Turn) -> None:
        turn.users -= 1
        if turn.users == 0:
            del self.table[turn.key]


class _Unsure(StoreError):
    """A renewal could not tell whether its swap landed: its new record must be kept."""


async def _quietly(call: Any) -> None:
    """Await a best-effort call (cleanup, index removal); its failure changes nothing."""
    with contextlib.suppress(Exception):
        await call
