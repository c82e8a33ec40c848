"""The comparison of two runs: known deviations filtered, differences explained
(tests/test_fuzz_differential.py)."""

from __future__ import annotations

import copy
import sys
from typing import Any

from fuzz_env import Env
from fuzz_model import Example, Step

# ---------------------------------------------------------------------------
# Known deviations and the comparison.


_MISSING = object()


def argument(step: Step, index: int, name: str) -> Any:
    if len(step.args) > index:
        return step.args[index]
    return dict(step.kwargs).get(name, _MISSING)


def explain(example: Example, rec_a: dict[str, Any], rec_f: dict[str, Any]) -> Example | None:
    """The example with the calls that hit a known deviation which changes
    what happens next rewritten or dropped; None if there are none."""
    steps: list[Step] = []
    changed = False
    for i, step in enumerate(example.steps):
        if step.method.startswith("!"):
            steps.append(step)
            continue
        out_a, out_f = rec_a["steps"][i][1], rec_f["steps"][i][1]
        if out_a == out_f:
            steps.append(step)
            continue
        f_raised = out_f[0] == "raise"
        when = argument(step, 0, "when")
        if (
            step.method == "call_at"
            and not isinstance(when, int | float)
            and when not in (None, _MISSING)
            and f_raised
            and out_f[1] in ("TypeError", "OverflowError")
        ):
            # D-002: call_at converts the deadline to a float at once: where
            # asyncio accepts the call and fails later inside the loop,
            # ferroloop raises here. Compare the rest without this call.
            changed = True
            continue
        steps.append(step)
    return Example(example.closed, tuple(steps)) if changed else None


def reconcile(example: Example, rec_a: dict[str, Any], rec_f: dict[str, Any]) -> dict[str, Any]:
    """rec_f with the differences that known deviations explain (and that
    change nothing else) replaced by asyncio's. None is left: the last, D-009
    (argument-count errors worded as C's), was fixed; D-002 changes what
    follows and is handled by explain()."""
    del example, rec_a
    return copy.deepcopy(rec_f)


def run_isolated(impl: str, example: Example, *, dedupe: bool) -> dict[str, Any]:
    """One run; the interpreter-wide coroutine origin tracking a script leaves
    set (debug mode toggled around a loop that stops) is recorded, so both
    loops must leave the same, and then restored for the next run and test."""
    depth = sys.get_coroutine_origin_tracking_depth()
    try:
        rec = Env(impl, example, dedupe=dedupe).run()
        rec["origin_tracking_left"] = sys.get_coroutine_origin_tracking_depth() - depth
        return rec
    finally:
        sys.set_coroutine_origin_tracking_depth(depth)


def run_both(example: Example, *, dedupe: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    rec_a = run_isolated("asyncio", example, dedupe=dedupe)
    rec_f = run_isolated("ferroloop", example, dedupe=dedupe)
    return rec_a, rec_f


def check(example: Example, *, dedupe: bool = False) -> None:
    rec_a, rec_f = run_both(example, dedupe=dedupe)
    if rec_a == rec_f:
        return
    for _ in range(3):
        rewritten = explain(example, rec_a, rec_f)
        if rewritten is None:
            break
        example = rewritten
        rec_a, rec_f = run_both(example, dedupe=dedupe)
    rec_f = reconcile(example, rec_a, rec_f)
    assert rec_f == rec_a, describe_difference(example, rec_a, rec_f)


def describe_difference(example: Example, rec_a: dict[str, Any], rec_f: dict[str, Any]) -> str:
    lines = [f"asyncio and ferroloop differ on {example!r}"]
    for key in rec_a:
        a, f = rec_a[key], rec_f.get(key)
        if a == f:
            continue
        if isinstance(a, list) and isinstance(f, list):
            i = next((i for i, (x, y) in enumerate(zip(a, f, strict=False)) if x != y), min(len(a), len(f)))
            lines.append(f"{key}[{i}]:")
            lines.append(f"  asyncio:   {a[i] if i < len(a) else '<missing>'!r}")
            lines.append(f"  ferroloop: {f[i] if i < len(f) else '<missing>'!r}")
        else:
            lines.append(f"{key}:\n  asyncio:   {a!r}\n  ferroloop: {f!r}")
    return "\n".join(lines)
