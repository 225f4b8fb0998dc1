"""Retrain on decay: the pure decision of the production monitor (docs/retraining.md, decay).

Given the policy's `monitor:` settings, the champion, its own offline metrics, its live counts
over the rolling window and when the monitor last started a retrain, `evaluate` says whether
the champion has decayed and a retrain should start. No I/O, no clock: the service layer
(orchestrator/monitor.py) reads the inputs and the timer calls it.

A decision, not a comparison of noisy numbers. Each configured check is a one-sided exact
binomial test of the live window:

- accuracy: H0 "live accuracy >= offline - accuracy_drop" against H1 "below it";
  p = P(X <= correct | n = labeled, p0 = offline - accuracy_drop);
- error rate: H0 "error rate <= max_error_rate" against H1 "above it";
  p = P(X >= errors | n = requests, p0 = max_error_rate).

A check breaches when p < alpha / (number of checks) (Bonferroni), so a healthy champion
starts a retrain in a given evaluation with probability at most `alpha`. A check with fewer
than `min_samples` (labeled requests, or requests) is "insufficient_data" and never breaches;
a champion whose offline metric is missing cannot be judged on accuracy ("no_baseline").
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from domain.metrics import ArmStats
from domain.policy import MonitorSettings

Verdict = Literal[
    "decayed",  # a check breached: a retrain starts
    "healthy",  # every check with enough samples is within its threshold
    "insufficient_data",  # no check had enough samples: never a trigger
    "cooling_down",  # decayed, but the last decay retrain is within the cooldown
    "awaiting_data",  # decayed, but this champion's decay retrain already ran on the same data
    "busy",  # a training job or a promotion is under way: its candidate will be judged
    "no_champion",  # nothing in production to watch
    "unreadable",  # the live or offline metrics could not be read: tried again next time
]
CheckOutcome = Literal["breached", "within", "insufficient_data", "no_baseline"]


class MonitorCheck(BaseModel):
    """One check's evidence: what was seen, against what, and the test's p-value."""

    model_config = ConfigDict(frozen=True)

    metric: Literal["accuracy", "error_rate"]
    outcome: CheckOutcome
    samples: int  # labeled requests (accuracy) or requests (error rate)
    events: int  # correct predictions, or errors
    observed: float | None = None
    threshold: float | None = None  # offline - accuracy_drop, or max_error_rate
    offline: float | None = None  # the champion's offline metric (accuracy)
    p_value: float | None = None
    alpha: float | None = None  # this check's share of the policy's alpha


class MonitorDecision(BaseModel):
    """What one evaluation found. `trigger`: start a retrain now."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    trigger: bool = False
    reason: str
    champion_version: str | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    checks: tuple[MonitorCheck, ...] = ()
    cooldown_until: AwareDatetime | None = None
    source: str = "monitor"  # "monitor" (the timer), or the signal's source (an Azure ML alert)

    def evidence(self) -> dict[str, object]:
        """The decision as the audit records it."""
        return self.model_dump(mode="json", exclude_none=True)


def is_due(last_evaluated_at: datetime | None, settings: MonitorSettings, now: datetime) -> bool:
    """Whether the monitor evaluates the model on this pass (at most once per `every`)."""
    return last_evaluated_at is None or now - last_evaluated_at >= settings.every


def live_window(
    settings: MonitorSettings, champion_since: datetime, now: datetime
) -> tuple[datetime, datetime]:
    """[now - window, now], never reaching back before the champion took production: the
    requests of the model it replaced say nothing about it."""
    return max(now - settings.window, champion_since), now


def cooldown_until(
    last_triggered_at: datetime | None, settings: MonitorSettings
) -> datetime | None:
    return None if last_triggered_at is None else last_triggered_at + settings.cooldown


