"""The dead-letter records on Azurite: a replay claims a record once (a conditional write)."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from adapters.blob_state import ensure_container
from adapters.dead_letters import MAX_BODY, BlobDeadLetters

pytestmark = pytest.mark.azurite


@pytest.fixture
def records(azurite) -> BlobDeadLetters:  # type: ignore[no-untyped-def]
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(f"dl{uuid.uuid4().hex[:12]}")
    return BlobDeadLetters(ensure_container(container))


def test_two_replays_of_one_record_cannot_both_claim_it(records: BlobDeadLetters) -> None:
    name = records.record("orchestrator", "unknown model churn", b'{"type": "GateCheck"}')
    record, etag = records.get(name) or ({}, "")
    first = records.claim_replay(name, record, etag, "orchestrator")
    second = records.claim_replay(name, record, etag, "orchestrator")  # read before the first
    assert first is not None and first["replayed_to"] == "orchestrator"
    assert second is None
    stored, _ = records.get(name) or ({}, "")
    assert stored["replaying_at"] == first["replaying_at"] and "replayed_at" not in stored
    assert stored["body"] == '{"type": "GateCheck"}'


def test_a_released_claim_can_be_claimed_again(records: BlobDeadLetters) -> None:
    name = records.record("approvals", "reason", "{}")
    record, etag = records.get(name) or ({}, "")
    claimed = records.claim_replay(name, record, etag, "approvals")
    assert claimed is not None
    records.release_replay(name, claimed)
    record, etag = records.get(name) or ({}, "")
    assert "replaying_at" not in record and "replayed_at" not in record
    assert records.claim_replay(name, record, etag, "approvals") is not None


def test_entries_name_each_record_and_a_missing_one_is_none(records: BlobDeadLetters) -> None:
    names = [records.record("eventhub", f"reason {n}", "x") for n in range(3)]
    assert [name for name, _ in records.entries("eventhub")] == sorted(names)
    assert records.get("eventhub/no/such.json") is None


def test_a_body_past_the_limit_is_cut_and_marked(records: BlobDeadLetters) -> None:
    whole = records.record("eventhub", "reason", b"x" * MAX_BODY)
    cut = records.record("eventhub", "reason", b"x" * (MAX_BODY + 10))
    assert "body_truncated" not in (records.get(whole) or ({}, ""))[0]
    record, _ = records.get(cut) or ({}, "")
    assert len(record["body"]) == MAX_BODY and record["body_truncated"] == MAX_BODY + 10


def test_each_record_is_counted_by_source_and_the_lead_of_its_reason(
    records: BlobDeadLetters,
) -> None:
    from tests.telemetry import counter, install

    install()
    source = f"src{uuid.uuid4().hex[:8]}"  # this test's own: the counters are process-wide
    records.record(source, "data.url: names 'x', not the subject's blob 'y'", "{}")
    records.record(source, "data.url: another blob", "{}")
    records.record(source, "body is not JSON: Expecting value", "")
    assert counter("retrain.dead_letters", source=source, reason="data.url") == 2
    assert counter("retrain.dead_letters", source=source, reason="body is not JSON") == 1
    # A lead that carries data (a blob name) or no ':' at all: "other", never the data.
    records.record(source, "training-data/x 1.csv: under no model's data prefix", "{}")
    records.record(source, "subject 'x' does not name a blob", "{}")
    assert counter("retrain.dead_letters", source=source, reason="other") == 2
