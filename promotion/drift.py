"""What the endpoint should serve, by the state, and how what it really serves differs.

The timer's reconcile pass (orchestrator/reconcile.py) reads the endpoint's deployments and
live traffic and compares them with `expected_endpoint(state)`, as Flagger and Argo Rollouts
re-read the real routes on every pass. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from promotion.state import Drift, PromotionState, PromotionStatus

# Before the candidate takes traffic, the endpoint serves what served before the promotion.
_BEFORE_TRAFFIC = frozenset(
    {
        PromotionStatus.CANDIDATE,
        PromotionStatus.STAGING_GATE,
        PromotionStatus.AWAITING_APPROVAL,
        PromotionStatus.DEPLOYING,
    }
)


class ExpectedEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    traffic: dict[str, int]  # the live split, zero weights left out
    deployments: dict[str, str]  # deployment -> model version, each must exist and be healthy
    mirror: dict[str, int] = {}  # the mirror (shadow) map; none outside a shadow stage


class ObservedDeployment(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    state: str  # creating | succeeded | failed | deleting
    version: str | None = None


def expected_endpoint(state: PromotionState) -> ExpectedEndpoint | None:
    """What the endpoint must serve now; None when the state says nothing about it (no model
    has reached it yet)."""
    active = state.active
    champion = state.champion
    if active is None or active.status in _BEFORE_TRAFFIC:
        if champion is None:
            return None
        return ExpectedEndpoint(
            traffic={champion.deployment: 100},
            deployments={champion.deployment: champion.version},
        )
    candidate = {active.candidate_deployment: active.candidate_version}
    baseline = active.baseline
    kept = {baseline.deployment: baseline.version} if baseline is not None else {}
    if active.status == PromotionStatus.SHADOW and baseline is not None:
        # Production serves everything; the candidate gets its mirrored copy.
        return ExpectedEndpoint(
            traffic={baseline.deployment: 100},
            deployments=kept | candidate,
            mirror={active.candidate_deployment: active.shadow_percent},
        )
    if active.status == PromotionStatus.CANARY and baseline is not None:
        weight = active.traffic_weight
        traffic = {baseline.deployment: 100 - weight, active.candidate_deployment: weight}
        return ExpectedEndpoint(
            traffic={name: w for name, w in traffic.items() if w}, deployments=kept | candidate
        )
    # Baking: the candidate, and the baseline kept as the way back, serving the holdback's
    # share (none: all traffic on the candidate).
    holdback = active.holdback if baseline is not None else 0
    traffic = {active.candidate_deployment: 100 - holdback}
    if holdback and baseline is not None:
        traffic[baseline.deployment] = holdback
    return ExpectedEndpoint(traffic=traffic, deployments=kept | candidate)


def expected_ring(state: PromotionState, endpoint: str) -> ExpectedEndpoint | None:
    """What a later ring's endpoint must serve now; None when nothing has reached it yet."""
    own = state.rings.get(endpoint)
    kept = {own.deployment: own.version} if own is not None else {}
    active = state.active
    if active is not None and active.status == PromotionStatus.RING:
        moved = active.rings[: active.rings_moved]
        if endpoint in moved:
            # All its traffic on the candidate; its own known-good kept as the way back.
            return ExpectedEndpoint(
                traffic={active.candidate_deployment: 100},
                deployments=kept | {active.candidate_deployment: active.candidate_version},
            )
    if own is None:
        return None
    return ExpectedEndpoint(traffic={own.deployment: 100}, deployments=kept)


def find_drift(
    expected: ExpectedEndpoint,
    actual_traffic: dict[str, int],
    deployments: Iterable[ObservedDeployment],
    actual_mirror: dict[str, int] | None = None,
) -> Drift | None:
    """The drift, or None when the endpoint serves what the state says. A deployment the
    state needs that is still being created or updated is not drift yet (a repair converging).
    `actual_mirror`: the endpoint's mirror map as read (None: not read, not compared)."""
    found = {deployment.name: deployment for deployment in deployments}
    live = {name: weight for name, weight in actual_traffic.items() if weight}
    missing = tuple(sorted(name for name in expected.deployments if name not in found))
    unhealthy = tuple(
        sorted(
            name
            for name, version in expected.deployments.items()
            if name in found and found[name].state == "failed"
        )
    )
    mirror = (
        {name: weight for name, weight in actual_mirror.items() if weight}
        if actual_mirror is not None
        else dict(expected.mirror)
    )
    if live == expected.traffic and mirror == expected.mirror and not missing and not unhealthy:
        return None
    return Drift(
        expected_traffic=expected.traffic,
        actual_traffic=live,
        missing=missing,
        unhealthy=unhealthy,
        expected_mirror=dict(expected.mirror),
        actual_mirror=mirror,
    )


def converging(expected: ExpectedEndpoint, deployments: Iterable[ObservedDeployment]) -> bool:
    """A deployment the state needs is being created or removed: look again next pass."""
    return any(
        deployment.name in expected.deployments and deployment.state in ("creating", "deleting")
        for deployment in deployments
    )
