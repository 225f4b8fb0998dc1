"""State store and audit log against real Azurite: optimistic concurrency loses nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from azure.storage.blob import BlobServiceClient
from pydantic import BaseModel, Field

from adapters.blob_state import BlobAuditLog, BlobStateStore, ensure_container
from orchestrator.ports import AuditRecord, ConcurrencyConflict

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
