"""``ferroloop.otel``: statistics as OpenTelemetry instruments, blocking reports as span events and log records.

Checked with opentelemetry-sdk's in-memory metric reader, span exporter and
log exporter (ferroloop itself never depends on OpenTelemetry).
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from typing import Any

import ferroloop
import pytest

otel_sdk = pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is in requirements-dev.txt")

import ferroloop.otel  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            assert sm.scope.name == "ferroloop"
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_instruments_report_the_statistics(fl_loop: Any) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(data)

    async def main() -> None:
        inst = ferroloop.otel.instrument(meter_provider=provider, attributes={"service": "test"})
        server = await fl_loop.create_server(Echo, "127.0.0.1", 0)
        reader_, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"a" * 1000)
        await reader_.readexactly(1000)
        for _ in range(10):
            fl_loop.call_later(0.001, lambda: None)
        fl_loop.call_soon(time.sleep, 0.15)
        await asyncio.sleep(0.2)
        during = points(reader)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        inst.stop()
        return during

    during = fl_loop.run_until_complete(main())
    expected = {
        "ferroloop.loop.load",
        "ferroloop.loop.lag",
        "ferroloop.loop.slowest_callback",
        "ferroloop.loop.callbacks",
        "ferroloop.loop.iterations",
        "ferroloop.loop.slow_callbacks",
        "ferroloop.loop.busy_time",
        "ferroloop.loop.idle_time",
        "ferroloop.loop.bytes_read",
        "ferroloop.loop.bytes_written",
        "ferroloop.loop.ready",
        "ferroloop.loop.timers",
        "ferroloop.loop.fds",
        "ferroloop.loop.transports",
    }
    assert set(during) == expected
    for name, pts in during.items():
        assert all(p.attributes["service"] == "test" for p in pts), name
    value = {name: pts[0].value for name, pts in during.items() if len(pts) == 1}
    assert value["ferroloop.loop.transports"] == 2
    assert value["ferroloop.loop.bytes_written"] == 2000
    assert value["ferroloop.loop.bytes_read"] == 2000
    assert value["ferroloop.loop.slow_callbacks"] == 1
    assert value["ferroloop.loop.slowest_callback"] >= 0.15
    assert value["ferroloop.loop.callbacks"] > 10
    load = {p.attributes["window"]: p.value for p in during["ferroloop.loop.load"]}
    assert set(load) == {"1s", "10s"} and all(0 <= v <= 1 for v in load.values())
    lag = {p.attributes["quantile"]: p.value for p in during["ferroloop.loop.lag"]}
    assert set(lag) == {"p50", "p99", "max"} and lag["max"] >= 0.1  # the timers waited for the sleep
    # Stopped: nothing more is observed.
    assert points(reader) == {} or all(not pts for pts in points(reader).values())


def test_closed_loop_reports_nothing() -> None:
    reader = InMemoryMetricReader()
    lp = ferroloop.new_event_loop()
    ferroloop.otel.instrument(lp, meter_provider=MeterProvider(metric_readers=[reader]))
    assert points(reader)
    lp.close()
    assert not any(points(reader).values())


def test_instrument_bad_input() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        ferroloop.otel.instrument()
    other = asyncio.SelectorEventLoop()
    try:
        with pytest.raises(TypeError, match="ferroloop event loop"):
            ferroloop.otel.instrument(other)
    finally:
        other.close()


def test_blocking_becomes_span_event_and_log_record(fl_loop: Any, caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))

    async def handle_request() -> None:
        with tracer.get_tracer("app").start_as_current_span("request"):
            await asyncio.sleep(0.01)
            time.sleep(0.3)  # BLOCKS
            await asyncio.sleep(0.1)

    async def main() -> None:
        inst = ferroloop.otel.instrument(meter_provider=MeterProvider(), detect_blocking=0.1)
        await asyncio.create_task(handle_request())
        inst.stop()

    with caplog.at_level(logging.WARNING, logger="ferroloop"):
        fl_loop.run_until_complete(main())
    (span,) = exporter.get_finished_spans()
    names = [e.name for e in span.events]
    assert names == ["ferroloop.blocking", "ferroloop.blocking.end"]
    seen, end = span.events
    assert seen.attributes["code.filepath"] == __file__
    assert seen.attributes["code.function"] == "handle_request"
    assert "time.sleep(0.3)" in seen.attributes["code.stacktrace"]
    assert end.attributes["ferroloop.blocked_seconds"] == pytest.approx(0.3, abs=0.03)
    records = [r for r in caplog.records if r.name == "ferroloop"]
    assert len(records) == 2
    assert records[0].__dict__["code.function"] == "handle_request"


def test_log_records_reach_the_otel_logging_handler(fl_loop: Any) -> None:
    logs = pytest.importorskip("opentelemetry.sdk._logs")
    export = pytest.importorskip("opentelemetry.sdk._logs.export")
    exporter_class = getattr(export, "InMemoryLogRecordExporter", None) or export.InMemoryLogExporter
    exporter = exporter_class()
    provider = logs.LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(export.SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        # The SDK's handler moves to opentelemetry-instrumentation-logging; either works.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = logs.LoggingHandler(logger_provider=provider)
    log = logging.getLogger("ferroloop")
    log.addHandler(handler)
    try:

        def block() -> None:
            time.sleep(0.25)

        with ferroloop.detect_blocking(0.1, loop=fl_loop, handler=ferroloop.otel.report_blocking):
            fl_loop.call_soon(block)
            fl_loop.call_soon(fl_loop.stop)
            fl_loop.run_forever()
            time.sleep(0.05)
    finally:
        log.removeHandler(handler)
        provider.shutdown()
    records = [d.log_record for d in exporter.get_finished_logs()]
    assert len(records) == 2
    assert records[0].attributes["code.function"] == "block"
    assert records[1].attributes["ferroloop.finished"] is True
