"""The recording protocols and connection helpers of the stream transport
tests (tests/test_transports.py, tests/test_transports_api.py)."""

from __future__ import annotations

import asyncio
import os
import socket


class Recorder(asyncio.Protocol):
    """Logs every protocol callback; data is concatenated."""

    def __init__(self, loop, *, eof_keep_open=False, pause_at=None):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.done = loop.create_future()
        self.eof_keep_open = eof_keep_open

    def _log(self, ev):
        if ev == "data" and self.events and self.events[-1] == "data":
            return
        self.events.append(ev)

    def connection_made(self, transport):
        self.transport = transport
        self._log("made")

    def data_received(self, data):
        assert type(data) is bytes
        self.data += data
        self._log("data")

    def eof_received(self):
        self._log("eof")
        return self.eof_keep_open

    def pause_writing(self):
        self._log("pause")

    def resume_writing(self):
        self._log("resume")

    def connection_lost(self, exc):
        self._log(("lost", type(exc).__name__ if exc is not None else None))
        if not self.done.done():
            self.done.set_result(exc)


def without_flow(events):
    out = []
    for e in events:
        if e in ("pause", "resume"):
            continue
        if e == "data" and out and out[-1] == "data":
            continue
        out.append(e)
    return out


async def pair(loop, server_proto, client_proto, family=socket.AF_INET):
    """A connected (server transport, client transport) pair on loopback."""
    made = loop.create_future()

    def factory():
        p = server_proto()
        loop.call_soon(lambda: made.done() or made.set_result(p))
        return p

    if family == socket.AF_UNIX:
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ferroloop-test-{os.getpid()}-{id(made)}.sock")
        server = await loop.create_unix_server(factory, path)
        _ct, cp = await loop.create_connection(client_proto, sock=_unix_client(path))
        os.unlink(path)
    else:
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _ct, cp = await loop.create_connection(client_proto, "127.0.0.1", port)
    sp = await made
    return server, sp, cp


def _unix_client(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    return s


async def close_server(server):
    server.close()
    await server.wait_closed()


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.size = size
        self.buf = bytearray(size)
        self.data = bytearray()
        self.events = []
        self.done = loop.create_future()

    def connection_made(self, t):
        self.transport = t
        self.events.append("made")

    def get_buffer(self, sizehint):
        assert sizehint == -1
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= self.size
        self.data += self.buf[:nbytes]
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)
