"""ModelDeployment decisions: which version serves, the children built for it, status, events, idempotency."""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from mlops_operator.controllers import modeldeployment as ctl
from mlops_operator.controllers.cluster import Resource, matches_fields
from mlops_operator.controllers.reconcile.modeldeployment import model_deployment_of, reconcile_model_deployment
from mlops_operator.controllers.settings import Settings
from tests.pss import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SHA1, SHA2, SHA3 = "a1" * 32, "b2" * 32, "c3" * 32


def _md(**spec) -> dict:
    obj = yaml.safe_load((ROOT / "examples" / "iris" / "modeldeployment.yaml").read_text())
    obj["metadata"].update(uid="md-uid", generation=1, namespace="ml", labels={"app.kubernetes.io/instance": "argo-app"})
    for k, v in spec.items():
        if v is None:
            obj["spec"].pop(k, None)
        else:
            obj["spec"][k] = v
    return obj


def _tj(name: str, *, sha: str | None = SHA1, phase: str = "Succeeded", gate: str = "Passed", done: str = "2026-01-01T00:00:00Z",
        model: str = "iris", generation: int = 1, observed: int | None = None, labels: dict | None = None,
        annotations: dict | None = None) -> dict:
    status = {"phase": phase, "observedGeneration": generation if observed is None else observed,
              "modelVersion": f"{name}-g{generation}", "gate": {"result": gate}}
    if phase in ("Succeeded", "Failed"):
        status["completionTime"] = done
    if sha:
        status["artifact"] = {"uri": f"store://ml/{model}/{name}-g{generation}", "sha256": sha}
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ml", "generation": generation, "uid": f"uid-{name}",
                     "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"model": model}, "status": status,
    }


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _kinds(objs: list[dict]) -> list[str]:
    return [o["kind"] for o in objs]


