"""Operator-wide settings: what the cluster admin decides, not the user's manifests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_STORE_VOLUME: dict[str, Any] = {"persistentVolumeClaim": {"claimName": "mlops-model-store"}}
DEFAULT_FEEDBACK_VOLUME: dict[str, Any] = {"persistentVolumeClaim": {"claimName": "mlops-feedback"}}


@dataclass(frozen=True)
class Settings:
    """Everything the builders need besides the object itself."""

    image: str = "ghcr.io/mlops-operator/mlops-operator:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    store_path: str = "/var/lib/mlops/store"
    """Where the model store is mounted in training and serving pods."""
    store_volume: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_STORE_VOLUME))
    """The volume source of the model store (a PVC by default; read-write for training, read-only for serving)."""
    feedback_path: str = "/var/lib/mlops/feedback"
    feedback_volume: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_FEEDBACK_VOLUME))
    """Where serving pods append labelled feedback rows; None disables the file sink."""
    allowed_estimator_modules: tuple[str, ...] = ("sklearn.",)
    service_account: str | None = None
    """Service account of training and serving pods; None uses the namespace default."""
    server_port: int = 8080
    server_grpc: bool = False
    """Whether model servers also serve gRPC when a ModelDeployment leaves ``spec.server.grpc`` unset."""
    history_limit: int = 10
    serving_scikit_learn: str | None = None
    """scikit-learn in the serving image (the operator's own image plays every role); None: not known."""
    cluster_domain: str = "cluster.local"
