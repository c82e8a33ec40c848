"""The transport fuzzer's server harness: one script of ``asyncio.Server``
calls and client actions against ``loop.create_server()`` (TCP on loopback)
or ``loop.create_unix_server()``, plain or with ``ssl=`` (the clients then
TLS clients made of ``ssl.SSLObject``, pumped by hand at every iteration),
run on one loop and recorded as plain data.

A script (``ServerExample``) names the listening socket, the backlog,
whether the server starts serving at once, which connection's protocol
factory raises, what every connection's protocol does in its callbacks, and
a list of steps: the server's methods (``close``, ``close_clients``,
``abort_clients``, ``start_serving``, ``serve_forever`` and its
cancellation, ``wait_closed``, ``is_serving``, ``sockets``), client actions
(connect, send, read, shut down, close, reset) and loop iterations. The
record holds each step's result or exception, each accepted connection's
protocol events in order (numbered in the order the server made them; how
connections' events interleave is not compared), what every client
received and how its stream ended, exception-handler calls, logs, warnings
and unraisable exceptions. See test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import re
import socket
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any

from fuzz_tls import CONTEXTS, TlsPeer
from fuzz_transport import PATTERN, Recording, exc

PORT_RE = re.compile(r"'127\.0\.0\.1', \d+")
PATH_RE = re.compile(r"/[^ ]*ferroloop-fuzz-[^ ']*")


def norm(value: Any) -> Any:
    """Ephemeral ports and temporary paths out of a record's text."""
    if isinstance(value, str):
        return PATH_RE.sub("PATH", PORT_RE.sub("'127.0.0.1', PORT", value))
    if isinstance(value, (tuple, list)):
        return type(value)(norm(v) for v in value)
    return value


@dataclass(frozen=True)
class ServerExample:
    kind: str  # "tcp" or "unix"
    backlog: int
    start_serving: bool
    factory_fails: int | None  # the connection (in accept order) whose protocol factory raises
    # What every connection's protocol does in a callback: "raise", "close",
    # "abort", "pause_reading", "write", "write_eof".
    actions: tuple[tuple[str, str], ...]
    steps: tuple[tuple[Any, ...], ...]
    tls: bool = False  # create_server(ssl=...): the clients are fuzz_tls.TlsPeer

    def __repr__(self) -> str:
        return (
            f"ServerExample(kind={self.kind!r}, backlog={self.backlog!r}, start_serving={self.start_serving!r}, "
            f"factory_fails={self.factory_fails!r}, tls={self.tls!r}, actions={self.actions!r},\n"
            f"  steps={list(self.steps)!r})"
        )


class ServerProtocol(asyncio.Protocol):
    def __init__(self, run: ServerRun, index: int) -> None:
        self.run = run
        self.index = index
        self.transport: Any = None

    def _event(self, *e: Any) -> None:
        events = self.run.events
        if e[0] == "data" and events and events[-1][:2] == (self.index, "data"):
            events[-1] = (self.index, "data", events[-1][2] + e[1])
        else:
            events.append((self.index, *e))

    def _act(self, callback: str) -> None:
        action = dict(self.run.example.actions).get(callback)
        if action is None:
            return
        if action == "raise":
            raise RuntimeError(f"raised in {callback}")
        if action == "write":
            self.transport.write(b"w" * 1000)
        else:
            getattr(self.transport, action)()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.run.transports.append(transport)
        self._event("connection_made")
        self._act("connection_made")

    def data_received(self, data: bytes) -> None:
        self._event("data", data)
        self._act("data_received")

    def eof_received(self) -> Any:
        self._event("eof_received")
        self._act("eof_received")
        return None

    def connection_lost(self, e: BaseException | None) -> None:
        self._event("connection_lost", None if e is None else exc(e))
        self._act("connection_lost")


@dataclass
class Client:
    sock: socket.socket
    got: bytearray = field(default_factory=bytearray)
    end: Any = None
    sent: int = 0
    tls: TlsPeer | None = None  # a TLS client over sock, pumped by the script


