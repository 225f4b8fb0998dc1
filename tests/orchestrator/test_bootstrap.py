"""`bootstrap` with every port given builds no client and wires the settings' knobs; an unknown
override is refused. And the in-memory fakes keep the contracts the service layer relies on
(ETags, idempotent audit, scheduled delivery, traffic rules), or the other tests prove little."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.policy import ModelPolicy
from orchestrator.aggregate import ModelAggregate
from orchestrator.bootstrap import OVERRIDABLE, Runtime, bootstrap
from orchestrator.messages import Envelope
from orchestrator.ports import (
    AuditRecord,
    ConcurrencyConflict,
    DeploymentBusy,
    EndpointError,
    InvalidTraffic,
    OnlineEndpoint,
    TrainingBackend,
)
from orchestrator.settings import Settings
from tests.fakes import (
    START,
    FakeClock,
    FakeEndpoint,
    FakeTrainingBackend,
    InMemoryAuditLog,
    InMemoryBus,
    InMemoryStateStore,
    fake_runtime,
    fake_settings,
    landed,
    policy_yaml,
    start_promotion,
)

# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("name", ["endpoint", "settings_", "Store", "outbox"])
def test_an_unknown_override_is_refused_by_name(name: str):
    with pytest.raises(TypeError, match=rf"unknown port\(s\) \['{name}'\]") as raised:
        bootstrap(fake_settings(), **{name: object()})
    assert "known: " in str(raised.value) and "endpoints" in str(raised.value)


def test_the_overridable_ports_are_the_ones_documented():
    documented = bootstrap.__doc__ or ""
    assert all(f"`{name}`" in documented for name in OVERRIDABLE), sorted(OVERRIDABLE)
    assert "signer" in OVERRIDABLE and "store" in OVERRIDABLE


@pytest.fixture
def no_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any storage, Service Bus or MLflow client built from here on fails the test."""
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a client was built although every port was given")

    for client in (BlobServiceClient, QueueServiceClient):
        monkeypatch.setattr(client, "from_connection_string", refuse)
        monkeypatch.setattr(client, "__init__", refuse)
    monkeypatch.setattr("adapters.azure_credential.azure_credential", refuse, raising=False)


@pytest.mark.usefixtures("no_clients")
def test_a_runtime_whose_ports_are_all_given_builds_no_client():
    w = fake_runtime(training=FakeTrainingBackend(auto_complete=True), guard_clients=False)
    runtime = w.runtime
    ports = runtime.ports
    assert ports.store is w.store and ports.audit is w.audit and ports.bus is w.bus
    assert ports.training is w.training and ports.metrics is w.metrics
    assert ports.registry is w.registry and ports.events is w.events
    assert ports.policies is w.policies and ports.clock is w.clock
    assert runtime.dead_letters is w.dead_letters

    # A whole flow, every query and the sweep: still no client.
    w.handle(landed("churn", 1))
    w.run()
    assert w.aggregate("churn").promotion.champion is not None
    runtime.queries.model_status("churn")
    runtime.queries.audit("churn")
    runtime.queries.runs("churn")
    runtime.maintenance.sweep()
    built = {"blob_service", "queue_service"} & set(runtime.__dict__)
    assert built == set()


def test_the_endpoint_factory_is_asked_once_per_endpoint_with_its_policy():
    asked: list[ModelPolicy] = []
    endpoints = {"churn-ep": FakeEndpoint(), "fraud-ep": FakeEndpoint()}

    def endpoint_for(policy: ModelPolicy) -> OnlineEndpoint:
        asked.append(policy)
        return endpoints[policy.endpoint]

    w = fake_runtime([policy_yaml("churn"), policy_yaml("fraud")], endpoints=endpoint_for)
    for model in ("churn", "fraud"):
        w.handle(start_promotion(model, "1"))
    w.handle(start_promotion("churn", "2"))  # queued; the same endpoint again
    w.run()
    assert [policy.model for policy in asked] == ["churn", "fraud"]
    assert endpoints["churn-ep"].live == {"churn-v2": 100}
    assert endpoints["fraud-ep"].live == {"fraud-v1": 100}
    assert isinstance(endpoints["churn-ep"], OnlineEndpoint)
    assert isinstance(w.training, TrainingBackend)


def test_the_settings_knobs_reach_the_service_layer():
    settings = fake_settings(
        DEPLOYMENT_POLL_SECONDS="7",
        MAX_EFFECT_ATTEMPTS="9",
        EFFECT_RETRY_SECONDS="120",
        AZUREML_COMPUTE="gpu-cluster",
    )
    w = fake_runtime(settings=settings)
    ports = w.runtime.ports
    assert ports.deployment_poll == timedelta(seconds=7)
    assert (ports.max_effect_attempts, ports.effect_retry_window) == (9, timedelta(minutes=2))
    assert ports.default_compute == "gpu-cluster"

    w.handle(start_promotion("churn", "1"))
    [check] = w.bus.pending
    assert check.envelope.type == "DeploymentCheck"
    assert check.not_before == START + timedelta(seconds=7)

    w.handle(landed("churn", 1))
    w.clock.advance(1)
    w.deliver_due()
    [request] = w.training.submissions
    assert request.compute == "gpu-cluster"  # the policy names none


