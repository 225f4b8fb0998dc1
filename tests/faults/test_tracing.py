"""One trace per model change (issue 18, item 1), read with the SDK's in-memory exporter.

The flow harness runs the app as in production on Azurite: every message the app sends to
itself crosses the real orchestrator queue (the Storage-queue bus), and the approval comes
from a person with a token. The trace context travels in the envelope, so a data window, its
training job, the staging gate, the approval, each canary step and the end (completed, or
rolled back after a retried traffic change) are one trace, each decision a span whose events
are its audit entries, each effect a span.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from orchestrator.ports import EndpointError
from tests.faults.flow_harness import (  # noqa: F401
    Courier,
    FakeEndpoint,
    Process,
    World,
    flow_policy,
    flow_settings_fixture,
    landed,
    make_runtime,
    seed_champion,
)
from tests.telemetry import counter, finished_spans, histogram_count, install, install_tracing

pytestmark = pytest.mark.azurite


class FlakyEndpoint(FakeEndpoint):
    """Refuses the first traffic change back to `v1` once (an outage): the outbox retries."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def set_traffic(self, traffic: dict[str, int]) -> None:
        if traffic.get("traces-v1") == 100 and not self.refused:
            self.refused += 1
            raise EndpointError("endpoint busy: 503", transient=True)
        super().set_traffic(traffic)


def run_flow(flow_settings: Any, model: str, world: World) -> Courier:
    install_tracing()
    install()  # the metrics reader
    settings = flow_settings({model: flow_policy(model, approval=True)})
    courier = Courier(world, lambda: Process(settings, world), None)
    seed_champion(courier.process, world, model)
    for batch in range(2):
        courier.inject(landed(model, 0, batch, 3))
    courier.run()
    return courier


def handled(model: str) -> list[Any]:
    return [s for s in finished_spans(**{"retrain.model": model}) if s.name.startswith("handle ")]


def test_a_model_change_is_one_trace_across_the_queue(flow_settings: Any) -> None:
    model = "traced"
    courier = run_flow(flow_settings, model, World())
    assert courier.process.aggregate(model).promotion.champion.version == "2"

    spans = handled(model)
    types = Counter(s.attributes["retrain.message_type"] for s in spans)
    for expected in ("DataLanded", "RetrainWindowClosed", "TrainingJobCheck", "ApprovalDecision"):
        assert types[expected] >= 1, types
    assert types["GateCheck"] >= 3, types  # staging, the canary steps, the production bake
    assert len({s.context.trace_id for s in spans}) == 1  # the whole change: one trace
    # Across the queue: a handled message's parent is the effect span that sent it.
    effects = {
        s.context.span_id: s for s in finished_spans(**{"retrain.model": model})
        if s.name.startswith("effect ")
    }  # fmt: skip
    closed = next(s for s in spans if s.attributes["retrain.message_type"] == "RetrainWindowClosed")
    assert closed.parent is not None and effects[closed.parent.span_id].name == (
        "effect send_message"
    )
    # The person's approval joins the promotion's trace; the decision is on the span.
    approval = next(s for s in spans if s.attributes["retrain.message_type"] == "ApprovalDecision")
    assert approval.attributes.get("retrain.actor")  # the verified sender (object id)
    completed = [e.name for s in spans for e in s.events]
    assert "promotion.completed" in completed, sorted(set(completed))

    # The metrics the same transitions moved (the model name is this test's own).
    assert counter("retrain.promotions", model=model, outcome="completed") == 1
    assert counter("retrain.promotions", model=model, outcome="rolled_back") == 0
    assert counter("retrain.training.runs", model=model, result="completed") == 1
    assert counter("retrain.data.items", model=model, source="eventhub") == 6
    assert counter("retrain.gate.verdicts", model=model, verdict="pass") >= 3
    assert histogram_count("retrain.promotion.time_in_state", model=model) >= 4


def test_a_rollback_and_its_retried_traffic_change_are_in_the_trace(flow_settings: Any) -> None:
    model = "traces"
    world = World(endpoint=FlakyEndpoint())
    world.metrics.live_mode = "fail"  # the first canary step's gate fails: rolled back
    courier = run_flow(flow_settings, model, world)
    promotion = courier.process.aggregate(model).promotion
    assert promotion.champion.version == "1" and world.endpoint.refused == 1

    spans = handled(model)
    trace_ids = {s.context.trace_id for s in spans}
    assert len(trace_ids) == 1
    events = [e.name for s in spans for e in s.events]
    assert "promotion.rolled_back" in events, sorted(set(events))
    restores = [
        s
        for s in finished_spans(**{"retrain.model": model, "retrain.effect": "set_traffic"})
        if s.context.trace_id in trace_ids
    ]
    failed = [s for s in restores if not s.status.is_ok]
    assert len(failed) == 1 and "endpoint busy" in (failed[0].status.description or "")
    retried = [s for s in restores if s.attributes["retrain.effect_id"] == (
        failed[0].attributes["retrain.effect_id"]
    ) and s.status.is_ok]  # fmt: skip
    assert retried and retried[0].attributes["retrain.attempt"] == 2
    assert counter("retrain.promotions", model=model, outcome="rolled_back") == 1
    assert counter("retrain.effects.failed", model=model, kind="set_traffic") == 1
    assert counter("retrain.gate.verdicts", model=model, verdict="fail") >= 1
