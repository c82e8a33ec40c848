"""loop.sock_recv / sock_recv_into / sock_recvfrom / sock_recvfrom_into /
sock_sendall / sock_sendto / sock_accept: results, waiting, cancellation,
errors, and their coroutine objects. Every test runs on asyncio and on
ferroloop."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
import warnings

import pytest


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_immediate_and_waiting_recv(loop, pair):
    a, b = pair

    async def main():
        b.send(b"ready")
        first = await loop.sock_recv(a, 100)
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        assert not task.done()
        await loop.sock_sendall(b, b"later")
        return first, await task

    assert loop.run_until_complete(main()) == (b"ready", b"later")


def test_recv_respects_n_and_returns_empty_at_eof(loop, pair):
    a, b = pair

    async def main():
        b.send(b"0123456789")
        parts = [await loop.sock_recv(a, 4), await loop.sock_recv(a, 4), await loop.sock_recv(a, 4)]
        b.shutdown(socket.SHUT_WR)
        parts.append(await loop.sock_recv(a, 4))
        parts.append(await loop.sock_recv(a, 0))
        return parts

    assert loop.run_until_complete(main()) == [b"0123", b"4567", b"89", b"", b""]


def test_recv_into_and_large_recv(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(8)
        task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0)
        b.send(b"abc")
        n = await task
        data = b"z" * (1 << 20)
        sender = asyncio.ensure_future(loop.sock_sendall(b, data))
        got = b""
        while len(got) < len(data):
            got += await loop.sock_recv(a, 2 << 20)
        await sender
        return n, bytes(buf), got == data

    assert loop.run_until_complete(main()) == (3, b"abc\x00\x00\x00\x00\x00", True)


def test_recv_of_large_then_small_then_large_messages(loop, pair):
    # Large reads and small ones in turn on one waiting socket, ending at
    # EOF: every byte arrives once, in order, no result longer than asked.
    a, b = pair
    pattern = bytes(range(256)) * 1024

    async def read_exactly(total, n):
        got = []
        while sum(map(len, got)) < total:
            part = await loop.sock_recv(a, n)
            assert 0 < len(part) <= n
            got.append(part)
        return b"".join(got)

    async def main():
        results = []
        for size in (200_000, 10, 3, 150_000, 1, 70_000):
            data = pattern[size % 251 : size % 251 + size]
            task = asyncio.ensure_future(read_exactly(len(data), 65536))
            await asyncio.sleep(0)
            await loop.sock_sendall(b, data)
            results.append(await task == data)
        # Waiting after a large read, then a small message.
        task = asyncio.ensure_future(loop.sock_recv(a, 65536))
        await asyncio.sleep(0.01)
        assert not task.done()
        b.send(b"tail")
        results.append(await task)
        b.shutdown(socket.SHUT_WR)
        results.append(await loop.sock_recv(a, 65536))
        return results

    assert loop.run_until_complete(main()) == [True] * 6 + [b"tail", b""]


def test_sendall_of_64_mib_waits_for_the_reader(loop, pair):
    a, b = pair
    data = bytes(range(256)) * (256 * 1024)

    async def main():
        sender = asyncio.ensure_future(loop.sock_sendall(b, memoryview(data)))
        await asyncio.sleep(0)
        assert not sender.done()
        got = bytearray()
        buf = bytearray(65536)
        while len(got) < len(data):
            n = await loop.sock_recv_into(a, buf)
            got += buf[:n]
        await sender
        return bytes(got) == data

    assert loop.run_until_complete(main())


def test_cancelled_recv_reads_nothing(loop, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        b.send(b"kept for the next reader")
        await asyncio.sleep(0.01)
        return await loop.sock_recv(a, 100)

    assert loop.run_until_complete(main()) == b"kept for the next reader"


def test_wait_for_timeout_on_recv(loop, pair):
    a, _ = pair

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 0.01)
        # The fd is free again.
        got = []
        loop.add_reader(a, lambda: got.append(1))
        assert loop.remove_reader(a)
        return got

    assert loop.run_until_complete(main()) == []


def test_errors_of_a_closed_socket_and_of_bad_arguments(loop, pair):
    a, b = pair

    async def main():
        errors = []
        a2, b2 = socket.socketpair()
        a2.setblocking(False)
        a2.close()
        with pytest.raises(OSError) as ei:
            await loop.sock_recv(a2, 10)
        errors.append(ei.value.errno)
        with pytest.raises(ValueError, match="negative buffersize in recv"):
            await loop.sock_recv(a, -1)
        with pytest.raises(TypeError, match="recv_into.. argument 1 must be read-write bytes-like object, not bytes"):
            await loop.sock_recv_into(a, b"readonly")
        with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
            await loop.sock_sendall(b, "text")
        with pytest.raises(TypeError, match=r"sock_recv\(\) missing 1 required positional argument: 'n'"):
            loop.sock_recv(a)
        b2.close()
        return errors

    assert loop.run_until_complete(main()) == [9]


def test_peer_reset_fails_the_waiting_recv(loop):
    async def main():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        cl = socket.socket()
        cl.setblocking(False)
        await loop.sock_connect(cl, srv.getsockname())
        conn, _ = await loop.sock_accept(srv)
        task = asyncio.ensure_future(loop.sock_recv(conn, 10))
        await asyncio.sleep(0)
        cl.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        cl.close()
        try:
            await task
        except ConnectionResetError as e:
            return e.errno
        finally:
            conn.close()
            srv.close()

    assert loop.run_until_complete(main()) == 104


def test_ssl_socket_is_refused_when_awaited(loop):
    ctx = ssl.create_default_context()
    sock = ctx.wrap_socket(socket.socket(), server_hostname="example.org", do_handshake_on_connect=False)

    async def main():
        coro = loop.sock_recv(sock, 10)  # nothing checked at call time
        with pytest.raises(TypeError, match="Socket cannot be of type SSLSocket"):
            await coro

    try:
        loop.run_until_complete(main())
    finally:
        sock.close()


def test_debug_mode_refuses_a_blocking_socket(loop, pair):
    a, _ = pair
    blocking = socket.socket()
    loop.set_debug(True)

    async def main():
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            await loop.sock_recv(blocking, 10)
        a.setblocking(True)
        try:
            with pytest.raises(ValueError, match="the socket must be non-blocking"):
                await loop.sock_sendall(a, b"x")
        finally:
            a.setblocking(False)

    try:
        loop.run_until_complete(main())
    finally:
        blocking.close()
        loop.set_debug(False)


def test_coroutine_objects(loop, pair):
    a, b = pair
    coro = loop.sock_recv(a, 10)
    assert asyncio.iscoroutine(coro)
    assert coro.__qualname__ == "BaseSelectorEventLoop.sock_recv"
    b.send(b"x")
    assert loop.run_until_complete(coro) == b"x"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        loop.run_until_complete(coro)

    async def main():
        task = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        b.send(b"y")
        return await task

    assert loop.run_until_complete(main()) == b"y"
    coro = loop.sock_sendall(b, b"z")
    coro.close()
    coro.close()
    gc.collect()


def test_finished_coroutine_raises_stop_iteration_as_a_coroutine_does(loop, pair):
    """``send(None)`` on an operation that completes at once: ``StopIteration()``
    (no arguments) for None, ``StopIteration(value)`` otherwise, a tuple kept
    whole; the same through ``__await__().__next__()`` and ``await``."""
    a, b = pair

    def finish(step):
        try:
            step()
        except StopIteration as e:
            return e.args, e.value
        raise AssertionError("did not finish")

    results = [finish(lambda: loop.sock_sendall(a, b"hi").send(None))]
    results.append(finish(lambda: loop.sock_recv(b, 10).send(None)))
    b.send(b"again")
    results.append(finish(loop.sock_recv(a, 10).__await__().__next__))
    results.append(finish(lambda: loop.sock_sendall(a, b"x").__await__().__next__()))
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u1.bind(("127.0.0.1", 0))
    u1.setblocking(False)
    u2.sendto(b"dg", u1.getsockname())
    args, value = finish(lambda: loop.sock_recvfrom(u1, 10).send(None))
    results.append((len(args), args[0][0], args[0][1][1] == u2.getsockname()[1], value == args[0]))
    u1.close()
    u2.close()

    async def awaited():
        b.recv(10)
        return await loop.sock_sendall(a, b"y"), await loop.sock_recv(b, 10)

    assert loop.run_until_complete(awaited()) == (None, b"y")
    assert results == [
        ((), None),
        ((b"hi",), b"hi"),
        ((b"again",), b"again"),
        ((), None),
        (1, b"dg", True, True),
    ]


def test_never_awaited_coroutine_warns(loop, pair):
    a, _ = pair
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        coro = loop.sock_recv(a, 1)
        del coro
        gc.collect()
    msgs = [str(x.message) for x in w if x.category is RuntimeWarning]
    assert msgs == ["coroutine 'BaseSelectorEventLoop.sock_recv' was never awaited"]


def test_transport_fd_is_refused_when_waiting(loop):
    async def main():
        a, b = socket.socketpair()
        t, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(a, 10)
        finally:
            t.close()
            b.close()
            await asyncio.sleep(0)

    loop.run_until_complete(main())


def test_add_reader_replaces_a_waiting_recv(loop, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(100)))
        b.send(b"to the reader")
        await asyncio.sleep(0.02)
        assert loop.remove_reader(a)
        done = task.done()
        task.cancel()
        return got, done

    assert loop.run_until_complete(main()) == ([b"to the reader"], False)


def test_udp_recvfrom_sendto(loop):
    async def main():
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.setblocking(False)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            task = asyncio.ensure_future(loop.sock_recvfrom(r, 100))
            await asyncio.sleep(0)
            sent = await loop.sock_sendto(s, b"datagram", r.getsockname())
            data, addr = await task
            buf = bytearray(4)
            task = asyncio.ensure_future(loop.sock_recvfrom_into(r, buf))
            await asyncio.sleep(0)
            await loop.sock_sendto(s, b"0123456789", r.getsockname())
            n, addr2 = await task
            return sent, data, addr[1] == s.getsockname()[1], n, bytes(buf), addr2 == addr
        finally:
            r.close()
            s.close()

    assert loop.run_until_complete(main()) == (8, b"datagram", True, 4, b"0123", True)


def test_sock_accept_waits_and_returns_a_non_blocking_socket(loop):
    async def main():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        task = asyncio.ensure_future(loop.sock_accept(srv))
        await asyncio.sleep(0)
        assert not task.done()
        cl = socket.create_connection(srv.getsockname())
        conn, addr = await task
        try:
            return conn.gettimeout(), addr == cl.getsockname(), conn.family == srv.family
        finally:
            conn.close()
            cl.close()
            srv.close()

    assert loop.run_until_complete(main()) == (0.0, True, True)


def test_fd_number_reused_after_close_gets_a_fresh_registration(loop):
    """An fd whose socket was closed after socket operations, reused by a new
    socket: operations, readers and transports on the new one must work."""

    async def cycle(keep_dup):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.send(b"x")
        assert await loop.sock_recv(a, 10) == b"x"
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        b.send(b"y")
        assert await task == b"y"
        fd = a.fileno()
        dup = a.dup() if keep_dup else None
        a.close()
        b.close()
        c, d = socket.socketpair()
        c.setblocking(False)
        if c.fileno() != fd:
            os.dup2(c.fileno(), fd)
            c.close()
            c = socket.socket(fileno=fd)
            c.setblocking(False)
        task = asyncio.ensure_future(loop.sock_recv(c, 10))
        await asyncio.sleep(0)
        if dup is not None:
            dup.close()
        d.send(b"fresh")
        got = await asyncio.wait_for(task, 5)
        # A reader, then a transport, on the same fd.
        seen = loop.create_future()
        loop.add_reader(c, lambda: seen.done() or seen.set_result(c.recv(10)))
        d.send(b"reader")
        got2 = await asyncio.wait_for(seen, 5)
        loop.remove_reader(c)
        t, _p = await loop.connect_accepted_socket(asyncio.Protocol, c)
        t.close()
        d.close()
        await asyncio.sleep(0)
        return got, got2

    async def main():
        return [await cycle(False), await cycle(True)]

    assert loop.run_until_complete(main()) == [(b"fresh", b"reader")] * 2


@pytest.mark.deviation("D-006")
def test_sock_methods_return_python_coroutines(loop, pair):
    import inspect

    a, _ = pair
    coro = loop.sock_recv(a, 1)
    try:
        assert inspect.iscoroutine(coro)
    finally:
        coro.close()


def test_sock_sendfile_and_transport_sendfile(loop, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "payload"
    path.write_bytes(data)

    async def main():
        results = {}
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with open(path, "rb") as f:
            reader = asyncio.ensure_future(_read_exactly(loop, b, len(data) - 1000 - 5))
            sent = await loop.sock_sendfile(a, f, offset=1000, count=len(data) - 1000 - 5)
            results["sock"] = (sent, await reader == data[1000:-5], f.tell())
        a.close()
        b.close()

        class Sink(asyncio.Protocol):
            def __init__(self):
                self.buf = bytearray()
                self.done = loop.create_future()

            def data_received(self, d):
                self.buf += d

            def eof_received(self):
                self.done.set_result(bytes(self.buf))

        server_sink = Sink()
        server = await loop.create_server(lambda: server_sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with open(path, "rb") as f:
            t.write(b"head:")
            sent = await loop.sendfile(t, f)
            t.write(b":tail")
            t.write_eof()
            got = await server_sink.done
            results["transport"] = (sent, got == b"head:" + data + b":tail", f.tell())
        t.close()
        server.close()
        await server.wait_closed()
        return results

    r = loop.run_until_complete(main())
    assert r["sock"] == (len(data) - 1005, True, len(data) - 5)
    assert r["transport"] == (len(data), True, len(data))


def test_sock_sendfile_to_the_end_over_small_tcp_buffers(loop, tmp_path):
    # The last chunk leaves the socket writable; the end of the file is only
    # seen by one more sendfile, on the next writable event (asyncio's way).
    data = b"x" * (256 * 1024 + 1)
    path = tmp_path / "payload"
    path.write_bytes(data)

    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a = socket.socket()
        a.connect(lsock.getsockname())
        a.setblocking(False)
        b, _ = lsock.accept()
        b.setblocking(False)
        lsock.close()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with open(path, "rb") as f:
            reader = asyncio.ensure_future(_read_exactly(loop, b, len(data)))
            sent = await asyncio.wait_for(loop.sock_sendfile(a, f), 20)
            got = await asyncio.wait_for(reader, 20)
            res = (sent, got == data, f.tell())
        a.close()
        b.close()
        return res

    assert loop.run_until_complete(main()) == (len(data), True, len(data))


async def _read_exactly(loop, sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_sock_sendfile_of_an_empty_file_and_fallback(loop, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            with open(empty, "rb") as f:
                n0 = await loop.sock_sendfile(a, f)
            # Not a regular file: asyncio falls back to reading and sending.
            import io

            n1 = await loop.sock_sendfile(a, io.BytesIO(b"abc"))
            b.setblocking(False)
            await asyncio.sleep(0.01)
            return n0, n1, b.recv(10)
        finally:
            a.close()
            b.close()

    assert loop.run_until_complete(main()) == (0, 3, b"abc")


def test_zero_length_reads_return_at_once(loop):
    # socket.recv(0) and recv_into() of an empty buffer make no system call:
    # no wait for data, no error on a closed or unconnected socket.
    a, b = socket.socketpair()
    c = socket.socket()
    a.setblocking(False)
    c.setblocking(False)
    try:

        async def main():
            got = [await loop.sock_recv(a, 0), await loop.sock_recv_into(a, bytearray())]
            got += [await loop.sock_recv(c, 0), await loop.sock_recv_into(c, bytearray())]
            b.send(b"x")
            got.append(await loop.sock_recv(a, 0))
            got.append(await loop.sock_recv(a, 10))  # the byte is still there
            a.close()
            got += [await loop.sock_recv(a, 0), await loop.sock_recv_into(a, memoryview(bytearray(0)))]
            return got

        assert loop.run_until_complete(asyncio.wait_for(main(), 5)) == [b"", 0, b"", 0, b"", b"x", b"", 0]
    finally:
        for s in (a, b, c):
            s.close()


class RecordingSocket(socket.socket):
    """A socket subclass whose methods asyncio's sock_* call: the calls are logged,
    and send() sends at most 1000 bytes at a time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def recv(self, n, *flags):
        self.log.append(("recv", n))
        return super().recv(n, *flags)

    def recv_into(self, buf, *args):
        self.log.append(("recv_into", len(buf)))
        return super().recv_into(buf, *args)

    def send(self, data, *flags):
        self.log.append(("send", len(data)))
        return super().send(bytes(data)[:1000], *flags)

    def accept(self):
        self.log.append(("accept",))
        return super().accept()


