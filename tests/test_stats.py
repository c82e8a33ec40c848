"""``ferroloop.stats()``: loop statistics, and ``slow_callback_duration``.

asyncio has no statistics: these tests run on ferroloop only, except
``slow_callback_duration``, which asyncio has and ferroloop keeps natively
(``loop`` fixture: both loops). The blocking-call detector is in
test_blocking.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import math
import socket
import sys
import threading
import time
from typing import Any

import ferroloop
import pytest
from conftest import feed_one_byte, run_child, run_cli

# ----- slow_callback_duration (asyncio's attribute, kept natively) ------------


def test_slow_callback_duration_keeps_any_value(loop: Any) -> None:
    assert loop.slow_callback_duration == 0.1
    for value in (0.5, 2, None, "x", float("nan")):
        loop.slow_callback_duration = value
        got = loop.slow_callback_duration
        assert got is value or (isinstance(value, float) and math.isnan(got))


def test_slow_callback_duration_can_be_deleted(loop: Any) -> None:
    name = type(loop).__name__
    del loop.slow_callback_duration
    with pytest.raises(AttributeError, match=f"^'{name}' object has no attribute 'slow_callback_duration'$"):
        loop.slow_callback_duration  # noqa: B018
    with pytest.raises(AttributeError, match="slow_callback_duration"):
        del loop.slow_callback_duration
    loop.set_debug(False)  # debug mode reads it after each callback (and raises)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == 0.5


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
