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

from sessionware.state import check_value
from sessionware.stores.base import Changes

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

__all__ = [
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


class SessionError(Exception):
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

    __slots__ = (
        "_accessed",
        "_cleared",
        "_discarded",
        "_frozen",
        "_key",
        "_late",
        "_loader",
        "_opener",
        "_removed",
        "_set",
        "_snapshot",
        "_status",
        "_user",
    )
    __hash__ = None

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        super().__init__(state or ())
        self._status = SessionStatus.UNCHANGED
        self._accessed = False
        self._cleared = False
        self._discarded = False
        self._set: set[str] = set()
        self._removed: set[str] = set()
        self._snapshot: dict[str, str] | None = None
        self._frozen: str | None = None
        self._loader: Callable[[], Awaitable[None]] | None = None
        self._opener: Callable[[], None] | None = None
        self._late: str | None = None
        self._key: str | None = None
        self._user: str | None = None

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
        self._read()
        return self._key

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to with ``bind_user``, if any."""
        self._read()
        return self._user

    def bind_user(self, user_id: str | None) -> None:
        """Tie the session to ``user_id`` (``None`` unties it), so a server-side store can list
        and end a user's sessions (``store.sessions_for``, ``store.delete_all_for``)."""
        if user_id is not None and not isinstance(user_id, str):
            raise SessionInsertError(f"user ids are str, not {type(user_id).__name__}")
        if self._status is SessionStatus.PURGED or user_id == self._user:
            return
        self._write()
        self._user = user_id

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
            opener, self._opener = self._opener, None
            _clear(self)
            opener()
        loader, self._loader = self._loader, None
        if loader is not None:
            _clear(self)
            try:
                await loader()
            except BaseException:
                self._loader = loader
                raise
        return self

    def _read(self) -> None:
        """Note that the session was used (for Vary, and to notice in-place changes)."""
        if self._accessed:
            return
        if self._opener is not None:
            opener, self._opener = self._opener, None
            _clear(self)
            opener()
        if self._loader is not None:
            raise SessionNotLoadedError(
                "this session is loaded lazily: `await session.load()` (or use the"
                " SessionDep dependency) before reading or writing it"
            )
        self._accessed = True
        self._take_snapshot()

    def _take_snapshot(self) -> None:
        # Values that can be mutated in place are remembered as JSON, to notice such changes.
        self._snapshot = {
            key: check_value(value) for key, value in _items(self) if isinstance(value, _CONTAINERS)
        }

    def __getitem__(self, key: str) -> Any:
        self._read()
        return _getitem(self, key)

    def __contains__(self, key: object) -> bool:
        self._read()
        return _contains(self, key)

    def __iter__(self) -> Iterator[str]:
        self._read()
        return iter(list(_keys(self)))

    def __reversed__(self) -> Iterator[str]:
        self._read()
        return iter(list(_keys(self))[::-1])

    def __len__(self) -> int:
        self._read()
        return _len(self)

    def __eq__(self, other: object) -> bool:
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
        self._read()
        return dict(_items(self))

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.copy() | other  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return other | self.copy()  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        self._read()
        return _get(self, key, default)

    def contains_key(self, key: str) -> bool:
        """Whether ``key`` is in the session."""
        return key in self

    def entries(self) -> Mapping[str, Any]:
        """A read-only view of the whole state."""
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
        self._read()
        if self._status is SessionStatus.UNCHANGED:
            self._status = SessionStatus.CHANGED

    def insert(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``; a no-op after ``purge()``.

        Raises ``SessionInsertError`` before changing anything if the value cannot be stored.
        """
        if not isinstance(key, str):
            raise SessionInsertError(f"session keys are str, not {type(key).__name__}")
        try:
            check_value(value)
        except (TypeError, ValueError) as exc:
            raise SessionInsertError(f"cannot store session key {key!r}: {exc}") from exc
        if self._status is SessionStatus.PURGED:
            return
        self._write()
        _setitem(self, key, value)
        self._set.add(key)
        self._removed.discard(key)

    __setitem__ = insert

    def remove(self, key: str) -> Any:
        """Remove ``key`` and return its value (``None`` if absent); a no-op after ``purge()``.

        As actix, the session becomes ``CHANGED`` even when the key was absent.
        """
        if self._status is SessionStatus.PURGED:
            return None
        self._write()
        value = _pop(self, key, None)
        self._removed.add(key)
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
        if self._status is SessionStatus.PURGED:
            return
        self._write()
        _clear(self)
        self._cleared = True
        self._set.clear()
        self._removed.clear()

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
        self._read()
        self._status = SessionStatus.PURGED
        _clear(self)

    def renew(self) -> None:
        """Keep the state under a new key (call it at login, to prevent session fixation).

        The CSRF secret is dropped, so a token issued before the login is no longer accepted.
        """
        if self._status is SessionStatus.PURGED:
            return
        if self._late:
            raise SessionError(self._late)
        self._write()
        if _contains(self, CSRF_KEY):
            self.remove(CSRF_KEY)
        self._status = SessionStatus.RENEWED

    # -- for the middleware ------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """The state as a plain dict, without counting as a use of the session."""
        return dict(_items(self))

    def _fill(self, state: Mapping[str, Any], key: str | None, user: str | None) -> None:
        """Take what the store returned (the session has not been used yet); it is loaded now."""
        self._loader = self._opener = None
        _clear(self)
        _update(self, state)
        self._key = key
        self._user = user

    def _discard(self) -> None:
        """Persist nothing for this request, whatever its status (a refused request: CSRF)."""
        self._discarded = True

    def _allow_late_writes(self, reason: str) -> None:
        """After the response head: changes are still saved, but a new key (renew) is refused."""
        self._late = reason

    def _rebase(self, key: str | None) -> None:
        """The session was just persisted (under ``key``): track changes from here on."""
        self._key = key
        self._status = SessionStatus.UNCHANGED
        self._cleared = False
        self._set.clear()
        self._removed.clear()
        if self._accessed:
            self._take_snapshot()

    def _defer_open(self, opener: Callable[[], None]) -> None:
        """Run ``opener`` (no I/O) at the session's first use, to fill it."""
        self._opener = opener
        _setitem(self, _PENDING, None)

    def _defer(self, loader: Callable[[], Awaitable[None]]) -> None:
        """Load through ``loader`` at the first ``await load()``; refuse access until then."""
        self._loader = loader
        _setitem(self, _PENDING, None)

    def _freeze(self, reason: str) -> None:
        """Refuse further writes, saying ``reason`` (the response has gone out)."""
        self._frozen = reason

    def _mutated_in_place(self) -> set[str]:
        """Keys whose loaded container value differs now from when it was first read."""
        if not self._snapshot:
            return set()
        return {
            key
            for key, before in self._snapshot.items()
            if _contains(self, key)
            and key not in self._set
            and _json(_getitem(self, key)) != before
        }

    def _changes(self) -> tuple[SessionStatus, Changes]:
        """The effective status (in-place mutations count as a change) and the delta to store."""
        if not self._accessed:  # nothing can have changed a session nobody touched
            return self._status, _NO_CHANGES
        if (  # read, not written, and no container that could have changed in place
            self._status is SessionStatus.UNCHANGED
            and not self._snapshot
            and not self._set
            and not self._removed
            and not self._cleared
        ):
            return self._status, _NO_CHANGES
        mutated = self._mutated_in_place()
        status = self._status
        if status is SessionStatus.UNCHANGED and mutated:
            status = SessionStatus.CHANGED
        if self._cleared:
            return status, Changes.replace(self._state())
        written = self._set | mutated
        return status, Changes(
            set={key: _getitem(self, key) for key in written if _contains(self, key)},
            removed=frozenset(self._removed),
        )


_NO_CHANGES = Changes()
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


def _json(value: Any) -> str:
    try:
        return check_value(value)
    except (TypeError, ValueError):
        return f"<unserialisable {id(value)}>"


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
