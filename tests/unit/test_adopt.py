"""sessionware.adopt: the readers open cookies made by the real Starlette, Flask and Django and
refuse, with the right log and never an exception, everything that is not one."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import pickle
import string
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from django.conf import settings as django_settings
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionware import (
    ContentSecurity,
    CookieTransport,
    HeaderTransport,
    Key,
    SessionAdopted,
    SessionMiddleware,
)
from sessionware.adopt import (
    MAX_DECOMPRESSED,
    DjangoSignedCookie,
    FlaskCookie,
    LegacyCookieReader,
    Refusal,
    StarletteCookie,
)
from sessionware.crypto import Sealer
from sessionware.engine import ServerSideEngine
from sessionware.stores import MemorySessionStore
from tests.client import request
from tests.security.hypo import budget

KEY = Key.generate()
SECRET = "a-long-random-secret-for-the-legacy-app-0123456789"
OTHER = "another-secret-nobody-signed-anything-with-9876543"
STATE = {
    "user_id": "ada-lovelace",
    "cart": [1, 2],
    "prefs": {"theme": "dark"},
    "n": 3.5,
    "ok": None,
}


# -- cookies made by the real libraries -------------------------------------------------------


def starlette_cookie(state: dict[str, Any], secret: str = SECRET, **options: Any) -> str:
    """What Starlette's SessionMiddleware sets after a request that stores ``state``."""

    async def login(request: Request) -> JSONResponse:
        request.session.update(state)
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/login", login, methods=["POST"])],
        middleware=[Middleware(StarletteSessionMiddleware, secret_key=secret, **options)],
    )
    with TestClient(app) as client:
        client.post("/login")
        return str(client.cookies[options.get("session_cookie", "session")])


def flask_app(secret: str = SECRET) -> flask.Flask:
    app = flask.Flask(__name__)
    app.secret_key = secret

    @app.post("/login")
    def login() -> str:
        flask.session.update(flask.request.environ["test.state"])
        return "ok"

    return app


def flask_cookie(state: dict[str, Any], secret: str = SECRET) -> str:
    """What Flask's default session interface sets after a request that stores ``state``."""
    client = flask_app(secret).test_client()
    client.post("/login", environ_overrides={"test.state": state})
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


@pytest.fixture(scope="module")
def django() -> Iterator[Any]:
    """Django in-process with the signed_cookies session backend (settings overridden for this
    module, so it works whether or not something configured Django before)."""
    import django as django_module
    from django.test import override_settings

    if not django_settings.configured:
        django_settings.configure(SECRET_KEY=SECRET)
    django_module.setup()
    with override_settings(
        SECRET_KEY=SECRET,
        SECRET_KEY_FALLBACKS=[],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        SESSION_SERIALIZER="django.contrib.sessions.serializers.JSONSerializer",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        ALLOWED_HOSTS=["testserver"],
    ):
        yield django_module


def _django_login(request: Any) -> Any:
    from django.http import HttpResponse

    request.session.update(request.META["test.state"])
    return HttpResponse("ok")


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("login", _django_login)]


def __getattr__(name: str) -> Any:  # ROOT_URLCONF: built once Django is configured
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def django_cookie(state: dict[str, Any]) -> str:
    """What Django's SessionMiddleware sets, with the signed_cookies backend, for ``state``."""
    from django.test import Client

    client = Client()
    client.post("/login", **{"test.state": state})
    return str(client.cookies["sessionid"].value)


READERS = {
    "starlette": lambda secret: StarletteCookie(secret),
    "flask": lambda secret: FlaskCookie(secret),
    "django": lambda secret: DjangoSignedCookie(secret),
}


def make_cookie(source: str, state: dict[str, Any]) -> str:
    if source == "starlette":
        return starlette_cookie(state)
    if source == "flask":
        return flask_cookie(state)
    return django_cookie(state)


@pytest.fixture(params=sorted(READERS))
def source(request: pytest.FixtureRequest, django: Any) -> str:
    return str(request.param)


@pytest.fixture(params=["django", "flask"])
def compressing(request: pytest.FixtureRequest, django: Any) -> str:
    """The libraries that zlib-compress a payload when that is shorter (Starlette never does)."""
    return str(request.param)


# -- the state comes back ---------------------------------------------------------------------


def test_each_reader_returns_the_state_its_library_stored(source: str) -> None:
    reader = READERS[source](SECRET)
    assert isinstance(reader, LegacyCookieReader)
    assert reader.source == source
    assert reader.read(make_cookie(source, STATE), time.time()) == STATE


