"""A whole promotion flow at service level, on real Azurite, with a controllable delivery loop.

The *world* (`World`) is everything outside our process: the training backend, the online
endpoint, the metrics, the registry, a fake clock. It survives crashes. A *process*
(`Process`) is one Runtime wired as in production (Blob state store, audit log, Storage-queue
bus, queue event publisher, on Azurite) whose ports to the world go through a kill switch:
a `CrashPlan` makes the process die at a chosen point, after which every port call raises
`ProcessDied` until the `Courier` starts a new process on the same settings.

The `Courier` is the message transport as the tests want it: it reads every message the
orchestrator sends (the orchestrator queue on Azurite), keeps them in a pool and delivers each
1-3 times in random order (seeded), honouring `not_before` loosely (a scheduled message may
arrive up to `early` before its time, as with clock skew; the domain judges it then). With
`rng=None` it is the reference transport: each message once, in send order, on time.

Figures (`record_figures`) are printed and merged into build/reliability-figures.json (never
into a tracked file), one entry per test, under a file lock so `pytest -n 2` workers do not
overwrite each other. `RELIABILITY_FIGURES=docs/reliability-figures.json` writes them to the
published copy instead (docs/reliability-notes.md, "Reproducing the figures").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from adapters.events import QueueEventPublisher
from adapters.local_issuer import LocalIssuer
from adapters.storage_queue_bus import decode_body
from adapters.traffic_rules import validate_traffic
from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics
from domain.naming import deployment_name
from orchestrator.aggregate import ModelAggregate
from orchestrator.bootstrap import Runtime, bootstrap
from orchestrator.handlers import Outcome
from orchestrator.messages import Envelope, parse_envelope
from orchestrator.ports import (
    ArmWindow,
    AuditRecord,
    ConcurrencyConflict,
    DeploymentStatus,
    InvalidTraffic,
    JobStatus,
    ScheduledHandle,
    TrainingRequest,
)
from orchestrator.settings import Settings
from promotion.commands import ApprovalDecision
from promotion.state import PromotionState, ServingModel
from retrain.commands import DataItem, DataLanded
from tests.harness import RecordingTrainingBackend, make_runtime, policy_yaml
from triggers.envelopes import data_landed_message_id

# Fixtures: a test module imports both (`flow_settings` needs `make_runtime`).
__all__ = ["flow_settings_fixture", "make_runtime"]


@pytest.fixture(name="flow_settings")
def flow_settings_fixture(make_runtime: Callable[..., Runtime]) -> Callable[..., Settings]:
    """Settings of a fresh runtime on the session's Azurite: own state container and queues."""

    def make(policies: dict[str, str], **settings: Any) -> Settings:
        return make_runtime(policies, **settings).settings

    return make


START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
APPROVER = "ml-lead@contoso.com"
ROOT = Path(__file__).resolve().parents[2]
# Where figures go unless RELIABILITY_FIGURES names another file (relative to the repository).
FIGURES_FILE = ROOT / "build" / "reliability-figures.json"

# Audit actions that say "this changed nothing" (stale or refused commands): they depend on
# how often and when messages arrive, not on what the flow decided.
# Records that say when, not what: a window's close waits for its quiet period when data
# arrived late (reordered, early delivery), which moves the close but not the outcome.
NOOP_ACTIONS = frozenset({"command.ignored", "approval.refused", "retrain.window_extended"})


def flow_policy(model: str, *, approval: bool = True, **overrides: str) -> str:
    """Short durations: 1 s debounce, bake and polls; two canary steps; an error-rate gate."""
    sections = {
        "retrain": "{debounce: 1s, min_new_files: 1, cooldown: 0s, poll_interval: 1s, "
        "max_poll_interval: 2s}",
        "staging": "{gates: [{kind: threshold, metric: auc, value: 0.7}], retry_delay: 1s, "
        "max_attempts: 3}",
        "approval": (
            f"{{required: true, approvers: [{APPROVER}], timeout: 1h, on_timeout: reject}}"
            if approval
            else "{required: false}"
        ),
        # A step waits for its samples at most 3 s (three checks), then rolls back.
        "canary": "{steps: [10, 50], bake: 1s, max_step_duration: 3s, min_samples_per_arm: 50, "
        "max_extensions: 2, on_exhausted: rollback, "
        "gates: [{kind: canary, metric: error_rate, test: two_proportion, margin: 0.02, "
        "alpha: 0.05}]}",
        "production_bake": "1s",
    } | overrides
    return policy_yaml(model, **sections)


