"""Session: one request's session state and its status machine (SPEC §1).

Status precedence, as actix: ``PURGED`` is terminal (inserts, removals, clear and renew after a
purge do nothing); ``RENEWED`` is sticky against ``CHANGED``. One deliberate difference:
``update``/``update_or`` mark the session ``CHANGED`` (actix forgets to, and loses the change).
The session also notices values mutated in place (``session["cart"].append(x)``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
from collections.abc import (
    Awaitable,
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from sessionware.errors import SessionwareError
from sessionware.repository import KEEP, Changes
from sessionware.state import ENVELOPE_HEAD, check_value, decode_state, state_unchanged

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

__all__ = [
    "Seam",
    "Session",
    "SessionError",
    "SessionGetError",
    "SessionInsertError",
    "SessionNotLoadedError",
    "SessionStatus",
    "SessionUpdateError",
]

T = TypeVar("T")
CSRF_KEY = "_csrf"
"""The session key ``sessionware.csrf`` keeps its secret under; ``renew()`` drops it."""
_MISSING: Any = object()
_CONTAINERS = (dict, list)


class SessionStatus(enum.Enum):
    """What happened to a session during a request; the middleware acts on it (SPEC §2.3)."""

    UNCHANGED = "unchanged"
    CHANGED = "changed"
    PURGED = "purged"
    RENEWED = "renewed"


class SessionError(SessionwareError):
    """Base of the errors a ``Session`` raises."""


class SessionGetError(SessionError):
    """A stored value could not be read as the type asked for."""


class SessionInsertError(SessionError, TypeError):
    """A value is not JSON-serialisable (or not storable as JSON); the session is unchanged."""


class SessionUpdateError(SessionError):
    """``update``'s function failed, or returned a value that cannot be stored."""


class SessionNotLoadedError(SessionError, RuntimeError):
    """A lazily loaded session was used before ``await session.load()``."""


