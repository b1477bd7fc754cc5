"""Adopting sessionware without logging anyone out (issue 27.1): the real Starlette, Flask and
Django serve a small app that sets a session, then the same browser cookie jar hits the
sessionware app (``adopt=[...]``), over the memory, cookie and Redis stores."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.cookiejar import CookieJar
from typing import Any

import flask
import httpx
import pytest
from django.conf import settings as django_settings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionware import Key, SessionAdopted, SessionCreated, SessionEvent, SessionMiddleware
from sessionware.adopt import DjangoSignedCookie, FlaskCookie, LegacyCookieReader, StarletteCookie
from sessionware.stores import CookieSessionStore, SessionStore
from tests.conftest import FACTORIES

SECRET = "the-legacy-apps-long-random-secret-0123456789abcdef"
OTHER = "a-secret-no-legacy-cookie-here-was-signed-with-987654"
STATE = {"user_id": 42, "cart": [1, 2], "prefs": {"theme": "dark"}}
BASE = "https://testserver"
COOKIE_NAMES = {"starlette": "session", "flask": "session", "django": "sessionid"}
LATER = 40 * 24 * 3600  # past every library's default max_age (Flask's 31 days the longest)


# -- the legacy apps, as they were --------------------------------------------------------------


def starlette_app(secret: str) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    async def login(request: Request) -> JSONResponse:
        request.session.update(await request.json())
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/login", login, methods=["POST"])],
        middleware=[Middleware(StarletteSessionMiddleware, secret_key=secret)],
    )
    return httpx.ASGITransport(app)


def flask_app(secret: str) -> httpx.BaseTransport:
    app = flask.Flask(__name__)
    app.secret_key = secret

    @app.post("/login")
    def login() -> str:
        flask.session.update(flask.request.get_json())
        return "ok"

    return httpx.WSGITransport(app=app)


def django_app(secret: str) -> httpx.BaseTransport:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    with override_settings(SECRET_KEY=secret):
        handler = WSGIHandler()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        with override_settings(SECRET_KEY=secret):
            return handler(environ, start_response)

    return httpx.WSGITransport(app=app)


def _django_login(request: Any) -> Any:
    from django.http import HttpResponse

    state = json.loads(request.body)
    if state.pop("tripwire", False):
        request.session["tripwire"] = Tripwire()
    request.session.update(state)
    return HttpResponse("ok")


def __getattr__(name: str) -> Any:  # ROOT_URLCONF: built once Django is configured
    if name == "urlpatterns":
        from django.urls import path

        return [path("login", _django_login)]
    raise AttributeError(name)


class PickleSerializer:
    """Django's ``PickleSerializer`` (removed in Django 5.0) as 4.2 had it: an app that still
    used it wrote such sessions."""

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:  # pragma: no cover - the legacy app never reads here
        return pickle.loads(data)


class Tripwire:
    """Unpickling it would call ``_trip``: the test fails if anything unpickles the cookie."""

    def __reduce__(self) -> Any:
        return (_trip, ())


TRIPPED: list[bool] = []


def _trip() -> None:  # pragma: no cover - reached only if a pickle were loaded
    TRIPPED.append(True)


@pytest.fixture(scope="module")
def django_configured() -> Iterator[None]:
    """Django in-process with the signed_cookies session backend (settings overridden for this
    module, so it works whether or not something configured Django before)."""
    import django
    from django.test import override_settings

    if not django_settings.configured:
        django_settings.configure(SECRET_KEY=SECRET)
    django.setup()
    with override_settings(
        SECRET_KEY=SECRET,
        SECRET_KEY_FALLBACKS=[],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        SESSION_SERIALIZER="django.contrib.sessions.serializers.JSONSerializer",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        ALLOWED_HOSTS=["testserver"],
    ):
        yield


LEGACY: dict[str, Callable[[str], Any]] = {
    "starlette": starlette_app,
    "flask": flask_app,
    "django": django_app,
}
READERS: dict[str, Callable[[], LegacyCookieReader]] = {
    "starlette": lambda: StarletteCookie(SECRET),
    "flask": lambda: FlaskCookie(SECRET),
    "django": lambda: DjangoSignedCookie(SECRET),
}


async def legacy_login(source: str, jar: CookieJar, state: Any, secret: str = SECRET) -> None:
    """The user signs in on the old app: its cookie lands in ``jar``."""
    transport = LEGACY[source](secret)
    if isinstance(transport, httpx.AsyncBaseTransport):
        async with httpx.AsyncClient(transport=transport, base_url=BASE, cookies=jar) as client:
            response = await client.post("/login", json=state)
    else:
        with httpx.Client(transport=transport, base_url=BASE, cookies=jar) as client:
            response = client.post("/login", json=state)
    assert response.status_code == 200, response.text
    assert COOKIE_NAMES[source] in names(jar)


def names(jar: CookieJar) -> set[str]:
    return {cookie.name for cookie in jar}


# -- the sessionware app -----------------------------------------------------------------------


async def show(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


async def show_lazily(request: Request) -> JSONResponse:
    return JSONResponse(dict(await request.session.load()))


async def boom(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session), status_code=500)


async def logout(request: Request) -> JSONResponse:
    request.session.purge()
    return JSONResponse({})


def sessionware_app(
    store: SessionStore, reader: LegacyCookieReader, events: list[SessionEvent], **options: Any
) -> Starlette:
    return Starlette(
        routes=[
            Route("/", show),
            Route("/lazy", show_lazily),
            Route("/boom", boom),
            Route("/logout", logout, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                key=Key.generate(),
                adopt=[reader],
                on_event=events.append,
                **options,
            )
        ],
    )


@pytest.fixture(params=["memory", "cookie", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param not in FACTORIES:
        pytest.skip(f"SESSIONWARE_STORES leaves out {request.param}")
    async with FACTORIES[request.param].store() as made:
        yield made


@pytest.fixture(params=sorted(LEGACY))
def source(request: pytest.FixtureRequest, django_configured: None) -> str:
    return str(request.param)


def client(app: Any, jar: CookieJar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, cookies=jar)


def adopted(events: list[SessionEvent]) -> list[SessionAdopted]:
    return [e for e in events if isinstance(e, SessionAdopted)]


def set_cookie_names(response: httpx.Response) -> list[str]:
    return [line.partition("=")[0] for line in response.headers.get_list("set-cookie")]


# -- a valid cookie carries over, once ---------------------------------------------------------


async def test_the_legacy_session_carries_over_and_its_cookie_goes(
    source: str, store: SessionStore
) -> None:
    jar, events = CookieJar(), list[SessionEvent]()
    await legacy_login(source, jar, STATE)
    app = sessionware_app(store, READERS[source](), events)
    async with client(app, jar) as browser:
        first = await browser.get("/")
        assert first.status_code == 200
        assert first.json() == STATE
        assert sorted(set_cookie_names(first)) == sorted(["id", COOKIE_NAMES[source]])
        assert names(jar) == {"id"}, "the old cookie is removed, sessionware's set"
        assert adopted(events) == [SessionAdopted(source, "adopted")]
        assert sum(isinstance(e, SessionCreated) for e in events) == 1

        second = await browser.get("/")
        assert second.status_code == 200
        assert second.json() == STATE, "stored through sessionware's store"
        assert second.headers.get_list("set-cookie") == []
        assert len(adopted(events)) == 1, "not adopted again"


async def test_a_new_key_never_the_old_cookie(store: SessionStore, django_configured: None) -> None:
    """As at a login: the state is stored under a key sessionware made (nothing of the old
    cookie names it), and a second browser with the same old cookie gets a session of its own."""
    jar, events = CookieJar(), list[SessionEvent]()
    await legacy_login("django", jar, STATE)
    old = next(c.value for c in jar if c.name == "sessionid")
    app = sessionware_app(store, READERS["django"](), events)
    copy = CookieJar()
    for cookie in jar:
        copy.set_cookie(cookie)
    async with client(app, jar) as one, client(app, copy) as two:
        assert (await one.get("/")).json() == STATE
        assert (await two.get("/")).json() == STATE
        ids = [c.value for c in jar if c.name == "id"] + [c.value for c in copy if c.name == "id"]
        assert len(set(ids)) == 2 and old not in ids


async def test_the_handler_sees_and_changes_the_adopted_state(
    store: SessionStore, django_configured: None
) -> None:
    async def add(request: Request) -> JSONResponse:
        request.session["cart"].append(3)
        return JSONResponse(dict(request.session))

    jar, events = CookieJar(), list[SessionEvent]()
    await legacy_login("flask", jar, STATE)
    app = sessionware_app(store, READERS["flask"](), events)
    app.router.routes.append(Route("/add", add, methods=["POST"]))
    async with client(app, jar) as browser:
        assert (await browser.post("/add")).json()["cart"] == [1, 2, 3]
        assert (await browser.get("/")).json()["cart"] == [1, 2, 3]


async def test_lazy_loading_adopts_too(django_configured: None) -> None:
    async with FACTORIES["memory"].store() as store:
        jar, events = CookieJar(), list[SessionEvent]()
        await legacy_login("starlette", jar, STATE)
        app = sessionware_app(store, READERS["starlette"](), events, lazy=True)
        async with client(app, jar) as browser:
            assert (await browser.get("/lazy")).json() == STATE
            assert names(jar) == {"id"}
            assert (await browser.get("/lazy")).json() == STATE


# -- a bad cookie is an empty session and a removal, never an error ----------------------------


def tampered(jar: CookieJar, name: str) -> None:
    """Change one character of the old cookie's payload (its signature no longer matches)."""
    cookie = next(c for c in jar if c.name == name)
    value = cookie.value or ""
    at = 2 if value[0] != "." else 3
    cookie.value = value[:at] + ("A" if value[at] != "A" else "B") + value[at + 1 :]


