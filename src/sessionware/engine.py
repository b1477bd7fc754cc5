"""The core: which cookie opens, what to ask the backend, which headers to send (SPEC §2).

It knows nothing of ASGI. An adapter, per request::

    tracker = engine.begin(cookie_headers, user_agent, lazy)  # notes the cookies; no work yet
    await engine.load(tracker)          # server-side and not lazy: the state, before the app
    ...                                 # the app runs, with tracker.session
    headers = engine.respond(tracker, status, headers)     # the response starts: decided once;
    if headers is None:                                    # None when that needs the store
        headers = await engine.persist(tracker, status, headers)
    outcome = tracker.late_outcome()    # before each later message (streamed body, WebSocket):
    if outcome: await engine.persist_late(tracker, outcome)  # changes made since the head
    tracker.release()                   # the request is over

Two engines, chosen once at construction: ``ServerSideEngine`` (the cookie seals a key; the
session lives in a ``RecordStore`` behind the ``Repository``, which holds every rule about
merging, renewal and revocation) and ``ClientSideEngine`` (the cookie seals the state itself;
no I/O, and nothing can be stored after the head).

The request's cookie: the first of at most four same-name cookies that opens under the key ring
(and, server-side, holds a key of the generated shape) is used; anything else is an empty
session with a WARNING naming only a salted hash. A cookie sealed by an older key of the ring is
sent back sealed by the current one. Idle and absolute expiry are decided here, with the
engine's clock, from the envelope's own times (a store's TTL only collects garbage).

The response, server-side, is one table from the session's status to a repository call
(``_WRITES``), the same before the head and after it (``persist_late``); what the call
reports decides the response (``_respond_to``)::

    status     repository call                          reports     before the head   after it
    unchanged  refresh, when an extension is due        KEPT        cookie if Max-Age  -
    changed    create (a new session, unless empty),    WRITTEN     the key's cookie   -
               else save (merge)                        ENDED       removal cookie     the session ends
                                                        CONFLICT    409, nothing kept  dropped, it ends
    purged     purge (a renewal's successor too)        ENDED       removal cookie     the session ends
    renewed    renew                                    WRITTEN     the new key        (refused)

With ``rotate_every``, a session whose key is older than that is rotated on its next use before
the head (``_ROTATIONS``: unchanged and changed go to ``rotate``, a renew with a rotation's
tombstone; it reports WRITTEN, the new key's cookie). A request whose key a rotation replaced
within its grace works on the successor and sends the successor's key (a rotation it lost, too).

``CONFLICT``: a login renewed the session after this request loaded it (or the request came
with the key a login had renewed): its writes are never carried into the logged-in session.
Responses of 500 and above, and requests whose changes were discarded (CSRF), store nothing.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sessionware.codec import TaggedJSON, may_hold_tags
from sessionware.config import BrowserSession, CookieSettings, PersistentSession
from sessionware.config import TtlExtensionPolicy as Policy
from sessionware.cookies import (
    MAX_SET_COOKIE_BYTES,
    _percent_encode,
    cookie_suffix,
    find_cookies,
    removal_cookie,
    session_cookie,
    single_cookie,
)
from sessionware.crypto import ContentSecurity, Key, Sealer
from sessionware.errors import (
    DeserializationError,
    NotSupportedError,
    PersistError,
    SessionConflictError,
    SessionError,
    SessionwareError,
    StoreError,
)
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
    SessionRotated,
    SessionSuperseded,
    emit,
)
from sessionware.repository import ENDED, RENEWED, Followed, Loaded, Repository
from sessionware.session import EndedReason, Event, Outcome, Phase, SessionStatus, Tracker
from sessionware.state import StoredState, stored_state
from sessionware.stores.base import RecordStore, SessionKey, is_generated_key
from sessionware.stores.cookie import CLOCK_SKEW, CookieSessionStore
from sessionware.transport import COOKIE, HeaderTransport, Transport

if TYPE_CHECKING:
    from sessionware.dbsc import DeviceBinder
    from sessionware.session import Session

__all__ = [
    "ClientSideEngine",
    "PersistError",
    "ServerSideEngine",
    "SessionEngine",
    "Stored",
    "failure",
    "fingerprint",
    "make_engine",
    "transported",
]

logger = logging.getLogger("sessionware")

Headers = list[tuple[bytes, bytes]]
_SALT = secrets.token_bytes(16)
ROTATE = "rotate"
"""``Tracker.reissue`` for a session whose key is due for rotation: it goes back as a new key."""


def fingerprint(secret: str) -> str:
    """A salted hash of a cookie value or key, safe to log (the salt is new in every process)."""
    return hashlib.blake2b(secret.encode("utf-8", "replace"), key=_SALT, digest_size=8).hexdigest()


_SEALED = (
    "the session's cookie went out with the response: nothing written to it now can be stored"
    " (write to the session before the response starts)"
)
_NO_NEW_KEY = (
    "the session cannot get a new key once the response has started: its cookie has gone out"
    " (renew, or save a new session, before the response starts)"
)
_NOT_STORED = (
    "this response stores nothing (a 5xx, or a request refused by the CSRF check): nothing"
    " written to its session now can be stored"
)
_RENEWED_AWAY = (
    "the session was renewed by a login after this request loaded it: this request's changes"
    " are not carried into the renewed session"
)
_ENDED_LATE = "the session ended while the response was streaming: nothing more can be stored"


class Stored(enum.Enum):
    """What a repository call reports, for the response to act on (the module's table)."""

    NOTHING = "nothing"
    KEPT = "kept"
    WRITTEN = "written"
    ENDED = "ended"
    CONFLICT = "conflict"


class SessionEngine:
    """What both paths share: the cookie, the key ring, the lifecycle, the response headers."""

    server_side: bool
    """Whether the session lives in a record store (an instance attribute: it is read on every
    request, and CPython specializes reads of those, not of class attributes)."""
    _base64_seal: bool
    """Whether every sealed value is in base64's alphabet (``_cookie_line``)."""
    backend: Repository | CookieSessionStore
    transport: Transport = COOKIE
    """How this engine's requests carry their token (``Session.transport``; ``transported``)."""
    vary: bytes = b"Cookie"
    """The Vary value of a response the session shapes: the header(s) the token may come in."""
    carrier: bytes = b"set-cookie"
    codec: TaggedJSON | None = None
    """What turns session values JSON cannot hold into JSON and back (``codec=``); ``None``:
    plain JSON, nothing done."""
    """The response header a new token goes out in."""

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
        codec: TaggedJSON | None = None,
        rotate_every: timedelta | None = None,
        rotation_grace: timedelta = timedelta(seconds=30),
    ) -> None:
        if rotate_every is not None and not rotate_every > timedelta(0):
            raise ValueError(
                f"rotate_every must be a timedelta above zero (e.g. timedelta(minutes=15)),"
                f" not {rotate_every!r}"
            )
        if not rotation_grace >= timedelta(0):
            raise ValueError(
                f"rotation_grace must be a timedelta of zero or more, not {rotation_grace!r}"
            )
        if not keys:
            raise ValueError("at least one Key is needed to seal session cookies")
        if not isinstance(lifecycle, (BrowserSession, PersistentSession)):
            raise TypeError("lifecycle must be a BrowserSession or a PersistentSession")
        if not isinstance(security, ContentSecurity):
            raise TypeError("content_security must be a ContentSecurity member")
        if codec is not None and not isinstance(codec, TaggedJSON):
            raise TypeError(f"codec must be sessionware.TaggedJSON(), not {type(codec).__name__}")
        self.codec = codec
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
        self.rotate_every, self.rotation_grace = rotate_every, rotation_grace
        self._rotate_seconds = None if rotate_every is None else rotate_every.total_seconds()
        """With ``rotate_every``: a key older than this many seconds is rotated at its next use."""
        self.ttl = lifecycle.ttl
        self._ttl_seconds = lifecycle.ttl.total_seconds()
        self._extend = lifecycle.policy is Policy.ON_EVERY_REQUEST
        """Whether an unchanged session's life is extended (on every request, or debounced)."""
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
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None, lazy: bool = False
    ) -> Tracker:
        """The request's tracker, with its (still unread) session: no work yet. ``lazy``: the
        state waits for ``await session.load()``. ``user_agent`` (the User-Agent header) is
        kept, shortened, for sessions bound to a user."""
        every = None
        if self.device is not None:
            cookie_headers = every = list(cookie_headers)
        cookies = _candidates(cookie_headers, self._prefix)
        tracker = Tracker(self, cookies, user_agent, lazy or bool(cookies))
        tracker.lazy = lazy
        if every is not None:
            assert self.device is not None
            self.device.begin(tracker, every)
        return tracker

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

    def _opened(self, tracker: Tracker, opened: tuple[str, int, str]) -> None:
        """Note how the cookie opened: by an older key (sent back sealed anew), or as it came."""
        tracker.reissue = opened[1] > 0
        if not tracker.reissue:
            tracker.resendable = opened[0], opened[2]

    def _acceptable(self, plain: str) -> bool:
        """Whether an opened cookie's plaintext can name a session (server-side: a key's
        shape); ``open`` asks only server-side."""
        return True

    def _emit(self, event: SessionEvent) -> None:
        """Hand ``event`` to ``on_event`` (callers check it is set before building the event)."""
        if self.on_event is not None:
            emit(self.on_event, event)

    def public_id(self, id: str) -> str:
        """``session.id`` of the session whose record is filed under ``id``."""
        return id

    def _lapsed(self, created: float | None, expires: float | None) -> str | None:
        """Whether a session with these envelope times has timed out now: ``"idle"`` (its
        ``expires`` passed), ``"absolute"`` (``max_age`` since ``created``), or ``None``."""
        now = self.clock()
        if expires is not None and expires <= now:
            return "idle"
        max_age = self._max_age
        if max_age is not None and created is not None and now - created >= max_age:
            return "absolute"
        return None

    def _expired(self, why: str, tracker: Tracker) -> None:
        """Log and report a session that timed out (``_lapsed``), and note why it ended."""
        tracker.ended = _ENDED_BY[why]
        logger.info("session passed its %s timeout", why)
        if self.on_event is not None:
            self._emit(SessionExpired(why))  # type: ignore[arg-type]

    def ends_at(self, tracker: Tracker) -> float | None:
        """When the session the tracker loaded ends unless it is used: its idle expiry, or its
        absolute timeout (``max_age``) when that comes first (``Session.expires_at``)."""
        expires, created, max_age = tracker.expires, tracker.created, self._max_age
        if expires is not None and created is not None and max_age is not None:
            return min(expires, created + max_age)
        return expires

    def _due(self, tracker: Tracker) -> bool:
        """Whether an unchanged session's life is extended now: under ON_EVERY_REQUEST, unless
        ``touch_after`` is set and the last extension (``expires`` - TTL) is more recent."""
        if not self._extend or not tracker.cookies:
            return False
        window = self._touch_window
        expires = tracker.expires
        if window is not None and tracker.lifetime:  # its own TTL: its own window
            window = self._window(tracker.lifetime)
        return window is None or expires is None or expires - self.clock() <= window

    def _window(self, lifetime: float) -> float:
        """``_touch_window`` for a session that lives ``lifetime`` seconds (``set_expiry``):
        extended once ``touch_after`` passed, or on every request when it lives no longer."""
        touch_after = self.lifecycle.touch_after
        assert touch_after is not None
        after = touch_after.total_seconds()
        return lifetime - after if after < lifetime else lifetime

    def _max_age_of(self, lifetime: float | None) -> int | None:
        """The cookie's Max-Age for a session with this lifetime (``set_expiry``; ``None``:
        the middleware's)."""
        if lifetime is None:
            return self.cookie_max_age
        return int(lifetime) or None

    def _suffix(self, lifetime: float | None) -> str | None:
        """The Set-Cookie attributes for a session with this lifetime; ``None`` for the
        middleware's (``_cookie_suffix``)."""
        if lifetime is None:
            return None
        return cookie_suffix(self.cookie, self._max_age_of(lifetime))

    async def load(self, tracker: Tracker) -> Session:
        """Read the cookie's session into the tracker's session, if not done yet; raise
        ``PersistError`` when the store fails."""
        session = tracker.session
        if tracker.unread:
            await self.load_into(tracker, session)
        return session

    async def load_into(self, tracker: Tracker, session: Session) -> None:
        """Read the session the request's cookie names into ``session`` (its first use)."""
        raise NotImplementedError

    def open_into(self, tracker: Tracker, session: Session) -> None:
        """``load_into`` without I/O, where the engine needs none (the cookie store)."""
        raise NotImplementedError

    # -- response phase ----------------------------------------------------------------------

    def respond(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers | None:
        """The response starts: its headers with the session's own (Vary, and a Set-Cookie
        when the session's status or the lifecycle asks for one); ``headers`` itself when there
        is nothing to add. ``None`` when that needs the store: ``persist`` does it.

        Raises ``PersistError`` (the adapter answers its status, opaquely)."""
        raise NotImplementedError

    async def persist(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers:
        """``respond`` for a response that needs the store."""
        raise NotImplementedError

    async def persist_late(self, tracker: Tracker, outcome: Outcome) -> None:
        """Store changes made after the response head (``tracker.late_outcome()``)."""
        raise NotImplementedError

    async def seed(self, state: Mapping[str, Any]) -> str:
        """Store ``state`` as a new session; the Set-Cookie value that carries it (for tests)."""
        raise NotImplementedError

    def _outcome(self, tracker: Tracker, status_code: int) -> Outcome:
        try:
            return tracker.outcome(status_code)
        except SessionError as exc:
            raise failure(exc) from exc

    def _headers(
        self, tracker: Tracker, used: bool, cookie: str | None, headers: Headers
    ) -> Headers:
        """``headers`` with what the session adds: ``Vary: Cookie`` when it was used or the
        request carried its cookie, and ``cookie`` with ``Cache-Control: private``."""
        if cookie is None and not (used or tracker.cookies):
            return headers
        out = _add_headers(headers, cookie)
        if tracker.device is not None:
            assert self.device is not None
            self.device.offer(tracker, out)
        return out

    def _removal(self) -> str:
        return removal_cookie(self.cookie, self.clock())

    def _cookie(
        self,
        value: str,
        resendable: tuple[str, str] | None = None,
        suffix: str | None = None,
    ) -> str:
        """The Set-Cookie line carrying ``value`` sealed (percent-encoded as ``session_cookie``
        does); ``PersistError`` when browsers would drop it for its size. ``resendable``: the
        request's own cookie as ``(plaintext, sealed value)`` with the current key; when it
        holds ``value``, it is sent back as it came (the same ciphertext: no new seal).
        ``suffix``: the attributes of a session with its own lifetime (``_suffix``)."""
        sealed = (
            resendable[1]
            if resendable is not None and resendable[0] == value
            else self.sealer.seal(value)
        )
        line = _cookie_line(self, sealed, suffix)
        size = len(line) if line.isascii() else len(line.encode("utf-8"))
        if size > MAX_SET_COOKIE_BYTES:
            raise PersistError(
                f"the session cookie would be {size} bytes, over the {MAX_SET_COOKIE_BYTES}-byte"
                " limit browsers keep; store less in the session or use a server-side store",
                status_code=500,
            )
        return line


def _cookie_line(engine: SessionEngine, sealed: str, suffix: str | None = None) -> str:
    """The Set-Cookie line for a sealed value. A seal in the base64 alphabets (PRIVATE,
    SIGNED; SIGNED_ACTIX's key, server-side) needs only ``/`` and ``=`` escaped, in two C-level
    replaces;
    anything else goes through ``session_cookie``'s percent-encoding (test_engine's
    test_cookie_lines_match_the_general_encoder holds the two equal). ``suffix``: the
    attributes, when not the engine's own."""
    if suffix is None:
        suffix = engine._cookie_suffix
    if engine._base64_seal:
        escaped = sealed.replace("/", "%2F").replace("=", "%3D")
        return f"{engine._cookie_head}{escaped}{suffix}"
    return session_cookie(engine.cookie, sealed, engine.cookie_max_age, suffix=suffix)


class ServerSideEngine(SessionEngine):
    """The cookie carries a key; the state lives in a record store, through the repository."""

    def __init__(self, *, repository: Repository, **options: Any) -> None:
        super().__init__(**options)
        self.server_side = True
        self._base64_seal = True  # a key of [A-Za-z0-9], sealed or signed: base64's alphabet
        self.repository = self.backend = repository
        if self.rotate_every is not None:
            repository.rotation_grace = self.rotation_grace.total_seconds()
        self._follows = bool(repository.rotation_grace) or self.rotate_every is not None
        """Whether loads may follow a rotation's successor, or rotate (``_rotation``)."""

    def public_id(self, id: str) -> str:
        return self.repository.public_id(id)

    async def seed(self, state: Mapping[str, Any]) -> str:
        """Store ``state`` as a new session; the Set-Cookie value that carries it (for tests)."""
        meta = StoredState(created=self.clock())
        try:
            key, _ = await self.repository.create(state, meta, self.ttl)
        except Exception as exc:
            raise failure(exc) from exc
        return self._cookie(key)

    def _acceptable(self, plain: str) -> bool:
        if is_generated_key(plain):
            return True
        logger.warning("session key %s has the wrong shape; ignored", fingerprint(plain))
        if self.on_event is not None:
            self._emit(DecodeFailed("cookie"))
        return False

    async def load_into(self, tracker: Tracker, session: Session) -> None:
        """Load the session the request's cookie names into ``session``; raise
        ``PersistError`` when the store fails."""
        opened = self.open(tracker.cookies)
        loaded = None if opened is None else await self._load(tracker, opened[0])
        values: Any = loaded
        if loaded is not None and self.codec is not None and may_hold_tags(loaded.text):
            values = self._decoded(loaded, opened)
        if values is None:
            tracker.fill(session, {})
            if tracker.phase is Phase.LATE:  # after the head: no cookie can follow a new one
                tracker.handle(Event.SEALED, _NO_NEW_KEY)
            return
        assert opened is not None and loaded is not None
        if self.on_event is not None:
            self._emit(SessionLoaded())
        state = loaded.state
        tracker.key, tracker.record = opened[0], loaded
        tracker.created, tracker.expires = state.created, state.expires
        tracker.lifetime = state.lifetime
        self._opened(tracker, opened)
        if self._follows:
            self._rotation(tracker, loaded)
        tracker.fill(
            session,
            state if values is loaded else values,
            user=state.user,
            origin=loaded.text,
            key=tracker.key,
            id=loaded.id,
        )

    def _decoded(self, loaded: Loaded, opened: Any) -> Mapping[str, Any] | None:
        """The loaded state's values as the codec reads them; ``None``, logged as unreadable
        state, when it cannot (an unknown tag)."""
        assert self.codec is not None
        try:
            return self.codec.decode_state(loaded.state)
        except DeserializationError:
            logger.warning(
                "session %s holds unreadable state; starting anew", fingerprint(opened[0])
            )
            if self.on_event is not None:
                self._emit(DecodeFailed("state"))
            return None

    def _rotation(self, tracker: Tracker, loaded: Loaded) -> None:
        """A key a rotation replaced within its grace: the session is the successor, whose key
        goes back to the client. A key older than ``rotate_every``: rotate it (``_ROTATIONS``)."""
        if isinstance(loaded, Followed):
            tracker.key, tracker.reissue, tracker.resendable = loaded.key, True, None
            return
        every = self._rotate_seconds
        issued = loaded.state.issued or loaded.state.created
        if every is not None and (issued is None or self.clock() - issued >= every):
            tracker.reissue = ROTATE

    def open_into(self, tracker: Tracker, session: Session) -> None:
        """A server-side session is read by ``load_into`` (it needs I/O), never opened."""
        raise SessionError("this session must be loaded first: `await session.load()`")

    async def _load(self, tracker: Tracker, key: str) -> Loaded | None:
        """The live, unexpired record ``key`` names, that this request may use; else ``None``
        (noting on the tracker whether it ended or was renewed away)."""
        try:
            loaded = await self.repository.load(SessionKey(key), self.ttl)
        except DeserializationError:
            logger.warning("session %s holds unreadable state; starting anew", fingerprint(key))
            if self.on_event is not None:
                self._emit(DecodeFailed("state"))
            return None
        except Exception as exc:
            raise failure(exc, "load") from exc
        if loaded is None:  # the store dropped it at its TTL (or an ended one's tombstone went)
            self._expired("idle", tracker)
            return None
        if loaded is ENDED:
            tracker.ended = "signed_out"
            return None
        if loaded is RENEWED:
            tracker.renewed = self.repository.id_of(key)
            return None
        why = self._lapsed(loaded.state.created, loaded.state.expires)
        if why is not None:
            self._expired(why, tracker)
            return None
        if self.device is not None and not self.device.admit(tracker, loaded, self.clock()):
            logger.info("session %s is device-bound; no valid credential came", fingerprint(key))
            return None
        return loaded

    # -- response phase ----------------------------------------------------------------------

    def respond(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers | None:
        outcome = self._outcome(tracker, status_code)
        status, persist, used, _, _ = outcome
        if persist and (status is not _UNCHANGED or tracker.reissue or self._due(tracker)):
            if tracker.reissue is True and status is _UNCHANGED and not self._due(tracker):
                key, suffix = tracker.key, self._suffix(tracker.lifetime)
                cookie = None if key is None else self._cookie(key, None, suffix)
                self._close(tracker, persist)
                return self._headers(tracker, used, cookie, headers)
            tracker.decided = outcome
            return None
        self._close(tracker, persist)
        return self._headers(tracker, used, None, headers)

    async def persist(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers:
        outcome = tracker.decided
        assert outcome is not None, "persist() follows a respond() that returned None"
        try:
            if tracker.unread:  # an extension is due, and the lazy session was never loaded
                await self.load_into(tracker, tracker.session)
            writes = _ROTATIONS if tracker.reissue is ROTATE else _WRITES
            stored = await writes[outcome[0]](self, tracker, outcome)
            cookie = self._respond_to(tracker, stored)
        except Exception as exc:
            raise failure(exc, "store") from exc
        self._close(tracker, True)
        return self._headers(tracker, outcome[2], cookie, headers)

    def _close(self, tracker: Tracker, persist: bool) -> None:
        """The head goes out: later changes stay storable for a stored session the client
        holds (or may hold: a lazy session not read yet), in a request that persists."""
        if not persist:
            tracker.handle(Event.SEALED, _NOT_STORED)
        elif (tracker.record is not None or (tracker.unread and tracker.cookies)) and (
            tracker.renewed is None
        ):
            tracker.handle(Event.RESPONDED, _NO_NEW_KEY)
        else:
            tracker.handle(Event.SEALED, _NO_NEW_KEY)

    def _respond_to(self, tracker: Tracker, stored: Stored) -> str | None:
        """The Set-Cookie for what a write before the head reported (the module's table)."""
        if stored is _WRITTEN:
            assert tracker.key is not None
            lifetime = tracker.lifetime  # _suffix's test, inline: every write passes here
            suffix = None if lifetime is None else self._suffix(lifetime)
            return self._cookie(tracker.key, tracker.resendable, suffix)
        if stored is _KEPT:
            key, lifetime = tracker.key, tracker.lifetime
            if key is not None and (tracker.reissue or self._max_age_of(lifetime) is not None):
                return self._cookie(key, tracker.resendable, self._suffix(lifetime))
            return None
        if stored is _ENDED:
            return self._removal()
        if stored is _CONFLICT:
            raise PersistError(_RENEWED_AWAY, status_code=409)
        return None

    async def persist_late(self, tracker: Tracker, outcome: Outcome) -> None:
        """Store what changed since the head; an ended or renewed session ends here too
        (WARNING and event), and later writes to it raise. Failures are logged: the response
        can no longer change."""
        try:
            stored = await _WRITES[outcome[0]](self, tracker, outcome)
        except Exception as exc:
            logger.error(
                "session changes made after the response started were lost: %s",
                failure(exc, "store"),
            )
            return
        if stored is _CONFLICT:
            logger.warning("session changes dropped: %s", _RENEWED_AWAY)
            tracker.handle(Event.ENDED, _RENEWED_AWAY, SessionConflictError)
        elif stored is _ENDED:
            if outcome[0] is not _PURGED:
                logger.warning("session ended while the response streamed; changes dropped")
            tracker.handle(Event.ENDED, _ENDED_LATE)

    # The repository call for each status (``_WRITES``), before the head and after it alike.

    async def _keep(self, tracker: Tracker, outcome: Outcome) -> Stored:
        """Unchanged: extend the session's life when that is due (a rewrite carrying the new
        ``expires``: the envelope says when it expires)."""
        record = tracker.record
        if record is None or not self._due(tracker):
            return _KEPT
        refreshed = await self.repository.refresh(record, self.ttl)
        if refreshed is RENEWED:  # a login moved it: its response sends the new key
            return _NOTHING
        if refreshed is None:
            return self._revoked(tracker, "touch")
        tracker.record, tracker.expires = refreshed, refreshed.state.expires
        return _KEPT

    async def _save(self, tracker: Tracker, outcome: Outcome) -> Stored:
        """Changed: merge into the stored session, or store a new one."""
        if tracker.renewed is not None:
            return self._superseded(tracker)
        record, meta = tracker.record, self._meta(tracker)
        _, _, _, changes, state_json = outcome
        if record is None:
            return await self._create(tracker, meta, state_json)
        saved = await self.repository.save(record, changes, meta, self.ttl, state_json)
        if saved is RENEWED:
            return self._superseded(tracker)
        if saved is None:
            return self._revoked(tracker, "late_save" if tracker.phase is Phase.LATE else "save")
        tracker.record = saved
        if saved.id is not record.id:  # merged into a rotation's successor: no old key goes out
            tracker.key = None
            tracker.rebase(None, saved.id, None)
            tracker.lifetime = saved.state.lifetime
            return _NOTHING
        tracker.rebase(tracker.key, saved.id, state_json)
        tracker.lifetime = saved.state.lifetime
        return _WRITTEN

    async def _purge(self, tracker: Tracker, outcome: Outcome) -> Stored:
        """Purged: tombstone the record (and a renewal's successor: a logout racing a login
        still logs out)."""
        record, gone = tracker.record, tracker.renewed
        if record is None and gone is None:
            return _NOTHING
        if record is not None:
            await self.repository.purge(record)
        else:
            assert gone is not None
            await self.repository.end(gone)
        logger.info("session %s purged", fingerprint(record.id if record else str(gone)))
        if self.on_event is not None:
            self._emit(SessionPurged())
        tracker.key = tracker.record = None
        return _ENDED

    async def _renew(self, tracker: Tracker, outcome: Outcome) -> Stored:
        """Renewed: the state moves to a new key (a new session when there was none; nothing
        for a key a login renewed: its cookie would replace that login's)."""
        if tracker.renewed is not None:
            return self._superseded(tracker)
        record, meta = tracker.record, self._meta(tracker)
        _, _, _, changes, state_json = outcome
        if record is None:
            return await self._create(tracker, meta, state_json)
        renewed = await self.repository.renew(record, changes, meta, self.ttl)
        if renewed is RENEWED:
            logger.info("session %s was renewed by another request", fingerprint(record.id))
            return self._superseded(tracker)
        if renewed is None:
            return self._revoked(tracker, "renew")
        key, stored = renewed
        logger.info("session %s renewed as %s", fingerprint(record.id), fingerprint(stored.id))
        if self.on_event is not None:
            self._emit(SessionRenewed())
        return _moved(tracker, key, stored, state_json)

    async def _rotate(self, tracker: Tracker, outcome: Outcome) -> Stored:
        """The key is older than ``rotate_every``: the state, and this request's changes, move
        to a new key as in a renewal, but its tombstone lets the old key follow for the grace.
        Another request's rotation that won: this one continues on its successor."""
        record, key = tracker.record, tracker.key
        assert record is not None and key is not None
        status, _, _, changes, state_json = outcome
        meta = self._meta(tracker)
        rotated = await self.repository.renew(record, changes, meta, self.ttl, rotating=key)
        if rotated is None:
            return self._revoked(tracker, "rotate")
        tracker.reissue = False
        if rotated is not RENEWED:
            new_key, stored = rotated
            logger.info("session %s rotated to %s", fingerprint(record.id), fingerprint(stored.id))
            if self.on_event is not None:
                self._emit(SessionRotated())
            return _moved(tracker, new_key, stored, state_json)
        followed = await self.repository.load(SessionKey(key), self.ttl)
        if not isinstance(followed, Followed):  # a login renewed it: as any pre-login request
            return self._superseded(tracker) if status is _CHANGED else _NOTHING
        tracker.key, tracker.record, tracker.reissue = followed.key, followed, True
        tracker.resendable, tracker.lifetime = None, followed.state.lifetime
        return await _WRITES[status](self, tracker, outcome._replace(state_json=None))  # type: ignore[no-any-return]

    async def _create(self, tracker: Tracker, meta: StoredState, state_json: str | None) -> Stored:
        """A new session, unless there is nothing to keep (no state, user or binding)."""
        state = tracker.state()
        if not (state or meta.user or meta.device):
            return _NOTHING
        meta.lifetime = tracker.lifetime
        key, stored = await self.repository.create(state, meta, self.ttl)
        if self.on_event is not None:
            self._emit(SessionCreated())
        tracker.key, tracker.record, tracker.resendable = key, stored, None
        tracker.rebase(key, stored.id, state_json)
        tracker.lifetime = stored.state.lifetime
        return _WRITTEN

    def _revoked(self, tracker: Tracker, operation: str) -> Stored:
        """The session ended under this request (purged, signed out, expired elsewhere)."""
        logger.warning(
            "session %s was ended by another request; this request's changes are dropped",
            fingerprint(tracker.record.id if tracker.record else ""),
        )
        if self.on_event is not None:
            self._emit(SessionRevoked(operation))
        tracker.key = tracker.record = None
        return _ENDED

    def _superseded(self, tracker: Tracker) -> Stored:
        """A login renewed the session after this request loaded it: nothing is stored."""
        if self.on_event is not None:
            self._emit(SessionSuperseded("late_save" if tracker.phase is Phase.LATE else "save"))
        return _CONFLICT

    def _meta(self, tracker: Tracker) -> StoredState:
        """The metadata a write stores beside the state: creation, the bound user, its agent,
        a new device binding if one was asked for (``None``: the record's stays), and the
        indexes ``Session.index`` changed (merged into the record's)."""
        agent = tracker.agent
        return stored_state(
            {},
            tracker.created or self.clock(),
            tracker.user,
            agent[:120].decode("latin-1") if agent else None,
            None if self.device is None else self.device.binding(tracker, self.clock()),
            None,
            None,
            None,
            None,
            tracker.indexes,
        )

    # -- the DBSC endpoints (sessionware.dbsc.serve) -----------------------------------------

    async def binding_record(self, cookie_headers: list[bytes]) -> Loaded | None:
        """The live record the session cookie names, without the device check. Raises
        ``PersistError`` when the store fails."""
        opened = self.open(_candidates(cookie_headers, self._prefix))
        if opened is None:
            return None
        try:
            loaded = await self.repository.load(SessionKey(opened[0]), self.ttl)
        except DeserializationError:
            return None
        except Exception as exc:
            raise failure(exc, "load") from exc
        if not isinstance(loaded, Loaded):
            return None  # absent, ended or renewed
        if self._lapsed(loaded.state.created, loaded.state.expires) is not None:
            return None
        return loaded

    async def store_binding(self, loaded: Loaded, device: dict[str, Any]) -> bool:
        """Store ``device`` as the record's binding, its state as it is, only if nothing wrote
        the record since ``loaded`` was read (one compare-and-set)."""
        state = loaded.state
        meta = StoredState(
            created=state.created,
            user=state.user,
            agent=state.agent,
            device=device,
            applied=state.applied,
            lifetime=state.lifetime,
            indexes=state.indexes,
            issued=state.issued,
        )
        try:
            stored = await self.repository.replace(loaded, state, meta, self.ttl)
        except Exception as exc:
            raise failure(exc, "store") from exc
        return stored is not None


_WRITES: dict[SessionStatus, Callable[[ServerSideEngine, Tracker, Outcome], Any]] = {
    SessionStatus.UNCHANGED: ServerSideEngine._keep,
    SessionStatus.CHANGED: ServerSideEngine._save,
    SessionStatus.PURGED: ServerSideEngine._purge,
    SessionStatus.RENEWED: ServerSideEngine._renew,
}
"""The repository call for each status: the module docstring's table."""

_ROTATIONS = _WRITES | {
    SessionStatus.UNCHANGED: ServerSideEngine._rotate,
    SessionStatus.CHANGED: ServerSideEngine._rotate,
}
"""The repository call for each status of a session whose key is due for rotation."""


class ClientSideEngine(SessionEngine):
    """The cookie carries the state itself, sealed; nothing is stored on the server."""

    def __init__(self, *, store: CookieSessionStore, **options: Any) -> None:
        if options.get("rotate_every") is not None:
            raise NotSupportedError(
                "rotate_every needs a server-side store: the cookie store keeps no record, so a"
                " rotated cookie could not stop opening; to change what seals cookies, rotate"
                " the key ring (keys=[new, old])"
            )
        if options.get("device") is not None:
            raise NotSupportedError(
                "device binding keeps the device's key in the session record: use a server-side"
                " store (memory, Redis, SQLite, PostgreSQL), not the cookie store"
            )
        super().__init__(**options)
        self.server_side = False
        self._base64_seal = self.security is not ContentSecurity.SIGNED_ACTIX
        self.store = self.backend = store

    async def seed(self, state: Mapping[str, Any]) -> str:
        """The Set-Cookie value that carries ``state`` as a new session (for tests)."""
        now = self.clock()
        return self._cookie(self.store.dump(state, self.ttl, created=now, now=now))

    def open_into(self, tracker: Tracker, session: Session) -> None:
        """Open the request's cookie into ``session`` (its first use): no I/O."""
        opened = self.open(tracker.cookies)
        fields = None if opened is None else self._read_state(opened[0], tracker)
        if fields is None:
            tracker.fill(session, {})
            return
        assert opened is not None
        if self.on_event is not None:
            self._emit(SessionLoaded())
        state, tracker.created, tracker.expires, user = fields
        if type(state) is StoredState:  # a lifetime makes the envelope take decode_state's way
            tracker.lifetime = state.lifetime
        tracker.record = opened[0]
        self._opened(tracker, opened)
        tracker.fill(session, state, user=user, origin=opened[0])

    async def load_into(self, tracker: Tracker, session: Session) -> None:
        """``open_into``, for callers that await (``session.load()``)."""
        self.open_into(tracker, session)

    def _read_state(self, plain: str, tracker: Tracker) -> Any:
        """The live state an opened cookie's plaintext holds; ``None``, with its log line and
        event, when it is unreadable, idle or too old."""
        try:
            fields = self.store.read(plain)
            if (
                fields is not None
                and fields[1] is not None
                and fields[1] > self.clock() + CLOCK_SKEW
            ):
                raise DeserializationError("session cookie was created in the future")
            if fields is not None and self.codec is not None and may_hold_tags(plain):
                fields = (self.codec.decode_state(fields[0]), *fields[1:])
        except DeserializationError:
            logger.warning(
                "session cookie %s holds unreadable state; starting anew", fingerprint(plain)
            )
            if self.on_event is not None:
                self._emit(DecodeFailed("state"))
            return None
        if fields is None:
            return None
        why = self._lapsed(fields[1], fields[2])
        if why is not None:
            self._expired(why, tracker)
            return None
        return fields

    def respond(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers:
        try:
            status, persist, used, _, state_json = tracker.outcome(status_code, False)
            cookie = self._seal(tracker, status, used, state_json) if persist else None
        except PersistError:
            raise
        except Exception as exc:
            raise failure(exc, "seal") from exc
        finally:
            tracker.handle(Event.SEALED, _SEALED)
        return self._headers(tracker, used, cookie, headers)

    async def persist(self, tracker: Tracker, status_code: int, headers: Headers) -> Headers:
        return self.respond(tracker, status_code, headers)  # pragma: no cover - never None

    async def persist_late(self, tracker: Tracker, outcome: Outcome) -> None:
        """Nothing is stored after the head: its phase refuses writes (``SEALED``)."""

    def _seal(
        self, tracker: Tracker, status: SessionStatus, used: bool, state_json: str | None
    ) -> str | None:
        """The Set-Cookie to send for the session's status, if any (the cookie is the store)."""
        if not used:
            if not self._due(tracker):
                return None
            if tracker.unread:  # an extension may be due: the cookie is sealed anew
                self.open_into(tracker, tracker.session)
        live = tracker.record is not None
        if status is _PURGED:
            if live and self.on_event is not None:
                self._emit(SessionPurged())
            return self._removal() if live else None
        if status is _UNCHANGED:
            if not live:
                return None
            if not self._due(tracker):
                if not tracker.reissue:
                    return None
                return self._cookie(tracker.record, None, self._suffix(tracker.lifetime))
        user, store = tracker.user, self.store
        state = tracker.state() if state_json is None or store.legacy_format else _UNREAD
        if not (live or user or (state_json != "{}" if state_json is not None else state)):
            return None
        if self.on_event is not None and (not live or status is _RENEWED):
            self._emit(SessionRenewed() if live else SessionCreated())
        now = self.clock()
        created = tracker.created or now
        lifetime = tracker.lifetime
        if lifetime is None:
            text = store.dump(
                state, self.ttl, state_json=state_json, created=created, user=user, now=now
            )
            return self._cookie(text, tracker.resendable)
        ttl = timedelta(seconds=lifetime) if lifetime else self.ttl
        text = store.dump(
            state,
            ttl,
            state_json=state_json,
            created=created,
            user=user,
            now=now,
            lifetime=lifetime,
        )
        return self._cookie(text, tracker.resendable, self._suffix(lifetime))


def _moved(tracker: Tracker, key: SessionKey, stored: Loaded, state_json: str | None) -> Stored:
    """The session now lives under ``key`` (a renewal or a rotation stored ``stored``)."""
    tracker.key, tracker.record, tracker.resendable = key, stored, None
    tracker.rebase(key, stored.id, state_json)
    tracker.lifetime = stored.state.lifetime
    return _WRITTEN


_UNCHANGED = SessionStatus.UNCHANGED
_CHANGED = SessionStatus.CHANGED
_PURGED = SessionStatus.PURGED
_NOTHING, _KEPT, _WRITTEN = Stored.NOTHING, Stored.KEPT, Stored.WRITTEN
_ENDED, _CONFLICT = Stored.ENDED, Stored.CONFLICT
_RENEWED = SessionStatus.RENEWED
_ENDED_BY: dict[str, EndedReason] = {"idle": "idle_timeout", "absolute": "absolute_timeout"}
"""``Session.ended_reason`` for each timeout ``_lapsed`` names."""
_UNREAD: Mapping[str, Any] = {}
"""What ``dump`` gets as the state when it is given the state's JSON: it does not read it."""


def make_engine(store: object, **options: Any) -> SessionEngine:
    """The engine for ``store``: client-side for the cookie store, server-side for the others.

    ``options`` are ``SessionEngine``'s; a record store gets a ``Repository`` on ``options``'
    clock and events. Raises ``TypeError`` naming what was passed when it is not a store.
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


def failure(exc: BaseException, doing: str = "store") -> PersistError:
    """The one map from a failure to the response: a ``PersistError`` whose status the
    adapter answers and whose message is safe to log (never a key, cookie value or state)."""
    if isinstance(exc, PersistError):
        return exc
    if isinstance(exc, SessionError):  # a value changed in place into something not JSON
        return PersistError(f"session not stored: {exc}", status_code=500)
    if isinstance(exc, StoreError):
        return PersistError(f"session store failed to {doing}: {exc}")
    return PersistError(f"session store failed to {doing}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """An exception for a log line: ours by their message (they never hold session data);
    another by its type and, when it looks like no session data, its message's start."""
    if isinstance(exc, SessionwareError):
        return f"{type(exc).__name__}: {exc}"
    text = str(exc)
    summary = text[:160]
    if _UNSAFE_SUMMARY.search(summary) or len(text) > 300:
        summary = f"#{fingerprint(text)}"
    return f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__


# Quotes, braces and long token-like runs may be a key, a cookie value or state: not logged.
_UNSAFE_SUMMARY = re.compile(r"""["'{}\[\]]|[A-Za-z0-9+/=_-]{24,}""")


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


# -- transports other than the cookie alone (sessionware.transport) ---------------------------
# The engines above are the cookie's, with its Set-Cookie and ``Vary: Cookie`` written inline;
# a middleware with a header transport gets one engine per transport, of the classes below,
# which change only the fixed points: what ``begin`` is given, how a token and its removal are
# written (``_cookie``, ``_removal``) and the headers they go out with (``_headers``).


class _Transported(SessionEngine):
    """An engine of a middleware whose requests may carry the token in several places: its
    responses vary by all of them (``vary``), and a new token goes out in ``carrier``."""

    def _headers(
        self, tracker: Tracker, used: bool, cookie: str | None, headers: Headers
    ) -> Headers:
        if cookie is None and not (used or tracker.cookies):
            return headers
        out = _varying(headers, self.vary)
        if cookie is not None:
            out.append((self.carrier, cookie.encode("latin-1")))
            if not any(name.lower() == b"cache-control" for name, _ in headers):
                out.append(_PRIVATE)
        return out


class _HeaderTokens(_Transported):
    """The token comes in a request header and goes out in a response header
    (``HeaderTransport``): the sealed value, as the cookie would carry it, without the cookie."""

    def begin(
        self, cookie_headers: Iterable[bytes], user_agent: bytes | None = None, lazy: bool = False
    ) -> Tracker:
        """``cookie_headers`` are the tokens the request's header carried (none: an empty
        session). Each is written as the cookie it stands for, so the cookie's path opens it
        (a ``;`` cannot be in a token: it would spell another cookie)."""
        prefix = self._prefix
        cookies = [prefix + token for token in cookie_headers if token and b";" not in token]
        return super().begin(cookies, user_agent, lazy)

    def _cookie(
        self,
        value: str,
        resendable: tuple[str, str] | None = None,
        suffix: str | None = None,
    ) -> str:
        """The sealed token for the response header: base64 as it is (a token68, as
        ``Authorization`` wants it), else percent-encoded as the cookie would be (a header
        has no Max-Age: ``suffix`` is not used)."""
        if resendable is not None and resendable[0] == value:
            sealed = resendable[1]
        else:
            sealed = self.sealer.seal(value)
        token = sealed if self._base64_seal else _percent_encode(sealed)
        if len(token) > MAX_SET_COOKIE_BYTES:
            raise PersistError(
                f"the session token would be {len(token)} bytes, over the"
                f" {MAX_SET_COOKIE_BYTES}-byte limit a cookie has (the header carries the same"
                " value); store less in the session or use a server-side store",
                status_code=500,
            )
        return token

    def _removal(self) -> str:
        """An ended session: the response header, empty."""
        return ""

    def _headers(
        self, tracker: Tracker, used: bool, cookie: str | None, headers: Headers
    ) -> Headers:
        """As the cookie's, but the token goes out only when it changed: the client keeps the
        one it sent (a cookie is sent again on every change, to restart it in the browser)."""
        if (
            cookie is not None
            and tracker.resendable is not None
            and cookie == tracker.resendable[1]
        ):
            cookie = None
        return super()._headers(tracker, used, cookie, headers)


class _ServerSideTransported(_Transported, ServerSideEngine):
    """The cookie's server-side engine in a middleware that also takes a header."""


class _ClientSideTransported(_Transported, ClientSideEngine):
    """The cookie's client-side engine in a middleware that also takes a header."""


class _ServerSideHeader(_HeaderTokens, ServerSideEngine):
    """A header transport's engine over a record store."""


class _ClientSideHeader(_HeaderTokens, ClientSideEngine):
    """A header transport's engine over the cookie store (the token carries the state)."""


def transported(engine: SessionEngine, transport: Transport, vary: bytes) -> SessionEngine:
    """An engine like ``engine`` (the very repository or cookie store, and its key ring,
    cookie settings, lifecycle, clock and events) whose requests carry the token by
    ``transport`` and whose responses vary by ``vary`` (every transport's header)."""
    header = isinstance(transport, HeaderTransport)
    options: dict[str, Any] = {
        "keys": engine.keys,
        "security": engine.security,
        "cookie": engine.cookie,
        "lifecycle": engine.lifecycle,
        "clock": engine.clock,
        "on_event": engine.on_event,
        "rotate_every": engine.rotate_every,
        "rotation_grace": engine.rotation_grace,
        "codec": engine.codec,
    }
    new: SessionEngine
    if isinstance(engine, ServerSideEngine):
        cls = _ServerSideHeader if header else _ServerSideTransported
        new = cls(repository=engine.repository, **options)
    else:
        assert isinstance(engine, ClientSideEngine)
        client = _ClientSideHeader if header else _ClientSideTransported
        new = client(store=engine.store, **options)
    new.transport, new.vary = transport, vary
    if isinstance(transport, HeaderTransport):
        new.carrier = transport.response_key
        new.cookie_max_age = None  # the token is sent when it changes, never to restart it
    return new


def _varying(headers: Headers, vary: bytes) -> Headers:
    """A copy of ``headers`` whose first Vary names each of ``vary``'s headers (unless it is
    ``*``), or with ``Vary: <vary>`` appended when it has none."""
    out = list(headers)
    for at, (name, value) in enumerate(out):
        if name.lower() == b"vary":
            named = {token.strip().lower() for token in value.split(b",")}
            if b"*" not in named:
                wanted = [n for n in vary.split(b", ") if n.lower() not in named]
                out[at] = (name, b", ".join([value, *wanted]))
            return out
    out.append((b"vary", vary))
    return out
