"""Pure gates: (gate spec, metrics snapshot) -> pass | fail | inconclusive, with the evidence.

Missing metrics and too few samples are always inconclusive, never a pass. scipy is imported
inside the functions that test, so importing this module stays cheap at cold start.

Canary rule (docs/canary-statistics.md): each gate tests non-inferiority against the tolerated
degradation `margin`, rates by the Farrington-Manning score test, latency on a tail quantile.
- pass: non-inferiority shown (every gate must pass: an intersection-union test, each gate at
  its own alpha);
- fail: inferiority beyond the margin shown by any gate, at Holm-adjusted levels (any one gate
  rolls back, so the family-wise error over the gates is controlled);
- inconclusive: neither (not enough evidence either way yet).
In the canary steps the levels come from the promotion's group-sequential design
(`judge_canary_look`); the production bake is one look at each gate's alpha (`evaluate_canary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics
from domain.policy import (
    RATE_METRICS,
    CanaryGate,
    CanarySettings,
    ChampionGate,
    StagingGate,
    ThresholdGate,
)

Outcome = Literal["pass", "fail", "inconclusive"]
LookOutcome = Literal["wait", "pass", "fail", "continue", "exhausted"]


class GateEvidence(BaseModel):
    """What one gate saw and why it decided as it did (stored in state and the audit log)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: str  # e.g. "threshold:auc>=0.8", "champion:auc", "canary:error_rate", "samples"
    outcome: Outcome
    reason: str
    values: dict[str, float | None] = {}  # e.g. {"candidate": 0.83, "champion": 0.82}
    samples: dict[str, int] = {}  # per arm
    threshold: float | None = None
    margin: float | None = None
    alpha: float | None = None
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None  # of the non-inferiority test
    p_value_inferior: float | None = None  # of the opposite test (inferiority beyond the margin)
    interval: tuple[float, float] | None = None  # confidence bounds (latency: candidate's)
    # The sequential design (canary steps): the look, where it stood, its boundaries.
    look: int | None = None  # 1-based look of this gate's sequential test
    information_fraction: float | None = None
    pass_boundary: float | None = None  # z at or above passes
    fail_boundary: float | None = None  # z at or below fails (Holm-adjusted level)
    required: dict[str, int] = {}  # samples per arm this step's look waits for (cumulative)
    design: dict[str, float | str | list[float]] | None = None


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Outcome
    evidence: tuple[GateEvidence, ...] = ()

    @classmethod
    def combine(cls, evidence: Sequence[GateEvidence]) -> GateResult:
        """Any fail -> fail; else any inconclusive -> inconclusive; else pass."""
        outcomes = {item.outcome for item in evidence}
        outcome: Outcome = (
            "fail"
            if "fail" in outcomes
            else "inconclusive"
            if "inconclusive" in outcomes
            else "pass"
        )
        return cls(outcome=outcome, evidence=tuple(evidence))

    @property
    def reasons(self) -> str:
        """The reasons of the gates that did not pass, for audit and event text."""
        return "; ".join(f"{e.gate}: {e.reason}" for e in self.evidence if e.outcome != "pass")


# --- staging (offline) -------------------------------------------------------------------------


def evaluate_staging(
    gates: Sequence[StagingGate],
    offline: OfflineMetrics | None,
    *,
    champion_version: str | None = None,
) -> GateResult:
    """Judge the candidate's offline metrics.

    `champion_version` is the production version we expect metrics for: when it is set but
    `offline.champion` is None, the champion's metrics could not be read (inconclusive), which
    is not the same as "no champion" (that gate passes).
    """
    if not gates:
        return GateResult.combine(
            [GateEvidence(gate="staging", outcome="pass", reason="no staging gates configured")]
        )
    if offline is None:
        return GateResult.combine(
            [
                GateEvidence(
                    gate="staging", outcome="inconclusive", reason="offline metrics unavailable"
                )
            ]
        )
    return GateResult.combine(
        [
            _threshold(gate, offline)
            if isinstance(gate, ThresholdGate)
            else _champion(gate, offline, champion_version)
            for gate in gates
        ]
    )


def _metric(values: dict[str, float] | None, name: str) -> float | None:
    value = (values or {}).get(name)
    return None if value is None or math.isnan(value) else float(value)


def _threshold(gate: ThresholdGate, offline: OfflineMetrics) -> GateEvidence:
    name = f"threshold:{gate.metric}{gate.op}{gate.value:g}"
    value = _metric(offline.candidate, gate.metric)
    if value is None:
        return GateEvidence(
            gate=name,
            outcome="inconclusive",
            reason=f"candidate has no metric {gate.metric!r}",
            threshold=gate.value,
        )
    ok = value >= gate.value if gate.op == ">=" else value <= gate.value
    return GateEvidence(
        gate=name,
        outcome="pass" if ok else "fail",
        reason=f"{gate.metric}={value:g} {'meets' if ok else 'misses'} {gate.op} {gate.value:g}",
        values={"candidate": value},
        threshold=gate.value,
    )


