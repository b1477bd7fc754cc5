"""Flash messages: notes for the user's next page view, kept in the session until read.

``flash(session, "Saved")`` before a redirect, ``get_flashed_messages(session)`` on the page that
follows, as in Flask. The messages live under the reserved session key ``"_flashes"`` as a JSON
list of ``[category, message]`` pairs, so they survive a redirect with any store, cookie included.
Reading consumes: the messages returned are removed from the session; those a
``category_filter`` leaves out stay for a later call (Flask drops them instead).
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import Any, Literal, overload

__all__ = ["FLASHES_KEY", "flash", "get_flashed_messages"]

FLASHES_KEY = "_flashes"
"""The session key the messages are kept under."""


def _pending(session: MutableMapping[str, Any]) -> list[tuple[str, str]]:
    """The stored messages as ``(category, message)``; malformed entries are skipped."""
    stored = session.get(FLASHES_KEY)
    if not isinstance(stored, list):
        return []
    return [
        (entry[0], entry[1])
        for entry in stored
        if isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
    ]


def flash(session: MutableMapping[str, Any], message: str, category: str = "info") -> None:
    """Keep ``message`` in ``session`` until a later ``get_flashed_messages`` reads it.

    ``category`` is free text (``"info"``, ``"error"``, ...) for the page to style or filter by.
    Like every write, it does nothing on a session purged in this request.
    """
    given: tuple[object, object] = (message, category)
    if not all(isinstance(part, str) for part in given):
        raise TypeError("flash() takes a str message and a str category")
    pending = _pending(session)
    pending.append((category, message))
    session[FLASHES_KEY] = [list(pair) for pair in pending]


@overload
def get_flashed_messages(
    session: MutableMapping[str, Any],
    *,
    with_categories: Literal[False] = False,
    category_filter: Collection[str] = (),
) -> list[str]: ...


@overload
def get_flashed_messages(
    session: MutableMapping[str, Any],
    *,
    with_categories: Literal[True],
    category_filter: Collection[str] = (),
) -> list[tuple[str, str]]: ...


def get_flashed_messages(
    session: MutableMapping[str, Any],
    *,
    with_categories: bool = False,
    category_filter: Collection[str] = (),
) -> list[str] | list[tuple[str, str]]:
    """The pending messages, oldest first, removed from the session as they are returned.

    With ``with_categories`` each item is ``(category, message)``. A non-empty
    ``category_filter`` returns (and consumes) only messages in those categories. With nothing
    pending, the session is only read, so no cookie or store write follows.
    """
    if isinstance(category_filter, str):
        category_filter = (category_filter,)
    pending = _pending(session)
    if not pending:
        if FLASHES_KEY in session:  # malformed leftovers: drop them
            del session[FLASHES_KEY]
        return []
    wanted = set(category_filter)
    taken = [pair for pair in pending if not wanted or pair[0] in wanted]
    if not taken:
        return []
    kept = [pair for pair in pending if wanted and pair[0] not in wanted]
    if kept:
        session[FLASHES_KEY] = [list(pair) for pair in kept]
    else:
        del session[FLASHES_KEY]
    if with_categories:
        return taken
    return [message for _, message in taken]
