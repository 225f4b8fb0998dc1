"""What an active promotion waits for, in words and numbers: for the status view. Pure.

A canary step under the sequential design: the samples per arm its look waits for. A first
model's production bake, which judges only the candidate's own traffic (no champion to compare
with, no known-good model to roll back to): how many requests it has, how many it needs, and
what `first_model.bake_without_traffic` does when the next check still finds too few.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from domain.policy import ModelPolicy
from promotion.machine import is_first_model_bake
from promotion.state import Promotion


def duration_text(value: timedelta) -> str:
    """30m, 1h, 1h30m, 45s: the policy's own notation (whole seconds)."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    minutes, seconds = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    units = ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s"))
    return "".join(f"{amount}{unit}" for amount, unit in units if amount)


class FirstModelBake(BaseModel):
    """A first model's production bake, as the status shows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment: str
    bake_without_traffic: Literal["hold", "pass", "rollback"]
    needed: int  # requests on the candidate before the bake can pass on its own
    requests: int | None  # at the last check short of them; None: not checked, or unreadable
    errors: int | None
    as_of: AwareDatetime | None  # that check
    waiting_since: AwareDatetime | None
    checks_short: int  # checks that found too few
    next_check_at: AwareDatetime | None
    extensions_left: int | None  # bake_without_traffic=rollback only
    summary: str  # what it has and needs, in one line
    when_time_runs_out: str  # what the next check does if it still finds too few


def first_model_bake(promotion: Promotion, policy: ModelPolicy) -> FirstModelBake | None:
    """A first model's bake: what it has, what it needs, what the next check does; None for
    any other promotion (or status)."""
    if not is_first_model_bake(promotion):
        return None
    wait = promotion.traffic_wait
    needed = policy.canary.min_samples_per_arm
    mode = policy.first_model.bake_without_traffic
    every = duration_text(policy.canary.bake)
    deployment = promotion.candidate_deployment
    if wait is None:
        summary = (
            f"first model: its bake needs {needed} requests on {deployment} "
            "(nothing to compare it with); not checked yet"
        )
    elif wait.requests is None:
        summary = (
            f"waiting for live traffic: the metrics of {deployment} could not be read "
            f"({wait.checks} check(s) since {wait.since:%Y-%m-%d %H:%M} UTC); needs {needed} "
            "requests"
        )
    else:
        summary = (
            f"waiting for live traffic: {wait.requests} of {needed} requests on {deployment}, "
            f"{wait.errors} error(s) (as of {wait.checked_at:%Y-%m-%d %H:%M} UTC; waiting since "
            f"{wait.since:%Y-%m-%d %H:%M} UTC)"
        )
    extensions_left: int | None = None
    if mode == "hold":
        outcome = (
            f"still short at the next check: it keeps waiting, checked again every {every} "
            "with no end; promote-now completes it, rollback removes it (nothing serves then)"
        )
    elif mode == "pass":
        if wait is not None and wait.errors:
            outcome = (
                f"it served {wait.errors} error(s), so it completes only once it has {needed} "
                f"requests (checked every {every}), or a person decides: promote-now completes "
                "it, rollback removes it"
            )
        else:
            outcome = (
                "still short at the next check: it completes if the candidate served no "
                f"errors (metrics unreadable or errors: it keeps waiting, checked every {every})"
            )
    else:
        extensions_left = max(policy.canary.max_extensions - promotion.inconclusive, 0)
        outcome = (
            f"still short at the next check: extended by {every} ({extensions_left} of "
            f"{policy.canary.max_extensions} extension(s) left), then rolled back: nothing "
            "serves then"
            if extensions_left
            else "still short at the next check: rolled back, nothing serves then"
        )
    return FirstModelBake(
        deployment=deployment,
        bake_without_traffic=mode,
        needed=needed,
        requests=wait.requests if wait else None,
        errors=wait.errors if wait else None,
        as_of=wait.checked_at if wait else None,
        waiting_since=wait.since if wait else None,
        checks_short=wait.checks if wait else 0,
        next_check_at=promotion.check_due_at,
        extensions_left=extensions_left,
        summary=summary,
        when_time_runs_out=outcome,
    )


class GateSamples(BaseModel):
    """One rate gate's samples: what the current step's look waits for, and the whole design."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    unit: str  # "labeled requests" (accuracy) or "requests" (error rate)
    required_this_step: dict[str, int]  # cumulative per arm (canary, production)
    required_by_step: list[dict[str, int]]  # cumulative per arm at the end of each step
    fixed_horizon: dict[str, int]  # the one-look test of the same power, for comparison
    boundaries: list[float]  # z at the planned looks
    passed: bool  # decided at an earlier look


class CanarySamples(BaseModel):
    """A canary step under the sequential design, as the status shows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    look: int  # the look this step's check takes (1-based)
    power: float
    spending: str
    gates: list[GateSamples]
    deadline: AwareDatetime | None  # the step stops waiting for samples then
    when_time_runs_out: str
    summary: str


def canary_samples(promotion: Promotion, policy: ModelPolicy) -> CanarySamples | None:
    """The samples a canary step waits for (computed from the policy: margin, alpha, power,
    the planning rate and the steps); None outside the canary. Plans the design (scipy) on
    first use for these policy numbers."""
    if promotion.status != "canary" or promotion.step_index < 0:
        return None
    from promotion.canary_design import canary_plan

    canary = policy.canary.model_copy(update={"steps": list(promotion.canary_steps)})
    plan = canary_plan(canary)
    passed = {
        metric
        for look in promotion.looks
        for metric, gate in look.gates.items()
        if gate.outcome == "pass"
    }
    index = min(promotion.step_index, len(canary.steps) - 1)
    gates = [
        GateSamples(
            metric=metric,
            unit=item.unit,
            required_this_step={
                "canary": item.targets[index].candidate,
                "production": item.targets[index].production,
            },
            required_by_step=[
                {"canary": t.candidate, "production": t.production} for t in item.targets
            ],
            fixed_horizon={
                "canary": item.fixed_horizon.candidate,
                "production": item.fixed_horizon.production,
            },
            boundaries=[round(b, 4) for b in item.design.boundaries],
            passed=metric in passed,
        )
        for metric, item in plan.items()
    ]
    mode = canary.on_exhausted
    outcome = {
        "pause": "paused: a person decides (resume waits another max_step_duration)",
        "rollback": "rolled back",
        "promote": "promoted only with every metric read and the design's full samples; "
        "otherwise paused",
    }[mode]
    waiting = [
        f"{g.metric}: {g.required_this_step['canary']:,} canary / "
        f"{g.required_this_step['production']:,} production {g.unit}"
        for g in gates
        if not g.passed
    ]
    floor = f"{canary.min_samples_per_arm} requests per arm in the step's window"
    if waiting:
        summary = f"{promotion.step} waits for {'; '.join(waiting)} (cumulative since canary-1)"
    elif gates:
        summary = f"{promotion.step}: every rate gate has passed; its check needs {floor}"
    else:
        summary = f"{promotion.step}: no rate gate to plan samples for; its check needs {floor}"
    return CanarySamples(
        step=promotion.step,
        look=len(promotion.looks) + 1,
        power=canary.power,
        spending=canary.spending,
        gates=gates,
        deadline=promotion.step_deadline,
        when_time_runs_out=f"undecided when the step's time runs out: {outcome}",
        summary=summary,
    )
