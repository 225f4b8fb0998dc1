"""Operating characteristics of the sequential canary design (promotion/sequential.py).

A seeded simulation at the shipped policy numbers: steps 10/25/50 %, production accuracy 0.90,
margin 0.02, alpha 0.05, power 0.8, every request labeled. One group-sequential design spans the
whole canary: Lan-DeMets O'Brien-Fleming-type spending, one look at the end of each step, and a
step bakes until its share of the design's information is reached (1/3, 2/3, 1). At each look
the Farrington-Manning z passes at z >= c_k, fails at z <= -c_k, else the next step starts;
undecided at the last look the promotion pauses for a person.

Printed: how often each candidate is promoted, rolled back or paused, and the labeled requests
used, next to the fixed-horizon test's; then the p95 latency gate (order-statistic bounds at
each look's nominal alpha) for a same tail, a tail exactly at the 10 % margin and a tail 2.3
times production's at the same median. The design alone, on exactly planned looks; the same
design through the real `decide` and gates, at three traffic volumes: bench_canary_stats.py.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import brentq

from promotion.sequential import (
    SequentialDesign,
    effective_samples,
    farrington_manning,
    plan_design,
    quantile_ratio_test,
    spending_boundaries,
)

STEPS = (10, 25, 50)
PRODUCTION_ACCURACY = 0.90
MARGIN = 0.02
ALPHA = 0.05
POWER = 0.8
LATENCY_MARGIN = 0.10
MEDIAN_MS = 50.0
SIGMA = 0.5  # production latencies: lognormal, p95 = 2.27 x median
Z95 = 1.6448536269514722


@dataclass(frozen=True)
class Look:
    candidate: int  # cumulative labeled requests per arm at this look
    production: int
    fraction: float


def plan_looks(design: SequentialDesign, steps: Sequence[int] = STEPS) -> list[Look]:
    """Each step runs until the cumulative information reaches its planned fraction."""
    looks: list[Look] = []
    n_c = n_p = 0.0
    for share, fraction in zip(steps, design.planned_fractions, strict=True):
        target = fraction * design.max_information
        w = share / 100
        base_c, base_p = n_c, n_p

        def gap(
            requests: float,
            w: float = w,
            c: float = base_c,
            p: float = base_p,
            goal: float = target,
        ) -> float:
            return effective_samples(c + w * requests, p + (1 - w) * requests) - goal

        requests = brentq(gap, 0.0, 1e8)
        n_c, n_p = math.ceil(base_c + w * requests), math.ceil(base_p + (1 - w) * requests)
        looks.append(Look(int(n_c), int(n_p), design.fraction(n_c, n_p)))
    return looks


def plan_ramp(steps: Sequence[int] = STEPS) -> tuple[SequentialDesign, list[Look]]:
    """Plan at the ramp's final cumulative allocation (a fixed point: it depends on the plan)."""
    ratio = 1.0
    for _ in range(20):
        design = plan_design(MARGIN, ALPHA, POWER, PRODUCTION_ACCURACY, ratio=ratio)
        looks = plan_looks(design, steps)
        new_ratio = looks[-1].production / looks[-1].candidate
        if abs(new_ratio - ratio) < 1e-3:
            break
        ratio = new_ratio
    return design, looks


def simulate_accuracy(
    design: SequentialDesign, looks: list[Look], accuracy: float, runs: int, seed: int
) -> dict[str, float]:
    """Promotions through the looks; every candidate request is labeled."""
    rng = np.random.default_rng(seed)
    fractions = [look.fraction for look in looks]
    bounds = spending_boundaries(fractions, design.alpha, design.spending)
    outcome = {"pass": 0, "fail": 0, "paused": 0}
    used = 0
    previous = Look(0, 0, 0.0)
    increments = [
        (look.candidate - before.candidate, look.production - before.production)
        for before, look in zip([previous, *looks[:-1]], looks, strict=True)
    ]
    for _ in range(runs):
        x_c = x_p = 0
        verdict = "paused"
        for look, bound, (add_c, add_p) in zip(looks, bounds, increments, strict=True):
            x_c += int(rng.binomial(add_c, accuracy))
            x_p += int(rng.binomial(add_p, PRODUCTION_ACCURACY))
            z = farrington_manning(x_c, look.candidate, x_p, look.production, MARGIN).statistic
            used_here = look.candidate + look.production
            if z >= bound:
                verdict = "pass"
                break
            if z <= -bound:
                verdict = "fail"
                break
        outcome[verdict] += 1
        used += used_here
    return {key: value / runs for key, value in outcome.items()} | {"requests": used / runs}


