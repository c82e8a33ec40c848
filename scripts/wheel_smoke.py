"""Smoke program for an installed ferroloop (a wheel, or the sdist built from source).

    python scripts/wheel_smoke.py VERSION

Run by scripts/wheel_check.sh with the python of a fresh virtual environment,
from a directory outside the checkout. Checks that ``ferroloop`` is imported
from that environment (not from the checkout's python/), that
``ferroloop.__version__`` and the installed distribution's metadata both equal
VERSION, then runs one program on ferroloop and on stdlib asyncio and compares:
a TCP echo through ``asyncio.start_server`` on 127.0.0.1, a ``call_later``, a
subprocess (``echo``) and ``python -m ferroloop -c ...`` in a child; and
``ferroloop.stats()`` and ``detect_blocking()`` on a callback that blocks.
Exits non-zero with a message on the first difference.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import sys
import sysconfig
from typing import Any

# The child run by `python -m ferroloop -c`: which loop asyncio.run gave it,
# its sys.argv, and where it imported ferroloop from.
CHILD = """\
import asyncio, sys, ferroloop

async def main():
    return isinstance(asyncio.get_running_loop(), ferroloop.Loop)

print(asyncio.run(main()), sys.argv, ferroloop.__file__)
"""


def fail(message: str) -> None:
    sys.exit(f"wheel_smoke: FAILED: {message}")


def check_install(expected: str) -> None:
    import ferroloop

    if ferroloop.__version__ != expected:
        fail(f"ferroloop.__version__ is {ferroloop.__version__!r}, the wheel is {expected!r}")
    meta = importlib.metadata.version("ferroloop")
    if meta != expected:
        fail(f"the installed metadata says {meta!r}, the wheel is {expected!r}")
    where = os.path.realpath(os.path.dirname(ferroloop.__file__))
    site = os.path.realpath(os.path.join(sysconfig.get_paths()["platlib"], "ferroloop"))
    if where != site:
        fail(f"ferroloop imported from {where}, not from this environment's {site}")


async def echo_over_tcp(payload: bytes) -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload + b"\n")
        await writer.drain()
        echoed = await reader.read()  # to EOF: the server closes after one line
        writer.close()
        await writer.wait_closed()
    return echoed


async def main() -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {}

    out["tcp_echo"] = await echo_over_tcp(b"ping " * 1000)

    fut = loop.create_future()
    start = loop.time()
    loop.call_later(0.05, fut.set_result, "fired")
    out["call_later"] = await fut
    out["call_later_waited"] = loop.time() - start >= 0.04

    proc = await asyncio.create_subprocess_exec("echo", "hello", "from", "echo", stdout=asyncio.subprocess.PIPE)
    stdout, _ = await proc.communicate()
    out["echo"] = (stdout, proc.returncode)

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ferroloop",
        "-c",
        CHILD,
        "arg1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await child.communicate()
    out["python_m_ferroloop"] = (stdout.decode(), stderr.decode(), child.returncode)
    return out


def expected_results() -> dict[str, Any]:
    import ferroloop

    return {
        "tcp_echo": b"ping " * 1000 + b"\n",
        "call_later": "fired",
        "call_later_waited": True,
        "echo": (b"hello from echo\n", 0),
        "python_m_ferroloop": (f"True ['-c', 'arg1'] {ferroloop.__file__}\n", "", 0),
    }


def check_observability() -> None:
    """The native statistics and the watchdog thread work from the wheel."""
    import time

    import ferroloop

    reports: list[Any] = []

    async def block() -> Any:
        ferroloop.stats()  # callbacks are timed from the next batch on
        await asyncio.sleep(0)
        with ferroloop.detect_blocking(0.05, handler=reports.append):
            time.sleep(0.2)  # the blocking line
            await asyncio.sleep(0.1)
        return ferroloop.stats()

    stats = ferroloop.run(block())
    if stats.slow_callbacks != 1 or stats.slowest_callback is None or stats.slowest_callback.seconds < 0.2:
        fail(f"statistics: {stats!r}")
    if [r.finished for r in reports] != [False, True] or "time.sleep(0.2)" not in reports[0].stack:
        fail(f"blocking reports: {reports!r}")


async def on_which_loop() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def smoke(expected: str) -> None:
    check_install(expected)
    import ferroloop

    if (which := ferroloop.run(on_which_loop())) != "ferroloop":
        fail(f"ferroloop.run ran on a {which} loop")
    check_observability()
    want = expected_results()
    for name, run in (("ferroloop", ferroloop.run), ("asyncio", asyncio.run)):
        got = run(main())
        for key, value in want.items():
            if got[key] != value:
                fail(f"{name}: {key}: got {got[key]!r}, expected {value!r}")
    print(
        f"wheel_smoke: ferroloop {expected} from {os.path.dirname(ferroloop.__file__)}: OK on Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    smoke(sys.argv[1])