# --------------------------------------------------------------------------- the world


class FakeClock:
    """The injected clock. Only the courier (or a test) moves it."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance_to(self, when: datetime) -> None:
        with self._lock:
            self._now = max(self._now, when)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class AutoTrainingBackend(RecordingTrainingBackend):
    """Each new run registers the next version: it reads "running" once, then "completed"."""

    def __init__(self, first_version: int = 1) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._first = first_version
        self._versions: dict[str, str] = {}
        self._reads: Counter[str] = Counter()

    def submit(self, request: TrainingRequest) -> str:
        with self._lock:
            self._versions.setdefault(request.run_id, str(self._first + len(self._versions)))
            return super().submit(request)

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            self._reads[job_id] += 1
            if self._reads[job_id] > 1:
                self.finish(job_id, self._versions[job_id])
            elif job_id in self.states:
                self.states[job_id] = JobStatus(job_id=job_id, state="running")
            return self.states[job_id]

    def submissions_of(self, run_id: str) -> int:
        return sum(1 for request in self.submissions if request.run_id == run_id)


@dataclass
class FakeDeployment:
    model: str
    version: str
    state: str = "creating"
    reads: int = 0


class FakeEndpoint:
    """The OnlineEndpoint port in memory, checking the rules a real endpoint enforces.

    A deployment reads "creating" on its first state read, then "succeeded" (or "failed" for
    versions in `failing_versions`). Deploying an existing deployment of the same version is
    a no-op, as the port requires. Every traffic map must sum to 100 and name only existing
    deployments; deleting a deployment that still takes traffic is refused. Breaches are
    recorded in `violations` (tests assert it stays empty) and raised as InvalidTraffic.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.deployed: dict[str, FakeDeployment] = {}
        self.live: dict[str, int] = {}
        self.deploy_calls: Counter[str] = Counter()
        self.creations: Counter[str] = Counter()
        self.traffic_maps: list[dict[str, int]] = []
        self.deletes: list[str] = []
        self.violations: list[str] = []
        self.failing_versions: set[str] = set()

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        with self.lock:
            self.deploy_calls[deployment] += 1
            existing = self.deployed.get(deployment)
            if (
                existing is not None
                and existing.version == model_version
                and existing.state != "failed"
            ):
                return deployment
            self.creations[deployment] += 1
            self.deployed[deployment] = FakeDeployment(model_name, model_version)
            return deployment

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        with self.lock:
            found = self.deployed.get(deployment)
            if found is None:
                return DeploymentStatus(deployment, "missing")
            found.reads += 1
            if found.state == "creating" and found.reads > 1:
                found.state = "failed" if found.version in self.failing_versions else "succeeded"
            error = "container crashed: ImportError" if found.state == "failed" else None
            return DeploymentStatus(
                deployment,
                found.state,
                error,
                found.model,
                found.version,  # type: ignore[arg-type]
            )

    def set_traffic(self, traffic: dict[str, int]) -> None:
        with self.lock:
            self.traffic_maps.append(dict(traffic))
            try:
                validate_traffic(traffic, existing=set(self.deployed))
            except InvalidTraffic as exc:
                self.violations.append(f"set_traffic {traffic}: {exc.reason}")
                raise
            self.live = {name: weight for name, weight in traffic.items() if weight}

    def set_mirror(self, mirror: dict[str, int]) -> None:
        raise NotImplementedError

    def delete(self, deployment: str) -> None:
        with self.lock:
            self.deletes.append(deployment)
            if self.live.get(deployment) and set(self.live) != {deployment}:
                self.violations.append(f"delete {deployment} while it takes {self.live}")
                raise InvalidTraffic(f"{deployment} takes live traffic")
            self.deployed.pop(deployment, None)
            self.live.pop(deployment, None)

    def traffic(self) -> dict[str, int]:
        with self.lock:
            return dict(self.live)

    def deployments(self) -> list[DeploymentStatus]:
        with self.lock:
            for found in self.deployed.values():  # a read moves a creating one along
                found.reads += 1
                if found.state == "creating" and found.reads > 1:
                    failing = found.version in self.failing_versions
                    found.state = "failed" if failing else "succeeded"
            return [
                DeploymentStatus(name, found.state, None, found.model, found.version)  # type: ignore[arg-type]
                for name, found in sorted(self.deployed.items())
            ]


