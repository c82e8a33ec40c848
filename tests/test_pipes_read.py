"""Read pipes (``loop.connect_read_pipe``): traces, pause/resume/close and
exceptions in protocol callbacks. The rules of test_pipes.py's docstring hold.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct

import pytest
from pipe_support import (
    MAX_READ,
    READ_KINDS,
    Recorder,
    ReprAs,
    Ticker,
    callback_message,
    compact,
    is_closed,
    iterations,
    kinds,
    pattern,
    poll,
    read_source,
    take_errors,
    write_all,
)

# ----- read pipes: traces


@pytest.mark.parametrize("kind", READ_KINDS)
def test_read_pipe_trace(loop, kind, sockdir):
    pipe, write, close_writer = read_source(kind, sockdir)
    chunks = [b"first", b"x" * 1000, bytes(range(256)) * 40, b"last"]

    async def main():
        ticker = Ticker(loop)
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop, ticker), pipe)
        at_return = (list(p.events), t.is_reading(), t.is_closing())
        sent = b""
        for chunk in chunks[:-1]:
            write(chunk)
            sent += chunk
            await p.until(lambda sent=sent: p.data == sent)
        # The last chunk and the end of file are both pending: the chunk is
        # read on one iteration, the end of file on the next, and
        # eof_received and connection_lost run on the one after.
        write(chunks[-1])
        close_writer()
        await p.until(lambda: p.data == b"".join(chunks))
        after_data = (list(kinds(p.events)), t.is_closing())
        await p.until_lost()
        ticker.stop()
        info = {
            "pipe": t.get_extra_info("pipe") is pipe,
            "closed": is_closed(pipe),
            "protocol": t.get_protocol(),
            "closing": t.is_closing(),
            "reading": t.is_reading(),
        }
        return p, at_return, after_data, info

    p, at_return, after_data, info = loop.run_until_complete(main())
    assert at_return == (["made"], True, False)
    assert after_data[1] is False
    assert kinds(p.events) == ["made", *["data"] * (len(p.events) - 3), "eof", "lost"]
    assert p.data == b"".join(chunks)
    assert p.events[-2:] == ["eof", ("lost", None)]
    last_data = p.ticks[len(p.events) - 3]
    assert p.tick_of("eof") == p.tick_of(("lost", None)) == last_data + 2
    assert info == {"pipe": True, "closed": True, "protocol": None, "closing": True, "reading": False}


def test_read_pipe_reads_at_most_256_kib_per_iteration(loop):
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4 * MAX_READ)
    except OSError:
        os.close(r)
        os.close(w)
        pytest.skip("cannot grow a pipe to 1 MiB")
    assert fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) == 4 * MAX_READ
    data = pattern(4 * MAX_READ)
    write_all(w, data)
    os.close(w)
    pipe = open(r, "rb", buffering=0)

    async def main():
        ticker = Ticker(loop)
        _t, p = await loop.connect_read_pipe(lambda: Recorder(loop, ticker), pipe)
        await p.until_lost()
        ticker.stop()
        return p

    p = loop.run_until_complete(main())
    assert compact(p.events) == ["made", *[("data", MAX_READ)] * 4, "eof", ("lost", None)]
    assert p.data == data
    data_ticks = p.ticks[1:5]
    assert data_ticks == list(range(data_ticks[0], data_ticks[0] + 4))
    assert p.ticks[5] == p.ticks[6] == data_ticks[-1] + 2


def test_read_pipe_on_a_pty_ends_with_eio_and_no_handler_call(loop, loop_errors):
    """Reading a pty master whose slave closed fails with EIO: asyncio closes
    the transport with that error without calling the exception handler."""
    master, slave = os.openpty()
    pipe = open(master, "rb", buffering=0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop), pipe)
        os.write(slave, b"abc")
        await p.until(lambda: p.data == b"abc")
        os.close(slave)
        await p.until_lost()
        return t, p

    _t, p = loop.run_until_complete(main())
    assert p.events == ["made", ("data", b"abc"), ("lost", "OSError")]
    assert type(p.exc) is OSError and p.exc.errno == errno.EIO
    assert pipe.closed
    assert list(loop_errors) == []


def test_read_error_goes_to_the_handler_and_closes(loop, loop_errors):
    """A read error other than EIO (here ECONNRESET on a TCP socket used as a
    read pipe) is reported as a fatal read error."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        client = socket.create_connection(lsock.getsockname())
        server, _ = lsock.accept()

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop), server)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # sends a reset
        await p.until_lost()
        return t, p

    t, p = loop.run_until_complete(main())
    assert p.events == ["made", ("lost", "ConnectionResetError")]
    assert p.exc.errno == errno.ECONNRESET
    assert server.fileno() == -1
    errors = take_errors(loop_errors)
    assert len(errors) == 1
    ctx = errors[0]
    assert ctx["message"] == "Fatal read error on pipe transport"
    assert ctx["exception"] is p.exc
    assert ctx["transport"] is t and ctx["protocol"] is p


