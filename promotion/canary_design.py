"""The group-sequential design of a promotion's canary, planned from the policy. Pure.

One design per rate gate spans every canary step: a look at the end of each step, step k of K
waiting until the gate's information reaches k/K of the design's maximum (information =
effective samples `n_c n_p / (n_c + n_p)`). The design is planned at the ramp's final
cumulative allocation (production samples per canary sample), which itself depends on the
design: found by iteration. Plans are cached: the same policy numbers give the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from domain.policy import CanarySettings
from promotion.sequential import (
    SequentialDesign,
    Spending,
    effective_samples,
    plan_design,
    spending_boundaries,
)


@dataclass(frozen=True)
class StepTarget:
    """Cumulative samples per arm at the end of a step, when traffic splits as planned."""

    candidate: int
    production: int
    fraction: float  # planned information fraction of the look that ends the step


@dataclass(frozen=True)
class GatePlan:
    metric: str
    unit: str  # what is counted: "labeled requests" (accuracy) or "requests" (error rate)
    design: SequentialDesign
    targets: tuple[StepTarget, ...]  # one per canary step
    fixed_horizon: StepTarget  # the one-look test of the same power, along the same ramp


def canary_plan(settings: CanarySettings) -> dict[str, GatePlan]:
    """The design of every rate gate, by metric (latency gates have none: their looks share
    the rate gates' information fractions, or the planned ones)."""
    return {
        gate.metric: plan_gate(
            gate.metric,
            gate.margin,
            gate.alpha,
            settings.power,
            gate.rate_to_plan,
            tuple(settings.steps),
            settings.spending,
        )
        for gate in settings.gates
        if gate.metric != "latency_ms"
    }


@lru_cache(maxsize=256)
def plan_gate(
    metric: str,
    margin: float,
    alpha: float,
    power: float,
    rate: float,
    steps: tuple[int, ...],
    spending: Spending,
) -> GatePlan:
    if not steps:
        raise ValueError("a canary design needs at least one step")
    looks = len(steps)
    fractions = tuple((k + 1) / looks for k in range(looks))
    higher_is_better = metric == "accuracy"
    ratio = 1.0
    for _ in range(30):
        design = plan_design(
            margin,
            alpha,
            power,
            rate,
            planned_fractions=fractions,
            spending=spending,
            higher_is_better=higher_is_better,
            ratio=ratio,
        )
        targets = _ramp(design.max_information, fractions, steps)
        new_ratio = targets[-1].production / targets[-1].candidate
        if abs(new_ratio - ratio) < 1e-3:
            break
        ratio = new_ratio
    targets = tuple(
        StepTarget(t.candidate, t.production, fraction)
        for t, fraction in zip(targets, fractions, strict=True)
    )
    fixed = _ramp(design.fixed_information, fractions, steps)[-1]
    return GatePlan(
        metric=metric,
        unit="labeled requests" if higher_is_better else "requests",
        design=design,
        targets=targets,
        fixed_horizon=StepTarget(fixed.candidate, fixed.production, 1.0),
    )


def _ramp(
    max_information: float, fractions: Sequence[float], steps: Sequence[int]
) -> list[StepTarget]:
    """Cumulative samples when each step runs until its share of the information."""
    n_c = n_p = 0.0
    targets: list[StepTarget] = []
    for share, fraction in zip(steps, fractions, strict=True):
        w = share / 100
        goal = fraction * max_information
        # effective(n_c + w r, n_p + (1 - w) r) = goal is a quadratic in r: solve it.
        a = w * (1 - w)
        b = w * n_p + (1 - w) * n_c - goal
        c = n_c * n_p - goal * (n_c + n_p)
        requests = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        n_c, n_p = math.ceil(n_c + w * requests - 1e-9), math.ceil(n_p + (1 - w) * requests - 1e-9)
        targets.append(
            StepTarget(int(n_c), int(n_p), effective_samples(n_c, n_p) / max_information)
        )
    return targets


@lru_cache(maxsize=65_536)
def boundary(fractions: tuple[float, ...], alpha: float, spending: Spending) -> float:
    """The z boundary of the latest look, given every look's information fraction (cached:
    the benchmark's promotions share their looks)."""
    return spending_boundaries(fractions, alpha, spending)[-1]


@lru_cache(maxsize=65_536)
def bake_boundary(
    fractions: tuple[float, ...], information: tuple[float, ...], alpha: float, spending: Spending
) -> float:
    """The z boundary of the production bake's latest look: alpha spent by the bake's calendar
    fractions, the looks correlated by their observed information (docs/canary-statistics.md,
    the production bake)."""
    return spending_boundaries(fractions, alpha, spending, information)[-1]
