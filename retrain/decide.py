"""The retrain rules: a pure function `(tracker, command, policy, now) -> Decision`.

One `RetrainTracker` per model lives in the model's aggregate: the open debounce window,
the running job and a short history. The keys seen and the data pending live in the data
ledger (orchestrator/ports.py `DataLedger`), outside the aggregate: the service layer records
new data there and passes what `decide` needs to know (how many items were new, what is
pending) in the command, as it passes metrics to the promotion rules. `decide` never does
I/O and never reads the clock; it returns the new tracker, the effects to dispatch and the
audit entries.

Rules (see docs/retraining.md):

- Deduplication: an item counts once, by its key (blob name + ETag, or event id), across
  windows, for the policy's `dedup_retention` (the data ledger's claim).
- Debounce: the first new item when no window is open opens one and schedules a
  `RetrainWindowClosed` message at `now + debounce`; later items only accumulate, and
  change nothing here (no write of the aggregate).
- Minimum: when the window closes with less than `min_new_files` items (or, when every
  pending item reports its rows, less than `min_new_rows` rows), the window closes without
  a job and the data stays pending; the next new item opens a new window, whose close
  counts everything pending.
- Cooldown: a window that closes less than `cooldown` after the last job ended is moved
  to the end of the cooldown (a new scheduled `RetrainWindowClosed`).
- One job at a time: a window that closes while a job runs marks `follow_up_pending`; when
  the job ends, exactly one follow-up is scheduled for the end of the cooldown (or
  submitted at once when there is no cooldown left), with everything pending.
- A manual `RetrainRequested` skips the debounce and the cooldown; with `force` it also
  skips the minimum. Neither skips deduplication.
- Caps: one job takes at most `max_items_per_window` items (the oldest); the rest stays
  pending and a follow-up job is asked for. (`max_items_per_event` is checked by the service
  layer before anything is recorded: `items_over_cap`.)
- Nothing stranded: data that landed while its window was closing, with no window open to
  carry it, is found by the timer's sweep (`PendingDataFound`), which opens a window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from domain.decision import AuditEntry, Decision
from domain.effects import CancelTrainingJob, Effect, SendMessage, SubmitTrainingJob
from domain.policy import ModelPolicy
from retrain.commands import (
    DATA_SAMPLE,
    FINAL_STATES,
    JOB_CHECK,
    START_PROMOTION,
    WINDOW_CLOSED,
    DataLanded,
    MonitorEvaluated,
    PendingData,
    PendingDataFound,
    RetrainCommand,
    RetrainRequested,
    RetrainWindowClosed,
    TrainingJobCheck,
    TrainingJobStatus,
)
from retrain.monitor import cooldown_until
from retrain.state import MAX_RUNS, CurrentJob, MonitorRecord, RetrainTracker, RunRecord, Window

_T = TypeVar("_T")

# --------------------------------------------------------------------------- names


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_") or "model"


def window_id_for(seq: int, now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}-{seq}".lower()


def run_id_for(model: str, window_id: str) -> str:
    """The training run id, also the Azure ML job name (letters, digits, '-', '_')."""
    return f"{_slug(model)}-{window_id}"


def window_message_id(model: str, window_id: str, seq: int) -> str:
    base = f"{model}:window:{window_id}"
    return base if seq == 0 else f"{base}:{seq}"


def check_message_id(run_id: str, attempt: int) -> str:
    return f"{run_id}:check:{attempt}"


def poll_delay(policy: ModelPolicy, attempt: int) -> timedelta:
    """Delay before check `attempt` (1-based): poll_interval doubling, at most max_poll_interval."""
    settings = policy.retrain
    delay = settings.poll_interval * (2 ** min(max(attempt - 1, 0), 20))
    return min(delay, max(settings.max_poll_interval, settings.poll_interval))


# --------------------------------------------------------------------------- decide


def decide(
    tracker: RetrainTracker, command: RetrainCommand, policy: ModelPolicy, now: datetime
) -> Decision[RetrainTracker]:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(command, DataLanded):
        return _data_landed(tracker, command, policy, now)
    if isinstance(command, RetrainWindowClosed):
        return _window_closed(tracker, command, policy, now)
    if isinstance(command, RetrainRequested):
        return _retrain_requested(tracker, command, policy, now)
    if isinstance(command, TrainingJobStatus):
        return _job_status(tracker, command, policy, now)
    if isinstance(command, PendingDataFound):
        return _pending_found(tracker, command, policy, now)
    if isinstance(command, MonitorEvaluated):
        return _monitor_evaluated(tracker, command, policy, now)
    raise TypeError(f"the retrain policy does not handle {type(command).__name__}")


def items_over_cap(item_count: int, policy: ModelPolicy) -> str | None:
    """Why one message's items are refused (more than `max_items_per_event`), else None."""
    cap = policy.retrain.max_items_per_event
    if item_count <= cap:
        return None
    return (
        f"{item_count} data items in one message: more than retrain.max_items_per_event "
        f"({cap}) of model {policy.model}; split the data into smaller events"
    )


