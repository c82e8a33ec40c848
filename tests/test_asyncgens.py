"""Async generators: finalizer hooks installed by run_forever, shutdown_asyncgens."""

from __future__ import annotations

import asyncio
import sys


def test_shutdown_asyncgens_finalizes_open_generators(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append("closed")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        return g

    g = loop.run_until_complete(main())
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == ["closed"]
    del g


def test_asyncgen_hooks_installed_only_while_running(loop):
    before = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    assert seen[0].firstiter is not None and seen[0].firstiter != before.firstiter
    assert sys.get_asyncgen_hooks() == before


def test_async_generator_gc_finalized_by_loop(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            await asyncio.sleep(0)
            yield 2
        finally:
            finalized.append(1)

    async def main():
        g = agen()
        await g.__anext__()
        del g
        import gc

        gc.collect()
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    assert finalized == [1]
