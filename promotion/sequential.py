"""Sequential statistics for canary gates: sample size, alpha spending, Holm, the score test.

Pure and deterministic (no I/O, no clock, no randomness). scipy and numpy are imported inside
the functions that compute, as in `promotion.gates`, so importing this module stays cheap at
cold start. Groundwork for issue 16: nothing calls it from the state machine yet.

What each part controls (docs/promotion.md, "Sequential design (groundwork)"):
- `non_inferiority_sample_size`: labeled samples per arm for a one-sided non-inferiority test of
  two proportions (Farrington-Manning variance under H0, unpooled under the alternative).
- `spending_boundaries`: Lan-DeMets alpha spending (O'Brien-Fleming-like or Pocock-like) over
  looks at information fractions; per-look z boundaries computed exactly for correlated looks
  by recursive numerical integration (Armitage, McPherson & Rowe 1969; Jennison & Turnbull
  2000, ch. 19). The chance of ever crossing, under H0, is the alpha spent: at most `alpha`.
- `holm` / `sequential_holm`: Holm's step-down across gates judged at one look (family-wise
  error over the gates; with spending designs per level, Maurer & Bretz 2013).
- `farrington_manning`: the score test of H0 "candidate worse than baseline by the margin or
  more", variance at the restricted MLE (Farrington & Manning 1990): calibrated with 1:9 arms,
  where the unpooled Wald test is not.
- `quantile_ratio_test`: tail latency, "candidate's q-quantile at most (1 + margin) times the
  baseline's", from distribution-free order-statistic bounds (exact for i.i.d. samples).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Spending = Literal["obrien_fleming", "pocock"]
LookOutcome = Literal["pass", "fail", "continue", "exhausted"]
QuantileOutcome = Literal["pass", "fail", "inconclusive"]

# Recursive integration: the bin width on the Brownian scale (400 bins per sd at t = 1; the
# same for every design, so a look's boundary never depends on the looks after it), and how
# many standard deviations below its mean the grid starts (the mass below is < 1e-23).
_GRID_WIDTH = 1 / 400
_GRID_SDS = 10.0


# --- sample size -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSize:
    """Labeled samples per arm for a fixed-horizon non-inferiority test."""

    candidate: int
    baseline: int
    std_null: float  # per candidate sample: sd of the difference under H0 (restricted MLE)
    std_alternative: float  # likewise under the assumed truth

    @property
    def information(self) -> float:
        """Effective samples `n_c n_b / (n_c + n_b)` (n/2 with equal arms)."""
        return effective_samples(self.candidate, self.baseline)


def effective_samples(candidate: float, baseline: float) -> float:
    """The information of a difference of two rates, in samples: `1 / (1/n_c + 1/n_b)`."""
    if candidate <= 0 or baseline <= 0:
        return 0.0
    return candidate * baseline / (candidate + baseline)


def non_inferiority_sample_size(
    margin: float,
    alpha: float,
    power: float,
    baseline_rate: float,
    ratio: float = 1.0,
    difference: float = 0.0,
    higher_is_better: bool = True,
) -> SampleSize:
    """Samples per arm so a one-sided test at `alpha` shows non-inferiority with `power`.

    `ratio` is baseline samples per candidate sample (9 for a 10 % canary); `difference` is the
    assumed true candidate-minus-baseline rate in the "better" direction (0: as good).
    n_c = ((z_alpha sd_0 + z_power sd_1) / (difference + margin))^2, sd_0 from the restricted
    MLE under H0 (Farrington & Manning 1990), sd_1 unpooled under the assumed truth.
    """
    _check_unit("alpha", alpha)
    _check_unit("power", power)
    if not 0 < baseline_rate < 1:
        raise ValueError(f"baseline_rate must be between 0 and 1, got {baseline_rate}")
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    if difference + margin <= 0:
        raise ValueError("the assumed difference is at or beyond the margin: no power")
    from scipy.stats import norm

    # Work on the "good" rate so one formula serves both directions.
    p_base = baseline_rate if higher_is_better else 1 - baseline_rate
    p_cand = p_base + difference
    if not 0 <= p_cand <= 1:
        raise ValueError(f"baseline_rate + difference = {p_cand} is not a rate")
    null_cand, null_base = _restricted_mle(p_cand, 1.0, p_base, ratio, -margin)
    std_null = math.sqrt(null_cand * (1 - null_cand) + null_base * (1 - null_base) / ratio)
    std_alt = math.sqrt(p_cand * (1 - p_cand) + p_base * (1 - p_base) / ratio)
    z_alpha, z_power = float(norm.isf(alpha)), float(norm.ppf(power))
    candidate = ((z_alpha * std_null + z_power * std_alt) / (difference + margin)) ** 2
    return SampleSize(
        candidate=math.ceil(candidate - 1e-9),
        baseline=math.ceil(candidate * ratio - 1e-9),
        std_null=std_null,
        std_alternative=std_alt,
    )


# --- Farrington-Manning score test ---------------------------------------------------------------


@dataclass(frozen=True)
class ScoreTest:
    """A one-sided non-inferiority score test of two proportions."""

    statistic: float  # z: large means non-inferior
    p_value: float  # of H0 "worse by the margin or more"
    p_value_inferior: float  # of the opposite one-sided test (inferior beyond the margin)
    candidate_rate: float
    baseline_rate: float
    variance: float  # of the difference under H0, at the restricted MLE

    @property
    def information(self) -> float:
        return 1 / self.variance if self.variance > 0 else 0.0


def farrington_manning(
    successes_candidate: int,
    samples_candidate: int,
    successes_baseline: int,
    samples_baseline: int,
    margin: float,
    higher_is_better: bool = True,
) -> ScoreTest:
    """Score test of H0 "candidate worse than baseline by `margin` or more" (Farrington-Manning).

    `successes` count the measured event (correct answers for accuracy, errors for the error
    rate); `higher_is_better` says which direction is good. z = (d + margin) / sd_0 where d is
    the observed advantage and sd_0 the standard error at the MLE restricted to the H0 boundary;
    no continuity or n/(n-1) correction (statsmodels' `correction=False`).
    """
    for name, count, total in (
        ("candidate", successes_candidate, samples_candidate),
        ("baseline", successes_baseline, samples_baseline),
    ):
        if total <= 0 or not 0 <= count <= total:
            raise ValueError(f"{name}: need 0 <= successes <= samples and samples > 0")
    if margin < 0:
        raise ValueError(f"margin cannot be negative, got {margin}")
    from scipy.stats import norm

    rate_c, rate_b = successes_candidate / samples_candidate, successes_baseline / samples_baseline
    good_c, good_b = (rate_c, rate_b) if higher_is_better else (1 - rate_c, 1 - rate_b)
    null_c, null_b = _restricted_mle(good_c, samples_candidate, good_b, samples_baseline, -margin)
    variance = null_c * (1 - null_c) / samples_candidate + null_b * (1 - null_b) / samples_baseline
    excess = good_c - good_b + margin
    # Both arms all-good or all-bad with margin 0: nothing to tell the arms apart.
    z = excess / math.sqrt(variance) if variance > 0 else 0.0
    return ScoreTest(
        statistic=z,
        p_value=float(norm.sf(z)),
        p_value_inferior=float(norm.cdf(z)),
        candidate_rate=rate_c,
        baseline_rate=rate_b,
        variance=variance,
    )


def _restricted_mle(
    rate_1: float, samples_1: float, rate_2: float, samples_2: float, difference: float
) -> tuple[float, float]:
    """MLE of (p1, p2) under p1 - p2 = difference: the closed-form root of the likelihood's
    cubic in p2 (Miettinen & Nurminen 1985, Appendix; Farrington & Manning 1990)."""
    total = samples_1 + samples_2
    if difference == 0:
        pooled = (rate_1 * samples_1 + rate_2 * samples_2) / total
        return pooled, pooled
    count_2 = rate_2 * samples_2
    count = rate_1 * samples_1 + count_2
    cubic = total
    square = (samples_1 + 2 * samples_2) * difference - total - count
    linear = (samples_2 * difference - total - 2 * count_2) * difference + count
    constant = count_2 * difference * (1 - difference)
    q = (square / (3 * cubic)) ** 3 - linear * square / (6 * cubic**2) + constant / (2 * cubic)
    radicand = max((square / (3 * cubic)) ** 2 - linear / (3 * cubic), 0.0)
    r = math.copysign(math.sqrt(radicand), q)
    if r == 0:
        p2 = -square / (3 * cubic)
    else:
        angle = (math.pi + math.acos(max(-1.0, min(1.0, q / r**3)))) / 3
        p2 = 2 * r * math.cos(angle) - square / (3 * cubic)
    p2 = min(max(p2, 0.0, -difference), 1.0, 1.0 - difference)
    return p2 + difference, p2


# --- Lan-DeMets alpha spending ---------------------------------------------------------------


def spent_alpha(fraction: float, alpha: float, spending: Spending) -> float:
    """Alpha spent by information fraction t (capped at `alpha` from t = 1 on).

    O'Brien-Fleming-like: 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)); Pocock-like:
    alpha ln(1 + (e - 1) t) (Lan & DeMets 1983).
    """
    _check_unit("alpha", alpha)
    if fraction <= 0:
        return 0.0
    t = min(fraction, 1.0)
    if spending == "obrien_fleming":
        from scipy.stats import norm

        return float(2 * norm.sf(norm.isf(alpha / 2) / math.sqrt(t)))
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    raise ValueError(f"unknown spending function {spending!r}")


def spending_boundaries(
    fractions: Sequence[float],
    alpha: float,
    spending: Spending,
    information: Sequence[float] | None = None,
) -> tuple[float, ...]:
    """Upper z boundaries, one per look, spending `alpha` over the information fractions.

    P(Z_1 < c_1, ..., Z_{k-1} < c_{k-1}, Z_k >= c_k) = alpha(t_k) - alpha(t_{k-1}) under H0,
    Z_k the cumulative z at look k (corr(Z_j, Z_k) = sqrt(t_j / t_k)). A look that spends
    nothing (no new information, or past t = 1) gets an infinite boundary. Fractions may be
    unplanned: boundary k depends on looks 1..k only.

    `information` (one per look, any scale): the looks' observed information when alpha is
    spent by another clock (the production bake spends by calendar time, Lan & DeMets 1989):
    the correlation then follows the information, corr = sqrt(I_j / I_k), and a look without
    new information spends nothing.
    """
    _check_fractions(fractions)
    times: Sequence[float] = fractions
    if information is not None:
        _check_fractions(information)
        if len(information) != len(fractions):
            raise ValueError("one information per look")
        # Only the ratios matter; scaled so the latest look is at 1 (the grid's resolution).
        times = [value / information[-1] for value in information]
    from scipy.optimize import brentq

    walk = _BrownianWalk(drift=0.0)
    bounds: list[float] = []
    spent_before = 0.0
    for index, (fraction, t) in enumerate(zip(fractions, times, strict=True)):
        spent = spent_alpha(fraction, alpha, spending)
        increment = spent - spent_before
        if increment <= 1e-15 or t <= walk.time:
            bounds.append(math.inf)
            continue

        def excess(z: float, t: float = t, increment: float = increment) -> float:
            return walk.crossing(t, z) - increment

        bound = float(brentq(excess, -10.0, 40.0, xtol=1e-10))
        bounds.append(bound)
        if index < len(fractions) - 1:
            walk.stay_below(t, bound)
        spent_before = spent
    return tuple(bounds)


def alpha_increment(fractions: Sequence[float], alpha: float, spending: Spending) -> float:
    """The alpha the latest look spends: alpha(t_k) - alpha(t_{k-1}).

    As a one-look level it is valid whatever the looks' correlation (the increments sum to at
    most `alpha`: Bonferroni over the looks), so it serves tests without a z whose
    correlation the boundaries could use: the quantile test on fresh or thinned windows.
    """
    _check_fractions(fractions)
    previous = max(fractions[:-1], default=0.0)
    return max(
        spent_alpha(fractions[-1], alpha, spending) - spent_alpha(previous, alpha, spending), 0.0
    )


def crossing_probabilities(
    boundaries: Sequence[float], fractions: Sequence[float], drift: float = 0.0
) -> tuple[float, ...]:
    """P(first crossing at look k) for upper boundaries, when E[Z_k] = drift * sqrt(t_k)."""
    _check_fractions(fractions)
    if len(boundaries) != len(fractions):
        raise ValueError("one boundary per look")
    walk = _BrownianWalk(drift)
    probabilities: list[float] = []
    for index, (bound, t) in enumerate(zip(boundaries, fractions, strict=True)):
        if math.isinf(bound) or t <= walk.time:
            probabilities.append(0.0)
            continue
        probabilities.append(walk.crossing(t, bound))
        if index < len(fractions) - 1:
            walk.stay_below(t, bound)
    return tuple(probabilities)


class _BrownianWalk:
    """B(t) = Z(t) sqrt(t), a Brownian motion with drift, killed above each look's boundary.

    The mass that has not crossed is kept as point masses on a lattice of bins ending at the
    last boundary (Armitage, McPherson & Rowe 1969; Jennison & Turnbull 2000, ch. 19). Every
    lattice has the same bin width, so carrying the mass to the next look is one exact
    convolution with normal-CDF differences: a look just after another stays exact too.
    """

    def __init__(self, drift: float) -> None:
        self.width = _GRID_WIDTH
        self.drift = drift
        self.time = 0.0
        self.top = 0.0  # the last boundary (Brownian scale): bin j is centered at top - w(j + .5)
        self.masses: Any = None  # numpy array; None: nothing known yet, B(0) = 0

    def crossing(self, t: float, z_bound: float) -> float:
        """P(below every boundary so far, and Z(t) >= z_bound)."""
        import numpy as np
        from scipy.special import ndtr

        level, step = z_bound * math.sqrt(t), t - self.time
        if self.masses is None:
            return float(ndtr((self.drift * t - level) / math.sqrt(t)))
        points = self.top - self.width * (np.arange(len(self.masses)) + 0.5)
        tail = ndtr((points + self.drift * step - level) / math.sqrt(step))
        return float(np.dot(self.masses, tail))

    def stay_below(self, t: float, z_bound: float) -> None:
        """Move to time t, keeping only the mass below the boundary."""
        import numpy as np
        from scipy.special import ndtr

        top, step = z_bound * math.sqrt(t), t - self.time
        mean, sd = self.drift * t, math.sqrt(t)
        bins = max(1, math.ceil((top - (mean - _GRID_SDS * sd)) / self.width))
        if self.masses is None:
            edges = top - self.width * np.arange(bins + 1)  # descending
            self.masses = ndtr((edges[:-1] - mean) / sd) - ndtr((edges[1:] - mean) / sd)
        else:
            previous = np.asarray(self.masses)
            # Edge i of the new lattice minus point j of the old one depends on j - i only.
            offsets = np.arange(-bins, len(previous))  # d = j - i, with one more below
            shift = top - self.top - self.drift * step
            cdf = ndtr((shift + self.width * (offsets + 0.5)) / math.sqrt(step))
            # Bin i, between edges i + 1 and i: the CDF difference at d = j - i.
            kernel = cdf[1:] - cdf[:-1]  # index d + bins - 1, d from -(bins - 1)
            self.masses = np.correlate(kernel, previous, mode="valid")[::-1]
        self.time, self.top = t, top


# --- the design ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialDesign:
    """A group-sequential non-inferiority design: what the gate evidence shows.

    Looks are judged at information fractions `effective samples / max_information`, planned or
    not; the boundaries at the planned fractions are shown for reference.
    """

    margin: float
    alpha: float
    power: float
    baseline_rate: float
    ratio: float  # baseline:candidate allocation it was planned at
    spending: Spending
    planned_fractions: tuple[float, ...]
    boundaries: tuple[float, ...]  # z, at the planned fractions
    nominal_alphas: tuple[float, ...]  # 1 - Phi(boundary): the one-look p-value that crosses
    inflation: float  # max information / fixed-horizon information, for the same power
    fixed_information: float  # effective samples of the fixed-horizon test
    max_information: float  # effective samples at t = 1

    def samples_per_arm(self, ratio: float, fraction: float = 1.0) -> tuple[int, int]:
        """(candidate, baseline) labeled samples reaching `fraction` with baseline:candidate."""
        candidate = self.max_information * fraction * (1 + ratio) / ratio
        return math.ceil(candidate - 1e-9), math.ceil(candidate * ratio - 1e-9)

    def fraction(self, samples_candidate: float, samples_baseline: float) -> float:
        return effective_samples(samples_candidate, samples_baseline) / self.max_information


def plan_design(
    margin: float,
    alpha: float,
    power: float,
    baseline_rate: float,
    planned_fractions: Sequence[float] = (1 / 3, 2 / 3, 1.0),
    spending: Spending = "obrien_fleming",
    higher_is_better: bool = True,
    ratio: float = 1.0,
) -> SequentialDesign:
    """Plan a design whose pass boundary has `power` for an identical candidate.

    `ratio` is the baseline:candidate allocation of the data at the last look (cumulative):
    the variance under H0 depends on it (the restricted MLE moves the smaller arm more), so
    information planned at 1:1 falls short with a small canary arm.
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    fixed = non_inferiority_sample_size(
        margin, alpha, power, baseline_rate, ratio=ratio, higher_is_better=higher_is_better
    )
    bounds = spending_boundaries(planned_fractions, alpha, spending)
    fixed_drift = float(norm.isf(alpha) + norm.ppf(power))

    def power_gap(drift: float) -> float:
        return sum(crossing_probabilities(bounds, planned_fractions, drift)) - power

    drift = float(brentq(power_gap, 0.0, 20.0, xtol=1e-8))
    inflation = (drift / fixed_drift) ** 2 / planned_fractions[-1]
    return SequentialDesign(
        margin=margin,
        alpha=alpha,
        power=power,
        baseline_rate=baseline_rate,
        ratio=ratio,
        spending=spending,
        planned_fractions=tuple(planned_fractions),
        boundaries=bounds,
        nominal_alphas=tuple(float(norm.sf(b)) for b in bounds),
        inflation=inflation,
        fixed_information=fixed.information,
        max_information=fixed.information * inflation,
    )


