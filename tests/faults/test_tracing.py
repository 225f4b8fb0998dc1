"""One trace per model change (issue 18, item 1), read with the SDK's in-memory exporter.

The flow harness runs the app as in production on Azurite: every message the app sends to
itself crosses the real orchestrator queue (the Storage-queue bus), and the approval comes
from a person with a token. The trace context travels in the envelope, so a data window, its
training job, the staging gate, the approval, each canary step and the end (completed, or
rolled back after a retried traffic change) are one trace: each message a span `handle
<type>`, each decision a child span `decide <section>` (step, verdict, states, candidate
version, one attribute group per gate; its audit entries as events), each effect a span
under the decision that made it (promotion, step, endpoint, deployment, traffic map).

On the in-memory fakes (no Azurite): a decision with more gates than a span can hold stays
within the SDK's attribute limit, failing gates first; and a Service Bus message's trace
context (its application properties, as the SDK writes them) becomes the handler's parent
(the app's own message) or a link (a person's, whose handler joins the change's trace).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import azure.functions as func
from azure.servicebus import ServiceBusMessage

from adapters.service_bus import build_message
from devhost.host.messaging import service_bus_message_from_received
from orchestrator import telemetry
from orchestrator.bootstrap import set_runtime
from orchestrator.messages import Envelope
from orchestrator.ports import EndpointError
from promotion.commands import ApprovalDecision
from tests.devhost.host.test_real_messaging import received_message
from tests.fakes import FakeWorld, fake_runtime, policy_yaml, start_promotion
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
from tests.harness import signed
from tests.telemetry import counter, finished_spans, histogram_count, install, install_tracing

# The flow tests reach Azurite through `flow_settings` (marked `azurite` by tests/conftest.py);
# the others run on the in-memory fakes.


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


def decided(model: str, **attributes: Any) -> list[Any]:
    """The decision spans of `model` with these attributes, in the order they ended."""
    return [
        s
        for s in finished_spans(**{"retrain.model": model, **attributes})
        if s.name.startswith("decide ")
    ]


def effects(model: str, **attributes: Any) -> list[Any]:
    return [
        s
        for s in finished_spans(**{"retrain.model": model, **attributes})
        if s.name.startswith("effect ")
    ]


def gates(span: Any) -> dict[str, dict[str, Any]]:
    """A decision span's per-gate attributes, by gate: {"canary_error_rate": {"verdict": ...}}."""
    found: dict[str, dict[str, Any]] = {}
    for name, value in span.attributes.items():
        if name.startswith("retrain.gate."):
            gate, _, field = name.removeprefix("retrain.gate.").partition(".")
            found.setdefault(gate, {})[field] = value
    return found


