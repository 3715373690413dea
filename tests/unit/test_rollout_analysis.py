"""The rollout analysis (decision table, tests' error rates) and the rollout state machine, pure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.controllers.rollout import analysis, state as plans
from mlops_operator.controllers.rollout.analysis import Arm, Criteria, Progress, error_rate_tests, judge
from mlops_operator.controllers.rollout.evidence import PodReading, fold

C = Criteria(alpha=0.05, margin=0.02, min_samples=200, max_samples=2000, max_server_error_ratio=0.01,
             max_p99_ratio=2.0, step_seconds=60)
DUE = Progress(step_elapsed=120, step_labelled=400, looks_taken=0, last_step=False)
LAST = Progress(step_elapsed=120, step_labelled=400, looks_taken=0, last_step=True)


def arm(labelled: int, rate: float, requests: int = 1000, server_errors: int = 0, p99: float | None = 0.01) -> Arm:
    return Arm(labelled=labelled, errors=round(labelled * rate), requests=requests, server_errors=server_errors, p99_seconds=p99)


@pytest.mark.parametrize("champion,challenger,progress,decision,reason", [
    # guardrails first, at any time
    (arm(100, 0.05), arm(10, 0.05, requests=100, server_errors=5), Progress(1, 0, 0, False), "RollBack", "ServerErrors"),
    (arm(100, 0.05), arm(10, 0.05, p99=0.1), Progress(1, 0, 0, False), "RollBack", "Latency"),
    # latency: adjacent millisecond buckets (10 ms vs 25 ms) are noise, not a slower model; nor is the p99 of a few requests
    (arm(100, 0.05), arm(10, 0.05, p99=0.025), Progress(1, 0, 0, False), "Hold", "StepTime"),
    (arm(100, 0.05), arm(10, 0.05, requests=150, p99=0.5), Progress(1, 0, 0, False), "Hold", "StepTime"),
    (arm(100, 0.05), arm(10, 0.05, requests=10, server_errors=5), Progress(1, 0, 0, False), "Hold", "StepTime"),  # too few requests to judge 5xx
    # a step is held for its time and its samples
    (arm(2000, 0.05), arm(2000, 0.05), Progress(30, 400, 0, False), "Hold", "StepTime"),
    (arm(2000, 0.05), arm(2000, 0.05), Progress(120, 150, 0, False), "Hold", "Samples"),
    (arm(2000, 0.05), arm(390, 0.05), Progress(120, 390, 1, False), "Hold", "Undecided"),  # the next look is at 400
    # the tests
    (arm(2000, 0.05), arm(400, 0.30), DUE, "RollBack", "Worse"),
    (arm(2000, 0.02), arm(1000, 0.02), DUE, "Advance", "NotWorse"),
    (arm(2000, 0.02), arm(1000, 0.01), LAST, "Promote", "NotWorse"),
    (arm(2000, 0.05), arm(200, 0.06), Progress(120, 200, 0, False), "Hold", "Undecided"),
    (arm(2000, 0.05), arm(2000, 0.065), Progress(120, 400, 9, True), "RollBack", "Inconclusive"),
    # manual approval
    (arm(2000, 0.02), arm(1000, 0.02), Progress(120, 400, 0, True, manual=True), "AwaitApproval", "AwaitingApproval"),
    (arm(2000, 0.02), arm(1000, 0.02), Progress(120, 400, 0, True, manual=True, approved=True), "Promote", "NotWorse"),
])
def test_canary_decision_table(champion: Arm, challenger: Arm, progress: Progress, decision: str, reason: str) -> None:
    v = judge(champion, challenger, C, progress)
    assert (v.decision, v.reason) == (decision, reason), v.message


def test_canary_regression_models_are_judged_on_guardrails_only() -> None:
    v = judge(arm(500, 0.0), arm(500, 0.0), C, DUE, classification=False)
    assert (v.decision, v.reason) == ("Advance", "Guardrails")
    v = judge(arm(500, 0.0), arm(500, 0.0, requests=100, server_errors=3), C, DUE, classification=False)
    assert v.decision == "RollBack"


def test_canary_looks_spend_at_most_alpha_and_are_spaced_by_min_samples() -> None:
    assert C.looks == 10 and not analysis.look_due(399, 1, 200) and analysis.look_due(400, 1, 200)
    levels = [C.alpha_at(200 * k, k - 1) for k in range(1, 11)]
    assert sum(levels) == pytest.approx(0.05) and levels == sorted(levels)  # early looks demand more
    assert levels[0] == pytest.approx(0.05 / 1000) and levels[-1] == pytest.approx(0.05 * (1 - 0.9 ** 3))
    # skipped looks are not lost: one look after four multiples spends what the four would have
    assert C.alpha_at(800, 0) == pytest.approx(sum(levels[:4]))
    assert C.alpha_at(5000, 10) == 0.0  # past maxSamples nothing is left to spend


def test_canary_tests_hold_their_level_at_the_boundary() -> None:
    """Simulated: at exactly the margin, 'not worse' is concluded at most alpha of the time; at equal rates, 'worse' too."""
    rng = np.random.default_rng(0)
    n, trials, alpha = 1000, 4000, 0.05
    base = 0.10
    eb = rng.binomial(n, base, trials)
    ec_margin = rng.binomial(n, base + 0.02, trials)
    ec_equal = rng.binomial(n, base, trials)
    false_not_worse = np.mean([error_rate_tests(Arm(n, int(b)), Arm(n, int(c)), 0.02)[1] < alpha for b, c in zip(eb, ec_margin)])
    false_worse = np.mean([error_rate_tests(Arm(n, int(b)), Arm(n, int(c)), 0.02)[0] < alpha for b, c in zip(eb, ec_equal)])
    assert false_not_worse <= alpha + 0.015 and false_worse <= alpha + 0.015
    # and they have power: a challenger 5 points worse is called worse nearly always
    ec_bad = rng.binomial(n, base + 0.05, trials)
    assert np.mean([error_rate_tests(Arm(n, int(b)), Arm(n, int(c)), 0.02)[0] < alpha for b, c in zip(eb, ec_bad)]) > 0.95


def test_canary_p99_is_the_upper_bound_of_its_bucket() -> None:
    bounds = [0.001, 0.01, 0.1]
    assert analysis.p99(bounds, [0, 0, 0, 0]) is None
    assert analysis.p99(bounds, [90, 9, 1, 0]) == 0.01
    assert analysis.p99(bounds, [50, 0, 50, 0]) == 0.1
    assert analysis.p99(bounds, [0, 0, 0, 5]) == 0.1  # in +Inf: the last finite bound


# --- the state machine -------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
A, B, C2 = ("v1", "sha-a"), ("v2", "sha-b"), ("v3", "sha-c")


def spec(strategy: str = "canary", **rollout: object) -> ModelDeploymentSpec:
    body = {"strategy": strategy, "steps": [10, 50, 100], "stepDuration": "30s",
            "analysis": {"minSamples": 100, "maxSamples": 1000}, **rollout}
    return ModelDeploymentSpec.model_validate({"model": "iris", "rollout": body})


def pod(name: str, version: str, labelled: int, errors: int, requests: int = 0, started: str = "t0") -> PodReading:
    return PodReading(name, {"version": version, "task": "classification", "started": started, "labelled": labelled,
                             "errors": errors, "requests": requests, "serverErrors": 0, "latency": []})


def test_canary_starts_with_the_first_step_and_keeps_the_champion() -> None:
    p = plans.plan(spec(), {"modelVersion": "v1"}, A, B, [], set(), T0)
    assert p.champion == A and p.challenger == B and p.route == plans.Route("canary", 0.1)
    assert p.state["phase"] == "Analysing" and (p.state["step"], p.state["steps"], p.state["weight"]) == (1, 3, 10)
    assert [e.reason for e in p.events] == ["RolloutStarted"]


def test_shadow_starts_with_mirroring_and_no_weight() -> None:
    p = plans.plan(spec("shadow"), {}, A, B, [], set(), T0)
    assert p.route == plans.Route("shadow", 0.0) and p.state["weight"] == 0 and p.state["steps"] == 1


def test_canary_replace_and_first_versions_roll_out_as_before() -> None:
    assert plans.plan(spec("replace"), {}, A, B, [], set(), T0) == plans.Plan(champion=B)
    assert plans.plan(spec(), {}, None, B, [], set(), T0) == plans.Plan(champion=B)


def _run(s: ModelDeploymentSpec, status: dict, readings: list[PodReading], at: datetime, target=B) -> plans.Plan:  # type: ignore[no-untyped-def]
    names = {r.name for r in readings} | set((status.get("rollout") or {}).get("pods") or {})
    return plans.plan(s, status, A if (status.get("rollout") or {}).get("phase") != "Promoted" else B, target, readings, names, at)


def test_canary_good_challenger_climbs_the_steps_and_is_promoted() -> None:
    s = spec()
    p = plans.plan(s, {}, A, B, [], set(), T0)
    status = {"rollout": p.state}
    weights, t = [], T0
    labelled_a = labelled_b = 0
    for i in range(1, 40):
        t = T0 + timedelta(seconds=31 * i)
        labelled_a += 400
        labelled_b += 200
        p = _run(s, status, [pod("a", "v1", labelled_a, labelled_a // 50), pod("b", "v2", labelled_b, labelled_b // 100)], t)
        status = {"rollout": p.state, "rejectedVersions": p.rejected}
        weights.append(p.state["weight"])
        if p.state["phase"] != "Analysing":
            break
    assert p.state["phase"] == "Promoted" and p.promoted == "canary" and p.champion == B and p.challenger is None
    assert sorted(set(weights)) == [10, 50, 100] and p.rejected == []
    assert p.state["challengerEvidence"]["labelled"] == labelled_b and p.state["championEvidence"]["errors"] == labelled_a // 50


def test_canary_worse_challenger_is_rolled_back_and_never_retried() -> None:
    s = spec()
    status = {"rollout": plans.plan(s, {}, A, B, [], set(), T0).state}
    p = _run(s, status, [pod("a", "v1", 2000, 40), pod("b", "v2", 200, 60)], T0 + timedelta(seconds=31))
    assert p.state["phase"] == "RolledBack" and p.state["reason"] == "Worse"
    assert p.champion == A and p.challenger is None and p.route is None and p.rejected == ["v2"]
    assert [e.type for e in p.events] == ["Warning"] and p.state["pWorse"] < 0.005
    again = plans.plan(s, {"rollout": p.state, "rejectedVersions": p.rejected}, A, B, [], set(), T0 + timedelta(minutes=5))
    assert again.champion == A and again.challenger is None and "rolled back" in again.note
    newer = plans.plan(s, {"rollout": p.state, "rejectedVersions": p.rejected}, A, C2, [], set(), T0 + timedelta(minutes=5))
    assert newer.challenger == C2 and newer.rejected == ["v2"]


def test_canary_manual_approval_waits_for_the_version_named_in_git() -> None:
    s = spec(steps=[100], approval="manual")
    status = {"rollout": plans.plan(s, {}, A, B, [], set(), T0).state}
    readings = [pod("a", "v1", 3000, 30), pod("b", "v2", 1000, 8)]
    p = _run(s, status, readings, T0 + timedelta(seconds=31))
    assert p.state["phase"] == "AwaitingApproval" and p.challenger == B and [e.reason for e in p.events] == ["AwaitingApproval"]
    status = {"rollout": p.state}
    p = _run(s, status, readings, T0 + timedelta(seconds=62))
    assert p.state["phase"] == "AwaitingApproval" and p.events == []  # stays, no new event
    approved = spec(steps=[100], approval="manual", approvedVersion="v2")
    p = _run(approved, {"rollout": p.state}, readings, T0 + timedelta(seconds=93))
    assert p.state["phase"] == "Promoted" and p.champion == B and p.state["reason"] == "Approved"


def test_canary_superseded_by_a_newer_version_restarts_without_rejecting() -> None:
    s = spec()
    status = {"rollout": plans.plan(s, {}, A, B, [], set(), T0).state}
    p = plans.plan(s, status, A, C2, [], set(), T0 + timedelta(seconds=5))
    assert p.challenger == C2 and p.state["challenger"] == "v3" and p.rejected == []
    assert [e.reason for e in p.events] == ["RolloutSuperseded", "RolloutStarted"]
    p = plans.plan(spec("replace"), status, A, B, [], set(), T0)
    assert p.champion == B and p.challenger is None and p.state["phase"] == "Superseded"


def test_canary_evidence_survives_pod_restarts_and_rolls() -> None:
    state = {"champion": "v1", "challenger": "v2"}
    a, b, kept = fold(state, [pod("a1", "v1", 100, 5), pod("b1", "v2", 50, 1)], {"a1", "b1"}, "v1", "v2")
    state = {"championEvidence": a.evidence("v1"), "challengerEvidence": b.evidence("v2"), "pods": kept}
    # a1 grew by 20; b1 restarted (counts from 10 again); a2 is a new champion pod (the champion rolled)
    a, b, kept = fold(state, [pod("a1", "v1", 120, 6), pod("b1", "v2", 10, 0, started="t1"), pod("a2", "v1", 7, 0)],
                      {"a1", "a2", "b1"}, "v1", "v2")
    assert a.counts["labelled"] == 127 and a.counts["errors"] == 6 and b.counts["labelled"] == 60
    # a1 is gone: forgotten; an unreadable b1 keeps its last counters
    a, b, kept = fold({"championEvidence": a.evidence("v1"), "challengerEvidence": b.evidence("v2"), "pods": kept}, [],
                      {"a2", "b1"}, "v1", "v2")
    assert set(kept) == {"a2", "b1"} and a.counts["labelled"] == 127


@pytest.mark.parametrize("body,field", [
    ({"strategy": "blue-green"}, "rollout.strategy"),
    ({"steps": [50, 10]}, "rollout"),
    ({"steps": [0, 50]}, "rollout.steps[0]"),
    ({"analysis": {"minSamples": 500, "maxSamples": 100}}, "rollout.analysis"),
    ({"stepDuration": "soon"}, "rollout.stepDuration"),
    ({"analysis": {"alpha": 0.5}}, "rollout.analysis.alpha"),
])
def test_canary_spec_errors_name_the_field(body: dict, field: str) -> None:  # type: ignore[type-arg]
    from mlops_operator.api.validation import validate_object

    errors = validate_object({"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
                              "spec": {"model": "iris", "rollout": body}})
    assert errors and any(f"spec.{field}" in str(e) for e in errors), [str(e) for e in errors]


def test_canary_challenger_that_cannot_start_is_rolled_back() -> None:
    """Its pods never get ready, so it answers nothing (the router hides that from clients): its progress deadline decides."""
    s = spec()
    status = {"rollout": plans.plan(s, {}, A, B, [], set(), T0).state}
    held = plans.plan(s, status, A, B, [], set(), T0 + timedelta(minutes=5))
    assert held.state["phase"] == "Analysing" and held.challenger == B
    p = plans.plan(s, status, A, B, [], set(), T0 + timedelta(minutes=11), challenger_failed="rollout of v2 made no progress in time")
    assert (p.state["phase"], p.state["reason"]) == ("RolledBack", "ChallengerFailed") and p.rejected == ["v2"]


def test_canary_needs_a_name_that_leaves_room_for_the_challenger() -> None:
    from mlops_operator.controllers import modeldeployment
    from mlops_operator.controllers.settings import Settings

    name = "m" * 60
    md = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": name, "namespace": "ml", "uid": "u1", "generation": 1},
          "spec": {"model": "iris", "rollout": {"strategy": "canary"}}}
    d = modeldeployment.decide(md, [], modeldeployment.Observed(), Settings(), T0)
    ready = next(c for c in d.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "at most 52 characters" in ready["message"] and d.apply == []
    md["spec"]["rollout"]["strategy"] = "replace"
    d = modeldeployment.decide(md, [], modeldeployment.Observed(), Settings(), T0)
    assert next(c for c in d.status["conditions"] if c["type"] == "Ready")["reason"] != "InvalidSpec"


def test_canary_not_worse_stands_for_later_steps_unless_a_look_finds_it_worse() -> None:
    proven = Progress(step_elapsed=120, step_labelled=250, looks_taken=10, last_step=False, proven=True)
    v = judge(arm(4000, 0.02), arm(2100, 0.02), C, proven)  # alpha all spent (maxSamples 2000): no test, still advances
    assert (v.decision, v.reason) == ("Advance", "NotWorse")
    last = Progress(step_elapsed=120, step_labelled=250, looks_taken=2, last_step=True, proven=True)
    assert judge(arm(4000, 0.02), arm(1000, 0.02), C, last).decision == "Promote"
    assert judge(arm(4000, 0.02), arm(1000, 0.30), C, last).reason == "Worse"  # alpha left: the look still guards
    young = Progress(step_elapsed=10, step_labelled=250, looks_taken=2, last_step=True, proven=True)
    assert judge(arm(4000, 0.02), arm(1000, 0.02), C, young).decision == "Hold"  # each step still holds its time
