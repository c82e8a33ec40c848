"""Pipe transports: the transport API (extra info, repr, types, protocol swap,
attributes set by tests) and subprocess pipelines. The rules of test_pipes.py's
docstring hold.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import warnings
from asyncio import transports
from asyncio.subprocess import PIPE

import pytest
from pipe_support import (
    CLOSES_STDIN_WITHOUT_INPUT,
    READ_CLASS,
    WRITE_CLASS,
    Recorder,
    drain_fd,
    fill,
    iterations,
    pattern,
    write_end,
)

# ----- transport API


def test_extra_info_uses_the_callers_dict(loop):
    r, w = os.pipe()
    rpipe, wpipe = open(r, "rb", buffering=0), open(w, "wb", buffering=0)

    async def main():
        out = {}
        for name, make, pipe in (
            ("read", loop._make_read_pipe_transport, rpipe),
            ("write", loop._make_write_pipe_transport, wpipe),
        ):
            extra = {"mine": name}
            p = Recorder(loop)
            t = make(pipe, p, None, extra=extra)
            extra["later"] = 2
            await p.until(lambda p=p: p.events == ["made"])
            out[name] = {
                "pipe": t.get_extra_info("pipe") is pipe,
                "mine": t.get_extra_info("mine"),
                "later": t.get_extra_info("later"),
                "dict": extra == {"mine": name, "pipe": pipe, "later": 2},
                "missing": t.get_extra_info("nope"),
                "default": t.get_extra_info("nope", 42),
                "default kw": t.get_extra_info("nope", default=43),
                "socket": t.get_extra_info("socket"),
                "sockname": t.get_extra_info("sockname"),
            }
            t.close()
            await p.until_lost()
            out[name]["after"] = t.get_extra_info("pipe") is pipe
        return out

    out = loop.run_until_complete(main())
    for name in ("read", "write"):
        assert out[name] == {
            "pipe": True,
            "mine": name,
            "later": 2,
            "dict": True,
            "missing": None,
            "default": 42,
            "default kw": 43,
            "socket": None,
            "sockname": None,
            "after": True,
        }


def test_repr_of_a_read_pipe_in_every_state(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)
    fd = r

    async def main():
        reprs = []
        p = Recorder(loop)
        t = loop._make_read_pipe_transport(pipe, p, None)
        reprs.append(repr(t))  # the reader is added on the next iteration
        await p.until(lambda: p.events == ["made"])
        await asyncio.sleep(0)
        reprs.append(repr(t))
        t.pause_reading()
        reprs.append(repr(t))
        t.resume_reading()
        reprs.append(repr(t))
        t.close()
        reprs.append(repr(t))
        await p.until_lost()
        reprs.append(repr(t))
        return reprs

    reprs = loop.run_until_complete(main())
    name = "_UnixReadPipeTransport"
    assert reprs == [
        f"<{name} fd={fd} idle>",
        f"<{name} fd={fd} polling>",
        f"<{name} fd={fd} idle>",
        f"<{name} fd={fd} polling>",
        f"<{name} closing fd={fd} idle>",
        f"<{name} closed fd={fd} closed>",
    ]
    os.close(w)


def test_repr_of_a_write_pipe_in_every_state(loop):
    r, wpipe, cap = write_end()
    fd = wpipe.fileno()

    async def main():
        reprs = []
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        reprs.append(repr(t))  # watched for reading only
        fill(wpipe, cap)
        t.write(b"abc")
        reprs.append(repr(t))
        t.close()
        reprs.append(repr(t))
        os.read(r, cap)
        await p.until_lost()
        reprs.append(repr(t))
        return reprs

    reprs = loop.run_until_complete(main())
    name = "_UnixWritePipeTransport"
    assert reprs == [
        f"<{name} fd={fd} idle bufsize=0>",
        f"<{name} fd={fd} polling bufsize=3>",
        f"<{name} closing fd={fd} polling bufsize=3>",
        f"<{name} closed fd={fd} closed>",
    ]
    os.close(r)


@pytest.mark.parametrize("end", ["read", "write"])
def test_unclosed_pipe_released_by_loop_close_warns_with_an_idle_repr(loop, end):
    """A transport still watched when the loop closes is released by the
    selector's close(), while ``loop._selector`` is still set but already
    empty: its "unclosed transport" warning reads "idle" (and the write
    end's queued bytes), not "open" or "polling"."""
    r, w, cap = write_end()
    wfd = w.fileno()
    rpipe = open(r, "rb", buffering=0)

    async def main():
        # Protocols that keep no reference to the transport: only the
        # loop's watcher holds it.
        if end == "read":
            await loop.connect_read_pipe(asyncio.Protocol, rpipe)
        else:
            t, _ = await loop.connect_write_pipe(asyncio.Protocol, w)
            fill(w, cap)
            t.write(b"abc")
        await iterations(3)

    loop.run_until_complete(main())
    gc.collect()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        loop.close()
        gc.collect()
    msgs = [str(x.message) for x in warned if x.category is ResourceWarning]
    if end == "read":
        assert msgs == [f"unclosed transport <_UnixReadPipeTransport fd={r} idle>"]
        w.close()
    else:
        assert msgs == [f"unclosed transport <_UnixWritePipeTransport fd={wfd} idle bufsize=3>"]
        rpipe.close()


def test_unclosed_transports_after_loop_close_repr_open_and_pipe_none(loop):
    """CPython's test_unclosed_pipe_transport: repr() after loop.close()
    says 'open'; setting ``_pipe = None`` makes it 'closed' and silences the
    ResourceWarning."""
    r, w = os.pipe()
    rpipe = open(r, "rb", 1024)
    wpipe = open(w, "w", 1024, encoding="utf-8")

    async def connect():
        rt, _ = await loop.connect_read_pipe(lambda: Recorder(loop), rpipe)
        wt, _ = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        return rt, wt

    rt, wt = loop.run_until_complete(connect())
    loop.close()
    reprs = [repr(rt), repr(wt)]
    rpipe.close()
    wpipe.close()
    rt._pipe = None
    wt._pipe = None
    after = [repr(rt), repr(wt), rt._pipe, wt._pipe, rt.get_extra_info("pipe") is rpipe]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rt, wt
        gc.collect()
    assert reprs == [f"<_UnixReadPipeTransport fd={r} open>", f"<_UnixWritePipeTransport fd={w} open>"]
    assert after == [
        f"<_UnixReadPipeTransport closed fd={r} closed>",
        f"<_UnixWritePipeTransport closed fd={w} closed>",
        None,
        None,
        True,
    ]
    assert [str(c.message) for c in caught] == []


def test_pipe_none_while_the_loop_runs(loop):
    """With ``_pipe`` set to None: close() does nothing, write_eof() asserts,
    repr() says closed."""
    r, wpipe, _ = write_end()
    w = wpipe.fileno()

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        t._pipe = None
        t.close()
        state = (t.is_closing(), repr(t))
        with pytest.raises(AssertionError):
            t.write_eof()
        await iterations(3)
        return t, p, state

    _t, p, state = loop.run_until_complete(main())
    assert state == (False, f"<_UnixWritePipeTransport closed fd={w} closed>")
    assert p.events == ["made"]
    assert not wpipe.closed
    wpipe.close()
    os.close(r)


def test_unclosed_transport_warns_and_closes_its_pipe(loop):
    r, w = os.pipe()
    rpipe = open(r, "rb", buffering=0)
    wpipe = open(w, "wb", buffering=0)

    async def connect():
        rt, _ = await loop.connect_read_pipe(lambda: Recorder(loop), rpipe)
        wt, _ = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        return rt, wt

    rt, wt = loop.run_until_complete(connect())
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rt, wt
        gc.collect()
    messages = sorted((c.category, str(c.message)) for c in caught)
    assert messages == sorted(
        [
            (ResourceWarning, f"unclosed transport <_UnixReadPipeTransport fd={r} open>"),
            (ResourceWarning, f"unclosed transport <_UnixWritePipeTransport fd={w} open>"),
        ]
    )
    assert rpipe.closed and wpipe.closed


def test_unclosed_transports_collected_while_the_loop_runs(loop):
    """A read pipe that is paused (so the loop does not hold it) and a write
    pipe on a character device (never registered) are collected when dropped:
    each warns and closes its pipe."""
    r, w = os.pipe()
    rpipe = open(r, "rb", buffering=0)
    wpipe = open(os.devnull, "wb", buffering=0)
    wfd = wpipe.fileno()

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), rpipe)
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        rt.pause_reading()
        await iterations(2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del rt, wt, rp, wp
            gc.collect()
        return sorted((c.category, str(c.message)) for c in caught)

    messages = loop.run_until_complete(main())
    assert messages == sorted(
        [
            (ResourceWarning, f"unclosed transport <_UnixReadPipeTransport fd={r} idle>"),
            (ResourceWarning, f"unclosed transport <_UnixWritePipeTransport fd={wfd} idle bufsize=0>"),
        ]
    )
    assert rpipe.closed and wpipe.closed
    os.close(w)


def test_debug_mode_log_messages(loop):
    loop.set_debug(True)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    r3, w3 = os.pipe()

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(r1, "rb", buffering=0))
        rt.pause_reading()
        rt.resume_reading()
        os.close(w1)
        await rp.until_lost()
        _wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w2, "wb", buffering=0))
        os.close(r2)
        await wp.until_lost()
        ft, fp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w3, "wb", buffering=0))
        os.close(r3)
        ft.write(b"x")  # EPIPE at once
        await fp.until_lost()
        return rp, wp, fp

    records = []

    class Capture(logging.Handler):
        def emit(self, record):  # reprs are taken now, not when the test looks
            if "pipe" in record.getMessage().lower():
                records.append((record.levelname, record.getMessage(), record.exc_info))

    # Not through pytest's handlers: their records (one holds a traceback)
    # would keep the loop alive until the end of the test.
    handler = Capture(logging.DEBUG)
    logger = logging.getLogger("asyncio")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        rp, wp, fp = loop.run_until_complete(main())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    rname, wname = "_UnixReadPipeTransport", "_UnixWritePipeTransport"
    assert [rec[:2] for rec in records] == [
        ("DEBUG", f"Read pipe {r1} connected: (<{rname} fd={r1} polling>, {rp!r})"),
        ("DEBUG", f"<{rname} fd={r1} idle> pauses reading"),
        ("DEBUG", f"<{rname} fd={r1} polling> resumes reading"),
        ("INFO", f"<{rname} fd={r1} polling> was closed by peer"),
        ("DEBUG", f"Write pipe {w2} connected: (<{wname} fd={w2} idle bufsize=0>, {wp!r})"),
        ("INFO", f"<{wname} fd={w2} idle bufsize=0> was closed by peer"),
        ("DEBUG", f"Write pipe {w3} connected: (<{wname} fd={w3} idle bufsize=0>, {fp!r})"),
        ("DEBUG", f"<{wname} fd={w3} idle bufsize=0>: Fatal write error on pipe transport"),
    ]
    assert records[-1][2][1] is fp.exc
    assert [rec[2] is None for rec in records] == [True] * 7 + [False]


