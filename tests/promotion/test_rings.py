"""Rings (policy `rings`): after the first ring's production bake the candidate walks the later
rings one by one (deployed, all traffic, its own bake and gate); a failure in any ring rolls
back every ring that moved, the last first, each to its OWN known-good. Pure: the machine
driven through its own commands."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.effects import DeleteDeployment, DeployModel, SetTraffic
from domain.policy import PolicyError, parse_policy
from promotion.commands import (
    DeploymentFailed,
    DeploymentReady,
    EndpointDrift,
    EndpointInSync,
    PromoteNow,
    ResumePromotion,
)
from promotion.drift import expected_endpoint, expected_ring
from promotion.machine import observation_needed
from promotion.state import PromotionState, PromotionStatus

from .support import Harness, dep, make_policy, serving, with_champion

S = PromotionStatus
NORTH, SOUTH = "churn-north", "churn-south"
RINGS = [
    {"endpoint": "churn-endpoint"},
    {"endpoint": NORTH, "bake": "20m", "max_error_rate": 0.02},
    {"endpoint": SOUTH},
]


def walking(**policy: object) -> Harness:
    """In the first ring's production bake; north serves v0 and south v1 before it."""
    state = with_champion("1").model_copy(
        update={"rings": {NORTH: serving("0"), SOUTH: serving("1")}}
    )
    h = Harness(make_policy(rings=RINGS, **policy), state)
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=dep("2")))
    h.send(h.check("pass"))
    h.send(h.check("pass"))
    assert h.status == S.PRODUCTION_BAKE
    return h


def ready_on(h: Harness, endpoint: str) -> DeploymentReady:
    return DeploymentReady(promotion_id=h.active.id, deployment=dep("2"), endpoint=endpoint)


def on_ring(endpoint: str, **policy: object) -> Harness:
    """The candidate on the later ring `endpoint`, its traffic moved, its bake running."""
    h = walking(**policy)
    h.send(h.check("pass"))  # the first ring's bake
    if endpoint == SOUTH:
        h.send(ready_on(h, NORTH))
        h.send(h.check("pass"))
    h.send(ready_on(h, endpoint))
    assert h.status == S.RING and h.active.rings_moved == h.active.ring_index + 1
    return h


def test_the_candidate_walks_every_ring_and_each_old_deployment_goes() -> None:
    h = walking()
    h.send(h.check("pass"))
    assert (h.status, h.active.step) == (S.RING, "ring-2")
    assert DeployModel(model_version="2", deployment=dep("2"), endpoint=NORTH) in h.last.effects
    # Its traffic waits for the deployment on that ring.
    assert not any(isinstance(e, SetTraffic) and e.endpoint == NORTH for e in h.last.effects)
    assert h.active.pending_check_id is None

    h.send(ready_on(h, NORTH))
    assert SetTraffic(traffic={dep("2"): 100, dep("0"): 0}, endpoint=NORTH) in h.last.effects
    assert h.active.check_due_at == h.now + timedelta(minutes=20)  # the ring's own bake
    request = observation_needed(h.state, h.check("pass"), h.policy, h.now)
    assert request is not None and [arm.endpoint for arm in request.arms] == [NORTH]

    h.send(h.check("pass"))
    assert (h.status, h.active.step) == (S.RING, "ring-3")
    assert DeployModel(model_version="2", deployment=dep("2"), endpoint=SOUTH) in h.last.effects
    h.send(ready_on(h, SOUTH))
    assert h.active.check_due_at == h.now + timedelta(hours=1)  # no bake: production_bake
    h.send(h.check("pass"))

    assert h.status == S.COMPLETED
    effects = h.last.effects
    assert DeleteDeployment(deployment=dep("1")) in effects
    assert DeleteDeployment(deployment=dep("0"), endpoint=NORTH) in effects
    assert DeleteDeployment(deployment=dep("1"), endpoint=SOUTH) in effects
    assert h.state.champion is not None and h.state.champion.version == "2"
    assert h.state.last_known_good == h.state.champion
    assert {name: ring.version for name, ring in h.state.rings.items()} == {
        NORTH: "2",
        SOUTH: "2",
    }


def test_a_failing_ring_rolls_back_every_ring_that_moved_last_first_each_to_its_own() -> None:
    h = on_ring(SOUTH)
    h.send(h.check("fail"))
    assert h.status == S.ROLLED_BACK
    endpoint_effects = [
        (type(e).__name__, e.endpoint, getattr(e, "traffic", None) or e.deployment)
        for e in h.last.effects
        if isinstance(e, (DeployModel, SetTraffic, DeleteDeployment))
    ]
    assert endpoint_effects == [
        ("DeployModel", SOUTH, dep("1")),
        ("SetTraffic", SOUTH, {dep("1"): 100, dep("2"): 0}),
        ("DeleteDeployment", SOUTH, dep("2")),
        ("DeployModel", NORTH, dep("0")),  # north's own known-good, not the first ring's
        ("SetTraffic", NORTH, {dep("0"): 100, dep("2"): 0}),
        ("DeleteDeployment", NORTH, dep("2")),
        ("DeployModel", None, dep("1")),
        ("SetTraffic", None, {dep("1"): 100, dep("2"): 0}),
        ("DeleteDeployment", None, dep("2")),
    ]
    assert all(e.restore for e in h.last.effects if isinstance(e, SetTraffic))
    assert h.state.champion == serving("1")
    assert h.state.rings == {NORTH: serving("0"), SOUTH: serving("1")}


