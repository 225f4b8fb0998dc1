"""A runtime wired as in production, on real Azurite, with a temp policy folder and MLflow
store. Tests replace the training backend or endpoint only where the test is about the
orchestration around them (fakes of our own ports, recording what they were asked), and
always through `bootstrap`'s overrides: `make_runtime(policies, training=backend)`."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.local_issuer import LocalIssuer
from adapters.storage_queue_bus import StorageQueueConsumer
from orchestrator.bootstrap import Runtime, bootstrap
from orchestrator.clock import Clock, utc_now
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


class ShiftedClock:
    """An injected clock that follows the real time, moved forward when a test says so (for
    timeouts measured in hours, while debounces and polls still pass in real seconds)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


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
    """`make(policies, *, clock=..., **values)`: a runtime on the session's Azurite with its
    own state container and queues. `values` are app settings by their names
    (`MAX_EFFECT_ATTEMPTS="2"`) and ports to replace by `bootstrap`'s lower-case names
    (`training=`, `metrics=`, `registry=`, `endpoints=`, `dead_letters=`, ...)."""
    made: list[Runtime] = []

    def make(policies: dict[str, str], *, clock: Clock = utc_now, **values: Any) -> Runtime:
        overrides = {name: value for name, value in values.items() if name.islower()}
        settings = {name: value for name, value in values.items() if not name.islower()}
        folder = tmp_path / f"policies-{next(_names)}"
        folder.mkdir()
        for model, text in policies.items():
            (folder / f"{model}.yml").write_text(text)
        suffix = next(_names)
        app_settings: dict[str, Any] = {
            "AzureWebJobsStorage": azurite.connection_string,
            "POLICY_DIR": str(folder),
            "RETRAIN_LOCAL_DIR": str(tmp_path / "local"),
            "STATE_CONTAINER": f"state{suffix}x{tmp_path.name[-12:].lower().replace('_', '')}",
            "ORCHESTRATOR_QUEUE": f"orch{suffix}x{tmp_path.name[-12:].lower().replace('_', '')}",
            "LIFECYCLE_EVENTS_HUB": f"life{suffix}x{tmp_path.name[-12:].lower().replace('_', '')}",
            "DEPLOYMENT_POLL_SECONDS": "1",
            # The data account data URIs must name (tests/fakes.py's too); a test may give
            # another, e.g. DataStorage=<Azurite's connection string>.
            "DataStorage__blobServiceUri": "https://acct.blob.core.windows.net",
        } | settings
        runtime = bootstrap(load_settings(**app_settings), clock=clock, **overrides)
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


# --------------------------------------------------------------------------- people's tokens


def issuer_of(runtime: Runtime) -> LocalIssuer:
    """The local issuer whose tokens `runtime` accepts (RETRAIN_LOCAL_DIR/issuer, or the fakes'
    test issuer): a test signs in as a person with it, as the CLI does."""
    jwks = getattr(runtime.ports.identity, "jwks", None)
    assert isinstance(jwks, Path), f"{runtime.ports.identity!r} does not read a local JWKS file"
    return LocalIssuer(jwks.parent)


def signed(
    runtime: Runtime,
    envelope: Envelope,
    upn: str,
    *,
    roles: Sequence[str] = (),
    **mint: Any,
) -> Envelope:
    """`envelope` carrying a bearer token for `upn` (with these app `roles`) that `runtime`
    trusts. `mint`: LocalIssuer.mint's options (lifetime, audience, claims)."""
    token = issuer_of(runtime).mint(upn, roles=roles, **mint)
    return envelope.model_copy(update={"auth": token})
