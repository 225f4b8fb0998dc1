"""The training backend port: submit the retraining pipeline, ask for its status.

Two implementations: `adapters.azureml_jobs.AzureMLTrainingBackend` (Azure ML pipeline jobs)
and `adapters.local_runner.LocalTrainingBackend` (the same component YAML run locally).
This module is imported by the Functions app: nothing heavy at module top.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.effects import SubmitTrainingJob
from orchestrator.policy import ModelPolicy

BackendJobState = Literal["queued", "running", "completed", "failed", "canceled"]

# The pipeline inputs every pipeline file must declare (the data input's name comes from
# PipelineSettings.data_input).
MODEL_NAME_INPUT = "model_name"
CHAMPION_INPUT = "champion_version"
RUN_ID_INPUT = "run_id"
DATA_URIS_INPUT = "data_uris"
NO_CHAMPION = "none"  # the champion_version value that means "no production model yet"

# The step run that registers the model sets these tags (MLflow run tags, which Azure ML
# shows as job tags), and writes the same values to registration.json in the pipeline
# output `registration`.
REGISTERED_MODEL_TAG = "registered_model_name"
REGISTERED_VERSION_TAG = "registered_model_version"
REGISTRATION_OUTPUT = "registration"


class TrainingBackendError(RuntimeError):
    """The backend refused or failed a request; the message is the service's own."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class TrainingRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")  # the job name
    model: str  # also the registered model name
    pipeline_file: str  # path to pipeline.yml (relative paths: to the app root)
    data_uris: list[str] = Field(min_length=1)
    data_input: str = "training_data"
    experiment: str
    compute: str | None = None  # None keeps the YAML's default compute
    champion_version: str | None = None  # the production model, evaluated on the same holdout
    tags: dict[str, str] = Field(default_factory=dict)


class JobStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    state: BackendJobState
    error: str | None = None
    registered_model: str | None = None  # set when completed
    registered_version: str | None = None
    service_status: str | None = None  # the backend's own status word, for the audit log


@runtime_checkable
class TrainingBackend(Protocol):
    def submit(self, request: TrainingRequest) -> str:
        """Start the pipeline; return the job id. Submitting the same run_id twice is a no-op."""
        ...

    def status(self, job_id: str) -> JobStatus:
        """The job's state now. Raises TrainingBackendError when it cannot be read."""
        ...

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop, without waiting. A job that has ended or is unknown is fine."""
        ...


def training_request(
    policy: ModelPolicy,
    effect: SubmitTrainingJob,
    *,
    champion_version: str | None = None,
    default_compute: str | None = None,
    tags: dict[str, str] | None = None,
) -> TrainingRequest:
    """The request for a SubmitTrainingJob effect under the model's policy.

    The compute is the policy's `pipeline.compute`, else `default_compute` (AZUREML_COMPUTE),
    else None (the YAML's default compute).
    """
    pipeline = policy.pipeline
    return TrainingRequest(
        run_id=effect.run_id,
        model=policy.model,
        pipeline_file=pipeline.file,
        data_uris=effect.data_uris,
        data_input=pipeline.data_input,
        experiment=pipeline.experiment or f"{policy.model}-retrain",
        compute=pipeline.compute or default_compute,
        champion_version=champion_version,
        tags={"retrain_run_id": effect.run_id, "retrain_reason": effect.reason[:200]}
        | (tags or {}),
    )


def data_uris_text(data_uris: list[str], limit: int = 4000) -> str:
    """The data URIs as one comma-separated string (a pipeline input and a tag value).

    Shortened to `limit` characters; quotes are percent-encoded so the value is safe inside
    the single quotes of a component's command line.
    """
    data_uris = [uri.replace("'", "%27").replace(",", "%2C") for uri in data_uris]
    text = ",".join(data_uris)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for uri in data_uris:
        if used + len(uri) + 1 > limit - 40:
            break
        kept.append(uri)
        used += len(uri) + 1
    return ",".join([*kept, f"...and-{len(data_uris) - len(kept)}-more"])
