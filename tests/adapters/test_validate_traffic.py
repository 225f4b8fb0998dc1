"""validate_traffic: the traffic and mirror rules, as a table."""

from __future__ import annotations

import pytest

from adapters.traffic_rules import mirror_after_traffic, validate_traffic
from orchestrator.ports import InvalidTraffic

OK = [
    ({"prod-v1": 100}, None, None),
    ({"prod-v1": 90, "prod-v2": 10}, None, None),
    ({"prod-v1": 100, "prod-v2": 0}, None, ["prod-v1", "prod-v2"]),
    ({"prod-v1": 100}, {"prod-v2": 50}, ["prod-v1", "prod-v2"]),
    ({"prod-v1": 100}, {"prod-v2": 0}, None),
    ({"prod-v1": 100}, {}, None),
    ({}, None, []),  # no deployments: no live traffic is the only possible map
    ({}, {}, []),
]

BAD = [
    ({"prod-v1": 90}, None, None, "sum to 100, got 90"),
    ({"prod-v1": 90, "prod-v2": 20}, None, None, "sum to 100, got 110"),
    ({"prod-v1": 101}, None, None, "must be 0..100"),
    ({"prod-v1": -10, "prod-v2": 110}, None, None, "must be 0..100"),
    ({"prod-v1": 50.0, "prod-v2": 50}, None, None, "must be an integer"),
    ({"prod-v1": True}, None, None, "must be an integer"),
    ({"prod-v1": "100"}, None, None, "must be an integer"),
    ({"1prod": 100}, None, None, "not a valid deployment name"),
    ({"ab": 100}, None, None, "not a valid deployment name"),
    ({"prod_v1": 100}, None, None, "not a valid deployment name"),
    ({"a" * 33: 100}, None, None, "not a valid deployment name"),
    ({}, None, None, "empty (or all-zero) map"),
    ({}, None, ["prod-v1"], "empty (or all-zero) map"),
    ({"prod-v1": 0}, None, ["prod-v1"], "empty (or all-zero) map"),
    ({"prod-v1": 100}, None, ["prod-v2"], "do not exist: ['prod-v1']"),
    ({"prod-v1": 100}, {"prod-v2": 51}, None, "mirror: weight of 'prod-v2' must be 0..50"),
    ({"prod-v1": 100}, {"prod-v2": 30, "prod-v3": 30}, None, "at most 50, got 60"),
    ({"prod-v1": 90, "prod-v2": 10}, {"prod-v2": 10}, None, "take live traffic: ['prod-v2']"),
    ({"prod-v1": 100}, {"prod-v2": 10}, ["prod-v1"], "mirror names deployments that do not"),
    ({"prod-v1": 100}, {"bad name": 10}, None, "not a valid deployment name"),
]


@pytest.mark.parametrize(("traffic", "mirror", "existing"), OK)
def test_valid_maps_pass(traffic, mirror, existing) -> None:
    validate_traffic(traffic, mirror, existing)


@pytest.mark.parametrize(("traffic", "mirror", "existing", "reason"), BAD)
def test_invalid_maps_say_why(traffic, mirror, existing, reason) -> None:
    with pytest.raises(InvalidTraffic) as caught:
        validate_traffic(traffic, mirror, existing)
    assert reason in caught.value.reason


def test_going_live_drops_the_mirror_on_that_deployment() -> None:
    assert mirror_after_traffic({"prod-v1": 90, "prod-v2": 10}, {"prod-v2": 20}) == {}
    assert mirror_after_traffic({"prod-v1": 100}, {"prod-v2": 20}) == {"prod-v2": 20}
