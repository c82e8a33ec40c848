"""Datagram endpoints: close(), abort(), the write buffer and its flow control,
reading (one datagram per iteration, pause/resume), repr and collection.

Same rules as test_datagram.py (see its docstring): every test runs on both
loops and asserts what asyncio does on this Python version.
"""

from __future__ import annotations

import array
import asyncio
import errno
import gc
import os
import re
import socket
import warnings
import weakref

import pytest
from datagram_support import (
    BIG,
    DRAIN_LEAK,
    FATAL_WRITE,
    HEADER,
    SENDS_EMPTY,
    Recorder,
    close_all,
    endpoint,
    filled_unix_endpoint,
    kinds,
    recv_n,
    wait_readable,
)

# ----- close(), abort() and the write buffer


def test_close_then_abort_lose_the_connection_once(loop):
    async def main():
        t, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        t.close()
        state = (t.is_closing(), t.is_reading(), list(p.events))
        t.close()
        t.abort()
        t.resume_reading()
        for _ in range(5):
            await asyncio.sleep(0)
        t.close()
        t.abort()
        await asyncio.sleep(0)
        return state, p, t

    state, p, t = loop.run_until_complete(main())
    assert state == (True, False, ["made"])
    assert p.events == ["made", ("lost", None)]
    assert t.is_closing() and not t.is_reading()


def test_abort_loses_the_connection_on_a_later_iteration(loop):
    async def main():
        t, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        t.abort()
        state = (t.is_closing(), list(p.events))
        await asyncio.sleep(0)
        return state, p

    state, p = loop.run_until_complete(main())
    assert state == (True, ["made"])
    assert p.events == ["made", ("lost", None)]


def test_sendto_after_close_on_connected_endpoint_is_dropped_and_warns(loop, caplog):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, cp = await endpoint(loop, remote_addr=saddr)
        ct.close()
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(3):
                ct.sendto(b"before lost")
            await cp.done
            for _ in range(3):
                ct.sendto(b"after lost")
        # The argument checks still apply.
        with pytest.raises(TypeError):
            ct.sendto("str")
        with pytest.raises(ValueError):
            ct.sendto(b"x", ("127.0.0.1", 9))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            marker.sendto(b"marker", saddr)
            await server.until_count(2)
        await close_all(st)
        return server

    server = loop.run_until_complete(main())
    assert [d for d, _ in server.datagrams] == [b"marker"]
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert logged == ["socket.send() raised exception."] * 2


def test_sendto_after_close_on_unconnected_endpoint(loop):
    """asyncio keeps no closed flag for unconnected endpoints: between close()
    and connection_lost the datagram is still sent; afterwards the socket is
    gone and sendto() raises AttributeError (reporting the failure needs the
    loop reference, which connection_lost dropped)."""

    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        t, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        t.close()
        t.sendto(b"before lost", saddr)
        await p.done
        with pytest.raises(AttributeError):
            t.sendto(b"after lost", saddr)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            marker.sendto(b"marker", saddr)
            await server.until_count(3)
        await close_all(st)
        return server, p

    server, p = loop.run_until_complete(main())
    assert [d for d, _ in server.datagrams] == [b"before lost", b"marker"]
    assert p.events == ["made", ("lost", None)]


def test_close_with_datagrams_buffered_flushes_them_then_loses(loop, sockdir):
    async def main():
        t, p, peer, direct, first = await filled_unix_endpoint(loop, sockdir)
        buffered = [first] + [b"buffered %d " % i + b"b" * (BIG - 16) for i in range(5)]
        for data in buffered[1:]:
            t.sendto(data)
        size_before_close = t.get_write_buffer_size()
        t.close()
        state = (t.is_closing(), t.is_reading(), list(p.events))
        for _ in range(5):
            await asyncio.sleep(0)
        still_open = list(p.events)
        got = await recv_n(loop, peer, len(direct) + len(buffered))
        async with asyncio.timeout(5):
            await p.done
        size_after = t.get_write_buffer_size()
        peer.close()
        return p, direct, buffered, got, size_before_close, state, still_open, size_after

    p, direct, buffered, got, size_before_close, state, still_open, size_after = loop.run_until_complete(main())
    assert len(direct) >= 1
    assert size_before_close == sum(len(d) + HEADER for d in buffered)
    assert state == (True, False, ["made"])
    assert still_open == ["made"]  # waits for the buffer to drain
    assert got == direct + buffered
    assert p.events == ["made", ("lost", None)]
    assert size_after == DRAIN_LEAK * len(buffered)


