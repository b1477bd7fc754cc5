"""MemcachedSessionStore: records in memcached, through emcache; the version is the cas token.

Commands per operation (``key`` is ``key_prefix + id``; ``exptime`` is the TTL in seconds, or
the absolute Unix time when the TTL is over 30 days, as memcached's protocol requires)::

    get          gets key
    put(ABSENT)  add key 0 exptime, then gets key (the classic protocol does not return the
                 new cas token: this learns it)
    put(v)       cas key 0 exptime v, then gets key
    touch        touch key exptime
    delete       delete key

There is no per-user index: ``sessions_for``, ``delete_all_for`` and ``end_session`` raise
``NotSupportedError``. memcached may evict any record under memory pressure (the session ends
early); give it memory enough, or put ``CachedSessionStore`` over a durable store instead.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sessionware.stores._urls import check_scheme
from sessionware.stores.base import (
    ABSENT,
    Absent,
    Record,
    StoreError,
    UserSessionsMixin,
    Version,
    ttl_seconds,
)

__all__ = ["MemcachedSessionStore"]

_PREFIX = re.compile(r"[\x21-\x7e]{0,186}")
"""Printable ASCII, no space: a 64-character id after it keeps a key within 250 bytes."""
_THIRTY_DAYS = 30 * 24 * 3600
_UNKNOWN = 0
"""The version ``put(ABSENT)`` returns when another write came before its ``gets``."""


def _emcache() -> Any:
    try:
        import emcache
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "MemcachedSessionStore needs emcache: pip install 'sessionware[memcached]'"
        ) from exc
    return emcache


def _errors() -> tuple[type[BaseException], ...]:
    emcache = _emcache()
    failures = (emcache.CommandError, emcache.ClusterNoAvailableNodes, asyncio.TimeoutError)
    # ValueError, UnicodeEncodeError: a key memcached cannot take (emcache checks it).
    return (*failures, OSError, ValueError)


class MemcachedSessionStore(UserSessionsMixin):
    """Records in memcached (one server or several: emcache spreads keys by consistent hashing).

    ``MemcachedSessionStore(client)`` uses an emcache client you own; ``from_url`` builds its own
    on first use (so it can be made outside an event loop) and closes it in ``aclose``.
    """

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = "sessionware:",
        hash_keys: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if _PREFIX.fullmatch(key_prefix) is None:
            raise ValueError(
                "key_prefix must be printable ASCII without spaces, at most 186 characters"
                " (memcached keys are at most 250 bytes, and an id takes 64)"
            )
        self.key_prefix = key_prefix
        self.hash_keys = hash_keys
        self._clock = clock
        self._client = client
        self._addresses: list[tuple[str, int]] = []
        self._options: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "sessionware:",
        hash_keys: bool = True,
        timeout: float = 1.0,
        **client_options: Any,
    ) -> MemcachedSessionStore:
        """A store with its own client for ``memcached://host:port[,host:port...]``."""
        example = "memcached://host:11211[,host:11211...]"
        check_scheme("MemcachedSessionStore.from_url", url, ("memcached",), example)
        _emcache()
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"the URL must look like {example}: it names no server")
        store = cls(None, key_prefix=key_prefix, hash_keys=hash_keys)
        for node in parts.netloc.split(","):
            address = urlsplit(f"//{node}")
            store._addresses.append((address.hostname or "127.0.0.1", address.port or 11211))
        store._options = {"timeout": timeout, "connection_timeout": timeout, **client_options}
        return store

    async def _run(self, operation: str, command: str, id: str, *args: Any, **kw: Any) -> Any:
        """The command's answer; ``False`` when memcached refused it (NOT_STORED, EXISTS,
        NOT_FOUND), ``True`` when it succeeded and answers nothing."""
        emcache = _emcache()
        try:
            if self._client is None:
                async with self._lock:
                    if self._client is None:
                        nodes = [emcache.MemcachedHostAddress(*a) for a in self._addresses]
                        self._client = await emcache.create_client(nodes, **self._options)
            key = (self.key_prefix + id).encode("ascii")
            answer = await getattr(self._client, command)(key, *args, **kw)
        except (emcache.NotStoredStorageCommandError, emcache.NotFoundCommandError):
            return False
        except emcache.StorageCommandError as exc:
            if command == "cas" and "NOT_FOUND" in str(exc):
                return False  # emcache reports a cas on a missing key as a generic error
            raise StoreError(f"memcached session store failed to {operation}: {exc!r}") from exc
        except _errors() as exc:
            raise StoreError(f"memcached session store failed to {operation}: {exc!r}") from exc
        return True if answer is None and command != "gets" else answer

    def _exptime(self, ttl: timedelta) -> int:
        seconds = ttl_seconds(ttl)
        return seconds if seconds <= _THIRTY_DAYS else int(self._clock()) + seconds

    async def get(self, id: str) -> Record | None:
        item = await self._run("get", "gets", id)
        if item is not None and not item.cas:
            raise StoreError("memcached session store needs CAS: the server runs with -C")
        return None if item is None else Record(item.value, item.cas)

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        exptime = self._exptime(ttl)
        if expect is ABSENT:
            stored = await self._run("put", "add", id, data, exptime=exptime)
        elif isinstance(expect, int) and expect != _UNKNOWN:
            stored = await self._run("put", "cas", id, data, expect, exptime=exptime)
        else:
            return None
        if not stored:
            return None
        item = await self._run("put", "gets", id)
        # The token of what this put stored; if another write came in between, one that never
        # matches, so the next write re-reads.
        return item.cas if item is not None and item.value == data else _UNKNOWN

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return bool(await self._run("touch", "touch", id, self._exptime(ttl)))

    async def delete(self, id: str) -> None:
        await self._run("delete", "delete", id)

    async def aclose(self) -> None:
        """Close the client if this store made it (``from_url``; a client you passed stays open)."""
        if self._addresses and self._client is not None:
            await self._client.close()
            self._client = None
