"""The GitOps examples: the Argo CD health checks run in Lua 5.1 on statuses the real reconcilers write,
and the Argo CD and Flux manifests point at things that exist."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator.controllers import trainingjob as tj_ctl
from mlops_operator.controllers.cluster import (
    DEPLOYMENTS,
    DRIFT_POLICIES,
    JOBS,
    MODEL_DEPLOYMENTS,
    PODS,
    RESOURCES,
    TRAINING_JOBS,
)
from mlops_operator.controllers.reconcile.driftpolicy import reconcile_drift_policy
from mlops_operator.controllers.reconcile.modeldeployment import reconcile_model_deployment
from mlops_operator.controllers.reconcile.trainingjob import reconcile_training_job
from mlops_operator.controllers.settings import Settings
from mlops_operator.local.cluster import MemoryCluster
from mlops_operator.runtime import trainer

lupa = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
HEALTH = GITOPS / "argocd" / "health"
KINDS = ("TrainingJob", "ModelDeployment", "DriftPolicy")
NS = "mlops-system"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# What Argo CD puts on what it syncs: the tracking label (label tracking) or annotation (annotation tracking).
TRACKING_LABEL = {"app.kubernetes.io/instance": "mlops-models-iris"}
TRACKING_ANNOTATION = {"argocd.argoproj.io/tracking-id": "mlops-models-iris:mlops.dev/Kind:mlops-system/name"}


# --------------------------------------------------------------------------- Lua, the way Argo CD runs it


def _to_lua(lua: Any, value: Any) -> Any:
    """Python (JSON) data as Lua values: dicts become tables, lists 1-based arrays, None nil."""
    if isinstance(value, dict):
        table = lua.table()
        for k, v in value.items():
            if v is not None:
                table[k] = _to_lua(lua, v)
        return table
    if isinstance(value, list):
        table = lua.table()
        for i, v in enumerate(value, start=1):
            table[i] = _to_lua(lua, v)
        return table
    return value


def health(kind: str, obj: dict) -> tuple[str, str]:
    """Run ``health/<kind>.lua`` on an object: Lua 5.1 with only the libraries Argo CD opens by default
    (base, table, package, a safe os); no string, math, io or debug, and no string methods."""
    lua = lupa.LuaRuntime(register_eval=False, unpack_returned_tuples=False)
    lua.execute("string, math, io, debug, coroutine = nil, nil, nil, nil, nil; getmetatable('').__index = nil")
    # Argo CD hands the script the object as the API server serialises it: JSON.
    lua.globals().obj = _to_lua(lua, json.loads(json.dumps(obj)))
    result = lua.execute((HEALTH / f"{kind.lower()}.lua").read_text())
    assert lupa.lua_type(result) == "table", f"{kind} health check returned {result!r}, not a table"
    status, message = result["status"], result["message"]
    assert status in ARGO_STATUSES, status
    assert message is None or isinstance(message, str), message
    return status, message or ""


def test_the_sandbox_is_as_strict_as_argo_cd() -> None:
    lua = lupa.LuaRuntime(register_eval=False, unpack_returned_tuples=False)
    lua.execute("string, math, io, debug, coroutine = nil, nil, nil, nil, nil; getmetatable('').__index = nil")
    with pytest.raises(lupa.LuaError):
        lua.execute("return ('x'):upper()")
    with pytest.raises(lupa.LuaError):
        lua.execute("return string.format('%d', 1)")
    assert lua.execute("local t = {} table.insert(t, 'a' .. 1) return t[1]") == "a1"


# --------------------------------------------------------------------------- a cluster the real reconcilers run on


def _example(name: str) -> dict:
    obj = yaml.safe_load((ROOT / "examples" / "iris" / name).read_text())
    obj["metadata"]["namespace"] = NS
    # Synced by Argo CD: its tracking label and annotation are on the objects in Git.
    obj["metadata"]["labels"] = dict(TRACKING_LABEL)
    obj["metadata"]["annotations"] = dict(TRACKING_ANNOTATION)
    return obj


class World:
    """A MemoryCluster, the real reconcilers, and the Job controller and kubelet played by the test."""

    def __init__(self, tmp: Path) -> None:
        self.now = T0
        self.cluster = MemoryCluster(lambda: self.now)
        self.settings = Settings()
        self.tmp = tmp

    def apply(self, obj: dict) -> dict:
        return self.cluster.apply_now(copy.deepcopy(obj))

    def get(self, kind: str, name: str) -> dict:
        found = self.cluster.get_now(RESOURCES[kind], NS, name)
        assert found is not None, f"{kind} {name} is gone"
        return found

    def reconcile(self, kind: str, name: str, **kw: Any) -> dict:
        if kind == "TrainingJob":
            asyncio.run(reconcile_training_job(self.cluster, NS, name, self.settings, lambda: self.now))
        elif kind == "ModelDeployment":
            asyncio.run(reconcile_model_deployment(self.cluster, NS, name, self.settings, lambda: self.now))
        else:
            asyncio.run(reconcile_drift_policy(self.cluster, NS, name, self.settings, lambda: self.now, None, **kw))
        return self.get(kind, name)

    def run_training(self, name: str) -> int:
        """Run the Job's trainer for real (in this process, paths mapped to a folder) and record the
        outcome the way the Job controller and the kubelet do: a terminated pod, a Complete/Failed Job."""
        tj = self.get("TrainingJob", name)
        job = self.cluster.get_now(JOBS, NS, tj_ctl.job_name(tj))
        assert job is not None, "the reconciler created no Job"
        template = job["spec"]["template"]
        work = self.tmp / job["metadata"]["name"]
        work.mkdir(parents=True)
        (work / "trainingjob.json").write_text(template["metadata"]["annotations"][tj_ctl.SPEC_ANNOTATION])
        mapping = {tj_ctl.SPEC_PATH: str(work / "trainingjob.json"), self.settings.store_path: str(self.tmp / "store"),
                   "/dev/termination-log": str(work / "termination-log")}
        args = [mapping.get(a, a) for a in template["spec"]["containers"][0]["args"]]
        assert args[0] == "train"
        code = trainer.main(args[1:])
        finished = (self.now + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{job['metadata']['name']}-x", "namespace": NS,
                            "labels": {**template["metadata"]["labels"], "job-name": job["metadata"]["name"]}},
               "spec": template["spec"]}
        self.cluster.create_now(pod)
        term = {"exitCode": code, "finishedAt": finished, "message": (work / "termination-log").read_text()}
        self.cluster.patch_status_now(PODS, NS, pod["metadata"]["name"], {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "ready": False, "state": {"terminated": term}}]})
        if code == 0:
            cond = {"type": "Complete", "status": "True", "lastTransitionTime": finished}
            status = {"succeeded": 1, "completionTime": finished, "conditions": [cond]}
        else:  # exit codes 2 and 3 fail the Job at once (its podFailurePolicy)
            cond = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "lastTransitionTime": finished}
            status = {"failed": 1, "conditions": [cond]}
        self.cluster.patch_status_now(JOBS, NS, job["metadata"]["name"], status)
        return code

    def roll_out(self, name: str) -> None:
        """Play the Deployment controller: every replica of the current template updated and ready."""
        dep = self.cluster.get_now(DEPLOYMENTS, NS, name)
        assert dep is not None, "the reconciler created no Deployment"
        n = dep["spec"].get("replicas", 1)
        self.cluster.patch_status_now(DEPLOYMENTS, NS, name, {
            "observedGeneration": dep["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n})


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _edit_spec(world: World, kind: str, name: str, **spec: Any) -> dict:
    """A new commit in Git: the object's spec changes, so its generation moves past the status."""
    obj = world.get(kind, name)
    obj.pop("status", None)
    obj["spec"].update(spec)
    after = world.apply(obj)
    assert after["metadata"]["generation"] == 2
    return world.get(kind, name)