BAD = ["tampered", "expired", "wrong_key"]


@pytest.mark.parametrize("bad", BAD)
async def test_a_bad_legacy_cookie_is_an_empty_session_and_a_removal(
    source: str, store: SessionStore, bad: str
) -> None:
    jar, events = CookieJar(), list[SessionEvent]()
    await legacy_login(source, jar, STATE, secret=OTHER if bad == "wrong_key" else SECRET)
    if bad == "tampered":
        tampered(jar, COOKIE_NAMES[source])
    options: dict[str, Any] = {}
    if bad == "expired":
        options["clock"] = lambda: time.time() + LATER
    app = sessionware_app(store, READERS[source](), events, **options)
    async with client(app, jar) as browser:
        response = await browser.get("/")
        assert response.status_code == 200
        assert response.json() == {}
        assert set_cookie_names(response) == [COOKIE_NAMES[source]], "only the removal"
        assert names(jar) == set()
        outcome = {"tampered": "forged", "wrong_key": "forged", "expired": "expired"}[bad]
        assert adopted(events) == [SessionAdopted(source, outcome)]
        if not isinstance(store, CookieSessionStore):
            assert not any(isinstance(e, SessionCreated) for e in events), "nothing stored"


async def test_a_pickle_serialised_django_session_is_refused_never_unpickled(
    store: SessionStore, django_configured: None, caplog: pytest.LogCaptureFixture
) -> None:
    from django.test import override_settings

    jar, events = CookieJar(), list[SessionEvent]()
    with override_settings(SESSION_SERIALIZER=f"{__name__}.PickleSerializer"):
        # The real backend pickles what the session holds, a Tripwire included.
        await legacy_login("django", jar, {"user_id": 42, "tripwire": True})
    app = sessionware_app(store, READERS["django"](), events)
    async with client(app, jar) as browser:
        response = await browser.get("/")
    assert response.status_code == 200 and response.json() == {}
    assert set_cookie_names(response) == ["sessionid"]
    assert adopted(events) == [SessionAdopted("django", "pickle")]
    assert "PickleSerializer" in caplog.text
    assert not TRIPPED


