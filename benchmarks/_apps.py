"""The one Starlette app every benchmark drives, and each session library put in front of it.

Three routes, the same for every library; only how a handler reaches the session differs:

* ``/write``  reads the counter and stores it plus one;
* ``/read``   reads the counter;
* ``/ignore`` never touches the session (the request still carries the session cookie).

``build(name, ...)`` returns a ready ``Flavor`` (the wrapped app, its cookie name, closers).
Only sessionware's public API is used, so the harness measures any version of the library.
Sockets: Redis, PostgreSQL and MariaDB on 127.0.0.1, and a memcached that ``Services`` starts
on a free loopback port (and stops by its PID).
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
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
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
KINDS = ("write", "read", "ignore")
# What the null Redis middlewares GET and SET when no real record is given: the size of a
# session holding one counter.
DEFAULT_RECORD = b'{"v":1,"state":{"counter":2},"created":1767225600}'

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
    "null-redis-get": ("null", "null middleware doing only one redis-py GET per request"),
    "null-redis-getset": ("null", "null middleware doing only GET, then SET ... EX at start"),
    "floor-cookie": ("floor", "the issue's floor: one-function cookie sessions, no input checks"),
    "floor-checked": ("floor", "the same shape with sessionware's checked pieces (_floors.py)"),
    "floor-redis": ("floor", "the Redis floor: one GET to load, one SET to save, no checks"),
    "floor-redis-checked": ("floor", "the Redis floor with sessionware's pieces and CAS put"),
    "starlette": ("starlette", "starlette.middleware.sessions.SessionMiddleware (itsdangerous)"),
    "starsessions-cookie": ("starsessions", "starsessions 2.2 CookieStore, load_session()"),
    "starsessions-redis": ("starsessions", "starsessions 2.2 RedisStore, load_session()"),
    "sw-cookie-private": ("sessionware", "sessionware CookieSessionStore, PRIVATE (AES-GCM)"),
    "sw-cookie-signed": ("sessionware", "sessionware CookieSessionStore, SIGNED (HMAC)"),
    "sw-memory": ("sessionware", "sessionware MemorySessionStore, lazy=True"),
    "sw-redis": ("sessionware", "sessionware RedisSessionStore, lazy=True"),
    "sw-sqlite": ("sessionware", "sessionware SQLiteSessionStore (temp file), lazy=True"),
    "sw-postgres": ("sessionware", "sessionware PostgresSessionStore (own table), lazy=True"),
    "sw-mysql": ("sessionware", "sessionware MySQLSessionStore (MariaDB, own table), lazy=True"),
    "sw-memcached": ("sessionware", "sessionware MemcachedSessionStore (own server), lazy=True"),
    "sw-cookie-events": ("sessionware", "sw-cookie-private with on_event= a no-op callable"),
    "sw-header": ("sessionware", "sw-cookie-private's store, the token in Authorization: Session"),
    "sw-named": ("sessionware", "sw-cookie-private beside a second, named middleware (unused)"),
    "sw-redis-events": ("sessionware", "sw-redis with on_event= a no-op callable"),
    "sw-redis-every": ("sessionware", "sessionware RedisSessionStore, lazy, ON_EVERY_REQUEST"),
    "sw-memory-eager": ("sessionware", "sessionware MemorySessionStore, lazy=False"),
    "sw-redis-eager": ("sessionware", "sessionware RedisSessionStore, lazy=False"),
    "sw-sqlite-eager": ("sessionware", "sessionware SQLiteSessionStore, lazy=False"),
}
NEEDS_REDIS = frozenset(
    {
        "null-redis-get",
        "null-redis-getset",
        "floor-redis",
        "floor-redis-checked",
        "starsessions-redis",
        "sw-redis",
        "sw-redis-eager",
        "sw-redis-every",
        "sw-redis-events",
    }
)
# Stores that later versions of sessionware may ship: flavour -> (class in sessionware.stores,
# the server it needs). Each runs when the class is importable and its server is reachable.
EXTRA_STORES: dict[str, tuple[str, str]] = {
    "sw-postgres": ("PostgresSessionStore", "postgres"),
    "sw-mysql": ("MySQLSessionStore", "mysql"),
    "sw-memcached": ("MemcachedSessionStore", "memcached"),
}
EVENT_FLAVORS = frozenset({"sw-cookie-events", "sw-redis-events"})
# Flavours that need no set-up beyond build(): what a uvicorn child process can serve.
STANDALONE = frozenset(
    n for n in FLAVORS if n not in EXTRA_STORES and not n.startswith("null-redis")
)


def accepts_on_event() -> bool:
    """Whether the installed SessionMiddleware takes ``on_event=`` (later versions do)."""
    return "on_event" in inspect.signature(SessionwareMiddleware).parameters


def no_op_event(event: object) -> None:
    """The ``on_event`` hook of the ``*-events`` flavours: does nothing, so only the hook's
    own cost is measured."""


def store_class(class_name: str) -> type[Any] | None:
    """``sessionware.stores.<class_name>`` if this version has it, else None."""
    stores = importlib.import_module("sessionware.stores")
    try:
        return getattr(stores, class_name)  # type: ignore[no-any-return]
    except (AttributeError, ImportError):
        return None


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def redis_reachable() -> bool:
    return reachable(6379)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(name: str, services: Services | None = None) -> str | None:
    """Why flavour ``name`` cannot run on this machine with this sessionware, or None."""
    if name in NEEDS_REDIS and not redis_reachable():
        return "Redis is not reachable at 127.0.0.1:6379"
    if name in EVENT_FLAVORS and not accepts_on_event():
        return "the installed SessionMiddleware has no on_event parameter"
    if name in EXTRA_STORES:
        class_name, server = EXTRA_STORES[name]
        if store_class(class_name) is None:
            return f"sessionware.stores has no {class_name} in this version"
        if server == "postgres" and not reachable(5432):
            return "PostgreSQL is not reachable at 127.0.0.1:5432"
        if server == "mysql" and not reachable(3306):
            return "MariaDB/MySQL is not reachable at 127.0.0.1:3306"
        if server == "memcached" and shutil.which("memcached") is None:
            return "no memcached executable (Debian package memcached)"
        if services is None:
            return "needs a Services object (external server set-up)"
    return None


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


async def _floor(request: Request) -> MutableMapping[str, Any]:
    return await request.scope["session"].load()  # type: ignore[no-any-return]


async def _sessionware(request: Request) -> MutableMapping[str, Any]:
    # A no-op for an eagerly loaded session; the store call itself with lazy=True.
    return await get_session(request).load()


GETTERS: dict[str, Getter] = {
    "bare": _bare,
    "null": _bare,
    "starlette": _starlette,
    "starsessions": _starsessions,
    "floor": _floor,
    "sessionware": _sessionware,
}


def build_cookie_name(name: str) -> str | None:
    """The session cookie's name in configuration ``name`` (``None``: it sets none)."""
    family = FLAVORS[name][0]
    if family in ("bare", "null"):
        return None
    return "id" if family in ("sessionware", "floor") else "session"


