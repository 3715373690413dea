"""Label drift and multivariate drift: the profile sections, the counting, and the statistics.

Seeded simulations sized to run in seconds.  The multivariate check must
find a change in the correlation of two features whose marginals did not
move (which the per-feature tests cannot see) and stay quiet on unchanged
data at 500 and 2,000 rows; label drift is the prediction-drift rule on the
feedback labels, so its p-value is scipy's chi-square where no level is
pooled.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlops_operator.drift import (
    DriftConfig,
    Reference,
    build_reference,
    evaluate_labels,
    evaluate_multivariate,
    evaluate_window,
)
from mlops_operator.drift.profile import MAX_PROJECTIONS, build_multivariate
from scipy import stats

N_REF = 20_000


def _gaussian(rng: np.random.Generator, n: int, rho: float) -> dict[str, np.ndarray]:
    """Four standard normal features; ``a`` and ``b`` correlated by ``rho`` (their marginals never change)."""
    a = rng.normal(size=n)
    b = rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n)
    return {"a": a, "b": 3.0 + 2.0 * b, "c": rng.normal(size=n), "d": rng.exponential(size=n)}


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(7)
    cols = _gaussian(rng, N_REF, 0.6)
    labels = rng.choice(["cat", "dog", "eel"], N_REF, p=[0.5, 0.3, 0.2])
    d = build_reference(cols, set(), None, "classification", labels=labels)
    return Reference.from_dict(json.loads(json.dumps(d, allow_nan=False)))


# --------------------------------------------------------------------------- the profile


def test_profile_round_trip_and_training_rows_reproduce_the_projection_counts(reference: Reference) -> None:
    mv = reference.multivariate
    assert mv is not None and mv.method == "pairs"
    assert mv.names == ["a~b", "a~c", "a~d", "b~c", "b~d", "c~d"]  # four features: every pair fits the budget
    again = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert again.to_dict() == reference.to_dict()
    cols = _gaussian(np.random.default_rng(7), N_REF, 0.6)
    # The server bins batches of any size; every way must give the training counts back exactly
    # (bin edges are observed training values, so a rounding difference would move rows).
    whole = reference.count_window(cols)
    pieces = reference.new_window()
    cuts = [*range(0, 2_000, 37), 2_000]
    for lo, hi in zip(cuts, cuts[1:]):  # small batches: the broadcast path
        pieces.add({k: v[lo:hi] for k, v in cols.items()})
    pieces.add({k: v[2_000:] for k, v in cols.items()})  # one large batch: the searchsorted path
    for p in mv.projections:
        np.testing.assert_array_equal(whole.projections[p.name], p.profile.full_counts())
        np.testing.assert_array_equal(pieces.projections[p.name], p.profile.full_counts())
    assert reference.label is not None and reference.label.levels == ("cat", "dog", "eel")


def test_the_projection_leans_against_the_training_correlation(reference: Reference) -> None:
    """z_a - sign(rho) z_b: the pair's direction of least variance, whose variance moves most when rho does."""
    mv = reference.multivariate
    assert mv is not None
    ab = next(p for p in mv.projections if p.name == "a~b")
    assert ab.weights.tolist() == [1.0, -1.0]  # a and b correlate positively
    assert ab.profile.std == pytest.approx(math.sqrt(2 * (1 - 0.6)), rel=0.05)
    anti = build_multivariate({"x": np.arange(100.0), "y": -np.arange(100.0) + np.sin(np.arange(100.0))})
    assert anti is not None and anti.projections[0].weights.tolist() == [1.0, 1.0]


def test_missing_values_reach_only_the_projections_of_their_feature(reference: Reference) -> None:
    cols = _gaussian(np.random.default_rng(3), 40, 0.6)
    cols["c"][:5] = np.nan
    cols["d"][7] = np.inf
    w = reference.count_window(cols)
    nan_slots = {name: int(v[-1]) for name, v in w.projections.items()}
    assert nan_slots == {"a~b": 0, "a~c": 5, "a~d": 1, "b~c": 5, "b~d": 1, "c~d": 6}
    assert all(v.sum() == 40 for v in w.projections.values())


