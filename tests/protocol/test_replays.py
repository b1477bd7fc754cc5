"""Every violation the checker found, replayed as an ordinary test: the scenario, the schedule
(which store call takes effect next, and with which fault), and the invariant it broke.

A replay marked ``xfail`` breaks its invariant on the code as it is; the reason names the rule
(issue 24 for the renewal rules of DESIGN.md) whose fix makes it pass, at which point the mark
goes. A schedule prints as ``format_schedule`` writes it: ``A.2 put !lost`` is actor A's second
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


ISSUE_24_CARRY = "issue 24, rule 1: a write that commits after the renewal's tombstone is carried"
ISSUE_24_COOKIE = "issue 24, rule 2: a request presenting a renewed key sends a cookie"
ISSUE_24_UNSURE = "issue 24, rule 3: a renewal unsure of its tombstone write deletes the new record"
ISSUE_24_RETRY = "issue 24, rule 4: the client's retry of the tombstone write reads as a conflict"
LATE_EMPTY = (
    "a write after the response head to a session with no stored record (no cookie, or a key"
    " that was ended or renewed) is dropped silently: no SessionError, no WARNING"
)
TOUCH_TOMBSTONE = (
    "store.touch extends whatever is there: a touch that lands on a renewal's tombstone"
    " reports the session alive and sends the pre-login key again (Max-Age)"
)
CACHE_FILL = (
    "CachedSessionStore: a fill whose durable read came before a purge lands after it when the"
    " purger's cache read failed (the purge found no copy to correct)"
)

EXPIRED_COPY = (
    "issue 24, one clock: expiry is the store's TTL, so a cached copy of a session whose"
    " durable record expired opens until the copy's own TTL, though a sign-out found nothing"
)

REPLAYS = [
    Replay(
        "pre-login HTTP write lands in the logged-in session",
        "login_write",
        "A.1 get; A.2 put; A.3 index_add; B.1 get; A.4 put; B.2 put; B.3 get; B.4 get; B.5 put;"
        " B.6 index_add",
        3,
        ISSUE_24_CARRY,
    ),
    Replay(
        "pre-login streamed write lands in the logged-in session",
        "stream_login",
        "A.1 get; B.1 get; B.2 put; B.3 index_add; B.4 put; A.2 put; A.3 get; A.4 get; A.5 put;"
        " A.6 index_add",
        3,
        ISSUE_24_CARRY,
    ),
    Replay(
        "pre-login WebSocket write lands in the logged-in session",
        "ws_login",
        "A.1 get; B.1 get; B.2 put; B.3 index_add; B.4 put; A.2 put; A.3 get; A.4 get; A.5 put;"
        " A.6 index_add",
        3,
        ISSUE_24_CARRY,
    ),
    Replay(
        "the losing login's changes land in the winner's session",
        "login_login",
        "A.1 get; A.2 put; A.3 index_add; B.1 get; B.2 put; B.3 index_add; B.4 put; A.4 put;"
        " A.5 get; A.6 put; A.7 index_remove; A.8 get; A.9 put; A.10 index_add; A.11 put;"
        " A.12 index_add",
        3,
        ISSUE_24_CARRY,
    ),
    Replay(
        "a request with the renewed key gets a new cookie that replaces the login's",
        "login_write",
        "A.1 get; A.2 put; A.3 index_add; A.4 put; B.1 get; B.2 put",
        4,
        ISSUE_24_COOKIE,
    ),
    Replay(
        "a second login with the renewed key replaces the first login's cookie",
        "login_login",
        "A.1 get; A.2 put; A.3 index_add; A.4 put; B.1 get; B.2 put; B.3 index_add",
        4,
        ISSUE_24_COOKIE,
    ),
    Replay(
        "the tombstone write lands, its reply is lost: neither session usable",
        "login_alone",
        "A.1 get; A.2 put; A.3 index_add; A.4 put !lost; A.5 delete",
        4,
        ISSUE_24_UNSURE,
    ),
    Replay(
        "the client retries the tombstone write and reads its own tombstone as a conflict",
        "login_alone",
        "A.1 get; A.2 put; A.3 index_add; A.4 put !retry; A.4 put !again; A.5 get; A.6 put;"
        " A.7 index_remove; A.8 get",
        4,
        ISSUE_24_RETRY,
    ),
    Replay(
        "a write acknowledged before a renewal whose tombstone reply was lost is gone",
        "login_write",
        "B.1 get; B.2 put; A.1 get; A.2 put; A.3 index_add; A.4 put !lost; A.5 delete",
        1,
        ISSUE_24_UNSURE,
    ),
    Replay(
        "a streamed write to a new session vanishes",
        "stream_new_session",
        "",
        1,
        LATE_EMPTY,
    ),
    Replay(
        "a streamed write after the key was purged vanishes",
        "stream_purge",
        "B.1 get; B.2 put; A.1 get",
        1,
        LATE_EMPTY,
    ),
    Replay(
        "a WebSocket write after the key was renewed vanishes",
        "ws_login",
        "B.1 get; B.2 put; B.3 index_add; B.4 put; A.1 get",
        1,
        LATE_EMPTY,
    ),
    Replay(
        "a touch lands on the renewal's tombstone and sends the old key again",
        "touch_login",
        "A.1 get; B.1 get; B.2 put; B.3 index_add; B.4 put; A.2 touch; B.5 index_remove;"
        " A.3 index_add",
        4,
        TOUCH_TOMBSTONE,
    ),
    Replay(
        "a cache fill after a failed cache read revives a purged session",
        "cache_read_purge",
        "A.1 get; A.2 get; B.1 get !fail; B.2 get; B.3 put; B.4 get; A.3 put",
        2,
        CACHE_FILL,
    ),
    Replay(
        "a cached copy opens after its durable record expired and a sign-out was acknowledged",
        "cache_signout_read",
        "A.1 get; A.2 get; B.1 index_members; B.2 get; A.3 put; B.3 get !expire; B.4 index_remove",
        2,
        EXPIRED_COPY,
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
