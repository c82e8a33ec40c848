"""CPython's test_asyncio on several event loops: the compatibility matrix.

``scripts/conformance.py`` checks ferroloop alone. This script runs the same
modules of CPython's ``test.test_asyncio`` with another loop installed in the
same way (asyncio's own, ferroloop, uvloop, rloop), writes every test's
outcome as JSON, and renders ``docs/compatibility-matrix.md`` from those
files.

How one loop is installed: its project's own event loop policy class
(``asyncio.DefaultEventLoopPolicy``, ``ferroloop.EventLoopPolicy``,
``uvloop.EventLoopPolicy``, ``rloop.EventLoopPolicy``), subclassed to count
the loops its ``_loop_factory`` makes. The loop-parametrised test classes get
a twin bound to the loop's ``new_event_loop`` as in conformance.py (the twins
have the same ids for every loop).

Accounting. A test is *applicable* when, in the run on asyncio's own loop,
it made at least one loop through the policy or a twin and was not skipped:
the tests that exercise "the event loop" rather than one of asyncio's classes
built directly (``test_utils.TestLoop``, ``SelectorEventLoop(...)``, handles,
futures, policies without a loop). The same applicable set is the
denominator for every loop; a loop's count is how many of those tests passed
on it. A test that hangs past the per-test timeout, or kills the interpreter,
is recorded as such and the module resumes after it in a new process, so a
hang or a crash costs one test, not the module.

Two rates come out of one run: *adapted*, where two places of CPython's test
scaffolding that reach into asyncio's own classes let a foreign loop or
policy through (see ``worker``), and *as written*, where a test that needed
that counts as the error the unchanged scaffolding raises.

usage:
  conformance_matrix.py run --loop LOOP --json PATH [--modules a,b] [--timeout S] [--module-budget S]
  conformance_matrix.py render --out docs/compatibility-matrix.md JSON...
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from conformance import EXCLUDED, MODULES, add_twins, flatten  # noqa: E402

LOOPS = ("asyncio", "ferroloop", "uvloop", "rloop")
REFERENCE = "asyncio"
# Twin classes are named after this, whatever the loop: a test's id is the
# same in every loop's run.
TWIN = "LoopUnderTest"


def loop_impl(name: str) -> tuple[Any, Any, str]:
    """(policy class, loop factory, version) of one implementation."""
    import asyncio
    import warnings

    if name == "asyncio":
        return asyncio.DefaultEventLoopPolicy, asyncio.SelectorEventLoop, platform.python_version()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.EventLoopPolicy, ferroloop.new_event_loop, ferroloop.__version__
    if name == "uvloop":
        import uvloop

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return uvloop.EventLoopPolicy, uvloop.new_event_loop, uvloop.__version__
    if name == "rloop":
        import rloop

        return rloop.EventLoopPolicy, rloop.new_event_loop, rloop.__version__
    raise SystemExit(f"unknown loop {name!r}: one of {', '.join(LOOPS)}")


# --------------------------------------------------------------------------
# worker: one module (from test index --skip on) in this process


def worker(module: str, loop_name: str, timeout: float, skip: int) -> None:
    import asyncio
    import faulthandler
    import unittest
    import warnings

    # Python's own SIGINT handler, as in a program started from a terminal: a
    # background job inherits SIGINT ignored, and the tests of Ctrl-C
    # (test_runners) then hang on every loop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from test.test_asyncio import utils as test_utils

    policy_cls, factory, _ = loop_impl(loop_name)
    made = [0]
    adapted: set[str] = set()

    def counting_factory():  # type: ignore[no-untyped-def]
        made[0] += 1
        return factory()

    # CPython's test scaffolding (not the tests' own checks) reaches into
    # asyncio's classes in two places, and a loop or policy that is not
    # asyncio's fails there before or after the test proper:
    # - test_utils.TestCase.close_loop (every test's loop teardown) reads
    #   loop._default_executor;
    # - test setUps (test_events' UnixEventLoopTestsMixin, test_subprocess'
    #   SubprocessWatcherMixin) install a child watcher through the policy
    #   (deprecated in 3.12), which uvloop's and rloop's policies do not
    #   implement.
    # This run lets both through (the executor is shut down with the public
    # shutdown_default_executor(); the watcher is only kept, for the test's
    # tearDown to take back, not used) and records each test that needed it:
    # the report derives the "as written" outcome (an error, as the unchanged
    # scaffolding raises) from the same run.
    class CountingPolicy(policy_cls):  # type: ignore[misc, valid-type]
        def _loop_factory(self):  # type: ignore[no-untyped-def]
            return counting_factory()

        def set_child_watcher(self, watcher):  # type: ignore[no-untyped-def]
            try:
                return super().set_child_watcher(watcher)
            except NotImplementedError:
                adapted.add("set_child_watcher")
                self.adapted_watcher = watcher

        def get_child_watcher(self):  # type: ignore[no-untyped-def]
            # The watcher this test installed, for its own tearDown (only
            # after an adapted set_child_watcher: the test counts as an error
            # as written already).
            try:
                return super().get_child_watcher()
            except NotImplementedError:
                if getattr(self, "adapted_watcher", None) is None:
                    raise
                return self.adapted_watcher

    orig_close_loop = test_utils.TestCase.close_loop

    def close_loop(loop):  # type: ignore[no-untyped-def]
        if not hasattr(loop, "_default_executor"):
            adapted.add("close_loop")
            if not loop.is_closed():
                loop.run_until_complete(loop.shutdown_default_executor())
            try:
                loop._default_executor = None
            except AttributeError:
                loop.close()
                return
        orig_close_loop(loop)

    test_utils.TestCase.close_loop = staticmethod(close_loop)

    # Installed once, before the module's tests, as ferroloop.install() at
    # start-up would (and as conformance.py does). A test that replaces the
    # policy (test_events' PolicyTests, test_runners) leaves asyncio's default
    # one to the tests after it, on every loop alike. (A module resumed after
    # a crash starts again with this policy: the one case where two loops'
    # runs of a test can differ in that respect.)
    policy = CountingPolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)

    mod = __import__(f"test.test_asyncio.{module}", fromlist=["*"])
    suite = unittest.defaultTestLoader.loadTestsFromModule(mod)

    add_twins(suite, mod, module, TWIN, lambda self: counting_factory())

    out = sys.stdout

    def emit(kind: str, payload: Any) -> None:
        out.write(f"{kind} {json.dumps(payload)}\n")
        out.flush()

    class Result(unittest.TestResult):
        def __init__(self) -> None:
            super().__init__()
            self._reset()

        def _reset(self) -> None:
            made[0] = 0
            adapted.clear()
            policy.adapted_watcher = None
            self._outcome, self._exc, self._detail = "passed", "", ""
            self._t0 = time.monotonic()

        def startTest(self, test):  # type: ignore[no-untyped-def]
            # (A skipped test gets stopTest without startTest on 3.12+.)
            self._reset()
            emit("START", getattr(test, "_matrix_index", -1))
            faulthandler.dump_traceback_later(timeout, exit=True)
            super().startTest(test)

        def stopTest(self, test):  # type: ignore[no-untyped-def]
            faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)
            emit(
                "RESULT",
                {
                    "id": test.id(),
                    "index": getattr(test, "_matrix_index", -1),
                    "outcome": self._outcome,
                    "loops": made[0],
                    "adapted": sorted(adapted),
                    "exc": self._exc,
                    "seconds": round(time.monotonic() - self._t0, 3),
                    "detail": self._detail[-1500:],
                },
            )
            self._reset()

        def _fail(self, kind, err, test, prefix=""):  # type: ignore[no-untyped-def]
            self._outcome, self._exc = kind, err[0].__name__
            self._detail = prefix + self._exc_info_to_string(err, test)

        def addError(self, test, err):  # type: ignore[no-untyped-def]
            if not hasattr(test, "_testMethodName"):
                # A class or module fixture failed (unittest's _ErrorHolder):
                # its tests never ran; the parent sees them as not reported.
                emit("FIXTURE", {"id": str(test), "exc": err[0].__name__, "detail": str(err[1])[-1500:]})
                return
            self._fail("error", err, test)

        def addFailure(self, test, err):  # type: ignore[no-untyped-def]
            self._fail("failed", err, test)

        def addSkip(self, test, reason):  # type: ignore[no-untyped-def]
            self._outcome, self._detail = "skipped", reason

        def addExpectedFailure(self, test, err):  # type: ignore[no-untyped-def]
            self._outcome = "passed"

        def addUnexpectedSuccess(self, test):  # type: ignore[no-untyped-def]
            self._outcome, self._exc, self._detail = "failed", "UnexpectedSuccess", "unexpected success"

        def addSubTest(self, test, subtest, err):  # type: ignore[no-untyped-def]
            if err is not None:
                kind = "failed" if issubclass(err[0], test.failureException) else "error"
                self._fail(kind, err, test, f"{subtest}: ")

    tests = []
    for test in flatten(suite):
        if any(test.id().endswith(k) for k in EXCLUDED):
            continue
        tests.append(test)
    for i, test in enumerate(tests):
        test._matrix_index = i
    emit("TOTAL", {"count": len(tests), "ids": [t.id() for t in tests]})
    # A suite (not test by test) so that setUpClass/setUpModule fixtures run.
    unittest.TestSuite(tests[skip:]).run(Result())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(None)


# --------------------------------------------------------------------------
# run: every module for one loop, resuming after hangs and crashes


def run_module(module: str, loop: str, timeout: float, budget: float) -> dict[str, Any]:
    t0 = time.monotonic()
    records: dict[int, dict[str, Any]] = {}
    fixtures: list[dict[str, Any]] = []
    notes: list[str] = []
    ids: list[str] = []
    skip = restarts = 0
    while True:
        remaining = budget - (time.monotonic() - t0)
        if remaining <= 0:
            notes.append(f"module budget of {budget:.0f}s spent: tests from #{skip} on not run")
            break
        with tempfile.TemporaryDirectory(prefix="ferroloop-matrix-") as scratch:
            out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
            with open(out_path, "w") as fo, open(err_path, "w") as fe:
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", module, "--loop", loop]
                cmd += ["--timeout", str(timeout), "--skip", str(skip)]
                work = os.path.join(scratch, "cwd")
                os.mkdir(work)
                proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=work, start_new_session=True)
                killed = False
                try:
                    rc = proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    killed = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
                # Whatever the tests started in their own sessions is theirs to
                # clean up; our session's leftovers go now.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            with open(out_path) as f:
                lines = f.read().splitlines()
            with open(err_path, errors="replace") as f:
                stderr = f.read()
        pending = None
        for line in lines:
            kind, _, payload = line.partition(" ")
            if kind == "TOTAL":
                ids = json.loads(payload)["ids"]
            elif kind == "START":
                pending = json.loads(payload)
            elif kind == "RESULT":
                rec = json.loads(payload)
                records[rec["index"]] = rec
                pending = None
            elif kind == "FIXTURE":
                fixtures.append(json.loads(payload))
        if not ids:
            notes.append(f"the module did not load (exit {rc}): {stderr.strip().splitlines()[-1:]}")
            break
        if pending is None and rc == 0 and not killed:
            break
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        if pending is None:
            # Died outside a test (fixture, teardown, interpreter exit).
            notes.append(f"process exit {rc} outside a test after #{max(records, default=-1)}: {tail[-300:]}")
            break
        if killed:
            outcome, detail = "timeout", f"module budget of {budget:.0f}s spent during this test"
        elif "Timeout (" in stderr:
            outcome, detail = "timeout", f"no result within {timeout:.0f}s:\n{tail}"
        else:
            outcome = "crash"
            detail = f"interpreter {'killed by signal ' + str(-rc) if rc < 0 else 'exited ' + str(rc)}:\n{tail}"
        records[pending] = {
            "id": ids[pending],
            "index": pending,
            "outcome": outcome,
            "loops": None,
            "exc": outcome,
            "seconds": None,
            "detail": detail[-1500:],
        }
        if killed:
            notes.append(f"module budget of {budget:.0f}s spent: tests after #{pending} not run")
            break
        restarts += 1
        skip = pending + 1
        if skip >= len(ids):
            break
    tests = [
        records.get(i, {"id": tid, "index": i, "outcome": "not run", "loops": None, "exc": "", "detail": ""})
        for i, tid in enumerate(ids)
    ]
    return {
        "status": "ran",
        "seconds": round(time.monotonic() - t0, 1),
        "restarts": restarts,
        "notes": notes,
        "fixture_errors": fixtures,
        "tests": tests,
    }


def cmd_run(args: argparse.Namespace) -> int:
    _, _, version = loop_impl(args.loop)
    started = datetime.datetime.now().astimezone()
    modules = args.modules.split(",")
    result: dict[str, Any] = {
        "meta": {
            "loop": args.loop,
            "loop_version": version,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "started": started.isoformat(timespec="seconds"),
            "timeout": args.timeout,
            "module_budget": args.module_budget,
            "command": " ".join(["scripts/conformance_matrix.py", *sys.argv[1:]]),
        },
        "modules": {},
    }
    print(f"CPython {platform.python_version()} test_asyncio on {args.loop} {version}", flush=True)
    t0 = time.monotonic()
    for module in modules:
        if importlib.util.find_spec(f"test.test_asyncio.{module}") is None:
            result["modules"][module] = {"status": "missing"}
            print(f"{module:24} (not in this Python's test suite)", flush=True)
            continue
        m = run_module(module, args.loop, args.timeout, args.module_budget)
        result["modules"][module] = m
        c = collections.Counter(t["outcome"] for t in m["tests"])
        summary = " ".join(f"{k}={v}" for k, v in sorted(c.items()))
        print(f"{module:24} {m['seconds']:7.1f}s  {summary}  {'; '.join(m['notes'])}", flush=True)
    result["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.loop}: {result['meta']['seconds']:.0f}s, results in {args.json}", flush=True)
    return 0


# --------------------------------------------------------------------------
# render: the markdown page


TOP_MESSAGES = 8


def last_line(detail: str) -> str:
    """The exception line of a traceback, with object addresses and ports made alike."""
    lines = [ln.strip() for ln in detail.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "?"
    line = re.sub(r"0x[0-9a-f]+", "0x…", line)
    line = re.sub(r"\b\d{4,}\b", "N", line)
    return line.replace("`", "'")[:160]


def pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f} %" if d else "—"


ADAPTED_AS_WRITTEN = {
    "set_child_watcher": "NotImplementedError (set_child_watcher)",
    "close_loop": "AttributeError (close_loop)",
}


def verdict(t: dict[str, Any], as_written: bool) -> tuple[str, str]:
    """(outcome, what ended it) of one test record, in the adapted run or as written."""
    o = t["outcome"]
    adapted = t.get("adapted") or []
    if as_written and adapted and o not in ("timeout", "crash", "not run", "skipped"):
        first = "set_child_watcher" if "set_child_watcher" in adapted else "close_loop"
        return "error", ADAPTED_AS_WRITTEN[first]
    return o, t.get("exc") or o


def cmd_render(args: argparse.Namespace) -> int:
    runs: dict[str, dict[str, Any]] = {}
    for path in args.json:
        with open(path) as f:
            data = json.load(f)
        runs[data["meta"]["loop"]] = data
    if REFERENCE not in runs:
        raise SystemExit(f"the {REFERENCE} run is the reference: pass its JSON too")
    loops = [lp for lp in LOOPS if lp in runs]
    ref = runs[REFERENCE]
    pythons = {r["meta"]["python"] for r in runs.values()}
    if len(pythons) != 1:
        raise SystemExit(f"runs from different Pythons: {sorted(pythons)}")
    python = pythons.pop()

    def outcomes(loop: str, module: str) -> dict[str, dict[str, Any]]:
        m = runs[loop]["modules"].get(module, {})
        return {t["id"]: t for t in m.get("tests", [])}

    modes = (False, True)  # adapted, as written
    rows: list[tuple[str, Any]] = []
    totals = {(lp, aw): collections.Counter() for lp in loops for aw in modes}
    kinds = {lp: collections.Counter() for lp in loops}
    messages = {lp: collections.Counter() for lp in loops}
    needed = {lp: collections.Counter() for lp in loops}
    ferro_fail: list[tuple[str, str, str]] = []
    mismatches: list[tuple[str, str, int]] = []
    na_total = applicable_total = 0
    for module, mref in ref["modules"].items():
        if mref.get("status") != "ran":
            rows.append((module, None))
            continue
        applicable = [
            t["id"] for t in mref["tests"] if t["outcome"] not in ("skipped", "not run") and (t["loops"] or 0) > 0
        ]
        na = sum(1 for t in mref["tests"] if t["outcome"] != "skipped" and t["loops"] == 0)
        na_total += na
        applicable_total += len(applicable)
        cells: dict[tuple[str, bool], tuple[collections.Counter, list[str]]] = {}
        for lp in loops:
            res = outcomes(lp, module)
            notes = runs[lp]["modules"].get(module, {}).get("notes", [])
            for aw in modes:
                c: collections.Counter = collections.Counter()
                for tid in applicable:
                    t = res.get(tid, {"id": tid, "outcome": "not run", "exc": ""})
                    o, exc = verdict(t, aw)
                    c[o] += 1
                    if aw:
                        continue
                    for name in t.get("adapted") or []:
                        needed[lp][name] += 1
                    if o != "passed":
                        kinds[lp][exc] += 1
                        if o in ("failed", "error"):
                            messages[lp][last_line(t.get("detail", ""))] += 1
                        if lp == "ferroloop":
                            ferro_fail.append((tid, o, exc))
                totals[lp, aw].update(c)
                cells[lp, aw] = (c, notes)
        rows.append((module, (len(applicable), na, cells)))
        # The applicable set is a property of the test, not of the loop: a
        # test that made a loop under another implementation but not under
        # asyncio's would mean the runs are not comparable. Say so.
        ref_ids = set(applicable) | {t["id"] for t in mref["tests"] if t["outcome"] == "skipped"}
        for lp in loops:
            extra = [tid for tid, t in outcomes(lp, module).items() if (t["loops"] or 0) > 0 and tid not in ref_ids]
            if extra:
                mismatches.append((lp, module, len(extra)))

    def cell(c: collections.Counter, n: int, notes: list[str]) -> str:
        s = f"{c['passed']}/{n} ({pct(c['passed'], n)})" if n else "—"
        extra = [f"{c[k]} {k}" for k in ("timeout", "crash", "not run", "skipped") if c[k]]
        if notes:
            extra.append("see notes")
        return s + (f", {', '.join(extra)}" if extra else "")

    meta = {lp: runs[lp]["meta"] for lp in loops}
    out: list[str] = []
    w = out.append
    w("# Compatibility matrix: CPython's test_asyncio on each loop")
    w("")
    w("<!-- Generated by scripts/conformance_matrix.py render; do not edit by hand. -->")
    w("")
    w(
        f"CPython {python}'s own `test.test_asyncio`, module by module, with each event loop "
        "installed as asyncio's loop: how many of the applicable tests pass. asyncio's own loop "
        "is the reference: the test suite is its specification, and it passes on it by definition "
        "(its row checks the harness). The same tests are counted for every loop."
    )
    w("")
    w("Generated with `make conformance-matrix`, which runs, for each loop,")
    w("")
    w("| loop | version | run started | run time | command |")
    w("|---|---|---|---|---|")
    for lp in loops:
        m = meta[lp]
        w(f"| {lp} | {m['loop_version']} | {m['started']} | {m['seconds']:.0f} s | `{m['command']}` |")
    w("")
    w("and then `scripts/conformance_matrix.py render` on the four JSON files.")
    m0 = meta[REFERENCE]
    w(
        f"Machine: {m0['platform']}, {m0['cpus']} CPUs, CPython {python}. Per-test timeout "
        f"{m0['timeout']:.0f} s; each module at most {m0['module_budget']:.0f} s per loop."
    )
    w("")
    w("## Summary")
    w("")
    w(
        "Two rates per loop. **Adapted**: CPython's test scaffolding lets a loop through where it "
        "reaches into asyncio's own classes rather than testing the loop (see "
        "[How it is counted](#how-it-is-counted)); this is the fair comparison of behaviour. "
        "**As written**: the test suite unchanged, where those places are errors."
    )
    w("")
    w(
        "| loop | applicable tests | passed | failed | error | timeout | crash | skipped or not run "
        "| pass rate, adapted | pass rate, as written |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    for lp in loops:
        c, cw = totals[lp, False], totals[lp, True]
        n = sum(c.values())
        w(
            f"| {lp} | {n} | {c['passed']} | {c['failed']} | {c['error']} | {c['timeout']} | {c['crash']} "
            f"| {c['not run'] + c['skipped']} | **{pct(c['passed'], n)}** | {pct(cw['passed'], n)} |"
        )
    w("")
    w(
        f"Applicable: {applicable_total} tests. Another {na_total} tests of the same modules make no "
        "loop through the policy or a twin class: white-box tests of asyncio's own classes "
        "(`test_utils.TestLoop`, `SelectorEventLoop(...)` built directly, handles, futures, "
        "policies). They are not counted for any loop; CPython's own skips are left out too."
    )
    w("")
    for aw, title in ((False, "Per module, adapted"), (True, "Per module, as written")):
        w(f"## {title}")
        w("")
        w("| module | applicable | n/a | " + " | ".join(loops) + " |")
        w("|---|---|---|" + "---|" * len(loops))
        for module, data in rows:
            if data is None:
                continue
            n, na, cells = data
            w(
                f"| {module} | {n} | {na} | "
                + " | ".join(cell(cells[lp, aw][0], n, cells[lp, aw][1]) for lp in loops)
                + " |"
            )
        w("")
        missing = [module for module, data in rows if data is None]
        if missing:
            w(f"Not in CPython {python}'s test suite: {', '.join(missing)}.")
            w("")
    w("## What the failures are")
    w("")
    w(
        "Applicable tests that did not pass in the adapted run, by what ended them (an exception "
        "class; `timeout`: no result within the per-test timeout; `crash`: the interpreter died; "
        "`not run`: a class fixture failed or the module's time budget ran out first; `skipped`: "
        "skipped on this loop only)."
    )
    w("")
    for lp in loops:
        parts = ", ".join(f"{k} {v}" for k, v in kinds[lp].most_common()) or "none"
        w(f"- **{lp}**: {parts}")
    w("")
    w("Applicable tests that needed the scaffolding adapted (each fails as written):")
    w("")
    for lp in loops:
        parts = ", ".join(f"`{k}` {v}" for k, v in needed[lp].most_common()) or "none"
        w(f"- **{lp}**: {parts}")
    w("")
    common = [lp for lp in loops if messages[lp]]
    if common:
        w("The most frequent final lines of the failed tests' tracebacks (adapted run):")
        w("")
        for lp in common:
            w(f"**{lp}**")
            w("")
            for msg, n in messages[lp].most_common(TOP_MESSAGES):
                w(f"- {n} × `{msg}`")
            w("")
    notes = [(lp, mod, note) for lp in loops for mod, m in runs[lp]["modules"].items() for note in m.get("notes", [])]
    fixture_errors = [
        (lp, mod, fx) for lp in loops for mod, m in runs[lp]["modules"].items() for fx in m.get("fixture_errors", [])
    ]
    if notes or fixture_errors or mismatches:
        w("## Notes")
        w("")
        for lp, mod, n in mismatches:
            w(f"- {lp}, {mod}: {n} tests made a {lp} loop but no loop in asyncio's run (not counted)")
        for lp, mod, note in notes:
            w(f"- {lp}, {mod}: {note.splitlines()[0][:300]}")
        for lp, mod, fx in fixture_errors:
            w(f"- {lp}, {mod}: fixture `{fx['id']}` failed ({fx['exc']}): its tests did not run")
        w("")
    if "ferroloop" in loops and ferro_fail:
        w("## ferroloop's failures")
        w("")
        for tid, o, exc in ferro_fail:
            w(f"- `{tid}`: {o} ({exc})")
        w("")
    w("## How it is counted")
    w("")
    w(
        "Each module runs in its own interpreter per loop. The loop is installed with its project's "
        "own event loop policy class (`asyncio.DefaultEventLoopPolicy`, `ferroloop.EventLoopPolicy`, "
        "`uvloop.EventLoopPolicy`, `rloop.EventLoopPolicy`), subclassed to count the loops it makes. "
        "The loop-parametrised test classes (test_events' `UnixEventLoopTestsMixin`, and "
        "`EPollEventLoopTests`-style classes of the other modules, which bind a mixin to asyncio's "
        "selector loop) get a twin whose loop comes from the loop's `new_event_loop`, as in "
        "`make conformance` ([Conformance](conformance.md))."
    )
    w("")
    w(
        "A test is applicable when, in the run on asyncio's loop, it made at least one loop through "
        "that policy or a twin and CPython did not skip it. The same set is every loop's denominator. "
        "A test that hangs is stopped after the per-test timeout; a hang or a crash ends that test "
        "only: the module resumes after it in a fresh interpreter."
    )
    w("")
    w(
        "The adaptations, both in CPython's test scaffolding rather than in any test's own checks: "
        "`test_utils.TestCase.close_loop`, which closes every test's loop, reads "
        "`loop._default_executor` (the adapted run shuts the executor down with the public "
        "`loop.shutdown_default_executor()` when the attribute is missing); and the setUp of "
        "test_events' `UnixEventLoopTestsMixin` and test_subprocess' watcher mixins installs a "
        "child watcher through the policy, which uvloop's and rloop's policies do not implement "
        "(child watchers are deprecated since 3.12; the adapted policy keeps the watcher for the "
        "test's tearDown to take back, and does not use it). Each test records whether it needed "
        "either; its as-written outcome is the error the unchanged scaffolding raises. Everything "
        "else a test checks counts as written, including private attributes of asyncio's loop and "
        "transports (`_run_once`, `_stop_serving`, ...), `isinstance` checks against asyncio's "
        "classes, mocks of asyncio's internals and exact messages: a loop that differs there "
        "differs for code that relies on them. A test CPython skips on one loop only (for "
        'example "loop is not a BaseSelectorEventLoop") counts as not passed on that loop and is '
        "shown as skipped."
    )
    w("")
    w(
        "Every test's outcome and traceback are in the JSON files (`target/conformance-<loop>-"
        "<python>.json`) after a run; `make conformance` is the check CI applies to ferroloop."
    )
    w("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    if "--worker" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--worker", required=True)
        ap.add_argument("--loop", required=True)
        ap.add_argument("--timeout", type=float, required=True)
        ap.add_argument("--skip", type=int, default=0)
        a = ap.parse_args()
        worker(a.worker, a.loop, a.timeout, a.skip)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the modules on one loop, write JSON")
    r.add_argument("--loop", required=True, choices=LOOPS)
    r.add_argument("--json", required=True, help="output file, e.g. target/conformance-uvloop-3.12.json")
    r.add_argument("--modules", default=",".join(MODULES))
    r.add_argument("--timeout", type=float, default=60.0, help="per test (seconds)")
    r.add_argument("--module-budget", type=float, default=1800.0, help="per module and loop (seconds)")
    g = sub.add_parser("render", help="write the markdown page from the JSON files")
    g.add_argument("--out", default="docs/compatibility-matrix.md")
    g.add_argument("json", nargs="+")
    args = ap.parse_args()
    return cmd_run(args) if args.cmd == "run" else cmd_render(args)


if __name__ == "__main__":
    sys.exit(main())
