"""Datagram endpoints (``loop.create_datagram_endpoint``): UDP over IPv4 and
IPv6 loopback and unix datagram sockets.

Every test runs on asyncio and on ferroloop (``loop`` fixture) and asserts
what asyncio's ``_SelectorDatagramTransport`` does on this Python version;
expected values are computed from the version (or from a plain socket),
never by comparing the two loops at run time. A recording protocol logs the
protocol callbacks in order.

asyncio's per-version differences these tests follow:

- 3.11 and 3.12 drop ``sendto(b"")`` before looking at anything else; 3.13
  checks the address and sends an empty datagram.
- 3.13 counts ``len(data) + 8`` bytes per buffered datagram in
  ``get_write_buffer_size()``; 3.13 up to the fix of gh-135444 (the class
  gained ``_header_size``) subtracts only ``len(data)`` when a buffered
  datagram is sent, so 8 bytes per datagram stay counted.
- From 3.12 the transport class derives from ``asyncio.DatagramTransport``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket

import pytest
from datagram_support import (
    FATAL_WRITE,
    PY313,
    SENDS_EMPTY,
    Echo,
    Recorder,
    close_all,
    endpoint,
    free_udp_port,
    ipv6_available,
    wait_readable,
)

# ----- echo and callback order


@pytest.mark.parametrize("connected", [False, True], ids=["sendto-addr", "connected"])
def test_ten_thousand_datagrams_echoed_over_ipv4(loop, connected):
    count, window = 10_000, 64

    def payload(i):
        return b"%05d|" % i + bytes([i % 251]) * (i % 300)

    class Server(asyncio.DatagramProtocol):
        def __init__(self):
            self.senders = set()
            self.received = 0

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.senders.add(addr)
            self.received += 1
            self.transport.sendto(data, addr)

        def error_received(self, exc):
            raise AssertionError(f"server error_received({exc!r})")

    class Client(asyncio.DatagramProtocol):
        def __init__(self, server_addr):
            self.server_addr = server_addr
            self.got = set()
            self.sources = set()
            self.sent = 0
            self.bad = []
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def send_next(self):
            data = payload(self.sent)
            if connected:
                self.transport.sendto(data)
            else:
                self.transport.sendto(data, self.server_addr)
            self.sent += 1

        def datagram_received(self, data, addr):
            self.sources.add(addr)
            i = int(data[:5])
            if data != payload(i) or i in self.got:
                self.bad.append(data)
            self.got.add(i)
            if self.sent < count:
                self.send_next()
            elif len(self.got) == count and not self.done.done():
                self.done.set_result(None)

        def error_received(self, exc):
            self.done.set_exception(exc)

    async def main():
        st, server = await endpoint(loop, Server, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        if connected:
            ct, client = await endpoint(loop, lambda: Client(saddr), remote_addr=saddr)
        else:
            ct, client = await endpoint(loop, lambda: Client(saddr), local_addr=("127.0.0.1", 0))
        for _ in range(window):
            client.send_next()
        try:
            await asyncio.wait_for(client.done, 30)
        except TimeoutError:
            raise AssertionError(f"{count - len(client.got)} datagrams lost") from None
        caddr = ct.get_extra_info("sockname")
        ct.close()
        st.close()
        await asyncio.sleep(0)
        return server, client, saddr, caddr

    server, client, saddr, caddr = loop.run_until_complete(main())
    assert client.bad == []
    assert client.got == set(range(count))
    assert server.received == count
    assert server.senders == {caddr}
    assert client.sources == {saddr}
    assert caddr[0] == "127.0.0.1" and caddr[1] > 0


def test_trace_of_an_exchange_and_close(loop):
    async def main():
        st, server = await endpoint(loop, lambda: Echo(loop), local_addr=("127.0.0.1", 0))
        # The waiter wakes after connection_made.
        assert server.events == ["made"]
        saddr = st.get_extra_info("sockname")
        ct, client = await endpoint(loop, remote_addr=saddr)
        assert client.events == ["made"] and client.transport is ct
        caddr = ct.get_extra_info("sockname")
        ct.sendto(b"ping")
        await client.until_count(2)
        order = []
        ct.close()
        order.append(list(client.events))
        ct.close()  # a second close is a no-op
        await asyncio.sleep(0)
        order.append(list(client.events))
        for _ in range(5):
            await asyncio.sleep(0)
        order.append(list(client.events))
        await close_all(st)
        return server, client, saddr, caddr, order

    server, client, saddr, caddr, order = loop.run_until_complete(main())
    assert server.events == ["made", ("data", b"ping", caddr), ("lost", None)]
    exchange = ["made", ("data", b"echo:ping", saddr)]
    assert client.events == [*exchange, ("lost", None)]
    # connection_lost(None) runs on a later iteration than close(), once.
    assert order == [exchange, [*exchange, ("lost", None)], [*exchange, ("lost", None)]]


def test_connection_made_runs_before_a_datagram_already_queued(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            sender.sendto(b"early", sock.getsockname())
            wait_readable(sock.fileno())
            t, p = await endpoint(loop, sock=sock)
            # The caller resumes before the queued datagram is read.
            at_return = list(p.events)
            await p.until_count(2)
            await close_all(t)
            return at_return, p, sender.getsockname()

    at_return, p, sender_addr = loop.run_until_complete(main())
    assert at_return == ["made"]
    assert p.events == ["made", ("data", b"early", sender_addr), ("lost", None)]


# ----- errors reported to error_received


def test_connected_endpoint_to_a_closed_port_gets_connection_refused(loop):
    async def main():
        port = free_udp_port()
        t, p = await endpoint(loop, remote_addr=("127.0.0.1", port))
        t.sendto(b"probe")
        after_send = list(p.events)  # the send itself succeeds
        await p.until_count(2)
        t.sendto(b"again")
        await p.until_count(3)
        closing = t.is_closing()
        await close_all(t)
        return p, after_send, closing

    p, after_send, closing = loop.run_until_complete(main())
    assert after_send == ["made"]
    refused = ("error", "ConnectionRefusedError", errno.ECONNREFUSED)
    assert p.events == ["made", refused, refused, ("lost", None)]
    assert all(type(e) is ConnectionRefusedError and e.errno == errno.ECONNREFUSED for e in p.errors)
    assert not closing


def test_send_error_goes_to_error_received_from_inside_sendto(loop):
    """With reading paused the ICMP error stays pending on the socket: the next
    send() fails with it and sendto() calls error_received before returning."""

    async def main():
        port = free_udp_port()
        t, p = await endpoint(loop, remote_addr=("127.0.0.1", port))
        t.pause_reading()
        t.sendto(b"probe")
        poller = select.poll()
        poller.register(t.get_extra_info("socket").fileno(), select.POLLIN)
        assert poller.poll(5000), "no ICMP error arrived"
        before = list(p.events)
        t.sendto(b"fails")
        during = list(p.events)
        closing = t.is_closing()
        await close_all(t)
        return p, before, during, closing

    p, before, during, closing = loop.run_until_complete(main())
    refused = ("error", "ConnectionRefusedError", errno.ECONNREFUSED)
    assert before == ["made"]
    assert during == ["made", refused]
    assert not closing
    assert p.events == ["made", refused, ("lost", None)]


def test_oversized_udp_datagram_goes_to_error_received(loop):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, client = await endpoint(loop, remote_addr=saddr)
        ct.sendto(b"z" * 65508)  # one byte over the IPv4 UDP maximum
        during = list(client.events)
        ct.sendto(b"m" * 65507)
        await server.until_count(2)
        await close_all(ct, st)
        return server, client, during

    server, client, during = loop.run_until_complete(main())
    too_long = ("error", "OSError", errno.EMSGSIZE)
    assert during == ["made", too_long]
    assert client.events == ["made", too_long, ("lost", None)]
    assert [len(d) for d, _ in server.datagrams] == [65507]


def test_unconnected_endpoint_gets_no_icmp_errors(loop):
    async def main():
        st, _ = await endpoint(loop, lambda: Echo(loop), local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        t, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        t.sendto(b"nobody", ("127.0.0.1", free_udp_port()))
        t.sendto(b"ping", saddr)
        await p.until(lambda ev: any(e[0] == "data" for e in ev[1:]))
        for _ in range(5):
            await asyncio.sleep(0)
        await close_all(t, st)
        return p, saddr

    p, saddr = loop.run_until_complete(main())
    assert p.events == ["made", ("data", b"echo:ping", saddr), ("lost", None)]


# ----- sendto() arguments


def test_sendto_argument_checks(loop):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, _client = await endpoint(loop, remote_addr=saddr)
        ut, _unconnected = await endpoint(loop, local_addr=("127.0.0.1", 0))
        type_errors = []
        for t in (ct, ut):
            for bad in ["str", 1, None, [b"x"], 1.5]:
                with pytest.raises(TypeError) as ei:
                    t.sendto(bad, saddr)
                type_errors.append(str(ei.value))
        value_errors = []
        other = ("127.0.0.1", saddr[1] + 1 if saddr[1] < 65535 else 1)
        for bad_addr in [other, list(saddr), "127.0.0.1", ("localhost", saddr[1]), ("127.0.0.1", saddr[1], 0)]:
            with pytest.raises(ValueError) as ei:
                ct.sendto(b"x", bad_addr)
            value_errors.append(str(ei.value))
        # The data type is checked before the address.
        with pytest.raises(TypeError):
            ct.sendto("str", other)
        # Empty data returns before the address check on 3.11/3.12.
        if SENDS_EMPTY:
            with pytest.raises(ValueError):
                ct.sendto(b"", other)
        else:
            ct.sendto(b"", other)
        ct.sendto(bytearray(b"ba"))
        ct.sendto(memoryview(b"xmvx")[1:3])
        ct.sendto(b"remote", saddr)
        ct.sendto(b"none", None)
        ut.sendto(bytearray(b"u-ba"), saddr)
        ut.sendto(memoryview(b"u-mv"), saddr)
        await server.until_count(7)
        await close_all(ct, ut, st)
        return server, type_errors, value_errors, saddr

    server, type_errors, value_errors, saddr = loop.run_until_complete(main())
    names = ["str", "int", "NoneType", "list", "float"]
    assert type_errors == [f"data argument must be a bytes-like object, not {n!r}" for n in names] * 2
    assert value_errors == [f"Invalid address: must be None or {saddr}"] * 5
    assert [d for d, _ in server.datagrams] == [b"ba", b"mv", b"remote", b"none", b"u-ba", b"u-mv"]


@pytest.mark.parametrize("connected", [False, True], ids=["sendto-addr", "connected"])
def test_empty_datagram(loop, connected):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        if connected:
            ct, _ = await endpoint(loop, remote_addr=saddr)
            ct.sendto(b"")
            ct.sendto(b"after")
        else:
            ct, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
            ct.sendto(b"", saddr)
            ct.sendto(b"after", saddr)
        await server.until(lambda ev: ev[-1][0] == "data" and ev[-1][1] == b"after")
        await close_all(ct, st)
        return [d for d, _ in server.datagrams]

    got = loop.run_until_complete(main())
    assert got == ([b"", b"after"] if SENDS_EMPTY else [b"after"])


def _plain_sendto_error(addr):
    """What a plain IPv4 UDP socket's sendto(b"x", addr) raises (None if it sends)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        try:
            s.sendto(b"x", addr)
        except Exception as exc:
            return exc
    return None


