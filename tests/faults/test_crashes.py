"""Crash injection at every boundary of a promotion flow (issue 8, item 2).

The flow: v1 serves 100% (arranged); data lands in two batches -> one window -> one training
job -> v2 -> staging gate -> deploy -> canary 10% -> 50% -> production -> bake -> completed,
v1 removed. The process dies once, at one point:

(a) after a save, before its dispatch (`Orchestrator.dispatch` with work pending);
(b) in the middle of a dispatch: just before, or just after, the Nth effect's port call;
(c) right after `endpoint.deploy` started the deployment, before the DeploymentCheck is sent.

A new process takes over. The crashed message is redelivered (the transport did not get a
completion), the timer's `sweep()` runs first or not; in "drop" mode an applied message is
lost and only the sweep can finish its effects. Every point of the flow is tried. Whatever the
point, the flow reaches the same outcome as without a crash, leaves no orphan deployment,
no promotion stuck, and no audit entry twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pytest

from tests.faults.flow_harness import (  # noqa: F401
    EFFECT_CALLS,
    Courier,
    CrashPlan,
    CrashPoint,
    Process,
    ProcessDied,
    World,
    check_invariants,
    collecting,
    courier_figures,
    final_state,
    flow_policy,
    flow_settings_fixture,
    landed,
    make_runtime,
    seed_champion,
)

MODEL = "fraud"
CHUNKS = 2
Mode = Literal["redeliver", "sweep", "drop"]
MODES: tuple[Mode, ...] = ("redeliver", "sweep", "drop")

_baseline: dict[str, Any] = {}


def crash_flow(
    flow_settings: Any,
    plan: CrashPlan,
    mode: Mode = "redeliver",
    at_crash: Callable[[Courier], None] | None = None,
) -> Courier:
    settings = flow_settings({MODEL: flow_policy(MODEL, approval=False)})
    world = World()
    plan.armed = False
    courier = Courier(
        world,
        lambda: Process(settings, world, plan),
        None,
        on_crash="drop" if mode == "drop" else "redeliver",
        sweep_on_restart=mode != "redeliver",
        at_crash=at_crash,
    )
    seed_champion(courier.process, world, MODEL)
    plan.armed = True
    for batch in range(2):
        courier.inject(landed(MODEL, 0, batch, 3))
    courier.run()
    return courier


def baseline(flow_settings: Any) -> dict[str, Any]:
    """The crash-free outcome, and how many crash points of each kind the flow has."""
    if not _baseline:
        counting = CrashPlan("before_dispatch", at=0)
        courier = crash_flow(flow_settings, counting)
        check_invariants(courier.process, courier.world, MODEL)
        _baseline["state"] = final_state(courier.process, MODEL)
        _baseline["points"] = dict(counting.seen)
    return _baseline


def assert_repaired(courier: Courier, plan: CrashPlan, expected: dict[str, Any]) -> None:
    assert plan.fired is not None, f"{plan.point} #{plan.at} was never reached"
    assert courier.stats.crashes == 1 and courier.stats.restarts == 1
    world = courier.world
    process = courier.process
    assert final_state(process, MODEL) == expected["state"], plan.fired
    check_invariants(process, world, MODEL)
    assert world.endpoint.live == {"fraud-v2": 100}
    assert set(world.endpoint.deployments) == {"fraud-v2"}
    assert world.training.jobs == ["fraud-20260302t090000-1"]


def test_without_a_crash_the_flow_completes(flow_settings: Any) -> None:
    expected = baseline(flow_settings)
    state = expected["state"]
    assert state["champion"] == "2" and state["history"] == [("2", "completed")]
    assert state["transitions"].count("promotion.canary") == 2
    points = expected["points"]
    # A dispatch after each transition with effects; an effect port call for each effect.
    assert points["before_dispatch"] >= 10
    assert points["before_port_call"] == points["after_port_call"] >= 20


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_a_crash_between_the_save_and_the_dispatch_is_repaired(
    flow_settings: Any, chunk: int, request: pytest.FixtureRequest
) -> None:
    expected = baseline(flow_settings)
    total = expected["points"]["before_dispatch"]
    with collecting(request.node.nodeid) as figures:
        for at in range(1 + chunk, total + 1, CHUNKS):
            mode = MODES[at % len(MODES)]
            plan = CrashPlan("before_dispatch", at)
            courier = crash_flow(flow_settings, plan, mode)
            assert_repaired(courier, plan, expected)
            figures.update(courier_figures(courier))
            figures["crash_points"] += 1
            figures["flows"] += 1
            figures[f"repaired_by_{mode}"] += 1


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_a_crash_in_the_middle_of_a_dispatch_is_repaired(
    flow_settings: Any, chunk: int, request: pytest.FixtureRequest
) -> None:
    """Each effect port call of the flow: the process dies just before it (odd calls) or
    just after it returned (even calls): the effect is then carried out again."""
    expected = baseline(flow_settings)
    total = expected["points"]["before_port_call"]
    with collecting(request.node.nodeid) as figures:
        for at in range(1 + chunk, total + 1, CHUNKS):
            point: CrashPoint = "before_port_call" if at % 2 else "after_port_call"
            mode = MODES[(at // 2) % len(MODES)]
            plan = CrashPlan(point, at)
            courier = crash_flow(flow_settings, plan, mode)
            assert_repaired(courier, plan, expected)
            figures.update(courier_figures(courier))
            figures["crash_points"] += 1
            figures["flows"] += 1
            figures[f"repaired_by_{mode}"] += 1


@pytest.mark.parametrize("mode", MODES)
def test_a_crash_after_the_deployment_started_leaves_no_orphan(
    flow_settings: Any, mode: Mode, request: pytest.FixtureRequest
) -> None:
    expected = baseline(flow_settings)
    with collecting(request.node.nodeid) as figures:
        plan = CrashPlan("after_port_call", 1, calls=frozenset({"endpoint.deploy"}))
        at_crash: list[tuple[set[str], list[str]]] = []

        def observe(courier: Courier) -> None:
            checks = [m for m in courier.world.not_before if ":deploy-check:" in m]
            at_crash.append((set(courier.world.endpoint.deployments), checks))

        courier = crash_flow(flow_settings, plan, mode, at_crash=observe)
        assert plan.fired == "after_port_call #1: endpoint.deploy"
        # When the process died the deployment existed, and nothing was sent to check on it.
        assert at_crash == [({"fraud-v1", "fraud-v2"}, [])]
        assert_repaired(courier, plan, expected)
        # The repair deployed again (a no-op on the existing deployment) and sent the check.
        world = courier.world
        assert world.endpoint.deploy_calls["fraud-v2"] == 2
        assert world.endpoint.creations["fraud-v2"] == 1
        checks = [
            envelope for envelope, _ in courier.outcomes if envelope.type == "DeploymentCheck"
        ]
        assert checks, "the deployment was never checked"
        figures.update(courier_figures(courier))
        figures["crash_points"] += 1
        figures["flows"] += 1
        figures[f"repaired_by_{mode}"] += 1


def test_the_sweep_alone_finishes_what_a_crash_left_in_the_outbox(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    """No redelivery at all: the message that was applied is lost with the process; the next
    process's timer finds the outbox and dispatches it."""
    with collecting(request.node.nodeid) as figures:
        plan = CrashPlan("before_dispatch", 1)
        settings = flow_settings({MODEL: flow_policy(MODEL, approval=False)})
        world = World()
        process = Process(settings, world, plan)
        plan.armed = False
        seed_champion(process, world, MODEL)
        plan.armed = True
        envelope = landed(MODEL, 0, 0, 3)
        with pytest.raises(ProcessDied, match="before_dispatch #1"):
            process.orchestrator.handle(envelope)
        aggregate = Process(settings, world).aggregate(MODEL)
        assert aggregate.has_seen(envelope.message_id) and aggregate.outbox
        assert world.sends == 0  # the window's close was never scheduled

        survivor = Process(settings, world)
        report = survivor.orchestrator.sweep()
        assert report["redispatched"] == len(aggregate.outbox)
        assert survivor.aggregate(MODEL).outbox == []
        assert world.sends == 1
        records = survivor.audit(MODEL)
        assert [r.action for r in records] == ["retrain.data_accumulated", "retrain.window_opened"]
        assert survivor.orchestrator.sweep()["redispatched"] == 0  # idempotent
        figures["crash_points"] += 1
        figures["sweeps"] += 2
