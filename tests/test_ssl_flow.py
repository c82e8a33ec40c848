"""TLS transports: what the application protocol sees, on both loops
(``loop`` fixture).

A recording protocol (``ssl_support.Recorder``) logs the callbacks; traces
join consecutive ``data_received`` calls (how TCP cuts the stream is not
asyncio's to decide). Expected traces and reports are those of asyncio's
``SSLProtocol`` (the same in 3.11, 3.12 and 3.13):

- closing one side sends close_notify; the other side gets
  ``eof_received()`` and answers with its own close_notify, and both get
  ``connection_lost(None)`` (the closing side also gets ``eof_received()``
  when the answer arrives);
- ``pause_reading()`` holds decrypted data and a received close_notify until
  ``resume_reading()``;
- the write buffer size is the plaintext not yet encrypted plus the
  ciphertext not yet handed to the socket transport, and ``pause_writing()``
  and ``resume_writing()`` follow the limits on it;
- an exception from ``data_received`` goes to the exception handler as
  "Fatal error on SSL protocol" and to ``connection_lost``; one from
  ``eof_received`` as "Error calling eof_received()";
- writes after ``close()`` are dropped, and from the sixth one on each logs
  "SSL connection is closed".

Peers that must cut TLS records in a chosen way are an ``SSLObject`` over
memory BIOs on a plain socket (``ssl_support.MemoryTLSClient``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import sys

import pytest
from ssl_support import (
    CLOSED_WARNING,
    HOST,
    HOSTNAME,
    LOG_THRESHOLD,
    SSL_READ_HIGH,
    SSL_WRITE_HIGH,
    VERSIONS,
    MemoryTLSClient,
    Recorder,
    certs_fixture,  # noqa: F401  (the certs fixture)
    client_context,
    close_server,
    kinds,
    pattern,
    server_context,
    start_server,
    take_errors,
)

version_param = pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def pair(loop, certs, server_factory=None, client_factory=None, *, version=None, **server_kw):
    """(server, client transport, client protocol, server protocol), connected."""
    made = []

    def factory():
        p = (server_factory or (lambda: Recorder(loop)))()
        made.append(p)
        return p

    server, port = await start_server(loop, factory, server_context(certs), **server_kw)
    t, c = await loop.create_connection(
        client_factory or (lambda: Recorder(loop)),
        HOST,
        port,
        ssl=client_context(certs, version=version),
        server_hostname=HOSTNAME,
    )
    async with asyncio.timeout(10):
        while not made or getattr(made[0], "transport", None) is None:
            await asyncio.sleep(0.001)
    return server, t, c, made[0]


# ----- traces


@version_param
def test_echo_then_client_close_trace(loop, certs, version):
    """The client closes: the server sees eof_received, then
    connection_lost(None); the client sees the answering close_notify as
    eof_received before its own connection_lost(None)."""

    async def main():
        server, t, c, s = await pair(loop, certs, lambda: Recorder(loop, echo=True), version=version)
        t.write(b"hello ")
        t.writelines([b"over ", bytearray(b"TLS"), memoryview(b"!")])
        await c.until(lambda: c.data == b"hello over TLS!")
        closing = (t.is_closing(), s.transport.is_closing())
        t.close()
        closing += (t.is_closing(),)
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return c.trace, s.trace, closing

    ctrace, strace, closing = run(loop, main())
    assert strace == ["made", ("data", b"hello over TLS!"), "eof", ("lost", None)]
    assert ctrace == ["made", ("data", b"hello over TLS!"), "eof", ("lost", None)]
    assert closing == (False, False, True)


@version_param
def test_server_close_trace(loop, certs, version):
    """The server writes and closes: the data arrives before eof_received;
    the write buffer is flushed before close_notify."""
    payload = pattern(200_000, seed=3)

    async def main():
        server, _t, c, s = await pair(loop, certs, version=version)
        s.transport.write(payload)
        s.transport.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return c.trace, s.trace

    ctrace, strace = run(loop, main())
    assert ctrace == ["made", ("data", payload), "eof", ("lost", None)]
    assert strace == ["made", "eof", ("lost", None)]


class Greeter(Recorder):
    """Writes ``ready`` once connected: when the client has it, it has also
    read everything the server sent before (TLS 1.3 session tickets)."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.write(b"ready")


