"""The checker catches a repository (or cache) that breaks one rule: each test reverts one rule
of the design and expects the checker to report the invariant that rule keeps, where the same
exploration of the real code reports nothing.

(Before issue 24 the repository itself broke the first two rules; these tests passed there too,
the overrides then changing nothing.)
"""

from __future__ import annotations

from typing import Any

from sessionware import repository
from sessionware.repository import Loaded, Repository
from sessionware.state import read_rotation
from sessionware.stores import StoreError
from sessionware.stores.base import ABSENT
from sessionware.stores.cached import CachedSessionStore
from tests.protocol import cached_format
from tests.protocol.checker import explore
from tests.protocol.scenarios import SCENARIOS
from tests.protocol.world import Overrides, Scenario, execute

_RENEWED = getattr(repository, "RENEWED", object())


class CarriesLateWrites(Repository):
    """A write that finds a renewal's tombstone follows it into the successor (the rule it
    breaks: such a write is never carried; it stores nothing and the request gets a 409)."""

    async def save(self, loaded: Loaded, changes: Any, *args: Any, **kwargs: Any) -> Any:
        saved = await super().save(loaded, changes, *args, **kwargs)
        id = loaded.id
        while saved is _RENEWED:
            record, fresh, successor = await self._read(id)
            if successor is None:
                return None
            id = successor
            record, fresh, _ = await self._read(id)
            if fresh is None or record is None:
                continue
            current = Loaded(fresh, id, record.version, record.data.decode())
            saved = await super().save(current, changes, *args, **kwargs)
        return saved


class ForgetsUnsureTombstones(Repository):
    """A tombstone write whose answer is lost counts as failed: the renewal gives up and drops
    its new record (the rule it breaks: it re-reads the old record, and a tombstone naming its
    new record means it succeeded)."""

    async def _swap(self, old_id: str, old_version: Any, new_id: str, tombstone: bytes) -> bool:
        put = self.store.put(old_id, tombstone, self.tombstone_ttl, expect=old_version)
        return await put is not None


class FollowsForever(Repository):
    """A rotation's tombstone is followed however old it is (the rule it breaks: after the
    grace the rotated-away key opens nothing)."""

    def _in_grace(self, tombstone: bytes) -> tuple[float, str | None] | None:
        return read_rotation(tombstone)


class SwapsBlindly(Repository):
    """A renewal or rotation turns the old record into its tombstone whatever happened to it
    since it was read (the rule it breaks: the swap is a compare-and-set, so of two rotations
    one wins and the other follows it)."""

    async def _swap(self, old_id: str, old_version: Any, new_id: str, tombstone: bytes) -> bool:
        record = await self.store.get(old_id)
        expect = ABSENT if record is None else record.version
        put = self.store.put(old_id, tombstone, self.tombstone_ttl, expect=expect)
        return await put is not None


class FillsBlindly(CachedSessionStore):
    """A cache miss copies the durable record into the cache over whatever entry is there by
    then (the rule it breaks: a fill never puts back a version a write replaced)."""

    async def get(self, id: str) -> Any:
        try:
            entry = await self.cache.get(id)
        except StoreError:
            entry = None
        copy = None if entry is None else cached_format.unpack(entry.data)
        if copy is not None:
            return copy
        record = await self.durable.get(id)
        if record is not None:
            there = await self.cache.get(id)  # whatever it holds now: overwritten
            expect = ABSENT if there is None else there.version
            packed = cached_format.pack(record.version, record.data)
            await self.cache.put(id, packed, self.cache_ttl, expect=expect)
        return record


def _scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def _violations(name: str, overrides: Overrides, faults: int) -> set[str]:
    stats = explore(execute(_scenario(name), overrides), faults=faults, max_runs=5_000)
    return {p.split(":")[0] for v in stats.violations for p in v.problems}


def _repository(cls: type[Repository]) -> Overrides:
    return Overrides(repository=lambda store, clock: cls(store, clock=clock))


def test_carrying_late_writes_into_the_successor_is_caught() -> None:
    assert "invariant 3" in _violations("login_write", _repository(CarriesLateWrites), faults=0)
    assert _violations("login_write", Overrides(), faults=0) == set()


def test_not_rereading_after_an_unsure_tombstone_write_is_caught() -> None:
    found = _violations("login_alone", _repository(ForgetsUnsureTombstones), faults=1)
    assert "invariant 4" in found
    assert _violations("login_alone", Overrides(), faults=1) == set()


def test_following_a_rotation_after_its_grace_is_caught() -> None:
    assert "invariant 4" in _violations("rotate_alone", _repository(FollowsForever), faults=0)
    assert _violations("rotate_alone", Overrides(), faults=0) == set()


def test_a_rotation_that_swaps_without_compare_and_set_is_caught() -> None:
    found = _violations("rotate_rotate", _repository(SwapsBlindly), faults=0)
    assert "invariant 5" in found
    assert _violations("rotate_rotate", Overrides(), faults=0) == set()


def test_a_fill_that_ignores_versions_is_caught() -> None:
    found = _violations("cache_read_purge", Overrides(cache=FillsBlindly), faults=0)
    assert "invariant 2" in found
    assert _violations("cache_read_purge", Overrides(), faults=1) == set()
