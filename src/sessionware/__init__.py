"""sessionware: sessions for ASGI apps, with actix-session's design and wire format."""

from __future__ import annotations

from sessionware.config import BrowserSession, PersistentSession, TtlExtensionPolicy
from sessionware.crypto import ContentSecurity, Key
from sessionware.csrf import CSRFMiddleware, csrf_token
from sessionware.dbsc import DeviceBinding
from sessionware.errors import SessionwareError
from sessionware.events import (
    ConflictEnded,
    DecodeFailed,
    MergeRetry,
    SessionCreated,
    SessionEvent,
    SessionExpired,
    SessionLoaded,
    SessionPurged,
    SessionRenewed,
    SessionRevoked,
    StoreFailed,
)
from sessionware.flash import flash, get_flashed_messages
from sessionware.middleware import SessionMiddleware, get_session
from sessionware.session import (
    Session,
    SessionError,
    SessionGetError,
    SessionInsertError,
    SessionNotLoadedError,
    SessionStatus,
    SessionUpdateError,
)

__all__ = [
    "BrowserSession",
    "CSRFMiddleware",
    "ConflictEnded",
    "ContentSecurity",
    "DecodeFailed",
    "DeviceBinding",
    "Key",
    "MergeRetry",
    "PersistentSession",
    "Session",
    "SessionCreated",
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
    "SessionStatus",
    "SessionUpdateError",
    "SessionwareError",
    "StoreFailed",
    "TtlExtensionPolicy",
    "csrf_token",
    "flash",
    "get_flashed_messages",
    "get_session",
]

__version__ = "0.1.0"
