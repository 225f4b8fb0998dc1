"""The per-model policy: one YAML document per model, validated with pydantic.

Pure: `parse_policy` takes the text; reading the files is `orchestrator.policy_files`.
A bad document fails with its source, the field and the reason.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(value: Any) -> Any:
    """Accept "90s", "10m", "2h", "1d" (and what pydantic accepts: seconds, ISO 8601)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration), AfterValidator(_not_negative)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ALL_FEATURES = "*"  # feature_columns as a pipeline input: every column but the label
# A column name travels as a pipeline input inside a component's quoted command line, and the
# feature columns as one comma-separated value: these characters could not arrive intact.
_COLUMN_FORBIDDEN = frozenset("'\"`$\\,")


def _column_name(name: str) -> str:
    if name != name.strip():
        raise ValueError(f"column name {name!r} has leading or trailing spaces")
    if name == ALL_FEATURES:
        raise ValueError(f"{ALL_FEATURES!r} is not a column name")
    if name.startswith("-"):  # a step's command line would read it as an option
        raise ValueError(f"column name {name!r} starts with '-'")
    bad = sorted({c for c in name if c in _COLUMN_FORBIDDEN or not c.isprintable()})
    if bad:
        raise ValueError(f"column name {name!r} contains {''.join(bad)!r}")
    return name


ColumnName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_column_name)]


class DataSource(_Section):
    """Where new training data for the model lands, and which of its columns train it."""

    container: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    # The CSV column holding the target. feature_columns: the columns to train on (each must
    # be numeric); None takes every column except the label.
    label_column: ColumnName = "label"
    feature_columns: list[ColumnName] | None = Field(default=None, min_length=1)

    @field_validator("feature_columns")
    @classmethod
    def _features_distinct_from_label(
        cls, columns: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        # A field validator (not a model one) so the error names data.feature_columns.
        if columns is None:
            return None
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"columns named more than once: {repeated}")
        if info.data.get("label_column") in columns:
            raise ValueError(f"the label column {info.data['label_column']!r} cannot be a feature")
        return columns


class RetrainSettings(_Section):
    debounce: Duration = timedelta(minutes=10)  # how long a window collects data before one job
    # A window closes only once no data has landed for `quiet` (at most the debounce: a storm
    # that outlasts the debounce still makes one job), at the latest `max_window` after it
    # opened.
    quiet: Duration = timedelta(minutes=1)
    max_window: Duration = timedelta(hours=1)
    min_new_files: int = Field(default=1, ge=0)
    min_new_rows: int = Field(default=0, ge=0)  # only counted where events report rows
    cooldown: Duration = timedelta(minutes=30)  # after the last job ended
    # How often a running training job is polled: poll_interval after submission, then
    # doubling per check up to max_poll_interval.
    poll_interval: Duration = timedelta(minutes=1)
    max_poll_interval: Duration = timedelta(minutes=10)
    # A job still queued or running this long after submission is canceled and recorded as
    # failed, so one hung job cannot stop the model from ever training again.
    max_job_duration: Duration = timedelta(hours=24)
    # Bounds (docs/retraining.md): a DataLanded message (one blob, one event) carrying more
    # items than max_items_per_event is dead-lettered with the reason; one job takes at most
    # max_items_per_window items (the oldest), the rest stays pending for the next job.
    max_items_per_event: int = Field(default=1_000, ge=1)
    max_items_per_window: int = Field(default=50_000, ge=1)
    # How long a data key is remembered for deduplication (the data ledger prunes older keys
    # when it writes their shard): a blob re-sent after this long counts as new data.
    dedup_retention: Duration = timedelta(days=30)