def test_many_features_keep_the_budget_strongest_pairs_first_and_a_seeded_rest() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2_000, 12))
    base[:, 1] = base[:, 0] + 0.1 * base[:, 1]  # one strongly correlated pair
    cols = {f"f{i:02d}": base[:, i] for i in range(12)}
    first, second = build_multivariate(cols), build_multivariate(cols)
    assert first is not None and second is not None
    assert len(first.projections) == MAX_PROJECTIONS < 12 * 11 // 2
    assert first.names == second.names, "the choice is the same on the same data"
    assert "f00~f01" in first.names
    assert build_multivariate({"x": rng.normal(size=100)}) is None, "one numeric feature has no pair"
    assert build_multivariate({"x": rng.normal(size=100), "k": np.ones(100)}) is None, "a constant has no direction"
    assert build_multivariate(cols, max_projections=3) is not None
    assert len(build_multivariate(cols, max_projections=3).projections) == 3  # type: ignore[union-attr]


def test_a_profile_without_the_new_sections_loads_and_says_what_is_missing(reference: Reference) -> None:
    d = reference.to_dict()
    del d["label"], d["multivariate"]
    old = Reference.from_dict(d)
    assert old.label is None and old.multivariate is None
    w = old.count_window(_gaussian(np.random.default_rng(1), 600, 0.6))
    assert w.projections == {} and w.to_dict()["projections"] == {}
    assert evaluate_window(old, w).status in ("drift", "no_drift")
    with pytest.raises(ValueError, match="multivariate"):
        evaluate_multivariate(old, {})
    with pytest.raises(ValueError, match="training-label"):
        evaluate_labels(old, {"cat": 1})


def test_a_broken_projection_is_refused_when_loading(reference: Reference) -> None:
    d = json.loads(json.dumps(reference.to_dict()))
    d["multivariate"]["projections"][0]["scale"] = [1.0, 0.0]
    with pytest.raises(ValueError, match="scale positive"):
        Reference.from_dict(d)
    d = json.loads(json.dumps(reference.to_dict()))
    d["multivariate"]["projections"][1]["name"] = d["multivariate"]["projections"][0]["name"]
    with pytest.raises(ValueError, match="unique"):
        Reference.from_dict(d)


# --------------------------------------------------------------------------- multivariate statistics


def _rates(reference: Reference, rho: float, m: int, reps: int, seed: int) -> tuple[float, float]:
    """Share of windows in which the multivariate check, and the per-feature check, say drift."""
    rng = np.random.default_rng(seed)
    multi = per_feature = 0
    for _ in range(reps):
        w = reference.count_window(_gaussian(rng, m, rho))
        multi += evaluate_multivariate(reference, w).status == "drift"
        per_feature += evaluate_window(reference, w).status == "drift"
    return multi / reps, per_feature / reps


@pytest.mark.parametrize("m", [500, 2_000])
def test_unchanged_data_rarely_alarms(reference: Reference, m: int) -> None:
    multi, _ = _rates(reference, 0.6, m, reps=120, seed=m)
    # q = 0.05 across projections; 120 windows: a true 5 % rate exceeds 0.11 with probability < 1 %.
    assert multi <= 0.11, multi


def test_a_correlation_change_with_unchanged_marginals_is_found_where_per_feature_tests_see_nothing(
    reference: Reference,
) -> None:
    multi, per_feature = _rates(reference, 0.3, 2_000, reps=40, seed=11)
    assert multi >= 0.95, multi
    assert per_feature <= 0.15, per_feature
    w = reference.count_window(_gaussian(np.random.default_rng(12), 2_000, 0.0))
    result = evaluate_multivariate(reference, w)
    assert result.status == "drift" and result.drifted_features == ["a~b"], result.drifted_features
    top = result.features[0]
    assert top.name == "a~b" and top.effect >= DriftConfig().numeric_effect and top.adjusted_pvalue <= 0.05


def test_a_projection_floor_and_weight_apply_by_name(reference: Reference) -> None:
    w = reference.count_window(_gaussian(np.random.default_rng(13), 2_000, 0.0))
    muted = evaluate_multivariate(reference, w, DriftConfig(weights={"a~b": 0.0}))
    assert muted.status == "no_drift"
    assert next(f for f in muted.features if f.name == "a~b").reason == "excluded"
    high = evaluate_multivariate(reference, w, DriftConfig(feature_effects={"a~b": 5.0}))
    ab = next(f for f in high.features if f.name == "a~b")
    assert not ab.drifted and ab.reason == "below_floor" and ab.floor == 5.0


