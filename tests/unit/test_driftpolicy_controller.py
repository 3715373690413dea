"""DriftPolicy decisions: windows, checks, the trigger over time, the retrain it starts, and the status."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mlops_operator.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus
from mlops_operator.controllers import driftpolicy as dp
from mlops_operator.controllers.conditions import get_condition, timestamp
from mlops_operator.controllers.reconcile.driftpolicy import reconcile_drift_policy
from mlops_operator.drift import Reference, build_reference

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def _example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / "iris" / name).read_text())


def _policy(**spec: Any) -> dict:
    obj = _example("driftpolicy.yaml")
    obj["metadata"].update(namespace="ml", uid="dp-uid", generation=1, creationTimestamp=timestamp(T0 - timedelta(days=1)))
    obj["spec"].update(spec)
    return obj


def _source() -> dict:
    obj = _example("trainingjob.yaml")
    obj["metadata"].update(namespace="ml", uid="tj-uid", generation=1)
    return obj


def _md(version: str | None = "iris-v1-g1") -> dict:
    obj = _example("modeldeployment.yaml")
    obj["metadata"].update(namespace="ml", uid="md-uid", generation=1)
    obj["status"] = {"modelVersion": version} if version else {}
    return obj


def _cond(status: dict, type_: str) -> dict:
    c = get_condition(status.get("conditions"), type_)
    assert c is not None, f"no {type_} condition"
    return c


def _result(verdict: str, samples: int = 600) -> dp.CheckResult:
    if verdict == "Drift":
        checks = [dp.CheckOutcome("dataDrift", "breach", "dataDrift on petal_length")]
        scores = [{"check": "dataDrift", "feature": "petal_length", "effect": 0.5, "pValue": 1e-9, "drifted": True}]
    elif verdict == "NoDrift":
        checks = [dp.CheckOutcome("dataDrift", "ok", "dataDrift: no drift in 4 features")]
        scores = [{"check": "dataDrift", "feature": "petal_length", "effect": 0.01, "pValue": 0.8, "drifted": False}]
    else:
        checks, scores = [], []
    return dp.CheckResult(verdict=verdict, samples=samples, scores=scores, checks=checks, message=f"{verdict} message")


# --------------------------------------------------------------------------- the trigger over time


class World:
    """The policy (kept only as JSON, as the API server keeps it) and the TrainingJobs it created."""

    def __init__(self, **spec: Any) -> None:
        self.policy_json = json.dumps(_policy(**spec))
        self.tjs: dict[str, dict] = {}
        self.md = _md()
        self.source = _source()
        self.events: list[dp.Event] = []

    @property
    def policy(self) -> dict:
        return json.loads(self.policy_json)  # a fresh copy every time: nothing survives but what was written

    def step(self, minute: float, verdict: str | None) -> dp.PolicyDecision:
        now = T0 + timedelta(minutes=minute)
        check = _result(verdict) if verdict else None
        d = dp.decide(self.policy, check, list(self.tjs.values()), self.md, self.source, now)
        if d.retrain is not None:
            name = d.retrain["metadata"]["name"]
            tj = copy.deepcopy(d.retrain)
            tj["metadata"].update(uid=f"uid-{name}", generation=1, creationTimestamp=timestamp(now))
            self.tjs.setdefault(name, tj)  # a second create of the same name is a 409: the first stays
        obj = self.policy
        obj["status"] = d.status
        self.policy_json = json.dumps(obj)
        self.events += d.events
        return d

    def decide_with(self, minute: float, check: dp.CheckResult) -> dp.PolicyDecision:
        """One step with a given check result (``step`` builds a plain one from a verdict)."""
        now = T0 + timedelta(minutes=minute)
        d = dp.decide(self.policy, check, list(self.tjs.values()), self.md, self.source, now)
        obj = self.policy
        obj["status"] = d.status
        self.policy_json = json.dumps(obj)
        self.events += d.events
        return d

    def finish(self, name: str, *, gate: str = "Passed", version: str | None = None) -> None:
        tj = self.tjs[name]
        version = version or f"{name}-g1"
        phase = "Succeeded" if gate == "Passed" else "Failed"
        tj["status"] = {"observedGeneration": 1, "phase": phase, "modelVersion": version,
                        "artifact": {"sha256": "ab" * 32}, "gate": {"result": gate, "metric": "accuracy", "value": 0.9,
                                                                     "championVersion": "iris-v1-g1", "championValue": 0.95}}


def _run(world: World, sequence: list[tuple[float, str | None]]) -> list[str | None]:
    """The retrain each step created (None when it created none)."""
    out = []
    for minute, verdict in sequence:
        d = world.step(minute, verdict)
        out.append(d.retrain["metadata"]["name"] if d.retrain else None)
    return out


TRIGGER_TABLE = [
    ("breach, breach -> trigger", {}, [(0, "Drift"), (1, "Drift")], [None, "iris-retrain-1"]),
    ("breach, ok, breach -> nothing", {}, [(0, "Drift"), (1, "NoDrift"), (2, "Drift")], [None, None, None]),
    ("not enough data resets nothing", {}, [(0, "Drift"), (1, "NotEnoughData"), (2, "Drift")], [None, None, "iris-retrain-1"]),
    ("unavailable resets nothing", {}, [(0, "Drift"), (1, "Unavailable"), (2, "Drift")], [None, None, "iris-retrain-1"]),
    ("not enough data is never a breach", {"trigger": {"consecutive": 1}}, [(0, "NotEnoughData"), (1, "NotEnoughData")], [None, None]),
    ("three in a row", {"trigger": {"consecutive": 3}}, [(0, "Drift"), (1, "Drift"), (2, "NoDrift"), (3, "Drift"), (4, "Drift"), (5, "Drift")],
     [None, None, None, None, None, "iris-retrain-1"]),
    ("no check, no count", {"trigger": {"consecutive": 2}}, [(0, "Drift"), (1, None), (2, None), (3, "Drift")], [None, None, None, "iris-retrain-1"]),
    ("maxRetrainsPerDay 0 never retrains", {"trigger": {"consecutive": 1, "maxRetrainsPerDay": 0}}, [(0, "Drift"), (1, "Drift")], [None, None]),
]


@pytest.mark.parametrize("title,spec,sequence,expected", TRIGGER_TABLE, ids=[t[0] for t in TRIGGER_TABLE])
def test_trigger_sequences(title, spec, sequence, expected) -> None:
    assert _run(World(**spec), sequence) == expected


def test_breach_streak_and_events() -> None:
    w = World()
    d = w.step(0, "Drift")
    assert d.status["consecutiveBreaches"] == 1 and d.status["verdict"] == "Drift"
    assert [e.reason for e in d.events] == ["DriftDetected"] and "1 of 2" in d.events[0].message
    d = w.step(1, "Drift")
    assert [e.reason for e in d.events] == ["DriftDetected", "RetrainTriggered"]
    assert d.status["consecutiveBreaches"] == 0, "a trigger starts a new streak"
    assert d.status["activeRetrain"] == "iris-retrain-1" and d.status["retrainCount"] == 1
    assert d.status["lastTriggered"] == timestamp(T0 + timedelta(minutes=1))
    assert d.status["retrains"] == [{"name": "iris-retrain-1", "trigger": "dataDrift", "reason": "dataDrift on petal_length",
                                     "time": timestamp(T0 + timedelta(minutes=1)), "result": "Running", "promoted": False}]
    assert _cond(d.status, "Retraining")["status"] == "True" and _cond(d.status, "Drifting")["status"] == "True"


def test_active_retrain_blocks_until_it_finishes() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "1m"})
    assert _run(w, [(0, "Drift"), (5, "Drift"), (10, "Drift")]) == ["iris-retrain-1", None, None]
    assert "still active" in w.events[-1].message
    w.finish("iris-retrain-1", gate="Failed")
    d = w.step(11, None)  # the TrainingJob's change alone is reconciled
    assert "activeRetrain" not in d.status and d.status["retrains"][0]["result"] == "GateFailed"
    assert [e.reason for e in d.events] == ["RetrainGateFailed"]
    assert _run(w, [(12, "Drift")]) == ["iris-retrain-2"]


def test_cooldown() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "30m"})
    assert _run(w, [(0, "Drift")]) == ["iris-retrain-1"]
    w.finish("iris-retrain-1", gate="Failed")
    assert _run(w, [(10, "Drift"), (29, "Drift"), (30, "Drift")]) == [None, None, "iris-retrain-2"]
    blocked = [e for e in w.events if e.reason == "DriftDetected"][1]
    assert "cooling down until 2026-03-01T12:30:00Z" in blocked.message


def test_max_retrains_per_day_is_a_rolling_24_hours() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "1m", "maxRetrainsPerDay": 2})
    got = []
    for minute in (0, 10, 20, 60 * 24 - 1, 60 * 24 + 1, 60 * 24 + 5):
        created = _run(w, [(minute, "Drift")])[0]
        got.append(created)
        if created:
            w.finish(created, gate="Failed")
    assert got == ["iris-retrain-1", "iris-retrain-2", None, None, "iris-retrain-3", None]
    assert any("maxRetrainsPerDay 2" in e.message for e in w.events)


def test_restart_mid_sequence_gives_the_same_decisions() -> None:
    """Only status carries state: replaying from a status read back as JSON decides the same."""
    sequence = [(0, "Drift"), (1, "NotEnoughData"), (2, "Drift"), (3, "Drift"), (4, "NoDrift"), (5, "Drift"), (6, "Drift")]
    straight = World(trigger={"consecutive": 2, "cooldown": "1m"})
    a = _run(straight, sequence[:3])
    straight.finish("iris-retrain-1", gate="Failed")
    a += _run(straight, sequence[3:])
    restarted = World(trigger={"consecutive": 2, "cooldown": "1m"})
    b = _run(restarted, sequence[:3])
    restarted.finish("iris-retrain-1", gate="Failed")
    snapshot = json.loads(json.dumps({"policy": restarted.policy, "tjs": restarted.tjs}))
    fresh = World(trigger={"consecutive": 2, "cooldown": "1m"})
    fresh.policy_json, fresh.tjs = json.dumps(snapshot["policy"]), snapshot["tjs"]
    b += _run(fresh, sequence[3:])
    assert a == b == [None, None, "iris-retrain-1", None, None, None, "iris-retrain-2"]
    assert straight.policy["status"] == fresh.policy["status"]


def test_a_retrain_created_before_a_crash_is_adopted_not_duplicated() -> None:
    w = World(trigger={"consecutive": 1})
    before = w.policy_json
    assert _run(w, [(0, "Drift")]) == ["iris-retrain-1"]
    w.policy_json = before  # the status write was lost; the TrainingJob exists
    d = w.step(0.5, None)
    assert d.retrain is None
    assert d.status["activeRetrain"] == "iris-retrain-1" and d.status["retrainCount"] == 1
    assert d.status["retrains"][0]["name"] == "iris-retrain-1" and d.status["retrains"][0]["reason"] == "dataDrift on petal_length"
    assert [e.reason for e in d.events] == ["RetrainTriggered"], "the event lost with the status write comes on adoption"
    assert "iris-retrain-1 started: dataDrift on petal_length" in d.events[0].message
    assert _run(w, [(1, "Drift")]) == [None], "the adopted retrain is active: no second one"
    assert len(w.tjs) == 1
    assert [e.reason for e in w.events].count("RetrainTriggered") == 2, "once at creation, once on adoption; never again"
    assert "RetrainTriggered" not in [e.reason for e in w.step(2, None).events]


def test_a_recorded_retrain_is_not_adopted_again() -> None:
    w = World(trigger={"consecutive": 1})
    _run(w, [(0, "Drift")])
    assert [e.reason for e in w.step(1, None).events] == [], "status knows it: nothing to adopt, no second event"


def test_a_source_of_another_model_is_refused_and_never_retrained() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "1m"})
    w.source["spec"]["model"] = "penguins"
    assert _run(w, [(0, "Drift"), (1, "Drift"), (2, None), (3, "Drift")]) == [None] * 4
    assert not w.tjs
    status = w.policy["status"]
    ready = _cond(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ModelMismatch" and _cond(status, "Stalled")["status"] == "True"
    assert "iris-v1 trains model 'penguins'" in ready["message"] and "ModelDeployment iris serves model 'iris'" in ready["message"]
    mismatch = [e for e in w.events if e.reason == "ModelMismatch"]
    assert len(mismatch) == 1 and mismatch[0].type == "Warning", "one event on the transition, not one per check"
    assert "trains model 'penguins'" in [e for e in w.events if e.reason == "DriftDetected"][-1].message
    w.source["spec"]["model"] = "iris"  # the user fixes retrain.from
    assert _run(w, [(4, "Drift")]) == ["iris-retrain-1"]
    assert _cond(w.policy["status"], "Ready")["reason"] == "Drift"


def test_an_alert_policy_does_not_care_which_model_its_unused_source_trains() -> None:
    w = World(action="alert", trigger={"consecutive": 1})
    w.source["spec"]["model"] = "penguins"
    w.step(0, "Drift")
    assert _cond(w.policy["status"], "Ready")["reason"] == "Drift"
    assert [e.reason for e in w.events] == ["DriftDetected", "DriftAlert"]


def test_alert_only_reports() -> None:
    w = World(action="alert", trigger={"consecutive": 2, "cooldown": "10m"})
    assert _run(w, [(0, "Drift"), (1, "Drift"), (2, "Drift"), (3, "Drift")]) == [None] * 4
    assert [e.reason for e in w.events].count("DriftAlert") == 1
    status = w.policy["status"]
    assert status.get("retrainCount") in (None, 0) and "activeRetrain" not in status
    assert status["lastTriggered"] == timestamp(T0 + timedelta(minutes=1))


def test_success_promotion_and_history() -> None:
    w = World(trigger={"consecutive": 1})
    _run(w, [(0, "Drift")])
    w.finish("iris-retrain-1")
    d = w.step(5, None)
    assert d.status["retrains"][0]["result"] == "Succeeded" and d.status["retrains"][0]["promoted"] is False
    assert "activeRetrain" not in d.status and [e.reason for e in d.events] == ["RetrainSucceeded"]
    w.md["status"]["modelVersion"] = "iris-retrain-1-g1"
    d = w.step(6, None)
    assert d.status["retrains"][0]["promoted"] is True and [e.reason for e in d.events] == ["Promoted"]
    assert "it serves now" in _cond(d.status, "Retraining")["message"]
    assert w.step(7, None).events == [], "bookkeeping is idempotent"


def test_manual_promotion_waits_for_approval() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "1m"}, promotion={"mode": "manual", "mustBeat": "current"})
    _run(w, [(0, "Drift")])
    assert w.tjs["iris-retrain-1"]["metadata"]["annotations"]["mlops.dev/promotion"] == "manual"
    w.finish("iris-retrain-1")
    d = w.step(5, None)
    retraining = _cond(d.status, "Retraining")
    assert retraining["reason"] == "AwaitingApproval"
    assert "kubectl annotate tj iris-retrain-1 mlops.dev/approved=true" in retraining["message"]
    assert d.status["activeRetrain"] == "iris-retrain-1"
    assert _run(w, [(10, "Drift")]) == [None], "waiting for approval still blocks"
    w.tjs["iris-retrain-1"]["metadata"]["annotations"]["mlops.dev/approved"] = "true"
    d = w.step(11, None)
    assert "activeRetrain" not in d.status


def test_a_deleted_retrain_releases_the_slot() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "1m"})
    _run(w, [(0, "Drift")])
    del w.tjs["iris-retrain-1"]
    d = w.step(1, None)
    assert "activeRetrain" not in d.status and d.status["retrains"][0]["result"] == "Deleted"
    assert _run(w, [(2, "Drift")]) == ["iris-retrain-2"]


def test_history_is_bounded() -> None:
    w = World(trigger={"consecutive": 1, "cooldown": "1m", "maxRetrainsPerDay": 96})
    for i in range(25):
        name = _run(w, [(i * 2, "Drift")])[0]
        assert name == f"iris-retrain-{i + 1}"
        w.finish(name, gate="Failed")
    status = w.policy["status"]
    assert len(status["retrains"]) == dp.MAX_RETRAINS and status["retrains"][0]["name"] == "iris-retrain-25"
    assert status["retrainCount"] == 25
    DriftPolicyStatus.model_validate(status)


# --------------------------------------------------------------------------- stalled, invalid, status shape


def test_missing_deployment_and_source_stall() -> None:
    w = World()
    w.md = None
    d = w.step(0, "Unavailable")
    assert _cond(d.status, "Ready")["reason"] == "DeploymentNotFound" and _cond(d.status, "Stalled")["status"] == "True"
    w = World(trigger={"consecutive": 1})
    w.source = None
    d = w.step(0, "Drift")
    assert d.retrain is None
    assert _cond(d.status, "Ready")["reason"] == "RetrainSourceNotFound"
    assert "iris-v1 does not exist" in _cond(d.status, "Stalled")["message"]
    assert "spec.retrain.from iris-v1 does not exist" in d.events[0].message


def test_invalid_spec() -> None:
    pol = _policy(interval="1s")
    d = dp.decide(pol, None, [], _md(), _source(), T0)
    assert _cond(d.status, "Ready")["reason"] == "InvalidSpec" and "interval must be at least 5s" in _cond(d.status, "Ready")["message"]
    assert [e.reason for e in d.events] == ["InvalidSpec"]


def test_status_shape_fits_the_api() -> None:
    w = World()
    d = w.step(0, "Drift")
    DriftPolicyStatus.model_validate(d.status)
    assert {c["type"] for c in d.status["conditions"]} == {"Ready", "Reconciling", "Stalled", "Drifting", "Retraining"}
    assert d.status["score"] == 0.5 and d.status["samples"] == 600 and d.status["lastCheck"] == timestamp(T0)
    assert _cond(d.status, "Ready")["status"] == "True" and _cond(d.status, "Ready")["reason"] == "Drift"
    first = dp.decide(_policy(), None, [], _md(), _source(), T0)
    assert _cond(first.status, "Ready")["reason"] == "Waiting" and _cond(first.status, "Drifting")["status"] == "Unknown"


# --------------------------------------------------------------------------- failures to read are visible


def _read(verdict: str, scraped: int = 3, unreadable: dict | None = None, reference_error: str = "") -> dp.CheckResult:
    r = _result(verdict)
    r.scraped, r.unreadable, r.reference_error = scraped, dict(unreadable or {}), reference_error
    return r


def test_unreadable_sensors_are_a_condition_an_event_per_transition_and_a_count() -> None:
    w = World()
    d = w.decide_with(0, _read("NoDrift"))
    assert _cond(d.status, "SensorsReadable")["status"] == "True" and d.sensor_errors == 0 and d.events == []
    d = w.decide_with(1, _read("NoDrift", unreadable={"iris-b": "timed out"}))
    sensors = _cond(d.status, "SensorsReadable")
    assert sensors["status"] == "False" and sensors["reason"] == "SensorUnreadable"
    assert "1 of 3 ready serving pods could not be read: iris-b (timed out)" in sensors["message"]
    assert d.sensor_errors == 1 and d.unreadable_pods == ["iris-b"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "SensorUnreadable")] and "iris-b" in d.events[0].message
    assert _cond(d.status, "Ready")["status"] == "True", "the other pods still give a verdict"
    d = w.decide_with(2, _read("NoDrift", unreadable={"iris-b": "timed out", "iris-c": "connection refused"}))
    assert d.sensor_errors == 2 and d.events == [], "still failing: no second event"
    assert "iris-c (connection refused)" in _cond(d.status, "SensorsReadable")["message"]
    d = w.step(2.5, None)
    assert d.sensor_errors == 0 and _cond(d.status, "SensorsReadable")["status"] == "False", "no check, no news"
    d = w.decide_with(3, _read("NoDrift"))
    assert [(e.type, e.reason) for e in d.events] == [("Normal", "SensorsRecovered")]
    assert _cond(d.status, "SensorsReadable")["status"] == "True"


def test_no_sensor_answering_makes_ready_false_with_the_pods_named() -> None:
    w = World()
    unreadable = {"iris-a": "connection refused", "iris-b": "timed out"}
    r = dp.unavailable(dp.unreadable_text(unreadable, 2), scraped=2, unreadable=unreadable)
    d = w.decide_with(0, r)
    ready = _cond(d.status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "SensorUnreadable" and _cond(d.status, "Stalled")["status"] == "False"
    assert "iris-a (connection refused)" in ready["message"] and "iris-b (timed out)" in ready["message"]
    assert d.sensor_errors == 2 and [e.reason for e in d.events] == ["SensorUnreadable"]
    assert _cond(w.step(1, None).status, "Ready")["reason"] == "SensorUnreadable", "a reconcile without a check keeps the reason"


def test_a_missing_reference_makes_ready_false_naming_the_version() -> None:
    w = World()
    error = "the reference profile of iris/iris-v1-g1 could not be read: HTTP 404"
    d = w.decide_with(0, dp.unavailable(f"{error}; dataDrift: no reference profile", scraped=2, reference_error=error))
    ready = _cond(d.status, "Ready")
    assert ready["reason"] == "ReferenceUnavailable" and "iris/iris-v1-g1" in ready["message"]
    assert _cond(d.status, "SensorsReadable")["reason"] == "ReferenceUnavailable"
    assert d.sensor_errors == 1 and [(e.type, e.reason) for e in d.events] == [("Warning", "ReferenceUnavailable")]
    DriftPolicyStatus.model_validate(d.status)


def test_a_check_that_found_no_pod_says_nothing_about_sensors() -> None:
    d = World().decide_with(0, dp.unavailable("no ready serving pod of iris"))
    assert get_condition(d.status.get("conditions"), "SensorsReadable") is None
    assert _cond(d.status, "Ready")["reason"] == "Unavailable" and d.sensor_errors == 0 and d.events == []


# --------------------------------------------------------------------------- schedule


def test_is_due_after_interval() -> None:
    pol = _policy(interval="60s")
    pol["status"] = {"lastCheck": timestamp(T0)}
    assert not dp.is_due(pol, T0 + timedelta(seconds=59))
    assert dp.is_due(pol, T0 + timedelta(seconds=60))


def test_first_check_is_spread_by_uid() -> None:
    delays = []
    for i in range(50):
        pol = _policy(interval="60s")
        pol["metadata"].update(uid=f"uid-{i}", creationTimestamp=timestamp(T0))
        when = dp.next_check(pol)
        assert T0 <= when <= T0 + timedelta(seconds=60)
        assert dp.next_check(pol) == when, "deterministic"
        delays.append((when - T0).total_seconds())
    assert max(delays) - min(delays) > 30, "spread over the interval"


# --------------------------------------------------------------------------- retrain spec


def test_retrain_is_a_clone_with_the_gate_and_lineage() -> None:
    pol, src = _policy(), _source()
    tj = dp.build_retrain(pol, src, 3, parent_version="iris-v1-g1", reason="dataDrift on petal_length")
    assert tj["metadata"]["name"] == "iris-retrain-3"
    assert tj["metadata"]["ownerReferences"] == [{"apiVersion": "mlops.dev/v1alpha1", "kind": "DriftPolicy", "name": "iris",
                                                  "uid": "dp-uid", "controller": True, "blockOwnerDeletion": True}]
    lab = tj["metadata"]["labels"]
    assert lab["mlops.dev/model"] == "iris" and lab["mlops.dev/triggered-by"] == "iris" and lab["mlops.dev/parent-version"] == "iris-v1-g1"
    assert "mlops.dev/promotion" not in tj["metadata"]["annotations"]
    spec = tj["spec"]
    assert spec["data"]["includeFeedback"] is True
    assert spec["qualityGate"] == {"metric": "accuracy", "minimum": 0.9, "mustBeat": "current"}
    assert spec["estimator"] == src["spec"]["estimator"] and spec["model"] == "iris"
    assert src["spec"]["qualityGate"] == {"metric": "accuracy", "minimum": 0.9}, "the source is not touched"
    from mlops_operator.api.validation import validate_object
    assert validate_object(tj) == []


@pytest.mark.parametrize(
    "gate,task,must_beat,expected",
    [
        (None, None, "current", {"metric": "accuracy", "mustBeat": "current"}),
        (None, "regression", "current", {"metric": "rmse", "mustBeat": "current"}),
        ({"metric": "f1_macro", "minimum": 0.5}, None, "none", {"metric": "f1_macro", "minimum": 0.5, "mustBeat": "none"}),
        ({"metric": "accuracy", "mustBeat": "current"}, None, "none", None),
    ],
)
def test_retrain_gate(gate, task, must_beat, expected) -> None:
    pol = _policy(promotion={"mode": "auto", "mustBeat": must_beat}, retrain={"from": "iris-v1", "includeFeedback": False})
    src = _source()
    if gate is None:
        src["spec"].pop("qualityGate")
    else:
        src["spec"]["qualityGate"] = gate
    tj = dp.build_retrain(pol, src, 1, parent_version=None, reason="", task=task)
    assert tj["spec"].get("qualityGate") == expected
    assert tj["spec"]["data"]["includeFeedback"] is False
    assert "mlops.dev/parent-version" not in tj["metadata"]["labels"]


def test_retrain_names_are_deterministic_and_fit() -> None:
    assert dp.retrain_name("iris", 1) == "iris-retrain-1"
    long = "a" * 63
    name = dp.retrain_name(long, 123)
    assert len(name) <= 52 and name.endswith("-retrain-123") and name == dp.retrain_name(long, 123)
    assert dp.retrain_name("a" * 62 + "b", 123) != name
    assert dp.retrain_index(long, name) == 123 and dp.retrain_index("iris", "iris-retrain-7") == 7
    assert dp.retrain_index("iris", "other-retrain-7") is None and dp.retrain_index("iris", "iris-v1") is None


# --------------------------------------------------------------------------- the window


def _pod(name: str, created: datetime = T0 - timedelta(hours=1)) -> dict:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": timestamp(created)}}


def _snap(rows: int, version: str = "v1", started: float | None = 1.0, bins: list[int] | None = None) -> dp.Snapshot:
    return dp.Snapshot(version=version, rows=rows, features={"x": bins if bins is not None else [rows, 0]},
                       feedback_rows=rows // 10, started=started)


def _advance(previous, observed, minute=0, alive=None, max_age=None, version="v1", baselines=None):
    """One round after ``previous``: a WindowUpdate (its state and baselines carry over), a bare
    status window (as read back after an operator restart: no baselines), or None."""
    alive = alive if alive is not None else [p["metadata"]["name"] for p, _ in observed]
    state = previous.state if isinstance(previous, dp.WindowUpdate) else previous
    if baselines is None and isinstance(previous, dp.WindowUpdate):
        baselines = previous.baselines
    return dp.advance_window(state, version, observed, alive, T0 + timedelta(minutes=minute), max_age, baselines)


def test_window_counts_deltas_over_pods() -> None:
    a, b = _pod("a"), _pod("b")
    w = _advance(None, [(a, _snap(100)), (b, _snap(50))])
    assert w.reset == "New" and w.counts["rows"] == 0
    w = _advance(w, [(a, _snap(130)), (b, _snap(70))], 1)
    assert w.reset is None and w.counts["rows"] == 50 and w.counts["features"]["x"] == [50, 0]
    assert w.counts["feedbackRows"] == (13 - 10) + (7 - 5)


def test_window_pod_restart_counts_from_zero() -> None:
    a = _pod("a")
    w = _advance(None, [(a, _snap(100))])
    w = _advance(w, [(a, _snap(120))], 1)
    w = _advance(w, [(a, _snap(30))], 2)  # lower than before: restarted
    assert w.counts["rows"] == 20 + 30
    w = _advance(w, [(a, _snap(200, started=2.0))], 3)  # a new start time: restarted, though higher
    assert w.counts["rows"] == 50 + 200


def test_window_keeps_what_departed_pods_counted() -> None:
    a, b = _pod("a"), _pod("b")
    w = _advance(None, [(a, _snap(100)), (b, _snap(100))])
    w = _advance(w, [(a, _snap(150)), (b, _snap(140))], 1)
    assert w.counts["rows"] == 90
    w = _advance(w, [(a, _snap(160))], 2, alive=["a"])  # b is gone
    assert w.counts["rows"] == 100 and [p["name"] for p in w.state["pods"]] == ["a"]


def test_window_unanswered_pod_catches_up() -> None:
    a, b = _pod("a"), _pod("b")
    w = _advance(None, [(a, _snap(10)), (b, _snap(10))])
    w = _advance(w, [(a, _snap(20))], 1, alive=["a", "b"])  # b did not answer
    assert w.counts["rows"] == 10 and [p["name"] for p in w.state["pods"]] == ["a", "b"]
    w = _advance(w, [(a, _snap(20)), (b, _snap(40))], 2)
    assert w.counts["rows"] == 10 + 30


def test_window_new_pods() -> None:
    a = _pod("a")
    w = _advance(None, [(a, _snap(10))])
    born_inside = _pod("n", T0 + timedelta(seconds=30))
    born_before = _pod("o", T0 - timedelta(minutes=5))
    w = _advance(w, [(a, _snap(10)), (born_inside, _snap(25)), (born_before, _snap(500))], 1)
    assert w.counts["rows"] == 25, "a pod born inside the window counts whole; one born earlier only from now"
    w = _advance(w, [(a, _snap(10)), (born_inside, _snap(25)), (born_before, _snap(510))], 2)
    assert w.counts["rows"] == 35


def test_window_resets_on_new_version_and_max_age() -> None:
    a = _pod("a")
    w = _advance(None, [(a, _snap(10))])
    w = _advance(w, [(a, _snap(60))], 1)
    assert w.counts["rows"] == 50
    v2 = _advance(w, [(a, _snap(70, version="v2"))], 2, version="v2")
    assert v2.reset == "NewVersion" and v2.counts["rows"] == 0 and v2.state["version"] == "v2"
    old = _advance(w, [(a, _snap(70))], 60, max_age=3600)
    assert old.reset == "MaxAge" and old.counts["rows"] == 0 and old.state["start"] == timestamp(T0 + timedelta(hours=1))
    young = _advance(w, [(a, _snap(70))], 59, max_age=3600)
    assert young.reset is None and young.counts["rows"] == 60


def test_window_skips_pods_of_another_version() -> None:
    a, b = _pod("a"), _pod("b")
    w = _advance(None, [(a, _snap(10)), (b, _snap(10, version="v0"))])
    assert w.skipped == ["b"] and w.reporting == 1


def test_window_categorical_counts_and_json_roundtrip() -> None:
    a = _pod("a")
    snap = lambda n, m: dp.Snapshot(version="v1", rows=n + m, features={"c": {"x": n, "y": m}}, started=None)  # noqa: E731
    w = _advance(None, [(a, snap(1, 1))])
    state, baselines = json.loads(json.dumps(w.state)), json.loads(json.dumps(w.baselines))
    w = _advance(state, [(a, snap(5, 2))], 1, baselines=baselines)
    assert w.counts["features"]["c"] == {"x": 4, "y": 1}


def test_window_after_an_operator_restart_counts_from_there_and_never_twice() -> None:
    """Without the pods' last counters (kept in memory), each known pod counts from this check on."""
    a, b = _pod("a"), _pod("b")
    w = _advance(None, [(a, _snap(100)), (b, _snap(100))])
    w = _advance(w, [(a, _snap(150)), (b, _snap(120))], 1)
    assert w.counts["rows"] == 70
    restarted = json.loads(json.dumps(w.state))  # all that survives: the status
    w = _advance(restarted, [(a, _snap(180)), (b, _snap(125))], 2)
    assert w.counts["rows"] == 70, "rows counted while the operator was away are left out, not guessed"
    w = _advance(w, [(a, _snap(200)), (b, _snap(135))], 3)
    assert w.counts["rows"] == 70 + 20 + 10


