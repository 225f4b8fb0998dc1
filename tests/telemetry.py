"""The app's OpenTelemetry counters, read in tests with the SDK's in-memory reader."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any


@cache
def _reader() -> Any:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def install() -> None:
    """Route the app's counters to the in-memory reader (once per process)."""
    _reader()


def _points(name: str, attributes: dict[str, str]) -> Iterator[Any]:
    """The data points of metric `name` whose attributes include these."""
    data = _reader().get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if all(point.attributes.get(k) == v for k, v in attributes.items()):
                        yield point


def counter(name: str, **attributes: str) -> int:
    """The cumulative value of counter `name` over the data points with these attributes."""
    return sum(int(point.value) for point in _points(name, attributes))


@cache
def _spans() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def install_tracing() -> None:
    """Record the app's spans with the SDK's in-memory exporter (once per process)."""
    _spans()


def finished_spans(**attributes: Any) -> list[Any]:
    """Every span finished so far whose attributes include these."""
    return [
        span
        for span in _spans().get_finished_spans()
        if all(span.attributes.get(k) == v for k, v in attributes.items())
    ]


def histogram_count(name: str, **attributes: str) -> int:
    """How many observations histogram `name` has over the data points with these attributes."""
    return sum(int(point.count) for point in _points(name, attributes))
