"""The core: which cookie opens, which store call to make, which headers to send (SPEC §2).

It knows nothing of ASGI: an adapter hands it the request's Cookie header values, awaits
``load``, runs the handler, then hands ``finish`` the response status and headers and sends what
comes back. All I/O happens in the store it is given.

Request phase: the first of at most four same-name cookies that opens under the key ring, whose
content is a valid key for the store, is loaded; anything else starts an empty session (with a
WARNING naming only a salted hash of the value). Response phase, by the session's status:

=========  ===================  ==================================================  ============
key        status               store calls                                         Set-Cookie
=========  ===================  ==================================================  ============
none       changed/renewed      ``save`` (only if the state is not empty)           new key
some       changed              ``update`` with the request's changes merged        returned key
some       purged               ``delete`` (leaves a tombstone)                     removal
some       renewed              ``save``, ``delete(old, successor=new)``, then      new key
                                ``update(old)``, which lands in whichever renewal
                                won if another request renewed it first
some       unchanged            ``update_ttl`` under ON_EVERY_REQUEST, else none    if Max-Age
=========  ===================  ==================================================  ============

Responses with status 500 or above persist nothing, nor do requests whose session was
discarded (``Session._discard``: a request the CSRF check refused). A cookie opened with an
older key of the ring is sent back sealed with the current one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sessionware.config import BrowserSession, CookieSettings, PersistentSession
from sessionware.config import TtlExtensionPolicy as Policy
from sessionware.cookies import MAX_SET_COOKIE_BYTES, find_cookies, removal_cookie, session_cookie
from sessionware.crypto import ContentSecurity, Key, seal, unseal
from sessionware.session import Session, SessionStatus
from sessionware.state import StoredState
from sessionware.stores.base import (
    LoadError,
    SaveError,
    SessionKey,
    SessionStore,
    UpdateError,
    is_generated_key,
)

__all__ = ["PersistError", "SessionContext", "SessionEngine", "fingerprint"]

logger = logging.getLogger("sessionware")

Headers = list[tuple[bytes, bytes]]
_T = TypeVar("_T")
_SALT = secrets.token_bytes(16)


def fingerprint(secret: str) -> str:
    """A salted hash of a cookie value or key, safe to log (the salt is new in every process)."""
    return hashlib.blake2b(secret.encode("utf-8", "replace"), key=_SALT, digest_size=8).hexdigest()


class PersistError(Exception):
    """The session could not be loaded or saved; the adapter answers ``status_code``, opaquely.

    503 when the store failed (try again later), 500 when the state itself cannot be stored.
    """

    def __init__(self, message: str, *, status_code: int = 503) -> None:
        super().__init__(message)
        self.status_code = status_code


_NO_NEW_KEY = (
    "the session cannot get a new key once the response has started: its cookie has gone out"
    " (renew, or save a new session, before the response starts)"
)


@dataclass
class SessionContext:
    """One request's session, with what the engine needs to remember between its two phases."""

    session: Session = field(default_factory=Session)
    key: SessionKey | None = None
    created: float | None = None
    reissue: bool = False
    agent: str | None = None
    origin: str | None = None
    """The stored text the session was loaded from, if the store keeps it (see ``update``)."""
    cookies: list[bytes] = field(default_factory=list)
    """Cookie header values that may hold the session cookie, until ``open`` has read them."""
    finished: bool = False