# (address, what asyncio does with the exception socket.sendto raises)
BAD_ADDRESSES = [
    (("256.1.1.1", 9), "error_received"),  # socket.gaierror
    (("::1", 9), "error_received"),  # gaierror: wrong family
    (("127.0.0.1", 0), "error_received"),  # EINVAL
    (("::1", 9, 0, 0), "fatal"),  # TypeError: a 4-tuple on AF_INET
    (("127.0.0.1", 70000), "fatal"),  # OverflowError
    (("127.0.0.1", -1), "fatal"),  # OverflowError
    (("127.0.0.1", "9"), "fatal"),  # TypeError
    (("127.0.0.1",), "fatal"),  # TypeError
    ("127.0.0.1", "fatal"),  # TypeError
    (None, "fatal"),  # TypeError: an unconnected endpoint needs an address
]


@pytest.mark.parametrize(("addr", "kind"), BAD_ADDRESSES, ids=[repr(a) for a, _ in BAD_ADDRESSES])
def test_sendto_invalid_address_on_unconnected_endpoint(loop, loop_errors, addr, kind):
    """sendto() never raises: an OSError from the socket goes to
    error_received and the endpoint stays open; any other exception is a fatal
    error: the handler gets it and the endpoint closes with it."""
    expected = _plain_sendto_error(addr)
    assert expected is not None
    assert isinstance(expected, OSError) == (kind == "error_received")

    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        t, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        t.sendto(b"x", addr)
        during = list(p.events)
        closing = t.is_closing()
        if kind == "error_received":
            t.sendto(b"still works", saddr)
            await server.until_count(2)
            t.close()
        exc = await asyncio.wait_for(p.done, 5)
        await close_all(st)
        return p, during, closing, exc, server

    p, during, closing, lost_exc, server = loop.run_until_complete(main())
    if kind == "error_received":
        assert during == ["made", ("error", type(expected).__name__, expected.errno)]
        assert str(p.errors[0]) == str(expected)
        assert not closing
        assert p.events == [*during, ("lost", None)]
        assert [d for d, _ in server.datagrams] == [b"still works"]
        assert list(loop_errors) == []
    else:
        assert during == ["made"]  # the transport loses the connection on a later iteration
        assert closing
        assert p.events == ["made", ("lost", type(expected).__name__)]
        assert type(lost_exc) is type(expected) and str(lost_exc) == str(expected)
        assert len(loop_errors) == 1
        ctx = loop_errors[0]
        assert ctx["message"] == FATAL_WRITE
        assert ctx["exception"] is lost_exc
        assert ctx["protocol"] is p and ctx["transport"] is p.transport
        loop_errors.clear()
        assert server.datagrams == []


