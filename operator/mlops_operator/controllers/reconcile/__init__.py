"""Reconcile loops: read through a Cluster, decide purely, apply the difference.

The cluster operator (``k8s/``) and the embedded default (``local/``) both call
these with their own :class:`~..cluster.Cluster`; nothing here knows which one
it is talking to. One module per kind.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

Obj = dict[str, Any]
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def changed(old: Obj | None, new: Obj) -> bool:
    """Whether writing ``new`` would change anything (so an unchanged status is never re-written)."""
    return (old or {}) != new


def owner_name(obj: Obj, kind: str) -> str | None:
    """The name of the controlling owner of a given kind, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return ref.get("name")
    return None
