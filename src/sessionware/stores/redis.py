"""RedisSessionStore: sessions in Redis, a Redis Cluster or a Sentinel master, in actix's format.

Commands (SPEC §6, plus tombstones, merging and, in brackets, the user index)::

    load        GET key
    save        [EVAL file] SET key body NX EX secs    under a fresh key; another on a collision
    update      GET key, [EVAL file], EVAL a compare-and-set (SET key body XX EX secs if still
                as read), [ZREM from the previous user's set]
    update_ttl  GET key, [EVAL file], EXPIRE key secs
    delete      EVAL (GET key; SET key tombstone EX 300 unless it is one already), [ZREM]
                not DEL, so a slower request cannot revive the session; a purge that finds a
                renewal's tombstone repeats this on its successor (at most 16 hops)

A session bound to a user (``StoredState.user``) is in the sorted set ``{prefix}user:{user_id}``,
scored by its expiry; "file" ZADDs it and pushes the set's TTL past that. The set is written
before the record and cleaned after it, so it may hold stale members but never misses a session;
``sessions_for`` drops expired members (ZREMRANGEBYSCORE) and checks the rest against their
records. Every command touches one key, so the store works unchanged on a cluster. A dropped
connection is retried once (actix's ``execute_command``); every command is safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    encode_tombstone,
    read_tombstone,
)
from sessionware.stores.base import (
    TOMBSTONE_TTL,
    Changes,
    LoadError,
    SaveError,
    SessionInfo,
    SessionKey,
    UpdateError,
    generate_session_key,
    is_generated_key,
    merge,
    oldest_first,
    ttl_seconds,
    user_of,
    write_record,
)

__all__ = ["RedisSessionStore"]

_T = TypeVar("_T")
_DRIVER_ERRORS = (RedisError, RedisClusterException, OSError, UnicodeDecodeError)
"""What a client raises; ``UnicodeDecodeError`` when one with ``decode_responses`` reads bytes."""
_ATTEMPTS = 20
_CAS_ATTEMPTS = 100
"""Bound on key collisions in ``save`` and lost races (or renewal hops) in ``update``."""
_MAX_HOPS = 16
"""How many renewals a purge (``delete`` without a successor) follows to end the live session."""

# Compare-and-set: write ARGV[2] only if the record is still the bytes we read (ARGV[1]).
# The merge itself happens in Python: Lua's cjson would mangle [] vs {} and floats.
_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'XX', 'EX', ARGV[3])
end
return false
"""
_GRACE = 2  # seconds a user set keeps members past their expiry (records come a bit later)
# File ARGV[1] in the user set, scored by its expiry in ARGV[2] s (server time); keep the set
# ARGV[3] s longer than its latest member.
_FILE = """
local now, ttl = redis.call('TIME'), tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now[1] + now[2] / 1e6 + tonumber(ARGV[2]), ARGV[1])
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
"""
# The user set's members and expiry times, once those past it by ARGV[1] s are dropped.
_LIVE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
"""
# Extend a live record unless it names a user (returned, so the caller files it in the user
# set first): unbound sessions cost one round trip, as a plain EXPIRE.
_TOUCH = """
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 7) == '{"v":0,' then return false end
if string.find(v, '"user":', 1, true) then
  local ok, data = pcall(cjson.decode, v)
  if ok and type(data) == 'table' and type(data['user']) == 'string' then return data['user'] end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return false
