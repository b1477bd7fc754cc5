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
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return Certificate(cert_file, key_file, pin)


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
