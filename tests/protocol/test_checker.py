"""The checker itself: the fault model does what it says, the exploration is complete (the
reduction loses no outcome), runs replay exactly, and sampling is reproducible."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from sessionware.stores import MemorySessionStore, StoreError
from sessionware.stores.base import ABSENT
from tests.protocol.checker import (
    ACTOR,
    CheckerLoop,
    Run,
    ScheduledIndexedStore,
    at_once,
    explore,
    replay,
    sample,
)
from tests.protocol.scenarios import SCENARIOS
from tests.protocol.world import execute

TTL = timedelta(hours=1)
Action = Callable[[ScheduledIndexedStore], Awaitable[Any]]


def _tiny(actions: dict[str, Action], seeded: tuple[str, ...] = ("x",)) -> Any:
    """An ``Execute`` whose actors run ``actions`` on one store; it 'breaks' one invariant
    per actor, naming what the actor got and what the store holds after, so that the outcomes
    can be compared."""

    def once(run: Run, loop: CheckerLoop) -> list[str] | None:
        store = ScheduledIndexedStore(MemorySessionStore(), "db", run)
        for id in seeded:
            at_once(store.backing.put(id, b"v0", TTL, expect=ABSENT))
        got: dict[str, Any] = {}

        async def actor(name: str, action: Action) -> None:
            ACTOR.set(name)
            try:
                got[name] = await action(store)
            except StoreError:
                got[name] = "StoreError"

        async def main() -> None:
            run.tasks = [asyncio.ensure_future(actor(n, a)) for n, a in actions.items()]
            for task, name in zip(run.tasks, actions, strict=True):
                task.set_name(name)
            await asyncio.gather(*run.tasks, return_exceptions=True)

        run.scheduling = True
        loop.run_until_complete(main())
        run.scheduling = False
        if run.abandoned:
            return None
        held = {id: at_once(store.backing.get(id)) for id in ("x", "y")}
        data = {id: None if r is None else r.data.decode() for id, r in held.items()}
        return [f"{name} got {got[name]!r}; store {data}" for name in sorted(got)]

    return once


def _put(id: str, value: bytes) -> Action:
    """Read ``id``, then write ``value`` over what was read: whether it applied."""

    async def action(store: ScheduledIndexedStore) -> Any:
        record = await store.get(id)
        expect = ABSENT if record is None else record.version
        return await store.put(id, value, TTL, expect=expect) is not None

    return action


def _one(schedule: str, actions: dict[str, Action]) -> list[str]:
    return replay(_tiny(actions), schedule, faults=1)[1]


def test_fail_takes_no_effect_and_raises() -> None:
    assert _one("A.1 get; A.2 put !fail", {"A": _put("x", b"a")}) == [
        "A got 'StoreError'; store {'x': 'v0', 'y': None}"
    ]


def test_lost_takes_effect_and_raises() -> None:
    assert _one("A.1 get; A.2 put !lost", {"A": _put("x", b"a")}) == [
        "A got 'StoreError'; store {'x': 'a', 'y': None}"
    ]


def test_retry_takes_effect_and_the_second_attempt_answers() -> None:
    """Like the Redis store's retry-once: the compare-and-set landed, so the retry finds the
    record changed and answers that it did not apply."""
    assert _one("A.1 get; A.2 put !retry; A.2 put !again", {"A": _put("x", b"a")}) == [
        "A got False; store {'x': 'a', 'y': None}"
    ]


def test_expire_removes_the_record_first() -> None:
    assert _one("A.1 get !expire; A.2 put", {"A": _put("x", b"a")}) == [
        "A got True; store {'x': 'a', 'y': None}"
    ]


def test_only_records_older_than_the_run_expire() -> None:
    """A record written during the run has a fresh TTL: after a put lands on it, no call on it
    is offered to expire; before, the seeded record may."""
    stats = explore(_tiny({"A": _put("x", b"a"), "B": _put("x", b"b")}), faults=1, max_runs=10_000)
    schedules = [v.schedule.split("; ") for v in stats.violations]
    assert stats.exhaustive and any("A.1 get !expire" in s for s in schedules)
    for steps in schedules:
        landed = [i for i, step in enumerate(steps) if " put" in step and "!fail" not in step]
        expired = [i for i, step in enumerate(steps) if "!expire" in step]
        assert not (landed and expired and min(landed) < max(expired)), steps


def test_calls_on_different_records_commute() -> None:
    actions = {"A": _put("x", b"a"), "B": _put("y", b"b")}
    reduced = explore(_tiny(actions), faults=0, max_runs=100)
    full = explore(_tiny(actions), faults=0, max_runs=100, reduce=False)
    assert (reduced.complete, full.complete) == (1, 6)  # 4!/(2!2!) orders, one trace
    # (the memory store numbers versions with one counter, so the tokens differ by order; the
    # repository only compares a record's token with that record's, so nothing else does)
    assert {str(v.problems) for v in reduced.violations} == {
        str(v.problems) for v in full.violations
    }


def test_calls_on_one_record_are_ordered_every_way() -> None:
    stats = explore(_tiny({"A": _put("x", b"a"), "B": _put("x", b"b")}), faults=0, max_runs=100)
    outcomes = {tuple(v.problems) for v in stats.violations}
    assert stats.exhaustive and stats.complete == 4
    assert len(outcomes) == 4  # A first, B first, both read then A wins, then B wins


def _outcome(run: Any) -> Any:
    """What a scenario's run ended with, without the names that differ between equivalent runs
    (the order keys were issued in)."""
    world = run.world
    results = tuple(
        (r.actor.name, r.status, r.cookie is None, r.cookie == "removal", r.loaded, r.refused)
        for r in world.results.values()
    )
    probes = sorted(json.dumps(p.state, sort_keys=True) for p in world.probes.values())
    return results, tuple(probes)


@pytest.mark.parametrize(
    ("name", "faults"), [("login_write", 0), ("purge_write", 1), ("cache_read_purge", 0)]
)
def test_the_reduction_loses_no_outcome(name: str, faults: int) -> None:
    """Sleep sets skip orders that commute; every outcome a full enumeration reaches is
    reached by the reduced one too."""
    scenario = next(s for s in SCENARIOS if s.name == name)
    seen: dict[bool, set[Any]] = {True: set(), False: set()}
    for reduce in (True, False):
        inner = execute(scenario)

        def once(run: Run, loop: CheckerLoop, inner: Any = inner, reduce: bool = reduce) -> Any:
            problems = inner(run, loop)
            if problems is not None:
                normal = sorted(re.sub(r"K\d+", "K", p) for p in problems)
                seen[reduce].add((_outcome(inner), tuple(normal)))
            return problems

        stats = explore(once, faults=faults, max_runs=20_000, reduce=reduce)
        assert stats.exhaustive
    assert seen[True] == seen[False]


def test_a_violation_replays_to_the_same_problems() -> None:
    from tests.protocol.test_broken import CarriesLateWrites, _repository

    scenario = next(s for s in SCENARIOS if s.name == "login_write")
    broken = _repository(CarriesLateWrites)
    stats = explore(execute(scenario, broken), faults=1, max_runs=20_000)
    assert stats.violations
    for violation in stats.violations[:10]:
        assert replay(execute(scenario, broken), violation.schedule)[1] == violation.problems


def test_sampling_is_reproducible() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "write_write")
    first = sample(execute(scenario), faults=1, runs=40, seed=7)
    again = sample(execute(scenario), faults=1, runs=40, seed=7)
    assert (first.complete, first.steps) == (again.complete, again.steps)
