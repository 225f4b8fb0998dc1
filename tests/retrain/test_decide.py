"""The retrain policy: pure decisions, no I/O, the clock injected.

`Run` plays the service layer's part around `decide` with the in-memory data ledger: it
claims data before deciding, passes the observations the rules ask for, and seals and
releases a job's manifest as the outbox does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.effects import CancelTrainingJob, SendMessage, SubmitTrainingJob
from domain.policy import ModelPolicy
from retrain.commands import (
    COMMANDS,
    DATA_SAMPLE,
    DataItem,
    DataLanded,
    PendingData,
    PendingDataFound,
    RetrainCommand,
    RetrainRequested,
    RetrainWindowClosed,
    TrainingJobStatus,
)
from retrain.decide import decide, items_over_cap, observation_needed, poll_delay
from retrain.state import MAX_RUNS, RetrainTracker
from tests.fakes import InMemoryDataLedger

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def policy(model: str = "churn", **retrain: Any) -> ModelPolicy:
    defaults: dict[str, Any] = {
        "debounce": "10m",
        "min_new_files": 1,
        "min_new_rows": 0,
        "cooldown": "0s",
    }
    return ModelPolicy.model_validate(
        {
            "model": model,
            "endpoint": "churn-ep",
            "data": {"container": "data", "prefix": f"{model}/"},
            "retrain": defaults | retrain,
        }
    )


def item(n: int, rows: int | None = None, model: str = "churn") -> DataItem:
    uri = f"https://acct.blob.core.windows.net/data/{model}/part-{n}.csv"
    return DataItem(uri=uri, key=f"{uri}@etag-{n}", rows=rows)


def landed(*items: DataItem) -> DataLanded:
    return DataLanded(items=list(items), source="blob")


class Run:
    """Feeds commands through decide, keeping the tracker and every effect; the data ledger
    (claims, pending, manifests) as the service layer and the outbox use it."""

    def __init__(self, pol: ModelPolicy, tracker: RetrainTracker | None = None) -> None:
        self.policy = pol
        self.tracker = tracker or RetrainTracker()
        self.ledger = InMemoryDataLedger()
        self.effects: list[Any] = []
        self.ignored: list[str] = []
        self.data: dict[str, list[str]] = {}  # run id -> the URIs its job was given
        self._messages = 0

    @property
    def pending(self) -> PendingData:
        return self.ledger.pending(self.policy.model)

    def observe(
        self, command: RetrainCommand, now: datetime, claimant: str | None = None
    ) -> RetrainCommand:
        model, keep = self.policy.model, self.policy.retrain.dedup_retention
        self._messages += 1
        claimant = claimant or f"message-{self._messages}"
        if isinstance(command, DataLanded):
            counted = self.ledger.claim(model, command.items, claimant, now, keep)
            command = command.model_copy(update={"new_items": len(counted)})
        elif isinstance(command, RetrainRequested) and command.data_uri is not None:
            named = DataItem(uri=command.data_uri, key=command.data_uri)
            counted = self.ledger.claim(model, [named], claimant, now, keep)
            command = command.model_copy(update={"data_known": not counted})
        if observation_needed(self.tracker, command):
            command = command.model_copy(update={"pending": self.pending})
        return command

    def __call__(self, command: RetrainCommand, now: datetime, claimant: str | None = None) -> Any:
        command = self.observe(command, now, claimant)
        decision = decide(self.tracker, command, self.policy, now)
        assert decision.audit or decision.ignored or decision.state is self.tracker, (
            "every transition is audited"
        )
        self.tracker = decision.state
        self.effects.extend(decision.effects)
        if decision.ignored:
            self.ignored.append(decision.ignored)
        for effect in decision.effects:
            if isinstance(effect, SubmitTrainingJob):
                self.data[effect.run_id] = self._dispatch(effect)
        return decision

    def _dispatch(self, submit: SubmitTrainingJob) -> list[str]:
        """What Outbox._submit_training does with the data ledger."""
        model = self.policy.model
        if submit.manifest == submit.run_id:
            uris = self.ledger.seal(model, submit.run_id, submit.data_count)
            # Only the first item: the rest waits for a sweep that never comes here, and its
            # items stay hidden all the same.
            self.ledger.release(model, submit.run_id, 1)
            return uris
        if submit.manifest is not None:
            return self.ledger.manifest(model, submit.manifest) or []
        return list(submit.data_sample)

    def uris(self, submit: SubmitTrainingJob) -> list[str]:
        return self.data[submit.run_id]

    def messages(self, message_type: str) -> list[SendMessage]:
        return [
            e for e in self.effects if isinstance(e, SendMessage) and e.message_type == message_type
        ]

    def submits(self) -> list[SubmitTrainingJob]:
        return [e for e in self.effects if isinstance(e, SubmitTrainingJob)]

    def close_due(self, now: datetime | None = None) -> Any:
        """Deliver the latest scheduled RetrainWindowClosed, at its time."""
        message = self.messages("RetrainWindowClosed")[-1]
        command = RetrainWindowClosed.model_validate(message.payload)
        return self(command, now or message.not_before)

    def finish(
        self,
        state: str = "completed",
        version: str | None = "5",
        now: datetime | None = None,
        error: str | None = None,
    ) -> Any:
        job = self.tracker.current_job
        assert job is not None
        status = TrainingJobStatus(
            run_id=job.run_id,
            state=state,
            registered_version=version,
            error=error,
            attempt=job.checks,
        )
        return self(status, now or T0 + timedelta(hours=1))


def test_commands_are_registered_by_message_type() -> None:
    assert set(COMMANDS) == {
        "DataLanded",
        "RetrainRequested",
        "RetrainWindowClosed",
        "TrainingJobCheck",
        "TrainingJobStatus",
    }


def test_first_item_opens_a_window_and_schedules_its_close() -> None:
    run = Run(policy())
    decision = run(landed(item(1)), T0)
    [message] = decision.effects
    assert isinstance(message, SendMessage)
    window = run.tracker.window
    assert window is not None
    assert message.message_type == "RetrainWindowClosed"
    assert message.message_id == f"churn:window:{window.id}"
    assert message.not_before == T0 + timedelta(minutes=10)
    assert message.payload == {"window_id": window.id, "seq": 0}
    assert [a.action for a in decision.audit] == [
        "retrain.data_accumulated",
        "retrain.window_opened",
    ]


def test_ten_thousand_events_in_one_window_yield_one_job() -> None:
    run = Run(policy())
    for n in range(10_000):
        run(landed(item(n)), T0 + timedelta(milliseconds=n * 50))
    assert len(run.messages("RetrainWindowClosed")) == 1
    assert run.submits() == []
    run.close_due()
    [submit] = run.submits()
    assert submit.data_count == len(run.uris(submit)) == 10_000
    assert submit.manifest == submit.run_id and len(submit.data_sample) == DATA_SAMPLE
    assert submit.run_id == f"churn-{run.messages('RetrainWindowClosed')[0].payload['window_id']}"
    [check] = run.messages("TrainingJobCheck")
    assert check.message_id == f"{submit.run_id}:check:1"
    assert check.payload == {"run_id": submit.run_id, "attempt": 1}
    assert run.pending.items == 0 and run.tracker.window is None


def test_a_storm_that_outlasts_the_debounce_still_makes_one_job() -> None:
    """The window closes once no data has landed for `quiet` (1 minute by default)."""
    run = Run(policy())  # debounce 10m
    for n in range(600):  # one blob a second, still landing when the window's time is up
        run(landed(item(n)), T0 + timedelta(seconds=n))
    decision = run.close_due()  # at T0 + 10m: the last blob landed 1 s ago
    assert [a.action for a in decision.audit] == ["retrain.window_extended"]
    assert run.tracker.window.closes_at == T0 + timedelta(seconds=599 + 60)
    for n in range(600, 700):
        run(landed(item(n)), T0 + timedelta(seconds=n))
    run.close_due()  # still landing: extended again
    assert run.submits() == [] and run.tracker.window.seq == 2
    run.close_due()  # a quiet minute: one job on every blob
    [submit] = run.submits()
    assert submit.data_count == len(run.uris(submit)) == 700


def test_a_window_closes_at_max_window_however_long_data_keeps_landing() -> None:
    run = Run(policy(max_window="15m"))
    for n in range(600):
        run(landed(item(n)), T0 + timedelta(seconds=n))
    run.close_due()
    for n in range(600, 900):
        run(landed(item(n)), T0 + timedelta(seconds=n))
    run.close_due()  # at T0 + 659 s
    assert run.tracker.window.closes_at == T0 + timedelta(minutes=15)  # capped
    decision = run.close_due()
    [submit] = run.submits()
    assert submit.data_count == 900
    assert [a.action for a in decision.audit] != ["retrain.window_extended"]


def test_events_an_open_window_carries_change_nothing_in_the_tracker() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    opened = run.tracker
    decision = run(landed(item(2)), T0 + timedelta(minutes=1))
    # Nothing to write: concurrent events on one model do not contend on its aggregate.
    assert decision.state is opened and decision.effects == [] and decision.audit == []
    assert decision.ignored is None and run.pending.items == 2


def test_duplicates_are_ignored_within_and_across_windows() -> None:
    run = Run(policy())
    run(landed(item(1), item(1), item(2)), T0)
    assert run.pending.items == 2
    decision = run(landed(item(1)), T0 + timedelta(minutes=1))
    assert decision.ignored and "duplicate" in decision.ignored
    assert decision.state is run.tracker
    run.close_due()
    run.finish()
    # A later window: the old keys still count as seen.
    run(landed(item(2), item(3)), T0 + timedelta(hours=2))
    assert run.pending.sample == [item(3).uri]
    run.close_due()
    assert run.uris(run.submits()[-1]) == [item(3).uri]


def test_a_redelivered_message_counts_its_own_items_again_until_a_job_takes_them() -> None:
    run = Run(policy())
    first = run(landed(item(1)), T0, claimant="m1")
    again = run(landed(item(1)), T0 + timedelta(seconds=5), claimant="m1")
    assert first.effects and not again.ignored  # the same message: its item still counts
    assert run.pending.items == 1
    other = run(landed(item(1)), T0 + timedelta(seconds=6), claimant="m2")
    assert other.ignored and "duplicate" in other.ignored
    run.close_due()
    # The job has taken it: now the same message delivered late is a duplicate too.
    late = run(landed(item(1)), T0 + timedelta(hours=1), claimant="m1")
    assert late.ignored and "duplicate" in late.ignored


def test_keys_are_forgotten_after_the_retention_window() -> None:
    run = Run(policy(dedup_retention="1d"))
    run(landed(item(1)), T0)
    run.close_due()
    run.finish()
    assert run(landed(item(1)), T0 + timedelta(hours=23)).ignored
    assert not run(landed(item(1)), T0 + timedelta(days=1, hours=1)).ignored


def test_a_new_etag_is_new_data() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    rewritten = DataItem(uri=item(1).uri, key=f"{item(1).uri}@etag-new")
    run(landed(rewritten), T0 + timedelta(minutes=1))
    assert run.pending.items == 2


def test_two_models_yield_two_jobs() -> None:
    churn, fraud = Run(policy("churn")), Run(policy("fraud"))
    for n in range(50):
        churn(landed(item(n, model="churn")), T0 + timedelta(seconds=n))
        fraud(landed(item(n, model="fraud")), T0 + timedelta(seconds=n))
    churn.close_due()
    fraud.close_due()
    [a], [b] = churn.submits(), fraud.submits()
    assert a.run_id.startswith("churn-") and b.run_id.startswith("fraud-")
    assert a.run_id.removeprefix("churn-") == b.run_id.removeprefix("fraud-")
    assert len(churn.uris(a)) == len(fraud.uris(b)) == 50


def test_below_minimum_keeps_accumulating_until_a_later_window_meets_it() -> None:
    run = Run(policy(min_new_files=3, min_new_rows=100))
    run(landed(item(1, rows=40), item(2, rows=40)), T0)
    decision = run.close_due()
    assert decision.effects == [] and run.submits() == []
    assert decision.audit[0].action == "retrain.window_below_minimum"
    assert run.tracker.window is None and run.pending.items == 2
    # The next item re-opens a window; its close counts everything pending.
    run(landed(item(3, rows=40)), T0 + timedelta(hours=1))
    assert len(run.messages("RetrainWindowClosed")) == 2
    run.close_due()
    [submit] = run.submits()
    assert len(run.uris(submit)) == 3 == submit.data_count


def test_rows_minimum_applies_only_where_rows_are_known() -> None:
    run = Run(policy(min_new_files=1, min_new_rows=1_000))
    run(landed(item(1, rows=10)), T0)
    run.close_due()
    assert run.submits() == []
    run(landed(item(2, rows=None)), T0 + timedelta(hours=1))
    run.close_due()  # one item without a row count: the rows minimum cannot be judged
    assert len(run.submits()) == 1


def test_cooldown_moves_the_close_to_the_end_of_the_cooldown() -> None:
    run = Run(policy(cooldown="30m"))
    run(landed(item(1)), T0)
    run.close_due()
    ended = T0 + timedelta(minutes=20)
    run.finish(now=ended)
    run(landed(item(2)), ended + timedelta(minutes=1))
    decision = run.close_due()  # at ended + 11m: inside the cooldown
    [moved] = decision.effects
    assert isinstance(moved, SendMessage)
    assert moved.not_before == ended + timedelta(minutes=30)
    assert moved.message_id.endswith(":1") and moved.payload["seq"] == 1
    assert len(run.submits()) == 1
    # The first scheduling of that close, delivered again, is stale.
    stale = RetrainWindowClosed(window_id=run.tracker.window.id, seq=0)
    assert run(stale, ended + timedelta(minutes=31)).ignored
    run.close_due()
    assert len(run.submits()) == 2


def test_a_window_closing_during_a_job_gives_exactly_one_follow_up() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    run.close_due()
    first = run.submits()[0]
    for n in range(2, 5):  # three more windows while the job runs
        run(landed(item(n)), T0 + timedelta(minutes=20 * n))
        run.close_due()
    assert len(run.submits()) == 1 and run.tracker.follow_up_pending
    run(
        TrainingJobStatus(run_id=first.run_id, state="running", attempt=1),
        T0 + timedelta(minutes=90),
    )
    decision = run.finish(now=T0 + timedelta(hours=2))
    submits = run.submits()
    assert len(submits) == 2
    assert run.uris(submits[1]) == [item(n).uri for n in range(2, 5)]
    [promotion] = [
        e
        for e in decision.effects
        if isinstance(e, SendMessage) and e.message_type == "StartPromotion"
    ]
    assert promotion.payload == {"candidate_version": "5", "run_id": first.run_id}
    assert promotion.message_id == f"{first.run_id}:start-promotion"
    assert not run.tracker.follow_up_pending


def test_follow_up_waits_for_the_cooldown() -> None:
    run = Run(policy(cooldown="15m"))
    run(landed(item(1)), T0)
    run.close_due()
    run(landed(item(2)), T0 + timedelta(minutes=11))
    run.close_due()
    ended = T0 + timedelta(hours=1)
    decision = run.finish(state="failed", version=None, error="OOM", now=ended)
    assert len(run.submits()) == 1
    [close] = [e for e in decision.effects if isinstance(e, SendMessage)]
    assert close.message_type == "RetrainWindowClosed"
    assert close.not_before == ended + timedelta(minutes=15)
    assert run.tracker.runs[-1].status == "failed" and run.tracker.runs[-1].error == "OOM"
    run.close_due()
    assert len(run.submits()) == 2


def test_job_status_polling_backs_off_and_is_bounded() -> None:
    pol = policy()
    run = Run(pol)
    run(landed(item(1)), T0)
    run.close_due()
    run_id = run.submits()[0].run_id
    now = T0 + timedelta(minutes=11)
    for attempt in range(1, 9):
        decision = run(TrainingJobStatus(run_id=run_id, state="running", attempt=attempt), now)
        [check] = decision.effects
        assert isinstance(check, SendMessage)
        assert check.message_id == f"{run_id}:check:{attempt + 1}"
        assert check.not_before == now + poll_delay(pol, attempt + 1)
        assert check.not_before - now <= pol.retrain.max_poll_interval
    assert poll_delay(pol, 2) == 2 * pol.retrain.poll_interval
    # A check answer that was superseded is stale.
    assert run(TrainingJobStatus(run_id=run_id, state="running", attempt=3), now).ignored


def test_a_job_running_past_max_job_duration_is_canceled_and_the_model_trains_again() -> None:
    pol = policy(max_job_duration="2h")
    run = Run(pol)
    run(landed(item(1)), T0)
    run.close_due()
    run_id = run.submits()[0].run_id
    submitted = run.tracker.current_job.submitted_at  # type: ignore[union-attr]
    before = run(
        TrainingJobStatus(run_id=run_id, state="running", attempt=1),
        submitted + timedelta(hours=2) - timedelta(seconds=1),
    )
    assert not any(isinstance(e, CancelTrainingJob) for e in before.effects)
    run(landed(item(2)), submitted + timedelta(hours=1))  # waits for the job: a follow-up
    late = submitted + timedelta(hours=2)
    decision = run(TrainingJobStatus(run_id=run_id, state="running", attempt=2), late)
    [cancel] = [e for e in decision.effects if isinstance(e, CancelTrainingJob)]
    assert cancel.run_id == run_id and "max_job_duration" in cancel.reason
    assert run.tracker.current_job is None
    record = run.tracker.runs[-1]
    assert record.status == "failed" and "max_job_duration" in (record.error or "")
    assert not run.messages("StartPromotion")
    # The same (late) answer again, or the job's own final word later, changes nothing.
    assert run(TrainingJobStatus(run_id=run_id, state="running", attempt=2), late).ignored
    assert run(TrainingJobStatus(run_id=run_id, state="completed", attempt=3), late).ignored
    # The data that waited gets its own job.
    run.close_due(late)
    assert run.uris(run.submits()[-1]) == [item(2).uri]


def test_stale_statuses_are_ignored() -> None:
    run = Run(policy())
    assert run(TrainingJobStatus(run_id="nope", state="completed"), T0).ignored
    run(landed(item(1)), T0)
    run.close_due()
    run.finish()
    run_id = run.tracker.runs[-1].run_id
    decision = run(TrainingJobStatus(run_id=run_id, state="failed", error="late"), T0)
    assert decision.ignored and run.tracker.runs[-1].status == "completed"
    assert run(RetrainWindowClosed(window_id="w-unknown"), T0).ignored


def test_completed_without_a_version_records_an_error_and_no_promotion() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    run.close_due()
    decision = run.finish(version=None)
    assert run.messages("StartPromotion") == []
    assert "without registering" in (run.tracker.runs[-1].error or "")
    assert decision.audit[0].action == "retrain.job_completed"


def test_manual_request_skips_the_debounce() -> None:
    run = Run(policy(cooldown="1h"))
    run(landed(item(1)), T0)
    decision = run(
        RetrainRequested(reason="hotfix", requested_by="alice", run_id="churn-manual-1"), T0
    )
    [submit] = run.submits()
    assert submit.run_id == "churn-manual-1" and run.uris(submit) == [item(1).uri]
    assert "alice" in submit.reason
    assert any(a.action == "retrain.job_submitted" for a in decision.audit)
    # The window's scheduled close is now stale.
    assert run.close_due().ignored
    # The same request again (a retried HTTP call) changes nothing.
    again = run(RetrainRequested(run_id="churn-manual-1", requested_by="alice"), T0)
    assert again.ignored


def test_manual_request_respects_the_minimum_without_force() -> None:
    run = Run(policy(min_new_files=5))
    uri = "https://acct.blob.core.windows.net/data/churn/extra.csv"
    decision = run(RetrainRequested(data_uri=uri, requested_by="bob"), T0)
    assert run.submits() == [] and decision.audit[-1].action == "retrain.request_below_minimum"
    assert run.pending.sample == [uri]
    # Force skips the minimum; the data URI already pending is not added twice.
    run(RetrainRequested(data_uri=uri, force=True, requested_by="bob"), T0)
    [submit] = run.submits()
    assert run.uris(submit) == [uri]


def test_manual_request_while_running_is_a_follow_up() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    run.close_due()
    run(landed(item(2)), T0 + timedelta(minutes=11))
    run(RetrainRequested(requested_by="carol", reason="new features"), T0 + timedelta(minutes=12))
    assert len(run.submits()) == 1 and run.tracker.follow_up_pending
    run.finish(now=T0 + timedelta(hours=1))
    submits = run.submits()
    assert len(submits) == 2 and run.uris(submits[1]) == [item(2).uri]
    assert "carol" in submits[1].reason


def test_force_with_nothing_new_retrains_on_the_last_data() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    run.close_due()
    run.finish()
    assert run(RetrainRequested(requested_by="dave"), T0 + timedelta(hours=2)).ignored
    run(RetrainRequested(requested_by="dave", force=True), T0 + timedelta(hours=2))
    first, again = run.submits()
    assert again.manifest == first.run_id and run.uris(again) == [item(1).uri]
    # A data URI already trained on is not new data, but force trains on it.
    run.finish(now=T0 + timedelta(hours=3))
    run(
        RetrainRequested(requested_by="dave", force=True, data_uri=item(1).uri),
        T0 + timedelta(hours=4),
    )
    assert run.uris(run.submits()[-1]) == [item(1).uri]
    assert run.pending.items == 0  # the URI was known: not pending again


def test_a_manual_request_naming_known_data_is_not_new_data() -> None:
    # Blob keys are name@etag, not the URI: a URI that is in the running job or was trained
    # on is still a duplicate when a person names it; one pending is trained on once.
    run = Run(policy())
    run(landed(item(1)), T0)
    pending = run(RetrainRequested(requested_by="erin", data_uri=item(1).uri), T0)
    [submit] = [e for e in pending.effects if isinstance(e, SubmitTrainingJob)]
    assert run.uris(submit) == [item(1).uri]
    running = run(RetrainRequested(requested_by="erin", data_uri=item(1).uri), T0)
    assert running.audit[0].action == "retrain.data_duplicate"
    assert not run.tracker.follow_up_pending
    run.finish()
    trained = run(
        RetrainRequested(requested_by="erin", data_uri=item(1).uri), T0 + timedelta(hours=2)
    )
    assert trained.ignored == "below the minimum new data"
    assert len(run.submits()) == 1 and run.pending.items == 0
    fresh = run(
        RetrainRequested(requested_by="erin", data_uri=item(2).uri), T0 + timedelta(hours=2)
    )
    assert [run.uris(e) for e in fresh.effects if isinstance(e, SubmitTrainingJob)] == [
        [item(2).uri]
    ]


def test_data_of_a_failed_run_named_again_is_new_data() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    run.close_due()
    run.finish(state="failed", version=None, error="step train failed")
    again = run(
        RetrainRequested(requested_by="erin", data_uri=item(1).uri), T0 + timedelta(hours=2)
    )
    assert again.audit[0].action != "retrain.data_duplicate"
    [submit] = [e for e in again.effects if isinstance(e, SubmitTrainingJob)]
    assert run.uris(submit) == [item(1).uri]


def test_the_tracker_stays_small_whatever_the_data() -> None:
    run = Run(policy())
    for window in range(MAX_RUNS + 5):
        start = T0 + timedelta(hours=2 * window)
        run(landed(*(item(window * 1000 + n) for n in range(1000))), start)
        run.close_due()
        run.finish(now=start + timedelta(hours=1))
    assert len(run.tracker.runs) == MAX_RUNS
    assert all(r.data_count == 1000 and len(r.data_sample) == DATA_SAMPLE for r in run.tracker.runs)
    assert len(run.tracker.model_dump_json()) < 16_000


def test_a_window_takes_at_most_its_cap_and_the_rest_waits_for_the_next_job() -> None:
    run = Run(policy(max_items_per_window=100))
    run(landed(*(item(n) for n in range(250))), T0)
    decision = run.close_due()
    [first] = run.submits()
    assert first.data_count == 100 and run.uris(first) == [item(n).uri for n in range(100)]
    capped = [a for a in decision.audit if a.action == "retrain.window_capped"]
    assert capped[0].detail == {
        "run_id": first.run_id,
        "taken": 100,
        "left_pending": 150,
        "max_items_per_window": 100,
    }
    assert run.pending.items == 150 and run.tracker.follow_up_pending
    run.finish(now=T0 + timedelta(hours=1))
    run.close_due()
    run.finish(now=T0 + timedelta(hours=2))
    run.close_due()
    assert [s.data_count for s in run.submits()] == [100, 100, 50]
    taken = [uri for submit in run.submits() for uri in run.uris(submit)]
    assert taken == [item(n).uri for n in range(250)]  # each once, oldest first
    assert run.pending.items == 0 and not run.tracker.follow_up_pending


def test_an_event_over_the_per_event_cap_is_refused_with_its_reason() -> None:
    pol = policy(max_items_per_event=3)
    assert items_over_cap(3, pol) is None
    reason = items_over_cap(4, pol)
    assert reason is not None and "max_items_per_event (3)" in reason and "churn" in reason


def test_the_default_caps_let_ten_thousand_blobs_make_one_job() -> None:
    defaults = ModelPolicy.model_validate(
        {"model": "m", "endpoint": "m-ep", "data": {"container": "data"}}
    ).retrain
    assert defaults.max_items_per_window >= 10_000 and defaults.max_items_per_event >= 1
    with pytest.raises(ValidationError):
        policy(max_items_per_window=0)


def test_data_stranded_by_a_closing_window_gets_a_window_from_the_sweep() -> None:
    run = Run(policy(min_new_files=2))
    run(landed(item(1)), T0)
    run.close_due()  # below the minimum: one item left pending on purpose
    left = run.pending
    assert run(PendingDataFound(pending=left), T0 + timedelta(minutes=11)).ignored
    # An item that landed while the window was closing: nothing opened a window for it.
    run.ledger.claim("churn", [item(2)], "late", T0, timedelta(days=1))
    decision = run(PendingDataFound(pending=run.pending), T0 + timedelta(minutes=12))
    assert [a.action for a in decision.audit] == [
        "retrain.stranded_data_found",
        "retrain.window_opened",
    ]
    run.close_due()
    assert run.uris(run.submits()[0]) == [item(1).uri, item(2).uri]


def test_the_rules_refuse_to_guess_an_observation() -> None:
    run = Run(policy())
    run(landed(item(1)), T0)
    window = run.tracker.window
    assert window is not None
    with pytest.raises(ValueError, match="pending"):
        decide(run.tracker, RetrainWindowClosed(window_id=window.id), run.policy, T0)


def test_tracker_round_trips_through_json() -> None:
    run = Run(policy())
    run(landed(item(1, rows=3), item(2)), T0)
    run.close_due()
    run(landed(item(3)), T0 + timedelta(minutes=11))
    text = run.tracker.model_dump_json()
    restored = RetrainTracker.model_validate_json(text)
    assert restored == run.tracker
    assert (
        RetrainTracker.model_validate_json(RetrainTracker().model_dump_json()) == RetrainTracker()
    )
    # Decisions from the restored tracker are the same.
    command = landed(item(1), item(4)).model_copy(update={"new_items": 1})
    a = decide(run.tracker, command, run.policy, T0 + timedelta(minutes=12))
    b = decide(restored, command, run.policy, T0 + timedelta(minutes=12))
    assert a.state == b.state and a.effects == b.effects


def test_decide_does_not_change_its_input() -> None:
    tracker = RetrainTracker()
    before = tracker.model_dump_json()
    decide(tracker, landed(item(1)).model_copy(update={"new_items": 1}), policy(), T0)
    assert tracker.model_dump_json() == before


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=120),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=7),
)
def test_any_order_and_duplication_submits_the_same_data(
    indices: list[int], rnd: Any, batch: int
) -> None:
    distinct = {item(n).uri for n in indices}
    shuffled = list(indices)
    rnd.shuffle(shuffled)
    run = Run(policy())
    for start in range(0, len(shuffled), batch):
        chunk = shuffled[start : start + batch]
        run(landed(*(item(n) for n in chunk)), T0 + timedelta(seconds=start))
    run.close_due()
    [submit] = run.submits()
    assert set(run.uris(submit)) == distinct
    assert len(run.uris(submit)) == len(distinct) == submit.data_count
