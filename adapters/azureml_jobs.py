"""Azure ML training backend: submits pipelines/azureml/pipeline.yml as a pipeline job.

`AzureMLTrainingBackend(ml_client)` wraps an `azure.ai.ml.MLClient`;
`AzureMLTrainingBackend.from_workspace(subscription_id, resource_group, workspace)` builds
one with DefaultAzureCredential and bounded retries. `azure.ai.ml` is imported only here,
and only when a backend is built (the Functions app's cold start does not pay for it).

- submit: `load_job` the YAML, set the data input (`uri_file` for one file, `uri_folder`
  otherwise: one folder as is, several URIs -> their deepest common folder), the model
  name, champion, run id, data URI and column (label_column, feature_columns) inputs,
  name = run_id, the experiment and (when set) the default compute, then
  `jobs.create_or_update`. A job of that name that already exists
  is returned as is: submitting twice is a no-op.
- status: `jobs.get`, every Azure ML job status mapped to ours (`STATUS_MAP`). A completed
  job's registered version comes from the tags the evaluate_register step sets (on the
  pipeline run, else on its own child run); a failed job's error from its run details.
- cancel: `jobs.begin_cancel`, not waited for; a job that is unknown or has already ended
  is left as it is.
- 429 and 5xx answers are retried by azure-core's RetryPolicy (MLClient kwargs
  retry_total / retry_backoff_factor / retry_backoff_max); what still fails is raised as
  TrainingBackendError with the service's message (`transient` for 408/429/5xx).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from orchestrator.ports import BackendJobState, JobStatus, TrainingBackendError, TrainingRequest
from orchestrator.settings import APP_ROOT
from pipelines.contract import (
    CHAMPION_INPUT,
    DATA_URIS_INPUT,
    MODEL_NAME_INPUT,
    NO_CHAMPION,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    RUN_ID_INPUT,
    column_inputs,
    data_uris_text,
)

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

# Every Azure ML job status (azure.ai.ml.constants.JobStatus) -> ours. Statuses not listed
# (new ones) read as "running": the job is polled again, never wrongly finished.
STATUS_MAP: dict[str, BackendJobState] = {
    "NotStarted": "queued",
    "Queued": "queued",
    "Preparing": "queued",
    "Provisioning": "queued",
    "Starting": "queued",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",  # not final until Canceled
    "NotResponding": "running",  # may recover; the service ends it otherwise
    "Paused": "running",
    "Unknown": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Canceled": "canceled",
}

DEFAULT_RETRY = {"retry_total": 5, "retry_backoff_factor": 2.0, "retry_backoff_max": 60}
_TRANSIENT = {408, 429, 500, 502, 503, 504}


class AzureMLTrainingBackend:
    def __init__(self, ml_client: MLClient, *, app_root: Path | str = APP_ROOT) -> None:
        self.ml_client = ml_client
        self.app_root = Path(app_root)

    @classmethod
    def from_workspace(
        cls,
        subscription_id: str,
        resource_group: str,
        workspace: str,
        *,
        credential: Any = None,
        app_root: Path | str = APP_ROOT,
        **client_kwargs: Any,
    ) -> AzureMLTrainingBackend:
        """An MLClient on the workspace, with DefaultAzureCredential unless one is given.

        `client_kwargs` go to MLClient (and on to azure-core: retry_total, transport, ...).
        """
        from azure.ai.ml import MLClient

        if credential is None:
            from adapters.azure_credential import azure_credential

            credential = azure_credential()
        client = MLClient(
            credential,
            subscription_id,
            resource_group,
            workspace,
            **(DEFAULT_RETRY | client_kwargs),
        )
        return cls(client, app_root=app_root)

    # -- submit ------------------------------------------------------------------------

    def submit(self, request: TrainingRequest) -> str:
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        existing = self._existing(request.run_id)
        if existing is not None:
            return existing
        job = self._build_job(request)
        try:
            created = self.ml_client.jobs.create_or_update(job, experiment_name=request.experiment)
        except (ServiceRequestError, ServiceResponseError) as exc:
            # Not reached, or its answer was lost (the job may exist: the next try finds it).
            raise _backend_error(exc, f"submitting {request.run_id}") from exc
        except ResourceNotFoundError as exc:
            raise _backend_error(exc, f"submitting {request.run_id}") from exc
        except HttpResponseError as exc:
            # A concurrent submit of the same run id may have won: that is success.
            if exc.status_code in (400, 409) and self._existing(request.run_id) is not None:
                return request.run_id
            raise _backend_error(exc, f"submitting {request.run_id}") from exc
        except Exception as exc:  # the SDK's validation and MlException: permanent
            raise TrainingBackendError(f"submitting {request.run_id}: {exc}") from exc
        return str(created.name or request.run_id)

    def _existing(self, name: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            job = self._get(name)
        except ResourceNotFoundError:
            return None
        return str(job.name or name)

    def _get(self, name: str) -> Any:
        """`jobs.get`; what still fails after the retries is a TrainingBackendError (404 is
        left to the caller as ResourceNotFoundError)."""
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return self.ml_client.jobs.get(name)
        except ResourceNotFoundError:
            raise
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise _backend_error(exc, f"reading job {name}") from exc

    def _build_job(self, request: TrainingRequest) -> Any:
        from azure.ai.ml import Input, load_job

        path = Path(request.pipeline_file)
        if not path.is_absolute():
            path = self.app_root / path
        try:
            job = load_job(source=path)
        except Exception as exc:
            raise TrainingBackendError(f"cannot load {path}: {exc}") from exc
        declared = set(job.inputs.keys())
        if request.data_input not in declared:
            raise TrainingBackendError(f"{path}: no pipeline input {request.data_input!r}")
        input_type, uri = data_input_for(request.data_uris)
        setattr(job.inputs, request.data_input, Input(type=input_type, path=uri))
        try:
            columns = column_inputs(
                request.label_column, request.feature_columns, declared, str(path)
            )
        except ValueError as exc:
            raise TrainingBackendError(str(exc)) from exc
        values = columns | {
            MODEL_NAME_INPUT: request.model,
            CHAMPION_INPUT: request.champion_version or NO_CHAMPION,
            RUN_ID_INPUT: request.run_id,
            DATA_URIS_INPUT: data_uris_text(request.data_uris),
        }
        for name, value in values.items():
            if name in declared:
                setattr(job.inputs, name, value)
        job.name = request.run_id
        job.experiment_name = request.experiment
        job.tags = {**(job.tags or {}), **request.tags}
        if request.compute:
            job.settings.default_compute = request.compute
        return job

    # -- cancel ------------------------------------------------------------------------

    def cancel(self, job_id: str) -> None:
        """`jobs.begin_cancel`, not waited for. Unknown or already ended: nothing to do."""
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            self.ml_client.jobs.begin_cancel(job_id, polling=False)  # started, not awaited
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code in (400, 409) and self._ended(job_id):
                return  # the service refuses to cancel a job that has already ended
            raise _backend_error(exc, f"canceling job {job_id}") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _backend_error(exc, f"canceling job {job_id}") from exc

    def _ended(self, job_id: str) -> bool:
        try:
            return self.status(job_id).state in ("completed", "failed", "canceled")
        except Exception:  # cannot tell: the refusal that asked is what gets reported
            return False

    # -- status ------------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            job = self._get(job_id)
        except ResourceNotFoundError as exc:
            raise _backend_error(exc, f"reading job {job_id}") from exc
        service_status = str(getattr(job.status, "value", job.status) or "Unknown")
        state = STATUS_MAP.get(service_status, "running")
        if state == "completed":
            model, version = self._registration(job_id, dict(job.tags or {}))
            return JobStatus(
                job_id=job_id,
                state=state,
                registered_model=model,
                registered_version=version,
                service_status=service_status,
            )
        error = self._error(job_id, service_status) if state in ("failed", "canceled") else None
        return JobStatus(job_id=job_id, state=state, error=error, service_status=service_status)

    def _registration(self, job_id: str, tags: dict[str, str]) -> tuple[str | None, str | None]:
        """The registered model, from the pipeline run's tags or its children's."""
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        if tags.get(REGISTERED_VERSION_TAG):
            return tags.get(REGISTERED_MODEL_TAG), tags[REGISTERED_VERSION_TAG]
        try:
            children = list(self.ml_client.jobs._runs_operations.get_run_children(job_id))
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise _backend_error(exc, f"reading the steps of job {job_id}") from exc
        for child in children:
            child_tags = dict(getattr(child, "tags", None) or {})
            if child_tags.get(REGISTERED_VERSION_TAG):
                return child_tags.get(REGISTERED_MODEL_TAG), child_tags[REGISTERED_VERSION_TAG]
        return None, None

    def _error(self, job_id: str, service_status: str) -> str:
        """The run's error message (run history), or the status when there is none."""
        try:
            details = self.ml_client.jobs._runs_operations.get_run_details(job_id)
            error = getattr(getattr(details, "error", None), "error", None)
            message = getattr(error, "message", None)
            code = getattr(error, "code", None)
            if message:
                return f"{code}: {message}" if code else str(message)
        except Exception:  # the error text is best effort; the state is what matters
            pass
        return f"Azure ML job {job_id} ended {service_status}"


