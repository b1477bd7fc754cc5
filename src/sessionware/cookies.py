"""Reading the Cookie header and writing Set-Cookie lines, as actix-web and the cookie crate do.

The parser is lenient on purpose (never ``http.cookies.SimpleCookie``, which drops every cookie
after a malformed one): split on ``;``, exact case-sensitive names, surrounding quotes trimmed,
percent-decoded. Set-Cookie attributes come in the cookie crate 0.16 order (SPEC §2.4).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from email.utils import formatdate
from urllib.parse import quote, unquote

from sessionware.config import CookieSettings

__all__ = [
    "MAX_SET_COOKIE_BYTES",
    "cookie_suffix",
    "find_cookies",
    "removal_cookie",
    "session_cookie",
    "single_cookie",
]

MAX_SET_COOKIE_BYTES = 4096
"""Browsers keep cookies up to 4096 bytes of name, value and attributes; past that they drop them."""

MAX_CANDIDATES = 4
"""How many same-name cookies are tried, in header order, before giving up."""

MAX_VALUE_BYTES = 4096

# The cookie crate's percent-encoding set: controls, non-ASCII, space and "#%(),/:;<=>?@[\]^`{|}
_ENCODED = set(' "#%(),/:;<=>?@[\\]^`{|}')
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in _ENCODED)
_ASCII_ENCODE = {ord(c): f"%{ord(c):02X}" for c in _ENCODED} | {
    c: f"%{c:02X}" for c in [*range(0x20), 0x7F]
}
# Base64 (private and signed cookies) only ever needs these two escapes undone.
_BASE64_ESCAPES = (("%2F", "/"), ("%3D", "="), ("%2f", "/"), ("%3d", "="))
_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_UNSAFE = re.compile("[^" + re.escape(_SAFE) + "]")


def find_cookies(headers: Iterable[bytes], name: str) -> list[str]:
    """The values of the cookies called ``name``, in header order, at most ``MAX_CANDIDATES``.

    ``headers`` are the raw values of every Cookie header (HTTP/2 may split one into several).
    Values over 4096 bytes or that do not percent-decode to UTF-8 are skipped.
    """
    if type(headers) is list and len(headers) == 1:
        value = single_cookie(headers[0], _prefix(name))
        if value is not None:
            return [value]
    return _find_cookies(headers, name)


@functools.lru_cache(maxsize=64)
def _prefix(name: str) -> bytes:
    return f"{name}=".encode("latin-1")


def single_cookie(header: bytes, prefix: bytes) -> str | None:
    """The common case of ``find_cookies``, found by C-level searches alone: the value of the one
    cookie ``prefix`` (``name=``) names in ``header``; ``None`` when ``find_cookies`` must look
    (no such cookie, two, quotes, or escapes other than a sealed value's base64 ones)."""
    at = header.find(prefix)
    if at == -1 or (at and not header[:at].rstrip(b" \t").endswith(b";")):
        return None
    end = header.find(b";", at)
    if end == -1:  # the last cookie: no other after it
        value = header[at + len(prefix) :].rstrip(b" \t")
    elif header.find(prefix, end) != -1:  # (a sealed value has no '=' to spell one)
        return None
    else:
        value = header[at + len(prefix) : end].rstrip(b" \t")
    if not value or len(value) > MAX_VALUE_BYTES or b'"' in value:
        return None
    text = value.decode("latin-1")
    if "%" in text:  # a sealed value's base64 escapes ('=' only pads the end), as _find_cookies
        text = text.replace("%2F", "/")
        if text.endswith("%3D"):
            text = text[:-6] + "==" if text.endswith("%3D%3D") else text[:-3] + "="
        if "%" in text:
            return None
    return text


def _find_cookies(headers: Iterable[bytes], name: str) -> list[str]:
    """``find_cookies`` for any header: split on ``;``, one piece at a time."""
    found: list[str] = []
    prefix = name + "="
    for header in headers:
        text = header.decode("latin-1")
        if prefix not in text:
            continue
        for piece in text.split(";"):
            piece = piece.strip(" \t")
            if not piece.startswith(prefix):
                continue
            value = piece[len(prefix) :]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not value or len(value) > MAX_VALUE_BYTES:
                continue
            if "%" in value:
                for escaped, char in _BASE64_ESCAPES:
                    value = value.replace(escaped, char)
            if "%" in value:
                try:
                    value = unquote(value, errors="strict")
                except UnicodeDecodeError:
                    continue
            found.append(value)
            if len(found) == MAX_CANDIDATES:
                return found
    return found


@functools.lru_cache(maxsize=64)
def _attributes(settings: CookieSettings) -> str:
    parts = []
    if settings.http_only:
        parts.append("; HttpOnly")
    if settings.same_site is not None:
        parts.append(f"; SameSite={_SAME_SITE[settings.same_site]}")
    if settings.secure:
        parts.append("; Secure")
    parts.append(f"; Path={settings.path}")
    if settings.domain is not None:
        parts.append(f"; Domain={settings.domain}")
    return "".join(parts)


def _percent_encode(value: str) -> str:
    """``quote(value, safe=_SAFE)``: for ASCII, one C-level replace per character that occurs
    and needs escaping (a sealed value is base64, so mostly just '/'); ``str.translate`` with a
    dict is a per-character Python-level lookup, nearly as slow as urllib."""
    if not value.isascii():
        return quote(value, safe=_SAFE)
    found = set(_UNSAFE.findall(value))
    if "%" in found:  # first, so the escapes added below are not escaped again
        value = value.replace("%", "%25")
        found.discard("%")
    for char in found:
        value = value.replace(char, _ASCII_ENCODE[ord(char)])
    return value


def cookie_suffix(settings: CookieSettings, max_age: int | None) -> str:
    """What follows the value in a session Set-Cookie (attributes, Max-Age, Partitioned): the
    same for every response of one configuration, so a caller computes it once."""
    line = _attributes(settings)
    if max_age is not None:
        line += f"; Max-Age={max_age}"
    if settings.partitioned:
        line += "; Partitioned"
    return line


def session_cookie(
    settings: CookieSettings,
    value: str,
    max_age: int | None,
    *,
    suffix: str | None = None,
) -> str:
    """The Set-Cookie value carrying ``value`` (already sealed), percent-encoded as actix does.

    ``suffix`` is ``cookie_suffix(settings, max_age)`` when the caller has it. (The engine
    writes a PRIVATE seal's line itself: standard base64 needs only ``/`` and ``=`` escaped.)
    """
    encoded = _percent_encode(value)
    if suffix is None:
        suffix = cookie_suffix(settings, max_age)
    return f"{settings.name}={encoded}{suffix}"


def removal_cookie(settings: CookieSettings, now: float | None = None) -> str:
    """A Set-Cookie that makes browsers drop the session cookie: same attributes, empty, expired."""
    expires = formatdate((time.time() if now is None else now) - 365 * 86400, usegmt=True)
    line = f"{settings.name}={_attributes(settings)}; Max-Age=0; Expires={expires}"
    if settings.partitioned:
        line += "; Partitioned"
    return line
