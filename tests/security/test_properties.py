"""Properties, with hypothesis: round trips, tamper resistance, junk headers, and a stateful model.

Budgets come from ``tests/security/hypo.py`` (small and derandomised in CI; ``HYPOTHESIS_PROFILE=
long`` for a long run).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sessionware import BrowserSession, ContentSecurity, Key
from sessionware.crypto import seal, unseal
from sessionware.stores import (
    CookieSessionStore,
    MemorySessionStore,
    SessionStore,
    generate_session_key,
)
from sessionware.stores.base import Absent, Record, Version
from tests.acceptance.apps import make_app
from tests.client import request, stored
from tests.security.apps import Probes, probe_routes
from tests.security.hypo import BUDGET, LONG, budget

MODES = list(ContentSecurity)
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner`` (a named function: hypothesis reads it to see it recurses)."""
    return st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4)


JSON_VALUES = st.recursive(_SCALARS, _containers, max_leaves=10)
STATES = st.dictionaries(_TEXT, JSON_VALUES, max_size=5)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


# --- round trips --------------------------------------------------------------------------------


def _wire_size(state: Mapping[str, Any]) -> int:
    text = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
    return len(quote(text, safe=""))


@budget(80)
@given(state=STATES, security=st.sampled_from(MODES), cookie_store=st.booleans())
def test_any_json_state_round_trips(
    state: dict[str, Any], security: ContentSecurity, cookie_store: bool
) -> None:
    if cookie_store:
        assume(_wire_size(state) < 2500)  # within what a cookie can hold
    store: SessionStore = CookieSessionStore() if cookie_store else MemorySessionStore()
    app = make_app(store=store, content_security=security)

    async def scenario() -> None:
        r = await request(app, "POST", "/set", json=state)
        assert r.status == 200
        cookie = r.cookie()
        if not state:
            assert cookie is None
            return
        assert cookie is not None
        r = await request(app, "GET", "/all", cookies={"id": cookie.value})
        assert r.json() == state

    run(scenario())


# --- tampering ----------------------------------------------------------------------------------


@st.composite
def sealed_cookies(draw: st.DrawFn) -> tuple[ContentSecurity, Key, str]:
    security = draw(st.sampled_from(MODES))
    key = Key(draw(st.binary(min_size=64, max_size=64)))
    if draw(st.booleans()):
        plain: str = generate_session_key()
    else:
        plain = json.dumps({"v": 1, "state": draw(STATES)}, separators=(",", ":"))
        assume(len(plain) < 1500)
    return security, key, seal(security, key, "id", plain)


@st.composite
def mutations(draw: st.DrawFn, value: str) -> str:
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "reorder", "delete"]))
    n = len(value)
    if kind == "truncate":
        return value[: draw(st.integers(0, n - 1))]
    if kind == "flip":
        i = draw(st.integers(0, n - 1))
        return value[:i] + chr(ord(value[i]) ^ (1 << draw(st.integers(0, 6)))) + value[i + 1 :]
    if kind == "insert":
        i = draw(st.integers(0, n))
        return value[:i] + draw(st.characters()) + value[i:]
    if kind == "delete":
        i = draw(st.integers(0, n - 1))
        return value[:i] + value[i + 1 :]
    i, j = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2, unique=True)))
    k = draw(st.integers(j, n))
    mutated = value[:i] + value[j:k] + value[i:j] + value[k:]  # swap two adjacent chunks
    assume(mutated != value)
    return mutated


@budget(400)
@given(data=st.data(), cookie=sealed_cookies())
def test_every_mutation_of_a_valid_cookie_opens_to_nothing(
    data: st.DataObject, cookie: tuple[ContentSecurity, Key, str]
) -> None:
    security, key, value = cookie
    assert unseal(security, [key], "id", value) is not None
    mutated = data.draw(mutations(value))
    note(f"mutated: {mutated!r}")
    assert unseal(security, [key], "id", mutated) is None
    assert unseal(security, [Key.generate(), key], "id", mutated) is None


@budget(60)
@given(data=st.data(), cookie=sealed_cookies(), cookie_store=st.booleans())
def test_mutated_cookies_through_the_middleware(
    data: st.DataObject, cookie: tuple[ContentSecurity, Key, str], cookie_store: bool
) -> None:
    security, key, _ = cookie
    store: SessionStore = CookieSessionStore() if cookie_store else MemorySessionStore()
    app = make_app(store=store, key=key, content_security=security)

    async def scenario() -> None:
        r = await request(app, "POST", "/set", json={"user_id": "alice"})
        valid = unquote(r.cookie().value)  # type: ignore[union-attr]
        mutated = data.draw(mutations(valid))
        r = await request(app, "GET", "/all", cookie_header=f"id={quote(mutated, safe='')}")
        assert r.status == 200 and r.json() == {} and r.set_cookies == []

    run(scenario())


