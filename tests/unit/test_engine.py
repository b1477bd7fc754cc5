"""The engine on its own: no ASGI, just header values in and header values out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest

from sessionware import BrowserSession, ContentSecurity, Key, PersistentSession, SessionStatus
from sessionware.config import CookieSettings
from sessionware.cookies import session_cookie
from sessionware.crypto import seal
from sessionware.engine import (
    _WRITES,
    PersistError,
    SessionEngine,
    _cookie_line,
    describe,
    failure,
    make_engine,
)
from sessionware.errors import SessionConflictError, SessionError, StoreError
from sessionware.session import Phase, Session, Tracker
from sessionware.stores import CookieSessionStore, MemorySessionStore

Headers = list[tuple[bytes, bytes]]


def engine(
    store: Any, key: Key, security: ContentSecurity = ContentSecurity.PRIVATE, **options: Any
) -> SessionEngine:
    return make_engine(
        store,
        keys=[key],
        security=security,
        cookie=CookieSettings(),
        lifecycle=options.pop("lifecycle", BrowserSession()),
        **options,
    )


async def cycle(
    core: SessionEngine,
    cookie: str | None,
    handler: Callable[[Session], Any] = lambda session: None,
    status: int = 200,
) -> tuple[Tracker, Headers]:
    """One request through the engine: begin, load, the handler, respond (and persist)."""
    tracker = core.begin([cookie.encode()] if cookie else [])
    await core.load(tracker)
    handler(tracker.session)
    headers = core.respond(tracker, status, [])
    if headers is None:
        headers = await core.persist(tracker, status, [])
    return tracker, headers


def set_cookie(headers: Headers) -> str | None:
    """The ``name=value`` of the response's Set-Cookie, if any."""
    found = [v.decode() for n, v in headers if n == b"set-cookie"]
    assert len(found) <= 1
    return found[0].split(";")[0] if found else None


def write(**values: Any) -> Callable[[Session], None]:
    return lambda session: session.update(values)


async def test_a_request_cycle_without_asgi() -> None:
    core = engine(MemorySessionStore(), Key.generate())
    tracker = core.begin([])
    session = await core.load(tracker)
    session["n"] = 1
    assert core.respond(tracker, 200, [(b"content-type", b"text/plain")]) is None  # store I/O
    headers = await core.persist(tracker, 200, [(b"content-type", b"text/plain")])
    assert [n for n, _ in headers] == [b"content-type", b"vary", b"set-cookie", b"cache-control"]
    tracker.release()
    cookie = set_cookie(headers)
    assert cookie is not None

    again = core.begin([b"other=1; " + cookie.encode()])
    assert again.unread and again.key is None, "begin only notes the cookie"
    assert dict(await core.load(again)) == {"n": 1}
    assert again.key is not None
    assert core.respond(again, 200, []) == [(b"vary", b"Cookie")]  # read, not written

    _, headers = await cycle(core, cookie)
    # It carried the session cookie: the response varies by it, though nothing was used.
    assert headers == [(b"vary", b"Cookie")]
    assert (await cycle(core, None))[1] == []


async def test_a_write_sends_back_the_cookie_that_came_unless_an_older_key_sealed_it() -> None:
    store, old, new = MemorySessionStore(), Key.generate(), Key.generate()
    first = engine(store, old)
    _, headers = await cycle(first, None, write(n=1))
    line = dict(headers)[b"set-cookie"].decode()
    came = line.split(";")[0]

    _, headers = await cycle(first, came, write(n=2))
    assert dict(headers)[b"set-cookie"].decode() == line, "the cookie goes back as it came"

    rotated = make_engine(
        store,
        keys=[new, old],
        security=ContentSecurity.PRIVATE,
        cookie=CookieSettings(),
        lifecycle=BrowserSession(),
    )
    later, headers = await cycle(rotated, came, write(n=3))
    resealed = set_cookie(headers)
    assert resealed is not None and resealed != came, "an older key sealed it: sealed anew"
    opened = rotated.open([resealed.encode()])
    assert opened is not None and opened[1] == 0 and opened[0] == later.key
    # Only read, it still goes back under the current key, without a store write.
    store_writes: list[str] = []
    _, headers = await cycle(rotated, came, lambda s: store_writes.append(s["n"]))
    assert rotated.open([set_cookie(headers).encode()])[1] == 0  # type: ignore[union-attr,index]


async def test_a_foreign_cookie_is_ignored_without_store_io() -> None:
    store, key = MemorySessionStore(), Key.generate()
    core = engine(store, key)
    forged = seal(ContentSecurity.PRIVATE, Key.generate(), "id", "a" * 64)
    assert core.open(core.begin([f"id={forged}".encode()]).cookies) is None
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


@pytest.mark.parametrize("security", list(ContentSecurity))
@pytest.mark.parametrize("store", [CookieSessionStore, MemorySessionStore])
async def test_cookie_lines_match_the_general_encoder(
    security: ContentSecurity, store: Any
) -> None:
    """``_cookie_line``'s two-replace path and ``session_cookie``'s percent-encoding agree."""
    core = engine(store(), Key.generate(), security)
    for value in ("a" * 64, '{"v":1,"state":{"a":"b/c=d"}}', "x" * 3000):
        sealed = core.sealer.seal(value)
        general = session_cookie(core.cookie, sealed, core.cookie_max_age)
        if core._base64_seal and not value.isalnum():
            continue  # the fast path is only taken for what it is for
        assert _cookie_line(core, sealed) == general


def test_every_status_has_one_repository_call() -> None:
    assert set(_WRITES) == set(SessionStatus)


