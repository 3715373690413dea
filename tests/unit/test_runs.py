"""``mlops-operator runs``: the table from versions' metadata and (when given) the cluster's objects."""

from __future__ import annotations

import json
from pathlib import Path

from mlops_operator.cli import main as cli
from mlops_operator.runs import render, runs_table
from mlops_operator.runtime.trainer import train
from tests.unit.test_trainer import manifest, quiet


def _meta(version: str, at: str, parent: str | None = None, policy: str | None = None, trigger: str | None = None,
          accuracy: float = 0.9) -> dict:
    lineage = {"trainingJob": version.rsplit("-g", 1)[0], "parent": parent, "triggeredBy": policy}
    if trigger:
        lineage["trigger"] = trigger
    return {"model": "iris", "version": version, "trainedAt": at, "lineage": lineage, "dataDigest": "ab" * 32,
            "params": {"n_estimators": 10}, "metrics": {"accuracy": accuracy},
            "gate": {"result": "Passed", "metric": "accuracy", "value": accuracy}}


VERSIONS = [
    _meta("iris-v1-g1", "2026-01-01T00:00:00Z"),
    _meta("iris-retrain-1-g1", "2026-01-02T00:00:00Z", "iris-v1-g1", "iris", "dataDrift"),
    _meta("iris-retrain-2-g1", "2026-01-09T00:00:00Z", "iris-retrain-1-g1", "iris", "schedule"),
]


def _md(serving: str, history: list[tuple[str, str]], **status) -> dict:
    return {"kind": "ModelDeployment", "metadata": {"name": "iris"}, "spec": {"model": "iris"},
            "status": {"modelVersion": serving, "history": [{"version": v, "reason": r, "time": "t"} for v, r in history], **status}}


def _failed_retrain() -> dict:
    return {"kind": "TrainingJob", "metadata": {"name": "iris-retrain-3", "labels": {"mlops.dev/triggered-by": "iris",
                                                                                   "mlops.dev/parent-version": "iris-retrain-1-g1"},
                                                "annotations": {"mlops.dev/retrain-trigger": "errorRate"}},
            "spec": {"model": "iris", "estimator": {"params": {"n_estimators": 10}}},
            "status": {"phase": "Failed", "modelVersion": "iris-retrain-3-g1", "completionTime": "2026-01-10T00:00:00Z",
                       "gate": {"result": "Failed", "metric": "accuracy", "value": 0.8, "championVersion": "iris-retrain-1-g1",
                                "championValue": 0.9}, "metrics": {"accuracy": 0.8}}}


def test_runs_from_the_store_alone_know_a_parent_served() -> None:
    rows = runs_table(VERSIONS)
    assert [(r["version"], r["state"], r["trigger"]) for r in rows] == [
        ("iris-v1-g1", "served", ""), ("iris-retrain-1-g1", "served", "iris: dataDrift"),
        ("iris-retrain-2-g1", "not served", "iris: schedule")]
    assert [r["promoted"] for r in rows] == [False, True, False]


def test_runs_with_the_cluster_say_serving_rolled_back_and_gate_failed() -> None:
    md = _md("iris-retrain-1-g1", [("iris-retrain-1-g1", "RolledBack"), ("iris-retrain-2-g1", "NewVersion"),
                                   ("iris-retrain-1-g1", "NewVersion"), ("iris-v1-g1", "Initial")])
    rows = {r["version"]: r for r in runs_table(VERSIONS, [_failed_retrain()], [md], "iris")}
    assert rows["iris-retrain-2-g1"]["state"] == "rolled back"
    assert rows["iris-retrain-1-g1"]["state"] == "serving" and rows["iris-v1-g1"]["state"] == "served"
    failed = rows["iris-retrain-3-g1"]
    assert failed["state"] == "gate failed" and not failed["stored"] and failed["trigger"] == "iris: errorRate"
    assert failed["gate"]["championVersion"] == "iris-retrain-1-g1" and failed["parent"] == "iris-retrain-1-g1"
    # A rollout's own record of a rejected challenger counts too.
    rows = {r["version"]: r for r in runs_table(VERSIONS, [], [_md("iris-retrain-1-g1", [], rejectedVersions=["iris-retrain-2-g1"])])}
    assert rows["iris-retrain-2-g1"]["state"] == "rolled back"
    text = render(list(rows.values())).splitlines()
    assert text[0].split()[0] == "VERSION" and any("rolled back" in line for line in text)


def test_runs_command_reads_a_store_and_prints_json(tmp_path: Path, capsys) -> None:
    train(manifest(), tmp_path / "store", log=quiet)
    assert cli(["runs", "iris", "--store", str(tmp_path / "store"), "--namespace", "team-a", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == ["iris-v1-g1"] and rows[0]["gate"]["result"] == "Skipped"
    assert rows[0]["metrics"]["accuracy"] > 0.8 and rows[0]["params"] == {"n_estimators": 20, "random_state": 0}
    assert cli(["runs", "wine", "--store", str(tmp_path / "store"), "--namespace", "team-a"]) == 1
    assert "no runs of model 'wine'" in capsys.readouterr().err
