"""Data through the handlers with the data ledger (in-memory fakes): a storm of single-blob
events writes the aggregate once and makes one job; the caps; the redelivery of an event;
data stranded by a closing window found by the sweep; a job's data released in bounded
chunks after the close, by the sweep, with nothing trained twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.effects import SubmitTrainingJob
from orchestrator.aggregate import OutboxItem
from orchestrator.handlers import OPEN_WINDOW_REUSE, MessageHandlers, sweep_stranded_data
from orchestrator.messages import InvalidMessage
from orchestrator.outbox import RELEASE_CHUNK
from orchestrator.ports import TrainingBackendError
from tests.fakes import (
    DATA_ACCOUNT,
    InMemoryDataLedger,
    data_items,
    fake_runtime,
    landed,
    policy_yaml,
)
from triggers.envelopes import data_landed_envelope


def blob_event(model: str, n: int):
    """One blob landed, as the blob trigger sends it."""
    return data_landed_envelope(model, data_items(model, n), "blob")


def test_ten_thousand_blob_events_write_the_aggregate_once_and_make_one_job():
    w = fake_runtime()
    assert w.handle(blob_event("churn", 0)).status == "applied"
    opened = len(w.store.saves)  # the transition and the outbox's clean-up
    for n in range(1, 10_000):
        assert w.handle(blob_event("churn", n)).status == "applied"
    # Only the event that opened the window wrote the aggregate: no contention on its ETag.
    assert len(w.store.saves) == opened
    assert w.ledger.pending("churn").items == 10_000
    w.clock.advance(1)
    w.deliver_due()
    [request] = w.training.submissions
    assert len(set(request.data_uris)) == 10_000
    job = w.aggregate("churn").retrain.current_job
    assert job is not None and (job.manifest, job.data_count) == (request.run_id, 10_000)
    assert len(job.data_sample) == 5
    assert w.ledger.pending("churn").items == 0
    # The close deleted one chunk of the pending entries; the rest are hidden until the sweep.
    assert w.ledger.stored("churn") == 10_000 - RELEASE_CHUNK
    assert w.ledger.releasing("churn") == [request.run_id]
    assert len(w.aggregate("churn").model_dump_json()) < 16_000


def test_a_redelivered_event_adds_nothing_and_another_with_the_same_key_is_a_duplicate():
    w = fake_runtime()
    event = blob_event("churn", 1)
    w.handle(event)
    assert w.handle(event).status == "duplicate"  # it opened the window: remembered
    w.handle(blob_event("churn", 2))
    assert w.handle(blob_event("churn", 2)).status == "applied"  # counted again, added nothing
    copy = data_landed_envelope("churn", data_items("churn", 2), "eventhub")
    copy = copy.model_copy(update={"message_id": "churn:another-delivery"})
    assert w.handle(copy).status == "ignored"
    assert w.ledger.pending("churn").items == 2


def test_an_event_over_the_per_event_cap_is_dead_lettered_whole_with_its_reason():
    w = fake_runtime(policy_yaml("churn", retrain="{debounce: 1s, max_items_per_event: 3}"))
    with pytest.raises(InvalidMessage, match=r"4 data items .*max_items_per_event \(3\)"):
        w.handle(landed("churn", 1, 2, 3, 4))
    assert w.ledger.claims == 0 and w.ledger.pending("churn").items == 0  # nothing recorded
    assert w.handle(landed("churn", 1, 2, 3)).status == "applied"


def test_a_window_past_its_cap_leaves_the_rest_for_the_next_job_audited():
    retrain = "{debounce: 1s, cooldown: 0s, max_items_per_window: 40}"
    w = fake_runtime(policy_yaml("churn", retrain=retrain))
    w.handle(landed("churn", *range(30)))
    w.handle(landed("churn", *range(30, 100)))
    w.clock.advance(1)
    w.deliver_due()
    [first] = w.training.submissions
    assert len(first.data_uris) == 40
    assert "retrain.window_capped" in w.audit.actions("churn")
    assert w.ledger.pending("churn").items == 60
    for jobs in (1, 2):
        w.training.finish(w.training.jobs[-1], str(jobs))
        w.run(
            until=lambda jobs=jobs: len(w.training.submissions) > jobs,
            horizon=timedelta(hours=1),
        )
    sizes = [len(request.data_uris) for request in w.training.submissions]
    assert sizes == [40, 40, 20]
    every = [uri for request in w.training.submissions for uri in request.data_uris]
    assert sorted(every) == sorted(
        f"{DATA_ACCOUNT}/training-data/churn/{n}.csv" for n in range(100)
    )


def test_data_that_landed_while_its_window_closed_is_picked_up_by_the_sweep():
    w = fake_runtime()
    w.handle(blob_event("churn", 1))
    opened = w.aggregate("churn")
    # The race: an event read the aggregate with the window open, then the window closed
    # (submitting what it listed), then the event's item was recorded: it wrote nothing.
    w.clock.advance(1)
    w.deliver_due()
    assert len(w.training.submissions) == 1 and w.aggregate("churn").retrain.window is None
    late = blob_event("churn", 2)
    w.ledger.claim("churn", data_items("churn", 2), late.message_id, w.clock(), timedelta(days=1))
    assert opened.retrain.window is not None  # what the late event saw
    assert w.ledger.pending("churn").items == 1

    summary = w.runtime.maintenance.sweep()
    assert summary["failed"] == []
    window = w.aggregate("churn").retrain.window
    assert window is not None
    assert "retrain.stranded_data_found" in w.audit.actions("churn")
    # Nothing more is stranded: a second sweep opens nothing new.
    aggregate = w.aggregate("churn")
    policy = w.policies["churn"]
    assert (
        sweep_stranded_data(w.runtime.ports, w.runtime.outbox, "churn", policy, aggregate) is None
    )
    w.training.finish(w.training.jobs[0], "1")
    w.run(until=lambda: len(w.training.submissions) == 2, horizon=timedelta(hours=1))
    assert w.training.submissions[1].data_uris == [f"{DATA_ACCOUNT}/training-data/churn/2.csv"]


def test_a_submit_still_retrying_keeps_its_items_and_the_sweep_opens_no_window_for_them():
    w = fake_runtime()
    w.handle(blob_event("churn", 1))
    w.clock.advance(1)
    w.training.faults.fail_always("submit", TrainingBackendError("503", transient=True))
    with pytest.raises(TrainingBackendError):
        w.deliver_due()
    assert w.ledger.pending("churn").items == 1  # not sealed: the submit has not gone through
    w.runtime.maintenance.sweep()  # the submit fails again (counted); no window opened
    assert w.aggregate("churn").retrain.window is None
    assert "retrain.stranded_data_found" not in w.audit.actions("churn")

    w.training.faults.clear()
    w.runtime.maintenance.sweep()  # the submit goes through: its items are the run's
    assert len(w.training.submissions) == 1 and w.ledger.pending("churn").items == 0


def test_data_below_the_minimum_is_not_reopened_by_every_sweep():
    w = fake_runtime(policy_yaml("churn", retrain="{debounce: 1s, min_new_files: 3}"))
    w.handle(landed("churn", 1))
    w.clock.advance(1)
    w.deliver_due()
    assert "retrain.window_below_minimum" in w.audit.actions("churn")
    before = w.aggregate("churn").version
    w.runtime.maintenance.sweep()
    assert w.aggregate("churn").retrain.window is None
    assert w.aggregate("churn").version == before


def test_a_submit_saved_before_manifests_still_trains_on_its_whole_list():
    w = fake_runtime()
    legacy = {"kind": "submit_training_job", "run_id": "churn-old", "data_uris": ["a", "b"]}
    item = OutboxItem(id="1-0", effect=SubmitTrainingJob.model_validate(legacy))
    w.store.seed("churn", lambda a: a.model_copy(update={"outbox": [item]}))
    w.runtime.outbox.dispatch("churn")
    [request] = w.training.submissions
    assert (request.run_id, request.data_uris) == ("churn-old", ["a", "b"])


# --------------------------------------------------------------------------- release in chunks


def uris(*names: int) -> list[str]:
    return [f"{DATA_ACCOUNT}/training-data/churn/{n}.csv" for n in names]


def land(w, names: range) -> None:
    for start in range(names.start, names.stop, 250):
        w.handle(landed("churn", *range(start, min(start + 250, names.stop))))


def test_the_close_releases_one_chunk_and_the_sweep_the_rest_with_nothing_trained_twice():
    w = fake_runtime()
    w.runtime.outbox.release_chunk = 100
    w.runtime.maintenance.release_chunks_per_sweep = 3
    land(w, range(1000))
    w.clock.advance(1)
    w.deliver_due()
    [first] = w.training.submissions
    assert first.data_uris == uris(*range(1000))
    # The close's dispatch deleted one chunk; the others are hidden, no longer pending.
    assert (w.ledger.stored("churn"), w.ledger.pending("churn").items) == (900, 0)
    assert w.ledger.releasing("churn") == [first.run_id]

    # A second window closes, and its job is submitted, while the first is still releasing.
    land(w, range(1000, 1005))
    w.training.finish(first.run_id, "1")
    w.run(until=lambda: len(w.training.submissions) == 2, horizon=timedelta(hours=1))
    second = w.training.submissions[1]
    assert second.data_uris == uris(*range(1000, 1005))  # only what is new
    assert w.ledger.releasing("churn") == [first.run_id]  # the second released in its chunk

    reports = [w.runtime.maintenance.sweep() for _ in range(4)]
    assert [report["releasing"] for report in reports] == [
        [{"model": "churn", "run_id": first.run_id, "left": 600}],
        [{"model": "churn", "run_id": first.run_id, "left": 300}],
        [],  # 300 released by the third sweep: done
        [],
    ]
    assert all(report["failed"] == [] for report in reports)
    assert w.ledger.stored("churn") == 0 and w.ledger.releasing("churn") == []
    assert w.aggregate("churn").retrain.window is None  # the sweeps opened nothing


def test_a_redelivered_close_and_a_submit_redispatched_after_a_failed_release_train_once():
    w = fake_runtime()
    w.runtime.outbox.release_chunk = 100
    land(w, range(300))
    w.clock.advance(1)
    [(close, _)] = [(env, out) for env, out in w.deliver_due() if env.type != "TrainingJobCheck"]
    assert w.handle(close).status == "duplicate"  # redelivered: no second seal, no second job
    assert [request.run_id for request in w.training.submissions] == [w.training.jobs[0]]

    # The next window's submit went through, then its release failed: the effect stays.
    land(w, range(300, 420))
    w.ledger.faults.fail("release", ConnectionError("storage unreachable"))
    w.training.finish(w.training.jobs[0], "1")
    with pytest.raises(ConnectionError):
        w.run(until=lambda: len(w.training.submissions) == 2, horizon=timedelta(hours=1))
    second = w.training.submissions[1]
    assert second.data_uris == uris(*range(300, 420))
    assert w.aggregate("churn").outbox  # the submit, to be dispatched again
    report = w.runtime.maintenance.sweep()  # same manifest, same run; then its first chunk
    assert report["failed"] == []
    again = [r for r in w.training.submissions if r.run_id == second.run_id]
    assert len(again) == 2 and again[1].data_uris == second.data_uris
    assert not w.aggregate("churn").outbox
    w.runtime.maintenance.sweep()
    assert w.ledger.stored("churn") == 0 and w.ledger.pending("churn").items == 0
    every = [uri for request in w.training.submissions for uri in request.data_uris]
    assert sorted(set(every)) == sorted(uris(*range(420)))


def test_a_release_failing_in_the_sweep_is_reported_and_goes_on_at_the_next_sweep():
    w = fake_runtime()
    w.runtime.outbox.release_chunk = 10
    land(w, range(50))
    w.clock.advance(1)
    w.deliver_due()
    w.ledger.faults.fail("release", ConnectionError("storage unreachable"))
    report = w.runtime.maintenance.sweep()
    assert report["failed"] == [
        {"model": "churn", "error": "release: ConnectionError: storage unreachable"}
    ]
    assert report["releasing"] == [] and w.ledger.stored("churn") == 40
    assert w.ledger.pending("churn").items == 0  # still hidden meanwhile
    assert w.runtime.maintenance.sweep()["failed"] == []
    assert w.ledger.stored("churn") == 0 and w.ledger.releasing("churn") == []


def test_a_storm_reads_the_aggregate_once_per_reuse_period_not_once_per_event():
    w = fake_runtime(policy_yaml("churn", retrain="{debounce: 10m, quiet: 1m}"))
    w.handle(blob_event("churn", 0))  # opens the window
    reads = w.store.loads["churn"]
    for n in range(1, 1_000):
        assert w.handle(blob_event("churn", n)).status == "applied"
    assert w.store.loads["churn"] == reads + 1  # the first event after the window opened
    w.clock.advance(OPEN_WINDOW_REUSE.total_seconds())
    w.handle(blob_event("churn", 1_000))
    assert w.store.loads["churn"] == reads + 2  # the copy is too old now: read again
    w.handle(blob_event("churn", 1_001))
    w.run(until=lambda: bool(w.training.submissions), horizon=timedelta(hours=1))
    [request] = w.training.submissions
    assert len(set(request.data_uris)) == 1_002
    # The close was another message for the model: the next event reads afresh, and opens
    # a window.
    loads = w.store.loads["churn"]
    w.handle(blob_event("churn", 2_000))
    assert w.store.loads["churn"] > loads and w.aggregate("churn").retrain.window is not None


def test_a_short_quiet_period_shortens_the_reuse():
    w = fake_runtime(policy_yaml("churn", retrain="{debounce: 10m, quiet: 2s}"))
    w.handle(blob_event("churn", 0))
    w.handle(blob_event("churn", 1))
    reads = w.store.loads["churn"]
    w.clock.advance(1)  # half the quiet period: too old
    w.handle(blob_event("churn", 2))
    assert w.store.loads["churn"] == reads + 1


def test_a_window_closed_by_another_instance_is_never_taken_for_open():
    # The shortest wait for more data is the 3 s debounce (quiet 1 m): a copy is reused 1.5 s.
    w = fake_runtime(policy_yaml("churn", retrain="{debounce: 3s, cooldown: 0s}"))
    w.handle(blob_event("churn", 1))
    w.handle(blob_event("churn", 2))  # landed: this instance may reuse its read for 1.5 s
    reads = w.store.loads["churn"]
    w.clock.advance(1)
    w.handle(blob_event("churn", 2))  # a redelivery: reuses the copy, and does not renew it
    assert w.store.loads["churn"] == reads
    # Another instance (on the same stores) closes the window at its end.
    other = MessageHandlers(w.runtime.ports, w.runtime.outbox)
    w.clock.advance(2)
    for envelope in w.bus.due(w.clock()):
        other.handle(envelope)
    assert len(w.training.submissions) == 1 and w.aggregate("churn").retrain.window is None
    # This instance's copy is too old to say the window is open: it reads, and opens one.
    assert w.handle(blob_event("churn", 3)).status == "applied"
    assert w.store.loads["churn"] > reads
    assert w.aggregate("churn").retrain.window is not None
    assert w.ledger.pending("churn").items == 1


class ReleaseStartsThenFails(InMemoryDataLedger):
    """A release that hides the run's items (its marker) and then loses its storage."""

    failing = True

    def release(self, model: str, run_id: str, limit: int) -> int:
        if self.failing:
            self._releasing.setdefault((model, run_id), 0)
            raise OSError("storage went away in the middle of the release")
        return super().release(model, run_id, limit)


def test_a_release_that_fails_once_started_leaves_the_submitted_job_alone():
    ledger = ReleaseStartsThenFails()
    w = fake_runtime(ledger=ledger)
    for n in range(3):
        w.handle(blob_event("churn", n))
    w.clock.advance(1)
    w.deliver_due()  # the close submits; its release starts, then fails
    [request] = w.training.submissions
    assert len(request.data_uris) == 3
    assert w.ledger.releasing("churn") == [request.run_id]
    job = w.aggregate("churn").retrain.current_job
    assert job is not None and job.run_id == request.run_id
    outbox = w.aggregate("churn").outbox
    assert not any(item.effect.kind == "submit_training_job" for item in outbox)
    assert w.training.cancellations == []
    # The sweep goes on with it once the storage is back; nothing is trained twice.
    ledger.failing = False
    w.runtime.maintenance.sweep()
    assert w.ledger.releasing("churn") == [] and w.ledger.pending("churn").items == 0
    assert len(w.training.submissions) == 1
