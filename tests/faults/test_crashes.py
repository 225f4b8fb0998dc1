"""Crash injection at every boundary of a promotion flow (issue 8, item 2).

The flow: v1 serves 100% (arranged); data lands in two batches -> one window -> one training
job -> v2 -> staging gate -> deploy -> canary 10% -> 50% -> production -> bake -> completed,
v1 removed. The process dies once, at one point:

(a) after a save, before its dispatch (`Orchestrator.dispatch` with work pending);
(b) in the middle of a dispatch: just before, or just after, the Nth effect's port call;
(c) right after `endpoint.deploy` started the deployment, before the DeploymentCheck is sent.

The same crash points are tried where things go wrong: the first canary step's gate fails
(rolled back) and the deployment fails (failed), counting from there.

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

from orchestrator.messages import Envelope
from tests.faults.flow_harness import (  # noqa: F401
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
Scenario = Literal["promoted", "rolled_back", "failed"]
# Where the crash points start: the whole flow, or from the failing gate / the deployment.
ARM_ON: dict[Scenario, str | None] = {
    "promoted": None,
    "rolled_back": "metrics.live",
    "failed": "endpoint.deploy",
}
EXPECTED: dict[Scenario, tuple[str, list[tuple[str, str]]]] = {
    "promoted": ("2", [("2", "completed")]),  # champion, history
    "rolled_back": ("1", [("2", "rolled_back")]),
    "failed": ("1", [("2", "failed")]),
}

_baselines: dict[Scenario, dict[str, Any]] = {}


def crash_flow(
    flow_settings: Any,
    plan: CrashPlan,
    mode: Mode = "redeliver",
    at_crash: Callable[[Courier], None] | None = None,
    scenario: Scenario = "promoted",
) -> Courier:
    """v1 serves; v2 is trained and promoted (or its first canary step fails: rolled back; or
    its deployment fails: failed). The plan counts from the start, or from ARM_ON."""
    settings = flow_settings({MODEL: flow_policy(MODEL, approval=False)})
    world = World()
    if scenario == "rolled_back":
        world.metrics.live_mode = "fail"
    if scenario == "failed":
        world.endpoint.failing_versions = {"2"}
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
    plan.armed = ARM_ON[scenario] is None
    plan.arm_on = ARM_ON[scenario]
    for batch in range(2):
        courier.inject(landed(MODEL, 0, batch, 3))
    courier.run()
    return courier


def baseline(flow_settings: Any, scenario: Scenario = "promoted") -> dict[str, Any]:
    """The crash-free outcome, and how many crash points of each kind the flow has."""
    if scenario not in _baselines:
        counting = CrashPlan("before_dispatch", at=0)
        courier = crash_flow(flow_settings, counting, scenario=scenario)
        check_invariants(courier.process, courier.world, MODEL)
        _baselines[scenario] = {
            "state": final_state(courier.process, MODEL),
            "points": dict(counting.seen),
        }
    return _baselines[scenario]


def assert_repaired(courier: Courier, plan: CrashPlan, expected: dict[str, Any]) -> None:
    assert plan.fired is not None, f"{plan.point} #{plan.at} was never reached"
    assert courier.stats.crashes == 1 and courier.stats.restarts == 1
    process = courier.process
    state = final_state(process, MODEL)
    assert state == expected["state"], plan.fired
    # No orphan deployment, nothing stuck, nothing left in the outbox, no audit entry twice.
    check_invariants(process, courier.world, MODEL)
    champion = f"fraud-v{state['champion']}"
    assert courier.world.endpoint.live == {champion: 100}
    assert set(courier.world.endpoint.deployed) == {champion}
    assert courier.world.training.jobs == ["fraud-20260302t090000-1"]


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_without_a_crash_the_flow_ends_as_expected(flow_settings: Any, scenario: Scenario) -> None:
    expected = baseline(flow_settings, scenario)
    champion, history = EXPECTED[scenario]
    state = expected["state"]
    assert (state["champion"], state["history"]) == (champion, history)
    assert (
        state["transitions"].count("promotion.canary")
        == {
            "promoted": 2,
            "rolled_back": 1,
            "failed": 0,
        }[scenario]
    )
    points = expected["points"]
    # A dispatch after each transition with effects; an effect port call for each effect.
    assert points["before_port_call"] == points["after_port_call"]
    # (Data an open window carries writes nothing, so it dispatches nothing.)
    assert points["before_dispatch"] >= {"promoted": 9, "rolled_back": 1, "failed": 1}[scenario]
    assert points["before_port_call"] >= {"promoted": 20, "rolled_back": 4, "failed": 4}[scenario]


def chunks(split: dict[Scenario, int] | None = None) -> list[tuple[Scenario, int]]:
    """(scenario, chunk) cases; `split` gives a scenario fewer chunks than CHUNKS where it has
    fewer crash points than that (a chunk must never be empty)."""
    split = split or {}
    return [
        (scenario, chunk) for scenario in EXPECTED for chunk in range(split.get(scenario, CHUNKS))
    ]


# A rollback or a failed deployment is one transition with effects: one point to crash before.
DISPATCH_SPLIT: dict[Scenario, int] = {"rolled_back": 1, "failed": 1}


@pytest.mark.parametrize(("scenario", "chunk"), chunks(DISPATCH_SPLIT))
def test_a_crash_between_the_save_and_the_dispatch_is_repaired(
    flow_settings: Any, scenario: Scenario, chunk: int, request: pytest.FixtureRequest
) -> None:
    expected = baseline(flow_settings, scenario)
    total = expected["points"]["before_dispatch"]
    step = DISPATCH_SPLIT.get(scenario, CHUNKS)
    assert total > chunk, f"chunk {chunk} of {scenario} has no crash point"
    with collecting(request.node.nodeid) as figures:
        for at in range(1 + chunk, total + 1, step):
            mode = MODES[at % len(MODES)]
            plan = CrashPlan("before_dispatch", at)
            courier = crash_flow(flow_settings, plan, mode, scenario=scenario)
            assert_repaired(courier, plan, expected)
            figures.update(courier_figures(courier))
            figures["crash_points"] += 1
            figures["flows"] += 1
            figures[f"repaired_by_{mode}"] += 1


@pytest.mark.parametrize(("scenario", "chunk"), chunks())
def test_a_crash_in_the_middle_of_a_dispatch_is_repaired(
    flow_settings: Any, scenario: Scenario, chunk: int, request: pytest.FixtureRequest
) -> None:
    """Each effect port call of the flow: the process dies just before it (odd calls) or
    just after it returned (even calls): the effect is then carried out again."""
    expected = baseline(flow_settings, scenario)
    total = expected["points"]["before_port_call"]
    assert total > chunk, f"chunk {chunk} of {scenario} has no crash point"
    with collecting(request.node.nodeid) as figures:
        for at in range(1 + chunk, total + 1, CHUNKS):
            point: CrashPoint = "before_port_call" if at % 2 else "after_port_call"
            mode = MODES[(at // 2) % len(MODES)]
            plan = CrashPlan(point, at)
            courier = crash_flow(flow_settings, plan, mode, scenario=scenario)
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
            at_crash.append((set(courier.world.endpoint.deployed), checks))

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


def test_a_crash_after_the_rollback_deleted_the_candidate_is_repaired(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    """The rollback's outbox is [traffic {v1: 100, v2: 0}, delete v2, ...]. Dying after the
    delete, the repair sets the traffic again, when v2 no longer exists: the map must still
    be accepted (a deployment at 0% is one left out), or the rollback never finishes."""
    expected = baseline(flow_settings, "rolled_back")
    with collecting(request.node.nodeid) as figures:
        plan = CrashPlan("after_port_call", 1, calls=frozenset({"endpoint.delete"}))
        courier = crash_flow(flow_settings, plan, "redeliver", scenario="rolled_back")
        assert plan.fired == "after_port_call #1: endpoint.delete"
        assert_repaired(courier, plan, expected)
        assert courier.world.endpoint.traffic_maps[-2:] == [{"fraud-v1": 100}] * 2
        figures["crash_points"] += 1
        figures["flows"] += 1


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
            process.handlers.handle(envelope)
        aggregate = Process(settings, world).aggregate(MODEL)
        assert aggregate.has_seen(envelope.message_id) and aggregate.outbox
        assert world.sends == 0  # the window's close was never scheduled

        survivor = Process(settings, world)
        report = survivor.maintenance.sweep()
        assert report["redispatched"] == len(aggregate.outbox)
        assert survivor.aggregate(MODEL).outbox == []
        assert world.sends == 1
        records = survivor.audit(MODEL)
        assert [r.action for r in records] == ["retrain.data_accumulated", "retrain.window_opened"]
        assert survivor.maintenance.sweep()["redispatched"] == 0  # idempotent
        figures["crash_points"] += 1
        figures["sweeps"] += 2


class RegistryDownFor:
    """The model registry refusing one model's tags (its MLflow experiment is broken)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.tags: list[tuple[str, str]] = []

    def tag(self, model: str, version: str, tags: dict[str, str]) -> None:
        if model == self.model:
            raise RuntimeError(f"registry refuses tags of {model}")
        self.tags.append((model, version))


