"""``ferroloop.stats()``: a snapshot of what the loop counts as it runs.

The counting is native (``src/event_loop/stats.rs``) and always on; reading
builds the windows' sums. It may be read from any thread, with the loop
running or not (pass ``loop=`` from another thread).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from . import _ferroloop

__all__ = ["LoopLoad", "LoopStats", "SlowestCallback", "TimerLag", "stats"]


@dataclass(frozen=True, slots=True)
class LoopLoad:
    """Busy fraction of the loop (time running outside the poll) over the last 1 s and 10 s."""

    last_1s: float
    last_10s: float


@dataclass(frozen=True, slots=True)
class TimerLag:
    """How late timers fired after their deadline over the last 10 s, in seconds
    (percentiles within 9 %, ``max`` exact; all 0.0 when no timer fired)."""

    p50: float
    p99: float
    max: float
    samples: int


@dataclass(frozen=True, slots=True)
class SlowestCallback:
    """The longest callback of the last 10 s: its duration and its handle's repr."""

    seconds: float
    handle: str


@dataclass(frozen=True, slots=True)
class LoopStats:
    """A snapshot of one loop's statistics (see docs/observability.md)."""

    iterations: int
    callbacks_run: int
    ready: int
    timers: int
    fds: int
    transports: int
    bytes_read: int
    bytes_written: int
    busy_seconds: float
    idle_seconds: float
    load: LoopLoad
    lag: TimerLag
    slowest_callback: SlowestCallback | None
    slow_callbacks: int
    #: How long callbacks have been timed, in seconds: from the first read of
    #: the loop's statistics (or a detector, ``--stats``, ``FERROLOOP_STATS=1``)
    #: on. ``slow_callbacks`` and ``slowest_callback`` cover that time only.
    timed_for: float | None

    def summary(self) -> str:
        """A few lines for people (what ``python -m ferroloop --stats`` prints)."""
        slowest = (
            f"{self.slowest_callback.seconds * 1e3:.3f} ms {self.slowest_callback.handle}"
            if self.slowest_callback
            else "-"
        )
        return "\n".join(
            [
                f"iterations {self.iterations:,}, callbacks run {self.callbacks_run:,}, "
                f"slow callbacks {self.slow_callbacks:,}",
                f"busy {self.busy_seconds:.3f} s, idle {self.idle_seconds:.3f} s, "
                f"load {self.load.last_1s:.0%} (1 s) {self.load.last_10s:.0%} (10 s)",
                f"timer lag p50 {self.lag.p50 * 1e3:.3f} ms, p99 {self.lag.p99 * 1e3:.3f} ms, "
                f"max {self.lag.max * 1e3:.3f} ms ({self.lag.samples:,} timers, last 10 s)",
                f"now: {self.ready} ready, {self.timers} timers, {self.fds} fds, {self.transports} transports; "
                f"{self.bytes_read:,} bytes read, {self.bytes_written:,} written",
                f"slowest callback (last 10 s): {slowest}",
            ]
        )


def _snapshot(loop: Any) -> LoopStats:
    d = loop._stats()
    slowest = d["slowest"]
    return LoopStats(
        iterations=d["iterations"],
        callbacks_run=d["callbacks_run"],
        ready=d["ready"],
        timers=d["timers"],
        fds=d["fds"],
        transports=d["transports"],
        bytes_read=d["bytes_read"],
        bytes_written=d["bytes_written"],
        busy_seconds=d["busy_seconds"],
        idle_seconds=d["idle_seconds"],
        load=LoopLoad(d["load_1s"], d["load_10s"]),
        lag=TimerLag(d["lag_p50"], d["lag_p99"], d["lag_max"], d["lag_samples"]),
        slowest_callback=SlowestCallback(*slowest) if slowest is not None else None,
        slow_callbacks=d["slow_callbacks"],
        timed_for=d["timed_for"],
    )


def check_loop(loop: Any, what: str) -> Any:
    """``loop``, or the running loop if None; a TypeError for a loop that is not ferroloop's."""
    if loop is None:
        loop = asyncio.get_running_loop()  # RuntimeError: no running event loop
    if not isinstance(loop, _ferroloop.EventLoop):
        raise TypeError(f"{what} needs a ferroloop event loop, not {type(loop).__module__}.{type(loop).__qualname__}")
    return loop


def stats(loop: Any = None) -> LoopStats:
    """Statistics of ``loop`` (default: the running loop) as an immutable snapshot."""
    return _snapshot(check_loop(loop, "ferroloop.stats()"))


# ``python -m ferroloop --stats``: the loops of the program, and the last
# snapshot of each closed one (None: not asked for).
tracked: weakref.WeakSet[Any] | None = None
closed: list[LoopStats] = []


def track(loop: Any) -> None:
    if tracked is not None:
        tracked.add(loop)
        loop._stats_on()


def closing(loop: Any) -> None:
    if tracked is not None and loop in tracked:
        tracked.discard(loop)
        closed.append(_snapshot(loop))


def report() -> str:
    """The ``--stats`` summary: every loop still open, then those closed (at most 5 in all)."""
    snapshots = [_snapshot(lp) for lp in list(tracked or ())] + closed
    if not snapshots:
        return "ferroloop --stats: no ferroloop event loop was created"
    lines = []
    for i, s in enumerate(snapshots[:5]):
        title = "ferroloop loop statistics" + (f" ({i + 1} of {len(snapshots)})" if len(snapshots) > 1 else "")
        lines.append(f"--- {title} ---")
        lines.append(s.summary())
    if len(snapshots) > 5:
        lines.append(f"... and {len(snapshots) - 5} more loops")
    return "\n".join(lines)