def test_abort_drops_buffered_datagrams(loop, sockdir):
    """abort() empties the buffer without resetting the size it reports."""

    async def main():
        t, p, peer, direct, first = await filled_unix_endpoint(loop, sockdir)
        t.sendto(b"tail")
        size = t.get_write_buffer_size()
        t.abort()
        state = (t.is_closing(), list(p.events), t.get_write_buffer_size())
        await asyncio.sleep(0)
        lost = list(p.events)
        got = []
        while True:
            try:
                got.append(peer.recv(65536))
            except BlockingIOError:
                break
        peer.close()
        return direct, first, size, state, lost, got

    direct, first, size, state, lost, got = loop.run_until_complete(main())
    assert size == len(first) + HEADER + len(b"tail") + HEADER
    assert state == (True, ["made"], size)
    assert lost == ["made", ("lost", None)]
    assert got == direct


def test_write_buffer_limits_pause_and_resume_writing(loop, sockdir):
    high, low = 3 * BIG, BIG
    per = BIG + HEADER
    pause_at = high // per + 1  # buffered datagrams when the size first exceeds high

    async def main():
        t, p, peer, direct, first = await filled_unix_endpoint(loop, sockdir)
        t.set_write_buffer_limits(high=high, low=low)
        limits = t.get_write_buffer_limits()
        buffered = [first]
        sizes = [t.get_write_buffer_size()]
        while not any(e[0] == "pause" for e in p.events):
            data = b"more %03d " % len(buffered) + b"m" * (BIG - 9)
            t.sendto(data)
            buffered.append(data)
            sizes.append(t.get_write_buffer_size())
        paused_after = len(buffered)
        for i in range(2):
            data = b"over %03d " % i + b"o" * (BIG - 9)
            t.sendto(data)  # still buffered; no second pause
            buffered.append(data)
        before_empty = t.get_write_buffer_size()
        t.sendto(b"")
        empty_counts = t.get_write_buffer_size() - before_empty
        if SENDS_EMPTY:
            buffered.append(b"")
        events_while_full = list(p.events)
        got = await recv_n(loop, peer, len(direct) + len(buffered))
        await p.until(lambda ev: ev[-1][0] == "resume")
        size_after = t.get_write_buffer_size()
        t.close()
        async with asyncio.timeout(5):
            await p.done
        peer.close()
        return (limits, sizes, paused_after, empty_counts, events_while_full, got, direct, buffered, size_after, p)

    (limits, sizes, paused_after, empty_counts, events_while_full, got, direct, buffered, size_after, p) = (
        loop.run_until_complete(main())
    )
    assert limits == (low, high)
    assert sizes == [per * (i + 1) for i in range(pause_at)]
    assert paused_after == pause_at
    assert empty_counts == (HEADER if SENDS_EMPTY else 0)
    assert events_while_full == ["made", ("pause", per * pause_at)]
    assert got == direct + buffered
    assert kinds(p.events) == ["made", "pause", "resume", "lost"]
    resumed_at = p.events[2][1]
    assert resumed_at <= low
    assert size_after == DRAIN_LEAK * len(buffered)


def test_peer_gone_while_buffered_reports_each_datagram_to_error_received(loop, sockdir):
    """Each buffered datagram the writer then fails to send goes to
    error_received (ECONNREFUSED once, then ENOTCONN: the kernel disconnected
    the socket); the endpoint stays open and its buffer empties."""

    async def main():
        t, p, peer, _direct, _first = await filled_unix_endpoint(loop, sockdir)
        for i in range(3):
            t.sendto(b"more %d" % i)
        peer.close()
        await p.until_count(5)
        for _ in range(5):
            await asyncio.sleep(0)
        state = (t.is_closing(), t.get_write_buffer_size(), list(p.events))
        await close_all(t)
        return state, p

    (closing, size, events), p = loop.run_until_complete(main())
    assert not closing
    assert events == [
        "made",
        ("error", "ConnectionRefusedError", errno.ECONNREFUSED),
        ("error", "OSError", errno.ENOTCONN),
        ("error", "OSError", errno.ENOTCONN),
        ("error", "OSError", errno.ENOTCONN),
    ]
    # Only the bytes of sent datagrams are taken off the count.
    assert size == HEADER * 4
    assert p.events == [*events, ("lost", None)]


