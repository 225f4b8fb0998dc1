"""Builders shared by the promotion tests: policies, metric snapshots and a small driver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from domain.decision import Decision
from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics
from domain.naming import deployment_name
from domain.policy import ModelPolicy
from promotion.commands import GateCheck, PromotionCommand, StartPromotion
from promotion.machine import decide, observation_needed
from promotion.state import Promotion, PromotionState, PromotionStatus, ServingModel

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MODEL = "churn"
APPROVER = "alice@example.com"

Quality = Literal["pass", "fail", "few", "none"]


def make_policy(**overrides: Any) -> ModelPolicy:
    """A test policy; `overrides` replace whole sections (as dicts) or top-level fields."""
    document: dict[str, Any] = {
        "model": MODEL,
        "endpoint": "churn-endpoint",
        "data": {"container": "churn-data"},
        "staging": {
            "gates": [
                {"kind": "threshold", "metric": "auc", "value": 0.8},
                {"kind": "champion", "metric": "auc", "margin": 0.01},
            ],
            "max_attempts": 2,
        },
        "approval": {"required": False, "approvers": [APPROVER]},
        "canary": {
            "steps": [10, 50],
            "bake": "30m",
            "min_samples_per_arm": 200,
            "max_extensions": 1,
            "gates": [
                {"metric": "error_rate", "margin": 0.02},
                {"metric": "accuracy", "margin": 0.02},
            ],
        },
        "production_bake": "1h",
        # The bake without a holdback (compared with the last canary window); the holdback's
        # bake has its own tests (test_holdback_bake.py).
        "production_holdback": 0,
    }
    document.update(overrides)
    return ModelPolicy.model_validate(document)


def dep(version: str) -> str:
    return deployment_name(MODEL, version)


def serving(version: str) -> ServingModel:
    return ServingModel(version=version, deployment=dep(version), since=T0)


def with_champion(version: str = "1") -> PromotionState:
    return PromotionState(champion=serving(version), last_known_good=serving(version))


def offline(quality: Quality = "pass", champion: bool = True) -> OfflineMetrics | None:
    if quality == "none":
        return None
    candidate = {"pass": {"auc": 0.90}, "fail": {"auc": 0.60}, "few": {}}[quality]
    return OfflineMetrics(candidate=candidate, champion={"auc": 0.85} if champion else None)


def arm(deployment: str, quality: Quality = "pass") -> ArmStats:
    if quality == "few":
        return ArmStats(deployment=deployment, requests=50, errors=0, labeled=20, correct=18)
    errors = 500 if quality == "fail" else 50
    return ArmStats(deployment=deployment, requests=5000, errors=errors, labeled=2000, correct=1800)


def live(canary: str, production: str | None, quality: Quality = "pass") -> LiveMetrics | None:
    """The canary arm has `quality`; the production arm is always healthy."""
    if quality == "none":
        return None
    arms = {canary: arm(canary, quality)}
    if production is not None:
        arms[production] = arm(production, "pass")
    return LiveMetrics(window_start=T0, window_end=T0 + timedelta(hours=1), arms=arms)


def observe(
    state: PromotionState,
    command: PromotionCommand,
    policy: ModelPolicy,
    now: datetime,
    quality: Quality,
) -> PromotionCommand:
    """Fill the command's observation the way the service layer would."""
    request = observation_needed(state, command, policy, now)
    if request is None:
        return command
    if request.kind == "offline":
        return command.model_copy(
            update={"offline": offline(quality, champion=request.champion_version is not None)}
        )
    canary, *rest = [window.deployment for window in request.arms]
    return command.model_copy(update={"live": live(canary, rest[0] if rest else None, quality)})


class Harness:
    """Drives `decide` with a clock that moves one minute per command."""

    def __init__(self, policy: ModelPolicy | None = None, state: PromotionState | None = None):
        self.policy = policy or make_policy()
        self.state = state if state is not None else PromotionState()
        self.now = T0
        self.last: Decision[PromotionState] | None = None

    @property
    def active(self) -> Promotion:
        assert self.state.active is not None, "no active promotion"
        return self.state.active

    @property
    def status(self) -> PromotionStatus:
        """The active promotion's status, or the outcome of the last finished one."""
        if self.state.active is not None:
            return self.state.active.status
        return self.state.history[-1].outcome

    def send(self, command: PromotionCommand, advance: timedelta = timedelta(minutes=1)):
        self.now += advance
        self.last = decide(self.state, command, self.policy, self.now)
        self.state = self.last.state
        return self.last

    def start(self, version: str = "2", quality: Quality = "pass"):
        command = StartPromotion(candidate_version=version)
        return self.send(observe(self.state, command, self.policy, self.now, quality))

    def check(self, quality: Quality = "pass") -> GateCheck:
        """The pending gate check, with observations of `quality`."""
        active = self.active
        assert active.pending_check_id is not None
        command = GateCheck(
            promotion_id=active.id, step=active.step, check_id=active.pending_check_id
        )
        due = active.check_due_at or self.now
        self.now = max(self.now, due)
        return observe(self.state, command, self.policy, self.now, quality)  # type: ignore[return-value]
