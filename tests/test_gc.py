"""Garbage collection: loops, handles and the cycles through them are collected."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
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


# The context a handle copies for its callback (``context=None``): a cycle
# through it is collected, and it is an ordinary tracked object whenever
# Python code can reach it. ferroloop keeps such a copy out of the collector
# while only the running loop can see it and more than a thousand callbacks
# and timers are queued (`Handle::hide_context`), so these tests queue more.

_var: contextvars.ContextVar[object] = contextvars.ContextVar("_var")


def crowd(lp, n=1500):
    """Queue n callbacks that do nothing."""
    for _ in range(n):
        lp.call_soon(int)


class _Holder:
    pass


def test_cycle_through_a_callbacks_context_is_collected(loop):
    refs = []

    def cb():
        h = _Holder()
        h.token = _var.set(h)  # context -> vars -> h -> token -> context
        refs.append(weakref.ref(h))

    async def main():
        lp = asyncio.get_running_loop()
        crowd(lp)
        for _ in range(50):
            lp.call_soon(cb)
            lp.call_later(0, cb)
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    collect()
    assert len(refs) == 100
    assert all(r() is None for r in refs)


def test_context_of_a_pending_handle_is_tracked(loop):
    got = []

    async def main():
        lp = asyncio.get_running_loop()
        crowd(lp)
        h = lp.call_soon(lambda: None)
        t = lp.call_later(10, lambda: None)
        got.append((gc.is_tracked(h._context), gc.is_tracked(t._context)))
        t.cancel()
        if sys.version_info >= (3, 12):  # Handle.get_context() is new in 3.12
            got.append(gc.is_tracked(lp.call_soon(lambda: None).get_context()))

    loop.run_until_complete(main())
    assert got == [(True, True), True] if sys.version_info >= (3, 12) else [(True, True)]


def test_cycle_through_the_context_of_an_abandoned_handle_is_collected(loop_factory, recwarn):
    loop = loop_factory()
    refs = []

    def arm():
        lp = asyncio.get_running_loop()
        crowd(lp)
        h = _Holder()
        _var.set(h)
        # The new handles' contexts hold h, and h holds the handles.
        h.soon = lp.call_soon(print, "never")
        h.later = lp.call_later(100, print, "never")
        refs.append(weakref.ref(h))
        lp.stop()

    loop.call_soon(arm)
    loop.run_forever()
    ref = weakref.ref(loop)
    del loop
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        collect()
    assert refs and refs[0]() is None
    assert ref() is None
    recwarn.clear()


async def until(cond):
    while not cond():
        await asyncio.sleep(0.005)


def test_copied_contexts_survive_every_way_a_handle_ends(loop):
    """Queued copies released by running, cancelling, an exception, a
    collection in the middle of a burst, another thread, a reference taken
    through gc.get_referents() and the loop's close: the process survives
    (a context deallocated while out of the collector would corrupt it) and
    every callback saw its own copy."""
    seen = []
    kept = []

    def cb(i):
        _var.set(i)
        seen.append(_var.get())
        if i % 97 == 0:
            gc.collect()

    def boom():
        raise ZeroDivisionError

    async def main():
        lp = asyncio.get_running_loop()
        lp.set_exception_handler(lambda lp, ctx: None)
        hs = [lp.call_soon(cb, i) for i in range(2000)]
        for h in hs[::3]:
            h.cancel()
        for h in hs[1::50]:
            kept.extend(o for o in gc.get_referents(h) if isinstance(o, contextvars.Context))
        del hs
        for _ in range(10):
            lp.call_soon(boom)
        timers = [lp.call_later(0.001 * (i % 5), cb, 10_000 + i) for i in range(500)]
        for t in timers[::4]:
            t.cancel()
        del timers

        def producer():
            for i in range(2000):
                lp.call_soon_threadsafe(cb, 20_000 + i)

        th = threading.Thread(target=producer)
        th.start()
        await asyncio.wait_for(until(lambda: len(seen) >= 1333 + 375 + 2000), 30)
        th.join()
        for i in range(100):
            lp.call_later(100, cb, i)  # still queued when the loop closes

    loop.run_until_complete(main())
    assert len(seen) == 1333 + 375 + 2000
    assert len(set(seen)) == len(seen)
    assert all(isinstance(c, contextvars.Context) for c in kept)
    kept.clear()
    collect()


@pytest.mark.deviation("D-021")
def test_pending_handle_is_tracked(loop):
    got = []

    async def main():
        lp = asyncio.get_running_loop()
        h = lp.call_soon(print, "x")
        t = lp.call_later(10, print, "y")
        got.append((gc.is_tracked(h), gc.is_tracked(t)))
        h.cancel()
        t.cancel()

    loop.run_until_complete(main())
    assert got == [(True, True)]


class _Token:
    """Something a callback holds, to see when it is released."""


def test_what_a_native_method_lets_go_is_released_at_once(loop):
    # Called from top-level code (no loop running): a native method that
    # drops the last reference frees the object before it returns, as
    # asyncio's Python methods do (no collection involved: no cycle).
    token = _Token()
    ref = weakref.ref(token)
    handle = loop.call_soon(print, token)
    timer = loop.call_later(3600, print, token)
    del token
    handle.cancel()
    assert ref() is not None  # the timer still holds it
    timer.cancel()
    assert ref() is None


def test_exception_of_a_failed_socket_operation_is_released(loop):
    # sock_accept's first attempt calls socket.accept(), a Python method whose
    # BlockingIOError carries its frame, and through it the caller's (which
    # holds the loop). The exception must not outlive the operation.
    import socket

    listener = socket.socket()
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        for _ in range(2):
            co = loop.sock_accept(listener)
            fut = co.send(None)  # waits: nothing to accept
            co.close()
            fut.cancel()
        del co, fut
        alive = [o for o in gc.get_objects() if type(o) is BlockingIOError]
        assert alive == []