def _champion(
    gate: ChampionGate, offline: OfflineMetrics, champion_version: str | None
) -> GateEvidence:
    name = f"champion:{gate.metric}"
    candidate = _metric(offline.candidate, gate.metric)
    if offline.champion is None:
        if champion_version is not None:
            return GateEvidence(
                gate=name,
                outcome="inconclusive",
                margin=gate.margin,
                reason=f"metrics of champion v{champion_version} unavailable",
            )
        return GateEvidence(gate=name, outcome="pass", reason="no champion", margin=gate.margin)
    champion = _metric(offline.champion, gate.metric)
    if candidate is None or champion is None:
        who = "candidate" if candidate is None else "champion"
        return GateEvidence(
            gate=name,
            outcome="inconclusive",
            margin=gate.margin,
            reason=f"{who} has no metric {gate.metric!r}",
            values={"candidate": candidate, "champion": champion},
        )
    if gate.higher_is_better:
        bound, ok, op = champion - gate.margin, candidate >= champion - gate.margin, ">="
    else:
        bound, ok, op = champion + gate.margin, candidate <= champion + gate.margin, "<="
    return GateEvidence(
        gate=name,
        outcome="pass" if ok else "fail",
        reason=f"candidate {candidate:g} {'' if ok else 'not '}{op} champion {champion:g} "
        f"{'-' if gate.higher_is_better else '+'} margin {gate.margin:g} (= {bound:g})",
        values={"candidate": candidate, "champion": champion},
        threshold=bound,
        margin=gate.margin,
    )


# --- canary (live) -----------------------------------------------------------------------------


def evaluate_canary(
    settings: CanarySettings,
    live: LiveMetrics | None,
    canary_deployment: str,
    production_deployment: str | None,
) -> GateResult:
    """One look at each gate's own alpha: the production bake (and a first model's).

    A built-in "samples" gate always runs first: each arm needs `min_samples_per_arm` requests.
    `production_deployment=None` means there is nothing to compare with (the first model's
    production bake): the canary only has to show enough traffic, and each comparison gate
    passes with the evidence "no baseline".
    """
    observed = _arms(settings, live, canary_deployment, production_deployment)
    if isinstance(observed, GateEvidence):
        return GateResult.combine([observed])
    stats, samples = observed
    evidence = [samples]
    if production_deployment is None:
        evidence += [
            GateEvidence(
                gate=f"canary:{gate.metric}",
                outcome="pass",
                reason="no baseline (first model)",
                margin=gate.margin,
                alpha=gate.alpha,
            )
            for gate in settings.gates
        ]
        return GateResult.combine(evidence)
    minimum = settings.min_samples_per_arm
    judged = {
        gate.metric: _judge(gate, stats, minimum, pass_alpha=gate.alpha, fail_alpha=gate.alpha)
        for gate in settings.gates
    }
    # Holm on the fail side: the gates that show inferiority at alpha / m do first.
    # A gate that does not fail at its alpha fails at no smaller level: judged again only
    # when it does.
    failing = _holm_fail(
        settings.gates,
        lambda gate, level: (
            judged[gate.metric].outcome == "fail"
            and _judge(gate, stats, minimum, gate.alpha, level).outcome == "fail"
        ),
    )
    for gate in settings.gates:
        item = judged[gate.metric]
        if item.outcome == "fail" and gate.metric not in failing:
            item = item.model_copy(
                update={
                    "outcome": "inconclusive",
                    "reason": f"{item.reason}, but not at the Holm-adjusted level",
                }
            )
        evidence.append(item)
    return GateResult.combine(evidence)


def _arms(
    settings: CanarySettings,
    live: LiveMetrics | None,
    canary_deployment: str,
    production_deployment: str | None,
) -> GateEvidence | tuple[dict[str, ArmStats], GateEvidence]:
    """Each role's metrics, and the samples gate; or the evidence of what is missing."""
    if live is None:
        return GateEvidence(
            gate="samples", outcome="inconclusive", reason="live metrics unavailable"
        )
    minimum = settings.min_samples_per_arm
    arms = {"canary": canary_deployment}
    if production_deployment is not None:
        arms["production"] = production_deployment
    stats: dict[str, ArmStats] = {}
    missing = []
    for role, deployment in arms.items():
        arm = live.arms.get(deployment)
        if arm is None:
            missing.append(f"no metrics for {role} deployment {deployment}")
        else:
            stats[role] = arm
    if missing:
        return GateEvidence(gate="samples", outcome="inconclusive", reason="; ".join(missing))
    counts = {role: arm.requests for role, arm in stats.items()}
    short = [role for role, count in counts.items() if count < minimum]
    samples = GateEvidence(
        gate="samples",
        outcome="inconclusive" if short else "pass",
        reason=(
            f"{', '.join(short)} below {minimum} requests"
            if short
            else f"each arm >= {minimum} requests"
        ),
        samples=counts,
        threshold=float(minimum),
    )
    return stats, samples


