"""The transport fuzzer's pipe harness: a ``fuzz_transport.Run`` for the
transports of ``connect_read_pipe`` and ``connect_write_pipe``, the peer
holding the other end. The kind names the direction and what the "pipe" is:
an ``os.pipe()``, a FIFO, one end of a unix socket pair (accepted as a pipe
by asyncio), ``/dev/null`` (a character device: the peer's actions touch
another ``/dev/null``), or a regular file (refused with asyncio's
``ValueError``). See test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from typing import Any

from fuzz_transport import BufferedProtocol, Protocol, Run, TransportExample, exc


class PipeEnd:
    """The peer's end of the pipe, with the socket methods ``Run`` uses."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    def setblocking(self, flag: bool) -> None:
        os.set_blocking(self.fd, flag)

    def send(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def recv(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def close(self) -> None:
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1


class PipeRun(Run):
    def pair(self) -> tuple[Any, Any]:
        reader = self.example.kind.startswith("read-")
        what = self.example.kind.split("-", 1)[1]
        mode = "rb" if reader else "wb"
        if what == "pipe":
            r, w = os.pipe()
        elif what == "fifo":
            self.tmp = tempfile.TemporaryDirectory()
            path = os.path.join(self.tmp.name, "fifo")
            os.mkfifo(path)
            r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        elif what == "socket":
            a, b = socket.socketpair()
            return (a, b) if reader else (b, a)  # the transport closes its end
        elif what == "chardev":
            r = os.open(os.devnull, os.O_RDONLY)
            w = os.open(os.devnull, os.O_WRONLY)
        else:  # a regular file
            self.tmp = tempfile.TemporaryDirectory()
            path = os.path.join(self.tmp.name, "file")
            with open(path, "wb") as f:
                f.write(b"data")
            r = os.open(path, os.O_RDONLY)
            w = os.open(path, os.O_WRONLY)
        if reader:
            return open(r, mode, buffering=0), PipeEnd(w)  # the transport closes it
        return open(w, mode, buffering=0), PipeEnd(r)

    async def step(self, s: tuple[Any, ...]) -> Any:
        if s[0] == "get_extra_info" and s[1] == "pipe":
            return type(self.transport.get_extra_info("pipe")).__name__
        return await super().step(s)

    async def main(self, pipe: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        factory = BufferedProtocol if self.example.buffered else Protocol
        connect = loop.connect_read_pipe if self.example.kind.startswith("read-") else loop.connect_write_pipe
        try:
            await connect(lambda: factory(self), pipe)
        except Exception as e:
            pipe.close()  # refused (a regular file): the caller's to close
            return [exc(e)]
        results = [await self.step(s) for s in self.example.steps]
        for _ in range(4):
            await asyncio.sleep(0)
        writer = self.example.kind.startswith("write-")
        if self.peer_end is None and writer:
            self.peer_drain()
        results.append(self.closing_state(size=writer))
        for _ in range(4):
            await asyncio.sleep(0)
            if self.peer_end is None and writer:
                self.peer_drain()
        return results


def run_pipe(impl: str, example: TransportExample) -> dict[str, Any]:
    run = PipeRun(impl, example)
    try:
        return run.record()
    finally:
        tmp = getattr(run, "tmp", None)
        if tmp is not None:
            tmp.cleanup()
