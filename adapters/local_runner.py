"""Local training backend: runs the Azure ML pipeline YAML and its component YAMLs locally.

`LocalTrainingBackend(work_dir, tracking_uri, fetch=...)` reads pipelines/azureml/pipeline.yml
and each step's component YAML, resolves every input and output to a folder under
`work_dir/<run_id>/`, fetches the data URIs into the data input, and runs each step's
`command` (with `${{inputs.x}}` / `${{outputs.y}}` substituted, `$[[...]]` optional parts
kept only when their inputs are set) as a subprocess in dependency order, in a background
thread, with MLFLOW_TRACKING_URI set. `python` in a command is this interpreter.

The job's status lives in `work_dir/<run_id>/status.json`, so `status()` works from any
process, and `submit` is idempotent per run id (the run folder is created exclusively).
The policy's label and feature columns go to the pipeline's `label_column` and
`feature_columns` inputs (pipelines/contract.py), and `_sources.json` beside the fetched data
maps each file to its URI, so a file without a named column fails the job naming both.
A step that exits non-zero fails the job with the tail of its stderr. A job whose runner
process died is reported failed. `cancel` leaves a marker in the run folder (so it works from
any process); the runner stops the running step and ends the job "canceled".
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from adapters.blob_fetch import Fetch, FetchError, fetch
from adapters.processes import process_alive
from orchestrator.ports import JobStatus, TrainingBackendError, TrainingRequest
from orchestrator.settings import APP_ROOT
from pipelines.contract import (
    CHAMPION_INPUT,
    DATA_SOURCES_FILE,
    DATA_URIS_INPUT,
    MODEL_NAME_INPUT,
    NO_CHAMPION,
    REGISTRATION_OUTPUT,
    RUN_ID_INPUT,
    column_inputs,
    data_uris_text,
)

STATUS_FILE = "status.json"
CANCEL_FILE = "cancel-requested"  # written by cancel(), from any process; read between waits
CANCEL_POLL_SECONDS = 0.25
STDERR_TAIL_LINES = 25
STDERR_TAIL_CHARS = 3000
_BINDING = re.compile(r"\$\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.S)
_PATH_TYPES = {"uri_folder", "uri_file", "mlflow_model", "custom_model", "mltable"}


class PipelineSpecError(TrainingBackendError):
    """The pipeline or a component YAML cannot be run locally."""


class LocalTrainingBackend:
    def __init__(
        self,
        work_dir: Path | str,
        tracking_uri: str,
        fetch: Fetch = fetch,
        *,
        app_root: Path | str = APP_ROOT,
        python: str = sys.executable,
        step_timeout: float = 3600.0,
        env: dict[str, str] | None = None,
        on_ended: Callable[[TrainingRequest, str], None] | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        # The steps run in their component's folder: a relative store would be another one.
        self.tracking_uri = absolute_tracking_uri(tracking_uri)
        self.fetch = fetch
        self.app_root = Path(app_root)
        self.python = python
        self.step_timeout = step_timeout
        self.env = dict(env or {})
        # Told (request, final state) once a job this process ran has ended: Azure ML's run
        # event, locally (adapters/local_run_events.py). It must not raise.
        self.on_ended = on_ended
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    # -- the TrainingBackend port --------------------------------------------------------

    def submit(self, request: TrainingRequest) -> str:
        run_dir = self.work_dir / request.run_id
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pipeline_file = self._pipeline_path(request.pipeline_file)
        plan = _load_plan(pipeline_file)  # fail fast, before claiming the run id
        try:
            run_dir.mkdir()
        except FileExistsError:
            return request.run_id  # already submitted: idempotent
        (run_dir / "request.json").write_text(request.model_dump_json(indent=2), encoding="utf-8")
        self._write_status(run_dir, state="queued", pid=os.getpid(), submitted_at=_now())
        thread = threading.Thread(
            target=self._run,
            args=(request, plan, run_dir),
            name=f"local-training-{request.run_id}",
            daemon=True,
        )
        with self._lock:
            self._threads[request.run_id] = thread
        thread.start()
        return request.run_id

    def status(self, job_id: str) -> JobStatus:
        path = self.work_dir / job_id / STATUS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TrainingBackendError(f"local training job {job_id!r} not found") from exc
        state = data.get("state", "failed")
        error = data.get("error")
        if state in ("queued", "running") and not process_alive(data.get("pid")):
            state, error = "failed", "the local runner process exited before the job ended"
        return JobStatus(
            job_id=job_id,
            state=state,
            error=error,
            registered_model=data.get("registered_model"),
            registered_version=data.get("registered_version"),
            service_status=data.get("step") or state,
        )

    def cancel(self, job_id: str) -> None:
        run_dir = self.work_dir / job_id
        if not (run_dir / STATUS_FILE).exists():
            return  # unknown: nothing to stop
        (run_dir / CANCEL_FILE).touch()
        data = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
        if data.get("state") in ("queued", "running") and not process_alive(data.get("pid")):
            # No runner is left to see the marker: end it here.
            self._write_status(run_dir, state="canceled", error="canceled")

    # -- helpers for tests and devhost -----------------------------------------------------

    def join(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Wait for a job this process started (joins its thread), then return its status."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.status(job_id)

    # -- the run ------------------------------------------------------------------------------

    def _pipeline_path(self, pipeline_file: str) -> Path:
        path = Path(pipeline_file)
        return path if path.is_absolute() else self.app_root / path

    def _run(self, request: TrainingRequest, plan: _Plan, run_dir: Path) -> None:
        try:
            self._execute(request, plan, run_dir)
        finally:
            if self.on_ended is not None:
                state = self.status(request.run_id).state
                if state in ("completed", "failed", "canceled"):
                    self.on_ended(request, state)

    def _execute(self, request: TrainingRequest, plan: _Plan, run_dir: Path) -> None:
        try:
            self._write_status(run_dir, state="running", step="fetch")
            values = self._pipeline_inputs(request, plan, run_dir)
            outputs = {name: run_dir / "outputs" / name for name in plan.outputs}
            produced: dict[tuple[str, str], Path] = {}
            for step in plan.order:
                if (run_dir / CANCEL_FILE).exists():
                    self._write_status(run_dir, state="canceled", step=step, error="canceled")
                    return
                self._write_status(run_dir, state="running", step=step)
                job = plan.jobs[step]
                inputs = _resolve_inputs(step, job, values, produced)
                step_outputs = {}
                for name, binding in job.outputs.items():
                    parent = _parent_output(binding)
                    folder = outputs[parent] if parent else run_dir / "jobs" / step / name
                    folder.mkdir(parents=True, exist_ok=True)
                    step_outputs[name] = folder
                    produced[(step, name)] = folder
                error = self._run_step(request, run_dir, step, job, inputs, step_outputs)
                if error == _CANCELED:
                    self._write_status(run_dir, state="canceled", step=step, error="canceled")
                    return
                if error:
                    self._write_status(run_dir, state="failed", step=step, error=error)
                    return
            registration = _read_registration(outputs.get(REGISTRATION_OUTPUT))
            self._write_status(
                run_dir,
                state="completed",
                step=None,
                registered_model=registration.get("model_name"),
                registered_version=registration.get("version"),
            )
        except (TrainingBackendError, FetchError, OSError, ValueError) as exc:
            self._write_status(run_dir, state="failed", error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # never leave a job "running" behind
            self._write_status(
                run_dir, state="failed", error=f"local runner error: {type(exc).__name__}: {exc}"
            )

    def _pipeline_inputs(
        self, request: TrainingRequest, plan: _Plan, run_dir: Path
    ) -> dict[str, Any]:
        if request.data_input not in plan.inputs:
            raise PipelineSpecError(
                f"{plan.source}: the pipeline has no input {request.data_input!r} for the data"
            )
        values = dict(plan.inputs)
        try:
            columns = column_inputs(
                request.label_column, request.feature_columns, set(plan.inputs), str(plan.source)
            )
        except ValueError as exc:
            raise PipelineSpecError(str(exc)) from exc
        data_dir = run_dir / "inputs" / request.data_input
        sources: dict[str, str] = {}
        for index, uri in enumerate(request.data_uris):
            # One folder per URI: two files with the same name never overwrite each other.
            folder = data_dir / f"{index:05d}"
            for path in self.fetch(uri, folder):
                relative = Path(path).resolve().relative_to(folder.resolve()).as_posix()
                sources[f"{folder.name}/{relative}"] = _source_of(uri, relative)
        # The prepare step names a bad file by the URI it came from (pipelines/components).
        (data_dir / DATA_SOURCES_FILE).write_text(json.dumps(sources, indent=2), encoding="utf-8")
        values[request.data_input] = data_dir
        overrides = columns | {
            MODEL_NAME_INPUT: request.model,
            CHAMPION_INPUT: request.champion_version or NO_CHAMPION,
            RUN_ID_INPUT: request.run_id,
            DATA_URIS_INPUT: data_uris_text(request.data_uris),
        }
        for name, value in overrides.items():
            if name in values:
                values[name] = value
        return values

    def _run_step(
        self,
        request: TrainingRequest,
        run_dir: Path,
        step: str,
        job: _Job,
        inputs: dict[str, Any],
        outputs: dict[str, Path],
    ) -> str | None:
        argv = _command_argv(job.command, inputs, outputs, self.python)
        step_dir = run_dir / "jobs" / step
        step_dir.mkdir(parents=True, exist_ok=True)
        env = (
            os.environ
            | self.env
            | {
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                # The models register in the same store (mlflow.set_registry_uri in this
                # process exports MLFLOW_REGISTRY_URI, which a step would otherwise inherit).
                "MLFLOW_REGISTRY_URI": self.tracking_uri,
                "RETRAIN_EXPERIMENT": request.experiment,
                "RETRAIN_RUN_ID": request.run_id,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("MLFLOW_RUN_ID", None)
        (step_dir / "command.json").write_text(json.dumps(argv, indent=2), encoding="utf-8")
        stdout_path, stderr_path = step_dir / "stdout.log", step_dir / "stderr.log"
        cancel_marker = run_dir / CANCEL_FILE
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            try:
                process = subprocess.Popen(
                    argv, cwd=job.code, env=env, stdout=stdout, stderr=stderr
                )
            except OSError as exc:
                return f"step {step} could not start: {exc}"
            waited = 0.0
            while True:
                try:
                    returncode = process.wait(timeout=CANCEL_POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    waited += CANCEL_POLL_SECONDS
                if cancel_marker.exists() or waited >= self.step_timeout:
                    process.kill()
                    process.wait()
                    if cancel_marker.exists():
                        return _CANCELED
                    return f"step {step} timed out after {self.step_timeout:g}s" + _tail(
                        stderr_path
                    )
        if returncode != 0:
            return f"step {step} failed (exit code {returncode})" + _tail(stderr_path)
        return None

    def _write_status(self, run_dir: Path, **fields: Any) -> None:
        path = run_dir / STATUS_FILE
        with self._lock:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                data = {"run_id": run_dir.name}
            data.update(fields)
            data["updated_at"] = _now()
            if fields.get("state") in ("completed", "failed", "canceled"):
                data["ended_at"] = data["updated_at"]
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(temporary, path)


_CANCELED = "\0canceled"  # _run_step's answer when cancel() stopped the step


# -- the pipeline plan ----------------------------------------------------------------------


class _Job:
    def __init__(self, name: str, spec: dict[str, Any], component_file: Path) -> None:
        component = _read_yaml(component_file)
        if component.get("type", "command") != "command":
            raise PipelineSpecError(f"{component_file}: only command components run locally")
        if "command" not in component:
            raise PipelineSpecError(f"{component_file}: no command")
        self.name = name
        self.command: str = component["command"]
        code = component.get("code")
        self.code = (component_file.parent / code).resolve() if code else component_file.parent
        self.input_specs: dict[str, dict[str, Any]] = component.get("inputs") or {}
        self.output_specs: dict[str, dict[str, Any]] = component.get("outputs") or {}
        self.inputs: dict[str, Any] = dict(spec.get("inputs") or {})
        self.outputs: dict[str, Any] = {
            name: (spec.get("outputs") or {}).get(name) for name in self.output_specs
        }
        unknown = set(self.inputs) - set(self.input_specs)
        if unknown:
            raise PipelineSpecError(f"job {name}: inputs {sorted(unknown)} not in the component")

    def upstream(self) -> set[str]:
        steps = set()
        for binding in self.inputs.values():
            match = _BINDING.fullmatch(str(binding).strip()) if isinstance(binding, str) else None
            if match and match[1].startswith("parent.jobs."):
                steps.add(match[1].split(".")[2])
        return steps


class _Plan:
    def __init__(self, source: Path, document: dict[str, Any]) -> None:
        self.source = source
        if document.get("type") != "pipeline":
            raise PipelineSpecError(f"{source}: not a pipeline job (type: pipeline)")
        self.inputs: dict[str, Any] = {}
        for name, spec in (document.get("inputs") or {}).items():
            if isinstance(spec, dict):
                self.inputs[name] = spec.get("path", spec.get("default", spec.get("value")))
            else:
                self.inputs[name] = spec
        self.outputs: list[str] = list((document.get("outputs") or {}).keys())
        jobs = document.get("jobs") or {}
        if not jobs:
            raise PipelineSpecError(f"{source}: no jobs")
        self.jobs: dict[str, _Job] = {}
        for name, spec in jobs.items():
            component = spec.get("component")
            if not isinstance(component, str) or component.startswith("azureml:"):
                raise PipelineSpecError(
                    f"{source}: job {name}: the component must be a local YAML file"
                )
            self.jobs[name] = _Job(name, spec, (source.parent / component).resolve())
        self.order = _topological(self.jobs, source)


def _load_plan(pipeline_file: Path) -> _Plan:
    return _Plan(pipeline_file, _read_yaml(pipeline_file))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineSpecError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PipelineSpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise PipelineSpecError(f"{path}: expected a mapping")
    return document


def _topological(jobs: dict[str, _Job], source: Path) -> list[str]:
    order: list[str] = []
    remaining = {name: job.upstream() for name, job in jobs.items()}
    for name, upstream in remaining.items():
        missing = upstream - set(jobs)
        if missing:
            raise PipelineSpecError(f"{source}: job {name} depends on unknown jobs {missing}")
    while remaining:
        ready = [name for name, upstream in remaining.items() if not upstream - set(order)]
        if not ready:
            raise PipelineSpecError(f"{source}: the jobs form a cycle: {sorted(remaining)}")
        for name in ready:  # YAML order among the ready ones
            order.append(name)
            del remaining[name]
    return order


def _parent_output(binding: Any) -> str | None:
    if not isinstance(binding, str):
        return None
    match = _BINDING.fullmatch(binding.strip())
    if match and match[1].startswith("parent.outputs."):
        return match[1].split(".", 2)[2]
    return None


def _resolve_inputs(
    step: str, job: _Job, values: dict[str, Any], produced: dict[tuple[str, str], Path]
) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, spec in job.input_specs.items():
        if name in job.inputs:
            binding = job.inputs[name]
            match = _BINDING.fullmatch(binding.strip()) if isinstance(binding, str) else None
            if match is None:
                value = binding
            elif match[1].startswith("parent.inputs."):
                value = values.get(match[1].split(".", 2)[2])
            elif match[1].startswith("parent.jobs."):
                _, _, upstream, kind, output = match[1].split(".", 4)
                if kind != "outputs" or (upstream, output) not in produced:
                    raise PipelineSpecError(f"job {step}: cannot resolve {binding}")
                value = produced[(upstream, output)]
            else:
                raise PipelineSpecError(f"job {step}: unsupported binding {binding}")
        else:
            value = spec.get("default") if isinstance(spec, dict) else None
        if value is None and not (isinstance(spec, dict) and spec.get("optional")):
            raise PipelineSpecError(f"job {step}: required input {name!r} has no value")
        resolved[name] = value
    return resolved


def _command_argv(
    command: str, inputs: dict[str, Any], outputs: dict[str, Path], python: str
) -> list[str]:
    def value_of(expression: str) -> Any:
        kind, _, name = expression.partition(".")
        if kind == "inputs":
            return inputs.get(name)
        if kind == "outputs":
            return outputs.get(name)
        raise PipelineSpecError(f"unsupported expression ${{{{{expression}}}}} in a command")

    def optional_part(match: re.Match[str]) -> str:
        names = _BINDING.findall(match[1])
        return match[1] if all(value_of(name) is not None for name in names) else ""

    def substitute(match: re.Match[str]) -> str:
        value = value_of(match[1])
        if value is None:
            raise PipelineSpecError(f"${{{{{match[1]}}}}} has no value")
        if isinstance(value, Path):
            return shlex.quote(str(value))  # our paths; Azure ML's never need quoting
        if isinstance(value, bool):
            return str(value)
        return str(value)

    text = _BINDING.sub(substitute, _OPTIONAL.sub(optional_part, command))
    argv = shlex.split(text)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = python
    return argv


def absolute_tracking_uri(uri: str) -> str:
    """A relative local MLflow store (`sqlite:///.local/mlflow.db`, `mlruns`) made absolute
    against this process's working directory, as this process's own MLflow client reads it."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return f"sqlite:///{Path(path).resolve()}"
        return uri
    if "://" not in uri and not uri.startswith("file:"):
        return str(Path(uri).resolve())  # a plain folder path: MLflow's file store
    return uri


def _source_of(uri: str, relative: str) -> str:
    """The URI a fetched file came from: `uri` itself when it names that file, else the file
    under the folder `uri` names."""
    parsed = urlparse(uri)
    path = unquote(parsed.path) if parsed.scheme in ("http", "https", "file") else uri
    path = path.replace("\\", "/").rstrip("/")
    if path == relative or path.endswith("/" + relative):
        return uri
    return f"{uri.rstrip('/')}/{relative}"


def _read_registration(folder: Path | None) -> dict[str, Any]:
    if folder is None:
        return {}
    path = folder / "registration.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.strip().splitlines()[-STDERR_TAIL_LINES:]
    tail = "\n".join(lines)[-STDERR_TAIL_CHARS:]
    return f": {tail}" if tail else ""


def _now() -> str:
    return datetime.now(UTC).isoformat()
