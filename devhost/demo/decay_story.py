"""`make demo STORY=rings` (alias `decay`): shadow first, two rings, then a decay that
retrains on its own.

The same machinery as the default story (story.DemoSession: Azurite, the Functions app under
devhost, the local pipeline runner, the local endpoint server, MLflow, the labeled traffic),
with its own policy (devhost/demo/policies/decay/): a `shadow:` stage, `rings:` (the model's
endpoint, then a second local endpoint standing in for a second region) and a `monitor:`
section. The traffic goes to both endpoints, each at its own `/{endpoint}/score`.

1. A first model goes to production (nothing serves yet: no shadow, `shadow.skipped`): its
   bake on the first ring, then the second ring (which served nothing) gets it, so each ring
   has a known-good to roll back to.
2. New data lands; the better model is mirrored half the live traffic and answers nobody
   (shadow); its error rate, p95 latency and agreement with production are judged; then the
   canary 10 -> 25 -> 50 -> 100 % and the production bake on the first ring; then ring 2:
   deployed on the second endpoint, all its traffic, its bake, its error-rate gate; completed
   when both rings serve it.
3. The production monitor (the maintenance timer) watches the champion and finds it healthy.
   Then the world changes: the feedback for a share of the live requests says the opposite
   label (concept drift). The monitor finds live accuracy below its offline accuracy minus
   the policy's drop and starts a retrain itself: no data landed, nobody asked. The story ends
   when that retrain's run has ended.

The maintenance timer fires every 5 minutes; here devhost's timers run `TIMER_SPEED` times
faster (every 10 s), and the policy's `monitor.every` paces the evaluations. Each milestone is
read back from the state and the audit, with its time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devhost.demo.story import (
    MODEL,
    DemoOptions,
    DemoResult,
    DemoSession,
    Milestone,
    PhaseResult,
    demo_session,
)

if TYPE_CHECKING:
    from orchestrator.ports import AuditRecord

POLICY_DIR = Path(__file__).resolve().parent / "policies" / "decay"
TIMER_SPEED = 30.0  # the 5-minute maintenance timer fires every 10 s
DRIFT_SHARE = 0.4  # share of the live requests whose feedback label is flipped
FINAL_RUN_STATES = ("completed", "failed", "canceled")


def decay_options(options: DemoOptions) -> DemoOptions:
    """The story's policy and timer speed, unless the caller chose others."""
    if options.policy_dir == DemoOptions.policy_dir:
        options.policy_dir = POLICY_DIR
    if options.timer_speed == DemoOptions.timer_speed:
        options.timer_speed = TIMER_SPEED
    return options


def run_decay_demo(options: DemoOptions) -> DemoResult:
    options = decay_options(options)
    with demo_session(options) as session:
        chapters: list[tuple[str, list[Path]]] = [
            (
                "first model",
                [session.batch("batch-a-1", 0, 120), session.batch("batch-a-2", 120, 240)],
            ),
            (
                "a better model: shadow, canary, production, ring 2",
                [session.batch("batch-b", 240, 420)],
            ),
        ]
        with session.live() as live:
            phases = session.chapters(chapters, live)
            decay = decay_chapter(session, phases[-1], live)
        audit = model_audit(session.runtime)
        return session.finish(
            phases,
            story_milestones(session, phases, decay, audit),
            [record.model_dump(mode="json") for record in audit],
        )


@dataclass
class Decay:
    """What the decay chapter saw in the state: the monitor's healthy verdict on the champion
    (the audit keeps changes of verdict only), when the labels drifted, the run it started."""

    healthy: dict[str, Any]
    drift_at: datetime
    run_id: str
    run: dict[str, Any]


def decay_chapter(session: DemoSession, champion: PhaseResult, live: Any) -> Decay:
    """The monitor finds the champion healthy; the labels drift; it retrains on its own."""
    story = session.story
    assert story is not None
    story.phase = "concept drift: the monitor retrains on its own"
    story.say(f"== {story.phase}")
    healthy = story.wait_until(lambda status: healthy_record(status, champion.version), live)
    story.say(
        f"the monitor finds v{champion.version} healthy; now {DRIFT_SHARE:.0%} of labels flip"
    )
    drift_at = datetime.now(UTC)
    session.traffic.flip_share = DRIFT_SHARE
    run_id = story.wait_until(lambda status: decay_run(status, drift_at), live)
    story.say(f"the monitor started retrain {run_id} by itself")
    run = story.wait_until(lambda status: ended_run(status, run_id), live)
    story.say(f"{run_id} {run['status']}: v{run.get('registered_version')}")
    return Decay(healthy, drift_at, run_id, run)


# ----------------------------------------------------------------------------- what to wait for