def _args(dep: dict) -> list[str]:
    return dep["spec"]["template"]["spec"]["containers"][0]["args"]


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _server_side(obj: dict, *, generation: int = 1) -> dict:
    """What the API server hands back after an apply: defaults and metadata of its own added."""
    out = copy.deepcopy(obj)
    out["metadata"].update(uid=f"uid-{obj['kind']}", resourceVersion="7", generation=generation, creationTimestamp="2026-01-02T00:00:00Z")
    spec = out["spec"]
    if obj["kind"] == "Deployment":
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("replicas", 1)
        pod = spec["template"]["spec"]
        pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
        c = pod["containers"][0]
        c.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
        c["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
        c["readinessProbe"]["successThreshold"] = 1
    if obj["kind"] == "Service":
        spec.update(clusterIP="10.0.0.12", clusterIPs=["10.0.0.12"], sessionAffinity="None", ipFamilies=["IPv4"])
    return out


def _rolled_out(dep: dict, ready: int | None = None) -> dict:
    """The Deployment once every replica runs the template and is ready."""
    out = copy.deepcopy(dep)
    n = out["spec"].get("replicas", 1)
    ready = n if ready is None else ready
    out["status"] = {"observedGeneration": out["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                     "readyReplicas": ready, "availableReplicas": ready}
    return out


def _world(decision: ctl.DeploymentDecision, before: ctl.Observed | None = None, *, ready: bool = True) -> ctl.Observed:
    """The children after the reconciler carried out a decision (and, when ``ready``, the rollout finished)."""
    obs = copy.deepcopy(before) if before else ctl.Observed()
    slot = {"Deployment": "deployment", "Service": "service", "HorizontalPodAutoscaler": "hpa", "PodDisruptionBudget": "pdb"}
    for obj in decision.delete:
        setattr(obs, slot[obj["kind"]], None)
    for obj in decision.apply:
        old = getattr(obs, slot[obj["kind"]])
        gen = (old["metadata"]["generation"] + 1) if old else 1
        setattr(obs, slot[obj["kind"]], _server_side(obj, generation=gen))
    if obs.deployment is not None and ready:
        obs.deployment = _rolled_out(obs.deployment)
    return obs


def _converge(md: dict, tjs: list[dict], settings: Settings = Settings(), obs: ctl.Observed | None = None, now: datetime = NOW,
              rounds: int = 3):
    """Decide, carry out, repeat (bounded) until nothing is left to do; returns the last decision and the world."""
    obs = obs or ctl.Observed()
    events = []
    for _ in range(rounds):
        d = ctl.decide(md, tjs, obs, settings, now)
        events += d.events
        md["status"] = d.status
        if not d.apply and not d.delete:
            break
        obs = _world(d, obs)
    return d, obs, events


# --- version resolution ------------------------------------------------------------------------------


RESOLUTION = [
    ("newest by completion time", [_tj("a", done="2026-01-01T00:00:00Z"), _tj("b", sha=SHA2, done="2026-01-03T00:00:00Z")], "b-g1"),
    ("a failed run is never chosen", [_tj("a"), _tj("b", sha=SHA2, phase="Failed", gate="Failed", done="2026-01-05T00:00:00Z")], "a-g1"),
    ("a gate failure is never chosen", [_tj("a"), _tj("b", sha=SHA2, gate="Failed", done="2026-01-05T00:00:00Z")], "a-g1"),
    ("manual promotion needs approval",
     [_tj("a"), _tj("b", sha=SHA2, done="2026-01-05T00:00:00Z", annotations={"mlops.dev/promotion": "manual"})], "a-g1"),
    ("an approved manual run is chosen",
     [_tj("a"), _tj("b", sha=SHA2, done="2026-01-05T00:00:00Z",
                    annotations={"mlops.dev/promotion": "manual", "mlops.dev/approved": "true"})], "b-g1"),
    ("a run still working on a new generation is not chosen",
     [_tj("a"), _tj("b", sha=SHA2, done="2026-01-05T00:00:00Z", generation=2, observed=1)], "a-g1"),
    ("a run without an artifact digest is not chosen", [_tj("a"), _tj("b", sha=None, done="2026-01-05T00:00:00Z")], "a-g1"),
    ("other lineages are ignored", [_tj("a"), _tj("z", sha=SHA2, model="wine", done="2026-01-05T00:00:00Z")], "a-g1"),
    ("a running run is not chosen", [_tj("a"), _tj("b", sha=None, phase="Running")], "a-g1"),
]


@pytest.mark.parametrize("case,tjs,expected", RESOLUTION, ids=[c[0] for c in RESOLUTION])
def test_latest_resolves_to_the_newest_promotable_run(case, tjs, expected) -> None:
    d = ctl.decide(_md(), tjs, ctl.Observed(), Settings(), NOW)
    assert d.status["modelVersion"] == expected
    dep = next(o for o in d.apply if o["kind"] == "Deployment")
    assert _flag(_args(dep), "--version") == expected


def test_the_resolved_version_goes_to_status_never_to_spec() -> None:
    md = _md()
    spec = copy.deepcopy(md["spec"])
    d = ctl.decide(md, [_tj("a")], ctl.Observed(), Settings(), NOW)
    assert md["spec"] == spec and d.status["modelVersion"] == "a-g1"
    assert all(o["kind"] != "ModelDeployment" for o in d.apply)


def test_no_passing_version_waits_without_children() -> None:
    d = ctl.decide(_md(), [_tj("a", sha=None, phase="Running")], ctl.Observed(), Settings(), NOW)
    assert d.apply == [] and d.delete == []
    ready = _cond(d.status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "NoPassingVersion" and "waiting for a" in ready["message"]
    # A run is on its way: in progress, not stalled.
    assert _cond(d.status, "Reconciling")["status"] == "True" and _cond(d.status, "Stalled")["status"] == "False"
    assert "modelVersion" not in d.status and "url" not in d.status


def test_no_run_at_all_is_stalled() -> None:
    d = ctl.decide(_md(), [_tj("a", phase="Failed", gate="Failed")], ctl.Observed(), Settings(), NOW)
    assert d.apply == []
    assert _cond(d.status, "Ready")["reason"] == "NoPassingVersion" and _cond(d.status, "Stalled")["status"] == "True"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "NoPassingVersion")]


def test_pinned_version_stays_when_a_newer_one_arrives() -> None:
    md = _md(version="a-g1")
    d, obs, _ = _converge(md, [_tj("a")])
    assert d.status["modelVersion"] == "a-g1"
    newer = [_tj("a"), _tj("b", sha=SHA2, done="2026-01-05T00:00:00Z")]
    again = ctl.decide(md, newer, obs, Settings(), NOW)
    assert again.apply == [] and again.status["modelVersion"] == "a-g1" and again.events == []


def test_pinning_skips_approval() -> None:
    tj = _tj("a", annotations={"mlops.dev/promotion": "manual"})
    assert ctl.decide(_md(version="a-g1"), [tj], ctl.Observed(), Settings(), NOW).status["modelVersion"] == "a-g1"
    assert "modelVersion" not in ctl.decide(_md(), [tj], ctl.Observed(), Settings(), NOW).status


def test_losing_every_passing_version_keeps_the_old_one_serving() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a")])
    d = ctl.decide(md, [], obs, Settings(), NOW + timedelta(hours=1))
    assert d.delete == [] and d.apply == []  # nothing torn down, nothing rewritten
    assert d.status["modelVersion"] == "a-g1" and d.status["readyReplicas"] == 2
    ready = _cond(d.status, "Ready")
    assert ready["reason"] == "NoPassingVersion" and "still serving a-g1" in ready["message"]


def test_losing_resolution_still_applies_a_new_replica_count_to_the_old_version() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a")])
    md["spec"]["replicas"] = 3
    d = ctl.decide(md, [], obs, Settings(), NOW)
    dep = next(o for o in d.apply if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 3 and _flag(_args(dep), "--version") == "a-g1" and _flag(_args(dep), "--sha256") == SHA1


def test_pinned_version_that_does_not_exist_is_stalled_and_keeps_serving() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a")])
    md["spec"]["version"] = "nope-g9"
    md["metadata"]["generation"] = 2
    d = ctl.decide(md, [_tj("a")], obs, Settings(), NOW)
    assert d.apply == [] and d.delete == [] and d.status["modelVersion"] == "a-g1"
    assert _cond(d.status, "Ready")["reason"] == "VersionNotFound" and _cond(d.status, "Stalled")["status"] == "True"
    assert d.status["observedGeneration"] == 2
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "VersionNotFound")]


@pytest.mark.parametrize("tj,reason,stalled", [
    (_tj("b", phase="Failed", gate="Failed"), "VersionNotFound", True),
    (_tj("b", sha=None, phase="Running"), "VersionNotFound", False),
    (_tj("b", sha=None), "ArtifactMissing", True),
])
def test_pinned_version_that_cannot_serve(tj, reason, stalled) -> None:
    d = ctl.decide(_md(version="b-g1"), [tj], ctl.Observed(), Settings(), NOW)
    assert d.apply == []
    assert _cond(d.status, "Ready")["reason"] == reason
    assert _cond(d.status, "Stalled")["status"] == str(stalled)


def test_invalid_spec_builds_nothing_and_names_the_field() -> None:
    md = _md(autoscaling={"minReplicas": 2, "maxReplicas": 4})  # and replicas: 2 from the example
    d = ctl.decide(md, [_tj("a")], ctl.Observed(), Settings(), NOW)
    assert d.apply == []
    ready = _cond(d.status, "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.replicas" in ready["message"]
    assert _cond(d.status, "Stalled")["status"] == "True"


def test_a_name_that_cannot_name_a_service_is_invalid() -> None:
    md = _md()
    md["metadata"]["name"] = "iris.v1"
    d = ctl.decide(md, [_tj("a")], ctl.Observed(), Settings(), NOW)
    assert d.apply == [] and "metadata.name" in _cond(d.status, "Ready")["message"]


def test_children_of_someone_else_are_left_alone() -> None:
    theirs = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "iris", "namespace": "ml"}, "spec": {}}
    d = ctl.decide(_md(), [_tj("a")], ctl.Observed(deployment=theirs), Settings(), NOW)
    assert d.apply == [] and d.delete == []
    assert _cond(d.status, "Ready")["reason"] == "NameConflict" and _cond(d.status, "Stalled")["status"] == "True"