def _received_address_cases():
    cases = [
        ("ipv4-localhost", "127.0.0.1", lambda port: ("localhost", port)),
        ("ipv4-short-form", "127.0.0.1", lambda port: ("127.1", port)),
        ("ipv4-canonical", "127.0.0.1", None),
    ]
    if ipv6_available():
        cases.append(("ipv6-2-tuple", "::1", lambda port: ("::1", port)))
    return cases


@pytest.mark.parametrize(
    ("host", "form"),
    [c[1:] for c in _received_address_cases()],
    ids=[c[0] for c in _received_address_cases()],
)
def test_received_address_is_the_sockets_not_the_one_given_to_sendto(loop, host, form):
    """datagram_received gets the address recvfrom() builds, whatever form
    the reply's destination had in an earlier sendto()."""

    async def main():
        st, _ = await endpoint(loop, lambda: Echo(loop), local_addr=(host, 0))
        saddr = st.get_extra_info("sockname")
        t, p = await endpoint(loop, local_addr=(host, 0))
        if form is not None:
            t.sendto(b"other form", form(saddr[1]))
            await p.until_count(2)
        t.sendto(b"canonical", saddr)
        await p.until(lambda ev: len(p.datagrams) == (2 if form is not None else 1))
        kernel_name = st.get_extra_info("socket").getsockname()
        await close_all(t, st)
        return p, kernel_name

    p, kernel_name = loop.run_until_complete(main())
    want = [b"echo:other form", b"echo:canonical"] if form is not None else [b"echo:canonical"]
    assert p.datagrams == [(d, kernel_name) for d in want]
    assert type(p.datagrams[0][1]) is tuple


