"""What the demo feeds the app: a dataset that ships with scikit-learn, the CSV batches that land
where the blob trigger watches, and labeled scoring traffic (with its feedback) to the local
endpoints."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Sequence
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
    """Labeled requests to the local endpoints, then their feedback (the true label).

    Each request carries an entity key, so one patient sees one model during a step. They go
    to each of `endpoints` (the model's policy names them: its endpoint, then its later rings)
    on the local endpoint server at `server_url`, each at its own `/{endpoint}/score` as Azure
    ML scores at each endpoint's own URI, with its feedback to that endpoint. The first endpoint
    gets `threads` workers; each later ring `ring_threads` (its gate counts requests and errors
    only, and the two cores are shared). A ring that does not exist yet (it comes into being
    with its first deployment) answers 404: its workers wait and try again.

    `flip_share` (0 to 1, changed while it runs) is concept drift: that share of the feedback
    says the opposite of the dataset's label, as if the world had changed under the model."""

    def __init__(
        self,
        server_url: str,
        endpoints: Sequence[str],
        dataset: Dataset,
        threads: int,
        key: str,
        ring_threads: int = 1,
    ) -> None:
        if not endpoints:
            raise ValueError("the traffic needs at least one endpoint")
        self.server_url = server_url
        self.endpoints = tuple(endpoints)
        self._headers = {"Authorization": f"Bearer {key}"}  # the endpoint's key, as on Azure
        self.dataset = dataset
        self.threads = threads
        self.ring_threads = ring_threads
        self._sent: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._served: dict[str, Counter[str]] = {name: Counter() for name in self.endpoints}
        self.flip_share = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        """The model's own endpoint (the first ring)."""
        return self.endpoints[0]

    def start(self) -> None:
        index = 0
        for position, endpoint in enumerate(self.endpoints):
            for _ in range(self.threads if position == 0 else self.ring_threads):
                worker = threading.Thread(
                    target=self._run,
                    args=(endpoint, index),
                    name=f"traffic-{endpoint}-{index}",
                    daemon=True,
                )
                worker.start()
                self._workers.append(worker)
                index += 1

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)

    def _run(self, endpoint: str, index: int) -> None:
        import httpx

        chooser = random.Random(1000 + index)
        feedback: list[dict[str, Any]] = []
        score, feedback_path = f"/{endpoint}/score", f"/{endpoint}/feedback"
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
                        self._failed[endpoint] += 1
                    # Nothing serves yet, the ring does not exist yet, or a deployment is
                    # changing.
                    self._stop.wait(0.2)
                    continue
                request_id = response.headers.get("x-request-id", "")
                label = self.dataset.labels[row]
                if self.flip_share and chooser.random() < self.flip_share:
                    label = 1 - label
                feedback.append({"request_id": request_id, "label": label})
                with self._lock:
                    self._sent[endpoint] += 1
                    self._served[endpoint][
                        response.headers.get("azureml-model-deployment", "?")
                    ] += 1
                if len(feedback) >= 20:
                    client.post(feedback_path, json={"feedback": feedback})
                    feedback = []

    def snapshot(self) -> dict[str, Any]:
        """Totals over every endpoint; `served`: the model's own endpoint's answers by
        deployment; `endpoints`: each endpoint's own counts (a later ring's deployments have
        the same names as the first ring's)."""
        with self._lock:
            return {
                "sent": sum(self._sent.values()),
                "failed": sum(self._failed.values()),
                "served": dict(self._served[self.endpoint]),
                "endpoints": {
                    name: {
                        "sent": self._sent[name],
                        "failed": self._failed[name],
                        "served": dict(self._served[name]),
                    }
                    for name in self.endpoints
                },
            }
