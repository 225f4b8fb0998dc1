"""The issue's routing acceptance test, over real HTTP to the local endpoint server.

"At 10% weight, 10,000 keyed requests give a canary share within 1 point of 10%, and the same
key always reaches the same deployment within a step." Every request is scored by a real
MLflow model; the deployment that served it is read from the response's
``azureml-model-deployment`` header, so this checks what the server does, not the pure
`route` function (tests/endpoint_server/test_routing.py does that).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from tests.endpoint_fixtures import Registry, Server, wait_until_done

ENDPOINT = "share-ep"
PROD, CANARY = "share-v1", "share-v2"
SPLIT = {PROD: 90, CANARY: 10}
KEYS = [f"customer-{i}" for i in range(10_000)]


@pytest.fixture(scope="module")
def split_endpoint(server: Server, registry: Registry) -> Iterator[str]:
    """The module's server with model v1 and v2 deployed and the 90/10 split; its URL."""
    with LocalEndpoint(server.url, ENDPOINT, key=server.key) as endpoint:
        endpoint.deploy(registry.model, "1", PROD)
        endpoint.deploy(registry.model, "2", CANARY)
        assert wait_until_done(endpoint, PROD).state == "succeeded"
        assert wait_until_done(endpoint, CANARY).state == "succeeded"
        endpoint.set_traffic(SPLIT)
        assert endpoint.traffic() == SPLIT
        yield server.url


@pytest.fixture(scope="module")
def body(registry: Registry) -> bytes:
    """One holdout row as a scoring payload, encoded once: the loop's time goes to the server."""
    frame = registry.features.iloc[[0]]
    payload = {"input_data": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    return json.dumps(payload).encode()


def served_by(http: httpx.Client, body: bytes, key: str) -> str:
    response = http.post(
        f"/{ENDPOINT}/score",
        content=body,
        headers={"content-type": "application/json", "x-request-key": key},
    )
    assert response.status_code == 200, response.text
    return response.headers["azureml-model-deployment"]


def test_ten_thousand_keyed_requests_give_the_canary_ten_percent_and_keys_stick(
    split_endpoint: str, body: bytes, server: Server
) -> None:
    # One keep-alive connection: the cost measured is the server's, not TCP handshakes.
    with httpx.Client(base_url=split_endpoint, timeout=30.0, headers=server.headers) as http:
        first = {key: served_by(http, body, key) for key in KEYS}
        # Within the step (the split unchanged), every 10th key again, in reverse order.
        again = {key: served_by(http, body, key) for key in reversed(KEYS[::10])}

    counts = Counter(first.values())
    assert set(counts) == {PROD, CANARY}
    share = counts[CANARY] / len(KEYS)
    assert abs(share - 0.10) <= 0.01, f"canary share {share:.4f}"
    assert again == {key: first[key] for key in again}
