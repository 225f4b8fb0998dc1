"""Parsing is strict: no string is coerced to a boolean or a number, in HTTP bodies, Event Hubs
events and message envelopes alike, and the error names the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest

from orchestrator.messages import Envelope, InvalidMessage, parse_envelope
from promotion.commands import GateCheck
from retrain.commands import TrainingJobCheck
from triggers import http_api
from triggers.payloads import (
    AuditQuery,
    BadPayload,
    PageQuery,
    RetrainBody,
    parse_event,
    parse_json_body,
    parse_query,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [("force", "yes"), ("force", "on"), ("force", "1"), ("force", 1), ("model", 7)],
)
def test_a_retrain_body_is_not_coerced(field: str, value: object) -> None:
    body = {"model": "churn", field: value}
    with pytest.raises(BadPayload, match=field):
        parse_json_body(json.dumps(body).encode(), RetrainBody)


def test_a_well_typed_retrain_body_parses() -> None:
    body = parse_json_body(b'{"model": "churn", "force": true}', RetrainBody)
    assert body.force is True


def test_post_retrain_with_a_string_for_a_boolean_is_a_400_naming_the_field() -> None:
    request = func.HttpRequest(
        method="POST",
        url="http://127.0.0.1/api/retrain",
        body=b'{"model": "churn", "force": "yes"}',
        headers={"content-type": "application/json"},
    )
    response = http_api.retrain(request)  # refused before any runtime is built
    assert response.status_code == 400
    problem = json.loads(response.get_body())
    assert problem["detail"].startswith("force:")


def test_a_data_ready_event_with_rows_as_text_is_refused() -> None:
    event = {"model": "churn", "data_uri": "https://a/b.csv", "rows": "12", "event_id": "e1"}
    with pytest.raises(BadPayload, match="rows"):
        parse_event(json.dumps(event).encode(), {})


def _envelope(**changes: object) -> dict[str, object]:
    document = json.loads(
        Envelope.new(
            "TrainingJobCheck",
            "churn",
            TrainingJobCheck(run_id="churn-1", attempt=2),
            time=datetime(2026, 12, 1, tzinfo=UTC),
        ).to_bytes()
    )
    document.update(changes)
    return document


def test_an_envelope_field_given_as_text_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="aggregate_version"):
        parse_envelope(json.dumps(_envelope(aggregate_version="3")).encode())


def test_an_envelope_keeps_its_iso_time() -> None:
    envelope = parse_envelope(json.dumps(_envelope()).encode())
    assert envelope.time == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_payload_number_given_as_text_is_refused_naming_the_field() -> None:
    envelope = parse_envelope(json.dumps(_envelope(payload={"run_id": "r", "attempt": "2"})))
    with pytest.raises(InvalidMessage, match="attempt"):
        envelope.payload_as(TrainingJobCheck)


def test_a_payload_round_trips_strictly() -> None:
    check = GateCheck(promotion_id="p", step="canary-1", check_id="c")
    envelope = parse_envelope(Envelope.new("GateCheck", "churn", check).to_bytes())
    assert envelope.payload_as(GateCheck) == check


@pytest.mark.parametrize("mac", ["é" * 64, "A" * 64, "0" * 63, "g" * 64])
def test_a_mac_that_is_not_64_lowercase_hex_is_refused_at_parse(mac: str) -> None:
    # A non-ASCII MAC would crash hmac.compare_digest: refused as malformed, never retried.
    with pytest.raises(InvalidMessage, match="mac"):
        parse_envelope(json.dumps(_envelope(mac=mac)).encode())


@pytest.mark.parametrize(
    "limit", ["0", "1001", "-1", "+5", " 5", "5 ", "1e2", "0x10", "\uff11\uff10", ""]
)
def test_a_page_limit_is_plain_digits_within_bounds(limit: str) -> None:
    with pytest.raises(BadPayload, match="limit"):
        parse_query({"limit": limit}, PageQuery)


def test_a_page_query_ignores_the_function_key_and_refuses_anything_else() -> None:
    query = parse_query({"code": "key", "limit": "0010", "promotion": "churn-v1-x"}, AuditQuery)
    assert (query.limit, query.promotion, query.continuation) == (10, "churn-v1-x", None)
    assert parse_query({}, PageQuery).limit == 100
    with pytest.raises(BadPayload, match="promotion"):
        parse_query({"promotion": "churn-v1"}, PageQuery)  # runs take no promotion
    with pytest.raises(BadPayload, match="promotion"):
        parse_query({"promotion": "a/b"}, AuditQuery)
    with pytest.raises(BadPayload, match="continuation"):
        parse_query({"continuation": "x" * 4001}, AuditQuery)
