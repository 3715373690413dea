"""When a policy's next check is due."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from ...api.base import parse_duration
from ..cluster import Obj
from ..conditions import parse_timestamp


def initial_delay(uid: str, interval: float) -> float:
    """A stable offset in [0, interval) from the uid, so policies created together spread out."""
    digest = hashlib.sha256((uid or "").encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


def _interval(policy: Obj) -> float:
    try:
        return max(parse_duration(str((policy.get("spec") or {}).get("interval", "60s"))), 5.0)
    except ValueError:
        return 60.0


def next_check(policy: Obj) -> datetime | None:
    """When the next check is due; None means now (never scheduled before and no creation time)."""
    interval = _interval(policy)
    last = parse_timestamp((policy.get("status") or {}).get("lastCheck"))
    if last is not None:
        return last + timedelta(seconds=interval)
    meta = policy.get("metadata") or {}
    created = parse_timestamp(meta.get("creationTimestamp"))
    if created is None:
        return None
    return created + timedelta(seconds=initial_delay(meta.get("uid", ""), interval))


def is_due(policy: Obj, now: datetime) -> bool:
    """Whether a check should run now: ``lastCheck + interval <= now`` (first: a uid-spread delay after creation)."""
    when = next_check(policy)
    return when is None or when <= now