class MonitorSettings(_Section):
    """Retrain on decay (docs/retraining.md): every `every`, the champion's labeled live
    feedback over the last `window` is tested against its own offline `metric`. A one-sided
    exact binomial test per check, at `alpha` split between the checks (Bonferroni): live
    accuracy below offline - `accuracy_drop`, or an error rate above `max_error_rate`. A check
    with fewer than `min_samples` never triggers. At most one retrain per `cooldown`."""

    window: Duration = timedelta(hours=1)
    min_samples: int = Field(default=500, ge=1)
    metric: str = Field(default="accuracy", min_length=1)  # the champion's offline metric
    accuracy_drop: Finite | None = Field(default=0.03, ge=0, lt=1)  # None: not checked
    max_error_rate: Finite | None = Field(default=0.01, gt=0, lt=1)  # None: not checked
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    cooldown: Duration = timedelta(hours=6)
    every: Duration = timedelta(minutes=10)
    # The experiment an Azure ML model monitor's runs are under: its threshold breach (a
    # RunStatusChanged event of such a run, tagged azureml_modelmonitor_threshold_breached)
    # starts the same decay retrain, within the same cooldown. None: not listened to.
    azureml_monitor_experiment: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("window", "every")
    @classmethod
    def _monitor_positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @model_validator(mode="after")
    def _something_checked(self) -> MonitorSettings:
        if self.accuracy_drop is None and self.max_error_rate is None:
            raise ValueError("set accuracy_drop or max_error_rate (or remove monitor:)")
        return self


class PipelineSettings(_Section):
    file: str = "pipelines/azureml/pipeline.yml"  # relative to the repository / app root
    experiment: str | None = None  # defaults to "<model>-retrain"
    compute: str | None = None  # Azure ML compute target; None keeps the YAML's
    data_input: str = "training_data"  # the pipeline input that receives the new data


class ThresholdGate(_Section):
    """Candidate's offline metric against a fixed value: `auc >= 0.80`."""

    kind: Literal["threshold"] = "threshold"
    metric: str
    op: Literal[">=", "<="] = ">="
    value: Finite


class ChampionGate(_Section):
    """Candidate against the production model on the same holdout: `auc >= champion - 0.01`."""

    kind: Literal["champion"] = "champion"
    metric: str
    higher_is_better: bool = True
    margin: Finite = Field(default=0.0, ge=0)  # how much worse than the champion is tolerated


RATE_METRICS = ("accuracy", "error_rate")
# Production's rate assumed when a rate gate's sample size is planned, unless it gives its own.
DEFAULT_PLANNING_RATE = {"accuracy": 0.90, "error_rate": 0.01}
# Test names of earlier policy files, still read: what each means now (docs/canary-statistics.md).
_LEGACY_TESTS = {"two_proportion": "farrington_manning", "mann_whitney": "quantile",
                 "bootstrap": "quantile"}  # fmt: skip


class CanaryGate(_Section):
    """Canary against production on live metrics: a sequential non-inferiority test.

    Rates (accuracy, error_rate): the Farrington-Manning score test, `margin` absolute (0.02 =
    two points). Latency: the `quantile` (p95 by default) of the canary at most (1 + margin)
    times production's, `margin` relative. `test` may be left out (it follows the metric);
    the earlier names two_proportion, mann_whitney and bootstrap are read as the test of their
    metric today.
    """

    kind: Literal["canary"] = "canary"
    metric: Literal["accuracy", "error_rate", "latency_ms"]
    test: (
        Literal["farrington_manning", "quantile", "two_proportion", "mann_whitney", "bootstrap"]
        | None
    ) = Field(default=None, validate_default=True)
    margin: Finite = Field(default=0.02, gt=0)  # tolerated degradation (absolute for rates,
    # relative for latency: 0.1 = 10% slower)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    quantile: float = Field(default=0.95, ge=0.5, lt=1)  # latency only: 0.95 = p95
    # Rates only: production's expected rate, which the sample size is planned from
    # (None: 0.90 for accuracy, 0.01 for error_rate). A wrong guess changes the samples
    # needed, never the test's error rates.
    planning_rate: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("test")
    @classmethod
    def _test_fits_metric(cls, test: str | None, info: ValidationInfo) -> str:
        metric = info.data.get("metric")
        wanted = "farrington_manning" if metric in RATE_METRICS else "quantile"
        normalized = _LEGACY_TESTS.get(test, test) if test is not None else wanted
        if normalized != wanted:
            kind = "a rate" if metric in RATE_METRICS else "not a rate"
            raise ValueError(f"metric {metric} is {kind}: use test {wanted}")
        return normalized

    @model_validator(mode="after")
    def _fields_fit_metric(self) -> CanaryGate:
        rate = self.metric in RATE_METRICS
        if rate and self.quantile != 0.95:
            raise ValueError(f"metric {self.metric} is a rate: quantile is for latency_ms")
        if not rate and self.planning_rate is not None:
            raise ValueError("planning_rate is for rates (accuracy, error_rate)")
        if rate:
            good = self.rate_to_plan if self.metric == "accuracy" else 1 - self.rate_to_plan
            if good - self.margin <= 0:
                raise ValueError(
                    f"margin {self.margin:g} leaves no rate to test against at planning rate "
                    f"{self.rate_to_plan:g}"
                )
        return self

    @property
    def rate_to_plan(self) -> float:
        """Production's rate the sample size is planned from."""
        if self.planning_rate is not None:
            return self.planning_rate
        return DEFAULT_PLANNING_RATE.get(self.metric, 0.0)

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


