"""RedisSessionStore: records in Redis, a Redis Cluster or a Sentinel master, in actix's layout.

A record is the plain value at ``key_prefix + id`` (with ``hash_keys=False`` and ``key_prefix=""``
exactly actix-session's: an actix-web service GETs and SETs the same envelope strings). Its
version is the SHA-1 hex of the value, computed here with ``hashlib`` and in Lua with
``redis.sha1hex``, so nothing but the value is stored. Commands (``secs``: the TTL, at least 1)::

    get                GET key
    put(ABSENT)        SET key data NX EX secs
    put(version)       EVAL  GET key; if sha1hex(value) == version: SET key data XX EX secs
    touch              EXPIRE key secs
    delete             DEL key
    index_add          EVAL  TIME; ZREMRANGEBYSCORE index -inf now; ZADD index now+secs id;
                             PEXPIRE index secs*1000 if its PTTL is shorter
    index_remove       ZREM index id
    index_members      EVAL  TIME; ZRANGEBYSCORE index (now +inf
    get_many           MGET key...  (a cluster: a pipeline of GETs)
    replace_many       EVAL  for each key: put(version)'s script  (a cluster: a pipeline of them)
    index_remove_many  ZREM index id...

A user's index is the sorted set ``key_prefix + "index:" + user``, each member scored by its
expiry in the server's clock (``TIME``: app servers' clocks never matter); an add drops members
already past and keeps the set's own TTL at least its latest member's. Every command touches one
key (a cluster needs no hash tags), but for the batches on a single server, MGET and one EVAL
over many keys (on a cluster: pipelines of the one-key commands); a dropped connection is retried once, and a retried write
whose first try landed reports a failed expectation, which the repository handles. Redis >= 5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

try:
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisSessionStore needs redis-py: pip install 'sessionware[redis]'") from exc

from sessionware.stores._connections import PerLoop, address, boundary
from sessionware.stores._urls import check_scheme
from sessionware.stores.base import (
    Absent,
    Record,
    Replace,
    UserSessionsMixin,
    Version,
    ttl_seconds,
)

__all__ = ["RedisSessionStore"]

_CAS = """
local v = redis.call('GET', KEYS[1])
if not v or redis.sha1hex(v) ~= ARGV[1] then return false end
return redis.call('SET', KEYS[1], ARGV[2], 'XX', 'EX', ARGV[3])
"""
_CAS_MANY = """
local done = {}
for i, key in ipairs(KEYS) do
  local v, at = redis.call('GET', key), (i - 1) * 3
  done[i] = 0
  if v and redis.sha1hex(v) == ARGV[at + 1] then
    redis.call('SET', key, ARGV[at + 2], 'XX', 'EX', ARGV[at + 3])
    done[i] = 1
  end
