"""Seed 001 ("Python asyncio: Complete Guide"): coroutines, tasks, futures,
create_task, gather, wait, as_completed, sleep vs time.sleep, executors."""

import asyncio
import time

from _scale import secs


async def fetch_data():
    print("Fetching data...")
    await asyncio.sleep(2)
    print("Data fetched!")
    return {"status": "success"}


coroutine = fetch_data()
print(type(coroutine))
print(asyncio.run(coroutine))


async def main_entry():
    print("Starting async operations")
    await asyncio.sleep(1)
    print("Finished")


asyncio.run(main_entry())


async def compute_value():
    await asyncio.sleep(0.1)
    return 42


async def main_value():
    result = await compute_value()
    return result


final_result = asyncio.run(main_value())
print(final_result)

loop = asyncio.new_event_loop()
try:
    print(loop.run_until_complete(main_value()))
finally:
    loop.close()


async def my_coroutine():
    await asyncio.sleep(1)
    return "completed"


coro = my_coroutine()
print(asyncio.run(coro))


async def say_after(delay, message):
    await asyncio.sleep(delay)
    print(message)
    return message


async def main_tasks():
    task1 = asyncio.create_task(say_after(1, "First"))
    task2 = asyncio.create_task(say_after(2, "Second"))
    result1 = await task1
    result2 = await task2
    print(f"Results: {result1}, {result2}")


asyncio.run(main_tasks())


async def background_work():
    print("Starting background work")
    await asyncio.sleep(2)
    print("Background work completed")


async def main_background():
    task = asyncio.create_task(background_work())
    print("Task created, doing other work")
    await asyncio.sleep(1)
    print("Other work done")
    await task


asyncio.run(main_background())


async def set_future_result(future):
    await asyncio.sleep(1)
    future.set_result("Future completed")


async def main_future():
    loop = asyncio.get_event_loop()
    future = loop.create_future()
    asyncio.create_task(set_future_result(future))
    result = await future
    print(result)


asyncio.run(main_future())


async def download_file(file_id):
    print(f"Starting download {file_id}")
    await asyncio.sleep(2)
    print(f"Completed download {file_id}")
    return f"file_{file_id}.dat"


async def sequential_downloads():
    start = time.time()
    await download_file(1)
    await download_file(2)
    await download_file(3)
    print(f"Sequential: {secs(time.time() - start)} seconds")


async def concurrent_downloads():
    start = time.time()
    task1 = asyncio.create_task(download_file(1))
    task2 = asyncio.create_task(download_file(2))
    task3 = asyncio.create_task(download_file(3))
    print(await task1, await task2, await task3)
    print(f"Concurrent: {secs(time.time() - start)} seconds")


asyncio.run(sequential_downloads())
asyncio.run(concurrent_downloads())


async def long_running_operation():
    await asyncio.sleep(0.5)


async def main_named():
    task = asyncio.create_task(long_running_operation(), name="long-operation-task")
    print(f"Task name: {task.get_name()}")
    await task


asyncio.run(main_named())


async def fetch_user(user_id):
    await asyncio.sleep(1)
    return {"id": user_id, "name": f"User {user_id}"}


async def main_users():
    results = await asyncio.gather(fetch_user(1), fetch_user(2), fetch_user(3), fetch_user(4), fetch_user(5))
    print(results)


asyncio.run(main_users())


async def task_with_delay(delay, value):
    await asyncio.sleep(delay)
    return value


async def main_order():
    results = await asyncio.gather(task_with_delay(3, "slow"), task_with_delay(1, "fast"), task_with_delay(2, "medium"))
    print(results)


asyncio.run(main_order())


async def failing_task():
    await asyncio.sleep(1)
    raise ValueError("Task failed!")


async def successful_task():
    await asyncio.sleep(2)
    return "success"


async def main_gather_error():
    try:
        await asyncio.gather(failing_task(), successful_task())
    except ValueError as e:
        print(f"Error caught: {e}")


asyncio.run(main_gather_error())


async def main_return_exceptions():
    results = await asyncio.gather(failing_task(), successful_task(), return_exceptions=True)
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            print(f"Task {i} failed: {result}")
        else:
            print(f"Task {i} succeeded: {result}")


asyncio.run(main_return_exceptions())


async def process_item(item):
    await asyncio.sleep(1)
    return item * 2


async def main_items():
    items = [1, 2, 3, 4, 5]
    results = await asyncio.gather(*[process_item(item) for item in items])
    print(results)


asyncio.run(main_items())


async def task(delay, name):
    await asyncio.sleep(delay)
    return f"{name} completed"


async def main_wait_all():
    tasks = [
        asyncio.create_task(task(1, "Task 1")),
        asyncio.create_task(task(2, "Task 2")),
        asyncio.create_task(task(3, "Task 3")),
    ]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.ALL_COMPLETED)
    for t in sorted(done, key=lambda t: t.result()):
        print(t.result())
    print(len(pending))


asyncio.run(main_wait_all())


async def main_wait_first():
    tasks = [
        asyncio.create_task(task(1, "Fast")),
        asyncio.create_task(task(3, "Slow")),
        asyncio.create_task(task(2, "Medium")),
    ]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    print(f"First completed: {done.pop().result()}")
    print(f"Still pending: {len(pending)} tasks")
    for t in pending:
        t.cancel()


asyncio.run(main_wait_first())


async def fetch_url_data(url_id, delay):
    await asyncio.sleep(delay)
    return f"Data from URL {url_id}"


async def main_as_completed():
    tasks = [fetch_url_data(1, 3), fetch_url_data(2, 1), fetch_url_data(3, 2)]
    for c in asyncio.as_completed(tasks):
        result = await c
        print(f"Received: {result}")


asyncio.run(main_as_completed())


async def search_engine(query, engine_name, delay):
    await asyncio.sleep(delay)
    return f"{engine_name}: Results for '{query}'"


async def main_search():
    query = "python asyncio"
    searches = [
        search_engine(query, "Google", 1.5),
        search_engine(query, "Bing", 2.0),
        search_engine(query, "DuckDuckGo", 1.0),
    ]
    print("Searching...")
    for search in asyncio.as_completed(searches):
        print(await search)


asyncio.run(main_search())


async def blocking_example():
    print("Starting blocking sleep")
    time.sleep(2)
    print("Finished blocking sleep")


async def non_blocking_example():
    print("Starting non-blocking sleep")
    await asyncio.sleep(2)
    print("Finished non-blocking sleep")


async def concurrent_task():
    for i in range(3):
        print(f"Concurrent task running: {i}")
        await asyncio.sleep(0.5)


async def demo_blocking():
    print("\n=== Blocking example (BAD) ===")
    await asyncio.gather(blocking_example(), concurrent_task())


async def demo_non_blocking():
    print("\n=== Non-blocking example (GOOD) ===")
    await asyncio.gather(non_blocking_example(), concurrent_task())


asyncio.run(demo_blocking())
asyncio.run(demo_non_blocking())


def cpu_intensive_task():
    time.sleep(2)
    return "CPU task completed"


async def main_cpu():
    loop = asyncio.get_event_loop()
    result = await loop.run_in_executor(None, cpu_intensive_task)
    print(result)


asyncio.run(main_cpu())
