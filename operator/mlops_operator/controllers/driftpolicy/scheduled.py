"""Scheduled retraining: which scheduled time (if any) is due, computed from the last one acted on.

Pure: the schedule, the last scheduled time handled (``status.schedule``) and
the clock in, the time to act on and the next one out. Only the latest of the
times passed since the last one is acted on, so times missed while the
operator was down run once, not once each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim

from ...api.driftpolicy import DriftPolicySpec, Schedule, cron_fields
from ..cluster import Obj
from ..conditions import parse_timestamp, timestamp
from ..decision import Event
from .retrain import start_retrain
from .trigger import blocked_by, recent_triggers

TRIGGER = "schedule"
"""The trigger a scheduled retrain records (drift retrains record the checks that breached)."""

MAX_COUNTED = 1000
"""Missed times counted at most (an every-minute schedule and a week's downtime must not cost a long loop)."""


@dataclass(frozen=True)
class ScheduleTick:
    """Where a schedule stands at ``now``."""

    due: datetime | None
    """The scheduled time to act on now (the latest one passed), None when none has passed since the last."""
    missed: int
    """Scheduled times passed since the last one acted on, ``due`` included (capped at MAX_COUNTED); 0 when none."""
    next: datetime | None
    """The first scheduled time after ``now`` (None when the expression never matches again)."""
    last: datetime | None
    """What to record as the last scheduled time acted on: ``due`` when one is, else the previous one."""


def _after(fields: str, zone: ZoneInfo, when: datetime) -> datetime | None:
    """The first scheduled time strictly after ``when``, in UTC."""
    try:
        return next(CronSim(fields, when.astimezone(zone))).astimezone(timezone.utc)
    except StopIteration:  # cronsim looks 50 years ahead; an expression that never matches is refused at validation
        return None


def _latest_by(fields: str, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The last scheduled time at or before ``now``, in UTC."""
    try:
        return next(CronSim(fields, (now + timedelta(seconds=1)).astimezone(zone), reverse=True)).astimezone(timezone.utc)
    except StopIteration:
        return None


def tick(schedule: Schedule, last: datetime | None, now: datetime) -> ScheduleTick:
    """The scheduled time due at ``now``, given the last one acted on (None: the schedule starts now, nothing is due)."""
    fields = cron_fields(schedule.cron)
    zone = ZoneInfo(schedule.time_zone)
    now = now.replace(microsecond=0)
    if last is None:
        return ScheduleTick(due=None, missed=0, next=_after(fields, zone, now), last=None)
    first = _after(fields, zone, last)
    if first is None or first > now:
        return ScheduleTick(due=None, missed=0, next=first, last=last)
    due = _latest_by(fields, zone, now) or first
    missed, when = 1, first
    while when < due and missed < MAX_COUNTED:
        when = _after(fields, zone, when) or due
        missed += 1
    return ScheduleTick(due=due, missed=missed, next=_after(fields, zone, now), last=due)


def tick_status(schedule: Schedule, status: Obj, now: datetime) -> ScheduleTick:
    """:func:`tick` from ``status.schedule``; a schedule that differs from the one recorded starts afresh at ``now``."""
    recorded = status.get("schedule") or {}
    same = recorded.get("cron") == schedule.cron and recorded.get("timeZone") == schedule.time_zone
    last = parse_timestamp(recorded.get("lastScheduleTime")) if same else None
    if same and last is None:
        # Seen before, never fired: count from when it was first seen (its next time then), so nothing is skipped.
        nxt = parse_timestamp(recorded.get("nextScheduleTime"))
        if nxt is not None:
            last = nxt - timedelta(seconds=1)
    return tick(schedule, last, now)


def schedule_status(schedule: Schedule, result: ScheduleTick, last_result: str | None, old: Obj | None) -> Obj:
    """``status.schedule`` after a tick: the schedule itself, its last and next times, and what the last one did."""
    out: Obj = {"cron": schedule.cron, "timeZone": schedule.time_zone}
    if result.last is not None:
        out["lastScheduleTime"] = timestamp(result.last)
    if result.next is not None:
        out["nextScheduleTime"] = timestamp(result.next)
    previous = (old or {}).get("lastResult") if (old or {}).get("cron") == schedule.cron else None
    if last_result or previous:
        out["lastResult"] = (last_result or previous or "")[:1000]
    return out


def describe(schedule: Schedule) -> str:
    """The schedule in one phrase for events and reasons."""
    return f"{schedule.cron} {schedule.time_zone}"


def scheduled_retrain(policy: Obj, spec: DriftPolicySpec, status: Obj, deployment: Obj | None, source: Obj | None,
                      serving: str | None, now: datetime) -> tuple[Obj | None, list[Event]]:
    """The retrain a due scheduled time starts (recorded in ``status``), or why it is skipped; ``status.schedule`` moves on.

    A scheduled time is held to the drift trigger's rules (one active retrain,
    the cooldown, maxRetrainsPerDay): one that they hold back is skipped, not
    kept for later, so a retrain that just ran is not followed by another.
    """
    schedule = spec.schedule
    assert schedule is not None
    old = status.get("schedule") or {}
    result = tick_status(schedule, status, now)
    if result.due is None:
        status["schedule"] = schedule_status(schedule, result, None, old)
        return None, []
    when = f"the scheduled time {timestamp(result.due)} ({describe(schedule)})"
    if result.missed > 1:
        more = f"{result.missed - 1}{'+' if result.missed >= MAX_COUNTED else ''}"
        when += f", run once for {more} earlier time(s) passed while no check ran"
    times = recent_triggers(status.get("triggerTimes") or [], now)
    status["triggerTimes"] = times
    blocked = blocked_by(spec, status, deployment, source, now, times)
    if not blocked and deployment is None:
        blocked = f"ModelDeployment {spec.deployment} does not exist"
    if blocked:
        note = f"skipped {when}: {blocked}"
        status["schedule"] = schedule_status(schedule, result, note, old)
        return None, [Event("Normal", "ScheduledRetrainSkipped", note[:1000])]
    assert source is not None
    retrain = start_retrain(policy, source, status, now, parent_version=serving, reason=f"scheduled: {when}",
                            trigger=TRIGGER)
    note = f"retrain {retrain['metadata']['name']} started for {when}"
    status["schedule"] = schedule_status(schedule, result, note, old)
    return retrain, [Event("Normal", "RetrainTriggered", note[:1000])]
