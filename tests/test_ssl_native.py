"""The native TLS record path (``ferroloop._sslproto``, ``src/transports/sslproto*.rs``)
against asyncio's ``SSLProtocol``, on both loops (``loop`` fixture).

The native path skips the ``read()`` that ends each batch of records with
``SSLWantReadError`` when the record framing shows nothing unread, and turns
that tracking off for bytes that are not TLS records. These tests cut the
records by hand (``ssl_support.MemoryTLSClient``) and check what the
application protocol sees: how the plaintext is split into
``data_received`` calls and how a connection carrying garbage ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
import ssl
from asyncio import sslproto

import pytest
from ssl_support import (
    HOST,
    MemoryTLSClient,
    certs_fixture,  # noqa: F401  (the certs fixture)
    close_server,
    iterations,
    server_context,
    start_server,
)


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


class Chunks(asyncio.Protocol):
    """Records each ``data_received`` call and how the connection ended."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)
        if not self.done.done():
            self.done.set_result(None)


async def connected(loop, certs, version=None, ctx=None):
    made: list[Chunks] = []

    def factory() -> Chunks:
        made.append(Chunks())
        return made[-1]

    server, port = await start_server(loop, factory, ctx or server_context(certs))
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, (HOST, port))
    cctx = ssl.create_default_context(cafile=certs.ca)
    if version is not None:
        cctx.maximum_version = version
    client = MemoryTLSClient(loop, sock, cctx)
    await client.handshake()
    for _ in range(500):
        if made and hasattr(made[0], "transport"):
            break
        await asyncio.sleep(0.002)
    return server, sock, client, made[0]


async def settle(proto: Chunks, total: int) -> None:
    for _ in range(500):
        if sum(map(len, proto.chunks)) >= total:
            return
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
def test_records_of_one_read_arrive_in_one_call_and_a_split_record_later(loop, certs, version):
    async def main():
        server, sock, client, proto = await connected(loop, certs, version)
        parts = [bytes([65 + i]) * 3000 for i in range(4)]
        records = [client.records(p) for p in parts]
        # Three whole records and the first half of the fourth in one send.
        half = len(records[3]) // 2
        await client.send(b"".join(records[:3]) + records[3][:half])
        await settle(proto, 9000)
        await iterations(5)
        first = list(proto.chunks)
        await client.send(records[3][half:])
        await settle(proto, 12000)
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await close_server(server)
        return first, proto.chunks

    first, chunks = run(loop, main())
    assert [len(c) for c in first] == [9000]
    assert [len(c) for c in chunks] == [9000, 3000]
    assert b"".join(chunks) == b"A" * 3000 + b"B" * 3000 + b"C" * 3000 + b"D" * 3000


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
def test_records_one_byte_at_a_time(loop, certs, version):
    async def main():
        server, sock, client, proto = await connected(loop, certs, version)
        data = client.records(b"x" * 100) + client.records(b"y" * 50)
        await client.send(data, piece=1)
        await settle(proto, 150)
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await close_server(server)
        return proto.chunks

    chunks = run(loop, main())
    assert b"".join(chunks) == b"x" * 100 + b"y" * 50
    # Plaintext comes out a whole record at a time, however the bytes arrive.
    ends = [sum(map(len, chunks[: i + 1])) for i in range(len(chunks))]
    assert set(ends) <= {100, 150}


@pytest.mark.parametrize(
    "garbage,reason",
    [
        (b"\x17\x03\x03\xff\xff" + b"z" * 64, "PACKET_LENGTH_TOO_LONG"),  # a length no TLS record has
        (b"\x30\x03\x03\x00\x10" + b"z" * 16, "BAD_RECORD_TYPE"),  # an unknown content type
        (b"GET / HTTP/1.1\r\n\r\n", "WRONG_VERSION_NUMBER"),  # not TLS at all
    ],
    ids=["oversized", "content-type", "plaintext"],
)
def test_bytes_that_are_not_records_end_the_connection_as_on_asyncio(loop, certs, garbage, reason):
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))

    async def main():
        server, sock, client, proto = await connected(loop, certs)
        await client.send(client.records(b"before"))
        await settle(proto, 6)
        await client.send(garbage)
        await asyncio.wait_for(proto.done, 10)
        sock.close()
        await close_server(server)
        return proto

    proto = run(loop, main())
    assert proto.chunks == [b"before"]
    assert len(proto.lost) == 1
    exc = proto.lost[0]
    assert isinstance(exc, ssl.SSLError)
    assert (exc.library, exc.reason) == ("SSL", reason)
    # An OSError: _fatal_error logs it only in debug mode.
    assert errors == []


