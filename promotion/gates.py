"""Pure gates: (gate spec, metrics snapshot) -> pass | fail | inconclusive, with the evidence.

Missing metrics and too few samples are always inconclusive, never a pass. scipy is imported
inside the functions that test, so importing this module stays cheap at cold start.

Canary rule (every test is one-sided at `alpha`, against the tolerated degradation `margin`):
- pass: non-inferiority shown (canary is better than "production minus the margin", p < alpha);
- fail: inferiority shown (canary is worse than "production minus the margin", p < alpha);
- inconclusive: neither (not enough evidence either way yet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics
from domain.policy import CanaryGate, CanarySettings, ChampionGate, StagingGate, ThresholdGate

Outcome = Literal["pass", "fail", "inconclusive"]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = (
    20240601  # fixed: a gate is a pure function, the same snapshot gives the same verdict
)


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
    interval: tuple[float, float] | None = None  # bootstrap confidence interval


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
    """Judge the canary arm against the production arm.

    A built-in "samples" gate always runs first: each arm needs `min_samples_per_arm` requests.
    `production_deployment=None` means there is nothing to compare with (the first model's
    production bake): the canary only has to show enough traffic, and each comparison gate
    passes with the evidence "no baseline".
    """
    if live is None:
        return GateResult.combine(
            [
                GateEvidence(
                    gate="samples", outcome="inconclusive", reason="live metrics unavailable"
                )
            ]
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
        return GateResult.combine(
            [GateEvidence(gate="samples", outcome="inconclusive", reason="; ".join(missing))]
        )
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
    evidence = [samples]
    for gate in settings.gates:
        if production_deployment is None:
            evidence.append(
                GateEvidence(
                    gate=f"canary:{gate.metric}",
                    outcome="pass",
                    reason="no baseline (first model)",
                    margin=gate.margin,
                    alpha=gate.alpha,
                )
            )
        elif gate.metric == "latency_ms":
            evidence.append(_latency(gate, stats["canary"], stats["production"], minimum))
        else:
            evidence.append(_rate(gate, stats["canary"], stats["production"], minimum))
    return GateResult.combine(evidence)


def _rate(gate: CanaryGate, canary: ArmStats, production: ArmStats, minimum: int) -> GateEvidence:
    """One-sided two-proportion z-test of non-inferiority (unpooled Wald standard error)."""
    name = f"canary:{gate.metric}"
    higher_is_better = gate.metric == "accuracy"
    if higher_is_better:
        (x_c, n_c), (x_p, n_p) = (
            (canary.correct, canary.labeled),
            (production.correct, production.labeled),
        )
    else:
        (x_c, n_c), (x_p, n_p) = (
            (canary.errors, canary.requests),
            (production.errors, production.requests),
        )
    common = {
        "samples": {"canary": n_c, "production": n_p},
        "margin": gate.margin,
        "alpha": gate.alpha,
        "test": "two_proportion",
    }
    if n_c < minimum or n_p < minimum:
        unit = "labeled requests" if higher_is_better else "requests"
        return GateEvidence(
            gate=name,
            outcome="inconclusive",
            reason=f"fewer than {minimum} {unit} in an arm",
            **common,
        )
    p_c, p_p = x_c / n_c, x_p / n_p
    # How much better the canary is (positive = better), whichever direction is "better".
    advantage = p_c - p_p if higher_is_better else p_p - p_c
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_p * (1 - p_p) / n_p)
    if se == 0:
        # Both rates 0 or 1: the Wald error vanishes; use the Agresti-Caffo adjusted rates.
        a_c, a_p = (x_c + 1) / (n_c + 2), (x_p + 1) / (n_p + 2)
        se = math.sqrt(a_c * (1 - a_c) / (n_c + 2) + a_p * (1 - a_p) / (n_p + 2))
    from scipy.stats import norm

    z = (advantage + gate.margin) / se
    p_ni, p_inf = float(norm.sf(z)), float(norm.cdf(z))
    values: dict[str, float | None] = {"canary": p_c, "production": p_p, "difference": p_c - p_p}
    return _verdict(name, p_ni, p_inf, gate.alpha, z, values, **common)


def _latency(
    gate: CanaryGate, canary: ArmStats, production: ArmStats, minimum: int
) -> GateEvidence:
    """Canary latencies against production latencies scaled by (1 + margin)."""
    name = f"canary:{gate.metric}"
    c, p = list(canary.latency_ms), list(production.latency_ms)
    common = {
        "samples": {"canary": len(c), "production": len(p)},
        "margin": gate.margin,
        "alpha": gate.alpha,
        "test": gate.test,
    }
    if len(c) < minimum or len(p) < minimum:
        return GateEvidence(
            gate=name,
            outcome="inconclusive",
            reason=f"fewer than {minimum} latency samples in an arm",
            **common,
        )
    import numpy as np

    allowance = np.asarray(p, dtype=float) * (1 + gate.margin)
    values: dict[str, float | None] = {
        "canary_median": float(np.median(c)),
        "production_median": float(np.median(p)),
    }
    if gate.test == "mann_whitney":
        from scipy.stats import mannwhitneyu

        # Non-inferior: canary latencies stochastically smaller than production * (1 + margin).
        less = mannwhitneyu(c, allowance, alternative="less")
        greater = mannwhitneyu(c, allowance, alternative="greater")
        return _verdict(
            name,
            float(less.pvalue),
            float(greater.pvalue),
            gate.alpha,
            float(less.statistic),
            values,
            **common,
        )
    from scipy.stats import bootstrap

    def excess(
        canary_sample: np.ndarray, production_sample: np.ndarray, axis: int = -1
    ) -> np.ndarray:
        return np.median(canary_sample, axis=axis) - np.median(production_sample, axis=axis) * (
            1 + gate.margin
        )

    # A two-sided (1 - 2 alpha) interval is two one-sided tests at alpha each.
    result = bootstrap(
        (np.asarray(c, dtype=float), np.asarray(p, dtype=float)),
        excess,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=1 - 2 * gate.alpha,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    outcome: Outcome = "pass" if high < 0 else "fail" if low > 0 else "inconclusive"
    reason = {
        "pass": "canary median below production median * (1 + margin)",
        "fail": "canary median above production median * (1 + margin)",
        "inconclusive": "interval of the median excess contains 0",
    }[outcome]
    values["median_excess"] = float(excess(np.asarray(c), np.asarray(p)))
    return GateEvidence(
        gate=name, outcome=outcome, reason=reason, values=values, interval=(low, high), **common
    )


def _verdict(
    name: str,
    p_ni: float,
    p_inf: float,
    level: float,
    statistic: float,
    values: dict[str, float | None],
    **common: object,
) -> GateEvidence:
    if p_ni < level:
        outcome: Outcome = "pass"
        reason = f"non-inferior within margin (p={p_ni:.3g} < {level:g})"
    elif p_inf < level:
        outcome = "fail"
        reason = f"inferior beyond margin (p={p_inf:.3g} < {level:g})"
    else:
        outcome = "inconclusive"
        reason = f"not enough evidence (p={p_ni:.3g}, inferiority p={p_inf:.3g})"
    return GateEvidence(
        gate=name,
        outcome=outcome,
        reason=reason,
        values=values,
        statistic=statistic,
        p_value=p_ni,
        p_value_inferior=p_inf,
        **common,  # type: ignore[arg-type]
    )
