"""Device-bound sessions over HTTP, without a browser: the device is tests/dbsc_device.Device.

The stolen-cookie story: a thief copies the whole cookie jar (session cookie and credential) to
a plain HTTP client. Until the credential lapses the copy works; after ``credential_ttl`` (an
injected clock) it is an empty session, and no refresh succeeds without the device key: a proof
signed by another key, a replayed or expired challenge, ``alg: none``, a wrong ``typ``, garbage,
a missing header: each a 4xx, never a 5xx. Renewal keeps the binding, purge and
sign-out-everywhere end it, and a client that never registers keeps a normal session.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from sessionware import (
    DeviceBinding,
    Key,
    PersistentSession,
    SessionMiddleware,
    get_admin,
    get_session,
)
from sessionware.dbsc import REGISTRATION_GRACE, serve
from sessionware.session import SessionError
from sessionware.stores import (
    CookieSessionStore,
    MemorySessionStore,
    NotSupportedError,
    SessionStore,
    UserIndexedStore,
)
from tests.client import request
from tests.dbsc_device import Device, forged, refresh_challenge, registration_challenge, unsigned
from tests.security.hypo import budget
from tests.sessions import finish

REGISTER = "/.well-known/sessionware/dbsc/register"
REFRESH = "/.well-known/sessionware/dbsc/refresh"
BASE = "https://testserver"


class Clock:
    """A clock the test moves by hand (the middleware's and the store's)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_app(clock: Clock, store: UserIndexedStore, *, lazy: bool = False, **binding: Any) -> Any:
    async def login(request: Request) -> JSONResponse:
        session = get_session(request)
        session.renew()
        session.bind_user(request.query_params.get("user", "alice"))
        session["role"] = "user"
        if "nobind" not in request.query_params:
            session.bind_device()
        return JSONResponse({"ok": True})

    async def me(request: Request) -> JSONResponse:
        session = get_session(request)
        return JSONResponse({"user": session.user_id, "state": dict(session)})

    async def touch(request: Request) -> JSONResponse:
        session = get_session(request)
        session["n"] = session.get("n", 0) + 1
        return JSONResponse({"n": session["n"]})

    async def renew(request: Request) -> JSONResponse:
        get_session(request).renew()
        return JSONResponse({"ok": True})

    async def logout(request: Request) -> JSONResponse:
        get_session(request).purge()
        return JSONResponse({"ok": True})

    async def everywhere(request: Request) -> JSONResponse:
        ended = await get_admin(request).end_all_for(get_session(request).user_id or "")
        return JSONResponse({"ended": ended})

    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": get_session(request).user_id})

    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/me", me),
            Route("/touch", touch, methods=["POST"]),
            Route("/renew", renew, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/everywhere", everywhere, methods=["POST"]),
            Route("/admin/panel", admin),
        ]
    )
    return SessionMiddleware(
        app,
        store=store,
        key=KEY,
        lifecycle=PersistentSession(session_ttl=timedelta(days=7)),
        clock=clock,
        lazy=lazy,
        device_binding=DeviceBinding(credential_ttl=timedelta(minutes=10), **binding),
    )


KEY = Key.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture
async def browser(clock: Clock, store: MemorySessionStore) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(clock, store, require_for=("/admin",))
    async with client_for(app) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def register(client: httpx.AsyncClient, device: Device, *, quoted: bool = False) -> str:
    """Log in and register ``device`` as Chromium does; the DBSC session identifier."""
    login = await client.post("/login")
    assert login.status_code == 200
    header = login.headers["secure-session-registration"]
    proof = device.register(registration_challenge(header))
    response = await client.post(
        REGISTER, headers={"secure-session-response": f'"{proof}"' if quoted else proof}
    )
    assert response.status_code == 200, response.text
    instructions = response.json()
    assert instructions["credentials"] == [
        {
            "type": "cookie",
            "name": "id-bound",
            "attributes": "HttpOnly; SameSite=Lax; Secure; Path=/",
        }
    ]
    assert instructions["refresh_url"] == REFRESH
    assert instructions["scope"] == {
        "include_site": False,
        "scope_specification": [],
        "origin": BASE,
    }
    assert "id-bound" in client.cookies
    return str(instructions["session_identifier"])


