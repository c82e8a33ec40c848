"""set_exception_handler, get_exception_handler, default_exception_handler, call_exception_handler."""

from __future__ import annotations

import logging

import pytest


def run_briefly(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_get_set_exception_handler(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler


def test_set_exception_handler_non_callable_is_type_error(loop):
    with pytest.raises(TypeError, match="A callable object or None is expected, got 1"):
        loop.set_exception_handler(1)


def test_callback_error_context_keys(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append((lp, ctx)))

    def bad(x):
        raise ZeroDivisionError(x)

    h = loop.call_soon(bad, 7)
    run_briefly(loop)
    assert len(got) == 1
    lp, ctx = got[0]
    assert lp is loop
    assert ctx["handle"] is h
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["exception"].args == (7,)
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad" in ctx["message"]


def test_timer_callback_error_goes_to_handler(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append(ctx))
    loop.call_later(0.001, lambda: 1 / 0)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert isinstance(got[0]["exception"], ZeroDivisionError)


def test_handler_that_raises_is_logged_and_loop_continues(loop, caplog):
    def handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(handler)
    calls = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(calls.append, 1)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_briefly(loop)
    assert calls == [1]
    assert "Unhandled error in exception handler" in caplog.text
    caplog.clear()


def test_default_exception_handler_logs(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "custom message", "extra": 123})
    assert "custom message" in caplog.text
    assert "extra: 123" in caplog.text
    caplog.clear()


def test_call_exception_handler_with_base_exceptions_propagates(loop):
    def handler(lp, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)
    with pytest.raises(KeyboardInterrupt):
        loop.call_exception_handler({"message": "x"})


def test_unretrieved_task_exception_reported(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append(ctx))

    async def fail():
        raise ValueError("never retrieved")

    t = loop.create_task(fail())
    run_briefly(loop)
    del t
    import gc

    gc.collect()
    assert any(c["message"] == "Task exception was never retrieved" for c in got)
