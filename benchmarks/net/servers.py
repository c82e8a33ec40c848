"""One benchmark server on one event loop, until SIGTERM or SIGINT.

usage: python benchmarks/net/servers.py LOOP FLAVOUR ADDR

LOOP is asyncio, ferroloop, uvloop, rloop or veloxloop (made as benchmarks/worker.py
makes it). ADDR is HOST:PORT (port 0: the kernel picks one) or unix:PATH. FLAVOUR:

  protocol       loop.create_server, an asyncio.Protocol echoing in data_received
  streams        asyncio.start_server, reader.read(65536) / writer.write / drain
  sockets        loop.sock_accept, then per connection a task looping
                 loop.sock_recv(sock, 65536) / loop.sock_sendall
  protocol-unix  the protocol flavour through loop.create_unix_server (ADDR unix:PATH)
  http           an httptools HTTP/1.1 keep-alive Protocol answering every request
                 with RESPONSE (the bytes netbench's reference server sends)
  uvicorn        uvicorn (its httptools protocol, no access log, one worker, loop= the
                 loop's factory) serving an ASGI app with the same status, headers and
                 body (uvicorn lowercases the header names)
  udp            loop.create_datagram_endpoint, an asyncio.DatagramProtocol sending
                 every datagram back to its sender in datagram_received (ADDR HOST:PORT)
  tls            the protocol flavour over TLS: loop.create_server(..., ssl=ctx), ctx a
                 stdlib ssl.SSLContext(PROTOCOL_TLS_SERVER) with the certificate chain
                 and key in the PEM files named by BENCH_TLS_CERT and BENCH_TLS_KEY

Prints "READY <addr>" once listening (flushed), then serves. SIGTERM and SIGINT
end the process at once (their default action: a benchmark server has
nothing to clean up). Exit status 3, with the reason on stderr, when the loop
lacks what the flavour needs (NotImplementedError, a missing method).
TCP sockets get TCP_NODELAY in every flavour, whatever the loop's default,
so that no row measures Nagle's algorithm instead of the loop.

Before serving, glibc's malloc is put in the state a long-running process
reaches (see settle_malloc) unless FERROLOOP_BENCH_FRESH_MALLOC=1.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import ssl
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from worker import base_name, make_loop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BACKLOG = 1024
UNSUPPORTED = 3


class Unsupported(Exception):
    """The loop lacks what the flavour needs."""


def settle_malloc() -> None:
    """Frees one large block, as a long-running process soon has.

    glibc serves allocations above its mmap threshold (128 KiB at start) with
    mmap/munmap, and raises the threshold the first time such a block is freed
    at full size. asyncio's transports recv into a 256 KiB bytes object and
    shrink it: until some recv finds no data (EAGAIN frees the block whole),
    every read costs an mmap, a munmap and two page faults, and a fresh
    asyncio server runs about 4x slower than the same server a moment later.
    Which state a benchmark sees would otherwise depend on chance.
    """
    block = bytearray(1 << 20)
    del block


#: Set in main(): the loop's transports do not set TCP_NODELAY themselves.
#: asyncio, uvloop, rloop and ferroloop do (asyncio's `_set_nodelay`);
#: veloxloop does not, and without it a two-write response waits for a
#: delayed ACK (40 ms). Asking the others for their socket would change what
#: is measured (ferroloop makes the socket object only when asked).
TRANSPORT_NEEDS_NODELAY = False


def transport_nodelay(transport: Any) -> None:
    """TCP_NODELAY on a transport's socket, for the loops that do not set it."""
    if TRANSPORT_NEEDS_NODELAY:
        set_nodelay(transport.get_extra_info("socket"))


def set_nodelay(sock: Any) -> None:
    """TCP_NODELAY on a TCP socket (or the socket-like object a transport exposes)."""
    if sock is None:
        return
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def parse_addr(addr: str) -> tuple[str | None, str | None, int]:
    """ADDR -> (unix path, host, port); exactly one of path and host is set."""
    if addr.startswith("unix:"):
        return addr[5:], None, 0
    host, _, port = addr.rpartition(":")
    return None, host.strip("[]"), int(port)