def test_a_model_change_is_one_trace_across_the_queue(flow_settings: Any) -> None:
    model = "traced"
    courier = run_flow(flow_settings, model, World())
    promotion = courier.process.aggregate(model).promotion
    assert promotion.champion is not None and promotion.champion.version == "2"
    [entry] = promotion.history
    promotion_id = entry.promotion_id

    spans = handled(model)
    types = Counter(s.attributes["retrain.message_type"] for s in spans)
    for expected in ("DataLanded", "RetrainWindowClosed", "TrainingJobCheck", "ApprovalDecision"):
        assert types[expected] >= 1, types
    assert types["GateCheck"] >= 3, types  # staging, the canary steps, the production bake
    assert len({s.context.trace_id for s in spans}) == 1  # the whole change: one trace
    # Across the queue: a handled message's parent is the effect span that sent it.
    sent = {s.context.span_id: s for s in effects(model)}
    closed = next(s for s in spans if s.attributes["retrain.message_type"] == "RetrainWindowClosed")
    assert closed.parent is not None and sent[closed.parent.span_id].name == ("effect send_message")
    # Each decision is a child of the message's span; each effect a child of its decision.
    handles = {s.context.span_id: s for s in spans}
    decisions = decided(model)
    assert decisions and all(
        d.parent is not None and d.parent.span_id in handles for d in decisions
    )
    by_id = {d.context.span_id: d for d in decisions}
    assert all(e.parent is not None and e.parent.span_id in by_id for e in effects(model))

    # The person's approval joins the promotion's trace; its decision is on the span.
    approval = next(s for s in spans if s.attributes["retrain.message_type"] == "ApprovalDecision")
    assert approval.attributes.get("retrain.actor")  # the verified sender (object id)
    [approved] = decided(model, **{"retrain.message_type": "ApprovalDecision"})
    assert approved.parent.span_id == approval.context.span_id
    assert {k: approved.attributes.get(f"retrain.{k}") for k in (
        "promotion_id", "verdict", "state_from", "state_to", "model_version", "step"
    )} == {
        "promotion_id": promotion_id,
        "verdict": "applied",
        "state_from": "awaiting_approval",
        "state_to": "deploying",
        "model_version": "2",
        "step": "deploy",
    }  # fmt: skip
    # The staging gate: its verdict and evidence, one attribute per field of the gate.
    [staged] = decided(model, **{"retrain.message_type": "StartPromotion"})
    assert staged.attributes["retrain.verdict"] == "pass"
    assert staged.attributes["retrain.step"] == "staging"
    assert gates(staged) == {
        "threshold_auc_0_7": {
            "name": "threshold:auc>=0.7",
            "verdict": "pass",
            "reason": "auc=0.9 meets >= 0.7",
            "estimate.candidate": 0.9,
            "threshold": 0.7,
        }
    }
    # Each canary step's gate: the sequential test's estimates, samples and verdict.
    canary = decided(model, **{"retrain.step": "canary-1", "retrain.verdict": "pass"})
    [error_rate] = [
        g for s in canary for name, g in gates(s).items() if name == "canary_error_rate"
    ]
    assert error_rate["verdict"] == "pass" and error_rate["samples.canary"] > 0
    assert {"estimate.canary", "estimate.production", "statistic", "margin"} <= set(error_rate)
    # Why version 2 is in production: the bake's last look passed, the promotion completed.
    [done] = decided(model, **{"retrain.section": "promotion", "retrain.state_to": "completed"})
    assert (done.attributes["retrain.verdict"], done.attributes["retrain.model_version"]) == (
        "pass",
        "2",
    )
    assert "promotion.completed" in [e.name for e in done.events]
    # Its audit entries are the decision's events; the evidence is the attributes above.
    assert all("retrain.detail.evidence" not in e.attributes for d in decisions for e in d.events)

    # The effects say what they did, to which promotion, step, endpoint and deployment.
    [deploy] = effects(model, **{"retrain.effect": "deploy_model", "retrain.model_version": "2"})
    assert {k: deploy.attributes.get(f"retrain.{k}") for k in (
        "promotion_id", "step", "endpoint", "deployment"
    )} == {
        "promotion_id": promotion_id, "step": "deploy", "endpoint": "traced-ep",
        "deployment": "traced-v2",
    }  # fmt: skip
    maps = [
        (s.attributes["retrain.step"], s.attributes["retrain.traffic"])
        for s in effects(model, **{"retrain.effect": "set_traffic"})
        if s.attributes.get("retrain.promotion_id") == promotion_id
    ]
    assert maps[:2] == [
        ("canary-1", "traced-v1=90,traced-v2=10"),
        ("canary-2", "traced-v1=50,traced-v2=50"),
    ]
    assert maps[-1][1] == "traced-v2=100"
    [check] = effects(model, **{"retrain.sends": "GateCheck", "retrain.step": "canary-1"})[:1]
    assert check.attributes["retrain.promotion_id"] == promotion_id
    assert check.attributes["retrain.sends_id"].startswith(f"{promotion_id}:canary-1:")

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
    [entry] = promotion.history
    promotion_id = entry.promotion_id

    spans = handled(model)
    trace_ids = {s.context.trace_id for s in spans}
    assert len(trace_ids) == 1
    # Why version 2 is not in production, in one span of the trace: the canary step's gate
    # failed (the estimates, samples and test that say so), so the promotion rolled back.
    [rolled_back] = decided(model, **{"retrain.state_to": "rolled_back"})
    assert rolled_back.context.trace_id in trace_ids
    assert {k: rolled_back.attributes.get(f"retrain.{k}") for k in (
        "promotion_id", "step", "verdict", "state_from", "model_version"
    )} == {
        "promotion_id": promotion_id, "step": "canary-1", "verdict": "fail",
        "state_from": "canary", "model_version": "2",
    }  # fmt: skip
    failed_gate = gates(rolled_back)["canary_error_rate"]
    assert failed_gate["verdict"] == "fail" and "inferior beyond margin" in failed_gate["reason"]
    assert failed_gate["estimate.canary"] > failed_gate["estimate.production"]
    assert failed_gate["samples.canary"] >= 50 and failed_gate["samples.production"] >= 50
    events = [e.name for e in rolled_back.events]
    assert events[0] == "gate.failed" and "promotion.rolled_back" in events, events
    # The restore failing at once made the decision's dispatch raise (the message comes back).
    assert events[-1] == "exception" and not rolled_back.status.is_ok

    restores = [
        s
        for s in effects(model, **{"retrain.effect": "set_traffic", "retrain.restore": True})
        if s.context.trace_id in trace_ids
    ]
    # Both attempts are children of the decision that rolled back, with the map they restore.
    assert {s.parent.span_id for s in restores} == {rolled_back.context.span_id}
    assert {s.attributes["retrain.traffic"] for s in restores} == {"traces-v1=100,traces-v2=0"}
    failed = [s for s in restores if not s.status.is_ok]
    assert len(failed) == 1 and "endpoint busy" in (failed[0].status.description or "")
    assert failed[0].attributes["retrain.promotion_id"] == promotion_id
    assert failed[0].attributes["retrain.step"] == "canary-1"
    assert failed[0].attributes["retrain.endpoint"] == "traces-ep"
    retried = [s for s in restores if s.attributes["retrain.effect_id"] == (
        failed[0].attributes["retrain.effect_id"]
    ) and s.status.is_ok]  # fmt: skip
    assert retried and retried[0].attributes["retrain.attempt"] == 2
    # The retry, by the sweep after the decision's records were flushed, still says whose.
    assert retried[0].attributes["retrain.promotion_id"] == promotion_id
    assert retried[0].attributes["retrain.step"] == "canary-1"
    assert counter("retrain.promotions", model=model, outcome="rolled_back") == 1
    assert counter("retrain.effects.failed", model=model, kind="set_traffic") == 1
    assert counter("retrain.gate.verdicts", model=model, verdict="fail") >= 1
    assert counter("retrain.gate.verdicts", model=model, gate="canary", verdict="fail") == 1


