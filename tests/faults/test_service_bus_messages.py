"""Bad Service Bus messages through the real trigger functions (`orchestrator_queue`,
`approvals_queue`) with real `func.ServiceBusMessage` objects, on Azurite state.

A message that can never be handled must not raise (a raise is a redelivery, then a retry
loop): it is dead-lettered at once, exactly one record with a reason, and changes no state.
A valid message is handled and leaves no dead letter.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from adapters.azurite import Azurite
from orchestrator.aggregate import ModelAggregate
from orchestrator.bootstrap import Runtime
from orchestrator.handlers import MESSAGE_TYPES
from orchestrator.messages import Envelope
from orchestrator.outbox import DEPLOYMENT_CHECK, DeploymentCheck
from orchestrator.people import PERSON_COMMANDS
from orchestrator.signing import INTERNAL_TYPES
from promotion import commands as promotion_commands
from retrain import commands as retrain_commands
from retrain import job_events
from tests.faults.support import (
    PATHOLOGICAL_JSON,
    DeadLetterSpy,
    TrainingBackend,
    dead_letter_spy,
    fuzz,
    installed,
    user_function,
)
from tests.harness import issuer_of, policy_yaml
from triggers import messages

pytestmark = pytest.mark.azurite

orchestrator_queue = user_function(messages.orchestrator_queue)
approvals_queue = user_function(messages.approvals_queue)

MODELS = ("churn", "fraud")
PAYLOAD_TYPES: dict[str, type[BaseModel]] = {
    **retrain_commands.COMMANDS,
    **promotion_commands.COMMANDS,
    DEPLOYMENT_CHECK: DeploymentCheck,
    job_events.JOB_EVENT: job_events.TrainingJobEvent,
}

# One valid payload per message type: the base the "wrong payload" mutations start from.
VALID_PAYLOADS: dict[str, dict[str, Any]] = {
    "DataLanded": {"items": [{"uri": "https://a.example/d.csv", "key": "k1"}], "source": "sb"},
    "RetrainRequested": {"reason": "asked", "requested_by": "ops"},
    "RetrainWindowClosed": {"window_id": "w-1"},
    "TrainingJobCheck": {"run_id": "run-1"},
    "TrainingJobStatus": {"run_id": "run-1", "state": "failed"},
    "StartPromotion": {"candidate_version": "3"},
    "GateCheck": {"promotion_id": "p", "step": "staging", "check_id": "c"},
    "ApprovalDecision": {
        "promotion_id": "p",
        "step": "approval",
        "candidate_version": "3",
        "decision": "approve",
        "approver": "alice@example.com",
    },
    "ApprovalTimedOut": {"promotion_id": "p", "step": "approval"},
    "DeploymentReady": {"promotion_id": "p", "deployment": "d"},
    "DeploymentFailed": {"promotion_id": "p", "deployment": "d"},
    "RollbackRequested": {"reason": "bad", "requested_by": "ops"},
    "PromoteNow": {"promotion_id": "p", "reason": "go", "requested_by": "ops"},
    "PausePromotion": {"promotion_id": "p", "requested_by": "ops"},
    "ResumePromotion": {"promotion_id": "p", "requested_by": "ops"},
    DEPLOYMENT_CHECK: {"promotion_id": "p", "deployment": "d"},
    "EndpointDrift": {"expected_traffic": {"d": 100}, "actual_traffic": {}},
    "EndpointInSync": {},
    job_events.JOB_EVENT: {"run_id": "run-1", "run_status": "Completed", "event_id": "e-1"},
}


def test_every_message_type_has_a_valid_sample() -> None:
    # A new message type must be added here, so the fuzzing below covers it.
    assert set(VALID_PAYLOADS) == MESSAGE_TYPES == set(PAYLOAD_TYPES)
    for kind, payload in VALID_PAYLOADS.items():
        PAYLOAD_TYPES[kind].model_validate(payload)


def envelope(kind: str, model: str, payload: Any, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "message_id": fields.pop("message_id", f"m-{kind}-{model}"),
        "model": model,
        "time": datetime(2026, 1, 5, 12, tzinfo=UTC).isoformat(),
        "payload": payload,
    } | fields


@dataclass(frozen=True)
class Message:
    kind: str
    body: bytes
    queue: str  # "orchestrator" or "approvals"
    valid: bool = False


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
wrong_values = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=-1),
    st.lists(json_scalars, min_size=1, max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), json_scalars, min_size=1, max_size=3),
    st.text(alphabet=string.ascii_letters, min_size=7, max_size=12),  # not an enum value
)
type_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.]{0,30}\Z").filter(
    lambda name: name not in MESSAGE_TYPES
)
queues = st.sampled_from(["orchestrator", "approvals"])
REQUIRED_ENVELOPE_FIELDS = ("type", "message_id", "model", "time")
BROKEN_ENVELOPE_VALUES: dict[str, list[Any]] = {
    "type": ["", "9starts-with-digit", "has space", "x" * 101, 7, None],
    "message_id": ["", "x" * 129, None, ["m"]],
    "model": ["", "-dash-first", "a/b", "x" * 101, None],
    "time": ["2026-01-05T12:00:00", "yesterday", "", None],  # naive, nonsense, empty
    "payload": [[1], "payload", 3],
    "schema_version": [2, 0, "1", None],
    "aggregate_version": [-1, "latest", 1.5],
}
envelope_fields = st.sampled_from(sorted(BROKEN_ENVELOPE_VALUES))


def encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


@st.composite
def wrong_payload(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A payload for `kind` that its model must refuse: a field dropped, a field of the wrong
    type, or an unknown field (every payload model forbids extras)."""
    payload = dict(VALID_PAYLOADS[kind])
    schema = PAYLOAD_TYPES[kind]
    required = [name for name, info in schema.model_fields.items() if info.is_required()]
    how = draw(
        st.sampled_from(["drop", "wrong-type", "extra"] if required else ["wrong-type", "extra"])
    )
    if how == "drop":
        del payload[draw(st.sampled_from(required))]
    elif how == "wrong-type":
        payload[draw(st.sampled_from(sorted(payload)))] = draw(wrong_values)
    else:
        extra = draw(
            st.text(min_size=1, max_size=12).filter(lambda k: k not in schema.model_fields)
        )
        payload[extra] = draw(json_values)
    try:
        schema.model_validate(payload)
    except ValidationError:
        return payload
    # A mutation the model accepts (e.g. a dict where a list of anything is fine): drop a
    # field instead, or add one; both are always refused.
    payload = dict(VALID_PAYLOADS[kind]) | {"surely-not-a-field": 1}
    return payload