def observation_needed(tracker: RetrainTracker, command: RetrainCommand) -> bool:
    """Whether `decide` needs to know what is pending (the service layer reads it first)."""
    if isinstance(command, RetrainRequested):
        return True
    if isinstance(command, RetrainWindowClosed):
        window = tracker.window
        return window is not None and window.id == command.window_id and window.seq == command.seq
    if isinstance(command, TrainingJobStatus):
        job = tracker.current_job
        # A follow-up is decided when the job ends (or is found overdue at a poll).
        return job is not None and job.run_id == command.run_id and tracker.follow_up_pending
    if isinstance(command, MonitorEvaluated):
        return command.decision.trigger
    return False


def stranded(tracker: RetrainTracker, pending: PendingData) -> bool:
    """Whether pending data has no window to carry it: more is pending than was left when the
    last window closed, no window is open and no follow-up is due to take it."""
    return (
        tracker.window is None
        and not tracker.follow_up_pending
        and pending.items > tracker.pending_left
    )


def _data_landed(
    tracker: RetrainTracker, command: DataLanded, policy: ModelPolicy, now: datetime
) -> Decision[RetrainTracker]:
    new_items = _observed(command.new_items, "new_items")
    if new_items == 0:
        return Decision.ignore(
            tracker, f"duplicate: all {len(command.items)} item(s) were already seen"
        )
    if tracker.window is not None:
        # The open window carries it: nothing to write (concurrent events do not serialise
        # on the aggregate).
        return Decision(state=tracker)
    state, effects, opened = _open_window(tracker, policy, now, now + policy.retrain.debounce)
    audit = [
        AuditEntry(
            action="retrain.data_accumulated",
            detail={
                "source": command.source,
                "new_items": new_items,
                "duplicates": len(command.items) - new_items,
                "window_id": state.window.id if state.window else None,
            },
        ),
        opened,
    ]
    return Decision(state=state, effects=effects, audit=audit)


def _pending_found(
    tracker: RetrainTracker, command: PendingDataFound, policy: ModelPolicy, now: datetime
) -> Decision[RetrainTracker]:
    if not stranded(tracker, command.pending):
        return Decision.ignore(tracker, "no stranded data")
    state, effects, opened = _open_window(tracker, policy, now, now + policy.retrain.debounce)
    found = AuditEntry(
        action="retrain.stranded_data_found",
        detail=_pending_detail(command.pending) | {"pending_left": tracker.pending_left},
    )
    return Decision(state=state, effects=effects, audit=[found, opened])


