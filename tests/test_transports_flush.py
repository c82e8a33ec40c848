"""Stream transports: what a protocol sees when queued data leaves.

ferroloop sends data queued during an iteration right before the next poll
(the pre-poll flush); asyncio sends it in the writer step after the poll. The
protocol must not tell the difference: until that step has run (resume the
protocol, finish a close or a write_eof), the data counts as still buffered.
Found by CPython's test_ssl (test_remote_shutdown_receives_trailing_data) on a
loaded machine: SSL's close_notify, written from resume_writing(), was lost
when close() ran between the flush and that step.

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