def test_one_model_whose_effects_keep_failing_does_not_stop_the_sweep_for_the_others(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    """Two models' processes died between the save and the dispatch. The registry refuses the
    first model's tags: the sweep still finishes the second model's outbox, and says which
    model it could not."""
    settings = flow_settings(
        {name: flow_policy(name, approval=False) for name in ("alpha", "beta")}
    )
    world = World()
    world.registry = RegistryDownFor("alpha")  # type: ignore[assignment]
    for model, envelope in (
        ("alpha", Envelope.new("StartPromotion", "alpha", {"candidate_version": "1"})),
        ("beta", landed("beta", 0, 0, 3)),
    ):
        dying = Process(settings, world, CrashPlan("before_dispatch", 1))
        if envelope.type == "StartPromotion":  # the app's own message: signed
            envelope = dying.runtime.signer.sign(envelope)
        with pytest.raises(ProcessDied):
            dying.handlers.handle(envelope)
        assert Process(settings, world).aggregate(model).outbox

    survivor = Process(settings, world)
    report = survivor.maintenance.sweep()

    assert survivor.aggregate("beta").outbox == []  # beta's window close was scheduled
    # beta's window close, and alpha's staging check: the failing tag holds back no other target
    assert world.sends == 2
    assert [failure["model"] for failure in report["failed"]] == ["alpha"]
    assert "registry refuses tags of alpha" in report["failed"][0]["error"]
    # alpha's other effects ran; the refused tag waits for the next sweep.
    assert [i.effect.kind for i in survivor.aggregate("alpha").outbox] == ["tag_model_version"]
    with collecting(request.node.nodeid) as figures:
        figures["crash_points"] += 2
        figures["sweeps"] += 1
