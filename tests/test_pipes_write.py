"""Write pipes (``loop.connect_write_pipe``): write(), flow control, closing,
and the reader going away. The rules of test_pipes.py's docstring hold.
"""

from __future__ import annotations

import array
import asyncio
import errno
import logging
import os
import socket

import pytest
from pipe_support import (
    LOG_THRESHOLD,
    Recorder,
    Ticker,
    callback_message,
    connlost_warnings,
    drain_fd,
    fill,
    iterations,
    pattern,
    take_errors,
    write_end,
)

# ----- write pipes: write()


def test_write_accepts_bytes_bytearray_memoryview(loop):
    """Written at once when the pipe has room; buffered (counted in bytes)
    when it has none."""
    r, wpipe, cap = write_end()
    words = array.array("I", [0x64636261, 0x68676665])
    items = [
        b"bytes|",
        bytearray(b"bytearray|"),
        memoryview(b"xmemoryview|x")[1:-1],
        memoryview(bytearray(b"mv-of-bytearray|")),
        type("B", (bytes,), {})(b"|subclass|"),
    ]
    expected = b"bytes|bytearray|memoryview|mv-of-bytearray||subclass|"

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        for item in items:
            t.write(item)
        t.writelines([b"l1", bytearray(b"l2"), memoryview(b"l3")])
        direct = (t.get_write_buffer_size(), drain_fd(r))
        fill(wpipe, cap)
        sizes = []
        for item in [*items, memoryview(words)]:  # a 2-item view of 8 bytes
            t.write(item)
            sizes.append(t.get_write_buffer_size())
        t.writelines([b"l1", bytearray(b"l2"), memoryview(b"l3")])
        sizes.append(t.get_write_buffer_size())
        assert os.read(r, cap) == b"\0" * cap
        t.close()
        await p.until_lost()
        return p, direct, sizes

    p, direct, sizes = loop.run_until_complete(main())
    assert direct == (0, expected + b"l1l2l3")
    lengths = [len(bytes(i)) for i in items] + [8, 6]
    assert sizes == [sum(lengths[: i + 1]) for i in range(len(lengths))]
    assert p.events == ["made", ("lost", None)]
    assert drain_fd(r) == expected + words.tobytes() + b"l1l2l3"
    os.close(r)


BAD_DATA = ["str", 1, None, [b"x"], (b"x",), array.array("b", b"ab"), 1.5]


def test_write_non_bytes_raises_assertion_error_with_repr(loop):
    r, wpipe, _ = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        messages = []
        for bad in BAD_DATA:
            with pytest.raises(AssertionError) as ei:
                t.write(bad)
            messages.append(str(ei.value))
        # Checked before anything else: also after close().
        t.close()
        with pytest.raises(AssertionError):
            t.write("after close")
        state = (t.get_write_buffer_size(), list(p.events))
        await p.until_lost()
        with pytest.raises(AssertionError):
            t.write("after lost")
        return p, messages, state

    p, messages, state = loop.run_until_complete(main())
    assert messages == [repr(b) for b in BAD_DATA]
    assert state == (0, ["made"])
    assert p.events == ["made", ("lost", None)]
    assert drain_fd(r) == b""
    os.close(r)


def test_write_of_empty_data_does_nothing_not_even_count(loop, caplog):
    """Empty data returns before the lost-connection check: it never counts
    towards the warning threshold."""
    r, wpipe, _ = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        for empty in (b"", bytearray(), memoryview(b""), memoryview(b"abc")[3:]):
            t.write(empty)
        t.writelines([])
        t.close()
        for _ in range(10):
            t.write(b"")
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(LOG_THRESHOLD + 1):
                t.write(b"x")
        await p.until_lost()
        return p

    p = loop.run_until_complete(main())
    assert p.events == ["made", ("lost", None)]
    assert connlost_warnings(caplog) == 1
    assert drain_fd(r) == b""
    os.close(r)


