"""The app the security suite drives: the acceptance routes plus probes for races and faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import ContentSecurity, Key, SessionError, SessionInsertError
from sessionware.crypto import seal, unseal
from tests.acceptance.apps import ROUTES, make_app
from tests.client import Response as ClientResponse
from tests.client import request
from tests.security.conftest import Backend

Hook = Callable[[], Awaitable[None]]


class Probes:
    """Per-app state the probe routes use: gates that hold a handler, and a hook to run."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.arrived: dict[str, asyncio.Event] = {}
        self.hook: Hook | None = None
        self.late_errors: list[BaseException] = []

    def gate(self, name: str) -> asyncio.Event:
        self.arrived.setdefault(name, asyncio.Event())
        return self.gates.setdefault(name, asyncio.Event())


def probe_routes(probes: Probes) -> list[Any]:
    async def gated(request: Request) -> Response:
        """Read the session, wait at the gate, then do ``op`` (set, renew or purge)."""
        name = request.query_params["gate"]
        before = dict(request.session)
        gate = probes.gate(name)
        probes.arrived[name].set()
        await gate.wait()
        op = request.query_params.get("op", "set")
        if op == "set":
            request.session.update(await request.json())
        elif op == "renew":
            request.session.renew()
        elif op == "purge":
            request.session.purge()
        return JSONResponse(before)

    async def hooked(request: Request) -> Response:
        """Read the session, run the test's hook (a fault), then write the JSON body in."""
        request.session.get("probe")
        if probes.hook is not None:
            await probes.hook()
        request.session.update(await request.json())
        return JSONResponse(dict(request.session))

    async def remove(request: Request) -> Response:
        request.session.remove((await request.json())["key"])
        return JSONResponse(dict(request.session))

    async def stream_then_write(request: Request) -> Response:
        """Start streaming, then try each action of ``do`` (write, renew, purge, clear)."""
        session = request.session
        session.get("probe")
        actions: dict[str, Callable[[], Any]] = {
            "write": lambda: session.insert("late", 1),
            "renew": session.renew,
            "purge": session.purge,
            "clear": session.clear,
        }

        async def body() -> AsyncIterator[bytes]:
            yield b"started;"
            for name in request.query_params.get("do", "").split(","):
                try:
                    actions[name]()
                except SessionError as exc:
                    probes.late_errors.append(exc)
                    yield f"{name}:refused;".encode()
                else:
                    yield f"{name}:ok;".encode()

        return StreamingResponse(body())

    async def insert_value(request: Request) -> Response:
        """Insert the value ``kind`` names; 422 when the session refuses it."""
        kind = request.query_params["kind"]
        values: dict[str, Callable[[], Any]] = {
            "nan": lambda: float("nan"),
            "inf": lambda: float("inf"),
            "surrogate": lambda: "\ud800",
            "huge_int": lambda: 10**5000,
            "deep": lambda: _nested(5000),
            "object": lambda: object(),
        }
        try:
            request.session.insert("bad", values[kind]())
        except SessionInsertError:
            return PlainTextResponse("refused", status_code=422)
        return PlainTextResponse("stored")

    async def ws_write_after_accept(ws: WebSocket) -> None:
        await ws.accept()
        try:
            ws.session["late"] = 1
        except SessionError:
            await ws.send_text("refused")
        else:
            await ws.send_text("accepted")
        await ws.close()

    return [
        *ROUTES,
        Route("/gated", gated, methods=["POST"]),
        Route("/hooked", hooked, methods=["POST"]),
        Route("/remove", remove, methods=["POST"]),
        Route("/stream-then-write", stream_then_write),
        Route("/insert", insert_value, methods=["POST"]),
        WebSocketRoute("/ws-write", ws_write_after_accept),
    ]


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def build(
    backend: Backend,
    security: ContentSecurity = ContentSecurity.PRIVATE,
    *,
    key: Key | None = None,
    probes: Probes | None = None,
    **options: Any,
) -> Starlette:
    """The probe app on ``backend``'s recording store and clock."""
    options.setdefault("clock", backend.clock)
    if "keys" not in options:
        options["key"] = key or Key.generate()
    return make_app(
        routes=probe_routes(probes or Probes()),
        store=backend.store,
        content_security=security,
        **options,
    )


# --- cookies ------------------------------------------------------------------------------------


def enc(value: str) -> str:
    """A cookie value as it goes on the wire (percent-encoded, as the middleware sends it)."""
    return quote(value, safe="")


def sealed(security: ContentSecurity, key: Key, plain: str, name: str = "id") -> str:
    """``plain`` sealed for cookie ``name`` and percent-encoded for a Cookie header."""
    return enc(seal(security, key, name, plain))


def opened(security: ContentSecurity, key: Key, value: str, name: str = "id") -> str:
    """The plaintext of a Set-Cookie value (the session key, or the cookie store's state)."""
    result = unseal(security, [key], name, unquote(value))
    assert result is not None, "the cookie does not open under the key"
    return result[0]


def set_cookie(response: ClientResponse, name: str = "id") -> str:
    """The value of the response's session Set-Cookie (it must have one)."""
    cookie = response.cookie(name)
    assert cookie is not None, f"expected a Set-Cookie for {name}: {response.headers}"
    return cookie.value


async def start(app: Starlette, data: dict[str, Any]) -> str:
    """A new session holding ``data``; its cookie value."""
    response = await request(app, "POST", "/set", json=data)
    assert response.status == 200
    return set_cookie(response)


async def read(app: Starlette, value: str | None) -> dict[str, Any]:
    """The session state the app sees for cookie value ``value``."""
    response = await request(app, "GET", "/all", cookies={"id": value} if value else None)
    assert response.status == 200, response.status
    result: dict[str, Any] = response.json()
    return result


# --- logs ---------------------------------------------------------------------------------------


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("sessionware") and r.levelno == logging.WARNING
    ]


def assert_never_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No log line (message or argument) holds any of ``secrets``, raw or percent-decoded."""
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            if len(form) >= 8:
                assert form not in text, "a raw cookie value or session key reached the log"
