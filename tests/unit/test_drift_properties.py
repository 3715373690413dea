"""Properties of the drift rule that must hold at every window size and level count.

Seeded simulations, sized to run in seconds: the effect gate opens on
unchanged data about equally rarely at every window size (500 … 50,000) and
level count (2 … 200); the pooled chi-square keeps its nominal level on
features with rare levels where the plain one does not; the default preset
finds a population effect of 0.1 at 2,000 rows, and finds more as windows
grow.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlops_operator.drift import (
    CategoricalProfile,
    DriftConfig,
    Reference,
    build_reference,
    chi2_homogeneity,
    evaluate_window,
    js_distance,
)
from mlops_operator.drift.stats import chi2_pooled, pool_rare_levels
from scipy import stats

N_REF = 50_000
SIZES = (500, 2_000, 10_000, 50_000)
LEVELS = (2, 10, 50, 200)
FLOOR = DriftConfig().categorical_effect


def _zipf(k: int) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1)
    return w / w.sum()


def _categorical_reference(counts: np.ndarray) -> Reference:
    levels = tuple(f"l{i:03d}" for i in range(counts.size))
    prof = CategoricalProfile(levels=levels, counts=counts.astype(np.int64))
    return Reference(task="classification", features={"c": prof}, prediction=None, n=int(counts.sum()))


def _categorical_gate(rng: np.random.Generator, shares: np.ndarray, m: int, reps: int) -> tuple[float, float]:
    """Share of unchanged windows whose effect (and raw JS distance) reaches the floor."""
    opened = raw_opened = 0
    for _ in range(reps):
        ref = _categorical_reference(rng.multinomial(N_REF, shares))
        window = {"c": dict(zip(ref.categorical["c"].levels, rng.multinomial(m, shares).tolist()))}
        f = evaluate_window(ref, window, DriftConfig(min_samples=1)).features[0]
        opened += f.effect >= FLOOR
        raw_opened += f.raw_effect >= FLOOR
    return opened / reps, raw_opened / reps


def test_categorical_effect_gate_is_flat_across_window_sizes_and_levels() -> None:
    rng = np.random.default_rng(18)
    reps = 60
    rates, raw_rates = {}, {}
    for k in LEVELS:
        for m in SIZES:
            rates[k, m], raw_rates[k, m] = _categorical_gate(rng, _zipf(k), m, reps)
    # The corrected effect is open in at most 1 - effect_null_level (10 %) of unchanged
    # windows by construction, at every size and level count (3 sd of 60 windows of slack).
    bound = 1 - DriftConfig().effect_null_level
    assert max(rates.values()) <= bound + 3 * np.sqrt(bound * (1 - bound) / reps), rates
    assert np.mean(list(rates.values())) <= 0.05, rates
    # The raw JS distance, the old effect, is open in every small window of a many-level
    # feature and in none of the large ones: what this test exists to catch.
    assert raw_rates[200, 500] == 1.0 and raw_rates[200, 50_000] <= 0.2, raw_rates


@pytest.fixture(scope="module")
def numeric_reference() -> Reference:
    rng = np.random.default_rng(5)
    cols = {
        "normal": rng.normal(size=N_REF),
        "skewed": rng.exponential(size=N_REF),
        "counts": rng.poisson(2.0, N_REF).astype(float),
    }
    return Reference.from_dict(build_reference(cols, set(), None, "regression"))


def _numeric_window(rng: np.random.Generator, m: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "normal": rng.normal(size=m) + shift,
        "skewed": rng.exponential(size=m),
        "counts": rng.poisson(2.0, m).astype(float),
    }


def test_numeric_effect_gate_is_flat_across_window_sizes(numeric_reference: Reference) -> None:
    rng = np.random.default_rng(19)
    reps = 80
    rates: dict[tuple[str, int], float] = {}
    raw: dict[tuple[str, int], float] = {}
    for m in SIZES:
        opened: dict[str, int] = {}
        raw_opened: dict[str, int] = {}
        for _ in range(reps):
            window = numeric_reference.count_window(_numeric_window(rng, m))
            for f in evaluate_window(numeric_reference, window).features:
                floor = DriftConfig().numeric_effect
                opened[f.name] = opened.get(f.name, 0) + (f.effect >= floor)
                raw_opened[f.name] = raw_opened.get(f.name, 0) + (f.raw_effect >= floor)
        for name in opened:
            rates[name, m] = opened[name] / reps
            raw[name, m] = raw_opened[name] / reps
    bound = 1 - DriftConfig().effect_null_level
    assert max(rates.values()) <= bound + 3 * np.sqrt(bound * (1 - bound) / reps), rates
    # Uncorrected W1/std at the default floor: open in most 500-row windows, never at 50,000.
    assert raw["normal", 500] >= 0.5 and raw["normal", 50_000] == 0.0, raw


def _rare_level_shares() -> np.ndarray:
    """30 common levels, 40 rare ones (a few rows in 50,000) and one seen once in training."""
    shares = np.concatenate([np.full(30, 0.99 / 30), np.full(40, 0.01 / 40)])
    return shares / shares.sum()


@pytest.mark.parametrize("m", [500, 2_000, 10_000])
def test_pooled_chi2_keeps_its_level_where_the_plain_one_does_not(m: int) -> None:
    rng = np.random.default_rng(m)
    shares = _rare_level_shares()
    reps = 1_500
    pooled_p = np.empty(reps)
    plain_p = np.empty(reps)
    for i in range(reps):
        ref = rng.multinomial(N_REF, shares).astype(float)
        ref = np.append(ref, 1.0)  # a level seen once in training, never since
        cur = np.append(rng.multinomial(m, shares), 0).astype(float)
        pooled_p[i] = chi2_pooled(ref, cur)[1]
        plain_p[i] = chi2_homogeneity(ref, cur)[1]
    for alpha in (0.01, 0.05):
        tolerance = 3 * np.sqrt(alpha * (1 - alpha) / reps)
        assert (pooled_p <= alpha).mean() <= alpha + tolerance, (alpha, (pooled_p <= alpha).mean())
    if m == 500:
        # Rare levels make the plain test liberal: at 500 rows it rejects far more than 5 %.
        assert (plain_p <= 0.05).mean() > 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)


def test_pooled_chi2_equals_scipy_on_the_pooled_table() -> None:
    rng = np.random.default_rng(3)
    shares = _rare_level_shares()
    ref = np.append(rng.multinomial(N_REF, shares), 1).astype(float)
    cur = np.append(rng.multinomial(700, shares), 2).astype(float)
    stat, p, dof, pooled = chi2_pooled(ref, cur)
    r, c, n_pooled = pool_rare_levels(ref, cur)
    assert pooled == n_pooled == 41  # the 40 rare levels and the one seen once
    expected = stats.chi2_contingency(np.vstack([r, c]))
    assert (stat, p, dof) == pytest.approx((expected.statistic, expected.pvalue, expected.dof), rel=1e-9)
    # Every pooled cell expects at least five window rows (Cochran's rule).
    assert np.all(c.sum() * r / r.sum() >= 5)


def test_two_level_chi2_agrees_with_fishers_exact_test() -> None:
    """Two levels, one of them rare: the test's rejections track Fisher's exact test."""
    rng = np.random.default_rng(4)
    agree = 0
    reps = 300
    for _ in range(reps):
        ref = rng.multinomial(N_REF, [0.98, 0.02]).astype(float)
        cur = rng.multinomial(500, [0.98, 0.02]).astype(float)
        ours = chi2_pooled(ref, cur)[1]
        exact = stats.fisher_exact(np.vstack([ref, cur]).astype(int))[1]
        agree += (ours <= 0.05) == (exact <= 0.05)
    assert agree / reps >= 0.97


def test_one_unseen_row_is_reported_many_are_drift() -> None:
    shares = np.full(10, 0.1)
    ref = _categorical_reference(np.round(shares * N_REF).astype(np.int64))
    levels = ref.categorical["c"].levels
    base = dict(zip(levels, [100] * 10))
    one = evaluate_window(ref, {"c": {**base, "brand-new": 1}})
    f = one.features[0]
    assert one.status == "no_drift" and f.unseen == {"brand-new": 1} and f.reason != "unseen_levels"
    many = evaluate_window(ref, {"c": {**base, "brand-new": 25}})
    f = many.features[0]
    assert many.status == "drift" and f.reason == "unseen_levels"
    assert f.unseen_share == pytest.approx(25 / 1025)
    # A higher unseen-share threshold (the lenient preset's 5 %) lets 2.4 % pass.
    assert evaluate_window(ref, {"c": {**base, "brand-new": 25}}, DriftConfig.preset("lenient")).status == "no_drift"


def _shifted_shares(k: int, distance: float) -> np.ndarray:
    """Zipf shares moved towards the reverse order until their JS distance is ``distance``."""
    base, target = _zipf(k), _zipf(k)[::-1]
    lo, hi = 0.0, 1.0
    for _ in range(60):
        t = (lo + hi) / 2
        if js_distance(base, (1 - t) * base + t * target) < distance:
            lo = t
        else:
            hi = t
    return (1 - lo) * base + lo * target


def test_default_finds_a_population_effect_of_0_1_at_2000_rows() -> None:
    rng = np.random.default_rng(21)
    reps = 100
    # Numeric: a mean shift of 0.1 sd is a W1/std of exactly 0.1.
    cols = {"x": rng.normal(size=N_REF)}
    num_ref = Reference.from_dict(build_reference(cols, set(), None, "regression"))
    found = sum(
        evaluate_window(num_ref, num_ref.count_window({"x": rng.normal(size=2_000) + 0.1})).status == "drift"
        for _ in range(reps)
    )
    assert found / reps >= 0.95
    # Categorical: 10 Zipf levels moved to a JS distance of 0.1.
    shares, moved = _zipf(10), _shifted_shares(10, 0.1)
    found = 0
    for _ in range(reps):
        ref = _categorical_reference(rng.multinomial(N_REF, shares))
        window = {"c": dict(zip(ref.categorical["c"].levels, rng.multinomial(2_000, moved).tolist()))}
        found += evaluate_window(ref, window).status == "drift"
    assert found / reps >= 0.95


def test_detection_grows_with_the_window_and_false_alarms_stay_low(numeric_reference: Reference) -> None:
    rng = np.random.default_rng(22)
    reps = 60
    for preset in ("strict", "default", "lenient"):
        config = DriftConfig.preset(preset)
        floor = config.numeric_effect
        detection, alarms = [], []
        for m in (500, 2_000, 20_000):
            hits = sum(
                evaluate_window(numeric_reference, numeric_reference.count_window(
                    _numeric_window(rng, m, shift=3 * floor)), config).status == "drift"
                for _ in range(reps)
            )
            false = sum(
                evaluate_window(numeric_reference, numeric_reference.count_window(
                    _numeric_window(rng, m)), config).status == "drift"
                for _ in range(reps)
            )
            detection.append(hits / reps)
            alarms.append(false / reps)
        # Never fewer detections with more rows (allowing the noise of 60 windows).
        assert all(b >= a - 0.1 for a, b in zip(detection, detection[1:])), (preset, detection)
        assert detection[-1] >= 0.95, (preset, detection)
        assert max(alarms) <= 0.1, (preset, alarms)


def test_numeric_pvalues_keep_their_level_at_every_window_size(numeric_reference: Reference) -> None:
    """KS and the W1 test together (Bonferroni over the two) reject at most 5 % of unchanged windows."""
    rng = np.random.default_rng(23)
    reps = 150
    for m in (500, 2_000, 20_000):
        rejected: dict[str, int] = {}
        for _ in range(reps):
            window = numeric_reference.count_window(_numeric_window(rng, m))
            for f in evaluate_window(numeric_reference, window).features:
                rejected[f.name] = rejected.get(f.name, 0) + (f.pvalue <= 0.05)
        for name, count in rejected.items():
            assert count / reps <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps), (m, name, count)


def test_w1_pvalue_tail_bound_is_conservative(numeric_reference: Reference) -> None:
    """Beyond the 4,000 draws the W1 p-value is a Gaussian concentration bound: never below the true tail."""
    from mlops_operator.drift import bridge_w1, w1_pvalue

    prof = numeric_reference.numeric["skewed"]
    shares, gaps = prof.counts / prof.counts.sum(), np.diff(prof.values)
    cdf = np.cumsum(shares)[:-1]
    lipschitz = float(np.dot(np.sqrt(cdf * (1 - cdf)), gaps))
    few, many = bridge_w1(shares, gaps), bridge_w1(shares, gaps, draws=100_000, seed=7)
    for level in (0.99, 0.999, 0.9995):
        x = float(np.quantile(many, level))
        p = w1_pvalue(few, lipschitz, x)
        assert p >= 0.5 * (1 - level), (level, p)  # valid: not (much) below the true tail
        assert p <= 30 * (1 - level) + 2 / few.size, (level, p)  # and still informative
    # Far beyond any draw: a small number from the bound, not 1/4,001.
    assert w1_pvalue(few, lipschitz, 10 * lipschitz) < 1e-6
