"""Loop statistics (``ferroloop.stats``) and the blocking-call detector (``ferroloop.detect_blocking``).

asyncio has neither: these tests run on ferroloop only, except
``slow_callback_duration``, which asyncio has and ferroloop keeps natively.
Blocking is real (``time.sleep``, CPU loops, blocking socket calls), and the
reports are checked to name the blocking line *before* it stops blocking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import math
import os
import re
import socket
import sys
import threading
import time
import weakref
from typing import Any

import ferroloop
import pytest
from conftest import run_child

HERE = os.path.abspath(__file__)


def line_of(marker: str) -> int:
    """The line number of the line of this file that ends with ``# marker`` (once)."""
    with open(HERE, encoding="utf-8") as f:
        hits = [i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def os_threads() -> int:
    """Watchdog threads of this process (named ferroloop-watchdog, cut to 15 characters by the kernel)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as f:
                count += f.read().startswith("ferroloop-watch")
        except OSError:  # the thread ended meanwhile (ENOENT or ESRCH)
            pass
    return count


class Recorder:
    """A detector handler that notes each report and when it came."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, ferroloop.BlockingReport]] = []
        self.lock = threading.Lock()

    def __call__(self, report: ferroloop.BlockingReport) -> None:
        with self.lock:
            self.reports.append((time.monotonic(), report))

    def first(self) -> tuple[float, ferroloop.BlockingReport]:
        starts = [(t, r) for t, r in self.reports if not r.finished]
        assert starts, "no report"
        return starts[0]

    def finished(self) -> list[ferroloop.BlockingReport]:
        return [r for _, r in self.reports if r.finished]


async def feed_one_byte(loop: Any, protocol: type[asyncio.Protocol], wait: float) -> None:
    """Connect ``protocol`` to one end of a socket pair, send it one byte, wait, close."""
    a, b = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(protocol, a)
    b.send(b"x")
    await asyncio.sleep(wait)
    transport.close()
    b.close()
    await asyncio.sleep(0)


# ----- slow_callback_duration (asyncio's attribute, kept natively) ------------


def test_slow_callback_duration_keeps_any_value(loop: Any) -> None:
    assert loop.slow_callback_duration == 0.1
    for value in (0.5, 2, None, "x", float("nan")):
        loop.slow_callback_duration = value
        got = loop.slow_callback_duration
        assert got is value or (isinstance(value, float) and math.isnan(got))


def test_slow_callback_duration_drives_debug_warning(loop: Any, caplog: pytest.LogCaptureFixture) -> None:
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    loop.call_soon(time.sleep, 0.05)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert any("took" in r.getMessage() and "sleep" in r.getMessage() for r in caplog.records)


# ----- ferroloop.stats() ------------------------------------------------------


def test_stats_needs_running_loop_or_argument() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        ferroloop.stats()
    other = asyncio.SelectorEventLoop()
    try:
        with pytest.raises(TypeError, match="ferroloop event loop"):
            ferroloop.stats(other)
    finally:
        other.close()
    with pytest.raises(TypeError):
        ferroloop.stats(42)


def test_stats_snapshot_is_immutable(fl_loop: Any) -> None:
    s = ferroloop.stats(fl_loop)
    assert isinstance(s, ferroloop.LoopStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.iterations = 5  # type: ignore[misc]
    assert s.iterations == 0 and s.callbacks_run == 0 and s.slowest_callback is None


def test_counts_callbacks_and_queues(fl_loop: Any) -> None:
    ran = []
    for i in range(5):
        fl_loop.call_soon(ran.append, i)
    cancelled = fl_loop.call_later(10, ran.append, "never")
    for d in (20, 30, 40):
        fl_loop.call_later(d, ran.append, d)
    cancelled.cancel()
    s = ferroloop.stats(fl_loop)
    assert (s.ready, s.timers) == (5, 3)
    fl_loop.call_soon(fl_loop.stop)
    fl_loop.run_forever()
    s = ferroloop.stats(fl_loop)
    assert ran == [0, 1, 2, 3, 4]
    assert s.callbacks_run == 6
    assert s.iterations == 1
    assert s.ready == 0
    a, b = socket.socketpair()
    try:
        fl_loop.add_reader(a, lambda: None)
        assert ferroloop.stats(fl_loop).fds == 1
        fl_loop.remove_reader(a)
        assert ferroloop.stats(fl_loop).fds == 0
    finally:
        a.close()
        b.close()


def test_counts_transports_and_bytes(fl_loop: Any) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(data)

    async def main() -> tuple[int, int]:
        server = await fl_loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        during = ferroloop.stats().transports
        payload = b"x" * 100_000
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        assert got == payload
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return during, len(payload)

    before = ferroloop.stats(fl_loop)
    during, n = fl_loop.run_until_complete(main())
    after = ferroloop.stats(fl_loop)
    assert during == 2  # the client's and the server's end
    # Each byte was written twice (client, echo) and read twice (server, client).
    assert after.bytes_written - before.bytes_written == 2 * n
    assert after.bytes_read - before.bytes_read == 2 * n


def test_busy_idle_and_load(fl_loop: Any) -> None:
    async def main() -> None:
        await asyncio.sleep(0.3)  # idle
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # busy
            pass

    t0 = time.monotonic()
    fl_loop.run_until_complete(main())
    wall = time.monotonic() - t0
    s = ferroloop.stats(fl_loop)
    assert 0.28 <= s.idle_seconds <= 0.45, s
    assert 0.28 <= s.busy_seconds <= 0.45, s
    assert s.busy_seconds + s.idle_seconds <= wall + 0.01
    # The loop stopped: no time counts while it is not running.
    time.sleep(0.1)
    s2 = ferroloop.stats(fl_loop)
    assert (s2.busy_seconds, s2.idle_seconds) == pytest.approx((s.busy_seconds, s.idle_seconds), abs=1e-3)
    # Over the last 10 s: 0.3 s busy of the ~0.7 s the loop has existed.
    assert 0.3 <= s.load.last_10s <= 0.65, s.load
    assert 0.0 <= s.load.last_1s <= 1.0


def test_load_while_running_is_read_live(fl_loop: Any) -> None:
    async def main() -> tuple[float, float]:
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            await asyncio.sleep(0)
        busy = ferroloop.stats().load.last_1s
        await asyncio.sleep(1.1)
        idle = ferroloop.stats().load.last_1s
        return busy, idle

    busy, idle = fl_loop.run_until_complete(main())
    assert busy > 0.9
    assert idle < 0.1


def test_timer_lag(fl_loop: Any) -> None:
    async def main() -> None:
        for _ in range(20):
            fl_loop.call_later(0.01, lambda: None)
        time.sleep(0.1)  # the timers fire ~0.09 s late
        await asyncio.sleep(0.02)

    fl_loop.run_until_complete(main())
    lag = ferroloop.stats(fl_loop).lag
    assert lag.samples >= 21
    assert 0.085 <= lag.max <= 0.3
    assert lag.p50 >= 0.07  # most timers were the late ones
    assert lag.p50 <= lag.p99 <= lag.max


def test_slow_callbacks_counted_after_first_read(fl_loop: Any) -> None:
    def slow_one() -> None:
        time.sleep(0.12)

    def quick() -> None:
        pass

    fl_loop.set_debug(False)  # debug mode compares the non-number below and raises, as asyncio does
    fl_loop.call_soon(slow_one)
    fl_loop.call_soon(fl_loop.stop)
    fl_loop.run_forever()
    first = ferroloop.stats(fl_loop)  # starts timing
    assert first.timed_for is not None and first.slow_callbacks == 0
    for _ in range(3):
        fl_loop.call_soon(quick)
    fl_loop.call_soon(slow_one)
    fl_loop.call_soon(quick)
    fl_loop.call_soon(fl_loop.stop)
    fl_loop.run_forever()
    s = ferroloop.stats(fl_loop)
    assert s.slow_callbacks == 1
    assert s.slowest_callback is not None
    assert 0.12 <= s.slowest_callback.seconds < 0.5
    assert "slow_one" in s.slowest_callback.handle
    # A lower threshold counts more; one that is not a number counts none.
    fl_loop.slow_callback_duration = 0.01
    fl_loop.call_soon(time.sleep, 0.02)
    fl_loop.call_soon(fl_loop.stop)
    fl_loop.run_forever()
    assert ferroloop.stats(fl_loop).slow_callbacks == 2
    fl_loop.slow_callback_duration = "never"
    fl_loop.call_soon(time.sleep, 0.02)
    fl_loop.call_soon(fl_loop.stop)
    fl_loop.run_forever()
    assert ferroloop.stats(fl_loop).slow_callbacks == 2


def test_slowest_names_protocol_callbacks(fl_loop: Any) -> None:
    class Slow(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            time.sleep(0.05)

    async def main() -> None:
        ferroloop.stats()
        await feed_one_byte(fl_loop, Slow, 0.1)

    fl_loop.run_until_complete(main())
    slowest = ferroloop.stats(fl_loop).slowest_callback
    assert slowest is not None and slowest.seconds >= 0.05
    assert "_read_ready" in slowest.handle


def test_stats_read_from_another_thread(fl_loop: Any) -> None:
    seen: list[ferroloop.LoopStats] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(ferroloop.stats(fl_loop))
                time.sleep(0.001)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    async def main() -> None:
        for i in range(3000):
            fl_loop.call_soon(lambda: None)
            if i % 100 == 0:
                await asyncio.sleep(0.002)
            else:
                await asyncio.sleep(0)

    t = threading.Thread(target=reader)
    t.start()
    try:
        fl_loop.run_until_complete(main())
    finally:
        done.set()
        t.join()
    assert not errors
    assert len(seen) > 20
    for a, b in itertools.pairwise(seen):
        assert b.iterations >= a.iterations
        assert b.callbacks_run >= a.callbacks_run
        assert b.busy_seconds + b.idle_seconds >= a.busy_seconds + a.idle_seconds - 1e-9


def test_stats_of_closed_loop() -> None:
    lp = ferroloop.new_event_loop()
    lp.call_soon(lp.stop)
    lp.run_forever()
    lp.close()
    s = ferroloop.stats(lp)
    assert s.callbacks_run == 1 and s.ready == 0 and s.fds == 0


def test_summary_is_a_few_lines(fl_loop: Any) -> None:
    fl_loop.call_soon(fl_loop.stop)
    fl_loop.run_forever()
    text = ferroloop.stats(fl_loop).summary()
    assert "callbacks run 1" in text and "load" in text and "timer lag" in text
    assert len(text.splitlines()) <= 8


# ----- the blocking-call detector --------------------------------------------


def test_detector_bad_input(fl_loop: Any) -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        ferroloop.detect_blocking(0.1)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            ferroloop.detect_blocking(bad, loop=fl_loop)
    for bad in ("0.1", None, True):
        with pytest.raises(TypeError):
            ferroloop.detect_blocking(bad, loop=fl_loop)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        ferroloop.detect_blocking(0.1, loop=fl_loop, handler=1)  # type: ignore[arg-type]
    other = asyncio.SelectorEventLoop()
    try:
        with pytest.raises(TypeError, match="ferroloop event loop"):
            ferroloop.detect_blocking(0.1, loop=other)
    finally:
        other.close()
    closed = ferroloop.new_event_loop()
    closed.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        ferroloop.detect_blocking(0.1, loop=closed)


def blocking_handler_sleep() -> None:
    time.sleep(0.6)  # BLOCK-SLEEP


def test_reports_time_sleep_while_it_sleeps(fl_loop: Any) -> None:
    rec = Recorder()
    ended = []

    async def handler() -> None:
        await asyncio.sleep(0.01)
        blocking_handler_sleep()
        ended.append(time.monotonic())

    async def main() -> None:
        task = asyncio.create_task(handler(), name="the-handler")
        await task
        await asyncio.sleep(0.2)  # the follow-up comes after the end
        return task

    with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=rec) as det:
        assert det.running
        task = fl_loop.run_until_complete(main())
    assert not det.running
    seen_at, report = rec.first()
    assert seen_at < ended[0] - 0.2, "reported only after the sleep ended"
    assert report.task is task
    assert 0.1 <= report.seconds < 0.4
    assert report.location == f"{HERE}:{line_of('BLOCK-SLEEP')}"
    assert report.frames[-1].line == "time.sleep(0.6)  # BLOCK-SLEEP"
    assert [f.name for f in report.frames[-2:]] == ["handler", "blocking_handler_sleep"]
    assert "run_forever" not in report.stack and "time.sleep(0.6)" in report.stack
    assert "the-handler" in report.message()
    (end,) = rec.finished()
    assert end.finished and 0.55 <= end.seconds <= 0.75
    assert end.location == report.location


def test_detector_started_by_the_blocking_callback(fl_loop: Any) -> None:
    rec = Recorder()

    async def main() -> None:
        with ferroloop.detect_blocking(0.1, handler=rec):  # in the running loop
            time.sleep(0.3)  # BLOCK-SAME-STEP
            await asyncio.sleep(0.05)
            time.sleep(0.3)  # BLOCK-NEXT-STEP
            await asyncio.sleep(0.05)

    task = fl_loop.create_task(main())
    fl_loop.run_until_complete(task)
    starts = [r for _, r in rec.reports if not r.finished]
    assert [r.location for r in starts] == [
        f"{HERE}:{line_of('BLOCK-SAME-STEP')}",
        f"{HERE}:{line_of('BLOCK-NEXT-STEP')}",
    ]
    assert all(r.task is task for r in starts)
    # The step that started the detector is watched from then on, handle unknown.
    assert starts[0].handle == "<unknown handle>" and "task_wakeup" in starts[1].handle
    assert [r.seconds for r in rec.finished()] == [pytest.approx(0.3, abs=0.03)] * 2


def test_reports_cpu_bound_loop(fl_loop: Any) -> None:
    rec = Recorder()

    def spin() -> None:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # BLOCK-CPU
            pass

    with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=rec):
        fl_loop.call_soon(spin)
        fl_loop.call_soon(fl_loop.stop)
        fl_loop.run_forever()
        time.sleep(0.1)
    _, report = rec.first()
    assert report.task is None
    assert "spin" in report.handle
    assert report.frames[-1].name == "spin"
    assert report.frames[-1].lineno in (line_of("BLOCK-CPU"), line_of("BLOCK-CPU") + 1)
    assert [r.seconds for r in rec.finished()] == [pytest.approx(0.5, abs=0.1)]


def test_c_code_holding_the_gil_is_reported_when_it_ends(fl_loop: Any) -> None:
    rec = Recorder()

    def crunch() -> None:
        sum(range(2 * 10**7))  # builtin sum holds the GIL throughout (about 0.3 s here)

    with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=rec):
        t0 = time.monotonic()
        fl_loop.call_soon(crunch)
        fl_loop.call_soon(fl_loop.stop)
        fl_loop.run_forever()
        took = time.monotonic() - t0
        time.sleep(0.05)
    assert took > 0.15, "the machine is too fast for this test's workload"
    # The watchdog gets the GIL only when sum() returns: if crunch() still
    # runs then (its return is a switch point), the report has its stack;
    # if not, only the follow-up comes, without one.
    seen = [r for _, r in rec.reports if not r.finished]
    (end,) = rec.finished()
    if seen:
        assert seen[0].frames[-1].name == "crunch" and end.frames == seen[0].frames
    else:
        assert end.frames == () and "held the GIL" in end.message()
    assert end.seconds == pytest.approx(took, abs=0.06)


