"""In-memory fakes of our own ports (orchestrator/ports.py), honest enough to catch real bugs,
and `fake_runtime`: the production bootstrap with every port replaced by one of them.

- `InMemoryStateStore`: real ETag semantics (a stale ETag or a create over an existing key
  raises `ConcurrencyConflict`), `update` with bounded retry that bumps `version` as
  adapters/blob_state.py does, aggregates kept as JSON (nothing a caller holds aliases the
  stored state). Counts loads and saves; `interleave` runs another writer between a load
  and the save that follows it.
- `InMemoryAuditLog`: append idempotent by (model, version, seq); pages in order (`read`:
  everything, for tests).
- `InMemoryBus`: send, schedule and cancel; `due(now)` takes what a transport would deliver
  by then; `sent` keeps everything ever sent.
- `FakeTrainingBackend`, `FakeEndpoint` (enforces `adapters.traffic_rules`), `FakeMetrics`,
  `RecordingRegistry`, `RecordingEvents`.

Every fake takes injected failures: `fake.faults.fail("method", exc, ...)` makes the next
calls of that method raise those exceptions, in order.

Nothing here opens a network connection or needs Azurite.
"""

from __future__ import annotations

import atexit
import itertools
import json
import shutil
import tempfile
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from adapters.local_issuer import LocalIssuer
from adapters.traffic_rules import (
    check_deployment_name,
    live_only,
    mirror_after_traffic,
    validate_traffic,
)
from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics, ShadowMetrics
from domain.naming import deployment_name
from domain.policy import ModelPolicy, parse_policy
from orchestrator.aggregate import ModelAggregate
from orchestrator.bootstrap import Runtime, bootstrap
from orchestrator.handlers import Outcome
from orchestrator.messages import Envelope
from orchestrator.ports import (
    MAX_AUDIT_PAGE,
    RUN_ENDED_ACTIONS,
    ArmWindow,
    AuditPage,
    AuditRecord,
    ConcurrencyConflict,
    DeploymentBusy,
    DeploymentStatus,
    EndpointError,
    InvalidContinuation,
    InvalidTraffic,
    JobStatus,
    ScheduledHandle,
    TrainingBackendError,
    TrainingRequest,
)
from orchestrator.settings import Settings
from orchestrator.signing import INTERNAL_TYPES, MessageSigner
from promotion.commands import StartPromotion
from promotion.state import PromotionState, ServingModel
from retrain.commands import DATA_SAMPLE, DataItem, PendingData
from tests.harness import RecordingTrainingBackend, policy_yaml
from triggers.envelopes import data_landed_envelope

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

__all__ = [
    "START",
    "FakeClock",
    "FakeEndpoint",
    "FakeMetrics",
    "FakeTrainingBackend",
    "FakeWorld",
    "Faults",
    "InMemoryAuditLog",
    "InMemoryBus",
    "InMemoryDataLedger",
    "InMemoryStateStore",
    "RecordingDeadLetters",
    "RecordingEvents",
    "RecordingRegistry",
    "Scheduled",
    "data_items",
    "fake_runtime",
    "fake_settings",
    "landed",
    "message",
    "policy_yaml",
    "start_promotion",
]


# --------------------------------------------------------------------------- faults and time


class Faults:
    """Failures to inject: `fail("submit", exc1, exc2)` makes the next two `submit` calls raise
    exc1 then exc2 (a None lets that call through: `fail("save", None, exc)` fails the second
    save); `fail_always("submit", exc)` until `clear("submit")`."""

    def __init__(self) -> None:
        self._next: dict[str, deque[BaseException | None]] = defaultdict(deque)
        self._always: dict[str, BaseException] = {}
        self.raised: Counter[str] = Counter()

    def fail(self, method: str, *errors: BaseException | None) -> None:
        self._next[method].extend(errors)

    def fail_always(self, method: str, error: BaseException) -> None:
        self._always[method] = error

    def clear(self, method: str | None = None) -> None:
        if method is None:
            self._next.clear()
            self._always.clear()
        else:
            self._next.pop(method, None)
            self._always.pop(method, None)

    def check(self, method: str) -> None:
        queued = self._next.get(method)
        if queued:
            error = queued.popleft()
            if error is not None:
                self.raised[method] += 1
                raise error
            return
        if method in self._always:
            self.raised[method] += 1
            raise self._always[method]


