"""Message handlers: one table from message type to handler, one load per message.

Every handler has one shape: the model's aggregate is loaded once (by `handle`), a message
already seen is dropped (its pending effects are dispatched), any observation the domain asks
for is read, the pure rules `decide`, and the new state is saved with its effects and audit
entries in the outbox (one conditional write, starting from the aggregate already loaded),
then the outbox is dispatched. A crash anywhere is repaired by redelivery (the duplicate still
dispatches what is pending) or by the timer's sweep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn

from pydantic import BaseModel

from domain.decision import AuditEntry, Decision
from domain.effects import SendMessage, SubmitTrainingJob
from domain.metrics import LiveMetrics, OfflineMetrics, ShadowMetrics
from domain.policy import ModelPolicy
from orchestrator import telemetry
from orchestrator.aggregate import ModelAggregate, OutboxItem
from orchestrator.data_sources import checked_data
from orchestrator.decision_telemetry import decision_attributes, measure, promotion_status
from orchestrator.messages import Envelope, InvalidMessage
from orchestrator.outbox import DEPLOYMENT_CHECK, DeploymentCheck, Outbox, deployment_check_id
from orchestrator.people import Refused, VerifiedEnvelope, authorize
from orchestrator.policy_files import UnknownModel, policy_for
from orchestrator.ports import ArmWindow, AuditRecord, Ports, TrainingBackendError
from orchestrator.signing import INTERNAL_TYPES
from promotion import commands as promotion_commands
from promotion import machine as promotion_machine
from retrain import commands as retrain_commands
from retrain import decide as retrain_rules
from retrain import job_events
from retrain.commands import (
    JOB_CHECK,
    OBSERVED_FIELDS,
    DataItem,
    DataLanded,
    PendingDataFound,
    RetrainRequested,
    TrainingJobCheck,
    TrainingJobStatus,
)

log = logging.getLogger(__name__)
# How long a data event may reuse this process's last read of an aggregate with an open window
# (MessageHandlers._load); at most half the policy's quiet period.
OPEN_WINDOW_REUSE = timedelta(seconds=5)
REJECT_REASON_LIMIT = 500  # characters of a refusal's reason kept in the audit and the log

Section = Literal["retrain", "promotion"]
Loaded = tuple[ModelAggregate, str | None]

# Message type -> the payload model it is parsed into.
PAYLOADS: dict[str, type[BaseModel]] = {
    **retrain_commands.COMMANDS,
    **promotion_commands.COMMANDS,
    DEPLOYMENT_CHECK: DeploymentCheck,
    job_events.JOB_EVENT: job_events.TrainingJobEvent,
}
MESSAGE_TYPES = frozenset(PAYLOADS)


@dataclass
class Outcome:
    """What handling one message did, for logs, HTTP answers and tests."""

    status: Literal["applied", "ignored", "duplicate", "rescheduled"]
    model: str
    version: int
    reason: str | None = None
    effects: int = 0
    effects_pending: bool = False  # saved, but an effect failed: the outbox retries it


@dataclass
class _Applied:
    decision: Decision[Any] | None = None
    aggregate: ModelAggregate | None = None
    duplicate: bool = False


Handler = Callable[["MessageHandlers", Envelope, ModelPolicy, Any, Loaded], Outcome]


@dataclass(frozen=True)
class _OpenWindow:
    loaded: Loaded
    read_at: datetime


class MessageHandlers:
    def __init__(self, ports: Ports, outbox: Outbox) -> None:
        self.ports = ports
        self.outbox = outbox
        self._open_windows: dict[str, _OpenWindow] = {}
        self._open_windows_lock = threading.Lock()

    def _load(self, envelope: Envelope, policy: ModelPolicy) -> Loaded:
        """The model's aggregate. A data event reuses this process's copy of it when that copy
        was read, window open, by an event whose data then landed, moments ago: the window
        carries the data and nothing is written, so a storm of events costs no aggregate read
        each. Moments: less than half of `min(quiet, debounce)` (the shortest a window waits
        for more data) and before the copy's `closes_at`, so the window has not closed
        meanwhile for want of data or at its deadline (a close another instance moved later
        only makes this re-read sooner). Should another instance close it all the same (a
        retrain asked by hand, a follow-up), the data is pending with no window and the
        timer's sweep opens one. Any other message for the model forgets the copy."""
        now = self.ports.clock()
        if envelope.type != "DataLanded":
            with self._open_windows_lock:
                self._open_windows.pop(envelope.model, None)
            return self.ports.store.load(envelope.model)
        with self._open_windows_lock:
            known = self._open_windows.get(envelope.model)
        settings = policy.retrain
        reuse_for = min(OPEN_WINDOW_REUSE, min(settings.quiet, settings.debounce) / 2)
        if known is not None:
            window = known.loaded[0].retrain.window
            fresh = timedelta(0) <= now - known.read_at < reuse_for
            if fresh and window is not None and now < window.closes_at:
                return known.loaded
        return self.ports.store.load(envelope.model)

    def _landed_in_open_window(self, model: str, loaded: Loaded, landed_at: datetime) -> None:
        """Data landed (`landed_at`) after `loaded` was read with its window open: later events
        may reuse that copy for a moment (`_load`). A reused copy is not made younger."""
        if loaded[0].retrain.window is None:
            return
        with self._open_windows_lock:
            known = self._open_windows.get(model)
            if known is None or known.loaded is not loaded:
                self._open_windows[model] = _OpenWindow(loaded, landed_at)

    def handle(
        self,
        envelope: Envelope,
        *,
        verified_by: str | None = None,
        raise_effect_failures: bool = True,
        sender_trace: str | None = None,
    ) -> Outcome:
        """Handle one command or event from a queue. Raises InvalidMessage for a message that
        can never be handled (dead-letter it); any other error is transient (retry).

        `verified_by`: an HTTP entry point that has authenticated the caller itself (a person's
        command then needs no token; orchestrator/people.py). `raise_effect_failures=False`: a
        transition saved but with an effect failing returns its outcome marked
        `effects_pending` instead of raising (an HTTP answer: the outbox retries the effect,
        and a retried request would only find the transition done). `sender_trace`: the
        trace context the transport brought (Service Bus application properties), linked."""
        payload_type = PAYLOADS.get(envelope.type)
        if payload_type is None:
            raise InvalidMessage(f"unknown message type {envelope.type!r}")
        try:
            policy = policy_for(self.ports.policies, envelope.model)
        except UnknownModel as exc:
            raise InvalidMessage(str(exc)) from exc
        if envelope.type in INTERNAL_TYPES:
            forged = self.ports.signer.verify(envelope)
            if forged is not None:
                self.reject(envelope, forged)
        command = envelope.payload_as(payload_type)
        try:  # a person's command: from whom its token says, if allowed (orchestrator/people.py)
            envelope, command = authorize(
                envelope, command, policy, self.ports.identity, verified_by=verified_by
            )
        except Refused as refused:
            self.reject(envelope, refused.reason)
        loaded = self._load(envelope, policy)
        # The app's own messages carry their trace; anything else joins the change in progress
        # (a person's approval is part of the promotion's trace), its sender's trace linked.
        with telemetry.span(
            f"handle {envelope.type}",
            envelope.traceparent or loaded[0].change_trace,
            links=[sender_trace] if sender_trace != envelope.traceparent else [],
            **{
                "retrain.model": envelope.model,
                "retrain.message_type": envelope.type,
                "retrain.message_id": envelope.message_id,
                "retrain.promotion_id": envelope.promotion_id,
                "retrain.actor": (
                    envelope.identity.get("oid") if isinstance(envelope, VerifiedEnvelope) else None
                ),
            },
        ) as span:
            outcome = self._handle(envelope, policy, command, loaded, raise_effect_failures)
            telemetry.annotate(
                span,
                **{
                    "retrain.outcome": outcome.status,
                    "retrain.reason": outcome.reason,
                    "retrain.effects": outcome.effects,
                    "retrain.version": outcome.version,
                },
            )
            return outcome

    def _handle(
        self,
        envelope: Envelope,
        policy: ModelPolicy,
        command: BaseModel,
        loaded: Loaded,
        raise_effect_failures: bool,
    ) -> Outcome:
        if loaded[0].has_seen(envelope.message_id):
            return self._duplicate(envelope, loaded[0])
        handler = _HANDLERS.get(envelope.type, MessageHandlers._promotion)
        try:
            return handler(self, envelope, policy, command, loaded)
        except Exception as exc:
            saved: Outcome | None = getattr(exc, "saved_outcome", None)
            if saved is None or raise_effect_failures:
                raise
            log.warning("%s %s saved; effects pending: %s", envelope.type, envelope.message_id, exc)
            pending = f"saved; effects pending, retried by the outbox: {type(exc).__name__}: {exc}"
            return replace(saved, reason=pending[:500], effects_pending=True)

    def reject(self, envelope: Envelope, reason: str) -> NoReturn:
        """Audit a message refused for who sent it, then raise InvalidMessage (the trigger
        dead-letters it with the reason). The write adds only the audit record: the state is
        unchanged and the message id is NOT remembered as seen, so a forged message sent under
        a real one's id cannot make the real one a duplicate. Raises `Refused` (an
        InvalidMessage): an HTTP caller answers it 403. The reason may quote a sender's text:
        it is cut to printable characters and REJECT_REASON_LIMIT."""
        reason = "".join(c if c.isprintable() else "?" for c in reason[:REJECT_REASON_LIMIT])
        now = self.ports.clock()
        entry = AuditEntry(
            action="message.rejected",
            promotion_id=envelope.promotion_id,
            detail={"reason": reason, "message_type": envelope.type},
        )

        def change(aggregate: ModelAggregate) -> ModelAggregate:
            record = _audit_record(aggregate.model, aggregate.version + 1, 0, now, entry, envelope)
            record = record.model_copy(update={"actor": "unverified"})
            # The record's version is taken, so a later transition's records never share its id.
            return aggregate.model_copy(
                update={
                    "version": aggregate.version + 1,
                    "pending_audit": [*aggregate.pending_audit, record],
                }
            )

        aggregate, _ = self.ports.store.update(envelope.model, change)
        log.warning("rejected %s %s: %s", envelope.type, envelope.message_id, reason)
        try:
            self.outbox.dispatch(envelope.model, aggregate)
        except Exception:  # the record is saved; the sweep flushes it if this dispatch fails
            log.exception("dispatch after rejecting %s failed", envelope.message_id)
        raise Refused(reason)

    # ------------------------------------------------------------------ handlers

    def _retrain(
        self, envelope: Envelope, policy: ModelPolicy, command: BaseModel, loaded: Loaded | None
    ) -> Outcome:
        command = checked_data(command, policy, self.ports.data_account)  # else InvalidMessage
        # Observations are made here, never taken from a message.
        forged = {name: None for name in OBSERVED_FIELDS if name in type(command).model_fields}
        command = command.model_copy(update=forged)
        now = self.ports.clock()
        ledger, keep_for = self.ports.ledger, policy.retrain.dedup_retention
        if isinstance(command, DataLanded):
            refused = retrain_rules.items_over_cap(len(command.items), policy)
            if refused is not None:  # dead-lettered whole, with the reason: nothing dropped
                raise InvalidMessage(refused)
            counted = ledger.claim(
                envelope.model, command.items, envelope.message_id, now, keep_for
            )
            command = command.model_copy(update={"new_items": len(counted)})
            if counted and loaded is not None:
                self._landed_in_open_window(envelope.model, loaded, now)
            source = command.source
            telemetry.count("data.items", len(counted), model=envelope.model, source=source)
            duplicates = len(command.items) - len(counted)
            telemetry.count("data.duplicates", duplicates, model=envelope.model, source=source)
        elif isinstance(command, RetrainRequested) and command.data_uri is not None:
            # A person's data URI is its own key; a redelivery of the request counts it again.
            item = DataItem(uri=command.data_uri, key=command.data_uri)
            counted = ledger.claim(envelope.model, [item], envelope.message_id, now, keep_for)
            command = command.model_copy(update={"data_known": not counted})
        tracker = (loaded[0] if loaded else self.ports.store.load(envelope.model)[0]).retrain
        if retrain_rules.observation_needed(tracker, command):  # type: ignore[arg-type]
            command = command.model_copy(update={"pending": ledger.pending(envelope.model)})
        return self._apply(envelope, "retrain", command, policy, loaded)

    def _promotion(
        self, envelope: Envelope, policy: ModelPolicy, command: BaseModel, loaded: Loaded | None
    ) -> Outcome:
        aggregate = loaded[0] if loaded else self.ports.store.load(envelope.model)[0]
        # Metrics are observed here, never taken from a message: a sender cannot pass a gate.
        forged = {
            name: None
            for name in ("offline", "live", "shadow")
            if name in type(command).model_fields
        }
        command = command.model_copy(update=forged)
        request = promotion_machine.observation_needed(
            aggregate.promotion,
            command,  # type: ignore[arg-type]
            policy,
            self.ports.clock(),
        )
        if request is not None:
            command = self._observe(aggregate, request, command)
        return self._apply(envelope, "promotion", command, policy, loaded)

    def _training_job_check(
        self, envelope: Envelope, policy: ModelPolicy, check: TrainingJobCheck, loaded: Loaded
    ) -> Outcome:
        aggregate = loaded[0]
        if not aggregate.retrain.is_current_job(check.run_id):
            # The run has ended (or never was): nothing to ask the backend, which may be down.
            # The policy records it as stale without reading the state.
            running = TrainingJobStatus(run_id=check.run_id, state="running", attempt=check.attempt)
            return self._retrain(envelope, policy, running, loaded)
        fresh: Loaded | None = loaded
        if aggregate.outbox:
            # The submit may still sit in the outbox (its dispatch failed): send it first, or
            # the backend would rightly answer "no such job". The dispatch rewrites the
            # aggregate, so the save below reads it again.
            self.outbox.dispatch(envelope.model, aggregate)
            fresh = None
        try:
            status = self.ports.training.status(check.run_id)
            state, error, version = status.state, status.error, status.registered_version
        except TrainingBackendError as exc:
            if exc.transient:
                raise
            state, error, version = "failed", str(exc), None
        observed = TrainingJobStatus(
            run_id=check.run_id,
            state=state,
            error=error,
            registered_version=version,
            attempt=check.attempt,
        )
        return self._retrain(envelope, policy, observed, fresh)

    def _training_job_event(
        self,
        envelope: Envelope,
        policy: ModelPolicy,
        event: job_events.TrainingJobEvent,
        loaded: Loaded,
    ) -> Outcome:
        """A run status event from outside (no MAC): the job is read from the backend NOW
        and a final answer decided as a poll's; anything else is skipped with its reason
        (no write: the scheduled poll stays the fallback)."""
        aggregate = loaded[0]
        skipped = job_events.skip_reason(aggregate.retrain, event)
        if skipped is not None:
            return Outcome("ignored", envelope.model, aggregate.version, skipped)
        fresh: Loaded | None = loaded
        if aggregate.outbox:  # as a check: the submit may still wait in the outbox
            self.outbox.dispatch(envelope.model, aggregate)
            fresh = None
        try:
            status = self.ports.training.status(event.run_id)
            state, error, version = status.state, status.error, status.registered_version
        except TrainingBackendError as exc:
            if exc.transient:
                raise
            # A refusal is left to the poll, which fails the run with it: an event from
            # outside never ends a run on its own.
            reason = f"the backend refused the check ({exc}): polling continues"
            return Outcome("ignored", envelope.model, aggregate.version, reason[:500])
        observed = job_events.observed_status(aggregate.retrain, event, state, error, version)
        if isinstance(observed, str):
            return Outcome("ignored", envelope.model, aggregate.version, observed)
        return self._retrain(envelope, policy, observed, fresh)

    def _deployment_check(
        self, envelope: Envelope, policy: ModelPolicy, check: DeploymentCheck, loaded: Loaded
    ) -> Outcome:
        aggregate = loaded[0]
        active = aggregate.promotion.active
        if active is None or active.id != check.promotion_id:
            log.info("deployment check for %s: promotion has moved on", check.promotion_id)
            return Outcome("ignored", envelope.model, aggregate.version, "promotion has moved on")
        status = self.outbox.endpoint(policy, check.endpoint).deployment_state(check.deployment)
        command: BaseModel
        if status.state == "succeeded":
            command = promotion_commands.DeploymentReady(
                promotion_id=check.promotion_id,
                deployment=check.deployment,
                endpoint=check.endpoint,
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
                promotion_id=check.promotion_id,
                deployment=check.deployment,
                error=error,
                endpoint=check.endpoint,
            )
        else:
            attempt = check.attempt + 1
            next_check = SendMessage(
                message_type=DEPLOYMENT_CHECK,
                message_id=deployment_check_id(
                    check.promotion_id, check.deployment, attempt, check.endpoint
                ),
                payload=check.model_copy(update={"attempt": attempt}).model_dump(exclude_none=True),
                promotion_id=check.promotion_id,
                not_before=self.ports.clock() + self.ports.deployment_poll,
            )
            self.outbox.send(envelope.model, next_check, aggregate.version)
            return Outcome("rescheduled", envelope.model, aggregate.version, status.state)
        return self._apply(envelope, "promotion", command, policy, loaded)

    # ------------------------------------------------------------------ observations

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
            if request.kind == "shadow":
                candidate, production = request.arms
                shadow: ShadowMetrics = self.ports.metrics.shadow(
                    model,
                    candidate.deployment,
                    production.deployment,
                    candidate.window_start,
                    candidate.window_end,
                )
                return command.model_copy(update={"shadow": shadow})
            # The canary step's index; the production bake comes after the last step.
            step = active.step_index if active.step_index >= 0 else len(active.canary_steps)
            if active.status == "production_bake":
                step = len(active.canary_steps)
            if active.status == "ring":  # each later ring its own step after the bake
                step = len(active.canary_steps) + 1 + active.ring_index
            arms = [ArmWindow.model_validate(arm.model_dump()) for arm in request.arms]
            live: LiveMetrics = self.ports.metrics.live(model, active.id, step, arms)
            return command.model_copy(update={"live": live})
        except Exception as exc:  # the gate judges "no data": inconclusive, never a pass
            log.warning("could not read %s metrics for %s: %s", request.kind, model, exc)
            return command.model_copy(update={request.kind: None})

    # ------------------------------------------------------------------ decide, save, dispatch

    def _apply(
        self,
        envelope: Envelope,
        section: Section,
        command: BaseModel,
        policy: ModelPolicy,
        loaded: Loaded | None,
        *,
        remember: bool = True,
    ) -> Outcome:
        """Decide `command` with the pure rules of `section` on that section's state, and save
        the result (state, outbox, audit) in one conditional write. `remember=False`: the id is
        not kept among the handled messages (a timer's own decision, which its state makes
        idempotent, would otherwise crowd out the ids of real messages).

        Traced as a span `decide <section>` (docs/observability.md): the decision's step,
        verdict, states and per-gate evidence are its attributes, its audit entries its
        events, and the effects it made are its children."""
        with telemetry.span(
            f"decide {section}",
            **{
                "retrain.model": envelope.model,
                "retrain.section": section,
                "retrain.message_type": envelope.type,
                "retrain.message_id": envelope.message_id,
            },
        ):
            return self._decide(envelope, section, command, policy, loaded, remember=remember)

    def _decide(
        self,
        envelope: Envelope,
        section: Section,
        command: BaseModel,
        policy: ModelPolicy,
        loaded: Loaded | None,
        *,
        remember: bool = True,
    ) -> Outcome:
        now = self.ports.clock()
        decide = _RULES[section]
        applied = _Applied()
        traceparent = telemetry.current_traceparent()

        def change(aggregate: ModelAggregate) -> ModelAggregate | None:
            applied.aggregate, applied.decision, applied.duplicate = aggregate, None, False
            if aggregate.has_seen(envelope.message_id):
                applied.duplicate = True
                return None
            before = getattr(aggregate, section)
            decision = decide(before, command, policy, now)
            applied.decision = decision
            if decision.ignored and not decision.audit:
                return None
            if decision.state is before and not decision.effects and not decision.audit:
                return None  # nothing to save (data an open window carries): no write
            version = aggregate.version + 1
            records = [
                _audit_record(aggregate.model, version, seq, now, entry, envelope)
                for seq, entry in enumerate(decision.audit)
            ]
            items = [
                _outbox_item(f"{version}-{index}", effect, envelope, version, traceparent, records)
                for index, effect in enumerate(decision.effects)
            ]
            changed = aggregate.model_copy(
                update={
                    section: decision.state,
                    "outbox": [*aggregate.outbox, *items],
                    "pending_audit": [*aggregate.pending_audit, *records],
                    "seen_messages": (
                        aggregate.remember(envelope.message_id)
                        if remember
                        else aggregate.seen_messages
                    ),
                }
            )
            trace = (changed.change_trace or traceparent) if changed.in_change() else None
            status = promotion_status(changed)
            since = aggregate.status_since if status == promotion_status(aggregate) else now
            return changed.model_copy(update={"change_trace": trace, "status_since": since})

        aggregate, _ = self.ports.store.update(envelope.model, change, loaded=loaded)
        decision = applied.decision
        if applied.duplicate:
            telemetry.annotate_current({"retrain.duplicate": True})
            return self._duplicate(envelope, aggregate)
        assert decision is not None
        if applied.aggregate is not None:
            measure(envelope.model, applied.aggregate, aggregate, decision, now)
            traced = decision_attributes(envelope, section, applied.aggregate, aggregate, decision)
            telemetry.annotate_current(traced)
        for entry in decision.audit:  # the decision, as the trace shows it
            telemetry.on_current_span(
                entry.action,
                {
                    "retrain.promotion_id": entry.promotion_id,
                    "retrain.from_state": entry.from_state,
                    "retrain.to_state": entry.to_state,
                    **{
                        f"retrain.detail.{key}": value
                        for key, value in entry.detail.items()
                        if key != "evidence"  # on the span, one attribute per gate
                    },
                },
            )
        status: Literal["applied", "ignored"] = (
            "ignored" if decision.ignored and not decision.effects else "applied"
        )
        outcome = Outcome(
            status, envelope.model, aggregate.version, decision.ignored, len(decision.effects)
        )
        try:
            self.outbox.dispatch(envelope.model, aggregate)
        except Exception as exc:
            # Saved: the effects are retried (redelivery, the sweep). A caller that answers a
            # person (HTTP) reports that instead of failing (see `handle`).
            exc.saved_outcome = outcome  # type: ignore[attr-defined]
            raise
        if decision.ignored:
            log.info(
                "%s %s for %s changed nothing: %s",
                envelope.type,
                envelope.message_id,
                envelope.model,
                decision.ignored,
            )
        return outcome

    def decide_internal(
        self, envelope: Envelope, command: BaseModel, policy: ModelPolicy, loaded: Loaded | None
    ) -> Outcome:
        """A retrain command the app decides for itself on a timer pass, never a message (the
        production monitor, orchestrator/monitor.py): decided, saved and dispatched as a
        handled message is, but its id is not remembered: the monitor's record and cooldown
        in the state make it idempotent. The caller has made any observation the rules need."""
        return self._apply(envelope, "retrain", command, policy, loaded, remember=False)

    def _duplicate(self, envelope: Envelope, aggregate: ModelAggregate) -> Outcome:
        log.info(
            "%s %s for %s: already handled", envelope.type, envelope.message_id, envelope.model
        )
        # A redelivery after a crash between save and dispatch finishes the dispatch.
        self.outbox.dispatch(envelope.model, aggregate)
        return Outcome("duplicate", envelope.model, aggregate.version, "message already handled")


