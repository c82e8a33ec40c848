"""OpenTelemetry bridge: a loop's statistics as observable instruments, and
blocking reports as span events and log records.

Needs ``opentelemetry-api`` (never a dependency of ferroloop)::

    import ferroloop.otel
    ferroloop.otel.instrument(loop, detect_blocking=0.1)

Instruments (all with the attributes given to :func:`instrument`):

==================================  =========================  ============
name                                kind                       unit
==================================  =========================  ============
ferroloop.loop.load                 gauge (``window``: 1s/10s)  1
ferroloop.loop.lag                  gauge (``quantile``)        s
ferroloop.loop.slowest_callback     gauge                       s
ferroloop.loop.callbacks            counter                     {callback}
ferroloop.loop.iterations           counter                     {iteration}
ferroloop.loop.slow_callbacks       counter                     {callback}
ferroloop.loop.busy_time            counter                     s
ferroloop.loop.idle_time            counter                     s
ferroloop.loop.bytes_read           counter                     By
ferroloop.loop.bytes_written        counter                     By
ferroloop.loop.ready                up-down counter             {handle}
ferroloop.loop.timers               up-down counter             {timer}
ferroloop.loop.fds                  up-down counter             {fd}
ferroloop.loop.transports           up-down counter             {transport}
==================================  =========================  ============

A blocking report becomes an event (``ferroloop.blocking`` when seen,
``ferroloop.blocking.end`` when over) on the current span of the blocked
callback's context (a task's: the span of the request it serves) if it is
recording, and a WARNING record of the ``ferroloop`` logger with
``code.*`` attributes, which OpenTelemetry's logging handler exports.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import _blocking, _stats

__all__ = ["Instrumentation", "instrument", "report_blocking"]

logger = logging.getLogger("ferroloop")

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
except ImportError:  # pragma: no cover - exercised without the package
    metrics = trace = otel_context = None  # type: ignore[assignment]


def _require() -> None:
    if metrics is None:
        raise ImportError("ferroloop.otel needs the opentelemetry-api package (pip install opentelemetry-api)")


def _attributes(report: _blocking.BlockingReport) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "ferroloop.blocked_seconds": report.seconds,
        "ferroloop.finished": report.finished,
        "ferroloop.handle": report.handle,
    }
    if report.frames:
        last = report.frames[-1]
        attrs.update({"code.filepath": last.filename, "code.lineno": last.lineno, "code.function": last.name})
        attrs["code.stacktrace"] = report.stack
    if report.task is not None:
        attrs["ferroloop.task"] = report.task.get_name()
    return attrs


def _current_span(context: Any) -> Any:
    """The current span in the blocked callback's contextvars, if any. The
    context may be entered in the loop thread right now, so it is read as a
    mapping, not entered."""
    if context is None:
        return None
    for var, value in context.items():
        if var.name == "current_context" and isinstance(value, otel_context.Context):
            return trace.get_current_span(value)
    return None


def report_blocking(report: _blocking.BlockingReport) -> None:
    """A ``detect_blocking`` handler: a span event on the blocked callback's
    recording span (if there is one) and a WARNING log record."""
    _require()
    attrs = _attributes(report)
    span = _current_span(report.context)
    if span is not None and span.is_recording():
        span.add_event("ferroloop.blocking.end" if report.finished else "ferroloop.blocking", attributes=attrs)
    logger.warning("%s", report.message(), extra=attrs)


class Instrumentation:
    """What :func:`instrument` registered; :meth:`stop` makes the instruments
    report nothing more and stops the detector it started."""

    def __init__(self, loop: Any, attributes: Mapping[str, Any], detector: _blocking.BlockingDetector | None) -> None:
        self._loop = weakref.ref(loop)
        self._attributes = dict(attributes)
        self._stopped = False
        self._lock = threading.Lock()
        self.detector = detector

    def stop(self) -> None:
        self._stopped = True
        if self.detector is not None:
            self.detector.stop()

    def _snapshot(self) -> _stats.LoopStats | None:
        loop = self._loop()
        if self._stopped or loop is None or loop.is_closed():
            return None
        return _stats.stats(loop)

    def _observe(self, values: Callable[[_stats.LoopStats], Iterable[tuple[float, Mapping[str, Any]]]]) -> Any:
        def callback(options: Any) -> list[Any]:
            s = self._snapshot()
            if s is None:
                return []
            return [metrics.Observation(v, {**self._attributes, **extra}) for v, extra in values(s)]

        return callback


def instrument(
    loop: Any = None,
    *,
    meter_provider: Any = None,
    attributes: Mapping[str, Any] | None = None,
    detect_blocking: float | None = None,
) -> Instrumentation:
    """Register observable instruments for ``loop``'s statistics (default:
    the running loop) with ``meter_provider`` (default: the global one).

    ``detect_blocking=T`` also starts a blocking-call detector whose reports
    go to :func:`report_blocking`. Callbacks are timed from now on (as after
    a first ``ferroloop.stats()``), so ``slow_callbacks`` and
    ``slowest_callback`` are measured.
    """
    _require()
    loop = _stats.check_loop(loop, "ferroloop.otel.instrument()")
    from . import __version__

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("ferroloop", __version__)
    detector = None
    if detect_blocking is not None:
        detector = _blocking.detect_blocking(detect_blocking, loop=loop, handler=report_blocking)
    loop._stats_on()
    inst = Instrumentation(loop, attributes or {}, detector)
    none: dict[str, Any] = {}

    def one(get: Callable[[_stats.LoopStats], float]) -> Any:
        return inst._observe(lambda s: [(get(s), none)])

    meter.create_observable_gauge(
        "ferroloop.loop.load",
        [inst._observe(lambda s: [(s.load.last_1s, {"window": "1s"}), (s.load.last_10s, {"window": "10s"})])],
        unit="1",
        description="Busy fraction of the event loop (time running outside the poll)",
    )
    meter.create_observable_gauge(
        "ferroloop.loop.lag",
        [
            inst._observe(
                lambda s: [
                    (s.lag.p50, {"quantile": "p50"}),
                    (s.lag.p99, {"quantile": "p99"}),
                    (s.lag.max, {"quantile": "max"}),
                ]
            )
        ],
        unit="s",
        description="How late timers fired after their deadline, over the last 10 s",
    )
    meter.create_observable_gauge(
        "ferroloop.loop.slowest_callback",
        [one(lambda s: s.slowest_callback.seconds if s.slowest_callback else 0.0)],
        unit="s",
        description="The longest callback of the last 10 s",
    )
    counters = [
        ("callbacks", "{callback}", "Callbacks run", lambda s: s.callbacks_run),
        ("iterations", "{iteration}", "Loop iterations", lambda s: s.iterations),
        ("slow_callbacks", "{callback}", "Callbacks longer than slow_callback_duration", lambda s: s.slow_callbacks),
        ("busy_time", "s", "Time running outside the poll", lambda s: s.busy_seconds),
        ("idle_time", "s", "Time waiting in the poll", lambda s: s.idle_seconds),
        ("bytes_read", "By", "Bytes read by the loop's transports", lambda s: s.bytes_read),
        ("bytes_written", "By", "Bytes written by the loop's transports", lambda s: s.bytes_written),
    ]
    for name, unit, description, get in counters:
        meter.create_observable_counter(f"ferroloop.loop.{name}", [one(get)], unit=unit, description=description)
    gauges = [
        ("ready", "{handle}", "Handles ready to run", lambda s: s.ready),
        ("timers", "{timer}", "Timers pending", lambda s: s.timers),
        ("fds", "{fd}", "File descriptors watched", lambda s: s.fds),
        ("transports", "{transport}", "Transports open", lambda s: s.transports),
    ]
    for name, unit, description, get in gauges:
        meter.create_observable_up_down_counter(
            f"ferroloop.loop.{name}", [one(get)], unit=unit, description=description
        )
    return inst
