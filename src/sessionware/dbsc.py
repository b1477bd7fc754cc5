"""Device-bound sessions (DBSC, W3C WebAppSec draft): a copied cookie stops working in minutes.

``session.bind_device()`` makes the response carry ``Secure-Session-Registration``; a browser
with DBSC makes a key pair it keeps on the device and POSTs the public key, signed, to the
registration path. From then on the session needs a second, short-lived cookie, the
*credential*: ``seal(binding id + valid-until)`` under the cookie key ring, with Max-Age
``credential_ttl``. When it lapses the browser holds its next request, POSTs the refresh path,
gets a challenge, signs it with the device key and receives a new credential. A copied cookie
jar works until its credential lapses; without the device key it cannot get another.

Why a second cookie and not a valid-until sealed into the session cookie: the refresh request
arrives without the bound cookie by definition, so the long-lived session cookie is what finds
the record then. With one cookie the DBSC session id would have to carry the session key, which
``renew()`` changes while the browser keeps the id (and loads never follow a renewal). It also
leaves the session cookie byte-for-byte actix-compatible.

The binding lives in the session record (envelope field ``device``): server-side stores only.
Framework-free: the middleware hands ``serve`` the request and sends what it returns.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from sessionware.config import CookieSettings
from sessionware.cookies import _attributes, find_cookies, session_cookie
from sessionware.crypto import ContentSecurity, Key, seal, unseal
from sessionware.errors import ProofError, StaleChallengeError

if TYPE_CHECKING:
    from sessionware.repository import Loaded
    from sessionware.session import Tracker

__all__ = [
    "ALGORITHMS",
    "REGISTRATION_GRACE",
    "Binding",
    "DeviceBinder",
    "DeviceBinding",
    "DeviceRequest",
    "ProofError",
    "SessionHost",
    "StaleChallengeError",
    "pack_credential",
    "serve",
    "unpack_credential",
]

logger = logging.getLogger("sessionware")

ALGORITHMS = ("ES256", "RS256")
"""The signature algorithms DBSC browsers use; ``none`` and HMAC are never accepted."""
JWT_TYPE = "dbsc+jwt"
REGISTRATION_GRACE = 15
"""Seconds after registration in which the session still opens without a credential: the
browser sends requests (a redirect's target, say) while it registers, before it has one."""
_CHALLENGE_AAD = "sessionware-dbsc-challenge"
_MAX_TOKEN_CHARS = 8192
_BINDING_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_PATH = re.compile(r"/[!#-+\--:<-~]*")  # printable ASCII, no space, quote, comma or semicolon
_JWK_FIELDS = {"ES256": ("kty", "crv", "x", "y"), "RS256": ("kty", "n", "e")}
_JSON = {"content-type": "application/json", "cache-control": "no-store"}

Headers = list[tuple[bytes, bytes]]


def _jwt() -> ModuleType:
    try:
        import jwt
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError("device binding needs PyJWT: pip install 'sessionware[dbsc]'") from None
    return jwt


# -- what the record keeps, what the cookie and the challenge carry ------------------------------


@dataclass(frozen=True)
class Binding:
    """A session's device binding, as its record keeps it.

    ``id`` is the DBSC ``session_identifier``; ``counter`` numbers the next challenge (a proof
    for any other number is refused, which makes challenges single-use); ``jwk`` is the device's
    public key, ``None`` while registration is pending (the session is then not enforced);
    ``registered_at`` when it was bound (Unix seconds).
    """

    id: str
    counter: int = 0
    algorithm: str | None = None
    jwk: dict[str, str] | None = None
    registered_at: int = 0

    @property
    def registered(self) -> bool:
        """Whether a device key is bound: only then does the session need its credential."""
        return self.jwk is not None

    def to_record(self) -> dict[str, Any]:
        """The JSON object the session record keeps."""
        record = {"id": self.id, "n": self.counter, "alg": self.algorithm, "jwk": self.jwk}
        return {**record, "at": self.registered_at} if self.registered else record

    @classmethod
    def from_record(cls, data: Any) -> Binding | None:
        """The binding a record keeps, or ``None`` if the object is not one."""
        if not isinstance(data, dict):
            return None
        bid, counter, alg, jwk = data.get("id"), data.get("n"), data.get("alg"), data.get("jwk")
        if not (isinstance(bid, str) and _BINDING_ID.fullmatch(bid)):
            return None
        if type(counter) is not int or counter < 0:
            return None
        if jwk is None and alg is None:
            return cls(bid, counter)
        if alg not in _JWK_FIELDS or not isinstance(jwk, dict):
            return None
        if not all(_ascii(jwk.get(name)) for name in _JWK_FIELDS[alg]):
            return None
        at = data.get("at", 0)
        if type(at) is not int or at < 0:
            return None
        return cls(bid, counter, alg, {name: jwk[name] for name in _JWK_FIELDS[alg]}, at)


def _ascii(value: Any) -> bool:
    return isinstance(value, str) and value.isascii()


@dataclass
class DeviceRequest:
    """One request's part in device binding: its Cookie header values (the credential cookie is
    among them), whether its session proved its binding (for ``require_for``), and the
    ``Secure-Session-Registration`` value its response is to carry."""

    cookies: list[bytes]
    bound: bool = False
    registration: str | None = None


def pack_credential(binding_id: str, valid_until: float) -> str:
    """The plaintext a credential cookie seals: ``v1.<binding id>.<valid-until, Unix s>``."""
    return f"v1.{binding_id}.{int(valid_until)}"


def unpack_credential(text: str) -> tuple[str, int] | None:
    """``(binding id, valid-until)`` from ``pack_credential``'s text, or ``None``."""
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _pack_challenge(binding: Binding, expires: float) -> str:
    return f"v1.{binding.id}.{binding.counter}.{int(expires)}"


def _unpack_challenge(text: str) -> tuple[str, int, int] | None:
    parts = text.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not (parts[2].isdigit() and parts[3].isdigit()):
        return None
    return parts[1], int(parts[2]), int(parts[3])


def _read_token(value: bytes | None) -> str:
    """The JWT of a ``Secure-Session-Response`` header, bare or as a structured-field string."""
    if value is None:
        raise ProofError("no Secure-Session-Response header")
    text = value.decode("latin-1").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text or len(text) > _MAX_TOKEN_CHARS or not text.isascii():
        raise ProofError("the Secure-Session-Response header is not a JWT")
    return text


def _sf_string(value: bytes | None) -> str | None:
    """A header holding an sf-string or a bare token, unquoted; ``None`` if absent."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def _check_key(algorithm: str, key: Any) -> None:
    """Refuse a key that is not P-256 for ES256, or for RS256 not RSA with e = 65537 and a
    2048-4096-bit modulus (a larger one costs many times the CPU to verify, on every proof)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if algorithm == "ES256":
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
            raise ProofError("an ES256 device key must be a P-256 public key")
    elif not (
        isinstance(key, rsa.RSAPublicKey)
        and 2048 <= key.key_size <= 4096
        and key.public_numbers().e == 65537
    ):
        raise ProofError(
            "an RS256 device key must be an RSA public key of 2048 to 4096 bits with e = 65537"
        )


def _verify(
    token: str, allowed: Sequence[str], jwk: dict[str, str] | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Check ``token``'s header and signature; return ``(alg, public JWK, payload)``.

    Registration (``jwk`` None) takes the key from the JWT's ``jwk`` header, refresh uses the
    bound one. ``typ`` must be ``dbsc+jwt``, ``alg`` one of ``allowed`` and fit the key.
    """
    jwt = _jwt()
    try:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if header.get("typ") != JWT_TYPE:
            raise ProofError(f"the proof's typ is not {JWT_TYPE}")
        if algorithm not in allowed:
            raise ProofError("the proof's alg is not one this server offered")
        given = header.get("jwk") if jwk is None else jwk
        if not isinstance(given, dict) or given.get("d") is not None:
            raise ProofError("the proof carries no public JWK")
        key = jwt.PyJWK(given, algorithm).key
        _check_key(algorithm, key)
        payload = jwt.decode(
            token, key, algorithms=[algorithm], options={"require": ["jti"], "verify_aud": False}
        )
        public = {name: str(given[name]) for name in _JWK_FIELDS[algorithm]}
    except ProofError:
        raise
    except Exception as exc:  # hostile input: whatever PyJWT or a JWK parser raises is a refusal
        raise ProofError(f"the proof does not verify: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("jti"), str):
        raise ProofError("the proof's jti is not a string")
    return algorithm, public, payload


# -- configuration and the per-middleware runtime ----------------------------------------------


class DeviceBinding:
    """Device-bound sessions for ``SessionMiddleware(..., device_binding=DeviceBinding())``.

    ``credential_ttl``: how long a credential cookie lasts, so how long a copied cookie jar
    works; ``challenge_ttl``: how long a registration or refresh challenge may be answered;
    ``require_for``: path prefixes answered 403 unless the session is device-bound (browsers
    without DBSC still get normal sessions elsewhere); ``cookie_name``: the credential cookie,
    by default the session cookie's name plus ``-bound``.
    """

    def __init__(
        self,
        *,
        credential_ttl: timedelta = timedelta(minutes=10),
        registration_path: str = "/.well-known/sessionware/dbsc/register",
        refresh_path: str = "/.well-known/sessionware/dbsc/refresh",
        algorithms: Sequence[str] = ALGORITHMS,
        challenge_ttl: timedelta = timedelta(minutes=2),
        cookie_name: str | None = None,
        require_for: Iterable[str] = (),
    ) -> None:
        ttls: tuple[tuple[str, object], ...] = (
            ("credential_ttl", credential_ttl),
            ("challenge_ttl", challenge_ttl),
        )
        for name, ttl in ttls:
            if not isinstance(ttl, timedelta) or ttl < timedelta(seconds=10):
                raise ValueError(f"{name} must be a timedelta of at least 10 seconds")
        paths: tuple[tuple[str, object], ...] = (
            ("registration_path", registration_path),
            ("refresh_path", refresh_path),
        )
        for name, path in paths:
            if not isinstance(path, str) or not _PATH.fullmatch(path):
                raise ValueError(
                    f"{name} must be an absolute path of printable ASCII without spaces, quotes,"
                    f" commas or semicolons, e.g. '/dbsc/register' (got {path!r})"
                )
        if registration_path == refresh_path:
            raise ValueError("registration_path and refresh_path must differ")
        algorithms = tuple(algorithms)
        if not algorithms or not set(algorithms) <= set(ALGORITHMS):
            raise ValueError(f"algorithms must be a non-empty subset of {ALGORITHMS}")
        prefixes = (require_for,) if isinstance(require_for, str) else tuple(require_for)
        if not all(isinstance(p, str) and p.startswith("/") for p in prefixes):  # type: ignore[redundant-expr]
            raise ValueError("require_for takes path prefixes starting with '/', e.g. ('/admin',)")
        _jwt()  # fail at construction, with the install hint, when PyJWT is missing
        self.credential_ttl = credential_ttl
        self.challenge_ttl = challenge_ttl
        self.registration_path = registration_path
        self.refresh_path = refresh_path
        self.algorithms = algorithms
        self.cookie_name = cookie_name
        self.require_for = prefixes

    def runtime(self, *, keys: Sequence[Key], cookie: CookieSettings) -> DeviceBinder:
        """The binder one middleware uses: this configuration with its key ring and cookie."""
        name = self.cookie_name or f"{cookie.name}-bound"
        bound = dataclasses.replace(cookie, name=name)  # validated like the session cookie
        if name == cookie.name:
            raise ValueError("the credential cookie needs a name other than the session cookie's")
        return DeviceBinder(self, tuple(keys), bound)


class DeviceBinder:
    """One middleware's device binding: makes and checks challenges, proofs and credentials."""

    def __init__(self, config: DeviceBinding, keys: tuple[Key, ...], cookie: CookieSettings):
        self.config = config
        self.keys = keys
        self.cookie = cookie
        self._ttl = int(config.credential_ttl.total_seconds())
        self._challenge_ttl = config.challenge_ttl.total_seconds()
        self.attributes = _attributes(cookie).removeprefix("; ")
        """The credential cookie's attributes, as the session instructions name them."""

    def endpoint(self, path: str) -> bool:
        """Whether ``path`` is the registration or refresh path (the middleware serves them)."""
        return path in (self.config.registration_path, self.config.refresh_path)

    def required(self, path: str) -> bool:
        """Whether ``path`` falls under ``require_for``."""
        return any(path.startswith(prefix) for prefix in self.config.require_for)

    # -- at login ------------------------------------------------------------------------------

    def start(self, now: float) -> tuple[Binding, str]:
        """A new pending binding and the ``Secure-Session-Registration`` value that offers it."""
        binding = Binding(secrets.token_urlsafe(16))
        algorithms = " ".join(self.config.algorithms)
        challenge = self._challenge(binding, now)
        value = f'({algorithms});path="{self.config.registration_path}";challenge="{challenge}"'
        return binding, value

    # -- the engine's hook: four fixed points of a request -------------------------------------

    def begin(self, tracker: Tracker, cookie_headers: list[bytes]) -> None:
        """A request starts: keep every Cookie header value (the credential is among them)."""
        tracker.device = DeviceRequest(cookie_headers)

    def admit(self, tracker: Tracker, loaded: Loaded, now: float) -> bool:
        """Its record is loaded: whether the request may use it (a device-bound record only
        with a credential that has not lapsed); notes whether it proved its binding."""
        device = tracker.device
        if device is None or loaded.state.device is None:
            return True
        proven = self.check(loaded.state.device, device.cookies, now)
        if proven is None:
            return False
        device.bound = proven
        return True

    def binding(self, tracker: Tracker, now: float) -> dict[str, Any] | None:
        """A write is stored: the new pending binding to store with it when ``bind_device()``
        was called (its registration header is kept for ``offer``); ``None``: the record's
        binding stays."""
        if not tracker.device_requested:
            return None
        tracker.device_requested = False
        binding, registration = self.start(now)
        if tracker.device is not None:
            tracker.device.registration = registration
        return binding.to_record()

    def offer(self, tracker: Tracker, headers: list[tuple[bytes, bytes]]) -> None:
        """The response starts: add ``Secure-Session-Registration`` when it stored a binding."""
        device = tracker.device
        if device is not None and device.registration is not None:
            if tracker.key is not None:
                headers.append((b"secure-session-registration", device.registration.encode()))
            device.registration = None

    # -- on every request of a bound session ---------------------------------------------------

    def check(self, device: Any, cookie_headers: Iterable[bytes], now: float) -> bool | None:
        """Whether this request may use a record's session: ``None`` no, ``True`` yes with a
        valid credential for its registered binding, ``False`` yes without one.

        Unbound and pending sessions need no credential; a registered binding needs one that
        has not lapsed, except during ``REGISTRATION_GRACE`` after registering (requests the
        browser sent while it registered carry none). A ``device`` that is not a binding: no.
        """
        if device is None:
            return False
        binding = Binding.from_record(device)
        if binding is None:
            return None
        if not binding.registered:
            return False
        for value in find_cookies(cookie_headers, self.cookie.name):
            opened = unseal(ContentSecurity.PRIVATE, self.keys, self.cookie.name, value)
            unpacked = unpack_credential(opened[0]) if opened is not None else None
            if unpacked is not None and unpacked[0] == binding.id and now < unpacked[1]:
                return True
        if now < binding.registered_at + REGISTRATION_GRACE:
            return False
        return None

    def credential_cookie(self, binding: Binding, now: float) -> str:
        """The Set-Cookie of a fresh credential for ``binding``, valid ``credential_ttl``."""
        sealed = seal(
            ContentSecurity.PRIVATE,
            self.keys[0],
            self.cookie.name,
            pack_credential(binding.id, now + self._ttl),
        )
        return session_cookie(self.cookie, sealed, self._ttl)

    # -- challenges and proofs -----------------------------------------------------------------

    def _challenge(self, binding: Binding, now: float) -> str:
        text = _pack_challenge(binding, now + self._challenge_ttl)
        return seal(ContentSecurity.PRIVATE, self.keys[0], _CHALLENGE_AAD, text)

    def _check_challenge(self, binding: Binding, jti: str, now: float) -> None:
        opened = unseal(ContentSecurity.PRIVATE, self.keys, _CHALLENGE_AAD, jti)
        unpacked = _unpack_challenge(opened[0]) if opened is not None else None
        if unpacked is None:
            raise ProofError("the proof's jti is not a challenge of this server")
        bid, counter, expires = unpacked
        if bid != binding.id or counter != binding.counter:
            raise StaleChallengeError("the challenge is used, or not this session's")
        if now >= expires:
            raise StaleChallengeError("the challenge has expired")

    def register(self, binding: Binding, token: str, now: float) -> Binding:
        """Verify a registration proof for the pending ``binding``; the registered binding."""
        if binding.registered:
            raise StaleChallengeError("the session is already bound to a device")
        algorithm, jwk, payload = _verify(token, self.config.algorithms, None)
        self._check_challenge(binding, payload["jti"], now)
        return Binding(binding.id, binding.counter + 1, algorithm, jwk, int(now))

    def refresh(self, binding: Binding, token: str, now: float) -> Binding:
        """Verify a refresh proof with the bound key; the binding with its challenge used."""
        assert binding.algorithm is not None and binding.jwk is not None
        _, _, payload = _verify(token, (binding.algorithm,), binding.jwk)
        self._check_challenge(binding, payload["jti"], now)
        return dataclasses.replace(binding, counter=binding.counter + 1)

    def challenge_header(self, binding: Binding, now: float) -> bytes:
        """The ``Secure-Session-Challenge`` value asking the device to sign a fresh challenge."""
        return f'"{self._challenge(binding, now)}";id="{binding.id}"'.encode("ascii")

    def instructions(self, binding: Binding, origin: str | None) -> bytes:
        """The JSON session instructions of a registration or refresh answer."""
        scope: dict[str, Any] = {"include_site": False, "scope_specification": []}
        if origin is not None:
            scope["origin"] = origin
        body = {
            "session_identifier": binding.id,
            "refresh_url": self.config.refresh_path,
            "scope": scope,
            "credentials": [
                {"type": "cookie", "name": self.cookie.name, "attributes": self.attributes}
            ],
        }
        return json.dumps(body, separators=(",", ":")).encode()


# -- the two endpoints -------------------------------------------------------------------------


class SessionHost(Protocol):
    """What the endpoints need from the engine: the record a cookie names, and writing it back."""

    clock: Any

    async def binding_record(self, cookie_headers: list[bytes]) -> Loaded | None:
        """The live session the request's session cookie names, without the device check."""

    async def store_binding(self, loaded: Loaded, device: dict[str, Any]) -> bool:
        """Store ``device`` as the binding of the record ``loaded`` is, its state left as it is,
        only if nothing wrote the record since it was read; whether it was stored."""


def _ended(session_id: str | None) -> bytes:
    """The refresh answer that ends the browser's DBSC session (Chromium wants its id named)."""
    body: dict[str, Any] = {"continue": False}
    if session_id and _BINDING_ID.fullmatch(session_id):
        body = {"session_identifier": session_id, **body}
    return json.dumps(body, separators=(",", ":")).encode()


async def serve(
    binder: DeviceBinder,
    host: SessionHost,
    method: str,
    path: str,
    headers: Iterable[tuple[bytes, bytes]],
    origin: str | None,
) -> tuple[int, Headers, bytes]:
    """Answer a registration or refresh request: ``(status, headers, body)``.

    Store failures propagate (the middleware answers them as it answers any store failure).
    No input makes a 5xx: a request that proves nothing gets a 4xx.
    """
    if method != "POST":
        return 405, [(b"allow", b"POST"), *_plain()], b""
    cookies: list[bytes] = []
    response: bytes | None = None
    session_id: bytes | None = None
    for name, value in headers:
        if name == b"cookie":
            cookies.append(value)
        elif name == b"secure-session-response":
            response = value
        elif name == b"sec-secure-session-id":
            session_id = value
    now = float(host.clock())
    sid = _sf_string(session_id)
    found = await host.binding_record(cookies)
    registering = path == binder.config.registration_path
    binding = Binding.from_record(found.state.device) if found is not None else None
    if found is None or binding is None:
        logger.info("DBSC %s for no session", "registration" if registering else "refresh")
        return (401, _plain(), b"") if registering else (200, _json(), _ended(sid))
    if not registering and (not binding.registered or (sid is not None and sid != binding.id)):
        return 200, _json(), _ended(sid)
    if not registering and response is None:
        return 403, [(b"secure-session-challenge", binder.challenge_header(binding, now))], b""
    try:
        token = _read_token(response)
        if registering:
            updated = binder.register(binding, token, now)
        else:
            updated = binder.refresh(binding, token, now)
    except StaleChallengeError as exc:
        logger.info("DBSC proof refused: %s", exc)
        if registering:
            return 400, _plain(), b""
        return 403, [(b"secure-session-challenge", binder.challenge_header(binding, now))], b""
    except ProofError as exc:
        logger.warning("DBSC proof refused: %s", exc)
        return 400, _plain(), b""
    if not await host.store_binding(found, updated.to_record()):
        return await _lost_race(binder, host, cookies, registering, sid, now)
    out = _json()
    out.append((b"set-cookie", binder.credential_cookie(updated, now).encode("latin-1")))
    if registering:
        logger.info("DBSC session registered (%s)", updated.algorithm)
    return 200, out, binder.instructions(updated, origin)


async def _lost_race(
    binder: DeviceBinder,
    host: SessionHost,
    cookies: list[bytes],
    registering: bool,
    sid: str | None,
    now: float,
) -> tuple[int, Headers, bytes]:
    """The answer when the record changed between reading it and storing the proof's result
    (a second refresh with the same challenge, a request writing the session, a logout)."""
    logger.info(
        "DBSC %s lost a race with another write", "registration" if registering else "refresh"
    )
    found = await host.binding_record(cookies)
    binding = Binding.from_record(found.state.device) if found is not None else None
    if binding is None or (not registering and not binding.registered):
        return (401, _plain(), b"") if registering else (200, _json(), _ended(sid))
    if registering:
        return 400, _plain(), b""
    return 403, [(b"secure-session-challenge", binder.challenge_header(binding, now))], b""


def _plain() -> Headers:
    return [(b"cache-control", b"no-store")]


def _json() -> Headers:
    return [(name.encode(), value.encode()) for name, value in _JSON.items()]
