"""Operating characteristics of the canary gates, through the real `decide` and gates.

Simulated promotions under the shipped policy (policies/breast-cancer.yml: steps 10/25/50,
accuracy margin 0.02, error-rate margin 0.01, p95 latency margin 20 %, alpha 0.05, power 0.9;
approval left out). Production: accuracy 0.90, error rate 0.01, lognormal latencies (median
50 ms, p95 2.3 x the median). Every request is labeled (as in issue 16). Traffic is steady:
`volume` requests per bake (30 min), split by the step's weight; each gate check reads the
step's window so far as the metrics adapter would (latencies thinned to 5,000 per arm, as
pipelines/canary/evaluate_canary.py does). The promotion is driven by `decide` from the
deployment until it reaches the production bake (promoted), is rolled back, or pauses
(undecided: a person decides).

Printed per traffic volume: identical candidates rolled back or paused, candidates at the
margin (the worst case of "worse than the margin") promoted, tail-only latency regressions
caught (rolled back), and the labeled requests used to a decision next to the fixed-horizon
test's along the same ramp. Aims (issue 16): identical rolled back <= 5 %, at the margin
promoted <= 5 %, p95 doubled at an equal median caught >= 95 %.

The production bake (`--parts bake`): bakes with the policy's holdback (5 %) from their start
(a promote-now, so every run starts the same bake), the candidate at 95 % and the holdback at
5 % over the bake's window, looked at every canary.bake until completed, rolled back or paused.
Rows: an identical candidate and one exactly at the error-rate margin (wrongly rolled back: at
most alpha), and candidates that degrade only at 100 % (caught: rolled back).

Run: python -m benchmarks.bench_canary_stats [--runs 2000] [--volumes 3000 12000 48000]
     [--parts canary bake]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics
from domain.policy import ModelPolicy, parse_policy
from promotion.canary_design import canary_plan
from promotion.commands import DeploymentReady, GateCheck, PromoteNow, StartPromotion
from promotion.machine import decide, observation_needed
from promotion.state import PromotionState, PromotionStatus, ServingModel

POLICY = Path(__file__).resolve().parent.parent / "policies" / "breast-cancer.yml"
ACCURACY = 0.90
ERROR_RATE = 0.01
MEDIAN_MS = 50.0
SIGMA = 0.5  # p95 = exp(1.645 * 0.5) = 2.27 x the median
Z95 = 1.6448536269514722
LATENCY_SAMPLE = 5_000  # evaluate_canary.DEFAULT_LATENCY_SAMPLE
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    label: str
    accuracy: float = ACCURACY
    error_rate: float = ERROR_RATE
    sigma: float = SIGMA  # of log latency
    scale: float = 1.0  # latency multiplier


def candidates(policy: ModelPolicy) -> list[Candidate]:
    margins = {gate.metric: gate.margin for gate in policy.canary.gates}
    heavy_tail = SIGMA + math.log(2.0) / Z95  # the same median, p95 twice production's
    return [
        Candidate("identical to production"),
        Candidate(
            f"accuracy at the margin (-{margins['accuracy']:g})",
            accuracy=ACCURACY - margins["accuracy"],
        ),
        Candidate("accuracy 3 points worse", accuracy=ACCURACY - 0.03),
        Candidate(
            f"error rate at the margin (+{margins['error_rate']:g})",
            error_rate=ERROR_RATE + margins["error_rate"],
        ),
        Candidate(
            f"p95 at the margin (x{1 + margins['latency_ms']:g})",
            scale=1 + margins["latency_ms"],
        ),
        Candidate("same median, p95 doubled", sigma=heavy_tail),
    ]


def shipped_policy() -> ModelPolicy:
    policy = parse_policy(POLICY.read_text(), POLICY)
    return policy.model_copy(
        update={"approval": policy.approval.model_copy(update={"required": False})}
    )


def canary_start(policy: ModelPolicy) -> tuple[PromotionState, datetime]:
    """The state when the canary's first step starts, through decide (the same every run)."""
    old = ServingModel(version="1", deployment="breast-cancer-v1", since=T0)
    state = PromotionState(champion=old, last_known_good=old)
    now = T0
    offline = OfflineMetrics(candidate={"auc": 0.99}, champion={"auc": 0.99})
    state = decide(state, StartPromotion(candidate_version="2", offline=offline), policy, now).state
    assert state.active is not None
    ready = DeploymentReady(
        promotion_id=state.active.id, deployment=state.active.candidate_deployment
    )
    state = decide(state, ready, policy, now).state
    assert state.active is not None and state.active.status == PromotionStatus.CANARY
    return state, now