@budget(300)
@given(
    security=st.sampled_from(MODES),
    junk=st.text(max_size=300) | st.text(st.characters(max_codepoint=0x7F), max_size=300),
)
def test_unseal_never_raises_on_junk(security: ContentSecurity, junk: str) -> None:
    assert unseal(security, [Key.generate()], "id", junk) is None


_PIECES = [b";", b"id=", b"=", b" ", b'"', b"%", b"%FF", b"id", b"\x00", b"\xff", b"\r\n", b","]


def _headers() -> st.SearchStrategy[bytes | list[bytes]]:
    pieces = st.lists(st.sampled_from(_PIECES) | st.binary(max_size=8), max_size=300)
    huge = st.tuples(st.integers(1, 60_000), st.sampled_from([b"A", b";", b"id=", b"%41"])).map(
        lambda t: b"id=" + t[1] * t[0]
    )
    many = st.integers(1, 5000).map(lambda n: b"; ".join(b"id=x%d" % i for i in range(n)))
    single = st.binary(max_size=2000) | pieces.map(b"".join) | huge | many
    return single | st.lists(single, min_size=2, max_size=5)


@budget(100)
@given(header=_headers(), security=st.sampled_from(MODES), cookie_store=st.booleans())
def test_arbitrary_cookie_headers_never_give_5xx(
    header: bytes | list[bytes], security: ContentSecurity, cookie_store: bool
) -> None:
    store: SessionStore = CookieSessionStore() if cookie_store else MemorySessionStore()
    app = make_app(store=store, content_security=security)

    async def scenario() -> None:
        r = await request(app, "GET", "/all", cookie_header=header)
        assert r.status == 200 and r.json() == {}
        r = await request(app, "POST", "/set", cookie_header=header, json={"k": 1})
        assert r.status == 200 and r.json() == {"k": 1}

    run(scenario())


# --- the stateful model ---------------------------------------------------------------------------

TTL = 3600
MAX_AGE = 5400


class Flaky:
    """A record-store wrapper that fails every call while ``down`` and counts writes."""

    def __init__(self, inner: MemorySessionStore) -> None:
        self.inner = inner
        self.hash_keys = inner.hash_keys
        self.down = False
        self.writes = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("the store is down")

    async def get(self, id: str) -> Record | None:
        self._check()
        return await self.inner.get(id)

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        self._check()
        self.writes += 1
        return await self.inner.put(id, data, ttl, expect=expect)

    async def touch(self, id: str, ttl: timedelta) -> bool:
        self._check()
        self.writes += 1
        return await self.inner.touch(id, ttl)

    async def delete(self, id: str) -> None:
        self._check()
        self.writes += 1
        await self.inner.delete(id)


