"""Standard-library methods the native code runs statement by statement.

Per accepted connection ferroloop does natively what these Python methods
do (``src/transports/hooks.rs``: ``Server._attach``/``_detach``;
``src/transports/pysocket.rs``: ``socket.socket``'s ``__init__`` and
``close``; ``src/transports/sslobject.rs``: ``SSLContext.wrap_bio`` with
``_encode_hostname`` and ``SSLObject._create``). The source hashes pin the
versions the native code follows; a replaced method (by a test, a tracing
library) is called instead, which the dual-loop tests below check: the
replacement sees the same calls on both loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
import ssl
import sys

import pytest
from ssl_support import (
    HOST,
    certs_fixture,  # noqa: F401  (the certs fixture)
    client_context,
    close_server,
    iterations,
    server_context,
    start_server,
)

# (module, qualname) -> md5 prefix of the source, or (3.11/3.12, 3.13).
PINNED = {
    ("asyncio.base_events", "Server._attach"): ("e3d642", "9a5183"),
    ("asyncio.base_events", "Server._detach"): ("247eaa", "ce2b46"),
    ("socket", "socket.__init__"): "778467",
    ("socket", "socket.close"): "650c9c",
    ("socket", "socket._real_close"): "64593d",
    ("ssl", "SSLContext.wrap_bio"): "d2bbf1",
    ("ssl", "SSLContext._encode_hostname"): "3f5295",
    ("ssl", "SSLObject._create"): "d031d9",
}


def _resolve(module: str, qualname: str):
    obj = __import__(module, fromlist=["_"])
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part) if part == qualname.split(".")[-1] else getattr(obj, part)
    return obj.__func__ if isinstance(obj, classmethod) else obj


@pytest.mark.parametrize("module,qualname", sorted(PINNED), ids=lambda v: v)
def test_methods_the_native_path_follows_are_unchanged(module, qualname):
    source = inspect.getsource(_resolve(module, qualname))
    known = PINNED[(module, qualname)]
    assert hashlib.md5(source.encode()).hexdigest()[:6] in ((known,) if isinstance(known, str) else known), (
        f"{module}.{qualname} changed on this Python: review the native code that follows it"
    )


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


class Echo(asyncio.Protocol):
    def __init__(self, seen: list) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.sock = transport.get_extra_info("socket")
        sslobj = transport.get_extra_info("ssl_object")
        self.seen.append(("made", type(sslobj).__name__ if sslobj is not None else None))

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.seen.append(("lost", exc, self.sock.fileno()))


async def _clients(port: int, ctx, n: int) -> list[bytes]:
    got = []
    for i in range(n):
        kw = {"ssl": ctx, "server_hostname": "localhost"} if ctx is not None else {}
        reader, writer = await asyncio.open_connection(HOST, port, **kw)
        writer.write(b"x%d" % i)
        got.append(await reader.readexactly(2))
        writer.close()
        await writer.wait_closed()
    return got


def _attached(server) -> int:
    """Connections the server counts: ``_active_count`` (3.11/3.12) or ``_clients`` (3.13)."""
    if hasattr(server, "_clients"):
        return len(server._clients)
    return server._active_count


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_server_attach_and_detach_keep_wait_closed_exact(loop, certs, tls):
    """Connections attach to the server and detach at their end; from 3.12.1
    on ``wait_closed`` after ``close()`` waits for them."""

    async def main():
        seen: list = []
        ctx = server_context(certs) if tls else None
        server = await loop.create_server(lambda: Echo(seen), HOST, 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        counts = [_attached(server)]
        kw = {"ssl": client_context(certs), "server_hostname": "localhost"} if tls else {}
        conns = [await asyncio.open_connection(HOST, port, **kw) for _ in range(2)]
        for reader, writer in conns:
            writer.write(b"hi")
            await reader.readexactly(2)
        counts.append(_attached(server))
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await iterations(10)
        waiting = [not waiter.done()]
        conns[0][1].close()
        await conns[0][1].wait_closed()
        await iterations(10)
        counts.append(_attached(server))
        waiting.append(not waiter.done())
        conns[1][1].close()
        await conns[1][1].wait_closed()
        await asyncio.wait_for(waiter, 10)
        counts.append(_attached(server))
        return waiting, counts, [s[0] for s in seen]

    waiting, counts, seen = run(loop, main())
    assert counts == [0, 2, 1, 0]
    assert waiting == ([True, True] if sys.version_info >= (3, 12, 1) else [False, False])
    assert seen == ["made", "made", "lost", "lost"]


@pytest.mark.parametrize("where", ["class", "instance", "instance-attach-only"])
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_replaced_server_attach_and_detach_are_called(loop, certs, tls, where, monkeypatch):
    calls: list = []
    real_attach = asyncio.base_events.Server._attach
    real_detach = asyncio.base_events.Server._detach

    def attach(self, *args):
        calls.append("attach")
        return real_attach(self, *args)

    def detach(self, *args):
        calls.append("detach")
        return real_detach(self, *args)

    if where == "class":
        monkeypatch.setattr(asyncio.base_events.Server, "_attach", attach)
        monkeypatch.setattr(asyncio.base_events.Server, "_detach", detach)

    async def main():
        seen: list = []
        server = await loop.create_server(lambda: Echo(seen), HOST, 0, ssl=server_context(certs) if tls else None)
        if where.startswith("instance"):
            server._attach = lambda *args: attach(server, *args)
        if where == "instance":
            server._detach = lambda *args: detach(server, *args)
        port = server.sockets[0].getsockname()[1]
        got = await _clients(port, client_context(certs) if tls else None, 3)
        await iterations(10)
        await close_server(server)
        return got

    assert run(loop, main()) == [b"x0", b"x1", b"x2"]
    assert calls == (["attach"] * 3 if where == "instance-attach-only" else ["attach", "detach"] * 3)


def test_tls_connection_socket_is_closed_at_its_end(loop, certs):
    """The accepted socket object of a TLS connection is closed (fd -1) when
    ``connection_lost`` runs, on both loops; its ``_closed`` flag is set."""

    async def main():
        seen: list = []
        server, port = await start_server(loop, lambda: Echo(seen), server_context(certs))
        got = await _clients(port, client_context(certs), 2)
        await iterations(10)
        await close_server(server)
        return got, seen

    got, seen = run(loop, main())
    assert got == [b"x0", b"x1"]
    assert seen == [("made", "SSLObject"), ("lost", None, -1)] * 2


def test_replaced_socket_close_is_called(loop, certs, monkeypatch):
    closed: list = []
    real_close = socket.socket.close

    def close(self):
        closed.append(self.family)
        real_close(self)

    monkeypatch.setattr(socket.socket, "close", close)

    async def main():
        seen: list = []
        server, port = await start_server(loop, lambda: Echo(seen), server_context(certs))
        monkeypatch.setattr(socket.socket, "close", close)
        before = len(closed)
        got = await _clients(port, client_context(certs), 1)
        await iterations(10)
        server_closes = len(closed) - before
        await close_server(server)
        return got, server_closes, seen

    got, server_closes, seen = run(loop, main())
    assert got == [b"x0"]
    # The client's socket and the server's accepted one.
    assert server_closes == 2
    assert seen[-1] == ("lost", None, -1)


def test_makefile_keeps_the_tls_socket_open_until_its_own_close(loop, certs):
    """``socket.close()`` leaves the descriptor to a ``makefile()`` object
    still using it (``_io_refs``), on both loops."""

    async def main():
        files: list = []
        lost: list = []

        class P(Echo):
            def connection_made(self, transport):
                super().connection_made(transport)
                files.append((self.sock._sock, self.sock._sock.makefile("rb")))

            def connection_lost(self, exc):
                raw = self.sock._sock
                lost.append((raw._closed, raw._io_refs, raw.fileno() != -1))

        server, port = await start_server(loop, lambda: P([]), server_context(certs))
        await _clients(port, client_context(certs), 1)
        await iterations(10)
        await close_server(server)
        raw, f = files[0]
        open_before = raw.fileno() != -1
        f.close()
        return lost, open_before, raw.fileno()

    lost, open_before, fd_after = run(loop, main())
    assert lost == [(True, 1, True)]
    assert open_before
    assert fd_after == -1


class MySSLObject(ssl.SSLObject):
    pass


class MyContext(ssl.SSLContext):
    pass


@pytest.mark.parametrize("how", ["instance-attribute", "subclass", "class-attribute"])
def test_custom_sslobject_class_is_used(loop, certs, how, monkeypatch):
    """``SSLContext.sslobject_class`` and context subclasses reach ``wrap_bio``
    exactly as on asyncio: the connection's ``ssl_object`` is of that class."""
    ctx = server_context(certs)
    if how == "instance-attribute":
        ctx.sslobject_class = MySSLObject
    elif how == "subclass":
        sub = MyContext(ssl.PROTOCOL_TLS_SERVER)
        sub.load_cert_chain(certs.server_cert, certs.server_key)
        sub.sslobject_class = MySSLObject
        ctx = sub
    else:
        monkeypatch.setattr(ssl.SSLContext, "sslobject_class", MySSLObject)

    async def main():
        seen: list = []
        server, port = await start_server(loop, lambda: Echo(seen), ctx)
        got = await _clients(port, client_context(certs), 1)
        await iterations(10)
        await close_server(server)
        return got, seen

    got, seen = run(loop, main())
    assert got == [b"x0"]
    assert seen[0] == ("made", "MySSLObject")


