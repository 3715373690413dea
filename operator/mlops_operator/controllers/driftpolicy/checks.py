"""The checks: a window's counts against the serving version's reference profile and training baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ...api.driftpolicy import Check, DriftPolicySpec
from ...drift import (
    DriftConfig,
    Reference,
    evaluate_labels,
    evaluate_multivariate,
    evaluate_predictions,
    evaluate_window,
    performance,
)
from ..cluster import Obj

Verdict = Literal["Drift", "NoDrift", "NotEnoughData", "Unavailable"]

MAX_SCORES = 100
FEEDBACK_MIN_SAMPLES = 100
"""Fewest labelled rows for an errorRate / rmse / labelDrift verdict (or window.minSamples when smaller)."""


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
    scraped: int = 0
    """Ready serving pods whose drift sensor the check asked (0: it got no further than finding them)."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Of those, the pods whose sensor could not be read: pod name -> why."""
    reference_error: str = ""
    """Why the serving version's reference profile could not be read ('' when it was, or was not asked for)."""

    @property
    def breaches(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.outcome == "breach"]

    @property
    def reason(self) -> str:
        """What breached, in one line (the retrain's reason)."""
        return "; ".join(c.summary for c in self.breaches)[:1000]


def unavailable(message: str, *, scraped: int = 0, unreadable: Mapping[str, str] | None = None,
                reference_error: str = "") -> CheckResult:
    return CheckResult(verdict="Unavailable", message=message, scraped=scraped, unreadable=dict(unreadable or {}),
                       reference_error=reference_error)


def unreadable_text(unreadable: Mapping[str, str], scraped: int, limit: int = 5) -> str:
    """The pods whose drift sensor could not be read, and why, in one bounded line."""
    names = sorted(unreadable)
    shown = "; ".join(f"{n} ({unreadable[n][:200]})" for n in names[:limit])
    more = f"; and {len(names) - limit} more" if len(names) > limit else ""
    return f"the drift sensor of {len(names)} of {scraped} ready serving pods could not be read: {shown}{more}"


def _finite(x: Any) -> float | None:
    """``x`` as a float rounded for status, or None when it is no finite number (status holds no NaN)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if math.isfinite(f) else None


_REASONS = {
    "drift": "drift", "unseen_levels": "unseenLevels", "not_significant": "notSignificant",
    "below_floor": "belowFloor", "psi": "psi", "below_psi": "belowPsi", "excluded": "excluded",
}


def _score(check: str, f: Any) -> Obj:
    """One feature's line in status: every number its verdict rests on, and the verdict's reason."""
    out = {
        "check": check,
        "feature": f.name,
        "statistic": _finite(f.statistic),
        "pValue": _finite(f.adjusted_pvalue if not math.isnan(f.adjusted_pvalue) else f.pvalue),
        "rawPValue": _finite(f.pvalue),
        "effect": _finite(f.effect),
        "rawEffect": _finite(f.raw_effect),
        "floor": _finite(f.floor),
        "weight": _finite(f.weight),
        "unseenShare": _finite(f.unseen_share) if f.unseen_share else None,
        "psi": _finite(f.psi),
        "drifted": bool(f.drifted),
        "reason": _REASONS.get(f.reason),
    }
    return {k: v for k, v in out.items() if v is not None}


def drift_config(check: Check, min_samples: int) -> DriftConfig:
    """The statistics' configuration of one check: its sensitivity preset, then the fields it sets."""
    settings = check.per_feature or []
    return DriftConfig.preset(
        check.sensitivity,
        min_samples=min_samples,
        correction=check.correction,
        q=min(check.q, 0.5) if check.q is not None else None,
        numeric_effect=check.numeric_effect,
        categorical_effect=check.categorical_effect,
        unseen_share=check.unseen_share,
        rule="psi" if check.type == "psi" else "default",
        psi_threshold=check.threshold,
        feature_effects={s.feature: s.effect for s in settings if s.effect is not None},
        weights={s.feature: s.weight for s in settings if s.weight is not None},
    )