# --------------------------------------------------------------------------- label statistics


def test_label_pvalue_is_scipys_chi_square_when_nothing_is_pooled(reference: Reference) -> None:
    assert reference.label is not None
    counts = {"cat": 260, "dog": 140, "eel": 100}
    result = evaluate_labels(reference, counts, DriftConfig(min_samples=1))
    f = result.features[0]
    table = np.array([[*reference.label.counts], [260, 140, 100]])
    chi2, p, _, _ = stats.chi2_contingency(table)
    # The unseen slot (empty on both sides) joins the rarest class without changing the table.
    assert f.name == "label" and f.test == "chi2"
    assert f.statistic == pytest.approx(chi2, rel=1e-9) and f.pvalue == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("m", [100, 500, 2_000])
def test_label_drift_null_rate_and_a_prior_shift(reference: Reference, m: int) -> None:
    rng = np.random.default_rng(m)
    config = DriftConfig(min_samples=100)
    same = sum(
        evaluate_labels(reference, dict(zip(["cat", "dog", "eel"], rng.multinomial(m, [0.5, 0.3, 0.2]).tolist())),
                        config).status == "drift"
        for _ in range(200)
    ) / 200
    assert same <= 0.1, same
    shifted = sum(
        evaluate_labels(reference, dict(zip(["cat", "dog", "eel"], rng.multinomial(m, [0.3, 0.3, 0.4]).tolist())),
                        config).status == "drift"
        for _ in range(50)
    ) / 50
    assert shifted >= (0.95 if m >= 500 else 0.5), shifted
    assert evaluate_labels(reference, {"cat": 60}, DriftConfig()).status == "insufficient_data"


def test_regression_labels_are_binned_and_tested_like_a_numeric_feature() -> None:
    rng = np.random.default_rng(5)
    cols = {"x": rng.normal(size=5_000)}
    ref = Reference.from_dict(build_reference(cols, set(), cols["x"], "regression", labels=rng.gamma(2.0, 10.0, 5_000)))
    assert ref.label is not None and ref.label.kind == "numeric"
    same = [evaluate_labels(ref, ref.label.count(rng.gamma(2.0, 10.0, 2_000))).status for _ in range(60)]
    moved = [evaluate_labels(ref, ref.label.count(rng.gamma(2.0, 12.0, 2_000))) for _ in range(20)]
    assert same.count("drift") <= 7, same.count("drift")  # nominal 5 %: 7 of 60 has probability < 1 %
    assert all(r.status == "drift" for r in moved)
    assert moved[0].features[0].name == "label" and moved[0].features[0].test == "ks"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(1, 300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    holes=st.lists(st.tuples(st.integers(0, 299), st.sampled_from(["a", "b", "c", "d"]),
                             st.sampled_from([math.nan, math.inf, -math.inf, 1e300])), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_projection_counts_add_up_over_any_split_of_any_rows(
    reference: Reference, rows: int, cuts: list[int], holes: list[tuple[int, str, float]], seed: int
) -> None:
    """However the server batches the rows (broadcast or searchsorted path), the counts are the whole's,
    every row lands in exactly one bin of every projection, and a non-finite value only in its projections' NaN slot."""
    cols = _gaussian(np.random.default_rng(seed), rows, 0.6)
    for i, f, v in holes:
        if i < rows:
            cols[f][i] = v
    whole = reference.count_window(cols)
    split = reference.new_window()
    bounds = sorted({0, rows, *(c for c in cuts if c < rows)})
    for lo, hi in zip(bounds, bounds[1:]):
        split.add({k: v[lo:hi] for k, v in cols.items()})
    mv = reference.multivariate
    assert mv is not None
    for p in mv.projections:
        np.testing.assert_array_equal(split.projections[p.name], whole.projections[p.name])
        assert whole.projections[p.name].sum() == rows
        bad = ~np.isfinite(cols[p.features[0]]) | ~np.isfinite(cols[p.features[1]])
        assert whole.projections[p.name][-1] == bad.sum()