class FakeClock:
    """The injected clock; only tests move it (never backwards)."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | float = 0) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        assert delta >= timedelta(0), "the clock never goes back"
        self.now += delta
        return self.now

    def advance_to(self, when: datetime) -> datetime:
        self.now = max(self.now, when)
        return self.now


# --------------------------------------------------------------------------- state and audit


class InMemoryStateStore:
    """The StateStore port with the Blob adapter's semantics, in a dict of JSON documents."""

    def __init__(
        self,
        aggregate_type: type[ModelAggregate] = ModelAggregate,
        new_aggregate: Callable[[str], ModelAggregate] = ModelAggregate.new,
        *,
        max_attempts: int = 20,
    ) -> None:
        self._type = aggregate_type
        self._new = new_aggregate
        self._max_attempts = max_attempts
        self._documents: dict[str, tuple[str, str]] = {}  # key -> (JSON, ETag)
        self._etags = itertools.count(1)
        self._interleaved: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._writing = False
        self.faults = Faults()
        self.loads: Counter[str] = Counter()
        self.saves: list[tuple[str, ModelAggregate]] = []  # every successful write, in order
        self.conflicts: Counter[str] = Counter()  # refused conditional writes, by key
        self.journal: list[tuple[str, str]] = []  # ("load" | "save" | "conflict", key)

    # -- the port

    def load(self, key: str) -> tuple[ModelAggregate, str | None]:
        self.faults.check("load")
        self.loads[key] += 1
        self.journal.append(("load", key))
        stored = self._documents.get(key)
        result = (
            (self._new(key), None)
            if stored is None
            else (self._type.model_validate_json(stored[0]), stored[1])
        )
        # Another writer between this read and the caller's save (see `interleave`); its own
        # loads run no other writer.
        pending = self._interleaved.get(key)
        if pending and not self._writing:
            writer = pending.pop(0)
            self._writing = True
            try:
                writer()
            finally:
                self._writing = False
        return result

    def save(self, key: str, aggregate: ModelAggregate, etag: str | None) -> str:
        self.faults.check("save")
        stored = self._documents.get(key)
        if (etag is None and stored is not None) or (
            etag is not None and (stored is None or stored[1] != etag)
        ):
            self.conflicts[key] += 1
            self.journal.append(("conflict", key))
            raise ConcurrencyConflict(f"{key} changed since it was read")
        new_etag = f'"0x{next(self._etags):08X}"'
        document = aggregate.model_dump_json()
        self._documents[key] = (document, new_etag)
        self.saves.append((key, self._type.model_validate_json(document)))
        self.journal.append(("save", key))
        return new_etag

    def update(
        self,
        key: str,
        change: Callable[[ModelAggregate], ModelAggregate | None],
        loaded: tuple[ModelAggregate, str | None] | None = None,
    ) -> tuple[ModelAggregate, bool]:
        for attempt in range(self._max_attempts):
            if attempt == 0 and loaded is not None:
                current, etag = loaded
            else:
                current, etag = self.load(key)
            changed = change(current)
            if changed is None:
                return current, False
            bumped = changed.model_copy(update={"version": current.version + 1})
            try:
                self.save(key, bumped, etag)
            except ConcurrencyConflict:
                continue
            return bumped, True
        raise ConcurrencyConflict(f"{key}: gave up after {self._max_attempts} conflicting writes")

    def list_keys(self) -> list[str]:
        self.faults.check("list_keys")
        return sorted(self._documents)

    # -- for tests

    def peek(self, key: str) -> ModelAggregate:
        """The stored aggregate (a fresh one if none), without counting a load."""
        stored = self._documents.get(key)
        return self._new(key) if stored is None else self._type.model_validate_json(stored[0])

    def exists(self, key: str) -> bool:
        return key in self._documents

    def etag(self, key: str) -> str | None:
        stored = self._documents.get(key)
        return stored[1] if stored else None

    def interleave(self, key: str, writer: Callable[[], None]) -> None:
        """Run `writer` (another process writing) right after the next load of `key` has read
        its snapshot: the caller of that load then saves against a stale ETag. Writers queued
        for a key run one per load, in order."""
        self._interleaved[key].append(writer)

    def seed(self, key: str, change: Callable[[ModelAggregate], ModelAggregate]) -> ModelAggregate:
        """Arrange a stored state (a normal conditional write, not counted as the test's)."""
        aggregate, _ = self.update(key, change)
        self.reset_counts()
        return aggregate

    def reset_counts(self) -> None:
        self.loads.clear()
        self.saves.clear()
        self.conflicts.clear()
        self.journal.clear()