def make_app(
    getter: Getter, middleware: list[Middleware], routes: Sequence[Route] = ()
) -> Starlette:
    """The benchmark app: the same three routes whatever the session library (plus ``routes``,
    for a script's own set-up requests)."""

    async def write(request: Request) -> Response:
        session = await getter(request)
        session["counter"] = session.get("counter", 0) + 1
        return PlainTextResponse("ok")

    async def read(request: Request) -> Response:
        session = await getter(request)
        return PlainTextResponse(str(session.get("counter", 0)))

    async def ignore(request: Request) -> Response:
        return PlainTextResponse("ignored")

    common = [Route("/write", write), Route("/read", read), Route("/ignore", ignore)]
    return Starlette(routes=[*common, *routes], middleware=middleware)


# -- the baselines -----------------------------------------------------------------------------


class NullMiddleware:
    """What any session middleware costs at least: one more ASGI layer and a wrapped ``send``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        async def wrapped(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


class NullRedisMiddleware:
    """The null middleware plus the round trips a Redis-backed session needs at least: one GET
    of a session-sized record per request and, with ``write``, one SET ... EX when the response
    starts (where a session middleware saves). Nothing is decoded or checked."""

    def __init__(self, app: ASGIApp, *, client: Any, key: str, record: bytes, write: bool) -> None:
        self.app, self.client, self.key, self.record, self.write = app, client, key, record, write

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        client, key, record = self.client, self.key, self.record
        await client.get(key)
        if self.write:

            async def wrapped(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await client.set(key, record, ex=3600)
                await send(message)

        else:

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


# -- servers beyond Redis ----------------------------------------------------------------------


def construct(
    cls: type[Any], url: str, *, driver_options: dict[str, Any] | None = None, **options: Any
) -> Any:
    """``cls.from_dsn(url, ...)`` or ``cls.from_url(url, ...)``, passing only the options its
    signature names (so a version without one of them still builds), and ``driver_options``
    (e.g. a pool's ``init``) through its ``**kwargs``; raise if it has none."""
    factory = getattr(cls, "from_dsn", None) or getattr(cls, "from_url", None)
    if factory is None:
        raise RuntimeError(f"{cls.__name__} has neither from_dsn nor from_url")
    params = inspect.signature(factory).parameters
    if "table" in options and "table" not in params:
        # Never fall back to the store's default table: it may hold someone else's data.
        raise RuntimeError(f"{cls.__name__}.{factory.__name__} takes no table=; not run")
    chosen = {k: v for k, v in options.items() if k in params}
    if driver_options:
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            raise RuntimeError(f"{cls.__name__}.{factory.__name__} passes no driver options")
        chosen.update(driver_options)
    return factory(url, **chosen)


class Services:
    """External servers one run uses beyond Redis: its own tables in PostgreSQL and MariaDB
    (``bench_<tag>_<n>``) and its own memcached. ``aclose()`` drops and stops what it made."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:12]
        self._tables = 0
        self._used: set[str] = set()
        self._memcached: subprocess.Popen[bytes] | None = None
        self._memcached_port = 0

    def table(self, server: str | None = None) -> str:
        """A fresh table name of this run; naming its ``server`` ("postgres" or "mysql") has
        ``aclose()`` drop it."""
        if server is not None:
            self._used.add(server)
        self._tables += 1
        return f"bench_{self.tag}_{self._tables}"

    def store(self, name: str) -> Any:
        class_name, server = EXTRA_STORES[name]
        cls = store_class(class_name)
        if cls is None:
            raise RuntimeError(f"sessionware.stores has no {class_name}")
        self._used.add(server)
        if server == "postgres":
            return construct(cls, POSTGRES_DSN, table=self.table())
        if server == "mysql":
            return construct(cls, MYSQL_DSN, table=self.table())
        port = self.memcached_port()
        return construct(cls, f"memcached://127.0.0.1:{port}", key_prefix=f"bench:{self.tag}:")

    def memcached_port(self) -> int:
        """Start one memcached on a free loopback port (once); return its port."""
        if self._memcached is None:
            port = free_port()
            argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]  # memcached refuses to run as root unless told to
            self._memcached = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 5
            while not reachable(port):
                if self._memcached.poll() is not None or time.monotonic() > deadline:
                    self._stop_memcached()
                    raise RuntimeError("memcached did not start")
                time.sleep(0.02)
            self._memcached_port = port
        return self._memcached_port

    def _stop_memcached(self) -> None:
        process, self._memcached = self._memcached, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    async def aclose(self) -> list[str]:
        """Drop this run's tables and stop its memcached; return what could not be cleaned."""
        problems = []
        self._stop_memcached()
        prefix = f"bench_{self.tag}_"
        if "postgres" in self._used:
            try:
                await _drop_postgres_tables(prefix)
            except Exception as exc:
                problems.append(f"PostgreSQL tables {prefix}*: {type(exc).__name__}: {exc}")
        if "mysql" in self._used:
            try:
                _drop_mysql_tables(prefix)
            except Exception as exc:
                problems.append(f"MariaDB tables {prefix}*: {type(exc).__name__}: {exc}")
        return problems


async def _drop_postgres_tables(prefix: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_DSN, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE left(tablename, $1) = $2",
            len(prefix),
            prefix,
        )
        for row in rows:
            await conn.execute(
                f'DROP TABLE IF EXISTS "{row["schemaname"]}"."{row["tablename"]}" CASCADE'
            )
    finally:
        await conn.close()


def _drop_mysql_tables(prefix: str) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise RuntimeError("no mariadb/mysql client to drop the tables with")
    base = [client, "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B", "test", "-e"]
    query = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'test'"
        f" AND LEFT(table_name, {len(prefix)}) = '{prefix}'"
    )
    found = subprocess.run([*base, query], capture_output=True, text=True, check=True, timeout=30)
    tables = [t for t in found.stdout.split() if t.startswith(prefix)]
    if tables:
        drop = "DROP TABLE IF EXISTS " + ", ".join(f"`{t}`" for t in tables)
        subprocess.run([*base, drop], capture_output=True, check=True, timeout=30)


