"""Operator-wide state the handlers share: the cluster client, settings, sensors, the work queue.

Set once at start-up (``k8s.main``) or by tests; handlers read it through
:func:`current`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..controllers.reconcile.driftpolicy import Sensors
from ..controllers.settings import Settings
from ..sensors import HttpSensors
from .client import KubeCluster
from .queue import WorkQueue
from .reconcilers import reconcilers
from .store_access import reference_loader, store_access


@dataclass
class Context:
    cluster: KubeCluster
    settings: Settings
    sensors: Sensors | None = None
    """Where DriftPolicy checks read the serving pods' counters; HTTP scraping unless a test brings its own."""
    resync_seconds: float = 300.0
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty means all (cluster-wide)."""
    workers: int = 4
    """Reconciles of each kind running at once, whatever the number of objects."""
    queue: WorkQueue = field(init=False)

    def __post_init__(self) -> None:
        if self.sensors is None:  # references from an s3:// store directly, else from the serving pods
            self.sensors = HttpSensors(default_port=self.settings.server_port, reference_loader=reference_loader(self.settings))
        check = store_access(self.cluster, self.settings)
        self.queue = WorkQueue(reconcilers(self.cluster, self.settings, self.sensors, check), workers=self.workers)


_current: Context | None = None


def install(ctx: Context) -> Context:
    global _current
    _current = ctx
    return ctx


def current() -> Context:
    if _current is None:
        raise RuntimeError("the operator context is not installed; start through `mlops-operator run`")
    return _current