class FakeMetrics:
    """The MetricsReader port: offline metrics that pass the staging gate, and live metrics
    whose canary arm is as good as production (`live_mode="pass"`), much worse ("fail"), or
    that cannot be read ("unreadable")."""

    def __init__(self) -> None:
        self.auc = 0.9
        self.live_mode: Literal["pass", "fail", "unreadable"] = "pass"
        self.offline_reads = 0
        self.live_reads = 0

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        self.offline_reads += 1
        champion = {"auc": 0.85} if champion_version is not None else None
        return OfflineMetrics(candidate={"auc": self.auc}, champion=champion)

    def live(self, model: str, promotion_id: str, step: int, arms: list[ArmWindow]) -> LiveMetrics:
        self.live_reads += 1
        if self.live_mode == "unreadable":
            raise ConnectionError("metrics store unreachable")
        stats = {}
        for index, arm in enumerate(arms):
            errors = 400 if self.live_mode == "fail" and index == 0 else 2
            stats[arm.deployment] = ArmStats(
                deployment=arm.deployment, requests=1000, errors=errors, labeled=0
            )
        return LiveMetrics(
            window_start=min(arm.window_start for arm in arms),
            window_end=max(arm.window_end for arm in arms),
            arms=stats,
        )


class RecordingRegistry:
    def __init__(self) -> None:
        self.tags: list[tuple[str, str, dict[str, str]]] = []

    def tag(self, model: str, version: str, tags: dict[str, str]) -> None:
        self.tags.append((model, version, dict(tags)))


@dataclass
class World:
    """What survives a crash of our process: the systems we talk to, and the clock."""

    clock: FakeClock = field(default_factory=FakeClock)
    training: Any = field(default_factory=AutoTrainingBackend)
    endpoint: Any = field(default_factory=FakeEndpoint)
    metrics: Any = field(default_factory=FakeMetrics)
    registry: RecordingRegistry = field(default_factory=RecordingRegistry)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # message id -> when it was scheduled for (None: sent for now)
    not_before: dict[str, datetime | None] = field(default_factory=dict)
    sends: int = 0  # messages put on the orchestrator queue
    auto_approve: bool = True
    approvals: list[Envelope] = field(default_factory=list)  # answers to deliver


# --------------------------------------------------------------------------- the process


class ProcessDied(BaseException):
    """The process running the orchestrator died (injected). A BaseException, so no
    `except Exception` in the code under test can swallow it and carry on."""


CrashPoint = Literal["before_dispatch", "before_port_call", "after_port_call"]

# Port calls that carry out an effect (the outbox's), as opposed to reads.
EFFECT_CALLS = frozenset(
    {
        "bus.send",
        "bus.schedule",
        "training.submit",
        "endpoint.deploy",
        "endpoint.set_traffic",
        "endpoint.delete",
        "registry.tag",
        "events.publish",
    }
)


@dataclass
class CrashPlan:
    """Die at the `at`-th occurrence (1-based) of `point`, once. `at=0` only counts.

    before_dispatch: `Outbox.dispatch` called with effects or audit entries pending
    (after the save that put them there, before any of them ran). before_port_call /
    after_port_call: an effect's port call (`EFFECT_CALLS`, or only `calls`) is about to be
    made / has just returned. `armed=False` counts nothing (e.g. while a test arranges)
    until the port call `arm_on`, if given, is made.
    """

    point: CrashPoint
    at: int
    calls: frozenset[str] = EFFECT_CALLS
    armed: bool = True
    arm_on: str | None = None  # a port call ("metrics.live") that arms the plan once made
    seen: Counter[str] = field(default_factory=Counter)
    fired: str | None = None

    def hit(self, point: CrashPoint, what: str) -> bool:
        if not self.armed and what == self.arm_on and point == "after_port_call":
            self.armed = True
            self.arm_on = None
            return False
        if not self.armed or self.fired is not None:
            return False
        if point != "before_dispatch" and what not in self.calls:
            return False
        self.seen[point] += 1
        if point == self.point and self.seen[point] == self.at:
            self.fired = f"{point} #{self.at}: {what}"
            return True
        return False


