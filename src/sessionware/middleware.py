"""SessionMiddleware: the pure-ASGI adapter that moves bytes between ASGI messages and the engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from sessionware.config import BrowserSession, CookieSettings, PersistentSession, SameSite
from sessionware.crypto import ContentSecurity, Key
from sessionware.dbsc import DeviceBinding, serve
from sessionware.engine import (
    ClientSideEngine,
    PersistError,
    ServerSideEngine,
    SessionContext,
    SessionEngine,
    make_engine,
)
from sessionware.events import EventHook
from sessionware.repository import Repository
from sessionware.session import Session
from sessionware.stores.base import RecordStore
from sessionware.stores.cookie import CookieSessionStore

__all__ = ["SessionMiddleware", "get_session"]

logger = logging.getLogger("sessionware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]
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

    ``on_event`` receives the ``sessionware.events`` (created, loaded, store_error, ...) for
    metrics; unset, no event is built (docs/telemetry.md).
    With ``device_binding=DeviceBinding(...)`` (server-side stores) it also serves the DBSC
    registration and refresh endpoints, and ``session.bind_device()`` becomes available.
    """

    def __init__(
        self,
        app: Any,
        *,
        store: RecordStore | CookieSessionStore | Repository,
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
        on_event: EventHook | None = None,
        device_binding: DeviceBinding | None = None,
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
        cookie = CookieSettings(
            name=cookie_name,
            secure=cookie_secure,
            http_only=cookie_http_only,
            same_site=cookie_same_site,
            path=cookie_path,
            domain=cookie_domain,
            partitioned=cookie_partitioned,
        )
        if device_binding is not None and not isinstance(device_binding, DeviceBinding):
            raise TypeError("device_binding must be a sessionware.DeviceBinding")
        # The binder shares the key ring and the session cookie's attributes.
        self.binder = device_binding.runtime(keys=ring, cookie=cookie) if device_binding else None
        options: dict[str, Any] = {
            "keys": ring,
            "security": content_security,
            "cookie": cookie,
            "lifecycle": lifecycle if lifecycle is not None else BrowserSession(),
            "clock": clock,
            "on_event": on_event,
            "device": self.binder,
        }
        self.engine: SessionEngine = make_engine(store, **options)
        # The cookie store needs no I/O to load, so laziness would only cost.
        self.lazy = lazy and self.engine.server_side
        self._client = self.engine if isinstance(self.engine, ClientSideEngine) else None
        """The cookie store's engine: HTTP requests take its own path (no I/O, no context)."""
        self._warned_insecure = not cookie_secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        engine = self.engine
        if self.binder is not None and kind == "http" and self.binder.endpoint(scope["path"]):
            await self._serve_binding(scope, send)
            return
        cookies, agent = [], None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.append(value)
            elif name == b"user-agent":
                agent = value
        client = self._client
        if client is not None and kind == "http":
            session = scope["session"] = client.session_for(cookies)
            started = refused = False

            async def seal_sender(message: Message) -> None:
                """Seal the session into the response's headers as the response starts."""
                nonlocal started, refused
                if message["type"] == "http.response.start":
                    started, original = True, message.get("headers", ())
                    try:
                        headers = client.respond(session, message["status"], original)
                    except PersistError as exc:
                        refused = True
                        await _refuse_unsaved("http", send, exc)
                        return
                    if headers is not original:
                        message = self._with_headers(scope, message, headers)
                elif refused:
                    return
                await send(message)

            try:
                await self.app(scope, receive, seal_sender)
            finally:
                if not started:
                    client.release_session(session)
            return
        context = engine.start(cookies, agent, self.lazy)
        if not (self.lazy or client is not None):
            try:
                await engine.load(context)
            except PersistError as exc:
                logger.error("session not loaded: %s", exc)
                await _refuse(kind, send, exc.status_code)
                return
        if self.binder is not None and not await self._device_allowed(scope, context, send):
            return
        scope["session"] = context.session
        started = refused = False

        if kind == "http":

            async def sender(message: Message) -> None:
                """Persist the session as the response starts and add its headers; then save later
                changes before the last body message goes out (server-side stores only)."""
                nonlocal started, refused
                if message["type"] == "http.response.start":
                    started = True
                    original = message.get("headers", ())
                    try:
                        headers = engine.finish_sync(context, message["status"], original)
                        if headers is None:
                            headers = await engine.finish_io(context, message["status"], original)
                    except PersistError as exc:
                        refused = True
                        await _refuse_unsaved("http", send, exc)
                        return
                    if headers is not original:
                        message = self._with_headers(scope, message, headers)
                elif refused:
                    return
                elif (
                    message["type"] == "http.response.body"
                    and not message.get("more_body", False)
                    and engine.late_pending(context)
                ):
                    await _persist_late(engine, context)
                await send(message)

        else:

            async def sender(message: Message) -> None:
                """Persist the session as the handshake is accepted (its cookie goes with it); then
                save later changes before each message goes out (server-side stores only)."""
                nonlocal started, refused
                kind = message["type"]
                if kind == "websocket.accept":
                    started = True
                    try:
                        added = await engine.finish(context, 101, [])
                    except PersistError as exc:
                        refused = True
                        await _refuse_unsaved("websocket", send, exc)
                        return
                    cookies = [(n, v) for n, v in added if n == b"set-cookie"]
                    if cookies:
                        message = {**message, "headers": [*message.get("headers", ()), *cookies]}
                elif refused:
                    return
                elif kind in ("websocket.send", "websocket.close") and engine.late_pending(context):
                    await _persist_late(engine, context)
                await send(message)

        try:
            try:
                await self.app(scope, receive, sender)
            except PersistError as exc:  # a lazy load failed inside the handler
                if started:
                    raise
                logger.error("session not loaded: %s", exc)
                await _refuse(kind, send, exc.status_code)
                return
            if started and not refused and engine.late_pending(context):
                # changes made after the last message (background tasks)
                await _persist_late(engine, context)
        finally:
            engine.release(context)

    async def _serve_binding(self, scope: Scope, send: Send) -> None:
        """Answer a DBSC registration or refresh request (``sessionware.dbsc.serve``)."""
        assert self.binder is not None and isinstance(self.engine, ServerSideEngine)
        host = next((v for n, v in scope["headers"] if n == b"host"), None)
        origin = f"{scope.get('scheme', 'https')}://{host.decode('latin-1')}" if host else None
        try:
            status, headers, body = await serve(
                self.binder, self.engine, scope["method"], scope["path"], scope["headers"], origin
            )
        except PersistError as exc:
            logger.error("device binding not served: %s", exc)
            await _refuse("http", send, exc.status_code)
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _device_allowed(self, scope: Scope, context: SessionContext, send: Send) -> bool:
        """``require_for``: whether the path needs no binding or the session proved it; when
        not, the request is refused (403)."""
        assert self.binder is not None
        if not self.binder.required(scope["path"]):
            return True
        kind = scope["type"]
        if self.lazy:
            try:
                await self.engine.load(context)
            except PersistError as exc:
                logger.error("session not loaded: %s", exc)
                await _refuse(kind, send, exc.status_code)
                return False
        if context.device is None or not context.device.bound:
            await _refuse(kind, send, 403)
            return False
        return True

    def _with_headers(self, scope: Scope, message: Message, headers: Headers) -> Message:
        """A new response start carrying the headers the session added (the app's message is
        left as it was); the first cookie to a plain-http client is warned about."""
        if not self._warned_insecure:
            self._check_scheme(scope, headers)
        return {**message, "headers": headers}

    def _check_scheme(self, scope: Scope, headers: Headers) -> None:
        """Warn once when a Secure cookie goes to a plain-http client that will drop it."""
        if scope.get("scheme") not in ("http", "ws") or not any(
            name == b"set-cookie" for name, _ in headers
        ):
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").lower()
                break
        host = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if host in _LOCAL_HOSTS:
            return
        self._warned_insecure = True
        logger.warning(
            "the session cookie is Secure, but this request came over plain http to %r, so the"
            " client drops the cookie and the session does not last. If the client really speaks"
            " http (tests, local development), give it an https:// base URL, e.g."
            " TestClient(app, base_url='https://testserver'), or set cookie_secure=False for"
            " development only. If TLS ends at a proxy, let the server trust the forwarded"
            " scheme (uvicorn --proxy-headers --forwarded-allow-ips=...).",
            host[:100],
        )


async def _persist_late(engine: SessionEngine, context: SessionContext) -> None:
    """Save what changed since the response started; the response can't change now."""
    try:
        await engine.persist_late(context)
    except PersistError as exc:
        logger.error("session changes made after the response started were lost: %s", exc)


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


async def _refuse_unsaved(kind: str, send: Send, exc: PersistError) -> None:
    """The session could not be saved as the response started: log why, answer opaquely."""
    logger.error("session not saved: %s", exc)
    await _refuse(kind, send, exc.status_code)


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
    session = scope.get("session") if type(scope) is dict or isinstance(scope, Mapping) else None
    if not isinstance(session, Session):
        raise RuntimeError(_NOT_INSTALLED)
    return session
