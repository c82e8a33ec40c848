"""Seed 003 ("asyncio Basics"): greet, sequential say_after, concurrent
worker tasks, hello world. Wall-clock timestamps (time.strftime('%X')) are
printed as a fixed marker, as they differ on every run."""

import asyncio
import time

from _scale import secs


async def greet(name):
    print(f"Hello, {name}!")
    await asyncio.sleep(1)
    print(f"Bye, {name}!")


coro_obj = greet("Alice")
print(type(coro_obj))
asyncio.run(coro_obj)


async def say_after(delay, what):
    await asyncio.sleep(delay)
    print(what)


async def main_program():
    start_time = time.time()
    print("Started execution at <time>")
    await say_after(1, "Hello")
    await say_after(2, "World")
    print(f"Finished in {secs(time.time() - start_time)} sec.")


asyncio.run(main_program())


async def worker_task(name, delay):
    print(f"Task {name}: starting, will wait {delay} sec.")
    await asyncio.sleep(delay)
    print(f"Task {name}: finished.")
    return f"Result from {name}"


async def main_concurrent():
    start_time = time.time()
    print("Starting concurrent tasks at <time>")
    task1 = asyncio.create_task(worker_task("A", 2))
    task2 = asyncio.create_task(worker_task("B", 1))
    task3 = asyncio.create_task(worker_task("C", 3))
    results = await asyncio.gather(task1, task2, task3)
    print(f"\nAll tasks finished in {secs(time.time() - start_time)} sec.")
    print(f"Results: {results}")


asyncio.run(main_concurrent())


async def hello_world_async():
    print("Async Hello...")
    await asyncio.sleep(0.1)
    print("...World!")


asyncio.run(hello_world_async())
