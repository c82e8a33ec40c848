"""Shared by the TLS tests (test_ssl.py, test_ssl_flow.py): certificates made
with the ``openssl`` command, SSL contexts, a recording protocol, servers and
peers that do not use the event loop under test (a thread with a blocking
``ssl`` socket, or an ``SSLObject`` over memory BIOs driven by hand).

Certificates are made once per session: a CA, a server certificate for
``localhost`` and ``127.0.0.1`` and a client certificate signed by it, and a
second, unrelated CA with a server certificate of its own (the untrusted
case), plus a self-signed server certificate. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

HOST = "127.0.0.1"
HOSTNAME = "localhost"
# Both TLS versions, for the tests parametrized over them.
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}
# asyncio's defaults (asyncio.constants): TLS read buffer high water 256 KiB,
# app write high water 512 KiB.
SSL_READ_HIGH = asyncio.constants.FLOW_CONTROL_HIGH_WATER_SSL_READ * 1024
SSL_WRITE_HIGH = asyncio.constants.FLOW_CONTROL_HIGH_WATER_SSL_WRITE * 1024
LOG_THRESHOLD = asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES  # 5
CLOSED_WARNING = "SSL connection is closed"

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclasses.dataclass(frozen=True)
class Certs:
    """Paths of PEM files: ``*_cert`` and ``*_key`` pairs, and the CAs."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_ca: str
    rogue_server_cert: str
    rogue_server_key: str
    self_signed_cert: str
    self_signed_key: str


def _openssl(cwd: str, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key_args(name: str) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key"]


def _make_ca(d: str, name: str, cn: str) -> None:
    _openssl(d, "req", "-x509", "-new", *_key_args(name), "-out", f"{name}.pem", "-days", "3650",
             "-subj", f"/CN={cn}", "-config", "openssl.cnf", "-extensions", "ca")  # fmt: skip


def _make_leaf(d: str, name: str, cn: str, ca: str, section: str, serial: int) -> None:
    _openssl(d, "req", "-new", *_key_args(name), "-out", f"{name}.csr", "-subj", f"/CN={cn}", "-config", "openssl.cnf")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-set_serial", str(serial), "-days", "3650", "-out", f"{name}.pem",
             "-extfile", "openssl.cnf", "-extensions", section)  # fmt: skip


def make_certs(d: str) -> Certs:
    with open(os.path.join(d, "openssl.cnf"), "w", encoding="ascii") as f:
        f.write(_OPENSSL_CONFIG)
    _make_ca(d, "ca", "ferroloop test CA")
    _make_leaf(d, "server", HOSTNAME, "ca", "server", 1001)
    _make_leaf(d, "client", "ferroloop test client", "ca", "client", 1002)
    _make_ca(d, "rogue_ca", "unrelated test CA")
    _make_leaf(d, "rogue_server", HOSTNAME, "rogue_ca", "server", 2001)
    _openssl(d, "req", "-x509", "-new", *_key_args("self_signed"), "-out", "self_signed.pem", "-days", "3650",
             "-subj", f"/CN={HOSTNAME}", "-config", "openssl.cnf", "-extensions", "server")  # fmt: skip

    def p(name: str) -> str:
        return os.path.join(d, name)

    return Certs(
        ca=p("ca.pem"),
        server_cert=p("server.pem"),
        server_key=p("server.key"),
        client_cert=p("client.pem"),
        client_key=p("client.key"),
        rogue_ca=p("rogue_ca.pem"),
        rogue_server_cert=p("rogue_server.pem"),
        rogue_server_key=p("rogue_server.key"),
        self_signed_cert=p("self_signed.pem"),
        self_signed_key=p("self_signed.key"),
    )


_CERTS: list[Certs] = []


@pytest.fixture(scope="session", name="certs")
def certs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The ``certs`` fixture: the test certificates, made once per session
    (the test modules import it)."""
    if not _CERTS:
        _CERTS.append(make_certs(str(tmp_path_factory.mktemp("tls-certs"))))
    return _CERTS[0]


# ----- contexts


def server_context(
    certs: Certs,
    *,
    which: str = "server",
    version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
    client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context presenting the ``which`` certificate (server, rogue_server, self_signed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(getattr(certs, f"{which}_cert"), getattr(certs, f"{which}_key"))
    if version is not None:
        ctx.maximum_version = version
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca)
    return ctx


def client_context(
    certs: Certs,
    *,
    version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
    with_cert: bool = False,
) -> ssl.SSLContext:
    """A client context trusting the test CA (hostname checked, certificate required)."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    if version is not None:
        ctx.maximum_version = version
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if with_cert:
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    return ctx


def verify_error_text(reason_detail: str) -> re.Pattern[str]:
    """``str()`` of an ``SSLCertVerificationError`` with that verify message (the _ssl.c line varies)."""
    return re.compile(
        r"\[SSL: CERTIFICATE_VERIFY_FAILED\] certificate verify failed: "
        + re.escape(reason_detail)
        + r" \(_ssl\.c:\d+\)"
    )


# ----- a recording protocol


