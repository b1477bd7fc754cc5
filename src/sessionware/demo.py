"""The demo behind ``sessionware demo``: a small server-rendered Starlette app on plain HTTP.

It shows each thing a session does: signing in (the key is renewed, the state kept, the session
bound to the user), a counter, a cart of nested data changed in place, flash messages across a
redirect, signing out (purge), a page with what the session holds and the attributes its cookie is
sent with, and a page listing the user's active sessions (never their keys) with "sign out other
devices". HTML forms only, no JavaScript; every value shown is HTML-escaped, and every form
carries the session's CSRF token (``CSRFMiddleware`` refuses a POST without it).

Sessions go to SQLite by default, in a file in ``data_dir``; the key comes from
``SESSIONWARE_KEY`` (128 hex characters) or from a key file kept beside the database, so a
restart keeps everyone signed in. Needs Starlette and uvicorn: ``pip install 'sessionware[demo]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import html
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the demo needs Starlette and uvicorn: pip install 'sessionware[demo]'"
    ) from exc

from sessionware.admin import get_admin
from sessionware.config import CookieSettings
from sessionware.cookies import session_cookie
from sessionware.crypto import Key
from sessionware.csrf import CSRF_KEY, CSRFMiddleware, csrf_token
from sessionware.flash import flash, get_flashed_messages
from sessionware.middleware import SessionMiddleware, get_session
from sessionware.session import Session
from sessionware.stores import (
    NotSupportedError,
    SessionInfo,
    SessionStore,
)
from sessionware.stores.memory import MemorySessionStore

__all__ = ["KEY_FILE", "SQLITE_FILE", "create_app", "default_data_dir", "load_key", "serve"]

KEY_FILE = "demo-key.hex"
SQLITE_FILE = "sessions.db"
_MAX_FORM = 16 * 1024
_MAX_TEXT = 40

# Plain http://127.0.0.1: a Secure cookie would be dropped by browsers that do not treat that
# origin as secure (Safari; others for 0.0.0.0 or a LAN address), so the demo alone turns it off.
COOKIE = CookieSettings(name="id", secure=False, http_only=True, same_site="lax", path="/")

_WHY_NOT_SECURE = (
    "The cookie is sent <em>without</em> Secure because this demo runs on plain HTTP. Secure"
    " cookies are only kept over HTTPS (Chromium and Firefox make an exception for localhost,"
    " Safari does not), so the demo alone sets <code>cookie_secure=False</code>. Never do that"
    " in production: sessionware's default is Secure."
)

_NO_INDEX = (
    "This store keeps no list of a user's sessions, so the demo cannot show your other devices"
    " or sign them out. The cookie store is like that: each session lives only in its browser's"
    " cookie, and the server cannot end it. Run the demo with a server-side store (SQLite, memory"
    " or Redis) to try this."
)

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem }
nav a { margin-right: 1rem } .flash { padding: .5rem 1rem; border-radius: 4px; margin: .5rem 0 }
.info { background: #e7f1ff } .error { background: #fde8e8 } .success { background: #e6f6e6 }
pre { background: #f4f4f4; padding: 1rem; overflow-x: auto } form { margin: .5rem 0 }
table { border-collapse: collapse } td, th { border: 1px solid #ccc; padding: .25rem .5rem }
"""


# A cookie on a blue tile, as SVG: browsers ask for /favicon.ico on every first visit.
_FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#1f5fbf"/>'
    '<circle cx="16" cy="16" r="10" fill="#e0b064"/>'
    '<circle cx="12" cy="13" r="1.8" fill="#6b3e1e"/><circle cx="19" cy="12" r="1.5" fill="#6b3e1e"/>'
    '<circle cx="14" cy="20" r="1.6" fill="#6b3e1e"/><circle cx="20" cy="19" r="1.8" fill="#6b3e1e"/>'
    "</svg>"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(
    title: str,
    body: str,
    flashes: list[tuple[str, str]],
    *,
    signed_in: bool = False,
    status_code: int = 200,
) -> HTMLResponse:
    sessions_link = '<a href="/sessions">Your active sessions</a>' if signed_in else ""
    notes = "".join(
        f'<p class="flash {_e(category)}" role="status">{_e(message)}</p>'
        for category, message in flashes
    )
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)} - sessionware demo</title>"
        f'<link rel=icon href="/favicon.svg" type="image/svg+xml"><style>{_STYLE}</style>'
        "</head><body>"
        f'<nav><a href="/">Home</a><a href="/session">What the session holds</a>{sessions_link}'
        "</nav>"
        f"<h1>{_e(title)}</h1>{notes}{body}</body></html>",
        status_code=status_code,
    )


