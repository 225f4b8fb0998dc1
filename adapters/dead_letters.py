"""Dead-letter records for messages and events that can never be handled.

The Python worker's Service Bus binding cannot dead-letter a message itself, and Event Hubs
has no dead-letter queue at all, so a trigger that meets a message it can never handle
records it here, with the reason, and completes it: nothing is lost, nothing crash-loops.
One JSON blob per record in the `dead-letters` container of the state storage account.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.storage.blob import ContainerClient


class BlobDeadLetters:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def record(
        self, source: str, reason: str, body: bytes | str, properties: dict[str, Any] | None = None
    ) -> str:
        now = datetime.now(UTC)
        name = f"{source}/{now:%Y/%m/%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.json"
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        document = {
            "source": source,
            "reason": reason,
            "dead_lettered_at": now.isoformat(),
            "properties": properties or {},
            "body": text[:200_000],
        }
        self._container.upload_blob(name, json.dumps(document, default=str).encode())
        return name

    def read(self, source: str | None = None) -> list[dict[str, Any]]:
        records = []
        for blob in self._container.list_blobs(name_starts_with=f"{source}/" if source else None):
            records.append(json.loads(self._container.download_blob(blob.name).readall()))
        return records
