"""The data ledger (orchestrator/ports.py `DataLedger`) on Blob Storage: the keys a model has
seen and the data waiting for its next job, beside (not inside) its aggregate.

- Pending items are the claims: `pending/{model}/{key hash}`, one small blob per new item,
  created with If-None-Match: * so concurrent events never contend. Its metadata carries who
  claimed it (a hash of the message id), when, with which retention window, when it landed,
  its rows and its URI, so one listing answers "what is pending" without reading a blob.
- Trained keys: `dedup/{model}/{shard}.json`, SHARDS small JSON blobs by key hash, each a map
  key hash -> [claimant hash, seen at (epoch seconds)], written when a job's data is released
  (ETag conditions; a conflict re-reads and re-applies), before the pending blobs go. A write
  drops keys seen longer ago than the retention window. A claim reads its key's shard AFTER
  its pending blob exists, so a key being released is seen in one place or the other.
- Manifests: `manifests/{model}/{run id}.json`, the items a job takes, created once (the first
  writer wins; a redelivered submit reads the same list). Kept: a redelivered submit must
  find the same list, and a forced retrain with nothing new trains on the last run's.
- Release, in bounded chunks: `releasing/{model}/{run id}`, an empty marker whose metadata
  counts the manifest's items released (a prefix of its list in key-shard order, so a chunk
  writes each shard it touches once). Each `release` call writes at
  most `limit` more keys into their shards, deletes their pending blobs (batches of 256) and
  saves the count; the last one marks the manifest `released` and then deletes the marker.
  While the marker exists, `pending`, `seal` and a redelivered `claim` skip every item its
  manifest names, so a release cut short by a crash, or still going when the next window
  closes, never lets an item be trained twice. Readers read the markers before they list the
  pending blobs: a marker is deleted only after all its items' blobs are.

Per new item: one pending create and one shard read (two requests: a storm of events on one
model is bound by the store's request rate, not by contention); data already trained costs a
delete more. A window's close: one listing of markers, one listing of pending blobs, one
manifest write; each release call: one manifest read, a read and a write per shard its chunk
touches, one batch delete per 256 items, one marker write.

Tables were measured on Azurite and rejected: inserts slow down as the table grows (4 ms at
10k rows, 10 ms at 50k), where a shard's size stays bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, ContainerClient

from orchestrator.ports import ConcurrencyConflict
from retrain.commands import DATA_SAMPLE, DataItem, PendingData

log = logging.getLogger(__name__)

SHARDS = 4096  # key-index blobs per model: ~250 keys each at a million keys
_BATCH = 256  # blobs per batch delete (the service's limit)
# A release marker's count: of the manifest's items by key shard under _DONE_BY_SHARD; under
# "done" (markers started before, or rewritten by, the ledger that released in the manifest's
# own order) a prefix of the manifest's list. Two keys, so neither reads the other's count.
_DONE_BY_SHARD = "done_by_shard"
_DELETED = frozenset({202, 404})  # a batch delete's per-blob answers that mean "gone"
_URI_METADATA_LIMIT = 2000  # longer (or non-ASCII) URIs are read from the pending blob's body
_T = TypeVar("_T")
_R = TypeVar("_R")


def key_hash(key: str) -> str:
    """80 bits of SHA-256: collisions are negligible at millions of keys per model."""
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def shard_of(hashed: str, shards: int = SHARDS) -> int:
    return int(hashed[:8], 16) % shards


def claimant_hash(claimant: str) -> str:
    return hashlib.sha256(claimant.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Pending:
    name: str
    landed_ms: int
    rows: int | None
    uri: str | None  # None: too long for metadata, in the body
    claimant: str  # "" for an item pending from before claims moved into its blob
    seen: int  # when its key was claimed (epoch seconds); 0 when not recorded
    keep: int  # the retention its claim was made with (seconds); 0 when not recorded


@dataclass(frozen=True)
class _Claim:
    """One message's claim: who, when, and the retention window it is made with."""

    who: str
    seen_at: int  # epoch seconds
    horizon: int  # keys seen before this (epoch seconds) are forgotten
    landed_ms: int
    keep: int  # seconds


def _pending_metadata(item: DataItem, claim: _Claim) -> dict[str, str]:
    metadata = {
        "landed": str(claim.landed_ms),
        "rows": "" if item.rows is None else str(item.rows),
        "claimant": claim.who,
        "seen": str(claim.seen_at),
        "keep": str(claim.keep),
    }
    if item.uri.isascii() and item.uri.isprintable() and len(item.uri) <= _URI_METADATA_LIMIT:
        metadata["uri"] = item.uri
    return metadata


