"""The core: which cookie opens, what to ask the backend, which headers to send (SPEC §2).

It knows nothing of ASGI: an adapter hands it the request's Cookie header values, awaits
``load``, runs the handler, then hands ``finish`` the response status and headers and sends what
comes back. Two paths, chosen once at construction, never per request:

* ``ServerSideEngine``: the cookie seals a key; the session lives in a ``RecordStore`` behind the
  ``Repository``, which holds every rule about merging, renewal and revocation.
* ``ClientSideEngine``: the cookie seals the state itself (``CookieSessionStore``); no I/O.

Request phase: the first of at most four same-name cookies that opens under the key ring (and,
server-side, holds a key of the generated shape) is used; anything else starts an empty session
with a WARNING naming only a salted hash. Response phase, server-side, by the session's status:

=========  ==============================================================  ==================
status     repository call                                                  Set-Cookie
=========  ==============================================================  ==================
changed    ``create`` (new session, unless empty) or ``save`` (merge)        the key
           ``save`` found the session ended                                 removal
           ``save`` landed in a renewal's successor                         none
purged     ``purge`` (tombstone; a renewed key's successor too)             removal
renewed    ``renew`` (new record, then the old one becomes its tombstone)   the new key
unchanged  ``touch`` under ON_EVERY_REQUEST, else nothing                   if Max-Age
=========  ==============================================================  ==================

Responses with status 500 or above persist nothing, nor do requests whose session was
discarded (``Seam.discard``: a request the CSRF check refused). A cookie opened with an
older key of the ring is sent back sealed with the current one.

With ``touch_after``, an unchanged session is extended only once its record's (or sealed
cookie's) ``expires`` shows that long since the last extension, and server-side by ``refresh``
(a rewrite carrying the new ``expires``) instead of ``touch``. ``on_event`` gets
``sessionware.events`` from here and from the repository.

Device binding (``sessionware.dbsc``, optional, server-side only) hooks in through a few small
methods of their own: ``_begin_device`` keeps the Cookie headers (the credential is among them),
``_device_check`` refuses a bound record whose credential is missing or lapsed, ``_start_binding``
puts a new binding into the write after ``bind_device()`` (the repository carries an existing one
through every write, renewal included), ``_offer_registration`` sends the registration header;
``binding_record`` and ``store_binding`` serve the DBSC endpoints.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sessionware.config import BrowserSession, CookieSettings, PersistentSession
from sessionware.config import TtlExtensionPolicy as Policy
from sessionware.cookies import (
    MAX_SET_COOKIE_BYTES,
    cookie_suffix,
    find_cookies,
    removal_cookie,
    session_cookie,
    single_cookie,
)
from sessionware.crypto import ContentSecurity, Key, Sealer
from sessionware.errors import SessionwareError
from sessionware.events import (
    DecodeFailed,
    EventHook,
    SessionCreated,
    SessionEvent,
    SessionExpired,
    SessionLoaded,
    SessionPurged,
    SessionRenewed,
    SessionRevoked,
    emit,
)
from sessionware.repository import ENDED, Loaded, Repository
from sessionware.session import Seam, Session, SessionError, SessionStatus
from sessionware.state import DeserializationError, StateFields, StoredState, stored_state
from sessionware.stores.base import (
    NotSupportedError,
    RecordStore,
    SaveError,
    SessionKey,
    StoreError,
    is_generated_key,
)
from sessionware.stores.cookie import CookieSessionStore

if TYPE_CHECKING:
    from sessionware.dbsc import DeviceBinder, DeviceRequest

__all__ = [
    "ClientSideEngine",
    "PersistError",
    "ServerSideEngine",
    "SessionContext",
    "SessionEngine",
    "fingerprint",
    "make_engine",
]

logger = logging.getLogger("sessionware")

Headers = list[tuple[bytes, bytes]]
_T = TypeVar("_T")
_SALT = secrets.token_bytes(16)


def fingerprint(secret: str) -> str:
    """A salted hash of a cookie value or key, safe to log (the salt is new in every process)."""
    return hashlib.blake2b(secret.encode("utf-8", "replace"), key=_SALT, digest_size=8).hexdigest()


class PersistError(SessionwareError):
    """The session could not be loaded or saved; the adapter answers ``status_code``, opaquely.

    503 when the store failed (try again later), 500 when the state itself cannot be stored.
    Its message is safe to log: it never holds a key, a cookie value or state.
    """

    def __init__(self, message: str, *, status_code: int = 503) -> None:
        super().__init__(message)
        self.status_code = status_code


_REQUEST_OVER = (
    "the session's request is over: nothing written to it now can be stored (write to the"
    " session before the response ends)"
)
_SEALED = (
    "the session's cookie went out with the response: nothing written to it now can be stored"
    " (write to the session before the response starts)"
)
_NO_NEW_KEY = (
    "the session cannot get a new key once the response has started: its cookie has gone out"
    " (renew, or save a new session, before the response starts)"
)


class SessionContext:
    """One request's session, with what the engine remembers between its two phases."""

    __slots__ = (
        "agent",
        "came",
        "cookies",
        "created",
        "device",
        "finished",
        "key",
        "loaded",
        "opener",
        "reissue",
        "session",
    )

    def __init__(self, cookies: list[bytes], agent: bytes | None) -> None:
        self.session = Seam.new()
        self.cookies = cookies
        """Cookie header values that may hold the session cookie (kept: Vary depends on them)."""
        self.agent = agent
        """The User-Agent header, kept (shortened, when written) for sessions bound to a user."""
        self.key: SessionKey | None = None
        self.came: tuple[str, str] | None = None
        """The request's session cookie as ``(key, sealed value)``, when the current key sealed
        it."""
        self.loaded: Loaded | None = None
        self.created: float | None = None
        self.reissue = self.finished = False
        self.device: DeviceRequest | None = None
        """Device binding's part of the request (``sessionware.dbsc``), when it is configured."""
        self.opener: SessionEngine | None = None
        """The engine that loads the session at its first ``await load()`` (``defer``)."""

    def load_deferred(self, session: Session) -> Awaitable[Session]:
        """Load the session (its deferred loader, as a bound method: no closure needed)."""
        self.session = session
        assert self.opener is not None
        return self.opener.load(self)

    def __repr__(self) -> str:
        key = None if self.key is None else f"#{fingerprint(self.key)}"
        return (
            f"<SessionContext key={key} cookies={len(self.cookies)}"
            f" loaded={self.loaded is not None} finished={self.finished}>"
        )


