"""Session stores: the record-store contract, the cookie backend, and the record stores.

The Redis and PostgreSQL stores import their drivers only when first used, so
``pip install sessionware`` stays at one dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sessionware.state import StoredState
from sessionware.stores.base import (
    ABSENT,
    BatchIndex,
    BatchRecords,
    LoadError,
    NotSupportedError,
    Record,
    RecordStore,
    Replace,
    SaveError,
    SessionInfo,
    SessionKey,
    StoreError,
    UpdateError,
    UserIndex,
    UserSessionsMixin,
    generate_session_key,
)
from sessionware.stores.cookie import CookieSessionStore
from sessionware.stores.memory import MemorySessionStore

if TYPE_CHECKING:
    from sessionware.stores.migrating import MigratingStore
    from sessionware.stores.postgres import PostgresSessionStore
    from sessionware.stores.redis import RedisSessionStore
    from sessionware.stores.sqlite import SQLiteSessionStore

__all__ = [
    "ABSENT",
    "BatchIndex",
    "BatchRecords",
    "CachedSessionStore",
    "CookieSessionStore",
    "LoadError",
    "MemcachedSessionStore",
    "MemorySessionStore",
    "MigratingStore",
    "MySQLSessionStore",
    "NotSupportedError",
    "PostgresSessionStore",
    "Record",
    "RecordStore",
    "RedisSessionStore",
    "Replace",
    "SQLiteSessionStore",
    "SaveError",
    "SessionInfo",
    "SessionKey",
    "SessionStore",
    "StoreError",
    "StoredState",
    "UpdateError",
    "UserIndex",
    "UserIndexedStore",
    "UserSessionsMixin",
    "generate_session_key",
]


SessionStore = RecordStore | CookieSessionStore
"""What ``SessionMiddleware(store=...)`` takes: a record store, or the cookie store."""


@runtime_checkable
class UserIndexedStore(Protocol):
    """A store that can list and end a user's sessions (``Session.bind_user``)."""

    async def sessions_for(self, user_id: str) -> list[SessionInfo]: ...

    async def delete_all_for(self, user_id: str, except_key: str | None = None) -> int: ...

    async def end_session(self, session_id: str) -> bool: ...


_LAZY = {
    "RedisSessionStore": "sessionware.stores.redis",
    "SQLiteSessionStore": "sessionware.stores.sqlite",
    "PostgresSessionStore": "sessionware.stores.postgres",
    "MySQLSessionStore": "sessionware.stores.mysql",
    "MemcachedSessionStore": "sessionware.stores.memcached",
    "CachedSessionStore": "sessionware.stores.cached",
    "MigratingStore": "sessionware.stores.migrating",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sessionware.stores' has no attribute {name!r}")
