"""What every controller's decision has in common: the status to write, the events, when to look again."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cluster import Obj


@dataclass
class Event:
    """A Kubernetes Event to post about the object: one per transition, never one per reconcile."""

    type: str
    """``Normal`` or ``Warning``."""
    reason: str
    message: str


@dataclass(kw_only=True)
class Decision:
    """The part of a decision that ``apply_decision`` writes after the kind's children."""

    status: Obj
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    """Look again after this many seconds even if nothing changes (None: wait for an event)."""