def _window_closed(
    tracker: RetrainTracker, command: RetrainWindowClosed, policy: ModelPolicy, now: datetime
) -> Decision[RetrainTracker]:
    window = tracker.window
    if window is None or window.id != command.window_id:
        return Decision.ignore(tracker, f"stale: window {command.window_id} is not open")
    if command.seq != window.seq:
        return Decision.ignore(
            tracker, f"stale: window {window.id} close #{command.seq} was rescheduled"
        )
    pending = _observed(command.pending, "pending")
    detail = _pending_detail(pending) | {"window_id": window.id}
    quiet_until = _still_landing(window, pending, policy, now)
    if quiet_until is not None:
        moved = window.model_copy(update={"closes_at": quiet_until, "seq": window.seq + 1})
        return Decision(
            state=tracker.model_copy(update={"window": moved}),
            effects=[_close_message(policy, moved)],
            audit=[
                AuditEntry(
                    action="retrain.window_extended",
                    detail=detail
                    | {
                        "newest_landed_at": pending.newest_landed_at.isoformat()
                        if pending.newest_landed_at
                        else None,
                        "closes_at": quiet_until.isoformat(),
                    },
                )
            ],
        )
    if not window.skip_minimum and not _meets_minimum(pending, policy):
        state = tracker.model_copy(update={"window": None, "pending_left": pending.items})
        return Decision(
            state=state,
            audit=[
                AuditEntry(
                    action="retrain.window_below_minimum",
                    detail=detail
                    | {
                        "min_new_files": policy.retrain.min_new_files,
                        "min_new_rows": policy.retrain.min_new_rows,
                    },
                )
            ],
        )
    if not pending.items:
        state = tracker.model_copy(update={"window": None, "pending_left": 0})
        return Decision(
            state=state, audit=[AuditEntry(action="retrain.window_empty", detail=detail)]
        )
    if tracker.current_job is not None:
        state = tracker.model_copy(
            update={
                "window": None,
                "pending_left": pending.items,
                "follow_up_pending": True,
                "follow_up_force": tracker.follow_up_force or window.skip_minimum,
                "follow_up_reason": tracker.follow_up_reason or window.reason,
            }
        )
        return Decision(
            state=state,
            audit=[
                AuditEntry(
                    action="retrain.follow_up_pending",
                    detail=detail | {"running_job": tracker.current_job.run_id},
                )
            ],
        )
    cooldown_end = _cooldown_end(tracker, policy)
    if cooldown_end is not None and now < cooldown_end:
        moved = window.model_copy(update={"closes_at": cooldown_end, "seq": window.seq + 1})
        state = tracker.model_copy(update={"window": moved})
        return Decision(
            state=state,
            effects=[_close_message(policy, moved)],
            audit=[
                AuditEntry(
                    action="retrain.window_deferred",
                    detail=detail | {"cooldown_until": cooldown_end.isoformat()},
                )
            ],
        )
    reason = f"{window.reason}: window {window.id}, {pending.items} new item(s)"
    return _submit(tracker, policy, now, run_id_for(policy.model, window.id), reason, pending)


def _still_landing(
    window: Window, pending: PendingData, policy: ModelPolicy, now: datetime
) -> datetime | None:
    """When the window should close instead, if data is still landing: the newest item landed
    less than `quiet` ago, and the window is not yet `max_window` old. None: close now."""
    newest = pending.newest_landed_at
    settings = policy.retrain
    quiet = min(settings.quiet, settings.debounce)  # never longer than the window itself
    if newest is None or now - newest >= quiet:
        return None
    latest = window.opened_at + max(settings.max_window, settings.debounce)
    if now >= latest:
        return None
    return min(newest + quiet, latest)


