"""`dead-letters list` and `dead-letters replay` with the real CLI on Azurite: a dead letter
from a trigger's record or a poison queue goes back to its queue once, with its original body
(an internal message still passes its MAC check), and the dead letter is marked or removed.

The `dead-letters` container and the poison queues are shared by every test on this Azurite:
each test finds its own dead letters by a unique message id.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from adapters.storage_queue_bus import StorageQueueConsumer, decode_body
from devhost.cli.main import main
from orchestrator.bootstrap import Runtime
from orchestrator.messages import Envelope
from promotion.commands import StartPromotion
from tests.devhost.cli.test_cli import PassingOfflineMetrics, RecordingRegistry
from tests.faults.support import installed, user_function
from tests.harness import RecordingTrainingBackend, policy_yaml, pump
from triggers import messages

pytestmark = pytest.mark.azurite

APPROVAL = "{required: true, approvers: [ml-lead@contoso.com], timeout: 1h}"


def churn_runtime(make_runtime: Any, policies: dict[str, str] | None = None) -> Runtime:
    return make_runtime(
        {"churn": policy_yaml("churn", approval=APPROVAL)} if policies is None else policies,
        training=RecordingTrainingBackend(),
        metrics=PassingOfflineMetrics(),
        registry=RecordingRegistry(),
    )


def start_promotion(runtime: Runtime, message_id: str) -> Envelope:
    """The app's own StartPromotion, signed with the app's key (the local key file)."""
    envelope = Envelope.new(
        "StartPromotion", "churn", StartPromotion(candidate_version="7"), message_id=message_id
    )
    return runtime.signer.sign(envelope)


def cli(runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["--json", *argv], runtime=runtime)
    captured = capsys.readouterr()
    return code, json.loads(captured.out or captured.err)


def listed(runtime: Runtime, capsys: pytest.CaptureFixture[str], marker: str, *flags: str):  # type: ignore[no-untyped-def]
    code, document = cli(runtime, capsys, "dead-letters", "list", *flags)
    assert code == 0, document
    return [view for view in document["dead_letters"] if marker in view["body"]]


def active_status(runtime: Runtime) -> str | None:
    active = runtime.queries.model_status("churn")["active_promotion"]
    return active["status"] if active else None


def test_a_records_dead_letter_is_replayed_once_and_its_mac_still_holds(make_runtime, capsys):
    # Dead-lettered by the real trigger: the model had no policy yet (a deployment mistake).
    without_policy = churn_runtime(make_runtime, {"other": policy_yaml("other")})
    message_id = f"start-{uuid.uuid4().hex}"
    signed = start_promotion(without_policy, message_id)
    with installed(without_policy):
        user_function(messages.orchestrator_queue)(func.ServiceBusMessage(body=signed.to_bytes()))

    # The policy is deployed; the operator finds the dead letter and replays it.
    runtime = churn_runtime(make_runtime)
    [view] = listed(runtime, capsys, message_id, "--source", "records")
    assert view["source"] == "records" and view["origin"] == "orchestrator"
    assert "churn" in view["reason"]
    assert view["replay_to"] == runtime.settings.orchestrator_queue
    assert view["replayed_at"] is None

    code, replayed = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 0, replayed
    assert replayed == {
        "replayed": True,
        "id": view["id"],
        "sent_to": runtime.settings.orchestrator_queue,
        "settled": "marked replayed",
    }

    # The app's queue consumer handles it: the MAC over the original bytes still holds.
    pump(runtime, until=lambda: active_status(runtime) is not None)
    assert active_status(runtime) == "awaiting_approval"

    # Once: a second replay is refused, and the record says where it went.
    code, error = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 2 and "replayed already" in error["error"]
    [again] = listed(runtime, capsys, message_id, "--source", "records")
    assert again["replayed_at"] is not None
    assert runtime.queue(runtime.settings.orchestrator_queue).peek_messages() == []


def test_a_poison_queue_dead_letter_is_replayed_and_removed(make_runtime, capsys):
    runtime = churn_runtime(make_runtime)
    message_id = f"start-{uuid.uuid4().hex}"
    queue_name = runtime.settings.orchestrator_queue
    runtime.bus_for(queue_name).send(start_promotion(runtime, message_id))
    # Every delivery failed (MLflow down, say) until the consumer gave up on it.
    consumer = StorageQueueConsumer(
        runtime.queue(queue_name),
        runtime.queue(f"{queue_name}-poison"),
        max_deliveries=1,
        retry_base=timedelta(0),
    )

    def unavailable(envelope: Envelope, deliveries: int) -> None:
        raise ConnectionError("tracking server unreachable")

    for _ in range(3):
        consumer.poll(unavailable)
    [view] = listed(runtime, capsys, message_id, "--source", "poison-queues")
    assert view["id"].startswith(f"queue:{queue_name}-poison:")
    assert "ConnectionError: tracking server unreachable" in view["reason"]
    assert view["replay_to"] == queue_name

    code, replayed = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 0, replayed
    assert replayed["settled"] == "deleted"
    assert listed(runtime, capsys, message_id, "--source", "poison-queues") == []

    pump(runtime, until=lambda: active_status(runtime) is not None)
    assert active_status(runtime) == "awaiting_approval"
    code, error = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 2 and "no dead letter" in error["error"]


def test_a_tampered_body_replayed_is_dead_lettered_again_by_the_mac_check(make_runtime, capsys):
    runtime = churn_runtime(make_runtime)
    message_id = f"start-{uuid.uuid4().hex}"
    document = json.loads(start_promotion(runtime, message_id).to_bytes())
    document["payload"]["candidate_version"] = "8"  # changed after signing
    runtime.dead_letters.record("orchestrator", "edited by hand", json.dumps(document))
    [view] = listed(runtime, capsys, message_id, "--source", "records")

    assert cli(runtime, capsys, "dead-letters", "replay", view["id"])[0] == 0
    queue = runtime.queue(runtime.settings.orchestrator_queue)
    [sent] = list(queue.receive_messages())
    assert decode_body(sent.content) == json.dumps(document).encode()  # the body as recorded
    with installed(runtime):
        status = messages.handle_message(
            func.ServiceBusMessage(body=decode_body(sent.content)), "orchestrator"
        )
    assert status == "dead-lettered"  # the MAC check refused it again
    assert active_status(runtime) is None


def test_what_cannot_be_replayed_is_refused_with_the_reason(make_runtime, capsys):
    runtime = churn_runtime(make_runtime)
    marker = uuid.uuid4().hex
    person = {"type": "RollbackRequested", "model": "churn", "message_id": marker, "auth": "t"}
    runtime.dead_letters.record("orchestrator", "token expired", json.dumps(person))
    runtime.dead_letters.record("blob", "not <container>/<path>", f"odd-name-{marker}")
    views = {
        view["origin"]: view for view in listed(runtime, capsys, marker, "--source", "records")
    }

    code, error = cli(runtime, capsys, "dead-letters", "replay", views["orchestrator"]["id"])
    assert code == 2 and "person's command" in error["error"]
    assert views["blob"]["replay_to"] is None
    code, error = cli(runtime, capsys, "dead-letters", "replay", views["blob"]["id"])
    assert code == 2 and "nothing to send it back to" in error["error"]
    code, error = cli(runtime, capsys, "dead-letters", "replay", "nonsense")
    assert code == 2 and "no dead-letter id" in error["error"]


def test_list_renders_a_table_and_service_bus_needs_a_namespace(make_runtime, capsys):
    runtime = churn_runtime(make_runtime)
    marker = uuid.uuid4().hex
    runtime.dead_letters.record("eventhub", f"event body is not JSON {marker}", b"\xff")
    assert main(["dead-letters", "list", "--source", "records"], runtime=runtime) == 0
    out = capsys.readouterr().out
    assert "Dead letters" in out and "eventhub" in out
    assert main(["dead-letters", "list", "--source", "service-bus"], runtime=runtime) == 2
    assert "no Service Bus" in capsys.readouterr().err


def test_an_event_hubs_dead_letter_goes_back_to_the_data_event_hub(make_runtime, capsys):
    hub = f"hub{uuid.uuid4().hex[:12]}"
    runtime = make_runtime({"churn": policy_yaml("churn")}, DATA_EVENTS_HUB=hub)
    marker = uuid.uuid4().hex
    event = json.dumps({"model": "churn", "data_uri": "https://x/y.csv", "event_id": marker})
    runtime.dead_letters.record("eventhub", "RuntimeError: state store unreachable", event)
    [view] = listed(runtime, capsys, marker, "--source", "records")
    assert view["replay_to"] == f"eventhub:{hub}"

    code, replayed = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 0, replayed
    # Locally the event hub is the storage queue devhost reads for it (same name).
    [sent] = list(runtime.queue(hub).receive_messages())
    assert decode_body(sent.content) == event.encode()


def test_a_replay_whose_send_fails_leaves_the_record_replayable(make_runtime, capsys):
    runtime = churn_runtime(make_runtime)
    message_id = f"start-{uuid.uuid4().hex}"
    body = start_promotion(runtime, message_id).to_bytes()
    runtime.dead_letters.record("orchestrator", "handler crashed", body)
    [view] = listed(runtime, capsys, message_id, "--source", "records")
    real_bus_for = runtime.bus_for

    class Down:
        def send_raw(self, body: bytes, message_id: str) -> None:
            raise ConnectionError("queue service unreachable")

    runtime.bus_for = lambda queue: Down()  # type: ignore[method-assign]
    code, error = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 1 and "queue service unreachable" in error["error"]
    [after] = listed(runtime, capsys, message_id, "--source", "records")
    assert after["replayed_at"] is None  # the claim was released

    runtime.bus_for = real_bus_for  # type: ignore[method-assign]
    assert cli(runtime, capsys, "dead-letters", "replay", view["id"])[0] == 0
    [sent] = list(runtime.queue(runtime.settings.orchestrator_queue).receive_messages())
    assert decode_body(sent.content) == body


def test_a_replay_that_died_after_its_claim_is_taken_over_once_it_is_stale(make_runtime, capsys):
    """The CLI claimed the record, then died before sending: the record does not read
    replayed; a replay while the claim is fresh is refused, a stale claim is taken over."""
    from datetime import UTC, datetime, timedelta

    runtime = churn_runtime(make_runtime)
    message_id = f"start-{uuid.uuid4().hex}"
    body = start_promotion(runtime, message_id).to_bytes()
    name = runtime.dead_letters.record("orchestrator", "handler crashed", body)
    record, etag = runtime.dead_letters.get(name) or ({}, "")
    claimed = runtime.dead_letters.claim_replay(name, record, etag, "orchestrator")
    assert claimed is not None  # ... and the process died here
    [view] = listed(runtime, capsys, message_id, "--source", "records")
    assert view["replayed_at"] is None

    code, error = cli(runtime, capsys, "dead-letters", "replay", view["id"])
    assert code == 1 and "is being replayed" in error["error"]

    # Eleven minutes later: the claim, as it reads then, is stale.
    stale = (datetime.now(UTC) - timedelta(minutes=11)).isoformat()
    record, etag = runtime.dead_letters.get(name) or ({}, "")
    runtime.dead_letters._write(name, record | {"replaying_at": stale}, etag)
    assert cli(runtime, capsys, "dead-letters", "replay", view["id"])[0] == 0
    [again] = listed(runtime, capsys, message_id, "--source", "records")
    assert again["replayed_at"] is not None
