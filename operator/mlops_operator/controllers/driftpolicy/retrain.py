"""The retraining TrainingJob a policy starts, and following the retrains it started."""

from __future__ import annotations

import copy
import hashlib
import re
from datetime import datetime

from ...api.driftpolicy import DriftPolicySpec
from .. import labels
from ..cluster import Obj
from ..conditions import get_condition, timestamp
from ..decision import Event
from ..versions import approved, needs_approval

MAX_RETRAINS = 20
"""Retrains kept in ``status.retrains``."""
MAX_TJ_NAME = 52
PROMOTION = f"{labels.PREFIX}/promotion"
REASON = f"{labels.PREFIX}/retrain-reason"
TRIGGER = labels.RETRAIN_TRIGGER


def retrain_name(policy: str, n: int) -> str:
    """``<policy>-retrain-<n>``; a long policy name is shortened with a hash so it fits a TrainingJob name."""
    suffix = f"-retrain-{n}"
    name = policy + suffix
    if len(name) <= MAX_TJ_NAME:
        return name
    tag = hashlib.sha256(policy.encode()).hexdigest()[:6]
    head = policy[: MAX_TJ_NAME - len(suffix) - len(tag) - 1].rstrip("-")
    return f"{head}-{tag}{suffix}"


def retrain_index(policy: str, name: str) -> int | None:
    """The ``n`` of a retrain name of this policy, or None."""
    m = re.fullmatch(r"(.*)-retrain-([0-9]+)", name)
    if not m:
        return None
    n = int(m.group(2))
    return n if retrain_name(policy, n) == name else None


_REGRESSORS = {"LinearRegression", "Ridge", "Lasso", "ElasticNet", "SVR", "LinearSVR", "BayesianRidge", "HuberRegressor"}


def _task_of(spec: Obj, hint: str | None) -> str:
    if spec.get("task") in ("classification", "regression"):
        return spec["task"]
    if hint in ("classification", "regression"):
        return hint
    cls = str((spec.get("estimator") or {}).get("class", "")).rpartition(".")[2]
    return "regression" if cls.endswith("Regressor") or cls in _REGRESSORS else "classification"


def build_retrain(policy: Obj, source: Obj, n: int, *, parent_version: str | None, reason: str, task: str | None = None,
                  trigger: str = "") -> Obj:
    """The retraining TrainingJob: ``spec.retrain.from``'s spec, adjusted, owned by the policy."""
    spec_model = DriftPolicySpec.model_validate(policy["spec"])
    meta = policy["metadata"]
    spec = copy.deepcopy(source["spec"])
    data = spec.setdefault("data", {})
    data["includeFeedback"] = bool(spec_model.retrain.include_feedback if spec_model.retrain else True)
    gate = copy.deepcopy(spec.get("qualityGate"))
    if spec_model.promotion.must_beat == "current":
        if not gate:
            gate = {"metric": "rmse" if _task_of(spec, task) == "regression" else "accuracy"}
        gate["mustBeat"] = "current"
        spec["qualityGate"] = gate
    elif gate:
        gate["mustBeat"] = "none"
        if gate.get("minimum") is None and gate.get("maximum") is None:
            spec.pop("qualityGate")  # a gate of mustBeat alone has nothing left to check
        else:
            spec["qualityGate"] = gate
    lineage = {
        labels.MODEL: spec.get("model", ""),
        labels.TRIGGERED_BY: meta["name"],
        labels.PARENT_VERSION: parent_version or "",
    }
    annotations = {REASON: reason[:1000]}
    if trigger:
        annotations[TRIGGER] = trigger[:200]
    if spec_model.promotion.mode == "manual":
        annotations[PROMOTION] = "manual"
    return {
        "apiVersion": source.get("apiVersion", "mlops.dev/v1alpha1"),
        "kind": "TrainingJob",
        "metadata": {
            "name": retrain_name(meta["name"], n),
            "namespace": meta.get("namespace", "default"),
            "labels": labels.owned_labels("retrain", **{k: v for k, v in lineage.items() if v and len(v) <= 63}),
            "annotations": annotations,
            "ownerReferences": [labels.owner_reference(policy)],
        },
        "spec": spec,
    }


def start_retrain(policy: Obj, source: Obj, status: Obj, now: datetime, *, parent_version: str | None, reason: str,
                  trigger: str, task: str | None = None) -> Obj:
    """The next retrain TrainingJob, recorded in ``status``: count, active slot, trigger times, history."""
    n = int(status.get("retrainCount") or 0) + 1
    retrain = build_retrain(policy, source, n, parent_version=parent_version, reason=reason, task=task, trigger=trigger)
    name = retrain["metadata"]["name"]
    status["retrainCount"] = n
    status["activeRetrain"] = name
    status["lastTriggered"] = timestamp(now)
    status["triggerTimes"] = [*(status.get("triggerTimes") or []), timestamp(now)]
    record = {"name": name, "trigger": trigger, "reason": reason, "time": timestamp(now), "result": "Running", "promoted": False}
    status["retrains"] = ([record] + [r for r in status.get("retrains") or [] if r["name"] != name])[:MAX_RETRAINS]
    return retrain


def model_mismatch(spec: DriftPolicySpec, deployment: Obj | None, source: Obj | None) -> str:
    """Why ``retrain.from`` cannot retrain what the deployment serves ('' when it can).

    A retrain clones its source's ``spec.model``: from another model's lineage
    it could never become the watched deployment's ``latest``.
    """
    if spec.action != "retrain" or deployment is None or source is None:
        return ""
    serves = (deployment.get("spec") or {}).get("model")
    trains = (source.get("spec") or {}).get("model")
    if serves == trains:
        return ""
    name = spec.retrain.from_ if spec.retrain else ""
    return (f"spec.retrain.from: TrainingJob {name} trains model {trains!r}, but ModelDeployment {spec.deployment} "
            f"serves model {serves!r}; a retrain of it could never serve there")


