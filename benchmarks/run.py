"""Compare ferroloop with stdlib asyncio, uvloop, rloop and veloxloop.

Four groups. sched: in-process workloads (benchmarks/workloads.py WORKLOADS),
every (workload, loop) pair in a fresh process. net: servers on each loop
driven by the compiled netbench client (benchmarks/net/run.py,
benchmarks/README.md). proc: child processes (workloads.py PROC_WORKLOADS:
spawn rate, throughput through cat's pipes), run as sched's are.
obs: what ferroloop's statistics and blocking-call detector cost, ferroloop
against itself (docs/observability.md).
In all, pairs are interleaved and the whole round is repeated, so that
machine noise hits every loop alike. Prints medians and ratios, writes JSON
and PNG bar charts to benchmarks/results/ (bench-<date>.*, net-<date>.*,
proc-<date>.*); a full run's sched and net charts are also copied to
docs/assets/{bench,net}-latest.png.

usage: python benchmarks/run.py [--groups sched,net,proc,obs] [--repeat N] [--scale F] [--workloads a,b] [--loops a,b]
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
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from workloads import PIPE_CHUNK, PROC_WORKLOADS, SPAWN_CONCURRENCY, WORKLOADS  # noqa: E402

ALL_LOOPS = ["ferroloop", "asyncio", "uvloop", "rloop", "veloxloop"]
SCHEDULING = ["call_soon", "call_later", "call_soon_threadsafe", "sleep0", "future_roundtrip"]
GROUPS = ["sched", "net", "proc", "obs"]


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
    ap.add_argument("--groups", default=",".join(GROUPS), help="which groups to run: " + ", ".join(GROUPS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every workload size and network duration")
    ap.add_argument("--workloads", default=None, help="sched and proc group workloads (default: all of both)")
    ap.add_argument("--loops", default=",".join(ALL_LOOPS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()

    groups = args.groups.split(",")
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown groups {unknown}: use {', '.join(GROUPS)}")
    chosen = args.workloads.split(",") if args.workloads else None
    unknown = [w for w in chosen or [] if w not in WORKLOADS and w not in PROC_WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; known: {', '.join([*WORKLOADS, *PROC_WORKLOADS])}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    full = args.scale == 1.0 and args.loops == ",".join(ALL_LOOPS)
    if "sched" in groups:
        names = [w for w in chosen if w in WORKLOADS] if chosen else list(WORKLOADS)
        if names:
            run_sched(args, stamp, names)
            publish_chart(args, f"bench-{stamp}.png", "bench-latest.png", full and chosen is None)
    if "net" in groups:
        from net import run as net_run

        print("\n== network group ==", flush=True)
        argv = ["--repeat", str(args.repeat), "--scale", str(args.scale), "--loops", args.loops]
        net_run.main([*argv, "--out", args.out, "--stamp", stamp])
        publish_chart(args, f"net-{stamp}.png", "net-latest.png", full)
    if "proc" in groups:
        names = [w for w in chosen if w in PROC_WORKLOADS] if chosen else list(PROC_WORKLOADS)
        if names:
            run_proc(args, stamp, names)
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


def run_sched(args: argparse.Namespace, stamp: str, workloads: list[str]) -> None:
    print("== scheduling group ==", flush=True)
    run_rates(
        args,
        WORKLOADS,
        workloads,
        round_label="round",
        fmt=lambda w, x: fmt_rate(x),
        note="Operations per second, median of {repeat} interleaved runs; semaphore_sleep counts tasks "
        "per second of overhead over the ideal 10 ms rounds.",
        path=os.path.join(args.out, f"bench-{stamp}"),
        meta={"date": stamp},
        title="ferroloop vs peers",
    )


# The proc group: what a subprocess costs (spawn + wait of `true`, 8 at a
# time) and what a pipe pair through `cat` carries (MiB per second).
def fmt_proc(workload: str, x: float | None) -> str:
    if x is not None and workload == "pipe_cat":  # its operations are MiB
        return f"{x:.0f} MiB/s"
    return fmt_rate(x)


def run_proc(args: argparse.Namespace, stamp: str, workloads: list[str]) -> None:
    print("\n== process group ==", flush=True)
    run_rates(
        args,
        PROC_WORKLOADS,
        workloads,
        round_label="proc round",
        fmt=fmt_proc,
        note="Median of {repeat} interleaved runs: subprocess_spawn in spawns per second (create_subprocess_exec"
        f"('true') + wait, {SPAWN_CONCURRENCY} in flight), pipe_cat in MiB per second through cat's stdin and "
        f"stdout pipes ({PIPE_CHUNK // 1024} KiB writes).",
        path=os.path.join(args.out, f"proc-{stamp}"),
        meta={"date": stamp, "spawn_concurrency": SPAWN_CONCURRENCY, "pipe_chunk": PIPE_CHUNK},
        title="child processes: ferroloop vs peers",
    )


def run_rates(
    args: argparse.Namespace,
    table: dict[str, tuple[Any, int, str]],
    workloads: list[str],
    *,
    round_label: str,
    fmt: Callable[[str, float | None], str],
    note: str,
    path: str,
    meta: dict[str, Any],
    title: str,
) -> None:
    """Every (workload, loop) pair through worker.py, interleaved, args.repeat rounds;
    a table of medians and ratios, path.json (samples, medians) and path.png."""
    loops = [lp for lp in args.loops.split(",") if available(lp)]
    samples: dict[str, dict[str, list[float]]] = {w: {lp: [] for lp in loops} for w in workloads}
    for rep in range(args.repeat):
        print(f"{round_label} {rep + 1}/{args.repeat}", flush=True)
        for w in workloads:
            size = max(1, int(table[w][1] * args.scale))
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
                f"{w} ({table[w][2]})",
                *[fmt(w, m[lp]) for lp in loops],
                ratio("asyncio"),
                ratio("uvloop"),
                f"{fl / best:.2f}× {best_name}" if fl and best else "—",
            ]
        )
    print_table(head, rows)
    print("\n" + note.format(repeat=args.repeat))

    os.makedirs(args.out, exist_ok=True)
    meta = {
        **meta,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "scale": args.scale,
    }
    with open(path + ".json", "w") as f:
        json.dump({"meta": meta, "samples": samples, "median": med}, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(12 if len(workloads) > 3 else 9, 5))
        n = len(loops)
        for i, lp in enumerate(loops):
            vals = [(med[w][lp] or 0) / (med[w].get("asyncio") or 1) for w in workloads]
            ax.bar([k + i / (n + 1) for k in range(len(workloads))], vals, width=1 / (n + 1), label=lp)
        ax.set_xticks([k + (n - 1) / (2 * (n + 1)) for k in range(len(workloads))])
        ax.set_xticklabels(workloads, rotation=20)
        ax.set_ylabel("throughput × stdlib asyncio")
        ax.set_title(f"{title} (CPython {meta['python']}, {meta['cpus']} CPUs, {meta['date']})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path + ".png")
        print("chart:", path + ".png")
    except ImportError:
        print("matplotlib not installed: no chart")


if __name__ == "__main__":
    main()
