"""Count-based drift statistics against scipy on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlops_operator.drift import (
    Reference,
    benjamini_hochberg,
    bonferroni,
    build_reference,
    chi2_homogeneity,
    js_distance,
    ks_binned,
    psi,
    wasserstein_binned,
)
from scipy import stats
from scipy.spatial.distance import jensenshannon

BINS = 32
N_REF = 20_000

SAMPLERS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 0.5, size=n),
    "uniform": lambda rng, n: rng.uniform(-1, 3, size=n),
}


def _profiled(x: np.ndarray, bins: int = BINS) -> Reference:
    return Reference.from_dict(build_reference({"x": x}, set(), None, "regression", bins=bins))


def _exact_bins(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts over every distinct value: binned statistics are then exact."""
    support, inv = np.unique(np.concatenate([x, y]), return_inverse=True)
    return (
        np.bincount(inv[: x.size], minlength=support.size),
        np.bincount(inv[x.size :], minlength=support.size),
    )


# --- KS ---------------------------------------------------------------------


@pytest.mark.parametrize("dist", sorted(SAMPLERS))
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3])
def test_ks_binned_within_stated_binning_error(dist: str, shift: float) -> None:
    rng = np.random.default_rng(7)
    x = SAMPLERS[dist](rng, N_REF)
    y = SAMPLERS[dist](rng, 1_000) + shift
    ref = _profiled(x)
    r, c = ref.bin_counts("x", x), ref.bin_counts("x", y)
    d_binned, _ = ks_binned(r, c)
    d_raw = stats.ks_2samp(x, y).statistic
    # Binned CDFs are exact at the edges: never above the raw statistic ...
    assert d_binned <= d_raw + 1e-12
    # ... and below it by at most the largest bin mass shared by both samples,
    bound = np.max(np.minimum(r / r.sum(), c / c.sum()))
    assert d_raw <= d_binned + bound + 1e-12
    # which for continuous data on quantile bins is at most 1/b + 1/n.
    assert bound <= 1 / BINS + 1 / N_REF + 1e-12


def test_ks_binned_is_exact_for_discrete_data() -> None:
    rng = np.random.default_rng(3)
    x = rng.poisson(3.0, N_REF).astype(float)
    y = rng.poisson(3.4, 800).astype(float)
    ref = _profiled(x)
    d_binned, _ = ks_binned(ref.bin_counts("x", x), ref.bin_counts("x", y))
    assert d_binned == pytest.approx(stats.ks_2samp(x, y).statistic, abs=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.1, 0.15])
def test_ks_pvalue_matches_scipy_asymptotic(shift: float) -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=5_000), rng.normal(size=600) + shift
    r, c = _exact_bins(x, y)
    d, p = ks_binned(r, c)
    raw = stats.ks_2samp(x, y, method="asymp")
    assert d == pytest.approx(raw.statistic, abs=1e-12)
    # kstwobign (ours) vs kstwo at the rounded effective n (scipy): ours is
    # slightly conservative and within 10 % where it matters.
    assert p >= raw.pvalue * (1 - 1e-9)
    if raw.pvalue > 1e-3:
        assert p <= raw.pvalue * 1.1


def test_ks_empty_side() -> None:
    d, p = ks_binned([0, 0, 0], [1, 2, 3])
    assert math.isnan(d) and p == 1.0


def test_counts_are_validated() -> None:
    with pytest.raises(ValueError):
        ks_binned([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        psi([1, -1], [1, 1])
    with pytest.raises(ValueError):
        js_distance([1, float("nan")], [1, 1])


# --- chi-square ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 80)), min_size=2, max_size=12).filter(
        lambda cols: sum(a for a, _ in cols) > 0 and sum(b for _, b in cols) > 0
    )
)
def test_chi2_homogeneity_equals_chi2_contingency(cols: list[tuple[int, int]]) -> None:
    ref = np.array([a for a, _ in cols])
    cur = np.array([b for _, b in cols])
    stat, p, dof = chi2_homogeneity(ref, cur)
    keep = (ref + cur) > 0
    if keep.sum() < 2:
        assert (stat, p, dof) == (0.0, 1.0, 0)
        return
    expected = stats.chi2_contingency(np.vstack([ref[keep], cur[keep]]))
    assert stat == expected.statistic
    assert p == expected.pvalue
    assert dof == expected.dof


def test_chi2_yates_case_exact() -> None:
    ref, cur = np.array([900, 100]), np.array([60, 20])
    res = stats.chi2_contingency(np.vstack([ref, cur]))
    assert chi2_homogeneity(ref, cur) == (res.statistic, res.pvalue, 1)


def test_chi2_is_homogeneity_not_goodness_of_fit() -> None:
    # A goodness-of-fit test would treat the small reference as exact and be
    # far more significant; homogeneity accounts for its sampling noise.
    ref, cur = np.array([30, 70]), np.array([45, 55])
    _, p_hom, _ = chi2_homogeneity(ref, cur, correction=False)
    p_gof = stats.chisquare(cur, ref / ref.sum() * cur.sum()).pvalue
    assert p_hom > p_gof


