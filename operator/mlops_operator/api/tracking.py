"""``TrainingJob.spec.tracking``: experiment trackers that see each run besides the operator's own store.

The store stays the source of truth; a tracker that is down or refuses a run
never fails it (the run's ``Tracked`` condition says what was not logged).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from .base import ApiModel, Doc

TRACKING_URI = r"^https?://[^/?#@\s]+(/[^?#@\s]*)?$"
SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def _check_tracking_uri(value: str) -> str:
    if not re.fullmatch(TRACKING_URI, value):
        raise PydanticCustomError(
            "tracking_uri",
            "must be an http:// or https:// URL of the MLflow tracking server, with no user:password@, query or fragment "
            "(credentials come from credentialsSecret) (got {value!r})",
            {"value": value},
        )
    return value


def _check_secret_name(value: str) -> str:
    if not re.fullmatch(SECRET_NAME, value):
        raise PydanticCustomError(
            "secret_name",
            "must name a Secret of the TrainingJob's namespace (lower-case letters, digits, '-' and '.') (got {value!r})",
            {"value": value},
        )
    return value


class MlflowTracking(ApiModel):
    """An MLflow tracking server that sees each run and registers each passing version."""

    tracking_uri: Annotated[str, AfterValidator(_check_tracking_uri)] = Doc(
        "http(s):// URL of the MLflow tracking server. A run it does not take still succeeds; the Tracked condition says why.",
        max_length=2048,
        json_schema_extra={"pattern": TRACKING_URI},
    )
    experiment: str = Doc("Experiment the runs go to; created when missing.", "mlops-operator", min_length=1, max_length=500)
    credentials_secret: Annotated[str, AfterValidator(_check_secret_name)] | None = Doc(
        "Secret of this namespace whose keys MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
        "MLFLOW_TRACKING_TOKEN, reach the trainer as environment variables; left out: no credentials.",
        None,
        max_length=253,
        json_schema_extra={"pattern": SECRET_NAME},
    )
    register_model: bool = Doc(
        "Register each version that passes its gate under spec.model with the alias challenger; the operator "
        "moves the alias champion to the version a ModelDeployment serves.",
        True,
    )


class Tracking(ApiModel):
    """Experiment trackers that see each run besides the operator's own store (the source of truth)."""

    mlflow: MlflowTracking | None = Doc("Log runs to MLflow and keep its model registry in step.", None)


class MlflowRun(ApiModel):
    experiment_id: str | None = Doc("MLflow experiment of the run.", None)
    run_id: str | None = Doc("MLflow run that logged this version.", None)
    registered_model: str | None = Doc("Registered model the version went to.", None)
    registered_version: str | None = Doc("Its version number in MLflow's model registry.", None)


class TrackingStatus(ApiModel):
    mlflow: MlflowRun | None = Doc("Where the run is in MLflow (absent when it was not logged: see the Tracked condition).", None)