def test_transport_types_are_asyncios(loop):
    r, w = os.pipe()

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", buffering=0))
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
        bases = (
            asyncio.BaseTransport,
            asyncio.ReadTransport,
            asyncio.WriteTransport,
            asyncio.Transport,
            asyncio.DatagramTransport,
            asyncio.SubprocessTransport,
            transports._FlowControlMixin,
        )
        types = {}
        for name, t in (("read", rt), ("write", wt)):
            types[name] = {
                "name": type(t).__name__,
                "isinstance": [isinstance(t, b) for b in bases],
                "abort": hasattr(t, "abort"),
                "write": hasattr(t, "write"),
                "pause_reading": hasattr(t, "pause_reading"),
                "get_write_buffer_size": hasattr(t, "get_write_buffer_size"),
                "is_reading": hasattr(t, "is_reading"),
            }
        not_implemented = []
        for method in ("is_reading", "pause_reading", "resume_reading"):
            with pytest.raises(NotImplementedError):
                getattr(wt, method)()
            not_implemented.append(method)
        rt.close()
        wt.close()
        await rp.until_lost()
        await wp.until_lost()
        return types, bases, not_implemented

    types, bases, not_implemented = loop.run_until_complete(main())
    assert types["read"] == {
        "name": "_UnixReadPipeTransport",
        "isinstance": [issubclass(READ_CLASS, b) for b in bases],
        "abort": hasattr(READ_CLASS, "abort"),
        "write": hasattr(READ_CLASS, "write"),
        "pause_reading": True,
        "get_write_buffer_size": hasattr(READ_CLASS, "get_write_buffer_size"),
        "is_reading": True,
    }
    assert types["write"] == {
        "name": "_UnixWritePipeTransport",
        "isinstance": [issubclass(WRITE_CLASS, b) for b in bases],
        "abort": True,
        "write": True,
        "pause_reading": True,
        "get_write_buffer_size": True,
        "is_reading": True,
    }
    # What asyncio's classes are, spelt out.
    assert types["read"]["isinstance"] == [True, True, False, False, False, False, False]
    assert types["write"]["isinstance"] == [True, True, True, True, False, False, True]
    assert types["read"]["abort"] is False and types["read"]["write"] is False
    assert not_implemented == ["is_reading", "pause_reading", "resume_reading"]


