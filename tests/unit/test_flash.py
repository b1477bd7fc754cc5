"""Flash messages: kept in the session until read, consumed when read, filtered by category."""

from __future__ import annotations

import pytest

from sessionware import Session, SessionStatus
from sessionware.flash import FLASHES_KEY, flash, get_flashed_messages


def test_messages_come_back_in_order_once() -> None:
    session = Session()
    flash(session, "Saved")
    flash(session, "Careful", "warning")
    assert session[FLASHES_KEY] == [["info", "Saved"], ["warning", "Careful"]]
    assert get_flashed_messages(session) == ["Saved", "Careful"]
    assert FLASHES_KEY not in session
    assert get_flashed_messages(session) == []


def test_with_categories_gives_pairs() -> None:
    session = Session()
    flash(session, "Saved", "success")
    assert get_flashed_messages(session, with_categories=True) == [("success", "Saved")]


def test_a_filter_consumes_only_what_it_returns() -> None:
    session = Session()
    flash(session, "a", "error")
    flash(session, "b", "info")
    flash(session, "c", "error")
    assert get_flashed_messages(session, category_filter=["error"]) == ["a", "c"]
    assert session[FLASHES_KEY] == [["info", "b"]]
    assert get_flashed_messages(session, category_filter="warning") == []
    assert get_flashed_messages(session, category_filter="info", with_categories=True) == [
        ("info", "b")
    ]
    assert FLASHES_KEY not in session


def test_reading_nothing_changes_nothing() -> None:
    session = Session({"user": "ada"})
    assert get_flashed_messages(session) == []
    assert session.status is SessionStatus.UNCHANGED


def test_messages_loaded_from_a_store_are_read() -> None:
    session = Session({FLASHES_KEY: [["info", "from the last request"]]})
    assert get_flashed_messages(session) == ["from the last request"]
    assert session.status is SessionStatus.CHANGED and dict(session) == {}


def test_malformed_leftovers_are_dropped() -> None:
    session = Session({FLASHES_KEY: "not a list"})
    assert get_flashed_messages(session) == []
    assert FLASHES_KEY not in session
    session = Session({FLASHES_KEY: [["info", "ok"], ["bad"], [1, 2], "x"]})
    assert get_flashed_messages(session) == ["ok"]


def test_flash_after_purge_does_nothing() -> None:
    session = Session({"user": "ada"})
    session.purge()
    flash(session, "Goodbye")
    assert get_flashed_messages(session) == []
    assert session.status is SessionStatus.PURGED


def test_messages_and_categories_are_text() -> None:
    session = Session()
    with pytest.raises(TypeError, match="str message and a str category"):
        flash(session, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flash(session, "ok", None)  # type: ignore[arg-type]
    assert dict(session) == {}
