"""Pipe transports: ``loop.connect_read_pipe``, ``loop.connect_write_pipe``
and the pipes of subprocesses (asyncio's ``unix_events._UnixReadPipeTransport``
and ``_UnixWritePipeTransport``).

Every test runs on asyncio and on ferroloop (``loop`` fixture) and asserts
what asyncio does; expected values come from asyncio's source (the pipe
classes are the same in 3.11, 3.12 and 3.13) or from plain OS calls (the
pipe capacity, what a peer socket can read), never from comparing the two
loops at run time. A recording protocol logs the protocol callbacks in
order; a ticker counts loop iterations where the iteration a callback runs
on matters.

asyncio's per-version differences these tests follow:

- 3.13 shows a failed callback's arguments in the handler's "Exception in
  callback ..." message only in debug mode.
- ``Process.communicate()`` without input closes stdin from 3.12 on (3.11
  leaves it open, so a child reading stdin waits).

What asyncio's pipe classes do that the socket transports do not, and these
tests pin down:

- A read pipe reads once (up to 256 KiB) per readiness event; at end of file
  it schedules ``eof_received`` and then ``connection_lost(None)`` (its return
  value is ignored); ``EIO`` (a pty whose other side closed) closes it
  without calling the exception handler; it has no ``abort()``.
- A write pipe watches its fd for reading (pipes, FIFOs and sockets, not
  character devices): readable means the reader closed its end (or, for a
  socket, that the peer sent something) and the transport closes, with
  ``BrokenPipeError()`` if data was buffered. ``resume_writing()`` is called
  only when the buffer empties, and a ``close()``/``write_eof()`` that waited
  for the buffer calls ``connection_lost`` from the write callback itself.
- ``write()`` asserts its argument's type (``AssertionError(repr(data))``),
  copies what it buffers, and counts writes made after the connection was
  lost or closed, logging a warning from the sixth one on.
"""

from __future__ import annotations

import errno
import gc
import os
import select
import sys
import warnings

import pytest
from pipe_support import (
    SHOWS_ARGS_IN_DEBUG_ONLY,
    Recorder,
    callback_message,
    drain_fd,
    iterations,
    take_errors,
    write_end,
)

# ----- what a pipe may be


def test_regular_files_are_refused(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"content")

    async def main():
        results = []
        for connect, mode in ((loop.connect_read_pipe, "rb"), (loop.connect_write_pipe, "ab")):
            f = open(path, mode, buffering=0)
            with pytest.raises(ValueError) as ei:
                await connect(lambda: Recorder(loop), f)
            results.append((str(ei.value), f.closed, os.get_blocking(f.fileno())))
            f.close()
        dfd = os.open(tmp_path, os.O_RDONLY)
        for connect in (loop.connect_read_pipe, loop.connect_write_pipe):
            with pytest.raises(ValueError) as ei:
                await connect(lambda: Recorder(loop), FdHolder(dfd))
            results.append((str(ei.value), False, os.get_blocking(dfd)))
        os.close(dfd)
        await iterations(3)
        return results

    results = loop.run_until_complete(main())
    assert results == [
        ("Pipe transport is for pipes/sockets only.", False, True),
        ("Pipe transport is only for pipes, sockets and character devices", False, True),
        ("Pipe transport is for pipes/sockets only.", False, True),
        ("Pipe transport is only for pipes, sockets and character devices", False, True),
    ]


def test_regular_file_refused_after_extra_is_filled(loop, tmp_path):
    """The constructor stores the pipe in the caller's extra dict before it
    looks at the file type."""
    path = tmp_path / "regular"
    path.write_bytes(b"")
    for make in (loop._make_read_pipe_transport, loop._make_write_pipe_transport):
        f = open(path, "rb", buffering=0)
        extra = {"mine": 1}
        with pytest.raises(ValueError):
            make(f, Recorder(loop), None, extra=extra)
        assert extra == {"mine": 1, "pipe": f}
        f.close()


def epoll_refusal(path):
    """The errno with which epoll refuses ``path`` opened for reading (None if it accepts it)."""
    if not hasattr(select, "epoll"):
        return None
    fd = os.open(path, os.O_RDONLY)
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
    except OSError as exc:
        return exc.errno
    finally:
        ep.close()
        os.close(fd)
    return None


