"""The embedded runner, end to end: a tuned first run, drifted traffic, a retrain that takes over, and then
``mlops-operator runs`` showing the lineage, and the DriftPolicy ranking the drifted features by importance.

Real trainer and server processes, real HTTP on 127.0.0.1; the drift is
iris rows with their petals lengthened.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlops_operator.cli import main as cli
from mlops_operator.controllers.cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, TRAINING_JOBS
from mlops_operator.local.manager import LocalManager
from tests.e2e.conftest import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]
NS = "default"


def _objects() -> list[dict]:
    tj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    tj["spec"]["estimator"]["params"] = {"n_estimators": 10, "random_state": 0}
    tj["spec"]["tuning"] = {"strategy": "grid", "space": {"max_depth": [1, 3]}, "cv": 3, "nJobs": 1}
    md = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
          "spec": {"model": "iris", "replicas": 1}}
    dp = {"apiVersion": "mlops.dev/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "iris"},
          "spec": {"deployment": "iris", "interval": "5s", "window": {"minSamples": 200},
                   "checks": [{"type": "dataDrift"}], "trigger": {"consecutive": 1, "cooldown": "30m"},
                   "retrain": {"from": "iris-v1", "includeFeedback": False},
                   "promotion": {"mode": "auto", "mustBeat": "none"}}}
    return [tj, md, dp]


def _predict(base: str, rows: list[list[float]]) -> None:
    body = json.dumps({"instances": rows}).encode()
    req = urllib.request.Request(f"{base}/v1/models/iris:predict", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as resp:
        assert resp.status == 200


def _status(manager: LocalManager, res, name: str) -> dict:
    return (manager.cluster.get_now(res, NS, name) or {}).get("status") or {}


async def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_runs_table_and_importance_after_a_drift_retrain_in_local_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_iris

    root = tmp_path / "root"
    manager = LocalManager(root, tick=0.5)
    manager.apply(_objects(), NS)
    rng = np.random.default_rng(0)
    data = load_iris().data

    async def scenario() -> dict:
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        try:
            await _until(lambda: _status(manager, MODEL_DEPLOYMENTS, "iris").get("readyReplicas"), 180, "iris-v1 to serve")
            base = await _until(lambda: manager.executor.service_address(NS, "iris"), 30, "the service address")
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and _status(manager, MODEL_DEPLOYMENTS, "iris").get("modelVersion") != "iris-retrain-1-g1":
                rows = data[rng.integers(0, len(data), 100)] + rng.normal(0, 0.05, (100, 4))
                rows[:, 2] += 2.0  # petal length
                await asyncio.to_thread(_predict, base, np.round(rows, 3).tolist())
                await asyncio.sleep(0.5)
            await _until(lambda: _status(manager, MODEL_DEPLOYMENTS, "iris").get("readyReplicas")
                         and _status(manager, MODEL_DEPLOYMENTS, "iris").get("modelVersion") == "iris-retrain-1-g1",
                         60, "the retrain to serve")
            return _status(manager, DRIFT_POLICIES, "iris")
        finally:
            stop.set()
            await runner

    policy = asyncio.run(scenario())
    assert processes_mentioning(str(root)) == [], "the runner left a process behind"

    # The policy ranked the drifted feature by its importance to the serving model.
    assert policy["retrains"][-1]["trigger"] == "dataDrift"
    petal = next(s for s in policy["scores"] if s["feature"] == "petal length (cm)")
    assert petal["drifted"] and petal["importance"] > 0
    drifting = next(c for c in policy["conditions"] if c["type"] == "Drifting")
    assert "drifted features by importance to the model: petal length (cm)" in drifting["message"]
    first = manager.cluster.get_now(TRAINING_JOBS, NS, "iris-v1")["status"]
    assert first["tuning"]["bestParams"] == {"max_depth": 3} and first["importance"][0]["feature"].startswith("petal")

    assert cli(["runs", "iris", "--root", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == ["iris-v1-g1", "iris-retrain-1-g1"]
    v1, retrain = rows
    assert v1["parent"] is None and v1["trigger"] == "" and v1["state"] == "served" and not v1["promoted"]
    assert v1["params"] == {"n_estimators": 10, "random_state": 0, "max_depth": 3} and v1["tuned"] == ["max_depth"]
    assert retrain["parent"] == "iris-v1-g1" and retrain["trigger"] == "iris: dataDrift"
    assert retrain["state"] == "serving" and retrain["promoted"] is True
    assert retrain["gate"]["result"] == "Passed" and retrain["metrics"]["accuracy"] > 0.8
    assert len(v1["dataDigest"]) >= 12 and retrain["dataDigest"]

    assert cli(["runs", "iris", "--root", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["VERSION", "PARENT", "TRIGGER", "DATA", "PARAMS", "METRIC", "GATE", "STATE"]
    assert table[1].startswith("iris-v1-g1") and "max_depth*=3" in table[1] and table[1].endswith("served")
    assert table[2].startswith("iris-retrain-1-g1") and table[2].endswith("serving (promoted)")
