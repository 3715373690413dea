"""The champion alias from the operator on the real API server, with the TrainingJob's own Secret,
against a real MLflow server running its basic-auth app.

A ModelDeployment that serves a version its TrainingJob registered in MLflow
moves the alias ``champion`` there, reading the credentials from the Secret
named in ``spec.tracking.mlflow.credentialsSecret``; a missing Secret, or one
the operator may not read, is the ModelDeployment's ``Tracked=False`` and
never stops it serving.  The password appears in no object a user can read.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from mlops_operator.controllers.cluster import MODEL_DEPLOYMENTS, TRAINING_JOBS
from mlops_operator.controllers.reconcile.modeldeployment import reconcile_model_deployment
from mlops_operator.controllers.settings import Settings
from mlops_operator.controllers.tracking import AliasMove
from mlops_operator.k8s.client import KubeCluster
from mlops_operator.k8s.tracking import alias_mover
from mlops_operator.runtime.tracking import MlflowClient, log_version
from tests.envtest.kubelet import make_serving_pods_ready
from tests.integration.test_modeldeployment import _apply, _example
from tests.mlflowserver import ADMIN_USER, running_mlflow
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
PASSWORD = f"pw-{uuid.uuid4().hex}"
SETTINGS = Settings(image="example.invalid/mlops-operator:test")
SECRET = "mlflow-creds"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    with running_mlflow(tmp_path_factory.mktemp("mlflow-champion"), admin_password=PASSWORD) as server:
        yield server


def _register(server, version: str) -> str:
    """The run and registered version the trainer would have made for ``version``; returns MLflow's version number."""
    client = MlflowClient(server.url, {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD})
    meta = {"model": "iris", "version": version, "namespace": "ns", "metrics": {"accuracy": 0.97}, "gate": {"result": "Passed"}}
    return str(log_version(client, "champion-test", meta, {"metadata.json": b"{}"}, version, register=True,
                           log=lambda *a, **k: None).registered_version)


def _cond(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def test_mlflow_champion_moves_with_the_secret_of_the_namespace(crds, namespace, auth_server) -> None:
    control_plane = crds
    cluster = KubeCluster(control_plane.api_client())
    registered = _register(auth_server, "iris-v1-g1")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": namespace},
              "stringData": {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}}
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
    tj = _example("trainingjob.yaml")
    tj["spec"]["tracking"] = {"mlflow": {"trackingUri": auth_server.url, "experiment": "champion-test", "credentialsSecret": SECRET}}
    _apply(control_plane, namespace, tj)
    status = {"phase": "Succeeded", "observedGeneration": 1, "modelVersion": "iris-v1-g1", "completionTime": "2026-01-01T00:00:00Z",
              "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97, "bound": 0.9}, "metrics": {"accuracy": 0.97},
              "artifact": {"uri": f"store://{namespace}/iris/iris-v1-g1", "sha256": "a1" * 32},
              "tracking": {"mlflow": {"runId": "r", "registeredModel": "iris", "registeredVersion": registered}}}
    asyncio.run(cluster.patch_status(TRAINING_JOBS, namespace, "iris-v1", status))
    md = _example("modeldeployment.yaml")
    _apply(control_plane, namespace, md)
    mover = alias_mover(cluster)

    def reconcile() -> dict:
        asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", SETTINGS, alias_mover=mover))
        return asyncio.run(cluster.get(MODEL_DEPLOYMENTS, namespace, "iris"))

    first = reconcile()
    assert _cond(first, "Ready")["status"] == "False" and not _cond(first, "Tracked")  # not serving yet: nothing moves
    assert auth_server.alias("iris", "champion") is None
    make_serving_pods_ready(cluster, namespace, "iris", 2)
    obj = wait_until(lambda: (lambda o: o if _cond(o, "Tracked") else None)(reconcile()), what="the champion alias move")
    tracked = _cond(obj, "Tracked")
    assert tracked["status"] == "True" and tracked["reason"] == "ChampionMoved", tracked
    assert _cond(obj, "Ready")["status"] == "True"
    assert auth_server.alias("iris", "champion")["version"] == registered
    said = control_plane.kubectl("get", "trainingjobs,modeldeployments,deployments,pods,events", "-n", namespace, "-o", "json").stdout
    assert PASSWORD not in said


def test_mlflow_champion_secret_missing_or_forbidden_is_a_clear_reason(crds, namespace, auth_server) -> None:
    control_plane = crds
    move = AliasMove(auth_server.url, "absent", "iris", "1", "iris-v1-g1")
    reason, message = asyncio.run(alias_mover(KubeCluster(control_plane.api_client()))(namespace, move))
    assert reason == "SecretNotFound" and f"Secret {namespace}/absent" in message
    # An operator whose RBAC grants no Secret: a service account with no role at all.
    client = control_plane.api_client()
    client.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:nobody")
    reason, message = asyncio.run(alias_mover(KubeCluster(client))(namespace, AliasMove(auth_server.url, SECRET, "iris", "1", "v")))
    assert reason == "SecretForbidden" and "grant it get on that Secret" in message