async def favicon(request: Request) -> Response:
    """The demo's icon (served for /favicon.ico too, which browsers ask for unprompted)."""
    return Response(
        _FAVICON,
        media_type="image/svg+xml",
        headers={"cache-control": "public, max-age=86400"},
    )


async def not_found(request: Request, exc: Exception) -> Response:
    """A page in the demo's style for an unknown path or method, with a way back home."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        title, text = "Method not allowed", "This page does not take that kind of request."
    else:
        title, text = "Page not found", "There is no page at this address."
    body = f'<p id="not-found">{_e(text)} <a href="/">Back to the demo</a>.</p>'
    return _page(title, body, [], status_code=status)


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value of each field)."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=20)
    return {name: values[0].strip() for name, values in fields.items()}


def _csrf(session: Session) -> str:
    """The hidden field that lets a form through ``CSRFMiddleware``."""
    return f'<input type=hidden name=csrf_token value="{csrf_token(session)}">'


def _user(session: Session) -> str | None:
    user = session.get("user")
    return user.get("name") if isinstance(user, dict) else None


def _cart_items(session: Session) -> list[dict[str, Any]]:
    cart = session.get("cart")
    items = cart.get("items") if isinstance(cart, dict) else None
    return [item for item in items or () if isinstance(item, dict)]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _when(seconds: float | None) -> str:
    """Unix seconds as ``2025-01-31 12:00:00 UTC`` (``unknown`` when the record has no time)."""
    if seconds is None:
        return "unknown"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _see_other(path: str = "/") -> Response:
    return RedirectResponse(path, status_code=303)


async def home(request: Request) -> Response:
    session = get_session(request)
    flashes = get_flashed_messages(session, with_categories=True)
    if request.query_params.get("signed_out"):
        flashes.append(("info", "You are signed out: the session was purged."))
    elif session.ended_elsewhere:
        flashes.append(("info", "You were signed out from another device."))
    user = _user(session)
    if user is None:
        who = (
            "<p>You are not signed in.</p>"
            f'<form method=post action="/login">{_csrf(session)}<label>Name '
            f"<input name=username required maxlength={_MAX_TEXT} autocomplete=off></label> "
            "<button>Sign in</button></form>"
        )
    else:
        who = (
            f'<p>Signed in as <strong id="user">{_e(user)}</strong>.</p>'
            f'<form method=post action="/logout">{_csrf(session)}<button>Sign out</button></form>'
        )
    counter = session.get("counter", 0)
    rows = "".join(
        f"<tr><td>{_e(item.get('name'))}</td><td>{_e(item.get('qty'))}</td></tr>"
        for item in _cart_items(session)
    )
    cart = (
        f'<table id="cart"><tr><th>Item</th><th>Quantity</th></tr>{rows}</table>'
        if rows
        else '<p id="cart">The cart is empty.</p>'
    )
    body = (
        f"{who}<h2>Counter</h2><p>You pressed the button <strong id=counter>{_e(counter)}</strong>"
        f' times.</p><form method=post action="/counter">{_csrf(session)}<button>Press</button>'
        f"</form><h2>Cart</h2>{cart}"
        f'<form method=post action="/cart">{_csrf(session)}<label>Item '
        f"<input name=item required maxlength={_MAX_TEXT} autocomplete=off></label> "
        "<label>Quantity <input name=qty type=number min=1 max=99 value=1></label> "
        "<button>Add to cart</button></form>"
    )
    return _page("Session demo", body, flashes, signed_in=user is not None)


async def login(request: Request) -> Response:
    session = get_session(request)
    name = (await _form(request)).get("username", "")[:_MAX_TEXT]
    if not name:
        flash(session, "Type a name to sign in.", "error")
        return _see_other()
    session["user"] = {"name": name, "since": _now()}
    session.bind_user(name)  # the store files the session under the user: see /sessions
    session.renew()  # a new key for the signed-in session: no session fixation
    flash(session, f"Welcome, {name}. The session key was renewed; your cart was kept.", "success")
    return _see_other()


async def logout(request: Request) -> Response:
    get_session(request).purge()  # the record is deleted and the cookie removed
    return _see_other("/?signed_out=1")


async def counter(request: Request) -> Response:
    session = get_session(request)
    session["counter"] = session.get("counter", 0) + 1
    return _see_other()


async def add_to_cart(request: Request) -> Response:
    session = get_session(request)
    form = await _form(request)
    name = form.get("item", "")[:_MAX_TEXT]
    try:
        qty = int(form.get("qty") or "1")
    except ValueError:
        qty = 0
    if not name or not 1 <= qty <= 99:
        flash(session, "Give the item a name and a quantity from 1 to 99.", "error")
        return _see_other()
    cart = session.setdefault("cart", {"items": []})
    items = cart.setdefault("items", [])
    for item in items:  # changed in place: the session notices and saves it
        if item.get("name") == name:
            item["qty"] = min(99, item.get("qty", 0) + qty)
            break
    else:
        items.append({"name": name, "qty": qty})
    cart["updated"] = _now()
    flash(session, f"Added {qty} x {name} to the cart.", "success")
    return _see_other()


def _attributes() -> str:
    """The session cookie's attributes as the middleware sends them: ``HttpOnly; ...``."""
    return session_cookie(COOKIE, "x", None).split("; ", 1)[1]


