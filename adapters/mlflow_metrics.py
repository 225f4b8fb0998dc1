"""MetricsReader on MLflow: offline metrics from the registry's runs, live metrics of a canary
step (evaluated from the endpoint's request log, logged to MLflow, read back as the gate does).

mlflow and the canary evaluation are imported lazily: the Functions app must not pay for them
at cold start.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.azure_credential import azure_credential
from domain.metrics import ArmStats, LiveMetrics, OfflineMetrics, ShadowMetrics
from orchestrator.ports import ArmWindow, LatencyReader

if TYPE_CHECKING:
    from adapters.mlflow_registry import MlflowRegistry
    from orchestrator.settings import Settings
    from pipelines.canary.evaluate_canary import PredictionRecord


# In CANARY_RECORDS_URI: replaced by the endpoint read (the model's own, or a later ring's).
ENDPOINT_PLACEHOLDER = "{endpoint}"


class MlflowMetrics:
    """MetricsReader: offline metrics from the registry's runs; live metrics of a canary step.

    The canary evaluation runs here, in the gate check, and logs to MLflow before the gate
    reads it back: locally over the request log of the model's endpoint (the policy's
    `endpoint`, `endpoint_of`) on the local endpoint server, in Azure over the data
    collector's JSONL and the feedback tables (CANARY_RECORDS_URI, CANARY_FEEDBACK_URI). The
    collector records no latency: in Azure each arm's latencies come from `latency` (the
    endpoint's traffic log, adapters/traffic_log_latency.py) when it is given.
    The same module is the Azure ML command component pipelines/canary/component.yml, for
    evaluating a window by hand (see docs/endpoint.md).
    """

    def __init__(
        self,
        settings: Settings,
        registry: MlflowRegistry,
        *,
        endpoint_of: Callable[[str], str] | None = None,
        latency: LatencyReader | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._latency = latency
        # Locally, which endpoint (the policy's) serves a model: its request log is judged.
        self._endpoint_of = endpoint_of or self._endpoint_from_policy_files

    def _endpoint_from_policy_files(self, model: str) -> str:
        from orchestrator.policy_files import load_policies, policy_for

        return policy_for(load_policies(self._settings.policy_dir), model).endpoint

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        return self._registry.offline(model, candidate_version, champion_version)

    def live(self, model: str, promotion_id: str, step: int, arms: list[ArmWindow]) -> LiveMetrics:
        """Evaluate the step's request log, log it to MLflow, and read it back as the gate does.

        Arms judged over different windows (the production bake compares the candidate now
        with production during the last canary step) are evaluated window by window.
        """
        from pipelines.canary import evaluate_canary
        from pipelines.canary.live_metrics import read_live_metrics

        settings = self._settings
        # By window and endpoint: a later ring's arm is read from that ring's own log.
        by_window: dict[tuple[datetime, datetime, str | None], list[str]] = {}
        for arm in arms:
            key = (arm.window_start, arm.window_end, arm.endpoint)
            by_window.setdefault(key, []).append(arm.deployment)
        merged: LiveMetrics | None = None
        for (start, end, ring), deployments in by_window.items():
            records, feedback = self._records(model, start, end, ring=ring)
            evaluate_canary.evaluate(
                records,
                feedback,
                tracking=settings.tracking_uri,
                promotion_id=promotion_id,
                step=step,
                window_start=start,
                window_end=end,
                deployments=deployments,
            )
            read = read_live_metrics(
                settings.tracking_uri, promotion_id, step, deployments, start, end
            )
            if merged is None:
                merged = read
            else:
                merged = merged.model_copy(
                    update={
                        "arms": {**merged.arms, **read.arms},
                        "window_start": min(merged.window_start, read.window_start),
                        "window_end": max(merged.window_end, read.window_end),
                    }
                )
        assert merged is not None
        if self._latency is not None and settings.uses_azureml:
            merged = self._with_latencies(model, merged, arms)
        return merged

    def shadow(
        self, model: str, candidate: str, production: str, start: datetime, end: datetime
    ) -> ShadowMetrics:
        """A shadow's window from the same request records as the canary (locally the
        endpoint's request log, where mirrored copies are flagged; in Azure the data
        collector's, joined on the caller's x-request-id), with latencies from the latency
        reader in Azure. Not logged to MLflow: the gate's evidence keeps the counts."""
        # Agreement compares the two deployments' answers: no labels, no feedback table.
        records, _ = self._records(model, start, end, labels=False)
        metrics = shadow_metrics(records, candidate, production, start, end)
        if self._latency is not None and self._settings.uses_azureml:
            from pipelines.canary.evaluate_canary import DEFAULT_LATENCY_SAMPLE

            endpoint = self._endpoint_of(model)
            arms = {}
            for role, name in (("candidate", candidate), ("production", production)):
                sample = self._latency.latencies(endpoint, name, start, end, DEFAULT_LATENCY_SAMPLE)
                arms[role] = getattr(metrics, role).model_copy(update={"latency_ms": sample})
            metrics = metrics.model_copy(update=arms)
        return metrics

    def _with_latencies(self, model: str, live: LiveMetrics, arms: list[ArmWindow]) -> LiveMetrics:
        """Each arm's latencies over its own window, from the latency reader."""
        from pipelines.canary.evaluate_canary import DEFAULT_LATENCY_SAMPLE

        assert self._latency is not None
        updated = dict(live.arms)
        for arm in arms:
            stats = updated.get(arm.deployment)
            if stats is None:
                continue
            endpoint = arm.endpoint or self._endpoint_of(model)  # a later ring's: its own
            sample = self._latency.latencies(
                endpoint, arm.deployment, arm.window_start, arm.window_end, DEFAULT_LATENCY_SAMPLE
            )
            updated[arm.deployment] = stats.model_copy(update={"latency_ms": sample})
        return live.model_copy(update={"arms": updated})

    def _records(
        self,
        model: str,
        start: datetime,
        end: datetime,
        *,
        labels: bool = True,
        ring: str | None = None,
    ) -> tuple[list[Any], dict[str, Any]]:
        """The model's endpoint's (or one of its rings': `ring`) request records in the
        window, and the feedback labels (none read without `labels`)."""
        from pipelines.canary import evaluate_canary

        settings = self._settings
        # Only this endpoint's records: another model's (or ring's) requests never count.
        endpoint_name = ring or self._endpoint_of(model)
        if not settings.uses_azureml:
            from adapters.local_endpoint import LocalEndpoint, endpoint_data_dir

            if settings.local_endpoint_url:
                with LocalEndpoint.from_settings(settings, endpoint_name) as endpoint:
                    endpoint.flush_records()
            folder = endpoint_data_dir(settings.local_endpoint_dir, endpoint_name)
            return (
                evaluate_canary.read_local_records(folder, start, end),
                evaluate_canary.read_local_feedback(folder) if labels else {},
            )
        # Azure: the data collector's JSONL and the feedback tables, fetched from blob storage.
        if not settings.canary_records_uri:
            raise RuntimeError("CANARY_RECORDS_URI must be set to read live requests in Azure")
        records_uri = settings.canary_records_uri
        if ENDPOINT_PLACEHOLDER in records_uri:
            # The collector writes under modelDataCollector/<endpoint>/: each endpoint (each
            # model's, each ring's) is read from its own folder.
            records_uri = records_uri.replace(ENDPOINT_PLACEHOLDER, endpoint_name)
        elif ring is not None:
            # One folder for every endpoint: a later ring's deployment (named as the first
            # ring's) cannot be told apart there, so its gate reads nothing rather than another's.
            raise RuntimeError(
                f"the ring {ring} cannot be read in Azure: CANARY_RECORDS_URI names one endpoint's "
                f"collector folder; name every endpoint's with {ENDPOINT_PLACEHOLDER}"
            )
        if labels and not settings.canary_feedback_uri:
            raise RuntimeError("CANARY_FEEDBACK_URI must be set to judge a canary in Azure")
        from adapters.blob_fetch import BlobFetcher

        fetch = BlobFetcher(credential=azure_credential())
        with tempfile.TemporaryDirectory() as folder:
            records_dir, feedback_dir = Path(folder, "records"), Path(folder, "feedback")
            # Only the hour folders around the window: the collector keeps every hour.
            window = evaluate_canary.collector_files_in(start, end)
            fetch(records_uri, records_dir, include=window)
            records = evaluate_canary.read_data_collector(records_dir, start, end)
            if not labels:
                return records, {}
            assert settings.canary_feedback_uri is not None
            fetch(settings.canary_feedback_uri, feedback_dir)
            return records, evaluate_canary.read_feedback_table(feedback_dir)


