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

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sessionware.stores._connections import PerLoop, boundary, store_error
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


class MemcachedSessionStore(UserSessionsMixin):
    """Records in memcached (one server or several: emcache spreads keys by consistent hashing).

    ``MemcachedSessionStore(client)`` uses an emcache client you own (it works only in the event
    loop that made it: from another loop every call is a ``StoreError`` saying so); ``from_url``
    makes a client per event loop on first use (so it can be made outside a loop, and serves
    successive test clients and threads alike), each closed with its loop or in ``aclose``.
    Every command, waiting for a connection included, gives up after the client's ``timeout``
    (``from_url``: 1 s): a ``StoreError``.
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
        self._clients: PerLoop[Any] = PerLoop.fixed(client)
        self._addresses: list[tuple[str, int]] = []
        self._options: dict[str, Any] = {}
        self._where = "the client passed in"

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
        """A store with its own clients (one per event loop) for
        ``memcached://host:port[,host:port...]``."""
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
        store._clients = PerLoop(store._open_client, _close)
        store._where = ",".join(f"{host}:{port}" for host, port in store._addresses)
        return store

    @property
    def _timeout(self) -> float | None:
        """Seconds a command may take, when this store made the client (for messages)."""
        timeout = self._options.get("timeout")
        return float(timeout) if isinstance(timeout, (int, float)) else None

    async def _open_client(self) -> Any:
        emcache = _emcache()
        nodes = [emcache.MemcachedHostAddress(*a) for a in self._addresses]
        return await emcache.create_client(nodes, **self._options)

    async def _run(self, operation: str, command: str, id: str, *args: Any, **kw: Any) -> Any:
        """The command's answer; ``False`` when memcached refused it (NOT_STORED, EXISTS,
        NOT_FOUND), ``True`` when it succeeded and answers nothing."""
        emcache = _emcache()
        refused = (emcache.NotStoredStorageCommandError, emcache.NotFoundCommandError)
        head = f"memcached session store failed to {operation}"
        try:
            passing = (*refused, emcache.StorageCommandError)
            with boundary(head, self._where, timeout=self._timeout, passing=passing):
                client = await self._clients.get()
                key = (self.key_prefix + id).encode("ascii")
                answer = await getattr(client, command)(key, *args, **kw)
        except refused:
            return False
        except emcache.StorageCommandError as exc:
            if command == "cas" and "NOT_FOUND" in str(exc):
                return False  # emcache reports a cas on a missing key as a generic error
            raise store_error(head, exc, self._where, timeout=self._timeout) from exc
        return True if answer is None and command != "gets" else answer

    async def check(self) -> None:
        """``version`` on every server: a ``StoreError`` naming the server and the cause when
        one does not answer."""
        head = "memcached session store failed to check the connection"
        with boundary(head, self._where, timeout=self._timeout):
            client = await self._clients.get()
        for node in client.cluster_managment().nodes():
            with boundary(head, f"{node.address}:{node.port}", timeout=self._timeout):
                await client.version(node)

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
        """Close the clients this store made (``from_url``; a client you passed stays open); a
        later call makes new ones."""
        await self._clients.aclose()


async def _close(client: Any) -> None:
    await client.close()