class _Guard:
    """Routes a port's calls through the process's kill switch. `resolve` returns the adapter
    (looked up at each call: a test may swap the world's systems mid-flow)."""

    def __init__(self, process: Process, port: str, resolve: Callable[[], Any]) -> None:
        self._process = process
        self._port = port
        self._resolve = resolve

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._resolve(), name)
        if not callable(attr):
            return attr
        what = f"{self._port}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            self._process.check_alive(what)
            self._process.maybe_die("before_port_call", what)
            result = attr(*args, **kwargs)
            self._process.maybe_die("after_port_call", what)
            return result

        return call


class _SchedulingBus:
    """The real Storage-queue bus, but a scheduled message is sent at once and its time kept
    in the world: the courier (with the fake clock) decides when it arrives."""

    def __init__(self, inner: Any, world: World) -> None:
        self._inner = inner
        self._world = world

    def send(self, envelope: Envelope) -> None:
        self._world.not_before.setdefault(envelope.message_id, None)
        self._inner.send(envelope)
        self._world.sends += 1

    def schedule(self, envelope: Envelope, at: datetime) -> ScheduledHandle:
        self._world.not_before[envelope.message_id] = at
        self._inner.send(envelope)
        self._world.sends += 1
        return ScheduledHandle(transport="test", value=envelope.message_id)

    def cancel(self, handle: ScheduledHandle) -> None:
        raise NotImplementedError


class _Events:
    """The real queue publisher, recorded; an approval request is answered by the world."""

    def __init__(self, inner: Any, world: World, issuer: LocalIssuer) -> None:
        self._inner = inner
        self._world = world
        self._issuer = issuer  # the approver signs in with a token the app trusts

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None:
        self._inner.publish(event_type, model, data)
        self._world.events.append((event_type, model, dict(data)))
        if event_type == "approval.requested" and self._world.auto_approve:
            answer = ApprovalDecision(
                promotion_id=data["promotion_id"],
                step=data["step"],
                candidate_version=data["candidate_version"],
                decision="approve",
                approver=APPROVER,
            )
            self._world.approvals.append(
                Envelope.new(
                    "ApprovalDecision",
                    model,
                    answer,
                    message_id=f"approve:{data['promotion_id']}",
                    time=self._world.clock(),
                ).model_copy(update={"auth": self._issuer.mint(APPROVER)})
            )


class _Store:
    """The real Blob state store, behind the kill switch, recording every version written."""

    def __init__(self, inner: Any, process: Process) -> None:
        self._inner = inner
        self._process = process
        save = inner.save

        def counted_save(key: str, aggregate: ModelAggregate, etag: str | None) -> str:
            try:
                return save(key, aggregate, etag)  # type: ignore[no-any-return]
            except ConcurrencyConflict:
                with process.lock:
                    process.conflicts += 1
                raise

        inner.save = counted_save  # the store's own retry loop calls it: conflicts counted

    def load(self, key: str) -> tuple[ModelAggregate, str | None]:
        self._process.check_alive("store.load")
        return self._inner.load(key)  # type: ignore[no-any-return]

    def save(self, key: str, aggregate: ModelAggregate, etag: str | None) -> str:
        self._process.check_alive("store.save")
        return self._inner.save(key, aggregate, etag)  # type: ignore[no-any-return]

    def update(
        self,
        key: str,
        change: Callable[[ModelAggregate], ModelAggregate | None],
        loaded: tuple[ModelAggregate, str | None] | None = None,
    ) -> tuple[ModelAggregate, bool]:
        self._process.check_alive("store.update")
        aggregate, wrote = self._inner.update(key, change, loaded)
        if wrote:
            with self._process.lock:
                self._process.written_versions.append(aggregate.version)
        return aggregate, wrote

    def list_keys(self) -> list[str]:
        self._process.check_alive("store.list_keys")
        return self._inner.list_keys()  # type: ignore[no-any-return]