# ----- families


@pytest.mark.skipif(not ipv6_available(), reason="IPv6 loopback (::1) is not available")
def test_ipv6_echo_with_four_tuple_addresses(loop):
    async def main():
        st, server = await endpoint(loop, lambda: Echo(loop), local_addr=("::1", 0))
        saddr = st.get_extra_info("sockname")
        ut, unconnected = await endpoint(loop, local_addr=("::1", 0))
        ct, connected = await endpoint(loop, remote_addr=("::1", saddr[1]))
        ut.sendto(b"u", ("::1", saddr[1]))  # a 2-tuple is accepted by the socket
        await unconnected.until_count(2)
        ct.sendto(b"c")
        await connected.until_count(2)
        with pytest.raises(ValueError) as ei:
            ct.sendto(b"x", ("::1", saddr[1]))  # the endpoint holds the 4-tuple
        info = {
            "server": saddr,
            "unconnected": ut.get_extra_info("sockname"),
            "connected": ct.get_extra_info("sockname"),
            "peer": ct.get_extra_info("peername"),
            "family": ct.get_extra_info("socket").family,
        }
        await close_all(ut, ct, st)
        return server, unconnected, connected, info, str(ei.value)

    server, unconnected, connected, info, value_error = loop.run_until_complete(main())
    saddr = info["server"]
    assert len(saddr) == 4 and saddr[0] == "::1" and saddr[2:] == (0, 0)
    assert info["peer"] == saddr and info["family"] == socket.AF_INET6
    assert server.datagrams == [(b"u", info["unconnected"]), (b"c", info["connected"])]
    assert unconnected.datagrams == [(b"echo:u", saddr)]
    assert connected.datagrams == [(b"echo:c", saddr)]
    assert value_error == f"Invalid address: must be None or {saddr}"


