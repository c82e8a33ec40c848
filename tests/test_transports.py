"""Stream transports (TCP and unix sockets): protocol traces, flow control,
errors, extra info, and the details of write()/close()/abort().

Every test runs on asyncio and on ferroloop (``loop`` fixture) and asserts
what asyncio does; a recording protocol logs the protocol callbacks in order,
with received data concatenated (chunk sizes may differ, content and order
may not).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import os
import socket
import sys
import warnings
import weakref

import pytest

PY312 = sys.version_info >= (3, 12)


class Recorder(asyncio.Protocol):
    """Logs every protocol callback; data is concatenated."""

    def __init__(self, loop, *, eof_keep_open=False, pause_at=None):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.done = loop.create_future()
        self.eof_keep_open = eof_keep_open

    def _log(self, ev):
        if ev == "data" and self.events and self.events[-1] == "data":
            return
        self.events.append(ev)

    def connection_made(self, transport):
        self.transport = transport
        self._log("made")

    def data_received(self, data):
        assert type(data) is bytes
        self.data += data
        self._log("data")

    def eof_received(self):
        self._log("eof")
        return self.eof_keep_open

    def pause_writing(self):
        self._log("pause")

    def resume_writing(self):
        self._log("resume")

    def connection_lost(self, exc):
        self._log(("lost", type(exc).__name__ if exc is not None else None))
        if not self.done.done():
            self.done.set_result(exc)


def without_flow(events):
    out = []
    for e in events:
        if e in ("pause", "resume"):
            continue
        if e == "data" and out and out[-1] == "data":
            continue
        out.append(e)
    return out


async def pair(loop, server_proto, client_proto, family=socket.AF_INET):
    """A connected (server transport, client transport) pair on loopback."""
    made = loop.create_future()

    def factory():
        p = server_proto()
        loop.call_soon(lambda: made.done() or made.set_result(p))
        return p

    if family == socket.AF_UNIX:
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ferroloop-test-{os.getpid()}-{id(made)}.sock")
        server = await loop.create_unix_server(factory, path)
        _ct, cp = await loop.create_connection(client_proto, sock=_unix_client(path))
        os.unlink(path)
    else:
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _ct, cp = await loop.create_connection(client_proto, "127.0.0.1", port)
    sp = await made
    return server, sp, cp


def _unix_client(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    return s


async def close_server(server):
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_echo_trace_and_half_close(loop, family):
    class Echo(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.write(data)

    async def main():
        server, sp, cp = await pair(loop, lambda: Echo(loop), lambda: Recorder(loop), family)
        payload = bytes(range(256)) * 4000
        cp.transport.write(payload)
        cp.transport.write_eof()
        assert cp.transport.can_write_eof()
        await sp.done
        await cp.done
        await close_server(server)
        return sp, cp, payload

    sp, cp, payload = loop.run_until_complete(main())
    # Flow control depends on socket buffer sizes; the rest is fixed.
    assert without_flow(sp.events) == ["made", "data", "eof", ("lost", None)]
    assert without_flow(cp.events) == ["made", "data", "eof", ("lost", None)]
    assert bytes(sp.data) == payload and bytes(cp.data) == payload


def test_half_close_keep_open_server_still_writes(loop):
    class Server(Recorder):
        def eof_received(self):
            super().eof_received()
            self.transport.write(b"after eof")
            self.transport.close()
            return True

    async def main():
        server, sp, cp = await pair(loop, lambda: Server(loop), lambda: Recorder(loop))
        cp.transport.write(b"x")
        cp.transport.write_eof()
        await sp.done
        await cp.done
        await close_server(server)
        return sp, cp

    sp, cp = loop.run_until_complete(main())
    assert sp.events == ["made", "data", "eof", ("lost", None)]
    assert cp.events == ["made", "data", "eof", ("lost", None)]
    assert bytes(cp.data) == b"after eof"


def test_peer_reset_reports_connection_reset(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        sock = cp.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        cp.transport.abort()
        exc = await sp.done
        await cp.done
        await close_server(server)
        return sp, cp, exc

    sp, cp, exc = loop.run_until_complete(main())
    assert cp.events == ["made", ("lost", None)]
    assert sp.events == ["made", ("lost", "ConnectionResetError")]
    assert exc.errno == 104


def test_abort_drops_unsent_data_and_loses_connection_once(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        sp.transport.pause_reading()
        t = cp.transport
        t.write(b"x" * (16 * 1024 * 1024))
        assert t.get_write_buffer_size() > 0
        assert cp.events == ["made", "pause"]
        t.abort()
        assert t.is_closing()
        assert t.get_write_buffer_size() == 0
        t.abort()
        t.close()
        await cp.done
        sp.transport.resume_reading()
        await sp.done
        await close_server(server)
        return sp, cp

    sp, cp = loop.run_until_complete(main())
    assert cp.events == ["made", "pause", ("lost", None)]
    assert sp.events[0] == "made" and sp.events[-1][0] == "lost"


def test_pause_and_resume_reading_with_data_pending(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = sp.transport
        assert t.is_reading()
        t.pause_reading()
        assert not t.is_reading()
        t.pause_reading()  # idempotent
        cp.transport.write(b"queued while paused")
        for _ in range(20):
            await asyncio.sleep(0)
        before = bytes(sp.data)
        t.resume_reading()
        t.resume_reading()
        assert t.is_reading()
        while len(sp.data) < 19:
            await asyncio.sleep(0)
        cp.transport.close()
        await sp.done
        await close_server(server)
        return before, sp

    before, sp = loop.run_until_complete(main())
    assert before == b""
    assert bytes(sp.data) == b"queued while paused"
    assert sp.events == ["made", "data", "eof", ("lost", None)]


def test_pause_before_connection_made_keeps_transport_paused(loop):
    class PauseEarly(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        server, sp, cp = await pair(loop, lambda: PauseEarly(loop), lambda: Recorder(loop))
        cp.transport.write(b"hello")
        for _ in range(10):
            await asyncio.sleep(0)
        got = bytes(sp.data)
        sp.transport.resume_reading()
        while not sp.data:
            await asyncio.sleep(0)
        sp.transport.close()
        cp.transport.close()
        await sp.done
        await cp.done
        await close_server(server)
        return got, sp

    got, sp = loop.run_until_complete(main())
    assert got == b""
    assert bytes(sp.data) == b"hello"


def test_64_mib_through_a_slow_reader_crosses_the_marks_both_ways(loop):
    size = 64 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)

    class Writer(Recorder):
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

    class Slow(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()
            self.loop.call_later(0.0005, self.transport.resume_reading)

    async def main():
        server, sp, cp = await pair(loop, lambda: Slow(loop), lambda: Writer(loop))
        t = cp.transport
        t.set_write_buffer_limits(high=256 * 1024)
        assert t.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
        sent = 0
        while sent < size:
            await cp.can_write.wait()
            t.write(chunk)
            sent += len(chunk)
        t.write_eof()
        while len(sp.data) < size:
            await asyncio.sleep(0.01)
        t.close()
        await cp.done
        await sp.done
        await close_server(server)
        return sp, cp

    sp, cp = loop.run_until_complete(main())
    assert len(sp.data) == size
    assert bytes(sp.data) == chunk * 64
    pauses = cp.events.count("pause")
    assert pauses >= 2 and cp.events.count("resume") >= pauses - 1
    flow = [e for e in cp.events if e in ("pause", "resume")]
    assert all(a != b for a, b in itertools.pairwise(flow)), "pause/resume must alternate"
    assert flow[0] == "pause"


def test_thousand_concurrent_connections(loop):
    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    async def client(port, i):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        msg = f"client {i} ".encode() * 50
        w.write(msg)
        got = await r.readexactly(len(msg))
        w.close()
        await w.wait_closed()
        return got == msg

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1000)
        port = server.sockets[0].getsockname()[1]
        results = await asyncio.gather(*(client(port, i) for i in range(1000)))
        await close_server(server)
        return results

    assert all(loop.run_until_complete(main()))


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.size = size
        self.buf = bytearray(size)
        self.data = bytearray()
        self.events = []
        self.done = loop.create_future()

    def connection_made(self, t):
        self.transport = t
        self.events.append("made")

    def get_buffer(self, sizehint):
        assert sizehint == -1
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= self.size
        self.data += self.buf[:nbytes]
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)


@pytest.mark.parametrize("size", [1, 4 * 1024 * 1024])
def test_buffered_protocol_reads_into_the_protocols_buffer(loop, size):
    payload = os.urandom(200_000)

    async def main():
        server, sp, cp = await pair(loop, lambda: BufferedRecorder(loop, size), lambda: Recorder(loop))
        cp.transport.write(payload)
        cp.transport.close()
        await sp.done
        await cp.done
        await close_server(server)
        return sp

    sp = loop.run_until_complete(main())
    assert bytes(sp.data) == payload
    assert sp.events == ["made", "data", "eof", "lost"]


def test_buffered_protocol_empty_buffer_is_a_fatal_error(loop, loop_errors):
    class Empty(BufferedRecorder):
        def get_buffer(self, sizehint):
            return bytearray()

    async def main():
        server, sp, cp = await pair(loop, lambda: Empty(loop, 1), lambda: Recorder(loop))
        cp.transport.write(b"x")
        exc = await sp.done
        cp.transport.close()
        await cp.done
        await close_server(server)
        return exc

    exc = loop.run_until_complete(main())
    assert isinstance(exc, RuntimeError) and str(exc) == "get_buffer() returned an empty buffer"
    assert [c["message"] for c in loop_errors] == ["Fatal error: protocol.get_buffer() call failed."]
    loop_errors.clear()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("data_received", "Fatal error: protocol.data_received() call failed."),
        ("eof_received", "Fatal error: protocol.eof_received() call failed."),
    ],
)
def test_exception_in_protocol_callback_is_fatal(loop, loop_errors, where, message):
    class Boom(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if where == "data_received":
                raise ZeroDivisionError("boom")

        def eof_received(self):
            super().eof_received()
            if where == "eof_received":
                raise ZeroDivisionError("boom")

    async def main():
        server, sp, cp = await pair(loop, lambda: Boom(loop), lambda: Recorder(loop))
        cp.transport.write(b"x")
        cp.transport.write_eof()
        exc = await sp.done
        cp.transport.close()
        await cp.done
        await close_server(server)
        return sp, exc

    sp, exc = loop.run_until_complete(main())
    assert isinstance(exc, ZeroDivisionError)
    assert sp.events[-1] == ("lost", "ZeroDivisionError")
    assert len(loop_errors) == 1
    ctx = loop_errors[0]
    assert ctx["message"] == message
    assert ctx["exception"] is exc
    assert ctx["protocol"] is sp and ctx["transport"] is sp.transport
    loop_errors.clear()


def test_exception_in_connection_made_goes_to_the_handler(loop, loop_errors):
    class Boom(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("made")

    async def main():
        server, sp, cp = await pair(loop, lambda: Boom(loop), lambda: Recorder(loop))
        cp.transport.write(b"still read")
        while not sp.data:
            await asyncio.sleep(0)
        sp.transport.close()
        await cp.done
        await close_server(server)
        return sp

    sp = loop.run_until_complete(main())
    assert bytes(sp.data) == b"still read"
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"].startswith("Exception in callback")
    assert "connection_made" in loop_errors[0]["message"]
    assert isinstance(loop_errors[0]["exception"], ZeroDivisionError)
    loop_errors.clear()


def test_close_inside_connection_made(loop):
    class CloseAtOnce(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"bye")
            transport.close()
            assert transport.is_closing()

    async def main():
        server, sp, cp = await pair(loop, lambda: CloseAtOnce(loop), lambda: Recorder(loop))
        await sp.done
        await cp.done
        await close_server(server)
        return sp, cp

    sp, cp = loop.run_until_complete(main())
    assert sp.events == ["made", ("lost", None)]
    assert cp.events == ["made", "data", "eof", ("lost", None)]
    assert bytes(cp.data) == b"bye"


def test_connection_lost_runs_on_a_later_iteration(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        order = []
        t = cp.transport
        t.close()
        order.append(("after close", list(cp.events)))
        await asyncio.sleep(0)
        order.append(("next", list(cp.events)))
        t.close()  # second close is a no-op
        sp.transport.close()
        await sp.done
        await close_server(server)
        return order

    order = loop.run_until_complete(main())
    assert order == [("after close", ["made"]), ("next", ["made", ("lost", None)])]


def test_write_after_close_is_dropped_and_warns_after_threshold(loop, caplog):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        t.close()
        await cp.done
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(6):
                t.write(b"lost")
        sp.transport.close()
        await sp.done
        await close_server(server)

    loop.run_until_complete(main())
    warnings_logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert warnings_logged == ["socket.send() raised exception."] * 2


def test_write_argument_checks(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        errors = []
        for bad in ["str", 1, None, [b"x"]]:
            with pytest.raises(TypeError) as ei:
                t.write(bad)
            errors.append(str(ei.value))
        t.write(b"")
        t.write(bytearray())
        t.write_eof()
        t.write_eof()
        with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
            t.write(b"x")
        if PY312:
            with pytest.raises(RuntimeError, match=r"Cannot call writelines\(\) after write_eof\(\)"):
                t.writelines([b"x"])
        t.close()
        sp.transport.close()
        await cp.done
        await sp.done
        await close_server(server)
        return errors

    errors = loop.run_until_complete(main())
    assert errors == [
        "data argument must be a bytes-like object, not 'str'",
        "data argument must be a bytes-like object, not 'int'",
        "data argument must be a bytes-like object, not 'NoneType'",
        "data argument must be a bytes-like object, not 'list'",
    ]


def test_write_accepts_bytearray_memoryview_and_writelines(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        t.write(bytearray(b"ba-"))
        t.write(memoryview(b"xmvx")[1:3])
        t.writelines([b"l1-", bytearray(b"l2-"), memoryview(b"l3")])
        t.writelines([])
        t.write_eof()
        await sp.done
        cp.transport.close()
        await cp.done
        await close_server(server)
        return bytes(sp.data)

    assert loop.run_until_complete(main()) == b"ba-mvl1-l2-l3"


def test_queued_bytearray_is_copied_exactly_when_asyncio_copies(loop):
    """3.11 copies a queued bytearray; 3.12+ queues the caller's buffer."""

    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        sp.transport.pause_reading()
        t = cp.transport
        t.write(b"x" * (8 * 1024 * 1024))  # fill the socket: later writes queue
        buf = bytearray(b"before")
        t.write(buf)
        buf[:] = b"AFTER!"
        t.write_eof()
        sp.transport.resume_reading()
        await sp.done
        t.close()
        await cp.done
        await close_server(server)
        return bytes(sp.data[-6:])

    tail = loop.run_until_complete(main())
    assert tail == (b"AFTER!" if PY312 else b"before")