# --------------------------------------------------------------------------- TrainingJob


def test_trainingjob_health_from_apply_to_stored_model(world: World) -> None:
    tj = world.apply(_example("trainingjob.yaml"))
    assert "status" not in tj
    assert health("TrainingJob", tj)[0] == "Progressing"  # synced, not yet seen by the operator

    tj = world.reconcile("TrainingJob", "iris-v1")
    assert tj["status"]["phase"] == "Pending"
    status, message = health("TrainingJob", tj)
    assert status == "Progressing" and "JobCreated" in message and "iris-v1-g1" in message

    assert world.run_training("iris-v1") == 0
    tj = world.reconcile("TrainingJob", "iris-v1")
    assert tj["status"]["phase"] == "Succeeded"
    status, message = health("TrainingJob", tj)
    assert status == "Healthy" and "iris-v1-g1 stored" in message


def test_trainingjob_with_a_new_spec_is_progressing_until_the_operator_catches_up(world: World) -> None:
    world.apply(_example("trainingjob.yaml"))
    world.reconcile("TrainingJob", "iris-v1")
    world.run_training("iris-v1")
    assert health("TrainingJob", world.reconcile("TrainingJob", "iris-v1"))[0] == "Healthy"

    tj = _edit_spec(world, "TrainingJob", "iris-v1", estimator={"class": "sklearn.linear_model.LogisticRegression"})
    assert tj["status"]["observedGeneration"] == 1 and tj["status"]["phase"] == "Succeeded"  # still the old run's
    status, message = health("TrainingJob", tj)
    assert status == "Progressing" and "generation 2" in message

    tj = world.reconcile("TrainingJob", "iris-v1")
    assert tj["status"]["observedGeneration"] == 2
    assert health("TrainingJob", tj)[0] == "Progressing"  # generation 2 is training now


