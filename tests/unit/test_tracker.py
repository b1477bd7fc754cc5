"""The request's tracker: its phases and transitions are a table, checked here against what
each phase lets a handler do (the module docstring of sessionware.session)."""

from __future__ import annotations

import pytest

from sessionware.errors import SessionConflictError, SessionError
from sessionware.session import TRANSITIONS, Event, Phase, SessionStatus, Tracker
from tests.sessions import tracked

EXPECTED = {
    (Phase.OPEN, Event.RESPONDED): Phase.LATE,
    (Phase.OPEN, Event.SEALED): Phase.CLOSED,
    (Phase.OPEN, Event.ENDED): Phase.CLOSED,
    (Phase.LATE, Event.SEALED): Phase.CLOSED,
    (Phase.LATE, Event.ENDED): Phase.CLOSED,
    (Phase.CLOSED, Event.SEALED): Phase.CLOSED,
    (Phase.CLOSED, Event.ENDED): Phase.CLOSED,
}


def test_the_table_is_the_documented_one() -> None:
    table = {(phase, event): to for phase, row in TRANSITIONS.items() for event, to in row.items()}
    assert table == EXPECTED
    assert set(TRANSITIONS) == set(Phase)


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", list(Event))
def test_every_event_in_every_phase(phase: Phase, event: Event) -> None:
    tracker = tracked({"a": 1})
    tracker.phase = phase
    if (phase, event) in EXPECTED:
        tracker.handle(event, "why")
        assert tracker.phase is EXPECTED[phase, event]
    else:
        with pytest.raises(
            SessionError, match=f"phase {phase.name} cannot take event {event.name}"
        ):
            tracker.handle(event, "why")
        assert tracker.phase is phase


def test_what_each_phase_lets_a_handler_do() -> None:
    open_ = tracked({"a": 1})
    open_.session["b"] = 2
    open_.session.renew()

    late = tracked({"a": 1})
    late.handle(Event.RESPONDED, "no new key now")
    late.session["b"] = 2  # a stored session still takes writes...
    late.session.purge()  # ...and a purge
    renewing = tracked({"a": 1})
    renewing.handle(Event.RESPONDED, "no new key now")
    with pytest.raises(SessionError, match="no new key now"):
        renewing.session.renew()  # ...but nothing that needs a cookie

    closed = tracked({"a": 1})
    closed.handle(Event.SEALED, "the cookie went out")
    assert closed.session["a"] == 1  # reads still work
    for write in (
        lambda s: s.__setitem__("b", 2),
        lambda s: s.purge(),
        lambda s: s.renew(),
        lambda s: s.clear(),
    ):
        with pytest.raises(SessionError, match="the cookie went out"):
            write(closed.session)


def test_a_session_ended_by_a_login_refuses_with_a_conflict() -> None:
    tracker = tracked({"a": 1})
    tracker.handle(Event.RESPONDED, "no new key")
    tracker.handle(Event.ENDED, "renewed by a login", SessionConflictError)
    with pytest.raises(SessionConflictError, match="renewed by a login"):
        tracker.session["payout"] = "attacker"


def test_a_late_session_counts_as_unused_until_used_again() -> None:
    """After the head only a use asks for the state to be encoded (issue 30 item 1)."""
    tracker = tracked({"cart": [1, 2]})
    assert tracker.session["cart"] == [1, 2]
    assert tracker.outcome(200).state_json is not None  # containers: encoded once, here
    tracker.handle(Event.RESPONDED, "no new key")
    assert tracker.late_outcome() is None  # not used since: no encode
    tracker.session["cart"].append(3)  # used again (a read), then changed in place
    outcome = tracker.late_outcome()
    assert outcome is not None and dict(outcome.changes.set) == {"cart": [1, 2, 3]}


def test_one_rule_says_whether_a_response_persists() -> None:
    tracker = Tracker(None, [], None, False)
    assert tracker.persists(200) and tracker.persists(409) and tracker.persists(302)
    assert not tracker.persists(500) and not tracker.persists(503)
    tracker.session.discard_changes()
    assert not tracker.persists(200)


def test_releasing_lets_go_of_the_session() -> None:
    tracker = tracked({"a": 1})
    session = tracker.session
    tracker.release()
    assert tracker.phase is Phase.CLOSED and not hasattr(tracker, "session")
    assert session["a"] == 1
    with pytest.raises(SessionError, match="request is over"):
        session["a"] = 2


def test_an_adopted_state_is_a_change_to_store_whole() -> None:
    """``adopt``: another library's state arrives as this request's change (a new session
    is created from it), even when the handler only reads it."""
    tracker = Tracker(None, [], None, False)
    tracker.adopt({"user_id": 42, "cart": [1]})
    session = tracker.session
    assert dict(session) == {"user_id": 42, "cart": [1]}
    assert session.status is SessionStatus.CHANGED
    assert not tracker.unread and session.key is None
    status, persist, used, changes, state_json = tracker.outcome(200)
    assert (status, persist, used) == (SessionStatus.CHANGED, True, True)
    assert changes.cleared and dict(changes.set) == {"user_id": 42, "cart": [1]}
    assert state_json == '{"user_id":42,"cart":[1]}'
    assert tracker.outcome(500)[1] is False  # a 5xx stores it no more than any change
