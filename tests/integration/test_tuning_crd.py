"""spec.tuning and the explained status on the real API server: kept as written, refused with the path, shown by kubectl."""

from __future__ import annotations

import asyncio

import pytest

from mlops_operator.controllers.cluster import TRAINING_JOBS
from mlops_operator.k8s.client import KubeCluster
from tests.integration.test_driftpolicy_schedule import _server_apply
from tests.integration.test_driftpolicy import _example

pytestmark = pytest.mark.integration

TUNING = {"strategy": "random", "space": {"max_depth": {"int": [2, 12]}, "criterion": ["gini", "entropy"]},
          "cv": 3, "budget": {"candidates": 8}}


def _tuned(**tuning: object) -> dict:
    tj = _example("trainingjob.yaml")
    tj["spec"]["tuning"] = {**TUNING, **tuning}
    return tj


@pytest.mark.parametrize("tuning,field", [
    ({"strategy": "halving", "budget": {"seconds": 30}}, "spec.tuning.budget.seconds"),
    ({"scoring": "f1_macro"}, "spec.tuning.scoring"),
    ({"strategy": "bayes"}, "spec.tuning.strategy"),
    ({"cv": 1}, "spec.tuning.cv"),
])
def test_tuning_the_api_server_refuses_names_the_field(crds, namespace, tuning, field) -> None:
    proc = _server_apply(crds, namespace, _tuned(**tuning))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and " is invalid" in output and field in output, output


def test_tuning_spec_and_status_survive_the_structural_schema_and_show_in_wide_output(crds, namespace) -> None:
    assert _server_apply(crds, namespace, _tuned()).returncode == 0
    cluster = KubeCluster(crds.api_client())
    stored = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))
    assert stored["spec"]["tuning"]["space"] == TUNING["space"], "the space's free-form values are kept"
    assert stored["spec"]["tuning"]["seed"] == 0 and stored["spec"]["tuning"]["top"] == 5, "defaults filled in"
    status = {
        "phase": "Succeeded", "observedGeneration": 1, "modelVersion": "iris-v1-g1",
        "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97},
        "lineage": {"dataDigest": "sha256:" + "ab" * 32, "parent": "iris-v0-g1", "triggeredBy": "iris", "trigger": "schedule"},
        "tuning": {"strategy": "random", "scoring": "accuracy", "bestParams": {"max_depth": 4, "criterion": "entropy"},
                   "bestScore": 0.955, "defaultScore": 0.94, "candidates": 8, "seconds": 1.2, "nJobs": 2,
                   "top": [{"params": {"max_depth": 4, "criterion": "entropy"}, "score": 0.955, "std": 0.01}]},
        "importance": [{"feature": "petal width (cm)", "importance": 0.3, "std": 0.02}],
    }
    asyncio.run(cluster.patch_status(TRAINING_JOBS, namespace, "iris-v1", status))
    got = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))["status"]
    assert got["tuning"] == status["tuning"] and got["importance"] == status["importance"]
    assert got["lineage"]["trigger"] == "schedule"
    wide = crds.kubectl("get", "tj", "iris-v1", "-n", namespace, "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    assert header[header.index("AGE") + 1:header.index("AGE") + 6] == ["PARENT", "TRIGGER", "DATA", "PARAMS", "CV-SCORE"]
    assert "iris-v0-g1" in wide[1] and "schedule" in wide[1] and '"max_depth":4' in wide[1] and "0.955" in wide[1]