def test_bytearray_mutated_after_write_was_copied(loop):
    r, wpipe, cap = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        fill(wpipe, cap)
        ba = bytearray(b"original")
        t.write(ba)  # nothing can be written: all of it is buffered
        size = t.get_write_buffer_size()
        ba[:] = b"XXXXXXXX"
        ba.extend(b"-resized")  # the buffer holds no export of it
        del ba[:4]
        mv_source = bytearray(b"viewed")
        t.write(memoryview(mv_source))
        mv_source[0:1] = b"V"
        ro_source = bytearray(b"|read-only view")
        t.write(memoryview(ro_source).toreadonly())
        ro_source[:] = b"?" * len(ro_source)
        ro_source.extend(b"resized")
        assert os.read(r, cap) == b"\0" * cap
        t.close()
        await p.until_lost()
        return size

    size = loop.run_until_complete(main())
    assert size == len(b"original")
    assert drain_fd(r) == b"originalviewed|read-only view"
    os.close(r)


def test_non_contiguous_memoryview(loop, loop_errors):
    """os.write() refuses a non-contiguous buffer: on the direct path that
    is a fatal write error (reported, the transport closes with it); when
    data is already buffered, ``bytearray +=`` refuses it (TypeError) in
    write() itself and the transport stays open."""
    r1, wpipe1, cap = write_end()
    r2, wpipe2, _ = write_end()
    strided = memoryview(b"abcdef")[::2]

    async def main():
        t1, p1 = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe1)
        t1.write(strided)
        during = (list(p1.events), t1.is_closing())
        t1.write(b"dropped")
        await p1.until_lost()

        t2, p2 = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe2)
        fill(wpipe2, cap)
        t2.write(b"queued")
        try:
            t2.write(strided)
            raised = None
        except Exception as exc:
            raised = (type(exc), str(exc))
        queued = (t2.get_write_buffer_size(), t2.is_closing(), raised)
        os.read(r2, cap)
        t2.close()
        await p2.until_lost()
        return t1, p1, during, p2, queued

    t1, p1, during, p2, queued = loop.run_until_complete(main())
    errors = take_errors(loop_errors)
    assert during == (["made"], True)
    assert p1.events == ["made", ("lost", "BufferError")]
    assert len(errors) == 1
    ctx = errors[0]
    assert ctx["message"] == "Fatal write error on pipe transport"
    assert ctx["exception"] is p1.exc
    assert ctx["transport"] is t1 and ctx["protocol"] is p1
    assert drain_fd(r1) == b""
    assert queued == (len(b"queued"), False, (TypeError, "can't concat memoryview to bytearray"))
    assert p2.events == ["made", ("lost", None)]
    assert drain_fd(r2) == b"queued"
    os.close(r1)
    os.close(r2)


# ----- write pipes: flow control


