"""anyio tests on the asyncio backend, with a module-scoped async fixture."""

import asyncio

import anyio
import pytest
from sample_record import record

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
async def module_loop():
    # Set up once per module and per loop: the tests must see their own loop.
    record("fixture")
    yield asyncio.get_running_loop()


async def test_without_the_fixture():
    # Runs first in each pass: on the second, the module fixture from the
    # first pass is still alive (and with it anyio's runner and its loop).
    record()
    await anyio.sleep(0)


async def test_task_group(module_loop):
    record()
    assert module_loop is asyncio.get_running_loop()
    results = []

    async def child(i):
        await anyio.sleep(0.001 * i)
        results.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(child, i)
    assert sorted(results) == [0, 1, 2]


async def test_memory_stream(module_loop):
    record()
    assert module_loop is asyncio.get_running_loop()
    send, receive = anyio.create_memory_object_stream(1)
    async with send, receive:
        await send.send("x")
        assert await receive.receive() == "x"