class InMemoryDataLedger:
    """The DataLedger port with adapters/data_ledger.py's semantics (claims by message, a
    redelivery counting only what is still pending, retention by seen time, first-writer
    manifests, release in chunks that hides a manifest's items from its first chunk), kept in
    dicts. `keys` and `seed_keys` let a test fill it with a million keys quickly; `stored`
    counts the pending entries not yet deleted (hidden or not)."""

    def __init__(self) -> None:
        # model -> key -> (claimant, seen at)
        self.keys: dict[str, dict[str, tuple[str, datetime]]] = defaultdict(dict)
        self._pending: dict[str, dict[str, tuple[DataItem, datetime, int]]] = defaultdict(dict)
        self.manifests: dict[tuple[str, str], list[DataItem]] = {}
        self.released: set[tuple[str, str]] = set()
        self._releasing: dict[tuple[str, str], int] = {}  # run -> items released so far
        self._order = itertools.count()
        self.faults = Faults()
        self.claims = 0

    def seed_keys(self, model: str, keys: Iterable[str], seen_at: datetime) -> None:
        self.keys[model].update((key, ("seed", seen_at)) for key in keys)

    def claim(
        self,
        model: str,
        items: Sequence[DataItem],
        claimant: str,
        now: datetime,
        keep_for: timedelta,
    ) -> list[DataItem]:
        self.faults.check("claim")
        self.claims += 1
        keys = self.keys[model]
        counted: list[DataItem] = []
        batch: set[str] = set()
        for item in items:
            if item.key in batch:
                continue
            batch.add(item.key)
            known = keys.get(item.key)
            if item.key in self._pending[model] and item.key in self._taken(model):
                continue  # a job has taken it: a duplicate, whoever claims it now
            if known is not None and now - known[1] > keep_for:
                known = None  # past the retention window: forgotten
            if known is None:
                keys[item.key] = (claimant, now)
                self._pending[model].setdefault(item.key, (item, now, next(self._order)))
            elif (
                known[0] != claimant
                or item.key not in self._pending[model]
                or item.key in self._taken(model)
            ):
                continue  # another message's key, or an item a job has taken
            counted.append(item)
        return counted

    def _taken(self, model: str) -> set[str]:
        return {
            item.key for run_id in self.releasing(model) for item in self.manifests[model, run_id]
        }

    def _untaken(self, model: str) -> list[tuple[DataItem, datetime, int]]:
        taken = self._taken(model)
        return [entry for key, entry in self._pending[model].items() if key not in taken]

    def _oldest(self, model: str) -> list[DataItem]:
        entries = sorted(self._untaken(model), key=lambda entry: (entry[1], entry[2]))
        return [item for item, _, _ in entries]

    def stored(self, model: str) -> int:
        return len(self._pending[model])

    def pending(self, model: str) -> PendingData:
        self.faults.check("pending")
        items = self._oldest(model)
        rows: int | None = 0
        for item in items:
            rows = None if rows is None or item.rows is None else rows + item.rows
        landed = [entry[1] for entry in self._untaken(model)]
        return PendingData(
            items=len(items),
            rows=rows,
            sample=[item.uri for item in items[:DATA_SAMPLE]],
            newest_landed_at=max(landed, default=None),
        )

    def seal(self, model: str, run_id: str, limit: int) -> list[str]:
        self.faults.check("seal")
        self.manifests.setdefault((model, run_id), self._oldest(model)[:limit])
        return self.manifest(model, run_id) or []

    def manifest(self, model: str, run_id: str) -> list[str] | None:
        sealed = self.manifests.get((model, run_id))
        return None if sealed is None else list(dict.fromkeys(item.uri for item in sealed))

    def release(self, model: str, run_id: str, limit: int) -> int:
        if limit < 1:
            raise ValueError(f"release limit must be at least 1, not {limit}")
        self.faults.check("release")
        run = (model, run_id)
        sealed = self.manifests.get(run)
        if sealed is None or run in self.released:
            self._releasing.pop(run, None)
            return 0
        done = self._releasing.setdefault(run, 0)  # from here on its items are hidden
        for item in sealed[done : done + limit]:
            self._pending[model].pop(item.key, None)
        done = min(len(sealed), done + limit)
        if done < len(sealed):
            self._releasing[run] = done
            return len(sealed) - done
        self.released.add(run)
        del self._releasing[run]
        return 0

    def releasing(self, model: str) -> list[str]:
        return sorted(run_id for name, run_id in self._releasing if name == model)


class InMemoryAuditLog:
    """The AuditLog port: append-only, idempotent by (model, aggregate version, seq)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int, int], str] = {}
        self.faults = Faults()
        self.appends = 0  # records actually written (not the repeats)

    def append(self, records: Sequence[AuditRecord]) -> None:
        self.faults.check("append")
        for record in records:
            key = (record.model, record.aggregate_version, record.seq)
            if key not in self._records:
                self._records[key] = record.model_dump_json()
                self.appends += 1

    def read(self, model: str, since_version: int = 0) -> list[AuditRecord]:
        """Every record of `model` (tests only: the app reads pages)."""
        self.faults.check("read")
        return [
            AuditRecord.model_validate_json(document)
            for (name, version, _), document in sorted(self._records.items())
            if name == model and version >= since_version
        ]

    def page(
        self,
        model: str,
        *,
        promotion_id: str | None = None,
        run_ends: bool = False,
        limit: int = 100,
        continuation: str | None = None,
    ) -> AuditPage:
        """The port's pages; the token is a version cursor bound to the query."""
        self.faults.check("page")
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValueError(f"limit must be 1..{MAX_AUDIT_PAGE}, not {limit}")
        query = f"{model}|{promotion_id or ''}|{run_ends}"
        after = (-1, -1)
        if continuation is not None:
            cursor_query, _, cursor = continuation.rpartition("@")
            if cursor_query != query:
                raise InvalidContinuation("continuation: not a token of this query")
            try:
                version, seq = (int(part) for part in cursor.split("-"))
            except ValueError as exc:
                raise InvalidContinuation("continuation: not a token this API gave") from exc
            after = (version, seq)
        selected = [
            record
            for record in self.read(model)
            if (record.aggregate_version, record.seq) > after
            and (promotion_id is None or record.promotion_id == promotion_id)
            and (not run_ends or record.action in RUN_ENDED_ACTIONS)
        ]
        records = selected[:limit]
        more = len(selected) > limit
        return AuditPage(
            records=records,
            continuation=f"{query}@{records[-1].record_id}" if more else None,
        )

    def actions(self, model: str) -> list[str]:
        return [record.action for record in self.read(model)]