def sweep_stranded_data(
    ports: Ports, outbox: Outbox, model: str, policy: ModelPolicy, aggregate: ModelAggregate
) -> str | None:
    """The timer's safety net for data that landed while its window was closing (the event
    saw the window open, so it wrote nothing, and the close did not list it): with no window
    open and more pending than the last close left, open a window for it. Returns the window
    id opened, else None. Never raises: a failure is logged and the next sweep tries again."""
    tracker = aggregate.retrain
    if tracker.window is not None or tracker.follow_up_pending:
        return None
    if any(isinstance(item.effect, SubmitTrainingJob) for item in aggregate.outbox):
        # A submit still waiting seals its items when it goes through: until then they are
        # still pending, but they are that run's, not stranded.
        return None
    try:
        pending = ports.ledger.pending(model)
        if not retrain_rules.stranded(tracker, pending):
            return None
        found = PendingDataFound(pending=pending)
        envelope = Envelope.new(
            "PendingDataFound", model, found, message_id=f"{model}:stranded:{aggregate.version}"
        )
        MessageHandlers(ports, outbox)._apply(envelope, "retrain", found, policy, None)
        window = ports.store.load(model)[0].retrain.window
        return window.id if window is not None else None
    except Exception:
        log.exception("sweep: could not open a window for the pending data of %s", model)
        return None


