"""ModelDeployment: which version of a model serves, on how many replicas, at which endpoint."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import DNS_LABEL, ApiModel, Condition, Doc, ObjectMeta, Resources, Rule

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
    reason: str = Doc("Why: Initial, NewVersion, Pinned, Promoted.", "")


class ModelDeploymentStatus(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    observed_generation: int | None = Doc("The .metadata.generation this status describes.", None)
    model_version: str | None = Doc("The version serving now.", None)
    url: str | None = Doc("Base URL inside the cluster (KServe V1 under /v1, Open Inference Protocol under /v2).", None)
    replicas: int | None = Doc("Pods of the current Deployment.", None)
    ready_replicas: int | None = Doc("Pods ready to serve.", None)
    history: list[Rollout] | None = Doc("The last rollouts, newest first.", None, max_length=20)
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