def test_compressed_cookies_are_read(compressing: str) -> None:
    source = compressing
    state = {"items": [f"item-{n % 7}" for n in range(150)]}
    cookie = make_cookie(source, state)
    assert cookie.startswith("."), "the library chose its compressed form"
    assert READERS[source](SECRET).read(cookie, time.time()) == state


def test_fallback_secrets_are_tried(source: str) -> None:
    cookie = make_cookie(source, STATE)
    assert READERS[source]([OTHER, SECRET]).read(cookie, time.time()) == STATE


def test_flask_tags_become_plain_json_values() -> None:
    moment = datetime.datetime(2024, 5, 1, 12, 30, 15, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    state = {
        "pair": (1, (2, "three")),
        "id": ident,
        "when": moment,
        "naive": datetime.datetime(2024, 5, 1, 12, 30, 15),
        "note": Markup("<b>hi</b>"),
        "nested": {" t": "a user key that looks like a tag"},
        "list": [ident, {"deep": (moment,)}],
        "_permanent": True,
    }
    read = FlaskCookie(SECRET).read(flask_cookie(state), time.time())
    assert read == {
        "pair": [1, [2, "three"]],
        "id": "12345678-1234-5678-1234-567812345678",
        "when": "2024-05-01T12:30:15+00:00",
        "naive": "2024-05-01T12:30:15+00:00",
        "note": "<b>hi</b>",
        "nested": {" t": "a user key that looks like a tag"},
        "list": ["12345678-1234-5678-1234-567812345678", {"deep": ["2024-05-01T12:30:15+00:00"]}],
        "_permanent": True,
    }


def test_a_flask_session_that_is_itself_a_tag_escape() -> None:
    assert FlaskCookie(SECRET).read(flask_cookie({" di": 1}), time.time()) == {" di": 1}


def test_flask_bytes_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    cookie = flask_cookie({"user_id": "ada-lovelace", "raw": b"\x00\x01"})
    with caplog.at_level(logging.WARNING, "sessionware.adopt"):
        assert FlaskCookie(SECRET).read(cookie, time.time()) is Refusal.UNREADABLE
    assert "bytes value (tag ' b')" in caplog.text


def test_a_custom_flask_tag_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    from flask.json.tag import JSONTag

    class TagSet(JSONTag):
        key = " s"

        def check(self, value: Any) -> bool:
            return isinstance(value, set)

        def to_json(self, value: Any) -> Any:
            return sorted(value)

        def to_python(self, value: Any) -> Any:
            return set(value)

    app = flask_app()
    app.session_interface.serializer.register(TagSet)  # type: ignore[attr-defined]
    client = app.test_client()
    client.post("/login", environ_overrides={"test.state": {"tags": {"a", "b"}}})
    cookie = client.get_cookie("session")
    assert cookie is not None
    with caplog.at_level(logging.WARNING, "sessionware.adopt"):
        assert FlaskCookie(SECRET).read(cookie.value, time.time()) is Refusal.UNREADABLE
    assert "' s'" in caplog.text


def test_starlette_options_are_kept() -> None:
    cookie = starlette_cookie(STATE, session_cookie="sid", max_age=60)
    reader = StarletteCookie(SECRET, session_cookie="sid", max_age=60, path="/app")
    assert reader.cookie_name == "sid"
    assert reader.read(cookie, time.time()) == STATE
    assert reader.read(cookie, time.time() + 120) is Refusal.EXPIRED


# -- refused, with the right log, never an exception ------------------------------------------


def _refused(
    caplog: pytest.LogCaptureFixture, reader: Any, cookie: str, now: float, level: int
) -> Refusal:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "sessionware.adopt"):
        result = reader.read(cookie, now)
    assert isinstance(result, Refusal), result
    records = [r for r in caplog.records if r.name == "sessionware.adopt"]
    assert [r.levelno for r in records] == [level]
    assert cookie not in caplog.text and cookie[:20] not in caplog.text, "no cookie value logged"
    assert "lovelace" not in caplog.text, "no state logged"
    return result


def test_tampered_cookies_are_forged(source: str, caplog: pytest.LogCaptureFixture) -> None:
    cookie = make_cookie(source, STATE)
    reader = READERS[source](SECRET)
    flipped = cookie[:5] + ("A" if cookie[5] != "A" else "B") + cookie[6:]
    assert _refused(caplog, reader, flipped, time.time(), logging.WARNING) is Refusal.FORGED
    truncated = cookie[:-3]
    assert _refused(caplog, reader, truncated, time.time(), logging.WARNING) is Refusal.FORGED


