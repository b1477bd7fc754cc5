"""Cookie cryptography: the cookie crate 0.16 private (AES-256-GCM) and signed (HMAC-SHA256)
formats, byte-compatible with actix, plus a signed mode that also binds the cookie name."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import secrets
import string
import sys
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

__all__ = ["ContentSecurity", "Key", "Sealer", "seal", "unseal"]

_KEY_LEN: Final = 64
_MIN_DERIVE_LEN: Final = 32
_DERIVE_INFO: Final = b"COOKIE;SIGNED:HMAC-SHA256;PRIVATE:AEAD-AES-256-GCM"
_NONCE_LEN: Final = 12
_TAG_LEN: Final = 16
_MAC_B64_LEN: Final = 44  # padded standard base64 of a 32-byte HMAC-SHA256
_MAC_B64URL_LEN: Final = 43  # unpadded base64url of it
_MAC_LEN: Final = 32
_MAX_SEALED_LEN: Final = 4096
_SIGNED_TAG: Final = b"sessionware-signed-v1\x00"
_HEX_DIGITS: Final = frozenset(string.hexdigits)
_HOW_TO: Final = (
    "for a new key use Key.generate(), or `sessionware keygen` (128 hex characters) and"
    " Key.from_hex(...)"
)


class Key:
    """A 64-byte master key: bytes 0..32 sign (HMAC-SHA256), bytes 32..64 encrypt (AES-256-GCM).

    As in cookie 0.16, only the first 64 bytes of a longer input are used.
    """

    __slots__ = ("_aead", "_encryption", "_signing")

    def __init__(self, master: bytes) -> None:
        if not isinstance(master, (bytes, bytearray)):
            raise TypeError(
                f"Key needs bytes, not {type(master).__name__} "
                f"(for a hex string use Key.from_hex(text)); {_HOW_TO}"
            )
        if len(master) < _KEY_LEN:
            raise ValueError(
                f"Key needs at least {_KEY_LEN} bytes of key material, got {len(master)};"
                f" {_HOW_TO}; from a secret of 32 or more random bytes, Key.derive_from(secret)"
            )
        self._signing = bytes(master[:32])
        self._encryption = bytes(master[32:_KEY_LEN])
        self._aead = AESGCM(self._encryption)

    @classmethod
    def generate(cls) -> Key:
        """A new random key from the OS CSPRNG."""
        return cls(secrets.token_bytes(_KEY_LEN))

    @classmethod
    def derive_from(cls, master: bytes) -> Key:
        """cookie 0.16 ``Key::derive_from``: HKDF-SHA256 expand only, ``master`` used as the PRK.

        ``master`` must be at least 32 bytes of high-entropy secret (it is not a password).
        """
        if not isinstance(master, (bytes, bytearray)):
            raise TypeError(f"Key.derive_from needs bytes, not {type(master).__name__}")
        if len(master) < _MIN_DERIVE_LEN:
            raise ValueError(
                f"Key.derive_from needs at least {_MIN_DERIVE_LEN} bytes of random secret, got"
                f" {len(master)}; it is not a password hash, so a short or guessable secret gives"
                " a guessable key. For a new key use Key.generate(), or `sessionware keygen` and"
                " Key.from_hex(...); to derive one, pass 32 or more random bytes"
                " (secrets.token_bytes(32))"
            )
        hkdf = HKDFExpand(algorithm=hashes.SHA256(), length=_KEY_LEN, info=_DERIVE_INFO)
        return cls(hkdf.derive(bytes(master)))

    @classmethod
    def from_hex(cls, text: str) -> Key:
        """A key from 128 hex characters (surrounding whitespace is ignored)."""
        if not isinstance(text, str):
            raise TypeError(f"Key.from_hex needs a str, not {type(text).__name__}")
        text = text.strip()
        wanted = f"Key.from_hex needs exactly {2 * _KEY_LEN} hex characters (64 bytes)"
        if text[:2] in ("0x", "0X"):
            raise ValueError(f"{wanted} without a '0x' prefix: drop the leading '0x'")
        for position, char in enumerate(text, 1):
            if char not in _HEX_DIGITS:
                shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
                raise ValueError(
                    f"{wanted}; character {position} is {shown}, not a hex digit (0-9, a-f)"
                )
        if len(text) != 2 * _KEY_LEN:
            raise ValueError(f"{wanted}, got {len(text)}; {_HOW_TO}")
        return cls(bytes.fromhex(text))

    @property
    def signing_key(self) -> bytes:
        """Bytes 0..32: the HMAC-SHA256 key."""
        return self._signing

    @property
    def encryption_key(self) -> bytes:
        """Bytes 32..64: the AES-256-GCM key."""
        return self._encryption

    def __repr__(self) -> str:
        return "Key(<64 bytes, hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return hmac.compare_digest(
            self._signing + self._encryption, other._signing + other._encryption
        )

    def __hash__(self) -> int:
        return hash((Key, self._signing, self._encryption))


class ContentSecurity(enum.Enum):
    """How a cookie value is protected."""

    PRIVATE = "private"
    """AES-256-GCM, AAD = cookie name (cookie 0.16 private jar). Confidential and name-bound."""
    SIGNED = "signed"
    """HMAC-SHA256 over a versioned, length-prefixed (name, value). Name-bound. The cookie is
    ``b64url(mac) ‖ b64url(value)`` (no padding): it needs no percent-encoding. The first
    version's ``b64(mac) ‖ value`` is still read."""
    SIGNED_ACTIX = "signed-actix"
    """cookie 0.16 signed jar: HMAC-SHA256 over the value only (interop with actix)."""


