"""The traffic rules every endpoint adapter applies before it calls out (and the local endpoint
server applies again): pure checks of traffic and mirror maps and of deployment names.

Traffic rules (the same for both adapters, and enforced again by the local server):

- a live traffic map is deployment -> integer percent, each 0..100, summing to exactly 100;
  deployments left out take 0. `traffic()` reports the map with zero weights omitted.
- the empty map ("no live traffic") is accepted only when the caller says no deployment
  exists (``existing`` given and empty): an endpoint that serves anything must route all of it.
- a mirror (shadow) map is deployment -> integer percent, each 0..50, summing to at most 50;
  a deployment that takes live traffic (weight > 0) is never mirrored to.
- every name must be a valid Azure ML deployment name (`orchestrator.naming`), and, when
  ``existing`` is given, an existing deployment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from domain.naming import is_valid_deployment_name
from orchestrator.ports import InvalidDeploymentName, InvalidTraffic

MAX_MIRROR_PERCENT = 50


def check_deployment_name(name: str) -> str:
    """Return `name`, or raise `InvalidDeploymentName` when it breaks the Azure name rule."""
    if not isinstance(name, str) or not is_valid_deployment_name(name):
        raise InvalidDeploymentName(
            f"{name!r} is not a valid deployment name "
            "(3-32 characters, a letter first, then letters, digits and '-')"
        )
    return name


def _check_weights(kind: str, weights: Mapping[str, object], upper: int) -> None:
    if not isinstance(weights, Mapping):
        raise InvalidTraffic(f"{kind} must be a mapping of deployment name to percent")
    for name, weight in weights.items():
        if not isinstance(name, str) or not is_valid_deployment_name(name):
            raise InvalidTraffic(
                f"{kind}: {name!r} is not a valid deployment name "
                "(3-32 characters, a letter first, then letters, digits and '-')"
            )
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise InvalidTraffic(f"{kind}: weight of {name!r} must be an integer, got {weight!r}")
        if not 0 <= weight <= upper:
            raise InvalidTraffic(f"{kind}: weight of {name!r} must be 0..{upper}, got {weight}")


def validate_traffic(
    traffic: Mapping[str, int],
    mirror: Mapping[str, int] | None = None,
    existing: Collection[str] | None = None,
) -> None:
    """Raise `InvalidTraffic` with the reason when the maps break a rule; return None if fine.

    Pure. `existing` (the deployments known to exist) turns on the existence checks.
    """
    _check_weights("traffic", traffic, 100)
    total = sum(traffic.values())
    if not traffic or total == 0:
        if existing is None or len(existing) > 0:
            raise InvalidTraffic(
                "traffic must send 100% to deployments; an empty (or all-zero) map is allowed "
                "only when the endpoint has no deployments"
            )
    elif total != 100:
        raise InvalidTraffic(f"traffic weights must sum to 100, got {total}")
    if existing is not None:
        unknown = sorted(set(traffic) - set(existing))
        if unknown:
            raise InvalidTraffic(f"traffic names deployments that do not exist: {unknown}")
    if mirror is None:
        return
    _check_weights("mirror", mirror, MAX_MIRROR_PERCENT)
    mirror_total = sum(mirror.values())
    if mirror_total > MAX_MIRROR_PERCENT:
        raise InvalidTraffic(
            f"mirror weights must sum to at most {MAX_MIRROR_PERCENT}, got {mirror_total}"
        )
    live = sorted(name for name, weight in mirror.items() if weight > 0 and traffic.get(name, 0))
    if live:
        raise InvalidTraffic(f"cannot mirror to deployments that take live traffic: {live}")
    if existing is not None:
        unknown = sorted(set(mirror) - set(existing))
        if unknown:
            raise InvalidTraffic(f"mirror names deployments that do not exist: {unknown}")


def validate_mirror_shape(mirror: Mapping[str, int]) -> None:
    """The checks on a mirror map that need no knowledge of the live traffic."""
    _check_weights("mirror", mirror, MAX_MIRROR_PERCENT)
    if sum(mirror.values()) > MAX_MIRROR_PERCENT:
        raise InvalidTraffic(
            f"mirror weights must sum to at most {MAX_MIRROR_PERCENT}, got {sum(mirror.values())}"
        )


def mirror_after_traffic(traffic: Mapping[str, int], mirror: Mapping[str, int]) -> dict[str, int]:
    """The mirror map left once `traffic` is live: shadows on live deployments are dropped."""
    return {name: w for name, w in mirror.items() if w > 0 and traffic.get(name, 0) == 0}


def live_only(traffic: Mapping[str, int]) -> dict[str, int]:
    """The map with zero weights omitted."""
    return {name: int(w) for name, w in traffic.items() if w}