def _retrain_requested(
    tracker: RetrainTracker,
    command: RetrainRequested,
    policy: ModelPolicy,
    now: datetime,
    *,
    origin: str = "manual",  # how the run's reason starts: "manual", or "decay"
) -> Decision[RetrainTracker]:
    if command.run_id is not None and _known_run(tracker, command.run_id):
        return Decision.ignore(tracker, f"duplicate: run {command.run_id} was already requested")
    pending = _observed(command.pending, "pending")
    audit: list[AuditEntry] = []
    known = command.data_uri is not None and (
        bool(command.data_known) or _known_uri(tracker, command.data_uri)
    )
    if known:
        audit.append(
            AuditEntry(
                action="retrain.data_duplicate",
                detail={"data_uri": command.data_uri, "requested_by": command.requested_by},
            )
        )
    request = {
        "requested_by": command.requested_by,
        "reason": command.reason,
        "force": command.force,
        "data_uri": command.data_uri,
        "data_added": command.data_uri is not None and not known,
    }
    state = tracker
    if not command.force and not (pending.items and _meets_minimum(pending, policy)):
        audit.append(
            AuditEntry(
                action="retrain.request_below_minimum", detail=request | _pending_detail(pending)
            )
        )
        if not request["data_added"]:
            return Decision(state=tracker, audit=audit, ignored="below the minimum new data")
        state = tracker.model_copy(update={"pending_left": pending.items})
        return Decision(state=state, audit=audit)
    if state.current_job is not None:
        state = state.model_copy(
            update={
                "follow_up_pending": True,
                "follow_up_force": state.follow_up_force or command.force,
                "follow_up_reason": f"{origin} ({command.requested_by}): {command.reason}",
                "follow_up_manual": True,
            }
        )
        audit.append(
            AuditEntry(
                action="retrain.follow_up_pending",
                detail=request | {"running_job": state.current_job.run_id},  # type: ignore[union-attr]
            )
        )
        return Decision(state=state, audit=audit)
    fallback: _Data | None = None
    if not pending.items:  # force with nothing new: the given data, else the last run's
        last = tracker.runs[-1] if tracker.runs else None
        if command.data_uri is not None:
            fallback = _Data(None, 1, [command.data_uri])
        elif last is not None and (last.manifest is not None or last.data_sample):
            fallback = _Data(last.manifest, last.data_count, list(last.data_sample))
        if fallback is None:
            audit.append(AuditEntry(action="retrain.request_no_data", detail=request))
            return Decision(state=state, audit=audit, ignored="nothing to train on")
    run_id = command.run_id
    if run_id is None:
        seq = state.window_seq + 1
        state = state.model_copy(update={"window_seq": seq})
        run_id = run_id_for(policy.model, f"manual-{window_id_for(seq, now)}")
    reason = f"{origin} ({command.requested_by}): {command.reason}"
    decision = _submit(state, policy, now, run_id, reason, pending, fallback=fallback)
    return Decision(state=decision.state, effects=decision.effects, audit=audit + decision.audit)


MONITOR_REASON_LIMIT = 500  # characters of a monitor decision's reason kept in the state


def _monitor_evaluated(
    tracker: RetrainTracker, command: MonitorEvaluated, policy: ModelPolicy, now: datetime
) -> Decision[RetrainTracker]:
    """The monitor's decision, saved with its cooldown stamp in the same write as the retrain
    it starts (a forced RetrainRequested: the pending data, else the last run's data). A
    champion's second decay retrain needs new data: the same data would give the same model.
    Checked again here, on the state the write starts from: an overlapping pass finds the
    evaluation done (`every`) or the cooldown running, and changes nothing."""
    settings = policy.monitor
    decision = command.decision
    if settings is None:
        return Decision.ignore(tracker, "the policy has no monitor")
    record = tracker.monitor
    from_signal = decision.source != "monitor"
    if record is not None and not from_signal and now - record.evaluated_at < settings.every:
        return Decision.ignore(
            tracker, f"evaluated at {record.evaluated_at.isoformat()}: not due yet"
        )
    triggered_at = record.triggered_at if record is not None else None
    until = cooldown_until(triggered_at, settings)
    verdict, reason = decision.verdict, decision.reason
    trigger = decision.trigger
    if trigger and until is not None and now < until:
        trigger, verdict = False, "cooling_down"
        reason = f"{reason} (decay retrain within the cooldown, until {until.isoformat()})"
    if trigger and tracker.current_job is not None:
        trigger, verdict = False, "busy"
        reason = f"{reason} (training job {tracker.current_job.run_id} is running)"
    if (
        trigger
        and record is not None
        and record.triggered_run is not None
        and record.triggered_champion == decision.champion_version
        and _observed(command.pending, "pending").items == 0
    ):
        trigger, verdict = False, "awaiting_data"
        reason = (
            f"{reason} (decay retrain {record.triggered_run} already ran for this champion and "
            "no data has landed since: the next one waits for new data)"
        )
    run_id = f"{_slug(policy.model)}-decay-{now:%Y%m%dT%H%M%S}".lower() if trigger else None
    updated = MonitorRecord(
        evaluated_at=now,
        verdict=verdict,
        reason=reason[:MONITOR_REASON_LIMIT],
        champion_version=decision.champion_version,
        triggered_at=now if trigger else triggered_at,
        triggered_run=run_id if trigger else (record.triggered_run if record else None),
        triggered_champion=(
            decision.champion_version
            if trigger
            else (record.triggered_champion if record else None)
        ),
    )
    state = tracker.model_copy(update={"monitor": updated})
    detail = decision.evidence() | {"verdict": verdict, "reason": reason, "by": decision.source}
    audit: list[AuditEntry] = []
    if not trigger:
        if from_signal:  # an outside alert that starts nothing is always on record
            audit.append(AuditEntry(action="monitor.signal_ignored", detail=detail))
        elif (  # the audit keeps the changes only: of verdict, or of champion
            record is None
            or record.verdict != verdict
            or record.champion_version != decision.champion_version
        ):
            audit.append(AuditEntry(action="monitor.evaluated", detail=detail))
        return Decision(state=state, audit=audit)
    audit.append(AuditEntry(action="monitor.decay_detected", detail=detail | {"run_id": run_id}))
    request = RetrainRequested(
        run_id=run_id,
        reason=reason,
        force=True,
        requested_by=decision.source,
        pending=_observed(command.pending, "pending"),
    )
    started = _retrain_requested(state, request, policy, now, origin="decay")
    return Decision(
        state=started.state,
        effects=started.effects,
        audit=audit + started.audit,
        ignored=started.ignored,
    )