class Arm:
    """One deployment's traffic in the current step's window."""

    def __init__(self, name: str, accuracy: float, error_rate: float, sigma: float, scale: float):
        self.name, self.accuracy, self.error_rate = name, accuracy, error_rate
        self.sigma, self.scale = sigma, scale
        self.reset()

    def reset(self) -> None:
        self.requests = self.errors = self.correct = 0
        self.latencies: list[np.ndarray] = []

    def serve(self, rng: np.random.Generator, requests: int) -> None:
        errors = int(rng.binomial(requests, self.error_rate))
        self.requests += requests
        self.errors += errors
        # Every request labeled; the accuracy is judged on the labeled requests.
        self.correct += int(rng.binomial(requests, self.accuracy))
        ok = requests - errors
        self.latencies.append(self.scale * rng.lognormal(math.log(MEDIAN_MS), self.sigma, ok))

    def stats(self) -> ArmStats:
        sample = np.concatenate(self.latencies) if self.latencies else np.empty(0)
        if sample.size > LATENCY_SAMPLE:  # evenly thinned, as the evaluation does
            sample = sample[np.linspace(0, sample.size - 1, LATENCY_SAMPLE).astype(int)]
        return ArmStats(
            deployment=self.name,
            requests=self.requests,
            errors=self.errors,
            labeled=self.requests,
            correct=self.correct,
            latency_ms=sample.tolist(),
        )


def simulate(
    policy: ModelPolicy,
    start: tuple[PromotionState, datetime],
    candidate: Candidate,
    volume: int,
    rng: np.random.Generator,
) -> tuple[str, int]:
    """One promotion from the canary's first step: (outcome, labeled requests used)."""
    state, now = start
    active = state.active
    assert active is not None and active.baseline is not None
    canary = Arm(
        active.candidate_deployment,
        candidate.accuracy,
        candidate.error_rate,
        candidate.sigma,
        candidate.scale,
    )
    production = Arm(active.baseline.deployment, ACCURACY, ERROR_RATE, SIGMA, 1.0)
    used = 0
    step = active.step
    served_until = now
    while True:
        active = state.active
        if active is None:
            return ("rolled back", used)
        if active.status == PromotionStatus.PRODUCTION_BAKE:
            return ("promoted", used)
        if active.paused:
            return ("paused", used)
        if active.step != step:  # a new step: a new window
            used += canary.requests + production.requests
            canary.reset()
            production.reset()
            step = active.step
        assert active.pending_check_id is not None and active.check_due_at is not None
        due = active.check_due_at
        requests = round(volume * (due - served_until) / policy.canary.bake)
        weight = active.traffic_weight / 100
        canary.serve(rng, round(requests * weight))
        production.serve(rng, requests - round(requests * weight))
        served_until = now = due
        check = GateCheck(
            promotion_id=active.id, step=active.step, check_id=active.pending_check_id
        )
        request = observation_needed(state, check, policy, now)
        assert request is not None and request.kind == "live"
        live = LiveMetrics(
            window_start=active.step_started_at,
            window_end=now,
            arms={arm.name: arm.stats() for arm in (canary, production)},
        )
        decision = decide(state, check.model_copy(update={"live": live}), policy, now)
        state = decision.state
        if state.active is None or state.active.step != step or state.active.paused:
            used += canary.requests + production.requests
            canary.reset()
            production.reset()
            if state.active is not None and not state.active.paused:
                step = state.active.step


# --- the production bake with a concurrent holdback ---------------------------------------------