class SessionEngine:
    """What both paths share: the cookie, the key ring, the lifecycle, the response headers."""

    server_side: bool
    """Whether the session lives in a record store (an instance attribute: it is read on every
    request, and CPython specializes reads of those, not of class attributes)."""
    backend: Repository | CookieSessionStore

    def __init__(
        self,
        *,
        keys: Sequence[Key],
        security: ContentSecurity,
        cookie: CookieSettings,
        lifecycle: BrowserSession | PersistentSession,
        clock: Callable[[], float] = time.time,
        on_event: EventHook | None = None,
        device: DeviceBinder | None = None,
    ) -> None:
        if not keys:
            raise ValueError("at least one Key is needed to seal session cookies")
        if not isinstance(lifecycle, (BrowserSession, PersistentSession)):
            raise TypeError("lifecycle must be a BrowserSession or a PersistentSession")
        if not isinstance(security, ContentSecurity):
            raise TypeError("content_security must be a ContentSecurity member")
        if on_event is not None and not callable(on_event):
            raise TypeError(
                f"on_event must be a callable taking one event, not {type(on_event).__name__}"
            )
        self.keys = tuple(keys)
        self.security = security
        self.cookie = cookie
        self.lifecycle = lifecycle
        self.clock = clock
        self.device = device
        self.ttl = lifecycle.ttl
        self._touch = lifecycle.policy is Policy.ON_EVERY_REQUEST
        touch_after = lifecycle.touch_after
        self._touch_window = (
            None if touch_after is None else (self.ttl - touch_after).total_seconds()
        )
        """With ``touch_after``: extend only when less than this many seconds remain."""
        self.on_event = on_event
        """Receives ``sessionware.events``; when ``None`` no event is built."""
        self._prefix = f"{cookie.name}=".encode("latin-1")
        self.sealer = Sealer(security, self.keys, cookie.name)
        max_age = lifecycle.max_age
        self._max_age = None if max_age is None else max_age.total_seconds()
        """The absolute timeout in seconds, if any."""
        max_age = lifecycle.cookie_max_age
        self.cookie_max_age = None if max_age is None else int(max_age.total_seconds())
        self._base64 = security is ContentSecurity.PRIVATE

    @property
    def cookie_max_age(self) -> int | None:
        """The cookie's Max-Age in seconds; ``None`` for a cookie that ends with the browser."""
        return self._cookie_max_age

    @cookie_max_age.setter
    def cookie_max_age(self, max_age: int | None) -> None:
        self._cookie_max_age = max_age
        self._cookie_head = f"{self.cookie.name}="
        self._cookie_suffix = cookie_suffix(self.cookie, max_age)  # every Set-Cookie's tail

    # -- request phase -----------------------------------------------------------------------

    def begin(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None
    ) -> SessionContext:
        """Note the Cookie header values that may hold the session; no work yet.

        ``user_agent`` (the User-Agent header) is kept, shortened, for sessions bound to a user.
        """
        return self.start(cookie_headers, user_agent, False)

    def start(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None, lazy: bool
    ) -> SessionContext:
        """The request's context (``begin``), its loading deferred to the first
        ``await session.load()`` when ``lazy``."""
        every = None
        if self.device is not None:
            cookie_headers = every = list(cookie_headers)
        context = SessionContext(_candidates(cookie_headers, self._prefix), user_agent)
        if every is not None:
            self._begin_device(context, every)
        if lazy:
            self.defer(context)
        return context

    def open(self, cookies: list[bytes]) -> tuple[str, int, str] | None:
        """The plaintext of the first session cookie among ``cookies`` (Cookie header values that
        name it) that opens, the ring index it opened with, and the sealed value itself."""
        value = single_cookie(cookies[0], self._prefix) if len(cookies) == 1 else None
        values = find_cookies(cookies, self.cookie.name) if value is None else (value,)
        opener = self.sealer.open
        for value in values:
            opened = opener(value)
            if opened is None:
                logger.warning("session cookie %s did not open; ignored", fingerprint(value))
                if self.on_event is not None:
                    self._emit(DecodeFailed("cookie"))
                continue
            if not self.server_side or self._acceptable(opened[0]):
                return opened[0], opened[1], value
        return None

    def _acceptable(self, plain: str) -> bool:
        """Whether an opened cookie's plaintext can name a session: server-side, a key's shape
        (client-side, any plaintext does; ``open`` does not ask)."""
        return True

    def _emit(self, event: SessionEvent) -> None:
        """Hand ``event`` to ``on_event`` (callers check it is set before building the event)."""
        if self.on_event is not None:
            emit(self.on_event, event)

    def _due(self, expires: float | None) -> bool:
        """Whether an unchanged session's TTL is extended now: always, unless ``touch_after`` is
        set and the last extension (``expires`` - TTL) is more recent than that."""
        window = self._touch_window
        return window is None or expires is None or expires - self.clock() <= window

    async def load(self, context: SessionContext) -> Session:
        """Load the cookie's session into ``context.session``; raise ``PersistError``."""
        raise NotImplementedError

    def defer(self, context: SessionContext) -> None:
        """Load on the first ``await session.load()`` instead of now (``lazy=True``)."""

        context.opener = self
        Seam.defer(context.session, context.load_deferred)

    def release(self, context: SessionContext) -> None:
        """The request is over: its session takes no more writes (none could be stored); and
        if it was never opened or loaded, the context stops referring to it (the session still
        holds the context, its opener), so both are freed without the garbage collector."""
        session = context.session
        Seam.freeze(session, _REQUEST_OVER)
        if Seam.pending(session):  # its loader is the context: only one may refer to the other
            del context.session

    def _expired(self, created: float | None) -> bool:
        max_age = self._max_age
        return max_age is not None and created is not None and self.clock() - created >= max_age

    def _start_empty(self, context: SessionContext) -> None:
        context.key = context.loaded = None
        context.reissue = False
        Seam.fill(context.session, {})
        if context.finished:  # loaded after the response started: no cookie can follow
            Seam.freeze(context.session, _NO_NEW_KEY)

    # -- response phase ----------------------------------------------------------------------

    async def finish(self, context: SessionContext, status_code: int, headers: Headers) -> Headers:
        """Persist the session as its status says; return ``headers`` plus the session's own.

        Raises ``PersistError`` when the backend fails or the cookie would be too large. After it,
        a server-side session with a stored record still takes changes (``persist_late``).
        """
        untouched = self.finish_sync(context, status_code, headers)
        if untouched is not None:
            return untouched
        return await self.finish_io(context, status_code, headers)

    async def finish_io(
        self, context: SessionContext, status_code: int, headers: Headers
    ) -> Headers:
        """The part of ``finish`` that may need I/O, for a context ``finish_sync`` left (None)."""
        session = context.session
        context.finished = True
        persist = status_code < 500 and not Seam.discarded(session)
        cookie: str | None = None
        accessed = session.accessed
        if persist and (accessed or (self._touch and context.cookies)):
            if not accessed:
                await self._guarded(self.load(context))
            cookie = await self._guarded(self._persist(context))
        if self.server_side and persist and (context.loaded or not accessed):
            Seam.allow_late_writes(session, _NO_NEW_KEY)
        else:
            Seam.freeze(session, _NO_NEW_KEY)
            context.loaded = None  # nothing more is saved for this response
        if cookie is None and not (accessed or context.cookies):
            return headers
        out = _add_headers(headers, cookie)
        if context.device is not None:
            self._offer_registration(context, out)
        return out

    def finish_sync(
        self, context: SessionContext, status_code: int, headers: Headers
    ) -> Headers | None:
        """``finish`` without a coroutine where no I/O is needed (here: a session nothing used
        and nothing persists, or one only read; no touch due, no cookie to reissue); ``None``
        when ``finish`` has work to do."""
        cookies, session = context.cookies, context.session
        touch = self._touch and bool(cookies)
        settled = Seam.close_untouched(
            session, status_code < 500, touch, self.server_side, _NO_NEW_KEY
        )
        vary = bool(cookies)
        if not settled:
            if touch or context.reissue or status_code >= 500:
                return None
            if Seam.discarded(session) or not Seam.only_read(session):
                return None
            # Nothing to store and no cookie; later writes to a stored record are still saved.
            if context.loaded is not None:
                Seam.allow_late_writes(session, _NO_NEW_KEY)
            else:
                Seam.freeze(session, _NO_NEW_KEY)
            settled, vary = 1, True  # a used session varies by Cookie
        context.finished = True
        if settled == 2:
            context.loaded = None  # nothing more is saved for this response
        if not vary:
            return headers
        out = _with_vary(headers)
        if context.device is not None:
            self._offer_registration(context, out)
        return out

    async def persist_late(self, context: SessionContext) -> None:
        """Save changes made after the response head went out (streaming, WebSocket)."""

    def late_pending(self, context: SessionContext) -> bool:
        """Whether ``persist_late`` may have something to save: a stored record whose session
        is not certainly unchanged since (checked without encoding, as ``Seam.only_read``)."""
        return context.loaded is not None and not Seam.settled(context.session)

    async def _persist(self, context: SessionContext) -> str | None:
        raise NotImplementedError

    async def seed(self, state: Mapping[str, Any]) -> str:
        """Store ``state`` as a new session; the Set-Cookie value that carries it (for tests)."""
        raise NotImplementedError

    async def _guarded(self, call: Awaitable[_T]) -> _T:
        """Await a backend call, turning any failure into a ``PersistError`` safe to log."""
        try:
            return await call
        except PersistError:
            raise
        except Exception as exc:
            raise _persist_error(exc) from exc

    def _meta(self, context: SessionContext) -> StoredState:
        """The metadata a write stores beside the state: creation, the bound user, its agent,
        and a new device binding if one was asked for (``None``: the record's stays)."""
        return stored_state(
            {},
            context.created or self.clock(),
            Seam.user(context.session),
            context.agent[:120].decode("latin-1") if context.agent else None,
            None if self.device is None else self._start_binding(context),
        )

    # -- device binding (sessionware.dbsc) ---------------------------------------------------

    def _begin_device(self, context: SessionContext, cookie_headers: list[bytes]) -> None:
        """Keep every Cookie header value (the credential is among them); allow bind_device()."""
        from sessionware.dbsc import DeviceRequest

        context.device = DeviceRequest(cookie_headers)
        Seam.offer_device(context.session)

    def _device_check(self, context: SessionContext, key: str, loaded: Loaded) -> Loaded | None:
        """``loaded`` if this request may use it: a device-bound record only with a credential
        that has not lapsed (or while its binding is pending). Notes whether it proved one."""
        if self.device is None or context.device is None or loaded.state.device is None:
            return loaded
        proven = self.device.check(loaded.state.device, context.device.cookies, self.clock())
        if proven is None:
            logger.info(
                "session %s is device-bound; its credential is missing or lapsed", fingerprint(key)
            )
            return None
        context.device.bound = proven
        return loaded

    def _start_binding(self, context: SessionContext) -> dict[str, Any] | None:
        """A new pending binding for the record when ``bind_device()`` was called, else ``None``."""
        if self.device is None or not Seam.take_device_request(context.session):
            return None
        binding, registration = self.device.start(self.clock())
        if context.device is not None:
            context.device.registration = registration
        return binding.to_record()

    def _offer_registration(self, context: SessionContext, headers: Headers) -> None:
        """Add ``Secure-Session-Registration`` when this response stored a new binding."""
        device = context.device
        if device is not None and device.registration is not None:
            if context.key is not None:
                headers.append((b"secure-session-registration", device.registration.encode()))
            device.registration = None

    def _ended(self, context: SessionContext) -> str:
        """Forget the session; the removal cookie to send."""
        context.key = context.loaded = None
        return removal_cookie(self.cookie, self.clock())

    def _cookie(self, value: str, came: tuple[str, str] | None = None) -> str:
        """The Set-Cookie line carrying ``value`` sealed (percent-encoded as ``session_cookie``
        does); ``PersistError`` when browsers would drop it for its size. ``came``: the request's
        own cookie as ``(plaintext, sealed value)`` with the current key; when it holds
        ``value``, it is sent back as it came (the same ciphertext: no new seal needed)."""
        sealed = came[1] if came is not None and came[0] == value else self.sealer.seal(value)
        if self._base64:  # a PRIVATE seal is standard base64: only these two need escaping
            escaped = sealed.replace("/", "%2F").replace("=", "%3D")
            line = f"{self._cookie_head}{escaped}{self._cookie_suffix}"
        else:
            suffix = self._cookie_suffix
            line = session_cookie(self.cookie, sealed, self.cookie_max_age, suffix=suffix)
        size = len(line) if line.isascii() else len(line.encode("utf-8"))
        if size > MAX_SET_COOKIE_BYTES:
            raise PersistError(
                f"the session cookie would be {size} bytes, over the {MAX_SET_COOKIE_BYTES}-byte"
                " limit browsers keep; store less in the session or use a server-side store",
                status_code=500,
            )
        return line