# -- the rules of the response, server-side ---------------------------------------------------


async def test_a_write_that_loaded_a_key_a_login_renewed_is_a_409_and_stores_nothing() -> None:
    store = MemorySessionStore()
    core = engine(store, Key.generate())
    _, headers = await cycle(core, None, write(cart=["book"]))
    cookie = set_cookie(headers)
    assert cookie is not None
    slow = core.begin([cookie.encode()])
    await core.load(slow)
    _, headers = await cycle(core, cookie, lambda s: (s.update(user="ada"), s.renew()))
    fresh = set_cookie(headers)
    assert fresh is not None and fresh != cookie
    slow.session["payout_account"] = "attacker"
    assert core.respond(slow, 200, []) is None
    with pytest.raises(PersistError) as refused:
        await core.persist(slow, 200, [])
    assert refused.value.status_code == 409
    reader, _ = await cycle(core, fresh, lambda s: s.get("x"))
    assert dict(reader.session) == {"cart": ["book"], "user": "ada"}


async def test_a_renewed_key_opens_empty_and_never_sends_a_cookie() -> None:
    core = engine(MemorySessionStore(), Key.generate())
    _, headers = await cycle(core, None, write(a=1))
    cookie = set_cookie(headers)
    _, headers = await cycle(core, cookie, lambda s: s.renew())
    fresh = set_cookie(headers)
    # A parallel request of the same browser, still with the old key:
    stale, headers = await cycle(core, cookie, lambda s: s.get("a"))
    assert dict(stale.session) == {} and set_cookie(headers) is None
    assert not stale.session.ended_elsewhere
    # If it writes, nothing is stored and no cookie replaces the login's: a 409.
    stale = core.begin([cookie.encode()])  # type: ignore[union-attr]
    (await core.load(stale))["x"] = 1
    assert core.respond(stale, 200, []) is None
    with pytest.raises(PersistError, match="renewed") as refused:
        await core.persist(stale, 200, [])
    assert refused.value.status_code == 409
    # A login from it too: its new key's cookie would replace the first login's (DESIGN).
    stale = core.begin([cookie.encode()])  # type: ignore[union-attr]
    await core.load(stale)
    stale.session["u"] = "b"
    stale.session.renew()
    with pytest.raises(PersistError, match="renewed"):
        await core.persist(stale, 200, []) if core.respond(stale, 200, []) is None else None
    # A logout from it ends the session the key was renewed to.
    _, headers = await cycle(core, cookie, lambda s: s.purge())
    assert set_cookie(headers) == "id="
    ended, _ = await cycle(core, fresh, lambda s: s.get("a"))
    assert dict(ended.session) == {} and ended.session.ended_elsewhere


async def test_a_late_write_after_a_login_ends_the_session_with_a_conflict() -> None:
    core = engine(MemorySessionStore(), Key.generate())
    _, headers = await cycle(core, None, write(a=1))
    cookie = set_cookie(headers)
    socket, _ = await cycle(core, cookie, lambda s: s.get("a"))  # a WebSocket, accepted
    assert socket.phase is Phase.LATE
    await cycle(core, cookie, lambda s: s.renew())  # the victim logs in meanwhile
    socket.session["payout_account"] = "attacker"
    outcome = socket.late_outcome()
    assert outcome is not None
    await core.persist_late(socket, outcome)
    assert socket.phase is Phase.CLOSED
    with pytest.raises(SessionConflictError):
        socket.session["again"] = 1


async def test_a_background_write_to_a_new_session_raises() -> None:
    """Issue 28 item 11: a new visitor's session takes no write once the response went out."""
    core = engine(MemorySessionStore(), Key.generate())
    tracker, headers = await cycle(core, None)
    assert headers == [] and tracker.phase is Phase.CLOSED
    with pytest.raises(SessionError, match="cannot get a new key once the response has started"):
        tracker.session["from_background"] = True


@pytest.mark.parametrize("store", [CookieSessionStore, MemorySessionStore])
async def test_the_engine_clock_decides_expiry(store: Any) -> None:
    """Issue 24: a clock given only to the middleware expires sessions on every store."""
    now = [1_700_000_000.0]
    core = engine(
        store(),
        Key.generate(),
        clock=lambda: now[0],
        lifecycle=PersistentSession(session_ttl=__import__("datetime").timedelta(minutes=30)),
    )
    _, headers = await cycle(core, None, write(a=1))
    cookie = set_cookie(headers)
    now[0] += 29 * 60
    assert dict((await cycle(core, cookie, lambda s: s.get("a")))[0].session) == {"a": 1}
    now[0] += 3 * 60  # 32 minutes idle
    assert dict((await cycle(core, cookie, lambda s: s.get("a")))[0].session) == {}


# -- one map from failures to responses --------------------------------------------------------


def test_failures_map_to_opaque_statuses() -> None:
    assert failure(StoreError("Redis GET failed: ConnectionError")).status_code == 503
    assert failure(SessionError("the value under 'k'...")).status_code == 500
    conflict = PersistError("x", status_code=409)
    assert failure(conflict) is conflict
    foreign = failure(RuntimeError("Task got Future attached to a different loop"), "load")
    assert foreign.status_code == 503
    assert "RuntimeError: Task got Future attached to a different loop" in str(foreign)


def test_a_foreign_message_that_may_hold_session_data_is_not_logged() -> None:
    key = "A" * 64
    for message in (f"bad key {key}", 'state {"user": "ada"}', "x" * 400):
        text = describe(ValueError(message))
        assert text.startswith("ValueError: #") and key not in text and "ada" not in text
