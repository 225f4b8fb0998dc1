"""Each trigger invoked with real azure.functions objects against Azurite-backed adapters,
checking the state and the messages it leaves."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from adapters.storage_queue_bus import decode_body
from devhost.host.pollers import blob_created_event
from domain.metrics import OfflineMetrics
from domain.policy import parse_policy
from orchestrator.bootstrap import set_runtime
from orchestrator.messages import Envelope
from orchestrator.ports import DeploymentStatus, EndpointError
from tests.harness import (
    RecordingTrainingBackend,
    ShiftedClock,
    issuer_of,
    policy_yaml,
    signed,
)
from triggers import data, health, http_api, maintenance, messages
from triggers.payloads import parse_event

GRID_SUBJECT = "/blobServices/default/containers/training-data/blobs/churn/grid.csv"


def user(builder: Any) -> Any:
    return builder._function.get_user_function()


class InMemoryEndpoint:
    """The OnlineEndpoint port in memory: deployments are ready at once."""

    def __init__(self) -> None:
        self.deployed: dict[str, str] = {}
        self.traffic_map: dict[str, int] = {}
        self.calls: list[tuple[str, Any]] = []
        self.down = False  # every call fails, as an endpoint that does not answer

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        self.calls.append(("deploy", deployment))
        self.deployed[deployment] = model_version
        return deployment

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        state = "succeeded" if deployment in self.deployed else "missing"
        return DeploymentStatus(deployment=deployment, state=state)  # type: ignore[arg-type]

    def set_traffic(self, traffic: dict[str, int]) -> None:
        if self.down:
            raise EndpointError("endpoint unreachable", transient=True)
        self.calls.append(("set_traffic", dict(traffic)))
        self.traffic_map = {name: weight for name, weight in traffic.items() if weight}

    def set_mirror(self, mirror: dict[str, int]) -> None:
        self.calls.append(("set_mirror", dict(mirror)))

    def delete(self, deployment: str) -> None:
        if self.down:
            raise EndpointError("endpoint unreachable", transient=True)
        self.calls.append(("delete", deployment))
        self.deployed.pop(deployment, None)

    def traffic(self) -> dict[str, int]:
        return dict(self.traffic_map)

    def deployments(self) -> list[DeploymentStatus]:
        return [
            DeploymentStatus(deployment=name, state="succeeded", model_version=version)
            for name, version in sorted(self.deployed.items())
        ]


class FixedMetrics:
    def offline(self, model: str, candidate: str, champion: str | None) -> OfflineMetrics:
        return OfflineMetrics(candidate={"auc": 0.95}, champion=None)

    def live(self, *args: Any) -> Any:
        raise ConnectionError("no live metrics in this test")


DATA_ACCOUNT = "https://acct.blob.core.windows.net"


@pytest.fixture
def app_runtime(make_runtime):
    backend = RecordingTrainingBackend()
    endpoint = InMemoryEndpoint()
    runtime = make_runtime(
        {"churn": policy_yaml("churn"), "fraud": policy_yaml("fraud")},
        training=backend,
        endpoints=lambda policy: endpoint,
        metrics=FixedMetrics(),
        DataStorage__blobServiceUri=DATA_ACCOUNT,  # the account data URIs must name
    )
    set_runtime(runtime)
    yield runtime, backend, endpoint
    set_runtime(None)


def request(
    method: str,
    route: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    **route_params: str,
) -> func.HttpRequest:
    raw = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    return func.HttpRequest(
        method,
        f"http://localhost/api/{route}",
        headers={"content-type": "application/json"},
        params=params or {},
        route_params=route_params,
        body=raw or b"",
    )


def queued(runtime) -> list[Envelope]:
    from orchestrator.messages import parse_envelope

    queue = runtime.queue(runtime.settings.orchestrator_queue)
    return [parse_envelope(decode_body(m.content)) for m in queue.peek_messages(max_messages=32)]


def waiting(runtime) -> int:
    """Messages on the orchestrator queue, visible or scheduled."""
    queue = runtime.queue(runtime.settings.orchestrator_queue)
    return queue.get_queue_properties().approximate_message_count


def test_health_is_anonymous_and_says_nothing_more():
    response = user(health.health)(request("GET", "health"))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "ok"}


def test_retrain_returns_202_and_submits_one_job_per_idempotency_key(app_runtime):
    _runtime, backend, _ = app_runtime
    body = {
        "model": "churn",
        "data_uri": "https://acct.blob.core.windows.net/training-data/churn/extra.csv",
        "reason": "new labels",
        "force": True,
    }
    call = user(http_api.retrain)
    first = func.HttpRequest(
        "POST",
        "http://localhost/api/retrain",
        headers={"idempotency-key": "k-1"},
        params={},
        route_params={},
        body=json.dumps(body).encode(),
    )
    response = call(first)
    assert response.status_code == 202
    document = json.loads(response.get_body())
    assert document["status_url"] == "/api/models/churn"
    assert response.headers["Location"] == "/api/models/churn"
    assert backend.jobs == [document["run_id"]]
    assert backend.submissions[0].data_uris == [body["data_uri"]]
    again = call(first)  # a client retry with the same key
    assert json.loads(again.get_body())["run_id"] == document["run_id"]
    assert backend.jobs == [document["run_id"]]
    status = json.loads(
        user(http_api.model_status)(request("GET", "models/churn", model="churn")).get_body()
    )
    assert status["retrain"]["current_job"]["run_id"] == document["run_id"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"", 400, "body"),
        (b"{oops", 400, "not valid JSON"),
        ({"data_uri": "x"}, 400, "model"),
        ({"model": "churn", "force": "sometimes"}, 400, "force"),
        ({"model": "churn", "colour": "red"}, 400, "colour"),
        ({"model": "nope"}, 404, "model"),
    ],
)
def test_retrain_bad_requests_name_the_field(app_runtime, body, status, detail):
    _runtime, backend, _ = app_runtime
    response = user(http_api.retrain)(request("POST", "retrain", body))
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert detail in json.loads(response.get_body())["detail"]
    assert backend.submissions == []


def test_unknown_model_and_promotion_are_404(app_runtime):
    assert user(http_api.model_status)(request("GET", "models/x", model="x")).status_code == 404
    response = user(http_api.promotion_status)(
        request("GET", "promotions/nope", promotion_id="nope")
    )
    assert response.status_code == 404


def _audit(params: dict[str, str], model: str = "churn") -> func.HttpResponse:
    route = f"models/{model}/audit"
    return user(http_api.model_audit)(request("GET", route, params=params, model=model))


def test_the_audit_is_paged_with_its_token_in_the_body_and_the_headers(app_runtime):
    runtime, _, _ = app_runtime
    start = Envelope.new("StartPromotion", "churn", {"candidate_version": "1"})
    runtime.handlers.handle(runtime.signer.sign(start))
    promotion_id = runtime.queries.model_status("churn")["active_promotion"]["id"]
    runtime.handlers.handle(
        runtime.signer.sign(Envelope.new("StartPromotion", "churn", {"candidate_version": "2"}))
    )

    records, params, pages = [], {"limit": "2", "code": "the-function-key"}, 0
    while True:
        response = _audit(params)
        assert response.status_code == 200
        document = json.loads(response.get_body())
        assert len(document["records"]) <= 2
        records.extend(document["records"])
        pages += 1
        if document["continuation"] is None:
            assert "x-ms-continuation" not in response.headers and document["next"] is None
            break
        assert response.headers["x-ms-continuation"] == document["continuation"]
        assert response.headers["Link"] == f'<{document["next"]}>; rel="next"'
        assert document["next"].startswith("/api/models/churn/audit?limit=2&continuation=")
        params = {"limit": "2", "continuation": document["continuation"]}
    everything = [r.model_dump(mode="json") for r in runtime.ports.audit.read("churn")]
    assert records == everything and pages >= 2

    only = json.loads(_audit({"promotion": promotion_id, "limit": "1000"}).get_body())
    assert only["records"] and {r["promotion_id"] for r in only["records"]} == {promotion_id}
    assert only["continuation"] is None

    # GET /api/promotions/{id}: the promotion and the first page of its audit.
    found = user(http_api.promotion_status)(
        request("GET", "p", params={"limit": "1"}, promotion_id=promotion_id)
    )
    document = json.loads(found.get_body())
    assert document["audit"] == only["records"][:1]
    assert document["next"].startswith(f"/api/models/churn/audit?promotion={promotion_id}&limit=1")
    assert found.headers["x-ms-continuation"] == document["continuation"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "1e2"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"continuation": "not-a-token"}, "continuation"),
        ({"continuation": ""}, "continuation"),
        ({"promotion": "../other"}, "promotion"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_page_query_is_a_400_naming_the_parameter(app_runtime, params, detail):
    for response in (
        _audit(params),
        user(http_api.model_runs)(request("GET", "r", params=params, model="churn")),
    ):
        assert response.status_code == 400, response.get_body()
        assert response.mimetype == "application/problem+json"
        assert detail in json.loads(response.get_body())["detail"]


def test_a_token_of_another_model_or_promotion_is_a_400(app_runtime):
    runtime, _, _ = app_runtime
    for version in ("1", "2", "3"):
        start = Envelope.new("StartPromotion", "churn", {"candidate_version": version})
        runtime.handlers.handle(runtime.signer.sign(start))
    token = json.loads(_audit({"limit": "1"}).get_body())["continuation"]
    assert token
    for response in (
        _audit({"continuation": token}, model="fraud"),
        _audit({"continuation": token, "promotion": "churn-v1-20260101T000000"}),
        user(http_api.model_runs)(
            request("GET", "r", params={"continuation": token}, model="churn")
        ),
    ):
        assert response.status_code == 400
        assert "another query" in json.loads(response.get_body())["detail"]
    assert _audit({}, model="nope").status_code == 404


def test_the_runs_and_the_status_over_http(app_runtime):
    runtime, backend, _ = app_runtime
    response = user(http_api.retrain)(
        request(
            "POST",
            "retrain",
            {"model": "churn", "data_uri": f"{DATA_ACCOUNT}/training-data/churn/a.csv"},
        )
    )
    run_id = json.loads(response.get_body())["run_id"]
    backend.finish(run_id, "7")
    check = Envelope.new("TrainingJobCheck", "churn", {"run_id": run_id, "attempt": 1})
    runtime.handlers.handle(runtime.signer.sign(check))

    runs = user(http_api.model_runs)(request("GET", "r", params={"limit": "5"}, model="churn"))
    document = json.loads(runs.get_body())
    [run] = document["runs"]
    assert (run["run_id"], run["status"], run["registered_version"]) == (run_id, "completed", "7")
    assert document["continuation"] is None

    status = json.loads(user(http_api.model_status)(request("GET", "m", model="churn")).get_body())
    assert status["links"] == {"runs": "/api/models/churn/runs", "audit": "/api/models/churn/audit"}
    assert status["retrain"]["runs"][-1]["run_id"] == run_id
    assert status["retrain"]["pending"] == {"count": 0, "rows": 0, "sample": []}
    assert "blob:" not in json.dumps(status)  # no data key


def test_blob_created_records_the_data_once_and_schedules_the_window(app_runtime, caplog):
    runtime, _, _ = app_runtime
    container = f"{DATA_ACCOUNT}/training-data"
    event = blob_created_event(container, "churn/2026-11-22.csv", '"0x8D1"', 10)
    user(data.data_blob_created)(event)
    after_first = runtime.queries.model_status("churn")
    assert after_first["retrain"]["pending"] == {
        "count": 1,
        "rows": None,
        "sample": [f"{DATA_ACCOUNT}/training-data/churn/2026-11-22.csv"],
    }
    # The window's close is scheduled: on the queue, invisible until the debounce ends.
    assert after_first["retrain"]["window"] is not None
    assert waiting(runtime) == 1 and queued(runtime) == []
    user(data.data_blob_created)(event)  # Event Grid delivers it again: no change
    assert runtime.queries.model_status("churn")["version"] == after_first["version"]
    elsewhere = blob_created_event(container, "unrelated/file.csv", '"0x1"', 1)
    with caplog.at_level(logging.INFO, logger="triggers.payloads"):
        user(data.data_blob_created)(elsewhere)  # no model's prefix: ignored, said once
        user(data.data_blob_created)(elsewhere)
    said = [r.getMessage() for r in caplog.records if "unrelated/file.csv" in r.getMessage()]
    assert len(said) == 1 and "under no model's data prefix" in said[0], said
    assert "training-data/churn/" in said[0]  # the prefixes that are watched
    assert waiting(runtime) == 1


def test_a_hub_event_for_no_one_s_blob_is_explained_once_however_often_it_comes(caplog):
    policy = parse_policy(policy_yaml("churn"))
    event = {
        "id": "grid-7",
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": "/blobServices/default/containers/training-data/blobs/stray/hub-only.csv",
        "data": {"url": f"{DATA_ACCOUNT}/training-data/stray/hub-only.csv", "eTag": "0x1"},
    }
    body = json.dumps(event).encode()
    with caplog.at_level(logging.INFO, logger="triggers.payloads"):
        for _ in range(3):  # Event Hubs delivers it again, and again
            assert parse_event(body, {"churn": policy}, DATA_ACCOUNT) == []
    said = [r for r in caplog.records if "stray/hub-only.csv" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "under no model's data prefix" in said[0].getMessage()


def test_a_file_not_written_yet_is_skipped(app_runtime):
    """ADLS raises BlobCreated at CreateFile (empty) and at FlushWithClose: only the second."""
    runtime, _, _ = app_runtime
    container = f"{DATA_ACCOUNT}/training-data"
    created = blob_created_event(container, "churn/adls.csv", '"0x1"', 0)
    document = created.get_json() | {"api": "CreateFile"}
    user(data.data_blob_created)(
        func.EventGridEvent(
            id=created.id,
            data=document,
            topic=created.topic,
            subject=created.subject,
            event_type=created.event_type,
            event_time=created.event_time,
            data_version="",
        )
    )
    assert runtime.queries.model_status("churn")["retrain"]["pending"]["count"] == 0
    flushed = blob_created_event(container, "churn/adls.csv", '"0x2"', 10)
    user(data.data_blob_created)(flushed)
    assert runtime.queries.model_status("churn")["retrain"]["pending"]["count"] == 1


def test_event_hub_batch_writes_once_per_model(app_runtime):
    runtime, _, _ = app_runtime
    events = [
        func.EventHubEvent(
            body=json.dumps(
                {
                    "model": model,
                    "data_uri": f"{DATA_ACCOUNT}/training-data/{model}/{n}.csv",
                    "rows": 10,
                    "event_id": f"{model}-{n}",
                }
            ).encode()
        )
        for model in ("churn", "fraud")
        for n in range(50)
    ]
    events.append(
        func.EventHubEvent(
            body=json.dumps(
                {
                    "id": "eg-1",
                    "eventType": "Microsoft.Storage.BlobCreated",
                    "subject": "/blobServices/default/containers/training-data/blobs/"
                    "churn/grid.csv",
                    "data": {"url": f"{DATA_ACCOUNT}/training-data/churn/grid.csv", "eTag": "0x9"},
                }
            ).encode()
        )
    )
    user(data.data_events)(events)
    churn = runtime.queries.model_status("churn")
    fraud = runtime.queries.model_status("fraud")
    assert churn["retrain"]["pending"]["count"] == 51
    assert fraud["retrain"]["pending"]["count"] == 50
    # One state write per model for the whole batch (the dispatch bookkeeping is the second).
    assert churn["version"] <= 2 and fraud["version"] <= 2


def test_orchestrator_queue_message_is_handled(app_runtime):
    runtime, backend, _ = app_runtime
    envelope = Envelope.new(
        "RetrainRequested",
        "fraud",
        {
            "run_id": "fraud-manual-1",
            "data_uri": f"{DATA_ACCOUNT}/training-data/fraud/x.csv",
            "force": True,
            "requested_by": "test",
        },
    )
    # A person's command: with the token of someone allowed to ask (orchestrator/people.py).
    envelope = signed(runtime, envelope, "ops@contoso.com", roles=["Retrain.Request"])
    result = messages.handle_message(
        func.ServiceBusMessage(body=envelope.to_bytes()), "orchestrator"
    )
    assert result == "applied"
    assert backend.jobs == ["fraud-manual-1"]
    user(messages.orchestrator_queue)(func.ServiceBusMessage(body=envelope.to_bytes()))
    assert backend.jobs == ["fraud-manual-1"]  # a redelivery changes nothing


def test_promotion_status_and_rollback_over_http(app_runtime):
    runtime, _, endpoint = app_runtime
    start = Envelope.new("StartPromotion", "churn", {"candidate_version": "1"})
    runtime.handlers.handle(runtime.signer.sign(start))
    active = runtime.queries.model_status("churn")["active_promotion"]
    assert active["status"] == "deploying"
    promotion_id = active["id"]

    found = user(http_api.promotion_status)(
        request("GET", f"promotions/{promotion_id}", promotion_id=promotion_id)
    )
    document = json.loads(found.get_body())
    assert document["promotion"]["status"] == "deploying"
    assert "deploying" in [record["to_state"] for record in document["audit"]]

    rollback = user(http_api.rollback)
    # The function key alone names nobody: refused, unless automation was allowed it.
    assert (
        rollback(request("POST", "x", {"reason": "r"}, promotion_id=promotion_id)).status_code
        == 401
    )
    runtime.settings = runtime.settings.model_copy(update={"http_key_rollback": True})
    assert (
        rollback(request("POST", "x", {"reason": ""}, promotion_id=promotion_id)).status_code == 400
    )
    response = rollback(request("POST", "x", {"reason": "bad smell"}, promotion_id=promotion_id))
    assert response.status_code == 202
    status = runtime.queries.model_status("churn")
    assert status["active_promotion"] is None
    assert status["recent_promotions"][-1]["outcome"] == "rolled_back"
    assert ("delete", endpoint.calls[0][1]) in endpoint.calls  # the candidate was removed
    trail = runtime.queries.audit_trail("churn", promotion_id)
    rolled = [r for r in trail if r.to_state == "rolled_back"]
    assert rolled and rolled[0].actor == "function-key"
    assert (
        rollback(request("POST", "x", {"reason": "again"}, promotion_id=promotion_id)).status_code
        == 409
    )


def test_a_rollback_over_http_while_the_endpoint_is_down_is_saved_and_retried(app_runtime):
    """Not a 500 that a retry turns into a 409: the rollback is saved and answered 202 with
    its effects pending; the timer's sweep finishes them once the endpoint answers."""
    runtime, _, endpoint = app_runtime
    start = Envelope.new("StartPromotion", "churn", {"candidate_version": "1"})
    runtime.handlers.handle(runtime.signer.sign(start))
    promotion_id = runtime.queries.model_status("churn")["active_promotion"]["id"]
    endpoint.down = True

    token = issuer_of(runtime).mint("ops@contoso.com", roles=["Promotion.Operate"])
    response = user(http_api.rollback)(
        func.HttpRequest(
            "POST",
            f"http://localhost/api/promotions/{promotion_id}/rollback",
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
            params={},
            route_params={"promotion_id": promotion_id},
            body=json.dumps({"reason": "bad smell"}).encode(),
        )
    )
    assert response.status_code == 202
    body = json.loads(response.get_body())
    assert body["effects_pending"] is True and "endpoint unreachable" in body["reason"]
    status = runtime.queries.model_status("churn")
    assert status["active_promotion"] is None and status["pending_effects"] == 1

    endpoint.down = False
    user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))
    assert runtime.queries.model_status("churn")["pending_effects"] == 0
    assert endpoint.deployed == {}


