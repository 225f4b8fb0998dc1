"""The service layer: the only code that touches adapters.

Every entry point follows one shape: load the model's aggregate, drop a message already
seen, read any observation the domain asks for, `decide`, save the new state with its
effects and audit entries in the outbox (one conditional write), then dispatch the outbox.
A crash anywhere is repaired by redelivery (the duplicate still dispatches what is pending)
or by the timer's outbox sweep.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.endpoint import DeploymentBusy, EndpointError, OnlineEndpoint
from orchestrator.aggregate import ModelAggregate, OutboxItem
from orchestrator.clock import Clock, utc_now
from orchestrator.decision import Decision
from orchestrator.effects import (
    CancelTrainingJob,
    DeleteDeployment,
    DeployModel,
    Effect,
    PublishEvent,
    RequestApproval,
    SendMessage,
    SetTraffic,
    SubmitTrainingJob,
    TagModelVersion,
)
from orchestrator.messages import Envelope, InvalidMessage
from orchestrator.metrics import LiveMetrics, OfflineMetrics
from orchestrator.policy import ModelPolicy
from orchestrator.ports import (
    ArmWindow,
    AuditLog,
    AuditRecord,
    EventPublisher,
    MessageBus,
    MetricsReader,
    ModelRegistry,
    StateStore,
)
from pipelines import retrain_policy
from pipelines.backend import TrainingBackend, TrainingBackendError, training_request
from promotion import commands as promotion_commands
from promotion import machine as promotion_machine
from promotion.state import PromotionState

log = logging.getLogger(__name__)

# Effects that stop being retried after a while (see Orchestrator._execute_or_give_up).
_GIVE_UP_EFFECTS = (SubmitTrainingJob, DeployModel, CancelTrainingJob)

DEPLOYMENT_CHECK = "DeploymentCheck"


class DeploymentCheck(BaseModel):
    """Internal: poll a deployment that was started, until it is ready or failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    promotion_id: str
    deployment: str
    attempt: int = Field(default=1, ge=1)


Section = Literal["retrain", "promotion"]

_RETRAIN_TYPES = set(retrain_policy.COMMANDS)
_PROMOTION_TYPES = set(promotion_commands.COMMANDS)
MESSAGE_TYPES = _RETRAIN_TYPES | _PROMOTION_TYPES | {DEPLOYMENT_CHECK}


class UnknownModel(LookupError):
    pass


@dataclass
class Outcome:
    """What handling one message did, for logs, HTTP answers and tests."""

    status: Literal["applied", "ignored", "duplicate", "rescheduled"]
    model: str
    version: int
    reason: str | None = None
    effects: int = 0


@dataclass
class Ports:
    store: StateStore[ModelAggregate]
    audit: AuditLog
    bus: MessageBus
    training: TrainingBackend
    endpoints: Callable[[ModelPolicy], OnlineEndpoint]
    metrics: MetricsReader
    registry: ModelRegistry
    events: EventPublisher
    policies: Mapping[str, ModelPolicy]
    clock: Clock = utc_now
    deployment_poll: timedelta = timedelta(seconds=30)
    default_compute: str | None = None
    max_deployment_checks: int = 120
    # A training submit or a deployment that still fails transiently (after the SDK's own
    # retries) on this many dispatches, and this long after its first failure, fails its step
    # with the service's message (redeliveries come at once: the window keeps a short outage
    # from failing a step).
    max_effect_attempts: int = 5
    effect_retry_window: timedelta = timedelta(minutes=15)


@dataclass
class _Applied:
    decision: Decision[Any] | None = None
    aggregate: ModelAggregate | None = None
    duplicate: bool = False