def _signed_message(name: bytes, value: bytes) -> bytes:
    """``b"sessionware-signed-v1\\x00" || u32be(len(name)) || name || value`` (UTF-8 bytes).

    Fixed version tag, length-prefixed name, then the value to the end: injective in
    (name, value). SIGNED and SIGNED_ACTIX never open each other's cookies, but use a key with
    one signed mode only: an actix MAC over a value that starts with this tag is a SIGNED MAC.
    """
    return _SIGNED_TAG + len(name).to_bytes(4, "big") + name + value


def seal(security: ContentSecurity, key: Key, name: str, value: str) -> str:
    """Protect ``value`` for the cookie ``name``; returns the cookie value (not yet %-encoded).

    - PRIVATE: ``b64std(nonce12 || AES-256-GCM(value) || tag16)``, AAD = ``name``, fresh nonce.
    - SIGNED_ACTIX: ``b64std(HMAC-SHA256(signing_key, value))`` (44 chars) then ``value``.
    - SIGNED: ``b64url(mac)`` (43 chars, unpadded) then ``b64url(value)`` (unpadded), the MAC
      over :func:`_signed_message` ``(name, value)``. (The first version wrote the SIGNED_ACTIX
      layout with this MAC; a 44th character ``=`` tells it apart, and it still opens.)
    """
    if not isinstance(security, ContentSecurity):
        raise TypeError(f"unknown content security: {security!r}")
    return Sealer(security, (key,), name).seal(value)


def unseal(
    security: ContentSecurity, keys: Sequence[Key], name: str, sealed: str
) -> tuple[str, int] | None:
    """Open ``sealed`` with the first key of ``keys`` that authenticates it.

    Returns ``(value, index of that key)``, or ``None`` if no key opens it or the input is
    malformed in any way. Never raises on any ``sealed`` string; more than 4096 characters are
    rejected before any decoding.
    """
    if not isinstance(security, ContentSecurity):
        return None
    try:
        name.encode()
    except UnicodeEncodeError:
        return None
    return Sealer(security, keys, name).open(sealed)