StagingGate = Annotated[ThresholdGate | ChampionGate, Field(discriminator="kind")]


class StagingSettings(_Section):
    gates: list[StagingGate] = Field(default_factory=list)
    # Offline metrics that cannot be read make the gate inconclusive: it is retried after
    # `retry_delay`, and after `max_attempts` inconclusive evaluations the candidate is rejected.
    retry_delay: Duration = timedelta(minutes=10)
    max_attempts: int = Field(default=3, ge=1)


class ApprovalSettings(_Section):
    required: bool = False
    approvers: list[str] = Field(default_factory=list, validate_default=True)
    timeout: Duration = timedelta(hours=24)
    on_timeout: Literal["reject", "approve"] = "reject"

    @field_validator("approvers")
    @classmethod
    def _approvers_when_required(cls, approvers: list[str], info: ValidationInfo) -> list[str]:
        # A field validator (not a model one) so the error names approval.approvers.
        if info.data.get("required") and not approvers:
            raise ValueError("approval.required is true but approvers is empty")
        return approvers


class CanarySettings(_Section):
    """The canary: steps of traffic on the candidate, judged by one group-sequential design
    per promotion (docs/canary-statistics.md)."""

    steps: list[int] = Field(default_factory=lambda: [10, 25, 50])  # percent on the candidate
    bake: Duration = timedelta(minutes=30)  # before a step's first check, and between checks
    # A step waits (checked every `bake`) until the design's samples for it are reached, at
    # most this long; then `on_exhausted`. Too few samples is never a failure.
    max_step_duration: Duration = timedelta(hours=24)
    # Requests each arm needs in a step's window before it is judged (and a first model's bake).
    min_samples_per_arm: int = Field(default=200, ge=1)
    gates: list[CanaryGate] = Field(default_factory=list)
    # The power the samples are planned for: the chance that a candidate exactly as good as
    # production passes by the last step (1 - power of such candidates end undecided: paused).
    power: float = Field(default=0.8, ge=0.5, lt=1)
    # How alpha is spent over the looks (Lan-DeMets): O'Brien-Fleming-like spends little early.
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
    # The production bake's inconclusive checks that extend it (a first model's too, under
    # first_model.bake_without_traffic=rollback); the canary steps wait by time instead.
    max_extensions: int = Field(default=3, ge=0)
    # Undecided when time runs out or the design's samples are all used: pause (a person
    # decides), rollback, or promote. promote acts only when every gate's metrics were read
    # and the design's full samples reached: missing or too few metrics never promote, they
    # pause (docs/canary-statistics.md).
    on_exhausted: Literal["pause", "rollback", "promote"] = "pause"

    @field_validator("steps")
    @classmethod
    def _steps_increase(cls, steps: list[int]) -> list[int]:
        if any(not 0 < step < 100 for step in steps):
            raise ValueError("canary steps must be between 1 and 99 percent")
        if steps != sorted(set(steps)):
            raise ValueError("canary steps must strictly increase")
        return steps

    @field_validator("bake")
    @classmethod
    def _bake_longer_than_zero(cls, value: timedelta) -> timedelta:
        # A step waiting for samples, and a bake with a holdback, look again every `bake`:
        # zero would look again at once, for ever.
        if value <= timedelta(0):
            raise ValueError("canary.bake must be longer than zero (checks repeat every bake)")
        return value

    @field_validator("max_step_duration")
    @classmethod
    def _step_outlasts_bake(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        bake = info.data.get("bake")
        if bake is not None and value < bake:
            raise ValueError("max_step_duration must be at least canary.bake")
        return value

    @field_validator("gates")
    @classmethod
    def _one_gate_per_metric(cls, gates: list[CanaryGate]) -> list[CanaryGate]:
        metrics = [gate.metric for gate in gates]
        repeated = sorted({m for m in metrics if metrics.count(m) > 1})
        if repeated:
            raise ValueError(f"one gate per metric: {repeated} repeated")
        return gates


class ShadowGates(_Section):
    """What a shadow must show before its first live step (docs/promotion.md, shadow). Each
    test is one look at `alpha`: the shadow passes when all three pass (an intersection-union
    test: a bad candidate passes with probability at most `alpha`); it fails when any shows
    the candidate worse (a good one fails with probability at most the sum of the alphas)."""

    # Error rate (Farrington-Manning, absolute): at most `error_rate_margin` above production's.
    error_rate_margin: Finite = Field(default=0.01, gt=0, lt=1)
    # Tail latency (order-statistic bounds of the quantile): at most (1 + margin) production's.
    latency_quantile: float = Field(default=0.95, ge=0.5, lt=1)
    latency_margin: Finite = Field(default=0.2, gt=0)
    # Agreement with production on the same mirrored request (exact binomial): at least this.
    min_agreement: float = Field(default=0.95, gt=0, lt=1)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # Mirrored pairs (and requests per arm) the look waits for.
    min_samples: int = Field(default=200, ge=1)


class ShadowSettings(_Section):
    """An optional first stage: once the candidate's deployment is ready, it gets a mirrored
    copy of `percent` of the live traffic and answers nobody; after `duration` its gates
    decide whether the first live step starts. Too few samples wait (checked every
    `check_every`) at most `max_wait` past the duration, then canary.on_exhausted."""

    percent: int = Field(default=10, ge=1, le=50)  # Azure ML mirrors at most 50%
    duration: Duration = timedelta(minutes=30)
    gates: ShadowGates = ShadowGates()
    check_every: Duration = timedelta(minutes=10)
    max_wait: Duration = timedelta(hours=24)

    @field_validator("duration", "check_every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class ManagedTarget(_Section):
    """The endpoint is an Azure ML managed online endpoint (the default); its deployments'
    VM size is the app's AZUREML_INSTANCE_TYPE."""

    kind: Literal["managed"] = "managed"


class KubernetesTarget(_Section):
    """The endpoint is an Azure ML Kubernetes online endpoint on an attached AKS or Arc
    compute (docs/endpoint.md): deployments run on `compute` with one of the instance types
    its cluster defines."""

    kind: Literal["kubernetes"]
    # The attached compute's name in the workspace (Azure ML: 2-16 letters, digits, '-').
    compute: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{1,15}$")
    # An instance type defined on that cluster (a Kubernetes custom resource); the extension
    # creates `defaultinstancetype`.
    instance_type: str = Field(
        default="defaultinstancetype", min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$"
    )
    instance_count: int = Field(default=1, ge=1, le=100)


EndpointTarget = Annotated[ManagedTarget | KubernetesTarget, Field(discriminator="kind")]


class RingSettings(_Section):
    """One ring: an endpoint (e.g. a region) the candidate reaches after the ring before it
    (docs/promotion.md, Rings). The first ring is the model's own `endpoint`: its shadow,
    canary and production bake run there; each later ring bakes on its own for `bake` (None:
    the policy's production_bake) and is judged on the candidate's error rate there."""

    endpoint: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9-]*$")
    bake: Duration | None = None
    # The candidate's error rate on this ring over its bake must be at most this (with at least
    # canary.min_samples_per_arm requests; missing or too few samples never pass).
    max_error_rate: float = Field(default=0.01, ge=0, le=1)


class FirstModelSettings(_Section):
    """A first model (nothing in production yet): no champion to compare with, no known-good
    model to roll back to, so its production bake judges only its own traffic."""

    # When its bake check finds fewer than canary.min_samples_per_arm requests (or cannot read
    # them): "hold" keeps it in the bake, checked again every canary.bake, until the samples
    # arrive or a person decides (promote-now completes it, rollback removes it); "pass"
    # completes it if it served no errors (else holds); "rollback" extends the bake up to
    # canary.max_extensions times, then rolls it back, leaving nothing serving.
    bake_without_traffic: Literal["hold", "pass", "rollback"] = "hold"


class ModelPolicy(_Section):
    # At most 48 characters: the name is part of the ids of its runs, promotions and messages
    # (128 characters at most), with room for the parts that follow it.
    model: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    endpoint: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9-]*$")
    # Where the endpoint runs in Azure: managed (default) or on an attached Kubernetes compute.
    endpoint_target: EndpointTarget = ManagedTarget()
    data: DataSource
    retrain: RetrainSettings = RetrainSettings()
    monitor: MonitorSettings | None = None  # None: no retrain on decay
    pipeline: PipelineSettings = PipelineSettings()
    staging: StagingSettings = StagingSettings()
    approval: ApprovalSettings = ApprovalSettings()
    canary: CanarySettings = CanarySettings()
    production_bake: Duration = timedelta(hours=1)
    # Percent of traffic left on the previous (known-good) deployment during the production
    # bake, so the bake compares candidate and holdback in the same window (0: no holdback,
    # the bake compares with the last canary window; a first model has none).
    production_holdback: int = Field(default=5, ge=0, le=50)
    first_model: FirstModelSettings = FirstModelSettings()
    # None: no shadow stage (the first live step follows the deployment).
    shadow: ShadowSettings | None = None
    on_newer_candidate: Literal["queue", "supersede"] = "queue"
    # Several endpoints (one per region, say), promoted one after the other: the first must be
    # `endpoint`. Empty: the model's endpoint alone.
    rings: list[RingSettings] = Field(default_factory=list)
    # When the endpoint serves something else than the state says (changed by hand, a
    # deployment deleted outside the app): put it back, or pause the promotion for a person.
    # None: pause during a promotion, repair otherwise.
    on_drift: Literal["repair", "pause"] | None = None
    # The longest a promotion may sit in one state before the timer reports it as stuck.
    max_time_in_state: Duration = timedelta(hours=48)

    @field_validator("rings")
    @classmethod
    def _rings_start_at_the_endpoint(
        cls, rings: list[RingSettings], info: ValidationInfo
    ) -> list[RingSettings]:
        names = [ring.endpoint for ring in rings]
        endpoint = info.data.get("endpoint")
        if names and endpoint is not None and names[0] != endpoint:
            raise ValueError(f"the first ring must be the model's endpoint {endpoint!r}")
        if len(set(names)) != len(names):
            raise ValueError("each ring names a different endpoint")
        if rings and rings[0].bake not in (None, info.data.get("production_bake")):
            raise ValueError("the first ring bakes for production_bake: leave its bake out")
        if rings and "max_error_rate" in rings[0].model_fields_set:
            # Never read: the first ring is judged by the canary's and the bake's gates.
            raise ValueError(
                "the first ring is judged by the canary and production bake gates: "
                "leave its max_error_rate out"
            )
        return rings

    def on_endpoint(self, endpoint: str | None) -> ModelPolicy:
        """This policy as seen by one of its rings' endpoints (None: the model's own): what
        the endpoint port is built from (the same target, another endpoint's name)."""
        if endpoint is None or endpoint == self.endpoint:
            return self
        return self.model_copy(update={"endpoint": endpoint})

    def ring(self, endpoint: str) -> RingSettings | None:
        """A later ring's settings by its endpoint's name (None: not a ring any more)."""
        return next((ring for ring in self.rings[1:] if ring.endpoint == endpoint), None)


class PolicyError(ValueError):
    """An invalid policy file: names the file, the field and the reason."""

    def __init__(self, path: Path | str, field: str, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}")
        self.path = str(path)
        self.field = field
        self.reason = reason


def parse_policy(text: str, source: Path | str = "<policy>") -> ModelPolicy:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, "(file)", f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise PolicyError(source, "(file)", "YAML nested too deeply") from exc
    if not isinstance(document, dict):
        raise PolicyError(source, "(file)", "expected a mapping at the top level")
    try:
        return ModelPolicy.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise PolicyError(source, field, first["msg"]) from exc
    except (OverflowError, RecursionError) as exc:  # e.g. a duration of 10**15 days
        raise PolicyError(source, "(file)", f"a value is out of range: {exc}") from exc
