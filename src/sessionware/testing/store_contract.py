"""The record-store contract suite, shipped so any store can prove it keeps the contract.

Subclass ``StoreContract`` in a test module and give it the store under test::

    import pytest
    from sessionware.testing.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def record_store(self):
            store = MyStore(...)
            yield store
            await store.aclose()

It needs pytest and pytest-asyncio (``pip install 'sessionware[testing]'``), with
``asyncio_mode = "auto"`` or the fixture decorated with ``pytest_asyncio.fixture``. Expiry is tested with real time by default (sleeps of about two
seconds); a store with an injectable clock may override the ``advance`` fixture to move it
instead. The first half checks the record level (``get``/``put``/``touch``/``delete``, the
optional ``UserIndex`` and the optional batches ``BatchRecords`` and ``BatchIndex``, each
skipped, saying so, on a store without it); the second runs the session rules of
``sessionware.repository`` over the store, so what users rely on (merging, renewal,
revocation, hop limits, unreadable records) behaves the same on every store.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from sessionware.repository import (
    ENDED,
    RENEWED,
    Changes,
    Loaded,
    Repository,
    Update,
    index_key,
)
from sessionware.state import DeserializationError, StoredState
from sessionware.stores.base import (
    ABSENT,
    BatchRecords,
    RecordStore,
    Replace,
    SessionKey,
    UserIndex,
)

__all__ = ["StoreContract"]

TTL = timedelta(minutes=5)
SHORT = timedelta(seconds=1)
Advance = Callable[[float], Awaitable[None]]


class StoreContract:
    """The contract every ``RecordStore`` keeps; see the module docstring for how to run it."""

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def advance(self) -> Advance:
        """Let ``seconds`` pass for the store (real time, with a margin for servers that count
        whole seconds); override it for a store with an injectable clock."""

        async def sleep(seconds: float) -> None:
            await asyncio.sleep(seconds + 1.1)

        return sleep

    @pytest.fixture
    def repository(self, record_store: RecordStore) -> Repository:
        return Repository(record_store, tombstone_ttl=SHORT, max_hops=3)

    # -- the record level --------------------------------------------------------------------

    async def test_is_a_record_store(self, record_store: RecordStore) -> None:
        assert isinstance(record_store, RecordStore)
        assert isinstance(record_store.hash_keys, bool)

    async def test_missing_id_gets_none(self, record_store: RecordStore) -> None:
        assert await record_store.get(_id("missing")) is None

    async def test_create_then_get_round_trips_bytes(self, record_store: RecordStore) -> None:
        data = '{"v":1,"state":{"s":"ünïcode ✓","big":"' + "x" * 100_000 + '"}}'
        version = await record_store.put(_id("a"), data.encode(), TTL, expect=ABSENT)
        assert version is not None
        record = await record_store.get(_id("a"))
        assert record is not None and record.data == data.encode()
        assert record.version == version

    async def test_create_if_absent_refuses_a_taken_id(self, record_store: RecordStore) -> None:
        assert await record_store.put(_id("a"), b'{"n":1}', TTL, expect=ABSENT) is not None
        assert await record_store.put(_id("a"), b'{"n":2}', TTL, expect=ABSENT) is None
        record = await record_store.get(_id("a"))
        assert record is not None and record.data == b'{"n":1}'

    async def test_compare_and_set(self, record_store: RecordStore) -> None:
        first = await record_store.put(_id("a"), b'{"n":1}', TTL, expect=ABSENT)
        second = await record_store.put(_id("a"), b'{"n":2}', TTL, expect=first)
        assert second is not None and second != first
        # A writer still holding the first version has lost the race.
        assert await record_store.put(_id("a"), b'{"n":3}', TTL, expect=first) is None
        record = await record_store.get(_id("a"))
        assert record is not None and record.data == b'{"n":2}' and record.version == second

    async def test_compare_and_set_on_a_vanished_record(self, record_store: RecordStore) -> None:
        version = await record_store.put(_id("a"), b"{}", TTL, expect=ABSENT)
        await record_store.delete(_id("a"))
        assert await record_store.put(_id("a"), b"{}", TTL, expect=version) is None
        assert await record_store.get(_id("a")) is None

    async def test_ids_are_independent(self, record_store: RecordStore) -> None:
        await record_store.put(_id("a"), b'{"a":1}', TTL, expect=ABSENT)
        await record_store.put(_id("b"), b'{"b":1}', TTL, expect=ABSENT)
        await record_store.delete(_id("a"))
        record = await record_store.get(_id("b"))
        assert record is not None and record.data == b'{"b":1}'

    async def test_delete_is_idempotent(self, record_store: RecordStore) -> None:
        await record_store.delete(_id("never"))
        await record_store.put(_id("a"), b"{}", TTL, expect=ABSENT)
        await record_store.delete(_id("a"))
        await record_store.delete(_id("a"))
        assert await record_store.get(_id("a")) is None

    async def test_records_expire(self, record_store: RecordStore, advance: Advance) -> None:
        await record_store.put(_id("short"), b'{"n":1}', SHORT, expect=ABSENT)
        await record_store.put(_id("long"), b'{"n":1}', TTL, expect=ABSENT)
        await advance(SHORT.total_seconds())
        assert await record_store.get(_id("short")) is None
        assert await record_store.get(_id("long")) is not None
        # An expired record counts as absent: its id can be taken again.
        assert await record_store.put(_id("short"), b'{"n":2}', TTL, expect=ABSENT) is not None

    async def test_touch_extends_only_live_records(
        self, record_store: RecordStore, advance: Advance
    ) -> None:
        version = await record_store.put(_id("a"), b'{"n":1}', SHORT, expect=ABSENT)
        assert await record_store.touch(_id("a"), TTL) is True
        assert await record_store.touch(_id("missing"), TTL) is False
        await advance(SHORT.total_seconds())
        record = await record_store.get(_id("a"))
        assert record is not None and record.version == version  # touch is not a write

    async def test_user_index(self, record_store: RecordStore, advance: Advance) -> None:
        if not isinstance(record_store, UserIndex):
            pytest.skip(f"{type(record_store).__name__} has no per-user index")
        await record_store.index_add("ada", _id("a"), TTL)
        await record_store.index_add("ada", _id("b"), TTL)
        await record_store.index_add("bob", _id("c"), TTL)
        assert sorted(await record_store.index_members("ada")) == sorted([_id("a"), _id("b")])
        await record_store.index_remove("ada", _id("a"))
        await record_store.index_remove("ada", _id("never"))
        assert await record_store.index_members("ada") == [_id("b")]
        assert await record_store.index_members("nobody") == []
        # Members past their time are not listed, and a second add moves the time.
        await record_store.index_add("eve", _id("d"), SHORT)
        await record_store.index_add("eve", _id("e"), SHORT)
        await record_store.index_add("eve", _id("e"), TTL)
        await advance(SHORT.total_seconds())
        await record_store.index_add("eve", _id("f"), TTL)
        assert sorted(await record_store.index_members("eve")) == sorted([_id("e"), _id("f")])

    async def test_get_many(self, record_store: RecordStore, advance: Advance) -> None:
        batches = _batches(record_store)
        await record_store.put(_id("a"), b'{"a":1}', TTL, expect=ABSENT)
        version = await record_store.put(_id("b"), b'{"b":1}', TTL, expect=ABSENT)
        await record_store.put(_id("short"), b"{}", SHORT, expect=ABSENT)
        await advance(SHORT.total_seconds())
        ids = [_id("b"), _id("missing"), _id("short"), _id("a")]
        records = await batches.get_many(ids)
        assert [r and r.data for r in records] == [b'{"b":1}', None, None, b'{"a":1}']
        assert records[0] is not None and records[0].version == version
        assert await batches.get_many([]) == []

    async def test_replace_many(self, record_store: RecordStore) -> None:
        batches = _batches(record_store)
        first = await record_store.put(_id("a"), b'{"n":1}', TTL, expect=ABSENT)
        stale = await record_store.put(_id("b"), b'{"n":1}', TTL, expect=ABSENT)
        await record_store.put(_id("b"), b'{"n":2}', TTL, expect=stale)  # b moved on
        gone = await record_store.put(_id("c"), b'{"n":1}', TTL, expect=ABSENT)
        await record_store.delete(_id("c"))
        writes = [
            Replace(_id("a"), b'{"n":10}', TTL, first),
            Replace(_id("b"), b'{"n":10}', TTL, stale),
            Replace(_id("c"), b'{"n":10}', TTL, gone),
        ]
        versions = await batches.replace_many(writes)
        assert versions[0] is not None and versions[0] != first
        assert versions[1:] == [None, None]  # each write lands or not on its own
        a, b = await record_store.get(_id("a")), await record_store.get(_id("b"))
        assert a is not None and a.data == b'{"n":10}' and a.version == versions[0]
        assert b is not None and b.data == b'{"n":2}'
        assert await record_store.get(_id("c")) is None
        assert await batches.replace_many([]) == []

    async def test_index_remove_many(self, record_store: RecordStore) -> None:
        remove_many = getattr(record_store, "index_remove_many", None)
        if not isinstance(record_store, UserIndex) or not callable(remove_many):
            pytest.skip(f"{type(record_store).__name__} has no batched index removal (optional)")
        for name in ("a", "b", "c"):
            await record_store.index_add("ada", _id(name), TTL)
        await record_store.index_add("bob", _id("a"), TTL)
        await remove_many("ada", [_id("a"), _id("c"), _id("never")])
        await remove_many("ada", [])
        assert await record_store.index_members("ada") == [_id("b")]
        assert await record_store.index_members("bob") == [_id("a")]

    # -- the session rules over this store ---------------------------------------------------

    async def test_sessions_are_filed_under_a_hash(self, repository: Repository) -> None:
        key, _ = await repository.create({"secret": "s"}, StoredState(created=1.0), TTL)
        store = repository.store
        expected = hashlib.sha256(key.encode()).hexdigest() if store.hash_keys else key
        record = await store.get(expected)
        assert record is not None
        if store.hash_keys:
            assert key.encode() not in record.data
            assert await store.get(key) is None

    async def test_load_round_trips_state_and_metadata(self, repository: Repository) -> None:
        state = {"s": "v", "n": 1, "f": 1.5, "b": True, "z": None, "o": {"a": [1, {"b": 2}]}}
        key, _ = await repository.create(state, StoredState(created=1_700_000_000.0), TTL)
        loaded = await _load(repository, key)
        assert loaded.state == state and loaded.state.created == 1_700_000_000

    async def test_concurrent_writes_merge(self, repository: Repository) -> None:
        key, _ = await repository.create({"a": 1, "b": 2}, StoredState(), TTL)
        first, second = await _load(repository, key), await _load(repository, key)
        await _save(repository, first, Changes(set={"b": 20}))
        saved = await _save(repository, second, Changes(set={"c": 3}, removed=frozenset({"a"})))
        assert isinstance(saved, Loaded)
        assert (await _load(repository, key)).state == {"b": 20, "c": 3}

    async def test_purge_ends_the_session_for_a_slower_writer(
        self, repository: Repository, advance: Advance
    ) -> None:
        key, _ = await repository.create({"user": "ada"}, StoredState(), TTL)
        slow = await _load(repository, key)
        await repository.purge(await _load(repository, key))
        assert not await _live(repository, key)
        assert await _save(repository, slow, Changes(set={"x": 1})) is None
        # Still ended once the tombstone has expired: never saved under a new key.
        await advance(repository.tombstone_ttl.total_seconds())
        assert await _save(repository, slow, Changes(set={"x": 1})) is None
        assert not await _live(repository, key)

    async def test_renew_carries_a_concurrent_write(self, repository: Repository) -> None:
        key, _ = await repository.create({"cart": [1]}, StoredState(), TTL)
        login = await _load(repository, key)
        await _save(repository, await _load(repository, key), Changes(set={"csrf": "t1"}))
        renewed = await repository.renew(login, Changes(set={"user": "ada"}), StoredState(), TTL)
        assert isinstance(renewed, tuple)
        new_key, _ = renewed
        assert (await _load(repository, new_key)).state == {
            "cart": [1],
            "user": "ada",
            "csrf": "t1",
        }
        assert not await _live(repository, key)

    async def test_a_write_after_renew_never_reaches_the_successor(
        self, repository: Repository
    ) -> None:
        key, _ = await repository.create({"a": 1}, StoredState(), TTL)
        slow = await _load(repository, key)
        renewed = await repository.renew(
            await _load(repository, key), Changes(set={"user": "ada"}), StoredState(), TTL
        )
        assert isinstance(renewed, tuple)
        assert await _save(repository, slow, Changes(set={"payout": "attacker"})) is RENEWED
        assert (await _load(repository, renewed[0])).state == {"a": 1, "user": "ada"}
        assert await repository.load(key, TTL) is RENEWED  # loads never follow it either

    async def test_two_renewals_leave_one_session(self, repository: Repository) -> None:
        key, _ = await repository.create({"a": 1}, StoredState(), TTL)
        first, second = await _load(repository, key), await _load(repository, key)
        won = await repository.renew(first, Changes(), StoredState(), TTL)
        lost = await repository.renew(second, Changes(set={"b": 2}), StoredState(), TTL)
        assert isinstance(won, tuple) and lost is RENEWED
        assert (await _load(repository, won[0])).state == {"a": 1}

    async def test_updates_apply_to_the_value_stored_now(self, repository: Repository) -> None:
        key, _ = await repository.create({"n": 1}, StoredState(), TTL)
        first, second = await _load(repository, key), await _load(repository, key)
        increment = Changes(updates={"n": (Update(lambda n: n + 1, 1),)})
        await _save(repository, first, increment)
        await _save(repository, second, increment)  # loaded n=1, merged onto n=2
        assert (await _load(repository, key)).state == {"n": 3}

    async def test_purging_a_renewed_key_purges_its_successor(self, repository: Repository) -> None:
        key, _ = await repository.create({"a": 1}, StoredState(), TTL)
        logout = await _load(repository, key)
        renewed = await repository.renew(
            await _load(repository, key), Changes(), StoredState(), TTL
        )
        assert isinstance(renewed, tuple)
        await repository.purge(logout)
        assert not await _live(repository, renewed[0])

    async def test_purge_follows_renewals_up_to_the_hop_limit(self, repository: Repository) -> None:
        key, _ = await repository.create({"a": 1}, StoredState(), TTL)
        logout = await _load(repository, key)
        current = key
        for _ in range(repository.max_hops):
            renewed = await repository.renew(
                await _load(repository, current), Changes(), StoredState(), TTL
            )
            assert isinstance(renewed, tuple)
            current = renewed[0]
        await repository.purge(logout)
        assert await repository.load(current, TTL) is ENDED

    async def test_unreadable_record(self, repository: Repository) -> None:
        key, _ = await repository.create({"a": 1}, StoredState(), TTL)
        loaded = await _load(repository, key)
        store = repository.store
        await store.put(loaded.id, b"\xff not json", TTL, expect=loaded.version)
        with pytest.raises(DeserializationError):
            await repository.load(key, TTL)
        # A write that meets it ends the session (never an error page, never a new key).
        assert await _save(repository, loaded, Changes(set={"b": 2})) is None

    async def test_users_sessions(self, repository: Repository) -> None:
        if repository.index is None:
            pytest.skip(f"{type(repository.store).__name__} has no per-user index")
        meta = StoredState(user="ada", agent="Firefox", created=1_700_000_000.0)
        first, _ = await repository.create({"n": 1}, meta, TTL)
        meta.created = 1_700_000_001.0
        second, _ = await repository.create({"n": 2}, meta, TTL)
        await repository.create({"n": 3}, StoredState(user="bob"), TTL)
        infos = await repository.sessions_for("ada")
        first_id, second_id = (repository.public_id(repository.id_of(k)) for k in (first, second))
        assert [i.id for i in infos] == [first_id, second_id]
        assert infos[0].user_agent == "Firefox" and infos[0].expires is not None
        assert await repository.end_all_for("ada", first_id) == 1
        assert not await _live(repository, second)
        assert await _live(repository, first)
        assert await repository.end(first_id) is True
        assert await repository.end(first_id) is False
        assert await repository.sessions_for("ada") == []
        assert len(await repository.sessions_for("bob")) == 1

    async def test_index_keys_of_other_indexes(self, record_store: RecordStore) -> None:
        if not isinstance(record_store, UserIndex):
            pytest.skip(f"{type(record_store).__name__} has no index")
        # What Session.index files under: a name, U+001F, a value of up to 200 characters.
        longest = index_key("n" * 32, "ü" * 200)
        await record_store.index_add(longest, _id("a"), TTL)
        await record_store.index_add(index_key("oidc_sid", "s1"), _id("b"), TTL)
        assert await record_store.index_members(longest) == [_id("a")]
        assert await record_store.index_members(index_key("oidc_sid", "s1")) == [_id("b")]
        assert await record_store.index_members("oidc_sid") == []

    async def test_sessions_by_another_index(self, repository: Repository) -> None:
        if repository.index is None:
            pytest.skip(f"{type(repository.store).__name__} has no index")

        def public(key: str) -> str:  # what a listing shows (the key's hash in every mode)
            return repository.public_id(repository.id_of(key))

        sid: dict[str, str | None] = {"oidc_sid": "op-session-1"}
        first, _ = await repository.create({"n": 1}, StoredState(user="ada", indexes=sid), TTL)
        second, _ = await repository.create({"n": 2}, StoredState(indexes=sid), TTL)
        other: dict[str, str | None] = {"oidc_sid": "op-session-2"}
        third, _ = await repository.create({"n": 3}, StoredState(user="ada", indexes=other), TTL)
        found = await repository.sessions_where("oidc_sid", "op-session-1")
        assert sorted(i.id for i in found) == sorted(map(public, (first, second)))
        # A renewal keeps the index; a write can take the session out of it.
        renewed = await repository.renew(
            await _load(repository, first), Changes(), StoredState(user="ada"), TTL
        )
        assert isinstance(renewed, tuple)
        first = renewed[0]
        assert (await _load(repository, first)).state.indexes == sid
        found = await repository.sessions_where("oidc_sid", "op-session-1")
        assert sorted(i.id for i in found) == sorted(map(public, (first, second)))
        out = StoredState(indexes={"oidc_sid": None})
        await repository.save(await _load(repository, second), Changes(), out, TTL)
        assert [i.id for i in await repository.sessions_where("oidc_sid", "op-session-1")] == [
            public(first)
        ]
        # Ending by the index ends only the sessions filed under it, and unfiles them.
        assert await repository.end_where("oidc_sid", "op-session-1") == 1
        assert not await _live(repository, first)
        assert await _live(repository, second) and await _live(repository, third)
        assert [i.id for i in await repository.sessions_for("ada")] == [public(third)]
        assert await repository.sessions_where("oidc_sid", "op-session-1") == []

    async def test_sign_out_everywhere_catches_a_renewal(self, repository: Repository) -> None:
        if repository.index is None:
            pytest.skip(f"{type(repository.store).__name__} has no per-user index")
        key, _ = await repository.create({"n": 1}, StoredState(user="ada"), TTL)
        renewing = await _load(repository, key)
        # The renewal's new record is filed before the old one is buried: either way it ends.
        assert await repository.end_all_for("ada") == 1
        assert await repository.renew(renewing, Changes(), StoredState(), TTL) is None
        assert await repository.sessions_for("ada") == []


_RUN = uuid.uuid4().hex


def _batches(store: RecordStore) -> BatchRecords:
    """The store's optional batches (``BatchRecords``); the test skips, saying so, without."""
    if not all(callable(getattr(store, op, None)) for op in ("get_many", "replace_many")):
        pytest.skip(f"{type(store).__name__} has no batched reads and writes (optional)")
    return store  # type: ignore[return-value]


def _id(name: str) -> str:
    """A record id of the repository's shape, distinct per test name and run."""
    return hashlib.sha256(f"{_RUN}:{name}:{asyncio.get_running_loop()!r}".encode()).hexdigest()


async def _live(repository: Repository, key: SessionKey) -> bool:
    return isinstance(await repository.load(key, TTL), Loaded)


async def _load(repository: Repository, key: SessionKey) -> Loaded:
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded), "the session should be live"
    return loaded


async def _save(repository: Repository, loaded: Loaded, changes: Changes) -> Loaded | None:
    return await repository.save(loaded, changes, StoredState(), TTL)
