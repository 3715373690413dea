"""The decision that composes the rest: a check's result, the retrains and the clock become the next status."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime

from ...api.driftpolicy import DriftPolicySpec
from ...api.validation import validate_object
from ..cluster import Obj
from ..conditions import get_condition, summarize, timestamp
from ..decision import Decision, Event
from .checks import CheckResult
from .retrain import approval_hint, follow_retrains, start_retrain
from .scheduled import scheduled_retrain
from .status import SENSORS, policy_conditions
from .trigger import blocked_by, recent_triggers


@dataclass(kw_only=True)
class PolicyDecision(Decision):
    """Create ``retrain`` when it is not None, then write ``status`` and post ``events``.

    ``requeue_after``: seconds until the next check is due (None: only an event,
    e.g. a spec fix, can make one due).
    """

    retrain: Obj | None = None
    check: CheckResult | None = None

    @property
    def sensor_errors(self) -> int:
        """Failed reads of this check: pods whose drift sensor could not be read, plus 1 when the reference could not."""
        if self.check is None:
            return 0
        return len(self.check.unreadable) + (1 if self.check.reference_error else 0)

    @property
    def unreadable_pods(self) -> list[str]:
        """The serving pods whose drift sensor this check could not read."""
        return sorted(self.check.unreadable) if self.check is not None else []


def spec_errors(policy: Obj) -> list[str]:
    """What is wrong with the policy's spec (its status is not checked)."""
    bare = {k: v for k, v in policy.items() if k != "status"}
    return [str(e) for e in validate_object(bare)]


def decide(
    policy: Obj,
    check: CheckResult | None,
    retrains: list[Obj],
    deployment: Obj | None,
    source: Obj | None,
    now: datetime,
    *,
    window: Obj | None = None,
    task: str | None = None,
) -> PolicyDecision:
    """The policy's next status, and the retrain to create if the trigger fires.

    ``check`` is the result of a check that just ran (None when none was due:
    only the retrain bookkeeping moves); ``window`` the window state it ran
    on; ``retrains`` the TrainingJobs labelled as triggered by this policy;
    ``deployment`` the watched ModelDeployment and ``source`` the TrainingJob
    ``spec.retrain.from`` names (None when missing). ``task`` (from the
    reference profile) picks the gate metric when the source has no gate.
    """
    meta = policy["metadata"]
    generation = meta.get("generation")
    old: Obj = policy.get("status") or {}
    status: Obj = copy.deepcopy(old)
    status["observedGeneration"] = generation
    events: list[Event] = []

    errors = spec_errors(policy)
    if errors:
        message = "; ".join(errors)[:1000]
        status["conditions"] = summarize(status.get("conditions"), ready=False, reason="InvalidSpec", message=message,
                                         reconciling=False, stalled=True, now=now, generation=generation)
        if get_condition(old.get("conditions"), "Ready") != get_condition(status["conditions"], "Ready"):
            events.append(Event("Warning", "InvalidSpec", message))
        return PolicyDecision(status=status, events=events)

    spec = DriftPolicySpec.model_validate(policy["spec"])
    serving = ((deployment or {}).get("status") or {}).get("modelVersion")
    events += follow_retrains(policy, status, retrains, serving, now)

    retrain: Obj | None = None
    trigger = spec.trigger
    if check is not None:
        status["lastCheck"] = timestamp(now)
        status["verdict"] = check.verdict
        if window is not None:
            status["window"] = window
        if check.verdict in ("Drift", "NoDrift", "NotEnoughData"):
            status["samples"] = check.samples
        if check.verdict in ("Drift", "NoDrift"):
            status["scores"] = check.scores
            effects = [s["effect"] for s in check.scores if s.get("effect") is not None]
            if effects:
                status["score"] = round(max(effects), 6)
            else:
                status.pop("score", None)
        streak = int(status.get("consecutiveBreaches") or 0)
        if check.verdict == "Drift":
            streak += 1
        elif check.verdict == "NoDrift":
            drifting = get_condition(old.get("conditions"), "Drifting")
            if streak or (drifting and drifting.get("status") == "True"):
                events.append(Event("Normal", "DriftCleared", f"no drift on {check.samples} rows"))
            streak = 0
        status["consecutiveBreaches"] = streak

        if check.verdict == "Drift":
            times = recent_triggers(status.get("triggerTimes") or [], now)
            status["triggerTimes"] = times
            blocked = blocked_by(spec, status, deployment, source, now, times)
            if streak < trigger.consecutive:
                note = f"{streak} of {trigger.consecutive} breaches in a row"
            elif blocked:
                note = f"{streak} breaches in a row, but {blocked}"
            else:
                note = ""
            if not note:
                status["consecutiveBreaches"] = 0
                if spec.action == "alert":
                    status["lastTriggered"] = timestamp(now)
                    status["triggerTimes"] = times + [timestamp(now)]
                    note = "alert raised (action: alert, no retrain)"
                    events.append(Event("Warning", "DriftAlert", f"{check.reason}"[:1000]))
                else:
                    assert source is not None
                    trigger_by = ",".join(c.type for c in check.breaches)
                    retrain = start_retrain(policy, source, status, now, parent_version=serving, reason=check.reason,
                                            trigger=trigger_by, task=task)
                    name = retrain["metadata"]["name"]
                    note = f"retrain {name} started"
                    if spec.promotion.mode == "manual":
                        note += f"; it will wait for approval ({approval_hint(name)})"
                    events.append(Event("Normal", "RetrainTriggered", f"{note}: {check.reason}"[:1000]))
            events.insert(0, Event("Warning", "DriftDetected", f"{check.message}; {note}"[:1000]))

    if spec.schedule is not None:
        scheduled, scheduled_events = scheduled_retrain(policy, spec, status, deployment, source, serving, now)
        retrain, events = retrain or scheduled, events + scheduled_events
    else:
        status.pop("schedule", None)

    status["conditions"] = policy_conditions(spec, status, old, check, deployment, source, retrains, now, generation)
    events += _refusal_events(old, status) + _sensor_events(old, status)
    return PolicyDecision(status=status, retrain=retrain, events=events, check=check)


def _refusal_events(old: Obj, status: Obj) -> list[Event]:
    """A Warning when Ready turns to a refusal the user must fix (once, on the transition)."""
    ready = get_condition(status.get("conditions"), "Ready") or {}
    before = get_condition(old.get("conditions"), "Ready") or {}
    if ready.get("reason") == "ModelMismatch" and before.get("reason") != "ModelMismatch":
        return [Event("Warning", "ModelMismatch", ready.get("message", ""))]
    return []


def _sensor_events(old: Obj, status: Obj) -> list[Event]:
    """A Warning when reading sensors or the reference starts failing (or fails differently), a Normal when it recovers."""
    current = get_condition(status.get("conditions"), SENSORS)
    before = get_condition(old.get("conditions"), SENSORS)
    if current is None or (before is not None and (before["status"], before["reason"]) == (current["status"], current["reason"])):
        return []
    if current["status"] == "False":
        return [Event("Warning", current["reason"], current["message"])]
    if before is not None and before["status"] == "False":
        return [Event("Normal", "SensorsRecovered", current["message"])]
    return []