def evaluate(
    settings: MonitorSettings,
    *,
    now: datetime,
    champion_version: str | None,
    window: tuple[datetime, datetime] | None = None,
    offline: dict[str, float] | None = None,
    live: ArmStats | None = None,
    last_triggered_at: datetime | None = None,
    busy: str | None = None,
) -> MonitorDecision:
    """The monitor's decision for one model. `offline` / `live` None: they could not be read
    (a reason to try again, never a trigger). `busy`: why the model is changing already."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    start, end = window if window is not None else (None, None)
    common = {"champion_version": champion_version, "window_start": start, "window_end": end}
    if champion_version is None:
        return MonitorDecision(verdict="no_champion", reason="nothing in production", **common)
    if busy is not None:
        return MonitorDecision(verdict="busy", reason=busy, **common)
    if live is None or (settings.accuracy_drop is not None and offline is None):
        what = "live" if live is None else "offline"
        return MonitorDecision(
            verdict="unreadable", reason=f"the {what} metrics could not be read", **common
        )
    checks = _checks(settings, offline or {}, live)
    breached = [check for check in checks if check.outcome == "breached"]
    judged = [check for check in checks if check.outcome in ("breached", "within")]
    if breached:
        reason = "; ".join(_describe(check) for check in breached)
        until = cooldown_until(last_triggered_at, settings)
        if until is not None and now < until:
            return MonitorDecision(
                verdict="cooling_down",
                reason=f"{reason} (a decay retrain started at {last_triggered_at:%Y-%m-%d %H:%M}"
                f"; next one allowed after {until:%Y-%m-%d %H:%M})",
                checks=checks,
                cooldown_until=until,
                **common,
            )
        return MonitorDecision(
            verdict="decayed", trigger=True, reason=reason, checks=checks, **common
        )
    if not judged:
        reason = "; ".join(_describe(check) for check in checks)
        return MonitorDecision(verdict="insufficient_data", reason=reason, checks=checks, **common)
    reason = "; ".join(_describe(check) for check in checks)
    return MonitorDecision(verdict="healthy", reason=reason, checks=checks, **common)


def _checks(
    settings: MonitorSettings, offline: dict[str, float], live: ArmStats
) -> tuple[MonitorCheck, ...]:
    planned = (settings.accuracy_drop is not None) + (settings.max_error_rate is not None)
    alpha = settings.alpha / planned  # Bonferroni: the evaluation's false alarms <= alpha
    checks: list[MonitorCheck] = []
    if settings.accuracy_drop is not None:
        checks.append(_accuracy_check(settings, offline, live, alpha))
    if settings.max_error_rate is not None:
        checks.append(_error_rate_check(settings, settings.max_error_rate, live, alpha))
    return tuple(checks)


def _accuracy_check(
    settings: MonitorSettings, offline: dict[str, float], live: ArmStats, alpha: float
) -> MonitorCheck:
    from scipy.stats import binom  # lazily: the monitor's module loads without scipy

    assert settings.accuracy_drop is not None
    n, k = live.labeled, live.correct
    check = MonitorCheck(
        metric="accuracy",
        outcome="no_baseline",
        samples=n,
        events=k,
        observed=k / n if n else None,
        alpha=alpha,
    )
    reference = offline.get(settings.metric)
    if reference is None or not 0.0 <= reference <= 1.0:
        return check
    threshold = reference - settings.accuracy_drop
    check = check.model_copy(update={"offline": reference, "threshold": threshold})
    if n < settings.min_samples:
        return check.model_copy(update={"outcome": "insufficient_data"})
    if threshold <= 0.0:  # no accuracy can be below it
        return check.model_copy(update={"outcome": "within", "p_value": 1.0})
    p_value = float(binom.cdf(k, n, threshold))  # P(X <= k) at the threshold
    outcome = "breached" if p_value < alpha else "within"
    return check.model_copy(update={"outcome": outcome, "p_value": p_value})


def _error_rate_check(
    settings: MonitorSettings, limit: float, live: ArmStats, alpha: float
) -> MonitorCheck:
    from scipy.stats import binom

    n, k = live.requests, live.errors
    check = MonitorCheck(
        metric="error_rate",
        outcome="insufficient_data",
        samples=n,
        events=k,
        observed=k / n if n else None,
        threshold=limit,
        alpha=alpha,
    )
    if n < settings.min_samples:
        return check
    p_value = float(binom.sf(k - 1, n, limit))  # P(X >= k) at the limit
    outcome = "breached" if p_value < alpha else "within"
    return check.model_copy(update={"outcome": outcome, "p_value": p_value})


def _describe(check: MonitorCheck) -> str:
    if check.outcome == "no_baseline":
        return "accuracy: the champion has no offline accuracy to compare with"
    observed = "n/a" if check.observed is None else f"{check.observed:.4f}"
    if check.outcome == "insufficient_data":
        return f"{check.metric}: {check.samples} samples, fewer than min_samples"
    relation = {"accuracy": "below", "error_rate": "above"}[check.metric]
    verdict = relation if check.outcome == "breached" else f"not shown {relation}"
    return (
        f"{check.metric} {observed} {verdict} {check.threshold:.4f} "
        f"(n={check.samples}, p={check.p_value:.3g}, alpha={check.alpha:.3g})"
    )


def signal_decision(
    *, source: str, signal: str, detail: str, champion_version: str | None
) -> MonitorDecision:
    """An outside monitor's alert (Azure ML model monitoring) as a decay decision: the
    outside service ran its own test, so it triggers as it is; the cooldown still applies
    (in `retrain.decide`)."""
    return MonitorDecision(
        verdict="decayed",
        trigger=True,
        reason=f"{source}: {signal}: {detail}",
        champion_version=champion_version,
        source=source,
    )
