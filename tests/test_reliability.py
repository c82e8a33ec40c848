"""Regression tests for defects found by adversarial testing (issue 7):
each runs on asyncio and on ferroloop and asserts asyncio's behaviour."""

from __future__ import annotations

import gc
import os
import sys
import warnings

import pytest
from conftest import run_child


def nfd() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_unclosed_loop_collected_by_gc_releases_its_fds(loop_factory):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gc.collect()
        before = nfd()
        lp = loop_factory()
        lp.call_soon(lp.stop)  # a pending handle makes a reference cycle
        del lp
        gc.collect()
        after = nfd()
    unclosed = [x for x in w if issubclass(x.category, ResourceWarning)]
    assert unclosed and unclosed[0].source.is_closed()
    assert after - before == 0


def test_memory_of_a_large_batch_is_given_back(loop):
    # Debug mode keeps a traceback per handle: a tenth of the burst is plenty.
    n = 100_000 if loop.get_debug() else 1_000_000

    def burst():
        for _ in range(n):
            loop.call_soon(int)

    gc.collect()
    before = rss()
    loop.call_soon(burst)
    loop.call_soon(loop.stop)
    loop.run_forever()  # queues the burst
    peak = rss()
    loop.call_soon(loop.stop)
    loop.run_forever()  # runs it
    gc.collect()
    after = rss()
    # What a million queued callbacks took (ferroloop: its ready queue;
    # asyncio: its handles) must mostly be given back once they have run;
    # the allocator may keep a little.
    assert peak - before > 8 * 1024 * 1024
    assert after - before < (peak - before) / 4, (before, peak, after)


def test_fd_numbers_beyond_c_int(loop):
    assert loop.remove_reader(2**31) is False
    assert loop.remove_writer(2**63) is False
    with pytest.raises(OverflowError, match="Python int too large to convert to C int"):
        loop.add_reader(2**31, print)
    with pytest.raises(ValueError, match="Invalid file descriptor: -5"):
        loop.add_reader(-5, print)


@pytest.mark.parametrize("how", ["call_soon", "call_later", "call_soon_threadsafe"])
def test_invalid_context_is_reported_like_asyncio(loop, loop_errors, how):
    if how == "call_later":
        loop.call_later(0, print, "x", context="str")
    else:
        getattr(loop, how)(print, "x", context="str")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(loop_errors) == 1
    exc = loop_errors[0]["exception"]
    assert isinstance(exc, AttributeError)
    assert str(exc) == "'str' object has no attribute 'run'"
    loop_errors.clear()


def test_create_task_with_an_invalid_context(loop, loop_errors):
    async def coro():
        return 1

    co = coro()
    task = loop.create_task(co, context="str")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not task.done()
    assert [type(c["exception"]).__name__ for c in loop_errors] == ["AttributeError"]
    loop_errors.clear()
    # The task can never run: close its coroutine and drop it quietly.
    co.close()
    task._log_destroy_pending = False
    del task
    gc.collect()
    assert loop_errors == []


SUBPROCESS = """
async def main():
    p = await asyncio.create_subprocess_exec("echo", "hi", stdout=asyncio.subprocess.PIPE)
    print(await p.communicate())
run_main(main())
"""


def test_subprocess_under_the_installed_policy_and_python_m_ferroloop(launch):
    # Issue 7, item 0: the policy's child-watcher methods were abstract.
    res = run_child(SUBPROCESS, launch)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(b'hi\\n', None)"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lp: lp.run_forever(1), "BaseEventLoop.run_forever() takes 1 positional argument but 2 were given"),
        (lambda lp: lp.close(1), "_UnixSelectorEventLoop.close() takes 1 positional argument but 2 were given"),
        (
            lambda lp: lp.add_signal_handler(),
            "_UnixSelectorEventLoop.add_signal_handler() missing 2 required positional arguments: 'sig' and 'callback'",
        ),
        (
            lambda lp: lp.getaddrinfo(),
            "BaseEventLoop.getaddrinfo() missing 2 required positional arguments: 'host' and 'port'",
        ),
    ],
)
def test_argument_errors_name_asyncios_methods(loop, call, message):
    with pytest.raises(TypeError) as info:
        call(loop)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("call", "qualname"),
    [
        (lambda lp, h, th: h.cancel(1), "Handle.cancel"),
        (lambda lp, h, th: h.cancelled(1), "Handle.cancelled"),
        pytest.param(
            lambda lp, h, th: h.get_context(1),
            "Handle.get_context",
            marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context is new in 3.12"),
        ),
        (lambda lp, h, th: h._run(1), "Handle._run"),
        (lambda lp, h, th: th.cancel(1), "TimerHandle.cancel"),
        (lambda lp, h, th: th.when(1), "TimerHandle.when"),
        (lambda lp, h, th: lp.is_closed(1), "BaseEventLoop.is_closed"),
        (lambda lp, h, th: lp._run_once(1), "BaseEventLoop._run_once"),
        (lambda lp, h, th: lp._write_to_self(1), "BaseSelectorEventLoop._write_to_self"),
        (lambda lp, h, th: lp.time(1), "BaseEventLoop.time"),
        (lambda lp, h, th: lp.create_future(1), "BaseEventLoop.create_future"),
    ],
)
def test_argument_errors_of_native_methods(loop, call, qualname):
    handle, timer = loop.call_soon(print), loop.call_later(10, print)
    try:
        with pytest.raises(TypeError) as info:
            call(loop, handle, timer)
        assert str(info.value) == f"{qualname}() takes 1 positional argument but 2 were given"
    finally:
        handle.cancel()
        timer.cancel()


def test_too_many_arguments_with_optional_ones(loop):
    # CPython: "takes from 3 to 4 positional arguments" when some have defaults.
    with pytest.raises(TypeError) as info:
        loop.sock_recvfrom_into(None, bytearray(1), 1, 1)
    assert str(info.value) == (
        "BaseSelectorEventLoop.sock_recvfrom_into() takes from 3 to 4 positional arguments but 5 were given"
    )
    with pytest.raises(TypeError) as info:
        loop.sock_recv(None, 1, 2)
    assert str(info.value) == "BaseSelectorEventLoop.sock_recv() takes 3 positional arguments but 4 were given"


def test_native_handle_and_loop_methods_still_work(loop):
    ran = []
    handle = loop.call_soon(ran.append, 1)
    timer = loop.call_later(3600, ran.append, 2)
    assert handle.cancelled() is False and loop.is_closed() is False
    if sys.version_info >= (3, 12):
        assert handle.get_context() is not None
    assert abs(timer.when() - (loop.time() + 3600)) < 5
    handle._run()
    assert ran == [1]
    timer.cancel()
    assert timer.cancelled() is True
    loop._write_to_self()
    loop.call_soon(ran.append, 3)
    loop._run_once()
    assert ran[-1] == 3