def simulate_latency(
    looks: list[Look], nominal: Sequence[float], sigma: float, scale: float, runs: int, seed: int
) -> dict[str, float]:
    """The p95 gate alone: lognormal latencies, candidate `scale` x lognormal(median, sigma)."""
    rng = np.random.default_rng(seed)
    outcome = {"pass": 0, "fail": 0, "paused": 0}
    last = looks[-1]
    for _ in range(runs):
        production = rng.lognormal(math.log(MEDIAN_MS), SIGMA, last.production)
        candidate = scale * rng.lognormal(math.log(MEDIAN_MS), sigma, last.candidate)
        verdict = "paused"
        for look, level in zip(looks, nominal, strict=True):
            result = quantile_ratio_test(
                candidate[: look.candidate],
                production[: look.production],
                quantile=0.95,
                margin=LATENCY_MARGIN,
                alpha=level,
            )
            if result.outcome != "inconclusive":
                verdict = result.outcome
                break
        outcome[verdict] += 1
    return {key: value / runs for key, value in outcome.items()}


def fixed_horizon_requests(design: SequentialDesign, steps: Sequence[int] = STEPS) -> int:
    """Requests the fixed-horizon test needs along the same ramp (one look at its information)."""
    fixed = plan_looks(replace(design, max_information=design.fixed_information), steps)
    return fixed[-1].candidate + fixed[-1].production


def main(runs: int = 20_000, latency_runs: int = 1_000, seed: int = 20261202) -> None:
    started = time.perf_counter()
    design, looks = plan_ramp()
    nominal = [float(a) for a in design.nominal_alphas]
    print(
        f"design: {design.spending} spending, alpha {design.alpha}, power {design.power}, "
        f"margin {design.margin}, planned at {design.ratio:.2f}:1, "
        f"inflation {design.inflation:.4f}, max information "
        f"{design.max_information:.0f} effective samples (fixed horizon "
        f"{design.fixed_information:.0f})"
    )
    for k, (look, bound, level) in enumerate(
        zip(looks, design.boundaries, nominal, strict=True), start=1
    ):
        print(
            f"  look {k} (end of the {STEPS[k - 1]} % step): t={look.fraction:.3f} "
            f"canary {look.candidate:,} / production {look.production:,} labeled, "
            f"z >= {bound:.3f} passes (nominal alpha {level:.4f}), z <= {-bound:.3f} fails"
        )
    fixed = fixed_horizon_requests(design)
    print(f"  fixed-horizon test on the same ramp: {fixed:,} labeled requests, one look")
    mc = math.sqrt(ALPHA * (1 - ALPHA) / runs)
    print(f"\naccuracy gate ({runs:,} promotions per row; Monte Carlo SE at 0.05: {mc:.4f})")
    header = f"{'candidate accuracy':<38}{'promoted':>9}{'rolled back':>12}{'paused':>8}"
    print(f"{header}{'requests used':>15}{'/ fixed':>9}")
    rows = [
        ("0.88: at the margin (false pass)", PRODUCTION_ACCURACY - MARGIN),
        ("0.90: identical (power at 0)", PRODUCTION_ACCURACY),
        ("0.89: 1 point worse (power)", PRODUCTION_ACCURACY - 0.01),
        ("0.87: 3 points worse (beyond margin)", PRODUCTION_ACCURACY - MARGIN - 0.01),
    ]
    for index, (label, accuracy) in enumerate(rows):
        result = simulate_accuracy(design, looks, accuracy, runs, seed + index)
        print(
            f"{label:<38}{result['pass']:>9.4f}{result['fail']:>12.4f}{result['paused']:>8.4f}"
            f"{result['requests']:>15,.0f}{result['requests'] / fixed:>9.2f}"
        )
    print(
        f"\np95 latency gate ({latency_runs:,} promotions per row; order-statistic bounds at "
        f"each look's nominal alpha, margin {LATENCY_MARGIN:.0%})"
    )
    print(f"{'candidate latency':<38}{'promoted':>9}{'rolled back':>12}{'paused':>8}")
    heavy = SIGMA + math.log(2.3) / Z95  # same median, p95 2.3 x production's
    latency_rows = [
        ("same distribution", SIGMA, 1.0),
        ("p95 1.1 x (at the margin)", SIGMA, 1 + LATENCY_MARGIN),
        ("same median, p95 2.3 x", heavy, 1.0),
    ]
    for index, (label, sigma, scale) in enumerate(latency_rows):
        result = simulate_latency(looks, nominal, sigma, scale, latency_runs, seed + 100 + index)
        print(f"{label:<38}{result['pass']:>9.4f}{result['fail']:>12.4f}{result['paused']:>8.4f}")
    print(f"\nseconds: {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--latency-runs", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=20261202)
    arguments = parser.parse_args()
    main(arguments.runs, arguments.latency_runs, arguments.seed)
