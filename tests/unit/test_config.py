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


def test_public_names_are_exactly_these() -> None:
    import sessionware
    import sessionware.stores

    assert sorted(sessionware.__all__) == sorted(
        [
            "BrowserSession",
            "CSRFMiddleware",
            "ContentSecurity",
            "Key",
            "PersistentSession",
            "Session",
            "SessionError",
            "SessionGetError",
            "SessionInsertError",
            "SessionMiddleware",
            "SessionNotLoadedError",
            "SessionStatus",
            "SessionUpdateError",
            "TtlExtensionPolicy",
            "csrf_token",
            "flash",
            "get_flashed_messages",
            "get_session",
        ]
    )
    for name in sessionware.__all__:
        assert getattr(sessionware, name) is not None
    for name in sessionware.stores.__all__:
        assert getattr(sessionware.stores, name) is not None
