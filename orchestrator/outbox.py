"""The outbox: effects saved with a transition are dispatched after the write.

Each outside target (the endpoint, the training backend, the bus, the registry, the event
hub) runs its effects in order, independently: one that fails holds back only its own later
effects. Every effect kind has bounded retries (`Ports.max_effect_attempts` dispatches and
`Ports.effect_retry_window`); a given-up effect is audited, published and counted, and a
submit or a deployment also fails its step. Traffic back to the known-good deployment is never
given up: it pages and keeps being retried. The endpoint's effects run from the latest saved
state, and a traffic map superseded by a newer one is dropped. Effects are idempotent
(absolute traffic maps, deterministic names and message ids), so dispatching twice is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.effects import (
    CancelTrainingJob,
    DeleteDeployment,
    DeployModel,
    Effect,
    PublishEvent,
    RequestApproval,
    SendMessage,
    SetMirror,
    SetTraffic,
    SubmitTrainingJob,
    TagModelVersion,
)
from domain.policy import ModelPolicy
from orchestrator import telemetry
from orchestrator.aggregate import ModelAggregate, OutboxItem, TrafficAlert
from orchestrator.messages import Envelope
from orchestrator.ports import (
    AuditRecord,
    DeploymentBusy,
    EndpointError,
    OnlineEndpoint,
    Ports,
    TrainingBackendError,
    TrainingRequest,
)

log = logging.getLogger(__name__)

# Each effect's outside target. A target runs its effects in order; one that fails holds back
# only its own later effects, never another target's (a notification never holds a rollback).
_LANES: dict[str, str] = {
    "deploy_model": "endpoint",
    "set_traffic": "endpoint",
    "set_mirror": "endpoint",
    "delete_deployment": "endpoint",
    "submit_training_job": "training",
    "cancel_training_job": "training",
    "send_message": "bus",
    "tag_model_version": "registry",
    "request_approval": "events",
    "publish_event": "events",
}
# A failure here is raised after every target has run, so the message comes again at once; a
# failing tag or notification waits for the next dispatch or the timer's sweep.
_URGENT_LANES = frozenset({"endpoint", "training", "bus"})


@dataclass
class _Run:
    """What one dispatch did, settled in one write."""

    now: datetime
    done: set[str] = field(default_factory=set)
    failed: dict[str, tuple[int, datetime, str]] = field(
        default_factory=dict
    )  # attempts, first, error
    gave_up: list[tuple[OutboxItem, str, int]] = field(default_factory=list)
    added: list[OutboxItem] = field(default_factory=list)
    flushed: set[str] = field(default_factory=set)
    alert: TrafficAlert | None = None  # a rollback's traffic that does not hold: page
    restored: bool = False  # a traffic map held on the alert's endpoint while it was up
    urgent: Exception | None = None


def _lane(effect: Effect) -> str:
    """The effect's target: each ring's endpoint is a target of its own (a ring that cannot
    be reached never holds back another ring's rollback)."""
    lane = _LANES[effect.kind]
    ring = getattr(effect, "endpoint", None)
    return f"{lane}:{ring}" if lane == "endpoint" and ring else lane


def _restores(effect: Effect, alert: TrafficAlert | None) -> bool:
    """A traffic map that held on the endpoint whose rollback pages: only its own lane clears
    the alert (another ring's traffic says nothing about it). A lane runs in order, so a map
    done there means the rollback's own map held or was superseded by a newer one."""
    return (
        isinstance(effect, SetTraffic) and alert is not None and effect.endpoint == alert.endpoint
    )


def endpoint_effects_waiting(aggregate: ModelAggregate, *, deletes: bool = True) -> bool:
    """Whether a deploy, traffic map or (with `deletes`) delete of the model is still in its
    outbox."""
    return any(
        _LANES[item.effect.kind] == "endpoint"
        and (deletes or not isinstance(item.effect, DeleteDeployment))
        for item in aggregate.outbox
    )


def endpoint_lane_waiting(
    aggregate: ModelAggregate, endpoint: str | None, *, deletes: bool = True
) -> bool:
    """Like `endpoint_effects_waiting`, for one endpoint's lane only (the model's own: None;
    a later ring's: its name)."""
    lane = f"endpoint:{endpoint}" if endpoint else "endpoint"
    return any(
        _lane(item.effect) == lane and (deletes or not isinstance(item.effect, DeleteDeployment))
        for item in aggregate.outbox
    )


def _by_lane(outbox: list[OutboxItem]) -> dict[str, list[OutboxItem]]:
    lanes: dict[str, list[OutboxItem]] = {}
    for item in outbox:
        lanes.setdefault(_lane(item.effect), []).append(item)
    return lanes


def _superseded(item: OutboxItem, lane: list[OutboxItem]) -> bool:
    """A traffic map with a newer one after it in its lane: maps are absolute, only the newest
    one means anything (running the old one could put traffic back on a rolled-back model)."""
    if not isinstance(item.effect, (SetTraffic, SetMirror)):
        return False
    later = lane[lane.index(item) + 1 :]
    return any(type(other.effect) is type(item.effect) for other in later)


def _settle_audit(model: str, run: _Run) -> list[AuditRecord]:
    """The audit records of what giving up and paging did (numbered by `_settle`)."""
    records: list[AuditRecord] = []

    def record(action: str, **detail: Any) -> None:
        records.append(
            AuditRecord(
                model=model,
                aggregate_version=0,
                time=run.now,
                action=action,
                cause_type="outbox",
                actor="system",
                detail=detail,
            )
        )

    for item, reason, attempts in run.gave_up:
        record(
            "effect.gave_up",
            effect=item.effect.kind,
            item=item.id,
            attempts=attempts,
            error=reason,
            cause_id=item.cause_id,
        )
    if run.alert is not None:
        record("rollback.traffic_not_restored", **run.alert.model_dump(mode="json"))
    elif run.restored:
        record("rollback.traffic_restored")
    return records


DEPLOYMENT_CHECK = "DeploymentCheck"


class DeploymentCheck(BaseModel):
    """Internal: poll a deployment that was started, until it is ready or failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    promotion_id: str
    deployment: str
    attempt: int = Field(default=1, ge=1)
    endpoint: str | None = None  # a later ring's endpoint; None: the model's own


def deployment_check_id(
    promotion_id: str, deployment: str, attempt: int, endpoint: str | None = None
) -> str:
    ring = f":{endpoint}" if endpoint else ""
    return f"{promotion_id}:{deployment}{ring}:deploy-check:{attempt}"


# Pending items one release call deletes (one batch request in Azure): what a submit's
# dispatch, or one step of the timer's sweep, spends on releasing a run's data.
RELEASE_CHUNK = 256


class Outbox:
    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self._endpoints: dict[str, OnlineEndpoint] = {}
        self.release_chunk = RELEASE_CHUNK

    def dispatch(self, model: str, aggregate: ModelAggregate | None = None) -> int:
        """Run the effects and audit entries left in the model's outbox; return how many
        effects are done (or given up). Idempotent.

        Each outside target runs its own effects in order; one that fails holds back only its
        own later effects (see `_LANES`). After every target has run, the first failure of an
        urgent target (endpoint, training, bus, the audit log) is raised so the message is
        delivered again; a failing notification or tag waits for the next dispatch or the
        timer's sweep. `aggregate`: the state this process has just saved or read, to spare a
        read; the endpoint's effects always run from the latest saved state."""
        loaded: tuple[ModelAggregate, str | None] | None = None
        if aggregate is None or endpoint_effects_waiting(aggregate):
            # A copy given may be stale: another handler may have saved a newer traffic map (a
            # rollback) since, and an old split must never be put back. The read also starts
            # the settling write below.
            loaded = self.ports.store.load(model)
            aggregate = loaded[0]
        if not aggregate.outbox and not aggregate.pending_audit:
            return 0
        run = _Run(now=self.ports.clock())
        try:
            self.ports.audit.append(aggregate.pending_audit)
            run.flushed = {record.record_id for record in aggregate.pending_audit}
        except Exception as exc:  # kept in the aggregate; never holds back an effect
            log.warning("audit log of %s not written yet: %s", model, exc)
            run.urgent = exc
        policy = self.ports.policies.get(model)
        for lane, items in _by_lane(aggregate.outbox).items():
            for item in items:
                if policy is None:
                    log.error("model %s has no policy: dropping effect %s", model, item.id)
                    run.done.add(item.id)
                    continue
                if _superseded(item, items):
                    log.info("%s: %s superseded by a newer traffic map", model, item.id)
                    run.done.add(item.id)
                    continue
                try:
                    with telemetry.span(
                        f"effect {item.effect.kind}",
                        item.traceparent,
                        **{
                            "retrain.model": model,
                            "retrain.effect": item.effect.kind,
                            "retrain.effect_id": item.id,
                            "retrain.cause_id": item.cause_id,
                            "retrain.attempt": item.failed_attempts + 1,
                            "retrain.lane": lane,
                            "retrain.decided_version": item.version,
                            **telemetry.effect_attributes(
                                item.effect,
                                endpoint=policy.endpoint,
                                decided=[
                                    record
                                    for record in aggregate.pending_audit
                                    if record.aggregate_version == item.version
                                ],
                            ),
                            # Its own promotion and step, last: a retry's decision records
                            # are flushed by then.
                            **{
                                key: value
                                for key, value in (
                                    ("retrain.promotion_id", item.promotion_id),
                                    ("retrain.step", item.step),
                                )
                                if value is not None
                            },
                        },
                    ):
                        self._execute(aggregate, policy, item)
                except DeploymentBusy as busy:
                    # Not a failure: the endpoint is still applying a traffic change (an
                    # Azure ML update takes minutes). The delete stays for the sweep; the
                    # effects after it do not depend on it.
                    log.info("%s: %s; the outbox sweep tries again", model, busy)
                    continue
                except Exception as exc:
                    self._failed(aggregate, lane, item, exc, run)
                    if item.id not in run.done and not isinstance(item.effect, DeleteDeployment):
                        break  # this target's later effects wait for this one
                    # Nothing after a delete depends on it (a traffic map that moves traffic
                    # off the deployment may be what it waits for).
                    continue
                run.done.add(item.id)
                if _restores(item.effect, aggregate.traffic_alert):
                    run.restored = True
        self._settle(aggregate, run, loaded)
        self._announce(aggregate, run)
        if run.urgent is not None:
            raise run.urgent
        return len(run.done)

    def endpoint(self, policy: ModelPolicy, ring: str | None = None) -> OnlineEndpoint:
        """The model's endpoint, or (`ring`) one of its rings' endpoints, by name."""
        name = ring or policy.endpoint
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            endpoint = self._endpoints[name] = self.ports.endpoints(policy.on_endpoint(name))
        return endpoint

    def send(
        self, model: str, effect: SendMessage, aggregate_version: int, trace: str | None = None
    ) -> None:
        """Send (or schedule, when `not_before` is ahead) one message to the app itself, signed,
        carrying the current trace (else `trace`: the change's, from a sweep)."""
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
        traceparent = telemetry.current_traceparent() or trace
        if traceparent is not None and telemetry.TRACEPARENT.match(traceparent):
            # model_copy skips validation: only a well-formed context goes in (a receiver's
            # strict parsing would refuse the whole message).
            envelope = envelope.model_copy(update={"traceparent": traceparent})
        envelope = signer.sign(envelope)
        if effect.not_before is not None and effect.not_before > self.ports.clock():
            self.ports.bus.schedule(envelope, effect.not_before)
        else:
            self.ports.bus.send(envelope)

    # ------------------------------------------------------------------ retries and giving up

    def _failed(
        self, aggregate: ModelAggregate, lane: str, item: OutboxItem, exc: Exception, run: _Run
    ) -> None:
        """Count a failed attempt, or give the effect up: every kind has bounded retries
        (`max_effect_attempts` dispatches AND `effect_retry_window` since the first failure).
        A given-up effect is audited, published and counted; a submit or a deployment also
        fails its step. Traffic back to the known-good deployment is never given up: past the
        limits it pages once and keeps being retried."""
        effect = item.effect
        attempts = item.failed_attempts + 1
        first = item.first_failed_at or run.now
        exhausted = (
            attempts >= self.ports.max_effect_attempts
            and run.now - first >= self.ports.effect_retry_window
        )
        error = f"{type(exc).__name__}: {exc}"[:500]
        telemetry.count("effects.failed", kind=effect.kind, model=aggregate.model, lane=lane)
        if isinstance(effect, SetTraffic) and effect.restore:
            run.failed[item.id] = (attempts, first, error)
            run.urgent = run.urgent or exc
            if exhausted and aggregate.traffic_alert is None and run.alert is None:
                run.alert = TrafficAlert(
                    traffic=dict(effect.traffic),
                    since=first,
                    attempts=attempts,
                    error=error,
                    endpoint=effect.endpoint,
                )
            return
        if not exhausted:
            run.failed[item.id] = (attempts, first, error)
            if _LANES[effect.kind] in _URGENT_LANES:
                run.urgent = run.urgent or exc
            return
        waited = int((run.now - first).total_seconds())
        reason = f"gave up after {attempts} attempts in {waited} s: {error}"
        log.error("%s for %s: %s", effect.kind, aggregate.model, reason)
        try:  # the step learns first; if it cannot be told yet, the effect is kept
            if isinstance(effect, SubmitTrainingJob):
                # The service may have created the job without our hearing of it: a cancel
                # goes into the outbox (kept, retried) before the run is failed.
                cancel = CancelTrainingJob(run_id=effect.run_id, reason=reason)
                run.added.append(OutboxItem(id=f"{item.id}-cancel", effect=cancel))
                self._submit_failed(aggregate, effect, reason)
            elif isinstance(effect, DeployModel):
                self._deploy_failed(aggregate, effect, reason)
        except Exception as send_error:
            log.warning("could not report the given-up %s yet: %s", effect.kind, send_error)
            run.failed[item.id] = (attempts, first, error)
            run.urgent = run.urgent or send_error
            return
        run.done.add(item.id)
        run.gave_up.append((item, reason, attempts))

    def _settle(
        self,
        aggregate: ModelAggregate,
        run: _Run,
        loaded: tuple[ModelAggregate, str | None] | None = None,
    ) -> None:
        """One write: forget what is done, count what failed, add what giving up added, flush
        the audit written, and record what was given up or paged (audited in the same write)."""
        if not (run.done or run.failed or run.flushed or run.added or run.alert or run.restored):
            return
        audit = _settle_audit(aggregate.model, run)

        def change(current: ModelAggregate) -> ModelAggregate | None:
            outbox = []
            for item in current.outbox:
                if item.id in run.done:
                    continue
                if item.id in run.failed:
                    attempts, first, error = run.failed[item.id]
                    item = item.model_copy(
                        update={
                            "failed_attempts": attempts,
                            "first_failed_at": first,
                            "last_error": error,
                        }
                    )
                outbox.append(item)
            known = {item.id for item in outbox}
            outbox += [item for item in run.added if item.id not in known]
            update: dict[str, Any] = {
                "outbox": outbox,
                "pending_audit": [
                    r for r in current.pending_audit if r.record_id not in run.flushed
                ],
            }
            if run.gave_up:
                update["effects_given_up"] = current.effects_given_up + len(run.gave_up)
            if run.alert is not None and current.traffic_alert is None:
                update["traffic_alert"] = run.alert
            elif run.restored and current.traffic_alert == aggregate.traffic_alert:
                update["traffic_alert"] = None
            if audit:  # audit entries of their own version, so no record id is shared
                version = current.version + 1
                records = [
                    r.model_copy(update={"aggregate_version": version, "seq": seq})
                    for seq, r in enumerate(audit)
                ]
                update["version"] = version
                update["pending_audit"] = [*update["pending_audit"], *records]
            changed = current.model_copy(update=update)
            return None if changed == current else changed

        saved, _ = self.ports.store.update(aggregate.model, change, loaded=loaded)
        if audit:  # what giving up or paging recorded is written now, not on the next dispatch
            self._flush(saved)

    def _flush(self, aggregate: ModelAggregate) -> None:
        try:
            self.ports.audit.append(aggregate.pending_audit)
        except Exception as exc:  # kept in the aggregate for the next dispatch
            log.warning("audit log of %s not written yet: %s", aggregate.model, exc)
            return
        flushed = {record.record_id for record in aggregate.pending_audit}

        def change(current: ModelAggregate) -> ModelAggregate | None:
            kept = [r for r in current.pending_audit if r.record_id not in flushed]
            if len(kept) == len(current.pending_audit):
                return None
            return current.model_copy(update={"pending_audit": kept})

        self.ports.store.update(aggregate.model, change)

    def _announce(self, aggregate: ModelAggregate, run: _Run) -> None:
        """Publish and count what was given up or paged (best effort: the audit has it)."""
        model = aggregate.model
        events: list[tuple[str, dict[str, Any]]] = []
        for item, reason, attempts in run.gave_up:
            telemetry.count("effects.given_up", kind=item.effect.kind, model=model)
            if _LANES[item.effect.kind] != "events":  # its own target may be what is down
                events.append(
                    (
                        "effect.gave_up",
                        {
                            "effect": item.effect.kind,
                            "item": item.id,
                            "attempts": attempts,
                            "error": reason,
                        },
                    )
                )
        if run.alert is not None and aggregate.traffic_alert is None:
            telemetry.count("rollback.traffic_not_restored", model=model)
            events.append(("rollback.traffic_not_restored", run.alert.model_dump(mode="json")))
        elif run.restored and aggregate.traffic_alert is not None:
            events.append(("rollback.traffic_restored", {}))
        for event_type, data in events:
            try:
                self.ports.events.publish(event_type, model, data)
            except Exception as exc:
                log.warning("could not publish %s for %s: %s", event_type, model, exc)

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
                self.endpoint(policy, effect.endpoint).set_traffic(live)
            case SetMirror():
                self.endpoint(policy).set_mirror(dict(effect.mirror))
            case DeleteDeployment():
                self.endpoint(policy, effect.endpoint).delete(effect.deployment)
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
        # The data: the run's manifest in the data ledger (sealed now from the oldest pending
        # items, or the one an earlier dispatch sealed), an earlier run's, or the URI itself.
        ledger, model = self.ports.ledger, aggregate.model
        own = effect.manifest == effect.run_id
        if own:
            data_uris: list[str] | None = ledger.seal(model, effect.run_id, effect.data_count)
        elif effect.manifest is not None:
            data_uris = ledger.manifest(model, effect.manifest)
        else:
            data_uris = list(effect.data_sample)
        if not data_uris:
            where = f"manifest {effect.manifest}" if effect.manifest else "the request"
            self._submit_failed(aggregate, effect, f"no data to train on: {where} lists none")
            return
        champion = aggregate.promotion.champion
        request = training_request(
            policy,
            effect,
            data_uris,
            champion_version=champion.version if champion else None,
            default_compute=self.ports.default_compute,
        )
        try:
            self.ports.training.submit(request)
        except TrainingBackendError as exc:
            if exc.transient:
                raise
            # A permanent refusal ends the run with the service's own message; its data stays
            # pending (nothing lost), so the next window takes it again.
            self._submit_failed(aggregate, effect, str(exc))
            return
        if own:
            # The run has its data: it stops being pending (idempotent). One bounded chunk
            # here, so no dispatch runs for minutes; the timer's sweep releases the rest
            # (Maintenance), and until then the ledger hides the manifest's items.
            try:
                ledger.release(model, effect.run_id, self.release_chunk)
            except Exception:
                if effect.run_id not in ledger.releasing(model):
                    raise  # nothing hidden yet: the submit's retry (a no-op) releases again
                # Started: the sweep goes on with it. Failing the submit for it would cancel
                # a job whose data the sweep then releases anyway.
                log.warning(
                    "%s: run %s submitted; its release goes on in the timer's sweep",
                    model,
                    effect.run_id,
                    exc_info=True,
                )

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
            self.endpoint(policy, effect.endpoint).deploy(
                policy.model, effect.model_version, effect.deployment
            )
        except EndpointError as exc:
            if getattr(exc, "transient", False):
                raise
            self._deploy_failed(aggregate, effect, str(exc))
            return
        self.send(
            aggregate.model,
            SendMessage(
                message_type=DEPLOYMENT_CHECK,
                message_id=deployment_check_id(promotion_id, effect.deployment, 1, effect.endpoint),
                payload=DeploymentCheck(
                    promotion_id=promotion_id,
                    deployment=effect.deployment,
                    endpoint=effect.endpoint,
                ).model_dump(exclude_none=True),
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
                message_id=f"{promotion_id}:{effect.deployment}:deploy-failed"
                + (f":{effect.endpoint}" if effect.endpoint else ""),
                payload={
                    "promotion_id": promotion_id,
                    "deployment": effect.deployment,
                    "error": error,
                }
                | ({"endpoint": effect.endpoint} if effect.endpoint else {}),
                promotion_id=promotion_id,
            ),
            aggregate.version,
        )


def training_request(
    policy: ModelPolicy,
    effect: SubmitTrainingJob,
    data_uris: list[str],
    *,
    champion_version: str | None = None,
    default_compute: str | None = None,
    tags: dict[str, str] | None = None,
) -> TrainingRequest:
    """The request for a SubmitTrainingJob effect under the model's policy, on `data_uris`
    (the effect carries only its manifest's reference; the caller reads the manifest).

    The compute is the policy's `pipeline.compute`, else `default_compute` (AZUREML_COMPUTE),
    else None (the YAML's default compute).
    """
    pipeline = policy.pipeline
    return TrainingRequest(
        run_id=effect.run_id,
        model=policy.model,
        pipeline_file=pipeline.file,
        data_uris=data_uris,
        data_input=pipeline.data_input,
        experiment=pipeline.experiment or f"{policy.model}-retrain",
        compute=pipeline.compute or default_compute,
        champion_version=champion_version,
        tags={"retrain_run_id": effect.run_id, "retrain_reason": effect.reason[:200]}
        | (tags or {}),
        label_column=policy.data.label_column,
        feature_columns=policy.data.feature_columns,
    )
