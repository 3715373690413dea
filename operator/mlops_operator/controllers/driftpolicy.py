"""DriftPolicy: windows of sensor counts, the checks, the trigger, and the retrain it starts.

Every decision's state lives in the policy's ``status`` (the window's counts,
the breach streak, the trigger times, the retrain history), so an operator
restart neither loses nor repeats a trigger: the same status, observations
and pod baselines give the same answer.

Three pure steps, run by ``reconcile.driftpolicy`` when a check is due:

1. :func:`advance_window` folds what each serving pod's drift sensor counted
   since the last check into the window (``status.window``);
2. :func:`run_checks` compares the window with the serving version's
   reference profile and training baseline;
3. :func:`decide` turns the check result, the retrain TrainingJobs the policy
   owns and the clock into the new status, at most one retrain to create, and
   the events to post.

How the window counts: ``status.window.counts`` holds what the window has
collected so far, and ``status.window.pods`` names the pods seen (with their
start time and rows). Each check adds ``current - last`` of every pod that
answered, where ``last`` is the counters the pod reported at the previous
check; a counter lower than before (or a new process start time) means the
pod restarted, and its current value is all new. A pod that disappears keeps
what it already contributed; a pod that fails to answer catches up at the
next check. A new serving version or ``window.maxAge`` starts a new window,
whose first check sees no rows yet (NotEnoughData, which changes nothing).

The pods' ``last`` counters (one set of bin counts per pod) are *not* kept in
status, which would then grow with pods x features x bins towards the API
server's object size limit; the caller keeps them (:class:`WindowUpdate`
``baselines``, in memory). After an operator restart a pod listed in status
without a baseline counts from that check on: the rows it counted between the
last check before the restart and the first after it are left out. No row is
ever counted twice.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Literal, Mapping

import numpy as np

from ..api.base import parse_duration
from ..api.driftpolicy import Check, DriftPolicySpec
from ..api.validation import validate_object
from ..drift import DriftConfig, Reference, evaluate_predictions, evaluate_window, performance
from . import labels
from .conditions import get_condition, parse_timestamp, set_condition, summarize, timestamp
from .trainingjob import Event
from .versions import approved, needs_approval

Obj = dict[str, Any]
Verdict = Literal["Drift", "NoDrift", "NotEnoughData", "Unavailable"]
Counts = list[int] | dict[str, int]

MAX_SCORES = 100
MAX_RETRAINS = 20
DAY = timedelta(hours=24)
FEEDBACK_MIN_SAMPLES = 100
"""Fewest labelled rows for an errorRate / rmse verdict (or window.minSamples when smaller)."""
MAX_TJ_NAME = 52
PROMOTION = f"{labels.PREFIX}/promotion"
REASON = f"{labels.PREFIX}/retrain-reason"


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Snapshot:
    """What one serving pod's drift sensor counted since its process started.

    Plain data: the cluster and local layers parse the server's ``/metrics``
    into this. ``features`` maps a feature to its bin counts (numeric: the
    reference bins, then NaN) or its level counts (categorical);
    ``predictions`` likewise for the prediction distribution.
    Of ``feedback_rows`` labelled rows, ``feedback_errors`` were predicted
    wrong (classification) and ``feedback_squared_error`` sums the squared
    errors (regression). ``started`` tells a restart: any value that changes
    when the server process does (its start time, e.g. the container's
    ``startedAt``), or None when unknown (then only falling counters tell).
    """

    version: str | None = None
    rows: int = 0
    features: Mapping[str, Counts] = field(default_factory=dict)
    predictions: Counts | None = None
    prediction_rows: int = 0
    feedback_rows: int = 0
    feedback_errors: int = 0
    feedback_squared_error: float = 0.0
    started: float | str | None = None


def counters_of(snap: Snapshot) -> Obj:
    """A snapshot's counters in the JSON form kept in status."""
    return {
        "rows": int(snap.rows),
        "predictionRows": int(snap.prediction_rows),
        "features": {str(k): _plain(v) for k, v in snap.features.items()},
        "predictions": _plain(snap.predictions) if snap.predictions is not None else None,
        "feedbackRows": int(snap.feedback_rows),
        "feedbackErrors": int(snap.feedback_errors),
        "feedbackSquaredError": float(snap.feedback_squared_error),
    }


def _plain(c: Any) -> Counts:
    if isinstance(c, Mapping):
        return {str(k): int(v) for k, v in c.items()}
    return [int(v) for v in np.asarray(c).reshape(-1).tolist()]


