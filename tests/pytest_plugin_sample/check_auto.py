"""pytest-asyncio auto mode: unmarked async tests and a plain async fixture (run with asyncio_mode=auto)."""

import asyncio

import pytest
from sample_record import record


@pytest.fixture
async def answer():
    record("fixture")
    await asyncio.sleep(0)
    return 42


async def test_auto(answer):
    record()
    assert answer == 42


class TestAutoClass:
    async def test_method(self):
        record()
        assert asyncio.current_task() is not None
