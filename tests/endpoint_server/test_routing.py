"""Keyed weighted routing, the pure function (`endpoint_server.routing`), no server.

Shares, stickiness, stable buckets, keys staying on a growing canary, zero weights and the
independent mirror bucket. The same share and stickiness over real HTTP to the local endpoint:
test_keyed_http_share.py; the pin header: test_local_endpoint.py.
"""

from __future__ import annotations

from collections import Counter

from endpoint_server.routing import bucket, mirror_target, route

SPLIT = {"bc-v1": 90, "bc-v2": 10}


def test_ten_percent_of_ten_thousand_keys_reach_the_canary_within_one_point() -> None:
    counts = Counter(route(f"customer-{i}", SPLIT) for i in range(10_000))
    assert set(counts) == {"bc-v1", "bc-v2"}
    assert abs(counts["bc-v2"] / 10_000 - 0.10) <= 0.01


def test_a_key_always_reaches_the_same_deployment_within_a_step() -> None:
    first = {f"customer-{i}": route(f"customer-{i}", SPLIT) for i in range(2_000)}
    again = {key: route(key, dict(reversed(list(SPLIT.items())))) for key in first}
    assert first == again  # insertion order of the map does not matter either


def test_buckets_are_stable_sha256_values() -> None:
    # sha256("customer-1") starts with these 8 bytes; the bucket is that number modulo 100.
    import hashlib

    digest = hashlib.sha256(b"customer-1").digest()
    assert bucket("customer-1") == int.from_bytes(digest[:8], "big") % 100
    assert 0 <= bucket("anything") < 100


def test_keys_on_the_canary_stay_on_it_as_its_weight_grows() -> None:
    keys = [f"customer-{i}" for i in range(5_000)]
    for canary in ("bc-v2", "aa-v2"):  # the canary sorting after, then before, production
        previous: set[str] = set()
        for weight in (10, 25, 50, 100):
            split = {"bc-v1": 100 - weight, canary: weight}
            on_canary = {key for key in keys if route(key, split) == canary}
            assert previous <= on_canary
            previous = on_canary


def test_zero_weights_and_empty_maps_route_nowhere_and_mirror_is_independent() -> None:
    assert route("k", {}) is None
    assert route("k", {"bc-v1": 0, "bc-v2": 100}) == "bc-v2"
    assert mirror_target("k", {}) is None
    mirrored = Counter(mirror_target(f"k{i}", {"bc-v2": 20}) for i in range(10_000))
    assert abs(mirrored["bc-v2"] / 10_000 - 0.20) <= 0.015