def test_unix_datagram_echo_named_and_unnamed_senders(loop, sockdir):
    server_path = os.path.join(sockdir, "server")
    client_path = os.path.join(sockdir, "client")

    async def main():
        st, server = await endpoint(loop, lambda: Echo(loop), family=socket.AF_UNIX, local_addr=server_path)
        nt, named = await endpoint(loop, family=socket.AF_UNIX, local_addr=client_path, remote_addr=server_path)
        ut, unnamed = await endpoint(loop, family=socket.AF_UNIX, remote_addr=server_path)
        nt.sendto(b"named")
        await named.until_count(2)
        ut.sendto(b"unnamed")
        await server.until_count(3)
        info = {
            "server": (st.get_extra_info("sockname"), st.get_extra_info("peername")),
            "named": (nt.get_extra_info("sockname"), nt.get_extra_info("peername")),
            "unnamed": (ut.get_extra_info("sockname"), ut.get_extra_info("peername")),
            "family": st.get_extra_info("socket").family,
        }
        await close_all(nt, ut, st)
        return server, named, unnamed, info

    server, named, unnamed, info = loop.run_until_complete(main())
    assert info["server"] == (server_path, None)
    assert info["named"] == (client_path, server_path)
    assert info["unnamed"] == ("", server_path)
    assert info["family"] == socket.AF_UNIX
    # An unnamed sender's address is None (so the echo server could not reply).
    assert server.datagrams == [(b"named", client_path), (b"unnamed", None)]
    assert named.events == ["made", ("data", b"echo:named", server_path), ("lost", None)]
    assert unnamed.events == ["made", ("lost", None)]
    # Closing a datagram endpoint leaves its socket file in place.
    assert os.path.exists(server_path) and os.path.exists(client_path)


def test_reply_to_an_unnamed_unix_peer_fails_as_sendto_none(loop, loop_errors):
    # A socketpair's peer is unnamed: datagram_received gets addr None, and
    # the transport (peername '', so not "connected") sends with
    # sock.sendto(data, None), a TypeError: a fatal write error, nothing sent.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)

    class ReplyEvenToNone(Echo):
        def datagram_received(self, data, addr):
            Recorder.datagram_received(self, data, addr)
            self.transport.sendto(b"echo:" + data, addr)

    async def main():
        _, echo = await loop.create_datagram_endpoint(lambda: ReplyEvenToNone(loop), sock=a)
        b.send(b"ping")
        await echo.until_count(3)  # made, the datagram, lost
        try:
            got = b.recv(100)
        except BlockingIOError:
            got = None
        return echo, got

    try:
        echo, got = loop.run_until_complete(main())
    finally:
        a.close()
        b.close()
    assert echo.events == ["made", ("data", b"ping", None), ("lost", "TypeError")]
    assert got is None
    assert [(c["message"], type(c["exception"]).__name__) for c in loop_errors] == [(FATAL_WRITE, "TypeError")]
    loop_errors.clear()


def test_unix_abstract_namespace_addresses_are_bytes(loop):
    name = f"\0ferroloop-test-dgram-{os.getpid()}-{id(loop)}"

    async def main():
        st, server = await endpoint(loop, lambda: Echo(loop), family=socket.AF_UNIX, local_addr=name)
        ct, client = await endpoint(loop, family=socket.AF_UNIX, local_addr=name + "-c", remote_addr=name)
        ct.sendto(b"abstract")
        await client.until_count(2)
        names = st.get_extra_info("sockname"), ct.get_extra_info("sockname"), ct.get_extra_info("peername")
        await close_all(ct, st)
        return server, client, names

    server, client, names = loop.run_until_complete(main())
    server_name, client_name = name.encode(), (name + "-c").encode()
    assert names == (server_name, client_name, server_name)
    assert server.datagrams == [(b"abstract", client_name)]
    assert client.datagrams == [(b"echo:abstract", server_name)]


