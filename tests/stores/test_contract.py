"""The store contract (sessionware.stores.base.SessionStore), run against every server-side store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sessionware.state import StoredState
from sessionware.stores import Changes, SessionKey, SessionStore, generate_session_key
from sessionware.stores.base import is_generated_key

TTL = timedelta(minutes=5)


async def test_missing_key_loads_none(server_store: SessionStore) -> None:
    assert await server_store.load(generate_session_key()) is None


async def test_save_then_load_round_trips_json_values(server_store: SessionStore) -> None:
    state = {"s": "value", "n": 1, "f": 1.5, "b": True, "z": None, "o": {"a": [1, {"b": 2}]}}
    key = await server_store.save(state, TTL)
    assert is_generated_key(key)
    loaded = await server_store.load(key)
    assert loaded == state
    assert isinstance(loaded, StoredState)


async def test_save_keeps_created_time(server_store: SessionStore) -> None:
    key = await server_store.save(StoredState({"a": 1}, created=1_700_000_000), TTL)
    loaded = await server_store.load(key)
    assert loaded is not None and loaded.created == 1_700_000_000
    await server_store.update(key, {"a": 2}, TTL, Changes(set={"a": 2}))
    loaded = await server_store.load(key)
    assert loaded == {"a": 2} and loaded.created == 1_700_000_000


async def test_save_gives_distinct_keys(server_store: SessionStore) -> None:
    keys = {await server_store.save({"i": i}, TTL) for i in range(20)}
    assert len(keys) == 20


async def test_update_replaces_without_changes(server_store: SessionStore) -> None:
    key = await server_store.save({"a": 1, "b": 2}, TTL)
    assert await server_store.update(key, {"c": 3}, TTL) == key
    assert await server_store.load(key) == {"c": 3}


async def test_update_merges_changes_into_current_record(server_store: SessionStore) -> None:
    key = await server_store.save({"a": 1, "b": 2}, TTL)
    # Another request changed "b" meanwhile; this one only set "c" and removed "a".
    await server_store.update(key, {"a": 1, "b": 20}, TTL, Changes(set={"b": 20}))
    new = await server_store.update(
        key, {"b": 2, "c": 3}, TTL, Changes(set={"c": 3}, removed=frozenset({"a"}))
    )
    assert new == key
    assert await server_store.load(key) == {"b": 20, "c": 3}


async def test_update_with_cleared_changes_drops_other_keys(server_store: SessionStore) -> None:
    key = await server_store.save({"a": 1, "b": 2}, TTL)
    await server_store.update(key, {"x": 1}, TTL, Changes(cleared=True, set={"x": 1}))
    assert await server_store.load(key) == {"x": 1}


async def test_update_of_expired_key_saves_under_new_key(server_store: SessionStore) -> None:
    stale = generate_session_key()
    new = await server_store.update(stale, {"a": 1}, TTL, Changes(set={"a": 1}))
    assert new is not None and new != stale
    assert await server_store.load(new) == {"a": 1}
    assert await server_store.load(stale) is None


async def test_delete_leaves_purge_tombstone(server_store: SessionStore) -> None:
    key = await server_store.save({"a": 1}, TTL)
    await server_store.delete(key)
    assert await server_store.load(key) is None
    # A request that loaded before the purge must not bring it back.
    assert await server_store.update(key, {"a": 2}, TTL, Changes(set={"a": 2})) is None
    assert await server_store.load(key) is None


async def test_update_after_renew_goes_to_successor(server_store: SessionStore) -> None:
    old = await server_store.save({"a": 1, "b": 1}, TTL)
    new = await server_store.save({"a": 1, "b": 1, "user": "ferris"}, TTL)
    await server_store.delete(old, successor=new)
    assert await server_store.load(old) is None
    result = await server_store.update(old, {"a": 2, "b": 1}, TTL, Changes(set={"a": 2}))
    assert result == new
    assert await server_store.load(new) == {"a": 2, "b": 1, "user": "ferris"}


async def test_update_ttl_on_missing_key_is_not_an_error(server_store: SessionStore) -> None:
    await server_store.update_ttl(generate_session_key(), TTL)


async def test_keys_that_are_not_generated_shape_are_just_unknown(
    server_store: SessionStore,
) -> None:
    for raw in ["user:42", "*", "../x", "session:abc", "a" * 4000, "' OR 1=1 --"]:
        assert await server_store.load(SessionKey(raw)) is None


async def test_records_expire_after_their_ttl(server_store: SessionStore) -> None:
    key = await server_store.save({"a": 1}, timedelta(seconds=1))
    other = await server_store.save({"b": 1}, timedelta(seconds=1))
    await server_store.update_ttl(other, timedelta(seconds=30))
    await asyncio.sleep(_expiry_wait(server_store))
    assert await server_store.load(key) is None
    assert await server_store.load(other) == {"b": 1}


def _expiry_wait(store: SessionStore) -> float:
    """Time to wait for a 1-second TTL to pass (memory stores expire on their clock)."""
    return 2.1


@pytest.mark.parametrize("value", ["é ✓ 𝄞", "\u2028", "x" * 3000, "\\\"'"])
async def test_text_values_survive(server_store: SessionStore, value: str) -> None:
    key = await server_store.save({"k": value}, TTL)
    assert await server_store.load(key) == {"k": value}


async def test_a_second_renewal_does_not_replace_the_first(server_store: SessionStore) -> None:
    old = await server_store.save({"a": 1}, TTL)
    first = await server_store.save({"a": 1}, TTL)
    second = await server_store.save({"a": 1}, TTL)
    await server_store.delete(old, successor=first)
    await server_store.delete(old, successor=second)  # lost the race: the first renewal stays
    assert await server_store.update(old, {"a": 1}, TTL, Changes()) == first


async def test_a_purge_follows_a_renewal(server_store: SessionStore) -> None:
    old = await server_store.save({"a": 1}, TTL)
    renewed = await server_store.save({"a": 1}, TTL)
    await server_store.delete(old, successor=renewed)
    await server_store.delete(old)  # a request that loaded before the renewal logs out
    assert await server_store.load(renewed) is None
    assert await server_store.update(old, {"a": 2}, TTL, Changes(set={"a": 2})) is None
    assert await server_store.update(renewed, {"a": 2}, TTL, Changes(set={"a": 2})) is None