class ServerSideEngine(SessionEngine):
    """The cookie carries a key; the state lives in a record store, through the repository."""

    def __init__(self, *, repository: Repository, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.server_side = True
        self.repository = self.backend = repository

    async def seed(self, state: Mapping[str, Any]) -> str:
        """Store ``state`` as a new session; the Set-Cookie value that carries it (for tests)."""
        meta = StoredState(created=self.clock())
        key, _ = await self._guarded(self.repository.create(state, meta, self.ttl))
        return self._cookie(key)

    def _acceptable(self, plain: str) -> bool:
        if is_generated_key(plain):
            return True
        logger.warning("session key %s has the wrong shape; ignored", fingerprint(plain))
        if self.on_event is not None:
            self._emit(DecodeFailed("cookie"))
        return False

    async def load(self, context: SessionContext) -> Session:
        opened = self.open(context.cookies)
        if opened is None:
            self._start_empty(context)
            return context.session
        key: SessionKey = opened[0]  # type: ignore[assignment]  # _acceptable checked its shape
        try:
            loaded = await self.repository.load(key, self.ttl)
        except DeserializationError:
            logger.warning("session %s holds unreadable state; starting anew", fingerprint(key))
            if self.on_event is not None:
                self._emit(DecodeFailed("state"))
            loaded = None
        except Exception as exc:
            raise PersistError(f"session store failed to load: {_safe(exc)}") from exc
        if loaded is ENDED:
            self._start_empty(context)
            Seam.mark_ended(context.session)
            return context.session
        if loaded is not None and self._expired(loaded.state.created):
            logger.info("session %s passed its absolute timeout", fingerprint(key))
            if self.on_event is not None:
                self._emit(SessionExpired("absolute"))
            loaded = None
        if loaded is not None and self.device is not None:
            loaded = self._device_check(context, key, loaded)
        if loaded is None:
            self._start_empty(context)
            return context.session
        if self.on_event is not None:
            self._emit(SessionLoaded())
        context.key, context.loaded, context.reissue = key, loaded, opened[1] > 0
        if not context.reissue:
            context.came = key, opened[2]
        context.created = loaded.state.created
        state = loaded.state
        Seam.fill(context.session, state, key, loaded.id, state.user, loaded.text)
        return context.session

    async def _persist(self, context: SessionContext) -> str | None:
        repository, ttl, key, loaded = self.repository, self.ttl, context.key, context.loaded
        session = context.session
        status, changes, state_json = Seam.changes(session)
        if status is _UNCHANGED:
            if key is None or loaded is None:
                return None
            if self._touch and self._due(loaded.state.expires):
                if self._touch_window is None:
                    alive = await repository.touch(loaded, ttl)
                else:  # rewritten, so the record says when it was last extended
                    refreshed = await repository.refresh(loaded, ttl)
                    alive = refreshed is not None
                    context.loaded = refreshed
                if not alive:
                    logger.warning("session %s had ended; its cookie is removed", fingerprint(key))
                    if self.on_event is not None:
                        self._emit(SessionRevoked("touch"))
                    return self._ended(context)
                if self.cookie_max_age is not None:
                    return self._cookie(key, context.came)
            return self._cookie(key) if context.reissue else None
        if status is _PURGED:
            if key is None or loaded is None:
                return None
            await repository.purge(loaded)
            logger.info("session %s purged", fingerprint(key))
            if self.on_event is not None:
                self._emit(SessionPurged())
            return self._ended(context)
        meta = self._meta(context)
        if loaded is None:
            state = Seam.state(session)
            if not (state or meta.user or meta.device):
                return None
            new_key, stored = await repository.create(state, meta, ttl)
            if self.on_event is not None:
                self._emit(SessionCreated())
        elif status is _RENEWED:
            renewed = await repository.renew(loaded, changes, meta, ttl)
            if renewed is None:
                logger.warning("session %s ended while renewing it", fingerprint(loaded.id))
                if self.on_event is not None:
                    self._emit(SessionRevoked("renew"))
                return self._ended(context)
            if not isinstance(renewed, tuple):  # another request renewed it first
                logger.info("session %s was renewed by another request", fingerprint(loaded.id))
                context.key, context.loaded = None, renewed.loaded
                return None
            new_key, stored = renewed
            logger.info("session %s renewed as %s", fingerprint(loaded.id), fingerprint(stored.id))
            if self.on_event is not None:
                self._emit(SessionRenewed())
        else:
            saved = await repository.save(loaded, changes, meta, ttl, state_json)
            if saved is None:
                logger.warning(
                    "session %s was ended by another request; this request's changes are"
                    " dropped and its cookie removed",
                    fingerprint(loaded.id),
                )
                if self.on_event is not None:
                    self._emit(SessionRevoked("save"))
                return self._ended(context)
            context.loaded = saved.loaded
            Seam.rebase(session, key, saved.loaded.id, state_json)
            return None if saved.moved else self._cookie(key, context.came) if key else None
        context.key, context.loaded = new_key, stored
        Seam.rebase(session, new_key, stored.id, state_json)
        return self._cookie(new_key)

    async def binding_record(self, cookie_headers: list[bytes]) -> Loaded | None:
        """DBSC endpoints: the live record the session cookie names, without the device check.

        Raises ``PersistError`` when the store fails."""
        opened = self.open(self.begin(cookie_headers).cookies)
        if opened is None:
            return None
        key = SessionKey(opened[0])
        try:
            loaded = await self.repository.load(key, self.ttl)
        except DeserializationError:
            return None
        except Exception as exc:
            raise PersistError(f"session store failed to load: {_safe(exc)}") from exc
        if not isinstance(loaded, Loaded) or self._expired(loaded.state.created):
            return None  # absent, ended, or past its absolute timeout
        return loaded

    async def store_binding(self, loaded: Loaded, device: dict[str, Any]) -> bool:
        """DBSC endpoints: store ``device`` as the record's binding, its state as it is, only
        if nothing wrote the record since ``loaded`` was read (one compare-and-set)."""
        state = loaded.state
        meta = StoredState(created=state.created, user=state.user, agent=state.agent, device=device)
        stored = await self._guarded(self.repository.replace(loaded, state, meta, self.ttl))
        return stored is not None

    async def persist_late(self, context: SessionContext) -> None:
        loaded = context.loaded
        if loaded is None:
            return
        session = context.session
        try:
            status, changes, state_json = Seam.changes(session)
        except SessionError as exc:
            raise PersistError(f"session not stored: {exc}", status_code=500) from exc
        if status is _UNCHANGED:
            return
        if status is _PURGED:
            await self._guarded(self.repository.purge(loaded))
            if self.on_event is not None:
                self._emit(SessionPurged())
            context.key = context.loaded = None
            Seam.freeze(session, "the session was purged")
            return
        meta = self._meta(context)
        saved = await self._guarded(self.repository.save(loaded, changes, meta, self.ttl))
        if saved is None:
            logger.warning(
                "session %s ended while the response streamed; later changes were dropped",
                fingerprint(loaded.id),
            )
            if self.on_event is not None:
                self._emit(SessionRevoked("late_save"))
            context.key = context.loaded = None
            Seam.freeze(session, "the session ended while the response was streaming")
            return
        context.loaded = saved.loaded
        Seam.rebase(session, context.key, saved.loaded.id, state_json)


class ClientSideEngine(SessionEngine):
    """The cookie carries the state itself, sealed; nothing is stored on the server."""

    def __init__(self, *, store: CookieSessionStore, **options: object) -> None:
        if options.get("device") is not None:
            raise NotSupportedError(
                "device binding keeps the device's key in the session record: use a server-side"
                " store (memory, Redis, SQLite, PostgreSQL), not the cookie store"
            )
        super().__init__(**options)  # type: ignore[arg-type]
        self.server_side = False
        self.store = self.backend = store
        self._opener = self._open_into  # bound once, not per request

    async def seed(self, state: Mapping[str, Any]) -> str:
        """The Set-Cookie value that carries ``state`` as a new session (for tests)."""
        return self._cookie(self.store.dump(StoredState(state, created=self.clock()), self.ttl))

    # The client-side path needs no per-request context: the session holds (``Seam.opening``)
    # the Cookie header values until its first use, then what they opened to: ``_UNOPENED``,
    # or ``(created, expires, plaintext, ring index)``. Nothing refers back to the session, so
    # it is freed with its request by reference counting alone.

    def session_for(self, cookie_headers: list[bytes]) -> Session:
        """A request's session; its cookie is opened at its first use, without I/O (a request
        that ignores its session costs nothing more)."""
        cookies = _candidates(cookie_headers, self._prefix)
        return Seam.opening(self._opener, cookies) if cookies else Seam.new()

    def _open_into(self, session: Session, cookies: list[bytes]) -> None:
        """Open the cookie into the session (its deferred opener, run on the emptied session)."""
        opened = self.open(cookies)
        fields = None if opened is None else self._read_state(opened[0])
        if opened is None or fields is None:
            Seam.take(session, {}, None, None, _UNOPENED)
            return
        if self.on_event is not None:
            self._emit(SessionLoaded())
        state, created, expires, user = fields
        Seam.take(session, state, user, opened[0], (created, expires, opened[0], opened[1]))

    def _read_state(self, plain: str) -> StateFields | None:
        """The live state an opened cookie's plaintext holds (``CookieSessionStore.read``);
        ``None``, with its log line and event, when it is unreadable, idle or too old."""
        try:
            fields = self.store.read(plain)
        except DeserializationError:
            logger.warning(
                "session cookie %s holds unreadable state; starting anew", fingerprint(plain)
            )
            if self.on_event is not None:
                self._emit(DecodeFailed("state"))
            return None
        if fields is None:
            if self.on_event is not None:
                self._emit(SessionExpired("idle"))
            return None
        if self._max_age is not None and self._expired(fields[1]):
            logger.info("session cookie passed its absolute timeout")
            if self.on_event is not None:
                self._emit(SessionExpired("absolute"))
            return None
        return fields

    def respond(self, session: Session, status_code: int, headers: Headers) -> Headers:
        """The response starts: its headers with the session's own (Vary, and a Set-Cookie
        when the session's status or the lifecycle asks for one); the session takes no more
        writes. ``headers`` itself when there is nothing to add. Raises ``PersistError``."""
        try:
            accessed, persist, status, state_json, held = Seam.close(
                session, status_code < 500, _SEALED
            )
            if not accessed:
                if held is None:  # no session cookie came, and nothing used the session
                    return headers
                if not (persist and self._touch):
                    return _with_vary(headers)
                if type(held) is list:  # an extension may be due: the cookie is sealed anew
                    held = Seam.open_pending(session)
                status = _UNCHANGED
            elif status is None or (
                status is _UNCHANGED and not self._touch and not (held and held[3])
            ):
                return _with_vary(headers)
            cookie = self._seal(session, status, state_json, held)
        except PersistError:
            raise
        except Exception as exc:
            raise _persist_error(exc) from exc
        return _with_vary(headers) if cookie is None else _add_headers(headers, cookie)

    def release_session(self, session: Session) -> None:
        """The request is over without a response: writes to its session now raise (none could
        be stored; ``respond`` does the same when the response starts)."""
        Seam.freeze(session, _REQUEST_OVER)

    def _seal(
        self, session: Session, status: SessionStatus, state_json: str | None, held: Any
    ) -> str | None:
        """The Set-Cookie to send for the session's ``status`` (``Seam.close``), if any."""
        had = bool(held)  # the cookie opened to a live session
        if status is _PURGED:
            if had and self.on_event is not None:
                self._emit(SessionPurged())
            return removal_cookie(self.cookie, self.clock()) if had else None
        if status is _UNCHANGED:
            if not had:
                return None
            if not (self._touch and self._due(held[1])):
                return self._cookie(held[2]) if held[3] else None
        user, store = Seam.user(session), self.store
        state = Seam.state(session) if state_json is None or store.legacy_format else _UNREAD
        if not (had or user or (state_json != "{}" if state_json is not None else state)):
            return None
        if self.on_event is not None and (not had or status is _RENEWED):
            self._emit(SessionRenewed() if had else SessionCreated())
        created = (held[0] if had else None) or self.clock()
        text = store.dump(state, self.ttl, state_json=state_json, created=created, user=user)
        return self._cookie(text)

    # The context-based interface every engine has (tests, WebSocket scopes), on the above.

    def begin(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None
    ) -> SessionContext:
        context = SessionContext([], None)
        context.session = self.session_for(list(cookie_headers))
        return context

    def start(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None, lazy: bool = True
    ) -> SessionContext:
        return self.begin(cookie_headers)

    async def load(self, context: SessionContext) -> Session:
        return await context.session.load()

    def finish_sync(
        self, context: SessionContext, status_code: int, headers: Headers
    ) -> Headers | None:
        context.finished = True
        return self.respond(context.session, status_code, headers)

    async def finish(self, context: SessionContext, status_code: int, headers: Headers) -> Headers:
        out = self.finish_sync(context, status_code, headers)
        assert out is not None
        return out


_UNOPENED: tuple[()] = ()
"""What the client-side session holds when its cookie did not open to a live session."""
_UNCHANGED = SessionStatus.UNCHANGED
_PURGED = SessionStatus.PURGED
_RENEWED = SessionStatus.RENEWED
_UNREAD: Mapping[str, Any] = {}
"""What ``dump`` gets as the state when it is given the state's JSON: it does not read it."""


def make_engine(store: object, **options: Any) -> SessionEngine:
    """The engine for ``store``: client-side for the cookie store, server-side for the others.

    ``options`` are ``SessionEngine``'s; a record store gets a ``Repository`` on ``options``'
    clock. Raises ``TypeError`` naming what was passed when it is not a store.
    """
    if isinstance(store, CookieSessionStore):
        return ClientSideEngine(store=store, **options)
    on_event = options.get("on_event")
    if isinstance(store, Repository):
        if on_event is not None and store.on_event is None:
            store.observe(on_event)
        return ServerSideEngine(repository=store, **options)
    if isinstance(store, RecordStore) and not isinstance(store, type):
        clock = options.get("clock", time.time)
        repository = Repository(store, clock=clock, on_event=on_event)
        return ServerSideEngine(repository=repository, **options)
    raise TypeError(_not_a_store(store))


def _not_a_store(store: object) -> str:
    """What ``store=`` was given, and what to give instead."""
    if isinstance(store, type):
        got = f"the class {store.__name__} itself; pass an instance"
    elif isinstance(store, str):
        got = "a str; build a store from the URL, e.g. RedisSessionStore.from_url(url)"
    else:
        got = f"a {type(store).__module__}.{type(store).__qualname__}"
    return (
        "store= must be a session store, e.g. RedisSessionStore.from_url('redis://...'),"
        " SQLiteSessionStore('sessions.db'), PostgresSessionStore.from_dsn(...),"
        f" MemorySessionStore() or CookieSessionStore(); got {got}"
    )


def _candidates(cookie_headers: Iterable[bytes], prefix: bytes) -> list[bytes]:
    """The Cookie header values that may hold the session cookie (they name it)."""
    if type(cookie_headers) is list and len(cookie_headers) == 1:  # the common case
        return cookie_headers if prefix in cookie_headers[0] else []
    return [value for value in cookie_headers if prefix in value]


def _persist_error(exc: Exception) -> PersistError:
    """The ``PersistError`` a failure while persisting maps to, its message safe to log."""
    if isinstance(exc, SessionError):  # a value changed in place into something not JSON
        return PersistError(f"session not stored: {exc}", status_code=500)
    if isinstance(exc, SaveError) and exc.serialization:
        return PersistError(f"session not stored: {exc}", status_code=500)
    if isinstance(exc, StoreError):
        return PersistError(f"session store failed: {exc}")
    return PersistError(f"session store failed: {type(exc).__name__} #{fingerprint(str(exc))}")


def _safe(exc: BaseException) -> str:
    """A store failure for a log line: our own errors say it safely; others only by type."""
    if isinstance(exc, SessionwareError):
        return str(exc)
    return f"{type(exc).__name__} #{fingerprint(str(exc))}"


def _add_headers(headers: Headers, cookie: str | None) -> Headers:
    """``headers`` with ``Vary: Cookie`` merged in and, with a cookie, Set-Cookie and caching
    (``Cache-Control: private`` unless the app set its own)."""
    out = _with_vary(headers)
    if cookie is not None:
        out.append((b"set-cookie", cookie.encode("latin-1")))
        for name, _ in headers:
            if len(name) == 13 and name.lower() == b"cache-control":
                break
        else:
            out.append(_PRIVATE)
    return out


def _with_vary(headers: Headers) -> Headers:
    """A copy of the app's headers with ``Cookie`` added to its Vary, or ``Vary: Cookie``
    appended when it set none (the common case: only a header of Vary's length is lowered)."""
    for name, _ in headers:
        if len(name) == 4 and name.lower() == b"vary":
            return _merge_vary(list(headers))
    out = headers.copy() if type(headers) is list else list(headers)
    out.append(_VARY)
    return out


_VARY = (b"vary", b"Cookie")
_PRIVATE = (b"cache-control", b"private")


def _merge_vary(headers: Headers) -> Headers:
    """``headers`` with ``Cookie`` added to the first Vary header, unless it names it or ``*``."""
    out: Headers = []
    vary_done = False
    for name, value in headers:
        if not vary_done and name.lower() == b"vary":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"cookie" not in tokens and b"*" not in tokens:
                value += b", Cookie"
            vary_done = True
        out.append((name, value))
    return out