def _holm_fail(
    gates: Sequence[CanaryGate], fails_at: Callable[[CanaryGate, float], bool]
) -> dict[str, float]:
    """Holm's step-down on the fail side: with r gates left, each faces alpha / r; every gate
    failing at that level is rejected, then the level grows; none failing stops it. Any gate
    failing rolls back, so this bounds the chance a good candidate is rolled back by any gate.
    Returns the failed gates' metrics and the level each failed at."""
    left = list(gates)
    failed: dict[str, float] = {}
    while left:
        remaining = len(left)
        now = [gate for gate in left if fails_at(gate, gate.alpha / remaining)]
        if not now:
            break
        failed |= {gate.metric: gate.alpha / remaining for gate in now}
        left = [gate for gate in left if gate not in now]
    return failed


def _rate_counts(gate: CanaryGate, arm: ArmStats) -> tuple[int, int]:
    """(events, samples): correct of labeled for accuracy, errors of requests for error rate."""
    return (arm.correct, arm.labeled) if gate.metric == "accuracy" else (arm.errors, arm.requests)


def _judge(
    gate: CanaryGate,
    stats: dict[str, ArmStats],
    minimum: int,
    pass_alpha: float,
    fail_alpha: float,
) -> GateEvidence:
    """One look of one gate at one-look levels (nominal alphas of the pass and fail sides)."""
    if gate.metric in RATE_METRICS:
        test = _score(gate, stats, minimum)
        if isinstance(test, GateEvidence):
            return test
        z, common = test
        from scipy.stats import norm

        return _rate_verdict(
            gate, z, float(norm.isf(pass_alpha)), -float(norm.isf(fail_alpha)), common
        )
    return _latency(gate, stats, minimum, pass_alpha, fail_alpha)


def _score(
    gate: CanaryGate, stats: dict[str, ArmStats], minimum: int
) -> GateEvidence | tuple[float, dict]:
    """The Farrington-Manning z of a rate gate on cumulative counts, or why it cannot run:
    fewer than `minimum` samples in an arm is never judged (the normal approximation needs
    them; too few samples is never a failure)."""
    from promotion.sequential import farrington_manning

    x_c, n_c = _rate_counts(gate, stats["canary"])
    x_p, n_p = _rate_counts(gate, stats["production"])
    common: dict = {
        "samples": {"canary": n_c, "production": n_p},
        "margin": gate.margin,
        "alpha": gate.alpha,
        "test": "farrington_manning",
    }
    if min(n_c, n_p) < max(minimum, 1):
        unit = "labeled requests" if gate.higher_is_better else "requests"
        return GateEvidence(
            gate=f"canary:{gate.metric}",
            outcome="inconclusive",
            reason=f"fewer than {minimum} {unit} in an arm",
            **common,
        )
    result = farrington_manning(x_c, n_c, x_p, n_p, gate.margin, gate.higher_is_better)
    common["values"] = {
        "canary": result.candidate_rate,
        "production": result.baseline_rate,
        "difference": result.candidate_rate - result.baseline_rate,
    }
    common["statistic"] = result.statistic
    common["p_value"] = result.p_value
    common["p_value_inferior"] = result.p_value_inferior
    return result.statistic, common


def _rate_verdict(
    gate: CanaryGate, z: float, pass_bound: float, fail_bound: float, common: dict, **extra: object
) -> GateEvidence:
    if z >= pass_bound:
        outcome: Outcome = "pass"
        reason = f"non-inferior within margin (z={z:.3f} >= {pass_bound:.3f})"
    elif z <= fail_bound:
        outcome = "fail"
        reason = f"inferior beyond margin (z={z:.3f} <= {fail_bound:.3f})"
    else:
        outcome = "inconclusive"
        reason = f"not enough evidence (z={z:.3f} between {fail_bound:.3f} and {pass_bound:.3f})"
    return GateEvidence(
        gate=f"canary:{gate.metric}",
        outcome=outcome,
        reason=reason,
        pass_boundary=pass_bound,
        fail_boundary=fail_bound,
        **common,
        **extra,  # type: ignore[arg-type]
    )