def test_a_context_sslobject_class_is_called_as_asyncio_calls_it(loop, certs):
    calls: list[tuple[int, bool]] = []

    class Recording(ssl.SSLObject):
        def read(self, len=1024, buffer=None):
            calls.append((len, buffer is None))
            return super().read(len, buffer)

    ctx = server_context(certs)
    ctx.sslobject_class = Recording

    async def main():
        server, sock, client, proto = await connected(loop, certs, ctx=ctx)
        await client.send(client.records(b"hello"))
        await settle(proto, 5)
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await close_server(server)
        return proto.chunks

    assert run(loop, main()) == [b"hello"]
    # asyncio's _do_read__copied: read(max_size), no buffer, until SSLWantReadError or b''.
    assert calls and set(calls) == {(256 * 1024, True)}


# asyncio's methods the native path stands for, as read for this version of
# ferroloop (the same on 3.11, 3.12 and 3.13 unless two are given). A new
# Python whose asyncio changes one of them must be reviewed against
# src/transports/sslproto_io.rs and sslproto_life.rs.
EMULATED = {
    ("SSLProtocol", "get_buffer"): "b684ff",
    ("SSLProtocol", "buffer_updated"): "44acea",
    ("SSLProtocol", "_do_handshake"): "53032c",
    ("SSLProtocol", "_do_read"): "b1d2b2",
    ("SSLProtocol", "_do_read__copied"): "316ed3",
    ("SSLProtocol", "_write_appdata"): "d6eb2d",
    ("SSLProtocol", "_do_write"): "521f59",
    ("SSLProtocol", "_process_outgoing"): "b2ddff",
    ("SSLProtocol", "_control_app_writing"): "a15529",
    ("SSLProtocol", "_control_ssl_reading"): "cbf482",
    ("_SSLProtocolTransport", "write"): "96d383",
    ("_SSLProtocolTransport", "writelines"): "5e379c",
    # src/transports/sslproto_life.rs (the once-per-connection steps). Where
    # 3.13 differs (the timeout callback, `handshake_exc = None`), both
    # versions' sources are accepted: the native code follows each.
    ("SSLProtocol", "__init__"): "a81038",
    ("SSLProtocol", "_set_app_protocol"): "8d8a80",
    ("SSLProtocol", "_get_app_transport"): "7a3ee0",
    ("SSLProtocol", "_set_read_buffer_limits"): "7e4ff2",
    ("SSLProtocol", "_set_write_buffer_limits"): "07ff4a",
    ("SSLProtocol", "_set_state"): "1ba2b5",
    ("SSLProtocol", "_wakeup_waiter"): "6cdbe6",
    ("SSLProtocol", "_call_eof_received"): "f86e3a",
    ("SSLProtocol", "connection_made"): "e17bed",
    ("SSLProtocol", "_start_handshake"): ("b557c6", "d93a9c"),
    ("SSLProtocol", "_on_handshake_complete"): ("6f4395", "df208a"),
    ("SSLProtocol", "connection_lost"): "8c1d57",
    ("SSLProtocol", "_start_shutdown"): ("9ebbc8", "4b85c2"),
    ("SSLProtocol", "_do_flush"): "5a8b5b",
    ("SSLProtocol", "_do_shutdown"): "8b7e8d",
    ("SSLProtocol", "_on_shutdown_complete"): "19cddb",
}


@pytest.mark.parametrize("cls,name", sorted(EMULATED), ids=lambda v: v if isinstance(v, str) else None)
def test_asyncio_methods_the_native_path_emulates_are_unchanged(cls, name):
    source = inspect.getsource(getattr(getattr(sslproto, cls), name))
    known = EMULATED[(cls, name)]
    assert hashlib.md5(source.encode()).hexdigest()[:6] in ((known,) if isinstance(known, str) else known), (
        f"asyncio.sslproto.{cls}.{name} changed on this Python: review the native TLS path"
    )


def test_asyncio_flow_control_defaults_the_native_init_computes_are_unchanged():
    """``__init__``'s buffer limits: ``add_flowcontrol_defaults(None, None, kb)``."""
    source = inspect.getsource(sslproto.add_flowcontrol_defaults)
    assert hashlib.md5(source.encode()).hexdigest()[:6] == "7f373d"


def test_asyncio_start_tls_the_loop_reimplements_is_unchanged():
    """ferroloop's Loop.start_tls is base_events' (3.11-3.13) with the native-path SSLProtocol."""
    import asyncio.base_events

    source = inspect.getsource(asyncio.base_events.BaseEventLoop.start_tls)
    assert hashlib.md5(source.encode()).hexdigest()[:6] == "706a6a", (
        "asyncio's BaseEventLoop.start_tls changed on this Python: review ferroloop's Loop.start_tls"
    )