class Session(dict[str, Any]):
    """The session of one request: a ``dict`` of JSON values with a status.

    ``Session()`` is a standalone empty session; the middleware makes the one handlers see.
    Values must be JSON-serialisable (checked at insert). Writing through the dict methods and
    the actix-named ones has the same effect on ``status``. It is a real ``dict`` so that
    ``json.dumps(session)`` and ``JSONResponse(request.session)`` work as with Starlette's.
    """

    # Every field is a slot, set when the session is made (``_new``): CPython specializes reads
    # of slots, but not of instance attributes that fall back to a class-level default.
    __slots__ = (
        "__dict__",  # attributes of a caller's own still work, as on the first version's
        "__weakref__",
        "_accessed",
        "_cleared",
        "_device",
        "_discarded",
        "_ended",
        "_flat",
        "_frozen",
        "_held",
        "_id",
        "_key",
        "_late",
        "_loader",
        "_opener",
        "_origin",
        "_removed",
        "_set",
        "_status",
        "_user",
        "_user_changed",
    )
    _status: SessionStatus
    _accessed: bool
    _cleared: bool
    _set: set[str] | None
    _removed: set[str] | None
    _origin: str | None
    _flat: bool
    """Whether ``_origin`` holds no container a handler could change in place; past ``_reset``'s
    defaults, both are set together, only by ``_set_origin``."""
    _frozen: str | None
    _loader: Callable[[Session], Awaitable[object]] | None
    _opener: Callable[[Session, Any], None] | None
    _held: Any
    """What the engine keeps with the session between the request's two phases (the cookie
    store's engine: the cookie headers until opened, then what they opened to)."""
    _late: str | None
    _key: str | None
    _id: str | None
    _user: str | None
    _user_changed: bool
    _discarded: bool
    _ended: bool
    _device: bool | None  # DBSC: None = not configured, True = bind requested
    __hash__ = None

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        _reset(self)
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
        """The session's id at rest (the SHA-256 of its key): safe to show, e.g. to mark "this
        device" in ``store.sessions_for(user)``. ``None`` for a new session or the cookie store."""
        if not self._accessed:
            self._read()
        return self._id

    @property
    def ended_elsewhere(self) -> bool:
        """Whether the request's cookie named a session that has since been ended (signed out
        from another device, purged or renewed by another request): the session is now empty.
        Known while the ended session's tombstone lasts (five minutes by default)."""
        if not self._accessed:
            self._read()
        return self._ended

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to with ``bind_user``, if any."""
        if not self._accessed:
            self._read()
        return self._user

    def bind_user(self, user_id: str | None) -> None:
        """Tie the session to ``user_id`` (``None`` unties it), so a server-side store can list
        and end a user's sessions (``store.sessions_for``, ``store.delete_all_for``)."""
        if user_id is not None:
            _check_user(user_id)
        if self._status is _PURGED or user_id == self._user:
            return
        self._write()
        self._user = user_id
        self._user_changed = True

    def bind_device(self) -> None:
        """Offer the browser to bind this session to a key it keeps on the device (DBSC).

        The response carries ``Secure-Session-Registration``; a browser with DBSC registers, and
        from then on the session's cookie stops working within ``credential_ttl`` anywhere but
        on that device. Browsers without DBSC keep a normal session. Call it at login, after
        ``renew()``: it replaces any earlier binding with one to the device in front of you.
        """
        if self._device is None:
            raise SessionError(
                "device binding is not configured: pass device_binding=DeviceBinding() to"
                " SessionMiddleware (it needs a server-side store)"
            )
        if self._status is _PURGED:
            return
        if self._late:  # the registration header could no longer be sent
            raise SessionError(self._late)
        self._write()
        self._device = True

    @property
    def loaded(self) -> bool:
        """False only for a lazily loaded session before ``await session.load()``."""
        return self._loader is None

    async def load(self) -> Session:
        """Fetch the state from the store if that has not happened yet; return the session.

        Only needed with ``SessionMiddleware(lazy=True)``, where the store is not asked until the
        handler wants the session; the FastAPI dependency ``SessionDep`` calls it for you.
        """
        if self._opener is not None:
            Seam.open_pending(self)
        loader = self._loader
        if loader is not None:
            self._loader = None
            _clear(self)
            try:
                await loader(self)
            except BaseException:
                self._loader = loader
                raise
        return self

    def _read(self) -> None:
        """Note that the session was used (for Vary, and to notice in-place changes)."""
        if self._accessed:
            return
        if self._opener is not None:
            Seam.open_pending(self)
        if self._loader is not None:
            raise SessionNotLoadedError(
                "this session is loaded lazily: `await session.load()` (or use the"
                " SessionDep dependency) before reading or writing it"
            )
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
        if self._frozen:
            raise SessionError(self._frozen)
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
            _check_value(key, value)
        if self._status is _PURGED:
            return
        if self._frozen or not self._accessed or self._status is _UNCHANGED:
            self._write()
        _setitem(self, key, value)
        if self._set is None:
            self._set = {key}
        else:
            self._set.add(key)
        if self._removed:
            self._removed.discard(key)

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
        self._set = self._removed = None

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

        ``update(mapping_or_pairs, **kw)``: insert every item, as ``dict.update``.
        """
        if len(args) == 2 and isinstance(args[0], str) and callable(args[1]) and not kwargs:
            key, fn = args
            if key in self:
                self._apply(key, fn)
            return
        for key, value in dict(*args, **kwargs).items():
            self.insert(key, value)

    def update_or(self, key: str, default: Any, fn: Callable[[Any], Any]) -> None:
        """``update(key, fn)`` if ``key`` is present, else ``insert(key, default)``."""
        if key in self:
            self._apply(key, fn)
            return
        try:
            self.insert(key, default)
        except SessionInsertError as exc:
            raise SessionUpdateError(str(exc)) from exc

    def _apply(self, key: str, fn: Callable[[Any], Any]) -> None:
        try:
            self.insert(key, fn(_getitem(self, key)))
        except SessionInsertError as exc:
            raise SessionUpdateError(str(exc)) from exc

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    def purge(self) -> None:
        """End the session: its record is deleted and the client told to drop the cookie."""
        if self._frozen:
            raise SessionError(self._frozen)
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
        if self._late:
            raise SessionError(self._late)
        self._write()
        if _contains(self, CSRF_KEY):
            self.remove(CSRF_KEY)
        self._status = _RENEWED


_new_dict = dict.__new__


def _reset(session: Session) -> None:
    """Set every field of a new session to its default."""
    session._status = _UNCHANGED
    session._accessed = session._cleared = session._user_changed = False
    session._discarded = session._ended = False
    session._set = session._removed = session._origin = session._frozen = None
    session._flat = True  # what _set_origin(session, None) sets
    session._loader = session._opener = session._held = session._late = None
    session._key = session._id = session._user = session._device = None


def _new() -> Session:
    """``Session()`` without its ``__init__``'s call overhead."""
    session = _new_dict(Session)
    _reset(session)
    return session


