"""Shared by the pipe transport tests (test_pipes*.py): a recording protocol,
a loop-iteration ticker, pipe helpers and what asyncio does on this Python."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import reprlib
import socket
import sys
from asyncio import unix_events
from functools import partial

READ_CLASS = unix_events._UnixReadPipeTransport
WRITE_CLASS = unix_events._UnixWritePipeTransport
MAX_READ = READ_CLASS.max_size  # 256 KiB per read
CONNLOST_WARNING = "pipe closed by peer or os.write(pipe, data) raised exception."
LOG_THRESHOLD = asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES  # 5
READ_KINDS = ["pipe", "socketpair", "fifo"]
# The handler's "Exception in callback f(args)" shows args only in debug mode from 3.13 on.
SHOWS_ARGS_IN_DEBUG_ONLY = sys.version_info >= (3, 13)
# Process.communicate() without input closes stdin from 3.12 on.
CLOSES_STDIN_WITHOUT_INPUT = sys.version_info >= (3, 12)


# ----- support


class Ticker:
    """Counts loop iterations: a callback that re-schedules itself with
    call_soon runs once per iteration."""

    def __init__(self, loop):
        self.loop = loop
        self.n = 0
        self._handle = loop.call_soon(self._tick)

    def _tick(self):
        self.n += 1
        self._handle = self.loop.call_soon(self._tick)

    def stop(self):
        self._handle.cancel()


class Recorder(asyncio.Protocol):
    """Logs every protocol callback in order.

    Events: ``"made"``, ``("data", data)``, ``"eof"``, ``("pause", buffer
    size)``, ``("resume", buffer size)``, ``("lost", None or type name)``.
    With a ``Ticker``, ``ticks[i]`` is the loop iteration of ``events[i]``.
    """

    def __init__(self, loop, ticker=None):
        self.loop = loop
        self.ticker = ticker
        self.events = []
        self.ticks = []
        self.transport = None
        self.exc = None
        self.done = loop.create_future()
        self._wake = None

    def _log(self, ev):
        self.events.append(ev)
        self.ticks.append(self.ticker.n if self.ticker is not None else None)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def connection_made(self, transport):
        self.transport = transport
        self._log("made")

    def data_received(self, data):
        assert type(data) is bytes
        self._log(("data", data))

    def eof_received(self):
        self._log("eof")

    def pause_writing(self):
        self._log(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self._log(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc):
        self.exc = exc
        self._log(("lost", type(exc).__name__ if exc is not None else None))
        if not self.done.done():
            self.done.set_result(exc)

    @property
    def data(self):
        return b"".join(e[1] for e in self.events if e[0] == "data")

    def tick_of(self, ev):
        return self.ticks[self.events.index(ev)]

    async def until(self, pred, timeout=5.0):
        """Wait until ``pred()`` holds (checked after every callback)."""
        try:
            async with asyncio.timeout(timeout):
                while not pred():
                    self._wake = self.loop.create_future()
                    await self._wake
        except TimeoutError:
            raise AssertionError(f"timed out; events: {self.events!r}") from None

    async def until_lost(self, timeout=5.0):
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.done)


def kinds(events):
    """The event names of a trace."""
    return [e if isinstance(e, str) else e[0] for e in events]


def compact(events):
    """The trace with data events as their lengths."""
    return [("data", len(e[1])) if isinstance(e, tuple) and e[0] == "data" else e for e in events]


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_source(kind, sockdir):
    """(pipe object for connect_read_pipe, write(data), close_writer()) of one kind."""
    if kind == "pipe":
        r, w = os.pipe()
        return open(r, "rb", buffering=0), partial(write_all, w), partial(os.close, w)
    if kind == "socketpair":
        a, b = socket.socketpair()
        return a, b.sendall, b.close
    path = os.path.join(sockdir, "fifo")
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY)
    return open(r, "rb", buffering=0), partial(write_all, w), partial(os.close, w)


def is_closed(pipe):
    return pipe.fileno() == -1 if isinstance(pipe, socket.socket) else pipe.closed


def write_end():
    """(non-blocking read fd, write-end file object, pipe capacity)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, open(w, "wb", buffering=0), fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)


def fill(fd_or_file, capacity):
    """Fill the pipe so that the next write(2) fails with EAGAIN."""
    fd = fd_or_file if isinstance(fd_or_file, int) else fd_or_file.fileno()
    assert os.write(fd, b"\0" * capacity) == capacity


def drain_fd(fd):
    """Everything readable on a non-blocking fd now (b"" at EOF)."""
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


async def poll(pred, timeout=5.0):
    """Wait until ``pred()`` holds, checking on every loop iteration."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0)


async def iterations(n):
    for _ in range(n):
        await asyncio.sleep(0)


def pattern(n, seed=0):
    return random.Random(seed).randbytes(n)


def connlost_warnings(caplog):
    """How many times asyncio's logger warned about writes to a lost pipe."""
    found = [r for r in caplog.records if r.name == "asyncio" and r.getMessage() == CONNLOST_WARNING]
    assert all(r.levelno == logging.WARNING for r in found)
    return len(found)


class ReprAs:
    """An object whose repr is the given text."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def callback_message(loop, qualname, *args):
    """The handler's message for a callback that raised, as asyncio's Handle
    words it: 3.13 shows the arguments in debug mode only."""
    shown = "" if SHOWS_ARGS_IN_DEBUG_ONLY and not loop.get_debug() else ", ".join(reprlib.repr(a) for a in args)
    return f"Exception in callback {qualname}({shown})"


def take_errors(loop_errors):
    errors = list(loop_errors)
    loop_errors.clear()
    return errors