def empty_counters() -> Obj:
    return {"rows": 0, "predictionRows": 0, "features": {}, "predictions": None,
            "feedbackRows": 0, "feedbackErrors": 0, "feedbackSquaredError": 0.0}


def _combine(a: Counts | None, b: Counts | None, sign: int) -> Counts | None:
    """a + sign*b for one count vector or level dict; None when the layouts differ."""
    if b is None:
        return copy.deepcopy(a)
    if a is None:
        a = {} if isinstance(b, Mapping) else [0] * len(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0) + sign * int(v)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x + sign * y for x, y in zip(a, b)]
    return None


def add_counters(a: Obj, b: Obj, sign: int = 1) -> Obj | None:
    """a + sign*b over every counter; None when a feature's layout changed."""
    out = {
        "rows": a.get("rows", 0) + sign * b.get("rows", 0),
        "predictionRows": a.get("predictionRows", 0) + sign * b.get("predictionRows", 0),
        "feedbackRows": a.get("feedbackRows", 0) + sign * b.get("feedbackRows", 0),
        "feedbackErrors": a.get("feedbackErrors", 0) + sign * b.get("feedbackErrors", 0),
        "feedbackSquaredError": float(a.get("feedbackSquaredError", 0.0)) + sign * float(b.get("feedbackSquaredError", 0.0)),
        "features": {},
        "predictions": None,
    }
    fa, fb = a.get("features") or {}, b.get("features") or {}
    for name in sorted(set(fa) | set(fb)):
        c = _combine(fa.get(name), fb.get(name), sign)
        if c is None:
            return None
        out["features"][name] = c
    if a.get("predictions") is not None or b.get("predictions") is not None:
        c = _combine(a.get("predictions"), b.get("predictions"), sign)
        if c is None:
            return None
        out["predictions"] = c
    return out


def _negative(c: Obj) -> bool:
    """Whether any counter went below zero (a restarted pod counted less than before)."""
    if min(c["rows"], c["predictionRows"], c["feedbackRows"], c["feedbackErrors"]) < 0 or c["feedbackSquaredError"] < -1e-6:
        return True
    for v in [*c["features"].values(), c["predictions"]]:
        if v is None:
            continue
        values = v.values() if isinstance(v, Mapping) else v
        if any(x < 0 for x in values):
            return True
    return False


@dataclass
class WindowUpdate:
    """The window after folding in one round of snapshots."""

    state: Obj
    """What goes to ``status.window``."""
    counts: Obj
    """The window's counters so far: what the checks read."""
    reporting: int
    """Pods whose snapshot was counted this round."""
    reset: str | None = None
    """Why a new window began: New, NewVersion or MaxAge."""
    skipped: list[str] = field(default_factory=list)
    """Pods that answered with another model version (a rollout in progress)."""
    baselines: dict[str, Obj] = field(default_factory=dict)
    """Per pod key, the counters it reported this round: the next round's ``baselines``."""


def _pod_key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return meta.get("uid") or meta.get("name", "")


