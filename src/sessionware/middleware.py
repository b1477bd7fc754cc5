"""SessionMiddleware: the pure-ASGI adapter that moves bytes between ASGI messages and the engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from sessionware.config import BrowserSession, CookieSettings, PersistentSession, SameSite
from sessionware.crypto import ContentSecurity, Key
from sessionware.engine import PersistError, SessionContext, SessionEngine
from sessionware.session import Session
from sessionware.stores.base import SessionStore

__all__ = ["SessionMiddleware", "get_session"]

logger = logging.getLogger("sessionware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NOT_INSTALLED = (
    "no session in this request: add sessionware.SessionMiddleware to the app, e.g."
    " app.add_middleware(SessionMiddleware, store=..., key=...)"
)


class SessionMiddleware:
    """Loads the session before the app runs (``scope["session"]``) and persists it after.

    Works for ``http`` and ``websocket`` scopes; anything else passes through untouched. When the
    store fails, the app is not run (load) or its response is replaced (save) by an empty 503;
    a state that cannot be stored gives an empty 500. Responses of 500 and above persist nothing.

    With ``lazy=True`` a server-side store is not asked until the handler calls
    ``await session.load()`` (``SessionDep`` does), so requests that ignore the session cost no
    store I/O; using the session before that raises ``SessionNotLoadedError``.
    """

    def __init__(
        self,
        app: Any,
        *,
        store: SessionStore,
        key: Key | None = None,
        keys: Sequence[Key] | None = None,
        cookie_name: str = "id",
        cookie_secure: bool = True,
        cookie_http_only: bool = True,
        cookie_same_site: SameSite | None = "lax",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_partitioned: bool = False,
        content_security: ContentSecurity = ContentSecurity.PRIVATE,
        lifecycle: BrowserSession | PersistentSession | None = None,
        lazy: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (key is None) == (keys is None):
            raise ValueError(
                "pass exactly one of key= (a sessionware.Key) or keys= (current key first, then"
                " older ones still accepted); Key.generate() makes one for development"
            )
        ring = [key] if key is not None else list(keys or ())
        if not ring or not all(isinstance(k, Key) for k in ring):
            raise TypeError(
                "keys= is an empty list: give at least one sessionware.Key, the current key"
                " first (Key.from_hex(...); `sessionware keygen` prints one)"
                if not ring
                else "key/keys must be sessionware.Key objects (see Key.from_hex)"
            )
        self.app: ASGIApp = app
        # The cookie store needs no I/O to load, so laziness would only cost.
        self.lazy = lazy and not store.holds_state_in_key
        self.engine = SessionEngine(
            store=store,
            keys=ring,
            security=content_security,
            cookie=CookieSettings(
                name=cookie_name,
                secure=cookie_secure,
                http_only=cookie_http_only,
                same_site=cookie_same_site,
                path=cookie_path,
                domain=cookie_domain,
                partitioned=cookie_partitioned,
            ),
            lifecycle=lifecycle if lifecycle is not None else BrowserSession(),
            clock=clock,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        engine = self.engine
        cookies, agent = [], None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.append(value)
            elif name == b"user-agent":
                agent = value
        context = engine.begin(cookies, agent)
        if engine.defer_open(context):
            pass  # the store loads without I/O: the session opens at its first use
        elif self.lazy:
            engine.defer(context)
        else:
            try:
                await engine.load(context)
            except PersistError as exc:
                logger.error("session not loaded: %s", exc)
                await _refuse(kind, send, exc.status_code)
                return
        scope["session"] = context.session
        sender = _Sender(engine, context, send)
        try:
            await self.app(scope, receive, sender)
        except PersistError as exc:  # a lazy load failed inside the handler
            if sender.started:
                raise
            logger.error("session not loaded: %s", exc)
            await _refuse(kind, send, exc.status_code)
            return
        if context.key is not None:  # changes made after the last message (background tasks)
            await sender.persist_late()


class _Sender:
    """Wraps ``send``: persists the session as the response starts and adds its headers; then
    saves later changes before each streamed message goes out (server-side stores only)."""

    def __init__(self, engine: SessionEngine, context: SessionContext, send: Send) -> None:
        self.engine, self.context, self.send = engine, context, send
        self.started = self.refused = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            original = message.get("headers", ())
            try:
                headers = await self.engine.finish(self.context, message["status"], original)
            except PersistError as exc:
                logger.error("session not saved: %s", exc)
                self.refused = True
                await _refuse("http", self.send, exc.status_code)
                return
            if headers is not original:  # the session added headers: a new message, theirs kept
                message = {**message, "headers": headers}
        elif kind == "websocket.accept":
            self.started = True
            try:
                added = await self.engine.finish(self.context, 101, [])
            except PersistError as exc:
                logger.error("session not saved: %s", exc)
                self.refused = True
                await _refuse("websocket", self.send, exc.status_code)
                return
            cookies = [(n, v) for n, v in added if n == b"set-cookie"]
            if cookies:
                message = {**message, "headers": [*message.get("headers", ()), *cookies]}
        elif self.refused:
            return
        elif self.context.key is not None and (
            kind in ("websocket.send", "websocket.close")
            or (kind == "http.response.body" and not message.get("more_body", False))
        ):
            await self.persist_late()
        await self.send(message)

    async def persist_late(self) -> None:
        """Save what changed since the response started; the response itself can't change now."""
        if not self.started or self.refused:
            return
        try:
            await self.engine.persist_late(self.context)
        except PersistError as exc:
            logger.error("session changes made after the response started were lost: %s", exc)


async def _refuse(kind: str, send: Send, status: int) -> None:
    """An opaque error: no body, no detail, the client's cookie left as it was."""
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1011})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def get_session(request_or_scope: Any) -> Session:
    """The session of a request (Starlette/FastAPI/Litestar ``Request``, WebSocket) or ASGI scope."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    session = scope.get("session") if isinstance(scope, Mapping) else None
    if not isinstance(session, Session):
        raise RuntimeError(_NOT_INSTALLED)
    return session
