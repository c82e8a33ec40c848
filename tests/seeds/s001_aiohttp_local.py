"""Seed 001: the aiohttp examples, against a local stand-in server.

The tutorial fetches api.github.com, httpbin.org and api.example.com; here a
local aiohttp server on 127.0.0.1 answers the same paths (JSON users and posts,
/delay/N, /status/N), so the example code runs unchanged but offline.
"""

import asyncio
import time

import aiohttp
from _scale import secs
from aiohttp import web

USERS = [{"id": i, "name": f"user{i}"} for i in range(1, 13)]


async def start_stand_in():
    app = web.Application()

    async def users(request):
        return web.json_response({"users": USERS})

    async def user(request):
        uid = int(request.match_info["uid"])
        if uid > len(USERS):
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(USERS[uid - 1])

    async def posts(request):
        uid = int(request.match_info["uid"])
        return web.json_response([{"post": p} for p in range(uid % 4)])

    async def delay(request):
        await asyncio.sleep(float(request.match_info["n"]))
        return web.json_response({"delayed": request.match_info["n"]})

    async def status(request):
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def root(request):
        return web.json_response({"current_user_url": "/user"})

    app.add_routes(
        [
            web.get("/", root),
            web.get("/users", users),
            web.get("/users/{uid}", user),
            web.get("/users/{uid}/posts", posts),
            web.get("/delay/{n}", delay),
            web.get("/status/{code}", status),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def fetch_url(session, url):
    async with session.get(url) as response:
        content = await response.text()
        return {"url": url, "status": response.status, "length": len(content)}


async def fetch_all_urls(base, urls):
    async with aiohttp.ClientSession() as session:
        tasks = [fetch_url(session, base + url) for url in urls]
        return await asyncio.gather(*tasks, return_exceptions=True)


async def fetch_with_retry(session, url, max_retries=3):
    for attempt in range(max_retries):
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status == 200:
                    return await response.json()
                elif response.status == 404:
                    print(f"URL not found: {url.split('/', 3)[3]}")
                    return None
                else:
                    print(f"Unexpected status {response.status}")
        except TimeoutError:
            print(f"Timeout on attempt {attempt + 1}")
        except aiohttp.ClientError as e:
            print(f"Client error on attempt {attempt + 1}: {e}")
        if attempt < max_retries - 1:
            await asyncio.sleep(2**attempt)
    return None


async def fetch_user_ids(session, base):
    async with session.get(f"{base}/users") as response:
        data = await response.json()
        return [u["id"] for u in data["users"]]


async def fetch_user_details(session, base, user_id):
    async with session.get(f"{base}/users/{user_id}") as response:
        return await response.json()


async def fetch_user_posts(session, base, user_id):
    async with session.get(f"{base}/users/{user_id}/posts") as response:
        return await response.json()


async def process_user(session, base, user_id):
    details, posts = await asyncio.gather(
        fetch_user_details(session, base, user_id), fetch_user_posts(session, base, user_id)
    )
    return {"user": details, "posts": posts, "post_count": len(posts)}


async def main():
    runner, base = await start_stand_in()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as response:
                html = await response.text()
                print(f"Fetched {len(html)} characters")

        start = time.time()
        urls = ["/", "/delay/1", "/delay/2", "/status/200", "/status/404"]
        for result in await fetch_all_urls(base, urls):
            print(f"{result['url'][len(base) :]}: {result['status']} ({result['length']} bytes)")
        print(f"\nFetched {len(urls)} URLs in {secs(time.time() - start)} seconds")

        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                *[fetch_with_retry(session, base + u) for u in ["/users/1", "/users/99", "/status/500"]]
            )
            print(f"\nSuccessfully fetched {len([r for r in results if r is not None])}/3 URLs")

        async with aiohttp.ClientSession() as session:
            user_ids = await fetch_user_ids(session, base)
            user_data = await asyncio.gather(*[process_user(session, base, uid) for uid in user_ids[:10]])
            for data in user_data:
                print(f"User {data['user']['name']}: {data['post_count']} posts")
    finally:
        await runner.cleanup()


asyncio.run(main())
