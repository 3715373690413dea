"""Start-up (kopf's settings, the work queue), the periodic resync, and clean-up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ...controllers.cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, TRAINING_JOBS
from ..context import current

log = logging.getLogger("mlops_operator")

RESYNCED = (TRAINING_JOBS, MODEL_DEPLOYMENTS, DRIFT_POLICIES)
"""Every object of these is queued once per resync: the safety net under watch events."""

_task: asyncio.Task | None = None


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: the operator has no create/update/resume handlers, nothing reads one.

    kopf builds an object's diff-base (a deep copy of the whole object) on
    every watch event whatever the handlers; with thousands of objects that
    copying was a tenth of the operator's event loop. Nothing is stored on
    the objects either.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    # Our own prefix for anything kopf writes; no finalizers: nothing external needs clean-up.
    settings.persistence.finalizer = "mlops.dev/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mlops.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    # We post our own events on transitions; kopf's per-handler chatter stays in the log.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf's indices of this run, by handler id (kopf passes every index to every handler by its name).
    current().cluster.cache.attach({k: v for k, v in kwargs.items() if isinstance(v, kopf.Index)})
    current().queue.start()
    global _task
    _task = asyncio.get_running_loop().create_task(_resync_forever())


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the API server with the very credentials our client loaded.

    (kopf's own fallback reads $KUBECONFIG at import time of the kubernetes
    package, so an explicit ``--kubeconfig`` would be missed.)
    """
    cfg = current().cluster.api.configuration  # type: ignore[attr-defined]
    # The kubernetes client keeps a token (kubeconfig or the pod's service account) under
    # "BearerToken", already prefixed; reading it runs the client's refresh hook, so a
    # re-login after a 401 picks up a rotated service-account token.
    header = cfg.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
    scheme, _, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme=scheme or None,
        token=token or None,
    )


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if _task:
        _task.cancel()
    await current().queue.stop()
    current().cluster.cache.detach()


async def resync_once() -> None:
    """Queue every object once, behind whatever events queue meanwhile (and de-duplicated with them)."""
    ctx = current()
    for res in RESYNCED:
        for ns in ctx.namespaces or (None,):
            for namespace, name in await ctx.cluster.names(res, ns):  # type: ignore[arg-type]
                ctx.queue.add((res.kind, namespace, name), background=True)


async def _resync_forever() -> None:
    ctx = current()
    while True:
        await asyncio.sleep(ctx.resync_seconds)
        try:
            await resync_once()
        except Exception as exc:  # noqa: BLE001 - keep the loop alive; the next round retries
            log.warning("resync failed: %s", exc)
