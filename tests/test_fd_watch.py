"""add_reader, remove_reader, add_writer, remove_writer."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import pytest


def run_briefly(loop, n=1):
    for _ in range(n):
        loop.call_soon(loop.stop)
        loop.run_forever()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_reader_called_with_args(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a.fileno(), lambda x: got.append((x, a.recv(100))), "arg")
    b.send(b"hello")
    run_briefly(loop, 2)
    assert got == [("arg", b"hello")]
    assert loop.remove_reader(a.fileno()) is True


def test_reader_is_level_triggered(loop, pair):
    a, b = pair
    got = []

    def read_one_byte():
        got.append(a.recv(1))
        if len(got) == 3:
            loop.remove_reader(a)

    loop.add_reader(a, read_one_byte)
    b.send(b"xyz")
    run_briefly(loop, 5)
    assert got == [b"x", b"y", b"z"]


def test_remove_reader_returns_false_when_absent(loop, pair):
    a, _ = pair
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is False
    loop.add_writer(a, lambda: None)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is True


def test_writer_called(loop, pair):
    a, _ = pair
    got = []

    def on_writable():
        got.append(1)
        loop.remove_writer(a)

    loop.add_writer(a, on_writable)
    run_briefly(loop, 3)
    assert got == [1]


def test_replacing_reader_cancels_old_handle(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, got.append, "old")
    loop.add_reader(a, lambda: (got.append("new"), a.recv(10)))
    b.send(b"1")
    run_briefly(loop, 2)
    assert got == ["new"]
    loop.remove_reader(a)


def test_reader_and_writer_on_same_fd(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, lambda: (got.append("r"), a.recv(10), loop.remove_reader(a)))
    loop.add_writer(a, lambda: (got.append("w"), loop.remove_writer(a)))
    b.send(b"1")
    run_briefly(loop, 3)
    assert sorted(got) == ["r", "w"]


def test_add_reader_closed_fd_is_ebadf(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        loop.add_reader(fd, print)
    assert info.value.errno == errno.EBADF
    assert loop.remove_reader(fd) is False


def test_add_reader_regular_file_is_eperm(loop, tmp_path):
    p = tmp_path / "f"
    p.write_text("x")
    with open(p) as f:
        with pytest.raises(PermissionError) as info:
            loop.add_reader(f, print)
        assert info.value.errno == errno.EPERM


@pytest.mark.parametrize("bad", [-1, "x", object(), 1.5])
def test_add_reader_invalid_fileobj_is_value_error(loop, bad):
    with pytest.raises(ValueError):
        loop.add_reader(bad, print)


def test_remove_reader_after_socket_closed_finds_it_by_object(loop):
    a, b = socket.socketpair()
    loop.add_reader(a, print)
    a.close()
    # fileno() is -1 now; the registration is found by identity, as selectors does.
    assert loop.remove_reader(a) is True
    b.close()


def test_fd_reuse_after_close_and_reregister(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, print)
    assert loop.remove_reader(fd) is True
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        got = []
        loop.add_reader(c, lambda: (got.append(c.recv(5)), loop.remove_reader(c)))
        d.send(b"again")
        run_briefly(loop, 2)
        assert got == [b"again"]
    finally:
        c.close()
        d.close()


def test_pipe_reader(loop):
    r, w = os.pipe()
    os.set_blocking(r, False)
    got = []
    try:
        loop.add_reader(r, lambda: (got.append(os.read(r, 10)), loop.remove_reader(r)))
        os.write(w, b"pipe")
        run_briefly(loop, 2)
        assert got == [b"pipe"]
    finally:
        os.close(r)
        os.close(w)


def test_hangup_wakes_reader(loop):
    r, w = os.pipe()
    got = []
    try:
        loop.add_reader(r, lambda: (got.append(os.read(r, 10)), loop.remove_reader(r)))
        os.close(w)
        run_briefly(loop, 2)
        assert got == [b""]
    finally:
        os.close(r)


def test_cancelled_reader_handle_is_unregistered(loop, pair):
    a, b = pair
    got = []
    h = loop._add_reader(a, got.append, 1)  # the public method returns None before 3.12
    h.cancel()
    b.send(b"x")
    run_briefly(loop, 2)
    assert got == []
    assert loop.remove_reader(a) is False


def test_watchers_on_high_and_low_fds_at_once(loop):
    """fds far apart (a high ``dup2`` target beside low ones) are watched
    and removed independently; a negative fd is refused."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = min(soft - 1, 1 << 16)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        os.dup2(a.fileno(), high)
    except OSError as e:
        for s in (a, b, c, d):
            s.close()
        pytest.skip(f"cannot dup2 to fd {high}: {e}")
    seen = []
    try:
        loop.add_reader(high, lambda: (seen.append("high"), os.read(high, 10)))
        loop.add_reader(c.fileno(), lambda: (seen.append("low"), c.recv(10)))
        b.send(b"x")
        d.send(b"y")
        loop.run_until_complete(_turns(loop, 5))
        removed = [loop.remove_reader(high), loop.remove_reader(high), loop.remove_reader(c.fileno())]
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.add_reader(-1, lambda: None)
    finally:
        os.close(high)
        for s in (a, b, c, d):
            s.close()
    assert sorted(seen) == ["high", "low"]
    assert removed == [True, False, True]


async def _turns(loop, n):
    for _ in range(n):
        await asyncio.sleep(0)