@dataclass(frozen=True)
class LookEvidence:
    """One look of the sequential test: where it stood, the boundaries, the verdict."""

    look: int  # 1-based
    information_fraction: float
    statistic: float  # z of non-inferiority (large: non-inferior)
    pass_boundary: float  # pass when statistic >= this
    fail_boundary: float  # fail when statistic <= this (inferior beyond the margin)
    nominal_alpha: float  # of this look's pass boundary
    alpha_spent: float  # cumulative, by this look, per direction
    outcome: LookOutcome


def judge_look(
    statistics: Sequence[float],
    fractions: Sequence[float],
    alpha: float,
    spending: Spending = "obrien_fleming",
) -> LookEvidence:
    """Judge the latest look given every look so far (z and information fraction of each).

    Two one-sided sequential tests on the same z, each spending `alpha`: non-inferiority
    (pass at z >= c_k) and inferiority beyond the margin (fail at z <= -c_k). Neither by t = 1:
    `exhausted` (a person decides; more data spends nothing more).
    """
    if not statistics or len(statistics) != len(fractions):
        raise ValueError("one statistic per look, at least one look")
    bounds = spending_boundaries(fractions, alpha, spending)
    from scipy.stats import norm

    z, bound, t = statistics[-1], bounds[-1], fractions[-1]
    outcome: LookOutcome
    if z >= bound:
        outcome = "pass"
    elif z <= -bound:
        outcome = "fail"
    elif t >= 1:
        outcome = "exhausted"
    else:
        outcome = "continue"
    return LookEvidence(
        look=len(statistics),
        information_fraction=t,
        statistic=z,
        pass_boundary=bound,
        fail_boundary=-bound,
        nominal_alpha=float(norm.sf(bound)),
        alpha_spent=spent_alpha(max(fractions), alpha, spending),
        outcome=outcome,
    )