# --- Jensen-Shannon, Wasserstein, PSI -------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=30).filter(
        lambda v: sum(a for a, _ in v) > 0 and sum(b for _, b in v) > 0
    )
)
def test_js_distance_equals_scipy_base2(pairs: list[tuple[int, int]]) -> None:
    p = np.array([a for a, _ in pairs], dtype=float)
    q = np.array([b for _, b in pairs], dtype=float)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)


@pytest.mark.parametrize("dist", sorted(SAMPLERS))
@pytest.mark.parametrize("shift", [0.0, 0.25])
def test_wasserstein_within_quantization_bound(dist: str, shift: float) -> None:
    rng = np.random.default_rng(5)
    x = SAMPLERS[dist](rng, N_REF)
    y = SAMPLERS[dist](rng, 2_000) + shift * x.std()
    ref = _profiled(x)
    prof = ref.features["x"]
    r, c = ref.bin_counts("x", x)[:-1], ref.bin_counts("x", y)[:-1]
    w_binned = wasserstein_binned(r, c, prof.values)
    w_raw = stats.wasserstein_distance(x, y)
    # Triangle inequality: moving every value to its bin's representative
    # costs the mean |value - representative| on each side.
    rep = prof.values
    q_ref = np.mean(np.abs(x - rep[np.searchsorted(prof.edges, x)]))
    q_cur = np.mean(np.abs(y - rep[np.searchsorted(prof.edges, y)]))
    assert q_ref == pytest.approx(prof.quantization, rel=1e-9)
    assert abs(w_binned - w_raw) <= q_ref + q_cur + 1e-12
    # In practice the error is far inside the bound: under 0.02 sd here.
    assert abs(w_binned - w_raw) / x.std() < 0.02


def test_wasserstein_exact_on_value_bins() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=300), rng.normal(0.3, 1.2, size=200)
    r, c = _exact_bins(x, y)
    support = np.unique(np.concatenate([x, y]))
    assert wasserstein_binned(r, c, support) == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-9)
    assert wasserstein_binned(r, c, support, ref_std=2.0) == pytest.approx(
        stats.wasserstein_distance(x, y) / 2.0, rel=1e-9
    )


def _psi_by_hand(ref: list[int], cur: list[int], eps: float = 1e-4) -> float:
    total_r, total_c = sum(ref), sum(cur)
    out = 0.0
    for a, b in zip(ref, cur):
        pa = a / total_r if a else eps
        pb = b / total_c if b else eps
        out += (pb - pa) * math.log(pb / pa)
    return out


@pytest.mark.parametrize(
    "ref,cur",
    [
        ([10, 20, 30, 40], [40, 30, 20, 10]),
        ([100] * 10, [100] * 9 + [0]),
        ([5, 0, 5], [0, 5, 5]),
        ([1000, 1, 0], [1000, 0, 0]),
    ],
)
def test_psi_matches_hand_formula(ref: list[int], cur: list[int]) -> None:
    assert psi(ref, cur) == pytest.approx(_psi_by_hand(ref, cur), rel=1e-12)
    assert psi(ref, cur, eps=1e-3) == pytest.approx(_psi_by_hand(ref, cur, 1e-3), rel=1e-12)


counts_pairs = st.integers(1, 40).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda v: sum(v) > 0),
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda v: sum(v) > 0),
    )
)


@settings(max_examples=200, deadline=None)
@given(counts_pairs)
def test_psi_and_js_properties(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    assert psi(a, b) >= 0
    assert psi(a, a) == 0
    js = js_distance(a, b)
    assert 0 <= js <= 1 + 1e-12
    assert js == pytest.approx(js_distance(b, a), abs=1e-12)
    assert js_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    assert js_distance(a, [3 * v for v in a]) == pytest.approx(0.0, abs=1e-7)


# --- multiple testing ---------------------------------------------------------


def test_bh_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=20), [1e-6, 0.001, 0.02]])
    rejected, adjusted = benjamini_hochberg(p, 0.05)
    np.testing.assert_allclose(adjusted, stats.false_discovery_control(p), rtol=1e-12)
    np.testing.assert_array_equal(rejected, adjusted <= 0.05)
    assert rejected.sum() >= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.floats(0.001, 0.5))
def test_bh_monotone_and_bounded(pvalues: list[float], q: float) -> None:
    p = np.array(pvalues)
    rejected, adjusted = benjamini_hochberg(p, q)
    assert np.all(adjusted <= 1.0) and np.all(adjusted >= p - 1e-15)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= -1e-15)
    # Step-up rule: reject the k smallest where k is the largest i with p_(i) <= i q / m.
    m = p.size
    below = np.nonzero(np.sort(p) <= np.arange(1, m + 1) * q / m)[0]
    k = below[-1] + 1 if below.size else 0
    assert rejected.sum() == k
    # BH never rejects less than Bonferroni.
    assert rejected.sum() >= bonferroni(p, q)[0].sum()


def test_bonferroni_and_nan() -> None:
    rejected, adjusted = bonferroni([0.01, 0.2, float("nan")], 0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.6, 1.0])
    assert rejected.tolist() == [True, False, False]
    assert benjamini_hochberg([], 0.05)[1].size == 0
