"""Throwaway session middlewares that bound what sessionware's cookie and Redis paths could cost.

Neither is a session library: each does only what one benchmark request needs, in one function,
so the gap between it and sessionware is the price of sessionware's structure. Both keep
sessionware's wire format (a PRIVATE cookie they seal opens in sessionware and back).

* ``FloorCookieMiddleware`` is the floor the lean-request-path issue measured: the cookie opened
  at the session's first use, AES-256-GCM through ``cryptography``, JSON state with an in-place
  mutation check, ``Vary: Cookie`` only when the session was used, and none of sessionware's
  input checks (duplicate or quoted cookies, strict base64, envelope validation, nesting depth).
* ``FloorCheckedMiddleware`` has the same shape but calls sessionware's own checked pieces
  (``single_cookie``/``find_cookies``, ``Sealer``, ``decode_state``, ``check_value``, the cookie
  store's expiry rules, the Vary and Cache-Control merge) and adds Vary whenever the request
  carried the cookie, as DESIGN.md asks. What it lacks is what makes sessionware a library:
  the status machine (purge, renew, clear), key rotation, absolute timeouts, events, touch
  policies, freezing after the response starts.
* ``FloorRedisMiddleware`` and ``FloorRedisCheckedMiddleware`` are the same two shapes for a
  Redis-backed session loaded at ``await session.load()``: the cookie seals a key, the record
  (sessionware's envelope) lives under the SHA-256 of it.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sessionware import Key
from sessionware.cookies import find_cookies, single_cookie
from sessionware.crypto import ContentSecurity, Sealer
from sessionware.engine import _add_headers, _with_vary
from sessionware.state import DeserializationError, check_value, decode_state, state_unchanged
from sessionware.stores.base import ABSENT, generate_session_key, is_generated_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_SUFFIX = "; HttpOnly; SameSite=Lax; Secure; Path=/"
_scan: Any = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[no-untyped-call]
_encode: Any = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, None, json.encoder.encode_basestring, None, ":", ",", False, False, False
)


def _dumps(value: Any) -> str:
    return "".join(_encode(value, 0))


def _line(name: str, sealed: str) -> str:
    """The Set-Cookie line for a PRIVATE seal (standard base64: only ``/`` and ``=`` escaped)."""
    return f"{name}={sealed.replace('/', '%2F').replace('=', '%3D')}{_SUFFIX}"


class FloorSession(dict[str, Any]):
    """A dict that opens its cookie at the first read or write and notes writes."""

    opened = False
    written = False
    origin: str | None = None
    created: float | None = None
    opener: Callable[[FloorSession], None] | None = None

    def _open(self) -> None:
        self.opened = True
        opener = self.opener
        if opener is not None:
            self.opener = None
            opener(self)

    def get(self, key: str, default: Any = None) -> Any:
        if not self.opened:
            self._open()
        return dict.get(self, key, default)

    def __getitem__(self, key: str) -> Any:
        if not self.opened:
            self._open()
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if not self.opened:
            self._open()
        self.written = True
        dict.__setitem__(self, key, value)

    async def load(self) -> FloorSession:
        return self


class _Floor:
    """What both floors share: the session in the scope, one closure wrapping ``send``."""

    checked = False

    def __init__(self, app: ASGIApp, *, key: Key, name: str = "id", ttl: int = 86400) -> None:
        self.app, self.name, self.ttl = app, name, ttl
        self.prefix = f"{name}=".encode()
        self.aead = AESGCM(key.encryption_key)
        self.sealer = Sealer(ContentSecurity.PRIVATE, [key], name)

    def open(self, cookies: list[bytes], session: FloorSession) -> None:
        raise NotImplementedError

    def seal(self, session: FloorSession) -> str | None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        prefix, cookies = self.prefix, []
        for name, value in scope["headers"]:
            if name == b"cookie" and prefix in value:
                cookies.append(value)
        session = FloorSession()
        if cookies:
            opener = self.open
            session.opener = lambda s: opener(cookies, s)
        scope["session"] = session
        checked = self.checked

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                cookie = self.seal(session) if session.opened else None
                if cookie is not None:
                    message = {**message, "headers": _add_headers(headers, cookie)}
                elif session.opened or (checked and cookies):
                    message = {**message, "headers": _with_vary(headers)}
            await send(message)

        await self.app(scope, receive, wrapped)


class FloorCookieMiddleware(_Floor):
    """The issue's floor: its own minimal parsing and crypto, Vary only when used."""

    def open(self, cookies: list[bytes], session: FloorSession) -> None:
        raw, prefix = cookies[0], self.prefix
        at = raw.find(prefix)
        end = raw.find(b";", at)
        value = raw[at + len(prefix) : None if end == -1 else end]
        value = value.replace(b"%2F", b"/").replace(b"%3D", b"=")
        try:
            blob = binascii.a2b_base64(value)
            plain = self.aead.decrypt(blob[:12], blob[12:], self.name.encode()).decode()
            data, _ = _scan(plain, 0)
        except (InvalidTag, ValueError, binascii.Error, StopIteration):
            return
        if data.get("expires", 0) > time.time():
            dict.update(session, data["state"])
            session.origin, session.created = _dumps(data["state"]), data.get("created")

    def seal(self, session: FloorSession) -> str | None:
        new = _dumps(dict(session))
        if new == (session.origin or "{}"):
            return None
        now = int(time.time())
        envelope = (
            f'{{"v":1,"state":{new},"created":{session.created or now},"expires":{now + self.ttl}}}'
        )
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, envelope.encode(), self.name.encode())
        return _line(self.name, binascii.b2a_base64(nonce + sealed, newline=False).decode())