@dataclass
class Orchestrator:
    ports: Ports
    _endpoint_cache: dict[str, OnlineEndpoint] = field(default_factory=dict)

    # ------------------------------------------------------------------ entry points

    def policy(self, model: str) -> ModelPolicy:
        try:
            return self.ports.policies[model]
        except KeyError:
            raise UnknownModel(f"no policy for model {model!r}") from None

    def handle(self, envelope: Envelope) -> Outcome:
        """Handle one command or event from a queue. Raises InvalidMessage for a message that
        can never be handled (dead-letter it); any other error is transient (retry)."""
        if envelope.type not in MESSAGE_TYPES:
            raise InvalidMessage(f"unknown message type {envelope.type!r}")
        try:
            policy = self.policy(envelope.model)
        except UnknownModel as exc:
            raise InvalidMessage(str(exc)) from exc
        if envelope.type == DEPLOYMENT_CHECK:
            return self._deployment_check(envelope, policy, envelope.payload_as(DeploymentCheck))
        if envelope.type == retrain_policy.JOB_CHECK:
            check = envelope.payload_as(retrain_policy.TrainingJobCheck)
            return self._training_job_check(envelope, policy, check)
        if envelope.type in _RETRAIN_TYPES:
            command = envelope.payload_as(retrain_policy.COMMANDS[envelope.type])
            return self._decide_retrain(envelope, policy, command)
        command = envelope.payload_as(promotion_commands.COMMANDS[envelope.type])
        return self._promotion(envelope, policy, command)

    def submit(self, envelope: Envelope) -> Outcome:
        """HTTP and triggers: handle now, translating 'never handleable' to InvalidMessage."""
        return self.handle(envelope)

    def dispatch(self, model: str, aggregate: ModelAggregate | None = None) -> int:
        """Run the effects and audit entries left in the model's outbox. Idempotent.

        `aggregate`: the state this process has just saved, to spare a read."""
        if aggregate is None:
            aggregate, _ = self.ports.store.load(model)
        if not aggregate.outbox and not aggregate.pending_audit:
            return 0
        policy = self.ports.policies.get(model)
        self.ports.audit.append(aggregate.pending_audit)
        flushed = {record.record_id for record in aggregate.pending_audit}
        done: list[str] = []
        try:
            for item in aggregate.outbox:
                if policy is None:
                    log.error("model %s has no policy: dropping effect %s", model, item.id)
                else:
                    try:
                        self._execute_or_give_up(aggregate, policy, item)
                    except DeploymentBusy as busy:
                        # Not a failure: the endpoint is still applying a traffic change (an
                        # Azure ML update takes minutes). The delete stays in the outbox for
                        # the timer's sweep; the effects after it do not depend on it.
                        log.info("%s: %s; the outbox sweep tries again", model, busy)
                        continue
                done.append(item.id)
        finally:
            self._forget_dispatched(model, set(done), flushed)
        return len(done)

    def _execute_or_give_up(
        self, aggregate: ModelAggregate, policy: ModelPolicy, item: OutboxItem
    ) -> None:
        """Run one effect. A transient failure is counted on the item and raised (the message
        is redelivered, the timer sweeps). A submit, a deployment or a cancel still failing
        after `max_effect_attempts` dispatches and `effect_retry_window` since its first
        failure gives up: the submit or deployment fails its step with the service's message.
        """
        try:
            self._execute(aggregate, policy, item)
        except (TrainingBackendError, EndpointError) as exc:
            effect = item.effect
            if isinstance(exc, DeploymentBusy) or not isinstance(effect, _GIVE_UP_EFFECTS):
                raise
            now = self.ports.clock()
            attempts = item.failed_attempts + 1
            first = item.first_failed_at or now
            if attempts < self.ports.max_effect_attempts or (
                now - first < self.ports.effect_retry_window
            ):
                self._count_failed_attempt(aggregate.model, item.id, attempts, first)
                raise
            waited = int((now - first).total_seconds())
            error = f"gave up after {attempts} attempts in {waited} s: {exc}"
            log.error("%s for %s: %s", effect.kind, aggregate.model, error)
            if isinstance(effect, SubmitTrainingJob):
                # The service may have created the job without our hearing of it: a cancel
                # goes into the outbox (kept, retried) before the run is failed.
                cancel = CancelTrainingJob(run_id=effect.run_id, reason=error)
                self._enqueue(aggregate.model, OutboxItem(id=f"{item.id}-cancel", effect=cancel))
                self._submit_failed(aggregate, effect, error)
            elif isinstance(effect, DeployModel):
                self._deploy_failed(aggregate, effect, error)
            # A cancel that never goes through is only logged: the run has already ended.

    def _enqueue(self, model: str, added: OutboxItem) -> None:
        """Add an effect to the model's outbox (once: its id is deterministic)."""

        def change(aggregate: ModelAggregate) -> ModelAggregate | None:
            if any(item.id == added.id for item in aggregate.outbox):
                return None
            return aggregate.model_copy(update={"outbox": [*aggregate.outbox, added]})

        self.ports.store.update(model, change)

    def _count_failed_attempt(
        self, model: str, item_id: str, attempts: int, first_failed_at: datetime
    ) -> None:
        counted = {"failed_attempts": attempts, "first_failed_at": first_failed_at}

        def change(aggregate: ModelAggregate) -> ModelAggregate | None:
            outbox = [
                item.model_copy(update=counted) if item.id == item_id else item
                for item in aggregate.outbox
            ]
            if outbox == aggregate.outbox:
                return None
            return aggregate.model_copy(update={"outbox": outbox})

        try:
            self.ports.store.update(model, change)
        except Exception:  # the count is best effort: the failure itself is what matters
            log.warning("could not count a failed attempt of %s for %s", item_id, model)

    def sweep(self) -> dict[str, Any]:
        """Timer: re-dispatch outboxes a crash left behind; report promotions not moving;
        check training jobs past their max_job_duration (so a lost check chain cannot keep a
        model from training for ever).

        One model whose effects keep failing (its outbox is retried on the next sweep) never
        stops the sweep for the others: it is reported under "failed"."""
        now = self.ports.clock()
        redispatched = 0
        stuck: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        overdue_jobs: list[str] = []
        for model in self.ports.store.list_keys():
            try:
                redispatched += self.dispatch(model)
            except Exception as exc:
                log.exception("outbox sweep: dispatching %s failed", model)
                failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
            try:
                aggregate, _ = self.ports.store.load(model)
            except Exception as exc:
                log.exception("outbox sweep: cannot read %s", model)
                if not failed or failed[-1]["model"] != model:
                    failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
                continue
            active = aggregate.promotion.active
            policy = self.ports.policies.get(model)
            if policy is None:
                continue
            overdue = retrain_policy.overdue_check(aggregate.retrain, policy, now)
            if overdue is not None:
                log.warning("training job of %s is past max_job_duration: checking it", model)
                self._send(model, overdue, aggregate.version)
                overdue_jobs.append(str(overdue.payload["run_id"]))
            if active is None:
                continue
            if now - active.updated_at > policy.max_time_in_state:
                stuck.append(
                    {
                        "model": model,
                        "promotion_id": active.id,
                        "status": str(active.status),
                        "since": active.updated_at.isoformat(),
                    }
                )
                log.warning(
                    "promotion %s of %s has been %s since %s",
                    active.id,
                    model,
                    active.status,
                    active.updated_at.isoformat(),
                )
        return {
            "redispatched": redispatched,
            "stuck": stuck,
            "failed": failed,
            "overdue_jobs": overdue_jobs,
        }

    # ------------------------------------------------------------------ commands

    def _promotion(self, envelope: Envelope, policy: ModelPolicy, command: BaseModel) -> Outcome:
        aggregate, _ = self.ports.store.load(envelope.model)
        if aggregate.has_seen(envelope.message_id):
            return self._duplicate(envelope, aggregate)
        # Metrics are observed here, never taken from a message: a sender cannot pass a gate.
        forged = {name: None for name in ("offline", "live") if name in type(command).model_fields}
        command = command.model_copy(update=forged)
        now = self.ports.clock()
        request = promotion_machine.observation_needed(
            aggregate.promotion,
            command,  # type: ignore[arg-type]
            policy,
            now,
        )
        if request is not None:
            command = self._observe(aggregate, request, command)
        return self._decide_promotion(envelope, policy, command)

    def _observe(
        self,
        aggregate: ModelAggregate,
        request: promotion_machine.ObservationRequest,
        command: BaseModel,
    ) -> BaseModel:
        """Read the metrics a gate will judge. A failure leaves them None: inconclusive."""
        model = aggregate.model
        try:
            if request.kind == "offline":
                assert request.candidate_version is not None
                offline: OfflineMetrics = self.ports.metrics.offline(
                    model, request.candidate_version, request.champion_version
                )
                return command.model_copy(update={"offline": offline})
            active = aggregate.promotion.active
            assert active is not None
            # The canary step's index; the production bake comes after the last step.
            step = active.step_index if active.step_index >= 0 else len(active.canary_steps)
            if active.status == "production_bake":
                step = len(active.canary_steps)
            arms = [ArmWindow.model_validate(arm.model_dump()) for arm in request.arms]
            live: LiveMetrics = self.ports.metrics.live(model, active.id, step, arms)
            return command.model_copy(update={"live": live})
        except Exception as exc:  # the gate judges "no data": inconclusive, never a pass
            log.warning("could not read %s metrics for %s: %s", request.kind, model, exc)
            return command.model_copy(update={request.kind: None})

    def _training_job_check(
        self, envelope: Envelope, policy: ModelPolicy, check: retrain_policy.TrainingJobCheck
    ) -> Outcome:
        aggregate, _ = self.ports.store.load(envelope.model)
        if aggregate.has_seen(envelope.message_id):
            return self._duplicate(envelope, aggregate)
        if not aggregate.retrain.is_current_job(check.run_id):
            # The run has ended (or never was): nothing to ask the backend, which may be down.
            # The policy records it as stale without reading the state.
            return self._decide_retrain(
                envelope,
                policy,
                retrain_policy.TrainingJobStatus(
                    run_id=check.run_id, state="running", attempt=check.attempt
                ),
            )
        if aggregate.outbox:
            # The submit may still sit in the outbox (its dispatch failed): send it first, or
            # the backend would rightly answer "no such job".
            self.dispatch(envelope.model)
        try:
            status = self.ports.training.status(check.run_id)
            state, error, version = status.state, status.error, status.registered_version
        except TrainingBackendError as exc:
            if exc.transient:
                raise
            state, error, version = "failed", str(exc), None
        observed = retrain_policy.TrainingJobStatus(
            run_id=check.run_id,
            state=state,
            error=error,
            registered_version=version,
            attempt=check.attempt,
        )
        return self._decide_retrain(envelope, policy, observed)

    def _deployment_check(
        self, envelope: Envelope, policy: ModelPolicy, check: DeploymentCheck
    ) -> Outcome:
        aggregate, _ = self.ports.store.load(envelope.model)
        if aggregate.has_seen(envelope.message_id):
            return self._duplicate(envelope, aggregate)
        active = aggregate.promotion.active
        if active is None or active.id != check.promotion_id:
            log.info("deployment check for %s: promotion has moved on", check.promotion_id)
            return Outcome("ignored", envelope.model, aggregate.version, "promotion has moved on")
        status = self._endpoint(policy).deployment_state(check.deployment)
        command: BaseModel
        if status.state == "succeeded":
            command = promotion_commands.DeploymentReady(
                promotion_id=check.promotion_id, deployment=check.deployment
            )
        elif (
            status.state in ("failed", "missing")
            or check.attempt >= self.ports.max_deployment_checks
        ):
            error = status.error or (
                f"deployment is {status.state}"
                if status.state != "creating"
                else f"not ready after {check.attempt} checks"
            )
            command = promotion_commands.DeploymentFailed(
                promotion_id=check.promotion_id, deployment=check.deployment, error=error
            )
        else:
            self._send(
                envelope.model,
                SendMessage(
                    message_type=DEPLOYMENT_CHECK,
                    message_id=deployment_check_id(
                        check.promotion_id, check.deployment, check.attempt + 1
                    ),
                    payload=DeploymentCheck(
                        promotion_id=check.promotion_id,
                        deployment=check.deployment,
                        attempt=check.attempt + 1,
                    ).model_dump(),
                    promotion_id=check.promotion_id,
                    not_before=self.ports.clock() + self.ports.deployment_poll,
                ),
                aggregate.version,
            )
            return Outcome("rescheduled", envelope.model, aggregate.version, status.state)
        return self._decide_promotion(envelope, policy, command)

    # ------------------------------------------------------------------ load, decide, save

    def _decide_promotion(
        self, envelope: Envelope, policy: ModelPolicy, command: BaseModel
    ) -> Outcome:
        return self._apply(
            envelope,
            policy,
            "promotion",
            lambda aggregate, now: promotion_machine.decide(
                aggregate.promotion,
                command,  # type: ignore[arg-type]
                policy,
                now,
            ),
        )

    def _decide_retrain(
        self, envelope: Envelope, policy: ModelPolicy, command: BaseModel
    ) -> Outcome:
        return self._apply(
            envelope,
            policy,
            "retrain",
            lambda aggregate, now: retrain_policy.decide(
                aggregate.retrain,
                command,  # type: ignore[arg-type]
                policy,
                now,
            ),
        )

    def _apply(
        self,
        envelope: Envelope,
        policy: ModelPolicy,
        section: Section,
        decide: Callable[[ModelAggregate, datetime], Decision[Any]],
    ) -> Outcome:
        now = self.ports.clock()
        applied = _Applied()

        def change(aggregate: ModelAggregate) -> ModelAggregate | None:
            applied.aggregate, applied.decision, applied.duplicate = aggregate, None, False
            if aggregate.has_seen(envelope.message_id):
                applied.duplicate = True
                return None
            decision = decide(aggregate, now)
            applied.decision = decision
            if decision.ignored and not decision.audit:
                return None
            version = aggregate.version + 1
            records = [
                _audit_record(aggregate.model, version, seq, now, entry, envelope)
                for seq, entry in enumerate(decision.audit)
            ]
            items = [
                OutboxItem(id=f"{version}-{index}", effect=effect, cause_id=envelope.message_id)
                for index, effect in enumerate(decision.effects)
            ]
            return aggregate.model_copy(
                update={
                    section: decision.state,
                    "outbox": [*aggregate.outbox, *items],
                    "pending_audit": [*aggregate.pending_audit, *records],
                    "seen_messages": aggregate.remember(envelope.message_id),
                }
            )

        aggregate, _ = self.ports.store.update(envelope.model, change)
        decision = applied.decision
        if applied.duplicate:
            return self._duplicate(envelope, aggregate)
        self.dispatch(envelope.model, aggregate)
        assert decision is not None
        if decision.ignored:
            log.info(
                "%s %s for %s changed nothing: %s",
                envelope.type,
                envelope.message_id,
                envelope.model,
                decision.ignored,
            )
        status: Literal["applied", "ignored"] = (
            "ignored" if decision.ignored and not decision.effects else "applied"
        )
        return Outcome(
            status, envelope.model, aggregate.version, decision.ignored, len(decision.effects)
        )

    def _duplicate(self, envelope: Envelope, aggregate: ModelAggregate) -> Outcome:
        log.info(
            "%s %s for %s: already handled", envelope.type, envelope.message_id, envelope.model
        )
        # A redelivery after a crash between save and dispatch finishes the dispatch.
        self.dispatch(envelope.model)
        return Outcome("duplicate", envelope.model, aggregate.version, "message already handled")

    def _forget_dispatched(self, model: str, done: set[str], flushed: set[str]) -> None:
        if not done and not flushed:
            return

        def change(aggregate: ModelAggregate) -> ModelAggregate | None:
            outbox = [item for item in aggregate.outbox if item.id not in done]
            audit = [r for r in aggregate.pending_audit if r.record_id not in flushed]
            if len(outbox) == len(aggregate.outbox) and len(audit) == len(aggregate.pending_audit):
                return None
            return aggregate.model_copy(update={"outbox": outbox, "pending_audit": audit})

        self.ports.store.update(model, change)

    # ------------------------------------------------------------------ effects

    def _endpoint(self, policy: ModelPolicy) -> OnlineEndpoint:
        endpoint = self._endpoint_cache.get(policy.endpoint)
        if endpoint is None:
            endpoint = self._endpoint_cache[policy.endpoint] = self.ports.endpoints(policy)
        return endpoint

    def _execute(self, aggregate: ModelAggregate, policy: ModelPolicy, item: OutboxItem) -> None:
        effect: Effect = item.effect
        model = aggregate.model
        match effect:
            case SendMessage():
                self._send(model, effect, aggregate.version)
            case SubmitTrainingJob():
                self._submit_training(aggregate, policy, effect)
            case CancelTrainingJob():
                self._cancel_training(effect)
            case DeployModel():
                self._deploy(aggregate, policy, effect)
            case SetTraffic():
                # Absolute: a deployment left out takes 0%. Zero weights are left out, so a
                # re-dispatch still applies after a later effect deleted that deployment (a
                # rollback's {known good: 100, candidate: 0}, then DeleteDeployment(candidate)).
                live = {name: weight for name, weight in effect.traffic.items() if weight}
                self._endpoint(policy).set_traffic(live)
            case DeleteDeployment():
                self._endpoint(policy).delete(effect.deployment)
            case TagModelVersion():
                self.ports.registry.tag(model, effect.model_version, dict(effect.tags))
            case RequestApproval():
                self.ports.events.publish(
                    "approval.requested", model, effect.model_dump(mode="json", exclude={"kind"})
                )
            case PublishEvent():
                self.ports.events.publish(effect.event_type, model, dict(effect.data))

    def _send(self, model: str, effect: SendMessage, aggregate_version: int) -> None:
        envelope = Envelope.new(
            effect.message_type,
            model,
            effect.payload,
            message_id=effect.message_id,
            promotion_id=effect.promotion_id,
            aggregate_version=aggregate_version,
            time=self.ports.clock(),
        )
        if effect.not_before is not None and effect.not_before > self.ports.clock():
            self.ports.bus.schedule(envelope, effect.not_before)
        else:
            self.ports.bus.send(envelope)

    def _submit_training(
        self, aggregate: ModelAggregate, policy: ModelPolicy, effect: SubmitTrainingJob
    ) -> None:
        champion = aggregate.promotion.champion
        request = training_request(
            policy,
            effect,
            champion_version=champion.version if champion else None,
            default_compute=self.ports.default_compute,
        )
        try:
            self.ports.training.submit(request)
        except TrainingBackendError as exc:
            if exc.transient:
                raise
            # A permanent refusal ends the run with the service's own message.
            self._submit_failed(aggregate, effect, str(exc))

    def _submit_failed(
        self, aggregate: ModelAggregate, effect: SubmitTrainingJob, error: str
    ) -> None:
        self._send(
            aggregate.model,
            SendMessage(
                message_type="TrainingJobStatus",
                message_id=f"{effect.run_id}:submit-failed",
                payload={"run_id": effect.run_id, "state": "failed", "error": error},
            ),
            aggregate.version,
        )

    def _cancel_training(self, effect: CancelTrainingJob) -> None:
        try:
            self.ports.training.cancel(effect.run_id)
        except TrainingBackendError as exc:
            if exc.transient:
                raise
            # The run has already ended in our state; a refused cancel changes nothing there.
            log.warning("could not cancel training job %s: %s", effect.run_id, exc)

    def _deploy(self, aggregate: ModelAggregate, policy: ModelPolicy, effect: DeployModel) -> None:
        active = aggregate.promotion.active
        promotion_id = active.id if active else ""
        try:
            self._endpoint(policy).deploy(policy.model, effect.model_version, effect.deployment)
        except EndpointError as exc:
            if getattr(exc, "transient", False):
                raise
            self._deploy_failed(aggregate, effect, str(exc))
            return
        self._send(
            aggregate.model,
            SendMessage(
                message_type=DEPLOYMENT_CHECK,
                message_id=deployment_check_id(promotion_id, effect.deployment, 1),
                payload=DeploymentCheck(
                    promotion_id=promotion_id, deployment=effect.deployment
                ).model_dump(),
                promotion_id=promotion_id,
                not_before=self.ports.clock() + self.ports.deployment_poll,
            ),
            aggregate.version,
        )

    def _deploy_failed(self, aggregate: ModelAggregate, effect: DeployModel, error: str) -> None:
        active = aggregate.promotion.active
        promotion_id = active.id if active else ""
        self._send(
            aggregate.model,
            SendMessage(
                message_type="DeploymentFailed",
                message_id=f"{promotion_id}:{effect.deployment}:deploy-failed",
                payload={
                    "promotion_id": promotion_id,
                    "deployment": effect.deployment,
                    "error": error,
                },
                promotion_id=promotion_id,
            ),
            aggregate.version,
        )

    # ------------------------------------------------------------------ queries

    def model_status(self, model: str) -> dict[str, Any]:
        self.policy(model)
        aggregate, _ = self.ports.store.load(model)
        promotion: PromotionState = aggregate.promotion
        return {
            "model": model,
            "version": aggregate.version,
            "production": promotion.champion.model_dump(mode="json")
            if promotion.champion
            else None,
            "last_known_good": (
                promotion.last_known_good.model_dump(mode="json")
                if promotion.last_known_good
                else None
            ),
            "active_promotion": (
                promotion.active.model_dump(mode="json") if promotion.active else None
            ),
            "queued_candidates": [q.model_dump(mode="json") for q in promotion.queued],
            "recent_promotions": [h.model_dump(mode="json") for h in promotion.history],
            "retrain": aggregate.retrain.model_dump(mode="json"),
            "pending_effects": len(aggregate.outbox),
        }

    def find_promotion(self, promotion_id: str) -> tuple[str, dict[str, Any]] | None:
        """(model, promotion document) for an active or recent promotion, or None."""
        for model in self.ports.policies:
            aggregate, _ = self.ports.store.load(model)
            active = aggregate.promotion.active
            if active is not None and active.id == promotion_id:
                return model, active.model_dump(mode="json")
            for entry in aggregate.promotion.history:
                if entry.promotion_id == promotion_id:
                    return model, entry.model_dump(mode="json")
        return None

    def audit_trail(
        self, model: str, promotion_id: str | None = None, since_version: int = 0
    ) -> list[AuditRecord]:
        records = self.ports.audit.read(model, since_version)
        if promotion_id is None:
            return records
        return [record for record in records if record.promotion_id == promotion_id]