class Process:
    """One orchestrator process on `settings`, wired to the world through a kill switch."""

    def __init__(self, settings: Settings, world: World, plan: CrashPlan | None = None) -> None:
        self.settings = settings
        self.world = world
        self.plan = plan
        self.dead = False
        self.lock = threading.Lock()
        self.written_versions: list[int] = []
        self.conflicts = 0  # conditional writes refused (ETag changed since the read)
        runtime = bootstrap(
            settings,
            clock=world.clock,
            training=_Guard(self, "training", lambda: world.training),
            registry=_Guard(self, "registry", lambda: world.registry),
            events=_Guard(self, "events", lambda: events),
            metrics=_Guard(self, "metrics", lambda: world.metrics),
            endpoints=lambda policy: endpoint,
        )
        endpoint = _Guard(self, "endpoint", lambda: world.endpoint)
        # The real lifecycle-events queue on Azurite, with the world watching what is published.
        events = _Events(
            QueueEventPublisher(runtime.queue(settings.lifecycle_events_hub)),
            world,
            LocalIssuer(settings.local_issuer_dir),
        )
        self.runtime = runtime
        self.queue = runtime.queue(settings.orchestrator_queue)
        # The real Azurite store, audit log and bus, behind the kill switch.
        ports = self.ports = runtime.ports
        ports.store = _Store(ports.store, self)
        audit, bus = ports.audit, _SchedulingBus(ports.bus, world)
        ledger = ports.ledger
        ports.ledger = _Guard(self, "ledger", lambda: ledger)
        ports.audit = _Guard(self, "audit", lambda: audit)
        ports.bus = _Guard(self, "bus", lambda: bus)
        outbox = runtime.outbox
        real_dispatch = outbox.dispatch

        def dispatch(model: str, aggregate: ModelAggregate | None = None) -> int:
            self.check_alive("dispatch")
            plan = self.plan
            if plan is not None and plan.armed and (plan.point == "before_dispatch" or not plan.at):
                pending = aggregate if aggregate is not None else ports.store.load(model)[0]
                if pending.outbox or pending.pending_audit:
                    self.maybe_die("before_dispatch", f"dispatch of {len(pending.outbox)}")
            return real_dispatch(model, aggregate)

        outbox.dispatch = dispatch  # type: ignore[method-assign]
        self.outbox = outbox
        self.handlers = runtime.handlers
        self.maintenance = runtime.maintenance

    def check_alive(self, what: str) -> None:
        if self.dead:
            raise ProcessDied(f"{what} after the process died")

    def maybe_die(self, point: CrashPoint, what: str) -> None:
        if self.plan is not None and self.plan.hit(point, what):
            self.dead = True
            raise ProcessDied(self.plan.fired)

    @property
    def store(self) -> Any:
        return self.ports.store

    def aggregate(self, model: str) -> ModelAggregate:
        aggregate, _ = self.store.load(model)
        return aggregate  # type: ignore[no-any-return]

    def audit(self, model: str) -> list[AuditRecord]:
        return self.ports.audit.read(model)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- delivery


@dataclass
class Pending:
    envelope: Envelope
    not_before: datetime | None
    copies: int
    seq: int
    failures: int = 0


@dataclass
class DeliveryStats:
    sent: int = 0  # messages taken off the queue (or injected from outside)
    delivered: int = 0  # handler calls that returned
    replayed: int = 0  # of those, deliveries of a message id delivered before
    early: int = 0  # scheduled messages delivered before their time
    reordered: int = 0  # deliveries of a message sent before one already delivered
    crashes: int = 0  # deliveries during which the process died
    restarts: int = 0
    sweeps: int = 0
    dropped: int = 0  # applied messages lost at a crash (drop mode)
    failures: int = 0  # deliveries that raised (to be redelivered)
    statuses: Counter[str] = field(default_factory=Counter)


