"""Object-store credentials from a Secret on the real API server, checked against a real S3 server (SeaweedFS).

A wrong key must show on the object (Ready=False with the store's reason, a
Warning event) before any pod exists, so nothing crash-loops; the key itself
must appear nowhere: not in specs, status, events or the operator's log.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from mlops_operator.controllers.cluster import DEPLOYMENTS, JOBS, TRAINING_JOBS
from mlops_operator.controllers.reconcile.modeldeployment import reconcile_model_deployment
from mlops_operator.controllers.reconcile.trainingjob import reconcile_training_job
from mlops_operator.k8s.client import KubeCluster
from mlops_operator.k8s.config import settings_from_env
from mlops_operator.k8s.store_access import store_access
from tests.envtest.fixtures import operator_running
from tests.integration.test_modeldeployment import _apply, _example, _training_job
from tests.pss import restricted_violations
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
SECRET = "mlops-store"
WRONG = "not-the-secret-key-but-close-0000"


@pytest.fixture()
def s3_settings(s3_server, monkeypatch):
    """The operator's settings as the chart would set them for an s3:// store (no key of its own)."""
    bucket = s3_server.new_bucket("creds")
    env = {"MLOPS_STORE_URI": f"s3://{bucket}/models", "MLOPS_FEEDBACK_URI": f"s3://{bucket}/feedback",
           "MLOPS_STORE_SECRET": SECRET, "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_REGION": "us-east-1",
           "MLOPS_S3_ADDRESSING_STYLE": "path", "MLOPS_IMAGE": "example.invalid/mlops-operator:test"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    return settings_from_env()


def _secret(control_plane, namespace: str, access_key: str, secret_key: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": namespace},
                "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}}
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _ready(obj: dict | None) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def _everything_said(control_plane, namespace: str) -> str:
    """Every object a user can read in the namespace except the Secret itself, as text."""
    kinds = "trainingjobs,modeldeployments,jobs,deployments,pods,events"
    return control_plane.kubectl("get", kinds, "-n", namespace, "-o", "json").stdout


def test_s3_wrong_key_is_ready_false_with_an_event_and_no_job(control_plane, namespace, s3_server, s3_settings, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _secret(control_plane, namespace, s3_server.access_key, WRONG)
    cluster = KubeCluster(control_plane.api_client())
    with operator_running(control_plane, namespace):
        _apply(control_plane, namespace, _example("trainingjob.yaml"))
        def denied() -> dict | None:
            cond = _ready(asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1")))
            return cond if cond.get("reason") == "StoreAccessDenied" else None

        ready = wait_until(denied, what="iris-v1 Ready=False with reason StoreAccessDenied")
        events = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert ready["status"] == "False" and "SignatureDoesNotMatch" in ready["message"]
    assert f"Secret {namespace}/{SECRET}" in ready["message"] and f"s3://{s3_settings.store_uri[5:]}" in ready["message"]
    denied = [e for e in events if e["reason"] == "StoreAccessDenied" and e["involvedObject"]["name"] == "iris-v1"]
    assert len(denied) == 1 and denied[0]["type"] == "Warning"  # one event for the transition, not one per retry
    assert asyncio.run(cluster.list(JOBS, namespace)) == []  # no pod, so nothing to crash-loop
    said = _everything_said(control_plane, namespace) + caplog.text
    assert WRONG not in said and s3_server.secret_key not in said

    # The user fixes the Secret: the next look (a fresh check, as after the cache's 30 s) creates the Job.
    _secret(control_plane, namespace, s3_server.access_key, s3_server.secret_key)
    check = store_access(cluster, s3_settings)
    status = asyncio.run(reconcile_training_job(cluster, namespace, "iris-v1", s3_settings, store_check=check)).status
    assert status["phase"] == "Pending" and _ready({"status": status})["reason"] == "JobCreated"
    (job,) = asyncio.run(cluster.list(JOBS, namespace))
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][container["args"].index("--store") + 1] == s3_settings.store_uri
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"name": SECRET, "key": "AWS_SECRET_ACCESS_KEY"}
    assert restricted_violations(pod) == []
    assert s3_server.secret_key not in json.dumps(job)


def test_s3_missing_secret_is_named(control_plane, namespace, s3_settings) -> None:
    cluster = KubeCluster(control_plane.api_client())
    _apply(control_plane, namespace, _example("trainingjob.yaml"))
    result = asyncio.run(reconcile_training_job(cluster, namespace, "iris-v1", s3_settings,
                                                store_check=store_access(cluster, s3_settings)))
    ready = _ready({"status": result.status})
    assert ready["reason"] == "StoreSecretMissing" and f"Secret {namespace}/{SECRET} does not exist" in ready["message"]
    assert result.requeue_after and asyncio.run(cluster.list(JOBS, namespace)) == []


def test_s3_model_deployment_waits_for_a_working_key_then_serves_from_the_bucket(control_plane, namespace, s3_server, s3_settings) -> None:
    cluster = KubeCluster(control_plane.api_client())
    _training_job(control_plane, cluster, namespace, "iris-v1", sha="a1" * 32, done="2026-01-01T00:00:00Z")
    _apply(control_plane, namespace, _example("modeldeployment.yaml"))
    _secret(control_plane, namespace, s3_server.access_key, WRONG)
    result = asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", s3_settings,
                                                    store_check=store_access(cluster, s3_settings)))
    assert _ready({"status": result.status})["reason"] == "StoreAccessDenied"
    assert asyncio.run(cluster.get(DEPLOYMENTS, namespace, "iris")) is None

    _secret(control_plane, namespace, s3_server.access_key, s3_server.secret_key)
    asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", s3_settings, store_check=store_access(cluster, s3_settings)))
    dep = asyncio.run(cluster.get(DEPLOYMENTS, namespace, "iris"))
    pod = dep["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MLOPS_MODEL_CACHE"]["value"] == "/var/lib/mlops/models" and env["AWS_ENDPOINT_URL"]["value"] == s3_server.endpoint
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "models"}  # no claim: the store and feedback are the bucket
    assert "--feedback-dir" in pod["containers"][0]["args"] and s3_settings.feedback_uri in pod["containers"][0]["args"]
    assert restricted_violations(pod) == []

    # The key goes bad again and a newer version passes: the rollout waits, the serving version stays.
    _secret(control_plane, namespace, s3_server.access_key, WRONG)
    _training_job(control_plane, cluster, namespace, "iris-v2", sha="b2" * 32, done="2026-01-02T00:00:00Z")
    result = asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", s3_settings,
                                                    store_check=store_access(cluster, s3_settings)))
    ready = _ready({"status": result.status})
    assert ready["reason"] == "StoreAccessDenied" and ready["message"].endswith("the serving version stays")
    dep = asyncio.run(cluster.get(DEPLOYMENTS, namespace, "iris"))
    assert dep["spec"]["template"]["metadata"]["annotations"]["mlops.dev/version"] == "iris-v1-g1"