def test_another_secret_is_forged(source: str, caplog: pytest.LogCaptureFixture) -> None:
    cookie = make_cookie(source, STATE)
    reader = READERS[source](OTHER)
    assert _refused(caplog, reader, cookie, time.time(), logging.WARNING) is Refusal.FORGED


def test_expired_cookies(source: str, caplog: pytest.LogCaptureFixture) -> None:
    cookie = make_cookie(source, STATE)
    reader = READERS[source](SECRET)
    later = time.time() + {"starlette": 14, "flask": 31, "django": 14}[source] * 86400 + 5
    assert _refused(caplog, reader, cookie, later, logging.INFO) is Refusal.EXPIRED
    assert reader.read(cookie, later - 60) == STATE


def test_itsdangerous_refuses_a_cookie_signed_in_the_future(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for reader, cookie in (
        (StarletteCookie(SECRET), starlette_cookie(STATE)),
        (FlaskCookie(SECRET), flask_cookie(STATE)),
    ):
        earlier = time.time() - 10
        assert _refused(caplog, reader, cookie, earlier, logging.INFO) is Refusal.EXPIRED


def test_a_zip_bomb_is_refused_without_inflating_it(
    compressing: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = compressing
    state = {"bomb": "a" * (20 * MAX_DECOMPRESSED)}
    cookie = make_cookie(source, state)
    assert len(cookie) < 8000, "compressed, it is an ordinary cookie"
    reader = READERS[source](SECRET)
    assert _refused(caplog, reader, cookie, time.time(), logging.WARNING) is Refusal.UNREADABLE
    assert f"inflates past {MAX_DECOMPRESSED} bytes" in caplog.text


def test_oversized_values_are_refused_before_any_work(
    source: str, caplog: pytest.LogCaptureFixture
) -> None:
    reader = READERS[source](SECRET)
    huge = "x" * 20_000
    assert _refused(caplog, reader, huge, time.time(), logging.WARNING) is Refusal.UNREADABLE


def test_state_sessionware_cannot_store_is_unreadable(
    source: str, caplog: pytest.LogCaptureFixture
) -> None:
    if source == "django":
        state: Any = {"n": float("nan")}  # Django's JSONSerializer writes NaN
    else:
        state = {"n": float("inf")}
    cookie = make_cookie(source, state)
    reader = READERS[source](SECRET)
    assert _refused(caplog, reader, cookie, time.time(), logging.WARNING) is Refusal.UNREADABLE


class _Tripwire:
    """Unpickling it would call ``_trip``: the test fails if anything unpickles the cookie."""

    def __reduce__(self) -> Any:
        return (_trip, ())


TRIPPED: list[bool] = []


def _trip() -> None:
    TRIPPED.append(True)


def pickled_django_cookie(state: dict[str, Any]) -> str:
    """A signed_cookies session written with Django's PickleSerializer: Django's own when the
    installed Django still has it (before 5.0), else the same bytes made with
    ``django.core.signing`` and ``pickle`` here."""
    from django.core import signing

    try:
        from django.contrib.sessions.serializers import (  # type: ignore[attr-defined]
            PickleSerializer,
        )
    except ImportError:

        class PickleSerializer:  # type: ignore[no-redef]
            def dumps(self, obj: Any) -> bytes:
                return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

    return signing.dumps(
        state,
        salt="django.contrib.sessions.backends.signed_cookies",
        serializer=PickleSerializer,
        compress=True,
    )


def test_a_pickled_django_session_is_refused_and_never_unpickled(
    django: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reader = DjangoSignedCookie(SECRET)
    for state in ({"user_id": "ada-lovelace", "trap": _Tripwire()}, {"n": 1}):
        cookie = pickled_django_cookie(state)
        assert _refused(caplog, reader, cookie, time.time(), logging.WARNING) is Refusal.PICKLE
        assert "PickleSerializer" in caplog.text and "never unpickled" in caplog.text
    assert TRIPPED == []


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "..", ":", "::", "a.b.c", "a:b:c", "\x00", "é.é.é", "\ud800", "=" * 50, "." * 99],
)
def test_garbage_is_refused(source: str, garbage: str) -> None:
    assert isinstance(READERS[source](SECRET).read(garbage, time.time()), Refusal)


def test_a_signed_payload_that_is_not_a_session(django: Any) -> None:
    """Made with the right secrets but not by a session: refused as unreadable, not forged."""
    import itsdangerous
    from django.core import signing

    signer = itsdangerous.TimestampSigner(SECRET)
    for payload in (b"[1,2]", b"not json", b"\xff\xfe"):
        cookie = signer.sign(base64.b64encode(payload)).decode()
        assert StarletteCookie(SECRET).read(cookie, time.time()) is Refusal.UNREADABLE
    serializer = itsdangerous.URLSafeTimedSerializer(  # Flask's signing, no tagging
        SECRET,
        salt="cookie-session",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )
    for obj in ([1, 2], "text", {" t": "not a list"}, {" di": {"no-suffix": 1}}, {" u": "xyz"}):
        assert FlaskCookie(SECRET).read(serializer.dumps(obj), time.time()) is Refusal.UNREADABLE
    salt = "django.contrib.sessions.backends.signed_cookies"
    for obj in ([1, 2], "text"):
        cookie = signing.dumps(obj, salt=salt, compress=True)
        assert DjangoSignedCookie(SECRET).read(cookie, time.time()) is Refusal.UNREADABLE
    bad_zlib = signing.TimestampSigner(salt=salt).sign("." + signing.b64_encode(b"xx").decode())
    assert DjangoSignedCookie(SECRET).read(bad_zlib, time.time()) is Refusal.UNREADABLE
    truncated = zlib.compress(b'{"a":' + b"1" * 100)[:-4]
    cut = signing.TimestampSigner(salt=salt).sign("." + signing.b64_encode(truncated).decode())
    assert DjangoSignedCookie(SECRET).read(cut, time.time()) is Refusal.UNREADABLE


@given(value=st.text(max_size=300), now=st.floats(allow_nan=True, allow_infinity=True))
@budget(150)
def test_no_input_raises(value: str, now: float) -> None:
    for make in READERS.values():
        assert isinstance(make(SECRET).read(value, now), (dict, Refusal))


@given(data=st.data())
@budget(150)
def test_no_change_to_a_real_cookie_raises(django: Any, data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(sorted(READERS)))
    cookie = COOKIES[source]
    at = data.draw(st.integers(0, len(cookie)))
    cut = data.draw(st.integers(0, 4))
    insert = data.draw(st.text(alphabet="AZaz09-_.:=+/\x80é", max_size=4))
    changed = cookie[:at] + insert + cookie[at + cut :]
    result = READERS[source](SECRET).read(changed, time.time())
    assert result == STATE or isinstance(result, Refusal)


COOKIES: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _real_cookies(django: Any) -> None:
    for source in READERS:
        COOKIES[source] = make_cookie(source, STATE)


# -- the removal ------------------------------------------------------------------------------


def test_the_removal_matches_the_cookie() -> None:
    reader = FlaskCookie(SECRET, cookie_name="app_session", path="/app", domain="example.com")
    line = reader.removal(1_700_000_000.0)
    assert line.startswith("app_session=; ")
    assert "Path=/app" in line and "Domain=example.com" in line and "Max-Age=0" in line
    assert "Expires=" in line and "Secure" not in line
    host = DjangoSignedCookie(SECRET, cookie_name="__Host-sessionid").removal(0.0)
    assert "Secure" in host and "Domain" not in host


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        StarletteCookie("")
    with pytest.raises(ValueError, match="secret_key"):
        FlaskCookie([])
    with pytest.raises(TypeError, match="max_age"):
        DjangoSignedCookie(SECRET, max_age="2 weeks")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cookie_name"):
        FlaskCookie(SECRET, cookie_name="bad name")
    with pytest.raises(ValueError, match="cookie_path"):
        StarletteCookie(SECRET, path="no-slash")
    assert SECRET not in repr(StarletteCookie(SECRET))


# -- claims: a reader may share the session's cookie name --------------------------------------


def test_each_reader_claims_its_librarys_cookies(source: str) -> None:
    reader = READERS[source](SECRET)
    assert reader.claims(make_cookie(source, STATE))
    assert reader.claims(make_cookie(source, {"items": [f"item-{n % 7}" for n in range(150)]}))


@given(
    security=st.sampled_from(list(ContentSecurity)),
    value=st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits, min_size=64, max_size=64),
        st.dictionaries(st.text(max_size=8), st.one_of(st.floats(0, 10), st.text(max_size=8))).map(
            lambda state: json.dumps({"v": 1, "state": state, "created": 1.5})
        ),
    ),
)
@budget(60)
def test_no_sessionware_seal_is_claimed(security: ContentSecurity, value: str) -> None:
    """Whatever sessionware seals (a key server-side, the state's JSON client-side), in every
    mode, no reader takes it for its library's: the drop-in's cookie "session" is safe."""
    sealed = Sealer(security, [KEY], "session").seal(value)
    for make in READERS.values():
        assert not make(SECRET).claims(sealed)


