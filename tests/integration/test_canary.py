"""Canary and shadow rollouts of a ModelDeployment against a real kube-apiserver (with the Deployment,
ReplicaSet and garbage-collector controllers): the challenger's Deployment and Service, the champion's
router arguments per step, status, events, rollback and promotion.

The control plane runs no kubelet, so no model server runs in these pods: the
rollout's evidence comes from :class:`Counters`, a stand-in for scraping the
pods' ``/metrics`` that answers per version with the counters the test sets.
The router and the scrape themselves run against real servers in
tests/unit/test_router.py; the decision table in tests/unit/test_rollout_analysis.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from mlops_operator.controllers.cluster import DEPLOYMENTS, MODEL_DEPLOYMENTS, PODS, SERVICES
from mlops_operator.controllers.reconcile.modeldeployment import reconcile_model_deployment
from mlops_operator.k8s.client import KubeCluster
from tests.envtest.kubelet import make_serving_pods_ready
from tests.integration.test_modeldeployment import SETTINGS, SHA1, SHA2, _apply, _example, _get, _template_version, _training_job
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
SHA3 = "c3" * 32
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Counters:
    """Stands in for the servers' /metrics (no server process runs without a kubelet): counters by version."""

    def __init__(self) -> None:
        self.by_version: dict[str, dict] = {}

    async def rollout_counters(self, pod: dict) -> dict | None:
        version = (pod["metadata"].get("labels") or {}).get("mlops.dev/version")
        c = self.by_version.get(version)
        return None if c is None else {"version": version, "task": "classification", "started": "t0", "requests": 100,
                                       "serverErrors": 0, "latency": [100], **c}


def _pods_ready(cluster: KubeCluster, namespace: str, want: int, challenger: str | None = None) -> None:
    """What a kubelet would report: the serving pods (both sides) run, are ready and have an address."""
    if challenger:  # its ReplicaSet made both of its pods
        wait_until(lambda: len([p for p in asyncio.run(cluster.list(PODS, namespace, {"mlops.dev/version": challenger}))
                                if not p["metadata"].get("deletionTimestamp")]) >= 2, what=f"the pods of {challenger}")
    make_serving_pods_ready(cluster, namespace, "iris", want)
    for i, pod in enumerate(asyncio.run(cluster.list(PODS, namespace, {"mlops.dev/model-deployment": "iris"}))):
        status = {**pod["status"], "podIP": f"10.0.0.{i + 1}", "podIPs": [{"ip": f"10.0.0.{i + 1}"}]}
        asyncio.run(cluster.patch_status(PODS, namespace, pod["metadata"]["name"], status))


def _rollout_md(**rollout) -> dict:  # type: ignore[no-untyped-def]
    md = _example("modeldeployment.yaml")
    md["spec"]["rollout"] = {"strategy": "canary", "steps": [50, 100], "stepDuration": "10s",
                             "analysis": {"minSamples": 100, "maxSamples": 1000}, **rollout}
    return md


def _reconcile(cluster: KubeCluster, namespace: str, probe: Counters, at: datetime) -> dict:
    return asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", SETTINGS, clock=lambda: at, probe=probe)).status


def _args(dep: dict) -> list[str]:
    return dep["spec"]["template"]["spec"]["containers"][0]["args"]


def _route(dep: dict) -> tuple[str | None, str | None, str | None]:
    args = _args(dep)

    def flag(name: str) -> str | None:
        return args[args.index(name) + 1] if name in args else None

    return flag("--route-to"), flag("--route-mode"), flag("--route-weight")


