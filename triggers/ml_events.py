"""Azure ML run status events (`RunStatusChanged`, `RunCompleted`): a training run is checked
as soon as its workspace says it ended, instead of at its next poll (docs/retraining.md).

The workspace's Event Grid system topic sends them to the data-events hub, where the Event
Hubs trigger (triggers/data.py `data_events`) hands them here. Thin: event -> one
`TrainingJobEvent` per model training under the event's experiment -> handler. The command
is not an internal type (it carries no MAC): the handler believes only the training backend,
so a forged event can at most make it read a job's status early.

- malformed (not JSON, a field missing or mistyped, a subject naming another run):
  dead-lettered with the reason, by the caller;
- an experiment no model trains under, a run that is not the running job, a status that is
  not final: logged and skipped (the workspace runs other things; child steps of a pipeline
  send events too);
- a failure to handle it (the backend or the state store unreachable): logged and skipped,
  since the poll still scheduled for the job is the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.bootstrap import Runtime
    from orchestrator.handlers import Outcome
    from triggers.payloads import RunEvent

log = logging.getLogger(__name__)

DeadLetter = Callable[[str], None]


def handle_run_event(runtime: Runtime, event: RunEvent, dead_letter: DeadLetter) -> list[Outcome]:
    """One parsed run event through the handlers; returns each model's outcome."""
    from orchestrator.messages import Envelope, InvalidMessage
    from retrain.job_events import JOB_EVENT, event_message_id
    from triggers.payloads import monitor_breach, run_event_commands

    breach = monitor_breach(event)
    if breach is not None:
        return _monitor_signal(runtime, event, breach)
    commands = run_event_commands(event, runtime.policies)
    if not commands:
        log.info(
            "run event %s for %s ignored: no model trains under experiment %r",
            event.id,
            event.data.runId,
            event.data.experimentName,
        )
        return []
    outcomes: list[Outcome] = []
    for model, command in commands:
        try:
            envelope = Envelope.new(
                JOB_EVENT, model, command, message_id=event_message_id(command.run_id, event.id)
            )
            outcome = runtime.handlers.handle(envelope)
        except InvalidMessage as exc:
            dead_letter(exc.reason)
            continue
        except Exception:
            log.warning(
                "run event %s for %s/%s not handled; its poll stays the fallback",
                event.id,
                model,
                command.run_id,
                exc_info=True,
            )
            continue
        log.info(
            "run event %s (%s %s) -> %s: %s %s",
            event.id,
            command.run_id,
            command.run_status,
            model,
            outcome.status,
            outcome.reason or "",
        )
        outcomes.append(outcome)
    return outcomes


def _monitor_signal(runtime: Runtime, event: RunEvent, breach: str) -> list[Outcome]:
    """An Azure ML model monitor's threshold breach: the same decay retrain the app's own
    monitor starts, for each model listening to that monitor, within the same cooldown. A
    failure is logged: the monitor's next breach (its next run) signals again."""
    from retrain.monitor import signal_decision
    from triggers.payloads import monitored_by

    models = monitored_by(event, runtime.policies)
    if not models:
        log.info(
            "model monitor breach %s ignored: no policy listens to experiment %r",
            event.id,
            event.data.experimentName,
        )
        return []
    outcomes: list[Outcome] = []
    for model in models:
        decision = signal_decision(
            source="azureml-model-monitor",
            signal=event.data.experimentName,
            detail=breach,
            champion_version=None,
        )
        try:
            outcome = runtime.monitor.signal(model, decision)
        except Exception:
            log.warning(
                "model monitor breach %s for %s not handled", event.id, model, exc_info=True
            )
            continue
        log.info(
            "model monitor breach %s -> %s: %s %s",
            event.id,
            model,
            outcome.status,
            outcome.reason or "",
        )
        outcomes.append(outcome)
    return outcomes


def handle_run_events_in(
    runtime: Runtime, body: bytes, properties: dict[str, Any], source: str
) -> bool:
    """The run events of one Event Hubs event body, each handled. Returns False when the body
    held a malformed run event (dead-lettered whole, with the reason): the caller then takes
    nothing else from it."""
    from triggers.event_batches import describe
    from triggers.payloads import BadPayload, run_events_in

    try:
        events = run_events_in(body)
    except Exception as exc:  # a parser bug too: a raise here would hold the hub's batch
        reason = exc.reason if isinstance(exc, BadPayload) else describe(exc)
        runtime.dead_letters.record(source, reason, body, properties)
        return False

    for event in events:

        def dead_letter(reason: str, event_id: str = event.id) -> None:
            runtime.dead_letters.record(source, reason, body, properties | {"id": event_id})

        handle_run_event(runtime, event, dead_letter)
    return True
