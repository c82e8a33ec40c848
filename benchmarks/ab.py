"""Before/after: the scheduling workloads on this checkout's ferroloop and on a saved build.

usage: python benchmarks/ab.py BASE_DIR [--repeat N] [--scale F] [--workloads a,b]

BASE_DIR holds a ``ferroloop`` package (the Python files and the built
extension of the revision to compare against). Every (workload, build) pair
runs in a fresh process (benchmarks/worker.py), the two builds alternate
within each round, and the table shows medians and the ratio new / base.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import fmt_rate, print_table, run_one  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.base, "ferroloop")):
        raise SystemExit(f"{args.base} has no ferroloop package")
    builds = ["ferroloop", f"ferroloop@{os.path.abspath(args.base)}"]
    names = args.workloads.split(",")
    samples: dict[str, dict[str, list[float]]] = {w: {b: [] for b in builds} for w in names}
    for rep in range(args.repeat):
        print(f"round {rep + 1}/{args.repeat}", flush=True)
        for w in names:
            size = max(1, int(WORKLOADS[w][1] * args.scale))
            for b in builds if rep % 2 == 0 else builds[::-1]:
                r = run_one(b, w, size)
                if r is not None:
                    samples[w][b].append(r)
    rows = []
    for w in names:
        new, base = (statistics.median(samples[w][b]) if samples[w][b] else None for b in builds)
        ratio = f"{new / base:.3f}" if new and base else "—"
        rows.append([f"{w} ({WORKLOADS[w][2]})", fmt_rate(new), fmt_rate(base), ratio])
    print_table(["workload", "this checkout", "base", "× base"], rows)
    print(f"\nMedians of {args.repeat} rounds, the two builds alternating.")


if __name__ == "__main__":
    main()
