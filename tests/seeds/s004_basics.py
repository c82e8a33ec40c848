"""Seed 004 ("Asyncio Basics"): every example of the page, in order."""

import asyncio
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager


async def hello():
    print("Hello")
    await asyncio.sleep(1)
    print("World")


asyncio.run(hello())

path = os.path.join(tempfile.mkdtemp(prefix="ferroloop-seed-"), "hosts")
with open(path, "w") as f:
    f.write("127.0.0.1 localhost\n")


async def read_file(path):
    loop = asyncio.get_event_loop()
    with ThreadPoolExecutor() as pool:

        def read():
            with open(path) as f:
                return f.read()

        return await loop.run_in_executor(pool, read)


content = asyncio.run(read_file(path))
print(content, end="")


async def fetch(name, delay):
    await asyncio.sleep(delay)
    return f"{name} done"


async def main_tasks():
    task1 = asyncio.create_task(fetch("A", 2))
    task2 = asyncio.create_task(fetch("B", 1))
    result1 = await task1
    result2 = await task2
    print(result1, result2)


asyncio.run(main_tasks())


async def fetch_url(url, delay):
    await asyncio.sleep(delay)
    return f"Response from {url}"


async def main_gather():
    urls = ["site1.com", "site2.com", "site3.com"]
    coros = [fetch_url(url, i * 0.5) for i, url in enumerate(urls)]
    results = await asyncio.gather(*coros)
    for r in results:
        print(r)


asyncio.run(main_gather())


async def slow_operation():
    await asyncio.sleep(10)
    return "done"


async def main_timeout():
    try:
        await asyncio.wait_for(slow_operation(), timeout=2.0)
    except TimeoutError:
        print("Operation timed out!")


asyncio.run(main_timeout())


async def fetch_delay(name, delay):
    await asyncio.sleep(delay)
    return f"{name}: {delay}s"


async def main_first():
    tasks = [asyncio.create_task(fetch_delay("fast", 1)), asyncio.create_task(fetch_delay("slow", 3))]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        print(f"Completed: {task.result()}")
    print(f"Still pending: {len(pending)}")
    for task in pending:
        task.cancel()


asyncio.run(main_first())


class AsyncRange:
    def __init__(self, start, stop):
        self.current = start
        self.stop = stop

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.current >= self.stop:
            raise StopAsyncIteration
        await asyncio.sleep(0.5)
        value = self.current
        self.current += 1
        return value


async def main_range():
    async for num in AsyncRange(0, 5):
        print(num)


asyncio.run(main_range())


class AsyncConnection:
    async def __aenter__(self):
        print("Connecting...")
        await asyncio.sleep(1)
        print("Connected")
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        print("Disconnecting...")
        await asyncio.sleep(0.5)
        print("Disconnected")

    async def query(self, sql):
        await asyncio.sleep(0.1)
        return f"Result of: {sql}"


async def main_conn():
    async with AsyncConnection() as conn:
        result = await conn.query("SELECT * FROM users")
        print(result)


asyncio.run(main_conn())


@asynccontextmanager
async def managed_resource(name):
    print(f"Acquiring {name}")
    await asyncio.sleep(0.5)
    try:
        yield name
    finally:
        print(f"Releasing {name}")
        await asyncio.sleep(0.2)


async def main_managed():
    async with managed_resource("database") as resource:
        print(f"Using {resource}")


asyncio.run(main_managed())


def blocking_io():
    time.sleep(2)
    return "IO complete"


def cpu_bound():
    return sum(i * i for i in range(10**6))


async def main_executor():
    loop = asyncio.get_event_loop()
    result1 = await loop.run_in_executor(None, blocking_io)
    print(result1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        result2 = await loop.run_in_executor(pool, cpu_bound)
        print(result2)


asyncio.run(main_executor())


async def async_range(start, stop):
    for i in range(start, stop):
        await asyncio.sleep(0.5)
        yield i


async def main_agen():
    async for num in async_range(0, 5):
        print(num)
    results = [x async for x in async_range(0, 3)]
    print(results)


asyncio.run(main_agen())


async def failing_task():
    await asyncio.sleep(1)
    raise ValueError("Something went wrong")


async def main_exc():
    task = asyncio.create_task(failing_task())
    try:
        await task
    except ValueError as e:
        print(f"Caught exception: {e}")
    tasks = [asyncio.create_task(asyncio.sleep(1)), asyncio.create_task(failing_task())]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            print(f"Task failed: {r}")
        else:
            print(f"Task succeeded: {r}")


asyncio.run(main_exc())


async def long_running():
    try:
        while True:
            print("Working...")
            await asyncio.sleep(1)
    except asyncio.CancelledError:
        print("Task was cancelled, cleaning up...")
        raise


async def main_cancel():
    task = asyncio.create_task(long_running())
    await asyncio.sleep(3.5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("Task cancellation confirmed")


asyncio.run(main_cancel())