@pytest.mark.deviation("D-019")
def test_ssl_protocol_class_attribute_max_size(loop, certs):
    """``max_size`` read on the SSLProtocol class itself (not an instance)."""

    async def main():
        server, sock, _client, proto = await connected(loop, certs)
        ssl_proto = proto.transport._ssl_protocol
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await close_server(server)
        return ssl_proto

    ssl_proto = run(loop, main())
    assert isinstance(ssl_proto, sslproto.SSLProtocol)
    assert ssl_proto.max_size == 256 * 1024
    assert type(ssl_proto).max_size == 256 * 1024


@pytest.mark.deviation("D-020")
def test_each_connection_has_its_own_read_buffer(loop, certs):
    """Two connections' ``_ssl_buffer``: distinct objects on asyncio."""

    async def main():
        first = await connected(loop, certs)
        second = await connected(loop, certs)
        for _server, _sock, client, proto in (first, second):
            await client.send(client.records(b"data"))
            await settle(proto, 4)
        buffers = [proto.transport._ssl_protocol._ssl_buffer for *_, proto in (first, second)]
        for server, sock, _client, proto in (first, second):
            sock.close()
            await asyncio.wait_for(proto.done, 10)
            await close_server(server)
        return buffers

    a, b = run(loop, main())
    assert len(a) == len(b) == 256 * 1024
    assert a is not b


@pytest.mark.parametrize(
    "make_lines,expected",
    [
        (lambda: [b"ab", bytearray(b"cd"), memoryview(b"ef"), b""], b"abcdef"),
        (lambda: (b"gh", b"ij"), b"ghij"),
        (lambda: (x for x in [b"kl", b"mn"]), b"klmn"),
    ],
    ids=["list", "tuple", "generator"],
)
def test_writelines_on_the_tls_transport(loop, certs, make_lines, expected):
    async def main():
        server, sock, client, proto = await connected(loop, certs)
        proto.transport.writelines(make_lines())
        size = proto.transport.get_write_buffer_size()
        got = await client.read(len(expected))
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await close_server(server)
        return size, got

    assert run(loop, main()) == (0, expected)


def test_writelines_with_a_str_item_is_a_fatal_error_as_on_asyncio(loop, certs):
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))

    async def main():
        server, sock, _client, proto = await connected(loop, certs)
        proto.transport.writelines([b"ok", "text"])
        await asyncio.wait_for(proto.done, 10)
        sock.close()
        await close_server(server)
        return proto

    proto = run(loop, main())
    assert [type(e).__name__ for e in proto.lost] == ["TypeError"]
    assert [(ctx["message"], type(ctx["exception"]).__name__) for ctx in errors] == [
        ("Fatal error on SSL protocol", "TypeError")
    ]


def test_abort_and_extra_info_after_the_connection_is_lost(loop, certs):
    """asyncio's connection_lost sets ``_transport`` and ``_app_protocol`` to
    None; ``abort()`` (asyncpg's close does it) and ``get_extra_info()`` read
    them afterwards."""

    async def main():
        server, sock, _client, proto = await connected(loop, certs)
        transport = proto.transport
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await iterations(2)
        ssl_proto = transport._ssl_protocol
        state = (ssl_proto._transport, ssl_proto._app_protocol)
        transport.abort()
        info = (transport.get_extra_info("peername"), transport.get_extra_info("nothing", "default"))
        await close_server(server)
        return state, info, transport.is_closing()

    state, info, closing = run(loop, main())
    assert state == (None, None)
    assert info == (None, "default")
    assert closing is True


def test_writelines_of_a_non_iterable_raises_asyncios_type_error(loop, certs):
    async def main():
        server, sock, client, proto = await connected(loop, certs)
        with pytest.raises(TypeError, match="'int' object is not iterable"):
            proto.transport.writelines(123)
        # Nothing was queued: the connection still echoes a later write.
        proto.transport.write(b"after")
        got = await client.read(5)
        sock.close()
        await asyncio.wait_for(proto.done, 10)
        await close_server(server)
        return got

    assert run(loop, main()) == b"after"


