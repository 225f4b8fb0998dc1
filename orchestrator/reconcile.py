"""The reconcile pass: for every model, read what its endpoint really serves and compare it
with what the state says (`promotion.drift`), as Flagger and Argo Rollouts re-read the real
routes on every pass. A difference becomes an `EndpointDrift` command handled like any other
message (audited, published, then repaired or the promotion paused, per the policy's
`on_drift`); the endpoint back in line becomes an `EndpointInSync` that clears it. Runs on the
timer with the outbox sweep, after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from domain.policy import ModelPolicy
from orchestrator.aggregate import ModelAggregate
from orchestrator.handlers import MessageHandlers
from orchestrator.messages import Envelope
from orchestrator.outbox import Outbox, endpoint_lane_waiting
from orchestrator.ports import DeploymentBusy, Ports
from promotion.commands import EndpointDrift, EndpointInSync
from promotion.drift import (
    ExpectedEndpoint,
    ObservedDeployment,
    converging,
    expected_endpoint,
    expected_ring,
    find_drift,
)
from promotion.rings import ring_endpoints
from promotion.state import Drift

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Unread:
    """An endpoint not read this pass, and why."""

    why: str


@dataclass
class ReconcileReport:
    checked: list[str] = field(default_factory=list)
    drifted: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why not compared
    failed: list[dict[str, str]] = field(default_factory=list)


class Reconciler:
    def __init__(self, ports: Ports, outbox: Outbox, handlers: MessageHandlers) -> None:
        self.ports = ports
        self.outbox = outbox
        self.handlers = handlers

    def reconcile(self) -> ReconcileReport:
        """One pass over every model with a policy; one model's failure never stops it."""
        report = ReconcileReport()
        for model in sorted(self.ports.policies):
            try:
                self._reconcile(model, report)
            except Exception as exc:
                log.exception("reconcile: %s failed", model)
                report.failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
        return report

    def _reconcile(self, model: str, report: ReconcileReport) -> None:
        aggregate, _ = self.ports.store.load(model)
        state = aggregate.promotion
        # The model's endpoint first, then each later ring the state knows (the promotion's,
        # fixed at its start, not the policy's now), each on its own: one that waits or cannot
        # be read is skipped alone.
        targets = [(None, expected_endpoint(state))] + [
            (ring, expected_ring(state, ring)) for ring in ring_endpoints(state)
        ]
        compare = [(ring, expected) for ring, expected in targets if expected is not None]
        if not compare:
            report.skipped[model] = "nothing deployed yet"
            return
        policy = self.ports.policies[model]
        skipped: list[str] = []
        in_sync: set[str | None] = set()
        drift: Drift | None = None
        for ring, expected in compare:
            found = self._read(aggregate, policy, expected, ring)
            if isinstance(found, _Unread):
                skipped.append(f"{ring}: {found.why}" if ring else found.why)
                continue
            if model not in report.checked:
                report.checked.append(model)
            if isinstance(found, str):
                skipped.append(f"{ring}: {found}" if ring else found)
            elif found is None:
                in_sync.add(ring)
            else:
                drift = found  # the first that differs is the drift reported
                break
        if skipped:
            report.skipped[model] = "; ".join(skipped)
        if drift is None:
            if state.drift is not None and state.drift.endpoint in in_sync:
                # Only the endpoint the drift was found on, read back in line, clears it.
                ring = state.drift.endpoint
                in_line = EndpointInSync(endpoint=ring)
                self._handle(aggregate, "EndpointInSync", in_line, f"in-sync:{ring or ''}")
            return
        log.warning("%s: endpoint drift: %s", model, drift.summary)
        report.drifted.append({"model": model, "summary": drift.summary})
        digest = hashlib.sha256(
            json.dumps(drift.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()[:16]
        command = EndpointDrift.model_validate(drift.model_dump())
        self._handle(aggregate, "EndpointDrift", command, f"drift:{digest}")

    def _read(
        self,
        aggregate: ModelAggregate,
        policy: ModelPolicy,
        expected: ExpectedEndpoint,
        ring: str | None,
    ) -> Drift | str | _Unread | None:
        """One endpoint compared, or why it was not read this pass. The model's own endpoint
        failing to be read fails the model's pass (reported); a later ring's is skipped alone."""
        if endpoint_lane_waiting(aggregate, ring, deletes=False):
            # Our own deploy or traffic map is on its way there (or being retried): not drift.
            # A delete does not hold the pass: it may wait for traffic the pass puts back.
            return _Unread("endpoint effects on their way")
        try:
            return self._compare(policy, expected, ring)
        except DeploymentBusy:
            return _Unread("the endpoint is applying an update")
        except Exception as exc:
            if ring is None:
                raise
            log.warning("reconcile: %s ring %s not read: %s", aggregate.model, ring, exc)
            return _Unread(f"not read: {type(exc).__name__}: {exc}"[:300])

    def _compare(
        self, policy: ModelPolicy, expected: ExpectedEndpoint, ring: str | None
    ) -> Drift | str | None:
        """One endpoint (the model's, or the later ring `ring`) read back and compared: the
        drift, None when in sync, or why it was not compared this pass (DeploymentBusy:
        the endpoint could not be read)."""
        endpoint = self.outbox.endpoint(policy, ring)
        deployments = [
            ObservedDeployment(name=d.deployment, state=d.state, version=d.model_version)
            for d in endpoint.deployments()
        ]
        traffic = endpoint.traffic()
        # The mirror of a model with a shadow stage too: the shadow's must be there, and none
        # may outlive it (a mirrored deployment cannot be deleted). A model without one never
        # mirrors: its endpoint's mirror is not the app's to judge. The shadow runs on the
        # first ring only.
        shadowed = ring is None and (policy.shadow is not None or bool(expected.mirror))
        mirror = endpoint.mirror() if shadowed else None
        if converging(expected, deployments):
            return "a deployment is being created or removed"
        drift = find_drift(expected, traffic, deployments, mirror)
        if drift is not None and ring is not None:
            drift = drift.model_copy(update={"endpoint": ring})
        return drift

    def _handle(self, aggregate: ModelAggregate, message_type: str, command: Any, key: str) -> None:
        envelope = Envelope.new(
            message_type,
            aggregate.model,
            command,
            message_id=f"{aggregate.model}:{key}:{aggregate.version}",
            time=self.ports.clock(),
        )
        self.handlers.handle(self.ports.signer.sign(envelope))
