"""SessionAdmin: listing and ending sessions from outside the request that holds them.

The middleware owns one, bound to its own ``Repository``, so what it does reports through the
middleware's ``on_event`` and keeps its clock and tombstones: ``get_admin(request)`` in a
handler (a Request, a WebSocket or an ASGI scope), ``SessionAdminDep`` in FastAPI. A job or a
script builds ``SessionAdmin(store, ...)`` with the options the middleware takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sessionware.config import BrowserSession, PersistentSession
from sessionware.errors import NotSupportedError
from sessionware.events import EventHook, SessionEnded, emit
from sessionware.repository import Repository
from sessionware.session import Session, check_index
from sessionware.stores import base
from sessionware.stores.base import TOMBSTONE_TTL, RecordStore, SessionInfo
from sessionware.stores.cookie import CookieSessionStore

__all__ = ["ADMIN_KEY", "DEFAULT_LIMIT", "SessionAdmin", "admin_key", "get_admin"]

DEFAULT_LIMIT = 1000
"""How many sessions ``sessions_for`` lists at most unless told otherwise."""

_NO_INDEX = (
    "the cookie store keeps no list of a user's sessions and cannot end them (they live in the"
    " browsers): use a server-side store (Redis, SQLite, PostgreSQL, MariaDB, memory)"
)
_NOT_INSTALLED = (
    "no session admin in this request: add sessionware.SessionMiddleware to the app, e.g."
    " app.add_middleware(SessionMiddleware, store=..., key=...)"
)
_NOT_INSTALLED_NAMED = (
    "no session admin for the session named {name!r} in this request: add a"
    " sessionware.SessionMiddleware with that name, e.g. app.add_middleware(SessionMiddleware,"
    " name={name!r}, store=..., key=...)"
)
ADMIN_KEY = "session_admin"
"""The scope key of the default session's ``SessionAdmin``."""


def admin_key(name: str) -> str:
    """The scope key of the ``SessionAdmin`` of the session named ``name`` (a ``.`` cannot be
    in a session's name, so no session's own key is ever one of these)."""
    return ADMIN_KEY if name == "session" else f"{name}.admin"