def _job_status(
    tracker: RetrainTracker, command: TrainingJobStatus, policy: ModelPolicy, now: datetime
) -> Decision[RetrainTracker]:
    job = tracker.current_job
    if job is None or job.run_id != command.run_id:
        return Decision.ignore(
            tracker, f"stale: run {command.run_id} is not the running job (or already ended)"
        )
    effects: list[Effect] = []
    if command.state not in FINAL_STATES and command.attempt < job.checks:
        return Decision.ignore(tracker, f"stale: check {command.attempt} was superseded")
    if command.state not in FINAL_STATES and _overdue(job, policy, now):
        # Polled for longer than any job should take: end the run here and cancel it at the
        # backend, so one hung job cannot keep the model from training again.
        limit = policy.retrain.max_job_duration
        error = f"still {command.state} after {limit} (retrain.max_job_duration): canceled"
        command = command.model_copy(update={"state": "failed", "error": error})
        effects.append(CancelTrainingJob(run_id=job.run_id, reason=error))
    if command.state not in FINAL_STATES:
        attempt = command.attempt + 1
        updated = job.model_copy(update={"status": command.state, "checks": attempt})
        state = tracker.model_copy(update={"current_job": updated})
        return Decision(
            state=state,
            effects=[_check_message(policy, job.run_id, attempt, now)],
            audit=[
                AuditEntry(
                    action="retrain.job_progress",
                    from_state=job.status,
                    to_state=command.state,
                    detail={"run_id": job.run_id, "next_check": attempt},
                )
            ],
        )

    error = command.error
    version = command.registered_version
    if command.state == "completed" and not version:
        error = error or "the job completed without registering a model version"
    record = RunRecord(
        run_id=job.run_id,
        reason=job.reason,
        status=command.state,  # type: ignore[arg-type]
        error=error,
        registered_version=version,
        submitted_at=job.submitted_at,
        ended_at=now,
        manifest=job.manifest,
        data_count=job.data_count,
        data_sample=job.data_sample,
    )
    state = tracker.model_copy(
        update={
            "current_job": None,
            "last_job_ended_at": now,
            "runs": [*tracker.runs, record][-MAX_RUNS:],
        }
    )
    audit = [
        AuditEntry(
            action=f"retrain.job_{command.state}",
            from_state=job.status,
            to_state=command.state,
            detail={"run_id": job.run_id, "error": error, "registered_version": version},
        )
    ]
    if command.state == "completed" and version:
        effects.append(
            SendMessage(
                message_type=START_PROMOTION,
                message_id=f"{job.run_id}:start-promotion",
                payload={"candidate_version": version, "run_id": job.run_id},
            )
        )
    if state.follow_up_pending:
        follow = _follow_up(state, policy, now, _observed(command.pending, "pending"))
        state = follow.state
        effects.extend(follow.effects)
        audit.extend(follow.audit)
    return Decision(state=state, effects=effects, audit=audit)


