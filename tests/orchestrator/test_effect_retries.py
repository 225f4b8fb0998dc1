"""An effect that keeps failing transiently: counted on its outbox item, retried, and given up
only after MAX_EFFECT_ATTEMPTS dispatches and EFFECT_RETRY_SECONDS since the first failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.storage_queue_bus import decode_body
from domain.effects import SubmitTrainingJob
from orchestrator.aggregate import OutboxItem
from orchestrator.messages import parse_envelope
from orchestrator.ports import TrainingBackendError, TrainingRequest
from tests.harness import RecordingTrainingBackend, policy_yaml

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Unavailable(RecordingTrainingBackend):
    """Azure ML answering 503 to every submit, after the SDK's own retries."""

    def submit(self, request: TrainingRequest) -> str:
        self.submissions.append(request)
        raise TrainingBackendError("submitting: Azure ML answered 503: busy", transient=True)


def test_a_submit_failing_for_longer_than_the_window_fails_its_run(make_runtime) -> None:
    backend = Unavailable()
    now = [START]
    runtime = make_runtime(
        {"churn": policy_yaml("churn")},
        MAX_EFFECT_ATTEMPTS="2",
        EFFECT_RETRY_SECONDS="600",
        clock=lambda: now[0],
        training=backend,
    )
    submit = SubmitTrainingJob(run_id="churn-r1", data_count=1, data_sample=["https://a/x.csv"])
    runtime.ports.store.update(
        "churn", lambda a: a.model_copy(update={"outbox": [OutboxItem(id="1-0", effect=submit)]})
    )

    # Redeliveries come at once: more dispatches than MAX_EFFECT_ATTEMPTS, all in the window.
    for minutes in (0, 0, 0, 9):
        now[0] = START + timedelta(minutes=minutes)
        with pytest.raises(TrainingBackendError, match="503"):
            runtime.outbox.dispatch("churn")
    [item] = runtime.ports.store.load("churn")[0].outbox
    assert (item.failed_attempts, item.first_failed_at) == (4, START)
    assert backend.cancellations == []

    now[0] = START + timedelta(minutes=10)
    assert runtime.outbox.dispatch("churn") == 1  # given up: done, not raised
    assert len(backend.submissions) == 5
    # The job may exist unheard of: a cancel waits in the outbox, dispatched (and retried) as
    # any effect.
    [cancel] = runtime.ports.store.load("churn")[0].outbox
    assert (cancel.effect.kind, cancel.effect.run_id) == ("cancel_training_job", "churn-r1")
    assert runtime.outbox.dispatch("churn") == 1
    assert backend.cancellations == ["churn-r1"]
    assert runtime.ports.store.load("churn")[0].outbox == []
    queue = runtime.queue(runtime.settings.orchestrator_queue)
    [status] = [parse_envelope(decode_body(m.content)) for m in queue.peek_messages(32)]
    assert status.type == "TrainingJobStatus"
    assert status.payload["state"] == "failed" and status.payload["run_id"] == "churn-r1"
    assert status.payload["error"].startswith("gave up after 5 attempts in 600 s: ")
    assert "Azure ML answered 503: busy" in status.payload["error"]
