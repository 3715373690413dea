"""The rollout state machine: which version the champion and the challenger run, and what status says.

Pure: the spec, the old status, the version serving now, the version
resolution chose, the pod scrapes and the clock go in; a :class:`Plan` comes
out. Everything decided lands in ``status.rollout`` and
``status.rejectedVersions`` (the user's spec is never written), so the same
inputs give the same plan however often it is asked, and a restart resumes.

::

    (no rollout) --new version, strategy shadow|canary--> Analysing
    Analysing --Advance--> Analysing (next step, new weight)
    Analysing --Promote--> Promoted        (the challenger's version becomes the champion's)
    Analysing --AwaitApproval--> AwaitingApproval --approvedVersion = challenger--> Promoted
    Analysing | AwaitingApproval --RollBack--> RolledBack (the version joins rejectedVersions)

A rejected version is never tried again; a newer one starts a new rollout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...api.base import parse_duration
from ...api.modeldeployment import ModelDeploymentSpec
from ..conditions import timestamp
from ..decision import Event
from . import analysis
from .evidence import PodReading, fold

ANALYSING, AWAITING, PROMOTED, ROLLED_BACK, SUPERSEDED = "Analysing", "AwaitingApproval", "Promoted", "RolledBack", "Superseded"
ACTIVE = (ANALYSING, AWAITING)
REJECTED_MAX = 20
Version = tuple[str, str]
"""(version, sha256)."""


@dataclass(frozen=True)
class Route:
    """What the champion's router does: ``serve --route-mode/--route-weight``."""

    mode: str
    weight: float


@dataclass
class Plan:
    champion: Version
    """What the main Deployment serves."""
    route: Route | None = None
    challenger: Version | None = None
    """What the challenger Deployment serves; None: no challenger children."""
    state: dict[str, Any] | None = None
    """The new ``status.rollout`` (None: leave it as it was)."""
    rejected: list[str] = field(default_factory=list)
    promoted: str | None = None
    """The strategy that promoted the champion's version this time (for the history), else None."""
    note: str = ""
    """Appended to the Ready message (why a newer version does not serve)."""
    events: list[Event] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.challenger is not None


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def criteria(spec: ModelDeploymentSpec) -> analysis.Criteria:
    a = spec.rollout.analysis
    return analysis.Criteria(alpha=a.alpha, margin=a.margin, min_samples=a.min_samples, max_samples=a.max_samples,
                             max_server_error_ratio=a.max_server_error_ratio, max_p99_ratio=a.max_p99_ratio,
                             step_seconds=parse_duration(spec.rollout.step_duration))


def _weights(spec: ModelDeploymentSpec) -> list[int]:
    return [0] if spec.rollout.strategy == "shadow" else list(spec.rollout.steps)


def _route(state: dict[str, Any]) -> Route:
    if state["strategy"] == "shadow":
        return Route("shadow", 0.0)
    return Route("canary", state["weight"] / 100.0)


def _start(spec: ModelDeploymentSpec, champion: Version, challenger: Version, now: datetime) -> dict[str, Any]:
    weights = _weights(spec)
    return {
        "strategy": spec.rollout.strategy, "champion": champion[0], "challenger": challenger[0],
        "challengerSha256": challenger[1], "phase": ANALYSING, "step": 1, "steps": len(weights), "weight": weights[0],
        "startTime": timestamp(now), "stepStartTime": timestamp(now), "stepStartLabelled": 0, "looks": 0,
        "decision": analysis.HOLD, "reason": "Started", "message": "waiting for the challenger's pods and evidence",
        "championEvidence": {"version": champion[0]}, "challengerEvidence": {"version": challenger[0]},
    }


def _describe(state: dict[str, Any]) -> str:
    if state["strategy"] == "shadow":
        return f"shadow of {state['challenger']} beside {state['champion']}"
    return f"canary {state['challenger']} at {state['weight']}% (step {state['step']}/{state['steps']}) beside {state['champion']}"


def plan(spec: ModelDeploymentSpec, old_status: dict[str, Any], served: Version | None, target: Version,
         readings: list[PodReading], live_pods: set[str], now: datetime, challenger_failed: str = "") -> Plan:
    """What to serve and say, given that resolution chose ``target`` and ``served`` serves now.

    ``challenger_failed``: why the challenger's Deployment cannot make progress (its progress deadline
    passed: pods that never get ready answer nothing, and the router hides that from clients), else "".
    """
    rejected = list(old_status.get("rejectedVersions") or [])
    old = old_status.get("rollout") or None
    active = old if old and old.get("phase") in ACTIVE else None
    strategy = spec.rollout.strategy

    if active is not None and (strategy == "replace" or served is None or active.get("champion") != served[0]
                               or active.get("challenger") != target[0]):
        # The spec or the world changed under the rollout: it ends here, unjudged; what follows is decided afresh.
        ended = {**active, "phase": SUPERSEDED, "decision": "None", "reason": "Superseded",
                 "message": f"ended unjudged: {_why_superseded(strategy, served, target, active)}"}
        ended.pop("pods", None)
        fresh = plan(spec, {**old_status, "rollout": ended}, served, target, readings, live_pods, now)
        if fresh.state is None:
            fresh.state = ended
        fresh.events.insert(0, Event("Normal", "RolloutSuperseded", f"{_describe(active)}: {ended['message']}"))
        return fresh
    if active is None:
        if served is None or strategy == "replace" or target[0] == served[0]:
            return Plan(champion=target, rejected=rejected)
        if target[0] in rejected:
            return Plan(champion=served, rejected=rejected,
                        note=f"; {target[0]} was rolled back by a rollout and is not tried again")
        if old and old.get("phase") == PROMOTED and old.get("challenger") == target[0]:
            return Plan(champion=target, rejected=rejected)  # promoted; the Deployment read may predate it
        state = _start(spec, served, target, now)
        return Plan(champion=served, route=_route(state), challenger=target, state=state, rejected=rejected,
                    events=[Event("Normal", "RolloutStarted", f"{_describe(state)}")])
    return _judge(spec, active, served, target, readings, live_pods, now, rejected, challenger_failed)


