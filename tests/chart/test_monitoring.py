"""The chart's monitoring objects: ServiceMonitors, alert rules, the Grafana dashboard.

Every PromQL expression is parsed by Prometheus' own parser (hack/monitoring),
and every series and label it names is one the operator or a real model
server exports, or one Prometheus adds. The objects are applied (dry-run) to
the test API server with the Prometheus Operator's own CRDs installed.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.controllers import modeldeployment as md_controller
from tests.chart.test_chart import (CHART, RELEASE, RELEASE_NS, ROOT, SCENARIOS, WATCHED, Kubectl, Obj, _namespaces,
                                    _yaml, cluster, of_kind, one, operator_deployment, render, rendered)
from tests.unit.test_server_support import Server, make_store

__all__ = ["cluster", "rendered"]  # fixtures used here, defined beside the other chart tests

DASHBOARD = CHART / "files" / "dashboards" / "mlops-operator.json"

# Labels Prometheus puts on every series of a target found through a ServiceMonitor.
TARGET_LABELS = {"namespace", "service", "pod", "endpoint", "container", "job", "instance"}


def promql(tools: Path, exprs: list[str]) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run([str(tools / "promqlcheck")], input=json.dumps(exprs), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def rule_exprs(objs: list[Obj]) -> list[str]:
    rule = one(objs, "PrometheusRule")
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Panel queries, and the metric selectors inside the variables' label_values(...)."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)", var["query"]["query"])
            assert m, var
            exprs.append(m.group(1))
    return exprs


def _sample_names(text: str) -> dict[str, set[str]]:
    """Series name -> label names, from an exposition, with the sample names each family type has."""
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        names = {"counter": [f"{fam.name}_total"], "histogram": [f"{fam.name}_bucket", f"{fam.name}_sum", f"{fam.name}_count"],
                 "summary": [f"{fam.name}_sum", f"{fam.name}_count"]}.get(fam.type, [fam.name])
        for n in names:
            out.setdefault(n, set())
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Every series the operator and a real model server export (after a few requests), with their labels."""
    from mlops_operator.k8s import metrics
    from mlops_operator.k8s import leader  # noqa: F401  (mlops_operator_leader)

    metrics.observe_status("ModelDeployment", "ns", "md", {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    metrics.RECONCILES.labels("ModelDeployment", "ok").inc()
    metrics.RECONCILE_SECONDS.labels("ModelDeployment").observe(0.01)

    metrics.DRIFT_SCORE.labels("ns", "p", "dataDrift", "f").set(0.1)
    metrics.DRIFT_CHECKS.labels("ns", "p", "Drift").inc()
    metrics.DRIFT_BREACHES.labels("ns", "p").inc()
    metrics.DRIFT_RETRAINS.labels("ns", "p", "Failed").inc()
    metrics.SENSOR_ERRORS.labels("ns", "p").inc()
    series = _sample_names(generate_latest().decode())

    root = tmp_path_factory.mktemp("store")
    models = make_store(root)
    server = Server("--store", str(root), "--model", "iris")
    try:
        X = models["iris"][1]
        assert server.request("POST", "/v1/models/iris:predict", {"instances": X[:5].tolist()})[0] == 200
        assert server.request("POST", "/v1/models/iris:predict", {"instances": "nope"})[0] == 400
        for name, labels in _sample_names(server.metrics()).items():
            series.setdefault(name, set()).update(labels)
    finally:
        assert server.stop() == 0
    return series


def _model_server_service() -> Obj:
    """The Service the operator creates for examples/iris/modeldeployment.yaml."""
    md = yaml.safe_load((ROOT / "examples" / "iris" / "modeldeployment.yaml").read_text())
    md["metadata"].update(namespace=WATCHED[0], uid="0000")
    return md_controller.build_service(md)


def _sanitized(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------


def test_monitoring_is_off_by_default(rendered: dict[str, list[Obj]]) -> None:
    kinds = {o["kind"] for o in rendered["default"]}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_service_monitor_needs_the_metrics_service(helm: Any, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}))
    proc = helm("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0 and "needs metrics.enabled" in proc.stderr


def test_checker_reports_a_broken_expression(monitoring_tools: Path) -> None:
    code, results = promql(monitoring_tools, ["sum(rate(mlops_requests_total[5m])", "up == 1"])
    assert code == 1
    assert "unclosed left parenthesis" in results[0]["error"] and "error" not in results[1]


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_parse_and_name_only_exported_series(source: str, rendered: dict[str, list[Obj]], monitoring_tools: Path,
                                                     exported: dict[str, set[str]]) -> None:
    objs = rendered["monitoring"]
    if source == "rules":
        exprs = rule_exprs(objs)
    else:
        (cm,) = of_kind(objs, "ConfigMap")
        exprs = dashboard_exprs(json.loads(cm["data"]["mlops-operator.json"]))
    assert len(exprs) >= 5
    code, results = promql(monitoring_tools, exprs)
    assert code == 0, [r for r in results if "error" in r]
    monitors = of_kind(objs, "ServiceMonitor")
    target_labels = TARGET_LABELS | {_sanitized(label) for m in monitors for label in m["spec"].get("targetLabels", [])}
    for r in results:
        assert r["metrics"], r["expr"]
        for metric in r["metrics"]:
            assert metric == "up" or metric in exported, f"{metric} in {r['expr']!r} is not exported"
        known = set(target_labels) | {"le"}
        for metric in r["metrics"]:
            known |= exported.get(metric, set())
        assert set(r["labels"]) <= known, f"{r['expr']!r} uses labels {set(r['labels']) - known} no series has"


def test_alert_annotations_use_labels_the_alert_keeps(rendered: dict[str, list[Obj]], monitoring_tools: Path) -> None:
    """{{ $labels.x }} in an annotation renders empty unless the expression keeps x (its by-clause)."""
    rule = one(rendered["monitoring"], "PrometheusRule")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"MlopsOperatorDown", "MlopsDriftDetected", "MlopsRetrainFailed", "MlopsModelNotReady",
                                           "MlopsModelServerDown", "MlopsModelServerErrors", "MlopsTrainingFailed",
                                           "MlopsResourceStalled"}
    for r in rules:
        used = set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", json.dumps(r["annotations"])))
        by = set(re.findall(r"by \(([^)]*)\)", r["expr"]))
        kept = {label.strip() for group in by for label in group.split(",")}
        assert used <= kept, f"{r['alert']}: annotations use {used - kept}, the expression keeps {kept}"
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"]


def test_operator_down_alert_names_the_scraped_job(rendered: dict[str, list[Obj]]) -> None:
    """Prometheus names a ServiceMonitor's job after the Service: the alert must use that name."""
    objs = rendered["monitoring"]
    (service,) = [s for s in of_kind(objs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    rule = one(objs, "PrometheusRule")
    (down,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "MlopsOperatorDown"]
    assert f'job="{service["metadata"]["name"]}"' in down["expr"] and f'namespace="{RELEASE_NS}"' in down["expr"]


def test_service_monitors_select_what_exists(rendered: dict[str, list[Obj]]) -> None:
    for scenario in ("monitoring", "all-on"):
        objs = rendered[scenario]
        monitors = {m["metadata"]["name"]: m for m in of_kind(objs, "ServiceMonitor")}
        assert len(monitors) == 2
        fullname = operator_deployment(objs)["metadata"]["name"]
        op, servers = monitors[fullname], monitors[f"{fullname}-model-servers"]
        for m in (op, servers):
            assert m["metadata"]["labels"]["release"] == "prom"  # what the user's Prometheus selects by

        (metrics_service,) = [s for s in of_kind(objs, "Service") if s["metadata"]["name"] == f"{fullname}-metrics"]
        assert _matches(op["spec"]["selector"]["matchLabels"], metrics_service["metadata"]["labels"])
        assert op["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
        assert {p["name"] for p in metrics_service["spec"]["ports"]} >= {e["port"] for e in op["spec"]["endpoints"]}
        assert op["spec"]["endpoints"][0]["honorLabels"] is True

        service = _model_server_service()
        assert _matches(servers["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert set(servers["spec"]["targetLabels"]) <= set(service["metadata"]["labels"])
        assert {e["port"] for e in servers["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
        expected_ns = {"matchNames": WATCHED} if SCENARIOS[scenario].get("watchNamespaces") else {"any": True}
        assert servers["spec"]["namespaceSelector"] == expected_ns


def test_alert_delay_is_configurable(rendered: dict[str, list[Obj]]) -> None:
    def delay(scenario: str) -> str:
        rule = one(rendered[scenario], "PrometheusRule")
        (r,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "MlopsModelNotReady"]
        return r["for"]

    assert (delay("monitoring"), delay("all-on")) == ("10m", "5m")


def test_dashboard_is_a_grafana_dashboard(rendered: dict[str, list[Obj]]) -> None:
    (cm,) = of_kind(rendered["all-on"], "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "ml"
    dashboard = json.loads(cm["data"]["mlops-operator.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mlops-operator" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert set(re.findall(r"\$([a-z_]+)", target["expr"])) <= variables, target["expr"]


# --------------------------------------------------------------------------
# Against the real API server, with the Prometheus Operator's CRDs


@pytest.mark.integration
@pytest.mark.parametrize("scenario", ["monitoring", "all-on"])
def test_monitoring_objects_dry_run(scenario: str, helm: Any, cluster: tuple[Kubectl, str], monitoring_crds: list[str],
                                    tmp_path: Path) -> None:
    kubectl, suffix = cluster
    release_ns = f"mlops-system-{suffix}"
    values = json.loads(json.dumps(SCENARIOS[scenario]))
    watched = [f"{n}-{suffix}" for n in values.get("watchNamespaces", [])]
    if watched:
        values["watchNamespaces"] = watched
    objs = render(helm, values, tmp_path, release=f"mon-{suffix}", namespace=release_ns)
    monitoring = [o for o in objs if o["kind"] in ("ServiceMonitor", "PrometheusRule", "ConfigMap")]
    assert len(monitoring) == 4
    _namespaces(kubectl, suffix, [release_ns, *watched])
    proc = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=chart-test", "-f", "-",
                   stdin=_yaml(monitoring))
    assert proc.stdout.count("(server dry run)") == len(monitoring), proc.stdout
    # The CRD's schema is really enforced: a misspelt field of a rule is refused.
    bad = json.loads(json.dumps(one(monitoring, "PrometheusRule")))
    bad["spec"]["groups"][0]["rules"][0]["exprr"] = bad["spec"]["groups"][0]["rules"][0].pop("expr")
    proc = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=chart-test", "-f", "-",
                   stdin=_yaml([bad]), check=False)
    assert proc.returncode != 0 and "exprr" in proc.stderr, proc.stderr