def test_sixteen_mib_through_a_slow_reader_with_flow_control(loop):
    """The reader takes one pipe-full at a time; each time the transport
    writes exactly one pipe-full from its buffer. pause_writing() comes from
    write() and resume_writing() only when the buffer is empty."""
    total = 16 * 1024 * 1024
    data = pattern(total)
    r, wpipe, cap = write_end()
    high, low = 4 * cap, cap

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        t.set_write_buffer_limits(high=high, low=low)
        limits = t.get_write_buffer_limits()
        t.write(data)  # the first pipe-full goes at once
        sizes = [t.get_write_buffer_size()]
        after_write = list(p.events)
        got = bytearray()
        while len(got) < total:
            chunk = os.read(r, cap)
            assert len(chunk) == min(cap, total - len(got))
            got += chunk
            if sizes[-1] == 0:
                continue
            for _ in range(100):
                await asyncio.sleep(0)
                if t.get_write_buffer_size() != sizes[-1]:
                    break
            sizes.append(t.get_write_buffer_size())
        t.close()
        await p.until_lost()
        return p, limits, sizes, after_write, bytes(got)

    p, limits, sizes, after_write, got = loop.run_until_complete(main())
    assert limits == (low, high)
    expected_sizes = [max(total - k * cap, 0) for k in range(1, -(-total // cap) + 1)]
    assert sizes == expected_sizes
    assert after_write == ["made", ("pause", total - cap)]
    assert p.events == ["made", ("pause", total - cap), ("resume", 0), ("lost", None)]
    assert got == data
    assert drain_fd(r) == b""
    os.close(r)


def test_write_buffer_limits(loop):
    r, wpipe, cap = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        out = {"default": t.get_write_buffer_limits()}
        t.set_write_buffer_limits(low=100)
        out["low only"] = t.get_write_buffer_limits()
        t.set_write_buffer_limits(high=1000)
        out["high only"] = t.get_write_buffer_limits()
        t.set_write_buffer_limits()
        out["reset"] = t.get_write_buffer_limits()
        errors = []
        for kwargs in ({"high": 10, "low": 20}, {"high": -1}, {"high": 5, "low": -1}):
            with pytest.raises(ValueError) as ei:
                t.set_write_buffer_limits(**kwargs)
            errors.append(str(ei.value))
        out["after errors"] = t.get_write_buffer_limits()
        fill(wpipe, cap)
        t.write(b"a" * 300)
        out["buffered"] = (t.get_write_buffer_size(), list(p.events))
        t.write(b"b" * 200)  # 500 bytes: not above the default high mark
        # Lowering the high-water mark below the buffer pauses at once.
        t.set_write_buffer_limits(high=400)
        out["lowered"] = list(p.events)
        t.set_write_buffer_limits(high=100)  # already paused
        t.set_write_buffer_limits(high=10_000)  # raising does not resume
        out["raised"] = list(p.events)
        t.write(b"c" * 10)
        out["size"] = t.get_write_buffer_size()
        os.read(r, cap)
        await p.until(lambda: len(p.events) == 3)
        out["drained"] = (list(p.events), t.get_write_buffer_size())
        t.close()
        await p.until_lost()
        out["data"] = drain_fd(r)
        return p, out, errors

    p, out, errors = loop.run_until_complete(main())
    assert out == {
        "default": (16384, 65536),
        "low only": (100, 400),
        "high only": (250, 1000),
        "reset": (16384, 65536),
        "after errors": (16384, 65536),
        "buffered": (300, ["made"]),
        "lowered": ["made", ("pause", 500)],
        "raised": ["made", ("pause", 500)],
        "size": 510,
        "drained": (["made", ("pause", 500), ("resume", 0)], 0),
        "data": b"a" * 300 + b"b" * 200 + b"c" * 10,
    }
    assert errors == [
        "high (10) must be >= low (20) must be >= 0",
        "high (-1) must be >= low (-1) must be >= 0",
        "high (5) must be >= low (-1) must be >= 0",
    ]
    assert p.events[-1] == ("lost", None)
    os.close(r)


def test_exceptions_in_pause_and_resume_writing_go_to_the_handler(loop, loop_errors):
    r, wpipe, cap = write_end()

    class Boom(Recorder):
        def pause_writing(self):
            super().pause_writing()
            raise ZeroDivisionError("pause")

        def resume_writing(self):
            super().resume_writing()
            raise KeyError("resume")

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Boom(loop), wpipe)
        t.set_write_buffer_limits(high=10)
        fill(wpipe, cap)
        t.write(b"x" * 11)
        paused = (list(p.events), [e["message"] for e in loop_errors])
        os.read(r, cap)
        await p.until(lambda: len(p.events) == 3)
        t.close()
        await p.until_lost()
        return t, p, paused

    t, p, paused = loop.run_until_complete(main())
    assert paused == (["made", ("pause", 11)], ["protocol.pause_writing() failed"])
    assert p.events == ["made", ("pause", 11), ("resume", 0), ("lost", None)]
    errors = take_errors(loop_errors)
    assert [e["message"] for e in errors] == ["protocol.pause_writing() failed", "protocol.resume_writing() failed"]
    assert [type(e["exception"]) for e in errors] == [ZeroDivisionError, KeyError]
    assert all(e["transport"] is t and e["protocol"] is p for e in errors)
    assert drain_fd(r) == b"x" * 11
    os.close(r)


# ----- write pipes: closing


def test_write_eof_and_can_write_eof(loop):
    r, wpipe, _ = write_end()

    async def main():
        ticker = Ticker(loop)
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop, ticker), wpipe)
        can = t.can_write_eof()
        t.write(b"before eof")
        t.write_eof()
        eof_tick = ticker.n
        state = (t.is_closing(), list(p.events), wpipe.closed)
        t.write_eof()  # no-op
        await p.until_lost()
        ticker.stop()
        return p, can, state, eof_tick

    p, can, state, eof_tick = loop.run_until_complete(main())
    assert can is True
    assert state == (True, ["made"], False)
    assert p.events == ["made", ("lost", None)]
    assert p.ticks[-1] == eof_tick + 1
    assert wpipe.closed
    assert drain_fd(r) == b"before eof"
    assert os.read(r, 1) == b""  # end of file
    os.close(r)


