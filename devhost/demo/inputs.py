"""What the demo feeds the app: a dataset that ships with scikit-learn, the CSV batches that land
where the blob trigger watches, and labeled scoring traffic (with its feedback) to the local
endpoint."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- data


@dataclass
class Dataset:
    columns: list[str]
    rows: list[list[float]]
    labels: list[int]


def load_dataset() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    order = list(range(len(bunch.target)))
    random.Random(7).shuffle(order)
    return Dataset(
        columns=[str(name) for name in bunch.feature_names],
        rows=[[float(x) for x in bunch.data[i]] for i in order],
        labels=[int(bunch.target[i]) for i in order],
    )


def write_batch(
    dataset: Dataset, folder: Path, name: str, start: int, stop: int, flip: bool = False
) -> Path:
    """A CSV of rows [start, stop) with a `label` column; `flip` corrupts every label."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*dataset.columns, "label"])
        for row, label in zip(dataset.rows[start:stop], dataset.labels[start:stop], strict=True):
            writer.writerow([*row, 1 - label if flip else label])
    return path


# ----------------------------------------------------------------------------- traffic


class TrafficGenerator:
    """Labeled requests to the local endpoint, then their feedback (the true label).

    Each request carries an entity key, so one patient sees one model during a step. They go
    to `endpoint` (the model's policy names it) on the local endpoint server at `server_url`,
    as Azure ML scores at the endpoint's own URI.

    `flip_share` (0 to 1, changed while it runs) is concept drift: that share of the feedback
    says the opposite of the dataset's label, as if the world had changed under the model."""

    def __init__(
        self, server_url: str, endpoint: str, dataset: Dataset, threads: int, key: str
    ) -> None:
        self.server_url = server_url
        self.endpoint = endpoint
        self._headers = {"Authorization": f"Bearer {key}"}  # the endpoint's key, as on Azure
        self.dataset = dataset
        self.threads = threads
        self.sent = 0
        self.failed = 0
        self.served: Counter[str] = Counter()
        self.flip_share = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._run, args=(index,), name=f"traffic-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)

    def _run(self, index: int) -> None:
        import httpx

        chooser = random.Random(1000 + index)
        feedback: list[dict[str, Any]] = []
        score, feedback_path = f"/{self.endpoint}/score", f"/{self.endpoint}/feedback"
        with httpx.Client(base_url=self.server_url, timeout=10, headers=self._headers) as client:
            while not self._stop.is_set():
                row = chooser.randrange(len(self.dataset.rows))
                key = f"patient-{chooser.randrange(100_000)}"
                try:
                    response = client.post(
                        score,
                        json={
                            "input_data": {
                                "columns": self.dataset.columns,
                                "data": [self.dataset.rows[row]],
                            }
                        },
                        headers={"x-request-key": key},
                    )
                except httpx.HTTPError:
                    response = None
                if response is None or response.status_code != 200:
                    with self._lock:
                        self.failed += 1
                    self._stop.wait(0.2)  # nothing serves yet, or a deployment is changing
                    continue
                request_id = response.headers.get("x-request-id", "")
                label = self.dataset.labels[row]
                if self.flip_share and chooser.random() < self.flip_share:
                    label = 1 - label
                feedback.append({"request_id": request_id, "label": label})
                with self._lock:
                    self.sent += 1
                    self.served[response.headers.get("azureml-model-deployment", "?")] += 1
                if len(feedback) >= 20:
                    client.post(feedback_path, json={"feedback": feedback})
                    feedback = []

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"sent": self.sent, "failed": self.failed, "served": dict(self.served)}
