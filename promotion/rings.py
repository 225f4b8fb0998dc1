"""Rings: the later endpoints (policy `rings`) a candidate reaches after the first ring's
production bake, one by one, each with its own bake and gate (docs/promotion.md, Rings).

Pure: the step names and a later ring's gate. The walk itself is in promotion/machine.py.
"""

from __future__ import annotations

from domain.metrics import LiveMetrics
from domain.policy import RingSettings
from promotion.gates import GateEvidence, GateResult
from promotion.state import PromotionState


def ring_endpoints(state: PromotionState) -> tuple[str, ...]:
    """The later rings the state knows, in order: the active promotion's (fixed when it
    started, whatever the policy says now), then any other ring the state says serves a model.
    What the reconcile pass compares and the status shows (not the policy's rings: a ring
    removed from it may still serve the candidate)."""
    walked = state.active.rings if state.active is not None else ()
    return tuple(dict.fromkeys((*walked, *state.rings)))


def ring_step_name(index: int) -> str:
    """The step of the later ring `index` (0: the second ring overall)."""
    return f"ring-{index + 2}"


def evaluate_ring(
    ring: RingSettings, live: LiveMetrics | None, candidate: str, min_samples: int
) -> GateResult:
    """The candidate's error rate on the ring over its bake against the ring's bound: at least
    `min_samples` requests are needed; unread or too few metrics are inconclusive, never a
    pass."""
    arm = live.arms.get(candidate) if live is not None else None
    gate = f"ring:{ring.endpoint}:error_rate"
    if arm is None:
        return GateResult.combine(
            [GateEvidence(gate=gate, outcome="inconclusive", reason="no metrics read")]
        )
    samples = {"candidate": arm.requests}
    if arm.requests < min_samples:
        return GateResult.combine(
            [
                GateEvidence(
                    gate="samples",
                    outcome="inconclusive",
                    reason=f"{arm.requests} of {min_samples} requests on {ring.endpoint}",
                    samples=samples,
                    required={"candidate": min_samples},
                )
            ]
        )
    rate = arm.errors / arm.requests
    within = rate <= ring.max_error_rate
    return GateResult.combine(
        [
            GateEvidence(
                gate=gate,
                outcome="pass" if within else "fail",
                reason=(
                    f"error rate {rate:.4f} {'<=' if within else '>'} {ring.max_error_rate} "
                    f"on {ring.endpoint}"
                ),
                values={"candidate": rate},
                samples=samples,
                threshold=ring.max_error_rate,
            )
        ]
    )