def test_timeout_callbacks_and_state_through_a_connection_are_asyncios(loop, certs):
    """The once-per-connection steps (native on ferroloop): the handshake and
    shutdown timeout callbacks are asyncio's own (a lambda on 3.11/3.12, the
    bound method on 3.13), and the protocol's state, app state and extra
    info after the handshake and after the connection are asyncio's."""
    from ssl_support import client_context

    seen = {}

    def callback_name(handle):
        cb = handle._callback
        return getattr(cb, "__qualname__", None), getattr(cb, "__module__", None), type(cb).__name__

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            proto = self.transport._ssl_protocol
            seen["handshake_handle"] = proto._handshake_timeout_handle
            seen["wrapped"] = (proto._state.name, proto._app_state.name, list(proto._extra))
            self.transport.close()  # starts the shutdown: its timeout handle
            shutdown = proto._shutdown_timeout_handle
            seen["shutdown"] = shutdown is not None and callback_name(shutdown)
            seen["proto"] = proto

    # The handshake's timeout handle, as _start_handshake made it.
    made = []
    real_call_later = loop.call_later

    def call_later(delay, callback, *args, **kwargs):
        handle = real_call_later(delay, callback, *args, **kwargs)
        name = getattr(callback, "__qualname__", "")
        if "SSLProtocol" in name:
            made.append((delay, callback_name(handle)))
        return handle

    loop.call_later = call_later

    async def main():
        server, port = await start_server(loop, Server, server_context(certs))
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client_context(certs), server_hostname="localhost"
        )
        writer.write(b"x")
        await reader.read()
        writer.close()
        await writer.wait_closed()
        await iterations(5)
        await close_server(server)

    try:
        run(loop, main())
    finally:
        del loop.call_later
    proto = seen["proto"]
    lambdas = any(
        c.co_name == "<lambda>" for c in sslproto.SSLProtocol._start_handshake.__code__.co_consts if inspect.iscode(c)
    )
    if lambdas:
        handshake = ("SSLProtocol._start_handshake.<locals>.<lambda>", "asyncio.sslproto", "function")
        shutdown = ("SSLProtocol._start_shutdown.<locals>.<lambda>", "asyncio.sslproto", "function")
    else:
        handshake = ("SSLProtocol._check_handshake_timeout", "asyncio.sslproto", "method")
        shutdown = ("SSLProtocol._check_shutdown_timeout", "asyncio.sslproto", "method")
    # The client and the server side each start a handshake.
    assert [m[1] for m in made].count(handshake) == 2
    assert seen["handshake_handle"] is None
    assert seen["wrapped"] == (
        "WRAPPED",
        "STATE_CON_MADE",
        ["sslcontext", "peercert", "cipher", "compression", "ssl_object"],
    )
    assert seen["shutdown"] == shutdown
    assert (proto._state.name, proto._app_state.name, proto._transport, proto._app_protocol, proto._waiter) == (
        "UNWRAPPED",
        "STATE_CON_LOST",
        None,
        None,
        None,
    )
    assert proto._shutdown_timeout_handle is None and proto._handshake_timeout_handle is None
    assert proto._conn_lost == 1


def ssl_protocol_class(loop):
    """The SSLProtocol class the loop builds (ferroloop's native-path one on ferroloop)."""
    import ferroloop

    if isinstance(loop, ferroloop.Loop):
        from ferroloop import _sslproto

        return _sslproto.SSLProtocol
    return sslproto.SSLProtocol


def test_ssl_protocol_arguments_as_asyncio_takes_them(loop, certs):
    """``SSLProtocol.__init__`` (native on ferroloop): defaults, a ``None``
    given where the default is not ``None``, and asyncio's errors for bad
    timeouts; the loop's class gives what asyncio's own class gives."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    server = server_context(certs)

    def outcome(cls, kw):
        ctx = server if kw.get("server_side") else client
        try:
            p = cls(loop, asyncio.Protocol(), ctx, None, **kw)
        except Exception as e:
            return type(e).__name__, str(e)
        p._app_transport._closed = True  # never connected: no unclosed warning
        return p._server_side, p._server_hostname, p._app_state.name, p._ssl_handshake_timeout

    cases = {
        "defaults": {},
        "connection made": {"call_connection_made": None},
        "server": {"server_side": True, "server_hostname": "h", "ssl_handshake_timeout": 5},
        "falsy server_side": {"server_side": 0, "server_hostname": "h"},
        "None server_side": {"server_side": None},
        "zero timeout": {"ssl_handshake_timeout": 0},
        "negative timeout": {"ssl_shutdown_timeout": -1.5},
        "str timeout": {"ssl_handshake_timeout": "x"},
    }
    cls = ssl_protocol_class(loop)
    got = {name: outcome(cls, kw) for name, kw in cases.items()}
    assert got == {name: outcome(sslproto.SSLProtocol, kw) for name, kw in cases.items()}
    assert got["defaults"] == (False, None, "STATE_INIT", 60.0)
    assert got["connection made"] == (False, None, "STATE_CON_MADE", 60.0)
    assert got["server"] == (True, None, "STATE_INIT", 5)
    assert got["falsy server_side"] == (0, "h", "STATE_INIT", 60.0)
    assert got["zero timeout"] == ("ValueError", "ssl_handshake_timeout should be a positive number, got 0")
    assert got["negative timeout"] == ("ValueError", "ssl_shutdown_timeout should be a positive number, got -1.5")
    assert got["str timeout"][0] == "TypeError"
