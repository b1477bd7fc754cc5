"""The root of every exception sessionware raises, so ``except SessionwareError`` catches them all.

::

    SessionwareError
      SessionError          a Session refused an operation (sessionware.session)
        SessionGetError SessionInsertError SessionUpdateError SessionNotLoadedError
      StoreError            a store failed to answer (sessionware.stores.base)
        LoadError SaveError UpdateError
      NotSupportedError     the store cannot do this at all
      PersistError          the middleware could not load or save a session (sessionware.engine)
      DeserializationError  stored or sealed bytes are not a session state (sessionware.state)
"""

from __future__ import annotations

__all__ = ["SessionwareError"]


class SessionwareError(Exception):
    """Base of every error sessionware raises."""