def test_sendto_after_close_while_buffered_is_still_queued_and_sent(loop, sockdir):
    """close() with datagrams buffered only marks the endpoint closing: a
    later sendto() is queued behind them and sent before connection_lost."""

    async def main():
        t, p, peer, direct, first = await filled_unix_endpoint(loop, sockdir)
        t.close()
        t.sendto(b"late")
        size = t.get_write_buffer_size()
        got = await recv_n(loop, peer, len(direct) + 2)
        async with asyncio.timeout(5):
            await p.done
        peer.close()
        return got, direct, first, size, p

    got, direct, first, size, p = loop.run_until_complete(main())
    assert size == len(first) + HEADER + 4 + HEADER
    assert got == [*direct, first, b"late"]
    assert p.events == ["made", ("lost", None)]


def test_buffered_data_is_copied_and_counted_by_len(loop, sockdir):
    """A buffered bytearray is copied (later changes are not sent); a
    memoryview is counted by len() (items, not bytes) and sent as its bytes."""
    wide = memoryview(array.array("H", [1, 2, 3]))

    async def main():
        t, _, peer, direct, first = await filled_unix_endpoint(loop, sockdir)
        size = t.get_write_buffer_size()
        buf = bytearray(b"before")
        t.sendto(buf)
        buf[:] = b"AFTER!"
        sizes = [t.get_write_buffer_size() - size]
        t.sendto(wide)
        sizes.append(t.get_write_buffer_size() - size)
        got = await recv_n(loop, peer, len(direct) + 3)
        await close_all(t)
        peer.close()
        return got[len(direct) :], sizes, first

    got, sizes, first = loop.run_until_complete(main())
    assert got == [first, b"before", wide.tobytes()]
    assert sizes == [6 + HEADER, 6 + HEADER + len(wide) + HEADER]
    assert len(wide) == 3 and wide.nbytes == 6


def test_multibyte_memoryview_is_sent_and_non_contiguous_is_fatal(loop, loop_errors, sockdir):
    async def main():
        path = os.path.join(sockdir, "peer")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
            peer.bind(path)
            t, p = await endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
            t.sendto(memoryview(array.array("H", [1, 2, 3])))
            first = peer.recv(100)
            t.sendto(memoryview(b"abcdef")[::2])  # not C-contiguous
            during = (list(p.events), t.is_closing())
            exc = await asyncio.wait_for(p.done, 5)
        return first, during, exc, p

    first, during, exc, p = loop.run_until_complete(main())
    assert first == array.array("H", [1, 2, 3]).tobytes()
    assert during == (["made"], True)
    assert type(exc) is BufferError
    assert p.events == ["made", ("lost", "BufferError")]
    assert len(loop_errors) == 1
    assert loop_errors[0]["message"] == FATAL_WRITE and loop_errors[0]["exception"] is exc
    loop_errors.clear()


