"""What the server-side stores share about connections: one pool per event loop, the one place
a driver's failure becomes a ``StoreError``, and addresses safe to name in a message.

A pool's connections belong to the event loop that opened them: used from another loop they
fail (``RuntimeError: ... attached to a different loop``). A store is often made once, at import,
and then used by several loops: successive test clients (each runs its own), or threads each
running one. So a store that opens its own connections keeps one pool per running loop
(``PerLoop``), opened on that loop's first call and closed when that loop shuts down or when the
store is closed, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, TypeVar

from sessionware.stores.base import StoreError

__all__ = ["PerLoop", "address", "boundary", "check_each", "positive", "store_error", "summary"]

logger = logging.getLogger("sessionware.stores")

T = TypeVar("T")

_QUOTED = re.compile(r"['\"`].*['\"`]", re.S)
"""From the first quote to the last in a server's message: where drivers put values (a key, a
user, stored data), which may hold quotes of their own."""
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{32,}")
"""A long unbroken token: a session key, an id at rest or a hash is never shown."""
_FOREIGN_LOOP = (
    "a connection of another event loop (a client or pool passed to the store works only in"
    " the loop that made it; a store made by from_url/from_dsn keeps one per loop)"
)
_CLOSE_TIMEOUT = 5.0
"""Seconds a pool gets to close gracefully at shutdown before it is dropped."""


class _Slot(Generic[T]):
    """One loop's pool: ``value`` once opened; ``watcher`` closes it when the loop shuts down."""

    __slots__ = ("lock", "value", "watcher")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.value: T | None = None
        self.watcher: AsyncGenerator[None, None] | None = None


class PerLoop(Generic[T]):
    """One ``T`` (a pool, a client) per running event loop: ``await get()`` returns the calling
    loop's, opening it with ``open()`` on that loop's first call.

    A loop's value is closed (``close(value)``) by ``aclose()``, or when the loop shuts down:
    ``asyncio.run``, anyio (Starlette's ``TestClient``, pytest's async runners) and uvicorn close
    the loop's open async generators before closing it, and one of ours waits for that. A loop
    closed without that step leaves its value to the garbage collector (dropped when the next
    loop opens one). Thread-safe: threads each running a loop get one each.
    """

    def __init__(
        self, open: Callable[[], Awaitable[T]], close: Callable[[T], Awaitable[None]]
    ) -> None:
        self._open = open
        self._close = close
        self._slots: dict[asyncio.AbstractEventLoop, _Slot[T]] = {}
        self._guard = threading.RLock()

    @classmethod
    def fixed(cls, value: T) -> PerLoop[T]:
        """Hands out ``value`` (a pool or client passed in) in every loop and never closes it:
        it is the caller's, and works only in the loop the driver bound it to."""

        async def same() -> T:
            # asyncpg's and asyncmy's pools and emcache's clients keep the loop they belong to:
            # refuse another loop here, clearly, rather than by an obscure driver error later.
            bound = getattr(value, "_loop", None)
            here = asyncio.get_running_loop()
            if isinstance(bound, asyncio.AbstractEventLoop) and bound is not here:
                raise RuntimeError("made in another event loop")
            return value

        return cls(same, _keep)

    async def get(self) -> T:
        """The calling loop's value, opened on first use (a failure is raised, and retried next
        call)."""
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is not None and slot.value is not None:
            return slot.value
        with self._guard:
            slot = self._slots.get(loop)
            if slot is None:
                self._drop_closed_loops()
                slot = self._slots[loop] = _Slot()
        async with slot.lock:
            if slot.value is None:
                slot.value = await self._open()
                slot.watcher = self._watch(loop, slot)
                await slot.watcher.__anext__()  # now the loop knows it: closed at its shutdown
        return slot.value

    def current(self) -> T | None:
        """The calling loop's value if it is open, without awaiting (a hot path's shortcut)."""
        slot = self._slots.get(asyncio.get_running_loop())
        return None if slot is None else slot.value

    def lock(self) -> asyncio.Lock:
        """The calling loop's lock (after ``get``): for one-time set-up on its value."""
        return self._slots[asyncio.get_running_loop()].lock

    async def aclose(self) -> None:
        """Close every loop's value: this loop's here, a running loop's (another thread) in that
        loop; a stopped loop's is dropped. Later ``get`` calls open new ones."""
        with self._guard:
            slots, self._slots = self._slots, {}
        here = asyncio.get_running_loop()
        for loop, slot in slots.items():
            if slot.watcher is None:
                continue  # never opened, or still opening (that caller owns it)
            if loop is here:
                await slot.watcher.aclose()
            elif loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(_finish(slot.watcher), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(closing), _CLOSE_TIMEOUT)
                except Exception as exc:  # the other loop is stuck or gone: leave it to GC
                    logger.debug("a session store pool did not close: %s", type(exc).__name__)
            else:
                _abandon(slot)

    async def _watch(
        self, loop: asyncio.AbstractEventLoop, slot: _Slot[T]
    ) -> AsyncGenerator[None, None]:
        """Suspended until closed (by ``aclose``, or by the loop's shutdown); then closes the
        value and forgets the loop."""
        try:
            yield
        finally:
            with self._guard:
                if self._slots.get(loop) is slot:
                    del self._slots[loop]
            value, slot.value = slot.value, None
            if value is not None:
                try:
                    await asyncio.wait_for(self._close(value), _CLOSE_TIMEOUT)
                except Exception as exc:  # closing is best effort: the loop is ending
                    logger.debug("a session store pool did not close: %s", type(exc).__name__)

    def _drop_closed_loops(self) -> None:
        """Forget the values of loops closed without closing them (under the guard)."""
        for loop in [loop for loop in self._slots if loop.is_closed()]:
            _abandon(self._slots.pop(loop))


