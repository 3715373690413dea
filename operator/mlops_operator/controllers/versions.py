"""Which model versions exist, which may serve, and which is newest: shared by every controller."""

from __future__ import annotations

from typing import Iterable

from . import labels
from .cluster import Obj



def model_version(name: str, generation: int) -> str:
    """The version a TrainingJob generation produces: deterministic, readable, unique per namespace."""
    return f"{name}-g{generation}"


def needs_approval(tj: Obj) -> bool:
    return (tj.get("metadata", {}).get("annotations") or {}).get(f"{labels.PREFIX}/promotion") == "manual"


def approved(tj: Obj) -> bool:
    return (tj.get("metadata", {}).get("annotations") or {}).get(labels.APPROVED) == "true"


def passed(tj: Obj) -> bool:
    """Succeeded for its current generation, with a gate that passed (or no gate)."""
    status = tj.get("status") or {}
    return (
        status.get("phase") == "Succeeded"
        and status.get("observedGeneration") == tj.get("metadata", {}).get("generation")
        and (status.get("gate") or {}).get("result", "Skipped") in ("Passed", "Skipped")
        and bool(status.get("modelVersion"))
        and bool((status.get("artifact") or {}).get("sha256"))
    )


def promotable(tj: Obj) -> bool:
    """May serve as ``latest``: passed, and approved when its promotion is manual."""
    return passed(tj) and (not needs_approval(tj) or approved(tj))


def of_lineage(tjs: Iterable[Obj], model: str) -> list[Obj]:
    return [t for t in tjs if (t.get("spec") or {}).get("model") == model]


def newest_promotable(tjs: Iterable[Obj], model: str) -> Obj | None:
    """The TrainingJob behind ``version: latest``: the promotable run that completed last.

    Ties on completion time (one-second resolution) go to the later-created
    object, then to the name, so the answer is the same on every reconcile.
    """
    candidates = [t for t in of_lineage(tjs, model) if promotable(t)]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda t: (
            (t.get("status") or {}).get("completionTime") or "",
            t["metadata"].get("creationTimestamp") or "",
            t["metadata"]["name"],
        ),
    )


def find_version(tjs: Iterable[Obj], model: str, version: str) -> Obj | None:
    """The passed TrainingJob that produced an exact version (pinning skips the approval step)."""
    for t in of_lineage(tjs, model):
        if (t.get("status") or {}).get("modelVersion") == version and passed(t):
            return t
    return None
