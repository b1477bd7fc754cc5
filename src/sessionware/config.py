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


@dataclass(frozen=True)
class BrowserSession:
    """The cookie lasts until the browser closes (no Max-Age); the state lives ``state_ttl``.

    ``max_age`` is an absolute timeout counted from the session's creation, whatever its activity.
    """

    state_ttl: timedelta = timedelta(days=1)
    state_ttl_extension_policy: TtlExtensionPolicy = TtlExtensionPolicy.ON_STATE_CHANGES
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        _check_ttl("state_ttl", self.state_ttl)
        _check_ttl("max_age", self.max_age, optional=True)
        if not isinstance(self.state_ttl_extension_policy, TtlExtensionPolicy):
            raise TypeError("state_ttl_extension_policy must be a TtlExtensionPolicy")

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
    """

    session_ttl: timedelta = timedelta(days=1)
    ttl_extension_policy: TtlExtensionPolicy = TtlExtensionPolicy.ON_STATE_CHANGES
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        _check_ttl("session_ttl", self.session_ttl)
        _check_ttl("max_age", self.max_age, optional=True)
        if not isinstance(self.ttl_extension_policy, TtlExtensionPolicy):
            raise TypeError("ttl_extension_policy must be a TtlExtensionPolicy")

    @property
    def ttl(self) -> timedelta:
        return self.session_ttl

    @property
    def policy(self) -> TtlExtensionPolicy:
        return self.ttl_extension_policy

    @property
    def cookie_max_age(self) -> timedelta | None:
        return self.session_ttl


# RFC 6265 token characters for the name; path and domain may not hold ';', ',', space or controls.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(r"[\x00-\x20;,\x7f]")


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
        if not self.path.startswith("/") or _UNSAFE.search(self.path):
            raise ValueError(
                f"cookie_path {self.path!r} must start with '/' and hold no ';', ',', spaces or"
                " control characters"
            )
        if self.domain is not None and (not self.domain or _UNSAFE.search(self.domain)):
            raise ValueError(
                f"cookie_domain {self.domain!r} must be a host name without ';', ',', spaces or"
                " control characters (or None for no Domain attribute)"
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
        if self.name.startswith("__Host-") and (
            self.domain is not None or self.path != "/" or not self.secure
        ):
            raise ValueError(
                "a '__Host-' cookie needs cookie_secure=True, cookie_path='/' and no"
                " cookie_domain (browsers drop it otherwise)"
            )
        if self.name.startswith("__Secure-") and not self.secure:
            raise ValueError("a '__Secure-' cookie needs cookie_secure=True")