# -- the flavours ------------------------------------------------------------------------------


@dataclass
class Flavor:
    name: str
    family: str
    app: ASGIApp
    cookie_name: str | None
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    # Run once before the first request (e.g. the null Redis middlewares' record).
    prepare: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    # The request header that carries the session (HeaderTransport's: Authorization).
    carrier: bytes = b"cookie"

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            await close()


def build(
    name: str,
    *,
    prefix: str = "",
    policy: TtlExtensionPolicy | None = None,
    counts: Counter[str] | None = None,
    tmpdir: str | None = None,
    memory_max_entries: int = 100_000,
    services: Services | None = None,
    record: bytes = DEFAULT_RECORD,
    routes: Callable[[Getter], Sequence[Route]] | None = None,
) -> Flavor:
    """The app behind ``name``'s session middleware. ``prefix`` namespaces Redis keys; ``policy``
    (sessionware only) sets ``BrowserSession(state_ttl_extension_policy=...)``; ``record`` is what
    the null Redis middlewares GET and SET; ``routes(getter)`` adds routes reaching the session
    the way this flavour's handlers do."""
    reason = unavailable(name, services)
    if reason is not None:
        raise RuntimeError(f"{name}: {reason}")
    family, _ = FLAVORS[name]
    closers: list[Callable[[], Awaitable[Any]]] = []
    prepare: list[Callable[[], Awaitable[Any]]] = []
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    middleware: list[Middleware] = []
    cookie_name: str | None = None
    if name == "null-mw":
        middleware = [Middleware(NullMiddleware)]
    elif name.startswith("null-redis"):
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL, **redis_options())
        closers.append(client.aclose)
        key = f"{prefix}null:{uuid.uuid4().hex}"

        async def put_record() -> None:
            await client.set(key, record, ex=3600)

        prepare.append(put_record)
        middleware = [
            Middleware(
                NullRedisMiddleware,
                client=client,
                key=key,
                record=record,
                write=name == "null-redis-getset",
            )
        ]
    elif family == "floor":
        import _floors

        if name.startswith("floor-redis"):
            from redis.asyncio import Redis

            from sessionware.stores import RedisSessionStore

            # One client, in the one loop the app runs in: the unchecked floor sends its
            # commands itself, the checked one through the store.
            client = Redis.from_url(REDIS_URL, **redis_options())
            closers.append(client.aclose)
            floor_store = RedisSessionStore(client, key_prefix=prefix + "floor:")
            floor: Any = (
                _floors.FloorRedisMiddleware
                if name == "floor-redis"
                else _floors.FloorRedisCheckedMiddleware
            )
            middleware = [Middleware(floor, key=Key.generate(), store=floor_store, client=client)]
        else:
            floor = (
                _floors.FloorCookieMiddleware
                if name == "floor-cookie"
                else _floors.FloorCheckedMiddleware
            )
            middleware = [Middleware(floor, key=Key.generate())]
        cookie_name = "id"
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
        if name == "sw-redis-every":
            policy = TtlExtensionPolicy.ON_EVERY_REQUEST
        cookie = name.startswith(("sw-cookie", "sw-header", "sw-named"))
        security = ContentSecurity.SIGNED if name == "sw-cookie-signed" else ContentSecurity.PRIVATE
        if cookie:
            sw_store: Any = CookieSessionStore()
        elif name.startswith("sw-memory"):
            sw_store = MemorySessionStore(max_entries=memory_max_entries)
        elif name.startswith("sw-redis"):
            from sessionware.stores import RedisSessionStore

            key_prefix = prefix + "sessionware:"
            if counts is not None:
                client = CountingRedis.from_url(REDIS_URL, counts, **redis_options())
                closers.append(client.aclose)
                sw_store = RedisSessionStore(client, key_prefix=key_prefix)
            else:
                sw_store = RedisSessionStore.from_url(REDIS_URL, key_prefix=key_prefix)
        elif name.startswith("sw-sqlite"):
            from sessionware.stores import SQLiteSessionStore

            directory = tmpdir or tempfile.mkdtemp(prefix="sessionware-bench-")
            sw_store = SQLiteSessionStore(os.path.join(directory, f"{uuid.uuid4().hex}.sqlite3"))
        else:
            assert services is not None  # unavailable() said so otherwise
            sw_store = services.store(name)
        close = getattr(sw_store, "aclose", None)
        if close is not None:
            closers.append(close)
        options: dict[str, Any] = {
            "store": sw_store,
            "key": Key.generate(),
            "content_security": security,
            "lazy": not cookie and not name.endswith("-eager"),
        }
        if policy is not None:
            options["lifecycle"] = BrowserSession(state_ttl_extension_policy=policy)
        if name in EVENT_FLAVORS:
            options["on_event"] = no_op_event
        if name == "sw-header":
            from sessionware import HeaderTransport

            options["transport"] = HeaderTransport()
        middleware = [Middleware(SessionwareMiddleware, **options)]
        if name == "sw-named":  # an admin area's session, which these requests never use
            admin = {"store": CookieSessionStore(), "key": Key.generate(), "name": "admin"}
            middleware.append(Middleware(SessionwareMiddleware, **admin))
        cookie_name = "id"
    getter = GETTERS[family]
    app = make_app(getter, middleware, routes(getter) if routes is not None else ())
    carrier = b"authorization" if name == "sw-header" else b"cookie"
    return Flavor(name, family, app, cookie_name, closers, prepare, carrier)


