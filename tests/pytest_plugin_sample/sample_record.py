"""For the outer test: which loop each sample test (or fixture) ran on, and every outcome.

``record()`` appends a line to the file named by ``$FERROLOOP_SAMPLE_LOG``;
loaded as a plugin (``-p sample_record``) it also appends each test report.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any


def _write(entry: dict[str, Any]) -> None:
    path = os.environ.get("FERROLOOP_SAMPLE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def record(what: str = "test") -> None:
    """Note the running loop (if any) of the current test."""
    loop = asyncio._get_running_loop()
    cls = type(loop)
    current = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    _write({"test": current, "what": what, "loop": None if loop is None else f"{cls.__module__}.{cls.__qualname__}"})


def pytest_runtest_logreport(report: Any) -> None:
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    _write({"report": report.nodeid, "when": report.when, "outcome": outcome})