@version_param
def test_abort_sends_no_close_notify(loop, certs, version):
    """abort(): connection_lost(None) on this side, nothing else; what the
    socket transport already sent arrives, then end of file without
    close_notify, which asyncio's SSLProtocol treats like one
    (eof_received, then connection_lost(None))."""

    async def main():
        server, t, c, s = await pair(loop, certs, lambda: Greeter(loop), version=version)
        await c.until(lambda: c.data == b"ready")
        t.write(b"sent before abort")
        t.abort()
        closing = t.is_closing()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return closing, c.trace, s.trace

    closing, ctrace, strace = run(loop, main())
    assert closing is True
    assert ctrace == ["made", ("data", b"ready"), ("lost", None)]
    assert strace == ["made", ("data", b"sent before abort"), "eof", ("lost", None)]


# ----- reading: pause_reading / resume_reading


@version_param
def test_pause_reading_holds_pending_data(loop, certs, version):
    """While the client is paused, nothing is delivered: the records pile
    up in the TLS read buffer up to its high-water mark (then the socket
    transport stops reading); resume_reading delivers all of it, in order."""
    chunks = [pattern(64 * 1024, seed=i) for i in range(16)]

    async def main():
        server, t, c, s = await pair(loop, certs, version=version)
        limits = t.get_read_buffer_limits()
        t.pause_reading()
        paused = t.is_reading()
        for chunk in chunks:
            s.transport.write(chunk)
        s.transport.write(b"END")
        async with asyncio.timeout(10):
            while t.get_read_buffer_size() < limits[1]:
                await asyncio.sleep(0.002)
        for _ in range(10):
            await asyncio.sleep(0.002)
        held = list(c.events)
        t.resume_reading()
        resumed = t.is_reading()
        await c.until(lambda: c.data.endswith(b"END"))
        pending = t.get_read_buffer_size()
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return limits, paused, resumed, held, pending, c

    limits, paused, resumed, held, pending, c = run(loop, main())
    assert limits == (SSL_READ_HIGH // 4, SSL_READ_HIGH)
    assert (paused, resumed) == (False, True)
    assert held == ["made"]
    assert pending == 0
    assert c.data == b"".join(chunks) + b"END"


def test_pause_reading_holds_close_notify(loop, certs):
    """close_notify arriving while paused: neither the data nor
    eof_received nor connection_lost come before resume_reading."""

    async def main():
        server, t, c, s = await pair(loop, certs)
        t.pause_reading()
        s.transport.write(b"last words")
        s.transport.close()
        for _ in range(20):
            await asyncio.sleep(0.005)
        held = list(c.events)
        t.resume_reading()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return held, c.trace, s.trace

    held, ctrace, strace = run(loop, main())
    assert held == ["made"]
    assert ctrace == ["made", ("data", b"last words"), "eof", ("lost", None)]
    assert strace == ["made", "eof", ("lost", None)]


def test_pause_reading_from_data_received(loop, certs):
    """Pausing inside data_received: records that arrive later stay in the
    TLS read buffer until resume_reading, then come in order."""

    class PauseEach(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    async def main():
        server, t, c, s = await pair(loop, certs, client_factory=lambda: PauseEach(loop))
        s.transport.write(b"first")
        await c.until(lambda: c.nbytes == 5)
        reading = t.is_reading()
        for i in range(4):
            s.transport.write(b"msg%d" % i)
        async with asyncio.timeout(10):
            while t.get_read_buffer_size() == 0:
                await asyncio.sleep(0.002)
        for _ in range(10):
            await asyncio.sleep(0.002)
        held = list(c.events)
        t.resume_reading()
        await c.until(lambda: c.data.endswith(b"msg3"))
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return reading, held, c.trace

    reading, held, trace = run(loop, main())
    assert reading is False
    assert held == ["made", ("data", b"first")]
    assert trace == ["made", ("data", b"firstmsg0msg1msg2msg3"), "eof", ("lost", None)]


# ----- writing: flow control


def small_socket_buffers(*transports):
    """64 KiB kernel buffers under these transports (no autotuning), so that a
    reader that stops reading makes the writer's socket transport pause soon."""
    for tr in transports:
        sock = tr.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)


class Writer(Recorder):
    """Knows whether it may write (between pause_writing and resume_writing)."""

    def __init__(self, loop):
        super().__init__(loop)
        self.can_write = asyncio.Event()
        self.can_write.set()

    def pause_writing(self):
        super().pause_writing()
        self.can_write.clear()

    def resume_writing(self):
        super().resume_writing()
        self.can_write.set()


class SlowReader(Recorder):
    """Stops reading for 10 ms after each data_received: at most 256 KiB (a
    TLS read) per 10 ms, well below what the writer produces in any mode.
    (With 2 ms, 128 MB/s, a writer in debug mode on 3.11, whose wait_for
    makes a task per write, could keep under it and never be paused.)"""

    def data_received(self, data):
        super().data_received(data)
        self.transport.pause_reading()
        self.loop.call_later(0.01, self.transport.resume_reading)


@version_param
def test_write_flow_control_against_a_slow_reader(loop, certs, version):
    """8 MiB written in 64 KiB pieces, waiting whenever asked to, to a reader
    that pauses after each read: pause_writing comes at or above the
    high-water mark, resume_writing at or below the low one, alternately,
    and everything arrives in order."""
    total = 8 * 1024 * 1024
    piece = 64 * 1024
    payload = pattern(total, seed=5)

    async def main():
        server, t, c, s = await pair(
            loop, certs, lambda: SlowReader(loop), client_factory=lambda: Writer(loop), version=version
        )
        small_socket_buffers(t, s.transport)
        defaults = t.get_write_buffer_limits()
        t.set_write_buffer_limits(high=256 * 1024)
        limits = t.get_write_buffer_limits()
        sizes = []
        for i in range(0, total, piece):
            await asyncio.wait_for(c.can_write.wait(), 10)
            t.write(payload[i : i + piece])
            sizes.append(t.get_write_buffer_size())
        await s.until(lambda: s.nbytes >= total, timeout=25)
        final = t.get_write_buffer_size()
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return defaults, limits, sizes, final, c.events, s.data

    defaults, limits, sizes, final, events, received = run(loop, main(), timeout=45)
    assert defaults == (SSL_WRITE_HIGH // 4, SSL_WRITE_HIGH)
    assert limits == (64 * 1024, 256 * 1024)
    assert received == payload
    assert final == 0
    flow = [e for e in events if isinstance(e, tuple) and e[0] in ("pause", "resume")]
    assert flow and [e[0] for e in flow] == ["pause", "resume"] * (len(flow) // 2)
    assert all(size >= 256 * 1024 for kind, size in flow if kind == "pause")
    assert all(size <= 64 * 1024 for kind, size in flow if kind == "resume")
    assert max(sizes) >= 256 * 1024
    assert events[-1] == ("lost", None)


def test_write_buffer_limits(loop, certs):
    """asyncio's rules: high alone sets low to high // 4, low alone sets high
    to 4 * low, high < low raises. The size counts plaintext not yet
    encrypted plus ciphertext not yet given to the socket transport; new
    limits pause or resume the protocol at once."""

    async def main():
        server, t, c, s = await pair(loop, certs)
        got = []
        t.set_write_buffer_limits(high=1000)
        got.append(t.get_write_buffer_limits())
        t.set_write_buffer_limits(low=300)
        got.append(t.get_write_buffer_limits())
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            t.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=-1)
        got.append(t.get_write_buffer_limits())
        # High water 0: the empty buffer is at the mark, so pause_writing
        # comes at once; a write that all goes to the socket transport leaves
        # the buffer empty again, at the low mark (0): resume_writing.
        t.set_write_buffer_limits(high=0)
        zero = [list(c.events)]
        t.write(b"small")
        zero.append(list(c.events))
        # Fill the socket transport (the server does not read) until the
        # TLS layer keeps ciphertext.
        t.set_write_buffer_limits(high=1 << 30)
        small_socket_buffers(t, s.transport)
        s.transport.pause_reading()
        async with asyncio.timeout(10):
            while t.get_write_buffer_size() == 0:
                t.write(b"f" * (256 * 1024))
                await asyncio.sleep(0.005)
        size = t.get_write_buffer_size()
        t.write(b"z" * 1000)
        grown = t.get_write_buffer_size() - size
        size = t.get_write_buffer_size()
        before = len(c.events)
        t.set_write_buffer_limits(high=size + 1)
        steps = [c.events[before:]]
        t.set_write_buffer_limits(high=size)
        steps.append(c.events[before:])
        t.set_write_buffer_limits(high=4 * size)
        steps.append(c.events[before:])
        s.transport.resume_reading()
        await s.until(lambda: s.data.endswith(b"z" * 1000))
        final = t.get_write_buffer_size()
        t.close()
        await c.until_lost()
        await s.until_lost()
        await close_server(server)
        return got, zero, grown, size, steps, final

    got, zero, grown, size, steps, final = run(loop, main())
    assert got == [(250, 1000), (300, 1200), (300, 1200)]
    assert zero == [["made", ("pause", 0)], ["made", ("pause", 0), ("resume", 0)]]
    # 1000 bytes in one record: the record header, tag (and nonce) on top.
    assert 1000 < grown <= 1100
    assert steps == [[], [("pause", size)], [("pause", size), ("resume", size)]]
    assert final == 0


# ----- BufferedProtocol over TLS


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.size = size
        self.buf = bytearray(size)
        self.received = bytearray()
        self.updates = []
        self.events = []
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        self.updates.append(nbytes)
        self.received += self.buf[:nbytes]

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


@pytest.mark.parametrize(("bufsize", "total"), [(1, 3000), (1 << 20, 2 * 1024 * 1024)], ids=["1-byte", "1-MiB"])
def test_buffered_protocol_over_tls(loop, certs, bufsize, total):
    """The app protocol is a BufferedProtocol: each buffer_updated fills at
    most the buffer it gave (one byte at a time with a 1-byte buffer), and
    the bytes arrive in order."""
    payload = pattern(total, seed=9)

    async def main():
        server, _t, c, s = await pair(loop, certs, client_factory=lambda: Buffered(loop, bufsize))
        s.transport.write(payload)
        s.transport.close()
        await asyncio.wait_for(c.done, 20)
        await s.until_lost()
        await close_server(server)
        return c

    c = run(loop, main())
    assert bytes(c.received) == payload
    assert c.events == ["made", "eof", ("lost", None)]
    assert all(0 < n <= bufsize for n in c.updates)
    if bufsize == 1:
        assert len(c.updates) == total


# ----- records cut anywhere


@version_param
def test_records_arriving_byte_by_byte(loop, certs, version):
    """A client sending its handshake and its records one byte at a time:
    the server echoes exactly what was sent."""
    messages = [b"a", b"hello", pattern(20_000, seed=11), b"end"]

    async def main():
        servers = []

        def factory():
            servers.append(Recorder(loop, echo=True))
            return servers[-1]

        server, port = await start_server(loop, factory, server_context(certs))
        sock = socket.create_connection((HOST, port))
        sock.setblocking(False)
        tls = MemoryTLSClient(loop, sock, client_context(certs, version=version))
        await tls.handshake(piece=1)
        echoed = []
        for msg in messages:
            records = tls.records(msg)
            await tls.send(records, piece=1 if len(records) < 200 else 7)
            echoed.append(await tls.read(len(msg)))
        sock.close()
        await servers[0].until_lost()
        await close_server(server)
        return echoed, servers[0], tls.obj.version()

    echoed, s, got = run(loop, main())
    assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert echoed == messages
    assert s.data == b"".join(messages)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_vanishing_mid_record(loop, loop_errors, certs, how):
    """Half a record, then the peer closes (FIN) or resets (RST): the half
    record is never delivered; with FIN the server gets eof_received and
    connection_lost(None), with RST connection_lost(ConnectionResetError).
    Neither is reported to the exception handler."""

    async def main():
        servers = []

        def factory():
            servers.append(Recorder(loop))
            return servers[-1]

        server, port = await start_server(loop, factory, server_context(certs))
        sock = socket.create_connection((HOST, port))
        sock.setblocking(False)
        tls = MemoryTLSClient(loop, sock, client_context(certs))
        await tls.handshake()
        await tls.send(tls.records(b"whole"))
        while not servers or servers[0].nbytes < 5:
            await asyncio.sleep(0.002)
        s = servers[0]
        record = tls.records(b"never delivered")
        await tls.send(record[: len(record) // 2])
        await asyncio.sleep(0.02)
        if how == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)
        exc = await s.until_lost()
        sock.close()
        await close_server(server)
        return s.trace, exc

    trace, exc = run(loop, main())
    if how == "fin":
        assert trace == ["made", ("data", b"whole"), "eof", ("lost", None)]
    else:
        assert trace == ["made", ("data", b"whole"), ("lost", "ConnectionResetError")]
        assert type(exc) is ConnectionResetError
    assert take_errors(loop_errors) == []


# ----- errors in the app protocol and writes after close


def test_exception_in_data_received(loop, loop_errors, certs):
    """asyncio's "Fatal error on SSL protocol": the handler gets the message,
    the exception, the socket transport and the SSL protocol; the app
    protocol gets connection_lost(exc); the peer sees end of file."""
    boom = RuntimeError("boom in data_received")

    class Raiser(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise boom

    async def main():
        server, t, c, s = await pair(loop, certs, lambda: Raiser(loop))
        t.write(b"trigger")
        exc = await s.until_lost()
        await c.until_lost()
        await close_server(server)
        return exc, s.trace, kinds(c.trace)

    exc, strace, ckinds = run(loop, main())
    assert exc is boom
    assert strace == ["made", ("data", b"trigger"), ("lost", "RuntimeError")]
    assert ckinds == ["made", "eof", ("lost", None)]
    errors = take_errors(loop_errors)
    assert [sorted(e) for e in errors] == [["exception", "message", "protocol", "transport"]]
    assert errors[0]["message"] == "Fatal error on SSL protocol"
    assert errors[0]["exception"] is boom
    assert type(errors[0]["protocol"]).__name__ == "SSLProtocol"
    assert type(errors[0]["transport"]).__name__ == "_SelectorSocketTransport"


def test_exception_in_eof_received(loop, loop_errors, certs):
    boom = ValueError("boom in eof_received")

    class Raiser(Recorder):
        def eof_received(self):
            super().eof_received()
            raise boom

    async def main():
        server, t, c, s = await pair(loop, certs, lambda: Raiser(loop))
        t.close()
        exc = await s.until_lost()
        await c.until_lost()
        await close_server(server)
        return exc, s.trace

    exc, strace = run(loop, main())
    assert exc is boom
    assert strace == ["made", "eof", ("lost", "ValueError")]
    errors = take_errors(loop_errors)
    assert [(sorted(e), e["message"]) for e in errors] == [
        (["exception", "message", "protocol", "transport"], "Error calling eof_received()")
    ]
    assert errors[0]["exception"] is boom


def test_write_after_close(loop, caplog, certs):
    """Writes after close() raise nothing and send nothing; from the sixth
    one on, each logs "SSL connection is closed" (a warning). After
    connection_lost the count goes on from where it was."""

    def warnings_logged():
        found = [r for r in caplog.records if r.name == "asyncio" and r.getMessage() == CLOSED_WARNING]
        assert all(r.levelno == logging.WARNING for r in found)
        return len(found)

    async def main():
        server, t, c, s = await pair(loop, certs)
        t.write(b"before")
        t.close()
        counts = []
        for _ in range(LOG_THRESHOLD + 3):
            t.write(b"after close")
        counts.append(warnings_logged())
        t.write(b"")
        counts.append(warnings_logged())
        await c.until_lost()
        await s.until_lost()
        t.write(b"after lost")
        counts.append(warnings_logged())
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
            t.write("text")
        await close_server(server)
        return counts, s.trace

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        counts, strace = run(loop, main())
    assert counts == [3, 3, 4]
    assert strace == ["made", ("data", b"before"), "eof", ("lost", None)]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11's close() keeps the transport's writer")
@pytest.mark.deviation("D-024")
def test_close_notify_written_after_close_is_lost(impl, certs):
    # The transport fuzzer's case: 1.3 MB written, then the peer's
    # close_notify. SSLProtocol answers it and closes the socket transport
    # with data still queued; asyncio's close() has set the transport's
    # writer to None, so the close_notify written after it registers None:
    # "Exception in callback None()" at every iteration, the rest unsent.
    import fuzz_tls
    from fuzz_transport import TransportExample

    fuzz_tls.CONTEXTS[:] = [server_context(certs), client_context(certs)]
    steps = (("write", ("bytes", 1_000_000)), ("write", ("bytes", 300_000)), ("!unwrap",))
    rec = fuzz_tls.run_tls(impl, TransportExample(kind="tls", actions=(), eof_result=None, steps=steps))
    writer_gone = ("Exception in callback None()", ("raise", "TypeError", "'NoneType' object is not callable", None))
    assert rec["peer"][0] < 1_300_000
    assert writer_gone in rec["errors"]