def deployment_check_id(promotion_id: str, deployment: str, attempt: int) -> str:
    return f"{promotion_id}:{deployment}:deploy-check:{attempt}"


def _audit_record(
    model: str, version: int, seq: int, now: datetime, entry: Any, envelope: Envelope
) -> AuditRecord:
    detail = dict(entry.detail)
    payload = envelope.payload
    actor = (
        detail.get("caused_by")
        or detail.get("by")
        or detail.get("approver")
        or detail.get("requested_by")
        or payload.get("approver")
        or payload.get("requested_by")
        or "system"
    )
    return AuditRecord(
        model=model,
        aggregate_version=version,
        seq=seq,
        time=now,
        action=entry.action,
        promotion_id=entry.promotion_id,
        from_state=entry.from_state,
        to_state=entry.to_state,
        cause_type=envelope.type,
        cause_id=envelope.message_id,
        actor=str(actor),
        detail=detail,
    )


def data_landed_message_id(model: str, keys: Sequence[str]) -> str:
    """A stable id for a batch of data items: the same batch redelivered is the same message."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]
    return f"{model}:data:{digest}"


def data_landed_envelope(model: str, items: Sequence[Any], source: str) -> Envelope:
    """One DataLanded command for a delivery of data items. Its id is derived from the data, so
    a redelivered blob or batch is the same message and changes nothing."""
    return Envelope.new(
        "DataLanded",
        model,
        retrain_policy.DataLanded(items=list(items), source=source),
        message_id=data_landed_message_id(model, [item.key for item in items]),
    )