class Sealer:
    """``seal`` and ``unseal`` for one cookie name, key ring and mode, with everything that does
    not depend on the value (the name's bytes, the ciphers) prepared once."""

    __slots__ = ("_aeads", "_name", "_signing", "open", "seal", "security")

    def __init__(self, security: ContentSecurity, keys: Sequence[Key], name: str) -> None:
        self.security = security
        self._name = name.encode()
        self._aeads = tuple(key._aead for key in keys)
        self._signing = tuple(_HmacSha256(key._signing) for key in keys)
        self.seal, self.open = {
            ContentSecurity.PRIVATE: (self._seal_private, self._open_private),
            ContentSecurity.SIGNED: (self._seal_signed, self._open_signed),
            ContentSecurity.SIGNED_ACTIX: (self._seal_actix, self._open_actix),
        }[security]

    def _seal_private(self, value: str) -> str:
        """Seal with the ring's first key (the engine refuses an empty ring at construction)."""
        nonce = os.urandom(_NONCE_LEN)
        sealed = self._aeads[0].encrypt(nonce, value.encode(), self._name)
        return binascii.b2a_base64(nonce + sealed, newline=False).decode("ascii")

    def _seal_signed(self, value: str) -> str:
        raw = value.encode()
        mac = self._signing[0](_signed_message(self._name, raw))
        return _b64url(mac) + _b64url(raw)

    def _seal_actix(self, value: str) -> str:
        mac = self._signing[0](value.encode())
        return binascii.b2a_base64(mac, newline=False).decode("ascii") + value

    def _open_private(self, sealed: str) -> tuple[str, int] | None:
        if len(sealed) > _MAX_SEALED_LEN:
            return None
        blob = _b64decode_strict(sealed)
        if blob is None or len(blob) < _NONCE_LEN + _TAG_LEN:
            return None
        if len(self._aeads) == 1:  # one key: no loop, no index to count
            try:
                return self._aeads[0].decrypt(
                    blob[:_NONCE_LEN], blob[_NONCE_LEN:], self._name
                ).decode(), 0
            except (InvalidTag, ValueError, UnicodeDecodeError):  # a bad tag, or not UTF-8
                return None
        nonce, ciphertext, name = blob[:_NONCE_LEN], blob[_NONCE_LEN:], self._name
        for index, aead in enumerate(self._aeads):
            try:
                plain = aead.decrypt(nonce, ciphertext, name)
            except (InvalidTag, ValueError):
                continue
            try:
                return plain.decode(), index
            except UnicodeDecodeError:
                return None
        return None

    def _open_signed(self, sealed: str) -> tuple[str, int] | None:
        if sealed[_MAC_B64URL_LEN : _MAC_B64URL_LEN + 1] == "=":  # the first version's layout
            opened = self._open_mac(sealed)
            if opened is None:
                return None
            return self._verify(_signed_message(self._name, opened[1]), opened[0], opened[2])
        if len(sealed) > _MAX_SEALED_LEN or len(sealed) < _MAC_B64URL_LEN:
            return None
        mac = _b64url_decode(sealed[:_MAC_B64URL_LEN])
        raw = _b64url_decode(sealed[_MAC_B64URL_LEN:])
        if mac is None or raw is None or len(mac) != _MAC_LEN:
            return None
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            return None
        return self._verify(_signed_message(self._name, raw), mac, value)

    def _open_actix(self, sealed: str) -> tuple[str, int] | None:
        opened = self._open_mac(sealed)
        return None if opened is None else self._verify(opened[1], opened[0], opened[2])

    def _open_mac(self, sealed: str) -> tuple[bytes, bytes, str] | None:
        """The cookie crate's layout, ``b64std(mac) ‖ value``: the MAC, the value's bytes and
        the value; ``None`` when it is not that shape."""
        if len(sealed) > _MAX_SEALED_LEN or len(sealed) < _MAC_B64_LEN:
            return None
        mac = _b64decode_strict(sealed[:_MAC_B64_LEN])
        if mac is None or len(mac) != _MAC_LEN:
            return None
        value = sealed[_MAC_B64_LEN:]
        try:
            return mac, value.encode(), value
        except UnicodeEncodeError:  # lone surrogates
            return None

    def _verify(self, message: bytes, mac: bytes, value: str) -> tuple[str, int] | None:
        """``(value, ring index)`` when a key of the ring made ``mac`` over ``message``."""
        for index, signing in enumerate(self._signing):
            if hmac.compare_digest(signing(message), mac):
                return value, index
        return None


class _HmacSha256:
    """HMAC-SHA256 under one key, its padded key blocks hashed once (RFC 2104's construction):
    a MAC then costs two hash copies, not a new HMAC context (``hmac.digest``) per call.
    test_crypto's test_precomputed_hmac_is_hmac_digest holds the two equal."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def __call__(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OPAD: Final = bytes(byte ^ 0x5C for byte in range(256))
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def _b64url(data: bytes) -> str:
    """Unpadded base64url: what a cookie carries without any escaping."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes | None:
    """``_b64url``'s inverse, canonical encodings only (no padding, no other alphabet)."""
    if "+" in text or "/" in text or "=" in text or len(text) % 4 == 1 or not text.isascii():
        return None
    padded = text.encode().translate(_FROM_URLSAFE).decode() + "=" * (-len(text) % 4)
    return _b64decode_strict(padded)


def _b64decode_reencoded(text: str) -> bytes | None:
    """Canonical padded standard base64 only; ``None`` for anything else (Python 3.10)."""
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(data) != raw:  # non-zero trailing bits, e.g. "YWJ=" for "YWI="
        return None
    return data


_B64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE: Final = {char: index for index, char in enumerate(_B64_ALPHABET)}


def _b64decode_strict_mode(text: str) -> bytes | None:
    """``_b64decode_reencoded`` without the re-encode: binascii's strict mode refuses what is not
    base64 alphabet and padding (and a str that is not ASCII); the length and the padded
    quantum's unused bits are checked here."""
    if len(text) % 4:
        return None
    try:
        data = binascii.a2b_base64(text, strict_mode=True)  # type: ignore[call-arg,unused-ignore]
    except (binascii.Error, ValueError):
        return None
    if text[-1:] == "=":  # the bits the padding leaves unused must be zero, e.g. "YWJ=" is not
        two = text[-2:] == "=="
        if _B64_VALUE.get(text[-3 if two else -2], 0x0F) & (0x0F if two else 0x03):
            return None
    return data


_b64decode_strict = _b64decode_strict_mode if sys.version_info >= (3, 11) else _b64decode_reencoded
