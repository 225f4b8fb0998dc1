"""Contention: 16 workers handling one model's messages at once lose no update (issue 8,
item 3).

v1 serves; v2 waits for approval. Then 16 workers (threads, each its own process: its own
Runtime and clients, as separate Functions instances would be) handle, in a shuffled order,
their own data-landed batches (one of them delivered twice), an approval of v2 each (one can
win; the rest must be refused, not lost) and a stale gate check each. Every write is an
ETag-conditioned update of the one aggregate blob on Azurite.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import pytest

from adapters.local_issuer import LocalIssuer
from orchestrator.handlers import Outcome
from orchestrator.messages import Envelope
from orchestrator.ports import ConcurrencyConflict
from orchestrator.signing import MessageSigner
from promotion.commands import ApprovalDecision, GateCheck
from retrain.commands import DataItem
from tests.faults.flow_harness import (  # noqa: F401
    APPROVER,
    Process,
    World,
    collecting,
    flow_policy,
    flow_settings_fixture,
    landed,
    make_runtime,
    seed_champion,
)

MODEL = "ads"
WORKERS = 16
BATCHES = 4  # data-landed batches per worker
BATCH_SIZE = 5  # new files per batch
KEEP = timedelta(days=30)  # how long the data ledger remembers a key


def messages_for(
    worker: int, promotion_id: str, rng: random.Random, token: str, signer: MessageSigner
) -> list[Envelope]:
    """`token`: the approver's bearer token (every worker receives the same person's answer);
    `signer`: the app's, for the stale check the app once sent."""
    batches = [landed(MODEL, worker, batch, BATCH_SIZE) for batch in range(BATCHES)]
    approval = Envelope.new(
        "ApprovalDecision",
        MODEL,
        ApprovalDecision(
            promotion_id=promotion_id,
            step="approval",
            candidate_version="2",
            decision="approve",
            approver=APPROVER,
            comment=f"worker {worker}",
        ),
        message_id=f"approval-from-worker-{worker}",
    ).model_copy(update={"auth": token})
    stale_check = signer.sign(  # the app's own (stale) check: signed
        Envelope.new(
            "GateCheck",
            MODEL,
            GateCheck(promotion_id=promotion_id, step="approval", check_id=f"old-check-{worker}"),
            message_id=f"stale-check-from-worker-{worker}",
        )
    )
    messages = [*batches, approval, stale_check, rng.choice(batches)]  # one batch twice
    rng.shuffle(messages)
    return messages