class SessionMachine(RuleBasedStateMachine):
    """A browser with one cookie jar against the middleware and a memory store.

    Model: the state of the browser's current session (``model``), when it was created and last
    written (for the absolute and idle timeouts), the key ring, and every cookie ever issued.
    """

    cookies = Bundle("cookies")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.memory = MemorySessionStore()
        self.store = Flaky(self.memory)
        self.security = ContentSecurity.PRIVATE
        self.ring = [Key.generate()]
        self.routes = probe_routes(Probes())
        self.app = self._app()
        self.cookie: str | None = None  # the browser's cookie
        self.model: dict[str, Any] = {}
        self.created = self.written = 0.0
        self.dead: set[str] = set()  # session keys purged or renewed away

    def teardown(self) -> None:
        self.loop.close()

    def _app(self) -> Any:
        return make_app(
            routes=self.routes,
            store=self.store,
            keys=list(self.ring),
            content_security=self.security,
            lifecycle=BrowserSession(
                state_ttl=timedelta(seconds=TTL), max_age=timedelta(seconds=MAX_AGE)
            ),
            clock=self.clock,
        )

    # -- what the model knows -------------------------------------------------------------------

    def _open(self, cookie: str | None) -> str | None:
        """The session key inside ``cookie`` if the current ring opens it."""
        if cookie is None:
            return None
        opened = unseal(self.security, self.ring, "id", unquote(cookie))
        return None if opened is None else opened[0]

    def _alive(self) -> bool:
        key = self._open(self.cookie)
        now = self.clock()
        return (
            key is not None
            and key not in self.dead
            and now - self.written < TTL
            and now - self.created < MAX_AGE
        )

    def _expected(self) -> dict[str, Any]:
        if not self._alive():
            self.model = {}
        return self.model

    def _send(self, method: str, path: str, body: Any = None, cookie: str | None = None) -> Any:
        return self.loop.run_until_complete(
            request(self.app, method, path, cookies={"id": cookie} if cookie else None, json=body)
        )

    def _write(self, path: str, body: Any, apply: Any) -> Any:
        """A request that changes the session; the model follows unless the store is down."""
        expected = self._expected()
        opens = self._open(self.cookie) is not None
        alive = self._alive()
        r = self._send("POST", path, body, self.cookie)
        after = apply(dict(expected))
        if self.store.down and (opens or (after and path == "/set")):
            assert r.status == 503 and r.body == b"" and r.set_cookies == []
            return None
        assert r.status == 200, r.status
        now = self.clock()
        cookie = r.cookie()
        if cookie is not None and cookie.is_removal:
            self.dead.add(self._open(self.cookie) or "")
            self.cookie, self.model = None, {}
            return r
        if cookie is not None:
            old_key = self._open(self.cookie)
            new_key = self._open(cookie.value)
            if not alive:
                self.created = now
            if old_key is not None and new_key != old_key and alive:
                self.dead.add(old_key)  # renewed away
            self.cookie, self.written = cookie.value, now
        self.model = after
        return r

    # -- rules ----------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.clock.now = float(int(time.time()))

    @rule(target=cookies, key=st.sampled_from("abc"), value=st.integers(0, 9) | st.text(max_size=3))
    def insert(self, key: str, value: Any) -> str:
        self._write("/set", {key: value}, lambda m: {**m, key: value})
        return self.cookie or ""

    @rule(key=st.sampled_from("abcz"))
    def remove(self, key: str) -> None:
        self._write("/remove", {"key": key}, lambda m: {k: v for k, v in m.items() if k != key})

    @rule()
    def clear(self) -> None:
        self._write("/clear", None, lambda m: {})

    @rule(target=cookies)
    def purge(self) -> str:
        before = self.cookie
        alive = self._alive()
        r = self._write("/purge", None, lambda m: {})
        if r is not None and alive:
            assert self.cookie is None, "a purge must send a removal cookie"
        return before or ""

    @rule(target=cookies)
    def renew(self) -> str:
        before = self.cookie
        self._write("/renew", None, lambda m: m)
        return before or ""

    @rule()
    def read(self) -> None:
        expected = self._expected()
        opens = self._open(self.cookie) is not None
        writes = self.store.writes
        r = self._send("GET", "/all", cookie=self.cookie)
        if self.store.down and opens:
            assert r.status == 503 and r.body == b""
            return
        assert r.status == 200 and r.json() == expected
        assert self.store.writes == writes, "an unchanged session was written"
        reissued = r.cookie()
        if reissued is not None:  # sealed with an older key of the ring
            assert self._open(reissued.value) == self._open(self.cookie)
            self.cookie = reissued.value

    @rule(old=cookies)
    def replay(self, old: str) -> None:
        if not old:
            return
        key = self._open(old)
        writes = self.store.writes
        r = self._send("GET", "/all", cookie=old)
        if self.store.down and key is not None:
            assert r.status == 503
            return
        assert r.status == 200
        assert self.store.writes == writes, "a replayed read wrote to the store"
        if key is None or key in self.dead or key != self._open(self.cookie) or not self._alive():
            assert r.json() == {}, "a purged, renewed, expired or retired cookie came back"
        else:
            assert r.json() == self.model

    @rule(seconds=st.sampled_from([1, 60, 1800, 3599, 3600, 3601, 5400]))
    def advance(self, seconds: int) -> None:
        self.clock.now += seconds

    @precondition(lambda self: not self.store.down)
    @rule()
    def stay_active_past_max_age(self) -> None:
        """Write every 30 minutes (never idle) until the absolute timeout has passed; then read."""
        for step in range(MAX_AGE // 1800 + 1):
            self.clock.now += 1800
            self._write("/set", {"t": step}, lambda m, step=step: {**m, "t": step})
        self.read()

    @rule()
    def rotate(self) -> None:
        self.ring = [Key.generate(), self.ring[0]]  # the oldest key retires
        self.app = self._app()

    @precondition(lambda self: not self.store.down)
    @rule()
    def store_down(self) -> None:
        self.store.down = True

    @precondition(lambda self: self.store.down)
    @rule()
    def store_up(self) -> None:
        self.store.down = False

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def stored_state_equals_model(self) -> None:
        if self._alive():
            key = self._open(self.cookie)
            state = self.loop.run_until_complete(stored(self.memory, key or "x"))
            assert state is not None and dict(state) == self.model

    @invariant()
    def dead_sessions_stay_dead(self) -> None:
        for key in self.dead:
            if key:
                assert self.loop.run_until_complete(stored(self.memory, key)) is None


SessionMachine.TestCase.settings = settings(
    budget(150), stateful_step_count=BUDGET.stateful_step_count if LONG else 40
)
TestSessionMachine = SessionMachine.TestCase
