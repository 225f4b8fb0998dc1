"""State store and audit log on Blob Storage (Azurite locally, a real account in Azure).

One JSON blob per model aggregate, written with ETag conditions. The audit log is one
blob per entry, created with If-None-Match: * so a re-written entry is a no-op (append-only,
idempotent), named so that listing returns them in order.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient
from pydantic import BaseModel

from orchestrator.ports import AuditRecord, ConcurrencyConflict

log = logging.getLogger(__name__)

A = TypeVar("A", bound=BaseModel)

_STATE_PREFIX = "models/"
_AUDIT_PREFIX = "audit/"


def ensure_container(container: ContainerClient) -> ContainerClient:
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return container


class BlobStateStore(Generic[A]):
    """Aggregates of type `aggregate_type`, which must have an int `version` field."""

    def __init__(
        self,
        container: ContainerClient,
        aggregate_type: type[A],
        new_aggregate: Callable[[str], A],
        max_attempts: int = 20,
    ) -> None:
        self._container = container
        self._type = aggregate_type
        self._new = new_aggregate
        self._max_attempts = max_attempts

    def _blob(self, key: str) -> str:
        return f"{_STATE_PREFIX}{key}.json"

    def load(self, key: str) -> tuple[A, str | None]:
        try:
            downloader = self._container.download_blob(self._blob(key))
        except ResourceNotFoundError:
            return self._new(key), None
        data = downloader.readall()
        return self._type.model_validate_json(data), downloader.properties.etag

    def save(self, key: str, aggregate: A, etag: str | None) -> str:
        body = aggregate.model_dump_json().encode()
        blob = self._container.get_blob_client(self._blob(key))
        try:
            if etag is None:
                result = blob.upload_blob(body, overwrite=False)
            else:
                result = blob.upload_blob(
                    body, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ConcurrencyConflict(f"{key} changed since it was read") from exc
        return str(result["etag"])

    def update(
        self,
        key: str,
        change: Callable[[A], A | None],
        loaded: tuple[A, str | None] | None = None,
    ) -> tuple[A, bool]:
        """Optimistic concurrency: a conflicting write reloads, re-applies and retries."""
        for attempt in range(self._max_attempts):
            if attempt == 0 and loaded is not None:
                current, etag = loaded
            else:
                current, etag = self.load(key)
            changed = change(current)
            if changed is None:
                return current, False
            bumped = changed.model_copy(update={"version": current.version + 1})  # type: ignore[attr-defined]
            try:
                self.save(key, bumped, etag)
            except ConcurrencyConflict:
                # Jittered backoff: 16 writers retrying in lock-step would collide again.
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
                continue
            return bumped, True
        raise ConcurrencyConflict(f"{key}: gave up after {self._max_attempts} conflicting writes")

    def list_keys(self) -> list[str]:
        return [
            blob.name[len(_STATE_PREFIX) : -len(".json")]
            for blob in self._container.list_blobs(name_starts_with=_STATE_PREFIX)
        ]


class BlobAuditLog:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def append(self, records: Sequence[AuditRecord]) -> None:
        for record in records:
            name = f"{_AUDIT_PREFIX}{record.model}/{record.record_id}.json"
            try:
                self._container.upload_blob(
                    name, record.model_dump_json().encode(), overwrite=False
                )
            except ResourceExistsError:
                log.debug("audit record %s already written", name)

    def read(self, model: str, since_version: int = 0) -> list[AuditRecord]:
        prefix = f"{_AUDIT_PREFIX}{model}/"
        records = []
        for blob in self._container.list_blobs(name_starts_with=prefix):
            version = int(blob.name[len(prefix) :].split("-", 1)[0])
            if version < since_version:
                continue
            data = self._container.download_blob(blob.name).readall()
            records.append(AuditRecord.model_validate_json(data))
        return records