def test_socket_subclass_methods_are_called_as_asyncio_calls_them(loop):
    async def main():
        a, b = socket.socketpair()
        sub = RecordingSocket(family=a.family, type=a.type, fileno=a.detach())
        sub.setblocking(False)
        b.setblocking(False)
        with sub, b:
            # recv: once at once (nothing there), once on readiness.
            reader = asyncio.ensure_future(loop.sock_recv(sub, 10))
            await asyncio.sleep(0.01)
            b.send(b"hello")
            assert await reader == b"hello"
            b.send(b"world")
            buf = bytearray(3)
            assert await loop.sock_recv_into(sub, buf) == 3
            assert buf == b"wor"
            # sendall: every call goes through the subclass's send, which sends
            # 1000 bytes a time; the rest follows on writability.
            await loop.sock_sendall(sub, b"x" * 3500)
            got = b""
            while len(got) < 3500:
                await asyncio.sleep(0.001)
                try:
                    got += b.recv(65536)
                except BlockingIOError:
                    pass
            assert got == b"x" * 3500
            return list(sub.log)

    log = loop.run_until_complete(main())
    assert log == [
        ("recv", 10),
        ("recv", 10),
        ("recv_into", 3),
        ("send", 3500),
        ("send", 2500),
        ("send", 1500),
        ("send", 500),
    ]


