"""ModelDeployment: which version of a model serves, on how many replicas, at which endpoint."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .base import DNS_LABEL, DURATION, ApiModel, Condition, Doc, ObjectMeta, Resources, Rule

VERSION_PATTERN = r"^(latest|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on CPU, instead of a fixed replica count."""

    min_replicas: int = Doc("Fewest replicas.", 1, ge=1, le=1000)
    max_replicas: int = Doc("Most replicas.", ge=1, le=1000)
    target_cpu_utilization_percentage: int = Doc(
        "Average CPU use the autoscaler aims at.", 70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            field=".minReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
        ),
    )


class Server(ApiModel):
    """Tuning of the model server."""

    max_batch_size: int = Doc(
        "Most rows combined into one predict call (concurrent 100-row requests share calls below this).", 1024, ge=1, le=4096
    )
    max_batch_delay_ms: float = Doc("Longest a request waits for others to share its predict call.", 2.0, ge=0, le=1000)
    max_body_bytes: int = Doc("Largest request body accepted; larger ones get 413.", 4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    drift_sensor: bool = Doc("Count inputs in the reference bins for DriftPolicy checks.", True)
    grpc: bool | None = Doc(
        "Also serve Open Inference Protocol V2 over gRPC (inference.GRPCInferenceService) on port 8081, "
        "container and Service port named grpc. Unset: the operator's default (chart value operator.modelServerGrpc, off).",
        None,
    )


class Feedback(ApiModel):
    """Ground-truth labels sent back after predictions."""

    enabled: bool = Doc("Accept POST /v1/models/{name}/feedback.", True)
    keep_seconds: int = Doc("How long a prediction id can receive its label.", 3600, ge=60, le=7 * 24 * 3600)
    max_pending: int = Doc("Most predictions remembered while their labels are awaited.", 100000, ge=100, le=10_000_000)


class Analysis(ApiModel):
    """How a challenger is judged on live traffic (see docs/rollouts.md)."""

    alpha: float = Doc(
        "Significance level of each one-sided test on the error rates from feedback, for the whole rollout: "
        "it is split evenly over the looks (one look per minSamples labelled predictions, up to maxSamples).",
        0.05, gt=0, le=0.2,
    )
    margin: float = Doc(
        "Non-inferiority margin: how much higher (absolute) the challenger's error rate may be and still count as not worse.",
        0.02, ge=0.001, le=0.5,
    )
    min_samples: int = Doc(
        "Labelled predictions of the challenger each step needs before it is judged; also the spacing of the looks.",
        200, ge=10, le=10_000_000,
    )
    max_samples: int = Doc(
        "Labelled predictions of the challenger after which an undecided challenger is rolled back (Inconclusive).",
        5000, ge=10, le=100_000_000,
    )
    max_server_error_ratio: float = Doc("Largest share of the challenger's requests answered 5xx; more rolls back.", 0.01, ge=0, le=1)
    max_p99_ratio: float = Doc(
        "Largest p99 latency of the challenger's own requests relative to the champion's; slower rolls back.", 2.0, ge=1, le=100,
        alias="maxP99Ratio",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.minSamples) || !has(self.maxSamples) || self.minSamples <= self.maxSamples",
            message="minSamples must not exceed maxSamples",
            field=".minSamples",
            check=lambda a: a.min_samples <= a.max_samples,
        ),
    )


class RolloutSpec(ApiModel):
    """How a new version takes over: at once (replace), mirrored (shadow) or in traffic steps (canary)."""

    strategy: Literal["replace", "shadow", "canary"] = Doc(
        "replace: the new version takes all traffic at once. shadow: it gets a copy of every request and clients only "
        "see the serving version's answers. canary: it answers the steps' share of requests.",
        "replace",
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Doc(
        "Canary traffic weights in percent, strictly increasing; each held for stepDuration and analysis.minSamples.",
        [10, 50, 100],
        min_length=1, max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    step_duration: str = Doc("Least time each step (or the shadow phase) is held.", "1m", max_length=32, pattern=DURATION)
    analysis: Analysis = Doc("The statistics that promote or roll back.", default_factory=Analysis)
    approval: Literal["auto", "manual"] = Doc(
        "auto: promote when the analysis says so. manual: also wait until approvedVersion names the challenger.", "auto",
    )
    approved_version: str | None = Doc(
        "manual approval: the challenger version a person approves, set in Git (the operator never writes it).",
        None, max_length=128, pattern=VERSION_PATTERN,
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.steps) || self.steps.isSorted()",
            message="steps must be strictly increasing percentages",
            field=".steps",
            check=lambda r: all(a < b for a, b in zip(r.steps, r.steps[1:])) and all(1 <= w <= 100 for w in r.steps),
        ),
    )


class ModelDeploymentSpec(ApiModel):
    """The model to serve and how."""

    model: str = Doc("The model lineage (a TrainingJob's spec.model).", max_length=63, pattern=DNS_LABEL)
    version: str = Doc(
        "latest: the newest TrainingJob of the lineage that succeeded, passed its gate and is promotable; "
        "or an exact version to pin.",
        "latest",
        max_length=128,
        pattern=VERSION_PATTERN,
    )
    replicas: int | None = Doc("Number of serving pods (1 when neither this nor autoscaling is set).", None, ge=0, le=1000)
    autoscaling: Autoscaling | None = Doc("Scale on CPU instead of a fixed count.", None)
    resources: Resources | None = Doc("CPU and memory of each serving container.", None)
    server: Server = Doc("Batching, limits and the drift sensor.", default_factory=Server)
    feedback: Feedback = Doc("Ground-truth feedback.", default_factory=Feedback)
    rollout: RolloutSpec = Doc("How a new version takes over from the serving one.", default_factory=RolloutSpec)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!(has(self.replicas) && has(self.autoscaling))",
            message="set replicas or autoscaling, not both",
            field=".replicas",
            check=lambda s: s.replicas is None or s.autoscaling is None,
        ),
    )


