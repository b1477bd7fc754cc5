"""The Session status machine: every case of actix's tests/session.rs (SPEC §7.3), and the mapping API."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from sessionware import (
    Key,
    Session,
    SessionError,
    SessionGetError,
    SessionInsertError,
    SessionMiddleware,
    SessionStatus,
    SessionUpdateError,
)
from sessionware import state as state_module
from sessionware.repository import KEEP, Changes
from sessionware.session import MAX_LIFETIME, Event, Tracker
from sessionware.stores import CookieSessionStore, MemorySessionStore
from tests.client import request
from tests.sessions import outcome, tracked

UNCHANGED, CHANGED = SessionStatus.UNCHANGED, SessionStatus.CHANGED
PURGED, RENEWED = SessionStatus.PURGED, SessionStatus.RENEWED


def loaded(**state: object) -> Session:
    """A session as the engine fills it from a stored record."""
    return tracked(state).session


# -- SPEC §7.3 tests/session.rs --------------------------------------------------------------


def test_standalone_session_is_unchanged_and_empty() -> None:
    session = Session()
    assert session.status is UNCHANGED
    assert dict(session.entries()) == {}
    session.insert("k", "v")
    assert session.status is CHANGED


def test_insert_insert_remove_leaves_only_key2() -> None:
    session = Session()
    session.insert("key", "value")
    session.insert("key2", "value2")
    assert session.remove("key") == "value"
    assert list(session.entries().items()) == [("key2", "value2")]


def test_typed_round_trips() -> None:
    session = Session()
    session.insert("flag", True)
    session.insert("n", 10)
    assert session.get_as("flag", bool) is True
    assert session.get_as("n", int) == 10
    assert session.get_as("missing", int) is None


def test_get_as_mismatch_raises_with_actix_message() -> None:
    session = loaded(n="ten")
    with pytest.raises(SessionGetError, match="attached to key `n` as a `int` type"):
        session.get_as("n", int)


def test_get_as_pydantic_model_and_dataclass() -> None:
    class User(BaseModel):
        id: int
        name: str

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    session = loaded(user={"id": 1, "name": "ferris"}, point={"x": 1, "y": 2})
    assert session.get_as("user", User) == User(id=1, name="ferris")
    assert session.get_as("point", Point) == Point(1, 2)
    with pytest.raises(SessionGetError):
        session.get_as("point", User)


def test_purge_and_renew_statuses() -> None:
    session = loaded(a=1)
    session.purge()
    assert session.status is PURGED
    other = loaded(a=1)
    other.renew()
    assert other.status is RENEWED
    assert dict(other) == {"a": 1}


def test_contains_key_and_entries() -> None:
    session = Session()
    session.insert("test_key", "test_value")
    assert session.contains_key("test_key")
    assert not session.contains_key("nope")
    assert session.entries()["test_key"] == "test_value"
    with pytest.raises(TypeError):
        session.entries()["x"] = 1  # type: ignore[index]


def test_insert_after_renew_stays_renewed() -> None:
    session = Session()
    session.insert("a", 1)
    assert session.status is CHANGED
    session.renew()
    assert session.status is RENEWED
    session.insert("b", 2)
    assert session.status is RENEWED


def test_update_session() -> None:
    session = Session()
    session.update("counter", lambda n: n + 1)
    assert session.status is UNCHANGED
    session.insert("counter", 0)
    assert session.status is CHANGED
    session.update("counter", lambda n: n + 1)
    session.update("counter", lambda n: n + 1)
    assert session.get("counter") == 2


def test_update_marks_a_loaded_session_changed() -> None:
    """The deliberate difference from actix, whose update() leaves the session Unchanged."""
    session = loaded(counter=1)
    session.update("counter", lambda n: n + 1)
    assert session.status is CHANGED
    assert session["counter"] == 2


def test_update_or_session() -> None:
    session = Session()
    session.update_or("counter", 1, lambda n: n + 1)
    assert session.status is CHANGED and session["counter"] == 1
    session.update_or("counter", 1, lambda n: n + 1)
    assert session["counter"] == 2
    other = loaded(counter=5)
    other.update_or("counter", 1, lambda n: n + 1)
    assert other.status is CHANGED and other["counter"] == 6


def test_update_with_unstorable_result_raises_update_error() -> None:
    session = loaded(counter=1)
    with pytest.raises(SessionUpdateError):
        session.update("counter", lambda n: {n})
    with pytest.raises(SessionUpdateError):
        session.update_or("other", object(), lambda n: n)
    assert session["counter"] == 1


def test_remove_session_after_renew() -> None:
    session = Session()
    session.insert("key", "value")
    session.remove("key")
    assert session.status is CHANGED
    session.renew()
    session.insert("key", "value")
    session.remove("key")
    assert session.status is RENEWED


def test_clear_session_after_renew() -> None:
    session = Session()
    session.clear()
    assert session.status is CHANGED
    session.renew()
    assert session.status is RENEWED
    session.clear()
    assert session.status is RENEWED


def test_remove_marks_changed_even_when_absent() -> None:
    session = loaded(a=1)
    assert session.remove("missing") is None
    assert session.status is CHANGED


def test_remove_as() -> None:
    session = loaded(n=3, s="x")
    assert session.remove_as("n", int) == 3
    assert session.remove_as("s", int) == "x"  # raw value back; key stays removed
    assert "s" not in session
    assert session.remove_as("missing", int) is None


# -- purge is terminal ---------------------------------------------------------------------


def test_purge_is_terminal() -> None:
    session = loaded(a=1)
    session.purge()
    session.insert("b", 2)
    assert session.remove("a") is None
    session.clear()
    session.renew()
    assert session.status is PURGED
    assert dict(session) == {}


def test_purge_wins_after_renew_and_change() -> None:
    session = loaded(a=1)
    session.insert("b", 2)
    session.renew()
    session.purge()
    assert session.status is PURGED


def test_renew_on_purged_does_nothing() -> None:
    session = Session()
    session.purge()
    session.renew()
    assert session.status is PURGED


# -- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, {1, 2}, object(), b"bytes", "\ud800", {"k": math.nan}],
    ids=["nan", "inf", "set", "object", "bytes", "lone-surrogate", "nested-nan"],
)
def test_insert_rejects_unstorable_values_before_changing_anything(value: object) -> None:
    session = loaded(a=1)
    with pytest.raises(SessionInsertError):
        session.insert("k", value)
    assert session.status is UNCHANGED
    assert dict(session) == {"a": 1}


def test_insert_rejects_deep_nesting() -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    session = Session()
    with pytest.raises(SessionInsertError):
        session.insert("deep", deep)
    assert session.status is UNCHANGED


def test_insert_rejects_non_str_key() -> None:
    with pytest.raises(SessionInsertError):
        Session().insert(1, "v")  # type: ignore[arg-type]


def test_insert_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Session()["k"] = {1}


# -- MutableMapping, with Starlette/Django modification semantics ----------------------------


def test_mapping_protocol() -> None:
    session = Session()
    session["a"] = 1
    session["b"] = [1]
    assert "a" in session and len(session) == 2 and sorted(session) == ["a", "b"]
    del session["a"]
    assert session.status is CHANGED
    with pytest.raises(KeyError):
        del session["missing"]
    assert session.pop("b") == [1]
    with pytest.raises(KeyError):
        session.pop("b")


def test_pop_missing_with_default_and_setdefault_existing_change_nothing() -> None:
    session = loaded(a=1)
    assert session.pop("missing", "d") == "d"
    assert session.setdefault("a", 5) == 1
    assert session.get("zzz") is None
    assert session.status is UNCHANGED


def test_setdefault_missing_inserts() -> None:
    session = loaded(a=1)
    assert session.setdefault("b", [1]) == [1]
    assert session.status is CHANGED


def test_popitem_update_and_ior_mark_changed() -> None:
    session = loaded(a=1, b=2)
    assert session.popitem() == ("b", 2)
    assert session.status is CHANGED
    other = loaded(a=1)
    other.update({"b": 2}, c=3)
    assert dict(other) == {"a": 1, "b": 2, "c": 3} and other.status is CHANGED
    third = loaded()
    third |= {"x": 1}
    assert dict(third) == {"x": 1} and third.status is CHANGED
    with pytest.raises(KeyError):
        Session().popitem()


def test_in_place_mutation_is_a_change() -> None:
    session = loaded(cart=["apple"], n=1)
    session["cart"].append("pear")
    status, changes = outcome(session)
    assert status is CHANGED
    assert dict(changes.set) == {"cart": ["apple", "pear"]}
    assert not changes.cleared and not changes.removed


def test_reads_alone_are_not_a_change() -> None:
    session = loaded(cart=["apple"], profile={"a": 1})
    assert session["cart"] == ["apple"]
    assert session.accessed
    assert outcome(session)[0] is UNCHANGED


def test_changes_carry_sets_removals_and_clears() -> None:
    session = loaded(a=1, b=2, c=3)
    session["a"] = 10
    del session["b"]
    status, changes = outcome(session)
    assert status is CHANGED
    assert dict(changes.set) == {"a": 10} and changes.removed == {"b"}
    session.clear()
    session["z"] = 1
    _, changes = outcome(session)
    assert changes.cleared and dict(changes.set) == {"z": 1}


def test_untouched_session_is_not_accessed() -> None:
    session = loaded(a=1)
    assert not session.accessed
    assert outcome(session)[0] is UNCHANGED


def test_frozen_session_refuses_writes_but_reads() -> None:
    tracker = tracked({"a": 1})
    session = tracker.session
    tracker.handle(Event.SEALED, "the response has started")
    assert session["a"] == 1
    with pytest.raises(SessionError, match="response has started"):
        session["a"] = 2
    with pytest.raises(SessionError):
        session.purge()


def test_repr_shows_no_values() -> None:
    assert "secret" not in repr(loaded(token="secret"))


# -- a real dict, as Starlette's request.session is -----------------------------------------


def test_session_is_a_dict_that_json_and_copies_read() -> None:
    import json

    session = loaded(a=1, cart=["x"])
    assert isinstance(session, dict)
    assert not session.accessed
    assert json.loads(json.dumps(session)) == {"a": 1, "cart": ["x"]}
    assert session.accessed, "serialising the session is a use of it (Vary: Cookie)"
    assert dict(session) == {"a": 1, "cart": ["x"]} == session
    assert session.copy() == {"a": 1, "cart": ["x"]} and type(session.copy()) is dict
    assert session | {"b": 2} == {"a": 1, "cart": ["x"], "b": 2}
    assert {"b": 2} | session == {"b": 2, "a": 1, "cart": ["x"]}
    assert {**session} == {"a": 1, "cart": ["x"]}
    assert list(session.keys()) == ["a", "cart"] and list(reversed(session)) == ["cart", "a"]
    assert list(session.values()) == [1, ["x"]]
    assert session != {"a": 2}
    assert session.status is UNCHANGED


def test_dict_readers_count_as_access() -> None:
    for read in (dict, lambda s: s.copy(), lambda s: list(s.items()), lambda s: s == {}):
        session = loaded(a=1)
        read(session)
        assert session.accessed


def test_session_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(Session())


async def test_lazy_session_refuses_use_before_load() -> None:
    from sessionware import SessionNotLoadedError

    calls = []

    class Store:
        async def load_into(self, tracker: Tracker, loading: Session) -> None:
            calls.append(1)
            tracker.fill(loading, {"a": 1}, key="k" * 64)

    tracker = Tracker(Store(), [b"id=x"], None, True)
    tracker.lazy = True
    session = tracker.session
    assert not session.loaded
    with pytest.raises(SessionNotLoadedError):
        session["a"]
    assert await session.load() is session
    await session.load()
    assert calls == [1] and session["a"] == 1 and session.key == "k" * 64


def test_a_session_keeps_attributes_of_the_callers_own() -> None:
    session = Session({"a": 1})
    session.note = "set by the app"  # type: ignore[attr-defined]
    assert session.note == "set by the app"  # type: ignore[attr-defined]
    assert session.status is SessionStatus.UNCHANGED and dict(session) == {"a": 1}


def test_a_new_session_is_a_reset_one() -> None:
    """``_new`` (the request's session, made without ``__init__``) sets what ``_reset`` sets."""
    from sessionware.session import _new, _reset

    tracker = Tracker(None, [], None, False)
    fast, general = _new(tracker), Session.__new__(Session)
    _reset(general, tracker)
    for slot in Session.__slots__:
        if slot not in ("__dict__", "__weakref__"):
            assert getattr(fast, slot) == getattr(general, slot), slot


# -- set_expiry: a lifetime per session ---------------------------------------------------------


@pytest.mark.parametrize("value", [30, 1.5, "P1D", timedelta(days=1).total_seconds()])
def test_set_expiry_takes_a_timedelta_or_none(value: object) -> None:
    with pytest.raises(TypeError, match="timedelta or None"):
        loaded().set_expiry(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [timedelta(seconds=-1), timedelta(milliseconds=500), MAX_LIFETIME + timedelta(seconds=1)],
)
def test_set_expiry_refuses_a_lifetime_it_cannot_keep(value: timedelta) -> None:
    session = loaded(a=1)
    with pytest.raises(ValueError, match="set_expiry"):
        session.set_expiry(value)
    assert session.status is UNCHANGED


def test_set_expiry_changes_the_session_only_when_the_lifetime_differs() -> None:
    tracker = tracked({"a": 1})
    tracker.lifetime = timedelta(days=30).total_seconds()
    session = tracker.session
    session.set_expiry(timedelta(days=30))  # what is stored already
    assert session.status is UNCHANGED
    session.set_expiry(None)
    assert outcome(session) == (CHANGED, Changes(lifetime=None))
    fresh = loaded(a=1)
    fresh.set_expiry(None)  # the middleware's lifecycle, as stored
    assert fresh.status is UNCHANGED
    fresh.set_expiry(timedelta(0))
    assert outcome(fresh) == (CHANGED, Changes(lifetime=0))
    plain = loaded(a=1)
    plain["b"] = 2
    assert outcome(plain)[1].lifetime is KEEP  # a write that chose none keeps the record's


def test_set_expiry_rides_with_renew_and_clear() -> None:
    session = loaded(a=1)
    session.renew()
    session.set_expiry(timedelta(days=2))
    assert outcome(session) == (RENEWED, Changes(lifetime=172800))
    cleared = loaded(a=1)
    cleared.clear()
    cleared.set_expiry(timedelta(hours=1))
    assert outcome(cleared)[1] == Changes.replace({}, lifetime=3600)


def test_set_expiry_after_the_response_head_raises() -> None:
    tracker = tracked({"a": 1})
    tracker.handle(Event.RESPONDED, "head sent")
    tracker.session.set_expiry(None)  # no change: nothing to refuse
    with pytest.raises(SessionError, match="before the response starts"):
        tracker.session.set_expiry(timedelta(days=1))
    assert tracker.session.status is UNCHANGED


def test_a_standalone_session_takes_a_lifetime_and_knows_no_times() -> None:
    session = Session({"a": 1})
    session.set_expiry(timedelta(days=1))
    assert session.status is CHANGED
    assert session.created_at is None and session.expires_at is None
    assert session.ended_reason is None and not session.ended_elsewhere
    Session().set_expiry(None)  # another standalone session shares nothing with it


# -- issue 30 item 1: a state holding containers is encoded once per request ----------------


def _nested_app(store: Any) -> SessionMiddleware:
    async def seed(request: Request) -> Response:
        request.session["items"] = [{"id": i, "tags": [i, str(i)]} for i in range(150)]
        request.session["n"] = 1
        return PlainTextResponse("ok")

    async def read(request: Request) -> Response:
        return PlainTextResponse(str(len(request.session["items"])))

    async def write(request: Request) -> Response:
        request.session["n"] += 1
        return PlainTextResponse("ok")

    async def streamed_read(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"items: "
            yield str(len(request.session["items"])).encode()
            yield b"."

        return StreamingResponse(body())

    async def streamed_write(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"n: "
            request.session["n"] += 1
            yield b"."

        return StreamingResponse(body())

    routes = [
        Route("/seed", seed),
        Route("/read", read),
        Route("/write", write),
        Route("/streamed-read", streamed_read),
        Route("/streamed-write", streamed_write),
    ]
    return SessionMiddleware(Starlette(routes=routes), store=store, key=Key.generate())


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of what the state module's JSON encoder was called on, from now on (the real
    encoder does the work; the wrapper only counts)."""
    seen: list[int] = []
    real = state_module._dumps

    def counting(value: Any) -> str:
        text = real(value)
        seen.append(len(text))
        return text

    monkeypatch.setattr(state_module, "_dumps", counting)
    return seen


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/read", 1),  # at the response head: the state, compared with what was loaded
        ("/streamed-read", 1),  # read after the head: one check at the end, not one a message
        ("/write", 2),  # the state to store, and the one container not written (did it change?)
        ("/streamed-write", 2),
    ],
)
async def test_a_request_of_a_nested_state_encodes_it_once(
    path: str, expected: int, encodes: list[int]
) -> None:
    """Issue 30 item 1: a read of a state holding containers encoded it three times (the late
    path once per message), a write three times; now a read encodes once and a write encodes
    the state once plus each container it did not write (to tell a change in place)."""
    app = _nested_app(MemorySessionStore())
    cookie = (await request(app, "GET", "/seed")).cookie()
    assert cookie is not None
    del encodes[:]
    response = await request(app, "GET", path, cookies={"id": cookie.value})
    assert response.status == 200 and response.exception is None
    assert len(encodes) == expected, encodes
    del encodes[:]
    read = await request(app, "GET", "/read", cookies={"id": cookie.value})
    assert read.text == "150" and len(encodes) == 1


async def test_the_cookie_store_encodes_a_nested_state_once_a_read(encodes: list[int]) -> None:
    app = SessionMiddleware(
        Starlette(routes=[Route("/", _read_cart), Route("/seed", _seed_cart)]),
        store=CookieSessionStore(),
        key=Key.generate(),
    )
    cookie = (await request(app, "GET", "/seed")).cookie()
    assert cookie is not None
    del encodes[:]
    response = await request(app, "GET", "/", cookies={"id": cookie.value})
    assert response.text == "3" and len(encodes) == 1


async def _seed_cart(request: Request) -> Response:
    request.session["cart"] = [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]
    return PlainTextResponse("ok")


async def _read_cart(request: Request) -> Response:
    return PlainTextResponse(str(len(request.session["cart"])))


def test_a_change_in_place_is_found_in_a_state_stored_with_other_spacing() -> None:
    """The loaded text of each value is compared where the envelope is compact JSON; another
    writer's spacing (actix, by hand) falls back to comparing the values' encodings."""
    for origin in ('{"v": 1, "state": {"cart": ["a"], "n": 1}}', '{"cart":["a"],"n":1}'):
        tracker = Tracker(None, [], None, False)
        state = {"cart": ["a"], "n": 1}
        tracker.fill(tracker.session, state, origin=origin)
        session = tracker.session
        session["n"] = 2
        assert dict(outcome(session)[1].set) == {"n": 2}
        session["cart"].append("b")
        assert dict(outcome(session)[1].set) == {"n": 2, "cart": ["a", "b"]}