DEV_NULL_REFUSED = epoll_refusal(os.devnull)
needs_dev_null_refused = pytest.mark.skipif(DEV_NULL_REFUSED is None, reason="the poller accepts /dev/null")


async def dev_null_read_pipe(loop):
    """A read pipe on /dev/null, three iterations after it was connected:
    (transport, protocol, state then)."""
    pipe = open(os.devnull, "rb", buffering=0)
    fd = pipe.fileno()
    t, p = await loop.connect_read_pipe(lambda: Recorder(loop), pipe)
    await iterations(3)
    state = {"events": list(p.events), "reading": t.is_reading(), "closing": t.is_closing(), "repr": repr(t)}
    t.close()
    await p.until_lost()
    state["closed"] = pipe.closed
    state["fd"] = fd
    return t, p, state


@needs_dev_null_refused
def test_dev_null_as_a_read_pipe_fails_in_the_add_reader_callback(loop, loop_errors):
    """A character device passes the type check, but epoll refuses /dev/null:
    the registration fails in the callback the constructor scheduled, so the
    exception goes to the handler while connect_read_pipe() returns; the
    transport still says it is reading, and closes normally."""
    _t, p, state = loop.run_until_complete(dev_null_read_pipe(loop))
    errors = take_errors(loop_errors)
    assert len(errors) == 1
    exc = errors[0]["exception"]
    assert type(exc) is PermissionError and exc.errno == DEV_NULL_REFUSED
    assert "handle" in errors[0]
    assert {k: state[k] for k in ("events", "reading", "closing", "closed")} == {
        "events": ["made"],
        "reading": True,
        "closing": False,
        "closed": True,
    }
    assert p.events == ["made", ("lost", None)]


@needs_dev_null_refused
def test_dev_null_read_pipe_is_idle_after_the_refusal(loop, loop_errors):
    _t, _p, state = loop.run_until_complete(dev_null_read_pipe(loop))
    take_errors(loop_errors)
    assert state["repr"] == f"<_UnixReadPipeTransport fd={state['fd']} idle>"


@needs_dev_null_refused
def test_dev_null_read_pipe_refusal_names_the_add_reader_callback(loop, loop_errors):
    """The failing callback is the transport's ``_add_reader(fd, _read_ready)``."""
    _t, _p, state = loop.run_until_complete(dev_null_read_pipe(loop))
    errors = take_errors(loop_errors)
    message = errors[0]["message"]
    name = "Exception in callback _UnixReadPipeTransport._add_reader"
    if SHOWS_ARGS_IN_DEBUG_ONLY and not loop.get_debug():
        assert message == name + "()"
    else:
        assert message.startswith(f"{name}({state['fd']}, <bound method")


def test_dev_null_as_a_write_pipe(loop):
    """A character device is not watched for reading: /dev/null takes
    everything at once."""
    pipe = open(os.devnull, "wb", buffering=0)

    async def main():
        t, p = await loop.connect_write_pipe(lambda: Recorder(loop), pipe)
        t.write(b"x" * (1 << 20))
        state = (t.get_write_buffer_size(), repr(t).split(" ", 2)[2])
        t.close()
        await p.until_lost()
        return p, state

    p, state = loop.run_until_complete(main())
    assert state == (0, "idle bufsize=0>")
    assert p.events == ["made", ("lost", None)]
    assert pipe.closed


def test_pipes_are_made_non_blocking(loop):
    r, w = os.pipe()
    assert os.get_blocking(r) and os.get_blocking(w)

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", buffering=0))
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
        state = (os.get_blocking(r), os.get_blocking(w))
        rt.close()
        wt.close()
        await rp.until_lost()
        await wp.until_lost()
        return state

    assert loop.run_until_complete(main()) == (False, False)


def test_pipe_objects_whose_fileno_is_bad(loop):
    """fileno()'s exception, or fstat()'s EBADF, reaches the caller.

    (asyncio's half-built transport then warns from ``__del__``, and its
    repr may fail there: that noise is swallowed here, not asserted.)"""
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # r is now a closed fd number

    class Closed:
        def fileno(self):
            raise ValueError("I/O operation on closed file")

        def close(self):
            pass

    async def main():
        out = []
        for connect in (loop.connect_read_pipe, loop.connect_write_pipe):
            for pipe in (FdHolder(r), FdHolder(-1), Closed()):
                try:
                    await connect(lambda: Recorder(loop), pipe)
                    out.append("connected")
                except Exception as exc:
                    out.append((type(exc), getattr(exc, "errno", None), str(exc)))
        await iterations(3)
        return out

    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            out = loop.run_until_complete(main())
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    unraisable.clear()
    ebadf = (OSError, errno.EBADF, f"[Errno {errno.EBADF}] {os.strerror(errno.EBADF)}")
    closed = (ValueError, None, "I/O operation on closed file")
    assert out == [ebadf, ebadf, closed] * 2


