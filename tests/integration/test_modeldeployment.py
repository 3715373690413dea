"""ModelDeployment against a real kube-apiserver with the deployment, replicaset and garbage-collector controllers.

Reconciles are driven by calling the reconcile function directly (deterministic);
finished training runs are simulated by writing TrainingJob status through the
status subresource, and ready serving pods by writing Pod status (there is no
kubelet).
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers.cluster import Refused
from mlops_operator.controllers.cluster import DEPLOYMENTS, HPAS, MODEL_DEPLOYMENTS, PDBS, SERVICES, TRAINING_JOBS
from mlops_operator.controllers import modeldeployment
from mlops_operator.controllers.reconcile.modeldeployment import observe, reconcile_model_deployment
from mlops_operator.controllers.settings import Settings
from mlops_operator.k8s.client import KubeCluster
from tests.envtest.fixtures import admission_refusal, operator_running
from tests.envtest.kubelet import make_serving_pods_ready
from tests.pss import restricted_violations
from tests.waiting import wait_until as _wait

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(image="example.invalid/mlops-operator:test")
SHA1, SHA2 = "a1" * 32, "b2" * 32


def _example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / "iris" / name).read_text())


def _apply(control_plane, namespace: str, obj: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))


def _training_job(control_plane, cluster: KubeCluster, namespace: str, name: str, *, sha: str, done: str,
                  passed: bool = True) -> None:
    """A TrainingJob of the iris lineage whose run has finished (the status the TrainingJob controller would write)."""
    tj = _example("trainingjob.yaml")
    tj["metadata"]["name"] = name
    _apply(control_plane, namespace, tj)
    version = f"{name}-g1"
    gate = {"result": "Passed" if passed else "Failed", "metric": "accuracy", "value": 0.97 if passed else 0.5, "bound": 0.9}
    status = {"phase": "Succeeded" if passed else "Failed", "observedGeneration": 1, "modelVersion": version,
              "completionTime": done, "gate": gate, "metrics": {"accuracy": gate["value"]}}
    if passed:
        status["artifact"] = {"uri": f"store://{namespace}/iris/{version}", "sha256": sha}
    asyncio.run(cluster.patch_status(TRAINING_JOBS, namespace, name, status))


def _reconcile(cluster: KubeCluster, namespace: str, name: str = "iris") -> dict:
    return asyncio.run(reconcile_model_deployment(cluster, namespace, name, SETTINGS)).status


def _get(cluster: KubeCluster, res, namespace: str, name: str = "iris") -> dict | None:
    return asyncio.run(cluster.get(res, namespace, name))


def _template_version(dep: dict) -> str:
    return dep["spec"]["template"]["metadata"]["annotations"]["mlops.dev/version"]


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _pending_writes(cluster: KubeCluster, namespace: str, name: str = "iris") -> list[str]:
    """Kinds a reconcile would apply or delete now, asked of the pure decision over what the server holds."""
    md = _get(cluster, MODEL_DEPLOYMENTS, namespace, name)
    tjs = asyncio.run(cluster.list(TRAINING_JOBS, namespace))
    observed = asyncio.run(observe(cluster, namespace, name))
    d = modeldeployment.decide(md, tjs, observed, SETTINGS, datetime.now(timezone.utc))
    return [o["kind"] for o in d.apply] + [f"-{o['kind']}" for o in d.delete]


def _serving(control_plane, namespace: str) -> KubeCluster:
    """iris-v1 passed, the iris ModelDeployment applied and reconciled once."""
    cluster = KubeCluster(control_plane.api_client())
    _training_job(control_plane, cluster, namespace, "iris-v1", sha=SHA1, done="2026-01-01T00:00:00Z")
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "iris" / "modeldeployment.yaml"))
    _reconcile(cluster, namespace)
    return cluster


def test_iris_example_makes_a_deployment_service_and_pdb(crds, namespace) -> None:
    control_plane = crds
    cluster = _serving(control_plane, namespace)
    md = _get(cluster, MODEL_DEPLOYMENTS, namespace)
    dep = _get(cluster, DEPLOYMENTS, namespace)
    svc = _get(cluster, SERVICES, namespace)
    pdb = _get(cluster, PDBS, namespace)
    assert dep and svc and pdb and _get(cluster, HPAS, namespace) is None
    for child in (dep, svc, pdb):
        ref = child["metadata"]["ownerReferences"][0]
        assert ref["uid"] == md["metadata"]["uid"] and ref["controller"] is True and ref["kind"] == "ModelDeployment"
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert dep["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/component": "serving", "mlops.dev/model-deployment": "iris"}
    assert _template_version(dep) == "iris-v1-g1"
    assert dep["spec"]["template"]["metadata"]["annotations"]["mlops.dev/sha256"] == SHA1
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "--store"] and "--sha256" in container["args"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert restricted_violations(dep) == []
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 80
    assert svc["spec"]["ports"][0]["targetPort"] == "http" and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    # The spec is the user's: the operator wrote only status.
    assert md["spec"]["version"] == "latest"
    s = md["status"]
    assert s["modelVersion"] == "iris-v1-g1" and s["url"] == f"http://iris.{namespace}.svc.cluster.local"
    assert [h["reason"] for h in s["history"]] == ["Initial"] and _cond(s, "Ready")["status"] == "False"

    # What the API server returns (with its defaults) matches what we apply: nothing left to write.
    assert _pending_writes(cluster, namespace) == []
    # Reconciling again writes nothing: the children keep their resourceVersion.
    before = {r.kind: _get(cluster, r, namespace)["metadata"]["resourceVersion"] for r in (SERVICES, PDBS)}
    _reconcile(cluster, namespace)
    _reconcile(cluster, namespace)
    assert {r.kind: _get(cluster, r, namespace)["metadata"]["resourceVersion"] for r in (SERVICES, PDBS)} == before

    # Once the pods are ready, the ModelDeployment is Ready, and kubectl shows it.
    make_serving_pods_ready(cluster, namespace, "iris", 2)

    def ready():
        st = _reconcile(cluster, namespace)
        return st if _cond(st, "Ready")["status"] == "True" else None

    status = _wait(ready, what="the ModelDeployment to be Ready")
    assert status["readyReplicas"] == 2 and _cond(status, "Progressing")["status"] == "False"
    assert _pending_writes(cluster, namespace) == []
    header, row = control_plane.kubectl("get", "md", "-n", namespace).stdout.splitlines()[:2]
    for column in ("READY", "MODEL", "VERSION", "REPLICAS", "URL", "AGE"):
        assert column in header
    for value in ("True", "iris", "iris-v1-g1", f"http://iris.{namespace}.svc.cluster.local"):
        assert value in row
    out = control_plane.kubectl("wait", "md/iris", "-n", namespace, "--for=condition=Ready", "--timeout=10s")
    assert out.returncode == 0


def test_a_new_passing_run_rolls_out(crds, namespace) -> None:
    control_plane = crds
    cluster = _serving(control_plane, namespace)
    generation = _get(cluster, DEPLOYMENTS, namespace)["metadata"]["generation"]
    _training_job(control_plane, cluster, namespace, "iris-v2", sha=SHA2, done="2026-01-02T00:00:00Z")
    status = _reconcile(cluster, namespace)
    dep = _get(cluster, DEPLOYMENTS, namespace)
    assert _template_version(dep) == "iris-v2-g1" and dep["metadata"]["generation"] == generation + 1
    assert dep["spec"]["template"]["metadata"]["annotations"]["mlops.dev/sha256"] == SHA2
    assert status["modelVersion"] == "iris-v2-g1"
    assert [(h["version"], h["reason"]) for h in status["history"]] == [("iris-v2-g1", "NewVersion"), ("iris-v1-g1", "Initial")]
    events = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    rollouts = [e["message"] for e in events if e["reason"] == "RolloutStarted"]
    assert any("iris-v1-g1 -> iris-v2-g1" in m for m in rollouts)


def test_a_failing_run_changes_nothing(crds, namespace) -> None:
    control_plane = crds
    cluster = _serving(control_plane, namespace)
    before = _get(cluster, DEPLOYMENTS, namespace)
    _training_job(control_plane, cluster, namespace, "iris-v2", sha=SHA2, done="2026-01-02T00:00:00Z", passed=False)
    status = _reconcile(cluster, namespace)
    after = _get(cluster, DEPLOYMENTS, namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] and _template_version(after) == "iris-v1-g1"
    assert status["modelVersion"] == "iris-v1-g1" and len(status["history"]) == 1


def test_a_pinned_version_stays(crds, namespace) -> None:
    control_plane = crds
    cluster = _serving(control_plane, namespace)
    md = _example("modeldeployment.yaml")
    md["spec"]["version"] = "iris-v1-g1"
    _apply(control_plane, namespace, md)
    status = _reconcile(cluster, namespace)
    assert status["modelVersion"] == "iris-v1-g1" and len(status["history"]) == 1  # same version: no rollout
    _training_job(control_plane, cluster, namespace, "iris-v2", sha=SHA2, done="2026-01-02T00:00:00Z")
    status = _reconcile(cluster, namespace)
    assert status["modelVersion"] == "iris-v1-g1" and _template_version(_get(cluster, DEPLOYMENTS, namespace)) == "iris-v1-g1"
    # A pin to a version that does not exist keeps the old one serving and says why.
    md["spec"]["version"] = "iris-v9-g1"
    _apply(control_plane, namespace, md)
    status = _reconcile(cluster, namespace)
    assert _cond(status, "Ready")["reason"] == "VersionNotFound" and _cond(status, "Stalled")["status"] == "True"
    assert _template_version(_get(cluster, DEPLOYMENTS, namespace)) == "iris-v1-g1"


def test_switching_to_autoscaling_and_back(crds, namespace) -> None:
    control_plane = crds
    cluster = _serving(control_plane, namespace)
    md = _example("modeldeployment.yaml")
    del md["spec"]["replicas"]
    md["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}
    _apply(control_plane, namespace, md)
    _reconcile(cluster, namespace)
    hpa = _get(cluster, HPAS, namespace)
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["scaleTargetRef"]["name"] == "iris"
    assert _get(cluster, PDBS, namespace) is not None
    # The operator no longer owns spec.replicas: the autoscaler sets it without a fight.
    ours = [m for m in _get(cluster, DEPLOYMENTS, namespace)["metadata"]["managedFields"]
            if m["manager"] == "mlops-operator" and m["operation"] == "Apply"]
    assert ours and "f:replicas" not in ours[0]["fieldsV1"]["f:spec"]
    assert _pending_writes(cluster, namespace) == []
    single = copy.deepcopy(_example("modeldeployment.yaml"))
    single["spec"]["replicas"] = 1
    _apply(control_plane, namespace, single)
    _reconcile(cluster, namespace)
    _wait(lambda: _get(cluster, HPAS, namespace) is None and _get(cluster, PDBS, namespace) is None,
          what="the HPA and PDB to be deleted")
    assert _get(cluster, DEPLOYMENTS, namespace)["spec"]["replicas"] == 1


def test_a_refused_deployment_is_reported_instead_of_the_old_status(crds, namespace) -> None:
    """The run passed, but the cluster refuses the Deployment: the user reads why, not a stale NoPassingVersion."""
    cluster = KubeCluster(crds.api_client())
    _apply(crds, namespace, _example("modeldeployment.yaml"))
    status = _reconcile(cluster, namespace)
    assert _cond(status, "Ready")["reason"] == "NoPassingVersion"
    _training_job(crds, cluster, namespace, "iris-v1", sha=SHA1, done="2026-01-01T00:00:00Z")
    with admission_refusal(crds, namespace, "apps", "deployments", "serving is restricted to approved images"):
        with pytest.raises(Refused):
            _reconcile(cluster, namespace)
        status = _get(cluster, MODEL_DEPLOYMENTS, namespace)["status"]
        ready = _cond(status, "Ready")
        assert ready["reason"] == "DeploymentRefused" and "approved images" in ready["message"]
        assert _cond(status, "Stalled")["status"] == "True"
        events = crds.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=DeploymentRefused", "-o", "name").stdout
        assert events.strip(), "an event tells it too"
    assert _reconcile(cluster, namespace)["modelVersion"] == "iris-v1-g1"  # allowed again: it serves
    assert _cond(_get(cluster, MODEL_DEPLOYMENTS, namespace)["status"], "Stalled")["status"] == "False"


def test_no_passing_version_waits_without_a_deployment(crds, namespace) -> None:
    control_plane = crds
    cluster = KubeCluster(control_plane.api_client())
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "iris" / "modeldeployment.yaml"))
    status = _reconcile(cluster, namespace)
    assert _cond(status, "Ready")["reason"] == "NoPassingVersion"
    assert _get(cluster, DEPLOYMENTS, namespace) is None and _get(cluster, SERVICES, namespace) is None


def test_deleting_the_model_deployment_cascades(crds, namespace) -> None:
    control_plane = crds
    cluster = _serving(control_plane, namespace)
    assert _get(cluster, DEPLOYMENTS, namespace) is not None
    control_plane.kubectl("delete", "md", "iris", "-n", namespace, "--wait=false")
    _wait(lambda: all(_get(cluster, r, namespace) is None for r in (DEPLOYMENTS, SERVICES, PDBS)), timeout=60,
          what="the garbage collector to delete the children")


def test_kopf_operator_follows_the_lineage(crds, namespace) -> None:
    """The real wiring: the ModelDeployment handler builds the Deployment, and a TrainingJob event rolls it."""
    control_plane = crds
    cluster = KubeCluster(control_plane.api_client())
    # Both runs finished before the operator starts (so its TrainingJob handler has nothing to run);
    # the newer one waits for a manual approval.
    _training_job(control_plane, cluster, namespace, "iris-v1", sha=SHA1, done="2026-01-01T00:00:00Z")
    _training_job(control_plane, cluster, namespace, "iris-v2", sha=SHA2, done="2026-01-02T00:00:00Z")
    control_plane.kubectl("annotate", "tj", "iris-v2", "-n", namespace, "mlops.dev/promotion=manual")
    with operator_running(control_plane, namespace):
        control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples" / "iris" / "modeldeployment.yaml"))
        dep = _wait(lambda: _get(cluster, DEPLOYMENTS, namespace), what="the operator to create the Deployment")
        assert _template_version(dep) == "iris-v1-g1"
        # Approving the newer run is a TrainingJob event: the ModelDeployment of its lineage rolls to it.
        control_plane.kubectl("annotate", "tj", "iris-v2", "-n", namespace, "mlops.dev/approved=true")
        _wait(lambda: _template_version(_get(cluster, DEPLOYMENTS, namespace)) == "iris-v2-g1", what="the rollout to iris-v2-g1")
        status = _wait(lambda: (lambda s: s if s.get("modelVersion") == "iris-v2-g1" else None)(
            _get(cluster, MODEL_DEPLOYMENTS, namespace).get("status") or {}), what="status of the rollout")
        assert [h["version"] for h in status["history"]] == ["iris-v2-g1", "iris-v1-g1"]
        # Deleting the Deployment by hand: it comes back with the version that served.
        control_plane.kubectl("delete", "deployment", "iris", "-n", namespace, "--wait=false")
        _wait(lambda: (lambda d: d and not d["metadata"].get("deletionTimestamp") and _template_version(d) == "iris-v2-g1")(
            _get(cluster, DEPLOYMENTS, namespace)) and _get(cluster, DEPLOYMENTS, namespace)["metadata"]["uid"] != dep["metadata"]["uid"],
            timeout=60, what="the Deployment to be recreated")


def test_a_model_deployment_reads_only_its_own_lineage_selected_by_the_api_server(crds, namespace) -> None:
    """`spec.model` is a selectable field: the reconcile LISTs one lineage, not every TrainingJob of the namespace."""
    cluster = KubeCluster(crds.api_client())
    _training_job(crds, cluster, namespace, "iris-v1", sha=SHA1, done="2026-01-01T00:00:00Z")
    other = _example("trainingjob.yaml")
    other["metadata"]["name"] = "cancer-v1"
    other["spec"]["model"] = "cancer"
    _apply(crds, namespace, other)
    out = crds.kubectl("get", "tj", "-n", namespace, "--field-selector", "spec.model=iris", "-o", "name").stdout.split()
    assert out == ["trainingjob.mlops.dev/iris-v1"]
    lineage = asyncio.run(cluster.list(TRAINING_JOBS, namespace, fields={"spec.model": "iris"}))
    assert [t["metadata"]["name"] for t in lineage] == ["iris-v1"]
    _apply(crds, namespace, _example("modeldeployment.yaml"))
    assert _reconcile(cluster, namespace)["modelVersion"] == "iris-v1-g1"