# --- Holm across gates ---------------------------------------------------------------------------


def holm_adjusted(p_values: Sequence[float]) -> tuple[float, ...]:
    """Holm (1979) step-down adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return tuple(adjusted)


def holm(p_values: Sequence[float], alpha: float) -> tuple[bool, ...]:
    """Which hypotheses Holm's procedure rejects at family-wise level `alpha`."""
    return tuple(p <= alpha for p in holm_adjusted(p_values))


def sequential_holm(
    statistics: Mapping[str, float],
    fractions: Sequence[float],
    alpha: float,
    spending: Spending = "obrien_fleming",
) -> dict[str, bool]:
    """Holm at one look of group-sequential tests (Maurer & Bretz 2013, equal weights).

    Gates sorted by z, largest first; the i-th (0-based) of m is rejected when its z reaches
    this look's boundary of the design at level alpha / (m - i); the first that does not stops
    the step-down. Every gate shares the looks' information fractions.
    """
    m = len(statistics)
    rejected = dict.fromkeys(statistics, False)
    for rank, name in enumerate(sorted(statistics, key=lambda g: -statistics[g])):
        bound = spending_boundaries(fractions, alpha / (m - rank), spending)[-1]
        if statistics[name] < bound:
            break
        rejected[name] = True
    return rejected