def test_unix_local_addr_replaces_a_stale_socket_but_not_a_file(loop, sockdir):
    stale = os.path.join(sockdir, "stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(stale)  # the file stays after close
    plain = os.path.join(sockdir, "plain")
    with open(plain, "w") as f:
        f.write("not a socket")

    async def main():
        t, _ = await endpoint(loop, family=socket.AF_UNIX, local_addr=stale)
        name = t.get_extra_info("sockname")
        await close_all(t)
        with pytest.raises(OSError) as ei:
            await endpoint(loop, family=socket.AF_UNIX, local_addr=plain)
        return name, ei.value

    name, exc = loop.run_until_complete(main())
    assert name == stale
    assert exc.errno == errno.EADDRINUSE
    with open(plain) as f:
        assert f.read() == "not a socket"


def test_unix_datagram_larger_than_max_size_is_truncated(loop, sockdir):
    """asyncio reads with recvfrom(256 KiB): a longer unix datagram is cut."""
    size = 300_000
    server_path = os.path.join(sockdir, "server")

    async def main():
        st, server = await endpoint(loop, family=socket.AF_UNIX, local_addr=server_path)
        ct, _ = await endpoint(loop, family=socket.AF_UNIX, remote_addr=server_path)
        sock = ct.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * size)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < size + 4096:
            await close_all(ct, st)
            return None
        payload = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)
        ct.sendto(payload)
        ct.sendto(b"next")
        await server.until_count(3)
        await close_all(ct, st)
        return payload, server

    res = loop.run_until_complete(main())
    if res is None:
        pytest.skip("the kernel caps SO_SNDBUF below one 300 kB datagram")
    payload, server = res
    assert [d for d, _ in server.datagrams] == [payload[: 256 * 1024], b"next"]


# ----- create_datagram_endpoint() arguments


def test_sock_argument(loop):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        assert sock.gettimeout() is None  # blocking: the loop makes it non-blocking
        t, p = await endpoint(loop, sock=sock)
        info = {
            "timeout": sock.gettimeout(),
            "fileno": t.get_extra_info("socket").fileno() == sock.fileno(),
            "sockname": t.get_extra_info("sockname") == sock.getsockname(),
            "peername": t.get_extra_info("peername"),
        }
        t.sendto(b"from sock", saddr)
        await server.until_count(2)
        st.sendto(b"back", sock.getsockname())
        await p.until_count(2)
        await close_all(t, st)
        info["closed"] = sock.fileno()
        return info, server, p, saddr

    info, server, p, saddr = loop.run_until_complete(main())
    assert info == {"timeout": 0.0, "fileno": True, "sockname": True, "peername": None, "closed": -1}
    assert [d for d, _ in server.datagrams] == [b"from sock"]
    assert p.events == ["made", ("data", b"back", saddr), ("lost", None)]


def test_sock_argument_already_connected_ignores_the_address(loop):
    """A connected socket passed as sock= has a peer but no endpoint address:
    sendto(data, addr) accepts any address and sends to the peer."""

    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(saddr)
        t, _p = await endpoint(loop, sock=sock)
        peer = t.get_extra_info("peername")
        t.sendto(b"no addr")
        t.sendto(b"other addr", ("127.0.0.1", 9))
        await server.until_count(3)
        await close_all(t, st)
        return peer, saddr, server

    peer, saddr, server = loop.run_until_complete(main())
    assert peer == saddr
    assert [d for d, _ in server.datagrams] == [b"no addr", b"other addr"]