def test_a_ring_deployment_that_fails_rolls_back_what_moved() -> None:
    h = on_ring(NORTH)
    h.send(h.check("pass"))
    assert h.active.step == "ring-3"
    h.send(
        DeploymentFailed(promotion_id=h.active.id, deployment=dep("2"), endpoint=SOUTH, error="x")
    )
    assert h.status == S.FAILED
    deletes = [e.endpoint for e in h.last.effects if isinstance(e, DeleteDeployment)]
    assert deletes == [SOUTH, NORTH, None]


def test_a_ready_report_from_another_endpoint_changes_nothing() -> None:
    h = walking()
    h.send(h.check("pass"))
    decision = h.send(ready_on(h, SOUTH))
    assert decision.ignored and h.active.rings_moved == 0


@pytest.mark.parametrize("quality", ["none", "few"])
def test_missing_or_too_few_metrics_never_pass_a_ring(quality: str) -> None:
    h = on_ring(NORTH)  # make_policy: canary.max_extensions 1, on_exhausted pause
    h.send(h.check(quality))  # type: ignore[arg-type]
    assert h.status == S.RING and h.active.inconclusive == 1
    h.send(h.check(quality))  # type: ignore[arg-type]
    assert h.status == S.RING and h.active.paused

    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="carol"))
    h.send(h.check("pass"))
    assert h.active.step == "ring-3"


def test_out_of_extensions_with_on_exhausted_rollback_rolls_back() -> None:
    canary = make_policy().canary.model_dump(mode="json") | {"on_exhausted": "rollback"}
    h = on_ring(NORTH, canary=canary)
    h.send(h.check("none"))
    h.send(h.check("none"))
    assert h.status == S.ROLLED_BACK


def test_a_ring_paused_before_its_deployment_is_ready_moves_traffic_on_resume() -> None:
    from promotion.commands import PausePromotion

    h = walking()
    h.send(h.check("pass"))
    h.send(PausePromotion(promotion_id=h.active.id, requested_by="carol"))
    h.send(ready_on(h, NORTH))
    assert not any(isinstance(e, SetTraffic) for e in h.last.effects)
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="carol"))
    assert SetTraffic(traffic={dep("2"): 100, dep("0"): 0}, endpoint=NORTH) in h.last.effects
    assert h.active.pending_check_id is not None


def test_the_first_ring_holdback_goes_to_the_candidate_when_the_rings_start() -> None:
    h = walking(production_holdback=5)
    while h.status == S.PRODUCTION_BAKE:
        h.send(h.check("pass"), advance=timedelta(0))
    assert h.status == S.RING
    assert SetTraffic(traffic={dep("2"): 100, dep("1"): 0}) in h.last.effects


def test_without_rings_nothing_changes() -> None:
    h = Harness(make_policy(), with_champion("1"))
    assert h.policy.rings == []
    h.start()
    assert h.active.rings == ()


def first_model_baking(**policy: object) -> Harness:
    """A first model (nothing served anywhere before) in the first ring's production bake."""
    h = Harness(make_policy(rings=RINGS, **policy), PromotionState())
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=dep("2")))
    assert h.status == S.PRODUCTION_BAKE and h.active.baseline is None
    return h


def walk_the_later_rings(h: Harness) -> None:
    for endpoint in (NORTH, SOUTH):
        assert (h.status, h.active.rings[h.active.ring_index]) == (S.RING, endpoint)
        h.send(ready_on(h, endpoint))
        h.send(h.check("pass"))


def test_a_first_model_promoted_now_still_walks_the_later_rings() -> None:
    h = first_model_baking()
    h.send(PromoteNow(promotion_id=h.active.id, requested_by="carol", reason="go"))
    assert (h.status, h.active.step) == (S.RING, "ring-2")
    assert DeployModel(model_version="2", deployment=dep("2"), endpoint=NORTH) in h.last.effects
    assert h.state.rings == {}  # nothing serves the candidate there yet, by the state
    assert h.active.steps[-1].caused_by == "carol"
    walk_the_later_rings(h)
    assert h.status == S.COMPLETED
    assert {name: ring.version for name, ring in h.state.rings.items()} == {NORTH: "2", SOUTH: "2"}


def test_a_first_model_bake_passed_without_traffic_still_walks_the_later_rings() -> None:
    h = first_model_baking(first_model={"bake_without_traffic": "pass"})
    h.send(h.check("few"))  # 50 requests, no errors
    assert "bake.passed_without_traffic" in [entry.action for entry in h.last.audit]
    assert (h.status, h.active.step) == (S.RING, "ring-2")
    assert h.state.rings == {}
    walk_the_later_rings(h)
    assert h.status == S.COMPLETED
    assert set(h.state.rings) == {NORTH, SOUTH}