def test_socket_subclass_accept_is_called(loop):
    async def main():
        lsock = RecordingSocket(socket.AF_INET, socket.SOCK_STREAM)
        with lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen()
            lsock.setblocking(False)
            client = socket.create_connection(lsock.getsockname())
            with client:
                conn, _ = await loop.sock_accept(lsock)
                conn.close()
            return list(lsock.log)

    assert loop.run_until_complete(main()) == [("accept",)]


def test_result_of_a_coroutine_stepped_by_hand_is_released_with_its_last_reference(loop):
    """``sock_accept()`` stepped with ``send()`` outside ``run_forever``.

    The accepted socket is released when the caller drops the result: its
    finalizer (the "unclosed socket" warning) runs at that moment, not at
    some later call into the loop. (The native path once left the release
    queued while no loop method was on the stack.)
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    client = socket.create_connection(listener.getsockname())
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")

            def accept():
                coro = loop.sock_accept(listener)
                try:
                    coro.send(None)
                except StopIteration as stop:
                    conn, _ = stop.value
                    return conn.fileno()
                raise AssertionError("sock_accept() did not finish at once")

            fd = accept()
            unclosed = [str(w.message) for w in warned if w.category is ResourceWarning]
        assert len(unclosed) == 1 and f"fd={fd}," in unclosed[0]
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        client.close()
        listener.close()
