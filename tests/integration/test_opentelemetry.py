"""sessionware.integrations.opentelemetry against the real OpenTelemetry SDK and its in-memory
metric reader: event counters with their attributes, store-call latency per operation and store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sessionware import Key, SessionMiddleware
from sessionware.integrations.opentelemetry import EVENT_KINDS, SessionMetrics
from sessionware.middleware import get_session
from sessionware.stores.memory import MemorySessionStore
from sessionware.stores.redis import RedisSessionStore
from tests.client import request
from tests.factories import redis as redis_factory
from tests.services import free_port

KEY = Key.generate()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    session = get_session(scope)
    if scope["path"] == "/login":
        session["user"] = "ada"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(session.get("user")).encode()})


def points(reader: InMemoryMetricReader) -> Iterator[tuple[str, dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "sessionware"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    yield metric.name, dict(point.attributes or {}), point


def counts(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, Any], ...]], int]:
    return {
        (name, tuple(sorted(attrs.items()))): point.value
        for name, attrs, point in points(reader)
        if name.startswith("sessionware.session.")
    }


def latencies(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    return {
        (attrs["operation"], attrs["store"]): point.count
        for name, attrs, point in points(reader)
        if name == "sessionware.store.duration"
    }


def metered() -> tuple[SessionMetrics, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return SessionMetrics(MeterProvider(metric_readers=[reader])), reader


async def run(store: Any) -> tuple[SessionMetrics, InMemoryMetricReader]:
    metrics, reader = metered()
    asgi = SessionMiddleware(app, store=metrics.instrument(store), key=KEY, on_event=metrics)
    response = await request(asgi, "GET", "/login")
    cookie = response.cookie("id")
    assert cookie is not None
    for _ in range(3):
        assert (await request(asgi, "GET", "/", cookies={"id": cookie.value})).text == "ada"
    await request(asgi, "GET", "/", cookies={"id": "forged"})
    return metrics, reader


def test_every_event_kind_has_its_counter() -> None:
    metrics, reader = metered()
    samples = {
        "revoked": {"operation": "save"},
        "expired": {"reason": "idle"},
        "decode_failed": {"reason": "state"},
        "merge_retry": {"operation": "renew"},
        "conflict_ended": {"operation": "save", "reason": "hops"},
        "store_error": {"operation": "get", "store": "S", "error": "E"},
        "swept": {"outcome": "busy"},
    }
    for kind in EVENT_KINDS:
        metrics(kind(**samples.get(kind.kind, {})))
    assert counts(reader) == {
        (f"sessionware.session.{kind}", tuple(sorted(samples.get(kind, {}).items()))): 1
        for kind in (
            "created",
            "loaded",
            "renewed",
            "rotated",
            "purged",
            "revoked",
            "expired",
            "decode_failed",
            "merge_retry",
            "conflict_ended",
            "store_error",
            "swept",
        )
    }


async def test_counters_and_latency_on_the_memory_store() -> None:
    _, reader = await run(MemorySessionStore())
    assert counts(reader) == {
        ("sessionware.session.created", ()): 1,
        ("sessionware.session.loaded", ()): 3,
        ("sessionware.session.decode_failed", (("reason", "cookie"),)): 1,
    }
    assert latencies(reader) == {("put", "MemorySessionStore"): 1, ("get", "MemorySessionStore"): 3}


async def test_latency_on_real_redis() -> None:
    async with redis_factory.store() as store:
        _, reader = await run(store)
    assert latencies(reader) == {("put", "RedisSessionStore"): 1, ("get", "RedisSessionStore"): 3}
    for name, _, point in points(reader):
        if name == "sessionware.store.duration":
            assert 0 < point.sum < 5 and point.min > 0


async def test_a_dead_store_counts_store_error() -> None:
    metrics, reader = metered()
    store = RedisSessionStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    try:
        asgi = SessionMiddleware(app, store=metrics.instrument(store), key=KEY, on_event=metrics)
        assert (await request(asgi, "GET", "/login")).status == 503
    finally:
        await store.aclose()
    attrs = (("error", "ConnectionError"), ("operation", "put"), ("store", "RedisSessionStore"))
    assert counts(reader) == {("sessionware.session.store_error", attrs): 1}
    assert latencies(reader) == {("put", "RedisSessionStore"): 1}
