"""The operator's per-object series: what an alert on 'ModelDeployment not Ready' or 'TrainingJob failed' reads."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from mlops_operator.k8s import metrics
from mlops_operator.k8s.runner import Runner


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


def test_the_runner_exports_what_each_reconcile_wrote_and_counts_failures() -> None:
    runner = Runner(max_attempts=1)
    before_ok = value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="ok") or 0
    before_err = value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="error") or 0

    async def reconcile(namespace: str, name: str) -> dict:
        return _status(None, True)

    async def broken(namespace: str, name: str) -> dict:
        raise RuntimeError("API server unreachable")

    asyncio.run(runner.run("DriftPolicy", reconcile, "ns-m3", "p"))
    asyncio.run(runner.run("DriftPolicy", broken, "ns-m3", "p"))
    assert value("mlops_operator_resource_ready", kind="DriftPolicy", namespace="ns-m3", name="p") == 1
    assert value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="ok") == before_ok + 1
    assert value("mlops_operator_reconciles_total", kind="DriftPolicy", outcome="error") == before_err + 1
    assert (value("mlops_operator_reconcile_duration_seconds_count", kind="DriftPolicy") or 0) >= 2