# --------------------------------------------------------------------------- the bus


@dataclass
class Scheduled:
    """One message on the bus: sent now (`not_before` None) or scheduled."""

    envelope: Envelope
    not_before: datetime | None
    seq: int
    handle: ScheduledHandle | None = None
    canceled: bool = False
    delivered: bool = False


class InMemoryBus:
    """The MessageBus port: `send`, `schedule` (→ handle) and `cancel`. Tests take what a
    transport would deliver by `now` with `due(now)`; `sent` keeps everything, in order."""

    def __init__(self) -> None:
        self.sent: list[Scheduled] = []
        self.faults = Faults()
        self._seq = itertools.count(1)

    def send(self, envelope: Envelope) -> None:
        self.faults.check("send")
        self.sent.append(Scheduled(_copy(envelope), None, next(self._seq)))

    def schedule(self, envelope: Envelope, at: datetime) -> ScheduledHandle:
        self.faults.check("schedule")
        seq = next(self._seq)
        handle = ScheduledHandle(transport="memory", value=str(seq))
        self.sent.append(Scheduled(_copy(envelope), at, seq, handle))
        return handle

    def cancel(self, handle: ScheduledHandle) -> None:
        """Cancel a scheduled message; one already delivered (or unknown) is fine."""
        self.faults.check("cancel")
        for item in self.sent:
            if item.handle == handle and not item.delivered:
                item.canceled = True

    # -- for tests

    @property
    def pending(self) -> list[Scheduled]:
        """Not yet delivered nor canceled, in delivery order."""
        items = [item for item in self.sent if not item.delivered and not item.canceled]
        return sorted(items, key=_delivery_order)

    def due(self, now: datetime) -> list[Envelope]:
        """Take (mark delivered) every pending message due at `now`, in delivery order."""
        taken = [item for item in self.pending if item.not_before is None or item.not_before <= now]
        for item in taken:
            item.delivered = True
        return [item.envelope for item in taken]

    def next_due_at(self) -> datetime | None:
        """When the earliest pending scheduled message is due (None: nothing scheduled)."""
        times = [item.not_before for item in self.pending if item.not_before is not None]
        return min(times) if times else None

    def envelopes(self, message_type: str | None = None) -> list[Envelope]:
        """Everything ever sent or scheduled (of one type), in send order."""
        return [
            item.envelope
            for item in self.sent
            if message_type is None or item.envelope.type == message_type
        ]

    def scheduled_for(self, message_id: str) -> list[datetime | None]:
        return [item.not_before for item in self.sent if item.envelope.message_id == message_id]


def _delivery_order(item: Scheduled) -> tuple[datetime, int]:
    return (item.not_before or datetime.min.replace(tzinfo=UTC), item.seq)


def _copy(envelope: Envelope) -> Envelope:
    # What a transport carries is bytes: the receiver never shares objects with the sender.
    return Envelope.model_validate_json(envelope.to_bytes())


# --------------------------------------------------------------------------- outside systems


class FakeTrainingBackend(RecordingTrainingBackend):
    """The TrainingBackend port: records submissions (harness's RecordingTrainingBackend); a
    job is "queued" until a test moves it (`start`, `finish`, `fail`), or, with
    `auto_complete`, reads "running" once and then "completed" with the next version.
    An unknown job is refused permanently, as the real backends do."""

    def __init__(self, *, auto_complete: bool = False, first_version: int = 1) -> None:
        super().__init__()
        self.faults = Faults()
        self.auto_complete = auto_complete
        self._next_version = first_version
        self.versions: dict[str, str] = {}
        self.status_reads: Counter[str] = Counter()

    def submit(self, request: TrainingRequest) -> str:
        self.faults.check("submit")
        if request.run_id not in self.versions:
            self.versions[request.run_id] = str(self._next_version)
            self._next_version += 1
        return super().submit(request)

    def status(self, job_id: str) -> JobStatus:
        self.faults.check("status")
        self.status_reads[job_id] += 1
        if job_id not in self.states:
            raise TrainingBackendError(f"job {job_id!r} not found")
        if self.auto_complete and self.states[job_id].state in ("queued", "running"):
            if self.status_reads[job_id] > 1:
                self.finish(job_id, self.versions[job_id])
            else:
                self.start(job_id)
        return self.states[job_id]

    def cancel(self, job_id: str) -> None:
        self.faults.check("cancel")
        super().cancel(job_id)

    def start(self, run_id: str) -> None:
        self.states[run_id] = JobStatus(job_id=run_id, state="running")

    def fail(self, run_id: str, error: str) -> None:
        self.states[run_id] = JobStatus(job_id=run_id, state="failed", error=error)

    def submissions_of(self, run_id: str) -> int:
        return sum(1 for request in self.submissions if request.run_id == run_id)