@pytest.mark.parametrize("how", ["close", "write_eof"])
def test_close_with_data_buffered_flushes_then_connection_lost(loop, caplog, how):
    """The data is written out, then connection_lost(None) runs from the
    write callback that emptied the buffer, right after resume_writing()
    (on the same iteration); data written meanwhile is dropped."""
    r, wpipe, cap = write_end()
    fd = wpipe.fileno()

    class WriteInResume(Recorder):
        def resume_writing(self):
            super().resume_writing()
            self.transport.write(b"written in resume_writing")

    async def main():
        ticker = Ticker(loop)
        t, p = await loop.connect_write_pipe(lambda: WriteInResume(loop, ticker), wpipe)
        t.write(b"a" * cap)
        t.write(b"b" * (2 * cap))  # all buffered, above the high mark
        getattr(t, how)()
        state = (t.is_closing(), t.get_write_buffer_size(), list(p.events), repr(t))
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            t.write(b"dropped")
        t.close()  # no-op
        got = bytearray()
        while not p.done.done():
            try:
                got += os.read(r, cap)
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
        ticker.stop()
        got += drain_fd(r)
        return t, p, state, bytes(got)

    _t, p, state, got = loop.run_until_complete(main())
    assert state == (
        True,
        2 * cap,
        ["made", ("pause", 2 * cap)],
        f"<_UnixWritePipeTransport closing fd={fd} polling bufsize={2 * cap}>",
    )
    assert p.events == ["made", ("pause", 2 * cap), ("resume", 0), ("lost", None)]
    assert p.tick_of(("resume", 0)) == p.tick_of(("lost", None))
    assert got == b"a" * cap + b"b" * (2 * cap)
    assert wpipe.closed
    assert connlost_warnings(caplog) == 0
    os.close(r)


def test_abort_with_data_buffered_drops_it(loop):
    r, wpipe, cap = write_end()

    async def main():
        ticker = Ticker(loop)
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop, ticker), wpipe)
        t.write(b"a" * cap + b"b" * 1000)  # the b's are buffered
        before = t.get_write_buffer_size()
        t.abort()
        abort_tick = ticker.n
        state = (t.is_closing(), t.get_write_buffer_size(), list(p.events))
        await p.until_lost()
        ticker.stop()
        return p, before, state, abort_tick

    p, before, state, abort_tick = loop.run_until_complete(main())
    assert before == 1000
    assert state == (True, 0, ["made"])
    assert p.events == ["made", ("lost", None)]
    assert p.ticks[-1] == abort_tick + 1
    assert wpipe.closed
    assert drain_fd(r) == b"a" * cap
    assert os.read(r, 1) == b""
    os.close(r)


def test_abort_after_close_drops_what_close_was_waiting_for(loop):
    r, wpipe, cap = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        fill(wpipe, cap)
        t.write(b"never sent")
        t.close()
        t.abort()
        state = (t.get_write_buffer_size(), repr(t).split(" ", 3)[3])
        os.read(r, cap)
        await p.until_lost()
        await iterations(3)
        return p, state

    p, state = loop.run_until_complete(main())
    assert state == (0, "idle bufsize=0>")
    assert p.events == ["made", ("lost", None)]
    assert drain_fd(r) == b""
    os.close(r)


def test_abort_after_connection_lost_raises_attribute_error(loop):
    """The transport dropped its loop: abort() (the one method that does not
    check the state first) fails on ``self._loop._remove_reader``; close(),
    write_eof(), pause/resume are no-ops."""
    r, wpipe, _ = write_end()
    rr, rw = os.pipe()

    async def main():
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(rr, "rb", buffering=0))
        wt.close()
        rt.close()
        await wp.until_lost()
        await rp.until_lost()
        wt.close()
        wt.write_eof()
        rt.close()
        rt.pause_reading()
        rt.resume_reading()
        with pytest.raises(AttributeError) as ei:
            wt.abort()
        return str(ei.value), wt.is_closing()

    message, closing = loop.run_until_complete(main())
    assert message == "'NoneType' object has no attribute '_remove_reader'"
    assert closing
    os.close(r)
    os.close(rw)