class Courier:
    """Delivers what the orchestrator sends, like a message transport the tests control."""

    def __init__(
        self,
        world: World,
        start_process: Callable[[], Process],
        rng: random.Random | None = None,
        *,
        max_copies: int = 3,
        early: timedelta = timedelta(milliseconds=500),
        early_chance: float = 0.3,
        on_crash: Literal["redeliver", "drop"] = "redeliver",
        sweep_on_restart: bool | None = None,
        between: Callable[[Courier], None] | None = None,
        at_crash: Callable[[Courier], None] | None = None,
    ) -> None:
        self.world = world
        self.start_process = start_process
        self.process = start_process()
        self.rng = rng
        self.max_copies = max_copies if rng is not None else 1
        self.early = early
        self.early_chance = early_chance if rng is not None else 0.0
        self.on_crash = on_crash
        self.sweep_on_restart = sweep_on_restart
        self.between = between
        self.at_crash = at_crash
        self.pool: list[Pending] = []
        self.stats = DeliveryStats()
        self.outcomes: list[tuple[Envelope, Outcome]] = []
        self._delivered_ids: set[str] = set()
        self._seq = 0
        self._collected_at = -1
        self._latest_seq = 0

    # -- what arrives

    def _add(self, envelope: Envelope, not_before: datetime | None) -> None:
        copies = self.rng.randint(1, self.max_copies) if self.rng is not None else 1
        self._seq += 1
        self.pool.append(Pending(envelope, not_before, copies, self._seq))
        self.stats.sent += 1

    def inject(self, envelope: Envelope) -> None:
        """A message from outside (an Event Hubs batch, a person's approval)."""
        self._add(envelope, None)

    def collect(self) -> int:
        """Take every message the orchestrator sent off its queue, into the pool."""
        while self.world.approvals:
            self.inject(self.world.approvals.pop(0))
        if self.world.sends == self._collected_at:
            return 0  # nothing was sent since the queue was last read empty
        queue = self.process.queue
        taken = 0
        while True:
            sends = self.world.sends
            batch = list(queue.receive_messages(max_messages=32, visibility_timeout=60))
            if not batch:
                self._collected_at = sends
                return taken
            for message in batch:
                envelope = parse_envelope(decode_body(message.content))
                self._add(envelope, self.world.not_before.get(envelope.message_id))
                queue.delete_message(message)
                taken += 1

    # -- delivery

    def _next(self) -> Pending:
        now = self.world.clock()
        due = [p for p in self.pool if p.not_before is None or p.not_before <= now]
        if due:
            return self.rng.choice(due) if self.rng is not None else min(due, key=_order)
        # Nothing is due: time passes until the next scheduled message, which may arrive a
        # little early (the sender's clock runs ahead).
        item = min(self.pool, key=_order)
        assert item.not_before is not None
        target = item.not_before
        if self.rng is not None and self.rng.random() < self.early_chance:
            target -= self.early * self.rng.random()
            self.stats.early += 1
        self.world.clock.advance_to(target)
        return item

    def deliver(self, item: Pending) -> None:
        envelope = item.envelope
        try:
            outcome = self.process.handlers.handle(envelope)
        except ProcessDied:
            self.stats.crashes += 1
            if self.at_crash is not None:
                self.at_crash(self)
            self.restart()
            if self.on_crash == "drop" and self.process.aggregate(envelope.model).has_seen(
                envelope.message_id
            ):
                # The message was applied before the crash: lose it, and let the sweep that
                # ran at the restart finish its effects. (One not yet applied is redelivered,
                # as any transport would: without it nothing would ever apply it.)
                self.stats.dropped += 1
                self._consume(item)
            return
        except Exception:
            # A transient failure: the transport redelivers it (bounded, like max deliveries).
            item.failures += 1
            self.stats.failures += 1
            if item.failures > 5:
                raise
            return
        self.stats.delivered += 1
        self.stats.statuses[outcome.status] += 1
        if item.seq < self._latest_seq:
            self.stats.reordered += 1
        self._latest_seq = max(self._latest_seq, item.seq)
        if envelope.message_id in self._delivered_ids:
            self.stats.replayed += 1
        self._delivered_ids.add(envelope.message_id)
        self.outcomes.append((envelope, outcome))
        self._consume(item)

    def _consume(self, item: Pending) -> None:
        item.copies -= 1
        if item.copies <= 0:
            self.pool.remove(item)

    def restart(self) -> None:
        """A new process on the same settings; the timer's sweep may run first."""
        self.process = self.start_process()
        self.stats.restarts += 1
        self._collected_at = -1
        sweep = self.sweep_on_restart
        if sweep is None:
            sweep = self.rng.random() < 0.5 if self.rng is not None else False
        if sweep or self.on_crash == "drop":
            self.process.maintenance.sweep()
            self.stats.sweeps += 1

    def run(self, max_steps: int = 2000, until: Callable[[], bool] | None = None) -> None:
        """Deliver until nothing is left to deliver (or `until()` is true after a delivery);
        fail if that takes `max_steps`."""
        for _ in range(max_steps):
            self.collect()
            if not self.pool:
                return
            if self.between is not None:
                self.between(self)
            self.deliver(self._next())
            if until is not None and until():
                return
        raise AssertionError(f"the flow did not settle in {max_steps} deliveries: {self.pool}")


