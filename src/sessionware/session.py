"""Session: one request's session state and its status machine (SPEC §1), and the request's
``Tracker``, the one thing the engine talks to.

Status precedence, as actix: ``PURGED`` is terminal (inserts, removals, clear and renew after a
purge do nothing); ``RENEWED`` is sticky against ``CHANGED``. One deliberate difference:
``update``/``update_or`` mark the session ``CHANGED`` (actix forgets to, and loses the change),
and they are read-modify-write operations the store's merge re-applies to the current value.
The session also notices values mutated in place (``session["cart"].append(x)``).

A request's session goes through three phases; what moves it is data, checked against
``TRANSITIONS`` (an event a phase has no row for raises, naming both)::

    phase    what the handler may do                                 left by
    OPEN     anything                                                RESPONDED, SEALED, ENDED
    LATE     read, write and purge the stored session; no new key    SEALED, ENDED
    CLOSED   read only: a write raises SessionError, saying why      -

``RESPONDED``: the response head went out and later changes can still be stored (a server-side
session the client already holds); ``SEALED``: the head went out and nothing later can be (the
cookie store, a new session, a 5xx), or the request is over; ``ENDED``: the session ended under
this request (a renewal got there first, it was signed out). Apart from its phase, a session may
not be read yet: the cookie store opens its cookie at the first use, a lazy store loads at
``await session.load()`` (``Tracker.unread``), in any phase.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import re
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, cast, overload

from sessionware.errors import (
    NotSupportedError,
    SessionError,
    SessionGetError,
    SessionInsertError,
    SessionNotLoadedError,
    SessionUpdateError,
)
from sessionware.repository import KEEP, MISSING, Changes, Update
from sessionware.state import (
    ENVELOPE_HEAD,
    MAX_USER_ID,
    check_value,
    decode_state,
    state_members,
    state_unchanged,
    user_id_problem,
)
from sessionware.transport import COOKIE, Transport

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

    from sessionware.codec import TaggedJSON

__all__ = [
    "CSRF_KEY",
    "MAX_INDEX_VALUE",
    "MAX_LIFETIME",
    "MAX_USER_ID",
    "TRANSITIONS",
    "Event",
    "Outcome",
    "Phase",
    "Session",
    "SessionError",
    "SessionGetError",
    "SessionInsertError",
    "SessionNotLoadedError",
    "SessionStatus",
    "SessionUpdateError",
    "Tracker",
    "check_index",
    "check_user_id",
]

T = TypeVar("T")
CSRF_KEY = "_csrf"
"""The session key ``sessionware.csrf`` keeps its secret under; ``renew()`` drops it."""
MAX_LIFETIME = timedelta(days=400)
"""The longest lifetime ``set_expiry`` takes: browsers cap a cookie's Max-Age there (RFC 6265bis)."""
MAX_INDEX_VALUE = 200
"""The longest value ``Session.index`` takes (characters): with its name (at most 32) and a
separator, what every store's index can hold."""
_INDEX_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MISSING: Any = MISSING
_KEEP: Any = KEEP
_CONTAINERS = (dict, list, set)
"""What a handler can change in place (a set only with a codec that stores sets)."""
EndedReason = Literal["idle_timeout", "absolute_timeout", "signed_out"]


class SessionStatus(enum.Enum):
    """What happened to a session during a request; the middleware acts on it (SPEC §2.3)."""

    UNCHANGED = "unchanged"
    CHANGED = "changed"
    PURGED = "purged"
    RENEWED = "renewed"


class Phase(enum.Enum):
    """What a request's session may still do (the module docstring's table)."""

    OPEN = "open"
    LATE = "late"
    CLOSED = "closed"

    __hash__ = object.__hash__  # members are singletons: hashed in C, not by Enum's method


class Event(enum.Enum):
    """What moves a request's session from one phase to the next."""

    RESPONDED = "responded"
    SEALED = "sealed"
    ENDED = "ended"

    __hash__ = object.__hash__  # members are singletons: hashed in C, not by Enum's method


_OPEN, _LATE, _CLOSED = Phase.OPEN, Phase.LATE, Phase.CLOSED

TRANSITIONS: dict[Phase, dict[Event, Phase]] = {
    _OPEN: {Event.RESPONDED: _LATE, Event.SEALED: _CLOSED, Event.ENDED: _CLOSED},
    _LATE: {Event.SEALED: _CLOSED, Event.ENDED: _CLOSED},
    _CLOSED: {Event.SEALED: _CLOSED, Event.ENDED: _CLOSED},
}
"""Each phase's way out, by event: the phase the event leads to."""


