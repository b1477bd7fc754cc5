"""RedisSessionStore: sessions in Redis, a Redis Cluster or a Sentinel master, in actix's format.

Commands (SPEC §6, plus tombstones and merging)::

    load        GET key
    save        SET key body NX EX secs      under a fresh key; another key on a collision
    update      GET key, then EVAL a compare-and-set (SET key body XX EX secs if still as read)
    update_ttl  EXPIRE key secs
    delete      SET key tombstone EX 300     not DEL, so a slower request cannot revive the session

Every command touches one key, so the store works unchanged on a cluster. A dropped connection
is retried once (actix's ``execute_command``); every command is safe to repeat.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

try:
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException, RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisSessionStore needs redis-py: pip install 'sessionware[redis]'") from exc

from sessionware.state import (
    DeserializationError,
    StoredState,
    decode_state,
    encode_state,
    encode_tombstone,
    read_tombstone,
)
from sessionware.stores.base import (
    TOMBSTONE_TTL,
    Changes,
    LoadError,
    SaveError,
    SessionKey,
    UpdateError,
    generate_session_key,
    is_generated_key,
    merge,
    ttl_seconds,
)

__all__ = ["RedisSessionStore"]

_T = TypeVar("_T")
_DRIVER_ERRORS = (RedisError, RedisClusterException, OSError, UnicodeDecodeError)
"""What a client raises; ``UnicodeDecodeError`` when one with ``decode_responses`` reads bytes."""
_ATTEMPTS = 20
_CAS_ATTEMPTS = 100
"""Bound on key collisions in ``save`` and lost races (or renewal hops) in ``update``."""

# Compare-and-set: write ARGV[2] only if the record is still the bytes we read (ARGV[1]).
# The merge itself happens in Python: Lua's cjson would mangle [] vs {} and floats.
_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'XX', 'EX', ARGV[3])
end
return false
"""


class RedisSessionStore:
    """Sessions as ``encode_state`` JSON under ``key_prefix + key``, expiring with their TTL.

    ``client`` is any redis-py asyncio client: ``Redis``, ``RedisCluster`` or
    ``Sentinel.master_for(...)``. With the same prefix (``""`` is actix's default) an actix-web
    service reads and writes the same sessions.
    """

    holds_state_in_key: ClassVar[bool] = False

    def __init__(self, client: Redis | RedisCluster, *, key_prefix: str = "session:") -> None:
        self._client = client
        self._prefix = key_prefix
        self._owns_client = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "session:",
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        cluster: bool = False,
        **client_options: Any,
    ) -> RedisSessionStore:
        """A store with its own client for ``url`` (``redis://``, ``rediss://``, ``unix://``).

        Connecting and each command give up after the timeouts (seconds), so a slow or
        unreachable server costs a request at most that long; redis-py's own retries are off
        (the store retries a dropped connection once). ``cluster`` makes a ``RedisCluster``.
        Other keyword arguments go to the client. A malformed URL raises ``ValueError`` here;
        nothing connects until the first command. Close the client with ``aclose()``.
        """
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            **client_options,
        }
        client = (
            RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
        )
        store = cls(client, key_prefix=key_prefix)
        store._owns_client = True
        return store

    async def aclose(self) -> None:
        """Close the client if ``from_url`` created it; a client passed in is the caller's."""
        if self._owns_client:
            await self._client.aclose()

    async def load(self, key: SessionKey) -> StoredState | None:
        try:
            raw = await self._retry(self._client.get, self._prefix + key)
        except UnicodeDecodeError as exc:  # a client with decode_responses=True
            raise LoadError("stored session is not UTF-8", deserialization=True) from exc
        except _DRIVER_ERRORS as exc:
            raise LoadError(f"Redis GET failed: {_why(exc)}") from exc
        if raw is None:
            return None
        try:
            record = _parse(raw)
        except DeserializationError as exc:
            raise LoadError(f"stored session is unreadable: {exc}", deserialization=True) from exc
        return None if isinstance(record, tuple) else record

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        try:
            body = encode_state(state)
        except (ValueError, TypeError) as exc:
            raise SaveError(f"session state is not JSON: {exc}", serialization=True) from exc
        for _ in range(_ATTEMPTS):
            key = generate_session_key()
            # A retried SET NX whose first try landed finds its own record and moves on to
            # another key: the orphan is unreachable and expires with its TTL.
            try:
                stored = await self._retry(
                    self._client.set, self._prefix + key, body, ex=ttl_seconds(ttl), nx=True
                )
            except _DRIVER_ERRORS as exc:
                raise SaveError(f"Redis SET failed: {_why(exc)}") from exc
            if stored:
                return key
        raise SaveError(f"no free session key after {_ATTEMPTS} attempts")

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        for attempt in range(_CAS_ATTEMPTS):
            name = self._prefix + key
            try:
                raw = await self._retry(self._client.get, name)
            except _DRIVER_ERRORS as exc:
                raise UpdateError(f"Redis GET failed: {_why(exc)}") from exc
            try:
                current = None if raw is None else _parse(raw)
            except DeserializationError:
                current = None
            if isinstance(current, tuple):  # a tombstone: purged, or renewed to a successor
                successor = current[0]
                if successor is None or not is_generated_key(successor):
                    return None
                key = SessionKey(successor)
                continue
            if current is None:  # expired, evicted or unreadable: not a session to merge into
                try:
                    return await self.save(state, ttl)
                except SaveError as exc:
                    raise UpdateError(str(exc), serialization=exc.serialization) from exc
            merged = merge(state, changes, current)
            try:
                body = encode_state(merged)
            except (ValueError, TypeError) as exc:
                raise UpdateError(f"session state is not JSON: {exc}", serialization=True) from exc
            try:
                done = await self._retry(
                    self._client.eval, _CAS, 1, name, raw, body, ttl_seconds(ttl)
                )
            except _DRIVER_ERRORS as exc:
                raise UpdateError(f"Redis EVAL failed: {_why(exc)}") from exc
            if done is not None:
                return key
            # Another request wrote the record since the GET: merge again on top of its write,
            # after a random pause that grows with contention so competing writers spread out.
            await asyncio.sleep(random.random() * min(0.05, 0.0005 * 2**attempt))
        raise UpdateError(f"session kept changing: gave up after {_CAS_ATTEMPTS} attempts")

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None:
        try:
            await self._retry(self._client.expire, self._prefix + key, ttl_seconds(ttl))
        except _DRIVER_ERRORS as exc:
            raise UpdateError(f"Redis EXPIRE failed: {_why(exc)}") from exc

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        try:
            await self._retry(
                self._client.set,
                self._prefix + key,
                encode_tombstone(successor),
                ex=ttl_seconds(TOMBSTONE_TTL),
            )
        except _DRIVER_ERRORS as exc:
            raise UpdateError(f"Redis SET failed: {_why(exc)}") from exc

    @staticmethod
    async def _retry(command: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """Run a command, and once more if the connection dropped (idle servers close them)."""
        try:
            return await command(*args, **kwargs)
        except RedisConnectionError:
            return await command(*args, **kwargs)


def _why(exc: BaseException) -> str:
    """The driver error for a log line (redis-py's own ``repr`` drops the message)."""
    return f"{type(exc).__name__}: {exc}"


def _parse(raw: bytes | str) -> StoredState | tuple[str | None]:
    """The record as a state or as a tombstone ``(successor,)``; ``DeserializationError`` if neither."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise DeserializationError("stored session is not UTF-8") from None
    tombstone, successor = read_tombstone(text)
    return (successor,) if tombstone else decode_state(text)
