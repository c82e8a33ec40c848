"""Garbage collection: loops, handles and the cycles through them are collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest


def collect():
    for _ in range(3):
        gc.collect()


def test_closed_loop_is_collected(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    ref = weakref.ref(loop)
    del loop
    collect()
    assert ref() is None


def test_handle_cycle_is_collected_after_it_ran(loop):
    class Owner:
        pass

    o = Owner()
    o.timer = loop.call_later(0, o.__class__.__repr__, o)  # owner -> handle -> args -> owner
    loop.run_until_complete(asyncio.sleep(0.01))
    ref = weakref.ref(o)
    del o
    collect()
    assert ref() is None


def test_pending_handle_cycle_is_collected_after_close(loop_factory):
    loop = loop_factory()

    class Owner:
        pass

    o = Owner()
    o.timer = loop.call_later(100, print, o)
    o.soon = loop.call_soon(print, o)
    loop.close()
    ref = weakref.ref(o)
    lref = weakref.ref(loop)
    del o, loop
    collect()
    assert ref() is None and lref() is None


def test_handles_created_while_running_are_collected(loop):
    class Owner:
        pass

    refs = []

    async def main():
        for _ in range(100):
            o = Owner()
            o.h = (
                asyncio.get_running_loop().call_soon(print, o)
                if False
                else asyncio.get_running_loop().call_later(0, lambda o=o: None)
            )
            refs.append(weakref.ref(o))
            del o
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    collect()
    assert all(r() is None for r in refs)


def test_unclosed_stopped_loop_with_pending_callbacks_is_collected(loop_factory, recwarn):
    loop = loop_factory()

    async def forever():
        await asyncio.sleep(100)

    task = loop.create_task(forever())
    loop.run_until_complete(asyncio.sleep(0.01))
    ref = weakref.ref(loop)
    del loop, task
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        collect()
    assert ref() is None
    recwarn.clear()


def test_transport_and_protocol_collected(loop):
    refs = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            refs.append(weakref.ref(transport))
            refs.append(weakref.ref(self))
            transport.write(b"x")
            transport.close()

    async def main():
        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await r.read() == b"x"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    collect()
    assert refs and all(r() is None for r in refs)
