"""The timer's sweep: re-dispatch outboxes a crash or a failing target left behind, check
training jobs past their `max_job_duration` (so a lost check chain cannot keep a model from
training for ever), send again a gate check or approval timeout overdue by more than
`OVERDUE_CHECK_SECONDS` (so a crash in the middle of one costs a sweep, not a lease), report
promotions that have not moved for `max_time_in_state`, go on releasing the data of runs
submitted since (bounded per sweep: `release_chunks_per_sweep` and `release_seconds_per_sweep`),
then reconcile every endpoint with the state (orchestrator/reconcile.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator.handlers import sweep_stranded_data
from orchestrator.outbox import Outbox
from orchestrator.ports import Ports
from orchestrator.reconcile import Reconciler
from promotion.machine import overdue_message
from retrain.decide import overdue_check

log = logging.getLogger(__name__)

# What one sweep spends on releasing submitted runs' data: chunks of `Outbox.release_chunk`
# items per model (in Azure one batch request each: 10,240 items), and no new chunk past
# this many seconds, whatever the storage's speed (the function times out at 5 minutes).
RELEASE_CHUNKS_PER_SWEEP = 40
RELEASE_SECONDS_PER_SWEEP = 60.0


class Maintenance:
    def __init__(self, ports: Ports, outbox: Outbox, reconciler: Reconciler | None = None) -> None:
        self.ports = ports
        self.outbox = outbox
        self.reconciler = reconciler
        self.release_chunks_per_sweep = RELEASE_CHUNKS_PER_SWEEP
        self.release_seconds_per_sweep = RELEASE_SECONDS_PER_SWEEP

    def sweep(self) -> dict[str, Any]:
        """One pass over every model. One model whose effects keep failing (its outbox is
        retried on the next sweep) never stops the sweep for the others: it is reported under
        "failed"."""
        now = self.ports.clock()
        redispatched = 0
        stuck: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        overdue_jobs: list[str] = []
        resent: list[str] = []
        models = list(self.ports.store.list_keys())
        for model in models:
            try:
                redispatched += self.outbox.dispatch(model)
            except Exception as exc:
                log.exception("outbox sweep: dispatching %s failed", model)
                failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
            try:
                aggregate, _ = self.ports.store.load(model)
            except Exception as exc:
                log.exception("outbox sweep: cannot read %s", model)
                if not failed or failed[-1]["model"] != model:
                    failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
                continue
            failing = [item for item in aggregate.outbox if item.failed_attempts]
            if failing and not any(entry["model"] == model for entry in failed):
                # Failing effects of targets that do not hold the dispatch up (a tag, an
                # event): reported all the same, so an operator sees them.
                first = failing[0]
                failed.append(
                    {
                        "model": model,
                        "error": f"{first.effect.kind} failed {first.failed_attempts} time(s): "
                        f"{first.last_error}",
                    }
                )
            policy = self.ports.policies.get(model)
            if policy is None:
                continue
            sweep_stranded_data(self.ports, self.outbox, model, policy, aggregate)
            overdue = overdue_check(aggregate.retrain, policy, now)
            if overdue is not None:
                log.warning("training job of %s is past max_job_duration: checking it", model)
                self.outbox.send(model, overdue, aggregate.version, aggregate.change_trace)
                overdue_jobs.append(str(overdue.payload["run_id"]))
            active = aggregate.promotion.active
            if active is None:
                continue
            late = overdue_message(aggregate.promotion, now, self.ports.overdue_check_grace)
            if late is not None:
                log.warning("%s of %s is overdue: sent again", late.message_type, model)
                try:
                    self.outbox.send(model, late, aggregate.version, aggregate.change_trace)
                    resent.append(late.message_id)
                except Exception as exc:
                    failed.append({"model": model, "error": f"{type(exc).__name__}: {exc}"})
            if now - active.updated_at > policy.max_time_in_state:
                stuck.append(
                    {
                        "model": model,
                        "promotion_id": active.id,
                        "status": str(active.status),
                        "since": active.updated_at.isoformat(),
                    }
                )
                log.warning(
                    "promotion %s of %s has been %s since %s",
                    active.id,
                    model,
                    active.status,
                    active.updated_at.isoformat(),
                )
        # After every model's other duties, so a long release never delays a check.
        releasing = self._continue_releases(models, failed)
        report: dict[str, Any] = {
            "redispatched": redispatched,
            "stuck": stuck,
            "failed": failed,
            "overdue_jobs": overdue_jobs,
            "resent_checks": resent,
            "releasing": releasing,
            "drift": [],
        }
        if self.reconciler is not None:
            reconciled = self.reconciler.reconcile()
            report["drift"] = reconciled.drifted
            report["failed"] += [
                {"model": f["model"], "error": f"reconcile: {f['error']}"}
                for f in reconciled.failed
            ]
        return report

    def _continue_releases(
        self, models: list[str], failed: list[dict[str, str]]
    ) -> list[dict[str, Any]]:
        """Go on releasing the data of submitted runs (a submit's dispatch releases only its
        first chunk): at most `release_chunks_per_sweep` chunks per model, none started past
        `release_seconds_per_sweep`. Returns the runs still releasing, with how many items
        are left; a failure is reported and the next sweep goes on from the last chunk."""
        ledger, chunk = self.ports.ledger, self.outbox.release_chunk
        deadline = time.monotonic() + self.release_seconds_per_sweep
        unfinished: list[dict[str, Any]] = []
        for model in models:
            try:
                runs = ledger.releasing(model)
                chunks = 0
                for run_id in runs:
                    left = None
                    while left != 0:
                        if chunks >= self.release_chunks_per_sweep or time.monotonic() > deadline:
                            break
                        left = ledger.release(model, run_id, chunk)
                        chunks += 1
                    if left != 0:
                        unfinished.append({"model": model, "run_id": run_id, "left": left})
            except Exception as exc:
                log.exception("sweep: releasing the data of %s failed", model)
                failed.append({"model": model, "error": f"release: {type(exc).__name__}: {exc}"})
        return unfinished
