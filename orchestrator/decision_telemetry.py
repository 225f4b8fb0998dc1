"""What a saved decision tells telemetry (docs/observability.md): the metrics it moves
(`measure`) and the attributes of its `decide` span (`decision_attributes`), read from the
aggregate before and after it and from the decision's audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.decision import Decision
from orchestrator import telemetry
from orchestrator.aggregate import ModelAggregate
from orchestrator.messages import Envelope
from promotion.state import TERMINAL

# Every value the counters' computed attributes take (tests/infra checks the alerts on them).
ENDED = frozenset(str(status) for status in TERMINAL)
RUN_ENDED = frozenset({"completed", "failed", "canceled"})


def promotion_status(aggregate: ModelAggregate) -> str | None:
    active = aggregate.promotion.active
    return str(active.status) if active is not None else None


def measure(
    model: str,
    before: ModelAggregate,
    after: ModelAggregate,
    decision: Decision[Any],
    now: datetime,
) -> None:
    """The metrics a transition moves (docs/observability.md): once per saved decision."""
    old = promotion_status(before)
    if old is not None and old != promotion_status(after) and before.status_since is not None:
        seconds = (now - before.status_since).total_seconds()
        telemetry.record("promotion.time_in_state", seconds, model=model, state=old)
    for entry in decision.audit:
        kind, _, what = entry.action.partition(".")
        if kind == "promotion" and what in ENDED:
            telemetry.count("promotions", model=model, outcome=what)
        elif kind == "gate" and what in ("passed", "failed", "inconclusive"):
            for evidence in entry.detail.get("evidence") or []:
                gate = str(evidence.get("gate", "?")).split(":", 1)[0]  # the kind, bounded
                outcome = str(evidence.get("outcome", what))
                telemetry.count("gate.verdicts", model=model, gate=gate, verdict=outcome)
        elif kind == "retrain" and what.startswith("job_") and what[4:] in RUN_ENDED:
            telemetry.count("training.runs", model=model, result=what[4:])


_GATE_VERDICTS = {"gate.passed": "pass", "gate.failed": "fail", "gate.inconclusive": "inconclusive"}


def decision_attributes(
    envelope: Envelope,
    section: str,
    before: ModelAggregate,
    after: ModelAggregate,
    decision: Decision[Any],
) -> dict[str, Any]:
    """The decision as its span shows it (docs/observability.md): the promotion (or training
    run) it is about, the step, the verdict (a gate's: pass, fail, inconclusive; else applied
    or ignored), the states it moved between, the candidate version, and each gate's evidence
    (`telemetry.gate_attributes`)."""
    entries = decision.audit
    was, now = before.promotion.active, after.promotion.active
    promotion_id = next((e.promotion_id for e in entries if e.promotion_id), None) or (
        envelope.promotion_id or (was.id if was is not None and section == "promotion" else None)
    )
    # A promotion that ends may start the next one queued: its entries are not this decision's.
    mine = [e for e in entries if e.promotion_id == promotion_id] or entries
    promotion = next((p for p in (was, now) if p is not None and p.id == promotion_id), None)
    gates = [e for e in mine if e.action in _GATE_VERDICTS]
    if gates:
        verdict = _GATE_VERDICTS[gates[-1].action]
    else:
        verdict = "ignored" if decision.ignored and not decision.effects else "applied"
    own = section == "promotion"  # the promotion's status is this section's state
    state_from = next((e.from_state for e in mine if e.from_state), None)
    state_to = next((e.to_state for e in reversed(mine) if e.to_state), None)
    steps = [e.detail["step"] for e in mine if e.detail.get("step")]
    detail = next((e.detail for e in mine if e.detail), {})
    return {
        "retrain.promotion_id": promotion_id,
        # The step judged (a gate's), and the one it moved to when another (the next step).
        "retrain.step": steps[0] if steps else (promotion.step if promotion else None),
        "retrain.step_to": steps[-1] if steps and steps[-1] != steps[0] else None,
        "retrain.verdict": verdict,
        "retrain.ignored": decision.ignored,
        "retrain.state_from": state_from or (promotion_status(before) if own else None),
        "retrain.state_to": state_to or (promotion_status(after) if own else None),
        "retrain.model_version": (promotion.candidate_version if promotion is not None else None)
        or detail.get("registered_version"),
        "retrain.run_id": detail.get("run_id"),
        "retrain.actions": [e.action for e in entries],
        "retrain.effects": len(decision.effects),
        **telemetry.gate_attributes(
            [item for e in gates for item in e.detail.get("evidence") or []]
        ),
    }
