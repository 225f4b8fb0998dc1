"""New data lands: a blob under a model's data prefix (an Event Grid BlobCreated event), or a
batch of Event Hubs events.

Triggers only translate: binding payload -> DataLanded command -> handler. A payload that
can never be handled is dead-lettered with its reason; nothing is retried forever. So is data
from anywhere but the data account's blobs under the model's prefix
(`domain.data_location.check_data_uri`, via triggers/payloads.py).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from itertools import groupby
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from domain.policy import ModelPolicy
    from orchestrator.messages import Envelope
    from retrain.commands import DataItem

# Cold start: the orchestrator (pydantic models, clients) is imported on the first
# invocation, not when the host indexes the app.

log = logging.getLogger(__name__)

bp = func.Blueprint()


def data_landed(model: str, items: list[DataItem], source: str) -> Envelope:
    from triggers.envelopes import data_landed_envelope

    return data_landed_envelope(model, items, source)


@bp.event_grid_trigger(arg_name="event")
def data_blob_created(event: func.EventGridEvent) -> None:
    """A blob landed (Event Grid `Microsoft.Storage.BlobCreated`, pushed by the data account's
    subscription): the event carries the blob's URL and ETag, so one DataLanded item is made
    without the host or the app reading the blob. An event that is no blob's is
    dead-lettered; a blob under no model's prefix is logged once and ignored. A failure to
    record it raises: Event Grid redelivers (then its own dead-letter destination)."""
    from orchestrator.bootstrap import get_runtime
    from orchestrator.messages import InvalidMessage
    from triggers.payloads import (
        BadPayload,
        NotData,
        blob_created,
        log_ignored_once,
        parse_grid_event,
    )

    runtime = get_runtime()
    document = {
        "id": event.id,
        "eventType": event.event_type,
        "subject": event.subject,
        "data": event.get_json(),
    }
    try:
        found = blob_created(
            parse_grid_event(document), runtime.policies, runtime.settings.data_account
        )
    except BadPayload as exc:
        body = json.dumps(document, default=str)
        runtime.dead_letters.record("eventgrid", exc.reason, body, {"id": event.id})
        return
    if isinstance(found, NotData):
        log_ignored_once(found)
        return
    model, item = found
    try:
        outcome = runtime.handlers.handle(data_landed(model, [item], "eventgrid"))
    except InvalidMessage as exc:  # refused by the service layer (e.g. its data policy)
        body = json.dumps(document, default=str)
        runtime.dead_letters.record("eventgrid", exc.reason, body, {"id": event.id})
        return
    log.info("blob %s -> %s: %s", item.uri, model, outcome.status)


# Only a dead letter that cannot be written makes the function raise (every event is handled
# or dead-lettered inside the invocation, triggers/event_batches.py): the batch then waits,
# retried without limit, rather than the checkpoint moving past events nobody kept.
@bp.retry(
    strategy="exponential_backoff",
    max_retry_count="-1",
    minimum_interval="00:00:02",
    maximum_interval="00:02:00",
)
@bp.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%DATA_EVENTS_HUB%",
    connection="EventHubConnection",
    cardinality=func.Cardinality.MANY,
)
def data_events(events: list[func.EventHubEvent]) -> None:
    """A batch: every valid event is kept; one state write per model, not per event.

    An event that is no valid data event is dead-lettered at once. The valid ones are handled
    as one DataLanded per model; a model's batch that keeps failing is split down to single
    events and each that still fails is dead-lettered with its reason, before the checkpoint
    moves (`triggers.event_batches.settle`). Redelivery is idempotent (same data, same ids)."""
    from orchestrator.bootstrap import get_runtime
    from retrain.decide import items_over_cap
    from triggers.event_batches import describe, settle
    from triggers.ml_events import handle_run_events_in
    from triggers.payloads import BadPayload, parse_event

    runtime = get_runtime()
    by_model: dict[str, list[tuple[int, DataItem]]] = {}
    for index, event in enumerate(events):
        # Azure ML run events share the hub (the workspace's system topic): a hint to check a
        # training job now (triggers/ml_events.py); a malformed one is dead-lettered there.
        if not handle_run_events_in(runtime, event.get_body(), _properties(event), "eventhub"):
            continue
        try:
            pairs = parse_event(event.get_body(), runtime.policies, runtime.settings.data_account)
        except Exception as exc:  # a parser bug too: a raise here would hold the whole batch
            reason = exc.reason if isinstance(exc, BadPayload) else describe(exc)
            runtime.dead_letters.record("eventhub", reason, event.get_body(), _properties(event))
            continue
        counts = Counter(model for model, _ in pairs)
        over = [
            reason
            for model, count in counts.items()
            if (reason := items_over_cap(count, runtime.policies[model]))
        ]
        if over:  # the cap is per event: the whole event is refused, never taken in pieces
            runtime.dead_letters.record("eventhub", over[0], event.get_body(), _properties(event))
            continue
        for model, item in pairs:
            by_model.setdefault(model, []).append((index, item))
    dead: set[int] = set()  # an event with items for several models is one dead letter

    for model, pairs in _chunks(by_model, runtime.policies):

        def handle(batch: Sequence[tuple[int, DataItem]], model: str = model) -> None:
            outcome = runtime.handlers.handle(
                data_landed(model, [item for _, item in batch], "eventhub")
            )
            log.info("%d data event(s) -> %s: %s", len(batch), model, outcome.status)

        def dead_letter(pair: tuple[int, DataItem], reason: str, model: str = model) -> None:
            index = pair[0]
            if index in dead:
                return
            event = events[index]
            properties = _properties(event) | {"model": model}
            runtime.dead_letters.record("eventhub", reason, event.get_body(), properties)
            dead.add(index)
            log.error("dead-lettered event %s for %s: %s", event.sequence_number, model, reason)

        settle(pairs, handle, dead_letter)


def _chunks(
    by_model: dict[str, list[tuple[int, DataItem]]], policies: Mapping[str, ModelPolicy]
) -> Iterator[tuple[str, list[tuple[int, DataItem]]]]:
    """Each model's items in messages of at most its `max_items_per_event`, an event's items
    never split between two (each event is within the cap)."""
    for model, pairs in by_model.items():
        cap = policies[model].retrain.max_items_per_event
        chunk: list[tuple[int, DataItem]] = []
        for _, group in groupby(pairs, key=lambda pair: pair[0]):
            items = list(group)
            if chunk and len(chunk) + len(items) > cap:
                yield model, chunk
                chunk = []
            chunk.extend(items)
        if chunk:
            yield model, chunk


def _properties(event: func.EventHubEvent) -> dict[str, object]:
    return {"sequence_number": event.sequence_number, "partition_key": event.partition_key}