def _inspector(store_label: str) -> Callable[[Request], Any]:
    async def show_session(request: Request) -> Response:
        session = get_session(request)
        flashes = get_flashed_messages(session, with_categories=True)
        entries = dict(session.entries())
        if CSRF_KEY in entries:  # the secret stays out of pages: forms get masked tokens
            entries[CSRF_KEY] = "(the CSRF secret, not shown)"
        held = json.dumps(entries, indent=2, ensure_ascii=False, sort_keys=True)
        sent = request.cookies.get(COOKIE.name)
        cookie = (
            f"<p>Your browser sent the cookie <code>{_e(COOKIE.name)}</code>: {len(sent)}"
            " characters of AES-256-GCM ciphertext (private content security), holding only"
            " the session key; the state itself is in the store.</p>"
            if sent
            else "<p>Your browser sent no session cookie: nothing has been stored yet.</p>"
        )
        attributes = _attributes()
        body = (
            f'<h2>Entries</h2><pre id="entries">{_e(held)}</pre>'
            f"<h2>Cookie</h2>{cookie}<p>It is set with these attributes:</p>"
            f'<pre id="attributes">{_e(attributes)}</pre>'
            "<ul><li>HttpOnly: page scripts cannot read it.</li>"
            "<li>SameSite=Lax: other sites cannot make your browser POST with it.</li>"
            "<li>Pages of the same site can (another port of this host, a sibling"
            " subdomain), so every form also carries a CSRF token, which such a page cannot"
            " read.</li>"
            "<li>No Max-Age: a browser-session cookie, gone when the browser closes; the state"
            " lives one day from its last change.</li></ul>"
            f'<p id="why-not-secure">{_WHY_NOT_SECURE}</p>'
            f"<h2>Store</h2><p>{_e(store_label)}</p>"
        )
        return _page("What the session holds", body, flashes, signed_in=_user(session) is not None)

    return show_session


