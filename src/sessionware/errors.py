"""Every exception sessionware raises, in one tree, so ``except SessionwareError`` catches them all.

::

    SessionwareError
      SessionError            a Session refused an operation
        SessionGetError         a stored value is not of the type asked for
        SessionInsertError      a value JSON cannot hold (also a TypeError)
        SessionUpdateError      update()'s function failed or returned such a value
        SessionNotLoadedError   a lazy session used before ``await session.load()``
        SessionConflictError    the session was renewed under this request (the 409)
      StoreError              a store failed to answer: the middleware answers an opaque 503
      NotSupportedError       the store cannot do this at all
      PersistError            the middleware could not load or save a session (503 or 500)
      DeserializationError    stored or sealed bytes are not a session state (also a ValueError)
      ProofError              a DBSC proof that proves nothing
        StaleChallengeError     a proof for a challenge that is used, expired or not this one's
      DecodeError             the CLI could not open a cookie (also a ValueError)

``LoadError``, ``SaveError`` and ``UpdateError`` were the first version's names for store
failures; nothing raises them by those names, so they are ``StoreError`` itself.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "DeserializationError",
    "LoadError",
    "NotSupportedError",
    "PersistError",
    "ProofError",
    "SaveError",
    "SessionConflictError",
    "SessionError",
    "SessionGetError",
    "SessionInsertError",
    "SessionNotLoadedError",
    "SessionUpdateError",
    "SessionwareError",
    "StaleChallengeError",
    "StoreError",
    "UpdateError",
]


class SessionwareError(Exception):
    """Base of every error sessionware raises."""


class SessionError(SessionwareError):
    """Base of the errors a ``Session`` raises."""


class SessionGetError(SessionError):
    """A stored value could not be read as the type asked for."""


class SessionInsertError(SessionError, TypeError):
    """A value is not JSON-serialisable (or not storable as JSON); the session is unchanged."""


class SessionUpdateError(SessionError):
    """``update``'s function failed, or returned a value that cannot be stored."""


class SessionNotLoadedError(SessionError, RuntimeError):
    """A lazily loaded session was used before ``await session.load()``."""


class SessionConflictError(SessionError):
    """The session was renewed (a login) after this request loaded it: its changes were not
    stored, and the request is answered with an opaque 409."""


class StoreError(SessionwareError):
    """The store failed to answer (connection, timeout, server error): an opaque 503."""


LoadError = StoreError
SaveError = StoreError
UpdateError = StoreError


class NotSupportedError(SessionwareError):
    """The store cannot do this (the cookie store keeps no per-user index, for one)."""


class PersistError(SessionwareError):
    """The session could not be loaded or saved; the adapter answers ``status_code``, opaquely.

    503 when the store failed (try again later), 500 when the state itself cannot be stored,
    409 when a renewal got there first. Its message is safe to log: it never holds a key, a
    cookie value or state.
    """

    def __init__(self, message: str, *, status_code: int = 503) -> None:
        super().__init__(message)
        self.status_code = status_code


class DeserializationError(SessionwareError, ValueError):
    """Stored or sealed bytes are not a session state."""


class ProofError(SessionwareError):
    """A ``Secure-Session-Response`` that does not prove possession of the device key."""


class StaleChallengeError(ProofError):
    """A well-formed proof for a challenge that expired, was used, or is not this binding's."""


class DecodeError(SessionwareError, ValueError):
    """``sessionware decode`` could not open the cookie or read the state it carries."""
