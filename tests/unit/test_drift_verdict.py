"""The window verdict: known answers, configuration, predictions and performance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlops_operator.drift import (
    DriftConfig,
    NumericProfile,
    Reference,
    build_reference,
    evaluate_predictions,
    evaluate_window,
    js_distance,
    ks_binned,
    performance,
    psi,
    wasserstein_binned,
)
from scipy import stats

LEVELS = list("abcdefghij")
N_REF = 20_000


def _sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {f"x{i}": rng.normal(size=n) for i in range(6)}
    cols["x0"] = cols["x0"] + shift
    cols["count"] = rng.poisson(3.0, n).astype(float)
    cols["colour"] = rng.choice(LEVELS, n).astype(object)
    return cols


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(2024)
    cols = _sample(rng, N_REF)
    preds = (cols["x1"] + cols["x2"] > 0).astype(int)
    return Reference.from_dict(build_reference(cols, {"colour"}, preds, "classification"))


def test_same_distribution_is_no_drift(reference: Reference) -> None:
    rng = np.random.default_rng(1)
    statuses = [
        evaluate_window(reference, reference.count_window(_sample(rng, 1_000))).status for _ in range(10)
    ]
    assert statuses.count("no_drift") >= 9
    assert "insufficient_data" not in statuses


def test_shifted_mean_is_found(reference: Reference) -> None:
    rng = np.random.default_rng(2)
    cols = _sample(rng, 2_000, shift=0.25)
    result = evaluate_window(reference, reference.count_window(cols))
    assert result.status == "drift"
    assert result.drifted_features == ["x0"]
    top = result.features[0]
    assert top.name == "x0" and top.drifted
    assert top.adjusted_pvalue <= 0.05
    # The binned W1/std is close to the raw one on this very sample.
    x0 = reference.features["x0"]
    assert isinstance(x0, NumericProfile)
    rng_ref = np.random.default_rng(2024)  # the fixture's reference draw
    raw = stats.wasserstein_distance(_sample(rng_ref, N_REF)["x0"], cols["x0"]) / x0.std
    assert top.raw_effect == pytest.approx(raw, abs=0.01)
    # The effect compared with the floor is what noise of 2,000 rows cannot explain: a bit less.
    assert 0.8 * top.raw_effect < top.effect < top.raw_effect


def test_new_category_is_named(reference: Reference) -> None:
    rng = np.random.default_rng(3)
    cols = _sample(rng, 1_000)
    cols["colour"][:200] = "ultraviolet"
    cols["colour"][200:203] = "infrared"
    result = evaluate_window(reference, reference.count_window(cols))
    assert result.status == "drift"
    assert result.drifted_features == ["colour"]
    assert result.unseen == {"colour": ["ultraviolet", "infrared"]}
    colour = result.features[0]
    assert colour.unseen == {"ultraviolet": 200, "infrared": 3}


def test_unseen_category_is_named_even_with_too_few_rows(reference: Reference) -> None:
    rng = np.random.default_rng(15)
    cols = _sample(rng, 50)
    cols["colour"][:5] = "ultraviolet"
    result = evaluate_window(reference, reference.count_window(cols))
    assert result.status == "insufficient_data"
    assert result.unseen == {"colour": ["ultraviolet"]}


def test_rare_unseen_category_is_reported_without_alarm(reference: Reference) -> None:
    rng = np.random.default_rng(4)
    cols = _sample(rng, 1_000)
    cols["colour"][:2] = "ultraviolet"
    result = evaluate_window(reference, reference.count_window(cols))
    assert result.unseen == {"colour": ["ultraviolet"]}
    assert "colour" not in result.drifted_features  # significant but too small to matter


@pytest.mark.parametrize("rows", [0, 1, 499])
def test_small_window_is_insufficient_data(reference: Reference, rows: int) -> None:
    rng = np.random.default_rng(5)
    # Even a huge shift is not called with too few rows ...
    window = reference.count_window(_sample(rng, rows, shift=5.0)) if rows else reference.new_window()
    result = evaluate_window(reference, window)
    assert result.status == "insufficient_data"
    assert result.samples == rows and result.features == []
    assert json.loads(json.dumps(result.to_dict()))["status"] == "insufficient_data"
    # ... and a smaller minimum can be configured.
    if rows:
        small = evaluate_window(reference, window, DriftConfig(min_samples=1))
        assert small.status in ("drift", "no_drift")


def test_verdict_numbers_equal_the_public_statistics(reference: Reference) -> None:
    rng = np.random.default_rng(6)
    cols = _sample(rng, 800, shift=0.1)
    cols["x3"][:40] = np.nan
    window = reference.count_window(cols)
    result = {f.name: f for f in evaluate_window(reference, window).features}
    for name, prof in reference.features.items():
        f = result[name]
        if isinstance(prof, NumericProfile):
            ref, cur = prof.full_counts(), window.features[name]
            d, p = ks_binned(ref, cur)
            assert f.statistic == pytest.approx(d, rel=1e-12)
            # KS and the W1 test, Bonferroni over the two: never above twice the KS p-value.
            assert f.pvalue <= min(1.0, 2 * p) * (1 + 1e-12)
            w = wasserstein_binned(ref[:-1], cur[:-1], prof.values, prof.std)
            miss = js_distance([ref[-1], ref[:-1].sum()], [cur[-1], cur[:-1].sum()])
            expected_effect = max(w, miss) if cur[-1] else w
            assert f.raw_effect == pytest.approx(expected_effect, rel=1e-12)
            assert 0 <= f.effect <= f.raw_effect
            assert f.psi == pytest.approx(psi(prof.psi_counts(ref), prof.psi_counts(cur)), rel=1e-12)
    assert result["x3"].missing_rate == pytest.approx(0.05)


def test_missing_values_shift_is_drift(reference: Reference) -> None:
    rng = np.random.default_rng(7)
    cols = _sample(rng, 1_000)
    cols["x4"][:150] = np.nan
    result = evaluate_window(reference, reference.count_window(cols))
    # x4 leads the ranking (BH may let a by-chance feature through once x4 is rejected: FDR, not FWER).
    assert result.drifted_features[0] == "x4" and result.features[0].reason == "drift"
    assert result.features[0].missing_rate == pytest.approx(0.15)


def test_values_outside_training_range(reference: Reference) -> None:
    rng = np.random.default_rng(8)
    cols = _sample(rng, 1_000)
    cols["x5"][:100] = 1e6
    result = evaluate_window(reference, reference.count_window(cols))
    x5 = next(f for f in result.features if f.name == "x5")
    assert x5.out_of_range == pytest.approx(0.1, abs=0.002)
    assert x5.drifted


def test_constant_reference_feature() -> None:
    rng = np.random.default_rng(9)
    ref = Reference.from_dict(
        build_reference({"k": np.ones(2_000), "x": rng.normal(size=2_000)}, set(), None, "regression")
    )
    same = evaluate_window(ref, ref.count_window({"k": np.ones(600), "x": rng.normal(size=600)}))
    assert same.status == "no_drift"
    moved = np.ones(600)
    moved[:120] = 0.0  # below the constant: still seen
    result = evaluate_window(ref, ref.count_window({"k": moved, "x": rng.normal(size=600)}))
    assert result.drifted_features == ["k"]
    assert result.features[0].effect == pytest.approx(0.2)


def test_configuration_changes_the_rule(reference: Reference) -> None:
    rng = np.random.default_rng(10)
    window = reference.count_window(_sample(rng, 2_000, shift=0.25))
    bonf = evaluate_window(reference, window, DriftConfig(correction="bonferroni"))
    assert bonf.drifted_features == ["x0"]
    strict = evaluate_window(reference, window, DriftConfig(numeric_effect=0.5))
    assert strict.status == "no_drift"
    # PSI on deciles misses a 0.25 sd shift at the usual 0.25 threshold ...
    psi_rule = evaluate_window(reference, window, DriftConfig(rule="psi"))
    assert psi_rule.status == "no_drift"
    assert 0.02 < psi_rule.features[0].psi < 0.25
    # ... unless the threshold is lowered.
    low = evaluate_window(reference, window, DriftConfig(rule="psi", psi_threshold=0.02))
    assert "x0" in low.drifted_features
    for bad in (
        {"correction": "holm"},
        {"q": 0.0},
        {"min_samples": 0},
        {"rule": "vibes"},
        {"numeric_effect": -1.0},
    ):
        with pytest.raises(ValueError):
            DriftConfig(**bad)  # type: ignore[arg-type]


def test_plain_mapping_of_counts(reference: Reference) -> None:
    rng = np.random.default_rng(11)
    cols = _sample(rng, 700)
    counts = {
        "x0": reference.bin_counts("x0", cols["x0"]),
        "colour": reference.category_counts("colour", cols["colour"]),
    }
    result = evaluate_window(reference, counts)
    assert result.samples == 700
    assert {f.name for f in result.features} == {"x0", "colour"}


def test_result_is_strict_json(reference: Reference) -> None:
    rng = np.random.default_rng(12)
    cols = _sample(rng, 600)
    cols["x1"][:] = np.nan  # all missing: nan statistics must not leak into JSON
    d = evaluate_window(reference, reference.count_window(cols)).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["status"] == "drift" and d["drifted_features"][0] == "x1"
    assert d["min_samples"] == 500 and d["correction"] == "bh"


def test_prediction_drift_classification(reference: Reference) -> None:
    rng = np.random.default_rng(13)
    window = reference.new_window()
    window.add(predictions=rng.choice([0, 1], 1_000))
    assert evaluate_predictions(reference, window).status == "no_drift"
    skewed = reference.prediction_counts(rng.choice([0, 1], 1_000, p=[0.8, 0.2]))
    result = evaluate_predictions(reference, skewed)
    assert result.status == "drift" and result.drifted_features == ["prediction"]
    assert evaluate_predictions(reference, {"0": 10}).status == "insufficient_data"


def test_prediction_drift_regression() -> None:
    rng = np.random.default_rng(14)
    x = rng.normal(size=10_000)
    ref = Reference.from_dict(build_reference({"x": x}, set(), 3 * x, "regression"))
    same = ref.prediction_counts(3 * rng.normal(size=1_000))
    assert evaluate_predictions(ref, same).status == "no_drift"
    shifted = ref.prediction_counts(3 * rng.normal(0.4, 1.0, size=1_000))
    assert evaluate_predictions(ref, shifted).status == "drift"


def test_performance() -> None:
    ok = performance(30, 1_000, baseline=0.025, maximum=0.05)
    assert (ok.metric, ok.status, ok.value) == ("error_rate", "ok", 0.03)
    assert ok.low < 0.03 < ok.high
    bad = performance(80, 1_000, baseline=0.025, maximum=0.05)
    assert bad.status == "degraded"
    assert performance(9, 10, baseline=0.025, maximum=0.05).status == "insufficient_data"
    assert performance(0, 0, baseline=0.025, maximum=0.05).status == "insufficient_data"
    rmse = performance(400.0, 100, baseline=1.5, maximum=1.8, task="regression")
    assert (rmse.metric, rmse.value, rmse.status) == ("rmse", 2.0, "degraded")
    assert math.isnan(rmse.low)
    json.dumps(rmse.to_dict(), allow_nan=False)


def test_presets_floors_and_weights(reference: Reference) -> None:
    rng = np.random.default_rng(31)
    cols = _sample(rng, 3_000, shift=0.12)
    window = reference.count_window(cols)
    x0 = {p: next(f for f in evaluate_window(reference, window, DriftConfig.preset(p)).features if f.name == "x0")
          for p in ("strict", "default", "lenient")}
    assert [x0[p].floor for p in ("strict", "default", "lenient")] == [0.02, 0.04, 0.08]
    assert x0["default"].drifted and x0["default"].reason == "drift"
    # One feature's own floor wins over the preset's.
    high = evaluate_window(reference, window, DriftConfig(feature_effects={"x0": 0.5}))
    f = next(f for f in high.features if f.name == "x0")
    assert (f.floor, f.drifted, f.reason) == (0.5, False, "below_floor")
    # Weighted BH: weight 0 excludes a feature; weights are normalised to mean 1.
    muted = evaluate_window(reference, window, DriftConfig(weights={"x0": 0.0}))
    f = next(f for f in muted.features if f.name == "x0")
    assert (f.weight, f.drifted, f.reason) == (0.0, False, "excluded")
    heavy = evaluate_window(reference, window, DriftConfig(weights={"x0": 7.0}))
    f = next(f for f in heavy.features if f.name == "x0")
    n = len(heavy.features)
    assert f.weight == pytest.approx(7.0 * n / (n - 1 + 7.0))
    with pytest.raises(ValueError, match="sensitivity"):
        DriftConfig.preset("paranoid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        DriftConfig(weights={"x0": -1.0})