class FloorCheckedMiddleware(_Floor):
    """The same shape with sessionware's checked pieces, Vary whenever the cookie came."""

    checked = True

    def open(self, cookies: list[bytes], session: FloorSession) -> None:
        value = single_cookie(cookies[0], self.prefix) if len(cookies) == 1 else None
        for candidate in find_cookies(cookies, self.name) if value is None else (value,):
            opened = self.sealer.open(candidate)
            if opened is None:
                continue
            try:
                state = decode_state(opened[0])
            except DeserializationError:
                return
            now = time.time()
            if state.expires is not None and state.expires <= now:
                return
            if state.created is not None and state.created > now + 60:
                return
            dict.update(session, state)
            session.origin, session.created = opened[0], state.created
            return

    def seal(self, session: FloorSession) -> str | None:
        origin = session.origin
        if not session.written and (
            origin is None or (origin.count("{") == 2 and "[" not in origin)
        ):
            return None  # read only, and no container that could have changed in place
        new = check_value(dict(session))
        if origin is not None and state_unchanged(origin, new):
            return None
        now = int(time.time())
        created = int(session.created or now)
        envelope = f'{{"v":1,"state":{new},"created":{created},"expires":{now + self.ttl}}}'
        line = _line(self.name, self.sealer.seal(envelope))
        if len(line) > 4096:
            raise ValueError("the session cookie would be over 4096 bytes")
        return line


class FloorRedisSession(FloorSession):
    """A ``FloorSession`` whose record is fetched at ``await load()`` (``lazy=True``'s shape)."""

    loader: Callable[[FloorRedisSession], Awaitable[None]] | None = None
    held: Any = None

    def _open(self) -> None:
        if self.loader is not None:
            raise RuntimeError("await session.load() first")
        self.opened = True

    async def load(self) -> FloorRedisSession:
        loader = self.loader
        if loader is not None:
            self.loader = None
            await loader(self)
        self.opened = True
        return self


