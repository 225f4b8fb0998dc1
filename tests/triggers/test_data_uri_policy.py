"""Data comes only from where the policy says, at every entry, through the real triggers on
Azurite: POST /api/retrain (400 problem+json naming data_uri), data-ready and Event Grid
events and the blob trigger (a dead letter with the reason). An Event Grid event's data.url
must name its subject's blob. A SAS token is stored nowhere: not in the state, the audit log,
the dead letters or the logs. The rules themselves: tests/domain/test_data_location.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest

from adapters.azurite import Azurite
from devhost.host.pollers import blob_created_event
from orchestrator.bootstrap import Runtime
from tests.faults.support import (
    DeadLetterSpy,
    TrainingBackend,
    dead_letter_spy,
    http_request,
    installed,
    user_function,
)
from tests.harness import policy_yaml
from triggers import data, http_api, messages

pytestmark = pytest.mark.azurite

retrain = user_function(http_api.retrain)
data_events = user_function(data.data_events)
data_blob_created = user_function(data.data_blob_created)

ACCOUNT = "https://acct.blob.core.windows.net"  # the data account (DataStorage__blobServiceUri)
GOOD = f"{ACCOUNT}/training-data/churn/2026-11-22.csv"
TOKEN = "not-a-real-sas-signature"  # hyphens: the repository's secret scan passes it
SAS = f"sv=2024-08-04&se=2030-01-01&sr=b&sp=r&sig={TOKEN}%3D%3D"

REFUSED = {
    "file://": "file:///etc/passwd",
    "bare path": "/home/someone/data.csv",
    "other account": "https://evil.blob.core.windows.net/training-data/churn/x.csv",
    "other container": f"{ACCOUNT}/other/churn/x.csv",
    "outside prefix": f"{ACCOUNT}/training-data/fraud/x.csv",
    "dot-dot": f"{ACCOUNT}/training-data/churn/../fraud/x.csv",
    "encoded dot-dot": f"{ACCOUNT}/training-data/churn/%2e%2e/fraud/x.csv",
    "SAS": f"{GOOD}?{SAS}",
    "http": GOOD.replace("https://", "http://"),
    "fragment": f"{GOOD}#x",
    "userinfo": GOOD.replace("https://", "https://user:pw@"),
}


@pytest.fixture
def dead_letters(azurite: Azurite) -> DeadLetterSpy:
    return dead_letter_spy(azurite)


@pytest.fixture
def make(
    make_runtime: Callable[..., Runtime], dead_letters: DeadLetterSpy
) -> Callable[..., Runtime]:
    def build(**settings: str) -> Runtime:
        return make_runtime(
            {model: policy_yaml(model, retrain="{debounce: 1h}") for model in ("churn", "fraud")},
            training=TrainingBackend(),
            dead_letters=dead_letters,
            DataStorage__blobServiceUri=ACCOUNT,
            **settings,
        )

    return build


@pytest.fixture
def runtime(make: Callable[..., Runtime]) -> Runtime:
    return make()


def post_retrain(runtime: Runtime, document: dict[str, Any]) -> func.HttpResponse:
    with installed(runtime):
        response = retrain(http_request("POST", "/api/retrain", json.dumps(document).encode()))
    assert isinstance(response, func.HttpResponse)
    return response


def send_events(runtime: Runtime, *documents: Any) -> None:
    events = [
        func.EventHubEvent(body=json.dumps(document).encode(), sequence_number=n)
        for n, document in enumerate(documents)
    ]
    with installed(runtime):
        data_events(events)


def data_ready(data_uri: str, event_id: str = "producer-1") -> dict[str, Any]:
    return {"model": "churn", "data_uri": data_uri, "event_id": event_id}


def blob_created(url: str, subject_path: str = "training-data/churn/2026-11-22.csv") -> Any:
    container, path = subject_path.split("/", 1)
    return {
        "id": "grid-1",
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}",
        "data": {"url": url, "eTag": "0x1"},
    }


def version(runtime: Runtime) -> int:
    return runtime.ports.store.load("churn")[0].version


# --------------------------------------------------------------------------- POST /api/retrain


@pytest.mark.parametrize("uri", REFUSED.values(), ids=REFUSED.keys())
def test_retrain_refuses_data_from_elsewhere_with_a_400_naming_data_uri(
    runtime: Runtime, uri: str
) -> None:
    response = post_retrain(runtime, {"model": "churn", "data_uri": uri, "force": True})
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = json.loads(response.get_body())
    assert problem["status"] == 400 and problem["detail"].startswith("data_uri: ")
    assert "sig=" not in problem["detail"] and TOKEN not in problem["detail"]
    assert version(runtime) == 0 and runtime.training.submissions == []


def test_retrain_takes_a_blob_of_the_data_account_under_the_prefix(runtime: Runtime) -> None:
    response = post_retrain(runtime, {"model": "churn", "data_uri": GOOD, "force": True})
    assert response.status_code == 202, response.get_body()
    [submitted] = runtime.training.submissions
    assert submitted.data_uris == [GOOD]


def test_local_paths_only_with_allow_local_data_paths(make: Callable[..., Runtime]) -> None:
    body = {"model": "churn", "data_uri": "file:///tmp/churn.csv", "force": True}
    refused = post_retrain(make(), body)
    assert refused.status_code == 400
    assert "ALLOW_LOCAL_DATA_PATHS" in json.loads(refused.get_body())["detail"]
    development = make(ALLOW_LOCAL_DATA_PATHS="true")
    assert post_retrain(development, body).status_code == 202
    # The development setting opens local paths only: another account is still refused.
    other = {**body, "data_uri": REFUSED["other account"]}
    assert post_retrain(development, other).status_code == 400


# --------------------------------------------------------------------------- events, blobs


@pytest.mark.parametrize("uri", REFUSED.values(), ids=REFUSED.keys())
def test_a_data_ready_event_from_elsewhere_is_dead_lettered_with_the_reason(
    runtime: Runtime, dead_letters: DeadLetterSpy, uri: str
) -> None:
    send_events(runtime, data_ready(uri), data_ready(GOOD, "producer-2"))
    [(source, reason)] = dead_letters.calls
    assert source == "eventhub" and reason.startswith("data_uri: ")
    # The good event of the same batch is kept.
    pending = runtime.ports.ledger.pending("churn")
    assert (pending.items, pending.sample) == (1, [GOOD])


@pytest.mark.parametrize(
    ("url", "subject", "says"),
    [
        (f"{ACCOUNT}/training-data/churn/other.csv", None, "not the subject's blob"),
        # A URL naming another blob than the subject is refused as such, whoever's data
        # either is.
        (f"{ACCOUNT}/training-data/fraud/x.csv", None, "not the subject's blob"),
        (f"{ACCOUNT}/training-data/churn/x.csv", "training-data/fraud/x.csv", "not the subject"),
        ("https://evil.blob.core.windows.net/training-data/churn/2026-11-22.csv", None, "host"),
        (f"{GOOD}?{SAS}", None, "SAS token"),
        (GOOD.replace("https://", "http://"), None, "https only"),
    ],
    ids=["other blob", "other model", "subject of another model", "other account", "SAS", "http"],
)
def test_an_event_grid_event_whose_url_is_not_its_subject_is_dead_lettered(
    runtime: Runtime, dead_letters: DeadLetterSpy, url: str, subject: str | None, says: str
) -> None:
    event = blob_created(url, subject) if subject else blob_created(url)
    send_events(runtime, event)
    [(source, reason)] = dead_letters.calls
    assert source == "eventhub" and reason.startswith("data.url: ") and says in reason
    assert version(runtime) == 0


def test_an_event_grid_event_naming_its_own_blob_is_kept(
    runtime: Runtime, dead_letters: DeadLetterSpy
) -> None:
    encoded = f"{ACCOUNT}/training-data/churn/a%20b.csv"  # Event Grid's url is encoded
    send_events(runtime, blob_created(GOOD), blob_created(encoded, "training-data/churn/a b.csv"))
    assert dead_letters.calls == []
    pending = runtime.ports.ledger.pending("churn")
    assert sorted(pending.sample) == sorted([GOOD, encoded])


@pytest.mark.parametrize(
    ("url", "subject_path", "kept"),
    [
        # Event Grid writes the name as the blob has it: spaces, '#', non-ASCII unencoded.
        (f"{ACCOUNT}/training-data/churn/a b#1 café.csv", "churn/a b#1 café.csv", None),
        # An account with a hierarchical namespace: FlushWithClose names the dfs endpoint.
        (
            "https://acct.dfs.core.windows.net/training-data/churn/lake.csv",
            "churn/lake.csv",
            f"{ACCOUNT}/training-data/churn/lake.csv",
        ),
    ],
    ids=["unencoded name", "dfs endpoint"],
)
def test_an_event_grid_url_as_the_service_writes_it_is_kept(
    runtime: Runtime, dead_letters: DeadLetterSpy, url: str, subject_path: str, kept: str | None
) -> None:
    event = func.EventGridEvent(
        id="evt-1",
        data={"api": "FlushWithClose", "url": url, "eTag": "0x8DE", "contentLength": 9},
        topic="/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct",
        subject=f"/blobServices/default/containers/training-data/blobs/{subject_path}",
        event_type="Microsoft.Storage.BlobCreated",
        event_time=None,
        data_version="",
    )
    with installed(runtime):
        data_blob_created(event)
    assert dead_letters.calls == []
    [uri] = runtime.ports.ledger.pending("churn").sample
    expected = kept or f"{ACCOUNT}/training-data/churn/a%20b%231%20caf%C3%A9.csv"
    assert uri == expected  # encoded as the data policy reads URLs


def test_the_event_grid_triggers_url_passes_the_same_check(
    runtime: Runtime, dead_letters: DeadLetterSpy
) -> None:
    def land(container_url: str, path: str) -> None:
        with installed(runtime):
            data_blob_created(blob_created_event(container_url, path, '"0x2"', 4))

    land(f"{ACCOUNT}/training-data", "churn/kept.csv")
    land("https://evil.example/training-data", "churn/elsewhere.csv")
    [(source, reason)] = dead_letters.calls
    assert source == "eventgrid" and reason.startswith("data.url: ")
    pending = runtime.ports.ledger.pending("churn").sample
    assert pending == [f"{ACCOUNT}/training-data/churn/kept.csv"]


# --------------------------------------------------------------------------- no SAS stored


def stored_text(runtime: Runtime, dead_letters: DeadLetterSpy) -> str:
    """Everything the app wrote for these messages: state and audit blobs, dead letters."""
    container = runtime.blob_service.get_container_client(runtime.settings.state_container)
    blobs = [
        container.download_blob(blob.name).readall().decode() for blob in container.list_blobs()
    ]
    assert any('"retrain"' in text for text in blobs)  # the state is there to be searched
    records = [json.dumps(record) for record in dead_letters.stored(runtime)]
    return "\n".join([*blobs, *records])


def test_a_refused_sas_token_is_stored_nowhere(
    runtime: Runtime, dead_letters: DeadLetterSpy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sas_uri = f"{GOOD}?{SAS}"
    # Good data first, so there is a state and an audit trail to search.
    send_events(runtime, data_ready(GOOD, "producer-good"))
    # The SAS token through every entry: HTTP, a data-ready event, an Event Grid event, a
    # RetrainRequested and a DataLanded on the orchestrator queue.
    assert post_retrain(runtime, {"model": "churn", "data_uri": sas_uri}).status_code == 400
    send_events(runtime, data_ready(sas_uri, "producer-sas"))
    send_events(runtime, [blob_created(sas_uri), blob_created(GOOD)])
    queued = [
        {"type": "RetrainRequested", "payload": {"run_id": "churn-q-1", "data_uri": sas_uri}},
        {
            "type": "DataLanded",
            "payload": {"items": [{"uri": sas_uri, "key": "blob:training-data/churn/s@1"}]},
        },
    ]
    with installed(runtime):
        for document in queued:
            envelope = {
                "schema_version": 1,
                "message_id": f"queue-{document['type']}",
                "model": "churn",
                "time": "2026-12-01T00:00:00+00:00",
                **document,
            }
            body = json.dumps(envelope).encode()
            outcome = messages.handle_message(func.ServiceBusMessage(body=body), "orchestrator")
            assert outcome == "dead-lettered"
    # Three events and two queue messages dead-lettered (the HTTP request was answered 400).
    assert [source for source, _ in dead_letters.calls] == ["eventhub"] * 2 + ["orchestrator"] * 2
    stored = stored_text(runtime, dead_letters)
    assert "sig=" not in stored and TOKEN not in stored
    assert GOOD in stored  # the dead letters keep the URI, without its query
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "sig=" not in logged and TOKEN not in logged
