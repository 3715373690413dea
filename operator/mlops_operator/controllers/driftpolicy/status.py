"""The policy's conditions: Ready (with Reconciling and Stalled), Drifting, Retraining and SensorsReadable."""

from __future__ import annotations

from datetime import datetime

from ...api.driftpolicy import DriftPolicySpec
from ..cluster import Obj
from ..conditions import get_condition, set_condition, summarize
from .checks import CheckResult, unreadable_text
from .retrain import approval_hint, failure_text, gate_text, model_mismatch

SENSORS = "SensorsReadable"
"""Whether the last check read every ready serving pod's drift sensor and the serving version's reference."""
UNAVAILABLE_REASONS = ("Unavailable", "SensorUnreadable", "ReferenceUnavailable")


def retraining_condition(status: Obj, retrains: list[Obj], now: datetime, generation: int | None) -> list[Obj]:
    active = status.get("activeRetrain")
    records = status.get("retrains") or []
    by_name = {t["metadata"]["name"]: t for t in retrains}
    conds = status.get("conditions")
    if active:
        rec = next((r for r in records if r["name"] == active), {})
        if rec.get("result") == "Succeeded":
            msg = f"{active} passed its gate and waits for approval: {approval_hint(active)}"
            return set_condition(conds, "Retraining", True, "AwaitingApproval", msg, now, generation)
        return set_condition(conds, "Retraining", True, "Running", f"retrain {active} is running", now, generation)
    if not records:
        return set_condition(conds, "Retraining", False, "NoRetrain", "no retrain so far", now, generation)
    last = records[0]
    tj = by_name.get(last["name"])
    result = last.get("result") or "Unknown"
    if result == "Succeeded":
        msg = f"{last['name']} succeeded" + ("; it serves now" if last.get("promoted") else "; it becomes latest once the deployment rolls it out")
    elif result == "GateFailed":
        msg = f"{last['name']} failed its gate ({gate_text(tj) if tj else 'see the TrainingJob'}); the serving version stays"
    elif result == "Failed":
        msg = f"{last['name']} failed: {failure_text(tj) if tj else 'see the TrainingJob'}"
    elif result == "Deleted":
        msg = f"{last['name']} was deleted"
    else:
        msg = f"{last['name']}: {result}"
    return set_condition(conds, "Retraining", False, result, msg[:1000], now, generation)


def policy_conditions(spec: DriftPolicySpec, status: Obj, old: Obj, check: CheckResult | None, deployment: Obj | None,
                       source: Obj | None, retrains: list[Obj], now: datetime, generation: int | None) -> list[Obj]:
    conds = status.get("conditions")
    verdict = status.get("verdict")
    if check is not None:
        if check.verdict == "Drift":
            conds = set_condition(conds, "Drifting", True, "Drift", check.message, now, generation)
        elif check.verdict == "NoDrift":
            conds = set_condition(conds, "Drifting", False, "NoDrift", check.message, now, generation)
        elif get_condition(conds, "Drifting") is None:
            conds = set_condition(conds, "Drifting", "Unknown", check.verdict, check.message, now, generation)
    elif get_condition(conds, "Drifting") is None:
        conds = set_condition(conds, "Drifting", "Unknown", "NotChecked", "no check has run yet", now, generation)
    if check is not None and check.scraped:
        conds = _sensors_condition(conds, check, now, generation)
    status["conditions"] = conds
    conds = retraining_condition(status, retrains, now, generation)

    if deployment is None:
        ready, reason, msg, stalled = False, "DeploymentNotFound", f"ModelDeployment {spec.deployment} does not exist", True
    elif spec.action == "retrain" and source is None:
        name = spec.retrain.from_ if spec.retrain else ""
        ready, reason, msg, stalled = False, "RetrainSourceNotFound", f"spec.retrain.from: TrainingJob {name} does not exist", True
    elif model_mismatch(spec, deployment, source):
        ready, reason, msg, stalled = False, "ModelMismatch", model_mismatch(spec, deployment, source), True
    elif verdict == "Unavailable":
        before = get_condition(old.get("conditions"), "Ready") or {}
        msg = check.message if check is not None else before.get("message", "")
        reason = _unavailable_reason(check) if check is not None else before.get("reason", "Unavailable")
        if reason not in UNAVAILABLE_REASONS:
            reason = "Unavailable"
        ready, stalled = False, False
    elif verdict is None:
        ready, reason, msg, stalled = True, "Waiting", "waiting for the first check", False
    else:
        samples = status.get("samples")
        ready, reason, stalled = True, verdict, False
        msg = f"{verdict} on {samples} rows" if samples is not None else verdict
        if verdict == "Drift":
            msg += f" ({status.get('consecutiveBreaches', 0)} in a row)"
        if status.get("activeRetrain"):
            msg += f"; retrain {status['activeRetrain']} active"
    return summarize(conds, ready=ready, reason=reason, message=msg, reconciling=False, stalled=stalled, now=now, generation=generation)


def _unavailable_reason(check: CheckResult) -> str:
    """Why a check had no verdict, as Ready's reason: no sensor answered, no reference, or anything else."""
    if check.scraped and len(check.unreadable) == check.scraped:
        return "SensorUnreadable"
    if check.reference_error:
        return "ReferenceUnavailable"
    return "Unavailable"


def _sensors_condition(conds: list[Obj] | None, check: CheckResult, now: datetime, generation: int | None) -> list[Obj]:
    problems = []
    if check.unreadable:
        problems.append(unreadable_text(check.unreadable, check.scraped))
    if check.reference_error:
        problems.append(check.reference_error)
    if problems:
        reason = "SensorUnreadable" if check.unreadable else "ReferenceUnavailable"
        return set_condition(conds, SENSORS, False, reason, "; ".join(problems)[:1000], now, generation)
    msg = f"the drift sensors of all {check.scraped} ready serving pods answered"
    return set_condition(conds, SENSORS, True, "Read", msg, now, generation)