def _feature_list(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _drift_check(check: Check, reference: Reference, counts: Obj, min_samples: int) -> CheckOutcome:
    config = drift_config(check, min_samples)
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
    drifted = [f.name + (" (new categories)" if f.reason == "unseen_levels" else "") for f in result.features if f.drifted]
    if drifted:
        return CheckOutcome(check.type, "breach", f"{check.type} on {_feature_list(drifted)}", scores)
    return CheckOutcome(
        check.type, "ok", f"{check.type}: no drift in {len(result.features)} features{_closest(result.features)}", scores
    )


def _closest(features: list[Any]) -> str:
    """Why the feature nearest to drifting did not: the explanation of a "no drift"."""
    if not features:
        return ""
    f = features[0]  # ranked by effect, then p-value
    if f.reason == "below_floor":
        return f"; closest: {f.name}, significant but effect {f.effect:.3g} < floor {f.floor:.3g}"
    if f.reason == "not_significant":
        return f"; closest: {f.name}, effect {f.effect:.3g} (floor {f.floor:.3g}) but corrected p {f.adjusted_pvalue:.3g} > q"
    if f.reason == "below_psi":
        return f"; closest: {f.name}, psi {f.psi:.3g}"
    return ""


def _prediction_check(check: Check, reference: Reference, counts: Obj, min_samples: int) -> CheckOutcome:
    if reference.prediction is None:
        return CheckOutcome(check.type, "unavailable", "predictionDrift: the reference has no prediction profile")
    if counts.get("predictions") is None:
        rows = int(counts.get("rows") or 0)
        if rows < min_samples:  # an empty window has no prediction counts yet
            return CheckOutcome(check.type, "insufficient", f"predictionDrift: {rows} of {min_samples} predictions")
        return CheckOutcome(check.type, "unavailable", "predictionDrift: the sensor reports no prediction counts")
    config = drift_config(check, min_samples)
    result = evaluate_predictions(reference, counts["predictions"], config)
    if result.status == "insufficient_data":
        return CheckOutcome(check.type, "insufficient", f"predictionDrift: {result.samples} of {min_samples} predictions")
    scores = [_score(check.type, f) for f in result.features]
    if result.status == "drift":
        return CheckOutcome(check.type, "breach", "predictionDrift", scores)
    return CheckOutcome(check.type, "ok", "predictionDrift: none", scores)


def _label_check(check: Check, reference: Reference, counts: Obj, min_samples: int) -> CheckOutcome:
    """Feedback labels against the training labels: the predictionDrift rule on another distribution."""
    if reference.label is None:
        return CheckOutcome(check.type, "unavailable",
                            "labelDrift: not available, the reference has no training-label profile (trained before "
                            "labels were profiled; a retrain adds it)")
    needed = min(FEEDBACK_MIN_SAMPLES, min_samples)
    labels = counts.get("labels")
    labelled = int(counts.get("feedbackRows") or 0)
    if labels is None:
        if labelled < needed:
            return CheckOutcome(check.type, "insufficient", f"labelDrift: {labelled} of {needed} labelled rows")
        return CheckOutcome(check.type, "unavailable", "labelDrift: not available, the sensor reports no label counts")
    result = evaluate_labels(reference, labels, drift_config(check, needed))
    if result.status == "insufficient_data":
        return CheckOutcome(check.type, "insufficient", f"labelDrift: {result.samples} of {needed} labelled rows")
    scores = [_score(check.type, f) for f in result.features]
    if result.status == "drift":
        return CheckOutcome(check.type, "breach", f"labelDrift on {result.samples} labelled rows", scores)
    return CheckOutcome(check.type, "ok", f"labelDrift: none in {result.samples} labelled rows{_closest(result.features)}", scores)


def _multivariate_check(check: Check, reference: Reference, counts: Obj, min_samples: int) -> CheckOutcome:
    """Projections of pairs of numeric features, each tested like a numeric feature (corrected across them)."""
    mv = reference.multivariate
    if mv is None:
        return CheckOutcome(check.type, "unavailable",
                            "multivariateDrift: not available, the reference has no multivariate section (trained before "
                            "it existed, or fewer than two numeric features)")
    projections = counts.get("projections") or {}
    rows = int(counts.get("rows") or 0)
    wanted = set(check.features) if check.features else None
    window = {
        p.name: projections[p.name] for p in mv.projections
        if p.name in projections and (wanted is None or wanted & set(p.features))
    }
    if not window:
        if rows < min_samples:
            return CheckOutcome(check.type, "insufficient", f"multivariateDrift: {rows} of {min_samples} rows")
        return CheckOutcome(check.type, "unavailable", "multivariateDrift: not available, the sensor reports no projection counts")
    result = evaluate_multivariate(reference, window, drift_config(check, min_samples))
    if result.status == "insufficient_data":
        return CheckOutcome(check.type, "insufficient", f"multivariateDrift: {result.samples} of {min_samples} rows")
    scores = [_score(check.type, f) for f in result.features]
    drifted = [f.name for f in result.features if f.drifted]
    if drifted:
        return CheckOutcome(check.type, "breach", f"multivariateDrift on {_feature_list(drifted)}", scores)
    return CheckOutcome(check.type, "ok",
                        f"multivariateDrift: no drift in {len(result.features)} projections{_closest(result.features)}", scores)


def _performance_check(check: Check, metadata: Obj | None, counts: Obj, min_samples: int) -> CheckOutcome:
    key = "errorRate" if check.type == "errorRate" else "rmse"
    baseline = _finite(((metadata or {}).get("baseline") or {}).get(key))
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
    score = {"check": check.type, "feature": key, "statistic": _finite(result.value), "drifted": result.status == "degraded"}
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
            elif check.type == "labelDrift":
                outcomes.append(_label_check(check, reference, counts, min_samples))
            elif check.type == "multivariateDrift":
                outcomes.append(_multivariate_check(check, reference, counts, min_samples))
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