def healthy_record(status: dict[str, Any], version: str | None) -> dict[str, Any] | None:
    """The monitor's record, once it has found `version` healthy."""
    record = (status.get("retrain") or {}).get("monitor") or {}
    if record.get("champion_version") == version and record.get("verdict") == "healthy":
        return dict(record)
    return None


def decay_run(status: dict[str, Any], since: datetime) -> str | None:
    """The run the monitor started after `since`, if it has."""
    record = (status.get("retrain") or {}).get("monitor") or {}
    triggered = record.get("triggered_at")
    if triggered and datetime.fromisoformat(triggered) >= since and record.get("triggered_run"):
        return str(record["triggered_run"])
    return None


def ended_run(status: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    for run in (status.get("retrain") or {}).get("runs") or []:
        if run["run_id"] == run_id and run["status"] in FINAL_RUN_STATES:
            return dict(run)
    return None


# ----------------------------------------------------------------------------- the milestones


def model_audit(runtime: Any) -> list[AuditRecord]:
    """The model's whole audit, oldest first (a demo's is short)."""
    records: list[AuditRecord] = []
    continuation = None
    while True:
        page = runtime.queries.audit(MODEL, limit=500, continuation=continuation)
        records.extend(page.records)
        if page.continuation is None:
            return records
        continuation = page.continuation


def promotion_milestone(record: AuditRecord) -> str | None:
    """A promotion's record as a milestone: where it moved, the shadow's and the rings'
    verdicts."""
    detail, state = record.detail, record.to_state
    if record.action == "shadow.skipped":
        return "first model: no shadow (nothing serves to mirror)"
    if record.action == "ring.traffic_moved":
        return f"ring {detail.get('endpoint')}: traffic {detail.get('traffic')}"
    if record.action.startswith("gate.") and str(detail.get("step", "")).startswith("ring-"):
        reasons = "; ".join(str(item.get("reason")) for item in detail.get("evidence", []))
        return f"{detail['step']} judged, {record.action}: {reasons}"
    if record.action.startswith("gate.") and detail.get("step") == "shadow":
        gates = "; ".join(
            f"{item['gate']} {item['outcome']} ("
            + ", ".join(f"{k} {v:.3g}" for k, v in (item.get("values") or {}).items())
            + ")"
            for item in detail.get("evidence", [])
        )
        return f"shadow judged, {record.action}: {gates}"
    if not record.action.startswith("promotion."):
        return None
    if state == "shadow":
        return f"shadow: {detail.get('mirror')}% of live traffic mirrored to the candidate"
    if state == "canary":
        return f"canary: {detail.get('traffic')}% of live traffic on the candidate"
    if state == "ring":
        return f"{detail.get('step')}: deploying on {detail.get('endpoint')}"
    if state in ("production_bake", "completed", "rolled_back", "rejected", "failed"):
        return f"{str(state).replace('_', ' ')} ({detail.get('cause')})"
    return None


def decay_milestone(record: AuditRecord, run_id: str) -> str | None:
    """The model's record of the decay retrain `run_id` as a milestone."""
    detail = record.detail
    if detail.get("run_id") != run_id:
        return None
    if record.action == "monitor.decay_detected":
        return (
            f"v{detail.get('champion_version')} decayed ({detail.get('reason')}); "
            f"retrain {run_id} started by {record.actor}"
        )
    if record.action == "retrain.job_submitted":
        return f"retrain {run_id} submitted"
    if record.to_state in FINAL_RUN_STATES:
        return f"retrain {run_id} {record.to_state}: v{detail.get('registered_version')}"
    return None


def story_milestones(
    session: DemoSession, phases: list[PhaseResult], decay: Decay, audit: list[AuditRecord]
) -> list[Milestone]:
    """Each milestone with its time, from the promotions' and the model's audit."""
    runtime = session.runtime
    found: list[tuple[datetime, str, str]] = []
    for phase in phases:
        if phase.promotion_id:
            for record in runtime.queries.audit_trail(MODEL, phase.promotion_id):
                said = promotion_milestone(record)
                if said is not None:
                    found.append((record.time, f"v{phase.version}", said))
    for record in audit:
        said = decay_milestone(record, decay.run_id)
        if said is not None:
            found.append((record.time, "monitor", said))
    healthy = decay.healthy
    found.append(
        (
            datetime.fromisoformat(healthy["evaluated_at"]),
            "monitor",
            f"v{healthy['champion_version']} healthy ({healthy['reason']})",
        )
    )
    found.append((decay.drift_at, "traffic", f"drift: {DRIFT_SHARE:.0%} of feedback labels flip"))
    found.sort(key=lambda item: item[0])
    assert session.story is not None
    began = session.story.started_at
    return [Milestone((at - began).total_seconds(), what, detail) for at, what, detail in found]
