"""MLflow: offline metrics for the staging gate, and registry tags mirroring our decisions.

Works against a local SQLite store and against the Azure ML workspace's MLflow endpoint
(azureml-mlflow tracking URI). Azure ML's MLflow has no registry aliases, so decisions are
mirrored as model-version tags; our state store remains the source of truth.
mlflow is imported lazily: the Functions app must not pay for it at cold start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from domain.metrics import OfflineMetrics

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

CHAMPION_PREFIX = "champion_"


class MlflowRegistry:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _run_metrics(self, model: str, version: str) -> tuple[dict[str, float], dict[str, str]]:
        model_version = self.client.get_model_version(model, version)
        if not model_version.run_id:
            return {}, {}
        run = self.client.get_run(model_version.run_id)
        return dict(run.data.metrics), dict(run.data.tags)

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        """The candidate's holdout metrics, and the champion's on the same holdout.

        The evaluate step scores the champion it was given on the candidate's holdout and logs
        `champion_<metric>`. If the champion has changed since (another promotion finished),
        the champion's own run metrics are used instead, and that is logged.
        """
        metrics, tags = self._run_metrics(model, candidate_version)
        candidate = {k: v for k, v in metrics.items() if not k.startswith(CHAMPION_PREFIX)}
        if champion_version is None:
            return OfflineMetrics(candidate=candidate, champion=None)
        if tags.get("champion_version") == champion_version:
            champion = {
                k[len(CHAMPION_PREFIX) :]: v
                for k, v in metrics.items()
                if k.startswith(CHAMPION_PREFIX)
            }
            if champion:
                return OfflineMetrics(candidate=candidate, champion=champion)
        log.info(
            "%s v%s was not evaluated against champion v%s: using the champion's own metrics",
            model,
            candidate_version,
            champion_version,
        )
        champion_metrics, _ = self._run_metrics(model, champion_version)
        champion = {k: v for k, v in champion_metrics.items() if not k.startswith(CHAMPION_PREFIX)}
        return OfflineMetrics(candidate=candidate, champion=champion)

    def tag(self, model: str, version: str, tags: dict[str, str]) -> None:
        """Mirror tags onto the version. A version the registry does not know is logged and
        skipped: a mirror must never hold back the effects after it (a rollback's traffic)."""
        from mlflow.exceptions import MlflowException

        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(model, version, key, value)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("cannot tag %s v%s (%s): %s", model, version, tags, exc.message)
