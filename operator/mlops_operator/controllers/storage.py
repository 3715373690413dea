"""Where pods find the model store and the feedback data: volumes, mounts, arguments and environment.

Pure: from :class:`Settings` to the pieces of a pod spec.  An ``s3://`` store
becomes environment only (endpoint, region, addressing style, a CA bundle
path, and credentials as ``secretKeyRef`` to a Secret by name — never the
values); a ``pvc://claim/path`` store mounts the claim with the path as
``subPath``; no URI keeps the configured volume source as it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime

from .cluster import Obj
from .conditions import get_condition, summarize
from .decision import Event
from .settings import Settings

CA_MOUNT = "/etc/mlops/store-ca"
CA_KEY = "ca.crt"
DATA_CLAIMS_PATH = "/mnt/pvc"
"""Where the claim of a ``pvc://<claim>/<path>`` data source is mounted, read-only: the trainer's default
``--pvc-root``, in the trainer's pod and in every Dask worker's (they read the partitions themselves)."""
MODEL_CACHE_PATH = "/var/lib/mlops/models"
"""Where a serving pod keeps its verified copy of an object-store version."""
SECRET_KEYS = (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_SESSION_TOKEN", True))
"""The Secret's keys the pods read, and whether each is optional."""


def is_s3(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("s3://")


def uses_object_storage(settings: Settings) -> bool:
    return is_s3(settings.store_uri) or is_s3(settings.feedback_uri)


@dataclass
class PodStorage:
    """What one pod needs for the store (and feedback): merged into the pod spec by the builders."""

    store_arg: str
    feedback_arg: str | None = None
    volumes: list[Obj] = field(default_factory=list)
    mounts: list[Obj] = field(default_factory=list)
    env: list[Obj] = field(default_factory=list)


def _pvc_volume(uri: str) -> tuple[Obj, str]:
    """``pvc://claim/path`` → the volume source and the sub-path."""
    claim, _, sub = uri[len("pvc://"):].partition("/")
    return {"persistentVolumeClaim": {"claimName": claim}}, sub.strip("/")


def _mount(storage: PodStorage, name: str, source: Obj, path: str, sub: str, read_only: bool) -> None:
    storage.volumes.append({"name": name, **copy.deepcopy(source)})
    mount: Obj = {"name": name, "mountPath": path}
    if sub:
        mount["subPath"] = sub
    if read_only:
        mount["readOnly"] = True
    storage.mounts.append(mount)


def s3_env(settings: Settings) -> list[Obj]:
    """Endpoint, region, addressing, CA bundle, and the Secret's keys by reference."""
    env: list[Obj] = []
    for name, value in (("AWS_ENDPOINT_URL", settings.s3_endpoint), ("AWS_REGION", settings.s3_region),
                        ("MLOPS_S3_ADDRESSING_STYLE", settings.s3_addressing_style)):
        if value:
            env.append({"name": name, "value": value})
    if settings.store_ca_config_map:
        env.append({"name": "AWS_CA_BUNDLE", "value": f"{CA_MOUNT}/{CA_KEY}"})
    if settings.store_secret:
        for key, optional in SECRET_KEYS:
            ref: Obj = {"name": settings.store_secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def pod_storage(settings: Settings, *, store_read_only: bool, feedback: bool, feedback_read_only: bool,
                data_source: str | None = None) -> PodStorage:
    """The store (read-only for serving), when ``feedback`` the feedback location, and the data source (``s3://``
    settings, or a ``pvc://`` claim read-only) of one pod."""
    if is_s3(settings.store_uri):
        storage = PodStorage(store_arg=settings.store_uri)
    elif is_pvc(settings.store_uri):
        storage = PodStorage(store_arg=settings.store_path)
        source, sub = _pvc_volume(settings.store_uri)
        _mount(storage, "store", source, settings.store_path, sub, store_read_only)
    else:
        storage = PodStorage(store_arg=settings.store_path)
        _mount(storage, "store", settings.store_volume, settings.store_path, "", store_read_only)
    if feedback:
        if is_s3(settings.feedback_uri):
            storage.feedback_arg = settings.feedback_uri
        elif is_pvc(settings.feedback_uri):
            source, sub = _pvc_volume(settings.feedback_uri)
            _mount(storage, "feedback", source, settings.feedback_path, sub, feedback_read_only)
            storage.feedback_arg = settings.feedback_path
        elif settings.feedback_volume:
            _mount(storage, "feedback", settings.feedback_volume, settings.feedback_path, "", feedback_read_only)
            storage.feedback_arg = settings.feedback_path
    if is_s3(storage.store_arg) or is_s3(storage.feedback_arg) or is_s3(data_source):
        access = s3_access(settings)
        storage.env, storage.volumes, storage.mounts = access.env, [*storage.volumes, *access.volumes], [*storage.mounts, *access.mounts]
    if is_pvc(data_source):
        claim = data_claim(str(data_source))
        storage.volumes, storage.mounts = [*storage.volumes, *claim.volumes], [*storage.mounts, *claim.mounts]
    return storage


def is_pvc(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("pvc://")


def data_claim(source: str) -> PodStorage:
    """The claim of a ``pvc://<claim>/<path>`` data source, read-only at ``DATA_CLAIMS_PATH/<claim>``."""
    claim = source[len("pvc://"):].partition("/")[0]
    return PodStorage(store_arg="",
                      volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
                      mounts=[{"name": "data", "mountPath": f"{DATA_CLAIMS_PATH}/{claim}", "readOnly": True}])


def data_access(settings: Settings, source: str | None) -> PodStorage:
    """What a pod needs to read the data source and nothing else: the S3 settings of an ``s3://`` source, the
    claim of a ``pvc://`` one, nothing for the others (a Dask worker's share of :func:`pod_storage`)."""
    if is_s3(source):
        return s3_access(settings)
    if is_pvc(source):
        return data_claim(str(source))
    return PodStorage(store_arg="")


def s3_access(settings: Settings) -> PodStorage:
    """What a pod needs to reach the object store and nothing else: the settings, the Secret's keys, the CA bundle."""
    access = PodStorage(store_arg="", env=s3_env(settings))
    if settings.store_ca_config_map:
        access.volumes.append({"name": "store-ca", "configMap": {
            "name": settings.store_ca_config_map, "items": [{"key": CA_KEY, "path": CA_KEY}]}})
        access.mounts.append({"name": "store-ca", "mountPath": CA_MOUNT, "readOnly": True})
    return access


STORE_RECHECK_SECONDS = 30.0
"""How soon to ask the store again after it refused: a fixed Secret has no watch event."""


def blocked_by_store(obj: Obj, reason: str, message: str, now: datetime, *, phase: str | None = None) -> tuple[Obj, list[Event]]:
    """The status (and, when it is news, the event) of an object whose pod would not reach the store.

    Not Stalled: the operator asks again every :data:`STORE_RECHECK_SECONDS`,
    so fixing the Secret or the bucket policy is enough; no pod is started
    meanwhile, so there is nothing to crash-loop.
    """
    generation = obj["metadata"].get("generation", 1)
    old: Obj = dict(obj.get("status") or {})
    status: Obj = dict(old)
    status["observedGeneration"] = generation
    if phase:
        status["phase"] = phase
    status["conditions"] = summarize(old.get("conditions"), ready=False, reason=reason, message=message,
                                     reconciling=True, stalled=False, now=now, generation=generation)
    before = get_condition(old.get("conditions"), "Ready") or {}
    news = (before.get("reason"), before.get("message")) != (reason, message)
    return status, [Event("Warning", reason, message)] if news else []