def test_trainingjob_that_misses_its_gate_is_degraded(world: World) -> None:
    obj = _example("trainingjob.yaml")
    obj["spec"]["qualityGate"] = {"metric": "accuracy", "minimum": 0.9999}
    world.apply(obj)
    world.reconcile("TrainingJob", "iris-v1")
    assert world.run_training("iris-v1") == tj_ctl.EXIT_GATE
    tj = world.reconcile("TrainingJob", "iris-v1")
    assert tj["status"]["phase"] == "Failed"
    status, message = health("TrainingJob", tj)
    assert status == "Degraded" and message.startswith("GateFailed: ")


def test_trainingjob_with_an_invalid_spec_is_degraded(world: World) -> None:
    obj = _example("trainingjob.yaml")
    obj["spec"]["qualityGate"] = {"metric": "rmse", "minimum": 3}  # a regression metric on a classifier
    world.apply(obj)
    tj = world.reconcile("TrainingJob", "iris-v1")
    status, message = health("TrainingJob", tj)
    assert status == "Degraded" and message.startswith("InvalidSpec: ") and "spec.qualityGate" in message


def test_failed_phase_alone_is_degraded(world: World) -> None:
    """A failed run is Degraded even should Stalled be missing (a status written by an older operator)."""
    obj = _example("trainingjob.yaml")
    obj["spec"]["qualityGate"] = {"metric": "accuracy", "minimum": 0.9999}
    world.apply(obj)
    world.reconcile("TrainingJob", "iris-v1")
    world.run_training("iris-v1")
    tj = world.reconcile("TrainingJob", "iris-v1")
    tj["status"]["conditions"] = [c for c in tj["status"]["conditions"] if c["type"] != "Stalled"]
    status, message = health("TrainingJob", tj)
    assert status == "Degraded" and "GateFailed" in message


# --------------------------------------------------------------------------- ModelDeployment


def test_modeldeployment_health_from_sync_to_serving(world: World) -> None:
    # Argo CD syncs the folder at once: the TrainingJob has no status yet when the deployment is reconciled.
    world.apply(_example("trainingjob.yaml"))
    md = world.apply(_example("modeldeployment.yaml"))
    assert health("ModelDeployment", md)[0] == "Progressing"
    md = world.reconcile("ModelDeployment", "iris")
    status, message = health("ModelDeployment", md)
    assert status == "Progressing" and message.startswith("NoPassingVersion: ") and "waiting for iris-v1" in message

    world.reconcile("TrainingJob", "iris-v1")
    world.run_training("iris-v1")
    world.reconcile("TrainingJob", "iris-v1")
    md = world.reconcile("ModelDeployment", "iris")
    status, message = health("ModelDeployment", md)
    assert status == "Progressing" and message.startswith("RollingOut: ")

    world.roll_out("iris")
    md = world.reconcile("ModelDeployment", "iris")
    status, message = health("ModelDeployment", md)
    assert status == "Healthy" and "serving iris-v1-g1" in message

    md = _edit_spec(world, "ModelDeployment", "iris", replicas=3)
    status, message = health("ModelDeployment", md)
    assert status == "Progressing" and "generation 2" in message


def test_modeldeployment_without_any_run_of_its_model_is_degraded(world: World) -> None:
    world.apply(_example("modeldeployment.yaml"))
    md = world.reconcile("ModelDeployment", "iris")
    status, message = health("ModelDeployment", md)
    assert status == "Degraded" and "no TrainingJob of model iris" in message


