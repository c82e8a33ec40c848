"""Datagram endpoints: the transport API (extra info, types, set_protocol, the fd
guard) and exceptions raised by the protocol. Same rules as test_datagram.py's
docstring: every test runs on both loops and asserts what asyncio does.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
from asyncio import trsock

import pytest
from datagram_support import (
    ASYNCIO_CLASS,
    PY312,
    Recorder,
    close_all,
    endpoint,
    free_udp_port,
    kinds,
)

# ----- transport API


def test_extra_info_and_types(loop):
    async def main():
        st, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, cp = await endpoint(loop, remote_addr=saddr)
        sock = st.get_extra_info("socket")
        info = {
            "socket type": type(sock).__name__,
            "trsock": isinstance(sock, trsock.TransportSocket),
            "same object": st.get_extra_info("socket") is sock,
            "family": sock.family,
            "type": sock.type,
            "timeout": sock.gettimeout(),
            "fileno ok": sock.fileno() >= 0,
            "sock sockname": sock.getsockname() == saddr,
            "peername": st.get_extra_info("peername"),
            "connected peername": ct.get_extra_info("peername"),
            "connected sockname": ct.get_extra_info("sockname") == ct.get_extra_info("socket").getsockname(),
            "missing": st.get_extra_info("nope"),
            "default": st.get_extra_info("nope", 42),
            "default kw": st.get_extra_info("nope", default=43),
            "peercert": st.get_extra_info("peercert"),
            "limits": st.get_write_buffer_limits(),
            "size": st.get_write_buffer_size(),
            "protocol": ct.get_protocol() is cp,
            "reading": st.is_reading(),
            "closing": st.is_closing(),
        }
        types = {
            "name": type(st).__name__,
            "BaseTransport": isinstance(st, asyncio.BaseTransport),
            "Transport": isinstance(st, asyncio.Transport),
            "ReadTransport": isinstance(st, asyncio.ReadTransport),
            "WriteTransport": isinstance(st, asyncio.WriteTransport),
            "DatagramTransport": isinstance(st, asyncio.DatagramTransport),
        }
        await close_all(ct, st)
        # Taken at creation: still there after close; the socket is closed.
        info["after close"] = st.get_extra_info("sockname") == saddr
        info["closed fileno"] = sock.fileno()
        info["protocol after"] = ct.get_protocol()
        return info, types, saddr

    info, types, saddr = loop.run_until_complete(main())
    assert info == {
        "socket type": "TransportSocket",
        "trsock": True,
        "same object": True,
        "family": socket.AF_INET,
        "type": socket.SOCK_DGRAM,
        "timeout": 0.0,
        "fileno ok": True,
        "sock sockname": True,
        "peername": None,
        "connected peername": saddr,
        "connected sockname": True,
        "missing": None,
        "default": 42,
        "default kw": 43,
        "peercert": None,
        "limits": (16384, 65536),
        "size": 0,
        "protocol": True,
        "reading": True,
        "closing": False,
        "after close": True,
        "closed fileno": -1,
        "protocol after": None,  # dropped after connection_lost
    }
    assert types == {
        "name": "_SelectorDatagramTransport",
        "BaseTransport": True,
        "Transport": True,
        "ReadTransport": True,
        "WriteTransport": True,
        "DatagramTransport": issubclass(ASYNCIO_CLASS, asyncio.DatagramTransport),
    }
    assert types["DatagramTransport"] == PY312


def test_set_protocol_redirects_later_datagrams(loop):
    async def main():
        st, first = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, _ = await endpoint(loop, remote_addr=saddr)
        ct.sendto(b"one")
        await first.until_count(2)
        second = Recorder(loop)
        st.set_protocol(second)
        assert st.get_protocol() is second
        ct.sendto(b"two")
        await second.until_count(1)
        await close_all(ct, st)
        return first, second

    first, second = loop.run_until_complete(main())
    assert kinds(first.events) == ["made", "data"]
    assert kinds(second.events) == ["data", "lost"]
    assert first.datagrams[0][0] == b"one" and second.datagrams[0][0] == b"two"


def test_add_reader_on_a_datagram_transport_fd_is_refused(loop):
    async def main():
        t, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        fd = t.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match=f"File descriptor {fd} is used by transport"):
            loop.add_reader(fd, lambda: None)
        with pytest.raises(RuntimeError, match=f"File descriptor {fd} is used by transport"):
            loop.add_writer(fd, lambda: None)
        await close_all(t)

    loop.run_until_complete(main())


# ----- exceptions raised by the protocol


@pytest.mark.parametrize("where", ["connection_made", "datagram_received"])
def test_exception_in_a_protocol_callback_goes_to_the_handler(loop, loop_errors, where):
    class Boom(Recorder):
        raised = None

        def connection_made(self, transport):
            super().connection_made(transport)
            if where == "connection_made":
                self.raised = ZeroDivisionError(where)
                raise self.raised

        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if where == "datagram_received" and self.raised is None:
                self.raised = ZeroDivisionError(where)
                raise self.raised

    async def main():
        st, server = await endpoint(loop, lambda: Boom(loop), local_addr=("127.0.0.1", 0))
        ct, _ = await endpoint(loop, remote_addr=st.get_extra_info("sockname"))
        ct.sendto(b"first")
        await server.until_count(2)
        ct.sendto(b"second")
        await server.until_count(3)
        closing = st.is_closing()
        await close_all(ct, st)
        return server, closing

    server, closing = loop.run_until_complete(main())
    assert not closing
    assert [d for d, _ in server.datagrams] == [b"first", b"second"]
    assert server.events[-1] == ("lost", None)
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"].startswith("Exception in callback ")
    assert loop_errors[0]["exception"] is server.raised
    loop_errors.clear()


def test_exception_in_error_received_goes_to_the_handler(loop, loop_errors):
    class Boom(Recorder):
        raised = None

        def error_received(self, exc):
            super().error_received(exc)
            self.raised = ZeroDivisionError("error_received")
            raise self.raised

    async def main():
        port = free_udp_port()
        t, p = await endpoint(loop, lambda: Boom(loop), remote_addr=("127.0.0.1", port))
        t.sendto(b"probe")
        await p.until_count(2)
        await asyncio.sleep(0)
        errors_then = len(loop_errors)
        # Something now listens there: the endpoint still receives.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
            late.bind(("127.0.0.1", port))
            late.sendto(b"late", t.get_extra_info("sockname"))
            await p.until_count(3)
        closing = t.is_closing()
        await close_all(t)
        return p, errors_then, closing, port

    p, errors_then, closing, port = loop.run_until_complete(main())
    assert errors_then == 1 and not closing
    assert p.events == [
        "made",
        ("error", "ConnectionRefusedError", errno.ECONNREFUSED),
        ("data", b"late", ("127.0.0.1", port)),
        ("lost", None),
    ]
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"].startswith("Exception in callback ")
    assert loop_errors[0]["exception"] is p.raised
    loop_errors.clear()


def test_exception_in_error_received_called_from_sendto_reaches_the_caller(loop):
    class Boom(Recorder):
        def error_received(self, exc):
            super().error_received(exc)
            raise ZeroDivisionError("error_received")

    async def main():
        port = free_udp_port()
        t, p = await endpoint(loop, lambda: Boom(loop), remote_addr=("127.0.0.1", port))
        t.pause_reading()
        t.sendto(b"probe")
        poller = select.poll()
        poller.register(t.get_extra_info("socket").fileno(), select.POLLIN)
        assert poller.poll(5000), "no ICMP error arrived"
        with pytest.raises(ZeroDivisionError):
            t.sendto(b"fails")
        closing = t.is_closing()
        await close_all(t)
        return p, closing

    p, closing = loop.run_until_complete(main())
    assert not closing
    assert p.events == ["made", ("error", "ConnectionRefusedError", errno.ECONNREFUSED), ("lost", None)]


def test_exception_in_connection_lost_goes_to_the_handler(loop, loop_errors):
    class Boom(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise ZeroDivisionError("connection_lost")

    async def main():
        t, p = await endpoint(loop, lambda: Boom(loop), local_addr=("127.0.0.1", 0))
        sock = t.get_extra_info("socket")
        t.close()
        await p.done
        await asyncio.sleep(0)
        return p, sock.fileno()

    p, fileno = loop.run_until_complete(main())
    assert p.events == ["made", ("lost", None)]
    assert fileno == -1  # the socket is closed all the same
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"].startswith("Exception in callback ")
    assert isinstance(loop_errors[0]["exception"], ZeroDivisionError)
    loop_errors.clear()