@dataclass
class FakeDeployment:
    model: str
    version: str
    state: Literal["creating", "succeeded", "failed"] = "creating"
    reads: int = 0


class FakeEndpoint:
    """The OnlineEndpoint port in memory, with the rules a real endpoint applies.

    A new deployment reads "creating" for `creating_reads` state reads, then "succeeded" (or
    "failed" for a version in `failing_versions`). Deploying an existing, not failed
    deployment of the same version sends nothing. Traffic goes through
    `adapters.traffic_rules.validate_traffic` against the existing deployments, and live
    traffic only to a succeeded one; a mirror on a deployment that becomes live is dropped.
    Deleting a deployment that shares the live traffic (or is mirrored to) is refused;
    `busy_deletes` makes the next deletes raise DeploymentBusy (an update in progress).
    Every refusal is also recorded in `violations`: tests of correct flows assert it is empty.
    """

    def __init__(self, *, creating_reads: int = 1) -> None:
        self.creating_reads = creating_reads
        self.deployed: dict[str, FakeDeployment] = {}
        self.live: dict[str, int] = {}
        self.mirror_map: dict[str, int] = {}
        self.failing_versions: set[str] = set()
        self.busy_deletes = 0
        self.faults = Faults()
        self.deploy_calls: Counter[str] = Counter()
        self.creations: Counter[str] = Counter()
        self.traffic_maps: list[dict[str, int]] = []
        self.deletes: list[str] = []
        self.violations: list[str] = []

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        self.faults.check("deploy")
        check_deployment_name(deployment)
        self.deploy_calls[deployment] += 1
        existing = self.deployed.get(deployment)
        if (
            existing is not None
            and existing.version == str(model_version)
            and existing.state != "failed"
        ):
            return deployment
        self.creations[deployment] += 1
        self.deployed[deployment] = FakeDeployment(model_name, str(model_version))
        return deployment

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        self.faults.check("deployment_state")
        found = self.deployed.get(deployment)
        if found is None:
            return DeploymentStatus(deployment, "missing")
        found.reads += 1
        if found.state == "creating" and found.reads > self.creating_reads:
            found.state = "failed" if found.version in self.failing_versions else "succeeded"
        error = "container crashed: ImportError" if found.state == "failed" else None
        return DeploymentStatus(deployment, found.state, error, found.model, found.version)

    def set_traffic(self, traffic: dict[str, int]) -> None:
        self.faults.check("set_traffic")
        self.traffic_maps.append(dict(traffic))
        mirror = mirror_after_traffic(traffic, self.mirror_map)
        try:
            validate_traffic(traffic, mirror, existing=set(self.deployed))
            for name, weight in traffic.items():
                if weight > 0 and self.deployed[name].state != "succeeded":
                    raise InvalidTraffic(
                        f"cannot send live traffic to {name}: it is "
                        f"{self.deployed[name].state}, not succeeded"
                    )
        except InvalidTraffic as exc:
            self.violations.append(f"set_traffic {traffic}: {exc.reason}")
            raise
        self.live = live_only(traffic)
        self.mirror_map = mirror

    def set_mirror(self, mirror: dict[str, int]) -> None:
        self.faults.check("set_mirror")
        try:
            validate_traffic(self.live or {}, mirror, existing=set(self.deployed))
        except InvalidTraffic as exc:
            self.violations.append(f"set_mirror {mirror}: {exc.reason}")
            raise
        self.mirror_map = live_only(mirror)

    def delete(self, deployment: str) -> None:
        self.faults.check("delete")
        check_deployment_name(deployment)
        self.deletes.append(deployment)
        if self.busy_deletes > 0:
            self.busy_deletes -= 1
            raise DeploymentBusy(f"endpoint is updating: {deployment} is deleted afterwards")
        if deployment not in self.deployed:
            return
        others_live = any(weight for name, weight in self.live.items() if name != deployment)
        if (self.live.get(deployment) and others_live) or self.mirror_map.get(deployment):
            self.violations.append(f"delete {deployment} while live={self.live}")
            raise EndpointError(
                f"deployment {deployment} takes traffic ({self.live}); move the traffic first",
                transient=True,
            )
        del self.deployed[deployment]
        self.live.pop(deployment, None)
        self.mirror_map.pop(deployment, None)

    def traffic(self) -> dict[str, int]:
        self.faults.check("traffic")
        return dict(self.live)

    def mirror(self) -> dict[str, int]:
        self.faults.check("mirror")
        return dict(self.mirror_map)

    def deployments(self) -> list[DeploymentStatus]:
        """Every deployment; a read moves a creating one along, as `deployment_state` does."""
        self.faults.check("deployments")
        for found in self.deployed.values():
            found.reads += 1
            if found.state == "creating" and found.reads > self.creating_reads:
                found.state = "failed" if found.version in self.failing_versions else "succeeded"
        return [
            DeploymentStatus(name, found.state, None, found.model, found.version)
            for name, found in sorted(self.deployed.items())
        ]

    # -- for tests

    def serve(self, model: str, version: str) -> str:
        """Arrange: `version` is deployed and takes all the live traffic."""
        name = deployment_name(model, version)
        self.deployed[name] = FakeDeployment(model, version, "succeeded")
        self.live = {name: 100}
        return name


