"""Sort the AddressSanitizer / LeakSanitizer reports of `make memcheck`.

Usage: memcheck_reports.py REPORT_DIR. Reads every ``asan.<pid>`` file there
(one per process that reported), prints one line per finding and exits 1 if
any memory error was reported or any leak is ferroloop's; see docs/memcheck.md.

- A memory error (heap-buffer-overflow, use-after-free, ...) always counts,
  whoever's frame is on top: it is attributed to ferroloop when its first stack
  (where the bad access happened) has a ferroloop frame.
- A leak block counts against ferroloop when ferroloop's Rust code allocated
  it: the allocator's caller is Rust's allocator or ferroloop code, and a
  ferroloop frame is on the stack. Blocks that the interpreter allocated (frame
  #1 in CPython: Python objects, interpreter state) are CPython's exit-time
  leaks; those allocated on ferroloop's behalf are counted apart, for
  information (a missing Py_DECREF would show there, but so do objects alive at
  exit).
"""

from __future__ import annotations

import pathlib
import re
import sys

FERRO = re.compile(r"\b_?ferroloop(?:_core)?(?:::|\.\.|\.cpython)|\bnetbench::|memcheck_canary")
RUST_ALLOC = re.compile(r"alloc::alloc|__rust_|__rdl_|/library/alloc/|/library/std/")
FRAME = re.compile(r"^\s+#(\d+) 0x[0-9a-f]+ (.*)$", re.M)
LEAK_HEAD = re.compile(r"(?:Direct|Indirect) leak of ")


def frames(block: str) -> list[str]:
    """The frames of the first stack in ``block`` (up to the first blank line)."""
    first = block.split("\n\n", 1)[0]
    return [m.group(2) for m in FRAME.finditer(first)]


def main(report_dir: str) -> int:
    files = sorted(pathlib.Path(report_dir).glob("asan.*"))
    errors = errors_ours = leaks_ours = leaks_py_via_ours = leaks_other = 0
    for f in files:
        text = f.read_text(errors="replace")
        for m in re.finditer(r"ERROR: AddressSanitizer: ([^\n]*)", text):
            errors += 1
            stack = frames(text[m.end() :])
            ours = any(FERRO.search(fr) for fr in stack)
            errors_ours += ours
            kind = m.group(1).split(" on ")[0]
            print(f"  {f.name}: {kind} ({'ferroloop' if ours else 'not ferroloop'}: {stack[0] if stack else '?'})")
        blocks = [b for b in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text) if LEAK_HEAD.match(b)]
        if not blocks:
            continue
        mine = py_via = 0
        for b in blocks:
            stack = frames(b)
            via_ours = any(FERRO.search(fr) for fr in stack)
            rust_heap = len(stack) > 1 and bool(RUST_ALLOC.search(stack[1]) or FERRO.search(stack[1]))
            if via_ours and rust_heap:
                mine += 1
                print(f"  {f.name}: ferroloop leak: {b.splitlines()[0]}")
                for fr in stack[1:12]:
                    print(f"      {fr}")
            elif via_ours:
                py_via += 1
        leaks_ours += mine
        leaks_py_via_ours += py_via
        leaks_other += len(blocks) - mine - py_via
    print(
        f"  {len(files)} report file(s): {errors} memory error(s) ({errors_ours} in ferroloop); "
        f"leak stacks: {leaks_ours} ferroloop's, {leaks_py_via_ours} Python objects allocated through ferroloop "
        f"(information), {leaks_other} the interpreter's or other libraries'"
    )
    return 1 if errors or leaks_ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