def bake_candidates(policy: ModelPolicy) -> list[Candidate]:
    """Candidates as they behave at 100 % (the canary let them through): identical, and three
    that degrade only under full load, each beyond its gate's margin."""
    margins = {gate.metric: gate.margin for gate in policy.canary.gates}
    heavy_tail = SIGMA + math.log(2.0) / Z95
    return [
        Candidate("identical to production"),
        Candidate(
            f"error rate at the margin at 100 % (+{margins['error_rate']:g})",
            error_rate=ERROR_RATE + margins["error_rate"],
        ),
        Candidate(
            f"error rate 1 % -> 4 % at 100 % (margin {margins['error_rate']:g})",
            error_rate=0.04,
        ),
        Candidate("same median, p95 doubled at 100 %", sigma=heavy_tail),
        Candidate(
            f"accuracy 5 points worse at 100 % (margin {margins['accuracy']:g})",
            accuracy=ACCURACY - 0.05,
        ),
    ]


def bake_start(policy: ModelPolicy) -> tuple[PromotionState, datetime]:
    """The state when the production bake starts (a person's promote-now skips the canary, so
    every run starts the same bake), through decide."""
    state, now = canary_start(policy)
    assert state.active is not None
    promote = PromoteNow(promotion_id=state.active.id, reason="bench", requested_by="bench")
    state = decide(state, promote, policy, now).state
    assert state.active is not None and state.active.status == PromotionStatus.PRODUCTION_BAKE
    return state, now


def simulate_bake(
    policy: ModelPolicy,
    start: tuple[PromotionState, datetime],
    candidate: Candidate,
    volume: int,
    rng: np.random.Generator,
) -> tuple[str, int]:
    """One production bake: (completed | rolled back | paused, gate checks used). Both arms
    are read over the bake's window so far, as the metrics adapter does."""
    state, now = start
    active = state.active
    assert active is not None and active.baseline is not None
    served = Arm(
        active.candidate_deployment,
        candidate.accuracy,
        candidate.error_rate,
        candidate.sigma,
        candidate.scale,
    )
    holdback = Arm(active.baseline.deployment, ACCURACY, ERROR_RATE, SIGMA, 1.0)
    weight = active.traffic_weight / 100
    served_until, checks = now, 0
    while True:
        active = state.active
        if active is None:
            return (str(state.history[-1].outcome).replace("_", " "), checks)
        if active.paused:
            return ("paused", checks)
        assert active.pending_check_id is not None and active.check_due_at is not None
        due = active.check_due_at
        requests = round(volume * (due - served_until) / policy.canary.bake)
        served.serve(rng, round(requests * weight))
        holdback.serve(rng, requests - round(requests * weight))
        served_until = now = due
        check = GateCheck(
            promotion_id=active.id, step=active.step, check_id=active.pending_check_id
        )
        live = LiveMetrics(
            window_start=active.step_started_at,
            window_end=now,
            arms={arm.name: arm.stats() for arm in (served, holdback)},
        )
        state = decide(state, check.model_copy(update={"live": live}), policy, now).state
        checks += 1


def run_bake(runs: int, volumes: Sequence[int], seed: int) -> list[dict[str, object]]:
    policy = shipped_policy()
    start = bake_start(policy)
    rows: list[dict[str, object]] = []
    for volume in volumes:
        for index, candidate in enumerate(bake_candidates(policy)):
            rng = np.random.default_rng([seed, volume, 100 + index])
            counts = {"completed": 0, "rolled back": 0, "paused": 0}
            checks = 0
            for _ in range(runs):
                outcome, used = simulate_bake(policy, start, candidate, volume, rng)
                counts[outcome] += 1
                checks += used
            rows.append(
                {
                    "volume": volume,
                    "candidate": candidate.label,
                    **{key: value / runs for key, value in counts.items()},
                    "checks": checks / runs,
                }
            )
    return rows


def fixed_horizon_labeled(policy: ModelPolicy) -> int:
    plans = canary_plan(policy.canary)
    return max(
        plan.fixed_horizon.candidate + plan.fixed_horizon.production for plan in plans.values()
    )