# The pure rules that decide each section of the aggregate.
_RULES: dict[Section, Callable[..., Decision[Any]]] = {
    "retrain": retrain_rules.decide,
    "promotion": promotion_machine.decide,
}

# Message types with a handler of their own; every other type is a promotion command.
_HANDLERS: dict[str, Handler] = {
    DEPLOYMENT_CHECK: MessageHandlers._deployment_check,
    JOB_CHECK: MessageHandlers._training_job_check,
    job_events.JOB_EVENT: MessageHandlers._training_job_event,
    **{
        message_type: MessageHandlers._retrain
        for message_type in retrain_commands.COMMANDS
        if message_type != JOB_CHECK
    },
}


# A promotion ends in one of its terminal statuses (no other outcome exists to count).
def _outbox_item(
    item_id: str,
    effect: Any,
    envelope: Envelope,
    version: int,
    traceparent: str | None,
    records: list[AuditRecord],
) -> OutboxItem:
    context = telemetry.effect_attributes(effect, decided=records)
    return OutboxItem(
        id=item_id,
        effect=effect,
        cause_id=envelope.message_id,
        version=version,
        traceparent=traceparent,
        promotion_id=context.get("retrain.promotion_id"),
        step=context.get("retrain.step"),
    )


def _audit_record(
    model: str, version: int, seq: int, now: datetime, entry: Any, envelope: Envelope
) -> AuditRecord:
    detail = dict(entry.detail)
    payload = envelope.payload
    identity = envelope.identity if isinstance(envelope, VerifiedEnvelope) else None
    if identity:  # a person's command: the verified sender, never what the payload claims
        detail["identity"] = identity
    actor = (
        (identity or {}).get("upn")
        or (identity or {}).get("oid")
        or detail.get("caused_by")
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