class Recorder(asyncio.Protocol):
    """Logs the protocol callbacks in order; optionally echoes what it receives.

    Events: ``"made"``, ``("data", data)``, ``"eof"``, ``("pause", write
    buffer size)``, ``("resume", write buffer size)``, ``("lost", None or the
    exception's type name)``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, echo: bool = False) -> None:
        self.loop = loop
        self.echo = echo
        self.events: list[Any] = []
        self.transport: Any = None
        self.exc: BaseException | None = None
        self.nbytes = 0
        self.made = loop.create_future()
        self.done = loop.create_future()
        self._wake: asyncio.Future[None] | None = None

    def _log(self, ev: Any) -> None:
        self.events.append(ev)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._log("made")
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.nbytes += len(data)
        self._log(("data", data))
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> None:
        self._log("eof")

    def pause_writing(self) -> None:
        self._log(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self) -> None:
        self._log(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.exc = exc
        self._log(("lost", type(exc).__name__ if exc is not None else None))
        if not self.done.done():
            self.done.set_result(exc)

    @property
    def data(self) -> bytes:
        return b"".join(e[1] for e in self.events if isinstance(e, tuple) and e[0] == "data")

    @property
    def trace(self) -> list[Any]:
        """The events with consecutive data events joined into one."""
        out: list[Any] = []
        for e in self.events:
            if isinstance(e, tuple) and e[0] == "data" and out and isinstance(out[-1], tuple) and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + e[1])
            else:
                out.append(e)
        return out

    async def until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``pred()`` holds (checked after every callback)."""
        try:
            async with asyncio.timeout(timeout):
                while not pred():
                    self._wake = self.loop.create_future()
                    await self._wake
        except TimeoutError:
            raise AssertionError(f"timed out; events: {self.events!r}"[:2000]) from None

    async def until_lost(self, timeout: float = 10.0) -> BaseException | None:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.done)


def kinds(events: list[Any]) -> list[Any]:
    """The event names of a trace, with the lost argument kept."""
    return [e if isinstance(e, str) or e[0] == "lost" else e[0] for e in events]


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


async def start_server(loop: Any, factory: Callable[[], asyncio.BaseProtocol], ctx: Any, **kw: Any) -> tuple[Any, int]:
    server = await loop.create_server(factory, HOST, 0, ssl=ctx, **kw)
    return server, server.sockets[0].getsockname()[1]


async def close_server(server: Any) -> None:
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)


async def iterations(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def take_errors(loop_errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors = list(loop_errors)
    loop_errors.clear()
    return errors


ACCEPT_FAILED = "Error on transport creation for incoming connection"


def check_accept_failures(loop: Any, loop_errors: list[dict[str, Any]], count: int = 1) -> list[dict[str, Any]]:
    """Consume the handler calls of ``count`` failed server handshakes:
    asyncio reports them (``ACCEPT_FAILED``) in debug mode only."""
    errors = take_errors(loop_errors)
    assert [e["message"] for e in errors] == ([ACCEPT_FAILED] * count if loop.get_debug() else []), errors
    return errors


# ----- peers outside the loop under test


class ThreadPeer:
    """Runs ``body(sock)`` in a thread with a blocking socket: the accepted
    connection of a new listener on 127.0.0.1 (no ``port``), or a socket
    connected to ``port``. ``join()`` re-raises what the body raised and
    returns what it returned."""

    def __init__(self, body: Callable[[socket.socket], Any], *, port: int | None = None) -> None:
        self.body = body
        self.result: Any = None
        self.error: BaseException | None = None
        self.listener: socket.socket | None = None
        if port is None:
            self.listener = socket.create_server((HOST, 0))
            self.listener.settimeout(10)
            self.port = self.listener.getsockname()[1]
        else:
            self.port = port
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.listener is not None:
                sock, _ = self.listener.accept()
            else:
                sock = socket.create_connection((HOST, self.port), timeout=10)
            with sock:
                sock.settimeout(10)
                self.result = self.body(sock)
        except BaseException as exc:
            self.error = exc
        finally:
            if self.listener is not None:
                self.listener.close()

    async def join(self, timeout: float = 15.0) -> Any:
        async with asyncio.timeout(timeout):
            while self.thread.is_alive():
                await asyncio.sleep(0.005)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


def recv_until(sock: Any, end: bytes) -> bytes:
    """Blocking reads until the data ends with ``end``."""
    out = b""
    while not out.endswith(end):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"EOF after {out!r}")
        out += chunk
    return out


class MemoryTLSClient:
    """A TLS client as an ``SSLObject`` over two memory BIOs, driven by hand
    over a plain non-blocking socket through the loop's ``sock_*`` methods:
    the test decides how the records are cut before they reach the server."""

    def __init__(self, loop: Any, sock: socket.socket, ctx: ssl.SSLContext, hostname: str = HOSTNAME) -> None:
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)

    async def send(self, data: bytes, piece: int | None = None) -> None:
        """Send ``data`` in pieces of ``piece`` bytes, letting the loop run between them."""
        if piece is None:
            await self.loop.sock_sendall(self.sock, data)
            return
        for i in range(0, len(data), piece):
            await self.loop.sock_sendall(self.sock, data[i : i + piece])
            await iterations(2)

    async def _recv_into_bio(self) -> None:
        chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), 10)
        if not chunk:
            raise ConnectionError("EOF from the server")
        self.incoming.write(chunk)

    async def handshake(self, piece: int | None = None) -> None:
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                await self.send(self.outgoing.read(), piece)
                await self._recv_into_bio()
            else:
                await self.send(self.outgoing.read(), piece)
                return

    def records(self, data: bytes) -> bytes:
        """The TLS records carrying ``data``."""
        self.obj.write(data)
        return self.outgoing.read()

    async def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes of application data."""
        out = b""
        while len(out) < n:
            try:
                out += self.obj.read(n - len(out))
            except ssl.SSLWantReadError:
                await self._recv_into_bio()
        return out
