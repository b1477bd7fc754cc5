"""An ASGI app served over HTTPS on a free loopback port, with a certificate made for the test.

DBSC registers only on a secure origin, and Chromium ignores the headers under a blanket
``--ignore-certificate-errors``: the certificate is allow-listed by the SHA-256 of its
SubjectPublicKeyInfo instead (``chromium_args``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.services import free_port

CHROMIUM = "/usr/bin/chromium"
BASE_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DBSC_FEATURES = (
    "--enable-features=DeviceBoundSessions:RequireOriginTrialTokens/false/RefreshQuota/false,"
    "EnableBoundSessionCredentialsSoftwareKeysForManualTesting"
)


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1, its key, and its SPKI pin for Chromium."""

    cert_file: Path
    key_file: Path
    spki_sha256: str


def make_certificate(directory: Path) -> Certificate:
    """Write a fresh P-256 key and a one-day self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("127.0.0.1")
    cert = _certificate(name, name, key.public_key(), key, ca=False)
    cert_file, key_file = _write(directory, "cert", cert, key)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return Certificate(cert_file, key_file, pin)


@dataclass(frozen=True)
class SignedCertificate:
    """A server certificate for 127.0.0.1 and localhost, its key, and the CA that signed it."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_signed_certificate(directory: Path) -> SignedCertificate:
    """Write a throwaway CA and a one-day server certificate it signed, for 127.0.0.1 and
    localhost: a client that trusts ``ca_file`` alone verifies the server as it would in
    production (``ssl.create_default_context(cafile=...)``)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("sessionware test CA")
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(_name("127.0.0.1"), ca_name, key.public_key(), ca_key, ca=False)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = _write(directory, "server", cert, key)
    return SignedCertificate(directory / "ca.pem", cert_file, key_file)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    """A one-day certificate: a CA's, or a server's for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13's default context (VERIFY_X509_STRICT) wants both key identifiers.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    if ca:
        usage = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"),
            False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
    else:
        names = [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    """Write ``cert`` and its unencrypted ``key`` as PEM files; return their paths."""
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def chromium_args(certificate: Certificate, *, dbsc: bool = True) -> list[str]:
    """Chromium's flags: headless, the certificate pinned, and DBSC with software keys."""
    args = [*BASE_ARGS, f"--ignore-certificate-errors-spki-list={certificate.spki_sha256}"]
    return [*args, DBSC_FEATURES] if dbsc else args


@contextmanager
def serve_https(app: Any, certificate: Certificate) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread until the block ends; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(certificate.cert_file),
        ssl_keyfile=str(certificate.key_file),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
