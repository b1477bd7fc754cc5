"""TaggedJSON (issue 26 item 3): values beyond JSON round-trip exactly, at rest as JSON; tags
cannot be forged from data; an unknown tag is unreadable state; every store goes through it."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sessionware import Key, SessionInsertError, SessionMiddleware, TaggedJSON
from sessionware.codec import may_hold_tags
from sessionware.errors import DeserializationError
from sessionware.session import Tracker
from sessionware.state import decode_state
from sessionware.stores import CookieSessionStore, MemorySessionStore
from sessionware.testing import make_session_cookie, read_session
from tests.client import request
from tests.factories import redis as redis_factory

CODEC = TaggedJSON()


def round_trip(value: Any) -> Any:
    """``value`` written as the stores hold it (JSON text) and read back."""
    text = json.dumps(CODEC.encode(value), allow_nan=False)
    return CODEC.decode(json.loads(text))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``1 == 1.0 == True`` is not enough), and
    an aware time keeps its offset and zone."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return bool(a == b)


_OFFSETS = st.builds(
    dt.timezone,
    st.integers(min_value=-23 * 3600, max_value=23 * 3600).map(lambda s: dt.timedelta(seconds=s)),
)
_ZONES = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]).map(
    zoneinfo.ZoneInfo
)
_HASHABLE = (
    st.integers()
    | st.text(max_size=5)
    | st.uuids()
    | st.dates()
    | st.decimals(allow_nan=False)
    | st.binary(max_size=6)
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.datetimes(timezones=st.none() | _OFFSETS | _ZONES)
    | st.dates()
    | st.times(timezones=st.none() | _OFFSETS)
    | st.timedeltas()
    | st.uuids()
    | st.decimals()
    | st.binary(max_size=8)
    | st.sets(_HASHABLE, max_size=3)
    | st.frozensets(_HASHABLE, max_size=3)
)
_KEYS = st.sampled_from(["__tag__", "__tag__~", "__tag__~~", "value", "a"]) | st.text(max_size=4)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists, tuples and objects of ``inner``, among them objects that look tagged."""
    return (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_KEYS, inner, max_size=3)
        | st.builds(lambda tag, v: {"__tag__": tag, "value": v}, st.text(max_size=9), inner)
    )


