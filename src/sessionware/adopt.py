"""Readers for the session cookies of Starlette, Flask and Django: adopting sessionware logs no
one out.

``SessionMiddleware(adopt=[...])`` takes readers of this shape (``LegacyCookieReader``)::

    source: str                                   "starlette", "flask" or "django"
    cookie_name: str                              the cookie it reads
    read(value, now) -> dict[str, Any] | Refusal  the cookie's state, or why not
    removal(now) -> str                           a Set-Cookie value that drops that cookie

A reader whose ``cookie_name`` is the session's own (the Starlette drop-in's ``session``) also
needs ``claims(value) -> bool``: whether a value has its library's shape, which no value
sessionware seals has (base64 or base64url, never a ``.`` or ``:``; ``SIGNED_ACTIX``'s clear
JSON starts with ``{`` after its MAC). The three readers here have it.

``read`` checks the cookie as its own library does (signature with the same key derivation,
signing time against ``max_age``) and returns the state as plain JSON values that sessionware
can store. Anything else is a ``Refusal`` (``FORGED``, ``EXPIRED``, ``UNREADABLE``, ``PICKLE``),
logged once on ``sessionware.adopt`` with a salted hash of the value, never the value: any input
at all, never an exception. Only the standard library verifies (``hmac.compare_digest``; zlib
output is capped at ``MAX_DECOMPRESSED`` bytes); itsdangerous, Flask and Django are not needed.

Flask's tagged JSON becomes plain JSON as follows; any other tag is ``UNREADABLE``::

    tag   Flask's type    adopted as
    " t"  tuple           a list
    " u"  UUID            its canonical text, "12345678-1234-5678-1234-567812345678"
    " m"  Markup          its HTML as a plain str (templates escape it again)
    " d"  datetime        ISO 8601 text in UTC, "2024-05-01T12:00:00+00:00"
    " di" a one-key dict  that dict (Flask's escape of a key that looks like a tag)
    " b"  bytes           refused: JSON has no bytes, and text would change their meaning
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import enum
import hashlib
import hmac
import json
import logging
import re
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta, timezone
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

from sessionware.config import CookieSettings
from sessionware.cookies import find_cookies, removal_cookie
from sessionware.engine import SessionEngine, _add_headers, fingerprint
from sessionware.events import SessionAdopted
from sessionware.session import Tracker
from sessionware.state import check_value

__all__ = [
    "MAX_DECOMPRESSED",
    "DjangoSignedCookie",
    "FlaskCookie",
    "LegacyCookieReader",
    "Refusal",
    "StarletteCookie",
]

logger = logging.getLogger("sessionware.adopt")

MAX_DECOMPRESSED = 64 * 1024
"""The most bytes a compressed cookie may inflate to (a 4 KB cookie holds far less)."""
MAX_VALUE = 16 * 1024
"""Longer values are refused before any work: browsers send at most 4 KB per cookie."""

Secret = str | bytes
Headers = list[tuple[bytes, bytes]]
_URLSAFE = re.compile(rb"[A-Za-z0-9_-]*")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MALFORMED = (ValueError, TypeError, IndexError, OverflowError, RecursionError, zlib.error)
"""What decoding a signed but malformed payload may raise (UnicodeDecodeError, binascii.Error
and JSONDecodeError are ValueErrors)."""


class Refusal(str, enum.Enum):
    """Why a legacy cookie was not adopted (the middleware starts an empty session)."""

    FORGED = "forged"
    """Not signed with any of the secrets: tampered with, or made under another key."""
    EXPIRED = "expired"
    """Signed longer ago than ``max_age`` (or, for itsdangerous, in the future)."""
    UNREADABLE = "unreadable"
    """Signed, but not a state sessionware can hold: not JSON, not an object, a Flask tag with
    no JSON equivalent, NaN, nested too deep, or larger than ``MAX_DECOMPRESSED``."""
    PICKLE = "pickle"
    """A pickle-serialised Django session: never unpickled (unpickling runs code)."""


@runtime_checkable
class LegacyCookieReader(Protocol):
    """What ``SessionMiddleware(adopt=[...])`` calls; see the module docstring."""

    source: str
    cookie_name: str

    def read(self, value: str, now: float) -> dict[str, Any] | Refusal: ...

    def removal(self, now: float) -> str: ...


class _Reader:
    """What the three readers share: the secrets, the cookie's place, refusing with a log."""

    source = ""
    _shape: re.Pattern[str]
    _separator = "."
    """In every value of ``_shape``: most values that are not are told by one search."""

    def __init__(
        self,
        secret_key: Secret | Sequence[Secret],
        cookie_name: str,
        path: str,
        domain: str | None,
    ) -> None:
        secrets: list[Any] = (
            [secret_key] if isinstance(secret_key, (str, bytes)) else list(secret_key)
        )
        if not secrets or not all(isinstance(s, (str, bytes)) and s for s in secrets):
            raise ValueError(
                f"secret_key must be the {self.source} app's secret (a non-empty str or bytes),"
                " or a list of them: the current one and any fallbacks still in use"
            )
        self.secrets = [s.encode("utf-8") if isinstance(s, str) else s for s in secrets]
        self.cookie_name = cookie_name
        # Browsers match a removal by name, path and domain; the prefixes also need Secure.
        prefixed = cookie_name[:9].lower().startswith(("__host-", "__secure-"))
        self._cookie = CookieSettings(
            name=cookie_name, secure=prefixed, same_site=None, path=path, domain=domain
        )
        self.path = path
        self.domain = domain

    def removal(self, now: float) -> str:
        """The Set-Cookie value that makes browsers drop the legacy cookie."""
        return removal_cookie(self._cookie, now)

    def claims(self, value: str) -> bool:
        """Whether ``value`` has this library's shape (a pattern, no crypto). No value
        sessionware seals has it, so the reader may share the session's cookie name."""
        return self._separator in value and self._shape.fullmatch(value) is not None

    def read(self, value: str, now: float) -> dict[str, Any] | Refusal:
        """The cookie's state, or why it is refused (logged); never raises."""
        if len(value) > MAX_VALUE:
            return self._refuse(value, Refusal.UNREADABLE, f"longer than {MAX_VALUE} characters")
        try:
            outcome = self._read(value, now)
        except _MALFORMED as exc:  # the message could quote the payload: only the type
            return self._refuse(value, Refusal.UNREADABLE, f"malformed ({type(exc).__name__})")
        if isinstance(outcome, tuple):
            return self._refuse(value, *outcome)
        try:
            check_value(outcome)
        except (ValueError, TypeError) as exc:
            return self._refuse(value, Refusal.UNREADABLE, f"cannot be stored: {exc}")
        return outcome

    def _read(self, value: str, now: float) -> dict[str, Any] | tuple[Refusal, str]:
        raise NotImplementedError

    def _refuse(self, value: str, refusal: Refusal, why: str) -> Refusal:
        level = logging.INFO if refusal is Refusal.EXPIRED else logging.WARNING
        logger.log(
            level,
            "%s session cookie %s not adopted (%s): %s; the session starts empty",
            self.source,
            fingerprint(value),
            refusal.value,
            why,
        )
        return refusal

    def __repr__(self) -> str:  # never the secrets
        return f"{type(self).__name__}(cookie_name={self.cookie_name!r})"