# ----- read pipes: pause, resume, close


def test_pause_and_resume_reading_with_data_pending(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)
    os.write(w, b"pending")

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop), pipe)
        # The read is already due on this iteration: pausing cancels it.
        states = [("connected", list(p.events), t.is_reading())]
        t.pause_reading()
        states.append(("paused", t.is_reading(), t.is_closing()))
        t.pause_reading()  # no-op
        await iterations(10)
        os.write(w, b"+more")
        await iterations(10)
        states.append(("still paused", list(p.events), t.is_reading()))
        t.resume_reading()
        states.append(("resumed", t.is_reading()))
        t.resume_reading()  # no-op
        await p.until(lambda: p.data == b"pending+more")
        # Paused at end of file: the end is not read, so no eof_received.
        t.pause_reading()
        os.close(w)
        await iterations(10)
        states.append(("paused at eof", list(kinds(p.events)), t.is_closing()))
        t.resume_reading()
        await p.until_lost()
        # After the end: pausing and resuming are no-ops.
        t.pause_reading()
        t.resume_reading()
        states.append(("after", t.is_reading(), t.is_closing()))
        return p, states

    p, states = loop.run_until_complete(main())
    assert states == [
        ("connected", ["made"], True),
        ("paused", False, False),
        ("still paused", ["made"], False),
        ("resumed", True),
        ("paused at eof", ["made", "data"], False),
        ("after", False, True),
    ]
    assert kinds(p.events) == ["made", "data", "eof", "lost"]
    assert p.data == b"pending+more"


def test_pause_reading_inside_data_received(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)

    class Pauser(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Pauser(loop), pipe)
        got = []
        for word in (b"one", b"two", b"three"):
            os.write(w, word)
            await iterations(5)
            got.append((p.data, t.is_reading()))
            t.resume_reading()
        await p.until(lambda: p.data == b"onetwothree")
        t.resume_reading()
        os.close(w)
        await p.until_lost()
        return p, got

    p, got = loop.run_until_complete(main())
    assert got == [(b"one", False), (b"onetwo", False), (b"onetwothree", False)]
    assert p.events == ["made", ("data", b"one"), ("data", b"two"), ("data", b"three"), "eof", ("lost", None)]


@pytest.mark.parametrize("kind", READ_KINDS)
def test_close_while_reading(loop, kind, sockdir):
    """close() in data_received: nothing more is delivered (no eof_received),
    connection_lost(None) runs on a later iteration, the pipe is closed."""
    pipe, write, close_writer = read_source(kind, sockdir)

    class Closer(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if data.endswith(b"!"):
                self.transport.close()
                self.closing_in_callback = self.transport.is_closing()
                self.transport.close()  # no-op

    async def main():
        ticker = Ticker(loop)
        t, p = await loop.connect_read_pipe(lambda: Closer(loop, ticker), pipe)
        write(b"a")
        await p.until(lambda: p.data == b"a")
        write(b"stop!")
        await p.until(lambda: len(p.events) == 3)
        close_tick = p.ticks[-1]
        at_close = (list(p.events), p.closing_in_callback, is_closed(pipe))
        write(b"more data")  # not read any more
        await p.until_lost()
        ticker.stop()
        t.close()  # after the end: a no-op
        return t, p, at_close, close_tick

    t, p, at_close, close_tick = loop.run_until_complete(main())
    assert at_close == (["made", ("data", b"a"), ("data", b"stop!")], True, False)
    assert p.events == ["made", ("data", b"a"), ("data", b"stop!"), ("lost", None)]
    assert p.ticks[-1] == close_tick + 1
    assert is_closed(pipe) and t.is_closing() and t.get_protocol() is None
    close_writer()


def test_close_from_outside_drops_pending_data(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop), pipe)
        os.write(w, b"pending")
        t.close()  # before the loop reads it
        during = (list(p.events), t.is_closing(), t.is_reading(), pipe.closed)
        await p.until_lost()
        # The read end is closed: writing to the pipe now fails.
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
        return p, during

    p, during = loop.run_until_complete(main())
    assert during == (["made"], True, False, False)
    assert p.events == ["made", ("lost", None)]
    os.close(w)


