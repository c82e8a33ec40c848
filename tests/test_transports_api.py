"""Stream transports (TCP and unix sockets): extra info, types, write
buffer limits, reprs, fd reuse, ``sock=`` and ``connect_accepted_socket``,
the version-specific write details, and the server's accept path; both
loops (``loop`` fixture). Traces, flow control and errors:
tests/test_transports.py; unclosed transports and sockets:
tests/test_transports_unclosed.py.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys

import pytest
from transport_support import Recorder, close_server, pair

PY312 = sys.version_info >= (3, 12)


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


@pytest.mark.parametrize("asked_before", [False, True])
def test_extra_info_socket_after_close(loop, asked_before):
    # asyncio's _extra keeps the TransportSocket around the closed socket.
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t, st = cp.transport, sp.transport  # created with sock= / accepted by the server
        before = [t.get_extra_info("socket"), st.get_extra_info("socket")] if asked_before else [None, None]
        t.close()
        st.close()
        await cp.done
        await sp.done
        await close_server(server)
        after = [t.get_extra_info("socket"), st.get_extra_info("socket")]
        assert [t.get_extra_info("socket"), st.get_extra_info("socket")] == after  # the same objects
        assert t._sock is None and st._sock is None
        return [
            (
                type(s).__name__,
                s.fileno(),
                s.family,
                s.type,
                b is None or b is s,
                "fd=-1" in repr(s),
            )
            for s, b in zip(after, before, strict=True)
        ]

    kind = ("TransportSocket", -1, socket.AF_INET, socket.SOCK_STREAM, True, True)
    assert loop.run_until_complete(main()) == [kind, kind]


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


@needs_312
@pytest.mark.deviation("D-022")
def test_writelines_with_an_empty_chunk_never_finishes_closing(loop):
    async def main():
        server, sp, cp = await pair(loop, lambda: Recorder(loop), lambda: Recorder(loop))
        t = cp.transport
        t.writelines([b"hello", b""])
        t.close()
        try:
            await asyncio.wait_for(asyncio.shield(cp.done), 0.2)
            closed = True
        except TimeoutError:
            closed = False
        t.abort()
        await cp.done
        while len(sp.data) < 5:
            await asyncio.sleep(0.01)
        sp.transport.close()
        await sp.done
        await close_server(server)
        return closed, bytes(sp.data)

    assert loop.run_until_complete(main()) == (False, b"hello")


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


class CloseOnResume(Recorder):
    """Closes its transport from resume_writing(); counts connection_lost()."""

    def resume_writing(self):
        super().resume_writing()
        self.transport.close()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.events.append("lost")


@pytest.mark.deviation("D-023")
def test_close_from_resume_writing_reports_a_second_connection_lost(loop):
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(type(ctx.get("exception")).__name__))
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        transport, proto = await loop.connect_accepted_socket(lambda: CloseOnResume(loop), a)
        transport.write(b"x" * 1_000_000)
        got = 0
        while got < 1_000_000:
            await asyncio.sleep(0.001)
            try:
                got += len(b.recv(1 << 20))
            except BlockingIOError:
                pass
        await proto.done
        for _ in range(3):
            await asyncio.sleep(0)
        return proto.events.count("lost"), errors

    try:
        assert loop.run_until_complete(main()) == (1, ["AttributeError"])
    finally:
        a.close()
        b.close()


def test_close_from_resume_writing_while_sendfile_waits_for_the_buffer(loop, tmp_path):
    # sendfile() waits for the write buffer to drain; resume_writing() closes
    # the transport in the writer step that drains it. asyncio sets the
    # waiter's result, tears the transport down at once (setting the done
    # waiter's exception then raises InvalidStateError in that step) and
    # sendfile fails on the socket that is gone. The teardown the close
    # scheduled must not set the waiter's exception a second time (its other
    # report on asyncio is D-023's AttributeError).
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(type(ctx.get("exception")).__name__))
    path = tmp_path / "f"
    path.write_bytes(b"f" * 1000)
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        transport, proto = await loop.connect_accepted_socket(lambda: CloseOnResume(loop), a)
        transport.write(b"x" * 300_000)
        with open(path, "rb") as f:
            task = loop.create_task(loop.sendfile(transport, f, fallback=False))
            got = 0
            while not task.done():
                await asyncio.sleep(0.001)
                try:
                    got += len(b.recv(1 << 20))
                except BlockingIOError:
                    pass
            with pytest.raises(AttributeError):
                task.result()
        for _ in range(3):
            await asyncio.sleep(0)
        return got, proto.events.count("lost"), [e for e in errors if e != "AttributeError"]

    try:
        assert loop.run_until_complete(main()) == (300_000, 1, ["InvalidStateError"])
    finally:
        a.close()
        b.close()


def test_ensure_fd_no_transport_names_the_transport_using_the_fd(loop):
    """``_ensure_fd_no_transport()`` (run by the ``_make_*_transport`` methods on
    3.12+): asyncio's ``RuntimeError`` for an fd a live transport uses, given
    as the socket or as the number; asyncio's ``ValueError`` (``from None``)
    for an object whose ``fileno()`` is not a number; nothing once the
    transport is closed."""
    a, b = socket.socketpair()

    class NotANumber:
        def fileno(self):
            return "x"

    async def main():
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        seen = []
        for arg in (a, a.fileno()):
            try:
                loop._ensure_fd_no_transport(arg)
            except RuntimeError as e:
                seen.append(str(e) == f"File descriptor {arg!r} is used by transport {transport!r}")
        bad = NotANumber()
        try:
            loop._ensure_fd_no_transport(bad)
        except ValueError as e:
            seen.append((str(e) == f"Invalid file object: {bad!r}", e.__cause__, e.__suppress_context__))
        fd = a.fileno()
        transport.close()
        await asyncio.sleep(0)
        loop._ensure_fd_no_transport(fd)  # closed: no error
        loop._ensure_fd_no_transport(b)
        return seen

    try:
        assert loop.run_until_complete(main()) == [True, True, (True, None, True)]
    finally:
        b.close()
