"""The sequential statistics against published tables, statsmodels, scipy and exact sums.

References:
- Lan-DeMets O'Brien-Fleming-type spending, 4 equally spaced looks, one-sided 0.025: z = 4.333,
  2.963, 2.359, 2.014 (Reboussin, DeMets, Kim & Lan 2000, Controlled Clinical Trials 21:190,
  the ld98 program; the same as R gsDesign `sfLDOF`).
- The same at one-sided 0.05: z = 3.7496, 2.5399, 2.0160, 1.7201 (SeqBounds.jl README table,
  `bounds([0.25, 0.5, 0.75, 1.0], 0.05)`).
- Classic constant boundaries, K = 4, two-sided 0.05 (one-sided 0.025): Pocock C_P = 2.361,
  O'Brien-Fleming C_B = 2.024 (Jennison & Turnbull 2000, Group Sequential Methods, Tables 2.1
  and 2.3).
- statsmodels 0.15: Holm (`multipletests`), the pooled score test (`test_proportions_2indep`,
  margin 0), normal sample size (`normal_sample_size_one_tail`, `NormalIndPower`). Its
  restricted MLE for a non-zero margin has a known bug (statsmodels issue #10269: `count0`
  where `nobs0` belongs), so the score test with a margin is checked against the likelihood
  maximised numerically instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import binom, multivariate_normal, norm
from statsmodels.stats import proportion
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, normal_sample_size_one_tail

from promotion.sequential import (
    _order_statistic_bounds,
    _restricted_mle,
    crossing_probabilities,
    effective_samples,
    farrington_manning,
    holm,
    holm_adjusted,
    judge_look,
    non_inferiority_sample_size,
    plan_design,
    quantile_ratio_test,
    sequential_holm,
    spending_boundaries,
    spent_alpha,
)

QUARTERS = (0.25, 0.5, 0.75, 1.0)


# --- alpha spending and boundaries ---------------------------------------------------------------


def test_obrien_fleming_spending_matches_the_published_boundaries() -> None:
    bounds = spending_boundaries(QUARTERS, 0.025, "obrien_fleming")
    assert bounds == pytest.approx((4.333, 2.963, 2.359, 2.014), abs=1e-3)


def test_obrien_fleming_spending_at_005_matches_the_seqbounds_table() -> None:
    bounds = spending_boundaries(QUARTERS, 0.05, "obrien_fleming")
    # SeqBounds integrates on a coarser grid (h = 0.05): agreement to about 1e-3.
    assert bounds == pytest.approx((3.7496, 2.5399, 2.0160, 1.7201), abs=2e-3)


@pytest.mark.parametrize(
    ("shape", "constant"),
    [
        (lambda k: 1.0, 2.361),  # Pocock
        (lambda k: math.sqrt(4 / k), 2.024),  # O'Brien-Fleming
    ],
)
def test_crossing_probabilities_give_the_classic_constants(shape, constant) -> None:
    """Solve C so that the boundaries C * shape(k) cross with probability 0.025 under H0."""

    def excess(c: float) -> float:
        bounds = [c * shape(k) for k in range(1, 5)]
        return sum(crossing_probabilities(bounds, QUARTERS)) - 0.025

    assert brentq(excess, 1.5, 4.0) == pytest.approx(constant, abs=2e-3)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize(
    "fractions", [QUARTERS, (0.2, 0.45, 1.0), (0.1, 0.3, 0.65, 0.8, 1.0), (0.5, 1.0)]
)
def test_boundaries_spend_alpha_exactly_under_the_brownian_covariance(fractions, spending) -> None:
    """P(no crossing by look k) from scipy's multivariate normal CDF equals 1 - alpha(t_k)."""
    alpha = 0.05
    bounds = spending_boundaries(fractions, alpha, spending)
    t = np.asarray(fractions)
    covariance = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(1, len(t) + 1):
        stay = multivariate_normal(
            mean=np.zeros(k), cov=covariance[:k, :k], abseps=1e-7, releps=1e-7, seed=7
        ).cdf(np.asarray(bounds[:k]))
        assert 1 - stay == pytest.approx(spent_alpha(t[k - 1], alpha, spending), abs=2e-4)


