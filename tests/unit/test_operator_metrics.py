"""The operator's per-object series: what an alert on 'ModelDeployment not Ready' or 'TrainingJob failed' reads."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from mlops_operator.k8s import metrics
from mlops_operator.controllers.reconcile import Result
from mlops_operator.k8s.queue import WorkQueue


def value(series: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(series, labels)


def _status(phase: str | None, ready: bool, stalled: bool = False) -> dict:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}, {"type": "Stalled", "status": "True" if stalled else "False"}]
    return {**({"phase": phase} if phase else {}), "conditions": conds}


def test_ready_stalled_and_one_phase_series_per_object() -> None:
    key = {"kind": "TrainingJob", "namespace": "ns-m1", "name": "iris"}
    metrics.observe_status("TrainingJob", "ns-m1", "iris", _status("Running", False))
    assert value("mlops_operator_resource_ready", **key) == 0
    assert value("mlops_operator_resource_phase", **key, phase="Running") == 1

    metrics.observe_status("TrainingJob", "ns-m1", "iris", _status("Failed", False, stalled=True))
    assert value("mlops_operator_resource_phase", **key, phase="Failed") == 1
    assert value("mlops_operator_resource_phase", **key, phase="Running") is None, "the old phase's series is removed"
    assert value("mlops_operator_resource_stalled", **key) == 1


def test_a_deleted_object_leaves_no_series() -> None:
    key = {"kind": "ModelDeployment", "namespace": "ns-m2", "name": "iris"}
    metrics.observe_status("ModelDeployment", "ns-m2", "iris", _status("Serving", True))
    assert value("mlops_operator_resource_ready", **key) == 1
    metrics.observe_status("ModelDeployment", "ns-m2", "iris", None)
    for series in ("mlops_operator_resource_ready", "mlops_operator_resource_stalled"):
        assert value(series, **key) is None
    assert value("mlops_operator_resource_phase", **key, phase="Serving") is None


def test_the_queue_exports_what_each_reconcile_wrote_and_counts_failures() -> None:
    before_ok = value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="ok") or 0
    before_err = value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="error") or 0
    calls = []

    async def reconcile(namespace: str, name: str) -> Result:
        calls.append(name)
        if name == "broken" and calls.count("broken") == 1:
            raise RuntimeError("API server unreachable")
        return Result(_status(None, True))

    async def scenario() -> None:
        queue = WorkQueue({"DriftPolicy": reconcile}, base_delay=0.01)
        queue.start()
        queue.add(("DriftPolicy", "ns-m3", "p"))
        queue.add(("DriftPolicy", "ns-m3", "broken"))
        assert await queue.wait_idle(5)
        await queue.stop()

    asyncio.run(scenario())
    assert value("mlops_operator_resource_ready", kind="DriftPolicy", namespace="ns-m3", name="p") == 1
    assert value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="ok") == before_ok + 2
    assert value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="error") == before_err + 1
    assert (value("mlops_operator_reconcile_duration_seconds_count", kind="DriftPolicy") or 0) >= 3


def test_drift_metrics_follow_the_decisions() -> None:
    from tests.unit.test_driftpolicy_controller import World

    w = World(trigger={"consecutive": 1})
    d = w.step(0, "Drift")
    metrics.record_drift("ml", "iris-metrics", d)
    get = REGISTRY.get_sample_value
    assert get("mlops_operator_drift_score", {"namespace": "ml", "policy": "iris-metrics", "check": "dataDrift", "feature": "petal_length"}) == 0.5
    assert get("mlops_operator_drift_breaches_total", {"namespace": "ml", "policy": "iris-metrics"}) == 1
    assert get("mlops_operator_drift_retrains_total", {"namespace": "ml", "policy": "iris-metrics", "result": "Started"}) == 1
    metrics.forget_drift("ml", "iris-metrics")
    assert get("mlops_operator_drift_score", {"namespace": "ml", "policy": "iris-metrics", "check": "dataDrift", "feature": "petal_length"}) is None


def test_unreadable_sensors_are_counted_per_policy_for_the_alerts() -> None:
    from mlops_operator.controllers.driftpolicy import PolicyDecision, unavailable

    labels = {"namespace": "ml", "policy": "iris-sensors"}
    before = value("mlops_operator_sensor_errors_total", **labels) or 0
    check = unavailable("none of the 3 serving pods answered", scraped=3,
                        unreadable={"iris-a": "timed out", "iris-b": "connection refused", "iris-c": "HTTP 404"})
    metrics.record_drift("ml", "iris-sensors", PolicyDecision(status={}, check=check))
    assert value("mlops_operator_sensor_errors_total", **labels) == before + 3
    metrics.record_drift("ml", "iris-sensors", PolicyDecision(status={}, check=None))  # no check ran: nothing counted
    assert value("mlops_operator_sensor_errors_total", **labels) == before + 3


def test_drift_metrics_explain_each_feature() -> None:
    """p-value, drifted flag and effect floor per feature, from a check on a real reference; gone with the policy."""
    from mlops_operator.controllers.driftpolicy import PolicyDecision, run_checks
    from tests.unit.test_driftpolicy_controller import _counts, _spec, reference as reference_fixture

    ref = reference_fixture.__wrapped__()  # the module fixture's body: a real reference profile
    check = run_checks(_spec(), ref, {}, _counts(ref, 0.8, 1000))
    metrics.record_drift("ml", "iris-explain", PolicyDecision(status={}, check=check))
    get = REGISTRY.get_sample_value
    a = {"namespace": "ml", "policy": "iris-explain", "check": "dataDrift", "feature": "a"}
    b = dict(a, feature="b")
    assert get("mlops_operator_drift_feature_drifted", a) == 1.0 and get("mlops_operator_drift_feature_drifted", b) == 0.0
    assert get("mlops_operator_drift_pvalue", a) <= 0.05 < get("mlops_operator_drift_pvalue", b)
    assert get("mlops_operator_drift_effect_floor", a) == 0.04
    metrics.forget_drift("ml", "iris-explain")
    assert get("mlops_operator_drift_pvalue", a) is None and get("mlops_operator_drift_feature_drifted", b) is None
