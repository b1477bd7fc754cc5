"""CSRFMiddleware and CSRFProtected on real Starlette/FastAPI apps over a SQLite store.

Every refused request is checked against the store itself: no store call but the load, and the
table's rows byte for byte as before. The lifecycle extends the TTL on every request, so a
refused request that was not discarded would write (``update_ttl``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Form
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from sessionware import (
    BrowserSession,
    CSRFMiddleware,
    Key,
    SessionMiddleware,
    TtlExtensionPolicy,
    csrf_token,
    get_session,
)
from sessionware.integrations.fastapi import CSRFProtected, SessionDep
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.client import RecordingStore

KEY = Key.generate()
UNSAFE = ["POST", "PUT", "PATCH", "DELETE"]
EVERY_REQUEST = BrowserSession(state_ttl_extension_policy=TtlExtensionPolicy.ON_EVERY_REQUEST)


async def token(request: Request) -> Response:
    return PlainTextResponse(csrf_token(get_session(request)))


async def change(request: Request) -> Response:
    """Counts in the session and echoes the form it read (file parts as name and size)."""
    session = get_session(request)
    session["n"] = session.get("n", 0) + 1
    form: dict[str, Any] = {}
    if request.headers.get("content-type", "").startswith(("multipart/", "application/x-www")):
        async with request.form() as parsed:
            for name, value in parsed.multi_items():
                if isinstance(value, UploadFile):
                    form[name] = [value.filename, len(await value.read())]
                else:
                    form[name] = value
    return JSONResponse({"n": session["n"], "form": form})


async def login(request: Request) -> Response:
    session = get_session(request)
    session["user"] = "ada"
    session.renew()
    return PlainTextResponse("welcome")


class Harness:
    """The app, its store (recorded), the SQLite file behind it, and a cookie-keeping client."""

    def __init__(self, path: Path, **csrf: Any) -> None:
        self.path = path
        self.store = RecordingStore(SQLiteSessionStore(path))
        methods = ["GET", "HEAD", "OPTIONS", *UNSAFE]
        self.app = Starlette(
            routes=[
                Route("/token", token),
                Route("/change", change, methods=methods),
                Route("/hooks/{name:path}", change, methods=methods),
                Route("/exact", change, methods=methods),
                Route("/exact/more", change, methods=methods),
                Route("/login", login, methods=["POST"]),
            ],
            middleware=[
                Middleware(SessionMiddleware, store=self.store, key=KEY, lifecycle=EVERY_REQUEST),
                Middleware(CSRFMiddleware, **csrf),
            ],
        )

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="https://testserver")

    def rows(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return sorted(db.execute("SELECT * FROM sessions").fetchall())

    async def refused(self, send: Callable[[], Any]) -> httpx.Response:
        """Send a request that must be refused; check that it wrote nothing."""
        before, calls = self.rows(), len(self.store.calls)
        response = await send()
        assert response.status_code == 403, response.text
        assert response.text.startswith("CSRF token ")
        assert "set-cookie" not in response.headers
        assert [c for c in self.store.calls[calls:] if c != "load"] == []
        assert self.rows() == before
        return response


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path / "sessions.db", exempt=["/hooks/", "/exact"])
    yield harness
    await harness.store.inner.aclose()


async def signed_up(client: httpx.AsyncClient) -> str:
    """Start a session (the first token creates its secret); return a token for it."""
    response = await client.get("/token")
    assert response.status_code == 200 and "set-cookie" in response.headers
    return response.text


async def counter(client: httpx.AsyncClient) -> int:
    """Press the counter with a valid token; its new value."""
    value = (await client.get("/token")).text
    response = await client.post("/change", headers={"X-CSRF-Token": value})
    return int(response.json()["n"])


@pytest.mark.parametrize("method", UNSAFE)
async def test_an_unsafe_request_with_the_token_in_the_header_passes(
    harness: Harness, method: str
) -> None:
    async with harness.client() as client:
        first = await signed_up(client)
        second = (await client.get("/token")).text
        assert first != second
        for value in (first, second):
            response = await client.request(method, "/change", headers={"X-CSRF-Token": value})
            assert response.status_code == 200, response.text
        assert response.json()["n"] == 2


@pytest.mark.parametrize("method", UNSAFE)
async def test_an_unsafe_request_without_the_token_is_refused_and_writes_nothing(
    harness: Harness, method: str
) -> None:
    async with harness.client() as client:
        await signed_up(client)
        n = await counter(client)
        response = await harness.refused(lambda: client.request(method, "/change"))
        assert response.text == "CSRF token missing.\n"
        await harness.refused(lambda: client.request(method, "/change", data={"other": "field"}))
        await harness.refused(
            lambda: client.request(method, "/change", json={"csrf_token": "in json: not read"})
        )
        assert await counter(client) == n + 1


@pytest.mark.parametrize("method", UNSAFE)
async def test_a_wrong_or_another_sessions_token_is_refused_and_writes_nothing(
    harness: Harness, method: str
) -> None:
    async with harness.client() as client, harness.client() as attacker:
        own = await signed_up(client)
        theirs = await signed_up(attacker)  # a valid token, of the attacker's own session
        n = await counter(client)
        for bad in (theirs, "A" * 86, own[:-2], "garbage"):
            response = await harness.refused(
                lambda bad=bad: client.request(method, "/change", headers={"X-CSRF-Token": bad})
            )
            assert response.text == "CSRF token incorrect.\n"
            await harness.refused(
                lambda bad=bad: client.request(method, "/change", data={"csrf_token": bad})
            )
        assert await counter(client) == n + 1


async def test_a_token_without_a_session_is_refused(harness: Harness) -> None:
    async with harness.client() as client, harness.client() as other:
        token_of_other = await signed_up(other)
        await harness.refused(
            lambda: client.post("/change", headers={"X-CSRF-Token": token_of_other})
        )
        assert harness.rows() and len(harness.rows()) == 1


async def test_the_form_field_is_accepted_and_the_handler_still_reads_its_form(
    harness: Harness,
) -> None:
    async with harness.client() as client:
        value = await signed_up(client)
        fields = {"a": "1", "csrf_token": value, "note": "héllo & bye"}
        response = await client.post("/change", data=fields)
        assert response.status_code == 200, response.text
        assert response.json()["form"] == fields


async def test_multipart_is_accepted_and_the_handler_still_reads_its_form_and_files(
    harness: Harness,
) -> None:
    async with harness.client() as client:
        value = await signed_up(client)
        upload = b"\x00\x01" * 100_000
        response = await client.put(
            "/change",
            data={"csrf_token": value, "title": "report"},
            files={"file": ("report.bin", upload, "application/octet-stream")},
        )
        assert response.status_code == 200, response.text
        form = response.json()["form"]
        assert form == {"csrf_token": value, "title": "report", "file": ["report.bin", 200_000]}
        await harness.refused(
            lambda: client.put(
                "/change",
                data={"csrf_token": value[::-1], "title": "x"},
                files={"file": ("a.txt", b"abc", "text/plain")},
            )
        )
        await harness.refused(
            lambda: client.put(
                "/change", data={"title": "x"}, files={"file": ("a.txt", b"abc", "text/plain")}
            )
        )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"not multipart at all"),
        ("multipart/form-data", b'--x\r\nContent-Disposition: form-data; name="csrf_token"\r\n'),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken header line\r\n\r\nv"),
        ("application/x-www-form-urlencoded", b"%%%&&&==="),
        ("text/plain", b"csrf_token=anything"),
    ],
)
async def test_a_malformed_or_other_body_is_refused(
    harness: Harness, content_type: str, body: bytes
) -> None:
    async with harness.client() as client:
        await signed_up(client)
        headers = {"content-type": content_type}
        await harness.refused(lambda: client.post("/change", content=body, headers=headers))


async def test_a_multipart_field_after_a_large_file_is_read_within_the_bound(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path / "s.db", max_body_size=64 * 1024)
    try:
        async with harness.client() as client:
            value = await signed_up(client)
            files = {"file": ("a.bin", b"x" * 10_000, "application/octet-stream")}
            response = await client.post("/change", files=files, data={"csrf_token": value})
            assert response.status_code == 200, response.text
            # httpx writes the fields before the files: put the file first by hand.
            boundary = "b0undary"
            parts = [
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + b"y" * 100_000
                + b"\r\n",
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
                f"{value}\r\n--{boundary}--\r\n".encode(),
            ]
            headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
            await harness.refused(
                lambda: client.post("/change", content=b"".join(parts), headers=headers)
            )
            big = {"csrf_token": value, "pad": "z" * 70_000}
            await harness.refused(lambda: client.post("/change", data=big))
            response = await client.post("/change", data=big, headers={"X-CSRF-Token": value})
            assert response.status_code == 200, response.text
    finally:
        await harness.store.inner.aclose()


async def test_a_body_in_many_messages_is_replayed_whole(harness: Harness) -> None:
    async with harness.client() as client:
        value = await signed_up(client)
        cookie = client.cookies["id"]

    body = f"first=1&csrf_token={value}&last={'q' * 5000}".encode()
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/change",
        "raw_path": b"/change",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", f"id={cookie}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await harness.app(scope, receive, send)
    assert sent[0]["status"] == 200
    echoed = httpx.Response(200, content=b"".join(m.get("body", b"") for m in sent[1:])).json()
    assert echoed["form"] == {"first": "1", "csrf_token": value, "last": "q" * 5000}


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_safe_methods_pass_without_a_token(harness: Harness, method: str) -> None:
    async with harness.client() as client:
        await signed_up(client)
        response = await client.request(method, "/change")
        assert response.status_code == 200


@pytest.mark.parametrize("path", ["/hooks/github", "/hooks/", "/hooks/a/b", "/exact"])
async def test_exempt_paths_pass_without_a_token(harness: Harness, path: str) -> None:
    async with harness.client() as client:
        response = await client.post(path, data={"a": "b"})
        assert response.status_code == 200
        assert response.json()["form"] == {"a": "b"}


@pytest.mark.parametrize("path", ["/exact/more", "/hooks"])
async def test_paths_near_the_exempt_ones_are_checked(harness: Harness, path: str) -> None:
    harness.app.router.routes.append(Route("/hooks", change, methods=["POST"]))
    async with harness.client() as client:
        await signed_up(client)
        await harness.refused(lambda: client.post(path))


async def test_renew_rotates_the_token(harness: Harness) -> None:
    async with harness.client() as client:
        before = await signed_up(client)
        response = await client.post("/login", headers={"X-CSRF-Token": before})
        assert response.status_code == 200
        await harness.refused(lambda: client.post("/change", headers={"X-CSRF-Token": before}))
        after = (await client.get("/token")).text
        response = await client.post("/change", headers={"X-CSRF-Token": after})
        assert response.status_code == 200


async def test_with_a_lazy_session_the_middleware_loads_it(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "lazy.db")

    async def lazy_token(request: Request) -> Response:
        return PlainTextResponse(csrf_token(await get_session(request).load()))

    app = Starlette(
        routes=[Route("/token", lazy_token), Route("/change", change, methods=["POST"])],
        middleware=[
            Middleware(SessionMiddleware, store=store, key=KEY, lazy=True),
            Middleware(CSRFMiddleware),
        ],
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
            value = (await client.get("/token")).text
            response = await client.post("/change", headers={"X-CSRF-Token": value})
            assert response.status_code == 200 and response.json()["n"] == 1
            assert (await client.post("/change")).status_code == 403
    finally:
        await store.aclose()


async def test_custom_header_and_field_names(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "s.db", header_name="X-XSRF", field_name="_token")
    try:
        async with harness.client() as client:
            value = await signed_up(client)
            assert (await client.post("/change", headers={"X-XSRF": value})).status_code == 200
            assert (await client.post("/change", data={"_token": value})).status_code == 200
            await harness.refused(lambda: client.post("/change", headers={"X-CSRF-Token": value}))
            await harness.refused(lambda: client.post("/change", data={"csrf_token": value}))
    finally:
        await harness.store.inner.aclose()


async def test_without_session_middleware_the_first_request_names_the_fix() -> None:
    app = Starlette(routes=[Route("/token", token)], middleware=[Middleware(CSRFMiddleware)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
        with pytest.raises(RuntimeError, match=r"inside sessionware\.SessionMiddleware"):
            await client.get("/token")


async def test_websockets_pass_through(harness: Harness) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    harness.app.router.routes.append(WebSocketRoute("/ws", echo))
    with TestClient(harness.app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hi"


# -- FastAPI: the per-route dependency -----------------------------------------------------------


@pytest.fixture
async def fastapi_app(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, RecordingStore, Path]]:
    path = tmp_path / "fastapi.db"
    store = RecordingStore(SQLiteSessionStore(path))
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, key=KEY, lifecycle=EVERY_REQUEST)

    @app.get("/token")
    async def get_token(session: SessionDep) -> str:
        return csrf_token(session)

    @app.post("/json", dependencies=[CSRFProtected])
    async def post_json(session: SessionDep) -> int:
        session["n"] = session.get("n", 0) + 1
        return int(session["n"])

    @app.post("/form")
    async def post_form(
        _: Annotated[None, CSRFProtected],
        session: SessionDep,
        title: Annotated[str, Form()],
        csrf_token: Annotated[str, Form()],
    ) -> dict[str, Any]:
        session["title"] = title
        return {"title": title, "token_seen": len(csrf_token)}

    @app.get("/safe", dependencies=[CSRFProtected])
    async def safe() -> str:
        return "ok"

    @app.post("/open")
    async def unprotected(session: SessionDep) -> str:
        session["open"] = True
        return "ok"

    yield app, store, path
    await store.inner.aclose()


async def test_csrf_protected_checks_the_header_and_the_form_field(
    fastapi_app: tuple[FastAPI, RecordingStore, Path],
) -> None:
    app, store, path = fastapi_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
        value = (await client.get("/token")).json()
        assert (await client.post("/json", headers={"X-CSRF-Token": value})).json() == 1
        response = await client.post("/form", data={"title": "t", "csrf_token": value})
        assert response.status_code == 200 and response.json() == {"title": "t", "token_seen": 86}
        files = {"f": ("f.txt", b"data", "text/plain")}
        response = await client.post("/form", data={"title": "m", "csrf_token": value}, files=files)
        assert response.status_code == 200 and response.json()["title"] == "m"
        assert (await client.get("/safe")).status_code == 200
        assert (await client.post("/open")).status_code == 200

        def rows() -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as db:
                return sorted(db.execute("SELECT * FROM sessions").fetchall())

        for send in (
            lambda: client.post("/json"),
            lambda: client.post("/json", headers={"X-CSRF-Token": value[::-1]}),
            lambda: client.post("/form", data={"title": "x", "csrf_token": "A" * 86}),
            lambda: client.post("/form", data={"title": "x", "csrf_token": ""}),
        ):
            before, calls = rows(), len(store.calls)
            response = await send()
            assert response.status_code == 403, response.text
            assert response.json()["detail"].startswith("CSRF token ")
            assert [c for c in store.calls[calls:] if c != "load"] == []
            assert rows() == before
