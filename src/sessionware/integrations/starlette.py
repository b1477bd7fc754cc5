"""A drop-in for Starlette's ``SessionMiddleware``: migrating is one import change.

::

    # from starlette.middleware.sessions import SessionMiddleware
    from sessionware.integrations.starlette import SessionMiddleware

    app.add_middleware(SessionMiddleware, secret_key=os.environ["SECRET_KEY"])

Same parameters, defaults and meanings as Starlette 1.10's class; ``request.session`` is a
``sessionware.Session``. What differs is listed in ``docs/migration-starlette.md``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final, Literal

from starlette.datastructures import Secret

from sessionware import middleware as _core
from sessionware.adopt import LegacyCookieReader, StarletteCookie
from sessionware.config import BrowserSession, PersistentSession, TtlExtensionPolicy
from sessionware.crypto import Key
from sessionware.middleware import ASGIApp, Message, Receive, Scope, Send
from sessionware.session import Session, SessionStatus
from sessionware.state import StateFields
from sessionware.stores import SessionStore
from sessionware.stores.base import Absent, Record, RecordStore, Version
from sessionware.stores.cookie import CookieSessionStore

__all__ = ["KEY_DERIVATION_CONTEXT", "SessionMiddleware", "derive_key"]

logger = logging.getLogger("sessionware")

MIN_SECRET_BYTES: Final = 32
"""A ``secret_key`` shorter than this (in UTF-8 bytes) is logged as a WARNING at construction."""

KEY_DERIVATION_CONTEXT: Final = b"sessionware starlette drop-in\x00"
"""Prefix hashed with a ``secret_key`` before HKDF; changing it would log every user out."""

BROWSER_SESSION_STATE_TTL: Final = timedelta(days=14)
"""With ``max_age=None``, how long a session's state lives without a change (Starlette: forever)."""

# sessionware options that a Starlette parameter already sets, and which one to use instead.
_SET_BY_STARLETTE_PARAMETER: Final = {
    "key": "secret_key (older secrets: fallback_secret_keys)",
    "keys": "secret_key (older secrets: fallback_secret_keys)",
    "cookie_name": "session_cookie",
    "cookie_secure": "https_only",
    "cookie_same_site": "same_site",
    "cookie_path": "path",
    "cookie_domain": "domain",
    "cookie_partitioned": "partitioned",
}


def derive_key(secret_key: str | Secret | Key) -> Key:
    """The sessionware ``Key`` a Starlette-style ``secret_key`` stands for. Deterministic.

    ``Key.derive_from(sha256(KEY_DERIVATION_CONTEXT + str(secret_key).encode("utf-8")))``:
    SHA-256 of ``b"sessionware starlette drop-in\\x00"`` followed by the secret's UTF-8 bytes
    gives the 32 bytes HKDF-SHA256 (cookie 0.16's ``Key::derive_from``) expands into the
    64-byte master key. Every process given the same secret gets the same key, so they read each
    other's cookies. This is not a password hash: the secret must be long and random, as it must
    already be for Starlette. A ``Key`` is returned as it is.
    """
    if isinstance(secret_key, Key):
        return secret_key
    if not isinstance(secret_key, (str, Secret)):
        raise TypeError(
            f"secret_key must be a str, a starlette Secret or a sessionware Key,"
            f" not {type(secret_key).__name__}"
        )
    secret = str(secret_key)
    if not secret:
        raise ValueError("secret_key is empty: give a long random string (e.g. secrets.token_hex)")
    return Key.derive_from(hashlib.sha256(KEY_DERIVATION_CONTEXT + secret.encode("utf-8")).digest())


