"""The demo app in-process (its HTML over raw ASGI), its key handling and its store choice."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest

from sessionware import Key, SessionAdmin, csrf_token
from sessionware.csrf import CSRF_KEY
from sessionware.demo import KEY_FILE, create_app, default_data_dir, load_key
from sessionware.demo import _open_store as open_store
from sessionware.stores import CookieSessionStore, MemorySessionStore
from sessionware.testing import read_session
from tests.client import Response, request
from tests.integration.helpers import post_form


def live_sessions(store: MemorySessionStore) -> int:
    """How many records of the memory store are live sessions (not tombstones)."""
    return sum(1 for _, data, _ in store._records.values() if not data.startswith(b'{"v":0,'))


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="?{element_id}"?>(.*?)</', html, re.S)
    assert match is not None, f"no #{element_id} in the page"
    return match.group(1)


def with_agent(app: Any, agent: str) -> Any:
    """``app`` seen from a browser whose User-Agent is ``agent`` (one "device")."""

    async def device(scope: Any, receive: Any, send: Any) -> None:
        headers = [*scope["headers"], (b"user-agent", agent.encode("latin-1"))]
        await app({**scope, "headers": headers}, receive, send)

    return device


class Device:
    """One browser: a User-Agent and a cookie jar holding the demo's ``id`` cookie.

    Its form posts carry the session's CSRF token, as the demo's forms do: minted from the
    secret in the store (so no page view consumes a flash), after a visit to the home page
    when the session has no secret yet (a new visitor, or just after signing in).
    """

    def __init__(self, app: Any, agent: str = "Browser/1.0") -> None:
        self.raw = app
        self.app = with_agent(app, agent)
        self.jar: dict[str, str] = {}

    async def token(self) -> str:
        state = await read_session(self.raw, self.jar["id"]) if "id" in self.jar else {}
        if CSRF_KEY not in state:
            page = await self.get("/")
            assert 'name=csrf_token value="' in page.text
            state = await read_session(self.raw, self.jar["id"])
        return csrf_token(dict(state))

    def keep(self, r: Response) -> Response:
        cookie = r.cookie()
        if cookie is not None:
            if cookie.is_removal:
                self.jar.pop(cookie.name, None)
            else:
                self.jar[cookie.name] = cookie.value
        return r

    async def get(self, path: str) -> Response:
        return self.keep(await request(self.app, "GET", path, cookies=self.jar))

    async def post(self, path: str, fields: dict[str, str] | None = None) -> Response:
        fields = {"csrf_token": await self.token(), **(fields or {})}
        return self.keep(await post_form(self.app, path, fields, cookies=self.jar))


async def test_a_visit_from_sign_in_to_sign_out() -> None:
    store = MemorySessionStore()
    app = create_app(store=store, key=Key.generate(), store_label="memory")
    browser = Device(app)
    page = await browser.get("/")
    assert "You are not signed in" in page.text
    anonymous = page.cookie()  # the forms' CSRF token starts a session holding its secret
    assert anonymous is not None and "secure" not in anonymous.attrs
    assert "httponly" in anonymous.attrs and anonymous.attrs["samesite"] == "Lax"
    assert list(await read_session(app, anonymous.value)) == [CSRF_KEY]

    r = await browser.post("/cart", {"item": "apple", "qty": "2"})
    assert (r.status, r.header("location")) == (303, "/")

    r = await browser.post("/login", {"username": "ada"})
    signed_in = r.cookie()
    assert signed_in is not None
    assert await read_session(app, anonymous.value) == {}  # renewed: the old key is gone
    state = await read_session(app, signed_in.value)
    assert state["user"]["name"] == "ada" and state["cart"]["items"] == [
        {"name": "apple", "qty": 2}
    ]
    assert CSRF_KEY not in state  # renewed: the next page's forms get a new secret

    page = await browser.get("/")
    assert page.text.count('class="flash') == 2  # the cart note and the welcome, once
    r = await browser.post("/cart", {"item": "apple", "qty": "3"})
    assert r.cookie() is not None  # the in-place change of the nested cart was saved
    await browser.post("/counter")
    page = await browser.get("/")
    assert text_of(page.text, "user") == "ada" and text_of(page.text, "counter") == "1"
    assert "<td>apple</td><td>5</td>" in page.text
    assert page.text.count('class="flash') == 1
    assert 'class="flash' not in (await browser.get("/")).text

    r = await browser.post("/logout")
    removal = r.cookie()
    assert removal is not None and removal.is_removal and live_sessions(store) == 0
    assert r.header("location") == "/?signed_out=1"
    page = await browser.get("/?signed_out=1")
    assert "the session was purged" in page.text and "You are not signed in" in page.text
    assert list(await read_session(app, browser.jar["id"])) == [CSRF_KEY]  # a new one


async def test_a_form_post_without_the_token_changes_nothing() -> None:
    store = MemorySessionStore()
    app = create_app(store=store, key=Key.generate())
    browser = Device(app)
    await browser.post("/counter")
    before = await read_session(app, browser.jar["id"])
    for fields in ({}, {"csrf_token": "forged"}, {"csrf_token": await Device(app).token()}):
        r = await post_form(app, "/counter", fields, cookies=browser.jar)
        assert r.status == 403 and r.cookie() is None
        r = await post_form(app, "/logout", fields, cookies=browser.jar)
        assert r.status == 403 and r.cookie() is None
    assert await read_session(app, browser.jar["id"]) == before
    assert text_of((await browser.get("/")).text, "counter") == "1"


async def test_everything_the_user_typed_is_escaped() -> None:
    app = create_app(store=MemorySessionStore(), key=Key.generate())
    r = await Device(app).post("/login", {"username": '<script>alert("x")</script>'})
    cookie = r.cookie()
    assert cookie is not None
    for path in ("/", "/session"):
        page = await request(app, "GET", path, cookies={"id": cookie.value})
        assert "<script>" not in page.text and "&lt;script&gt;" in page.text


async def test_bad_form_input_is_refused_with_a_flash() -> None:
    app = create_app(store=MemorySessionStore(), key=Key.generate())
    browser = Device(app)
    await browser.post("/cart", {"item": "pear", "qty": "1000"})
    state = dict(await read_session(app, browser.jar["id"]))
    assert state.pop(CSRF_KEY)
    assert state == {"_flashes": [["error", "Give the item a name and a quantity from 1 to 99."]]}
    r = await Device(app).post("/login", {"username": "  "})
    assert r.status == 303 and r.cookie() is not None


async def test_the_session_page_shows_entries_and_cookie_attributes() -> None:
    app = create_app(store=MemorySessionStore(), key=Key.generate(), store_label="memory store")
    page = await request(app, "GET", "/session")
    assert "sent no session cookie" in page.text
    browser = Device(app)
    await browser.post("/counter")
    page = await browser.get("/session")
    entries = text_of(page.text, "entries")
    assert "&quot;counter&quot;: 1" in entries
    secret = (await read_session(app, browser.jar["id"]))[CSRF_KEY]
    assert secret not in page.text and "(the CSRF secret, not shown)" in entries
    assert text_of(page.text, "attributes") == "HttpOnly; SameSite=Lax; Path=/"
    assert "without</em> Secure" in page.text and "memory store" in page.text


def test_the_key_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    env_key = Key.generate()
    hex_key = (env_key.signing_key + env_key.encryption_key).hex()
    assert load_key(tmp_path, {"SESSIONWARE_KEY": hex_key}) == (env_key, "from SESSIONWARE_KEY")
    with pytest.raises(ValueError, match=r"SESSIONWARE_KEY: Key\.from_hex needs exactly 128"):
        load_key(tmp_path, {"SESSIONWARE_KEY": "abc"})
    first, source = load_key(tmp_path, {})
    assert source == f"new, saved in {tmp_path / KEY_FILE}"
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert load_key(tmp_path, {}) == (first, f"from {tmp_path / KEY_FILE}")
    assert load_key(None, {})[1].startswith("generated for this run")
    (tmp_path / KEY_FILE).write_text("not hex")
    with pytest.raises(ValueError, match="delete the file"):
        load_key(tmp_path, {})


async def test_store_choices(tmp_path: Path) -> None:
    store, label, durable = open_store("sqlite", tmp_path)
    assert label == f"SQLite file {tmp_path / 'sessions.db'}" and durable
    await store.aclose()  # type: ignore[attr-defined]
    assert open_store("memory", tmp_path)[2] is False
    redis, label, _ = open_store("redis://user:pw@127.0.0.1:6379/0", tmp_path)
    assert label == "Redis at 127.0.0.1:6379/0"  # no password in the log
    await redis.aclose()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="use sqlite, memory or a redis:// URL"):
        open_store("mongodb://x", tmp_path)
    assert default_data_dir().name.startswith("sessionware-demo-")


async def test_two_devices_list_their_sessions_and_one_signs_out_the_other() -> None:
    store = MemorySessionStore()
    app = create_app(store=store, key=Key.generate())
    laptop, phone, other = Device(app, "Laptop/1.0"), Device(app, "Phone/2.0"), Device(app, "X/1")
    page = await laptop.get("/")
    assert 'href="/sessions"' not in page.text  # the link is for signed-in users only
    for device in (laptop, phone):
        r = await device.post("/login", {"username": "ada"})
        assert (r.status, r.header("location")) == (303, "/")
    await other.post("/login", {"username": "bob"})
    assert 'href="/sessions"' in (await laptop.get("/")).text

    page = await laptop.get("/sessions")
    assert page.status == 200 and text_of(page.text, "session-count") == "2 active sessions"
    rows = re.findall(r'<tr class="session[^"]*">.*?</tr>', page.text, re.S)
    assert len(rows) == 2 and page.text.count("this device") == 1
    [current] = [row for row in rows if "this device" in row]
    assert "Laptop/1.0" in current and any("Phone/2.0" in row for row in rows)
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", current)) == 3
    infos = await SessionAdmin(store).sessions_for("ada")
    assert len(infos) == 2
    for jar in (laptop.jar, phone.jar):  # no cookie (nor the key inside it) reaches the page
        assert jar["id"] not in page.text

    r = await laptop.post("/sessions/sign-out-others")
    assert (r.status, r.header("location")) == (303, "/sessions")
    page = await laptop.get("/sessions")
    assert "Signed out 1 other device; this one stays signed in." in page.text
    assert text_of(page.text, "session-count") == "1 active session"
    assert "this device" in page.text and "Phone/2.0" not in page.text
    assert text_of((await laptop.get("/")).text, "user") == "ada"
    phone_home = (await phone.get("/")).text
    assert "You are not signed in" in phone_home
    assert "You were signed out from another device." in phone_home
    assert "signed out from another device" not in (await laptop.get("/")).text
    assert "You are not signed in" in (await phone.get("/sessions")).text
    assert (
        len(await SessionAdmin(store).sessions_for("bob")) == 1
    )  # another user's session is untouched

    await laptop.post("/sessions/sign-out-others")
    assert "No other device was signed in." in (await laptop.get("/sessions")).text
    await laptop.post("/logout")
    assert await SessionAdmin(store).sessions_for("ada") == []


async def test_the_sessions_page_escapes_the_user_and_the_user_agent() -> None:
    app = create_app(store=MemorySessionStore(), key=Key.generate())
    device = Device(app, '<img src=x onerror="alert(1)">')
    await device.post("/login", {"username": '<script>alert("x")</script>'})
    page = await device.get("/sessions")
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    assert "<img" not in page.text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page.text


async def test_the_sessions_page_without_a_user_index_says_so() -> None:
    device = Device(create_app(store=CookieSessionStore(), key=Key.generate()), "Laptop/1.0")
    await device.post("/login", {"username": "ada"})
    page = await device.get("/sessions")
    assert page.status == 200
    assert "keeps no list of a user&#x27;s sessions" in text_of(page.text, "not-supported")
    assert "Sign out other devices" not in page.text
    r = await device.post("/sessions/sign-out-others")
    assert (r.status, r.header("location")) == (303, "/sessions")
    page = await device.get("/sessions")
    assert "Not done: this store cannot sign out other devices." in page.text
    assert text_of((await device.get("/")).text, "user") == "ada"


async def test_the_sessions_page_when_not_signed_in() -> None:
    device = Device(create_app(store=MemorySessionStore(), key=Key.generate()), "Laptop/1.0")
    page = await device.get("/sessions")
    assert page.status == 200 and "You are not signed in." in page.text
    assert 'id="sessions"' not in page.text
    r = await device.post("/sessions/sign-out-others")
    assert (r.status, r.header("location")) == (303, "/")
    assert "Sign in first." in (await device.get("/")).text


# -- the edges a first visit hits (issue 16 item 14) -----------------------------------------


async def test_an_unknown_page_is_a_styled_404_with_a_way_home() -> None:
    app = create_app(store=MemorySessionStore(), key=Key.generate())
    r = await request(app, "GET", "/no/such/page")
    assert r.status == 404 and r.header("content-type") == "text/html; charset=utf-8"
    assert "<style>" in r.text and "<h1>Page not found</h1>" in r.text
    assert '<a href="/">Back to the demo</a>' in r.text and text_of(r.text, "not-found")
    assert r.cookie() is None  # nothing stored for a stray request
    r = await request(app, "GET", "/login")  # a POST-only page
    assert r.status == 405 and "<h1>Method not allowed</h1>" in r.text and "<style>" in r.text


async def test_the_demo_has_a_favicon() -> None:
    app = create_app(store=MemorySessionStore(), key=Key.generate())
    assert '<link rel=icon href="/favicon.svg"' in (await request(app, "GET", "/")).text
    for path in ("/favicon.svg", "/favicon.ico"):
        r = await request(app, "GET", path)
        assert r.status == 200 and r.header("content-type") == "image/svg+xml"
        assert r.text.startswith("<svg ") and r.cookie() is None


def test_an_unreachable_redis_fails_at_startup(tmp_path: Path) -> None:
    """A closed port: a message and exit 1 before serving, not empty 503s on every page."""
    import subprocess
    import sys

    from tests.services import free_port

    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sessionware.cli import main; sys.exit(main())",
            "demo",
            "--store",
            f"redis://user:hunter2@127.0.0.1:{port}/0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"sessionware demo: cannot reach Redis at 127.0.0.1:{port}/0" in result.stderr
    assert "--store sqlite" in result.stderr and "hunter2" not in result.stderr
    assert "sessionware demo on http://" not in result.stderr  # it never started serving