def _session_row(info: SessionInfo, current: str | None) -> str:
    """One session as a table row: times and user agent, never its key."""
    this = info.id == current
    marker = "<strong>this device</strong>" if this else ""
    return (
        f'<tr class="session{" this-device" if this else ""}">'
        f"<td>{_e(info.user_agent or 'unknown browser')}</td><td>{_e(_when(info.created))}</td>"
        f"<td>{_e(_when(info.last_seen))}</td><td>{_e(_when(info.expires))}</td>"
        f"<td>{marker}</td></tr>"
    )


async def _show_sessions(request: Request) -> Response:
    session = get_session(request)
    flashes = get_flashed_messages(session, with_categories=True)
    title, name, user = "Your active sessions", _user(session), session.user_id
    if user is None:
        body = (
            "<p>This session was signed in before the demo tied sessions to users: sign out"
            " and sign in again to see them.</p>"
            if name is not None
            else '<p>You are not signed in. <a href="/">Sign in</a> to see your sessions.</p>'
        )
        return _page(title, body, flashes, signed_in=name is not None)
    try:
        infos = await get_admin(request).sessions_for(user)
    except NotSupportedError as exc:
        body = (
            f'<p id="not-supported">{_e(_NO_INDEX)}</p>'
            f"<p>The store says: <code>{_e(exc)}</code></p>"
        )
        return _page(title, body, flashes, signed_in=True)
    rows = "".join(_session_row(info, session.id) for info in infos)
    count = f"{len(infos)} active session{'' if len(infos) == 1 else 's'}"
    body = (
        f'<p>Signed in as <strong id="user">{_e(user)}</strong>: '
        f'<span id="session-count">{_e(count)}</span>, oldest first. Anyone who signs in'
        " with this name shares them (the demo has no passwords).</p>"
        '<table id="sessions"><tr><th>Browser</th><th>Started</th>'
        "<th>Last activity</th><th>Expires</th><th></th></tr>"
        f"{rows}</table>"
        "<p>Last activity is the last time the session changed; the session keys stay in"
        " the store and are never shown.</p>"
        f'<form method=post action="/sessions/sign-out-others">{_csrf(session)}'
        "<button>Sign out other devices</button></form>"
    )
    return _page(title, body, flashes, signed_in=True)


async def _sign_out_others(request: Request) -> Response:
    session = get_session(request)
    user = session.user_id
    if user is None:
        flash(session, "Sign in first.", "error")
        return _see_other()
    try:
        if session.id is None:  # the cookie store: the session is not kept in a store
            raise NotSupportedError("this session is not kept in the store")
        ended = await get_admin(request).end_all_for(user, keep=session)
    except NotSupportedError:
        flash(session, "Not done: this store cannot sign out other devices.", "error")
        return _see_other("/sessions")
    if ended:
        devices = f"{ended} other device{'' if ended == 1 else 's'}"
        flash(session, f"Signed out {devices}; this one stays signed in.", "success")
    else:
        flash(session, "No other device was signed in.", "info")
    return _see_other("/sessions")


def create_app(*, store: SessionStore, key: Key, store_label: str = "") -> Starlette:
    """The demo app with ``SessionMiddleware`` over ``store``; ``store_label`` is shown to users."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        aclose = getattr(store, "aclose", None)
        if aclose is not None:
            await aclose()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/counter", counter, methods=["POST"]),
            Route("/cart", add_to_cart, methods=["POST"]),
            Route("/session", _inspector(store_label or type(store).__name__)),
            Route("/sessions", _show_sessions),
            Route("/sessions/sign-out-others", _sign_out_others, methods=["POST"]),
            Route("/favicon.svg", favicon),
            Route("/favicon.ico", favicon),
        ],
        exception_handlers={404: not_found, 405: not_found},
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                key=key,
                cookie_name=COOKIE.name,
                cookie_secure=COOKIE.secure,
                cookie_http_only=COOKIE.http_only,
                cookie_same_site=COOKIE.same_site,
                cookie_path=COOKIE.path,
            ),
            Middleware(CSRFMiddleware),
        ],
        lifespan=lifespan,
    )


def default_data_dir() -> Path:
    """``<temp>/sessionware-demo-<user>``: one per user, kept across restarts."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment
        user = "user"
    return Path(tempfile.gettempdir()) / f"sessionware-demo-{user}"