def _latency(
    gate: CanaryGate,
    stats: dict[str, ArmStats],
    minimum: int,
    pass_alpha: float,
    fail_alpha: float,
) -> GateEvidence:
    """The canary's tail quantile against (1 + margin) times production's (order-statistic
    bounds, distribution-free), passing at `pass_alpha` and failing at `fail_alpha`."""
    from promotion.sequential import quantile_ratio_test

    name = f"canary:{gate.metric}"
    c, p = stats["canary"].latency_ms, stats["production"].latency_ms
    label = f"p{gate.quantile * 100:g}"
    common: dict = {
        "samples": {"canary": len(c), "production": len(p)},
        "margin": gate.margin,
        "alpha": gate.alpha,
        "test": f"quantile:{label}",
    }
    if len(c) < minimum or len(p) < minimum:
        return GateEvidence(
            gate=name,
            outcome="inconclusive",
            reason=f"fewer than {minimum} latency samples in an arm",
            **common,
        )
    # A level of 0 (a look that spends nothing: no new information) can decide nothing.
    passing = quantile_ratio_test(c, p, gate.quantile, gate.margin, max(pass_alpha, 1e-300))
    failing = (
        passing
        if fail_alpha == pass_alpha
        else quantile_ratio_test(c, p, gate.quantile, gate.margin, max(fail_alpha, 1e-300))
    )
    if pass_alpha <= 0:
        passing = replace(passing, outcome="inconclusive")
    if fail_alpha <= 0:
        failing = replace(failing, outcome="inconclusive")
    values: dict[str, float | None] = {
        f"canary_{label}": passing.candidate,
        f"production_{label}": passing.baseline,
        "ratio": passing.candidate / passing.baseline if passing.baseline > 0 else None,
    }
    if passing.outcome == "pass":
        outcome: Outcome = "pass"
        reason = f"{label} within (1 + margin) of production's (level {pass_alpha:.3g})"
    elif failing.outcome == "fail":
        outcome = "fail"
        reason = f"{label} above (1 + margin) of production's (level {fail_alpha:.3g})"
    else:
        outcome = "inconclusive"
        reason = f"the {label} bounds overlap the margin (level {pass_alpha:.3g})"
    low, high = passing.candidate_bounds
    return GateEvidence(
        gate=name,
        outcome=outcome,
        reason=reason,
        values=values,
        interval=(low, high) if low is not None and high is not None else None,
        **common,
    )


# --- the canary's sequential looks ---------------------------------------------------------------


class GateLook(BaseModel):
    """One gate at one look: where its information stood and what it decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fraction: float  # information fraction (latency: the look's, shared with the rate gates;
    # the production bake: the share of the bake's time elapsed, its alpha-spending clock)
    statistic: float | None = None  # z (rates)
    information: float | None = None  # the bake: effective samples at the look
    outcome: Literal["pass", "fail", "continue"]


class CanaryLook(BaseModel):
    """A look of the promotion's sequential design (kept on the promotion: later looks'
    boundaries depend on the earlier looks' information fractions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    gates: dict[str, GateLook]  # by metric


