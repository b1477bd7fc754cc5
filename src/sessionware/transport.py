"""Where a request carries its session token, and where a response puts a new one.

``CookieTransport()`` (the default) is the session cookie: ``Cookie`` in, ``Set-Cookie`` out.
``HeaderTransport()`` is for API and mobile clients: the token comes in a request header
(``Authorization: Session <token>``) and a changed token goes back in a response header
(``Session-Token``; an empty value when the session ended). The token is the value the cookie
would carry: sealed by the same key ring, in the same format.

``SessionMiddleware(transport=[...])`` takes several, in order: a request's session goes by the
first transport the request matches (a ``CookieTransport`` when it carries the session cookie; a
``HeaderTransport`` when it carries its header, with its scheme, even without a token), and by
the first of the list when it matches none. This module only describes transports; the engine
(``sessionware.engine``) reads and writes the tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "COOKIE",
    "CookieTransport",
    "Declared",
    "HeaderTransport",
    "Transport",
    "declare",
    "declared",
    "transports",
]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type", "range"})
"""Request headers a cross-site form or ``fetch`` may set without a CORS preflight: a session
token in one of them would reach the app with a request another site made."""
_NOT_A_TOKEN_HEADER = frozenset({"cookie", "set-cookie", "host", "vary", "cache-control"})


@dataclass(frozen=True)
class CookieTransport:
    """The session token in the session cookie: the default, and the only one browsers send
    by themselves. Its name and attributes are ``SessionMiddleware``'s ``cookie_*`` options."""


@dataclass(frozen=True)
class HeaderTransport:
    """The session token in a request header, for API and mobile clients.

    ``Authorization: Session <token>`` by default; with ``scheme=None``, the whole value of the
    header ``name`` (e.g. ``X-Session-Token``). A new or changed token goes back in the
    ``response_header`` (``Session-Token``), an empty one when the session ended. A browser
    never sends such a header by itself, so ``CSRFMiddleware`` lets these requests through.
    """

    name: str = "Authorization"
    scheme: str | None = "Session"
    response_header: str = "Session-Token"
    key: bytes = field(init=False, repr=False, compare=False)
    """The request header's name as ASGI gives it (lower case)."""
    response_key: bytes = field(init=False, repr=False, compare=False)
    """The response header's name, lower case."""
    _prefix: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for option in ("name", "response_header"):
            value: object = getattr(self, option)
            if not isinstance(value, str) or not _TOKEN.fullmatch(value):
                raise ValueError(
                    f"HeaderTransport {option}={value!r} is not a header name: use letters,"
                    " digits and !#$%&'*+-.^_`|~ only"
                )
            lowered = value.lower()
            if lowered in _NOT_A_TOKEN_HEADER:
                raise ValueError(f"HeaderTransport {option}={value!r}: that header has its own use")
        if self.name.lower() in _SAFELISTED:
            raise ValueError(
                f"HeaderTransport name={self.name!r}: a browser sends that header with cross-site"
                " requests, so it cannot carry a session token safely; use Authorization or an"
                " X-... header of your own"
            )
        scheme: object = self.scheme
        if scheme is not None and (not isinstance(scheme, str) or not _TOKEN.fullmatch(scheme)):
            raise ValueError(
                f"HeaderTransport scheme={scheme!r} is not an authentication scheme name (a"
                " token, e.g. 'Session' or 'Bearer'); None for the header's whole value"
            )
        object.__setattr__(self, "key", self.name.lower().encode("latin-1"))
        object.__setattr__(self, "response_key", self.response_header.lower().encode("latin-1"))
        prefix = None if self.scheme is None else self.scheme.lower().encode("latin-1")
        object.__setattr__(self, "_prefix", prefix)

    def token(self, value: bytes) -> bytes | None:
        """The token a value of the request header carries (``b""``: the header is there, with
        the scheme, but no token yet); ``None`` when the value is not this transport's (another
        scheme: ``Basic ...``). Schemes compare case-insensitively (RFC 9110 §11.1)."""
        value = value.strip(b" \t")
        if self._prefix is None:
            return value
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != self._prefix:
            return None
        return token.strip(b" \t")

    def find(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
        """The token the first of ``headers`` (an ASGI request's) that is this transport's
        carries; ``None`` when none is."""
        key = self.key
        for name, value in headers:
            if name == key:
                token = self.token(value)
                if token is not None:
                    return token
        return None


Transport = CookieTransport | HeaderTransport
"""What ``SessionMiddleware(transport=...)`` takes (or a list of them)."""

COOKIE = CookieTransport()
"""The default transport (``Session.transport`` for a session that went by cookie)."""


def transports(given: object) -> tuple[Transport, ...]:
    """``transport=`` as a checked tuple: one transport or a non-empty list of them, at most
    one cookie, no request or response header twice. Raises ``TypeError``/``ValueError``."""
    if given is None:
        return (COOKIE,)
    items = list(given) if isinstance(given, (list, tuple)) else [given]
    if not items:
        raise ValueError("transport= is an empty list: give CookieTransport(), HeaderTransport()")
    checked: list[Transport] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, (CookieTransport, HeaderTransport)):
            raise TypeError(
                "transport= takes sessionware.CookieTransport(), sessionware.HeaderTransport()"
                f" or a list of them, not {type(item).__name__}"
            )
        for claim in _claims(item):
            if claim in seen:
                raise ValueError(f"transport= lists {claim} twice: {items!r}")
            seen.add(claim)
        checked.append(item)
    return tuple(checked)


def _claims(transport: Transport) -> tuple[str, ...]:
    """What a transport uses that no other of one middleware's list may use too."""
    if isinstance(transport, CookieTransport):
        return ("the cookie",)
    return (
        f"the header {transport.key.decode()}",
        f"the response header {transport.response_key.decode()}",
    )


@dataclass(frozen=True)
class Declared:
    """How a named session's middleware takes its token: for documentation (OpenAPI)."""

    cookie_name: str
    transports: tuple[Transport, ...]


_DECLARED: dict[str, Declared] = {}


def declare(name: str, cookie_name: str, carried_by: tuple[Transport, ...]) -> None:
    """Note how the ``SessionMiddleware`` named ``name`` takes its token (each one constructed
    notes it, so with several apps in one process the last one built is what is documented)."""
    _DECLARED[name] = Declared(cookie_name, carried_by)


def declared(name: str) -> Declared | None:
    """What ``declare`` last noted for ``name``; ``None`` before any such middleware exists."""
    return _DECLARED.get(name)