end
return done
"""
_INDEX_ADD = """
local t, secs = redis.call('TIME'), tonumber(ARGV[2])
local now = t[1] + t[2] / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + secs, ARGV[1])
if redis.call('PTTL', KEYS[1]) < secs * 1000 then redis.call('PEXPIRE', KEYS[1], secs * 1000) end
"""
_INDEX_MEMBERS = """
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (t[1] + t[2] / 1e6), '+inf')
"""


class RedisSessionStore(UserSessionsMixin):
    """A ``RecordStore`` and ``UserIndex`` over a redis-py asyncio ``Redis``, ``RedisCluster`` or
    ``Sentinel.master_for(...)`` client. With ``decode_responses=True`` (UTF-8) the ``str`` values
    are encoded back to the stored bytes; a value that is not UTF-8 comes back as its raw bytes
    (for the repository to find unreadable), not as an error.

    A client passed in stays yours (``aclose`` leaves it open) and works only in the event loop
    that made it: from another loop (a second ``TestClient``, another thread) every call is a
    ``StoreError`` saying so. ``from_url`` keeps one client per loop instead. Every command is
    bounded by the client's socket timeouts (``from_url``: 2 s to connect, 2 s to answer, one
    retry on a dropped connection); a failure of any kind is a ``StoreError`` naming the command,
    the error's type and the server, never a key or a value."""

    def __init__(
        self, client: Redis | RedisCluster, *, key_prefix: str = "session:", hash_keys: bool = True
    ) -> None:
        self.key_prefix = key_prefix
        self.hash_keys = hash_keys
        self._clients: PerLoop[Redis | RedisCluster] = PerLoop.fixed(client)
        self._where = _describe(client)
        self._cluster = isinstance(client, RedisCluster)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "session:",
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        cluster: bool = False,
        hash_keys: bool = True,
        **client_options: Any,
    ) -> RedisSessionStore:
        """A store with its own clients for ``url`` (``redis://``, ``rediss://``, ``unix://``).

        Connecting and each command give up after the timeouts (seconds); redis-py's own retries
        are off. ``cluster`` makes ``RedisCluster`` clients; other keywords go to the client. A
        bad URL raises ``ValueError`` here; nothing connects before the first command. Each event
        loop that uses the store gets a client of its own (closed when that loop ends, or by
        ``aclose``), so one store serves successive test clients and threads alike.
        """
        check_scheme(
            "RedisSessionStore.from_url", url, ("redis", "rediss", "unix"), "redis://host:6379/0"
        )
        timeouts = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
        }

        def make() -> Redis | RedisCluster:
            options = {"retry": Retry(NoBackoff(), 0), **client_options, **timeouts}
            return (RedisCluster if cluster else Redis).from_url(url, **options)

        async def open() -> Redis | RedisCluster:
            return make()

        store = cls(make(), key_prefix=key_prefix, hash_keys=hash_keys)  # a bad URL fails here
        store._clients = PerLoop(open, _close)
        store._where = address(url)
        return store

    async def aclose(self) -> None:
        """Close the clients ``from_url`` made (a later command opens new ones); a client passed
        in is the caller's to close."""
        await self._clients.aclose()

    async def check(self) -> None:
        """One ``PING``: a ``StoreError`` naming the server and the cause when it does not answer."""
        await self._run("PING")

    async def get(self, id: str) -> Record | None:
        """The record at ``id``, or ``None`` when there is none (Redis drops expired keys)."""
        try:
            value = await self._run("GET", self.key_prefix + id)
        except UnicodeDecodeError as exc:  # a decoding client read bytes that are not UTF-8
            value = exc.object
        if value is None:
            return None
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return Record(data, _version(data))

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        """Write ``data`` if ``id`` is free (``ABSENT``) or still at ``expect``; its version."""
        name, secs = self.key_prefix + id, ttl_seconds(ttl)
        if isinstance(expect, Absent):
            done = await self._run("SET", name, data, "NX", "EX", secs)
        else:
            done = await self._run("EVAL", _CAS, 1, name, str(expect), data, secs)
        return _version(data) if done else None

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        """``get`` of each id, in one pipeline."""
        if not ids:
            return []
        names = [self.key_prefix + id for id in ids]
        try:
            if self._cluster:
                values = await self._pipeline(("GET", name) for name in names)
            else:
                values = await self._run("MGET", *names)
        except UnicodeDecodeError:  # a decoding client met bytes that are not UTF-8
            return [await self.get(id) for id in ids]  # which reads them raw, one by one
        return [None if value is None else _record(value) for value in values]

    async def replace_many(self, writes: Sequence[Replace]) -> list[Version | None]:
        """``put(expect=version)`` of each write, in one pipeline."""
        if not writes:
            return []
        if self._cluster:
            done = await self._pipeline(
                ("EVAL", _CAS, 1, self.key_prefix + w.id, str(w.expect), w.data, ttl_seconds(w.ttl))
                for w in writes
            )
        else:
            names = [self.key_prefix + w.id for w in writes]
            args = [x for w in writes for x in (str(w.expect), w.data, ttl_seconds(w.ttl))]
            done = await self._run("EVAL", _CAS_MANY, len(names), *names, *args)
        return [_version(w.data) if ok else None for w, ok in zip(writes, done, strict=True)]

    async def touch(self, id: str, ttl: timedelta) -> bool:
        """Extend the record's TTL; ``False`` when there is no record."""
        return bool(await self._run("EXPIRE", self.key_prefix + id, ttl_seconds(ttl)))

    async def delete(self, id: str) -> None:
        """Remove the record, if there is one."""
        await self._run("DEL", self.key_prefix + id)

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        """File ``id`` under ``user`` until ``ttl`` from now; drop the members already past."""
        await self._run("EVAL", _INDEX_ADD, 1, self._index(user), id, ttl_seconds(ttl))

    async def index_remove(self, user: str, id: str) -> None:
        """Take ``id`` out of ``user``'s index."""
        await self._run("ZREM", self._index(user), id)

    async def index_members(self, user: str) -> list[str]:
        """The ids filed under ``user`` whose time has not passed."""
        members = await self._run("EVAL", _INDEX_MEMBERS, 1, self._index(user))
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def index_remove_many(self, user: str, ids: Sequence[str]) -> None:
        """Take ``ids`` out of ``user``'s index."""
        if ids:
            await self._run("ZREM", self._index(user), *ids)

    def _index(self, user: str) -> str:
        return f"{self.key_prefix}index:{user}"

    async def _run(self, *command: Any) -> Any:
        """Run a command (once more if the connection dropped); every failure -> ``StoreError``."""
        with boundary(f"Redis {command[0]} failed", self._where, passing=(UnicodeDecodeError,)):
            client = self._clients.current()
            if client is None:
                client = await self._clients.get()
            try:
                return await client.execute_command(*command)
            except RedisConnectionError:
                return await client.execute_command(*command)

    async def _pipeline(self, commands: Any) -> list[Any]:
        """Run commands in one pipeline (not a transaction; once more if the connection
        dropped): their answers in order."""
        commands = list(commands)
        if not commands:
            return []
        head = f"Redis pipeline of {commands[0][0]} failed"
        with boundary(head, self._where, passing=(UnicodeDecodeError,)):
            client = self._clients.current() or await self._clients.get()
            try:
                return await _send(client, commands)
            except RedisConnectionError:
                return await _send(client, commands)


async def _send(client: Redis | RedisCluster, commands: list[Any]) -> list[Any]:
    pipeline = client.pipeline(transaction=False)
    for command in commands:
        pipeline.execute_command(*command)
    return list(await pipeline.execute())


def _record(value: Any) -> Record:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return Record(data, _version(data))


async def _close(client: Redis | RedisCluster) -> None:
    await client.aclose()


def _describe(client: Redis | RedisCluster) -> str:
    """Where a client connects (host, port and database; a socket; a Sentinel service; a
    cluster's first nodes), never its credentials."""
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"the Sentinel service {service}"
    options = getattr(pool, "connection_kwargs", None) or {}
    if "path" in options:
        return str(options["path"])
    if "host" in options:
        return f"{options['host']}:{options.get('port', 6379)}/{options.get('db', 0)}"
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None) or {}
    return ",".join(list(nodes)[:3]) or type(client).__name__


def _version(data: bytes) -> str:
    """A record's version: the SHA-1 hex of its bytes, as ``redis.sha1hex`` computes it."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()
