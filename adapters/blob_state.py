"""State store and audit log on Blob Storage (Azurite locally, a real account in Azure).

One JSON blob per model aggregate, written with ETag conditions. The audit log is one
blob per entry, `audit/<model>/<version>-<seq>.json`, created with If-None-Match: * so a
re-written entry is a no-op (append-only, idempotent), named so that listing returns them in
order. Each record of a promotion also gets an empty index blob,
`audit-index/<model>/promotion/<promotion id>/<version>-<seq>`, and each run's end one under
`audit-index/<model>/runs/`: a promotion's page lists its own index and downloads only its own
records. The index blob is written after the record (so it never names a missing one) and
again by a repeated append (so a crash between the two is repaired by the redelivery).
Records written before the index existed: `BlobAuditLog.index_existing(model)`, once.

Pages follow the blob listing, oldest first (a listing only ascends: newest first would need a
second, reversed index); the continuation token wraps the listing's own marker with the prefix
it belongs to, so a token of another query is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient
from pydantic import BaseModel

from orchestrator.ports import (
    MAX_AUDIT_PAGE,
    RUN_ENDED_ACTIONS,
    AuditPage,
    AuditRecord,
    ConcurrencyConflict,
    InvalidContinuation,
)

log = logging.getLogger(__name__)

A = TypeVar("A", bound=BaseModel)

_STATE_PREFIX = "models/"
_AUDIT_PREFIX = "audit/"
_INDEX_PREFIX = "audit-index/"
_DOWNLOADERS = 8  # a page's records are downloaded this many at a time


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
            self._create(_record_blob(record.model, record.record_id), record.model_dump_json())
            for prefix in _index_prefixes(record):
                self._create(f"{prefix}{record.record_id}", "")

    def _create(self, name: str, body: str) -> None:
        try:
            self._container.upload_blob(name, body.encode(), overwrite=False)
        except ResourceExistsError:
            log.debug("audit blob %s already written", name)

    def page(
        self,
        model: str,
        *,
        promotion_id: str | None = None,
        run_ends: bool = False,
        limit: int = 100,
        continuation: str | None = None,
    ) -> AuditPage:
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValueError(f"limit must be 1..{MAX_AUDIT_PAGE}, not {limit}")
        if promotion_id is not None and run_ends:
            raise ValueError("a page is of a promotion or of the runs' ends, not both")
        if promotion_id is not None:
            prefix = _promotion_prefix(model, promotion_id)
        elif run_ends:
            prefix = _runs_prefix(model)
        else:
            prefix = _record_prefix(model)
        marker = _decode_token(continuation, prefix) if continuation else None
        pages = self._container.list_blob_names(
            name_starts_with=prefix, results_per_page=limit
        ).by_page(continuation_token=marker)
        try:
            names = list(next(pages, []))
        except HttpResponseError as exc:
            if marker is None:
                raise
            raise InvalidContinuation("continuation: the storage service refused it") from exc
        record_ids = [name[len(prefix) :].removesuffix(".json") for name in names]
        next_marker = pages.continuation_token  # type: ignore[attr-defined]
        return AuditPage(
            records=self._download(model, record_ids),
            continuation=_encode_token(prefix, next_marker) if next_marker else None,
        )

    def _download(self, model: str, record_ids: list[str]) -> list[AuditRecord]:
        def one(record_id: str) -> AuditRecord | None:
            try:
                data = self._container.download_blob(_record_blob(model, record_id)).readall()
            except ResourceNotFoundError:  # an index entry outliving its record (retention)
                log.warning("audit record %s/%s is indexed but gone", model, record_id)
                return None
            return AuditRecord.model_validate_json(data)

        if len(record_ids) <= 1:
            found = [one(record_id) for record_id in record_ids]
        else:
            with ThreadPoolExecutor(max_workers=min(_DOWNLOADERS, len(record_ids))) as pool:
                found = list(pool.map(one, record_ids))
        return [record for record in found if record is not None]

    def read(self, model: str, since_version: int = 0) -> list[AuditRecord]:
        """Every record of `model` from `since_version` on, following the pages. For tests
        and operators: the app itself reads pages."""
        records: list[AuditRecord] = []
        continuation = None
        while True:
            page = self.page(model, limit=MAX_AUDIT_PAGE, continuation=continuation)
            records.extend(r for r in page.records if r.aggregate_version >= since_version)
            if page.continuation is None:
                return records
            continuation = page.continuation

    def index_existing(self, model: str) -> int:
        """Index the records written before the index existed (idempotent; reads every record
        of the model once). Returns the index blobs written or found."""
        indexed = 0
        continuation = None
        while True:
            page = self.page(model, limit=MAX_AUDIT_PAGE, continuation=continuation)
            for record in page.records:
                for prefix in _index_prefixes(record):
                    self._create(f"{prefix}{record.record_id}", "")
                    indexed += 1
            if page.continuation is None:
                return indexed
            continuation = page.continuation


def _record_prefix(model: str) -> str:
    return f"{_AUDIT_PREFIX}{model}/"


def _record_blob(model: str, record_id: str) -> str:
    return f"{_record_prefix(model)}{record_id}.json"


def _promotion_prefix(model: str, promotion_id: str) -> str:
    # Quoted: a promotion id holding '/' cannot reach into another promotion's index.
    return f"{_INDEX_PREFIX}{model}/promotion/{quote(promotion_id, safe='')}/"


def _runs_prefix(model: str) -> str:
    return f"{_INDEX_PREFIX}{model}/runs/"


def _index_prefixes(record: AuditRecord) -> list[str]:
    prefixes = []
    if record.promotion_id:
        prefixes.append(_promotion_prefix(record.model, record.promotion_id))
    if record.action in RUN_ENDED_ACTIONS:
        prefixes.append(_runs_prefix(record.model))
    return prefixes


def _encode_token(prefix: str, marker: str) -> str:
    document = json.dumps({"p": prefix, "m": marker}, separators=(",", ":"))
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def _decode_token(token: str, prefix: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
    except (ValueError, binascii.Error) as exc:
        raise InvalidContinuation("continuation: not a token this API gave") from exc
    if not isinstance(document, dict) or not isinstance(document.get("m"), str):
        raise InvalidContinuation("continuation: not a token this API gave")
    if document.get("p") != prefix:
        raise InvalidContinuation("continuation: given for another query (model or promotion)")
    return str(document["m"])
