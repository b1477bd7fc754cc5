"""The one Starlette app every benchmark drives, and each session library put in front of it.

Three routes, the same for every library; only how a handler reaches the session differs:

* ``/write``  reads the counter and stores it plus one;
* ``/read``   reads the counter;
* ``/ignore`` never touches the session (the request still carries the session cookie).

``build(name, ...)`` returns a ready ``Flavor`` (the wrapped app, its cookie name, a closer).
Nothing here opens a socket except the Redis clients (127.0.0.1 only).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sessionware import (
    BrowserSession,
    ContentSecurity,
    Key,
    TtlExtensionPolicy,
    get_session,
)
from sessionware import SessionMiddleware as SessionwareMiddleware
from sessionware.stores import CookieSessionStore, MemorySessionStore

REDIS_URL = "redis://127.0.0.1:6379/0"
KINDS = ("write", "read", "ignore")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]
Getter = Callable[[Request], Awaitable[MutableMapping[str, Any]]]

# name -> (family, what it is); the order is the order of the tables.
FLAVORS: dict[str, tuple[str, str]] = {
    "bare": ("bare", "no session middleware (handlers use a plain dict)"),
    "null-mw": ("null", "a do-nothing pure-ASGI middleware that wraps send: the floor"),
    "starlette": ("starlette", "starlette.middleware.sessions.SessionMiddleware (itsdangerous)"),
    "starsessions-cookie": ("starsessions", "starsessions 2.2 CookieStore, load_session()"),
    "starsessions-redis": ("starsessions", "starsessions 2.2 RedisStore, load_session()"),
    "sw-cookie-private": ("sessionware", "sessionware CookieSessionStore, PRIVATE (AES-GCM)"),
    "sw-cookie-signed": ("sessionware", "sessionware CookieSessionStore, SIGNED (HMAC)"),
    "sw-memory": ("sessionware", "sessionware MemorySessionStore, lazy=True"),
    "sw-redis": ("sessionware", "sessionware RedisSessionStore, lazy=True"),
    "sw-sqlite": ("sessionware", "sessionware SQLiteSessionStore (temp file), lazy=True"),
    "sw-redis-every": ("sessionware", "sessionware RedisSessionStore, lazy, ON_EVERY_REQUEST"),
    "sw-memory-eager": ("sessionware", "sessionware MemorySessionStore, lazy=False"),
    "sw-redis-eager": ("sessionware", "sessionware RedisSessionStore, lazy=False"),
    "sw-sqlite-eager": ("sessionware", "sessionware SQLiteSessionStore, lazy=False"),
}
NEEDS_REDIS = frozenset({"starsessions-redis", "sw-redis", "sw-redis-eager", "sw-redis-every"})


# -- the app -----------------------------------------------------------------------------------

_BARE_STATE: dict[str, Any] = {}


async def _bare(request: Request) -> MutableMapping[str, Any]:
    return _BARE_STATE


async def _starlette(request: Request) -> MutableMapping[str, Any]:
    return request.session


async def _starsessions(request: Request) -> MutableMapping[str, Any]:
    from starsessions import load_session

    await load_session(request)
    return request.session


async def _sessionware(request: Request) -> MutableMapping[str, Any]:
    # A no-op for an eagerly loaded session; the store call itself with lazy=True.
    return await get_session(request).load()


GETTERS: dict[str, Getter] = {
    "bare": _bare,
    "null": _bare,
    "starlette": _starlette,
    "starsessions": _starsessions,
    "sessionware": _sessionware,
}


def make_app(getter: Getter, middleware: list[Middleware]) -> Starlette:
    """The benchmark app: the same three routes whatever the session library."""

    async def write(request: Request) -> Response:
        session = await getter(request)
        session["counter"] = session.get("counter", 0) + 1
        return PlainTextResponse("ok")

    async def read(request: Request) -> Response:
        session = await getter(request)
        return PlainTextResponse(str(session.get("counter", 0)))

    async def ignore(request: Request) -> Response:
        return PlainTextResponse("ignored")

    routes = [Route("/write", write), Route("/read", read), Route("/ignore", ignore)]
    return Starlette(routes=routes, middleware=middleware)


# -- the flavours ------------------------------------------------------------------------------


class NullMiddleware:
    """What any session middleware costs at least: one more ASGI layer and a wrapped ``send``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        async def wrapped(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


class CountingRedis:
    """Builds redis-py asyncio clients that count the commands they send (by name)."""

    @staticmethod
    def from_url(url: str, counts: Counter[str], **options: Any) -> Any:
        from redis.asyncio import Redis

        class _Counting(Redis):  # type: ignore[misc]
            async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
                counts[str(args[0]).upper()] += 1
                return await super().execute_command(*args, **kwargs)

        return _Counting.from_url(url, **options)


def redis_options() -> dict[str, Any]:
    """The client options RedisSessionStore.from_url uses: the same kind of pool for the floor."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "retry": Retry(NoBackoff(), 0)}


@dataclass
class Flavor:
    name: str
    family: str
    app: ASGIApp
    cookie_name: str | None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            await close()


def build(
    name: str,
    *,
    prefix: str = "",
    policy: TtlExtensionPolicy = TtlExtensionPolicy.ON_STATE_CHANGES,
    counts: Counter[str] | None = None,
    tmpdir: str | None = None,
    memory_max_entries: int = 100_000,
) -> Flavor:
    """The app behind ``name``'s session middleware. ``prefix`` namespaces Redis keys."""
    family, _ = FLAVORS[name]
    closers: list[Callable[[], Awaitable[None]]] = []
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    middleware: list[Middleware] = []
    cookie_name: str | None = None
    if name == "null-mw":
        middleware = [Middleware(NullMiddleware)]
    elif name == "starlette":
        from starlette.middleware.sessions import SessionMiddleware

        middleware = [Middleware(SessionMiddleware, secret_key=secret)]
        cookie_name = "session"
    elif family == "starsessions":
        from starsessions import CookieStore
        from starsessions import SessionMiddleware as StarsessionsMiddleware

        if name == "starsessions-cookie":
            store: Any = CookieStore(secret)
        else:
            from redis.asyncio import Redis
            from starsessions.stores.redis import RedisStore

            client = (
                CountingRedis.from_url(REDIS_URL, counts, **redis_options())
                if counts is not None
                else Redis.from_url(REDIS_URL, **redis_options())
            )
            closers.append(client.aclose)
            store = RedisStore(connection=client, prefix=prefix + "starsessions:")
        middleware = [Middleware(StarsessionsMiddleware, store=store, lifetime=0)]
        cookie_name = "session"
    elif family == "sessionware":
        lazy = name in ("sw-memory", "sw-redis", "sw-sqlite", "sw-redis-every")
        if name == "sw-redis-every":
            policy = TtlExtensionPolicy.ON_EVERY_REQUEST
        security = ContentSecurity.PRIVATE
        if name == "sw-cookie-signed":
            security = ContentSecurity.SIGNED
        if name.startswith("sw-cookie"):
            sw_store: Any = CookieSessionStore()
        elif name.startswith("sw-memory"):
            sw_store = MemorySessionStore(max_entries=memory_max_entries)
        elif name.startswith("sw-redis"):
            from sessionware.stores.redis import RedisSessionStore

            if counts is not None:
                client = CountingRedis.from_url(REDIS_URL, counts, **redis_options())
                closers.append(client.aclose)
                sw_store = RedisSessionStore(client, key_prefix=prefix + "sessionware:")
            else:
                sw_store = RedisSessionStore.from_url(REDIS_URL, key_prefix=prefix + "sessionware:")
                closers.append(sw_store.aclose)
        else:
            from sessionware.stores.sqlite import SQLiteSessionStore

            directory = tmpdir or tempfile.mkdtemp(prefix="sessionware-bench-")
            sw_store = SQLiteSessionStore(os.path.join(directory, f"{uuid.uuid4().hex}.sqlite3"))
            closers.append(sw_store.aclose)
        middleware = [
            Middleware(
                SessionwareMiddleware,
                store=sw_store,
                key=Key.generate(),
                content_security=security,
                lifecycle=BrowserSession(state_ttl_extension_policy=policy),
                lazy=lazy,
            )
        ]
        cookie_name = "id"
    app = make_app(GETTERS[family], middleware)
    return Flavor(name, family, app, cookie_name, closers)


async def delete_prefixed(prefix: str) -> int:
    """Delete every Redis key under ``prefix`` (SCAN, bounded by what exists); return how many."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, **redis_options())
    deleted = 0
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            deleted += await client.delete(key)
    finally:
        await client.aclose()
    return deleted


def redis_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


# -- raw ASGI ------------------------------------------------------------------------------------


def make_scope(path: str, cookie: bytes | None) -> dict[str, Any]:
    """An HTTP/1.1 GET scope as uvicorn would build it, with the session cookie if given."""
    headers = [(b"host", b"bench.local"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return _REQUEST


async def discard(message: Message) -> None:
    return None


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]

    def cookie(self, name: str) -> bytes | None:
        """``name=value`` from this reply's Set-Cookie for ``name`` (None if absent)."""
        for value in self.header(b"set-cookie"):
            pair = value.split(b";", 1)[0].strip()
            if pair.startswith(name.encode() + b"="):
                return pair
        return None


async def call(app: ASGIApp, scope: dict[str, Any]) -> Reply:
    """One request, keeping the reply (for the checks; the timed loops discard it)."""
    reply = Reply()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")

    await app(dict(scope), receive, send)
    return reply


async def seed(flavor: Flavor) -> bytes | None:
    """Write once without a cookie; return the Cookie header value that the reply set."""
    reply = await call(flavor.app, make_scope("/write", None))
    if reply.status != 200:
        raise RuntimeError(f"{flavor.name}: seeding write answered {reply.status}")
    if flavor.cookie_name is None:
        return None
    cookie = reply.cookie(flavor.cookie_name)
    if cookie is None:
        raise RuntimeError(f"{flavor.name}: the first write set no {flavor.cookie_name} cookie")
    return cookie


def scopes_for(cookie: bytes | None) -> dict[str, dict[str, Any]]:
    """The prebuilt scope of each request kind, all carrying ``cookie``."""
    return {kind: make_scope(f"/{kind}", cookie) for kind in KINDS}


def e2e_app() -> ASGIApp:
    """uvicorn factory for bench_e2e.py: the flavour named by $SESSIONWARE_BENCH_FLAVOR."""
    name = os.environ.get("SESSIONWARE_BENCH_FLAVOR", "bare")
    prefix = os.environ.get("SESSIONWARE_BENCH_PREFIX", "bench:e2e:")
    return build(name, prefix=prefix).app
