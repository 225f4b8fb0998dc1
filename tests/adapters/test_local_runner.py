"""The local training backend: the real component YAML, real subprocesses, real MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.local_runner import LocalTrainingBackend, _command_argv
from orchestrator.ports import TrainingBackend, TrainingBackendError, TrainingRequest
from orchestrator.settings import APP_ROOT
from tests.mlflow_store import mlflow_store

PIPELINE = "pipelines/azureml/pipeline.yml"


@pytest.fixture
def breast_cancer(tmp_path: Path) -> tuple[Path, Path]:
    """scikit-learn's breast cancer data as two CSV files (label column `label`)."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.columns = [re.sub(r"\W+", "_", column) for column in frame.columns]
    first, second = tmp_path / "data" / "a.csv", tmp_path / "landing" / "b.csv"
    for path, part in ((first, frame.iloc[:300]), (second, frame.iloc[300:])):
        path.parent.mkdir(parents=True)
        part.to_csv(path, index=False)
    return first, second


@pytest.fixture
def tracking_uri(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"


def register_champion(tracking_uri: str, csv: Path, name: str) -> str:
    """Version 1 of `name`, trained in-process on `csv` (the production model to beat)."""
    import mlflow
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    data = pd.read_csv(csv)
    model = DummyClassifier(strategy="prior").fit(data.drop(columns=["label"]), data["label"])
    with mlflow_store(tracking_uri):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        version = mlflow.register_model(info.model_uri, name)
    return str(version.version)


def request(run_id: str, data_uris: list[str], **overrides: object) -> TrainingRequest:
    fields: dict[str, object] = {
        "run_id": run_id,
        "model": "bc",
        "pipeline_file": PIPELINE,
        "data_uris": data_uris,
        "experiment": "bc-retrain",
    }
    return TrainingRequest(**(fields | overrides))


@pytest.mark.slow
def test_trains_registers_and_reports_across_processes(
    tmp_path: Path, breast_cancer: tuple[Path, Path], tracking_uri: str
) -> None:
    from mlflow import MlflowClient

    first, second = breast_cancer
    champion = register_champion(tracking_uri, first, "bc")
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    assert isinstance(backend, TrainingBackend)
    uris = [str(first), second.as_uri()]
    job = request("bc-20260101t000000-1", uris, champion_version=champion)

    assert backend.submit(job) == job.run_id
    assert backend.submit(job) == job.run_id  # idempotent: one run folder, one thread
    status = backend.join(job.run_id, timeout=240)
    assert status.state == "completed", status.error
    assert (status.registered_model, status.registered_version) == ("bc", "2")

    # Another process reads the same status from the run folder.
    script = (
        "import sys; from adapters.local_runner import LocalTrainingBackend as B; "
        "print(B(sys.argv[1], 'unused').status(sys.argv[2]).model_dump_json())"
    )
    output = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "work"), job.run_id],
        cwd=APP_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(output)["registered_version"] == "2"

    client = MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions("name = 'bc'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    candidate = client.get_model_version("bc", "2")
    tags = candidate.tags
    assert tags["job_id"] == job.run_id
    assert tags["data_uris"] == ",".join(uris)
    assert re.fullmatch(r"[0-9a-f]{64}", tags["data_fingerprint"])
    assert tags["data_rows"] == "569" and tags["champion_version"] == champion
    run = client.get_run(candidate.run_id)
    metrics = run.data.metrics
    assert metrics["auc"] > 0.9 and 0.5 < metrics["accuracy"] <= 1.0
    assert metrics["champion_auc"] == pytest.approx(0.5)  # the prior can't rank
    assert metrics["holdout_rows"] == 143
    assert run.data.tags["registered_model_version"] == "2"
    train_run = client.get_run(tags["train_mlflow_run_id"])
    assert train_run.data.params["model_type"] == "logistic_regression"
    assert "train_accuracy" in train_run.data.metrics
    assert train_run.data.tags["data_fingerprint"] == tags["data_fingerprint"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "bc-retrain"


def test_a_failing_step_fails_the_job_with_its_stderr_tail(
    tmp_path: Path, tracking_uri: str
) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("x,y\n1,2\n3,4\n")  # no `label` column
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    backend.submit(request("bad-1", [str(data)]))
    status = backend.join("bad-1", timeout=120)
    assert status.state == "failed"
    assert status.error is not None
    assert status.error.startswith("step prepare failed (exit code 2)")
    assert f"{data}: label column 'label' missing; its columns are ['x', 'y']" in status.error
    assert status.service_status == "prepare"


@pytest.fixture
def wine(tmp_path: Path) -> Path:
    """scikit-learn's wine data (three cultivars), its target named `cultivar`, with a text
    column `note` that is not a feature."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame.insert(0, "note", [f"bottle {n}" for n in range(len(frame))])
    path = tmp_path / "wine" / "wine.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    return path


WINE_FEATURES = ["alcohol", "malic_acid", "color_intensity", "proline", "flavanoids"]


@pytest.mark.slow
def test_trains_on_the_named_label_and_feature_columns(
    tmp_path: Path, wine: Path, tracking_uri: str
) -> None:
    from mlflow import MlflowClient

    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    job = request(
        "wine-1",
        [wine.as_uri()],
        model="wine",
        label_column="cultivar",
        feature_columns=WINE_FEATURES,
    )
    backend.submit(job)
    status = backend.join(job.run_id, timeout=240)
    assert status.state == "completed", status.error
    assert (status.registered_model, status.registered_version) == ("wine", "1")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    prepared = json.loads(
        (tmp_path / "work" / "wine-1" / "jobs" / "prepare" / "train_data" / "data.json").read_text()
    )
    assert prepared["label_column"] == "cultivar" and prepared["features"] == WINE_FEATURES
    version = client.get_model_version("wine", "1")
    run = client.get_run(version.run_id)
    assert run.data.metrics["accuracy"] > 0.8 and run.data.metrics["auc"] > 0.9  # 3 classes
    train_run = client.get_run(version.tags["train_mlflow_run_id"])
    assert train_run.data.params["features"] == str(len(WINE_FEATURES))
    # The registered model takes the named features only (the text column is not one).
    import mlflow

    with mlflow_store(tracking_uri):
        model = mlflow.pyfunc.load_model("models:/wine/1")
    assert model.metadata.get_input_schema().input_names() == WINE_FEATURES


def failed_prepare(backend: LocalTrainingBackend, job: TrainingRequest) -> str:
    backend.submit(job)
    status = backend.join(job.run_id, timeout=120)
    assert status.state == "failed" and status.service_status == "prepare", status
    assert status.error is not None and status.error.startswith("step prepare failed")
    return status.error


def test_a_csv_without_the_label_column_fails_naming_it_and_the_file(
    tmp_path: Path, wine: Path, tracking_uri: str
) -> None:
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    folder = wine.parent.as_uri() + "/"
    error = failed_prepare(backend, request("nolabel-1", [folder], label_column="quality"))
    assert f"{folder}wine.csv: label column 'quality' missing" in error


def test_a_missing_feature_column_fails_naming_it_and_the_file(
    tmp_path: Path, wine: Path, tracking_uri: str
) -> None:
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    job = request(
        "nofeature-1",
        [str(wine)],
        label_column="cultivar",
        feature_columns=["alcohol", "sweetness"],
    )
    error = failed_prepare(backend, job)
    assert f"{wine}: feature column 'sweetness' missing" in error


def test_a_non_numeric_feature_fails_naming_it_the_file_and_the_line(
    tmp_path: Path, wine: Path, tracking_uri: str
) -> None:
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    # Every column but the label is a feature by default: the text column `note` too.
    error = failed_prepare(backend, request("text-1", [str(wine)], label_column="cultivar"))
    assert f"{wine}: feature column 'note' is not numeric (line 2: 'bottle 0')" in error


def test_files_with_different_columns_fail_naming_both(
    tmp_path: Path, breast_cancer: tuple[Path, Path], tracking_uri: str
) -> None:
    first, second = breast_cancer
    (first.parent / "extra.csv").write_text("label,zeta\n1,2\n")
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    error = failed_prepare(backend, request("mixed-1", [str(first.parent), str(second)]))
    assert "extra.csv: its feature columns differ from" in error and "extra ['zeta']" in error


def test_a_pipeline_without_a_label_input_refuses_another_label(
    tmp_path: Path, tracking_uri: str
) -> None:
    pipeline = hanging_pipeline(tmp_path / "pipe")  # declares training_data only
    data = tmp_path / "data.csv"
    data.write_text("quality\n1\n")
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    backend.submit(
        request("nolabelinput-1", [str(data)], pipeline_file=str(pipeline), label_column="quality")
    )
    status = backend.join("nolabelinput-1", timeout=30)
    assert status.state == "failed"
    assert "no input 'label_column'" in (status.error or "")
    assert "'quality'" in (status.error or "")


def test_missing_data_fails_the_job(tmp_path: Path, tracking_uri: str) -> None:
    backend = LocalTrainingBackend(tmp_path / "work", tracking_uri)
    backend.submit(request("nodata-1", [str(tmp_path / "nothing-here.csv")]))
    status = backend.join("nodata-1", timeout=60)
    assert status.state == "failed" and "no such file or folder" in (status.error or "")


def orphan_run(work: Path, run_id: str) -> None:
    """A run folder that says "running", left by a runner process that has exited."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    run_dir = work / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(
        json.dumps({"state": "running", "step": "train", "pid": int(finished.stdout)})
    )


def test_a_job_whose_runner_died_is_failed(tmp_path: Path) -> None:
    orphan_run(tmp_path / "work", "orphan-1")
    status = LocalTrainingBackend(tmp_path / "work", "unused").status("orphan-1")
    assert status.state == "failed" and "exited" in (status.error or "")


def test_unknown_job(tmp_path: Path) -> None:
    with pytest.raises(TrainingBackendError, match="not found"):
        LocalTrainingBackend(tmp_path, "unused").status("nope")


def test_command_substitution() -> None:
    command = (
        "python run.py --data ${{inputs.data}} --name '${{inputs.name}}'"
        " $[[--champion ${{inputs.champion}}]] --out ${{outputs.out}}"
    )
    out = Path("/tmp/with space/out")
    argv = _command_argv(
        command, {"data": Path("/d"), "name": "a b", "champion": None}, {"out": out}, "/py"
    )
    assert argv == ["/py", "run.py", "--data", "/d", "--name", "a b", "--out", str(out)]
    argv = _command_argv(
        command, {"data": Path("/d"), "name": "n", "champion": "3"}, {"out": out}, "py"
    )
    assert argv[-4:] == ["--champion", "3", "--out", str(out)]


def test_a_relative_mlflow_store_is_the_one_this_process_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The steps run in their component's folder, where a relative store would be another one.
    monkeypatch.chdir(tmp_path)
    backend = LocalTrainingBackend(tmp_path / "work", "sqlite:///.local/mlflow.db")
    assert backend.tracking_uri == f"sqlite:///{tmp_path}/.local/mlflow.db"
    assert LocalTrainingBackend("w", "mlruns").tracking_uri == str(tmp_path / "mlruns")
    for absolute in ("sqlite:////data/mlflow.db", "http://127.0.0.1:5000", "azureml://x/mlflow"):
        assert LocalTrainingBackend("w", absolute).tracking_uri == absolute


def hanging_pipeline(folder: Path) -> Path:
    """A one-step pipeline whose step writes a marker, then sleeps far longer than any test."""
    folder.mkdir(parents=True)
    (folder / "hang.yml").write_text(
        "type: command\n"
        "inputs: {raw_data: {type: uri_folder}}\n"
        "code: .\n"
        "command: >-\n"
        "  python -c \"import pathlib, time; pathlib.Path('started').touch(); time.sleep(600)\"\n"
    )
    (folder / "pipeline.yml").write_text(
        "type: pipeline\n"
        "inputs: {training_data: {type: uri_folder}}\n"
        "jobs:\n"
        "  hang: {type: command, component: ./hang.yml,\n"
        "         inputs: {raw_data: '${{parent.inputs.training_data}}'}}\n"
    )
    return folder / "pipeline.yml"


def test_cancel_stops_the_running_step_and_ends_the_job_canceled(tmp_path: Path) -> None:
    pipeline = hanging_pipeline(tmp_path / "pipe")
    data = tmp_path / "data.csv"
    data.write_text("label\n1\n")
    backend = LocalTrainingBackend(tmp_path / "work", "unused")
    backend.submit(request("hang-1", [str(data)], pipeline_file=str(pipeline)))
    started = tmp_path / "pipe" / "started"
    try:
        for _ in range(400):  # the step is running once its marker exists (bounded wait)
            if started.exists():
                break
            backend.join("hang-1", timeout=0.05)
        assert started.exists() and backend.status("hang-1").state == "running"
    finally:
        backend.cancel("hang-1")  # whatever happened, no sleeping step is left behind
    status = backend.join("hang-1", timeout=30)
    assert (status.state, status.error) == ("canceled", "canceled")
    backend.cancel("hang-1")  # again, once it has ended: nothing changes
    backend.cancel("never-submitted")  # unknown: nothing to stop
    assert backend.status("hang-1").state == "canceled"


def test_cancel_of_a_job_whose_runner_died_ends_it(tmp_path: Path) -> None:
    orphan_run(tmp_path / "work", "orphan-2")
    backend = LocalTrainingBackend(tmp_path / "work", "unused")
    backend.cancel("orphan-2")
    assert backend.status("orphan-2").state == "canceled"
