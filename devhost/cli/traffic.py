"""`score`: live traffic on a model's local endpoint from a CSV, and its feedback.

Each row of the CSV is one request to `/{endpoint}/score` of the local endpoint server (what
devhost runs; docs/endpoint.md): its feature columns (the policy's `data.feature_columns`,
else every column but the label) as an MLflow split payload, with an `x-request-id` of its
own. With feedback, each answered row's label (the policy's `data.label_column`) is posted to
`/{endpoint}/feedback` under that request id, as whoever learns the truth would: what a
production bake and a canary's accuracy gate judge. Rows are sent in file order, over again
when more requests are asked for than the file has.

The endpoint's URL and key are the settings' (`LOCAL_ENDPOINT_URL`, `LOCAL_ENDPOINT_KEY`, else
the key file the server made), which the CLI fills from the running devhost's state file
(devhost/cli/local_devhost.py): nothing to copy. Answers that say no request can succeed
(nothing serves on the endpoint yet, no such endpoint, a wrong key) stop it at once with the
server's reason; other failures are counted.
"""

from __future__ import annotations

import csv
import math
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devhost.cli.commands import BadInput, CliError, policy_for

if TYPE_CHECKING:
    import httpx

    from domain.policy import ModelPolicy
    from orchestrator.bootstrap import Runtime

Number = int | float
Label = Number | str
FEEDBACK_BATCH = 100  # labels a feedback post
MAX_WORKERS = 16
REQUEST_ID_HEADER = "x-request-id"
DEPLOYMENT_HEADER = "azureml-model-deployment"
# Answers after which no request can succeed: the whole run stops with the first of them.
_HOPELESS_CODES = frozenset({"NoLiveTraffic", "EndpointNotFound"})


@dataclass(frozen=True)
class Rows:
    """The CSV as requests: feature columns, each row's values and (when there is one) label."""

    file: Path
    columns: list[str]
    values: list[list[Number]]
    labels: list[Label | None]


@dataclass(frozen=True)
class Traffic:
    """What one `score` sent and what came back."""

    model: str
    endpoint: str
    url: str
    file: str
    requests: int = 0
    answered: int = 0  # 200
    failed: dict[str, int] = field(default_factory=dict)  # by status (or "error")
    served: dict[str, int] = field(default_factory=dict)  # answered, by deployment
    feedback: int = 0  # labels the endpoint accepted
    matched: int | None = None  # answers equal to their label (with feedback)
    first_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "url": self.url,
            "file": self.file,
            "requests": self.requests,
            "answered": self.answered,
            "failed": dict(self.failed),
            "served": dict(self.served),
            "feedback": self.feedback,
            "matched": self.matched,
            "first_error": self.first_error,
        }


# --------------------------------------------------------------------------- the CSV


def _number(text: str) -> Number:
    """A CSV cell as pandas reads it into a numeric column: an integer when it is one."""
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        pass
    number = float(value)  # ValueError: not a number
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def _label(text: str) -> Label:
    try:
        return _number(text)
    except ValueError:
        return text