def test_reports_blocked_protocol_callback(fl_loop: Any) -> None:
    rec = Recorder()

    class Blocking(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            time.sleep(0.4)  # BLOCK-PROTOCOL

    with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=rec):
        fl_loop.run_until_complete(feed_one_byte(fl_loop, Blocking, 0.6))
    _, report = rec.first()
    assert report.task is None
    assert "_read_ready" in report.handle
    assert report.location == f"{HERE}:{line_of('BLOCK-PROTOCOL')}"


def test_reports_blocking_socket_recv(fl_loop: Any) -> None:
    rec = Recorder()
    a, b = socket.socketpair()
    a.setblocking(True)
    sender = threading.Timer(0.5, b.send, (b"late",))

    def wait_for_data() -> None:
        a.recv(10)  # BLOCK-RECV

    try:
        with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=rec):
            sender.start()
            fl_loop.call_soon(wait_for_data)
            fl_loop.call_soon(fl_loop.stop)
            fl_loop.run_forever()
            time.sleep(0.1)
    finally:
        sender.join()
        a.close()
        b.close()
    _, report = rec.first()
    assert report.location == f"{HERE}:{line_of('BLOCK-RECV')}"
    assert len(rec.finished()) == 1


def test_nested_coroutines_show_the_whole_chain(fl_loop: Any) -> None:
    rec = Recorder()

    async def inner() -> None:
        time.sleep(0.3)  # BLOCK-NESTED

    async def middle() -> None:
        await inner()

    async def outer() -> None:
        await asyncio.sleep(0)
        await asyncio.create_task(middle(), name="child")

    with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=rec):
        fl_loop.run_until_complete(outer())
        time.sleep(0.1)
    _, report = rec.first()
    assert [f.name for f in report.frames] == ["middle", "inner"]
    assert report.task is not None and report.task.get_name() == "child"
    assert report.location.endswith(f":{line_of('BLOCK-NESTED')}")