# --- builders ------------------------------------------------------------------------------------------


def test_deployment_spec() -> None:
    settings = Settings(image="example/mlops:1", service_account="server", server_port=9000)
    dep = ctl.build_deployment(_md(), "a-g1", SHA1, settings)
    meta = dep["metadata"]
    assert meta["name"] == "iris" and meta["namespace"] == "ml"
    assert meta["ownerReferences"] == [{"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "name": "iris",
                                        "uid": "md-uid", "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"]["app.kubernetes.io/component"] == "serving"
    assert meta["labels"]["mlops.dev/model-deployment"] == "iris" and meta["labels"]["mlops.dev/model"] == "iris"
    assert "app.kubernetes.io/instance" not in meta["labels"]
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/component": "serving", "mlops.dev/model-deployment": "iris"}
    tmpl = spec["template"]
    for k, v in spec["selector"]["matchLabels"].items():
        assert tmpl["metadata"]["labels"][k] == v
    ann = tmpl["metadata"]["annotations"]
    assert ann["mlops.dev/version"] == "a-g1" and ann["mlops.dev/sha256"] == SHA1
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9000" and ann["prometheus.io/path"] == "/metrics"
    pod = tmpl["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["serviceAccountName"] == "server"
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["name"] == "server" and c["image"] == "example/mlops:1"
    assert c["args"] == [
        "serve", "--store", "/var/lib/mlops/store", "--namespace", "ml", "--model", "iris", "--version", "a-g1", "--sha256", SHA1,
        "--host", "0.0.0.0", "--port", "9000", "--max-batch-size", "1024", "--max-batch-delay-ms", "2", "--max-body-bytes", "4194304",
        "--allow-module", "sklearn.",
        "--feedback-dir", "/var/lib/mlops/feedback", "--feedback-keep-seconds", "3600", "--feedback-max-pending", "100000",
    ]
    assert c["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    # A terminating pod keeps answering until the Service stops routing to it, then drains within the grace period.
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert 5 + 20 < pod["terminationGracePeriodSeconds"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["store"] == {"name": "store", "mountPath": "/var/lib/mlops/store", "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp" and not mounts["feedback"].get("readOnly")
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["store"]["persistentVolumeClaim"] == {"claimName": "mlops-model-store"} and "emptyDir" in vols["tmp"]
    assert vols["feedback"]["persistentVolumeClaim"] == {"claimName": "mlops-feedback"}


def test_deployment_passes_restricted_pod_security() -> None:
    assert restricted_violations(ctl.build_deployment(_md(), "a-g1", SHA1, Settings())) == []
    scaled = _md(replicas=None, autoscaling={"minReplicas": 2, "maxReplicas": 5})
    assert restricted_violations(ctl.build_deployment(scaled, "a-g1", SHA1, Settings(feedback_volume=None))) == []


def test_server_tuning_and_switches_reach_the_command_line() -> None:
    md = _md(server={"maxBatchSize": 8, "maxBatchDelayMs": 0.5, "maxBodyBytes": 2048, "driftSensor": False},
             feedback={"enabled": True, "keepSeconds": 600, "maxPending": 500})
    args = _args(ctl.build_deployment(md, "a-g1", SHA1, Settings()))
    assert _flag(args, "--max-batch-size") == "8" and _flag(args, "--max-batch-delay-ms") == "0.5"
    assert _flag(args, "--max-body-bytes") == "2048" and "--no-drift-sensor" in args
    assert _flag(args, "--feedback-keep-seconds") == "600" and _flag(args, "--feedback-max-pending") == "500"


def test_feedback_off_mounts_nothing_and_says_so() -> None:
    dep = ctl.build_deployment(_md(feedback={"enabled": False}), "a-g1", SHA1, Settings())
    args = _args(dep)
    assert "--no-feedback" in args and "--feedback-dir" not in args and "--feedback-keep-seconds" not in args
    assert "feedback" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_feedback_without_a_feedback_volume_keeps_labels_in_memory_only() -> None:
    dep = ctl.build_deployment(_md(), "a-g1", SHA1, Settings(feedback_volume=None))
    args = _args(dep)
    assert "--feedback-dir" not in args and "--no-feedback" not in args and "--feedback-keep-seconds" in args
    assert "feedback" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_a_new_version_rolls_the_pods_but_keeps_the_selector() -> None:
    one = ctl.build_deployment(_md(), "a-g1", SHA1, Settings())
    two = ctl.build_deployment(_md(), "b-g1", SHA2, Settings())
    assert one["spec"]["selector"] == two["spec"]["selector"]
    assert one["metadata"]["labels"] == two["metadata"]["labels"]
    assert one["spec"]["template"]["metadata"]["annotations"] != two["spec"]["template"]["metadata"]["annotations"]
    assert two["spec"]["template"]["metadata"]["labels"]["mlops.dev/version"] == "b-g1"
    assert "mlops.dev/version" not in two["spec"]["selector"]["matchLabels"]


def test_service() -> None:
    svc = ctl.build_service(_md())
    assert svc["metadata"]["name"] == "iris" and svc["metadata"]["ownerReferences"][0]["uid"] == "md-uid"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == ctl.build_deployment(_md(), "a-g1", SHA1, Settings())["spec"]["selector"]["matchLabels"]


def test_autoscaling_makes_an_hpa_and_leaves_replicas_to_it() -> None:
    md = _md(replicas=None, resources=None, autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 60})
    hpa = ctl.build_hpa(md)
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["ownerReferences"][0]["uid"] == "md-uid"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    dep = ctl.build_deployment(md, "a-g1", SHA1, Settings())
    assert "replicas" not in dep["spec"]
    # CPU utilisation needs a CPU request.
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"
    assert ctl.build_pdb(md)["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("spec,pdb", [
    ({"replicas": 2}, True), ({"replicas": 1}, False), ({"replicas": None}, False), ({"replicas": 0}, False),
    ({"replicas": None, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, False),
    ({"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}, True),
])
def test_pdb_only_when_more_than_one_replica_is_wanted(spec, pdb) -> None:
    built = ctl.build_pdb(_md(**spec))
    assert (built is not None) == pdb
    if built:
        assert built["spec"]["selector"]["matchLabels"] == ctl.selector_labels(_md())
    assert (ctl.build_hpa(_md(**spec)) is not None) == ("autoscaling" in spec)


def test_replicas_default_to_one() -> None:
    assert ctl.build_deployment(_md(replicas=None), "a-g1", SHA1, Settings())["spec"]["replicas"] == 1


def test_children_no_longer_wanted_are_deleted() -> None:
    md = _md(replicas=None, autoscaling={"minReplicas": 2, "maxReplicas": 4})
    d, obs, _ = _converge(md, [_tj("a")])
    assert obs.hpa is not None and obs.pdb is not None
    del md["spec"]["autoscaling"]
    md["spec"]["replicas"] = 1
    md["metadata"]["generation"] = 2
    d = ctl.decide(md, [_tj("a")], obs, Settings(), NOW)
    assert sorted(_kinds(d.delete)) == ["HorizontalPodAutoscaler", "PodDisruptionBudget"]
    dep = next(o for o in d.apply if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 1


# --- status, conditions, history, events ------------------------------------------------------------------


def test_first_rollout_status_and_events() -> None:
    md = _md()
    d = ctl.decide(md, [_tj("a")], ctl.Observed(), Settings(cluster_domain="example.internal"), NOW)
    assert _kinds(d.apply) == ["Deployment", "Service", "PodDisruptionBudget"]
    s = d.status
    assert s["url"] == "http://iris.ml.svc.example.internal" and s["modelVersion"] == "a-g1" and s["observedGeneration"] == 1
    assert s["history"] == [{"version": "a-g1", "time": "2026-01-02T03:04:05Z", "reason": "Initial"}]
    assert _cond(s, "Ready")["status"] == "False" and _cond(s, "Progressing")["status"] == "True"
    assert _cond(s, "Reconciling")["status"] == "True" and _cond(s, "Stalled")["status"] == "False"
    assert [(e.reason, e.message) for e in d.events] == [("RolloutStarted", "rolling out a-g1 (Initial)")]


def test_progress_then_ready() -> None:
    md = _md()
    d = ctl.decide(md, [_tj("a")], ctl.Observed(), Settings(), NOW)
    md["status"] = d.status
    half = _world(d, ready=False)
    half.deployment = _rolled_out(half.deployment, ready=1)
    d = ctl.decide(md, [_tj("a")], half, Settings(), NOW)
    assert d.apply == [] and _cond(d.status, "Ready")["status"] == "False" and _cond(d.status, "Progressing")["status"] == "True"
    assert d.status["readyReplicas"] == 1 and d.status["replicas"] == 2 and d.events == []
    md["status"] = d.status
    full = copy.deepcopy(half)
    full.deployment = _rolled_out(half.deployment)
    d = ctl.decide(md, [_tj("a")], full, Settings(), NOW)
    ready = _cond(d.status, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Ready" and "a-g1" in ready["message"]
    assert _cond(d.status, "Progressing")["status"] == "False" and _cond(d.status, "Reconciling")["status"] == "False"
    assert [(e.type, e.reason) for e in d.events] == [("Normal", "Ready")]


def test_a_new_passing_version_rolls_out_and_is_recorded() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a")])
    assert _cond(md["status"], "Ready")["status"] == "True"
    later = NOW + timedelta(hours=2)
    tjs = [_tj("a"), _tj("b", sha=SHA2, done="2026-01-02T04:00:00Z")]
    d = ctl.decide(md, tjs, obs, Settings(), later)
    dep = next(o for o in d.apply if o["kind"] == "Deployment")
    assert _flag(_args(dep), "--version") == "b-g1" and dep["spec"]["template"]["metadata"]["annotations"]["mlops.dev/sha256"] == SHA2
    assert [h["version"] for h in d.status["history"]] == ["b-g1", "a-g1"]
    assert d.status["history"][0] == {"version": "b-g1", "time": "2026-01-02T05:04:05Z", "reason": "NewVersion"}
    assert _cond(d.status, "Ready")["reason"] == "RollingOut"
    assert [(e.reason, e.message) for e in d.events] == [("RolloutStarted", "rolling out a-g1 -> b-g1 (NewVersion)")]


def test_a_retrain_triggered_by_a_policy_is_recorded_as_promoted() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a")])
    retrain = _tj("iris-retrain-1", sha=SHA2, done="2026-01-02T04:00:00Z", labels={"mlops.dev/triggered-by": "iris"})
    d = ctl.decide(md, [_tj("a"), retrain], obs, Settings(), NOW)
    assert d.status["history"][0]["reason"] == "Promoted"


def test_repinning_is_recorded_as_pinned() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a"), _tj("b", sha=SHA2, done="2026-01-02T00:00:00Z")])
    assert md["status"]["modelVersion"] == "b-g1"
    md["spec"]["version"] = "a-g1"
    d = ctl.decide(md, [_tj("a"), _tj("b", sha=SHA2, done="2026-01-02T00:00:00Z")], obs, Settings(), NOW)
    assert d.status["history"][0]["reason"] == "Pinned" and d.status["modelVersion"] == "a-g1"


def test_history_is_bounded_and_newest_first() -> None:
    md = _md()
    obs = ctl.Observed()
    tjs = []
    for i in range(6):
        tjs.append(_tj(f"r{i}", sha=f"{i:02d}" * 32, done=f"2026-01-0{i + 1}T00:00:00Z"))
        _, obs, _ = _converge(md, tjs, Settings(history_limit=3), obs)
    assert [h["version"] for h in md["status"]["history"]] == ["r5-g1", "r4-g1", "r3-g1"]


def test_a_stuck_rollout_is_stalled_while_the_old_pods_serve() -> None:
    md = _md()
    _, obs, _ = _converge(md, [_tj("a")])
    tjs = [_tj("a"), _tj("b", sha=SHA2, done="2026-01-02T04:00:00Z")]
    d = ctl.decide(md, tjs, obs, Settings(), NOW)
    md["status"] = d.status
    obs = _world(d, obs, ready=False)
    obs.deployment["status"] = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2,
                                "availableReplicas": 2, "conditions": [{"type": "Progressing", "status": "False",
                                                                        "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}
    d = ctl.decide(md, tjs, obs, Settings(), NOW)
    assert d.apply == []
    assert _cond(d.status, "Ready")["reason"] == "ProgressDeadlineExceeded" and _cond(d.status, "Stalled")["status"] == "True"
    assert _cond(d.status, "Progressing")["status"] == "False"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "ProgressDeadlineExceeded")]


def test_condition_order_and_transition_times_are_stable() -> None:
    md = _md()
    d, obs, _ = _converge(md, [_tj("a")])
    assert [c["type"] for c in d.status["conditions"]] == ["Ready", "Progressing", "Reconciling", "Stalled"]
    again = ctl.decide(md, [_tj("a")], obs, Settings(), NOW + timedelta(hours=5))
    assert again.status == d.status


# --- idempotency -------------------------------------------------------------------------------------------


def test_deciding_twice_over_the_same_world_changes_nothing() -> None:
    md = _md()
    d, obs, events = _converge(md, [_tj("a")])
    assert [e.reason for e in events] == ["RolloutStarted", "Ready"]
    first = ctl.decide(md, [_tj("a")], obs, Settings(), NOW)
    second = ctl.decide(md, [_tj("a")], obs, Settings(), NOW)
    for x in (first, second):
        assert x.apply == [] and x.delete == [] and x.events == [] and x.status == md["status"]


def test_needs_apply_ignores_server_defaults_but_sees_changes_to_our_fields() -> None:
    want = ctl.desired_children(_md(), "a-g1", SHA1, Settings()).deployment
    have = _server_side(want)
    assert not ctl.needs_apply(want, have)
    scaled = copy.deepcopy(have)
    scaled["spec"]["replicas"] = 5  # someone scaled it by hand
    assert ctl.needs_apply(want, scaled)
    # A field we stop setting is still "contained", but the digest changed: applying again removes it.
    with_sa = ctl.desired_children(_md(), "a-g1", SHA1, Settings(service_account="server")).deployment
    have = _server_side(with_sa)
    assert ctl.contains(have, {k: v for k, v in want.items() if k != "metadata"})
    assert ctl.needs_apply(want, have)


def test_contains_matches_named_lists_by_name() -> None:
    observed = {"containers": [{"name": "sidecar", "image": "x"}, {"name": "server", "image": "y", "extra": 1}]}
    assert ctl.contains(observed, {"containers": [{"name": "server", "image": "y"}]})
    assert not ctl.contains(observed, {"containers": [{"name": "server", "image": "z"}]})
    assert ctl.contains({"args": ["a", "b"]}, {"args": ["a", "b"]}) and not ctl.contains({"args": ["a", "b", "c"]}, {"args": ["a", "b"]})
    assert ctl.contains({"cpu": "1"}, {"cpu": 1}) and not ctl.contains({"x": "True"}, {"x": True})


def test_lineage_of_a_training_job() -> None:
    mds = [_md(), {**_md(), "metadata": {"name": "wine"}, "spec": {"model": "wine"}}, {**_md(), "metadata": {"name": "iris-canary"}}]
    assert ctl.model_deployments_for(_tj("a"), mds) == ["iris", "iris-canary"]
    assert ctl.model_deployments_for(_tj("z", model="wine"), mds) == ["wine"]


# --- the reconcile loop over a Cluster -----------------------------------------------------------------------


class FakeCluster:
    """Just enough of a cluster to count writes: applies store the object with server-side defaults."""

    def __init__(self, objs: list[dict]):
        self.objects = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objs}
        self.writes: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str]] = []

    async def get(self, res: Resource, namespace: str, name: str):
        return copy.deepcopy(self.objects.get((res.kind, name)))

    async def list(self, res: Resource, namespace: str, labels=None, fields=None):
        return [copy.deepcopy(o) for (k, _), o in sorted(self.objects.items()) if k == res.kind and matches_fields(o, fields)]

    async def apply(self, obj: dict):
        key = (obj["kind"], obj["metadata"]["name"])
        old = self.objects.get(key)
        self.objects[key] = _server_side(obj, generation=(old["metadata"]["generation"] + 1) if old else 1)
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))
        return self.objects[key]

    async def create(self, obj: dict):  # pragma: no cover - not used by this reconcile
        raise AssertionError("create is not used")

    async def delete(self, res: Resource, namespace: str, name: str) -> None:
        self.objects.pop((res.kind, name), None)
        self.writes.append(("delete", res.kind, name))

    async def patch_status(self, res: Resource, namespace: str, name: str, status: dict, resource_version=None) -> None:
        self.objects[(res.kind, name)]["status"] = copy.deepcopy(status)
        self.writes.append(("status", res.kind, name))

    async def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


def test_reconcile_applies_once_then_stays_quiet() -> None:
    cluster = FakeCluster([_md(), _tj("a")])
    run = lambda: asyncio.run(reconcile_model_deployment(cluster, "ml", "iris", Settings(), clock=lambda: NOW)).status  # noqa: E731
    status = run()
    assert status["modelVersion"] == "a-g1"
    assert sorted(w[1] for w in cluster.writes if w[0] == "apply") == ["Deployment", "PodDisruptionBudget", "Service"]
    assert cluster.events == [("Normal", "RolloutStarted")]
    cluster.objects[("Deployment", "iris")] = _rolled_out(cluster.objects[("Deployment", "iris")])
    cluster.writes.clear()
    run()
    assert cluster.writes == [("status", "ModelDeployment", "iris")] and cluster.events[-1] == ("Normal", "Ready")
    cluster.writes.clear()
    run()
    run()
    assert cluster.writes == []  # nothing changed: no write at all


def test_reconcile_deletes_what_is_no_longer_wanted_and_ignores_a_vanished_object() -> None:
    cluster = FakeCluster([_md(), _tj("a")])
    asyncio.run(reconcile_model_deployment(cluster, "ml", "iris", Settings(), clock=lambda: NOW))
    cluster.objects[("ModelDeployment", "iris")]["spec"]["replicas"] = 1
    asyncio.run(reconcile_model_deployment(cluster, "ml", "iris", Settings(), clock=lambda: NOW))
    assert ("delete", "PodDisruptionBudget", "iris") in cluster.writes
    assert ("PodDisruptionBudget", "iris") not in cluster.objects
    assert asyncio.run(reconcile_model_deployment(cluster, "ml", "gone", Settings())).status is None


def test_children_map_back_to_their_model_deployment() -> None:
    dep = ctl.build_deployment(_md(), "a-g1", SHA1, Settings())
    assert model_deployment_of(dep) == "iris"
    assert model_deployment_of({"metadata": {"labels": {"mlops.dev/model-deployment": "x"}}}) == "x"
    assert model_deployment_of({"metadata": {}}) is None


def test_an_autoscaler_scaling_up_is_not_a_rollout() -> None:
    md = _md(replicas=None, autoscaling={"minReplicas": 2, "maxReplicas": 6})
    _, obs, _ = _converge(md, [_tj("a")])
    assert _cond(md["status"], "Ready")["status"] == "True"
    obs.deployment["spec"]["replicas"] = 4  # the HPA asked for more; two are still starting
    obs.deployment["metadata"]["generation"] += 1
    obs.deployment["status"].update(observedGeneration=obs.deployment["metadata"]["generation"], replicas=4, updatedReplicas=4,
                                    readyReplicas=2, availableReplicas=2)
    d = ctl.decide(md, [_tj("a")], obs, Settings(), NOW)
    assert d.apply == [] and _cond(d.status, "Ready")["status"] == "True" and d.events == []
    assert d.status["replicas"] == 4 and d.status["readyReplicas"] == 2


def test_a_model_trained_on_another_scikit_learn_is_reported_before_any_request() -> None:
    tj = _tj("a")
    tj["status"]["lineage"] = {"scikitLearn": "1.5.2"}
    skewed = Settings(serving_scikit_learn="1.6.1")
    d = ctl.decide(_md(), [tj], ctl.Observed(), skewed, NOW)
    cond = _cond(d.status, "LibrariesMatch")
    assert cond["status"] == "False" and cond["reason"] == "InconsistentVersion"
    assert "1.5.2" in cond["message"] and "1.6.1" in cond["message"] and "a-g1" in cond["message"]
    assert ("Warning", "InconsistentVersion") in [(e.type, e.reason) for e in d.events]
    md = _md()
    md["status"] = d.status
    again = ctl.decide(md, [tj], ctl.Observed(), skewed, NOW)
    assert "InconsistentVersion" not in [e.reason for e in again.events], "one event per transition"
    assert _cond(ctl.decide(_md(), [tj], ctl.Observed(), Settings(serving_scikit_learn="1.5.2"), NOW).status,
                 "LibrariesMatch")["status"] == "True"
    unknown = ctl.decide(_md(), [_tj("a")], ctl.Observed(), skewed, NOW).status  # a run from before lineage recorded it
    assert "LibrariesMatch" not in {c["type"] for c in unknown["conditions"]}


def test_grpc_is_off_by_default_and_one_field_or_the_operator_default_turns_it_on() -> None:
    def ports(md: dict, settings: Settings) -> tuple[list, list, list]:
        dep = ctl.build_deployment(md, "a-g1", SHA1, settings)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        return c["args"], c["ports"], ctl.build_service(md, settings)["spec"]["ports"]

    args, cports, sports = ports(_md(), Settings())
    assert "--grpc-port" not in args and [p["name"] for p in cports] == ["http"] and [p["name"] for p in sports] == ["http"]
    for md, settings in ((_md(server={"grpc": True}), Settings()), (_md(), Settings(server_grpc=True))):
        args, cports, sports = ports(md, settings)
        assert _flag(args, "--grpc-port") == "8081"
        assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in cports
        assert {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"} in sports
    args, cports, _ = ports(_md(server={"grpc": False}), Settings(server_grpc=True))  # the field wins over the default
    assert "--grpc-port" not in args and len(cports) == 1


def test_grpc_default_comes_from_the_environment() -> None:
    from mlops_operator.k8s.config import settings_from_env

    assert settings_from_env({}).server_grpc is False
    assert settings_from_env({"MLOPS_SERVER_GRPC": "true"}).server_grpc is True
    assert settings_from_env({"MLOPS_SERVER_GRPC": "false"}).server_grpc is False


def test_canary_router_reaches_the_challenger_by_its_cluster_ip_once_its_service_exists() -> None:
    """No cluster DNS needed by the champion's pods; the DNS name only where a Service has no IP (local mode)."""
    md, settings = _md(), Settings()
    assert ctl.challenger_url(md, settings, None) is None  # not created yet: no router until it is
    with_ip = {"spec": {"clusterIP": "10.0.0.72", "ports": [{"port": 80}]}}
    assert ctl.challenger_url(md, settings, with_ip) == "http://10.0.0.72:80"
    v6 = {"spec": {"clusterIP": "fd00::12", "ports": [{"port": 80}]}}
    assert ctl.challenger_url(md, settings, v6) == "http://[fd00::12]:80"
    name = md["metadata"]["name"]
    assert ctl.challenger_url(md, settings, {"spec": {}}) == f"http://{name}-challenger.{md['metadata'].get('namespace', 'default')}.svc.cluster.local"
