"""CookieSessionStore (SPEC §5, §7.2): the state is the key; expiry rides inside it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sessionware.state import StoredState
from sessionware.stores import (
    CookieSessionStore,
    LoadError,
    NotSupportedError,
    SaveError,
    SessionKey,
    generate_session_key,
)

TTL = timedelta(hours=1)


async def test_a_random_key_is_a_deserialization_error() -> None:
    with pytest.raises(LoadError) as info:
        await CookieSessionStore().load(generate_session_key())
    assert info.value.deserialization


async def test_saved_key_is_the_v1_envelope_with_expiry() -> None:
    now = 1_700_000_000.0
    store = CookieSessionStore(clock=lambda: now)
    key = await store.save(StoredState({"k": "value", "n": 1}, created=now), TTL)
    raw = json.loads(key)
    assert raw == {
        "v": 1,
        "state": {"k": "value", "n": 1},
        "created": 1700000000,
        "expires": 1700003600,
    }
    assert await store.load(key) == {"k": "value", "n": 1}


async def test_legacy_state_loads_and_can_be_written() -> None:
    store = CookieSessionStore()
    legacy = SessionKey('{"k":"\\"value\\"","n":"1","obj":"{\\"a\\": 1}"}')
    assert await store.load(legacy) == {"k": "value", "n": 1, "obj": {"a": 1}}
    written = await CookieSessionStore(legacy_format=True).save({"counter": 100}, TTL)
    assert json.loads(written) == {"counter": "100"}


async def test_idle_expiry_inside_the_cookie() -> None:
    now = [1_700_000_000.0]
    store = CookieSessionStore(clock=lambda: now[0])
    key = await store.save({"a": 1}, TTL)
    now[0] += 3599
    assert await store.load(key) == {"a": 1}
    now[0] += 2
    assert await store.load(key) is None


async def test_created_in_the_future_beyond_skew_is_rejected() -> None:
    now = 1_700_000_000.0
    store = CookieSessionStore(clock=lambda: now)
    ok = SessionKey(json.dumps({"v": 1, "state": {}, "created": now + 59}))
    assert await store.load(ok) == {}
    bad = SessionKey(json.dumps({"v": 1, "state": {}, "created": now + 61}))
    with pytest.raises(LoadError):
        await store.load(bad)


async def test_an_actix_cookie_without_expiry_opens() -> None:
    assert await CookieSessionStore().load(SessionKey('{"v":1,"state":{"user_id":"ferris"}}')) == {
        "user_id": "ferris"
    }


async def test_oversized_state_is_a_clear_serialization_error() -> None:
    with pytest.raises(SaveError, match="4064") as info:
        await CookieSessionStore().save({"big": "x" * 5000}, TTL)
    assert info.value.serialization


async def test_update_ttl_and_delete_do_nothing_and_index_is_not_supported() -> None:
    store = CookieSessionStore()
    key = await store.save({"a": 1}, TTL)
    await store.update_ttl(key, TTL)
    await store.delete(key)
    assert await store.load(key) == {"a": 1}  # a cookie session cannot be revoked
    with pytest.raises(NotSupportedError, match="not supported by this store"):
        await store.sessions_for("u")
    with pytest.raises(NotSupportedError, match="not supported by this store"):
        await store.delete_all_for("u")
