"""Session stores: the contract, and the cookie, memory, Redis, SQLite and PostgreSQL stores.

The Redis and PostgreSQL stores import their drivers only when first used, so
``pip install sessionware`` stays at one dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionware.state import StoredState
from sessionware.stores.base import (
    Changes,
    LoadError,
    NotSupportedError,
    SaveError,
    SessionInfo,
    SessionKey,
    SessionStore,
    UpdateError,
    UserIndexedStore,
    generate_session_key,
)
from sessionware.stores.cookie import CookieSessionStore
from sessionware.stores.memory import MemorySessionStore

if TYPE_CHECKING:
    from sessionware.stores.postgres import PostgresSessionStore
    from sessionware.stores.redis import RedisSessionStore
    from sessionware.stores.sqlite import SQLiteSessionStore

__all__ = [
    "CachedSessionStore",
    "Changes",
    "CookieSessionStore",
    "LoadError",
    "MemcachedSessionStore",
    "MemorySessionStore",
    "MySQLSessionStore",
    "NotSupportedError",
    "PostgresSessionStore",
    "RedisSessionStore",
    "SQLiteSessionStore",
    "SaveError",
    "SessionInfo",
    "SessionKey",
    "SessionStore",
    "StoredState",
    "UpdateError",
    "UserIndexedStore",
    "generate_session_key",
]

_LAZY = {
    "RedisSessionStore": "sessionware.stores.redis",
    "SQLiteSessionStore": "sessionware.stores.sqlite",
    "PostgresSessionStore": "sessionware.stores.postgres",
    "MySQLSessionStore": "sessionware.stores.mysql",
    "MemcachedSessionStore": "sessionware.stores.memcached",
    "CachedSessionStore": "sessionware.stores.cached",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sessionware.stores' has no attribute {name!r}")