def test_lowering_the_high_mark_while_buffered_pauses_at_once(loop, sockdir):
    async def main():
        t, p, peer, direct, _first = await filled_unix_endpoint(loop, sockdir)
        before = list(p.events)
        t.set_write_buffer_limits(high=BIG // 2)
        after = list(p.events)
        got = await recv_n(loop, peer, len(direct) + 1)
        await p.until(lambda ev: ev[-1][0] == "resume")
        await close_all(t)
        peer.close()
        return before, after, p, got

    before, after, p, _got = loop.run_until_complete(main())
    assert before == ["made"]
    assert after == ["made", ("pause", BIG + HEADER)]
    assert kinds(p.events) == ["made", "pause", "resume", "lost"]


@pytest.mark.parametrize("where", ["pause_writing", "resume_writing"])
def test_exception_in_pause_or_resume_writing_goes_to_the_handler(loop, loop_errors, sockdir, where):
    class Boom(Recorder):
        raised = None

        def pause_writing(self):
            super().pause_writing()
            if where == "pause_writing":
                self.raised = ZeroDivisionError(where)
                raise self.raised

        def resume_writing(self):
            super().resume_writing()
            if where == "resume_writing":
                self.raised = ZeroDivisionError(where)
                raise self.raised

    async def main():
        t, p, peer, direct, _first = await filled_unix_endpoint(loop, sockdir, lambda: Boom(loop))
        t.set_write_buffer_limits(high=BIG // 2)
        errors_after_pause = len(loop_errors)
        await recv_n(loop, peer, len(direct) + 1)
        await p.until(lambda ev: ev[-1][0] == "resume")
        await asyncio.sleep(0)
        closing = t.is_closing()
        await close_all(t)
        peer.close()
        return p, t, errors_after_pause, closing

    p, t, errors_after_pause, closing = loop.run_until_complete(main())
    assert not closing
    assert kinds(p.events) == ["made", "pause", "resume", "lost"]
    assert errors_after_pause == (1 if where == "pause_writing" else 0)
    assert len(loop_errors) == 1
    ctx = loop_errors[0]
    assert ctx["message"] == f"protocol.{where}() failed"
    assert ctx["exception"] is p.raised
    assert ctx["transport"] is t and ctx["protocol"] is p
    loop_errors.clear()


def test_set_write_buffer_limits_checks(loop):
    async def main():
        t, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        got = [t.get_write_buffer_limits()]
        t.set_write_buffer_limits(low=1000)
        got.append(t.get_write_buffer_limits())
        t.set_write_buffer_limits(high=100)
        got.append(t.get_write_buffer_limits())
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            t.set_write_buffer_limits(high=1, low=2)
        t.set_write_buffer_limits(0, 0)
        got.append(t.get_write_buffer_limits())
        t.set_write_buffer_limits()
        got.append(t.get_write_buffer_limits())
        await close_all(t)
        return got

    assert loop.run_until_complete(main()) == [(16384, 65536), (1000, 4000), (25, 100), (0, 0), (16384, 65536)]


# ----- reading


def _queue_unix_datagrams(path, datagrams):
    """Send from a plain unix socket: the datagrams are in the receiver's queue on return."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, path)


def test_one_datagram_is_delivered_per_loop_iteration(loop, sockdir):
    """asyncio reads one datagram per readiness callback: a callback scheduled
    by datagram_received runs before the next queued datagram is delivered."""
    path = os.path.join(sockdir, "server")

    class Interleave(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.loop.call_soon(self._log, ("soon", data))

    async def main():
        t, p = await endpoint(loop, lambda: Interleave(loop), family=socket.AF_UNIX, local_addr=path)
        t.pause_reading()
        _queue_unix_datagrams(path, [b"d0", b"d1", b"d2"])
        t.resume_reading()
        await p.until_count(7)
        await close_all(t)
        return p

    p = loop.run_until_complete(main())
    assert p.events == [
        "made",
        ("data", b"d0", None),
        ("soon", b"d0"),
        ("data", b"d1", None),
        ("soon", b"d1"),
        ("data", b"d2", None),
        ("soon", b"d2"),
        ("lost", None),
    ]


@pytest.mark.parametrize("action", ["close", "abort", "pause_reading"])
def test_no_datagram_is_delivered_after_close_or_pause_in_datagram_received(loop, sockdir, action):
    path = os.path.join(sockdir, "server")

    class StopAtFirst(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            getattr(self.transport, action)()

    async def main():
        t, p = await endpoint(loop, lambda: StopAtFirst(loop), family=socket.AF_UNIX, local_addr=path)
        t.pause_reading()
        _queue_unix_datagrams(path, [b"d0", b"d1", b"d2"])
        t.resume_reading()
        await p.until_count(2)
        for _ in range(10):
            await asyncio.sleep(0)
        events = list(p.events)
        if action == "pause_reading":
            t.close()
        await asyncio.wait_for(p.done, 5)
        return events, p

    events, p = loop.run_until_complete(main())
    if action == "pause_reading":
        assert events == ["made", ("data", b"d0", None)]
    else:
        assert events == ["made", ("data", b"d0", None), ("lost", None)]
    assert p.events == ["made", ("data", b"d0", None), ("lost", None)]


def test_pause_and_resume_reading(loop):
    async def main():
        st, server = await endpoint(loop, local_addr=("127.0.0.1", 0))
        saddr = st.get_extra_info("sockname")
        ct, _ = await endpoint(loop, remote_addr=saddr)
        states = [st.is_reading()]
        st.pause_reading()
        st.pause_reading()  # idempotent
        states.append(st.is_reading())
        for i in range(5):
            ct.sendto(b"queued %d" % i)
        wait_readable(st.get_extra_info("socket").fileno())
        for _ in range(20):
            await asyncio.sleep(0)
        while_paused = list(server.events)
        st.resume_reading()
        st.resume_reading()
        states.append(st.is_reading())
        await server.until_count(6)
        await close_all(ct, st)
        states.append(st.is_reading())
        return server, states, while_paused

    server, states, while_paused = loop.run_until_complete(main())
    assert states == [True, False, True, False]
    assert while_paused == ["made"]
    assert [d for d, _ in server.datagrams] == [b"queued %d" % i for i in range(5)]


def test_pause_reading_inside_connection_made_keeps_the_endpoint_paused(loop):
    class PauseEarly(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        st, server = await endpoint(loop, lambda: PauseEarly(loop), local_addr=("127.0.0.1", 0))
        ct, _ = await endpoint(loop, remote_addr=st.get_extra_info("sockname"))
        ct.sendto(b"hello")
        wait_readable(st.get_extra_info("socket").fileno())
        for _ in range(10):
            await asyncio.sleep(0)
        before = list(server.events)
        st.resume_reading()
        await server.until_count(2)
        await close_all(ct, st)
        return before, server

    before, server = loop.run_until_complete(main())
    assert before == ["made"]
    assert [d for d, _ in server.datagrams] == [b"hello"]


# ----- repr and collection


def test_repr(loop, sockdir):
    async def main():
        t, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        fd = t.get_extra_info("socket").fileno()
        reprs = {"fd": fd, "open": repr(t)}
        t.pause_reading()
        reprs["paused"] = repr(t)
        t.resume_reading()
        t.close()
        reprs["closing"] = repr(t)
        await t.get_protocol().done
        reprs["closed"] = repr(t)
        ft, _fp, peer, _direct, _first = await filled_unix_endpoint(loop, sockdir)
        reprs["ffd"] = ft.get_extra_info("socket").fileno()
        reprs["size"] = ft.get_write_buffer_size()
        reprs["buffered"] = repr(ft)
        ft.close()
        reprs["buffered closing"] = repr(ft)
        ft.abort()
        await asyncio.sleep(0)
        peer.close()
        return reprs

    r = loop.run_until_complete(main())
    name = "_SelectorDatagramTransport"
    fd, ffd, size = r["fd"], r["ffd"], r["size"]
    assert size == BIG + HEADER
    assert re.fullmatch(rf"<{name} fd={fd} read=polling write=<idle, bufsize=0>>", r["open"])
    assert re.fullmatch(rf"<{name} fd={fd} read=idle write=<idle, bufsize=0>>", r["paused"])
    assert re.fullmatch(rf"<{name} closing fd={fd} read=idle write=<idle, bufsize=0>>", r["closing"])
    assert re.fullmatch(rf"<{name} closed fd={fd}>", r["closed"])
    assert re.fullmatch(rf"<{name} fd={ffd} read=polling write=<polling, bufsize={size}>>", r["buffered"])
    assert re.fullmatch(rf"<{name} closing fd={ffd} read=idle write=<polling, bufsize={size}>>", r["buffered closing"])


def test_unclosed_transport_warns_and_closes_its_socket(loop):
    async def main():
        t, _p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        t.pause_reading()  # nothing registered: only we hold the transport
        return weakref.ref(t), t.get_extra_info("socket")

    ref, sock = loop.run_until_complete(main())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            gc.collect()
    assert ref() is None
    msgs = [str(x.message) for x in w if issubclass(x.category, ResourceWarning)]
    assert any(m.startswith("unclosed transport <_SelectorDatagramTransport") for m in msgs), msgs
    assert sock.fileno() == -1