# -- SessionMiddleware(adopt=...) refuses at construction what cannot work ---------------------


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise AssertionError("not called")


def _middleware(adopt: Any, **options: Any) -> SessionMiddleware:
    return SessionMiddleware(_app, store=MemorySessionStore(), key=KEY, adopt=adopt, **options)


class _NoClaims:
    source = "mine"
    cookie_name = "id"

    def read(self, value: str, now: float) -> dict[str, Any] | Refusal:
        return {}  # pragma: no cover

    def removal(self, now: float) -> str:
        return "id=; Max-Age=0"  # pragma: no cover


@pytest.mark.parametrize(
    ("adopt", "error", "message"),
    [
        (FlaskCookie(SECRET), TypeError, "adopt= is a list of readers"),
        ("flask", TypeError, "adopt= is a list of readers"),
        ([object()], TypeError, "object has no source, cookie_name, read, removal"),
        ([FlaskCookie(SECRET), StarletteCookie(SECRET)], ValueError, "two readers"),
        ([_NoClaims()], ValueError, "the session's own cookie name"),
    ],
)
def test_bad_readers_are_refused_at_construction(
    adopt: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _middleware(adopt)


def test_a_reader_of_the_sessions_own_cookie_needs_claims_and_may_then_share_it() -> None:
    _middleware([StarletteCookie(SECRET, session_cookie="id")])  # has claims: accepted


def test_adopt_needs_a_cookie_transport() -> None:
    with pytest.raises(ValueError, match="takes no cookie"):
        _middleware([FlaskCookie(SECRET)], transport=HeaderTransport())
    _middleware([FlaskCookie(SECRET)], transport=[HeaderTransport(), CookieTransport()])


def test_without_adopt_the_engine_is_the_plain_one() -> None:
    """No cost for apps that adopt nothing: their engine is not the adopting subclass."""
    assert type(_middleware([]).engine) is ServerSideEngine
    assert type(_middleware([FlaskCookie(SECRET)]).engine) is not ServerSideEngine


# -- readers of other libraries are held to the protocol --------------------------------------


class _Broken:
    source = "broken"
    cookie_name = "legacy"

    def __init__(self, gives: Any) -> None:
        self.gives = gives

    def read(self, value: str, now: float) -> Any:
        if isinstance(self.gives, Exception):
            raise self.gives
        return self.gives

    def removal(self, now: float) -> str:
        return "legacy=; Max-Age=0"


@pytest.mark.parametrize(
    "gives",
    [ValueError("the secret value"), ["not", "a", "dict"], {"nan": float("nan")}, {1: "x"}],
    ids=["raises", "list", "nan", "int-key"],
)
async def test_a_reader_that_breaks_its_promise_is_an_empty_session(
    gives: Any, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Any] = []
    app = SessionMiddleware(
        _json_session, store=MemorySessionStore(), key=KEY, adopt=[_Broken(gives)],
        on_event=events.append,
    )  # fmt: skip
    response = await request(app, "GET", "/", cookies={"legacy": "whatever"})
    assert response.status == 200 and response.json() == {}
    assert [c.line for c in response.set_cookies] == ["legacy=; Max-Age=0"]
    assert [e.outcome for e in events if isinstance(e, SessionAdopted)] == ["unreadable"]
    assert "the secret value" not in caplog.text


async def _json_session(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps(dict(scope["session"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_with_a_header_transport_too_the_cookies_requests_adopt() -> None:
    app = SessionMiddleware(
        _json_session, store=MemorySessionStore(), key=KEY, adopt=[FlaskCookie(SECRET)],
        transport=[CookieTransport(), HeaderTransport()],
    )  # fmt: skip
    response = await request(app, "GET", "/", cookies={"session": flask_cookie(STATE)})
    assert response.json() == STATE
    assert {c.name for c in response.set_cookies} == {"id", "session"}