# --- tail latency --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantileComparison:
    """Candidate's q-quantile against (1 + margin) times the baseline's, with order-statistic
    bounds at confidence 1 - alpha/2 each (so 1 - alpha jointly, by Bonferroni)."""

    quantile: float
    margin: float
    alpha: float
    candidate: float  # sample quantiles
    baseline: float
    candidate_bounds: tuple[float | None, float | None]  # (lower, upper); None: too few samples
    baseline_bounds: tuple[float | None, float | None]
    outcome: QuantileOutcome
    reason: str


def quantile_ratio_test(
    candidate: Sequence[float],
    baseline: Sequence[float],
    quantile: float = 0.95,
    margin: float = 0.10,
    alpha: float = 0.05,
) -> QuantileComparison:
    """Non-inferiority of a tail quantile: pass when Q_c <= (1 + margin) Q_b is shown.

    pass: upper bound of Q_c <= (1 + margin) * lower bound of Q_b; fail: lower bound of Q_c >
    (1 + margin) * upper bound of Q_b. The bounds are distribution-free order statistics
    (binomial coverage), so P(pass | Q_c > (1 + margin) Q_b) <= alpha for i.i.d. continuous
    samples at any sample size (conservative: Bonferroni and discreteness).
    """
    _check_unit("quantile", quantile)
    _check_unit("alpha", alpha)
    if margin < 0:
        raise ValueError(f"margin cannot be negative, got {margin}")
    import numpy as np

    c, b = np.sort(np.asarray(candidate, float)), np.sort(np.asarray(baseline, float))
    if c.size == 0 or b.size == 0:
        raise ValueError("need at least one sample in each arm")
    if not (np.isfinite(c).all() and np.isfinite(b).all()):
        raise ValueError("latencies must be finite numbers")
    c_low, c_high = _order_statistic_bounds(c, quantile, alpha / 2)
    b_low, b_high = _order_statistic_bounds(b, quantile, alpha / 2)
    scale = 1 + margin
    outcome: QuantileOutcome
    if c_high is not None and b_low is not None and c_high <= scale * b_low:
        outcome, reason = "pass", f"p{quantile * 100:g} within (1 + margin) of the baseline's"
    elif c_low is not None and b_high is not None and c_low > scale * b_high:
        outcome, reason = "fail", f"p{quantile * 100:g} above (1 + margin) of the baseline's"
    else:
        outcome, reason = "inconclusive", "the quantiles' bounds overlap the margin"
    return QuantileComparison(
        quantile=quantile,
        margin=margin,
        alpha=alpha,
        candidate=float(np.quantile(c, quantile)),
        baseline=float(np.quantile(b, quantile)),
        candidate_bounds=(c_low, c_high),
        baseline_bounds=(b_low, b_high),
        outcome=outcome,
        reason=reason,
    )