async def _keep(value: object) -> None:
    """Closing what the caller passed in is the caller's business."""


async def _finish(watcher: AsyncGenerator[None, None]) -> None:
    await watcher.aclose()


def _abandon(slot: _Slot[T]) -> None:
    """Drop a value whose loop no longer runs (nothing can close it there): finish its watcher
    without awaiting, so the loop's finalizer never runs for it."""
    slot.value = None
    if slot.watcher is not None:
        closing = slot.watcher.aclose()
        with suppress(StopIteration):
            closing.send(None)


def address(url: str) -> str:
    """``host:port/path`` of a URL or DSN, without its credentials or query: safe to name."""
    _, separator, rest = url.partition("://")
    if not separator:
        return "(not a URL)"
    # The credentials end at the last "@" (a password may hold an unencoded "@" or "/").
    rest = rest.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    return rest or "(default host)"


def store_error(
    head: str, exc: BaseException, where: str, *, timeout: float | None = None
) -> StoreError:
    """``StoreError("<head>: <type>: <summary> (at <where>)")`` for a driver's ``exc``.

    The summary is the driver's message without quoted text or long tokens (where a key, an id,
    a user or stored data could appear); OS errors (addresses and errno only) are kept whole.
    """
    return StoreError(f"{head}: {type(exc).__name__}: {summary(exc, timeout)} (at {where})")


def summary(exc: BaseException, timeout: float | None = None) -> str:
    """A one-line description of ``exc`` that never holds a key, an id or stored data."""
    text = str(exc)
    if isinstance(exc, RuntimeError) and "loop" in text:
        return _FOREIGN_LOOP
    if isinstance(exc, asyncio.TimeoutError) and not text:
        return "no answer in time" if timeout is None else f"no answer within {timeout:g} s"
    network = _os_error(exc)
    if network is not None:  # a socket's failure: addresses and an errno, never data
        text = str(network)
        reason = os.strerror(network.errno) if network.errno else ""
        if reason and reason.lower() not in text.lower():
            text = f"{text} ({reason})"
    else:
        text = _QUOTED.sub("'...'", text)
    text = " ".join(_TOKEN.sub("...", text).split())
    if len(text) > 200:
        text = text[:200] + "..."
    return text or "(no message)"


def _os_error(exc: BaseException) -> OSError | None:
    """``exc`` itself if it is an OS error with a message, else the one it was raised from
    (drivers wrap a refused connection in their own error type)."""
    for error in (exc, exc.__cause__):
        if isinstance(error, OSError) and str(error) and not isinstance(error, TimeoutError):
            return error
    return None


@contextmanager
def boundary(
    head: str,
    where: str,
    *,
    timeout: float | None = None,
    passing: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """Every failure inside becomes a ``StoreError`` (see ``store_error``) but ours and those
    ``passing`` (answers the store handles itself). Cancellation is no failure: it passes."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, (StoreError, *passing)):
            raise
        raise store_error(head, exc, where, timeout=timeout) from exc


async def check_each(owner: str, *stores: tuple[str, object]) -> None:
    """``check()`` each named store that has one, in order; the first failure is raised as a
    ``StoreError`` saying which (``"<owner>'s <name> failed its check: ..."``)."""
    for name, store in stores:
        check = getattr(store, "check", None)
        if check is None:
            continue
        try:
            await check()
        except StoreError as exc:
            raise StoreError(f"{owner}'s {name} failed its check: {exc}") from exc


def positive(name: str, value: object) -> float:
    """``value`` as a float if it is a positive number of seconds, else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)
