"""OpenTelemetry for the whole loop: one trace per model change, and the metrics alerts fire on.

- **Traces.** Each handled message is a span, each effect a span; the W3C trace context
  travels in every envelope the app sends (`Envelope.traceparent`, and the Service Bus
  message's application properties as the SDK writes them), and the aggregate keeps the
  trace of the change in progress (`ModelAggregate.change_trace`), so a data window, its
  training job, the registration, the gates, a person's approval, each canary step and the
  final state are one trace.
- **Metrics.** Counters and histograms named `retrain.<name>` (docs/observability.md).

Only the API is used here: without a configured provider it is a no-op, so it costs nothing
locally. The exporters are an adapter (adapters/telemetry_exporters.py), installed by the
bootstrap on first use, never at `import function_app`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

METER = "retrain_orchestrator"
TRACER = "retrain_orchestrator"
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


# ------------------------------------------------------------------ metrics


@cache
def _counter(name: str) -> Any:
    from opentelemetry import metrics

    return metrics.get_meter(METER).create_counter(f"retrain.{name}")


@cache
def _histogram(name: str, unit: str) -> Any:
    from opentelemetry import metrics

    return metrics.get_meter(METER).create_histogram(f"retrain.{name}", unit=unit)


def count(name: str, value: int = 1, **attributes: str) -> None:
    """Add `value` to the counter `retrain.<name>` with these attributes."""
    _counter(name).add(value, attributes)


def record(name: str, value: float, unit: str = "s", **attributes: str) -> None:
    """One observation of the histogram `retrain.<name>`."""
    _histogram(name, unit).record(value, attributes)


# ------------------------------------------------------------------ traces


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(TRACER)


def _context(traceparent: str | None) -> Any:
    if not traceparent or not TRACEPARENT.match(traceparent):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span (None when nothing is traced)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Span attributes take str, bool, int, float (or lists of one of them); None is left out,
    anything else is written as text."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            kept[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            kept[key] = list(value)
        else:
            kept[key] = str(value)[:500]
    return kept


@contextmanager
def span(
    name: str,
    parent: str | None = None,
    links: Sequence[str | None] = (),
    **attributes: Any,
) -> Iterator[Any]:
    """A span as the current one: child of `parent` (a traceparent) when given, else of the
    current span; `links` are other traces it relates to (a sender's own context)."""
    from opentelemetry.trace import Link, Status, StatusCode, get_current_span

    linked = []
    for link in links:
        context = _context(link)
        if context is not None:
            linked.append(Link(get_current_span(context).get_span_context()))
    with _tracer().start_as_current_span(
        name,
        context=_context(parent),
        links=linked,
        attributes=_attributes(attributes),
        record_exception=True,
        set_status_on_exception=True,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
            raise


def annotate(current: Any, **attributes: Any) -> None:
    current.set_attributes(_attributes(attributes))


def on_current_span(name: str, attributes: Mapping[str, Any]) -> None:
    """An event (a decision, an audit entry) on the current span."""
    from opentelemetry.trace import get_current_span

    get_current_span().add_event(name, _attributes(attributes))
