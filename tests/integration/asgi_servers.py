"""Real ASGI servers in subprocesses for test_servers.py, each on a free loopback port.

Every server serves ``tests.integration.server_app:app`` from its own process group (so a
server's worker processes stop with it), logs to a file in a temporary directory, and gets its
own SQLite file. ``Servers`` starts them all at the first use (in parallel, as starting is
most of the module's time) and stops them, by process group id, when the module ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.integration.https_server import SignedCertificate, make_signed_certificate
from tests.services import ServerProcess, free_port, installed, require_module

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.server_app:app"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Launch:
    """How to start one server: the package it needs and its command line after ``python``
    (``{port}``, ``{certfile}`` and ``{keyfile}`` are filled in)."""

    package: str
    argv: tuple[str, ...]
    tls: bool = False
    http2: bool = False
    websockets: bool = True
    """Whether the WebSocket scenarios run on it (they go over HTTP/1.1 in any case)."""


_UVICORN = ("-m", "uvicorn", APP, "--host", HOST, "--port", "{port}", "--lifespan", "off")
_UVICORN_QUIET = ("--log-level", "warning", "--no-access-log")
_HYPERCORN = ("-m", "hypercorn", "--bind", f"{HOST}:{{port}}", APP)
_GRANIAN = ("-m", "granian", "--interface", "asgi", "--host", HOST, "--port", "{port}", APP)
_GRANIAN_ONE = ("--workers", "1", "--log-level", "warning")

LAUNCHES: dict[str, Launch] = {
    "uvicorn-h11": Launch(
        "uvicorn", (*_UVICORN, "--http", "h11", "--ws", "wsproto", *_UVICORN_QUIET)
    ),
    "uvicorn-httptools": Launch(
        "httptools", (*_UVICORN, "--http", "httptools", "--ws", "websockets", *_UVICORN_QUIET)
    ),
    "hypercorn-h11": Launch("hypercorn", _HYPERCORN),
    "hypercorn-h2-tls": Launch(
        "hypercorn",
        (*_HYPERCORN, "--certfile", "{certfile}", "--keyfile", "{keyfile}"),
        tls=True,
        http2=True,
    ),
    "granian": Launch("granian", (*_GRANIAN, *_GRANIAN_ONE)),
    # granian 2.8 over TLS leaves about 1 in 300 WebSocket handshakes unanswered (no 101,
    # with --http auto or 1); its WebSockets are tested over plain HTTP above.
    "granian-h2-tls": Launch(
        "granian",
        (*_GRANIAN, *_GRANIAN_ONE, "--ssl-certificate", "{certfile}", "--ssl-keyfile", "{keyfile}"),
        tls=True,
        http2=True,
        websockets=False,
    ),
    "daphne": Launch("daphne", ("-m", "daphne", "-b", HOST, "-p", "{port}", APP)),
}


class _GroupProcess(ServerProcess):
    """A server started as the leader of its own process group: ``stop()`` ends the group
    (SIGTERM, then SIGKILL after 5 s), so worker processes it forked go with it."""

    def stop(self) -> None:
        group = self.process.pid
        if self.process.poll() is None:
            _signal_group(group, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        _signal_group(group, signal.SIGKILL)
        self.process.wait(timeout=5)


def _die_with_parent() -> None:
    """In the child, before the server starts (Linux): SIGTERM it if the test process dies
    without stopping it, so a killed test run leaves no server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


@dataclass
class Server:
    """One running server: where it listens, how to reach it, and its log."""

    name: str
    launch: Launch
    process: _GroupProcess
    log: Path
    database: Path
    key: str
    """The app's key, in hex (to open the cookies it sets)."""
    ca: Path
    """The test CA, the only one the clients trust."""
    listening: bool = field(default=False)
    log_read: int = field(default=0)

    @property
    def secure(self) -> bool:
        return self.launch.tls

    @property
    def base_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{HOST}:{self.process.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{HOST}:{self.process.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A new client context that trusts only the test CA (a client may change it: httpx
        sets its ALPN protocols). httpx's default one loads the system's CA bundle, which costs
        more than a test's requests."""
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self) -> httpx.Client:
        """An httpx client with its own cookie jar (HTTP/2 where the server speaks it)."""
        return httpx.Client(
            base_url=self.base_url, http2=self.launch.http2, verify=self.ssl_context(), timeout=10
        )

    def websocket(self, client: httpx.Client, path: str) -> ClientConnection:
        """Open a WebSocket to ``path`` with the cookies ``client`` holds for it; the cookies
        the handshake's answer sets go into ``client``'s jar, as a browser would keep them."""
        request = httpx.Request("GET", self.base_url + path)
        client.cookies.set_cookie_header(request)
        headers = {"Cookie": request.headers["cookie"]} if "cookie" in request.headers else {}
        context = self.ssl_context() if self.secure else None
        ws = connect(self.ws_url + path, additional_headers=headers, ssl=context, open_timeout=10)
        assert ws.response is not None
        answer = [("set-cookie", v) for v in ws.response.headers.get_all("Set-Cookie")]
        client.cookies.extract_cookies(httpx.Response(101, headers=answer, request=request))
        return ws

    def take_log(self) -> str:
        """What the server logged since the last call (the whole log on the first)."""
        with self.log.open("rb") as log:
            log.seek(self.log_read)
            written = log.read()
        self.log_read += len(written)
        return written.decode("utf-8", "replace")

    def wait(self) -> None:
        """Return once the server accepts connections; fail with its log if it never does."""
        if self.listening:
            return
        try:
            self.process.wait_listening(self.name, seconds=30)
        except RuntimeError:
            pytest.fail(f"{self.name} did not start; its log:\n{self.log.read_text()}")
        self.listening = True


class Servers:
    """Every server of ``LAUNCHES`` that is installed, started together on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = secrets.token_hex(64)
        self.running: dict[str, Server] = {}
        self.missing: dict[str, str] = {}
        self.certificate: SignedCertificate = make_signed_certificate(directory)

    def get(self, name: str) -> Server:
        """The running server ``name``; skips (fails under CI=true) when it is not installed."""
        if not self.running and not self.missing:
            self._start_all()
        if name in self.missing:
            require_module(name, self.missing[name])
        server = self.running[name]
        server.wait()
        return server

    def _start_all(self) -> None:
        for name, launch in LAUNCHES.items():
            if installed(launch.package):
                self.running[name] = self._start(name, launch)
            else:
                self.missing[name] = launch.package

    def _start(self, name: str, launch: Launch) -> Server:
        port = free_port()
        certificate = self.certificate  # used by the servers that serve TLS
        argv = [
            arg.format(port=port, certfile=certificate.cert_file, keyfile=certificate.key_file)
            for arg in launch.argv
        ]
        database = self.directory / f"{name}.db"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SESSIONWARE_SERVERS_KEY": self.key,
            "SESSIONWARE_SERVERS_DB": str(database),
            "SESSIONWARE_SERVERS_SECURE": "1" if launch.tls else "0",
        }
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return Server(
            name,
            launch,
            _GroupProcess(process, port),
            log,
            database,
            self.key,
            certificate.ca_file,
        )

    def stop_all(self) -> None:
        for server in self.running.values():
            server.process.stop()