def test_timer_sweeps_an_outbox_left_behind(app_runtime):
    runtime, backend, _ = app_runtime
    from domain.effects import SubmitTrainingJob

    store = runtime.ports.store
    from orchestrator.aggregate import OutboxItem

    store.update(
        "churn",
        lambda a: a.model_copy(
            update={
                "outbox": [
                    OutboxItem(
                        id="1-0",
                        effect=SubmitTrainingJob(
                            run_id="churn-left", data_count=1, data_sample=["https://a/x.csv"]
                        ),
                    )
                ]
            }
        ),
    )
    user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))
    assert backend.jobs == ["churn-left"]
    assert runtime.queries.model_status("churn")["pending_effects"] == 0


def test_timer_reports_a_promotion_that_has_not_moved_for_too_long(make_runtime, caplog):
    from datetime import timedelta

    approval = "{required: true, approvers: [lead@contoso.com], timeout: 7d, on_timeout: reject}"
    clock = ShiftedClock()
    runtime = make_runtime(
        {"churn": policy_yaml("churn", approval=approval, max_time_in_state="2h")},
        clock=clock,
        metrics=FixedMetrics(),
    )
    set_runtime(runtime)
    try:
        start = Envelope.new("StartPromotion", "churn", {"candidate_version": "3", "run_id": "r"})
        assert runtime.handlers.handle(runtime.signer.sign(start)).status == "applied"
        active = runtime.queries.model_status("churn")["active_promotion"]
        assert active["status"] == "awaiting_approval"
        sweeper = user(maintenance.outbox_sweeper)

        caplog.clear()
        with caplog.at_level("INFO"):
            sweeper(TimerRequest(past_due=False))
        assert "0 promotion(s) stuck" in caplog.text  # within max_time_in_state: quiet

        clock.advance(timedelta(hours=2, minutes=1))
        caplog.clear()
        with caplog.at_level("INFO"):
            sweeper(TimerRequest(past_due=False))
        [stuck] = runtime.maintenance.sweep()["stuck"]
        assert (stuck["model"], stuck["status"]) == ("churn", "awaiting_approval")
        assert stuck["promotion_id"] == active["id"]
        assert f"1 promotion(s) stuck; churn {active['id']} awaiting_approval" in caplog.text
    finally:
        set_runtime(None)


