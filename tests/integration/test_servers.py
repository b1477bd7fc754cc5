"""Every ASGI server we support, for real: uvicorn (h11, httptools), hypercorn (HTTP/1.1, and
HTTP/2 over TLS with a certificate the test makes), granian and daphne.

Each server runs ``server_app.py`` in a subprocess (started once for the module, see
asgi_servers.py) and httpx drives it through the scenarios an app lives on: a counter, login
(``renew``), logout (``purge``), a streamed body that writes to the session, WebSocket writes
before and after ``accept()``, a cross-origin WebSocket handshake (403), and CSRF. Each scenario runs on the server-side path (``/db``,
SQLite) and the cookie store (``/cookie``). Checked: the exact Set-Cookie lines, ``Vary:
Cookie``, the session surviving across requests, and no traceback in the server's log.

``CAPABILITIES`` records what each server presents in its scopes and whether the headers of a
``websocket.accept`` message reach the client: on daphne (ASGI 2.0, no ``spec_version``) and
granian (says 2.3, drops them) the cookie of a WebSocket session is lost. Those cells are
``xfail(strict=True)``: they fail because of the server and turn into an XPASS failure the day
the server carries the headers, so the table gets updated.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest

from sessionware import ContentSecurity, Key
from sessionware.crypto import unseal
from tests.integration.asgi_servers import LAUNCHES, Server, Servers


@dataclass(frozen=True)
class Capability:
    """What one server presents and carries (observed; the test below checks it still holds)."""

    http_asgi: dict[str, str]
    """``scope["asgi"]`` of an HTTP request."""
    ws_asgi: dict[str, str]
    """``scope["asgi"]`` of a WebSocket (no ``spec_version``: ASGI 2.0)."""
    extensions: tuple[str, ...]
    """``scope["extensions"]`` of a WebSocket (sorted names)."""
    accept_headers: bool
    """Whether headers of ``websocket.accept`` (the session cookie) reach the client."""


_UVICORN = Capability(
    http_asgi={"version": "3.0", "spec_version": "2.3"},
    ws_asgi={"version": "3.0", "spec_version": "2.4"},
    extensions=("websocket.http.response",),
    accept_headers=True,
)
_HYPERCORN = Capability(
    http_asgi={"version": "3.0", "spec_version": "2.1"},
    ws_asgi={"version": "3.0", "spec_version": "2.3"},
    extensions=("websocket.http.response",),
    accept_headers=True,
)
# granian says ASGI 2.3 (headers on websocket.accept since 2.1) but builds the 101 answer
# without them; its scope gives ports as str, and names http.response.pathsend.
_GRANIAN = Capability(
    http_asgi={"version": "3.0", "spec_version": "2.3"},
    ws_asgi={"version": "3.0", "spec_version": "2.3"},
    extensions=("http.response.pathsend", "websocket.http.response"),
    accept_headers=False,
)
CAPABILITIES: dict[str, Capability] = {
    "uvicorn-h11": _UVICORN,
    "uvicorn-httptools": _UVICORN,
    "hypercorn-h11": _HYPERCORN,
    "hypercorn-h2-tls": _HYPERCORN,
    "granian": _GRANIAN,
    "granian-h2-tls": _GRANIAN,
    # daphne gives no spec_version (ASGI 2.0: websocket.accept has no headers) and no extensions.
    "daphne": Capability(
        http_asgi={"version": "3.0"},
        ws_asgi={"version": "3.0"},
        extensions=(),
        accept_headers=False,
    ),
}
assert set(CAPABILITIES) == set(LAUNCHES)

SERVER_DROPS_ACCEPT_HEADERS = (
    "the server drops the headers of websocket.accept, so the session cookie never reaches the"
    " client (see CAPABILITIES and docs/servers.md)"
)
SILENT_LOSS = (
    "granian says it speaks ASGI 2.3 (whose websocket.accept carries headers) but drops them:"
    " sessionware cannot tell it from a server that keeps them, so the cookie is lost (see"
    " docs/servers.md: start sessions over HTTP on granian)"
)

HYPERCORN_H2_EARLY_ANSWER = (
    "hypercorn bug, pgjones/hypercorn#329: over HTTP/2, request data arriving after the answer"
    " raises KeyError in hypercorn and drops the connection"
)
STORES = ["db", "cookie"]
"""The two mounts of server_app.py: the SQLite store and the cookie store."""


def _servers(
    xfail: Callable[[Capability], bool] = lambda _: False,
    reason: str = "",
    *,
    websockets: bool = False,
) -> list[Any]:
    """Every server (with ``websockets``, those the WebSocket scenarios run on), as parameters;
    those where ``xfail(capability)`` is true are marked ``xfail(strict=True, reason=reason)``."""
    return [
        pytest.param(
            name, marks=[pytest.mark.xfail(strict=True, reason=reason)] if xfail(cap) else []
        )
        for name, cap in CAPABILITIES.items()
        if LAUNCHES[name].websockets or not websockets
    ]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    registry = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture
def server(request: pytest.FixtureRequest, servers: Servers) -> Iterator[Server]:
    """The server the test is parametrized with; after the test, what it logged since the last
    look must hold no traceback (an expected failure's log is only read: it may hold one).
    A test that takes more than ``DEADLINE`` seconds fails, so a stuck server cannot stall CI."""
    running = servers.get(request.param)
    with deadline(DEADLINE, f"a test against {running.name}"):
        yield running
    if request.node.get_closest_marker("xfail") is None:
        assert_no_traceback(running)
    else:
        running.take_log()


DEADLINE = 60
"""Seconds a test may take; each takes well under one (every client call has a 10 s timeout)."""


@contextlib.contextmanager
def deadline(seconds: int, what: str) -> Iterator[None]:
    """Raise ``TimeoutError`` in the main thread if the block lasts more than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_no_traceback(server: Server) -> None:
    written = server.take_log()
    assert "Traceback" not in written, f"{server.name} logged:\n{written}"


def _attributes(server: Server, mount: str) -> str:
    return f"; HttpOnly; SameSite=Lax{'; Secure' if server.secure else ''}; Path=/{mount}"


def cookie_value(lines: list[str], server: Server, mount: str) -> str:
    """The value of the one Set-Cookie line in ``lines``, after checking that the line is
    exactly the session cookie's: its name, a sealed value (base64, ``/`` and ``=``
    percent-encoded), its attributes and nothing else."""
    assert len(lines) == 1, lines
    attributes = re.escape(_attributes(server, mount))
    match = re.fullmatch(rf"id=([A-Za-z0-9+%]+){attributes}", lines[0])
    assert match, f"unexpected Set-Cookie line: {lines[0]!r}"
    return match.group(1)


def session_cookie(response: httpx.Response, server: Server, mount: str) -> str:
    """The value of the session cookie ``response`` sets (``cookie_value``), marked private."""
    value = cookie_value(response.headers.get_list("set-cookie"), server, mount)
    assert response.headers["cache-control"] == "private"
    return value


def opened(server: Server, value: str) -> str:
    """What a session cookie seals: the session key (server-side) or the state (cookie store)."""
    plain = unseal(ContentSecurity.PRIVATE, [Key.from_hex(server.key)], "id", unquote(value))
    assert plain is not None, "the cookie does not open with the app's key"
    return plain[0]


def assert_removal(response: httpx.Response, server: Server, mount: str) -> None:
    """``response`` carries exactly the line that makes a browser drop the session cookie."""
    lines = response.headers.get_list("set-cookie")
    assert len(lines) == 1, lines
    date = r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"
    removal = rf"id={re.escape(_attributes(server, mount))}; Max-Age=0; Expires={date}"
    assert re.fullmatch(removal, lines[0]), f"unexpected removal line: {lines[0]!r}"


def assert_vary(response: httpx.Response) -> None:
    assert "cookie" in [v.strip().lower() for v in response.headers.get("vary", "").split(",")]


def no_cookie(response: httpx.Response) -> None:
    assert response.headers.get_list("set-cookie") == []


def state(client: httpx.Client, mount: str) -> dict[str, Any]:
    response = client.get(f"/{mount}/state")
    assert response.status_code == 200
    assert_vary(response)
    return dict(response.json())


def token(client: httpx.Client, mount: str) -> str:
    response = client.get(f"/{mount}/token")
    assert response.status_code == 200
    return str(response.json()["token"])


def log_in(client: httpx.Client, mount: str, user: str = "ada") -> httpx.Response:
    """Sign in as a browser does: fetch the form's CSRF token, then post it with the login."""
    csrf = token(client, mount)
    response = client.post(f"/{mount}/login", json={"user": user}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    return response


def records(server: Server) -> int:
    """How many records the server's SQLite store holds."""
    with sqlite3.connect(server.database) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone():
            return 0  # the store makes its table on first use
        return int(db.execute("SELECT count(*) FROM sessions").fetchone()[0])


def websocket_report(server: Server, client: httpx.Client, mount: str, query: str) -> Any:
    with server.websocket(client, f"/{mount}/ws?{query}") as ws:
        report = json.loads(ws.recv(timeout=10))
    return report


# --- the server itself ---------------------------------------------------------------------


@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_scopes_match_the_capability_table(server: Server) -> None:
    """What each server says about itself: the table (and docs/servers.md) must follow it."""
    capability = CAPABILITIES[server.name]
    with server.client() as client:
        response = client.get("/db/scope")
        assert response.http_version == ("HTTP/2" if server.launch.http2 else "HTTP/1.1")
        assert response.json()["asgi"] == capability.http_asgi
        if not server.launch.websockets:
            return
        report = websocket_report(server, client, "db", "")
    assert report["asgi"] == capability.ws_asgi
    assert tuple(report["extensions"]) == capability.extensions


# --- HTTP scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("mount", STORES)
@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_counter_survives_across_requests(server: Server, mount: str) -> None:
    """Each change re-sends the cookie (as actix does); server-side it keeps the same key."""
    with server.client() as client:
        first = client.get(f"/{mount}/count")
        assert first.json() == {"count": 1}
        assert first.http_version == ("HTTP/2" if server.launch.http2 else "HTTP/1.1")
        assert_vary(first)
        second = client.get(f"/{mount}/count")
        assert second.json() == {"count": 2}
        assert_vary(second)
        sealed = [opened(server, session_cookie(r, server, mount)) for r in (first, second)]
        if mount == "db":
            assert sealed[0] == sealed[1]
        else:
            assert [json.loads(s)["state"] for s in sealed] == [{"count": 1}, {"count": 2}]
        assert client.get(f"/{mount}/count").json() == {"count": 3}


@pytest.mark.parametrize("mount", STORES)
@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_login_renews_the_key(server: Server, mount: str) -> None:
    with server.client() as client:
        before = session_cookie(client.get(f"/{mount}/token"), server, mount)
        response = log_in(client, mount)
        after = session_cookie(response, server, mount)
        assert_vary(response)
        assert state(client, mount) == {"user": "ada"}
    if mount == "db":  # a new key; the pre-login one is dead, and never replaces the new cookie
        assert opened(server, before) != opened(server, after)
        with server.client() as replay:
            replay.cookies.set("id", before, path="/db")
            response = replay.get("/db/state")
            assert response.json() == {}
            no_cookie(response)


@pytest.mark.parametrize("mount", STORES)
@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_logout_purges(server: Server, mount: str) -> None:
    with server.client() as client:
        signed_in = session_cookie(log_in(client, mount), server, mount)
        csrf = token(client, mount)
        response = client.post(f"/{mount}/logout", headers={"X-CSRF-Token": csrf})
        assert response.json() == {"ended": True}
        assert_removal(response, server, mount)
        assert_vary(response)
        assert not client.cookies
        response = client.get(f"/{mount}/state")
        assert response.json() == {}
        no_cookie(response)
    if mount == "db":  # the signed-in key is dead server-side
        with server.client() as replay:
            replay.cookies.set("id", signed_in, path="/db")
            assert replay.get("/db/state").json() == {}


@pytest.mark.parametrize("mount", STORES)
@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_csrf_refuses_posts_without_the_token(server: Server, mount: str) -> None:
    """Refusals post forms, which the check reads to the end: an early answer to a body still
    on its way makes hypercorn's HTTP/2 drop the connection (pgjones/hypercorn#329)."""
    with server.client() as client, server.client() as other:
        csrf = token(client, mount)
        foreign = token(other, mount)
        for form, text in [
            ({"user": "eve"}, "CSRF token missing.\n"),
            ({"user": "eve", "csrf_token": foreign}, "CSRF token incorrect.\n"),
        ]:
            refused = client.post(f"/{mount}/login", data=form)
            assert (refused.status_code, refused.text) == (403, text)
            no_cookie(refused)
            assert_vary(refused)
        assert "user" not in state(client, mount)
        right = client.post(f"/{mount}/login", json={"user": "ada"}, headers={"X-CSRF-Token": csrf})
        assert right.status_code == 200
        session_cookie(right, server, mount)
        assert state(client, mount) == {"user": "ada"}


@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_streamed_write_to_a_signed_in_session_is_saved(server: Server) -> None:
    with server.client() as client:
        log_in(client, "db")
        response = client.get("/db/stream")
        assert response.text == "head;write:ok;tail"
        no_cookie(response)
        assert_vary(response)
        assert state(client, "db") == {"user": "ada", "streamed": 1}


@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_cookie_store_streamed_write_is_refused(server: Server) -> None:
    """Any change needs a new cookie, which cannot follow the response head: the write raises
    instead of vanishing."""
    with server.client() as client:
        log_in(client, "cookie")
        response = client.get("/cookie/stream")
        assert response.text.startswith("head;write:refused: "), response.text
        assert response.text.endswith(";tail")
        no_cookie(response)
        assert state(client, "cookie") == {"user": "ada"}


@pytest.mark.parametrize(
    "mount",
    [
        "db",
        "cookie",
    ],
)
@pytest.mark.parametrize("server", _servers(), indirect=True)
def test_new_visitors_streamed_write_is_refused(server: Server, mount: str) -> None:
    """A new visitor's first write, made while the body streams: no cookie can carry the new
    session, so the write must raise (and store nothing) instead of vanishing."""
    with server.client() as client:
        stored = records(server)
        response = client.get(f"/{mount}/stream")
        assert response.text.startswith("head;write:refused: "), response.text
        no_cookie(response)
        assert not client.cookies
        assert records(server) == stored


# --- WebSockets ----------------------------------------------------------------------------


@pytest.mark.parametrize("server", _servers(websockets=True), indirect=True)
def test_websocket_write_after_accept_to_a_signed_in_session_is_saved(server: Server) -> None:
    """Needs no header, so it works on every server."""
    with server.client() as client:
        log_in(client, "db")
        report = websocket_report(server, client, "db", "after=1")
        assert report["after"] == "ok"
        assert report["state"] == {"user": "ada", "ws_after": 1}
        assert state(client, "db") == {"user": "ada", "ws_after": 1}


@pytest.mark.parametrize("server", _servers(websockets=True), indirect=True)
def test_websocket_write_before_accept_to_a_signed_in_session_is_saved(server: Server) -> None:
    """The key does not change, so no header is needed: works on every server."""
    with server.client() as client:
        log_in(client, "db")
        report = websocket_report(server, client, "db", "before=x")
        assert report["before"] == "ok"
        assert state(client, "db") == {"user": "ada", "ws_before": "x"}


@pytest.mark.parametrize("server", _servers(websockets=True), indirect=True)
def test_cookie_store_websocket_write_after_accept_is_refused(server: Server) -> None:
    with server.client() as client:
        log_in(client, "cookie")
        report = websocket_report(server, client, "cookie", "after=1")
        assert report["after"].startswith("refused: "), report
        assert state(client, "cookie") == {"user": "ada"}


@pytest.mark.parametrize("mount", STORES)
@pytest.mark.parametrize(
    "server",
    _servers(
        lambda capability: not capability.accept_headers,
        SERVER_DROPS_ACCEPT_HEADERS,
        websockets=True,
    ),
    indirect=True,
)
def test_websocket_write_before_accept_sends_the_cookie(server: Server, mount: str) -> None:
    """A new visitor's session made before ``accept()``: its cookie goes with the 101 answer,
    and the session is there on the next HTTP request. For the cookie store a change to a
    signed-in session needs a new cookie too."""
    with server.client() as client:
        if mount == "cookie":
            log_in(client, mount)
        with server.websocket(client, f"/{mount}/ws?before=x") as ws:
            assert ws.response is not None
            lines = ws.response.headers.get_all("Set-Cookie")
            report = json.loads(ws.recv(timeout=10))
        assert report["before"] == "ok"
        cookie_value(lines, server, mount)
        expected = {"ws_before": "x"} if mount == "db" else {"user": "ada", "ws_before": "x"}
        assert state(client, mount) == expected


@pytest.mark.parametrize("server", _servers(websockets=True), indirect=True)
def test_a_cross_origin_websocket_handshake_is_answered_403(server: Server) -> None:
    """Issue 28 item 2: a page of another site opening a WebSocket with the user's cookie is
    refused before the app runs, with a 403 on every server (the denial-response extension
    where the server has it, else a close before accept); the page's own origin gets in."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with server.client() as client:
        log_in(client, "db")
        request = httpx.Request("GET", server.base_url + "/db/ws?after=1")
        client.cookies.set_cookie_header(request)
        context = server.ssl_context() if server.secure else None

        def handshake(origin: str) -> Any:
            headers = {"Cookie": request.headers["cookie"], "Origin": origin}
            return connect(
                server.ws_url + "/db/ws?after=1",
                additional_headers=headers,
                ssl=context,
                open_timeout=10,
            )

        with pytest.raises(InvalidStatus) as refused:
            handshake("https://evil.example")
        assert refused.value.response.status_code == 403
        with handshake(server.base_url) as ws:
            assert json.loads(ws.recv(timeout=10))["state"] == {"user": "ada", "ws_after": 1}
    assert "Traceback" not in server.take_log()


def _spec_version(server: Server) -> str:
    return CAPABILITIES[server.name].ws_asgi.get("spec_version", "2.0")


@pytest.mark.parametrize("mount", STORES)
@pytest.mark.parametrize(
    "server",
    [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=SILENT_LOSS)]
            if LAUNCHES[name].package == "granian"
            else [],
        )
        for name, capability in CAPABILITIES.items()
        if not capability.accept_headers and LAUNCHES[name].websockets
    ],
    indirect=True,
)
def test_websocket_write_needing_a_cookie_is_refused_where_the_server_drops_it(
    server: Server, mount: str
) -> None:
    """Where the server cannot carry the cookie, the write raises ``SessionError`` naming the
    server's ASGI version (as a streamed write does), and nothing is stored."""
    with server.client() as client:
        if mount == "cookie":
            log_in(client, mount)
        stored = records(server)
        report = websocket_report(server, client, mount, "before=x")
        assert report["before"].startswith("refused: "), report
        assert _spec_version(server) in report["before"]
        assert records(server) == stored
        assert state(client, mount) == ({} if mount == "db" else {"user": "ada"})


# --- HTTP/2: an answer that comes before the request's body ----------------------------------


def _h2_exchange(server: Server, body_after_answer: bytes) -> tuple[int | None, int | None]:
    """Over one HTTP/2 connection: a JSON POST to /db/login whose body is sent only after the
    answer came (as a refusal answers before reading), then a GET on the same connection.
    Returns both statuses (``None`` where the connection closed before an answer)."""
    context = server.ssl_context()
    context.set_alpn_protocols(["h2"])
    authority = server.base_url.split("://", 1)[1]
    statuses: dict[int, int | None] = {1: None, 3: None}
    with (
        socket.create_connection(("127.0.0.1", server.process.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        connection = h2.connection.H2Connection()
        connection.initiate_connection()

        def request(stream: int, method: str, path: str, end: bool) -> None:
            head = [(":method", method), (":path", path), (":scheme", "https")]
            head += [(":authority", authority), ("content-type", "application/json")]
            connection.send_headers(stream, head, end_stream=end)
            sock.sendall(connection.data_to_send())

        def answer(stream: int) -> None:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                    if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                        sock.sendall(connection.data_to_send())
                        return
                sock.sendall(connection.data_to_send())

        request(1, "POST", "/db/login", end=False)
        answer(1)
        time.sleep(0.05)  # the server has closed its side of the stream by now
        # granian resets the stream after its answer: then there is nothing more to send.
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            connection.send_data(1, body_after_answer, end_stream=True)
        request(3, "GET", "/db/state", end=True)
        answer(3)
    return statuses[1], statuses[3]


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=HYPERCORN_H2_EARLY_ANSWER)]
            if launch.package == "hypercorn"
            else [],
        )
        for name, launch in LAUNCHES.items()
        if launch.http2
    ],
    indirect=True,
)
def test_http2_connection_survives_a_refusal_made_before_the_body(server: Server) -> None:
    """CSRFMiddleware refuses a JSON post without its token before reading the body; the
    connection, and every request multiplexed on it, must live on."""
    assert _h2_exchange(server, b'{"user": "eve"}') == (403, 200)
    assert_no_traceback(server)