# --------------------------------------------------------------------------- on the fakes


def many_gates_policy(model: str, count: int) -> str:
    """`count` staging thresholds on one metric, every other one out of reach (fails)."""
    gates = ", ".join(
        f"{{kind: threshold, metric: auc, value: {0.5 + (0.45 if i % 2 else 0.0) + i / 1000}}}"
        for i in range(count)
    )
    return policy_yaml(model, staging=f"{{gates: [{gates}]}}")


def test_a_decision_with_more_gates_than_a_span_holds_keeps_the_failing_ones() -> None:
    install_tracing()
    model = "manygates"
    w = fake_runtime(many_gates_policy(model, 40))
    w.seed_champion(model, "1")
    assert w.handle(start_promotion(model, "2")).status == "applied"
    [entry] = w.aggregate(model).promotion.history
    assert str(entry.outcome) == "rejected"  # the staging gate failed

    [span] = decided(model)
    assert (span.attributes["retrain.verdict"], span.attributes["retrain.state_to"]) == (
        "fail",
        "rejected",
    )
    # Within the SDK's limit of 128 attributes, none evicted: the model is still there.
    assert len(span.attributes) <= 128 and span.dropped_attributes == 0
    assert span.attributes["retrain.model"] == model
    kept = gates(span)
    assert sum(len(fields) for fields in kept.values()) <= telemetry.GATE_BUDGET
    # Twenty gates fail, twenty pass: the failing ones come first, the rest are counted.
    verdicts = Counter(fields["verdict"] for fields in kept.values())
    assert verdicts["fail"] == min(20, len(kept)) and len(kept) < 40
    assert span.attributes["retrain.gates.omitted"] == 40 - len(kept)
    # Each kept gate's evidence is whole: its exact name, estimate, threshold.
    some = next(fields for fields in kept.values() if fields["verdict"] == "fail")
    assert some["estimate.candidate"] == 0.9 and some["threshold"] > 0.9
    assert some["name"].startswith("threshold:auc>=")


