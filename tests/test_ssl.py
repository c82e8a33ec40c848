"""TLS over stream transports: ``create_connection(ssl=...)``,
``create_server(ssl=...)``, ``start_tls`` and the streams API, on both loops
(``loop`` fixture).

Expected values are what asyncio's ``SSLProtocol`` (``asyncio.sslproto``,
the same state machine in 3.11, 3.12 and 3.13) produces: the exception types
and messages of failed handshakes, ``get_extra_info`` keys, ALPN results and
what each side of a client-certificate failure reports. OpenSSL's own texts
(verify messages, reasons) are the same for both loops; only the ``_ssl.c``
line number in ``str()`` of an ``SSLError`` changes with the Python version.
Certificates come from ``ssl_support`` (made once per session with the
``openssl`` command); peers that must not depend on the loop under test run
in a thread with a blocking ``ssl`` socket.

Parts of the handshake that asyncio reports only in debug mode (a server
whose handshake failed: "Error on transport creation for incoming
connection") are checked with ``loop.set_debug(True)``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from ssl_support import (
    HOST,
    HOSTNAME,
    VERSION_NAMES,
    VERSIONS,
    Recorder,
    ThreadPeer,
    certs_fixture,  # noqa: F401  (the certs fixture)
    check_accept_failures,
    client_context,
    close_server,
    pattern,
    recv_until,
    server_context,
    start_server,
    take_errors,
    verify_error_text,
)

version_param = pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def connect(loop, port, ctx, factory=None, **kw):
    kw.setdefault("server_hostname", HOSTNAME)
    return await loop.create_connection(factory or (lambda: Recorder(loop)), HOST, port, ssl=ctx, **kw)


class Collect:
    """A protocol factory keeping every protocol it made."""

    def __init__(self, loop, **kw):
        self.loop = loop
        self.kw = kw
        self.made = []

    def __call__(self):
        p = Recorder(self.loop, **self.kw)
        self.made.append(p)
        return p


# ----- data through TLS


@version_param
def test_echo_10_mib_both_ways(loop, certs, version):
    """10 MiB from the client to an echoing server and back, byte for byte."""
    size = 10 * 1024 * 1024
    payload = pattern(size, seed=1)

    async def main():
        servers = Collect(loop, echo=True)
        server, port = await start_server(loop, servers, server_context(certs))
        t, c = await connect(loop, port, client_context(certs, version=version))
        view = memoryview(payload)
        for i in range(0, size, 1 << 20):
            t.write(view[i : i + (1 << 20)])
        await c.until(lambda: c.nbytes >= size, timeout=25)
        s = servers.made[0]
        got_version = t.get_extra_info("ssl_object").version()
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return c, s, got_version

    c, s, got_version = run(loop, main(), timeout=40)
    assert got_version == VERSION_NAMES[version]
    assert s.data == payload
    assert c.data == payload
    for p in (c, s):
        assert [e for e in p.events if isinstance(e, str) or e[0] == "lost"] == ["made", "eof", ("lost", None)]
        flow = [e[0] for e in p.events if isinstance(e, tuple) and e[0] in ("pause", "resume")]
        assert flow == ["pause", "resume"] * (len(flow) // 2)


def test_hundred_concurrent_clients(loop, certs):
    n = 100

    async def client(port, ctx, i):
        t, c = await connect(loop, port, ctx)
        msg = f"client {i:03d} ".encode() * 50
        t.write(msg)
        await c.until(lambda: c.nbytes >= len(msg))
        t.close()
        await c.until_lost()
        return c.data == msg, c.trace[-1]

    async def main():
        servers = Collect(loop, echo=True)
        server, port = await start_server(loop, servers, server_context(certs), backlog=n)
        ctx = client_context(certs)
        results = await asyncio.gather(*(client(port, ctx, i) for i in range(n)))
        for s in servers.made:
            await s.until_lost()
        await close_server(server)
        return results, servers.made

    results, made = run(loop, main(), timeout=45)
    assert results == [(True, ("lost", None))] * n
    assert len(made) == n
    assert sorted(s.data for s in made) == [f"client {i:03d} ".encode() * 50 for i in range(n)]
    assert all([e if isinstance(e, str) else e[0] for e in s.trace] == ["made", "data", "eof", "lost"] for s in made)


@version_param
def test_tls_version_and_extra_info(loop, certs, version):
    """The client's maximum version decides; both ends report the keys
    asyncio fills in after the handshake, and those of the socket below."""

    async def main():
        servers = Collect(loop)
        sctx = server_context(certs)
        cctx = client_context(certs, version=version)
        server, port = await start_server(loop, servers, sctx)
        t, c = await connect(loop, port, cctx)
        while not servers.made or not servers.made[0].made.done():
            await asyncio.sleep(0.001)
        st = servers.made[0].transport
        info = {}
        for name, tr in (("client", t), ("server", st)):
            obj = tr.get_extra_info("ssl_object")
            sock = tr.get_extra_info("socket")
            info[name] = {
                "ssl_object": type(obj),
                "version": obj.version(),
                "cipher": tr.get_extra_info("cipher"),
                "obj_cipher": obj.cipher(),
                "compression": tr.get_extra_info("compression"),
                "peercert": tr.get_extra_info("peercert"),
                "sslcontext": tr.get_extra_info("sslcontext"),
                "socket_type": type(sock).__name__,
                "socket_family": (sock.family, sock.type),
                "sockname": tr.get_extra_info("sockname"),
                "peername": tr.get_extra_info("peername"),
                "missing": tr.get_extra_info("nope"),
                "default": tr.get_extra_info("nope", 42),
                "server_side": obj.server_side,
                "server_hostname": obj.server_hostname,
            }
        t.close()
        await c.until_lost()
        await servers.made[0].until_lost()
        await close_server(server)
        return info, sctx, cctx, port

    info, sctx, cctx, port = run(loop, main())
    cl, sv = info["client"], info["server"]
    name = VERSION_NAMES[version]
    for side in (cl, sv):
        assert side["ssl_object"] is ssl.SSLObject
        assert side["version"] == name
        assert side["cipher"] == side["obj_cipher"] and side["cipher"][1] == name
        assert side["compression"] is None
        assert side["socket_type"] == "TransportSocket"
        assert side["socket_family"] == (socket.AF_INET, socket.SOCK_STREAM)
        assert side["missing"] is None and side["default"] == 42
    assert cl["sslcontext"] is cctx and sv["sslcontext"] is sctx
    assert cl["server_side"] is False and cl["server_hostname"] == HOSTNAME
    assert sv["server_side"] is True and sv["server_hostname"] is None
    assert cl["peername"] == (HOST, port) and sv["sockname"] == (HOST, port)
    assert cl["sockname"] == sv["peername"]
    # The client verified the server's certificate; the server asked for none.
    assert cl["peercert"]["subject"] == ((("commonName", HOSTNAME),),)
    assert cl["peercert"]["issuer"] == ((("commonName", "ferroloop test CA"),),)
    assert cl["peercert"]["subjectAltName"] == (("DNS", HOSTNAME), ("IP Address", HOST))
    assert sv["peercert"] is None


# ----- verification failures


def test_wrong_hostname_is_rejected(loop, loop_errors, certs):
    async def main():
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs))
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await connect(loop, port, client_context(certs), server_hostname="wrong.example")
        await asyncio.sleep(0.05)
        await close_server(server)
        return ei.value, servers.made

    exc, made = run(loop, main())
    detail = "Hostname mismatch, certificate is not valid for 'wrong.example'."
    assert type(exc) is ssl.SSLCertVerificationError
    assert exc.verify_code == 62 and exc.verify_message == detail
    assert exc.reason == "CERTIFICATE_VERIFY_FAILED" and exc.library == "SSL"
    assert verify_error_text(detail).fullmatch(str(exc))
    # The server's handshake failed too: its protocol was made, never connected.
    assert [p.events for p in made] == [[]]
    check_accept_failures(loop, loop_errors)


@pytest.mark.parametrize(
    ("which", "code", "detail"),
    [("rogue_server", 20, "unable to get local issuer certificate"), ("self_signed", 18, "self-signed certificate")],
)
def test_untrusted_certificate_is_rejected(loop, loop_errors, certs, which, code, detail):
    async def main():
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs, which=which))
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await connect(loop, port, client_context(certs))
        await asyncio.sleep(0.05)
        await close_server(server)
        return ei.value, servers.made

    exc, made = run(loop, main())
    assert type(exc) is ssl.SSLCertVerificationError
    assert (exc.verify_code, exc.verify_message) == (code, detail)
    assert verify_error_text(detail).fullmatch(str(exc))
    assert [p.events for p in made] == [[]]
    check_accept_failures(loop, loop_errors)


def test_failed_server_handshake_is_reported_in_debug_mode_only(loop, loop_errors, certs):
    """A client that rejects the certificate aborts without an alert: the
    server's accept task fails with ``ConnectionResetError``, which asyncio
    reports to the handler only in debug mode."""

    async def attempt(port):
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(loop, port, client_context(certs), server_hostname="wrong.example")
        await asyncio.sleep(0.05)

    async def main():
        debug = loop.get_debug()
        server, port = await start_server(loop, Collect(loop), server_context(certs))
        loop.set_debug(False)
        await attempt(port)
        quiet = take_errors(loop_errors)
        loop.set_debug(True)
        await attempt(port)
        loop.set_debug(debug)
        await close_server(server)
        return quiet, take_errors(loop_errors)

    quiet, debug = run(loop, main())
    assert quiet == []
    assert [sorted(ctx) for ctx in debug] == [["exception", "message", "protocol", "transport"]]
    ctx = debug[0]
    assert ctx["message"] == "Error on transport creation for incoming connection"
    assert type(ctx["exception"]) is ConnectionResetError
    assert isinstance(ctx["protocol"], Recorder)


# ----- handshake timeout and close during the handshake


def test_handshake_timeout_on_the_client(loop, certs):
    """A server that accepts and never answers: asyncio aborts the
    connection when ``ssl_handshake_timeout`` expires."""
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    async def main():
        t0 = loop.time()
        with pytest.raises(ConnectionAbortedError) as ei:
            await connect(loop, port, client_context(certs), ssl_handshake_timeout=0.2)
        return ei.value, loop.time() - t0

    try:
        exc, elapsed = run(loop, main())
        conn, _ = listener.accept()
        conn.settimeout(5)
        hello = conn.recv(5)
        rest = b""
        while chunk := conn.recv(65536):
            rest += chunk
        conn.close()
    finally:
        listener.close()
    assert type(exc) is ConnectionAbortedError
    assert str(exc) == "SSL handshake is taking longer than 0.2 seconds: aborting the connection"
    assert exc.args == (str(exc),)
    assert 0.19 <= elapsed < 5
    # The ClientHello went out, then the connection closed without an alert.
    assert hello[:1] == b"\x16" and len(rest) == int.from_bytes(hello[3:5], "big")


def test_handshake_timeout_on_the_server(loop, loop_errors, certs):
    """A client that connects and sends nothing: the server closes the
    connection after ``ssl_handshake_timeout``; its protocol is never
    connected and (outside debug mode) nothing is reported."""

    async def main():
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs), ssl_handshake_timeout=0.2)
        sock = socket.create_connection((HOST, port))
        sock.setblocking(False)
        t0 = loop.time()
        data = await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
        elapsed = loop.time() - t0
        sock.close()
        await close_server(server)
        return data, elapsed, servers.made

    data, elapsed, made = run(loop, main())
    assert data == b""
    assert 0.19 <= elapsed < 5
    assert [p.events for p in made] == [[]]
    check_accept_failures(loop, loop_errors)


def test_cancelled_connect_closes_during_the_handshake(loop, certs):
    """Cancelling ``create_connection`` while the handshake waits for the
    server closes the transport: the server sees the ClientHello and then
    end of file (no alert, no close_notify); the protocol is never made."""

    async def main():
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        made = []
        task = loop.create_task(
            connect(loop, port, client_context(certs), factory=lambda: made.append(1) or Recorder(loop))
        )
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
        listener.close()
        hello = await asyncio.wait_for(loop.sock_recv(conn, 65536), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        tail = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(conn, 65536), 5):
            tail += chunk
        conn.close()
        return hello, tail, made

    hello, tail, made = run(loop, main())
    assert hello[:1] == b"\x16"
    assert tail == b""
    # The protocol factory ran; connection_made never did.
    assert made == [1]


def test_closing_the_transport_during_start_tls(loop, certs):
    """``start_tls`` hands the transport to its SSLProtocol; closing that
    transport while the handshake waits makes ``start_tls`` return
    ``None`` (asyncio wakes its waiter without an exception and has already
    dropped the TLS transport)."""

    async def main():
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        t, p = await loop.create_connection(lambda: Recorder(loop), HOST, port)
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
        listener.close()
        task = loop.create_task(loop.start_tls(t, p, client_context(certs), server_hostname=HOSTNAME))
        hello = await asyncio.wait_for(loop.sock_recv(conn, 65536), 5)
        t.close()
        result = await asyncio.wait_for(task, 5)
        tail = await asyncio.wait_for(loop.sock_recv(conn, 65536), 5)
        conn.close()
        await asyncio.sleep(0.01)
        return result, hello, tail, p.events, t.is_closing()

    result, hello, tail, events, closing = run(loop, main())
    assert result is None
    assert hello[:1] == b"\x16" and tail == b""
    assert events == ["made"]
    assert closing is True


def test_peer_closing_during_the_handshake(loop, loop_errors, certs):
    """Half a ClientHello, then end of file: the server's protocol is never
    made; the ConnectionResetError asyncio records is reported in debug mode only."""

    async def main():
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_context(certs).wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        record = outgoing.read()
        sock = socket.create_connection((HOST, port))
        sock.setblocking(False)
        await loop.sock_sendall(sock, record[: len(record) // 2])
        await asyncio.sleep(0.02)
        sock.shutdown(socket.SHUT_WR)
        tail = await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
        sock.close()
        await asyncio.sleep(0.02)
        await close_server(server)
        return tail, servers.made

    tail, made = run(loop, main())
    assert tail == b""
    assert [p.events for p in made] == [[]]
    check_accept_failures(loop, loop_errors)


# ----- start_tls


def test_start_tls_on_the_client_side(loop, certs):
    """A plain connection upgraded by the client, against a blocking
    ``ssl`` server in a thread."""
    sctx = server_context(certs)

    def server_body(sock):
        assert recv_until(sock, b"\r\n") == b"STARTTLS\r\n"
        sock.sendall(b"GO\r\n")
        with sctx.wrap_socket(sock, server_side=True) as tls:
            line = recv_until(tls, b"\n")
            tls.sendall(b"echo: " + line)
            version = tls.version()
            assert tls.recv(10) == b""  # close_notify from the client
            return line, version

    async def main():
        peer = ThreadPeer(server_body)
        t, p = await loop.create_connection(lambda: Recorder(loop), HOST, peer.port)
        t.write(b"STARTTLS\r\n")
        await p.until(lambda: p.data == b"GO\r\n")
        ctx = client_context(certs)
        tls = await loop.start_tls(t, p, ctx, server_hostname=HOSTNAME)
        info = (
            type(tls.get_extra_info("ssl_object")),
            tls.get_extra_info("sslcontext") is ctx,
            tls.get_extra_info("peercert")["subject"],
            tls.get_protocol() is p,
        )
        tls.write(b"over TLS\n")
        await p.until(lambda: p.data.endswith(b"echo: over TLS\n"))
        tls.close()
        await p.until_lost()
        return await peer.join(), info, p.trace, t.is_closing()

    (line, version), info, trace, raw_closing = run(loop, main())
    assert line == b"over TLS\n" and version == "TLSv1.3"
    assert info == (ssl.SSLObject, True, ((("commonName", HOSTNAME),),), True)
    # connection_made once (for the plain transport); the TLS data follows the plain data.
    assert trace == ["made", ("data", b"GO\r\necho: over TLS\n"), "eof", ("lost", None)]
    assert raw_closing is True


def test_start_tls_on_the_server_side(loop, certs):
    """A plain server that upgrades its connection, against a blocking
    ``ssl`` client in a thread."""
    cctx = client_context(certs)

    def client_body(sock):
        sock.sendall(b"STARTTLS\r\n")
        assert recv_until(sock, b"\r\n") == b"GO\r\n"
        with cctx.wrap_socket(sock, server_hostname=HOSTNAME) as tls:
            tls.sendall(b"hello over TLS\n")
            reply = recv_until(tls, b"\n")
            tls.unwrap()
            return reply

    class Upgrader(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if data == b"STARTTLS\r\n":
                self.transport.write(b"GO\r\n")
                self.upgrade = loop.create_task(
                    loop.start_tls(self.transport, self, server_context(certs), server_side=True)
                )

    async def main():
        protos = []
        server = await loop.create_server(lambda: protos.append(Upgrader(loop)) or protos[-1], HOST, 0)
        peer = ThreadPeer(client_body, port=server.sockets[0].getsockname()[1])
        while not protos or not hasattr(protos[0], "upgrade"):
            await asyncio.sleep(0.002)
        p = protos[0]
        tls = await asyncio.wait_for(p.upgrade, 10)
        info = (tls.get_extra_info("ssl_object").server_side, tls.get_extra_info("peercert"), tls.get_protocol() is p)
        await p.until(lambda: p.data.endswith(b"TLS\n"))
        tls.write(b"got " + p.data[len(b"STARTTLS\r\n") :])
        reply = await peer.join()
        await p.until_lost()
        await close_server(server)
        return reply, info, p.trace

    reply, info, trace = run(loop, main())
    assert reply == b"got hello over TLS\n"
    assert info == (True, None, True)
    assert trace == ["made", ("data", b"STARTTLS\r\nhello over TLS\n"), "eof", ("lost", None)]


def test_stream_writer_start_tls(loop, certs):
    """``StreamWriter.start_tls`` on the client and ``loop.start_tls`` on
    the server, both in the loop under test."""

    async def handle(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(server_context(certs))
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        assert writer.get_extra_info("ssl_object") is None
        await writer.start_tls(client_context(certs), server_hostname=HOSTNAME)
        version = writer.get_extra_info("ssl_object").version()
        writer.write(b"upgraded\n")
        line = await reader.readline()
        rest = await reader.read()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return version, line, rest

    assert run(loop, main()) == ("TLSv1.3", b"UPGRADED\n", b"")


# ----- ALPN and client certificates


@pytest.mark.parametrize(
    ("server_alpn", "client_alpn", "selected"),
    [
        (["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["h2"], None, None),
    ],
)
def test_alpn(loop, certs, server_alpn, client_alpn, selected):
    async def main():
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs, alpn=server_alpn))
        t, c = await connect(loop, port, client_context(certs, alpn=client_alpn))
        while not servers.made or not servers.made[0].made.done():
            await asyncio.sleep(0.001)
        s = servers.made[0]
        got = (
            t.get_extra_info("ssl_object").selected_alpn_protocol(),
            s.transport.get_extra_info("ssl_object").selected_alpn_protocol(),
        )
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return got

    assert run(loop, main()) == (selected, selected)


@version_param
def test_client_certificate_required_and_present(loop, certs, version):
    async def main():
        servers = Collect(loop, echo=True)
        server, port = await start_server(loop, servers, server_context(certs, client_cert=True))
        t, c = await connect(loop, port, client_context(certs, version=version, with_cert=True))
        t.write(b"ping")
        await c.until(lambda: c.data == b"ping")
        s = servers.made[0]
        peer = s.transport.get_extra_info("peercert")
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return peer, s.trace

    peer, trace = run(loop, main())
    assert peer["subject"] == ((("commonName", "ferroloop test client"),),)
    assert peer["issuer"] == ((("commonName", "ferroloop test CA"),),)
    assert trace == ["made", ("data", b"ping"), "eof", ("lost", None)]


def test_client_certificate_required_and_missing_tls12(loop, loop_errors, certs):
    """TLS 1.2: the server fails the handshake and aborts the connection
    without sending its alert; the client's handshake sees end of file
    (``ConnectionResetError``). Debug mode reports the server's failure."""

    async def main():
        debug = loop.get_debug()
        loop.set_debug(True)
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs, client_cert=True))
        with pytest.raises(ConnectionResetError) as ei:
            await connect(loop, port, client_context(certs, version=ssl.TLSVersion.TLSv1_2))
        await asyncio.sleep(0.05)
        await close_server(server)
        loop.set_debug(debug)
        return ei.value, servers.made

    exc, made = run(loop, main())
    assert type(exc) is ConnectionResetError
    assert [p.events for p in made] == [[]]
    errors = take_errors(loop_errors)
    assert [e["message"] for e in errors] == ["Error on transport creation for incoming connection"]
    assert type(errors[0]["exception"]) is ssl.SSLError
    assert errors[0]["exception"].reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


