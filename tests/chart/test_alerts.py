"""The chart's alert rules, evaluated by Prometheus' own promtool on series shaped like ours.

`promtool check rules` validates the rendered rules (expressions, durations,
annotation templates); `promtool test rules` replays input series minute by
minute and compares the alerts that fire, with their labels and rendered
annotations, against what a user should see. Each case also has a healthy
twin in which the alert must stay silent.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import Helm
from tests.chart.test_chart import CHART, RELEASE, RELEASE_NS, Obj

OPERATOR_JOB = f"{RELEASE}-mlops-operator-metrics"
MD = {"namespace": "ml", "mlops_dev_model_deployment": "iris"}


@pytest.fixture(scope="module")
def rules(helm: Helm) -> dict[str, Obj]:
    out = helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--set", "metrics.prometheusRule.enabled=true",
               "--show-only", "templates/prometheusrule.yaml").stdout
    rule = yaml.safe_load(out)
    assert rule["kind"] == "PrometheusRule"
    return {"object": rule, **{r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}}


@pytest.fixture(scope="module")
def rule_file(rules: dict[str, Obj], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rules["object"]["spec"]["groups"]}))
    return path


def promtool(tools: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools / "promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_promtool_accepts_the_rules(rule_file: Path, monitoring_tools: Path) -> None:
    proc = promtool(monitoring_tools, "check", "rules", str(rule_file), cwd=rule_file.parent)
    assert proc.returncode == 0 and "SUCCESS: 10 rules found" in proc.stdout, proc.stdout + proc.stderr


def rendered_annotations(rule: Obj, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with {{ $labels.x }} filled in, as Prometheus renders them."""
    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.([a-zA-Z_][a-zA-Z0-9_]*) \}\}", lambda m: labels[m.group(1)], text)

    return {k: fill(v) for k, v in rule["annotations"].items()}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


# alert -> (input series that must fire it, minute it fires by, labels it carries, the healthy twin's series)
CASES: dict[str, tuple[list[dict[str, str]], int, dict[str, str], list[dict[str, str]]]] = {
    "MlopsOperatorNoLeader": (
        [series("mlops_operator_leader", {"job": OPERATOR_JOB, "namespace": RELEASE_NS, "pod": pod}, "0x20") for pod in ("a", "b")], 6,
        {"job": OPERATOR_JOB, "namespace": RELEASE_NS},
        [series("mlops_operator_leader", {"job": OPERATOR_JOB, "namespace": RELEASE_NS, "pod": "a"}, "1x20"),
         series("mlops_operator_leader", {"job": OPERATOR_JOB, "namespace": RELEASE_NS, "pod": "b"}, "0x20")],
    ),
    "MlopsOperatorDown": (
        [series("up", {"job": OPERATOR_JOB, "namespace": RELEASE_NS}, "0x20")], 6,
        {"job": OPERATOR_JOB, "namespace": RELEASE_NS},
        [series("up", {"job": OPERATOR_JOB, "namespace": RELEASE_NS}, "1x20")],
    ),
    "MlopsModelNotReady": (
        [series("mlops_operator_resource_ready", {"kind": "ModelDeployment", "namespace": "ml", "name": "iris"}, "0x20")], 11,
        {"namespace": "ml", "name": "iris"},
        [series("mlops_operator_resource_ready", {"kind": "ModelDeployment", "namespace": "ml", "name": "iris"}, "1x20"),
         series("mlops_operator_resource_ready", {"kind": "TrainingJob", "namespace": "ml", "name": "iris-v1"}, "0x20")],
    ),
    "MlopsModelServerDown": (
        [series("up", {**MD, "pod": "iris-7c9-abcde", "job": "iris"}, "0x20")], 11,
        {**MD, "pod": "iris-7c9-abcde"},
        [series("up", {**MD, "pod": "iris-7c9-abcde", "job": "iris"}, "1x20"),
         series("mlops_model_ready", {**MD, "pod": "iris-7c9-abcde"}, "1x20")],
    ),
    "MlopsModelServerErrors": (
        [series("mlops_requests_total", {**MD, "code": "200"}, "0+90x30"),
         series("mlops_requests_total", {**MD, "code": "500"}, "0+10x30"),
         series("mlops_request_errors_total", {**MD, "code": "500"}, "0+10x30")], 11,
        dict(MD),
        # Bad requests (4xx) are the client's: not a server error.
        [series("mlops_requests_total", {**MD, "code": "200"}, "0+90x30"),
         series("mlops_requests_total", {**MD, "code": "400"}, "0+10x30"),
         series("mlops_request_errors_total", {**MD, "code": "400"}, "0+10x30")],
    ),
    "MlopsTrainingFailed": (
        [series("mlops_operator_resource_phase", {"kind": "TrainingJob", "namespace": "ml", "name": "iris-v2", "phase": "Failed"}, "1x10")], 1,
        {"namespace": "ml", "name": "iris-v2"},
        [series("mlops_operator_resource_phase", {"kind": "TrainingJob", "namespace": "ml", "name": "iris-v2", "phase": "Succeeded"}, "1x10")],
    ),
    "MlopsResourceStalled": (
        [series("mlops_operator_resource_stalled", {"kind": "ModelDeployment", "namespace": "ml", "name": "iris"}, "1x10")], 6,
        {"kind": "ModelDeployment", "namespace": "ml", "name": "iris"},
        [series("mlops_operator_resource_stalled", {"kind": "ModelDeployment", "namespace": "ml", "name": "iris"}, "0x10")],
    ),
    "MlopsDriftDetected": (
        [series("mlops_operator_drift_breaches_total", {"namespace": "ml", "policy": "iris"}, "0 0 0 1 1 1 1 1")], 4,
        {"namespace": "ml", "policy": "iris"},
        [series("mlops_operator_drift_breaches_total", {"namespace": "ml", "policy": "iris"}, "0x8"),
         series("mlops_operator_drift_checks_total", {"namespace": "ml", "policy": "iris", "verdict": "NoDrift"}, "0+1x8")],
    ),
    "MlopsDriftSensorUnreadable": (
        [series("mlops_operator_sensor_errors_total", {"namespace": "ml", "policy": "iris"}, "0+1x30")], 12,
        {"namespace": "ml", "policy": "iris"},
        # One pod unreadable once (a rollout's old pod going away) is no alert.
        [series("mlops_operator_sensor_errors_total", {"namespace": "ml", "policy": "iris"}, "0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1")],
    ),
    "MlopsRetrainFailed": (
        [series("mlops_operator_drift_retrains_total", {"namespace": "ml", "policy": "iris", "result": "GateFailed"}, "0 0 1 1 1 1")], 3,
        {"namespace": "ml", "policy": "iris", "result": "GateFailed"},
        [series("mlops_operator_drift_retrains_total", {"namespace": "ml", "policy": "iris", "result": "Succeeded"}, "0 0 1 1 1 1"),
         series("mlops_operator_drift_retrains_total", {"namespace": "ml", "policy": "iris", "result": "Promoted"}, "0 0 0 1 1 1")],
    ),
}


