"""The data ledger on real Azurite: claims by message, retention, concurrent events on one
model, manifests sealed once, release, and the same answers as the in-memory fake."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from adapters.blob_state import ensure_container
from adapters.data_ledger import BlobDataLedger, key_hash, shard_of
from retrain.commands import DataItem
from tests.fakes import InMemoryDataLedger

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEEP = timedelta(days=30)
ACCOUNT = "https://acct.blob.core.windows.net/training-data/churn"


def item(n: int | str, rows: int | None = None) -> DataItem:
    return DataItem(uri=f"{ACCOUNT}/{n}.csv", key=f"blob:churn/{n}.csv@etag1", rows=rows)


@pytest.fixture
def container(azurite, unique_name):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return ensure_container(service.get_container_client(unique_name))


@pytest.fixture
def ledger(container) -> BlobDataLedger:
    return BlobDataLedger(container, shards=64)


def test_a_key_counts_once_but_its_own_message_counts_it_again(ledger: BlobDataLedger):
    assert ledger.claim("churn", [item(1), item(2), item(1)], "m1", T0, KEEP) == [item(1), item(2)]
    # A redelivery of m1: its items still count (its pending entries already exist).
    assert ledger.claim("churn", [item(1), item(2)], "m1", T0, KEEP) == [item(1), item(2)]
    # Another message with a known key: a duplicate; with a new one: new.
    assert ledger.claim("churn", [item(1), item(3)], "m2", T0, KEEP) == [item(3)]
    pending = ledger.pending("churn")
    assert (pending.items, pending.rows) == (3, None)
    # Items of one message landed at the same time: ordered by name among themselves.
    assert sorted(pending.sample) == sorted(item(n).uri for n in (1, 2, 3))
    # Another model has its own keys.
    assert ledger.claim("fraud", [item(1)], "m3", T0, KEEP) == [item(1)]


def test_pending_reports_rows_and_the_oldest_uris(ledger: BlobDataLedger):
    for n in range(8):
        ledger.claim("churn", [item(n, rows=10)], f"m{n}", T0 + timedelta(seconds=n), KEEP)
    pending = ledger.pending("churn")
    assert (pending.items, pending.rows) == (8, 80)
    assert pending.sample == [item(n).uri for n in range(5)]


def test_a_manifest_is_sealed_once_and_release_makes_its_keys_taken(ledger: BlobDataLedger):
    for n in range(6):
        ledger.claim("churn", [item(n)], f"m{n}", T0 + timedelta(seconds=n), KEEP)
    sealed = ledger.seal("churn", "churn-r1", 4)
    assert sealed == [item(n).uri for n in range(4)]
    ledger.claim("churn", [item(99)], "m99", T0 - timedelta(hours=1), KEEP)  # older, but late
    # First writer wins: a redelivered submit gets the same list.
    assert ledger.seal("churn", "churn-r1", 10) == sealed
    assert ledger.manifest("churn", "churn-r1") == sealed
    assert ledger.manifest("churn", "churn-nope") is None
    assert ledger.release("churn", "churn-r1") == 4
    assert ledger.release("churn", "churn-r1") == 4  # idempotent
    assert ledger.pending("churn").items == 3
    # A taken key is a duplicate even for the message that first claimed it.
    assert ledger.claim("churn", [item(0)], "m0", T0, KEEP) == []
    assert ledger.claim("churn", [item(5)], "m5", T0, KEEP) == [item(5)]  # not taken yet


def test_keys_past_the_retention_window_are_forgotten_when_their_shard_is_written(
    ledger: BlobDataLedger, container
):
    ledger.claim("churn", [item(1)], "m1", T0, timedelta(days=1))
    later = T0 + timedelta(days=2)
    assert ledger.claim("churn", [item(1)], "m2", later, timedelta(days=1)) == [item(1)]
    hashed = key_hash(item(1).key)
    shard = json.loads(
        container.download_blob(ledger.shard_name("churn", shard_of(hashed, 64))).readall()
    )
    assert shard[hashed][1] == int(later.timestamp())  # seen again, by the new claimant


def test_long_and_non_ascii_uris_survive_the_metadata_limits(ledger: BlobDataLedger):
    long_uri = f"{ACCOUNT}/{'x' * 2100}.csv"
    accented = f"{ACCOUNT}/donn%C3%A9es-é.csv"
    items = [DataItem(uri=long_uri, key="k-long"), DataItem(uri=accented, key="k-accent")]
    ledger.claim("churn", items, "m1", T0, KEEP)
    assert sorted(ledger.pending("churn").sample) == sorted([long_uri, accented])
    assert sorted(ledger.seal("churn", "r", 10)) == sorted([long_uri, accented])


def test_concurrent_events_on_one_model_lose_no_item_and_count_none_twice(
    ledger: BlobDataLedger,
):
    # 400 events, each key sent by two different messages at once, over 64 shards.
    def send(n: int) -> int:
        return len(ledger.claim("churn", [item(n % 200)], f"m{n}", T0, KEEP))

    with ThreadPoolExecutor(max_workers=16) as pool:
        counted = sum(pool.map(send, range(400)))
    assert counted == 200
    assert ledger.pending("churn").items == 200
    assert len(ledger.seal("churn", "r", 1000)) == 200


def test_the_blob_ledger_and_the_fake_answer_alike(ledger: BlobDataLedger):
    fake = InMemoryDataLedger()
    script = [
        ([item(1)], "a", T0),
        ([item(2)], "e", T0 + timedelta(seconds=1)),
        ([item(2), item(3, rows=4)], "b", T0 + timedelta(seconds=1)),
        ([item(1)], "a", T0 + timedelta(seconds=2)),
        ([item(4)], "c", T0 + timedelta(days=40)),
        ([item(1)], "d", T0 + timedelta(days=40)),
    ]
    for index, (items, claimant, now) in enumerate(script):
        assert ledger.claim("m", items, claimant, now, KEEP) == fake.claim(
            "m", items, claimant, now, KEEP
        ), index
        if index == 3:
            assert ledger.seal("m", "r1", 2) == fake.seal("m", "r1", 2)
            assert ledger.release("m", "r1") == fake.release("m", "r1")
    assert ledger.pending("m") == fake.pending("m")
