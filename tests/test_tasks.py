"""Tasks and futures on the loop: create_task, factories, TaskGroup, timeouts, introspection."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest


def test_create_future_is_bound_to_loop(loop):
    fut = loop.create_future()
    assert fut.get_loop() is loop
    loop.call_soon(fut.set_result, 5)
    assert loop.run_until_complete(fut) == 5


def test_create_task_name_and_context(loop):
    var = contextvars.ContextVar("v", default="d")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")

    async def coro():
        return var.get(), asyncio.current_task().get_name()

    t = loop.create_task(coro(), name="my-task", context=ctx)
    assert t.get_name() == "my-task"
    assert loop.run_until_complete(t) == ("in-ctx", "my-task")


def test_create_task_non_coroutine_is_type_error(loop):
    with pytest.raises(TypeError):
        loop.create_task(1)


def test_task_factory(loop):
    made = []

    def factory(lp, coro, **kw):
        t = asyncio.Task(coro, loop=lp, **kw)
        made.append(t)
        return t

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return 1

    assert loop.run_until_complete(loop.create_task(coro())) == 1
    assert len(made) == 1
    loop.set_task_factory(None)
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(1)


def test_all_tasks_and_current_task(loop):
    async def child():
        await asyncio.sleep(0.01)

    async def main():
        t = asyncio.create_task(child())
        assert asyncio.current_task() in asyncio.all_tasks()
        assert t in asyncio.all_tasks()
        await t
        return asyncio.current_task().get_coro().__qualname__

    assert loop.run_until_complete(main()).endswith("main")


def test_gather_and_cancel(loop):
    async def sleeper(d):
        await asyncio.sleep(d)
        return d

    async def main():
        r = await asyncio.gather(sleeper(0.01), sleeper(0.0), sleeper(0.02))
        t = asyncio.create_task(sleeper(10))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return r

    assert loop.run_until_complete(main()) == [0.01, 0.0, 0.02]


def test_taskgroup(loop):
    async def main():
        results = []

        async def w(i):
            await asyncio.sleep(0.001 * i)
            results.append(i)

        async with asyncio.TaskGroup() as tg:
            for i in range(5):
                tg.create_task(w(i))
        return results

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]


def test_taskgroup_error_cancels_siblings(loop):
    async def main():
        cancelled = []

        async def long():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(1)
                raise

        async def fail():
            await asyncio.sleep(0.01)
            raise ValueError("x")

        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(long())
                tg.create_task(fail())
        return cancelled

    assert loop.run_until_complete(main()) == [1]


def test_timeout_and_wait_for(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(1), 0.01)
        return await asyncio.wait_for(asyncio.sleep(0, "ok"), 1)

    assert loop.run_until_complete(main()) == "ok"


def test_sleep_is_not_early(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.05)
        return loop.time() - t0

    assert loop.run_until_complete(main()) >= 0.05 - loop._clock_resolution


def test_queue_and_event(loop):
    async def main():
        q = asyncio.Queue()
        ev = asyncio.Event()

        async def producer():
            for i in range(3):
                await q.put(i)
            ev.set()

        asyncio.create_task(producer())
        await ev.wait()
        return [q.get_nowait() for _ in range(3)]

    assert loop.run_until_complete(main()) == [0, 1, 2]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task factory is new in 3.12")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    order = []

    async def child():
        order.append("child-start")

    async def main():
        asyncio.create_task(child())
        order.append("after-create")

    loop.run_until_complete(main())
    assert order == ["child-start", "after-create"]