"""
# Replace the record with a tombstone, returning what it was; an existing tombstone stays.
_BURY = """
local old = redis.call('GET', KEYS[1])
if old and string.sub(old, 1, 7) == '{"v":0,' then return old end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return old
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
        if isinstance(record, StoredState):
            record.origin = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return None if isinstance(record, tuple) else record

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        body, user = write_record(state), user_of(state)
        for _ in range(_ATTEMPTS):
            key = generate_session_key()
            # A retried SET NX whose first try landed finds its own record and moves on to
            # another key: the orphan is unreachable and expires with its TTL.
            try:
                await self._file(user, key, ttl)
                stored = await self._retry(
                    self._client.set, self._prefix + key, body, ex=ttl_seconds(ttl), nx=True
                )
            except _DRIVER_ERRORS as exc:
                raise SaveError(f"Redis SET failed: {_why(exc)}") from exc
            if stored:
                return key
            await self._unfile(user, key)
        raise SaveError(f"no free session key after {_ATTEMPTS} attempts")

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        # What the request loaded is the likely current record: try it before reading again.
        known = state.origin if isinstance(state, StoredState) else None
        for attempt in range(_CAS_ATTEMPTS):
            name = self._prefix + key
            try:
                raw = known if known is not None else await self._retry(self._client.get, name)
            except _DRIVER_ERRORS as exc:
                raise UpdateError(f"Redis GET failed: {_why(exc)}") from exc
            known = None
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
            body = write_record(merged, UpdateError)
            try:
                await self._file(merged.user, key, ttl)
                done = await self._retry(
                    self._client.eval, _CAS, 1, name, raw, body, ttl_seconds(ttl)
                )
            except _DRIVER_ERRORS as exc:
                raise UpdateError(f"Redis EVAL failed: {_why(exc)}") from exc
            if done is not None:
                if current.user != merged.user:
                    await self._unfile(current.user, key)
                return key
            # Another request wrote the record since the GET: merge again on top of its write,
            # after a random pause that grows with contention so competing writers spread out.
            await asyncio.sleep(random.random() * min(0.05, 0.0005 * 2**attempt))
        raise UpdateError(f"session kept changing: gave up after {_CAS_ATTEMPTS} attempts")

    async def update_ttl(self, key: SessionKey, ttl: timedelta) -> None:
        name = self._prefix + key
        try:
            user = await self._retry(self._client.eval, _TOUCH, 1, name, ttl_seconds(ttl))
            if user:
                await self._file(user.decode() if isinstance(user, bytes) else user, key, ttl)
                await self._retry(self._client.expire, name, ttl_seconds(ttl))
        except _DRIVER_ERRORS as exc:
            raise UpdateError(f"Redis EXPIRE failed: {_why(exc)}") from exc

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        tombstone, secs = encode_tombstone(successor), ttl_seconds(TOMBSTONE_TTL)
        for _ in range(_MAX_HOPS):
            bury = (_BURY, 1, self._prefix + key, tombstone, secs)
            try:
                record = await self._fetch(self._client.eval, *bury)
            except _DRIVER_ERRORS as exc:
                raise UpdateError(f"Redis EVAL failed: {_why(exc)}") from exc
            if not isinstance(record, tuple):  # buried a live record (or nothing)
                if record is not None:
                    await self._unfile(record.user, key)
                return
            # Ended already, and the tombstone stays: a renewal loses to the first one, a purge
            # goes after the renewed key's successor (only a generated key: never the user sets).
            after = record[0]
            if successor is not None or after is None or not is_generated_key(after):
                return
            key = SessionKey(after)

    # -- the user index ----------------------------------------------------------------------

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        index, infos = self._index(user_id), []
        try:
            flat = await self._retry(self._client.eval, _LIVE, 1, index, _GRACE)
            for member, score in zip(flat[::2], flat[1::2], strict=True):
                key = member.decode() if isinstance(member, bytes) else member
                record = await self._fetch(self._client.get, self._prefix + key)
                if isinstance(record, tuple):  # purged or renewed: never live again
                    await self._unfile(user_id, key)
                elif record is not None and record.user == user_id:
                    info = (record.created, record.seen, float(score), record.agent)
                    infos.append(SessionInfo(SessionKey(key), *info))
        except _DRIVER_ERRORS as exc:
            raise LoadError(f"Redis failed to list a user's sessions: {_why(exc)}") from exc
        return oldest_first(infos)

    async def delete_all_for(self, user_id: str, except_key: SessionKey | None = None) -> int:
        ended = [info.key for info in await self.sessions_for(user_id) if info.key != except_key]
        for key in ended:
            await self.delete(key)
        return len(ended)

    def _index(self, user_id: str) -> str:
        return f"{self._prefix}user:{user_id}"

    async def _file(self, user: str | None, key: str, ttl: timedelta) -> None:
        """Put ``key`` in ``user``'s set (if any) before its record is written."""
        if user is not None:
            index, secs = self._index(user), ttl_seconds(ttl)
            await self._retry(self._client.eval, _FILE, 1, index, key, secs, _GRACE)

    async def _unfile(self, user: str | None, key: str) -> None:
        """Take ``key`` out of ``user``'s set; failing only leaves a stale member there."""
        if user is not None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._retry(self._client.zrem, self._index(user), key)

    async def _fetch(self, *command: Any) -> StoredState | tuple[str | None] | None:
        """Run a command that returns a record and parse that; unreadable data counts as purged."""
        try:
            raw = await self._retry(*command)
            return None if raw is None else _parse(raw)
        except (UnicodeDecodeError, DeserializationError):
            return (None,)

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
