"""The trainer against a real MLflow server with its basic-auth app: credentials from the environment
(what a pod gets from the Secret), a wrong password, and a retried run.

The trainer runs in-process (``trainer.main``) so its stderr log and its
termination summary can be searched for the password, which must be in neither.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from mlops_operator.runtime import trainer
from tests.mlflowserver import ADMIN_USER, running_mlflow

PASSWORD = f"pw-{uuid.uuid4().hex}"
EXPERIMENT = "credentials"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    with running_mlflow(tmp_path_factory.mktemp("mlflow-auth"), admin_password=PASSWORD) as server:
        yield server


def _spec(tmp: Path, uri: str, name: str) -> Path:
    doc = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": "team-a"},
           "spec": {"model": "wine", "data": {"source": "sklearn://wine", "target": "cultivar"},
                    "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 2000}},
                    "qualityGate": {"metric": "accuracy", "minimum": 0.8},
                    "tracking": {"mlflow": {"trackingUri": uri, "experiment": EXPERIMENT, "credentialsSecret": "mlflow"}}}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _train(tmp: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    term = tmp / f"termination-{uuid.uuid4().hex[:6]}.log"
    code = trainer.main(["--spec", str(spec), "--store", str(tmp / "store"), "--termination-log", str(term)])
    return code, json.loads(term.read_text()), capsys.readouterr().err + term.read_text()


def test_mlflow_credentials_from_the_environment_and_a_retried_run(auth_server, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    spec = _spec(tmp_path, auth_server.url, "wine-a")
    code, summary, logs = _train(tmp_path, spec, capsys)
    assert code == 0
    mlflow = summary["tracking"]["mlflow"]
    assert mlflow["logged"] is True and mlflow["registeredModel"] == "wine" and mlflow["registeredVersion"] == "1", mlflow
    run = auth_server.api("GET", "runs/get", run_id=mlflow["runId"])["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlops.training_job"] == "team-a/wine-a"
    assert auth_server.alias("wine", "challenger")["version"] == "1"
    assert PASSWORD not in logs

    # A retried pod: the version exists, so the trainer finds its run and registered version instead of adding more.
    code, again, logs = _train(tmp_path, spec, capsys)
    assert code == 0 and again["tracking"]["mlflow"]["runId"] == mlflow["runId"]
    assert [r["info"]["run_id"] for r in auth_server.runs(EXPERIMENT)] == [mlflow["runId"]]
    assert [v["version"] for v in auth_server.versions("wine")] == ["1"]
    assert PASSWORD not in logs


def test_mlflow_wrong_password_is_unauthorized_and_the_run_still_succeeds(auth_server, tmp_path, monkeypatch, capsys) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", wrong)
    code, summary, logs = _train(tmp_path, _spec(tmp_path, auth_server.url, "wine-b"), capsys)
    assert code == 0 and summary["version"] == "wine-b-g1" and summary["sha256"]
    assert (tmp_path / "store" / "team-a" / "wine" / "wine-b-g1" / "model.skops").is_file()
    mlflow = summary["tracking"]["mlflow"]
    assert mlflow["logged"] is False and mlflow["reason"] == "Unauthorized", mlflow
    assert "MLFLOW_TRACKING_" in mlflow["message"]  # it says where to look
    assert wrong not in logs and PASSWORD not in logs
    assert not [r for r in auth_server.runs(EXPERIMENT) if r["info"]["run_name"] == "wine-b-g1"]
