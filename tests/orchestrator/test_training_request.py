"""The training backend's request, built by the outbox from the effect and the policy."""

from __future__ import annotations

from domain.effects import SubmitTrainingJob
from domain.policy import ModelPolicy
from orchestrator.outbox import training_request


def policy(**pipeline: object) -> ModelPolicy:
    return ModelPolicy.model_validate(
        {
            "model": "churn",
            "endpoint": "churn-ep",
            "data": {"container": "data"},
            "pipeline": pipeline,
        }
    )


def test_training_request_from_the_effect_and_the_policy() -> None:
    effect = SubmitTrainingJob(
        run_id="churn-w1", manifest="churn-w1", data_count=2, data_sample=["a"], reason="window w1"
    )
    # The data is the manifest's list, which the outbox reads; the effect carries a sample.
    request = training_request(
        policy(), effect, ["a", "b"], champion_version="3", default_compute="cpu"
    )
    assert request.run_id == "churn-w1" and request.model == "churn"
    assert request.experiment == "churn-retrain" and request.compute == "cpu"
    assert request.pipeline_file == "pipelines/azureml/pipeline.yml"
    assert request.champion_version == "3" and request.data_uris == ["a", "b"]
    assert request.tags["retrain_reason"] == "window w1"
    named = training_request(
        policy(compute="gpu", experiment="x"), effect, ["a"], default_compute="cpu"
    )
    assert (named.compute, named.experiment) == ("gpu", "x")


def test_the_request_carries_the_policys_columns() -> None:
    effect = SubmitTrainingJob(
        run_id="wine-w1", manifest="wine-w1", data_count=1, data_sample=["a"], reason="window"
    )
    default = training_request(policy(), effect, ["a"])
    assert (default.label_column, default.feature_columns) == ("label", None)
    named = ModelPolicy.model_validate(
        {
            "model": "wine",
            "endpoint": "wine-ep",
            "data": {"container": "data", "label_column": "cultivar", "feature_columns": ["x"]},
        }
    )
    request = training_request(named, effect, ["a"])
    assert (request.label_column, request.feature_columns) == ("cultivar", ["x"])
