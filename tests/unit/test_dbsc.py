"""sessionware.dbsc without a server: configuration, bindings, challenges, proofs, credentials."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from sessionware import Key
from sessionware.config import CookieSettings
from sessionware.dbsc import (
    REGISTRATION_GRACE,
    Binding,
    DeviceBinder,
    DeviceBinding,
    ProofError,
    StaleChallengeError,
    pack_credential,
    unpack_credential,
)
from sessionware.repository import _record
from sessionware.state import StoredState, decode_state, encode_state
from tests.dbsc_device import (
    Device,
    forged,
    refresh_challenge,
    registration_challenge,
    unsigned,
)

NOW = 1_800_000_000.0


@pytest.fixture
def binder() -> DeviceBinder:
    return DeviceBinding(credential_ttl=timedelta(minutes=10)).runtime(
        keys=[Key.generate()], cookie=CookieSettings(name="id")
    )


def registered(binder: DeviceBinder, device: Device) -> Binding:
    pending, header = binder.start(NOW)
    return binder.register(pending, device.register(registration_challenge(header)), NOW)


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"credential_ttl": timedelta(seconds=1)}, "credential_ttl"),
        ({"credential_ttl": 600}, "credential_ttl"),
        ({"challenge_ttl": timedelta(0)}, "challenge_ttl"),
        ({"registration_path": "dbsc"}, "registration_path"),
        ({"refresh_path": '/a"b'}, "refresh_path"),
        ({"refresh_path": "/a b"}, "refresh_path"),
        ({"registration_path": "/x", "refresh_path": "/x"}, "must differ"),
        ({"algorithms": ()}, "algorithms"),
        ({"algorithms": ("HS256",)}, "algorithms"),
        ({"algorithms": ("none",)}, "algorithms"),
        ({"require_for": ("admin",)}, "require_for"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceBinding(**options)  # type: ignore[arg-type]


def test_the_credential_cookie_copies_the_session_cookies_attributes() -> None:
    cookie = CookieSettings(name="__Host-sid", same_site="strict")
    binder = DeviceBinding().runtime(keys=[Key.generate()], cookie=cookie)
    assert binder.cookie.name == "__Host-sid-bound"
    assert binder.attributes == "HttpOnly; SameSite=Strict; Secure; Path=/"
    with pytest.raises(ValueError, match="other than"):
        DeviceBinding(cookie_name="id").runtime(keys=[Key.generate()], cookie=CookieSettings())


# -- the record and the cookie -------------------------------------------------------------------


def test_a_binding_survives_the_stored_envelope(binder: DeviceBinder) -> None:
    binding = registered(binder, Device())
    record = decode_state(encode_state(decode_state('{"v":1,"state":{"a":1}}')))
    record.device = binding.to_record()
    again = decode_state(encode_state(record))
    assert Binding.from_record(again.device) == binding
    # The next write of this session carries the binding over (the repository's metadata).
    assert _record({}, again, StoredState(), None).device == binding.to_record()


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"id": "short", "n": 0},
        {"id": "A" * 22, "n": -1},
        {"id": "A" * 22, "n": True},
        {"id": "A" * 22, "n": 0, "alg": "HS256", "jwk": {"kty": "oct"}},
        {"id": "A" * 22, "n": 0, "alg": "ES256", "jwk": {"kty": "EC"}},
        {"id": "A" * 22, "n": 0, "alg": "ES256", "jwk": None},
    ],
)
def test_a_malformed_binding_is_none(data: object) -> None:
    assert Binding.from_record(data) is None


def test_credential_payload_round_trip() -> None:
    assert unpack_credential(pack_credential("abcdefghijklmnop", NOW + 0.9)) == (
        "abcdefghijklmnop",
        int(NOW),
    )
    for text in ("", "v1.a", "v2.a.1", "v1.a.b", "v1.a.1.2", "v1.a.-1"):
        assert unpack_credential(text) is None


def test_credential_admits_its_binding_until_it_lapses(binder: DeviceBinder) -> None:
    binding = registered(binder, Device())  # at NOW
    line = binder.credential_cookie(binding, NOW)
    assert line.startswith("id-bound=") and "Max-Age=600" in line
    cookie = line.split(";")[0].encode()
    record = binding.to_record()
    assert record["at"] == int(NOW)
    later = NOW + REGISTRATION_GRACE  # past the grace that follows registration
    assert binder.check(record, [cookie], NOW + 599) is True
    assert binder.check(record, [cookie], NOW + 600) is None
    assert binder.check(record, [], later) is None
    assert binder.check(record, [b"id-bound=garbage"], later) is None
    other = registered(binder, Device())
    assert binder.check(other.to_record(), [cookie], later) is None, "another binding's"
    foreign = DeviceBinding().runtime(keys=[Key.generate()], cookie=CookieSettings())
    assert foreign.check(record, [cookie], later) is None, "sealed under another key"
    # unbound and pending sessions need no credential; a malformed binding is never admitted
    assert binder.check(None, [], NOW) is False
    assert binder.check(Binding("A" * 22).to_record(), [], NOW) is False
    assert binder.check({"id": 1}, [cookie], NOW) is None
    assert binder.check({**record, "at": "now"}, [cookie], NOW) is None


def test_requests_sent_while_registering_still_open_the_session(binder: DeviceBinder) -> None:
    record = registered(binder, Device()).to_record()
    assert binder.check(record, [], NOW + REGISTRATION_GRACE - 1) is False  # open, unproven
    assert binder.check(record, [], NOW + REGISTRATION_GRACE) is None


# -- registration --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_registration_binds_the_devices_public_key(binder: DeviceBinder, algorithm: str) -> None:
    pending, header = binder.start(NOW)
    assert header.startswith('(ES256 RS256);path="/.well-known/sessionware/dbsc/register";')
    assert not pending.registered
    device = Device(algorithm)
    bound = binder.register(pending, device.register(registration_challenge(header)), NOW + 5)
    assert bound.registered and bound.id == pending.id and bound.algorithm == algorithm
    assert bound.counter == 1
    assert bound.jwk is not None and "d" not in bound.jwk
    assert bound.jwk == {k: v for k, v in device.jwk.items() if k in bound.jwk}


def test_the_offered_algorithms_are_pinned() -> None:
    binder = DeviceBinding(algorithms=("ES256",)).runtime(
        keys=[Key.generate()], cookie=CookieSettings()
    )
    pending, header = binder.start(NOW)
    assert header.startswith("(ES256);")
    with pytest.raises(ProofError, match="alg"):
        binder.register(pending, Device("RS256").register(registration_challenge(header)), NOW)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: Device().register(c, typ="JWT"), "typ"),
        (lambda c: unsigned(c, Device().jwk), "alg"),
        (lambda c: Device().refresh(c), "JWK"),
        (lambda c: p384_as_es256(c), "P-256"),
        (lambda c: rsa1024(c), "2048 to 4096"),
        (lambda c: Device().register(c)[:-8] + "AAAAAAAA", "does not verify"),
        (lambda c: "not.a.jwt", "does not verify"),
        (lambda c: Device().register("a challenge we never issued"), "not a challenge"),
    ],
)
def test_bad_registration_proofs_are_refused(binder: DeviceBinder, make, message: str) -> None:  # type: ignore[no-untyped-def]
    pending, header = binder.start(NOW)
    with pytest.raises(ProofError, match=message):
        binder.register(pending, make(registration_challenge(header)), NOW)


def p384_as_es256(challenge: str) -> str:
    """A P-384 key that claims ES256 (signed with ES384, the only way it can sign)."""
    device = Device(key=ec.generate_private_key(ec.SECP384R1()))
    header = {"alg": "ES256", "typ": "dbsc+jwt", "jwk": device.jwk}
    return forged(header, {"jti": challenge}, device.key, "ES384")


def rsa1024(challenge: str) -> str:
    """An RSA key too short for RS256."""
    device = Device("RS256", key=rsa.generate_private_key(65537, 1024))
    header = {"alg": "RS256", "typ": "dbsc+jwt", "jwk": device.jwk}
    return forged(header, {"jti": challenge}, device.key, "RS256")


@functools.cache
def rsa_key(bits: int, exponent: int = 65537) -> rsa.RSAPrivateKey:
    """One RSA key per size and exponent for the whole module (generating them takes time)."""
    return rsa.generate_private_key(exponent, bits)


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rs256_accepts_rsa_keys_of_2048_to_4096_bits_with_e_65537(
    binder: DeviceBinder, bits: int
) -> None:
    pending, header = binder.start(NOW)
    device = Device("RS256", key=rsa_key(bits))
    bound = binder.register(pending, device.register(registration_challenge(header)), NOW)
    assert bound.registered and bound.algorithm == "RS256"
    assert bound.jwk is not None and bound.jwk["e"] == "AQAB"


def own_key(bits: int, exponent: int = 65537) -> tuple[dict[str, Any], rsa.RSAPrivateKey]:
    """A key's public JWK and the key itself, which signs the proof."""
    key = rsa_key(bits, exponent)
    return Device("RS256", key=key).jwk, key