def test_set_protocol_and_get_protocol(loop):
    r1, w1 = os.pipe()
    r2, wpipe, cap = write_end()

    async def main():
        rt, first = await loop.connect_read_pipe(lambda: Recorder(loop), open(r1, "rb", buffering=0))
        os.write(w1, b"one")
        await first.until(lambda: first.data == b"one")
        second = Recorder(loop)
        rt.set_protocol(second)
        got = [rt.get_protocol() is second]
        os.write(w1, b"two")
        os.close(w1)
        await second.until_lost()
        got.append(rt.get_protocol())

        wt, wfirst = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        wsecond = Recorder(loop)
        wsecond.transport = wt
        wt.set_protocol(wsecond)
        got.append(wt.get_protocol() is wsecond)
        wt.set_write_buffer_limits(high=0)
        fill(wpipe, cap)
        wt.write(b"x")
        os.read(r2, cap)
        await wsecond.until(lambda: len(wsecond.events) == 2)
        wt.close()
        await wsecond.until_lost()
        got.append(wt.get_protocol())
        return first, second, wfirst, wsecond, got

    first, second, wfirst, wsecond, got = loop.run_until_complete(main())
    assert first.events == ["made", ("data", b"one")]
    assert second.events == [("data", b"two"), "eof", ("lost", None)]
    assert wfirst.events == ["made"]
    assert wsecond.events == [("pause", 1), ("resume", 0), ("lost", None)]
    assert got == [True, None, True, None]
    assert drain_fd(r2) == b"x"
    os.close(r2)