def _events(control_plane, namespace: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    items = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [(e["reason"], e["message"]) for e in items]


def _gone(cluster: KubeCluster, res, namespace: str, name: str) -> bool:  # type: ignore[no-untyped-def]
    return _get(cluster, res, namespace, name) is None


def test_canary_rolls_back_a_worse_challenger_and_promotes_a_better_one(crds, namespace) -> None:
    control_plane = crds
    cluster = KubeCluster(control_plane.api_client())
    _training_job(control_plane, cluster, namespace, "iris-v1", sha=SHA1, done="2026-01-01T00:00:00Z")
    applied = _rollout_md()
    _apply(control_plane, namespace, applied)
    probe = Counters()
    status = _reconcile(cluster, namespace, probe, T0)
    assert status["modelVersion"] == "iris-v1-g1" and "rollout" not in status  # the first version just serves
    make_serving_pods_ready(cluster, namespace, "iris", 2)

    # A better-looking run appears: it becomes a challenger, not the serving version.
    _training_job(control_plane, cluster, namespace, "iris-v2", sha=SHA2, done="2026-01-02T00:00:00Z")
    status = _reconcile(cluster, namespace, probe, T0)
    ro = status["rollout"]
    assert (ro["phase"], ro["champion"], ro["challenger"], ro["step"], ro["steps"], ro["weight"]) == \
        ("Analysing", "iris-v1-g1", "iris-v2-g1", 1, 2, 50)
    assert status["modelVersion"] == "iris-v1-g1"
    champion, challenger = _get(cluster, DEPLOYMENTS, namespace), _get(cluster, DEPLOYMENTS, namespace, "iris-challenger")
    assert _template_version(champion) == "iris-v1-g1" and _template_version(challenger) == "iris-v2-g1"
    # The router needs the challenger Service's address: set on the reconcile after the Service exists (its
    # watch event), as its ClusterIP, so the champion's pods need no cluster DNS to reach the challenger.
    assert _route(champion) == (None, None, None)
    status = _reconcile(cluster, namespace, probe, T0)
    svc, csvc = _get(cluster, SERVICES, namespace), _get(cluster, SERVICES, namespace, "iris-challenger")
    champion = _get(cluster, DEPLOYMENTS, namespace)
    assert _route(champion) == (f"http://{csvc['spec']['clusterIP']}:{csvc['spec']['ports'][0]['port']}", "canary", "0.5")
    assert "--route-to" not in _args(challenger) and challenger["spec"]["replicas"] == 2
    # The Service clients use selects only the champion's pods; the challenger's Service only the challenger's.
    assert svc["spec"]["selector"] == {"app.kubernetes.io/component": "serving", "mlops.dev/model-deployment": "iris"}
    assert csvc["spec"]["selector"] == challenger["spec"]["selector"]["matchLabels"] != svc["spec"]["selector"]
    assert csvc["metadata"]["ownerReferences"][0]["name"] == "iris"

    # The challenger's pods run; its labels come back wrong far more often than the champion's.
    _pods_ready(cluster, namespace, 4, "iris-v2-g1")
    probe.by_version = {"iris-v1-g1": {"labelled": 1000, "errors": 20}, "iris-v2-g1": {"labelled": 150, "errors": 45}}
    status = _reconcile(cluster, namespace, probe, T0 + timedelta(seconds=5))
    assert status["rollout"]["phase"] == "Analysing" and status["rollout"]["reason"] == "StepTime"  # held: 10 s per step
    assert status["rollout"]["challengerEvidence"]["labelled"] >= 150
    status = _reconcile(cluster, namespace, probe, T0 + timedelta(seconds=11))
    ro = status["rollout"]
    assert (ro["phase"], ro["decision"], ro["reason"]) == ("RolledBack", "RollBack", "Worse") and ro["pWorse"] < 0.01
    assert status["rejectedVersions"] == ["iris-v2-g1"] and status["modelVersion"] == "iris-v1-g1"
    assert ro["challengerEvidence"]["errorRate"] == pytest.approx(0.3) and ro["championEvidence"]["errorRate"] == pytest.approx(0.02)
    champion = _get(cluster, DEPLOYMENTS, namespace)
    assert _route(champion) == (None, None, None) and _template_version(champion) == "iris-v1-g1"
    wait_until(lambda: _gone(cluster, DEPLOYMENTS, namespace, "iris-challenger") and _gone(cluster, SERVICES, namespace, "iris-challenger"),
               what="the challenger's Deployment and Service to go")
    assert any(r == "RolledBack" and "iris-v2-g1" in m for r, m in _events(control_plane, namespace))
    # Not retried: reconciling again leaves the champion alone and says why.
    status = _reconcile(cluster, namespace, probe, T0 + timedelta(seconds=20))
    assert _gone(cluster, DEPLOYMENTS, namespace, "iris-challenger") and status["rollout"]["phase"] == "RolledBack"

    # A newer run is tried, looks as good as the champion, climbs to 100 % and is promoted.
    _training_job(control_plane, cluster, namespace, "iris-v3", sha=SHA3, done="2026-01-03T00:00:00Z")
    t = T0 + timedelta(minutes=1)
    status = _reconcile(cluster, namespace, probe, t)
    assert status["rollout"]["challenger"] == "iris-v3-g1" and status["rollout"]["weight"] == 50
    assert _template_version(_get(cluster, DEPLOYMENTS, namespace, "iris-challenger")) == "iris-v3-g1"
    _pods_ready(cluster, namespace, 4, "iris-v3-g1")
    probe.by_version = {"iris-v1-g1": {"labelled": 2000, "errors": 40}, "iris-v3-g1": {"labelled": 600, "errors": 6}}
    status = _reconcile(cluster, namespace, probe, t + timedelta(seconds=11))
    assert (status["rollout"]["step"], status["rollout"]["weight"], status["rollout"]["decision"]) == (2, 100, "Advance")
    assert _route(_get(cluster, DEPLOYMENTS, namespace))[2] == "1"
    probe.by_version["iris-v3-g1"] = {"labelled": 900, "errors": 9}
    status = _reconcile(cluster, namespace, probe, t + timedelta(seconds=22))
    ro = status["rollout"]
    assert (ro["phase"], ro["reason"]) == ("Promoted", "NotWorse"), ro["message"]
    assert status["modelVersion"] == "iris-v3-g1" and status["history"][0] == {**status["history"][0], "version": "iris-v3-g1",
                                                                                "reason": "CanaryPromoted"}
    champion = _get(cluster, DEPLOYMENTS, namespace)
    assert _template_version(champion) == "iris-v3-g1" and _route(champion) == (None, None, None)
    wait_until(lambda: _gone(cluster, DEPLOYMENTS, namespace, "iris-challenger"), what="the challenger's Deployment to go")
    assert any(r == "RolloutPromoted" for r, _ in _events(control_plane, namespace))
    # GitOps: the operator wrote status only; the spec is what was applied.
    md = _get(cluster, MODEL_DEPLOYMENTS, namespace)
    assert md["spec"]["rollout"]["strategy"] == "canary" and "approvedVersion" not in md["spec"]["rollout"]
    assert md["metadata"]["generation"] == 1
    header = control_plane.kubectl("get", "md", "-n", namespace, "-o", "wide").stdout.splitlines()[0]
    assert all(col in header for col in ("ROLLOUT", "CHALLENGER", "WEIGHT"))


def test_shadow_with_manual_approval_waits_for_the_version_set_in_git(crds, namespace) -> None:
    control_plane = crds
    cluster = KubeCluster(control_plane.api_client())
    _training_job(control_plane, cluster, namespace, "iris-v1", sha=SHA1, done="2026-01-01T00:00:00Z")
    md = _rollout_md(strategy="shadow", approval="manual")
    _apply(control_plane, namespace, md)
    probe = Counters()
    _reconcile(cluster, namespace, probe, T0)
    make_serving_pods_ready(cluster, namespace, "iris", 2)
    _training_job(control_plane, cluster, namespace, "iris-v2", sha=SHA2, done="2026-01-02T00:00:00Z")
    status = _reconcile(cluster, namespace, probe, T0)
    assert status["rollout"]["strategy"] == "shadow" and status["rollout"]["weight"] == 0
    _reconcile(cluster, namespace, probe, T0)  # the challenger Service's watch event: the router gets its address
    csvc = _get(cluster, SERVICES, namespace, "iris-challenger")
    assert _route(_get(cluster, DEPLOYMENTS, namespace))[:2] == (f"http://{csvc['spec']['clusterIP']}:80", "shadow")
    _pods_ready(cluster, namespace, 4, "iris-v2-g1")
    probe.by_version = {"iris-v1-g1": {"labelled": 1000, "errors": 30}, "iris-v2-g1": {"labelled": 1000, "errors": 25}}
    status = _reconcile(cluster, namespace, probe, T0 + timedelta(seconds=11))
    cond = next(c for c in status["conditions"] if c["type"] == "AwaitingApproval")
    assert status["rollout"]["phase"] == "AwaitingApproval" and cond["status"] == "True" and "approvedVersion: iris-v2-g1" in cond["message"]
    assert status["modelVersion"] == "iris-v1-g1" and _get(cluster, DEPLOYMENTS, namespace, "iris-challenger") is not None
    # The person approves in Git: the field goes into the manifest, and the operator promotes.
    md["spec"]["rollout"]["approvedVersion"] = "iris-v2-g1"
    _apply(control_plane, namespace, md)
    status = _reconcile(cluster, namespace, probe, T0 + timedelta(seconds=20))
    cond = next(c for c in status["conditions"] if c["type"] == "AwaitingApproval")
    assert status["rollout"]["phase"] == "Promoted" and status["modelVersion"] == "iris-v2-g1" and cond["status"] == "False"
    assert status["history"][0]["reason"] == "ShadowPromoted"
    assert _template_version(_get(cluster, DEPLOYMENTS, namespace)) == "iris-v2-g1"


@pytest.mark.parametrize("rollout,message", [
    ({"strategy": "blue-green"}, "spec.rollout.strategy"),
    ({"steps": [50, 10]}, "steps must be strictly increasing"),
    ({"steps": [0]}, "spec.rollout.steps[0]"),
    ({"analysis": {"minSamples": 500, "maxSamples": 100}}, "minSamples must not exceed maxSamples"),
])
def test_canary_spec_errors_are_refused_by_the_api_server_naming_the_field(crds, namespace, rollout, message) -> None:
    md = _example("modeldeployment.yaml")
    md["spec"]["rollout"] = rollout
    import tempfile
    from pathlib import Path

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "md.yaml"
        path.write_text(yaml.safe_dump(md))
        out = crds.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path), check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
