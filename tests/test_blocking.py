"""``ferroloop.detect_blocking()``: the blocking-call detector.

asyncio has none: these tests run on ferroloop only. Blocking is real
(``time.sleep``, CPU loops, C code holding the GIL, blocking socket calls),
and the reports are checked to name the blocking line *before* it stops
blocking.
"""

from __future__ import annotations

import asyncio
import gc
import logging
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
from conftest import feed_one_byte, run_child, run_cli

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


def settles_at(count: int) -> bool:
    """Wait (up to 2 s) for the number of watchdog threads to reach ``count``."""
    deadline = time.monotonic() + 2
    while os_threads() != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return os_threads() == count


def test_started_and_stopped_repeatedly(fl_loop: Any) -> None:
    # A detector an earlier test dropped ends with its loop, whenever the
    # collector frees that: let it go before counting.
    gc.collect()
    settles_at(0)
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


# ----- the command line ------------------------------------------------------


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
