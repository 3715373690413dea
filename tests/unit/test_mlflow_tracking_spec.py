"""spec.tracking.mlflow without a server: validation with field paths, the CRD, the trainer's
environment, the Tracked condition, and when the champion alias is due."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.api.tracking import SECRET_NAME, TRACKING_URI
from mlops_operator.api.validation import validate_object
from mlops_operator.controllers import trainingjob as ctl
from mlops_operator.controllers.settings import Settings
from mlops_operator.controllers.tracking import AliasMove, champion_condition, champion_move, record_tracking

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def tj() -> dict:
    obj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    obj["metadata"].update(uid="uid-1", generation=1, namespace="ml")
    obj["spec"]["tracking"] = {"mlflow": {"trackingUri": "https://mlflow.example.internal/prefix", "experiment": "iris",
                                          "credentialsSecret": "mlflow-creds"}}
    return obj


def _errors(obj: dict) -> list[str]:
    return [str(e) for e in validate_object(obj)]


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_mlflow_tracking_spec_is_valid_and_defaults(tj) -> None:
    assert _errors(tj) == []
    from mlops_operator.api.trainingjob import TrainingJob

    mlflow = TrainingJob.model_validate(tj).spec.tracking.mlflow
    assert mlflow.register_model is True
    del tj["spec"]["tracking"]["mlflow"]["experiment"]
    assert TrainingJob.model_validate(tj).spec.tracking.mlflow.experiment == "mlops-operator"


@pytest.mark.parametrize("uri", ["ftp://mlflow:5000", "file:///tmp/mlruns", "mlflow.example:5000", "databricks",
                                 "http://user:secret@mlflow:5000", "http://mlflow:5000/?token=abc", "http://mlflow:5000/#x", ""])
def test_mlflow_tracking_uri_must_be_http_without_credentials(tj, uri: str) -> None:
    tj["spec"]["tracking"]["mlflow"]["trackingUri"] = uri
    errors = _errors(tj)
    assert len(errors) == 1 and errors[0].startswith("spec.tracking.mlflow.trackingUri: must be an http:// or https:// URL"), errors
    assert not re.fullmatch(TRACKING_URI, uri)  # the API server's pattern refuses it too


@pytest.mark.parametrize("name", ["Mlflow", "-creds", "creds_1", "a" * 254])
def test_mlflow_credentials_secret_must_be_a_secret_name(tj, name: str) -> None:
    tj["spec"]["tracking"]["mlflow"]["credentialsSecret"] = name
    errors = _errors(tj)
    assert len(errors) == 1 and errors[0].startswith("spec.tracking.mlflow.credentialsSecret: "), errors


def test_mlflow_credentials_have_no_field_in_the_spec(tj) -> None:
    tj["spec"]["tracking"]["mlflow"]["password"] = "hunter2"
    assert _errors(tj) == ["spec.tracking.mlflow.password: unknown field"]


def test_mlflow_crd_carries_the_same_patterns() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "trainingjobs.mlops.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    mlflow = spec["properties"]["tracking"]["properties"]["mlflow"]
    assert mlflow["required"] == ["trackingUri"]
    assert mlflow["properties"]["trackingUri"]["pattern"] == TRACKING_URI
    assert mlflow["properties"]["credentialsSecret"]["pattern"] == SECRET_NAME


def test_mlflow_credentials_reach_the_trainer_by_reference_only(tj) -> None:
    job = ctl.build_job(tj, Settings())
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if e["name"].startswith("MLFLOW_")}
    assert refs == {k: {"name": "mlflow-creds", "key": k, "optional": True}
                    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")}
    assert all("value" not in e for e in env if e["name"].startswith("MLFLOW_"))
    del tj["spec"]["tracking"]["mlflow"]["credentialsSecret"]
    env = ctl.build_job(tj, Settings())["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"].startswith("MLFLOW_")]


def _decided(tj: dict, summary: dict, exit_code: int = 0):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "iris-v1-g1"},
           "status": {"conditions": [{"type": "Complete" if exit_code == 0 else "Failed", "status": "True"}]}}
    term = {"exitCode": exit_code, "finishedAt": "2026-01-02T03:10:00Z", "message": json.dumps(summary)}
    pod = {"status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": term}}]}}
    return ctl.decide(tj, job, [pod], Settings(), NOW)


def _finished(tj: dict, summary: dict, exit_code: int = 0) -> dict:
    return _decided(tj, summary, exit_code).status


SUMMARY = {"version": "iris-v1-g1", "uri": "file:///s/ml/iris/iris-v1-g1", "sha256": "ab" * 32, "metrics": {"accuracy": 0.97},
           "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97, "bound": 0.9}, "dataDigest": "cd" * 32}


def test_mlflow_logged_run_becomes_status_and_a_true_condition(tj) -> None:
    summary = {**SUMMARY, "tracking": {"mlflow": {"logged": True, "experimentId": "3", "runId": "r1",
                                                  "registeredModel": "iris", "registeredVersion": "7"}}}
    status = _finished(tj, summary)
    assert status["phase"] == "Succeeded"
    assert status["tracking"] == {"mlflow": {"experimentId": "3", "runId": "r1", "registeredModel": "iris", "registeredVersion": "7"}}
    tracked = _cond(status, "Tracked")
    assert tracked["status"] == "True" and tracked["reason"] == "Logged" and "iris version 7" in tracked["message"]


def test_mlflow_unreachable_never_fails_the_run(tj) -> None:
    summary = {**SUMMARY, "tracking": {"mlflow": {"logged": False, "reason": "Unreachable",
                                                  "message": "MLflow at http://x is unreachable: [Errno 111]"}}}
    status = _finished(tj, summary)
    assert status["phase"] == "Succeeded" and _cond(status, "Ready")["status"] == "True"
    tracked = _cond(status, "Tracked")
    assert (tracked["status"], tracked["reason"]) == ("False", "Unreachable")
    assert "the run itself is unaffected" in tracked["message"] and "tracking" not in status
    events = [(e.type, e.reason) for e in _decided(tj, summary).events]
    assert events == [("Normal", "Succeeded"), ("Warning", "NotTracked")]
    tj["status"] = status  # the next reconcile of the settled run: no event again
    assert _decided(tj, summary).events == []


def test_mlflow_silent_summary_is_unknown_and_no_tracking_no_condition(tj) -> None:
    assert _cond(_finished(tj, SUMMARY), "Tracked")["status"] == "Unknown"
    del tj["spec"]["tracking"]
    assert not [c for c in _finished(tj, SUMMARY)["conditions"] if c["type"] == "Tracked"]


def test_mlflow_gate_failure_reports_the_failed_run(tj) -> None:
    summary = {"reason": "GateFailed", "message": "accuracy 0.3 < 0.9", "gate": {"result": "Failed"},
               "tracking": {"mlflow": {"logged": True, "experimentId": "3", "runId": "r2"}}}
    status = _finished(tj, summary, exit_code=3)
    assert status["phase"] == "Failed" and _cond(status, "Tracked")["status"] == "True"
    assert status["tracking"]["mlflow"] == {"experimentId": "3", "runId": "r2"}


# -- the champion alias --------------------------------------------------------------------------------------


def _served_tj(tj: dict, registered: str | None = "7") -> dict:
    obj = copy.deepcopy(tj)
    obj["status"] = {"modelVersion": "iris-v1-g1", "phase": "Succeeded"}
    if registered:
        obj["status"]["tracking"] = {"mlflow": {"runId": "r1", "registeredModel": "iris", "registeredVersion": registered}}
    return obj


def _md_status(ready: str = "True", version: str = "iris-v1-g1") -> dict:
    return {"modelVersion": version, "conditions": [{"type": "Ready", "status": ready, "reason": "Ready", "message": ""}]}


def test_mlflow_champion_is_due_once_the_version_serves(tj) -> None:
    move = champion_move(_md_status(), [_served_tj(tj)])
    assert move == AliasMove("https://mlflow.example.internal/prefix", "mlflow-creds", "iris", "7", "iris-v1-g1")
    assert champion_move(_md_status(ready="False"), [_served_tj(tj)]) is None  # still rolling out
    assert champion_move(_md_status(), [_served_tj(tj, registered=None)]) is None  # never registered
    off = _served_tj(tj)
    off["spec"]["tracking"]["mlflow"]["registerModel"] = False
    assert champion_move(_md_status(), [off]) is None


def test_mlflow_champion_moved_once_then_again_for_a_new_version(tj) -> None:
    status = _md_status()
    move = champion_move(status, [_served_tj(tj)])
    events = champion_condition(status, move, None, NOW, 1)
    assert _cond(status, "Tracked")["reason"] == "ChampionMoved"
    assert [(e.type, e.reason) for e in events] == [("Normal", "ChampionMoved")] and "version 7" in events[0].message
    assert champion_move(status, [_served_tj(tj)]) is None  # done: no call on every reconcile
    newer = _served_tj(tj, registered="8")
    newer["status"]["modelVersion"] = "iris-v2-g1"
    status["modelVersion"] = "iris-v2-g1"
    assert champion_move(status, [_served_tj(tj), newer]).registered_version == "8"


def test_mlflow_failed_alias_move_is_retried_and_says_why(tj) -> None:
    status = _md_status()
    move = champion_move(status, [_served_tj(tj)])
    events = champion_condition(status, move, ("Unreachable", "MLflow at https://m is unreachable"), NOW, 1)
    assert [(e.type, e.reason) for e in events] == [("Warning", "Unreachable")]
    assert champion_condition(status, move, ("Unreachable", "MLflow at https://m is unreachable"), NOW, 1) == []  # not news
    tracked = _cond(status, "Tracked")
    assert (tracked["status"], tracked["reason"]) == ("False", "Unreachable") and "not moved to version 7" in tracked["message"]
    assert champion_move(status, [_served_tj(tj)]) == move  # still due


def test_mlflow_tracked_describes_one_generation(tj) -> None:
    summary = {**SUMMARY, "tracking": {"mlflow": {"logged": True, "experimentId": "3", "runId": "r1"}}}
    tj["status"] = _finished(tj, summary)
    tj["metadata"]["generation"] = 2  # a spec change: the next run has not been logged anywhere yet
    status = ctl.decide(tj, None, [], Settings(), NOW).status
    assert status["phase"] == "Pending" and "tracking" not in status
    assert not [c for c in status["conditions"] if c["type"] == "Tracked"]


def test_mlflow_tags_say_why_a_retrain_ran() -> None:
    """A scheduled or drift retrain's reason (the mlops.dev/retrain-trigger annotation, in lineage) becomes a tag."""
    from mlops_operator.runtime.tracking import run_tags

    metadata = {"model": "m", "version": "m-retrain-1-g1", "namespace": "ns",
                "lineage": {"parent": "m-v1-g1", "triggeredBy": "m", "trigger": "schedule"}}
    tags = run_tags(metadata, "m-retrain-1", "Passed")
    assert tags["mlops.trigger"] == "DriftPolicy/m" and tags["mlops.retrain_trigger"] == "schedule"
    assert "mlops.retrain_trigger" not in run_tags({**metadata, "lineage": {}}, "m-v1", "Passed")