def test_fake_settings_ignore_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MAX_EFFECT_ATTEMPTS", "77")
    monkeypatch.setenv("AZUREML_WORKSPACE", "someones-workspace")
    settings = fake_settings()
    assert isinstance(settings, Settings)
    assert settings.max_effect_attempts == 5 and not settings.uses_azureml
    assert not settings.uses_service_bus and not settings.uses_event_hubs


def test_the_clock_is_injected_everywhere():
    clock = FakeClock(START + timedelta(days=3))
    w = fake_runtime(clock=clock)
    assert isinstance(w.runtime, Runtime) and w.runtime.ports.clock is clock
    w.handle(landed("churn", 1))
    [record, _] = w.audit.read("churn")
    assert record.time == clock()
    [close] = w.bus.pending
    assert close.not_before == clock() + timedelta(seconds=1)


# --------------------------------------------------------------------------- the fakes' contracts


def test_the_fake_store_refuses_a_stale_etag_and_a_create_over_an_existing_key():
    store = InMemoryStateStore()
    fresh, etag = store.load("churn")
    assert etag is None and fresh == ModelAggregate.new("churn")
    first = store.save("churn", fresh.model_copy(update={"version": 1}), None)
    with pytest.raises(ConcurrencyConflict):
        store.save("churn", fresh, None)  # created meanwhile
    second = store.save("churn", fresh.model_copy(update={"version": 2}), first)
    assert second != first
    with pytest.raises(ConcurrencyConflict):
        store.save("churn", fresh, first)  # stale
    with pytest.raises(ConcurrencyConflict):
        store.save("fraud", fresh, first)  # an ETag for a blob that does not exist
    assert store.load("churn") == (fresh.model_copy(update={"version": 2}), second)
    assert store.conflicts["churn"] == 2 and store.list_keys() == ["churn"]


def test_the_fake_store_shares_no_mutable_state_with_its_callers():
    store = InMemoryStateStore()
    aggregate, _ = store.update("churn", lambda a: a.model_copy(update={"seen_messages": ["m1"]}))
    aggregate.seen_messages.append("mutated after the save")
    loaded, _ = store.load("churn")
    loaded.seen_messages.append("mutated after the load")
    assert store.load("churn")[0].seen_messages == ["m1"]


def test_the_fake_store_update_bumps_the_version_retries_conflicts_and_gives_up():
    store = InMemoryStateStore(max_attempts=3)
    seen: list[int] = []

    def change(aggregate: ModelAggregate) -> ModelAggregate:
        seen.append(aggregate.version)
        return aggregate.model_copy(update={"seen_messages": [*aggregate.seen_messages, "x"]})

    assert store.update("churn", change) == (store.peek("churn"), True)
    assert store.peek("churn").version == 1
    stale = store.load("churn")
    store.update("churn", change)  # someone else writes
    state, wrote = store.update("churn", change, loaded=stale)
    assert wrote and state.version == 3 and seen == [0, 1, 1, 2]
    assert store.conflicts["churn"] == 1
    assert store.update("churn", lambda a: None) == (store.peek("churn"), False)

    for _ in range(3):
        store.interleave("churn", lambda: store.update("churn", change))
    with pytest.raises(ConcurrencyConflict, match="gave up after 3"):
        store.update("churn", change)


def test_the_fake_audit_log_is_append_only_and_idempotent():
    audit = InMemoryAuditLog()

    def record(version: int, seq: int, action: str) -> AuditRecord:
        return AuditRecord(
            model="churn", aggregate_version=version, seq=seq, time=START, action=action
        )

    audit.append([record(2, 0, "b"), record(1, 1, "a2"), record(1, 0, "a1")])
    audit.append([record(1, 0, "rewritten")])
    assert audit.actions("churn") == ["a1", "a2", "b"]
    assert [r.action for r in audit.read("churn", since_version=2)] == ["b"]
    assert audit.read("fraud") == [] and audit.appends == 3


