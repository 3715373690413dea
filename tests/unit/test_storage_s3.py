"""Where pods find the store: s3:// as environment only (Secret by reference), pvc:// as a claim with a sub-path."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers import modeldeployment, trainingjob
from mlops_operator.controllers.settings import Settings
from mlops_operator.controllers.storage import blocked_by_store, pod_storage
from mlops_operator.k8s.config import settings_from_env
from tests.pss import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
S3 = Settings(store_uri="s3://models-bucket/prod", feedback_uri="s3://models-bucket/feedback", store_secret="mlops-store",
              store_ca_config_map="store-ca", s3_endpoint="https://minio.example:9000", s3_region="eu-west-1",
              s3_addressing_style="path")


def _tj(include_feedback: bool = False) -> dict:
    tj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    tj["metadata"].update(namespace="team-a", generation=1, uid="u0")
    tj["spec"]["data"]["includeFeedback"] = include_feedback
    return tj


def _md() -> dict:
    md = yaml.safe_load((ROOT / "examples" / "iris" / "modeldeployment.yaml").read_text())
    md["metadata"].update(namespace="team-a", generation=1, uid="u1")
    return md


def test_s3_training_job_gets_no_claim_and_the_secret_only_by_reference() -> None:
    job = trainingjob.build_job(_tj(include_feedback=True), S3)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--store") + 1] == "s3://models-bucket/prod"
    assert args[args.index("--feedback") + 1] == "s3://models-bucket/feedback"
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "spec", "store-ca"}
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://minio.example:9000" and env["AWS_REGION"]["value"] == "eu-west-1"
    assert env["AWS_CA_BUNDLE"]["value"] == "/etc/mlops/store-ca/ca.crt"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "mlops-store", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert not any("value" in e for e in container["env"] if e["name"].startswith("AWS_") and "KEY" in e["name"])
    ca_mount = next(m for m in container["volumeMounts"] if m["name"] == "store-ca")
    assert ca_mount == {"name": "store-ca", "mountPath": "/etc/mlops/store-ca", "readOnly": True}
    assert restricted_violations(pod) == []


def test_s3_model_deployment_serves_from_its_own_copy() -> None:
    dep = modeldeployment.build_deployment(_md(), "iris-v1-g1", "a1" * 32, S3)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "store-ca", "models"}
    assert next(v for v in pod["volumes"] if v["name"] == "models")["emptyDir"] == {"sizeLimit": "2Gi"}
    env = {e["name"]: e for e in container["env"]}
    assert env["MLOPS_MODEL_CACHE"]["value"] == "/var/lib/mlops/models"
    args = container["args"]
    assert args[args.index("--store") + 1] == "s3://models-bucket/prod"
    assert args[args.index("--feedback-dir") + 1] == "s3://models-bucket/feedback"
    assert restricted_violations(pod) == []


def test_s3_without_a_secret_uses_the_pod_identity() -> None:
    storage = pod_storage(Settings(store_uri="s3://b-1/p"), store_read_only=True, feedback=False, feedback_read_only=False)
    assert storage.store_arg == "s3://b-1/p" and storage.volumes == [] and storage.env == []


def test_pvc_uri_mounts_the_claim_with_its_path_as_sub_path() -> None:
    settings = Settings(store_uri="pvc://shared/models", feedback_uri="pvc://shared/feedback")
    job = trainingjob.build_job(_tj(include_feedback=True), settings)
    pod = job["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["store"] == {"name": "store", "mountPath": settings.store_path, "subPath": "models"}
    assert mounts["feedback"] == {"name": "feedback", "mountPath": settings.feedback_path, "subPath": "feedback", "readOnly": True}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"store": "shared", "feedback": "shared"}


def test_s3_settings_from_the_chart_environment() -> None:
    s = settings_from_env({"MLOPS_STORE_URI": "s3://b-1/models", "MLOPS_FEEDBACK_URI": "s3://b-1/feedback",
                           "MLOPS_STORE_SECRET": "creds", "MLOPS_STORE_CA_CONFIGMAP": "ca", "AWS_ENDPOINT_URL": "http://minio:9000",
                           "MLOPS_S3_ADDRESSING_STYLE": "path"})
    assert (s.store_uri, s.feedback_uri, s.store_secret, s.store_ca_config_map, s.s3_endpoint, s.s3_addressing_style) == (
        "s3://b-1/models", "s3://b-1/feedback", "creds", "ca", "http://minio:9000", "path")
    assert settings_from_env({}).store_uri == ""


def test_s3_blocked_status_posts_one_event_per_transition() -> None:
    tj = _tj()
    status, events = blocked_by_store(tj, "StoreAccessDenied", "s3://b/p: access denied", NOW, phase="Pending")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (ready["status"], ready["reason"], stalled["status"]) == ("False", "StoreAccessDenied", "False")
    assert [e.reason for e in events] == ["StoreAccessDenied"]
    again, events = blocked_by_store({**tj, "status": status}, "StoreAccessDenied", "s3://b/p: access denied", NOW)
    assert events == [] and again["conditions"] == status["conditions"]
    assert json.dumps(status).count("access denied") == 2  # Ready and Reconciling say it; nothing else is added


def test_s3_is_opt_in_and_the_default_store_stays_the_claim() -> None:
    """Without a URI, today's claim, mounted at the store path, exactly as before."""
    job = trainingjob.build_job(_tj(), Settings())
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["store"]["persistentVolumeClaim"]["claimName"] == "mlops-model-store"


def test_s3_local_settings_from_the_command_line(tmp_path: Path) -> None:
    from mlops_operator.local.main import local_settings

    settings, store_dir = local_settings("s3://b-1/models", "s3://b-1/feedback")
    assert (settings.store_uri, settings.feedback_uri, store_dir) == ("s3://b-1/models", "s3://b-1/feedback", None)
    settings, store_dir = local_settings((tmp_path / "models").as_uri(), "")
    assert settings.store_uri == "" and store_dir == tmp_path / "models"


@pytest.mark.parametrize("store, feedback, problem", [
    ("pvc://claim/x", "", "exist only in a cluster"), ("", "/tmp/x", "--feedback-store"), ("s3://Bad_Bucket/x", "", "not a valid bucket"),
])
def test_s3_local_settings_refuse_what_cannot_work_locally(store: str, feedback: str, problem: str) -> None:
    from mlops_operator.local.main import local_settings

    with pytest.raises(ValueError, match=problem):
        local_settings(store, feedback)
