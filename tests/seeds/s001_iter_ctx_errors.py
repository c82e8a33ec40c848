"""Seed 001: async for, async with, error handling and cancellation."""

import asyncio


class AsyncRange:
    def __init__(self, start, end):
        self.current = start
        self.end = end

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.current >= self.end:
            raise StopAsyncIteration
        await asyncio.sleep(0.5)
        value = self.current
        self.current += 1
        return value


async def main_range():
    async for number in AsyncRange(1, 5):
        print(f"Got number: {number}")


asyncio.run(main_range())


class AsyncDatabaseCursor:
    def __init__(self, query):
        self.query = query
        self.results = []
        self.index = 0

    async def execute(self):
        await asyncio.sleep(1)
        self.results = [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}, {"id": 3, "name": "Charlie"}]

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.index >= len(self.results):
            raise StopAsyncIteration
        await asyncio.sleep(0.1)
        row = self.results[self.index]
        self.index += 1
        return row


async def fetch_users():
    cursor = AsyncDatabaseCursor("SELECT * FROM users")
    await cursor.execute()
    async for row in cursor:
        print(f"User: {row['name']}")


asyncio.run(fetch_users())


class AsyncDatabaseConnection:
    async def __aenter__(self):
        print("Opening database connection...")
        await asyncio.sleep(1)
        print("Database connection opened")
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        print("Closing database connection...")
        await asyncio.sleep(0.5)
        print("Database connection closed")

    async def query(self, sql):
        await asyncio.sleep(0.5)
        return f"Results for: {sql}"


async def main_db():
    async with AsyncDatabaseConnection() as db:
        result = await db.query("SELECT * FROM users")
        print(result)


asyncio.run(main_db())


class AsyncFileReader:
    def __init__(self, filename):
        self.filename = filename
        self.lines = []
        self.index = 0

    async def __aenter__(self):
        await asyncio.sleep(0.5)
        self.lines = ["Line 1", "Line 2", "Line 3"]
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        await asyncio.sleep(0.2)
        self.lines = []

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.index >= len(self.lines):
            raise StopAsyncIteration
        await asyncio.sleep(0.1)
        line = self.lines[self.index]
        self.index += 1
        return line


async def read_file():
    async with AsyncFileReader("data.txt") as reader:
        async for line in reader:
            print(line)


asyncio.run(read_file())


async def risky_operation(item_id):
    await asyncio.sleep(1)
    if item_id % 2 == 0:
        raise ValueError(f"Item {item_id} caused an error")
    return f"Item {item_id} processed"


async def handle_with_try_except():
    try:
        result = await risky_operation(2)
        print(result)
    except ValueError as e:
        print(f"Error caught: {e}")


asyncio.run(handle_with_try_except())


async def safe_operation(item_id):
    try:
        result = await risky_operation(item_id)
        return {"success": True, "result": result}
    except Exception as e:
        return {"success": False, "error": str(e), "item_id": item_id}


async def main_safe():
    results = await asyncio.gather(*[safe_operation(i) for i in range(5)])
    for result in results:
        if result["success"]:
            print(f"Success: {result['result']}")
        else:
            print(f"Failed: Item {result['item_id']} - {result['error']}")


asyncio.run(main_safe())


async def main_exceptions():
    results = await asyncio.gather(*[risky_operation(i) for i in range(5)], return_exceptions=True)
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            print(f"Task {i} failed: {result}")
        else:
            print(f"Task {i} succeeded: {result}")


asyncio.run(main_exceptions())


class AsyncResource:
    async def __aenter__(self):
        print("Acquiring resource")
        await asyncio.sleep(0.5)
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        print("Cleaning up resource")
        await asyncio.sleep(0.5)
        if exc_type is not None:
            print(f"Exception during resource use: {exc_val}")
        return False

    async def do_work(self):
        await asyncio.sleep(1)
        raise ValueError("Something went wrong")


async def main_resource():
    try:
        async with AsyncResource() as resource:
            await resource.do_work()
    except ValueError as e:
        print(f"Caught error: {e}")


asyncio.run(main_resource())


async def acquire_resource():
    await asyncio.sleep(0.1)
    print("acquired")
    return "res"


async def release_resource(resource):
    print(f"released {resource}")


async def long_operation():
    await asyncio.sleep(10)


async def proper_cleanup():
    resource = await acquire_resource()
    try:
        await long_operation()
    finally:
        await release_resource(resource)


async def main_cancel():
    t = asyncio.create_task(proper_cleanup())
    await asyncio.sleep(0.5)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        print("cancelled, cleanup ran")


asyncio.run(main_cancel())


async def some_coroutine():
    return "value"


async def wrong_nesting():
    c = some_coroutine()
    try:
        return asyncio.run(c)
    except RuntimeError as e:
        c.close()
        return f"Error: {e}"


print(asyncio.run(wrong_nesting()))


async def limited_concurrency(items):
    semaphore = asyncio.Semaphore(10)
    running = [0, 0]

    async def process_with_limit(item):
        async with semaphore:
            running[0] += 1
            running[1] = max(running[1], running[0])
            await asyncio.sleep(0.1)
            running[0] -= 1
            return item * 2

    out = await asyncio.gather(*[process_with_limit(item) for item in items])
    print(f"max concurrent: {running[1]}, sum: {sum(out)}")


asyncio.run(limited_concurrency(range(100)))


async def fetch_data_nowait():
    await asyncio.sleep(0.1)
    return "data"


async def wrong():
    result = fetch_data_nowait()
    print(type(result).__name__)
    result.close()


async def correct():
    result = await fetch_data_nowait()
    print(result)


asyncio.run(wrong())
asyncio.run(correct())
