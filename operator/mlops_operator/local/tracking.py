"""Moving MLflow's champion alias locally: with this process's own MLFLOW_TRACKING_* credentials.

Locally there are no Secrets: the training processes inherit this process's
environment, so the alias moves use the same credentials the runs were logged with.
"""

from __future__ import annotations

import os

from ..controllers.tracking import AliasMove, AliasMover
from ..runtime.tracking import credentials_from, move_alias


def local_alias_mover() -> AliasMover:
    async def move(namespace: str, m: AliasMove) -> tuple[str, str] | None:
        return await move_alias(m.tracking_uri, credentials_from(os.environ), m.registered_model, m.alias, m.registered_version)

    return move
