"""The production monitor's pass (retrain on decay, docs/retraining.md): for every model whose
policy has a `monitor:` section, on the timer, at most once per `monitor.every`.

For each model: load the aggregate once; skip it while nothing is in production or a change is
under way (a data window, a training job, a promotion: its candidate is judged by the gates);
read the champion's own offline metrics (`MetricsReader.offline`) and its deployment's live
counts over [now - window, now] (`MetricsReader.live`, one arm: the champion's deployment);
let the pure rules judge them (`retrain.monitor.evaluate`); then save the decision through
the retrain rules (`MonitorEvaluated`, `retrain.decide`): its record and cooldown stamp in the
same conditional write as the retrain it starts, whose submit goes out through the outbox.
Timer passes that overlap, or a pass repeated after a crash, find the evaluation done or the
cooldown running in the state they write to, and change nothing.

An Azure ML model-monitoring alert (`signal`) is mapped to the same command: it triggers as
the outside monitor judged, within the same cooldown.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.effects import SubmitTrainingJob
from domain.metrics import ArmStats
from domain.policy import ModelPolicy, MonitorSettings
from orchestrator import telemetry
from orchestrator.aggregate import ModelAggregate
from orchestrator.handlers import MessageHandlers, Outcome
from orchestrator.messages import Envelope
from orchestrator.ports import ArmWindow, Ports
from retrain import decide as retrain_rules
from retrain.commands import MonitorEvaluated
from retrain.monitor import MonitorDecision, evaluate, is_due, live_window

log = logging.getLogger(__name__)

MESSAGE_TYPE = "MonitorEvaluated"  # the audit's cause type; never on a queue


@dataclass
class MonitorReport:
    evaluated: dict[str, str] = field(default_factory=dict)  # model -> verdict
    triggered: list[dict[str, Any]] = field(default_factory=list)  # model, run_id, reason
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why not evaluated
    failed: list[dict[str, str]] = field(default_factory=list)


class Monitor:
    def __init__(self, ports: Ports, handlers: MessageHandlers) -> None:
        self.ports = ports
        self.handlers = handlers

    def run(self) -> MonitorReport:
        """One pass over every monitored model; one model's failure never stops it."""
        report = MonitorReport()
        for model in sorted(self.ports.policies):
            policy = self.ports.policies[model]
            if policy.monitor is None:
                continue
            try:
                self._check(policy, policy.monitor, report)
            except Exception as exc:
                log.exception("monitor: %s failed", model)
                report.failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
        return report

    def signal(self, model: str, decision: MonitorDecision) -> Outcome:
        """An outside monitor's decay signal for `model` (already parsed strictly): decided
        as the timer's decision is, within the same cooldown."""
        policy = self.ports.policies[model]
        loaded = self.ports.store.load(model)
        champion = loaded[0].promotion.champion
        decision = decision.model_copy(
            update={"champion_version": champion.version if champion else None}
        )
        return self._decide(policy, decision, loaded, self.ports.clock())

    # ------------------------------------------------------------------ one model

    def _check(self, policy: ModelPolicy, settings: MonitorSettings, report: MonitorReport) -> None:
        model = policy.model
        now = self.ports.clock()
        loaded = self.ports.store.load(model)
        aggregate = loaded[0]
        record = aggregate.retrain.monitor
        if not is_due(record.evaluated_at if record else None, settings, now):
            report.skipped[model] = "evaluated less than monitor.every ago"
            return
        champion = aggregate.promotion.champion
        if champion is None:
            report.skipped[model] = "nothing in production"
            return
        busy = _busy(aggregate)
        if busy is not None:
            # Nothing read, nothing written: the change under way is judged by its own gates.
            report.skipped[model] = busy
            return
        window = live_window(settings, champion.since, now)
        offline = (
            self._offline(model, champion.version) if settings.accuracy_drop is not None else {}
        )
        live = self._live(model, champion.deployment, window)
        decision = evaluate(
            settings,
            now=now,
            champion_version=champion.version,
            window=window,
            offline=offline,
            live=live,
            last_triggered_at=record.triggered_at if record else None,
        )
        telemetry.count("monitor.evaluations", model=model, verdict=decision.verdict)
        outcome = self._decide(policy, decision, loaded, now)
        saved = self.ports.store.load(model)[0].retrain.monitor
        verdict = saved.verdict if saved is not None else decision.verdict
        report.evaluated[model] = verdict
        log.info("monitor: %s v%s: %s: %s", model, champion.version, verdict, decision.reason)
        if outcome.status == "applied" and outcome.effects and verdict == "decayed" and saved:
            report.triggered.append(
                {"model": model, "run_id": saved.triggered_run, "reason": decision.reason}
            )
        elif outcome.status != "applied":  # another pass was first, or nothing to train on
            report.skipped[model] = outcome.reason or "ignored"

    def _decide(
        self,
        policy: ModelPolicy,
        decision: MonitorDecision,
        loaded: tuple[ModelAggregate, str | None],
        now: datetime,
    ) -> Outcome:
        model = policy.model
        command = MonitorEvaluated(decision=decision)
        if retrain_rules.observation_needed(loaded[0].retrain, command):
            command = command.model_copy(update={"pending": self.ports.ledger.pending(model)})
        envelope = Envelope.new(
            MESSAGE_TYPE,
            model,
            command,
            message_id=_message_id(model, decision.source, now),
            time=now,
        )
        return self.handlers.decide_internal(envelope, command, policy, loaded)

    def _offline(self, model: str, version: str) -> dict[str, float] | None:
        """The champion's own offline metrics (its training run's). None: unreadable."""
        try:
            return dict(self.ports.metrics.offline(model, version, None).candidate)
        except Exception as exc:
            log.warning(
                "monitor: cannot read the offline metrics of %s v%s: %s", model, version, exc
            )
            return None

    def _live(
        self, model: str, deployment: str, window: tuple[datetime, datetime]
    ) -> ArmStats | None:
        """The champion deployment's counts over the window. None: unreadable. No request at
        all reads as zero counts (insufficient data), not as unreadable."""
        start, end = window
        try:
            live = self.ports.metrics.live(
                model,
                # One evaluation record per model and day (the canary's MLflow run, by id).
                f"{model}-monitor-{end:%Y%m%d}",
                0,
                [ArmWindow(deployment=deployment, window_start=start, window_end=end)],
            )
        except Exception as exc:
            log.warning("monitor: cannot read the live metrics of %s: %s", model, exc)
            return None
        return live.arms.get(deployment) or ArmStats(deployment=deployment)


def _busy(aggregate: ModelAggregate) -> str | None:
    """Why the model is changing already, else None."""
    retrain = aggregate.retrain
    if retrain.current_job is not None:
        return f"training job {retrain.current_job.run_id} is running"
    if any(isinstance(item.effect, SubmitTrainingJob) for item in aggregate.outbox):
        return "a training job is being submitted"
    if retrain.window is not None or retrain.follow_up_pending:
        return "new data is waiting for its training job"
    active = aggregate.promotion.active
    if active is not None:
        return f"promotion {active.id} is {active.status}"
    last = retrain.runs[-1] if retrain.runs else None
    if (
        last is not None
        and last.registered_version is not None
        and aggregate.promotion.knows_version(last.registered_version) is None
    ):
        # Its StartPromotion is on the bus (sent, not yet handled): that candidate comes first.
        return f"v{last.registered_version} of run {last.run_id} is on its way to a promotion"
    return None


def _message_id(model: str, source: str, now: datetime) -> str:
    """Within the envelope's 128 characters whatever the model's and the source's length."""
    digest = hashlib.sha256(f"{model}\n{source}".encode()).hexdigest()[:24]
    return f"monitor:{now:%Y%m%dT%H%M%S%f}:{digest}"
