"""The demo in a real browser: headless Chromium (Debian's) driven by Playwright's sync API.

The demo runs as ``sessionware demo`` would, in a subprocess with uvicorn and the SQLite store;
the test signs in, fills the cart, reloads, signs a second browser context in as the same user
and signs it out from the first ("sign out other devices"), signs out, and checks the page and the
cookie jar at each step. A second test posts to the demo from a page served on another loopback
port (the same site, so SameSite=Lax does not stop it): the CSRF token does, and nothing changes.
Plain sync tests: Playwright's sync API refuses to run inside an asyncio loop.
"""

from __future__ import annotations

import html
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from playwright.sync_api import BrowserContext, expect, sync_playwright

from sessionware import ContentSecurity, Key
from sessionware.crypto import unseal
from sessionware.demo import KEY_FILE, SQLITE_FILE
from tests.services import free_port, require_executable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_CLI = "import sys; from sessionware.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The demo's base URL and data directory, served by a subprocess until the test ends."""
    port = free_port()
    log_path = tmp_path / "demo.log"
    data_dir = tmp_path / "data"
    command = [sys.executable, "-c", RUN_CLI, "demo", "--port", str(port), "--data-dir"]
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, str(data_dir)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"the demo exited early:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the demo did not listen in time:\n{log_path.read_text()}")
                time.sleep(0.05)
        log_text = log_path.read_text()
        assert f"SQLite file {data_dir / SQLITE_FILE}" in log_text, log_text
        yield f"http://127.0.0.1:{port}", data_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (never Playwright's download): skipped if absent, failed under CI."""
    require_executable("Chromium", CHROMIUM)
    return CHROMIUM


def test_sign_in_fill_the_cart_reload_and_sign_out(chromium: str, demo: tuple[str, Path]) -> None:
    base, data_dir = demo
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(10_000)
            page = context.new_page()

            def session_cookie(jar: BrowserContext = context) -> dict[str, object] | None:
                found = [c for c in jar.cookies() if c["name"] == "id"]
                return dict(found[0]) if found else None

            key = Key.from_hex((data_dir / KEY_FILE).read_text())

            def session_key(jar: BrowserContext = context) -> str:
                cookie = session_cookie(jar)
                assert cookie is not None
                opened = unseal(ContentSecurity.PRIVATE, [key], "id", unquote(str(cookie["value"])))
                assert opened is not None
                return opened[0]

            # 1. A first visit: the forms' CSRF token starts a session, in an HttpOnly,
            #    SameSite=Lax cookie; each form carries its own masked token.
            page.goto(base + "/")
            expect(page.get_by_text("You are not signed in.")).to_be_visible()
            expect(page.locator("#counter")).to_have_text("0")
            cookie = session_cookie()
            assert cookie is not None
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
            assert cookie["secure"] is False and cookie["path"] == "/"
            assert page.evaluate("document.cookie") == ""  # scripts cannot see it
            tokens = page.locator("input[name=csrf_token]")
            expect(tokens).to_have_count(3)
            assert len({tokens.nth(i).get_attribute("value") for i in range(3)}) == 3
            anonymous_key = session_key()

            # 2. Press the counter: the form's token lets it through; the session is the same.
            page.get_by_role("button", name="Press").click()
            expect(page.locator("#counter")).to_have_text("1")
            assert session_key() == anonymous_key

            # 3. Sign in: a welcome flash, the counter kept, the session key renewed.
            page.get_by_label("Name").fill("ada")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#user")).to_have_text("ada")
            expect(page.get_by_role("status")).to_contain_text("Welcome, ada")
            expect(page.locator("#counter")).to_have_text("1")
            assert session_key() != anonymous_key

            # 4. Add to the cart.
            page.get_by_label("Item").fill("apple")
            page.get_by_label("Quantity").fill("3")
            page.get_by_role("button", name="Add to cart").click()
            expect(page.locator("#cart")).to_contain_text("apple")
            expect(page.locator("#cart td").nth(1)).to_have_text("3")
            expect(page.get_by_role("status")).to_have_text("Added 3 x apple to the cart.")

            # 5. Reload: the cart and the user are still there; the flash was shown once.
            page.reload()
            expect(page.locator("#user")).to_have_text("ada")
            expect(page.locator("#cart td").nth(1)).to_have_text("3")
            expect(page.get_by_role("status")).to_have_count(0)

            # 6. The session page shows the entries and the cookie's attributes.
            page.get_by_role("link", name="What the session holds").click()
            expect(page.locator("#entries")).to_contain_text('"name": "apple"')
            expect(page.locator("#entries")).to_contain_text('"name": "ada"')
            expect(page.locator("#attributes")).to_have_text("HttpOnly; SameSite=Lax; Path=/")

            # 7. A second browser signs in as ada too. The first lists both sessions (no keys
            #    shown), signs the other device out, and stays signed in itself.
            second = browser.new_context()
            second.set_default_timeout(10_000)
            other = second.new_page()
            other.goto(base + "/")
            other.get_by_label("Name").fill("ada")
            other.get_by_role("button", name="Sign in").click()
            expect(other.locator("#user")).to_have_text("ada")
            page.get_by_role("link", name="Your active sessions").click()
            expect(page.locator("#session-count")).to_have_text("2 active sessions")
            rows = page.locator("#sessions tr.session")
            expect(rows).to_have_count(2)
            expect(rows.filter(has_text="this device")).to_have_count(1)
            expect(rows.first).to_contain_text("Chrome")
            html = page.content()
            assert session_key() not in html and session_key(second) not in html
            page.get_by_role("button", name="Sign out other devices").click()
            expect(page.get_by_role("status")).to_have_text(
                "Signed out 1 other device; this one stays signed in."
            )
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("this device")
            other.reload()
            expect(other.get_by_text("You are not signed in.")).to_be_visible()
            expect(other.locator("#user")).to_have_count(0)
            page.get_by_role("link", name="Home").click()
            expect(page.locator("#user")).to_have_text("ada")
            expect(page.locator("#cart td").nth(1)).to_have_text("3")
            second.close()

            # 8. Sign out: the session is purged; the page that follows starts a new one for
            #    its forms' CSRF token, under a new key.
            page.get_by_role("link", name="Home").click()
            signed_in_key = session_key()
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("status")).to_contain_text("the session was purged")
            expect(page.get_by_text("You are not signed in.")).to_be_visible()
            expect(page.locator("#counter")).to_have_text("0")
            expect(page.locator("#cart")).to_have_text("The cart is empty.")
            assert session_key() not in (signed_in_key, anonymous_key)
        finally:
            browser.close()


