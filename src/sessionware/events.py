"""Session telemetry: the small typed events ``SessionMiddleware(on_event=...)`` receives.

Each event is a frozen dataclass with a ``kind`` (its metric name) and only low-cardinality
fields: never a key, a cookie value, an id or state. When ``on_event`` is not set no event is
ever built. ``ObservedStore`` wraps a record store to report its failures (``StoreFailed``) and,
for metrics, the latency of each call; ``sessionware.integrations.opentelemetry`` uses both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

from sessionware.stores.base import Absent, Record, RecordStore, StoreError, UserIndex, Version

__all__ = [
    "ConflictEnded",
    "DecodeFailed",
    "EventHook",
    "MergeRetry",
    "ObservedStore",
    "OriginRefused",
    "SessionAdopted",
    "SessionCreated",
    "SessionEnded",
    "SessionEvent",
    "SessionEvicted",
    "SessionExpired",
    "SessionLoaded",
    "SessionPurged",
    "SessionRenewed",
    "SessionRevoked",
    "SessionRotated",
    "SessionSuperseded",
    "SessionsSwept",
    "StoreFailed",
]

logger = logging.getLogger("sessionware")


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """The base of every event; ``kind`` names it (``created``, ``store_error``, ...)."""

    kind: ClassVar[str] = "event"

    def attributes(self) -> dict[str, str]:
        """The event's fields as metric attributes (all low-cardinality strings)."""
        return {}


@dataclass(frozen=True, slots=True)
class SessionCreated(SessionEvent):
    """A new session was stored (server-side) or first sealed into a cookie (client-side)."""

    kind: ClassVar[str] = "created"


@dataclass(frozen=True, slots=True)
class SessionAdopted(SessionEvent):
    """A request carried another library's session cookie (``SessionMiddleware(adopt=...)``)
    and its response removed it. ``source`` names the library (``starlette``, ``flask``,
    ``django``); ``outcome`` is ``adopted`` (its state became a new sessionware session) or why
    it was not (``forged``, ``expired``, ``unreadable``, ``pickle``: the session started empty)."""

    kind: ClassVar[str] = "adopted"
    source: str
    outcome: str

    def attributes(self) -> dict[str, str]:
        return {"source": self.source, "outcome": self.outcome}


@dataclass(frozen=True, slots=True)
class SessionLoaded(SessionEvent):
    """A request's cookie opened to a live session."""

    kind: ClassVar[str] = "loaded"


@dataclass(frozen=True, slots=True)
class SessionRenewed(SessionEvent):
    """The session moved to a new key (``session.renew()``)."""

    kind: ClassVar[str] = "renewed"


@dataclass(frozen=True, slots=True)
class SessionRotated(SessionEvent):
    """The session moved to a new key because its key was older than ``rotate_every``
    (automatic rotation: the state and privileges stay)."""

    kind: ClassVar[str] = "rotated"


@dataclass(frozen=True, slots=True)
class SessionPurged(SessionEvent):
    """The session was ended by this request (``session.purge()``)."""

    kind: ClassVar[str] = "purged"


@dataclass(frozen=True, slots=True)
class SessionRevoked(SessionEvent):
    """This request found its session ended by another request (a purge, sign-out-everywhere):
    its changes are dropped and its cookie removed. ``operation``: save, renew, rotate, touch
    or late_save (a change made after the response started)."""

    kind: ClassVar[str] = "revoked"
    operation: str

    def attributes(self) -> dict[str, str]:
        return {"operation": self.operation}


@dataclass(frozen=True, slots=True)
class SessionEnded(SessionEvent):
    """``SessionAdmin`` ended a session: ``operation`` is end_all_for or end_where (one event
    per session ended) or end_session."""

    kind: ClassVar[str] = "ended"
    operation: str

    def attributes(self) -> dict[str, str]:
        return {"operation": self.operation}


@dataclass(frozen=True, slots=True)
class SessionEvicted(SessionEvent):
    """A session ended because its user logged in once more than
    ``SessionMiddleware(max_sessions_per_user=N)`` allows: the least recently used go (one
    event per session ended)."""

    kind: ClassVar[str] = "evicted"


@dataclass(frozen=True, slots=True)
class SessionSuperseded(SessionEvent):
    """A login renewed the session after this request loaded it (or the request came with the
    key a login had renewed): its changes were not stored. ``operation``: save (the request
    was answered 409) or late_save (a change after the response started, dropped)."""

    kind: ClassVar[str] = "superseded"
    operation: str

    def attributes(self) -> dict[str, str]:
        return {"operation": self.operation}


@dataclass(frozen=True, slots=True)
class SessionExpired(SessionEvent):
    """A cookie named a session that timed out: ``idle`` (its TTL passed: a sealed cookie's
    ``expires`` is in the past, or the store no longer holds the record) or ``absolute``
    (``max_age`` since creation passed)."""

    kind: ClassVar[str] = "expired"
    reason: Literal["idle", "absolute"]

    def attributes(self) -> dict[str, str]:
        return {"reason": self.reason}


@dataclass(frozen=True, slots=True)
class DecodeFailed(SessionEvent):
    """A session cookie was refused: ``cookie`` (it did not open under the key ring, or held no
    key of the generated shape) or ``state`` (it opened, but the state was unreadable)."""

    kind: ClassVar[str] = "decode_failed"
    reason: Literal["cookie", "state"]

    def attributes(self) -> dict[str, str]:
        return {"reason": self.reason}