def test_create_datagram_endpoint_argument_checks(loop):
    async def main():
        errors = []

        async def expect(exc_type, **kwargs):
            with pytest.raises(exc_type) as ei:
                await endpoint(loop, **kwargs)
            errors.append(str(ei.value))
            return ei.value

        await expect(ValueError)
        await expect(TypeError, family=socket.AF_UNIX, local_addr=("x", 1))
        await expect(TypeError, local_addr="127.0.0.1")
        await expect(TypeError, local_addr=("127.0.0.1", 0, 0, 0))
        await expect(ValueError, local_addr=("127.0.0.1", 0), remote_addr=("::1", 9))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
            await expect(ValueError, sock=stream)
            stream_repr = repr(stream)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
            await expect(ValueError, sock=dgram, local_addr=("127.0.0.1", 0), reuse_port=True)
            assert dgram.fileno() >= 0  # left open
        t, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        busy = await expect(OSError, local_addr=t.get_extra_info("sockname"))
        await close_all(t)
        return errors, stream_repr, busy

    errors, stream_repr, busy = loop.run_until_complete(main())
    wanted = "A datagram socket" if PY313 else "A UDP Socket"
    assert errors[:7] == [
        "unexpected address family",
        "string is expected",
        "2-tuple is expected",
        "2-tuple is expected",
        "can not get address information",
        f"{wanted} was expected, got {stream_repr}",
        "socket modifier keyword arguments can not be used when sock is specified. "
        "(local_addr=('127.0.0.1', 0), reuse_port=True)",
    ]
    assert busy.errno == errno.EADDRINUSE


def test_family_only_endpoint_is_unbound_until_it_sends(loop):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        t, _ = await endpoint(loop, family=socket.AF_INET)
        names = t.get_extra_info("sockname"), t.get_extra_info("peername")
        t.sendto(b"autobind", saddr)
        await server.until_count(2)
        bound = t.get_extra_info("socket").getsockname()
        await close_all(t, st)
        return names, bound, server

    (sockname, peername), bound, server = loop.run_until_complete(main())
    assert sockname == ("0.0.0.0", 0) and peername is None
    assert bound[1] > 0
    assert server.datagrams == [(b"autobind", ("127.0.0.1", bound[1]))]


def test_allow_broadcast_sets_so_broadcast(loop):
    async def main():
        bt, _ = await endpoint(loop, local_addr=("127.0.0.1", 0), allow_broadcast=True)
        nt, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        opts = [t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) for t in (bt, nt)]
        await close_all(bt, nt)
        return opts

    on, off = loop.run_until_complete(main())
    assert on != 0 and off == 0


def test_allow_broadcast_with_remote_addr_does_not_connect(loop):
    """With allow_broadcast the socket is not connected: no peername, any
    sender reaches it, and sendto() still only accepts the remote address."""

    async def main():
        st, server = await endpoint(loop, lambda: Echo(loop), local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        t, p = await endpoint(loop, remote_addr=saddr, allow_broadcast=True)
        names = t.get_extra_info("sockname"), t.get_extra_info("peername")
        t.sendto(b"hello")
        await p.until_count(2)
        with pytest.raises(ValueError) as ei:
            t.sendto(b"x", ("127.0.0.1", 9))
        port = t.get_extra_info("socket").getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.sendto(b"stranger", ("127.0.0.1", port))
            await p.until_count(3)
            stranger_addr = stranger.getsockname()
        await close_all(t, st)
        return names, p, saddr, stranger_addr, str(ei.value), port, server

    names, p, saddr, stranger_addr, value_error, port, server = loop.run_until_complete(main())
    assert names == (("0.0.0.0", 0), None)
    assert p.datagrams == [(b"echo:hello", saddr), (b"stranger", stranger_addr)]
    assert server.datagrams == [(b"hello", ("127.0.0.1", port))]
    assert value_error == f"Invalid address: must be None or {saddr}"


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port(loop):
    async def main():
        t1, _ = await endpoint(loop, local_addr=("127.0.0.1", 0), reuse_port=True)
        addr = t1.get_extra_info("sockname")
        t2, _ = await endpoint(loop, local_addr=addr, reuse_port=True)
        with pytest.raises(OSError) as ei:
            await endpoint(loop, local_addr=addr)
        opts = [t.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for t in (t1, t2)]
        same = t2.get_extra_info("sockname") == addr
        await close_all(t1, t2)
        return opts, same, ei.value

    opts, same, exc = loop.run_until_complete(main())
    assert all(o != 0 for o in opts) and same
    assert exc.errno == errno.EADDRINUSE
