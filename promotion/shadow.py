"""The shadow stage's judgment: one look at a mirrored window (docs/promotion.md, shadow).

Pure. The candidate answered a mirrored copy of `percent` of the live requests (nobody saw
its answers); production answered them all. Three tests, each one-sided at `alpha`:

- error rate: the Farrington-Manning score test (promotion.sequential) of "the candidate's
  error rate exceeds production's by `error_rate_margin` or more"; pass when rejected, fail
  when the opposite test shows it beyond the margin;
- tail latency: the `latency_quantile` of the candidate at most (1 + `latency_margin`) times
  production's, on distribution-free order-statistic bounds (`quantile_ratio_test`);
- agreement: the share of mirrored pairs (the same request, both answered) on which both
  predicted the same, with an exact binomial test against `min_agreement`; pass when
  "agreement <= min_agreement" is rejected, fail when "agreement >= min_agreement" is.

The shadow passes when all three pass (an intersection-union test: a candidate bad on any one
passes with probability at most `alpha`), fails when any fails (a good candidate fails with
probability at most 3 x alpha), and is otherwise undecided. It is looked at once, when the
samples are there: an undecided look is not looked at again with more data (that would spend
alpha twice); canary.on_exhausted decides. Too few samples (requests per arm, pairs, latencies
read per arm), or metrics that could not be read, wait (never pass) until the stage's time is
up.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.metrics import ShadowMetrics
from domain.policy import ShadowGates
from promotion.gates import GateEvidence, GateResult
from promotion.sequential import farrington_manning, quantile_ratio_test

SHADOW_STEP = "shadow"

ShadowOutcome = Literal["wait", "pass", "fail", "undecided"]


class ShadowLook(BaseModel):
    """What one shadow check found: `wait` (too few samples or nothing read), or the look's
    outcome; `result` is the evidence kept on the promotion and in the audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: ShadowOutcome
    result: GateResult


def judge_shadow(gates: ShadowGates, metrics: ShadowMetrics | None) -> ShadowLook:
    """One check of a shadow window against its gates."""
    if metrics is None:
        evidence = GateEvidence(
            gate="samples", outcome="inconclusive", reason="shadow metrics could not be read"
        )
        return ShadowLook(outcome="wait", result=GateResult.combine([evidence]))
    samples = {
        "production": metrics.production.requests,
        "candidate": metrics.candidate.requests,
        "pairs": metrics.pairs,
        # Requests counted but their latencies not read (a traffic log without them) are too
        # few samples for the latency gate: the look waits for them, never passes without.
        "production latencies": len(metrics.production.latency_ms),
        "candidate latencies": len(metrics.candidate.latency_ms),
    }
    short = {name: count for name, count in samples.items() if count < gates.min_samples}
    if short:
        evidence = GateEvidence(
            gate="samples",
            outcome="inconclusive",
            reason=f"waiting for {gates.min_samples} samples each: {short}",
            samples=samples,
            threshold=gates.min_samples,
        )
        return ShadowLook(outcome="wait", result=GateResult.combine([evidence]))
    result = GateResult.combine(
        [_error_rate(gates, metrics), _latency(gates, metrics), _agreement(gates, metrics)]
    )
    outcome: ShadowOutcome = "undecided" if result.outcome == "inconclusive" else result.outcome
    return ShadowLook(outcome=outcome, result=result)


def _error_rate(gates: ShadowGates, metrics: ShadowMetrics) -> GateEvidence:
    candidate, production = metrics.candidate, metrics.production
    test = farrington_manning(
        candidate.errors,
        candidate.requests,
        production.errors,
        production.requests,
        gates.error_rate_margin,
        higher_is_better=False,
    )
    if test.p_value <= gates.alpha:
        outcome, reason = "pass", "error rate within the margin of production's"
    elif test.p_value_inferior <= gates.alpha:
        outcome, reason = "fail", "error rate above production's by more than the margin"
    else:
        outcome, reason = "inconclusive", "error rate: undecided at this sample size"
    return GateEvidence(
        gate="shadow:error_rate",
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        values={"candidate": test.candidate_rate, "production": test.baseline_rate},
        samples={"candidate": candidate.requests, "production": production.requests},
        margin=gates.error_rate_margin,
        alpha=gates.alpha,
        test="farrington_manning",
        statistic=test.statistic,
        p_value=test.p_value,
        p_value_inferior=test.p_value_inferior,
    )


def _latency(gates: ShadowGates, metrics: ShadowMetrics) -> GateEvidence:
    candidate, production = metrics.candidate.latency_ms, metrics.production.latency_ms
    name = f"shadow:latency_p{gates.latency_quantile * 100:g}"
    samples = {"candidate": len(candidate), "production": len(production)}
    comparison = quantile_ratio_test(
        candidate,
        production,
        quantile=gates.latency_quantile,
        margin=gates.latency_margin,
        alpha=gates.alpha,
    )
    low, high = comparison.candidate_bounds
    return GateEvidence(
        gate=name,
        outcome=comparison.outcome,
        reason=comparison.reason,
        values={"candidate": comparison.candidate, "production": comparison.baseline},
        samples=samples,
        margin=gates.latency_margin,
        alpha=gates.alpha,
        test="quantile",
        interval=(low, high) if low is not None and high is not None else None,
    )


def _agreement(gates: ShadowGates, metrics: ShadowMetrics) -> GateEvidence:
    from scipy.stats import beta, binomtest

    pairs, agreed, floor = metrics.pairs, metrics.agreed, gates.min_agreement
    above = binomtest(agreed, pairs, floor, alternative="greater").pvalue
    below = binomtest(agreed, pairs, floor, alternative="less").pvalue
    if above <= gates.alpha:
        outcome, reason = "pass", f"agreement with production above {floor:g}"
    elif below <= gates.alpha:
        outcome, reason = "fail", f"agreement with production below {floor:g}"
    else:
        outcome, reason = "inconclusive", "agreement: undecided at this sample size"
    # The one-sided Clopper-Pearson bounds at the same alpha, for people reading the evidence.
    lower = float(beta.ppf(gates.alpha, agreed, pairs - agreed + 1)) if agreed else 0.0
    upper = float(beta.ppf(1 - gates.alpha, agreed + 1, pairs - agreed)) if agreed < pairs else 1.0
    return GateEvidence(
        gate="shadow:agreement",
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        values={"agreement": agreed / pairs},
        samples={"pairs": pairs, "agreed": agreed},
        threshold=floor,
        alpha=gates.alpha,
        test="binomial",
        p_value=float(above),
        p_value_inferior=float(below),
        interval=(lower, upper),
    )
