"""Envelopes the triggers build from what arrives (blobs, Event Hubs batches)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from orchestrator.messages import Envelope
from retrain.commands import DataItem, DataLanded


def data_landed_message_id(model: str, keys: Sequence[str]) -> str:
    """A stable id for a batch of data items: the same batch redelivered is the same message."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]
    return f"{model}:data:{digest}"


def data_landed_envelope(model: str, items: Sequence[DataItem], source: str) -> Envelope:
    """One DataLanded command for a delivery of data items. Its id is derived from the data, so
    a redelivered blob or batch is the same message and changes nothing."""
    return Envelope.new(
        "DataLanded",
        model,
        DataLanded(items=list(items), source=source),
        message_id=data_landed_message_id(model, [item.key for item in items]),
    )
