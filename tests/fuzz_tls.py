"""The transport fuzzer's TLS harness: a ``fuzz_transport.Run`` for a TLS
connection over a unix socketpair, made one of four ways (the example's
``kind``):

- ``tls``: the server side of ``connect_accepted_socket(..., ssl=context)``;
- ``tls-client``: the client side of ``create_connection(sock=..., ssl=context,
  server_hostname=...)``;
- ``starttls``, ``starttls-client``: a plain connection made the same way,
  then upgraded with ``loop.start_tls()`` (server or client side);
- ``tls-client-badname``, ``starttls-client-badname``: the client side
  asking for a hostname the certificate does not name (the handshake fails).

The peer is the other side, an ``ssl.SSLObject`` over memory BIOs, pumped by
hand in the test's thread (so both runs see the same sequence): it completes
the handshake while the transport is made, then sends, reads, sends
close_notify or vanishes as the script says. See test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from typing import Any

from fuzz_transport import PATTERN, BufferedProtocol, Protocol, Run, TransportExample, exc, value

# (server context, client context), set by the test from the TLS test certificates.
CONTEXTS: list[ssl.SSLContext] = []


class TlsPeer:
    """A TLS client (or server) over a non-blocking socket, driven by ``pump()``."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_side: bool = False) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        hostname = None if server_side else "localhost"
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname)
        self.handshaken = False
        self.end: Any = None  # why the peer stopped reading
        self.got = bytearray()
        self.pending = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        self.pending += self.outgoing.read()
        if self.pending and self.sock.fileno() != -1:
            try:
                n = self.sock.send(self.pending)
            except BlockingIOError:
                return
            except OSError as e:
                self.end = self.end or exc(e)
                self.pending = b""
                return
            self.pending = self.pending[n:]

    def pump(self) -> int:
        """Move what arrived into the TLS object and out again; returns the
        number of application bytes read."""
        if self.sock.fileno() == -1:
            return 0
        while True:
            try:
                chunk = self.sock.recv(1 << 17)
            except BlockingIOError:
                break
            except OSError as e:
                self.end = self.end or exc(e)
                break
            if not chunk:
                self.incoming.write_eof()
                break
            self.incoming.write(chunk)
        got = 0
        if not self.handshaken and self.end is None:
            try:
                self.obj.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                self.end = exc(e)
        while self.handshaken and self.end is None:
            try:
                data = self.obj.read(1 << 17)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.end = "close_notify"
                self.unwrap()
                break
            except ssl.SSLError as e:
                self.end = exc(e)
                break
            if not data:  # close_notify (SSLObject.read's b""): answer it
                self.end = "close_notify"
                self.unwrap()
                break
            self.got += data
            got += len(data)
        self.flush()
        return got

    def send(self, data: bytes) -> Any:
        if not self.handshaken or self.end is not None:
            return "not sending"
        try:
            self.obj.write(data)
        except ssl.SSLError as e:
            return exc(e)
        self.flush()
        return len(data)

    def unwrap(self) -> Any:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ValueError) as e:
            return exc(e)
        self.flush()
        return None


class TlsRun(Run):
    @property
    def client(self) -> bool:
        """Whether the loop's side is the TLS client."""
        return "-client" in self.example.kind

    @property
    def hostname(self) -> str | None:
        """The client's server_hostname: the certificate's, or one it does not name."""
        if not self.client:
            return None
        return "wrong.example" if self.example.kind.endswith("-badname") else "localhost"

    def pair(self) -> tuple[socket.socket, Any]:
        a, b = socket.socketpair()
        if self.client:
            return a, TlsPeer(b, CONTEXTS[0], server_side=True)
        return a, TlsPeer(b, CONTEXTS[1])

    async def iterate(self, n: int) -> None:
        for _ in range(n):
            self.peer.pump()
            await asyncio.sleep(0)
        self.peer.pump()

    def drain_once(self) -> None:
        self.peer.pump()

    async def step(self, s: tuple[Any, ...]) -> Any:
        name, *args = s
        if name == "!run":
            await self.iterate(args[0])
            return None
        if name == "!send":
            return self.peer.send(PATTERN[: args[0]])
        if name == "!recv":
            return self.peer.pump()
        if name == "!unwrap":
            return self.peer.unwrap()
        if name == "!close":
            if self.peer.fileno() == -1:
                return "closed already"
            self.peer.close()
            return None
        if name == "get_extra_info" and args[0] in ("ssl_object", "sslcontext", "peercert", "socket"):
            try:
                return value(self.transport.get_extra_info(args[0]))
            except Exception as e:
                return exc(e)
        return await super().step(s)

    async def main(self, sock: socket.socket) -> list[Any]:
        loop = asyncio.get_running_loop()
        factory = BufferedProtocol if self.example.buffered else Protocol
        ctx = CONTEXTS[1] if self.client else CONTEXTS[0]
        upgrade = self.example.kind.startswith("starttls")
        if self.client:
            made = loop.create_connection(
                lambda: factory(self),
                sock=sock,
                ssl=None if upgrade else ctx,
                server_hostname=None if upgrade else self.hostname,
            )
        else:
            made = loop.connect_accepted_socket(lambda: factory(self), sock, ssl=None if upgrade else ctx)
        if upgrade:
            # The plain connection first; the peer starts its handshake
            # only once start_tls() runs (nothing is in flight before it).
            try:
                transport, protocol = await made
            except Exception as e:
                return [exc(e)]
            made = loop.start_tls(transport, protocol, ctx, server_side=not self.client, server_hostname=self.hostname)
        task = loop.create_task(made)
        for _ in range(1000):
            if task.done():
                break
            self.peer.pump()
            await asyncio.sleep(0)
        else:
            # A handshake that cannot finish (the peer gave up, e.g. on
            # plaintext written before start_tls()): cancelled here, so that
            # its clean-up runs on the loop, not in the collector's order.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.iterate(4)
            return ["handshake did not finish"]
        try:
            result = task.result()
        except Exception as e:
            await self.iterate(4)  # what reaches the peer after a failed handshake
            return [exc(e)]
        if upgrade:
            self.transport = result  # start_tls() returns the TLS transport
        self.peer.pump()
        results = [await self.step(s) for s in self.example.steps]
        await self.iterate(4)
        results.append(self.closing_state())
        await self.iterate(6)
        return results

    def record(self) -> dict[str, Any]:
        rec = super().record()
        got = bytes(self.peer.got)
        rec["peer"] = (len(got), hashlib.sha1(got).hexdigest()[:12], self.peer.end, self.peer.handshaken)
        return rec


def run_tls(impl: str, example: TransportExample) -> dict[str, Any]:
    return TlsRun(impl, example).record()