def _seconds(name: str, max_age: int | float | timedelta) -> float:
    if isinstance(max_age, timedelta):
        return max_age.total_seconds()
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)):
        raise TypeError(f"{name} is seconds (an int) or a timedelta, not {type(max_age).__name__}")
    return float(max_age)


def _b64url(text: bytes) -> bytes | None:
    """Unpadded URL-safe base64, as itsdangerous and Django write it; ``None`` if it is not."""
    if not _URLSAFE.fullmatch(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _payload(payload: bytes) -> bytes | tuple[Refusal, str]:
    """The bytes of an itsdangerous or Django payload: URL-safe base64, zlib-compressed when it
    starts with ``.``; inflated to at most ``MAX_DECOMPRESSED`` bytes (a zip bomb stops there)."""
    compressed = payload[:1] == b"."
    data = _b64url(payload[1:] if compressed else payload)
    if data is None:
        return Refusal.UNREADABLE, "payload is not base64"
    if not compressed:
        return data
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_DECOMPRESSED)
    if inflater.unconsumed_tail:
        return Refusal.UNREADABLE, f"payload inflates past {MAX_DECOMPRESSED} bytes"
    if not inflater.eof:
        return Refusal.UNREADABLE, "payload is not one whole zlib stream"
    return out


def _json_object(text: str) -> dict[str, Any] | None:
    data = json.loads(text)
    return data if type(data) is dict else None