class FdHolder:
    """A pipe object: fileno() and a close() that leaves the fd open."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd

    def close(self):
        pass


def test_any_object_with_fileno_and_close_is_a_pipe(loop):
    r, w = os.pipe()
    calls = []

    class PipeLike:
        def __init__(self, fd):
            self.fd = fd

        def fileno(self):
            calls.append("fileno")
            return self.fd

        def close(self):
            calls.append("close")
            os.close(self.fd)

    async def main():
        _t, p = await loop.connect_read_pipe(lambda: Recorder(loop), PipeLike(r))
        os.write(w, b"duck")
        os.close(w)
        await p.until_lost()
        return p

    p = loop.run_until_complete(main())
    assert p.events == ["made", ("data", b"duck"), "eof", ("lost", None)]
    # In debug mode connect_read_pipe() logs pipe.fileno() once more.
    assert calls == ["fileno", *(["fileno"] if loop.get_debug() else []), "close"]


def test_pipe_whose_close_raises(loop, loop_errors):
    """The pipe's close() fails in _call_connection_lost's ``finally:``:
    the error goes to the handler and the transport keeps its pipe, protocol
    and loop (the lines clearing them are not reached)."""
    r, w = os.pipe()

    class BadClose:
        def fileno(self):
            return r

        def close(self):
            raise OSError("close failed")

    pipe = BadClose()

    async def main():
        t, p = await loop.connect_read_pipe(lambda: Recorder(loop), pipe)
        os.close(w)
        await p.until_lost()
        await iterations(2)
        state = (t.get_protocol() is p, t._pipe is pipe, t._loop is loop, repr(t), t.is_closing())
        t._pipe = None  # as CPython's tests do, so that __del__ does not close it again
        return p, state

    p, state = loop.run_until_complete(main())
    errors = take_errors(loop_errors)
    assert p.events == ["made", "eof", ("lost", None)]
    assert state == (True, True, True, f"<_UnixReadPipeTransport closing fd={r} idle>", True)
    assert len(errors) == 1
    assert str(errors[0]["exception"]) == "close failed"
    assert errors[0]["message"] == callback_message(loop, "_UnixReadPipeTransport._call_connection_lost", None)
    os.close(r)


def test_transports_after_the_loop_closed(loop):
    """close() needs the loop (it schedules connection_lost): RuntimeError,
    with the transport left closing; a write() that must wait needs it too
    (the part written at once is gone, nothing is buffered)."""
    rr, rw = os.pipe()
    wr, wpipe, cap = write_end()
    rpipe = open(rr, "rb", buffering=0)
    w = wpipe.fileno()

    async def connect():
        rt, _ = await loop.connect_read_pipe(lambda: Recorder(loop), rpipe)
        wt, _ = await loop.connect_write_pipe(lambda: Recorder(loop), wpipe)
        return rt, wt

    rt, wt = loop.run_until_complete(connect())
    loop.close()
    out = []
    for action in (lambda: wt.write(b"z" * (cap + 10)), wt.close, rt.close, wt.abort):
        try:
            action()
            out.append("ok")
        except Exception as exc:
            out.append(repr(exc))
    out.append((rt.is_closing(), wt.is_closing(), wt.get_write_buffer_size(), repr(rt), repr(wt)))
    out.append(len(drain_fd(wr)))
    for t in (rt, wt):
        t._pipe = None
    rpipe.close()
    wpipe.close()
    os.close(rw)
    os.close(wr)
    closed = repr(RuntimeError("Event loop is closed"))
    assert out == [
        closed,
        closed,
        closed,
        closed,
        (
            True,
            True,
            0,
            f"<_UnixReadPipeTransport closing fd={rr} open>",
            f"<_UnixWritePipeTransport closing fd={w} open>",
        ),
        cap,
    ]