class FakeMetrics:
    """The MetricsReader port, with metrics the test sets.

    Offline: `candidate` (and `champion` when the caller names a champion version). Live:
    every arm gets `requests` requests and `errors` errors, except arms named in
    `arm_stats`. `offline_error` / `live_error` make reads fail (an unreachable MLflow).
    """

    def __init__(self) -> None:
        self.candidate: dict[str, float] = {"auc": 0.9}
        self.champion: dict[str, float] = {"auc": 0.85}
        self.requests = 1000
        self.errors = 2
        self.arm_stats: dict[str, ArmStats] = {}
        self.offline_error: Exception | None = None
        self.live_error: Exception | None = None
        self.offline_reads: list[tuple[str, str, str | None]] = []
        self.live_reads: list[tuple[str, str, int, list[ArmWindow]]] = []
        # Shadow: what `shadow` returns (None: built from `requests`/`errors`, every mirrored
        # pair agreeing, latencies `shadow_latency_ms` each); `shadow_error` makes it fail.
        self.shadow_metrics: ShadowMetrics | None = None
        self.shadow_latency_ms = 20.0
        self.shadow_error: Exception | None = None
        self.shadow_reads: list[tuple[str, str, str, datetime, datetime]] = []

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        self.offline_reads.append((model, candidate_version, champion_version))
        if self.offline_error is not None:
            raise self.offline_error
        champion = dict(self.champion) if champion_version is not None else None
        return OfflineMetrics(candidate=dict(self.candidate), champion=champion)

    def live(
        self, model: str, promotion_id: str, step: int, arms: Sequence[ArmWindow]
    ) -> LiveMetrics:
        arms = list(arms)
        self.live_reads.append((model, promotion_id, step, arms))
        if self.live_error is not None:
            raise self.live_error
        stats = {
            arm.deployment: self.arm_stats.get(arm.deployment)
            or ArmStats(deployment=arm.deployment, requests=self.requests, errors=self.errors)
            for arm in arms
        }
        return LiveMetrics(
            window_start=min(arm.window_start for arm in arms),
            window_end=max(arm.window_end for arm in arms),
            arms=stats,
        )

    def shadow(
        self, model: str, candidate: str, production: str, start: datetime, end: datetime
    ) -> ShadowMetrics:
        self.shadow_reads.append((model, candidate, production, start, end))
        if self.shadow_error is not None:
            raise self.shadow_error
        if self.shadow_metrics is not None:
            return self.shadow_metrics
        latencies = [self.shadow_latency_ms] * self.requests

        def arm(name: str) -> ArmStats:
            return ArmStats(
                deployment=name, requests=self.requests, errors=self.errors, latency_ms=latencies
            )

        pairs = self.requests - self.errors
        return ShadowMetrics(
            window_start=start,
            window_end=end,
            production=arm(production),
            candidate=arm(candidate),
            pairs=pairs,
            agreed=pairs,
        )


class RecordingRegistry:
    """The ModelRegistry port: records every tag call; `tags_of` merges them per version."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.tags: list[tuple[str, str, dict[str, str]]] = []

    def tag(self, model: str, version: str, tags: dict[str, str]) -> None:
        self.faults.check("tag")
        self.tags.append((model, version, dict(tags)))

    def tags_of(self, model: str, version: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, tagged, tags in self.tags:
            if (name, tagged) == (model, version):
                merged |= tags
        return merged

    def stages(self, model: str, version: str) -> list[str]:
        return [
            tags["retrain.stage"]
            for name, tagged, tags in self.tags
            if (name, tagged) == (model, version) and "retrain.stage" in tags
        ]


class RecordingEvents:
    """The EventPublisher port: records every event (data copied through JSON)."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None:
        self.faults.check("publish")
        self.events.append((event_type, model, json.loads(json.dumps(data, default=str))))

    def types(self, model: str | None = None) -> list[str]:
        return [kind for kind, name, _ in self.events if model is None or name == model]

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [data for kind, _, data in self.events if kind == event_type]