def test_resume_puts_the_first_ring_back_while_a_later_ring_is_being_deployed() -> None:
    h = walking()
    h.send(h.check("pass"))  # the north ring's deployment is being created
    assert h.status == S.RING and not h.active.deployment_ready
    expected = expected_endpoint(h.state)
    assert expected is not None
    drift = EndpointDrift(expected_traffic=expected.traffic, actual_traffic={dep("1"): 100})
    h.send(drift)
    assert h.active.paused

    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="carol"))
    assert SetTraffic(traffic={dep("2"): 100}) in h.last.effects  # the first ring, put back
    assert h.state.drift is None
    # The north ring's traffic still waits for its deployment; the same drift found again
    # pauses again.
    assert not any(isinstance(e, SetTraffic) and e.endpoint == NORTH for e in h.last.effects)
    h.send(drift)
    assert h.active.paused


def test_resume_leaves_the_ring_being_deployed_to_its_deployment() -> None:
    h = walking()
    h.send(h.check("pass"))
    expected = expected_ring(h.state, NORTH)
    assert expected is not None and expected.traffic == {dep("0"): 100}
    h.send(
        EndpointDrift(
            expected_traffic=expected.traffic, actual_traffic={dep("9"): 100}, endpoint=NORTH
        )
    )
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="carol"))
    # No traffic map while its deployment is being created: its traffic moves once it is ready.
    assert not any(isinstance(e, SetTraffic) for e in h.last.effects)
    h.send(ready_on(h, NORTH))
    assert SetTraffic(traffic={dep("2"): 100, dep("0"): 0}, endpoint=NORTH) in h.last.effects


def test_a_ring_removed_from_the_policy_meanwhile_is_walked_as_it_was_at_the_start() -> None:
    h = walking()
    h.send(h.check("pass"))  # ring-2: north, baked 20m by the policy at the start
    h.policy = make_policy(rings=[RINGS[0], RINGS[2]])  # north removed meanwhile
    h.send(ready_on(h, NORTH))
    assert h.active.check_due_at == h.now + timedelta(minutes=20)
    h.send(h.check("pass"))
    assert not h.active.paused and h.active.step == "ring-3"
    h.send(ready_on(h, SOUTH))
    h.send(h.check("pass"))
    assert h.status == S.COMPLETED
    assert {name: ring.version for name, ring in h.state.rings.items()} == {NORTH: "2", SOUTH: "2"}


def test_a_completed_promotion_stops_following_a_ring_removed_before_it_started() -> None:
    state = with_champion("1").model_copy(
        update={"rings": {NORTH: serving("0"), SOUTH: serving("1")}}
    )
    h = Harness(make_policy(rings=[RINGS[0], RINGS[2]]), state)
    h.start()
    assert h.active.rings == (SOUTH,)
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=dep("2")))
    while h.status != S.RING:
        h.send(h.check("pass"))
    h.send(ready_on(h, SOUTH))
    h.send(h.check("pass"))
    assert h.status == S.COMPLETED
    assert set(h.state.rings) == {SOUTH}
    assert not any(e.endpoint == NORTH for e in h.last.effects if hasattr(e, "endpoint"))


@pytest.mark.parametrize(
    ("rings", "says"),
    [
        ("[{endpoint: churn-north}]", "rings: .*the first ring must be the model"),
        (
            "[{endpoint: churn-endpoint}, {endpoint: churn-endpoint}]",
            "rings: .*each ring names a different endpoint",
        ),
        ("[{endpoint: churn-endpoint, bake: 5m}]", "leave its bake out"),
        ("[{endpoint: churn-endpoint, max_error_rate: 0.05}]", "rings: .*leave its max_error"),
        ("[{endpoint: churn-endpoint}, {endpoint: n, bake: 5m}]", "rings.1.endpoint"),
        ("[{endpoint: churn-endpoint}, {endpoint: churn-north, color: red}]", "rings.1.color"),
    ],
)
def test_a_bad_rings_section_is_a_policy_error(rings: str, says: str) -> None:
    head = "model: churn\nendpoint: churn-endpoint\ndata: {container: churn-data}\n"
    text = f"{head}rings: {rings}\n"
    with pytest.raises(PolicyError, match=says):
        parse_policy(text, "policies/churn.yml")


def test_an_endpoint_back_in_line_clears_only_a_drift_found_on_that_endpoint() -> None:
    h = walking()
    h.send(h.check("pass"))
    expected = expected_ring(h.state, NORTH)
    assert expected is not None
    h.send(
        EndpointDrift(
            expected_traffic=expected.traffic, actual_traffic={dep("9"): 100}, endpoint=NORTH
        )
    )
    assert h.state.drift is not None and h.state.drift.endpoint == NORTH
    # The model's own endpoint read in line (a message sent before the ring drifted, say):
    # the ring's drift stays.
    h.send(EndpointInSync())
    assert h.state.drift is not None and h.last.ignored
    h.send(EndpointInSync(endpoint=NORTH))
    assert h.state.drift is None
    assert "endpoint.drift_resolved" in [entry.action for entry in h.last.audit]