@pytest.mark.parametrize("name", ["wrap_bio", "_encode_hostname"])
@pytest.mark.parametrize("where", ["class", "instance"])
def test_replaced_wrap_bio_is_called(loop, certs, where, name, monkeypatch):
    calls: list = []
    real = getattr(ssl.SSLContext, name)

    def replacement(self, *args, **kwargs):
        calls.append((name, args[-1] if name == "_encode_hostname" else kwargs.get("server_side")))
        return real(self, *args, **kwargs)

    ctx = server_context(certs)
    if where == "class":
        monkeypatch.setattr(ssl.SSLContext, name, replacement)
    else:
        setattr(ctx, name, lambda *args, **kwargs: replacement(ctx, *args, **kwargs))

    async def main():
        server, port = await start_server(loop, lambda: Echo([]), ctx)
        got = await _clients(port, client_context(certs), 1)
        await close_server(server)
        return got

    assert run(loop, main()) == [b"x0"]
    server_call = (name, None if name == "_encode_hostname" else True)
    client_call = (name, "localhost" if name == "_encode_hostname" else False)
    expected = [server_call, client_call] if where == "class" else [server_call]
    assert sorted(calls, key=repr) == sorted(expected, key=repr)


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        ((), {}, "missing 3 required positional arguments: 'rawsock', 'protocol', and 'sslcontext'"),
        ((1, 2, 3), {"bogus": 1}, "got an unexpected keyword argument 'bogus'"),
        ((1, 2, 3, 4, 5), {}, "takes from 4 to 5 positional arguments but 6 were given"),
        ((1, 2, 3), {"rawsock": 2}, "got multiple values for argument 'rawsock'"),
        ((1, 2), {"waiter": None}, "missing 1 required positional argument: 'sslcontext'"),
        ((1, 2, 3), {"\udcff": 1}, "got an unexpected keyword argument '\udcff'"),
    ],
    ids=["none", "unknown-keyword", "too-many", "twice", "missing-one", "not-utf8-keyword"],
)
def test_make_ssl_transport_argument_errors_are_asyncios(loop, args, kwargs, message):
    """``_make_ssl_transport`` (private, but called by libraries that make
    transports themselves) binds its arguments as asyncio's method does."""
    with pytest.raises(TypeError) as e:
        loop._make_ssl_transport(*args, **kwargs)
    assert str(e.value) == f"BaseSelectorEventLoop._make_ssl_transport() {message}"