def _order(item: Pending) -> tuple[datetime, int]:
    return (item.not_before or datetime.min.replace(tzinfo=UTC), item.seq)


# --------------------------------------------------------------------------- the flow


def landed(model: str, phase: int, batch: int, size: int) -> Envelope:
    """A batch of data-ready events (Event Hubs): `size` new files with unique keys."""
    items = [
        DataItem(
            uri=f"https://acct.blob.core.windows.net/training-data/{model}/p{phase}/b{batch}-{n}.csv",
            key=f"blob:{model}/p{phase}/b{batch}-{n}.csv@etag{n}",
        )
        for n in range(size)
    ]
    return Envelope.new(
        "DataLanded",
        model,
        DataLanded(items=items, source="eventhub"),
        message_id=data_landed_message_id(model, [item.key for item in items]),
    )


def run_generations(
    courier: Courier, model: str, generations: int = 2, batches: int = 4, size: int = 3
) -> None:
    """Each generation: data lands (several batches), one window, one job, one promotion."""
    for phase in range(generations):
        for batch in range(batches):
            courier.inject(landed(model, phase, batch, size))
        courier.run()


def seed_champion(process: Process, world: World, model: str, version: str = "1") -> None:
    """Arrange: `version` already serves 100% (champion and last known-good), so the next
    candidate goes through the canary. The world's fakes follow: the fake endpoint serves it,
    the fake training backend numbers new runs from version+1. (A test on other adapters
    arranges their side itself.)"""
    deployment = deployment_name(model, version)
    serving = ServingModel(version=version, deployment=deployment, since=world.clock())

    def change(aggregate: ModelAggregate) -> ModelAggregate:
        state = PromotionState(champion=serving, last_known_good=serving)
        return aggregate.model_copy(update={"promotion": state})

    process.store.update(model, change)
    if isinstance(world.endpoint, FakeEndpoint):
        world.endpoint.deployed[deployment] = FakeDeployment(model, version, "succeeded")
        world.endpoint.live = {deployment: 100}
    if isinstance(world.training, AutoTrainingBackend):
        world.training = AutoTrainingBackend(first_version=int(version) + 1)


def final_state(process: Process, model: str) -> dict[str, Any]:
    """What a person would call "the outcome", independent of delivery order and timing."""
    aggregate = process.aggregate(model)
    promotion = aggregate.promotion
    records = sorted(process.audit(model), key=lambda r: (r.aggregate_version, r.seq))
    return {
        "champion": promotion.champion.version if promotion.champion else None,
        "champion_deployment": promotion.champion.deployment if promotion.champion else None,
        "last_known_good": promotion.last_known_good.version if promotion.last_known_good else None,
        "active": promotion.active.status if promotion.active else None,
        "history": [(h.candidate_version, str(h.outcome)) for h in promotion.history],
        "runs": [(r.status, r.registered_version, r.data_count) for r in aggregate.retrain.runs],
        "trained_items": sum(r.data_count for r in aggregate.retrain.runs),
        "pending_items": process.ports.ledger.pending(model).items,
        "transitions": [r.action for r in records if r.action not in NOOP_ACTIONS],
    }


