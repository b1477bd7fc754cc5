"""Configuration: session lifecycles (actix's BrowserSession / PersistentSession) and cookie settings.

Everything is checked at construction, so a misconfiguration fails at startup with a message that
says what to change, never later as a cookie the browser silently drops.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

__all__ = [
    "BrowserSession",
    "CookieSettings",
    "PersistentSession",
    "SameSite",
    "TtlExtensionPolicy",
]

SameSite = Literal["lax", "strict", "none"]


class TtlExtensionPolicy(enum.Enum):
    """When a session's TTL is pushed back: on every request, or only when its state changes."""

    ON_EVERY_REQUEST = "on_every_request"
    ON_STATE_CHANGES = "on_state_changes"


def _check_ttl(name: str, ttl: timedelta | None, *, optional: bool = False) -> None:
    if ttl is None and optional:
        return
    if not isinstance(ttl, timedelta):
        raise TypeError(f"{name} must be a datetime.timedelta, not {type(ttl).__name__}")
    if ttl.total_seconds() < 1:
        raise ValueError(f"{name} must be at least one second, got {ttl}")


def _check_touch_after(
    touch_after: timedelta | None, ttl: timedelta, ttl_name: str, policy: TtlExtensionPolicy
) -> None:
    """``touch_after`` debounces ON_EVERY_REQUEST extensions, so it must be shorter than the TTL."""
    if touch_after is None:
        return
    if not isinstance(touch_after, timedelta):
        raise TypeError(
            f"touch_after must be a datetime.timedelta or None, not {type(touch_after).__name__}"
        )
    if touch_after < timedelta(seconds=1):  # expiry times are stored in whole seconds
        raise ValueError(f"touch_after must be at least one second, got {touch_after}")
    if touch_after >= ttl:
        raise ValueError(
            f"touch_after ({touch_after}) must be shorter than {ttl_name} ({ttl}): a session"
            " extended less often than it lives would expire while in use"
        )
    if policy is not TtlExtensionPolicy.ON_EVERY_REQUEST:
        raise ValueError(
            "touch_after only applies with TtlExtensionPolicy.ON_EVERY_REQUEST (under"
            " ON_STATE_CHANGES a request that changes nothing never extends the session)"
        )


@dataclass(frozen=True)
class BrowserSession:
    """The cookie lasts until the browser closes (no Max-Age); the state lives ``state_ttl``.

    ``max_age`` is an absolute timeout counted from the session's creation, whatever its activity.
    ``touch_after`` (ON_EVERY_REQUEST only): extend the TTL only once that long has passed since
    the last extension, so a burst of requests costs one store write, not one each.
    """

    state_ttl: timedelta = timedelta(days=1)
    state_ttl_extension_policy: TtlExtensionPolicy = TtlExtensionPolicy.ON_STATE_CHANGES
    max_age: timedelta | None = None
    touch_after: timedelta | None = None

    def __post_init__(self) -> None:
        _check_ttl("state_ttl", self.state_ttl)
        _check_ttl("max_age", self.max_age, optional=True)
        if not isinstance(self.state_ttl_extension_policy, TtlExtensionPolicy):
            raise TypeError("state_ttl_extension_policy must be a TtlExtensionPolicy")
        _check_touch_after(
            self.touch_after, self.state_ttl, "state_ttl", self.state_ttl_extension_policy
        )

    @property
    def ttl(self) -> timedelta:
        return self.state_ttl

    @property
    def policy(self) -> TtlExtensionPolicy:
        return self.state_ttl_extension_policy

    @property
    def cookie_max_age(self) -> timedelta | None:
        return None