def _run_case(rule_file: Path, tools: Path, alert: str, input_series: list[dict[str, str]], at: int,
              expected: list[dict[str, Any]], tag: str) -> None:
    test = {"rule_files": [rule_file.name], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": input_series,
                       "alert_rule_test": [{"eval_time": f"{at}m", "alertname": alert, "exp_alerts": expected}]}]}
    path = rule_file.parent / f"test-{alert}-{tag}.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    proc = promtool(tools, "test", "rules", path.name, cwd=rule_file.parent)
    assert proc.returncode == 0, f"{alert} ({tag}):\n{proc.stdout}\n{proc.stderr}"


def test_every_alert_has_a_case(rules: dict[str, Obj]) -> None:
    assert set(rules) - {"object"} == set(CASES)


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_with_its_labels_and_text(alert: str, rules: dict[str, Obj], rule_file: Path, monitoring_tools: Path) -> None:
    firing, at, labels, _ = CASES[alert]
    rule = rules[alert]
    all_labels = {**labels, **rule["labels"]}
    expected = [{"exp_labels": all_labels, "exp_annotations": rendered_annotations(rule, all_labels)}]
    _run_case(rule_file, monitoring_tools, alert, firing, at, expected, "firing")


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_waits_for_its_delay_and_stays_silent_when_healthy(alert: str, rules: dict[str, Obj], rule_file: Path,
                                                               monitoring_tools: Path) -> None:
    firing, at, _, healthy = CASES[alert]
    _run_case(rule_file, monitoring_tools, alert, healthy, at, [], "healthy")
    if rules[alert].get("for"):  # pending, not yet firing, one minute before its delay is up
        _run_case(rule_file, monitoring_tools, alert, firing, at - 2, [], "pending")


def test_operator_down_also_fires_when_it_was_never_scraped(rules: dict[str, Obj], rule_file: Path,
                                                           monitoring_tools: Path) -> None:
    """No `up` series at all (a ServiceMonitor that selects nothing, a Prometheus that never found it)."""
    rule = rules["MlopsOperatorDown"]
    labels = {"job": OPERATOR_JOB, "namespace": RELEASE_NS, **rule["labels"]}
    other = [series("up", {"job": "something-else", "namespace": "default"}, "1x20")]
    expected = [{"exp_labels": labels, "exp_annotations": rendered_annotations(rule, labels)}]
    _run_case(rule_file, monitoring_tools, "MlopsOperatorDown", other, 6, expected, "absent")


def test_no_leader_alert_only_with_leader_election(helm: Helm) -> None:
    """Without leader election no replica exports a Lease it holds: the alert would always fire."""
    out = helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--set", "metrics.prometheusRule.enabled=true",
               "--set", "leaderElection.enabled=false", "--show-only", "templates/prometheusrule.yaml").stdout
    alerts = {r["alert"] for g in yaml.safe_load(out)["spec"]["groups"] for r in g["rules"]}
    assert "MlopsOperatorDown" in alerts and "MlopsOperatorNoLeader" not in alerts
