"""SessionMiddleware: the pure-ASGI adapter that moves bytes between ASGI messages and the engine."""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from datetime import timedelta
from typing import Any

from sessionware.admin import ADMIN_KEY, SessionAdmin, admin_key
from sessionware.adopt import LegacyCookieReader, adopting
from sessionware.codec import TaggedJSON
from sessionware.config import BrowserSession, CookieSettings, PersistentSession, SameSite
from sessionware.cookies import find_cookies
from sessionware.crypto import ContentSecurity, Key
from sessionware.dbsc import DeviceBinding, serve
from sessionware.engine import (
    PersistError,
    ServerSideEngine,
    SessionEngine,
    make_engine,
    transported,
)
from sessionware.errors import NotSupportedError
from sessionware.events import EventHook, ObservedStore
from sessionware.lifespan import Lifespan, Sweeper, run_lifespan, sweepable
from sessionware.origins import OriginCheck
from sessionware.repository import Repository
from sessionware.session import Event, Phase, Session, Tracker
from sessionware.stores.base import RecordStore
from sessionware.stores.cookie import CookieSessionStore
from sessionware.transport import (
    COOKIE,
    CookieTransport,
    HeaderTransport,
    Transport,
    declare,
    transports,
)

__all__ = ["DEFAULT_NAME", "SessionMiddleware", "get_session", "route_path"]

