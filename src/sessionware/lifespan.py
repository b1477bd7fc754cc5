"""SessionMiddleware's work at the ASGI ``lifespan``: a store check at start-up and the sweeper.

The app's own lifespan runs as it would without the middleware: the server's messages reach it
and its answers reach the server. The middleware's work runs first at start-up (a failure is
the server's ``lifespan.startup.failed``, and the app is never started) and first at shutdown
(the sweeper stops before the app closes what the store uses). An app that does not speak the
lifespan protocol (it raises, or returns without answering) gets it answered for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sessionware.errors import NotSupportedError, StoreError
from sessionware.events import EventHook, SessionsSwept, emit

if TYPE_CHECKING:
    import asyncio

__all__ = ["Lifespan", "Sweepable", "Sweeper", "run_lifespan", "sweepable"]

logger = logging.getLogger("sessionware")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_BY_TTL = frozenset({"RedisSessionStore", "MemcachedSessionStore", "MemorySessionStore"})


@runtime_checkable
class Sweepable(Protocol):
    """A store the sweeper can clean: the SQL stores (SQLite, PostgreSQL, MariaDB/MySQL)."""

    def sweep_lock(self) -> AbstractAsyncContextManager[bool]: ...

    async def clear_expired(self, *, batch_size: int = ...) -> int: ...


def sweepable(store: object, every: object) -> Sweepable:
    """``store`` if the sweeper can clean it every ``every`` (a positive ``timedelta``); else
    the exception saying why not, at construction."""
    if not isinstance(every, timedelta) or every <= timedelta(0):
        raise ValueError(f"sweep_every must be a positive datetime.timedelta, not {every!r}")
    if isinstance(store, Sweepable):
        return store
    name = type(store).__name__
    if name in _BY_TTL:
        why = f"{name} expires records by their TTL itself, so it needs no sweeper"
    elif name == "CookieSessionStore":
        why = "the cookie store keeps nothing on the server, so there is nothing to sweep"
    else:
        why = (
            f"{name} has no sweeper; clear the SQL store underneath it from a scheduled job"
            " (`sessionware clear-expired --store URL`, or its `await store.clear_expired()`)"
        )
    raise NotSupportedError(
        f"sweep_every= works with the SQL stores (SQLiteSessionStore, PostgresSessionStore,"
        f" MySQLSessionStore): {why}. Remove sweep_every="
    )


class Sweeper:
    """Deletes a SQL store's expired records every ``every``, from start-up to shutdown, in
    bounded batches (``clear_expired``), one sweeper per database at a time across processes
    (the store's ``sweep_lock``). Each sweep is one ``SessionsSwept`` event."""

    def __init__(
        self,
        store: Sweepable,
        every: timedelta,
        *,
        on_event: EventHook | None = None,
    ) -> None:
        self.store = store
        self.every = every
        self._on_event = on_event
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def sweep(self) -> SessionsSwept:
        """One sweep, now: what it did (also logged, and sent to ``on_event``)."""
        started = time.monotonic()
        try:
            async with self.store.sweep_lock() as held:
                if not held:
                    logger.debug("session sweep skipped: another process is sweeping")
                    return self._report(SessionsSwept("busy"))
                deleted = await self.store.clear_expired()
        except StoreError as exc:
            logger.error("session sweep failed: %s", exc)
            return self._report(SessionsSwept("failed", seconds=time.monotonic() - started))
        seconds = time.monotonic() - started
        logger.info("session sweep deleted %d expired rows in %.3f s", deleted, seconds)
        return self._report(SessionsSwept("swept", deleted, seconds))

    def _report(self, event: SessionsSwept) -> SessionsSwept:
        if self._on_event is not None:
            emit(self._on_event, event)
        return event

    async def _loop(self) -> None:
        import asyncio  # here, not at import: the request path imports no event loop library

        interval = self.every.total_seconds()
        while not self._stopping:
            await self.sweep()
            if not self._stopping:
                await asyncio.sleep(interval)

    def start(self) -> None:
        """Sweep now, then every ``every``, in a task of the running loop."""
        import asyncio

        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Cancel the sweeps (a batch under way is rolled back or finished by the database)
        and wait until the task has ended."""
        import asyncio

        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        # Cancelled again until it ends: a driver's wait_for may swallow one cancellation
        # (Python 3.11), and the loop then ends at its next look at _stopping.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)
        if not task.cancelled() and task.exception() is not None:
            logger.error("the session sweeper ended with an error", exc_info=task.exception())


class Lifespan:
    """What the middleware does at start-up and shutdown: check the store (when asked), start
    and stop the sweeper (when there is one)."""

    def __init__(self, store: object, *, check: bool, sweeper: Sweeper | None) -> None:
        self.store = store
        self.check = check
        self.sweeper = sweeper

    async def startup(self) -> None:
        """Check the store (logged either way), then start the sweeper; ``StoreError`` when the
        check fails."""
        if self.check:
            name = type(self.store).__name__
            check = getattr(self.store, "check", None)
            if check is not None:
                try:
                    await check()
                except StoreError as exc:
                    logger.error("session store check at start-up failed: %s", exc)
                    raise
                logger.info("session store check at start-up passed (%s)", name)
        if self.sweeper is not None:
            self.sweeper.start()

    async def shutdown(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.stop()


async def run_lifespan(
    app: ASGIApp, scope: MutableMapping[str, Any], work: Lifespan, receive: Receive, send: Send
) -> None:
    """Answer the server's lifespan messages with ``work`` done around the app's own lifespan."""
    first = await receive()
    replay = _replay(first, receive)
    if first["type"] != "lifespan.startup":  # not the protocol as we know it: the app's affair
        await app(scope, replay, send)
        return
    try:
        await work.startup()
    except StoreError as exc:
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    answered = stopping = False  # whether the app answered lifespan.startup; shutdown came

    async def app_receive() -> Message:
        nonlocal stopping
        message = await replay()
        if message["type"] == "lifespan.shutdown" and not stopping:
            stopping = True
            await work.shutdown()  # before the app closes what the store uses
        return message

    async def app_send(message: Message) -> None:
        nonlocal answered
        kind = message["type"]
        if kind == "lifespan.startup.complete" or kind == "lifespan.startup.failed":
            answered = True
            if kind == "lifespan.startup.failed":
                await work.shutdown()
        await send(message)

    try:
        try:
            await app(scope, app_receive, app_send)
        except Exception:
            if answered:
                raise
            logger.debug("the app does not speak the ASGI lifespan protocol: sessionware does")
        if answered:
            return
        await send({"type": "lifespan.startup.complete"})
        while not stopping:
            stopping = (await replay())["type"] == "lifespan.shutdown"
        await work.shutdown()
        await send({"type": "lifespan.shutdown.complete"})
    finally:
        await work.shutdown()


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` that gives ``first`` once before what the server sends."""
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