def test_crossing_with_a_drift_matches_the_multivariate_normal() -> None:
    fractions = (0.3, 0.6, 1.0)
    bounds = spending_boundaries(fractions, 0.05, "obrien_fleming")
    t = np.asarray(fractions)
    covariance = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    drift = 2.5
    stay = multivariate_normal(mean=drift * np.sqrt(t), cov=covariance, seed=7).cdf(bounds)
    assert sum(crossing_probabilities(bounds, fractions, drift)) == pytest.approx(
        1 - stay, abs=3e-4
    )


def test_one_look_at_full_information_is_the_fixed_test() -> None:
    assert spending_boundaries([1.0], 0.05, "obrien_fleming")[0] == pytest.approx(norm.isf(0.05))
    assert spending_boundaries([1.0], 0.05, "pocock")[0] == pytest.approx(norm.isf(0.05))
    assert crossing_probabilities([1.645], [1.0], drift=2.0)[0] == pytest.approx(
        norm.sf(1.645 - 2.0)
    )


def test_spending_functions() -> None:
    assert spent_alpha(1.0, 0.05, "obrien_fleming") == pytest.approx(0.05)
    assert spent_alpha(2.0, 0.05, "pocock") == pytest.approx(0.05)  # capped after t = 1
    assert spent_alpha(0.0, 0.05, "pocock") == 0.0
    assert spent_alpha(0.5, 0.05, "pocock") == pytest.approx(0.05 * math.log(1 + (math.e - 1) / 2))
    assert spent_alpha(0.25, 0.05, "obrien_fleming") == pytest.approx(
        2 * norm.sf(norm.isf(0.025) / 0.5)
    )


def test_unplanned_looks_only_depend_on_the_looks_so_far() -> None:
    full = spending_boundaries((0.2, 0.5, 0.9, 1.0), 0.05, "obrien_fleming")
    assert spending_boundaries((0.2, 0.5), 0.05, "obrien_fleming") == full[:2]


def test_a_look_without_new_information_spends_nothing() -> None:
    bounds = spending_boundaries((0.5, 0.5, 1.0, 1.3), 0.05, "obrien_fleming")
    assert math.isinf(bounds[1]) and math.isinf(bounds[3])
    assert bounds[2] == pytest.approx(spending_boundaries((0.5, 1.0), 0.05, "obrien_fleming")[1])


@pytest.mark.parametrize("fractions", [(), (0.5, 0.4), (0.0, 1.0), (float("nan"),)])
def test_bad_fractions_are_refused(fractions) -> None:
    with pytest.raises(ValueError, match=r"look|fraction"):
        spending_boundaries(fractions, 0.05, "obrien_fleming")


# --- the design and its looks ------------------------------------------------------------------


