"""Run CPython's own test_asyncio against ferroloop.

Each module runs in its own process with ferroloop installed as asyncio's loop
factory (``ferroloop.install()``); test_events' loop-parametrised mixins are
bound to ``ferroloop.new_event_loop`` as an extra test class. A per-test
timeout (faulthandler) turns a hang into a failure of that module.

Accounting, per test:
- *applicable*: the test created at least one ferroloop loop and was not
  skipped. Every applicable test must pass.
- *not applicable (stdlib loop)*: the test built no ferroloop loop (it builds a
  stdlib loop directly, e.g. ``test_utils.TestLoop``, or tests a stdlib class
  without any loop). Detected automatically, not listed by hand.
- *excluded*: listed in ``EXCLUDED`` below, each with a written reason.
- *skipped*: skipped by CPython's own test (platform, resources).

Modules run two at a time (``--jobs``), as CPython's own ``-j`` runs them;
the table keeps the order below.

usage: conformance.py [--modules a,b] [--timeout S] [--jobs N] [--verbose]
exit status: 0 when every applicable test passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MODULES = [
    "test_tasks",
    "test_futures2",
    "test_locks",
    "test_queues",
    "test_taskgroups",
    "test_timeouts",
    "test_waitfor",
    "test_context",
    "test_threads",
    "test_events",
    "test_sock_lowlevel",
    "test_server",
    "test_buffered_proto",
    "test_sendfile",
    "test_streams",
    "test_sslproto",
    "test_ssl",
    "test_base_events",
    "test_selector_events",
    "test_unix_events",
    "test_protocols",
    "test_transports",
    "test_subprocess",
    "test_futures",
    "test_pep492",
    "test_runners",
    "test_eager_task_factory",  # 3.12+
    "test_staggered",  # 3.13+
]

# Concrete test classes that bind a loop-parametrised mixin to one stdlib
# selector loop: each gets a ferroloop twin (same tests, loop from
# ferroloop.new_event_loop). The epoll variant is the one to mirror.
SELECTOR_CLASSES = (
    "EPollEventLoopTests",
    "SelectorStartServerTests",
    "BufferedProtocolSelectorTests",
    "SelectorStartTLSTests",
)

# test id suffix -> reason. Only tests that cannot apply to a non-selector
# native loop belong here; a failing test that should pass is a bug, not an
# exclusion.
EXCLUDED: dict[str, str] = {}


def add_twins(suite: Any, mod: Any, module: str, prefix: str, make_loop: Callable[[Any], Any]) -> None:
    """Add to ``suite`` the module's selector-loop test classes once more, as
    ``prefix + name`` classes whose loops come from ``make_loop(self)``;
    for test_events, its event-loop mixin (Unix flavour where there is one)."""
    import unittest

    if module == "test_events":
        from test.test_asyncio import utils as test_utils

        mixin = getattr(mod, "UnixEventLoopTestsMixin", None) or mod.EventLoopTestsMixin
        bases: list[tuple[str, tuple[type, ...]]] = [("EventLoopTests", (mixin, test_utils.TestCase))]
    else:
        bases = [(name, (getattr(mod, name),)) for name in SELECTOR_CLASSES if getattr(mod, name, None) is not None]
    for name, parents in bases:
        attrs = {"create_event_loop": make_loop, "new_loop": make_loop, "__module__": mod.__name__}
        twin = type(prefix + name, parents, attrs)
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(twin))


def flatten(s: Any) -> Iterator[Any]:
    """The tests of a suite of suites."""
    import unittest

    for t in s:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def worker(module: str, timeout: float) -> None:
    import asyncio
    import faulthandler
    import unittest
    from asyncio import base_events

    import ferroloop

    counts = {"ferro": 0, "stdlib": 0}
    orig_init = base_events.BaseEventLoop.__init__

    def counting_init(self, *a, **kw):  # type: ignore[no-untyped-def]
        counts["ferro" if isinstance(self, ferroloop.Loop) else "stdlib"] += 1
        orig_init(self, *a, **kw)

    base_events.BaseEventLoop.__init__ = counting_init  # type: ignore[method-assign]
    ferroloop.install()

    mod = __import__(f"test.test_asyncio.{module}", fromlist=["*"])
    suite = unittest.defaultTestLoader.loadTestsFromModule(mod)

    add_twins(suite, mod, module, "Ferroloop", lambda self: ferroloop.new_event_loop())

    out = sys.stdout

    class Result(unittest.TestResult):
        def startTest(self, test):  # type: ignore[no-untyped-def]
            counts["ferro"] = counts["stdlib"] = 0
            self._outcome = "passed"
            self._detail = ""
            faulthandler.dump_traceback_later(timeout, exit=True)
            super().startTest(test)

        def stopTest(self, test):  # type: ignore[no-untyped-def]
            faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)
            rec = {
                "id": test.id(),
                "outcome": self._outcome,
                "ferro": counts["ferro"],
                "stdlib": counts["stdlib"],
                "detail": self._detail[-1500:],
            }
            out.write("RESULT " + json.dumps(rec) + "\n")
            out.flush()

        def addError(self, test, err):  # type: ignore[no-untyped-def]
            if not hasattr(test, "_testMethodName"):
                # A class or module fixture failed (unittest's _ErrorHolder):
                # no test of it ran, so report it as one failure.
                rec = {"id": str(test), "outcome": "error", "ferro": 1, "stdlib": 0, "detail": str(err[1])[-1500:]}
                out.write("RESULT " + json.dumps(rec) + "\n")
                return
            self._outcome, self._detail = "error", self._exc_info_to_string(err, test)

        def addFailure(self, test, err):  # type: ignore[no-untyped-def]
            self._outcome, self._detail = "failed", self._exc_info_to_string(err, test)

        def addSkip(self, test, reason):  # type: ignore[no-untyped-def]
            self._outcome, self._detail = "skipped", reason

        def addExpectedFailure(self, test, err):  # type: ignore[no-untyped-def]
            self._outcome = "passed"

        def addUnexpectedSuccess(self, test):  # type: ignore[no-untyped-def]
            self._outcome, self._detail = "failed", "unexpected success"

        def addSubTest(self, test, subtest, err):  # type: ignore[no-untyped-def]
            if err is not None:
                kind = "failed" if issubclass(err[0], test.failureException) else "error"
                self._outcome, self._detail = kind, f"{subtest}: " + self._exc_info_to_string(err, test)

    result = Result()
    selected = []
    for test in flatten(suite):
        tid = test.id()
        reason = next((r for k, r in EXCLUDED.items() if tid.endswith(k)), None)
        if reason is not None:
            out.write("RESULT " + json.dumps({"id": tid, "outcome": "excluded", "detail": reason}) + "\n")
            continue
        selected.append(test)
    # A suite (not test by test) so that setUpClass/setUpModule fixtures run.
    unittest.TestSuite(selected).run(result)
    asyncio.set_event_loop_policy(None)


def run_worker(module: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # A scratch directory per module: the tests' files (os_helper.TESTFN)
    # stay out of the checkout even when a worker is killed.
    with tempfile.TemporaryDirectory(prefix="ferroloop-conformance-") as scratch:
        return subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", module, "--timeout", str(timeout)],
            capture_output=True,
            text=True,
            cwd=scratch,
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modules", default=",".join(MODULES))
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=2, help="modules run at once (default 2)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.timeout)
        return 0

    print(f"CPython {sys.version.split()[0]} test_asyncio against ferroloop")
    header = (
        f"{'module':16} {'applicable':>10} {'passed':>7} {'failed':>7} {'n/a':>5} {'excluded':>8} {'skipped':>7}  time"
    )
    print(header)
    print("-" * len(header))
    total_fail = 0
    totals = [0, 0, 0, 0, 0, 0]
    failures: list[tuple[str, str]] = []
    retried: list[tuple[str, int, str]] = []

    Outcome = tuple[subprocess.CompletedProcess[str] | None, float, tuple[int, str] | None]

    def run_module(module: str) -> Outcome:
        """(the worker's result or None when the module does not exist, seconds, why a first run was retried)."""
        if importlib.util.find_spec(f"test.test_asyncio.{module}") is None:
            return None, 0.0, None
        t0 = time.time()
        proc = run_worker(module, args.timeout)
        why = None
        if proc.returncode != 0:
            # A worker that died (a test hung past the timeout, or crashed)
            # runs once more: CPython's own tests have timing-dependent hangs
            # on the stdlib loop under load (test_runners' SIGINT tests). A
            # failure that repeats counts; one that does not is reported.
            tail = (proc.stderr or "").strip().splitlines()[-12:]
            retry = run_worker(module, args.timeout)
            if retry.returncode == 0:
                why = (proc.returncode, "\n".join(tail))
                proc = retry
        return proc, time.time() - t0, why

    modules = args.modules.split(",")
    pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
    # Rows print in the modules' order, each as soon as it and those before it are done.
    for module, (maybe_proc, elapsed, why) in zip(modules, pool.map(run_module, modules), strict=True):
        if maybe_proc is None:
            print(f"{module:16} (not in this Python's test suite)")
            continue
        proc = maybe_proc
        if why is not None:
            retried.append((module, *why))
        recs = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        applicable = passed = failed = na = excluded = skipped = 0
        for r in recs:
            if r["outcome"] == "excluded":
                excluded += 1
            elif r["outcome"] == "skipped":
                skipped += 1
            elif not r["ferro"]:
                na += 1
            else:
                applicable += 1
                if r["outcome"] == "passed":
                    passed += 1
                else:
                    failed += 1
                    failures.append((r["id"], r["detail"]))
        if proc.returncode != 0:
            failed += 1
            tail = (proc.stderr or "").strip().splitlines()[-12:]
            failures.append((f"{module} (process exit {proc.returncode})", "\n".join(tail)))
        total_fail += failed
        for i, v in enumerate((applicable, passed, failed, na, excluded, skipped)):
            totals[i] += v
        print(
            f"{module:16} {applicable:>10} {passed:>7} {failed:>7} {na:>5} {excluded:>8} {skipped:>7}  {elapsed:.1f}s",
            flush=True,
        )
    pool.shutdown()
    print("-" * len(header))
    print(f"{'total':16} {totals[0]:>10} {totals[1]:>7} {totals[2]:>7} {totals[3]:>5} {totals[4]:>8} {totals[5]:>7}")
    pct = 100.0 * totals[1] / totals[0] if totals[0] else 0.0
    print(f"applicable tests passing: {totals[1]}/{totals[0]} ({pct:.1f}%)")
    for tid, detail in failures:
        print(f"\nFAIL {tid}")
        if args.verbose or len(failures) <= 30:
            print("   " + detail.replace("\n", "\n   ")[-1200:])
    for module, code, detail in retried:
        print(f"\nRETRIED {module}: the first worker exited with {code}, the second run passed")
        print("   " + detail.replace("\n", "\n   ")[-1200:])
    print(f"\nconformance: {totals[1]} passed, {totals[2]} failed")
    return 1 if total_fail else 0


if __name__ == "__main__":
    sys.exit(main())
