"""White-box: the raw vectorcall entry points (src/py/fastcall.rs).

They skip re-checking `self`'s type because CPython's method descriptor does
it first; this pins that guarantee, so a wrong `self` can never reach native
code.
"""

from __future__ import annotations

import ferroloop
import pytest
from ferroloop import _ferroloop

RAW = [
    "call_soon",
    "call_soon_threadsafe",
    "call_later",
    "call_at",
    "create_task",
    "create_future",
    "get_debug",
    "time",
]


@pytest.mark.parametrize("name", RAW)
def test_wrong_self_is_rejected_before_native_code(name):
    method = getattr(_ferroloop.EventLoop, name)
    with pytest.raises(TypeError, match="doesn't apply to a 'object' object"):
        method(object())


@pytest.mark.parametrize("name", RAW)
def test_entry_points_are_installed(name):
    loop = ferroloop.new_event_loop()
    try:
        assert getattr(type(loop), name) is getattr(_ferroloop.EventLoop, name)
        assert getattr(_ferroloop.EventLoop, name).__doc__
    finally:
        loop.close()


def test_create_task_uncommon_cases_use_asyncios_method():
    loop = ferroloop.new_event_loop()
    try:

        async def coro():
            return 1

        c = coro()
        with pytest.raises(TypeError):
            loop.create_task(c, "positional-name")  # keyword-only in asyncio
        c.close()
        c = coro()
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            loop.create_task(c, bogus=1)
        c.close()
    finally:
        loop.close()