def read_rows(path: Path, policy: ModelPolicy, *, with_labels: bool) -> Rows:
    """The CSV's feature values (numbers, as the model was trained on them) and labels; a
    missing column, a cell that is not a number or a row of another width is BadInput naming
    the file, the line and the column."""
    label = policy.data.label_column
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"{path}: cannot be read as CSV: {exc}") from exc
    if not lines:
        raise BadInput(f"{path}: empty (a header row, then one row per request)")
    header, body = [name.strip() for name in lines[0]], lines[1:]
    if with_labels and label not in header:
        raise BadInput(
            f"{path}: no label column {label!r} (the policy's data.label_column) for the "
            f"feedback; its columns are {header}"
        )
    features = policy.data.feature_columns or [name for name in header if name != label]
    missing = [name for name in features if name not in header]
    if missing:
        raise BadInput(f"{path}: feature column {missing[0]!r} missing; its columns are {header}")
    if not features:
        raise BadInput(f"{path}: no feature columns besides the label column {label!r}")
    positions = [header.index(name) for name in features]
    label_at = header.index(label) if label in header else None
    values: list[list[Number]] = []
    labels: list[Label | None] = []
    for number, row in enumerate(body, start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != len(header):
            raise BadInput(f"{path} line {number}: {len(row)} cells, the header has {len(header)}")
        cells: list[Number] = []
        for name, position in zip(features, positions, strict=True):
            try:
                cells.append(_number(row[position]))
            except ValueError:
                raise BadInput(
                    f"{path} line {number}: column {name!r}: {row[position]!r} is not a number"
                ) from None
        values.append(cells)
        cell = row[label_at].strip() if label_at is not None else ""
        if with_labels and not cell:
            raise BadInput(f"{path} line {number}: no value in the label column {label!r}")
        labels.append(_label(cell) if cell else None)
    if not values:
        raise BadInput(f"{path}: no rows below the header")
    return Rows(file=path, columns=features, values=values, labels=labels)


# --------------------------------------------------------------------------- sending


def _endpoint_of(policy: ModelPolicy, name: str | None) -> str:
    names = [policy.endpoint, *(ring.endpoint for ring in policy.rings[1:])]
    if name is None:
        return policy.endpoint
    if name not in names:
        raise BadInput(f"{policy.model} has no endpoint {name!r}: its endpoints are {names}")
    return name


def local_endpoint(runtime: Runtime) -> tuple[str, str | None]:
    """The local endpoint server's URL and key, as the app has them."""
    from adapters.local_endpoint import KEY_FILE, read_key_file

    settings = runtime.settings
    if settings.uses_azureml:
        raise BadInput(
            "score sends to the local endpoint server; with Azure ML settings, score at the "
            "managed endpoint's scoring URI and write the labels where CANARY_FEEDBACK_URI "
            "points (docs/endpoint.md)"
        )
    if not settings.local_endpoint_url:
        raise BadInput(
            "LOCAL_ENDPOINT_URL is not set: start `make devhost` in this checkout (the CLI "
            "finds its endpoint server in its state file), or set LOCAL_ENDPOINT_URL"
        )
    key = settings.local_endpoint_key or read_key_file(settings.local_dir / KEY_FILE)
    return settings.local_endpoint_url.rstrip("/"), key


def _matches(outputs: Any, label: Label) -> bool:
    """One row's answer against its label: numbers as numbers (a row `{"label"|"prediction":
    ...}` by that value), anything else as text."""
    value = outputs[0] if isinstance(outputs, list) and len(outputs) == 1 else outputs
    if isinstance(value, dict):
        value = value.get("label", value.get("prediction"))
    if isinstance(value, bool) or isinstance(label, bool):
        return value == label
    if isinstance(value, int | float) and isinstance(label, int | float):
        return float(value) == float(label)
    return str(value) == str(label)


def _reason(response: httpx.Response) -> tuple[str, str | None]:
    """The server's words for a failed answer, and its code."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}", None
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}: {str(body)[:200]}", None
    message = str(body.get("error") or body)
    if body.get("hint"):
        message = f"{message} ({body['hint']})"
    code = body.get("code")
    return f"HTTP {response.status_code}: {message}", code if isinstance(code, str) else None


class _Run:
    """One `score`'s shared tallies, filled by the workers."""

    def __init__(self, rows: Rows, with_feedback: bool) -> None:
        self.rows = rows
        self.with_feedback = with_feedback
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.requests = 0
        self.answered = 0
        self.failed: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.feedback = 0
        self.matched = 0
        self.first_error: str | None = None
        self.hopeless: str | None = None

    def failure(self, kind: str, reason: str, hopeless: bool) -> None:
        with self.lock:
            self.failed[kind] += 1
            self.first_error = self.first_error or reason
            if hopeless and self.hopeless is None:
                self.hopeless = reason
                self.stop.set()


def _work(
    run: _Run,
    client: httpx.Client,
    endpoint: str,
    indices: range,
) -> None:
    import httpx

    labels: list[dict[str, Any]] = []

    def post_feedback() -> None:
        if not labels:
            return
        answer = client.post(f"/{endpoint}/feedback", json={"feedback": labels})
        if answer.status_code != 202:
            reason, _ = _reason(answer)
            run.failure("feedback", f"feedback: {reason}", hopeless=True)
        else:
            with run.lock:
                run.feedback += int(answer.json().get("accepted", 0))
        labels.clear()

    rows = run.rows
    for index in indices:
        if run.stop.is_set():
            break
        row = index % len(rows.values)
        request_id = f"cli-{uuid.uuid4().hex}"
        payload = {"input_data": {"columns": rows.columns, "data": [rows.values[row]]}}
        with run.lock:
            run.requests += 1
        try:
            answer = client.post(
                f"/{endpoint}/score", json=payload, headers={REQUEST_ID_HEADER: request_id}
            )
        except httpx.HTTPError as exc:
            run.failure("error", f"{type(exc).__name__}: {exc}", hopeless=True)
            break
        if answer.status_code != 200:
            reason, code = _reason(answer)
            hopeless = answer.status_code in (401, 403) or code in _HOPELESS_CODES
            run.failure(str(answer.status_code), reason, hopeless)
            continue
        label = rows.labels[row]
        with run.lock:
            run.answered += 1
            run.served[answer.headers.get(DEPLOYMENT_HEADER, "?")] += 1
            if run.with_feedback and label is not None and _matches(answer.json(), label):
                run.matched += 1
        if run.with_feedback and label is not None:
            labels.append({"request_id": request_id, "label": label})  # the id we sent
            if len(labels) >= FEEDBACK_BATCH:
                post_feedback()
    post_feedback()  # what was answered, even after a stop


def send_traffic(
    runtime: Runtime,
    model: str,
    file: Path,
    *,
    feedback: bool = False,
    requests: int | None = None,
    endpoint: str | None = None,
    workers: int = 4,
) -> Traffic:
    """Score the CSV's rows on the model's local endpoint (`endpoint`: one of its rings
    instead), `requests` of them (default: each row once), from `workers` threads; with
    `feedback`, each answered row's label too. CliError when nothing was answered."""
    import httpx

    policy = policy_for(runtime, model)
    name = _endpoint_of(policy, endpoint)
    if requests is not None and requests < 1:
        raise BadInput("--requests must be at least 1")
    if not 1 <= workers <= MAX_WORKERS:
        raise BadInput(f"--workers must be from 1 to {MAX_WORKERS}")
    rows = read_rows(Path(file), policy, with_labels=feedback)
    url, key = local_endpoint(runtime)
    total = requests if requests is not None else len(rows.values)
    run = _Run(rows, feedback)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    shares = _split(total, min(workers, total))
    clients = [httpx.Client(base_url=url, headers=headers, timeout=30) for _ in shares]
    try:
        with ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="score") as pool:
            done = [
                pool.submit(_work, run, client, name, share)
                for client, share in zip(clients, shares, strict=True)
            ]
            for future in done:
                future.result()
    finally:
        for client in clients:
            client.close()
    traffic = Traffic(
        model=model,
        endpoint=name,
        url=f"{url}/{name}/score",
        file=str(file),
        requests=run.requests,
        answered=run.answered,
        failed=dict(run.failed),
        served=dict(run.served),
        feedback=run.feedback,
        matched=run.matched if feedback else None,
        first_error=run.first_error,
    )
    if run.hopeless is not None or not run.answered:
        raise TrafficFailed(traffic, run.hopeless or run.first_error or "no answer")
    return traffic


class TrafficFailed(CliError):
    """No request could succeed (or none did): the server's reason; what was sent so far."""

    def __init__(self, traffic: Traffic, reason: str) -> None:
        answered = f"{traffic.answered} of {traffic.requests} request(s) answered"
        super().__init__(f"{traffic.endpoint}: {reason} [{answered}]")
        self.traffic = traffic


def _split(total: int, parts: int) -> list[range]:
    """`total` request indices in `parts` interleaved shares (file order overall)."""
    return [range(start, total, parts) for start in range(parts)]
