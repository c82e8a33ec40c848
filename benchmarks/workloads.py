"""The benchmark workloads. Each takes a loop and a size and returns (seconds, operations).

Every workload only uses the public asyncio API, so it runs unchanged on
asyncio, uvloop, rloop, veloxloop and ferroloop. WORKLOADS are run.py's sched
group, PROC_WORKLOADS its proc group (child processes).
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Workload = Callable[[Any, int], tuple[float, int]]


def call_soon_chain(loop: Any, n: int) -> tuple[float, int]:
    """A chain of call_soon callbacks: each schedules the next."""
    left = [n]

    def step() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_soon(step)
        else:
            loop.stop()

    loop.call_soon(step)
    t0 = time.perf_counter()
    loop.run_forever()
    return time.perf_counter() - t0, n


def call_later_timers(loop: Any, n: int) -> tuple[float, int]:
    """n timers with random delays up to 10 ms, scheduled from a running
    callback as tasks do; one in four is cancelled."""
    rng = random.Random(42)
    delays = [rng.random() * 0.01 for _ in range(n)]
    fired = [0]
    expected = n - (n + 3) // 4

    def cb() -> None:
        fired[0] += 1
        if fired[0] == expected:
            loop.stop()

    def schedule() -> None:
        call_later = loop.call_later
        for i, d in enumerate(delays):
            h = call_later(d, cb)
            if i % 4 == 0:
                h.cancel()

    loop.call_soon(schedule)
    t0 = time.perf_counter()
    loop.run_forever()
    return time.perf_counter() - t0, n


def call_soon_threadsafe(loop: Any, n: int) -> tuple[float, int]:
    """Another thread schedules n callbacks with call_soon_threadsafe."""
    got = [0]

    def cb() -> None:
        got[0] += 1
        if got[0] == n:
            loop.stop()

    def producer() -> None:
        for _ in range(n):
            loop.call_soon_threadsafe(cb)

    t = threading.Thread(target=producer)
    t0 = time.perf_counter()
    t.start()
    loop.run_forever()
    dt = time.perf_counter() - t0
    t.join()
    return dt, n


def sleep0_pingpong(loop: Any, n: int) -> tuple[float, int]:
    """Two tasks alternate with asyncio.sleep(0); n switches in all."""

    async def worker(k: int) -> None:
        for _ in range(k):
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(worker(n // 2), worker(n // 2))

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0, n


def gather_tasks(loop: Any, n: int) -> tuple[float, int]:
    """create_task + gather of n trivial coroutines."""

    async def trivial(i: int) -> int:
        return i

    async def main() -> None:
        tasks = [loop.create_task(trivial(i)) for i in range(n)]
        await asyncio.gather(*tasks)

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0, n


def queue_producer_consumer(loop: Any, n: int) -> tuple[float, int]:
    """An asyncio.Queue(maxsize=100) between one producer and one consumer."""

    async def main() -> None:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=100)

        async def producer() -> None:
            for i in range(n):
                await q.put(i)

        async def consumer() -> None:
            for _ in range(n):
                await q.get()

        await asyncio.gather(producer(), consumer())

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0, n


def future_roundtrip(loop: Any, n: int) -> tuple[float, int]:
    """A task awaits a future that a call_soon callback resolves, n times."""

    async def main() -> None:
        for i in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            await fut

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0, n


def executor_roundtrip(loop: Any, n: int) -> tuple[float, int]:
    """n sequential run_in_executor round trips on the default executor."""

    def work() -> int:
        return 1

    async def main() -> None:
        for _ in range(n):
            await loop.run_in_executor(None, work)

    loop.run_until_complete(loop.run_in_executor(None, work))  # start the pool
    t0 = time.perf_counter()
    loop.run_until_complete(main())
    dt = time.perf_counter() - t0
    loop.run_until_complete(loop.shutdown_default_executor())
    return dt, n


def semaphore_sleepers(loop: Any, n: int) -> tuple[float, int]:
    """The tutorials' pattern: n tasks sleep 10 ms under Semaphore(100).

    Returns the *overhead* over the ideal time (n / 100 rounds of 10 ms) as
    the time, so lower is better and the ratio compares overheads.
    """

    async def main() -> None:
        sem = asyncio.Semaphore(100)

        async def job() -> None:
            async with sem:
                await asyncio.sleep(0.01)

        await asyncio.gather(*(job() for _ in range(n)))

    ideal = (n / 100) * 0.01
    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return max(time.perf_counter() - t0 - ideal, 1e-9), n


def sock_pingpong(loop: Any, n: int) -> tuple[float, int]:
    """n round trips of 1 KiB over a socketpair: one task sends with sock_sendall
    and reads the echo with sock_recv_into, the other echoes with
    sock_recv_into / sock_sendall. The echo is checked once at the end."""
    size = 1024
    msg = bytes(range(256)) * (size // 256)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def echo() -> None:
        buf = bytearray(size)
        view = memoryview(buf)
        while k := await loop.sock_recv_into(b, buf):
            await loop.sock_sendall(b, view[:k])

    async def main() -> float:
        server = loop.create_task(echo())
        buf = bytearray(size)
        view = memoryview(buf)
        t0 = time.perf_counter()
        for _ in range(n):
            await loop.sock_sendall(a, msg)
            got = 0
            while got < size:
                k = await loop.sock_recv_into(a, view[got:])
                if not k:
                    raise ConnectionError("echo side closed")
                got += k
        dt = time.perf_counter() - t0
        if buf != msg:
            raise AssertionError("the echo differs from the message")
        a.shutdown(socket.SHUT_WR)  # the echo task reads EOF and returns
        await server
        return dt

    try:
        return loop.run_until_complete(main()), n
    finally:
        a.close()
        b.close()


#: name -> (function, default size, what an operation is)
WORKLOADS: dict[str, tuple[Workload, int, str]] = {
    "call_soon": (call_soon_chain, 500_000, "callbacks"),
    "call_later": (call_later_timers, 200_000, "timers"),
    "call_soon_threadsafe": (call_soon_threadsafe, 200_000, "callbacks"),
    "sleep0": (sleep0_pingpong, 200_000, "switches"),
    "gather_100k": (gather_tasks, 100_000, "tasks"),
    "queue": (queue_producer_consumer, 100_000, "items"),
    "future_roundtrip": (future_roundtrip, 200_000, "round trips"),
    "executor": (executor_roundtrip, 10_000, "round trips"),
    "semaphore_sleep": (semaphore_sleepers, 10_000, "tasks (overhead)"),
    "sock_pingpong": (sock_pingpong, 50_000, "1 KiB round trips"),
}


# ----- the proc group: child processes


SPAWN_CONCURRENCY = 8


def subprocess_spawn(loop: Any, n: int) -> tuple[float, int]:
    """n runs of `true` through create_subprocess_exec + wait, 8 in flight at any time
    (8 tasks, each spawning and waiting in turn). One spawn before the clock starts
    sets up what a loop sets up once (asyncio's child watcher, imports)."""

    async def spawn() -> None:
        proc = await asyncio.create_subprocess_exec("true")
        if await proc.wait() != 0:
            raise RuntimeError(f"`true` exited with status {proc.returncode}")

    left = [n]

    async def spawner() -> None:
        while left[0] > 0:
            left[0] -= 1
            await spawn()

    async def main() -> float:
        await spawn()
        t0 = time.perf_counter()
        await asyncio.gather(*(spawner() for _ in range(SPAWN_CONCURRENCY)))
        return time.perf_counter() - t0

    return loop.run_until_complete(main()), n


PIPE_CHUNK = 256 * 1024
# The stream written to cat repeats every 7 chunks (7 * PIPE_CHUNK = 4 periods),
# so every chunk differs from its neighbours and a lost, repeated or swapped
# chunk shows; the 7 chunks are built once, the reader compares what comes back
# with the stream at the same offset: bytes.startswith(data, offset) is a
# memcmp, about 0.1 ms per MiB (a memoryview comparison would unpack byte by
# byte, ten times slower, and weigh in the rate).
_PIPE_PERIOD = 7 * PIPE_CHUNK // 4


def pipe_cat(loop: Any, mib: int) -> tuple[float, int]:
    """mib MiB through `cat` (create_subprocess_exec with stdin and stdout pipes):
    one task writes 256 KiB chunks, each followed by `await stdin.drain()`, then
    closes stdin; another reads stdout (read(256 KiB)) until EOF and checks every
    byte. Operations are MiB, so the rate is MiB/s. The clock starts once cat runs."""
    pattern = random.Random(6).randbytes(_PIPE_PERIOD) * 2
    chunks = [pattern[off : off + PIPE_CHUNK] for off in (k * PIPE_CHUNK % _PIPE_PERIOD for k in range(7))]
    total = mib * 1024 * 1024
    pipe = asyncio.subprocess.PIPE

    async def main() -> float:
        proc = await asyncio.create_subprocess_exec("cat", stdin=pipe, stdout=pipe)
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None

        async def writer() -> None:
            for k in range(total // PIPE_CHUNK):
                stdin.write(chunks[k % 7])
                await stdin.drain()
            stdin.close()
            await stdin.wait_closed()

        async def reader() -> int:
            got = 0
            while data := await stdout.read(PIPE_CHUNK):
                if not pattern.startswith(data, got % _PIPE_PERIOD):
                    raise AssertionError(f"cat's output differs from its input after {got} bytes")
                got += len(data)
            return got

        t0 = time.perf_counter()
        _, got = await asyncio.gather(writer(), reader())
        dt = time.perf_counter() - t0
        if got != total:
            raise AssertionError(f"cat returned {got} bytes of {total}")
        if await proc.wait() != 0:
            raise RuntimeError(f"cat exited with status {proc.returncode}")
        return dt

    return loop.run_until_complete(main()), mib


#: the proc group: name -> (function, default size, what an operation is)
PROC_WORKLOADS: dict[str, tuple[Workload, int, str]] = {
    "subprocess_spawn": (subprocess_spawn, 500, "spawns, 8 concurrent"),
    "pipe_cat": (pipe_cat, 256, "MiB through cat, 256 KiB writes"),
}
