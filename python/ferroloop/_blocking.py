"""``ferroloop.detect_blocking()``: report a callback that blocks the loop, while it blocks.

A native watchdog thread (``src/watchdog.rs``) watches the loop's pulse
without the GIL; when one callback or task step has run for ``threshold``
seconds it captures the loop thread's stack, the handle and the task, and
calls :meth:`BlockingDetector._on_report` from its own thread. Reports go to a
``handler`` or, by default, to the ``ferroloop`` logger as WARNINGs: one when
the blocking is seen, one when it ends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import math
import os
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import _ferroloop
from ._stats import check_loop

__all__ = ["BlockingDetector", "BlockingReport", "detect_blocking"]

logger = logging.getLogger("ferroloop")

ENV = "FERROLOOP_DETECT_BLOCKING"

# Set by ``python -m ferroloop --detect-blocking T``: every new loop gets a detector.
default_threshold: float | None = None

_LOOP_FILE = os.path.join(os.path.dirname(__file__), "_loop.py")


@dataclass(frozen=True)
class BlockingReport:
    """One blocking episode: what blocked, for how long, and where.

    ``seconds`` is how long it had blocked when seen (``finished=False``) or
    its whole duration (``finished=True``, the follow-up). ``frames`` and
    ``stack`` start at the callback (the loop's own frames are left out) and
    end at the line that blocks.
    """

    task: asyncio.Task[Any] | None
    handle: str
    seconds: float
    stack: str
    frames: tuple[traceback.FrameSummary, ...]
    finished: bool
    thread_id: int | None
    #: ``repr()`` of the task (or the handle) when the blocking was seen.
    blocker: str
    #: The ``contextvars.Context`` the blocked callback runs in (None if unknown).
    context: contextvars.Context | None = None

    @property
    def location(self) -> str:
        """``file:line`` of the blocking line (empty if no Python frame was running)."""
        if not self.frames:
            return ""
        f = self.frames[-1]
        return f"{f.filename}:{f.lineno}"

    def message(self) -> str:
        what = self.blocker
        if self.finished:
            where = f" at {self.location}" if self.location else ""
            return f"event loop was blocked for {self.seconds:.3f} seconds by {what}{where}; it runs again"
        head = f"event loop blocked for {self.seconds:.3f} seconds so far by {what}"
        if self.task is not None:
            head += f" (in {self.handle})"
        return head + ", stack (most recent call last):\n" + self.stack.rstrip("\n")


def _user_frames(raw: list[tuple[str, int, str]]) -> tuple[traceback.FrameSummary, ...]:
    """The frames above the loop's own (the callback's), outermost first."""
    start = 0
    for i, (filename, _, name) in enumerate(raw):
        if name == "run_forever" and filename == _LOOP_FILE:
            start = i + 1
    frames = raw[start:] or raw
    return tuple(traceback.FrameSummary(f, lineno, name) for f, lineno, name in frames)


class BlockingDetector:
    """A running watchdog on one loop; stop it with :meth:`stop` or use it as a context manager."""

    def __init__(self, threshold: float, loop: Any, handler: Callable[[BlockingReport], object] | None) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise TypeError(f"threshold must be a number of seconds, not {type(threshold).__name__}")
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a positive number of seconds, got {threshold!r}")
        if handler is not None and not callable(handler):
            raise TypeError("handler must be callable")
        self.threshold = float(threshold)
        self.loop = loop
        self._handler = handler
        self._open: dict[int, BlockingReport] = {}
        self._lock = threading.Lock()
        # The watchdog thread reaches this object only weakly: dropping the
        # detector stops it, and it never keeps the loop alive.
        me = weakref.ref(self)

        def report(*args: Any) -> None:
            detector = me()
            if detector is not None:
                detector._on_report(*args)

        self._watchdog = _ferroloop._Watchdog(loop, self.threshold, report, _current_task, sys._current_frames)
        _live.add(self)
        if asyncio._get_running_loop() is loop:
            # Started by a callback of the loop (the usual `with detect_blocking():`
            # in a coroutine): watch the rest of this callback too.
            self.loop._pulse_enter()

    @property
    def running(self) -> bool:
        return bool(self._watchdog.running)

    def stop(self) -> None:
        """Stop watching (waits for the watchdog thread; idempotent)."""
        self._watchdog.stop()

    def __enter__(self) -> BlockingDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<BlockingDetector threshold={self.threshold} {state}>"

    def _on_report(
        self, seq: int, seconds: float, handle: Any, task: Any, frames: Any, finished: bool
    ) -> None:  # called from the watchdog thread
        with self._lock:
            if finished:
                first = self._open.pop(seq, None)
                if first is None:
                    # Seen blocking, but it held the GIL until it ended: no stack.
                    report = BlockingReport(
                        task=None,
                        handle="<unknown handle>",
                        seconds=seconds,
                        stack="",
                        frames=(),
                        finished=True,
                        thread_id=getattr(self.loop, "_thread_id", None),
                        blocker="a callback that held the GIL until it ended (C code?)",
                    )
                else:
                    report = replace(first, seconds=seconds, finished=True)
            else:
                summary = _user_frames(list(frames))
                report = BlockingReport(
                    task=task,
                    handle=_safe_repr(handle),
                    seconds=seconds,
                    stack="".join(traceback.StackSummary.from_list(summary).format()),
                    frames=summary,
                    finished=False,
                    thread_id=getattr(self.loop, "_thread_id", None),
                    blocker=_safe_repr(task) if task is not None else _safe_repr(handle),
                    context=getattr(handle, "_context", None),
                )
                self._open[seq] = report
        if self._handler is None:
            logger.warning("%s", report.message())
            return
        try:
            self._handler(report)
        except Exception:
            logger.exception("the blocking-report handler %r failed", self._handler)


# Detectors still running, stopped at exit (before the interpreter finalizes,
# which their threads must not see).
_live: weakref.WeakSet[BlockingDetector] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for detector in list(_live):
        detector.stop()


def _safe_repr(obj: Any) -> str:
    if obj is None:
        return "<unknown handle>"
    try:
        return repr(obj)
    except Exception as e:  # a user __repr__ may fail
        return f"<{type(obj).__name__} (repr failed: {type(e).__name__})>"


# The C version where there is one: it runs no Python code, and the watchdog
# calls it while the loop thread must not move on.
_current_task = getattr(asyncio.tasks, "_c_current_task", asyncio.current_task)


def detect_blocking(
    threshold: float = 0.1, *, loop: Any = None, handler: Callable[[BlockingReport], object] | None = None
) -> BlockingDetector:
    """Watch ``loop`` (default: the running loop) for a callback or task step
    running longer than ``threshold`` seconds, and report it while it runs.

    Returns the running :class:`BlockingDetector` (also a context manager).
    """
    return BlockingDetector(threshold, check_loop(loop, "ferroloop.detect_blocking()"), handler)


def from_environment(loop: Any) -> BlockingDetector | None:
    """The detector ``--detect-blocking`` or ``FERROLOOP_DETECT_BLOCKING`` asks for a new loop."""
    threshold: float | None = default_threshold
    if threshold is None:
        value = os.environ.get(ENV)
        if not value:
            return None
        try:
            threshold = float(value)
            if not (threshold > 0 and math.isfinite(threshold)):
                raise ValueError
        except ValueError:
            warnings.warn(f"ignoring {ENV}={value!r}: not a positive number of seconds", RuntimeWarning, stacklevel=3)
            return None
    return BlockingDetector(threshold, loop, None)
