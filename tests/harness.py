"""A runtime wired as in production, on real Azurite, with a temp policy folder and MLflow
store. Tests replace the training backend or endpoint only where the test is about the
orchestration around them (fakes of our own ports, recording what they were asked)."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.storage_queue_bus import StorageQueueConsumer
from orchestrator.bootstrap import Runtime
from orchestrator.handlers import Outcome
from orchestrator.messages import Envelope
from orchestrator.ports import JobStatus, TrainingRequest
from orchestrator.settings import load_settings


class RecordingTrainingBackend:
    """The TrainingBackend port, recording submissions; tests set each job's state."""

    def __init__(self) -> None:
        self.submissions: list[TrainingRequest] = []
        self.states: dict[str, JobStatus] = {}
        self.cancellations: list[str] = []

    def submit(self, request: TrainingRequest) -> str:
        self.submissions.append(request)
        self.states.setdefault(request.run_id, JobStatus(job_id=request.run_id, state="queued"))
        return request.run_id

    @property
    def jobs(self) -> list[str]:
        return sorted({request.run_id for request in self.submissions})

    def finish(self, run_id: str, version: str) -> None:
        self.states[run_id] = JobStatus(
            job_id=run_id, state="completed", registered_model="m", registered_version=version
        )

    def status(self, job_id: str) -> JobStatus:
        return self.states[job_id]

    def cancel(self, job_id: str) -> None:
        self.cancellations.append(job_id)
        state = self.states.get(job_id)
        if state is not None and state.state in ("queued", "running"):
            self.states[job_id] = JobStatus(job_id=job_id, state="canceled")


def policy_yaml(model: str, **overrides: str) -> str:
    sections = {
        "retrain": "{debounce: 1s, min_new_files: 1, cooldown: 0s}",
        "staging": "{gates: [{kind: threshold, metric: auc, value: 0.5}]}",
        "approval": "{required: false}",
        "canary": "{steps: [50], bake: 1s, min_samples_per_arm: 5}",
        "production_bake": "1s",
    } | overrides
    body = "\n".join(f"{key}: {value}" for key, value in sections.items())
    return (
        textwrap.dedent(
            f"""\
        model: {model}
        endpoint: {model}-ep
        data: {{container: training-data, prefix: {model}/}}
        """
        )
        + body
        + "\n"
    )


_names = itertools.count()


@pytest.fixture
def make_runtime(azurite, tmp_path) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(policies: dict[str, str], **settings: Any) -> Runtime:
        folder = tmp_path / f"policies-{next(_names)}"
        folder.mkdir()
        for model, text in policies.items():
            (folder / f"{model}.yml").write_text(text)
        suffix = next(_names)
        values: dict[str, Any] = {
            "AzureWebJobsStorage": azurite.connection_string,
            "POLICY_DIR": str(folder),
            "RETRAIN_LOCAL_DIR": str(tmp_path / "local"),
            "STATE_CONTAINER": f"state{suffix}x{tmp_path.name[-12:].lower().replace('_', '')}",
            "ORCHESTRATOR_QUEUE": f"orch{suffix}x{tmp_path.name[-12:].lower().replace('_', '')}",
            "LIFECYCLE_EVENTS_HUB": f"life{suffix}x{tmp_path.name[-12:].lower().replace('_', '')}",
            "DEPLOYMENT_POLL_SECONDS": "1",
        } | settings
        runtime = Runtime(load_settings(**values))
        made.append(runtime)
        return runtime

    yield make


def pump(
    runtime: Runtime,
    *,
    rounds: int = 50,
    until: Callable[[], bool] | None = None,
    wait: float = 0.2,
) -> list[Outcome]:
    """Deliver the orchestrator queue's due messages to the handler, like the trigger does."""
    import time

    queue = runtime.queue(runtime.settings.orchestrator_queue)
    poison = runtime.queue(f"{runtime.settings.orchestrator_queue}-poison")
    consumer = StorageQueueConsumer(queue, poison, max_deliveries=3)
    outcomes: list[Outcome] = []

    def handle(envelope: Envelope, deliveries: int) -> None:
        outcomes.append(runtime.handlers.handle(envelope))

    for _ in range(rounds):
        consumer.poll(handle)
        if until is not None and until():
            break
        time.sleep(wait)
    return outcomes
