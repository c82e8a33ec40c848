"""run_forever, run_until_complete, stop, close, is_running, is_closed."""

from __future__ import annotations

import asyncio

import pytest


def test_run_until_complete_returns_result(loop):
    async def coro():
        await asyncio.sleep(0)
        return 42

    assert loop.run_until_complete(coro()) == 42
    assert not loop.is_running()


def test_run_until_complete_future_of_other_loop_is_value_error(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(
            ValueError, match="The future belongs to a different loop than the one specified as the loop argument"
        ):
            loop.run_until_complete(fut)
    finally:
        other.close()


@pytest.mark.parametrize("bad", [1, None, "x", object()])
def test_run_until_complete_non_awaitable_is_type_error(loop, bad):
    with pytest.raises(TypeError, match="An asyncio.Future, a coroutine or an awaitable is required"):
        loop.run_until_complete(bad)


def test_run_forever_stop_from_callback(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, 2)
    loop.run_forever()
    # stop() lets the current batch finish.
    assert calls == [1, 2]
    assert not loop.is_running()


def test_stop_before_run_forever_runs_one_iteration(loop):
    calls = []
    loop.stop()
    loop.call_soon(calls.append, 1)
    loop.run_forever()
    assert calls == [1]
    # The loop can run again afterwards.
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_is_running_inside(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    assert loop.is_running() is False


def test_nested_run_is_runtime_error(loop):
    async def inner():
        return 1

    async def outer():
        c = inner()
        try:
            with pytest.raises(RuntimeError, match="This event loop is already running"):
                loop.run_until_complete(c)
        finally:
            c.close()
        with pytest.raises(RuntimeError, match="This event loop is already running"):
            loop.run_forever()

    loop.run_until_complete(outer())


def test_run_while_another_loop_runs_is_runtime_error(loop, loop_factory):
    other = loop_factory()

    async def outer():
        with pytest.raises(RuntimeError, match="Cannot run the event loop while another loop is running"):
            other.run_forever()

    try:
        loop.run_until_complete(outer())
    finally:
        other.close()


def test_close_while_running_is_runtime_error(loop):
    async def coro():
        with pytest.raises(RuntimeError, match="Cannot close a running event loop"):
            loop.close()

    loop.run_until_complete(coro())


def test_close_is_idempotent(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()


@pytest.mark.parametrize(
    "call",
    [
        lambda lp: lp.call_soon(print),
        lambda lp: lp.call_later(1, print),
        lambda lp: lp.call_at(1, print),
        lambda lp: lp.call_soon_threadsafe(print),
        lambda lp: lp.run_forever(),
        lambda lp: lp.create_future() and lp.run_until_complete(lp.create_future()),
        lambda lp: lp.run_in_executor(None, print),
        lambda lp: lp.add_reader(0, print),
        lambda lp: lp.add_writer(1, print),
    ],
)
def test_closed_loop_raises(loop, call):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        call(loop)


def test_closed_loop_remove_reader_returns_false(loop):
    loop.close()
    assert loop.remove_reader(0) is False
    assert loop.remove_writer(1) is False


def test_close_drops_pending_callbacks(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    h = loop.call_later(10, calls.append, 2)
    loop.close()
    assert calls == []
    assert not h.cancelled()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_propagate_from_callback(loop, exc):
    def boom():
        raise exc

    calls = []
    loop.call_soon(boom)
    loop.call_soon(calls.append, "after")
    with pytest.raises(exc):
        loop.run_forever()
    assert not loop.is_running()
    # The rest of the batch stays queued and runs on the next start.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["after"]


def test_exception_in_callback_does_not_stop_loop(loop, loop_errors):
    calls = []

    def boom():
        raise ValueError("boom")

    loop.call_soon(boom)
    loop.call_soon(calls.append, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1]
    assert len(loop_errors) == 1
    ctx = loop_errors.pop()
    expected = {"message", "exception", "handle"}
    if loop.get_debug():  # e.g. under PYTHONASYNCIODEBUG=1
        expected.add("source_traceback")
    assert set(ctx) == expected
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["message"].startswith("Exception in callback ")
    assert "boom" in ctx["message"]


def test_loop_repr(loop):
    r = repr(loop)
    assert "running=False" in r and "closed=False" in r and "debug=" in r


def test_run_until_complete_with_stop_inside(loop):
    async def coro():
        loop.stop()
        await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(coro())
    # Finish the task so nothing is left pending.
    loop.run_until_complete(asyncio.sleep(0.02))
