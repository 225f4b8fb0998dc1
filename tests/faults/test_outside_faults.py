"""Faults of the systems around us, in the middle of a flow (issue 8, item 4).

- Azure ML throttles (429) and is unavailable (503) on the pipeline job submit and on the
  deployment create: azure-core retries with backoff and the flow completes. A permanent
  refusal fails the step with the service's own message in the audit log. Both through the
  real azure-ai-ml SDK (`AzureMLTrainingBackend`, `AzureMLEndpoint`) on the recording
  transports of the contract tests.
- MLflow unreachable during a gate (the real `MlflowMetrics` on a closed port): the gate is
  inconclusive and holds, and never promotes.
- Azurite (state, audit, queues) stops in the middle of a canary and starts again on the same
  data: the flow completes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from azure.ai.ml import MLClient

from adapters.azureml_endpoint import AzureMLEndpoint, make_ml_client
from adapters.azureml_jobs import AzureMLTrainingBackend
from adapters.azurite import start_azurite
from adapters.mlflow_metrics import MlflowMetrics
from adapters.mlflow_registry import MlflowRegistry
from orchestrator.settings import Settings
from tests.adapters import azureml_endpoint_replay, azureml_jobs_replay
from tests.azure_recording import Canned, FakeCredential, Recorded
from tests.faults.flow_harness import (  # noqa: F401
    Courier,
    FakeMetrics,
    Process,
    World,
    check_audit,
    check_invariants,
    collecting,
    courier_figures,
    final_state,
    flow_policy,
    flow_settings_fixture,
    landed,
    make_runtime,
    seed_champion,
)

MODEL = "churn"
ENDPOINT = f"{MODEL}-ep"
RUN_ID = "churn-20260302t090000-1"


# --------------------------------------------------------------------------- Azure ML


class EndpointService(azureml_endpoint_replay.FakeAzureML):
    """The endpoint contract tests' canned Azure ML, answering deployment PUTs with the
    statuses in `put_faults` first (in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.put_faults: list[tuple[int, str, str]] = []  # (status, code, message)

    def injected(self, recorded: Recorded) -> Canned | None:
        if (
            recorded.method == "PUT"
            and "/deployments/" in recorded.path
            and self.put_faults
            and self.in_caller_thread()
        ):
            status, code, message = self.put_faults.pop(0)
            return Canned(status, {"error": {"code": code, "message": message}})
        return super().injected(recorded)

    def deployment_puts(self, name: str) -> int:
        return len(self.sent("PUT", f"/deployments/{name}"))


class AzureWorld:
    """Azure ML's side: the jobs service and the endpoint service, progressing on their own."""

    def __init__(self) -> None:
        self.jobs = azureml_jobs_replay.FakeAzureML()
        client = MLClient(
            FakeCredential(),
            "sub-1",
            "rg-1",
            "ws-1",
            transport=self.jobs,  # the jobs service is its recording transport
            retry_total=3,
            retry_backoff_factor=0,  # retried at once: the test is about the retry, not the wait
        )
        self.training = AzureMLTrainingBackend(client)
        self.endpoints = EndpointService()  # records azure-core's backoff instead of sleeping
        self.endpoints.add_endpoint(ENDPOINT, traffic={"churn-v1": 100})
        self.endpoints.add_deployment(ENDPOINT, "churn-v1", MODEL, "1")
        ml_client = make_ml_client(
            azureml_endpoint_replay.SUB,
            azureml_endpoint_replay.RG,
            azureml_endpoint_replay.WS,
            FakeCredential(),
            transport=self.endpoints,
        )
        self.endpoint = AzureMLEndpoint(lambda: ml_client, ENDPOINT)

    def job_puts(self) -> list[Recorded]:
        return self.jobs.sent("PUT", "/jobs/")

    def progress(self, courier: Courier) -> None:
        """Between deliveries: jobs run and register v2, deployments finish creating, endpoint
        updates finish."""
        for name, status in list(self.jobs.job_status.items()):
            if status == "NotStarted":
                self.jobs.job_status[name] = "Completed"
                self.jobs.job_tags[name] = {
                    "registered_model_name": MODEL,
                    "registered_model_version": "2",
                }
        for body in self.endpoints.deployments.values():
            if body["properties"]["provisioningState"] == "Creating":
                body["properties"]["provisioningState"] = "Succeeded"
        self.endpoints.finish_updates()

    def traffic(self) -> dict[str, int]:
        return dict(self.endpoints.endpoints[ENDPOINT]["properties"]["traffic"])

    def deployment_state(self, name: str) -> str:
        return str(self.endpoints.deployments[(ENDPOINT, name)]["properties"]["provisioningState"])


def azure_flow(
    flow_settings: Any, azure: AzureWorld, *, sweep: bool = True, **settings_overrides: str
) -> Courier:
    settings = flow_settings({MODEL: flow_policy(MODEL, approval=False)}, **settings_overrides)
    world = World(training=azure.training, endpoint=azure.endpoint)
    courier = Courier(world, lambda: Process(settings, world), None, between=azure.progress)
    seed_champion(courier.process, world, MODEL)
    courier.inject(landed(MODEL, 0, 0, 3))
    courier.run()
    # The promotion's last step sets traffic and deletes the old deployment at once; Azure ML
    # refuses the delete while that update runs, so it waits in the outbox for the timer's
    # sweep (here: once the update is done, as minutes later in Azure).
    if sweep:
        azure.progress(courier)
        courier.process.maintenance.sweep()
    return courier


def throttled(status: int) -> tuple[int, str, str]:
    return (status, "TooManyRequests" if status == 429 else "ServiceUnavailable", "try later")


def test_azure_ml_throttling_on_submit_and_deploy_is_retried_and_the_flow_completes(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    azure = AzureWorld()
    job_put = lambda r: r.method == "PUT" and "/jobs/" in r.path  # noqa: E731
    azure.jobs.faults += [
        (job_put, Canned(429, {"error": {"code": "TooManyRequests"}})),
        (job_put, Canned(503, {"error": {"code": "ServiceUnavailable"}})),
    ]
    azure.endpoints.put_faults = [throttled(429), throttled(503)]

    courier = azure_flow(flow_settings, azure)

    # The job PUT was sent three times (429, 503, accepted), the same job each time.
    puts = azure.job_puts()
    assert [p.path.rsplit("/", 1)[1] for p in puts] == [RUN_ID] * 3
    assert puts[0].body == puts[1].body == puts[2].body
    # The deployment PUT too; azure-core backed off between the tries (recorded, not slept):
    # the first retry at once, the second after DEFAULT_RETRY's 2 s.
    assert azure.endpoints.deployment_puts("churn-v2") == 3
    assert azure.endpoints.sleeps == [2.0]
    # Nothing failed as far as the orchestrator is concerned: the flow completed.
    process = courier.process
    state = final_state(process, MODEL)
    assert state["champion"] == "2" and state["history"] == [("2", "completed")]
    assert azure.traffic() == {"churn-v2": 100}
    assert azure.deployment_state("churn-v1") == "Deleting"
    assert courier.stats.failures == 0
    assert process.aggregate(MODEL).outbox == []
    check_audit(process, MODEL)
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = 4
        figures["flows"] = 1
        figures.update(courier_figures(courier))


def test_a_delete_azure_ml_cannot_take_yet_waits_in_the_outbox_and_blocks_nothing(
    flow_settings: Any,
) -> None:
    azure = AzureWorld()
    courier = azure_flow(flow_settings, azure, sweep=False)

    process = courier.process
    assert courier.stats.failures == 0  # no message failed for it
    [waiting] = process.aggregate(MODEL).outbox
    assert (waiting.effect.kind, waiting.effect.deployment) == ("delete_deployment", "churn-v1")
    assert azure.endpoints.sent("DELETE") == []
    # What came after the delete in the same step went out: v1 tagged archived, the event.
    state = final_state(process, MODEL)
    assert state["history"] == [("2", "completed")] and state["champion"] == "2"
    registry = courier.world.registry.tags
    assert (MODEL, "1", "archived") in [(m, v, t.get("retrain.stage")) for m, v, t in registry]
    assert "promotion.completed" in [kind for kind, _, _ in courier.world.events]
    process.maintenance.sweep()  # the update still runs: it waits again
    assert len(process.aggregate(MODEL).outbox) == 1
    azure.progress(courier)  # the traffic update is done
    process.maintenance.sweep()
    assert process.aggregate(MODEL).outbox == []
    assert [r.path.rsplit("/", 1)[1] for r in azure.endpoints.sent("DELETE")] == ["churn-v1"]
    assert azure.traffic() == {"churn-v2": 100}


def test_retries_running_out_on_a_deployment_leave_it_to_the_transport(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    """Six 503s outlast azure-core's retries: the deployment's dispatch fails as transient,
    the message is redelivered, and the next try deploys."""
    azure = AzureWorld()
    azure.endpoints.put_faults = [throttled(503)] * 6

    courier = azure_flow(flow_settings, azure)

    assert courier.stats.failures == 1  # one delivery failed, and was delivered again
    assert azure.endpoints.deployment_puts("churn-v2") == 7
    state = final_state(courier.process, MODEL)
    assert state["history"] == [("2", "completed")]
    assert azure.traffic() == {"churn-v2": 100}
    check_audit(courier.process, MODEL)
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = 6
        figures["flows"] = 1
        figures.update(courier_figures(courier))


def test_azure_ml_unavailable_on_every_submit_fails_the_run_after_max_effect_attempts(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    """503 on every job PUT: each dispatch exhausts azure-core's retries (4 tries), the
    message is redelivered, and the fifth dispatch (MAX_EFFECT_ATTEMPTS) fails the run."""
    azure = AzureWorld()
    unavailable = Canned(503, {"error": {"code": "ServiceUnavailable", "message": "try later"}})
    azure.jobs.faults += [(lambda r: r.method == "PUT" and "/jobs/" in r.path, unavailable)] * 40

    # No retry window: the redeliveries here come at once (the window has its own test).
    courier = azure_flow(flow_settings, azure, EFFECT_RETRY_SECONDS="0")

    assert len(azure.job_puts()) == 5 * 4  # five dispatches, each the first try and 3 retries
    assert courier.stats.failures == 4  # redelivered four times, then the step failed
    process = courier.process
    run = process.aggregate(MODEL).retrain.runs[-1]
    assert (run.run_id, run.status) == (RUN_ID, "failed")
    [failed] = [r for r in check_audit(process, MODEL) if r.action == "retrain.job_failed"]
    assert str(failed.detail["error"]).startswith("gave up after 5 attempts in 0 s: ")
    assert "Azure ML answered 503 ServiceUnavailable: try later" in str(failed.detail["error"])
    assert process.aggregate(MODEL).outbox == []
    assert final_state(process, MODEL)["champion"] == "1"
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = len(azure.job_puts())
        figures["flows"] = 1
        figures.update(courier_figures(courier))


def test_azure_ml_unavailable_on_every_deploy_fails_the_promotion_after_max_effect_attempts(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    azure = AzureWorld()
    azure.endpoints.put_faults = [throttled(503)] * 200

    courier = azure_flow(flow_settings, azure, EFFECT_RETRY_SECONDS="0")

    tries = azure.endpoints.deployment_puts("churn-v2")
    assert tries == 5 * (1 + 5)  # five dispatches, each the first try and retry_status=5
    process = courier.process
    state = final_state(process, MODEL)
    assert state["history"] == [("2", "failed")] and state["champion"] == "1"
    [failed] = [r for r in check_audit(process, MODEL) if r.action == "promotion.failed"]
    assert "gave up after 5 attempts in 0 s: " in failed.detail["cause"]
    assert "Azure ML answered 503 ServiceUnavailable: try later" in failed.detail["cause"]
    assert azure.traffic() == {"churn-v1": 100}  # production never moved
    assert process.aggregate(MODEL).outbox == []
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = tries
        figures["flows"] = 1
        figures.update(courier_figures(courier))


def test_a_job_azure_ml_refuses_fails_the_run_with_the_service_message(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    azure = AzureWorld()
    refusal = {"error": {"code": "UserError", "message": "Compute cpu-big is being deleted"}}
    azure.jobs.faults.append(
        (
            lambda r: r.method == "PUT" and "/jobs/" in r.path,
            Canned(400, refusal),
        )
    )

    courier = azure_flow(flow_settings, azure)

    assert len(azure.job_puts()) == 1  # a refusal is not retried
    process = courier.process
    run = process.aggregate(MODEL).retrain.runs[-1]
    assert (run.run_id, run.status) == (RUN_ID, "failed")
    assert run.error is not None and "Compute cpu-big is being deleted" in run.error
    [failed] = [r for r in check_audit(process, MODEL) if r.action == "retrain.job_failed"]
    assert "Azure ML answered 400 UserError: Compute cpu-big is being deleted" in str(
        failed.detail["error"]
    )
    # Nothing was promoted, nothing deployed.
    state = final_state(process, MODEL)
    assert state["history"] == [] and state["champion"] == "1"
    assert azure.endpoints.sent("PUT") == []
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = 1
        figures["flows"] = 1
        figures.update(courier_figures(courier))


def test_a_deployment_azure_ml_refuses_fails_the_promotion_with_its_error(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    azure = AzureWorld()
    quota = "Not enough quota for Standard_DS3_v2 in westeurope"
    azure.endpoints.put_faults = [(400, "QuotaExceeded", quota)]

    courier = azure_flow(flow_settings, azure)

    assert azure.endpoints.deployment_puts("churn-v2") == 1  # a refusal is not retried
    process = courier.process
    state = final_state(process, MODEL)
    assert state["history"] == [("2", "failed")]
    assert state["champion"] == "1" and state["active"] is None
    [failed] = [r for r in check_audit(process, MODEL) if r.action == "promotion.failed"]
    assert failed.detail["cause"] == (
        "deployment churn-v2 failed: deploying churn:2 as churn-v2: "
        f"Azure ML answered 400 QuotaExceeded: {quota}"
    )
    # Production never moved.
    assert azure.traffic() == {"churn-v1": 100}
    assert process.aggregate(MODEL).outbox == []
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = 1
        figures["flows"] = 1
        figures.update(courier_figures(courier))


# --------------------------------------------------------------------------- MLflow


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OfflineFromFake:
    """Staging reads the fake; the canary's live metrics come from `live`."""

    def __init__(self, live: Any) -> None:
        self._fake = FakeMetrics()
        self._live = live

    def offline(self, *args: Any) -> Any:
        return self._fake.offline(*args)

    def live(self, *args: Any) -> Any:
        return self._live.live(*args)


@pytest.fixture
def mlflow_down(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tracking URI nobody listens on. MLflow's own HTTP retries (7, backoff factor 2:
    about four minutes per call) are turned off here, or each read would take that long."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return f"http://127.0.0.1:{closed_port()}"


def mlflow_flow(
    flow_settings: Any, tracking_uri: str, metrics: Callable[[Settings], Any]
) -> tuple[Courier, World, Settings]:
    settings = flow_settings(
        {MODEL: flow_policy(MODEL, approval=False)}, MLFLOW_TRACKING_URI=tracking_uri
    )
    world = World()
    world.metrics = metrics(settings)
    courier = Courier(world, lambda: Process(settings, world), None)
    seed_champion(courier.process, world, MODEL)
    courier.inject(landed(MODEL, 0, 0, 3))
    courier.run()
    return courier, world, settings


def test_mlflow_unreachable_at_the_staging_gate_holds_then_rejects_never_promotes(
    flow_settings: Any, mlflow_down: str, request: pytest.FixtureRequest
) -> None:
    def metrics(settings: Settings) -> MlflowMetrics:
        reader = MlflowMetrics(settings, MlflowRegistry(settings.tracking_uri))
        with pytest.raises(Exception, match=urlparse(mlflow_down).netloc):
            reader.offline(MODEL, "2", "1")  # the reader really talks to the closed port
        return reader

    courier, world, _ = mlflow_flow(flow_settings, mlflow_down, metrics)

    process = courier.process
    records = check_audit(process, MODEL)
    gates = [r for r in records if r.action.startswith("gate.")]
    # Three inconclusive checks (max_attempts), each rescheduled 1 s later, then rejected.
    assert [r.action for r in gates] == ["gate.inconclusive"] * 3
    assert all(r.detail["evidence"][0]["reason"] == "offline metrics unavailable" for r in gates)
    state = final_state(process, MODEL)
    assert state["history"] == [("2", "rejected")]
    assert "promotion.deploying" not in state["transitions"]
    assert state["champion"] == "1"
    assert world.endpoint.deploy_calls == {} and world.endpoint.traffic_maps == []
    assert world.endpoint.live == {"churn-v1": 100}
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = 3
        figures["flows"] = 1
        figures.update(courier_figures(courier))


def test_mlflow_unreachable_during_the_canary_holds_the_split_then_rolls_back(
    flow_settings: Any, mlflow_down: str, request: pytest.FixtureRequest
) -> None:
    from adapters.local_endpoint import endpoint_data_dir
    from endpoint_server.store import RECORDS_FILE, connect

    def metrics(settings: Settings) -> OfflineFromFake:
        # The endpoint's own request log exists (empty): what fails is MLflow.
        folder = endpoint_data_dir(settings.local_endpoint_dir, f"{MODEL}-ep")
        folder.mkdir(parents=True, exist_ok=True)
        connect(folder / RECORDS_FILE).close()
        return OfflineFromFake(MlflowMetrics(settings, MlflowRegistry(settings.tracking_uri)))

    courier, world, _ = mlflow_flow(flow_settings, mlflow_down, metrics)

    process = courier.process
    actions = [r.action for r in check_audit(process, MODEL)]
    gate_actions = [a for a in actions if a.startswith("gate.")]
    assert gate_actions == [
        "gate.passed",  # staging (offline metrics from the fake)
        "gate.inconclusive",
        "gate.waiting",
        "gate.inconclusive",
        "gate.waiting",
        "gate.inconclusive",  # max_step_duration: out of time, nothing to look at
        "gate.exhausted",
    ]
    state = final_state(process, MODEL)
    assert state["history"] == [("2", "rolled_back")] and state["champion"] == "1"
    # The candidate never got more than its first step's 10%; production is whole again.
    assert world.endpoint.traffic_maps == [
        {"churn-v1": 90, "churn-v2": 10},
        {"churn-v1": 100},
    ]
    check_invariants(process, world, MODEL)
    with collecting(request.node.nodeid) as figures:
        figures["faults_injected"] = 3
        figures["flows"] = 1
        figures.update(courier_figures(courier))


# --------------------------------------------------------------------------- Azurite


@pytest.mark.azurite  # starts (and restarts) its own emulator
def test_an_azurite_restart_in_the_middle_of_the_canary_is_recovered_from(
    flow_settings: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    emulator = start_azurite(location=tmp_path / "azurite")
    try:
        current = {
            "settings": flow_settings(
                {MODEL: flow_policy(MODEL)}, AzureWebJobsStorage=emulator.connection_string
            )
        }
        world = World()
        courier = Courier(world, lambda: Process(current["settings"], world), None)
        seed_champion(courier.process, world, MODEL)
        courier.inject(landed(MODEL, 0, 0, 3))

        def in_canary() -> bool:
            active = courier.process.aggregate(MODEL).promotion.active
            return active is not None and active.step == "canary-1"

        courier.run(until=in_canary)
        # The check of the first canary step sits in the queue, not yet received.
        assert world.endpoint.live == {"churn-v1": 90, "churn-v2": 10}
        version = courier.process.aggregate(MODEL).version

        emulator.stop()
        emulator = start_azurite(location=tmp_path / "azurite")  # same data, new ports
        current["settings"] = current["settings"].model_copy(
            update={"storage_connection_string": emulator.connection_string}
        )
        courier.restart()
        assert courier.process.aggregate(MODEL).version == version  # the state survived
        assert courier.collect() >= 1  # and so did the queued check

        courier.run()
        state = final_state(courier.process, MODEL)
        assert state["history"] == [("2", "completed")] and state["champion"] == "2"
        check_invariants(courier.process, world, MODEL)
        with collecting(request.node.nodeid) as figures:
            figures["faults_injected"] = 1
            figures["flows"] = 1
            figures.update(courier_figures(courier))
    finally:
        emulator.stop()