async def delete_prefixed(prefix: str, url: str = REDIS_URL) -> int:
    """Delete every Redis key under ``prefix`` in ``url``'s database (SCAN, bounded by what
    exists; UNLINK a thousand at a time); return how many."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, **redis_options())
    deleted, batch = 0, []
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


async def first_record(prefix: str) -> bytes | None:
    """The value of one string key under ``prefix`` (a real session record), or None."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, **redis_options())
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            if await client.type(key) in (b"string", "string"):
                value = await client.get(key)
                if value:
                    return bytes(value)
    finally:
        await client.aclose()
    return None


# -- raw ASGI ------------------------------------------------------------------------------------


def make_scope(path: str, cookie: bytes | None, carrier: bytes = b"cookie") -> dict[str, Any]:
    """An HTTP/1.1 GET scope as uvicorn would build it, with the session cookie (or the
    ``carrier`` header's value) if given."""
    headers = [(b"host", b"bench.local"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    if cookie is not None:
        headers.append((carrier, cookie))
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
    """Run the flavour's set-up, write once without a cookie, and return the Cookie header
    value that the reply set (None for flavours without a session cookie)."""
    for step in flavor.prepare:
        await step()
    flavor.prepare.clear()
    reply = await call(flavor.app, make_scope("/write", None))
    if reply.status != 200:
        raise RuntimeError(f"{flavor.name}: seeding write answered {reply.status}")
    if flavor.cookie_name is None:
        return None
    if flavor.carrier != b"cookie":  # HeaderTransport: the token comes back in Session-Token
        tokens = reply.header(b"session-token")
        if not tokens:
            raise RuntimeError(f"{flavor.name}: the first write sent no Session-Token")
        return b"Session " + tokens[0]
    cookie = reply.cookie(flavor.cookie_name)
    if cookie is None:
        raise RuntimeError(f"{flavor.name}: the first write set no {flavor.cookie_name} cookie")
    return cookie


def scopes_for(cookie: bytes | None, carrier: bytes = b"cookie") -> dict[str, dict[str, Any]]:
    """The prebuilt scope of each request kind, all carrying ``cookie`` (in ``carrier``)."""
    return {kind: make_scope(f"/{kind}", cookie, carrier) for kind in KINDS}


def e2e_app() -> ASGIApp:
    """uvicorn factory for bench_e2e.py: the flavour named by $SESSIONWARE_BENCH_FLAVOR."""
    name = os.environ.get("SESSIONWARE_BENCH_FLAVOR", "bare")
    if name not in STANDALONE:
        raise RuntimeError(f"{name} needs set-up a uvicorn child cannot do; not served")
    prefix = os.environ.get("SESSIONWARE_BENCH_PREFIX", "bench:e2e:")
    return build(name, prefix=prefix).app
