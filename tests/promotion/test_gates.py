"""Gates with known numbers: thresholds, champion margins, and the canary tests."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics
from domain.policy import CanarySettings, ChampionGate, ThresholdGate
from promotion.gates import GateEvidence, GateResult, evaluate_canary, evaluate_staging
from promotion.sequential import farrington_manning

from .support import T0


def normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


# --- staging -----------------------------------------------------------------------------------

AUC_080 = ThresholdGate(metric="auc", value=0.80)
LOSS_MAX = ThresholdGate(metric="log_loss", op="<=", value=0.5)
AUC_CHAMPION = ChampionGate(metric="auc", margin=0.01)
LOSS_CHAMPION = ChampionGate(metric="log_loss", higher_is_better=False, margin=0.02)


@pytest.mark.parametrize(
    ("gate", "candidate", "champion", "outcome"),
    [
        (AUC_080, {"auc": 0.80}, None, "pass"),  # the boundary passes (>=)
        (AUC_080, {"auc": 0.79}, None, "fail"),
        (AUC_080, {}, None, "inconclusive"),
        (AUC_080, {"auc": float("nan")}, None, "inconclusive"),
        (LOSS_MAX, {"log_loss": 0.5}, None, "pass"),
        (LOSS_MAX, {"log_loss": 0.51}, None, "fail"),
        (AUC_CHAMPION, {"auc": 0.84}, {"auc": 0.85}, "pass"),  # 0.84 >= 0.85 - 0.01
        (AUC_CHAMPION, {"auc": 0.83}, {"auc": 0.85}, "fail"),
        (AUC_CHAMPION, {"auc": 0.90}, None, "pass"),  # no champion
        (AUC_CHAMPION, {"auc": 0.90}, {}, "inconclusive"),  # champion lacks the metric
        (LOSS_CHAMPION, {"log_loss": 0.32}, {"log_loss": 0.30}, "pass"),  # 0.32 <= 0.30 + 0.02
        (LOSS_CHAMPION, {"log_loss": 0.33}, {"log_loss": 0.30}, "fail"),
    ],
)
def test_staging_gate(gate, candidate, champion, outcome) -> None:
    result = evaluate_staging([gate], OfflineMetrics(candidate=candidate, champion=champion))
    assert result.outcome == outcome
    assert result.evidence[0].outcome == outcome and result.evidence[0].reason


def test_staging_no_champion_evidence_says_so() -> None:
    result = evaluate_staging([AUC_CHAMPION], OfflineMetrics(candidate={"auc": 0.9}))
    assert result.evidence[0].reason == "no champion"


def test_staging_expected_champion_without_metrics_is_inconclusive() -> None:
    result = evaluate_staging(
        [AUC_CHAMPION], OfflineMetrics(candidate={"auc": 0.9}), champion_version="3"
    )
    assert result.outcome == "inconclusive"


def test_staging_without_metrics_is_inconclusive_and_without_gates_passes() -> None:
    assert evaluate_staging([AUC_080], None).outcome == "inconclusive"
    assert evaluate_staging([], None).outcome == "pass"


def test_combine_any_fail_then_any_inconclusive() -> None:
    def e(outcome: str) -> GateEvidence:
        return GateEvidence(gate="g", outcome=outcome, reason="r")  # type: ignore[arg-type]

    assert GateResult.combine([e("pass"), e("inconclusive"), e("fail")]).outcome == "fail"
    assert GateResult.combine([e("pass"), e("inconclusive")]).outcome == "inconclusive"
    assert GateResult.combine([e("pass"), e("pass")]).outcome == "pass"


# --- canary: rates -----------------------------------------------------------------------------


def canary_settings(*gates: dict, minimum: int = 200) -> CanarySettings:
    return CanarySettings.model_validate({"min_samples_per_arm": minimum, "gates": list(gates)})


ERROR_RATE = {"metric": "error_rate", "margin": 0.02, "alpha": 0.05}
ACCURACY = {"metric": "accuracy", "margin": 0.02, "alpha": 0.05}


def metrics(canary: ArmStats, production: ArmStats | None = None) -> LiveMetrics:
    arms = {canary.deployment: canary}
    if production is not None:
        arms[production.deployment] = production
    return LiveMetrics(window_start=T0, window_end=T0, arms=arms)


def errors(deployment: str, errors: int, requests: int) -> ArmStats:
    return ArmStats(deployment=deployment, requests=requests, errors=errors)


def gate_evidence(result: GateResult, name: str) -> GateEvidence:
    return next(item for item in result.evidence if item.gate == name)


@pytest.mark.parametrize(
    ("canary_errors", "production_errors", "n", "outcome"),
    [
        # Equal 10% error rates, n=1000 each: the score z is 1.4857 (p 0.069 > 0.05).
        (100, 100, 1000, "inconclusive"),
        # n=4000 each: z = 2.9715, p = 0.0015: non-inferior.
        (400, 400, 4000, "pass"),
        # 20% vs 10%, n=1000: z = -5.043: inferior beyond the margin.
        (200, 100, 1000, "fail"),
    ],
)
def test_error_rate_uses_the_farrington_manning_score_test(
    canary_errors, production_errors, n, outcome
) -> None:
    live = metrics(errors("c", canary_errors, n), errors("p", production_errors, n))
    result = evaluate_canary(canary_settings(ERROR_RATE), live, "c", "p")
    evidence = gate_evidence(result, "canary:error_rate")
    reference = farrington_manning(
        canary_errors, n, production_errors, n, 0.02, higher_is_better=False
    )
    assert evidence.outcome == outcome == result.outcome
    assert evidence.test == "farrington_manning"
    assert evidence.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert evidence.p_value == pytest.approx(reference.p_value, rel=1e-12)
    assert evidence.pass_boundary == pytest.approx(1.6448536, abs=1e-6)  # one look at 0.05
    assert evidence.margin == 0.02 and evidence.alpha == 0.05
    assert evidence.samples == {"canary": n, "production": n}


def test_the_score_test_is_calibrated_where_the_wald_test_was_not() -> None:
    """1:9 arms (a 10 % canary), accuracy exactly at the margin (0.88 vs 0.90): the chance the
    gate passes, summed exactly over the binomial outcomes, stays at or below alpha (the
    unpooled Wald test the gate used before passed 0.065 of them)."""
    from scipy.stats import binom

    settings_ = canary_settings(ACCURACY, minimum=1)
    n_c, n_p = 300, 2700
    passed = 0.0
    production_counts = range(2330, 2530)  # +-4.4 sd around 2430: the rest is < 1e-5
    for x_p in production_counts:
        weight_p = binom.pmf(x_p, n_p, 0.90)
        for x_c in range(220, 300):
            z = farrington_manning(x_c, n_c, x_p, n_p, 0.02).statistic
            if z >= 1.6448536269514722:
                passed += weight_p * binom.pmf(x_c, n_c, 0.88)
        if x_p == 2430:  # the gate agrees with the reference on a row of outcomes
            for x_c in (255, 265, 275):
                result = evaluate_canary(settings_, live_for(x_c, n_c, x_p, n_p), "c", "p")
                expected = farrington_manning(x_c, n_c, x_p, n_p, 0.02).statistic >= 1.6448536
                assert (gate_evidence(result, "canary:accuracy").outcome == "pass") == expected
    assert 0.040 < passed <= 0.05


def live_for(x_c: int, n_c: int, x_p: int, n_p: int) -> LiveMetrics:
    return metrics(
        ArmStats(deployment="c", requests=n_c, labeled=n_c, correct=x_c),
        ArmStats(deployment="p", requests=n_p, labeled=n_p, correct=x_p),
    )


def test_accuracy_is_higher_is_better() -> None:
    def acc(name: str, correct: int) -> ArmStats:
        return ArmStats(deployment=name, requests=5000, labeled=2000, correct=correct)

    settings_ = canary_settings(ACCURACY)
    # 90% vs 90%, 2000 labeled each: z = 2.1011 >= 1.645: pass.
    result = evaluate_canary(settings_, metrics(acc("c", 1800), acc("p", 1800)), "c", "p")
    assert gate_evidence(result, "canary:accuracy").statistic == pytest.approx(2.1011, abs=1e-4)
    assert result.outcome == "pass"
    # 80% vs 90%: clearly worse.
    assert (
        evaluate_canary(settings_, metrics(acc("c", 1600), acc("p", 1800)), "c", "p").outcome
        == "fail"
    )


def test_accuracy_needs_enough_labeled_requests() -> None:
    few_labels = ArmStats(deployment="c", requests=5000, labeled=100, correct=100)
    production = ArmStats(deployment="p", requests=5000, labeled=2000, correct=1800)
    result = evaluate_canary(canary_settings(ACCURACY), metrics(few_labels, production), "c", "p")
    assert result.outcome == "inconclusive"
    assert gate_evidence(result, "canary:accuracy").outcome == "inconclusive"


def test_holm_on_the_fail_side_across_gates() -> None:
    """Two gates, each just inferior at 0.05 but not at 0.025: neither fails (Holm's first
    level is alpha / 2); one clearly inferior fails, and then the other faces 0.05."""
    # z = -1.777 for both (inferior at 0.05, not at 0.025): 14.6 % vs 10 % errors, 85.4 %
    # vs 90 % accuracy, n = 1000 each.
    borderline = farrington_manning(146, 1000, 100, 1000, 0.02, higher_is_better=False)
    assert -1.96 < borderline.statistic < -1.645
    settings_ = canary_settings(ERROR_RATE, ACCURACY)
    canary = ArmStats(deployment="c", requests=1000, errors=146, labeled=1000, correct=854)
    production = ArmStats(deployment="p", requests=1000, errors=100, labeled=1000, correct=900)
    result = evaluate_canary(settings_, metrics(canary, production), "c", "p")
    assert result.outcome == "inconclusive"
    assert "Holm" in gate_evidence(result, "canary:error_rate").reason
    # Accuracy clearly worse: it fails at 0.025, and the error rate then fails at 0.05.
    worse = canary.model_copy(update={"correct": 700})
    result = evaluate_canary(settings_, metrics(worse, production), "c", "p")
    assert gate_evidence(result, "canary:accuracy").outcome == "fail"
    assert gate_evidence(result, "canary:error_rate").outcome == "fail"


def test_zero_error_rates_do_not_divide_by_zero() -> None:
    live = metrics(errors("c", 0, 5000), errors("p", 0, 5000))
    assert evaluate_canary(canary_settings(ERROR_RATE), live, "c", "p").outcome == "pass"


@pytest.mark.parametrize(
    ("live", "reason"),
    [
        (None, "live metrics unavailable"),
        (metrics(errors("c", 0, 5000)), "no metrics for production deployment p"),
        (metrics(errors("c", 0, 199), errors("p", 0, 5000)), "canary below 200 requests"),
        (metrics(errors("c", 0, 5000), errors("p", 0, 10)), "production below 200 requests"),
    ],
)
def test_missing_or_too_few_samples_is_inconclusive(live, reason) -> None:
    result = evaluate_canary(canary_settings(ERROR_RATE), live, "c", "p")
    assert result.outcome == "inconclusive"
    assert result.evidence[0].gate == "samples" and result.evidence[0].reason == reason


def test_no_gates_still_needs_samples() -> None:
    settings_ = canary_settings()
    assert (
        evaluate_canary(
            settings_, metrics(errors("c", 0, 10), errors("p", 0, 10)), "c", "p"
        ).outcome
        == "inconclusive"
    )
    assert (
        evaluate_canary(
            settings_, metrics(errors("c", 0, 500), errors("p", 0, 500)), "c", "p"
        ).outcome
        == "pass"
    )


def test_no_baseline_passes_on_samples_alone() -> None:
    settings_ = canary_settings(ERROR_RATE)
    assert evaluate_canary(settings_, metrics(errors("c", 0, 500)), "c", None).outcome == "pass"
    result = evaluate_canary(settings_, metrics(errors("c", 0, 5)), "c", None)
    assert result.outcome == "inconclusive"


# --- canary: latency ---------------------------------------------------------------------------


def latencies(
    name: str, scale: float, n: int = 3000, seed: int = 7, sigma: float = 0.4
) -> ArmStats:
    rnd = random.Random(seed)
    sample = [scale * rnd.lognormvariate(3.0, sigma) for _ in range(n)]
    return ArmStats(deployment=name, requests=n, latency_ms=sample)


@pytest.mark.parametrize(
    ("canary", "outcome"),
    [
        ({"scale": 1.0}, "pass"),  # the same distribution (10 % allowed)
        ({"scale": 1.6}, "fail"),  # 60 % slower everywhere
        # The same median, a p95 2.3 x production's: the median-based tests passed it.
        ({"scale": 1.0, "sigma": 0.4 + math.log(2.3) / 1.6448536}, "fail"),
    ],
)
def test_latency_judges_the_p95(canary, outcome) -> None:
    gate = {"metric": "latency_ms", "margin": 0.1, "alpha": 0.05}
    live = metrics(latencies("c", seed=1, **canary), latencies("p", 1.0, seed=2))
    result = evaluate_canary(canary_settings(gate), live, "c", "p")
    evidence = gate_evidence(result, "canary:latency_ms")
    assert evidence.outcome == outcome, evidence.reason
    assert evidence.test == "quantile:p95"
    assert evidence.values["canary_p95"] is not None and evidence.interval is not None


def test_legacy_latency_test_names_mean_the_quantile_test() -> None:
    for legacy in ("mann_whitney", "bootstrap", None):
        gate = {"metric": "latency_ms", "margin": 0.1} | ({"test": legacy} if legacy else {})
        assert canary_settings(gate).gates[0].test == "quantile"


def test_latency_with_few_samples_is_inconclusive() -> None:
    gate = {"metric": "latency_ms", "margin": 0.1}
    canary = latencies("c", 1.0, n=300).model_copy(update={"latency_ms": [10.0] * 20})
    live = metrics(canary, latencies("p", 1.0))
    result = evaluate_canary(canary_settings(gate), live, "c", "p")
    assert gate_evidence(result, "canary:latency_ms").outcome == "inconclusive"


def test_latency_is_deterministic() -> None:
    gate = {"metric": "latency_ms", "margin": 0.05}
    live = metrics(latencies("c", 1.05, seed=3), latencies("p", 1.0, seed=4))
    first = evaluate_canary(canary_settings(gate), live, "c", "p")
    assert evaluate_canary(canary_settings(gate), live, "c", "p") == first


# --- property: no pass on too few samples ------------------------------------------------------


@st.composite
def arm_stats(draw: st.DrawFn, name: str) -> ArmStats:
    requests = draw(st.integers(0, 600))
    labeled = draw(st.integers(0, requests))
    return ArmStats(
        deployment=name,
        requests=requests,
        errors=draw(st.integers(0, requests)),
        labeled=labeled,
        correct=draw(st.integers(0, labeled)),
    )


@settings(max_examples=200, deadline=None)
@given(canary=arm_stats("c"), production=st.none() | arm_stats("p"))
def test_no_gate_passes_on_missing_or_too_few_samples(canary, production) -> None:
    minimum = 200
    settings_ = canary_settings(ERROR_RATE, ACCURACY, minimum=minimum)
    result = evaluate_canary(settings_, metrics(canary, production), "c", "p")
    few = (
        production is None
        or min(canary.requests, production.requests) < minimum
        or min(canary.labeled, production.labeled) < minimum
    )
    if few:
        assert result.outcome != "pass"
    for item in result.evidence:
        if item.samples and min(item.samples.values()) < minimum:
            assert item.outcome == "inconclusive"