def test_max_size_attribute_limits_each_read(loop):
    """asyncio reads ``self.max_size`` bytes at most: a class attribute
    (256 KiB) that an instance attribute overrides."""
    r, w = os.pipe()
    os.write(w, b"x" * 25)
    os.close(w)

    async def main():
        p = Recorder(loop)
        t = loop._make_read_pipe_transport(open(r, "rb", buffering=0), p)
        default = t.max_size
        t.max_size = 10
        await p.until_lost()
        return p, default

    p, default = loop.run_until_complete(main())
    assert default == MAX_READ == 256 * 1024
    assert compact(p.events) == ["made", ("data", 10), ("data", 10), ("data", 5), "eof", ("lost", None)]


def test_close_in_one_pipes_callback_cancels_the_others_due_read(loop):
    """Two read pipes readable on the same iteration, each closing the other
    in data_received: whichever runs first closes the other, whose read
    already due is cancelled."""
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()
    pipes = [open(r1, "rb", buffering=0), open(r2, "rb", buffering=0)]
    transports_ = []

    class CloseOther(Recorder):
        def __init__(self, loop, index):
            super().__init__(loop)
            self.index = index

        def data_received(self, data):
            super().data_received(data)
            transports_[1 - self.index].close()

    async def main():
        t1, p1 = await loop.connect_read_pipe(lambda: CloseOther(loop, 0), pipes[0])
        t2, p2 = await loop.connect_read_pipe(lambda: CloseOther(loop, 1), pipes[1])
        transports_.extend([t1, t2])
        os.write(w1, b"one")
        os.write(w2, b"two")
        await poll(lambda: p1.done.done() or p2.done.done())
        await iterations(3)
        t1.close()
        t2.close()
        await p1.until_lost()
        await p2.until_lost()
        return p1, p2

    p1, p2 = loop.run_until_complete(main())
    traces = sorted([p1.events, p2.events], key=len)
    assert traces[0] == ["made", ("lost", None)]
    assert kinds(traces[1]) == ["made", "data", "lost"]
    os.close(w1)
    os.close(w2)


def test_pause_reading_in_connection_made_keeps_the_reader_off(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)
    os.write(w, b"pending")

    class PauseAtOnce(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        t, p = await loop.connect_read_pipe(lambda: PauseAtOnce(loop), pipe)
        await iterations(5)
        state = (list(p.events), t.is_reading(), repr(t).endswith(" idle>"))
        t.resume_reading()
        await p.until(lambda: p.data == b"pending")
        os.close(w)
        await p.until_lost()
        return p, state

    p, state = loop.run_until_complete(main())
    assert state == (["made"], False, True)
    assert p.events == ["made", ("data", b"pending"), "eof", ("lost", None)]


@pytest.mark.parametrize("direction", ["read", "write"])
def test_cancelled_connect_closes_the_transport(loop, direction):
    r, w = os.pipe()
    pipes = {"read": open(r, "rb", buffering=0), "write": open(w, "wb", buffering=0)}
    protocols = []

    def factory():
        protocols.append(Recorder(loop))
        return protocols[-1]

    async def main():
        connect = loop.connect_read_pipe if direction == "read" else loop.connect_write_pipe
        task = asyncio.ensure_future(connect(factory, pipes[direction]))
        await asyncio.sleep(0)  # the task now waits for connection_made
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await protocols[0].until_lost()
        return protocols[0]

    p = loop.run_until_complete(main())
    assert p.events == ["made", ("lost", None)]
    assert pipes[direction].closed
    pipes["write" if direction == "read" else "read"].close()


@pytest.mark.deviation("D-016")
def test_add_reader_and_remove_reader_on_a_read_pipes_fd(loop):
    """asyncio does not guard a pipe transport's fd (only socket transports'):
    add_reader() replaces the transport's reader, remove_reader() removes it;
    the transport still says it is reading."""
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)
    got = []

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop), pipe)
        outcome = []
        try:
            loop.add_reader(r, lambda: got.append(os.read(r, 100)))
            outcome.append("added")
        except Exception as exc:
            outcome.append(repr(exc))
        os.write(w, b"to the callback")
        await poll(lambda: got or p.events != ["made"])
        await iterations(2)
        outcome.append((list(got), list(p.events)))
        try:
            outcome.append(loop.remove_reader(r))
        except Exception as exc:
            outcome.append(repr(exc))
        outcome.append((t.is_reading(), repr(t)))
        t.close()
        os.close(w)
        await p.until_lost()
        outcome.append(loop.remove_reader(r))
        return p, outcome

    p, outcome = loop.run_until_complete(main())
    assert outcome == [
        "added",
        ([b"to the callback"], ["made"]),
        True,
        (True, f"<_UnixReadPipeTransport fd={r} idle>"),
        False,
    ]
    assert p.events == ["made", ("lost", None)]