class SessionEngine:
    """Loads and persists sessions for one configuration. Shared by all requests; holds no state."""

    def __init__(
        self,
        *,
        store: SessionStore,
        keys: Sequence[Key],
        security: ContentSecurity,
        cookie: CookieSettings,
        lifecycle: BrowserSession | PersistentSession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one Key is needed to seal session cookies")
        if not isinstance(lifecycle, (BrowserSession, PersistentSession)):
            raise TypeError("lifecycle must be a BrowserSession or a PersistentSession")
        if not isinstance(security, ContentSecurity):
            raise TypeError("content_security must be a ContentSecurity member")
        self.store = store
        self.keys = tuple(keys)
        self.security = security
        self.cookie = cookie
        self.lifecycle = lifecycle
        self.clock = clock
        self._any_key = bool(getattr(store, "holds_state_in_key", False))
        self._load_sync = getattr(store, "load_sync", None)
        self._prefix = f"{cookie.name}=".encode("latin-1")
        max_age = lifecycle.cookie_max_age
        self.cookie_max_age = None if max_age is None else int(max_age.total_seconds())
        """The cookie's Max-Age in seconds; ``None`` for a cookie that ends with the browser."""

    # -- request phase -----------------------------------------------------------------------

    def begin(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None
    ) -> SessionContext:
        """Note the request's Cookie header values that may hold the session; no work yet.

        The cookie is opened when the session is loaded (see ``load``, ``defer``,
        ``defer_open``), so a request that never uses its session costs nearly nothing.
        ``user_agent`` (the User-Agent header) is kept, shortened, for sessions bound to a user.
        """
        context = SessionContext()
        prefix = self._prefix
        context.cookies = [value for value in cookie_headers if prefix in value]
        if user_agent:
            context.agent = user_agent[:120].decode("latin-1")
        return context

    def open(self, context: SessionContext) -> SessionKey | None:
        """Find and open the session cookie (once): ``context.key``, or ``None``. No I/O."""
        cookies, context.cookies = context.cookies, []
        for value in find_cookies(cookies, self.cookie.name):
            opened = unseal(self.security, self.keys, self.cookie.name, value)
            if opened is None:
                logger.warning("session cookie %s did not open; ignored", fingerprint(value))
                continue
            plain, index = opened
            if not (self._any_key or is_generated_key(plain)):
                logger.warning("session key %s has the wrong shape; ignored", fingerprint(plain))
                continue
            try:
                context.key = SessionKey(plain)
            except ValueError:
                continue
            context.reissue = index > 0
            break
        return context.key

    def defer(self, context: SessionContext) -> None:
        """Load on the first ``await session.load()`` instead of now (``lazy=True``)."""

        async def loader() -> None:
            await self.load(context)

        if context.cookies:
            context.session._defer(loader)

    def defer_open(self, context: SessionContext) -> bool:
        """For a store that loads without I/O: load on the session's first use, synchronously.

        Returns whether the store can (it has ``load_sync``).
        """
        load_sync = self._load_sync
        if load_sync is None:
            return False
        if context.cookies:

            def opener() -> None:
                key = self.open(context)
                if key is not None:
                    try:
                        state = load_sync(key)
                    except Exception as exc:
                        self._load_failed(key, exc)
                        state = None
                    self._adopt(context, key, state)

            context.session._defer_open(opener)
        return True

    async def load(self, context: SessionContext) -> Session:
        """Load the state of the cookie's key into ``context.session``; raise ``PersistError``."""
        key = self.open(context)
        if key is not None:
            try:
                state = await self.store.load(key)
            except Exception as exc:
                self._load_failed(key, exc)
                state = None
            self._adopt(context, key, state)
        return context.session

    def _load_failed(self, key: SessionKey, exc: Exception) -> None:
        """Unreadable state starts anew (returns); any other failure is a ``PersistError``."""
        if isinstance(exc, LoadError) and exc.deserialization:
            logger.warning("session %s holds unreadable state; starting anew", fingerprint(key))
            return
        raise PersistError(f"session store failed to load: {exc!r}") from exc

    def _adopt(self, context: SessionContext, key: SessionKey, state: StoredState | None) -> None:
        if state is not None and self._expired(state.created):
            logger.info("session %s passed its absolute timeout", fingerprint(key))
            state = None
        if state is None:
            context.key = None
            context.reissue = False
            context.session._fill({}, None, None)
            if context.finished:  # loaded after the response started: no cookie can follow
                context.session._freeze(_NO_NEW_KEY)
        else:
            context.created = state.created
            context.origin = state.origin
            context.session._fill(state, None if self._any_key else key, state.user)

    def _expired(self, created: float | None) -> bool:
        max_age = self.lifecycle.max_age
        return (
            max_age is not None
            and created is not None
            and (self.clock() - created >= max_age.total_seconds())
        )

    # -- response phase ----------------------------------------------------------------------

    async def finish(self, context: SessionContext, status_code: int, headers: Headers) -> Headers:
        """Persist the session as its status says; return ``headers`` plus the session's own.

        Raises ``PersistError`` when the store fails or the cookie would be too large. Afterwards
        a server-side session with a key still takes changes (saved by ``persist_late``); any
        other refuses them, since no cookie can follow.
        """
        session = context.session
        context.finished = True
        persist = status_code < 500 and not session._discarded
        if context.cookies and not session.accessed:
            # The cookie was never opened, so nothing changed. Only a policy of extending on
            # every request needs it now; otherwise a late load may still take changes.
            if self.lifecycle.policy is not Policy.ON_EVERY_REQUEST or not persist:
                if self._any_key or not persist:
                    session._freeze(_NO_NEW_KEY)
                else:
                    session._allow_late_writes(_NO_NEW_KEY)
                return headers
            if self._any_key or self.lifecycle.max_age is not None:
                # The cookie store re-seals the state (no I/O); an absolute timeout needs its age.
                await self._guarded(self.load(context))
            else:  # update_ttl needs only the key: no GET
                self.open(context)
        cookie: str | None = None
        if persist:
            cookie = await self._guarded(self._persist(context))
        if context.key is not None and not self._any_key and persist:
            session._allow_late_writes(_NO_NEW_KEY)
        else:
            session._freeze(_NO_NEW_KEY)
            context.key = None  # nothing more is saved for this response
        if cookie is None and not session.accessed:
            return headers
        return _add_headers(headers, cookie)

    async def persist_late(self, context: SessionContext) -> None:
        """Save changes made after the response head went out (streaming, WebSocket).

        Only an existing server-side key can take them; ``finish`` has frozen every other session.
        """
        key = context.key
        if key is None:
            return
        status, changes = context.session._changes()
        if status is SessionStatus.UNCHANGED:
            return
        if status is SessionStatus.PURGED:
            await self._guarded(self.store.delete(key))
            context.key = None
            context.session._freeze("the session was purged")
            return
        updated = await self._guarded(
            self.store.update(key, self._record(context), self.lifecycle.ttl, changes)
        )
        if updated != key:
            logger.warning(
                "session %s ended while the response streamed; later changes were dropped",
                fingerprint(key),
            )
            context.key = None
            context.session._freeze("the session ended while the response was streaming")
            return
        context.session._rebase(key)

    async def _guarded(self, call: Awaitable[_T]) -> _T:
        """Await a store call, turning any failure into a ``PersistError``."""
        try:
            return await call
        except PersistError:
            raise
        except (SaveError, UpdateError) as exc:
            code = 500 if exc.serialization else 503
            raise PersistError(f"session store failed to save: {exc}", status_code=code) from exc
        except Exception as exc:
            raise PersistError(f"session store failed to save: {exc!r}") from exc

    def _record(self, context: SessionContext) -> StoredState:
        """The session's state with the metadata stores keep beside it."""
        session, now = context.session, self.clock()
        record = StoredState(
            session._state(),
            created=context.created or now,
            seen=now,
            user=session._user,
            agent=context.agent if session._user is not None else None,
        )
        record.origin, context.origin = context.origin, None  # only good for one write
        return record

    async def _persist(self, context: SessionContext) -> str | None:
        """Make the store calls; return the Set-Cookie value to send, if any."""
        store, ttl, key = self.store, self.lifecycle.ttl, context.key
        session = context.session
        status, changes = session._changes()
        if status is SessionStatus.UNCHANGED:
            if key is None:
                return None
            new_key: SessionKey | None = None
            if self.lifecycle.policy is Policy.ON_EVERY_REQUEST:
                if self._any_key:  # the expiry is inside the cookie: seal it anew
                    new_key = await store.update(key, self._record(context), ttl) or key
                else:
                    await store.update_ttl(key, ttl)
                    if self.cookie_max_age is not None:
                        new_key = key
            if new_key is None:
                return self._cookie(key) if context.reissue else None
        elif status is SessionStatus.PURGED:
            if key is None:
                return None
            await store.delete(key)
            logger.info("session %s purged", fingerprint(key))
            return self._ended(context)
        else:
            state = self._record(context)
            if key is None:
                if not (state or state.user):
                    return None
                new_key = await store.save(state, ttl)
            elif status is SessionStatus.RENEWED:
                state.origin = None  # the old record is about to become a tombstone
                new_key = await store.save(state, ttl)
                await store.delete(key, successor=new_key)
                # Another request may have renewed or purged the key first: its tombstone
                # stays, and this request's changes follow it, so one session lives on, not two.
                winner = await store.update(key, state, ttl, changes)
                if winner != new_key:
                    await store.delete(new_key, successor=winner)
                    if winner is None:
                        return self._ended(context)
                    new_key = winner
                logger.info("session %s renewed as %s", fingerprint(key), fingerprint(new_key))
            else:
                new_key = await store.update(key, state, ttl, changes)
                if new_key is None:
                    logger.warning("session %s was purged by another request", fingerprint(key))
                    return self._ended(context)
        context.key = new_key
        session._rebase(None if self._any_key else new_key)
        return self._cookie(new_key)

    def _ended(self, context: SessionContext) -> str:
        """Forget the key; the removal cookie to send."""
        context.key = None
        return removal_cookie(self.cookie, self.clock())

    def _cookie(self, key: str) -> str:
        sealed = seal(self.security, self.keys[0], self.cookie.name, key)
        line = session_cookie(self.cookie, sealed, self.cookie_max_age)
        size = len(line.encode("utf-8"))
        if size > MAX_SET_COOKIE_BYTES:
            raise PersistError(
                f"the session cookie would be {size} bytes, over the {MAX_SET_COOKIE_BYTES}-byte"
                " limit browsers keep; store less in the session or use a server-side store",
                status_code=500,
            )
        return line


def _add_headers(headers: Headers, cookie: str | None) -> Headers:
    """``headers`` with ``Vary: Cookie`` merged in and, with a cookie, Set-Cookie and caching."""
    out: Headers = []
    vary_done = cache_set = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"vary" and not vary_done:
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"cookie" not in tokens and b"*" not in tokens:
                value += b", Cookie"
            vary_done = True
        elif lower == b"cache-control":
            cache_set = True
        out.append((name, value))
    if not vary_done:
        out.append((b"vary", b"Cookie"))
    if cookie is not None:
        out.append((b"set-cookie", cookie.encode("latin-1")))
        if not cache_set:
            out.append((b"cache-control", b"private"))
    return out