class _ItsdangerousCookie(_Reader):
    """itsdangerous's ``TimestampSigner`` format: ``payload.timestamp.signature``, all base64,
    HMAC-SHA1 under a key derived from the secret and a salt."""

    max_age: float | None
    _derived: list[bytes]

    def _unsign(self, value: str, now: float) -> bytes | tuple[Refusal, str]:
        """The payload of a valid, unexpired signed value (itsdangerous ``unsign``)."""
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            return Refusal.FORGED, "not ASCII"
        signed, dot, signature = raw.rpartition(b".")
        mac = _b64url(signature) if dot else None
        if mac is None:
            return Refusal.FORGED, "no signature"
        matches = [
            hmac.compare_digest(hmac.new(key, signed, hashlib.sha1).digest(), mac)
            for key in self._derived
        ]
        if not any(matches):
            return Refusal.FORGED, "bad signature (another secret, or tampered with)"
        payload, dot, stamp = signed.rpartition(b".")
        time_bytes = _b64url(stamp) if dot else None
        if time_bytes is None or len(time_bytes) > 8:
            return Refusal.UNREADABLE, "no signing time"
        age = int(now) - int.from_bytes(time_bytes, "big")
        if self.max_age is not None and (age > self.max_age or age < 0):
            return Refusal.EXPIRED, f"signed {age} s ago, max_age is {self.max_age:g} s"
        return payload


