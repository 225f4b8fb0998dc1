"""Contract tests: the real azure-ai-ml SDK against recorded requests and canned answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml import MLClient, load_job

from adapters.azureml_jobs import (
    DEFAULT_RETRY,
    STATUS_MAP,
    AzureMLTrainingBackend,
    common_folder,
    data_input_for,
)
from orchestrator.ports import TrainingBackend, TrainingBackendError, TrainingRequest
from orchestrator.settings import APP_ROOT
from tests.adapters.azureml_jobs_replay import ARM, WORKSPACE, FakeAzureML
from tests.azure_recording import Canned, FakeCredential, Recorded, RecordingTransport

PIPELINE = "pipelines/azureml/pipeline.yml"
DATA = "https://acct.blob.core.windows.net/data/churn/2026/01/"


@pytest.fixture
def service() -> FakeAzureML:
    return FakeAzureML()


@pytest.fixture
def transport(service: FakeAzureML) -> RecordingTransport:
    return service  # the service is the transport: it records what it answers


@pytest.fixture
def backend(transport: RecordingTransport) -> AzureMLTrainingBackend:
    client = MLClient(
        FakeCredential(),
        "sub-1",
        "rg-1",
        "ws-1",
        transport=transport,
        retry_total=3,
        retry_backoff_factor=0,  # retried at once: the test is about the retry, not the wait
    )
    return AzureMLTrainingBackend(client)


def request(**overrides: Any) -> TrainingRequest:
    fields: dict[str, Any] = {
        "run_id": "churn-20260101t000000-1",
        "model": "churn",
        "pipeline_file": PIPELINE,
        "data_uris": [DATA],
        "experiment": "churn-retrain",
        "compute": "cpu-big",
        "champion_version": "7",
        "tags": {"retrain_reason": "window"},
    }
    return TrainingRequest(**(fields | overrides))


def job_puts(transport: RecordingTransport) -> list[Recorded]:
    return transport.sent("PUT", "/jobs/")


def test_pipeline_yaml_loads_and_validates_offline() -> None:
    job = load_job(APP_ROOT / PIPELINE)
    assert job.type == "pipeline"
    assert list(job.jobs) == ["prepare", "train", "evaluate_register"]
    assert {"training_data", "model_name", "champion_version"} <= set(job.inputs)
    assert job.inputs["training_data"]._data["type"] == "uri_folder"
    result = job._validate()
    assert result.passed, result.error_messages
    for step in job.jobs.values():
        component = step.component
        assert component.type == "command"
        assert "${{inputs." in component.command and "${{outputs." in component.command
        assert component.environment is not None


def test_backend_satisfies_the_port(backend: AzureMLTrainingBackend) -> None:
    assert isinstance(backend, TrainingBackend)


def test_submit_puts_the_pipeline_job(
    backend: AzureMLTrainingBackend, transport: RecordingTransport
) -> None:
    job_id = backend.submit(request())

    assert job_id == "churn-20260101t000000-1"
    puts = job_puts(transport)
    assert len(puts) == 1
    put = puts[0]
    assert put.path == f"{ARM}{WORKSPACE}/jobs/churn-20260101t000000-1"
    body = put.body["properties"]
    assert body["jobType"] == "Pipeline"
    assert body["experimentName"] == "churn-retrain"
    assert body["inputs"]["training_data"] == {"uri": DATA, "jobInputType": "uri_folder"}
    assert body["inputs"]["model_name"]["value"] == "churn"
    assert body["inputs"]["champion_version"]["value"] == "7"
    assert body["inputs"]["run_id"]["value"] == "churn-20260101t000000-1"
    assert body["inputs"]["data_uris"]["value"] == DATA
    assert body["settings"]["default_compute"].endswith("/computes/cpu-big")
    assert body["tags"]["retrain_reason"] == "window"
    assert set(body["jobs"]) == {"prepare", "train", "evaluate_register"}
    # The three steps were registered as (anonymous) components, their code by hash.
    component_puts = [r for r in transport.requests if "/components/" in r.path]
    assert len(component_puts) == 3
    # The pipeline submission carries the user's Azure ML token.
    assert put.headers.get("x-azureml-token")


def test_the_policys_columns_are_pipeline_inputs(
    backend: AzureMLTrainingBackend, transport: RecordingTransport
) -> None:
    backend.submit(request())
    inputs = job_puts(transport)[0].body["properties"]["inputs"]
    assert inputs["label_column"] == {"value": "label", "jobInputType": "literal"}
    assert inputs["feature_columns"] == {"value": "*", "jobInputType": "literal"}

    backend.submit(
        request(
            run_id="wine-1", label_column="cultivar", feature_columns=["alcohol", "color intensity"]
        )
    )
    body = job_puts(transport)[1].body["properties"]
    assert body["inputs"]["label_column"]["value"] == "cultivar"
    assert body["inputs"]["feature_columns"]["value"] == "alcohol,color intensity"
    # The prepare step receives them from the pipeline's inputs.
    prepare = body["jobs"]["prepare"]["inputs"]
    assert prepare["label_column"]["value"] == "${{parent.inputs.label_column}}"
    assert prepare["feature_columns"]["value"] == "${{parent.inputs.feature_columns}}"


def test_a_pipeline_without_column_inputs_refuses_another_label(
    backend: AzureMLTrainingBackend, transport: RecordingTransport, tmp_path: Path
) -> None:
    pipeline = tmp_path / "pipeline.yml"
    text = (APP_ROOT / PIPELINE).read_text(encoding="utf-8")
    text = text.replace("  label_column: label\n", "").replace(
        "      label_column: ${{parent.inputs.label_column}}\n", ""
    )
    components = APP_ROOT / "pipelines" / "azureml" / "components"
    pipeline.write_text(text.replace("./components/", f"{components}/"))
    with pytest.raises(TrainingBackendError, match=r"no input 'label_column'.*'cultivar'"):
        backend.submit(request(pipeline_file=str(pipeline), label_column="cultivar"))
    assert job_puts(transport) == []
    backend.submit(request(pipeline_file=str(pipeline)))  # the default label: as before
    assert "label_column" not in job_puts(transport)[0].body["properties"]["inputs"]


def test_one_file_is_a_uri_file_input(
    backend: AzureMLTrainingBackend, transport: RecordingTransport
) -> None:
    backend.submit(request(data_uris=[DATA + "part-1.csv"]))
    body = job_puts(transport)[0].body["properties"]
    assert body["inputs"]["training_data"] == {
        "uri": DATA + "part-1.csv",
        "jobInputType": "uri_file",
    }


def test_several_files_are_their_common_folder(
    backend: AzureMLTrainingBackend, transport: RecordingTransport
) -> None:
    uris = [DATA + "a.csv", DATA + "b.csv", DATA.replace("/01/", "/02/") + "c.csv"]
    backend.submit(request(data_uris=uris))
    body = job_puts(transport)[0].body["properties"]
    assert body["inputs"]["training_data"]["uri"] == (
        "https://acct.blob.core.windows.net/data/churn/2026/"
    )
    assert body["inputs"]["data_uris"]["value"] == ",".join(uris)


def test_submit_is_idempotent_on_the_run_id(
    backend: AzureMLTrainingBackend, transport: RecordingTransport
) -> None:
    assert backend.submit(request()) == backend.submit(request())
    assert len(job_puts(transport)) == 1


def test_429_then_success_is_retried(
    backend: AzureMLTrainingBackend, service: FakeAzureML, transport: RecordingTransport
) -> None:
    service.faults.append(
        (
            lambda r: r.method == "PUT" and "/jobs/" in r.path,
            Canned(
                429,
                {"error": {"code": "TooManyRequests", "message": "slow down"}},
                {"Retry-After": "0"},
            ),
        )
    )
    service.faults.append(
        (
            lambda r: r.method == "GET" and r.path.endswith("/jobs/churn-20260101t000000-1"),
            Canned(503, {"error": {"code": "ServiceUnavailable", "message": "busy"}}),
        )
    )
    assert backend.submit(request()) == "churn-20260101t000000-1"
    puts = job_puts(transport)
    assert len(puts) == 2 and puts[0].body == puts[1].body
    assert service.job_status["churn-20260101t000000-1"] == "NotStarted"


class SleepRecordingAzureML(FakeAzureML):
    """Records azure-core's retry waits instead of sleeping them."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, duration: float) -> None:
        self.sleeps.append(duration)