def test_modeldeployment_whose_only_run_failed_is_degraded(world: World) -> None:
    obj = _example("trainingjob.yaml")
    obj["spec"]["qualityGate"] = {"metric": "accuracy", "minimum": 0.9999}
    world.apply(obj)
    world.apply(_example("modeldeployment.yaml"))
    world.reconcile("TrainingJob", "iris-v1")
    world.run_training("iris-v1")
    world.reconcile("TrainingJob", "iris-v1")
    md = world.reconcile("ModelDeployment", "iris")
    status, message = health("ModelDeployment", md)
    assert status == "Degraded" and message.startswith("NoPassingVersion: ")


# --------------------------------------------------------------------------- DriftPolicy


def test_driftpolicy_health(world: World) -> None:
    world.apply(_example("trainingjob.yaml"))
    world.apply(_example("modeldeployment.yaml"))
    dp = world.apply(_example("driftpolicy.yaml"))
    assert health("DriftPolicy", dp)[0] == "Progressing"

    # Just created: the first check is not due yet (it is spread over the interval).
    dp = world.reconcile("DriftPolicy", "iris")
    status, message = health("DriftPolicy", dp)
    assert status == "Healthy" and message.startswith("Waiting: ")

    # A check that can read nothing (no serving pod yet) is transient.
    dp = world.reconcile("DriftPolicy", "iris", force=True)
    status, message = health("DriftPolicy", dp)
    assert status == "Progressing" and message.startswith("Unavailable: ")

    dp = _edit_spec(world, "DriftPolicy", "iris", interval="120s")
    assert health("DriftPolicy", dp) == ("Progressing", "the operator has not yet seen generation 2")


def test_driftpolicy_watching_a_missing_deployment_is_degraded(world: World) -> None:
    world.apply(_example("trainingjob.yaml"))
    world.apply(_example("driftpolicy.yaml"))
    dp = world.reconcile("DriftPolicy", "iris")
    status, message = health("DriftPolicy", dp)
    assert status == "Degraded" and message == "DeploymentNotFound: ModelDeployment iris does not exist"


# --------------------------------------------------------------------------- no diff for Argo CD or Flux


def test_reconciles_leave_the_synced_objects_and_tracking_alone(world: World) -> None:
    """What Git holds (spec, labels, annotations) stays as synced; children carry no tracking of the Application."""
    synced = {kind: world.apply(_example(f"{kind.lower()}.yaml")) for kind in KINDS}
    names = {"TrainingJob": "iris-v1", "ModelDeployment": "iris", "DriftPolicy": "iris"}
    world.reconcile("TrainingJob", "iris-v1")
    world.run_training("iris-v1")
    for kind in KINDS:
        world.reconcile(kind, names[kind])
    world.roll_out("iris")
    world.reconcile("ModelDeployment", "iris")
    world.reconcile("DriftPolicy", "iris", force=True)
    for kind in KINDS:
        now = world.get(kind, names[kind])
        before = synced[kind]
        assert now["spec"] == before["spec"], kind
        assert now["metadata"]["labels"] == before["metadata"]["labels"], kind
        assert now["metadata"]["annotations"] == before["metadata"]["annotations"], kind
        assert now["metadata"]["generation"] == 1, kind
        assert "status" in now, kind
    children = [o for res in RESOURCES.values() if res not in (TRAINING_JOBS, MODEL_DEPLOYMENTS, DRIFT_POLICIES)
                for o in world.cluster.list_now(res, NS) if o["kind"] != "Pod"]
    assert sorted(o["kind"] for o in children) == ["Deployment", "Job", "PodDisruptionBudget", "Service"]
    for child in children:
        meta = child["metadata"]
        assert meta["ownerReferences"][0]["controller"] is True
        assert not set(TRACKING_LABEL) & set(meta.get("labels") or {}), child["kind"]
        assert not set(TRACKING_ANNOTATION) & set(meta.get("annotations") or {}), child["kind"]
        template = (child.get("spec") or {}).get("template", {}).get("metadata", {})
        assert not set(TRACKING_LABEL) & set(template.get("labels") or {}), child["kind"]
        assert "mlops-models-iris" not in json.dumps(template.get("annotations") or {}), child["kind"]


