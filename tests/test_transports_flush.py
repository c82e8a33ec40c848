"""Stream transports: what a protocol sees when queued data leaves.

asyncio sends queued data only in the writer step, after the selector has
reported the socket writable; ferroloop registers the writer right before
the next poll and sends nothing earlier. Until that step has run (resume
the protocol, finish a close or a write_eof), the data is buffered.

- A close between the write and that step must still let resume_writing()
  write (SSL's close_notify does; found by CPython's test_ssl,
  test_remote_shutdown_receives_trailing_data, when ferroloop still sent
  queued data right before the poll).
- Room the peer makes is not used until the kernel calls the socket
  writable (a unix socket: once three quarters of its send buffer are
  free), so buffer sizes and resume_writing() come when asyncio's do.
- A peer that closes with data unread fails the reader first, as asyncio's
  order of callbacks has it (ECONNRESET; a send there would get EPIPE).
  The last two were found by the transport fuzzer (test_fuzz_transports.py).

Both loops, through the ``loop`` fixture.
"""

from __future__ import annotations

import asyncio
import socket


def _drain(sock: socket.socket) -> bytes:
    """What the socket has now (non-blocking; stops at EOF without consuming it twice)."""
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20, socket.MSG_PEEK)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += sock.recv(len(chunk))


class TrailerOnResume(asyncio.Protocol):
    """Writes a trailer from resume_writing(), as SSLProtocol writes close_notify."""

    def __init__(self, loop: asyncio.AbstractEventLoop, trailer: bool) -> None:
        self.events: list[str] = []
        self.lost = loop.create_future()
        self.trailer = trailer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")
        if self.trailer:
            self.transport.write(b"END")  # type: ignore[attr-defined]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(f"lost {exc!r}")
        self.lost.set_result(None)


def _paused_write_then_close(loop, size: int, close_how: str) -> tuple[list[str], bytes]:
    a, b = socket.socketpair()
    b.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)

    async def main() -> tuple[list[str], bytes]:
        trailer = close_how == "close"
        transport, proto = await loop.connect_accepted_socket(lambda: TrailerOnResume(loop, trailer), a)
        transport.set_write_buffer_limits(high=1024)
        got = bytearray()

        def step() -> None:
            transport.write(b"x" * size)  # fills the socket, queues the rest, pauses the protocol
            got.extend(_drain(b))  # the peer makes room for the rest: the next send takes all of it
            if close_how == "close":
                loop.call_soon(transport.close)
            else:
                loop.call_soon(transport.write_eof)

        loop.call_soon(step)
        eof = False
        while not eof:
            await asyncio.sleep(0.01)
            try:
                chunk = b.recv(1 << 20)
            except BlockingIOError:
                continue
            got.extend(chunk)
            eof = not chunk
        if close_how == "write_eof":
            transport.close()
        await proto.lost
        return proto.events, bytes(got)

    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        a.close()
        b.close()


def test_close_after_a_flush_still_resumes_the_protocol(loop):
    size = 200_000
    events, got = _paused_write_then_close(loop, size, "close")
    assert events == ["pause", "resume", "lost None"]
    assert got == b"x" * size + b"END"


def test_write_eof_after_a_flush_waits_for_the_writer_step(loop):
    size = 200_000
    events, got = _paused_write_then_close(loop, size, "write_eof")
    assert events == ["pause", "resume", "lost None"]
    assert got == b"x" * size  # then EOF


def _queued_write(loop, peer_action):
    """write() more than a unix socket takes, then peer_action(peer) in the
    same step; the buffer size after a few iterations and what the protocol saw."""
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        transport, proto = await loop.connect_accepted_socket(lambda: TrailerOnResume(loop, False), a)
        transport.write(b"x" * 1_000_000)
        before = transport.get_write_buffer_size()
        peer_action(b)
        for _ in range(3):
            await asyncio.sleep(0)
        after = transport.get_write_buffer_size()
        transport.abort()
        await proto.lost
        return before, after, proto.events

    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        a.close()
        b.close()


def test_room_the_peer_makes_waits_for_the_socket_to_be_writable(loop):
    # The peer takes 100 KB of the ~200 KB in flight: the socket has room
    # (a send would take some), but epoll does not call a unix socket
    # writable until three quarters of its send buffer are free, so
    # asyncio's writer does not run yet.
    before, after, events = _queued_write(loop, lambda peer: peer.recv(100_000))
    assert 0 < before < 1_000_000
    assert after == before
    assert events == ["pause", "lost None"]


def test_peer_closing_with_data_unread_fails_the_reader_first(loop):
    _, after, events = _queued_write(loop, lambda peer: peer.close())
    assert after == 0
    assert events == ["pause", "lost ConnectionResetError(104, 'Connection reset by peer')"]


def test_abort_with_data_queued_removes_the_writer_at_once(loop):
    # asyncio's write() adds the writer at once and abort() removes it;
    # ferroloop registers it only before the next poll, and an abort in
    # between must leave it idle just the same. (Found by the transport fuzzer.)
    a, b = socket.socketpair()

    async def main():
        transport, proto = await loop.connect_accepted_socket(lambda: TrailerOnResume(loop, False), a)
        transport.write(b"x" * 1_000_000)
        queued = repr(transport)
        transport.abort()
        aborted = repr(transport)
        await proto.lost
        return queued, aborted

    try:
        queued, aborted = loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        a.close()
        b.close()
    assert "write=<polling, bufsize=" in queued
    assert aborted.endswith("read=idle write=<idle, bufsize=0>>")