def rsa_8192() -> tuple[dict[str, Any], rsa.RSAPrivateKey]:
    """An 8192-bit RSA public key, k * (2**4096 + 1) for a real 4096-bit modulus k, and another
    key to sign with: the size is refused before any signature is checked (and making a real
    8192-bit key takes seconds)."""
    k = rsa_key(4096).public_key().public_numbers().n
    public = rsa.RSAPublicNumbers(65537, k << 4096 | k).public_key()
    assert public.key_size == 8192
    return json.loads(RSAAlgorithm.to_jwk(public)), rsa_key(4096)


@pytest.mark.parametrize(
    "make",
    [lambda: own_key(2048, exponent=3), lambda: own_key(1024), rsa_8192],
    ids=["e=3", "1024 bits", "8192 bits"],
)
def test_rs256_refuses_other_rsa_keys(
    binder: DeviceBinder, make: Callable[[], tuple[dict[str, Any], rsa.RSAPrivateKey]]
) -> None:
    pending, header = binder.start(NOW)
    jwk, signer = make()
    headers = {"alg": "RS256", "typ": "dbsc+jwt", "jwk": jwk}
    proof = forged(headers, {"jti": registration_challenge(header)}, signer, "RS256")
    with pytest.raises(ProofError, match="2048 to 4096 bits with e = 65537"):
        binder.register(pending, proof, NOW)