def test_a_long_or_structured_attribute_is_bounded_json() -> None:
    install_tracing()
    evidence = [{"gate": f"g{i}", "reason": "x" * 500} for i in range(40)]
    with telemetry.span("bounded", **{"retrain.model": "bounded", "retrain.blob": evidence}):
        telemetry.on_current_span("entry", {"retrain.detail.text": "y" * 10_000})
    [span] = finished_spans(**{"retrain.model": "bounded"})
    blob = span.attributes["retrain.blob"]
    assert len(blob) == telemetry.TEXT_LIMIT and blob.endswith("…")
    assert blob.startswith('[{"gate":"g0","reason":"xxx')  # JSON, not a Python repr
    short = telemetry._value([{"gate": "g0", "outcome": "fail"}])
    assert json.loads(short) == [{"gate": "g0", "outcome": "fail"}]
    [event] = span.events
    assert len(event.attributes["retrain.detail.text"]) == telemetry.TEXT_LIMIT


# --------------------------------------------------------------------------- Service Bus


LEAD = "ml-lead@contoso.com"


def approval_policy(model: str) -> str:
    return policy_yaml(
        model,
        approval=f"{{required: true, approvers: [{LEAD}], timeout: 1h, on_timeout: reject}}",
    )


def over_service_bus(message: ServiceBusMessage) -> func.ServiceBusMessage:
    """What the Functions host hands the trigger for `message`: the SDK's received message
    over the same AMQP application properties, as the binding passes it."""
    amqp = message.raw_amqp_message
    properties = {
        (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
        for k, v in (amqp.application_properties or {}).items()
    }
    return service_bus_message_from_received(
        received_message(b"".join(message.body), properties=properties)
    )


def queue_function(builder: Any) -> Any:
    return builder._function.get_user_function()


def test_a_service_bus_message_s_trace_is_its_handler_s_parent_or_link() -> None:
    from triggers import messages

    install_tracing()
    model = "sbtraced"
    w: FakeWorld = fake_runtime(approval_policy(model))
    w.seed_champion(model, "1")
    set_runtime(w.runtime)
    try:
        w.handle(start_promotion(model, "2"))
        active = w.aggregate(model).promotion.active
        assert active is not None and active.status == "awaiting_approval"
        change = w.aggregate(model).change_trace
        assert change is not None

        # A person's approval, sent by a traced client: the SDK put the client's context in
        # the application properties; the envelope carries none.
        client = telemetry.span("client sends approval", **{"retrain.model": "client"})
        with client:
            sender = telemetry.current_traceparent()
        assert sender is not None
        decision = ApprovalDecision(
            promotion_id=active.id,
            step="approval",
            candidate_version="2",
            decision="approve",
            approver=LEAD,
        )
        approval = signed(
            w.runtime,
            Envelope.new("ApprovalDecision", model, decision, message_id="sb-approval-1"),
            LEAD,
        )
        assert approval.traceparent is None
        message = build_message(approval)
        message.application_properties = {
            **(message.application_properties or {}),
            b"Diagnostic-Id": sender,
            b"traceparent": sender,
        }
        queue_function(messages.approvals_queue)(over_service_bus(message))
        assert w.aggregate(model).promotion.active.status == "deploying"  # type: ignore[union-attr]
        [handled_approval] = [
            s for s in handled(model) if s.attributes["retrain.message_id"] == "sb-approval-1"
        ]
        # It joins the change's trace (its parent: the change's span); the sender is a link.
        assert f"{handled_approval.parent.span_id:016x}" == change.split("-")[2]
        assert f"{handled_approval.context.trace_id:032x}" == change.split("-")[1]
        [link] = handled_approval.links
        assert f"00-{link.context.trace_id:032x}-{link.context.span_id:016x}" == sender[:-3]

        # The app's own message (the deployment check its deploy effect scheduled), sent
        # under that effect's span: the envelope and the Service Bus properties carry that
        # span, and the handler is its child, with no link (one context twice is one parent).
        [pending] = [p for p in w.bus.pending if p.envelope.type == "DeploymentCheck"]
        own: Envelope = pending.envelope
        assert own.traceparent is not None
        message = build_message(own)
        assert message.application_properties[b"traceparent"] == own.traceparent
        queue_function(messages.orchestrator_queue)(over_service_bus(message))
        [handled_check] = [
            s for s in handled(model) if s.attributes["retrain.message_id"] == own.message_id
        ]
        [sending] = [
            s
            for s in effects(model, **{"retrain.effect": "deploy_model"})
            if f"{s.context.span_id:016x}" == own.traceparent.split("-")[2]
        ]
        assert handled_check.parent.span_id == sending.context.span_id
        assert handled_check.context.trace_id == sending.context.trace_id
        assert list(handled_check.links) == []
    finally:
        set_runtime(None)
