"""The operator's side of the object store: the access check before pods start, and reference profiles.

The check reads the namespace's Secret (by the name in the settings; RBAC
grants ``get`` on that one name only) and lists the store with its keys, so
a wrong key shows on the TrainingJob or ModelDeployment instead of in a
failing pod.  The values never leave this process: not in status, events or
logs.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from ..controllers.cluster import Obj, Resource
from ..controllers.settings import Settings
from ..controllers.storage import is_s3
from ..sensors import Unreadable
from ..store import ArtifactError, open_store
from ..store.access import StoreAccess
from .client import ApiError

SECRETS = Resource("v1", "Secret", "secrets")


def store_access(cluster: Any, settings: Settings) -> StoreAccess | None:
    """The access check for the settings' ``s3://`` locations with the pods' Secret; None when there is nothing
    to check the way the pods will see it (no object storage, no Secret: the pods' identity is not the operator's)."""
    uris = [u for u in (settings.store_uri, settings.feedback_uri) if is_s3(u)]
    if not uris or not settings.store_secret or not settings.check_store_secret:
        return None

    async def read_secret(namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret: Obj | None = await cluster.get(SECRETS, namespace, name)
        except ApiError as exc:
            if exc.status == 403:  # not granted (checkSecret off in the chart): the pods will tell
                raise PermissionError(f"no permission to read Secret {namespace}/{name}") from None
            raise
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}

    return StoreAccess(uris, settings.store_secret, read_secret)


def reference_loader(settings: Settings):  # type: ignore[no-untyped-def]
    """Read a version's reference profile and metadata from an ``s3://`` store (None: ask the serving pods)."""
    if not is_s3(settings.store_uri):
        return None
    store = open_store(settings.store_uri)

    def read(namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        return store.read_reference(namespace, model, version), store.read_metadata(namespace, model, version)

    async def load(namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        try:
            return await asyncio.to_thread(read, namespace, model, version)
        except ArtifactError as exc:  # the message names the location and the cause, never a key
            raise Unreadable(str(exc)) from None

    return load