def serve_pages(pages: dict[str, str]) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``pages`` (path to HTML) on a free loopback port, in a thread; the server and URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def attackers_own_token(base: str) -> str:
    """A valid token, of a session the attacker starts on the demo with their own client."""
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        found = re.search(r'name=csrf_token value="([^"]+)"', response.read().decode())
    assert found is not None
    return found.group(1)


def store_rows(data_dir: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / SQLITE_FILE) as db:
        return sorted(db.execute("SELECT * FROM sessions").fetchall())


def test_a_cross_site_form_post_is_refused_and_changes_nothing(
    chromium: str, demo: tuple[str, Path]
) -> None:
    base, data_dir = demo
    stolen = attackers_own_token(base)

    def auto_post(path: str, fields: dict[str, str]) -> str:
        inputs = "".join(
            f'<input type=hidden name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in fields.items()
        )
        return (
            f'<!doctype html><title>You won!</title><form method=post action="{base}{path}">'
            f"{inputs}</form><script>document.forms[0].submit()</script>"
        )

    attack, evil = serve_pages(
        {
            "/press": auto_post("/counter", {}),
            "/press-with-a-token": auto_post("/counter", {"csrf_token": stolen}),
            "/sign-out": auto_post("/logout", {"csrf_token": "A" * 86}),
        }
    )
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            try:
                context = browser.new_context()
                context.set_default_timeout(10_000)
                page = context.new_page()

                # The victim signs in and presses the counter with the demo's own forms.
                page.goto(base + "/")
                page.get_by_label("Name").fill("ada")
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("#user")).to_have_text("ada")
                page.get_by_role("button", name="Press").click()
                expect(page.locator("#counter")).to_have_text("1")
                jar, rows = context.cookies(), store_rows(data_dir)

                # Pages on another port auto-post to the demo: the browser sends the session
                # cookie along (same site), and each post is refused without a session write.
                for path, reason in (
                    ("/press", "CSRF token missing."),
                    ("/press-with-a-token", "CSRF token incorrect."),
                    ("/sign-out", "CSRF token incorrect."),
                ):
                    target = base + ("/logout" if path == "/sign-out" else "/counter")
                    with page.expect_response(target) as refused:
                        page.goto(evil + path)
                    response = refused.value
                    assert response.status == 403
                    assert "cookie" in response.request.all_headers()
                    assert response.headers.get("set-cookie") is None
                    expect(page.locator("body")).to_have_text(reason)
                    assert context.cookies() == jar
                    assert store_rows(data_dir) == rows

                # Back on the demo: still signed in, the counter untouched, its forms working.
                page.goto(base + "/")
                expect(page.locator("#user")).to_have_text("ada")
                expect(page.locator("#counter")).to_have_text("1")
                page.get_by_role("button", name="Press").click()
                expect(page.locator("#counter")).to_have_text("2")
            finally:
                browser.close()
    finally:
        attack.shutdown()
        attack.server_close()