def test_abort_twice_reports_the_second_connection_lost_call(loop, loop_errors):
    """asyncio schedules _call_connection_lost once per abort(); the second
    finds the protocol and the pipe gone: the AttributeError of
    ``self._pipe.close()`` (raised in its ``finally:``) goes to the handler."""
    r, wpipe, _ = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        t.abort()
        t.abort()
        await p.until_lost()
        await iterations(3)
        return p

    p = loop.run_until_complete(main())
    assert p.events == ["made", ("lost", None)]
    errors = take_errors(loop_errors)
    assert len(errors) == 1
    exc = errors[0]["exception"]
    assert type(exc) is AttributeError
    assert str(exc) == "'NoneType' object has no attribute 'close'"
    assert type(exc.__context__) is AttributeError
    assert str(exc.__context__) == "'NoneType' object has no attribute 'connection_lost'"
    assert errors[0]["message"] == callback_message(loop, "_UnixWritePipeTransport._call_connection_lost", None)
    os.close(r)


# ----- write pipes: the reader goes away


@pytest.mark.parametrize("state", ["empty", "buffered", "buffered-closing"])
def test_reader_closing_its_end(loop, caplog, state):
    """The write end becomes readable (an error) when the read end closes:
    connection_lost(BrokenPipeError()) if data was buffered (dropped; also
    when close() was waiting for it), else connection_lost(None); later
    writes are dropped and counted, with a warning from the sixth on."""
    r, wpipe, cap = write_end()
    buffered = state != "empty"

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        if buffered:
            fill(wpipe, cap)
            t.write(b"buffered")
        if state == "buffered-closing":
            t.close()
        os.close(r)
        await p.until_lost()
        after = (t.is_closing(), t.get_write_buffer_size(), wpipe.closed)
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(LOG_THRESHOLD + 3):
                t.write(b"after")
        return p, after

    p, after = loop.run_until_complete(main())
    if buffered:
        assert p.events == ["made", ("lost", "BrokenPipeError")]
        assert p.exc.errno is None and p.exc.args == ()
    else:
        assert p.events == ["made", ("lost", None)]
    assert after == (True, 0, True)
    assert connlost_warnings(caplog) == 3


def test_write_after_the_reader_closed_but_before_the_loop_saw_it(loop, loop_errors, caplog):
    """os.write() fails with EPIPE: that OSError closes the transport without
    a handler call and counts as the first lost write."""
    r, wpipe, _ = write_end()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        os.close(r)
        t.write(b"fails")
        during = (list(p.events), t.is_closing())
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(LOG_THRESHOLD + 2):
                t.write(b"after")
        await p.until_lost()
        return p, during

    p, during = loop.run_until_complete(main())
    assert during == (["made"], True)
    assert p.events == ["made", ("lost", "BrokenPipeError")]
    assert p.exc.errno == errno.EPIPE
    # The failed write counted once: 7 more writes, warnings from count 5 on.
    assert connlost_warnings(caplog) == 3
    assert list(loop_errors) == []


def test_write_pipe_on_a_socket_closes_when_the_peer_sends(loop):
    """The readable-means-closed trick: a write pipe on a socket closes as
    soon as the peer sends anything."""
    a, b = socket.socketpair()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), a)
        t.write(b"to peer")
        got = b.recv(100)
        await iterations(3)
        still_open = (list(p.events), t.is_closing())
        b.send(b"!")
        await p.until_lost()
        return t, p, got, still_open

    _t, p, got, still_open = loop.run_until_complete(main())
    assert got == b"to peer"
    assert still_open == (["made"], False)
    assert p.events == ["made", ("lost", None)]
    assert a.fileno() == -1
    b.close()


