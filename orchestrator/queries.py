"""Read-only views for the HTTP API and the CLI: a model's status (bounded), its runs and its
audit (pages), a promotion.

Nothing here returns a list that grows with the model's life: the status carries counts,
samples and the last few runs; the runs and the audit are read a page at a time (oldest
first, a continuation token for the next page), and a promotion's audit reads that
promotion's records only.

Runs: every run that ended, read from the audit log's index of run ends (RUN_ENDED_ACTIONS),
so runs older than the aggregate's short history (MAX_RUNS) stay readable; a run still in that
history also gets its reason, submit time and data sample from it. The running job is in the
status, not among the runs.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from domain.policy import ModelPolicy
from orchestrator.policy_files import policy_for
from orchestrator.ports import MAX_AUDIT_PAGE, AuditPage, AuditRecord, Ports
from promotion.explain import canary_samples, first_model_bake
from promotion.rings import ring_endpoints
from promotion.state import Promotion, PromotionState, PromotionStatus

RECENT_RUNS = 5  # the last runs the status shows (the rest: `runs`)
QUEUED_SHOWN = 10  # queued candidates the status lists (all are counted)
# The tracker's fields the status shows, each bounded (a job carries a sample of its data
# and a count). Named, not excluded: a field added to the tracker later is not shown by
# accident (the data keys, or any list that grows).
_RETRAIN_FIELDS = {
    "window",
    "current_job",
    "last_job_ended_at",
    "follow_up_pending",
    "follow_up_reason",
    "follow_up_manual",
    "monitor",  # the production monitor's last verdict and cooldown stamp (reason capped)
}


class Queries:
    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def model_status(self, model: str) -> dict[str, Any]:
        """Raises UnknownModel for a model without a policy."""
        policy = policy_for(self.ports.policies, model)
        aggregate, _ = self.ports.store.load(model)
        promotion = aggregate.promotion
        first_bake = first_model_bake(promotion.active, policy) if promotion.active else None
        samples = canary_samples(promotion.active, policy) if promotion.active else None
        tracker = aggregate.retrain
        retrain = tracker.model_dump(mode="json", include=_RETRAIN_FIELDS)
        # What waits for a job: a count, its rows and the oldest few URIs (the data ledger's).
        pending = self.ports.ledger.pending(model)
        retrain["pending"] = {
            "count": pending.items,
            "rows": pending.rows,
            "sample": list(pending.sample),
        }
        retrain["runs"] = [run.model_dump(mode="json") for run in tracker.runs[-RECENT_RUNS:]]
        retrain["runs_kept"] = len(tracker.runs)
        return {
            "model": model,
            "version": aggregate.version,
            "production": promotion.champion.model_dump(mode="json")
            if promotion.champion
            else None,
            "last_known_good": (
                promotion.last_known_good.model_dump(mode="json")
                if promotion.last_known_good
                else None
            ),
            "active_promotion": (
                promotion.active.model_dump(mode="json") if promotion.active else None
            ),
            # A first model's bake: the live traffic it has and needs, and what happens when
            # the next check still finds too little (None for anything else).
            "waiting_for_traffic": first_bake.model_dump(mode="json") if first_bake else None,
            # A canary step: the labeled samples per arm its look waits for (computed from the
            # policy's margin, alpha and power), the deadline and what happens then.
            "canary_samples": samples.model_dump(mode="json") if samples else None,
            # A shadow stage: what is mirrored to the candidate and when it is judged.
            "shadow": _shadow_view(promotion.active, policy),
            # Each ring (policy `rings`; none: the model's endpoint alone): what it serves and
            # where the active promotion is on it.
            "rings": _rings_view(promotion, policy),
            "queued_candidates": [
                q.model_dump(mode="json") for q in promotion.queued[:QUEUED_SHOWN]
            ],
            "queued_count": len(promotion.queued),
            "recent_promotions": [h.model_dump(mode="json") for h in promotion.history],
            "retrain": retrain,
            "pending_effects": len(aggregate.outbox),
            # What an operator must look at: effects dropped after their retries, a rollback
            # whose traffic does not hold (it pages), the endpoint serving something else.
            "effects_given_up": aggregate.effects_given_up,
            "traffic_alert": (
                aggregate.traffic_alert.model_dump(mode="json") if aggregate.traffic_alert else None
            ),
            "endpoint_drift": (
                promotion.drift.model_dump(mode="json") if promotion.drift else None
            ),
        }

    def find_promotion(self, promotion_id: str) -> tuple[str, dict[str, Any]] | None:
        """(model, promotion document) for an active or recent promotion, or None."""
        for model in self.ports.policies:
            aggregate, _ = self.ports.store.load(model)
            active = aggregate.promotion.active
            if active is not None and active.id == promotion_id:
                return model, active.model_dump(mode="json")
            for entry in aggregate.promotion.history:
                if entry.promotion_id == promotion_id:
                    return model, entry.model_dump(mode="json")
        return None

    def audit(
        self,
        model: str,
        promotion_id: str | None = None,
        *,
        limit: int = 100,
        continuation: str | None = None,
    ) -> AuditPage:
        """One page of the model's audit (or of one promotion's), oldest first. Raises
        UnknownModel, InvalidContinuation."""
        policy_for(self.ports.policies, model)
        return self.ports.audit.page(
            model, promotion_id=promotion_id, limit=limit, continuation=continuation
        )

    def audit_trail(self, model: str, promotion_id: str) -> list[AuditRecord]:
        """A promotion's whole audit trail, oldest first: its own records only (a promotion's
        life is short; a model's audit is read by pages, `audit`)."""
        records: list[AuditRecord] = []
        continuation = None
        while True:
            page = self.ports.audit.page(
                model, promotion_id=promotion_id, limit=MAX_AUDIT_PAGE, continuation=continuation
            )
            records.extend(page.records)
            if page.continuation is None:
                return records
            continuation = page.continuation

    def audit_tail(
        self, model: str, promotion_id: str, limit: int
    ) -> tuple[list[AuditRecord], bool]:
        """A promotion's newest `limit` audit records, oldest first, and whether that is all of
        them (the dashboard: what happened last matters most). Reads the promotion's records
        only, by pages. Raises UnknownModel."""
        policy_for(self.ports.policies, model)
        newest: deque[AuditRecord] = deque(maxlen=limit)
        total = 0
        continuation = None
        while True:
            page = self.ports.audit.page(
                model, promotion_id=promotion_id, limit=MAX_AUDIT_PAGE, continuation=continuation
            )
            newest.extend(page.records)
            total += len(page.records)
            if page.continuation is None:
                return list(newest), total <= limit
            continuation = page.continuation

    def runs(
        self, model: str, *, limit: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the model's ended runs, oldest first, and the next page's token.
        Raises UnknownModel, InvalidContinuation."""
        policy_for(self.ports.policies, model)
        page = self.ports.audit.page(model, run_ends=True, limit=limit, continuation=continuation)
        aggregate, _ = self.ports.store.load(model)
        kept = {run.run_id: run for run in aggregate.retrain.runs}
        runs = []
        for record in page.records:
            run_id = record.detail.get("run_id")
            run: dict[str, Any] = {
                "run_id": run_id,
                "status": record.to_state,
                "error": record.detail.get("error"),
                "registered_version": record.detail.get("registered_version"),
                "ended_at": record.time.isoformat(),
                "audit_record": record.record_id,
            }
            if isinstance(run_id, str) and run_id in kept:
                recent = kept[run_id].model_dump(mode="json")
                run = {key: value for key, value in recent.items() if key not in run} | run
            runs.append(run)
        return runs, page.continuation


def _rings_view(state: PromotionState, policy: ModelPolicy) -> list[dict[str, Any]]:
    active = state.active
    walking = active is not None and active.status == PromotionStatus.RING
    first = state.champion
    view = [
        {
            "endpoint": policy.endpoint,
            "serving_version": first.version if first else None,
            "state": "done" if walking else (str(active.status) if active else "serving"),
        }
    ]
    # The rings the state knows (the promotion's, fixed at its start), then any the policy
    # names now that nothing reached yet.
    known = ring_endpoints(state)
    added = [ring.endpoint for ring in policy.rings[1:] if ring.endpoint not in known]
    for endpoint in (*known, *added):
        own = state.rings.get(endpoint)
        version = own.version if own else None
        ring_state = "serving" if active is None else "waiting"
        if walking and active is not None and endpoint in active.rings:
            at = active.rings.index(endpoint)
            if at < active.rings_moved:
                version = active.candidate_version
                ring_state = "baking" if at == active.ring_index else "done"
            elif at == active.ring_index:
                ring_state = "deploying"
        view.append({"endpoint": endpoint, "serving_version": version, "state": ring_state})
    return view if len(view) > 1 else []


def _shadow_view(active: Promotion | None, policy: ModelPolicy) -> dict[str, Any] | None:
    if active is None or active.status != PromotionStatus.SHADOW or policy.shadow is None:
        return None
    return {
        "deployment": active.candidate_deployment,
        "mirror_percent": active.shadow_percent,
        "judged_from": (active.step_started_at + policy.shadow.duration).isoformat(),
        "deadline": active.step_deadline.isoformat() if active.step_deadline else None,
        "min_samples": policy.shadow.gates.min_samples,
    }
