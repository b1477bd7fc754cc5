"""CSRF protection with a synchronizer token bound to the session, as Django, Rails and Phoenix do.

``csrf_token(session)`` gives the token to put in a form's hidden field or an ``X-CSRF-Token``
header; ``CSRFMiddleware`` refuses POST, PUT, PATCH, DELETE (any method but GET, HEAD, OPTIONS,
TRACE) that lacks it, with 403 and no session write. The secret is 32 random bytes kept in the
session under ``CSRF_KEY``, created on first use and dropped by ``Session.renew()``, so signing
in gives a new one. Each call returns it XOR-masked with fresh random bytes (``mask + secret ^
mask``, base64url): no two responses carry the same text, so compression leaks nothing (BREACH).
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from sessionware.middleware import ASGIApp, Message, Receive, Scope, Send, route_path
from sessionware.session import CSRF_KEY, Session
from sessionware.transport import HeaderTransport

__all__ = [
    "CSRF_KEY",
    "SAFE_METHODS",
    "CSRFMiddleware",
    "by_header",
    "csrf_token",
    "verify_csrf_token",
]

logger = logging.getLogger("sessionware")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods that pass unchecked: they must not change anything on the server."""

_SIZE = 32
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
_MASKED = re.compile(r"[A-Za-z0-9_-]{86}")  # 64 bytes: the mask, then the masked secret
_FORM = b"application/x-www-form-urlencoded"
_MULTIPART = b"multipart/form-data"
_MAX_FIELD = 256  # a token field longer than this is not a token
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_INSTALLED = (
    "CSRFMiddleware found no sessionware session in this request: it must run inside"
    " sessionware.SessionMiddleware. With Starlette's add_middleware, add CSRFMiddleware first"
    " and SessionMiddleware after it (the last one added runs first); with middleware=[...],"
    " list SessionMiddleware before CSRFMiddleware"
)
_NO_MULTIPART = (
    "reading a CSRF token from a multipart/form-data body needs python-multipart:"
    " pip install 'sessionware[csrf]' (or send the token in the header instead)"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(_SIZE, "big")


def _secret(session: MutableMapping[str, Any]) -> bytes | None:
    """The session's secret, or ``None`` if it has none (or holds something else there)."""
    stored = session.get(CSRF_KEY)
    if not isinstance(stored, str) or not _SECRET.fullmatch(stored):
        return None
    return _unb64(stored)


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """A token for ``session``'s next unsafe request, masked anew on every call (86 characters).

    The first call creates the session's secret (so the session is saved, and a new visitor
    gets a cookie). Every token returned for a session verifies until ``renew()`` or ``purge()``.
    The text is URL- and HTML-safe: it needs no escaping in a form field or header.
    """
    secret = _secret(session)
    if secret is None:
        secret = secrets.token_bytes(_SIZE)
        session[CSRF_KEY] = _b64(secret)
    mask = secrets.token_bytes(_SIZE)
    return _b64(mask + _xor(mask, secret))


def verify_csrf_token(session: MutableMapping[str, Any], token: str | None) -> bool:
    """Whether ``token`` is a masked token of ``session``'s secret (compared in constant time).

    A session without a secret verifies nothing; checking creates nothing.
    """
    if token is None or not _MASKED.fullmatch(token):
        return False
    secret = _secret(session)
    if secret is None:
        return False
    raw = _unb64(token)
    return hmac.compare_digest(_xor(raw[:_SIZE], raw[_SIZE:]), secret)


def by_header(session: Session) -> bool:
    """Whether the request carries ``session``'s token in a header (``HeaderTransport``), not
    the cookie: a browser never adds that header to a request another site makes, so such a
    request cannot be forged cross-site and needs no CSRF token."""
    return isinstance(session.transport, HeaderTransport)


class CSRFMiddleware:
    """Refuses unsafe requests without the session's CSRF token: 403, and the session not saved.

    The token is read from the ``header_name`` header, else from the ``field_name`` field of an
    ``application/x-www-form-urlencoded`` or ``multipart/form-data`` body; the body is read (at
    most ``max_body_size`` bytes, up to the field in a multipart body) and replayed to the app,
    so the handler still reads its form. A path in ``exempt`` is not checked: one ending in
    ``/`` covers everything under it (``"/hooks/"``), any other only itself (``"/api/login"``);
    paths are the app's own, without the ``root_path`` it is mounted under. A request whose
    session goes by a header (``session.transport`` is a ``HeaderTransport``) passes: a forged
    cross-site request carries cookies, never that header. Runs inside ``SessionMiddleware``;
    WebSocket and lifespan scopes pass through (``SessionMiddleware`` checks a WebSocket's
    ``Origin`` instead).
    """

    def __init__(
        self,
        app: Any,
        *,
        exempt: Iterable[str] = (),
        header_name: str = "X-CSRF-Token",
        field_name: str = "csrf_token",
        max_body_size: int = 1024 * 1024,
    ) -> None:
        if isinstance(exempt, str):
            raise TypeError("exempt is a list of paths, not one path: exempt=[...]")
        paths = tuple(exempt)
        for path in paths:
            given: object = path
            if not isinstance(given, str) or not path.startswith("/"):
                raise ValueError(f"exempt paths start with '/': {path!r}")
        if not _HEADER_NAME.fullmatch(str(header_name)):
            raise ValueError(f"not a valid header name: {header_name!r}")
        if not field_name:
            raise ValueError("field_name must be a non-empty str")
        if max_body_size < 1:
            raise ValueError("max_body_size must be a positive number of bytes")
        self.app: ASGIApp = app
        self.exact = frozenset(p for p in paths if not p.endswith("/"))
        self.prefixes = tuple(p for p in paths if p.endswith("/"))
        self.header = header_name.lower().encode("latin-1")
        self.field = field_name
        self.max_body_size = max_body_size

    def exempts(self, path: str) -> bool:
        """Whether ``path`` is exempt from the check."""
        return path in self.exact or path.startswith(self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = scope.get("session")
        if not isinstance(session, Session):
            raise RuntimeError(_NOT_INSTALLED)
        if scope["method"] in SAFE_METHODS or self.exempts(route_path(scope)) or by_header(session):
            await self.app(scope, receive, send)
            return
        token, content_type = None, b""
        for name, value in scope["headers"]:
            if name == self.header and token is None:
                token = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value
        read: list[Message] = []
        if token is None and content_type:
            token = await self._from_body(content_type, receive, read)
        if token is not None:
            await session.load()
        if not verify_csrf_token(session, token):
            session.discard_changes()
            reason = "missing" if token is None else "incorrect"
            logger.info("CSRF token %s: %s %s refused", reason, scope["method"], scope["path"])
            await _forbidden(send, f"CSRF token {reason}.\n")
            return
        if read:
            await self.app(scope, _replay(read, receive), send)
        else:
            await self.app(scope, receive, send)

    async def _from_body(
        self, content_type: bytes, receive: Receive, read: list[Message]
    ) -> str | None:
        """The token field of a form body, keeping the messages read in ``read`` for the replay."""
        media = content_type.partition(b";")[0].strip().lower()
        if media == _FORM:
            feed: _Finder = _UrlencodedFinder(self.field)
        elif media == _MULTIPART:
            feed = _MultipartFinder(content_type, self.field)
        else:
            return None
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return None  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                return None
            more = message.get("more_body", False)
            found = feed.write(chunk, last=not more)
            if found is not None or not more:
                return found if found is None or len(found) <= _MAX_FIELD else None


class _Finder:
    """Looks for one field in a form body given piece by piece."""

    def write(self, chunk: bytes, *, last: bool) -> str | None:
        """Take the next piece; the field's value once it is complete, else ``None``."""
        raise NotImplementedError


class _UrlencodedFinder(_Finder):
    def __init__(self, field: str) -> None:
        self.field = field
        self.chunks: list[bytes] = []

    def write(self, chunk: bytes, *, last: bool) -> str | None:
        self.chunks.append(chunk)
        if not last:
            return None
        text = b"".join(self.chunks).decode("latin-1")
        for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
            if name == self.field:
                return value
        return None


class _MultipartFinder(_Finder):
    """Streams the body through python-multipart, stopping at the end of the field's part."""

    def __init__(self, content_type: bytes, field: str) -> None:
        try:
            from python_multipart.multipart import MultipartParser, parse_options_header
        except ImportError:
            raise RuntimeError(_NO_MULTIPART) from None
        self.options = parse_options_header
        self.field = field.encode("utf-8")
        self.name: list[bytes] = []
        self.value: list[bytes] = []
        self.data: list[bytes] = []
        self.ours = False
        self.found: bytes | None = None
        self.broken = False
        boundary = parse_options_header(content_type)[1].get(b"boundary")
        self.parser = None
        if boundary:
            try:
                self.parser = MultipartParser(
                    boundary,
                    {
                        "on_part_begin": self._part_begin,
                        "on_header_field": lambda d, s, e: self.name.append(d[s:e]),
                        "on_header_value": lambda d, s, e: self.value.append(d[s:e]),
                        "on_header_end": self._header_end,
                        "on_part_data": self._part_data,
                        "on_part_end": self._part_end,
                    },
                )
            except ValueError:  # a boundary the parser refuses: no field can be found
                self.parser = None

    def _part_begin(self) -> None:
        self.ours = False
        self.data.clear()

    def _header_end(self) -> None:
        name, value = b"".join(self.name).lower(), b"".join(self.value)
        self.name.clear()
        self.value.clear()
        if name == b"content-disposition":
            self.ours = self.options(value)[1].get(b"name") == self.field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.ours and sum(map(len, self.data)) <= _MAX_FIELD:
            self.data.append(data[start:end])

    def _part_end(self) -> None:
        if self.ours and self.found is None:
            self.found = b"".join(self.data)

    def write(self, chunk: bytes, *, last: bool) -> str | None:
        if self.parser is None or self.broken:
            return None
        try:
            self.parser.write(chunk)
        except Exception:  # a malformed body holds no token
            self.broken = True
            return None
        return None if self.found is None else self.found.decode("latin-1")


def _replay(read: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the messages already read, then the rest of the request."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _forbidden(send: Send, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