def test_extra_info(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t, st = cp.transport, sp.transport
        info = {
            "sockname": t.get_extra_info("sockname"),
            "peername": t.get_extra_info("peername"),
            "server_peer": st.get_extra_info("peername"),
            "server_sock": st.get_extra_info("sockname"),
            "missing": t.get_extra_info("nope"),
            "default": t.get_extra_info("nope", 42),
            "default_kw": t.get_extra_info("nope", default=43),
        }
        sock = t.get_extra_info("socket")
        assert type(sock).__name__ == "TransportSocket"
        assert t.get_extra_info("socket") is sock
        assert sock.fileno() >= 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        ssock = st.get_extra_info("socket")
        assert ssock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert ssock.gettimeout() == 0
        t.close()
        st.close()
        await cp.done
        await sp.done
        # Taken at creation: still there after close.
        info["after_close"] = t.get_extra_info("sockname")
        await close_server(server)
        return info

    info = loop.run_until_complete(main())
    assert info["sockname"][0] == "127.0.0.1" and info["peername"] == info["server_sock"]
    assert info["server_peer"] == info["sockname"]
    assert info["missing"] is None and info["default"] == 42 and info["default_kw"] == 43
    assert info["after_close"] == info["sockname"]


def test_unix_extra_info(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop), socket.AF_UNIX)
        info = (
            cp.transport.get_extra_info("sockname"),
            cp.transport.get_extra_info("peername"),
            sp.transport.get_extra_info("peername"),
        )
        cp.transport.close()
        sp.transport.close()
        await cp.done
        await sp.done
        await close_server(server)
        return info

    sockname, peername, server_peer = loop.run_until_complete(main())
    assert sockname == "" and server_peer == ""
    assert peername.endswith(".sock")


