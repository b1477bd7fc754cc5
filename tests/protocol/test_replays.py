"""Every violation the checker found, replayed as an ordinary test: the scenario, the schedule
(which store call takes effect next, and with which fault), and the invariant it broke.

The first group broke its invariant on the code before issue 24 (the renewal rules of the
design: no write carried into a successor, no cookie for a renewed key, a re-read after an unsure
tombstone write, a client's retry that is not a conflict; a write after the response head that
cannot be stored raises; the cache never puts back a replaced version; one clock) and holds it
since. A replay marked ``xfail`` breaks its invariant on the code as it is; the reason says how,
and the mark goes with the fix. A schedule prints as ``format_schedule`` writes it: ``A.2 put !lost`` is actor A's second
store call, a put, taking effect with its reply lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.protocol.checker import replay
from tests.protocol.invariants import INVARIANTS
from tests.protocol.scenarios import SCENARIOS
from tests.protocol.world import execute


class Violated(AssertionError):
    """The replayed schedule broke the invariant."""


@dataclass(frozen=True)
class Replay:
    name: str
    scenario: str
    schedule: str
    invariant: int
    broken_until: str = ""
    """Why it breaks on the code as it is (empty: it holds)."""


REPLAYS = [
    # Broken before issue 24, held since (each failed on the code before it).
    Replay(
        "pre-login HTTP write lands in the logged-in session",
        "login_write",
        "A.1 get; A.2 put; A.3 index_add; B.1 get; A.4 put; B.2 put",
        3,
    ),
    Replay(
        "pre-login streamed write lands in the logged-in session",
        "stream_login",
        "A.1 get; B.1 get; B.2 put; B.3 index_add; B.4 put; A.2 put",
        3,
    ),
    Replay(
        "pre-login WebSocket write lands in the logged-in session",
        "ws_login",
        "A.1 get; B.1 get; B.2 put; B.3 index_add; B.4 put; A.2 put",
        3,
    ),
    Replay(
        "the losing login's changes land in the winner's session",
        "login_login",
        "A.1 get; A.2 put; A.3 index_add; B.1 get; B.2 put; B.3 index_add; B.4 put; A.4 put",
        3,
    ),
    Replay(
        "a request with the renewed key gets a new cookie that replaces the login's",
        "login_write",
        "A.1 get; A.2 put; A.3 index_add; A.4 put; B.1 get",
        4,
    ),
    Replay(
        "the tombstone write lands, its reply is lost: neither session usable",
        "login_alone",
        "A.1 get; A.2 put; A.3 index_add; A.4 put !lost",
        4,
    ),
    Replay(
        "the client retries the tombstone write and reads its own tombstone as a conflict",
        "login_alone",
        "A.1 get; A.2 put; A.3 index_add; A.4 put !retry; A.4 put !again",
        4,
    ),
    Replay(
        "a write acknowledged before a renewal whose tombstone reply was lost is gone",
        "login_write",
        "B.1 get; B.2 put; A.1 get; A.2 put; A.3 index_add; A.4 put !lost",
        1,
    ),
    Replay("a streamed write to a new session vanishes", "stream_new_session", "", 1),
    Replay(
        "a streamed write after the key was purged vanishes",
        "stream_purge",
        "B.1 get; B.2 put; A.1 get",
        1,
    ),
    Replay(
        "a WebSocket write after the key was renewed vanishes",
        "ws_login",
        "B.1 get; B.2 put; B.3 index_add; B.4 put; A.1 get",
        1,
    ),
    # Before issue 24 an extension was a touch: "...; B.4 put; A.2 touch; B.5 index_remove;
    # A.3 index_add" broke invariant 4 there.
    Replay(
        "an extension lands on the renewal's tombstone and sends the old key again",
        "touch_login",
        "A.1 get; B.1 get; B.2 put; B.3 index_add; B.4 put; A.2 put",
        4,
    ),
    # Before the cache's leases (issue 28), a fill was get, get, put: "A.1 get; A.2 get;
    # B.1 get !fail; B.2 get; B.3 put; B.4 get; A.3 put" broke invariant 2 there.
    Replay(
        "a cache fill after a failed cache read revives a purged session",
        "cache_read_purge",
        "A.1 get; A.2 put; A.3 get; B.1 get !fail; B.2 get; B.3 put; B.4 get; A.4 put",
        2,
    ),
    # Before: "A.1 get; A.2 get; B.1 index_members; B.2 get; A.3 put; B.3 get !expire;
    # B.4 index_remove" broke invariant 2 (expiry was the store's TTL, not the envelope's).
    Replay(
        "a cached copy opens after its durable record expired and a sign-out was acknowledged",
        "cache_signout_read",
        "A.1 get; A.2 put; A.3 get; B.1 index_members; B.2 get; A.4 put; B.3 get !expire",
        2,
    ),
    # Broken on main after issue 24's change, and fixed since (the renewal reads again after a
    # retried carry or an unsure swap, a login on a renewed key is a 409, and a record keeps
    # the ids of the last updates merged into it).
    Replay(
        "a retried carry into the new record ends both sessions",
        "login_write",
        "A.1 get; A.2 put; A.3 index_add; B.1 get; B.2 put; A.4 put; A.5 get; A.6 put !retry;"
        " A.6 put !again",
        4,
    ),
    Replay(
        "a lost tombstone reply and a failed re-read leave neither session usable",
        "login_alone",
        "A.1 get; A.2 put; A.3 index_add; A.4 put !lost; A.5 get !fail",
        4,
    ),
    Replay(
        "a retried tombstone write and a failed re-read delete the successor",
        "login_alone",
        "A.1 get; A.2 put; A.3 index_add; A.4 put !retry; A.4 put !again; A.5 get !fail",
        4,
    ),
    Replay(
        "a retried update_or counts twice",
        "update_or_twice",
        # Before the fix A then put its update again: "...; A.3 get; A.4 put".
        "A.1 get; A.2 put !retry; A.2 put !again; B.1 get; B.2 put; A.3 get",
        1,
    ),
    Replay(
        "a second login with the renewed key replaces the first login's cookie",
        "login_login",
        # Before the fix B then made a new session: "...; B.2 put; B.3 index_add".
        "A.1 get; A.2 put; A.3 index_add; A.4 put; B.1 get",
        4,
    ),
]


def _params() -> list[object]:
    return [
        pytest.param(
            r,
            id=r.name.replace(" ", "-"),
            marks=[pytest.mark.xfail(strict=True, raises=Violated, reason=r.broken_until)]
            if r.broken_until
            else [],
        )
        for r in REPLAYS
    ]


@pytest.mark.parametrize("case", _params())
def test_replay(case: Replay) -> None:
    scenario = next(s for s in SCENARIOS if s.name == case.scenario)
    run = execute(scenario)
    _, problems = replay(run, case.schedule)
    broken = [p for p in problems if p.startswith(f"invariant {case.invariant}:")]
    if broken:
        world = run.world
        assert world is not None
        raise Violated(
            f"{INVARIANTS[case.invariant]}\nschedule: {case.schedule}\n"
            + "\n".join(broken)
            + f"\n{world.explain()}"
        )
