"""What may hold a due trigger back: an active retrain, a missing source, the cooldown, the daily limit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from ...api.base import parse_duration
from ...api.driftpolicy import DriftPolicySpec
from ..cluster import Obj
from ..conditions import parse_timestamp, timestamp
from .retrain import model_mismatch

DAY = timedelta(hours=24)


def recent_triggers(times: Iterable[str], now: datetime) -> list[str]:
    """The trigger times of the last 24 hours (maxRetrainsPerDay is a rolling day)."""
    out = []
    for t in times:
        when = parse_timestamp(t)
        if when is not None and now - when < DAY:
            out.append(t)
    return out



def blocked_by(spec: DriftPolicySpec, status: Obj, deployment: Obj | None, source: Obj | None, now: datetime,
               times: list[str]) -> str:
    """Why the trigger may not fire now ('' when it may)."""
    trigger = spec.trigger
    if spec.action == "retrain":
        if status.get("activeRetrain"):
            return f"retrain {status['activeRetrain']} is still active"
        if source is None:
            return f"spec.retrain.from {spec.retrain.from_ if spec.retrain else ''} does not exist"
        mismatch = model_mismatch(spec, deployment, source)
        if mismatch:
            return mismatch
    last = parse_timestamp(status.get("lastTriggered"))
    cooldown = parse_duration(trigger.cooldown)
    if last is not None and now < last + timedelta(seconds=cooldown):
        return f"cooling down until {timestamp(last + timedelta(seconds=cooldown))}"
    if len(times) >= trigger.max_retrains_per_day:
        return f"{len(times)} triggers in the last 24h reach maxRetrainsPerDay {trigger.max_retrains_per_day}"
    return ""