def test_one_report_per_episode_and_none_below_threshold(fl_loop: Any) -> None:
    rec = Recorder()
    with ferroloop.detect_blocking(0.2, loop=fl_loop, handler=rec):
        for _ in range(5):
            fl_loop.call_soon(time.sleep, 0.05)  # below the threshold, even together
        fl_loop.call_soon(time.sleep, 0.5)
        fl_loop.call_soon(fl_loop.stop)
        fl_loop.run_forever()
        time.sleep(0.15)
    assert len([r for _, r in rec.reports if not r.finished]) == 1
    assert len(rec.finished()) == 1


def test_precise_durations_once_stats_were_read(fl_loop: Any) -> None:
    rec = Recorder()
    ferroloop.stats(fl_loop)  # callbacks are timed from now on
    with ferroloop.detect_blocking(0.05, loop=fl_loop, handler=rec):
        fl_loop.call_soon(time.sleep, 0.3)
        fl_loop.call_soon(fl_loop.stop)
        fl_loop.run_forever()
        time.sleep(0.05)
    (end,) = rec.finished()
    assert end.seconds == pytest.approx(0.3, abs=0.02)


def test_default_report_is_a_warning(fl_loop: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        time.sleep(0.3)  # BLOCK-LOG
        await asyncio.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="ferroloop"):
        with ferroloop.detect_blocking(0.1, loop=fl_loop):
            fl_loop.run_until_complete(main())
    records = [r for r in caplog.records if r.name == "ferroloop"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING for r in records)
    first, second = (r.getMessage() for r in records)
    assert "blocked for" in first and "time.sleep(0.3)  # BLOCK-LOG" in first
    assert f"line {line_of('BLOCK-LOG')}, in main" in first
    # Without timed callbacks the watchdog dates the start and the end of
    # the blocking within half its period (25 ms here) each.
    total = float(re.search(r"was blocked for ([0-9.]+) seconds", second).group(1))
    assert total == pytest.approx(0.3, abs=0.03)