# --------------------------------------------------------------------------- who asked, over HTTP


def principal_header(claims: dict[str, str], **extra: Any) -> str:
    """X-MS-CLIENT-PRINCIPAL as App Service authentication writes it: base64 JSON claims."""
    document = {
        "auth_typ": "aad",
        "claims": [{"typ": typ, "val": val} for typ, val in claims.items()],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    } | extra
    return base64.b64encode(json.dumps(document).encode()).decode()


OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
ANA = {OID_CLAIM: "0c7a-ana", "preferred_username": "ana@contoso.com", "name": "Ana"}
FORGED = {"x-requested-by": "ceo@contoso.com", "x-ms-client-principal-name": "ceo@contoso.com"}


def with_headers(headers: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/retrain", headers=headers, body=b"{}")


def test_the_http_caller_is_app_service_s_principal_only_when_its_authentication_is_on():
    signed_in = with_headers({"x-ms-client-principal": principal_header(ANA)} | FORGED)
    assert http_api.requester(signed_in, app_service_auth=True)[:2] == (
        "ana@contoso.com",
        "http:app-service:0c7a-ana",
    )
    # Authentication off: the header could come from anyone; the caller holds the function key.
    assert http_api.requester(signed_in, app_service_auth=False) == http_api.FUNCTION_KEY
    # Headers a caller sets itself never name the caller.
    assert http_api.requester(with_headers(FORGED), app_service_auth=True) == http_api.FUNCTION_KEY
    assert http_api.requester(with_headers(FORGED), app_service_auth=False) == http_api.FUNCTION_KEY
    # A principal with no user name (an app): its object id.
    app = with_headers({"x-ms-client-principal": principal_header({"oid": "0c7a-app"})})
    assert http_api.requester(app, app_service_auth=True) == (
        "0c7a-app",
        "http:app-service:0c7a-app",
        frozenset(),  # and no app role
    )
    for garbage in ("not base64!", base64.b64encode(b"[1, 2]").decode(), principal_header({})):
        unreadable = with_headers({"x-ms-client-principal": garbage})
        assert http_api.requester(unreadable, app_service_auth=True) == http_api.FUNCTION_KEY


def test_website_auth_enabled_is_read_from_the_settings():
    from tests.fakes import fake_settings

    assert fake_settings(WEBSITE_AUTH_ENABLED="True").app_service_auth
    assert not fake_settings(WEBSITE_AUTH_ENABLED="False").app_service_auth
    assert not fake_settings().app_service_auth


def test_a_retrain_over_http_is_from_the_key_holder_whatever_the_headers_say(app_runtime):
    runtime, _, _ = app_runtime
    forged = func.HttpRequest(
        "POST",
        "http://localhost/api/retrain",
        headers={"content-type": "application/json"} | FORGED,
        body=json.dumps({"model": "churn", "force": True}).encode(),
    )
    assert user(http_api.retrain)(forged).status_code == 202
    [record] = [r for r in runtime.ports.audit.read("churn") if r.cause_type == "RetrainRequested"]
    assert record.actor == "function-key"
    assert record.detail["identity"] == {"verified_by": "http:function-key", "upn": "function-key"}
    assert "ceo@contoso.com" not in record.model_dump_json()


def test_with_app_service_authentication_the_audit_names_its_principal(make_runtime):
    runtime = make_runtime(
        {"churn": policy_yaml("churn")},
        training=RecordingTrainingBackend(),
        WEBSITE_AUTH_ENABLED="True",
    )
    set_runtime(runtime)
    try:
        signed_in = func.HttpRequest(
            "POST",
            "http://localhost/api/retrain",
            headers={
                "content-type": "application/json",
                "x-ms-client-principal": principal_header(ANA),
            }
            | FORGED,
            body=json.dumps({"model": "churn", "force": True}).encode(),
        )
        assert user(http_api.retrain)(signed_in).status_code == 202
    finally:
        set_runtime(None)
    trail = runtime.ports.audit.read("churn")
    [record] = [r for r in trail if r.cause_type == "RetrainRequested"]
    assert record.actor == "ana@contoso.com"
    assert record.detail["identity"]["verified_by"] == "http:app-service:0c7a-ana"


def test_the_per_event_item_cap_refuses_a_whole_event_and_a_big_batch_goes_in_chunks(
    make_runtime,
):
    """`max_items_per_event` is per event: one event over it is dead-lettered whole (never
    taken in pieces), while many small events of one batch are handled in messages within it."""
    runtime = make_runtime(
        {"churn": policy_yaml("churn", retrain="{max_items_per_event: 5}")},
        DataStorage__blobServiceUri=DATA_ACCOUNT,
    )
    set_runtime(runtime)
    try:
        tag = uuid.uuid4().hex  # the dead-letter container is shared by the session's tests

        def ready(n: int) -> dict[str, Any]:
            uri = f"{DATA_ACCOUNT}/training-data/churn/{tag}-{n}.csv"
            return {"model": "churn", "data_uri": uri, "event_id": f"{tag}-{n}"}

        too_big = func.EventHubEvent(body=json.dumps([ready(n) for n in range(100, 106)]).encode())
        small = [func.EventHubEvent(body=json.dumps(ready(n)).encode()) for n in range(12)]
        user(data.data_events)([*small[:6], too_big, *small[6:]])
        assert runtime.queries.model_status("churn")["retrain"]["pending"]["count"] == 12
        [record] = [r for r in runtime.dead_letters.read("eventhub") if tag in str(r["body"])]
        assert "max_items_per_event (5)" in record["reason"]
    finally:
        set_runtime(None)
