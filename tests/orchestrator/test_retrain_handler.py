"""Data landing -> exactly one training job per window, through the real handler, state store
and queue on Azurite."""

from __future__ import annotations

from adapters.storage_queue_bus import decode_body
from orchestrator.messages import Envelope, parse_envelope
from retrain.commands import DataItem
from tests.harness import RecordingTrainingBackend, ShiftedClock, policy_yaml, pump
from triggers.envelopes import data_landed_envelope


def landed(model: str, start: int, count: int) -> Envelope:
    items = [
        DataItem(
            uri=f"https://acct.blob.core.windows.net/training-data/{model}/{n}.csv",
            key=f"blob:{model}/{n}.csv@etag{n}",
        )
        for n in range(start, start + count)
    ]
    return data_landed_envelope(model, items, "eventhub")


# On Azurite a new item costs three requests (shard read, pending create, shard write): the
# test is scaled to 500 items in 10 batches to stay quick on a shared machine. The full
# 10,000 single-blob storm on Azurite is benchmarks/bench_data_ledger.py; on the in-memory
# ledger, tests/orchestrator/test_data_ledger_flow.py.
ITEMS = 500


def test_five_hundred_items_in_one_window_make_one_job(make_runtime):
    backend = RecordingTrainingBackend()
    policies = {"churn": policy_yaml("churn"), "fraud": policy_yaml("fraud")}
    runtime = make_runtime(policies, training=backend)
    size = ITEMS // 10
    batches = [landed("churn", start, size) for start in range(0, ITEMS, size)]
    for batch in batches:
        assert runtime.handlers.handle(batch).status == "applied"
    # Event Hubs redelivers a batch (its own items count again: already pending, nothing
    # added), and a producer sends the same events again (all duplicates).
    version = runtime.ports.store.load("churn")[0].version
    assert runtime.handlers.handle(batches[3]).status == "applied"
    again = landed("churn", size // 2, size)
    assert runtime.handlers.handle(again).status == "ignored"
    assert runtime.ports.ledger.pending("churn").items == ITEMS
    assert runtime.ports.store.load("churn")[0].version == version  # the open window carried them
    runtime.handlers.handle(landed("fraud", 0, 3))

    pump(runtime, until=lambda: len(backend.jobs) == 2)
    pump(runtime, rounds=8)  # nothing more arrives: no second job per model

    assert len(backend.jobs) == 2
    by_model = {request.model: request for request in backend.submissions}
    assert len(set(by_model["churn"].data_uris)) == len(by_model["churn"].data_uris) == ITEMS
    assert len(by_model["fraud"].data_uris) == 3
    state = runtime.queries.model_status("churn")["retrain"]
    job = state["current_job"]
    assert job["run_id"] == by_model["churn"].run_id
    assert (job["manifest"], job["data_count"]) == (job["run_id"], ITEMS)
    assert len(job["data_sample"]) == 5
    # The job has its data: nothing is pending any more, and the aggregate stayed small.
    assert runtime.ports.ledger.pending("churn").items == 0
    assert len(runtime.ports.store.load("churn")[0].model_dump_json()) < 16_000


def test_a_job_that_never_ends_is_canceled_once_and_the_run_recorded(make_runtime):
    retrain = "{debounce: 1s, min_new_files: 1, cooldown: 0s, poll_interval: 1s, "
    retrain += "max_poll_interval: 1s, max_job_duration: 3s}"
    backend = RecordingTrainingBackend()  # its jobs stay "queued" until canceled
    runtime = make_runtime({"churn": policy_yaml("churn", retrain=retrain)}, training=backend)
    runtime.handlers.handle(landed("churn", 0, 2))

    outcomes = pump(runtime, rounds=80, until=lambda: bool(backend.cancellations))
    [run_id] = backend.jobs
    assert backend.cancellations == [run_id]
    run = runtime.queries.model_status("churn")["retrain"]["runs"][-1]
    assert (run["run_id"], run["status"]) == (run_id, "failed")
    assert "max_job_duration" in run["error"]
    assert outcomes[-1].status == "applied"
    # A late check for the ended run changes nothing and cancels nothing again.
    late = runtime.signer.sign(
        Envelope.new("TrainingJobCheck", "churn", {"run_id": run_id, "attempt": 99})
    )
    assert runtime.handlers.handle(late).status == "ignored"
    assert backend.cancellations == [run_id]
    assert runtime.queries.model_status("churn")["retrain"]["current_job"] is None


def test_a_check_for_a_run_that_is_not_running_asks_the_backend_nothing(make_runtime):
    backend = RecordingTrainingBackend()  # status() of a job it never saw would raise
    runtime = make_runtime({"churn": policy_yaml("churn")}, training=backend)
    check = runtime.signer.sign(
        Envelope.new("TrainingJobCheck", "churn", {"run_id": "churn-gone", "attempt": 3})
    )
    outcome = runtime.handlers.handle(check)
    assert outcome.status == "ignored" and "churn-gone" in (outcome.reason or "")
    assert backend.states == {}


def test_the_sweep_ends_a_job_whose_checks_were_lost(make_runtime):
    from datetime import timedelta

    retrain = "{debounce: 1s, min_new_files: 1, cooldown: 0s, max_job_duration: 2h}"
    backend = RecordingTrainingBackend()  # the job stays "queued"
    clock = ShiftedClock()
    policies = {"churn": policy_yaml("churn", retrain=retrain)}
    runtime = make_runtime(policies, clock=clock, training=backend)
    runtime.handlers.handle(landed("churn", 0, 1))
    pump(runtime, until=lambda: bool(backend.jobs))
    [run_id] = backend.jobs
    queue = runtime.queue(runtime.settings.orchestrator_queue)
    queue.clear_messages()  # the scheduled checks are lost
    assert runtime.maintenance.sweep()["overdue_jobs"] == []  # not overdue yet: nothing sent

    clock.advance(timedelta(hours=2))
    assert runtime.maintenance.sweep()["overdue_jobs"] == [run_id]
    [check] = [parse_envelope(decode_body(m.content)) for m in queue.receive_messages()]
    assert check.type == "TrainingJobCheck" and check.payload["run_id"] == run_id
    assert runtime.handlers.handle(check).status == "applied"
    run = runtime.queries.model_status("churn")["retrain"]["runs"][-1]
    assert (run["run_id"], run["status"]) == (run_id, "failed")
    assert backend.cancellations == [run_id]
    assert runtime.maintenance.sweep()["overdue_jobs"] == []  # ended: nothing more to check