class SessionMiddleware(_core.SessionMiddleware):
    """Starlette's ``SessionMiddleware``, with sessionware underneath.

    - ``secret_key`` (str, ``starlette.datastructures.Secret`` or ``sessionware.Key``) becomes the
      key by :func:`derive_key`; ``fallback_secret_keys`` lists older secrets still accepted
      (a cookie they open is re-issued under ``secret_key``), as Django and Flask's
      ``SECRET_KEY_FALLBACKS``.
    - ``max_age`` (seconds): ``PersistentSession(session_ttl=max_age)``, the cookie carries
      ``Max-Age`` (below 1, as Starlette, the cookie is expired as it is sent and no session ever
      comes back); ``None``: ``BrowserSession``, no ``Max-Age``, the state kept 14 days
      from its last change. The TTL policy is ``ON_STATE_CHANGES``: as Starlette 1.x (which sends
      the cookie only when the session was modified), reading a session neither re-sends the cookie
      nor pushes its expiry back; Starlette before 1.0 did both (``ON_EVERY_REQUEST``, which
      ``lifecycle=`` can ask for).
    - ``https_only`` is ``cookie_secure``, ``same_site`` ``cookie_same_site``; the cookie is
      HttpOnly, as Starlette's. ``session_cookie``, ``path``, ``domain``, ``partitioned`` keep
      their names' meaning.
    - ``store`` defaults to ``CookieSessionStore()`` (the state travels in the cookie, encrypted);
      any sessionware store fits.
    - ``adopt`` defaults to reading the cookies Starlette's own middleware issued with the same
      ``secret_key`` (and fallbacks), ``session_cookie``, ``max_age``, ``path`` and
      ``domain`` (``sessionware.adopt.StarletteCookie``): each user's first request after the
      switch keeps the session Starlette had, stored as a new sessionware session whose cookie
      replaces Starlette's. ``adopt=[]`` reads none.
    - ``**sessionware_options`` go to ``sessionware.SessionMiddleware`` (``content_security``,
      ``lazy``, ``clock``, ``cookie_http_only``; ``lifecycle``, which replaces what ``max_age``
      sets). Options a Starlette parameter already sets raise ``TypeError`` naming it.

    Starlette behaviour kept on top of the core's: a session emptied during a request
    (``clear()``, ``pop`` of the last key) ends, as Starlette's does: the client is told to drop
    the cookie and a server-side store deletes the record (``Session.purge``); and the
    Set-Cookie attributes are spelled as Starlette spells them (``path=/; Max-Age=1209600;
    httponly; samesite=lax``), so tests that match that text keep passing.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | Secret | Key,
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 60 * 60,  # 14 days, in seconds
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        store: SessionStore | None = None,
        fallback_secret_keys: Sequence[str | Secret | Key] = (),
        adopt: Sequence[LegacyCookieReader] | None = None,
        **sessionware_options: Any,
    ) -> None:
        for option, parameter in _SET_BY_STARLETTE_PARAMETER.items():
            if option in sessionware_options:
                raise TypeError(
                    f"{option}= is set by the Starlette parameter {parameter} here; pass that"
                    " instead (or use sessionware.SessionMiddleware for its own parameters)"
                )
        if isinstance(secret_key, (str, Secret)):
            _warn_if_short(str(secret_key))
        if isinstance(fallback_secret_keys, (str, Secret, Key)):
            raise TypeError("fallback_secret_keys is a list of secrets, not a single one")
        lifecycle = sessionware_options.pop("lifecycle", None)
        expired_on_arrival = lifecycle is None and _expires_at_once(max_age)
        if lifecycle is None:
            lifecycle = _lifecycle(1 if expired_on_arrival else max_age)
        store = store if store is not None else CookieSessionStore()
        if adopt is None:
            adopt = _starlettes_own(
                [secret_key, *fallback_secret_keys], session_cookie, max_age, path, domain
            )
        super().__init__(
            app,
            store=_never_loading(store) if expired_on_arrival else store,
            keys=[derive_key(secret_key), *(derive_key(k) for k in fallback_secret_keys)],
            cookie_name=session_cookie,
            cookie_secure=https_only,
            cookie_same_site=same_site,
            cookie_path=path,
            cookie_domain=domain,
            cookie_partitioned=partitioned,
            lifecycle=lifecycle,
            adopt=adopt,
            **sessionware_options,
        )
        if expired_on_arrival:
            # Starlette sends such a cookie expired as it is set: Max-Age=0 (or below).
            self.engine.cookie_max_age = max_age
        self._cookie_prefix = f"{session_cookie}=".encode("latin-1")
        self.app = _ending_emptied_sessions(self.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            send = self._starlette_spelling(send)
        await super().__call__(scope, receive, send)

    def _starlette_spelling(self, send: Send) -> Send:
        prefix = self._cookie_prefix

        async def sender(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = message.get("headers")
                if headers and any(
                    n.lower() == b"set-cookie" and v.startswith(prefix) for n, v in headers
                ):
                    message = {
                        **message,
                        "headers": [
                            (n, _respell(v))
                            if n.lower() == b"set-cookie" and v.startswith(prefix)
                            else (n, v)
                            for n, v in headers
                        ],
                    }
            await send(message)

        return sender


def _starlettes_own(
    secrets: Sequence[str | Secret | Key],
    session_cookie: str,
    max_age: int | None,
    path: str,
    domain: str | None,
) -> list[LegacyCookieReader]:
    """The default ``adopt=``: the cookie Starlette's middleware set with these very settings
    (none when every secret is a sessionware ``Key``: Starlette never had it)."""
    texts = [str(s) for s in secrets if isinstance(s, (str, Secret)) and str(s)]
    if not texts:
        return []
    return [StarletteCookie(texts, session_cookie, max_age, path=path, domain=domain)]


def _warn_if_short(secret: str) -> None:
    """One WARNING for a guessable ``secret_key``: whoever guesses it can forge sessions."""
    size = len(secret.encode("utf-8", "surrogatepass"))
    if 0 < size < MIN_SECRET_BYTES:
        logger.warning(
            "the drop-in SessionMiddleware's secret_key is %d bytes, shorter than %d: anyone who"
            " guesses it can read and forge sessions. Use a long random secret, e.g. the output"
            " of `python -c 'import secrets; print(secrets.token_hex(32))'`",
            size,
            MIN_SECRET_BYTES,
        )


def _lifecycle(max_age: int | None) -> BrowserSession | PersistentSession:
    policy = TtlExtensionPolicy.ON_STATE_CHANGES
    if max_age is None:
        return BrowserSession(
            state_ttl=BROWSER_SESSION_STATE_TTL, state_ttl_extension_policy=policy
        )
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise TypeError(f"max_age must be an int (seconds) or None, not {type(max_age).__name__}")
    return PersistentSession(session_ttl=timedelta(seconds=max_age), ttl_extension_policy=policy)


def _expires_at_once(max_age: int | None) -> bool:
    if max_age is None:
        return False
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise TypeError(f"max_age must be an int (seconds) or None, not {type(max_age).__name__}")
    return max_age < 1


class _NeverLoads:
    """A record store whose sessions never come back: ``max_age`` below 1 second, as Starlette
    allows. The request still sees its own changes and gets its (already expired) cookie."""

    def __init__(self, inner: RecordStore) -> None:
        self.inner = inner
        self.hash_keys = inner.hash_keys

    async def get(self, id: str) -> Record | None:
        return None

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        return await self.inner.put(id, data, ttl, expect=expect)

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return False

    async def delete(self, id: str) -> None:
        await self.inner.delete(id)


class _NeverOpens(CookieSessionStore):
    """The cookie store's counterpart of ``_NeverLoads``."""

    def __init__(self, inner: CookieSessionStore) -> None:
        self.__dict__.update(inner.__dict__)

    def read(self, text: str) -> StateFields | None:
        return None  # ``open`` reads through it too


