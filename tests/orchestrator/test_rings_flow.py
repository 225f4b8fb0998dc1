"""Rings through the service layer on fakes: the outbox deploys and moves traffic on each
ring's own endpoint (one fake endpoint per name), the deployment checks ask that endpoint,
the ring's metrics are read for that endpoint, and a failing ring rolls back every ring that
moved, each to its own known-good deployment, on its own endpoint."""

from __future__ import annotations

from tests.fakes import FakeWorld, fake_runtime, policy_yaml, start_promotion

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