def test_monkeypatched_methods_on_the_instance_are_called(loop):
    """CPython's test_subprocess.test_pause_reading replaces pause_reading
    and resume_reading on the transport instance; StreamReader must reach
    the replacements."""
    r, w = os.pipe()
    limit = 10
    calls = []

    async def main():
        reader = asyncio.StreamReader(limit=limit)
        t, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), open(r, "rb", buffering=0))
        original_pause, original_resume = t.pause_reading, t.resume_reading

        def pause():
            calls.append("pause")
            original_pause()

        def resume():
            calls.append("resume")
            original_resume()

        t.pause_reading = pause
        t.resume_reading = resume
        t.custom_attribute = "kept"
        os.write(w, b"x" * (2 * limit + 1))
        await asyncio.sleep(0.01)
        paused = (list(calls), t.is_reading())
        data = await reader.readexactly(2 * limit + 1)
        os.close(w)
        assert await reader.read() == b""
        del t.pause_reading
        restored = t.pause_reading == original_pause
        return paused, data, restored, t.custom_attribute

    paused, data, restored, custom = loop.run_until_complete(main())
    assert paused == (["pause"], False)
    assert calls == ["pause", "resume"]
    assert data == b"x" * (2 * limit + 1)
    assert restored and custom == "kept"


# ----- subprocesses


def test_cat_echoes_ten_mib_byte_for_byte(loop):
    data = pattern(10 * 1024 * 1024, seed=1)

    async def main():
        p = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        stdin_t = p.stdin.transport
        stdout_t = p._transport.get_pipe_transport(1)
        names = (type(stdin_t).__name__, type(stdout_t).__name__)

        async def feed():
            for i in range(0, len(data), 300_000):
                p.stdin.write(data[i : i + 300_000])
                await p.stdin.drain()
            p.stdin.write_eof()

        got, _ = await asyncio.gather(p.stdout.read(), feed())
        return got, await p.wait(), names

    got, rc, names = loop.run_until_complete(main())
    assert names == ("_UnixWritePipeTransport", "_UnixReadPipeTransport")
    assert rc == 0
    assert len(got) == len(data) and got == data


