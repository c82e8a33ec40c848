"""Seed 001: producer/consumer queues, semaphores and a rate limiter.

seed-compare: unordered (random sleeps interleave producers and consumers;
the set of lines must match, their order depends on timer jitter)
"""

import asyncio
import random
import time
from datetime import datetime

from _scale import SCALE, secs


async def producer(queue, producer_id):
    for i in range(5):
        await asyncio.sleep(random.uniform(0.1, 0.5))
        item = f"Item-{producer_id}-{i}"
        await queue.put(item)
        print(f"Producer {producer_id} produced: {item}")


async def consumer(queue, consumer_id):
    while True:
        item = await queue.get()
        print(f"Consumer consuming: {item}")
        await asyncio.sleep(random.uniform(0.2, 0.8))
        queue.task_done()


async def main_queue():
    queue = asyncio.Queue(maxsize=10)
    producers = [asyncio.create_task(producer(queue, i)) for i in range(2)]
    consumers = [asyncio.create_task(consumer(queue, i)) for i in range(3)]
    await asyncio.gather(*producers)
    await queue.join()
    for consumer_task in consumers:
        consumer_task.cancel()


asyncio.run(main_queue())


async def fetch_url(session, url):
    await asyncio.sleep(1)
    return f"Content from {url}"


async def url_producer(queue, start_urls):
    for url in start_urls:
        await queue.put(url)


async def url_consumer(queue, visited):
    while True:
        url = await queue.get()
        if url in visited:
            queue.task_done()
            continue
        visited.add(url)
        print(f"Scraping: {url}")
        await fetch_url(None, url)
        queue.task_done()


async def main_scraper():
    queue = asyncio.Queue()
    visited = set()
    start_urls = ["https://example.com/page1", "https://example.com/page2", "https://example.com/page3"]
    await url_producer(queue, start_urls + start_urls[:1])
    consumers = [asyncio.create_task(url_consumer(queue, visited)) for _ in range(3)]
    await queue.join()
    for consumer_task in consumers:
        consumer_task.cancel()
    print(f"Scraped {len(visited)} unique URLs")


asyncio.run(main_scraper())


async def call_api(semaphore, api_id):
    async with semaphore:
        print(f"API call {api_id} started")
        await asyncio.sleep(1)
        print(f"API call {api_id} completed")
        return f"Result {api_id}"


async def main_semaphore():
    semaphore = asyncio.Semaphore(3)
    start = time.time()
    results = await asyncio.gather(*[call_api(semaphore, i) for i in range(10)])
    print(f"\nCompleted {len(results)} API calls in {secs(time.time() - start)} seconds")


asyncio.run(main_semaphore())


class RateLimiter:
    def __init__(self, max_requests, time_period):
        self.max_requests = max_requests
        self.time_period = time_period
        self.semaphore = asyncio.Semaphore(max_requests)
        self.request_times = []

    async def __aenter__(self):
        await self.semaphore.acquire()
        while len(self.request_times) >= self.max_requests:
            oldest = self.request_times[0]
            elapsed = datetime.now().timestamp() - oldest
            if elapsed < self.time_period * SCALE:
                await asyncio.sleep((self.time_period * SCALE - elapsed) / SCALE)
            self.request_times.pop(0)
        self.request_times.append(datetime.now().timestamp())
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        self.semaphore.release()


async def fetch_with_rate_limit(rate_limiter, item_id):
    async with rate_limiter:
        print(f"Fetching item {item_id}")
        await asyncio.sleep(0.5)
        return f"Item {item_id}"


async def main_rate():
    rate_limiter = RateLimiter(max_requests=5, time_period=2)
    results = await asyncio.gather(*[fetch_with_rate_limit(rate_limiter, i) for i in range(15)])
    print(f"Completed {len(results)} requests")


asyncio.run(main_rate())
