"""`dead-letters list` and `dead-letters replay`: every place a message that could not be
handled ends up, in one list, and a way to send one back once it can be handled.

Three stores (`--source`):
- `records`: the `dead-letters` container (adapters/dead_letters.py): what the triggers
  dead-lettered themselves (Service Bus messages that can never be handled, bad or failing Event
  Hubs events, bad blob names). A replay marks the record replayed (kept, for the record).
- `poison-queues`: every `<queue>-poison` storage queue of the app's account: locally, what the
  queue consumer gave up on (a message that failed every delivery, one it could not even read);
  also the host's `webjobs-blobtrigger-poison` (listed, not replayable). A replay deletes it.
- `service-bus`: when the settings name a Service Bus, the dead-letter queue of the
  orchestrator and approvals queues (what Service Bus dead-lettered). A replay completes it.

A replay sends the original body, byte for byte, to the queue it came from (an internal
message keeps the bytes its MAC covers, so it passes the check again), exactly once: the
record is claimed (marked, or received under a lock) before the send and released if the send
fails. A person's command cannot be replayed: its token was not kept (send it again instead).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from devhost.cli.commands import BadInput, CliError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from orchestrator.bootstrap import Runtime

SOURCES = ("records", "poison-queues", "service-bus", "event-grid")
# Where an Event Grid subscription dead-letters what it could not deliver (infra/storage.bicep;
# devhost's emulated subscription writes there too).
EVENT_GRID_DEAD_LETTERS = "eventgrid-dead-letters"
LIST_LIMIT = 100  # per queue: Service Bus peeks this many, a storage queue at most 32


@dataclass(frozen=True)
class DeadLetterView:
    """One dead letter, whatever its store. `replay_to` is None when it cannot be replayed."""

    id: str
    source: str  # the store: records, poison-queues, service-bus
    origin: str  # where it was dead-lettered: a queue, "eventhub", "blob"
    reason: str
    description: str = ""
    dead_lettered_at: str | None = None
    replay_to: str | None = None
    replayed_at: str | None = None
    body: str = ""
    properties: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "origin": self.origin,
            "reason": self.reason,
            "description": self.description,
            "dead_lettered_at": self.dead_lettered_at,
            "replay_to": self.replay_to,
            "replayed_at": self.replayed_at,
            "properties": self.properties,
            "body": self.body,
        }


@dataclass(frozen=True)
class Replayed:
    id: str
    sent_to: str
    settled: str  # what became of the dead letter: "marked replayed", "deleted", "completed"

    def to_json(self) -> dict[str, Any]:
        return {"replayed": True, "id": self.id, "sent_to": self.sent_to, "settled": self.settled}


# --------------------------------------------------------------------------- listing


def sources_for(runtime: Runtime, source: str | None) -> tuple[str, ...]:
    if source is not None:
        if source == "service-bus" and not runtime.settings.uses_service_bus:
            raise BadInput("--source service-bus: the settings name no Service Bus")
        return (source,)
    return tuple(s for s in SOURCES if s != "service-bus" or runtime.settings.uses_service_bus)


def list_dead_letters(runtime: Runtime, source: str | None = None) -> list[DeadLetterView]:
    found: list[DeadLetterView] = []
    for store in sources_for(runtime, source):
        found.extend(_LISTERS[store](runtime))
    return sorted(found, key=lambda view: view.dead_lettered_at or "")


def _record_target(runtime: Runtime, origin: str) -> str | None:
    settings = runtime.settings
    return {
        "orchestrator": settings.orchestrator_queue,
        "approvals": settings.approvals_queue,
        "eventhub": f"eventhub:{settings.data_events_hub}",
    }.get(origin)


def _records(runtime: Runtime) -> list[DeadLetterView]:
    views = []
    for name, record in runtime.dead_letters.entries():
        origin = str(record.get("source") or name.split("/", 1)[0])
        views.append(
            DeadLetterView(
                id=f"records:{name}",
                source="records",
                origin=origin,
                reason=str(record.get("reason", "")),
                dead_lettered_at=record.get("dead_lettered_at"),
                replay_to=_record_target(runtime, origin),
                replayed_at=record.get("replayed_at"),
                body=str(record.get("body", "")),
                properties=dict(record.get("properties") or {}),
            )
        )
    return views


def _poison_queue_names(runtime: Runtime) -> list[str]:
    from adapters.storage_queue_bus import POISON_SUFFIX

    return sorted(
        queue.name
        for queue in runtime.queue_service.list_queues()
        if queue.name.endswith(POISON_SUFFIX)
    )


def _poison_queues(runtime: Runtime) -> list[DeadLetterView]:
    from adapters.storage_queue_bus import peek_dead_letters

    views = []
    for poison in _poison_queue_names(runtime):
        queue = runtime.queue_service.get_queue_client(poison)
        for message_id, record in peek_dead_letters(queue, LIST_LIMIT):
            origin = str(record.get("queue") or poison)
            views.append(
                DeadLetterView(
                    id=f"queue:{poison}:{message_id}",
                    source="poison-queues",
                    origin=origin,
                    reason=str(record.get("reason") or record.get("Error") or ""),
                    dead_lettered_at=record.get("dead_lettered_at"),
                    replay_to=record.get("queue") if "body" in record else None,
                    body=str(record.get("body", "")),
                    properties={
                        key: value for key, value in record.items() if key not in ("reason", "body")
                    },
                )
            )
    return views


def _service_bus_dead_letters(runtime: Runtime) -> Any:
    from adapters.service_bus import ServiceBusDeadLetters

    settings = runtime.settings
    return ServiceBusDeadLetters.connect(
        namespace=settings.service_bus_namespace,
        connection_string=settings.service_bus_connection_string,
    )


def _service_bus(runtime: Runtime) -> list[DeadLetterView]:
    from adapters.dead_letters import redact_token
    from adapters.service_bus import message_body

    dead_letters = _service_bus_dead_letters(runtime)
    views = []
    for queue in (runtime.settings.orchestrator_queue, runtime.settings.approvals_queue):
        for message in dead_letters.peek(queue, LIST_LIMIT):
            enqueued = message.enqueued_time_utc
            views.append(
                DeadLetterView(
                    id=f"service-bus:{queue}:{message.sequence_number}",
                    source="service-bus",
                    origin=queue,
                    reason=str(message.dead_letter_reason or ""),
                    description=str(message.dead_letter_error_description or ""),
                    dead_lettered_at=enqueued.isoformat() if enqueued else None,
                    replay_to=queue,
                    # A person's bearer token is never shown: blanked as the records are.
                    body=redact_token(message_body(message).decode("utf-8", errors="replace")),
                    properties={
                        "message_id": str(message.message_id),
                        "delivery_count": message.delivery_count,
                    },
                )
            )
    return views


def _event_grid(runtime: Runtime) -> list[DeadLetterView]:
    """Event Grid's own dead letters: each blob a JSON array of events (devhost: one event),
    each with `deadLetterReason`. Not replayable: upload the blob again, or `send-event`."""
    from azure.core.exceptions import ResourceNotFoundError

    container = runtime.blob_service.get_container_client(EVENT_GRID_DEAD_LETTERS)
    views = []
    try:
        blobs = list(container.list_blobs())
    except ResourceNotFoundError:
        return []
    for blob in blobs[:LIST_LIMIT]:
        try:
            document = json.loads(container.download_blob(blob.name).readall())
        except ValueError:
            document = [{"deadLetterReason": "unreadable dead-letter blob"}]
        for index, event in enumerate(document if isinstance(document, list) else [document]):
            if not isinstance(event, dict):
                continue
            views.append(
                DeadLetterView(
                    id=f"event-grid:{blob.name}:{index}",
                    source="event-grid",
                    origin="eventgrid",
                    reason=str(event.get("deadLetterReason", "")),
                    description=str(event.get("lastDeliveryOutcome", "")),
                    dead_lettered_at=blob.last_modified.isoformat() if blob.last_modified else None,
                    body=json.dumps(event)[:4000],
                    properties={"attempts": event.get("deliveryAttempts")},
                )
            )
    return views


_LISTERS = {
    "records": _records,
    "poison-queues": _poison_queues,
    "service-bus": _service_bus,
    "event-grid": _event_grid,
}


# --------------------------------------------------------------------------- replay


def _refuse_a_persons_command(body: str, what: str) -> None:
    from adapters.dead_letters import REDACTED

    if REDACTED in body:
        raise BadInput(
            f"{what} is a person's command whose bearer token was not kept: it would be "
            "refused; send it again (approve, rollback, ...) instead"
        )


def replay_dead_letter(runtime: Runtime, dead_letter_id: str) -> Replayed:
    store, _, rest = dead_letter_id.partition(":")
    replayers = {"records": _replay_record, "queue": _replay_poison, "service-bus": _replay_sb}
    if store not in replayers or not rest:
        raise BadInput(
            f"{dead_letter_id!r} is no dead-letter id (records:..., queue:..., service-bus:...; "
            "see `dead-letters list`)"
        )
    return replayers[store](runtime, dead_letter_id, rest)


# A replay claimed this long ago that never finished died on the way: it may be taken over.
STALE_REPLAY = timedelta(minutes=10)


def _replay_record(runtime: Runtime, dead_letter_id: str, name: str) -> Replayed:
    records = runtime.dead_letters
    found = records.get(name)
    if found is None:
        raise BadInput(f"no dead letter {dead_letter_id!r}")
    record, etag = found
    if record.get("replayed_at"):
        raise BadInput(
            f"{dead_letter_id} was replayed already, at {record['replayed_at']} "
            f"(to {record.get('replayed_to')})"
        )
    origin = str(record.get("source", ""))
    target = _record_target(runtime, origin)
    if target is None:
        raise BadInput(
            f"{dead_letter_id} came from {origin or 'nowhere known'}: nothing to send it back to "
            "(a blob's record: upload the blob again under a valid name)"
        )
    body = str(record.get("body", ""))
    if record.get("body_truncated"):
        raise BadInput(
            f"{dead_letter_id}: its body ({record['body_truncated']} characters) was cut when "
            "it was recorded; a replay would not be the message that came"
        )
    _refuse_a_persons_command(body, dead_letter_id)
    started = record.get("replaying_at")
    if started and datetime.now(UTC) - datetime.fromisoformat(str(started)) < STALE_REPLAY:
        raise CliError(
            f"{dead_letter_id} is being replayed (since {started}); a replay that died is "
            f"taken over after {int(STALE_REPLAY.total_seconds() // 60)} minutes"
        )
    # A replay that died between its claim and its send is taken over: at worst the message
    # goes twice under one id (`replay-<name>`), and the app drops the second as a duplicate.
    claimed = records.claim_replay(name, record, etag, target)
    if claimed is None:
        raise CliError(f"{dead_letter_id} changed meanwhile (another replay?): list it again")
    try:
        _send(runtime, target, body.encode(), message_id=f"replay-{name}")
    except Exception:
        records.release_replay(name, claimed)
        raise
    records.finish_replay(name, claimed)
    return Replayed(dead_letter_id, target, "marked replayed")


def _replay_poison(runtime: Runtime, dead_letter_id: str, rest: str) -> Replayed:
    from adapters.storage_queue_bus import send_raw, take_dead_letter

    poison, _, message_id = rest.partition(":")
    if not message_id:
        raise BadInput(f"{dead_letter_id!r}: expected queue:<poison queue>:<message id>")
    queue = runtime.queue_service.get_queue_client(poison)
    taken = take_dead_letter(queue, message_id)
    if taken is None:
        raise BadInput(f"no dead letter {dead_letter_id!r} (replayed or removed meanwhile?)")
    message, record = taken
    target = record.get("queue")
    if not target or "body" not in record:
        raise BadInput(f"{dead_letter_id} is not a record of ours: nothing to send back")
    _refuse_a_persons_command(str(record["body"]), dead_letter_id)
    send_raw(runtime.queue(str(target)), str(record["body"]).encode())
    queue.delete_message(message.id, message.pop_receipt)
    return Replayed(dead_letter_id, str(target), "deleted")


def _replay_sb(runtime: Runtime, dead_letter_id: str, rest: str) -> Replayed:
    queue, _, sequence = rest.rpartition(":")
    if not queue or not sequence.isdigit():
        raise BadInput(f"{dead_letter_id!r}: expected service-bus:<queue>:<sequence number>")
    if not runtime.settings.uses_service_bus:
        raise BadInput("the settings name no Service Bus")
    from adapters.dead_letters import redact_token

    def refuse(body: bytes) -> None:
        # A person's command carries their (still valid?) token: never sent again on their
        # behalf by whoever runs the CLI. They send it again themselves.
        if redact_token(body.decode("utf-8", errors="replace")) != body.decode(
            "utf-8", errors="replace"
        ):
            raise BadInput(
                f"{dead_letter_id} is a person's command (it carries their token): it is not "
                "sent again on their behalf; they send it again (approve, rollback, ...)"
            )

    sent = _service_bus_dead_letters(runtime).replay(queue, int(sequence), refuse)
    if sent is None:
        raise BadInput(f"no dead letter {dead_letter_id!r} (replayed or removed meanwhile?)")
    return Replayed(dead_letter_id, queue, "completed")


def _send(runtime: Runtime, target: str, body: bytes, message_id: str) -> None:
    """To an app queue through the app's own bus (Service Bus or the local storage queue), or
    to the data event hub (in Azure through its connection; locally its stand-in queue)."""
    if not target.startswith("eventhub:"):
        runtime.bus_for(target).send_raw(body, message_id)
        return
    hub = target.removeprefix("eventhub:")
    settings = runtime.settings
    if not settings.uses_event_hubs:
        from adapters.storage_queue_bus import send_raw
        from devhost.host.connections import local_queue_name

        send_raw(runtime.queue(local_queue_name(hub)), body)
        return
    from azure.eventhub import EventData

    from devhost.cli.events import event_hub_producer_for

    with event_hub_producer_for(runtime, hub) as producer:
        producer.send_batch([EventData(body)])


# --------------------------------------------------------------------------- rendering


def render_dead_letters(views: Sequence[DeadLetterView]) -> list[RenderableType]:
    from rich.markup import escape
    from rich.table import Table

    if not views:
        return ["No dead letters."]
    table = Table(title=f"Dead letters ({len(views)})", title_justify="left")
    for column in ("id", "origin", "when", "reason", "replay"):
        table.add_column(column, overflow="fold")
    for view in views:
        reason = view.reason + (f" ({view.description})" if view.description else "")
        if view.replayed_at:
            replay = f"replayed {view.replayed_at}"
        else:
            replay = f"-> {view.replay_to}" if view.replay_to else "not replayable"
        table.add_row(
            escape(view.id),
            escape(view.origin),
            escape(view.dead_lettered_at or "-"),
            escape(reason[:300]),
            escape(replay),
        )
    return [table, "Replay one with: python -m devhost.cli dead-letters replay ID"]


def render_replayed(replayed: Replayed) -> list[RenderableType]:
    from rich.markup import escape

    return [
        f"Replayed {escape(replayed.id)} to {escape(replayed.sent_to)}; "
        f"the dead letter is {replayed.settled}."
    ]
