"""A DBSC device for tests without a browser: a key pair that signs proofs as Chromium does.

Chromium's proofs (seen in tests/integration/test_dbsc_wire.py): header
``{"alg": "ES256", "jwk": {...}, "typ": "dbsc+jwt"}`` at registration and
``{"alg": "ES256", "typ": "dbsc+jwt"}`` at refresh; payload ``{"jti": <challenge>}`` (plus
``authorization`` when the server sent one); ES256 signatures raw r||s (JWS), as PyJWT makes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

_CHALLENGE = re.compile(r'challenge="([^"]*)"')
_QUOTED = re.compile(r'^"([^"]*)"')


class Device:
    """A key pair kept on 'the device'; ``register`` and ``refresh`` sign proofs with it."""

    def __init__(self, algorithm: str = "ES256", *, key: Any = None) -> None:
        self.algorithm = algorithm
        if key is None:
            if algorithm == "ES256":
                key = ec.generate_private_key(ec.SECP256R1())
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key = key

    @property
    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK."""
        codec = ECAlgorithm if isinstance(self.key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
        return json.loads(codec.to_jwk(self.key.public_key()))  # type: ignore[no-any-return]

    def proof(
        self,
        challenge: str,
        *,
        with_jwk: bool,
        typ: str = "dbsc+jwt",
        algorithm: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A signed ``Secure-Session-Response`` for ``challenge``."""
        headers: dict[str, Any] = {"typ": typ}
        if with_jwk:
            headers["jwk"] = self.jwk
        payload = {"jti": challenge, **(extra or {})}
        return jwt.encode(payload, self.key, algorithm=algorithm or self.algorithm, headers=headers)

    def register(self, challenge: str, **options: Any) -> str:
        """The registration proof: the public key in the header."""
        return self.proof(challenge, with_jwk=True, **options)

    def refresh(self, challenge: str, **options: Any) -> str:
        """The refresh proof: no key in the header, verified with the registered one."""
        return self.proof(challenge, with_jwk=False, **options)


def registration_challenge(header: str) -> str:
    """The challenge of a ``Secure-Session-Registration`` value."""
    found = _CHALLENGE.search(header)
    assert found is not None, header
    return found.group(1)


def refresh_challenge(header: str) -> str:
    """The challenge of a ``Secure-Session-Challenge`` value."""
    found = _QUOTED.match(header)
    assert found is not None, header
    return found.group(1)


def forged(header: dict[str, Any], payload: dict[str, Any], key: Any, sign_as: str) -> str:
    """A token whose header says what an attacker likes, signed by ``key`` with ``sign_as``."""
    import base64

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    signer = jwt.get_algorithm_by_name(sign_as)
    return f"{signing_input}.{part(signer.sign(signing_input.encode(), key))}"


def unsigned(challenge: str, jwk: dict[str, Any] | None = None) -> str:
    """An ``alg: none`` token, as an attacker would send it."""
    import base64

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header: dict[str, Any] = {"alg": "none", "typ": "dbsc+jwt"}
    if jwk is not None:
        header["jwk"] = jwk
    return f"{part(header)}.{part({'jti': challenge})}."
