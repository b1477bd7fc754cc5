"""What a request leaves behind: a session nobody used is freed with its request, by reference
counting alone, and still opens if something uses it after the request is over."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from sessionware import Key, Session, SessionError, SessionMiddleware
from sessionware.stores import CookieSessionStore, MemorySessionStore

Handler = Callable[[Session], Any]


def _middleware(store: Any, key: Key, handler: Handler, seen: list[Session]) -> SessionMiddleware:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        seen.append(session)
        result = handler(session)
        if result is not None:
            await result
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return SessionMiddleware(app, store=store, key=key, cookie_secure=False, lazy=True)


async def _call(app: SessionMiddleware, cookie: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"test")] + ([(b"cookie", cookie)] if cookie else [])
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "scheme": "http"}
    sent: list[tuple[bytes, bytes]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.extend(message["headers"])

    await app(scope, receive, send)
    return sent


async def _write(session: Session) -> None:
    await session.load()
    session["counter"] = 7


STORES = {"cookie": CookieSessionStore, "memory": MemorySessionStore}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Any:
    return STORES[request.param]()


async def _seed(store: Any, key: Key) -> bytes:
    headers = await _call(_middleware(store, key, _write, []), None)
    cookie = dict(headers)[b"set-cookie"].split(b";")[0]
    return cookie


async def test_an_unused_session_is_freed_without_the_collector(store: Any) -> None:
    key = Key.generate()
    cookie = await _seed(store, key)
    seen: list[Session] = []
    app = _middleware(store, key, lambda session: None, seen)
    gc.disable()
    try:
        await _call(app, cookie)
        ref = weakref.ref(seen.pop())
        assert ref() is None, "the session and its request's context held each other"
    finally:
        gc.enable()


async def test_an_unused_session_still_opens_after_its_request(store: Any) -> None:
    key = Key.generate()
    cookie = await _seed(store, key)
    seen: list[Session] = []
    await _call(_middleware(store, key, lambda session: None, seen), cookie)
    session = seen.pop()
    await session.load()
    assert dict(session) == {"counter": 7}
    with pytest.raises(SessionError):
        session["counter"] = 8  # its response has gone: nothing can be stored any more
