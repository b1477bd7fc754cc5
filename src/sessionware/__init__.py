"""sessionware: sessions for ASGI apps, with actix-session's design and wire format."""

from __future__ import annotations

from sessionware.admin import SessionAdmin, get_admin
from sessionware.config import BrowserSession, PersistentSession, TtlExtensionPolicy
from sessionware.crypto import ContentSecurity, Key
from sessionware.csrf import CSRFMiddleware, csrf_token
from sessionware.dbsc import DeviceBinding
from sessionware.errors import (
    NotSupportedError,
    PersistError,
    SessionConflictError,
    SessionError,
    SessionGetError,
    SessionInsertError,
    SessionNotLoadedError,
    SessionUpdateError,
    SessionwareError,
    StoreError,
)
from sessionware.events import (
    ConflictEnded,
    DecodeFailed,
    MergeRetry,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionExpired,
    SessionLoaded,
    SessionPurged,
    SessionRenewed,
    SessionRevoked,
    SessionRotated,
    SessionSuperseded,
    StoreFailed,
)
from sessionware.flash import flash, get_flashed_messages
from sessionware.middleware import SessionMiddleware, get_session
from sessionware.session import Session, SessionStatus
from sessionware.transport import CookieTransport, HeaderTransport

__all__ = [
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
    "PersistError",
    "PersistentSession",
    "Session",
    "SessionAdmin",
    "SessionConflictError",
    "SessionCreated",
    "SessionEnded",
    "SessionError",
    "SessionEvent",
    "SessionExpired",
    "SessionGetError",
    "SessionInsertError",
    "SessionLoaded",
    "SessionMiddleware",
    "SessionNotLoadedError",
    "SessionPurged",
    "SessionRenewed",
    "SessionRevoked",
    "SessionRotated",
    "SessionStatus",
    "SessionSuperseded",
    "SessionUpdateError",
    "SessionwareError",
    "StoreError",
    "StoreFailed",
    "TtlExtensionPolicy",
    "csrf_token",
    "flash",
    "get_admin",
    "get_flashed_messages",
    "get_session",
]

__version__ = "0.1.0"