async def test_tripwire_would_fire_if_unpickled() -> None:
    """The pickle test's guard works: loading the payload does call ``_trip``."""
    pickle.loads(pickle.dumps(Tripwire()))
    assert TRIPPED == [True]
    TRIPPED.clear()


# -- what the legacy cookie never does ---------------------------------------------------------


async def test_a_5xx_keeps_the_legacy_cookie_for_the_next_request(
    source: str, store: SessionStore
) -> None:
    jar, events = CookieJar(), list[SessionEvent]()
    await legacy_login(source, jar, STATE)
    app = sessionware_app(store, READERS[source](), events)
    async with client(app, jar) as browser:
        failed = await browser.get("/boom")
        assert failed.status_code == 500
        assert failed.headers.get_list("set-cookie") == []
        assert names(jar) == {COOKIE_NAMES[source]}, "nothing stored, nothing removed"
        assert (await browser.get("/")).json() == STATE
        assert names(jar) == {"id"}


async def test_with_a_sessionware_cookie_the_old_one_is_removed_unread(
    source: str, store: SessionStore
) -> None:
    """A user who signed out after the switch must not be signed in again by an old cookie
    the old app set meanwhile: the sessionware session wins, the old cookie goes."""
    jar, events = CookieJar(), list[SessionEvent]()
    await legacy_login(source, jar, STATE)
    app = sessionware_app(store, READERS[source](), events)
    async with client(app, jar) as browser:
        await browser.get("/")
        await browser.post("/logout")
        assert names(jar) == set()
        await legacy_login(source, jar, {"user_id": "someone else"})
        async with client(app, jar) as again:  # no sessionware cookie: adopted
            assert (await again.get("/")).json() == {"user_id": "someone else"}
        await legacy_login(source, jar, STATE)
        response = await browser.get("/")
        assert response.json() == {"user_id": "someone else"}, "its own session, not the old one"
        assert set_cookie_names(response) == [COOKIE_NAMES[source]]
        assert names(jar) == {"id"}
        assert len(adopted(events)) == 2