def test_make_ssl_transport_takes_every_argument_by_keyword(loop, certs):
    """All of asyncio's parameters by name: the handshake runs over a socket
    pair, the waiter is resolved and the application protocol connected."""

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        made: list = []

        class Made(asyncio.Protocol):
            def connection_made(self, transport):
                made.append(transport.get_extra_info("sslcontext") is cctx)

        cctx = client_context(certs)
        waiter = loop.create_future()
        client = loop._make_ssl_transport(
            rawsock=a,
            protocol=Made(),
            sslcontext=cctx,
            waiter=waiter,
            server_side=False,
            server_hostname="localhost",
            extra=None,
            server=None,
            ssl_handshake_timeout=10.0,
            ssl_shutdown_timeout=10.0,
        )
        server_waiter = loop.create_future()
        server = loop._make_ssl_transport(b, asyncio.Protocol(), server_context(certs), server_waiter, server_side=True)
        await asyncio.gather(waiter, server_waiter)
        kinds = isinstance(client, asyncio.Transport), isinstance(server, asyncio.Transport)
        client.abort()
        server.abort()
        await iterations(5)
        return made, kinds

    assert run(loop, main()) == ([True], (True, True))


def test_native_path_resumes_once_a_replacement_is_undone():
    """ferroloop only (what is run, not what is seen): a replacement in place
    at the first connection is called; once asyncio's method is back, the
    native code runs it again (no Python frame of ``Server._attach``). A
    fresh interpreter: what was found is kept for the process."""
    import subprocess
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, sys, ferroloop
        import asyncio.base_events as be
        real = be.Server._attach
        calls = []
        def attach(self, *a):
            calls.append(1)
            return real(self, *a)
        be.Server._attach = attach

        async def conn(port):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            await w.wait_closed()

        async def main():
            srv = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            await conn(port)
            await asyncio.sleep(0.05)
            be.Server._attach = real
            seen = []
            sys.setprofile(lambda f, e, a: seen.append(f.f_code.co_qualname) if e == "call" else None)
            await conn(port)
            await asyncio.sleep(0.05)
            sys.setprofile(None)
            srv.close()
            await srv.wait_closed()
            print(len(calls), seen.count("Server._attach"), seen.count("Server._detach"))

        ferroloop.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0", "0"]