def _follow_up(
    tracker: RetrainTracker, policy: ModelPolicy, now: datetime, pending: PendingData
) -> Decision[RetrainTracker]:
    """The job ended and a follow-up was asked for: one window closing at the cooldown end."""
    reason = tracker.follow_up_reason or "follow-up"
    force = tracker.follow_up_force
    manual = tracker.follow_up_manual
    state = tracker.model_copy(
        update={
            "follow_up_pending": False,
            "follow_up_force": False,
            "follow_up_reason": None,
            "follow_up_manual": False,
        }
    )
    if not pending.items:
        state = state.model_copy(update={"pending_left": 0})
        return Decision(state=state, audit=[AuditEntry(action="retrain.follow_up_no_data")])
    # A person's request skips the debounce and the cooldown: it is submitted now.
    due = now if manual else max(now, _cooldown_end(state, policy) or now)
    if manual:
        window = state.window
        seq = state.window_seq + 1
        state = state.model_copy(update={"window_seq": seq})
        run_id = run_id_for(policy.model, window.id if window else window_id_for(seq, now))
        text = f"{reason}: follow-up, {pending.items} new item(s)"
        return _submit(state, policy, now, run_id, text, pending, force=force)
    window = state.window
    if window is not None:
        # Data landed after the follow-up was asked for: the open window carries it all.
        moved = window.model_copy(
            update={
                "closes_at": max(window.closes_at, due),
                "seq": window.seq + 1,
                "skip_minimum": True,
                "reason": reason,
            }
        )
        state = state.model_copy(update={"window": moved})
        return Decision(
            state=state,
            effects=[_close_message(policy, moved)],
            audit=[
                AuditEntry(
                    action="retrain.follow_up_scheduled",
                    detail={"window_id": moved.id, "closes_at": moved.closes_at.isoformat()},
                )
            ],
        )
    if due <= now:
        seq = state.window_seq + 1
        state = state.model_copy(update={"window_seq": seq})
        run_id = run_id_for(policy.model, window_id_for(seq, now))
        text = f"{reason}: follow-up, {pending.items} new item(s)"
        return _submit(state, policy, now, run_id, text, pending, force=force)
    state, effects, opened = _open_window(state, policy, now, due, skip_minimum=True, reason=reason)
    return Decision(
        state=state,
        effects=effects,
        audit=[
            opened,
            AuditEntry(
                action="retrain.follow_up_scheduled",
                detail={"window_id": state.window.id, "closes_at": due.isoformat()},  # type: ignore[union-attr]
            ),
        ],
    )


# --------------------------------------------------------------------------- helpers


def _known_uri(tracker: RetrainTracker, uri: str) -> bool:
    """Whether a manually named data URI is data the running job or a recent completed run
    trained on (their samples; the data ledger knows the keys it has seen). The data of a
    run that failed or was canceled was never trained on: naming it again is new data."""
    if tracker.current_job is not None and uri in tracker.current_job.data_sample:
        return True
    return any(run.status == "completed" and uri in run.data_sample for run in tracker.runs)


def _observed(value: _T | None, name: str) -> _T:
    if value is None:  # the service layer always observes; a missing one is a bug, not data
        raise ValueError(f"the retrain rules need the observed {name!r} on this command")
    return value


def _open_window(
    tracker: RetrainTracker,
    policy: ModelPolicy,
    now: datetime,
    closes_at: datetime,
    *,
    skip_minimum: bool = False,
    reason: str = "new data",
) -> tuple[RetrainTracker, list[Effect], AuditEntry]:
    seq = tracker.window_seq + 1
    window = Window(
        id=window_id_for(seq, now),
        opened_at=now,
        closes_at=closes_at,
        skip_minimum=skip_minimum,
        reason=reason,
    )
    state = tracker.model_copy(update={"window": window, "window_seq": seq})
    audit = AuditEntry(
        action="retrain.window_opened",
        detail={"window_id": window.id, "closes_at": closes_at.isoformat()},
    )
    return state, [_close_message(policy, window)], audit


def _close_message(policy: ModelPolicy, window: Window) -> SendMessage:
    return SendMessage(
        message_type=WINDOW_CLOSED,
        message_id=window_message_id(policy.model, window.id, window.seq),
        payload={"window_id": window.id, "seq": window.seq},
        not_before=window.closes_at,
    )


def _overdue(job: CurrentJob, policy: ModelPolicy, now: datetime) -> bool:
    return now - job.submitted_at >= policy.retrain.max_job_duration


