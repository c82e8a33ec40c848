"""Types of the objects the loop returns."""

from __future__ import annotations

import asyncio
import sys

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


def _without_when(info):
    return [("when=..." if part.startswith("when=") else part) for part in info]


def test_repr_info_of_handles(loop):
    def cb(*args):
        pass

    handle = loop.call_soon(cb, 1, "x")
    timer = loop.call_later(3600, cb, 2)
    # From 3.13 the arguments are shown in debug mode only.
    shows_args = sys.version_info < (3, 13) or loop.get_debug()
    try:
        assert handle._repr_info()[0] == "Handle"
        args = "1, 'x'" if shows_args else ""
        assert handle._repr_info()[1].startswith(f"test_repr_info_of_handles.<locals>.cb({args}) at ")
        info = timer._repr_info()
        assert info[:2] == ["TimerHandle", f"when={timer.when()}"]
        args = "2" if shows_args else ""
        assert info[2].startswith(f"test_repr_info_of_handles.<locals>.cb({args}) at ")
        timer.cancel()
        handle.cancel()
        # Cancelled: the callback is gone; when= follows "cancelled" (debug
        # mode adds where the handle was made).
        created = [part for part in timer._repr_info() if part.startswith("created at ")]
        assert len(created) == (1 if loop.get_debug() else 0)
        assert _without_when(timer._repr_info()) == ["TimerHandle", "cancelled", "when=...", *created]
        created = [part for part in handle._repr_info() if part.startswith("created at ")]
        assert handle._repr_info() == ["Handle", "cancelled", *created]
    finally:
        handle.cancel()
        timer.cancel()


def test_repr_info_in_debug_mode_names_where_the_handle_was_made(loop):
    loop.set_debug(True)
    handle = loop.call_soon(print)
    try:
        assert handle._repr_info()[-1].startswith("created at ")
    finally:
        handle.cancel()


def test_get_context_exists_where_asyncio_has_it(loop):
    handle = loop.call_soon(print)
    try:
        assert hasattr(handle, "get_context") == (sys.version_info >= (3, 12))
    finally:
        handle.cancel()