def test_the_fake_bus_delivers_what_is_due_in_order_and_honours_cancel():
    bus = InMemoryBus()
    later = Envelope.new("GateCheck", "churn", {}, message_id="later")
    sooner = Envelope.new("GateCheck", "churn", {}, message_id="sooner")
    now = Envelope.new("DataLanded", "churn", {}, message_id="now")
    canceled = Envelope.new("ApprovalTimedOut", "churn", {}, message_id="canceled")
    bus.schedule(later, START + timedelta(minutes=2))
    bus.schedule(sooner, START + timedelta(minutes=1))
    handle = bus.schedule(canceled, START + timedelta(seconds=1))
    bus.send(now)
    bus.cancel(handle)
    assert [e.message_id for e in bus.due(START)] == ["now"]
    assert bus.due(START) == []
    assert bus.next_due_at() == START + timedelta(minutes=1)
    due = bus.due(START + timedelta(minutes=5))
    assert [e.message_id for e in due] == ["sooner", "later"]
    bus.cancel(handle)  # already canceled (or delivered): fine
    assert bus.pending == [] and len(bus.envelopes()) == 4


def test_the_fake_endpoint_applies_the_traffic_and_delete_rules():
    endpoint = FakeEndpoint()
    endpoint.serve("churn", "1")
    endpoint.deploy("churn", "2", "churn-v2")
    with pytest.raises(InvalidTraffic, match="not succeeded"):
        endpoint.set_traffic({"churn-v1": 90, "churn-v2": 10})  # still creating
    assert endpoint.deployment_state("churn-v2").state == "creating"
    assert endpoint.deployment_state("churn-v2").state == "succeeded"
    with pytest.raises(InvalidTraffic, match="sum to 100"):
        endpoint.set_traffic({"churn-v1": 90})
    with pytest.raises(InvalidTraffic, match="do not exist"):
        endpoint.set_traffic({"churn-v1": 90, "churn-v3": 10})
    endpoint.set_traffic({"churn-v1": 90, "churn-v2": 10})
    with pytest.raises(EndpointError, match="move the traffic first"):
        endpoint.delete("churn-v2")  # shares the live traffic
    endpoint.busy_deletes = 1
    endpoint.set_traffic({"churn-v1": 100, "churn-v2": 0})
    with pytest.raises(DeploymentBusy):
        endpoint.delete("churn-v2")
    endpoint.delete("churn-v2")
    endpoint.delete("churn-v2")  # missing: fine
    assert endpoint.deploy("churn", "1", "churn-v1") == "churn-v1"  # same version: no-op
    assert endpoint.creations == {"churn-v2": 1}
    assert endpoint.traffic() == {"churn-v1": 100} and set(endpoint.deployed) == {"churn-v1"}
    endpoint.delete("churn-v1")  # the only deployment serving may go: nothing serves
    assert endpoint.traffic() == {} and endpoint.deployed == {}
    assert len(endpoint.violations) == 4


def test_a_policy_whose_data_container_is_not_watched_is_refused_at_start(tmp_path) -> None:
    """New blobs are taken from DATA_CONTAINER only: a policy landing its data elsewhere would
    never start anything, so the app refuses it at start, naming the file and the field."""
    from domain.policy import PolicyError
    from orchestrator.policy_files import load_policies
    from tests.harness import policy_yaml

    (tmp_path / "churn.yml").write_text(policy_yaml("churn"))
    other = policy_yaml("fraud").replace("container: training-data", "container: fraud-data")
    assert "container: fraud-data" in other
    (tmp_path / "fraud.yml").write_text(other)
    assert set(load_policies(tmp_path)) == {"churn", "fraud"}  # DATA_CONTAINER unknown
    with pytest.raises(PolicyError) as refused:
        load_policies(tmp_path, watched_container="training-data")
    assert refused.value.path.endswith("fraud.yml") and refused.value.field == "data.container"
    assert "DATA_CONTAINER='training-data'" in refused.value.reason


def test_a_latency_gate_with_no_latency_source_in_azure_is_refused_at_start() -> None:
    """In Azure the data collector records no latency: a latency_ms canary gate could never
    pass, so the runtime refuses the policy when it loads it, naming the gate."""
    from domain.policy import PolicyError, parse_policy

    text = policy_yaml("churn", canary="{gates: [{metric: accuracy}, {metric: latency_ms}]}")
    policies = {"churn": parse_policy(text)}
    azure = fake_settings(
        AZUREML_WORKSPACE="ws", AZUREML_SUBSCRIPTION_ID="s", AZUREML_RESOURCE_GROUP="rg"
    )
    with pytest.raises(PolicyError) as refused:
        _ = bootstrap(azure, policies=policies).policies
    assert refused.value.field == "canary.gates.1" and "latency_ms" in refused.value.reason
    with_source = fake_settings(
        AZUREML_WORKSPACE="ws",
        AZUREML_SUBSCRIPTION_ID="s",
        AZUREML_RESOURCE_GROUP="rg",
        CANARY_LATENCY_WORKSPACE_ID="11111111-2222-3333-4444-555555555555",
    )
    assert bootstrap(with_source, policies=policies).policies == policies
    assert bootstrap(fake_settings(), policies=policies).policies == policies  # local: it has