def owned_by(tj: Obj, policy: Obj) -> bool:
    uid = policy["metadata"].get("uid")
    for ref in (tj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "DriftPolicy" and ref.get("controller") and (not uid or ref.get("uid") == uid):
            return True
    return False


def retrain_result(tj: Obj) -> str:
    """Running, Succeeded, GateFailed or Failed, from the TrainingJob's status."""
    status = tj.get("status") or {}
    phase = status.get("phase")
    if status.get("observedGeneration") != (tj.get("metadata") or {}).get("generation", status.get("observedGeneration")):
        return "Running"
    if phase == "Succeeded":
        return "GateFailed" if (status.get("gate") or {}).get("result") == "Failed" else "Succeeded"
    if phase == "Failed":
        return "GateFailed" if (status.get("gate") or {}).get("result") == "Failed" else "Failed"
    return "Running"


def gate_text(tj: Obj) -> str:
    gate = (tj.get("status") or {}).get("gate") or {}
    parts = []
    if gate.get("metric") and gate.get("value") is not None:
        parts.append(f"{gate['metric']} {gate['value']:.4g}")
    if gate.get("championVersion"):
        champ = gate.get("championValue")
        parts.append(f"did not beat {gate['championVersion']}" + (f" ({champ:.4g})" if champ is not None else ""))
    elif gate.get("bound") is not None:
        parts.append(f"missed the bound {gate['bound']:.4g}")
    if gate.get("reason"):
        parts.append(str(gate["reason"]))
    return ", ".join(parts) or "the quality gate failed"


def failure_text(tj: Obj) -> str:
    failed = get_condition((tj.get("status") or {}).get("conditions"), "Failed")
    return (failed or {}).get("message") or (failed or {}).get("reason") or "the training run failed"


def approval_hint(name: str) -> str:
    return f"kubectl annotate tj {name} {labels.APPROVED}=true"



def follow_retrains(policy: Obj, status: Obj, retrains: list[Obj], serving: str | None, now: datetime) -> list[Event]:
    """Follow the retrains this policy started: adopt, record results and promotion, release the active slot."""
    name = policy["metadata"]["name"]
    events: list[Event] = []
    owned = {t["metadata"]["name"]: t for t in retrains if owned_by(t, policy) and retrain_index(name, t["metadata"]["name"])}
    records: list[Obj] = [dict(r) for r in status.get("retrains") or []]
    known = {r["name"] for r in records}
    count = int(status.get("retrainCount") or 0)

    # A retrain created just before a crash, whose status write was lost: adopt it.
    for tj_name in sorted(owned, key=lambda x: retrain_index(name, x) or 0):
        n = retrain_index(name, tj_name) or 0
        if n > count and tj_name not in known:
            tj = owned[tj_name]
            when = tj["metadata"].get("creationTimestamp") or timestamp(now)
            annotations = tj["metadata"].get("annotations") or {}
            reason = annotations.get(REASON, "")
            records.insert(0, {"name": tj_name, "trigger": annotations.get(TRIGGER, ""), "reason": reason, "time": when,
                               "result": "Running", "promoted": False})
            # The event of its creation was lost with the status write: post it now, once.
            events.append(Event("Normal", "RetrainTriggered", f"retrain {tj_name} started: {reason} "
                                f"(recorded late: the operator stopped before writing status)"[:1000]))
            count = n
            status["activeRetrain"] = tj_name
            status["lastTriggered"] = max(status.get("lastTriggered") or "", when)
            status["triggerTimes"] = sorted({*(status.get("triggerTimes") or []), when})
    status["retrainCount"] = count

    for rec in records:
        tj = owned.get(rec["name"])
        before = rec.get("result")
        if tj is None:
            if before == "Running":
                rec["result"] = "Deleted"
                events.append(Event("Warning", "RetrainDeleted", f"retrain {rec['name']} was deleted before it finished"))
            continue
        result = retrain_result(tj)
        version = (tj.get("status") or {}).get("modelVersion")
        rec["result"] = result
        if result != before:
            if result == "Succeeded":
                if needs_approval(tj) and not approved(tj):
                    msg = f"retrain {rec['name']} passed its gate and waits for approval: {approval_hint(rec['name'])}"
                    events.append(Event("Normal", "AwaitingApproval", msg))
                else:
                    events.append(Event("Normal", "RetrainSucceeded", f"retrain {rec['name']} passed its gate; {version} becomes latest"))
            elif result == "GateFailed":
                events.append(Event("Warning", "RetrainGateFailed", f"retrain {rec['name']} failed its gate ({gate_text(tj)}); the serving version stays"))
            elif result == "Failed":
                events.append(Event("Warning", "RetrainFailed", f"retrain {rec['name']} failed: {failure_text(tj)}"[:1000]))
        if not rec.get("promoted") and result == "Succeeded" and version and version == serving:
            rec["promoted"] = True
            events.append(Event("Normal", "Promoted", f"{version} from retrain {rec['name']} now serves"))
    status["retrains"] = records[:MAX_RETRAINS]

    active = status.get("activeRetrain")
    if active:
        tj = owned.get(active)
        rec = next((r for r in records if r["name"] == active), None)
        done = tj is None or rec is None or rec["result"] in ("GateFailed", "Failed", "Deleted")
        if not done and rec["result"] == "Succeeded":
            # Manual promotion keeps the slot until a person approves (or deletes the run).
            done = not (needs_approval(tj) and not approved(tj)) or bool(rec.get("promoted"))
        if done:
            status.pop("activeRetrain", None)
    return events
