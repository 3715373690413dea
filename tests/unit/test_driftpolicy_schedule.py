"""Scheduled retraining (DriftPolicy.spec.schedule): the pure tick, the decision over time, validation, the loop in memory."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mlops_operator.api.driftpolicy import DriftPolicyStatus, Schedule
from mlops_operator.api.validation import validate_object
from mlops_operator.controllers import driftpolicy as dp
from mlops_operator.controllers.cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, TRAINING_JOBS
from mlops_operator.controllers.conditions import timestamp
from mlops_operator.controllers.driftpolicy.scheduled import MAX_COUNTED, tick
from mlops_operator.controllers.reconcile.driftpolicy import reconcile_drift_policy
from mlops_operator.local.cluster import MemoryCluster
from tests.unit.test_driftpolicy_controller import World, _md, _policy, _source

UTC = timezone.utc


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------- the pure tick: time zones, DST, downtime

# (title, cron, zone, last acted on, now, expected due, expected missed, expected next)
TICK_TABLE = [
    ("weekly Berlin, before the time: nothing due", "0 3 * * 1", "Europe/Berlin",
     _utc(2026, 1, 5, 2, 0), _utc(2026, 1, 12, 1, 59), None, 0, _utc(2026, 1, 12, 2, 0)),
    ("weekly Berlin, at the time (03:00 CET is 02:00 UTC)", "0 3 * * 1", "Europe/Berlin",
     _utc(2026, 1, 5, 2, 0), _utc(2026, 1, 12, 2, 0), _utc(2026, 1, 12, 2, 0), 1, _utc(2026, 1, 19, 2, 0)),
    ("weekly Berlin in summer (03:00 CEST is 01:00 UTC)", "0 3 * * 1", "Europe/Berlin",
     _utc(2026, 6, 1, 1, 0), _utc(2026, 6, 8, 1, 30), _utc(2026, 6, 8, 1, 0), 1, _utc(2026, 6, 15, 1, 0)),
    ("six weeks down: the latest time runs, once", "0 3 * * 1", "Europe/Berlin",
     _utc(2026, 1, 5, 2, 0), _utc(2026, 2, 20, 12, 0), _utc(2026, 2, 16, 2, 0), 6, _utc(2026, 2, 23, 2, 0)),
    ("New York 09:00 is 14:00 UTC in winter", "0 9 * * *", "America/New_York",
     _utc(2026, 1, 1, 14, 0), _utc(2026, 1, 2, 14, 0), _utc(2026, 1, 2, 14, 0), 1, _utc(2026, 1, 3, 14, 0)),
    ("New York 09:00 is 13:00 UTC after the spring change", "0 9 * * *", "America/New_York",
     _utc(2026, 3, 7, 14, 0), _utc(2026, 3, 8, 13, 0), _utc(2026, 3, 8, 13, 0), 1, _utc(2026, 3, 9, 13, 0)),
    ("Berlin spring forward: 02:30 does not exist, it runs at 03:00 CEST", "30 2 * * *", "Europe/Berlin",
     _utc(2026, 3, 28, 1, 30), _utc(2026, 3, 29, 1, 0), _utc(2026, 3, 29, 1, 0), 1, _utc(2026, 3, 30, 0, 30)),
    ("Berlin spring forward: not before the gap ends", "30 2 * * *", "Europe/Berlin",
     _utc(2026, 3, 28, 1, 30), _utc(2026, 3, 29, 0, 59), None, 0, _utc(2026, 3, 29, 1, 0)),
    ("Berlin fall back: 02:30 happens twice, the first runs", "30 2 * * *", "Europe/Berlin",
     _utc(2026, 10, 24, 0, 30), _utc(2026, 10, 25, 0, 30), _utc(2026, 10, 25, 0, 30), 1, _utc(2026, 10, 26, 1, 30)),
    ("Berlin fall back: the repeated 02:30 does not run again", "30 2 * * *", "Europe/Berlin",
     _utc(2026, 10, 25, 0, 30), _utc(2026, 10, 25, 1, 45), None, 0, _utc(2026, 10, 26, 1, 30)),
    ("hourly across fall back: every real hour, 02:00 CET after 02:00 CEST", "0 * * * *", "Europe/Berlin",
     _utc(2026, 10, 25, 0, 0), _utc(2026, 10, 25, 1, 0), _utc(2026, 10, 25, 1, 0), 1, _utc(2026, 10, 25, 2, 0)),
    ("a macro in UTC", "@weekly", "UTC",
     _utc(2026, 3, 1, 0, 0), _utc(2026, 3, 8, 0, 0, 30), _utc(2026, 3, 8, 0, 0), 1, _utc(2026, 3, 15, 0, 0)),
    ("never acted on: starts now, nothing due", "0 3 * * 1", "Europe/Berlin",
     None, _utc(2026, 1, 12, 2, 30), None, 0, _utc(2026, 1, 19, 2, 0)),
]


@pytest.mark.parametrize("title,cron,zone,last,now,due,missed,nxt", TICK_TABLE, ids=[t[0] for t in TICK_TABLE])
def test_schedule_tick_table(title, cron, zone, last, now, due, missed, nxt) -> None:
    got = tick(Schedule(cron=cron, time_zone=zone), last, now)
    assert (got.due, got.missed, got.next) == (due, missed, nxt)
    assert got.last == (due if due is not None else last), "what is acted on becomes the new last time"


def test_schedule_tick_after_a_long_downtime_is_bounded_and_quick() -> None:
    """An every-minute schedule and a month down: one due time, the count capped, no 43,200-step loop."""
    started = time.perf_counter()
    got = tick(Schedule(cron="* * * * *"), _utc(2026, 1, 1), _utc(2026, 2, 1, 0, 0, 20))
    assert got.due == _utc(2026, 2, 1) and got.missed == MAX_COUNTED and got.next == _utc(2026, 2, 1, 0, 1)
    assert time.perf_counter() - started < 5


def test_schedule_ticks_replayed_minute_by_minute_fire_once_per_scheduled_time() -> None:
    """Ticking every 10 minutes over a Berlin fall-back week fires exactly once a day, at 02:30 local time."""
    schedule = Schedule(cron="30 2 * * *", time_zone="Europe/Berlin")
    now, last, fired = _utc(2026, 10, 22), None, []
    while now < _utc(2026, 10, 29):
        got = tick(schedule, last, now)
        if got.due is not None:
            fired.append(got.due)
        last = got.last if got.last is not None else (got.next - timedelta(seconds=1) if last is None else last)
        now += timedelta(minutes=10)
    local = [t.astimezone(ZoneInfo("Europe/Berlin")) for t in fired]
    assert [(t.day, t.hour, t.minute) for t in local] == [(d, 2, 30) for d in range(22, 29)]


# --------------------------------------------------------------------------- validation: clear errors with paths


def _manifest(schedule: object, **spec: object) -> dict:
    obj = _policy(**spec)
    obj["spec"]["schedule"] = schedule
    return obj


@pytest.mark.parametrize("schedule,extra,path,words", [
    ({"cron": "61 3 * * 1"}, {}, "spec.schedule.cron", "bad minute field (got '61 3 * * 1')"),
    ({"cron": "0 3 * *"}, {}, "spec.schedule.cron", "must be five fields"),
    ({"cron": "0 0 30 2 *"}, {}, "spec.schedule.cron", "bad day-of-month field"),
    ({"cron": "0 3 * * 1", "timeZone": "Mars/Olympus"}, {}, "spec.schedule.timeZone", "unknown time zone 'Mars/Olympus'"),
    ({"cron": "0 3 * * 1", "tz": "UTC"}, {}, "spec.schedule.tz", "unknown field"),
    ({"cron": "@weekly"}, {"action": "alert"}, "spec.schedule", "needs action retrain"),
])
def test_schedule_validation_names_the_field(schedule, extra, path, words) -> None:
    errors = [str(e) for e in validate_object(_manifest(schedule, **extra))]
    assert any(e.startswith(path + ":") and words in e for e in errors), errors


def test_schedule_valid_forms_pass_and_an_invalid_one_stalls_the_policy() -> None:
    for cron in ("0 3 * * 1", "0 3 * * MON", "*/15 * * * *", "@daily", "0 3 1,15 * *"):
        assert validate_object(_manifest({"cron": cron, "timeZone": "Europe/Berlin"})) == []
    d = dp.decide(_manifest({"cron": "0 25 * * *"}), None, [], _md(), _source(), _utc(2026, 3, 1))
    ready = next(c for c in d.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.schedule.cron: bad hour field" in ready["message"]
    assert d.retrain is None


# --------------------------------------------------------------------------- the decision over time

WEEKLY = {"cron": "0 3 * * 1", "timeZone": "Europe/Berlin"}
MONDAY_3AM = _utc(2026, 3, 2, 2, 0)  # Monday 2 March 2026, 03:00 in Berlin
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the World's clock starts here (a Sunday)


def _minute(when: datetime) -> float:
    return (when - T0).total_seconds() / 60


def _scheduled_world(**spec: object) -> World:
    return World(schedule=WEEKLY, **spec)


def test_schedule_starts_a_retrain_at_its_time_and_records_the_trigger() -> None:
    w = _scheduled_world()
    first = w.step(0, None)
    assert first.retrain is None, "a schedule seen for the first time starts counting, it does not fire"
    assert first.status["schedule"] == {"cron": "0 3 * * 1", "timeZone": "Europe/Berlin",
                                        "nextScheduleTime": timestamp(MONDAY_3AM)}
    assert w.step(_minute(MONDAY_3AM) - 1, None).retrain is None
    d = w.step(_minute(MONDAY_3AM), None)
    assert d.retrain is not None and d.retrain["metadata"]["name"] == "iris-retrain-1"
    assert d.retrain["metadata"]["annotations"]["mlops.dev/retrain-trigger"] == "schedule"
    assert d.retrain["spec"]["data"]["includeFeedback"] is True, "retrains on the latest data and feedback"
    assert d.retrain["metadata"]["labels"]["mlops.dev/parent-version"] == "iris-v1-g1"
    record = d.status["retrains"][0]
    assert record["trigger"] == "schedule" and record["reason"].startswith("scheduled: the scheduled time 2026-03-02T02:00:00Z")
    assert d.status["activeRetrain"] == "iris-retrain-1" and d.status["lastTriggered"] == timestamp(MONDAY_3AM)
    assert d.status["schedule"]["lastScheduleTime"] == timestamp(MONDAY_3AM)
    assert d.status["schedule"]["nextScheduleTime"] == timestamp(MONDAY_3AM + timedelta(days=7))
    assert d.status["schedule"]["lastResult"].startswith("retrain iris-retrain-1 started")
    assert [e.reason for e in d.events] == ["RetrainTriggered"]
    assert "started for the scheduled time 2026-03-02T02:00:00Z (0 3 * * 1 Europe/Berlin)" in d.events[0].message
    assert w.step(_minute(MONDAY_3AM) + 1, None).retrain is None, "one retrain per scheduled time"
    DriftPolicyStatus.model_validate(d.status)


def test_schedule_missed_during_downtime_runs_once_not_once_each() -> None:
    w = _scheduled_world()
    w.step(0, None)
    back = MONDAY_3AM + timedelta(days=21, hours=5)  # the operator was down for three Mondays
    d = w.step(_minute(back), None)
    assert d.retrain is not None and d.status["retrainCount"] == 1
    assert d.status["schedule"]["lastScheduleTime"] == timestamp(MONDAY_3AM + timedelta(days=21))
    assert "run once for 3 earlier time(s)" in d.events[0].message
    w.finish("iris-retrain-1")
    later = [w.step(_minute(back) + m, None).retrain for m in (0, 1, 60, 60 * 24)]
    assert later == [None] * 4, "the missed times are spent"
    assert len(w.tjs) == 1


def test_schedule_is_held_back_by_an_active_retrain_and_skipped_not_deferred() -> None:
    w = _scheduled_world(trigger={"consecutive": 1, "cooldown": "1m"})
    w.step(0, None)
    assert w.step(_minute(MONDAY_3AM) - 10, "Drift").retrain["metadata"]["name"] == "iris-retrain-1"
    d = w.step(_minute(MONDAY_3AM), None)
    assert d.retrain is None and [e.reason for e in d.events] == ["ScheduledRetrainSkipped"]
    assert "retrain iris-retrain-1 is still active" in d.events[0].message
    assert "skipped" in d.status["schedule"]["lastResult"]
    w.finish("iris-retrain-1")
    assert w.step(_minute(MONDAY_3AM) + 30, None).retrain is None, "a skipped time does not fire when the slot frees"
    assert w.step(_minute(MONDAY_3AM + timedelta(days=7)), None).retrain["metadata"]["name"] == "iris-retrain-2"


def test_schedule_and_drift_share_the_cooldown() -> None:
    w = _scheduled_world(trigger={"consecutive": 1, "cooldown": "30m"})
    w.step(0, None)
    w.step(_minute(MONDAY_3AM) - 20, "Drift")
    w.finish("iris-retrain-1", gate="Failed")
    d = w.step(_minute(MONDAY_3AM), None)
    assert d.retrain is None and "cooling down until 2026-03-02T02:10:00Z" in d.events[-1].message
    # And the other way round: a scheduled retrain's cooldown holds a drift trigger back.
    d = w.step(_minute(MONDAY_3AM + timedelta(days=7)), None)
    assert d.retrain["metadata"]["name"] == "iris-retrain-2"
    w.finish("iris-retrain-2", gate="Failed")
    d = w.step(_minute(MONDAY_3AM + timedelta(days=7)) + 10, "Drift")
    assert d.retrain is None and "cooling down" in d.events[0].message  # the DriftDetected event says why


def test_schedule_counts_towards_max_retrains_per_day() -> None:
    w = World(schedule={"cron": "0 * * * *"}, trigger={"consecutive": 1, "cooldown": "1m", "maxRetrainsPerDay": 2})
    w.step(0, None)
    made = []
    for hour in range(1, 5):
        d = w.step(hour * 60, None)
        made.append(d.retrain["metadata"]["name"] if d.retrain else None)
        if d.retrain:
            w.finish(d.retrain["metadata"]["name"], gate="Failed")
    assert made == ["iris-retrain-1", "iris-retrain-2", None, None]
    assert "reach maxRetrainsPerDay 2" in w.events[-1].message
    assert w.step(hour * 60 + 1, "Drift").retrain is None, "drift is held to the same daily limit"


def test_a_changed_schedule_starts_afresh_and_a_removed_one_leaves_status() -> None:
    w = _scheduled_world()
    w.step(0, None)
    obj = w.policy
    obj["spec"]["schedule"] = {"cron": "0 4 * * *", "timeZone": "Europe/Berlin"}
    w.policy_json = json.dumps(obj)
    d = w.step(_minute(MONDAY_3AM) + 1, None)
    assert d.retrain is None, "the old schedule's time passed, but it is no longer the schedule"
    assert d.status["schedule"]["cron"] == "0 4 * * *"
    assert d.status["schedule"]["nextScheduleTime"] == timestamp(_utc(2026, 3, 2, 3, 0))
    obj = w.policy
    del obj["spec"]["schedule"]
    w.policy_json = json.dumps(obj)
    assert "schedule" not in w.step(_minute(MONDAY_3AM) + 2, None).status


def test_schedule_without_deployment_or_source_is_skipped_with_the_reason() -> None:
    w = _scheduled_world()
    w.step(0, None)
    w.source = None
    d = w.step(_minute(MONDAY_3AM), None)
    assert d.retrain is None and "spec.retrain.from iris-v1 does not exist" in d.events[-1].message


def test_a_drift_retrain_records_the_checks_that_breached() -> None:
    w = World(trigger={"consecutive": 1})
    check = dp.CheckResult(verdict="Drift", samples=600, checks=[
        dp.CheckOutcome("dataDrift", "breach", "dataDrift on petal_length"),
        dp.CheckOutcome("predictionDrift", "ok", "no drift"),
        dp.CheckOutcome("errorRate", "breach", "error rate 0.2 > 0.1"),
    ], message="Drift")
    d = w.decide_with(0, check)
    assert d.retrain["metadata"]["annotations"]["mlops.dev/retrain-trigger"] == "dataDrift,errorRate"
    assert d.status["retrains"][0]["trigger"] == "dataDrift,errorRate"


# --------------------------------------------------------------------------- the reconcile loop on the local (in-memory) cluster


def test_schedule_in_the_local_cluster_fires_once_and_requeues_for_the_next_time() -> None:
    clock = {"now": T0}
    cluster = MemoryCluster(clock=lambda: clock["now"])
    for obj in (_source(), _md(), _policy(schedule=WEEKLY)):
        obj = copy.deepcopy(obj)
        obj.pop("status", None)
        cluster.create_now(obj)
    cluster.patch_status_now(MODEL_DEPLOYMENTS, "ml", "iris", {"modelVersion": "iris-v1-g1"})

    async def reconcile(at: datetime) -> dp.PolicyDecision:
        clock["now"] = at
        return await reconcile_drift_policy(cluster, "ml", "iris", None, lambda: at, None)

    first = asyncio.run(reconcile(T0))
    assert first.retrain is None
    assert first.requeue_after is not None and first.requeue_after <= 60, "the check interval comes first"
    # An hour before the scheduled time, with a check interval longer than that, the queue comes back for the schedule.
    obj = cluster.get_now(DRIFT_POLICIES, "ml", "iris")
    obj["spec"]["interval"] = "6h"
    cluster.apply_now(obj)
    before = asyncio.run(reconcile(MONDAY_3AM - timedelta(hours=1)))
    assert before.requeue_after == pytest.approx(3600, abs=1)
    decisions = [asyncio.run(reconcile(MONDAY_3AM + timedelta(seconds=s))) for s in (0, 1, 30)]
    assert [d.retrain is not None for d in decisions] == [True, False, False]
    retrains = cluster.list_now(TRAINING_JOBS, "ml", {"mlops.dev/triggered-by": "iris"})
    assert [t["metadata"]["name"] for t in retrains] == ["iris-retrain-1"]
    assert [e.reason for e in cluster.events if e.reason.startswith(("Retrain", "Scheduled"))] == ["RetrainTriggered"]
    status = cluster.get_now(DRIFT_POLICIES, "ml", "iris")["status"]
    assert status["schedule"]["nextScheduleTime"] == timestamp(MONDAY_3AM + timedelta(days=7))
    assert status["retrains"][0]["trigger"] == "schedule"