def data_input_for(data_uris: list[str]) -> tuple[str, str]:
    """The pipeline's data input for these URIs: ("uri_file" | "uri_folder", path)."""
    if len(data_uris) == 1:
        uri = data_uris[0]
        if _looks_like_file(uri):
            return "uri_file", uri
        return "uri_folder", uri
    return "uri_folder", common_folder(data_uris)


def common_folder(uris: list[str]) -> str:
    """The deepest folder containing every URI (same scheme and host), with a trailing '/'."""
    parsed = [urlparse(uri) for uri in uris]
    roots = {(p.scheme, p.netloc) for p in parsed}
    if len(roots) != 1:
        raise TrainingBackendError(
            f"the data URIs are in {len(roots)} different stores; one pipeline input takes one"
        )
    folders = [posixpath.dirname(p.path) if _looks_like_file(p.path) else p.path for p in parsed]
    common = posixpath.commonpath([folder or "/" for folder in folders])
    scheme, netloc = roots.pop()
    prefix = f"{scheme}://{netloc}" if scheme else ""
    return f"{prefix}{common.rstrip('/')}/"


def _looks_like_file(uri: str) -> bool:
    name = posixpath.basename(urlparse(uri).path)
    return bool(name) and "." in name and not uri.endswith("/")


def _backend_error(exc: Any, doing: str) -> TrainingBackendError:
    """An SDK failure as a TrainingBackendError: the service's status and message, or
    "unreachable" (transient) when no answer came back after the retries."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TrainingBackendError(f"{doing}: Azure ML unreachable: {exc}", transient=True)
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    text = f"{doing}: Azure ML answered {status}" + (f" {code}" if code else "") + f": {message}"
    return TrainingBackendError(text, transient=status in _TRANSIENT)
