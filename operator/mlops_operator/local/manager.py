"""The local controller manager: the operator's reconcile loops over a MemoryCluster.

One task, one loop: drain the change feed, reconcile what the changes touch,
let the executor catch up, and give every DriftPolicy its chance to check.
Everything is serial, so no two reconciles of anything ever race.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, Iterable

from ..controllers.cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, RESOURCES, TRAINING_JOBS, Obj
from ..controllers.reconcile import retry_delay, utcnow
from ..controllers.reconcile.driftpolicy import reconcile_drift_policy
from ..controllers.reconcile.modeldeployment import reconcile_model_deployment
from ..controllers.reconcile.trainingjob import reconcile_training_job
from ..controllers.reconcile.watches import affected
from ..controllers.rollout import ACTIVE as ACTIVE_ROLLOUT
from ..controllers.settings import Settings
from ..store.access import StoreAccess
from .cluster import Change, MemoryCluster
from .executor import Executor, Paths
from .processes import ProcessGroup
from .sensors import local_sensors
from .tracking import local_alias_mover

OBJECTS_FILE = "objects.json"

log = logging.getLogger("mlops_operator.local")
Key = tuple[str, str, str]
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0


class LocalManager:
    """Owns the in-memory cluster, the executor and the processes; ``run`` until told to stop."""

    def __init__(self, root: Path, settings: Settings | None = None, clock: Callable[[], datetime] = utcnow, tick: float = 1.0,
                 store_dir: Path | None = None):
        self.root = root
        self.settings = settings or Settings()
        self.clock = clock
        self.tick = tick
        self.cluster = MemoryCluster(clock)
        self.paths = Paths(root, store_dir)
        self.processes = ProcessGroup(root / "logs")
        self.executor = Executor(self.cluster, self.settings, self.paths, self.processes)
        self._feed = self.cluster.subscribe()
        self._dirty: set[Key] = set()
        self.reconcilers: dict[str, Callable[[str, str], Awaitable[object]]] = self._reconcilers()
        self.errors: dict[Key, str] = {}
        self._failures: dict[Key, int] = {}
        self._retry_at: dict[Key, float] = {}
        self._requeue_at: dict[Key, float] = {}
        """Reconciles that asked to look again later (``Result.requeue_after``), as the operator's work queue does."""

    # -- wiring: the same reconcile functions the kopf operator calls ---------
    def _reconcilers(self) -> dict[str, Callable[[str, str], Awaitable[object]]]:
        sensors = local_sensors(self.paths.store, self.settings.store_uri)
        uris = [self.settings.store_uri, self.settings.feedback_uri]
        check = StoreAccess(uris) if any(u.startswith("s3://") for u in uris) else None  # this process's credentials
        mover = local_alias_mover()
        return {
            "TrainingJob": lambda ns, n: reconcile_training_job(self.cluster, ns, n, self.settings, self.clock, check),
            "ModelDeployment": lambda ns, n: reconcile_model_deployment(self.cluster, ns, n, self.settings, self.clock, check,
                                                                       mover, probe=sensors),
            "DriftPolicy": lambda ns, n: reconcile_drift_policy(self.cluster, ns, n, self.settings, self.clock, sensors),
        }

    # -- input -----------------------------------------------------------------
    def apply(self, objs: Iterable[Obj], namespace: str = "default") -> None:
        """Like ``kubectl apply``: create or update, never touching status."""
        for obj in objs:
            obj = dict(obj)
            obj["metadata"] = {**obj.get("metadata", {}), "namespace": obj.get("metadata", {}).get("namespace") or namespace}
            obj.pop("status", None)
            self.cluster.apply_now(obj)

    # -- the loop --------------------------------------------------------------
    def _touch(self, change: Change) -> None:
        """Map a change to the objects whose reconcile it may affect (the table kopf's watches read too)."""
        self._dirty |= affected(change.kind, change.obj, deployments_of_model=self._deployments_of_model,
                                policies_of_deployment=self._policies_of_deployment)

    def _deployments_of_model(self, namespace: str, model: str) -> list[str]:
        return [md["metadata"]["name"] for md in self.cluster.list_now(MODEL_DEPLOYMENTS, namespace)
                if md["spec"].get("model") == model]

    def _policies_of_deployment(self, namespace: str, deployment: str) -> list[str]:
        return [dp["metadata"]["name"] for dp in self.cluster.list_now(DRIFT_POLICIES, namespace)
                if dp["spec"].get("deployment") == deployment]

    async def step(self) -> None:
        """One round: reconcile everything dirty, then let the executor act."""
        while not self._feed.empty():
            self._touch(self._feed.get_nowait())
        now = asyncio.get_running_loop().time()
        for key, at in list(self._requeue_at.items()):
            if at <= now:
                self._dirty.add(key)
                del self._requeue_at[key]
        due = {k for k in self._dirty if self._retry_at.get(k, 0.0) <= now}
        dirty, self._dirty = sorted(due), self._dirty - due
        for key in dirty:
            kind, ns, name = key
            fn = self.reconcilers.get(kind)
            if fn is None or self.cluster.get_now(RESOURCES[kind], ns, name) is None:
                continue
            try:
                result = await fn(ns, name)
                after = getattr(result, "requeue_after", None)
                if after is not None:
                    self._requeue_at[key] = now + after
                self.errors.pop(key, None)
                self._failures.pop(key, None)
                self._retry_at.pop(key, None)
            except Exception as exc:  # noqa: BLE001 - report, retry with back-off
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                self._retry_at[key] = now + retry_delay(failures, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)
                if self.errors.get(key) != str(exc):
                    log.warning("reconcile %s %s/%s failed: %s", kind, ns, name, exc)
                self.errors[key] = str(exc)
                self._dirty.add(key)
        await self.executor.sync()

    async def run(self, stop: asyncio.Event, on_tick: Callable[[], None] | None = None) -> None:
        for dp in self.cluster.list_now(DRIFT_POLICIES):
            self._dirty.add(("DriftPolicy", dp["metadata"]["namespace"], dp["metadata"]["name"]))
        try:
            while not stop.is_set():
                await self.step()
                if on_tick:
                    on_tick()
                if not await self._wait_for_change(stop, self.tick):
                    # Periodic: DriftPolicies decide themselves whether a check is due; rollouts analyse their evidence.
                    for dp in self.cluster.list_now(DRIFT_POLICIES):
                        self._dirty.add(("DriftPolicy", dp["metadata"]["namespace"], dp["metadata"]["name"]))
                    for md in self.cluster.list_now(MODEL_DEPLOYMENTS):
                        if ((md.get("status") or {}).get("rollout") or {}).get("phase") in ACTIVE_ROLLOUT:
                            self._dirty.add(("ModelDeployment", md["metadata"]["namespace"], md["metadata"]["name"]))
        finally:
            await self.shutdown()

    async def _wait_for_change(self, stop: asyncio.Event, timeout: float) -> bool:
        """Wait for a change, the stop signal or the timeout; False on timeout.

        The getter is always cancelled when it loses, so no orphaned task can
        swallow a later change.
        """
        getter = asyncio.ensure_future(self._feed.get())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
            stopper.cancel()
        if getter in done and not getter.cancelled():
            self._touch(getter.result())
            return True
        return stopper in done

    async def shutdown(self) -> None:
        await self.executor.stop()
        self.save_objects()

    def save_objects(self) -> Path | None:
        """The mlops.dev objects as they stand, to ``<root>/objects.json``: what ``mlops-operator runs`` reads after a
        local run (which version served, which was rolled back), as it reads them from the API server in a cluster."""
        path = self.root / OBJECTS_FILE
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"items": self.objects()}, default=str))
            tmp.replace(path)
        except OSError as exc:
            log.warning("could not save the objects to %s: %s", path, exc)
            return None
        return path

    # -- views -----------------------------------------------------------------
    def objects(self) -> list[Obj]:
        return [o for res in (TRAINING_JOBS, MODEL_DEPLOYMENTS, DRIFT_POLICIES) for o in self.cluster.list_now(res)]
