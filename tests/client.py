"""A small ASGI test client that handles cookies explicitly, and a store wrapper that records calls.

Cookies are passed and read by hand (``cookies={...}``, ``response.cookie(name)``) so tests see
exactly what a browser would get, Secure cookies included (the scheme is https).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sessionware.repository import Loaded, Repository
from sessionware.state import StoredState
from sessionware.stores.base import (
    Absent,
    Record,
    RecordStore,
    SessionKey,
    UserIndex,
    UserSessionsMixin,
    Version,
)
from sessionware.stores.cookie import CookieSessionStore


@dataclass
class SetCookie:
    """One parsed Set-Cookie line."""

    name: str
    value: str
    attrs: dict[str, str] = field(default_factory=dict)
    line: str = ""

    @classmethod
    def parse(cls, line: str) -> SetCookie:
        first, *rest = line.split("; ")
        name, _, value = first.partition("=")
        attrs = {}
        for part in rest:
            key, _, val = part.partition("=")
            attrs[key.lower()] = val
        return cls(name, value, attrs, line)

    @property
    def max_age(self) -> int | None:
        return int(self.attrs["max-age"]) if "max-age" in self.attrs else None

    @property
    def is_removal(self) -> bool:
        return self.value == "" and self.max_age == 0


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    exception: BaseException | None = None

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def set_cookies(self) -> list[SetCookie]:
        return [SetCookie.parse(v) for v in self.header_all("set-cookie")]

    def cookie(self, name: str = "id") -> SetCookie | None:
        found = [c for c in self.set_cookies if c.name == name]
        assert len(found) <= 1, f"several Set-Cookie for {name}: {found}"
        return found[0] if found else None

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return jsonlib.loads(self.body)


async def request(
    app: Any,
    method: str,
    path: str,
    *,
    cookies: Mapping[str, str] | None = None,
    cookie_header: str | bytes | list[bytes] | None = None,
    json: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    form: Mapping[str, str] | None = None,
) -> Response:
    """Call ``app`` once over raw ASGI and collect the response (``json`` or ``form``: the body,
    with its content type; else ``body``, as it is)."""
    raw_headers = list(headers or [])
    if cookies:
        raw_headers.append(
            (b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode("latin-1"))
        )
    if cookie_header is not None:
        values = cookie_header if isinstance(cookie_header, list) else [cookie_header]
        for value in values:
            raw_headers.append(
                (b"cookie", value.encode("latin-1") if isinstance(value, str) else value)
            )
    path, _, query = path.partition("?")
    if json is not None:
        body = jsonlib.dumps(json).encode()
        raw_headers.append((b"content-type", b"application/json"))
    if form is not None:
        body = urlencode(form).encode()
        raw_headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *raw_headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
        "state": {},
    }
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    exception = None
    try:
        await app(scope, receive, send)
    except Exception as exc:
        if not messages:
            raise
        exception = exc
    start = messages[0]
    assert start["type"] == "http.response.start", messages
    return Response(
        status=start["status"],
        headers=[(k.decode().lower(), v.decode("latin-1")) for k, v in start.get("headers", [])],
        body=b"".join(m.get("body", b"") for m in messages[1:]),
        exception=exception,
    )


class RecordingStore:
    """Wraps a record store and records every call made to it, by method name.

    It has the per-user index methods only when the inner store has them.
    """

    def __new__(cls, inner: Any) -> Any:
        if isinstance(inner, CookieSessionStore):
            return RecordingCookieStore(inner)
        if cls is RecordingStore and isinstance(inner, UserIndex):
            cls = _RecordingIndexed
        return super().__new__(cls)

    def __init__(self, inner: RecordStore) -> None:
        self.inner = inner
        self.hash_keys = inner.hash_keys
        self.calls: list[str] = []
        self.hook: Callable[[str], Awaitable[None]] | None = None
        """Awaited with the operation's name before each call (to park or fail it)."""
        self.after: Callable[[str], Awaitable[None]] | None = None
        """Awaited with the operation's name after each call answered (to park its caller)."""

    async def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.hook is not None:
            await self.hook(name)

    async def _answered(self, name: str) -> None:
        if self.after is not None:
            await self.after(name)

    @property
    def writes(self) -> list[str]:
        return [c for c in self.calls if c not in ("get", "index_members")]

    async def get(self, id: str) -> Record | None:
        await self._call("get")
        record = await self.inner.get(id)
        await self._answered("get")
        return record

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        await self._call("put")
        version = await self.inner.put(id, data, ttl, expect=expect)
        await self._answered("put")
        return version

    async def touch(self, id: str, ttl: timedelta) -> bool:
        await self._call("touch")
        touched = await self.inner.touch(id, ttl)
        await self._answered("touch")
        return touched

    async def delete(self, id: str) -> None:
        await self._call("delete")
        await self.inner.delete(id)
        await self._answered("delete")


