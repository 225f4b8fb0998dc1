"""train: fit a scikit-learn classifier on train.csv, log it to MLflow, save it as an output.

Logs the parameters, the training metrics and the model (an MLflow model named `model` in
the run); writes the same MLflow model to --model-output/model and the run id to
--model-output/train_run.json for the evaluate step.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
from common import (
    DATA_INFO_FILE,
    TRAIN_FILE,
    log_sklearn_model,
    pip_requirements,
    read_json,
    set_experiment_from_env,
    write_json,
)
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def build_model(kind: str, seed: int, c: float, n_estimators: int) -> Pipeline:
    if kind == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    if kind == "random_forest":
        return make_pipeline(RandomForestClassifier(n_estimators=n_estimators, random_state=seed))
    raise SystemExit(f"train: unknown --model-type {kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-data", type=Path, required=True)
    parser.add_argument("--model-type", default="logistic_regression")
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--n-estimators", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model-output", type=Path, required=True)
    args = parser.parse_args(argv)

    info = read_json(args.train_data / DATA_INFO_FILE)
    train = pd.read_csv(args.train_data / TRAIN_FILE)
    label = info["label_column"]
    features = train.drop(columns=[label])
    target = train[label]
    model = build_model(args.model_type, args.seed, args.c, args.n_estimators)

    set_experiment_from_env()
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                "retrain.step": "train",
                "retrain_run_id": os.environ.get("RETRAIN_RUN_ID", ""),
                "data_fingerprint": info["fingerprint"],
            }
        )
        mlflow.log_params(
            {
                "model_type": args.model_type,
                "c": args.c,
                "n_estimators": args.n_estimators,
                "seed": args.seed,
                "train_rows": len(train),
                "features": len(features.columns),
            }
        )
        model.fit(features, target)
        mlflow.log_metric("train_accuracy", float(accuracy_score(target, model.predict(features))))
        log_sklearn_model(model, features.head(5))
        run_id = run.info.run_id

    out = args.model_output
    out.mkdir(parents=True, exist_ok=True)
    mlflow.sklearn.save_model(model, str(out / "model"), pip_requirements=pip_requirements())
    write_json(out / "train_run.json", {"mlflow_run_id": run_id, "model_type": args.model_type})
    print(f"train: {args.model_type} on {len(train)} rows, MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
