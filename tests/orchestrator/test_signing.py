"""Internal commands are unforgeable: each type the app sends itself, forged (no MAC, a wrong
MAC, a tampered payload, a guessed id taken first), changes nothing, is refused with its reason
and audited; only the app's own signed message moves anything."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest

from orchestrator.bootstrap import set_runtime
from orchestrator.messages import Envelope, InvalidMessage
from orchestrator.signing import INTERNAL_TYPES, MessageSigner, local_signing_key
from tests.fakes import TEST_SIGNER, FakeWorld, fake_runtime, start_promotion
from tests.orchestrator.test_handlers import approve, canary_policy
from triggers.messages import APPROVAL_TYPES, OPERATOR_TYPES, handle_message

OTHER_KEY = MessageSigner(b"someone-else's-key-that-is-long-enough-0123")


def awaiting_approval() -> FakeWorld:
    w = fake_runtime(canary_policy())
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    return w


def in_canary() -> FakeWorld:
    w = awaiting_approval()
    w.handle(approve(w))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "canary")  # type: ignore[union-attr]
    return w


# One plausible payload per internal type, aimed at the state the world is in: what a forger
# with send rights and `GET /api/models` would write.
def forgeries(w: FakeWorld) -> dict[str, dict[str, Any]]:
    active = w.aggregate("churn").promotion.active
    promotion = active.id if active else "p"
    step = active.step if active else "canary-1"
    check = (active.pending_check_id if active else None) or "c"
    return {
        "RetrainWindowClosed": {"window_id": "w", "seq": 0},
        "TrainingJobCheck": {"run_id": "churn-run", "attempt": 1},
        "TrainingJobStatus": {
            "run_id": "churn-run",
            "state": "completed",
            "registered_version": "9",
        },
        "StartPromotion": {"candidate_version": "9"},
        "GateCheck": {"promotion_id": promotion, "step": step, "check_id": check},
        "ApprovalTimedOut": {"promotion_id": promotion, "step": "approval", "timeout_id": check},
        "DeploymentReady": {"promotion_id": promotion, "deployment": "churn-v2"},
        "DeploymentFailed": {"promotion_id": promotion, "deployment": "churn-v2"},
        "DeploymentCheck": {"promotion_id": promotion, "deployment": "churn-v2", "attempt": 120},
        # A forged drift would pause a promotion or move traffic "back" to what it claims.
        "EndpointDrift": {
            "expected_traffic": {"churn-v1": 100},
            "actual_traffic": {"churn-v2": 100},
        },
        "EndpointInSync": {},
    }


Forge = Callable[[Envelope], Envelope]
FORGERIES: dict[str, Forge] = {
    "no MAC": lambda envelope: envelope,
    "another key's MAC": OTHER_KEY.sign,
    "a tampered payload": lambda envelope: TEST_SIGNER.sign(envelope).model_copy(
        update={"payload": {**envelope.payload, "forged": 1}}
    ),
    "a MAC of another message": lambda envelope: envelope.model_copy(
        update={"mac": TEST_SIGNER.sign(envelope.model_copy(update={"model": "x"})).mac}
    ),
}


def test_every_internal_type_is_covered() -> None:
    assert set(forgeries(awaiting_approval())) == INTERNAL_TYPES


@pytest.mark.parametrize("how", sorted(FORGERIES))
@pytest.mark.parametrize("world", [awaiting_approval, in_canary], ids=["approval", "canary"])
@pytest.mark.parametrize("message_type", sorted(INTERNAL_TYPES))
def test_a_forged_internal_message_changes_nothing_and_is_audited(
    message_type: str, world: Callable[[], FakeWorld], how: str
) -> None:
    w = world()
    before = w.aggregate("churn")
    sent_before, traffic_before = len(w.bus.sent), list(w.endpoint.traffic_maps)
    envelope = FORGERIES[how](
        Envelope.new(message_type, "churn", forgeries(w)[message_type], message_id="forged-1")
    )
    with pytest.raises(InvalidMessage, match=message_type) as refused:
        w.handle(envelope)
    after = w.aggregate("churn")
    assert (after.promotion, after.retrain, after.outbox) == (
        before.promotion,
        before.retrain,
        before.outbox,
    )
    assert not after.has_seen("forged-1")
    assert len(w.bus.sent) == sent_before and w.endpoint.traffic_maps == traffic_before
    [record] = [r for r in w.audit.read("churn") if r.action == "message.rejected"]
    assert record.cause_id == "forged-1" and record.actor == "unverified"
    assert record.detail["reason"] == refused.value.reason


def test_a_forged_check_under_the_real_ones_id_does_not_make_the_real_one_a_duplicate() -> None:
    w = in_canary()
    [real] = [item.envelope for item in w.bus.pending if item.envelope.type == "GateCheck"]
    forged = real.model_copy(update={"mac": None})  # same id, same content, no MAC
    with pytest.raises(InvalidMessage):
        w.handle(forged)
    w.clock.advance_to(w.bus.next_due_at())  # type: ignore[arg-type]
    assert next(outcome.status for _, outcome in w.deliver_due()) == "applied"


def test_the_apps_own_messages_are_signed_and_verify() -> None:
    w = in_canary()
    internal = [item.envelope for item in w.bus.sent if item.envelope.type in INTERNAL_TYPES]
    assert internal and all(TEST_SIGNER.verify(envelope) is None for envelope in internal)


def test_a_replayed_signed_message_is_a_duplicate() -> None:
    w = fake_runtime(canary_policy())
    w.seed_champion("churn", "1")
    start = start_promotion("churn", "2")
    assert w.handle(start).status == "applied"
    assert w.handle(start).status == "duplicate"


def test_keyed_transport_ids_are_deterministic_and_unguessable() -> None:
    assert TEST_SIGNER.keyed_id("p:canary-1:check:1") == TEST_SIGNER.keyed_id("p:canary-1:check:1")
    assert TEST_SIGNER.keyed_id("p:canary-1:check:1") != OTHER_KEY.keyed_id("p:canary-1:check:1")
    assert TEST_SIGNER.keyed_id("p:canary-1:check:1").startswith("p:canary-1:check:1~")


def test_the_local_key_is_made_once_and_kept_private(tmp_path: Any) -> None:
    key = local_signing_key(tmp_path)
    assert len(key) == 64 and local_signing_key(tmp_path) == key
    assert (tmp_path / "message-signing.key").stat().st_mode & 0o077 == 0


# --------------------------------------------------------------------------- queue allow-lists


@pytest.fixture
def world() -> Any:
    w = awaiting_approval()
    set_runtime(w.runtime)
    yield w
    set_runtime(None)


def deliver(envelope: Envelope, queue: str) -> str:
    message = func.ServiceBusMessage(body=envelope.to_bytes())
    allowed = APPROVAL_TYPES if queue == "approvals" else INTERNAL_TYPES | OPERATOR_TYPES
    return handle_message(message, queue, allowed)


@pytest.mark.parametrize(
    ("message_type", "queue"),
    [
        ("DataLanded", "orchestrator"),  # data comes through the data triggers only
        ("ApprovalDecision", "orchestrator"),
        ("GateCheck", "approvals"),
        ("RollbackRequested", "approvals"),
    ],
)
def test_each_queue_takes_only_its_types(world: FakeWorld, message_type: str, queue: str) -> None:
    envelope = TEST_SIGNER.sign(Envelope.new(message_type, "churn", {}, message_id="m-1"))
    assert deliver(envelope, queue) == "dead-lettered"
    [record] = world.dead_letters.records  # type: ignore[union-attr]
    assert f"{message_type} is not accepted on the {queue} queue" in json.dumps(record)


def test_a_forged_check_on_the_queue_is_dead_lettered_with_its_reason(world: FakeWorld) -> None:
    forged = Envelope.new("GateCheck", "churn", forgeries(world)["GateCheck"], message_id="g-1")
    assert deliver(forged, "orchestrator") == "dead-lettered"
    [record] = world.dead_letters.records  # type: ignore[union-attr]
    assert "GateCheck is internal and carries no MAC" in json.dumps(record)
