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
    store_uri: str = ""
    """The store as a URI: ``s3://bucket/prefix`` puts models on object storage (no volume is mounted);
    ``pvc://claim/path`` mounts that claim (path as subPath); empty: ``store_volume`` as it is."""
    feedback_uri: str = ""
    """Where serving pods write feedback: ``s3://bucket/prefix`` (one object per flush), ``pvc://claim/path``;
    empty: ``feedback_volume``."""
    store_secret: str | None = None
    """Secret (in each workload namespace) with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optional
    AWS_SESSION_TOKEN) that pods read through ``secretKeyRef``; None: the pod's own identity (web identity, IRSA)."""
    check_store_secret: bool = True
    """Read ``store_secret`` in a namespace (get, by name) to check the key before starting its pods."""
    store_ca_config_map: str | None = None
    """ConfigMap (in each workload namespace) whose ``ca.crt`` the S3 client trusts, mounted read-only."""
    s3_endpoint: str | None = None
    """Custom S3 endpoint URL (MinIO, Ceph RGW, SeaweedFS); None: AWS."""
    s3_region: str | None = None
    s3_addressing_style: str | None = None
    """``path``, ``virtual`` or ``auto``; None: path with a custom endpoint, else auto."""
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
    dask_jobs: bool = False
    """Run TrainingJobs with ``spec.distributed`` as the Dask operator's DaskJobs (its CRDs and controller
    must be installed); False: they run as one pod on a local Dask cluster of processes, like the local mode."""
    dask_image: str | None = None
    """Image of the DaskJob's runner, scheduler and workers (the project's image with the ``dask`` extra);
    None: ``image``."""
