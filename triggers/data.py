"""New data lands: a blob under a model's data prefix, or a batch of Event Hubs events.

Triggers only translate: binding payload -> DataLanded command -> handler. A payload that
can never be handled is dead-lettered with its reason; nothing is retried forever. So is data
from anywhere but the data account's blobs under the model's prefix
(`domain.data_location.check_data_uri`, via triggers/payloads.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from orchestrator.messages import Envelope
    from retrain.commands import DataItem

# Cold start: the orchestrator (pydantic models, clients) is imported on the first
# invocation, not when the host indexes the app.

log = logging.getLogger(__name__)

bp = func.Blueprint()


def data_landed(model: str, items: list[DataItem], source: str) -> Envelope:
    from triggers.envelopes import data_landed_envelope

    return data_landed_envelope(model, items, source)


@bp.blob_trigger(
    arg_name="blob",
    path="%DATA_CONTAINER%/{name}",
    connection="DataStorage",
    source=func.BlobSource.EVENT_GRID,
)
def data_blob_landed(blob: func.InputStream) -> None:
    from urllib.parse import quote

    from orchestrator.bootstrap import get_runtime
    from triggers.payloads import (
        BadPayload,
        blob_item,
        checked_uri,
        policy_for_blob,
        split_blob_name,
    )

    runtime = get_runtime()
    name = blob.name or ""
    try:
        container, path = split_blob_name(name)
    except BadPayload as exc:
        runtime.dead_letters.record("blob", exc.reason, name)
        return
    policy = policy_for_blob(runtime.policies, container, path)
    if policy is None:
        log.info("blob %s matches no model's data prefix: ignored", name)
        return
    properties = blob.blob_properties or {}
    etag = properties.get("ETag") or properties.get("Etag") or properties.get("etag")
    account = runtime.settings.data_account
    try:
        # The blob's own URI (on the data account, so it passes), checked like any other.
        uri = blob.uri or f"{account.blob_endpoint.rstrip('/')}/{quote(name)}"
        uri = checked_uri(uri, policy, account, "blob uri")
    except BadPayload as exc:
        runtime.dead_letters.record("blob", exc.reason, name)
        return
    item = blob_item(name, uri, etag, blob.length)
    outcome = runtime.handlers.handle(data_landed(policy.model, [item], "blob"))
    log.info("blob %s -> %s: %s", name, policy.model, outcome.status)


@bp.retry(
    strategy="exponential_backoff",
    max_retry_count="8",
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

    A transient failure raises, and the retry policy redelivers the same batch before the
    checkpoint moves; the redelivery is idempotent (same data, same message ids)."""
    from orchestrator.bootstrap import get_runtime
    from triggers.payloads import BadPayload, group_by_model, parse_event

    runtime = get_runtime()
    pairs = []
    for event in events:
        body = event.get_body()
        try:
            pairs.extend(parse_event(body, runtime.policies, runtime.settings.data_account))
        except BadPayload as exc:
            runtime.dead_letters.record(
                "eventhub",
                exc.reason,
                body,
                {"sequence_number": event.sequence_number, "partition_key": event.partition_key},
            )
    for model, items in group_by_model(pairs).items():
        outcome = runtime.handlers.handle(data_landed(model, items, "eventhub"))
        log.info("%d data event(s) -> %s: %s", len(items), model, outcome.status)
