"""Timer: re-dispatch outbox effects a crash left behind; send again a gate check or approval
timeout overdue (lost, or held in a crashed process's lease); report promotions not moving;
then the production monitor's pass (retrain on decay, orchestrator/monitor.py)."""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
def outbox_sweeper(timer: func.TimerRequest) -> None:
    from orchestrator.bootstrap import get_runtime

    runtime = get_runtime()
    report = runtime.maintenance.sweep()
    log.info(
        "outbox sweep: %d effect(s) re-dispatched, %d overdue check(s) re-sent, "
        "%d promotion(s) stuck%s",
        report["redispatched"],
        len(report["resent_checks"]),
        len(report["stuck"]),
        "".join(
            f"; {s['model']} {s['promotion_id']} {s['status']} since {s['since']}"
            for s in report["stuck"]
        ),
    )
    for drift in report.get("drift", []):
        log.warning("reconcile: %s endpoint drift: %s", drift["model"], drift["summary"])
    for release in report.get("releasing", []):
        left = "not yet counted" if release["left"] is None else f"{release['left']} items left"
        log.info("sweep: still releasing %s %s: %s", release["model"], release["run_id"], left)
    for run_id in report.get("overdue_jobs", []):
        log.warning("outbox sweep: training job %s is past max_job_duration: checked", run_id)
    for failure in report.get("failed", []):
        # Retried on the next sweep; an error here means an effect keeps failing.
        log.error(
            "outbox sweep: %s could not be dispatched: %s", failure["model"], failure["error"]
        )
    # After the sweep: a decay retrain's submit goes out through the outbox just swept.
    monitored = runtime.monitor.run()
    for started in monitored.triggered:
        log.warning(
            "monitor: %s decayed (%s): retrain %s started",
            started["model"],
            started["reason"],
            started["run_id"],
        )
    for failure in monitored.failed:
        log.error("monitor: %s could not be evaluated: %s", failure["model"], failure["error"])
