"""Compare ferroloop with stdlib asyncio, uvloop, rloop and veloxloop.

Three groups. sched: in-process workloads (benchmarks/workloads.py), every
(workload, loop) pair in a fresh process. net: servers on each loop driven by
the compiled netbench client (benchmarks/net/run.py, benchmarks/README.md).
obs: what ferroloop's statistics and blocking-call detector cost, ferroloop
against itself (docs/observability.md).
In both, pairs are interleaved and the whole round is repeated, so that
machine noise hits every loop alike. Prints medians and ratios, writes JSON
and PNG bar charts to benchmarks/results/ (bench-<date>.* and net-<date>.*); a
full run's charts are also copied to docs/assets/{bench,net}-latest.png.

usage: python benchmarks/run.py [--groups sched,net,obs] [--repeat N] [--scale F] [--workloads a,b] [--loops a,b]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from workloads import WORKLOADS  # noqa: E402

ALL_LOOPS = ["ferroloop", "asyncio", "uvloop", "rloop", "veloxloop"]
SCHEDULING = ["call_soon", "call_later", "call_soon_threadsafe", "sleep0", "future_roundtrip"]


def available(name: str) -> bool:
    name = name.split("+")[0]  # a ferroloop variant (worker.VARIANTS)
    return name == "asyncio" or importlib.util.find_spec(name) is not None


def run_one(loop: str, workload: str, size: int) -> float | None:
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "worker.py"), loop, workload, str(size)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        what = "unsupported" if last.startswith("NotImplementedError") else "failed"
        sys.stderr.write(f"  {loop}/{workload} {what}: {last}\n")
        return None
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    return d["ops"] / d["seconds"]


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k/s"
    return f"{x:.0f}/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="sched,net,obs", help="which groups to run: sched, net, obs")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every workload size and network duration")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="sched group workloads")
    ap.add_argument("--loops", default=",".join(ALL_LOOPS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()

    groups = args.groups.split(",")
    unknown = [g for g in groups if g not in ("sched", "net", "obs")]
    if unknown:
        raise SystemExit(f"unknown groups {unknown}: use sched, net, obs")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    full = args.scale == 1.0 and args.loops == ",".join(ALL_LOOPS)
    if "sched" in groups:
        run_sched(args, stamp)
        publish_chart(args, f"bench-{stamp}.png", "bench-latest.png", full and args.workloads == ",".join(WORKLOADS))
    if "net" in groups:
        from net import run as net_run

        print("\n== network group ==", flush=True)
        argv = ["--repeat", str(args.repeat), "--scale", str(args.scale), "--loops", args.loops]
        net_run.main([*argv, "--out", args.out, "--stamp", stamp])
        publish_chart(args, f"net-{stamp}.png", "net-latest.png", full)
    if "obs" in groups and available("ferroloop"):
        run_obs(args, stamp)


# The README and the documentation site show the charts of the last full run
# (every loop, full sizes), copied here; a smoke or partial run leaves them.
DOCS_ASSETS = os.path.join(os.path.dirname(HERE), "docs", "assets")


def publish_chart(args: argparse.Namespace, name: str, latest: str, full: bool) -> None:
    src, dst = os.path.join(args.out, name), os.path.join(DOCS_ASSETS, latest)
    if not os.path.exists(src):
        return
    if not full:
        print(f"not a full run of every loop (--scale 1, default --loops/--workloads): {dst} left as it is")
        return
    os.makedirs(DOCS_ASSETS, exist_ok=True)
    shutil.copyfile(src, dst)
    print("chart for the README and the docs:", dst)


def print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print()
    print("| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |")


# The obs group: ferroloop without statistics, as it runs by default
# (counting), with every callback timed (after a first ferroloop.stats()), and
# with a blocking-call detector (worker.VARIANTS).
OBS_VARIANTS = ["ferroloop+nostats", "ferroloop", "ferroloop+timed", "ferroloop+detector"]
OBS_WORKLOADS = ["call_soon", "call_later", "sleep0"]
OBS_NET_ROWS = ["protocol-1k", "http"]


def run_obs(args: argparse.Namespace, stamp: str) -> None:
    print("\n== observability group: ferroloop without statistics, counting (default), timed, detector ==", flush=True)
    samples: dict[str, dict[str, list[float]]] = {w: {v: [] for v in OBS_VARIANTS} for w in OBS_WORKLOADS}
    for rep in range(args.repeat):
        print(f"obs round {rep + 1}/{args.repeat}", flush=True)
        for w in OBS_WORKLOADS:
            size = max(1, int(WORKLOADS[w][1] * args.scale))
            k = rep % len(OBS_VARIANTS)
            for v in OBS_VARIANTS[k:] + OBS_VARIANTS[:k]:
                r = run_one(v, w, size)
                if r is not None:
                    samples[w][v].append(r)
    med = {w: {v: (statistics.median(x) if x else None) for v, x in d.items()} for w, d in samples.items()}
    head = ["workload", *OBS_VARIANTS, *(f"{v.split('+')[-1]} × nostats" for v in OBS_VARIANTS[1:])]
    rows = []
    for w in OBS_WORKLOADS:
        m = med[w]
        base = m["ferroloop+nostats"]
        ratios = [f"{m[v] / base:.3f}" if m[v] and base else "—" for v in OBS_VARIANTS[1:]]
        rows.append([f"{w} ({WORKLOADS[w][2]})", *[fmt_rate(m[v]) for v in OBS_VARIANTS], *ratios])
    print_table(head, rows)
    print(f"\nOperations per second, median of {args.repeat} interleaved runs.")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"obs-{stamp}.json"), "w") as f:
        json.dump({"samples": samples, "median": med}, f, indent=1)
    from net import run as net_run

    argv = ["--repeat", str(args.repeat), "--scale", str(args.scale), "--loops", ",".join(OBS_VARIANTS)]
    net_run.main([*argv, "--rows", ",".join(OBS_NET_ROWS), "--out", args.out, "--stamp", f"obs-{stamp}"])


def run_sched(args: argparse.Namespace, stamp: str) -> None:
    print("== scheduling group ==", flush=True)
    loops = [lp for lp in args.loops.split(",") if available(lp)]
    workloads = args.workloads.split(",")
    samples: dict[str, dict[str, list[float]]] = {w: {lp: [] for lp in loops} for w in workloads}
    for rep in range(args.repeat):
        print(f"round {rep + 1}/{args.repeat}", flush=True)
        for w in workloads:
            size = max(1, int(WORKLOADS[w][1] * args.scale))
            order = loops[rep % len(loops) :] + loops[: rep % len(loops)]
            for lp in order:
                r = run_one(lp, w, size)
                if r is not None:
                    samples[w][lp].append(r)

    med = {w: {lp: (statistics.median(v) if v else None) for lp, v in d.items()} for w, d in samples.items()}
    peers = [lp for lp in loops if lp != "ferroloop"]
    head = ["workload", *loops, "× asyncio", "× uvloop", "vs best peer"]
    rows = []
    for w in workloads:
        m = med[w]
        fl = m.get("ferroloop")

        def ratio(other: str, fl: float | None = fl, m: dict[str, float | None] = m) -> str:
            o = m.get(other)
            return f"{fl / o:.2f}×" if fl and o else "—"

        best = max((m[p] for p in peers if m.get(p)), default=None)
        best_name = next((p for p in peers if m.get(p) == best), "")
        rows.append(
            [
                f"{w} ({WORKLOADS[w][2]})",
                *[fmt_rate(m[lp]) for lp in loops],
                ratio("asyncio"),
                ratio("uvloop"),
                f"{fl / best:.2f}× {best_name}" if fl and best else "—",
            ]
        )
    print_table(head, rows)
    print(
        "\nOperations per second, median of",
        args.repeat,
        "interleaved runs; semaphore_sleep counts tasks per second of overhead over the ideal 10 ms rounds.",
    )

    os.makedirs(args.out, exist_ok=True)
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "scale": args.scale,
    }
    with open(os.path.join(args.out, f"bench-{stamp}.json"), "w") as f:
        json.dump({"meta": meta, "samples": samples, "median": med}, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(12, 5))
        n = len(loops)
        for i, lp in enumerate(loops):
            vals = [(med[w][lp] or 0) / (med[w].get("asyncio") or 1) for w in workloads]
            ax.bar([k + i / (n + 1) for k in range(len(workloads))], vals, width=1 / (n + 1), label=lp)
        ax.set_xticks([k + (n - 1) / (2 * (n + 1)) for k in range(len(workloads))])
        ax.set_xticklabels(workloads, rotation=20)
        ax.set_ylabel("throughput × stdlib asyncio")
        ax.set_title(f"ferroloop vs peers (CPython {meta['python']}, {meta['cpus']} CPUs, {stamp})")
        ax.legend()
        fig.tight_layout()
        png = os.path.join(args.out, f"bench-{stamp}.png")
        fig.savefig(png)
        print("chart:", png)
    except ImportError:
        print("matplotlib not installed: no chart")


if __name__ == "__main__":
    main()