def _never_loading(store: SessionStore) -> SessionStore:
    if isinstance(store, CookieSessionStore):
        return _NeverOpens(store)
    if isinstance(store, RecordStore):
        return _NeverLoads(store)
    return store  # not a store: the middleware says so


def _ending_emptied_sessions(app: ASGIApp) -> ASGIApp:
    """Wrap the app so a session it changed and left empty is purged before it is persisted."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("session")
        if not isinstance(session, Session):
            await app(scope, receive, send)
            return

        async def sender(message: Message) -> None:
            if (
                message["type"] in ("http.response.start", "websocket.accept")
                and session.status is SessionStatus.CHANGED
                and len(session) == 0
            ):
                session.purge()
            await send(message)

        await app(scope, receive, sender)

    return wrapped


_STARLETTE_ORDER: Final = ("path", "max-age", "expires", "httponly", "samesite", "secure", "domain")


def _respell(line: bytes) -> bytes:
    """A sessionware Set-Cookie value with its attributes in Starlette's order and spelling.

    ``id=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=9`` becomes
    ``id=v; path=/; Max-Age=9; httponly; samesite=lax``. Attribute names are case-insensitive
    for browsers (RFC 6265 §5.2); the text matters only to tests that match it.
    """
    first, *parts = line.decode("latin-1").split("; ")
    attributes: dict[str, str | None] = {}
    for part in parts:
        name, equals, text = part.partition("=")
        attributes[name.lower()] = text if equals else None
    out = [first]
    for name in (*_STARLETTE_ORDER, *(a for a in attributes if a not in _STARLETTE_ORDER)):
        if name not in attributes:
            continue
        value = attributes[name]
        spelled = "Max-Age" if name == "max-age" else name
        if value is None:
            out.append(spelled)
        else:
            out.append(f"{spelled}={value.lower() if name == 'samesite' else value}")
    return "; ".join(out).encode("latin-1")
