"""Seed 000 ("Python Async IO – The Ultimate Guide"): its runnable examples."""

import asyncio
import concurrent.futures
import logging

from _scale import secs  # noqa: F401


async def task_one():
    print("Starting task one")
    await asyncio.sleep(3)
    print("Finished task one")


async def task_two():
    print("Starting task two")
    await asyncio.sleep(1)
    print("Finished task two")


async def main_tasks():
    task1 = asyncio.create_task(task_one())
    task2 = asyncio.create_task(task_two())
    await task1
    await task2


asyncio.run(main_tasks())


async def async_generator_a():
    for i in range(3):
        yield i
        await asyncio.sleep(1)


async def async_generator_b():
    async for item in async_generator_a():
        print(item)


asyncio.run(async_generator_b())


async def my_async_function():
    print("Task started")
    await asyncio.sleep(2)
    print("Task finished")


event_loop = asyncio.new_event_loop()
task = event_loop.create_task(my_async_function())
event_loop.run_until_complete(task)
event_loop.close()


async def async_task_1():
    await asyncio.sleep(1)
    return "Task 1 completed"


async def async_task_2():
    await asyncio.sleep(2)
    return "Task 2 completed"


async def main_gather():
    tasks = [async_task_1(), async_task_2()]
    results = await asyncio.gather(*tasks)
    print(results)


asyncio.run(main_gather())


async def foo():
    await asyncio.sleep(1)
    return "Foo"


async def bar():
    await asyncio.sleep(2)
    return "Bar"


async def main_foobar():
    results = await asyncio.gather(foo(), bar())
    print(results)


asyncio.run(main_foobar())


async def some_function():
    await asyncio.sleep(5)


async def main_timeout():
    try:
        await asyncio.wait_for(some_function(), timeout=3)
    except TimeoutError:
        print("Task took too long.")


asyncio.run(main_timeout())


def sync_function(seconds):
    return f"Slept for {seconds} seconds"


async def main_executor():
    loop = asyncio.get_event_loop()
    result = await loop.run_in_executor(None, sync_function, 3)
    print(result)


asyncio.run(main_executor())

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=__import__("sys").stdout)
logger = logging.getLogger("seed000")
executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)


def log_info(msg, *args):
    executor.submit(logger.info, msg, *args)


async def some_async_operation():
    await asyncio.sleep(0.1)


async def my_logging_function():
    log_info("Info message")
    await some_async_operation()
    logger.error("Error message")


asyncio.run(my_logging_function())
executor.shutdown(wait=True)


async def example_coroutine():
    await asyncio.sleep(1)
    print("Coroutine has completed")


asyncio.run(example_coroutine())


async def main_nested():
    task = asyncio.create_task(example_coroutine())
    await task


asyncio.run(main_nested())


async def inner_run():
    coro = example_coroutine()
    try:
        asyncio.run(coro)
    except RuntimeError as e:
        print(f"RuntimeError: {e}")
    finally:
        coro.close()


asyncio.run(inner_run())


async def async_function():
    print("Function starting")
    await asyncio.sleep(2)
    print("Function completed")


async def main_two():
    await asyncio.gather(async_function(), async_function())


asyncio.run(main_two())


async def queue_demo():
    queue = asyncio.Queue()

    async def child(n):
        item = await asyncio.wait_for(queue.get(), timeout=1)
        print(f"child {n} got {item}")
        queue.task_done()

    children = [asyncio.create_task(child(i)) for i in range(3)]
    for i in range(3):
        await queue.put(f"job-{i}")
    await queue.join()
    await asyncio.gather(*children)
    try:
        await asyncio.wait_for(queue.get(), timeout=0.5)
    except TimeoutError:
        print("queue empty: timed out")


asyncio.run(queue_demo())
