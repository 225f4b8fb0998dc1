"""evaluate_register: score the candidate and the champion on the same holdout, register.

Logs to MLflow (this step's run): `auc`, `accuracy`, `holdout_rows` for the candidate and
`champion_auc`, `champion_accuracy` for the current champion (models:/<name>/<version>),
when there is one. Logs the candidate as the MLflow model `model` of this run and registers
it as a new version of <model_name>, tagged with the job id, the data URIs and the sha256
fingerprint of the data. Writes registration.json to --registration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from common import (
    DATA_INFO_FILE,
    HOLDOUT_FILE,
    REGISTRATION_FILE,
    log_sklearn_model,
    optional,
    read_json,
    set_experiment_from_env,
    write_json,
)
from sklearn.metrics import accuracy_score, roc_auc_score

TAG_LIMIT = 4000  # keep tag values well under the registries' limits


def score(model: Any, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
    predictions = model.predict(features)
    metrics = {"accuracy": float(accuracy_score(target, predictions))}
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        if proba.shape[1] == 2:
            metrics["auc"] = float(roc_auc_score(target, proba[:, 1]))
        else:
            metrics["auc"] = float(roc_auc_score(target, proba, multi_class="ovr"))
    return metrics


def load_champion(name: str, version: str) -> Any:
    uri = f"models:/{name}/{version}"
    try:
        return mlflow.sklearn.load_model(uri)
    except Exception:  # not a scikit-learn flavour: predictions only (accuracy, no auc)
        return mlflow.pyfunc.load_model(uri)


def tag_pipeline_run(run: Any, tags: dict[str, str]) -> None:
    """In Azure ML, also tag the pipeline's run: the orchestrator reads the version there."""
    parent = os.environ.get("AZUREML_ROOT_RUN_ID") or run.data.tags.get("mlflow.parentRunId")
    if not parent or parent == run.info.run_id:
        return
    try:
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_tag(parent, key, value)
    except Exception as exc:  # the step's own tags remain; the backend falls back to them
        print(f"evaluate_register: could not tag the pipeline run: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--holdout-data", type=Path, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--champion-version", default="none")
    parser.add_argument("--run-id", default="manual")
    parser.add_argument("--data-uris", default="")
    parser.add_argument("--registration", type=Path, required=True)
    args = parser.parse_args(argv)

    info = read_json(args.holdout_data / DATA_INFO_FILE)
    holdout = pd.read_csv(args.holdout_data / HOLDOUT_FILE)
    label = info["label_column"]
    features = holdout.drop(columns=[label])
    target = holdout[label]
    candidate = mlflow.sklearn.load_model(str(args.model / "model"))
    train_run = read_json(args.model / "train_run.json")
    champion_version = optional(args.champion_version)
    # Our run id is the Azure ML job name; by hand ("manual") fall back to Azure ML's own.
    job_id = optional(args.run_id) if args.run_id != "manual" else None
    job_id = (
        job_id
        or os.environ.get("AZUREML_ROOT_RUN_ID")
        or os.environ.get("RETRAIN_RUN_ID", "manual")
    )

    set_experiment_from_env()
    with mlflow.start_run() as run:
        metrics = score(candidate, features, target)
        metrics["holdout_rows"] = float(len(holdout))
        champion_error = None
        if champion_version:
            try:
                champion = load_champion(args.model_name, champion_version)
                champion_metrics = score(champion, features, target)
                metrics |= {f"champion_{k}": v for k, v in champion_metrics.items()}
            except Exception as exc:  # the champion gate reads the missing metric as unknown
                champion_error = f"{type(exc).__name__}: {exc}"[:TAG_LIMIT]
                print(
                    f"evaluate_register: champion not evaluated: {champion_error}", file=sys.stderr
                )
        mlflow.log_metrics(metrics)
        tags = {
            "retrain.step": "evaluate_register",
            "job_id": job_id,
            "retrain_run_id": job_id,
            "data_uris": args.data_uris[:TAG_LIMIT],
            "data_fingerprint": info["fingerprint"],
            "data_files": str(info["files"]),
            "data_rows": str(info["rows"]),
            "champion_version": champion_version or "none",
            "train_mlflow_run_id": train_run["mlflow_run_id"],
        }
        if champion_error:
            tags["champion_error"] = champion_error
        mlflow.set_tags(tags)
        model_uri = log_sklearn_model(candidate, features.head(5))
        version = mlflow.register_model(
            model_uri,
            args.model_name,
            tags={k: v for k, v in tags.items() if k != "retrain.step"},
        )
        registered = {
            "registered_model_name": version.name,
            "registered_model_version": str(version.version),
        }
        mlflow.set_tags(registered)
        tag_pipeline_run(run, registered)
        registration = {
            "model_name": version.name,
            "version": str(version.version),
            "mlflow_run_id": run.info.run_id,
            "job_id": job_id,
            "data_fingerprint": info["fingerprint"],
            "metrics": metrics,
        }
    write_json(args.registration / REGISTRATION_FILE, registration)
    print(
        f"evaluate_register: {args.model_name} v{version.version} "
        + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