class Session(dict[str, Any]):
    """The session of one request: a ``dict`` of JSON values with a status.

    ``Session()`` is a standalone empty session; the middleware makes the one handlers see.
    Values must be JSON-serialisable, or what the middleware's codec stores (checked at insert;
    a pydantic model is stored as its JSON dump). Writing through the dict methods and
    the actix-named ones has the same effect on ``status``. It is a real ``dict`` so that
    ``json.dumps(session)`` and ``JSONResponse(request.session)`` work as with Starlette's.
    """

    # Every field is a slot, set when the session is made: CPython specializes reads of slots,
    # but not of instance attributes that fall back to a class-level default.
    __slots__ = (
        "__dict__",  # attributes of a caller's own still work, as on the first version's
        "__weakref__",
        "_accessed",
        "_cleared",
        "_id",
        "_key",
        "_lifetime",
        "_origin",
        "_removed",
        "_scalars_only",
        "_set",
        "_status",
        "_tracker",
        "_updates",
        "_user",
        "_user_changed",
    )
    _status: SessionStatus
    _accessed: bool
    _cleared: bool
    _set: set[str] | None
    _removed: set[str] | None
    _updates: dict[str, list[Update]] | None
    """Read-modify-write operations per key (``update``/``update_or``), re-applied by a merge."""
    _origin: str | None
    """The envelope the state was decoded from (or last stored as), to tell what changed."""
    _scalars_only: bool
    """Whether ``_origin`` holds no container a handler could change in place; both are set
    together, only by ``_set_origin``."""
    _tracker: Tracker
    _key: str | None
    _id: str | None
    _user: str | None
    _user_changed: bool
    _lifetime: float | None
    """The lifetime ``set_expiry`` chose in this request (seconds, 0 or ``None``), or ``KEEP``."""
    __hash__ = None

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        _reset(self, _DETACHED)
        if state:
            super().__init__(state)

    def __repr__(self) -> str:
        return f"<Session {self._status.name} keys={sorted(_keys(self))!r}>"

    # -- reading -----------------------------------------------------------------------------

    @property
    def status(self) -> SessionStatus:
        """``UNCHANGED``, ``CHANGED``, ``PURGED`` or ``RENEWED``."""
        return self._status

    @property
    def accessed(self) -> bool:
        """Whether anything read or wrote the session (the response then varies by Cookie)."""
        return self._accessed

    @property
    def key(self) -> str | None:
        """The key a server-side store files this session under (``None`` for a new session or
        the cookie store). Treat it as a secret: never log it."""
        if not self._accessed:
            self._read()
        return self._key

    @property
    def id(self) -> str | None:
        """The session's id: the SHA-256 of its key (with ``hash_keys=False`` too), safe to
        show (e.g. to mark "this device" in ``SessionAdmin.sessions_for``) and to pass to
        ``end_session``. ``None`` for a new session or the cookie store."""
        if not self._accessed:
            self._read()
        id = self._id  # where the record is filed: the key itself with hash_keys=False
        return None if id is None else self._tracker.engine.public_id(id)

    @property
    def ended_elsewhere(self) -> bool:
        """Whether the request's cookie named a session that has since been ended (signed out
        from another device, or purged by another request): the session is now empty. Known
        while the ended session's tombstone lasts (five minutes by default).
        ``ended_reason == "signed_out"``."""
        return self.ended_reason == "signed_out"

    @property
    def ended_reason(self) -> EndedReason | None:
        """Why the session the request's cookie named has ended (this one is then new and
        empty): ``"idle_timeout"``, ``"absolute_timeout"`` or ``"signed_out"``; ``None`` for a
        live session or a request without one. Reading it extends nothing."""
        return self._peek().ended

    @property
    def created_at(self) -> datetime | None:
        """When the session was first stored (UTC, by the middleware's clock); ``None`` for a
        session not stored yet. ``renew()`` keeps it. Reading it extends nothing."""
        created = self._peek().created
        return None if created is None else datetime.fromtimestamp(created, timezone.utc)

    @property
    def expires_at(self) -> datetime | None:
        """When the session ends unless it is used (UTC, by the middleware's clock), as stored
        when the request loaded it: the idle expiry, or the absolute timeout (``max_age``) when
        that comes first. ``None`` for a session not stored yet (or an actix 0.11 cookie, which
        carries no expiry). Reading it extends nothing."""
        tracker = self._peek()
        ends = tracker.engine.ends_at(tracker) if tracker.expires is not None else None
        return None if ends is None else datetime.fromtimestamp(ends, timezone.utc)

    def set_expiry(self, value: timedelta | None) -> None:
        """Choose this session's lifetime (Django's ``set_expiry``, e.g. "remember me" at login).

        A ``timedelta`` over zero makes it persistent: it lives that long after its last
        extension and its cookie gets that Max-Age. ``timedelta(0)``: its cookie lasts until the
        browser closes (its state keeps the middleware's TTL). ``None``: the middleware's
        lifecycle again. Kept across ``renew()``; ``max_age`` still ends it. The session is
        changed only when ``value`` differs from its lifetime now.
        Raises ``TypeError``/``ValueError`` for anything else (negative, under one second, over
        ``MAX_LIFETIME``), and ``SessionError`` once the response head went out."""
        lifetime = _lifetime(value)
        if self._status is _PURGED:
            return
        tracker = self._tracker
        if not self._accessed:
            self._read()
        current = self._lifetime
        if lifetime == (tracker.lifetime if current is _KEEP else current):
            return
        if tracker.phase is not _OPEN:
            tracker.allow_write()  # CLOSED: says why nothing can be stored
            raise SessionError(_LIFETIME_LATE)
        self._write()
        self._lifetime = lifetime
        if tracker is not _DETACHED:  # shared by every standalone session
            tracker.lifetime = lifetime

    def _peek(self) -> Tracker:
        """The request's tracker, the session read into it, without counting as a use (the
        times and the ending are the envelope's, not the state's)."""
        tracker = self._tracker
        if tracker.unread:
            if tracker.lazy:
                raise SessionNotLoadedError(_LAZY)
            tracker.engine.open_into(tracker, self)
        return tracker

    @property
    def transport(self) -> Transport:
        """How this request carries the session's token: the ``CookieTransport`` or
        ``HeaderTransport`` of ``SessionMiddleware(transport=...)`` it matched (the first of
        the list when it carried none); the cookie for a session made outside a request."""
        engine = getattr(self._tracker, "engine", None)  # a standalone session's has none
        return getattr(engine, "transport", COOKIE)

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to with ``bind_user``, if any."""
        if not self._accessed:
            self._read()
        return self._user

    def bind_user(self, user_id: str | None) -> None:
        """Tie the session to ``user_id`` (``None`` unties it), so a server-side store can list
        and end a user's sessions (``SessionAdmin.sessions_for``, ``end_all_for``)."""
        if user_id is not None:
            check_user_id(user_id)
        if self._status is _PURGED or user_id == self._user:
            return
        self._write()
        self._user = user_id
        self._user_changed = True

    def index(self, name: str, value: str | None) -> None:
        """File this session under ``(name, value)`` besides its user (``None``: take it out of
        index ``name``), so ``SessionAdmin.sessions_where(name, value)`` and ``end_where``
        find it: e.g. ``session.index("oidc_sid", sid)`` at an OpenID Connect login.

        ``name``: 1 to 32 of ``[a-z0-9_]``, starting with a letter (``"user"`` is
        ``bind_user``'s); ``value``: 1 to ``MAX_INDEX_VALUE`` printable characters. Kept in the
        stored record and across ``renew()``. A server-side store's: the cookie store keeps no
        index (``NotSupportedError``)."""
        check_index(name, value)
        engine = getattr(self._tracker, "engine", None)
        if engine is not None and getattr(engine, "repository", None) is None:
            raise NotSupportedError(
                "the cookie store keeps no index of sessions: session.index() needs a"
                " server-side store (Redis, SQLite, PostgreSQL, MariaDB, memory)"
            )
        if self._status is _PURGED:
            return
        self._write()
        tracker = self._tracker
        if tracker is not _DETACHED:  # a standalone Session() is never stored
            if tracker.indexes is None:
                tracker.indexes = {}
            tracker.indexes[name] = value

    def bind_device(self) -> None:
        """Offer the browser to bind this session to a key it keeps on the device (DBSC).

        The response carries ``Secure-Session-Registration``; a browser with DBSC registers, and
        from then on the session's cookie stops working within ``credential_ttl`` anywhere but
        on that device. Browsers without DBSC keep a normal session. Call it at login, after
        ``renew()``: it replaces any earlier binding with one to the device in front of you.
        """
        tracker = self._tracker
        if tracker.device is None:
            raise SessionError(
                "device binding is not configured: pass device_binding=DeviceBinding() to"
                " SessionMiddleware (it needs a server-side store)"
            )
        if self._status is _PURGED:
            return
        tracker.allow_new_key()
        self._write()
        tracker.device_requested = True

    @property
    def loaded(self) -> bool:
        """False only for a lazily loaded session before ``await session.load()``."""
        return not self._tracker.lazy

    async def load(self) -> Session:
        """Fetch the state from the store if that has not happened yet; return the session.

        Only needed with ``SessionMiddleware(lazy=True)``, where the store is not asked until the
        handler wants the session; the FastAPI dependency ``SessionDep`` calls it for you.
        """
        tracker = self._tracker
        if tracker.lazy:
            await tracker.engine.load_into(tracker, self)
        elif tracker.unread:
            tracker.engine.open_into(tracker, self)
        return self

    def discard_changes(self) -> None:
        """Store nothing this request did to the session, whatever its status (the response
        still varies by Cookie). ``CSRFMiddleware`` calls it for a request it refuses."""
        self._tracker.discarded = True

    def _read(self) -> None:
        """Note that the session was used (for Vary, and to notice in-place changes)."""
        if self._accessed:
            return
        tracker = self._tracker
        if tracker.unread:
            if tracker.lazy:
                raise SessionNotLoadedError(_LAZY)
            tracker.engine.open_into(tracker, self)
        self._accessed = True

    def __getitem__(self, key: str) -> Any:
        if not self._accessed:
            self._read()
        return _getitem(self, key)

    def __contains__(self, key: object) -> bool:
        if not self._accessed:
            self._read()
        return _contains(self, key)

    def __iter__(self) -> Iterator[str]:
        if not self._accessed:
            self._read()
        return iter(list(_keys(self)))

    def __reversed__(self) -> Iterator[str]:
        if not self._accessed:
            self._read()
        return iter(list(_keys(self))[::-1])

    def __len__(self) -> int:
        if not self._accessed:
            self._read()
        return _len(self)

    def __eq__(self, other: object) -> bool:
        if not self._accessed:
            self._read()
        return _eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return KeysView(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return ValuesView(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return ItemsView(self)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` with the same items."""
        if not self._accessed:
            self._read()
        return dict(_items(self))

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.copy() | other  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return other | self.copy()  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        if not self._accessed:
            self._read()
        return _get(self, key, default)

    def contains_key(self, key: str) -> bool:
        """Whether ``key`` is in the session."""
        return key in self

    def entries(self) -> Mapping[str, Any]:
        """A read-only view of the whole state."""
        if not self._accessed:
            self._read()
        return MappingProxyType(self)

    def get_as(self, key: str, type_: type[T]) -> T | None:
        """The value under ``key`` validated as ``type_``; ``None`` if missing.

        Uses pydantic's ``TypeAdapter`` when pydantic is installed; otherwise dataclasses are
        built from their fields and other types are checked with ``isinstance``.
        Raises ``SessionGetError`` when the value does not fit.
        """
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return None
        try:
            return _validate(value, type_)
        except Exception as exc:
            raise SessionGetError(
                f"Failed to deserialize the JSON-encoded session data attached to key `{key}`"
                f" as a `{getattr(type_, '__name__', type_)}` type: {exc}"
            ) from exc

    # -- writing -----------------------------------------------------------------------------

    def _write(self) -> None:
        if self._tracker.phase is not _OPEN:
            self._tracker.allow_write()
        if not self._accessed:
            self._read()
        if self._status is _UNCHANGED:
            self._status = _CHANGED

    def insert(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``; a no-op after ``purge()``.

        Raises ``SessionInsertError`` before changing anything if the value cannot be stored.
        """
        if type(key) is not str or not key.isascii():
            _check_key(key)
        kind = type(value)
        if not (
            (kind is int and -_INT_BOUND < value < _INT_BOUND)
            or (kind is str and value.isascii())
            or value is None
            or kind is bool
        ):
            value = _storable(key, value, self._tracker)
        if self._status is _PURGED:
            return
        if self._status is _UNCHANGED or self._tracker.phase is not _OPEN or not self._accessed:
            self._write()
        _setitem(self, key, value)
        if self._set is None:
            self._set = {key}
        else:
            self._set.add(key)
        if self._removed:
            self._removed.discard(key)
        if self._updates:
            self._updates.pop(key, None)

    __setitem__ = insert

    def remove(self, key: str) -> Any:
        """Remove ``key`` and return its value (``None`` if absent); a no-op after ``purge()``.

        As actix, the session becomes ``CHANGED`` even when the key was absent.
        """
        if self._status is _PURGED:
            return None
        self._write()
        value = _pop(self, key, None)
        if self._removed is None:
            self._removed = set()
        self._removed.add(key)
        if self._set:
            self._set.discard(key)
        if self._updates:
            self._updates.pop(key, None)
        return value

    def remove_as(self, key: str, type_: type[T]) -> T | Any:
        """Remove ``key`` and return its value validated as ``type_``.

        If the value does not fit, the raw value is returned instead (the key stays removed).
        """
        present = key in self
        value = self.remove(key)
        if not present:
            return None
        try:
            return _validate(value, type_)
        except Exception:
            return value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.remove(key)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; a missing key with a default changes nothing."""
        if key not in self:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self.remove(key)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the most recently inserted item."""
        if not self._accessed:
            self._read()
        if not _len(self):
            raise KeyError("popitem(): session is empty")
        key = next(reversed(_keys(self)))
        return key, self.remove(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value under ``key``; if missing, insert ``default`` first."""
        if key not in self:
            self.insert(key, default)
        return _get(self, key, default)

    def clear(self) -> None:
        """Remove every key (the session stays, now empty); a no-op after ``purge()``."""
        if self._status is _PURGED:
            return
        self._write()
        _clear(self)
        self._cleared = True
        self._set = self._removed = self._updates = None

    @overload
    def update(self, key: str, fn: Callable[[Any], Any], /) -> None: ...

    @overload
    def update(self, other: SupportsKeysAndGetItem[str, Any], /, **kwargs: Any) -> None: ...

    @overload
    def update(self, other: Iterable[tuple[str, Any]], /, **kwargs: Any) -> None: ...

    @overload
    def update(self, **kwargs: Any) -> None: ...

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[misc]  # mypy misreads *args
        """``update(key, fn)``: replace the value under ``key`` with ``fn(value)`` if present.

        ``fn`` must be pure: a server-side store's merge calls it again on the value stored
        now when another request wrote the session first, so no concurrent change is lost.
        ``update(mapping_or_pairs, **kw)``: insert every item, as ``dict.update``.
        """
        if len(args) == 2 and isinstance(args[0], str) and callable(args[1]) and not kwargs:
            key, fn = args
            if key in self:
                self._apply(key, Update(fn))
            return
        for key, value in dict(*args, **kwargs).items():
            self.insert(key, value)

    def update_or(self, key: str, default: Any, fn: Callable[[Any], Any]) -> None:
        """``update(key, fn)`` if ``key`` is present, else ``insert(key, default)``, as one
        read-modify-write: ``update_or("n", 1, lambda n: n + 1)`` never loses an increment,
        however many requests (or processes) do it at once. ``fn`` must be pure."""
        if not self._accessed:
            self._read()
        self._apply(key, Update(fn, default))

    def _apply(self, key: str, update: Update) -> None:
        """Apply ``update`` here, and note it for the merge to apply to the stored value (a key
        inserted in this request keeps its value instead: the request said what it is)."""
        try:
            value = update.apply(_get(self, key, _MISSING))
        except Exception as exc:
            raise SessionUpdateError(f"update of session key {key!r} failed: {exc}") from exc
        if value is _MISSING:  # update() of a key that is not there: nothing to do
            return
        try:
            value = _storable(key, value, self._tracker)
        except SessionInsertError as exc:
            raise SessionUpdateError(str(exc)) from exc
        if self._status is _PURGED:
            return
        self._write()
        _setitem(self, key, value)
        if self._set is None or key not in self._set:
            if self._updates is None:
                self._updates = {}
            self._updates.setdefault(key, []).append(update)

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    def purge(self) -> None:
        """End the session: its record is deleted and the client told to drop the cookie."""
        if self._tracker.phase is not _OPEN:
            self._tracker.allow_write()
        if not self._accessed:
            self._read()
        self._status = _PURGED
        _clear(self)

    def renew(self) -> None:
        """Keep the state under a new key (call it at login, to prevent session fixation).

        The CSRF secret is dropped, so a token issued before the login is no longer accepted.
        """
        if self._status is _PURGED:
            return
        self._tracker.allow_new_key()
        self._write()
        if _contains(self, CSRF_KEY):
            self.remove(CSRF_KEY)
        self._status = _RENEWED


_new_dict = dict.__new__


def _new(tracker: Tracker) -> Session:
    """A new empty session of ``tracker``'s request, without ``Session.__init__``'s call
    (``_reset``'s work, inline: test_session's test_a_new_session_is_a_reset_one holds them
    equal)."""
    session = _new_dict(Session)
    session._status = _UNCHANGED
    session._accessed = session._cleared = session._user_changed = False
    session._set = session._removed = session._updates = session._origin = None
    session._scalars_only = True
    session._tracker = tracker
    session._key = session._id = session._user = None
    session._lifetime = _KEEP
    return session


def _reset(session: Session, tracker: Tracker) -> None:
    """Set every field of a new session to its default."""
    session._status = _UNCHANGED
    session._accessed = session._cleared = session._user_changed = False
    session._set = session._removed = session._updates = session._origin = None
    session._scalars_only = True  # what _set_origin(session, None) sets
    session._tracker = tracker
    session._key = session._id = session._user = None
    session._lifetime = _KEEP


def _lifetime(value: Any) -> float | None:
    """``set_expiry``'s value in whole seconds (``None`` stays); raise saying what is wrong."""
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise TypeError(
            f"set_expiry() takes a datetime.timedelta or None, not {type(value).__name__}"
        )
    if value < timedelta(0):
        raise ValueError(f"set_expiry() takes no negative lifetime, got {value}")
    if timedelta(0) < value < timedelta(seconds=1):
        raise ValueError(
            f"set_expiry() takes 0 or at least one second (times are whole seconds), got {value}"
        )
    if value > MAX_LIFETIME:
        raise ValueError(
            f"set_expiry() takes at most {MAX_LIFETIME.days} days (browsers cap a cookie's"
            f" Max-Age there), got {value}"
        )
    return float(int(value.total_seconds()))


def _set_origin(session: Session, origin: str | None) -> None:
    """Note the envelope the state was decoded from, and whether it holds no container (its
    state is ``{}`` or scalars: then only writes can change the session)."""
    session._origin = origin
    session._scalars_only = origin is None or (
        origin.count("{") == 2 and "[" not in origin and origin.startswith(ENVELOPE_HEAD)
    )


# -- the request's tracker: the engine's one way in ------------------------------------------


class Outcome(NamedTuple):
    """What a request did to its session, decided once (``Tracker.outcome``). (Hot paths
    unpack it: CPython 3.11 reads a named field through a descriptor it cannot specialize.)

    ``status``: the effective status (a change in place counts, a write back of the same
    value does not); ``persist``: whether it is stored at all (one rule: ``Tracker.persists``);
    ``used``: whether the session was read or written (the response then varies by Cookie);
    ``changes``: what to merge into the stored state; ``state_json``: the whole state as JSON,
    when it had to be encoded to tell (the store writes it as it is).
    """

    status: SessionStatus
    persist: bool
    used: bool
    changes: Changes
    state_json: str | None


class Tracker:
    """One request's session as the engine sees it: its phase, what the request's cookie
    opened to, and the few operations the engine performs on the session.

    The engine's interface to a session is this class: ``fill`` (the state arrived, or was
    adopted from another library's cookie as a change), ``outcome`` (what the request did,
    once, as the response starts), ``late_outcome`` (changes made after it), ``rebase`` (the
    state was stored), ``handle`` (an event moves the phase), ``release`` (the request is
    over), ``state`` and ``user``; ``persists`` is the one rule for whether a response stores
    anything, which ``outcome`` applies. Nothing else reaches into a ``Session``.
    """

    __slots__ = (
        "agent",
        "cookies",
        "created",
        "decided",
        "device",
        "device_requested",
        "discarded",
        "ended",
        "engine",
        "expires",
        "indexes",
        "key",
        "lazy",
        "legacy",
        "lifetime",
        "phase",
        "reason",
        "record",
        "refusal",
        "reissue",
        "renewed",
        "resendable",
        "session",
        "unread",
    )
    legacy: Any
    """Set only by an adopting engine's ``begin`` (``sessionware.adopt``): the other library's
    cookies the request carried. Other requests never pay for it."""

    def __init__(
        self, engine: Any, cookies: list[bytes], agent: bytes | None, unread: bool
    ) -> None:
        self.engine = engine
        """What opens (``open_into``) or loads (``load_into``) the session at its first use."""
        self.cookies = cookies
        """Cookie header values that may hold the session cookie (kept: Vary depends on them)."""
        self.agent = agent
        """The User-Agent header, kept (shortened, when written) for sessions bound to a user."""
        self.phase = _OPEN
        self.reason = ""
        """Why the current phase refuses what it refuses (the message of what it raises)."""
        self.refusal: type[SessionError] = SessionError
        self.unread = unread
        """Whether the state is still to be read (at the first use, or ``await load()``)."""
        self.lazy = False
        """Whether reading it needs ``await session.load()`` (``lazy=True``, a store's I/O)."""
        self.key: str | None = None
        """Server-side: the key the request's cookie held, once it named a live session."""
        self.record: Any = None
        """What the cookie opened to: the stored record (server-side), or the sealed state's
        plaintext (client-side); ``None`` for a new session."""
        self.resendable: tuple[str, str] | None = None
        """The request's session cookie as ``(plaintext, sealed value)``, when the current
        key sealed it: a response that sends the same plaintext sends it as it came."""
        self.reissue: bool | str = False
        """Whether an older key of the ring sealed the cookie (it goes back under the current);
        ``"rotate"`` (``engine.ROTATE``): the key is due for rotation (it goes back as a new
        key)."""
        self.created: float | None = None
        self.expires: float | None = None
        self.lifetime: float | None = None
        """The session's own lifetime (``set_expiry``), as stored or as this request chose:
        seconds, 0 for a browser session, ``None`` for the middleware's lifecycle."""
        self.discarded = False
        """Whether nothing of this request is stored (``Session.discard_changes``: CSRF)."""
        self.ended: EndedReason | None = None
        """Why the session the cookie named has ended (``Session.ended_reason``)."""
        self.renewed: str | None = None
        """The id of the session the cookie named, when a login had renewed it to another key:
        this request's session is empty, and neither stores a change nor sends a cookie."""
        self.device: Any = None
        """Device binding's part of the request (``sessionware.dbsc``), when it is configured."""
        self.device_requested = False
        """Whether ``bind_device()`` was called since the last write (device binding's hook)."""
        self.indexes: dict[str, str | None] | None = None
        """The indexes ``Session.index`` changed since the last write (``None``: none)."""
        self.decided: Outcome | None = None
        """The outcome the engine decided as the response started, while it stores it."""
        self.session = _new(self)
        if unread:
            _setitem(self.session, _UNREAD, None)

    def __repr__(self) -> str:
        live = self.record is not None
        return f"<Tracker {self.phase.name} cookies={len(self.cookies)} live={live}>"

    # -- phases ------------------------------------------------------------------------------

    def handle(self, event: Event, reason: str, refusal: type[SessionError] = SessionError) -> None:
        """Move to the phase ``event`` leads to (``TRANSITIONS``); ``reason`` is what the new
        phase's refusals say (``refusal`` the error they raise). An event the phase has no row
        for raises ``SessionError`` naming both."""
        phase = TRANSITIONS[self.phase].get(event)
        if phase is None:
            raise SessionError(
                f"a session in phase {self.phase.name} cannot take event {event.name}"
            )
        if phase is not self.phase or event is Event.ENDED:
            self.reason, self.refusal = reason, refusal
        self.phase = phase
        if phase is _LATE:  # from here, a later use is what asks for the state to be encoded
            self.session._accessed = False

    def allow_write(self) -> None:
        """Let a write through in the current phase, or raise saying why it cannot be stored."""
        if self.phase is _CLOSED:
            raise self.refusal(self.reason)

    def allow_new_key(self) -> None:
        """Refuse ``renew()``/``bind_device()`` once the response head went out."""
        if self.phase is not _OPEN:
            raise self.refusal(self.reason)

    # -- the engine's operations on the session ---------------------------------------------

    def fill(
        self,
        session: Session,
        state: Mapping[str, Any],
        *,
        user: str | None = None,
        origin: str | None = None,
        key: str | None = None,
        id: str | None = None,
        adopted: bool = False,
    ) -> None:
        """The state arrived (``origin``: the envelope it was decoded from); the session has
        been read now, and not used yet. ``adopted``: it came from another library's session
        cookie (``adopt=``), so it is this request's change, stored as a new session (a new
        key, as at a login) by the status table like any other change."""
        _clear(session)
        _update(session, state)
        session._key, session._id, session._user = key, id, user
        _set_origin(session, origin)
        self.unread = self.lazy = False
        if adopted:
            session._status = _CHANGED
            session._accessed = session._cleared = True

    def state(self) -> dict[str, Any]:
        """The state as a plain dict of what is stored (the codec's JSON values), without
        counting as a use of the session."""
        state = dict(_items(self.session))
        codec = _codec_of(self)
        return state if codec is None else codec.encode_state(state)

    @property
    def user(self) -> str | None:
        """The user the session is bound to now."""
        return self.session._user

    def persists(self, status_code: int) -> bool:
        """Whether a response with ``status_code`` stores the session's changes: not for a
        5xx (Django's rule), nor for a request whose changes were discarded (CSRF)."""
        return status_code < 500 and not self.discarded

    def outcome(self, status_code: int, delta: bool = True) -> Outcome:
        """What the request did to the session, as its response starts: encoded at most once,
        and only when a used session holds containers (a change in place then counts).
        ``delta=False``: no ``changes`` are worked out (a store of the whole state: cookies).

        Raises ``SessionError`` naming the key whose value was changed into something that is
        not JSON."""
        session = self.session
        persist = self.persists(status_code)
        if not session._accessed:
            return _UNUSED if persist else _UNUSED_NOT_STORED
        status = session._status
        if not persist or status is _PURGED:
            return _outcome(Outcome, (status, persist, True, _NO_CHANGES, None))
        if status is _UNCHANGED and session._scalars_only and not session._user_changed:
            return _ONLY_READ
        status, changes, state_json = _changes(session, status, delta)
        return _outcome(Outcome, (status, persist, True, changes, state_json))

    def late_outcome(self) -> Outcome | None:
        """After the response head: the changes made since, or ``None`` when there are none
        (a session not used since costs no encode)."""
        session = self.session
        if not session._accessed or self.phase is not _LATE:
            return None
        outcome = self.outcome(200)
        if outcome[0] is _UNCHANGED:
            session._accessed = False  # checked up to here: only a later use asks again
            return None
        return outcome

    def rebase(self, key: str | None, id: str | None, state_json: str | None) -> None:
        """The session was just stored (under ``key``), its state being ``state_json``: track
        changes from here on (what another request merged in is not this one's change)."""
        session = self.session
        session._key, session._id = key, id
        _set_origin(session, None if state_json is None else f"{ENVELOPE_HEAD}{state_json}}}")
        session._status = _UNCHANGED
        session._cleared = session._user_changed = False
        session._set = session._removed = session._updates = self.indexes = None
        session._lifetime = _KEEP
        if self.phase is _LATE:
            session._accessed = False

    def release(self) -> None:
        """The request is over: nothing written to its session now can be stored. The tracker
        lets go of the session (which keeps the tracker, to read its state if it is used after
        all), so neither keeps the other alive."""
        if self.phase is not _CLOSED:
            self.handle(Event.SEALED, _REQUEST_OVER)
        del self.session


def _changes(
    session: Session, status: SessionStatus, delta: bool
) -> tuple[SessionStatus, Changes, str | None]:
    """The effective status, the delta to store (``delta``) and the state's JSON (one
    encode)."""
    origin = session._origin
    try:
        codec = session._tracker.engine.codec
    except AttributeError:  # a standalone session, or a test's tracker without an engine
        codec = None
    state_json = _encode_state(session, codec)
    user = session._user if session._user_changed else KEEP
    if (
        status is _UNCHANGED
        and user is KEEP
        and (origin is None or state_unchanged(origin, state_json))
    ):
        return status, _NO_CHANGES, state_json
    if not delta:  # the whole state is stored: any difference from what came is a change
        return (_CHANGED if status is _UNCHANGED else status), _NO_CHANGES, state_json
    mutated = _mutated(session, origin, codec)
    if status is _UNCHANGED:
        if not mutated and user is KEEP:
            return status, _NO_CHANGES, state_json
        status = _CHANGED
    if session._cleared:
        state = dict(_items(session))
        encoded = state if codec is None else codec.encode_state(state)
        return status, Changes.replace(encoded, user, session._lifetime), state_json
    written = (session._set or set()) | mutated
    updates = session._updates
    set_ = {key: _getitem(session, key) for key in written if _contains(session, key)}
    changes = Changes(
        set=set_ if codec is None else codec.encode_state(set_),
        removed=frozenset(session._removed or ()),
        user=user,
        updates=(
            MappingProxyType(
                {
                    k: tuple(v) if codec is None else tuple(map(codec.encode_update, v))
                    for k, v in updates.items()
                    if k not in written
                }
            )
            if updates
            else _NO_UPDATES
        ),
    )
    if session._lifetime is not _KEEP:
        changes = changes._replace(lifetime=session._lifetime)
    return status, changes, state_json


def _encode_state(session: Session, codec: TaggedJSON | None) -> str:
    try:
        state = dict(_items(session))
        return check_value(state if codec is None else codec.encode_state(state), depth=False)
    except (TypeError, ValueError, RecursionError):
        pass
    for key, value in _items(session):
        try:
            check_value(value if codec is None else codec.encode(value))
        except (TypeError, ValueError, RecursionError) as exc:
            raise SessionError(
                f"the value under session key {key!r} was changed in place into something JSON"
                f" cannot hold ({_why(exc)}); store only JSON types"
            ) from None
    raise SessionError("the session state cannot be stored as JSON")  # pragma: no cover


def _why(exc: BaseException) -> str:
    """An encoder's complaint without any of the value in it."""
    text = str(exc)
    return text if isinstance(exc, TypeError) and text.startswith("Object of type") else text[:80]


def _mutated(session: Session, origin: str | None, codec: TaggedJSON | None) -> set[str]:
    """Keys not written through the session whose container value differs from the loaded
    one: each such value is encoded once and compared with its text in ``origin`` (encoding
    the loaded value too only where the texts differ, or ``origin`` is not an envelope)."""
    written = session._set or ()
    updated = session._updates or ()
    candidates = [
        key
        for key, value in _items(session)
        if type(value) in _CONTAINERS and key not in written and key not in updated
    ]
    if not candidates or origin is None:
        return set()
    members = state_members(origin)
    if members is None:
        try:
            original = decode_state(origin)
        except ValueError:  # pragma: no cover - it decoded once already
            return set(candidates)
        members = {key: (0, 0, value) for key, value in original.items()}
    mutated = set()
    for key in candidates:
        member = members.get(key)
        if member is None:
            mutated.add(key)
            continue
        start, end, loaded = member
        value = _getitem(session, key)
        text = check_value(value if codec is None else codec.encode(value), depth=False)
        if end - start == len(text) and origin.startswith(text, start):
            continue
        if check_value(loaded, depth=False) != text:
            mutated.add(key)
    return mutated


class _Detached(Tracker):
    """The tracker of every standalone ``Session()``: always open, nothing to read, no request."""

    def __init__(self) -> None:
        self.phase = _OPEN
        self.unread = self.lazy = self.discarded = False
        self.ended = self.device = self.created = self.expires = self.lifetime = None

    def handle(self, event: Event, reason: str, refusal: type[SessionError] = SessionError) -> None:
        raise SessionError("a standalone Session() belongs to no request")


_DETACHED: Tracker = _Detached()


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise SessionInsertError(f"session keys are str, not {type(key).__name__}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise SessionInsertError(
                "a session key holds a lone surrogate, which is not valid UTF-8"
            ) from None


def _storable(key: str, value: Any, tracker: Tracker) -> Any:
    """``value`` as the session keeps it: itself, or a pydantic model's ``model_dump(mode=
    "json")``. Refuse at the call what could not be stored; scalars are checked without
    encoding."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return value
    elif (
        value is None
        or kind is bool
        or (kind is int and -_INT_BOUND < value < _INT_BOUND)
        or (kind is float and math.isfinite(value))
    ):
        return value
    codec = _codec_of(tracker)
    try:
        check_value(value if codec is None else codec.encode(value))
        return value
    except TypeError as exc:
        dump = getattr(value, "model_dump", None)  # a pydantic model: its JSON form is stored
        if dump is None or isinstance(value, type):
            raise SessionInsertError(f"cannot store session key {key!r}: {_why(exc)}") from None
    except (ValueError, RecursionError) as exc:
        raise SessionInsertError(f"cannot store session key {key!r}: {_why(exc)}") from None
    try:
        value = dump(mode="json")
        check_value(value)
    except Exception as exc:
        raise SessionInsertError(f"cannot store session key {key!r}: {_why(exc)}") from None
    return value


def _codec_of(tracker: Tracker) -> TaggedJSON | None:
    """The codec of the middleware the session belongs to (``None``: plain JSON)."""
    return getattr(getattr(tracker, "engine", None), "codec", None)


def check_index(name: Any, value: Any) -> None:
    """Refuse an index a store could not hold (``Session.index``): a name of 1 to 32
    ``[a-z0-9_]`` starting with a letter, not ``"user"``; a value of 1 to ``MAX_INDEX_VALUE``
    printable characters, or ``None``."""
    if not isinstance(name, str) or not _INDEX_NAME.fullmatch(name):
        raise ValueError(
            f"an index name is 1 to 32 of [a-z0-9_], starting with a letter: not {name!r}"
        )
    if name == "user":
        raise ValueError("the user index is bind_user()'s: call session.bind_user(user_id)")
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"index values are str, not {type(value).__name__}")
    if not value or len(value) > MAX_INDEX_VALUE or not value.isprintable():
        raise ValueError(
            f"an index value is 1 to {MAX_INDEX_VALUE} printable characters (no control characters)"
        )


def check_user_id(user_id: Any) -> None:
    """Refuse a user id a store's index could not hold (``state.user_id_problem``: the rule
    records read are held to as well)."""
    problem = user_id_problem(user_id)
    if problem is not None:
        raise SessionInsertError(problem)


# Held in an unread session's dict storage, so C code that reads dicts (json's encoder checks
# the size before it calls items()) takes the slow path through this class, which reads it.
_UNREAD = "\x00sessionware: not read yet"
_LAZY = (
    "this session is loaded lazily: `await session.load()` (or use the SessionDep dependency)"
    " before reading or writing it"
)
_LIFETIME_LATE = (
    "set_expiry() changes the session's cookie, which went out with the response head: call it"
    " before the response starts"
)
_REQUEST_OVER = (
    "the session's request is over: nothing written to it now can be stored (write to the"
    " session before the response ends)"
)
_NO_CHANGES = Changes()
_outcome = tuple.__new__  # Outcome(...) without the namedtuple's Python-level __new__
_UNUSED = Outcome(SessionStatus.UNCHANGED, True, False, _NO_CHANGES, None)
_UNUSED_NOT_STORED = Outcome(SessionStatus.UNCHANGED, False, False, _NO_CHANGES, None)
_ONLY_READ = Outcome(SessionStatus.UNCHANGED, True, True, _NO_CHANGES, None)
_NO_UPDATES: Mapping[str, tuple[Update, ...]] = MappingProxyType({})
_INT_BOUND = 2**63
"""Integers strictly inside ±2**63 need no encoding to be checked (every JSON reader keeps them)."""
_PURGED = SessionStatus.PURGED
_UNCHANGED = SessionStatus.UNCHANGED
_CHANGED = SessionStatus.CHANGED
_RENEWED = SessionStatus.RENEWED

# The dict's own methods, for reading and writing the state without counting as a use.
_getitem = dict.__getitem__
_setitem = dict.__setitem__
_contains = dict.__contains__
_get = dict.get
_pop = dict.pop
_len = dict.__len__
_keys = dict.keys
_items = dict.items
_clear = dict.clear
_update = dict.update
_eq = dict.__eq__


@functools.lru_cache(maxsize=256)
def _adapter(type_: Any) -> Any:
    """pydantic's validator for ``type_`` (building one is costly), or ``None`` without pydantic."""
    try:
        from pydantic import TypeAdapter
    except ImportError:  # pragma: no cover - exercised where pydantic is absent
        return None
    return TypeAdapter(type_)


def _validate(value: Any, type_: type[T]) -> T:
    adapter = _adapter(cast(Any, type_))
    if adapter is None:  # pragma: no cover - exercised where pydantic is absent
        if dataclasses.is_dataclass(type_) and isinstance(value, dict):
            return cast(T, type_(**value))
        if type_ is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # type: ignore[return-value]
        if not isinstance(value, type_) or (type_ is int and isinstance(value, bool)):
            raise TypeError(f"{json.dumps(value)[:40]} is not a {type_.__name__}") from None
        return value
    result: T = adapter.validate_python(value, strict=type_ in (int, str, bool))
    return result
