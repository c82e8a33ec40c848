"""The transport fuzzer's datagram harness: a ``fuzz_transport.Run`` for a
transport made by ``create_datagram_endpoint(sock=...)`` over UDP (bound,
or connected to the peer) or a unix datagram socketpair, or by
``create_datagram_endpoint(local_addr=..., [remote_addr=...],
reuse_port=True, allow_broadcast=True)`` ("udp-endpoint" kinds). See
test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from typing import Any

from fuzz_transport import PATTERN, Run, TransportExample, exc, make_data, value

PORT_RE = re.compile(r"(\('127\.0\.0\.1', )\d+\)")


def addr_value(addr: Any) -> Any:
    """An address without its ephemeral port."""
    if isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[1], int):
        return (addr[0], "port", *addr[2:])
    return value(addr)


class DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, run: DatagramRun) -> None:
        self.run = run

    def connection_made(self, transport: Any) -> None:
        self.run.transport = transport
        self.run.event("connection_made")
        self.run.act("connection_made")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.run.event("datagram", len(data), hashlib.sha1(data).hexdigest()[:12], addr_value(addr))
        self.run.act("datagram_received")

    def error_received(self, e: Exception) -> None:
        self.run.event("error_received", exc(e))
        self.run.act("error_received")

    def pause_writing(self) -> None:
        self.run.event("pause_writing", self.run.transport.get_write_buffer_size())
        self.run.act("pause_writing")

    def resume_writing(self) -> None:
        self.run.event("resume_writing", self.run.transport.get_write_buffer_size())
        self.run.act("resume_writing")

    def connection_lost(self, e: BaseException | None) -> None:
        self.run.event("connection_lost", None if e is None else exc(e))
        self.run.act("connection_lost")


class DatagramRun(Run):
    """One datagram script on one loop; ``peer_got`` holds the datagrams the
    peer received, length-prefixed, so their boundaries count."""

    def act(self, callback: str) -> None:
        action = dict(self.example.actions).get(callback)
        if action == "write":
            self.transport.sendto(b"w" * 100, self.to_peer())
        elif action is not None:
            super().act(callback)

    def to_peer(self) -> Any:
        # A connected or unix-pair transport sends without an address.
        return self.peer_addr if self.example.kind in ("udp", "udp-endpoint") else None

    def peer_send(self, n: int) -> Any:
        chunk = PATTERN[self.sent % 1000 : self.sent % 1000 + n]
        try:
            if self.example.kind == "unix-dgram":
                k = self.peer.send(chunk)
            else:
                k = self.peer.sendto(chunk, self.own_addr)
        except OSError as e:
            return exc(e)
        self.sent += 1
        return k

    def peer_recv(self, n: int) -> Any:
        if self.peer_end is not None:
            return "ended"
        try:
            data = self.peer.recv(n)
        except BlockingIOError:
            return 0
        except OSError as e:
            return exc(e)
        self.peer_got += len(data).to_bytes(4, "big") + data
        return len(data)

    def peer_drain(self) -> None:
        for _ in range(1000):
            if self.peer_recv(1 << 17) in (0, "ended"):
                return

    async def step(self, s: tuple[Any, ...]) -> Any:
        name, *args = s
        if name == "sendto":
            (kind, n), where = args
            addr = {
                "default": (),
                "none": (None,),
                "peer": (self.peer_addr,),
                "closed-port": (self.closed_addr,),
                "bad-type": (42,),
                "bad-host": (("::1", 9),),  # numeric, of the wrong family: no DNS
            }[where]
            try:
                return value(self.transport.sendto(make_data(kind, n), *addr))
            except Exception as e:
                # "Invalid address: must be None or ('127.0.0.1', <port>)".
                return tuple(PORT_RE.sub(r"\1port)", x) if isinstance(x, str) else x for x in exc(e))
        if name == "get_extra_info" and args[0] == "peername":
            try:
                return addr_value(self.transport.get_extra_info("peername"))
            except Exception as e:
                return exc(e)
        return await super().step(s)

    async def main(self, sock: socket.socket) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            if self.example.kind.startswith("udp-endpoint"):
                # The endpoint binds the address the socket had (closed here).
                sock.close()
                kwargs: dict[str, Any] = {"local_addr": self.own_addr, "reuse_port": True, "allow_broadcast": True}
                if self.example.kind == "udp-endpoint-connected":
                    kwargs["remote_addr"] = self.peer_addr
                await loop.create_datagram_endpoint(lambda: DatagramProtocol(self), **kwargs)
            else:
                await loop.create_datagram_endpoint(lambda: DatagramProtocol(self), sock=sock)
        except Exception as e:
            return [exc(e)]
        results = [await self.step(s) for s in self.example.steps]
        for _ in range(4):
            await asyncio.sleep(0)
        self.peer_drain()
        results.append(self.closing_state())
        for _ in range(4):
            await asyncio.sleep(0)
        self.peer_drain()
        return results

    def pair(self) -> tuple[socket.socket, socket.socket]:
        if self.example.kind == "unix-dgram":
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.peer_addr = self.own_addr = self.closed_addr = None
            return a, b
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        closed.bind(("127.0.0.1", 0))
        self.closed_addr = closed.getsockname()
        closed.close()  # nothing listens there: a send to it draws an ICMP error
        self.own_addr, self.peer_addr = a.getsockname(), b.getsockname()
        if self.example.kind == "udp-connected":
            a.connect(self.peer_addr)
        a.setblocking(False)
        return a, b


def run_datagram(impl: str, example: TransportExample) -> dict[str, Any]:
    return DatagramRun(impl, example).record()