def test_sixteen_workers_on_one_model_lose_no_update(
    flow_settings: Any, request: pytest.FixtureRequest
) -> None:
    settings = flow_settings({MODEL: flow_policy(MODEL)})
    world = World()
    world.auto_approve = False
    arranging = Process(settings, world)
    seed_champion(arranging, world, MODEL)
    arranging.handlers.handle(
        arranging.runtime.signer.sign(
            Envelope.new("StartPromotion", MODEL, {"candidate_version": "2"}, message_id="start-v2")
        )
    )
    before = arranging.aggregate(MODEL)
    promotion = before.promotion.active
    assert promotion is not None and promotion.status == "awaiting_approval"

    rng = random.Random(8)
    token = LocalIssuer(settings.local_issuer_dir).mint(APPROVER)
    signer = arranging.runtime.signer
    plans = [messages_for(worker, promotion.id, rng, token, signer) for worker in range(WORKERS)]
    processes = [Process(settings, world) for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)
    results: list[list[tuple[Envelope, Outcome]]] = [[] for _ in range(WORKERS)]
    conflicts = Counter[int]()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for envelope in plans[worker]:
                for _attempt in range(10):  # a transport redelivers a message that failed
                    try:
                        outcome = processes[worker].handlers.handle(envelope)
                    except ConcurrencyConflict:
                        conflicts[worker] += 1
                        continue
                    results[worker].append((envelope, outcome))
                    break
                else:
                    raise AssertionError(f"{envelope.message_id}: conflicts ten times in a row")
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    assert errors == []
    assert all(len(results[n]) == len(plans[n]) for n in range(WORKERS))

    # Nothing left behind: a last dispatch (the timer's sweep) finds nothing to do.
    survivor = Process(settings, world)
    assert survivor.maintenance.sweep()["redispatched"] == 0
    after = survivor.aggregate(MODEL)
    assert after.outbox == [] and after.pending_audit == []

    # 1. Every data key, once.
    keys = {
        item["key"]
        for plan in plans
        for envelope in plan
        if envelope.type == "DataLanded"
        for item in envelope.payload["items"]
    }
    assert len(keys) == WORKERS * BATCHES * BATCH_SIZE
    pending = survivor.ports.ledger.pending(MODEL)
    assert pending.items == len(keys)
    # Each key claimed once: sent again by another message, every one is a duplicate.
    items = [DataItem(uri=f"https://x/{n}", key=key) for n, key in enumerate(sorted(keys))]
    assert survivor.ports.ledger.claim(MODEL, items, "again", world.clock(), KEEP) == []

    # 2. Versions: every write got the next version, none twice, none skipped; each worker
    # saw them increase.
    written = sorted(v for process in processes for v in process.written_versions)
    assert written == list(range(before.version + 1, after.version + 1))
    for worker_results in results:
        seen = [outcome.version for _, outcome in worker_results]
        assert seen == sorted(seen)
        # (Data an open window carries writes nothing: its outcome repeats the version read.)
        applied = [
            outcome.version
            for envelope, outcome in worker_results
            if outcome.status == "applied" and envelope.type != "DataLanded"
        ]
        assert len(applied) == len(set(applied))

    # 3. One audit record per applied change, each message applied once.
    records = [r for r in survivor.audit(MODEL) if r.aggregate_version > before.version]
    by_cause: dict[str, list[str]] = defaultdict(list)
    versions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        by_cause[str(record.cause_id)].append(record.action)
        versions[str(record.cause_id)].add(record.aggregate_version)
    assert all(len(v) == 1 for v in versions.values()), versions
    data_ids = {e.message_id for plan in plans for e in plan if e.type == "DataLanded"}
    # One data message opened the window; the others wrote nothing (the window carries them).
    [opener] = [message_id for message_id in data_ids if by_cause[message_id]]
    assert by_cause[opener] == ["retrain.data_accumulated", "retrain.window_opened"]
    assert sum(actions.count("retrain.window_opened") for actions in by_cause.values()) == 1
    approvals = [by_cause[f"approval-from-worker-{n}"] for n in range(WORKERS)]
    assert sorted(approvals) == sorted(
        [["promotion.deploying"]] + [["approval.refused"]] * (WORKERS - 1)
    )
    for n in range(WORKERS):
        assert by_cause[f"stale-check-from-worker-{n}"] == ["command.ignored"]
    assert len(records) == 2 + WORKERS + WORKERS
    record_ids = [r.record_id for r in records]
    assert len(record_ids) == len(set(record_ids))

    # The winning approval moved the promotion on, once: one deployment of v2.
    active = after.promotion.active
    assert active is not None and active.status == "deploying"
    assert active.approval is not None and active.approval.approver == APPROVER
    assert world.endpoint.creations == Counter({"ads-v2": 1})

    with collecting(request.node.nodeid) as figures:
        figures["workers"] = WORKERS
        figures["concurrent_messages"] = sum(len(plan) for plan in plans)
        figures["data_keys"] = len(keys)
        figures["audit_records"] = len(records)
    refused = sum(process.conflicts for process in processes)
    assert refused > 0, "the workers never collided: no contention was tested"
    print(
        f"writes: {len(written)}; conditional writes refused and re-applied: {refused}; "
        f"messages retried after the store gave up: {sum(conflicts.values())}"
    )