def test_client_certificate_required_and_missing_tls13(loop, loop_errors, certs):
    """TLS 1.3: the client's handshake completes before the server checks
    the (empty) certificate; the server then aborts without its alert, so
    the connected client sees end of file and a clean close."""

    async def main():
        debug = loop.get_debug()
        loop.set_debug(True)
        servers = Collect(loop)
        server, port = await start_server(loop, servers, server_context(certs, client_cert=True))
        t, c = await connect(loop, port, client_context(certs, version=ssl.TLSVersion.TLSv1_3))
        version = t.get_extra_info("ssl_object").version()
        exc = await c.until_lost()
        await asyncio.sleep(0.02)
        await close_server(server)
        loop.set_debug(debug)
        return version, exc, c.trace, servers.made

    version, exc, trace, made = run(loop, main())
    assert version == "TLSv1.3"
    assert exc is None and trace == ["made", "eof", ("lost", None)]
    assert [p.events for p in made] == [[]]
    errors = take_errors(loop_errors)
    assert [e["message"] for e in errors] == ["Error on transport creation for incoming connection"]
    assert errors[0]["exception"].reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


# ----- streams


@version_param
def test_streams_over_tls(loop, certs, version):
    """``start_server(ssl=...)`` and ``open_connection(ssl=...)`` with
    readline/readexactly; closing the writer sends close_notify, which the
    server's reader sees as end of file."""
    blob = pattern(300_000, seed=7)
    seen = []

    async def handle(reader, writer):
        hello = await reader.readline()
        size = int(await reader.readline())
        body = await reader.readexactly(size)
        writer.write(hello.upper())
        writer.write(body[::-1])
        await writer.drain()
        seen.append((hello, body == blob, await reader.read(), reader.at_eof()))
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0, ssl=server_context(certs))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client_context(certs, version=version), server_hostname=HOSTNAME
        )
        info = (writer.get_extra_info("ssl_object").version(), writer.can_write_eof())
        writer.write(b"hello\n")
        writer.write(b"%d\n" % len(blob))
        writer.write(blob)
        await writer.drain()
        line = await reader.readline()
        back = await reader.readexactly(len(blob))
        writer.close()
        await writer.wait_closed()
        while not seen:
            await asyncio.sleep(0.002)
        await close_server(server)
        return info, line, back

    info, line, back = run(loop, main())
    assert info == (VERSION_NAMES[version], False)
    assert line == b"HELLO\n"
    assert back == blob[::-1]
    assert seen == [(b"hello\n", True, b"", True)]


def test_stream_readexactly_sees_the_peer_close(loop, certs):
    """The server closes after half of what the client waits for: the client's
    readexactly raises IncompleteReadError with the partial data."""

    async def handle(reader, writer):
        writer.write(b"line one\nabc")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0, ssl=server_context(certs))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port, ssl=client_context(certs), server_hostname=HOSTNAME)
        line = await reader.readline()
        with pytest.raises(asyncio.IncompleteReadError) as ei:
            await reader.readexactly(10)
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return line, ei.value.partial, ei.value.expected

    assert run(loop, main()) == (b"line one\n", b"abc", 10)