@dataclass
class ServerRun:
    impl: str
    example: ServerExample
    events: list[Any] = field(default_factory=list)
    transports: list[Any] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    made: int = 0  # protocol factory calls
    server: Any = None
    serve_task: Any = None
    errors: list[Any] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    def factory(self) -> ServerProtocol:
        index = self.made
        self.made += 1
        if index == self.example.factory_fails:
            raise RuntimeError(f"factory of connection {index} raised")
        return ServerProtocol(self, index)

    # ----- clients

    def connect(self, address: Any) -> Any:
        # A blocking connect never waits: at most backlog + 1 clients, what
        # the listening socket's queue holds even if none is accepted.
        if len(self.clients) > self.example.backlog:
            return "enough clients"
        family = socket.AF_INET if self.example.kind == "tcp" else socket.AF_UNIX
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except OSError as e:
            sock.close()
            return exc(e)
        sock.setblocking(False)
        client = Client(sock)
        if self.example.tls:
            client.tls = TlsPeer(sock, CONTEXTS[1])
            client.tls.pump()  # the ClientHello
        self.clients.append(client)
        return len(self.clients) - 1

    def client(self, i: int) -> Client | None:
        return self.clients[i % len(self.clients)] if self.clients else None

    def recv(self, c: Client) -> Any:
        if c.tls is not None:
            return c.tls.pump()
        if c.end is not None:
            return "ended"
        n = 0
        while True:
            try:
                data = c.sock.recv(1 << 20)
            except BlockingIOError:
                return n
            except OSError as e:
                c.end = exc(e)
                return c.end
            if not data:
                c.end = "eof"
                return n
            c.got += data
            n += len(data)

    def pump(self) -> None:
        """Move the TLS clients' records along (each loop iteration)."""
        for c in self.clients:
            if c.tls is not None:
                c.tls.pump()

    async def iterate(self, n: int) -> None:
        for _ in range(n):
            self.pump()
            await asyncio.sleep(0)
        self.pump()

    # ----- steps

    async def step(self, s: tuple[Any, ...], address: Any) -> Any:
        name, *args = s
        loop = asyncio.get_running_loop()
        if name == "!run":
            await self.iterate(args[0])
            return None
        if name == "!connect":
            return self.connect(address)
        if name.startswith("!"):
            c = self.client(args[0] if args else 0)
            if c is None:
                return "no client"
            if loop.get_debug():
                # A socket that only a reference cycle holds open (an accept
                # error's traceback, which debug mode hands to the exception
                # handler) closes when the collector runs, which depends on
                # each loop's allocations: collect before the client acts.
                gc.collect()
            if name == "!recv":
                return self.recv(c)
            if c.sock.fileno() == -1:
                return "closed already"
            if c.tls is not None and name in ("!send", "!shut"):
                if name == "!send":
                    return c.tls.send(PATTERN[: args[1]])
                return c.tls.unwrap()  # close_notify
            try:
                if name == "!send":
                    k = c.sock.send(PATTERN[c.sent % 1000 : c.sent % 1000 + args[1]])
                    c.sent += k
                    return k
                if name == "!shut":
                    c.sock.shutdown(socket.SHUT_WR)
                    return None
                if name == "!reset":
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.sock.close()
                return None
            except OSError as e:
                return exc(e)
        server = self.server
        try:
            if name == "sockets":
                return len(server.sockets)
            if name == "get_loop":
                return server.get_loop() is loop
            if name == "start_serving":
                return await server.start_serving()
            if name == "serve_forever":
                if self.serve_task is not None and not self.serve_task.done():
                    return "serving already"
                self.serve_task = loop.create_task(server.serve_forever())
                await self.iterate(1)
                return self.task_state(self.serve_task)
            if name == "cancel_serve":
                if self.serve_task is None:
                    return "no task"
                self.serve_task.cancel()
                await self.iterate(2)
                return self.task_state(self.serve_task)
            if name == "wait_closed":
                task = loop.create_task(server.wait_closed())
                await self.iterate(args[0])
                state = self.task_state(task)
                task.cancel()
                return state
            return getattr(server, name)()
        except Exception as e:
            return exc(e)

    @staticmethod
    def task_state(task: asyncio.Task[Any]) -> Any:
        if not task.done():
            return "pending"
        if task.cancelled():
            return "cancelled"
        e = task.exception()
        return exc(e) if e is not None else ("done", task.result())

    async def main(self, address: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        ex = self.example
        try:
            ssl = CONTEXTS[0] if ex.tls else None
            if ex.kind == "tcp":
                self.server = await loop.create_server(
                    self.factory, "127.0.0.1", 0, backlog=ex.backlog, start_serving=ex.start_serving, ssl=ssl
                )
                address = self.server.sockets[0].getsockname()
            else:
                self.server = await loop.create_unix_server(
                    self.factory, address, backlog=ex.backlog, start_serving=ex.start_serving, ssl=ssl
                )
        except Exception as e:
            return [exc(e)]
        results = [await self.step(s, address) for s in ex.steps]
        await self.iterate(4)
        gc.collect()
        for c in self.clients:
            self.recv(c)
        results.append(("end", self.server.is_serving(), len(self.server.sockets), self.made))
        self.server.close()
        if self.serve_task is not None:
            self.serve_task.cancel()
        for t in self.transports:
            t.close()
        await self.iterate(4)
        # Connections accepted before the close may be made only now: close
        # those too (a transport left to the cycle collector warns with or
        # without its socket's own warning, in the collector's order).
        for t in self.transports:
            t.close()
        await self.iterate(2)
        gc.collect()
        for c in self.clients:
            self.recv(c)
        results.append(self.task_state(self.serve_task) if self.serve_task is not None else None)
        return results

    def record(self) -> dict[str, Any]:
        tmp = tempfile.mkdtemp(prefix="ferroloop-fuzz-")
        address = os.path.join(tmp, "s")

        def cleanup() -> None:
            for c in self.clients:
                c.sock.close()
            self.transports.clear()
            self.server = self.serve_task = None

        try:
            with Recording(self.impl, self, cleanup) as r:
                r.rec["steps"] = r.loop.run_until_complete(asyncio.wait_for(self.main(address), 10))
        finally:
            if os.path.exists(address):
                os.unlink(address)
            os.rmdir(tmp)
        rec = r.rec
        # Each connection's events in order (numbered by the order the
        # server made them). How connections interleave is not compared:
        # close_clients()/abort_clients() walk a WeakSet, whose order is the
        # transports' addresses, on asyncio as on ferroloop.
        per_connection: dict[int, list[Any]] = {}
        for e in self.events:
            per_connection.setdefault(e[0], []).append(
                ("data", len(e[2]), hashlib.sha1(e[2]).hexdigest()[:12]) if e[1] == "data" else e[1:]
            )
        rec["events"] = sorted(per_connection.items())
        rec["clients"] = [
            (len(c.got), hashlib.sha1(bytes(c.got)).hexdigest()[:12], c.end)
            if c.tls is None
            else (len(c.tls.got), hashlib.sha1(bytes(c.tls.got)).hexdigest()[:12], c.tls.end, c.tls.handshaken)
            for c in self.clients
        ]
        rec["errors"] = self.errors
        rec["logs"] = self.logs
        return {k: norm(v) for k, v in rec.items()}


def run_server(impl: str, example: ServerExample) -> dict[str, Any]:
    return ServerRun(impl, example).record()