def _set_origin(session: Session, origin: str | None) -> None:
    """Note the envelope the state was decoded from, and whether it holds no container (its
    state is ``{}`` or scalars: then only writes can change the session; ``only_read`` asks)."""
    session._origin = origin
    session._flat = origin is None or (
        origin.count("{") == 2 and "[" not in origin and origin.startswith(ENVELOPE_HEAD)
    )


class Seam:
    """The one interface between a ``Session`` and the engine: fill it, take its changes,
    rebase or freeze it. Nothing outside this module touches a session's private members."""

    new = staticmethod(_new)

    @staticmethod
    def state(session: Session) -> dict[str, Any]:
        """The state as a plain dict, without counting as a use of the session."""
        return dict(_items(session))

    @staticmethod
    def user(session: Session) -> str | None:
        return session._user

    @staticmethod
    def fill(
        session: Session,
        state: Mapping[str, Any],
        key: str | None = None,
        id: str | None = None,
        user: str | None = None,
        origin: str | None = None,
    ) -> None:
        """Take what was loaded (the session has not been used yet); it is loaded now.

        ``origin`` is the envelope the state was decoded from, to tell later what changed."""
        if session._loader is not None or session._opener is not None:
            session._loader = session._opener = None
        _clear(session)
        _update(session, state)
        if key is not None or session._key is not None:
            session._key, session._id = key, id
        session._user = user
        _set_origin(session, origin)

    @staticmethod
    def take(
        session: Session, state: Mapping[str, Any], user: str | None, origin: str | None, held: Any
    ) -> None:
        """Fill the session from its deferred opener (``opening``), which runs on an emptied
        session: ``origin`` is the envelope the state came from; ``held`` what the engine keeps."""
        _update(session, state)
        session._user, session._held = user, held
        _set_origin(session, origin)

    @staticmethod
    def open_pending(session: Session) -> Any:
        """Run the session's deferred opener now, if it has not run, without counting as a use
        of the session; return what the engine holds with it."""
        opener = session._opener
        if opener is not None:
            session._opener = None
            _clear(session)
            opener(session, session._held)
        return session._held

    @staticmethod
    def mark_ended(session: Session) -> None:
        """The cookie named a session that has ended (``Session.ended_elsewhere``)."""
        session._ended = True

    @staticmethod
    def offer_device(session: Session) -> None:
        """Device binding is configured: ``bind_device()`` may be called (``sessionware.dbsc``)."""
        if session._device is None:
            session._device = False

    @staticmethod
    def take_device_request(session: Session) -> bool:
        """Whether ``bind_device()`` was called since the last write; it is answered now."""
        if session._device is not True:
            return False
        session._device = False
        return True

    @staticmethod
    def discard(session: Session) -> None:
        """Persist nothing for this request, whatever its status (a refused request: CSRF)."""
        session._discarded = True

    @staticmethod
    def discarded(session: Session) -> bool:
        return session._discarded

    @staticmethod
    def close_untouched(
        session: Session, persist: bool, touch: bool, late: bool, reason: str
    ) -> int:
        """At the response start, settle a session nothing used, in one call: ``0`` when it was
        used, or when ``touch`` (a due extension) applies to a request that persists (``persist``
        and not discarded); else ``1`` with later writes allowed (``late``, a persisting request)
        or ``2`` with the session frozen, both saying ``reason`` for a refused new key."""
        if session._accessed:
            return 0
        persist = persist and not session._discarded
        if persist and touch:
            return 0
        if persist and late:
            session._late = reason
            return 1
        session._frozen = reason
        return 2

    @staticmethod
    def only_read(session: Session) -> bool:
        """Whether the session is certainly unchanged without encoding it: nothing was written
        through it (the bound user included), and it is new or holds no container that could
        have changed in place."""
        return session._status is _UNCHANGED and not session._user_changed and session._flat

    @staticmethod
    def settled(session: Session) -> bool:
        """Whether the session certainly has nothing to store, known without encoding it
        (``changes`` would say UNCHANGED at once): unused, or unchanged and ``only_read``."""
        return not session._accessed or (session._status is _UNCHANGED and Seam.only_read(session))

    @staticmethod
    def close(
        session: Session, persist: bool, reason: str
    ) -> tuple[bool, bool, SessionStatus | None, str | None, Any]:
        """The response starts and nothing is written after it (client-side): freeze the
        session (saying ``reason``) and return, in one call, whether it was used, whether the
        request persists (``persist`` and not discarded), ``changes``' status and state JSON
        for a used session that persists (``None`` otherwise), and what the engine holds."""
        session._frozen = reason
        persist = persist and not session._discarded
        if not (session._accessed and persist):
            return session._accessed, persist, None, None, session._held
        if Seam.only_read(session):
            return True, True, _UNCHANGED, None, session._held
        status, _, state_json = Seam.changes(session, False)
        return True, True, status, state_json, session._held

    @staticmethod
    def allow_late_writes(session: Session, reason: str) -> None:
        """After the response head: changes are still saved, but a new key (renew) is refused."""
        session._late = reason

    @staticmethod
    def rebase(session: Session, key: str | None, id: str | None, state_json: str | None) -> None:
        """The session was just persisted (under ``key``), its state being ``state_json``:
        track changes from here on (what another request merged in is not this one's change)."""
        session._key, session._id = key, id
        _set_origin(session, None if state_json is None else f"{ENVELOPE_HEAD}{state_json}}}")
        session._status = _UNCHANGED
        session._cleared = session._user_changed = False
        session._set = session._removed = None

    @staticmethod
    def opening(opener: Callable[[Session, Any], None], held: Any) -> Session:
        """A new session that runs ``opener(session, held)`` (no I/O) at its first use, to fill
        it; ``held`` stays with the session for the engine (``close`` returns it)."""
        session = _new()
        session._opener, session._held = opener, held
        _setitem(session, _PENDING, None)
        return session

    @staticmethod
    def defer(session: Session, loader: Callable[[Session], Awaitable[object]]) -> None:
        """Load through ``loader(session)`` at the first ``await load()``; refuse access until
        then."""
        session._loader = loader
        _setitem(session, _PENDING, None)

    @staticmethod
    def pending(session: Session) -> bool:
        """Whether the session still waits to be opened or loaded (``opening``, ``defer``)."""
        return session._opener is not None or session._loader is not None

    @staticmethod
    def freeze(session: Session, reason: str) -> None:
        """Refuse further writes, saying ``reason`` (the response has gone out)."""
        session._frozen = reason

    @staticmethod
    def changes(session: Session, delta: bool = True) -> tuple[SessionStatus, Changes, str | None]:
        """The effective status (in-place mutations count), the delta to store, and the state
        as JSON when it had to be encoded (one encode, at the end, settles validity and changes).
        With ``delta=False`` (a backend that stores the whole state) no delta is built.

        Raises ``SessionError`` naming the key whose value was changed into something that is
        not JSON.
        """
        status = session._status
        if not session._accessed or status is _PURGED:
            return status, _NO_CHANGES, None
        if status is _UNCHANGED and Seam.only_read(session):
            return status, _NO_CHANGES, None
        origin = session._origin
        state_json = _encode_state(session)
        user = session._user if session._user_changed else KEEP
        if (
            status is _UNCHANGED
            and not session._user_changed
            and (origin is None or state_unchanged(origin, state_json))
        ):
            return status, _NO_CHANGES, state_json
        if not delta and status is not _UNCHANGED:
            return status, _NO_CHANGES, state_json
        mutated = _mutated(session, origin)
        if status is _UNCHANGED:
            if not mutated and user is KEEP:
                return status, _NO_CHANGES, state_json
            status = _CHANGED
        if not delta:
            return status, _NO_CHANGES, state_json
        if session._cleared:
            return status, Changes.replace(dict(_items(session)), user), state_json
        written = (session._set or set()) | mutated
        return (
            status,
            Changes(
                set={key: _getitem(session, key) for key in written if _contains(session, key)},
                removed=frozenset(session._removed or ()),
                user=user,
            ),
            state_json,
        )