async def refresh(client: httpx.AsyncClient, device: Device, sid: str) -> httpx.Response:
    """Chromium's refresh: POST, get a challenge, sign it, POST again."""
    client.cookies.delete("id-bound")
    first = await client.post(REFRESH, headers={"sec-secure-session-id": sid})
    if first.status_code != 403:
        return first
    challenge = refresh_challenge(first.headers["secure-session-challenge"])
    return await client.post(
        REFRESH,
        headers={
            "sec-secure-session-id": sid,
            "secure-session-response": device.refresh(challenge),
        },
    )


def steal(client: httpx.AsyncClient, app: Any) -> httpx.AsyncClient:
    """A plain HTTP client with a copy of every cookie the browser holds."""
    thief = client_for(app)
    for cookie in client.cookies.jar:
        thief.cookies.set(cookie.name, cookie.value or "", domain=cookie.domain)
    return thief


async def user(client: httpx.AsyncClient) -> str | None:
    response = await client.get("/me")
    assert response.status_code == 200
    return response.json()["user"]  # type: ignore[no-any-return]


# -- the bound session on its device --------------------------------------------------------------


async def test_registration_then_refresh_keeps_the_session_on_its_device(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    assert await user(browser) == "alice"
    for _ in range(3):  # hours of use, one refresh per credential
        clock.now += 601
        assert await user(browser) is None, "the lapsed credential alone is not enough"
        response = await refresh(browser, device, sid)
        assert response.status_code == 200, response.text
        assert response.json()["session_identifier"] == sid
        assert "id-bound" in browser.cookies
        assert await user(browser) == "alice"


async def test_a_quoted_response_header_is_accepted_and_rs256_works(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device("RS256")
    sid = await register(browser, device, quoted=True)
    clock.now += 601
    assert (await refresh(browser, device, sid)).status_code == 200
    assert await user(browser) == "alice"


# -- the stolen cookie jar ------------------------------------------------------------------------


async def test_a_stolen_cookie_jar_stops_working_after_the_credential_ttl(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        assert await user(thief) == "alice", "a fresh copy works until its credential lapses"
        clock.now += 599
        assert await user(thief) == "alice"
        clock.now += 2
        assert await user(thief) is None
        # Writing to the empty session gives the thief a new anonymous one, nothing more.
        assert (await thief.post("/touch")).json() == {"n": 1}
        assert await user(thief) is None
        # Requests that change the session do not extend the credential either.
        clock.now += 1
    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        assert await user(thief) is None
    # The device itself refreshes and carries on; the old copy stays dead.
    assert (await refresh(browser, device, sid)).status_code == 200
    assert await user(browser) == "alice"


async def test_the_session_cookie_alone_works_only_while_the_browser_registers(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    await register(browser, Device())
    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        thief.cookies.delete("id-bound")
        # Requests the browser sent while registering carry no credential yet (a redirect's
        # target, say): they still open the session for REGISTRATION_GRACE seconds.
        clock.now += REGISTRATION_GRACE - 1
        assert await user(thief) == "alice"
        assert (await thief.get("/admin/panel")).status_code == 403, "but prove nothing"
        clock.now += 1
        assert await user(thief) is None
    assert await user(browser) == "alice"


async def test_without_the_device_key_no_refresh_succeeds(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    # The device refreshes once: its challenge is now used, and the thief saw the exchange.
    clock.now += 601
    browser.cookies.delete("id-bound")
    first = await browser.post(REFRESH, headers={"sec-secure-session-id": sid})
    used = refresh_challenge(first.headers["secure-session-challenge"])
    used_proof = device.refresh(used)
    ok = await browser.post(
        REFRESH, headers={"sec-secure-session-id": sid, "secure-session-response": used_proof}
    )
    assert ok.status_code == 200
    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        thief.cookies.delete("id-bound")
        for proof in (used_proof, f'"{used_proof}"'):  # at once, while the challenge is fresh
            replay = await thief.post(
                REFRESH, headers={"sec-secure-session-id": sid, "secure-session-response": proof}
            )
            assert replay.status_code == 403 and "set-cookie" not in replay.headers
    old = await browser.post(REFRESH, headers={"sec-secure-session-id": sid})
    expired = refresh_challenge(old.headers["secure-session-challenge"])
    clock.now += 601  # past the credential: the thief's copy is dead

    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        thief.cookies.delete("id-bound")
        assert await user(thief) is None

        async def attempt(response: str | bytes | None) -> httpx.Response:
            headers: dict[str, str | bytes] = {"sec-secure-session-id": sid}
            if response is not None:
                headers["secure-session-response"] = response
            return await thief.post(REFRESH, headers=headers)

        issued = await attempt(None)
        assert issued.status_code == 403  # a challenge costs nothing and proves nothing
        challenge = refresh_challenge(issued.headers["secure-session-challenge"])
        thief_key = Device()
        attempts: dict[str, str | bytes] = {
            "another key": thief_key.refresh(challenge),
            "another key, its JWK attached": thief_key.register(challenge),
            "replayed proof": used_proof,
            "replayed challenge": thief_key.refresh(used),
            "expired challenge": device.refresh(expired),  # even a real proof, were it stolen
            "alg none": unsigned(challenge),
            "alg none with the device's JWK": unsigned(challenge, device.jwk),
            "wrong typ": thief_key.refresh(challenge, typ="JWT"),
            "HS256 with the public key as secret": forged(
                {"alg": "HS256", "typ": "dbsc+jwt"},
                {"jti": challenge},
                json.dumps(device.jwk).encode(),
                "HS256",
            ),
            "garbage": "garbage",
            "empty quotes": '""',
            "huge": "a" * 20_000,
            "three dots": "...",
            "non-ascii": "é.é.é".encode(),
        }
        statuses = {}
        for name, token in attempts.items():
            response = await attempt(token)
            statuses[name] = response.status_code
            assert "id-bound" not in response.headers.get("set-cookie", ""), name
        assert all(400 <= s < 500 for s in statuses.values()), statuses
        assert await user(thief) is None
    # Meanwhile the device still refreshes.
    assert (await refresh(browser, device, sid)).status_code == 200
    assert await user(browser) == "alice"


async def test_hostile_requests_to_the_endpoints_are_4xx(browser: httpx.AsyncClient) -> None:
    assert (await browser.get(REGISTER)).status_code == 405
    assert (await browser.get(REFRESH)).status_code == 405
    # No session at all.
    assert (
        await browser.post(REGISTER, headers={"secure-session-response": "x"})
    ).status_code == 401
    ended = await browser.post(REFRESH, headers={"sec-secure-session-id": "whatever"})
    assert ended.status_code == 200 and ended.json() == {"continue": False}
    # A session that never asked for a binding.
    await browser.post("/login?nobind=1")
    assert (
        await browser.post(REGISTER, headers={"secure-session-response": "x"})
    ).status_code == 401
    # A pending binding: garbage, a missing header, a proof for another challenge, a replay.
    login = await browser.post("/login")
    challenge = registration_challenge(login.headers["secure-session-registration"])
    for value in ("garbage", "", '"', Device().register("not ours"), unsigned(challenge)):
        response = await browser.post(REGISTER, headers={"secure-session-response": value})
        assert response.status_code == 400, value
    assert (await browser.post(REGISTER)).status_code == 400
    device = Device()
    proof = device.register(challenge)
    assert (
        await browser.post(REGISTER, headers={"secure-session-response": proof})
    ).status_code == 200
    again = await browser.post(REGISTER, headers={"secure-session-response": proof})
    assert again.status_code == 400, "a registration challenge works once"
    # A refresh naming another DBSC session is told to stop.
    browser.cookies.delete("id-bound")
    other = await browser.post(REFRESH, headers={"sec-secure-session-id": "someone-elses-session"})
    assert other.json() == {"session_identifier": "someone-elses-session", "continue": False}


async def test_an_rsa_key_with_e_3_or_8192_bits_is_a_400_at_registration(
    browser: httpx.AsyncClient,
) -> None:
    login = await browser.post("/login")
    challenge = registration_challenge(login.headers["secure-session-registration"])
    small_e = rsa.generate_private_key(3, 2048)
    k = small_e.public_key().public_numbers().n  # 2048 bits: k * (2**6144 + 1) has 8192
    huge = rsa.RSAPublicNumbers(65537, k << 6144 | k).public_key()  # and needs no private half
    assert huge.key_size == 8192
    for jwk in (Device("RS256", key=small_e).jwk, json.loads(RSAAlgorithm.to_jwk(huge))):
        header = {"alg": "RS256", "typ": "dbsc+jwt", "jwk": jwk}
        proof = forged(header, {"jti": challenge}, small_e, "RS256")
        response = await browser.post(REGISTER, headers={"secure-session-response": proof})
        assert response.status_code == 400 and "id-bound" not in browser.cookies
    assert (await browser.get("/admin/panel")).status_code == 403  # still unbound


async def test_the_binding_survives_every_server_side_store(
    server_store: SessionStore, clock: Clock
) -> None:
    async with client_for(make_app(clock, server_store)) as browser:
        device = Device()
        sid = await register(browser, device)
        assert (await browser.post("/touch")).json() == {"n": 1}, "an update keeps the binding"
        clock.now += 601
        assert await user(browser) is None
        assert (await refresh(browser, device, sid)).status_code == 200
        assert (await browser.post("/touch")).json() == {"n": 2}
        assert (await browser.post("/renew")).status_code == 200
        clock.now += 601
        assert (await refresh(browser, device, sid)).status_code == 200
        assert await user(browser) == "alice"
        assert (await browser.post("/logout")).status_code == 200
        assert (await refresh(browser, device, sid)).json()["continue"] is False


async def test_require_for_loads_a_lazy_session_first(clock: Clock) -> None:
    store = MemorySessionStore()
    app = make_app(clock, store, lazy=True, require_for=("/admin",))
    async with client_for(app) as browser:
        browser.cookies.clear()
        assert (await browser.get("/admin/panel")).status_code == 403
        # /login needs the session loaded by the handler under lazy=True: register through a
        # non-lazy twin sharing the store and key, then use the lazy app.
        async with client_for(make_app(clock, store)) as eager:
            await register(eager, Device())
            for cookie in eager.cookies.jar:
                browser.cookies.set(cookie.name, cookie.value or "", domain=cookie.domain)
        response = await browser.get("/admin/panel")
        assert response.status_code == 200 and response.json() == {"admin": "alice"}


# -- renew, purge, sign-out-everywhere ------------------------------------------------------------


async def test_renew_keeps_the_binding_under_the_new_key(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    old_id = browser.cookies["id"]
    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        assert (await browser.post("/renew")).status_code == 200
        assert browser.cookies["id"] != old_id
        assert await user(browser) == "alice", "the credential still fits the renewed session"
        assert await user(thief) is None, "the old key is gone"
    clock.now += 601
    response = await refresh(browser, device, sid)
    assert response.status_code == 200 and response.json()["session_identifier"] == sid
    assert await user(browser) == "alice"


async def test_purge_ends_the_binding(browser: httpx.AsyncClient, clock: Clock) -> None:
    device = Device()
    sid = await register(browser, device)
    async with steal(browser, browser.app) as thief:  # type: ignore[attr-defined]
        assert (await browser.post("/logout")).status_code == 200
        thief.cookies.delete("id-bound")
        response = await thief.post(REFRESH, headers={"sec-secure-session-id": sid})
        assert response.status_code == 200
        assert response.json() == {"session_identifier": sid, "continue": False}
    response = await refresh(browser, device, sid)
    assert response.status_code == 200
    assert response.json() == {"session_identifier": sid, "continue": False}


async def test_sign_out_everywhere_ends_every_binding(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    async with client_for(browser.app) as laptop:  # type: ignore[attr-defined]
        laptop_device = Device("RS256")
        laptop_sid = await register(laptop, laptop_device)
        assert (await laptop.post("/everywhere")).json() == {"ended": 2}
        assert (await refresh(laptop, laptop_device, laptop_sid)).json()["continue"] is False
    assert (await refresh(browser, device, sid)).json()["continue"] is False


# -- races with other writes ---------------------------------------------------------------------


def cookie_header(client: httpx.AsyncClient) -> bytes:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar).encode("latin-1")


class Interleaved:
    """The engine as the DBSC endpoints see it, running ``during`` between reading the record
    and storing the proof's result: the window two copies of one proof could share."""

    def __init__(self, engine: Any, during: Callable[[], Awaitable[Any]]) -> None:
        self.engine, self.during, self.clock = engine, during, engine.clock

    async def binding_record(self, cookie_headers: list[bytes]) -> Any:
        found = await self.engine.binding_record(cookie_headers)
        await self.during()
        return found

    async def store_binding(self, loaded: Any, device: dict[str, Any]) -> bool:
        return bool(await self.engine.store_binding(loaded, device))


async def test_one_refresh_proof_sent_twice_at_once_is_accepted_once(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    clock.now += 601
    browser.cookies.delete("id-bound")
    first = await browser.post(REFRESH, headers={"sec-secure-session-id": sid})
    proof = device.refresh(refresh_challenge(first.headers["secure-session-challenge"]))
    proved = {"sec-secure-session-id": sid, "secure-session-response": proof}
    inner: list[httpx.Response] = []

    async def the_other_copy() -> None:
        inner.append(await browser.post(REFRESH, headers=proved))

    middleware = browser.app  # type: ignore[attr-defined]
    headers = [
        (b"cookie", cookie_header(browser)),
        *((k.encode(), v.encode()) for k, v in proved.items()),
    ]
    host = Interleaved(middleware.engine, the_other_copy)
    status, answer, _ = await serve(middleware.binder, host, "POST", REFRESH, headers, BASE)
    assert inner[0].status_code == 200, "the copy that stored first is accepted"
    assert status == 403, "the other lost the race: it gets a fresh challenge, no credential"
    assert not any(name == b"set-cookie" for name, _ in answer)
    challenge = dict(answer)[b"secure-session-challenge"].decode()
    again = await browser.post(
        REFRESH,
        headers={
            "sec-secure-session-id": sid,
            "secure-session-response": device.refresh(refresh_challenge(challenge)),
        },
    )
    assert again.status_code == 200, "the device answers the fresh challenge"


async def test_a_write_racing_a_refresh_keeps_the_refreshed_binding(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    device = Device()
    sid = await register(browser, device)
    engine = browser.app.engine  # type: ignore[attr-defined]
    tracker = engine.begin([cookie_header(browser)])
    await engine.load(tracker)  # a slow request loads the bound record...
    browser.cookies.delete("id-bound")
    first = await browser.post(REFRESH, headers={"sec-secure-session-id": sid})
    proof = device.refresh(refresh_challenge(first.headers["secure-session-challenge"]))
    proved = {"sec-secure-session-id": sid, "secure-session-response": proof}
    assert (await browser.post(REFRESH, headers=proved)).status_code == 200  # ...a refresh...
    tracker.session["slow"] = True
    await finish(engine, tracker)  # ...and it writes after the refresh
    browser.cookies.delete("id-bound")
    replay = await browser.post(REFRESH, headers=proved)
    assert replay.status_code == 403, "the write kept the used challenge used"
    assert (await browser.get("/me")).json()["state"] == {"role": "user", "slow": True}


# -- progressive enhancement and require_for ------------------------------------------------------


async def test_a_client_without_dbsc_keeps_a_normal_session(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    login = await browser.post("/login")
    assert "secure-session-registration" in login.headers  # offered, never taken up
    clock.now += 3600
    assert await user(browser) == "alice"
    assert (await browser.post("/touch")).json() == {"n": 1}
    # Routes that require a binding refuse it; after registering they let it in.
    assert (await browser.get("/admin/panel")).status_code == 403
    challenge = registration_challenge(
        (await browser.post("/login")).headers["secure-session-registration"]
    )
    proof = Device().register(challenge)
    assert (
        await browser.post(REGISTER, headers={"secure-session-response": proof})
    ).status_code == 200
    response = await browser.get("/admin/panel")
    assert response.status_code == 200 and response.json() == {"admin": "alice"}


async def test_require_for_refuses_anonymous_and_lapsed_sessions(
    browser: httpx.AsyncClient, clock: Clock
) -> None:
    assert (await browser.get("/admin/panel")).status_code == 403
    await register(browser, Device())
    assert (await browser.get("/admin/panel")).status_code == 200
    clock.now += 601
    assert (await browser.get("/admin/panel")).status_code == 403


async def test_require_for_and_the_endpoints_hold_under_a_mount(
    clock: Clock, store: MemorySessionStore
) -> None:
    """Issue 28 item 3: under ``Mount("/app", ...)`` (or ``--root-path /app``) the paths are
    the app's own: ``/app/admin/...`` still needs a bound session, and the endpoints answer."""
    outer = Starlette(routes=[Mount("/app", app=make_app(clock, store, require_for=("/admin",)))])
    async with client_for(outer) as client:
        assert (await client.get("/app/admin/panel")).status_code == 403
        assert (await client.post("/app/login")).status_code == 200
        assert (await client.get("/app/admin/panel")).status_code == 403  # signed in, unbound
        assert (await client.post(f"/app{REGISTER}")).status_code != 404


async def test_sessions_without_device_binding_configured_are_unchanged(clock: Clock) -> None:
    store = MemorySessionStore()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = get_session(scope)
        session["n"] = 1
        with pytest.raises(SessionError, match="device_binding=DeviceBinding"):
            session.bind_device()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = SessionMiddleware(app, store=store, key=KEY, clock=clock)
    async with client_for(middleware) as client:
        response = await client.get("/")
        assert response.status_code == 200 and "secure-session-registration" not in response.headers
        assert list(client.cookies.keys()) == ["id"]
        # The endpoints are not served: the app sees them like any path.
        assert (await client.post(REGISTER)).status_code == 200


def test_the_cookie_store_refuses_device_binding() -> None:
    with pytest.raises(NotSupportedError, match="server-side store"):
        SessionMiddleware(
            lambda scope, receive, send: None,
            store=CookieSessionStore(),
            key=KEY,
            device_binding=DeviceBinding(),
        )
    with pytest.raises(TypeError, match="DeviceBinding"):
        SessionMiddleware(
            lambda scope, receive, send: None,
            store=MemorySessionStore(),
            key=KEY,
            device_binding=object(),  # type: ignore[arg-type]
        )


# -- no input makes a 5xx -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_JWT_HEADERS = st.fixed_dictionaries(
    {
        "alg": st.sampled_from(["ES256", "RS256", "none", "HS256", "ES384", 1, None]),
        "typ": st.sampled_from(["dbsc+jwt", "JWT", None, 7]),
    },
    optional={
        "jwk": st.one_of(
            st.just(Device().jwk),
            st.dictionaries(
                st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"]),
                st.one_of(st.text(max_size=12), st.integers(), st.none()),
                max_size=6,
            ),
            st.text(max_size=8),
        )
    },
)
_JWT_PAYLOADS = st.dictionaries(
    st.sampled_from(["jti", "exp", "iat", "nbf", "aud", "authorization"]),
    st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False), st.none()),
    max_size=5,
)
_TOKENS = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(
        lambda h, p, sig, quote: (
            '"' * quote
            + f"{_b64(json.dumps(h).encode())}.{_b64(json.dumps(p).encode())}.{_b64(sig)}"
        ).encode(),
        _JWT_HEADERS,
        _JWT_PAYLOADS,
        st.binary(max_size=80),
        st.integers(0, 1),
    ),
)


class _Bound:
    """A registered session (its cookie header and DBSC id) on a memory store, built once."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.app = make_app(self.clock, MemorySessionStore())

        async def setup() -> tuple[str, str]:
            async with client_for(self.app) as client:
                sid = await register(client, Device())
                jar = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
                return jar, sid

        self.cookies, self.sid = asyncio.run(setup())


_BOUND: list[_Bound] = []


@budget(300)
@given(
    path=st.sampled_from([REGISTER, REFRESH]),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    token=_TOKENS,
    sid=st.one_of(st.none(), st.binary(max_size=40), st.just(b"<sid>")),
    cookies=st.sampled_from(["bound", "none", "garbage"]),
)
def test_no_input_to_the_endpoints_makes_a_5xx(
    path: str, method: str, token: bytes | None, sid: bytes | None, cookies: str
) -> None:
    if not _BOUND:
        _BOUND.append(_Bound())
    bound = _BOUND[0]
    headers: list[tuple[bytes, bytes]] = []
    if token is not None:
        headers.append((b"secure-session-response", token))
    if sid is not None:
        headers.append((b"sec-secure-session-id", bound.sid.encode() if sid == b"<sid>" else sid))
    jar = {"bound": bound.cookies, "none": None, "garbage": "id=AAAA; id-bound=%ff%fe"}[cookies]
    response = asyncio.run(request(bound.app, method, path, cookie_header=jar, headers=headers))
    assert response.status < 500, (response.status, response.exception)