def test_design_at_the_shipped_policy() -> None:
    design = plan_design(margin=0.02, alpha=0.05, power=0.8, baseline_rate=0.9)
    assert design.boundaries == spending_boundaries((1 / 3, 2 / 3, 1.0), 0.05, "obrien_fleming")
    # Its power at the planned maximum is the asked power, by the multivariate normal.
    t = np.asarray(design.planned_fractions)
    covariance = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    drift = (norm.isf(0.05) + norm.ppf(0.8)) * math.sqrt(design.inflation)
    stay = multivariate_normal(mean=drift * np.sqrt(t), cov=covariance, seed=3).cdf(
        design.boundaries
    )
    assert 1 - stay == pytest.approx(0.8, abs=1e-3)
    assert 1.0 < design.inflation < 1.05  # O'Brien-Fleming-like costs little at the end
    assert design.max_information == pytest.approx(design.fixed_information * design.inflation)
    candidate, baseline = design.samples_per_arm(ratio=9)
    assert baseline == pytest.approx(9 * candidate, abs=9)
    assert design.fraction(candidate, baseline) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("statistics", "fractions", "outcome"),
    [
        ((4.4,), (0.25,), "pass"),  # boundary 4.333
        ((4.3,), (0.25,), "continue"),
        ((-4.4,), (0.25,), "fail"),
        ((0.5, 1.0, 1.5, 2.0), QUARTERS, "exhausted"),  # last boundary 2.014
        ((0.5, 1.0, 1.5, 2.02), QUARTERS, "pass"),
        ((0.5, 1.0, -1.5, -2.02), QUARTERS, "fail"),
    ],
)
def test_judge_look(statistics, fractions, outcome) -> None:
    look = judge_look(statistics, fractions, 0.025)
    assert look.outcome == outcome
    assert look.look == len(statistics)
    assert look.pass_boundary == pytest.approx(
        spending_boundaries(fractions, 0.025, "obrien_fleming")[-1]
    )
    assert look.fail_boundary == -look.pass_boundary
    assert look.nominal_alpha == pytest.approx(norm.sf(look.pass_boundary))


# --- sample size ---------------------------------------------------------------------------------


def test_sample_size_for_the_shipped_accuracy_gate_is_about_2800_per_arm() -> None:
    size = non_inferiority_sample_size(margin=0.02, alpha=0.05, power=0.8, baseline_rate=0.9)
    # Equal rates, equal arms: the textbook formula (statsmodels' power for a standardized
    # difference 0.02 / sqrt(0.9 * 0.1)) needs 2783; the restricted variance under H0 is a
    # little larger.
    textbook = NormalIndPower().solve_power(
        effect_size=0.02 / math.sqrt(0.09), alpha=0.05, power=0.8, alternative="larger"
    )
    assert textbook == pytest.approx(2782.4, abs=0.5)
    assert size.candidate == size.baseline
    assert textbook <= size.candidate <= textbook * 1.01


@pytest.mark.parametrize(
    ("rate", "margin", "ratio", "difference"),
    [
        (0.9, 0.02, 1.0, 0.0),
        (0.9, 0.02, 9.0, 0.0),
        (0.7, 0.05, 3.0, 0.01),
        (0.97, 0.01, 1.0, -0.005),
    ],
)
def test_sample_size_matches_statsmodels_normal_formula(rate, margin, ratio, difference) -> None:
    size = non_inferiority_sample_size(margin, 0.05, 0.8, rate, ratio, difference)
    candidate_rate = rate + difference
    # The null variance from the likelihood maximised numerically at the expected rates.
    null_c, null_b = _numeric_restricted_mle(candidate_rate, 1.0, rate, ratio, -margin)
    std_null = math.sqrt(null_c * (1 - null_c) + null_b * (1 - null_b) / ratio)
    std_alt = math.sqrt(candidate_rate * (1 - candidate_rate) + rate * (1 - rate) / ratio)
    expected = normal_sample_size_one_tail(
        difference + margin, 0.8, 0.05, std_null=std_null, std_alternative=std_alt
    )
    assert size.candidate == math.ceil(expected)
    assert size.baseline == math.ceil(expected * ratio)


def test_sample_size_is_the_same_for_an_error_rate_read_the_other_way() -> None:
    accuracy = non_inferiority_sample_size(0.02, 0.05, 0.8, 0.9, ratio=9)
    error_rate = non_inferiority_sample_size(0.02, 0.05, 0.8, 0.1, ratio=9, higher_is_better=False)
    assert accuracy == error_rate