def test_a_p384_key_is_refused_under_its_own_algorithm(binder: DeviceBinder) -> None:
    pending, header = binder.start(NOW)
    device = Device(key=ec.generate_private_key(ec.SECP384R1()))
    challenge = registration_challenge(header)
    with pytest.raises(ProofError, match="alg"):
        binder.register(pending, device.register(challenge, algorithm="ES384"), NOW)


def test_a_registration_challenge_expires_and_works_once(binder: DeviceBinder) -> None:
    pending, header = binder.start(NOW)
    challenge = registration_challenge(header)
    device = Device()
    with pytest.raises(StaleChallengeError, match="expired"):
        binder.register(pending, device.register(challenge), NOW + 120)
    bound = binder.register(pending, device.register(challenge), NOW + 119)
    with pytest.raises(StaleChallengeError):
        binder.register(bound, device.register(challenge), NOW + 1)
    other, _ = binder.start(NOW)
    with pytest.raises(StaleChallengeError, match="not this session"):
        binder.register(other, device.register(challenge), NOW)


# -- refresh -------------------------------------------------------------------------------------


def test_refresh_needs_the_bound_key_and_a_fresh_unused_challenge(binder: DeviceBinder) -> None:
    device = Device()
    bound = registered(binder, device)
    header = binder.challenge_header(bound, NOW).decode()
    assert header.endswith(f';id="{bound.id}"')
    challenge = refresh_challenge(header)
    with pytest.raises(ProofError):
        binder.refresh(bound, Device().refresh(challenge), NOW)  # another key
    with pytest.raises(ProofError, match="alg"):
        binder.refresh(bound, unsigned(challenge), NOW)
    with pytest.raises(ProofError, match="typ"):
        binder.refresh(bound, device.refresh(challenge, typ="jwt"), NOW)
    with pytest.raises(StaleChallengeError, match="expired"):
        binder.refresh(bound, device.refresh(challenge), NOW + 120)
    refreshed = binder.refresh(bound, device.refresh(challenge), NOW + 1)
    assert refreshed.counter == bound.counter + 1 and refreshed.jwk == bound.jwk
    with pytest.raises(StaleChallengeError, match="used"):
        binder.refresh(refreshed, device.refresh(challenge), NOW + 2)


def test_refresh_pins_the_registered_algorithm(binder: DeviceBinder) -> None:
    device = Device("RS256")
    bound = registered(binder, device)
    challenge = refresh_challenge(binder.challenge_header(bound, NOW).decode())
    with pytest.raises(ProofError, match="alg"):
        binder.refresh(bound, device.refresh(challenge, algorithm="PS256"), NOW)
    assert binder.refresh(bound, device.refresh(challenge), NOW).counter == bound.counter + 1
