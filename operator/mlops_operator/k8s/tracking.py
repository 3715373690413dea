"""Moving MLflow's champion alias from the operator: with the credentials of the TrainingJob's own Secret.

The Secret is the one ``spec.tracking.mlflow.credentialsSecret`` names, in the
ModelDeployment's namespace, read with ``get`` by name (RBAC must grant it;
the chart grants no Secret but the store's, so without a Role for it the
ModelDeployment's Tracked condition says so).  Only the MLFLOW_TRACKING_* keys
are used; they go into one request's headers and nowhere else.
"""

from __future__ import annotations

import base64
from typing import Any

from ..controllers.tracking import AliasMove, AliasMover
from ..runtime.tracking import credentials_from, move_alias
from .client import ApiError
from .store_access import SECRETS


def alias_mover(cluster: Any) -> AliasMover:
    async def move(namespace: str, m: AliasMove) -> tuple[str, str] | None:
        credentials: dict[str, str] = {}
        if m.credentials_secret:
            where = f"Secret {namespace}/{m.credentials_secret}"
            try:
                secret = await cluster.get(SECRETS, namespace, m.credentials_secret)
            except ApiError as exc:
                if exc.status == 403:
                    return "SecretForbidden", f"the operator may not read {where}; grant it get on that Secret by name"
                raise
            if secret is None:
                return "SecretNotFound", f"{where} does not exist"
            data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
            credentials = credentials_from(data)
        return await move_alias(m.tracking_uri, credentials, m.registered_model, m.alias, m.registered_version)

    return move
