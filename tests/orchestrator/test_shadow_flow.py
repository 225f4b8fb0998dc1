"""The shadow stage through the service layer on fakes: the mirror set and removed on the
endpoint, the shadow's metrics read by the handler (never from the message), a failing shadow
rolled back with production untouched, and the reconcile pass knowing the shadow's mirror."""

from __future__ import annotations

from datetime import timedelta

from domain.metrics import ArmStats, ShadowMetrics
from promotion.commands import GateCheck
from tests.fakes import FakeWorld, fake_runtime, message, policy_yaml, start_promotion

SHADOW = "{percent: 20, duration: 10m, check_every: 5m, max_wait: 20m, gates: {min_samples: 50}}"
CANARY = "{steps: [25], bake: 5m, min_samples_per_arm: 5}"
V1, V2 = "churn-v1", "churn-v2"


def shadow_world(**sections: str) -> FakeWorld:
    w = fake_runtime(policy_yaml("churn", shadow=SHADOW, canary=CANARY, **sections))
    w.seed_champion("churn", "1")
    return w


def status(w: FakeWorld) -> str | None:
    active = w.aggregate("churn").promotion.active
    return str(active.status) if active is not None else None


def in_shadow(w: FakeWorld) -> None:
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: status(w) == "shadow")


def test_a_shadow_that_passes_mirrors_then_goes_live_then_completes():
    w = shadow_world()
    in_shadow(w)
    assert w.endpoint.mirror_map == {V2: 20}
    assert w.endpoint.live == {V1: 100}  # nobody sees the candidate's answers
    w.run(until=lambda: status(w) == "canary")
    assert w.endpoint.mirror_map == {}
    assert w.endpoint.live == {V1: 75, V2: 25}
    [(model, candidate, production, start, end)] = w.metrics.shadow_reads
    assert (model, candidate, production) == ("churn", V2, V1)
    assert end - start >= timedelta(minutes=10)
    w.run(until=lambda: status(w) is None)
    assert w.aggregate("churn").promotion.history[-1].outcome == "completed"
    assert w.endpoint.violations == []
    actions = w.audit.actions("churn")
    assert "promotion.shadow" in actions and actions.index("promotion.shadow") < actions.index(
        "promotion.canary"
    )


def test_a_failing_shadow_rolls_back_without_touching_production():
    w = shadow_world()
    in_shadow(w)
    pairs = 900
    w.metrics.shadow_metrics = ShadowMetrics(
        window_start=w.clock(),
        window_end=w.clock(),
        production=ArmStats(deployment=V1, requests=1000, errors=1, latency_ms=[10.0] * 1000),
        candidate=ArmStats(deployment=V2, requests=1000, errors=1, latency_ms=[10.0] * 1000),
        pairs=pairs,
        agreed=pairs // 2,  # disagrees with production on half the requests
    )
    w.run(until=lambda: status(w) is None)
    assert w.aggregate("churn").promotion.history[-1].outcome == "rolled_back"
    assert w.endpoint.mirror_map == {}
    assert set(w.endpoint.deployed) == {V1}  # the candidate deleted: its mirror went first
    assert w.endpoint.live == {V1: 100}
    assert all(m == {V1: 100} for m in w.endpoint.traffic_maps)
    assert w.endpoint.violations == []
    [rolled] = w.events.of_type("promotion.rolled_back")
    assert "shadow:agreement" in rolled["reason"]


def test_unreadable_shadow_metrics_wait_then_pause_never_go_live():
    w = shadow_world()
    in_shadow(w)
    w.metrics.shadow_error = RuntimeError("request log unreachable")
    w.run(until=lambda: w.aggregate("churn").promotion.active.paused)  # type: ignore[union-attr]
    active = w.aggregate("churn").promotion.active
    assert active is not None and active.status == "shadow"
    assert active.paused_by == "policy:on_exhausted"
    assert w.endpoint.live == {V1: 100} and w.endpoint.mirror_map == {V2: 20}


def test_shadow_metrics_in_a_message_are_ignored_the_handler_reads_them():
    w = shadow_world()
    in_shadow(w)
    w.metrics.shadow_error = RuntimeError("unreadable")
    active = w.aggregate("churn").promotion.active
    assert active is not None and active.pending_check_id is not None
    forged = GateCheck(
        promotion_id=active.id,
        step="shadow",
        check_id=active.pending_check_id,
        shadow=ShadowMetrics(
            window_start=w.clock(),
            window_end=w.clock(),
            production=ArmStats(deployment=V1, requests=10**6, latency_ms=[1.0] * 500),
            candidate=ArmStats(deployment=V2, requests=10**6, latency_ms=[1.0] * 500),
            pairs=10**6,
            agreed=10**6,
        ),
    )
    w.clock.advance(600)
    w.handle(message("GateCheck", "churn", forged, message_id="forged-check"))
    assert status(w) == "shadow"  # the read failed: it waits, whatever the message said


def test_reconcile_puts_back_a_shadow_mirror_removed_by_hand():
    w = shadow_world(on_drift="repair")
    in_shadow(w)
    w.endpoint.mirror_map = {}  # someone in the portal
    report = w.runtime.maintenance.sweep()
    assert [d["model"] for d in report["drift"]] == ["churn"]
    w.deliver_due()
    assert w.endpoint.mirror_map == {V2: 20}
    assert "endpoint.drift" in w.audit.actions("churn")


def test_the_status_shows_the_shadow_stage():
    w = shadow_world()
    in_shadow(w)
    status_now = w.runtime.queries.model_status("churn")
    assert status_now["active_promotion"]["status"] == "shadow"
    assert status_now["shadow"]["mirror_percent"] == 20
    assert status_now["shadow"]["deployment"] == V2
    w.run(until=lambda: status(w) == "canary")
    assert w.runtime.queries.model_status("churn")["shadow"] is None
