"""The Origin check of WebSocket handshakes: cross-site WebSocket hijacking stopped at the door.

A browser sends the session cookie with a WebSocket handshake that any page opens, whatever
site it comes from, and neither SameSite=Lax (a handshake is a GET) nor the same-origin policy
stops it. It does send ``Origin``, which a page cannot forge: a handshake that carries the
session cookie is accepted only from the app's own origin or one of ``websocket_origins``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from sessionware.cookies import find_cookies
from sessionware.events import EventHook, OriginRefused, emit

__all__ = ["OriginCheck", "normal_origin"]

logger = logging.getLogger("sessionware")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
"""The scheme a page of the request's own origin has: a ``ws`` handshake is an ``http`` page's."""
_NOT_IN_AUTHORITY = frozenset("/?#@\\ \t")


def normal_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in lower case, without its scheme's default port; ``None``
    when ``text`` is not an http(s) origin (a path, user info, ``null``, another scheme)."""
    scheme, sep, authority = text.strip().lower().partition("://")
    default = _DEFAULT_PORTS.get(scheme)
    if not sep or default is None or not authority or not _NOT_IN_AUTHORITY.isdisjoint(authority):
        return None
    colon = authority.rfind(":")
    if colon > authority.rfind("]"):  # a port, not a colon of an IPv6 address
        host, port = authority[:colon], authority[colon + 1 :]
        if not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
            return None
        authority = host if int(port) == default else f"{host}:{int(port)}"
    return f"{scheme}://{authority}"


def own_origin(scope: MutableMapping[str, Any]) -> str | None:
    """The origin of the app's own pages, as this request reached it: the scheme (``wss`` is an
    ``https`` page's) with the ``Host`` header, or the server's address when there is none."""
    scheme = _HTTP_SCHEME.get(scope.get("scheme", "ws"), "http")
    for name, value in scope["headers"]:
        if name == b"host":
            return normal_origin(f"{scheme}://{value.decode('latin-1')}")
    server = scope.get("server")
    if not server or not server[0]:
        return None
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return normal_origin(f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}")


class OriginCheck:
    """Which WebSocket handshakes may carry the session cookie: those from the app's own origin,
    from one of ``allowed``, or with no ``Origin`` (not a browser's: no page can open them)."""

    def __init__(
        self, allowed: Iterable[object], cookie_name: str, on_event: EventHook | None = None
    ) -> None:
        if isinstance(allowed, (str, bytes)):
            raise TypeError(
                "websocket_origins must be a list of origins, e.g."
                " websocket_origins=['https://app.example.com'], not one string"
            )
        origins = set()
        for origin in allowed:
            normal = normal_origin(origin) if isinstance(origin, str) else None
            if normal is None:
                raise ValueError(
                    f"websocket_origins: {origin!r} is not an origin. Give each as"
                    " scheme://host[:port] with http or https and nothing after it, e.g."
                    " 'https://app.example.com' or 'http://localhost:3000'"
                )
            origins.add(normal)
        self.allowed = frozenset(origins)
        self.cookie_name = cookie_name
        self.on_event = on_event

    def refused(self, scope: MutableMapping[str, Any], cookies: list[bytes]) -> str | None:
        """The ``Origin`` of a handshake that must be refused: it carries the session cookie
        from a page of an origin neither the app's nor allowed; ``None`` to let it in."""
        origin: str | None = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
                break
        if origin is None or not find_cookies(cookies, self.cookie_name):
            return None
        normal = normal_origin(origin)
        if normal is not None and (normal in self.allowed or normal == own_origin(scope)):
            return None
        return origin

    async def refuse(
        self,
        scope: MutableMapping[str, Any],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
        origin: str,
    ) -> None:
        """Answer the handshake 403 before the app runs: with the denial-response extension
        when the server has it, else by closing before accept (which servers answer 403)."""
        logger.warning(
            "WebSocket handshake refused (403): it carries the session cookie from Origin %r,"
            " which is neither this app's (%r) nor in websocket_origins: cross-site WebSocket"
            " hijacking, or a page of yours on another origin (then list it in"
            " SessionMiddleware(websocket_origins=[...]))",
            origin[:200],
            (own_origin(scope) or "")[:200],
        )
        if self.on_event is not None:
            emit(self.on_event, OriginRefused())
        if "websocket.http.response" in (scope.get("extensions") or {}):
            headers = [(b"content-length", b"0"), (b"cache-control", b"no-store")]
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": b""})
        else:
            await send({"type": "websocket.close", "code": 1008})