def advance_window(
    window: Obj | None,
    version: str,
    observed: Iterable[tuple[Obj, Snapshot]],
    alive: Iterable[str],
    now: datetime,
    max_age: float | None = None,
    baselines: Mapping[str, Obj] | None = None,
) -> WindowUpdate:
    """Fold one round of pod snapshots into the window.

    ``observed`` pairs each pod that answered with its snapshot; ``alive``
    names every pod of the deployment that still exists (answered or not), so
    entries of pods that are gone can be dropped. ``baselines`` are the
    previous round's :attr:`WindowUpdate.baselines`. See the module docstring.
    """
    observed = list(observed)
    alive = list(alive)
    baselines = dict(baselines or {})
    window = window or {}
    start = parse_timestamp(window.get("start"))
    reset: str | None = None
    if not window or start is None:
        reset = "New"
    elif window.get("version") != version:
        reset = "NewVersion"
    elif max_age is not None and (now - start).total_seconds() >= max_age:
        reset = "MaxAge"
    if reset:
        start = now
        pods: dict[str, Obj] = {}
        counts = empty_counters()
    else:
        pods = {p["key"]: p for p in window.get("pods") or [] if p.get("key")}
        counts = window.get("counts") or empty_counters()
        for key, p in pods.items():  # statuses written before the counters left status
            if "counters" in p and key not in baselines:
                baselines[key] = p["counters"]
    assert start is not None

    reporting, skipped = 0, []
    seen: dict[str, Obj] = {}
    for pod, snap in observed:
        meta = pod.get("metadata") or {}
        if snap.version and snap.version != version:
            skipped.append(meta.get("name", ""))
            continue
        key = _pod_key(pod)
        current = counters_of(snap)
        before = pods.get(key)
        last = baselines.get(key)
        if reset:
            delta = None  # the window starts here: everything counted so far is before it
        elif before is None:
            created = parse_timestamp(meta.get("creationTimestamp"))
            # A pod born inside the window counted nothing before it; one born earlier
            # (missed at the window's start) may have, so only its later rows count.
            delta = current if created is not None and created >= start else None
        elif before.get("started") is not None and snap.started is not None and before["started"] != snap.started:
            delta = current  # a new process: its counters began at zero
        elif last is None:
            delta = None  # its last counters were lost (operator restart): it counts from here
        else:
            delta = add_counters(current, last, -1)
            if delta is None or _negative(delta):
                delta = current  # counted less than before: the pod restarted
        if delta is not None:
            summed = add_counters(counts, delta)
            if summed is None:
                # The pod's bins do not match the window's: start over from here.
                return advance_window(None, version, observed, alive, now, max_age)
            counts = summed
        pods[key] = {"key": key, "name": meta.get("name", ""), "started": snap.started, "rows": current["rows"]}
        seen[key] = current
        reporting += 1

    living = set(alive)
    kept = sorted((p for p in pods.values() if p["name"] in living), key=lambda p: (p["name"], p["key"]))
    # A pod that did not answer keeps its last counters, to catch up at the next round.
    kept_baselines = {p["key"]: seen.get(p["key"], baselines.get(p["key"])) for p in kept}
    state = {"start": timestamp(start), "version": version, "counts": counts, "pods": kept}
    return WindowUpdate(state=state, counts=counts, reporting=reporting, reset=reset, skipped=skipped,
                        baselines={k: v for k, v in kept_baselines.items() if v is not None})


# --------------------------------------------------------------------------- checks


@dataclass
class CheckOutcome:
    """One check's result: breach, ok, insufficient (too few rows) or unavailable."""

    type: str
    outcome: Literal["breach", "ok", "insufficient", "unavailable"]
    summary: str
    scores: list[Obj] = field(default_factory=list)


@dataclass
class CheckResult:
    """The policy's verdict on one window: any breach is Drift."""

    verdict: Verdict
    samples: int = 0
    scores: list[Obj] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    message: str = ""

    @property
    def breaches(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.outcome == "breach"]

    @property
    def reason(self) -> str:
        """What breached, in one line (the retrain's reason)."""
        return "; ".join(c.summary for c in self.breaches)[:1000]


def unavailable(message: str) -> CheckResult:
    return CheckResult(verdict="Unavailable", message=message)


