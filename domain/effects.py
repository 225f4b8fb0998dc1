"""Effects: what the pure domain asks the outside world to do, as plain data.

The domain returns effects; the service layer stores them in the aggregate's outbox in the
same write as the transition, then dispatches them through the ports. Every effect must be
safe to dispatch twice (a crash between save and dispatch re-dispatches it), so each one is
absolute (a full traffic map, not a delta) or keyed (a deterministic message id or name).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator


class _Effect(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SendMessage(_Effect):
    """Put a command on the orchestrator queue, now or at `not_before` (a scheduled message).

    `message_id` must be deterministic (derived from the promotion, step and attempt) so a
    re-dispatch is dropped by duplicate detection or by the handler's seen-message check.
    """

    kind: Literal["send_message"] = "send_message"
    message_type: str
    message_id: str
    payload: dict[str, Any] = Field(default_factory=dict)
    promotion_id: str | None = None
    not_before: AwareDatetime | None = None


class SubmitTrainingJob(_Effect):
    """Submit the retraining pipeline. `run_id` is our id for the job (the idempotency key)."""

    kind: Literal["submit_training_job"] = "submit_training_job"
    run_id: str
    # The run whose manifest in the data ledger lists the data: the job's own run id (sealed
    # from the oldest `data_count` pending items when dispatched) or an earlier run's (a
    # forced retrain on the same data). None: `data_sample` is all the data (a person's URI).
    manifest: str | None = None
    data_count: int = Field(default=0, ge=0)
    data_sample: list[str] = Field(default_factory=list)  # the first few URIs, for people
    reason: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_a_full_list(cls, data: Any) -> Any:
        """An effect saved before manifests (`data_uris`, the whole list) is still read: its
        list is all its data, as a person's URI is."""
        if isinstance(data, dict) and "data_uris" in data:
            data = dict(data)
            uris = list(data.pop("data_uris") or [])
            data.setdefault("data_sample", uris)
            data.setdefault("data_count", len(uris))
        return data


class CancelTrainingJob(_Effect):
    """Ask the training backend to stop a job we gave up on (a no-op once it has ended)."""

    kind: Literal["cancel_training_job"] = "cancel_training_job"
    run_id: str
    reason: str = ""


class DeployModel(_Effect):
    """Start deploying a registered model version as `deployment` (does not wait)."""

    kind: Literal["deploy_model"] = "deploy_model"
    model_version: str
    deployment: str
    # The ring's endpoint (policy `rings`); None: the model's own endpoint.
    endpoint: str | None = None


class SetTraffic(_Effect):
    """Set the endpoint's live traffic to this absolute map (deployment -> percent, sums to 100)."""

    kind: Literal["set_traffic"] = "set_traffic"
    traffic: dict[str, int]
    # Puts traffic back on the known-good deployment (a rollback): never given up; past the
    # retry limits it pages (a lifecycle event, a metric, the model's status) and keeps trying.
    restore: bool = False
    endpoint: str | None = None  # a later ring's endpoint; None: the model's own

    @field_validator("traffic")
    @classmethod
    def _sums_to_100(cls, traffic: dict[str, int]) -> dict[str, int]:
        if any(weight < 0 or weight > 100 for weight in traffic.values()):
            raise ValueError("traffic weights must be between 0 and 100")
        if sum(traffic.values()) != 100:
            raise ValueError(f"traffic weights must sum to 100, got {sum(traffic.values())}")
        return traffic


class SetMirror(_Effect):
    """Set the endpoint's mirror (shadow) map to this absolute map (deployment -> percent of
    the live requests copied to it, whose answers nobody gets); ``{}`` turns mirroring off."""

    kind: Literal["set_mirror"] = "set_mirror"
    mirror: dict[str, int] = Field(default_factory=dict)

    @field_validator("mirror")
    @classmethod
    def _percentages(cls, mirror: dict[str, int]) -> dict[str, int]:
        if (
            any(weight < 0 or weight > 50 for weight in mirror.values())
            or sum(mirror.values()) > 50
        ):
            raise ValueError("mirror weights must be 0..50 and sum to at most 50")
        return mirror


class DeleteDeployment(_Effect):
    kind: Literal["delete_deployment"] = "delete_deployment"
    deployment: str
    endpoint: str | None = None  # a later ring's endpoint; None: the model's own


class TagModelVersion(_Effect):
    """Mirror our decision into the model registry (tags; the state store stays the truth)."""

    kind: Literal["tag_model_version"] = "tag_model_version"
    model_version: str
    tags: dict[str, str]


class RequestApproval(_Effect):
    """Publish a request for a person's decision on one step of one promotion."""

    kind: Literal["request_approval"] = "request_approval"
    promotion_id: str
    step: str
    candidate_version: str
    approvers: list[str]
    expires_at: AwareDatetime
    evidence: dict[str, Any] = Field(default_factory=dict)


class PublishEvent(_Effect):
    """A lifecycle event for the outside world (promoted, rolled back, rejected, ...)."""

    kind: Literal["publish_event"] = "publish_event"
    event_type: str
    data: dict[str, Any] = Field(default_factory=dict)


Effect = Annotated[
    SendMessage
    | SubmitTrainingJob
    | CancelTrainingJob
    | DeployModel
    | SetTraffic
    | SetMirror
    | DeleteDeployment
    | TagModelVersion
    | RequestApproval
    | PublishEvent,
    Field(discriminator="kind"),
]