def _why_superseded(strategy: str, served: Version | None, target: Version, active: dict[str, Any]) -> str:
    if strategy == "replace":
        return "spec.rollout.strategy is replace now"
    if served is None or active.get("champion") != served[0]:
        return "the champion's Deployment no longer serves " + str(active.get("champion"))
    return f"version {target[0]} replaces challenger {active.get('challenger')}"


def _judge(spec: ModelDeploymentSpec, active: dict[str, Any], served: Version, target: Version,
           readings: list[PodReading], live_pods: set[str], now: datetime, rejected: list[str],
           challenger_failed: str = "") -> Plan:
    state = dict(active)
    champ, chall, pods = fold(state, readings, live_pods, state["champion"], state["challenger"])
    state["championEvidence"] = champ.evidence(state["champion"])
    state["challengerEvidence"] = chall.evidence(state["challenger"])
    state["latency"] = {"champion": champ.latency, "challenger": chall.latency}
    state["pods"] = pods
    c = criteria(spec)
    started = parse_time(state.get("stepStartTime")) or now
    b, ch = champ.arm(), chall.arm()
    weights = _weights(spec)
    step = min(int(state.get("step") or 1), len(weights))
    progress = analysis.Progress(
        step_elapsed=max(0.0, (now - started).total_seconds()),
        step_labelled=ch.labelled - int(state.get("stepStartLabelled") or 0),
        looks_taken=int(state.get("looks") or 0),
        last_step=step >= len(weights),
        manual=spec.rollout.approval == "manual",
        approved=spec.rollout.approved_version == state["challenger"],
        proven=bool(state.get("notWorse")),
    )
    task = state.get("task") or next((r.counters.get("task") for r in readings if r.counters.get("task")), None)
    if task:
        state["task"] = task
    verdict = analysis.judge(b, ch, c, progress, classification=task != "regression")
    if challenger_failed:
        verdict = analysis.Verdict(analysis.ROLL_BACK, "ChallengerFailed", challenger_failed)
    elif active["phase"] == AWAITING and verdict.decision != analysis.ROLL_BACK:
        # Judged already: only a guardrail breach or the person's approval moves it now.
        verdict = (analysis.Verdict(analysis.PROMOTE, "Approved", f"approved in spec.rollout.approvedVersion; {active.get('message')}")
                   if progress.approved else analysis.Verdict(analysis.AWAIT_APPROVAL, "AwaitingApproval", str(active.get("message"))))
    if verdict.looked:
        state["looks"] = ch.labelled // c.min_samples
    state.update(decision=verdict.decision, reason=verdict.reason, message=verdict.message[:2000])
    if verdict.reason == "NotWorse":
        state["notWorse"] = True
    for key, value in (("pWorse", verdict.p_worse), ("pNotWorse", verdict.p_not_worse)):
        if value is not None:
            state[key] = float(f"{value:.4g}")
    events: list[Event] = []
    champion = (state["champion"], served[1])
    challenger = (state["challenger"], state.get("challengerSha256") or target[1])

    if verdict.decision == analysis.ROLL_BACK:
        state["phase"] = ROLLED_BACK
        state.pop("pods", None)
        rejected = [state["challenger"]] + [v for v in rejected if v != state["challenger"]]
        events.append(Event("Warning", "RolledBack", f"{_describe(active)} rolled back: {verdict.message}"))
        return Plan(champion=champion, state=state, rejected=rejected[:REJECTED_MAX], events=events)
    if verdict.decision == analysis.PROMOTE:
        state["phase"] = PROMOTED
        state.pop("pods", None)
        events.append(Event("Normal", "RolloutPromoted", f"{_describe(active)} promoted: {verdict.message}"))
        return Plan(champion=challenger, state=state, rejected=rejected, promoted=state["strategy"], events=events)
    if verdict.decision == analysis.ADVANCE:
        step += 1
        state.update(step=step, weight=weights[step - 1], stepStartTime=timestamp(now), stepStartLabelled=ch.labelled)
        events.append(Event("Normal", "RolloutStepAdvanced", f"{_describe(state)}: {verdict.message}"))
    elif verdict.decision == analysis.AWAIT_APPROVAL:
        if state["phase"] != AWAITING:
            events.append(Event("Normal", "AwaitingApproval", f"{_describe(state)}: {verdict.message}"))
        state["phase"] = AWAITING
    else:
        state["phase"] = ANALYSING
    return Plan(champion=champion, route=_route(state), challenger=challenger, state=state, rejected=rejected, events=events)


def requeue_seconds(spec: ModelDeploymentSpec) -> float:
    """How often an active rollout is looked at again: a sixth of a step, between 1 and 10 seconds."""
    return min(10.0, max(1.0, parse_duration(spec.rollout.step_duration) / 6))