class _RecordingIndexed(RecordingStore, UserSessionsMixin):
    inner: Any

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self._call("index_add")
        await self.inner.index_add(user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self._call("index_remove")
        await self.inner.index_remove(user, id)

    async def index_members(self, user: str) -> list[str]:
        await self._call("index_members")
        return list(await self.inner.index_members(user))


async def stored(store: Any, key: str) -> StoredState | None:
    """The state a record store holds for session ``key`` now (``None``: no live session)."""
    inner = getattr(store, "inner", store)
    loaded = await Repository(inner).load(SessionKey(key), timedelta(minutes=5))
    return loaded.state if isinstance(loaded, Loaded) else None


class RecordingCookieStore(CookieSessionStore):
    """The cookie store, recording its calls under the record-store names they stand for:
    ``get`` for opening a cookie's state, ``put`` for writing one."""

    def __init__(self, inner: CookieSessionStore) -> None:
        self.__dict__.update(inner.__dict__)
        self.inner = inner
        self.calls: list[str] = []

    @property
    def writes(self) -> list[str]:
        return [c for c in self.calls if c != "get"]

    def read(self, text: str) -> Any:
        self.calls.append("get")
        return self.inner.read(text)

    def dump(self, state: Any, ttl: timedelta, **options: Any) -> str:
        self.calls.append("put")
        return self.inner.dump(state, ttl, **options)


class Gate:
    """A ``RecordingStore.hook`` that parks (or, with ``fail``, fails) the ``nth`` call of ``op``;
    as ``RecordingStore.after``, it parks the caller once that call has answered.

    ``arrived`` is set when the call is parked; it goes on once ``release`` is set.
    """

    def __init__(self, op: str, nth: int = 1, *, fail: BaseException | None = None) -> None:
        self.op, self.nth, self.fail = op, nth, fail
        self.seen = 0
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, name: str) -> None:
        if name != self.op:
            return
        self.seen += 1
        if self.seen != self.nth:
            return
        if self.fail is not None:
            raise self.fail
        self.arrived.set()
        await asyncio.wait_for(self.release.wait(), timeout=30)


async def websocket(
    app: Any,
    path: str,
    *,
    cookies: Mapping[str, str] | None = None,
    spec_version: str | None = "2.4",
    origin: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[dict[str, Any]]:
    """Open a WebSocket on ``app`` over raw ASGI; return every message the app sent.
    ``spec_version=None``: a server whose scope names none (daphne: ASGI 2.0)."""
    path, _, query = path.partition("?")
    headers = [(b"host", b"testserver"), *(headers or ())]
    if cookies:
        headers.append(
            (b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode("latin-1"))
        )
    if origin is not None:
        headers.append((b"origin", origin.encode("latin-1")))
    asgi = (
        {"version": "3.0"}
        if spec_version is None
        else {"version": "3.0", "spec_version": spec_version}
    )
    scope = {
        "type": "websocket",
        "asgi": asgi,
        "http_version": "1.1",
        "scheme": "wss",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
        "subprotocols": [],
        "state": {},
    }
    connected = False

    async def receive() -> dict[str, Any]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        return {"type": "websocket.disconnect", "code": 1000}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages


async def lifespan(
    app: Any, during: Callable[[], Awaitable[object]] | None = None
) -> list[dict[str, Any]]:
    """Drive ``app``'s ASGI lifespan as a server does: start-up, then (when it completed)
    ``await during()`` and shutdown. Every message the app sent, in order."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    answer = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))
        answer.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    answered = asyncio.create_task(answer.wait())
    await asyncio.wait({task, answered}, return_when=asyncio.FIRST_COMPLETED)
    answered.cancel()
    if sent and sent[-1]["type"] == "lifespan.startup.complete":
        if during is not None:
            await during()
        await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 10)
    return sent


class Reports(list[Any]):
    """Events as ``on_event`` hands them over, from any thread; ``wait`` for one condition."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def __call__(self, event: Any) -> None:
        with self._changed:
            self.append(event)
            self._changed.notify_all()

    def wait(self, done: Callable[[list[Any]], bool], timeout: float = 10) -> bool:
        """Block until ``done(events)`` holds (at most ``timeout`` seconds); whether it does."""
        with self._changed:
            return self._changed.wait_for(lambda: done(self), timeout)

    async def until(self, done: Callable[[list[Any]], bool], timeout: float = 10) -> bool:
        """``wait`` without blocking the event loop the events come from."""
        return await asyncio.to_thread(self.wait, done, timeout)