# ----- read pipes: exceptions in protocol callbacks


def test_exception_in_data_received_goes_to_the_handler_and_reading_goes_on(loop, loop_errors):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)

    class Boom(Recorder):
        raised = None

        def data_received(self, data):
            super().data_received(data)
            if self.raised is None:
                self.raised = ZeroDivisionError("data_received")
                raise self.raised

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Boom(loop), pipe)
        os.write(w, b"first")
        await p.until(lambda: len(p.events) == 2)
        await iterations(2)
        state = (t.is_closing(), t.is_reading(), len(loop_errors))
        os.write(w, b"second")
        await p.until(lambda: len(p.events) == 3)
        os.close(w)
        await p.until_lost()
        return t, p, state

    _t, p, state = loop.run_until_complete(main())
    assert state == (False, True, 1)
    assert p.events == ["made", ("data", b"first"), ("data", b"second"), "eof", ("lost", None)]
    errors = take_errors(loop_errors)
    assert len(errors) == 1
    assert errors[0]["message"] == "Exception in callback _UnixReadPipeTransport._read_ready()"
    assert errors[0]["exception"] is p.raised


def test_exceptions_in_eof_received_and_connection_lost(loop, loop_errors):
    """Each goes to the handler; connection_lost runs after a failed
    eof_received, and the pipe is closed after a failed connection_lost."""
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)

    class Boom(Recorder):
        def eof_received(self):
            super().eof_received()
            raise ZeroDivisionError("eof_received")

        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise KeyError("connection_lost")

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Boom(loop), pipe)
        os.write(w, b"data")
        os.close(w)
        await p.until_lost()
        await iterations(2)
        return t, p

    t, p = loop.run_until_complete(main())
    assert p.events == ["made", ("data", b"data"), "eof", ("lost", None)]
    assert pipe.closed
    assert t.get_protocol() is None
    errors = take_errors(loop_errors)
    assert [type(e["exception"]) for e in errors] == [ZeroDivisionError, KeyError]
    assert [e["message"] for e in errors] == [
        callback_message(loop, Boom.eof_received.__qualname__),
        callback_message(loop, "_UnixReadPipeTransport._call_connection_lost", None),
    ]


def test_eof_received_returning_true_does_not_keep_a_pipe_open(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)

    class KeepOpen(Recorder):
        def eof_received(self):
            super().eof_received()
            return True

    async def main():
        _, p = await loop.connect_read_pipe(lambda: KeepOpen(loop), pipe)
        os.close(w)
        await p.until_lost()
        return p

    p = loop.run_until_complete(main())
    assert p.events == ["made", "eof", ("lost", None)]


def test_exception_in_connection_made_goes_to_the_handler_and_reading_starts(loop, loop_errors):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)

    class Boom(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("connection_made")

    async def main():
        _t, p = await loop.connect_read_pipe(lambda: Boom(loop), pipe)
        os.write(w, b"data")
        os.close(w)
        await p.until_lost()
        return p

    p = loop.run_until_complete(main())
    assert p.events == ["made", ("data", b"data"), "eof", ("lost", None)]
    errors = take_errors(loop_errors)
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    # The argument is the transport, shown as it was then (not yet reading).
    shown = ReprAs(f"<_UnixReadPipeTransport fd={r} idle>")
    assert errors[0]["message"] == callback_message(loop, Boom.connection_made.__qualname__, shown)