def test_write_pipe_on_a_fifo(loop, sockdir):
    path = os.path.join(sockdir, "fifo")
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    wpipe = open(path, "wb", buffering=0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        t.write(b"through the fifo")
        await asyncio.sleep(0)
        got = drain_fd(r)
        os.close(r)  # the reader goes away
        await p.until_lost()
        return p, got

    p, got = loop.run_until_complete(main())
    assert got == b"through the fifo"
    assert p.events == ["made", ("lost", None)]
    assert wpipe.closed


@pytest.mark.deviation("D-017")
def test_write_pipe_closed_in_connection_made_stays_registered(loop):
    """asyncio adds a write pipe's reader with a callback scheduled after
    connection_made and never checks whether the transport closed meanwhile:
    a close() in connection_made leaves the (closed) fd registered with the
    loop, which remove_reader() then finds."""
    r, wpipe, _ = write_end()
    w = wpipe.fileno()

    class CloseAtOnce(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.close()

    async def main():
        # (connect_write_pipe() would wake up after connection_lost; in debug
        # mode it then fails on the closed pipe's fileno().)
        p = CloseAtOnce(loop)
        loop._make_write_pipe_transport(wpipe, p)
        await p.until_lost()
        return p, loop.remove_reader(w), loop.remove_reader(w)

    p, first, second = loop.run_until_complete(main())
    assert p.events == ["made", ("lost", None)]
    assert wpipe.closed
    assert (first, second) == (True, False)
    assert os.read(r, 1) == b""
    os.close(r)


def test_write_pipe_on_a_pty_fails_with_eio_without_a_handler_call(loop, loop_errors):
    """A character device is not watched for reading: the pty's master
    closing is seen at the next write, whose OSError (EIO) closes the
    transport without a handler call."""
    master, slave = os.openpty()
    pipe = open(slave, "wb", buffering=0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), pipe)
        t.write(b"abc")
        got = os.read(master, 100)
        os.close(master)
        await iterations(3)
        before = (list(p.events), t.is_closing())
        t.write(b"fails")
        await p.until_lost()
        return p, got, before

    p, got, before = loop.run_until_complete(main())
    assert got == b"abc"
    assert before == (["made"], False)
    assert p.events == ["made", ("lost", "OSError")]
    assert p.exc.errno == errno.EIO
    assert pipe.closed
    assert list(loop_errors) == []


def test_exception_in_connection_lost_called_by_the_write_callback(loop, loop_errors):
    """A close() that waited for the buffer calls connection_lost from the
    write callback: its exception is that callback's, the pipe is closed."""
    r, wpipe, cap = write_end()

    class Boom(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise ZeroDivisionError("connection_lost")

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Boom(loop), wpipe)
        fill(wpipe, cap)
        t.write(b"tail")
        t.close()
        os.read(r, cap)
        await p.until_lost()
        await iterations(2)
        return t, p

    t, p = loop.run_until_complete(main())
    errors = take_errors(loop_errors)
    assert p.events == ["made", ("lost", None)]
    assert wpipe.closed and t.get_protocol() is None
    assert len(errors) == 1
    assert type(errors[0]["exception"]) is ZeroDivisionError
    # The write callback's handle was cancelled by its own _remove_writer()
    # before the exception left it: asyncio names the callback None.
    assert errors[0]["message"] == "Exception in callback None()"
    assert drain_fd(r) == b"tail"
    os.close(r)


def test_write_pipe_on_a_socket_with_flow_control(loop):
    """4 MiB through a socket pair read slowly by the peer: what the first
    write() leaves buffered is what the peer cannot read yet."""
    total = 4 * 1024 * 1024
    data = pattern(total, seed=2)
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), a)
        t.write(data)
        buffered = t.get_write_buffer_size()
        got = bytearray()
        try:
            while True:
                got += b.recv(1 << 20)
        except BlockingIOError:
            pass
        first = len(got)
        sizes = [buffered]
        while len(got) < total:
            try:
                got += b.recv(65536)
            except BlockingIOError:
                await asyncio.sleep(0)
            sizes.append(t.get_write_buffer_size())
        t.close()
        await p.until_lost()
        return p, buffered, first, sizes, bytes(got)

    p, buffered, first, sizes, got = loop.run_until_complete(main())
    assert 0 < buffered == total - first
    assert p.events == ["made", ("pause", buffered), ("resume", 0), ("lost", None)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 0
    assert got == data
    assert a.fileno() == -1
    b.close()