def _order_statistic_bounds(
    ordered: Sequence[float], quantile: float, level: float
) -> tuple[float | None, float | None]:
    """One-sided (1 - level) lower and upper bounds of a quantile from sorted samples.

    Upper: X_(u), u = F^-1(1 - level) + 1 of Binomial(n, q), since P(X_(u) >= Q) =
    P(Bin <= u - 1). Lower: X_(l), l = F^-1(level), since P(X_(l) <= Q) = P(Bin >= l).
    """
    from scipy.stats import binom

    n = len(ordered)
    upper_rank = int(binom.ppf(1 - level, n, quantile)) + 1
    lower_rank = int(binom.ppf(level, n, quantile))
    upper = float(ordered[upper_rank - 1]) if upper_rank <= n else None
    lower = float(ordered[lower_rank - 1]) if lower_rank >= 1 else None
    return lower, upper


# --- checks --------------------------------------------------------------------------------------


def _check_unit(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def _check_fractions(fractions: Sequence[float]) -> None:
    if not fractions:
        raise ValueError("at least one look")
    if any(not t > 0 or not math.isfinite(t) for t in fractions):
        raise ValueError("information fractions must be positive and finite")
    if any(later < earlier for earlier, later in itertools.pairwise(fractions)):
        raise ValueError("information fractions cannot decrease")