@dataclass(frozen=True, slots=True)
class OriginRefused(SessionEvent):
    """A WebSocket handshake carried the session cookie from an origin neither the app's nor in
    ``websocket_origins`` (cross-site WebSocket hijacking): it was answered 403."""

    kind: ClassVar[str] = "origin_refused"


@dataclass(frozen=True, slots=True)
class MergeRetry(SessionEvent):
    """The repository lost a compare-and-set race (another request wrote first) and retries:
    ``operation`` is save, renew or purge."""

    kind: ClassVar[str] = "merge_retry"
    operation: str

    def attributes(self) -> dict[str, str]:
        return {"operation": self.operation}


@dataclass(frozen=True, slots=True)
class ConflictEnded(SessionEvent):
    """Contention defeated a write: ``attempts`` (it kept losing races and gave up: a 503) or
    ``hops`` (a purge found more renewals to follow than ``max_hops``: a 503, never a logout
    that leaves a renewed session live)."""

    kind: ClassVar[str] = "conflict_ended"
    operation: str
    reason: Literal["attempts", "hops"]

    def attributes(self) -> dict[str, str]:
        return {"operation": self.operation, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class StoreFailed(SessionEvent):
    """A record-store call raised: ``operation`` (get, put, touch, delete, index_add, ...),
    ``store`` (its class name) and ``error`` (the type name of the driver's exception, e.g.
    ``ConnectionError``, or of the exception itself; never its message)."""

    kind: ClassVar[str] = "store_error"
    operation: str
    store: str
    error: str

    def attributes(self) -> dict[str, str]:
        return {"operation": self.operation, "store": self.store, "error": self.error}


@dataclass(frozen=True, slots=True)
class SessionsSwept(SessionEvent):
    """The sweeper (``SessionMiddleware(sweep_every=...)``) ran once: ``outcome`` is ``swept``
    (``deleted`` expired rows went in ``seconds``), ``busy`` (another process was sweeping the
    database) or ``failed`` (the store failed; logged)."""

    kind: ClassVar[str] = "swept"
    outcome: Literal["swept", "busy", "failed"]
    deleted: int = 0
    seconds: float = 0.0

    def attributes(self) -> dict[str, str]:
        return {"outcome": self.outcome}


EventHook = Callable[[SessionEvent], None]
"""What ``on_event`` is: called with each event, in the request's task; its return is ignored."""

CallTimer = Callable[[str, str, float], None]
"""Called with ``(operation, store class name, seconds)`` after each record-store call."""


def emit(hook: EventHook, event: SessionEvent) -> None:
    """Hand ``event`` to ``hook``; a hook that raises is logged, never fails the request."""
    try:
        hook(event)
    except Exception:
        logger.exception("the on_event hook raised on a %s event; ignored", event.kind)


_BATCHES = frozenset({"get_many", "replace_many", "index_remove_many"})
"""The optional batch operations (``BatchRecords``, ``BatchIndex``), present when inner's are."""


class ObservedStore:
    """A record store that reports each call: failures to ``on_event`` (``StoreFailed``) and,
    with ``timer``, every call's latency. It has the per-user index only when ``inner`` has it.
    """

    def __new__(
        cls,
        inner: RecordStore,
        *,
        on_event: EventHook | None = None,
        timer: CallTimer | None = None,
    ) -> Any:
        if cls is ObservedStore and isinstance(inner, UserIndex):
            cls = _ObservedIndexed
        return super().__new__(cls)

    def __init__(
        self,
        inner: RecordStore,
        *,
        on_event: EventHook | None = None,
        timer: CallTimer | None = None,
    ) -> None:
        self.inner = inner
        self.hash_keys = bool(getattr(inner, "hash_keys", True))
        self.name: str = inner.name if isinstance(inner, ObservedStore) else type(inner).__name__
        self._on_event = on_event
        self._timer = timer

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)  # close(), clear_expired(), ... pass through
        if name not in _BATCHES:
            return found

        async def observed(*args: Any) -> Any:
            return await self._run(name, found(*args))

        return observed  # the optional batches are reported like the four

    async def _run(self, operation: str, call: Any) -> Any:
        start = time.perf_counter()
        try:
            return await call
        except Exception as exc:
            if self._on_event is not None:
                cause = exc.__cause__ if isinstance(exc, StoreError) else None
                error = type(cause or exc).__name__  # the driver's error, not its message
                emit(self._on_event, StoreFailed(operation, self.name, error))
            raise
        finally:
            if self._timer is not None:
                self._timer(operation, self.name, time.perf_counter() - start)

    async def get(self, id: str) -> Record | None:
        result: Record | None = await self._run("get", self.inner.get(id))
        return result

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        result: Version | None = await self._run(
            "put", self.inner.put(id, data, ttl, expect=expect)
        )
        return result

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return bool(await self._run("touch", self.inner.touch(id, ttl)))

    async def delete(self, id: str) -> None:
        await self._run("delete", self.inner.delete(id))


class _ObservedIndexed(ObservedStore):
    inner: Any

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self._run("index_add", self.inner.index_add(user, id, ttl))

    async def index_remove(self, user: str, id: str) -> None:
        await self._run("index_remove", self.inner.index_remove(user, id))

    async def index_members(self, user: str) -> list[str]:
        return list(await self._run("index_members", self.inner.index_members(user)))