@st.composite
def bad_messages(draw: st.DrawFn) -> Message:
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "pathological-json",
                "json-non-object",
                "json-non-envelope",
                "envelope-field-broken",
                "unknown-type",
                "unknown-model",
                "wrong-payload",
                "not-an-approval",
            ]
        )
    )
    queue = draw(queues)
    model = draw(st.sampled_from(MODELS))
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "pathological-json":
        body = draw(st.sampled_from(PATHOLOGICAL_JSON))
    elif kind == "json-non-object":
        body = encode(draw(st.lists(json_values, max_size=3) | json_scalars))
    elif kind == "json-non-envelope":
        document = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
        body = encode(document)
    elif kind == "envelope-field-broken":
        document = envelope("RetrainWindowClosed", model, VALID_PAYLOADS["RetrainWindowClosed"])
        name = draw(envelope_fields)
        if name in REQUIRED_ENVELOPE_FIELDS and draw(st.booleans()):
            del document[name]
        else:
            document[name] = draw(st.sampled_from(BROKEN_ENVELOPE_VALUES[name]))
        body = encode(document)
    elif kind == "unknown-type":
        payload = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
        body = encode(envelope(draw(type_names), model, payload))
    elif kind == "unknown-model":
        unknown = draw(
            st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z").filter(lambda m: m not in MODELS)
        )
        message_type = (
            "ApprovalDecision"
            if queue == "approvals"
            else draw(st.sampled_from(sorted(MESSAGE_TYPES)))
        )
        body = encode(envelope(message_type, unknown, VALID_PAYLOADS[message_type]))
    elif kind == "wrong-payload":
        message_type = (
            "ApprovalDecision"
            if queue == "approvals"
            else draw(st.sampled_from(sorted(MESSAGE_TYPES)))
        )
        body = encode(envelope(message_type, model, draw(wrong_payload(message_type))))
    else:  # a valid envelope of any other type, on the approvals queue
        queue = "approvals"
        message_type = draw(st.sampled_from(sorted(MESSAGE_TYPES - messages.APPROVAL_TYPES)))
        body = encode(envelope(message_type, model, VALID_PAYLOADS[message_type]))
    return Message(kind, body, queue)


@st.composite
def valid_messages(draw: st.DrawFn) -> Message:
    """Messages that can be handled: on a model with nothing going on, each is applied or
    ignored as stale, never dead-lettered."""
    queue = draw(queues)
    model = draw(st.sampled_from(MODELS))
    if queue == "approvals":
        message_type = "ApprovalDecision"
    else:
        message_type = draw(
            st.sampled_from(
                sorted(
                    MESSAGE_TYPES
                    - messages.APPROVAL_TYPES  # the approvals queue's only type
                    - {"DataLanded", "RetrainRequested", "StartPromotion"}
                    # made only by the run-event trigger: no queue accepts it
                    - {job_events.JOB_EVENT}
                )
            )
        )
    message_id = draw(st.text(min_size=1, max_size=128))
    body = encode(
        envelope(message_type, model, VALID_PAYLOADS[message_type], message_id=message_id)
    )
    return Message(f"valid {message_type}", body, queue, valid=True)


