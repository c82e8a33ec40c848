"""Shared by the datagram endpoint tests (test_datagram*.py): a recording
protocol, endpoint helpers and what asyncio does on this Python version."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
from asyncio import selector_events

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
ASYNCIO_CLASS = selector_events._SelectorDatagramTransport
# Bytes counted per buffered datagram on top of its length.
HEADER = 8 if PY313 else 0
# Bytes that stay counted per buffered datagram once it is sent (gh-135444).
DRAIN_LEAK = HEADER if not hasattr(ASYNCIO_CLASS, "_header_size") else 0
SENDS_EMPTY = PY313
FATAL_WRITE = "Fatal write error on datagram transport"
BIG = 4096  # a datagram size used to fill a unix socket's send buffer


class Recorder(asyncio.DatagramProtocol):
    """Logs every protocol callback in order.

    Events: ``"made"``, ``("data", data, addr)``, ``("error", type name,
    errno)``, ``("pause", buffer size)``, ``("resume", buffer size)``,
    ``("lost", None or type name)``.
    """

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.errors = []
        self.transport = None
        self.done = loop.create_future()
        self._wake = None

    def _log(self, ev):
        self.events.append(ev)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def connection_made(self, transport):
        self.transport = transport
        self._log("made")

    def datagram_received(self, data, addr):
        assert type(data) is bytes
        self._log(("data", data, addr))

    def error_received(self, exc):
        self.errors.append(exc)
        self._log(("error", type(exc).__name__, exc.errno))

    def pause_writing(self):
        self._log(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self._log(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc):
        self._log(("lost", type(exc).__name__ if exc is not None else None))
        if not self.done.done():
            self.done.set_result(exc)

    @property
    def datagrams(self):
        return [(e[1], e[2]) for e in self.events if e[0] == "data"]

    async def until(self, pred, timeout=5.0):
        """Wait until ``pred(self.events)`` holds."""
        try:
            async with asyncio.timeout(timeout):
                while not pred(self.events):
                    self._wake = self.loop.create_future()
                    await self._wake
        except TimeoutError:
            raise AssertionError(f"timed out; events: {self.events!r}") from None

    async def until_count(self, n, timeout=5.0):
        await self.until(lambda ev: len(ev) >= n, timeout)


class Echo(Recorder):
    """Sends every datagram back to its sender, prefixed with ``echo:``."""

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        if addr is not None:
            self.transport.sendto(b"echo:" + data, addr)


def kinds(events):
    """The event names of a trace."""
    return [e if isinstance(e, str) else e[0] for e in events]


async def endpoint(loop, factory=None, **kwargs):
    return await loop.create_datagram_endpoint(factory or (lambda: Recorder(loop)), **kwargs)


async def close_all(*transports):
    for t in transports:
        t.close()
    for t in transports:
        proto = t.get_protocol()
        if proto is not None:
            async with asyncio.timeout(5):
                await proto.done


def free_udp_port(host="127.0.0.1", family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_readable(fd, timeout=5.0):
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "nothing arrived on the socket"


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def filled_unix_endpoint(loop, sockdir, factory=None):
    """A unix datagram endpoint connected to a peer that does not read, sent
    ``BIG``-byte datagrams until one is buffered.

    Returns (transport, protocol, peer socket, datagrams the kernel took, the
    buffered datagram). A unix datagram stays charged to its sender until the
    peer reads it, so with the smallest send buffer the kernel soon refuses.
    """
    path = os.path.join(sockdir, "peer")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(path)
    peer.setblocking(False)
    t, p = await endpoint(loop, factory, family=socket.AF_UNIX, remote_addr=path)
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    direct = []
    for i in range(1000):
        data = b"%04d" % i + bytes([65 + i % 26]) * (BIG - 4)
        t.sendto(data)
        if t.get_write_buffer_size():
            return t, p, peer, direct, data
        direct.append(data)
    raise AssertionError("the send buffer never filled")


async def recv_n(loop, sock, n, size=65536):
    out = []
    async with asyncio.timeout(5):
        for _ in range(n):
            out.append(await loop.sock_recv(sock, size))
    return out
