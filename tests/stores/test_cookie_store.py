"""CookieSessionStore (SPEC §5, §7.2): the client-side backend; the state is the cookie's
plaintext and its expiry rides inside it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sessionware.state import DeserializationError, StoredState
from sessionware.stores import CookieSessionStore, NotSupportedError, generate_session_key

TTL = timedelta(hours=1)


def test_a_random_key_is_a_deserialization_error() -> None:
    with pytest.raises(DeserializationError):
        CookieSessionStore().open(generate_session_key())


def test_dump_is_the_v1_envelope_with_expiry() -> None:
    now = 1_700_000_000.0
    store = CookieSessionStore()
    text = store.dump(StoredState({"k": "value", "n": 1}, created=now), TTL, now=now)
    assert json.loads(text) == {
        "v": 1,
        "state": {"k": "value", "n": 1},
        "created": 1700000000,
        "expires": 1700003600,
    }
    assert store.open(text, now=now) == {"k": "value", "n": 1}


def test_legacy_state_opens_and_can_be_written() -> None:
    store = CookieSessionStore()
    legacy = '{"k":"\\"value\\"","n":"1","obj":"{\\"a\\": 1}"}'
    assert store.open(legacy) == {"k": "value", "n": 1, "obj": {"a": 1}}
    written = CookieSessionStore(legacy_format=True).dump({"counter": 100}, TTL)
    assert json.loads(written) == {"counter": "100"}


def test_idle_expiry_inside_the_cookie() -> None:
    now = 1_700_000_000.0
    store = CookieSessionStore()
    text = store.dump({"a": 1}, TTL, now=now)
    assert store.open(text, now=now + 3599) == {"a": 1}
    assert store.open(text, now=now + 3601) is None


def test_a_clock_given_to_the_store_is_deprecated_and_still_used() -> None:
    """Issue 24: the middleware's clock decides; a store's own clock= warns."""
    with pytest.warns(DeprecationWarning, match=r"SessionMiddleware\(clock=\.\.\.\)"):
        store = CookieSessionStore(clock=lambda: 1_700_000_000.0)
    assert store.legacy_clock is not None and store.legacy_clock() == 1_700_000_000.0


def test_created_in_the_future_beyond_skew_is_rejected() -> None:
    now = 1_700_000_000.0
    store = CookieSessionStore()
    assert store.open(json.dumps({"v": 1, "state": {}, "created": now + 59}), now=now) == {}
    with pytest.raises(DeserializationError):
        store.open(json.dumps({"v": 1, "state": {}, "created": now + 61}), now=now)


def test_an_actix_cookie_without_expiry_opens() -> None:
    assert CookieSessionStore().open('{"v":1,"state":{"user_id":"ferris"}}') == {
        "user_id": "ferris"
    }


async def test_the_user_index_is_not_supported() -> None:
    store = CookieSessionStore()
    with pytest.raises(NotSupportedError, match="not supported by this store"):
        await store.sessions_for("u")
    with pytest.raises(NotSupportedError, match="not supported by this store"):
        await store.delete_all_for("u")
    with pytest.raises(NotSupportedError, match="not supported by this store"):
        await store.end_session("0" * 64)