def test_sample_size_gives_the_power_it_promises() -> None:
    """Seeded simulation of the score test at the computed sizes, 1:9 arms, equal rates."""
    size = non_inferiority_sample_size(0.02, 0.05, 0.8, 0.9, ratio=9)
    rng = np.random.default_rng(20261202)
    runs = 3000
    candidate = rng.binomial(size.candidate, 0.9, runs)
    baseline = rng.binomial(size.baseline, 0.9, runs)
    passed = sum(
        farrington_manning(int(c), size.candidate, int(b), size.baseline, 0.02).p_value < 0.05
        for c, b in zip(candidate, baseline, strict=True)
    )
    # Monte Carlo standard error of a 0.8 rate over 3000 runs: 0.0073.
    assert passed / runs == pytest.approx(0.8, abs=0.025)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"margin": 0.0}, "margin"),
        ({"alpha": 0.0}, "alpha"),
        ({"power": 1.0}, "power"),
        ({"baseline_rate": 1.0}, "baseline_rate"),
        ({"ratio": 0.0}, "ratio"),
        ({"difference": -0.02}, "no power"),
    ],
)
def test_sample_size_refuses_bad_input(kwargs, match) -> None:
    arguments = {"margin": 0.02, "alpha": 0.05, "power": 0.8, "baseline_rate": 0.9} | kwargs
    with pytest.raises(ValueError, match=match):
        non_inferiority_sample_size(**arguments)


# --- the Farrington-Manning score test ------------------------------------------------------


def _numeric_restricted_mle(
    rate_1: float, samples_1: float, rate_2: float, samples_2: float, difference: float
) -> tuple[float, float]:
    """Maximise the binomial likelihood under p1 - p2 = difference by a bounded search."""
    tiny = 1e-12

    def negative_log_likelihood(p2: float) -> float:
        p1 = p2 + difference
        return -(
            samples_1 * (rate_1 * math.log(p1) + (1 - rate_1) * math.log(1 - p1))
            + samples_2 * (rate_2 * math.log(p2) + (1 - rate_2) * math.log(1 - p2))
        )

    low, high = max(0.0, -difference) + tiny, min(1.0, 1.0 - difference) - tiny
    p2 = minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12}
    ).x
    # The bounded search stops short of an optimum at a bound (an arm all correct, e.g. 1 of
    # 1): the bounds themselves are candidates too.
    p2 = min((p2, low, high), key=negative_log_likelihood)
    return p2 + difference, p2


