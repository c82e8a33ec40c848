"""Stream transports (TCP and unix sockets): protocol traces, flow control,
errors, and the details of write()/close()/abort().

Every test runs on asyncio and on ferroloop (``loop`` fixture) and asserts
what asyncio does; a recording protocol logs the protocol callbacks in order,
with received data concatenated (chunk sizes may differ, content and order
may not). Extra info, types, limits, reprs, fd reuse, server details:
tests/test_transports_api.py.
"""

from __future__ import annotations

import asyncio
import itertools
import mmap
import os
import socket
import sys

import pytest
from transport_support import BufferedRecorder, Recorder, close_server, pair, without_flow

PY312 = sys.version_info >= (3, 12)


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


def connection_lost_with_buffer(loop, buffer):
    """The exception a server's BufferedProtocol whose get_buffer() returns
    ``buffer`` gets in connection_lost once a byte arrives."""

    class Fixed(BufferedRecorder):
        def get_buffer(self, sizehint):
            return buffer

    async def main():
        server, sp, cp = await pair(loop, lambda: Fixed(loop, 1), lambda: Recorder(loop))
        cp.transport.write(b"x")
        exc = await sp.done
        cp.transport.close()
        await cp.done
        await close_server(server)
        return exc

    return loop.run_until_complete(main())


def test_buffered_protocol_empty_buffer_is_a_fatal_error(loop, loop_errors):
    exc = connection_lost_with_buffer(loop, bytearray())
    assert isinstance(exc, RuntimeError) and str(exc) == "get_buffer() returned an empty buffer"
    assert [c["message"] for c in loop_errors] == ["Fatal error: protocol.get_buffer() call failed."]
    loop_errors.clear()


def test_buffered_protocol_read_only_buffer_is_a_fatal_read_error(loop, loop_errors):
    # recv_into() refuses it with CPython's message, naming the C type as
    # its tp_name spells it ("mmap.mmap", not "mmap").
    ro = mmap.mmap(-1, 64, access=mmap.ACCESS_READ)
    try:
        exc = connection_lost_with_buffer(loop, ro)
    finally:
        ro.close()
    assert isinstance(exc, TypeError)
    assert str(exc) == "recv_into() argument 1 must be read-write bytes-like object, not mmap.mmap"
    assert [c["message"] for c in loop_errors] == ["Fatal read error on socket transport"]
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