def test_failing_handler_is_logged_and_detector_goes_on(fl_loop: Any, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def handler(report: ferroloop.BlockingReport) -> None:
        calls.append(report)
        raise ValueError("handler bug")

    with caplog.at_level(logging.ERROR, logger="ferroloop"):
        with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=handler):
            for _ in range(2):
                fl_loop.call_soon(time.sleep, 0.25)
            fl_loop.call_soon(fl_loop.stop)
            fl_loop.run_forever()
            time.sleep(0.1)
    assert len(calls) == 4  # two episodes, each seen and ended
    assert any("handler bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_started_and_stopped_repeatedly(fl_loop: Any) -> None:
    base = os_threads()
    for i in range(30):
        det = ferroloop.detect_blocking(0.05 + i / 1000, loop=fl_loop, handler=lambda r: None)
        if i % 2:
            fl_loop.call_soon(fl_loop.stop)
            fl_loop.run_forever()
        det.stop()
        det.stop()  # idempotent
        assert not det.running
    assert os_threads() == base
    # The loop went back to not timing anything.
    rec = Recorder()
    with ferroloop.detect_blocking(0.05, loop=fl_loop, handler=rec):
        fl_loop.call_soon(time.sleep, 0.2)
        fl_loop.call_soon(fl_loop.stop)
        fl_loop.run_forever()
        time.sleep(0.05)
    assert len(rec.finished()) == 1


def test_two_loops_in_two_threads() -> None:
    results: dict[str, Recorder] = {}

    def run(name: str, seconds: float) -> None:
        lp = ferroloop.new_event_loop()
        rec = results[name] = Recorder()

        async def main() -> None:
            await asyncio.sleep(0.01)
            time.sleep(seconds)  # BLOCK-THREADS
            await asyncio.sleep(0.15)

        try:
            with ferroloop.detect_blocking(0.1, loop=lp, handler=rec):
                lp.run_until_complete(main())
        finally:
            lp.close()

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", 0.3), ("b", 0.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, seconds in (("a", 0.3), ("b", 0.5)):
        _, report = results[name].first()
        assert report.location == f"{HERE}:{line_of('BLOCK-THREADS')}"
        (end,) = results[name].finished()
        assert end.seconds == pytest.approx(seconds, abs=0.06)


def test_abandoned_detector_thread_ends_with_the_loop() -> None:
    import gc

    def settles_at(count: int) -> bool:
        deadline = time.monotonic() + 2
        while os_threads() != count and time.monotonic() < deadline:
            time.sleep(0.01)
        return os_threads() == count

    base = os_threads()
    # A detector dropped while its loop lives.
    lp = ferroloop.new_event_loop()
    det = ferroloop.detect_blocking(0.02, loop=lp, handler=lambda r: None)
    assert settles_at(base + 1)  # the thread names itself once it runs
    del det
    assert settles_at(base)
    # A detector and its loop dropped together, without close().
    det = ferroloop.detect_blocking(0.02, loop=lp, handler=lambda r: None)
    assert settles_at(base + 1)
    ref = weakref.ref(lp)
    with pytest.warns(ResourceWarning):
        del det, lp
        gc.collect()
    assert ref() is None
    assert settles_at(base)


def test_environment_variable_switches_detector_on() -> None:
    code = """
    import time
    async def main():
        time.sleep(0.3)
    run_main(main())
    """
    res = run_child(code, "ferroloop", env={"FERROLOOP_DETECT_BLOCKING": "0.1"})
    assert res.returncode == 0, res.stderr
    assert "event loop blocked for" in res.stderr and ", in main" in res.stderr
    assert "event loop was blocked for" in res.stderr
    res = run_child(code, "ferroloop", env={"FERROLOOP_DETECT_BLOCKING": "soon"})
    assert res.returncode == 0, res.stderr
    assert "ignoring FERROLOOP_DETECT_BLOCKING='soon'" in res.stderr
    assert "blocked for" not in res.stderr
    res = run_child(code, "asyncio", env={"FERROLOOP_DETECT_BLOCKING": "0.1"})
    assert res.returncode == 0 and "blocked for" not in res.stderr


def test_statistics_switched_off_by_environment() -> None:
    code = """
    import asyncio, time
    async def main():
        await asyncio.sleep(0.05)
        time.sleep(0.05)
        s = ferroloop.stats()
        print(s.callbacks_run > 0, s.busy_seconds, s.idle_seconds, s.timed_for, s.lag.samples)
    run_main(main())
    """
    res = run_child(code, "ferroloop", env={"FERROLOOP_STATS": "0"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "0.0", "0.0", "None", "0"]


# ----- the command line ------------------------------------------------------

CLI_PROGRAM = """\
import asyncio, time
async def main():
    await asyncio.sleep(0.01)
    time.sleep(0.3)
    print("done")
asyncio.run(main())
"""


def run_cli(tmp_path: Any, *options: str, program: str = CLI_PROGRAM, timeout: float = 30) -> Any:
    import subprocess

    path = tmp_path / "app.py"
    path.write_text(program)
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_detect_blocking(tmp_path: Any) -> None:
    res = run_cli(tmp_path, "--detect-blocking", "0.1")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "done\n"
    assert "event loop blocked for" in res.stderr
    assert f'File "{tmp_path / "app.py"}", line 4, in main' in res.stderr
    assert "time.sleep(0.3)" in res.stderr
    res = run_cli(tmp_path, "--detect-blocking=0.1")
    assert "event loop blocked for" in res.stderr
    res = run_cli(tmp_path, "--detect-blocking", "0")
    assert res.returncode == 2
    assert "not a positive number of seconds" in res.stderr


def test_cli_stats_at_exit(tmp_path: Any) -> None:
    res = run_cli(tmp_path, "--stats")
    assert res.returncode == 0, res.stderr
    assert "ferroloop loop statistics" in res.stderr
    assert "slow callbacks 1" in res.stderr
    assert "slowest callback (last 10 s): 3" in res.stderr  # ~300 ms


def test_cli_stats_on_sigusr1(tmp_path: Any) -> None:
    import signal
    import subprocess

    program = """\
import asyncio, sys
async def main():
    print("ready", flush=True)
    await asyncio.sleep(1.0)
asyncio.run(main())
"""
    path = tmp_path / "app.py"
    path.write_text(program)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferroloop", "--stats", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.count("ferroloop loop statistics") == 2  # on the signal, and at exit


def test_public_names() -> None:
    for name in ("stats", "LoopStats", "detect_blocking", "BlockingReport", "BlockingDetector"):
        assert name in ferroloop.__all__
    assert inspect.signature(ferroloop.detect_blocking).parameters["threshold"].default == 0.1


# ----- the worked example of docs/observability.md ---------------------------


def test_worked_example_of_the_docs(tmp_path: Any) -> None:
    import subprocess
    import urllib.request

    pytest.importorskip("aiohttp")
    with open(os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "observability.md"), encoding="utf-8") as f:
        doc = f.read()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    app, fix = blocks[0], blocks[1]
    assert "render_report" in app and "to_thread" in fix
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = app.replace("port=8080", f"port={port}")
    fixed = "import asyncio\n" + app.replace(app[app.index("async def report") : app.index("app = web")], fix + "\n\n")

    def serve(source: str) -> str:
        path = tmp_path / "app.py"
        path.write_text(source)
        env = dict(os.environ, FERROLOOP_DETECT_BLOCKING="0.1")
        proc = subprocess.Popen(
            [sys.executable, str(path)], stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path)
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/report/q3", timeout=5) as r:
                        assert r.read() == b"report for q3\n"
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            time.sleep(0.1)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        return err

    err = serve(app)
    assert "event loop blocked for" in err
    assert f'File "{tmp_path / "app.py"}", line 8, in render_report' in err
    assert "time.sleep(0.5)" in err
    assert re.search(r"event loop was blocked for 0\.[45]\d* seconds", err), err
    assert "blocked" not in serve(fixed)