def overdue_check(
    tracker: RetrainTracker, policy: ModelPolicy, now: datetime
) -> SendMessage | None:
    """A TrainingJobCheck for a job past `max_job_duration`, for the timer's sweep to send:
    it ends the run even when its own chain of checks was lost (a check dead-lettered while
    the backend could not be read). None when no job is overdue."""
    job = tracker.current_job
    if job is None or not _overdue(job, policy, now):
        return None
    return SendMessage(
        message_type=JOB_CHECK,
        message_id=f"{check_message_id(job.run_id, job.checks)}:overdue",
        payload=TrainingJobCheck(run_id=job.run_id, attempt=job.checks).model_dump(mode="json"),
    )


def _check_message(policy: ModelPolicy, run_id: str, attempt: int, now: datetime) -> SendMessage:
    return SendMessage(
        message_type=JOB_CHECK,
        message_id=check_message_id(run_id, attempt),
        payload=TrainingJobCheck(run_id=run_id, attempt=attempt).model_dump(mode="json"),
        not_before=now + poll_delay(policy, attempt),
    )


@dataclass(frozen=True)
class _Data:
    """The data of a job: a manifest (a run id), how many items, the first few URIs."""

    manifest: str | None
    count: int
    sample: list[str]


def _submit(
    tracker: RetrainTracker,
    policy: ModelPolicy,
    now: datetime,
    run_id: str,
    reason: str,
    pending: PendingData,
    *,
    fallback: _Data | None = None,
    force: bool = False,
) -> Decision[RetrainTracker]:
    """Submit a job on the oldest pending items (at most `max_items_per_window`; its manifest
    is sealed when the submit is dispatched), or on `fallback` when nothing is pending."""
    cap = policy.retrain.max_items_per_window
    taken = min(pending.items, cap)
    left = pending.items - taken
    data = (
        _Data(run_id, taken, pending.sample[:DATA_SAMPLE])
        if taken or fallback is None
        else fallback
    )
    job = CurrentJob(
        run_id=run_id,
        submitted_at=now,
        manifest=data.manifest,
        data_count=data.count,
        data_sample=data.sample[:DATA_SAMPLE],
        reason=reason,
    )
    state = tracker.model_copy(
        update={
            "current_job": job,
            "window": None,
            "pending_left": left,
            # Past the cap: what is left goes into the next job, once this one ends.
            "follow_up_pending": left > 0,
            "follow_up_force": False,
            "follow_up_reason": f"backlog after {run_id}" if left else None,
            "follow_up_manual": False,
        }
    )
    audit = [
        AuditEntry(
            action="retrain.job_submitted",
            to_state="submitted",
            detail={
                "run_id": run_id,
                "reason": reason,
                "data_count": data.count,
                "manifest": data.manifest,
                "rows": pending.rows if taken == pending.items else None,
                "forced": force,
            },
        )
    ]
    if left:
        audit.append(
            AuditEntry(
                action="retrain.window_capped",
                detail={
                    "run_id": run_id,
                    "taken": taken,
                    "left_pending": left,
                    "max_items_per_window": cap,
                },
            )
        )
    return Decision(
        state=state,
        effects=[
            SubmitTrainingJob(
                run_id=run_id,
                manifest=data.manifest,
                data_count=data.count,
                data_sample=data.sample[:DATA_SAMPLE],
                reason=reason,
            ),
            _check_message(policy, run_id, 1, now),
        ],
        audit=audit,
    )


def _meets_minimum(pending: PendingData, policy: ModelPolicy) -> bool:
    settings = policy.retrain
    if pending.items < settings.min_new_files:
        return False
    return pending.rows is None or pending.rows >= settings.min_new_rows


def _cooldown_end(tracker: RetrainTracker, policy: ModelPolicy) -> datetime | None:
    if tracker.last_job_ended_at is None:
        return None
    return tracker.last_job_ended_at + policy.retrain.cooldown


def _known_run(tracker: RetrainTracker, run_id: str) -> bool:
    if tracker.current_job is not None and tracker.current_job.run_id == run_id:
        return True
    return any(run.run_id == run_id for run in tracker.runs)


def _pending_detail(pending: PendingData) -> dict[str, object]:
    return {"pending_items": pending.items, "pending_rows": pending.rows}
