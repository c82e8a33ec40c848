"""run_in_executor, default executors, to_thread, getaddrinfo/getnameinfo."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading

import pytest


def test_run_in_executor_default(loop):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident() != main_thread

    assert loop.run_until_complete(loop.run_in_executor(None, work, 2, 3)) == (5, True)


def test_run_in_executor_given_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="given") as ex:
        name = loop.run_until_complete(loop.run_in_executor(ex, lambda: threading.current_thread().name))
    assert name.startswith("given")


def test_run_in_executor_exception_propagates(loop):
    def boom():
        raise KeyError("k")

    with pytest.raises(KeyError):
        loop.run_until_complete(loop.run_in_executor(None, boom))


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mine")
    loop.set_default_executor(ex)
    name = loop.run_until_complete(loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("mine")
    loop.run_until_complete(loop.shutdown_default_executor())


def test_set_default_executor_wrong_type(loop):
    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor instance"):
        loop.set_default_executor(concurrent.futures.Executor())


def test_shutdown_default_executor_then_use_is_runtime_error(loop):
    loop.run_until_complete(loop.run_in_executor(None, int))
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_until_complete(loop.run_in_executor(None, int))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="shutdown_default_executor(timeout) is new in 3.12")
def test_shutdown_default_executor_timeout(loop):
    import time
    import warnings

    before = set(threading.enumerate())
    loop.run_in_executor(None, time.sleep, 0.3)
    executor = loop._default_executor
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.run_until_complete(loop.shutdown_default_executor(timeout=0.05))
    # Early 3.12 releases wait for the threads before applying the timeout
    # (no warning); later ones warn. Either way the call returns.
    for w in caught:
        assert issubclass(w.category, RuntimeWarning)
        assert "The executor did not finishing joining its threads within 0.05 seconds" in str(w.message)
    # The worker still holds its future (and so the loop) until it finishes,
    # and so does the thread running the loop's `_do_shutdown` (its target
    # is a bound method of the loop) until it has reported to the closed
    # loop: wait for both before the fixture's check that the loop is gone.
    executor.shutdown(wait=True)
    for t in set(threading.enumerate()) - before:
        t.join(10)


def test_to_thread(loop):
    async def main():
        return await asyncio.to_thread(lambda x: x * 2, 21)

    assert loop.run_until_complete(main()) == 42


@pytest.mark.parametrize(
    "args",
    [
        ("127.0.0.1", 80),
        ("localhost", "http"),
        ("::1", 0, socket.AF_INET6),
        ("127.0.0.1", None, 0, socket.SOCK_STREAM),
    ],
)
def test_getaddrinfo_matches_socket(loop, args):
    host, port, *rest = args
    kw = dict(zip(["family", "type"], rest, strict=False))
    got = loop.run_until_complete(loop.getaddrinfo(host, port, **kw))
    assert got == socket.getaddrinfo(host, port, *rest)


def test_getaddrinfo_error_matches_socket(loop):
    with pytest.raises(socket.gaierror) as ours:
        loop.run_until_complete(loop.getaddrinfo("definitely-not-a-host.invalid", 80))
    with pytest.raises(socket.gaierror) as ref:
        socket.getaddrinfo("definitely-not-a-host.invalid", 80)
    assert ours.value.args == ref.value.args


def test_getnameinfo_matches_socket(loop):
    sa = ("127.0.0.1", 80)
    got = loop.run_until_complete(loop.getnameinfo(sa, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert got == socket.getnameinfo(sa, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
