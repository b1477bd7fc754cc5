"""Test helpers: seed and read an application's sessions without going through its login flow.

The counterpart of Flask's ``session_transaction`` and Litestar's ``set_session_data``::

    name, value = await make_session_cookie(app, {"user_id": 42})
    client.cookies.set(name, value, domain="app.test")  # the host of the client's base_url
    response = await client.get("/profile")
    assert (await read_session(app, client.cookies[name]))["user_id"] == 42

Put the cookie in the client's jar under its host, so a new cookie from the app (a login's
``renew()``) replaces it; given as ``cookies=`` to the client, it would be sent beside the new
one (docs/testing.md).

``make_session_cookie`` saves the data through the app's own store and seals the cookie with its
key, exactly as the middleware would; ``read_session`` opens a cookie value and loads its state.

Where the configuration comes from: a ``SessionMiddleware`` instance; a Starlette or FastAPI app
(its middleware stack is searched); any ASGI callable whose ``.app`` chain reaches the middleware
(Litestar wrapped in it, say); or ``None`` with ``store=`` and ``key=``. Explicit keyword
arguments override what was found. Starlette builds an app's middleware stack on its first
request; before that, the middleware is constructed here from ``app.user_middleware`` with the
app's own arguments, so it holds the very store object and key the app will use.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from sessionware.config import BrowserSession, CookieSettings
from sessionware.cookies import find_cookies
from sessionware.crypto import ContentSecurity, Key, unseal
from sessionware.engine import SessionEngine, make_engine
from sessionware.errors import SessionInsertError
from sessionware.middleware import SessionMiddleware
from sessionware.session import Session
from sessionware.stores import SessionStore

__all__ = ["find_session_middleware", "make_session_cookie", "read_session"]

_MAX_DEPTH = 64


def _walk(app: Any) -> SessionMiddleware | None:
    """The first ``SessionMiddleware`` along ``app``'s ``middleware_stack`` / ``.app`` chain."""
    seen: set[int] = set()
    node = app
    for _ in range(_MAX_DEPTH):
        if node is None or id(node) in seen:
            return None
        seen.add(id(node))
        if isinstance(node, SessionMiddleware):
            return node
        stack = getattr(node, "middleware_stack", None)
        node = stack if stack is not None else getattr(node, "app", None)
    return None


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("a SessionMiddleware built by sessionware.testing serves no requests")


def find_session_middleware(app: Any) -> SessionMiddleware:
    """The ``SessionMiddleware`` that serves ``app``.

    ``app`` may be the middleware itself, an ASGI app wrapped in it, a Starlette/FastAPI app
    (built stack or, before its first request, ``user_middleware``) or a Litestar app given
    ``middleware=[DefineMiddleware(SessionMiddleware, ...)]``. Raises ``LookupError``.
    """
    found = _walk(app)
    if found is not None:
        return found
    # Declared, not yet built: Starlette's Middleware(cls, ...) in user_middleware, Litestar's
    # DefineMiddleware(middleware, ...) in middleware (Litestar builds one per route).
    declared = getattr(app, "user_middleware", None) or getattr(app, "middleware", None)
    for entry in declared if isinstance(declared, (list, tuple)) else ():
        cls = getattr(entry, "cls", None) or getattr(entry, "middleware", None)
        if isinstance(cls, type) and issubclass(cls, SessionMiddleware):
            instance: SessionMiddleware = cls(
                _never_called, *getattr(entry, "args", ()), **getattr(entry, "kwargs", {})
            )
            return instance
    build: Callable[[], Any] | None = getattr(app, "build_middleware_stack", None)
    if build is not None:  # a wrapper class that holds a SessionMiddleware inside
        found = _walk(build())
        if found is not None:
            return found
    raise LookupError(
        f"no sessionware.SessionMiddleware found in {type(app).__name__}: pass the middleware"
        " instance, or store= and key= explicitly"
    )


def _engine(
    target: Any,
    store: SessionStore | None,
    key: Key | None,
    cookie_name: str | None,
    content_security: ContentSecurity | None,
) -> SessionEngine:
    """The app's engine, or one built from it (or from defaults) with the overrides applied."""
    if target is not None:
        engine = find_session_middleware(target).engine
        if all(option is None for option in (store, key, cookie_name, content_security)):
            return engine
        base: dict[str, Any] = {
            "store": engine.backend,
            "keys": engine.keys,
            "security": engine.security,
            "cookie": engine.cookie,
            "lifecycle": engine.lifecycle,
            "clock": engine.clock,
            "codec": engine.codec,
        }
    elif store is None or key is None:
        raise TypeError("without an app or middleware, pass both store= and key=")
    else:
        base = {
            "store": store,
            "keys": (key,),
            "security": ContentSecurity.PRIVATE,
            "cookie": CookieSettings(),
            "lifecycle": BrowserSession(),
            "clock": time.time,
        }
    if store is not None:
        base["store"] = store
    if key is not None:
        base["keys"] = (key,)
    if content_security is not None:
        base["security"] = content_security
    if cookie_name is not None:
        base["cookie"] = dataclasses.replace(base["cookie"], name=cookie_name)
    return make_engine(**base)


async def make_session_cookie(
    middleware_or_app: Any,
    data: Mapping[str, Any],
    *,
    store: SessionStore | None = None,
    key: Key | None = None,
    cookie_name: str | None = None,
    content_security: ContentSecurity | None = None,
) -> tuple[str, str]:
    """Store ``data`` as a new session and return the cookie that carries it: ``(name, value)``.

    The value is what a browser would send back (sealed, percent-encoded), ready for a Cookie
    header or a test client's cookie jar (``client.cookies.set(name, value, domain=host)``).
    ``data`` must be JSON-serialisable, or what the app's codec stores (``SessionInsertError``
    names what is not). The session lives the app's state TTL.
    """
    engine = _engine(middleware_or_app, store, key, cookie_name, content_security)
    checked = Session()
    codec = engine.codec  # with a codec, its JSON values are what is checked and stored
    try:
        checked.update(data if codec is None else codec.encode_state(data))
    except TypeError as exc:
        raise SessionInsertError(f"cannot store this session: {exc}") from None
    line = await engine.seed(dict(checked.entries()))
    name, _, value = line.split(";", 1)[0].partition("=")
    return name, value


async def read_session(
    middleware_or_app: Any,
    cookie_value: str,
    *,
    store: SessionStore | None = None,
    key: Key | None = None,
    cookie_name: str | None = None,
    content_security: ContentSecurity | None = None,
) -> dict[str, Any]:
    """The state of the session a cookie value (%-encoded or not) refers to, as the app sees it.

    ``{}`` for an empty value (a removal cookie) and for a session the app would start anew
    (expired, purged, renewed away, past its absolute timeout). Raises ``ValueError`` when the
    value does not open with the app's keys and cookie name: it is not this app's session cookie.
    """
    engine = _engine(middleware_or_app, store, key, cookie_name, content_security)
    if cookie_value == "":
        return {}
    name = engine.cookie.name
    header = f"{name}={cookie_value}".encode("utf-8", "replace")
    found = find_cookies([header], name)
    if not found or unseal(engine.security, engine.keys, name, found[0]) is None:
        raise ValueError(
            f"this {name!r} cookie value does not open with the app's key(s) and"
            f" {engine.security.name} content security"
        )
    context = engine.begin([header])
    session = await engine.load(context)
    return dict(session.entries())
