"""A DriftPolicy ranks drifted features by the serving version's permutation importance."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np

from mlops_operator.api.driftpolicy import DriftPolicyStatus
from mlops_operator.controllers import driftpolicy as dp
from mlops_operator.controllers.driftpolicy.importance import rank_by_importance
from mlops_operator.controllers.reconcile.driftpolicy import reconcile_drift_policy
from tests.unit.test_driftpolicy_controller import T0, FakeSensors, _loop_world, _spec, reference  # noqa: F401 - a fixture

IMPORTANCE = {"metric": "accuracy", "features": [
    {"feature": "a", "importance": 0.31, "std": 0.02},
    {"feature": "c", "importance": 0.04, "std": 0.01},
    {"feature": "b", "importance": 0.002, "std": 0.001},
]}


def _both_shifted(ref, n: int = 1500, seed: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    cols = {"a": rng.normal(0.8, 1, n), "b": rng.normal(7, 2, n), "c": rng.choice(["x", "y", "z"], n)}
    wd = ref.count_window(cols, np.where(cols["a"] > 0, "p", "q")).to_dict()
    return dp.counters_of(dp.Snapshot(version="v1", rows=wd["rows"], features=wd["features"], predictions=wd["predictions"],
                                      prediction_rows=wd["prediction_rows"]))


def test_importance_ranks_the_drifted_features_in_the_check_message(reference) -> None:
    result = dp.run_checks(_spec(checks=[{"type": "dataDrift"}]), reference, {}, _both_shifted(reference))
    assert {s["feature"] for s in result.scores if s["drifted"]} == {"a", "b"}
    rank_by_importance(result, {"importance": IMPORTANCE})
    assert result.message.endswith("drifted features by importance to the model: a (0.31), b (0.002, unimportant)")
    assert {s["feature"]: s["importance"] for s in result.scores} == {"a": 0.31, "b": 0.002, "c": 0.04}


def test_importance_absent_from_an_older_version_changes_nothing(reference) -> None:
    result = dp.run_checks(_spec(checks=[{"type": "dataDrift"}]), reference, {}, _both_shifted(reference))
    before = (result.message, [dict(s) for s in result.scores])
    rank_by_importance(result, {"baseline": {}})
    assert (result.message, result.scores) == before


class ImportanceSensors(FakeSensors):
    async def reference(self, namespace, model, version):
        return self.ref.to_dict(), {"baseline": {"errorRate": 0.03}, "importance": IMPORTANCE}


def test_importance_reaches_the_policy_status_and_its_drift_event(reference) -> None:
    cluster, _ = _loop_world(reference, shift=0.8)
    sensors = ImportanceSensors(reference, shift=0.8)

    async def scenario() -> None:
        for minute in range(3):
            now = T0 + timedelta(minutes=minute)
            await reconcile_drift_policy(cluster, "ml", "iris", None, lambda now=now: now, sensors)

    asyncio.run(scenario())
    status = cluster.objects[("DriftPolicy", "ml", "iris")]["status"]
    DriftPolicyStatus.model_validate(status)
    assert status["verdict"] == "Drift"
    assert next(s for s in status["scores"] if s["feature"] == "a")["importance"] == 0.31
    drift_events = [m for _, reason, m in cluster.events if reason == "DriftDetected"]
    assert drift_events and "drifted features by importance to the model: a (0.31)" in drift_events[0]