def shadow_metrics(
    records: Iterable[PredictionRecord],
    candidate: str,
    production: str,
    start: datetime,
    end: datetime,
) -> ShadowMetrics:
    """A shadow window from request records (start <= time < end).

    Production: its own live requests (never a mirrored copy). Candidate: its mirrored
    copies; a record not flagged mirrored counts too, since in the shadow the candidate takes
    no live traffic and Azure's collector does not flag mirroring. Errors are statuses >= 500
    (4xx are the caller's). A pair is one request id both answered with a 2xx; it agrees when
    every predicted row is the same class (`evaluate_canary`'s comparison of a prediction with
    a label). Latencies: successful requests', in time order, evenly thinned.
    """
    from pipelines.canary.evaluate_canary import DEFAULT_LATENCY_SAMPLE, _predicted_class, _same

    def rows(outputs: object) -> list[object]:
        return outputs if isinstance(outputs, list) else [outputs]

    def agree(ours: object, theirs: object) -> bool:
        mine, other = rows(ours), rows(theirs)
        return len(mine) == len(other) and all(
            _same(a, _predicted_class(b)) for a, b in zip(mine, other, strict=True)
        )

    arms: dict[str, list[PredictionRecord]] = {"candidate": [], "production": []}
    for record in records:
        if not start <= record.time < end:
            continue
        if record.deployment == candidate:
            arms["candidate"].append(record)
        elif record.deployment == production and not record.mirrored:
            arms["production"].append(record)

    def stats(name: str, found: list[PredictionRecord]) -> ArmStats:
        ok = [r for r in found if r.status < 400]
        latencies = [
            r.latency_ms for r in sorted(ok, key=lambda r: r.time) if r.latency_ms is not None
        ]
        step = max(1, -(-len(latencies) // DEFAULT_LATENCY_SAMPLE))
        return ArmStats(
            deployment=name,
            requests=len(found),
            errors=sum(1 for r in found if r.status >= 500),
            latency_ms=latencies[::step],
        )

    answered = {r.request_id: r for r in arms["production"] if 200 <= r.status < 300}
    pairs = agreed = 0
    for record in arms["candidate"]:
        other = answered.pop(record.request_id, None)  # each request pairs once
        if other is None or not 200 <= record.status < 300:
            continue
        pairs += 1
        agreed += agree(record.outputs, other.outputs)
    return ShadowMetrics(
        window_start=start,
        window_end=end,
        production=stats(production, arms["production"]),
        candidate=stats(candidate, arms["candidate"]),
        pairs=pairs,
        agreed=agreed,
    )
