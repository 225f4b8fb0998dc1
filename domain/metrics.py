"""Metric snapshots the gates judge. Built by adapters from MLflow; judged by pure gates."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field


class OfflineMetrics(BaseModel):
    """Offline metrics of the candidate's training run and of the champion on the same holdout."""

    candidate: dict[str, float] = Field(default_factory=dict)
    champion: dict[str, float] | None = None  # None when there is no production model yet


class ArmStats(BaseModel):
    """Live metrics of one deployment over one canary step's window."""

    deployment: str
    requests: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)  # failed requests (5xx, scoring errors)
    labeled: int = Field(default=0, ge=0)  # requests for which feedback (a true label) arrived
    correct: int = Field(default=0, ge=0)  # labeled requests predicted right
    latency_ms: list[float] = Field(default_factory=list)  # a sample of request latencies

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None


class LiveMetrics(BaseModel):
    """Per-deployment live metrics for the current canary step's window."""

    window_start: AwareDatetime
    window_end: AwareDatetime
    arms: dict[str, ArmStats] = Field(default_factory=dict)  # by deployment name


class ShadowMetrics(BaseModel):
    """A shadow's window: production's live requests, the candidate's mirrored copies, and
    the pairs (the same request answered by both) whose predictions agree."""

    window_start: AwareDatetime
    window_end: AwareDatetime
    production: ArmStats  # the live requests production answered in the window
    candidate: ArmStats  # the mirrored copies the candidate answered (nobody saw them)
    pairs: int = Field(default=0, ge=0)  # requests both answered successfully
    agreed: int = Field(default=0, ge=0)  # of those, the same predictions

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None
