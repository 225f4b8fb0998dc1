"""Effects per target, the latest state, and drift (issue 14), on real Azurite.

- A notification target down during a rollback: traffic goes back and the candidate is
  removed anyway; the notifications are retried, then given up (audited, counted).
- A stale split after a rollback: a handler that saved a canary split dispatches its copy
  only after the rollback has run; the old split never reaches the endpoint.
- Drift by hand: traffic moved and a deployment deleted behind the app's back are seen in one
  timer pass, audited and published; outside a promotion they are put back, during one the
  promotion pauses.
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.local_issuer import LocalIssuer
from domain.effects import SetTraffic
from orchestrator.aggregate import OutboxItem
from orchestrator.messages import Envelope
from promotion.commands import RollbackRequested
from tests.faults.flow_harness import (  # noqa: F401
    Courier,
    Process,
    World,
    collecting,
    flow_policy,
    flow_settings_fixture,
    make_runtime,
    seed_champion,
)

MODEL = "fraud"
V1, V2 = "fraud-v1", "fraud-v2"


class Unreachable:
    """An outside target that answers nothing (Event Hubs down)."""

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None:
        self.calls += 1
        raise ConnectionError("Event Hubs unreachable")


def in_canary(settings: Any) -> tuple[World, Courier]:
    world = World()
    courier = Courier(world, lambda: Process(settings, world))
    seed_champion(courier.process, world, MODEL)
    start = Envelope.new("StartPromotion", MODEL, {"candidate_version": "2"})
    courier.inject(courier.process.runtime.signer.sign(start))
    courier.run(until=lambda: status(courier) == "canary")
    assert world.endpoint.live == {V1: 90, V2: 10}
    return world, courier


def status(courier: Courier) -> str | None:
    active = courier.process.aggregate(MODEL).promotion.active
    return str(active.status) if active else None


def rollback(settings: Any, courier: Courier) -> Envelope:
    active = courier.process.aggregate(MODEL).promotion.active
    assert active is not None
    command = RollbackRequested(
        promotion_id=active.id, requested_by="oncall@contoso.com", reason="looks wrong"
    )
    token = LocalIssuer(settings.local_issuer_dir).mint(
        "oncall@contoso.com", roles=["Promotion.Operate"]
    )
    envelope = Envelope.new("RollbackRequested", MODEL, command, message_id="rollback:1")
    return envelope.model_copy(update={"auth": token})


def test_a_notification_target_down_during_a_rollback_holds_back_nothing(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    settings = flow_settings(
        {MODEL: flow_policy(MODEL, approval=False)},
        MAX_EFFECT_ATTEMPTS="2",
        EFFECT_RETRY_SECONDS="60",
    )
    world, courier = in_canary(settings)
    process = courier.process
    down = process.ports.events = Unreachable()  # type: ignore[assignment]

    outcome = process.handlers.handle(rollback(settings, courier))
    assert outcome.status == "applied"  # not raised: a notification can wait
    assert world.endpoint.live == {V1: 100} and set(world.endpoint.deployed) == {V1}
    assert world.endpoint.violations == []
    state = process.aggregate(MODEL).promotion
    assert state.active is None and str(state.history[-1].outcome) == "rolled_back"

    sweeps = 0
    while process.aggregate(MODEL).outbox:
        world.clock.advance(45)
        process.maintenance.sweep()
        sweeps += 1
        assert sweeps < 10
    aggregate = process.aggregate(MODEL)
    given_up = [r for r in process.audit(MODEL) if r.action == "effect.gave_up"]
    assert aggregate.effects_given_up == len(given_up) >= 1
    assert {r.detail["effect"] for r in given_up} == {"publish_event"}
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] += down.calls
        figures["sweeps"] += sweeps


def test_a_stale_split_dispatched_after_a_rollback_never_reaches_the_endpoint(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    settings = flow_settings({MODEL: flow_policy(MODEL, approval=False)})
    world, courier = in_canary(settings)
    process = courier.process
    # A handler saved the next step's split (50 %) and stalls before its dispatch...
    split = SetTraffic(traffic={V1: 50, V2: 50})
    stale, _ = process.store.update(
        MODEL,
        lambda a: a.model_copy(
            update={"outbox": [*a.outbox, OutboxItem(id="stale-0", effect=split)]}
        ),
    )
    # ...while a rollback is saved and dispatched by another.
    Process(settings, world).handlers.handle(rollback(settings, courier))
    assert world.endpoint.live == {V1: 100} and set(world.endpoint.deployed) == {V1}

    process.outbox.dispatch(MODEL, stale)  # the stalled handler wakes up
    assert {V1: 50, V2: 50} not in world.endpoint.traffic_maps
    assert world.endpoint.live == {V1: 100} and world.endpoint.violations == []
    assert process.aggregate(MODEL).outbox == []
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] += 1


def test_drift_by_hand_is_seen_in_one_pass_and_repaired_or_paused(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    settings = flow_settings({MODEL: flow_policy(MODEL, approval=False)})
    world, courier = in_canary(settings)
    process = courier.process

    world.endpoint.live = {V1: 100}  # the canary taken out in the portal
    [drift] = process.maintenance.sweep()["drift"]
    assert drift["model"] == MODEL
    active = process.aggregate(MODEL).promotion.active
    assert active is not None and active.paused and active.paused_by == "reconcile"
    assert [e for e, m, _ in world.events if e == "endpoint.drift"] == ["endpoint.drift"]

    # Outside a promotion: the serving deployment deleted by hand is deployed again.
    outside = World()
    other = Process(flow_settings({MODEL: flow_policy(MODEL, approval=False)}), outside)
    seed_champion(other, outside, MODEL)
    del outside.endpoint.deployed[V1]
    outside.endpoint.live = {}
    passes = 0
    while process_drifting(other):
        outside.clock.advance(300)
        other.maintenance.sweep()
        passes += 1
        assert passes < 6
    assert outside.endpoint.live == {V1: 100} and outside.endpoint.creations[V1] == 1
    actions = [r.action for r in other.audit(MODEL)]
    assert actions[:2] == ["endpoint.drift", "endpoint.repair"]
    assert actions[-1] == "endpoint.drift_resolved"
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] += 2
        figures["sweeps"] += passes + 1


def process_drifting(process: Process) -> bool:
    aggregate = process.aggregate(MODEL)
    return aggregate.promotion.drift is not None or not any(
        r.action == "endpoint.drift_resolved" for r in process.audit(MODEL)
    )
