"""The labelDrift and multivariateDrift checks of a DriftPolicy: window algebra and verdicts on a real reference."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest

from mlops_operator.api.driftpolicy import DriftPolicySpec
from mlops_operator.controllers import driftpolicy as dp
from mlops_operator.drift import Reference, build_reference

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLASSES = ["cat", "dog", "eel"]


def _columns(rng: np.random.Generator, n: int, rho: float) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    return {"a": a, "b": rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n), "c": rng.normal(size=n)}


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(2)
    cols = _columns(rng, 10_000, 0.7)
    return Reference.from_dict(build_reference(cols, set(), np.where(cols["a"] > 0, "cat", "dog"), "classification",
                                               labels=rng.choice(CLASSES, 10_000, p=[0.5, 0.3, 0.2])))


def _counts(reference: Reference, *, rho: float = 0.7, rows: int = 1_000, labels: list[float] | None = None,
            labelled: int = 300, seed: int = 1) -> dict:
    """What the window holds after the sensors counted ``rows`` rows and ``labelled`` feedback labels."""
    rng = np.random.default_rng(seed)
    cols = _columns(rng, rows, rho)
    wd = reference.count_window(cols, np.where(cols["a"] > 0, "cat", "dog")).to_dict()
    label_counts = dict(zip(CLASSES, rng.multinomial(labelled, labels or [0.5, 0.3, 0.2]).tolist()))
    snap = dp.Snapshot(version="v1", rows=wd["rows"], features=wd["features"], predictions=wd["predictions"],
                       prediction_rows=wd["prediction_rows"], feedback_rows=labelled, labels=label_counts,
                       projections=wd["projections"])
    return dp.counters_of(snap)


def _spec(*checks: str, **extra: Any) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate(
        {"deployment": "m", "checks": [{"type": t, **extra} for t in checks], "retrain": {"from": "m-v1"}}
    )


def test_label_drift_is_a_check_of_its_own(reference: Reference) -> None:
    shifted = dp.run_checks(_spec("labelDrift", "dataDrift", "predictionDrift"), reference, {},
                            _counts(reference, labels=[0.2, 0.3, 0.5]))
    assert [c.type for c in shifted.breaches] == ["labelDrift"], shifted.message
    label = next(s for s in shifted.scores if s["check"] == "labelDrift")
    assert label["feature"] == "label" and label["drifted"] and label["reason"] == "drift"
    assert "labelDrift on 300 labelled rows" in shifted.reason
    calm = dp.run_checks(_spec("labelDrift"), reference, {}, _counts(reference))
    assert calm.verdict == "NoDrift" and calm.checks[0].summary.startswith("labelDrift: none in 300 labelled rows")
    few = dp.run_checks(_spec("labelDrift"), reference, {}, _counts(reference, labels=[0.2, 0.3, 0.5], labelled=40))
    assert few.verdict == "NotEnoughData" and few.checks[0].summary == "labelDrift: 40 of 100 labelled rows"


def test_multivariate_drift_finds_what_the_feature_check_misses(reference: Reference) -> None:
    counts = _counts(reference, rho=0.0, rows=2_000)
    r = dp.run_checks(_spec("multivariateDrift", "dataDrift"), reference, {}, counts)
    assert [c.type for c in r.breaches] == ["multivariateDrift"], r.message
    assert r.reason == "multivariateDrift on a~b"
    top = r.scores[0]
    assert top["check"] == "multivariateDrift" and top["feature"] == "a~b" and top["drifted"]
    calm = dp.run_checks(_spec("multivariateDrift"), reference, {}, _counts(reference, rows=2_000, seed=3))
    assert calm.verdict == "NoDrift" and calm.checks[0].summary.startswith("multivariateDrift: no drift in 3 projections")
    only_c = dp.run_checks(_spec("multivariateDrift", features=["c"]), reference, {}, counts)
    assert only_c.verdict == "NoDrift" and {s["feature"] for s in only_c.scores} == {"a~c", "b~c"}
    per_feature = {"type": "multivariateDrift", "perFeature": [{"feature": "a~b", "weight": 0}]}
    muted = dp.run_checks(DriftPolicySpec.model_validate({"deployment": "m", "checks": [per_feature], "action": "alert"}),
                          reference, {}, counts)
    assert muted.verdict == "NoDrift"
    assert next(s for s in muted.scores if s["feature"] == "a~b")["reason"] == "excluded"


def test_an_old_profile_or_an_old_server_makes_the_checks_unavailable_with_the_reason(reference: Reference) -> None:
    d = reference.to_dict()
    del d["label"], d["multivariate"]
    old = Reference.from_dict(d)
    r = dp.run_checks(_spec("labelDrift", "multivariateDrift", "dataDrift"), old, {}, _counts(reference))
    by_type = {c.type: c for c in r.checks}
    assert by_type["labelDrift"].outcome == "unavailable" and "no training-label profile" in by_type["labelDrift"].summary
    assert by_type["multivariateDrift"].outcome == "unavailable"
    assert "no multivariate section" in by_type["multivariateDrift"].summary
    assert r.verdict == "NoDrift", "the other checks still decide"
    # A server that predates the counters: enough rows and labels, but no counts of them.
    counts = _counts(reference)
    counts["labels"], counts["projections"] = None, {}
    r = dp.run_checks(_spec("labelDrift", "multivariateDrift"), reference, {}, counts)
    assert r.verdict == "Unavailable"
    assert [c.summary for c in r.checks] == ["labelDrift: not available, the sensor reports no label counts",
                                             "multivariateDrift: not available, the sensor reports no projection counts"]


def test_the_window_adds_label_and_projection_counts_over_pods_and_reads_old_statuses() -> None:
    pod = {"metadata": {"name": "p", "uid": "u", "creationTimestamp": "2025-12-31T00:00:00Z"}}

    def snap(k: int) -> dp.Snapshot:
        return dp.Snapshot(version="v1", rows=10 * k, labels={"cat": k, "dog": 2 * k}, projections={"a~b": [k, 3 * k]},
                           feedback_rows=3 * k, started=1.0)

    first = dp.advance_window(None, "v1", [(pod, snap(1))], ["p"], T0)
    second = dp.advance_window(first.state, "v1", [(pod, snap(4))], ["p"], T0, baselines=first.baselines)
    assert second.counts["labels"] == {"cat": 3, "dog": 6} and second.counts["projections"] == {"a~b": [3, 9]}
    # A status written before these counters existed has neither key.
    old_state = dict(second.state, counts={k: v for k, v in second.counts.items() if k not in ("labels", "projections")})
    third = dp.advance_window(old_state, "v1", [(pod, snap(6))], ["p"], T0, baselines=second.baselines)
    assert third.counts["labels"] == {"cat": 2, "dog": 4} and third.counts["projections"] == {"a~b": [2, 6]}
    assert dp.add_counters({"rows": 1}, {"rows": 2, "labels": [1, 2]}) == {
        "rows": 3, "predictionRows": 0, "feedbackRows": 0, "feedbackErrors": 0, "feedbackSquaredError": 0.0,
        "features": {}, "predictions": None, "labels": [1, 2], "projections": {},
    }


def test_the_api_takes_the_new_check_types() -> None:
    spec = _spec("dataDrift", "predictionDrift", "labelDrift", "multivariateDrift", "psi")
    assert [c.type for c in spec.checks] == ["dataDrift", "predictionDrift", "labelDrift", "multivariateDrift", "psi"]
    with pytest.raises(ValueError, match="labelDrift"):
        DriftPolicySpec.model_validate({"deployment": "m", "checks": [{"type": "labeldrift"}], "action": "alert"})