class SessionAdmin:
    """Lists and ends sessions: a user's (``bind_user``), those filed under another index
    (``session.index``), or one by its id (``session.id``).

    ``store`` is a record store (or the middleware's ``Repository``); ``clock``, ``on_event``,
    ``tombstone_ttl`` and ``lifecycle`` mean what they mean to ``SessionMiddleware``. A store
    without an index (memcached, the cookie store) raises ``NotSupportedError`` for them all.
    """

    def __init__(
        self,
        store: RecordStore | Repository | CookieSessionStore,
        *,
        clock: Callable[[], float] = time.time,
        on_event: EventHook | None = None,
        tombstone_ttl: timedelta = TOMBSTONE_TTL,
        lifecycle: BrowserSession | PersistentSession | None = None,
    ) -> None:
        if isinstance(store, Repository):
            self.repository: Repository | None = store
        elif isinstance(store, CookieSessionStore):
            self.repository = None
        else:
            given: object = store
            if not isinstance(given, RecordStore) or isinstance(given, type):
                raise TypeError(f"SessionAdmin needs a session store, not {given!r}")
            self.repository = Repository(
                given, clock=clock, on_event=on_event, tombstone_ttl=tombstone_ttl
            )
        self.clock = self.repository.clock if self.repository is not None else clock
        self.on_event = on_event if self.repository is None else self.repository.on_event
        max_age = None if lifecycle is None else lifecycle.max_age
        self._max_age = None if max_age is None else max_age.total_seconds()

    def _repository(self) -> Repository:
        """The repository, when its store keeps a user index; else ``NotSupportedError``."""
        if self.repository is None:
            raise NotSupportedError(_NO_INDEX)
        self.repository.require_index()
        return self.repository

    async def sessions_for(self, user_id: str, *, limit: int = DEFAULT_LIMIT) -> list[SessionInfo]:
        """The user's live sessions, oldest first: at most ``limit`` of them (``DEFAULT_LIMIT``,
        1,000, unless told)."""
        return await self.sessions_where("user", user_id, limit=limit)

    async def sessions_where(
        self, name: str, value: str, *, limit: int = DEFAULT_LIMIT
    ) -> list[SessionInfo]:
        """The live sessions filed under ``(name, value)`` with ``session.index(name, value)``
        (``"user"``: ``bind_user``), oldest first: at most ``limit`` of them."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        _check_where(name, value)
        infos = await self._repository().sessions_where(name, value)
        now = self.clock()
        live = [info for info in infos if not self._lapsed(info, now)]
        return live[:limit]

    def _lapsed(self, info: SessionInfo, now: float) -> bool:
        if info.expires is not None and info.expires <= now:
            return True
        max_age = self._max_age
        return max_age is not None and info.created is not None and now - info.created >= max_age

    async def end_all_for(self, user_id: str, *, keep: Session | str | None = None) -> int:
        """End every session of the user but ``keep`` (the current ``Session``, or a session
        id, ``session.id``: never a key); how many were live."""
        return await self._end_where("user", user_id, keep, "end_all_for")

    async def end_where(self, name: str, value: str, *, keep: Session | str | None = None) -> int:
        """End every session filed under ``(name, value)`` (``session.index``) but ``keep``
        (a ``Session`` or its id); how many were live. E.g. an OpenID Connect back-channel
        logout: ``end_where("oidc_sid", sid)``."""
        return await self._end_where(name, value, keep, "end_where")

    async def _end_where(
        self, name: str, value: str, keep: Session | str | None, operation: str
    ) -> int:
        _check_where(name, value)
        repository = self._repository()
        spared = self._kept_id(keep)
        ended = await repository.end_where(name, value, spared)
        for _ in range(ended):
            self._emit(operation)
        return ended

    async def end_session(self, session_id: str) -> bool:
        """End the session filed under ``session_id`` (``SessionInfo.id``, ``session.id``);
        whether it was live. Anything else ends nothing."""
        repository = self._repository()
        given: object = session_id
        if not isinstance(given, str) or not repository.is_id(session_id):
            return False
        ended = await repository.end(session_id)
        if ended:
            self._emit("end_session")
        return ended

    def id_for(self, key_or_id: str) -> str:
        """The id of a session named by its key or its id (the first version's ``except_key``
        took either)."""
        repository = self._repository()
        if repository.is_id(key_or_id):
            return key_or_id
        return repository.public_id(repository.id_of(key_or_id))

    def _kept_id(self, keep: Session | str | None) -> str | None:
        if keep is None:
            return None
        if isinstance(keep, Session):
            return keep.id
        repository = self._repository()
        given: object = keep
        if not isinstance(given, str) or not repository.is_id(keep):
            raise ValueError(
                "keep= takes the Session to keep or its id (session.id), never its key"
            )
        return keep

    def _emit(self, operation: str) -> None:
        if self.on_event is not None:
            emit(self.on_event, SessionEnded(operation))


def _check_where(name: str, value: str) -> None:
    """An index a session could be filed under, else ``ValueError`` saying what it takes."""
    given: object = value
    if name != "user":
        check_index(name, value)
    if not isinstance(given, str) or not value:
        raise ValueError(f"an index value is a non-empty str, not {value!r}")


base.ADMIN[:] = [SessionAdmin]


def get_admin(request_or_scope: Any, name: str = "session") -> SessionAdmin:
    """The ``SessionAdmin`` of the middleware serving a request (a Starlette/FastAPI/Litestar
    ``Request``, a WebSocket, or an ASGI scope): the default session's, or that of the
    ``SessionMiddleware(name=name)``."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    admin = scope.get(admin_key(name)) if isinstance(scope, Mapping) else None
    if not isinstance(admin, SessionAdmin):
        raise RuntimeError(
            _NOT_INSTALLED if name == "session" else _NOT_INSTALLED_NAMED.format(name=name)
        )
    return admin
