"""An in-memory API server: objects, generations, status, owner-reference cascades, a change feed."""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from pydantic import ValidationError

from ..api.kinds import BY_KIND
from ..controllers.cluster import RESOURCES, Conflict, Obj, Resource, matches_fields, resource_of
from ..controllers.conditions import timestamp
from ..controllers.reconcile import utcnow

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Change:
    """What the change feed carries: enough to find the object again."""

    type: str  # ADDED, MODIFIED, DELETED
    kind: str
    namespace: str
    name: str
    obj: Obj


@dataclass(frozen=True)
class RecordedEvent:
    time: datetime
    kind: str
    name: str
    namespace: str
    type: str
    reason: str
    message: str


class MemoryCluster:
    """Enough of Kubernetes for the controllers: the semantics they rely on, nothing more.

    - ``create`` of a taken name returns the existing object (409 is success);
    - ``apply`` replaces the fields it is given and bumps ``generation`` when the spec changes;
    - ``patch_status`` replaces status without touching spec or generation, conditionally
      when given the resourceVersion it was decided from (:class:`Conflict` otherwise);
    - deleting an object deletes what it owns, transitively;
    - mlops.dev objects get their schema defaults, as the API server fills
      them from the CRD (both come from the same models).
    """

    def __init__(self, clock: Callable[[], datetime] = utcnow):
        self.clock = clock
        self._objects: dict[Key, Obj] = {}
        self._rv = itertools.count(1)
        self._subscribers: list[asyncio.Queue[Change]] = []
        self.events: list[RecordedEvent] = []
        self.event_listeners: list[Callable[[RecordedEvent], None]] = []

    # -- the change feed -------------------------------------------------
    def subscribe(self) -> asyncio.Queue[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def _notify(self, type_: str, obj: Obj) -> None:
        meta = obj["metadata"]
        change = Change(type_, obj["kind"], meta.get("namespace", ""), meta["name"], copy.deepcopy(obj))
        for q in self._subscribers:
            q.put_nowait(change)

    # -- the Cluster protocol ---------------------------------------------
    @staticmethod
    def _key(res: Resource, namespace: str | None, name: str) -> Key:
        return (res.kind, namespace or "default", name)

    async def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        return self.get_now(res, namespace, name)

    def get_now(self, res: Resource, namespace: str, name: str) -> Obj | None:
        found = self._objects.get(self._key(res, namespace, name))
        return copy.deepcopy(found) if found else None

    async def list(self, res: Resource, namespace: str | None, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[Obj]:
        return [o for o in self.list_now(res, namespace, labels) if matches_fields(o, fields)]

    def list_now(self, res: Resource, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]:
        out = []
        for (kind, ns, _), obj in sorted(self._objects.items()):
            if kind != res.kind or (namespace and ns != namespace):
                continue
            have = obj["metadata"].get("labels") or {}
            if all(have.get(k) == v for k, v in (labels or {}).items()):
                out.append(copy.deepcopy(obj))
        return out

    async def create(self, obj: Obj) -> Obj:
        return self.create_now(obj)

    @staticmethod
    def _defaulted(obj: Obj) -> Obj:
        kind = BY_KIND.get(obj.get("kind", ""))
        if kind is None or "spec" not in obj:
            return obj
        try:
            spec = kind.spec.model_validate(obj["spec"]).to_dict()
        except ValidationError:
            return obj  # the API server would refuse it; callers validate first and report
        return {**obj, "spec": spec}

    def create_now(self, obj: Obj) -> Obj:
        obj = self._defaulted(obj)
        res = resource_of(obj)
        key = self._key(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self._objects:
            return copy.deepcopy(self._objects[key])
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        meta.setdefault("namespace", "default")
        meta["uid"] = str(uuid.uuid4())
        meta["generation"] = 1
        meta["creationTimestamp"] = timestamp(self.clock())
        meta["resourceVersion"] = str(next(self._rv))
        self._objects[key] = new
        self._notify("ADDED", new)
        return copy.deepcopy(new)

    async def apply(self, obj: Obj) -> Obj:
        return self.apply_now(obj)

    def apply_now(self, obj: Obj) -> Obj:
        obj = self._defaulted(obj)
        res = resource_of(obj)
        key = self._key(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        current = self._objects.get(key)
        if current is None:
            return self.create_now(obj)
        updated = copy.deepcopy(current)
        for field, value in obj.items():
            if field in ("metadata", "status"):
                continue
            updated[field] = copy.deepcopy(value)
        for field in ("labels", "annotations", "ownerReferences"):
            if field in obj["metadata"]:
                updated["metadata"][field] = copy.deepcopy(obj["metadata"][field])
        if updated == current:
            return copy.deepcopy(current)
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        updated["metadata"]["resourceVersion"] = str(next(self._rv))
        self._objects[key] = updated
        self._notify("MODIFIED", updated)
        return copy.deepcopy(updated)

    async def patch_status(self, res: Resource, namespace: str, name: str, status: Obj,
                           resource_version: str | None = None) -> None:
        self.patch_status_now(res, namespace, name, status, resource_version)

    def patch_status_now(self, res: Resource, namespace: str, name: str, status: Obj,
                         resource_version: str | None = None) -> None:
        current = self._objects.get(self._key(res, namespace, name))
        if current is None:
            return
        if resource_version and current["metadata"].get("resourceVersion") != resource_version:
            raise Conflict(f"{res.kind} {namespace}/{name} changed since it was read")
        if current.get("status") == status:
            return
        current["status"] = copy.deepcopy(status)
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        self._notify("MODIFIED", current)

    async def delete(self, res: Resource, namespace: str, name: str) -> None:
        self.delete_now(res, namespace, name)

    def delete_now(self, res: Resource, namespace: str, name: str) -> None:
        gone = self._objects.pop(self._key(res, namespace, name), None)
        if gone is None:
            return
        self._notify("DELETED", gone)
        uid = gone["metadata"]["uid"]
        for key, obj in list(self._objects.items()):
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                self.delete_now(RESOURCES[key[0]], key[1], key[2])

    async def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        recorded = RecordedEvent(self.clock(), obj["kind"], meta["name"], meta.get("namespace", "default"), type_, reason, message)
        self.events.append(recorded)
        del self.events[:-1000]
        for listener in self.event_listeners:
            listener(recorded)