class LookResult(BaseModel):
    """What a canary check found: wait, or a look and its verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: LookOutcome  # wait: the step's samples not reached yet (not a look)
    result: GateResult  # the evidence (outcome pass | fail | inconclusive)
    look: CanaryLook | None = None
    totals: dict[str, ArmStats] = {}  # cumulative counts by role, latencies of this window
    # Every gate's metrics read and the design's full samples reached: only then may
    # `on_exhausted: promote` act.
    complete: bool = False


def judge_canary_look(
    settings: CanarySettings,
    live: LiveMetrics | None,
    canary_deployment: str,
    production_deployment: str,
    *,
    step_index: int,
    looks: Sequence[CanaryLook] = (),
    carried: dict[str, ArmStats] | None = None,
    out_of_time: bool = False,
) -> LookResult:
    """A check of canary step `step_index` under the promotion's group-sequential design.

    Each rate gate's cumulative counts (earlier steps' `carried` plus this step's window) give
    its information fraction; the step's look is taken once every rate gate reaches the
    step's planned fraction and each arm has `min_samples_per_arm` requests in the window, or
    when time is out (`out_of_time`, an unplanned look). A gate passes at z >= its spending
    boundary (alpha), fails at z <= minus the boundary at its Holm-adjusted level; a gate that
    passed at an earlier look stays passed. Latency gates share the look's fraction.
    Outcomes: wait (no look), pass (every gate passed), fail (any failed), continue (the step's
    samples reached, undecided, a later step follows), exhausted (undecided at the last step,
    or out of time).
    """
    from promotion.canary_design import boundary, canary_plan
    from promotion.sequential import alpha_increment

    plan = canary_plan(settings)
    observed = _arms(settings, live, canary_deployment, production_deployment)
    if isinstance(observed, GateEvidence):
        return LookResult(
            outcome="exhausted" if out_of_time else "wait", result=GateResult.combine([observed])
        )
    window, samples = observed
    carried = carried or {}
    stats = {role: _add(carried.get(role), arm) for role, arm in window.items()}
    decided = {
        metric: gate_look.outcome
        for look in looks
        for metric, gate_look in look.gates.items()
        if gate_look.outcome == "pass"
    }
    history = {
        gate.metric: [
            look.gates[gate.metric].fraction for look in looks if gate.metric in look.gates
        ]
        for gate in settings.gates
    }
    # Where each rate gate's information stands, and whether its step target is reached.
    fractions: dict[str, float] = {}
    required: dict[str, dict[str, int]] = {}
    for gate in settings.gates:
        if gate.metric in plan:
            gate_plan = plan[gate.metric]
            _, n_c = _rate_counts(gate, stats["canary"])
            _, n_p = _rate_counts(gate, stats["production"])
            earlier = max(history[gate.metric], default=0.0)
            fractions[gate.metric] = max(gate_plan.design.fraction(n_c, n_p), earlier)
            target = gate_plan.targets[min(step_index, len(gate_plan.targets) - 1)]
            required[gate.metric] = {"canary": target.candidate, "production": target.production}
    planned = (step_index + 1) / max(len(settings.steps), 1)
    open_rates = [m for m in fractions if m not in decided]
    reached = samples.outcome == "pass" and all(fractions[m] >= planned - 1e-9 for m in open_rates)
    look_fraction = min((fractions[m] for m in open_rates), default=planned)
    latency_minimum = settings.min_samples_per_arm
    for gate in settings.gates:
        if gate.metric not in plan and gate.metric not in decided:
            fractions[gate.metric] = max(look_fraction, max(history[gate.metric], default=0.0))
            reached = reached and all(
                len(stats[role].latency_ms) >= latency_minimum for role in stats
            )
    if not reached and not out_of_time:
        evidence = [samples] + [
            _waiting(gate, stats, fractions, required, decided, planned) for gate in settings.gates
        ]
        return LookResult(outcome="wait", result=GateResult.combine(evidence), totals=stats)

    look_number = len(looks) + 1

    def informed(metric: str) -> bool:
        """New information since its last look (none: no labeled samples yet, out of time)."""
        return fractions[metric] > max(history[metric], default=0.0) + 1e-12

    def bound(metric: str, level: float) -> float:
        return boundary((*history[metric], fractions[metric]), level, settings.spending)

    def judge(gate: CanaryGate, fail_level: float) -> GateEvidence:
        design = _design_evidence(plan.get(gate.metric))
        extra = {
            "look": look_number,
            "information_fraction": fractions[gate.metric],
            "required": required.get(gate.metric, {}),
            "design": design,
        }
        if not informed(gate.metric):  # nothing to spend alpha on: never a verdict
            return GateEvidence(
                gate=f"canary:{gate.metric}",
                outcome="inconclusive",
                reason="no new samples since the last look: nothing to judge",
                margin=gate.margin,
                alpha=gate.alpha,
            ).model_copy(update=extra)
        pass_bound, fail_bound = bound(gate.metric, gate.alpha), -bound(gate.metric, fail_level)
        if gate.metric in RATE_METRICS:
            test = _score(gate, stats, latency_minimum)
            if isinstance(test, GateEvidence):
                return test.model_copy(update=extra)
            z, common = test
            return _rate_verdict(gate, z, pass_bound, fail_bound, common, **extra)
        # Latency windows are fresh per step (and thinned), so its looks are not the
        # correlated z the boundaries assume: each look tests at its own alpha increment,
        # which sums to at most alpha over the looks whatever their correlation.
        looked = (*history[gate.metric], fractions[gate.metric])
        return _latency(
            gate,
            stats,
            latency_minimum,
            alpha_increment(looked, gate.alpha, settings.spending),
            alpha_increment(looked, fail_level, settings.spending),
        ).model_copy(update=extra | {"pass_boundary": pass_bound, "fail_boundary": fail_bound})

    open_gates = [gate for gate in settings.gates if gate.metric not in decided]
    judged = {gate.metric: judge(gate, gate.alpha) for gate in open_gates}
    failing = _holm_fail(
        open_gates,
        lambda gate, level: (
            judged[gate.metric].outcome == "fail"
            and (level == gate.alpha or judge(gate, level).outcome == "fail")
        ),
    )
    evidence = [samples]
    gate_looks: dict[str, GateLook] = {}
    for gate in settings.gates:
        if gate.metric in decided:
            evidence.append(
                GateEvidence(
                    gate=f"canary:{gate.metric}",
                    outcome="pass",
                    reason="passed at an earlier look",
                    margin=gate.margin,
                    alpha=gate.alpha,
                )
            )
            continue
        item = judged[gate.metric]
        if item.outcome == "fail" and gate.metric not in failing:
            item = item.model_copy(
                update={
                    "outcome": "inconclusive",
                    "reason": f"{item.reason}, but not at the Holm-adjusted level",
                }
            )
        elif item.outcome == "fail":
            item = item.model_copy(
                update={"fail_boundary": -bound(gate.metric, failing[gate.metric])}
            )
        evidence.append(item)
        if not informed(gate.metric):
            continue  # no look taken for it: its history gains no point
        gate_looks[gate.metric] = GateLook(
            fraction=fractions[gate.metric],
            statistic=item.statistic,
            outcome="continue" if item.outcome == "inconclusive" else item.outcome,
        )
    result = GateResult.combine(evidence)
    complete = samples.outcome == "pass" and all(
        fractions.get(gate.metric, 0.0) >= 1 - 1e-9 and _has_data(gate, stats, latency_minimum)
        for gate in settings.gates
        if gate.metric not in decided
    )
    if result.outcome == "fail":
        outcome: LookOutcome = "fail"
    elif result.outcome == "pass":
        outcome = "pass"
    elif reached and step_index + 1 < len(settings.steps):
        outcome = "continue"
    else:
        outcome = "exhausted"
    return LookResult(
        outcome=outcome,
        result=result,
        look=CanaryLook(step=f"canary-{step_index + 1}", gates=gate_looks),
        totals=stats,
        complete=complete,
    )


# --- the production bake with a concurrent holdback ----------------------------------------------

BAKE_STEP = "bake"


def judge_bake_look(
    settings: CanarySettings,
    live: LiveMetrics | None,
    candidate_deployment: str,
    holdback_deployment: str,
    *,
    fraction: float,
    ended: bool,
    looks: Sequence[CanaryLook] = (),
    holdback: int = 0,
    planned_looks: int = 1,
) -> LookResult:
    """A check of the production bake with a concurrent holdback: a test for harm only.

    Each gate asks "is the candidate worse than the holdback by more than its margin?" on the
    bake's window so far (both arms the same window): the fail side of the canary's test. A
    5 % holdback is too small to show non-inferiority, so the bake does not try: it rolls back
    on evidence of harm and otherwise passes on time. Rates: Farrington-Manning z at the margin,
    failing at z <= -c; c spends the gate's alpha by the bake's clock (`fraction`: its elapsed
    share, O'Brien-Fleming or Pocock as the canary), the looks correlated by their observed
    information (Lan & DeMets 1989); Holm across the gates. Latency: the quantile test at each
    look's alpha increment (valid whatever the looks' correlation). An arm with fewer than
    `min_samples_per_arm` samples of a gate is not tested (never a failure).

    Outcomes: fail (harm shown), continue (the bake runs on), pass (the bake has ended without
    harm shown, with the candidate's own `min_samples_per_arm` samples of every gate's metric
    and both arms' metrics read), wait (ended without them: never a pass; the machine extends,
    then on_exhausted).
    """
    from promotion.canary_design import bake_boundary
    from promotion.sequential import alpha_increment, effective_samples, farrington_manning

    fraction = min(max(fraction, 1e-9), 1.0)
    minimum = settings.min_samples_per_arm
    design: dict[str, float | str | list[float]] = {
        "rule": "harm",
        "spending": settings.spending,
        "clock": "bake time",
        "holdback": float(holdback),
        "planned_looks": float(planned_looks),
    }
    observed = _arms(settings, live, candidate_deployment, holdback_deployment)
    if isinstance(observed, GateEvidence):  # a metric not read: nothing to judge, no look
        return LookResult(
            outcome="wait" if ended else "continue",
            result=GateResult.combine([observed.model_copy(update={"design": design})]),
        )
    stats, _ = observed
    requests = {"canary": stats["canary"].requests, "production": stats["production"].requests}
    # The candidate's own samples of every gate (labeled requests for accuracy, latencies for
    # latency): a metric missing on the candidate never passes the bake.
    own = {
        "requests": requests["canary"],
        **{
            gate.metric: _rate_counts(gate, stats["canary"])[1]
            if gate.metric in RATE_METRICS
            else len(stats["canary"].latency_ms)
            for gate in settings.gates
        },
    }
    short = [name for name, count in own.items() if count < minimum]
    enough = not short
    samples = GateEvidence(
        gate="samples",
        outcome="pass" if enough else "inconclusive",
        reason=(
            f"candidate >= {minimum} samples of each metric (holdback "
            f"{requests['production']} requests)"
            if enough
            else f"candidate below {minimum} samples: {', '.join(short)}"
        ),
        samples=requests,
        threshold=float(minimum),
        design=design,
    )
    history = {
        gate.metric: [
            look.gates[gate.metric]
            for look in looks
            if look.step == BAKE_STEP and gate.metric in look.gates
        ]
        for gate in settings.gates
    }
    number = len([look for look in looks if look.step == BAKE_STEP]) + 1
    information: dict[str, float] = {}
    statistic: dict[str, float] = {}
    evidence: dict[str, GateEvidence] = {}
    testable: list[CanaryGate] = []
    for gate in settings.gates:
        name = f"canary:{gate.metric}"
        common: dict = {
            "margin": gate.margin,
            "alpha": gate.alpha,
            "look": number,
            "information_fraction": fraction,
            "design": design,
        }
        if gate.metric in RATE_METRICS:
            x_c, n_c = _rate_counts(gate, stats["canary"])
            x_p, n_p = _rate_counts(gate, stats["production"])
            sizes = {"canary": n_c, "production": n_p}
        else:
            sizes = {role: len(arm.latency_ms) for role, arm in stats.items()}
            n_c, n_p = sizes["canary"], sizes["production"]
        common["samples"] = sizes
        if min(n_c, n_p) < max(minimum, 1):
            evidence[gate.metric] = GateEvidence(
                gate=name,
                outcome="inconclusive",
                reason=f"harm not testable: fewer than {minimum} samples in an arm",
                test="harm",
                **common,
            )
            continue
        earlier = max((item.information or 0.0 for item in history[gate.metric]), default=0.0)
        information[gate.metric] = effective_samples(n_c, n_p)
        if gate.metric in RATE_METRICS:
            if information[gate.metric] <= earlier * (1 + 1e-12):
                evidence[gate.metric] = GateEvidence(
                    gate=name,
                    outcome="inconclusive",
                    reason="no new samples since the last look: nothing to judge",
                    test="harm",
                    **common,
                )
                continue
            test = farrington_manning(x_c, n_c, x_p, n_p, gate.margin, gate.higher_is_better)
            statistic[gate.metric] = test.statistic
            common |= {
                "test": "farrington_manning:harm",
                "statistic": test.statistic,
                "p_value_inferior": test.p_value_inferior,
                "values": {
                    "canary": test.candidate_rate,
                    "production": test.baseline_rate,
                    "difference": test.candidate_rate - test.baseline_rate,
                },
            }
        else:
            common["test"] = f"quantile:p{gate.quantile * 100:g}:harm"
        evidence[gate.metric] = GateEvidence(gate=name, outcome="inconclusive", reason="", **common)
        testable.append(gate)

    def spend(metric: str) -> tuple[float, ...]:
        return (*(item.fraction for item in history[metric]), fraction)

    def rate_bound(gate: CanaryGate, level: float) -> float:
        known = [item.information or 0.0 for item in history[gate.metric]]
        return bake_boundary(
            spend(gate.metric), (*known, information[gate.metric]), level, settings.spending
        )

    latency_checks: dict[tuple[str, float], GateEvidence] = {}

    def latency_at(gate: CanaryGate, level: float) -> GateEvidence:
        key = (gate.metric, level)
        if key not in latency_checks:
            increment = alpha_increment(spend(gate.metric), level, settings.spending)
            latency_checks[key] = _latency(gate, stats, minimum, increment, increment)
        return latency_checks[key]

    def harmful(gate: CanaryGate, level: float) -> bool:
        if gate.metric in RATE_METRICS:
            from scipy.stats import norm

            z = statistic[gate.metric]
            # Cheap first: a boundary is never below z_(1-level) (its look's crossing is a
            # part of the alpha spent by then), so a z above -z_(1-level) cannot fail.
            return z <= -float(norm.isf(level)) and z <= -rate_bound(gate, level)
        return latency_at(gate, level).outcome == "fail"

    failing = _holm_fail(testable, harmful)
    gate_looks: dict[str, GateLook] = {}
    for gate in testable:
        item = evidence[gate.metric]
        level = failing.get(gate.metric, gate.alpha / max(len(testable), 1))
        if gate.metric in RATE_METRICS:
            z = statistic[gate.metric]
            bound = rate_bound(gate, level) if gate.metric in failing else None
            update: dict = {"fail_boundary": -bound if bound is not None else None}
            shown = f"z={z:.3f}"
        else:
            latency = latency_at(gate, level)
            update = {"values": latency.values, "interval": latency.interval}
            ratio = latency.values.get("ratio")
            shown = f"p{gate.quantile * 100:g} ratio {ratio:.3f}" if ratio is not None else "-"
        if gate.metric in failing:
            outcome: Outcome = "fail"
            reason = f"harm: worse than the holdback beyond the margin ({shown}, level {level:.3g})"
        elif ended:
            outcome, reason = "pass", f"no harm beyond the margin shown over the bake ({shown})"
        else:
            outcome, reason = "inconclusive", f"no harm shown so far ({shown})"
        evidence[gate.metric] = item.model_copy(
            update=update | {"outcome": outcome, "reason": reason}
        )
        gate_looks[gate.metric] = GateLook(
            fraction=fraction,
            information=information[gate.metric],
            statistic=statistic.get(gate.metric),
            outcome="fail" if outcome == "fail" else "continue",
        )
    items = [samples, *(evidence[gate.metric] for gate in settings.gates)]
    look = CanaryLook(step=BAKE_STEP, gates=gate_looks) if gate_looks else None
    if failing:
        return LookResult(
            outcome="fail",
            result=GateResult(outcome="fail", evidence=tuple(items)),
            look=look,
            totals=stats,
        )
    if not ended:
        return LookResult(
            outcome="continue",
            result=GateResult(outcome="inconclusive", evidence=tuple(items)),
            look=look,
            totals=stats,
        )
    if enough:
        # Passing on time: a gate the holdback was too small to test does not hold it back
        # (its evidence says so); the candidate's own samples must be there.
        return LookResult(
            outcome="pass",
            result=GateResult(outcome="pass", evidence=tuple(items)),
            look=look,
            totals=stats,
            complete=True,
        )
    return LookResult(
        outcome="wait",
        result=GateResult(outcome="inconclusive", evidence=tuple(items)),
        look=look,
        totals=stats,
    )


def _has_data(gate: CanaryGate, stats: dict[str, ArmStats], minimum: int) -> bool:
    if gate.metric in RATE_METRICS:
        return all(_rate_counts(gate, arm)[1] > 0 for arm in stats.values())
    return all(len(arm.latency_ms) >= minimum for arm in stats.values())


def _add(before: ArmStats | None, window: ArmStats) -> ArmStats:
    if before is None:
        return window
    return window.model_copy(
        update={
            "requests": before.requests + window.requests,
            "errors": before.errors + window.errors,
            "labeled": before.labeled + window.labeled,
            "correct": before.correct + window.correct,
        }
    )


def _waiting(
    gate: CanaryGate,
    stats: dict[str, ArmStats],
    fractions: dict[str, float],
    required: dict[str, dict[str, int]],
    decided: dict[str, str],
    planned: float,
) -> GateEvidence:
    name = f"canary:{gate.metric}"
    if gate.metric in decided:
        return GateEvidence(gate=name, outcome="pass", reason="passed at an earlier look")
    if gate.metric in RATE_METRICS:
        _, n_c = _rate_counts(gate, stats["canary"])
        _, n_p = _rate_counts(gate, stats["production"])
        need = required.get(gate.metric, {})
        unit = "labeled requests" if gate.higher_is_better else "requests"
        reason = (
            f"waiting for samples: {n_c} of {need.get('canary')} canary and {n_p} of "
            f"{need.get('production')} production {unit} (information "
            f"{fractions[gate.metric]:.2f} of the step's {planned:.2f})"
        )
        samples = {"canary": n_c, "production": n_p}
    else:
        samples = {role: len(arm.latency_ms) for role, arm in stats.items()}
        reason = "waiting for the rate gates' samples (or latency samples)"
    return GateEvidence(
        gate=name,
        outcome="inconclusive",
        reason=reason,
        samples=samples,
        margin=gate.margin,
        alpha=gate.alpha,
        information_fraction=fractions.get(gate.metric),
        required=required.get(gate.metric, {}),
    )


def _design_evidence(plan: object) -> dict[str, float | str | list[float]] | None:
    if plan is None:
        return None
    from promotion.canary_design import GatePlan

    assert isinstance(plan, GatePlan)
    design = plan.design
    return {
        "spending": design.spending,
        "power": design.power,
        "planning_rate": design.baseline_rate,
        "planned_ratio": round(design.ratio, 4),
        "planned_fractions": list(design.planned_fractions),
        "boundaries": [round(b, 4) for b in design.boundaries],
        "max_information": round(design.max_information, 1),
        "fixed_information": round(design.fixed_information, 1),
        "required_canary": float(plan.targets[-1].candidate),
        "required_production": float(plan.targets[-1].production),
    }
