"""The transport fuzzer's pipe harness: a ``fuzz_transport.Run`` for the
transports of ``connect_read_pipe`` and ``connect_write_pipe`` over an
``os.pipe()``, the peer holding the other end. See test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import os
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
        r, w = os.pipe()
        if self.example.kind == "read-pipe":
            return open(r, "rb", buffering=0), PipeEnd(w)  # the transport closes it
        return open(w, "wb", buffering=0), PipeEnd(r)

    async def step(self, s: tuple[Any, ...]) -> Any:
        if s[0] == "get_extra_info" and s[1] == "pipe":
            return type(self.transport.get_extra_info("pipe")).__name__
        return await super().step(s)

    async def main(self, pipe: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        factory = BufferedProtocol if self.example.buffered else Protocol
        connect = loop.connect_read_pipe if self.example.kind == "read-pipe" else loop.connect_write_pipe
        try:
            await connect(lambda: factory(self), pipe)
        except Exception as e:
            return [exc(e)]
        results = [await self.step(s) for s in self.example.steps]
        for _ in range(4):
            await asyncio.sleep(0)
        if self.peer_end is None and self.example.kind == "write-pipe":
            self.peer_drain()
        writer = self.example.kind == "write-pipe"
        results.append(self.closing_state(size=writer))
        for _ in range(4):
            await asyncio.sleep(0)
            if self.peer_end is None and writer:
                self.peer_drain()
        return results


def run_pipe(impl: str, example: TransportExample) -> dict[str, Any]:
    return PipeRun(impl, example).record()
