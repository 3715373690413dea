"""Scheduled retraining against a real kube-apiserver: validation at the server, the retrain, status, downtime catch-up.

The clock is injected (a reconcile is what a freshly started operator runs:
a new client, nothing remembered), so "three Mondays of operator downtime"
takes no time. Finished retrains are simulated by writing TrainingJob status
through the status subresource (there is no trainer pod here).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers.cluster import DRIFT_POLICIES, TRAINING_JOBS
from mlops_operator.controllers.conditions import timestamp
from mlops_operator.controllers.reconcile.driftpolicy import reconcile_drift_policy
from mlops_operator.k8s.client import KubeCluster
from tests.integration.test_driftpolicy import _apply, _events, _example, _policy_world, _retrains, _tj_status

pytestmark = pytest.mark.integration

WEEKLY = {"cron": "0 3 * * 1", "timeZone": "Europe/Berlin"}


def _scheduled_policy(schedule: dict, **spec: object) -> dict:
    policy = _example("driftpolicy.yaml")
    policy["spec"]["schedule"] = schedule
    policy["spec"].update(spec)
    return policy


def _server_apply(control_plane, namespace: str, obj: dict):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(yaml.safe_dump(obj))
        return control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path), check=False)


@pytest.mark.parametrize("schedule,spec,field", [
    ({"cron": "0 3 * *"}, {}, "spec.schedule.cron"),
    ({"cron": "@fortnightly"}, {}, "spec.schedule.cron"),
    ({"cron": "@weekly"}, {"action": "alert"}, "spec.schedule"),
])
def test_schedule_the_api_server_refuses_names_the_field(crds, namespace, schedule, spec, field) -> None:
    proc = _server_apply(crds, namespace, _scheduled_policy(schedule, **spec))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and " is invalid" in output and field in output, output


def test_schedule_a_bad_field_the_server_lets_through_stalls_the_policy_with_the_path(crds, namespace) -> None:
    _policy_world(crds, namespace)
    assert _server_apply(crds, namespace, _scheduled_policy({"cron": "0 25 * * 1"})).returncode == 0
    d = asyncio.run(reconcile_drift_policy(KubeCluster(crds.api_client()), namespace, "iris", None,
                                           lambda: datetime.now(timezone.utc), None))
    stored = asyncio.run(KubeCluster(crds.api_client()).get(DRIFT_POLICIES, namespace, "iris"))["status"]
    ready = next(c for c in stored["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.schedule.cron: bad hour field" in ready["message"]
    assert d.retrain is None and "InvalidSpec" in _events(crds, namespace)


def test_schedule_retrains_at_its_time_and_once_after_downtime(crds, namespace) -> None:
    control_plane = crds
    cluster = _policy_world(control_plane, namespace)
    _apply(control_plane, namespace, _scheduled_policy(WEEKLY))
    monday = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)  # Monday 03:00 in Berlin

    def reconcile(at: datetime):
        return asyncio.run(reconcile_drift_policy(KubeCluster(control_plane.api_client()), namespace, "iris", None,
                                                  lambda: at, None))

    assert reconcile(monday - timedelta(days=1)).retrain is None
    stored = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))
    assert stored["status"]["schedule"]["nextScheduleTime"] == timestamp(monday), "kept by the structural schema"
    wide = control_plane.kubectl("get", "dp", "iris", "-n", namespace, "-o", "wide").stdout
    assert "NEXT-RETRAIN" in wide and timestamp(monday) in wide, wide

    for at in (monday, monday + timedelta(seconds=5)):  # the second is a restarted operator in the same minute
        reconcile(at)
    retrains = _retrains(cluster, namespace)
    assert [t["metadata"]["name"] for t in retrains] == ["iris-retrain-1"]
    assert retrains[0]["metadata"]["annotations"]["mlops.dev/retrain-trigger"] == "schedule"
    assert retrains[0]["spec"]["data"]["includeFeedback"] is True
    status = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))["status"]
    assert status["retrains"][0]["trigger"] == "schedule" and status["activeRetrain"] == "iris-retrain-1"
    assert status["schedule"]["lastScheduleTime"] == timestamp(monday)
    assert status["schedule"]["nextScheduleTime"] == timestamp(monday + timedelta(days=7))
    _tj_status(cluster, namespace, "iris-retrain-1", passed=False, value=0.9, done=timestamp(monday + timedelta(hours=1)))

    back = monday + timedelta(days=21, hours=6)  # the operator was down for three Mondays
    for at in (back, back + timedelta(minutes=1), back + timedelta(hours=2)):
        reconcile(at)
    names = sorted(t["metadata"]["name"] for t in _retrains(cluster, namespace))
    assert names == ["iris-retrain-1", "iris-retrain-2"], "three missed times run once"
    status = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))["status"]
    assert status["schedule"]["lastScheduleTime"] == timestamp(monday + timedelta(days=21))
    assert "run once for 2 earlier time(s)" in status["schedule"]["lastResult"]
    reasons = _events(control_plane, namespace)
    assert reasons.count("RetrainTriggered") == 2
    stored = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))
    assert stored["spec"]["schedule"] == WEEKLY, "the operator never writes the spec"
    assert json.loads(json.dumps(stored["status"]["retrains"]))[0]["name"] == "iris-retrain-2"
    assert asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-retrain-2"))["metadata"]["ownerReferences"][0]["kind"] == "DriftPolicy"
