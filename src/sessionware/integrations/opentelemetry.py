"""OpenTelemetry metrics for sessions: a counter per event kind and a store-latency histogram.

Uses ``opentelemetry-api`` only (``pip install 'sessionware[otel]'``); the application picks the
SDK and exporter. ``SessionMetrics`` is the ``on_event`` hook; ``instrument(store)`` wraps a
record store so each call's latency is recorded (only then are store calls timed)::

    metrics = SessionMetrics()
    app.add_middleware(
        SessionMiddleware, store=metrics.instrument(store), key=key, on_event=metrics
    )
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionware.events import (
    ConflictEnded,
    DecodeFailed,
    MergeRetry,
    ObservedStore,
    SessionCreated,
    SessionEvent,
    SessionExpired,
    SessionLoaded,
    SessionPurged,
    SessionRenewed,
    SessionRevoked,
    SessionRotated,
    SessionsSwept,
    StoreFailed,
)

try:
    from opentelemetry import metrics as _otel_metrics
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sessionware.integrations.opentelemetry needs opentelemetry-api:"
        " pip install 'sessionware[otel]'"
    ) from exc

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, MeterProvider

    from sessionware.stores.base import RecordStore

__all__ = ["EVENT_KINDS", "SessionMetrics"]

EVENT_KINDS: tuple[type[SessionEvent], ...] = (
    SessionCreated,
    SessionLoaded,
    SessionRenewed,
    SessionRotated,
    SessionPurged,
    SessionRevoked,
    SessionExpired,
    DecodeFailed,
    MergeRetry,
    ConflictEnded,
    StoreFailed,
    SessionsSwept,
)
"""The events ``SessionMetrics`` counts, each as ``sessionware.session.<kind>``."""


class SessionMetrics:
    """Turns session events into OpenTelemetry metrics (use it as ``on_event``).

    Counters ``sessionware.session.<kind>`` (created, loaded, ..., store_error) carry the event's
    attributes (reason, operation, store, error); the histogram ``sessionware.store.duration``
    (seconds) carries ``operation`` and ``store``. ``meter_provider`` defaults to the global one.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from sessionware import __version__

        provider = meter_provider or _otel_metrics.get_meter_provider()
        meter = provider.get_meter("sessionware", __version__)
        self._counters: dict[str, Counter] = {
            kind.kind: meter.create_counter(
                f"sessionware.session.{kind.kind}",
                unit="{event}",
                description=(kind.__doc__ or "").split("\n")[0].strip(),
            )
            for kind in EVENT_KINDS
        }
        self._duration = meter.create_histogram(
            "sessionware.store.duration",
            unit="s",
            description="Latency of each record-store call, by operation and store.",
        )

    def __call__(self, event: SessionEvent) -> None:
        """Count ``event`` (the ``on_event`` hook)."""
        counter = self._counters.get(event.kind)
        if counter is not None:
            counter.add(1, event.attributes())

    def instrument(self, store: RecordStore) -> Any:
        """``store``, wrapped so that each call's latency goes to the histogram."""
        return ObservedStore(store, timer=self._record)

    def _record(self, operation: str, store: str, seconds: float) -> None:
        self._duration.record(seconds, {"operation": operation, "store": store})
