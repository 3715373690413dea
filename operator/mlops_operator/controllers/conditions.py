"""Status conditions the way kstatus, Flux, Argo CD and ``kubectl wait`` read them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

Condition = dict[str, Any]


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second: what metav1.Time serialises to."""
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """A new list with one condition set; its lastTransitionTime moves only when the status flips."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    old = next((c for c in conditions or [] if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value and old.get("lastTransitionTime") else timestamp(now)
    new: Condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:2000],
        "lastTransitionTime": since,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions or [] if c.get("type") != type_] + [new]


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def summarize(
    conditions: list[Condition] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    reconciling: bool,
    stalled: bool,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Set Ready plus kstatus' Reconciling and Stalled in one go, consistently.

    kstatus reads an object as in progress while Reconciling is True and as
    failed while Stalled is True; both stay present (False) otherwise, so a
    person sees them move.
    """
    out = set_condition(conditions, "Ready", ready, reason, message, now, generation)
    out = set_condition(out, "Reconciling", reconciling, reason if reconciling else "Done", message if reconciling else "", now, generation)
    out = set_condition(out, "Stalled", stalled, reason if stalled else "None", message if stalled else "", now, generation)
    return out



def refused(status: dict[str, Any], kind: str, name: str, message: str, now: datetime,
            generation: int | None) -> dict[str, Any]:
    """The status of an object whose child the API server refused.

    ``Stalled``: retrying the same child cannot help until its owner's spec (or
    the cluster's policy) changes. The API server's own words are the message.
    """
    text = f"the API server refused {kind} {name}: {message}"
    new = dict(status)
    new["conditions"] = summarize(status.get("conditions"), ready=False, reason=f"{kind}Refused", message=text,
                                  reconciling=False, stalled=True, now=now, generation=generation)
    return new
