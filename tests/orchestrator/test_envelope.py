"""The versioned envelope: round trips, and one typed error for every malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from orchestrator.messages import Envelope, InvalidMessage, parse_envelope


def valid() -> dict:
    return {
        "schema_version": 1,
        "type": "GateCheck",
        "message_id": "p1:canary-1:check:1",
        "model": "churn",
        "promotion_id": "p1",
        "aggregate_version": 7,
        "time": "2026-11-22T10:00:00+00:00",
        "payload": {"step": "canary-1"},
    }


def test_round_trip_through_bytes():
    envelope = Envelope.new(
        "GateCheck", "churn", {"step": "canary-1"}, promotion_id="p1", aggregate_version=3
    )
    assert parse_envelope(envelope.to_bytes()) == envelope
    assert parse_envelope(envelope.model_dump_json()) == envelope


@given(
    type_=st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True),
    model=st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
    payload=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=5),
    version=st.none() | st.integers(min_value=0, max_value=10**9),
)
def test_round_trip_property(type_, model, payload, version):
    envelope = Envelope.new(type_, model, payload, aggregate_version=version)
    assert parse_envelope(envelope.to_bytes()) == envelope


def with_(**changes) -> bytes:
    document = valid()
    for key, value in changes.items():
        if value is ...:
            document.pop(key)
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "body is empty"),
        (b"   ", "body is empty"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"null", "expected an object"),
        (b'"text"', "expected an object"),
        (b"[]", "expected an object"),
        (with_(schema_version=2), "schema_version 2 is not supported"),
        (with_(type=...), "type: Field required"),
        (with_(type=""), "type: String should have at least 1 character"),
        (with_(type="1abc"), "type: String should match pattern"),
        (with_(message_id=...), "message_id: Field required"),
        (with_(model="../etc"), "model: String should match pattern"),
        (with_(time="yesterday"), "time: Input should be a valid datetime"),
        (with_(time="2026-11-22T10:00:00"), "time: Input should have timezone info"),
        (with_(aggregate_version=-1), "aggregate_version: Input should be greater than or equal"),
        (with_(payload=[1]), "payload: Input should be an object"),
        (with_(surprise=1), "surprise: Extra inputs are not permitted"),
    ],
)
def test_malformed_inputs_give_the_typed_error(raw, reason):
    with pytest.raises(InvalidMessage) as caught:
        parse_envelope(raw)
    assert reason in caught.value.reason


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_invalid_message(raw):
    try:
        parse_envelope(raw)
    except InvalidMessage as exc:
        assert exc.reason


class StepPayload(BaseModel):
    step: str
    attempt: int


def test_payload_validation_names_the_field():
    envelope = Envelope.new("GateCheck", "churn", {"step": "s"}, time=datetime.now(UTC))
    with pytest.raises(
        InvalidMessage, match=r"GateCheck payload is invalid: attempt: Field required"
    ):
        envelope.payload_as(StepPayload)
    ok = Envelope.new("GateCheck", "churn", {"step": "s", "attempt": 2})
    assert ok.payload_as(StepPayload) == StepPayload(step="s", attempt=2)


def test_an_envelope_without_a_trace_is_written_and_signed_as_before() -> None:
    """The trace context is left out of the bytes and the MAC when unset: an instance still
    on the previous version (extra fields forbidden) reads it, and a message it signed before
    the field existed still verifies."""
    from orchestrator.signing import MessageSigner

    plain = Envelope.new("GateCheck", "churn", {"promotion_id": "p"}, message_id="m-1")
    assert "traceparent" not in plain.to_document()
    assert "traceparent" not in json.loads(plain.to_bytes())
    traced = plain.model_copy(
        update={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    assert traced.to_document()["traceparent"] == traced.traceparent
    signer = MessageSigner(b"k" * 32)
    signed = signer.sign(plain)
    assert signer.verify(signed) is None
    # The trace is covered by the MAC when set: changing it breaks the signature.
    assert signer.verify(signer.sign(traced)) is None
    assert signer.verify(signed.model_copy(update={"traceparent": traced.traceparent}))
