"""Run one tutorial example on one loop: ``_runner.py IMPL EXAMPLE.py``.

IMPL: ``asyncio``; ``ferroloop`` (installed here with ``ferroloop.install()``);
``ferroloop-cli`` (the runner itself runs under ``python -m ferroloop``).

Sleeps and timeouts are scaled by ``SEED_SCALE`` (default 0.05) the same way
for both loops, so the tutorials' multi-second waits take milliseconds while
their relative order is kept. ``random`` is seeded. On ferroloop the loop is
installed as asyncio's loop (as ``python -m ferroloop`` does) and the number of
ferroloop loops created is reported on stderr, so a run that silently used
another loop fails the test.
"""

from __future__ import annotations

import asyncio
import os
import random
import runpy
import sys
import time

SCALE = float(os.environ.get("SEED_SCALE", "0.05"))


def scaled(t):  # type: ignore[no-untyped-def]
    return None if t is None else t * SCALE


_sleep = asyncio.sleep


async def sleep(delay, result=None):  # type: ignore[no-untyped-def]
    return await _sleep(delay * SCALE, result)


_wait_for = asyncio.wait_for


async def wait_for(aw, timeout):  # type: ignore[no-untyped-def]
    return await _wait_for(aw, scaled(timeout))


_wait = asyncio.wait


async def wait(fs, *, timeout=None, return_when=asyncio.ALL_COMPLETED):  # type: ignore[no-untyped-def]
    return await _wait(fs, timeout=scaled(timeout), return_when=return_when)


_timeout = asyncio.timeout
_tsleep = time.sleep

asyncio.sleep = sleep
asyncio.wait_for = wait_for
asyncio.wait = wait
asyncio.timeout = lambda delay: _timeout(scaled(delay))  # type: ignore[assignment]
time.sleep = lambda s: _tsleep(s * SCALE)
random.seed(1234)

impl, path = sys.argv[1], sys.argv[2]
sys.argv = [path, *sys.argv[3:]]
created = [0]
if impl in ("ferroloop", "ferroloop-cli"):
    import ferroloop

    _init = ferroloop.Loop.__init__

    def counting_init(self):  # type: ignore[no-untyped-def]
        created[0] += 1
        _init(self)

    ferroloop.Loop.__init__ = counting_init  # type: ignore[method-assign]
    if impl == "ferroloop":
        ferroloop.install()
try:
    runpy.run_path(path, run_name="__main__")
finally:
    sys.stdout.flush()
    if impl != "asyncio":
        sys.stderr.write(f"\nFERROLOOP_LOOPS={created[0]}\n")