def load_key(data_dir: Path | None, environ: Mapping[str, str] = os.environ) -> tuple[Key, str]:
    """The key and where it came from: ``SESSIONWARE_KEY``, the key file, or a new key.

    A new key is written to ``data_dir/demo-key.hex`` (readable by its owner only) when there is
    a ``data_dir``, so sessions outlive a restart. Raises ``ValueError`` for a malformed key.
    """
    from_env = environ.get("SESSIONWARE_KEY")
    if from_env:
        try:
            return Key.from_hex(from_env), "from SESSIONWARE_KEY"
        except ValueError as exc:
            raise ValueError(f"SESSIONWARE_KEY: {exc}") from None
    if data_dir is None:
        return Key.generate(), "generated for this run (set SESSIONWARE_KEY to keep one)"
    path = data_dir / KEY_FILE
    if path.exists():
        try:
            return Key.from_hex(path.read_text()), f"from {path}"
        except ValueError as exc:
            raise ValueError(f"{path}: {exc} (delete the file to get a new key)") from None
    key = Key.generate()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write((key.signing_key + key.encryption_key).hex() + "\n")
    return key, f"new, saved in {path}"


def _open_store(spec: str, data_dir: Path) -> tuple[SessionStore, str, bool]:
    """The store for ``--store``, a description of it, and whether its sessions survive a restart."""
    if spec == "memory":
        return MemorySessionStore(), "in memory: sessions end when the demo stops", False
    if spec == "sqlite":
        from sessionware.stores.sqlite import SQLiteSessionStore

        path = data_dir / SQLITE_FILE
        return SQLiteSessionStore(path), f"SQLite file {path}", True
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from sessionware.stores.redis import RedisSessionStore

        return RedisSessionStore.from_url(spec), f"Redis at {spec.split('@')[-1]}", True
    raise ValueError(f"unknown store {spec!r}: use sqlite, memory or a redis:// URL")


def _check_reachable(spec: str) -> None:
    """Ping a Redis ``--store`` once before serving, so a server that is not there fails now with
    a message, not as an empty 503 on every page later. ``ConnectionError`` saying what to do."""
    if not spec.startswith(("redis://", "rediss://", "unix://")):
        return
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async def ping() -> None:
        client = Redis.from_url(spec, socket_connect_timeout=5, socket_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError) as exc:
        where = spec.split("@")[-1]  # never the password
        raise ConnectionError(
            f"cannot reach Redis at {where} ({type(exc).__name__}: {exc}); start Redis there,"
            " fix the URL, or run the demo with --store sqlite (the default) or --store memory"
        ) from None


def serve(
    *,
    store: str = "sqlite",
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Run the demo with uvicorn until interrupted; return the exit status."""
    try:
        import uvicorn
    except ImportError:
        print("the demo needs uvicorn: pip install 'sessionware[demo]'", file=sys.stderr)
        return 1
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        if store != "memory":
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        sessions, label, durable = _open_store(store, directory)
        _check_reachable(store)
        key, key_source = load_key(directory if durable else None)
    except (OSError, ValueError, ImportError, ConnectionError) as exc:
        print(f"sessionware demo: {exc}", file=sys.stderr)
        return 1
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"sessionware demo on http://{shown_host}:{port}/\n"
        f"  store:  {label}\n"
        f"  key:    {key_source}\n"
        f"  cookie: {COOKIE.name}=<sealed>; {_attributes()}\n"
        "          (not Secure: plain HTTP; the page /session says why)",
        file=sys.stderr,
        flush=True,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"  warning: listening on {host} over plain HTTP; the cookie is not Secure",
            file=sys.stderr,
        )
    app = create_app(store=sessions, key=key, store_label=label)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