def test_from_workspace_backs_off_exponentially_between_retries() -> None:
    service = SleepRecordingAzureML()
    backend = AzureMLTrainingBackend.from_workspace(
        "sub-1", "rg-1", "ws-1", credential=FakeCredential(), transport=service
    )
    busy = Canned(503, {"error": {"code": "ServiceUnavailable", "message": "busy"}})
    service.faults += [(lambda r: r.method == "PUT" and "/jobs/" in r.path, busy)] * 3
    assert backend.submit(request()) == "churn-20260101t000000-1"
    assert len(job_puts(service)) == 4
    # azure-core: the first retry at once, then backoff_factor * 2^(n-1) for the n-th error.
    factor = DEFAULT_RETRY["retry_backoff_factor"]
    assert service.sleeps == [factor * 2, factor * 4]
    assert all(sleep > 0 for sleep in service.sleeps)


class UnreachableOnPut(FakeAzureML):
    """The network fails every job PUT (no answer at all), as during a DNS or TLS outage."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.method == "PUT" and "/jobs/" in request.url:
            from azure.core.exceptions import ServiceRequestError

            self.requests.append(Recorded(request.method, request.url, "", None))
            raise ServiceRequestError("connection refused")
        return super().send(request, **kwargs)


def test_an_unreachable_service_is_a_transient_error_not_a_failed_run() -> None:
    service = UnreachableOnPut()
    client = MLClient(
        FakeCredential(), "sub-1", "rg-1", "ws-1", transport=service, retry_backoff_factor=0
    )
    with pytest.raises(TrainingBackendError, match="Azure ML unreachable") as caught:
        AzureMLTrainingBackend(client).submit(request())
    assert caught.value.transient is True  # redelivered and counted, never failed at once
    assert len([r for r in service.requests if r.method == "PUT"]) > 1  # azure-core retried


def test_a_permanent_error_carries_the_service_message(
    backend: AzureMLTrainingBackend, service: FakeAzureML
) -> None:
    service.faults.append(
        (
            lambda r: r.method == "PUT" and "/jobs/" in r.path,
            Canned(
                400,
                {"error": {"code": "UserError", "message": "Compute cpu-big is being deleted"}},
            ),
        )
    )
    with pytest.raises(TrainingBackendError, match="Compute cpu-big is being deleted") as caught:
        backend.submit(request())
    assert caught.value.transient is False


def test_retries_run_out_on_a_persistent_5xx(
    backend: AzureMLTrainingBackend, service: FakeAzureML
) -> None:
    for _ in range(4):  # retry_total=3: the first try and three retries
        service.faults.append(
            (
                lambda r: r.method == "GET" and "/jobs/" in r.path,
                Canned(500, {"error": {"code": "InternalError", "message": "try later"}}),
            )
        )
    with pytest.raises(TrainingBackendError, match="try later") as caught:
        backend.status("churn-1")
    assert caught.value.transient is True


def test_every_service_status_is_mapped(
    backend: AzureMLTrainingBackend, service: FakeAzureML
) -> None:
    from azure.ai.ml._restclient.arm_ml_service.models import JobStatus as AzureJobStatus

    sdk_statuses = {status.value for status in AzureJobStatus}
    assert sdk_statuses <= set(STATUS_MAP)
    backend.submit(request())
    name = "churn-20260101t000000-1"
    service.job_tags[name] = {
        "registered_model_name": "churn",
        "registered_model_version": "8",
    }
    service.run_errors[name] = {"code": "UserError", "message": "step train failed: OOM"}
    expected = {
        "NotStarted": "queued",
        "Queued": "queued",
        "Preparing": "queued",
        "Provisioning": "queued",
        "Starting": "queued",
        "Running": "running",
        "Finalizing": "running",
        "CancelRequested": "running",
        "NotResponding": "running",
        "Paused": "running",
        "Unknown": "running",
        "Completed": "completed",
        "Failed": "failed",
        "Canceled": "canceled",
    }
    for service_status, state in expected.items():
        service.job_status[name] = service_status
        status = backend.status(name)
        assert (status.state, status.service_status) == (state, service_status)
        if state == "completed":
            assert (status.registered_model, status.registered_version) == ("churn", "8")
        if state == "failed":
            assert status.error == "UserError: step train failed: OOM"


def test_completed_reads_the_version_from_the_step_run(
    backend: AzureMLTrainingBackend, service: FakeAzureML
) -> None:
    backend.submit(request())
    name = "churn-20260101t000000-1"
    service.job_status[name] = "Completed"
    service.children[name] = [
        {"runId": "prepare-run", "status": "Completed", "tags": {}},
        {
            "runId": "evaluate-run",
            "status": "Completed",
            "tags": {"registered_model_name": "churn", "registered_model_version": "9"},
        },
    ]
    status = backend.status(name)
    assert (status.state, status.registered_version) == ("completed", "9")


def running_job(backend: AzureMLTrainingBackend, service: FakeAzureML) -> str:
    """Submit the job, and let the service say it runs; its name."""
    name = backend.submit(request())
    service.job_status[name] = "Running"
    return name


def test_cancel_posts_the_cancel_and_does_not_wait(
    backend: AzureMLTrainingBackend, service: FakeAzureML
) -> None:
    name = running_job(backend, service)
    backend.cancel(name)
    [cancel] = service.sent("POST", "/cancel")
    assert cancel.path == f"{ARM}{WORKSPACE}/jobs/{name}/cancel"
    assert "api-version=" in cancel.url
    assert backend.status(name).state == "running"  # CancelRequested: not final yet
    service.job_status[name] = "Canceled"
    backend.cancel(name)  # refused by the service (terminal state): nothing to do
    backend.cancel("no-such-job")  # 404: nothing to do
    assert len(service.sent("POST", "/cancel")) == 3


def test_a_refused_cancel_of_a_running_job_is_an_error(
    backend: AzureMLTrainingBackend, service: FakeAzureML
) -> None:
    name = running_job(backend, service)
    service.faults.append(
        (
            lambda r: r.method == "POST" and r.path.endswith("/cancel"),
            Canned(403, {"error": {"code": "AuthorizationFailed", "message": "no cancel"}}),
        )
    )
    with pytest.raises(TrainingBackendError, match="no cancel") as caught:
        backend.cancel(name)
    assert caught.value.transient is False


def test_status_of_an_unknown_job(backend: AzureMLTrainingBackend) -> None:
    with pytest.raises(TrainingBackendError, match="not found"):
        backend.status("no-such-job")


def test_data_input_shapes() -> None:
    assert data_input_for(["https://a.blob.core.windows.net/c/x/"]) == (
        "uri_folder",
        "https://a.blob.core.windows.net/c/x/",
    )
    assert (
        common_folder(
            ["azureml://datastores/d/paths/m/1.csv", "azureml://datastores/d/paths/m/x/2.csv"]
        )
        == "azureml://datastores/d/paths/m/"
    )
    with pytest.raises(TrainingBackendError, match="different stores"):
        common_folder(
            ["https://a.blob.core.windows.net/c/1.csv", "https://b.blob.core.windows.net/c/2.csv"]
        )