class Rollout(ApiModel):
    version: str = Doc("Version rolled out.")
    time: str = Doc("When.", json_schema_extra={"format": "date-time"})
    reason: str = Doc("Why: Initial, NewVersion, Pinned, Promoted, CanaryPromoted, ShadowPromoted.", "")


class ArmEvidence(ApiModel):
    """What one side of a rollout did since the rollout started, from its servers' counters."""

    version: str = Doc("The version.")
    labelled: int = Doc("Predictions that received a label.", 0)
    errors: int = Doc("Labelled predictions that were wrong (classification).", 0)
    error_rate: float | None = Doc("errors / labelled.", None)
    requests: int = Doc("Predict requests it answered itself.", 0)
    server_errors: int = Doc("Of those, answered 5xx.", 0)
    p99_seconds: float | None = Doc("p99 latency of those requests (upper bound of its histogram bucket).", None)


class PodCounters(ApiModel):
    """One serving pod's counters as last scraped."""

    version: str = Doc("The version it serves.", "")
    task: str | None = Doc("classification or regression.", None)
    started: str | None = Doc("Its server process's start (a change means a restart).", None)
    labelled: int = Doc("Labelled predictions.", 0)
    errors: int = Doc("Wrong labelled predictions.", 0)
    requests: int = Doc("Predict requests it answered itself.", 0)
    server_errors: int = Doc("Of those, answered 5xx.", 0)
    latency: list[int] = Doc("Its request-latency histogram counts per bucket (the last one +Inf).", default_factory=list,
                             max_length=64)


class RolloutState(ApiModel):
    """The rollout in progress, or the last one, with its evidence and decision."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    strategy: str = Doc("shadow or canary.")
    champion: str = Doc("The version serving clients.")
    challenger: str = Doc("The version under test.")
    challenger_sha256: str | None = Doc("The challenger's artifact digest.", None, alias="challengerSha256")
    phase: str = Doc("Analysing, AwaitingApproval, Promoted, RolledBack or Superseded.")
    task: str | None = Doc("classification or regression, as the servers report it.", None)
    step: int = Doc("1-based canary step (1 in shadow).", 1)
    steps: int = Doc("Number of steps.", 1)
    weight: int = Doc("Percent of requests the challenger answers (0 in shadow: it gets copies).", 0)
    start_time: str | None = Doc("When the rollout started.", None, json_schema_extra={"format": "date-time"})
    step_start_time: str | None = Doc("When the current step started.", None, json_schema_extra={"format": "date-time"})
    step_start_labelled: int = Doc("The challenger's labelled predictions when the step started.", 0)
    looks: int = Doc("Statistical looks taken so far.", 0)
    not_worse: bool | None = Doc("The challenger was shown not worse (it stands for the later steps).", None)
    decision: str = Doc("The last decision: Hold, Advance, Promote, AwaitApproval or RollBack.", "Hold")
    reason: str = Doc("One-word reason of the decision.", "")
    message: str = Doc("The decision in words, with its evidence.", "", max_length=2000)
    p_worse: float | None = Doc("One-sided p-value of 'the challenger's error rate is higher'.", None)
    p_not_worse: float | None = Doc("One-sided p-value of 'the challenger's error rate is higher by the margin or more'.", None)
    champion_evidence: ArmEvidence | None = Doc("The champion's counters.", None)
    challenger_evidence: ArmEvidence | None = Doc("The challenger's counters.", None)
    pods: dict[str, PodCounters] | None = Doc(
        "Each scraped pod's counters at the last reconcile (what the evidence adds deltas to).", None,
        json_schema_extra={"maxProperties": 200},
    )
    latency: dict[str, list[int]] | None = Doc("Request-latency histogram counts of each side since the rollout started.", None)


class ModelDeploymentStatus(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    observed_generation: int | None = Doc("The .metadata.generation this status describes.", None)
    model_version: str | None = Doc("The version serving now.", None)
    url: str | None = Doc("Base URL inside the cluster (KServe V1 under /v1, Open Inference Protocol under /v2).", None)
    replicas: int | None = Doc("Pods of the current Deployment.", None)
    ready_replicas: int | None = Doc("Pods ready to serve.", None)
    history: list[Rollout] | None = Doc("The last rollouts, newest first.", None, max_length=20)
    rollout: RolloutState | None = Doc("The shadow or canary rollout in progress, or the last one.", None)
    rejected_versions: list[Annotated[str, Field(max_length=128)]] | None = Doc(
        "Versions a rollout rolled back, newest first: never tried again.", None, max_length=20,
    )
    conditions: list[Condition] | None = Doc(
        "Ready, Progressing, Reconciling, Stalled, LibrariesMatch.",
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ModelDeployment(ApiModel):
    """A ModelDeployment manifest."""

    model_config = ApiModel.model_config | {"alias_generator": None}

    apiVersion: Literal["mlops.dev/v1alpha1"]
    kind: Literal["ModelDeployment"]
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
