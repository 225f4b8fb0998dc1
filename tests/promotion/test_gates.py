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
    ("canary_errors", "production_errors", "n", "z", "outcome"),
    [
        # Equal 10% error rates, n=1000: se = sqrt(2 * .09 / 1000) = 0.0134164,
        # z = 0.02 / se = 1.4907, p = 0.0680 > 0.05: not shown yet.
        (100, 100, 1000, 1.4907, "inconclusive"),
        # n=4000: se = 0.0067082, z = 2.9814, p = 0.00143 < 0.05: non-inferior.
        (400, 400, 4000, 2.9814, "pass"),
        # 20% vs 10%, n=1000: se = sqrt(.16/1000 + .09/1000) = 0.0158114,
        # z = (-0.10 + 0.02) / se = -5.0596: inferior beyond the margin.
        (200, 100, 1000, -5.0596, "fail"),
    ],
)
def test_two_proportion_error_rate(canary_errors, production_errors, n, z, outcome) -> None:
    live = metrics(errors("c", canary_errors, n), errors("p", production_errors, n))
    result = evaluate_canary(canary_settings(ERROR_RATE), live, "c", "p")
    evidence = gate_evidence(result, "canary:error_rate")
    assert evidence.outcome == outcome == result.outcome
    assert evidence.statistic == pytest.approx(z, abs=1e-4)
    assert evidence.p_value == pytest.approx(normal_sf(z), rel=1e-3)
    assert evidence.p_value_inferior == pytest.approx(1 - normal_sf(z), rel=1e-3)
    assert evidence.margin == 0.02 and evidence.alpha == 0.05
    assert evidence.samples == {"canary": n, "production": n}


def test_two_proportion_accuracy_is_higher_is_better() -> None:
    def acc(name: str, correct: int) -> ArmStats:
        return ArmStats(deployment=name, requests=5000, labeled=2000, correct=correct)

    settings_ = canary_settings(ACCURACY)
    # 90% vs 90%: se = sqrt(2 * .09 / 2000) = 0.0094868, z = 2.1082, p = 0.0175: pass.
    result = evaluate_canary(settings_, metrics(acc("c", 1800), acc("p", 1800)), "c", "p")
    assert gate_evidence(result, "canary:accuracy").statistic == pytest.approx(2.1082, abs=1e-4)
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


def latencies(name: str, scale: float, n: int = 300, seed: int = 7) -> ArmStats:
    rnd = random.Random(seed)
    sample = [scale * rnd.lognormvariate(3.0, 0.4) for _ in range(n)]
    return ArmStats(deployment=name, requests=n, latency_ms=sample)


@pytest.mark.parametrize("test", ["mann_whitney", "bootstrap"])
@pytest.mark.parametrize(
    ("canary_scale", "outcome"),
    [(1.0, "pass"), (1.6, "fail")],  # same distribution (10% allowed) / 60% slower
)
def test_latency(test, canary_scale, outcome) -> None:
    gate = {"metric": "latency_ms", "test": test, "margin": 0.1, "alpha": 0.05}
    live = metrics(latencies("c", canary_scale, seed=1), latencies("p", 1.0, seed=2))
    result = evaluate_canary(canary_settings(gate), live, "c", "p")
    evidence = gate_evidence(result, "canary:latency_ms")
    assert evidence.outcome == outcome, evidence.reason
    assert evidence.test == test
    if test == "mann_whitney":
        assert evidence.p_value is not None and evidence.p_value_inferior is not None
    else:
        assert evidence.interval is not None


def test_latency_with_few_samples_is_inconclusive() -> None:
    gate = {"metric": "latency_ms", "test": "mann_whitney", "margin": 0.1}
    canary = latencies("c", 1.0, n=300).model_copy(update={"latency_ms": [10.0] * 20})
    live = metrics(canary, latencies("p", 1.0))
    result = evaluate_canary(canary_settings(gate), live, "c", "p")
    assert gate_evidence(result, "canary:latency_ms").outcome == "inconclusive"


def test_bootstrap_is_deterministic() -> None:
    gate = {"metric": "latency_ms", "test": "bootstrap", "margin": 0.05}
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
