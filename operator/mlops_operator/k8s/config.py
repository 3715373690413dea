"""Operator settings from the environment (the Helm chart sets these)."""

from __future__ import annotations

import json
import os
from typing import Mapping

from ..controllers.settings import Settings


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``MLOPS_*`` variables; anything unset keeps its default."""
    env = os.environ if env is None else env
    base = Settings()
    volume = json.loads(env["MLOPS_STORE_VOLUME"]) if env.get("MLOPS_STORE_VOLUME") else base.store_volume
    feedback = base.feedback_volume
    if "MLOPS_FEEDBACK_VOLUME" in env:
        feedback = json.loads(env["MLOPS_FEEDBACK_VOLUME"]) or None
    modules = tuple(m.strip() for m in env.get("MLOPS_ALLOWED_MODULES", "").split(",") if m.strip()) or base.allowed_estimator_modules
    return Settings(
        image=env.get("MLOPS_IMAGE", base.image),
        image_pull_policy=env.get("MLOPS_IMAGE_PULL_POLICY", base.image_pull_policy),
        store_volume=volume,
        feedback_volume=feedback,
        store_uri=env.get("MLOPS_STORE_URI", "").strip(),
        feedback_uri=env.get("MLOPS_FEEDBACK_URI", "").strip(),
        store_secret=env.get("MLOPS_STORE_SECRET") or None,
        check_store_secret=env.get("MLOPS_STORE_CHECK_SECRET", "true").strip().lower() != "false",
        store_ca_config_map=env.get("MLOPS_STORE_CA_CONFIGMAP") or None,
        # The operator's own S3 client reads these too, so pods and operator reach the same endpoint.
        s3_endpoint=env.get("AWS_ENDPOINT_URL") or None,
        s3_region=env.get("AWS_REGION") or None,
        s3_addressing_style=env.get("MLOPS_S3_ADDRESSING_STYLE") or None,
        allowed_estimator_modules=modules,
        service_account=env.get("MLOPS_WORKLOAD_SERVICE_ACCOUNT") or None,
        cluster_domain=env.get("MLOPS_CLUSTER_DOMAIN", base.cluster_domain),
        server_grpc=env.get("MLOPS_SERVER_GRPC", "").strip().lower() in ("1", "true", "yes"),
        serving_scikit_learn=_version("scikit-learn"),
        dask_jobs=env.get("MLOPS_DASK_JOBS", "").strip().lower() in ("1", "true", "yes"),
        dask_image=env.get("MLOPS_DASK_IMAGE") or None,
    )


def _version(dist: str) -> str | None:
    """A package's version in this process's image, which is the image the operator starts its servers with."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
