"""Configuration errors fail at construction with a message that says what to change."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessionware import BrowserSession, Key, PersistentSession, SessionMiddleware
from sessionware.config import CookieSettings
from sessionware.stores import MemorySessionStore


async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": "__Host-id", "domain": "example.com"}, "__Host-"),
        ({"name": "__Host-id", "path": "/app"}, "__Host-"),
        ({"name": "__Host-id", "secure": False}, "__Host-"),
        ({"name": "__Secure-id", "secure": False}, "__Secure-"),
        ({"same_site": "none", "secure": False}, "needs cookie_secure"),
        ({"partitioned": True, "secure": False}, "needs cookie_secure"),
        ({"same_site": "sometimes"}, "cookie_same_site"),
        ({"name": "a;b"}, "cookie name"),
        ({"name": "a b"}, "cookie name"),
        ({"name": "id\r\nX-Evil: 1"}, "cookie name"),
        ({"name": ""}, "cookie name"),
        ({"path": "/a;b"}, "cookie_path"),
        ({"path": "relative"}, "cookie_path"),
        ({"path": "/a\nb"}, "cookie_path"),
        ({"domain": "a.com; x"}, "cookie_domain"),
        ({"domain": "a,com"}, "cookie_domain"),
    ],
)
def test_bad_cookie_settings(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CookieSettings(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"path": "/a\u2028b"}, r"cookie_path .* non-ASCII .*U\+2028"),
        ({"path": "/caf\u00e9"}, r"cookie_path .*percent-encode"),
        ({"path": "/a b"}, r"cookie_path .*U\+0020"),
        ({"path": "/a\x7fb"}, r"cookie_path .*U\+007F"),
        ({"domain": "ex\u0100mple.com"}, r"cookie_domain .*IDNA"),
        ({"domain": "example.com\u2028"}, r"cookie_domain .*U\+2028"),
        ({"domain": "a b.com"}, "cookie_domain"),
        ({"name": "__host-id", "domain": "example.com"}, "set cookie_domain=None"),
        ({"name": "__HOST-id", "path": "/app"}, "set cookie_path='/'"),
        ({"name": "__HoSt-id", "secure": False}, "set cookie_secure=True"),
        ({"name": "__secure-id", "secure": False}, "'__Secure-' prefix"),
        ({"name": "__SECURE-id", "secure": False}, "'__Secure-' prefix"),
        ({"name": "__host-id", "secure": False}, "set cookie_secure=True"),
        ({"same_site": "None", "secure": False}, "needs cookie_secure"),
    ],
)
def test_cookie_settings_that_browsers_drop_fail_at_construction(
    options: dict[str, object], match: str
) -> None:
    """Issue 16 item 4: non-ASCII path or domain, prefixes in any case, SameSite=None."""
    with pytest.raises(ValueError, match=match):
        CookieSettings(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"cookie_path": "/a\u2028b"},
        {"cookie_domain": "ex\u0100mple.com"},
        {"cookie_name": "__host-id", "cookie_domain": "example.com"},
        {"cookie_name": "__HOST-id", "cookie_path": "/app"},
        {"cookie_name": "__secure-id", "cookie_secure": False},
        {"cookie_same_site": "none", "cookie_secure": False},
    ],
)
def test_middleware_refuses_those_settings_at_construction(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="cookie_"):
        SessionMiddleware(app, store=MemorySessionStore(), key=Key.generate(), **options)  # type: ignore[arg-type]


def test_cookie_attributes_that_browsers_keep_pass() -> None:
    assert CookieSettings(path="/a%E2%80%A8b", domain="xn--exmple-cua.com").domain is not None
    assert CookieSettings(name="__host-id").name == "__host-id"
    assert CookieSettings(name="__Secure-id", path="/app", domain="example.com").secure


def test_good_settings_and_same_site_case() -> None:
    assert CookieSettings(name="__Host-id").name == "__Host-id"
    assert CookieSettings(same_site="Strict").same_site == "strict"  # type: ignore[arg-type]


def test_lifecycles() -> None:
    assert BrowserSession().ttl == timedelta(days=1) and BrowserSession().cookie_max_age is None
    persistent = PersistentSession(session_ttl=timedelta(hours=2))
    assert persistent.cookie_max_age == timedelta(hours=2) == persistent.ttl
    with pytest.raises(ValueError, match="at least one second"):
        BrowserSession(state_ttl=timedelta(0))
    with pytest.raises(TypeError, match="timedelta"):
        PersistentSession(session_ttl=3600)  # type: ignore[arg-type]


def test_middleware_needs_exactly_one_of_key_and_keys() -> None:
    store = MemorySessionStore()
    with pytest.raises(ValueError, match="exactly one of key"):
        SessionMiddleware(app, store=store)
    with pytest.raises(ValueError, match="exactly one of key"):
        SessionMiddleware(app, store=store, key=Key.generate(), keys=[Key.generate()])
    with pytest.raises(TypeError, match="Key"):
        SessionMiddleware(app, store=store, key=b"x" * 64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cookie_same_site"):
        SessionMiddleware(app, store=store, key=Key.generate(), cookie_same_site="bogus")  # type: ignore[arg-type]


def test_an_empty_key_list_is_named_as_such() -> None:
    """Issue 16 item 9: ``keys=[]`` said the keys "must be Key objects"."""
    with pytest.raises(TypeError, match="keys= is an empty list") as info:
        SessionMiddleware(app, store=MemorySessionStore(), keys=[])
    assert "must be sessionware.Key objects" not in str(info.value)


def test_public_names_are_exactly_these() -> None:
    import sessionware
    import sessionware.stores

    assert sorted(sessionware.__all__) == sorted(
        [
            "BrowserSession",
            "CSRFMiddleware",
            "ConflictEnded",
            "ContentSecurity",
            "CookieTransport",
            "DecodeFailed",
            "DeviceBinding",
            "HeaderTransport",
            "Key",
            "MergeRetry",
            "NotSupportedError",
            "OriginRefused",
            "PersistError",
            "PersistentSession",
            "Session",
            "SessionAdmin",
            "SessionAdopted",
            "SessionConflictError",
            "SessionEnded",
            "SessionEvicted",
            "SessionError",
            "SessionGetError",
            "SessionInsertError",
            "SessionMiddleware",
            "SessionNotLoadedError",
            "SessionStatus",
            "SessionUpdateError",
            "SessionwareError",
            "TaggedJSON",
            "SessionCreated",
            "SessionEvent",
            "SessionExpired",
            "SessionLoaded",
            "SessionPurged",
            "SessionRenewed",
            "SessionRevoked",
            "SessionRotated",
            "SessionSuperseded",
            "SessionsSwept",
            "StoreError",
            "StoreFailed",
            "TtlExtensionPolicy",
            "csrf_token",
            "flash",
            "get_admin",
            "get_flashed_messages",
            "get_session",
        ]
    )
    for name in sessionware.__all__:
        assert getattr(sessionware, name) is not None
    for name in sessionware.stores.__all__:
        assert getattr(sessionware.stores, name) is not None
