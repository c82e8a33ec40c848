"""unittest test cases: an IsolatedAsyncioTestCase and a plain (sync) TestCase."""

import asyncio
import unittest

from sample_record import record


class TestIsolated(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        record("asyncSetUp")
        self.loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()

    async def test_queue(self):
        record()
        self.assertIs(asyncio.get_running_loop(), self.loop)
        await self.queue.put(1)
        self.assertEqual(await self.queue.get(), 1)

    async def test_call_later(self):
        record()
        fut = self.loop.create_future()
        self.loop.call_later(0.001, fut.set_result, "late")
        self.assertEqual(await fut, "late")


class TestPlain(unittest.TestCase):
    def test_sync(self):
        record()
        self.assertEqual(sum([1, 2]), 3)