class StarletteCookie(_ItsdangerousCookie):
    """Reads the cookie of ``starlette.middleware.sessions.SessionMiddleware``: standard base64
    of the JSON state, signed by ``itsdangerous.TimestampSigner(secret_key)`` (HMAC-SHA1, the
    ``django-concat`` derivation with salt ``itsdangerous.Signer``).

    Give the parameters the Starlette app gave its middleware: ``max_age`` (seconds or a
    timedelta; ``None``: no age limit, as Starlette), and ``path`` and ``domain`` so the removal
    matches the cookie.
    """

    source = "starlette"
    _shape = re.compile(r"[A-Za-z0-9+/]+={0,2}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
    """base64(JSON).time.signature"""

    def __init__(
        self,
        secret_key: Secret | Sequence[Secret],
        session_cookie: str = "session",
        max_age: int | timedelta | None = 14 * 24 * 60 * 60,
        *,
        path: str = "/",
        domain: str | None = None,
    ) -> None:
        super().__init__(secret_key, session_cookie, path, domain)
        self.max_age = None if max_age is None else _seconds("max_age", max_age)
        salt = b"itsdangerous.Signer"
        # itsdangerous's "django-concat" derivation: Starlette's format fixes SHA-1 (under HMAC).
        self._derived = [hashlib.sha1(salt + b"signer" + s).digest() for s in self.secrets]  # noqa: S324

    def _read(self, value: str, now: float) -> dict[str, Any] | tuple[Refusal, str]:
        payload = self._unsign(value, now)
        if isinstance(payload, tuple):
            return payload
        state = _json_object(base64.b64decode(payload, validate=True).decode("utf-8"))
        return (Refusal.UNREADABLE, "not a JSON object") if state is None else state


class FlaskCookie(_ItsdangerousCookie):
    """Reads Flask's default session cookie (``SecureCookieSessionInterface``): Flask's tagged
    JSON, zlib-compressed when that is shorter (a ``.`` in front), URL-safe base64, signed by
    ``itsdangerous.URLSafeTimedSerializer`` (HMAC-SHA1, the ``hmac`` key derivation).

    ``secret_key``: ``SECRET_KEY`` (with ``SECRET_KEY_FALLBACKS``, a list); ``salt`` and
    ``cookie_name`` as the app's session interface and ``SESSION_COOKIE_NAME``; ``max_age``:
    ``PERMANENT_SESSION_LIFETIME`` (Flask checks every cookie against it); ``path`` and
    ``domain``: ``SESSION_COOKIE_PATH`` and ``SESSION_COOKIE_DOMAIN``. Tags: module docstring.
    """

    source = "flask"
    _shape = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
    """[.]payload.time.signature"""

    def __init__(
        self,
        secret_key: Secret | Sequence[Secret],
        salt: str = "cookie-session",
        cookie_name: str = "session",
        *,
        max_age: int | timedelta = timedelta(days=31),
        path: str = "/",
        domain: str | None = None,
    ) -> None:
        super().__init__(secret_key, cookie_name, path, domain)
        self.max_age = _seconds("max_age", max_age)
        salt_bytes = salt.encode("utf-8")
        self._derived = [hmac.new(s, salt_bytes, hashlib.sha1).digest() for s in self.secrets]

    def _read(self, value: str, now: float) -> dict[str, Any] | tuple[Refusal, str]:
        payload = self._unsign(value, now)
        if isinstance(payload, tuple):
            return payload
        data = _payload(payload)
        if isinstance(data, tuple):
            return data
        state = _untag(json.loads(data.decode("utf-8")))
        if isinstance(state, _Untaggable):
            return Refusal.UNREADABLE, state.why
        return (Refusal.UNREADABLE, "not a JSON object") if type(state) is not dict else state


class DjangoSignedCookie(_Reader):
    """Reads a session of Django's ``signed_cookies`` backend (``django.core.signing``):
    URL-safe base64 of the JSON, zlib-compressed when shorter (a ``.`` in front), a base62
    signing time, HMAC-SHA256 under ``salted_hmac``'s key, all joined by ``:``.

    ``secret_key``: ``SECRET_KEY`` (with ``SECRET_KEY_FALLBACKS``, a list); ``cookie_name``:
    ``SESSION_COOKIE_NAME``; ``max_age``: ``SESSION_COOKIE_AGE`` (Django's default, two
    weeks); ``path`` and ``domain``: ``SESSION_COOKIE_PATH`` and ``SESSION_COOKIE_DOMAIN``.
    Only ``SESSION_SERIALIZER = JSONSerializer`` (Django's default) is read: a pickled session
    is refused (``Refusal.PICKLE``) and never unpickled.
    """

    source = "django"
    _separator = ":"
    _shape = re.compile(r"\.?[A-Za-z0-9_-]+:-?[0-9A-Za-z]+:[A-Za-z0-9_-]+")
    """[.]payload:time:signature"""

    def __init__(
        self,
        secret_key: Secret | Sequence[Secret],
        salt: str = "django.contrib.sessions.backends.signed_cookies",
        cookie_name: str = "sessionid",
        *,
        max_age: int | timedelta = 1_209_600,
        path: str = "/",
        domain: str | None = None,
    ) -> None:
        super().__init__(secret_key, cookie_name, path, domain)
        self.max_age = _seconds("max_age", max_age)
        key_salt = (salt + "signer").encode("utf-8")
        self._derived = [hashlib.sha256(key_salt + s).digest() for s in self.secrets]

    def _read(self, value: str, now: float) -> dict[str, Any] | tuple[Refusal, str]:
        signed, colon, signature = value.rpartition(":")
        if not colon:
            return Refusal.FORGED, "no signature"
        given = signature.encode("utf-8", "surrogatepass")
        message = signed.encode("utf-8", "surrogatepass")
        matches = [
            hmac.compare_digest(_django_signature(key, message), given) for key in self._derived
        ]
        if not any(matches):
            return Refusal.FORGED, "bad signature (another secret, or tampered with)"
        payload, colon, stamp = signed.rpartition(":")
        signed_at = _base62(stamp) if colon else None
        if signed_at is None:
            return Refusal.UNREADABLE, "no signing time"
        age = now - signed_at
        if age > self.max_age:
            return Refusal.EXPIRED, f"signed {age:.0f} s ago, max_age is {self.max_age:g} s"
        data = _payload(payload.encode("ascii"))
        if isinstance(data, tuple):
            return data
        if data[:1] == b"\x80":  # pickle protocol 2 and up, as Django's PickleSerializer wrote
            return Refusal.PICKLE, (
                "it was written by SESSION_SERIALIZER = PickleSerializer, and a pickle is never"
                " unpickled (it can run code); only JSONSerializer sessions are adopted"
            )
        state = _json_object(data.decode("latin-1"))  # as Django's JSONSerializer decodes
        return (Refusal.UNREADABLE, "not a JSON object") if state is None else state


def _django_signature(key: bytes, message: bytes) -> bytes:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def _base62(text: str) -> int | None:
    """Django's ``b62_decode`` (a leading ``-`` for negatives); ``None`` if it is not one."""
    digits = text[1:] if text[:1] == "-" else text
    if not digits or len(digits) > 12 or any(c not in _BASE62 for c in digits):
        return None
    number = 0
    for c in digits:
        number = number * 62 + _BASE62.index(c)
    return -number if text[:1] == "-" else number


# -- Flask's tagged JSON ----------------------------------------------------------------------


class _Untaggable:
    """A Flask value with no plain-JSON equivalent, and why."""

    def __init__(self, why: str) -> None:
        self.why = why


def _uuid(text: Any) -> Any:
    return str(uuid.UUID(hex=text)) if isinstance(text, str) else _Untaggable("bad UUID tag")


def _datetime(text: Any) -> Any:
    if not isinstance(text, str):
        return _Untaggable("bad datetime tag")
    moment = email.utils.parsedate_to_datetime(text)
    if moment.tzinfo is None:  # as werkzeug's parse_date: no zone means UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def _markup(text: Any) -> Any:
    return text if isinstance(text, str) else _Untaggable("bad Markup tag")


_SCALAR_TAGS: dict[str, Callable[[Any], Any]] = {" u": _uuid, " d": _datetime, " m": _markup}


def _untag(value: Any) -> Any:
    """Flask's ``TaggedJSONSerializer.loads`` after ``json.loads``, to plain JSON values (the
    table in the module docstring); an ``_Untaggable`` for what has none."""
    if type(value) is list:
        items = [_untag(item) for item in value]
        bad = next((i for i in items if isinstance(i, _Untaggable)), None)
        return bad if bad is not None else items
    if type(value) is not dict:
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == " t":
            return _untag(inner) if type(inner) is list else _Untaggable("bad tuple tag")
        if tag == " di":
            if type(inner) is not dict or len(inner) != 1:
                return _Untaggable("bad dict-escape tag")
            ((key, item),) = inner.items()
            if not key.endswith("__"):
                return _Untaggable("bad dict-escape tag")
            value = {key[:-2]: item}  # untagged below like any dict
        elif tag in _SCALAR_TAGS:
            return _SCALAR_TAGS[tag](inner)
        elif tag == " b":
            return _Untaggable("a bytes value (tag ' b'): JSON holds no bytes")
        elif tag.startswith(" "):
            return _Untaggable(f"a tag this reader does not know ({tag!r}: a custom JSONTag?)")
    result = {}
    for key, item in value.items():
        untagged = _untag(item)
        if isinstance(untagged, _Untaggable):
            return untagged
        result[key] = untagged
    return result


# -- the middleware's side: SessionMiddleware(adopt=[...]) ------------------------------------


class _Placed(NamedTuple):
    """A reader as the engine uses it: ``shared`` when it reads the session's own cookie name,
    ``replaced`` when the session's cookie also has its path and domain (so a session cookie
    in the response replaces the old one, and no removal may go with it)."""

    reader: LegacyCookieReader
    prefix: bytes
    shared: bool
    replaced: bool
    mark: bytes
    """What a header must hold to be worth a look: ``prefix``, and for a shared name the
    separator every value the reader claims holds (a request carrying only sessionware's
    cookie is passed over by two searches)."""


class _Found:
    """The old cookies one request carried: whose to remove, and what reading them gave."""

    __slots__ = ("outcomes", "removals")

    def __init__(self, removals: list[_Placed]) -> None:
        self.removals = removals
        self.outcomes: list[tuple[str, str]] = []
        """``(source, "adopted" or a Refusal's value)`` for each cookie read."""


class _Adopting(SessionEngine):
    """An engine whose requests may carry another library's session cookie. With no cookie of
    its own, the first one that reads becomes the session's state, as a change
    (``Tracker.fill(..., adopted=True)``: the status table stores it as a new session); one
    that does not read leaves the session empty. A response that stores the session removes the old cookies."""

    readers: tuple[_Placed, ...]
    marks: tuple[tuple[bytes, bytes], ...]
    """Each reader's ``prefix`` and ``mark``: what a request's headers are searched for."""

    def begin(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None, lazy: bool = False
    ) -> Tracker:
        headers = cookie_headers if type(cookie_headers) is list else list(cookie_headers)
        tracker = super().begin(headers, user_agent, lazy)
        tracker.legacy = None
        for header in headers:
            for prefix, mark in self.marks:
                if prefix in header and mark in header:
                    tracker.legacy = self._look(tracker, headers)
                    return tracker
        return tracker

    def _look(self, tracker: Tracker, headers: list[bytes]) -> _Found | None:
        """Find the old cookies; with no sessionware cookie, fill the session from them."""
        found: list[tuple[_Placed, list[str]]] = []
        for placed in self.readers:
            _, prefix, _, _, mark = placed
            for header in headers:
                if prefix in header and mark in header:
                    break
            else:
                continue
            values = find_cookies(headers, placed.reader.cookie_name)
            if not values:  # the name was only part of another cookie's
                continue
            if placed.shared:
                claimed = [v for v in values if placed.reader.claims(v)]  # type: ignore[attr-defined]
                if len(claimed) < len(values):  # a sessionware cookie too: it is the session
                    continue
                values = claimed
                tracker.cookies = []  # what the request carried under that name is the old one
            found.append((placed, values))
        if not found:
            return None
        legacy = _Found([placed for placed, _ in found])
        if tracker.cookies and find_cookies(tracker.cookies, self.cookie.name):
            return legacy  # the request's own session wins; the old cookies only go
        now = self.clock()
        for placed, values in found:
            for value in values:
                state = _read(placed.reader, value, now)
                source = placed.reader.source
                if isinstance(state, Refusal):
                    legacy.outcomes.append((source, state.value))
                    continue
                legacy.outcomes.append((source, "adopted"))
                tracker.fill(tracker.session, state, adopted=True)
                return legacy
        tracker.fill(tracker.session, {})
        return legacy

    def respond(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers | None:
        out = super().respond(tracker, status_code, headers)
        legacy = tracker.legacy
        if out is None or legacy is None:
            return out
        return self._removing(tracker, legacy, status_code, out)

    async def persist(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers:
        out = await super().persist(tracker, status_code, headers)
        legacy = tracker.legacy
        return out if legacy is None else self._removing(tracker, legacy, status_code, out)

    def _removing(
        self, tracker: Tracker, legacy: _Found, status_code: int, headers: Headers
    ) -> Headers:
        """``headers`` with the old cookies' removals, when the response stores the session
        (else they stay, to be read again: nothing of them was kept)."""
        tracker.legacy = None
        if not tracker.persists(status_code):
            return headers
        prefix = self._prefix
        replacing = any(n == b"set-cookie" and v.startswith(prefix) for n, v in headers)
        now = self.clock()
        for placed in legacy.removals:
            if not (placed.replaced and replacing):
                headers = _add_headers(headers, placed.reader.removal(now))
        for source, outcome in legacy.outcomes:
            if outcome == "adopted":
                logger.info("a %s session cookie was adopted as a new session", source)
            if self.on_event is not None:
                self._emit(SessionAdopted(source, outcome))
        return headers


def _read(reader: LegacyCookieReader, value: str, now: float) -> dict[str, Any] | Refusal:
    """``reader.read``, held to its promise: a state sessionware can store, or a ``Refusal``
    (another library's reader that raises or returns something else is refused, logged)."""
    try:
        state = reader.read(value, now)
    except Exception as exc:  # a reader of another library's: its message may quote the value
        logger.warning(
            "%s session cookie %s: its reader raised %s; the session starts empty",
            reader.source,
            fingerprint(value),
            type(exc).__name__,
        )
        return Refusal.UNREADABLE
    if isinstance(state, Refusal):
        return state
    try:
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise TypeError("not a dict of str keys")
        check_value(state)
    except (TypeError, ValueError) as exc:
        logger.warning(
            "%s session cookie %s: its reader gave a state sessionware cannot store (%s);"
            " the session starts empty",
            reader.source,
            fingerprint(value),
            type(exc).__name__,
        )
        return Refusal.UNREADABLE
    return state


_READER_MEMBERS = ("source", "cookie_name", "read", "removal")


def adopting(engine: SessionEngine, readers: object) -> SessionEngine:
    """``engine``, or for a non-empty list an engine like it that adopts the cookies
    ``readers`` read (``SessionMiddleware(adopt=...)``). Raises ``TypeError``/``ValueError``
    saying what to fix."""
    if isinstance(readers, (str, bytes)) or not isinstance(readers, (list, tuple)):
        raise TypeError(
            "adopt= is a list of readers of older session cookies, e.g."
            " adopt=[FlaskCookie(os.environ['SECRET_KEY'])] (sessionware.adopt)"
        )
    cookie = engine.cookie
    placed: list[_Placed] = []
    for reader in readers:
        _check_reader(reader)
        name = reader.cookie_name
        if any(p.reader.cookie_name == name for p in placed):
            raise ValueError(
                f"two readers in adopt= read the cookie {name!r}: a cookie is one library's;"
                " keep the reader of the library that set it"
            )
        shared = name == cookie.name
        if shared and not callable(getattr(reader, "claims", None)):
            raise ValueError(
                f"{reader!r} reads the cookie {name!r}, the session's own cookie name, and has"
                " no claims(value) to tell its cookies from sessionware's: give the session"
                " another cookie_name=, or give the reader a claims method (sessionware.adopt's"
                " readers have one)"
            )
        replaced = (
            shared
            and getattr(reader, "path", "/") == cookie.path
            and getattr(reader, "domain", None) == cookie.domain
        )
        separator = getattr(reader, "_separator", "") if shared else ""
        mark = separator.encode("latin-1") if isinstance(separator, str) else b""
        placed.append(_Placed(reader, f"{name}=".encode("latin-1"), shared, replaced, mark))
    if not placed:
        return engine
    cls = _adopting_class(type(engine))
    # A new instance, its attributes set in the order ``__init__`` set them: an instance whose
    # class was swapped keeps its old class's attribute layout, and CPython then specializes no
    # read of its attributes (some 10 000 instructions more per request).
    adopting_engine = cast(_Adopting, cls.__new__(cls))
    for name, value in vars(engine).items():
        setattr(adopting_engine, name, value)
    adopting_engine.readers = tuple(placed)
    adopting_engine.marks = tuple((p.prefix, p.mark) for p in placed)
    return adopting_engine


def _check_reader(reader: object) -> None:
    missing = [m for m in _READER_MEMBERS if not hasattr(reader, m)]
    if missing:
        why = f"has no {', '.join(missing)}"
    elif not callable(reader.read) or not callable(reader.removal):  # type: ignore[attr-defined]
        why = "has read or removal that is not a method"
    elif not all(isinstance(getattr(reader, m), str) for m in ("source", "cookie_name")):
        why = "has a source or cookie_name that is not a str"
    else:
        try:
            CookieSettings(name=reader.cookie_name)  # type: ignore[attr-defined]
            return
        except ValueError:
            why = f"reads {reader.cookie_name!r}, which is not a cookie name"  # type: ignore[attr-defined]
    raise TypeError(
        f"adopt= takes readers of older session cookies (sessionware.adopt's StarletteCookie,"
        f" FlaskCookie, DjangoSignedCookie, or an object with source, cookie_name,"
        f" read(value, now) and removal(now)); {type(reader).__name__} {why}"
    )


_ADOPTING: dict[type[SessionEngine], type[SessionEngine]] = {}


def _adopting_class(base: type[SessionEngine]) -> type[SessionEngine]:
    """``base`` with ``_Adopting`` in front: only a middleware given readers pays for them."""
    if base not in _ADOPTING:
        _ADOPTING[base] = type(f"Adopting{base.__name__.lstrip('_')}", (_Adopting, base), {})
    return _ADOPTING[base]
