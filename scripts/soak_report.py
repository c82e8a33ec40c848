"""Print the soak tests' figures (the JSON lines tests/soak/test_soak.py appends) as a table.

usage: python scripts/soak_report.py [target/soak-report.jsonl]
"""

from __future__ import annotations

import json
import os
import sys

MIB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def volume(res: dict) -> tuple[str, str]:
    """What the scenario pushed through: (count, bytes)."""
    st = res["stats"]
    if "connections" in st:
        return f"{st['connections']:,} conns", f"{st['bytes_echoed'] / MIB:,.0f} MiB"
    if "loops" in st:
        return f"{st['loops']:,} loops", "-"
    if "callbacks" in st:
        return f"{st['callbacks']:,} calls", "-"
    if "timers" in st:
        return f"{st['timers']:,} timers", "-"
    return str(res.get("size", "?")), "-"


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "soak-report.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        print(f"no soak report at {path}")
        return 0
    head = [
        "scenario",
        "impl",
        "python",
        "scale",
        "duration",
        "volume",
        "echoed",
        "RSS Δ",
        "peak RSS",
        "fds Δ",
        "threads Δ",
    ]
    table = [head]
    order = ["lifecycles", "tcp", "unix", "callbacks", "timers"]
    rows.sort(key=lambda r: (r["python"], order.index(r["scenario"]) if r["scenario"] in order else 99, r["impl"]))
    for r in rows:
        b, a = r["before"], r["after"]
        count, nbytes = volume(r)
        threads = f"{a['threads'] - b['threads']:+d} / {a['os_threads'] - b['os_threads']:+d}"
        table.append(
            [
                r["scenario"],
                r["impl"],
                r["python"],
                f"{r['scale']:g}",
                f"{r['duration']:.1f} s",
                count,
                nbytes,
                f"{(a['rss'] - b['rss']) / MIB:+.1f} MiB",
                f"{r['peak_rss'] / MIB:.0f} MiB",
                f"{a['fds'] - b['fds']:+d}",
                threads,
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print(f"soak report ({path}); threads Δ is Python / OS threads")
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