def test_communicate_with_stdin_stdout_stderr(loop):
    """communicate() writes its input, closes stdin and reads both outputs;
    without input, 3.11 leaves stdin open (the child waits for it), 3.12+
    closes it."""
    script = 'cat; printf "to stderr" >&2; exit 3'

    async def main():
        p = await asyncio.create_subprocess_exec("sh", "-c", script, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out = await p.communicate(b"to stdout\n" * 10_000)
        stdin_closed = p.stdin.transport.get_extra_info("pipe").closed
        q = await asyncio.create_subprocess_exec("sh", "-c", script, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        task = asyncio.ensure_future(q.communicate())
        waited = None
        if not CLOSES_STDIN_WITHOUT_INPUT:
            await asyncio.sleep(0.2)
            waited = (task.done(), q.stdin.transport.is_closing())
            q.stdin.close()
        empty = await asyncio.wait_for(task, 5)
        return out, p.returncode, stdin_closed, empty, q.returncode, waited

    out, rc, stdin_closed, empty, rc2, waited = loop.run_until_complete(main())
    assert out == (b"to stdout\n" * 10_000, b"to stderr")
    assert rc == 3 and stdin_closed
    assert empty == (b"", b"to stderr") and rc2 == 3
    assert waited == (None if CLOSES_STDIN_WITHOUT_INPUT else (False, False))


def test_fifty_concurrent_children_with_pipes(loop):
    async def one(i):
        p = await asyncio.create_subprocess_exec(
            "sh", "-c", 'read x; echo "$x$x"; echo "e$x" >&2', stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        out, err = await p.communicate(b"%d\n" % i)
        return out, err, p.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(50)))

    results = loop.run_until_complete(main())
    assert results == [(b"%d%d\n" % (i, i), b"e%d\n" % i, 0) for i in range(50)]


def test_child_killed_while_we_write_to_its_stdin(loop):
    """The child never reads; once killed, its end of the pipe closes: the
    waiting drain() gets BrokenPipeError (data was buffered), a later one
    ConnectionResetError; later writes are dropped."""

    async def main():
        p = await asyncio.create_subprocess_exec("sleep", "30", stdin=PIPE)
        t = p.stdin.transport
        cap = fcntl.fcntl(t.get_extra_info("pipe").fileno(), fcntl.F_GETPIPE_SZ)
        p.stdin.write(b"x" * (4 * cap))
        buffered = t.get_write_buffer_size()
        drain = asyncio.ensure_future(p.stdin.drain())
        await iterations(3)
        waiting = not drain.done()
        p.kill()
        with pytest.raises(BrokenPipeError) as ei:
            await asyncio.wait_for(drain, 5)
        first = ei.value
        rc = await asyncio.wait_for(p.wait(), 5)
        p.stdin.write(b"dropped")
        with pytest.raises(ConnectionResetError) as ei:
            await p.stdin.drain()
        state = (t.is_closing(), t.get_write_buffer_size(), t.get_extra_info("pipe").closed)
        # communicate() ignores both errors.
        q = await asyncio.create_subprocess_exec("sleep", "30", stdin=PIPE, stdout=PIPE)
        task = asyncio.ensure_future(q.communicate(b"y" * (4 * cap)))
        await iterations(3)
        q.kill()
        out = await asyncio.wait_for(task, 5)
        return cap, buffered, waiting, first, rc, str(ei.value), state, out, q.returncode

    cap, buffered, waiting, first, rc, second, state, out, rc2 = loop.run_until_complete(main())
    assert buffered == 3 * cap
    assert waiting
    assert type(first) is BrokenPipeError and first.errno is None
    assert rc == -9
    assert second == "Connection lost"
    assert state == (True, 0, True)
    assert out == (b"", None) and rc2 == -9


def test_stdout_read_to_eof_after_the_child_exits(loop):
    size = 100_000  # more than a pipe holds, less than the reader's pause mark

    async def main():
        p = await asyncio.create_subprocess_exec(
            "sh", "-c", f"head -c {size} /dev/zero | tr '\\0' 'z'; exit 7", stdout=PIPE
        )
        rc = await p.wait()
        out = await p.stdout.read()
        at_eof = p.stdout.at_eof()
        return rc, out, at_eof

    rc, out, at_eof = loop.run_until_complete(main())
    assert rc == 7
    assert out == b"z" * size
    assert at_eof