class RecordingDeadLetters:
    """Stands in for adapters.dead_letters.BlobDeadLetters: records, in memory."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(
        self, source: str, reason: str, body: bytes | str, properties: dict[str, Any] | None = None
    ) -> str:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        name = f"{source}/{len(self.records):06d}.json"
        self.records.append(
            {"source": source, "reason": reason, "properties": properties or {}, "body": text}
        )
        return name

    def read(self, source: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if source is None or r["source"] == source]


# --------------------------------------------------------------------------- messages


DATA_ACCOUNT = "https://acct.blob.core.windows.net"  # fake_settings' data account


def data_items(model: str, *names: str | int) -> list[DataItem]:
    """Data items with unique keys per name: the same name is the same blob (same key)."""
    return [
        DataItem(
            uri=f"{DATA_ACCOUNT}/training-data/{model}/{name}.csv",
            key=f"blob:{model}/{name}.csv@etag1",
        )
        for name in names
    ]


def landed(model: str, *names: str | int) -> Envelope:
    """A DataLanded batch as the Event Hubs trigger builds it (id derived from the keys)."""
    return data_landed_envelope(model, data_items(model, *names), "eventhub")


# The key the fakes' runtime signs the app's own messages with (a test stands in for the app
# when it builds one of those by hand: `message` signs it).
TEST_SIGNER = MessageSigner(b"test-signing-key-of-thirty-two-bytes-or-more")

# The issuer of people's tokens the fakes' runtime trusts (its key pair in a temp folder of
# this process): `tests.harness.signed(w.runtime, envelope, upn, roles=...)` signs a person in.
TEST_ISSUER = LocalIssuer(Path(tempfile.mkdtemp(prefix="retrain-test-issuer-")))
atexit.register(shutil.rmtree, TEST_ISSUER.folder, ignore_errors=True)


def message(
    message_type: str,
    model: str,
    payload: BaseModel | dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
) -> Envelope:
    envelope = Envelope.new(message_type, model, payload, message_id=message_id)
    return TEST_SIGNER.sign(envelope) if message_type in INTERNAL_TYPES else envelope


def start_promotion(model: str, version: str, run_id: str | None = None) -> Envelope:
    return message(
        "StartPromotion",
        model,
        StartPromotion(candidate_version=version, run_id=run_id),
        message_id=f"start:{model}:{version}",
    )


# --------------------------------------------------------------------------- the runtime


class _InitOnlySettings(Settings):
    """Settings from the given values only: no environment variable, no .env file, so a
    developer's AZUREML_WORKSPACE or MAX_EFFECT_ATTEMPTS cannot change what a test sees."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# A syntactically valid connection string to an address nothing listens on: a client built
# by mistake fails at once instead of reaching a developer's Azurite.
UNREACHABLE_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=fakeaccount;AccountKey=<key>;"
    "BlobEndpoint=http://127.0.0.1:9/fakeaccount;QueueEndpoint=http://127.0.0.1:9/fakeaccount;"
)


def fake_settings(**values: Any) -> Settings:
    """Settings that need no Azurite (by the host's setting names, e.g. MAX_EFFECT_ATTEMPTS)."""
    defaults: dict[str, Any] = {
        "AzureWebJobsStorage": UNREACHABLE_STORAGE,
        # The data account `data_items` name (data URIs elsewhere are refused).
        "DataStorage__blobServiceUri": DATA_ACCOUNT,
        "POLICY_DIR": str(Path("/nonexistent/retrain-policies")),
        "RETRAIN_LOCAL_DIR": str(Path("/nonexistent/retrain-local")),
    }
    return _InitOnlySettings(**(defaults | values))


class _NoClient:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        raise AssertionError(
            f"runtime.{self._name}.{attribute} used although every port is an in-memory fake"
        )