def test_window_status_does_not_grow_with_pods_times_bins() -> None:
    """Per-pod bin counts stay out of status: each more pod adds a name and a few numbers."""
    wide = [7] * 2000  # e.g. 50 features x 40 bins

    def status_bytes(n_pods: int) -> int:
        pods = [_pod(f"p{i}") for i in range(n_pods)]
        w = _advance(None, [(p, _snap(10, bins=wide)) for p in pods])
        w = _advance(w, [(p, _snap(20, bins=[8] * 2000)) for p in pods], 1)
        assert w.counts["rows"] == 10 * n_pods and len(w.baselines) == n_pods
        return len(json.dumps(w.state))

    one, fifty = status_bytes(1), status_bytes(50)
    assert fifty - one < 49 * 200, (one, fifty)


# --------------------------------------------------------------------------- checks against a real reference


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(0)
    n = 3000
    cols = {"a": rng.normal(0, 1, n), "b": rng.normal(5, 2, n), "c": rng.choice(["x", "y", "z"], n)}
    preds = np.where(cols["a"] > 0, "p", "q")
    return Reference.from_dict(build_reference(cols, {"c"}, preds, "classification", bins=20))


def _counts(reference: Reference, shift: float, n: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    cols = {"a": rng.normal(shift, 1, n), "b": rng.normal(5, 2, n), "c": rng.choice(["x", "y", "z"], n)}
    preds = np.where(cols["a"] > 0, "p", "q")
    wd = reference.count_window(cols, preds).to_dict()
    snap = dp.Snapshot(version="v1", rows=wd["rows"], features=wd["features"], predictions=wd["predictions"],
                       prediction_rows=wd["prediction_rows"])
    return dp.counters_of(snap)


def _spec(**kw: Any) -> DriftPolicySpec:
    base = {"deployment": "iris", "checks": [{"type": "dataDrift"}, {"type": "predictionDrift"}], "retrain": {"from": "iris-v1"}}
    base.update(kw)
    return DriftPolicySpec.model_validate(base)


def test_checks_on_shifted_and_unshifted_windows(reference) -> None:
    drift = dp.run_checks(_spec(), reference, {}, _counts(reference, 0.8, 1000))
    assert drift.verdict == "Drift" and drift.samples == 1000
    assert {c.type for c in drift.breaches} == {"dataDrift", "predictionDrift"}
    assert drift.scores[0]["feature"] == "a" and drift.scores[0]["drifted"]
    assert "dataDrift on a" in drift.reason
    drifted = [s for s in drift.scores if s["drifted"]]
    assert drift.scores[: len(drifted)] == drifted, "most drifted first"
    calm = dp.run_checks(_spec(), reference, {}, _counts(reference, 0.0, 1000))
    assert calm.verdict == "NoDrift" and not any(s["drifted"] for s in calm.scores)
    few = dp.run_checks(_spec(), reference, {}, _counts(reference, 0.8, 100))
    assert few.verdict == "NotEnoughData" and few.scores == []


def test_feature_selection_and_psi(reference) -> None:
    only_b = dp.run_checks(_spec(checks=[{"type": "dataDrift", "features": ["b"]}]), reference, {}, _counts(reference, 0.8, 1000))
    assert only_b.verdict == "NoDrift" and {s["feature"] for s in only_b.scores} == {"b"}
    psi = dp.run_checks(_spec(checks=[{"type": "psi", "threshold": 0.1}]), reference, {}, _counts(reference, 1.0, 2000))
    assert psi.verdict == "Drift" and psi.scores[0]["check"] == "psi" and psi.scores[0]["psi"] >= 0.1


def test_status_explains_every_feature_verdict(reference) -> None:
    drift = dp.run_checks(_spec(), reference, {}, _counts(reference, 0.8, 1000))
    a = next(s for s in drift.scores if s["check"] == "dataDrift" and s["feature"] == "a")
    assert a["reason"] == "drift" and a["effect"] >= a["floor"] == 0.04 and a["pValue"] <= 0.05
    assert a["rawEffect"] >= a["effect"] and a["rawPValue"] <= a["pValue"] and a["weight"] == 1.0
    calm = dp.run_checks(_spec(), reference, {}, _counts(reference, 0.0, 1000))
    reasons = {s["feature"]: s["reason"] for s in calm.scores if s["check"] == "dataDrift"}
    assert set(reasons) == {"a", "b", "c"} and set(reasons.values()) <= {"notSignificant", "belowFloor"}
    # The "no drift" message names the feature closest to drifting and why it did not.
    assert "closest:" in calm.message
    # Every score survives the API's status schema (no field the CRD would prune).
    DriftPolicyStatus.model_validate({"scores": drift.scores + calm.scores})


def test_sensitivity_presets_and_per_feature_settings(reference) -> None:
    counts = _counts(reference, 0.05, 20_000)
    verdict = {
        s: dp.run_checks(_spec(checks=[{"type": "dataDrift", "sensitivity": s}]), reference, {}, counts).verdict
        for s in ("strict", "default", "lenient")
    }
    # A 0.05-sd shift on 20,000 rows (about 0.06 against this 3,000-row reference): above the
    # strict and default floors (0.02, 0.04), below lenient's 0.08.
    assert verdict == {"strict": "Drift", "default": "Drift", "lenient": "NoDrift"}
    # An explicit floor overrides the preset, for one feature or for all.
    high = [{"type": "dataDrift", "perFeature": [{"feature": "a", "effect": 0.5}]}]
    r = dp.run_checks(_spec(checks=high), reference, {}, counts)
    a = next(s for s in r.scores if s["feature"] == "a")
    assert r.verdict == "NoDrift" and a["floor"] == 0.5 and a["reason"] == "belowFloor"
    # Weight 0 takes a feature out of the verdict; it is still scored.
    muted = [{"type": "dataDrift", "perFeature": [{"feature": "a", "weight": 0}]}]
    r = dp.run_checks(_spec(checks=muted), reference, {}, _counts(reference, 0.8, 1000))
    a = next(s for s in r.scores if s["feature"] == "a")
    assert r.verdict == "NoDrift" and a["reason"] == "excluded" and a["effect"] > 0.5


def test_new_categories_are_drift_of_their_own(reference) -> None:
    counts = _counts(reference, 0.0, 1000)
    counts["features"]["c"] = {**counts["features"]["c"], "w": 40}
    counts["rows"] += 40
    r = dp.run_checks(_spec(checks=[{"type": "dataDrift"}]), reference, {}, counts)
    c = next(s for s in r.scores if s["feature"] == "c")
    assert r.verdict == "Drift" and c["reason"] == "unseenLevels" and "c (new categories)" in r.reason
    assert c["unseenShare"] == pytest.approx(40 / 1040, abs=1e-6)
    counts["features"]["c"]["w"] = 1  # one row of a new category is reported, not drift
    r = dp.run_checks(_spec(checks=[{"type": "dataDrift"}]), reference, {}, counts)
    assert r.verdict == "NoDrift"


def test_performance_checks() -> None:
    counts = dp.empty_counters() | {"rows": 1000, "feedbackRows": 200, "feedbackErrors": 30, "feedbackSquaredError": 800.0}
    spec = _spec(checks=[{"type": "errorRate", "maximum": 0.1}])
    r = dp.run_checks(spec, None, None, counts)
    assert r.verdict == "Drift" and r.scores[0]["feature"] == "errorRate" and r.scores[0]["statistic"] == 0.15
    spec = _spec(checks=[{"type": "errorRate", "maxIncrease": 0.05}])
    assert dp.run_checks(spec, None, {"baseline": {"errorRate": 0.12}}, counts).verdict == "NoDrift"
    assert dp.run_checks(spec, None, {"baseline": {"errorRate": 0.05}}, counts).verdict == "Drift"
    assert dp.run_checks(spec, None, {}, counts).verdict == "Unavailable"
    rmse = _spec(checks=[{"type": "rmse", "maxIncrease": 0.5}])
    assert dp.run_checks(rmse, None, {"baseline": {"rmse": 1.4}}, counts).verdict == "Drift"  # sqrt(800/200) = 2 > 1.9
    assert dp.run_checks(rmse, None, {"baseline": {"rmse": 1.6}}, counts).verdict == "NoDrift"
    few = counts | {"feedbackRows": 20, "feedbackErrors": 10}
    assert dp.run_checks(_spec(checks=[{"type": "errorRate", "maximum": 0.1}]), None, None, few).verdict == "NotEnoughData"


def test_checks_without_reference_or_with_foreign_bins(reference) -> None:
    assert dp.run_checks(_spec(), None, None, _counts(reference, 0, 1000)).verdict == "Unavailable"
    bad = _counts(reference, 0, 1000)
    bad["features"]["a"] = bad["features"]["a"][:-3]
    r = dp.run_checks(_spec(checks=[{"type": "dataDrift"}]), reference, {}, bad)
    assert r.verdict == "Unavailable" and "do not fit" in r.message


def test_scores_are_bounded() -> None:
    rng = np.random.default_rng(3)
    cols = {f"f{i}": rng.normal(0, 1, 2000) for i in range(120)}
    ref = Reference.from_dict(build_reference(cols, set(), None, "regression", bins=8))
    cur = {k: rng.normal(0.5, 1, 600) for k in cols}
    wd = ref.count_window(cur).to_dict()
    counts = dp.counters_of(dp.Snapshot(rows=wd["rows"], features=wd["features"]))
    r = dp.run_checks(_spec(checks=[{"type": "dataDrift"}]), ref, {}, counts)
    assert r.verdict == "Drift" and len(r.scores) == dp.MAX_SCORES


# --------------------------------------------------------------------------- the reconcile loop, in memory


class MemoryCluster:
    """Enough of a cluster for the reconcile: get/list/create (409 = existing), status replaced whole, events."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[str, str, str]] = []
        self.creates = 0

    def put(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{obj['kind']}-{meta['name']}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", timestamp(T0 - timedelta(days=1)))
        self.objects[(obj["kind"], meta.get("namespace", "ml"), meta["name"])] = obj
        return obj

    async def get(self, res, namespace, name):
        found = self.objects.get((res.kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def list(self, res, namespace, labels=None, fields=None):
        out = []
        for (kind, ns, _), obj in sorted(self.objects.items()):
            have = obj["metadata"].get("labels") or {}
            if kind == res.kind and ns == namespace and all(have.get(k) == v for k, v in (labels or {}).items()):
                out.append(copy.deepcopy(obj))
        return out

    async def create(self, obj):
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return copy.deepcopy(self.objects[key])
        self.creates += 1
        return copy.deepcopy(self.put(obj))

    async def patch_status(self, res, namespace, name, status, resource_version=None):
        self.objects[(res.kind, namespace, name)]["status"] = json.loads(json.dumps(status))  # replaces, as the protocol says

    async def event(self, obj, type_, reason, message):
        self.events.append((obj["metadata"]["name"], reason, message))

    async def apply(self, obj):  # pragma: no cover - unused here
        return self.put(obj)


class FakeSensors:
    """Serving pods whose counters grow by a shifted (or not) batch per scrape."""

    def __init__(self, reference: Reference, shift: float, rows_per_scrape: int = 400) -> None:
        self.ref = reference
        self.shift = shift
        self.rows = rows_per_scrape
        self.totals: dict[str, dict] = {}
        self.seed = 10

    async def snapshot(self, pod: dict) -> dp.Snapshot | None:
        name = pod["metadata"]["name"]
        self.seed += 1
        batch = _counts(self.ref, self.shift, self.rows, self.seed)
        total = self.totals.get(name)
        self.totals[name] = batch if total is None else dp.add_counters(total, batch)
        t = self.totals[name]
        return dp.Snapshot(version="iris-v1-g1", rows=t["rows"], features=t["features"], predictions=t["predictions"],
                           prediction_rows=t["predictionRows"], started=1.0)

    async def reference(self, namespace, model, version):
        return self.ref.to_dict(), {"baseline": {"errorRate": 0.03}}


def _serving_pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ml", "labels": {"mlops.dev/model-deployment": "iris"}},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}


def _loop_world(reference: Reference, shift: float) -> tuple[MemoryCluster, FakeSensors]:
    cluster = MemoryCluster()
    pol = _policy(interval="60s", trigger={"consecutive": 2, "cooldown": "30m", "maxRetrainsPerDay": 4},
                  checks=[{"type": "dataDrift"}])
    pol.pop("status", None)
    cluster.put(pol)
    cluster.put(_md())
    cluster.put(_source())
    cluster.put(_serving_pod("iris-a"))
    cluster.put(_serving_pod("iris-b"))
    return cluster, FakeSensors(reference, shift)


def test_reconcile_loop_triggers_exactly_once(reference) -> None:
    cluster, sensors = _loop_world(reference, shift=0.8)

    async def scenario() -> list[dp.PolicyDecision | None]:
        out = []
        for minute in range(0, 8):
            # Each minute: a fresh reconcile, as after an operator restart, plus an extra event-driven one.
            for _ in range(2):
                now = T0 + timedelta(minutes=minute)
                out.append(await reconcile_drift_policy(cluster, "ml", "iris", None, lambda now=now: now, sensors))
        return out

    decisions = asyncio.run(scenario())
    assert decisions[0].status["verdict"] == "NotEnoughData", "a new window starts empty"
    assert decisions[1].check is None, "the second reconcile of the same minute runs no check"
    tjs = [k for k in cluster.objects if k[0] == "TrainingJob" and k[2] != "iris-v1"]
    assert tjs == [("TrainingJob", "ml", "iris-retrain-1")] and cluster.creates == 1
    status = cluster.objects[("DriftPolicy", "ml", "iris")]["status"]
    assert status["retrainCount"] == 1 and status["activeRetrain"] == "iris-retrain-1"
    assert status["verdict"] == "Drift" and status["scores"][0]["feature"] == "a"
    assert {p["name"] for p in status["window"]["pods"]} == {"iris-a", "iris-b"}
    reasons = [e[1] for e in cluster.events]
    assert reasons.count("RetrainTriggered") == 1 and "DriftDetected" in reasons
    tj = cluster.objects[("TrainingJob", "ml", "iris-retrain-1")]
    assert tj["metadata"]["labels"]["mlops.dev/parent-version"] == "iris-v1-g1"


def test_reconcile_without_drift_creates_nothing(reference) -> None:
    cluster, sensors = _loop_world(reference, shift=0.0)

    async def scenario() -> None:
        for minute in range(0, 6):
            now = T0 + timedelta(minutes=minute)
            await reconcile_drift_policy(cluster, "ml", "iris", None, lambda now=now: now, sensors)

    asyncio.run(scenario())
    status = cluster.objects[("DriftPolicy", "ml", "iris")]["status"]
    assert cluster.creates == 0 and status["verdict"] == "NoDrift" and status["consecutiveBreaches"] == 0
    assert status["samples"] > 500


def test_reconcile_without_pods_is_unavailable(reference) -> None:
    cluster, sensors = _loop_world(reference, shift=0.8)
    for name in ("iris-a", "iris-b"):
        del cluster.objects[("Pod", "ml", name)]
    d = asyncio.run(reconcile_drift_policy(cluster, "ml", "iris", None, lambda: T0, sensors))
    assert d.status["verdict"] == "Unavailable" and _cond(d.status, "Ready")["reason"] == "Unavailable"
    assert "no ready serving pod" in _cond(d.status, "Ready")["message"]


class FailingSensors(FakeSensors):
    """FakeSensors where some pods refuse the scrape, and the reference may fail, as real servers do."""

    def __init__(self, reference: Reference, shift: float, broken: set[str], reference_fails: bool = False) -> None:
        super().__init__(reference, shift)
        self.broken = broken
        self.reference_fails = reference_fails

    async def snapshot(self, pod: dict) -> dp.Snapshot | None:
        if pod["metadata"]["name"] in self.broken:
            raise ConnectionRefusedError(111, "Connection refused")
        return await super().snapshot(pod)

    async def reference(self, namespace, model, version):
        if self.reference_fails:
            raise OSError("HTTP 503 from the serving pod")
        return await super().reference(namespace, model, version)


def test_reconcile_reports_an_unreadable_pod_once_and_counts_every_check(reference, caplog) -> None:
    cluster, _ = _loop_world(reference, shift=0.0)
    sensors = FailingSensors(reference, 0.0, broken={"iris-b"})

    async def scenario() -> list:
        out = []
        for minute in range(4):
            now = T0 + timedelta(minutes=minute)
            out.append(await reconcile_drift_policy(cluster, "ml", "iris", None, lambda now=now: now, sensors))
        return out

    with caplog.at_level("DEBUG", logger="mlops_operator"):
        decisions = asyncio.run(scenario())
    assert [d.sensor_errors for d in decisions] == [1, 1, 1, 1]
    assert all(d.unreadable_pods == ["iris-b"] for d in decisions)
    status = cluster.objects[("DriftPolicy", "ml", "iris")]["status"]
    cond = _cond(status, "SensorsReadable")
    assert cond["reason"] == "SensorUnreadable" and "1 of 2 ready serving pods" in cond["message"] and "iris-b" in cond["message"]
    assert [e[1] for e in cluster.events].count("SensorUnreadable") == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "iris-b" in warnings[0].getMessage(), "one WARNING per transition, not per check"
    assert status["verdict"] in ("NoDrift", "Drift"), "the pod that answers still gives a verdict"


def test_reconcile_reports_an_unreadable_reference(reference) -> None:
    cluster, _ = _loop_world(reference, shift=0.0)
    sensors = FailingSensors(reference, 0.0, broken=set(), reference_fails=True)
    d = asyncio.run(reconcile_drift_policy(cluster, "ml", "iris", None, lambda: T0, sensors))
    ready = _cond(d.status, "Ready")
    assert d.check.verdict == "Unavailable" and ready["reason"] == "ReferenceUnavailable"
    assert "the reference profile of iris/iris-v1-g1 could not be read: HTTP 503 from the serving pod" in ready["message"]
    assert d.sensor_errors == 1 and d.unreadable_pods == []
    assert [e[1] for e in cluster.events] == ["ReferenceUnavailable"]


def test_a_rollout_in_progress_is_no_reference_failure(reference) -> None:
    """Pods still answering for the old version: the new version's reference is not needed yet, so not missing."""
    cluster, _ = _loop_world(reference, shift=0.0)
    sensors = FailingSensors(reference, 0.0, broken=set(), reference_fails=True)
    cluster.objects[("ModelDeployment", "ml", "iris")]["status"]["modelVersion"] = "iris-v2-g1"
    d = asyncio.run(reconcile_drift_policy(cluster, "ml", "iris", None, lambda: T0, sensors))
    assert d.check.verdict == "Unavailable" and "another version than iris-v2-g1" in d.check.message
    assert _cond(d.status, "Ready")["reason"] == "Unavailable" and _cond(d.status, "SensorsReadable")["status"] == "True"
    assert d.sensor_errors == 0 and cluster.events == []


def test_reconcile_with_no_pod_answering(reference) -> None:
    cluster, _ = _loop_world(reference, shift=0.0)
    sensors = FailingSensors(reference, 0.0, broken={"iris-a", "iris-b"})
    d = asyncio.run(reconcile_drift_policy(cluster, "ml", "iris", None, lambda: T0, sensors))
    ready = _cond(d.status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "SensorUnreadable"
    assert "2 of 2 ready serving pods could not be read: iris-a ([Errno 111] Connection refused)" in ready["message"]
    assert d.sensor_errors == 2 and d.unreadable_pods == ["iris-a", "iris-b"]


# --------------------------------------------------------------------------- the cluster side: scraping and metrics


def test_server_metrics_become_a_snapshot(reference) -> None:
    sensor = pytest.importorskip("mlops_operator.runtime.sensor")
    from mlops_operator import sensors as sensors_mod
    from mlops_operator.runtime.serving_metrics import ServingMetrics

    m = ServingMetrics(model="m", namespace="ml", version="v7", sha256="ab", task="classification", classes=["p", "q"],
                       reference=reference, drift_sensor=True, feature_names=["a", "b", "c"])
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 50), rng.normal(5, 2, 50)
    c = rng.choice(["x", "y", "new"], 50)
    rows = np.empty((50, 3), dtype=object)
    rows[:, 0], rows[:, 1], rows[:, 2] = a, b, c
    preds = np.where(a > 0, "p", "q")
    m.observe_batch(rows, preds, 1, 50, 0.001)
    m.observe_feedback(labels=10, correct=7, errors=3)
    snap = sensors_mod.to_snapshot(sensor.parse_metrics(m.render().decode()), "2026-01-01T00:00:00Z#0")
    expected = reference.count_window({"a": a, "b": b, "c": c}, preds).to_dict()
    assert snap.version == "v7" and snap.rows == 50 and snap.started == "2026-01-01T00:00:00Z#0"
    assert snap.features["a"] == expected["features"]["a"] and snap.features["b"] == expected["features"]["b"]
    assert {k: v for k, v in snap.features["c"].items() if v} == {k: v for k, v in expected["features"]["c"].items() if v}
    assert {k: v for k, v in snap.predictions.items() if v} == {k: v for k, v in expected["predictions"].items() if v}
    assert (snap.feedback_rows, snap.feedback_errors) == (10, 3)
    r = dp.run_checks(_spec(checks=[{"type": "dataDrift"}], window={"minSamples": 30}), reference, {}, dp.counters_of(snap))
    assert r.verdict in ("Drift", "NoDrift") and {s["feature"] for s in r.scores} == {"a", "b", "c"}


def test_pod_address_and_process_start() -> None:
    from mlops_operator import sensors as sensors_mod

    pod = {"spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 9000}]}]},
           "status": {"podIP": "10.1.2.3", "containerStatuses": [
               {"name": "server", "restartCount": 2, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}
    assert sensors_mod.pod_address(pod) == "10.1.2.3:9000"
    assert sensors_mod.process_start(pod) == "2026-01-01T00:00:00Z#2"
    assert sensors_mod.pod_address({"status": {"podIP": "fd00::1"}}, 8080) == "[fd00::1]:8080"
    assert sensors_mod.pod_address({"status": {}}) is None


def test_window_reads_pod_counters_a_status_of_the_previous_layout_kept() -> None:
    """Statuses written before the baselines left status carry each pod's counters; they still count."""
    a = _pod("a")
    w = _advance(None, [(a, _snap(100))])
    old = json.loads(json.dumps(w.state))
    old["pods"][0]["counters"] = w.baselines["uid-a"]
    w = _advance(old, [(a, _snap(130))], 1)
    assert w.counts["rows"] == 30 and "counters" not in w.state["pods"][0]
