"""Shared helpers of the retraining components (run as scripts: `python prepare.py ...`).

The components run in the Azure ML job's environment or, locally, under the local runner's
interpreter. They import only the standard library, pandas, scikit-learn and MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

LABEL = "label"
TRAIN_FILE = "train.csv"
HOLDOUT_FILE = "holdout.csv"
DATA_INFO_FILE = "data.json"
REGISTRATION_FILE = "registration.json"
NO_CHAMPION = "none"
ALL_FEATURES = "*"  # the feature_columns input that means "every column but the label"
# Beside the data, where the runner knows them: {path relative to the input: its URI}, so an
# error names the file the user sent (the local runner writes it; Azure ML mounts the data).
SOURCES_FILE = "_sources.json"


def csv_files(path: Path) -> list[Path]:
    """The CSV files of an input: the file itself, or every *.csv under the folder, sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.csv") if p.is_file())


def source_names(path: Path, files: list[Path]) -> dict[Path, str]:
    """How to name each file in a message: its URI when the runner recorded it, else its
    path relative to the input."""
    sources: dict[str, str] = {}
    if path.is_dir() and (path / SOURCES_FILE).is_file():
        sources = read_json(path / SOURCES_FILE)
    names = {}
    for file in files:
        relative = _relative(file, path)
        names[file] = sources.get(relative, relative)
    return names


def fingerprint(files: list[Path], root: Path) -> str:
    """sha256 over (relative name, content) of every file, in name order."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: _relative(f, root)):
        digest.update(_relative(file, root).encode())
        digest.update(b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _relative(file: Path, root: Path) -> str:
    return file.name if root.is_file() else file.relative_to(root).as_posix()


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def optional(value: str | None) -> str | None:
    """Optional string inputs: empty, "none" and unset mean "not given"."""
    if value is None or value.strip().lower() in ("", NO_CHAMPION, "null"):
        return None
    return value.strip()


def set_experiment_from_env() -> None:
    """Locally the runner names the experiment; in Azure ML the job does."""
    import mlflow

    name = os.environ.get("RETRAIN_EXPERIMENT")
    if name:
        mlflow.set_experiment(name)


def log_sklearn_model(model: Any, example: Any) -> str:
    """Log `model` as the MLflow model `model` of the active run (MLflow 2 or 3).

    Returns the URI to register it from.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(example, model.predict(example))
    options: dict[str, Any] = {"signature": signature, "pip_requirements": pip_requirements()}
    if int(mlflow.__version__.split(".")[0]) >= 3:
        return mlflow.sklearn.log_model(model, name="model", **options).model_uri
    # MLflow 2 (an older Azure ML environment)
    mlflow.sklearn.log_model(model, artifact_path="model", **options)
    return f"runs:/{mlflow.active_run().info.run_id}/model"


def pip_requirements() -> list[str]:
    """The serving requirements, stated (MLflow's inference runs a slow subprocess)."""
    import mlflow
    import pandas
    import sklearn

    return [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pandas.__version__}",
    ]
