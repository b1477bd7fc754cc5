"""Sessions as a request's tracker holds them, for tests of the session and its helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sessionware.repository import Changes
from sessionware.session import Session, SessionStatus, Tracker
from sessionware.state import encode_state


def tracked(state: Mapping[str, Any] | None = None) -> Tracker:
    """A request's tracker whose session was just loaded with ``state``, as the engine fills it."""
    tracker = Tracker(None, [], None, False)
    state = dict(state or {})
    tracker.fill(tracker.session, state, origin=encode_state(state))
    return tracker


def loaded(state: Mapping[str, Any] | None = None) -> Session:
    """The session of ``tracked(state)``."""
    return tracked(state).session


def outcome(session: Session) -> tuple[SessionStatus, Changes]:
    """What the request did to a ``loaded`` session, as the engine asks at the response."""
    tracker: Tracker = session._tracker  # the one test helper that looks behind the session
    result = tracker.outcome(200)
    return result.status, result.changes


async def finish(engine: Any, tracker: Tracker, status: int = 200, headers: Any = ()) -> Any:
    """What the middleware does as the response starts: ``respond``, and ``persist`` when that
    needs the store; the response's headers."""
    given = list(headers)
    out = engine.respond(tracker, status, given)
    return out if out is not None else await engine.persist(tracker, status, given)