TRIGGERS: dict[str, Callable[[func.ServiceBusMessage], None]] = {
    "orchestrator": orchestrator_queue,
    "approvals": approvals_queue,
}


@pytest.fixture
def dead_letters(azurite: Azurite) -> DeadLetterSpy:
    return dead_letter_spy(azurite)


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], dead_letters: DeadLetterSpy) -> Runtime:
    return make_runtime(
        {model: policy_yaml(model) for model in MODELS},
        training=TrainingBackend(),
        dead_letters=dead_letters,
    )


def untouched(runtime: Runtime) -> bool:
    """No model's state moved. A refused internal message (no valid MAC) leaves an audit record,
    written through the aggregate, and nothing else: no state, no outbox, no id remembered."""
    store = runtime.ports.store
    fresh = ModelAggregate.new("any")
    return all(
        (aggregate.promotion, aggregate.retrain, aggregate.outbox, aggregate.seen_messages)
        == (fresh.promotion, fresh.retrain, fresh.outbox, fresh.seen_messages)
        for aggregate in (store.load(key)[0] for key in store.list_keys())
    )


def deliver(message: Message) -> None:
    TRIGGERS[message.queue](func.ServiceBusMessage(body=message.body))


def signed_in(runtime: Runtime, message: Message) -> Message:
    """A person's command with the token of someone holding its app role (orchestrator/
    people.py); any other message as it is."""
    document = json.loads(message.body)
    if document["type"] in INTERNAL_TYPES:  # the app's own message: signed with its key
        signed = runtime.signer.sign(Envelope.model_validate(document))
        return replace(message, body=signed.to_bytes())
    role = PERSON_COMMANDS.get(document["type"])
    if role is None:
        return message
    token = issuer_of(runtime).mint("alice@example.com", roles=[role])
    return replace(message, body=encode(document | {"auth": token}))


@fuzz(150)
@given(message=bad_messages())
def test_a_message_that_can_never_be_handled_is_dead_lettered_once(
    runtime: Runtime, dead_letters: DeadLetterSpy, tally: Counter[str], message: Message
) -> None:
    tally[f"{message.queue}: {message.kind}"] += 1
    before = len(dead_letters.calls)
    with installed(runtime):
        deliver(message)  # must not raise
    new = dead_letters.calls[before:]
    assert len(new) == 1, (message, new)
    source, reason = new[0]
    assert source == message.queue
    assert reason.strip()
    assert untouched(runtime), "a dead-lettered message changed state"


def test_dead_letter_records_are_stored_with_their_reason(
    runtime: Runtime, dead_letters: DeadLetterSpy
) -> None:
    with installed(runtime):
        deliver(Message("bytes", b"\xff\xfe not json", "orchestrator"))
        deliver(Message("pathological-json", b"[" * 100_000, "approvals"))
    records = dead_letters.stored(runtime)
    assert sorted(record["source"] for record in records) == ["approvals", "orchestrator"]
    for record in records:
        assert record["reason"] and record["dead_lettered_at"] and record["body"]


@fuzz(60)
@given(message=valid_messages())
def test_a_valid_message_is_handled_and_not_dead_lettered(
    runtime: Runtime, dead_letters: DeadLetterSpy, tally: Counter[str], message: Message
) -> None:
    tally[f"{message.queue}: {message.kind}"] += 1
    before = len(dead_letters.calls)
    with installed(runtime):
        deliver(signed_in(runtime, message))
    assert dead_letters.calls[before:] == []


def test_handle_message_reports_what_it_did(runtime: Runtime, dead_letters: DeadLetterSpy) -> None:
    approval = encode(envelope("ApprovalDecision", "churn", VALID_PAYLOADS["ApprovalDecision"]))
    approval = signed_in(runtime, Message("approval", approval, "approvals")).body
    with installed(runtime):
        handled = messages.handle_message(
            func.ServiceBusMessage(body=approval), "approvals", messages.APPROVAL_TYPES
        )
        refused = messages.handle_message(
            func.ServiceBusMessage(body=b"{}"), "approvals", messages.APPROVAL_TYPES
        )
    assert handled == "ignored"  # no active promotion: refused by the machine, audited
    assert refused == "dead-lettered"
    assert len(dead_letters.calls) == 1
