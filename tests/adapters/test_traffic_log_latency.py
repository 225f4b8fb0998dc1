"""Contract: the latency reader on the real azure-monitor-query SDK (LogsQueryClient) sends the
Logs API the query it should and reads the table it answers; nothing leaves the process
(tests/azure_recording.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.traffic_log_latency import LatencyUnavailable, TrafficLogLatency
from domain.policy import PolicyError, parse_policy
from orchestrator.bootstrap import refuse_unmeasured_gates
from tests.azure_recording import Canned, FakeCredential, RecordingTransport

WORKSPACE = "11111111-2222-3333-4444-555555555555"
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)


def table(durations: list[int | None]) -> dict:
    return {
        "tables": [
            {
                "name": "PrimaryResult",
                "columns": [
                    {"name": "TimeGenerated", "type": "datetime"},
                    {"name": "TotalDurationMs", "type": "int"},
                ],
                "rows": [
                    [(START + timedelta(seconds=i)).isoformat(), ms]
                    for i, ms in enumerate(durations)
                ],
            }
        ]
    }


def reader(answer: Canned) -> tuple[TrafficLogLatency, RecordingTransport, FakeCredential]:
    transport = RecordingTransport(lambda request: answer)
    credential = FakeCredential()
    return TrafficLogLatency(WORKSPACE, credential, transport=transport), transport, credential


def test_the_query_names_the_deployment_the_window_and_successful_requests() -> None:
    latency, transport, credential = reader(Canned(200, table([40, 55, None, 61])))
    values = latency.latencies("churn-endpoint", "churn-v2", START, END, limit=100)
    assert values == [40.0, 55.0, 61.0]  # a row without a duration is no sample
    (sent,) = transport.requests
    assert sent.method == "POST"
    assert sent.path == f"https://api.loganalytics.io/v1/workspaces/{WORKSPACE}/query"
    query = sent.body["query"]
    assert query.startswith("AmlOnlineEndpointTrafficLog")
    assert 'EndpointName == "churn-endpoint" and DeploymentName == "churn-v2"' in query
    assert "ResponseCode < 400" in query and "TotalDurationMs" in query
    begin, finish = sent.body["timespan"].split("/")
    assert datetime.fromisoformat(begin) == START and datetime.fromisoformat(finish) == END
    assert sent.headers["Authorization"].startswith("Bearer ")
    assert credential.scopes == ["https://api.loganalytics.io/.default"]


def test_a_large_window_is_thinned_evenly_in_time_order() -> None:
    latency, _, _ = reader(Canned(200, table(list(range(1000)))))
    values = latency.latencies("churn-endpoint", "churn-v2", START, END, limit=10)
    assert values == [float(x) for x in range(0, 1000, 100)]


def test_a_partial_result_is_refused_not_judged() -> None:
    partial = table([40, 50]) | {"error": {"code": "PartialError", "message": "timed out"}}
    latency, _, _ = reader(Canned(200, partial))
    with pytest.raises(LatencyUnavailable, match="incomplete"):
        latency.latencies("churn-endpoint", "churn-v2", START, END, limit=100)


def test_an_error_answer_raises() -> None:
    latency, _, _ = reader(
        Canned(403, {"error": {"code": "InsufficientAccessError", "message": "no read"}})
    )
    with pytest.raises(Exception, match=r"InsufficientAccessError|no read"):
        latency.latencies("churn-endpoint", "churn-v2", START, END, limit=100)


@pytest.mark.parametrize("name", ['churn" or 1==1', "churn\nendpoint", ""])
def test_names_that_are_not_arm_names_are_refused(name: str) -> None:
    latency, transport, _ = reader(Canned(200, table([])))
    with pytest.raises(ValueError, match="cannot be queried"):
        latency.latencies(name, "churn-v2", START, END, limit=100)
    assert transport.requests == []


POLICY = """
model: churn
endpoint: churn-endpoint
data: {container: churn-data}
canary:
  gates:
    - {metric: accuracy}
    - {metric: latency_ms, margin: 0.1}
"""


def test_a_latency_gate_without_a_latency_source_in_azure_is_refused_naming_the_gate() -> None:
    policies = {"churn": parse_policy(POLICY)}
    with pytest.raises(PolicyError) as raised:
        refuse_unmeasured_gates(policies, in_azure=True, latency_source=False)
    assert raised.value.field == "canary.gates.1"
    assert "CANARY_LATENCY_WORKSPACE_ID" in raised.value.reason
    # With a source, or locally (the request log has latencies), it stands.
    refuse_unmeasured_gates(policies, in_azure=True, latency_source=True)
    refuse_unmeasured_gates(policies, in_azure=False, latency_source=False)
