"""Every scenario, every explored schedule, every invariant (docs/concurrency.md).

Each scenario is explored exhaustively with its fault budget when that is small enough; the
larger ones (three actors, or two processes through a cache) exhaustively without faults and
then with ``sampled`` seeded random schedules with faults. ``PROTOCOL_DEEP=1`` explores every
scenario exhaustively with its faults and samples 20,000 schedules with two faults (minutes).
A violation fails the test with the schedules that broke it, shortest first: each replays with
``tests.protocol.checker.replay`` (tests/protocol/test_replays.py keeps the ones found).
"""

from __future__ import annotations

import os

import pytest

from tests.protocol.checker import Stats, explore, sample
from tests.protocol.conftest import REPORT
from tests.protocol.invariants import INVARIANTS
from tests.protocol.scenarios import SCENARIOS
from tests.protocol.world import Scenario, execute

DEEP = os.environ.get("PROTOCOL_DEEP") == "1"
SEED = 29
BUDGET = 100_000 if DEEP else 20_000
"""Runs an exhaustive exploration may take; more, and the scenario belongs among the sampled."""

KNOWN: dict[str, str] = {}
"""Scenarios that break an invariant on the code as it is, and why (each has a replay test)."""


def _explored(scenario: Scenario) -> list[Stats]:
    run = execute(scenario)
    if DEEP:
        return [
            explore(run, faults=scenario.faults, max_runs=BUDGET),
            sample(run, faults=2, runs=20_000, seed=SEED),
        ]
    if scenario.sampled:
        return [
            explore(run, faults=0, max_runs=BUDGET),
            sample(run, faults=scenario.faults, runs=scenario.sampled, seed=SEED),
        ]
    return [explore(run, faults=scenario.faults, max_runs=BUDGET)]


def _params() -> list[object]:
    marks = {
        name: pytest.mark.xfail(strict=True, reason=reason, raises=AssertionError)
        for name, reason in KNOWN.items()
    }
    return [
        pytest.param(s, id=s.name, marks=[marks[s.name]] if s.name in marks else [])
        for s in SCENARIOS
    ]


@pytest.mark.parametrize("scenario", _params())
def test_scenario_keeps_every_invariant(scenario: Scenario) -> None:
    results = _explored(scenario)
    faults = [0, scenario.faults] if scenario.sampled and not DEEP else [scenario.faults, 2]
    for stats, budget in zip(results, faults, strict=False):
        REPORT.append(f"{scenario.name:20} {budget} fault(s): {stats.summary()}")
    first = results[0]
    assert first.exhaustive or DEEP, (
        f"{scenario.name}: more than {BUDGET} runs without faults; make it smaller or sample it"
    )
    violations = sorted(
        (v for stats in results for v in stats.violations), key=lambda v: len(v.schedule)
    )
    if violations:
        kinds = sorted({p.split(":")[0] for v in violations for p in v.problems})
        shown = "\n".join(str(v) for v in violations[:3])
        raise AssertionError(
            f"{scenario.name} ({scenario.describe()}): {len(violations)} schedules break"
            f" {', '.join(kinds)}; the shortest:\n{shown}"
        )


def test_each_invariant_is_stated() -> None:
    """The invariants here are the six of docs/concurrency.md, word for word."""
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "concurrency.md").read_text()
    for number, statement in INVARIANTS.items():
        assert f"{number}. {statement}" in page.replace("\n   ", " ").replace("\n", " ")