class _RedisFloor:
    """What both Redis floors share: the cookie seals the session's key (sessionware's wire), the
    record is sessionware's v1 envelope under ``prefix + sha256(key)``, loaded at the session's
    ``await load()``; one closure wrapping ``send`` saves when the response starts."""

    checked = False

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: Key,
        store: Any,
        client: Any,
        name: str = "id",
        ttl: int = 86400,
    ) -> None:
        self.app, self.store, self.name, self.ttl = app, store, name, ttl
        self.client, self.key_prefix = client, store.key_prefix
        self.prefix = f"{name}=".encode()
        self.aead = AESGCM(key.encryption_key)
        self.sealer = Sealer(ContentSecurity.PRIVATE, [key], name)

    async def load(self, cookies: list[bytes], session: FloorRedisSession) -> None:
        raise NotImplementedError

    async def save(self, session: FloorRedisSession) -> str | None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """``_Floor.__call__``'s shape with an awaited save: not shared, so the cookie floors'
        response start stays a plain call (no coroutine), as sessionware's cookie path is."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        prefix, cookies = self.prefix, []
        for name, value in scope["headers"]:
            if name == b"cookie" and prefix in value:
                cookies.append(value)
        session = FloorRedisSession()
        if cookies:
            load = self.load
            session.loader = lambda s: load(cookies, s)
        scope["session"] = session
        checked = self.checked

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                cookie = await self.save(session) if session.opened else None
                if cookie is not None:
                    message = {**message, "headers": _add_headers(headers, cookie)}
                elif session.opened or (checked and cookies):
                    message = {**message, "headers": _with_vary(headers)}
            await send(message)

        await self.app(scope, receive, wrapped)

    def _record(self, state_json: str, created: float | None) -> bytes:
        now = int(time.time())
        created = int(created or now)
        return (
            f'{{"v":1,"state":{state_json},"seen":{now},"created":{created},'
            f'"expires":{now + self.ttl}}}'
        ).encode()


class FloorRedisMiddleware(_RedisFloor):
    """The issue's Redis floor: its own parsing and crypto, one GET to load, one ``SET ... EX``
    to save (no compare-and-set: a concurrent write is lost), Vary only when used."""

    async def load(self, cookies: list[bytes], session: FloorRedisSession) -> None:
        raw, prefix = cookies[0], self.prefix
        at = raw.find(prefix)
        end = raw.find(b";", at)
        value = raw[at + len(prefix) : None if end == -1 else end]
        value = value.replace(b"%2F", b"/").replace(b"%3D", b"=")
        try:
            blob = binascii.a2b_base64(value)
            key = self.aead.decrypt(blob[:12], blob[12:], self.name.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            return
        id = hashlib.sha256(key.encode()).hexdigest()
        data = await self.client.get(self.key_prefix + id)
        if data is None:
            return
        try:
            record, _ = _scan(data.decode(), 0)
        except (ValueError, StopIteration):
            return
        dict.update(session, record["state"])
        session.origin, session.created = _dumps(record["state"]), record.get("created")
        session.held = key, id

    async def save(self, session: FloorRedisSession) -> str | None:
        new = _dumps(dict(session))
        if new == (session.origin or "{}"):
            return None
        if session.held is None:
            key, _ = generate_session_key(), None
            id = hashlib.sha256(key.encode()).hexdigest()
        else:
            key, id = session.held
        await self.client.set(self.key_prefix + id, self._record(new, session.created), ex=self.ttl)
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, key.encode(), self.name.encode())
        return _line(self.name, binascii.b2a_base64(nonce + sealed, newline=False).decode())


class FloorRedisCheckedMiddleware(_RedisFloor):
    """The same shape with sessionware's checked pieces and its store's I/O: ``single_cookie``,
    ``Sealer``, the key's shape, ``RedisSessionStore.get`` and ``put`` (its compare-and-set
    EVAL, so no write is lost), ``decode_state``, ``check_value``; the request's own cookie sent
    back on a write; Vary whenever the cookie came. What it lacks is what the repository and the
    engine add: merging a lost race, tombstones, renewal, purge, the user index, late writes,
    touch policies, events, device binding."""

    checked = True

    async def load(self, cookies: list[bytes], session: FloorRedisSession) -> None:
        value = single_cookie(cookies[0], self.prefix) if len(cookies) == 1 else None
        for candidate in find_cookies(cookies, self.name) if value is None else (value,):
            opened = self.sealer.open(candidate)
            if opened is None or not is_generated_key(opened[0]):
                continue
            id = hashlib.sha256(opened[0].encode()).hexdigest()
            record = await self.store.get(id)
            if record is None:
                return
            try:
                text = record.data.decode()
                state = decode_state(text)
            except (UnicodeDecodeError, DeserializationError):
                return
            dict.update(session, state)
            session.origin, session.created = text, state.created
            session.held = id, record.version, candidate
            return

    async def save(self, session: FloorRedisSession) -> str | None:
        origin = session.origin
        if not session.written and (
            origin is None or (origin.count("{") == 2 and "[" not in origin)
        ):
            return None  # read only, and no container that could have changed in place
        new = check_value(dict(session))
        if origin is not None and state_unchanged(origin, new):
            return None
        data = self._record(new, session.created)
        ttl = timedelta(seconds=self.ttl)
        if session.held is None:
            key = generate_session_key()
            id = hashlib.sha256(key.encode()).hexdigest()
            await self.store.put(id, data, ttl, expect=ABSENT)
            sealed = self.sealer.seal(key)
        else:
            id, version, sealed = session.held
            if await self.store.put(id, data, ttl, expect=version) is None:
                raise RuntimeError("the record changed: the floor does not merge")
        return _line(self.name, sealed)
