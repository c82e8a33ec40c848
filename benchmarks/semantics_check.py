"""Check two asyncio semantics that cost time, on every installed loop.

1. ``call_soon_threadsafe`` runs the callback in a *copy of the calling
   thread's context* (like ``call_soon``), so a ``ContextVar.set`` in one
   callback is invisible to the next.
2. A reference cycle through a handle (an object that keeps the timer handle
   whose callback refers back to it) is reclaimed by the garbage collector.

Both hold on asyncio. Skipping either makes a loop faster (no context copy per
callback; handles that are not GC objects), which is why the benchmark
comparison prints this next to its numbers.

usage: python benchmarks/semantics_check.py
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib.util
import threading
import weakref

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def factories():
    yield "asyncio", asyncio.SelectorEventLoop
    for name in ("ferroloop", "uvloop", "rloop", "veloxloop"):
        if importlib.util.find_spec(name):
            yield name, __import__(name).new_event_loop


def threadsafe_context(factory) -> bool:
    loop = factory()
    seen: list[str] = []

    def cb() -> None:
        seen.append(VAR.get())
        VAR.set("changed by callback")

    def thread() -> None:
        VAR.set("caller's value")
        loop.call_soon_threadsafe(cb)
        loop.call_soon_threadsafe(cb)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    loop.run_forever()
    loop.close()
    return seen == ["caller's value", "caller's value"]


def handle_cycle_collected(factory) -> bool:
    loop = factory()

    class Owner:
        pass

    async def main() -> weakref.ref[Owner]:
        o = Owner()
        o.timer = asyncio.get_running_loop().call_later(0, repr, o)  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        return weakref.ref(o)

    ref = loop.run_until_complete(main())
    loop.close()
    gc.collect()
    gc.collect()
    return ref() is None


def main() -> None:
    print(f"{'loop':10} {'threadsafe copies context':>26} {'handle cycles collected':>24}")
    for name, factory in factories():
        print(f"{name:10} {threadsafe_context(factory)!s:>26} {handle_cycle_collected(factory)!s:>24}")


if __name__ == "__main__":
    main()
