"""Reconcile loops: read through a Cluster, decide purely, apply the difference.

The cluster operator (``k8s/``) and the embedded default (``local/``) both call
these with their own :class:`~..cluster.Cluster`; nothing here knows which one
it is talking to. One module per kind, and one tail they share:
:func:`apply_decision`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence

from ..cluster import Cluster, Obj, Refused, Resource, resource_of
from ..conditions import get_condition, refused
from ..decision import Event

Clock = Callable[[], datetime]
StoreCheck = Callable[[str], Awaitable[Any]]
"""``namespace -> None, or a problem with .reason and .message``: can that namespace's pods reach the object store?"""
log = logging.getLogger("mlops_operator")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def changed(old: Obj | None, new: Obj) -> bool:
    """Whether writing ``new`` would change anything (so an unchanged status is never re-written)."""
    return (old or {}) != new


def retry_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before retrying after ``failures`` failed reconciles in a row: base·2^(n−1), at most ``cap``.

    Both drivers use it, so an object fails and recovers on the same schedule
    on a cluster and locally.
    """
    return min(cap, base * 2 ** max(0, failures - 1))


def owner_name(obj: Obj, kind: str) -> str | None:
    """The name of the controlling owner of a given kind, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return ref.get("name")
    return None


@dataclass
class Result:
    """What one reconcile wrote, for the work queue and the operator's metrics."""

    status: Obj | None
    """The status as written (None: the object is gone)."""
    requeue_after: float | None = None
    """Look again after this long even if no watch event comes."""


@dataclass
class Changes:
    """The children a decision asks for, in the order they are applied."""

    create: Sequence[Obj] = ()
    """Created once under their deterministic names; an existing one is left as it is."""
    apply: Sequence[Obj] = ()
    """Server-side applied: brought to exactly these fields."""
    delete: Sequence[Obj] = ()
    events: list[Event] = field(default_factory=list)


async def apply_decision(cluster: Cluster, res: Resource, obj: Obj, status: Obj, changes: Changes, now: datetime) -> Obj:
    """Children first, then the status (only if it changed), then the events; returns the status written.

    The status write is conditional on the resourceVersion ``obj`` was read at,
    so a decision taken on a stale object fails with ``Conflict`` (the queue
    re-reads and re-decides) instead of overwriting someone else's write. A
    child the API server refuses is the owner's news: its status says so
    (``<Kind>Refused``, Stalled) with the API server's message, an event too
    when that is new, and then the refusal is raised so the queue retries with
    back-off (an admission policy may be lifted without any spec change).
    """
    meta = obj["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    events = list(changes.events)
    problem: Refused | None = None
    try:
        for child in changes.create:
            await cluster.create(child)
        for child in changes.apply:
            await cluster.apply(child)
        for child in changes.delete:
            await cluster.delete(resource_of(child), namespace, child["metadata"]["name"])
    except Refused as exc:
        problem = exc
        status = refused(status, exc.kind, exc.name, exc.message, now, meta.get("generation"))
        before = get_condition((obj.get("status") or {}).get("conditions"), "Ready") or {}
        after = get_condition(status["conditions"], "Ready") or {}
        news = (before.get("reason"), before.get("message")) != (after["reason"], after["message"])
        events = [Event("Warning", after["reason"], after["message"])] if news else []
    if changed(obj.get("status"), status):
        await cluster.patch_status(res, namespace, name, status, meta.get("resourceVersion"))
    for ev in events:
        await cluster.event(obj, ev.type, ev.reason, ev.message)
    if problem is not None:
        raise problem
    return status
