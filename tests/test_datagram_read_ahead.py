"""A datagram endpoint that is the loop's only registration, under load.

ferroloop reads such an endpoint ahead at the poll step instead of polling
(src/transports/datagram.rs); these traces pin down that the protocol still
sees asyncio's order: what was readable at the poll is delivered, in the
same place among the callbacks, and nothing read ahead is lost when reading
pauses. The peers here are plain sockets the loop does not watch, so the
endpoint stays the only registration.
"""

from __future__ import annotations

import asyncio
import socket

import pytest


def plain_udp(family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class Tracer(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.trace: list[object] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.lost = loop.create_future()

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def error_received(self, exc):  # type: ignore[no-untyped-def]
        self.trace.append(("error", type(exc).__name__))

    def connection_lost(self, exc):  # type: ignore[no-untyped-def]
        self.lost.set_result(exc)


def test_callbacks_interleave_with_read_ahead_datagrams_as_on_asyncio(loop):
    # Each datagram schedules a callback that sends the next datagram to the
    # endpoint itself, plus a marker: asyncio delivers a datagram sent in
    # iteration i in iteration i + 1, after the callbacks scheduled in i.
    class Chain(Tracer):
        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            n = int(data)
            self.trace.append(("dg", n))
            if n >= 6:
                self.loop.call_soon(self.trace.append, "done")
                return
            me = self.transport.get_extra_info("sockname")
            self.loop.call_soon(self.trace.append, f"a{n}")
            self.loop.call_soon(lambda: self.transport.sendto(b"%d" % (n + 1), me))
            self.loop.call_soon(self.trace.append, f"b{n}")

    async def main():  # type: ignore[no-untyped-def]
        t, p = await loop.create_datagram_endpoint(lambda: Chain(loop), local_addr=("127.0.0.1", 0))
        t.sendto(b"0", t.get_extra_info("sockname"))
        while "done" not in p.trace:
            await asyncio.sleep(0)
        t.close()
        await p.lost
        return p.trace

    trace = loop.run_until_complete(main())
    expected: list[object] = []
    for n in range(6):
        expected += [("dg", n), f"a{n}", f"b{n}"]
    expected += [("dg", 6), "done"]
    assert trace == expected


def test_pause_before_the_read_ahead_item_runs_loses_nothing(loop):
    # A callback queued before the poll pauses reading: the reader's item of
    # that iteration must not run, and the datagram the poll saw arrives
    # after resume_reading(), in order.
    peer = plain_udp()
    count = 40

    class Pausing(Tracer):
        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            n = int(data)
            self.trace.append(n)
            if n % 7 == 3:
                self.loop.call_soon(self.pause)

        def pause(self) -> None:
            self.trace.append("pause")
            self.transport.pause_reading()
            self.loop.call_later(0.005, self.resume)

        def resume(self) -> None:
            self.trace.append("resume")
            self.transport.resume_reading()

    async def main():  # type: ignore[no-untyped-def]
        t, p = await loop.create_datagram_endpoint(lambda: Pausing(loop), local_addr=("127.0.0.1", 0))
        me = t.get_extra_info("sockname")
        for n in range(count):
            peer.sendto(b"%d" % n, me)
        for _ in range(500):
            if sum(isinstance(x, int) for x in p.trace) == count:
                break
            await asyncio.sleep(0.002)
        t.close()
        await p.lost
        return p.trace

    try:
        trace = loop.run_until_complete(main())
    finally:
        peer.close()
    expected: list[object] = []
    for n in range(count):
        expected.append(n)
        if n % 7 == 3:
            expected += ["pause", "resume"]
    assert trace == expected


def test_socket_error_found_by_the_read_ahead_goes_to_error_received(loop):
    peer = plain_udp()
    paddr = peer.getsockname()

    class Connected(Tracer):
        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            self.trace.append(("dg", data))
            if data == b"last":
                # The peer goes away; the next datagram bounces (ICMP port
                # unreachable), reported by the next read.
                peer.close()
                self.loop.call_soon(self.transport.sendto, b"bounce")

        def error_received(self, exc):  # type: ignore[no-untyped-def]
            super().error_received(exc)
            self.trace.append(("errno", exc.errno))

    async def main():  # type: ignore[no-untyped-def]
        t, p = await loop.create_datagram_endpoint(
            lambda: Connected(loop), local_addr=("127.0.0.1", 0), remote_addr=paddr
        )
        me = t.get_extra_info("sockname")
        for d in (b"1", b"2", b"last"):
            peer.sendto(d, me)
        for _ in range(500):
            if any(x[0] == "error" for x in p.trace if isinstance(x, tuple)):
                break
            await asyncio.sleep(0.002)
        t.close()
        await p.lost
        return p.trace

    try:
        trace = loop.run_until_complete(main())
    finally:
        peer.close()
    assert trace == [
        ("dg", b"1"),
        ("dg", b"2"),
        ("dg", b"last"),
        ("error", "ConnectionRefusedError"),
        ("errno", 111),
    ]


@pytest.mark.parametrize("size", [0, 1, 1500, 65507])
def test_burst_of_datagrams_arrives_whole_and_in_order(loop, size):
    peer = plain_udp()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    count = 30

    class Collect(Tracer):
        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            self.trace.append((data, addr))

    async def main():  # type: ignore[no-untyped-def]
        t, p = await loop.create_datagram_endpoint(lambda: Collect(loop), local_addr=("127.0.0.1", 0))
        sock = t.get_extra_info("socket")
        # Room for the whole burst in the endpoint's receive queue.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        me = t.get_extra_info("sockname")
        sent = []
        for n in range(count):
            d = (bytes([n]) * size)[:size]
            sent.append(d)
            peer.sendto(d, me)
        for _ in range(500):
            if len(p.trace) == count:
                break
            await asyncio.sleep(0.002)
        t.close()
        await p.lost
        return sent, p.trace

    try:
        sent, trace = loop.run_until_complete(main())
        paddr = peer.getsockname()
    finally:
        peer.close()
    assert [d for d, _ in trace] == sent
    assert all(a == paddr for _, a in trace)


def test_icmp_error_drawn_before_the_readers_turn_comes_before_a_queued_datagram(loop):
    # A connected endpoint; the peer sends two datagrams and goes away. After
    # the first is delivered, a task step (which runs before the reader's
    # item in its iteration) sends to the vanished peer: the ICMP error is
    # pending when the reader's turn comes, and asyncio's read then reports
    # it before the second datagram (Linux returns a pending socket error
    # first). A datagram read ahead of the task step would come first.
    peer = plain_udp()

    class Order(Tracer):
        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            self.trace.append(("dg", data))

    async def main():  # type: ignore[no-untyped-def]
        t, p = await loop.create_datagram_endpoint(
            lambda: Order(loop), local_addr=("127.0.0.1", 0), remote_addr=peer.getsockname()
        )
        me = t.get_extra_info("sockname")
        peer.sendto(b"1", me)
        peer.sendto(b"2", me)
        peer.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the first datagram is delivered
        p.trace.append("send")
        t.sendto(b"x")
        for _ in range(4):
            await asyncio.sleep(0)
        t.close()
        await p.lost
        return p.trace

    trace = loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert trace == [("dg", b"1"), "send", ("error", "ConnectionRefusedError"), ("dg", b"2")]
