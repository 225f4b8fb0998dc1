"""Local endpoint: routing between two models vs serving one model directly (pinned).

    .venv/bin/python -m benchmarks.bench_endpoint [--requests 600] [--threads 4]

Registers two tiny scikit-learn models in a temporary SQLite MLflow registry, starts the local
endpoint on 127.0.0.1 (a free port), splits traffic 90/10 between them, then measures in one
run, alternating rounds so both modes see the same machine state:

- routed: keyed requests (``x-request-key``), the server picks the deployment by hash;
- pinned: the same requests pinned to one deployment (``azureml-model-deployment``).

Prints requests per second and p50/p95 latency for each, and the routed/pinned ratios.
Both modes record every request in the request log, so the difference is the routing itself.
Bounded: stops early after --max-seconds (default 45).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path


def _register(tracking_uri: str, root: Path) -> tuple[str, object]:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = mlflow.create_experiment("bench", artifact_location=(root / "a").as_uri())
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    for c in (1.0, 1e-5):
        model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(x, model.predict(x)),
                registered_model_name="bench-model",
            )
    return "bench-model", x


ENDPOINT = "bench-ep"


def _run(url: str, bodies: list[dict], headers: list[dict], threads: int) -> list[float]:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [list(range(i, len(bodies), threads)) for i in range(threads)]

    def worker(indexes: list[int]) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in indexes:
                started = time.perf_counter()
                response = http.post(f"/{ENDPOINT}/score", json=bodies[i], headers=headers[i])
                mine.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600, help="per mode")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=45.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    began = time.monotonic()

    from adapters.local_endpoint import LocalEndpoint
    from endpoint_server import start_local_endpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        model, features = _register(tracking_uri, root)
        with start_local_endpoint(root / "endpoint", tracking_uri, max_lifetime=120) as handle:
            endpoint = LocalEndpoint(handle.url, ENDPOINT, key=handle.key)
            endpoint.deploy(model, "1", "bench-v1")
            endpoint.deploy(model, "2", "bench-v2")
            while not all(endpoint.deployment_state(d).done for d in ("bench-v1", "bench-v2")):
                time.sleep(0.05)
            endpoint.set_traffic({"bench-v1": 90, "bench-v2": 10})
            columns = list(features.columns)
            per_round = max(1, args.requests // args.rounds)
            bodies = [
                {"input_data": {"columns": columns, "data": [features.iloc[i % 500].tolist()]}}
                for i in range(per_round)
            ]
            key = {"Authorization": f"Bearer {handle.key}"}  # the server's key, as on Azure ML
            routed_h = [{**key, "x-request-key": f"customer-{i}"} for i in range(per_round)]
            pinned_h = [{**h, "azureml-model-deployment": "bench-v1"} for h in routed_h]
            _run(handle.url, bodies[:50], routed_h[:50], args.threads)  # warm up
            results: dict[str, list[float]] = {"routed": [], "pinned": []}
            seconds: dict[str, float] = {"routed": 0.0, "pinned": 0.0}
            for round_no in range(args.rounds):
                order = ("routed", "pinned") if round_no % 2 == 0 else ("pinned", "routed")
                for mode in order:
                    headers = routed_h if mode == "routed" else pinned_h
                    started = time.perf_counter()
                    results[mode] += _run(handle.url, bodies, headers, args.threads)
                    seconds[mode] += time.perf_counter() - started
                if time.monotonic() - began > args.max_seconds:
                    break
            endpoint.close()

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    print(f"local endpoint, {args.threads} client threads, 1-row requests, 90/10 split")
    print(f"{'mode':8} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    stats = {}
    for mode in ("routed", "pinned"):
        values = results[mode]
        stats[mode] = (len(values) / seconds[mode], p(values, 50), p(values, 95))
        rps, p50, p95 = stats[mode]
        print(f"{mode:8} {len(values):8d} {rps:8.1f} {p50:8.2f} {p95:8.2f}")
    print(
        f"ratio routed/pinned: req/s {stats['routed'][0] / stats['pinned'][0]:.3f}, "
        f"p50 {stats['routed'][1] / stats['pinned'][1]:.3f}, "
        f"p95 {stats['routed'][2] / stats['pinned'][2]:.3f}"
    )
    print(f"total {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
