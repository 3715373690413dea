"""The whole loop on s3:// in local mode, against a real S3 server (SeaweedFS): train → store → serve → feedback → retrain.

The local manager runs the operator's own controllers; trainers and servers are
real processes that reach the store only through S3 (their credentials and
endpoint come from the environment, as a pod's come from the Secret).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import obstore
import pytest
from sklearn.datasets import load_iris

from mlops_operator.controllers.cluster import MODEL_DEPLOYMENTS, TRAINING_JOBS
from mlops_operator.controllers.settings import Settings
from mlops_operator.local.manager import LocalManager
from tests.e2e.conftest import step_until as _until

TJ = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "iris-v1"},
      "spec": {"model": "iris", "data": {"source": "sklearn://iris", "target": "species",
                                         "validation": {"fraction": 0.25, "stratify": True, "seed": 0}},
               "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
               "qualityGate": {"metric": "accuracy", "minimum": 0.8}}}
MD = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
      "spec": {"model": "iris", "version": "latest", "replicas": 1}}


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLOPS_FEEDBACK_FLUSH_SECONDS", "0.5")
    return s3_server


def _ready(obj: dict | None) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - 127.0.0.1
        return json.loads(r.read())


def test_s3_loop_train_serve_feedback_retrain_in_local_mode(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.new_bucket("loop")
    settings = Settings(store_uri=f"s3://{bucket}/models", feedback_uri=f"s3://{bucket}/feedback")
    iris = load_iris()
    rows, labels = iris.data[::5].tolist(), [str(iris.target_names[t]) for t in iris.target[::5]]  # 30 labelled rows

    async def run() -> tuple[dict, dict]:
        manager = LocalManager(tmp_path / "local", settings, tick=0.2)
        get = manager.cluster.get_now
        try:
            manager.apply([TJ, MD])
            await _until(manager, "ModelDeployment iris Ready", lambda: _ready(get(MODEL_DEPLOYMENTS, "default", "iris")).get("status") == "True")
            url = manager.executor.service_address("default", "iris")
            first = await asyncio.to_thread(_post, f"{url}/v1/models/iris:predict", {"instances": rows})
            feedback = [{"id": i, "label": y} for i, y in zip(first["ids"], labels)]
            answer = await asyncio.to_thread(_post, f"{url}/v1/models/iris/feedback", {"feedback": feedback})
            assert answer["accepted"] == len(rows)
            await _until(manager, "the feedback object", lambda: s3_env.keys(bucket, "feedback/default/iris/"), 60)

            retrain = json.loads(json.dumps(TJ))
            retrain["metadata"]["name"] = "iris-v2"
            retrain["spec"]["data"]["includeFeedback"] = True
            manager.apply([retrain])
            await _until(manager, "iris serving iris-v2-g1", lambda: (
                (get(MODEL_DEPLOYMENTS, "default", "iris") or {}).get("status", {}).get("modelVersion") == "iris-v2-g1"
                and _ready(get(MODEL_DEPLOYMENTS, "default", "iris")).get("status") == "True"))
            v2 = await asyncio.to_thread(_post, f"{url}/v2/models/iris/infer",
                                         {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": rows[0]}]})
            return get(TRAINING_JOBS, "default", "iris-v2"), v2
        finally:
            await manager.shutdown()

    trained, answer = asyncio.run(run())
    assert answer["model_version"] == "iris-v2-g1" and answer["outputs"][0]["data"] == [labels[0]]
    assert trained["status"]["artifact"]["uri"] == f"s3://{bucket}/models/default/iris/iris-v2-g1/"
    keys = s3_env.keys(bucket)
    assert {"models/default/iris/iris-v1-g1/metadata.json", "models/default/iris/iris-v2-g1/metadata.json"} <= set(keys)
    feedback_keys = [k for k in keys if k.startswith("feedback/")]
    assert feedback_keys and all("/date=" in k and "/hour=" in k and k.endswith(".csv") for k in feedback_keys)
    meta = json.loads(bytes(obstore.get(s3_env.store(bucket), "models/default/iris/iris-v2-g1/metadata.json").bytes()))
    assert meta["rows"]["feedback"] == len(rows)  # the retrain read every labelled row back from the bucket
    assert not any((tmp_path / "local" / "store").rglob("*.json"))  # nothing went to a local store
