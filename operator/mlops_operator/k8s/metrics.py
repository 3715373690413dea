"""The operator's own Prometheus metrics about what it reconciles.

One series per object for its Ready and Stalled conditions and its phase, as
the last reconcile wrote them, so alerts can name the very object that is not
serving or needs its spec fixed, whether or not any pod of it exists; and
reconcile counts and durations per kind, for the operator's own health.
Series of deleted objects are removed. DriftPolicy checks add their scores,
verdicts and retrains (:func:`record_drift`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from ..controllers.driftpolicy import PolicyDecision

READY = Gauge("mlops_operator_resource_ready", "1 while the object's Ready condition is True, else 0.",
              ["kind", "namespace", "name"])
STALLED = Gauge("mlops_operator_resource_stalled", "1 while the object's Stalled condition is True: only a change of its spec helps.",
                ["kind", "namespace", "name"])
PHASE = Gauge("mlops_operator_resource_phase", "1 for the object's current status.phase (one series per object).",
              ["kind", "namespace", "name", "phase"])
RECONCILES = Counter("mlops_operator_reconciles", "Reconciles by kind and outcome (ok, error, conflict, refused).",
                     ["kind", "outcome"])
API_REQUESTS = Counter("mlops_operator_api_requests", "Requests to the Kubernetes API server by HTTP method "
                       "(reconciles' reads and writes; kopf's own watches are not counted).", ["method"])
QUEUE_DEPTH = Gauge("mlops_operator_workqueue_depth", "Objects waiting for a reconcile worker.")
RECONCILE_SECONDS = Histogram("mlops_operator_reconcile_duration_seconds", "Duration of one reconcile, API calls included.",
                              ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

_phases: dict[tuple[str, str, str], str] = {}


def _condition(status: Mapping[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])


def observe_status(kind: str, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
    """Export one object's state from the status its reconcile wrote; None: the object is gone."""
    key = (kind, namespace, name)
    if status is None:
        forget(kind, namespace, name)
        return
    READY.labels(kind, namespace, name).set(int(_condition(status, "Ready")))
    STALLED.labels(kind, namespace, name).set(int(_condition(status, "Stalled")))
    phase = status.get("phase")
    old = _phases.get(key)
    if old is not None and old != phase:
        remove_series(PHASE, kind, namespace, name, old)
    if phase:
        PHASE.labels(kind, namespace, name, phase).set(1)
        _phases[key] = phase
    else:
        _phases.pop(key, None)


def forget(kind: str, namespace: str, name: str) -> None:
    remove_series(READY, kind, namespace, name)
    remove_series(STALLED, kind, namespace, name)
    phase = _phases.pop((kind, namespace, name), None)
    if phase is not None:
        remove_series(PHASE, kind, namespace, name, phase)


def remove_series(metric: Any, *label_values: str) -> None:
    """Drop one labelled series; nothing if it was never set."""
    try:
        metric.remove(*label_values)
    except KeyError:
        pass


# --------------------------------------------------------------------------- DriftPolicy checks

DRIFT_SCORE = Gauge(
    "mlops_operator_drift_score",
    "Per check and feature: effect size (drift checks), PSI (psi) or the live metric (errorRate, rmse) of the last check.",
    ["namespace", "policy", "check", "feature"],
)
DRIFT_PVALUE = Gauge(
    "mlops_operator_drift_pvalue",
    "Per drift check and feature: the corrected p-value of the last check (with mlops_operator_drift_score, why a feature did or did not drift).",
    ["namespace", "policy", "check", "feature"],
)
DRIFT_FEATURE_DRIFTED = Gauge(
    "mlops_operator_drift_feature_drifted",
    "Per drift check and feature: 1 when the last check found it drifted, else 0.",
    ["namespace", "policy", "check", "feature"],
)
DRIFT_EFFECT_FLOOR = Gauge(
    "mlops_operator_drift_effect_floor",
    "Per drift check and feature: the effect floor mlops_operator_drift_score was compared with.",
    ["namespace", "policy", "check", "feature"],
)
_PER_FEATURE = (DRIFT_PVALUE, DRIFT_FEATURE_DRIFTED, DRIFT_EFFECT_FLOOR)
DRIFT_CHECKS = Counter("mlops_operator_drift_checks", "DriftPolicy checks by verdict.", ["namespace", "policy", "verdict"])
DRIFT_BREACHES = Counter("mlops_operator_drift_breaches", "DriftPolicy checks that found drift.", ["namespace", "policy"])
DRIFT_RETRAINS = Counter(
    "mlops_operator_drift_retrains",
    "Retrains by outcome: Started, Succeeded, GateFailed, Failed, Deleted, Promoted.",
    ["namespace", "policy", "result"],
)
SENSOR_ERRORS = Counter(
    "mlops_operator_sensor_errors",
    "DriftPolicy checks' failed reads: serving pods whose drift sensor could not be read, and unreadable reference profiles.",
    ["namespace", "policy"],
)
_RESULT_OF_EVENT = {
    "RetrainTriggered": "Started",
    "RetrainSucceeded": "Succeeded",
    "AwaitingApproval": "Succeeded",
    "RetrainGateFailed": "GateFailed",
    "RetrainFailed": "Failed",
    "RetrainDeleted": "Deleted",
    "NameTaken": "Failed",
    "Promoted": "Promoted",
}
_score_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}


def record_drift(namespace: str, name: str, decision: PolicyDecision | None) -> None:
    """Export what one DriftPolicy reconcile decided; None: the policy is gone."""
    key = (namespace, name)
    if decision is None:
        forget_drift(namespace, name)
        return
    for ev in decision.events:
        result = _RESULT_OF_EVENT.get(ev.reason)
        if result:
            DRIFT_RETRAINS.labels(namespace, name, result).inc()
    check = decision.check
    if check is None:
        return
    if decision.sensor_errors:
        SENSOR_ERRORS.labels(namespace, name).inc(decision.sensor_errors)
    DRIFT_CHECKS.labels(namespace, name, check.verdict).inc()
    if check.verdict == "Drift":
        DRIFT_BREACHES.labels(namespace, name).inc()
    if check.verdict not in ("Drift", "NoDrift"):
        return
    seen: set[tuple[str, str]] = set()
    for s in check.scores:
        value = next((s[k] for k in ("effect", "psi", "statistic") if s.get(k) is not None), None)
        if value is None:
            continue
        labels = (namespace, name, s["check"], s["feature"])
        DRIFT_SCORE.labels(*labels).set(value)
        DRIFT_FEATURE_DRIFTED.labels(*labels).set(1.0 if s.get("drifted") else 0.0)
        for metric, field in ((DRIFT_PVALUE, "pValue"), (DRIFT_EFFECT_FLOOR, "floor")):
            if s.get(field) is not None:
                metric.labels(*labels).set(s[field])
            else:
                remove_series(metric, *labels)
        seen.add((s["check"], s["feature"]))
    for check_name, feature in _score_labels.get(key, set()) - seen:
        _remove_feature(namespace, name, check_name, feature)
    _score_labels[key] = seen


def _remove_feature(namespace: str, name: str, check_name: str, feature: str) -> None:
    for metric in (DRIFT_SCORE, *_PER_FEATURE):
        remove_series(metric, namespace, name, check_name, feature)


def forget_drift(namespace: str, name: str) -> None:
    for check_name, feature in _score_labels.pop((namespace, name), set()):
        _remove_feature(namespace, name, check_name, feature)
