"""Deterministic, weighted routing of keyed requests. Pure.

A request key (an entity id) is hashed with SHA-256 to a bucket 0..99. Deployments, in sorted
name order, own consecutive ranges of buckets as wide as their weights; the key goes to the
deployment whose range holds its bucket. So one key always reaches the same deployment while
the split stays the same, and with two deployments (one at each end of the range) a key on the
canary stays on it as the canary's weight grows (10 -> 25 -> 50).

Mirroring uses an independent bucket (the key hashed with a ``mirror:`` prefix) so the shadow
sample is not correlated with the live split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

BUCKETS = 100


def bucket(key: str, salt: str = "") -> int:
    """The key's bucket, 0..99 (first 8 bytes of sha256(salt + key), modulo 100)."""
    digest = hashlib.sha256(f"{salt}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def pick(weights: Mapping[str, int], slot: int) -> str | None:
    """The deployment whose cumulative range (sorted name order) holds `slot`, or None."""
    upper = 0
    for name in sorted(weights):
        weight = weights[name]
        if weight <= 0:
            continue
        upper += weight
        if slot < upper:
            return name
    return None


def route(key: str, traffic: Mapping[str, int]) -> str | None:
    """The deployment that serves `key` under the live split, or None when none takes traffic."""
    return pick(traffic, bucket(key))


def mirror_target(key: str, mirror: Mapping[str, int]) -> str | None:
    """The deployment that also gets a shadow copy of `key`'s request, or None."""
    return pick(mirror, bucket(key, salt="mirror:")) if mirror else None