_VALUES = st.recursive(_SCALARS, _containers, max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_every_value_round_trips_exactly_through_json(value: Any) -> None:
    if isinstance(value, dt.datetime) and value.fold:  # one instant, two spellings
        value = value.replace(fold=0)
    assert same(round_trip(value), value)


def test_tagged_values_stay_readable_json_at_rest() -> None:
    value = {
        "when": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "id": uuid.UUID(int=1),
        "price": decimal.Decimal("9.90"),
        "tags": ("a", "b"),
    }
    assert CODEC.encode(value) == {
        "when": {"__tag__": "datetime", "value": "2024-05-01T12:00:00+02:00"},
        "id": {"__tag__": "uuid", "value": "00000000-0000-0000-0000-000000000001"},
        "price": {"__tag__": "decimal", "value": "9.90"},
        "tags": {"__tag__": "tuple", "value": ["a", "b"]},
    }
    paris = dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    back = round_trip(paris)
    assert same(back, paris) and back.fold == 1  # the second 02:30 of that night


def test_data_that_looks_like_a_tag_is_escaped_not_read_as_one() -> None:
    forged = {"__tag__": "bytes", "value": "AAAA", "x": {"__tag__~": 1}}
    assert CODEC.encode(forged) == {"__tag__~": "bytes", "value": "AAAA", "x": {"__tag__~~": 1}}
    assert same(round_trip(forged), forged)
    assert same(round_trip({"__tag__": "set", "value": []}), {"__tag__": "set", "value": []})


@pytest.mark.parametrize(
    "stored",
    [
        {"__tag__": "pickle", "value": "gASV"},
        {"__tag__": 1, "value": 1},
        {"__tag__": "uuid", "value": "not a uuid"},
        {"__tag__": "uuid"},
        {"__tag__": "set", "value": [[1]]},
        {"__tag__": "datetime", "value": ["2024-01-01T00:00:00+00:00", "Mars/Olympus"]},
        {"__tag__": "timedelta", "value": [1, 2]},
        {"__tag__": "bytes", "value": "!!"},
        [{"__tag__": "decimal", "value": "one"}],
    ],
)
def test_an_unknown_or_malformed_tag_is_unreadable(stored: Any) -> None:
    with pytest.raises(DeserializationError):
        CODEC.decode(stored)


def test_what_the_codec_cannot_hold_is_refused_at_insert_naming_its_type() -> None:
    with pytest.raises(TypeError, match="complex"):
        CODEC.encode({"x": [1j]})
    with pytest.raises(TypeError):
        CODEC.encode(dt.time(1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")))


# -- through the middleware, on every kind of store -----------------------------------------


class Profile(BaseModel):
    name: str
    born: dt.date


WHEN = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
VALUES: dict[str, Any] = {
    "when": WHEN,
    "naive": dt.datetime(2024, 5, 1, 12, 0),
    "day": dt.date(2024, 5, 1),
    "at": dt.time(8, 30, tzinfo=dt.timezone.utc),
    "ttl": dt.timedelta(days=1, microseconds=5),
    "id": uuid.UUID(int=7),
    "price": decimal.Decimal("19.990"),
    "raw": b"\x00\xff",
    "seen": {1, 2},
    "frozen": frozenset({"a"}),
    "pair": (1, (2, "x")),
    "forged": {"__tag__": "uuid", "value": "not one"},
}


def app_of(store: Any, codec: TaggedJSON | None = CODEC) -> SessionMiddleware:
    async def put(request: Request) -> Response:
        request.session.update(VALUES)
        request.session["profile"] = Profile(name="Ada", born=dt.date(1815, 12, 10))
        return PlainTextResponse("ok")

    async def check(request: Request) -> Response:
        session = request.session
        got = {key: session.get(key) for key in VALUES}
        profile = session.get_as("profile", Profile)
        ok = same(got, VALUES) and profile == Profile(name="Ada", born=dt.date(1815, 12, 10))
        return PlainTextResponse("same" if ok else repr(got))

    async def mutate(request: Request) -> Response:
        request.session["seen"].add(3)  # a change in place, noticed as for a list
        request.session.update_or("price", decimal.Decimal(0), lambda p: p + 1)
        return PlainTextResponse("ok")

    async def mutated(request: Request) -> Response:
        session = request.session
        ok = session["seen"] == {1, 2, 3} and same(session["price"], decimal.Decimal("20.990"))
        return PlainTextResponse("same" if ok else repr(dict(session)))

    async def forge(request: Request) -> Response:
        request.session["x"] = {"__tag__": "pickle", "value": "gASV"}
        return PlainTextResponse("ok")

    async def read_x(request: Request) -> Response:
        return PlainTextResponse(repr(request.session.get("x")))

    routes = [
        Route("/put", put),
        Route("/check", check),
        Route("/mutate", mutate),
        Route("/mutated", mutated),
        Route("/forge", forge),
        Route("/x", read_x),
    ]
    return SessionMiddleware(Starlette(routes=routes), store=store, key=KEY, codec=codec)


KEY = Key.generate()


def _memory() -> AbstractAsyncContextManager[Any]:
    return _given(MemorySessionStore())


def _cookie() -> AbstractAsyncContextManager[Any]:
    return _given(CookieSessionStore())


class _given:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def __aenter__(self) -> Any:
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        return None


STORES: dict[str, Callable[[], AbstractAsyncContextManager[Any]]] = {
    "cookie": _cookie,
    "memory": _memory,
    "redis": redis_factory.store,
}


@pytest.fixture(params=list(STORES))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with STORES[request.param]() as made:
        yield made


async def test_values_round_trip_across_requests(store: Any) -> None:
    app = app_of(store)
    cookie = (await request(app, "GET", "/put")).cookie()
    assert cookie is not None
    cookies = {"id": cookie.value}
    assert (await request(app, "GET", "/check", cookies=cookies)).text == "same"
    written = await request(app, "GET", "/mutate", cookies=cookies)
    if written.cookie() is not None:  # the cookie store: the state travels in the cookie
        cookies = {"id": written.cookie().value}  # type: ignore[union-attr]
    assert (await request(app, "GET", "/mutated", cookies=cookies)).text == "same"


async def test_a_forged_tag_in_the_apps_data_comes_back_as_that_data(store: Any) -> None:
    app = app_of(store)
    cookie = (await request(app, "GET", "/forge")).cookie()
    assert cookie is not None
    response = await request(app, "GET", "/x", cookies={"id": cookie.value})
    assert response.text == repr({"__tag__": "pickle", "value": "gASV"})


async def test_an_unknown_tag_at_rest_is_an_empty_session_and_a_warning(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Written by a plain-JSON middleware (which stores the object as it is), read by one with
    the codec: an object claiming a tag no codec wrote is unreadable state, never an error."""
    cookie = (await request(app_of(store, codec=None), "GET", "/forge")).cookie()
    assert cookie is not None
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        response = await request(app_of(store), "GET", "/x", cookies={"id": cookie.value})
    assert response.status == 200 and response.text == "None"
    assert any("unreadable state" in r.getMessage() for r in caplog.records)


async def test_a_pydantic_model_is_stored_as_its_json_dump_without_a_codec() -> None:
    async def put(request: Request) -> Response:
        request.session["profile"] = Profile(name="Ada", born=dt.date(1815, 12, 10))
        assert request.session["profile"] == {"name": "Ada", "born": "1815-12-10"}
        return PlainTextResponse("ok")

    async def get(request: Request) -> Response:
        return PlainTextResponse(repr(request.session.get_as("profile", Profile)))

    app = SessionMiddleware(
        Starlette(routes=[Route("/put", put), Route("/get", get)]),
        store=MemorySessionStore(),
        key=KEY,
    )
    cookie = (await request(app, "GET", "/put")).cookie()
    assert cookie is not None
    response = await request(app, "GET", "/get", cookies={"id": cookie.value})
    assert response.text == repr(Profile(name="Ada", born=dt.date(1815, 12, 10)))


def test_a_codec_that_is_not_one_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="TaggedJSON"):
        SessionMiddleware(Starlette(), store=MemorySessionStore(), key=KEY, codec="json")  # type: ignore[arg-type]


async def test_the_testing_helpers_seed_and_read_values_through_the_apps_codec(store: Any) -> None:
    app = app_of(store)
    name, value = await make_session_cookie(
        app, {**VALUES, "profile": {"name": "Ada", "born": "1815-12-10"}}
    )
    assert (await request(app, "GET", "/check", cookies={name: value})).text == "same"
    assert same(
        await read_session(app, value), {**VALUES, "profile": {"name": "Ada", "born": "1815-12-10"}}
    )
    with pytest.raises(SessionInsertError, match="complex"):
        await make_session_cookie(app, {"z": 1j})


def test_a_text_that_cannot_hold_a_tag_is_not_walked() -> None:
    assert not may_hold_tags(json.dumps(CODEC.encode({"a": [1, "x"], "b": {"c": None}})))
    assert may_hold_tags(json.dumps(CODEC.encode({"a": (1,)})))
    assert may_hold_tags(
        json.dumps({"\u005f_tag__": 1}, ensure_ascii=True).replace("_", "\\u005f", 1)
    )


class _Engine:
    codec = CODEC


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _VALUES, min_size=1, max_size=4))
def test_a_sessions_state_round_trips_through_the_codec(state: dict[str, Any]) -> None:
    """What the session stores (its state's JSON, worked out as the response starts) reads back
    through the codec as the values the handler set."""
    state = {k: v.replace(fold=0) if isinstance(v, dt.datetime) else v for k, v in state.items()}
    tracker = Tracker(_Engine(), [], None, False)
    tracker.fill(tracker.session, {}, origin=None)
    tracker.session.update(state)
    state_json = tracker.outcome(200).state_json
    assert state_json is not None
    assert same(CODEC.decode_state(decode_state(f'{{"v":1,"state":{state_json}}}')), state)


@pytest.mark.parametrize(
    "value",
    [
        dt.time(1, 2, 3, tzinfo=dt.timezone(dt.timedelta(microseconds=1))),
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone(dt.timedelta(seconds=1, microseconds=5))),
    ],
)
def test_an_offset_with_a_fraction_of_a_second_is_refused(value: object) -> None:
    """Python 3.11's fromisoformat drops the fraction: storing it would not round-trip."""
    with pytest.raises(TypeError, match="fraction of a second"):
        TaggedJSON().encode_state({"at": value})