def test_transport_types_and_protocol_swap(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        assert isinstance(t, asyncio.Transport)
        assert isinstance(t, asyncio.ReadTransport) and isinstance(t, asyncio.WriteTransport)
        assert t.get_protocol() is cp
        other = Recorder(loop)
        t.set_protocol(other)
        assert t.get_protocol() is other
        sp.transport.write(b"to the new protocol")
        sp.transport.close()
        await other.done
        t.close()
        await sp.done
        await close_server(server)
        return t, other, cp

    t, other, cp = loop.run_until_complete(main())
    assert bytes(other.data) == b"to the new protocol" and cp.data == b""
    assert t.get_protocol() is None  # dropped after connection_lost


def test_write_buffer_limits_checks(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.set_write_buffer_limits(low=1000)
        assert t.get_write_buffer_limits() == (1000, 4000)
        t.set_write_buffer_limits(high=100)
        assert t.get_write_buffer_limits() == (25, 100)
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            t.set_write_buffer_limits(high=1, low=2)
        t.set_write_buffer_limits(0, 0)
        assert t.get_write_buffer_limits() == (0, 0)
        t.set_write_buffer_limits()
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.close()
        sp.transport.close()
        await cp.done
        await sp.done
        await close_server(server)

    loop.run_until_complete(main())


def test_repr(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        fd = t.get_extra_info("socket").fileno()
        open_repr = repr(t)
        t.close()
        closing_repr = repr(t)
        await cp.done
        closed_repr = repr(t)
        sp.transport.close()
        await sp.done
        await close_server(server)
        return fd, open_repr, closing_repr, closed_repr

    fd, open_repr, closing_repr, closed_repr = loop.run_until_complete(main())
    assert open_repr == f"<_SelectorSocketTransport fd={fd} read=polling write=<idle, bufsize=0>>"
    assert closing_repr == f"<_SelectorSocketTransport closing fd={fd} read=idle write=<idle, bufsize=0>>"
    assert closed_repr == f"<_SelectorSocketTransport closed fd={fd}>"


def test_fd_reused_after_close_reaches_only_the_new_transport(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        fd = cp.transport.get_extra_info("socket").fileno()
        cp.transport.close()
        await cp.done
        port = server.sockets[0].getsockname()[1]
        # The next socket gets the same number; the old transport must stay quiet.
        t2, p2 = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        reused = t2.get_extra_info("socket").fileno() == fd
        t2.write(b"new")
        t2.write_eof()
        await sp.done
        t2.close()
        await p2.done
        await close_server(server)
        return reused, cp, p2

    reused, cp, p2 = loop.run_until_complete(main())
    assert reused
    assert cp.events == ["made", ("lost", None)]
    assert p2.events == ["made", "eof", ("lost", None)] or p2.events == ["made", ("lost", None)]


def test_add_reader_on_a_transport_fd_is_refused(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        fd = cp.transport.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match=f"File descriptor {fd} is used by transport"):
            loop.add_reader(fd, lambda: None)
        cp.transport.close()
        sp.transport.close()
        await cp.done
        await sp.done
        await close_server(server)

    loop.run_until_complete(main())


def test_unclosed_transport_warns_and_closes_its_socket(loop):
    async def main():
        a, b = socket.socketpair()
        t, _p = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        t.pause_reading()  # nothing registered: only we hold the transport
        fd = a.fileno()
        b.close()
        return weakref.ref(t), fd, a

    ref, _fd, sock = loop.run_until_complete(main())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            gc.collect()
    assert ref() is None
    msgs = [str(x.message) for x in w if issubclass(x.category, ResourceWarning)]
    assert any(m.startswith("unclosed transport <_SelectorSocketTransport") for m in msgs), msgs
    assert sock.fileno() == -1


def test_connect_accepted_socket_and_sock_argument(loop):
    async def main():
        a, b = socket.socketpair()
        t, p = await loop.connect_accepted_socket(lambda: Recorder(loop, eof_keep_open=True), a)
        assert isinstance(t, asyncio.Transport)
        b.sendall(b"hi")
        b.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.05)
        t.write(b"back")
        t.close()
        await p.done
        got = b.recv(100)
        b.close()
        return p, got, a

    p, got, a = loop.run_until_complete(main())
    assert p.events == ["made", "data", "eof", ("lost", None)]
    assert got == b"back"
    assert a.fileno() == -1


needs_312 = pytest.mark.skipif(not PY312, reason="3.11 copies queued data and joins writelines()")


@needs_312
@pytest.mark.deviation("D-003")
def test_queued_bytearray_can_be_resized(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        sp.transport.pause_reading()
        t = cp.transport
        t.write(b"x" * (8 * 1024 * 1024))
        buf = bytearray(b"queued")
        t.write(buf)
        try:
            buf.extend(b"!")  # asyncio queued the object itself: resizing is allowed
        finally:
            t.abort()
            sp.transport.abort()
            await cp.done
            await sp.done
            await close_server(server)

    loop.run_until_complete(main())


@needs_312
@pytest.mark.deviation("D-004")
def test_writelines_after_close_raises_like_asyncio(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        t.close()
        try:
            with pytest.raises(TypeError):
                t.writelines([b"late"])
        finally:
            await cp.done
            sp.transport.close()
            await sp.done
            await close_server(server)

    loop.run_until_complete(main())


@needs_312
@pytest.mark.deviation("D-005")
def test_writelines_does_not_pause_the_protocol(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        sp.transport.pause_reading()
        t = cp.transport
        t.writelines([b"x" * (16 * 1024 * 1024)])
        events = list(cp.events)
        t.abort()
        sp.transport.abort()
        await cp.done
        await sp.done
        await close_server(server)
        return events

    assert loop.run_until_complete(main()) == ["made"]


def test_slow_data_received_is_reported_in_debug_mode(loop, caplog):
    import time

    class Slow(Recorder):
        def data_received(self, data):
            super().data_received(data)
            time.sleep(0.05)

    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def main():
        server, sp, cp = await pair(loop, lambda: Slow(loop), lambda: Recorder(loop))
        with caplog.at_level("WARNING", logger="asyncio"):
            cp.transport.write(b"x")
            while not sp.data:
                await asyncio.sleep(0.01)
        cp.transport.close()
        sp.transport.close()
        await cp.done
        await sp.done
        await close_server(server)

    try:
        loop.run_until_complete(main())
    finally:
        loop.set_debug(False)
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing <Handle")]
    assert any("_SelectorSocketTransport._read_ready()" in m and " took " in m for m in slow), slow


@pytest.mark.deviation("D-007")
def test_transport_accepts_new_attributes(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        try:
            cp.transport.user_tag = "mine"  # asyncio's transports have a __dict__
            return cp.transport.user_tag
        finally:
            cp.transport.close()
            sp.transport.close()
            await cp.done
            await sp.done
            await close_server(server)

    assert loop.run_until_complete(main()) == "mine"


@pytest.mark.deviation("D-008")
def test_transport_is_asyncios_private_class(loop):
    from asyncio import selector_events

    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        try:
            return isinstance(cp.transport, selector_events._SelectorSocketTransport)
        finally:
            cp.transport.close()
            sp.transport.close()
            await cp.done
            await sp.done
            await close_server(server)

    assert loop.run_until_complete(main())


def test_each_data_received_gets_its_own_intact_bytes(loop):
    # Chunks of similar sizes, one read each; the server keeps some chunks,
    # drops others, hashes each (a cached hash must never go stale) and
    # echoes a digest. Every kept chunk must still hold what it received.
    sizes = [1000 + (i * 37) % 900 for i in range(300)]
    chunks = [bytes([i % 251]) * n for i, n in enumerate(sizes)]

    class Server(asyncio.Protocol):
        def __init__(self):
            self.kept = []
            self.hashes = []

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.hashes.append((hash(data), bytearray(data)))
            if len(self.hashes) % 3 == 0:
                self.kept.append(data)
            self.transport.write(b"%d;" % len(data))

    class Client(asyncio.Protocol):
        def __init__(self):
            self.acks = loop.create_future()
            self.buf = b""

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.buf += data
            if not self.acks.done():
                self.acks.set_result(None)

    async def main():
        server, sp, cp = await pair(loop, Server, Client)
        try:
            for c in chunks:
                cp.acks = loop.create_future()
                cp.transport.write(c)
                await cp.acks
                while cp.buf.count(b";") < 1:
                    cp.acks = loop.create_future()
                    await cp.acks
                cp.buf = b""
            return sp.kept, sp.hashes
        finally:
            cp.transport.close()
            sp.transport.close()
            await close_server(server)

    kept, hashes = loop.run_until_complete(main())
    got = b"".join(bytes(copy) for _, copy in hashes)
    assert got == b"".join(chunks)
    assert all(h == hash(bytes(copy)) for h, copy in hashes)
    expect_kept = [bytes(copy) for i, (_, copy) in enumerate(hashes) if (i + 1) % 3 == 0]
    assert kept == expect_kept
    assert all(type(k) is bytes for k in kept)


def test_server_close_with_an_accept_queued(loop):
    """A server closed in the iteration whose poll found a connection waiting.

    ``Server.close()`` runs before the accept the poll queued for the listening
    socket: asyncio cancels that accept with the reader, so the connection is
    never accepted (gunicorn workers leaving under load do this).
    """
    made = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)

    async def main():
        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            # The connection is pending: the next poll reports the listener
            # readable, after this callback is already in the ready queue.
            loop.call_soon(server.close)
            await asyncio.sleep(0)
            await server.wait_closed()
            await asyncio.sleep(0.05)

    loop.run_until_complete(main())
    assert made == []


def test_accept_error_goes_to_the_exception_handler(loop, loop_errors):
    # accept() on a listening socket shut down for reading fails with EINVAL:
    # asyncio's _accept_connection re-raises it into its handle, which reports it.
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        server.sockets[0]._sock.shutdown(socket.SHUT_RD)
        for _ in range(3):
            await asyncio.sleep(0)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    assert loop_errors
    for ctx in loop_errors:
        assert ctx["message"].startswith("Exception in callback BaseSelectorEventLoop._accept_connection(")
        assert isinstance(ctx["exception"], OSError) and ctx["exception"].errno == errno.EINVAL
        assert "handle" in ctx
    loop_errors.clear()
