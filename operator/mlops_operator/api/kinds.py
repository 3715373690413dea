"""The three kinds: their names, models and how ``kubectl get`` shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import API_VERSION, GROUP, VERSION
from .base import ApiModel
from .driftpolicy import DriftPolicy, DriftPolicySpec, DriftPolicyStatus
from .modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from .trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus


def _condition(type_: str, field_: str = "status") -> str:
    return f'.status.conditions[?(@.type=="{type_}")].{field_}'


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short: str
    model: type[ApiModel]
    spec: type[ApiModel]
    status: type[ApiModel]
    columns: tuple[dict[str, Any], ...]
    max_name_length: int = 63
    name_pattern: str | None = None
    """A stricter name rule than Kubernetes' own, when a child's name needs one."""
    categories: tuple[str, ...] = field(default=("mlops",))
    selectable: tuple[str, ...] = ()
    """Fields a LIST may filter on server-side (CRD ``selectableFields``), e.g. ``.spec.model``."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return API_VERSION

    @property
    def version(self) -> str:
        return VERSION


_READY = {"name": "Ready", "type": "string", "jsonPath": _condition("Ready")}
_REASON = {"name": "Reason", "type": "string", "jsonPath": _condition("Ready", "reason"), "priority": 1}
_MESSAGE = {"name": "Message", "type": "string", "jsonPath": _condition("Ready", "message"), "priority": 1}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

TRAINING_JOB = Kind(
    kind="TrainingJob",
    plural="trainingjobs",
    short="tj",
    model=TrainingJob,
    spec=TrainingJobSpec,
    status=TrainingJobStatus,
    # The Job is named <name>-g<generation>, and a Job's name must fit a 63-character label.
    max_name_length=52,
    # A ModelDeployment reads only its own lineage: `kubectl get tj --field-selector spec.model=iris` too.
    selectable=(".spec.model",),
    columns=(
        _READY,
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion"},
        {"name": "Metric", "type": "string", "jsonPath": ".status.gate.metric"},
        {"name": "Score", "type": "number", "jsonPath": ".status.gate.value"},
        {"name": "Gate", "type": "string", "jsonPath": ".status.gate.result"},
        _AGE,
        {"name": "Parent", "type": "string", "jsonPath": ".status.lineage.parent", "priority": 1},
        {"name": "Trigger", "type": "string", "jsonPath": ".status.lineage.trigger", "priority": 1},
        {"name": "Data", "type": "string", "jsonPath": ".status.lineage.dataDigest", "priority": 1},
        {"name": "Params", "type": "string", "jsonPath": ".status.tuning.bestParams", "priority": 1},
        {"name": "CV-Score", "type": "number", "jsonPath": ".status.tuning.bestScore", "priority": 1},
        _REASON,
        _MESSAGE,
    ),
)

MODEL_DEPLOYMENT = Kind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short="md",
    model=ModelDeployment,
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    # The Service takes the object's name, and a Service name must be a DNS-1035 label.
    name_pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    columns=(
        _READY,
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        _AGE,
        {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase", "priority": 1},
        {"name": "Challenger", "type": "string", "jsonPath": ".status.rollout.challenger", "priority": 1},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.rollout.weight", "priority": 1},
        _REASON,
        _MESSAGE,
    ),
)

DRIFT_POLICY = Kind(
    kind="DriftPolicy",
    plural="driftpolicies",
    short="dp",
    model=DriftPolicy,
    spec=DriftPolicySpec,
    status=DriftPolicyStatus,
    columns=(
        _READY,
        {"name": "Deployment", "type": "string", "jsonPath": ".spec.deployment"},
        {"name": "Drifting", "type": "string", "jsonPath": _condition("Drifting")},
        {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict"},
        {"name": "Score", "type": "number", "jsonPath": ".status.score"},
        {"name": "Samples", "type": "integer", "jsonPath": ".status.samples"},
        {"name": "Retrains", "type": "integer", "jsonPath": ".status.retrainCount"},
        {"name": "Last-Check", "type": "date", "jsonPath": ".status.lastCheck", "priority": 1},
        {"name": "Next-Retrain", "type": "string", "jsonPath": ".status.schedule.nextScheduleTime", "priority": 1},
        _AGE,
        _REASON,
        _MESSAGE,
    ),
)

KINDS: tuple[Kind, ...] = (TRAINING_JOB, MODEL_DEPLOYMENT, DRIFT_POLICY)
BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