@dataclass(frozen=True)
class PersistentSession:
    """The cookie and the state both live ``session_ttl`` (the cookie carries Max-Age).

    ``max_age`` is an absolute timeout counted from the session's creation, whatever its activity.
    ``touch_after`` (ON_EVERY_REQUEST only): extend the TTL only once that long has passed since
    the last extension, so a burst of requests costs one store write, not one each.
    """

    session_ttl: timedelta = timedelta(days=1)
    ttl_extension_policy: TtlExtensionPolicy = TtlExtensionPolicy.ON_STATE_CHANGES
    max_age: timedelta | None = None
    touch_after: timedelta | None = None

    def __post_init__(self) -> None:
        _check_ttl("session_ttl", self.session_ttl)
        _check_ttl("max_age", self.max_age, optional=True)
        if not isinstance(self.ttl_extension_policy, TtlExtensionPolicy):
            raise TypeError("ttl_extension_policy must be a TtlExtensionPolicy")
        _check_touch_after(
            self.touch_after, self.session_ttl, "session_ttl", self.ttl_extension_policy
        )

    @property
    def ttl(self) -> timedelta:
        return self.session_ttl

    @property
    def policy(self) -> TtlExtensionPolicy:
        return self.ttl_extension_policy

    @property
    def cookie_max_age(self) -> timedelta | None:
        return self.session_ttl


# RFC 6265 token characters for the name; path and domain must be printable ASCII without ';' or ','.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(r"[^\x21-\x7e]|[;,]")


def _fault(text: str) -> str:
    """Which character of ``text`` a cookie attribute cannot hold, and where."""
    found = _UNSAFE.search(text)
    if found is None:
        return ""
    char = found.group()
    shown = repr(char) if char.isprintable() and char != " " else f"U+{ord(char):04X}"
    return f" (character {found.start() + 1} is {shown})"


@dataclass(frozen=True)
class CookieSettings:
    """The session cookie's name and attributes, validated."""

    name: str = "id"
    secure: bool = True
    http_only: bool = True
    same_site: SameSite | None = "lax"
    path: str = "/"
    domain: str | None = None
    partitioned: bool = False

    def __post_init__(self) -> None:
        name: object = self.name
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(
                f"cookie_name {self.name!r} is not a valid cookie name: use letters, digits and"
                " !#$%&'*+-.^_`|~ only (no spaces, ';', ',', '=' or control characters)"
            )
        path: object = self.path
        if not isinstance(path, str) or not path.startswith("/") or _UNSAFE.search(path):
            where = _fault(path) if isinstance(path, str) else ""
            raise ValueError(
                f"cookie_path {self.path!r} must start with '/' and hold only printable ASCII:"
                f" no ';', ',', spaces, control or non-ASCII characters{where}; percent-encode"
                " such characters (urllib.parse.quote(path))"
            )
        domain: object = self.domain
        if domain is not None and (
            not isinstance(domain, str) or not domain or _UNSAFE.search(domain)
        ):
            where = _fault(domain) if isinstance(domain, str) else ""
            raise ValueError(
                f"cookie_domain {self.domain!r} must be a host name in printable ASCII, without"
                f" ';', ',', spaces, control or non-ASCII characters{where}; write an"
                " internationalised name in its IDNA form ('xn--...', from"
                " name.encode('idna').decode()) or pass None for no Domain attribute"
            )
        same_site = self.same_site.lower() if isinstance(self.same_site, str) else self.same_site
        if same_site not in ("lax", "strict", "none", None):
            raise ValueError(
                f"cookie_same_site must be 'lax', 'strict', 'none' or None, not {self.same_site!r}"
            )
        object.__setattr__(self, "same_site", same_site)
        if same_site == "none" and not self.secure:
            raise ValueError("cookie_same_site='none' needs cookie_secure=True (browsers drop it)")
        if self.partitioned and not self.secure:
            raise ValueError("cookie_partitioned=True needs cookie_secure=True (browsers drop it)")
        # RFC 6265bis §4.1.3: browsers match the prefixes case-insensitively.
        prefix = self.name[:9].lower()
        if prefix.startswith("__host-"):
            problems = [
                *(["cookie_secure=True"] if not self.secure else []),
                *(["cookie_path='/'"] if self.path != "/" else []),
                *(["cookie_domain=None"] if self.domain is not None else []),
            ]
            if problems:
                raise ValueError(
                    f"the cookie name {self.name!r} has the '__Host-' prefix (matched in any"
                    " case), which browsers only keep with cookie_secure=True, cookie_path='/'"
                    f" and no cookie_domain: set {', '.join(problems)} or rename the cookie"
                )
        if prefix == "__secure-" and not self.secure:
            raise ValueError(
                f"the cookie name {self.name!r} has the '__Secure-' prefix (matched in any case),"
                " which browsers only keep with cookie_secure=True: set cookie_secure=True or"
                " rename the cookie"
            )
