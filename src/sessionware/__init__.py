"""sessionware: sessions for ASGI apps, with actix-session's design and wire format."""

from __future__ import annotations

from sessionware.admin import SessionAdmin, get_admin
from sessionware.codec import TaggedJSON
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
    OriginRefused,
    SessionAdopted,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionEvicted,
    SessionExpired,
    SessionLoaded,
    SessionPurged,
    SessionRenewed,
    SessionRevoked,
    SessionRotated,
    SessionsSwept,
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
    "OriginRefused",
    "PersistError",
    "PersistentSession",
    "Session",
    "SessionAdmin",
    "SessionAdopted",
    "SessionConflictError",
    "SessionCreated",
    "SessionEnded",
    "SessionError",
    "SessionEvent",
    "SessionEvicted",
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
    "SessionsSwept",
    "SessionwareError",
    "StoreError",
    "StoreFailed",
    "TaggedJSON",
    "TtlExtensionPolicy",
    "csrf_token",
    "flash",
    "get_admin",
    "get_flashed_messages",
    "get_session",
]

__version__ = "0.1.0"
