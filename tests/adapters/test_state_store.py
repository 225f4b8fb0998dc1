"""State store and audit log against real Azurite: optimistic concurrency loses nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from azure.storage.blob import BlobServiceClient
from pydantic import BaseModel, Field

from adapters.blob_state import BlobAuditLog, BlobStateStore, ensure_container
from orchestrator.ports import AuditRecord, ConcurrencyConflict, InvalidContinuation

pytestmark = pytest.mark.azurite


class Counter(BaseModel):
    key: str
    version: int = 0
    count: int = 0
    writers: list[str] = Field(default_factory=list)


@pytest.fixture
def container(azurite, unique_name):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return ensure_container(service.get_container_client(unique_name))


def test_new_aggregate_is_created_then_loaded(container):
    store = BlobStateStore(container, Counter, lambda key: Counter(key=key))
    fresh, etag = store.load("churn")
    assert (fresh.count, etag) == (0, None)
    saved, wrote = store.update("churn", lambda c: c.model_copy(update={"count": 1}))
    assert wrote and saved.version == 1
    loaded, etag = store.load("churn")
    assert loaded == saved and etag is not None
    assert store.list_keys() == ["churn"]


def test_stale_etag_is_a_conflict(container):
    store = BlobStateStore(container, Counter, lambda key: Counter(key=key))
    store.update("m", lambda c: c.model_copy(update={"count": 1}))
    current, etag = store.load("m")
    store.save("m", current.model_copy(update={"count": 2}), etag)
    with pytest.raises(ConcurrencyConflict):
        store.save("m", current.model_copy(update={"count": 3}), etag)  # etag is stale now
    with pytest.raises(ConcurrencyConflict):
        store.save("new", Counter(key="new"), None)
        store.save("new", Counter(key="new"), None)  # creating twice


def test_no_change_writes_nothing(container):
    store = BlobStateStore(container, Counter, lambda key: Counter(key=key))
    state, wrote = store.update("m", lambda c: None)
    assert not wrote and state.version == 0
    assert store.list_keys() == []


def test_sixteen_concurrent_writers_lose_no_update(container):
    store = BlobStateStore(container, Counter, lambda key: Counter(key=key), max_attempts=200)
    audit = BlobAuditLog(container)
    writers, writes_each = 16, 5

    def write(writer: int) -> None:
        for n in range(writes_each):
            name = f"w{writer}-{n}"
            state, _ = store.update(
                "hot",
                lambda c, name=name: c.model_copy(
                    update={"count": c.count + 1, "writers": [*c.writers, name]}
                ),
            )
            audit.append(
                [
                    AuditRecord(
                        model="hot",
                        aggregate_version=state.version,
                        time=datetime.now(UTC),
                        action="counter.incremented",
                        cause_id=name,
                    )
                ]
            )

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(write, range(writers)))

    final, _ = store.load("hot")
    total = writers * writes_each
    assert final.count == total
    assert final.version == total
    assert sorted(final.writers) == sorted(
        f"w{w}-{n}" for w in range(writers) for n in range(writes_each)
    )
    records = audit.read("hot")
    assert len(records) == total  # one audit entry per applied change
    assert [r.aggregate_version for r in records] == list(range(1, total + 1))
    assert {r.cause_id for r in records} == set(final.writers)


def test_audit_append_is_idempotent_and_ordered(container):
    audit = BlobAuditLog(container)
    now = datetime.now(UTC)
    records = [
        AuditRecord(model="m", aggregate_version=v, seq=s, time=now, action=f"a{v}.{s}")
        for v in (2, 1, 10)
        for s in (0, 1)
    ]
    audit.append(records)
    audit.append(records)  # a re-dispatch after a crash writes nothing twice
    read = audit.read("m")
    assert [r.action for r in read] == ["a1.0", "a1.1", "a2.0", "a2.1", "a10.0", "a10.1"]
    assert [r.action for r in audit.read("m", since_version=10)] == ["a10.0", "a10.1"]


# --------------------------------------------------------------------------- audit pages


class RecordedRequests:
    """Every request the real Blob SDK sends to Azurite (its `raw_request_hook`)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, pipeline_request) -> None:  # type: ignore[no-untyped-def]
        request = pipeline_request.http_request
        self.requests.append((request.method, request.url))

    def downloads(self) -> list[str]:
        """The blob paths read (GET of a blob, not a listing)."""
        return [
            urlsplit(url).path.split("/", 3)[3]
            for method, url in self.requests
            if method == "GET" and "comp=list" not in url
        ]

    def listings(self) -> int:
        return sum(1 for method, url in self.requests if "comp=list" in url)


@pytest.fixture
def recorded(azurite, unique_name):
    requests = RecordedRequests()
    service = BlobServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=requests
    )
    container = ensure_container(service.get_container_client(unique_name))
    return BlobAuditLog(container), requests


