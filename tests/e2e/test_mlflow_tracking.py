"""MLflow tracking in local mode against a real MLflow tracking server (SQLite backend, local artifacts).

train → the run in MLflow (params, metrics, lineage tags, the artifact) and the
version registered with the alias ``challenger`` → the ModelDeployment serves
it → the alias ``champion`` points at it; a second version that passes takes
``challenger`` and, once it serves, ``champion``.  A run whose gate fails is
logged FAILED and registered nowhere.  With MLflow unreachable the run still
succeeds and its ``Tracked`` condition says why it was not logged.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from pathlib import Path
from typing import Any

import pytest

from mlops_operator.controllers.cluster import MODEL_DEPLOYMENTS, TRAINING_JOBS
from mlops_operator.controllers.settings import Settings
from mlops_operator.local.manager import LocalManager
from tests.e2e.conftest import step_until as _until

EXPERIMENT = "iris-e2e"


def _tj(name: str, uri: str, params: dict[str, Any], minimum: float = 0.8) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"model": "iris", "data": {"source": "sklearn://iris", "target": "species",
                                               "validation": {"fraction": 0.25, "stratify": True, "seed": 0}},
                     "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": params},
                     "qualityGate": {"metric": "accuracy", "minimum": minimum},
                     "tracking": {"mlflow": {"trackingUri": uri, "experiment": EXPERIMENT}}}}


MD = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
      "spec": {"model": "iris", "version": "latest", "replicas": 1}}


def _condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


@pytest.fixture()
def no_mlflow_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)


def test_mlflow_local_loop_train_register_promote_champion(mlflow_server, no_mlflow_credentials, tmp_path: Path) -> None:
    v1 = _tj("iris-v1", mlflow_server.url, {"max_iter": 500, "C": 1.0})
    v2 = _tj("iris-v2", mlflow_server.url, {"max_iter": 500, "C": 0.5})
    failing = _tj("iris-bad", mlflow_server.url, {"max_iter": 500, "C": 0.0001}, minimum=0.99)

    async def run() -> dict[str, Any]:
        manager = LocalManager(tmp_path / "local", Settings(), tick=0.2)
        get = manager.cluster.get_now
        try:
            manager.apply([v1, MD])
            await _until(manager, "iris-v1 serves", lambda: _condition(get(MODEL_DEPLOYMENTS, "default", "iris"), "Ready")
                         .get("status") == "True")
            seen: dict[str, Any] = {"v1": copy.deepcopy(get(TRAINING_JOBS, "default", "iris-v1"))}
            await _until(manager, "champion moved to iris-v1",
                         lambda: _condition(get(MODEL_DEPLOYMENTS, "default", "iris"), "Tracked").get("reason") == "ChampionMoved")
            seen["champion1"] = mlflow_server.alias("iris", "champion")
            manager.apply([failing])
            await _until(manager, "iris-bad fails its gate",
                         lambda: (get(TRAINING_JOBS, "default", "iris-bad").get("status") or {}).get("phase") == "Failed")
            seen["bad"] = copy.deepcopy(get(TRAINING_JOBS, "default", "iris-bad"))
            seen["champion_after_bad"] = mlflow_server.alias("iris", "champion")
            manager.apply([v2])
            await _until(manager, "iris-v2 serves", lambda: (get(MODEL_DEPLOYMENTS, "default", "iris").get("status") or {})
                         .get("modelVersion") == "iris-v2-g1" and _condition(get(MODEL_DEPLOYMENTS, "default", "iris"),
                                                                            "Ready").get("status") == "True")
            await _until(manager, "champion moved to iris-v2",
                         lambda: "iris-v2-g1" in _condition(get(MODEL_DEPLOYMENTS, "default", "iris"), "Tracked").get("message", ""))
            seen["v2"] = copy.deepcopy(get(TRAINING_JOBS, "default", "iris-v2"))
            seen["md"] = copy.deepcopy(get(MODEL_DEPLOYMENTS, "default", "iris"))
            return seen
        finally:
            await manager.shutdown()

    seen = asyncio.run(run())

    # The first run: Tracked, with its MLflow ids in status.
    tracked = _condition(seen["v1"], "Tracked")
    assert tracked["status"] == "True" and tracked["reason"] == "Logged", tracked
    ids = seen["v1"]["status"]["tracking"]["mlflow"]
    assert ids["registeredModel"] == "iris" and ids["registeredVersion"] == "1"
    runs = {r["info"]["run_id"]: r for r in mlflow_server.runs(EXPERIMENT)}
    run = runs[ids["runId"]]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "iris-v1-g1"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["C"] == "1.0" and params["max_iter"] == "500"
    assert params["estimator"] == "sklearn.linear_model.LogisticRegression" and params["validation.fraction"] == "0.25"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["accuracy"] == pytest.approx(seen["v1"]["status"]["metrics"]["accuracy"])
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlops.model"] == "iris" and tags["mlops.version"] == "iris-v1-g1"
    assert tags["mlops.training_job"] == "default/iris-v1" and tags["mlops.trigger"] == "manual"
    assert tags["mlops.data_digest"] == seen["v1"]["status"]["lineage"]["dataDigest"]
    assert tags["mlops.sha256"] == seen["v1"]["status"]["artifact"]["sha256"]
    assert sorted(mlflow_server.artifacts(ids["runId"], "model")) == ["model/metadata.json", "model/model.skops"]

    # Promotion: champion points at the version that serves.
    assert seen["champion1"]["version"] == "1"

    # The failed gate: logged FAILED with its metrics, registered nowhere, champion untouched.
    bad = _condition(seen["bad"], "Tracked")
    assert bad["status"] == "True", bad
    bad_run = runs.get(seen["bad"]["status"]["tracking"]["mlflow"]["runId"]) or next(
        r for r in mlflow_server.runs(EXPERIMENT) if r["info"]["run_id"] == seen["bad"]["status"]["tracking"]["mlflow"]["runId"])
    assert bad_run["info"]["status"] == "FAILED"
    assert {t["key"]: t["value"] for t in bad_run["data"]["tags"]}["mlops.gate"] == "Failed"
    assert "accuracy" in {m["key"] for m in bad_run["data"]["metrics"]}
    assert seen["champion_after_bad"]["version"] == "1"

    # The second version: registered as 2, challenger on it, and champion once it served.
    versions = mlflow_server.versions("iris")
    assert [v["version"] for v in versions] == ["1", "2"]
    assert versions[1]["run_id"] == seen["v2"]["status"]["tracking"]["mlflow"]["runId"]
    assert mlflow_server.alias("iris", "challenger")["version"] == "2"
    assert mlflow_server.alias("iris", "champion")["version"] == "2"
    md_tracked = _condition(seen["md"], "Tracked")
    assert md_tracked["status"] == "True" and "version 2 (iris-v2-g1)" in md_tracked["message"]


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_unreachable_training_still_succeeds_with_a_clear_condition(no_mlflow_credentials, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    tj = _tj("iris-down", uri, {"max_iter": 500})

    async def run() -> dict:
        manager = LocalManager(tmp_path / "local", Settings(), tick=0.2)
        get = manager.cluster.get_now
        try:
            manager.apply([tj])
            await _until(manager, "the run ends", lambda: (get(TRAINING_JOBS, "default", "iris-down").get("status") or {})
                         .get("phase") in ("Succeeded", "Failed"))
            return copy.deepcopy(get(TRAINING_JOBS, "default", "iris-down"))
        finally:
            await manager.shutdown()

    obj = asyncio.run(run())
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["artifact"]["sha256"]
    assert _condition(obj, "Ready")["status"] == "True"
    tracked = _condition(obj, "Tracked")
    assert tracked["status"] == "False" and tracked["reason"] == "Unreachable", tracked
    assert uri in tracked["message"] and "the run itself is unaffected" in tracked["message"]
    assert "tracking" not in status
