"""pytest-asyncio tests in the marker style (strict mode), an async fixture, a sync test."""

import asyncio
import os

import pytest
import pytest_asyncio
from sample_record import record


@pytest_asyncio.fixture
async def echo_server():
    record("fixture")
    loop = asyncio.get_running_loop()

    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], loop
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_sleep():
    record()
    assert await asyncio.sleep(0.001, "done") == "done"


@pytest.mark.asyncio
async def test_echo_server(echo_server):
    record()
    port, fixture_loop = echo_server
    assert fixture_loop is asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    assert await reader.readline() == b"ping\n"
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("n", [1, 2])
async def test_parametrized(n):
    record()
    results = await asyncio.gather(*(asyncio.sleep(0, i) for i in range(n)))
    assert results == list(range(n))


@pytest.mark.asyncio
async def test_loop_is_stdlib():
    # Differs on purpose: passes on asyncio's loop, fails on ferroloop's (or,
    # with FERROLOOP_SAMPLE_DIFFERENCE=skip, is skipped there).
    record()
    on_stdlib = type(asyncio.get_running_loop()).__module__.startswith("asyncio")
    if not on_stdlib and os.environ.get("FERROLOOP_SAMPLE_DIFFERENCE") == "skip":
        pytest.skip("not asyncio's loop")
    assert on_stdlib


def test_sync():
    record()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