class BlobDataLedger:
    def __init__(
        self,
        container: ContainerClient,
        *,
        shards: int = SHARDS,
        workers: int = 8,
        max_attempts: int = 50,
    ) -> None:
        self._container = container
        self._shards = shards
        self._workers = workers
        self._max_attempts = max_attempts

    # ------------------------------------------------------------------ names

    def shard_name(self, model: str, shard: int) -> str:
        return f"dedup/{model}/{shard:04x}.json"

    @staticmethod
    def _pending_prefix(model: str) -> str:
        return f"pending/{model}/"

    @staticmethod
    def _manifest_name(model: str, run_id: str) -> str:
        return f"manifests/{model}/{run_id}.json"

    @staticmethod
    def _releasing_prefix(model: str) -> str:
        return f"releasing/{model}/"

    # ------------------------------------------------------------------ the port

    def claim(
        self,
        model: str,
        items: Sequence[DataItem],
        claimant: str,
        now: datetime,
        keep_for: timedelta,
    ) -> list[DataItem]:
        unique: dict[str, DataItem] = {}
        for item in items:  # the same key twice in one message counts once
            unique.setdefault(key_hash(item.key), item)
        claim = _Claim(
            who=claimant_hash(claimant),
            seen_at=int(now.timestamp()),
            horizon=int(now.timestamp()) - int(keep_for.total_seconds()),
            landed_ms=int(now.timestamp() * 1000),
            keep=int(keep_for.total_seconds()),
        )
        taken = _Lazy(lambda: self._taken(model))  # read only if a redelivery needs it

        def trained(hashed: str) -> list[Any] | None:
            """The key's entry in the index of trained keys, if seen within the window: read
            for each key after its own create (never a read another key made earlier, which
            a release may have overtaken since)."""
            known = self._read_shard(model, shard_of(hashed, self._shards)).get(hashed)
            return known if known is not None and known[1] >= claim.horizon else None

        def claim_one(hashed: str) -> bool:
            return self._claim_one(model, hashed, unique[hashed], claim, taken, trained)

        counted = self._map(claim_one, list(unique))
        return [item for item, count in zip(unique.values(), counted, strict=True) if count]

    def _claim_one(
        self,
        model: str,
        hashed: str,
        item: DataItem,
        claim: _Claim,
        taken: _Lazy[set[str]],
        trained: Callable[[str], list[Any] | None],
    ) -> bool:
        """Claim one key: its pending blob is the claim (created once, If-None-Match: *), so
        a new item costs one create and one shard read, and concurrent events never contend.
        The index of trained keys is read AFTER the pending blob exists: a release writes its
        keys there before it deletes their pending blobs, so a key being released is seen
        either way."""
        name = self._pending_name(model, hashed)
        blob = self._container.get_blob_client(name)
        for _ in range(self._max_attempts):
            try:
                blob.upload_blob(
                    _dump({"uri": item.uri, "key": item.key, "rows": item.rows}),
                    overwrite=False,
                    metadata=_pending_metadata(item, claim),
                )
            except ResourceExistsError:
                pass
            else:
                if trained(hashed) is None:
                    return True
                # Data a job already trained on: a duplicate; its pending blob goes again.
                with contextlib.suppress(ResourceNotFoundError):
                    blob.delete_blob()
                return False
            try:
                properties = blob.get_blob_properties()
            except ResourceNotFoundError:
                continue  # released between the two calls: try again
            metadata = dict(properties.metadata or {})
            owner, seen = metadata.get("claimant"), metadata.get("seen", "")
            if owner is None:  # pending from before claims moved here: its key is in a shard
                known = trained(hashed)
                owner, seen = (known[0], str(known[1])) if known else (None, "")
                if owner is not None:  # that shard entry is this item's own claim
                    return owner == claim.who and name not in taken.get()
            expired = owner is None or not seen.isdigit() or int(seen) < claim.horizon
            if not expired and owner != claim.who:
                return False  # another message's key
            if name in taken.get():
                return False  # a job has taken it: a duplicate, whoever claims it now
            if expired:
                # Claimed longer ago than the window: forgotten, so claimed afresh by this
                # message (the item keeps its first landing).
                metadata.update(claimant=claim.who, seen=str(claim.seen_at), keep=str(claim.keep))
                try:
                    blob.set_blob_metadata(
                        metadata,
                        etag=properties.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
                return True
            # A redelivery of the claiming message, its item still pending, unless an earlier
            # delivery created it for data already trained and died before deleting it.
            if trained(hashed) is None:
                return True
            with contextlib.suppress(ResourceNotFoundError):
                blob.delete_blob()
            return False
        raise ConcurrencyConflict(f"{model}: pending item {hashed} kept changing")

    def pending(self, model: str) -> PendingData:
        listed = self._untaken(model)
        rows: int | None = 0
        for item in listed:
            rows = None if rows is None or item.rows is None else rows + item.rows
        oldest = sorted(listed, key=_age)[:DATA_SAMPLE]
        newest = max((item.landed_ms for item in listed), default=None)
        return PendingData(
            items=len(listed),
            rows=rows,
            sample=self._uris(oldest),
            newest_landed_at=None if not newest else datetime.fromtimestamp(newest / 1000, UTC),
        )

    def seal(self, model: str, run_id: str, limit: int) -> list[str]:
        existing = self.manifest(model, run_id)
        if existing is not None:
            return existing
        taken = self._drop_trained(model, sorted(self._untaken(model), key=_age)[:limit])
        uris = self._uris(taken)
        body = {
            "run_id": run_id,
            "items": [
                {
                    "pending": item.name,
                    "uri": uri,
                    "claimant": item.claimant,
                    "seen": item.seen,
                    "keep": item.keep,
                }
                for item, uri in zip(taken, uris, strict=True)
            ],
        }
        try:
            self._container.upload_blob(
                self._manifest_name(model, run_id), _dump(body), overwrite=False
            )
        except ResourceExistsError:  # another dispatch sealed it first: its list is the one
            return self.manifest(model, run_id) or []
        return list(dict.fromkeys(uris))

    def _drop_trained(self, model: str, items: list[_Pending]) -> list[_Pending]:
        """The items whose key no job has trained on within their claim's window. A claim
        creates its pending blob before it reads the trained keys, so for a moment (or for
        good, when the claim died there and is never redelivered) data already trained is
        pending: it is dropped here, its blob deleted, so no manifest takes it. One read per
        shard the items touch. Items of the earlier layout (no claimant) are their shard's
        own claims: kept."""
        by_shard: dict[int, list[_Pending]] = {}
        for item in items:
            if item.claimant:
                hashed = item.name.rsplit("/", 1)[-1]
                by_shard.setdefault(shard_of(hashed, self._shards), []).append(item)

        def trained_in(entry: tuple[int, list[_Pending]]) -> list[str]:
            shard, group = entry
            keys = self._read_shard(model, shard)
            found = []
            for item in group:
                known = keys.get(item.name.rsplit("/", 1)[-1])
                if known is not None and known[1] >= item.seen - item.keep:
                    found.append(item.name)
            return found

        trained = {name for names in self._map(trained_in, by_shard.items()) for name in names}
        if not trained:
            return items

        def delete(name: str) -> None:
            with contextlib.suppress(ResourceNotFoundError):
                self._container.delete_blob(name)

        self._map(delete, sorted(trained))
        log.info("%s: %d pending item(s) already trained, dropped at the seal", model, len(trained))
        return [item for item in items if item.name not in trained]

    def manifest(self, model: str, run_id: str) -> list[str] | None:
        document = self._read_manifest(model, run_id)
        if document is None:
            return None
        # A URI twice (a blob, then named by a person) is trained on once.
        return list(dict.fromkeys(item["uri"] for item in document["items"]))

    def release(self, model: str, run_id: str, limit: int) -> int:
        if limit < 1:
            raise ValueError(f"release limit must be at least 1, not {limit}")
        found = self._read_manifest_blob(model, run_id)
        if found is None:
            return 0
        document, released = found
        marker = self._container.get_blob_client(self._releasing_name(model, run_id))
        if released:  # a crash after the last chunk left the marker
            with contextlib.suppress(ResourceNotFoundError):
                marker.delete_blob()
            return 0
        done, order = self._release_started(marker)
        items = self._in_release_order(document["items"], order)
        names = [item["pending"] for item in items]
        chunk = names[done : done + limit]
        # Their keys go into the index of trained keys BEFORE their pending blobs go: a
        # redelivery, or the same data landing again, then finds one or the other.
        self._remember(model, items[done : done + limit])
        for start in range(0, len(chunk), _BATCH):
            self._delete(chunk[start : start + _BATCH])
        done += len(chunk)
        if done < len(names):
            # Never more than what is deleted: a concurrent release may have saved a higher
            # count; saving a lower one only repeats deletes.
            with contextlib.suppress(ResourceNotFoundError):  # it finished meanwhile
                marker.set_blob_metadata({order: str(done)})
            return len(names) - done
        # Released first, then the marker: a manifest whose marker is gone is all released.
        self._container.get_blob_client(self._manifest_name(model, run_id)).set_blob_metadata(
            {"released": "true"}
        )
        with contextlib.suppress(ResourceNotFoundError):
            marker.delete_blob()
        return 0

    def releasing(self, model: str) -> list[str]:
        prefix = self._releasing_prefix(model)
        return sorted(
            blob.name[len(prefix) :] for blob in self._container.list_blobs(name_starts_with=prefix)
        )

    # ------------------------------------------------------------------ release

    def _releasing_name(self, model: str, run_id: str) -> str:
        return f"{self._releasing_prefix(model)}{run_id}"

    def _release_started(self, marker: BlobClient) -> tuple[int, str]:
        """How many of the manifest's items are released, and the marker's key for that count
        (its order): the marker created (hiding them all) when this is the first chunk."""
        for _ in range(self._max_attempts):
            try:
                marker.upload_blob(b"", overwrite=False, metadata={_DONE_BY_SHARD: "0"})
                return 0, _DONE_BY_SHARD
            except ResourceExistsError:
                pass
            try:
                metadata = marker.get_blob_properties().metadata or {}
            except ResourceNotFoundError:
                continue  # it finished between the two calls: start again, harmlessly
            order = _DONE_BY_SHARD if _DONE_BY_SHARD in metadata else "done"
            done = metadata.get(order, "0")
            return (int(done) if done.isdigit() else 0), order
        raise ConcurrencyConflict(f"{marker.blob_name}: release marker kept changing")

    def _in_release_order(
        self, items: Sequence[dict[str, Any]], order: str
    ) -> list[dict[str, Any]]:
        """The manifest's items in the order their release goes: by key shard, so a chunk's
        keys share shards (one write each: about 2.4 keys a shard at 10,000 items, 12 at
        50,000); the marker's count is a prefix of that order. A marker counting under "done"
        (started before the order was kept) goes on in the manifest's own order."""
        if order != _DONE_BY_SHARD:
            return list(items)
        return sorted(
            items,
            key=lambda item: (
                shard_of(item["pending"].rsplit("/", 1)[-1], self._shards),
                item["pending"],
            ),
        )

    def _delete(self, names: Sequence[str]) -> None:
        """Delete pending blobs in one batch; an answer other than deleted or already gone is
        raised, so no item is counted released while its blob is still pending."""
        answers = self._container.delete_blobs(*names, raise_on_any_failure=False)
        failed = [
            (name, answer.status_code)
            for name, answer in zip(names, answers, strict=True)
            if answer.status_code not in _DELETED
        ]
        if failed:
            raise RuntimeError(
                f"release: {len(failed)} pending item(s) not deleted, first {failed[0]}"
            )

    def _taken(self, model: str) -> set[str]:
        """The pending blobs named by a manifest not yet fully released (its marker exists)."""
        taken: set[str] = set()
        for run_id in self.releasing(model):
            found = self._read_manifest_blob(model, run_id)
            if found is not None:
                taken.update(item["pending"] for item in found[0]["items"])
        return taken

    def _untaken(self, model: str) -> list[_Pending]:
        # The markers first: one deleted after this read had all its items deleted before it,
        # so the listing below cannot show them.
        taken = self._taken(model)
        return [item for item in self._list_pending(model) if item.name not in taken]

    # ------------------------------------------------------------------ shards

    def _update_shard(
        self, model: str, shard: int, change: Callable[[dict[str, list[Any]]], bool]
    ) -> None:
        blob = self._container.get_blob_client(self.shard_name(model, shard))
        for attempt in range(self._max_attempts):
            try:
                downloader = blob.download_blob()
                keys = json.loads(downloader.readall())
                etag: str | None = downloader.properties.etag
            except ResourceNotFoundError:
                keys, etag = {}, None
            if not change(keys):
                return
            try:
                if etag is None:
                    blob.upload_blob(_dump(keys), overwrite=False)
                else:
                    blob.upload_blob(
                        _dump(keys),
                        overwrite=True,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                return
            except (ResourceExistsError, ResourceModifiedError):
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
        raise ConcurrencyConflict(
            f"{model}: key shard {shard} gave up after {self._max_attempts} conflicting writes"
        )

    def _read_shard(self, model: str, shard: int) -> dict[str, list[Any]]:
        try:
            keys: dict[str, list[Any]] = json.loads(
                self._container.download_blob(self.shard_name(model, shard)).readall()
            )
        except ResourceNotFoundError:
            return {}
        return keys

    def _remember(self, model: str, items: Sequence[dict[str, Any]]) -> None:
        """Write released items' keys into their shards, with who claimed them and when; keys
        older than the window the newest of them was claimed with are dropped meanwhile.
        Items pending from before claims moved into the pending blob (no claimant) have
        their key in a shard already."""
        by_shard: dict[int, dict[str, list[Any]]] = {}
        horizon: int | None = None
        for item in items:
            if not item.get("claimant"):
                continue
            hashed = item["pending"].rsplit("/", 1)[-1]
            entry = [item["claimant"], int(item.get("seen") or 0)]
            by_shard.setdefault(shard_of(hashed, self._shards), {})[hashed] = entry
            if item.get("keep"):
                oldest_kept = entry[1] - int(item["keep"])
                horizon = oldest_kept if horizon is None else max(horizon, oldest_kept)

        def write(entry: tuple[int, dict[str, list[Any]]]) -> None:
            shard, entries = entry

            def change(keys: dict[str, list[Any]]) -> bool:
                changed = horizon is not None and _prune(keys, horizon)
                for hashed, known in entries.items():
                    if keys.get(hashed) != known:
                        keys[hashed] = known
                        changed = True
                return changed

            self._update_shard(model, shard, change)

        self._map(write, by_shard.items())

    def write_shard(self, model: str, shard: int, keys: dict[str, list[Any]]) -> None:
        """Write one shard as it is (benchmarks pre-fill an index with it)."""
        self._container.upload_blob(self.shard_name(model, shard), _dump(keys), overwrite=True)

    # ------------------------------------------------------------------ pending items

    def _pending_name(self, model: str, hashed: str) -> str:
        return f"{self._pending_prefix(model)}{hashed}"

    def _list_pending(self, model: str) -> list[_Pending]:
        listed = []
        for blob in self._container.list_blobs(
            name_starts_with=self._pending_prefix(model), include=["metadata"]
        ):
            metadata = blob.metadata or {}
            rows = metadata.get("rows") or ""
            listed.append(
                _Pending(
                    name=blob.name,
                    landed_ms=int(metadata.get("landed") or 0),
                    rows=int(rows) if rows.isdigit() else None,
                    uri=metadata.get("uri"),
                    claimant=metadata.get("claimant", ""),
                    seen=_number(metadata.get("seen")),
                    keep=_number(metadata.get("keep")),
                )
            )
        return listed

    def _uris(self, items: Sequence[_Pending]) -> list[str]:
        def uri_of(item: _Pending) -> str:
            if item.uri is not None:
                return item.uri
            body = json.loads(self._container.download_blob(item.name).readall())
            return str(body["uri"])

        if all(item.uri is not None for item in items):
            return [str(item.uri) for item in items]
        return self._map(uri_of, items)

    def _read_manifest(self, model: str, run_id: str) -> dict[str, Any] | None:
        found = self._read_manifest_blob(model, run_id)
        return None if found is None else found[0]

    def _read_manifest_blob(self, model: str, run_id: str) -> tuple[dict[str, Any], bool] | None:
        """The manifest and whether it is fully released; None when there is none."""
        try:
            downloader = self._container.download_blob(self._manifest_name(model, run_id))
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        document: dict[str, Any] = json.loads(data)
        released = (downloader.properties.metadata or {}).get("released") == "true"
        return document, released

    # ------------------------------------------------------------------ helpers

    def _map(self, work: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        todo = list(items)
        if len(todo) <= 1:
            return [work(item) for item in todo]
        with ThreadPoolExecutor(max_workers=min(self._workers, len(todo))) as pool:
            return list(pool.map(work, todo))


class _Lazy(Generic[_T]):
    """A value computed once, on first use, by whichever thread needs it first."""

    def __init__(self, compute: Callable[[], _T]) -> None:
        self._compute = compute
        self._value: _T | None = None
        self._lock = threading.Lock()

    def get(self) -> _T:
        with self._lock:
            if self._value is None:
                self._value = self._compute()
            return self._value


def _prune(keys: dict[str, list[Any]], horizon: int) -> bool:
    """Drop keys seen before `horizon` (epoch seconds); True when any was dropped."""
    old = [hashed for hashed, (_, seen_at) in keys.items() if seen_at < horizon]
    for hashed in old:
        del keys[hashed]
    return bool(old)


def _number(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _age(item: _Pending) -> tuple[int, str]:
    return (item.landed_ms, item.name)


def _dump(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
