"""Run one workload on one loop in this (fresh) process; print a JSON line.

usage: worker.py LOOP WORKLOAD SIZE
"""

from __future__ import annotations

import gc
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import WORKLOADS


def make_loop(name: str):  # type: ignore[no-untyped-def]
    if name == "asyncio":
        import asyncio

        return asyncio.SelectorEventLoop()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    if name == "veloxloop":
        import veloxloop

        return veloxloop.new_event_loop()
    raise SystemExit(f"unknown loop {name}")


def main() -> None:
    name, workload, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fn = WORKLOADS[workload][0]
    import asyncio

    loop = make_loop(name)
    asyncio.set_event_loop(loop)
    gc.collect()
    try:
        dt, ops = fn(loop, size)
    finally:
        loop.close()
    print(json.dumps({"loop": name, "workload": workload, "seconds": dt, "ops": ops}))


if __name__ == "__main__":
    main()
