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

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

METER = "retrain_orchestrator"
TRACER = "retrain_orchestrator"
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

# Attribute bounds. The SDK keeps at most 128 attributes on a span (OTEL_SPAN_ATTRIBUTE_COUNT_
# LIMIT; past it, the oldest go) and Application Insights cuts a custom dimension at 8192
# characters: text is cut at TEXT_LIMIT (ending in "…"), a list at LIST_LIMIT items, and the
# per-gate attributes of a decision take at most GATE_BUDGET of the span's 128.
TEXT_LIMIT = 4096
LIST_LIMIT = 64
GATE_BUDGET = 80
ARM_LIMIT = 6  # estimates and sample counts kept per gate (arms: candidate, champion...)
REASON_LIMIT = 300
_KEY = re.compile(r"[^A-Za-z0-9_]+")


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


def _text(value: str, limit: int = TEXT_LIMIT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _value(value: Any) -> Any:
    """A span attribute value: str, bool, int, float, or a list of one of them (bounded);
    anything else (a dict, a list of dicts: gate evidence) as compact JSON text, bounded."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        kinds = {type(item) for item in value}
        if len(kinds) <= 1 and kinds <= {str, bool, int, float}:
            kept = list(value[:LIST_LIMIT])
            return [_text(item) for item in kept] if kinds == {str} else kept
    try:
        text = json.dumps(value, default=str, sort_keys=True, separators=(",", ":"))
    except ValueError:  # a circular structure: its repr still says what it was
        text = repr(value)
    return _text(text)


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Span attributes, bounded (see TEXT_LIMIT); None is left out."""
    return {key: _value(value) for key, value in values.items() if value is not None}


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


def annotate_current(attributes: Mapping[str, Any]) -> None:
    """Set these attributes on the current span (a no-op when nothing is traced)."""
    from opentelemetry.trace import get_current_span

    get_current_span().set_attributes(_attributes(attributes))


def key(name: str) -> str:
    """`name` as one segment of an attribute key: `threshold:auc>=0.8` -> `threshold_auc_0_8`."""
    return _KEY.sub("_", name).strip("_")[:64] or "_"


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _per_arm(name: str, values: Any, number: type[int] | type[float]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for arm, value in list((values or {}).items())[:ARM_LIMIT]:
        if _number(value) is not None:
            kept[f"{name}.{key(str(arm))}"] = number(value)
    return kept


def _gate(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """One gate's evidence (promotion.gates.GateEvidence, as JSON) as flat attribute values."""
    found: dict[str, Any] = {
        "name": _text(str(evidence.get("gate", "?")), 128),
        "verdict": str(evidence.get("outcome", "?")),
        "reason": _text(str(evidence.get("reason") or ""), REASON_LIMIT),
        **_per_arm("estimate", evidence.get("values"), float),
        **_per_arm("samples", evidence.get("samples"), int),
    }
    interval = evidence.get("interval")
    if isinstance(interval, list | tuple) and len(interval) == 2:
        found["bound.low"], found["bound.high"] = _number(interval[0]), _number(interval[1])
    for field in ("threshold", "margin", "p_value", "statistic", "look"):
        found[field] = _number(evidence.get(field))
    return {name: value for name, value in found.items() if value is not None}


_SEVERITY = {"fail": 0, "inconclusive": 1, "pass": 2}


def gate_attributes(evidence: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`retrain.gate.<gate>.<field>` for each gate a decision judged: verdict, reason, name,
    estimate.<arm>, samples.<arm>, bound.low/high (the confidence interval), threshold,
    margin, p_value, statistic, look. Failing gates first, so what decided a rollback is never
    the part left out: past GATE_BUDGET attributes the rest are counted in
    `retrain.gates.omitted`."""
    ranked = sorted(evidence, key=lambda item: _SEVERITY.get(str(item.get("outcome")), 3))
    kept: dict[str, Any] = {}
    omitted = 0
    for item in ranked:
        fields = _gate(item)
        name = base = key(str(item.get("gate", "?")))
        suffix = 1
        while f"retrain.gate.{name}.verdict" in kept:  # two gates of one name: both kept
            suffix += 1
            name = f"{base}_{suffix}"
        if len(kept) + len(fields) > GATE_BUDGET:
            omitted += 1
            continue
        kept.update({f"retrain.gate.{name}.{field}": value for field, value in fields.items()})
    if omitted:
        kept["retrain.gates.omitted"] = omitted
    return kept


_ENDPOINT_KINDS = frozenset({"deploy_model", "set_traffic", "set_mirror", "delete_deployment"})


def _map(weights: Mapping[str, int]) -> str:
    return ",".join(f"{name}={weight}" for name, weight in weights.items())


def effect_attributes(
    effect: Any, *, endpoint: str | None = None, decided: Sequence[Any] = ()
) -> dict[str, Any]:
    """What one effect (domain.effects) does, as span attributes: `retrain.promotion_id`,
    `retrain.step`, `retrain.model_version`, `retrain.endpoint` (the ring's, else `endpoint`:
    the model's own), `retrain.deployment`, `retrain.traffic` / `retrain.mirror`
    ("deployment=percent,..."), and per kind the message sent, the run, the event, the tags.
    The promotion and step are the effect's own when it carries them, else those of the audit
    records `decided` (the decision that made it, while they are still in the outbox): the
    step it moved to (a passed step's decision moves traffic for the next one)."""
    payload = getattr(effect, "payload", None) or {}
    data = getattr(effect, "data", None) or {}
    tags = getattr(effect, "tags", None) or {}
    promotion_id = (
        getattr(effect, "promotion_id", None)
        or data.get("promotion_id")
        or tags.get("retrain.promotion_id")  # promotion.machine.PROMOTION_TAG
        or payload.get("promotion_id")
        or next((r.promotion_id for r in decided if r.promotion_id), None)
    )
    if promotion_id is not None:  # an ending promotion may start the next one queued
        decided = [r for r in decided if r.promotion_id == promotion_id]
    step = (
        getattr(effect, "step", None)
        or payload.get("step")
        or next((r.detail["step"] for r in reversed(decided) if r.detail.get("step")), None)
    )
    kind = getattr(effect, "kind", None)
    not_before = getattr(effect, "not_before", None)
    traffic = getattr(effect, "traffic", None)
    mirror = getattr(effect, "mirror", None)
    return _attributes(
        {
            "retrain.promotion_id": promotion_id,
            "retrain.step": step,
            "retrain.model_version": (
                getattr(effect, "model_version", None)
                or getattr(effect, "candidate_version", None)
                or data.get("candidate_version")
                or payload.get("candidate_version")
            ),
            "retrain.endpoint": (
                (getattr(effect, "endpoint", None) or endpoint) if kind in _ENDPOINT_KINDS else None
            ),
            "retrain.deployment": getattr(effect, "deployment", None),
            "retrain.traffic": _map(traffic) if traffic is not None else None,
            "retrain.mirror": _map(mirror) if mirror is not None else None,
            "retrain.restore": getattr(effect, "restore", None),
            "retrain.sends": getattr(effect, "message_type", None),
            "retrain.sends_id": getattr(effect, "message_id", None),
            "retrain.not_before": not_before.isoformat() if not_before is not None else None,
            "retrain.run_id": getattr(effect, "run_id", None),
            "retrain.event_type": getattr(effect, "event_type", None),
            "retrain.tags": ",".join(f"{k}={v}" for k, v in tags.items()) or None,
        }
    )