@dataclass
class FakeWorld:
    """A runtime on fakes, and the fakes, with a delivery loop driven by the fake clock."""

    runtime: Runtime
    clock: FakeClock
    store: InMemoryStateStore
    audit: InMemoryAuditLog
    bus: InMemoryBus
    training: FakeTrainingBackend
    endpoint: FakeEndpoint
    metrics: FakeMetrics
    registry: RecordingRegistry
    events: RecordingEvents
    policies: dict[str, ModelPolicy]
    dead_letters: Any = None
    ledger: Any = None
    outcomes: list[tuple[Envelope, Outcome]] = field(default_factory=list)
    # The fake endpoint of each later ring (policy `rings`), by name, made when first used.
    ring_endpoints: dict[str, FakeEndpoint] = field(default_factory=dict)

    @property
    def handlers(self) -> Any:
        return self.runtime.handlers

    def handle(self, envelope: Envelope) -> Outcome:
        outcome = self.runtime.handlers.handle(envelope)
        self.outcomes.append((envelope, outcome))
        return outcome

    def aggregate(self, model: str) -> ModelAggregate:
        return self.store.peek(model)

    def deliver_due(self) -> list[tuple[Envelope, Outcome]]:
        """Handle every message due now, in order; messages they send that are due at once
        are handled in the same call."""
        delivered = []
        while True:
            batch = self.bus.due(self.clock())
            if not batch:
                return delivered
            for envelope in batch:
                delivered.append((envelope, self.handle(envelope)))

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        max_steps: int = 500,
        horizon: timedelta | None = None,
    ) -> list[tuple[Envelope, Outcome]]:
        """Deliver what is due, then move the clock to the next scheduled message, until the
        bus is empty, `until()` holds, or the next message is past `horizon` from now."""
        limit = self.clock() + horizon if horizon is not None else None
        delivered: list[tuple[Envelope, Outcome]] = []
        for _ in range(max_steps):
            delivered += self.deliver_due()
            if until is not None and until():
                return delivered
            next_at = self.bus.next_due_at()
            if next_at is None or (limit is not None and next_at > limit):
                return delivered
            self.clock.advance_to(next_at)
        raise AssertionError(f"not settled after {max_steps} steps: {self.bus.pending}")

    def seed_champion(self, model: str, version: str) -> ServingModel:
        """Arrange: `version` serves 100% (champion and last known-good) in state and endpoint."""
        deployment = self.endpoint.serve(model, version)
        serving = ServingModel(version=version, deployment=deployment, since=self.clock())

        def change(aggregate: ModelAggregate) -> ModelAggregate:
            state = PromotionState(champion=serving, last_known_good=serving)
            return aggregate.model_copy(update={"promotion": state})

        self.store.seed(model, change)
        return serving

    def seed_ring(self, model: str, endpoint: str, version: str) -> ServingModel:
        """Arrange: `version` serves 100% of the later ring `endpoint`, in state and there."""
        ring = self.ring_endpoints.setdefault(endpoint, FakeEndpoint())
        deployment = ring.serve(model, version)
        serving = ServingModel(version=version, deployment=deployment, since=self.clock())

        def change(aggregate: ModelAggregate) -> ModelAggregate:
            state = aggregate.promotion
            rings = {**state.rings, endpoint: serving}
            return aggregate.model_copy(
                update={"promotion": state.model_copy(update={"rings": rings})}
            )

        self.store.seed(model, change)
        return serving


def fake_runtime(
    policies: Mapping[str, str] | Iterable[str] | str | None = None,
    *,
    clock: FakeClock | Callable[[], datetime] | None = None,
    settings: Settings | None = None,
    guard_clients: bool = True,
    **overrides: Any,
) -> FakeWorld:
    """`bootstrap` on fakes: every port is an in-memory fake (or the given override).

    `policies`: policy YAML texts (a mapping by model, a list, or one text); default one
    model, "churn", with `tests.harness.policy_yaml`'s short durations. `settings`: default
    `fake_settings()`. `overrides`: any of bootstrap's port names, replacing a fake.
    `guard_clients`: the runtime's storage clients raise when used (False: left to bootstrap,
    for the test that shows it builds none).
    """
    if policies is None:
        texts: list[str] = [policy_yaml("churn")]
    elif isinstance(policies, str):
        texts = [policies]
    elif isinstance(policies, Mapping):
        texts = list(policies.values())
    else:
        texts = list(policies)
    parsed = [parse_policy(text) for text in texts]
    by_model = {policy.model: policy for policy in parsed}
    the_clock = clock if clock is not None else FakeClock()
    endpoint = overrides.pop("endpoint", None) or FakeEndpoint()
    ring_endpoints: dict[str, FakeEndpoint] = overrides.pop("ring_endpoints", None) or {}

    def endpoint_for(policy: ModelPolicy) -> FakeEndpoint:
        # By name only: a model's own endpoint is the shared fake; any other name is a later
        # ring's, its own fake (whatever the policy's rings say now: a ring removed from it
        # meanwhile is still that ring, never the model's endpoint).
        if any(own.endpoint == policy.endpoint for own in ports["policies"].values()):
            return endpoint
        return ring_endpoints.setdefault(policy.endpoint, FakeEndpoint())

    ports: dict[str, Any] = {
        "store": InMemoryStateStore(),
        "audit": InMemoryAuditLog(),
        "bus": InMemoryBus(),
        "training": FakeTrainingBackend(),
        "endpoints": endpoint_for,
        "metrics": FakeMetrics(),
        "registry": RecordingRegistry(),
        "events": RecordingEvents(),
        "policies": by_model,
        "identity": TEST_ISSUER.verifier(),
        "dead_letters": RecordingDeadLetters(),
        "signer": TEST_SIGNER,
        "ledger": InMemoryDataLedger(),
    } | overrides
    runtime = bootstrap(
        settings if settings is not None else fake_settings(),
        clock=the_clock,
        **ports,
    )
    if guard_clients:
        # A port bootstrap builds after all (a regression) fails at once, by name, instead of
        # retrying a connection for a minute.
        for client in ("blob_service", "queue_service"):
            runtime.__dict__[client] = _NoClient(client)
    return FakeWorld(
        runtime=runtime,
        clock=the_clock,  # type: ignore[arg-type]
        store=ports["store"],
        audit=ports["audit"],
        bus=ports["bus"],
        training=ports["training"],
        endpoint=endpoint,
        metrics=ports["metrics"],
        registry=ports["registry"],
        events=ports["events"],
        policies=ports["policies"],
        dead_letters=ports["dead_letters"],
        ledger=ports["ledger"],
        ring_endpoints=ring_endpoints,
    )
