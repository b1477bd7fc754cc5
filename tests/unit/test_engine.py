"""The engine on its own: no ASGI, just header values in and header values out."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import unquote

from sessionware import BrowserSession, ContentSecurity, Key
from sessionware.config import CookieSettings
from sessionware.crypto import seal
from sessionware.engine import SessionEngine, make_engine
from sessionware.stores import MemorySessionStore


def engine(store: MemorySessionStore, key: Key) -> SessionEngine:
    return make_engine(
        store,
        keys=[key],
        security=ContentSecurity.PRIVATE,
        cookie=CookieSettings(),
        lifecycle=BrowserSession(),
    )


async def test_a_request_cycle_without_asgi() -> None:
    store, key = MemorySessionStore(), Key.generate()
    core = engine(store, key)
    context = core.begin([])
    session = await core.load(context)
    session["n"] = 1
    headers = await core.finish(context, 200, [(b"content-type", b"text/plain")])
    names = [n for n, _ in headers]
    assert names == [b"content-type", b"vary", b"set-cookie", b"cache-control"]
    cookie = dict(headers)[b"set-cookie"].decode().split(";")[0].split("=", 1)[1]

    again = core.begin([b"other=1; id=" + cookie.encode()])
    assert again.key is None, "begin only notes the cookie; opening it waits for a load"
    assert dict(await core.load(again)) == {"n": 1}
    assert again.key is not None
    assert await core.finish(again, 200, []) == [(b"vary", b"Cookie")]  # read, not written

    untouched = core.begin([b"id=" + cookie.encode()])
    await core.load(untouched)
    # It carried the session cookie: the response varies by it, though nothing was used.
    assert await core.finish(untouched, 200, []) == [(b"vary", b"Cookie")]
    assert await core.finish(core.begin([]), 200, []) == []


async def test_a_write_sends_back_the_cookie_that_came_unless_an_older_key_sealed_it() -> None:
    store, old, new = MemorySessionStore(), Key.generate(), Key.generate()
    first = engine(store, old)
    context = first.begin([])
    (await first.load(context))["n"] = 1
    line = dict(await first.finish(context, 200, []))[b"set-cookie"].decode()
    came = line.split(";")[0]

    again = first.begin([came.encode()])
    (await first.load(again))["n"] = 2
    sent = dict(await first.finish(again, 200, []))[b"set-cookie"].decode()
    assert sent == line, "the same key sealed by the current key: the cookie goes back as it came"

    rotated = make_engine(
        store,
        keys=[new, old],
        security=ContentSecurity.PRIVATE,
        cookie=CookieSettings(),
        lifecycle=BrowserSession(),
    )
    later = rotated.begin([came.encode()])
    (await rotated.load(later))["n"] = 3
    resealed = dict(await rotated.finish(later, 200, []))[b"set-cookie"].decode().split(";")[0]
    assert resealed != came, "sealed by an older key: sealed anew with the current one"
    opened = rotated.open([resealed.encode()])
    assert opened is not None and opened[1] == 0 and opened[0] == later.key


async def test_a_foreign_cookie_is_ignored_without_store_io() -> None:
    store, key = MemorySessionStore(), Key.generate()
    core = engine(store, key)
    forged = seal(ContentSecurity.PRIVATE, Key.generate(), "id", "a" * 64)
    context = core.begin([f"id={forged}".encode()])
    assert core.open(context.cookies) is None
    wrong_shape = seal(ContentSecurity.PRIVATE, key, "id", "user:42")
    assert core.open(core.begin([f"id={wrong_shape}".encode()]).cookies) is None
    assert unquote(forged) == forged


def test_the_engine_imports_no_web_framework() -> None:
    code = (
        "import sys, sessionware.engine;"
        "bad = [m for m in ('starlette', 'fastapi', 'litestar', 'asyncio', 'anyio') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