def _record(version: int, seq: int, action: str, promotion_id: str | None = None) -> AuditRecord:
    return AuditRecord(
        model="m",
        aggregate_version=version,
        seq=seq,
        time=datetime.now(UTC),
        action=action,
        promotion_id=promotion_id,
    )


def _many() -> list[AuditRecord]:
    """250 records over 125 versions: every 5th version is promotion p1's, a run ends every
    25th version, the rest is retrain chatter."""
    records = []
    for version in range(1, 126):
        for seq in (0, 1):
            if version % 5 == 0:
                records.append(_record(version, seq, f"promotion.s{seq}", "m-v1-20260101T000000"))
            elif version % 25 == 1 and seq == 1:
                records.append(_record(version, seq, "retrain.job_completed"))
            else:
                records.append(_record(version, seq, "retrain.data_accumulated"))
    return records


def _all_pages(audit: BlobAuditLog, limit: int, **query) -> list[list[AuditRecord]]:  # type: ignore[no-untyped-def]
    pages, continuation = [], None
    while True:
        page = audit.page("m", limit=limit, continuation=continuation, **query)
        pages.append(page.records)
        if page.continuation is None:
            return pages
        continuation = page.continuation


def test_audit_pages_cover_every_record_exactly_once_oldest_first(recorded):
    audit, requests = recorded
    records = _many()
    audit.append(records)
    requests.requests.clear()
    first = audit.page("m", limit=40)
    assert len(requests.downloads()) == 40 and requests.listings() == 1  # a page, not the log
    pages = _all_pages(audit, limit=40)
    assert pages[0] == first.records
    assert [len(page) for page in pages] == [40] * 6 + [10]
    read = [record.record_id for page in pages for record in page]
    assert read == sorted(record.record_id for record in records)  # each once, in order
    assert audit.page("m", limit=1000).continuation is None
    assert audit.page("nobody", limit=10).records == []


def test_a_promotion_page_downloads_only_that_promotion_s_records(recorded):
    audit, requests = recorded
    promotion = "m-v1-20260101T000000"
    audit.append(_many())
    audit.append([_record(200, 0, "promotion.started", "m-v2-20260102T000000")])
    requests.requests.clear()

    pages = _all_pages(audit, limit=20, promotion_id=promotion)
    read = [record for page in pages for record in page]
    assert len(read) == 50 and {record.promotion_id for record in read} == {promotion}
    assert [r.record_id for r in read] == sorted(r.record_id for r in read)
    # Exactly one download per record of the promotion, none of the other 201 records.
    assert sorted(requests.downloads()) == sorted(
        f"audit/m/{record.record_id}.json" for record in read
    )
    assert requests.listings() == len(pages) == 3


def test_the_runs_index_holds_each_run_end_once(recorded):
    audit, requests = recorded
    records = _many()
    audit.append(records)
    audit.append(records[:60])  # a redelivery (two run ends among them): nothing written twice
    requests.requests.clear()
    [ends] = _all_pages(audit, limit=100, run_ends=True)
    assert [r.aggregate_version for r in ends] == [1, 26, 51, 76, 101]
    assert len(requests.downloads()) == 5


def test_a_continuation_token_of_another_query_or_a_forged_one_is_refused(recorded):
    audit, _ = recorded
    audit.append(_many())
    token = audit.page("m", limit=10).continuation
    assert token
    with pytest.raises(InvalidContinuation, match="another query"):
        audit.page("m", limit=10, continuation=token, promotion_id="m-v1-20260101T000000")
    with pytest.raises(InvalidContinuation, match="another query"):
        audit.page("other", limit=10, continuation=token)
    with pytest.raises(InvalidContinuation, match="not a token"):
        audit.page("m", limit=10, continuation="not-a-token!")
    with pytest.raises(ValueError, match="limit"):
        audit.page("m", limit=0)


def test_a_crash_between_the_record_and_its_index_is_repaired_by_the_next_append(recorded):
    audit, _ = recorded
    record = _record(7, 0, "promotion.started", "m-v1-20260101T000000")
    # The record was written by code from before the index existed (or a crash followed).
    audit._container.upload_blob(f"audit/m/{record.record_id}.json", record.model_dump_json())
    assert audit.page("m", promotion_id=record.promotion_id).records == []
    audit.append([record])  # the redelivered message appends it again
    assert audit.page("m", promotion_id=record.promotion_id).records == [record]


def test_records_from_before_the_index_are_indexed_once(recorded):
    audit, _ = recorded
    old = [_record(v, 0, "promotion.started", "m-v1-20260101T000000") for v in (1, 2)]
    old.append(_record(3, 0, "retrain.job_failed"))
    for record in old:  # written as the previous version did: the record blob only
        audit._container.upload_blob(f"audit/m/{record.record_id}.json", record.model_dump_json())
    assert audit.index_existing("m") == 3
    assert audit.index_existing("m") == 3  # again: nothing new, nothing broken
    assert audit.page("m", promotion_id="m-v1-20260101T000000").records == old[:2]
    assert audit.page("m", run_ends=True).records == old[2:]
