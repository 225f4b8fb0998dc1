"""Rings through the service layer on fakes: the outbox deploys and moves traffic on each
ring's own endpoint (one fake endpoint per name), the deployment checks ask that endpoint,
the ring's metrics are read for that endpoint, and a failing ring rolls back every ring that
moved, each to its own known-good deployment, on its own endpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.effects import Effect, SetTraffic
from domain.policy import parse_policy
from orchestrator.aggregate import ModelAggregate, OutboxItem
from orchestrator.ports import DeploymentBusy, EndpointError
from orchestrator.reconcile import ReconcileReport
from promotion.commands import ResumePromotion
from tests.fakes import (
    FakeEndpoint,
    FakeWorld,
    fake_runtime,
    fake_settings,
    message,
    policy_yaml,
    start_promotion,
)
from tests.harness import signed

RINGS = "[{endpoint: churn-ep}, {endpoint: churn-north, bake: 2s}, {endpoint: churn-south}]"
V0, V1, V2 = "churn-v0", "churn-v1", "churn-v2"


def rings_world() -> FakeWorld:
    w = fake_runtime(policy_yaml("churn", rings=RINGS, production_holdback="0"))
    w.seed_champion("churn", "1")
    w.seed_ring("churn", "churn-north", "0")  # each ring has its own known-good
    w.seed_ring("churn", "churn-south", "1")
    return w


def step(w: FakeWorld) -> str | None:
    active = w.aggregate("churn").promotion.active
    return active.step if active is not None else None


def test_a_promotion_walks_every_ring_to_completed() -> None:
    w = rings_world()
    north, south = w.ring_endpoints["churn-north"], w.ring_endpoints["churn-south"]
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: step(w) == "ring-2")
    assert north.live == {V0: 100}  # deployed there, no traffic before it is ready
    w.run(until=lambda: step(w) == "ring-3")
    assert north.live == {V2: 100} and south.live == {V1: 100}
    [*_, (_, _, _, arms)] = w.metrics.live_reads
    assert [(arm.deployment, arm.endpoint) for arm in arms] == [(V2, "churn-north")]
    w.run(until=lambda: step(w) is None)

    state = w.aggregate("churn").promotion
    assert state.history[-1].outcome == "completed"
    for endpoint in (w.endpoint, north, south):
        assert endpoint.live == {V2: 100}
        assert set(endpoint.deployed) == {V2}  # each ring's old deployment deleted
        assert endpoint.violations == []
    assert {name: ring.version for name, ring in state.rings.items()} == {
        "churn-north": "2",
        "churn-south": "2",
    }
    assert w.aggregate("churn").outbox == []


def test_a_failing_last_ring_rolls_every_ring_back_to_its_own_known_good() -> None:
    w = rings_world()
    north, south = w.ring_endpoints["churn-north"], w.ring_endpoints["churn-south"]
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: step(w) == "ring-3")
    w.metrics.errors = 500  # the candidate fails on the south ring: 50 % errors
    w.run(until=lambda: step(w) is None)

    state = w.aggregate("churn").promotion
    assert state.history[-1].outcome == "rolled_back"
    assert (w.endpoint.live, north.live, south.live) == ({V1: 100}, {V0: 100}, {V1: 100})
    assert (set(w.endpoint.deployed), set(north.deployed), set(south.deployed)) == (
        {V1},
        {V0},
        {V1},
    )
    for endpoint in (w.endpoint, north, south):
        assert endpoint.violations == []
    [rolled] = w.events.of_type("promotion.rolled_back")
    assert "ring-3 (churn-south)" in rolled["reason"]
    assert w.aggregate("churn").outbox == []


def test_reconcile_repairs_a_later_ring_changed_by_hand_and_clears_the_drift() -> None:
    w = rings_world()
    south = w.ring_endpoints["churn-south"]
    south.deploy("churn", "0", V0)
    south.live = {V0: 100}  # someone in the portal, on the south ring only
    report = w.runtime.maintenance.sweep()
    [found] = report["drift"]
    assert "on churn-south" in found["summary"]
    drift = w.aggregate("churn").promotion.drift
    assert drift is not None and drift.endpoint == "churn-south"
    w.deliver_due()
    assert south.live == {V1: 100}  # no promotion running: repaired (the default)
    assert w.endpoint.live == {V1: 100}
    w.runtime.maintenance.sweep()
    w.deliver_due()
    assert w.aggregate("churn").promotion.drift is None
    assert "endpoint.drift_resolved" in w.audit.actions("churn")


def test_reconcile_knows_a_ring_that_moved_serves_the_candidate() -> None:
    w = rings_world()
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: step(w) == "ring-3")
    report = w.runtime.maintenance.sweep()
    assert report["drift"] == []  # the north ring on the candidate is what the state says
    w.ring_endpoints["churn-north"].live = {V0: 100}  # moved back by hand
    report = w.runtime.maintenance.sweep()
    assert ["on churn-north" in d["summary"] for d in report["drift"]] == [True]
    active = w.aggregate("churn").promotion.active
    assert active is not None and active.paused  # during a promotion: a person decides


def test_status_shows_each_ring() -> None:
    w = rings_world()
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: step(w) == "ring-3")
    rings = w.runtime.queries.model_status("churn")["rings"]
    assert rings == [
        {"endpoint": "churn-ep", "serving_version": "2", "state": "done"},
        {"endpoint": "churn-north", "serving_version": "2", "state": "done"},
        {"endpoint": "churn-south", "serving_version": "1", "state": "deploying"},
    ]
    w.run(until=lambda: step(w) is None)
    rings = w.runtime.queries.model_status("churn")["rings"]
    assert [(r["serving_version"], r["state"]) for r in rings] == [("2", "serving")] * 3


# --------------------------------------------------------------------------- review fixes


def reconcile(w: FakeWorld) -> ReconcileReport:
    reconciler = w.runtime.maintenance.reconciler
    assert reconciler is not None
    return reconciler.reconcile()


def waiting(w: FakeWorld, *effects: Effect) -> None:
    """Arrange: these effects wait in the model's outbox (as a crash after the save leaves
    them)."""
    items = [OutboxItem(id=f"1-{index}", effect=effect) for index, effect in enumerate(effects)]

    def change(aggregate: ModelAggregate) -> ModelAggregate:
        return aggregate.model_copy(update={"outbox": [*aggregate.outbox, *items]})

    w.store.seed("churn", change)


def test_only_the_paging_rings_own_traffic_clears_its_alert() -> None:
    w = fake_runtime(
        policy_yaml("churn", rings=RINGS, production_holdback="0"),
        settings=fake_settings(MAX_EFFECT_ATTEMPTS="2", EFFECT_RETRY_SECONDS="600"),
    )
    north, south = FakeEndpoint(), FakeEndpoint()
    w.ring_endpoints.update({"churn-north": north, "churn-south": south})
    for ring, version in ((north, "0"), (south, "1")):
        ring.serve("churn", "2")
        ring.serve("churn", version)
        ring.live = {V2: 100}
    # A rollback on both later rings: north cannot be reached at all, south for a while.
    waiting(
        w,
        SetTraffic(traffic={V0: 100, V2: 0}, restore=True, endpoint="churn-north"),
        SetTraffic(traffic={V1: 100, V2: 0}, restore=True, endpoint="churn-south"),
    )
    north.faults.fail_always("set_traffic", EndpointError("north: 503", transient=True))
    south.faults.fail("set_traffic", *[EndpointError("south: 503", transient=True)] * 3)
    start = w.clock()
    for minutes in (0, 5, 11):
        w.clock.advance_to(start + timedelta(minutes=minutes))
        with pytest.raises(EndpointError):
            w.runtime.outbox.dispatch("churn")
    alert = w.aggregate("churn").traffic_alert
    assert alert is not None and alert.endpoint == "churn-north"

    w.clock.advance_to(start + timedelta(minutes=30))
    with pytest.raises(EndpointError):
        w.runtime.outbox.dispatch("churn")
    assert south.live == {V1: 100}  # south's rollback held: north's has not
    assert w.aggregate("churn").traffic_alert == alert
    assert "rollback.traffic_restored" not in w.events.types()

    north.faults.clear()
    w.runtime.outbox.dispatch("churn")
    assert north.live == {V0: 100} and w.aggregate("churn").traffic_alert is None
    assert "rollback.traffic_restored" in w.events.types()


def test_a_ring_that_cannot_be_read_is_skipped_alone() -> None:
    w = rings_world()
    w.endpoint.live = {V0: 100}  # the first ring, changed by hand
    w.endpoint.deploy("churn", "0", V0)
    report = reconcile(w)
    assert [d["summary"].startswith("traffic") for d in report.drifted] == [True]
    w.deliver_due()  # no promotion: repaired
    assert w.endpoint.live == {V1: 100}

    north = w.ring_endpoints["churn-north"]
    north.faults.fail_always("traffic", EndpointError("north unreachable", transient=True))
    report = reconcile(w)
    assert report.failed == [] and report.checked == ["churn"]
    assert report.skipped["churn"].startswith("churn-north: not read: EndpointError")
    w.deliver_due()
    # The first ring, read back in line, clears its drift; south was compared too.
    assert w.aggregate("churn").promotion.drift is None
    assert "endpoint.drift_resolved" in w.audit.actions("churn")


def test_a_rings_waiting_effects_hold_back_only_that_rings_compare() -> None:
    w = rings_world()
    north = w.ring_endpoints["churn-north"]
    # North's own traffic map is on its way (its endpoint still applying an update).
    north.faults.fail_always("set_traffic", DeploymentBusy("north: applying an update"))
    waiting(w, SetTraffic(traffic={"churn-v0": 100}, endpoint="churn-north"))
    report = reconcile(w)
    assert report.checked == ["churn"] and report.drifted == []
    assert report.skipped["churn"] == "churn-north: endpoint effects on their way"

    w.endpoint.live = {}  # the first ring, emptied by hand
    report = reconcile(w)
    [found] = report.drifted
    assert "on churn-" not in found["summary"]  # the first ring's drift
    assert report.failed == []


def test_a_ring_removed_from_the_policy_mid_promotion_is_still_walked_reconciled_and_shown() -> (
    None
):
    w = rings_world()
    north, south = w.ring_endpoints["churn-north"], w.ring_endpoints["churn-south"]
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: step(w) == "ring-3")
    without_north = "[{endpoint: churn-ep}, {endpoint: churn-south}]"
    w.policies["churn"] = parse_policy(
        policy_yaml("churn", rings=without_north, production_holdback="0")
    )
    rings = w.runtime.queries.model_status("churn")["rings"]
    assert [(r["endpoint"], r["serving_version"]) for r in rings] == [
        ("churn-ep", "2"),
        ("churn-north", "2"),
        ("churn-south", "1"),
    ]
    north.live = {V0: 100}  # moved back by hand on the removed ring
    report = reconcile(w)
    assert ["on churn-north" in d["summary"] for d in report.drifted] == [True]
    assert w.endpoint.live == {V2: 100}  # the fake never mixes a removed ring up with it

    active = w.aggregate("churn").promotion.active
    assert active is not None and active.paused  # by the drift, for a person
    command = ResumePromotion(promotion_id=active.id, requested_by="oncall@contoso.com")
    envelope = message("ResumePromotion", "churn", command, message_id=f"resume:{active.id}")
    w.handle(signed(w.runtime, envelope, "oncall@contoso.com", roles=["Promotion.Operate"]))
    assert north.live == {V2: 100}  # the resume put the removed ring back too
    w.run(until=lambda: step(w) is None)
    state = w.aggregate("churn").promotion
    assert state.history[-1].outcome == "completed"
    assert (north.live, south.live) == ({V2: 100}, {V2: 100})
    assert set(north.deployed) == {V2}