# --------------------------------------------------------------------------- the manifests


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_argocd_cm_embeds_the_lua_files_verbatim() -> None:
    (cm,) = _docs(GITOPS / "argocd" / "argocd-cm-health.yaml")
    assert (cm["apiVersion"], cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("v1", "ConfigMap", "argocd-cm", "argocd")
    expected = {f"resource.customizations.health.mlops.dev_{kind}": (HEALTH / f"{kind.lower()}.lua").read_text() for kind in KINDS}
    assert cm["data"] == expected
    assert sorted(p.name for p in HEALTH.iterdir()) == sorted(f"{k.lower()}.lua" for k in KINDS)


def _values_keys(values: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in values.items():
        out.add(prefix + k)
        if isinstance(v, dict) and v:
            out |= _values_keys(v, prefix + k + ".")
    return out


def _set_keys(values: dict, prefix: str = "") -> set[str]:
    """Dotted keys a values override sets; a map under a key the chart declares as an open map
    (e.g. crds.annotations: {}) counts as setting that key."""
    known = _values_keys(yaml.safe_load((ROOT / "charts" / "mlops-operator" / "values.yaml").read_text()))
    out = set()
    for k, v in values.items():
        key = prefix + k
        if isinstance(v, dict) and any(n.startswith(key + ".") for n in known):
            out |= _set_keys(v, key + ".")
        else:
            out.add(key)
    return out


def test_argocd_applications() -> None:
    (chart,) = _docs(GITOPS / "argocd" / "application-chart.yaml")
    (models,) = _docs(GITOPS / "argocd" / "application-models.yaml")
    for app in (chart, models):
        assert (app["apiVersion"], app["kind"], app["metadata"]["namespace"]) == ("argoproj.io/v1alpha1", "Application", "argocd")
        assert (ROOT / app["spec"]["source"]["path"]).is_dir()
    assert chart["spec"]["source"]["path"] == "charts/mlops-operator"
    assert (ROOT / "charts" / "mlops-operator" / "Chart.yaml").is_file()
    assert models["spec"]["source"]["path"] == "examples/iris" and "directory" in models["spec"]["source"]
    wave = lambda app: int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])  # noqa: E731
    assert wave(chart) < wave(models)
    values = chart["spec"]["source"]["helm"]["valuesObject"]
    assert values["crds"]["annotations"] == {"argocd.argoproj.io/sync-options": "Prune=false,Delete=false"}
    known = _values_keys(yaml.safe_load((ROOT / "charts" / "mlops-operator" / "values.yaml").read_text()))
    assert _set_keys(values) <= known, _set_keys(values) - known
    assert chart["spec"]["destination"]["namespace"] == models["spec"]["destination"]["namespace"]


def test_flux_manifests() -> None:
    (repo,) = _docs(GITOPS / "flux" / "gitrepository.yaml")
    assert (repo["apiVersion"], repo["kind"]) == ("source.toolkit.fluxcd.io/v1", "GitRepository")
    (release,) = _docs(GITOPS / "flux" / "release" / "helmrelease.yaml")
    assert (release["apiVersion"], release["kind"]) == ("helm.toolkit.fluxcd.io/v2", "HelmRelease")
    chart = release["spec"]["chart"]["spec"]
    assert chart["chart"] == "./charts/mlops-operator" and (ROOT / chart["chart"] / "Chart.yaml").is_file()
    assert chart["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"], "namespace": repo["metadata"]["namespace"]}
    known = _values_keys(yaml.safe_load((ROOT / "charts" / "mlops-operator" / "values.yaml").read_text()))
    assert _set_keys(release["spec"]["values"]) <= known

    kustomizations = {k["metadata"]["name"]: k for k in _docs(GITOPS / "flux" / "kustomizations.yaml")}
    assert set(kustomizations) == {"mlops-operator", "mlops-models-iris"}
    for k in kustomizations.values():
        assert (k["apiVersion"], k["kind"]) == ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
        assert k["spec"]["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}
        assert k["metadata"]["namespace"] == repo["metadata"]["namespace"]
        assert (ROOT / k["spec"]["path"]).is_dir() and k["spec"]["wait"] is True
    operator, models = kustomizations["mlops-operator"], kustomizations["mlops-models-iris"]
    # The operator's Kustomization applies exactly the HelmRelease; the models wait for it.
    assert [p.name for p in (ROOT / operator["spec"]["path"]).iterdir()] == ["helmrelease.yaml"]
    assert models["spec"]["path"] == "./examples/iris"
    assert models["spec"]["dependsOn"] == [{"name": "mlops-operator"}]
    # No kustomization.yaml where Flux applies a folder: kustomize would read it as its own config.
    assert not list(GITOPS.rglob("kustomization.yaml"))
