"""Time from a training job's completion to its staging gate: Azure ML run events vs polling.

Each run goes through the real trigger (`data_events`) and handlers on the in-memory fakes of
our ports (tests/fakes.py) with a fake clock: data lands, the window closes, the job is
submitted and ends after a given duration; the staging gate is the first `gate.*` audit
record after that. Polling only, the job is seen at its next check (`poll_interval` doubling
up to `max_poll_interval`: the policy's defaults, 1 min and 10 min), so the wait is simulated
time from that schedule. With events, the `RunStatusChanged` event is delivered at the
completion, and the wait is the wall time the trigger and handlers take to reach the gate
(Event Grid's own delivery latency, typically under a second, is not in it). Both rows run
the same jobs in one process; the wait saved is the difference of their means (no ratio:
one row is simulated time, the other wall time).
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta

import azure.functions as func

from orchestrator.bootstrap import set_runtime
from orchestrator.ports import JobStatus
from tests.fakes import FakeClock, FakeTrainingBackend, FakeWorld, fake_runtime, landed
from triggers import data

POLICY = """\
model: bench
endpoint: bench-ep
data: {container: training-data, prefix: bench/}
retrain: {debounce: 1s, min_new_files: 1, cooldown: 0s}
staging: {gates: [{kind: threshold, metric: auc, value: 0.5}]}
"""
# Job durations (minutes): short to long, as a day of retrains might have, off the poll grid.
DURATIONS = (4.2, 9.5, 13.7, 19.1, 27.4, 36.8, 48.3, 61.9, 83.3, 117.6)


class TimedBackend(FakeTrainingBackend):
    """A job runs for its duration on the fake clock, then reads completed."""

    def __init__(self, clock: FakeClock, minutes: float) -> None:
        super().__init__()
        self.clock = clock
        self.minutes = minutes
        self.ends_at: dict[str, datetime] = {}

    def submit(self, request: object) -> str:
        run_id = super().submit(request)  # type: ignore[arg-type]
        self.ends_at.setdefault(run_id, self.clock() + timedelta(minutes=self.minutes))
        self.start(run_id)
        return run_id

    def status(self, job_id: str) -> JobStatus:
        if job_id in self.ends_at and self.clock() >= self.ends_at[job_id]:
            self.finish(job_id, self.versions[job_id])
        return super().status(job_id)


def run_event(run_id: str) -> func.EventHubEvent:
    document = {
        "id": f"evt-{run_id}",
        "subject": f"experiments/e/runs/{run_id}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": "2026-12-02T09:00:00Z",
        "data": {"experimentName": "bench-retrain", "runId": run_id, "runStatus": "Completed"},
    }
    return func.EventHubEvent(body=json.dumps([document]).encode())


def gate_reached(w: FakeWorld) -> bool:
    return any(r.action.startswith("gate.") for r in w.audit.read("bench"))


def one_run(minutes: float, events: bool) -> float:
    """Seconds from the job's completion to its staging gate (simulated when polling only,
    wall time when the event brings it)."""
    clock = FakeClock()
    backend = TimedBackend(clock, minutes)
    w = fake_runtime(POLICY, clock=clock, training=backend)
    set_runtime(w.runtime)
    try:
        w.handle(landed("bench", 1))
        w.run(until=lambda: bool(backend.ends_at))
        [(run_id, ends_at)] = backend.ends_at.items()
        # Polls before the completion happen either way.
        w.run(until=lambda: w.bus.next_due_at() is None or w.bus.next_due_at() >= ends_at)
        clock.advance_to(ends_at)
        if events:
            started = time.perf_counter()
            data.data_events._function.get_user_function()([run_event(run_id)])
            w.deliver_due()  # StartPromotion, sent at once: the staging gate
            elapsed = time.perf_counter() - started
            assert gate_reached(w), "the event did not reach the staging gate"
            return elapsed
        w.run(until=lambda: gate_reached(w), max_steps=100)
        assert gate_reached(w), "polling did not reach the staging gate"
        return (clock() - ends_at).total_seconds()
    finally:
        set_runtime(None)


def main(durations: tuple[float, ...] = DURATIONS) -> None:
    one_run(1.5, events=True)  # warm-up: first imports and pydantic schemas, not measured
    polled = [one_run(minutes, events=False) for minutes in durations]
    evented = [one_run(minutes, events=True) for minutes in durations]
    print(f"{'job minutes':>12} {'polling only (s)':>18} {'with events (s)':>18}")
    for minutes, poll, event in zip(durations, polled, evented, strict=True):
        print(f"{minutes:>12g} {poll:>18.1f} {event:>18.4f}")
    poll_mean, event_mean = statistics.fmean(polled), statistics.fmean(evented)
    print(f"{'mean':>12} {poll_mean:>18.1f} {event_mean:>18.4f}")
    print(f"{'max':>12} {max(polled):>18.1f} {max(evented):>18.4f}")
    # No ratio: the polling row is simulated time from the schedule, the events row wall time
    # of our own handling, and Event Grid's delivery (not simulated here) adds to the latter.
    print(
        f"events save {poll_mean - event_mean:.0f} s of the {poll_mean:.0f} s mean wait, "
        "before Event Grid's own delivery time"
    )


if __name__ == "__main__":
    main()