def check_invariants(process: Process, world: World, model: str) -> dict[str, int]:
    """What must hold after any flow, however delivered and wherever it crashed."""
    aggregate = process.aggregate(model)
    assert aggregate.outbox == [], f"effects left undispatched: {aggregate.outbox}"
    assert aggregate.pending_audit == [], "audit entries left unwritten"
    promotion = aggregate.promotion
    assert promotion.active is None, f"a promotion is stuck in {promotion.active.status}"
    endpoint: FakeEndpoint = world.endpoint
    assert endpoint.violations == []
    for traffic in endpoint.traffic_maps:
        assert sum(traffic.values()) == 100, traffic
    # No orphan deployment: only the champion's is left (no promotion is active).
    allowed = {promotion.champion.deployment} if promotion.champion else set()
    assert set(endpoint.deployed) == allowed, (set(endpoint.deployed), allowed)
    if promotion.champion:
        assert endpoint.live == {promotion.champion.deployment: 100}
    # Exactly one deployment created per version, one training job per window.
    assert all(count == 1 for count in endpoint.creations.values()), endpoint.creations
    runs = aggregate.retrain.runs
    assert sorted(world.training.jobs) == sorted(run.run_id for run in runs)
    records = check_audit(process, model)
    return {"audit_records": len(records), "deployments_created": sum(endpoint.creations.values())}


def check_audit(process: Process, model: str) -> list[AuditRecord]:
    """Every message applied once (all its records from one aggregate version), every record
    id once, nothing left unwritten."""
    assert process.aggregate(model).pending_audit == []
    records = process.audit(model)
    ids = [record.record_id for record in records]
    assert len(ids) == len(set(ids))
    versions_by_cause: dict[str, set[int]] = defaultdict(set)
    for record in records:
        versions_by_cause[str(record.cause_id)].add(record.aggregate_version)
    applied_twice = {cause: v for cause, v in versions_by_cause.items() if len(v) > 1}
    assert applied_twice == {}, applied_twice
    return records


# --------------------------------------------------------------------------- figures


def figures_file() -> Path:
    """build/reliability-figures.json, or the file RELIABILITY_FIGURES names."""
    named = os.environ.get("RELIABILITY_FIGURES")
    return ROOT / named if named else FIGURES_FILE


def record_figures(test_id: str, figures: dict[str, Any]) -> None:
    """Print one test's figures and merge them into `figures_file()`."""
    print(f"\nRELIABILITY {test_id}: {json.dumps(figures, sort_keys=True)}")
    path = figures_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(tempfile.gettempdir()) / "retrain-reliability-figures.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            document: dict[str, Any] = {}
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                document = json.loads(path.read_text())
            tests = document.get("tests", {})
            tests[test_id] = figures
            totals: Counter[str] = Counter()
            for entry in tests.values():
                for key, value in entry.items():
                    if isinstance(value, int) and key in TOTALLED:
                        totals[key] += value
            document = {
                "about": "tests/faults: delivery, crashes, contention and outside faults "
                "(flows, messages, crash points, faults injected), bad input and security "
                "(inputs tried); regenerated by `RELIABILITY_FIGURES=docs/reliability-figures.json "
                "pytest -n 2 tests/faults` (docs/reliability-notes.md)",
                "totals": dict(sorted(totals.items())),
                "tests": dict(sorted(tests.items())),
            }
            path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


TOTALLED = frozenset(
    {
        "flows",
        "messages_sent",
        "messages_delivered",
        "messages_replayed",
        "early_deliveries",
        "reordered_deliveries",
        "crash_points",
        "restarts",
        "sweeps",
        "workers",
        "concurrent_messages",
        "faults_injected",
        "inputs_tried",
    }
)


def courier_figures(courier: Courier) -> dict[str, int]:
    stats = courier.stats
    return {
        "messages_sent": stats.sent,
        "messages_delivered": stats.delivered,
        "messages_replayed": stats.replayed,
        "early_deliveries": stats.early,
        "reordered_deliveries": stats.reordered,
        "restarts": stats.restarts,
        "sweeps": stats.sweeps,
    }


@contextlib.contextmanager
def collecting(test_id: str) -> Iterator[Counter[str]]:
    """Figures summed over a test's flows, recorded when the test body finishes."""
    figures: Counter[str] = Counter()
    yield figures
    record_figures(test_id, dict(figures))