def _num(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if math.isfinite(f) else None


def _score(check: str, f: Any) -> Obj:
    out = {
        "check": check,
        "feature": f.name,
        "statistic": _num(f.statistic),
        "pValue": _num(f.adjusted_pvalue if not math.isnan(f.adjusted_pvalue) else f.pvalue),
        "effect": _num(f.effect),
        "psi": _num(f.psi),
        "drifted": bool(f.drifted),
    }
    return {k: v for k, v in out.items() if v is not None}


def _feature_list(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _drift_check(check: Check, reference: Reference, counts: Obj, min_samples: int) -> CheckOutcome:
    psi_rule = check.type == "psi"
    config = DriftConfig(
        min_samples=min_samples,
        correction=check.correction,
        q=min(check.q, 0.5),
        numeric_effect=check.numeric_effect,
        categorical_effect=check.categorical_effect,
        rule="psi" if psi_rule else "default",
        psi_threshold=check.threshold,
    )
    rows = int(counts.get("rows") or 0)
    if rows < min_samples:
        return CheckOutcome(check.type, "insufficient", f"{check.type}: {rows} of {min_samples} rows")
    wanted = set(check.features) if check.features else None
    window = {
        name: c
        for name, c in (counts.get("features") or {}).items()
        if name in reference.features and (wanted is None or name in wanted)
    }
    if not window:
        return CheckOutcome(check.type, "unavailable", f"{check.type}: the sensor reports none of the features")
    result = evaluate_window(reference, window, config)
    if result.status == "insufficient_data":
        return CheckOutcome(check.type, "insufficient", f"{check.type}: {result.samples} of {min_samples} rows")
    scores = [_score(check.type, f) for f in result.features]
    drifted = result.drifted_features
    if drifted:
        return CheckOutcome(check.type, "breach", f"{check.type} on {_feature_list(drifted)}", scores)
    return CheckOutcome(check.type, "ok", f"{check.type}: no drift in {len(result.features)} features", scores)


def _prediction_check(check: Check, reference: Reference, counts: Obj, min_samples: int) -> CheckOutcome:
    if reference.prediction is None:
        return CheckOutcome(check.type, "unavailable", "predictionDrift: the reference has no prediction profile")
    if counts.get("predictions") is None:
        rows = int(counts.get("rows") or 0)
        if rows < min_samples:  # an empty window has no prediction counts yet
            return CheckOutcome(check.type, "insufficient", f"predictionDrift: {rows} of {min_samples} predictions")
        return CheckOutcome(check.type, "unavailable", "predictionDrift: the sensor reports no prediction counts")
    config = DriftConfig(min_samples=min_samples, numeric_effect=check.numeric_effect, categorical_effect=check.categorical_effect)
    result = evaluate_predictions(reference, counts["predictions"], config)
    if result.status == "insufficient_data":
        return CheckOutcome(check.type, "insufficient", f"predictionDrift: {result.samples} of {min_samples} predictions")
    scores = [_score(check.type, f) for f in result.features]
    if result.status == "drift":
        return CheckOutcome(check.type, "breach", "predictionDrift", scores)
    return CheckOutcome(check.type, "ok", "predictionDrift: none", scores)


def _performance_check(check: Check, metadata: Obj | None, counts: Obj, min_samples: int) -> CheckOutcome:
    key = "errorRate" if check.type == "errorRate" else "rmse"
    baseline = _num(((metadata or {}).get("baseline") or {}).get(key))
    limits = []
    if check.maximum is not None:
        limits.append(check.maximum)
    if check.max_increase is not None:
        if baseline is None:
            if check.maximum is None:
                return CheckOutcome(check.type, "unavailable", f"{key}: maxIncrease needs the training baseline, which the serving version lacks")
        else:
            limits.append(baseline + check.max_increase)
    limit = min(limits)
    n = int(counts.get("feedbackRows") or 0)
    errors = max(float(counts.get("feedbackErrors" if key == "errorRate" else "feedbackSquaredError") or 0), 0.0)
    task: Literal["classification", "regression"] = "classification" if key == "errorRate" else "regression"
    needed = min(FEEDBACK_MIN_SAMPLES, min_samples)
    result = performance(errors, n, baseline if baseline is not None else math.nan, limit, task=task, min_samples=needed)
    if result.status == "insufficient_data":
        return CheckOutcome(check.type, "insufficient", f"{key}: {n} of {needed} labelled rows")
    score = {"check": check.type, "feature": key, "statistic": _num(result.value), "drifted": result.status == "degraded"}
    text = f"{key} {result.value:.4g} on {n} labelled rows (limit {limit:.4g})"
    return CheckOutcome(check.type, "breach" if result.status == "degraded" else "ok", text, [score])


def run_checks(spec: DriftPolicySpec, reference: Reference | None, metadata: Obj | None, counts: Obj) -> CheckResult:
    """Every check of the policy on one window; any breach is Drift.

    Not enough data is never "no drift": the verdict is NoDrift only when a
    check had enough rows and passed, NotEnoughData when none had enough.
    """
    min_samples = spec.window.min_samples
    outcomes: list[CheckOutcome] = []
    for check in spec.checks:
        try:
            if check.type in ("errorRate", "rmse"):
                outcomes.append(_performance_check(check, metadata, counts, min_samples))
            elif reference is None:
                outcomes.append(CheckOutcome(check.type, "unavailable", f"{check.type}: no reference profile"))
            elif check.type == "predictionDrift":
                outcomes.append(_prediction_check(check, reference, counts, min_samples))
            else:
                outcomes.append(_drift_check(check, reference, counts, min_samples))
        except (ValueError, TypeError, KeyError) as exc:
            outcomes.append(CheckOutcome(check.type, "unavailable", f"{check.type}: counts do not fit the reference ({exc})"[:300]))
    kinds = {o.outcome for o in outcomes}
    verdict: Verdict = (
        "Drift" if "breach" in kinds else "NoDrift" if "ok" in kinds else "NotEnoughData" if "insufficient" in kinds else "Unavailable"
    )
    scores = [s for o in outcomes for s in o.scores]
    scores.sort(key=lambda s: (not s.get("drifted"), -(s.get("effect") if s.get("effect") is not None else -1.0), s.get("pValue", 1.0)))
    shown = [o for o in outcomes if o.outcome == "breach"] if verdict == "Drift" else outcomes
    return CheckResult(
        verdict=verdict,
        samples=int(counts.get("rows") or 0),
        scores=scores[:MAX_SCORES],
        checks=outcomes,
        message="; ".join(o.summary for o in shown)[:1000],
    )


# --------------------------------------------------------------------------- schedule


def initial_delay(uid: str, interval: float) -> float:
    """A stable offset in [0, interval) from the uid, so policies created together spread out."""
    digest = hashlib.sha256((uid or "").encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


def _interval(policy: Obj) -> float:
    try:
        return max(parse_duration(str((policy.get("spec") or {}).get("interval", "60s"))), 5.0)
    except ValueError:
        return 60.0


def next_check(policy: Obj) -> datetime | None:
    """When the next check is due; None means now (never scheduled before and no creation time)."""
    interval = _interval(policy)
    last = parse_timestamp((policy.get("status") or {}).get("lastCheck"))
    if last is not None:
        return last + timedelta(seconds=interval)
    meta = policy.get("metadata") or {}
    created = parse_timestamp(meta.get("creationTimestamp"))
    if created is None:
        return None
    return created + timedelta(seconds=initial_delay(meta.get("uid", ""), interval))


def is_due(policy: Obj, now: datetime) -> bool:
    """Whether a check should run now: ``lastCheck + interval <= now`` (first: a uid-spread delay after creation)."""
    when = next_check(policy)
    return when is None or when <= now


# --------------------------------------------------------------------------- retrain


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


def build_retrain(policy: Obj, source: Obj, n: int, *, parent_version: str | None, reason: str, task: str | None = None) -> Obj:
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
    found = {
        labels.MODEL: spec.get("model", ""),
        labels.TRIGGERED_BY: meta["name"],
        labels.PARENT_VERSION: parent_version or "",
    }
    annotations = {REASON: reason[:1000]}
    if spec_model.promotion.mode == "manual":
        annotations[PROMOTION] = "manual"
    return {
        "apiVersion": source.get("apiVersion", "mlops.dev/v1alpha1"),
        "kind": "TrainingJob",
        "metadata": {
            "name": retrain_name(meta["name"], n),
            "namespace": meta.get("namespace", "default"),
            "labels": labels.owned_labels("retrain", **{k: v for k, v in found.items() if v and len(v) <= 63}),
            "annotations": annotations,
            "ownerReferences": [labels.owner_reference(policy)],
        },
        "spec": spec,
    }


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


def _gate_text(tj: Obj) -> str:
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


def _failure_text(tj: Obj) -> str:
    failed = get_condition((tj.get("status") or {}).get("conditions"), "Failed")
    return (failed or {}).get("message") or (failed or {}).get("reason") or "the training run failed"


def approval_hint(name: str) -> str:
    return f"kubectl annotate tj {name} {labels.APPROVED}=true"


# --------------------------------------------------------------------------- decision


@dataclass
class PolicyDecision:
    """Create ``retrain`` when it is not None, then write ``status`` and post ``events``."""

    status: Obj
    retrain: Obj | None = None
    events: list[Event] = field(default_factory=list)
    check: CheckResult | None = None


def spec_errors(policy: Obj) -> list[str]:
    """What is wrong with the policy's spec (its status is not checked)."""
    bare = {k: v for k, v in policy.items() if k != "status"}
    return [str(e) for e in validate_object(bare)]


def _recent(times: Iterable[str], now: datetime) -> list[str]:
    out = []
    for t in times:
        when = parse_timestamp(t)
        if when is not None and now - when < DAY:
            out.append(t)
    return out


def _bookkeeping(policy: Obj, status: Obj, retrains: list[Obj], serving: str | None, now: datetime) -> list[Event]:
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
            records.insert(0, {"name": tj_name, "reason": (tj["metadata"].get("annotations") or {}).get(REASON, ""),
                               "time": when, "result": "Running", "promoted": False})
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
                events.append(Event("Warning", "RetrainGateFailed", f"retrain {rec['name']} failed its gate ({_gate_text(tj)}); the serving version stays"))
            elif result == "Failed":
                events.append(Event("Warning", "RetrainFailed", f"retrain {rec['name']} failed: {_failure_text(tj)}"[:1000]))
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


def _retraining_condition(status: Obj, retrains: list[Obj], now: datetime, generation: int | None) -> list[Obj]:
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
        msg = f"{last['name']} failed its gate ({_gate_text(tj) if tj else 'see the TrainingJob'}); the serving version stays"
    elif result == "Failed":
        msg = f"{last['name']} failed: {_failure_text(tj) if tj else 'see the TrainingJob'}"
    elif result == "Deleted":
        msg = f"{last['name']} was deleted"
    else:
        msg = f"{last['name']}: {result}"
    return set_condition(conds, "Retraining", False, result, msg[:1000], now, generation)


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
    events += _bookkeeping(policy, status, retrains, serving, now)

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
            times = _recent(status.get("triggerTimes") or [], now)
            status["triggerTimes"] = times
            blocked = _blocked(spec, status, source, now, times)
            if streak < trigger.consecutive:
                note = f"{streak} of {trigger.consecutive} breaches in a row"
            elif blocked:
                note = f"{streak} breaches in a row, but {blocked}"
            else:
                note = ""
            if not note:
                n = int(status.get("retrainCount") or 0) + 1
                status["lastTriggered"] = timestamp(now)
                status["triggerTimes"] = times + [timestamp(now)]
                status["consecutiveBreaches"] = 0
                if spec.action == "alert":
                    note = "alert raised (action: alert, no retrain)"
                    events.append(Event("Warning", "DriftAlert", f"{check.reason}"[:1000]))
                else:
                    assert source is not None
                    name = retrain_name(meta["name"], n)
                    retrain = build_retrain(policy, source, n, parent_version=serving, reason=check.reason, task=task)
                    status["retrainCount"] = n
                    status["activeRetrain"] = name
                    record = {"name": name, "reason": check.reason, "time": timestamp(now), "result": "Running", "promoted": False}
                    status["retrains"] = ([record] + [r for r in status.get("retrains") or [] if r["name"] != name])[:MAX_RETRAINS]
                    note = f"retrain {name} started"
                    if spec.promotion.mode == "manual":
                        note += f"; it will wait for approval ({approval_hint(name)})"
                    events.append(Event("Normal", "RetrainTriggered", f"{note}: {check.reason}"[:1000]))
            events.insert(0, Event("Warning", "DriftDetected", f"{check.message}; {note}"[:1000]))

    status["conditions"] = _conditions(spec, status, old, check, deployment, source, retrains, now, generation)
    return PolicyDecision(status=status, retrain=retrain, events=events, check=check)


def _blocked(spec: DriftPolicySpec, status: Obj, source: Obj | None, now: datetime, times: list[str]) -> str:
    """Why the trigger may not fire now ('' when it may)."""
    trigger = spec.trigger
    if spec.action == "retrain":
        if status.get("activeRetrain"):
            return f"retrain {status['activeRetrain']} is still active"
        if source is None:
            return f"spec.retrain.from {spec.retrain.from_ if spec.retrain else ''} does not exist"
    last = parse_timestamp(status.get("lastTriggered"))
    cooldown = parse_duration(trigger.cooldown)
    if last is not None and now < last + timedelta(seconds=cooldown):
        return f"cooling down until {timestamp(last + timedelta(seconds=cooldown))}"
    if len(times) >= trigger.max_retrains_per_day:
        return f"{len(times)} triggers in the last 24h reach maxRetrainsPerDay {trigger.max_retrains_per_day}"
    return ""


def _conditions(spec: DriftPolicySpec, status: Obj, old: Obj, check: CheckResult | None, deployment: Obj | None,
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
    status["conditions"] = conds
    conds = _retraining_condition(status, retrains, now, generation)

    if deployment is None:
        ready, reason, msg, stalled = False, "DeploymentNotFound", f"ModelDeployment {spec.deployment} does not exist", True
    elif spec.action == "retrain" and source is None:
        name = spec.retrain.from_ if spec.retrain else ""
        ready, reason, msg, stalled = False, "RetrainSourceNotFound", f"spec.retrain.from: TrainingJob {name} does not exist", True
    elif verdict == "Unavailable":
        msg = check.message if check is not None else (get_condition(old.get("conditions"), "Ready") or {}).get("message", "")
        ready, reason, stalled = False, "Unavailable", False
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