def _encode_state(session: Session) -> str:
    try:
        return check_value(dict(_items(session)))
    except (TypeError, ValueError):
        pass
    for key, value in _items(session):
        try:
            check_value(value)
        except (TypeError, ValueError) as exc:
            raise SessionError(
                f"the value under session key {key!r} was changed in place into something JSON"
                f" cannot hold ({_why(exc)}); store only JSON types"
            ) from None
    raise SessionError("the session state cannot be stored as JSON")  # pragma: no cover


def _why(exc: BaseException) -> str:
    """An encoder's complaint without any of the value in it."""
    text = str(exc)
    return text if isinstance(exc, TypeError) and text.startswith("Object of type") else text[:80]


def _mutated(session: Session, origin: str | None) -> set[str]:
    """Keys not written through the session whose container value differs from the loaded one."""
    candidates = [
        key
        for key, value in _items(session)
        if type(value) in _CONTAINERS and not (session._set and key in session._set)
    ]
    if not candidates or origin is None:
        return set()
    try:
        original = decode_state(origin)
    except ValueError:  # pragma: no cover - it decoded once already
        return set(candidates)
    return {
        key
        for key in candidates
        if key not in original or check_value(original[key]) != check_value(_getitem(session, key))
    }


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


def _check_value(key: str, value: Any) -> None:
    """Refuse at the call what could not be stored; scalars are checked without encoding."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return
    elif (
        value is None
        or kind is bool
        or (kind is int and -_INT_BOUND < value < _INT_BOUND)
        or (kind is float and math.isfinite(value))
    ):
        return
    try:
        check_value(value)
    except (TypeError, ValueError) as exc:
        raise SessionInsertError(f"cannot store session key {key!r}: {_why(exc)}") from None


def _check_user(user_id: Any) -> None:
    if not isinstance(user_id, str):
        raise SessionInsertError(f"user ids are str, not {type(user_id).__name__}")
    if not user_id or len(user_id) > 256 or not user_id.isprintable():
        raise SessionInsertError(
            "a user id is 1 to 256 printable characters (no control characters)"
        )
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise SessionInsertError("a user id holds a lone surrogate, not valid UTF-8") from None


_NO_CHANGES = Changes()
_INT_BOUND = 2**63
"""Integers strictly inside ±2**63 need no encoding to be checked (every JSON reader keeps them)."""
_PURGED = SessionStatus.PURGED
_UNCHANGED = SessionStatus.UNCHANGED
_CHANGED = SessionStatus.CHANGED
_RENEWED = SessionStatus.RENEWED
# Held in an unloaded session's dict storage, so C code that reads dicts (json's encoder checks
# the size before calling items()) takes the slow path through this class and loads it first.
_PENDING = "\x00sessionware: not loaded yet"

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
