"""``TCP_NODELAY`` on the sockets transports are made for (asyncio's
``base_events._set_nodelay``), on both loops (``loop`` fixture).

ferroloop reads a ``socket.socket``'s family, type and protocol from the C
members and sets the option itself; any other socket object goes through
asyncio's function, which asks the object's own properties.
"""

from __future__ import annotations

import asyncio
import socket


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


class LooksLikeUnix(socket.socket):
    """A TCP socket whose ``family`` says AF_UNIX: asyncio leaves Nagle on."""

    @property
    def family(self) -> socket.AddressFamily:  # type: ignore[override]
        return socket.AF_UNIX


def nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def accepted_pair(cls: type[socket.socket]) -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        client = socket.create_connection(lsock.getsockname())
        fd, _ = lsock._accept()  # type: ignore[attr-defined]
    return cls(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=fd), client


async def with_transport(loop, sock: socket.socket) -> tuple[bool, bool]:
    before = nodelay(sock)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock)
    after = nodelay(sock)
    transport.close()
    await asyncio.sleep(0)
    return before, after


def test_a_socket_gets_nodelay(loop):
    async def main():
        sock, peer = await accepted_pair(socket.socket)
        try:
            return await with_transport(loop, sock)
        finally:
            peer.close()

    assert run(loop, main()) == (False, True)


def test_a_socket_subclass_is_asked_through_its_properties(loop):
    async def main():
        sock, peer = await accepted_pair(LooksLikeUnix)
        try:
            return await with_transport(loop, sock)
        finally:
            peer.close()

    assert run(loop, main()) == (False, False)


def test_a_unix_socket_is_left_alone(loop, tmp_path):
    async def main():
        path = str(tmp_path / "s.sock")
        accepted: list[asyncio.BaseTransport] = []

        class Keep(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(transport)

        server = await loop.create_unix_server(Keep, path)
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, path)
        while not accepted:
            await asyncio.sleep(0.001)
        families = [t.get_extra_info("socket").family for t in (transport, accepted[0])]
        for t in (transport, accepted[0]):
            t.close()
        server.close()
        await server.wait_closed()
        return families

    assert run(loop, main()) == [socket.AF_UNIX, socket.AF_UNIX]
