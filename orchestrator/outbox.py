"""The outbox: effects saved with a transition are dispatched after the write.

Each item is run in order; a transient failure is counted on the item and raised (the message
is redelivered and the timer's sweep dispatches again); submits, deployments and cancels give
up after `Ports.max_effect_attempts` dispatches and `Ports.effect_retry_window`. Effects are
idempotent (absolute traffic maps, deterministic names and message ids), so dispatching the
same item twice is harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from domain.effects import (
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
from domain.policy import ModelPolicy
from orchestrator.aggregate import ModelAggregate, OutboxItem
from orchestrator.messages import Envelope
from orchestrator.ports import (
    DeploymentBusy,
    EndpointError,
    OnlineEndpoint,
    Ports,
    TrainingBackendError,
    TrainingRequest,
)

log = logging.getLogger(__name__)

# Effects that stop being retried after a while (see Outbox._execute_or_give_up).
_GIVE_UP_EFFECTS = (SubmitTrainingJob, DeployModel, CancelTrainingJob)

DEPLOYMENT_CHECK = "DeploymentCheck"


class DeploymentCheck(BaseModel):
    """Internal: poll a deployment that was started, until it is ready or failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    promotion_id: str
    deployment: str
    attempt: int = Field(default=1, ge=1)


def deployment_check_id(promotion_id: str, deployment: str, attempt: int) -> str:
    return f"{promotion_id}:{deployment}:deploy-check:{attempt}"


class Outbox:
    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self._endpoints: dict[str, OnlineEndpoint] = {}

    def dispatch(self, model: str, aggregate: ModelAggregate | None = None) -> int:
        """Run the effects and audit entries left in the model's outbox. Idempotent.

        `aggregate`: the state this process has just saved or read, to spare a read."""
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

    def endpoint(self, policy: ModelPolicy) -> OnlineEndpoint:
        endpoint = self._endpoints.get(policy.endpoint)
        if endpoint is None:
            endpoint = self._endpoints[policy.endpoint] = self.ports.endpoints(policy)
        return endpoint

    def send(self, model: str, effect: SendMessage, aggregate_version: int) -> None:
        """Send (or schedule, when `not_before` is ahead) one message to the app itself, signed."""
        signer = self.ports.signer
        envelope = Envelope.new(
            effect.message_type,
            model,
            effect.payload,
            message_id=effect.message_id,
            promotion_id=effect.promotion_id,
            aggregate_version=aggregate_version,
            time=self.ports.clock(),
        )
        envelope = signer.sign(envelope)
        if effect.not_before is not None and effect.not_before > self.ports.clock():
            self.ports.bus.schedule(envelope, effect.not_before)
        else:
            self.ports.bus.send(envelope)

    # ------------------------------------------------------------------ retries and giving up

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

    # ------------------------------------------------------------------ the effects

    def _execute(self, aggregate: ModelAggregate, policy: ModelPolicy, item: OutboxItem) -> None:
        effect: Effect = item.effect
        model = aggregate.model
        match effect:
            case SendMessage():
                self.send(model, effect, aggregate.version)
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
                self.endpoint(policy).set_traffic(live)
            case DeleteDeployment():
                self.endpoint(policy).delete(effect.deployment)
            case TagModelVersion():
                self.ports.registry.tag(model, effect.model_version, dict(effect.tags))
            case RequestApproval():
                self.ports.events.publish(
                    "approval.requested", model, effect.model_dump(mode="json", exclude={"kind"})
                )
            case PublishEvent():
                self.ports.events.publish(effect.event_type, model, dict(effect.data))

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
        self.send(
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
            self.endpoint(policy).deploy(policy.model, effect.model_version, effect.deployment)
        except EndpointError as exc:
            if getattr(exc, "transient", False):
                raise
            self._deploy_failed(aggregate, effect, str(exc))
            return
        self.send(
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
        self.send(
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


def training_request(
    policy: ModelPolicy,
    effect: SubmitTrainingJob,
    *,
    champion_version: str | None = None,
    default_compute: str | None = None,
    tags: dict[str, str] | None = None,
) -> TrainingRequest:
    """The request for a SubmitTrainingJob effect under the model's policy.

    The compute is the policy's `pipeline.compute`, else `default_compute` (AZUREML_COMPUTE),
    else None (the YAML's default compute).
    """
    pipeline = policy.pipeline
    return TrainingRequest(
        run_id=effect.run_id,
        model=policy.model,
        pipeline_file=pipeline.file,
        data_uris=effect.data_uris,
        data_input=pipeline.data_input,
        experiment=pipeline.experiment or f"{policy.model}-retrain",
        compute=pipeline.compute or default_compute,
        champion_version=champion_version,
        tags={"retrain_run_id": effect.run_id, "retrain_reason": effect.reason[:200]}
        | (tags or {}),
    )