def run(runs: int, volumes: Sequence[int], seed: int) -> list[dict[str, object]]:
    policy = shipped_policy()
    start = canary_start(policy)
    rows: list[dict[str, object]] = []
    for volume in volumes:
        for index, candidate in enumerate(candidates(policy)):
            rng = np.random.default_rng([seed, volume, index])
            counts = {"promoted": 0, "rolled back": 0, "paused": 0}
            used = 0
            for _ in range(runs):
                outcome, labeled = simulate(policy, start, candidate, volume, rng)
                counts[outcome] += 1
                used += labeled
            rows.append(
                {
                    "volume": volume,
                    "candidate": candidate.label,
                    **{key: value / runs for key, value in counts.items()},
                    "labeled": used / runs,
                }
            )
    return rows


def main(
    runs: int = 2_000,
    volumes: Sequence[int] = (3_000, 12_000, 48_000),
    seed: int = 16,
    parts: Sequence[str] = ("canary", "bake"),
) -> None:
    started = time.perf_counter()
    if "canary" in parts:
        main_canary(runs, volumes, seed)
    if "bake" in parts:
        main_bake(runs, volumes, seed)
    print(f"\nseconds: {time.perf_counter() - started:.0f}")


def main_bake(runs: int, volumes: Sequence[int], seed: int) -> None:
    policy = shipped_policy()
    print(
        f"\nproduction bake: {policy.production_bake} with {policy.production_holdback} % held "
        f"back on the previous deployment, a look every {policy.canary.bake} (a test for harm "
        f"beyond each gate's margin, {policy.canary.spending} spending by the bake's time, "
        f"Holm across the gates); {runs:,} bakes per row, every request labeled\n"
    )
    print("| requests per bake | candidate at 100 % | completed | rolled back | paused | checks |")
    print("|---|---|---|---|---|---|")
    for row in run_bake(runs, volumes, seed):
        print(
            f"| {row['volume']:,} | {row['candidate']} | {row['completed']:.3f} "
            f"| {row['rolled back']:.3f} | {row['paused']:.3f} | {row['checks']:.2f} |"
        )


def main_canary(runs: int, volumes: Sequence[int], seed: int) -> None:
    policy = shipped_policy()
    plans = canary_plan(policy.canary)
    fixed = fixed_horizon_labeled(policy)
    print(
        f"policy {POLICY.name}: steps {policy.canary.steps}, power {policy.canary.power}, "
        f"{policy.canary.spending} spending, bake {policy.canary.bake}, "
        f"max_step_duration {policy.canary.max_step_duration}, on_exhausted "
        f"{policy.canary.on_exhausted}"
    )
    for metric, plan in plans.items():
        targets = ", ".join(f"{t.candidate:,} / {t.production:,}" for t in plan.targets)
        bounds = ", ".join(f"{b:.3f}" for b in plan.design.boundaries)
        print(
            f"  {metric}: canary / production {plan.unit} by the end of each step: {targets}; "
            f"boundaries {bounds}"
        )
    print(f"  fixed-horizon test along the same ramp: {fixed:,} labeled requests")
    rows = run(runs, volumes, seed)
    mc = math.sqrt(0.05 * 0.95 / runs)
    print(f"\n{runs:,} promotions per row; Monte Carlo SE at 5 %: {mc:.4f}\n")
    print(
        "| requests per bake | candidate | promoted | rolled back | paused "
        "| labeled to a decision / fixed horizon |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['volume']:,} | {row['candidate']} | {row['promoted']:.3f} "
            f"| {row['rolled back']:.3f} | {row['paused']:.3f} "
            f"| {row['labeled']:,.0f} / {fixed:,} = {float(row['labeled']) / fixed:.2f} |"  # type: ignore[arg-type]
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--volumes", type=int, nargs="+", default=[3_000, 12_000, 48_000])
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--parts", nargs="+", choices=["canary", "bake"], default=["canary", "bake"]
    )
    arguments = parser.parse_args()
    main(arguments.runs, arguments.volumes, arguments.seed, arguments.parts)
