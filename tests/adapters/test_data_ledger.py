"""The data ledger on real Azurite: claims by message, retention, concurrent events on one
model, manifests sealed once, release in chunks (its items hidden from the first chunk, a
crash or a refused delete in the middle, concurrent releases), and the same answers as the
in-memory fake."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from adapters.blob_state import ensure_container
from adapters.data_ledger import BlobDataLedger, claimant_hash, key_hash, shard_of
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
    assert ledger.release("churn", "churn-r1", 256) == 0
    assert ledger.release("churn", "churn-r1", 256) == 0  # idempotent
    assert ledger.pending("churn").items == 3
    # A taken key is a duplicate even for the message that first claimed it.
    assert ledger.claim("churn", [item(0)], "m0", T0, KEEP) == []
    assert ledger.claim("churn", [item(5)], "m5", T0, KEEP) == [item(5)]  # not taken yet


def test_keys_past_the_retention_window_are_forgotten(ledger: BlobDataLedger, container):
    day = timedelta(days=1)
    ledger.claim("churn", [item(1)], "m1", T0, day)
    later = T0 + timedelta(days=2)
    # Still pending, but claimed longer ago than the window: claimed afresh by m2.
    assert ledger.claim("churn", [item(1)], "m2", later, day) == [item(1)]
    assert ledger.claim("churn", [item(1)], "m1", later, day) == []
    assert ledger.claim("churn", [item(1)], "m2", later, day) == [item(1)]  # m2's redelivery
    assert ledger.pending("churn").items == 1  # one item all along
    ledger.seal("churn", "r1", 10)
    assert ledger.release("churn", "r1", 10) == 0
    # Released: its key is in its shard, as m2 claimed it then.
    hashed = key_hash(item(1).key)
    shard = json.loads(
        container.download_blob(ledger.shard_name("churn", shard_of(hashed, 64))).readall()
    )
    assert shard[hashed] == [claimant_hash("m2"), int(later.timestamp())]
    assert ledger.claim("churn", [item(1)], "m3", later + timedelta(hours=1), day) == []
    # Trained more than a window ago: new again.
    then = later + timedelta(days=2)
    assert ledger.claim("churn", [item(1)], "m4", then, day) == [item(1)]
    ledger.seal("churn", "r2", 10)
    assert ledger.release("churn", "r2", 10) == 0
    # The release's write dropped no key of its own window and rewrote the trained one.
    shard = json.loads(
        container.download_blob(ledger.shard_name("churn", shard_of(hashed, 64))).readall()
    )
    assert shard[hashed] == [claimant_hash("m4"), int(then.timestamp())]


def test_data_already_trained_landing_again_is_a_duplicate_and_leaves_nothing_pending(
    ledger: BlobDataLedger, container
):
    land(ledger, range(3))
    ledger.seal("churn", "r1", 10)
    assert ledger.release("churn", "r1", 10) == 0
    assert ledger.claim("churn", [item(0), item(7)], "late", T0, KEEP) == [item(7)]
    assert pending_blobs(container) == 1
    assert ledger.pending("churn").sample == [item(7).uri]


def test_a_claim_cut_short_after_its_create_is_finished_by_the_redelivery(
    ledger: BlobDataLedger, container, monkeypatch
):
    land(ledger, range(2))
    ledger.seal("churn", "r1", 10)
    ledger.release("churn", "r1", 10)
    # A late copy of trained data: its pending blob is created, then the process dies
    # before it reads the index of trained keys.
    monkeypatch.setattr(ledger, "_read_shard", lambda *_: (_ for _ in ()).throw(OSError("died")))
    with pytest.raises(OSError):
        ledger.claim("churn", [item(1)], "late", T0, KEEP)
    assert pending_blobs(container) == 1
    monkeypatch.undo()
    # Its redelivery finds its own pending item, sees the key trained, and removes it.
    assert ledger.claim("churn", [item(1)], "late", T0, KEEP) == []
    assert pending_blobs(container) == 0 and ledger.pending("churn").items == 0


def test_items_pending_from_the_earlier_layout_keep_their_claims(ledger: BlobDataLedger, container):
    # Before claims moved into the pending blob: a pending blob without a claimant, and its
    # key claimed in its shard.
    hashed = key_hash(item(1).key)
    container.upload_blob(
        f"pending/churn/{hashed}",
        json.dumps({"uri": item(1).uri, "key": item(1).key, "rows": None}).encode(),
        metadata={"landed": str(int(T0.timestamp() * 1000)), "rows": "", "uri": item(1).uri},
    )
    ledger.write_shard(
        "churn", shard_of(hashed, 64), {hashed: [claimant_hash("m1"), int(T0.timestamp())]}
    )
    assert ledger.claim("churn", [item(1)], "m1", T0, KEEP) == [item(1)]  # its redelivery
    assert ledger.claim("churn", [item(1)], "m2", T0, KEEP) == []
    assert ledger.seal("churn", "r1", 10) == [item(1).uri]
    assert ledger.release("churn", "r1", 10) == 0
    assert ledger.claim("churn", [item(1)], "m1", T0, KEEP) == []  # trained now
    assert pending_blobs(container) == 0


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
            # One item of two: the other stays hidden in both until the next chunk.
            assert ledger.release("m", "r1", 1) == fake.release("m", "r1", 1) == 1
            assert ledger.releasing("m") == fake.releasing("m") == ["r1"]
            assert ledger.pending("m") == fake.pending("m")
        if index == 4:
            assert ledger.release("m", "r1", 1) == fake.release("m", "r1", 1) == 0
            assert ledger.releasing("m") == fake.releasing("m") == []
    assert ledger.pending("m") == fake.pending("m")
    assert ledger.seal("m", "r2", 10) == fake.seal("m", "r2", 10)


# --------------------------------------------------------------------------- release in chunks


def pending_blobs(container, model: str = "churn") -> int:
    return sum(1 for _ in container.list_blobs(name_starts_with=f"pending/{model}/"))


def land(ledger: BlobDataLedger, names: range, model: str = "churn") -> None:
    for n in names:
        ledger.claim(model, [item(n)], f"m{n}", T0 + timedelta(seconds=n), KEEP)


def test_a_release_in_chunks_hides_its_items_from_the_first_chunk_to_the_last(
    ledger: BlobDataLedger, container
):
    land(ledger, range(10))
    assert len(ledger.seal("churn", "r1", 10)) == 10
    assert ledger.releasing("churn") == []  # sealed, not submitted: still pending
    assert ledger.pending("churn").items == 10
    assert ledger.release("churn", "r1", 3) == 7
    assert pending_blobs(container) == 7 and ledger.releasing("churn") == ["r1"]
    # The rest of r1 is not pending any more, though its blobs are still there.
    land(ledger, range(10, 13))
    pending = ledger.pending("churn")
    assert (pending.items, pending.sample) == (3, [item(n).uri for n in range(10, 13)])
    # A redelivery of the message that claimed one of r1's items counts nothing.
    assert ledger.claim("churn", [item(7)], "m7", T0, KEEP) == []
    assert ledger.claim("churn", [item(11)], "m11", T0, KEEP) == [item(11)]
    # A second window closing while r1 is still releasing takes only what is new.
    assert ledger.seal("churn", "r2", 100) == [item(n).uri for n in range(10, 13)]
    assert [ledger.release("churn", "r1", 3) for _ in range(3)] == [4, 1, 0]
    assert ledger.releasing("churn") == []
    assert ledger.release("churn", "r1", 3) == 0  # idempotent, and deletes nothing more
    assert ledger.manifest("churn", "r1") == [item(n).uri for n in range(10)]  # kept
    assert pending_blobs(container) == 3  # r2's, still pending until it is released
    assert ledger.pending("churn").items == 3
    assert ledger.release("churn", "nope", 3) == 0


def test_a_release_cut_short_goes_on_from_what_was_deleted_and_hides_the_rest(
    ledger: BlobDataLedger, container, monkeypatch
):
    land(ledger, range(600))
    ledger.seal("churn", "r1", 600)
    delete_blobs = container.delete_blobs
    batches = []

    def crash_on_the_second_batch(*names, **kwargs):
        batches.append(len(names))
        if len(batches) == 2:
            raise ConnectionError("the process died here")
        return delete_blobs(*names, **kwargs)

    monkeypatch.setattr(container, "delete_blobs", crash_on_the_second_batch)
    with pytest.raises(ConnectionError):
        ledger.release("churn", "r1", 600)
    assert pending_blobs(container) == 600 - 256
    assert ledger.pending("churn").items == 0 and ledger.releasing("churn") == ["r1"]
    land(ledger, range(600, 602))
    assert ledger.seal("churn", "r2", 1000) == [item(600).uri, item(601).uri]
    monkeypatch.setattr(container, "delete_blobs", delete_blobs)
    # Again from the last saved count (0): the first batch's blobs are gone (404), not lost.
    assert ledger.release("churn", "r1", 600) == 0
    assert pending_blobs(container) == 2 and ledger.releasing("churn") == []


def test_a_blob_that_cannot_be_deleted_stops_the_release_and_stays_hidden(
    ledger: BlobDataLedger, container
):
    land(ledger, range(4))
    ledger.seal("churn", "r1", 4)
    # A lease makes the service refuse the delete (412) of that one blob in the batch.
    leased = container.get_blob_client(f"pending/churn/{key_hash(item(2).key)}")
    lease = leased.acquire_lease()
    with pytest.raises(RuntimeError, match=r"1 pending item\(s\) not deleted"):
        ledger.release("churn", "r1", 4)
    assert ledger.pending("churn").items == 0 and ledger.releasing("churn") == ["r1"]
    lease.release()
    assert ledger.release("churn", "r1", 4) == 0
    assert pending_blobs(container) == 0


def test_a_crash_between_the_last_chunk_and_the_marker_is_finished_by_the_next_call(
    ledger: BlobDataLedger, container
):
    land(ledger, range(3))
    ledger.seal("churn", "r1", 3)
    assert ledger.release("churn", "r1", 2) == 1
    # The last chunk marked the manifest released, then the process died: the marker stays.
    container.get_blob_client("manifests/churn/r1.json").set_blob_metadata({"released": "true"})
    assert ledger.releasing("churn") == ["r1"]
    assert ledger.release("churn", "r1", 2) == 0
    assert ledger.releasing("churn") == []


def test_concurrent_releases_of_one_run_delete_everything_once_and_finish(
    ledger: BlobDataLedger, container
):
    land(ledger, range(300))
    ledger.seal("churn", "r1", 300)

    def release_until_done(_: int) -> None:
        while ledger.release("churn", "r1", 40):
            pass

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(release_until_done, range(4)))
    assert pending_blobs(container) == 0 and ledger.releasing("churn") == []
    assert ledger.pending("churn").items == 0


def test_a_duplicate_left_pending_by_a_claim_that_died_is_never_sealed(
    ledger: BlobDataLedger, container, monkeypatch
):
    land(ledger, range(2))
    ledger.seal("churn", "r1", 10)
    ledger.release("churn", "r1", 10)
    monkeypatch.setattr(ledger, "_read_shard", lambda *_: (_ for _ in ()).throw(OSError("died")))
    with pytest.raises(OSError):  # created its pending blob, then died; never redelivered
        ledger.claim("churn", [item(1)], "late", T0, KEEP)
    monkeypatch.undo()
    land(ledger, range(5, 7))
    # The seal reads the trained keys of what it takes: item 1 is dropped, its blob deleted.
    assert ledger.seal("churn", "r2", 10) == [item(5).uri, item(6).uri]
    assert pending_blobs(container) == 2


def same_shard_pair(shards: int = 64) -> tuple[int, int]:
    first = shard_of(key_hash(item(1000).key), shards)
    other = next(n for n in range(1001, 5000) if shard_of(key_hash(item(n).key), shards) == first)
    return 1000, other


def test_each_key_reads_the_trained_keys_after_its_own_create(container, monkeypatch):
    ledger = BlobDataLedger(container, shards=64, workers=1)  # the message's keys in order
    fresh, released = same_shard_pair()
    land(ledger, range(released, released + 1))
    ledger.seal("churn", "r1", 10)
    read_shard = ledger._read_shard
    calls = []

    def release_after_the_first_read(model: str, shard: int):
        keys = read_shard(model, shard)
        calls.append(shard)
        if len(calls) == 1:  # the release overtakes the message between its two keys
            assert ledger.release("churn", "r1", 10) == 0
        return keys

    monkeypatch.setattr(ledger, "_read_shard", release_after_the_first_read)
    counted = ledger.claim("churn", [item(fresh), item(released)], "m9", T0, KEEP)
    assert counted == [item(fresh)]  # the released key is trained: a duplicate
    assert ledger.pending("churn").sample == [item(fresh).uri]


def test_an_item_a_job_has_taken_is_a_duplicate_even_past_the_retention_window(
    ledger: BlobDataLedger, container
):
    day = timedelta(days=1)
    ledger.claim("churn", [item(1)], "m1", T0, day)
    ledger.claim("churn", [item(2)], "m2", T0 + timedelta(seconds=1), day)
    assert ledger.seal("churn", "r1", 10) == [item(1).uri, item(2).uri]
    assert ledger.release("churn", "r1", 1) == 1  # item 2's blob is still there, taken
    assert pending_blobs(container) == 1
    later = T0 + timedelta(days=2)
    assert ledger.claim("churn", [item(2)], "m3", later, day) == []
    assert ledger.claim("churn", [item(2)], "m3", later, day) == []  # nor its redelivery
    assert ledger.release("churn", "r1", 1) == 0
    assert ledger.pending("churn").items == 0 and pending_blobs(container) == 0


def test_a_release_goes_by_key_shard_so_a_chunk_writes_each_shard_once(
    ledger: BlobDataLedger, container, monkeypatch
):
    land(ledger, range(600))
    ledger.seal("churn", "r1", 600)
    update_shard = ledger._update_shard
    written: list[int] = []

    def counted(model: str, shard: int, change):  # type: ignore[no-untyped-def]
        written.append(shard)
        return update_shard(model, shard, change)

    monkeypatch.setattr(ledger, "_update_shard", counted)
    assert ledger.release("churn", "r1", 256) == 344
    # Counted under its own key: the ledger before it (a prefix of the manifest's list, under
    # "done") would read nothing there and only repeat deletes, never skip an item.
    marker = container.get_blob_client("releasing/churn/r1").get_blob_properties()
    assert marker.metadata == {"done_by_shard": "256"}
    left = [ledger.release("churn", "r1", 256) for _ in range(2)]
    assert left == [88, 0] and pending_blobs(container) == 0
    # 64 shards, 3 chunks: each shard once, and at most one shared by two chunks at each
    # boundary (in the manifest's own order, every chunk would write nearly every shard).
    assert len(written) <= 64 + 2 and len(set(written)) == 64


def test_a_release_started_in_the_manifest_s_order_goes_on_in_it(ledger: BlobDataLedger, container):
    land(ledger, range(10))
    ledger.seal("churn", "r1", 10)
    manifest = json.loads(container.download_blob("manifests/churn/r1.json").readall())
    first = [item["pending"] for item in manifest["items"][:3]]
    # What the ledger before the shard order left: a marker counting 3, those 3 deleted.
    container.upload_blob("releasing/churn/r1", b"", metadata={"done": "3"})
    for name in first:
        container.delete_blob(name)
    assert ledger.release("churn", "r1", 100) == 0
    assert pending_blobs(container) == 0 and ledger.pending("churn").items == 0
