"""Types of the objects the loop returns."""

from __future__ import annotations

import asyncio

import pytest


@pytest.mark.deviation("D-001")
def test_handles_are_asyncio_handles(loop):
    h = loop.call_soon(print)
    t = loop.call_later(1, print)
    try:
        assert isinstance(h, asyncio.Handle)
        assert isinstance(t, asyncio.TimerHandle)
    finally:
        h.cancel()
        t.cancel()


def test_timer_handle_is_a_handle_of_the_same_loop(loop):
    h = loop.call_soon(print)
    t = loop.call_later(1, print)
    assert type(t).__mro__[1] is type(h) or isinstance(t, type(h))
    assert h._loop is loop and t._loop is loop
    h.cancel()
    t.cancel()


def test_futures_and_tasks_are_stdlib(loop):
    async def coro():
        return 1

    fut = loop.create_future()
    task = loop.create_task(coro())
    assert type(fut) is asyncio.Future
    assert type(task) is asyncio.Task
    loop.run_until_complete(task)
    fut.cancel()


def test_loop_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
