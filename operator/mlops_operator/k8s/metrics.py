"""The operator's own Prometheus metrics about what it reconciles.

One series per object for its Ready and Stalled conditions and its phase, as
the last reconcile wrote them, so alerts can name the very object that is not
serving or needs its spec fixed, whether or not any pod of it exists; and
reconcile counts and durations per kind, for the operator's own health.
Series of deleted objects are removed. (The DriftPolicy checks export theirs
in handlers/driftpolicy.py.)
"""

from __future__ import annotations

from typing import Any, Mapping

from prometheus_client import Counter, Gauge, Histogram

READY = Gauge("mlops_operator_resource_ready", "1 while the object's Ready condition is True, else 0.",
              ["kind", "namespace", "name"])
STALLED = Gauge("mlops_operator_resource_stalled", "1 while the object's Stalled condition is True: only a change of its spec helps.",
                ["kind", "namespace", "name"])
PHASE = Gauge("mlops_operator_resource_phase", "1 for the object's current status.phase (one series per object).",
              ["kind", "namespace", "name", "phase"])
RECONCILES = Counter("mlops_operator_reconciles", "Reconciles by kind and outcome (ok, error).", ["kind", "outcome"])
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
