"""Reconciles read from memory: the objects kopf's watches already stream, kept in kopf indices.

At 10,000 TrainingJobs every reconcile's reads (the run, its Job, its pods; a
model's lineage; a policy's retrains; a ModelDeployment's children) were API
requests, several per event. The watches kopf keeps open deliver every one of
those objects anyway, so the handlers index them (``handlers/indices.py``)
and :class:`CachedReads` answers ``get`` and the few selectors the reconciles
use from there, as controller-runtime's informer cache does.

- **Complete before use.** kopf fills every index from its initial listing
  before it runs any handler, and keys reach the work queue only from
  handlers; reads are answered from the indices only once a handler ran
  (:meth:`CachedReads.mark_ready`). Before that, and for anything not
  indexed, the API server answers.
- **Eventually consistent.** A read may lag a write by the watch's delay. Every
  write is conditional on what was read (status by resourceVersion; children
  by deterministic names, a 409 on create is found, not duplicated), so a
  decision made on a stale read is refused and made again, never applied.
- **Compact and copy-safe.** An object is kept as its JSON text without
  ``managedFields`` and kubectl's last-applied copy (and without what no
  reconcile reads: a Job's spec, a pod's spec beyond container names and
  ports). Each read parses a fresh copy, so no caller can change what another
  reads, and 10,000 runs cost a few tens of MB.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from ..controllers import labels
from ..controllers.cluster import (
    DEPLOYMENTS, DRIFT_POLICIES, HPAS, JOBS, MODEL_DEPLOYMENTS, PDBS, PODS, SERVICES, TRAINING_JOBS, Obj, Resource,
)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

INDEXED = (TRAINING_JOBS, MODEL_DEPLOYMENTS, DRIFT_POLICIES, JOBS, PODS, DEPLOYMENTS, SERVICES, HPAS, PDBS)
"""The kinds whose objects are indexed by (namespace, name): index ``objects_<plural>`` of handlers/indices."""

SELECTORS: dict[tuple[str, str], str] = {
    ("TrainingJob", "field:spec.model"): "training_jobs_by_model",
    ("TrainingJob", f"label:{labels.TRIGGERED_BY}"): "training_jobs_by_policy",
    ("Pod", "label:job-name"): "pods_by_job",
    ("Pod", f"label:{labels.DEPLOYMENT}"): "pods_by_deployment",
}
"""(kind, the one selector a reconcile uses) -> the index of names answering it."""


def index_name(res: Resource) -> str:
    return f"objects_{res.plural}"


def kept(kind: str, body: Mapping[str, Any]) -> str:
    """What the cache keeps of an object: its JSON, without what no reconcile reads."""
    obj = {k: v for k, v in body.items() if k not in ("spec",) or kind not in ("Job", "Pod")}
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    obj["metadata"] = meta
    if kind == "Pod":  # the drift sensors' address: container names and ports
        containers = ((body.get("spec") or {}).get("containers")) or []
        obj["spec"] = {"containers": [{"name": c.get("name"), "ports": c.get("ports") or []} for c in containers]}
    return json.dumps(obj, separators=(",", ":"))


Index = Mapping[Any, Iterable[Any]]
"""A kopf index as its handlers see it: key -> the values of every object that produced the key."""


class CachedReads:
    """The reads the reconciles make, answered from kopf's indices once they are complete.

    ``get`` and ``list`` return ``None`` where the indices cannot answer (not
    ready, a kind or selector not indexed): the caller asks the API server.
    """

    def __init__(self) -> None:
        self._indices: Mapping[str, Index] = {}
        self._ready = False

    def attach(self, indices: Mapping[str, Index]) -> None:
        """kopf's indices of this run of the operator (a new run, after a lost lease, brings new ones)."""
        self._indices, self._ready = dict(indices), False

    def mark_ready(self) -> None:
        """A handler ran, so kopf has indexed every object of its initial listings."""
        if self._indices:
            self._ready = True

    def detach(self) -> None:
        self._indices, self._ready = {}, False

    @property
    def ready(self) -> bool:
        return self._ready

    def get(self, res: Resource, namespace: str, name: str) -> tuple[bool, Obj | None]:
        """``(answered, object or None)``."""
        index = self._objects(res)
        if index is None:
            return False, None
        found = _one(index.get((namespace, name)))
        return True, (json.loads(found) if found is not None else None)

    def list(self, res: Resource, namespace: str | None, labels_: Mapping[str, str] | None,
             fields: Mapping[str, str] | None) -> list[Obj] | None:
        """The objects one selector (a label or a field, in one namespace) picks; None when not answerable."""
        objects = self._objects(res)
        selectors = [f"label:{k}" for k in labels_ or {}] + [f"field:{k}" for k in fields or {}]
        if objects is None or namespace is None or len(selectors) != 1:
            return None
        by = self._indices.get(SELECTORS.get((res.kind, selectors[0]), ""))
        if by is None:
            return None
        value = next(iter({**(labels_ or {}), **(fields or {})}.values()))
        out = []
        for name in sorted(set(by.get((namespace, value)) or ())):
            found = _one(objects.get((namespace, name)))
            if found is not None:
                out.append(json.loads(found))
        return out

    def _objects(self, res: Resource) -> Index | None:
        if not self._ready:
            return None
        return self._indices.get(index_name(res))


def _one(values: Iterable[str] | None) -> str | None:
    """The value an object keyed by its own name produced (one object per name)."""
    for value in values or ():
        return value
    return None
