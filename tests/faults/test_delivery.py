"""Duplicate and reordered delivery across the whole flow (issue 8, item 1).

Two generations on real Azurite: data lands in several Event Hubs batches -> one window ->
one training job -> StartPromotion -> staging gate -> approval -> deploy -> (generation 2:
canary 10% -> 50%) -> production -> bake -> completed. Every message, ours and the outside
world's, is delivered 1-3 times in a seeded random order, scheduled ones sometimes early.
The outcome must be the one single, in-order delivery gives.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from orchestrator.messages import Envelope
from tests.faults.flow_harness import (  # noqa: F401
    Courier,
    Process,
    World,
    check_invariants,
    collecting,
    courier_figures,
    final_state,
    flow_policy,
    flow_settings_fixture,
    landed,
    make_runtime,
    run_generations,
)
from tests.harness import signed

MODEL = "churn"
SEEDS = range(6)

_reference: dict[str, Any] = {}


def run_flow(flow_settings: Any, rng: random.Random | None) -> tuple[Courier, World]:
    settings = flow_settings({MODEL: flow_policy(MODEL)})
    world = World()
    courier = Courier(world, lambda: Process(settings, world), rng)
    run_generations(courier, MODEL)
    return courier, world


def reference(flow_settings: Any) -> dict[str, Any]:
    """The outcome of delivering every message once, in order, on time (computed once)."""
    if not _reference:
        courier, world = run_flow(flow_settings, None)
        check_invariants(courier.process, world, MODEL)
        _reference.update(final_state(courier.process, MODEL))
    return _reference


def test_single_in_order_delivery_runs_the_whole_flow(flow_settings: Any) -> None:
    state = reference(flow_settings)
    assert state["champion"] == "2" and state["last_known_good"] == "2"
    assert state["champion_deployment"] == "churn-v2"
    assert state["history"] == [("1", "completed"), ("2", "completed")]
    assert [run[:2] for run in state["runs"]] == [("completed", "1"), ("completed", "2")]
    assert (state["trained_items"], state["pending_items"]) == (2 * 4 * 3, 0)
    transitions = state["transitions"]
    # Every stage of the flow happened, generation 2 through both canary steps.
    for action in (
        "retrain.window_opened",
        "retrain.job_submitted",
        "retrain.job_completed",
        "promotion.staging_gate",
        "promotion.awaiting_approval",
        "promotion.deploying",
        "deployment.ready",
        "promotion.canary",
        "promotion.production_bake",
        "promotion.completed",
    ):
        assert action in transitions, action
    assert transitions.count("promotion.canary") == 2
    assert transitions.count("retrain.job_submitted") == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_duplicated_and_reordered_delivery_reaches_the_same_outcome(
    flow_settings: Any, seed: int, request: pytest.FixtureRequest
) -> None:
    expected = reference(flow_settings)
    with collecting(request.node.nodeid) as figures:
        courier, world = run_flow(flow_settings, random.Random(seed))

        assert final_state(courier.process, MODEL) == expected
        check_invariants(courier.process, world, MODEL)
        # Exactly one training job per window, submitted once; one deploy call per version.
        assert len(world.training.jobs) == 2
        assert all(world.training.submissions_of(run) == 1 for run in world.training.jobs)
        assert dict(world.endpoint.deploy_calls) == {"churn-v1": 1, "churn-v2": 1}
        # v1 (the first model) goes straight to 100%; v2 through its canary: 10%, 50%, then
        # 95% with 5% held back on v1 through the bake, 100%, then v1 removed.
        assert world.endpoint.traffic_maps == [
            {"churn-v1": 100},
            {"churn-v1": 90, "churn-v2": 10},
            {"churn-v1": 50, "churn-v2": 50},
            {"churn-v2": 95, "churn-v1": 5},  # the bake's holdback
            {"churn-v2": 100},
        ]
        assert world.endpoint.deletes == ["churn-v1"]
        # The chaos really happened.
        stats = courier.stats
        assert stats.replayed > 0 and stats.statuses["duplicate"] > 0
        assert stats.reordered > 0 and stats.early > 0
        assert stats.delivered > stats.sent > 0
        figures.update(courier_figures(courier))
        figures["flows"] += 1


def test_a_first_model_rolled_back_in_its_bake_leaves_nothing_behind(flow_settings: Any) -> None:
    """No known-good version to return to: the only deployment goes, the endpoint serves
    nothing, and that is said in the rollback's event. Delivered twice, it changes nothing."""
    settings = flow_settings({MODEL: flow_policy(MODEL, production_bake="1h")})
    world = World()
    courier = Courier(world, lambda: Process(settings, world), None)
    for batch in range(2):
        courier.inject(landed(MODEL, 0, batch, 3))
    process = courier.process
    in_bake = lambda: (  # noqa: E731
        (active := process.aggregate(MODEL).promotion.active) is not None
        and active.status == "production_bake"
    )
    courier.run(until=in_bake)
    assert world.endpoint.live == {"churn-v1": 100}
    promotion_id = process.aggregate(MODEL).promotion.active.id  # type: ignore[union-attr]
    rollback = Envelope.new(
        "RollbackRequested",
        MODEL,
        {"promotion_id": promotion_id, "reason": "wrong features", "requested_by": "ops"},
        promotion_id=promotion_id,
    )
    rollback = signed(process.runtime, rollback, "ops@contoso.com", roles=["Promotion.Operate"])
    courier.inject(rollback)
    courier.inject(rollback)
    courier.run()

    state = final_state(courier.process, MODEL)
    assert state["champion"] is None and state["history"] == [("1", "rolled_back")]
    assert world.endpoint.deletes == ["churn-v1"] and world.endpoint.live == {}
    assert world.endpoint.deployed == {}
    [event] = [data for kind, _, data in world.events if kind == "promotion.rolled_back"]
    assert event["nothing_serves"] is True and event["serving_version"] is None
    check_invariants(courier.process, world, MODEL)
