"""A TLS server's accept, on both loops (``loop`` fixture).

asyncio accepts each connection of a TLS server in ``_accept_connection``
and hands it to a task running ``_accept_connection2``, which lives until
the handshake ends. ferroloop accepts natively (``src/server.rs``) but makes
the same task in the same step, so what a program can see of it is
asyncio's: the task in ``all_tasks()``, its coroutine, its context (a copy of
the one the server was started in), its cancellation closing the
connection, and the accepted socket and peer address the transport reports.
Running out of descriptors on accept is reported and retried as asyncio
does, for plain and TLS servers alike.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import gc
import os
import resource
import socket

import pytest
from ssl_support import (
    HOST,
    certs_fixture,  # noqa: F401  (the certs fixture)
    check_accept_failures,
    client_context,
    close_server,
    iterations,
    server_context,
    start_server,
    take_errors,
)

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def echo_and_close(reader, writer, data: bytes) -> bytes:
    """Send ``data``, read as many bytes back, close the client."""
    writer.write(data)
    got = await reader.readexactly(len(data))
    writer.close()
    await writer.wait_closed()
    return got


def accept_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("_accept_connection2")]


class Seen(asyncio.Protocol):
    def __init__(self, seen: list) -> None:
        self.seen = seen
        task = asyncio.current_task()
        self.seen.append(("factory", VAR.get(), task.get_coro().__qualname__ if task else None))
        VAR.set("changed in the task")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.seen.append(
            (
                "made",
                VAR.get(),
                transport.get_extra_info("peername"),
                (sock.family, sock.type, sock.gettimeout()),
                sock.family != socket.AF_UNIX and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
            )
        )

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.seen.append(("lost", exc))


def test_accept_task_lives_until_the_handshake_ends(loop, loop_errors, certs):
    async def main():
        seen: list = []
        VAR.set("server")
        server, port = await start_server(loop, lambda: Seen(seen), server_context(certs))
        VAR.set("after start_server")
        raw = socket.socket()
        raw.setblocking(False)
        await loop.sock_connect(raw, (HOST, port))
        await iterations(10)
        # No ClientHello sent: the handshake waits, and so does the task.
        tasks = accept_tasks()
        names = [t.get_name().startswith("Task-") for t in tasks]
        coros = [t.get_coro().__qualname__ for t in tasks]
        # A real client completes its handshake beside the waiting one.
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client_context(certs), server_hostname="localhost"
        )
        client_addr = writer.get_extra_info("sockname")
        writer.write(b"ping")
        echoed = await reader.readexactly(4)
        await iterations(5)
        after_handshake = len(accept_tasks())
        # Cancelling the waiting task closes its connection (asyncio's
        # `transport.close()` in `_accept_connection2`).
        for t in accept_tasks():
            t.cancel()
        await iterations(5)
        eof = await asyncio.wait_for(loop.sock_recv(raw, 100), 10)
        raw.close()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        await iterations(5)
        return seen, names, coros, echoed, after_handshake, eof, client_addr

    seen, names, coros, echoed, after_handshake, eof, client_addr = run(loop, main())
    # The cancelled task's report (debug mode only, as asyncio).
    errors = check_accept_failures(loop, loop_errors)
    assert all(isinstance(e["exception"], asyncio.CancelledError) for e in errors)
    assert names == [True]
    assert coros == ["BaseSelectorEventLoop._accept_connection2"]
    assert echoed == b"ping"
    assert after_handshake == 1  # the raw connection's task, still waiting
    assert eof == b""
    factories = [s for s in seen if s[0] == "factory"]
    assert factories == [("factory", "server", "BaseSelectorEventLoop._accept_connection2")] * 2
    made = [s for s in seen if s[0] == "made"]
    # connection_made of the real client only (the raw one never finished
    # its handshake); the task's context carries the factory's change.
    assert made == [("made", "changed in the task", client_addr, (socket.AF_INET, socket.SOCK_STREAM, 0), True)]


def test_a_burst_of_clients_is_accepted_and_served(loop, certs):
    async def main():
        seen: list = []
        server, port = await start_server(loop, lambda: Seen(seen), server_context(certs))

        async def client(i: int) -> bytes:
            reader, writer = await asyncio.open_connection(
                HOST, port, ssl=client_context(certs), server_hostname="localhost"
            )
            return await echo_and_close(reader, writer, b"%03d" % i)

        got = await asyncio.gather(*(client(i) for i in range(40)))
        for _ in range(200):
            if sum(1 for s in seen if s[0] == "lost") == 40:
                break
            await asyncio.sleep(0.005)
        await close_server(server)
        return got, seen

    got, seen = run(loop, main())
    assert got == [b"%03d" % i for i in range(40)]
    assert sum(1 for s in seen if s[0] == "made") == 40
    assert sum(1 for s in seen if s[0] == "lost") == 40


# asyncio leaves the accepted socket to the garbage collector (a
# ResourceWarning) when the protocol factory raises; so does ferroloop.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_protocol_factory_error_is_swallowed_and_the_connection_closed(loop, loop_errors, certs):
    async def main():
        calls = []

        def factory() -> asyncio.Protocol:
            calls.append(1)
            raise RuntimeError("factory failed")

        server, port = await start_server(loop, factory, server_context(certs))
        reader, writer = await asyncio.open_connection(HOST, port)
        for _ in range(500):
            if calls:
                break
            await asyncio.sleep(0.002)
        await iterations(5)
        # Debug mode reports it (the report's traceback holds the socket).
        errors = check_accept_failures(loop, loop_errors)
        assert all(isinstance(e["exception"], RuntimeError) for e in errors)
        del errors
        gc.collect()
        got = await asyncio.wait_for(reader.read(100), 10)
        writer.close()
        await close_server(server)
        return calls, got

    calls, got = run(loop, main())
    assert calls == [1]
    assert got == b""


def test_tls_server_over_a_unix_socket(loop, certs, tmp_path):
    async def main():
        seen: list = []
        path = str(tmp_path / "tls.sock")
        server = await loop.create_unix_server(lambda: Seen(seen), path, ssl=server_context(certs))
        reader, writer = await asyncio.open_unix_connection(
            path, ssl=client_context(certs), server_hostname="localhost"
        )
        echoed = await echo_and_close(reader, writer, b"unix")
        await close_server(server)
        return seen, echoed

    seen, echoed = run(loop, main())
    assert echoed == b"unix"
    made = [s for s in seen if s[0] == "made"]
    assert made == [("made", "changed in the task", "", (socket.AF_UNIX, socket.SOCK_STREAM, 0), False)]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_accept_out_of_descriptors_is_reported_and_retried(loop, loop_errors, certs, tls):
    """``EMFILE`` on accept: asyncio reports it once per accept attempt of the
    readiness (``backlog`` of them), stops listening and calls
    ``_start_serving`` again after ``ACCEPT_RETRY_DELAY``; the connection
    waiting in the queue is served then."""

    async def main():
        seen: list = []
        ctx = server_context(certs) if tls else None
        server = await loop.create_server(lambda: Seen(seen), HOST, 0, ssl=ctx, backlog=3)
        port = server.sockets[0].getsockname()[1]
        client = socket.socket()
        client.setblocking(False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        spare = []
        try:
            # No descriptor left below the lowered limit.
            top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 4, hard))
            while True:
                try:
                    spare.append(os.dup(0))
                except OSError:
                    break
            await loop.sock_connect(client, (HOST, port))
            for _ in range(500):
                if loop_errors:
                    break
                await asyncio.sleep(0.002)
        finally:
            for fd in spare:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        errors = take_errors(loop_errors)
        cctx = client_context(certs) if tls else None
        reader, writer = await asyncio.open_connection(
            sock=client, ssl=cctx, server_hostname="localhost" if tls else None
        )
        echoed = await echo_and_close(reader, writer, b"late")
        await close_server(server)
        return errors, echoed

    errors, echoed = run(loop, main())
    assert [e["message"] for e in errors] == ["socket.accept() out of system resource"] * 3
    assert all(e["exception"].errno == errno.EMFILE for e in errors)
    assert all(type(e["socket"]).__name__ == "TransportSocket" for e in errors)
    assert echoed == b"late"