@settings(max_examples=200, deadline=None)
@given(
    samples=st.tuples(st.integers(5, 20_000), st.integers(5, 20_000)),
    fractions=st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)),
    margin=st.floats(0.001, 0.2),
)
def test_restricted_mle_maximises_the_likelihood(samples, fractions, margin) -> None:
    (n1, n2), (f1, f2) = samples, fractions
    rate_1, rate_2 = round(f1 * n1) / n1, round(f2 * n2) / n2
    closed = _restricted_mle(rate_1, n1, rate_2, n2, -margin)
    numeric = _numeric_restricted_mle(rate_1, n1, rate_2, n2, -margin)
    assert closed[0] - closed[1] == pytest.approx(-margin)
    assert closed == pytest.approx(numeric, abs=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # statsmodels' ratio of a zero rate
@settings(max_examples=100, deadline=None)
@given(
    candidate=st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    baseline=st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
)
def test_score_test_without_margin_is_statsmodels_pooled_score_test(candidate, baseline) -> None:
    (x_c, n_c), (x_b, n_b) = candidate, baseline
    ours = farrington_manning(x_c, n_c, x_b, n_b, margin=0.0)
    if x_c + x_b in (0, n_c + n_b):  # nothing varies: statsmodels divides 0 by 0
        assert ours.statistic == 0.0
        return
    statistic, p_value = proportion.test_proportions_2indep(
        x_c, n_c, x_b, n_b, value=0, method="score", compare="diff",
        alternative="larger", correction=False, return_results=False,
    )  # fmt: skip
    assert ours.statistic == pytest.approx(statistic, rel=1e-9, abs=1e-12)
    assert ours.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(
    candidate=st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    baseline=st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    margin=st.floats(0.001, 0.2),
)
def test_score_test_with_a_margin(candidate, baseline, margin) -> None:
    (x_c, n_c), (x_b, n_b) = candidate, baseline
    ours = farrington_manning(x_c, n_c, x_b, n_b, margin)
    null_c, null_b = _numeric_restricted_mle(x_c / n_c, n_c, x_b / n_b, n_b, -margin)
    variance = null_c * (1 - null_c) / n_c + null_b * (1 - null_b) / n_b
    z = (x_c / n_c - x_b / n_b + margin) / math.sqrt(variance)
    # The bounded numeric search stops short of a boundary optimum (an arm all correct or all
    # wrong, e.g. 0 of 1 against 0 of 748): the reference itself is off by ~1e-5 there.
    assert ours.statistic == pytest.approx(z, rel=1e-4, abs=1e-5)
    assert ours.p_value == pytest.approx(norm.sf(z), rel=1e-4, abs=1e-6)
    assert ours.p_value + ours.p_value_inferior == pytest.approx(1.0)
    # An error rate is the same test on the complements.
    flipped = farrington_manning(n_c - x_c, n_c, n_b - x_b, n_b, margin, higher_is_better=False)
    assert flipped.statistic == pytest.approx(ours.statistic, rel=1e-9, abs=1e-9)


def test_score_test_is_calibrated_with_1_to_9_arms_where_wald_is_not() -> None:
    """Exact size at the margin (0.88 vs 0.90, 300 vs 2700 labeled), summing binomial outcomes.

    Issue 16 measured 0.065 for the unpooled Wald test at one look: the exact sum says so too.
    """
    n_c, n_b, rate, margin, alpha = 300, 2700, 0.9, 0.02, 0.05
    weights_c = binom.pmf(np.arange(n_c + 1), n_c, rate - margin)
    weights_b = binom.pmf(np.arange(n_b + 1), n_b, rate)
    score_size = wald_size = covered = 0.0
    for x_c in np.flatnonzero(weights_c > 1e-10):
        for x_b in np.flatnonzero(weights_b > 1e-10):
            weight = weights_c[x_c] * weights_b[x_b]
            covered += weight
            if farrington_manning(int(x_c), n_c, int(x_b), n_b, margin).p_value < alpha:
                score_size += weight
            p_c, p_b = x_c / n_c, x_b / n_b
            wald_se = math.sqrt(p_c * (1 - p_c) / n_c + p_b * (1 - p_b) / n_b)
            if wald_se > 0 and norm.sf((p_c - p_b + margin) / wald_se) < alpha:
                wald_size += weight
    assert covered > 1 - 1e-6
    assert score_size <= alpha
    assert score_size == pytest.approx(0.047, abs=0.003)
    assert wald_size == pytest.approx(0.065, abs=0.003)


@pytest.mark.parametrize(
    "arguments", [(5, 4, 1, 2, 0.02), (1, 0, 1, 2, 0.02), (1, 2, 3, 2, 0.02), (1, 2, 1, 2, -0.1)]
)
def test_score_test_refuses_bad_counts(arguments) -> None:
    with pytest.raises(ValueError):
        farrington_manning(*arguments)


def test_effective_samples() -> None:
    assert effective_samples(100, 100) == 50
    assert effective_samples(100, 900) == 90
    assert effective_samples(0, 900) == 0


# --- Holm ----------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)  # multipletests takes ~0.15 s a call here
@given(
    p_values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_holm_matches_statsmodels(p_values, alpha) -> None:
    reject, adjusted, _, _ = multipletests(p_values, alpha=alpha, method="holm")
    assert holm_adjusted(p_values) == pytest.approx(tuple(adjusted), abs=1e-12)
    assert holm(p_values, alpha) == tuple(bool(r) for r in reject)


def test_sequential_holm_at_full_information_is_holm() -> None:
    # One look at t = 1 spends all of each level: the boundaries are z_{alpha / (m - i)}.
    statistics = {"accuracy": 2.4, "error_rate": 2.1, "latency": 1.6}
    p_values = [float(norm.sf(z)) for z in statistics.values()]  # 0.0082, 0.0179, 0.0548
    assert sequential_holm(statistics, [1.0], 0.05) == {
        "accuracy": True,  # 0.0082 <= 0.05 / 3
        "error_rate": True,  # 0.0179 <= 0.05 / 2
        "latency": False,  # 0.0548 > 0.05
    }
    assert tuple(sequential_holm(statistics, [1.0], 0.05).values()) == holm(p_values, 0.05)


def test_sequential_holm_steps_down_with_the_levels_boundaries() -> None:
    fractions = (0.5,)
    strict = spending_boundaries(fractions, 0.025, "obrien_fleming")[0]  # alpha / 2
    lenient = spending_boundaries(fractions, 0.05, "obrien_fleming")[0]  # alpha
    assert strict == pytest.approx(2.963, abs=1e-3) and lenient == pytest.approx(2.538, abs=1e-3)
    # "a" clears the alpha/2 boundary; "b" then faces the full-alpha one and clears it.
    assert sequential_holm({"a": 3.0, "b": 2.6}, fractions, 0.05) == {"a": True, "b": True}
    # "a" does not clear alpha/2: the step-down stops, though "b" would clear the alpha one.
    assert sequential_holm({"a": 2.9, "b": 2.85}, fractions, 0.05) == {"a": False, "b": False}


# --- tail latency ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "q", "level"), [(20, 0.5, 0.05), (500, 0.95, 0.025), (3000, 0.99, 0.01)]
)
def test_order_statistic_bounds_cover_exactly(n, q, level) -> None:
    """The chosen ranks are the tightest with binomial coverage >= 1 - level."""
    ordered = np.arange(1, n + 1, dtype=float)  # X_(i) = i
    lower, upper = _order_statistic_bounds(ordered, q, level)
    u, lo = int(upper), int(lower)
    assert binom.cdf(u - 1, n, q) >= 1 - level > binom.cdf(u - 2, n, q)
    assert binom.sf(lo - 1, n, q) >= 1 - level > binom.sf(lo, n, q)


def test_too_few_samples_leave_the_tail_inconclusive() -> None:
    result = quantile_ratio_test([10.0] * 20, [10.0] * 20, quantile=0.95, alpha=0.05)
    assert result.candidate_bounds[1] is None
    assert result.outcome == "inconclusive"


def test_quantile_test_passes_the_same_tail_and_fails_a_heavier_one() -> None:
    rng = np.random.default_rng(5)
    production = rng.lognormal(math.log(50), 0.5, 20_000)
    same = rng.lognormal(math.log(50), 0.5, 5_000)
    # Same median, p95 2.3 times production's.
    heavy = rng.lognormal(math.log(50), 0.5 + math.log(2.3) / norm.ppf(0.95), 5_000)
    assert quantile_ratio_test(same, production).outcome == "pass"
    result = quantile_ratio_test(heavy, production)
    assert result.outcome == "fail"
    assert np.median(heavy) == pytest.approx(np.median(production), rel=0.05)
    assert result.candidate / result.baseline == pytest.approx(2.3, rel=0.1)


def test_quantile_test_false_passes_at_most_alpha_at_the_margin() -> None:
    """Seeded: candidate's p95 exactly 1.1 times production's (the same shape, scaled)."""
    rng = np.random.default_rng(11)
    runs, passed = 1000, 0
    for _ in range(runs):
        production = rng.lognormal(math.log(50), 0.5, 4000)
        candidate = 1.1 * rng.lognormal(math.log(50), 0.5, 1000)
        passed += quantile_ratio_test(candidate, production, margin=0.10).outcome == "pass"
    # Bonferroni and discreteness make it conservative; 3 Monte Carlo SE above alpha at most.
    assert passed / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


@pytest.mark.parametrize(
    ("candidate", "baseline", "match"),
    [([], [1.0], "at least one"), ([1.0, float("inf")], [1.0], "finite")],
)
def test_quantile_test_refuses_bad_samples(candidate, baseline, match) -> None:
    with pytest.raises(ValueError, match=match):
        quantile_ratio_test(candidate, baseline)
