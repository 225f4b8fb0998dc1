"""Read-only views for the HTTP API and the CLI: a model's status, a promotion, its audit."""

from __future__ import annotations

from typing import Any

from orchestrator.policy_files import policy_for
from orchestrator.ports import AuditRecord, Ports


class Queries:
    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def model_status(self, model: str) -> dict[str, Any]:
        """Raises UnknownModel for a model without a policy."""
        policy_for(self.ports.policies, model)
        aggregate, _ = self.ports.store.load(model)
        promotion = aggregate.promotion
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
            "queued_candidates": [q.model_dump(mode="json") for q in promotion.queued],
            "recent_promotions": [h.model_dump(mode="json") for h in promotion.history],
            "retrain": aggregate.retrain.model_dump(mode="json"),
            "pending_effects": len(aggregate.outbox),
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

    def audit_trail(
        self, model: str, promotion_id: str | None = None, since_version: int = 0
    ) -> list[AuditRecord]:
        records = self.ports.audit.read(model, since_version)
        if promotion_id is None:
            return records
        return [record for record in records if record.promotion_id == promotion_id]
