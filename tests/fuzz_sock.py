"""The transport fuzzer's socket-operation harness: a ``fuzz_transport.Run``
without a transport, whose steps are the loop's ``sock_sendfile``,
``sock_sendall`` and ``sock_recv`` on one end of a unix socketpair or a TCP
connection, while the peer sends, drains, shuts down or closes. An
operation that must wait for the peer runs as a task while the peer drains
(``sock_sendfile``/``sock_sendall``, waiting by the clock: the sendfile
fallback reads in the executor) or for a few iterations and is then
cancelled (``sock_recv`` with nothing to read). See test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fuzz_transport import PATTERN, Run, TransportExample, exc, sendfile_path


class SockRun(Run):
    async def step(self, s: tuple[Any, ...]) -> Any:
        name, *args = s
        loop = asyncio.get_running_loop()
        if name == "sock_sendfile":
            mode, size, offset, count, fallback = args
            with open(sendfile_path(size), mode) as f:
                try:
                    coro = loop.sock_sendfile(self.sock, f, offset, count, fallback=fallback)
                except Exception as e:  # a native method may check its arguments at the call
                    return (exc(e), f.tell())
                return (await self.wait(coro, drain=True), f.tell())
        if name == "sock_sendall":
            return await self.wait(loop.sock_sendall(self.sock, PATTERN[: args[0]]), drain=True)
        if name == "sock_recv":
            return await self.wait(loop.sock_recv(self.sock, args[0]), drain=False)
        return await super().step(s)

    async def main(self, sock: Any) -> list[Any]:
        self.sock = sock
        sock.setblocking(False)
        results = [await self.step(s) for s in self.example.steps]
        for _ in range(4):
            await asyncio.sleep(0)
        if self.peer_end is None:
            self.peer_drain()
        return results


def run_sock(impl: str, example: TransportExample) -> dict[str, Any]:
    return SockRun(impl, example).record()
