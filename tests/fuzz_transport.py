"""The transport fuzzer's harness: one script of stream-transport calls and
peer actions, run on one loop and recorded as plain data.

A script (``TransportExample``) names the socket (a unix socketpair or a TCP
connection over loopback), what the protocol does in each of its callbacks,
and a list of steps: transport method calls with valid and invalid
arguments, actions of the peer socket (send, read, shut down, close, reset)
and loop iterations. The record holds each call's result or exception, the
protocol's events in order (``data_received`` runs merged), what the peer
received, the exception handler's calls, log records, warnings and
unraisable exceptions. See test_fuzz_transports.py.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import hashlib
import logging
import pathlib
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import warnings
from asyncio import selector_events
from dataclasses import dataclass, field
from typing import Any

from fuzz_model import FACTORIES

# A run of the peer's data, distinct at every offset (so a lost, repeated or
# reordered chunk shows in the digest).
PATTERN = b"".join(struct.pack(">I", i) for i in range(200_000))
# The files sendfile() steps send, one per size (made on first use).
SENDFILE_DIR = pathlib.Path(tempfile.mkdtemp(prefix="ferroloop-fuzz-"))
atexit.register(shutil.rmtree, SENDFILE_DIR, True)


def sendfile_path(size: int) -> pathlib.Path:
    """The file of ``size`` bytes of PATTERN that sendfile steps send."""
    path = SENDFILE_DIR / f"fuzz-{size}"
    if not path.exists():
        path.write_bytes(PATTERN[:size])
    return path


FD_RE = re.compile(r"\b(fd|pid)=\d+")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class TransportExample:
    kind: str  # "unix" or "tcp"
    # What the protocol does in each callback: {callback: action}; actions
    # are "raise", "close", "abort", "pause_reading", "write", "write_eof".
    actions: tuple[tuple[str, str], ...]
    eof_result: Any  # eof_received's return value
    steps: tuple[tuple[Any, ...], ...]
    buffered: bool = False  # a BufferedProtocol (get_buffer/buffer_updated)
    buffer_size: int = 65536

    def __repr__(self) -> str:
        return (
            f"TransportExample(kind={self.kind!r}, actions={self.actions!r}, eof_result={self.eof_result!r}, "
            f"buffered={self.buffered!r}, buffer_size={self.buffer_size!r},\n  steps={list(self.steps)!r})"
        )


def text(value: Any) -> str:
    return ADDRESS_RE.sub("0x?", FD_RE.sub(r"\1=?", str(value)))


def exc(e: BaseException) -> tuple[Any, ...]:
    return ("raise", type(e).__name__, text(e), getattr(e, "errno", None))


def value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    if isinstance(v, tuple):
        return tuple(value(x) for x in v)
    return type(v).__name__


class Protocol(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run

    def _act(self, callback: str) -> None:
        self.run.act(callback)

    def connection_made(self, transport: Any) -> None:
        self.run.transport = transport
        self.run.event("connection_made")
        self._act("connection_made")

    def data_received(self, data: bytes) -> None:
        self.run.data(data)
        self._act("data_received")

    def eof_received(self) -> Any:
        self.run.event("eof_received")
        self._act("eof_received")
        return self.run.example.eof_result

    def pause_writing(self) -> None:
        self.run.event("pause_writing", self.run.transport.get_write_buffer_size())
        self._act("pause_writing")

    def resume_writing(self) -> None:
        self.run.event("resume_writing", self.run.transport.get_write_buffer_size())
        self._act("resume_writing")

    def connection_lost(self, e: BaseException | None) -> None:
        self.run.event("connection_lost", None if e is None else exc(e))
        self._act("connection_lost")


class BufferedProtocol(Protocol, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int) -> Any:
        self.buf = bytearray(self.run.example.buffer_size)
        self._act("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.run.data(bytes(self.buf[:nbytes]))
        self._act("buffer_updated")


@dataclass
class Run:
    impl: str
    example: TransportExample
    events: list[Any] = field(default_factory=list)
    transport: Any = None
    peer: Any = None
    peer_got: bytearray = field(default_factory=bytearray)
    peer_end: Any = None
    sent: int = 0
    errors: list[Any] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    def closing_state(self, size: bool = True) -> Any:
        """``is_closing()`` and ``get_write_buffer_size()`` at the end of the
        script (either may raise on a transport that is gone), then ``close()``."""
        try:
            state = ("closing", self.transport.is_closing(), self.transport.get_write_buffer_size() if size else None)
        except Exception as e:
            state = ("closing", exc(e))
        try:
            self.transport.close()
        except Exception as e:
            state = (*state, exc(e))
        return state

    def event(self, *e: Any) -> None:
        self.events.append(e)

    def data(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))

    def act(self, callback: str) -> None:
        action = dict(self.example.actions).get(callback)
        if action is None:
            return
        t = self.transport
        if action == "raise":
            raise RuntimeError(f"raised in {callback}")
        if action == "write":
            t.write(b"w" * 1000)
        else:
            getattr(t, action)()

    # ----- the peer

    def peer_send(self, n: int) -> Any:
        chunk = PATTERN[self.sent % 1000 : self.sent % 1000 + n]
        try:
            k = self.peer.send(chunk)
        except OSError as e:
            return exc(e)
        self.sent += k
        return k

    def peer_recv(self, n: int) -> Any:
        if self.peer_end is not None:
            return "ended"
        try:
            data = self.peer.recv(n)
        except BlockingIOError:
            return 0
        except OSError as e:
            self.peer_end = exc(e)
            return self.peer_end
        if not data:
            self.peer_end = "eof"
        self.peer_got += data
        return len(data)

    def peer_drain(self) -> None:
        while self.peer_end is None and self.peer_recv(1 << 20) not in (0,):
            pass

    # ----- steps

    def drain_once(self) -> None:
        """Take what reached the peer (while a sendfile() runs)."""
        if self.peer_end is None:
            self.peer_recv(1 << 20)

    async def wait(self, coro: Any, drain: bool) -> Any:
        """Run ``coro`` as a task and return its result or exception. With
        ``drain`` the peer drains meanwhile and the wait is by the clock (a
        sendfile fallback reads in the loop's executor); without, the task is
        cancelled after a few iterations (it waits for the peer)."""
        task = asyncio.get_running_loop().create_task(coro)
        deadline = time.monotonic() + 5
        iterations = 0
        while not task.done():
            if drain:
                self.drain_once()
            elif iterations >= 4:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return "waited, cancelled"
            if time.monotonic() > deadline:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return "did not finish"
            iterations += 1
            await asyncio.sleep(0)
        try:
            result = task.result()
        except Exception as e:
            return exc(e)
        return ("bytes", len(result)) if isinstance(result, bytes) else value(result)

    async def sendfile(self, mode: str, size: int, offset: Any, count: Any, fallback: bool) -> Any:
        """``loop.sendfile()`` of a file of ``size`` bytes of PATTERN with the
        peer draining meanwhile: its result or exception, then the file's
        position (asyncio leaves it after the bytes sent)."""
        loop = asyncio.get_running_loop()
        with open(sendfile_path(size), mode) as f:
            return (await self.wait(loop.sendfile(self.transport, f, offset, count, fallback=fallback), True), f.tell())

    async def step(self, s: tuple[Any, ...]) -> Any:
        name, *args = s
        if name == "!sendfile":
            return await self.sendfile(*args)
        if name == "!run":
            for _ in range(args[0]):
                await asyncio.sleep(0)
            return None
        if name == "!send":
            return self.peer_send(args[0])
        if name == "!recv":
            return self.peer_recv(args[0])
        if name == "!shut":
            try:
                self.peer.shutdown(socket.SHUT_WR)
            except OSError as e:
                return exc(e)
            return None
        if name in ("!close", "!reset"):
            if self.peer.fileno() == -1:
                return "closed already"
            if name == "!reset":
                self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.peer.close()
            self.peer_end = "closed"
            return None
        if name == "repr":
            return text(repr(self.transport))
        if name == "writelines" and sys.version_info >= (3, 12) and self.transport.is_closing():
            return "skipped: D-004"  # asyncio raises a TypeError of its own making
        if name == "write" or name == "writelines":
            args = [make_data(*a) if name == "write" else [make_data(*x) for x in a] for a in args]
        try:
            result = value(getattr(self.transport, name)(*args))
            if (
                name == "writelines"
                and self.impl == "asyncio"
                and sys.version_info >= (3, 12)
                and isinstance(self.transport, selector_events._SelectorSocketTransport)
            ):
                # D-005: what the fixed releases' writelines() ends with (gh-127655).
                self.transport._maybe_pause_protocol()
            if name == "get_extra_info" and isinstance(result, tuple):
                result = (result[0], "port", *result[2:])  # an ephemeral port
            return result
        except Exception as e:
            return exc(e)

    async def main(self, sock: socket.socket) -> list[Any]:
        factory = BufferedProtocol if self.example.buffered else Protocol
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: factory(self), sock)
        except Exception as e:
            return [exc(e)]
        results = [await self.step(s) for s in self.example.steps]
        for _ in range(4):
            await asyncio.sleep(0)
        if self.peer_end is None:
            self.peer_drain()
        results.append(self.closing_state())
        for _ in range(4):
            await asyncio.sleep(0)
            if self.peer_end is None:
                self.peer_drain()
        return results

    def pair(self) -> tuple[socket.socket, socket.socket]:
        if self.example.kind == "unix":
            return socket.socketpair()
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            client = socket.create_connection(lsock.getsockname())
            server, _ = lsock.accept()
        return server, client

    def record(self) -> dict[str, Any]:
        sock, self.peer = self.pair()
        self.peer.setblocking(False)

        def cleanup() -> None:
            self.peer.close()
            sock.close()
            self.transport = None

        with Recording(self.impl, self, cleanup) as r:
            r.rec["steps"] = r.loop.run_until_complete(asyncio.wait_for(self.main(sock), 10))
        rec = r.rec
        rec["events"] = [
            ("data", len(e[1]), hashlib.sha1(e[1]).hexdigest()[:12]) if e[0] == "data" else e for e in self.events
        ]
        rec["peer"] = (len(self.peer_got), hashlib.sha1(bytes(self.peer_got)).hexdigest()[:12], self.peer_end)
        # D-023: asyncio's second _call_connection_lost() after a close from
        # resume_writing() (CPython gh-156512) fails on the torn-down transport.
        rec["errors"] = [
            e
            for e in self.errors
            if not (
                e[0].startswith("Exception in callback _SelectorSocketTransport._call_connection_lost")
                and e[1] is not None
                and e[1][1] == "AttributeError"
            )
        ]
        rec["logs"] = self.logs
        return rec


class Recording:
    """One run's loop and what it reports: ``with Recording(impl, owner,
    cleanup) as r`` makes the loop (its exception handler appending to
    ``owner.errors``, log records at WARNING and above to ``owner.logs``)
    and records warnings and unraisable exceptions; on the way out it closes
    the loop, calls ``cleanup()``, collects cycles and fills ``r.rec``'s
    ``warnings`` and ``unraisable``."""

    def __init__(self, impl: str, owner: Any, cleanup: Any = None) -> None:
        self.owner = owner
        self.cleanup = cleanup
        self.rec: dict[str, Any] = {}
        self.loop = FACTORIES[impl]()
        # Debug mode's "Executing <Handle> took 0.1 seconds" depends on the machine's load.
        self.loop.slow_callback_duration = 1000.0
        self.loop.set_exception_handler(lambda _loop, ctx: owner.errors.append(context(ctx)))

    def __enter__(self) -> Recording:
        self.root = logging.getLogger()
        self.handler = _Logs(self.owner)
        self.old_level = self.root.level
        self.old_hook = sys.unraisablehook
        self.unraisable: list[Any] = []
        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")
        sys.unraisablehook = lambda u: self.unraisable.append(exc(u.exc_value) if u.exc_value else None)
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.root.removeHandler(self.handler)
            self.root.setLevel(self.old_level)
            settled = len(self.caught)  # what the teardown's collections warn about comes after
            self.loop.close()
            if self.cleanup is not None:
                self.cleanup()
            gc.collect()
        finally:
            sys.unraisablehook = self.old_hook
            self.catcher.__exit__(*exc_info)
        self.rec["warnings"] = warning_record(self.caught, settled)
        self.rec["unraisable"] = self.unraisable


def make_data(kind: str, n: int) -> Any:
    data = bytes(i % 251 for i in range(n))
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "memoryview-slice":
        return memoryview(data + b"??")[: len(data)]
    if kind == "str":
        return "x" * n
    if kind == "int":
        return n
    return None


def warning_record(caught: list[warnings.WarningMessage], settled: int) -> list[Any]:
    """The warnings in order, except that those of the teardown (loop close
    and cycle collection: unclosed transports and sockets, which the
    collector finalizes in an order of its own) are sorted."""
    out = [(w.category.__name__, text(w.message)) for w in caught]
    return out[:settled] + sorted(out[settled:])


def context(ctx: dict[str, Any]) -> tuple[Any, ...]:
    e = ctx.get("exception")
    return (text(ctx.get("message")), None if e is None else exc(e))


class _Logs(logging.Handler):
    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.logs.append((record.levelname, text(record.getMessage())))


def run_on(impl: str, example: TransportExample) -> dict[str, Any]:
    return Run(impl, example).record()
