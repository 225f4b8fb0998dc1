"""Dead-letter records for messages and events that can never be handled.

The Python worker's Service Bus binding cannot dead-letter a message itself (the SDK-type
binding that could is not used: docs/reliability.md says why), and Event Hubs has no
dead-letter queue at all, so a trigger that meets a message it can never handle records it
here, with the reason, and completes it: nothing is lost, nothing crash-loops.
One JSON blob per record in the `dead-letters` container of the state storage account.

A record never keeps a secret the sender put in a URL: every query string (a SAS token) and
any other `sig=` value are removed from the body and the reason
(`domain.data_location.redact_body`), so the record shows what was sent, minus the token.
Nor a person's bearer token: the envelope's `auth` is blanked (`redact_token`).

Records are listed and replayed by `python -m devhost.cli dead-letters` (docs/reliability.md):
a replay claims the record first (`claim_replay`, a conditional write that marks it replayed),
so two replays cannot both send it; the record is kept, marked, for the record.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from domain.data_location import redact_body, redact_text
from orchestrator import telemetry

REDACTED = "<redacted bearer token>"
REPLAY_FIELDS = ("replayed_at", "replayed_to", "replaying_at")
# The largest Event Hubs event (1 MB) and standard Service Bus message (256 KB) fit whole, so a
# replay sends the body as it came; a longer one is cut (and marked `body_truncated`).
MAX_BODY = 1_048_576


def redact_token(text: str) -> str:
    """The body with a person's bearer token (the envelope's `auth`) blanked: a dead letter is
    kept for diagnosis, and a still valid token must not outlive its message in storage."""
    if '"auth"' not in text:
        return text
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if not isinstance(document, dict) or not document.get("auth"):
        return text
    return json.dumps(document | {"auth": REDACTED})


_REASON_KIND = re.compile(r"^[A-Za-z][A-Za-z_. ]{0,47}$")


def reason_kind(reason: str) -> str:
    """The reason's lead (before its first ':', e.g. `data.url`, `body is not JSON`) when it
    is a plain phrase, else `other`: a metric's values stay few, and never carry data."""
    lead = reason.split(":", 1)[0].strip()
    return lead if ":" in reason and _REASON_KIND.match(lead) else "other"


class BlobDeadLetters:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def record(
        self, source: str, reason: str, body: bytes | str, properties: dict[str, Any] | None = None
    ) -> str:
        now = datetime.now(UTC)
        name = f"{source}/{now:%Y/%m/%d}/{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.json"
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        text = redact_body(redact_token(text))
        document = {
            "source": source,
            "reason": redact_text(reason),
            "dead_lettered_at": now.isoformat(),
            "properties": properties or {},
            "body": text[:MAX_BODY],
        }
        if len(text) > MAX_BODY:  # kept for diagnosis; a replay of it is refused
            document["body_truncated"] = len(text)
        self._container.upload_blob(name, json.dumps(document, default=str).encode())
        telemetry.count("dead_letters", source=source, reason=reason_kind(reason))
        return name

    def read(self, source: str | None = None) -> list[dict[str, Any]]:
        return [document for _, document in self.entries(source)]

    def entries(self, source: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(record name, record), oldest first within each source."""
        prefix = f"{source}/" if source else None
        return [
            (blob.name, json.loads(self._container.download_blob(blob.name).readall()))
            for blob in self._container.list_blobs(name_starts_with=prefix)
        ]

    def get(self, name: str) -> tuple[dict[str, Any], str] | None:
        """The record and its ETag; None when there is no such record."""
        try:
            downloader = self._container.download_blob(name)
        except ResourceNotFoundError:
            return None
        return json.loads(downloader.readall()), str(downloader.properties.etag)

    def claim_replay(
        self, name: str, record: dict[str, Any], etag: str, replayed_to: str
    ) -> dict[str, Any] | None:
        """Claim the record for a replay to `replayed_to` if it is still as read (`etag`): the
        claimed record, or None when it changed meanwhile (another replay claimed it). The
        record reads replayed only once `finish_replay` says the send went through."""
        marked = record | {
            "replaying_at": datetime.now(UTC).isoformat(),
            "replayed_to": replayed_to,
        }
        try:
            self._write(name, marked, etag)
        except ResourceModifiedError:
            return None
        return marked

    def finish_replay(self, name: str, claimed: dict[str, Any]) -> None:
        """The claimed record's send went through: it reads replayed from now on."""
        self._write(name, claimed | {"replayed_at": datetime.now(UTC).isoformat()}, None)

    def release_replay(self, name: str, record: dict[str, Any]) -> None:
        """Undo a claim whose send failed, so the record can be replayed again."""
        self._write(name, {k: v for k, v in record.items() if k not in REPLAY_FIELDS}, None)

    def _write(self, name: str, record: dict[str, Any], etag: str | None) -> None:
        condition: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        )
        self._container.upload_blob(
            name, json.dumps(record, default=str).encode(), overwrite=True, **condition
        )