logger = logging.getLogger("sessionware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_NAME = "session"
"""The default session's name: ``request.session`` (``scope["session"]``), cookie ``id``."""

_NOT_INSTALLED = (
    "no session in this request: add sessionware.SessionMiddleware to the app, e.g."
    " app.add_middleware(SessionMiddleware, store=..., key=...)"
)
_NOT_INSTALLED_NAMED = (
    "no session named {name!r} in this request: add a sessionware.SessionMiddleware with that"
    " name to the app, e.g. app.add_middleware(SessionMiddleware, name={name!r}, store=...,"
    " key=...)"
)
_TWO_MIDDLEWARES = (
    "this request already has a session (scope[{key!r}]) when sessionware's SessionMiddleware"
    " (name={name!r}) starts: another session middleware ({found}) runs outside it. Use one"
    " session middleware per name: remove the other, or give each SessionMiddleware its own"
    " name= (sessionware.integrations.starlette.SessionMiddleware replaces Starlette's with the"
    " same parameters)"
)
_REPLACED = (
    "another session middleware inside sessionware's SessionMiddleware replaced"
    " scope[{key!r}] ({found}), so sessionware never saw this request's session. Use one"
    " session middleware: remove the other (sessionware.integrations.starlette.SessionMiddleware"
    " replaces Starlette's with the same parameters)"
)
_SHARED_HEADER = (
    "two sessionware SessionMiddleware, named {first!r} and {second!r}, both take the session"
    " token in the {header} header: a token would be read by both and answered twice. Give each"
    " named session its own headers, e.g. HeaderTransport(name='X-{second}-Session',"
    " scheme=None, response_header='{second}-Session-Token')"
)
_DEVICE_NEEDS_COOKIES = (
    "device binding is cookie-only: its credential is a second cookie the browser refreshes"
    " with the device's key, which a header-carried session never has. Use transport="
    "CookieTransport() with device_binding=, or a separate SessionMiddleware(name=...) for the"
    " API clients"
)
_ADOPT_NEEDS_COOKIES = (
    "adopt= reads older session cookies, and this middleware's transport takes no cookie: add"
    " CookieTransport() to transport=, or adopt in the middleware that serves browsers"
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_RESERVED = frozenset(
    {
        "type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "query_string",
        "root_path", "headers", "client", "server", "subprotocols", "state", "extensions", "app",
        "router", "endpoint", "path_params", "route", "user", "auth", ADMIN_KEY,
    }
)  # fmt: skip
"""Scope keys that ASGI, Starlette or sessionware already use: a session cannot be named so."""
_NO_ACCEPT_HEADERS = (
    "this server speaks ASGI {version}, whose WebSocket handshake cannot carry headers, so a"
    " session cookie cannot be set over a WebSocket here: only an existing session can be"
    " written (create, renew or bind it over HTTP first)"
)


class SessionMiddleware:
    """Loads the session before the app runs (``scope["session"]``) and persists it after.

    Works for ``http`` and ``websocket`` scopes; anything else passes through untouched. When the
    store fails, the app is not run (load) or its response is replaced (save) by an empty 503;
    a state that cannot be stored gives an empty 500; a request whose session a login renewed
    meanwhile gets an empty 409 (nothing of it is stored). Responses of 500 and above persist
    nothing.

    With ``lazy=True`` a server-side store is not asked until the handler calls
    ``await session.load()`` (``SessionDep`` does), so requests that ignore the session cost no
    store I/O; using the session before that raises ``SessionNotLoadedError``.

    ``clock`` decides every question of time (idle and absolute expiry, from the times the
    session's envelope carries); a store's TTL only collects garbage. ``on_event`` receives the
    ``sessionware.events`` (created, loaded, store_error, ...) for metrics; unset, no event is
    built (docs/telemetry.md). ``get_admin(request)`` gives the ``SessionAdmin`` that lists and
    ends sessions with the same store, clock and events. ``max_sessions_per_user=N`` (a
    server-side store with a user index): when a session is bound to a user (``bind_user``) who
    then has more than N live sessions, the least recently used end (``SessionEvicted``), under
    a lock per user so logins at once in any processes leave at most N. With
    ``device_binding=DeviceBinding(...)`` (server-side stores) it also serves the DBSC
    registration and refresh endpoints, and ``session.bind_device()`` becomes available.

    ``rotate_every=timedelta(...)`` (server-side stores) gives a session whose key is older than
    that a new key at its next use, state and user kept; for ``rotation_grace`` (30 s) after,
    requests still carrying the old key work on the new session (and are sent its key), then
    the old key opens nothing (docs/lifecycle.md).
    ``adopt=[reader, ...]`` (``sessionware.adopt``: ``StarletteCookie``, ``FlaskCookie``,
    ``DjangoSignedCookie``) reads the session cookie of the library used before: a request with
    no sessionware cookie but a valid old one gets its state, stored at the end of the request
    as a new session, and the old cookie removed in that response (docs/adopt.md).

    ``transport=`` says where the token travels: ``CookieTransport()`` (the default),
    ``HeaderTransport()`` for API clients, or a list of both, the first one a request matches
    winning (docs/api-clients.md). ``name=`` lets one app hold several sessions, each with its
    own middleware: ``get_session(request, name)``; the default ``"session"`` is
    ``request.session`` with the cookie ``id``, another name is its own scope key and cookie
    name unless ``cookie_name=`` says otherwise (docs/named-sessions.md).

    At the ASGI ``lifespan`` start-up (the app's own lifespan runs as before):
    ``check_store_on_startup=True`` makes one round trip to the store (``store.check()``) and
    fails the start-up with the cause when it does not answer; ``sweep_every=`` (the SQL
    stores) deletes expired records in the background, one process per database at a time
    (docs/lifecycle.md). ``store_error_response=`` is a callable taking nothing and returning
    an ASGI app (a Starlette ``Response``, say) whose body and headers answer a store failure
    instead of the empty 503; the status stays 503 and it never sets a cookie.

    A WebSocket handshake that carries the session cookie from a page of another origin is
    refused (403) before the app runs, unless ``websocket_origins=`` lists that origin
    (``["https://app.example.com"]``); one without ``Origin`` (not a browser) passes
    (docs/csrf.md#websockets).

    ``codec=TaggedJSON()`` stores ``datetime``, ``UUID``, ``Decimal``, ``bytes``, sets and
    tuples as tagged JSON objects (docs/values.md); the default is plain JSON, which actix-web
    reads.
    """

    def __init__(
        self,
        app: Any,
        *,
        store: RecordStore | CookieSessionStore | Repository,
        key: Key | None = None,
        keys: Sequence[Key] | None = None,
        name: str = DEFAULT_NAME,
        transport: Transport | Sequence[Transport] | None = None,
        cookie_name: str | None = None,
        cookie_secure: bool = True,
        cookie_http_only: bool = True,
        cookie_same_site: SameSite | None = "lax",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_partitioned: bool = False,
        content_security: ContentSecurity = ContentSecurity.PRIVATE,
        lifecycle: BrowserSession | PersistentSession | None = None,
        lazy: bool = False,
        clock: Callable[[], float] | None = None,
        on_event: EventHook | None = None,
        device_binding: DeviceBinding | None = None,
        rotate_every: timedelta | None = None,
        rotation_grace: timedelta = timedelta(seconds=30),
        check_store_on_startup: bool = False,
        sweep_every: timedelta | None = None,
        store_error_response: Callable[[], ASGIApp] | None = None,
        max_sessions_per_user: int | None = None,
        websocket_origins: Sequence[str] = (),
        codec: TaggedJSON | None = None,
        adopt: Sequence[LegacyCookieReader] = (),
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
        self.name = _checked_name(name)
        if cookie_name is None:
            cookie_name = "id" if self.name == DEFAULT_NAME else self.name
        self.transports = transports(transport)
        origins = OriginCheck(websocket_origins, cookie_name, on_event)
        cookied = any(isinstance(t, CookieTransport) for t in self.transports)
        self.origins = origins if cookied else None
        """The Origin check of WebSocket handshakes carrying the session cookie (none when the
        token never travels in a cookie: a page cannot make a browser send a header)."""
        carried = [t for t in self.transports if isinstance(t, HeaderTransport)]
        if carried and device_binding is not None:
            raise NotSupportedError(_DEVICE_NEEDS_COOKIES)
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
        lifecycle = lifecycle if lifecycle is not None else BrowserSession()
        self.engine: SessionEngine = make_engine(
            store,
            keys=ring,
            security=content_security,
            cookie=cookie,
            lifecycle=lifecycle,
            clock=_one_clock(clock, store),
            on_event=on_event,
            device=self.binder,
            rotate_every=rotate_every,
            rotation_grace=rotation_grace,
            codec=codec,
        )
        if max_sessions_per_user is not None:
            self._cap(max_sessions_per_user)
        self.admin = SessionAdmin(
            self.engine.backend,  # the engine's repository: its events, clock and tombstones
            clock=self.engine.clock,
            on_event=on_event,
            lifecycle=lifecycle,
        )
        # The cookie store needs no I/O to load, so laziness would only cost.
        self.lazy = lazy and self.engine.server_side
        self._load_first = self.engine.server_side and not self.lazy
        self._warned_insecure = not cookie_secure
        self.scope_key = self.name
        self.admin_key = admin_key(self.name)
        self._header_transports = tuple(carried)
        self._routes = self._engines()
        if adopt and not cookied:
            raise ValueError(_ADOPT_NEEDS_COOKIES)
        cookie_engine, self.engine = self.engine, adopting(self.engine, adopt)
        self._routes = tuple((t, self.engine if e is cookie_engine else e) for t, e in self._routes)
        self._plain = not carried and self.name == DEFAULT_NAME
        """The default session by cookie alone: ``__call__``'s own path, with no routing."""
        declare(self.name, cookie_name, self.transports)
        self._store_error_response = _responder(store_error_response)
        records = _records(store)
        sweeper = None
        if sweep_every is not None:
            sweeper = Sweeper(sweepable(records, sweep_every), sweep_every, on_event=on_event)
        self._lifespan = (
            Lifespan(records, check=bool(check_store_on_startup), sweeper=sweeper)
            if check_store_on_startup or sweeper is not None
            else None
        )

    def _cap(self, limit: int) -> None:
        """Hold every user to ``limit`` live sessions (the repository enforces it)."""
        given: object = limit
        if isinstance(given, bool) or not isinstance(given, int) or limit < 1:
            raise ValueError(f"max_sessions_per_user must be a whole number >= 1, not {limit!r}")
        repository = self.engine.backend if self.engine.server_side else None
        if not isinstance(repository, Repository) or repository.index is None:
            raise NotSupportedError(
                "max_sessions_per_user needs a store that lists a user's sessions (Redis,"
                " SQLite, PostgreSQL, MariaDB, memory): this store keeps no user index"
            )
        repository.max_per_user = limit

    def _engines(self) -> tuple[tuple[Transport, SessionEngine], ...]:
        """Each transport with the engine its requests go to (``self.engine`` the cookie's);
        with a header among them, every response varies by every transport's header."""
        cookie = next((t for t in self.transports if isinstance(t, CookieTransport)), COOKIE)
        if not self._header_transports:
            return ((cookie, self.engine),)
        vary = b", ".join(
            t.name.encode("latin-1") if isinstance(t, HeaderTransport) else b"Cookie"
            for t in self.transports
        )
        self.engine = transported(self.engine, cookie, vary)
        return tuple(
            (
                t,
                transported(self.engine, t, vary)
                if isinstance(t, HeaderTransport)
                else self.engine,
            )
            for t in self.transports
        )

    def _begin(self, scope: Scope, cookies: list[bytes], agent: bytes | None) -> Tracker:
        """``begin`` for a named session or one a header may carry: on the engine of the
        first transport the request matches (it carries the cookie; the header, with its
        scheme), or of the first transport when it matches none."""
        if self.name != DEFAULT_NAME:
            found = scope.get(DEFAULT_NAME)
            if found is not None and not isinstance(found, Session):
                raise RuntimeError(self._taken(DEFAULT_NAME, found))
        if self._header_transports:
            self._claim(scope)
        routes = self._routes
        for transport, engine in routes:
            if isinstance(transport, HeaderTransport):
                token = transport.find(scope["headers"])
                if token is not None:
                    return engine.begin([token], agent, self.lazy)
            elif len(routes) == 1 or (cookies and find_cookies(cookies, engine.cookie.name)):
                return engine.begin(cookies, agent, self.lazy)
        transport, engine = routes[0]
        return engine.begin(
            [] if isinstance(transport, HeaderTransport) else cookies, agent, self.lazy
        )

    def _claim(self, scope: Scope) -> None:
        """Note this session's headers in the request, refusing one another named session's
        middleware already takes (both would read its token and answer it)."""
        claimed: dict[bytes, str] = scope.setdefault("sessionware.headers", {})
        for transport in self._header_transports:
            for header, spelled in (
                (transport.key, transport.name),
                (transport.response_key, transport.response_header),
            ):
                owner = claimed.setdefault(header, self.name)
                if owner != self.name:
                    raise RuntimeError(
                        _SHARED_HEADER.format(first=owner, second=self.name, header=spelled)
                    )

    def _taken(self, key: str, found: object) -> str:
        """Why a request whose scope already holds ``found`` under ``key`` is refused."""
        return _TWO_MIDDLEWARES.format(key=key, name=self.name, found=_describe(found))

    def _replaced(self, scope: Scope) -> str:
        """Why a request whose session something inside replaced is refused."""
        return _REPLACED.format(key=self.scope_key, found=_describe(scope.get(self.scope_key)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan" and self._lifespan is not None:
                await run_lifespan(self.app, scope, self._lifespan, receive, send)
                return
            await self.app(scope, receive, send)
            return
        key = self.scope_key
        if key in scope:
            raise RuntimeError(self._taken(key, scope[key]))
        engine = self.engine
        binder = self.binder
        if binder is not None and kind == "http" and binder.endpoint(route_path(scope)):
            await self._serve_binding(scope, send)
            return
        cookies, agent = [], None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.append(value)
            elif name == b"user-agent":
                agent = value
        if kind == "websocket" and self.origins is not None:
            origin = self.origins.refused(scope, cookies)
            if origin is not None:
                await self.origins.refuse(scope, send, origin)
                return
        if self._plain:
            tracker = engine.begin(cookies, agent, self.lazy)
        else:
            tracker = self._begin(scope, cookies, agent)
            engine = tracker.engine
        try:
            if self._load_first and tracker.unread:
                try:
                    await engine.load(tracker)
                except PersistError as exc:
                    logger.error("session not loaded: %s", exc)
                    await self._refuse(scope, send, exc.status_code, vary=engine.vary)
                    return
            if binder is not None and not await self._device_allowed(scope, tracker, send):
                return
            session = scope[key] = tracker.session
            scope[self.admin_key] = self.admin
            if kind == "websocket":
                await self._websocket(scope, receive, send, tracker, session)
                return
            # HTTP, here rather than in a method of its own: it saves a coroutine per request.
            started = refused = False

            async def sender(message: Message) -> None:
                """As the response starts, persist the session and add its headers; then store
                later changes before the last body message goes out."""
                nonlocal started, refused
                if message["type"] == "http.response.start":
                    started = True
                    if scope.get(key) is not session:
                        raise RuntimeError(self._replaced(scope))
                    original = message.get("headers", ())
                    try:
                        headers = engine.respond(tracker, message["status"], original)
                        if headers is None:
                            headers = await engine.persist(tracker, message["status"], original)
                    except PersistError as exc:
                        refused = True
                        logger.error("session not saved: %s", exc)
                        await self._refuse(scope, send, exc.status_code, _vary(engine, tracker))
                        return
                    if headers is not original:
                        message = self._with_headers(scope, message, headers)
                elif refused:
                    return
                elif (
                    tracker.phase is _LATE
                    and message["type"] == "http.response.body"
                    and not message.get("more_body", False)
                ):
                    await _store_late(engine, tracker)
                await send(message)

            try:
                await self.app(scope, receive, sender)
            except PersistError as exc:  # a lazy load failed inside the handler
                if started:
                    raise
                logger.error("session not loaded: %s", exc)
                await self._refuse(scope, send, exc.status_code, vary=_vary(engine, tracker))
                return
            if tracker.phase is _LATE and not refused:  # changes after the last message
                await _store_late(engine, tracker)
        finally:
            tracker.release()

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, tracker: Tracker, session: Session
    ) -> None:
        """Run the app; persist the session as the handshake is accepted (its cookie goes with
        it, where the server can carry headers there); then store later changes before each
        message goes out."""
        engine = tracker.engine
        version = _asgi_version(scope)
        if version < (2, 1):  # ASGI 2.0: websocket.accept carries no headers, so no cookie
            reason = _NO_ACCEPT_HEADERS.format(version=".".join(map(str, version)))
            late = engine.server_side and (tracker.record is not None or tracker.unread)
            tracker.handle(Event.RESPONDED if late else Event.SEALED, reason)
        refused = False

        async def sender(message: Message) -> None:
            nonlocal refused
            kind = message["type"]
            if kind == "websocket.accept" and tracker.phase is _OPEN:
                try:
                    added = engine.respond(tracker, 101, [])
                    if added is None:
                        added = await engine.persist(tracker, 101, [])
                except PersistError as exc:
                    refused = True
                    await _refuse_unsaved("websocket", send, exc)
                    return
                carrier = engine.carrier
                cookies = [(n, v) for n, v in added if n == carrier]
                if cookies:
                    message = {**message, "headers": [*message.get("headers", ()), *cookies]}
            elif refused:
                return
            elif tracker.phase is _LATE and kind in _WEBSOCKET_SENDS:
                await _store_late(engine, tracker)
            await send(message)

        try:
            await self.app(scope, receive, sender)
        except PersistError as exc:  # a lazy load failed inside the handler
            if tracker.phase is not _OPEN:
                raise
            logger.error("session not loaded: %s", exc)
            await _refuse("websocket", send, exc.status_code)
            return
        if tracker.phase is _LATE and not refused:
            await _store_late(engine, tracker)

    async def _serve_binding(self, scope: Scope, send: Send) -> None:
        """Answer a DBSC registration or refresh request (``sessionware.dbsc.serve``)."""
        assert self.binder is not None and isinstance(self.engine, ServerSideEngine)
        host = next((v for n, v in scope["headers"] if n == b"host"), None)
        origin = f"{scope.get('scheme', 'https')}://{host.decode('latin-1')}" if host else None
        try:
            status, headers, body = await serve(
                self.binder,
                self.engine,
                scope["method"],
                route_path(scope),
                scope["headers"],
                origin,
            )
        except PersistError as exc:
            logger.error("device binding not served: %s", exc)
            await self._refuse(scope, send, exc.status_code)
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _device_allowed(self, scope: Scope, tracker: Tracker, send: Send) -> bool:
        """``require_for``: whether the path needs no binding or the session proved it; when
        not, the request is refused (403)."""
        assert self.binder is not None
        if not self.binder.required(route_path(scope)):
            return True
        kind = scope["type"]
        if tracker.unread:
            try:
                await self.engine.load(tracker)
            except PersistError as exc:
                logger.error("session not loaded: %s", exc)
                await self._refuse(scope, send, exc.status_code, vary=True)
                return False
        if tracker.device is None or not tracker.device.bound:
            await _refuse(kind, send, 403)
            return False
        return True

    async def _refuse(
        self, scope: Scope, send: Send, status: int, vary: bool | bytes = False
    ) -> None:
        """Answer a request the session could not be loaded or saved for: opaquely, with the
        app's ``store_error_response`` body when the store failed (a 503 over HTTP)."""
        respond = self._store_error_response
        if respond is None or status != 503 or scope["type"] != "http":
            await _refuse(scope["type"], send, status, vary)
            return
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() not in _REFUSAL_HEADERS
                ]
                headers += _refusal_headers(vary)
                message = {**message, "status": 503, "headers": headers}
            await send(message)

        try:
            await respond()(_bare(scope), _no_body, sender)
        except Exception:
            logger.exception("store_error_response failed; answered with an empty 503")
            if not started:
                await _refuse("http", send, status, vary)

    def _with_headers(self, scope: Scope, message: Message, headers: Headers) -> Message:
        """A new response start carrying the headers the session added (the app's message is
        left as it was); the first cookie to a plain-http client is warned about."""
        if not self._warned_insecure:
            self._check_scheme(scope, headers)
        return {**message, "headers": headers}

    def _check_scheme(self, scope: Scope, headers: Headers) -> None:
        """Warn once when a Secure cookie goes to a plain-http client: test clients (httpx,
        requests, aiohttp, TestClient) drop it, even for localhost, where browsers keep it."""
        if scope.get("scheme") not in ("http", "ws") or not any(
            name == b"set-cookie" for name, _ in headers
        ):
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").lower()
                break
        self._warned_insecure = True
        logger.warning(
            "the session cookie is Secure, but this request came over plain http to %r: browsers"
            " keep Secure cookies only for https and localhost, and test clients (httpx,"
            " requests, aiohttp, Starlette's TestClient) drop them even for localhost, so the"
            " session does not last. For tests, give the client an https:// base URL, e.g."
            " TestClient(app, base_url='https://testserver'); for local development over http,"
            " set cookie_secure=False (never in production). If TLS ends at a proxy, let the"
            " server trust the forwarded scheme (uvicorn --proxy-headers"
            " --forwarded-allow-ips=...).",
            host[:100],
        )


_OPEN, _LATE = Phase.OPEN, Phase.LATE
_WEBSOCKET_SENDS = frozenset({"websocket.accept", "websocket.send", "websocket.close"})


async def _store_late(engine: SessionEngine, tracker: Tracker) -> None:
    """Store what changed since the response head, if anything (none: no encode, no I/O)."""
    outcome = tracker.late_outcome()
    if outcome is not None:
        await engine.persist_late(tracker, outcome)


def _one_clock(clock: Callable[[], float] | None, store: object) -> Callable[[], float]:
    """The middleware's clock; unset, the clock a store was given the first version's way
    (deprecated there), else ``time.time``."""
    if clock is not None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning Unix seconds, e.g. time.time")
        return clock
    legacy = getattr(store, "legacy_clock", None)
    return legacy if callable(legacy) else time.time


def _asgi_version(scope: Scope) -> tuple[int, ...]:
    """The ASGI spec version a server says it speaks: 2.0 when its ``asgi`` entry names none
    (as daphne's); a scope without that entry at all (Starlette's TestClient, which carries
    accept headers) is taken as current."""
    asgi = scope.get("asgi")
    if not isinstance(asgi, Mapping):
        return (2, 4)
    text = asgi.get("spec_version", "2.0")
    try:
        return tuple(int(part) for part in str(text).split(".")[:2])
    except ValueError:
        return (2, 0)


def route_path(scope: Scope) -> str:
    """The request's path within the app: ``path`` without the ``root_path`` the app is
    mounted under (Starlette's ``Mount``, ``uvicorn --root-path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _describe(found: object) -> str:
    if isinstance(found, Session):
        return "another sessionware SessionMiddleware"
    if isinstance(found, dict):
        return "a plain dict: Starlette's SessionMiddleware, most likely"
    return f"a {type(found).__module__}.{type(found).__qualname__}"


async def _refuse_unsaved(
    kind: str, send: Send, exc: PersistError, vary: bool | bytes = False
) -> None:
    """The session could not be saved as the response started: log why, answer opaquely."""
    logger.error("session not saved: %s", exc)
    await _refuse(kind, send, exc.status_code, vary)


_REFUSAL_HEADERS = frozenset({b"set-cookie", b"cache-control", b"vary"})
"""Headers of an app's ``store_error_response`` that the refusal's own replace."""


def _refusal_headers(vary: bool | bytes) -> Headers:
    """A refusal's caching headers: never stored; varying by the session's carrier."""
    headers = [(b"cache-control", b"no-store")]
    if vary:
        headers.append((b"vary", b"Cookie" if vary is True else vary))
    return headers


def _bare(scope: Scope) -> Scope:
    """What a ``store_error_response`` app sees of the request: no headers (no cookie, no
    token), no query string, no session."""
    return {
        "type": "http",
        "asgi": scope.get("asgi", {"version": "3.0"}),
        "http_version": scope.get("http_version", "1.1"),
        "method": scope.get("method", "GET"),
        "scheme": scope.get("scheme", "https"),
        "path": scope.get("path", "/"),
        "root_path": scope.get("root_path", ""),
        "query_string": b"",
        "headers": [],
    }


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _responder(factory: object) -> Callable[[], ASGIApp] | None:
    """``store_error_response`` once it is a callable taking no arguments (an ASGI app or a
    response itself is not: it would be called with the request); else ``TypeError``."""
    if factory is None:
        return None
    try:
        inspect.signature(factory).bind()  # type: ignore[arg-type]
    except TypeError:
        pass
    except ValueError:  # no signature to read (a builtin): trust it
        return factory  # type: ignore[return-value]
    else:
        return factory  # type: ignore[return-value]
    raise TypeError(
        f"store_error_response must be a callable taking no arguments that returns an ASGI app"
        f" (the body of the 503), e.g. lambda: JSONResponse({{'error': 'try again soon'}});"
        f" got {type(factory).__qualname__}"
    )


def _records(store: object) -> object:
    """The store under a ``Repository`` and its event wrapper: what is checked and swept."""
    if isinstance(store, Repository):
        store = store.store
    while isinstance(store, ObservedStore):
        store = store.inner
    return store


async def _refuse(kind: str, send: Send, status: int, vary: bool | bytes = False) -> None:
    """An opaque error: no body, no detail, the client's cookie left as it was; ``vary`` when
    the request carried the session cookie (a cache must not serve it to another): ``True``
    for ``Cookie``, or the engine's Vary value."""
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1011})
        return
    headers = [(b"content-length", b"0"), *_refusal_headers(vary)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def get_session(request_or_scope: Any, name: str = DEFAULT_NAME) -> Session:
    """The session of a request (Starlette/FastAPI/Litestar ``Request``, WebSocket) or ASGI
    scope: the default one, or the one of the ``SessionMiddleware(name=name)``."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    session = scope.get(name) if type(scope) is dict or isinstance(scope, Mapping) else None
    if not isinstance(session, Session):
        raise RuntimeError(
            _NOT_INSTALLED if name == DEFAULT_NAME else _NOT_INSTALLED_NAMED.format(name=name)
        )
    return session


def _checked_name(name: object) -> str:
    """``name=`` as given, once it can be a scope key and a cookie name; else ``ValueError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"name={name!r}: a session's name is a letter followed by up to 63 letters, digits,"
            " '_' or '-' (it names the scope key and, unless cookie_name= is set, the cookie)"
        )
    if name in _RESERVED:
        raise ValueError(f"name={name!r} is a key the ASGI scope already uses: choose another")
    return name


def _vary(engine: SessionEngine, tracker: Tracker) -> bytes | bool:
    """The Vary of a refusal: the engine's, when the request carried the token."""
    return engine.vary if tracker.cookies else False