def describe(sockets: Any) -> str:
    """The first listening socket's address in ADDR form."""
    name = sockets[0].getsockname()
    if isinstance(name, str | bytes):
        return "unix:" + (name.decode() if isinstance(name, bytes) else name)
    return f"{name[0]}:{name[1]}"


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class DatagramEchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def serve_udp(loop: Any, host: str, port: int) -> str:
    """The udp flavour: a datagram endpoint bound to (host, port)."""
    transport, _ = await loop.create_datagram_endpoint(DatagramEchoProtocol, local_addr=(host, port))
    name = transport.get_extra_info("sockname")
    if name is None:  # not every loop fills in sockname; the socket has it
        name = transport.get_extra_info("socket").getsockname()
    return f"{name[0]}:{name[1]}"


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive on httptools; pipelined requests are answered in order."""

    def connection_made(self, transport: Any) -> None:
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.error = httptools.HttpParserError
        transport_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.error:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_complete(self) -> None:  # called by the parser
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport_nodelay(writer.transport)
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve_sockets(loop: Any, host: str, port: int) -> str:
    """The sockets flavour: accept and echo with the loop's sock_* coroutines."""
    lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(BACKLOG)
    lsock.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()

    async def echo(conn: socket.socket) -> None:
        try:
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass
        finally:
            conn.close()

    async def accept_forever() -> None:
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            set_nodelay(conn)
            task = loop.create_task(echo(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = loop.create_task(accept_forever())
    tasks.add(acceptor)
    # A loop without sock_accept fails at the first step: let it, before READY.
    for _ in range(3):
        await asyncio.sleep(0)
    if acceptor.done():
        acceptor.result()
    return describe([lsock])


def tls_context() -> ssl.SSLContext:
    """The tls flavour's server context: stdlib defaults, the benchmark's certificate."""
    cert, key = os.environ.get("BENCH_TLS_CERT"), os.environ.get("BENCH_TLS_KEY")
    if not cert or not key:
        raise SystemExit("the tls flavour needs BENCH_TLS_CERT and BENCH_TLS_KEY (PEM files)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def start(loop: Any, flavour: str, addr: str) -> str:
    """Starts the server on the running loop; returns the address it listens on."""
    path, host, port = parse_addr(addr)
    if flavour in ("protocol", "http"):
        factory = EchoProtocol if flavour == "protocol" else HttpProtocol
        server = await loop.create_server(factory, host, port, backlog=BACKLOG)
    elif flavour == "tls":
        # A loop without TLS may raise here (unsupported) or ignore ssl= and
        # serve plaintext; netbench's client reports the latter.
        server = await loop.create_server(EchoProtocol, host, port, backlog=BACKLOG, ssl=tls_context())
    elif flavour == "protocol-unix":
        if path is None:
            raise SystemExit("protocol-unix needs ADDR unix:PATH")
        if os.path.exists(path):
            os.unlink(path)
        server = await loop.create_unix_server(EchoProtocol, path, backlog=BACKLOG)
    elif flavour == "streams":
        server = await asyncio.start_server(stream_echo, host, port, backlog=BACKLOG)
    elif flavour == "sockets":
        assert host is not None
        return await serve_sockets(loop, host, port)
    elif flavour == "udp":
        if host is None:
            raise SystemExit("udp needs ADDR HOST:PORT")
        return await serve_udp(loop, host, port)
    else:
        raise SystemExit(f"unknown flavour {flavour}")
    return describe(server.sockets)


def run_uvicorn(loop_name: str, addr: str) -> None:
    """uvicorn's own Server.run, with the loop's factory as `loop=` (uvicorn >= 0.36)."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoDelayHttpTools(HttpToolsProtocol):  # http="httptools", plus TCP_NODELAY
        def connection_made(self, transport: Any) -> None:
            transport_nodelay(transport)
            super().connection_made(transport)

    _, host, port = parse_addr(addr)
    loop_name = base_name(loop_name)
    factory = "asyncio:SelectorEventLoop" if loop_name == "asyncio" else f"{loop_name}:new_event_loop"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        headers = [(b"Content-Length", b"13"), (b"Content-Type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"Hello, world!"})

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.should_exit:  # startup failed; uvicorn has logged why
                return
            print("READY", describe(self.servers[0].sockets), flush=True)

    config = uvicorn.Config(
        app,
        host=host or "127.0.0.1",
        port=port,
        loop=factory,
        http=NoDelayHttpTools,
        lifespan="off",
        access_log=False,
        server_header=False,
        date_header=False,
        workers=1,
        log_level="warning",
        backlog=BACKLOG,
    )
    Server(config).run()


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    loop_name, flavour, addr = sys.argv[1:]
    global TRANSPORT_NEEDS_NODELAY
    TRANSPORT_NEEDS_NODELAY = loop_name == "veloxloop"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if os.environ.get("FERROLOOP_BENCH_FRESH_MALLOC") != "1":
        settle_malloc()
    if flavour == "uvicorn":
        run_uvicorn(loop_name, addr)
        return
    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        where = loop.run_until_complete(start(loop, flavour, addr))
    except (NotImplementedError, AttributeError) as e:
        sys.stderr.write(f"unsupported: {loop_name} {flavour}: {type(e).__name__}: {e}\n")
        sys.exit(UNSUPPORTED)
    print("READY", where, flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
