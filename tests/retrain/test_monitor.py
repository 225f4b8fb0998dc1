"""Retrain on decay, pure: the monitor's decision (retrain/monitor.py) and how the retrain
rules take it (retrain/decide.py `MonitorEvaluated`): the stamp, the cooldown, the retrain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from domain.effects import SubmitTrainingJob
from domain.metrics import ArmStats
from domain.policy import ModelPolicy, MonitorSettings, PolicyError, parse_policy
from retrain.commands import MonitorEvaluated, PendingData
from retrain.decide import decide, observation_needed
from retrain.monitor import MonitorDecision, evaluate, is_due, live_window, signal_decision
from retrain.state import CurrentJob, MonitorRecord, RetrainTracker, RunRecord

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MONITOR = MonitorSettings(
    window=timedelta(hours=1),
    min_samples=500,
    accuracy_drop=0.03,
    max_error_rate=0.01,
    alpha=0.01,
    cooldown=timedelta(hours=6),
    every=timedelta(minutes=10),
)
OFFLINE = {"accuracy": 0.95, "auc": 0.97}  # the champion's own holdout: threshold 0.92


def arm(labeled: int, correct: int, requests: int | None = None, errors: int = 0) -> ArmStats:
    return ArmStats(
        deployment="churn-v3",
        requests=labeled if requests is None else requests,
        errors=errors,
        labeled=labeled,
        correct=correct,
    )


def judge(live: ArmStats | None, **kwargs: Any) -> MonitorDecision:
    monitor = kwargs.pop("monitor", MONITOR)
    values: dict[str, Any] = {
        "now": T0,
        "champion_version": "3",
        "offline": OFFLINE,
        "live": live,
    } | kwargs
    return evaluate(monitor, **values)


# --------------------------------------------------------------------------- the policy


def test_the_monitor_section_is_off_unless_given_and_bad_values_name_file_and_field():
    base = "model: churn\nendpoint: churn-ep\ndata: {container: data}\n"
    assert parse_policy(base).monitor is None
    given_ = parse_policy(base + "monitor: {window: 2h, accuracy_drop: 0.05, every: 5m}\n")
    assert given_.monitor is not None
    assert (given_.monitor.window, given_.monitor.every) == (
        timedelta(hours=2),
        timedelta(minutes=5),
    )
    for text, field in [
        ("monitor: {window: 0s}", "monitor.window"),
        ("monitor: {every: 0s}", "monitor.every"),
        ("monitor: {accuracy_drop: null, max_error_rate: null}", "monitor"),
        ("monitor: {max_error_rate: 1.5}", "monitor.max_error_rate"),
        ("monitor: {alpha: 0.7}", "monitor.alpha"),
        ("monitor: {min_samples: 0}", "monitor.min_samples"),
        ("monitor: {treshold: 0.1}", "monitor.treshold"),
    ]:
        with pytest.raises(PolicyError) as raised:
            parse_policy(base + text + "\n", "policies/churn.yml")
        assert (raised.value.path, raised.value.field) == ("policies/churn.yml", field)


# --------------------------------------------------------------------------- evaluate


def test_a_clear_drop_in_live_accuracy_triggers_with_its_evidence():
    decision = judge(arm(labeled=1000, correct=850))
    assert (decision.verdict, decision.trigger) == ("decayed", True)
    accuracy, errors = decision.checks
    assert accuracy.outcome == "breached" and errors.outcome == "within"
    assert accuracy.threshold == pytest.approx(0.92) and accuracy.observed == pytest.approx(0.85)
    assert accuracy.alpha == pytest.approx(0.005)  # alpha split between the two checks
    assert accuracy.p_value == pytest.approx(binom.cdf(850, 1000, 0.92))
    assert accuracy.p_value < 1e-10
    assert "accuracy 0.8500 below 0.9200" in decision.reason


def test_live_accuracy_a_little_under_the_threshold_is_noise_not_decay():
    # 0.91 < 0.92 as raw numbers, but 500 labels cannot show it: no retrain.
    decision = judge(arm(labeled=500, correct=455))
    assert (decision.verdict, decision.trigger) == ("healthy", False)
    assert decision.checks[0].p_value > 0.1


def test_too_few_samples_never_trigger_however_bad_they_look():
    decision = judge(arm(labeled=499, correct=0, requests=499, errors=499))
    assert (decision.verdict, decision.trigger) == ("insufficient_data", False)
    assert {check.outcome for check in decision.checks} == {"insufficient_data"}
    assert "fewer than min_samples" in decision.reason


def test_enough_requests_but_too_few_labels_judges_the_error_rate_only():
    decision = judge(arm(labeled=10, correct=0, requests=2000, errors=5))
    assert (decision.verdict, decision.trigger) == ("healthy", False)
    assert [c.outcome for c in decision.checks] == ["insufficient_data", "within"]
    failing = judge(arm(labeled=10, correct=10, requests=2000, errors=60))
    assert (failing.verdict, failing.trigger) == ("decayed", True)
    assert failing.checks[1].outcome == "breached" and "error_rate" in failing.reason


def test_a_decay_within_the_cooldown_is_recorded_without_a_trigger():
    decayed = arm(labeled=1000, correct=800)
    cooling = judge(decayed, last_triggered_at=T0 - timedelta(hours=5))
    assert (cooling.verdict, cooling.trigger) == ("cooling_down", False)
    assert cooling.cooldown_until == T0 + timedelta(hours=1)
    after = judge(decayed, last_triggered_at=T0 - timedelta(hours=6))
    assert (after.verdict, after.trigger) == ("decayed", True)


def test_nothing_to_judge_is_never_a_trigger():
    bad = arm(labeled=1000, correct=100)
    assert judge(bad, champion_version=None).verdict == "no_champion"
    assert judge(bad, busy="promotion p1 is canary").verdict == "busy"
    assert judge(None).verdict == "unreadable"
    assert judge(bad, offline=None).verdict == "unreadable"
    for decision in (judge(bad, champion_version=None), judge(None), judge(bad, offline=None)):
        assert not decision.trigger


def test_a_champion_without_an_offline_accuracy_is_judged_on_errors_only():
    decision = judge(arm(labeled=1000, correct=100), offline={"auc": 0.9})
    assert [c.outcome for c in decision.checks] == ["no_baseline", "within"]
    assert (decision.verdict, decision.trigger) == ("healthy", False)
    only_accuracy = MONITOR.model_copy(update={"max_error_rate": None})
    alone = judge(arm(labeled=1000, correct=100), offline={"auc": 0.9}, monitor=only_accuracy)
    assert (alone.verdict, alone.trigger) == ("insufficient_data", False)


def test_the_window_never_reaches_back_before_the_champion_took_production():
    assert live_window(MONITOR, T0 - timedelta(days=2), T0) == (T0 - timedelta(hours=1), T0)
    since = T0 - timedelta(minutes=20)
    assert live_window(MONITOR, since, T0) == (since, T0)
    assert is_due(None, MONITOR, T0)
    assert not is_due(T0 - timedelta(minutes=9), MONITOR, T0)
    assert is_due(T0 - timedelta(minutes=10), MONITOR, T0)


@pytest.mark.parametrize("n", [500, 731, 1000, 2500])
def test_a_champion_exactly_at_the_threshold_triggers_at_most_alpha_of_the_time(n):
    """The test's exact size: the probability, for a champion whose live accuracy is exactly
    offline - drop, of every count the monitor would call decayed. Below its alpha share."""
    threshold = OFFLINE["accuracy"] - 0.03
    accuracy_only = MONITOR.model_copy(update={"max_error_rate": None})
    size = sum(
        binom.pmf(k, n, threshold)
        for k in range(n + 1)
        if judge(arm(labeled=n, correct=k), monitor=accuracy_only).trigger
    )
    assert 0 < size <= accuracy_only.alpha


@settings(max_examples=200, deadline=None)
@given(
    labeled=st.integers(0, 5000),
    correct_share=st.floats(0, 1),
    requests_extra=st.integers(0, 5000),
    error_share=st.floats(0, 1),
    offline=st.floats(0, 1),
)
def test_a_trigger_always_rests_on_enough_samples_and_a_significant_test(
    labeled, correct_share, requests_extra, error_share, offline
):
    correct = round(labeled * correct_share)
    requests = labeled + requests_extra
    errors = min(round(requests * error_share), requests_extra)
    live = arm(labeled=labeled, correct=correct, requests=requests, errors=errors)
    decision = judge(live, offline={"accuracy": offline})
    for check in decision.checks:
        if check.outcome == "breached":
            assert check.samples >= MONITOR.min_samples
            assert check.p_value is not None and check.alpha is not None
            assert check.p_value < check.alpha
            # Never on the raw numbers alone: a breach is also past the threshold.
            if check.metric == "accuracy":
                assert check.observed < check.threshold
            else:
                assert check.observed > check.threshold
    assert decision.trigger == any(c.outcome == "breached" for c in decision.checks)
    if labeled < MONITOR.min_samples and requests < MONITOR.min_samples:
        assert not decision.trigger


# --------------------------------------------------------------------------- decide


def policy(**monitor: Any) -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "model": "churn",
            "endpoint": "churn-ep",
            "data": {"container": "data", "prefix": "churn/"},
            "retrain": {"min_new_files": 5, "cooldown": "30m"},
            "monitor": {"cooldown": "6h", "every": "10m"} | monitor,
        }
    )


LAST_RUN = RunRecord(
    run_id="churn-run-1",
    status="completed",
    registered_version="3",
    manifest="churn-run-1",
    data_count=40,
    data_sample=["https://acct.blob.core.windows.net/data/churn/a.csv"],
)
NOTHING_PENDING = PendingData()


def decayed(now: datetime = T0, pending: PendingData | None = None) -> MonitorEvaluated:
    decision = judge(arm(labeled=1000, correct=850), now=now)
    command = MonitorEvaluated(decision=decision)
    assert observation_needed(RetrainTracker(), command)  # a trigger observes what is pending
    return command.model_copy(update={"pending": pending or NOTHING_PENDING})


def test_a_decay_starts_a_forced_retrain_on_the_last_runs_data_with_its_stamp():
    tracker = RetrainTracker(runs=[LAST_RUN])
    decision = decide(tracker, decayed(), policy(), T0)
    [submit] = [e for e in decision.effects if isinstance(e, SubmitTrainingJob)]
    # No new data (below min_new_files): decay is reason enough, the last run's data retrains.
    assert (submit.manifest, submit.data_count) == ("churn-run-1", 40)
    assert submit.reason.startswith("decay (monitor): accuracy 0.8500 below 0.9200")
    record = decision.state.monitor
    assert record is not None
    assert (record.verdict, record.triggered_at, record.triggered_run) == (
        "decayed",
        T0,
        submit.run_id,
    )
    assert decision.state.current_job is not None
    actions = [entry.action for entry in decision.audit]
    assert actions == ["monitor.decay_detected", "retrain.job_submitted"]
    evidence = decision.audit[0].detail
    assert evidence["run_id"] == submit.run_id and evidence["by"] == "monitor"
    assert (
        evidence["checks"][0]["outcome"] == "breached" and evidence["checks"][0]["p_value"] < 1e-9
    )


def test_a_decay_takes_the_data_pending_too():
    pending = PendingData(items=2, rows=100, sample=["https://acct.blob.core.windows.net/x.csv"])
    decision = decide(RetrainTracker(runs=[LAST_RUN]), decayed(pending=pending), policy(), T0)
    [submit] = [e for e in decision.effects if isinstance(e, SubmitTrainingJob)]
    assert (submit.manifest, submit.data_count) == (submit.run_id, 2)


def test_once_per_cooldown_and_an_overlapping_pass_changes_nothing():
    started = decide(RetrainTracker(runs=[LAST_RUN]), decayed(), policy(), T0).state
    # A second timer pass at the same moment (overlap, or a crash before the dispatch).
    again = decide(started, decayed(), policy(), T0 + timedelta(seconds=5))
    assert again.ignored and "not due" in again.ignored and again.state is started
    # The job ended; still decayed 1 h later: within the 6 h cooldown, recorded, nothing run.
    ended = started.model_copy(update={"current_job": None})
    later = T0 + timedelta(hours=1)
    cooling = decide(ended, decayed(later), policy(), later)
    assert cooling.effects == [] and cooling.state.monitor is not None
    assert cooling.state.monitor.verdict == "cooling_down"
    assert cooling.state.monitor.triggered_at == T0
    assert [entry.action for entry in cooling.audit] == ["monitor.evaluated"]  # a change: kept
    same = decide(
        cooling.state,
        decayed(later + timedelta(minutes=10)),
        policy(),
        later + timedelta(minutes=10),
    )
    assert same.effects == [] and same.audit == []  # no change of verdict: no audit record
    # After the cooldown, with no new data: the same data would give the same model back.
    after = T0 + timedelta(hours=6)
    waiting = decide(same.state, decayed(after), policy(), after)
    assert waiting.effects == [] and waiting.state.monitor is not None
    assert waiting.state.monitor.verdict == "awaiting_data"
    # With new data: the next retrain.
    fresh = PendingData(items=1, rows=10, sample=["https://acct.blob.core.windows.net/y.csv"])
    later_still = after + timedelta(minutes=10)
    retrain = decide(waiting.state, decayed(later_still, fresh), policy(), later_still)
    assert [type(e).__name__ for e in retrain.effects][:1] == ["SubmitTrainingJob"]
    assert retrain.state.monitor is not None
    assert retrain.state.monitor.triggered_at == later_still


def test_a_running_job_or_nothing_to_train_on_starts_nothing():
    running = RetrainTracker(
        runs=[LAST_RUN], current_job=CurrentJob(run_id="churn-run-2", submitted_at=T0)
    )
    busy = decide(running, decayed(), policy(), T0)
    assert busy.effects == [] and busy.state.monitor is not None
    assert busy.state.monitor.verdict == "busy" and busy.state.monitor.triggered_at is None
    # A champion with no run on record and no data pending: the decay is on record, stamped
    # (not tried again every pass), and nothing is submitted.
    nothing = decide(RetrainTracker(), decayed(), policy(), T0)
    assert nothing.effects == [] and nothing.ignored == "nothing to train on"
    assert [entry.action for entry in nothing.audit] == [
        "monitor.decay_detected",
        "retrain.request_no_data",
    ]
    assert nothing.state.monitor is not None and nothing.state.monitor.triggered_at == T0


def test_a_healthy_or_insufficient_evaluation_is_recorded_without_effects():
    insufficient = MonitorEvaluated(decision=judge(arm(labeled=10, correct=0)))
    assert not observation_needed(RetrainTracker(), insufficient)
    decision = decide(RetrainTracker(runs=[LAST_RUN]), insufficient, policy(), T0)
    assert decision.effects == []
    assert decision.state.monitor == MonitorRecord(
        evaluated_at=T0,
        verdict="insufficient_data",
        reason=insufficient.decision.reason,
        champion_version="3",
    )
    assert [entry.action for entry in decision.audit] == ["monitor.evaluated"]
    no_monitor = ModelPolicy.model_validate(
        {"model": "churn", "endpoint": "churn-ep", "data": {"container": "data"}}
    )
    assert decide(RetrainTracker(), insufficient, no_monitor, T0).ignored


def test_an_outside_signal_triggers_within_the_same_cooldown():
    signal = signal_decision(
        source="azureml-model-monitor",
        signal="data_drift",
        detail="feature 'age' drift 0.4 > 0.2",
        champion_version="3",
    )
    command = MonitorEvaluated(decision=signal, pending=NOTHING_PENDING)
    started = decide(RetrainTracker(runs=[LAST_RUN]), command, policy(), T0)
    [submit] = [e for e in started.effects if isinstance(e, SubmitTrainingJob)]
    assert submit.reason.startswith(
        "decay (azureml-model-monitor): azureml-model-monitor: data_drift"
    )
    ended = started.state.model_copy(update={"current_job": None})
    # A second alert a minute later (not bound by `every`, bound by the cooldown).
    later = T0 + timedelta(minutes=1)
    second = decide(ended, command, policy(), later)
    assert second.effects == []
    assert [entry.action for entry in second.audit] == ["monitor.signal_ignored"]


def test_a_new_champions_first_verdict_is_on_record_even_when_it_repeats_the_last():
    healthy_v3 = MonitorEvaluated(decision=judge(arm(labeled=1000, correct=990)))
    first = decide(RetrainTracker(runs=[LAST_RUN]), healthy_v3, policy(), T0)
    assert [entry.action for entry in first.audit] == ["monitor.evaluated"]
    later = T0 + timedelta(minutes=10)
    same = decide(first.state, healthy_v3, policy(), later)
    assert same.audit == []  # the same verdict on the same champion: state only
    v4 = judge(arm(labeled=1000, correct=990), champion_version="4", now=later)
    after = T0 + timedelta(minutes=20)
    new_champion = decide(same.state, MonitorEvaluated(decision=v4), policy(), after)
    assert [entry.action for entry in new_champion.audit] == ["monitor.evaluated"]
    assert new_champion.audit[0].detail["champion_version"] == "4"
