"""The production bake with a holdback through the service layer, on in-memory fakes: the
endpoint serves the holdback's split, both arms are read over the same window, and harm at
full load rolls back (traffic on the known-good deployment first, then the candidate gone)."""

from __future__ import annotations

from domain.metrics import ArmStats
from tests.fakes import FakeWorld, fake_runtime, policy_yaml, start_promotion

V1, V2 = "churn-v1", "churn-v2"
CANARY = (
    "{steps: [50], bake: 5m, max_step_duration: 10m, min_samples_per_arm: 50, "
    "gates: [{kind: canary, metric: error_rate, margin: 0.01}]}"
)


def arm(deployment: str, errors: int, requests: int = 20_000) -> ArmStats:
    return ArmStats(deployment=deployment, requests=requests, errors=errors)


def in_bake() -> FakeWorld:
    w = fake_runtime(policy_yaml("churn", canary=CANARY, production_bake="10m"))
    w.seed_champion("churn", "1")
    # Enough requests for the canary's design to pass at its one look.
    w.metrics.arm_stats = {V1: arm(V1, 20), V2: arm(V2, 20)}
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "production_bake")  # type: ignore[union-attr]
    assert w.endpoint.live == {V2: 95, V1: 5}
    return w


def test_harm_at_full_load_rolls_back_from_the_bake() -> None:
    w = in_bake()
    w.metrics.arm_stats[V2] = arm(V2, 2_000)  # 10 % errors once it serves 95 %
    w.run(until=lambda: w.aggregate("churn").promotion.active is None)

    promotion = w.aggregate("churn").promotion
    [*_, entry] = promotion.history
    assert str(entry.outcome) == "rolled_back" and "harm" in entry.reason
    assert promotion.champion is not None and promotion.champion.version == "1"
    assert w.endpoint.traffic_maps[-2:] == [{V2: 95, V1: 5}, {V1: 100}]
    assert w.endpoint.live == {V1: 100} and set(w.endpoint.deployed) == {V1}
    # The bake's look read both arms over the same window.
    [*_, (_, _, step, arms)] = w.metrics.live_reads
    assert step == 1 and [a.deployment for a in arms] == [V2, V1]
    assert arms[0].window_start == arms[1].window_start
    assert arms[0].window_end == arms[1].window_end


def test_no_harm_completes_and_removes_the_holdback() -> None:
    w = in_bake()
    w.run(until=lambda: w.aggregate("churn").promotion.active is None)
    promotion = w.aggregate("churn").promotion
    assert str(promotion.history[-1].outcome) == "completed"
    assert w.endpoint.traffic_maps[-2:] == [{V2: 95, V1: 5}, {V2: 100}]
    assert w.endpoint.live == {V2: 100} and set(w.endpoint.deployed) == {V2}
    assert promotion.last_known_good is not None and promotion.last_known_good.version == "2"
