"""Run one workload on one loop in this (fresh) process; print a JSON line.

usage: worker.py LOOP WORKLOAD SIZE
"""

from __future__ import annotations

import gc
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import PROC_WORKLOADS, WORKLOADS

# ferroloop with its observability switched one way or another (the "obs"
# group of run.py): the environment variables Loop() reads.
VARIANTS = {
    "ferroloop+nostats": {"FERROLOOP_STATS": "0"},  # no counting at all
    "ferroloop+timed": {"FERROLOOP_STATS": "1"},  # every callback timed, as after a first stats()
    "ferroloop+detector": {"FERROLOOP_DETECT_BLOCKING": "0.1"},  # a blocking-call detector watching
}


def base_name(name: str) -> str:
    """The loop a variant name runs (``ferroloop+timed`` -> ``ferroloop``), after setting its environment.

    ``ferroloop@DIR`` runs the ``ferroloop`` package found in DIR (a saved
    build, for before/after comparisons: benchmarks/ab.py).
    """
    if name in VARIANTS:
        os.environ.update(VARIANTS[name])
        return "ferroloop"
    if name.startswith("ferroloop@"):
        sys.path.insert(0, name.split("@", 1)[1])
        return "ferroloop"
    return name


def make_loop(name: str):  # type: ignore[no-untyped-def]
    name = base_name(name)
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
    fn = {**WORKLOADS, **PROC_WORKLOADS}[workload][0]
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
